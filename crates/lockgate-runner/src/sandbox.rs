//! Job isolation with bubblewrap (`bwrap`): each step process runs in fresh Linux namespaces that see the
//! job's workspace read-write, the rest of the file system read-only, a fresh `/tmp` and `/dev`, their own
//! PID, IPC and UTS namespaces, no capabilities, and an empty read-only folder (or an empty file) in
//! place of each hidden path (the server's data folder, what the administrator adds).
//! The network is shared (builds download things). docs/security.md describes what this does not cover.

use std::path::{Path, PathBuf};

use crate::process::ProcessSpec;

/// Why no sandbox can be used on this machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "bubblewrap (`bwrap`) is not installed; install it (Debian: apt-get install bubblewrap) or choose no job isolation explicitly"
    )]
    NotInstalled,
    #[error(
        "bubblewrap ({program}) cannot create a sandbox on this machine: {reason}; allow unprivileged user namespaces or run as root, or choose no job isolation explicitly"
    )]
    NotWorking { program: String, reason: String },
}

/// A working bubblewrap and the paths every sandbox hides.
#[derive(Debug, Clone)]
pub struct Sandbox {
    program: PathBuf,
    /// Absolute, symlink-free paths replaced by an empty tmpfs inside the sandbox.
    hidden: Vec<PathBuf>,
    version: String,
}

impl Sandbox {
    /// Finds `bwrap` on `PATH` and checks that it can start a sandbox here (namespaces may be forbidden
    /// in containers). `hidden` are folders and files no step may see (the data folder).
    pub fn detect(hidden: &[PathBuf]) -> Result<Sandbox, SandboxError> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let program = std::env::split_paths(&path)
            .map(|dir| dir.join("bwrap"))
            .find(|candidate| candidate.is_file())
            .ok_or(SandboxError::NotInstalled)?;
        Sandbox::with_program(&program, hidden)
    }

    /// Like [`Sandbox::detect`] with a given `bwrap` program.
    pub fn with_program(program: &Path, hidden: &[PathBuf]) -> Result<Sandbox, SandboxError> {
        let not_working = |reason: String| SandboxError::NotWorking {
            program: program.display().to_string(),
            reason,
        };
        let version = std::process::Command::new(program)
            .arg("--version")
            .output()
            .map_err(|err| not_working(err.to_string()))?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
        let sandbox = Sandbox {
            program: program.to_path_buf(),
            hidden: hidden.iter().map(|path| real_path(path)).collect(),
            version,
        };
        // The probe uses the same options as a step, so a machine that passes runs steps.
        let root =
            std::env::temp_dir().join(format!("lockgate-sandbox-probe-{}", std::process::id()));
        std::fs::create_dir_all(&root)
            .map_err(|err| not_working(format!("{}: {err}", root.display())))?;
        let probe = sandbox.wrap(
            &ProcessSpec {
                program: "true".into(),
                args: Vec::new(),
                cwd: root.clone(),
                env: vec![(
                    "PATH".into(),
                    "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into(),
                )],
            },
            &root,
        );
        let output = std::process::Command::new(&probe.program)
            .args(&probe.args)
            .env_clear()
            .envs(probe.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .output();
        let _ = std::fs::remove_dir(&root);
        let output = output.map_err(|err| not_working(err.to_string()))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
            return Err(not_working(if stderr.is_empty() {
                format!("the probe exited with {}", output.status)
            } else {
                stderr
            }));
        }
        Ok(sandbox)
    }

    /// `bubblewrap 0.8.0` (what `bwrap --version` printed).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The paths every sandbox hides.
    pub fn hidden(&self) -> &[PathBuf] {
        &self.hidden
    }

    /// The same process started inside a sandbox whose only writable folder is `writable` (the job's
    /// workspace). The environment stays exactly the spec's; the working folder must be inside what the
    /// sandbox shows.
    pub fn wrap(&self, spec: &ProcessSpec, writable: &Path) -> ProcessSpec {
        let writable = real_path(writable);
        let mut args: Vec<String> = [
            "--die-with-parent",
            "--unshare-all",
            "--share-net",
            "--cap-drop",
            "ALL",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        // A tmpfs needs an existing mount point outside /tmp (inside it, bwrap creates one).
        let hidden: Vec<&PathBuf> = self
            .hidden
            .iter()
            .filter(|hidden| hidden.is_dir() || hidden.starts_with("/tmp"))
            .filter(|hidden| !hidden.starts_with(&writable))
            .collect();
        for hidden in &hidden {
            args.extend(["--tmpfs".into(), path_arg(hidden)]);
        }
        // A hidden file (a key, a socket such as /run/docker.sock) becomes an empty /dev/null.
        for file in self
            .hidden
            .iter()
            .filter(|hidden| !hidden.starts_with("/tmp") && hidden.exists() && !hidden.is_dir())
        {
            args.extend(["--ro-bind".into(), "/dev/null".into(), path_arg(file)]);
        }
        args.extend(["--bind".into(), path_arg(&writable), path_arg(&writable)]);
        // Empty and read-only: nothing can be left there for a later step (the workspace, a mount of
        // its own, stays writable).
        for hidden in &hidden {
            args.extend(["--remount-ro".into(), path_arg(hidden)]);
        }
        args.extend([
            "--chdir".into(),
            path_arg(&real_path(&spec.cwd)),
            "--".into(),
        ]);
        args.push(spec.program.to_string_lossy().into_owned());
        args.extend(spec.args.iter().cloned());
        ProcessSpec {
            program: self.program.clone(),
            args,
            cwd: spec.cwd.clone(),
            env: spec.env.clone(),
        }
    }
}

/// SIGKILLs every sandbox still running whose writable folder lies under `root`, and returns how many
/// bubblewrap processes it found. A supervisor killed while bubblewrap was still setting a sandbox up can
/// leave one behind (bubblewrap ties its inner processes to its own life only once set up); an agent
/// calls this for its work folder when it starts, before it removes stale job folders. Linux only (reads
/// `/proc`); elsewhere it finds nothing.
pub fn kill_leftover_sandboxes(root: &Path) -> usize {
    let root = real_path(root);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for pid in entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
        let is_bwrap = args
            .first()
            .is_some_and(|program| program.ends_with(b"/bwrap") || *program == b"bwrap");
        // Our sandboxes bind exactly one folder, before `--chdir`; arguments after `--` are the step's.
        let options = args.split(|arg| *arg == b"--").next().unwrap_or_default();
        let binds_under_root = options.windows(2).any(|pair| {
            pair[0] == b"--bind" && Path::new(&*String::from_utf8_lossy(pair[1])).starts_with(&root)
        });
        if is_bwrap && binds_under_root {
            #[cfg(unix)]
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            killed += 1;
        }
    }
    killed
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The absolute path without symlinks when it exists (bind mounts follow links; the hidden folder must
/// be the real one), else the absolute path.
fn real_path(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// Environment variables of the server that steps still get, by name (also every `LC_*`): the search
/// path, the home folder, the user's name, the locale and time zone, and the proxy settings builds
/// need to reach the network. Everything else (tokens, `LOCKGATE_*`, database URLs) stays out.
pub const KEPT_SERVER_VARIABLES: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

/// The part of a server's environment that jobs start from (see [`KEPT_SERVER_VARIABLES`]).
pub fn scrubbed_environment(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    vars.into_iter()
        .filter(|(name, _)| {
            KEPT_SERVER_VARIABLES.contains(&name.as_str())
                || (name.starts_with("LC_") && name.len() > 3)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_keeps_only_the_listed_variables() {
        let env = scrubbed_environment([
            ("PATH".into(), "/bin".into()),
            ("HOME".into(), "/home/ci".into()),
            ("LC_ALL".into(), "C.UTF-8".into()),
            ("LOCKGATE_SECRET_KEY".into(), "k".into()),
            ("DATABASE_URL".into(), "postgres://x".into()),
            ("GITHUB_TOKEN".into(), "t".into()),
            ("LC_".into(), "x".into()),
        ]);
        let names: Vec<&str> = env.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["PATH", "HOME", "LC_ALL"]);
    }

    #[test]
    fn a_missing_program_is_reported_as_not_working() {
        let error = Sandbox::with_program(Path::new("/nonexistent/bwrap"), &[]).unwrap_err();
        assert!(
            matches!(error, SandboxError::NotWorking { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("no job isolation"), "{error}");
    }

    #[test]
    fn wrapped_steps_bind_the_workspace_and_hide_the_data_folder() {
        let sandbox = Sandbox {
            program: "/usr/bin/bwrap".into(),
            hidden: vec!["/tmp".into()],
            version: String::new(),
        };
        let spec = ProcessSpec {
            program: "bash".into(),
            args: vec!["-c".into(), "true".into()],
            cwd: "/nonexistent/ws/s".into(),
            env: vec![("PATH".into(), "/bin".into())],
        };
        let wrapped = sandbox.wrap(&spec, Path::new("/nonexistent/ws"));
        assert_eq!(wrapped.program, PathBuf::from("/usr/bin/bwrap"));
        let args = wrapped.args.join(" ");
        assert!(
            args.contains(
                "--tmpfs /tmp --tmpfs /tmp --bind /nonexistent/ws /nonexistent/ws --remount-ro /tmp"
            ),
            "{args}"
        );
        assert!(
            args.ends_with("--chdir /nonexistent/ws/s -- bash -c true"),
            "{args}"
        );
        assert_eq!(wrapped.env, spec.env);
    }
}
