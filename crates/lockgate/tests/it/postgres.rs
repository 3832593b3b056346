//! `lockgate up` and `lockgate server` on PostgreSQL (a throwaway cluster, see
//! `lockgate_store::test_postgres`): a push runs to completion with the state in PostgreSQL.

use lockgate_store::test_postgres::TestPostgres;

use crate::server::{
    Up, client, newest_completed_run, push_new_pipeline, start_another_server,
    start_server_with_env, stdout,
};

/// A throwaway PostgreSQL, with the runtime its handle needs.
fn postgres() -> (tokio::runtime::Runtime, TestPostgres) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let postgres = runtime.block_on(TestPostgres::start());
    (runtime, postgres)
}

/// The logs of `run` as `lockgate runs logs` prints them through `up`, once the run succeeded.
fn succeeded_logs(dir: &std::path::Path, up: &Up, run: &lockgate_protocol::api::Run) -> String {
    let logs = stdout(&client(dir, up, &["runs", "logs", &run.id.to_string()]));
    assert_eq!(run.result.as_deref(), Some("succeeded"), "{logs}");
    logs
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
    let logs = succeeded_logs(dir.path(), &up, &run);
    assert!(logs.contains("stored in postgres"), "{logs}");
    // Nothing went to a SQLite file: the state is in PostgreSQL.
    assert!(!dir.path().join("data").join("lockgate.db").exists());
}

/// Two server processes on one PostgreSQL database and one data folder, each with its built-in
/// agents: a push to the first queues jobs that agents of both servers lease, each job runs once,
/// and the second server shows the run, its logs and its live log stream to the end.
#[test]
fn two_servers_on_one_database_share_the_queue_and_the_logs() {
    let (_runtime, postgres) = postgres();
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "up",
        "--port",
        "0",
        "--no-demo",
        "--database",
        postgres.url(),
    ];
    let one = start_server_with_env(dir.path(), &args, &[("LOCKGATE_SERVER_NAME", "one")]);
    let mut two = start_another_server(dir.path(), &args, &[("LOCKGATE_SERVER_NAME", "two")]);
    assert!(
        two.token.is_empty(),
        "the second server finds its administrator"
    );
    two.token = one.token.clone();
    let jobs: String = (1..=8)
        .map(|n| format!("- job: j{n}\n  steps:\n  - script: sleep 1 && echo ran j{n}\n"))
        .collect();
    let api = push_new_pipeline(dir.path(), &one, "scale", &format!("jobs:\n{jobs}"));
    let other = lockgate_agent::ServerClient::new(&two.url, &two.token);
    let run = newest_completed_run(&other);
    let logs = succeeded_logs(dir.path(), &two, &run);
    for n in 1..=8 {
        assert_eq!(logs.matches(&format!("ran j{n}\n")).count(), 1, "{logs}");
    }
    let detail: serde_json::Value = api.get_json(&format!("/api/v1/runs/{}", run.id)).unwrap();
    let agents: std::collections::BTreeSet<String> = detail["jobs"]
        .as_array()
        .expect("the run's jobs")
        .iter()
        .filter_map(|job| job["agent"].as_str().map(str::to_string))
        .collect();
    assert!(
        agents.iter().any(|a| a.starts_with("built-in-one-"))
            && agents.iter().any(|a| a.starts_with("built-in-two-")),
        "agents of both servers ran jobs: {agents:?}"
    );
}
