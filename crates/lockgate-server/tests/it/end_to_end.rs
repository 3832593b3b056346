//! End to end: the server listens on 127.0.0.1, the built-in agent runs jobs with the runner, and the
//! real git client pushes. A push becomes a run; the API shows its jobs, logs, artifacts and test results.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockgate_agent::ServerClient;
use lockgate_agent::runner_executor::RunnerExecutor;
use lockgate_protocol::api;
use lockgate_server::{ServerConfig, auth};

pub struct Running {
    /// The data folder's parent, when the server owns it.
    pub(crate) _dir: Option<tempfile::TempDir>,
    _runtime: tokio::runtime::Runtime,
    pub url: String,
    pub token: String,
    pub client: ServerClient,
}

impl Running {
    /// The data folder of a server from [`start_server`] (database, repositories, artifacts, the agents' work folders).
    pub fn data_dir(&self) -> std::path::PathBuf {
        let dir = self
            ._dir
            .as_ref()
            .expect("a server that owns its data folder");
        dir.path().join("data")
    }
}

/// Whether any file under `dir` holds `needle` (binary files included).
pub fn any_file_contains(dir: &Path, needle: &str) -> Option<std::path::PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes
                    .windows(needle.len())
                    .any(|window| window == needle.as_bytes())
            {
                return Some(path);
            }
        }
    }
    None
}

pub fn start_server() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut running = start_on(&dir.path().join("data"), true).running();
    running._dir = Some(dir);
    running
}

/// A server serving from its own runtime; dropping the runtime stops it (tasks and store with it).
pub struct Started {
    pub runtime: tokio::runtime::Runtime,
    pub state: lockgate_server::AppState,
    pub url: String,
    /// A read-write token of user `ada`.
    pub token: String,
    pub reconciled: lockgate_server::runs::Reconciled,
}

impl Running {
    /// Runs `future` on the server's runtime (for reaching into its store).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self._runtime.block_on(future)
    }
}

impl Started {
    /// The server as the other helpers take it (its data folder is the caller's).
    pub fn running(self) -> Running {
        Running {
            _dir: None,
            client: ServerClient::new(&self.url, &self.token),
            _runtime: self.runtime,
            url: self.url,
            token: self.token,
        }
    }
}

/// Starts a server on `data_dir`, with its built-in agents when `builtin_agent`; creates user `ada`
/// when the folder is new and gives her a fresh token.
pub fn start_on(data_dir: &Path, builtin_agent: bool) -> Started {
    start_configured(data_dir, builtin_agent, |_| {})
}

/// [`start_on`] with more settings made by `configure`.
pub fn start_configured(
    data_dir: &Path,
    builtin_agent: bool,
    configure: impl FnOnce(&mut ServerConfig),
) -> Started {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = ServerConfig::new(
        data_dir.to_path_buf(),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    );
    config.lease_seconds = 20;
    config.builtin_agent = builtin_agent;
    configure(&mut config);
    let (state, url, token, reconciled) = runtime.block_on(async {
        let server = lockgate_server::start(config, Arc::new(RunnerExecutor::default()))
            .await
            .unwrap();
        let store = &server.state.store;
        let user = match store.user_by_name("ada").await.unwrap() {
            Some(user) => user,
            None => store
                .create_user("ada", &auth::hash_password("pw-123456").unwrap(), false)
                .await
                .unwrap(),
        };
        let token = auth::random_token("lgp_");
        store
            .create_access_token(user.id, "t", &auth::token_hash(&token), "read,write")
            .await
            .unwrap();
        let started = (
            server.state.clone(),
            server.url.clone(),
            token,
            server.reconciled,
        );
        // Keep serving after this block: the task lives on the runtime.
        std::mem::forget(server);
        started
    });
    Started {
        runtime,
        state,
        url,
        token,
        reconciled,
    }
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=Ada",
            "-c",
            "user.email=ada@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Creates project `p`, repository `app` and pipeline `ci`; returns the authenticated push URL.
pub fn project_with_pipeline(server: &Running) -> (String, i64) {
    let _: api::Project = server
        .client
        .post_json("/api/v1/projects", &api::CreateProject { name: "p".into() })
        .unwrap();
    let repo: api::Repository = server
        .client
        .post_json(
            "/api/v1/projects/p/repositories",
            &api::CreateRepository { name: "app".into() },
        )
        .unwrap();
    assert_eq!(repo.clone_url, format!("{}/git/p/app.git", server.url));
    let pipeline: api::Pipeline = server
        .client
        .post_json(
            "/api/v1/projects/p/pipelines",
            &api::CreatePipeline {
                name: "ci".into(),
                repository: "app".into(),
                yaml_path: "azure-pipelines.yml".into(),
            },
        )
        .unwrap();
    let push_url = repo
        .clone_url
        .replace("http://", &format!("http://ada:{}@", server.token));
    (push_url, pipeline.id)
}

pub fn commit_and_push(
    work: &Path,
    push_url: &str,
    files: &[(&str, &str)],
    branch: &str,
) -> String {
    for (name, text) in files {
        let path = work.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    git(work, &["add", "."]);
    git(work, &["commit", "-q", "-m", "change"]);
    git(
        work,
        &["push", "-q", push_url, &format!("HEAD:refs/heads/{branch}")],
    );
    git(work, &["rev-parse", "HEAD"]).trim().to_string()
}

pub fn runs_of(server: &Running, pipeline: i64) -> Vec<api::Run> {
    server
        .client
        .get_json(&format!("/api/v1/runs?pipeline={pipeline}"))
        .unwrap()
}

pub fn wait_for_run(server: &Running, pipeline: i64, count: usize) -> api::Run {
    wait_for_runs(server, pipeline, "a completed run", |runs| {
        runs.len() >= count && runs[0].status == "completed"
    })[0]
        .clone()
}

/// Polls the pipeline's runs (newest first) until `done` holds; fails after 90 s naming `what`.
pub fn wait_for_runs(
    server: &Running,
    pipeline: i64,
    what: &str,
    done: impl Fn(&[api::Run]) -> bool,
) -> Vec<api::Run> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let runs = runs_of(server, pipeline);
        if done(&runs) {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {runs:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The logs of every job of a run, as the API prints them.
pub fn run_logs(server: &Running, run_id: i64) -> String {
    server
        .client
        .get_text(&format!("/api/v1/runs/{run_id}/logs"))
        .unwrap()
}

/// The run with its jobs, as the API shows it.
/// The result of the run's job `name`; fails the test when the job is missing or unfinished.
pub fn job_result(detail: &api::RunDetail, name: &str) -> String {
    detail
        .jobs
        .iter()
        .find(|job| job.name == name)
        .and_then(|job| job.result.clone())
        .unwrap_or_else(|| panic!("no result for job {name}: {detail:?}"))
}

pub fn run_detail(server: &Running, run_id: i64) -> api::RunDetail {
    server
        .client
        .get_json(&format!("/api/v1/runs/{run_id}"))
        .unwrap()
}

/// A fresh server whose pipeline is `yaml`, pushed to `main` from a new working copy; returns the
/// server, the push URL, the working copy, the pipeline id and the completed first run.
fn first_run_of(yaml: &str) -> (Running, String, tempfile::TempDir, i64, api::Run) {
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", yaml)],
        "main",
    );
    let run = wait_for_run(&server, pipeline, 1);
    (server, push_url, work, pipeline, run)
}

const PIPELINE: &str = "\
name: app-$(Rev:r)
trigger:
  branches:
    include: [main]
  paths:
    exclude: [docs]
stages:
- stage: Build
  jobs:
  - job: compile
    steps:
    - script: |
        echo building $(Build.SourceBranchName)
        mkdir -p out && echo binary > out/app.bin
      displayName: Compile
    - publish: out
      artifact: drop
- stage: Test
  jobs:
  - job: unit
    steps:
    - download: current
      artifact: drop
    - script: echo tests pass && cat $(Pipeline.Workspace)/drop/app.bin
    - script: echo '<testsuite name=\"s\"><testcase name=\"a\"/><testcase name=\"b\"/></testsuite>' > junit.xml
    - task: PublishTestResults@2
      inputs:
        testResultsFormat: JUnit
        testResultsFiles: junit.xml
- stage: Deploy
  jobs:
  - deployment: web
    environment: staging
    strategy:
      runOnce:
        deploy:
          steps:
          - script: echo deployed
";

#[test]
fn a_push_runs_the_pipeline_and_the_api_shows_jobs_logs_and_artifacts() {
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    let commit = commit_and_push(
        work.path(),
        &push_url,
        &[
            ("azure-pipelines.yml", PIPELINE),
            ("src/main.rs", "fn main() {}"),
        ],
        "main",
    );

    let run = wait_for_run(&server, pipeline, 1);
    assert_eq!(run.result.as_deref(), Some("succeeded"), "{run:?}");
    assert_eq!(run.name, "app-1");
    assert_eq!(
        run.title, "change",
        "the commit subject follows the run name"
    );
    assert_eq!(run.source_commit, commit);
    assert_eq!(run.reason, "push");
    let detail: api::RunDetail = server
        .client
        .get_json(&format!("/api/v1/runs/{}", run.id))
        .unwrap();
    let names: Vec<_> = detail
        .jobs
        .iter()
        .map(|j| (j.stage.as_str(), j.status.as_str(), j.result.as_deref()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("Build", "completed", Some("succeeded")),
            ("Test", "completed", Some("succeeded")),
            ("Deploy", "completed", Some("succeeded"))
        ]
    );
    let environments: Vec<api::Environment> = server
        .client
        .get_json("/api/v1/projects/p/environments")
        .unwrap();
    assert_eq!(environments.len(), 1, "{environments:?}");
    assert_eq!(environments[0].name, "staging");
    assert_eq!(
        environments[0].latest_deployment.as_ref().map(|d| d.run_id),
        Some(run.id)
    );
    assert!(
        detail.jobs[0]
            .steps
            .iter()
            .any(|s| s.name == "Compile" && s.result.as_deref() == Some("succeeded"))
    );
    assert!(
        detail.jobs[1].started_at >= detail.jobs[0].finished_at,
        "Test waits for Build"
    );

    let logs = run_logs(&server, run.id);
    assert!(logs.contains("building main"), "{logs}");
    assert!(logs.contains("tests pass"), "{logs}");
    assert!(
        logs.contains("\nbinary\n"),
        "the Test job downloaded the Build job's artifact: {logs}"
    );

    let files: Vec<api::ArtifactFile> = server
        .client
        .get_json(&format!("/api/v1/runs/{}/artifacts", run.id))
        .unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        (files[0].artifact.as_str(), files[0].path.as_str()),
        ("drop", "app.bin")
    );
    let content = server.client.get_text(&files[0].download_url).unwrap();
    assert_eq!(content, "binary\n");
    let zip = server
        .client
        .get_bytes(&format!("/api/v1/runs/{}/artifact-archives/drop", run.id))
        .unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).expect("a zip file");
    let mut entry = archive
        .by_name("app.bin")
        .expect("the artifact file is in the zip");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
    assert_eq!(text, "binary\n");
    drop(entry);

    let tests: Vec<api::TestResult> = server
        .client
        .get_json(&format!("/api/v1/runs/{}/tests", run.id))
        .unwrap();
    let cases: Vec<_> = tests
        .iter()
        .map(|t| (t.suite.as_str(), t.name.as_str(), t.outcome.as_str()))
        .collect();
    assert_eq!(cases, [("s", "a", "passed"), ("s", "b", "passed")]);

    // A push touching only excluded paths, and one to an excluded branch, start nothing.
    commit_and_push(
        work.path(),
        &push_url,
        &[("docs/readme.md", "words")],
        "main",
    );
    commit_and_push(
        work.path(),
        &push_url,
        &[("src/feature.rs", "// wip")],
        "feature",
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(runs_of(&server, pipeline).len(), 1);

    // A manual run of the same pipeline counts the revision on.
    let queued: api::Run = server
        .client
        .post_json(
            &format!("/api/v1/pipelines/{pipeline}/runs"),
            &api::QueueRun::default(),
        )
        .unwrap();
    assert_eq!(queued.reason, "manual");
    let second = wait_for_run(&server, pipeline, 2);
    assert_eq!(second.name, "app-2");

    // Cloning with the token works too.
    let clone = tempfile::tempdir().unwrap();
    git(clone.path(), &["clone", "-q", &push_url, "copy"]);
    assert!(clone.path().join("copy/src/main.rs").exists());
}

#[test]
fn an_invalid_pipeline_gives_a_failed_run_with_diagnostics() {
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[(
            "azure-pipelines.yml",
            "steps:\n- script: echo hi\n  bogusKey: 1\n",
        )],
        "main",
    );
    let run = wait_for_run(&server, pipeline, 1);
    assert_eq!(run.result.as_deref(), Some("failed"));
    let detail: api::RunDetail = server
        .client
        .get_json(&format!("/api/v1/runs/{}", run.id))
        .unwrap();
    assert!(detail.jobs.is_empty());
    let diagnostics = detail
        .diagnostics
        .as_array()
        .expect("a list of diagnostics");
    assert!(!diagnostics.is_empty(), "{diagnostics:?}");
    assert_eq!(diagnostics[0]["span"]["line"], 3, "{diagnostics:?}");
}

#[test]
fn a_failed_job_skips_later_stages_and_can_be_canceled_or_rerun() {
    let yaml = "appendCommitMessageToRunName: false\nstages:\n- stage: A\n  jobs:\n  - job: fail\n    steps:\n    - script: exit 3\n- stage: B\n  jobs:\n  - job: after\n    steps:\n    - script: echo never\n";
    let (server, push_url, work, pipeline, run) = first_run_of(yaml);
    assert_eq!(run.result.as_deref(), Some("failed"));
    let detail = run_detail(&server, run.id);
    assert_eq!(detail.jobs[1].result.as_deref(), Some("skipped"));
    assert_eq!(run.title, "", "appendCommitMessageToRunName: false");

    let again: api::Run = server
        .client
        .post_json(
            &format!("/api/v1/runs/{}/rerun-failed", run.id),
            &serde_json::json!({}),
        )
        .unwrap();
    assert_eq!(again.id, run.id);
    let rerun = wait_for_run(&server, pipeline, 1);
    let detail: api::RunDetail = server
        .client
        .get_json(&format!("/api/v1/runs/{}", rerun.id))
        .unwrap();
    assert_eq!(detail.jobs[0].attempt, 2);
    assert_eq!(rerun.result.as_deref(), Some("failed"));

    // A long job is canceled through its heartbeat.
    let slow = "steps:\n- script: sleep 60\n";
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", slow)],
        "main",
    );
    let running = wait_for_runs(&server, pipeline, "the slow run", |runs| {
        runs.len() == 2 && runs[0].status == "running"
    })[0]
        .clone();
    let _: api::Run = server
        .client
        .post_json(
            &format!("/api/v1/runs/{}/cancel", running.id),
            &serde_json::json!({}),
        )
        .unwrap();
    let canceled = wait_for_run(&server, pipeline, 2);
    assert_eq!(canceled.result.as_deref(), Some("canceled"), "{canceled:?}");
}

#[test]
fn pushing_needs_a_token_with_the_write_scope_and_reading_needs_one_at_all() {
    let server = start_server();
    let (push_url, _) = project_with_pipeline(&server);
    let read_only: api::CreatedToken = server
        .client
        .post_json(
            "/api/v1/tokens",
            &api::CreateToken {
                name: "ro".into(),
                scopes: vec!["read".into()],
            },
        )
        .unwrap();
    let read_url = push_url.replace(&server.token, &read_only.token);
    let wrong_url = push_url.replace(&server.token, "lgp_wrong");
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    std::fs::write(work.path().join("a.txt"), "a").unwrap();
    git(work.path(), &["add", "."]);
    git(work.path(), &["commit", "-q", "-m", "a"]);
    let try_git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(work.path())
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .unwrap()
    };
    let denied = try_git(&["push", "-q", &read_url, "HEAD:refs/heads/main"]);
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let unknown = try_git(&["push", "-q", &wrong_url, "HEAD:refs/heads/main"]);
    assert!(!unknown.status.success());
    let anonymous = try_git(&["ls-remote", &format!("{}/git/p/app.git", server.url)]);
    assert!(!anonymous.status.success(), "reading needs a token too");
    git(
        work.path(),
        &["push", "-q", &push_url, "HEAD:refs/heads/main"],
    );
    let listed = try_git(&["ls-remote", &read_url]);
    assert!(listed.status.success());
    assert!(String::from_utf8_lossy(&listed.stdout).contains("refs/heads/main"));
}

#[test]
fn batched_pushes_wait_for_the_running_build_and_then_build_the_newest_commit() {
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    let yaml =
        "trigger:\n  batch: true\n  branches:\n    include: [main]\nsteps:\n- script: sleep 8\n";
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", yaml)],
        "main",
    );
    wait_for_runs(&server, pipeline, "the first run to start", |runs| {
        runs.first().is_some_and(|r| r.status == "running")
    });
    commit_and_push(work.path(), &push_url, &[("b.txt", "b")], "main");
    let newest = commit_and_push(work.path(), &push_url, &[("c.txt", "c")], "main");
    assert_eq!(
        runs_of(&server, pipeline).len(),
        1,
        "pushes during a batched run queue nothing"
    );
    let followup =
        wait_for_runs(&server, pipeline, "the batched run", |runs| runs.len() == 2)[0].clone();
    assert_eq!(followup.reason, "batch");
    assert_eq!(followup.source_commit, newest);
}

#[test]
fn independent_jobs_run_at_the_same_time_on_the_built_in_agents() {
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    let yaml =
        "jobs:\n- job: a\n  steps:\n  - script: sleep 4\n- job: b\n  steps:\n  - script: sleep 4\n";
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", yaml)],
        "main",
    );
    let run = wait_for_run(&server, pipeline, 1);
    assert_eq!(run.result.as_deref(), Some("succeeded"));
    let detail: api::RunDetail = server
        .client
        .get_json(&format!("/api/v1/runs/{}", run.id))
        .unwrap();
    let (a, b) = (&detail.jobs[0], &detail.jobs[1]);
    assert!(
        a.started_at < b.finished_at && b.started_at < a.finished_at,
        "the jobs overlapped: {a:?} {b:?}"
    );
    assert_ne!(a.agent, b.agent);
}

#[test]
fn job_and_stage_conditions_read_variables_and_dependency_outputs() {
    let yaml = "\
appendCommitMessageToRunName: false
variables:
  deploy: 'false'
stages:
- stage: One
  jobs:
  - job: A
    steps:
    - script: echo \"##vso[task.setvariable variable=flag;isOutput=true]yes\"
      name: setvar
  - job: B
    dependsOn: A
    condition: eq(dependencies.A.outputs['setvar.flag'], 'yes')
    steps:
    - script: echo B saw the flag
  - job: C
    dependsOn: A
    condition: eq(variables['Build.SourceBranch'], 'refs/heads/nope')
    steps:
    - script: echo C should not run
  - job: D
    condition: ne(variables.deploy, 'false')
    steps:
    - script: echo D should not run
  - job: E
    condition: and(succeeded(), eq(variables['Build.SourceBranchName'], 'main'))
    steps:
    - script: echo E runs on main
  - job: H
    dependsOn: A
    variables:
      flag: $[ dependencies.A.outputs['setvar.flag'] ]
    steps:
    - script: echo H got the flag $(flag)
  - job: F
    condition: succeeded('Nope')
    steps:
    - script: echo F has a broken condition
- stage: Two
  dependsOn: One
  condition: and(always(), eq(dependencies.One.outputs['A.setvar.flag'], 'yes'))
  jobs:
  - job: G
    condition: eq(stageDependencies.One.A.outputs['setvar.flag'], 'yes')
    steps:
    - script: echo G read the earlier stage
";
    let (server, _, _work, _, run) = first_run_of(yaml);
    let detail = run_detail(&server, run.id);
    let result_of = |name: &str| job_result(&detail, name);
    assert_eq!(result_of("A"), "succeeded", "{detail:?}");
    assert_eq!(result_of("B"), "succeeded", "{detail:?}");
    assert_eq!(result_of("C"), "skipped", "{detail:?}");
    assert_eq!(result_of("D"), "skipped", "{detail:?}");
    assert_eq!(result_of("E"), "succeeded", "{detail:?}");
    assert_eq!(result_of("F"), "failed", "{detail:?}");
    assert_eq!(result_of("G"), "succeeded", "{detail:?}");
    assert_eq!(run.result.as_deref(), Some("failed"), "F failed");
    let logs = run_logs(&server, run.id);
    assert!(logs.contains("B saw the flag"), "{logs}");
    assert!(logs.contains("G read the earlier stage"), "{logs}");
    assert!(
        logs.contains("H got the flag yes"),
        "a runtime expression variable reads the dependency's output: {logs}"
    );
    assert!(!logs.contains("should not run"), "{logs}");
    assert!(!logs.contains("broken condition"), "{logs}");
    assert!(
        logs.contains("invalid condition of job F"),
        "the broken condition is reported: {logs}"
    );
}

#[test]
fn a_canceled_run_still_runs_the_jobs_and_steps_whose_condition_is_always() {
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    let yaml = "\
appendCommitMessageToRunName: false
jobs:
- job: A
  steps:
  - script: echo A started && sleep 120
  - script: echo \"A went on\" \"after the cancel\"
  - script: echo \"A cleaned\" \"up\"
    condition: always()
- job: B
  dependsOn: A
  condition: always()
  steps:
  - script: echo \"B ran\" \"after the cancel\"
- job: C
  dependsOn: A
  steps:
  - script: echo \"C ran\" \"after the cancel\"
";
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", yaml)],
        "main",
    );
    let running = wait_for_runs(&server, pipeline, "job A running", |runs| {
        runs.first().is_some_and(|run| {
            run.status == "running"
                && run_detail(&server, run.id)
                    .jobs
                    .iter()
                    .any(|job| job.name == "A" && job.status == "running")
        })
    })[0]
        .clone();
    let canceling: api::Run = server
        .client
        .post_json(
            &format!("/api/v1/runs/{}/cancel", running.id),
            &serde_json::json!({}),
        )
        .unwrap();
    assert_eq!(
        canceling.result.as_deref(),
        Some("canceled"),
        "{canceling:?}"
    );

    let run = wait_for_run(&server, pipeline, 1);
    assert_eq!(run.result.as_deref(), Some("canceled"), "{run:?}");
    let detail = run_detail(&server, run.id);
    let result_of = |name: &str| job_result(&detail, name);
    assert_eq!(result_of("A"), "canceled", "{detail:?}");
    assert_eq!(result_of("B"), "succeeded", "{detail:?}");
    assert_eq!(result_of("C"), "skipped", "{detail:?}");
    let logs = run_logs(&server, run.id);
    assert!(logs.contains("B ran after the cancel"), "{logs}");
    assert!(!logs.contains("C ran after the cancel"), "{logs}");
    // Within the canceled job, the built-in agent still runs the `always()` step and no other (the
    // echoed words are quoted apart so that a step's name, its script's first line, never matches).
    assert!(logs.contains("A cleaned up"), "{logs}");
    assert!(!logs.contains("A went on after the cancel"), "{logs}");
}

/// The pipeline's own variables: a settable one takes the queue-time value, the YAML keeps its own,
/// a secret is masked and never leaves the server, and a variable that is not settable is refused.
#[test]
fn queue_time_variables_reach_the_job_and_secrets_stay_hidden() {
    const SECRET: &str = "s3cret-value"; // 12 characters
    let yaml = "\
trigger: none
variables:
  Fixed: from-yaml
steps:
- script: |
    echo \"v=$(Greeting)\"
    echo \"s=$(DeployKey)\"
    echo \"env=[$GREETING][$DEPLOYKEY]\"
    echo \"fixed=$(Fixed)\"
    [ ${#MAPPED} -eq 12 ] && echo mapped-ok
  env:
    MAPPED: $(DeployKey)
";
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", yaml)],
        "main",
    );

    let path = format!("/api/v1/pipelines/{pipeline}/variables");
    let variable =
        |name: &str, value: &str, secret: bool, allow_override: bool| api::PipelineVariable {
            name: name.into(),
            value: Some(value.into()),
            secret,
            allow_override,
        };
    let saved: serde_json::Value = server
        .client
        .put_json(
            &path,
            &api::PipelineVariables {
                variables: vec![
                    variable("Greeting", "hello", false, true),
                    variable("DeployKey", SECRET, true, false),
                    variable("Fixed", "from-ui", false, true),
                ],
            },
        )
        .unwrap();
    assert!(!saved.to_string().contains(SECRET), "{saved}");
    let listed: api::PipelineVariables = server.client.get_json(&path).unwrap();
    let listed_text = server.client.get_text(&path).unwrap();
    assert!(!listed_text.contains(SECRET), "{listed_text}");
    assert_eq!(listed.variables[0].value.as_deref(), Some("hello"));
    assert_eq!(listed.variables[1].value, None);
    assert!(listed.variables[1].secret);

    // Not settable at queue time: refused with the variable named, and nothing is queued.
    let queue = format!("/api/v1/pipelines/{pipeline}/runs");
    let refused = server
        .client
        .post_json::<_, api::Run>(
            &queue,
            &serde_json::json!({"variables": {"DeployKey": "x", "Greeting": "hi"}}),
        )
        .unwrap_err();
    assert_eq!(refused.status(), Some(400));
    assert!(refused.to_string().contains("(DeployKey)"), "{refused}");
    assert!(runs_of(&server, pipeline).is_empty());

    let queued: api::Run = server
        .client
        .post_json(
            &queue,
            &serde_json::json!({"variables": {"Greeting": "hi", "Fixed": "from-queue"}}),
        )
        .unwrap();
    let run = wait_for_run(&server, pipeline, 1);
    assert_eq!(run.id, queued.id);
    let logs = run_logs(&server, run.id);
    assert_eq!(run.result.as_deref(), Some("succeeded"), "{logs}");
    assert!(logs.contains("v=hi"), "the queue-time value: {logs}");
    assert!(logs.contains("s=***"), "the secret is masked: {logs}");
    assert!(
        logs.contains("env=[hi][]"),
        "secrets are not exported: {logs}"
    );
    assert!(logs.contains("fixed=from-yaml"), "YAML wins: {logs}");
    assert!(
        logs.contains("mapped-ok"),
        "a mapped secret arrives: {logs}"
    );
    assert!(!logs.contains(SECRET), "{logs}");
    let detail = server
        .client
        .get_text(&format!("/api/v1/runs/{}", run.id))
        .unwrap();
    assert!(!detail.contains(SECRET), "{detail}");

    // A re-run keeps the queue-time values.
    let _: api::Run = server
        .client
        .post_json(
            &format!("/api/v1/runs/{}/rerun", run.id),
            &serde_json::json!({}),
        )
        .unwrap();
    let again = wait_for_run(&server, pipeline, 2);
    assert!(run_logs(&server, again.id).contains("v=hi"));

    // At rest the secret is encrypted: no file of the data folder holds it (the database, its
    // write-ahead log, job rows), though the jobs above received it.
    let data = server.data_dir();
    assert!(data.join("lockgate.db").exists());
    assert_eq!(any_file_contains(&data, SECRET), None);
}

/// An output set with `issecret=true` is stored encrypted, never shown (API, logs, the database
/// files), and still reaches dependent jobs' conditions and `$[ ]` variables in clear, where it is
/// masked like a secret.
#[test]
fn secret_outputs_are_encrypted_masked_and_still_reach_dependent_jobs() {
    // Built by the step, so that the pipeline's YAML (stored in the data folder's repositories)
    // never holds it whole.
    const VALUE: &str = "output-Value-8731";
    let yaml = "\
appendCommitMessageToRunName: false
stages:
- stage: One
  jobs:
  - job: A
    steps:
    - script: |
        P=out; Q=put
        echo \"##vso[task.setvariable variable=tok;isOutput=true;issecret=true]${P}${Q}-Value-8731\"
        echo \"##vso[task.setvariable variable=plain;isOutput=true]visible\"
      name: setvar
    - script: echo \"same job=$(setvar.tok)\"
  - job: B
    dependsOn: A
    condition: and(succeeded(), eq(length(dependencies.A.outputs['setvar.tok']), 17))
    variables:
      tok: $[ dependencies.A.outputs['setvar.tok'] ]
      plain: $[ dependencies.A.outputs['setvar.plain'] ]
    steps:
    - script: |
        P=out; Q=put
        [ \"$(tok)\" = \"${P}${Q}-Value-8731\" ] && echo TOKEN-MATCHES
        echo \"tok=$(tok) env=$TOK plain=$(plain)\"
- stage: Two
  dependsOn: One
  jobs:
  - job: C
    variables:
      tok: $[ stageDependencies.One.A.outputs['setvar.tok'] ]
    steps:
    - script: |
        P=out; Q=put
        [ \"$(tok)\" = \"${P}${Q}-Value-8731\" ] && echo STAGE-MATCHES
        echo \"later stage tok=$(tok)\"
";
    let (server, _, _work, _, run) = first_run_of(yaml);
    let logs = run_logs(&server, run.id);
    assert_eq!(run.result.as_deref(), Some("succeeded"), "{logs}");
    let detail = run_detail(&server, run.id);
    assert_eq!(job_result(&detail, "B"), "succeeded", "{detail:?}");
    assert!(
        logs.contains("TOKEN-MATCHES"),
        "the dependent job got the value: {logs}"
    );
    assert!(
        logs.contains("STAGE-MATCHES"),
        "a later stage got the value: {logs}"
    );
    assert!(logs.contains("same job=***"), "{logs}");
    assert!(
        logs.contains("tok=*** env=*** plain=visible"),
        "masked in the dependent job: {logs}"
    );
    assert!(logs.contains("later stage tok=***"), "{logs}");
    assert!(!logs.contains(VALUE), "{logs}");
    let detail_text = server
        .client
        .get_text(&format!("/api/v1/runs/{}", run.id))
        .unwrap();
    assert!(!detail_text.contains(VALUE), "{detail_text}");
    // Not in clear in the database (nor its write-ahead log) or anywhere else in the data folder.
    let data = server.data_dir();
    let database_files: Vec<u8> = ["lockgate.db", "lockgate.db-wal"]
        .iter()
        .flat_map(|name| std::fs::read(data.join(name)).unwrap_or_default())
        .collect();
    let holds = |needle: &str| {
        database_files
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
    };
    assert!(!holds(VALUE));
    assert_eq!(any_file_contains(&data, VALUE), None);
    // The non-secret output is stored as it is (so the check above can find a clear value).
    assert!(holds("\"setvar.plain\":\"visible\""));
}

/// A job condition and a `$[ ]` variable read a variable defined on the pipeline: the queue-time
/// value when one is given, the pipeline's own value otherwise.
#[test]
fn conditions_and_runtime_expressions_read_queue_time_variables() {
    // The echoed words are quoted apart so that a step's name (its script's first line) never matches.
    let yaml = "\
trigger: none
appendCommitMessageToRunName: false
jobs:
- job: Deploy
  condition: eq(variables['Target'], 'prod')
  steps:
  - script: echo \"deploying\" \"to $(Target)\"
- job: Report
  variables:
    chosen: $[ variables['Target'] ]
  steps:
  - script: echo \"chosen\"\"=$(chosen)\"
";
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", yaml)],
        "main",
    );
    let _: serde_json::Value = server
        .client
        .put_json(
            &format!("/api/v1/pipelines/{pipeline}/variables"),
            &api::PipelineVariables {
                variables: vec![api::PipelineVariable {
                    name: "Target".into(),
                    value: Some("test".into()),
                    secret: false,
                    allow_override: true,
                }],
            },
        )
        .unwrap();
    let queue = format!("/api/v1/pipelines/{pipeline}/runs");
    let result_of = |run: &api::Run, name: &str| job_result(&run_detail(&server, run.id), name);

    // Queued with Target=prod: the condition holds and the runtime expression reads the value.
    let queued: api::Run = server
        .client
        .post_json(
            &queue,
            &serde_json::json!({"variables": {"Target": "prod"}}),
        )
        .unwrap();
    let run = wait_for_run(&server, pipeline, 1);
    assert_eq!(run.id, queued.id);
    let logs = run_logs(&server, run.id);
    assert_eq!(run.result.as_deref(), Some("succeeded"), "{logs}");
    assert_eq!(result_of(&run, "Deploy"), "succeeded");
    assert!(logs.contains("deploying to prod"), "{logs}");
    assert!(logs.contains("chosen=prod"), "{logs}");

    // Queued without a value: the pipeline's own value, so the condition is false.
    let queued: api::Run = server
        .client
        .post_json(&queue, &serde_json::json!({}))
        .unwrap();
    let run = wait_for_run(&server, pipeline, 2);
    assert_eq!(run.id, queued.id);
    let logs = run_logs(&server, run.id);
    assert_eq!(run.result.as_deref(), Some("succeeded"), "{logs}");
    assert_eq!(result_of(&run, "Deploy"), "skipped");
    assert!(!logs.contains("deploying to"), "{logs}");
    assert!(logs.contains("chosen=test"), "{logs}");
}

#[test]
fn runtime_expressions_in_job_keys_are_evaluated_when_the_job_is_queued() {
    let yaml = "\
appendCommitMessageToRunName: false
variables:
  allow: yes
  minutes: 7
jobs:
- job: flaky
  continueOnError: $[ eq(variables.allow, 'yes') ]
  steps:
  - script: exit 3
- job: after
  dependsOn: flaky
  steps:
  - script: echo \"after\" \"ran\"
- job: timed
  timeoutInMinutes: $[ variables.minutes ]
  steps:
  - script: echo \"timed\" \"ran\"
- job: bad
  continueOnError: $[ 'maybe' ]
  steps:
  - script: echo \"bad\" \"ran\"
";
    let (server, _, _work, _, run) = first_run_of(yaml);
    let detail = run_detail(&server, run.id);
    let logs = run_logs(&server, run.id);
    assert_eq!(
        job_result(&detail, "flaky"),
        "succeededWithIssues",
        "{logs}"
    );
    // continueOnError from the expression lets the dependent job run.
    assert_eq!(job_result(&detail, "after"), "succeeded", "{logs}");
    assert!(logs.contains("after ran"), "{logs}");
    assert_eq!(job_result(&detail, "timed"), "succeeded", "{logs}");
    assert_eq!(job_result(&detail, "bad"), "failed", "{logs}");
    assert!(
        logs.contains(
            "job `continueOnError`: `continueOnError` must evaluate to true or false, but `$[ 'maybe' ]` gave `maybe`"
        ),
        "{logs}"
    );
    assert!(!logs.contains("bad ran"), "{logs}");
}

#[test]
fn published_test_cases_are_listed_by_the_api_and_shown_on_the_run_page() {
    let (server, _push_url, _work, _pipeline, run) = first_run_of(
        r#"
steps:
- script: |
    mkdir -p reports
    cat > reports/TEST-calc.xml <<'XML'
    <testsuite name="calc">
      <testcase classname="calc.Adding" name="adds_two_numbers" time="0.004"/>
      <testcase classname="calc.Dividing" name="divides_by_zero" time="0.25">
        <failure message="expected an error, got 0">at calc::divide (src/lib.rs:9)</failure>
      </testcase>
      <testcase name="rounds_half_up"><skipped message="not implemented yet"/></testcase>
    </testsuite>
    XML
- task: PublishTestResults@2
  inputs:
    testResultsFiles: '**/TEST-*.xml'
"#,
    );
    assert_eq!(
        run.result.as_deref(),
        Some("succeeded"),
        "failed tests fail the task only with failTaskOnFailedTests: {}",
        run_logs(&server, run.id)
    );

    // The API lists every case, failed ones first, with its duration and message.
    let tests: Vec<api::TestResult> = server
        .client
        .get_json(&format!("/api/v1/runs/{}/tests", run.id))
        .unwrap();
    let cases: Vec<_> = tests
        .iter()
        .map(|t| {
            (
                t.suite.as_str(),
                t.name.as_str(),
                t.outcome.as_str(),
                t.duration_ms,
                t.message.as_str(),
            )
        })
        .collect();
    assert_eq!(
        cases,
        [
            (
                "calc.Dividing",
                "divides_by_zero",
                "failed",
                250,
                "expected an error, got 0\nat calc::divide (src/lib.rs:9)"
            ),
            ("calc.Adding", "adds_two_numbers", "passed", 4, ""),
            (
                "calc",
                "rounds_half_up",
                "skipped",
                0,
                "not implemented yet"
            ),
        ]
    );

    // The run page's Tests section: counts, a download link, the failed case first with its message.
    let page = server
        .client
        .get_text(&format!("/runs/{}", run.id))
        .unwrap();
    let tests_section = &page[page.find("<h2>Tests</h2>").expect("a Tests section")..];
    for text in ["1 passed", "1 failed", "1 skipped"] {
        assert!(tests_section.contains(text), "{text}: {tests_section}");
    }
    assert!(
        tests_section.contains(&format!("href=\"/api/v1/runs/{}/tests\"", run.id)),
        "{tests_section}"
    );
    let failed = tests_section
        .find("divides_by_zero")
        .expect("the failed case");
    let passed = tests_section
        .find("adds_two_numbers")
        .expect("the passed case");
    assert!(failed < passed, "failed cases come first: {tests_section}");
    let message = tests_section
        .find("expected an error, got 0")
        .expect("the failure message");
    let details = tests_section[failed..]
        .find("<details")
        .map(|at| at + failed)
        .expect("the message is in a <details>");
    assert!(details < message && message < passed, "{tests_section}");
}

#[test]
fn rev_counts_per_prefix_and_runtime_expressions_read_pipeline_start_time() {
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    let yaml = |major: &str| {
        format!(
            r#"name: v{major}.$(Rev:rr)
variables:
  day: $[ format('{{0:yyyyMMdd}}', pipeline.startTime) ]
  build: $[ counter(format('{{0:yyyyMMdd}}', pipeline.startTime), 100) ]
steps:
- checkout: none
- script: echo "day=$(day) build=$(build) start=$(System.PipelineStartTime)"
"#
        )
    };
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", &yaml("1"))],
        "main",
    );
    let first = wait_for_run(&server, pipeline, 1);
    let logs = run_logs(&server, first.id);
    assert_eq!(first.result.as_deref(), Some("succeeded"), "{logs}");
    assert!(first.name.starts_with("v1.01"), "{}", first.name);
    let day = logs
        .lines()
        .rev()
        .find_map(|line| line.split("day=").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{logs}"))
        .to_string();
    assert!(day.len() == 8 && day.starts_with("20"), "{logs}");
    assert!(logs.contains(" build=100 "), "{logs}");
    assert!(logs.contains("+00:00"), "{logs}");

    let queue = || {
        let _: api::Run = server
            .client
            .post_json(
                &format!("/api/v1/pipelines/{pipeline}/runs"),
                &api::QueueRun::default(),
            )
            .unwrap();
    };
    queue();
    assert!(
        wait_for_run(&server, pipeline, 2).name.starts_with("v1.02"),
        "the same prefix counts on"
    );
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", &yaml("2"))],
        "main",
    );
    assert!(
        wait_for_run(&server, pipeline, 3).name.starts_with("v2.01"),
        "a new prefix starts at 1"
    );
}

#[test]
fn a_job_for_another_os_waits_for_a_matching_agent_and_says_so() {
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    let yaml = "\
strategy:
  matrix:
    linux:
      imageName: ubuntu-latest
    windows:
      imageName: windows-latest
pool:
  vmImage: $(imageName)
steps:
- checkout: none
- script: echo ran on $(imageName)
";
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", yaml)],
        "main",
    );
    let runs = wait_for_runs(&server, pipeline, "a run", |runs| !runs.is_empty());
    let deadline = Instant::now() + Duration::from_secs(60);
    let detail = loop {
        let detail = run_detail(&server, runs[0].id);
        let linux = detail.jobs.iter().find(|j| j.name.ends_with("linux"));
        if linux.is_some_and(|j| j.status == "completed") {
            break detail;
        }
        assert!(
            Instant::now() < deadline,
            "the Linux leg never ran: {detail:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let linux = detail
        .jobs
        .iter()
        .find(|j| j.name.ends_with("linux"))
        .unwrap();
    assert_eq!(linux.result.as_deref(), Some("succeeded"), "{detail:?}");
    // The built-in agents are free, yet the Windows leg is not handed to them.
    std::thread::sleep(Duration::from_millis(500));
    let detail = run_detail(&server, runs[0].id);
    let windows = detail
        .jobs
        .iter()
        .find(|j| j.name.ends_with("windows"))
        .unwrap();
    assert_eq!(windows.status, "queued", "{detail:?}");
    assert!(windows.agent.is_none(), "{detail:?}");
    let reason = windows.waiting_for.as_deref().unwrap_or_default();
    assert!(
        reason.contains("Agent.OS Windows_NT")
            && reason.contains("vmImage `windows-latest`")
            && reason.contains("[vm_images]")
            && reason.contains("run Linux"),
        "{reason}"
    );
    assert_eq!(run_detail(&server, runs[0].id).run.status, "running");
}

#[test]
fn a_vm_image_goes_to_the_pool_the_server_maps_it_to() {
    let dir = tempfile::tempdir().unwrap();
    // This server's administrator lets `windows-2022` jobs run on the built-in (Linux) agents and
    // sends `macOS-14` to a pool of Macs that has no agent yet.
    let server = start_configured(&dir.path().join("data"), true, |config| {
        config.vm_images.insert("windows-2022", "Default").unwrap();
        config.vm_images.insert("macos-*", "macs").unwrap();
    })
    .running();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    let yaml = "\
jobs:
- job: win
  pool:
    vmImage: windows-2022
  steps:
  - checkout: none
  - script: echo ran the windows job here
- job: mac
  pool:
    vmImage: macOS-14
  steps:
  - checkout: none
  - script: echo never
- job: win2019
  pool:
    vmImage: windows-2019
  steps:
  - checkout: none
  - script: echo never
";
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", yaml)],
        "main",
    );
    let runs = wait_for_runs(&server, pipeline, "a run", |runs| !runs.is_empty());
    let deadline = Instant::now() + Duration::from_secs(60);
    let detail = loop {
        let detail = run_detail(&server, runs[0].id);
        let win = detail.jobs.iter().find(|j| j.name == "win").unwrap();
        if win.status == "completed" {
            break detail;
        }
        assert!(
            Instant::now() < deadline,
            "the mapped job never ran: {detail:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let job = |name: &str| detail.jobs.iter().find(|j| j.name == name).unwrap();
    assert_eq!(
        job("win").result.as_deref(),
        Some("succeeded"),
        "{detail:?}"
    );
    assert!(
        run_logs(&server, runs[0].id).contains("ran the windows job here"),
        "{}",
        run_logs(&server, runs[0].id)
    );
    assert_eq!(job("mac").status, "queued");
    assert_eq!(
        job("mac").waiting_for.as_deref(),
        Some(
            "an agent in pool `macs`: no agent is registered in it (`lockgate agents token --pool macs`)"
        )
    );
    // Not in the table: it waits for a Windows agent in the default pool, and says why.
    assert_eq!(job("win2019").status, "queued");
    let reason = job("win2019").waiting_for.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with(
            "an agent with Agent.OS Windows_NT for vmImage `windows-2019`: no pool is mapped"
        ),
        "{reason}"
    );
}

/// An artifact is uploaded by the step that publishes it, not when the job ends: while the job still
/// sleeps after publishing, the API already lists and serves it, so a server killed then loses nothing.
#[test]
fn an_artifact_is_on_the_server_while_the_job_that_published_it_still_runs() {
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[(
            "azure-pipelines.yml",
            "trigger: [main]\n\
             steps:\n\
             - script: mkdir -p out && echo early > out/early.txt\n\
             - publish: out\n  artifact: early\n\
             - script: sleep 120\n",
        )],
        "main",
    );
    let run = wait_for_runs(&server, pipeline, "a run", |runs| !runs.is_empty())[0].clone();
    let deadline = Instant::now() + Duration::from_secs(90);
    let files = loop {
        let files: Vec<api::ArtifactFile> = server
            .client
            .get_json(&format!("/api/v1/runs/{}/artifacts", run.id))
            .unwrap();
        if !files.is_empty() {
            break files;
        }
        assert!(Instant::now() < deadline, "the artifact never arrived");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        (files[0].artifact.as_str(), files[0].path.as_str()),
        ("early", "early.txt")
    );
    assert_eq!(
        server.client.get_text(&files[0].download_url).unwrap(),
        "early\n"
    );
    let detail = run_detail(&server, run.id);
    assert_eq!(
        detail.run.status, "running",
        "the job still sleeps: {detail:?}"
    );
    let _: serde_json::Value = server
        .client
        .post_json(
            &format!("/api/v1/runs/{}/cancel", run.id),
            &serde_json::json!({}),
        )
        .unwrap();
    let done = wait_for_run(&server, pipeline, 1);
    assert_eq!(done.result.as_deref(), Some("canceled"));
}

/// Waits until run `run` of `pipeline` has an approval pending, and returns the approvals.
fn wait_for_pending_approval(server: &Running, run: i64) -> Vec<api::Approval> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let approvals: Vec<api::Approval> = server
            .client
            .get_json(&format!("/api/v1/runs/{run}/approvals"))
            .unwrap();
        if approvals.iter().any(|a| a.status == "pending") {
            return approvals;
        }
        assert!(
            Instant::now() < deadline,
            "no approval asked for: {approvals:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stage_deploying_to_an_environment_with_an_approval_check_waits_for_another_user() {
    let dir = tempfile::tempdir().unwrap();
    let started = start_on(&dir.path().join("data"), true);
    let bob_token = started.runtime.block_on(async {
        let store = &started.state.store;
        let bob = store
            .create_user("bob", &auth::hash_password("pw-123456").unwrap(), false)
            .await
            .unwrap();
        let token = auth::random_token("lgp_");
        store
            .create_access_token(bob.id, "t", &auth::token_hash(&token), "read,write")
            .await
            .unwrap();
        token
    });
    let mut server = started.running();
    server._dir = Some(dir);
    let bob = ServerClient::new(&server.url, &bob_token);
    let (push_url, pipeline) = project_with_pipeline(&server);
    let _: serde_json::Value = server
        .client
        .put_json(
            "/api/v1/projects/p/members/bob",
            &serde_json::json!({"role": "reader"}),
        )
        .unwrap();
    let check_url = "/api/v1/projects/p/environments/test/checks/approval";
    let check = |approvers: &[&str], min: i64| {
        serde_json::json!({"approvers": approvers, "minApprovals": min,
                           "instructions": "compare the ledger first"})
    };
    // Bad configurations are refused, naming the field; a reader cannot configure checks.
    for (body, needle) in [
        (check(&["ada", "nobody"], 1), "`nobody` is not a user"),
        (check(&["ada", "bob"], 3), "`minApprovals`"),
        (check(&[], 1), "`approvers`"),
    ] {
        let error = server
            .client
            .put_json::<_, serde_json::Value>(check_url, &body)
            .unwrap_err();
        assert_eq!(error.status(), Some(400), "{error}");
        assert!(error.to_string().contains(needle), "{error}");
    }
    let error = bob
        .put_json::<_, serde_json::Value>(check_url, &check(&["bob"], 1))
        .unwrap_err();
    assert_eq!(error.status(), Some(403), "{error}");
    assert!(
        error
            .to_string()
            .contains("only the owners of environment `test`"),
        "{error}"
    );
    // The environment's owners own its checks: once bob owns `test`, he may set them.
    let _: serde_json::Value = server
        .client
        .post_json(
            "/api/v1/projects/p/environments",
            &serde_json::json!({"name": "test"}),
        )
        .unwrap();
    let _: serde_json::Value = server
        .client
        .patch_json(
            "/api/v1/projects/p/environments/test",
            &serde_json::json!({"owners": ["ada", "bob"]}),
        )
        .unwrap();
    let _: api::ApprovalCheck = bob.put_json(check_url, &check(&["ada", "bob"], 1)).unwrap();

    let yaml = "\
appendCommitMessageToRunName: false
stages:
- stage: Build
  jobs:
  - job: B
    steps:
    - script: echo \"built\" \"it\"
- stage: Deploy
  jobs:
  - deployment: Ship
    environment: test
    strategy:
      runOnce:
        deploy:
          steps:
          - script: echo \"deployed\" \"to test\"
";
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", yaml)],
        "main",
    );
    let runs = wait_for_runs(&server, pipeline, "a run", |runs| !runs.is_empty());
    let run = runs[0].id;
    let approvals = wait_for_pending_approval(&server, run);
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0].stage, "Deploy");
    assert_eq!(approvals[0].environment, "test");
    // Why is it blocked: the waiting job says so; the deployment has not run.
    let detail = run_detail(&server, run);
    let ship = detail.jobs.iter().find(|j| j.name == "Ship").unwrap();
    assert_eq!(ship.status, "pending");
    assert!(
        ship.waiting_for
            .as_deref()
            .is_some_and(|w| w.contains("approval for environment `test`: 0 of 1 from ada, bob")),
        "{ship:?}"
    );
    assert_eq!(job_result(&detail, "B"), "succeeded");
    assert_ne!(detail.run.status, "completed");
    // Ada queued the run (she pushed): she may not approve it.
    let approve = serde_json::json!({"decision": "approve", "comment": "ledger looks right"});
    let error = server
        .client
        .post_json::<_, serde_json::Value>(&format!("/api/v1/runs/{run}/approvals"), &approve)
        .unwrap_err();
    assert_eq!(error.status(), Some(403), "{error}");
    assert!(
        error
            .to_string()
            .contains("does not let the requester approve"),
        "{error}"
    );
    let error = bob
        .post_json::<_, serde_json::Value>(
            &format!("/api/v1/runs/{run}/approvals"),
            &serde_json::json!({"decision": "maybe"}),
        )
        .unwrap_err();
    assert_eq!(error.status(), Some(400), "{error}");
    let decided: Vec<api::Approval> = bob
        .post_json(&format!("/api/v1/runs/{run}/approvals"), &approve)
        .unwrap();
    assert_eq!(decided[0].status, "approved");
    assert_eq!(decided[0].decisions.len(), 1);
    assert_eq!(decided[0].decisions[0].user, "bob");
    assert_eq!(decided[0].decisions[0].comment, "ledger looks right");
    let done = wait_for_run(&server, pipeline, 1);
    assert_eq!(done.result.as_deref(), Some("succeeded"));
    assert!(run_logs(&server, run).contains("deployed to test"));
    // Nothing more to decide.
    let error = bob
        .post_json::<_, serde_json::Value>(&format!("/api/v1/runs/{run}/approvals"), &approve)
        .unwrap_err();
    assert_eq!(error.status(), Some(409), "{error}");

    // The next run is rejected: the deployment never runs and the run fails.
    commit_and_push(work.path(), &push_url, &[("README.md", "second\n")], "main");
    let runs = wait_for_runs(&server, pipeline, "a second run", |runs| runs.len() >= 2);
    let second = runs[0].id;
    wait_for_pending_approval(&server, second);
    let _: Vec<api::Approval> = bob
        .post_json(
            &format!("/api/v1/runs/{second}/approvals"),
            &serde_json::json!({"decision": "reject", "stage": "Deploy", "comment": "not today"}),
        )
        .unwrap();
    let done = wait_for_run(&server, pipeline, 2);
    assert_eq!(done.id, second);
    assert_eq!(done.result.as_deref(), Some("failed"));
    let detail = run_detail(&server, second);
    assert_eq!(job_result(&detail, "Ship"), "skipped");
    assert!(!run_logs(&server, second).contains("deployed to test"));
}

#[test]
fn branch_control_refuses_other_branches_and_business_hours_hold_a_deployment() {
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let checks = "/api/v1/projects/p/environments/prod/checks";
    for (kind, body, needle) in [
        (
            "branch-control",
            serde_json::json!({"allowedBranches": []}),
            "`allowedBranches`",
        ),
        (
            "business-hours",
            serde_json::json!({"days": ["Funday"], "start": "09:00", "end": "17:00"}),
            "`days`",
        ),
        (
            "business-hours",
            serde_json::json!({"days": ["Mon"], "start": "17:00", "end": "09:00"}),
            "`end` must be after `start`",
        ),
        (
            "business-hours",
            serde_json::json!({"days": ["Mon"], "start": "09:00", "end": "17:00", "utcOffset": "CET"}),
            "`utcOffset`",
        ),
    ] {
        let error = server
            .client
            .put_json::<_, serde_json::Value>(&format!("{checks}/{kind}"), &body)
            .unwrap_err();
        assert_eq!(error.status(), Some(400), "{error}");
        assert!(error.to_string().contains(needle), "{error}");
    }
    let _: api::BranchControl = server
        .client
        .put_json(
            &format!("{checks}/branch-control"),
            &serde_json::json!({"allowedBranches": ["refs/heads/main"]}),
        )
        .unwrap();
    let yaml = "\
appendCommitMessageToRunName: false
stages:
- stage: Build
  jobs:
  - job: B
    steps:
    - script: echo \"built\" \"it\"
- stage: Deploy
  jobs:
  - deployment: Ship
    environment: prod
    strategy:
      runOnce:
        deploy:
          steps:
          - script: echo \"deployed\" \"to prod\"
";
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", yaml)],
        "feature/x",
    );
    let refused = wait_for_run(&server, pipeline, 1);
    assert_eq!(refused.result.as_deref(), Some("failed"));
    let detail = run_detail(&server, refused.id);
    assert_eq!(job_result(&detail, "B"), "succeeded");
    assert_eq!(job_result(&detail, "Ship"), "skipped");
    let logs = run_logs(&server, refused.id);
    assert!(
        logs.contains(
            "branch control of environment `prod`: `refs/heads/feature/x` is not one of refs/heads/main"
        ),
        "{logs}"
    );
    assert!(!logs.contains("deployed to prod"), "{logs}");

    // Business hours whose window is not now: a run of main waits, saying why.
    let (start, end) = window_not_now();
    let _: api::BusinessHours = server
        .client
        .put_json(
            &format!("{checks}/business-hours"),
            &serde_json::json!({"days": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
                                "start": start, "end": end}),
        )
        .unwrap();
    commit_and_push(work.path(), &push_url, &[("README.md", "main\n")], "main");
    let runs = wait_for_runs(&server, pipeline, "a run of main", |runs| runs.len() >= 2);
    let waiting = runs[0].id;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let detail = run_detail(&server, waiting);
        let ship = detail.jobs.iter().find(|j| j.name == "Ship").unwrap();
        if ship
            .waiting_for
            .as_deref()
            .is_some_and(|w| w.contains("business hours of environment `prod`"))
        {
            assert_eq!(ship.status, "pending");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not waiting for business hours: {detail:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Removing the window lets it go on at once.
    server
        .client
        .delete(&format!("{checks}/business-hours"))
        .unwrap();
    let done = wait_for_run(&server, pipeline, 2);
    assert_eq!(done.id, waiting);
    assert_eq!(done.result.as_deref(), Some("succeeded"));
    assert!(run_logs(&server, waiting).contains("deployed to prod"));
}

/// A pipeline that builds an artifact and deploys it to `dev` when the YAML's `outcome` is `good`.
fn deploying_pipeline(outcome: &str) -> String {
    format!(
        "\
trigger:
  branches:
    include: [main]
variables:
  outcome: {outcome}
stages:
- stage: Build
  jobs:
  - job: build
    steps:
    - script: mkdir -p out && echo $(Build.SourceVersion) > out/app.txt
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
          - script: test \"$(outcome)\" = good
"
    )
}

/// The story of an environment: the first run that deploys to `dev` creates it; every deployment is
/// in its ledger with the commit, the artifact it deployed and the job's variables (the secret one
/// redacted); "what is where" shows the newest successful one, and a failed deployment is recorded
/// as failed without replacing it.
#[test]
fn deployments_fill_the_ledger_and_show_what_is_where() {
    const SECRET: &str = "deploy-s3cret";
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let none: Vec<api::Environment> = server
        .client
        .get_json("/api/v1/projects/p/environments")
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
    let _: serde_json::Value = server
        .client
        .put_json(
            &format!("/api/v1/pipelines/{pipeline}/variables"),
            &api::PipelineVariables {
                variables: vec![
                    api::PipelineVariable {
                        name: "region".into(),
                        value: Some("eu-west".into()),
                        secret: false,
                        allow_override: false,
                    },
                    api::PipelineVariable {
                        name: "token".into(),
                        value: Some(SECRET.into()),
                        secret: true,
                        allow_override: false,
                    },
                ],
            },
        )
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    let first_commit = commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", &deploying_pipeline("good"))],
        "main",
    );
    let first = wait_for_run(&server, pipeline, 1);
    assert_eq!(first.result.as_deref(), Some("succeeded"), "{first:?}");

    let dev: api::Environment = server
        .client
        .get_json("/api/v1/projects/p/environments/dev")
        .unwrap();
    assert_eq!(
        dev.created_by, "ada",
        "created on first use by the requester"
    );
    assert_eq!(dev.owners, ["ada"]);
    assert_eq!(dev.deployments.len(), 1, "{dev:?}");
    let deployment = &dev.deployments[0];
    assert_eq!(
        (
            deployment.run_id,
            deployment.commit.as_str(),
            deployment.status.as_str(),
            deployment.result.as_deref(),
            deployment.job.as_str(),
            deployment.stage.as_str(),
            deployment.requested_by.as_str(),
        ),
        (
            first.id,
            first_commit.as_str(),
            "completed",
            Some("succeeded"),
            "web",
            "Deploy",
            "ada"
        )
    );
    assert!(deployment.finished_at >= Some(deployment.started_at));
    assert_eq!(deployment.artifacts.len(), 1, "{deployment:?}");
    assert_eq!(
        (
            deployment.artifacts[0].name.as_str(),
            deployment.artifacts[0].files
        ),
        ("app", 1)
    );
    assert_eq!(deployment.artifacts[0].digest.len(), 64);
    assert_eq!(
        deployment.variables.get("region").map(String::as_str),
        Some("eu-west")
    );
    assert_eq!(
        deployment.variables.get("token").map(String::as_str),
        Some("***")
    );
    assert_eq!(
        deployment.variables.get("outcome").map(String::as_str),
        Some("good")
    );
    let ledger_text = server
        .client
        .get_text("/api/v1/projects/p/environments/dev/deployments")
        .unwrap();
    assert!(!ledger_text.contains(SECRET), "{ledger_text}");

    // A second commit: a second ledger entry, newest first, with a different artifact.
    let second_commit = commit_and_push(work.path(), &push_url, &[("README.md", "second")], "main");
    let second = wait_for_run(&server, pipeline, 2);
    assert_eq!(second.result.as_deref(), Some("succeeded"), "{second:?}");
    let ledger: Vec<api::Deployment> = server
        .client
        .get_json("/api/v1/projects/p/environments/dev/deployments")
        .unwrap();
    assert_eq!(
        ledger
            .iter()
            .map(|d| (d.run_id, d.commit.as_str()))
            .collect::<Vec<_>>(),
        [
            (second.id, second_commit.as_str()),
            (first.id, first_commit.as_str())
        ]
    );
    assert_ne!(
        ledger[0].artifacts[0].digest, ledger[1].artifacts[0].digest,
        "each run built its own artifact"
    );
    let older: Vec<api::Deployment> = server
        .client
        .get_json(&format!(
            "/api/v1/projects/p/environments/dev/deployments?limit=1&before={}",
            ledger[0].id
        ))
        .unwrap();
    assert_eq!(
        older.iter().map(|d| d.run_id).collect::<Vec<_>>(),
        [first.id]
    );
    let where_: Vec<api::DeployedVersion> = server
        .client
        .get_json(&format!("/api/v1/pipelines/{pipeline}/environments"))
        .unwrap();
    assert_eq!(where_.len(), 1, "{where_:?}");
    assert_eq!(
        (
            where_[0].environment.as_str(),
            where_[0].deployment.run_id,
            where_[0].behind
        ),
        ("dev", second.id, 0)
    );

    // A third commit whose deployment fails: recorded as failed, and dev still runs the second.
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", &deploying_pipeline("bad"))],
        "main",
    );
    let third = wait_for_run(&server, pipeline, 3);
    assert_eq!(third.result.as_deref(), Some("failed"), "{third:?}");
    let ledger: Vec<api::Deployment> = server
        .client
        .get_json("/api/v1/projects/p/environments/dev/deployments")
        .unwrap();
    assert_eq!(ledger.len(), 3, "{ledger:?}");
    assert_eq!(
        (ledger[0].run_id, ledger[0].result.as_deref()),
        (third.id, Some("failed"))
    );
    let where_: Vec<api::DeployedVersion> = server
        .client
        .get_json(&format!("/api/v1/pipelines/{pipeline}/environments"))
        .unwrap();
    assert_eq!(
        (where_[0].deployment.run_id, where_[0].behind),
        (second.id, 0),
        "a failed deployment does not replace the latest successful one"
    );
    let listed: Vec<api::Environment> = server
        .client
        .get_json("/api/v1/projects/p/environments")
        .unwrap();
    assert_eq!(
        listed[0].latest_deployment.as_ref().map(|d| d.run_id),
        Some(second.id)
    );
}

/// A deployment job naming an environment outside the name rules fails its run before anything
/// runs, with a diagnostic naming the job, and creates no environment.
#[test]
fn an_environment_name_outside_the_rules_fails_the_run_and_names_the_job() {
    let (server, _push_url, _work, _pipeline, run) = first_run_of(
        "\
trigger: [main]
jobs:
- deployment: web
  environment: 'team/dev'
  strategy:
    runOnce:
      deploy:
        steps:
        - script: echo never
",
    );
    assert_eq!(run.result.as_deref(), Some("failed"), "{run:?}");
    let detail = run_detail(&server, run.id);
    assert!(detail.jobs.is_empty(), "{detail:?}");
    let diagnostics = detail.diagnostics.to_string();
    assert!(
        diagnostics.contains("server::invalid-environment")
            && diagnostics.contains("job `web`")
            && diagnostics.contains("team/dev"),
        "{diagnostics}"
    );
    let environments: Vec<api::Environment> = server
        .client
        .get_json("/api/v1/projects/p/environments")
        .unwrap();
    assert!(environments.is_empty(), "{environments:?}");
}

#[test]
fn the_environment_diff_says_what_promoting_test_to_prod_changes() {
    let pipeline_yaml = |color: &str, prod: &str| {
        format!(
            "\
appendCommitMessageToRunName: false
variables:
  color: {color}
stages:
- stage: Build
  jobs:
  - job: B
    steps:
    - script: mkdir -p out && echo {color} > out/app.txt
    - publish: out
      artifact: app
- stage: DeployTest
  jobs:
  - deployment: T
    environment: test
    strategy:
      runOnce:
        deploy:
          steps:
          - script: echo test
- stage: DeployProd
  condition: {prod}
  jobs:
  - deployment: P
    environment: prod
    strategy:
      runOnce:
        deploy:
          steps:
          - script: echo prod
"
        )
    };
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", &pipeline_yaml("blue", "succeeded()"))],
        "main",
    );
    assert_eq!(
        wait_for_run(&server, pipeline, 1).result.as_deref(),
        Some("succeeded")
    );
    commit_and_push(
        work.path(),
        &push_url,
        &[
            ("azure-pipelines.yml", &pipeline_yaml("green", "false")),
            ("new.txt", "new\n"),
        ],
        "main",
    );
    assert_eq!(
        wait_for_run(&server, pipeline, 2).result.as_deref(),
        Some("succeeded")
    );
    let diff: api::EnvironmentDiff = server
        .client
        .get_json(&format!(
            "/api/v1/pipelines/{pipeline}/environments/diff?from=test&to=prod"
        ))
        .unwrap();
    assert_eq!(diff.from.run_number, 2);
    assert_eq!(diff.to.run_number, 1);
    assert_eq!(diff.commits.len(), 1, "{diff:?}");
    assert!(diff.files.contains(&"A new.txt".to_string()), "{diff:?}");
    assert!(
        diff.files.contains(&"M azure-pipelines.yml".to_string()),
        "{diff:?}"
    );
    assert_eq!(diff.artifacts.len(), 1, "{diff:?}");
    assert_eq!(diff.artifacts[0].name, "app");
    assert_ne!(diff.artifacts[0].from, diff.artifacts[0].to);
    let color = diff
        .variables
        .iter()
        .find(|v| v.name == "color")
        .unwrap_or_else(|| panic!("{diff:?}"));
    assert_eq!(color.from.as_deref(), Some("green"));
    assert_eq!(color.to.as_deref(), Some("blue"));
    assert!(
        !diff.variables.iter().any(|v| v.name.starts_with("Build.")),
        "{diff:?}"
    );
    // An environment with no deployment of this pipeline is a 404 naming it.
    let error = server
        .client
        .get_json::<api::EnvironmentDiff>(&format!(
            "/api/v1/pipelines/{pipeline}/environments/diff?from=test&to=staging"
        ))
        .unwrap_err();
    assert_eq!(error.status(), Some(404), "{error}");
    assert!(error.to_string().contains("`staging`"), "{error}");
}

/// Waits until `done` holds for the run's detail; fails after 90 s naming `what`.
pub(crate) fn wait_for_detail(
    server: &Running,
    run: i64,
    what: &str,
    done: impl Fn(&api::RunDetail) -> bool,
) -> api::RunDetail {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let detail = run_detail(server, run);
        if done(&detail) {
            return detail;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {detail:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for the run to complete.
pub(crate) fn completed(server: &Running, run: i64) -> api::RunDetail {
    wait_for_detail(server, run, "the run to complete", |d| {
        d.run.status == "completed"
    })
}

/// A business-hours window (UTC, every day) that does not contain the current minute.
pub(crate) fn window_not_now() -> (&'static str, &'static str) {
    let now_minute = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 60)
        % (24 * 60);
    if now_minute >= 60 {
        ("00:00", "00:30")
    } else {
        ("23:00", "23:30")
    }
}
