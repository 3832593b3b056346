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
}
