//! `lockgate migrate-store`: an embedded install (a real `lockgate up` on SQLite, with runs, logs,
//! artifacts, an environment's ledger, a variable group with a secret and a secure file) copied
//! into a throwaway PostgreSQL, then served from there.

use std::path::Path;
use std::time::{Duration, Instant};

use lockgate_store::test_postgres::TestPostgres;
use serde_json::Value;

use crate::cli::lockgate;
use crate::objects::SERVER_ENV;
use crate::server::{
    client, newest_completed_run, push_pipeline_to, start_another_server, start_server_with_env,
    stdout,
};

const DEPLOYING: &str = r#"variables:
- group: vault
stages:
- stage: Build
  jobs:
  - job: build
    steps:
    - script: mkdir -p out && echo moved to postgres > out/app.txt
    - script: test "$(Token)" = "kept-secret" && echo the secret decrypted
    - publish: out
      artifact: app
- stage: Deploy
  jobs:
  - deployment: web
    environment: dev
    strategy:
      runOnce:
        deploy:
          steps:
          - script: echo deploying the build
"#;

/// What a user sees of an install: its runs, each run's log and artifact contents, the ledger of
/// environment `dev` and the variable group.
fn what_is_there(dir: &Path, up: &crate::server::Up) -> Value {
    let api = lockgate_agent::ServerClient::new(&up.url, &up.token);
    let runs: Value = api.get_json("/api/v1/runs").unwrap();
    let mut seen = serde_json::Map::new();
    for run in runs.as_array().unwrap() {
        let id = run["id"].as_i64().unwrap();
        let logs = stdout(&client(dir, up, &["runs", "logs", &id.to_string()]));
        let files: Vec<lockgate_protocol::api::ArtifactFile> = api
            .get_json(&format!("/api/v1/runs/{id}/artifacts"))
            .unwrap();
        let contents: Vec<String> = files
            .iter()
            .map(|file| String::from_utf8(api.get_bytes(&file.download_url).unwrap()).unwrap())
            .collect();
        seen.insert(
            id.to_string(),
            serde_json::json!({"logs": logs, "files": files.len(), "contents": contents}),
        );
    }
    let ledger: Value = api
        .get_json("/api/v1/projects/moving/environments/dev/deployments")
        .unwrap();
    let group: Value = api
        .get_json("/api/v1/projects/moving/variable-groups/vault")
        .unwrap();
    serde_json::json!({"runs": runs, "seen": seen, "ledger": ledger, "group": group})
}

/// Waits until `count` runs exist and all completed.
fn wait_for_runs(
    api: &lockgate_agent::ServerClient,
    count: usize,
) -> Vec<lockgate_protocol::api::Run> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let runs: Vec<lockgate_protocol::api::Run> = api.get_json("/api/v1/runs").unwrap();
        if runs.len() == count && runs.iter().all(|run| run.status == "completed") {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "the runs did not finish: {runs:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The files of `folder`, sorted (none when it does not exist).
fn files_in(folder: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The bytes of the SQLite files of a data folder, to show that migrating leaves them untouched.
fn sqlite_files(data: &Path) -> Vec<(String, Vec<u8>)> {
    ["lockgate.db", "lockgate.db-wal"]
        .iter()
        .filter_map(|name| Some((name.to_string(), std::fs::read(data.join(name)).ok()?)))
        .collect()
}

#[test]
fn an_embedded_install_moves_to_postgres_with_its_runs_logs_artifacts_ledger_and_secrets() {
    use lockgate_protocol::api;
    use lockgate_store::Storage;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let embedded =
        start_server_with_env(dir.path(), &["up", "--port", "0", "--no-demo"], &SERVER_ENV);
    let api = lockgate_agent::ServerClient::new(&embedded.url, &embedded.token);
    let _: api::Project = api
        .post_json(
            "/api/v1/projects",
            &api::CreateProject {
                name: "moving".into(),
            },
        )
        .unwrap();
    let _: api::VariableGroup = api
        .put_json(
            "/api/v1/projects/moving/variable-groups/vault",
            &api::PutVariableGroup {
                description: "kept sealed".into(),
                variables: vec![api::PipelineVariable {
                    name: "Token".into(),
                    value: Some("kept-secret".into()),
                    secret: true,
                    allow_override: false,
                }],
            },
        )
        .unwrap();
    push_pipeline_to(dir.path(), &embedded, "moving", DEPLOYING);
    let pipelines: Vec<api::Pipeline> = api.get_json("/api/v1/projects/moving/pipelines").unwrap();
    let pipeline = pipelines[0].id;
    let _: api::VariableGroup = api
        .post_json(
            &format!("/api/v1/projects/moving/variable-groups/vault/pipelines/{pipeline}"),
            &serde_json::json!({}),
        )
        .unwrap();
    let first = newest_completed_run(&api);
    let first_logs = stdout(&client(
        dir.path(),
        &embedded,
        &["runs", "logs", &first.id.to_string()],
    ));
    let detail: Value = api.get_json(&format!("/api/v1/runs/{}", first.id)).unwrap();
    assert_eq!(
        first.result.as_deref(),
        Some("succeeded"),
        "{first:?} {first_logs} {detail}"
    );
    let queued = client(dir.path(), &embedded, &["queue", &pipeline.to_string()]);
    assert!(queued.status.success(), "{queued:?}");
    wait_for_runs(&api, 2);
    // Completed jobs' logs move to the object storage (here `artifacts/logs/` in the data folder).
    let logs = data.join("artifacts").join("logs");
    let deadline = Instant::now() + Duration::from_secs(60);
    while files_in(&logs).len() < 4 {
        assert!(
            Instant::now() < deadline,
            "the four jobs' logs were not archived: {:?}",
            files_in(&logs)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = what_is_there(dir.path(), &embedded);
    assert_eq!(before["runs"].as_array().unwrap().len(), 2, "{before}");
    assert_eq!(before["ledger"].as_array().unwrap().len(), 2, "{before}");
    let build_log = before["seen"][first.id.to_string()]["logs"]
        .as_str()
        .unwrap();
    assert!(build_log.contains("the secret decrypted"), "{build_log}");
    let projects: Vec<api::Project> = api.get_json("/api/v1/projects").unwrap();
    let project_id = projects.iter().find(|p| p.name == "moving").unwrap().id;
    let token = embedded.token.clone();
    drop(embedded);

    // A secure file (the store keeps it; it has no HTTP API yet).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = lockgate_store::SqliteStore::open(&data).await.unwrap();
        store
            .put_secure_file(&lockgate_store::NewSecureFile {
                project_id,
                name: "signing.pfx".into(),
                description: "a certificate".into(),
                content: "sealed-bytes".into(),
                size: 5,
                digest: "d1g3st".into(),
                user: "admin".into(),
            })
            .await
            .unwrap();
        store.close().await;
    });
    let sqlite_tables: Vec<String> = runtime.block_on(async {
        let store = lockgate_store::SqliteStore::open_read_only(&data)
            .await
            .unwrap();
        let schema = lockgate_store::migrate::sqlite_schema(&store)
            .await
            .unwrap();
        store.close().await;
        schema.into_keys().collect()
    });
    let source_before = sqlite_files(&data);

    let postgres = runtime.block_on(TestPostgres::start());
    let objects = dir.path().join("objects");
    let from = format!("sqlite:{}", data.display());
    let objects_arg = objects.display().to_string();
    let migrate = [
        "migrate-store",
        "--from",
        &from,
        "--to",
        postgres.url(),
        "--objects",
        &objects_arg,
    ];

    let out = lockgate(dir.path(), &migrate);
    let printed = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    assert!(printed.contains("counts and checksums match"), "{printed}");
    assert!(
        printed.contains("copied 1 artifact contents and 4 archived logs"),
        "one content, published twice; four jobs: {printed}"
    );
    let count_of = |table: &str| -> u64 {
        printed
            .lines()
            .find_map(|line| {
                let mut parts = line.split_whitespace();
                (parts.next() == Some(table)).then(|| parts.next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no line for {table}: {printed}"))
    };
    // Every table of the SQLite schema is copied.
    for table in &sqlite_tables {
        count_of(table);
    }
    assert_eq!(count_of("runs"), 2, "{printed}");
    assert_eq!(count_of("deployments"), 2, "{printed}");
    assert_eq!(count_of("artifacts"), 2, "{printed}");
    assert_eq!(count_of("secure_files"), 1, "{printed}");
    assert_eq!(count_of("variable_groups"), 1, "{printed}");
    assert!(count_of("log_chunks") >= 4, "{printed}");
    assert_eq!(
        sqlite_files(&data),
        source_before,
        "the SQLite files are untouched"
    );

    // A second copy into the now filled database is refused, naming a table.
    let again = lockgate(dir.path(), &migrate);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("the target database is not empty"),
        "{stderr}"
    );

    // The same data folder (repositories, secret key) now with PostgreSQL and the copied objects; the
    // SQLite file is moved away so that nothing can come from it.
    std::fs::rename(data.join("lockgate.db"), dir.path().join("old.db")).unwrap();
    let _ = std::fs::remove_dir_all(data.join("artifacts"));
    let mut moved = start_another_server(
        dir.path(),
        &[
            "up",
            "--port",
            "0",
            "--no-demo",
            "--database",
            postgres.url(),
            "--objects",
            &objects_arg,
        ],
        &SERVER_ENV,
    );
    assert!(moved.token.is_empty(), "the administrator moved along");
    moved.token = token;
    let after = what_is_there(dir.path(), &moved);
    assert_eq!(after, before);
    let secure = runtime.block_on(async {
        let store = lockgate_store::PostgresStore::open(postgres.url())
            .await
            .unwrap();
        let files = store.secure_files(project_id).await.unwrap();
        let content = store
            .secure_file_content(project_id, "signing.pfx")
            .await
            .unwrap();
        (files.len(), files[0].digest.clone(), content)
    });
    assert_eq!(
        secure,
        (1, "d1g3st".to_string(), Some("sealed-bytes".to_string()))
    );

    // The sequences continue after the copied ids, and the group's secret still decrypts: a new run
    // gets the next id and its script sees the secret value.
    let api = lockgate_agent::ServerClient::new(&moved.url, &moved.token);
    let queued = client(dir.path(), &moved, &["queue", &pipeline.to_string()]);
    assert!(queued.status.success(), "{queued:?}");
    let runs = wait_for_runs(&api, 3);
    let newest = &runs[0];
    let highest = before["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|run| run["id"].as_i64())
        .max()
        .unwrap();
    assert_eq!(newest.id, highest + 1, "{newest:?}");
    let logs = stdout(&client(
        dir.path(),
        &moved,
        &["runs", "logs", &newest.id.to_string()],
    ));
    assert_eq!(newest.result.as_deref(), Some("succeeded"), "{logs}");
    assert!(logs.contains("the secret decrypted"), "{logs}");
}

#[test]
fn migrate_store_refuses_bad_sources_and_targets() {
    let dir = tempfile::tempdir().unwrap();
    let usage = lockgate(
        dir.path(),
        &[
            "migrate-store",
            "--from",
            "/srv/data",
            "--to",
            "postgres://h/db",
        ],
    );
    assert_eq!(usage.status.code(), Some(2), "{usage:?}");
    assert!(String::from_utf8_lossy(&usage.stderr).contains("expected `sqlite:DATA_DIR`"));
    let usage = lockgate(
        dir.path(),
        &[
            "migrate-store",
            "--from",
            "sqlite:data",
            "--to",
            "mysql://h/db",
        ],
    );
    assert_eq!(usage.status.code(), Some(2), "{usage:?}");
    assert!(String::from_utf8_lossy(&usage.stderr).contains("--to: expected a `postgres://"));
    let missing = lockgate(
        dir.path(),
        &[
            "migrate-store",
            "--from",
            "sqlite:no-such-folder",
            "--to",
            "postgres://127.0.0.1:1/db",
        ],
    );
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("no embedded database: no-such-folder/lockgate.db does not exist"),
        "{stderr}"
    );
}
