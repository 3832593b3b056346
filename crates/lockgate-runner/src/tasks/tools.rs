//! Tool installers that select what is already installed and never download: UsePythonVersion@0,
//! NodeTool@0 and UseDotNet@2. A matching installation goes first on PATH for later steps; with none, the
//! step fails and lists what was found. Version specs: `3.x`, `3.11`, `18.x`, `8.0.x`, `>=3.8`, or exact.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::events::TaskResult;
use crate::job::StepContext;
use crate::process::Probe;
use crate::tasks::script::find_program;
use crate::tasks::{Task, TaskError, TaskFuture, TaskRegistry};

pub fn register(registry: &mut TaskRegistry) {
    registry.register(
        "UsePythonVersion",
        0,
        Arc::new(UseTool {
            kind: ToolKind::Python,
        }),
    );
    registry.register(
        "NodeTool",
        0,
        Arc::new(UseTool {
            kind: ToolKind::Node,
        }),
    );
    registry.register(
        "UseNode",
        1,
        Arc::new(UseTool {
            kind: ToolKind::Node,
        }),
    );
    registry.register(
        "UseDotNet",
        2,
        Arc::new(UseTool {
            kind: ToolKind::DotNet,
        }),
    );
}

/// Parses a dotted version (`v18.19.0`, `3.11.4`, `8.0.100-preview.1`) into numbers.
pub fn parse_version(text: &str) -> Option<Vec<u64>> {
    let text = text.trim().trim_start_matches(['v', 'V']);
    let core = text.split(['-', '+', ' ']).next()?;
    let parts: Option<Vec<u64>> = core.split('.').map(|p| p.parse::<u64>().ok()).collect();
    parts.filter(|p| !p.is_empty())
}

/// Whether `version` satisfies `spec`: `x`/`*` components match anything, missing components too,
/// `>=`/`>`/`<=`/`<` compare.
pub fn version_matches(spec: &str, version: &[u64]) -> bool {
    let spec = spec.trim();
    for (operator, accept) in [
        (">=", [false, true, true]),
        ("<=", [true, true, false]),
        (">", [false, false, true]),
        ("<", [true, false, false]),
    ] {
        if let Some(rest) = spec.strip_prefix(operator) {
            let Some(bound) = parse_version(rest) else {
                return false;
            };
            let ordering = compare(version, &bound);
            return accept[(ordering as i8 + 1) as usize];
        }
    }
    let spec = spec.trim_start_matches(['v', 'V', '=']);
    for (index, part) in spec.split('.').enumerate() {
        if part == "x" || part == "X" || part == "*" || part.is_empty() {
            return true;
        }
        let Ok(wanted) = part.parse::<u64>() else {
            return false;
        };
        if version.get(index) != Some(&wanted) {
            return false;
        }
    }
    true
}

fn compare(a: &[u64], b: &[u64]) -> std::cmp::Ordering {
    let len = a.len().max(b.len());
    for index in 0..len {
        let (x, y) = (
            a.get(index).copied().unwrap_or(0),
            b.get(index).copied().unwrap_or(0),
        );
        if x != y {
            return x.cmp(&y);
        }
    }
    std::cmp::Ordering::Equal
}

#[derive(Clone, Copy)]
enum ToolKind {
    Python,
    Node,
    DotNet,
}

/// One installation found on this machine.
struct Installation {
    version: Vec<u64>,
    shown: String,
    /// The folder to put first on PATH.
    bin: PathBuf,
}

/// Runs a candidate as a step process would (in the job's sandbox, with the step's environment): it
/// may be a program a step wrote into the tool cache.
async fn output_of(probe: &Probe, program: &Path, args: &[&str]) -> Option<String> {
    probe.output(program, args).await
}

fn path_dirs(env: &[(String, String)]) -> Vec<PathBuf> {
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    std::env::split_paths(path).collect()
}

/// Executables named like `prefix` or `prefix3.11` in the PATH folders and `extra` folders.
fn candidates(env: &[(String, String)], names: &[&str], extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in path_dirs(env).into_iter().chain(extra.iter().cloned()) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let matches = names.iter().any(|prefix| {
                name == *prefix
                    || name.strip_prefix(prefix).is_some_and(|rest| {
                        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit() || c == '.')
                    })
            });
            if matches {
                let path = entry.path();
                let canonical = path.canonicalize().unwrap_or(path.clone());
                if !found
                    .iter()
                    .any(|(_, c): &(PathBuf, PathBuf)| c == &canonical)
                    && find_program(env, &path.display().to_string()).is_some()
                {
                    found.push((path, canonical));
                }
            }
        }
    }
    found.into_iter().map(|(path, _)| path).collect()
}

fn tool_cache_dirs(step: &StepContext<'_, '_>, tool: &str) -> Vec<PathBuf> {
    let mut roots = vec![step.job.workspace.tools.clone()];
    if let Some(dir) = step.variable("Agent.ToolsDirectory") {
        roots.push(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("AGENT_TOOLSDIRECTORY") {
        roots.push(PathBuf::from(dir));
    }
    let mut dirs = Vec::new();
    for root in roots {
        let Ok(versions) = std::fs::read_dir(root.join(tool)) else {
            continue;
        };
        for version in versions.flatten() {
            for arch in ["x64", "arm64", ""] {
                dirs.push(version.path().join(arch).join("bin"));
                dirs.push(version.path().join(arch));
            }
        }
    }
    dirs
}

async fn installations(
    step: &StepContext<'_, '_>,
    kind: ToolKind,
    package_type: &str,
) -> Vec<Installation> {
    let env = step.process_env();
    let probe = Probe {
        confinement: step
            .job
            .run
            .sandbox
            .clone()
            .map(|sandbox| (sandbox, step.job.workspace.root.clone())),
        env: env.clone(),
        cwd: step.job.workspace.sources.clone(),
    };
    let mut found = Vec::new();
    match kind {
        ToolKind::Python => {
            // Probe every candidate at once (version managers' shims are slow to start), and ask each for
            // its real executable so that a shim is never what goes on PATH.
            let mut extra = tool_cache_dirs(step, "Python");
            if let Some(root) = std::env::var_os("PYENV_ROOT")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")))
                && let Ok(versions) = std::fs::read_dir(root.join("versions"))
            {
                extra.extend(versions.flatten().map(|v| v.path().join("bin")));
            }
            let mut probes = tokio::task::JoinSet::new();
            for exe in candidates(&env, &["python3", "python"], &extra) {
                // A version manager's `shims` folder only runs its selected version; the real interpreters
                // are found in its versions folder above.
                let in_shims = exe
                    .parent()
                    .and_then(Path::file_name)
                    .is_some_and(|name| name == "shims");
                let plain = exe
                    .file_name()
                    .is_some_and(|name| name == "python3" || name == "python");
                if in_shims && !plain {
                    continue;
                }
                let probe = probe.clone();
                probes.spawn(async move {
                    let script = "import sys, platform; print(platform.python_version()); print(sys.executable)";
                    (output_of(&probe, &exe, &["-c", script]).await, exe)
                });
            }
            while let Some(Ok((text, exe))) = probes.join_next().await {
                let Some(text) = text else { continue };
                let mut lines = text.lines();
                let (Some(version_text), Some(real)) = (lines.next(), lines.next()) else {
                    continue;
                };
                let Some(version) = parse_version(version_text) else {
                    continue;
                };
                let real = PathBuf::from(real.trim());
                let bin = real.parent().map_or_else(PathBuf::new, Path::to_path_buf);
                if found
                    .iter()
                    .any(|i: &Installation| i.bin == bin && i.version == version)
                {
                    continue;
                }
                found.push(Installation {
                    shown: format!("Python {version_text} ({})", exe.display()),
                    version,
                    bin,
                });
            }
        }
        ToolKind::Node => {
            let mut extra = tool_cache_dirs(step, "node");
            if let Some(home) = std::env::var_os("HOME")
                && let Ok(entries) =
                    std::fs::read_dir(PathBuf::from(home).join(".nvm/versions/node"))
            {
                extra.extend(entries.flatten().map(|e| e.path().join("bin")));
            }
            for exe in candidates(&env, &["node"], &extra) {
                if let Some(text) = output_of(&probe, &exe, &["--version"]).await
                    && let Some(version) = parse_version(text.trim())
                {
                    let bin = exe.parent().map_or_else(PathBuf::new, Path::to_path_buf);
                    found.push(Installation {
                        shown: format!("node {} ({})", text.trim(), exe.display()),
                        version,
                        bin,
                    });
                }
            }
        }
        ToolKind::DotNet => {
            let mut extra = Vec::new();
            if let Some(home) = std::env::var_os("HOME") {
                extra.push(PathBuf::from(home).join(".dotnet"));
            }
            extra.push(PathBuf::from("/usr/share/dotnet"));
            extra.push(PathBuf::from("/usr/lib/dotnet"));
            let flag = if package_type == "runtime" {
                "--list-runtimes"
            } else {
                "--list-sdks"
            };
            for exe in candidates(&env, &["dotnet"], &extra) {
                let Some(text) = output_of(&probe, &exe, &[flag]).await else {
                    continue;
                };
                let bin = exe
                    .canonicalize()
                    .unwrap_or(exe.clone())
                    .parent()
                    .map_or_else(PathBuf::new, Path::to_path_buf);
                for line in text.lines() {
                    // `8.0.100 [/usr/share/dotnet/sdk]` or `Microsoft.NETCore.App 8.0.0 [...]`
                    let mut words = line.split_whitespace();
                    let first = words.next().unwrap_or("");
                    let version_text = if package_type == "runtime" {
                        if first != "Microsoft.NETCore.App" {
                            continue;
                        }
                        words.next().unwrap_or("")
                    } else {
                        first
                    };
                    if let Some(version) = parse_version(version_text) {
                        found.push(Installation {
                            shown: format!(
                                ".NET {package_type} {version_text} ({})",
                                exe.display()
                            ),
                            version,
                            bin: bin.clone(),
                        });
                    }
                }
            }
        }
    }
    found
}

struct UseTool {
    kind: ToolKind,
}

impl Task for UseTool {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let (spec, package_type, tool) = match self.kind {
                ToolKind::Python => (
                    step.input("versionSpec").unwrap_or("3.x").to_string(),
                    String::new(),
                    "Python",
                ),
                ToolKind::Node => (
                    step.input_any(&["versionSpec", "version"])
                        .unwrap_or("6.x")
                        .to_string(),
                    String::new(),
                    "Node.js",
                ),
                ToolKind::DotNet => {
                    let kind = step
                        .input("packageType")
                        .unwrap_or("sdk")
                        .to_ascii_lowercase();
                    let spec = if step.input_bool(&["useGlobalJson"], false)? {
                        global_json_version(step)?
                    } else {
                        step.input("version").unwrap_or("").to_string()
                    };
                    if spec.is_empty() {
                        return Err(TaskError(
                            "UseDotNet@2 needs `version` (or useGlobalJson: true)".into(),
                        ));
                    }
                    (spec, kind, ".NET")
                }
            };
            let found = installations(step, self.kind, &package_type).await;
            let best = found
                .iter()
                .filter(|i| version_matches(&spec, &i.version))
                .max_by(|a, b| compare(&a.version, &b.version));
            let Some(best) = best else {
                let list = if found.is_empty() {
                    "none".to_string()
                } else {
                    found
                        .iter()
                        .map(|i| i.shown.clone())
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                return Err(TaskError(format!(
                    "no installed {tool} matches `{spec}` and Lockgate never downloads tools; installed: {list}"
                )));
            };
            let bin = best.bin.display().to_string();
            let shown = best.shown.clone();
            let add_to_path = step.input_bool(&["addToPath"], true)?;
            if add_to_path {
                step.job.prepend_path.push(bin.clone());
            }
            match self.kind {
                ToolKind::Python => {
                    let location = best
                        .bin
                        .parent()
                        .filter(|_| bin.ends_with("/bin"))
                        .map_or(bin.clone(), |p| p.display().to_string());
                    step.set_variable("pythonLocation", &location, false, false, false);
                }
                ToolKind::DotNet => step.set_variable("DOTNET_ROOT", &bin, false, false, false),
                ToolKind::Node => {}
            }
            step.log(&format!(
                "Using {shown}{}",
                if add_to_path { " (first on PATH)" } else { "" }
            ));
            Ok(TaskResult::Succeeded)
        })
    }
}

fn global_json_version(step: &StepContext<'_, '_>) -> Result<String, TaskError> {
    let dir = step.input("workingDirectory").map_or_else(
        || step.job.workspace.sources.clone(),
        |d| step.resolve_path(d),
    );
    let path = dir.join("global.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| TaskError(format!("cannot read {}: {e}", path.display())))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| TaskError(format!("{}: {e}", path.display())))?;
    value
        .get("sdk")
        .and_then(|sdk| sdk.get("version"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| TaskError(format!("{} has no sdk.version", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_specs() {
        let v = parse_version("v18.19.0").unwrap();
        assert!(version_matches("18.x", &v));
        assert!(version_matches("18", &v));
        assert!(version_matches(">=16", &v));
        assert!(!version_matches("<18", &v));
        assert!(!version_matches("20.x", &v));
        assert!(version_matches("18.19.0", &v));
        assert_eq!(parse_version("8.0.100-preview.1"), Some(vec![8, 0, 100]));
        assert_eq!(parse_version("abc"), None);
    }
}
