//! End-to-end tests of `lockgate solution ...` and of the Power Platform tasks in `lockgate run`
//! against a local Dataverse Web API stand-in.

#[path = "../../../lockgate-solution/tests/it/dataverse_server.rs"]
pub(crate) mod dataverse_server;

use std::path::Path;

use lockgate_solution::synthetic::{SampleOptions, sample};
use lockgate_solution::{Solution, SolutionPackage};

use crate::cli::lockgate;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_sample(dir: &Path, name: &str, options: SampleOptions) {
    sample(&options).write_zip(&dir.join(name)).unwrap();
}

#[test]
fn unpack_then_pack_round_trips_and_a_second_unpack_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_sample(
        dir.path(),
        "in.zip",
        SampleOptions {
            flows: 2,
            ..SampleOptions::default()
        },
    );
    let out = lockgate(dir.path(), &["solution", "unpack", "in.zip", "src"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("unpacked in.zip into src"));
    let first = lockgate_solution::SourceTree::read_dir(&dir.path().join("src")).unwrap();
    let out = lockgate(dir.path(), &["solution", "unpack", "in.zip", "src"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        lockgate_solution::SourceTree::read_dir(&dir.path().join("src"))
            .unwrap()
            .files,
        first.files
    );

    let out = lockgate(dir.path(), &["solution", "pack", "src", "out.zip"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let original = SolutionPackage::read_zip(&dir.path().join("in.zip")).unwrap();
    let packed = SolutionPackage::read_zip(&dir.path().join("out.zip")).unwrap();
    assert_eq!(
        lockgate_solution::package::normalized_differences(&original, &packed),
        Vec::<String>::new()
    );
}

#[test]
fn bad_input_exits_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.zip"), b"PK\x03\x04 not really").unwrap();
    let out = lockgate(dir.path(), &["solution", "unpack", "broken.zip", "src"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("broken.zip"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("src").exists(), "nothing half-written");

    std::fs::create_dir_all(dir.path().join("empty/Workflows")).unwrap();
    let out = lockgate(dir.path(), &["solution", "pack", "empty", "out.zip"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("Other/Solution.xml"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("out.zip").exists());

    let out = lockgate(
        dir.path(),
        &[
            "solution",
            "unpack",
            "in.zip",
            "src",
            "--package-type",
            "sideways",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
}

const UNPACK_BOTH: [&str; 6] = [
    "solution",
    "unpack",
    "Contoso.zip",
    "src",
    "--package-type",
    "both",
];

#[test]
fn both_unpack_needs_the_managed_sibling() {
    let dir = tempfile::tempdir().unwrap();
    write_sample(dir.path(), "Contoso.zip", SampleOptions::default());
    let out = lockgate(dir.path(), &UNPACK_BOTH);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("Contoso_managed.zip"),
        "{}",
        text(&out.stderr)
    );
    write_sample(
        dir.path(),
        "Contoso_managed.zip",
        SampleOptions {
            managed: true,
            ..SampleOptions::default()
        },
    );
    let out = lockgate(dir.path(), &UNPACK_BOTH);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        std::fs::read_to_string(dir.path().join("src/Other/Solution.xml"))
            .unwrap()
            .contains("<Managed>2</Managed>")
    );
    let out = lockgate(
        dir.path(),
        &[
            "solution",
            "pack",
            "src",
            "m.zip",
            "--package-type",
            "managed",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        Solution::from_package(&SolutionPackage::read_zip(&dir.path().join("m.zip")).unwrap())
            .unwrap()
            .is_managed()
    );
}

#[test]
fn diff_reports_components_and_can_set_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    write_sample(dir.path(), "v1.zip", SampleOptions::default());
    write_sample(
        dir.path(),
        "v2.zip",
        SampleOptions {
            flows: 2,
            version: "1.0.0.2".into(),
            ..SampleOptions::default()
        },
    );
    let out = lockgate(dir.path(), &["solution", "diff", "v1.zip", "v2.zip"]);
    assert_eq!(out.status.code(), Some(0));
    let report = text(&out.stdout);
    assert!(report.contains("version 1.0.0.1 -> 1.0.0.2"), "{report}");
    assert!(
        report.contains("+ cloud flow 00000001-595a-ee11-be6f-6045bd033774 (Trip approval 1)"),
        "{report}"
    );
    let out = lockgate(
        dir.path(),
        &[
            "solution",
            "diff",
            "v1.zip",
            "v2.zip",
            "--format",
            "json",
            "--exit-code",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["components"][0]["change"], "added");
    lockgate(dir.path(), &["solution", "unpack", "v1.zip", "tree"]);
    let out = lockgate(
        dir.path(),
        &["solution", "diff", "tree", "v1.zip", "--exit-code"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "a folder and its zip do not differ: {}",
        text(&out.stdout)
    );
}

#[test]
fn check_fails_on_the_chosen_level_and_writes_sarif() {
    let dir = tempfile::tempdir().unwrap();
    write_sample(dir.path(), "clean.zip", SampleOptions::default());
    write_sample(
        dir.path(),
        "bad.zip",
        SampleOptions {
            embedded_connection: true,
            value_in_solution: true,
            ..SampleOptions::default()
        },
    );
    let out = lockgate(dir.path(), &["solution", "check", "clean.zip"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "only a warning: {}",
        text(&out.stdout)
    );
    let out = lockgate(
        dir.path(),
        &["solution", "check", "clean.zip", "--fail-on", "warning"],
    );
    assert_eq!(out.status.code(), Some(1));
    let out = lockgate(
        dir.path(),
        &[
            "solution",
            "check",
            "clean.zip",
            "--target-stage",
            "production",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "unmanaged headed for production is an error"
    );
    let out = lockgate(
        dir.path(),
        &["solution", "check", "bad.zip", "--sarif", "bad.sarif"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("flow-embedded-connection"));
    let sarif: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("bad.sarif")).unwrap()).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let rules: Vec<&str> = sarif["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ruleId"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        vec![
            "flow-embedded-connection",
            "env-var-value-in-solution",
            "unmanaged-for-deployment"
        ]
    );
}

#[test]
fn create_settings_writes_and_merges_a_settings_file() {
    let dir = tempfile::tempdir().unwrap();
    write_sample(dir.path(), "s.zip", SampleOptions::default());
    let out = lockgate(dir.path(), &["solution", "create-settings", "s.zip"]);
    assert_eq!(out.status.code(), Some(0));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        printed["EnvironmentVariables"][0]["SchemaName"],
        "cts_ApiUrl"
    );
    std::fs::write(
        dir.path().join("test.json"),
        r#"{"EnvironmentVariables":[{"SchemaName":"cts_ApiUrl","Value":"https://test.example"}],"ConnectionReferences":[]}"#,
    )
    .unwrap();
    let out = lockgate(
        dir.path(),
        &["solution", "create-settings", "s.zip", "--out", "test.json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let merged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("test.json")).unwrap()).unwrap();
    assert_eq!(
        merged["EnvironmentVariables"][0]["Value"],
        "https://test.example"
    );
    assert_eq!(
        merged["ConnectionReferences"][0]["LogicalName"],
        "cts_sharedapprovals_1a2b3"
    );
    std::fs::write(
        dir.path().join("typo.json"),
        r#"{"EnvironmentVariabels":[]}"#,
    )
    .unwrap();
    let out = lockgate(
        dir.path(),
        &["solution", "create-settings", "s.zip", "--out", "typo.json"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("typo.json")
            && text(&out.stderr).contains("EnvironmentVariabels")
    );
}

#[test]
fn version_prints_sets_and_bumps() {
    let dir = tempfile::tempdir().unwrap();
    write_sample(dir.path(), "s.zip", SampleOptions::default());
    lockgate(dir.path(), &["solution", "unpack", "s.zip", "src"]);
    let out = lockgate(dir.path(), &["solution", "version", "src"]);
    assert_eq!(text(&out.stdout).trim(), "1.0.0.1");
    let out = lockgate(
        dir.path(),
        &["solution", "version", "src", "--bump", "build"],
    );
    assert_eq!(text(&out.stdout).trim(), "1.0.0.1 -> 1.0.1.0");
    let out = lockgate(
        dir.path(),
        &["solution", "version", "src", "--set", "2.1.0.0"],
    );
    assert_eq!(out.status.code(), Some(0));
    let out = lockgate(
        dir.path(),
        &["solution", "version", "src", "--bump", "revision"],
    );
    assert_eq!(text(&out.stdout).trim(), "2.1.0.0 -> 2.1.0.1");
    let out = lockgate(dir.path(), &["solution", "version", "src", "--set", "two"]);
    assert_eq!(out.status.code(), Some(2));
}

pub(crate) fn read_manifest(zip: &[u8]) -> Option<(String, String, bool)> {
    let package = SolutionPackage::from_zip_bytes(zip, Path::new("imported.zip")).ok()?;
    let model = Solution::from_package(&package).ok()?;
    Some((
        model.unique_name.clone(),
        model.version.clone(),
        model.is_managed(),
    ))
}

#[test]
fn a_pipeline_exports_unpacks_packs_checks_and_imports_with_lockgate_run() {
    let server = dataverse_server::FakeDataverse::start();
    let exported = sample(&SampleOptions::default()).to_zip_bytes().unwrap();
    server.with_state(|state| {
        state.manifest_reader = Some(read_manifest);
        state
            .exports
            .insert(("ContosoTravel".into(), false), exported);
        state.polls_before_done = 1;
    });
    let temp = tempfile::tempdir().unwrap();
    let repo = temp.path().join("repo");
    let dir = &repo;
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(
        dir.join("config/test.json"),
        r#"{"EnvironmentVariables":[{"SchemaName":"cts_ApiUrl","Value":"https://test.example"}],"ConnectionReferences":[{"LogicalName":"cts_sharedapprovals_1a2b3","ConnectionId":"4445162937b84457a3465d2f0c2cab7e","ConnectorId":"/providers/Microsoft.PowerApps/apis/shared_approvals"}]}"#,
    )
    .unwrap();
    let connection = |name: &str| {
        serde_json::json!({
            format!("{name}.TenantId"): dataverse_server::TENANT,
            format!("{name}.ApplicationId"): dataverse_server::CLIENT_ID,
            format!("{name}.ClientSecret"): {"value": dataverse_server::CLIENT_SECRET, "isSecret": true},
            format!("{name}.EnvironmentUrl"): server.url,
            format!("{name}.AuthorityUrl"): server.url,
            format!("{name}.PollIntervalSeconds"): "0",
        })
        .to_string()
    };
    std::fs::write(dir.join("dev.json"), connection("dev")).unwrap();
    std::fs::write(dir.join("test-env.json"), connection("test")).unwrap();
    std::fs::write(
        dir.join("azure-pipelines.yml"),
        r#"trigger: none
variables:
- group: dev-connection
- group: test-connection
steps:
- checkout: self
- task: PowerPlatformToolInstaller@2
- task: PowerPlatformWhoAmi@2
  inputs:
    authenticationType: PowerPlatformSPN
    PowerPlatformSPN: dev
- task: PowerPlatformExportSolution@2
  inputs:
    authenticationType: PowerPlatformSPN
    PowerPlatformSPN: dev
    SolutionName: ContosoTravel
    SolutionOutputFile: out/ContosoTravel.zip
    AsyncOperation: true
    MaxAsyncWaitTime: 60
- task: PowerPlatformUnpackSolution@2
  inputs:
    SolutionInputFile: out/ContosoTravel.zip
    SolutionTargetFolder: solution/src
- task: PowerPlatformPackSolution@2
  inputs:
    SolutionSourceFolder: solution/src
    SolutionOutputFile: out/packed/ContosoTravel.zip
- task: PowerPlatformChecker@2
  inputs:
    PowerPlatformSPN: dev
    FilesToAnalyze: out/packed/*.zip
    RuleSet: 0ad12346-e108-40b8-a956-9a8f95ea18c9
- task: PowerPlatformImportSolution@2
  inputs:
    authenticationType: PowerPlatformSPN
    PowerPlatformSPN: test
    SolutionInputFile: out/packed/ContosoTravel.zip
    UseDeploymentSettingsFile: true
    DeploymentSettingsFile: config/test.json
    AsyncOperation: true
    MaxAsyncWaitTime: 60
- task: PowerPlatformPublishCustomizations@2
  inputs:
    PowerPlatformSPN: test
- task: PowerPlatformSetSolutionVersion@2
  inputs:
    PowerPlatformSPN: test
    SolutionName: ContosoTravel
    SolutionVersionNumber: 1.0.0.9
"#,
    )
    .unwrap();
    let work = temp.path().join("work");
    let out = lockgate(
        dir,
        &[
            "run",
            "--root",
            dir.to_str().unwrap(),
            "--var-group",
            "dev-connection=dev.json",
            "--var-group",
            "test-connection=test-env.json",
            "--work-dir",
            work.to_str().unwrap(),
        ],
    );
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        !log.contains(dataverse_server::CLIENT_SECRET),
        "the client secret is masked: {log}"
    );
    server.with_state(|state| {
        assert_eq!(state.imports.len(), 1, "{:?}", state.requests);
        let imported =
            SolutionPackage::from_zip_bytes(&state.imports[0].zip, Path::new("imported.zip"))
                .unwrap();
        assert_eq!(
            Solution::from_package(&imported).unwrap().unique_name,
            "ContosoTravel"
        );
        let parameters = state.imports[0].body["ComponentParameters"]
            .as_array()
            .unwrap();
        assert_eq!(parameters.len(), 2);
        assert_eq!(state.published, 1);
        assert_eq!(state.solutions["ContosoTravel"].version, "1.0.0.9");
        assert!(
            state
                .requests
                .iter()
                .any(|r| r == "GET /api/data/v9.2/WhoAmI")
        );
    });
}

fn online(
    dir: &Path,
    server: &dataverse_server::FakeDataverse,
    secret: &str,
    args: &[&str],
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_lockgate"))
        .args(["solution"])
        .args(args)
        .args([
            "--environment",
            &server.url,
            "--tenant-id",
            dataverse_server::TENANT,
            "--authority",
            &server.url,
        ])
        .env("POWERPLATFORM_CLIENT_ID", dataverse_server::CLIENT_ID)
        .env("POWERPLATFORM_CLIENT_SECRET", secret)
        .env("POWERPLATFORM_POLL_INTERVAL_SECONDS", "0")
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn online_commands_export_import_publish_and_set_the_version() {
    let server = dataverse_server::FakeDataverse::start();
    let exported = sample(&SampleOptions {
        managed: true,
        ..SampleOptions::default()
    })
    .to_zip_bytes()
    .unwrap();
    server.with_state(|state| {
        state.manifest_reader = Some(read_manifest);
        state
            .exports
            .insert(("ContosoTravel".into(), true), exported.clone());
    });
    let dir = tempfile::tempdir().unwrap();
    let out = online(
        dir.path(),
        &server,
        dataverse_server::CLIENT_SECRET,
        &["whoami"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Connected as user 88057198-a9b1-ec11-9840-00224829c4f9"));

    let out = online(dir.path(), &server, "wrong", &["whoami"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("AADSTS7000215"),
        "{}",
        text(&out.stderr)
    );

    let out = online(
        dir.path(),
        &server,
        dataverse_server::CLIENT_SECRET,
        &["export", "ContosoTravel", "ct.zip", "--managed"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(dir.path().join("ct.zip")).unwrap(), exported);

    std::fs::write(
        dir.path().join("typo.json"),
        r#"{"EnvironmentVariables":[{"SchemaName":"cts_Nope","Value":"x"}]}"#,
    )
    .unwrap();
    let out = online(
        dir.path(),
        &server,
        dataverse_server::CLIENT_SECRET,
        &["import", "ct.zip", "--settings", "typo.json"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cts_Nope"));

    std::fs::write(
        dir.path().join("prod.json"),
        r#"{"EnvironmentVariables":[{"SchemaName":"cts_ApiUrl","Value":"https://prod.example"}]}"#,
    )
    .unwrap();
    let out = online(
        dir.path(),
        &server,
        dataverse_server::CLIENT_SECRET,
        &[
            "import",
            "ct.zip",
            "--settings",
            "prod.json",
            "--stage-and-upgrade",
            "--publish",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = online(
        dir.path(),
        &server,
        dataverse_server::CLIENT_SECRET,
        &["online-version", "ContosoTravel", "1.0.0.5"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    server.with_state(|state| {
        assert_eq!(state.imports.len(), 1);
        assert_eq!(state.imports[0].action, "StageAndUpgradeAsync");
        assert_eq!(
            state.imports[0].body["ComponentParameters"][0]["value"],
            "https://prod.example"
        );
        assert_eq!(state.published, 1);
        assert_eq!(state.solutions["ContosoTravel"].version, "1.0.0.5");
    });

    server
        .with_state(|state| state.fail_imports_with = Some("Dependency calculation failed".into()));
    let out = online(
        dir.path(),
        &server,
        dataverse_server::CLIENT_SECRET,
        &["import", "ct.zip"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("Dependency calculation failed")
            && text(&out.stderr).contains("import log"),
        "{}",
        text(&out.stderr)
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lockgate"))
        .args([
            "solution",
            "publish",
            "--environment",
            &server.url,
            "--tenant-id",
            "t",
            "--client-id",
            "c",
        ])
        .env_remove("POWERPLATFORM_CLIENT_SECRET")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("POWERPLATFORM_CLIENT_SECRET"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn pack_with_map_takes_files_from_build_output() {
    let dir = tempfile::tempdir().unwrap();
    write_sample(dir.path(), "in.zip", SampleOptions::default());
    lockgate(dir.path(), &["solution", "unpack", "in.zip", "src"]);
    std::fs::create_dir_all(dir.path().join("dist")).unwrap();
    std::fs::write(
        dir.path().join("dist/cts_tripapp_BackgroundImageUri"),
        b"rebuilt image",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("map.xml"),
        r#"<Mapping><FileToFile map="CanvasApps\cts_tripapp_BackgroundImageUri" to="..\dist\cts_tripapp_BackgroundImageUri" /></Mapping>"#,
    )
    .unwrap();
    let out = lockgate(
        dir.path(),
        &["solution", "pack", "src", "out.zip", "--map", "map.xml"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("1 file(s) taken from the locations in map.xml"));
    let packed = SolutionPackage::read_zip(&dir.path().join("out.zip")).unwrap();
    assert_eq!(
        packed.get("CanvasApps/cts_tripapp_BackgroundImageUri"),
        Some(&b"rebuilt image"[..])
    );

    std::fs::remove_file(dir.path().join("dist/cts_tripapp_BackgroundImageUri")).unwrap();
    let out = lockgate(
        dir.path(),
        &["solution", "pack", "src", "out2.zip", "--map", "map.xml"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot be read"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("out2.zip").exists());
}

#[test]
fn check_with_a_settings_file_requires_every_connection_to_be_bound() {
    let dir = tempfile::tempdir().unwrap();
    write_sample(
        dir.path(),
        "m.zip",
        SampleOptions {
            managed: true,
            ..SampleOptions::default()
        },
    );
    let out = lockgate(
        dir.path(),
        &["solution", "create-settings", "m.zip", "--out", "prod.json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = lockgate(
        dir.path(),
        &["solution", "check", "m.zip", "--settings", "prod.json"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a fresh settings file binds nothing: {}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("settings-unbound-connection-reference"));
    let filled = std::fs::read_to_string(dir.path().join("prod.json"))
        .unwrap()
        .replace(
            "\"ConnectionId\": \"\"",
            "\"ConnectionId\": \"4445162937b84457a3465d2f0c2cab7e\"",
        );
    std::fs::write(dir.path().join("prod.json"), filled).unwrap();
    let out = lockgate(
        dir.path(),
        &["solution", "check", "m.zip", "--settings", "prod.json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}
