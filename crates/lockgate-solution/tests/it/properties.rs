//! Property tests: any names survive unpack -> pack -> unpack, and damaged zips or XML never panic.

use lockgate_solution::package::{SolutionPackage, normalized_differences};
use lockgate_solution::synthetic::{SampleOptions, sample};
use lockgate_solution::{Solution, pack, unpack};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_display_and_flow_names_round_trip(display in "[ -~\u{e9}\u{4e2d}\t]{0,40}", flow in "[ -~\u{263a}]{1,30}", flows in 1usize..4) {
        let original = sample(&SampleOptions { display_name: display, flow_name: flow.clone(), flows, ..SampleOptions::default() });
        let tree = unpack(&original, None).unwrap();
        let packed = pack(&tree, None).unwrap();
        prop_assert_eq!(normalized_differences(&original, &packed), Vec::<String>::new());
        prop_assert_eq!(&unpack(&packed, None).unwrap().files, &tree.files);
        let model = Solution::from_package(&packed).unwrap();
        prop_assert_eq!(&model.workflows[0].name, &format!("{flow} 0"));
    }

    #[test]
    fn damaged_zips_are_errors_not_panics(position in 0usize..4096, byte in any::<u8>(), cut in 0usize..4096) {
        let mut zip = sample(&SampleOptions::default()).to_zip_bytes().unwrap();
        let at = position % zip.len();
        zip[at] = byte;
        zip.truncate(zip.len() - cut % zip.len());
        if let Ok(package) = SolutionPackage::from_zip_bytes(&zip, std::path::Path::new("damaged.zip")) {
            let _ = unpack(&package, None);
            let _ = Solution::from_package(&package);
        }
    }

    #[test]
    fn arbitrary_text_never_panics_the_xml_reader(text in "[<>/a-z=\"'&;#x0-9 \n!\\[\\]?-]{0,200}") {
        let _ = lockgate_solution::xml::parse(text.as_bytes(), "fuzz.xml");
    }
}
