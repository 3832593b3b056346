//! Starting a server from the command line: `lockgate up` (data folder, port, first admin, demo project)
//! and `lockgate server --config FILE`. Owns the tokio runtime so the `lockgate` binary stays synchronous.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use lockgate_agent::runner_executor::{RunnerExecutor, Sandbox, TaskRegistry};

use crate::{AppState, ServerConfig, auth, git, runs};

/// What `lockgate up` / `lockgate server` asked for.
#[derive(Clone, Debug)]
pub struct LaunchOptions {
    pub data_dir: PathBuf,
    /// Which database: `sqlite` (in the data folder) or a database URL (see [`ServerConfig::database`]).
    pub database: String,
    /// Where artifact contents live (see [`ServerConfig::objects`]); empty for the data folder.
    pub objects: String,
    /// The bucket's credentials (`objects_access_key_id`, `objects_secret_access_key`).
    pub objects_credentials: Option<crate::objects::S3Credentials>,
    pub port: u16,
    pub seed_demo: bool,
    pub builtin_agent: bool,
    /// How many built-in agents run jobs at the same time.
    pub builtin_agents: usize,
    /// How long a lease lasts without a heartbeat before the job fails (`lease_seconds`, default 60).
    pub lease_seconds: u32,
    /// The tasks the built-in agents can run (the runner's built-in tasks unless the caller adds more).
    pub tasks: TaskRegistry,
    /// Run every job of the built-in agents in the bubblewrap sandbox (the default). Without bubblewrap
    /// the server refuses to start unless this is switched off explicitly (`--no-sandbox`,
    /// `sandbox = false`); docs/security.md.
    pub sandbox: bool,
    /// More folders and files the sandbox hides from every job besides the data folder (credentials
    /// in the server user's home, a Docker socket).
    pub sandbox_hide: Vec<PathBuf>,
    /// Body and header limits (`max_body_bytes`, `max_upload_bytes`, `max_header_bytes`).
    pub limits: crate::Limits,
    /// Which pool a `vmImage` goes to (the `[vm_images]` table).
    pub vm_images: crate::agents::VmImages,
}

/// Reads a `lockgate server` config file: `key = value` lines (TOML-style strings, numbers and
/// booleans; `#` comments). Keys: `data_dir`, `database`, `objects` (with `objects_access_key_id` and
/// `objects_secret_access_key`, both or neither), `port`, `lease_seconds`, `builtin_agent`, `builtin_agents`,
/// `sandbox`, `sandbox_hide` (absolute paths separated by commas); after a `[vm_images]` line,
/// `"IMAGE" = "POOL"` lines (see [`crate::agents::VmImages`]).
pub fn read_config(path: &Path) -> anyhow::Result<LaunchOptions> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut options = LaunchOptions {
        data_dir: PathBuf::from("lockgate-data"),
        database: "sqlite".into(),
        objects: String::new(),
        objects_credentials: None,
        port: 8080,
        seed_demo: false,
        builtin_agent: true,
        builtin_agents: 2,
        lease_seconds: 60,
        tasks: TaskRegistry::with_builtins(),
        sandbox: true,
        sandbox_hide: Vec::new(),
        limits: crate::Limits::default(),
        vm_images: crate::agents::VmImages::default(),
    };
    let mut in_vm_images = false;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), index + 1);
        if line.starts_with('[') {
            anyhow::ensure!(
                line == "[vm_images]",
                "{}: unknown section `{line}` (known: [vm_images])",
                at()
            );
            in_vm_images = true;
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .with_context(|| format!("{}: expected `key = value`", at()))?;
        let value = value.trim().trim_matches('"');
        if in_vm_images {
            let image = key.trim().trim_matches('"');
            options
                .vm_images
                .insert(image, value)
                .map_err(|why| anyhow::anyhow!("{}: [vm_images]: {why}", at()))?;
            continue;
        }
        match key.trim() {
            "data_dir" => {
                let dir = PathBuf::from(value);
                options.data_dir = if dir.is_relative() {
                    path.parent().unwrap_or(Path::new(".")).join(dir)
                } else {
                    dir
                };
            }
            "database" => {
                anyhow::ensure!(
                    !value.is_empty(),
                    "{}: `database` must be `sqlite` or a database URL",
                    at()
                );
                options.database = value.to_string();
            }
            "objects" => {
                crate::objects::Objects::open(value, &options.data_dir)
                    .map_err(|error| anyhow::anyhow!("{}: {error}", at()))?;
                options.objects = value.to_string();
            }
            "objects_access_key_id" | "objects_secret_access_key" => {
                anyhow::ensure!(!value.is_empty(), "{}: `{}` is empty", at(), key.trim());
                let credentials = options.objects_credentials.get_or_insert_with(|| {
                    crate::objects::S3Credentials {
                        access_key_id: String::new(),
                        secret_access_key: String::new(),
                    }
                });
                if key.trim() == "objects_access_key_id" {
                    credentials.access_key_id = value.to_string();
                } else {
                    credentials.secret_access_key = value.to_string();
                }
            }
            "port" => {
                options.port = value
                    .parse()
                    .with_context(|| format!("{}: `port` must be a number 0-65535", at()))?
            }
            "lease_seconds" => {
                options.lease_seconds = value
                    .parse()
                    .ok()
                    .filter(|n| (2..=3600).contains(n))
                    .with_context(|| {
                        format!("{}: `lease_seconds` must be a number from 2 to 3600", at())
                    })?
            }
            "builtin_agents" => {
                options.builtin_agents = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .with_context(|| {
                        format!("{}: `builtin_agents` must be a number from 1 to 64", at())
                    })?
            }
            "builtin_agent" => {
                options.builtin_agent = value
                    .parse()
                    .with_context(|| format!("{}: `builtin_agent` must be true or false", at()))?
            }
            "sandbox" => {
                options.sandbox = value
                    .parse()
                    .with_context(|| format!("{}: `sandbox` must be true or false", at()))?
            }
            "sandbox_hide" => {
                for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let hidden = PathBuf::from(part);
                    anyhow::ensure!(
                        hidden.is_absolute(),
                        "{}: `sandbox_hide` takes absolute paths separated by commas, not `{part}`",
                        at()
                    );
                    options.sandbox_hide.push(hidden);
                }
            }
            "max_body_bytes" => {
                options.limits.max_body_bytes = byte_count(value, "max_body_bytes", &at)?
            }
            "max_upload_bytes" => {
                options.limits.max_upload_bytes = byte_count(value, "max_upload_bytes", &at)?
            }
            "max_header_bytes" => {
                options.limits.max_header_bytes = byte_count(value, "max_header_bytes", &at)?
            }
            other => anyhow::bail!(
                "{}: unknown key `{other}` (known: data_dir, database, objects, objects_access_key_id, objects_secret_access_key, port, lease_seconds, builtin_agent, builtin_agents, sandbox, sandbox_hide, max_body_bytes, max_upload_bytes, max_header_bytes)",
                at()
            ),
        }
    }
    if let Some(credentials) = &options.objects_credentials {
        anyhow::ensure!(
            !credentials.access_key_id.is_empty() && !credentials.secret_access_key.is_empty(),
            "{}: `objects_access_key_id` and `objects_secret_access_key` go together",
            path.display()
        );
    }
    Ok(options)
}

/// A positive byte count from a config value.
fn byte_count<T: std::str::FromStr + Default + PartialEq>(
    value: &str,
    key: &str,
    at: &dyn Fn() -> String,
) -> anyhow::Result<T> {
    value
        .parse::<T>()
        .ok()
        .filter(|n| *n != T::default())
        .with_context(|| format!("{}: `{key}` must be a positive number of bytes", at()))
}

/// Starts the server and serves until ctrl-c.
pub fn run(options: LaunchOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, options.port));
        let mut config = ServerConfig::new(options.data_dir.clone(), listen);
        config.database = options.database.clone();
        config.objects = options.objects.clone();
        config.objects_credentials = options.objects_credentials.clone();
        config.builtin_agent = options.builtin_agent;
        config.builtin_agents = options.builtin_agents;
        config.lease_seconds = options.lease_seconds;
        config.limits = options.limits;
        config.vm_images = options.vm_images.clone();
        config.secret_key = std::env::var(crate::secrets::KEY_ENV).ok();
        config.name = server_name()?;
        let mut executor = RunnerExecutor::with_registry(options.tasks.clone());
        let isolation = job_isolation(&options)?;
        executor.sandbox = isolation.sandbox.clone();
        let server = crate::start(config, Arc::new(executor)).await?;
        let state = server.state.clone();
        let admin = ensure_admin(&state).await?;
        if options.seed_demo {
            seed_demo(&state)
                .await
                .context("cannot seed the demo project")?;
        }
        println!("Lockgate is running at {}/", server.url);
        println!("Data folder: {}", state.data_dir.display());
        println!("Job isolation: {}", isolation.description);
        let reconciled = server.reconciled;
        if reconciled.runs > 0 {
            println!(
                "Reconciled {} unfinished run(s) left by an earlier stop: {} job(s) queued again, \
                 {} failed (the server stopped while they ran)",
                reconciled.runs, reconciled.requeued, reconciled.failed
            );
        }
        if let Some((password, token)) = admin {
            println!("Sign in as `admin` with password: {password}");
            println!("Access token for git and the CLI (shown once): {token}");
            println!(
                "  git clone http://admin:{token}@{}/git/demo/app.git",
                server.addr
            );
        }
        println!("Press Ctrl-C to stop.");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = server.wait() => {}
        }
        Ok(())
    })
}

/// The isolation the built-in agents run jobs in, and the startup line naming it.
struct JobIsolation {
    sandbox: Option<Sandbox>,
    description: String,
}

/// Finds a working bubblewrap when the sandbox is asked for (it is by default) and hides the data
/// folder from every job; refuses to start without one rather than fall back silently.
fn job_isolation(options: &LaunchOptions) -> anyhow::Result<JobIsolation> {
    if !options.builtin_agent {
        return Ok(JobIsolation {
            sandbox: None,
            description: "no built-in agents (jobs run on remote agents)".into(),
        });
    }
    if !options.sandbox {
        return Ok(JobIsolation {
            sandbox: None,
            description:
                "NONE (--no-sandbox): jobs run as this user, with this server's access to \
                          the data folder, the database and other jobs' workspaces; only for a \
                          laptop where every pipeline author is trusted"
                    .into(),
        });
    }
    std::fs::create_dir_all(&options.data_dir).with_context(|| {
        format!(
            "cannot create the data folder {}",
            options.data_dir.display()
        )
    })?;
    let mut hidden = vec![std::path::absolute(&options.data_dir)?];
    hidden.extend(options.sandbox_hide.iter().cloned());
    let sandbox = Sandbox::detect(&hidden).map_err(|error| {
        anyhow::anyhow!(
            "cannot isolate jobs: {error} (`lockgate up --no-sandbox` or `sandbox = false` in the \
             config file runs jobs without isolation; see docs/security.md)"
        )
    })?;
    Ok(JobIsolation {
        description: format!(
            "bubblewrap sandbox ({}): each job sees only its own workspace, the data folder is \
             hidden, the network is shared",
            sandbox.version()
        ),
        sandbox: Some(sandbox),
    })
}

/// Creates the first administrator when there is no user yet; returns its password and a token.
pub async fn ensure_admin(state: &AppState) -> anyhow::Result<Option<(String, String)>> {
    if state.store.count_users().await? > 0 {
        return Ok(None);
    }
    let password = auth::random_token("")[..20].to_string();
    let hash = tokio::task::spawn_blocking({
        let password = password.clone();
        move || auth::hash_password(&password)
    })
    .await??;
    let user = state.store.create_user("admin", &hash, true).await?;
    let token = auth::random_token("lgp_");
    state
        .store
        .create_access_token(
            user.id,
            "first token",
            &auth::token_hash(&token),
            "read,write,admin",
        )
        .await?;
    Ok(Some((password, token)))
}

/// The checks of the demo's environments: dev deploys at once; test waits for an approval by
/// `admin` (who queued the run: the demo has one user, so the requester may approve); production
/// waits for an approval, business hours (Monday to Friday, 09:00-17:00 UTC) and runs of `main`.
async fn seed_demo_checks(state: &AppState, project_id: i64) -> anyhow::Result<()> {
    let approval = |instructions: &str| lockgate_store::NewApprovalCheck {
        approvers: vec!["admin".into()],
        min_approvals: 1,
        allow_requester: true,
        instructions: instructions.into(),
        timeout_minutes: 24 * 60,
        in_sequence: false,
        created_by: "admin".into(),
    };
    state
        .store
        .set_approval_check(
            project_id,
            "test",
            Some(&approval("Check the dev deployment, then approve.")),
        )
        .await?;
    state
        .store
        .set_approval_check(
            project_id,
            "prod",
            Some(&approval("Compare test with production first: lockgate environments diff test prod --pipeline 1")),
        )
        .await?;
    let branches = serde_json::json!({"allowedBranches": ["refs/heads/main"]}).to_string();
    state
        .store
        .set_environment_check(
            project_id,
            "prod",
            "branchControl",
            Some((&branches, "admin")),
        )
        .await?;
    let hours = serde_json::json!({
        "days": ["Mon", "Tue", "Wed", "Thu", "Fri"],
        "start": "09:00",
        "end": "17:00",
        "utcOffset": "+00:00",
    })
    .to_string();
    state
        .store
        .set_environment_check(project_id, "prod", "businessHours", Some((&hours, "admin")))
        .await?;
    Ok(())
}

/// The demo pipeline: build with an artifact, tests, and deployments to dev, test and production.
pub const DEMO_PIPELINE: &str = include_str!("demo/azure-pipelines.yml");

/// Creates project `demo`, repository `app` with the demo pipeline committed on `main`, and pipeline
/// `app-ci`; the initial commit queues the first run. Does nothing when `demo` exists.
pub async fn seed_demo(state: &AppState) -> anyhow::Result<()> {
    if state.store.project_by_name("demo").await?.is_some() {
        return Ok(());
    }
    let admin = state
        .store
        .user_by_name("admin")
        .await?
        .context("no admin user")?;
    let project = state.store.create_project("demo", admin.id).await?;
    let repository = state.store.create_repository(project.id, "app").await?;
    let dir = git::repository_dir(state, "demo", "app");
    git::init_bare(&dir).await?;
    state
        .store
        .create_pipeline(project.id, repository.id, "app-ci", "azure-pipelines.yml")
        .await?;
    seed_demo_checks(state, project.id).await?;

    let work = tempdir_in(&state.data_dir)?;
    let w = work.as_path();
    git::git(w, &["init", "-q", "-b", "main"]).await?;
    tokio::fs::write(w.join("azure-pipelines.yml"), DEMO_PIPELINE).await?;
    tokio::fs::write(
        w.join("README.md"),
        "# Demo app\n\nPushed by `lockgate up`.\n",
    )
    .await?;
    git::git(w, &["add", "."]).await?;
    git::git(
        w,
        &[
            "-c",
            "user.name=Lockgate",
            "-c",
            "user.email=lockgate@localhost",
            "commit",
            "-q",
            "-m",
            "Demo pipeline",
        ],
    )
    .await?;
    let target = dir.to_string_lossy().into_owned();
    let before = git::refs(&dir).await?;
    git::git(w, &["push", "-q", &target, "main"]).await?;
    let after = git::refs(&dir).await?;
    let _ = std::fs::remove_dir_all(w);
    runs::on_push(
        state,
        repository.id,
        "admin",
        &git::ref_updates(&before, &after),
    )
    .await
    .map_err(|e| anyhow::anyhow!(e.message))?;
    Ok(())
}

fn tempdir_in(base: &Path) -> anyhow::Result<PathBuf> {
    let dir = base.join(format!("tmp-{}", &auth::random_token("")[..12]));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `LOCKGATE_SERVER_NAME`: this server's name among several on one database (letters, digits, `-`,
/// `_` and `.`, at most 40), or `None` when unset.
fn server_name() -> anyhow::Result<Option<String>> {
    let Ok(name) = std::env::var("LOCKGATE_SERVER_NAME") else {
        return Ok(None);
    };
    let name = name.trim();
    if name.is_empty() {
        return Ok(None);
    }
    if name.len() > 40 || !crate::git::valid_name(name) {
        anyhow::bail!(
            "LOCKGATE_SERVER_NAME: `{name}` is not a server name (letters, digits, `-`, `_` and `.`, at most 40)"
        );
    }
    Ok(Some(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct DemoOnly;

    impl lockgate_pipeline::SourceReader for DemoOnly {
        fn read(
            &self,
            _: Option<&str>,
            path: &str,
        ) -> Result<String, lockgate_pipeline::ReadError> {
            if path == "azure-pipelines.yml" {
                Ok(DEMO_PIPELINE.to_string())
            } else {
                Err(lockgate_pipeline::ReadError::NotFound)
            }
        }
    }

    #[test]
    fn the_demo_pipeline_compiles_to_five_stages() {
        let input = lockgate_pipeline::CompileInput {
            entry: "azure-pipelines.yml".into(),
            reader: &DemoOnly,
            parameters: Vec::new(),
            variables: Vec::new(),
        };
        let output = lockgate_pipeline::compile(&input);
        assert!(!output.has_errors(), "{:?}", output.diagnostics);
        let plan = output.plan.unwrap();
        let stages: Vec<_> = plan.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            stages,
            ["Build", "Test", "DeployDev", "DeployTest", "DeployProd"]
        );
        assert!(plan.trigger.is_some());
    }

    #[test]
    fn config_files_are_read_with_line_numbers_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lockgate.toml");
        std::fs::write(
            &path,
            "# server\ndata_dir = \"data\"\nport = 9000\nbuiltin_agent = false\nbuiltin_agents = 3\n",
        )
        .unwrap();
        let options = read_config(&path).unwrap();
        assert_eq!(options.data_dir, dir.path().join("data"));
        assert_eq!(options.port, 9000);
        assert!(!options.builtin_agent);
        assert_eq!(options.builtin_agents, 3);
        assert_eq!(options.database, "sqlite");
        assert!(
            options.sandbox,
            "jobs are sandboxed unless the config says otherwise"
        );
        std::fs::write(&path, "sandbox = false\n").unwrap();
        assert!(!read_config(&path).unwrap().sandbox);
        std::fs::write(&path, "sandbox_hide = \"/root/.ssh, /run/docker.sock\"\n").unwrap();
        assert_eq!(
            read_config(&path).unwrap().sandbox_hide,
            [
                PathBuf::from("/root/.ssh"),
                PathBuf::from("/run/docker.sock")
            ]
        );
        std::fs::write(&path, "sandbox_hide = \"relative/path\"\n").unwrap();
        assert!(
            read_config(&path)
                .unwrap_err()
                .to_string()
                .contains("absolute")
        );
        std::fs::write(&path, "sandbox = maybe\n").unwrap();
        let error = read_config(&path).unwrap_err().to_string();
        assert!(error.contains(":1") && error.contains("sandbox"), "{error}");
        std::fs::write(&path, "database = \"postgres://db.example/lockgate\"\n").unwrap();
        assert_eq!(
            read_config(&path).unwrap().database,
            "postgres://db.example/lockgate"
        );
        std::fs::write(&path, "port = 9000\ncolour = blue\n").unwrap();
        let error = read_config(&path).unwrap_err().to_string();
        assert!(
            error.contains("lockgate.toml:2") && error.contains("colour"),
            "{error}"
        );
        std::fs::write(
            &path,
            "max_body_bytes = 2048\nmax_upload_bytes = 4096\nmax_header_bytes = 1024\n",
        )
        .unwrap();
        assert_eq!(
            read_config(&path).unwrap().limits,
            crate::Limits {
                max_body_bytes: 2048,
                max_upload_bytes: 4096,
                max_header_bytes: 1024
            }
        );
        std::fs::write(&path, "max_upload_bytes = 0\n").unwrap();
        let error = read_config(&path).unwrap_err().to_string();
        assert!(
            error.contains(":1") && error.contains("max_upload_bytes"),
            "{error}"
        );
        std::fs::write(&path, "port = lots\n").unwrap();
        assert!(read_config(&path).unwrap_err().to_string().contains(":1"));
    }

    #[test]
    fn the_vm_images_table_maps_images_to_pools_over_the_default_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lockgate.toml");
        std::fs::write(
            &path,
            "port = 9000\n[vm_images]\n\"windows-*\" = \"win\"\n\"macOS-14\" = \"Mac\" # the lab\n",
        )
        .unwrap();
        let options = read_config(&path).unwrap();
        assert_eq!(options.port, 9000);
        let images = &options.vm_images;
        assert_eq!(images.pool_for("windows-2022"), Some("win"));
        assert_eq!(images.pool_for("macos-14"), Some("mac"));
        assert_eq!(images.pool_for("macOS-13"), None);
        assert_eq!(
            images.pool_for("ubuntu-latest"),
            Some("default"),
            "the default mapping stays"
        );
        std::fs::write(&path, "[vm_images]\n\"win*dows\" = \"win\"\n").unwrap();
        let error = read_config(&path).unwrap_err().to_string();
        assert!(
            error.contains("lockgate.toml:2") && error.contains("win*dows"),
            "{error}"
        );
        std::fs::write(&path, "[vm_images]\n\"windows-latest\" = \"no pool!\"\n").unwrap();
        let error = read_config(&path).unwrap_err().to_string();
        assert!(error.contains("not a pool name"), "{error}");
        std::fs::write(&path, "[agents]\nport = 1\n").unwrap();
        let error = read_config(&path).unwrap_err().to_string();
        assert!(
            error.contains(":1") && error.contains("unknown section `[agents]`"),
            "{error}"
        );
    }
}
