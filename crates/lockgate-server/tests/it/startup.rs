//! Starting a server: the database setting picks the store backend, and a database that cannot be
//! opened stops the start with a clear message (before anything listens).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use lockgate_agent::runner_executor::RunnerExecutor;
use lockgate_server::ServerConfig;

fn config(data_dir: &std::path::Path, database: &str) -> ServerConfig {
    let mut config = ServerConfig::new(
        data_dir.to_path_buf(),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    );
    config.database = database.into();
    config.builtin_agent = false;
    config
}

#[tokio::test]
async fn an_unreachable_postgres_database_stops_the_start_naming_it_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = lockgate_server::start(
        config(
            dir.path(),
            &format!("postgres://ci:hunter2@127.0.0.1:{port}/lockgate"),
        ),
        Arc::new(RunnerExecutor::default()),
    )
    .await;
    let Err(error) = started else {
        panic!("nothing listens there: the server must not start");
    };
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot open the database at postgres://127.0.0.1:{port}/lockgate: "
        )),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
    assert!(!dir.path().join("lockgate.db").exists());
}

#[tokio::test]
async fn the_sqlite_database_lives_in_the_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let server = lockgate_server::start(
        config(dir.path(), "sqlite"),
        Arc::new(RunnerExecutor::default()),
    )
    .await
    .unwrap();
    assert!(server.state.store.schema_version().await.unwrap() >= 1);
    assert!(dir.path().join("lockgate.db").exists());
    server.stop();
}

const KEY_A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const KEY_B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

/// A database written before secrets were encrypted: a clear secret pipeline variable and a job
/// whose spec carries it. The first start encrypts both in place and leaves no clear copy in the
/// database files; a start with another key stops with a clear error; a malformed key is named.
#[tokio::test]
async fn clear_secrets_of_an_older_database_are_encrypted_and_a_wrong_key_is_refused() {
    const SECRET: &str = "old-clear-s3cret";
    let dir = tempfile::tempdir().unwrap();
    {
        let store = lockgate_store::Store::open("sqlite", dir.path())
            .await
            .unwrap();
        let user = store.create_user("ada", "h", true).await.unwrap();
        let project = store.create_project("demo", user.id).await.unwrap();
        let repo = store.create_repository(project.id, "app").await.unwrap();
        let pipeline = store
            .create_pipeline(project.id, repo.id, "ci", "azure-pipelines.yml")
            .await
            .unwrap();
        store
            .set_pipeline_variables(
                pipeline.id,
                &[lockgate_store::PipelineVariable {
                    name: "DeployKey".into(),
                    value: SECRET.into(),
                    secret: true,
                    allow_override: false,
                }],
            )
            .await
            .unwrap();
        let spec = serde_json::json!({
            "job": {"name": "A"}, "variables": [],
            "pipelineVariables": [{"name": "DeployKey", "value": SECRET, "secret": true}],
            "queueVariables": {},
        });
        store
            .create_run(
                &lockgate_store::NewRun {
                    pipeline_id: pipeline.id,
                    name: "1".into(),
                    status: "completed".into(),
                    ..Default::default()
                },
                &[lockgate_store::NewJob {
                    stage_name: "__default".into(),
                    name: "A".into(),
                    display_name: "A".into(),
                    depends_on: "[]".into(),
                    spec: spec.to_string(),
                    status: "completed".into(),
                    environment: None,
                    agent_os: None,
                    ..Default::default()
                }],
            )
            .await
            .unwrap();
    }
    let mut keyed = config(dir.path(), "sqlite");
    keyed.secret_key = Some(KEY_A.into());
    let server = lockgate_server::start(keyed.clone(), Arc::new(RunnerExecutor::default()))
        .await
        .unwrap();
    let state = server.state.clone();
    let stored = state.store.pipeline_variables(1).await.unwrap();
    assert!(!stored[0].value.contains(SECRET));
    assert_eq!(state.secrets.open(&stored[0].value).unwrap(), SECRET);
    let job = state.store.job_by_id(1).await.unwrap().unwrap();
    assert!(!job.spec.contains(SECRET), "{}", job.spec);
    assert!(state.secrets.open_job(job).spec.contains(SECRET));
    for file in ["lockgate.db", "lockgate.db-wal"] {
        let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{file} still holds the clear secret"
        );
    }
    assert!(
        !dir.path().join("secret.key").exists(),
        "the key came from the environment"
    );
    server.stop();

    let mut wrong = keyed.clone();
    wrong.secret_key = Some(KEY_B.into());
    let Err(error) = lockgate_server::start(wrong, Arc::new(RunnerExecutor::default())).await
    else {
        panic!("another key must not start the server");
    };
    let message = error.to_string();
    assert!(
        message.contains("LOCKGATE_SECRET_KEY") && message.contains("not the key"),
        "{message}"
    );

    let mut malformed = keyed;
    malformed.secret_key = Some("0011".into());
    let Err(error) = lockgate_server::start(malformed, Arc::new(RunnerExecutor::default())).await
    else {
        panic!("a malformed key must not start the server");
    };
    let message = error.to_string();
    assert!(
        message.contains("LOCKGATE_SECRET_KEY") && message.contains("32 bytes"),
        "{message}"
    );
    assert!(
        !message.contains("0011"),
        "the key is not repeated: {message}"
    );
}

/// Without `LOCKGATE_SECRET_KEY` the first start creates `secret.key` (0600) in the data folder and
/// later starts read it; a key file others may read stops the start.
#[tokio::test]
async fn the_key_file_is_created_on_first_start_and_wider_permissions_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let first = lockgate_server::start(
        config(dir.path(), "sqlite"),
        Arc::new(RunnerExecutor::default()),
    )
    .await
    .unwrap();
    first.stop();
    let key = dir.path().join("secret.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = lockgate_server::start(
        config(dir.path(), "sqlite"),
        Arc::new(RunnerExecutor::default()),
    )
    .await
    .unwrap();
    again.stop();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let Err(error) = lockgate_server::start(
        config(dir.path(), "sqlite"),
        Arc::new(RunnerExecutor::default()),
    )
    .await
    else {
        panic!("a readable key file must stop the start");
    };
    assert!(error.to_string().contains("chmod 600"), "{error}");
}
