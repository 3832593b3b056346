//! An agent on another machine: registration with a one-time token, the credentials file it keeps
//! (owner-only, 0600) and the system capabilities it reports (`Agent.OS`, `Agent.OSArchitecture`,
//! `Agent.Version`, `Agent.ComputerName`, tools found on `PATH`), to which the user capabilities
//! given at registration are added.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lockgate_protocol::agent::{AgentInfo, RegisterAgent};
use serde::{Deserialize, Serialize};

use crate::ServerClient;

/// The version agents report (`Agent.Version`).
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The file in the agent's folder that holds its credentials.
pub const CREDENTIALS_FILE: &str = ".credentials.json";

/// What `lockgate agent register` stores and `lockgate agent run` reads.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    pub url: String,
    pub name: String,
    /// Its pool; empty for a target of an environment.
    #[serde(default)]
    pub pool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The environment it is a target of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    pub token: String,
    /// User capabilities (`--capability k=v`).
    #[serde(default)]
    pub capabilities: BTreeMap<String, String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("url", &self.url)
            .field("name", &self.name)
            .field("pool", &self.pool)
            .field("token", &"***")
            .finish_non_exhaustive()
    }
}

/// Why registering or reading the credentials failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{0}")]
    Client(#[from] crate::ClientError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

/// Where a registering agent goes: a pool, or an environment as a target with tags.
#[derive(Clone, Debug, PartialEq)]
pub enum Placement {
    Pool(String),
    Environment { name: String, tags: Vec<String> },
}

impl Placement {
    /// `pool `build`` or `environment `staging` (tags web, eu)`.
    pub fn describe(&self) -> String {
        match self {
            Placement::Pool(pool) => format!("pool `{pool}`"),
            Placement::Environment { name, tags } if tags.is_empty() => {
                format!("environment `{name}`")
            }
            Placement::Environment { name, tags } => {
                format!("environment `{name}` (tags {})", tags.join(", "))
            }
        }
    }
}

impl Credentials {
    /// What it serves, for the start line: its pool or its environment.
    pub fn placement(&self) -> String {
        match &self.environment {
            Some(environment) => format!("target of environment `{environment}`"),
            None => format!("of pool `{}`", self.pool),
        }
    }
}

/// Registers with the server and writes the credentials file into `dir` (created if missing),
/// readable by this user only. An existing credentials file is not replaced.
pub fn register(
    url: &str,
    token: &str,
    placement: &Placement,
    name: &str,
    capabilities: BTreeMap<String, String>,
    dir: &Path,
) -> Result<Credentials, RemoteError> {
    let path = dir.join(CREDENTIALS_FILE);
    let file_error = |message: String| RemoteError::File {
        path: path.clone(),
        message,
    };
    if path.exists() {
        return Err(file_error(
            "this folder holds an agent already; remove the file to register again".into(),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| RemoteError::File {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let (pool, environment, tags) = match placement {
        Placement::Pool(pool) => (pool.clone(), None, Vec::new()),
        Placement::Environment { name, tags } => (String::new(), Some(name.clone()), tags.clone()),
    };
    let registered = ServerClient::new(url, "").register(&RegisterAgent {
        token: token.to_string(),
        name: name.to_string(),
        pool,
        environment,
        tags,
    })?;
    let credentials = Credentials {
        url: url.trim_end_matches('/').to_string(),
        name: registered.name,
        pool: registered.pool,
        project: registered.project,
        environment: registered.environment,
        token: registered.token,
        capabilities,
    };
    let text = serde_json::to_string_pretty(&credentials).map_err(|e| file_error(e.to_string()))?;
    write_private(&path, text.as_bytes()).map_err(|e| file_error(e.to_string()))?;
    Ok(credentials)
}

/// Creates `path` with mode 0600 (on Unix) and writes `content`.
fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(content)?;
    file.sync_all()
}

/// Reads the credentials file of the agent folder `dir`; refuses one that others may read.
pub fn read_credentials(dir: &Path) -> Result<Credentials, RemoteError> {
    let path = dir.join(CREDENTIALS_FILE);
    let file_error = |message: String| RemoteError::File {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        file_error(format!(
            "{e} (register the agent first: `lockgate agent register --url URL --token T --pool NAME`)"
        ))
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .map_err(|e| file_error(e.to_string()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(file_error(format!(
                "others may read the agent's token (mode {:o}); `chmod 600` it",
                mode & 0o777
            )));
        }
    }
    serde_json::from_str(&text).map_err(|e| file_error(format!("not a credentials file: {e}")))
}

/// Tools looked for on `PATH`: the capability name and the executable. A capability's value is the
/// executable's path, as Azure Pipelines' agent reports them.
const TOOLS: &[(&str, &str)] = &[
    ("ant", "ant"),
    ("bash", "bash"),
    ("cargo", "cargo"),
    ("clang", "clang"),
    ("cmake", "cmake"),
    ("curl", "curl"),
    ("docker", "docker"),
    ("dotnet", "dotnet"),
    ("gcc", "gcc"),
    ("git", "git"),
    ("go", "go"),
    ("gradle", "gradle"),
    ("java", "java"),
    ("make", "make"),
    ("maven", "mvn"),
    ("node.js", "node"),
    ("npm", "npm"),
    ("pwsh", "pwsh"),
    ("python", "python"),
    ("python3", "python3"),
    ("sh", "sh"),
    ("svn", "svn"),
    ("yarn", "yarn"),
];

/// The first `name` on `path` (a `PATH`-style list) that is an executable file.
fn find_on_path(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// The capabilities of this machine, with `path` as the `PATH` searched for tools.
pub fn system_capabilities(name: &str, path: &std::ffi::OsStr) -> BTreeMap<String, String> {
    let computer = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let mut capabilities = BTreeMap::from([
        ("Agent.Name".to_string(), name.to_string()),
        (
            "Agent.OS".to_string(),
            lockgate_pipeline::plan::host_os().to_string(),
        ),
        (
            "Agent.OSArchitecture".to_string(),
            lockgate_pipeline::plan::host_architecture().to_string(),
        ),
        ("Agent.Version".to_string(), AGENT_VERSION.to_string()),
        ("Agent.ComputerName".to_string(), computer),
    ]);
    for (capability, executable) in TOOLS {
        if let Some(found) = find_on_path(executable, path) {
            capabilities.insert(capability.to_string(), found.display().to_string());
        }
    }
    capabilities
}

/// What the agent reports: the system capabilities, then the user ones (which win on a clash).
pub fn agent_info(name: &str, user: &BTreeMap<String, String>) -> AgentInfo {
    let mut capabilities = system_capabilities(name, &std::env::var_os("PATH").unwrap_or_default());
    capabilities.extend(user.iter().map(|(k, v)| (k.clone(), v.clone())));
    AgentInfo {
        version: AGENT_VERSION.to_string(),
        capabilities,
    }
}

/// Sets `stop` on SIGTERM or SIGINT (a service manager stopping the agent, or Ctrl-C): the agent
/// then finishes the job it runs and leases no other. A second signal ends the process at once.
pub fn stop_on_signals(stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return;
                };
                for round in 0..2 {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    if round == 0 {
                        eprintln!(
                            "agent: stopping after the current job (signal again to stop now)"
                        );
                        stop.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                std::process::exit(130);
            });
        });
    if let Err(error) = spawned {
        eprintln!("agent: cannot watch for signals: {error}");
    }
}

/// Parses `--capability k=v` (a bare `k` is `k=` with an empty value, enough for `exists`).
pub fn parse_capability(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once('=').unwrap_or((text, ""));
    let name = name.trim();
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(format!(
            "`{text}`: a capability is NAME=VALUE, the name without spaces"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_found_on_the_path_given_and_user_capabilities_win() {
        let dir = tempfile::tempdir().unwrap();
        let java = dir.path().join("java");
        std::fs::write(&java, "#!/bin/sh\n").unwrap();
        let plain = dir.path().join("mvn");
        std::fs::write(&plain, "not executable").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&java, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let found = system_capabilities("a1", dir.path().as_os_str());
        assert_eq!(found.get("java"), Some(&java.display().to_string()));
        assert!(
            !found.contains_key("maven"),
            "a file that is not executable is no tool"
        );
        assert_eq!(found.get("Agent.Name").map(String::as_str), Some("a1"));
        assert!(found.contains_key("Agent.OSArchitecture"));
        let user = BTreeMap::from([("Agent.OS".to_string(), "Custom".to_string())]);
        assert_eq!(agent_info("a1", &user).capabilities["Agent.OS"], "Custom");
        assert_eq!(
            parse_capability("gpu=a100").unwrap(),
            ("gpu".into(), "a100".into())
        );
        assert_eq!(
            parse_capability("java").unwrap(),
            ("java".into(), String::new())
        );
        assert!(parse_capability("=x").is_err());
    }

    #[test]
    fn credentials_are_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CREDENTIALS_FILE);
        let credentials = Credentials {
            url: "http://127.0.0.1:1".into(),
            name: "a1".into(),
            pool: "build".into(),
            project: None,
            environment: None,
            token: "lga_secret".into(),
            capabilities: BTreeMap::new(),
        };
        write_private(
            &path,
            serde_json::to_string(&credentials).unwrap().as_bytes(),
        )
        .unwrap();
        assert_eq!(read_credentials(dir.path()).unwrap(), credentials);
        assert!(!format!("{credentials:?}").contains("lga_secret"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let error = read_credentials(dir.path()).unwrap_err().to_string();
            assert!(error.contains("chmod 600"), "{error}");
        }
        let error = register(
            "http://127.0.0.1:1",
            "t",
            &Placement::Pool("build".into()),
            "a2",
            BTreeMap::new(),
            dir.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("holds an agent already"), "{error}");
    }
}
