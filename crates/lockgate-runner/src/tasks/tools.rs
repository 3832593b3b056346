//! Tool installers that select what is already installed and never download: UsePythonVersion@0,
//! NodeTool@0, UseNode@1, UseDotNet@2, GoTool@0, JavaToolInstaller@0 and NuGetToolInstaller@1. Every one
//! looks in the agent's tool cache first (`<Agent.ToolsDirectory>/<tool>/<version>/<arch>`, see
//! [`cached_tools`]), then on PATH. A matching installation goes first on PATH for later steps; with none, the
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
    registry.register("GoTool", 0, Arc::new(GoTool));
    registry.register("JavaToolInstaller", 0, Arc::new(JavaToolInstaller));
    registry.register("NuGetToolInstaller", 1, Arc::new(NuGetToolInstaller));
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
    PyPy,
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

/// The architecture folder the agent's tool cache uses for this machine (`x64`, `arm64`, `x86`).
pub fn tool_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "x86" => "x86",
        "arm" => "arm",
        _ => "x64",
    }
}

/// One installed tool in a tool cache: `<root>/<tool>/<version>/<arch>`.
#[derive(Debug, Clone)]
pub struct CachedTool {
    pub version_text: String,
    pub version: Vec<u64>,
    /// The `<arch>` folder.
    pub dir: PathBuf,
}

/// The tool cache folders, in order: the job's own `_tool` (`Agent.ToolsDirectory`), then the
/// `AGENT_TOOLSDIRECTORY` of the environment steps start from and of this process.
fn tool_cache_roots(step: &StepContext<'_, '_>) -> Vec<PathBuf> {
    let mut roots = vec![step.job.workspace.tools.clone()];
    if let Some(dir) = step.variable("Agent.ToolsDirectory") {
        roots.push(PathBuf::from(dir));
    }
    if let Some((_, dir)) = step
        .job
        .run
        .base_env
        .iter()
        .find(|(name, _)| name == "AGENT_TOOLSDIRECTORY")
    {
        roots.push(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("AGENT_TOOLSDIRECTORY") {
        roots.push(PathBuf::from(dir));
    }
    let mut unique: Vec<PathBuf> = Vec::new();
    for root in roots {
        if !root.as_os_str().is_empty() && !unique.contains(&root) {
            unique.push(root);
        }
    }
    unique
}

/// Every complete version of `tool` in the tool caches, newest first. As azure-pipelines-tool-lib's
/// `findLocalTool`/`findLocalToolVersions` (tool.ts): a version counts only when its `<arch>` folder and
/// the `<version>/<arch>.complete` marker file next to it both exist.
pub fn cached_tools(step: &StepContext<'_, '_>, tool: &str) -> Vec<CachedTool> {
    let arch = tool_arch();
    let mut found: Vec<CachedTool> = Vec::new();
    for root in tool_cache_roots(step) {
        let Ok(versions) = std::fs::read_dir(root.join(tool)) else {
            continue;
        };
        for version in versions.flatten() {
            let version_text = version.file_name().to_string_lossy().into_owned();
            let dir = version.path().join(arch);
            let marker = version.path().join(format!("{arch}.complete"));
            let Some(parsed) = parse_version(&version_text) else {
                continue;
            };
            if dir.is_dir() && marker.is_file() {
                found.push(CachedTool {
                    version_text,
                    version: parsed,
                    dir,
                });
            }
        }
    }
    found.sort_by(|a, b| compare(&b.version, &a.version));
    found
}

/// The newest complete version of `tool` in the tool caches that satisfies `spec`.
pub fn find_cached_tool(step: &StepContext<'_, '_>, tool: &str, spec: &str) -> Option<CachedTool> {
    cached_tools(step, tool)
        .into_iter()
        .find(|cached| version_matches(spec, &cached.version))
}

/// The folder of `dir/bin` or `dir` that holds one of `programs`.
pub fn program_dir(dir: &Path, programs: &[&str]) -> Option<PathBuf> {
    [dir.join("bin"), dir.to_path_buf()]
        .into_iter()
        .find(|folder| programs.iter().any(|p| folder.join(p).is_file()))
}

/// Where a tool was looked for, for "not found" messages.
pub fn searched_places(step: &StepContext<'_, '_>, tool: &str) -> String {
    let roots = tool_cache_roots(step)
        .iter()
        .map(|root| format!("{}/{tool}/<version>/{}", root.display(), tool_arch()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "the tool cache ({roots}, with a `{}.complete` marker) and PATH",
        tool_arch()
    )
}

/// The `bin` folders of every complete cached version of `tool` (the probe finds the programs inside).
fn tool_cache_dirs(step: &StepContext<'_, '_>, tool: &str) -> Vec<PathBuf> {
    cached_tools(step, tool)
        .into_iter()
        .flat_map(|cached| [cached.dir.join("bin"), cached.dir])
        .collect()
}

/// The probe for tools a step may have put in its tool cache: runs them as a step process would.
pub fn step_probe(step: &StepContext<'_, '_>) -> Probe {
    Probe {
        confinement: step
            .job
            .run
            .sandbox
            .clone()
            .map(|sandbox| (sandbox, step.job.workspace.root.clone())),
        env: step.process_env(),
        cwd: step.job.workspace.sources.clone(),
    }
}

/// The tool-cache folder and version specification of a UsePythonVersion `versionSpec`: `pypy2`, `pypy3`
/// and `pypy3.9` select the `PyPy` folder with Python version `2.x`, `3.x`, `3.9` (UsePythonVersion's
/// task reference: "pypy2 or pypy3" and `pypyX.Y`), anything else the `Python` folder.
pub fn python_spec(spec: &str) -> (&'static str, String) {
    let trimmed = spec.trim();
    match trimmed
        .to_ascii_lowercase()
        .strip_prefix("pypy")
        .map(str::to_string)
    {
        Some(rest) if rest.len() == 1 => ("PyPy", format!("{rest}.x")),
        Some(rest) if !rest.is_empty() => ("PyPy", rest),
        _ => ("Python", trimmed.to_string()),
    }
}

async fn installations(
    step: &StepContext<'_, '_>,
    kind: ToolKind,
    package_type: &str,
) -> Vec<Installation> {
    let env = step.process_env();
    let probe = step_probe(step);
    let mut found = Vec::new();
    match kind {
        ToolKind::Python | ToolKind::PyPy => {
            // Probe every candidate at once (version managers' shims are slow to start), and ask each for
            // its real executable so that a shim is never what goes on PATH.
            let pypy = matches!(kind, ToolKind::PyPy);
            let (folder, names): (&str, &[&str]) = if pypy {
                ("PyPy", &["pypy3", "pypy"])
            } else {
                ("Python", &["python3", "python"])
            };
            let mut extra = tool_cache_dirs(step, folder);
            if !pypy
                && let Some(root) = std::env::var_os("PYENV_ROOT")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")))
                && let Ok(versions) = std::fs::read_dir(root.join("versions"))
            {
                extra.extend(versions.flatten().map(|v| v.path().join("bin")));
            }
            let mut probes = tokio::task::JoinSet::new();
            let mut exes = candidates(&env, names, &extra);
            if pypy {
                // A PyPy tool-cache folder may hold only `python`: take it from those folders.
                for dir in tool_cache_dirs(step, folder) {
                    let python = dir.join("python");
                    if python.is_file() && !exes.contains(&python) {
                        exes.push(python);
                    }
                }
            }
            for exe in exes {
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
                    shown: format!(
                        "{} {version_text} ({})",
                        if pypy { "PyPy (Python" } else { "Python" },
                        exe.display()
                    ) + if pypy { ")" } else { "" },
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
            let mut extra = tool_cache_dirs(step, "dotnet");
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
            let mut kind = self.kind;
            let (spec, package_type, tool) = match self.kind {
                ToolKind::Python | ToolKind::PyPy => {
                    let (folder, spec) = python_spec(step.input("versionSpec").unwrap_or("3.x"));
                    if folder == "PyPy" {
                        kind = ToolKind::PyPy;
                    }
                    (spec, String::new(), folder)
                }
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
            let found = installations(step, kind, &package_type).await;
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
                    "no installed {tool} matches `{spec}` in {} (installed: {list}); Lockgate never downloads tools",
                    searched_places(
                        step,
                        match kind {
                            ToolKind::Python => "Python",
                            ToolKind::PyPy => "PyPy",
                            ToolKind::Node => "node",
                            ToolKind::DotNet => "dotnet",
                        }
                    )
                )));
            };
            let bin = best.bin.display().to_string();
            let shown = best.shown.clone();
            let add_to_path = step.input_bool(&["addToPath"], true)?;
            if add_to_path {
                step.job.prepend_path.push(bin.clone());
            }
            match kind {
                ToolKind::Python | ToolKind::PyPy => {
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

/// Finds a program for `tool`: the newest complete tool-cache version of `cache_name` matching `spec`
/// (its `bin` folder or the version folder itself), else `program` on PATH whose version (read from
/// `version_args` output by `parse`) matches. Returns the folder to put on PATH and the version shown.
async fn find_tool(
    step: &StepContext<'_, '_>,
    cache_name: &str,
    program: &str,
    spec: &str,
    version_args: &[&str],
    parse: fn(&str) -> Option<String>,
) -> Result<(PathBuf, String), TaskError> {
    if let Some(cached) = find_cached_tool(step, cache_name, spec)
        && let Some(bin) = program_dir(&cached.dir, &[program])
    {
        return Ok((bin, cached.version_text));
    }
    let mut seen = Vec::new();
    if let Some(exe) = find_program(&step.process_env(), program) {
        let probe = step_probe(step);
        let version = match output_of(&probe, &exe, version_args).await {
            Some(text) => parse(&text),
            None => None,
        };
        if let Some(version) = version {
            if parse_version(&version).is_some_and(|v| version_matches(spec, &v)) {
                let real = exe.canonicalize().unwrap_or(exe.clone());
                let bin = real.parent().map_or_else(PathBuf::new, Path::to_path_buf);
                return Ok((bin, version));
            }
            seen.push(format!("{program} {version} ({})", exe.display()));
        } else {
            seen.push(format!("{} (version unknown)", exe.display()));
        }
    }
    seen.extend(
        cached_tools(step, cache_name)
            .iter()
            .map(|c| format!("{cache_name} {} ({})", c.version_text, c.dir.display())),
    );
    Err(TaskError(format!(
        "no {cache_name} matching `{spec}` was found in {} (found: {}); Lockgate never downloads tools",
        searched_places(step, cache_name),
        if seen.is_empty() {
            "none".to_string()
        } else {
            seen.join("; ")
        }
    )))
}

/// `go version go1.22.1 linux/amd64` -> `1.22.1`.
fn go_version(text: &str) -> Option<String> {
    text.split_whitespace()
        .find_map(|word| {
            word.strip_prefix("go")
                .filter(|v| parse_version(v).is_some())
        })
        .map(str::to_string)
}

/// GoTool@0 (inputs `version`, default `1.10`, `goPath`, `goBin`; Microsoft's GoTool@0 reference): the Go
/// from the tool cache (`go/<version>/<arch>`) or PATH goes first on PATH, `GOROOT` is set to its root,
/// and `GOPATH`/`GOBIN` when given.
struct GoTool;

impl Task for GoTool {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let spec = step.input("version").unwrap_or("1.10").trim().to_string();
            let (bin, version) =
                find_tool(step, "go", "go", &spec, &["version"], go_version).await?;
            let root = if bin.ends_with("bin") {
                bin.parent().map_or_else(|| bin.clone(), Path::to_path_buf)
            } else {
                bin.clone()
            };
            step.job.prepend_path.push(bin.display().to_string());
            step.set_variable("GOROOT", &root.display().to_string(), false, false, false);
            for (input, variable) in [("goPath", "GOPATH"), ("goBin", "GOBIN")] {
                if let Some(value) = step.input(input).map(str::to_string) {
                    step.set_variable(variable, &value, false, false, false);
                }
            }
            step.log(&format!(
                "Using Go {version} ({}, first on PATH)",
                bin.display()
            ));
            Ok(TaskResult::Succeeded)
        })
    }
}

/// JavaToolInstaller@0 (inputs `versionSpec` default `8`, `jdkArchitectureOption` default `x64`,
/// `jdkSourceOption` AzureStorage/LocalDirectory/PreInstalled): PreInstalled uses the
/// `JAVA_HOME_<version>_<ARCH>` variable the hosted images define, else a complete tool-cache JDK
/// (`Java_*_jdk/<version>/<arch>` or `jdk/...`); it sets `JAVA_HOME` and puts its `bin` first on PATH.
/// The other sources download or unpack an archive, which Lockgate does not do.
struct JavaToolInstaller;

impl Task for JavaToolInstaller {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let spec = step.input("versionSpec").unwrap_or("8").trim().to_string();
            let arch = step
                .input("jdkArchitectureOption")
                .unwrap_or("x64")
                .trim()
                .to_string();
            let source = step
                .input("jdkSourceOption")
                .unwrap_or("PreInstalled")
                .trim()
                .to_string();
            if !source.eq_ignore_ascii_case("PreInstalled") {
                return Err(TaskError(format!(
                    "JavaToolInstaller@0 with jdkSourceOption `{source}` downloads or unpacks a JDK, which Lockgate never does; use jdkSourceOption: PreInstalled"
                )));
            }
            let variable = format!("JAVA_HOME_{spec}_{}", arch.to_ascii_uppercase());
            let from_variable = step
                .variable(&variable)
                .map(str::to_string)
                .or_else(|| {
                    step.process_env()
                        .into_iter()
                        .find(|(name, _)| *name == variable)
                        .map(|(_, value)| value)
                })
                // The machine's own definition (a server's agents pass steps a scrubbed environment,
                // as they do for AGENT_TOOLSDIRECTORY): a path, never a secret.
                .or_else(|| std::env::var(&variable).ok())
                .filter(|home| !home.trim().is_empty());
            let java_home = match from_variable {
                Some(home) => PathBuf::from(home),
                None => {
                    let cached = java_cache_folders(step)
                        .into_iter()
                        .find_map(|folder| find_cached_tool(step, &folder, &spec));
                    match cached {
                        Some(cached) => cached.dir,
                        None => {
                            return Err(TaskError(format!(
                                "no preinstalled JDK {spec} ({arch}): the variable {variable} is not set and {} holds no matching JDK; Lockgate never downloads tools",
                                searched_places(step, "Java_*_jdk")
                            )));
                        }
                    }
                }
            };
            let bin = java_home.join("bin");
            if !bin.join("java").is_file() {
                return Err(TaskError(format!(
                    "JDK {spec} at {} has no bin/java",
                    java_home.display()
                )));
            }
            let home = java_home.display().to_string();
            step.set_variable("JAVA_HOME", &home, false, false, false);
            step.job.prepend_path.push(bin.display().to_string());
            step.log(&format!(
                "Using JDK {spec} at {home} (JAVA_HOME, bin first on PATH)"
            ));
            Ok(TaskResult::Succeeded)
        })
    }
}

/// Tool-cache folders that hold JDKs: `jdk` and every `Java_*` folder (the hosted images' naming,
/// e.g. `Java_Temurin-Hotspot_jdk`).
fn java_cache_folders(step: &StepContext<'_, '_>) -> Vec<String> {
    let mut folders = vec!["jdk".to_string()];
    for root in tool_cache_roots(step) {
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("Java") && !folders.contains(&name) {
                    folders.push(name);
                }
            }
        }
    }
    folders
}

/// NuGetToolInstaller@1 (inputs `versionSpec`, `checkLatest`): on Linux NuGet is `nuget.exe` run by
/// mono. A complete tool-cache version (`NuGet/<version>/<arch>`) holding `nuget.exe` goes first on PATH
/// when `mono` is installed; else a `nuget` on PATH is used as it is.
struct NuGetToolInstaller;

impl Task for NuGetToolInstaller {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let spec = step.input("versionSpec").unwrap_or("").trim().to_string();
            let spec = if spec.is_empty() {
                "*".to_string()
            } else {
                spec
            };
            let env = step.process_env();
            let mono = find_program(&env, "mono");
            if let Some(cached) = find_cached_tool(step, "NuGet", &spec)
                && let Some(dir) = program_dir(&cached.dir, &["nuget.exe", "nuget"])
            {
                if dir.join("nuget").is_file() || mono.is_some() {
                    step.job.prepend_path.push(dir.display().to_string());
                    step.log(&format!(
                        "Using NuGet {} ({}, first on PATH)",
                        cached.version_text,
                        dir.display()
                    ));
                    return Ok(TaskResult::Succeeded);
                }
                return Err(TaskError(format!(
                    "NuGet {} is in the tool cache ({}) but running nuget.exe on Linux needs mono, which is not installed",
                    cached.version_text,
                    dir.display()
                )));
            }
            if let Some(nuget) = find_program(&env, "nuget") {
                step.log(&format!("Using nuget on PATH ({})", nuget.display()));
                return Ok(TaskResult::Succeeded);
            }
            Err(TaskError(format!(
                "no NuGet matching `{spec}` was found in {} (mono: {}); Lockgate never downloads tools",
                searched_places(step, "NuGet"),
                mono.map_or("not installed".to_string(), |m| m.display().to_string())
            )))
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

    #[test]
    fn pypy_specs_select_the_pypy_folder() {
        assert_eq!(python_spec("pypy3"), ("PyPy", "3.x".to_string()));
        assert_eq!(python_spec("PyPy3.9"), ("PyPy", "3.9".to_string()));
        assert_eq!(python_spec("pypy2"), ("PyPy", "2.x".to_string()));
        assert_eq!(python_spec(" 3.11 "), ("Python", "3.11".to_string()));
        assert_eq!(
            go_version("go version go1.22.1 linux/amd64").as_deref(),
            Some("1.22.1")
        );
    }
}
