//! Runs one job: prepares its workspace and predefined variables, evaluates each step's condition, expands
//! macros, runs the step through its task, processes logging commands from the output, masks secrets, and
//! reports everything as events. The same entry point serves `lockgate run` and a server's agent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lockgate_artifacts::ArtifactStore;

use crate::conditions;
use crate::events::{Event, EventSink, IssueKind, JobId, MaskingSink, TaskResult};
use crate::logging_command::{FormatKind, OutputLine, VsoCommand, parse_line};
use crate::masking::SecretMasker;
use crate::process::{
    CancelSignal, Confinement, ProcessEnd, ProcessLimits, ProcessSpec, Stream, run_process_in,
    stop_process_group,
};
use crate::spec::{JobSpec, StepAction, StepSpec};
use crate::tasks::{TaskError, TaskRegistry};
use crate::variables::VariableStore;
use crate::workspace::JobWorkspace;

/// What all jobs of one run share.
#[derive(Debug)]
pub struct RunContext {
    pub run_id: String,
    /// `Build.BuildNumber`; `build.updatebuildnumber` changes it for later jobs.
    pub build_number: Mutex<String>,
    pub artifacts: ArtifactStore,
    /// Where the run keeps uploaded files and logs.
    pub run_dir: PathBuf,
    /// The working tree `checkout: self` copies; None when the pipeline is not in a repository folder.
    pub self_repository: Option<PathBuf>,
    /// Other repositories by alias (`--repo ALIAS=DIR`).
    pub repositories: BTreeMap<String, PathBuf>,
    /// Where `self` lives on a server, with the job's access token: `checkout: self` points the
    /// copy's `origin` there, and with `persistCredentials: true` leaves the token in its git
    /// config so later steps can push. None for local runs.
    pub self_remote: Option<SelfRemote>,
    /// The environment every step starts from (the user's environment for local runs).
    pub base_env: Vec<(String, String)>,
    /// How long one "minute" of `timeoutInMinutes`/`cancelTimeoutInMinutes` lasts (60 s; tests shorten it).
    pub minute: Duration,
    /// How long to keep reading a step's output after its process exited.
    pub drain_grace: Duration,
    /// Folder of the local `Cache@2` store.
    pub cache_dir: PathBuf,
    /// Runs every step process in this sandbox (the job's workspace its only writable folder); None
    /// runs them directly on the machine.
    pub sandbox: Option<crate::sandbox::Sandbox>,
    /// Gives each job its own `HOME` (`<job workspace>/home`), so that parallel jobs never share the
    /// caches and settings tools keep there; false runs steps with the base environment's HOME
    /// (`lockgate run --shared-home`).
    pub job_home: bool,
    /// Secure files the run's jobs may download (`DownloadSecureFile@1`), by name: where their
    /// content is on this machine.
    pub secure_files: BTreeMap<String, PathBuf>,
}

/// The hosted repository of `self` and the token that may push to it (`System.AccessToken`).
#[derive(Clone)]
pub struct SelfRemote {
    pub url: String,
    pub token: String,
}

impl std::fmt::Debug for SelfRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfRemote")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl RunContext {
    pub fn build_number(&self) -> String {
        self.build_number
            .lock()
            .map(|n| n.clone())
            .unwrap_or_default()
    }
}

/// How a job ended and what it publishes to later jobs.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    pub result: TaskResult,
    /// Output variables by `step.var` (and deployment prefixes, `prefix.step.var`).
    pub outputs: BTreeMap<String, String>,
    /// The keys of `outputs` set with `issecret=true` (stored encrypted and masked by the server).
    pub secret_outputs: BTreeSet<String>,
    pub seconds: f64,
}

/// The mutable state of a running job.
pub struct JobState<'a> {
    pub id: JobId,
    pub variables: VariableStore,
    pub masker: SecretMasker,
    /// `Agent.JobStatus`.
    pub status: TaskResult,
    pub outputs: BTreeMap<String, String>,
    /// The keys of `outputs` set with `issecret=true`.
    pub secret_outputs: BTreeSet<String>,
    /// Extra prefixes the current phase publishes outputs under (deployment hooks).
    pub output_prefixes: Vec<String>,
    pub prepend_path: Vec<String>,
    /// `HOME` and the variables that keep pointing at the user's installed toolchains (see
    /// [`job_home_environment`]); empty when the run shares the user's HOME.
    home_env: Vec<(String, String)>,
    pub workspace: JobWorkspace,
    pub sink: &'a dyn EventSink,
    pub run: &'a RunContext,
    pub cancel: CancelSignal,
    pub cancel_grace: Duration,
    /// Work that runs after the last step (cache saves).
    pub post_job: Vec<PostJobAction>,
    /// Files removed when the job ends, whatever its result (downloaded secure files).
    pub removals: Vec<PathBuf>,
    /// Process groups started by steps, stopped when the job ends.
    process_groups: Vec<u32>,
    script_counter: u32,
}

/// Runs one job to completion and reports it through `sink`.
pub async fn run_job(
    run: &RunContext,
    registry: &TaskRegistry,
    spec: &JobSpec,
    workspace_root: &Path,
    sink: &dyn EventSink,
    cancel: &CancelSignal,
) -> JobOutcome {
    let started = Instant::now();
    let id = JobId {
        stage: spec.stage.clone(),
        job: spec.name.clone(),
    };
    // Every event of the job leaves through this sink, which masks every text in it: log lines,
    // names, messages, artifact names, test results (one choke point instead of one per path).
    let masker = SecretMasker::new();
    for variable in spec.variables.iter().filter(|variable| variable.secret) {
        masker.add(&variable.value);
    }
    for value in &spec.secret_values {
        masker.add(value);
    }
    let masking = MaskingSink::new(sink, masker.clone());
    let sink: &dyn EventSink = &masking;
    sink.event(Event::JobStarted {
        job: id.clone(),
        display_name: spec.display_name.clone(),
    });
    let workspace = match JobWorkspace::create(workspace_root, spec.workspace_clean.as_deref()) {
        Ok(workspace) => workspace,
        Err(err) => {
            sink.event(Event::Issue {
                job: id.clone(),
                step: None,
                kind: IssueKind::Error,
                message: format!(
                    "cannot create the job workspace {}: {err}",
                    workspace_root.display()
                ),
            });
            return finish(sink, id, TaskResult::Failed, BTreeMap::new(), started);
        }
    };
    // The job has its own cancel signal: the run's cancel, or the job timeout.
    let job_cancel = CancelSignal::new();
    let home_env = if run.job_home {
        if let Err(err) = std::fs::create_dir_all(&workspace.home) {
            sink.event(Event::Issue {
                job: id.clone(),
                step: None,
                kind: IssueKind::Error,
                message: format!(
                    "cannot create the job's home folder {}: {err}",
                    workspace.home.display()
                ),
            });
            return finish(sink, id, TaskResult::Failed, BTreeMap::new(), started);
        }
        job_home_environment(&run.base_env, &workspace.home)
    } else {
        Vec::new()
    };
    let mut state = JobState {
        id: id.clone(),
        variables: VariableStore::new(),
        masker,
        status: TaskResult::Succeeded,
        outputs: BTreeMap::new(),
        secret_outputs: BTreeSet::new(),
        output_prefixes: Vec::new(),
        prepend_path: Vec::new(),
        home_env,
        workspace,
        sink,
        run,
        cancel: job_cancel.clone(),
        cancel_grace: spec.cancel_timeout,
        post_job: Vec::new(),
        removals: Vec::new(),
        process_groups: Vec::new(),
        script_counter: 0,
    };
    for variable in &spec.variables {
        // Later definitions override earlier ones; a read-only one keeps its first value.
        let _ = state.variables.set(
            &variable.name,
            &variable.value,
            variable.secret,
            variable.readonly,
        );
    }
    set_predefined_variables(&mut state, spec);
    // Values may name other variables (`$(Pipeline.Workspace)/.pip`); the agent expands them when the
    // job starts (docs: "Define variables", macro syntax; "Pipeline caching" uses this pattern).
    for name in state.variables.expand_values() {
        if let Some(variable) = state.variables.get(&name)
            && variable.secret
        {
            let value = variable.value.clone();
            state.masker.add(&value);
        }
    }

    let deadline = spec.timeout.map(|timeout| Instant::now() + timeout);
    let watcher = {
        let outer = cancel.clone();
        let inner = job_cancel.clone();
        let cancel_timeout = spec.cancel_timeout;
        tokio::spawn(async move {
            match deadline {
                Some(deadline) => {
                    tokio::select! {
                        _ = outer.canceled() => {}
                        _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
                    }
                }
                None => outer.canceled().await,
            }
            inner.cancel();
            // Steps that run after the cancel (`always()`, `canceled()`) have the job's cancel
            // timeout to finish; then what still runs is killed (Microsoft's page "Pipeline run
            // sequence", section "Timeouts and disconnects"). A forced cancel of the run skips the
            // grace period.
            tokio::select! {
                _ = outer.forced() => {}
                _ = tokio::time::sleep(cancel_timeout) => {}
            }
            inner.force();
        })
    };

    let mut step_index = 0;
    for phase in &spec.phases {
        if let Some(hook) = phase.hook.as_deref() {
            let run_hook = match hook {
                "on.failure" => state.status == TaskResult::Failed,
                "on.success" => state.status.is_success() && !state.cancel.is_canceled(),
                _ => true,
            };
            if !run_hook {
                continue;
            }
            let cycle = match hook {
                "preDeploy" => "PreIteration",
                "on.failure" | "on.success" => "PostIteration",
                _ => "Iteration",
            };
            state.variables.set_system("Strategy.CycleName", cycle);
            state.variables.set_system("Lockgate.Hook", hook);
            if let Some(increment) = phase.increment {
                state
                    .variables
                    .set_system("Strategy.Increment", increment.to_string());
            }
        }
        state.output_prefixes.clone_from(&phase.output_prefixes);
        // The `on: failure` hook is the rollback: its steps' default `succeeded()` looks at the
        // hook itself ("Deployment jobs", lifecycle hooks), and the job stays failed whatever
        // they do.
        let failed_before = (phase.hook.as_deref() == Some("on.failure"))
            .then(|| std::mem::replace(&mut state.status, TaskResult::Succeeded));
        for step in &phase.steps {
            step_index += 1;
            run_step(&mut state, registry, step, step_index).await;
        }
        if let Some(before) = failed_before {
            state.status = before.merge(state.status);
        }
    }
    run_post_job(&mut state, step_index + 1);
    watcher.abort();
    for group in std::mem::take(&mut state.process_groups) {
        stop_process_group(group, Duration::from_millis(500).min(state.cancel_grace)).await;
    }
    for path in std::mem::take(&mut state.removals) {
        let _ = std::fs::remove_file(path);
    }
    let timed_out =
        deadline.is_some_and(|deadline| Instant::now() >= deadline) && !cancel.is_canceled();
    if timed_out {
        sink.event(Event::Issue {
            job: id.clone(),
            step: None,
            kind: IssueKind::Error,
            message: format!(
                "the job ran longer than its maximum time of {}",
                describe_duration(spec.timeout.unwrap_or_default())
            ),
        });
    }
    let mut result = state.status;
    if cancel.is_canceled() || (timed_out && result != TaskResult::Failed) {
        result = TaskResult::Canceled;
    }
    if result == TaskResult::Failed && spec.continue_on_error {
        result = TaskResult::SucceededWithIssues;
    }
    let mut outcome = finish(
        sink,
        id,
        result,
        std::mem::take(&mut state.outputs),
        started,
    );
    outcome.secret_outputs = std::mem::take(&mut state.secret_outputs);
    outcome
}

/// Work a task asked to do after the job's steps.
#[derive(Debug, Clone)]
pub enum PostJobAction {
    /// Cache@2: save `path` as the cache entry folder `entry` for `key` (only when the job succeeded).
    SaveCache {
        entry: PathBuf,
        path: PathBuf,
        key: String,
    },
}

fn run_post_job(state: &mut JobState<'_>, index: usize) {
    let actions = std::mem::take(&mut state.post_job);
    if actions.is_empty() || !state.status.is_success() || state.cancel.is_canceled() {
        return;
    }
    for (offset, action) in actions.into_iter().enumerate() {
        let index = index + offset;
        let started = Instant::now();
        let PostJobAction::SaveCache { entry, path, key } = action;
        let display_name = format!("Post-job: Cache {key}");
        state.sink.event(Event::StepStarted {
            job: state.id.clone(),
            step: index,
            display_name: display_name.clone(),
        });
        let result = match crate::tasks::cache::save(&entry, &path, &key) {
            Ok(0) => {
                log_runner(
                    state,
                    index,
                    "The cache entry already exists; nothing saved",
                );
                TaskResult::Succeeded
            }
            Ok(count) => {
                log_runner(
                    state,
                    index,
                    &format!("Saved {count} files to the cache for key {key}"),
                );
                TaskResult::Succeeded
            }
            Err(message) => {
                issue(
                    state,
                    Some(index),
                    IssueKind::Warning,
                    &format!("cache not saved: {message}"),
                );
                TaskResult::SucceededWithIssues
            }
        };
        state.sink.event(Event::StepFinished {
            job: state.id.clone(),
            step: index,
            display_name,
            result,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
}

fn finish(
    sink: &dyn EventSink,
    id: JobId,
    result: TaskResult,
    outputs: BTreeMap<String, String>,
    started: Instant,
) -> JobOutcome {
    let seconds = started.elapsed().as_secs_f64();
    sink.event(Event::JobFinished {
        job: id,
        result,
        seconds,
    });
    JobOutcome {
        result,
        outputs,
        secret_outputs: BTreeSet::new(),
        seconds,
    }
}

fn describe_duration(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds >= 60.0 {
        format!("{} minutes", seconds / 60.0)
    } else {
        format!("{seconds} seconds")
    }
}

fn set_predefined_variables(state: &mut JobState<'_>, spec: &JobSpec) {
    let ws = state.workspace.clone();
    let path = |p: &Path| p.display().to_string();
    let vars = &mut state.variables;
    vars.set_system("Agent.BuildDirectory", path(&ws.root));
    vars.set_system("Agent.TempDirectory", path(&ws.temp));
    vars.set_system("Agent.ToolsDirectory", path(&ws.tools));
    vars.set_system(
        "Agent.WorkFolder",
        path(ws.root.parent().unwrap_or(&ws.root)),
    );
    vars.set_system("Agent.JobName", spec.display_name.clone());
    vars.set_system("Agent.JobStatus", "Succeeded");
    vars.set_system("Build.ArtifactStagingDirectory", path(&ws.artifact_staging));
    vars.set_system("Build.StagingDirectory", path(&ws.artifact_staging));
    vars.set_system("Build.BinariesDirectory", path(&ws.binaries));
    vars.set_system("Build.SourcesDirectory", path(&ws.sources));
    vars.set_system("Build.Repository.LocalPath", path(&ws.sources));
    vars.set_system("Build.BuildNumber", state.run.build_number());
    vars.set_system("Common.TestResultsDirectory", path(&ws.test_results));
    vars.set_system("Pipeline.Workspace", path(&ws.root));
    vars.set_system("System.DefaultWorkingDirectory", path(&ws.sources));
    vars.set_system("System.ArtifactsDirectory", path(&ws.artifact_staging));
    vars.set_system("System.JobName", spec.name.clone());
    vars.set_system("System.JobDisplayName", spec.display_name.clone());
    vars.set_system("System.JobId", format!("{}.{}", spec.stage, spec.name));
    vars.set_system(
        "System.JobIdentifier",
        format!("{}.{}", spec.stage, spec.name),
    );
    vars.set_system("System.JobAttempt", "1");
    vars.set_system("System.PhaseName", spec.name.clone());
    vars.set_system("System.PhaseDisplayName", spec.display_name.clone());
    vars.set_system("System.PhaseAttempt", "1");
    vars.set_system("System.StageName", spec.stage.clone());
    vars.set_system("System.StageDisplayName", spec.stage_display_name.clone());
    vars.set_system("System.StageAttempt", "1");
    vars.set_system(
        "System.JobPositionInPhase",
        spec.position_in_phase.to_string(),
    );
    vars.set_system(
        "System.TotalJobsInPhase",
        spec.total_jobs_in_phase.to_string(),
    );
    if let Some(environment) = &spec.environment {
        vars.set_system("Environment.Name", environment.clone());
        vars.set_system("System.HostType", "deployment");
    }
    if let Some(strategy) = &spec.strategy {
        vars.set_system("Strategy.Name", strategy.clone());
    }
}

/// Runs one step (with retries) and folds its result into the job status.
async fn run_step(
    state: &mut JobState<'_>,
    registry: &TaskRegistry,
    step: &StepSpec,
    index: usize,
) {
    let started = Instant::now();
    let display_name = state
        .masker
        .mask(&state.variables.expand(&step.display_name))
        .into_owned();
    let job = state.id.clone();
    state.sink.event(Event::StepStarted {
        job: job.clone(),
        step: index,
        display_name: display_name.clone(),
    });
    let result = 'result: {
        if !step.enabled {
            break 'result TaskResult::Skipped;
        }
        let canceled = state.cancel.is_canceled();
        match conditions::step_condition(
            step.condition.as_deref(),
            &state.variables,
            state.status,
            canceled,
        ) {
            Ok(true) => {}
            Ok(false) => {
                let text = step.condition.as_deref().unwrap_or("succeeded()");
                log_runner(
                    state,
                    index,
                    &format!("Skipping step: condition `{text}` evaluated to false"),
                );
                break 'result TaskResult::Skipped;
            }
            Err(message) => {
                issue(
                    state,
                    Some(index),
                    IssueKind::Error,
                    &format!("{}: invalid condition: {message}", step.location),
                );
                break 'result TaskResult::Failed;
            }
        }
        let mut attempt = 0;
        loop {
            let outcome = run_step_once(state, registry, step, index).await;
            if outcome == TaskResult::Failed
                && attempt < step.retry_count_on_task_failure
                && !state.cancel.is_canceled()
            {
                attempt += 1;
                issue(
                    state,
                    Some(index),
                    IssueKind::Warning,
                    &format!(
                        "retrying the failed step (attempt {} of {})",
                        attempt + 1,
                        step.retry_count_on_task_failure + 1
                    ),
                );
                continue;
            }
            break outcome;
        }
    };
    let result = if result == TaskResult::Failed && step.continue_on_error {
        TaskResult::SucceededWithIssues
    } else {
        result
    };
    if result != TaskResult::Skipped {
        state.status = state.status.merge(result);
        state
            .variables
            .set_system("Agent.JobStatus", state.status.as_str());
    }
    state.sink.event(Event::StepFinished {
        job,
        step: index,
        display_name,
        result,
        seconds: started.elapsed().as_secs_f64(),
    });
}

async fn run_step_once(
    state: &mut JobState<'_>,
    registry: &TaskRegistry,
    step: &StepSpec,
    index: usize,
) -> TaskResult {
    let mut env = BTreeMap::new();
    for (name, value) in &step.env {
        let value = state.variables.expand(value);
        env.insert(name.clone(), value);
    }
    // The job timeout is enforced by the job's cancel signal (so the running step ends Canceled); the
    // process timeout is the step's own.
    let timeout = step.timeout;
    // A step that starts after the job was canceled runs because its condition holds for a canceled
    // job (`always()`, `canceled()`, "Pipeline run sequence", section "State and conditions"): that
    // cancel does not stop it; only a forced one (the cancel timeout ran out) does.
    let (step_cancel, relay) = if state.cancel.is_canceled() {
        let step_cancel = CancelSignal::new();
        let (job_cancel, relayed) = (state.cancel.clone(), step_cancel.clone());
        let relay = tokio::spawn(async move {
            job_cancel.forced().await;
            relayed.force();
        });
        (step_cancel, Some(relay))
    } else {
        (state.cancel.clone(), None)
    };
    let mut ctx = StepContext {
        job: state,
        index,
        step_name: step.name.clone(),
        inputs: BTreeMap::new(),
        env,
        timeout,
        cancel: step_cancel,
        complete: None,
        stderr_seen: false,
        timed_out: false,
        restrictions: step.restrictions.clone(),
        logging_commands: true,
        scripts: Vec::new(),
    };
    let outcome = match &step.action {
        StepAction::Task {
            name,
            major,
            inputs,
        } => {
            ctx.inputs = inputs
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), ctx.job.variables.expand(v)))
                .collect();
            match registry.get(name, *major) {
                Some(task) => task.run(&mut ctx).await,
                None => Err(TaskError(format!(
                    "{} ({})",
                    crate::tasks::unknown_task_message(name, *major),
                    step.location
                ))),
            }
        }
        StepAction::Checkout { repository, inputs } => {
            ctx.inputs = inputs
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), ctx.job.variables.expand(v)))
                .collect();
            crate::tasks::builtin_steps::checkout(&mut ctx, repository).await
        }
        StepAction::Publish { path, artifact } => {
            let path = ctx.job.variables.expand(path);
            let artifact = artifact.as_deref().map(|a| ctx.job.variables.expand(a));
            crate::tasks::builtin_steps::publish(&mut ctx, &path, artifact.as_deref())
        }
        StepAction::Download { source, inputs } => {
            ctx.inputs = inputs
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), ctx.job.variables.expand(v)))
                .collect();
            crate::tasks::builtin_steps::download(&mut ctx, source)
        }
    };
    if let Some(relay) = relay {
        relay.abort();
    }
    let result = match outcome {
        Ok(result) => result,
        Err(TaskError(message)) => {
            ctx.error(&message);
            TaskResult::Failed
        }
    };
    if ctx.timed_out {
        let message = "the step has timed out".to_string();
        ctx.error(&message);
        return TaskResult::Failed;
    }
    if ctx.job.cancel.is_canceled() && result != TaskResult::Succeeded {
        return TaskResult::Canceled;
    }
    match ctx.complete {
        Some(forced) => forced,
        None => result,
    }
}

/// What a task sees while it runs: its inputs (macro-expanded), the job's state, and helpers to log,
/// raise issues and start processes whose output goes through logging-command processing and masking.
pub struct StepContext<'s, 'a> {
    pub job: &'s mut JobState<'a>,
    pub index: usize,
    pub step_name: Option<String>,
    /// Inputs by lower-case name.
    pub inputs: BTreeMap<String, String>,
    /// The step's `env:` mapping, expanded.
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    pub cancel: CancelSignal,
    /// Set by `task.complete`.
    pub complete: Option<TaskResult>,
    pub stderr_seen: bool,
    pub timed_out: bool,
    /// Which logging commands the step may use.
    pub restrictions: crate::spec::CommandRestrictions,
    /// Whether `##vso[...]` lines in the step's process output are run as logging commands (true);
    /// false prints them as plain lines (what SSH@0 does with a remote machine's output by default).
    pub logging_commands: bool,
    /// Script files the step wrote ([`write_temp_script`](Self::write_temp_script)): macro-expanded,
    /// they may hold secrets, so they are removed when the step ends, whatever way it ends. A crashed
    /// agent's leftovers go with its job folder, which the agent removes when it starts again.
    scripts: Vec<PathBuf>,
}

impl Drop for StepContext<'_, '_> {
    fn drop(&mut self) {
        for script in self.scripts.drain(..) {
            let _ = std::fs::remove_file(script);
        }
    }
}

impl StepContext<'_, '_> {
    /// An input by name (case-insensitive); empty strings count as absent.
    pub fn input(&self, name: &str) -> Option<&str> {
        self.inputs
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
            .filter(|value| !value.trim().is_empty())
    }

    /// The first input present among `names` (a task input and its aliases).
    pub fn input_any(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|name| self.input(name))
    }

    pub fn required_input(&self, names: &[&str]) -> Result<&str, TaskError> {
        self.input_any(names)
            .ok_or_else(|| TaskError(format!("input required: {}", names.first().unwrap_or(&"?"))))
    }

    /// A boolean input (`true`/`false`, case-insensitive), `default` when absent.
    pub fn input_bool(&self, names: &[&str], default: bool) -> Result<bool, TaskError> {
        match self.input_any(names) {
            None => Ok(default),
            Some(value) if value.trim().eq_ignore_ascii_case("true") => Ok(true),
            Some(value) if value.trim().eq_ignore_ascii_case("false") => Ok(false),
            Some(value) => Err(TaskError(format!(
                "input {} must be true or false, not `{value}`",
                names.first().unwrap_or(&"?")
            ))),
        }
    }

    /// A path input resolved against `System.DefaultWorkingDirectory`.
    pub fn resolve_path(&self, value: &str) -> PathBuf {
        let path = Path::new(value.trim());
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.job.workspace.sources.join(path)
        }
    }

    pub fn variable(&self, name: &str) -> Option<&str> {
        self.job.variables.value(name)
    }

    /// Writes a line to the step log (masked).
    pub fn log(&self, line: &str) {
        log_runner(self.job, self.index, line);
    }

    pub fn warning(&self, message: &str) {
        issue(self.job, Some(self.index), IssueKind::Warning, message);
    }

    pub fn error(&self, message: &str) {
        issue(self.job, Some(self.index), IssueKind::Error, message);
    }

    /// Sets a variable as `task.setvariable` does.
    pub fn set_variable(
        &mut self,
        name: &str,
        value: &str,
        secret: bool,
        output: bool,
        readonly: bool,
    ) {
        set_variable(self, name, value, secret, output, readonly);
    }

    /// The environment for a child process: the base environment, the job's own HOME, every non-secret
    /// variable (a variable or `env:` named HOME wins), the step's
    /// `env:`, `TF_BUILD`, `AGENT_JOBSTATUS`, and `PATH` with `task.prependpath` entries first.
    pub fn process_env(&self) -> Vec<(String, String)> {
        let mut env: BTreeMap<String, String> = self.job.run.base_env.iter().cloned().collect();
        env.extend(self.job.home_env.iter().cloned());
        for (name, value) in self.job.variables.environment() {
            env.insert(name, value);
        }
        env.insert("TF_BUILD".into(), "True".into());
        env.insert("AGENT_JOBSTATUS".into(), self.job.status.as_str().into());
        for (name, value) in &self.env {
            env.insert(name.clone(), value.clone());
        }
        if !self.job.prepend_path.is_empty() {
            let mut parts: Vec<String> = self.job.prepend_path.iter().rev().cloned().collect();
            if let Some(path) = env.get("PATH") {
                parts.push(path.clone());
            }
            env.insert("PATH".into(), parts.join(":"));
        }
        env.into_iter().collect()
    }

    /// Writes a script file into the job's temp folder and returns its path.
    pub fn write_temp_script(
        &mut self,
        extension: &str,
        content: &str,
    ) -> Result<PathBuf, TaskError> {
        self.write_step_file(extension, content.as_bytes(), None)
    }

    /// Writes a file only its owner can read (mode `mode`, set when it is created) into the job's temp
    /// folder, removed when the step ends like the scripts; for keys and helper programs that must not
    /// be readable by others. The path is for the child process: the caller should not print it.
    pub fn write_private_temp_file(
        &mut self,
        extension: &str,
        content: &[u8],
        mode: u32,
    ) -> Result<PathBuf, TaskError> {
        self.write_step_file(extension, content, Some(mode))
    }

    fn write_step_file(
        &mut self,
        extension: &str,
        content: &[u8],
        mode: Option<u32>,
    ) -> Result<PathBuf, TaskError> {
        self.job.script_counter += 1;
        let path = self.job.workspace.temp.join(format!(
            "step{}-{}.{extension}",
            self.index, self.job.script_counter
        ));
        self.scripts.push(path.clone());
        let fail =
            |err: std::io::Error| TaskError(format!("cannot write {}: {err}", path.display()));
        match mode {
            None => std::fs::write(&path, content).map_err(fail)?,
            Some(mode) => {
                use std::io::Write;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
                #[cfg(not(unix))]
                let _ = mode;
                let mut file = options.open(&path).map_err(fail)?;
                file.write_all(content).map_err(fail)?;
            }
        }
        Ok(path)
    }

    /// Runs a process as part of this step; returns its exit code, or the step result when it was stopped.
    pub async fn run_process(
        &mut self,
        spec: &ProcessSpec,
    ) -> Result<Result<i32, TaskResult>, TaskError> {
        self.run_process_with(spec, None).await
    }

    /// Runs a process like [`run_process`](Self::run_process) but returns its standard output lines
    /// instead of logging them (its standard error goes to the step log as usual).
    pub async fn run_process_capturing(
        &mut self,
        spec: &ProcessSpec,
    ) -> Result<(Result<i32, TaskResult>, Vec<String>), TaskError> {
        let mut captured = Vec::new();
        let end = self.run_process_with(spec, Some(&mut captured)).await?;
        Ok((end, captured))
    }

    async fn run_process_with(
        &mut self,
        spec: &ProcessSpec,
        mut capture: Option<&mut Vec<String>>,
    ) -> Result<Result<i32, TaskResult>, TaskError> {
        let limits = ProcessLimits {
            timeout: self.timeout,
            kill_grace: self.job.cancel_grace,
            drain_grace: self.job.run.drain_grace,
            masker: Some(self.job.masker.clone()),
        };
        let cancel = self.cancel.clone();
        let sandbox = self.job.run.sandbox.clone();
        let writable = self.job.workspace.root.clone();
        let confinement = sandbox.as_ref().map(|sandbox| Confinement {
            sandbox,
            writable: &writable,
        });
        let result =
            run_process_in(
                confinement,
                spec,
                &limits,
                &cancel,
                |stream, lines| match capture.as_deref_mut() {
                    Some(captured) if stream == Stream::Stdout => captured.extend(lines),
                    _ => self.handle_lines(stream, lines),
                },
            )
            .await;
        let (end, pid) = result
            .map_err(|err| TaskError(format!("cannot start {}: {err}", spec.program.display())))?;
        if let Some(pid) = pid {
            self.job.process_groups.push(pid);
        }
        Ok(match end {
            ProcessEnd::Exited(code) => Ok(code),
            ProcessEnd::TimedOut => {
                self.timed_out = true;
                Err(TaskResult::Failed)
            }
            ProcessEnd::Canceled => Err(TaskResult::Canceled),
        })
    }

    fn handle_lines(&mut self, stream: Stream, lines: Vec<String>) {
        if stream == Stream::Stderr {
            self.stderr_seen = true;
        }
        // Lines are masked where they leave the job (`MaskingSink`), after the commands before them
        // registered their secrets.
        let mut plain: Vec<String> = Vec::with_capacity(lines.len());
        for line in lines {
            if !self.logging_commands {
                plain.push(line);
                continue;
            }
            match parse_line(&line) {
                OutputLine::Plain(_) => plain.push(line),
                OutputLine::Vso(command) => {
                    self.flush(stream, &mut plain);
                    self.apply_command(command);
                }
                OutputLine::Format(kind, text) => {
                    let text = text.to_string();
                    self.flush(stream, &mut plain);
                    let job = self.job.id.clone();
                    match kind {
                        FormatKind::Group => self.job.sink.event(Event::Group {
                            job,
                            step: self.index,
                            title: Some(text),
                        }),
                        FormatKind::EndGroup => self.job.sink.event(Event::Group {
                            job,
                            step: self.index,
                            title: None,
                        }),
                        FormatKind::Debug if !self.debug() => {}
                        _ => plain.push(line.to_string()),
                    }
                }
                OutputLine::Malformed { line: text, reason } => {
                    plain.push(text.to_string());
                    if self.debug() {
                        plain.push(format!("##[debug]not a logging command: {reason}"));
                    }
                }
            }
        }
        self.flush(stream, &mut plain);
    }

    fn flush(&self, stream: Stream, lines: &mut Vec<String>) {
        if lines.is_empty() {
            return;
        }
        self.job.sink.event(Event::Log {
            job: self.job.id.clone(),
            step: self.index,
            stream,
            lines: std::mem::take(lines),
        });
    }

    fn debug(&self) -> bool {
        self.job
            .variables
            .value("System.Debug")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    fn apply_command(&mut self, command: VsoCommand) {
        let job = self.job.id.clone();
        // Restricted mode (agent `CommandRestriction(AllowedInRestrictedMode)`): task commands except
        // endpoints, attachments and uploads; nothing from the artifact, build or release areas.
        let allowed_in_restricted = command.area == "task"
            && !matches!(
                command.action.as_str(),
                "setendpoint" | "addattachment" | "uploadsummary" | "uploadfile"
            );
        if self.restrictions.restricted && !allowed_in_restricted {
            self.warning(&format!(
                "##vso[{}.{}] is not allowed in a step with `commands: restricted`; ignored",
                command.area, command.action
            ));
            return;
        }
        if command.area == "task"
            && command.action == "setvariable"
            && let Some(allowed) = &self.restrictions.settable_variables
        {
            let name = command.property("variable").unwrap_or("").trim();
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(name)) {
                self.warning(&format!(
                    "variable `{name}` is not in this step's settableVariables; not set"
                ));
                return;
            }
        }
        match (command.area.as_str(), command.action.as_str()) {
            ("task", "setvariable") => {
                let Some(name) = command
                    .property("variable")
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                else {
                    self.warning("task.setvariable needs a `variable` property");
                    return;
                };
                let name = name.to_string();
                set_variable(
                    self,
                    &name,
                    &command.data,
                    command.flag("issecret"),
                    command.flag("isoutput"),
                    command.flag("isreadonly"),
                );
            }
            ("task", "setsecret") => self.job.masker.add(&command.data),
            ("task", "logissue") | ("task", "issue") => {
                let kind = match command
                    .property("type")
                    .map(str::to_ascii_lowercase)
                    .as_deref()
                {
                    Some("error") => IssueKind::Error,
                    _ => IssueKind::Warning,
                };
                let mut message = command.data.clone();
                if let Some(source) = command.property("sourcepath") {
                    let line = command
                        .property("linenumber")
                        .map(|l| format!(":{l}"))
                        .unwrap_or_default();
                    let column = command
                        .property("columnnumber")
                        .map(|c| format!(":{c}"))
                        .unwrap_or_default();
                    message = format!("{source}{line}{column}: {message}");
                }
                if let Some(code) = command.property("code") {
                    message = format!("{message} [{code}]");
                }
                issue(self.job, Some(self.index), kind, &message);
            }
            ("task", "complete") => {
                let result = command
                    .property("result")
                    .and_then(TaskResult::parse)
                    .unwrap_or(TaskResult::Succeeded);
                self.complete = Some(result);
                if !command.data.trim().is_empty() {
                    self.log(&command.data);
                }
            }
            ("task", "prependpath") => {
                let path = command.data.trim().to_string();
                if !path.is_empty() {
                    self.job.prepend_path.push(path);
                }
            }
            ("task", "setprogress") => {
                let percent = command
                    .property("value")
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .unwrap_or(0)
                    .min(100);
                let message = self.job.masker.mask(&command.data).into_owned();
                self.job.sink.event(Event::Progress {
                    job,
                    step: self.index,
                    percent,
                    message,
                });
            }
            ("task", "debug") => {
                if self.debug() {
                    self.log(&format!("##[debug]{}", command.data));
                }
            }
            ("results", "publish") => self.publish_results_command(&command),
            ("codecoverage", "publish") => {
                let summary = command
                    .property("summaryfile")
                    .unwrap_or("")
                    .trim()
                    .to_string();
                if let Err(TaskError(message)) =
                    crate::tasks::test_results::report_coverage(self, &self.resolve_path(&summary))
                {
                    self.warning(&message);
                }
            }
            // Timeline details and telemetry have no local counterpart; they are accepted silently.
            ("task", "logdetail") | ("telemetry", "publish") => {}
            ("task", "uploadfile")
            | ("task", "addattachment")
            | ("build", "uploadlog")
            | ("task", "uploadsummary")
            | ("build", "uploadsummary") => self.upload_file(command.data.trim()),
            ("build", "updatebuildnumber") => {
                let number = command.data.trim().to_string();
                if number.is_empty() {
                    self.warning("build.updatebuildnumber needs a build number");
                    return;
                }
                if let Ok(mut current) = self.job.run.build_number.lock() {
                    current.clone_from(&number);
                }
                self.job
                    .variables
                    .set_system("Build.BuildNumber", number.clone());
                self.job.sink.event(Event::BuildNumber {
                    job,
                    build_number: number,
                });
            }
            ("build", "addbuildtag") => {
                let tag = command.data.trim().to_string();
                if !tag.is_empty() {
                    self.job.sink.event(Event::BuildTag { job, tag });
                }
            }
            ("artifact", "upload") => {
                let name = command
                    .property("artifactname")
                    .unwrap_or("drop")
                    .to_string();
                let path = self.resolve_path(command.data.trim());
                if let Err(TaskError(message)) =
                    crate::tasks::artifacts::publish_path(self, &path, &name)
                {
                    self.error(&message);
                }
            }
            (area, action) => {
                self.warning(&format!(
                    "logging command {area}.{action} is not supported by Lockgate and was ignored"
                ));
            }
        }
    }

    /// `##vso[results.publish type=JUnit;resultFiles=a.xml,b.xml]` (the files may also be the data).
    fn publish_results_command(&mut self, command: &VsoCommand) {
        use crate::tasks::test_results::{TestFormat, publish_results};
        let kind = command.property("type").unwrap_or("JUnit").to_string();
        let Some(format) = TestFormat::parse(&kind) else {
            self.warning(&format!(
                "results.publish: type `{kind}` is not JUnit, NUnit, VSTest, XUnit or CTest"
            ));
            return;
        };
        let list = command
            .property("resultfiles")
            .map_or_else(|| command.data.clone(), str::to_string);
        let files: Vec<PathBuf> = list
            .split([',', '\n'])
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(|f| self.resolve_path(f))
            .collect();
        if files.is_empty() {
            self.warning("results.publish names no result files");
            return;
        }
        let run_title = command.property("runtitle").map(str::to_string);
        publish_results(self, &kind, format, &files, run_title.as_deref());
    }

    fn upload_file(&mut self, path: &str) {
        let source = self.resolve_path(path);
        let uploads = self
            .job
            .run
            .run_dir
            .join("uploads")
            .join(self.job.id.to_string());
        let Some(file_name) = source.file_name() else {
            self.warning(&format!("cannot upload `{path}`: not a file"));
            return;
        };
        let target = uploads.join(file_name);
        let copied =
            std::fs::create_dir_all(&uploads).and_then(|()| std::fs::copy(&source, &target));
        match copied {
            Ok(_) => self.job.sink.event(Event::FileUploaded {
                job: self.job.id.clone(),
                path: target.display().to_string(),
            }),
            Err(err) => self.warning(&format!("cannot upload {}: {err}", source.display())),
        }
    }
}

fn set_variable(
    ctx: &mut StepContext<'_, '_>,
    name: &str,
    value: &str,
    secret: bool,
    output: bool,
    readonly: bool,
) {
    if secret {
        ctx.job.masker.add(value);
    }
    // With isOutput the variable is set as `step.var` only (the agent's ExecutionContext.SetVariable uses
    // the step's reference name; docs: "use it in the same job as $(stepName.var)").
    let mut names = Vec::new();
    if output {
        match &ctx.step_name {
            Some(step) => {
                let key = format!("{step}.{name}");
                let mut keys: Vec<String> = ctx
                    .job
                    .output_prefixes
                    .iter()
                    .map(|prefix| format!("{prefix}.{key}"))
                    .collect();
                keys.push(key.clone());
                for output in keys {
                    // Once secret, an output stays secret (its value is masked for the rest of the job).
                    if secret {
                        ctx.job.secret_outputs.insert(output.clone());
                    }
                    ctx.job.outputs.insert(output, value.to_string());
                }
                names.push(key);
            }
            None => {
                ctx.warning(&format!("output variable `{name}` is set by a step without a `name:`; later jobs cannot read it"));
                names.push(name.to_string());
            }
        }
    } else {
        names.push(name.to_string());
    }
    for variable in names {
        if let Err(err) = ctx.job.variables.set(&variable, value, secret, readonly) {
            ctx.warning(&err.to_string());
            return;
        }
    }
    ctx.job.sink.event(Event::VariableSet {
        job: ctx.job.id.clone(),
        step: ctx.index,
        name: name.to_string(),
        value: value.to_string(),
        is_output: output,
        is_secret: secret,
    });
}

fn log_runner(state: &JobState<'_>, index: usize, line: &str) {
    state.sink.event(Event::Log {
        job: state.id.clone(),
        step: index,
        stream: Stream::Stdout,
        lines: vec![line.to_string()],
    });
}

fn issue(state: &JobState<'_>, step: Option<usize>, kind: IssueKind, message: &str) {
    state.sink.event(Event::Issue {
        job: state.id.clone(),
        step,
        kind,
        message: message.to_string(),
    });
}

/// Tool roots that default to a folder in HOME and hold installed toolchains or the user's settings
/// rather than caches: with a job's own HOME they keep pointing at the user's folder (when it exists and
/// the variable is not set already), so that `cargo` through rustup, pyenv's shims, nvm, git's identity
/// and npm's registry settings keep working while caches (`~/.cache`, `~/.npm`, `~/.cargo/registry`,
/// yarn's and pip's) become the job's own.
pub const HOME_TOOL_ROOTS: &[(&str, &str)] = &[
    ("RUSTUP_HOME", ".rustup"),
    ("PYENV_ROOT", ".pyenv"),
    ("NVM_DIR", ".nvm"),
    ("GIT_CONFIG_GLOBAL", ".gitconfig"),
    ("NPM_CONFIG_USERCONFIG", ".npmrc"),
];

/// `HOME=<home>` plus [`HOME_TOOL_ROOTS`] resolved against the base environment's HOME.
pub fn job_home_environment(base_env: &[(String, String)], home: &Path) -> Vec<(String, String)> {
    let mut env = vec![("HOME".to_string(), home.display().to_string())];
    let user_home = base_env
        .iter()
        .find(|(name, _)| name == "HOME")
        .map(|(_, value)| PathBuf::from(value))
        .filter(|dir| dir.is_absolute() && dir.as_path() != home);
    if let Some(user_home) = user_home {
        for (name, relative) in HOME_TOOL_ROOTS {
            let target = user_home.join(relative);
            if !base_env.iter().any(|(key, _)| key == name) && target.exists() {
                env.push(((*name).to_string(), target.display().to_string()));
            }
        }
    }
    env
}
