//! SSH@0 and CopyFilesOverSSH@0 with the system's OpenSSH client (`ssh`, `sftp`) as child processes.
//! Inputs and defaults from Microsoft's task reference pages (tasks/reference/ssh-v0 and
//! copy-files-over-ssh-v0). The connection named by `sshEndpoint` reaches the job as variables
//! `<name>.Host`, `<name>.Port`, `<name>.Username`, `<name>.PrivateKey` and `<name>.Password` (the
//! server's service connections, or `--var-group` under `lockgate run`).
//!
//! Every connection runs with no configuration file (`-F /dev/null`), a per-job known_hosts file in the
//! job's temp folder (`StrictHostKeyChecking=accept-new`: the first key seen in a job is kept, a changed
//! one fails), the private key in a 0600 file and the password through a 0700 `SSH_ASKPASS` helper
//! (both in the temp folder, removed when the step ends, never printed).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use crate::events::TaskResult;
use crate::glob::{PatternSet, list_files};
use crate::job::StepContext;
use crate::process::ProcessSpec;
use crate::tasks::script::{find_program, script_file};
use crate::tasks::{Task, TaskError, TaskFuture, TaskRegistry};

pub fn register(registry: &mut TaskRegistry) {
    registry.register("SSH", 0, Arc::new(Ssh));
    registry.register("CopyFilesOverSSH", 0, Arc::new(CopyFilesOverSsh));
}

/// The environment variable the askpass helper prints (set for the ssh process only).
const PASSWORD_ENV: &str = "LOCKGATE_SSH_PASSWORD";

/// A connection's fields, read from the job's variables.
struct Endpoint {
    host: String,
    port: u16,
    username: String,
    private_key: Option<String>,
    password: Option<String>,
}

fn endpoint(step: &StepContext<'_, '_>) -> Result<Endpoint, TaskError> {
    let name = step.required_input(&["sshEndpoint"])?.trim().to_string();
    let field = |field: &str| {
        step.variable(&format!("{name}.{field}"))
            .map(str::trim_end)
            .filter(|value| !value.trim().is_empty())
            .map(str::to_string)
    };
    let required = |f: &str| {
        field(f).ok_or_else(|| {
            TaskError(format!(
                "SSH service connection `{name}`: variable {name}.{f} is not set (the server sets it \
                 from the connection; under `lockgate run` give it with --var-group, docs/run.md)"
            ))
        })
    };
    let host = required("Host")?.trim().to_string();
    let username = required("Username")?.trim().to_string();
    for (what, value) in [("host", &host), ("username", &username)] {
        if value.starts_with('-') || value.chars().any(|c| c.is_whitespace() || c == '@') {
            return Err(TaskError(format!(
                "SSH service connection `{name}`: {what} `{value}` is not valid"
            )));
        }
    }
    let port = match field("Port") {
        None => 22,
        Some(port) => port
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                TaskError(format!(
                    "SSH service connection `{name}`: port `{}` is not a number from 1 to 65535",
                    port.trim()
                ))
            })?,
    };
    let private_key = field("PrivateKey");
    let password = field("Password");
    if private_key.is_none() && password.is_none() {
        return Err(TaskError(format!(
            "SSH service connection `{name}` has neither a private key ({name}.PrivateKey) nor a \
             password ({name}.Password)"
        )));
    }
    Ok(Endpoint {
        host,
        port,
        username,
        private_key,
        password,
    })
}

/// How to reach one endpoint: the options every `ssh`/`sftp` call gets, and their environment.
struct Session {
    options: Vec<String>,
    env: Vec<(String, String)>,
    destination: String,
    /// `user@host:port`, for messages.
    shown: String,
}

/// `readyTimeout` (milliseconds, default 20000) as whole seconds for `ConnectTimeout`.
fn ready_timeout(step: &StepContext<'_, '_>) -> Result<u64, TaskError> {
    let text = step.input("readyTimeout").unwrap_or("20000").trim();
    let ms: u64 = text.parse().map_err(|_| {
        TaskError(format!(
            "input readyTimeout must be a number of milliseconds, not `{text}`"
        ))
    })?;
    Ok(ms.div_ceil(1000).max(1))
}

fn open_session(step: &mut StepContext<'_, '_>, endpoint: &Endpoint) -> Result<Session, TaskError> {
    let timeout = ready_timeout(step)?;
    let known_hosts = step.job.workspace.temp.join("ssh_known_hosts");
    let mut options: Vec<String> = vec!["-F".into(), "/dev/null".into()];
    let mut option = |value: String| {
        options.push("-o".into());
        options.push(value);
    };
    option("StrictHostKeyChecking=accept-new".into());
    option(format!("UserKnownHostsFile={}", known_hosts.display()));
    option("GlobalKnownHostsFile=/dev/null".into());
    // Errors only: ssh's notes ("Permanently added ... to the list of known hosts") would otherwise
    // reach the standard error stream and fail a step with failOnStdErr.
    option("LogLevel=ERROR".into());
    option(format!("ConnectTimeout={timeout}"));
    option(format!("Port={}", endpoint.port));
    option(format!("User={}", endpoint.username));
    option("IdentityAgent=none".into());
    option("IdentitiesOnly=yes".into());
    let mut env = Vec::new();
    let mut methods = Vec::new();
    if let Some(key) = &endpoint.private_key {
        let mut key = key.replace("\r\n", "\n");
        if !key.ends_with('\n') {
            key.push('\n');
        }
        let file = step.write_private_temp_file("key", key.as_bytes(), 0o600)?;
        option(format!("IdentityFile={}", file.display()));
        methods.push("publickey");
    }
    if let Some(password) = &endpoint.password {
        // ssh asks the helper for the password (SSH_ASKPASS_REQUIRE=force: even without a terminal);
        // BatchMode would turn password prompts off, so it stays off for password connections.
        let helper = step.write_private_temp_file(
            "askpass",
            format!("#!/bin/sh\nprintf '%s\\n' \"${PASSWORD_ENV}\"\n").as_bytes(),
            0o700,
        )?;
        env.push(("SSH_ASKPASS".into(), helper.display().to_string()));
        env.push(("SSH_ASKPASS_REQUIRE".into(), "force".into()));
        env.push((PASSWORD_ENV.into(), password.clone()));
        option("BatchMode=no".into());
        option("NumberOfPasswordPrompts=1".into());
        methods.push("password");
        methods.push("keyboard-interactive");
    } else {
        option("BatchMode=yes".into());
    }
    option(format!("PreferredAuthentications={}", methods.join(",")));
    Ok(Session {
        options,
        env,
        destination: endpoint.host.clone(),
        shown: format!("{}@{}:{}", endpoint.username, endpoint.host, endpoint.port),
    })
}

fn program(step: &StepContext<'_, '_>, name: &str) -> Result<PathBuf, TaskError> {
    find_program(&step.process_env(), name).ok_or_else(|| {
        TaskError(format!(
            "`{name}` was not found on PATH: the SSH tasks need the OpenSSH client (Debian package \
             openssh-client)"
        ))
    })
}

fn spec(
    step: &StepContext<'_, '_>,
    session: &Session,
    program: PathBuf,
    args: Vec<String>,
) -> ProcessSpec {
    let mut env = step.process_env();
    env.retain(|(name, _)| !session.env.iter().any(|(n, _)| n == name));
    env.extend(session.env.iter().cloned());
    ProcessSpec {
        program,
        args,
        cwd: step.job.workspace.temp.clone(),
        env,
    }
}

/// Runs `command` on the remote machine; stdout captured when `capture`, else logged.
async fn remote(
    step: &mut StepContext<'_, '_>,
    session: &Session,
    command: &str,
    tty: bool,
    capture: bool,
) -> Result<(Result<i32, TaskResult>, Vec<String>), TaskError> {
    let ssh = program(step, "ssh")?;
    let mut args = session.options.clone();
    args.push(if tty { "-tt".into() } else { "-T".into() });
    args.push(session.destination.clone());
    args.push(command.to_string());
    let spec = spec(step, session, ssh, args);
    if capture {
        step.run_process_capturing(&spec).await
    } else {
        Ok((step.run_process(&spec).await?, Vec::new()))
    }
}

/// Uploads `(local, remote)` files over one SFTP session (the remote folders must exist).
async fn upload(
    step: &mut StepContext<'_, '_>,
    session: &Session,
    files: &[(PathBuf, String)],
) -> Result<Result<(), TaskResult>, TaskError> {
    let mut batch = String::new();
    for (local, remote) in files {
        let local = local.display().to_string();
        if local.contains('\n') || remote.contains('\n') {
            return Err(TaskError(format!(
                "cannot copy a file whose name holds a line break: {local:?}"
            )));
        }
        batch.push_str(&format!(
            "put {} {}\n",
            sftp_quote(&local, true),
            sftp_quote(remote, false)
        ));
    }
    let file = step.write_temp_script("sftp", &batch)?;
    let sftp = program(step, "sftp")?;
    let mut args = session.options.clone();
    args.push("-q".into());
    args.push("-b".into());
    args.push(file.display().to_string());
    args.push(session.destination.clone());
    let spec = spec(step, session, sftp, args);
    match step.run_process(&spec).await? {
        Err(stopped) => Ok(Err(stopped)),
        Ok(0) => Ok(Ok(())),
        Ok(code) => {
            step.error(&format!(
                "copying files to {} over SFTP failed (sftp exited with code {code}){}",
                session.shown,
                ssh_failure_hint(code)
            ));
            Ok(Err(TaskResult::Failed))
        }
    }
}

/// A path quoted for an sftp batch line; `glob` escapes the wildcards sftp expands in local paths.
fn sftp_quote(path: &str, glob: bool) -> String {
    let mut out = String::from("\"");
    for c in path.chars() {
        if c == '"' || c == '\\' || (glob && matches!(c, '*' | '?' | '[')) {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A word quoted for the remote POSIX shell.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// A remote path as given: `~/x` is relative to the home folder, where ssh and sftp start.
fn remote_path(path: &str) -> String {
    let path = path.trim();
    match path {
        "" | "~" | "~/" => ".".into(),
        "/" => "/".into(),
        _ => {
            let path = path.strip_prefix("~/").unwrap_or(path);
            path.trim_end_matches('/').to_string()
        }
    }
}

fn ssh_failure_hint(code: i32) -> &'static str {
    if code == 255 {
        " (255 is ssh's own failure: the connection or the sign-in may have failed, see the lines above)"
    } else {
        ""
    }
}

/// A name for a file copied to the remote home folder for one step, unique across jobs.
fn remote_script_name(step: &StepContext<'_, '_>, base: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let base: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "./.lockgate-{}-{nanos}-{}-{base}",
        std::process::id(),
        step.index
    )
}

struct Ssh;

/// One remote command of an SSH@0 step, with the local file to copy first and its remote name.
struct RemoteRun {
    label: String,
    command: String,
    copy: Option<(PathBuf, String)>,
}

impl Task for Ssh {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let endpoint = endpoint(step)?;
            let mode = step
                .input("runOptions")
                .unwrap_or("commands")
                .trim()
                .to_ascii_lowercase();
            let fail_on_stderr = step.input_bool(&["failOnStdErr"], true)?;
            let tty = step.input_bool(&["interactiveSession"], false)?;
            // Since task version 0.278.0 `##vso` lines in the remote output are not run unless asked.
            step.logging_commands = step.input_bool(&["enableRemoteVsoCommands"], false)?;
            let _ = step.input_bool(&["interactiveKeyboardAuthentication"], false)?;
            let mut runs: Vec<RemoteRun> = Vec::new();
            match mode.as_str() {
                "commands" => {
                    let commands = step.required_input(&["commands"])?.to_string();
                    for line in commands.lines().map(str::trim).filter(|l| !l.is_empty()) {
                        runs.push(RemoteRun {
                            label: line.to_string(),
                            command: line.to_string(),
                            copy: None,
                        });
                    }
                }
                "script" => {
                    let file = script_file(step, "scriptPath")?;
                    let text = std::fs::read_to_string(&file)
                        .map_err(|e| TaskError(format!("cannot read {}: {e}", file.display())))?;
                    // The script runs on a Unix machine: Windows line endings would break it.
                    let local = step.write_temp_script("sh", &text.replace("\r\n", "\n"))?;
                    let base = file.file_name().unwrap_or_default().to_string_lossy();
                    let remote = remote_script_name(step, &base);
                    let args = step.input("args").unwrap_or("").trim().to_string();
                    let q = shell_quote(&remote);
                    let command =
                        format!("chmod +x {q} && {q} {args}; code=$?; rm -f {q}; exit $code");
                    runs.push(RemoteRun {
                        label: file.display().to_string(),
                        command,
                        copy: Some((local, remote)),
                    });
                }
                "inline" => {
                    let inline = step.required_input(&["inline"])?.replace("\r\n", "\n");
                    let interpreter = step
                        .input("interpreterCommand")
                        .unwrap_or("/bin/bash")
                        .trim()
                        .to_string();
                    let local = step.write_temp_script("sh", &inline)?;
                    let remote = remote_script_name(step, "inline.sh");
                    let q = shell_quote(&remote);
                    let command = format!("{interpreter} {q}; code=$?; rm -f {q}; exit $code");
                    runs.push(RemoteRun {
                        label: "the inline script".into(),
                        command,
                        copy: Some((local, remote)),
                    });
                }
                other => {
                    return Err(TaskError(format!(
                        "input runOptions must be commands, script or inline, not `{other}`"
                    )));
                }
            }
            let session = open_session(step, &endpoint)?;
            for RemoteRun {
                label,
                command,
                copy,
            } in runs
            {
                if let Some((local, remote)) = copy {
                    step.log(&format!("Copying {label} to {}", session.shown));
                    if let Err(stopped) = upload(step, &session, &[(local, remote)]).await? {
                        return Ok(stopped);
                    }
                }
                step.log(&format!("##[command]{label}"));
                step.stderr_seen = false;
                let (end, _) = remote(step, &session, &command, tty, false).await?;
                match end {
                    Err(stopped) => return Ok(stopped),
                    Ok(0) if fail_on_stderr && step.stderr_seen => {
                        step.error(&format!(
                            "`{label}` on {} wrote to the standard error stream (failOnStdErr is true)",
                            session.shown
                        ));
                        return Ok(TaskResult::Failed);
                    }
                    Ok(0) => {}
                    Ok(code) => {
                        step.error(&format!(
                            "`{label}` on {} exited with code {code}{}",
                            session.shown,
                            ssh_failure_hint(code)
                        ));
                        return Ok(TaskResult::Failed);
                    }
                }
            }
            Ok(TaskResult::Succeeded)
        })
    }
}

struct CopyFilesOverSsh;

fn positive_number(
    step: &StepContext<'_, '_>,
    name: &str,
    default: &str,
) -> Result<u64, TaskError> {
    let text = step.input(name).unwrap_or(default).trim();
    text.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        TaskError(format!(
            "input {name} must be a positive number, not `{text}`"
        ))
    })
}

impl Task for CopyFilesOverSsh {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let endpoint = endpoint(step)?;
            let source = match step.input("sourceFolder") {
                Some(dir) => step.resolve_path(dir),
                None => step.job.workspace.sources.clone(),
            };
            let contents = step.input("contents").unwrap_or("**").to_string();
            let target = remote_path(step.input("targetFolder").unwrap_or(""));
            if step.input_bool(&["isWindowsOnTarget"], false)? {
                return Err(TaskError(
                    "isWindowsOnTarget: true is not supported: Lockgate copies over SSH to Linux and \
                     other Unix machines only"
                        .into(),
                ));
            }
            let clean = step.input_bool(&["cleanTargetFolder"], false)?;
            let clean_hidden = step.input_bool(&["cleanHiddenFilesInTarget"], false)?;
            let overwrite = step.input_bool(&["overwrite"], true)?;
            let fail_on_empty = step.input_bool(&["failOnEmptySource"], false)?;
            let flatten = step.input_bool(&["flattenFolders"], false)?;
            // Validated; the files go over one SFTP session (docs/compat.md).
            positive_number(step, "concurrentUploads", "10")?;
            if let Some(delay) = step.input("delayBetweenUploads") {
                delay.trim().parse::<u64>().map_err(|_| {
                    TaskError(format!(
                        "input delayBetweenUploads must be a number of milliseconds, not `{delay}`"
                    ))
                })?;
            }
            if !source.is_dir() {
                return Err(TaskError(format!(
                    "source folder not found: {}",
                    source.display()
                )));
            }
            let patterns = PatternSet::new(&contents);
            let files: Vec<(String, PathBuf)> = list_files(&source)
                .map_err(|e| TaskError(format!("cannot list {}: {e}", source.display())))?
                .into_iter()
                .filter(|(relative, _)| patterns.matches(relative))
                .collect();
            if files.is_empty() {
                if fail_on_empty {
                    return Err(TaskError(format!(
                        "no files matching `{}` in {} (failOnEmptySource is true)",
                        contents.trim(),
                        source.display()
                    )));
                }
                step.warning(&format!(
                    "no files matching `{}` in {}; nothing to copy",
                    contents.trim(),
                    source.display()
                ));
                return Ok(TaskResult::Succeeded);
            }
            let session = open_session(step, &endpoint)?;
            let q_target = shell_quote(&target);
            let mut folders = BTreeSet::from([target.clone()]);
            let uploads: Vec<(String, PathBuf)> = files
                .into_iter()
                .map(|(relative, path)| {
                    let name = if flatten {
                        relative.rsplit('/').next().unwrap_or(&relative).to_string()
                    } else {
                        relative
                    };
                    (name, path)
                })
                .collect();
            for (name, _) in &uploads {
                let mut parts: Vec<&str> = name.split('/').collect();
                parts.pop();
                for depth in 1..=parts.len() {
                    folders.insert(format!("{target}/{}", parts[..depth].join("/")));
                }
            }
            // One remote command: clean, create the folders, and list what is there when existing
            // files must be kept.
            let mut command = String::new();
            if clean {
                if target == "/" {
                    return Err(TaskError("cleanTargetFolder on `/` is refused".into()));
                }
                let hidden = if clean_hidden { "" } else { " ! -name '.*'" };
                command.push_str(&format!(
                    "if [ -d {q_target} ]; then find {q_target} -mindepth 1 -maxdepth 1{hidden} \
                     -exec rm -rf -- {{}} + || exit $?; fi; "
                ));
            }
            let quoted: Vec<String> = folders.iter().map(|f| shell_quote(f)).collect();
            command.push_str(&format!("mkdir -p -- {} || exit $?", quoted.join(" ")));
            if !overwrite {
                command.push_str(&format!("; cd -- {q_target} && find . -type f"));
            }
            if clean {
                step.log(&format!("Cleaning {target} on {}", session.shown));
            }
            let (end, listed) = remote(step, &session, &command, false, true).await?;
            match end {
                Err(stopped) => return Ok(stopped),
                Ok(0) => {}
                Ok(code) => {
                    step.error(&format!(
                        "preparing {target} on {} failed with code {code}{}",
                        session.shown,
                        ssh_failure_hint(code)
                    ));
                    return Ok(TaskResult::Failed);
                }
            }
            let existing: BTreeSet<&str> = listed
                .iter()
                .map(|line| line.strip_prefix("./").unwrap_or(line))
                .collect();
            let mut skipped = 0;
            let mut batch = Vec::new();
            for (name, path) in &uploads {
                if !overwrite && existing.contains(name.as_str()) {
                    step.log(&format!(
                        "{name} already exists in {target}; skipped (overwrite is false)"
                    ));
                    skipped += 1;
                    continue;
                }
                batch.push((path.clone(), format!("{target}/{name}")));
            }
            if !batch.is_empty()
                && let Err(stopped) = upload(step, &session, &batch).await?
            {
                return Ok(stopped);
            }
            step.log(&format!(
                "Copied {} files from {} to {target} on {} ({skipped} skipped)",
                batch.len(),
                source.display(),
                session.shown
            ));
            Ok(TaskResult::Succeeded)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_for_the_remote_shell_and_sftp() {
        assert_eq!(shell_quote("a b'c"), "'a b'\\''c'");
        assert_eq!(sftp_quote("a \"b\"*.txt", true), "\"a \\\"b\\\"\\*.txt\"");
        assert_eq!(sftp_quote("x*", false), "\"x*\"");
        assert_eq!(remote_path(""), ".");
        assert_eq!(remote_path("~/site"), "site");
        assert_eq!(remote_path("/srv/site"), "/srv/site");
        assert_eq!(remote_path("/srv/site/"), "/srv/site");
        assert_eq!(remote_path("/"), "/");
    }
}
