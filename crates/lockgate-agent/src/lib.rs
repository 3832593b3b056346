//! The agent loop: lease a job from the server, check out its commit, run it with an executor (the
//! runner), stream events back in batches while a heartbeat keeps the lease, upload artifacts and
//! finish. It speaks only `lockgate-protocol` over HTTP: the built-in agent of `lockgate up` and a
//! remote agent are the same code.

pub mod client;
pub mod remote;
pub mod runner_executor;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use lockgate_protocol::agent::{JobEvent, JobLease};

pub use client::{ClientError, ServerClient};

/// How the agent is set up.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub server_url: String,
    pub token: String,
    /// Where job workspaces are created; this agent's alone (stale `job-*` folders in it are removed
    /// when the agent starts).
    pub work_dir: PathBuf,
    /// How long one lease request waits on the server for a job.
    pub lease_wait_seconds: u32,
    /// The agent's name (its `Agent.Name` capability).
    pub name: String,
    /// User capabilities (`--capability k=v`), reported with the system ones when the agent starts
    /// and whenever it reconnects.
    pub capabilities: BTreeMap<String, String>,
}

/// A leased job as an executor sees it.
pub struct LeasedJob<'a> {
    pub lease: &'a JobLease,
    /// The checked-out commit.
    pub source_dir: &'a Path,
    /// A fresh folder for this job (the executor's workspace root).
    pub job_dir: &'a Path,
    /// Set when the server asked to cancel the job.
    pub cancel: Arc<AtomicBool>,
    /// Artifacts other jobs of the run published before this one started: name and local folder.
    pub inputs: Vec<(String, PathBuf)>,
    /// Uploads an artifact (name, folder or file) to the server now. Executors call it when a step
    /// publishes, so an artifact reported as published is on the server even if the agent dies next.
    pub upload: &'a (dyn Fn(&str, &Path) -> Result<(), String> + Sync),
    /// Task packages the server uploaded for this job's `task:` steps, unpacked in the agent's task
    /// cache (folders holding a task.json).
    pub task_packages: Vec<PathBuf>,
    /// The job's secure files (name and where the agent put the content: a private folder of the
    /// job, removed with it).
    pub secure_files: Vec<(String, PathBuf)>,
}

/// What an executor hands back when the job ends.
#[derive(Clone, Debug, Default)]
pub struct ExecutionOutcome {
    /// `succeeded`, `succeededWithIssues`, `failed`, `canceled` or `skipped`.
    pub result: String,
    /// Artifacts to upload when the job ends: name and the folder (or file) holding its content.
    /// Executors that upload as steps publish ([`LeasedJob::upload`]) leave this empty.
    pub artifacts: Vec<(String, PathBuf)>,
    /// Output variables by `step.var`.
    pub outputs: BTreeMap<String, String>,
    /// The keys of `outputs` set with `issecret=true`.
    pub secret_outputs: std::collections::BTreeSet<String>,
}

/// Runs a leased job and reports what happens through the reporter.
pub trait JobExecutor: Send + Sync {
    fn execute(&self, job: &LeasedJob<'_>, reporter: &EventReporter) -> ExecutionOutcome;
}

/// Buffers events and sends them to the server in batches (every 200 ms or 500 events).
pub struct EventReporter {
    buffer: Mutex<Vec<JobEvent>>,
    wake: Condvar,
    closed: AtomicBool,
}

const BATCH_EVENTS: usize = 500;

/// A batch stays under this many bytes of JSON, well below the server's request body limit (1 MiB).
const BATCH_BYTES: usize = 512 * 1024;

/// At most this many events wait for a server that cannot be reached; older ones are dropped
/// (with a warning in the log) beyond it. Lines are counted once per event, so with merged log
/// events this is many more lines.
const MAX_UNSENT_EVENTS: usize = 20_000;

/// Events not delivered yet, oldest first.
#[derive(Default)]
struct Unsent(std::collections::VecDeque<JobEvent>);

impl Unsent {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn extend(&mut self, events: Vec<JobEvent>) {
        self.0.extend(events);
    }
    fn push_front(&mut self, event: JobEvent) {
        self.0.push_front(event);
    }
    /// Drops the oldest events beyond `max`; returns how many.
    fn keep_newest(&mut self, max: usize) -> usize {
        let over = self.0.len().saturating_sub(max);
        self.0.drain(..over);
        over
    }
    /// The oldest events that fit one batch (at least one).
    fn front_batch(&self, max_bytes: usize) -> Vec<JobEvent> {
        split_by_json_size(self.0.iter().take(BATCH_EVENTS).cloned(), max_bytes)
            .into_iter()
            .next()
            .unwrap_or_default()
    }
    fn drop_front(&mut self, count: usize) {
        self.0.drain(..count.min(self.0.len()));
    }
}

/// Splits items, in order, into groups of at most `max_bytes` of JSON each (an item larger than that
/// travels alone). Sizes are counted while serialising into a sink, so nothing is allocated for them.
/// Used for event batches and for the test cases of one publish.
pub(crate) fn split_by_json_size<T: serde::Serialize>(
    items: impl IntoIterator<Item = T>,
    max_bytes: usize,
) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0;
    for item in items {
        let size = json_size(&item);
        match groups.last_mut() {
            Some(group) if bytes + size <= max_bytes => group.push(item),
            _ => {
                groups.push(vec![item]);
                bytes = 0;
            }
        }
        bytes += size;
    }
    groups
}

/// How many bytes `value` takes as JSON.
fn json_size<T: serde::Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).map_or(0, |()| count.0)
}

impl EventReporter {
    fn new() -> Arc<EventReporter> {
        Arc::new(EventReporter {
            buffer: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            closed: AtomicBool::new(false),
        })
    }

    /// Queues an event for the server.
    pub fn report(&self, event: JobEvent) {
        if let Ok(mut buffer) = self.buffer.lock() {
            // Consecutive log lines of the same step travel as one event.
            if let (
                Some(JobEvent::Log {
                    step: last_step,
                    lines,
                }),
                JobEvent::Log { step, lines: more },
            ) = (buffer.last_mut(), &event)
                && last_step == step
            {
                lines.extend(more.iter().cloned());
            } else {
                buffer.push(event);
            }
            if buffer.len() >= BATCH_EVENTS {
                self.wake.notify_all();
            }
        }
    }

    /// Logs a line of the agent itself (not of a step).
    pub fn agent_line(&self, line: &str) {
        self.report(JobEvent::Log {
            step: None,
            lines: vec![line.to_string()],
        });
    }

    fn take(&self, wait: Duration) -> Vec<JobEvent> {
        let Ok(buffer) = self.buffer.lock() else {
            return Vec::new();
        };
        let mut buffer = if buffer.is_empty() && !self.closed.load(Ordering::SeqCst) {
            match self.wake.wait_timeout(buffer, wait) {
                Ok((guard, _)) => guard,
                Err(_) => return Vec::new(),
            }
        } else {
            buffer
        };
        std::mem::take(&mut *buffer)
    }
}

/// The longest wait between two attempts to reach the server.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Sleeps `wait`, waking early when `stop` is set.
fn sleep_unless_stopped(wait: Duration, stop: &AtomicBool) {
    let tick = Duration::from_millis(100);
    let mut slept = Duration::ZERO;
    while slept < wait && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(tick);
        slept += tick;
    }
}

/// Whether an error means the lease is gone (the job was finished, expired or the agent removed):
/// retrying cannot deliver anything then.
fn lease_lost(error: &ClientError) -> bool {
    matches!(error.status(), Some(401 | 404 | 409))
}

/// The agent: leases jobs until `stop` is set.
pub struct Agent {
    config: AgentConfig,
    client: ServerClient,
    executor: Arc<dyn JobExecutor>,
}

impl Agent {
    pub fn new(config: AgentConfig, executor: Arc<dyn JobExecutor>) -> Agent {
        let client = ServerClient::new(&config.server_url, &config.token);
        Agent {
            config,
            client,
            executor,
        }
    }

    /// Removes the job folders a previous agent process left in the work folder (it was killed while
    /// running them); returns how many there were. Their results are the server's to reconcile.
    pub fn remove_stale_job_folders(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.config.work_dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let is_job = entry.file_name().to_string_lossy().starts_with("job-");
            if is_job && std::fs::remove_dir_all(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Leases and runs jobs until `stop` is set, after removing stale job folders. Connection errors
    /// back off (1 s doubling to 10 s).
    pub fn run(&self, stop: &AtomicBool) {
        let leftover = lockgate_runner::sandbox::kill_leftover_sandboxes(&self.config.work_dir);
        if leftover > 0 {
            eprintln!(
                "agent: killed {leftover} sandbox process(es) an earlier run left in {}",
                self.config.work_dir.display()
            );
        }
        let stale = self.remove_stale_job_folders();
        if stale > 0 {
            eprintln!(
                "agent: removed {stale} job folder(s) left in {} by an earlier run",
                self.config.work_dir.display()
            );
        }
        let info = remote::agent_info(&self.config.name, &self.config.capabilities);
        let mut backoff = Duration::from_secs(1);
        // Capabilities are reported when the agent starts and after every lost connection (the
        // server may have restarted, or the agent been re-registered).
        let mut announced = false;
        while !stop.load(Ordering::SeqCst) {
            if !announced {
                match self.client.announce(&info) {
                    Ok(()) => announced = true,
                    Err(error) => {
                        eprintln!("agent: cannot report capabilities: {error}");
                        sleep_unless_stopped(backoff, stop);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            match self.client.lease(self.config.lease_wait_seconds) {
                Ok(Some(lease)) => {
                    backoff = Duration::from_secs(1);
                    self.run_job(&lease);
                }
                Ok(None) => backoff = Duration::from_secs(1),
                Err(error) => {
                    eprintln!("agent: cannot lease a job: {error}");
                    announced = false;
                    sleep_unless_stopped(backoff, stop);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Runs one leased job to its end and reports its result; returns the result sent.
    pub fn run_job(&self, lease: &JobLease) -> String {
        let reporter = EventReporter::new();
        let cancel = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let heartbeat = self.spawn_heartbeat(lease, cancel.clone(), done.clone());
        let flusher = self.spawn_flusher(lease, reporter.clone());

        let job_dir = self
            .config
            .work_dir
            .join(format!("job-{}-{}", lease.job_id, lease.attempt));
        let source_dir = job_dir.join("s");
        let fetch = job_checks_out_self(&lease.job);
        let outcome = match prepare_source(&job_dir, &source_dir, lease, &self.config.token, fetch)
        {
            Ok(()) => {
                if fetch {
                    reporter.agent_line(&format!(
                        "Checked out {} at {}",
                        lease.source.branch, lease.source.commit
                    ));
                }
                let prepared = self
                    .download_inputs(lease, &job_dir.join("artifacts-in"))
                    .and_then(|inputs| Ok((inputs, self.fetch_tasks(lease, &reporter)?)))
                    .and_then(|(inputs, tasks)| {
                        let secure = self.fetch_secure_files(lease, &job_dir.join("secure"))?;
                        Ok((inputs, tasks, secure))
                    });
                match prepared {
                    Ok((inputs, task_packages, secure_files)) => {
                        let upload =
                            |name: &str, path: &Path| self.upload_artifact(lease, name, path);
                        let job = LeasedJob {
                            lease,
                            source_dir: &source_dir,
                            job_dir: &job_dir,
                            cancel: cancel.clone(),
                            inputs,
                            upload: &upload,
                            task_packages,
                            secure_files,
                        };
                        self.executor.execute(&job, &reporter)
                    }
                    Err(message) => {
                        reporter.agent_line(&format!("##[error]{message}"));
                        ExecutionOutcome {
                            result: "failed".into(),
                            ..ExecutionOutcome::default()
                        }
                    }
                }
            }
            Err(message) => {
                reporter.agent_line(&format!("##[error]{message}"));
                ExecutionOutcome {
                    result: "failed".into(),
                    ..ExecutionOutcome::default()
                }
            }
        };
        // The job's secure files are gone before the server hears that it ended.
        let _ = std::fs::remove_dir_all(job_dir.join("secure"));
        let mut result = outcome.result.clone();
        for (name, path) in &outcome.artifacts {
            if let Err(error) = self.upload_artifact(lease, name, path) {
                reporter.agent_line(&format!("##[error]Cannot upload artifact {name}: {error}"));
                result = "failed".into();
            }
        }
        if cancel.load(Ordering::SeqCst) && result != "failed" {
            result = "canceled".into();
        }
        reporter.closed.store(true, Ordering::SeqCst);
        reporter.wake.notify_all();
        let _ = flusher.join();
        done.store(true, Ordering::SeqCst);
        let _ = heartbeat.join();
        // A server that is restarting gets the result when it is back, as long as the lease
        // lasts; after that the server has failed the job itself.
        let give_up =
            std::time::Instant::now() + Duration::from_secs(u64::from(lease.lease_seconds));
        let mut backoff = Duration::from_millis(200);
        loop {
            match self
                .client
                .finish(lease, &result, &outcome.outputs, &outcome.secret_outputs)
            {
                Ok(()) => break,
                Err(error) if lease_lost(&error) || std::time::Instant::now() >= give_up => {
                    eprintln!("agent: cannot finish job {}: {error}", lease.job_id);
                    break;
                }
                Err(error) => {
                    eprintln!("agent: cannot finish job {} yet: {error}", lease.job_id);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&job_dir);
        result
    }

    fn spawn_heartbeat(
        &self,
        lease: &JobLease,
        cancel: Arc<AtomicBool>,
        done: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<()> {
        let client = self.client.clone();
        let lease = lease.clone();
        std::thread::spawn(move || {
            let interval = Duration::from_secs(u64::from(lease.heartbeat_seconds.max(1)));
            let tick = Duration::from_millis(100);
            let mut waited = Duration::ZERO;
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(tick);
                waited += tick;
                if waited < interval {
                    continue;
                }
                waited = Duration::ZERO;
                match client.heartbeat(&lease) {
                    Ok(reply) if reply.cancel_requested => cancel.store(true, Ordering::SeqCst),
                    Ok(_) => {}
                    // The lease is gone (expired or the job was finished elsewhere): stop the job.
                    Err(error) if error.status() == Some(409) || error.status() == Some(404) => {
                        cancel.store(true, Ordering::SeqCst)
                    }
                    Err(error) => eprintln!("agent: heartbeat failed: {error}"),
                }
            }
        })
    }

    fn spawn_flusher(
        &self,
        lease: &JobLease,
        reporter: Arc<EventReporter>,
    ) -> std::thread::JoinHandle<()> {
        let client = self.client.clone();
        let lease = lease.clone();
        std::thread::spawn(move || {
            let mut unsent = Unsent::default();
            let mut dropped = 0;
            let mut lost = false;
            let mut backoff = Duration::from_millis(200);
            // After the job ended, events are tried for as long as the lease would last.
            let mut give_up = std::time::Instant::now();
            let mut was_closed = false;
            loop {
                let closed = reporter.closed.load(Ordering::SeqCst);
                if closed && !was_closed {
                    was_closed = true;
                    give_up = std::time::Instant::now()
                        + Duration::from_secs(u64::from(lease.lease_seconds));
                }
                let events = reporter.take(Duration::from_millis(200));
                if !events.is_empty() {
                    unsent.extend(events);
                    dropped += unsent.keep_newest(MAX_UNSENT_EVENTS);
                }
                // A batch that cannot be sent stays (a step's finished log is not lost while the
                // server restarts) and is tried again next round, until the lease is gone.
                while !unsent.is_empty() && !lost {
                    if dropped > 0 {
                        unsent.push_front(JobEvent::Log {
                            step: None,
                            lines: vec![format!(
                                "##[warning]The agent could not reach the server and dropped the {dropped} oldest log event(s) it held"
                            )],
                        });
                        dropped = 0;
                    }
                    let batch = unsent.front_batch(BATCH_BYTES);
                    match client.send_events(&lease, batch.clone()) {
                        Ok(()) => {
                            unsent.drop_front(batch.len());
                            backoff = Duration::from_millis(200);
                        }
                        Err(error) if lease_lost(&error) => {
                            eprintln!(
                                "agent: the server no longer takes this job's events: {error}"
                            );
                            lost = true;
                        }
                        Err(error) => {
                            eprintln!(
                                "agent: cannot send events, keeping {} for later: {error}",
                                unsent.len()
                            );
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                            if closed && std::time::Instant::now() >= give_up {
                                lost = true;
                            }
                            break;
                        }
                    }
                }
                let drained = unsent.is_empty() || lost;
                if closed && drained && reporter.buffer.lock().map(|b| b.is_empty()).unwrap_or(true)
                {
                    break;
                }
            }
        })
    }

    /// Fetches the run's artifacts into `root/<name>/<path>`.
    fn download_inputs(
        &self,
        lease: &JobLease,
        root: &Path,
    ) -> Result<Vec<(String, PathBuf)>, String> {
        let files = self
            .client
            .run_artifacts(lease)
            .map_err(|e| format!("cannot list the run's artifacts: {e}"))?;
        let mut inputs: Vec<(String, PathBuf)> = Vec::new();
        for file in files {
            let relative = Path::new(&file.path);
            if file.artifact.contains(['/', '\\'])
                || relative
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(format!(
                    "the server sent an unsafe artifact path {}/{}",
                    file.artifact, file.path
                ));
            }
            let folder = root.join(&file.artifact);
            let target = folder.join(relative);
            let content = self
                .client
                .download(lease, &file.download_url)
                .map_err(|e| e.to_string())?;
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            std::fs::write(&target, content).map_err(|e| format!("{}: {e}", target.display()))?;
            if !inputs.iter().any(|(name, _)| *name == file.artifact) {
                inputs.push((file.artifact.clone(), folder));
            }
        }
        Ok(inputs)
    }

    /// Fetches the lease's secure files into `folder` (readable by the agent's user only),
    /// checking each one's digest.
    fn fetch_secure_files(
        &self,
        lease: &JobLease,
        folder: &Path,
    ) -> Result<Vec<(String, PathBuf)>, String> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let mut files = Vec::new();
        if lease.secure_files.is_empty() {
            return Ok(files);
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)
            .map_err(|e| format!("{}: {e}", folder.display()))?;
        for (index, file) in lease.secure_files.iter().enumerate() {
            let content = self
                .client
                .download(lease, &file.download_path)
                .map_err(|e| format!("cannot download secure file `{}`: {e}", file.name))?;
            if blake3::hash(&content).to_hex().as_str() != file.digest {
                return Err(format!(
                    "secure file `{}` arrived damaged (its digest does not match)",
                    file.name
                ));
            }
            let path = folder.join(format!("{index}"));
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            std::io::Write::write_all(&mut out, &content)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            files.push((file.name.clone(), path));
        }
        Ok(files)
    }

    /// Makes the lease's task packages available in the agent's task cache
    /// (`<work>/tasks/<id>/<version>-<digest>/`, kept between jobs: a package is downloaded once), checking
    /// each download's blake3 digest and every archive entry as the server did.
    fn fetch_tasks(
        &self,
        lease: &JobLease,
        reporter: &EventReporter,
    ) -> Result<Vec<PathBuf>, String> {
        let mut folders = Vec::new();
        for task in &lease.tasks {
            let label = format!("{}@{}", task.name, task.version);
            let safe = |text: &str| {
                !text.is_empty()
                    && text
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                    && !text.starts_with('.')
            };
            if !safe(&task.id) || !safe(&task.version) || !safe(&task.digest) {
                return Err(format!(
                    "the server sent an unsafe task package name {label}"
                ));
            }
            let home = self.config.work_dir.join("tasks").join(&task.id);
            let digest: String = task.digest.chars().take(16).collect();
            let folder = home.join(format!("{}-{digest}", task.version));
            let marker = home.join(format!("{}-{digest}.completed", task.version));
            if !marker.is_file() {
                let content = self
                    .client
                    .download(lease, &task.download_path)
                    .map_err(|e| format!("cannot download task {label}: {e}"))?;
                let actual = blake3::hash(&content).to_hex().to_string();
                if actual != task.digest {
                    return Err(format!(
                        "task {label}: the download's digest {actual} is not {}",
                        task.digest
                    ));
                }
                std::fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
                let archive = home.join(format!("{}-{digest}.zip", task.version));
                std::fs::write(&archive, &content)
                    .map_err(|e| format!("{}: {e}", archive.display()))?;
                let _ = std::fs::remove_dir_all(&folder);
                let unpacked = lockgate_runner::tasks::package::unpack_package(&archive, &folder);
                let _ = std::fs::remove_file(&archive);
                unpacked.map_err(|e| format!("task {label}: {e}"))?;
                std::fs::write(&marker, b"").map_err(|e| format!("{}: {e}", marker.display()))?;
                reporter.agent_line(&format!("Downloaded task {label}"));
            }
            folders.push(folder);
        }
        Ok(folders)
    }

    fn upload_artifact(&self, lease: &JobLease, name: &str, root: &Path) -> Result<(), String> {
        let mut files = Vec::new();
        if root.is_file() {
            let file_name = root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push((file_name, root.to_path_buf()));
        } else {
            collect_files(root, root, &mut files)
                .map_err(|e| format!("{}: {e}", root.display()))?;
        }
        for (relative, path) in files {
            let content = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            self.client
                .upload_artifact_file(lease, name, &relative, &content)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    let mut entries = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_files(root, &path, out)?;
        } else if kind.is_file() {
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            out.push((relative, path));
        }
    }
    Ok(())
}

/// Whether the leased job checks out its own repository (`checkout: self`, written or implied):
/// only then does the agent fetch the commit, as Azure's agent leaves the sources alone for
/// `checkout: none` jobs and deployment jobs. A job the agent cannot read is fetched for.
fn job_checks_out_self(job: &serde_json::Value) -> bool {
    let Ok(plan_job) = serde_json::from_value::<lockgate_pipeline::plan::Job>(job.clone()) else {
        return true;
    };
    lockgate_runner::orchestrator::job_phases(&plan_job, Duration::from_secs(60), "agent")
        .iter()
        .flat_map(|phase| &phase.steps)
        .any(|step| {
            matches!(&step.action, lockgate_runner::spec::StepAction::Checkout { repository, .. }
                if repository.eq_ignore_ascii_case("self"))
        })
}

/// Prepares the job folder, and fetches exactly the leased commit into `source_dir` with the
/// agent's token when `fetch` (the job checks out `self`).
fn prepare_source(
    job_dir: &Path,
    source_dir: &Path,
    lease: &JobLease,
    token: &str,
    fetch: bool,
) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(job_dir);
    std::fs::create_dir_all(source_dir)
        .map_err(|e| format!("cannot create {}: {e}", source_dir.display()))?;
    if !fetch {
        return Ok(());
    }
    let header = format!("http.extraHeader=Authorization: Bearer {token}");
    let git = |args: &[&str]| -> Result<(), String> {
        let output = Command::new("git")
            .args(args)
            .current_dir(source_dir)
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .map_err(|e| format!("cannot start git: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "git {} failed: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    };
    git(&["init", "-q"])?;
    git(&[
        "-c",
        &header,
        "fetch",
        "-q",
        "--depth",
        "1",
        &lease.source.clone_url,
        &lease.source.commit,
    ])?;
    git(&["checkout", "-q", "--detach", &lease.source.commit])?;
    Ok(())
}

#[cfg(test)]
mod tests;
