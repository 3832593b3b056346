//! Task packages: a folder with `task.json` and a Node handler (the layout of Azure Pipelines tasks and of
//! `tfx build tasks upload`), run the way the agent runs them (microsoft/azure-pipelines-agent
//! `Handlers/Handler.cs`, `NodeHandler.cs`, `TaskRunner.cs` `GetHandlerData`):
//!
//! - the handler is the newest Node handler of `execution` that the `node` on the step's PATH can run
//!   (Node24, Node20_1, Node20, Node16, Node10, Node); its `target` runs as `node TARGET` in the handler's
//!   `workingDirectory` or `System.DefaultWorkingDirectory`;
//! - inputs become `INPUT_<NAME>` (task.json defaults first, then the step's inputs, aliases mapped to the
//!   input's name), non-secret variables are exported as for scripts and listed in `VSTS_PUBLIC_VARIABLES`,
//!   secret variables become `SECRET_<NAME>` listed in `VSTS_SECRET_VARIABLES` (azure-pipelines-task-lib
//!   moves them into its vault);
//! - the package is copied into the job's `_tasks/<Name>_<id>/<version>/` first, as the agent extracts
//!   task zips into its work folder, so that the job's sandbox sees it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::events::TaskResult;
use crate::job::StepContext;
use crate::process::{Probe, ProcessSpec};
use crate::tasks::script::find_program;
use crate::tasks::{Task, TaskError, TaskFuture, TaskRegistry};
use crate::variables::env_name;

/// Node handlers by preference (agent `TaskRunner.cs`: lower priority wins), with the oldest Node.js
/// major each one needs.
const NODE_HANDLERS: &[(&str, u32)] = &[
    ("Node24", 24),
    ("Node20_1", 20),
    ("Node20", 20),
    ("Node16", 16),
    ("Node10", 10),
    ("Node", 6),
];

/// Largest task.json accepted.
const MAX_TASK_JSON: u64 = 1 << 20;

/// One input declared in task.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInput {
    pub name: String,
    pub aliases: Vec<String>,
    pub default_value: Option<String>,
}

/// One `execution` handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskHandler {
    /// `Node20_1`, `PowerShell3`, ...
    pub kind: String,
    pub target: String,
    pub working_directory: Option<String>,
}

/// A task.json, reduced to what running the task needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDefinition {
    pub id: String,
    pub name: String,
    pub version: (u32, u32, u32),
    pub inputs: Vec<TaskInput>,
    pub execution: Vec<TaskHandler>,
}

impl TaskDefinition {
    /// `Name@Major.Minor.Patch`.
    pub fn label(&self) -> String {
        let (major, minor, patch) = self.version;
        format!("{}@{major}.{minor}.{patch}", self.name)
    }

    /// `Major.Minor.Patch`.
    pub fn version_text(&self) -> String {
        let (major, minor, patch) = self.version;
        format!("{major}.{minor}.{patch}")
    }

    /// Parses task.json text; errors name the field (`task.json: version.Major: ...`).
    pub fn parse(text: &str) -> Result<TaskDefinition, String> {
        // task.json files written on Windows often start with a byte-order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let value: Value =
            serde_json::from_str(text).map_err(|err| format!("not valid JSON: {err}"))?;
        let object = value.as_object().ok_or("the top level must be an object")?;
        let field = |name: &str| object.iter().find(|(k, _)| k.eq_ignore_ascii_case(name));
        let string = |name: &str| -> Result<String, String> {
            match field(name) {
                Some((_, Value::String(s))) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                Some((key, _)) => Err(format!("{key}: must be a non-empty string")),
                None => Err(format!("{name}: missing")),
            }
        };
        let id = string("id")?;
        let name = string("name")?;
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return Err(format!(
                "name: `{name}` may only hold letters, digits, `_`, `-` and `.`"
            ));
        }
        if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "id: `{id}` may only hold letters, digits, `-` and `_` (a GUID)"
            ));
        }
        let version = match field("version") {
            Some((_, Value::Object(version))) => {
                let part = |part: &str| -> Result<u32, String> {
                    let found = version.iter().find(|(k, _)| k.eq_ignore_ascii_case(part));
                    match found.map(|(_, v)| v) {
                        Some(Value::Number(n)) => n
                            .as_u64()
                            .and_then(|n| u32::try_from(n).ok())
                            .ok_or_else(|| format!("version.{part}: must be a whole number")),
                        Some(Value::String(s)) => s
                            .trim()
                            .parse::<u32>()
                            .map_err(|_| format!("version.{part}: `{s}` is not a whole number")),
                        Some(_) => Err(format!("version.{part}: must be a whole number")),
                        None => Err(format!("version.{part}: missing")),
                    }
                };
                (part("Major")?, part("Minor")?, part("Patch")?)
            }
            Some(_) => return Err("version: must be an object {Major, Minor, Patch}".into()),
            None => return Err("version: missing".into()),
        };
        let mut inputs = Vec::new();
        if let Some((_, list)) = field("inputs") {
            let list = list.as_array().ok_or("inputs: must be a list")?;
            for (index, input) in list.iter().enumerate() {
                let input = input
                    .as_object()
                    .ok_or_else(|| format!("inputs[{index}]: must be an object"))?;
                let get = |key: &str| input.iter().find(|(k, _)| k.eq_ignore_ascii_case(key));
                let input_name = match get("name") {
                    Some((_, Value::String(s))) if !s.trim().is_empty() => s.trim().to_string(),
                    _ => return Err(format!("inputs[{index}].name: missing")),
                };
                let aliases = match get("aliases") {
                    Some((_, Value::Array(items))) => items
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|s| s.trim().to_string())
                        .collect(),
                    Some(_) => return Err(format!("inputs[{index}].aliases: must be a list")),
                    None => Vec::new(),
                };
                let default_value = match get("defaultValue") {
                    Some((_, Value::String(s))) => Some(s.clone()),
                    Some((_, Value::Bool(b))) => Some(b.to_string()),
                    Some((_, Value::Number(n))) => Some(n.to_string()),
                    _ => None,
                };
                inputs.push(TaskInput {
                    name: input_name,
                    aliases,
                    default_value,
                });
            }
        }
        let mut execution = Vec::new();
        match field("execution") {
            Some((_, Value::Object(handlers))) => {
                for (kind, handler) in handlers {
                    let handler = handler
                        .as_object()
                        .ok_or_else(|| format!("execution.{kind}: must be an object"))?;
                    let get = |key: &str| {
                        handler
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(key))
                            .and_then(|(_, v)| v.as_str())
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                    };
                    let target =
                        get("target").ok_or_else(|| format!("execution.{kind}.target: missing"))?;
                    execution.push(TaskHandler {
                        kind: kind.clone(),
                        target,
                        working_directory: get("workingDirectory"),
                    });
                }
            }
            Some(_) => return Err("execution: must be an object of handlers".into()),
            None => return Err("execution: missing (the task has no handler to run)".into()),
        }
        if execution.is_empty() {
            return Err("execution: names no handler".into());
        }
        Ok(TaskDefinition {
            id,
            name,
            version,
            inputs,
            execution,
        })
    }

    /// The Node handlers of `execution`, most preferred first, with the Node.js major each needs.
    pub fn node_handlers(&self) -> Vec<(&TaskHandler, u32)> {
        NODE_HANDLERS
            .iter()
            .filter_map(|(kind, major)| {
                self.execution
                    .iter()
                    .find(|h| h.kind.eq_ignore_ascii_case(kind))
                    .map(|h| (h, *major))
            })
            .collect()
    }
}

/// A task package on disk: its folder and its task.json.
#[derive(Debug, Clone)]
pub struct TaskPackage {
    pub dir: PathBuf,
    pub definition: TaskDefinition,
}

impl TaskPackage {
    /// Reads `DIR/task.json`; errors name the file and the field.
    pub fn load(dir: &Path) -> Result<TaskPackage, String> {
        let file = dir.join("task.json");
        let size = std::fs::metadata(&file)
            .map_err(|err| format!("{}: {err}", file.display()))?
            .len();
        if size > MAX_TASK_JSON {
            return Err(format!(
                "{}: larger than {MAX_TASK_JSON} bytes",
                file.display()
            ));
        }
        let text =
            std::fs::read_to_string(&file).map_err(|err| format!("{}: {err}", file.display()))?;
        let definition =
            TaskDefinition::parse(&text).map_err(|err| format!("{}: {err}", file.display()))?;
        Ok(TaskPackage {
            dir: dir.to_path_buf(),
            definition,
        })
    }

    /// The task folders of `dir`: `dir` itself when it holds a task.json, else each sub-folder with one.
    pub fn load_all(dir: &Path) -> Result<Vec<TaskPackage>, String> {
        if dir.join("task.json").is_file() {
            return Ok(vec![TaskPackage::load(dir)?]);
        }
        let entries = std::fs::read_dir(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
        let mut folders: Vec<PathBuf> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.join("task.json").is_file())
            .collect();
        folders.sort();
        if folders.is_empty() {
            return Err(format!(
                "{}: no task folder (a folder with a task.json) found",
                dir.display()
            ));
        }
        folders
            .iter()
            .map(|folder| TaskPackage::load(folder))
            .collect()
    }
}

/// Registers each package under its name and its id with its major version; they replace built-in tasks
/// of the same name. Of two packages with the same name and major, the higher version wins.
pub fn register_packages(registry: &mut TaskRegistry, packages: Vec<TaskPackage>) {
    let mut packages = packages;
    packages.sort_by_key(|package| package.definition.version);
    for package in packages {
        let major = package.definition.version.0;
        let task: Arc<dyn Task> = Arc::new(NodeTask {
            package: Arc::new(package.clone()),
        });
        registry.register(&package.definition.name, major, task.clone());
        registry.register(&package.definition.id, major, task);
    }
}

/// A task from a package, run by its Node handler.
pub struct NodeTask {
    pub package: Arc<TaskPackage>,
}

impl Task for NodeTask {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move { run_node_task(step, &self.package).await })
    }
}

/// The major version in `node --version` output (`v20.20.2`).
fn node_major(version: &str) -> Option<u32> {
    version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

async fn run_node_task(
    step: &mut StepContext<'_, '_>,
    package: &TaskPackage,
) -> Result<TaskResult, TaskError> {
    let definition = &package.definition;
    let label = definition.label();
    let handlers = definition.node_handlers();
    if handlers.is_empty() {
        let kinds: Vec<&str> = definition
            .execution
            .iter()
            .map(|h| h.kind.as_str())
            .collect();
        return Err(TaskError(format!(
            "task {label} has no Node handler (execution: {}); Lockgate runs Node handlers only",
            kinds.join(", ")
        )));
    }
    let wanted = handlers
        .iter()
        .map(|(h, major)| format!("{} (Node.js {major} or newer)", h.kind))
        .collect::<Vec<_>>()
        .join(", ");
    let mut env = step.process_env();
    let Some(node) = find_program(&env, "node") else {
        return Err(TaskError(format!(
            "task {label} needs Node.js for its handler {wanted}, but `node` was not found on PATH"
        )));
    };
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
    let version = probe.output(&node, &["--version"]).await;
    let Some(installed) = version.as_deref().and_then(node_major) else {
        return Err(TaskError(format!(
            "task {label}: cannot tell the version of {} (`node --version` failed)",
            node.display()
        )));
    };
    let Some((handler, _)) = handlers.iter().find(|(_, major)| installed >= *major) else {
        return Err(TaskError(format!(
            "task {label} needs the handler {wanted}, but {} is {}",
            node.display(),
            version.as_deref().unwrap_or("").trim()
        )));
    };
    let task_dir = install(step, package)?;

    // Inputs: task.json defaults, then the step's inputs (an alias counts as the input's name).
    let mut inputs: Vec<(String, String)> = Vec::new();
    let mut set_input = |name: &str, value: String| match inputs
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        Some(entry) => entry.1 = value,
        None => inputs.push((name.to_string(), value)),
    };
    for input in &definition.inputs {
        if let Some(default) = &input.default_value {
            set_input(&input.name, step.job.variables.expand(default));
        }
    }
    for (given, value) in &step.inputs {
        let name = definition
            .inputs
            .iter()
            .find(|input| {
                input.name.eq_ignore_ascii_case(given)
                    || input.aliases.iter().any(|a| a.eq_ignore_ascii_case(given))
            })
            .map_or(given.as_str(), |input| input.name.as_str());
        set_input(name, value.clone());
    }
    let mut public = Vec::new();
    let mut secret = Vec::new();
    for variable in step.job.variables.iter() {
        if variable.secret {
            secret.push(variable.name.clone());
            env.push((
                format!("SECRET_{}", env_name(&variable.name)),
                variable.value.clone(),
            ));
        } else {
            public.push(variable.name.clone());
        }
    }
    env.retain(|(name, _)| !name.starts_with("INPUT_"));
    for (name, value) in inputs {
        env.push((format!("INPUT_{}", env_name(&name)), value));
    }
    env.push((
        "VSTS_PUBLIC_VARIABLES".into(),
        serde_json::to_string(&public).unwrap_or_else(|_| "[]".into()),
    ));
    env.push((
        "VSTS_SECRET_VARIABLES".into(),
        serde_json::to_string(&secret).unwrap_or_else(|_| "[]".into()),
    ));

    let current = task_dir.display().to_string();
    let target = handler.target.replace("$(currentDirectory)", &current);
    let target = task_dir.join(target);
    if !target.is_file() {
        return Err(TaskError(format!(
            "task {label}: the {} handler's target {} does not exist",
            handler.kind, handler.target
        )));
    }
    let cwd = match &handler.working_directory {
        Some(dir) => {
            let dir = step
                .job
                .variables
                .expand(&dir.replace("$(currentDirectory)", &current));
            step.resolve_path(&dir)
        }
        None => step.job.workspace.sources.clone(),
    };
    step.log(&format!(
        "Task {label} ({}): {} {}",
        handler.kind,
        node.display(),
        target.display()
    ));
    let spec = ProcessSpec {
        program: node,
        args: vec![target.display().to_string()],
        cwd,
        env,
    };
    match step.run_process(&spec).await? {
        Err(stopped) => Ok(stopped),
        Ok(0) => Ok(TaskResult::Succeeded),
        Ok(code) => {
            step.error(&format!("task {label} exited with code '{code}'."));
            Ok(TaskResult::Failed)
        }
    }
}

/// Copies the package into the job's `_tasks/<Name>_<id>/<version>/` (once per job: a `.completed`
/// marker, as the agent's) and returns that folder.
fn install(step: &StepContext<'_, '_>, package: &TaskPackage) -> Result<PathBuf, TaskError> {
    let definition = &package.definition;
    let dir = step
        .job
        .workspace
        .root
        .join("_tasks")
        .join(format!("{}_{}", definition.name, definition.id))
        .join(definition.version_text());
    let marker = dir.with_file_name(format!("{}.completed", definition.version_text()));
    if marker.is_file() {
        return Ok(dir);
    }
    let failed = |err: std::io::Error| {
        TaskError(format!(
            "cannot copy task {} into {}: {err}",
            definition.label(),
            dir.display()
        ))
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(failed)?;
    }
    copy_tree(&package.dir, &dir).map_err(failed)?;
    std::fs::write(&marker, b"").map_err(failed)?;
    Ok(dir)
}

/// Copies files, folders and symbolic links (as links) from `from` into the new folder `to`.
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            #[cfg(unix)]
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Largest number of entries a task package archive may hold.
const MAX_ARCHIVE_ENTRIES: usize = 100_000;

/// Packs the task folder `dir` (which must hold a valid task.json) into a zip, as `lockgate tasks upload`
/// sends it: files with their unix permissions, folders, and symbolic links as links (a link that leads out
/// of the folder is refused here already).
pub fn pack_package(dir: &Path) -> Result<(TaskDefinition, Vec<u8>), String> {
    let package = TaskPackage::load(dir)?;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        let mut entries = std::fs::read_dir(&folder)
            .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {e}", folder.display()))?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let path = entry.path();
            let relative = path
                .strip_prefix(dir)
                .map_err(|e| e.to_string())?
                .to_string_lossy()
                .replace('\\', "/");
            let failed = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
            let metadata = std::fs::symlink_metadata(&path).map_err(|e| failed(&e))?;
            #[cfg(unix)]
            let mode = std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()) & 0o777;
            #[cfg(not(unix))]
            let mode = 0o644;
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(mode);
            if metadata.file_type().is_symlink() {
                let target = std::fs::read_link(&path).map_err(|e| failed(&e))?;
                let target = target.to_string_lossy().replace('\\', "/");
                check_link(&relative, &target)?;
                zip.add_symlink(relative.as_str(), target.as_str(), options)
                    .map_err(|e| failed(&e))?;
            } else if metadata.is_dir() {
                zip.add_directory(relative.as_str(), options)
                    .map_err(|e| failed(&e))?;
                stack.push(path);
            } else if metadata.is_file() {
                zip.start_file(relative.as_str(), options)
                    .map_err(|e| failed(&e))?;
                let mut file = std::fs::File::open(&path).map_err(|e| failed(&e))?;
                std::io::copy(&mut file, &mut zip).map_err(|e| failed(&e))?;
            }
        }
    }
    let bytes = zip.finish().map_err(|e| e.to_string())?.into_inner();
    Ok((package.definition, bytes))
}

/// A safe relative path of an archive entry: `/`-separated normal parts only (no `..`, `.`, empty part,
/// absolute path, drive letter or backslash).
fn check_entry_path(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.contains('\\')
        || name.contains('\0')
        || name.contains(':')
        || name
            .trim_end_matches('/')
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        return Err(format!(
            "entry `{name}`: not a relative path inside the task folder"
        ));
    }
    Ok(())
}

/// A symbolic link at `name` pointing at `target` must stay inside the task folder.
fn check_link(name: &str, target: &str) -> Result<(), String> {
    let escapes =
        || format!("entry `{name}`: symbolic link to `{target}` leads out of the task folder");
    if target.is_empty() || target.starts_with('/') || target.contains('\\') || target.contains(':')
    {
        return Err(escapes());
    }
    // Depth of the folder holding the link, then walk the target.
    let mut depth = name.trim_end_matches('/').split('/').count() as i64 - 1;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => depth -= 1,
            _ => depth += 1,
        }
        if depth < 0 {
            return Err(escapes());
        }
    }
    Ok(())
}

/// Extracts a task package zip into the new folder `dest` and loads its task.json. Every entry is checked
/// first: paths stay inside `dest`, symbolic links do not lead out of it, at most
/// [`MAX_ARCHIVE_ENTRIES`] entries. Errors name the entry or the task.json field.
pub fn unpack_package(archive: &Path, dest: &Path) -> Result<TaskPackage, String> {
    let file = std::fs::File::open(archive).map_err(|e| format!("cannot open the archive: {e}"))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| format!("not a zip archive: {e}"))?;
    if zip.len() > MAX_ARCHIVE_ENTRIES {
        return Err(format!(
            "the archive holds more than {MAX_ARCHIVE_ENTRIES} entries"
        ));
    }
    std::fs::create_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    for index in 0..zip.len() {
        let mut entry = zip
            .by_index(index)
            .map_err(|e| format!("entry {index}: {e}"))?;
        let name = entry.name().unwrap_or_default().to_string();
        check_entry_path(&name)?;
        let target = dest.join(name.trim_end_matches('/'));
        let failed = |e: &dyn std::fmt::Display| format!("entry `{name}`: {e}");
        // Nothing is written through a link the archive made: a link's target was checked from where the
        // link sits, which holds only when no folder above it is a link itself.
        let mut above = dest.to_path_buf();
        for part in name.trim_end_matches('/').split('/') {
            if std::fs::symlink_metadata(&above).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(format!("entry `{name}`: lies under a symbolic link"));
            }
            above.push(part);
        }
        if entry.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| failed(&e))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| failed(&e))?;
        }
        if entry.is_symlink() {
            let mut link = String::new();
            std::io::Read::take(&mut entry, 4096)
                .read_to_string(&mut link)
                .map_err(|e| failed(&e))?;
            check_link(&name, &link)?;
            #[cfg(unix)]
            std::os::unix::fs::symlink(&link, &target).map_err(|e| failed(&e))?;
            continue;
        }
        let mode = entry.unix_mode().unwrap_or(0o644) & 0o755;
        let mut out = std::fs::File::create_new(&target).map_err(|e| failed(&e))?;
        std::io::copy(&mut entry, &mut out).map_err(|e| failed(&e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode | 0o600))
                .map_err(|e| failed(&e))?;
        }
    }
    // task.json itself must be a file, not a link.
    let task_json = dest.join("task.json");
    if std::fs::symlink_metadata(&task_json).is_ok_and(|m| !m.is_file()) {
        return Err("task.json: must be a file".into());
    }
    TaskPackage::load(dest).map_err(|err| err.replace(&format!("{}/", dest.display()), ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TASK: &str = r#"{
        "id": "2a1b7f6e-1111-4c3d-9e8f-0123456789ab",
        "name": "Greet",
        "version": {"Major": 1, "Minor": "2", "Patch": 3},
        "inputs": [{"name": "who", "aliases": ["person"], "defaultValue": "world"}],
        "execution": {"Node16": {"target": "old.js"}, "Node20_1": {"target": "index.js"},
                      "PowerShell3": {"target": "x.ps1"}}
    }"#;

    #[test]
    fn parses_task_json_and_prefers_the_newest_node_handler() {
        let definition = TaskDefinition::parse(TASK).unwrap();
        assert_eq!(definition.label(), "Greet@1.2.3");
        assert_eq!(definition.inputs[0].aliases, vec!["person".to_string()]);
        assert_eq!(definition.inputs[0].default_value.as_deref(), Some("world"));
        let handlers = definition.node_handlers();
        assert_eq!(handlers[0].0.kind, "Node20_1");
        assert_eq!(handlers[0].1, 20);
        assert_eq!(handlers[1].0.kind, "Node16");
        assert_eq!(handlers.len(), 2);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[]", "top level"),
            (
                r#"{"name": "A", "version": {"Major": 1, "Minor": 0, "Patch": 0}}"#,
                "id: missing",
            ),
            (
                r#"{"id": "a", "name": "A", "version": {"Major": 1, "Minor": 0}}"#,
                "version.Patch: missing",
            ),
            (
                r#"{"id": "a", "name": "A", "version": {"Major": -1, "Minor": 0, "Patch": 0}}"#,
                "version.Major",
            ),
            (
                r#"{"id": "a", "name": "A/B", "version": {"Major": 1, "Minor": 0, "Patch": 0}}"#,
                "name:",
            ),
            (
                r#"{"id": "a", "name": "A", "version": {"Major": 1, "Minor": 0, "Patch": 0}}"#,
                "execution: missing",
            ),
            (
                r#"{"id": "a", "name": "A", "version": {"Major": 1, "Minor": 0, "Patch": 0}, "execution": {"Node": {}}}"#,
                "execution.Node.target",
            ),
            (
                r#"{"id": "a", "name": "A", "version": {"Major": 1, "Minor": 0, "Patch": 0}, "inputs": [{}], "execution": {"Node": {"target": "a.js"}}}"#,
                "inputs[0].name",
            ),
        ];
        for (text, expected) in cases {
            let err = TaskDefinition::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn node_versions_parse() {
        assert_eq!(node_major("v20.20.2\n"), Some(20));
        assert_eq!(node_major("garbage"), None);
    }

    #[test]
    fn packages_round_trip_and_bad_archives_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let task = dir.path().join("Greet");
        std::fs::create_dir_all(task.join("lib")).unwrap();
        std::fs::write(task.join("task.json"), TASK).unwrap();
        std::fs::write(task.join("lib/index.js"), "console.log(1)").unwrap();
        std::os::unix::fs::symlink("lib/index.js", task.join("main.js")).unwrap();
        let (definition, bytes) = pack_package(&task).unwrap();
        assert_eq!(definition.label(), "Greet@1.2.3");
        let archive = dir.path().join("greet.zip");
        std::fs::write(&archive, &bytes).unwrap();
        let out = dir.path().join("out");
        let package = unpack_package(&archive, &out).unwrap();
        assert_eq!(package.definition, definition);
        assert_eq!(
            std::fs::read_to_string(out.join("main.js")).unwrap(),
            "console.log(1)"
        );

        // A link out of the folder is refused when packing.
        std::os::unix::fs::symlink("../../etc/passwd", task.join("lib/evil")).unwrap();
        assert!(
            pack_package(&task)
                .unwrap_err()
                .contains("leads out of the task folder")
        );

        // Hand-made archives with unsafe entries are refused when unpacking.
        let write = |entries: &[(&str, Option<&str>)]| {
            let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            let options = zip::write::SimpleFileOptions::default();
            zip.start_file("task.json", options).unwrap();
            std::io::Write::write_all(&mut zip, TASK.as_bytes()).unwrap();
            for (name, link) in entries {
                match link {
                    Some(target) => zip.add_symlink(*name, *target, options).unwrap(),
                    None => {
                        zip.start_file(*name, options).unwrap();
                        std::io::Write::write_all(&mut zip, b"x").unwrap();
                    }
                }
            }
            let path = dir.path().join("bad.zip");
            std::fs::write(&path, zip.finish().unwrap().into_inner()).unwrap();
            path
        };
        for (entries, expected) in [
            (vec![("../escape.js", None)], "entry `../escape.js`"),
            (vec![("/etc/x", None)], "entry `/etc/x`"),
            (vec![("a/../../b", None)], "entry `a/../../b`"),
            (vec![("link", Some("/etc/passwd"))], "leads out"),
            (vec![("a/link", Some("../../x"))], "leads out"),
            (
                vec![("d", Some(".")), ("d/e", Some(".."))],
                "under a symbolic link",
            ),
        ] {
            let target = tempfile::tempdir().unwrap();
            let err = unpack_package(&write(&entries), &target.path().join("t")).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
        let target = tempfile::tempdir().unwrap();
        let err = unpack_package(&archive.with_file_name("nothing"), target.path()).unwrap_err();
        assert!(err.contains("cannot open"), "{err}");
    }
}
