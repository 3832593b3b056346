//! Child processes: output lines, exit codes, cancellation of the whole process group, SIGTERM-ignoring
//! steps, background grandchildren holding stdout, and timeouts.

use std::time::{Duration, Instant};

use lockgate_runner::process::{CancelSignal, ProcessEnd, Stream, run_process};

use crate::helpers::{alive, bash, quick_limits, wait_for_file};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn lines_arrive_in_order_with_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let spec = bash(
        dir.path(),
        "for i in 1 2 3; do echo out$i; done; echo err >&2; printf 'no-newline'; exit 7",
    );
    let mut out = Vec::new();
    let mut err = Vec::new();
    let (end, _) = runtime()
        .block_on(run_process(
            &spec,
            &quick_limits(None),
            &CancelSignal::new(),
            |stream, lines| match stream {
                Stream::Stdout => out.extend(lines),
                Stream::Stderr => err.extend(lines),
            },
        ))
        .unwrap();
    assert_eq!(end, ProcessEnd::Exited(7));
    assert_eq!(out, ["out1", "out2", "out3", "no-newline"]);
    assert_eq!(err, ["err"]);
}

#[test]
fn cancel_stops_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("bg.pid");
    let spec = bash(dir.path(), "sleep 30 & echo $! > bg.pid; sleep 30");
    let cancel = CancelSignal::new();
    let trigger = cancel.clone();
    let watcher_file = pid_file.clone();
    let watcher = std::thread::spawn(move || {
        let pid = wait_for_file(&watcher_file, Duration::from_secs(10));
        trigger.cancel();
        pid.parse::<u32>().unwrap()
    });
    let start = Instant::now();
    let (end, _) = runtime()
        .block_on(run_process(&spec, &quick_limits(None), &cancel, |_, _| {}))
        .unwrap();
    let background = watcher.join().unwrap();
    assert_eq!(end, ProcessEnd::Canceled);
    assert!(start.elapsed() < Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !alive(background),
        "the background sleep {background} was left running"
    );
}

#[test]
fn a_step_ignoring_sigterm_is_killed_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let spec = bash(
        dir.path(),
        "trap '' TERM; echo ready > ready; while true; do sleep 0.05; done",
    );
    let cancel = CancelSignal::new();
    let trigger = cancel.clone();
    let ready = dir.path().join("ready");
    std::thread::spawn(move || {
        wait_for_file(&ready, Duration::from_secs(10));
        trigger.cancel();
    });
    let start = Instant::now();
    let (end, pid) = runtime()
        .block_on(run_process(&spec, &quick_limits(None), &cancel, |_, _| {}))
        .unwrap();
    let elapsed = start.elapsed();
    assert_eq!(end, ProcessEnd::Canceled);
    // It survived SIGTERM, so it took at least the grace period, and SIGKILL ended it soon after.
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert!(!alive(pid.unwrap()));
}

#[test]
fn a_grandchild_holding_stdout_does_not_hang_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let spec = bash(
        dir.path(),
        "(sleep 30; echo late) & echo $! > bg.pid; echo done",
    );
    let mut lines = Vec::new();
    let start = Instant::now();
    let (end, _) = runtime()
        .block_on(run_process(
            &spec,
            &quick_limits(None),
            &CancelSignal::new(),
            |_, batch| lines.extend(batch),
        ))
        .unwrap();
    assert_eq!(end, ProcessEnd::Exited(0));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(lines, ["done"]);
    let background: u32 = wait_for_file(&dir.path().join("bg.pid"), Duration::from_secs(1))
        .parse()
        .unwrap();
    // The background process is still there (the job, not the step, cleans it up); stop it now.
    assert!(alive(background));
    runtime().block_on(lockgate_runner::process::stop_process_group(
        background,
        Duration::from_millis(200),
    ));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(background as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[test]
fn a_timeout_stops_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let spec = bash(dir.path(), "echo started; sleep 30");
    let mut lines = Vec::new();
    let start = Instant::now();
    let (end, _) = runtime()
        .block_on(run_process(
            &spec,
            // Long enough for bash to start and print on a loaded machine, far below the sleep.
            &quick_limits(Some(Duration::from_secs(2))),
            &CancelSignal::new(),
            |_, batch| lines.extend(batch),
        ))
        .unwrap();
    assert_eq!(end, ProcessEnd::TimedOut);
    assert!(start.elapsed() < Duration::from_secs(15));
    assert_eq!(lines, ["started"]);
}

#[test]
fn very_long_lines_are_split() {
    let dir = tempfile::tempdir().unwrap();
    let spec = bash(dir.path(), "head -c 200000 /dev/zero | tr '\\0' x; echo");
    let mut lines = Vec::new();
    runtime()
        .block_on(run_process(
            &spec,
            &quick_limits(None),
            &CancelSignal::new(),
            |_, batch| lines.extend(batch),
        ))
        .unwrap();
    assert_eq!(lines.iter().map(String::len).sum::<usize>(), 200000);
    assert!(lines.iter().all(|line| line.len() <= 64 * 1024));
}

#[test]
fn forcing_skips_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let spec = bash(
        dir.path(),
        "trap '' TERM; echo ready > ready; while true; do sleep 0.05; done",
    );
    let cancel = CancelSignal::new();
    let trigger = cancel.clone();
    let ready = dir.path().join("ready");
    std::thread::spawn(move || {
        wait_for_file(&ready, Duration::from_secs(10));
        trigger.cancel();
        std::thread::sleep(Duration::from_millis(200));
        trigger.force();
    });
    let mut limits = quick_limits(None);
    limits.kill_grace = Duration::from_secs(60);
    let start = Instant::now();
    let (end, pid) = runtime()
        .block_on(run_process(&spec, &limits, &cancel, |_, _| {}))
        .unwrap();
    assert_eq!(end, ProcessEnd::Canceled);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(cancel.is_forced() && cancel.is_canceled());
    assert!(!alive(pid.unwrap()));
}
