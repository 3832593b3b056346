//! `lockgate agent register|run` (an agent on this machine for a server elsewhere) and `lockgate
//! agents token|list|enable|disable|remove` (an administrator managing a server's agents).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use lockgate_agent::remote::{self, CREDENTIALS_FILE};
use lockgate_agent::runner_executor::{RunnerExecutor, Sandbox};
use lockgate_agent::{Agent, AgentConfig};
use lockgate_protocol::api;

use crate::server::{Connection, client_error};
use crate::{EXIT_OK, UsageError};

#[derive(clap::Subcommand)]
pub enum AgentCommand {
    /// Register this machine with a server, using a one-time token from `lockgate agents token`;
    /// the credentials go to a file only this user can read, in the agent's folder.
    Register {
        /// The server's URL.
        #[arg(long)]
        url: String,
        /// The registration token.
        #[arg(long)]
        token: String,
        /// The pool to join (the token's).
        #[arg(
            long,
            required_unless_present = "environment",
            conflicts_with = "environment"
        )]
        pool: Option<String>,
        /// Become a target (a virtual machine resource) of this environment instead (the token's).
        #[arg(long)]
        environment: Option<String>,
        /// A target's tags, comma-separated (`web,eu`); deployment jobs pick targets by them.
        #[arg(long, requires = "environment", value_delimiter = ',')]
        tags: Vec<String>,
        /// The agent's name (for a target: the resource's name); default this machine's host name.
        #[arg(long)]
        name: Option<String>,
        /// A user capability NAME=VALUE that demands may ask for (repeatable).
        #[arg(long = "capability", value_name = "NAME=VALUE")]
        capabilities: Vec<String>,
        #[command(flatten)]
        work: WorkDir,
    },
    /// Lease and run jobs until stopped (SIGTERM or Ctrl-C lets the job it runs finish first).
    Run {
        #[command(flatten)]
        work: WorkDir,
        /// Run jobs without the bubblewrap sandbox: a job can read the agent's token and everything
        /// this user can. Only where every pipeline author is trusted (docs/security.md).
        #[arg(long)]
        no_sandbox: bool,
        /// A folder or file the sandbox hides from every job besides the credentials (repeatable).
        #[arg(long, value_name = "PATH")]
        sandbox_hide: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct WorkDir {
    /// The agent's folder (credentials, job workspaces, task cache); default `$LOCKGATE_AGENT_DIR`
    /// or `./lockgate-agent`.
    #[arg(long = "work", value_name = "DIR")]
    dir: Option<PathBuf>,
}

impl WorkDir {
    fn path(&self) -> anyhow::Result<PathBuf> {
        let dir = self
            .dir
            .clone()
            .or_else(|| std::env::var_os("LOCKGATE_AGENT_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("lockgate-agent"));
        std::path::absolute(&dir).map_err(|e| UsageError(format!("--work: {e}")).into())
    }
}

#[derive(clap::Subcommand)]
pub enum AgentsCommand {
    /// Create a one-time registration token for a pool (server administrators; project
    /// administrators with --project).
    Token {
        #[command(flatten)]
        connection: Connection,
        #[arg(
            long,
            required_unless_present = "environment",
            conflicts_with = "environment"
        )]
        pool: Option<String>,
        /// A token for a target of this environment of --project (a virtual machine resource).
        #[arg(long, requires = "project")]
        environment: Option<String>,
        /// A pool of this project instead of the whole server.
        #[arg(long)]
        project: Option<String>,
        /// How long the token can be used.
        #[arg(long, default_value_t = 60)]
        expires_in_minutes: u32,
    },
    /// List the agents with their state, last heartbeat, current job, version and capabilities.
    List {
        #[command(flatten)]
        connection: Connection,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Let a disabled agent lease jobs again.
    Enable {
        #[command(flatten)]
        connection: Connection,
        name: String,
    },
    /// Drain an agent: it finishes the job it runs and leases no other.
    Disable {
        #[command(flatten)]
        connection: Connection,
        name: String,
    },
    /// Remove an agent: its token stops working.
    Remove {
        #[command(flatten)]
        connection: Connection,
        name: String,
    },
}

pub fn agent(command: AgentCommand) -> anyhow::Result<u8> {
    match command {
        AgentCommand::Register {
            url,
            token,
            pool,
            environment,
            tags,
            name,
            capabilities,
            work,
        } => {
            let placement = match (pool, environment) {
                (_, Some(name)) => remote::Placement::Environment { name, tags },
                (Some(pool), None) => remote::Placement::Pool(pool),
                (None, None) => {
                    return Err(UsageError("give --pool or --environment".into()).into());
                }
            };
            let dir = work.path()?;
            let mut user = BTreeMap::new();
            for text in &capabilities {
                let (name, value) = remote::parse_capability(text)
                    .map_err(|e| UsageError(format!("--capability {e}")))?;
                user.insert(name, value);
            }
            let name = match name {
                Some(name) => name,
                None => host_name()?,
            };
            let credentials = remote::register(&url, &token, &placement, &name, user, &dir)
                .map_err(|error| match error {
                    remote::RemoteError::Client(error) => client_error(error),
                    other => UsageError(other.to_string()).into(),
                })?;
            println!(
                "Registered agent `{}` in {}{} at {}",
                credentials.name,
                placement.describe(),
                credentials
                    .project
                    .as_ref()
                    .map(|p| format!(" of project `{p}`"))
                    .unwrap_or_default(),
                credentials.url
            );
            println!(
                "Credentials: {} (mode 0600). Start it with `lockgate agent run --work {}`.",
                dir.join(CREDENTIALS_FILE).display(),
                dir.display()
            );
            Ok(EXIT_OK)
        }
        AgentCommand::Run {
            work,
            no_sandbox,
            sandbox_hide,
        } => {
            let dir = work.path()?;
            let credentials =
                remote::read_credentials(&dir).map_err(|e| UsageError(e.to_string()))?;
            let mut executor = RunnerExecutor::with_registry(crate::run::registry());
            let isolation = if no_sandbox {
                "NONE (--no-sandbox): jobs run as this user and can read the agent's token"
                    .to_string()
            } else {
                let mut hidden = vec![dir.join(CREDENTIALS_FILE)];
                for path in &sandbox_hide {
                    hidden.push(
                        std::path::absolute(path)
                            .map_err(|e| UsageError(format!("--sandbox-hide: {e}")))?,
                    );
                }
                let sandbox = Sandbox::detect(&hidden).map_err(|error| {
                    anyhow::anyhow!(
                        "cannot isolate jobs: {error} (`lockgate agent run --no-sandbox` runs jobs \
                         without isolation; see docs/security.md)"
                    )
                })?;
                let line = format!(
                    "bubblewrap sandbox ({}): each job sees only its own workspace, the credentials are hidden",
                    sandbox.version()
                );
                executor.sandbox = Some(sandbox);
                line
            };
            println!(
                "Agent `{}` {} serving {} from {}",
                credentials.name,
                credentials.placement(),
                credentials.url,
                dir.display()
            );
            println!("Job isolation: {isolation}");
            let stop = Arc::new(AtomicBool::new(false));
            remote::stop_on_signals(stop.clone());
            let agent = Agent::new(
                AgentConfig {
                    server_url: credentials.url.clone(),
                    token: credentials.token.clone(),
                    work_dir: dir,
                    lease_wait_seconds: 20,
                    name: credentials.name.clone(),
                    capabilities: credentials.capabilities.clone(),
                },
                Arc::new(executor),
            );
            agent.run(&stop);
            println!("Agent `{}` stopped", credentials.name);
            Ok(EXIT_OK)
        }
    }
}

/// This machine's host name, as an agent name.
fn host_name() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    if name.is_empty() {
        return Err(UsageError("cannot tell this machine's host name; give --name".into()).into());
    }
    Ok(name)
}

pub fn agents(command: AgentsCommand) -> anyhow::Result<u8> {
    match command {
        AgentsCommand::Token {
            connection,
            pool,
            environment,
            project,
            expires_in_minutes,
        } => {
            let created: api::AgentRegistration = connection
                .client()?
                .post_json(
                    "/api/v1/agents/registrations",
                    &api::CreateAgentRegistration {
                        pool: pool.unwrap_or_default(),
                        environment,
                        project,
                        expires_in_minutes: Some(expires_in_minutes),
                    },
                )
                .map_err(client_error)?;
            println!("{}", created.token);
            let (what, name) = match &created.environment {
                Some(environment) => ("environment", environment),
                None => ("pool", &created.pool),
            };
            eprintln!(
                "One-time registration token for {what} `{name}`, valid for {expires_in_minutes} minute(s): \
                 lockgate agent register --url URL --token TOKEN --{what} {name}{}",
                if created.environment.is_some() {
                    " --tags TAG,TAG"
                } else {
                    ""
                }
            );
            Ok(EXIT_OK)
        }
        AgentsCommand::List { connection, json } => {
            let agents: Vec<api::AgentSummary> = connection
                .client()?
                .get_json("/api/v1/agents")
                .map_err(client_error)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&agents)?);
                return Ok(EXIT_OK);
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            for agent in &agents {
                let seen = agent
                    .last_seen_at
                    .map(|at| format!("seen {}s ago", (now - at).max(0) / 1000))
                    .unwrap_or_else(|| "never seen".into());
                let job = agent
                    .current_job
                    .map(|job| {
                        format!(
                            "running job {job} of run {}",
                            agent.current_run.unwrap_or_default()
                        )
                    })
                    .unwrap_or_else(|| "idle".into());
                let placement = match &agent.environment {
                    Some(environment) if agent.tags.is_empty() => {
                        format!("environment {environment}")
                    }
                    Some(environment) => {
                        format!("environment {environment} [{}]", agent.tags.join(","))
                    }
                    None => format!("pool {}", agent.pool),
                };
                println!(
                    "{}  {}{}  {}  {}  {}  version {}",
                    agent.name,
                    placement,
                    agent
                        .project
                        .as_ref()
                        .map(|p| format!(" ({p})"))
                        .unwrap_or_default(),
                    agent.state,
                    seen,
                    job,
                    agent.version.as_deref().unwrap_or("-")
                );
                let capabilities: Vec<String> = agent
                    .capabilities
                    .iter()
                    .map(|(k, v)| {
                        if v.is_empty() {
                            k.clone()
                        } else {
                            format!("{k}={v}")
                        }
                    })
                    .collect();
                println!("    {}", capabilities.join(" "));
            }
            Ok(EXIT_OK)
        }
        AgentsCommand::Enable { connection, name } => {
            change(&connection, &format!("/api/v1/agents/{name}/enable"), false)?;
            println!("Agent `{name}` enabled");
            Ok(EXIT_OK)
        }
        AgentsCommand::Disable { connection, name } => {
            change(
                &connection,
                &format!("/api/v1/agents/{name}/disable"),
                false,
            )?;
            println!("Agent `{name}` disabled: it finishes its job and leases no other");
            Ok(EXIT_OK)
        }
        AgentsCommand::Remove { connection, name } => {
            change(&connection, &format!("/api/v1/agents/{name}"), true)?;
            println!("Agent `{name}` removed");
            Ok(EXIT_OK)
        }
    }
}

/// `POST` (or `DELETE`) a path whose answer has no body.
fn change(connection: &Connection, path: &str, delete: bool) -> anyhow::Result<()> {
    let client = connection.client()?;
    let result = if delete {
        client.delete(path)
    } else {
        client.post_empty(path)
    };
    result.map_err(client_error)
}
