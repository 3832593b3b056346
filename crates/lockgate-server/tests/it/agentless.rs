//! Agentless jobs (`pool: server`) end to end: the server runs `Delay@1`, `InvokeRESTAPI@1` against
//! a local test service and `ManualValidation@1` itself, never leasing them to an agent; results,
//! dependencies and the log work as for agent jobs, and a restarted server finishes what it ran.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use lockgate_protocol::api;

use crate::end_to_end::{
    Running, commit_and_push, completed, git, job_result, project_with_pipeline, run_logs,
    start_on, start_server, wait_for_detail, wait_for_runs,
};

/// A local HTTP service on 127.0.0.1: each path answers its list of `(status, body)` in turn (the
/// last one again once the list is used up) and every request is kept (request line and headers).
pub struct TestService {
    pub url: String,
    pub requests: Arc<Mutex<Vec<String>>>,
}

pub fn test_service(answers: &[(&str, &[(u16, &str)])]) -> TestService {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answers: Vec<(String, Vec<(u16, String)>)> = answers
        .iter()
        .map(|(path, list)| {
            (
                path.to_string(),
                list.iter().map(|(s, b)| (*s, b.to_string())).collect(),
            )
        })
        .collect();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        let mut served: std::collections::HashMap<String, usize> = Default::default();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            head.push_str(&String::from_utf8_lossy(&body));
            let path = head
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .split('?')
                .next()
                .unwrap_or("/")
                .to_string();
            seen.lock().unwrap().push(head);
            let (status, text) = match answers.iter().find(|(p, _)| *p == path) {
                Some((_, list)) => {
                    let n = served.entry(path.clone()).or_default();
                    let answer = list[(*n).min(list.len() - 1)].clone();
                    *n += 1;
                    answer
                }
                None => (404, "{\"error\":\"no such path\"}".to_string()),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    TestService { url, requests }
}

fn job<'d>(detail: &'d api::RunDetail, name: &str) -> &'d api::Job {
    detail.jobs.iter().find(|j| j.name == name).unwrap()
}

const SECRET: &str = "tok-4711-secret";

fn push(server: &Running, yaml: &str) -> (i64, tempfile::TempDir, String) {
    let (push_url, pipeline) = project_with_pipeline(server);
    let _: serde_json::Value = server
        .client
        .put_json(
            &format!("/api/v1/pipelines/{pipeline}/variables"),
            &serde_json::json!({"variables": [{"name": "ApiToken", "value": SECRET, "secret": true}]}),
        )
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", yaml)],
        "main",
    );
    (pipeline, work, push_url)
}

#[test]
fn an_agentless_job_delays_and_polls_a_rest_api_on_the_server_between_agent_jobs() {
    let service = test_service(&[
        (
            "/health",
            &[
                (200, r#"{"status":"starting"}"#),
                (200, r#"{"status":"healthy"}"#),
            ],
        ),
        ("/down", &[(500, r#"{"status":"broken"}"#)]),
    ]);
    let yaml = "\
jobs:
- job: Build
  steps:
  - script: echo built
- job: Gate
  dependsOn: Build
  pool: server
  steps:
  - task: Delay@1
    inputs:
      delayForMinutes: '0.01'
  - task: InvokeRESTAPI@1
    retryCountOnTaskFailure: 2
    inputs:
      connectionType: connectedServiceName
      serviceConnection: none
      method: GET
      urlSuffix: URL/health?build=$(Build.BuildId)
      headers: '{\"Authorization\": \"Bearer $(ApiToken)\"}'
      successCriteria: eq(root['status'], 'healthy')
- job: Probe
  dependsOn: Build
  pool: server
  continueOnError: true
  steps:
  - task: InvokeRESTAPI@1
    inputs:
      method: POST
      urlSuffix: URL/down
      body: '{\"who\": \"$(Build.BuildId)\"}'
- job: After
  dependsOn: [Gate, Probe]
  steps:
  - script: echo after the gate
"
    .replace("URL", &service.url);
    let server = start_server();
    let (pipeline, _work, _) = push(&server, &yaml);
    let run = wait_for_runs(&server, pipeline, "a run", |runs| !runs.is_empty())[0].id;
    let detail = completed(&server, run);
    assert_eq!(job_result(&detail, "Build"), "succeeded");
    assert_eq!(job_result(&detail, "Gate"), "succeeded");
    assert_eq!(
        job_result(&detail, "Probe"),
        "succeededWithIssues",
        "a failed call with continueOnError"
    );
    assert_eq!(job_result(&detail, "After"), "succeeded");
    assert_eq!(detail.run.result.as_deref(), Some("partiallySucceeded"));
    // Never leased to an agent; its steps are recorded.
    let gate = job(&detail, "Gate");
    assert_eq!(gate.agent, None, "{gate:?}");
    let steps: Vec<(&str, Option<&str>)> = gate
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.result.as_deref()))
        .collect();
    assert_eq!(
        steps,
        [
            ("Delay@1", Some("succeeded")),
            ("InvokeRESTAPI@1", Some("succeeded"))
        ]
    );
    let delay = &gate.steps[0];
    assert!(
        delay.finished_at.unwrap() - delay.started_at.unwrap() >= 550,
        "the delay waited: {delay:?}"
    );
    // The service saw the secret header and the expanded URL; the log shows neither the secret
    // nor hides what happened.
    let requests = service.requests.lock().unwrap().clone();
    let health: Vec<&String> = requests.iter().filter(|r| r.contains("/health")).collect();
    assert_eq!(health.len(), 2, "unhealthy, then healthy: {requests:?}");
    assert!(
        health[0].contains(&format!("Bearer {SECRET}")),
        "{}",
        health[0]
    );
    assert!(
        health[0].contains("/health?build=") && !health[0].contains("$("),
        "macros are expanded: {}",
        health[0]
    );
    let down: Vec<&String> = requests.iter().filter(|r| r.contains("/down")).collect();
    assert!(
        down[0].starts_with("POST /down") && down[0].contains("{\"who\": \""),
        "{down:?}"
    );
    let logs = run_logs(&server, run);
    assert!(!logs.contains(SECRET), "{logs}");
    for expected in [
        "The delay is over.",
        "Response: HTTP 200 {\"status\":\"starting\"}",
        "success criteria `eq(root['status'], 'healthy')` are false; trying again (attempt 2 of 3)",
        "Response: HTTP 200 {\"status\":\"healthy\"}",
        "the server answered HTTP 500",
        "after the gate",
    ] {
        assert!(logs.contains(expected), "missing {expected:?} in {logs}");
    }
}

#[test]
fn a_manual_validation_waits_until_an_allowed_user_resumes_or_rejects_it() {
    let yaml = "\
jobs:
- job: Wait
  pool: server
  timeoutInMinutes: 10
  steps:
  - task: ManualValidation@1
    inputs:
      notifyUsers: ops@example.com
      approvers: ada
      instructions: check the canary
- job: Ship
  dependsOn: Wait
  steps:
  - script: echo shipped
";
    let server = start_server();
    let (pipeline, work, push_url) = push(&server, yaml);
    let run = wait_for_runs(&server, pipeline, "a run", |runs| !runs.is_empty())[0].id;
    let waiting = wait_for_detail(&server, run, "the validation", |d| {
        job(d, "Wait")
            .waiting_for
            .as_deref()
            .is_some_and(|w| w.contains("manual validation"))
    });
    let wait = job(&waiting, "Wait");
    assert_eq!(
        (wait.status.as_str(), wait.agent.as_deref()),
        ("running", None)
    );
    assert!(
        wait.waiting_for
            .as_deref()
            .unwrap()
            .contains("check the canary"),
        "{wait:?}"
    );
    assert_eq!(job(&waiting, "Ship").status, "pending");
    // The run page shows it with a Resume button for ada.
    let page = server.client.get_text(&format!("/runs/{run}")).unwrap();
    assert!(
        page.contains("manual validation") && page.contains("Resume"),
        "{page}"
    );
    let decided: Vec<api::Approval> = server
        .client
        .post_json(
            &format!("/api/v1/runs/{run}/approvals"),
            &serde_json::json!({"decision": "approve", "comment": "canary is fine"}),
        )
        .unwrap();
    assert_eq!(decided[0].status, "approved");
    let detail = completed(&server, run);
    assert_eq!(job_result(&detail, "Wait"), "succeeded");
    assert_eq!(job_result(&detail, "Ship"), "succeeded");
    let logs = run_logs(&server, run);
    for expected in [
        "Notify users: ops@example.com",
        "Instructions: check the canary",
        "Resumed by ada: canary is fine",
    ] {
        assert!(logs.contains(expected), "missing {expected:?} in {logs}");
    }

    // A second run: rejected, the validation fails its job and Ship is skipped.
    std::fs::write(work.path().join("again.txt"), "again").unwrap();
    git(work.path(), &["add", "."]);
    git(work.path(), &["commit", "-qm", "again"]);
    git(work.path(), &["push", "-q", &push_url, "main"]);
    let second = wait_for_runs(&server, pipeline, "a second run", |runs| runs.len() == 2)[0].id;
    wait_for_detail(&server, second, "the validation", |d| {
        job(d, "Wait").waiting_for.is_some()
    });
    let _: Vec<api::Approval> = server
        .client
        .post_json(
            &format!("/api/v1/runs/{second}/approvals"),
            &serde_json::json!({"decision": "reject", "comment": "not today"}),
        )
        .unwrap();
    let detail = completed(&server, second);
    assert_eq!(job_result(&detail, "Wait"), "failed");
    assert_eq!(job_result(&detail, "Ship"), "skipped");
    assert_eq!(detail.run.result.as_deref(), Some("failed"));
    assert!(run_logs(&server, second).contains("Rejected by ada: not today"));
}

#[test]
fn a_restarted_server_finishes_the_delay_an_earlier_one_started() {
    let data = tempfile::tempdir().unwrap();
    let yaml = "\
jobs:
- job: Pause
  pool: server
  steps:
  - task: Delay@1
    inputs:
      delayForMinutes: '0.05'
  - task: Delay@1
    displayName: Short
    inputs:
      delayForMinutes: '0'
";
    let first = start_on(data.path(), false).running();
    let (pipeline, _work, _) = push(&first, yaml);
    let run = wait_for_runs(&first, pipeline, "a run", |runs| !runs.is_empty())[0].id;
    let started = wait_for_detail(&first, run, "the delay to start", |d| {
        job(d, "Pause")
            .steps
            .first()
            .is_some_and(|s| s.status == "running")
    });
    let began = job(&started, "Pause").steps[0].started_at.unwrap();
    drop(first);
    let second = start_on(data.path(), false).running();
    let detail = completed(&second, run);
    assert_eq!(job_result(&detail, "Pause"), "succeeded");
    let pause = job(&detail, "Pause");
    assert_eq!(
        pause.steps[0].started_at,
        Some(began),
        "the same delay went on"
    );
    assert!(pause.steps[0].finished_at.unwrap() - began >= 2_900);
    assert_eq!(pause.steps[1].name, "Short");
    assert_eq!(pause.steps[1].result.as_deref(), Some("succeeded"));
}

#[test]
fn a_cancel_stops_a_delay_at_once() {
    let yaml = "\
jobs:
- job: Pause
  pool: server
  steps:
  - task: Delay@1
    inputs:
      delayForMinutes: '30'
";
    let server = start_server();
    let (pipeline, _work, _) = push(&server, yaml);
    let run = wait_for_runs(&server, pipeline, "a run", |runs| !runs.is_empty())[0].id;
    wait_for_detail(&server, run, "the delay to start", |d| {
        job(d, "Pause")
            .steps
            .first()
            .is_some_and(|s| s.status == "running")
    });
    let _: serde_json::Value = server
        .client
        .post_json(
            &format!("/api/v1/runs/{run}/cancel"),
            &serde_json::json!({}),
        )
        .unwrap();
    let detail = completed(&server, run);
    assert_eq!(job_result(&detail, "Pause"), "canceled");
    assert_eq!(detail.run.result.as_deref(), Some("canceled"));
    assert!(run_logs(&server, run).contains("The delay was canceled."));
}

const REST_PASSWORD: &str = "rest-pa55-4242";

/// `InvokeRESTAPI@1` in an agentless job takes its base URL and basic credentials from a generic
/// service connection of the library: the connection must be authorized for the pipeline (the
/// run waits until it is), the call goes to its URL plus `urlSuffix` with the credentials, the
/// password never reaches the log, and the use is in the connection's history.
#[test]
fn an_agentless_rest_call_uses_a_library_service_connection() {
    let service = test_service(&[("/api/health", &[(200, r#"{"status":"healthy"}"#)])]);
    let yaml = "\
jobs:
- job: Gate
  pool: server
  steps:
  - task: InvokeRESTAPI@1
    inputs:
      connectedServiceName: health-api
      method: GET
      urlSuffix: /health
      successCriteria: eq(root['status'], 'healthy')
";
    let server = start_server();
    let url = "/api/v1/projects/p/service-connections/health-api";
    let (push_url, pipeline) = project_with_pipeline(&server);
    let _: api::ServiceConnection = server
        .client
        .put_json(
            url,
            &serde_json::json!({"kind": "generic", "fields": {
                "url": format!("{}/api", service.url), "username": "deployer", "password": REST_PASSWORD}}),
        )
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", yaml)],
        "main",
    );
    let run = wait_for_runs(&server, pipeline, "a run", |runs| !runs.is_empty())[0].id;
    wait_for_detail(&server, run, "the connection's authorization", |d| {
        job(d, "Gate").waiting_for.as_deref().is_some_and(|w| {
            w.contains("authorize this pipeline to use service connection `health-api`")
        })
    });
    assert!(
        service.requests.lock().unwrap().is_empty(),
        "called before it was authorized"
    );
    let _: api::ServiceConnection = server
        .client
        .post_json(
            &format!("{url}/pipelines/{pipeline}"),
            &serde_json::json!({}),
        )
        .unwrap();
    let detail = completed(&server, run);
    assert_eq!(
        job_result(&detail, "Gate"),
        "succeeded",
        "{}",
        run_logs(&server, run)
    );
    let requests = service.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].starts_with("GET /api/health "),
        "{}",
        requests[0]
    );
    // deployer:rest-pa55-4242, base64.
    assert!(
        requests[0].contains("Basic ZGVwbG95ZXI6cmVzdC1wYTU1LTQyNDI="),
        "{}",
        requests[0]
    );
    let logs = run_logs(&server, run);
    assert!(!logs.contains(REST_PASSWORD), "{logs}");
    assert!(logs.contains("Response: HTTP 200"), "{logs}");
    let uses: Vec<api::ConnectionUse> = server.client.get_json(&format!("{url}/usage")).unwrap();
    assert_eq!(uses.len(), 1, "{uses:?}");
    assert_eq!(uses[0].run_id, run);
}
