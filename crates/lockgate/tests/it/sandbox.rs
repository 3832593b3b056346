//! Job isolation end to end through `lockgate up`: the startup line names it; a hostile pipeline cannot
//! read the database, the data folder, another job's workspace or the server's environment; a
//! SIGKILLed server leaves no step running; stale job folders are removed; without bubblewrap the server
//! refuses to start unless `--no-sandbox` says so, and then says that jobs are not isolated.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lockgate_agent::ServerClient;
use lockgate_protocol::api;

use crate::server::{Up, git, start_server_with_env};

/// Creates project `p`, repository `app` and pipeline `ci` on `up`; pushes `yaml` as its pipeline.
pub(crate) fn push_pipeline(dir: &Path, up: &Up, yaml: &str) -> ServerClient {
    let api = ServerClient::new(&up.url, &up.token);
    let _: api::Project = api
        .post_json("/api/v1/projects", &api::CreateProject { name: "p".into() })
        .unwrap();
    let repo: api::Repository = api
        .post_json(
            "/api/v1/projects/p/repositories",
            &api::CreateRepository { name: "app".into() },
        )
        .unwrap();
    let _: api::Pipeline = api
        .post_json(
            "/api/v1/projects/p/pipelines",
            &api::CreatePipeline {
                name: "ci".into(),
                repository: "app".into(),
                yaml_path: "azure-pipelines.yml".into(),
            },
        )
        .unwrap();
    let work = dir.join("src");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("azure-pipelines.yml"), yaml).unwrap();
    git(&work, &["init", "-q"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "pipeline"]);
    let push_url = repo
        .clone_url
        .replace("http://", &format!("http://admin:{}@", up.token));
    git(&work, &["push", "-q", &push_url, "HEAD:refs/heads/main"]);
    api
}

pub(crate) fn completed_run(api: &ServerClient) -> api::Run {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs: Vec<api::Run> = api.get_json("/api/v1/runs").unwrap();
        if let Some(run) = runs.first().filter(|run| run.status == "completed") {
            return run.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the run did not finish: {runs:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_hostile_pipeline_cannot_reach_the_data_folder_or_the_server_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A job folder a killed agent left behind: removed when the agents start.
    let stale = data.join("work/built-in-1/job-98-1/w/s");
    std::fs::create_dir_all(&stale).unwrap();
    let canary = format!("canary-value-{}", std::process::id());
    let up = start_server_with_env(
        dir.path(),
        &["up", "--port", "0", "--no-demo", "--agents", "1"],
        &[
            ("SERVICE_TOKEN", &canary),
            ("LOCKGATE_TEST_CANARY", &canary),
        ],
    );
    assert!(
        up.lines
            .iter()
            .any(|line| line.starts_with("Job isolation: bubblewrap sandbox")),
        "{:?}",
        up.lines
    );
    assert!(!stale.exists(), "the stale job folder is removed at start");
    // Another job's workspace, as the agent lays them out.
    let other = data.join("work/built-in-2/job-99-1/w/s");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("secret.txt"), "another job's file").unwrap();
    let data = data.display();
    let yaml = format!(
        r#"steps:
- script: |
    try() {{ if "$@" >/dev/null 2>&1; then echo "LEAK: $*"; else echo "denied: $*"; fi; }}
    for up in ../.. ../../.. ../../../.. ../../../../.. ../../../../../.. ../../../../../../..; do
      try cat $up/lockgate.db
    done
    try cat {data}/lockgate.db
    try cat {data}/work/built-in-2/job-99-1/w/s/secret.txt
    try ls {data}/repos
    try touch {data}/planted
    echo "== environment"
    env
    echo "== every process environment"
    cat /proc/*/environ 2>/dev/null | tr '\0' '\n'
    echo "== end"
    echo mine > ../own.txt && echo "own workspace: $(cat ../own.txt)"
"#
    );
    let api = push_pipeline(dir.path(), &up, &yaml);
    let run = completed_run(&api);
    let logs = api
        .get_text(&format!("/api/v1/runs/{}/logs", run.id))
        .unwrap();
    assert_eq!(run.result.as_deref(), Some("succeeded"), "{logs}");
    assert!(!logs.contains("LEAK"), "{logs}");
    assert_eq!(logs.matches("denied: ").count(), 10, "{logs}");
    assert!(
        !logs.contains(&canary),
        "the server's environment reached a step: {logs}"
    );
    assert!(logs.contains("own workspace: mine"), "{logs}");
    assert!(logs.contains("== end"), "{logs}");
    assert!(!dir.path().join("data/planted").exists());
    assert_eq!(
        std::fs::read_to_string(other.join("secret.txt")).unwrap(),
        "another job's file"
    );
}

/// Live processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .contains(marker)
                && !stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
        })
        .collect()
}

#[test]
fn a_sigkilled_server_leaves_no_step_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = start_server_with_env(
        dir.path(),
        &["up", "--port", "0", "--no-demo", "--agents", "1"],
        &[],
    );
    let marker = format!("sleep 300.{}", std::process::id());
    // A background child in its own session and a foreground one: both must go.
    let yaml = format!("steps:\n- script: |\n    setsid {marker} &\n    {marker}\n");
    let _api = push_pipeline(dir.path(), &up, &yaml);
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_with(&marker).len() < 2 {
        assert!(Instant::now() < deadline, "the step did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    up.child.kill().unwrap();
    up.child.wait().unwrap();
    let killed = Instant::now();
    while !processes_with(&marker).is_empty() {
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "steps outlived the SIGKILLed server: {:?}",
            processes_with(&marker)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn without_bubblewrap_the_server_starts_only_when_no_sandbox_is_chosen() {
    let dir = tempfile::tempdir().unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_lockgate"))
        .args(["up", "--port", "0", "--no-demo"])
        .env("LOCKGATE_DATA", dir.path().join("data"))
        .env("PATH", dir.path().join("no-tools"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bubblewrap (`bwrap`) is not installed") && stderr.contains("--no-sandbox"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&refused.stdout).is_empty());

    let no_tools = dir.path().join("no-tools").display().to_string();
    let up = start_server_with_env(
        dir.path(),
        &["up", "--port", "0", "--no-demo", "--no-sandbox"],
        &[("PATH", &no_tools)],
    );
    assert!(
        up.lines
            .iter()
            .any(|line| line.starts_with("Job isolation: NONE (--no-sandbox)")),
        "{:?}",
        up.lines
    );
}

#[test]
fn lockgate_run_isolates_jobs_only_with_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let yaml = format!(
        r#"jobs:
- job: first
  steps:
  - script: |
      echo mine > ../own.txt && echo "own: $(cat ../own.txt)"
- job: second
  dependsOn: first
  steps:
  - script: |
      if test -e {work}/runs/$(Build.BuildId)/work/1/own.txt; then echo "LEAK: first job"; fi
      if test -d {work}/runs/$(Build.BuildId)/logs; then echo "LEAK: logs"; fi
      echo checked
"#,
        work = work.display()
    );
    std::fs::write(repo.join("azure-pipelines.yml"), yaml).unwrap();
    let run = |extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_lockgate"))
            .arg("run")
            .arg("--work-dir")
            .arg(&work)
            .args(extra)
            .current_dir(&repo)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let open = run(&[]);
    assert!(
        open.contains("LEAK: first job") && open.contains("LEAK: logs"),
        "without --sandbox a job sees the others: {open}"
    );
    let sandboxed = run(&["--sandbox"]);
    assert!(
        sandboxed.contains("own: mine") && sandboxed.contains("checked"),
        "{sandboxed}"
    );
    assert!(!sandboxed.contains("LEAK"), "{sandboxed}");
}
