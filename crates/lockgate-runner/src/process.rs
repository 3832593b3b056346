//! Child processes for steps: each runs in its own process group; its stdout and stderr are read as lines
//! (in batches, to keep per-line overhead low); cancellation and timeouts send SIGTERM to the whole group,
//! wait a grace period, then SIGKILL. A background process that keeps the pipes open after the direct
//! child exited cannot hang the step: reading stops after a short drain period. Each step is the leader
//! of its own session (no controlling terminal) and gets SIGKILL when the thread that started it dies
//! (`PR_SET_PDEATHSIG`); in a [`Sandbox`] the whole tree dies with it (bwrap's PID namespace).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

use crate::masking::SecretMasker;
use crate::sandbox::Sandbox;

/// A cancellation flag shared by the orchestrator, the job and its steps. Cloning shares the flag.
/// Canceling asks running processes to stop (SIGTERM, then SIGKILL after the grace period); forcing (a
/// second Ctrl-C) kills them at once.
#[derive(Debug, Clone)]
pub struct CancelSignal {
    /// 0 running, 1 canceled, 2 forced.
    sender: std::sync::Arc<watch::Sender<u8>>,
}

impl Default for CancelSignal {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelSignal {
    pub fn new() -> Self {
        Self {
            sender: std::sync::Arc::new(watch::channel(0).0),
        }
    }

    pub fn cancel(&self) {
        self.sender.send_if_modified(|level| {
            let changed = *level == 0;
            *level = (*level).max(1);
            changed
        });
    }

    /// Cancels and skips the grace period: processes still running are killed now.
    pub fn force(&self) {
        self.sender.send_replace(2);
    }

    pub fn is_canceled(&self) -> bool {
        *self.sender.borrow() >= 1
    }

    pub fn is_forced(&self) -> bool {
        *self.sender.borrow() >= 2
    }

    /// Resolves once the signal is canceled (immediately if it already is).
    pub async fn canceled(&self) {
        let mut receiver = self.sender.subscribe();
        let _ = receiver.wait_for(|level| *level >= 1).await;
    }

    /// Resolves once the signal is forced.
    pub async fn forced(&self) {
        let mut receiver = self.sender.subscribe();
        let _ = receiver.wait_for(|level| *level >= 2).await;
    }
}

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    /// The complete environment of the child (nothing is inherited implicitly).
    pub env: Vec<(String, String)>,
}

/// Limits applied while a process runs.
#[derive(Debug, Clone)]
pub struct ProcessLimits {
    /// Stop the process after this long (SIGTERM, grace, SIGKILL).
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL (the job's `cancelTimeoutInMinutes`).
    pub kill_grace: Duration,
    /// How long to keep reading the pipes after the direct child exited.
    pub drain_grace: Duration,
    /// The job's secrets: a line longer than the split length is masked before it is cut, so that a
    /// secret straddling the cut is never passed on in two harmless-looking halves.
    pub masker: Option<SecretMasker>,
}

impl Default for ProcessLimits {
    fn default() -> Self {
        Self {
            timeout: None,
            kill_grace: Duration::from_secs(5 * 60),
            drain_grace: Duration::from_millis(500),
            masker: None,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessEnd {
    /// Exited on its own with this code (a signal death is reported as 128 + signal).
    Exited(i32),
    /// Stopped because the timeout elapsed.
    TimedOut,
    /// Stopped because the cancel signal fired.
    Canceled,
}

/// The longest line passed on in one piece; longer output is split.
const MAX_LINE: usize = 64 * 1024;

/// Starts `spec`, passes every output line to `on_lines` (in order per stream, batched), and returns how
/// it ended. `on_lines` runs on the caller's task, so it may hold `&mut` state.
pub async fn run_process(
    spec: &ProcessSpec,
    limits: &ProcessLimits,
    cancel: &CancelSignal,
    on_lines: impl FnMut(Stream, Vec<String>),
) -> std::io::Result<(ProcessEnd, Option<u32>)> {
    run_process_in(None, spec, limits, cancel, on_lines).await
}

/// Where a step process runs: on the machine as it is, or in a sandbox whose only writable folder is
/// `writable` (the job's workspace).
#[derive(Debug, Clone, Copy)]
pub struct Confinement<'a> {
    pub sandbox: &'a Sandbox,
    pub writable: &'a std::path::Path,
}

/// [`run_process`], inside `confinement` when one is given.
pub async fn run_process_in(
    confinement: Option<Confinement<'_>>,
    spec: &ProcessSpec,
    limits: &ProcessLimits,
    cancel: &CancelSignal,
    mut on_lines: impl FnMut(Stream, Vec<String>),
) -> std::io::Result<(ProcessEnd, Option<u32>)> {
    let wrapped;
    let spec = match confinement {
        Some(confinement) => {
            wrapped = confinement.sandbox.wrap(spec, confinement.writable);
            &wrapped
        }
        None => spec,
    };
    // bwrap itself dies on SIGTERM and takes the sandbox with it at once; a stop asks the processes
    // inside first and spares the group leader (bwrap) until the grace period ends.
    let term = if confinement.is_some() {
        Signal::TermMembers
    } else {
        Signal::Term
    };
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    detach_and_tie_to_parent(&mut command);
    let mut child = command.spawn()?;
    let pid = child.id();
    let (sender, mut receiver) = mpsc::channel::<(Stream, Vec<String>)>(64);
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(tokio::spawn(read_lines(
            stdout,
            Stream::Stdout,
            sender.clone(),
            limits.masker.clone(),
        )));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(tokio::spawn(read_lines(
            stderr,
            Stream::Stderr,
            sender.clone(),
            limits.masker.clone(),
        )));
    }
    drop(sender);

    let deadline = limits
        .timeout
        .map(|timeout| tokio::time::Instant::now() + timeout);
    let sleep_until_deadline = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep_until_deadline);
    let mut stop_reason: Option<ProcessEnd> = None;
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut pipes_open = true;
    let status = loop {
        let kill_sleep = async {
            match kill_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = child.wait() => break status?,
            batch = receiver.recv(), if pipes_open => match batch {
                Some((stream, lines)) => on_lines(stream, lines),
                None => pipes_open = false,
            },
            _ = cancel.canceled(), if stop_reason.is_none() => {
                stop_reason = Some(ProcessEnd::Canceled);
                signal_group(pid, term);
                kill_at = Some(tokio::time::Instant::now() + limits.kill_grace);
            }
            _ = &mut sleep_until_deadline, if stop_reason.is_none() => {
                stop_reason = Some(ProcessEnd::TimedOut);
                signal_group(pid, term);
                kill_at = Some(tokio::time::Instant::now() + limits.kill_grace);
            }
            _ = kill_sleep => {
                signal_group(pid, Signal::Kill);
                kill_at = None;
            }
            _ = cancel.forced(), if kill_at.is_some() => {
                signal_group(pid, Signal::Kill);
                kill_at = None;
            }
        }
    };

    // The direct child is gone. Drain what is buffered; give writers that still hold the pipes (a
    // background grandchild) a short grace period, then stop reading.
    let drain_deadline = tokio::time::Instant::now() + limits.drain_grace;
    while pipes_open {
        tokio::select! {
            batch = receiver.recv() => match batch {
                Some((stream, lines)) => on_lines(stream, lines),
                None => pipes_open = false,
            },
            _ = tokio::time::sleep_until(drain_deadline) => break,
        }
    }
    for reader in readers {
        reader.abort();
    }
    if let Some(reason) = stop_reason {
        // Whatever is left of the group after a stop goes too (a stop is a stop of the whole group).
        signal_group(pid, Signal::Kill);
        return Ok((reason, pid));
    }
    Ok((ProcessEnd::Exited(exit_code(&status)), pid))
}

/// How a task probes a program on the job's behalf (`python --version` while looking for installed
/// tools): exactly like a step process, in the job's sandbox when there is one and with the step's
/// environment, because the program may be one a step wrote into the workspace.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The sandbox and the job's workspace (its writable folder); None runs the probe directly.
    pub confinement: Option<(Sandbox, PathBuf)>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
}

/// The longest a probe may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

impl Probe {
    /// Runs `program args`; its stdout followed by its stderr when it exits with 0, else None.
    pub async fn output(&self, program: &std::path::Path, args: &[&str]) -> Option<String> {
        let spec = ProcessSpec {
            program: program.to_path_buf(),
            args: args.iter().map(|arg| arg.to_string()).collect(),
            cwd: self.cwd.clone(),
            env: self.env.clone(),
        };
        let spec = match &self.confinement {
            Some((sandbox, writable)) => sandbox.wrap(&spec, writable),
            None => spec,
        };
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .current_dir(&spec.cwd)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        detach_and_tie_to_parent(&mut command);
        let output = tokio::time::timeout(PROBE_TIMEOUT, command.output())
            .await
            .ok()?
            .ok()?;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        output.status.success().then_some(text)
    }
}

/// Makes the child the leader of a new session (its own process group, no controlling terminal, so
/// it cannot type into the terminal of whoever started the server) and asks the kernel to SIGKILL it
/// when the thread that started it dies, so that a killed supervisor leaves no step behind.
#[allow(unsafe_code)]
fn detach_and_tie_to_parent(command: &mut Command) {
    #[cfg(unix)]
    {
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
        // system calls (setsid, prctl, getppid); it allocates nothing and takes no locks.
        unsafe {
            command.pre_exec(move || {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                #[cfg(target_os = "linux")]
                {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                        .map_err(std::io::Error::from)?;
                    // The parent may have died between fork and prctl: then do not start at all.
                    if u32::try_from(nix::unistd::getppid().as_raw()).ok() != Some(parent) {
                        return Err(std::io::Error::from(std::io::ErrorKind::Interrupted));
                    }
                }
                #[cfg(not(target_os = "linux"))]
                let _ = parent;
                Ok(())
            });
        }
    }
    #[cfg(not(unix))]
    let _ = command;
}

#[derive(Clone, Copy)]
enum Signal {
    Term,
    /// SIGTERM to every member of the group except its leader.
    TermMembers,
    Kill,
}

fn signal_group(pid: Option<u32>, signal: Signal) {
    #[cfg(unix)]
    if let Some(pid) = pid.and_then(|pid| i32::try_from(pid).ok()) {
        use nix::sys::signal::{Signal as NixSignal, kill, killpg};
        let group = nix::unistd::Pid::from_raw(pid);
        match signal {
            Signal::Term => {
                let _ = killpg(group, NixSignal::SIGTERM);
            }
            Signal::TermMembers => {
                for member in group_members(pid).unwrap_or_default() {
                    let _ = kill(nix::unistd::Pid::from_raw(member), NixSignal::SIGTERM);
                }
            }
            Signal::Kill => {
                let _ = killpg(group, NixSignal::SIGKILL);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (pid, signal);
}

/// The live (not zombie) processes of group `group` other than its leader, read from `/proc`; None
/// where there is no `/proc`.
fn group_members(group: i32) -> Option<Vec<i32>> {
    let entries = std::fs::read_dir("/proc").ok()?;
    let members = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != group)
        .filter(|pid| {
            // `pid (comm) state ppid pgrp ...`; comm may contain spaces, so read after the last `)`.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
                    let state = fields.next()?;
                    let pgrp = fields.nth(1)?.parse::<i32>().ok()?;
                    Some(state != "Z" && pgrp == group)
                })
                .unwrap_or(false)
        })
        .collect();
    Some(members)
}

/// Whether group `group` still has a process that is not a zombie. Zombies count for `kill(2)`, and
/// the processes of a finished sandbox may linger as zombies until the machine's init reaps them.
#[cfg(unix)]
fn group_is_running(group: i32) -> bool {
    if nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group), None).is_err() {
        return false;
    }
    let leader_running = std::fs::read_to_string(format!("/proc/{group}/stat"))
        .ok()
        .and_then(|stat| Some(!stat[stat.rfind(')')? + 1..].trim_start().starts_with('Z')))
        .unwrap_or(false);
    leader_running || group_members(group).is_none_or(|members| !members.is_empty())
}

/// Stops what is left of a step's process group at the end of a job (SIGTERM, grace, SIGKILL), the way
/// the agent cleans up processes a job left behind.
pub async fn stop_process_group(pid: u32, grace: Duration) {
    #[cfg(unix)]
    {
        let Ok(group) = i32::try_from(pid) else {
            return;
        };
        if !group_is_running(group) {
            return;
        }
        signal_group(Some(pid), Signal::Term);
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if !group_is_running(group) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        signal_group(Some(pid), Signal::Kill);
    }
    #[cfg(not(unix))]
    let _ = (pid, grace);
}

fn exit_code(status: &std::process::ExitStatus) -> i32 {
    if let Some(code) = status.code() {
        return code;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return 128 + signal;
        }
    }
    1
}

async fn read_lines(
    mut pipe: impl AsyncRead + Unpin,
    stream: Stream,
    sender: mpsc::Sender<(Stream, Vec<String>)>,
    masker: Option<SecretMasker>,
) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut partial: Vec<u8> = Vec::new();
    let splitter = Splitter { masker };
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut lines = Vec::with_capacity(n / 32 + 1);
        let mut start = 0;
        for (index, byte) in buf[..n].iter().enumerate() {
            if *byte == b'\n' {
                if partial.is_empty() && index - start <= MAX_LINE {
                    // The common case: a whole line inside this read, copied once.
                    let line = &buf[start..index];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    lines.push(match std::str::from_utf8(line) {
                        Ok(text) => text.to_owned(),
                        Err(_) => String::from_utf8_lossy(line).into_owned(),
                    });
                    start = index + 1;
                    continue;
                }
                partial.extend_from_slice(&buf[start..index]);
                splitter.split(&mut partial, &mut lines, true);
                lines.push(take_line(&mut partial));
                start = index + 1;
            }
        }
        partial.extend_from_slice(&buf[start..n]);
        splitter.split(&mut partial, &mut lines, false);
        if !lines.is_empty() && sender.send((stream, lines)).await.is_err() {
            return;
        }
    }
    if !partial.is_empty() {
        let mut lines = Vec::new();
        splitter.split(&mut partial, &mut lines, true);
        lines.push(take_line(&mut partial));
        let _ = sender.send((stream, lines)).await;
    }
}

/// Cuts over-long lines into pieces of [`MAX_LINE`] bytes.
struct Splitter {
    masker: Option<SecretMasker>,
}

impl Splitter {
    /// Moves whole pieces off the front of `partial` into `lines`. With secrets, `partial` is masked
    /// first and a piece is cut only when at least the longest secret's length minus one byte follows
    /// the cut: a secret straddling the cut would then lie whole inside the masked text, so it was
    /// replaced. `complete` says that no more bytes will follow (the line ended).
    fn split(&self, partial: &mut Vec<u8>, lines: &mut Vec<String>, complete: bool) {
        let masker = self.masker.as_ref().filter(|masker| !masker.is_empty());
        let hold = match (masker, complete) {
            (Some(masker), false) => masker.longest().saturating_sub(1),
            _ => 0,
        };
        if partial.len() < MAX_LINE + hold || (complete && partial.len() <= MAX_LINE) {
            return;
        }
        if let Some(masker) = masker {
            mask_bytes(masker, partial);
        }
        while partial.len() >= MAX_LINE + hold && !(complete && partial.len() <= MAX_LINE) {
            let rest = partial.split_off(MAX_LINE);
            lines.push(take_line(partial));
            *partial = rest;
        }
    }
}

/// Masks the valid UTF-8 prefix of `bytes` in place; an incomplete character at the end stays raw
/// (the next read completes it).
fn mask_bytes(masker: &SecretMasker, bytes: &mut Vec<u8>) {
    let valid = match std::str::from_utf8(bytes) {
        Ok(text) => text.len(),
        Err(err) => err.valid_up_to(),
    };
    let Ok(text) = std::str::from_utf8(&bytes[..valid]) else {
        return;
    };
    if let std::borrow::Cow::Owned(masked) = masker.mask(text) {
        let mut out = masked.into_bytes();
        out.extend_from_slice(&bytes[valid..]);
        *bytes = out;
    }
}

fn take_line(bytes: &mut Vec<u8>) -> String {
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    match String::from_utf8(std::mem::take(bytes)) {
        Ok(text) => text,
        Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
    }
}
