//! The `lockgate` binary: parses the command line and hands each command to its module. This file is
//! also the one place that maps errors to the documented exit codes (see ARCHITECTURE.md).

mod agent;
mod approvals;
mod compile;
mod environments;
mod library;
mod partial;
mod run;
mod server;
mod solution;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for success (a run that succeeded, or succeeded with issues).
pub const EXIT_OK: u8 = 0;
/// Exit code for a failed check: invalid pipeline reported by `validate`, a failed or canceled run.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for usage errors and inputs that cannot be used at all.
pub const EXIT_USAGE: u8 = 2;

/// An error that is the caller's fault (bad flag value, missing file): exits with [`EXIT_USAGE`].
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

#[derive(Parser)]
#[command(
    name = "lockgate",
    version,
    about = "Azure Pipelines YAML, from a Git commit to production"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a pipeline file and report every problem with its location.
    Validate(compile::CompileArgs),
    /// Print the fully expanded pipeline (the final YAML) or its job graph as JSON.
    Plan(compile::PlanArgs),
    /// Run a pipeline on this machine.
    Run(run::RunArgs),
    /// Power Platform solution packages: unpack, pack, diff, check, settings, version.
    #[command(subcommand)]
    Solution(solution::SolutionCommand),
    /// Start a server with an embedded database, a built-in agent and a demo project.
    Up(server::UpArgs),
    /// Start a server from a config file, without the demo project.
    Server(server::ServerArgs),
    /// Copy an embedded install (SQLite) into an empty PostgreSQL database, verified by counts and checksums.
    MigrateStore(server::MigrateStoreArgs),
    /// Runs on a Lockgate server: list, show, logs, cancel, rerun.
    #[command(subcommand)]
    Runs(server::RunsCommand),
    /// Pipelines on a Lockgate server: create, list.
    #[command(subcommand)]
    Pipelines(server::PipelinesCommand),
    /// Queue a run of a pipeline on a Lockgate server.
    Queue(server::QueueArgs),
    /// Task packages on a Lockgate server: upload, list.
    #[command(subcommand)]
    Tasks(server::TasksCommand),
    /// Approve the stages of a run that wait for your approval.
    Approve(approvals::DecideArgs),
    /// Reject the stages of a run that wait for your approval.
    Reject(approvals::DecideArgs),
    /// Service connections of a project on a Lockgate server (the library).
    #[command(subcommand)]
    ServiceConnections(library::ServiceConnectionsCommand),
    /// Variable groups of a project on a Lockgate server (the library).
    #[command(subcommand)]
    VariableGroups(library::VariableGroupsCommand),
    /// Secure files of a project on a Lockgate server (the library): upload, list, delete, authorize.
    #[command(subcommand)]
    SecureFiles(library::SecureFilesCommand),
    /// Deploy again what a run deployed to an environment (rollback); the checks apply again.
    Redeploy(environments::RedeployArgs),
    /// Environments on a Lockgate server: list them with what runs where, show one's ledger.
    #[command(subcommand)]
    Environments(environments::EnvironmentsCommand),
    /// Approvals and checks on environments, variable groups, secure files, service connections and
    /// agent pools (`--on`): what must pass before a stage that uses one starts.
    #[command(subcommand)]
    Checks(approvals::ChecksCommand),
    /// An agent on this machine for a server elsewhere: register, run.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// The agents of a server: create registration tokens, list, enable, disable, remove.
    #[command(subcommand)]
    Agents(agent::AgentsCommand),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() {
                EXIT_USAGE
            } else {
                EXIT_OK
            };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Validate(args) => compile::validate(args),
        Command::Plan(args) => compile::plan(args),
        Command::Run(args) => run::exec(args),
        Command::Solution(cmd) => solution::exec(cmd),
        Command::Up(args) => server::up(args),
        Command::Server(args) => server::server(args),
        Command::MigrateStore(args) => server::migrate_store(args),
        Command::Runs(cmd) => server::runs(cmd),
        Command::Pipelines(cmd) => server::pipelines(cmd),
        Command::Queue(args) => server::queue(args),
        Command::Tasks(cmd) => server::tasks(cmd),
        Command::Approve(args) => approvals::decide(args, true),
        Command::Redeploy(args) => environments::redeploy(args),
        Command::VariableGroups(cmd) => library::variable_groups(cmd),
        Command::SecureFiles(cmd) => library::secure_files(cmd),
        Command::ServiceConnections(cmd) => library::service_connections(cmd),
        Command::Reject(args) => approvals::decide(args, false),
        Command::Checks(cmd) => approvals::checks(cmd),
        Command::Environments(cmd) => environments::environments(cmd),
        Command::Agent(cmd) => agent::agent(cmd),
        Command::Agents(cmd) => agent::agents(cmd),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::from(EXIT_FAILED)
            }
        }
    }
}
