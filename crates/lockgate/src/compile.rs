//! `lockgate validate` and `lockgate plan`: compile a pipeline file and report diagnostics or the plan.

use std::path::PathBuf;

use crate::UsageError;

#[derive(clap::Args)]
pub struct CompileArgs {
    /// The pipeline file (default: azure-pipelines.yml in the current directory).
    pub file: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub compile: CompileArgs,
}

pub fn validate(_args: CompileArgs) -> anyhow::Result<u8> {
    Err(UsageError("`lockgate validate` is not built yet".into()).into())
}

pub fn plan(_args: PlanArgs) -> anyhow::Result<u8> {
    Err(UsageError("`lockgate plan` is not built yet".into()).into())
}
