//! `lockgate up`, `lockgate server` and the client commands that talk to a server's REST API
//! (`runs`, `pipelines`, `queue`), which find the server and token in flags or `LOCKGATE_SERVER` /
//! `LOCKGATE_TOKEN`.

use std::path::PathBuf;

use lockgate_agent::{ClientError, ServerClient};
use lockgate_protocol::api;
use lockgate_server::launch::{self, LaunchOptions};

use crate::{EXIT_FAILED, EXIT_OK, UsageError};

#[derive(clap::Args)]
pub struct UpArgs {
    /// Data folder (database, repositories, artifacts); default `$LOCKGATE_DATA` or `./lockgate-data`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Database: `sqlite` (`lockgate.db` in the data folder) or a database URL; default
    /// `$LOCKGATE_DATABASE` or `sqlite`.
    #[arg(long)]
    database: Option<String>,
    /// Where artifact contents live: `folder` (`artifacts/` in the data folder), an absolute path, or
    /// `s3://BUCKET[/PREFIX]?endpoint=URL&region=R` with credentials from `AWS_ACCESS_KEY_ID` /
    /// `AWS_SECRET_ACCESS_KEY`; default `$LOCKGATE_OBJECTS` or `folder`.
    #[arg(long)]
    objects: Option<String>,
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Do not create the demo project.
    #[arg(long)]
    no_demo: bool,
    /// How many jobs the built-in agents run at the same time.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    agents: u16,
    /// Run jobs without the bubblewrap sandbox: every pipeline can read the data folder and the
    /// database. Only for a laptop where every pipeline author is trusted (docs/security.md).
    #[arg(long)]
    no_sandbox: bool,
    /// A folder or file the sandbox hides from every job besides the data folder (repeatable), such as
    /// credentials in this user's home or a Docker socket.
    #[arg(long, value_name = "PATH")]
    sandbox_hide: Vec<PathBuf>,
    /// Largest JSON or form body of the API and the web UI, in bytes (413 above it).
    #[arg(long, default_value_t = lockgate_server::MAX_BODY_BYTES, value_parser = positive_usize)]
    max_body_bytes: usize,
    /// Largest git request body (a push) or artifact file, in bytes (413 above it); streamed.
    #[arg(long, default_value_t = lockgate_server::MAX_UPLOAD_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    max_upload_bytes: u64,
    /// Largest request line plus headers, in bytes (431 above it).
    #[arg(long, default_value_t = lockgate_server::MAX_HEADER_BYTES, value_parser = positive_usize)]
    max_header_bytes: usize,
}

fn positive_usize(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{text}` is not a positive number of bytes")),
    }
}

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Config file with `data_dir`, `database`, `objects`, `port`, `lease_seconds`, `builtin_agent`, `builtin_agents`, `sandbox`,
    /// `sandbox_hide`, `max_body_bytes`, `max_upload_bytes` and `max_header_bytes` (`key = value` lines),
    /// and a `[vm_images]` table (`"windows-latest" = "win"`: the pool a `vmImage` goes to).
    #[arg(long)]
    config: PathBuf,
    /// Database URL or `sqlite` (overrides `database` in the config file).
    #[arg(long)]
    database: Option<String>,
    /// Artifact storage: `folder`, an absolute path or `s3://BUCKET[/PREFIX]?endpoint=URL` (overrides
    /// `objects` in the config file; credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`).
    #[arg(long)]
    objects: Option<String>,
    /// Run jobs without the bubblewrap sandbox (overrides `sandbox = true`; docs/security.md).
    #[arg(long)]
    no_sandbox: bool,
}

#[derive(clap::Args)]
pub struct MigrateStoreArgs {
    /// The embedded install: `sqlite:DATA_DIR`, the data folder holding `lockgate.db` (stop its server first).
    #[arg(long)]
    from: String,
    /// The new, empty PostgreSQL database: `postgres://user:password@host:port/database`.
    #[arg(long)]
    to: String,
    /// Also copy the artifact contents of `DATA_DIR/artifacts` to this object storage (an absolute
    /// path or `s3://BUCKET[/PREFIX]?endpoint=URL`, as for `lockgate server --objects`).
    #[arg(long)]
    objects: Option<String>,
}

/// Where the server is and who we are.
#[derive(clap::Args, Clone)]
pub struct Connection {
    /// Server URL; default `$LOCKGATE_SERVER` or http://127.0.0.1:8080.
    #[arg(long, global = true)]
    server: Option<String>,
    /// Personal access token; default `$LOCKGATE_TOKEN`.
    #[arg(long, global = true)]
    token: Option<String>,
}

impl Connection {
    pub(crate) fn client(&self) -> anyhow::Result<ServerClient> {
        let server = self
            .server
            .clone()
            .or_else(|| std::env::var("LOCKGATE_SERVER").ok())
            .unwrap_or_else(|| "http://127.0.0.1:8080".into());
        let token = self
            .token
            .clone()
            .or_else(|| std::env::var("LOCKGATE_TOKEN").ok())
            .ok_or_else(|| UsageError("give a token with --token or LOCKGATE_TOKEN".into()))?;
        Ok(ServerClient::new(&server, &token))
    }
}

#[derive(clap::Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        pipeline: Option<i64>,
        #[arg(long)]
        branch: Option<String>,
        /// queued, running, completed, succeeded, failed, canceled…
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a run with its jobs and steps.
    Show {
        #[command(flatten)]
        connection: Connection,
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Print a run's logs.
    Logs {
        #[command(flatten)]
        connection: Connection,
        id: i64,
        /// Keep printing while the run is in progress, until it completes.
        #[arg(long)]
        follow: bool,
    },
    /// Cancel a run.
    Cancel {
        #[command(flatten)]
        connection: Connection,
        id: i64,
    },
    /// Start a manual stage (`trigger: manual`) of a run.
    StartStage {
        #[command(flatten)]
        connection: Connection,
        id: i64,
        stage: String,
    },
    /// Run again: a new run of the same commit, or with --failed the jobs that did not succeed.
    Rerun {
        #[command(flatten)]
        connection: Connection,
        id: i64,
        #[arg(long)]
        failed: bool,
    },
}

#[derive(clap::Subcommand)]
pub enum PipelinesCommand {
    /// Create a pipeline from a repository's YAML file.
    Create {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        repository: String,
        #[arg(long, default_value = "azure-pipelines.yml")]
        yaml: String,
    },
    /// List the pipelines of a project.
    List {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
    },
}

#[derive(clap::Subcommand)]
pub enum TasksCommand {
    /// Upload a task package (a folder with task.json, its handler and node_modules), as
    /// `tfx build tasks upload` does; the server's agents then run it for `- task: Name@Major` steps.
    Upload {
        #[command(flatten)]
        connection: Connection,
        /// The task folder.
        dir: PathBuf,
        /// Replace a stored package of the same id and version.
        #[arg(long)]
        overwrite: bool,
    },
    /// List the task packages stored on the server.
    List {
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(clap::Args)]
pub struct QueueArgs {
    #[command(flatten)]
    connection: Connection,
    /// Pipeline id (see `lockgate pipelines list`).
    pipeline: i64,
    #[arg(long)]
    branch: Option<String>,
    /// Runtime parameter NAME=VALUE (repeatable).
    #[arg(long = "param")]
    params: Vec<String>,
    /// Queue-time value NAME=VALUE for a pipeline variable that lets users override it (repeatable).
    #[arg(long = "var")]
    vars: Vec<String>,
}

pub fn up(args: UpArgs) -> anyhow::Result<u8> {
    let data_dir = args
        .data_dir
        .or_else(|| std::env::var_os("LOCKGATE_DATA").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("lockgate-data"));
    let database = args
        .database
        .or_else(|| std::env::var("LOCKGATE_DATABASE").ok())
        .unwrap_or_else(|| "sqlite".into());
    let objects = args
        .objects
        .or_else(|| std::env::var("LOCKGATE_OBJECTS").ok())
        .unwrap_or_default();
    lockgate_server::objects::Objects::open(&objects, &data_dir)
        .map_err(|e| UsageError(format!("--objects: {e}")))?;
    launch::run(LaunchOptions {
        data_dir,
        database,
        objects,
        objects_credentials: None,
        port: args.port,
        seed_demo: !args.no_demo,
        builtin_agent: true,
        builtin_agents: usize::from(args.agents),
        lease_seconds: 60,
        tasks: crate::run::registry(),
        sandbox: !args.no_sandbox,
        sandbox_hide: args
            .sandbox_hide
            .iter()
            .map(std::path::absolute)
            .collect::<Result<_, _>>()
            .map_err(|e| UsageError(format!("--sandbox-hide: {e}")))?,
        limits: lockgate_server::Limits {
            max_body_bytes: args.max_body_bytes,
            max_upload_bytes: args.max_upload_bytes,
            max_header_bytes: args.max_header_bytes,
        },
        vm_images: lockgate_server::agents::VmImages::default(),
    })?;
    Ok(EXIT_OK)
}

pub fn server(args: ServerArgs) -> anyhow::Result<u8> {
    let mut options =
        launch::read_config(&args.config).map_err(|e| UsageError(format!("{e:#}")))?;
    // The built-in agents run the same tasks as `lockgate run`, Power Platform ones included.
    options.tasks = crate::run::registry();
    if args.no_sandbox {
        options.sandbox = false;
    }
    if let Some(database) = args.database {
        options.database = database;
    }
    if let Some(objects) = args.objects {
        lockgate_server::objects::Objects::open(&objects, &options.data_dir)
            .map_err(|e| UsageError(format!("--objects: {e}")))?;
        options.objects = objects;
    }
    launch::run(options)?;
    Ok(EXIT_OK)
}

/// Client errors: 4xx answers are the caller's problem (exit 2), the rest exit 1.
pub(crate) fn client_error(error: ClientError) -> anyhow::Error {
    match error.status() {
        Some(status) if (400..500).contains(&status) && status != 401 && status != 403 => {
            UsageError(error.to_string()).into()
        }
        _ => error.into(),
    }
}

fn print_run_line(run: &api::Run) {
    println!(
        "{:>6}  {:<20} #{:<4} {:<24} {:<10} {:<18} {}",
        run.id,
        run.pipeline,
        run.number,
        run.name,
        run.status,
        run.result.as_deref().unwrap_or("-"),
        run.source_branch.trim_start_matches("refs/heads/")
    );
}

fn run_exit(run: &api::Run) -> u8 {
    match run.result.as_deref() {
        Some("failed") | Some("canceled") => EXIT_FAILED,
        _ => EXIT_OK,
    }
}

pub(crate) fn encode(text: &str) -> String {
    lockgate_agent::client::percent_encode(text)
}

pub fn runs(cmd: RunsCommand) -> anyhow::Result<u8> {
    match cmd {
        RunsCommand::List {
            connection,
            project,
            pipeline,
            branch,
            status,
            limit,
            json,
        } => {
            let mut query = vec![format!("limit={limit}")];
            if let Some(project) = project {
                query.push(format!("project={}", encode(&project)));
            }
            if let Some(pipeline) = pipeline {
                query.push(format!("pipeline={pipeline}"));
            }
            if let Some(branch) = branch {
                query.push(format!("branch={}", encode(&branch)));
            }
            if let Some(status) = status {
                query.push(format!("status={}", encode(&status)));
            }
            let runs: Vec<api::Run> = connection
                .client()?
                .get_json(&format!("/api/v1/runs?{}", query.join("&")))
                .map_err(client_error)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else {
                runs.iter().for_each(print_run_line);
            }
            Ok(EXIT_OK)
        }
        RunsCommand::Show {
            connection,
            id,
            json,
        } => {
            let detail: api::RunDetail = connection
                .client()?
                .get_json(&format!("/api/v1/runs/{id}"))
                .map_err(client_error)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&detail)?);
            } else {
                print_run_line(&detail.run);
                for job in &detail.jobs {
                    println!(
                        "  {} / {}: {} {}",
                        job.stage,
                        job.display_name,
                        job.status,
                        job.result.as_deref().unwrap_or("")
                    );
                    if let Some(reason) = &job.waiting_for {
                        println!("    waiting for {reason}");
                    }
                    for step in &job.steps {
                        println!(
                            "    {}: {} {}",
                            step.name,
                            step.status,
                            step.result.as_deref().unwrap_or("")
                        );
                    }
                }
                if let Some(diagnostics) = detail.diagnostics.as_array() {
                    for d in diagnostics {
                        println!(
                            "  {}: {}",
                            d["code"].as_str().unwrap_or(""),
                            d["message"].as_str().unwrap_or("")
                        );
                    }
                }
            }
            Ok(run_exit(&detail.run))
        }
        RunsCommand::Logs {
            connection,
            id,
            follow,
        } => {
            let client = connection.client()?;
            if !follow {
                print!(
                    "{}",
                    client
                        .get_text(&format!("/api/v1/runs/{id}/logs"))
                        .map_err(client_error)?
                );
                return Ok(EXIT_OK);
            }
            follow_run(&client, id)
        }
        RunsCommand::Cancel { connection, id } => {
            let run: api::Run = connection
                .client()?
                .post_json(&format!("/api/v1/runs/{id}/cancel"), &serde_json::json!({}))
                .map_err(client_error)?;
            print_run_line(&run);
            Ok(EXIT_OK)
        }
        RunsCommand::StartStage {
            connection,
            id,
            stage,
        } => {
            let run: api::Run = connection
                .client()?
                .post_json(
                    &format!("/api/v1/runs/{id}/stages/{}/start", encode(&stage)),
                    &serde_json::json!({}),
                )
                .map_err(client_error)?;
            println!("stage {stage} started");
            print_run_line(&run);
            Ok(EXIT_OK)
        }
        RunsCommand::Rerun {
            connection,
            id,
            failed,
        } => {
            let path = if failed {
                format!("/api/v1/runs/{id}/rerun-failed")
            } else {
                format!("/api/v1/runs/{id}/rerun")
            };
            let run: api::Run = connection
                .client()?
                .post_json(&path, &serde_json::json!({}))
                .map_err(client_error)?;
            print_run_line(&run);
            Ok(EXIT_OK)
        }
    }
}

/// Prints each job's log in order, streaming the running ones, until the run completes.
fn follow_run(client: &ServerClient, id: i64) -> anyhow::Result<u8> {
    let mut printed: std::collections::HashSet<i64> = std::collections::HashSet::new();
    loop {
        let detail: api::RunDetail = client
            .get_json(&format!("/api/v1/runs/{id}"))
            .map_err(client_error)?;
        let next = detail.jobs.iter().find(|job| {
            !printed.contains(&job.id) && job.status != "pending" && job.status != "queued"
        });
        match next {
            Some(job) => {
                println!("##[section]{} / {}", job.stage, job.display_name);
                client
                    .follow_events(
                        &format!("/api/v1/runs/{id}/jobs/{}/logs/stream", job.id),
                        |event, data| {
                            if event == "lines" {
                                let parsed: serde_json::Value =
                                    serde_json::from_str(data).unwrap_or_default();
                                for line in parsed["lines"].as_array().into_iter().flatten() {
                                    println!("{}", line["text"].as_str().unwrap_or(""));
                                }
                            }
                            event != "end" && event != "reload"
                        },
                    )
                    .map_err(client_error)?;
                printed.insert(job.id);
            }
            None if detail.run.status == "completed" => {
                print_run_line(&detail.run);
                return Ok(run_exit(&detail.run));
            }
            None => std::thread::sleep(std::time::Duration::from_millis(500)),
        }
    }
}

pub fn pipelines(cmd: PipelinesCommand) -> anyhow::Result<u8> {
    match cmd {
        PipelinesCommand::Create {
            connection,
            project,
            name,
            repository,
            yaml,
        } => {
            let body = api::CreatePipeline {
                name,
                repository,
                yaml_path: yaml,
            };
            let pipeline: api::Pipeline = connection
                .client()?
                .post_json(
                    &format!("/api/v1/projects/{}/pipelines", encode(&project)),
                    &body,
                )
                .map_err(client_error)?;
            println!(
                "{}  {}  {}:{}",
                pipeline.id, pipeline.name, pipeline.repository, pipeline.yaml_path
            );
            Ok(EXIT_OK)
        }
        PipelinesCommand::List {
            connection,
            project,
        } => {
            let pipelines: Vec<api::Pipeline> = connection
                .client()?
                .get_json(&format!("/api/v1/projects/{}/pipelines", encode(&project)))
                .map_err(client_error)?;
            for pipeline in pipelines {
                println!(
                    "{}  {}  {}:{}",
                    pipeline.id, pipeline.name, pipeline.repository, pipeline.yaml_path
                );
            }
            Ok(EXIT_OK)
        }
    }
}

pub fn queue(args: QueueArgs) -> anyhow::Result<u8> {
    let mut parameters = Vec::new();
    for param in &args.params {
        let (name, value) = param
            .split_once('=')
            .ok_or_else(|| UsageError(format!("--param `{param}` is not NAME=VALUE")))?;
        parameters.push((name.to_string(), value.to_string()));
    }
    let mut variables = std::collections::BTreeMap::new();
    for var in &args.vars {
        let (name, value) = var
            .split_once('=')
            .ok_or_else(|| UsageError(format!("--var `{var}` is not NAME=VALUE")))?;
        variables.insert(name.trim().to_string(), value.to_string());
    }
    let body = api::QueueRun {
        branch: args.branch,
        parameters,
        variables,
    };
    let run: api::Run = args
        .connection
        .client()?
        .post_json(&format!("/api/v1/pipelines/{}/runs", args.pipeline), &body)
        .map_err(client_error)?;
    print_run_line(&run);
    Ok(run_exit(&run))
}

pub fn tasks(cmd: TasksCommand) -> anyhow::Result<u8> {
    match cmd {
        TasksCommand::Upload {
            connection,
            dir,
            overwrite,
        } => {
            // The same checks as `lockgate run --tasks`: task.json is read by the runner's parser.
            let (_, archive) = lockgate_runner::tasks::package::pack_package(&dir)
                .map_err(|e| UsageError(format!("task package: {e}")))?;
            let path = if overwrite {
                "/api/v1/tasks?overwrite=true"
            } else {
                "/api/v1/tasks"
            };
            let info: api::TaskPackageInfo = connection
                .client()?
                .post_bytes(path, "application/zip", &archive)
                .map_err(client_error)?;
            println!(
                "Uploaded {}@{} ({}, {} bytes)",
                info.name, info.version, info.id, info.size
            );
            Ok(EXIT_OK)
        }
        TasksCommand::List { connection } => {
            let tasks: Vec<api::TaskPackageInfo> = connection
                .client()?
                .get_json("/api/v1/tasks")
                .map_err(client_error)?;
            for info in tasks {
                println!(
                    "{}  {}@{}  {} bytes",
                    info.id, info.name, info.version, info.size
                );
            }
            Ok(EXIT_OK)
        }
    }
}

pub fn migrate_store(args: MigrateStoreArgs) -> anyhow::Result<u8> {
    use lockgate_server::migrate_store as migrate;
    let data_dir = migrate::parse_from(&args.from).map_err(UsageError)?;
    migrate::check_to(&args.to).map_err(UsageError)?;
    if let Some(objects) = &args.objects {
        lockgate_server::objects::Objects::open(objects, &data_dir)
            .map_err(|e| UsageError(format!("--objects: {e}")))?;
    }
    migrate::run(migrate::MigrateOptions {
        data_dir,
        database: args.to,
        objects: args.objects,
    })?;
    Ok(EXIT_OK)
}
