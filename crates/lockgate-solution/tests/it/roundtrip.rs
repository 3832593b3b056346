//! Unpack and pack of self-made packages: determinism, round trips both ways, managed handling, bad input.

use lockgate_solution::package::{SolutionPackage, normalized_differences};
use lockgate_solution::synthetic::{SampleOptions, sample};
use lockgate_solution::{PackageType, SourceTree, pack, unpack, unpack_both};

fn zip_of(package: &SolutionPackage, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    package.write_zip(&path).unwrap();
    path
}

#[test]
fn unpack_writes_the_solution_packager_layout() {
    let tree = unpack(&sample(&SampleOptions::default()), None).unwrap();
    let paths: Vec<&str> = tree.files.keys().map(String::as_str).collect();
    for expected in [
        "Other/Solution.xml",
        "Other/Customizations.xml",
        "Entities/cts_trip/Entity.xml",
        "Entities/cts_trip/FormXml/main/{1b0c2d3e-0000-4000-8000-000000000001}.xml",
        "OptionSets/cts_triptype.xml",
        "Workflows/TripApproval0-00000000-595A-EE11-BE6F-6045BD033774.json",
        "Workflows/TripApproval0-00000000-595A-EE11-BE6F-6045BD033774.json.data.xml",
        "environmentvariabledefinitions/cts_ApiUrl/environmentvariabledefinition.xml",
        "CanvasApps/cts_tripapp_BackgroundImageUri",
    ] {
        assert!(paths.contains(&expected), "{expected} in {paths:?}");
    }
    let entity = String::from_utf8(tree.files["Entities/cts_trip/Entity.xml"].clone()).unwrap();
    assert!(
        entity.contains("<FormXml />") && !entity.contains("<systemform>"),
        "forms are split out: {entity}"
    );
    let form = String::from_utf8(
        tree.files["Entities/cts_trip/FormXml/main/{1b0c2d3e-0000-4000-8000-000000000001}.xml"]
            .clone(),
    )
    .unwrap();
    assert!(
        form.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<forms xmlns:xsi="),
        "{form}"
    );
    assert!(form.contains("<systemform>"), "{form}");
    let customizations = String::from_utf8(tree.files["Other/Customizations.xml"].clone()).unwrap();
    assert!(customizations.contains("<Workflows />"), "{customizations}");
    assert!(customizations.contains(
        "<connectionreference connectionreferencelogicalname=\"cts_sharedapprovals_1a2b3\">"
    ));
    assert!(!customizations.contains('\r'));
    let row = String::from_utf8(
        tree.files["Workflows/TripApproval0-00000000-595A-EE11-BE6F-6045BD033774.json.data.xml"]
            .clone(),
    )
    .unwrap();
    assert!(
        row.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Workflow WorkflowId="),
        "{row}"
    );
    assert!(row.contains("xmlns:xsi="));
    let flow = String::from_utf8(
        tree.files["Workflows/TripApproval0-00000000-595A-EE11-BE6F-6045BD033774.json"].clone(),
    )
    .unwrap();
    assert!(
        flow.starts_with("{\n  \"properties\": {"),
        "flows are pretty-printed: {flow}"
    );
    assert_eq!(
        tree.files["CanvasApps/cts_tripapp_BackgroundImageUri"],
        vec![0x89, b'P', b'N', b'G', 0, 1, 2, 255]
    );
}

#[test]
fn pack_of_unpack_reproduces_the_package_and_unpack_is_stable() {
    let original = sample(&SampleOptions {
        flows: 3,
        value_in_solution: true,
        ..SampleOptions::default()
    });
    let tree = unpack(&original, None).unwrap();
    let packed = pack(&tree, None).unwrap();
    assert_eq!(
        normalized_differences(&original, &packed),
        Vec::<String>::new()
    );
    let again = unpack(&packed, None).unwrap();
    assert_eq!(tree.files, again.files, "a second unpack changes nothing");
    let customizations =
        String::from_utf8(packed.get("customizations.xml").unwrap().to_vec()).unwrap();
    assert!(
        customizations.contains("\r\n") && !customizations.starts_with("<?xml"),
        "zip XML uses CRLF without a declaration"
    );
}

#[test]
fn zip_entry_order_and_content_types_follow_microsoft_exports() {
    let dir = tempfile::tempdir().unwrap();
    let tree = unpack(&sample(&SampleOptions::default()), None).unwrap();
    let path = zip_of(&pack(&tree, None).unwrap(), dir.path(), "out.zip");
    let read = SolutionPackage::read_zip(&path).unwrap();
    let names: Vec<&str> = read.entries.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        &names[..3],
        &["customizations.xml", "[Content_Types].xml", "solution.xml"]
    );
    let content_types =
        String::from_utf8_lossy(read.get("[Content_Types].xml").unwrap()).into_owned();
    assert!(
        content_types.contains("Extension=\"json\""),
        "{content_types}"
    );
    assert!(
        content_types.contains("PartName=\"/CanvasApps/cts_tripapp_BackgroundImageUri\""),
        "{content_types}"
    );
    let bytes = std::fs::read(&path).unwrap();
    let path2 = zip_of(&pack(&tree, None).unwrap(), dir.path(), "out2.zip");
    assert_eq!(
        bytes,
        std::fs::read(path2).unwrap(),
        "packing is byte-for-byte deterministic"
    );
}

#[test]
fn tree_written_to_disk_reads_back_identically_and_is_replaced_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("src");
    let tree = unpack(&sample(&SampleOptions::default()), None).unwrap();
    std::fs::create_dir_all(target.join("Stale")).unwrap();
    std::fs::write(target.join("Stale/old.xml"), "<old />").unwrap();
    tree.write_dir(&target).unwrap();
    assert!(
        !target.join("Stale").exists(),
        "the folder is replaced, files not in the zip are gone"
    );
    let read = SourceTree::read_dir(&target).unwrap();
    assert_eq!(read.files, tree.files);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no temporary folders left: {leftovers:?}"
    );
}

#[test]
fn both_unpack_keeps_managed_differences_and_packs_either_type() {
    let unmanaged = sample(&SampleOptions::default());
    let mut managed = sample(&SampleOptions {
        managed: true,
        ..SampleOptions::default()
    });
    for (name, data) in &mut managed.entries {
        if name == "customizations.xml" {
            let text = String::from_utf8(data.clone()).unwrap().replace(
                "<label description=\"General\" languagecode=\"1033\" />",
                "<label description=\"\" languagecode=\"1033\" />",
            );
            *data = text.into_bytes();
        }
    }
    let tree = unpack_both(&unmanaged, &managed).unwrap();
    assert!(
        String::from_utf8_lossy(&tree.files["Other/Solution.xml"]).contains("<Managed>2</Managed>")
    );
    assert!(
        tree.files.contains_key(
            "Entities/cts_trip/FormXml/main/{1b0c2d3e-0000-4000-8000-000000000001}_managed.xml"
        ),
        "{:?}",
        tree.files.keys()
    );
    assert!(!tree.files.contains_key(
        "Workflows/TripApproval0-00000000-595A-EE11-BE6F-6045BD033774.json.data_managed.xml"
    ));
    let packed_unmanaged = pack(&tree, Some(PackageType::Unmanaged)).unwrap();
    assert_eq!(
        normalized_differences(&unmanaged, &packed_unmanaged),
        Vec::<String>::new()
    );
    let packed_managed = pack(&tree, Some(PackageType::Managed)).unwrap();
    assert_eq!(
        normalized_differences(&managed, &packed_managed),
        Vec::<String>::new()
    );
}

#[test]
fn package_types_that_cannot_be_converted_offline_are_refused() {
    let unmanaged = sample(&SampleOptions::default());
    let err = unpack(&unmanaged, Some(PackageType::Managed))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unmanaged") && err.contains("ContosoTravel.zip"),
        "{err}"
    );
    let tree = unpack(&unmanaged, None).unwrap();
    let err = pack(&tree, Some(PackageType::Managed))
        .unwrap_err()
        .to_string();
    assert!(err.contains("<Managed>0</Managed>"), "{err}");
}

#[test]
fn corrupt_truncated_and_traversal_zips_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = sample(&SampleOptions::default()).to_zip_bytes().unwrap();
    let truncated = dir.path().join("truncated.zip");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let err = SolutionPackage::read_zip(&truncated)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("truncated.zip") && err.contains("not a readable zip"),
        "{err}"
    );

    let garbage = dir.path().join("garbage.zip");
    std::fs::write(&garbage, b"this is not a zip").unwrap();
    assert!(
        SolutionPackage::read_zip(&garbage)
            .unwrap_err()
            .to_string()
            .contains("garbage.zip")
    );

    let evil = SolutionPackage {
        entries: vec![("../../evil.txt".into(), b"x".to_vec())],
        origin: "evil".into(),
    };
    let evil_path = dir.path().join("evil.zip");
    std::fs::write(&evil_path, evil.to_zip_bytes().unwrap()).unwrap();
    let err = SolutionPackage::read_zip(&evil_path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("evil.zip")
            && err.contains("path traversal")
            && err.contains("../../evil.txt"),
        "{err}"
    );

    let no_manifest = SolutionPackage {
        entries: vec![("customizations.xml".into(), b"<x/>".to_vec())],
        origin: "thing.zip".into(),
    };
    let err = unpack(&no_manifest, None).unwrap_err().to_string();
    assert!(
        err.contains("thing.zip") && err.contains("solution.xml"),
        "{err}"
    );
}

#[test]
fn a_tree_without_other_solution_xml_is_refused_naming_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("Workflows")).unwrap();
    std::fs::write(dir.path().join("Workflows/a.json"), "{}").unwrap();
    let tree = SourceTree::read_dir(dir.path()).unwrap();
    let err = pack(&tree, None).unwrap_err().to_string();
    assert!(
        err.contains("Other/Solution.xml") && err.contains(&dir.path().display().to_string()),
        "{err}"
    );
}

#[test]
fn malformed_xml_in_a_tree_names_the_file_and_line() {
    let mut tree = unpack(&sample(&SampleOptions::default()), None).unwrap();
    tree.files.insert(
        "OptionSets/cts_triptype.xml".into(),
        b"<optionset Name=\"x\">\n<broken></optionset>".to_vec(),
    );
    let err = pack(&tree, None).unwrap_err().to_string();
    assert!(
        err.contains("OptionSets/cts_triptype.xml") && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn unpack_refuses_to_replace_a_git_repository_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".git")).unwrap();
    std::fs::write(dir.path().join("README.md"), "mine").unwrap();
    let tree = unpack(&sample(&SampleOptions::default()), None).unwrap();
    let err = tree.write_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains(".git") && err.contains("subfolder"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("README.md")).unwrap(),
        "mine"
    );
}

#[test]
fn unpacking_into_dot_replaces_the_current_folder_contents() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("src");
    std::fs::create_dir_all(&target).unwrap();
    let tree = unpack(&sample(&SampleOptions::default()), None).unwrap();
    tree.write_dir(&target.join(".")).unwrap();
    assert!(target.join("Other/Solution.xml").is_file());
    tree.write_dir(&target.join("Other/..")).unwrap();
    assert_eq!(SourceTree::read_dir(&target).unwrap().files, tree.files);
}

#[test]
fn pack_with_a_mapping_file_takes_plug_in_assemblies_from_build_output() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("src");
    let mut tree = unpack(&sample(&SampleOptions::default()), None).unwrap();
    tree.files.insert(
        "PluginAssemblies/Contoso-1A2B/Contoso.Plugins.dll.data.xml".into(),
        br#"<PluginAssembly FullName="Contoso.Plugins, Version=1.0.0.0" PluginAssemblyId="1a2b"><FileName>/PluginAssemblies/Contoso-1A2B/Contoso.Plugins.dll</FileName></PluginAssembly>"#.to_vec(),
    );
    tree.write_dir(&source).unwrap();
    std::fs::create_dir_all(dir.path().join("build")).unwrap();
    std::fs::write(
        dir.path().join("build/Contoso.Plugins.dll"),
        b"MZ built assembly",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("map.xml"),
        r#"<Mapping><FileToPath map="*.dll" to="..\build" /></Mapping>"#,
    )
    .unwrap();

    let mapping = lockgate_solution::mapping::Mapping::read(&dir.path().join("map.xml")).unwrap();
    let mut read = SourceTree::read_dir(&source).unwrap();
    assert_eq!(
        lockgate_solution::mapping::apply(&mut read, &mapping, &source).unwrap(),
        1
    );
    let packed = pack(&read, None).unwrap();
    assert_eq!(
        packed.get("PluginAssemblies/Contoso-1A2B/Contoso.Plugins.dll"),
        Some(&b"MZ built assembly"[..])
    );
    assert!(
        String::from_utf8_lossy(packed.get("customizations.xml").unwrap())
            .contains("<PluginAssembly FullName=\"Contoso.Plugins")
    );

    std::fs::remove_file(dir.path().join("build/Contoso.Plugins.dll")).unwrap();
    let mut read = SourceTree::read_dir(&source).unwrap();
    let err = lockgate_solution::mapping::apply(&mut read, &mapping, &source)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("map.xml") && err.contains("Contoso.Plugins.dll"),
        "{err}"
    );
}

#[test]
fn the_yaml_source_control_format_is_named_as_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("solutions/ContosoTravel")).unwrap();
    std::fs::write(
        dir.path().join("solutions/ContosoTravel/solution.yml"),
        "SolutionManifest:\n  UniqueName: ContosoTravel\n",
    )
    .unwrap();
    let err = pack(&SourceTree::read_dir(dir.path()).unwrap(), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("solutions/ContosoTravel/solution.yml")
            && err.contains("YAML source-control format"),
        "{err}"
    );
}

#[test]
fn both_unpack_writes_managed_forms_even_when_identical() {
    let unmanaged = sample(&SampleOptions::default());
    let managed = sample(&SampleOptions {
        managed: true,
        ..SampleOptions::default()
    });
    let tree = unpack_both(&unmanaged, &managed).unwrap();
    let form = "Entities/cts_trip/FormXml/main/{1b0c2d3e-0000-4000-8000-000000000001}";
    assert_eq!(
        tree.files[&format!("{form}_managed.xml")],
        tree.files[&format!("{form}.xml")]
    );
    assert!(
        !tree
            .files
            .contains_key("Entities/cts_trip/Entity_managed.xml"),
        "identical tables get no managed copy"
    );
}
