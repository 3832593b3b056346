//! Tasks: the [`Task`] trait every step implementation follows, the [`TaskRegistry`] that maps `Name@Major`
//! to implementations (the binary may register more), and the built-in tasks, implemented natively.

pub mod archives;
pub mod artifacts;
pub mod build_tools;
pub mod builtin_steps;
pub mod cache;
pub mod files;
pub mod package;
pub mod script;
pub mod secure_files;
pub mod ssh;
pub mod test_results;
pub mod tools;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::events::TaskResult;
use crate::job::StepContext;

/// A task failure with a message for the step log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError(pub String);

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TaskError {}

/// The future a task returns.
pub type TaskFuture<'a> = Pin<Box<dyn Future<Output = Result<TaskResult, TaskError>> + Send + 'a>>;

/// A task implementation. `run` gets the step context with macro-expanded inputs.
pub trait Task: Send + Sync {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a>;
}

/// The one wording for a task that is not in the registry, shared by `validate`, `run` and the failing
/// step.
pub fn unknown_task_message(name: &str, major: u32) -> String {
    format!("task {name}@{major} is not built into Lockgate")
}

/// Tasks by case-insensitive `name@major`.
#[derive(Clone, Default)]
pub struct TaskRegistry {
    tasks: BTreeMap<String, Arc<dyn Task>>,
}

impl std::fmt::Debug for TaskRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tasks.keys()).finish()
    }
}

fn key(name: &str, major: u32) -> String {
    format!("{}@{major}", name.trim().to_ascii_lowercase())
}

impl TaskRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with every built-in task.
    pub fn with_builtins() -> Self {
        let mut registry = Self::new();
        script::register(&mut registry);
        artifacts::register(&mut registry);
        files::register(&mut registry);
        archives::register(&mut registry);
        test_results::register(&mut registry);
        tools::register(&mut registry);
        cache::register(&mut registry);
        build_tools::register(&mut registry);
        ssh::register(&mut registry);
        secure_files::register(&mut registry);
        registry
    }

    /// Registers (or replaces) `name@major`.
    pub fn register(&mut self, name: &str, major: u32, task: Arc<dyn Task>) {
        self.tasks.insert(key(name, major), task);
    }

    pub fn get(&self, name: &str, major: u32) -> Option<Arc<dyn Task>> {
        self.tasks.get(&key(name, major)).cloned()
    }

    pub fn contains(&self, name: &str, major: u32) -> bool {
        self.tasks.contains_key(&key(name, major))
    }

    /// Every registered `name@major`, sorted, lower-case.
    pub fn names(&self) -> Vec<String> {
        self.tasks.keys().cloned().collect()
    }
}
