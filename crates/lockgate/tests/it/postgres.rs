//! `lockgate up` and `lockgate server` on PostgreSQL (a throwaway cluster, see
//! `lockgate_store::test_postgres`): a push runs to completion with the state in PostgreSQL.

use lockgate_store::test_postgres::TestPostgres;

use crate::server::{
    client, newest_completed_run, push_new_pipeline, start_server_with_env, stdout,
};

/// A throwaway PostgreSQL, with the runtime its handle needs.
fn postgres() -> (tokio::runtime::Runtime, TestPostgres) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let postgres = runtime.block_on(TestPostgres::start());
    (runtime, postgres)
}

#[test]
fn a_push_to_a_server_on_postgres_runs_to_completion() {
    let (_runtime, postgres) = postgres();
    let dir = tempfile::tempdir().unwrap();
    let up = start_server_with_env(
        dir.path(),
        &[
            "up",
            "--port",
            "0",
            "--no-demo",
            "--database",
            postgres.url(),
        ],
        &[],
    );
    let api = push_new_pipeline(
        dir.path(),
        &up,
        "pg",
        "steps:\n- script: echo stored in postgres\n",
    );
    let run = newest_completed_run(&api);
    let logs = stdout(&client(
        dir.path(),
        &up,
        &["runs", "logs", &run.id.to_string()],
    ));
    assert_eq!(run.result.as_deref(), Some("succeeded"), "{logs}");
    assert!(logs.contains("stored in postgres"), "{logs}");
    // Nothing went to a SQLite file: the state is in PostgreSQL.
    assert!(!dir.path().join("data").join("lockgate.db").exists());
}
