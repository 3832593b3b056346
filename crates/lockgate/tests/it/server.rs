//! End-to-end tests of `lockgate up`, `lockgate server` and the client commands (`runs`, `pipelines`,
//! `queue`): the real binary serves on 127.0.0.1 with its demo project, and the CLI talks to it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::lockgate;

/// A `lockgate up` child process, stopped when dropped.
pub(crate) struct Up {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) token: String,
    /// What the server printed before "Press Ctrl-C".
    pub(crate) lines: Vec<String>,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_up(dir: &Path) -> Up {
    start_server(dir, &["up", "--port", "0"])
}

pub(crate) fn start_server(dir: &Path, args: &[&str]) -> Up {
    start_server_with_env(dir, args, &[])
}

/// Starts `lockgate ARGS` with the data folder `dir/data` and extra environment variables.
pub(crate) fn start_server_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Up {
    let up = start_another_server(dir, args, env);
    assert!(up.token.starts_with("lgp_"));
    up
}

/// [`start_server_with_env`] for a server whose database has its administrator already (it prints
/// no token: `token` stays empty).
pub(crate) fn start_another_server(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockgate"))
        .args(args)
        .env("LOCKGATE_DATA", dir.join("data"))
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut up = Up {
        child,
        url: String::new(),
        token: String::new(),
        lines: Vec::new(),
    };
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        up.lines.push(line.clone());
        if let Some(rest) = line.strip_prefix("Lockgate is running at ") {
            up.url = rest.trim_end_matches('/').to_string();
        }
        if let Some(rest) = line.strip_prefix("Access token for git and the CLI (shown once): ") {
            up.token = rest.to_string();
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    assert!(
        up.url.starts_with("http://127.0.0.1:"),
        "url printed: {}",
        up.url
    );
    up
}

pub(crate) fn client(dir: &Path, up: &Up, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--server", up.url.as_str(), "--token", up.token.as_str()];
    all.splice(0..0, args.iter().copied());
    lockgate(dir, &all)
}

pub(crate) fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Carries demo run `run` through its environments' checks as its one user would: approves the
/// test deployment, lifts production's business hours (tests run at any hour) and approves
/// production.
fn approve_demo_run(dir: &Path, up: &Up, run: i64) {
    let approve = |stage: &str| {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = client(dir, up, &["approve", &run.to_string(), "--stage", stage]);
            if out.status.code() == Some(0) {
                assert!(stdout(&out).contains("approved"), "{}", stdout(&out));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{stage} of run {run} never asked for approval: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    approve("DeployTest");
    let lifted = client(
        dir,
        up,
        &[
            "checks",
            "remove",
            "prod",
            "--project",
            "demo",
            "--kind",
            "business-hours",
        ],
    );
    assert_eq!(lifted.status.code(), Some(0));
    approve("DeployProd");
}

#[test]
fn up_seeds_a_demo_project_whose_run_the_cli_follows() {
    let dir = tempfile::tempdir().unwrap();
    let up = start_up(dir.path());
    // The demo deploys to dev at once and waits for an approval before test.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let show = stdout(&client(dir.path(), &up, &["runs", "show", "1"]));
        if show.contains("waiting for approval for environment `test`") {
            assert!(
                show.contains("Check the dev deployment, then approve."),
                "{show}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the demo run does not wait for test's approval: {show}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    approve_demo_run(dir.path(), &up, 1);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = client(dir.path(), &up, &["runs", "list", "--project", "demo"]);
        assert_eq!(
            list.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&list.stderr)
        );
        let text = stdout(&list);
        if text.contains("completed") {
            assert!(text.contains("succeeded"), "the demo run succeeds: {text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the demo run did not finish: {text}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let show = client(dir.path(), &up, &["runs", "show", "1"]);
    assert_eq!(show.status.code(), Some(0));
    let text = stdout(&show);
    for stage in ["Build", "Test", "DeployDev", "DeployTest"] {
        assert!(text.contains(stage), "{stage} in {text}");
    }
    let logs = stdout(&client(dir.path(), &up, &["runs", "logs", "1"]));
    assert!(
        logs.contains("deploying") && logs.contains("to test"),
        "{logs}"
    );
    let followed = client(dir.path(), &up, &["runs", "logs", "1", "--follow"]);
    assert_eq!(
        followed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&followed.stderr)
    );
    let followed = stdout(&followed);
    assert!(
        followed.contains("##[section]DeployTest / test") && followed.contains("to test"),
        "{followed}"
    );
    assert!(
        followed.trim_end().ends_with("main"),
        "ends with the run's line: {followed}"
    );

    let pipelines = stdout(&client(
        dir.path(),
        &up,
        &["pipelines", "list", "--project", "demo"],
    ));
    assert!(
        pipelines.starts_with("1  app-ci  app:azure-pipelines.yml"),
        "{pipelines}"
    );
    let queued = client(dir.path(), &up, &["queue", "1", "--branch", "main"]);
    assert_eq!(
        queued.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&queued.stderr)
    );
    assert!(stdout(&queued).contains("#2"), "{}", stdout(&queued));

    // Mistakes are usage errors with the server's message.
    let missing = client(
        dir.path(),
        &up,
        &["queue", "1", "--branch", "no-such-branch"],
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no branch"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let refused = client(dir.path(), &up, &["queue", "1", "--var", "Nope=1"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("(Nope)"),
        "a variable that is not settable at queue time is named: {}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let bad_var = client(dir.path(), &up, &["queue", "1", "--var", "novalue"]);
    assert_eq!(bad_var.status.code(), Some(2));
    let created = client(
        dir.path(),
        &up,
        &[
            "pipelines",
            "create",
            "--project",
            "demo",
            "--name",
            "x",
            "--repository",
            "nope",
        ],
    );
    assert_eq!(created.status.code(), Some(2));
    let bad_token = lockgate(
        dir.path(),
        &["runs", "list", "--server", &up.url, "--token", "lgp_wrong"],
    );
    assert_eq!(bad_token.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_token.stderr).contains("401"));
}

#[test]
fn client_commands_need_a_token_and_server_needs_a_valid_config() {
    let dir = tempfile::tempdir().unwrap();
    let no_token = Command::new(env!("CARGO_BIN_EXE_lockgate"))
        .args(["runs", "list"])
        .env_remove("LOCKGATE_TOKEN")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(no_token.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("LOCKGATE_TOKEN"));

    std::fs::write(
        dir.path().join("server.toml"),
        "port = 0\nlisten_everywhere = true\n",
    )
    .unwrap();
    let bad = lockgate(dir.path(), &["server", "--config", "server.toml"]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("server.toml:2") && stderr.contains("listen_everywhere"),
        "{stderr}"
    );
    let missing = lockgate(dir.path(), &["server", "--config", "nope.toml"]);
    assert_eq!(missing.status.code(), Some(2));

    // The database setting reaches the store, which names the database it cannot open and never
    // echoes the password.
    std::fs::write(
        dir.path().join("pg.toml"),
        "port = 0\ndatabase = \"postgres://lockgate:hunter2@127.0.0.1:9/lockgate\"\n",
    )
    .unwrap();
    let postgres = lockgate(dir.path(), &["server", "--config", "pg.toml"]);
    assert_eq!(postgres.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&postgres.stderr);
    assert!(
        stderr.contains("cannot open the database at postgres://127.0.0.1:9/lockgate")
            && !stderr.contains("hunter2"),
        "{stderr}"
    );
    let unknown = lockgate(
        dir.path(),
        &["up", "--no-demo", "--port", "0", "--database", "mysql://x"],
    );
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("unknown database `mysql`"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
}

#[test]
fn server_reads_its_config_file_and_starts_without_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("server.toml"),
        "# test server\ndata_dir = \"srv\"\nport = 0\nbuiltin_agents = 1\n",
    )
    .unwrap();
    let server = start_server(dir.path(), &["server", "--config", "server.toml"]);
    assert!(
        dir.path().join("srv/lockgate.db").exists(),
        "the data folder comes from the config file"
    );
    let runs = client(dir.path(), &server, &["runs", "list"]);
    assert_eq!(runs.status.code(), Some(0));
    assert_eq!(stdout(&runs), "", "no demo project, so no runs");
    let pipelines = client(
        dir.path(),
        &server,
        &["pipelines", "list", "--project", "demo"],
    );
    assert_eq!(pipelines.status.code(), Some(2), "there is no demo project");
}

/// Runs `git` in `dir` with a fixed identity; fails the test when git fails.
pub(crate) fn git(dir: &Path, args: &[&str]) {
    let output = Command::new("git")
        .args(["-c", "user.name=Ada", "-c", "user.email=ada@example.com"])
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Creates project `project` with repository `app` and pipeline `ci` from its
/// `azure-pipelines.yml`, and pushes `yaml` as that file to `main` (which queues a run); returns a
/// client of the server's API.
pub(crate) fn push_pipeline(
    dir: &Path,
    up: &Up,
    project: &str,
    yaml: &str,
) -> lockgate_agent::ServerClient {
    use lockgate_protocol::api;
    let api = lockgate_agent::ServerClient::new(&up.url, &up.token);
    let _: api::Project = api
        .post_json(
            "/api/v1/projects",
            &api::CreateProject {
                name: project.into(),
            },
        )
        .unwrap();
    push_pipeline_to(dir, up, project, yaml)
}

/// Creates repository `app` and pipeline `ci` in the existing project `project` and pushes a
/// commit whose `azure-pipelines.yml` is `yaml` to its `main`.
pub(crate) fn push_pipeline_to(
    dir: &Path,
    up: &Up,
    project: &str,
    yaml: &str,
) -> lockgate_agent::ServerClient {
    use lockgate_protocol::api;
    let api = lockgate_agent::ServerClient::new(&up.url, &up.token);
    let repo: api::Repository = api
        .post_json(
            &format!("/api/v1/projects/{project}/repositories"),
            &api::CreateRepository { name: "app".into() },
        )
        .unwrap();
    let _: api::Pipeline = api
        .post_json(
            &format!("/api/v1/projects/{project}/pipelines"),
            &api::CreatePipeline {
                name: "ci".into(),
                repository: "app".into(),
                yaml_path: "azure-pipelines.yml".into(),
            },
        )
        .unwrap();
    let work = dir.join(format!("{project}-work"));
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

/// Creates project `project` with repository `app` and pipeline `ci` through the API of `up`, and
/// pushes a commit whose `azure-pipelines.yml` is `yaml` to its `main`.
pub(crate) fn push_new_pipeline(
    dir: &Path,
    up: &Up,
    project: &str,
    yaml: &str,
) -> lockgate_agent::ServerClient {
    use lockgate_protocol::api;
    let api = lockgate_agent::ServerClient::new(&up.url, &up.token);
    let _: api::Project = api
        .post_json(
            "/api/v1/projects",
            &api::CreateProject {
                name: project.into(),
            },
        )
        .unwrap();
    let repo: api::Repository = api
        .post_json(
            &format!("/api/v1/projects/{project}/repositories"),
            &api::CreateRepository { name: "app".into() },
        )
        .unwrap();
    let _: api::Pipeline = api
        .post_json(
            &format!("/api/v1/projects/{project}/pipelines"),
            &api::CreatePipeline {
                name: "ci".into(),
                repository: "app".into(),
                yaml_path: "azure-pipelines.yml".into(),
            },
        )
        .unwrap();
    let work = dir.join(format!("work-{project}"));
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

/// The newest run, once it completed (fails the test after two minutes).
pub(crate) fn newest_completed_run(
    api: &lockgate_agent::ServerClient,
) -> lockgate_protocol::api::Run {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let runs: Vec<lockgate_protocol::api::Run> = api.get_json("/api/v1/runs").unwrap();
        if let Some(run) = runs.first().filter(|run| run.status == "completed") {
            return run.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the run did not finish: {runs:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_built_in_agents_run_power_platform_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let up = start_server(dir.path(), &["up", "--port", "0", "--no-demo"]);
    let api = push_new_pipeline(
        dir.path(),
        &up,
        "pp",
        "steps:\n- task: PowerPlatformToolInstaller@2\n",
    );
    let run = newest_completed_run(&api);
    let logs = stdout(&client(
        dir.path(),
        &up,
        &["runs", "logs", &run.id.to_string()],
    ));
    assert_eq!(run.result.as_deref(), Some("succeeded"), "{logs}");
    assert!(logs.contains("no tools need installing"), "{logs}");
}

#[test]
fn approval_checks_hold_a_deployment_until_the_cli_approves_it() {
    let dir = tempfile::tempdir().unwrap();
    let up = start_up(dir.path());
    let run_cli = |args: &[&str]| client(dir.path(), &up, args);
    // A check naming a user that does not exist is refused, naming the field.
    let bad = run_cli(&[
        "checks",
        "approval",
        "test",
        "--project",
        "demo",
        "--approvers",
        "nobody",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("`nobody` is not a user"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    // Checks go on library resources and pools too (`--on`); one that does not exist is named.
    let missing = run_cli(&[
        "checks",
        "approval",
        "Secrets",
        "--on",
        "variable-group",
        "--project",
        "demo",
        "--approvers",
        "admin",
    ]);
    assert_ne!(missing.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("variable group `Secrets` not found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let lock = run_cli(&[
        "checks",
        "exclusive-lock",
        "build",
        "--on",
        "agent-pool",
        "--project",
        "demo",
    ]);
    assert_eq!(
        lock.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&lock.stderr)
    );
    assert!(
        String::from_utf8_lossy(&lock.stdout).contains("agent pool build: one stage at a time"),
        "{}",
        String::from_utf8_lossy(&lock.stdout)
    );
    let unlocked = run_cli(&[
        "checks",
        "remove",
        "build",
        "--on",
        "agent-pool",
        "--project",
        "demo",
        "--kind",
        "exclusive-lock",
    ]);
    assert_eq!(
        unlocked.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&unlocked.stderr)
    );
    let pool = run_cli(&[
        "checks",
        "branch-control",
        "build",
        "--on",
        "agent-pool",
        "--project",
        "demo",
        "--allowed",
        "refs/heads/main",
    ]);
    assert_eq!(
        pool.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&pool.stderr)
    );
    assert!(
        String::from_utf8_lossy(&pool.stdout)
            .contains("agent pool build: only refs/heads/main may deploy")
    );
    let removed = run_cli(&[
        "checks",
        "remove",
        "build",
        "--on",
        "agent-pool",
        "--project",
        "demo",
        "--kind",
        "branch-control",
    ]);
    assert_eq!(
        removed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let set = run_cli(&[
        "checks",
        "approval",
        "test",
        "--project",
        "demo",
        "--approvers",
        "admin",
        "--allow-requester",
        "--instructions",
        "check the dev deployment",
    ]);
    assert_eq!(
        set.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(
        stdout(&set).contains("1 of admin must approve"),
        "{}",
        stdout(&set)
    );
    // Production's checks are the demo's; this test is about test's approval.
    for kind in ["approval", "branch-control", "business-hours"] {
        let lifted = run_cli(&[
            "checks",
            "remove",
            "prod",
            "--project",
            "demo",
            "--kind",
            kind,
        ]);
        assert_eq!(lifted.status.code(), Some(0));
    }
    // The demo pipeline deploys to dev, then to test: a new run now waits before DeployTest.
    let queued = run_cli(&["queue", "1"]);
    assert_eq!(
        queued.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&queued.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let run = loop {
        let list = stdout(&run_cli(&["runs", "list", "--pipeline", "1", "--json"]));
        let runs: serde_json::Value = serde_json::from_str(&list).unwrap();
        let newest = runs[0]["id"].as_i64().unwrap();
        let show = stdout(&run_cli(&["runs", "show", &newest.to_string()]));
        if newest > 1 && show.contains("waiting for approval for environment `test`") {
            assert!(show.contains("check the dev deployment"), "{show}");
            break newest;
        }
        assert!(Instant::now() < deadline, "no approval asked for: {show}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let approved = run_cli(&["approve", &run.to_string(), "--comment", "dev looks fine"]);
    assert_eq!(
        approved.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    assert!(
        stdout(&approved).contains("DeployTest / test: approved"),
        "{}",
        stdout(&approved)
    );
    assert!(
        stdout(&approved).contains("admin approve: dev looks fine"),
        "{}",
        stdout(&approved)
    );
    // Approving again: nothing waits any more.
    let again = run_cli(&["approve", &run.to_string()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("no approval of run"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let show = stdout(&run_cli(&["runs", "show", &run.to_string()]));
        if show.lines().next().is_some_and(|l| l.contains("completed")) {
            assert!(show.lines().next().unwrap().contains("succeeded"), "{show}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the approved run did not finish: {show}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let removed = run_cli(&["checks", "remove", "test", "--project", "demo"]);
    assert_eq!(removed.status.code(), Some(0));
    // The automatic checks: set, refused with the field named, removed by kind.
    let branch = run_cli(&[
        "checks",
        "branch-control",
        "prod",
        "--project",
        "demo",
        "--allowed",
        "main,refs/heads/release/*",
    ]);
    assert_eq!(
        branch.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&branch.stderr)
    );
    assert!(stdout(&branch).contains("only main, refs/heads/release/* may deploy"));
    let hours = run_cli(&[
        "checks",
        "business-hours",
        "prod",
        "--project",
        "demo",
        "--start",
        "17:00",
        "--end",
        "09:00",
    ]);
    assert_eq!(hours.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&hours.stderr).contains("`end` must be after `start`"));
    let bogus = run_cli(&[
        "checks",
        "remove",
        "prod",
        "--project",
        "demo",
        "--kind",
        "x",
    ]);
    assert_eq!(bogus.status.code(), Some(2));
    let gone = run_cli(&[
        "checks",
        "remove",
        "prod",
        "--project",
        "demo",
        "--kind",
        "branch-control",
    ]);
    assert_eq!(gone.status.code(), Some(0));
}

/// `lockgate environments list|show` against `lockgate up`: the demo run created `dev` and `test`
/// on first use, and the ledger of `dev` lists its deployment.
#[test]
fn environments_list_and_show_print_what_runs_where_and_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let up = start_up(dir.path());
    let run_cli = |args: &[&str]| client(dir.path(), &up, args);
    approve_demo_run(dir.path(), &up, 1);
    let deadline = Instant::now() + Duration::from_secs(120);
    let commit = loop {
        let list = stdout(&run_cli(&["runs", "list", "--pipeline", "1", "--json"]));
        let runs: serde_json::Value = serde_json::from_str(&list).unwrap();
        if runs[0]["status"] == "completed" {
            assert_eq!(runs[0]["result"], "succeeded", "{runs}");
            break runs[0]["sourceCommit"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the demo run did not finish: {runs}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let listed = run_cli(&["environments", "list"]);
    assert_eq!(
        listed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let text = stdout(&listed);
    for environment in ["dev", "test", "prod"] {
        let line = text
            .lines()
            .find(|line| line.starts_with(environment))
            .unwrap_or_else(|| panic!("no {environment} in {text}"));
        assert!(line.contains(&commit[..8]), "{line}");
    }
    let shown = run_cli(&["environments", "show", "DEV", "--project", "demo"]);
    assert_eq!(
        shown.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let text = stdout(&shown);
    assert!(text.starts_with("dev (project demo)"), "{text}");
    assert!(text.contains("owners: admin"), "{text}");
    let entries: Vec<&str> = text.lines().filter(|l| l.contains(" succeeded ")).collect();
    assert_eq!(entries.len(), 1, "{text}");
    assert!(entries[0].contains(&commit[..8]), "{text}");
    let missing = run_cli(&["environments", "show", "staging", "--project", "demo"]);
    assert_ne!(missing.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("environment `staging` not found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    // The demo run deployed the same version to dev and test: promoting changes nothing.
    let diff = run_cli(&["environments", "diff", "dev", "test", "--pipeline", "1"]);
    assert_eq!(
        diff.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&diff.stderr)
    );
    let text = stdout(&diff);
    assert!(
        text.contains("commits (0):") && text.contains("files (0):"),
        "{text}"
    );
    let none = run_cli(&["environments", "diff", "dev", "staging", "--pipeline", "1"]);
    assert_eq!(
        none.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
    // Roll dev back to run 1 (dev has no checks): deployed again, a second ledger entry.
    let missing = run_cli(&["redeploy", "staging", "--run", "1"]);
    assert_ne!(missing.status.code(), Some(0));
    let again = run_cli(&["redeploy", "dev", "--run", "1"]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(
        stdout(&again).contains("deploys to dev again"),
        "{}",
        stdout(&again)
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = stdout(&run_cli(&["environments", "show", "dev"]));
        if text.lines().filter(|l| l.contains(" succeeded ")).count() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no second deployment: {text}");
        std::thread::sleep(Duration::from_millis(300));
    }
}
