//! `lockgate solution ...`: Power Platform solution packages offline, and Dataverse online.

use crate::UsageError;

#[derive(clap::Subcommand)]
pub enum SolutionCommand {
    /// Unpack a solution zip into the SolutionPackager source layout.
    Unpack { zip: std::path::PathBuf, dir: std::path::PathBuf },
}

pub fn exec(_cmd: SolutionCommand) -> anyhow::Result<u8> {
    Err(UsageError("`lockgate solution` is not built yet".into()).into())
}
