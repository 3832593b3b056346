//! Variable groups end to end: a run names a group that does not exist (failed, saying so), one
//! its pipeline may not use yet (waits for an administrator), then one it may (its variables in
//! place, later entries winning, secrets masked).

use std::time::{Duration, Instant};

use lockgate_protocol::api;

use crate::end_to_end::{
    commit_and_push, git, job_result, project_with_pipeline, run_detail, run_logs, start_server,
    wait_for_run, wait_for_runs,
};

const SECRET: &str = "grp-s3cret-value";

const PIPELINE: &str = "\
variables:
- group: Shared
- name: color
  value: green
steps:
- script: |
    echo \"greeting=$(greeting) color=$(color)\"
    echo \"token=$(token)\"
";

#[test]
fn a_variable_group_must_exist_and_be_authorized_and_then_feeds_the_job() {
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", PIPELINE)],
        "main",
    );
    let missing = wait_for_run(&server, pipeline, 1);
    assert_eq!(missing.result.as_deref(), Some("failed"));
    let detail = run_detail(&server, missing.id);
    let text = serde_json::to_string(&detail).unwrap();
    assert!(
        text.contains("server::unknown-variable-group") && text.contains("`Shared` does not exist"),
        "{text}"
    );

    let group_url = "/api/v1/projects/p/variable-groups/shared";
    for (body, needle) in [
        (
            serde_json::json!({"variables": [{"name": "secret.x", "value": "1"}]}),
            "reserved",
        ),
        (
            serde_json::json!({"variables": [{"name": "a", "value": "1"}, {"name": "A", "value": "2"}]}),
            "defined twice",
        ),
        (serde_json::json!({"vars": []}), "invalid variable group"),
    ] {
        let error = server
            .client
            .put_json::<_, serde_json::Value>(group_url, &body)
            .unwrap_err();
        assert_eq!(error.status(), Some(400), "{error}");
        assert!(error.to_string().contains(needle), "{needle}: {error}");
    }
    let group: api::VariableGroup = server
        .client
        .put_json(
            group_url,
            &serde_json::json!({"description": "team settings", "variables": [
                {"name": "greeting", "value": "hello"},
                {"name": "color", "value": "blue"},
                {"name": "token", "value": SECRET, "secret": true}
            ]}),
        )
        .unwrap();
    assert_eq!(group.name, "shared");
    let token = group.variables.iter().find(|v| v.name == "token").unwrap();
    assert_eq!((token.value.as_deref(), token.secret), (None, true));
    assert!(group.pipelines.is_empty());
    // The secret is stored sealed: not in the database file in clear.
    assert!(
        crate::end_to_end::any_file_contains(&server.data_dir(), SECRET).is_none(),
        "the secret is in clear on disk"
    );

    commit_and_push(work.path(), &push_url, &[("README.md", "again\n")], "main");
    let runs = wait_for_runs(&server, pipeline, "a second run", |r| r.len() >= 2);
    let waiting = runs[0].id;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let detail = run_detail(&server, waiting);
        if detail
            .jobs
            .first()
            .and_then(|j| j.waiting_for.clone())
            .is_some_and(|w| w.contains("authorize this pipeline to use variable group `Shared`"))
        {
            assert_eq!(detail.jobs[0].status, "pending");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not waiting for authorization: {detail:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let authorized: api::VariableGroup = server
        .client
        .post_json(
            &format!("{group_url}/pipelines/{pipeline}"),
            &serde_json::json!({}),
        )
        .unwrap();
    assert_eq!(authorized.pipelines, [pipeline]);
    let done = wait_for_run(&server, pipeline, 2);
    assert_eq!(done.id, waiting);
    assert_eq!(done.result.as_deref(), Some("succeeded"));
    let detail = run_detail(&server, waiting);
    assert_eq!(job_result(&detail, "__default"), "succeeded");
    let logs = run_logs(&server, waiting);
    // The group's entry comes first; the YAML `color` after it wins.
    assert!(logs.contains("greeting=hello color=green"), "{logs}");
    assert!(logs.contains("token=***"), "{logs}");
    assert!(!logs.contains(SECRET), "{logs}");
}
