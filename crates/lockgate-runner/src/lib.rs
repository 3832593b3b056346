//! Runs jobs on this machine with Azure Pipelines agent semantics: workspace, child processes, variables,
//! logging commands, secret masking and built-in tasks. [`job::run_job`] runs one job and reports
//! [`events::Event`]s; [`orchestrator`] walks a whole plan for `lockgate run`.

pub mod agentless;
pub mod conditions;
pub mod events;
pub mod glob;
pub mod job;
pub mod logging_command;
pub mod masking;
pub mod orchestrator;
pub mod process;
pub mod sandbox;
pub mod spec;
pub mod tasks;
pub mod variables;
pub mod workspace;

/// The artifact store, re-exported so that callers need no direct dependency.
pub use lockgate_artifacts as artifacts;

#[cfg(feature = "test-sshd")]
pub mod test_sshd;
