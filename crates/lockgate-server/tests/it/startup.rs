//! Starting a server: the database setting picks the store backend, and a backend that does not
//! exist yet stops the start with a clear message (before anything listens).

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
async fn a_postgres_database_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let started = lockgate_server::start(
        config(dir.path(), "postgres://ci@127.0.0.1/lockgate"),
        Arc::new(RunnerExecutor::default()),
    )
    .await;
    let Err(error) = started else {
        panic!("a postgres:// database must not start a server yet");
    };
    assert_eq!(error.to_string(), "PostgreSQL backend not available yet");
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
