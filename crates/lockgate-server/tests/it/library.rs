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

const PUSHING: &str = "\
trigger: [main]
steps:
- checkout: self
  persistCredentials: true
- script: |
    set -e
    git config user.email bot@example.com
    git config user.name bot
    echo generated > generated.txt
    git add generated.txt
    git commit -q -m \"Update generated files [skip ci]\"
    git push -q origin HEAD:refs/heads/main
    echo \"token=$(System.AccessToken)\"
";

/// A job pushes to its own repository with `System.AccessToken` (`persistCredentials: true`); the
/// push says `[skip ci]`, so it queues no run; the token is masked in the log and dies with the job.
#[test]
fn a_job_pushes_with_its_access_token_and_skip_ci_queues_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let started = crate::end_to_end::start_on(&dir.path().join("data"), true);
    let state = started.state.clone();
    let mut server = started.running();
    server._dir = Some(dir);
    let (push_url, pipeline) = project_with_pipeline(&server);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", PUSHING)],
        "main",
    );
    let run = wait_for_run(&server, pipeline, 1);
    let logs = run_logs(&server, run.id);
    assert_eq!(run.result.as_deref(), Some("succeeded"), "{logs}");
    assert!(logs.contains("token=***"), "{logs}");
    assert!(!logs.contains("lgj_"), "{logs}");
    // The job's commit is on main.
    git(work.path(), &["pull", "-q", &push_url, "main"]);
    let subject = git(work.path(), &["log", "-1", "--format=%s"]);
    assert_eq!(subject.trim(), "Update generated files [skip ci]");
    // The token the job had (the server derives it from the job's attempt) no longer opens the
    // repository once its job finished.
    let job = server
        .block_on(state.store.jobs_of_run(run.id))
        .unwrap()
        .remove(0);
    let token = state
        .secrets
        .job_token(job.id, job.attempt, job.started_at.unwrap());
    assert!(token.starts_with("lgj_"), "{token}");
    let url = push_url.replace(
        &format!("ada:{}@", server.token),
        &format!("build:{token}@"),
    );
    let output = std::process::Command::new("git")
        .args(["ls-remote", &url])
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();
    assert!(!output.status.success(), "an ended job's token still works");
    // The [skip ci] push queued nothing: the next push is the second run.
    commit_and_push(work.path(), &push_url, &[("README.md", "next\n")], "main");
    let runs = wait_for_runs(&server, pipeline, "the next run", |r| r.len() >= 2);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(
        runs[0].source_commit,
        git(work.path(), &["rev-parse", "HEAD"]).trim()
    );
}

const CONNECTED: &str = "\
steps:
- task: CmdLine@2
  inputs:
    connectedServiceName: api
    script: echo \"url=$(api.Url) user=$(api.Username) password=$(api.Password)\"
";

const CONNECTION_SECRET: &str = "conn-pa55word-value";

/// A task names service connection `api`: missing, the run fails when queued; present but not
/// authorized, the job waits; authorized, the job gets its fields (the password masked) and the
/// use is in the connection's history.
#[test]
fn a_service_connection_must_exist_be_authorized_and_reaches_the_task() {
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", CONNECTED)],
        "main",
    );
    let missing = wait_for_run(&server, pipeline, 1);
    assert_eq!(missing.result.as_deref(), Some("failed"));
    let text = serde_json::to_string(&run_detail(&server, missing.id)).unwrap();
    assert!(
        text.contains("server::service-connection") && text.contains("`api` does not exist"),
        "{text}"
    );
    let url = "/api/v1/projects/p/service-connections/api";
    for (body, needle) in [
        (
            serde_json::json!({"kind": "ftp", "fields": {}}),
            "`kind` must be one of",
        ),
        (
            serde_json::json!({"kind": "generic", "fields": {"username": "u"}}),
            "`fields.url` is required",
        ),
        (
            serde_json::json!({"kind": "generic", "fields": {"url": "x", "colour": "red"}}),
            "`fields.colour` is not a field",
        ),
        (
            serde_json::json!({"kind": "ssh", "fields": {"host": "h", "username": "u"}}),
            "`fields.privateKey` or `fields.password`",
        ),
    ] {
        let error = server
            .client
            .put_json::<_, serde_json::Value>(url, &body)
            .unwrap_err();
        assert_eq!(error.status(), Some(400), "{error}");
        assert!(error.to_string().contains(needle), "{needle}: {error}");
    }
    let set: api::ServiceConnection = server
        .client
        .put_json(
            url,
            &serde_json::json!({"kind": "generic", "fields": {
                "url": "https://api.example.test", "username": "deployer", "password": CONNECTION_SECRET}}),
        )
        .unwrap();
    assert_eq!(set.fields["password"], None, "secrets are never returned");
    assert_eq!(
        set.fields["url"].as_deref(),
        Some("https://api.example.test")
    );
    // Sent again without the password: it is kept.
    let kept: api::ServiceConnection = server
        .client
        .put_json(
            url,
            &serde_json::json!({"kind": "generic", "fields": {
                "url": "https://api.example.test", "username": "deployer", "password": null}}),
        )
        .unwrap();
    assert!(kept.fields.contains_key("password"));
    assert!(
        crate::end_to_end::any_file_contains(&server.data_dir(), CONNECTION_SECRET).is_none(),
        "the password is in clear on disk"
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
            .is_some_and(|w| w.contains("authorize this pipeline to use service connection `api`"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "not waiting: {detail:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _: api::ServiceConnection = server
        .client
        .post_json(
            &format!("{url}/pipelines/{pipeline}"),
            &serde_json::json!({}),
        )
        .unwrap();
    let done = wait_for_run(&server, pipeline, 2);
    let logs = run_logs(&server, waiting);
    assert_eq!(done.result.as_deref(), Some("succeeded"), "{logs}");
    assert!(
        logs.contains("url=https://api.example.test user=deployer password=***"),
        "{logs}"
    );
    assert!(!logs.contains(CONNECTION_SECRET), "{logs}");
    let uses: Vec<api::ConnectionUse> = server.client.get_json(&format!("{url}/usage")).unwrap();
    assert_eq!(uses.len(), 1, "{uses:?}");
    assert_eq!(uses[0].run_id, waiting);
}

const SECURE_CONTENT: &str =
    "-----BEGIN TEST KEY----- secure-file-c0ntent-4711 -----END TEST KEY-----\n";

const DOWNLOADING: &str = "\
steps:
- task: DownloadSecureFile@1
  name: key
  inputs:
    secureFile: deploy.key
- script: |
    set -e
    echo \"path=$(key.secureFilePath)\"
    echo \"temp=$(Agent.TempDirectory)\"
    echo \"mode=$(stat -c %a \"$KEY_FILE\")\"
    echo \"sum=$(sha256sum < \"$KEY_FILE\" | cut -c1-16)\"
  env:
    KEY_FILE: $(key.secureFilePath)
";

/// A secure file: a run naming one the project lacks fails; bad uploads get 400/413; the pipeline
/// waits for authorization; then `DownloadSecureFile@1` puts the file (0600) in the job's temp
/// folder, sets `key.secureFilePath`, and the file is gone when the job ends. The content is never
/// returned by the API nor stored in clear.
#[test]
fn a_secure_file_must_exist_be_authorized_and_reaches_the_job_only_while_it_runs() {
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", DOWNLOADING)],
        "main",
    );
    let missing = wait_for_run(&server, pipeline, 1);
    assert_eq!(missing.result.as_deref(), Some("failed"));
    let text = serde_json::to_string(&run_detail(&server, missing.id)).unwrap();
    assert!(
        text.contains("server::secure-file") && text.contains("`deploy.key` does not exist"),
        "{text}"
    );

    let url = "/api/v1/projects/p/secure-files/deploy.key";
    let refused = |path: &str, body: &[u8]| {
        server
            .client
            .put_bytes::<serde_json::Value>(path, "application/octet-stream", body)
            .unwrap_err()
    };
    let empty = refused(url, b"");
    assert_eq!(empty.status(), Some(400), "{empty}");
    let bad_name = refused("/api/v1/projects/p/secure-files/..", b"x");
    assert!(matches!(bad_name.status(), Some(400 | 404)), "{bad_name}");
    let dollar = refused("/api/v1/projects/p/secure-files/a$(b)", b"x");
    assert_eq!(dollar.status(), Some(400), "{dollar}");
    let huge = refused(url, &vec![b'x'; 10 * 1024 * 1024 + 1]);
    assert_eq!(huge.status(), Some(413), "{huge}");
    let uploaded: api::SecureFile = server
        .client
        .put_bytes(
            &format!("{url}?description=deploy%20key"),
            "application/octet-stream",
            SECURE_CONTENT.as_bytes(),
        )
        .unwrap();
    assert_eq!(
        (
            uploaded.name.as_str(),
            uploaded.size,
            uploaded.description.as_str()
        ),
        ("deploy.key", SECURE_CONTENT.len() as u64, "deploy key")
    );
    let listed = server
        .client
        .get_text("/api/v1/projects/p/secure-files")
        .unwrap();
    assert!(
        listed.contains("deploy.key") && !listed.contains("c0ntent"),
        "{listed}"
    );
    assert!(
        crate::end_to_end::any_file_contains(&server.data_dir(), "c0ntent-4711").is_none(),
        "the secure file is in clear on disk"
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
            .is_some_and(|w| w.contains("authorize this pipeline to use secure file `deploy.key`"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "not waiting: {detail:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let authorized: api::SecureFile = server
        .client
        .post_json(
            &format!("{url}/pipelines/{pipeline}"),
            &serde_json::json!({}),
        )
        .unwrap();
    assert_eq!(authorized.pipelines, [pipeline]);
    let done = wait_for_run(&server, pipeline, 2);
    let logs = run_logs(&server, waiting);
    assert_eq!(done.result.as_deref(), Some("succeeded"), "{logs}");
    let line = |key: &str| {
        logs.lines()
            .find_map(|l| {
                l.split_once(&format!("{key}="))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {key}= in {logs}"))
    };
    let (path, temp) = (line("path"), line("temp"));
    assert!(
        path.starts_with(&temp) && path.ends_with("/deploy.key"),
        "{logs}"
    );
    assert_eq!(line("mode"), "600");
    let expected = {
        use std::io::Write;
        let mut child = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(SECURE_CONTENT.as_bytes())
            .unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()[..16].to_string()
    };
    assert_eq!(line("sum"), expected);
    // Nothing of the file is left on the machine (the agent's folders included) or in clear in
    // the database.
    assert!(
        !std::path::Path::new(&path).exists(),
        "{path} is still there"
    );
    let left = crate::end_to_end::any_file_contains(&server.data_dir(), "c0ntent-4711");
    assert!(left.is_none(), "the secure file is left on disk: {left:?}");
}

const CHECKED: &str = "\
stages:
- stage: Build
  variables:
  - group: Shared
  jobs:
  - job: B
    steps:
    - script: echo \"built with $(greeting)\"
- stage: Ship
  jobs:
  - job: S
    steps:
    - task: CmdLine@2
      inputs:
        connectedServiceName: api
        script: echo shipped
";

/// Checks on library resources and pools ("Define approvals and checks": they are defined on the
/// resource, evaluated when a stage that uses it is about to start): an approval on a variable
/// group holds the stage that uses the group, branch control on a service connection refuses the
/// stage that names it from another branch, business hours on an agent pool hold a stage whose
/// job runs there; a check on a resource that does not exist is a 404.
#[test]
fn checks_on_variable_groups_connections_and_pools_gate_the_stages_that_use_them() {
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let group_url = "/api/v1/projects/p/variable-groups/Shared";
    let _: api::VariableGroup = server
        .client
        .put_json(
            group_url,
            &serde_json::json!({"variables": [{"name": "greeting", "value": "hello"}]}),
        )
        .unwrap();
    let connection_url = "/api/v1/projects/p/service-connections/api";
    let _: api::ServiceConnection = server
        .client
        .put_json(
            connection_url,
            &serde_json::json!({"kind": "generic", "fields": {"url": "https://api.example.test"}}),
        )
        .unwrap();
    for url in [group_url, connection_url] {
        let _: serde_json::Value = server
            .client
            .post_json(
                &format!("{url}/pipelines/{pipeline}"),
                &serde_json::json!({}),
            )
            .unwrap();
    }
    let approval = serde_json::json!({"approvers": ["group:administrators"], "minApprovals": 1,
        "allowRequester": true, "instructions": "", "timeoutMinutes": 60});
    // Bad input: a resource that does not exist, a body that is not a check.
    let error = server
        .client
        .put_json::<_, serde_json::Value>(
            "/api/v1/projects/p/variable-groups/nope/checks/approval",
            &approval,
        )
        .unwrap_err();
    assert_eq!(error.status(), Some(404), "{error}");
    assert!(
        error
            .to_string()
            .contains("variable group `nope` not found"),
        "{error}"
    );
    let error = server
        .client
        .put_json::<_, serde_json::Value>(
            "/api/v1/projects/p/agent-pools/default/checks/business-hours",
            &serde_json::json!({"days": ["Mon"], "start": "25:00", "end": "26:00"}),
        )
        .unwrap_err();
    assert_eq!(error.status(), Some(400), "{error}");
    let _: api::ApprovalCheck = server
        .client
        .put_json(&format!("{group_url}/checks/approval"), &approval)
        .unwrap();
    let got: api::ApprovalCheck = server
        .client
        .get_json(&format!("{group_url}/checks/approval"))
        .unwrap();
    assert_eq!(got.approvers, ["group:administrators"]);
    let _: api::BranchControl = server
        .client
        .put_json(
            &format!("{connection_url}/checks/branch-control"),
            &serde_json::json!({"allowedBranches": ["refs/heads/release/*"]}),
        )
        .unwrap();

    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", CHECKED)],
        "main",
    );
    let run = wait_for_runs(&server, pipeline, "a run", |r| !r.is_empty())[0].id;
    let detail = crate::end_to_end::wait_for_detail(&server, run, "the group's approval", |d| {
        d.jobs.iter().any(|j| {
            j.name == "B"
                && j.waiting_for.as_deref().is_some_and(|w| {
                    w.contains(
                        "approval for variable group `Shared`: 0 of 1 from group:administrators",
                    )
                })
        })
    });
    assert_eq!(job_result_or_status(&detail, "B"), "pending");
    let approvals: Vec<api::Approval> = server
        .client
        .get_json(&format!("/api/v1/runs/{run}/approvals"))
        .unwrap();
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(
        (
            approvals[0].resource_type.as_str(),
            approvals[0].resource.as_str(),
            approvals[0].stage.as_str()
        ),
        ("variablegroup", "Shared", "Build")
    );
    // Deciding by the resource's name.
    let decided: Vec<api::Approval> = server
        .client
        .post_json(
            &format!("/api/v1/runs/{run}/approvals"),
            &serde_json::json!({"decision": "approve", "environment": "Shared"}),
        )
        .unwrap();
    assert_eq!(decided[0].status, "approved");
    let done = crate::end_to_end::completed(&server, run);
    assert_eq!(done.run.result.as_deref(), Some("failed"), "{done:?}");
    assert_eq!(job_result(&done, "B"), "succeeded");
    assert_ne!(job_result(&done, "S"), "succeeded");
    let text = serde_json::to_string(&done).unwrap() + &run_logs(&server, run);
    assert!(
        text.contains("branch control of service connection `api`: `refs/heads/main` is not one of refs/heads/release/*"),
        "{text}"
    );
    assert!(!text.contains("shipped\n"), "{text}");

    // Business hours on the pool the jobs run in hold the first stage; removed, it runs.
    let (start, end) = crate::end_to_end::window_not_now();
    let _: api::BusinessHours = server
        .client
        .put_json(
            "/api/v1/projects/p/agent-pools/default/checks/business-hours",
            &serde_json::json!({"days": ["Mon","Tue","Wed","Thu","Fri","Sat","Sun"],
                "start": start, "end": end, "utcOffset": "+00:00"}),
        )
        .unwrap();
    let status = reqwest_delete(&server, &format!("{group_url}/checks/approval"));
    assert_eq!(status, 204);
    commit_and_push(work.path(), &push_url, &[("README.md", "again\n")], "main");
    let second = wait_for_runs(&server, pipeline, "a second run", |r| r.len() >= 2)[0].id;
    crate::end_to_end::wait_for_detail(&server, second, "the pool's business hours", |d| {
        d.jobs.iter().any(|j| {
            j.name == "B"
                && j.waiting_for
                    .as_deref()
                    .is_some_and(|w| w.contains("business hours of agent pool `default`"))
        })
    });
    assert_eq!(
        reqwest_delete(
            &server,
            "/api/v1/projects/p/agent-pools/default/checks/business-hours"
        ),
        204
    );
    let done = crate::end_to_end::completed(&server, second);
    assert_eq!(job_result(&done, "B"), "succeeded");
    assert!(run_logs(&server, second).contains("built with hello"));
}

fn job_result_or_status(detail: &api::RunDetail, name: &str) -> String {
    let job = detail.jobs.iter().find(|j| j.name == name).unwrap();
    job.result.clone().unwrap_or_else(|| job.status.clone())
}

fn reqwest_delete(server: &crate::end_to_end::Running, path: &str) -> u16 {
    server
        .client
        .delete(path)
        .map(|_| 204)
        .unwrap_or_else(|e| e.status().unwrap_or(0))
}

/// An invoke-REST-API check on a variable group holds the stage that uses the group until the
/// service answers healthy, and an exclusive lock can be put on a service connection too.
#[test]
fn a_rest_api_check_on_a_variable_group_holds_the_stage_until_the_service_is_healthy() {
    let service = crate::agentless::test_service(&[(
        "/ready",
        &[
            (503, "{\"status\":\"down\"}"),
            (200, "{\"status\":\"ready\"}"),
        ],
    )]);
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let group_url = "/api/v1/projects/p/variable-groups/Shared";
    let _: api::VariableGroup = server
        .client
        .put_json(
            group_url,
            &serde_json::json!({"variables": [{"name": "greeting", "value": "hello"}]}),
        )
        .unwrap();
    let _: serde_json::Value = server
        .client
        .post_json(
            &format!("{group_url}/pipelines/{pipeline}"),
            &serde_json::json!({}),
        )
        .unwrap();
    let _: api::RestApiCheck = server
        .client
        .put_json(
            &format!("{group_url}/checks/rest-api"),
            &serde_json::json!({
                "url": format!("{}/ready", service.url),
                "successCriteria": "eq(root['status'], 'ready')",
                "retryIntervalMinutes": 0.01
            }),
        )
        .unwrap();
    let error = server
        .client
        .put_json::<_, serde_json::Value>(
            "/api/v1/projects/p/service-connections/nope/checks/exclusive-lock",
            &serde_json::json!({"timeoutMinutes": 10}),
        )
        .unwrap_err();
    assert_eq!(error.status(), Some(404), "{error}");
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[(
            "azure-pipelines.yml",
            CHECKED.split("- stage: Ship").next().unwrap(),
        )],
        "main",
    );
    let run = wait_for_runs(&server, pipeline, "a run", |r| !r.is_empty())[0].id;
    let done = crate::end_to_end::completed(&server, run);
    assert_eq!(done.run.result.as_deref(), Some("succeeded"), "{done:?}");
    assert!(run_logs(&server, run).contains("built with hello"));
    let requests = service.requests.lock().unwrap().clone();
    assert!(requests.len() >= 2, "down, then ready: {requests:?}");
}
