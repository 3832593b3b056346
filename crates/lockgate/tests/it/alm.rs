//! The Power Platform ALM example (`examples/power-platform-alm`) end to end on a real `lockgate up`:
//! pipeline 1 exports a solution from a development Dataverse (the local stand-in that answers as
//! the Web API reference says), unpacks it and pushes the source with the job's token; that push
//! triggers pipeline 2, which packs a managed solution, checks it, publishes it and imports it into
//! test and, after an approval, into production, each with its own deployment settings. Everything
//! is set up with the CLI commands the example's README shows.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lockgate_protocol::api;
use lockgate_solution::synthetic::{SampleOptions, sample};

use crate::server::{client, git, start_server, stdout};
use crate::solution::dataverse_server::{self, FakeDataverse};
use crate::solution::read_manifest;

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/power-platform-alm")
}

/// Copies the example's files (not its README) into `to`.
fn copy_example(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_example(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Runs a client command of the example's README; it must succeed.
fn cli(dir: &Path, up: &crate::server::Up, args: &[&str]) -> String {
    let out = client(dir, up, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "lockgate {args:?}: {}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

fn runs_of(api: &lockgate_agent::ServerClient, pipeline: i64) -> Vec<api::Run> {
    let runs: Vec<api::Run> = api.get_json("/api/v1/runs").unwrap();
    runs.into_iter()
        .filter(|run| run.pipeline_id == pipeline)
        .collect()
}

/// Waits (at most two minutes) until pipeline `pipeline` has a run that satisfies `done`.
fn wait_for_run(
    api: &lockgate_agent::ServerClient,
    pipeline: i64,
    what: &str,
    done: impl Fn(&api::Run) -> bool,
) -> api::Run {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let runs = runs_of(api, pipeline);
        if let Some(run) = runs.iter().find(|run| done(run)) {
            return run.clone();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {runs:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn fake_environment(exports: &[(bool, Vec<u8>)]) -> FakeDataverse {
    let fake = FakeDataverse::start();
    fake.with_state(|state| {
        state.manifest_reader = Some(read_manifest);
        for (managed, zip) in exports {
            state
                .exports
                .insert(("ContosoTravel".into(), *managed), zip.clone());
        }
    });
    fake
}

fn connection(dir: &Path, up: &crate::server::Up, name: &str, fake: &FakeDataverse) {
    cli(
        dir,
        up,
        &[
            "service-connections",
            "set",
            name,
            "--project",
            "contoso",
            "--kind",
            "powerPlatformSPN",
            "--field",
            &format!("tenantId={}", dataverse_server::TENANT),
            "--field",
            &format!("applicationId={}", dataverse_server::CLIENT_ID),
            "--field",
            &format!("clientSecret={}", dataverse_server::CLIENT_SECRET),
            "--field",
            &format!("environmentUrl={}", fake.url),
            "--field",
            &format!("authorityUrl={}", fake.url),
        ],
    );
}

/// The `cts_ApiUrl` value an import into `fake` was given.
fn imported_api_url(fake: &FakeDataverse) -> Vec<String> {
    fake.with_state(|state| {
        state
            .imports
            .iter()
            .map(|import| {
                let parameters = import.body["ComponentParameters"].to_string();
                if parameters.contains("https://api.test.contoso.example") {
                    "test".to_string()
                } else if parameters.contains("https://api.contoso.example") {
                    "prod".to_string()
                } else {
                    parameters
                }
            })
            .collect()
    })
}

#[test]
fn the_power_platform_example_exports_commits_builds_and_promotes_on_the_server() {
    let unmanaged = sample(&SampleOptions::default()).to_zip_bytes().unwrap();
    let managed = sample(&SampleOptions {
        managed: true,
        ..SampleOptions::default()
    })
    .to_zip_bytes()
    .unwrap();
    let dev = fake_environment(&[(false, unmanaged), (true, managed)]);
    let test = fake_environment(&[]);
    let prod = fake_environment(&[]);

    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let up = start_server(dir, &["up", "--port", "0", "--no-demo"]);
    let api = lockgate_agent::ServerClient::new(&up.url, &up.token);
    let _: api::Project = api
        .post_json(
            "/api/v1/projects",
            &api::CreateProject {
                name: "contoso".into(),
            },
        )
        .unwrap();
    let repo: api::Repository = api
        .post_json(
            "/api/v1/projects/contoso/repositories",
            &api::CreateRepository { name: "alm".into() },
        )
        .unwrap();
    let work = dir.join("alm");
    std::fs::create_dir_all(&work).unwrap();
    copy_example(&example_dir(), &work);
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "The ALM example"]);
    let push_url = repo
        .clone_url
        .replace("http://", &format!("http://admin:{}@", up.token));
    git(&work, &["push", "-q", &push_url, "HEAD:refs/heads/main"]);

    for (name, yaml) in [
        ("export-solution", "pipelines/export-solution.yml"),
        ("build-and-deploy", "pipelines/build-and-deploy.yml"),
    ] {
        cli(
            dir,
            &up,
            &[
                "pipelines",
                "create",
                "--project",
                "contoso",
                "--name",
                name,
                "--repository",
                "alm",
                "--yaml",
                yaml,
            ],
        );
    }
    let pipelines: Vec<api::Pipeline> = api.get_json("/api/v1/projects/contoso/pipelines").unwrap();
    let id_of = |name: &str| pipelines.iter().find(|p| p.name == name).unwrap().id;
    let (export, deploy) = (id_of("export-solution"), id_of("build-and-deploy"));

    cli(
        dir,
        &up,
        &[
            "variable-groups",
            "set",
            "contoso-alm",
            "--project",
            "contoso",
            "--var",
            "SolutionName=ContosoTravel",
        ],
    );
    connection(dir, &up, "contoso-dev", &dev);
    connection(dir, &up, "contoso-test", &test);
    connection(dir, &up, "contoso-prod", &prod);
    for pipeline in [export, deploy] {
        let pipeline = pipeline.to_string();
        cli(
            dir,
            &up,
            &[
                "variable-groups",
                "authorize",
                "contoso-alm",
                "--project",
                "contoso",
                "--pipeline",
                &pipeline,
            ],
        );
        cli(
            dir,
            &up,
            &[
                "service-connections",
                "authorize",
                "contoso-dev",
                "--project",
                "contoso",
                "--pipeline",
                &pipeline,
            ],
        );
    }
    for name in ["contoso-test", "contoso-prod"] {
        cli(
            dir,
            &up,
            &[
                "service-connections",
                "authorize",
                name,
                "--project",
                "contoso",
                "--pipeline",
                &deploy.to_string(),
            ],
        );
    }
    cli(
        dir,
        &up,
        &[
            "checks",
            "approval",
            "contoso-prod",
            "--project",
            "contoso",
            "--approvers",
            "admin",
            "--allow-requester",
            "--instructions",
            "Check the test environment first",
        ],
    );
    assert!(
        runs_of(&api, deploy).is_empty(),
        "pushing the example (no solution yet) starts nothing"
    );

    // Pipeline 1, queued by hand, exports from dev and pushes the source.
    cli(dir, &up, &["queue", &export.to_string()]);
    let exported = wait_for_run(&api, export, "the export run", |r| r.status == "completed");
    let logs = cli(dir, &up, &["runs", "logs", &exported.id.to_string()]);
    assert_eq!(exported.result.as_deref(), Some("succeeded"), "{logs}");
    assert!(!logs.contains(dataverse_server::CLIENT_SECRET), "{logs}");
    git(&work, &["pull", "-q", &push_url, "main"]);
    let solution_xml = work.join("solution/ContosoTravel/Other/Solution.xml");
    assert!(solution_xml.exists(), "the export committed the source");
    let log = std::process::Command::new("git")
        .args(["log", "-1", "--format=%an|%s"])
        .current_dir(&work)
        .output()
        .unwrap();
    let last = String::from_utf8_lossy(&log.stdout).trim().to_string();
    assert!(
        last.starts_with("Export pipeline|Export ContosoTravel from development"),
        "{last}"
    );
    dev.with_state(|state| {
        assert!(
            state
                .requests
                .iter()
                .any(|r| r.contains("ExportSolutionAsync")),
            "{:?}",
            state.requests
        );
    });

    // That push triggered pipeline 2: built, checked, deployed to test, waiting for production.
    let deploying = wait_for_run(&api, deploy, "the build-and-deploy run", |_| true);
    assert_eq!(deploying.reason, "push");
    assert_eq!(
        deploying.source_commit,
        String::from_utf8_lossy(
            &std::process::Command::new("git")
                .args(["rev-parse", "HEAD"])
                .current_dir(&work)
                .output()
                .unwrap()
                .stdout
        )
        .trim()
    );
    let run = deploying.id.to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = client(dir, &up, &["approve", &run, "--stage", "Production"]);
        if out.status.code() == Some(0) {
            break;
        }
        let current = runs_of(&api, deploy).remove(0);
        assert_ne!(
            current.status,
            "completed",
            "the run ended before production: {}",
            cli(dir, &up, &["runs", "logs", &run])
        );
        assert!(
            Instant::now() < deadline,
            "production never asked for approval: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Before the approval, test has its import and production none.
        assert!(prod.with_state(|state| state.imports.is_empty()));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        imported_api_url(&test),
        ["test"],
        "test imported once with its settings"
    );
    let done = wait_for_run(&api, deploy, "the deployment to finish", |r| {
        r.status == "completed"
    });
    let logs = cli(dir, &up, &["runs", "logs", &run]);
    assert_eq!(done.result.as_deref(), Some("succeeded"), "{logs}");
    assert!(!logs.contains(dataverse_server::CLIENT_SECRET), "{logs}");
    assert_eq!(
        imported_api_url(&prod),
        ["prod"],
        "production imported with its settings"
    );
    for fake in [&test, &prod] {
        fake.with_state(|state| {
            let installed = &state.solutions["ContosoTravel"];
            assert!(installed.managed, "a managed solution was imported");
        });
    }
    // The ledger of production names the run.
    let ledger = cli(
        dir,
        &up,
        &[
            "environments",
            "show",
            "contoso-prod",
            "--project",
            "contoso",
        ],
    );
    let now = format!("runs now: build-and-deploy #{}", done.number);
    assert!(ledger.contains(&now), "{ledger}");
    assert!(
        ledger.contains("Production / ImportToProduction") && ledger.contains("[drop@"),
        "{ledger}"
    );
    // The artifact holds the managed zip and the settings.
    let artifacts: serde_json::Value = api
        .get_json(&format!("/api/v1/runs/{run}/artifacts"))
        .unwrap();
    assert!(artifacts.to_string().contains("drop"), "{artifacts}");
}
