//! Round trips over the real Microsoft exports and SolutionPackager trees in the shared corpus.

use std::path::{Path, PathBuf};

use lockgate_solution::package::{SolutionPackage, normalized_differences};
use lockgate_solution::{Solution, SourceTree, pack, unpack};

fn corpus_root() -> Option<PathBuf> {
    let root = std::env::var_os("LOCKGATE_POWERPLATFORM_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/corpus/powerplatform"));
    if root.is_dir() {
        Some(root)
    } else {
        println!(
            "SKIPPED: Power Platform corpus not found at {} (set LOCKGATE_POWERPLATFORM_CORPUS)",
            root.display()
        );
        None
    }
}

fn find(root: &Path, predicate: &dyn Fn(&Path) -> bool, found: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if predicate(&path) {
            found.push(path.clone());
        }
        if path.is_dir() {
            find(&path, predicate, found);
        }
    }
}

#[test]
fn every_corpus_zip_survives_unpack_then_pack() {
    let Some(root) = corpus_root() else { return };
    let mut zips = Vec::new();
    find(
        &root,
        &|path| path.extension().is_some_and(|ext| ext == "zip"),
        &mut zips,
    );
    assert!(zips.len() >= 6, "expected the corpus zips, found {zips:?}");
    for zip in zips {
        let original = SolutionPackage::read_zip(&zip).unwrap();
        let tree = unpack(&original, None).unwrap_or_else(|err| panic!("{}: {err}", zip.display()));
        let packed = pack(&tree, None).unwrap();
        let differences = normalized_differences(&original, &packed);
        assert!(
            differences.is_empty(),
            "{}: {differences:#?}",
            zip.display()
        );
        let again = unpack(&packed, None).unwrap();
        assert_eq!(
            tree.files,
            again.files,
            "{}: second unpack is identical",
            zip.display()
        );
        let model = Solution::from_package(&original).unwrap();
        assert!(!model.unique_name.is_empty());
        println!(
            "round-tripped {} ({} entries)",
            zip.display(),
            original.entries.len()
        );
    }
}

#[test]
fn every_corpus_tree_packs_and_survives_unpack_then_pack() {
    let Some(root) = corpus_root() else { return };
    let mut trees = Vec::new();
    find(
        &root,
        &|path| path.join("Other/Solution.xml").is_file(),
        &mut trees,
    );
    assert!(
        trees.len() >= 4,
        "expected the corpus trees, found {trees:?}"
    );
    for dir in trees {
        let tree = SourceTree::read_dir(&dir).unwrap();
        let packed = pack(&tree, None).unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
        let unpacked = unpack(&packed, None).unwrap();
        let repacked = pack(&unpacked, None).unwrap();
        let differences = normalized_differences(&packed, &repacked);
        assert!(
            differences.is_empty(),
            "{}: {differences:#?}",
            dir.display()
        );
        println!(
            "round-tripped tree {} ({} files)",
            dir.display(),
            tree.files.len()
        );
    }
}

#[test]
fn the_business_approvals_kit_tree_keeps_all_its_components_when_packed() {
    let Some(root) = corpus_root() else { return };
    let dir = root
        .join("microsoft__powercat-business-approvals-kit/BusinessApprovalKit/SolutionPackage/src");
    let packed = pack(&SourceTree::read_dir(&dir).unwrap(), None).unwrap();
    let model = Solution::from_package(&packed).unwrap();
    assert_eq!(model.unique_name, "BusinessApprovalKit");
    assert_eq!(
        model.workflows.iter().filter(|w| w.category == "5").count(),
        25
    );
    assert_eq!(
        model.workflows.iter().filter(|w| w.category == "2").count(),
        1
    );
    assert_eq!(model.connection_references.len(), 6);
    assert_eq!(model.environment_variables.len(), 4);
    assert_eq!(model.entities.len(), 2);
    let customizations =
        String::from_utf8_lossy(packed.get("customizations.xml").unwrap()).into_owned();
    assert!(
        customizations.contains("<systemform>"),
        "split forms are merged back into the entity"
    );
    assert!(
        customizations.contains("<savedquery>"),
        "split views are merged back"
    );
    assert!(
        customizations.contains("<EntityRelationship Name=\"team_cat_businessapprovalcondition\">")
    );
}

#[test]
fn real_deployment_settings_files_read_and_match_their_solutions() {
    let Some(root) = corpus_root() else { return };
    let kit = root.join("microsoft__powercat-business-approvals-kit");
    let mut files = Vec::new();
    find(
        &kit,
        &|path| {
            path.file_name().is_some_and(|name| {
                name == "deploymentSettings.json"
                    || name == "settings.json"
                    || name == "BusinessApprovalsKit.json"
            })
        },
        &mut files,
    );
    assert!(files.len() >= 8, "{files:?}");
    for file in &files {
        lockgate_solution::settings::read_settings(file).unwrap_or_else(|err| panic!("{err}"));
    }
    let workshop =
        SolutionPackage::read_zip(&kit.join("Workshop/assets/ApprovalsConnectorSetup.zip"))
            .unwrap();
    let workshop_model = Solution::from_package(&workshop).unwrap();
    let settings_path = kit.join("Workshop/assets/settings.json");
    let settings = lockgate_solution::settings::read_settings(&settings_path).unwrap();
    lockgate_solution::settings::validate_against(&settings, &workshop_model, &settings_path)
        .unwrap();
    assert_eq!(
        lockgate_solution::settings::component_parameters(&settings, &workshop_model).len(),
        2
    );

    let kit_model = Solution::from_package(
        &pack(
            &SourceTree::read_dir(&kit.join("BusinessApprovalKit/SolutionPackage/src")).unwrap(),
            None,
        )
        .unwrap(),
    )
    .unwrap();
    for stage in ["Prod", "Test", "Validation"] {
        let path = kit.join(format!(
            "BusinessApprovalKit/config/{stage}/deploymentSettings.json"
        ));
        let settings = lockgate_solution::settings::read_settings(&path).unwrap();
        assert_eq!(
            settings.connection_references.len(),
            6,
            "{}",
            path.display()
        );
        lockgate_solution::settings::validate_against(&settings, &kit_model, &path).unwrap();
    }
}

/// The text of a file as Git would show it after normalisation: no BOM, LF line endings, no final newline.
fn normalized_text(data: &[u8]) -> String {
    String::from_utf8_lossy(data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data))
        .replace("\r\n", "\n")
        .trim_end()
        .to_string()
}

#[test]
fn unpack_writes_the_same_files_as_solution_packager_for_the_kit() {
    let Some(root) = corpus_root() else { return };
    let dir = root
        .join("microsoft__powercat-business-approvals-kit/BusinessApprovalKit/SolutionPackage/src");
    let microsoft = SourceTree::read_dir(&dir).unwrap();
    let ours = unpack(&pack(&microsoft, None).unwrap(), None).unwrap();
    let mut compared = 0;
    for (path, data) in &microsoft.files {
        let folder = path.split('/').next().unwrap_or_default();
        let same_layout = [
            "Entities",
            "Workflows",
            "OptionSets",
            "WebResources",
            "PluginAssemblies",
            "Controls",
            "customapis",
            "appactions",
            "AppModules",
            "AppModuleSiteMaps",
            "Connectors",
        ]
        .contains(&folder)
            || (folder == "CanvasApps" && path.ends_with(".meta.xml"))
            || path.starts_with("Other/Relationships");
        if !same_layout || path.contains("_managed.") {
            continue;
        }
        let Some(written) = ours.files.get(path) else {
            panic!("unpack did not write {path}")
        };
        assert_eq!(normalized_text(written), normalized_text(data), "{path}");
        compared += 1;
    }
    assert!(compared > 190, "compared {compared} files");
    println!(
        "{compared} files identical to SolutionPackager's output (after BOM and line-ending normalisation)"
    );
}

#[test]
fn the_managed_unmanaged_pair_unpacks_to_one_both_tree_that_packs_either_way() {
    let Some(root) = corpus_root() else { return };
    let folder = root
        .join("microsoft__PowerApps-Samples/dataverse/webapi/PS/ColumnLevelSecurity/ExportedFiles");
    let unmanaged =
        SolutionPackage::read_zip(&folder.join("ColumnLevelSecuritySampleSolution.zip")).unwrap();
    let managed =
        SolutionPackage::read_zip(&folder.join("ColumnLevelSecuritySampleSolution_managed.zip"))
            .unwrap();
    let tree = lockgate_solution::unpack_both(&unmanaged, &managed).unwrap();
    assert!(
        String::from_utf8_lossy(&tree.files["Other/Solution.xml"]).contains("<Managed>2</Managed>")
    );
    let managed_files = tree
        .files
        .keys()
        .filter(|path| path.contains("_managed."))
        .count();
    assert!(managed_files > 0, "the pair differs in its forms");
    let packed = pack(&tree, Some(lockgate_solution::PackageType::Unmanaged)).unwrap();
    assert_eq!(
        normalized_differences(&unmanaged, &packed),
        Vec::<String>::new()
    );
    let packed = pack(&tree, Some(lockgate_solution::PackageType::Managed)).unwrap();
    assert_eq!(
        normalized_differences(&managed, &packed),
        Vec::<String>::new()
    );
    let report = lockgate_solution::diff::diff(&unmanaged, &managed).unwrap();
    assert!(
        report.components.is_empty(),
        "only blanked labels differ: {}",
        report.to_text()
    );
    assert_eq!(report.managed, [false, true]);
}
