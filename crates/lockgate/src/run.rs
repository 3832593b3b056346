//! `lockgate run`: compile a pipeline and run every stage, job and step on this machine.

use crate::UsageError;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The pipeline file (default: azure-pipelines.yml in the current directory).
    pub file: Option<std::path::PathBuf>,
}

pub fn exec(_args: RunArgs) -> anyhow::Result<u8> {
    Err(UsageError("`lockgate run` is not built yet".into()).into())
}
