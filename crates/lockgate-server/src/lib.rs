//! The Lockgate server: REST API and agent protocol under `/api/v1`, the server-rendered web UI, Git
//! hosting over smart HTTP, and the scheduler that turns pushes into runs and runs into leased jobs.
//! [`start`] binds, serves and starts the built-in agent; [`router`] is the whole HTTP surface.

pub mod agent_api;
pub mod agentless;
pub mod agents;
pub mod api;
pub mod approvals;
pub mod auth;
pub mod compile_cache;
pub mod connections;
pub mod environments;
pub mod error;
pub mod git;
pub mod launch;
pub mod library;
pub mod limits;
pub mod live;
pub mod locks;
pub mod log_archive;
pub mod migrate_store;
pub mod objects;
pub mod redeploy;
pub(crate) mod resources;
pub mod rest_check;
pub mod run_engine;
pub mod runs;
pub mod secrets;
pub mod secure_files;
pub mod targets;
pub mod tasks;
pub mod trigger;
pub mod ui;

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use lockgate_agent::{Agent, AgentConfig, JobExecutor};
use lockgate_store::Store;

/// Default largest JSON or form body accepted by the API and the UI.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default largest artifact file or git request body (a push) accepted.
pub const MAX_UPLOAD_BYTES: u64 = 512 * 1024 * 1024;
/// Default largest request head: the request line plus every header name and value.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Bounds on what a client may send; over-limit bodies get 413 and over-limit headers 431 before the
/// server keeps them in memory (docs/security.md, "Limits").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// JSON and form bodies of the API and the UI (`max_body_bytes`).
    pub max_body_bytes: usize,
    /// Git request bodies and artifact files, streamed rather than held in memory (`max_upload_bytes`).
    pub max_upload_bytes: u64,
    /// The request line and headers together (`max_header_bytes`).
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: MAX_BODY_BYTES,
            max_upload_bytes: MAX_UPLOAD_BYTES,
            max_header_bytes: MAX_HEADER_BYTES,
        }
    }
}

/// How a server is set up.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Holds `lockgate.db`, `repos/`, `artifacts/` and the built-in agent's `work/`.
    pub data_dir: PathBuf,
    /// Which database to use: `sqlite` (`lockgate.db` in the data folder, the default) or a
    /// `postgres://` URL (see `Store::open`).
    pub database: String,
    /// Where artifact contents live: empty for `artifacts/` in the data folder, another folder or an
    /// `s3://` bucket (see [`objects::Objects::open`]).
    pub objects: String,
    /// The bucket's credentials from the config file; `None` takes them from the environment.
    pub objects_credentials: Option<objects::S3Credentials>,
    /// This server's name among several on one database (`LOCKGATE_SERVER_NAME`): its built-in
    /// agents are `built-in-<name>-<n>` instead of `built-in-<n>`, so that a starting server
    /// releases the jobs of its own agents only ([`runs::reconcile`]).
    pub name: Option<String>,
    /// Where to listen (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Start the built-in agent.
    pub builtin_agent: bool,
    /// How many built-in agents (jobs run at the same time on this machine).
    pub builtin_agents: usize,
    /// How long a job lease lasts without a heartbeat.
    pub lease_seconds: u32,
    /// Body and header limits.
    pub limits: Limits,
    /// The key secrets are encrypted with at rest, as `LOCKGATE_SECRET_KEY` gives it (64 hex digits
    /// or base64); `None` reads (or creates) `secret.key` in the data folder.
    pub secret_key: Option<String>,
    /// Which pool a `vmImage` goes to (`[vm_images]` in the config file).
    pub vm_images: agents::VmImages,
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> ServerConfig {
        ServerConfig {
            data_dir,
            database: "sqlite".into(),
            objects: String::new(),
            objects_credentials: None,
            name: None,
            listen,
            builtin_agent: true,
            builtin_agents: 2,
            lease_seconds: 60,
            limits: Limits::default(),
            secret_key: None,
            vm_images: agents::VmImages::default(),
        }
    }
}

/// What every handler shares.
pub struct Shared {
    pub store: Store,
    /// Artifact contents by digest (a folder or a bucket).
    pub objects: objects::Objects,
    pub data_dir: PathBuf,
    /// The URL clients use to reach this server (clone URLs, links); set once bound.
    pub base_url: RwLock<String>,
    pub live: live::LiveLogs,
    /// Woken whenever a job becomes queued, so waiting lease requests answer at once.
    pub job_queued: tokio::sync::Notify,
    pub lease_seconds: u32,
    pub limits: Limits,
    /// Which pool a `vmImage` goes to.
    pub vm_images: agents::VmImages,
    /// Failed sign-ins per user name and per client address.
    pub login_throttle: auth::LoginThrottle,
    /// Encrypts secrets before they are stored and decrypts them for the scheduler and the lease.
    pub secrets: secrets::SecretBox,
    /// Compiled pipelines by (pipeline, commit, file), for the pipeline page.
    pub compile_cache: compile_cache::CompileCache,
    /// Per leased job, the secret values its agent's reports are masked with (built at the lease).
    pub job_maskers:
        std::sync::Mutex<std::collections::HashMap<i64, lockgate_runner::masking::SecretMasker>>,
    /// The invoke-REST-API checks being evaluated ([`rest_check`]).
    pub rest_checks: rest_check::RestChecks,
}

#[derive(Clone)]
pub struct AppState(pub Arc<Shared>);

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(store: Store, data_dir: PathBuf, base_url: String, lease_seconds: u32) -> AppState {
        AppState::with_limits(store, data_dir, base_url, lease_seconds, Limits::default())
    }

    pub fn with_limits(
        store: Store,
        data_dir: PathBuf,
        base_url: String,
        lease_seconds: u32,
        limits: Limits,
    ) -> AppState {
        let objects = objects::Objects::Folder(data_dir.join("artifacts"));
        AppState::build(
            store,
            objects,
            data_dir,
            base_url,
            lease_seconds,
            limits,
            secrets::SecretBox::random(),
            agents::VmImages::default(),
        )
    }

    /// A state whose secrets are sealed with `secrets` (the server key, see [`start`]).
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        store: Store,
        objects: objects::Objects,
        data_dir: PathBuf,
        base_url: String,
        lease_seconds: u32,
        limits: Limits,
        secrets: secrets::SecretBox,
        vm_images: agents::VmImages,
    ) -> AppState {
        AppState(Arc::new(Shared {
            store,
            objects,
            data_dir,
            base_url: RwLock::new(base_url),
            live: live::LiveLogs::default(),
            job_queued: tokio::sync::Notify::new(),
            lease_seconds,
            limits,
            vm_images,
            login_throttle: auth::LoginThrottle::default(),
            secrets,
            compile_cache: compile_cache::CompileCache::default(),
            job_maskers: Default::default(),
            rest_checks: Default::default(),
        }))
    }

    pub fn base_url(&self) -> String {
        self.base_url
            .read()
            .map(|url| url.clone())
            .unwrap_or_default()
    }

    pub fn repos_dir(&self) -> PathBuf {
        self.data_dir.join("repos")
    }

    pub fn artifacts_dir(&self) -> PathBuf {
        self.data_dir.join("artifacts")
    }
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    // Git and artifact bodies are streamed and counted by their handlers against `max_upload_bytes`.
    let uploads = Router::new()
        .merge(git::routes())
        .merge(agent_api::upload_routes())
        .merge(tasks::upload_routes())
        .merge(secure_files::upload_routes())
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(api::routes())
        .merge(approvals::routes())
        .merge(locks::routes())
        .merge(library::routes())
        .merge(connections::routes())
        .merge(secure_files::routes())
        .merge(redeploy::routes())
        .merge(rest_check::routes())
        .merge(environments::routes())
        .merge(agent_api::routes())
        .merge(agents::routes())
        .merge(tasks::routes())
        .merge(ui::routes())
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .merge(uploads)
        .fallback(|| async { error::ApiError::not_found("page") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::csrf_guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::enforce,
        ))
        .layer(axum::middleware::from_fn(limits::security_headers))
        .with_state(state)
}

/// A server started by [`start`].
pub struct RunningServer {
    pub state: AppState,
    pub addr: SocketAddr,
    pub url: String,
    /// What the start found unfinished and brought up to date ([`runs::reconcile`]).
    pub reconciled: runs::Reconciled,
    stop_agent: Arc<AtomicBool>,
    server: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Serves until the task ends (ctrl-c handling is the caller's).
    pub async fn wait(self) {
        let _ = self.server.await;
    }

    pub fn stop(&self) {
        self.stop_agent.store(true, Ordering::SeqCst);
        self.server.abort();
    }
}

/// Opens the store, binds, reconciles the runs an earlier process left unfinished
/// ([`runs::reconcile`]), serves, and starts the lease reaper and (when configured) the built-in
/// agents running jobs with `executor`.
pub async fn start(
    mut config: ServerConfig,
    executor: Arc<dyn JobExecutor>,
) -> anyhow::Result<RunningServer> {
    use anyhow::Context;
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data folder {}",
            config.data_dir.display()
        )
    })?;
    // Git and the agent run in other folders: every path must be absolute.
    config.data_dir = std::path::absolute(&config.data_dir)?;
    let store = Store::open(&config.database, &config.data_dir).await?;
    // Before anything is served: a wrong key stops here with a clear error, and an older database's
    // clear secrets are encrypted in place (docs/security.md, "Secrets at rest").
    let key_env = config.secret_key.as_deref();
    let secret_box = secrets::SecretBox::new(secrets::load_key(&config.data_dir, key_env)?);
    secret_box
        .prepare_store(&store, &secrets::key_source(&config.data_dir, key_env))
        .await?;
    // A bad value or a bucket that does not answer stops the start here, before anything is served.
    let objects = objects::Objects::open_with(
        &config.objects,
        &config.data_dir,
        config.objects_credentials.as_ref(),
    )
    .map_err(|error| anyhow::anyhow!("--objects: {error}"))?;
    objects
        .check()
        .await
        .map_err(|error| anyhow::anyhow!("--objects: {error}"))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let state = AppState::build(
        store,
        objects,
        config.data_dir.clone(),
        url.clone(),
        config.lease_seconds,
        config.limits,
        secret_box,
        config.vm_images.clone(),
    );
    std::fs::create_dir_all(state.repos_dir())?;
    std::fs::create_dir_all(state.artifacts_dir())?;
    // Before anything is served or leased: what a stopped process left half done.
    let agent_names: Vec<String> = (1..=config.builtin_agents.max(1))
        .map(|number| match &config.name {
            Some(server) => format!("{}{server}-{number}", runs::BUILTIN_AGENT_PREFIX),
            None => format!("{}{number}", runs::BUILTIN_AGENT_PREFIX),
        })
        .collect();
    let reconciled = runs::reconcile(&state, &agent_names)
        .await
        .map_err(|error| anyhow::anyhow!("cannot reconcile unfinished runs: {}", error.message))?;

    let app = router(state.clone());
    let server = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(error) = axum::serve(listener, app).await {
            eprintln!("lockgate-server: {error}");
        }
    });
    tokio::spawn(runs::reap_expired_leases(state.clone()));
    tokio::spawn(log_archive::archive_logs(state.clone()));

    let stop_agent = Arc::new(AtomicBool::new(false));
    if config.builtin_agent {
        for name in agent_names {
            let token = auth::random_token("lga_");
            state
                .store
                .register_builtin_agent(&name, &auth::token_hash(&token))
                .await?;
            let agent_config = AgentConfig {
                server_url: url.clone(),
                token,
                // One folder per agent: each removes what a killed predecessor left in its own.
                work_dir: config.data_dir.join("work").join(&name),
                lease_wait_seconds: 20,
                name: name.clone(),
                capabilities: Default::default(),
            };
            let stop = stop_agent.clone();
            let executor = executor.clone();
            std::thread::Builder::new().name(name).spawn(move || {
                // Give the listener a moment; the agent retries anyway.
                std::thread::sleep(Duration::from_millis(10));
                Agent::new(agent_config, executor).run(&stop);
            })?;
        }
    }
    Ok(RunningServer {
        state,
        addr,
        url,
        reconciled,
        stop_agent,
        server,
    })
}
