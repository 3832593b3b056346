//! The Dataverse client and the online Build Tools tasks against the local Web API stand-in.

use std::collections::BTreeMap;
use std::time::Duration;

use lockgate_solution::dataverse::{
    DataverseClient, DataverseConfig, ImportOptions, ServicePrincipal,
};
use lockgate_solution::synthetic::{SampleOptions, sample};
use lockgate_solution::{Solution, SolutionPackage};

use crate::dataverse_server::{CLIENT_ID, CLIENT_SECRET, FakeDataverse, TENANT};

fn read_manifest(zip: &[u8]) -> Option<(String, String, bool)> {
    let package =
        SolutionPackage::from_zip_bytes(zip, std::path::Path::new("imported.zip")).ok()?;
    let model = Solution::from_package(&package).ok()?;
    Some((
        model.unique_name.clone(),
        model.version.clone(),
        model.is_managed(),
    ))
}

fn server() -> FakeDataverse {
    let server = FakeDataverse::start();
    server.with_state(|state| state.manifest_reader = Some(read_manifest));
    server
}

fn config(server: &FakeDataverse, secret: &str) -> DataverseConfig {
    let principal = ServicePrincipal {
        tenant_id: TENANT.into(),
        client_id: CLIENT_ID.into(),
        client_secret: secret.into(),
    };
    let mut config = DataverseConfig::new(&format!("{}/", server.url), principal);
    config.authority_url = server.url.clone();
    config.poll_interval = Duration::from_millis(20);
    config
}

#[test]
fn who_am_i_answers_with_the_caller() {
    let server = server();
    let mut client = DataverseClient::connect(config(&server, CLIENT_SECRET)).unwrap();
    let who = client.who_am_i().unwrap();
    assert_eq!(who.user_id, "88057198-a9b1-ec11-9840-00224829c4f9");
    let requests = server.with_state(|state| state.requests.clone());
    assert_eq!(
        requests,
        vec![
            format!("POST /{TENANT}/oauth2/v2.0/token"),
            "GET /api/data/v9.2/WhoAmI".to_string()
        ]
    );
}

#[test]
fn bad_credentials_fail_with_the_authority_message() {
    let server = server();
    let err = DataverseClient::connect(config(&server, "wrong"))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("authentication failed (401)") && err.contains("AADSTS7000215"),
        "{err}"
    );
}

#[test]
fn throttled_requests_are_retried_after_retry_after() {
    let server = server();
    let mut client = DataverseClient::connect(config(&server, CLIENT_SECRET)).unwrap();
    server.with_state(|state| state.throttle_next = 2);
    let started = std::time::Instant::now();
    client.who_am_i().unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited Retry-After twice"
    );
    assert_eq!(
        client
            .log
            .iter()
            .filter(|line| line.contains("429, retrying in 1s"))
            .count(),
        2,
        "{:?}",
        client.log
    );
}

#[test]
fn export_returns_the_zip_the_environment_holds() {
    let server = server();
    let zip = sample(&SampleOptions::default()).to_zip_bytes().unwrap();
    server.with_state(|state| {
        state
            .exports
            .insert(("ContosoTravel".into(), false), zip.clone())
    });
    let mut client = DataverseClient::connect(config(&server, CLIENT_SECRET)).unwrap();
    assert_eq!(
        client
            .export_solution(
                "ContosoTravel",
                false,
                &[("ExportCalendarSettings", true)],
                None
            )
            .unwrap(),
        zip
    );
    server.with_state(|state| state.polls_before_done = 1);
    assert_eq!(
        client
            .export_solution("ContosoTravel", false, &[], Some(Duration::from_secs(30)))
            .unwrap(),
        zip
    );
    let requests = server.with_state(|state| state.requests.clone());
    assert!(
        requests
            .iter()
            .any(|r| r == "POST /api/data/v9.2/ExportSolutionAsync"),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r == "POST /api/data/v9.2/DownloadSolutionExportData"),
        "{requests:?}"
    );
    let err = client
        .export_solution("Nope", true, &[], None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("404") && err.contains("The solution Nope was not found"),
        "{err}"
    );
}

#[test]
fn import_sends_component_parameters_waits_and_publishes() {
    let server = server();
    server.with_state(|state| state.polls_before_done = 2);
    let package = sample(&SampleOptions {
        managed: true,
        ..SampleOptions::default()
    });
    let zip = package.to_zip_bytes().unwrap();
    let mut client = DataverseClient::connect(config(&server, CLIENT_SECRET)).unwrap();
    let parameters = vec![
        serde_json::json!({"@odata.type": "Microsoft.Dynamics.CRM.environmentvariablevalue", "schemaname": "cts_ApiUrl", "value": "https://test.example"}),
    ];
    let outcome = client
        .import_solution(
            &zip,
            &ImportOptions {
                component_parameters: parameters.clone(),
                max_wait: Duration::from_secs(30),
                publish_workflows: true,
                ..ImportOptions::default()
            },
        )
        .unwrap();
    assert_eq!(outcome.import_job_id.len(), 36);
    client.publish_all().unwrap();
    server.with_state(|state| {
        assert_eq!(state.imports.len(), 1);
        assert_eq!(state.imports[0].action, "ImportSolutionAsync");
        assert_eq!(state.imports[0].zip, zip);
        assert_eq!(
            state.imports[0].body["ComponentParameters"],
            serde_json::Value::Array(parameters)
        );
        assert_eq!(state.imports[0].body["PublishWorkflows"], true);
        assert_eq!(
            state.imports[0].body["ImportJobId"],
            outcome.import_job_id.as_str()
        );
        assert_eq!(
            state
                .requests
                .iter()
                .filter(|r| r.contains("asyncoperations("))
                .count(),
            3
        );
        assert_eq!(state.published, 1);
        assert_eq!(state.solutions["ContosoTravel"].version, "1.0.0.1");
    });
    let online = client.find_solution("ContosoTravel").unwrap().unwrap();
    assert!(online.managed);
    client
        .set_online_version("ContosoTravel", "1.0.0.7")
        .unwrap();
    assert_eq!(
        client
            .find_solution("ContosoTravel")
            .unwrap()
            .unwrap()
            .version,
        "1.0.0.7"
    );
    assert!(
        client.find_solution("x' or 1 eq 1").is_err(),
        "unique names are validated before they reach a URL"
    );
}

#[test]
fn a_failed_import_reports_the_formatted_import_log() {
    let server = server();
    server.with_state(|state| {
        state.fail_imports_with =
            Some("Connection reference cts_sharedapprovals_1a2b3 has no connection".into())
    });
    let zip = sample(&SampleOptions::default()).to_zip_bytes().unwrap();
    let mut client = DataverseClient::connect(config(&server, CLIENT_SECRET)).unwrap();
    let err = client
        .import_solution(
            &zip,
            &ImportOptions {
                max_wait: Duration::from_secs(10),
                ..ImportOptions::default()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("failed: Connection reference cts_sharedapprovals_1a2b3 has no connection"),
        "{err}"
    );
    assert!(
        err.contains("import log of job") && err.contains("<Workbook>"),
        "{err}"
    );
}

#[test]
fn the_import_task_uses_the_service_connection_and_settings_file() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    sample(&SampleOptions {
        managed: true,
        ..SampleOptions::default()
    })
    .write_zip(&dir.path().join("ContosoTravel_managed.zip"))
    .unwrap();
    std::fs::write(
        dir.path().join("test.json"),
        r#"{"EnvironmentVariables":[{"SchemaName":"cts_ApiUrl","Value":"https://test.example"}],"ConnectionReferences":[{"LogicalName":"cts_sharedapprovals_1a2b3","ConnectionId":"4445162937b84457a3465d2f0c2cab7e","ConnectorId":"/providers/Microsoft.PowerApps/apis/shared_approvals"}]}"#,
    )
    .unwrap();
    let inputs: BTreeMap<String, String> = [
        ("authenticationType", "PowerPlatformSPN"),
        ("PowerPlatformSPN", "contoso-test"),
        ("SolutionInputFile", "ContosoTravel_managed.zip"),
        ("UseDeploymentSettingsFile", "true"),
        ("DeploymentSettingsFile", "test.json"),
        ("PublishCustomizationChanges", "true"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let url = server.url.clone();
    let variables = move |name: &str| -> Option<String> {
        match name {
            "contoso-test.TenantId" => Some(TENANT.into()),
            "contoso-test.ApplicationId" => Some(CLIENT_ID.into()),
            "contoso-test.ClientSecret" => Some(CLIENT_SECRET.into()),
            "contoso-test.EnvironmentUrl" | "contoso-test.AuthorityUrl" => Some(url.clone()),
            "contoso-test.PollIntervalSeconds" => Some("0".into()),
            _ => None,
        }
    };
    let mut lines = Vec::new();
    lockgate_solution::tasks::execute(
        "PowerPlatformImportSolution@2",
        &inputs,
        &variables,
        dir.path(),
        &mut |line| lines.push(line.to_string()),
    )
    .unwrap();
    assert!(
        lines
            .iter()
            .any(|line| line.contains("2 component parameter(s)")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|line| line.contains(CLIENT_SECRET)),
        "the secret never reaches the log"
    );
    server.with_state(|state| {
        let parameters = state.imports[0].body["ComponentParameters"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(
            parameters[0]["connectionid"],
            "4445162937b84457a3465d2f0c2cab7e"
        );
        assert_eq!(parameters[1]["value"], "https://test.example");
        assert_eq!(state.published, 1);
    });

    std::fs::write(
        dir.path().join("bad.json"),
        r#"{"EnvironmentVariables":[{"SchemaName":"cts_Typo","Value":"1"}]}"#,
    )
    .unwrap();
    let mut bad_inputs = inputs.clone();
    bad_inputs.insert("DeploymentSettingsFile".into(), "bad.json".into());
    let err = lockgate_solution::tasks::execute(
        "PowerPlatformImportSolution@2",
        &bad_inputs,
        &variables,
        dir.path(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        err.0.contains("bad.json") && err.0.contains("cts_Typo"),
        "{err}"
    );
    assert_eq!(
        server.with_state(|state| state.imports.len()),
        1,
        "nothing imported with a bad settings file"
    );
}

#[test]
fn stage_solution_returns_the_upload_id() {
    let server = server();
    let zip = sample(&SampleOptions::default()).to_zip_bytes().unwrap();
    let mut client = DataverseClient::connect(config(&server, CLIENT_SECRET)).unwrap();
    let results = client.stage_solution(&zip).unwrap();
    assert_eq!(results["StageSolutionStatus"], 1);
    assert_eq!(results["Size"], zip.len());
    assert!(
        results["StageSolutionUploadId"]
            .as_str()
            .is_some_and(|id| id.len() == 36)
    );
}

#[test]
fn a_refused_token_on_the_web_api_is_reported_as_401() {
    let server = server();
    let mut client = DataverseClient::connect(config(&server, CLIENT_SECRET)).unwrap();
    server.with_state(|state| state.reject_tokens = true);
    let err = client.who_am_i().unwrap_err().to_string();
    assert!(
        err.contains("failed with 401")
            && err.contains("not a member of the organization")
            && err.contains("application user"),
        "{err}"
    );
}

#[test]
fn setting_the_version_of_a_solution_the_environment_lacks_fails_clearly() {
    let server = server();
    let mut client = DataverseClient::connect(config(&server, CLIENT_SECRET)).unwrap();
    let err = client
        .set_online_version("NotInstalled", "1.0.0.0")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("solution NotInstalled does not exist"),
        "{err}"
    );
}

#[test]
fn a_canceled_run_stops_waiting_for_an_import() {
    let server = server();
    server.with_state(|state| state.polls_before_done = 1_000_000);
    let mut settings = config(&server, CLIENT_SECRET);
    settings.poll_interval = Duration::from_secs(5);
    let canceled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = canceled.clone();
    settings.cancel = Some(std::sync::Arc::new(move || {
        flag.load(std::sync::atomic::Ordering::SeqCst)
    }));
    let mut client = DataverseClient::connect(settings).unwrap();
    let zip = sample(&SampleOptions::default()).to_zip_bytes().unwrap();
    let canceler = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        canceled.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let started = std::time::Instant::now();
    let err = client
        .import_solution(
            &zip,
            &ImportOptions {
                max_wait: Duration::from_secs(600),
                ..ImportOptions::default()
            },
        )
        .unwrap_err()
        .to_string();
    canceler.join().unwrap();
    assert!(
        err.contains("canceled while waiting for Dataverse"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "stopped within a poll slice, not after the 5 s interval"
    );
}

#[test]
fn staged_upgrades_are_applied_and_solutions_deleted() {
    let server = server();
    let mut client = DataverseClient::connect(config(&server, CLIENT_SECRET)).unwrap();
    let zip = sample(&SampleOptions {
        managed: true,
        ..SampleOptions::default()
    })
    .to_zip_bytes()
    .unwrap();
    client
        .import_solution(
            &zip,
            &ImportOptions {
                holding_solution: true,
                max_wait: Duration::from_secs(10),
                ..ImportOptions::default()
            },
        )
        .unwrap();
    assert_eq!(
        server.with_state(|state| state.imports[0].body["HoldingSolution"].clone()),
        serde_json::json!(true)
    );
    let id = client.delete_and_promote("ContosoTravel").unwrap();
    assert_eq!(
        id,
        server.with_state(|state| state.solutions["ContosoTravel"].id.clone())
    );
    client.delete_solution("ContosoTravel").unwrap();
    assert!(client.find_solution("ContosoTravel").unwrap().is_none());
    let err = client
        .delete_solution("ContosoTravel")
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
}
