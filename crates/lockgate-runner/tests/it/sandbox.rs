//! Steps in the bubblewrap sandbox: a hostile step cannot see the hidden data folder or another job's
//! workspace, writes only its own workspace, gets a fresh /tmp and its own PID namespace; a canceled
//! sandboxed step still gets its SIGTERM grace; and a SIGKILLed supervisor leaves no step running,
//! sandboxed or not.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lockgate_runner::process::{
    CancelSignal, Confinement, ProcessEnd, ProcessSpec, run_process_in,
};
use lockgate_runner::sandbox::Sandbox;

use crate::helpers::{bash, quick_limits, wait_for_file};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn sandbox(hidden: &[PathBuf]) -> Sandbox {
    Sandbox::detect(hidden).expect("bubblewrap works here (.ci/run installs it)")
}

/// Runs `spec` in `sandbox` with `writable` as its workspace; returns how it ended and its stdout.
fn run_in(sandbox: &Sandbox, writable: &Path, spec: &ProcessSpec) -> (ProcessEnd, Vec<String>) {
    let mut out = Vec::new();
    let confinement = Confinement { sandbox, writable };
    let (end, _) = runtime()
        .block_on(run_process_in(
            Some(confinement),
            spec,
            &quick_limits(None),
            &CancelSignal::new(),
            |_, lines| out.extend(lines),
        ))
        .unwrap();
    (end, out)
}

#[test]
fn a_sandboxed_step_sees_only_its_own_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let workspace = data.join("work/job-1-1/w");
    let other = data.join("work/job-2-1/w/s");
    std::fs::create_dir_all(workspace.join("s")).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(data.join("lockgate.db"), "all the secrets").unwrap();
    std::fs::write(other.join("secret.txt"), "other job").unwrap();
    let host_tmp = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    // A file the administrator hides as well (outside /tmp, which is fresh anyway).
    let key = tempfile::NamedTempFile::new_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::write(key.path(), "key material").unwrap();
    let sandbox = sandbox(&[data.clone(), key.path().to_path_buf()]);
    let script = format!(
        r#"
        try() {{ if "$@" >/dev/null 2>&1; then echo "LEAK: $*"; else echo "denied: $1"; fi; }}
        try cat ../../../../lockgate.db
        try cat ../../../lockgate.db
        try cat {data}/lockgate.db
        try cat {other}/secret.txt
        try ls {data}/work/job-2-1
        try touch {data}/planted
        try cat {host_tmp}
        try touch /usr/lockgate-was-here
        echo "key: [$(cat {key})]"
        test -r /usr/bin/env && echo "outside: readable"
        echo mine > ../own.txt && echo "own: $(cat ../own.txt)"
        echo "pid: $$"
        echo "data entries: $(ls -A {data} | tr '\n' ' ')"
        "#,
        data = data.display(),
        other = other.display(),
        host_tmp = host_tmp.path().display(),
        key = key.path().display(),
    );
    let (end, out) = run_in(&sandbox, &workspace, &bash(&workspace.join("s"), &script));
    assert_eq!(end, ProcessEnd::Exited(0), "{out:?}");
    assert!(!out.iter().any(|line| line.starts_with("LEAK")), "{out:#?}");
    assert_eq!(
        out.iter().filter(|line| line.starts_with("denied")).count(),
        8,
        "{out:#?}"
    );
    assert!(out.contains(&"outside: readable".to_string()), "{out:?}");
    assert!(out.contains(&"key: []".to_string()), "{out:?}");
    assert!(out.contains(&"own: mine".to_string()), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(workspace.join("own.txt")).unwrap(),
        "mine\n"
    );
    assert!(!data.join("planted").exists());
    // Its own PID namespace: bash is one of the first processes there.
    let pid: u32 = out
        .iter()
        .find_map(|line| line.strip_prefix("pid: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(pid < 10, "pid {pid} is not in a fresh PID namespace");
    // The data folder shows only the path down to the job's own workspace.
    assert!(out.contains(&"data entries: work ".to_string()), "{out:?}");
}

#[test]
fn a_canceled_sandboxed_step_gets_its_sigterm_grace() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("w");
    std::fs::create_dir_all(&workspace).unwrap();
    let sandbox = sandbox(&[]);
    let spec = bash(
        &workspace,
        "trap 'echo stopping; sleep 0.1; echo stopped; exit 3' TERM; echo started > ready; sleep 30 & wait",
    );
    let cancel = CancelSignal::new();
    let trigger = cancel.clone();
    let ready = workspace.join("ready");
    let watcher = std::thread::spawn(move || {
        wait_for_file(&ready, Duration::from_secs(10));
        trigger.cancel();
    });
    let mut limits = quick_limits(None);
    limits.kill_grace = Duration::from_secs(5);
    let mut out = Vec::new();
    let started = Instant::now();
    let (end, _) = runtime()
        .block_on(run_process_in(
            Some(Confinement {
                sandbox: &sandbox,
                writable: &workspace,
            }),
            &spec,
            &limits,
            &cancel,
            |_, lines| out.extend(lines),
        ))
        .unwrap();
    watcher.join().unwrap();
    assert_eq!(end, ProcessEnd::Canceled);
    assert_eq!(out, ["stopping", "stopped"]);
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// The processes whose command line starts with `marker` (`sleep 300.N`: the sleeps themselves, not the
/// shells or sandboxes whose arguments mention them).
fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| {
                    String::from_utf8_lossy(&cmdline)
                        .replace('\0', " ")
                        .starts_with(marker)
                })
                .unwrap_or(false)
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
        })
        .collect()
}

const SUPERVISE: &str = "LOCKGATE_TEST_SUPERVISE";

/// In the supervisor role (this test binary started again with `SUPERVISE` set): runs the step and
/// never returns. In the test role: starts the supervisor, waits for the step, SIGKILLs the
/// supervisor and expects the step to be gone within a few seconds.
fn a_killed_supervisor_leaves_no_step(test: &str, sandboxed: bool, script: &str) {
    if let Ok(marker) = std::env::var(SUPERVISE) {
        let dir = PathBuf::from(std::env::var("LOCKGATE_TEST_DIR").unwrap());
        let script = script.replace("MARKER", &marker);
        let sandbox = sandboxed.then(|| sandbox(&[]));
        let confinement = sandbox.as_ref().map(|sandbox| Confinement {
            sandbox,
            writable: &dir,
        });
        let _ = runtime().block_on(run_process_in(
            confinement,
            &bash(&dir, &script),
            &quick_limits(None),
            &CancelSignal::new(),
            |_, _| {},
        ));
        panic!("the step ended on its own");
    }
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("300.{}{}", std::process::id(), u8::from(sandboxed));
    let mut supervisor = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture"])
        .env(SUPERVISE, &marker)
        .env("LOCKGATE_TEST_DIR", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(&format!("sleep {marker}")).is_empty() {
        assert!(Instant::now() < deadline, "the step did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    supervisor.kill().unwrap();
    supervisor.wait().unwrap();
    let killed = Instant::now();
    while !processes_with(&format!("sleep {marker}")).is_empty() {
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "the step outlived its SIGKILLed supervisor: {:?}",
            processes_with(&format!("sleep {marker}"))
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_supervisor_leaves_no_direct_step_process() {
    // Without a sandbox the kernel's parent-death signal reaches the direct child.
    a_killed_supervisor_leaves_no_step(
        "sandbox::a_killed_supervisor_leaves_no_direct_step_process",
        false,
        "exec sleep MARKER",
    );
}

#[test]
fn a_killed_supervisor_leaves_nothing_of_a_sandboxed_step() {
    // In the sandbox the whole tree goes, grandchildren in their own session included.
    a_killed_supervisor_leaves_no_step(
        "sandbox::a_killed_supervisor_leaves_nothing_of_a_sandboxed_step",
        true,
        "setsid sleep MARKER & sleep MARKER; echo done",
    );
}

#[test]
fn leftover_sandboxes_under_a_work_folder_are_killed() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let workspace = work.join("job-1-1/w");
    std::fs::create_dir_all(&workspace).unwrap();
    let sandbox = sandbox(&[]);
    let marker = format!("sleep 300.{}2", std::process::id());
    let spec = sandbox.wrap(&bash(&workspace, &format!("{marker}; true")), &workspace);
    // Started outside the runner, as a sandbox orphaned by a killed supervisor would be.
    let mut orphan = Command::new(&spec.program)
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(&marker).is_empty() {
        assert!(Instant::now() < deadline, "the sandbox did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Another folder's sandboxes are left alone.
    assert_eq!(
        lockgate_runner::sandbox::kill_leftover_sandboxes(&dir.path().join("other")),
        0
    );
    assert!(lockgate_runner::sandbox::kill_leftover_sandboxes(&work) >= 1);
    orphan.wait().unwrap();
    let killed = Instant::now();
    while !processes_with(&marker).is_empty() {
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "the leftover sandbox still runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_tool_a_step_planted_in_the_tool_cache_is_probed_inside_the_sandbox() {
    use lockgate_runner::events::TaskResult;
    use lockgate_runner::spec::{StepAction, StepSpec};

    use crate::helpers::{job, run_context, script, step_results};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let escaped = data.join("escaped");
    // A fake interpreter in the job's own tool cache that tries to write into the data folder when
    // UsePythonVersion asks it for its version.
    let plant = format!(
        "bin=$(Agent.ToolsDirectory)/Python/3.99.0/x64/bin; mkdir -p $bin\n\
         printf '#!/bin/sh\\ntouch {escaped} && echo escaped\\necho 3.99.0\\necho $0\\n' > $bin/python3\n\
         chmod +x $bin/python3",
        escaped = escaped.display()
    );
    let inputs = [("versionSpec".to_string(), "3.99".to_string())].into();
    let use_python = StepSpec::new(
        "use python",
        StepAction::Task {
            name: "UsePythonVersion".into(),
            major: 0,
            inputs,
        },
        "test.yml:2:1",
    );
    let spec = job(vec![script(None, &plant), use_python], Vec::new());
    let mut context = run_context(&data);
    context.sandbox = Some(sandbox(std::slice::from_ref(&data)));
    let sink = lockgate_runner::events::CollectingSink::default();
    let outcome = runtime().block_on(lockgate_runner::job::run_job(
        &context,
        &lockgate_runner::tasks::TaskRegistry::with_builtins(),
        &spec,
        &data.join("work/job-1-1"),
        &sink,
        &CancelSignal::new(),
    ));
    let events = sink.snapshot();
    assert_eq!(
        step_results(&events)[0],
        TaskResult::Succeeded,
        "{events:#?}"
    );
    assert!(
        !escaped.exists(),
        "the planted program ran outside the sandbox: {outcome:?}"
    );
}
