//! `lockgate agent` processes on this machine acting as agents of other machines: each registers
//! with a `lockgate up` server on 127.0.0.1 with a one-time token from `lockgate agents token`,
//! keeps its own folder and leases the jobs of its pool whose demands it meets.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lockgate_protocol::api;

use crate::server::{Up, client, push_pipeline, start_server, stdout};

/// A `lockgate agent run` child process, stopped when dropped.
pub(crate) struct AgentProcess {
    child: Child,
    log: PathBuf,
}

impl AgentProcess {
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A one-time registration token for `pool`, from the CLI.
fn registration_token(dir: &Path, up: &Up, pool: &str) -> String {
    let out = client(dir, up, &["agents", "token", "--pool", pool]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = stdout(&out).trim().to_string();
    assert!(token.starts_with("lgr_"), "{token}");
    token
}

/// `lockgate agent register` into `dir/<name>`.
fn register(
    dir: &Path,
    up: &Up,
    token: &str,
    pool: &str,
    name: &str,
    extra: &[&str],
) -> std::process::Output {
    let work = dir.join(name);
    let mut args = vec![
        "agent", "register", "--url", &up.url, "--token", token, "--pool", pool, "--name", name,
        "--work",
    ];
    let work = work.to_string_lossy().into_owned();
    args.push(&work);
    args.extend(extra);
    crate::cli::lockgate(dir, &args)
}

/// Starts `lockgate agent run` on the folder `register` made.
pub(crate) fn run_agent(dir: &Path, name: &str) -> AgentProcess {
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_lockgate"))
        .args(["agent", "run", "--work"])
        .arg(dir.join(name))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    AgentProcess { child, log }
}

/// A folder to be an agent's whole `PATH`, as on a machine that has only the basic tools (and
/// bubblewrap) plus the `extra` programs, each a shell script that prints its name.
fn bare_path(dir: &Path, name: &str, extra: &[&str]) -> std::ffi::OsString {
    let bin = dir.join(format!("{name}-bin"));
    std::fs::create_dir_all(&bin).unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in [
        "bwrap", "git", "bash", "sh", "env", "cat", "ls", "mkdir", "rm", "cp",
    ] {
        if let Some(found) = std::env::split_paths(&path)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
        {
            std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
        }
    }
    for program in extra {
        use std::os::unix::fs::PermissionsExt;
        let file = bin.join(program);
        std::fs::write(&file, format!("#!/bin/sh\necho {program}\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin.into_os_string()
}

/// Starts `lockgate agent run` with `path` as its `PATH`. Without the sandbox: it would give the
/// job a fresh `/tmp`, where the test's folders are.
pub(crate) fn run_agent_with_path(
    dir: &Path,
    name: &str,
    path: std::ffi::OsString,
) -> AgentProcess {
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_lockgate"))
        .args(["agent", "run", "--no-sandbox", "--work"])
        .arg(dir.join(name))
        .env("PATH", path)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    AgentProcess { child, log }
}

/// Waits until `done` holds for the first run's detail; returns it.
pub(crate) fn wait_for_run(
    api: &lockgate_agent::ServerClient,
    what: &str,
    agents: &[&AgentProcess],
    done: impl Fn(&api::RunDetail) -> bool,
) -> api::RunDetail {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let runs: Vec<api::Run> = api.get_json("/api/v1/runs").unwrap();
        if let Some(run) = runs.first() {
            let detail: api::RunDetail = api.get_json(&format!("/api/v1/runs/{}", run.id)).unwrap();
            if done(&detail) {
                return detail;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = agents.iter().map(|a| a.log()).collect();
                panic!("{what} never happened: {detail:#?}\nagent logs: {logs:#?}");
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn job<'a>(detail: &'a api::RunDetail, name: &str) -> &'a api::Job {
    detail.jobs.iter().find(|j| j.name == name).unwrap()
}

#[test]
fn a_registered_agent_process_runs_a_pushed_job_of_its_pool() {
    let dir = tempfile::tempdir().unwrap();
    let up = start_server(dir.path(), &["up", "--port", "0", "--no-demo"]);
    let token = registration_token(dir.path(), &up, "build");
    let out = register(
        dir.path(),
        &up,
        &token,
        "build",
        "remote-1",
        &["--capability", "team=blue"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("Registered agent `remote-1` in pool `build`"));
    let credentials = dir.path().join("remote-1").join(".credentials.json");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&credentials)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the credentials file is the user's alone"
        );
    }
    let stored = std::fs::read_to_string(&credentials).unwrap();
    assert!(stored.contains("lga_") && !stored.contains(&token));
    // The token registered one agent: a second machine cannot use it again.
    let again = register(dir.path(), &up, &token, "build", "remote-2", &[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("unknown, used, expired"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let agent = run_agent(dir.path(), "remote-1");
    let api = push_pipeline(
        dir.path(),
        &up,
        "app",
        "jobs:\n- job: build\n  pool:\n    name: build\n    demands: team -equals BLUE\n  steps:\n  \
         - script: echo \"built by $(Agent.Name)\"\n",
    );
    let detail = wait_for_run(&api, "the build job", &[&agent], |d| {
        d.run.status == "completed"
    });
    let build = job(&detail, "build");
    assert_eq!(
        build.result.as_deref(),
        Some("succeeded"),
        "{detail:#?}\n{}",
        agent.log()
    );
    assert_eq!(
        build.agent.as_deref(),
        Some("remote-1"),
        "the built-in agents are in pool `default`, not `build`"
    );
    let logs = stdout(&client(
        dir.path(),
        &up,
        &["runs", "logs", &detail.run.id.to_string()],
    ));
    assert!(logs.contains("built by remote-1"), "{logs}");

    let listed = stdout(&client(dir.path(), &up, &["agents", "list", "--json"]));
    let agents: Vec<api::AgentSummary> = serde_json::from_str(&listed).unwrap();
    let remote = agents.iter().find(|a| a.name == "remote-1").unwrap();
    assert_eq!(
        (remote.pool.as_str(), remote.state.as_str()),
        ("build", "online")
    );
    assert_eq!(
        remote.capabilities.get("team").map(String::as_str),
        Some("blue")
    );
    assert_eq!(
        remote.capabilities.get("Agent.OS").map(String::as_str),
        Some("Linux")
    );
    assert!(remote.capabilities.contains_key("git"), "{remote:?}");
    assert_eq!(remote.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert!(agents.iter().any(|a| a.builtin && a.pool == "default"));
}

#[test]
fn a_job_goes_to_the_agent_of_its_pool_that_has_what_it_demands() {
    let dir = tempfile::tempdir().unwrap();
    let up = start_server(dir.path(), &["up", "--port", "0", "--no-demo"]);
    for name in ["with-java", "without-java"] {
        let token = registration_token(dir.path(), &up, "build");
        let out = register(dir.path(), &up, &token, "build", name, &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Two machines: one has java on its PATH (a system capability), neither has maven.
    let java_path = bare_path(dir.path(), "with-java", &["java"]);
    let java = run_agent_with_path(dir.path(), "with-java", java_path);
    let plain_path = bare_path(dir.path(), "without-java", &[]);
    let plain = run_agent_with_path(dir.path(), "without-java", plain_path);
    // Both agents are idle when the run is queued: only one of them may take the java job.
    let yaml = "jobs:\n\
        - job: compile\n  pool:\n    name: build\n    demands:\n    - java\n  steps:\n  - script: echo compiled\n\
        - job: package\n  pool:\n    name: build\n    demands: maven\n  steps:\n  - script: echo never\n";
    let api = push_pipeline(dir.path(), &up, "app", yaml);
    let detail = wait_for_run(&api, "the java job", &[&java, &plain], |d| {
        job(d, "compile").status == "completed" && job(d, "package").waiting_for.is_some()
    });
    let compile = job(&detail, "compile");
    let logs = stdout(&client(
        dir.path(),
        &up,
        &["runs", "logs", &detail.run.id.to_string()],
    ));
    assert_eq!(
        compile.result.as_deref(),
        Some("succeeded"),
        "{logs}\n{}",
        java.log()
    );
    assert_eq!(compile.agent.as_deref(), Some("with-java"));
    let package = job(&detail, "package");
    assert_eq!(package.status, "queued");
    assert_eq!(
        package.waiting_for.as_deref(),
        Some("an agent: no agent in pool `build` has `maven`")
    );
    // The CLI and the run page say it too.
    let shown = stdout(&client(
        dir.path(),
        &up,
        &["runs", "show", &detail.run.id.to_string()],
    ));
    assert!(
        shown.contains("waiting for an agent: no agent in pool `build` has `maven`"),
        "{shown}"
    );
    let page = api.get_text(&format!("/runs/{}", detail.run.id)).unwrap();
    assert!(
        page.contains("no agent in pool `build` has `maven`"),
        "{page}"
    );
}

/// `lockgate server` without built-in agents whose leases last 3 s without a heartbeat.
fn server_without_builtin_agents(dir: &Path) -> Up {
    std::fs::write(
        dir.join("server.toml"),
        "data_dir = \"srv\"\nport = 0\nbuiltin_agent = false\nlease_seconds = 3\n",
    )
    .unwrap();
    start_server(dir, &["server", "--config", "server.toml"])
}

/// Registers agent `name` in pool `ops` through the CLI.
fn register_in_ops(dir: &Path, up: &Up, name: &str) {
    let token = registration_token(dir, up, "ops");
    let out = register(dir, up, &token, "ops", name, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn listed_agents(dir: &Path, up: &Up) -> Vec<api::AgentSummary> {
    serde_json::from_str(&stdout(&client(dir, up, &["agents", "list", "--json"]))).unwrap()
}

#[test]
fn a_disabled_agent_leases_nothing_until_enabled_and_a_removed_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let up = server_without_builtin_agents(dir.path());
    register_in_ops(dir.path(), &up, "ops-1");
    let disabled = client(dir.path(), &up, &["agents", "disable", "ops-1"]);
    assert_eq!(disabled.status.code(), Some(0));
    assert_eq!(
        client(dir.path(), &up, &["agents", "disable", "nobody"])
            .status
            .code(),
        Some(2),
        "an unknown agent is the caller's mistake"
    );
    let agent = run_agent(dir.path(), "ops-1");
    let api = push_pipeline(
        dir.path(),
        &up,
        "app",
        "pool: ops\nsteps:\n- script: echo drained\n",
    );
    let detail = wait_for_run(&api, "the reason a disabled pool waits", &[&agent], |d| {
        d.jobs[0].waiting_for.is_some()
    });
    assert_eq!(detail.jobs[0].status, "queued");
    let reason = detail.jobs[0].waiting_for.clone().unwrap();
    assert!(
        reason.contains("every agent in pool `ops`") && reason.contains("disabled"),
        "{reason}"
    );
    // Connected, but not leasing.
    let ops = listed_agents(dir.path(), &up);
    assert_eq!(ops[0].state, "disabled");
    assert!(ops[0].current_job.is_none());
    let page = api.get_text("/agents").unwrap();
    let row = &page[page
        .find("data-agent=\"ops-1\"")
        .expect("the agents page lists it")..];
    assert!(
        row[..row.find("</tr>").unwrap()].contains("disabled"),
        "{page}"
    );
    assert!(row.contains("action=\"/agents/ops-1/enable\""), "{page}");
    std::thread::sleep(Duration::from_millis(500));
    let runs: Vec<api::Run> = api.get_json("/api/v1/runs").unwrap();
    assert_eq!(runs[0].status, "queued", "a disabled agent takes no job");

    assert_eq!(
        client(dir.path(), &up, &["agents", "enable", "ops-1"])
            .status
            .code(),
        Some(0)
    );
    let detail = wait_for_run(&api, "the run on the enabled agent", &[&agent], |d| {
        d.run.status == "completed"
    });
    assert_eq!(detail.jobs[0].agent.as_deref(), Some("ops-1"));
    assert_eq!(detail.run.result.as_deref(), Some("succeeded"));

    let removed = client(dir.path(), &up, &["agents", "remove", "ops-1"]);
    assert_eq!(removed.status.code(), Some(0));
    assert!(listed_agents(dir.path(), &up).is_empty());
    // Its token no longer works: the agent is told so when it asks for work.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !agent.log().contains("401") {
        assert!(Instant::now() < deadline, "{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_lost_agents_job_fails_with_a_reason_and_the_queued_job_goes_to_another_agent() {
    let dir = tempfile::tempdir().unwrap();
    let up = server_without_builtin_agents(dir.path());
    register_in_ops(dir.path(), &up, "lost");
    register_in_ops(dir.path(), &up, "spare");
    let mut lost = run_agent(dir.path(), "lost");
    let yaml = "pool: ops\njobs:\n\
        - job: long\n  steps:\n  - script: echo started; sleep 20\n\
        - job: next\n  steps:\n  - script: echo next ran\n";
    let api = push_pipeline(dir.path(), &up, "app", yaml);
    let detail = wait_for_run(&api, "the long job's first step", &[&lost], |d| {
        let long = job(d, "long");
        long.status == "running" && long.steps.iter().any(|s| s.name.contains("sleep"))
    });
    assert_eq!(job(&detail, "long").agent.as_deref(), Some("lost"));
    assert_eq!(
        job(&detail, "next").status,
        "queued",
        "one job at a time per agent"
    );
    let listed = listed_agents(dir.path(), &up);
    let held = listed.iter().find(|a| a.name == "lost").unwrap();
    assert_eq!(held.current_job, Some(job(&detail, "long").id));
    assert_eq!(held.current_run, Some(detail.run.id));

    // The machine goes away mid-job.
    lost.child.kill().unwrap();
    lost.child.wait().unwrap();
    let spare = run_agent(dir.path(), "spare");
    let detail = wait_for_run(&api, "the end of the run", &[&spare], |d| {
        d.run.status == "completed"
    });
    let long = job(&detail, "long");
    assert_eq!(long.result.as_deref(), Some("failed"));
    let next = job(&detail, "next");
    assert_eq!(next.result.as_deref(), Some("succeeded"));
    assert_eq!(next.agent.as_deref(), Some("spare"));
    let logs = stdout(&client(
        dir.path(),
        &up,
        &["runs", "logs", &detail.run.id.to_string()],
    ));
    assert!(
        logs.contains(
            "The agent `lost` stopped responding (no heartbeat for 3 s); the job failed."
        ),
        "{logs}"
    );
    assert!(logs.contains("next ran"), "{logs}");
}

#[test]
fn a_job_survives_a_server_restart_in_the_middle_of_its_step_with_its_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = server_on_port(dir.path(), 0);
    register_in_ops(dir.path(), &up, "steady");
    let agent = run_agent(dir.path(), "steady");
    let yaml = "pool: ops\nsteps:\n\
        - script: for i in $(seq 1 20); do echo tick $i; sleep 0.5; done\n\
        - script: echo second step ran\n";
    let api = push_pipeline(dir.path(), &up, "app", yaml);
    let logs_of =
        |up: &Up, run: i64| stdout(&client(dir.path(), up, &["runs", "logs", &run.to_string()]));
    // The step has printed its first lines (and the server stored them) and goes on printing.
    let deadline = Instant::now() + Duration::from_secs(120);
    let run_id = loop {
        let runs: Vec<api::Run> = api.get_json("/api/v1/runs").unwrap();
        if let Some(run) = runs.first()
            && logs_of(&up, run.id).contains("tick 2")
        {
            break run.id;
        }
        assert!(Instant::now() < deadline, "{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    };

    // The server dies without a word and, a while later, comes back on the same data folder and
    // port. The step printed on meanwhile.
    let port = up.url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let token = up.token.clone();
    up.child.kill().unwrap();
    up.child.wait().unwrap();
    drop(up);
    std::thread::sleep(Duration::from_millis(1500));
    let mut again = server_on_port(dir.path(), port);
    again.token = token;
    let detail: api::RunDetail = api.get_json(&format!("/api/v1/runs/{run_id}")).unwrap();
    assert_eq!(
        detail.jobs[0].status, "running",
        "the restart happened while the step ran: {detail:#?}"
    );
    let detail = wait_for_run(&api, "the end of the run", &[&agent], |d| {
        d.run.status == "completed"
    });
    assert_eq!(
        detail.run.result.as_deref(),
        Some("succeeded"),
        "{detail:#?}\n{}",
        agent.log()
    );
    assert_eq!(detail.jobs[0].agent.as_deref(), Some("steady"));
    assert!(
        agent.log().contains("cannot send events, keeping"),
        "the agent held the lines printed while the server was away: {}",
        agent.log()
    );
    let logs = logs_of(&again, run_id);
    let mut expected: Vec<String> = (1..=20).map(|i| format!("tick {i}")).collect();
    expected.push("second step ran".into());
    // The lines the steps printed (not the script text shown in the step headers).
    let printed: Vec<&str> = logs
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.contains("echo ")
                && (line.ends_with("second step ran")
                    || line
                        .rsplit_once("tick ")
                        .is_some_and(|(_, n)| n.parse::<u32>().is_ok()))
        })
        .collect();
    assert_eq!(
        printed.len(),
        expected.len(),
        "every line once: {printed:?}\n{logs}"
    );
    for (line, want) in printed.iter().zip(&expected) {
        assert!(
            line.ends_with(want.as_str()),
            "in order: {printed:?}\n{logs}"
        );
    }
    assert!(!logs.contains("stopped"), "{logs}");
}

/// `lockgate server` without built-in agents on `port` (0: any free port), over the same data
/// folder every time.
fn server_on_port(dir: &Path, port: u16) -> Up {
    std::fs::write(
        dir.join("server.toml"),
        format!("data_dir = \"srv\"\nport = {port}\nbuiltin_agent = false\n"),
    )
    .unwrap();
    if port == 0 {
        start_server(dir, &["server", "--config", "server.toml"])
    } else {
        crate::server::start_another_server(dir, &["server", "--config", "server.toml"], &[])
    }
}
