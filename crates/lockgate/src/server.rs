//! `lockgate up`, `lockgate server` and the client commands that talk to a server's REST API.

use crate::UsageError;

#[derive(clap::Args)]
pub struct UpArgs {}

#[derive(clap::Args)]
pub struct ServerArgs {}

#[derive(clap::Subcommand)]
pub enum RunsCommand {
    /// List runs.
    List,
}

#[derive(clap::Subcommand)]
pub enum PipelinesCommand {
    /// List pipelines.
    List,
}

#[derive(clap::Args)]
pub struct QueueArgs {}

fn not_yet(what: &str) -> anyhow::Result<u8> {
    Err(UsageError(format!("`lockgate {what}` is not built yet")).into())
}

pub fn up(_args: UpArgs) -> anyhow::Result<u8> {
    not_yet("up")
}
pub fn server(_args: ServerArgs) -> anyhow::Result<u8> {
    not_yet("server")
}
pub fn runs(_cmd: RunsCommand) -> anyhow::Result<u8> {
    not_yet("runs")
}
pub fn pipelines(_cmd: PipelinesCommand) -> anyhow::Result<u8> {
    not_yet("pipelines")
}
pub fn queue(_args: QueueArgs) -> anyhow::Result<u8> {
    not_yet("queue")
}
