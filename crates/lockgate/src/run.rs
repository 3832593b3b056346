//! `lockgate run`: compile a pipeline and run every stage, job and step on this machine, with a live view
//! on a terminal, plain prefixed lines otherwise, or one JSON event per line with `--json`. Logs of every
//! job go to the run folder; the summary says where.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lockgate_pipeline::CompileInput;
use lockgate_pipeline::run_number;
use lockgate_runner::artifacts::ArtifactStore;
use lockgate_runner::events::{Event, EventSink, IssueKind, JobId, TaskResult};
use lockgate_runner::job::RunContext;
use lockgate_runner::orchestrator::{
    LocalRunOptions, OsMismatch, RunOutcome, read_variable_group, run_facts, run_local,
    validate_plan,
};
use lockgate_runner::tasks::TaskRegistry;

use crate::compile::{
    FileSystemReader, locate_pipeline, parameter_values, predefined_variables,
    repository_checkouts, split_pair,
};
use crate::{EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The pipeline file (default: azure-pipelines.yml in the current directory).
    pub file: Option<PathBuf>,
    /// The repository root that `checkout: self` copies and `/`-rooted template paths resolve against
    /// (default: the Git top level of FILE, else FILE's folder).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// A runtime parameter value; repeat for several.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// A variable that overrides every definition in the pipeline; repeat for several.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// A variable group read from a file: JSON (`{"name": "value"}` or `{"name": {"value": "...",
    /// "isSecret": true}}`) or `NAME=VALUE` lines; repeat for several.
    #[arg(long = "var-group", value_name = "NAME=FILE")]
    pub var_groups: Vec<String>,
    /// A local file standing in for a secure file of the library (`DownloadSecureFile@1` with
    /// `secureFile: NAME`); repeat for several.
    #[arg(long = "secure-file", value_name = "NAME=PATH")]
    pub secure_files: Vec<String>,
    /// A local checkout for a repository resource alias (templates and `checkout: ALIAS`); repeat for several.
    #[arg(long = "repo", value_name = "ALIAS=DIR")]
    pub repos: Vec<String>,
    /// Most jobs running at once (default: the number of cores).
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Write one JSON event per line instead of the human view.
    #[arg(long)]
    pub json: bool,
    /// Where runs keep their workspaces, logs and artifacts (default: $XDG_CACHE_HOME/lockgate, else
    /// ~/.cache/lockgate).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Run every step in the bubblewrap sandbox, as a server does: the job's workspace is its only
    /// writable folder and the rest of the work folder (other jobs and runs) is hidden. Without it,
    /// steps run as you, with your environment (docs/security.md).
    #[arg(long)]
    pub sandbox: bool,
    /// Run steps with your own HOME instead of giving each job its own (`<job workspace>/home`);
    /// parallel jobs then share the caches tools keep there (docs/run.md).
    #[arg(long)]
    pub shared_home: bool,
    /// A folder of task packages (task folders with a task.json and a Node handler, as
    /// `tfx build tasks upload` takes); `- task: Name@Major` (or the task's id) runs them, in place of a
    /// built-in task of the same name. Repeat for several.
    #[arg(long = "tasks", value_name = "DIR")]
    pub tasks: Vec<PathBuf>,
    /// Run only this stage (repeat for several). The stages and jobs it depends on do not run: their
    /// results and output variables come from the newest earlier local run of this pipeline, else they
    /// count as Succeeded with no outputs (a note says which).
    #[arg(long = "stage", value_name = "NAME")]
    pub stages: Vec<String>,
    /// Run only this job (`JOB` or `STAGE.JOB`; a matrix job runs all its legs); repeat for several.
    /// Combines with --stage.
    #[arg(long = "job", value_name = "NAME")]
    pub jobs: Vec<String>,
    /// Jobs whose pool asks for another OS than this machine's (`vmImage: windows-latest`,
    /// `macOS-*`, an `Agent.OS` demand): `skip` them with a note (the default) or `run` them here anyway.
    #[arg(long = "os-mismatch", value_name = "skip|run", default_value = "skip", value_parser = ["skip", "run"])]
    pub os_mismatch: String,
}

/// A test-only knob: `LOCKGATE_MINUTE_MS` makes one "minute" of `timeoutInMinutes` and
/// `cancelTimeoutInMinutes` last that many milliseconds, so that tests of timeouts run in seconds.
fn minute_length() -> Duration {
    std::env::var("LOCKGATE_MINUTE_MS")
        .ok()
        .and_then(|ms| ms.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map_or(Duration::from_secs(60), Duration::from_millis)
}

fn default_work_dir() -> PathBuf {
    if let Some(cache) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(cache).join("lockgate");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache").join("lockgate"),
        None => std::env::temp_dir().join("lockgate"),
    }
}

/// Creates `<base>/runs/<n>` with the next free number.
fn new_run_dir(base: &Path) -> anyhow::Result<(u64, PathBuf)> {
    claim_next_number(&base.join("runs"))
}

/// Creates the sub-folder of `dir` named with the next free number (1, 2, ...) and returns it. Creating
/// the folder claims the number, so two runs in one work folder never get the same one.
fn claim_next_number(dir: &Path) -> anyhow::Result<(u64, PathBuf)> {
    std::fs::create_dir_all(dir)
        .map_err(|e| UsageError(format!("cannot create {}: {e}", dir.display())))?;
    let mut next = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u64>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    loop {
        let claimed = dir.join(next.to_string());
        match std::fs::create_dir(&claimed) {
            Ok(()) => return Ok((next, claimed)),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => next += 1,
            Err(err) => {
                return Err(
                    UsageError(format!("cannot create {}: {err}", claimed.display())).into(),
                );
            }
        }
    }
}

/// The run number of a local run from the pipeline's `name:` format. `$(Rev:r)` counts the runs of this
/// pipeline file (in this work folder) whose number is otherwise the same, as the server counts them per
/// pipeline: the count lives in `<base>/revisions/<hash of pipeline file and prefix>/<n>`.
fn local_build_number(
    base: &Path,
    pipeline_file: &Path,
    format: Option<&str>,
    context: &run_number::NameContext,
) -> anyhow::Result<String> {
    let format = format
        .map(str::trim)
        .filter(|format| !format.is_empty())
        .unwrap_or(run_number::DEFAULT_FORMAT);
    let mut failure = None;
    let name = run_number::expand(format, context, |prefix| {
        let mut key = blake3::Hasher::new();
        key.update(pipeline_file.to_string_lossy().as_bytes());
        key.update(b"\0");
        key.update(prefix.as_bytes());
        let dir = base.join("revisions").join(&key.finalize().to_hex()[..32]);
        match claim_next_number(&dir) {
            Ok((number, _)) => i64::try_from(number).unwrap_or(i64::MAX),
            Err(error) => {
                failure = Some(error);
                0
            }
        }
    });
    match failure {
        Some(error) => Err(error),
        None => Ok(name),
    }
}

/// The built-in tasks plus those that live outside lockgate-runner: the Power Platform Build Tools tasks
/// from lockgate-solution.
pub(crate) fn registry() -> TaskRegistry {
    let mut registry = TaskRegistry::with_builtins();
    crate::solution::register_tasks(&mut registry);
    registry
}

pub fn exec(args: RunArgs) -> anyhow::Result<u8> {
    let (root, entry) = locate_pipeline(args.file.as_deref(), args.root.as_deref())?;
    // Which pipeline this is, for finding what earlier runs of it left (`--stage` / `--job`).
    let pipeline_key = root.join(&entry).display().to_string();
    let parameters = parameter_values(&args.params)?;
    let mut variables = Vec::new();
    for var in &args.vars {
        let (name, value) = split_pair(var, "--var", "NAME=VALUE")?;
        variables.push((name.to_string(), value.to_string()));
    }
    let repositories = repository_checkouts(&args.repos)?;
    let mut variable_groups = BTreeMap::new();
    for group in &args.var_groups {
        let (name, path) = split_pair(group, "--var-group", "NAME=FILE")?;
        let values = read_variable_group(Path::new(path))
            .map_err(|e| UsageError(format!("--var-group {name}: {e}")))?;
        variable_groups.insert(name.to_string(), values);
    }
    let mut secure_files = BTreeMap::new();
    for pair in &args.secure_files {
        let (name, path) = split_pair(pair, "--secure-file", "NAME=PATH")?;
        let path = Path::new(path);
        if !path.is_file() {
            return Err(UsageError(format!(
                "--secure-file {name}: {} is not a readable file",
                path.display()
            ))
            .into());
        }
        let path = path
            .canonicalize()
            .map_err(|e| UsageError(format!("--secure-file {name}: {}: {e}", path.display())))?;
        secure_files.insert(name.to_string(), path);
    }
    let parallel = match args.parallel {
        Some(0) => return Err(UsageError("--parallel must be at least 1".into()).into()),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };

    let base = args.work_dir.clone().unwrap_or_else(default_work_dir);
    std::fs::create_dir_all(&base).map_err(|e| {
        UsageError(format!(
            "cannot create the work folder {}: {e}",
            base.display()
        ))
    })?;
    // Absolute, so that a work folder inside the repository is recognised and left out of checkouts.
    let base = base
        .canonicalize()
        .map_err(|e| UsageError(format!("work folder {}: {e}", base.display())))?;
    let sandbox = if args.sandbox {
        let sandbox = lockgate_runner::sandbox::Sandbox::detect(std::slice::from_ref(&base))
            .map_err(|e| UsageError(format!("--sandbox: {e}")))?;
        Some(sandbox)
    } else {
        None
    };
    let pipeline_name = root.file_name().map_or_else(
        || "pipeline".to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    // Template expressions see the same predefined variables as in `lockgate plan`.
    let reader = FileSystemReader {
        root: root.clone(),
        repositories: repositories.clone(),
    };
    let template_variables = predefined_variables(&root);
    let input = CompileInput {
        entry,
        reader: &reader,
        parameters,
        variables: template_variables,
    };
    let output = lockgate_pipeline::compile(&input);
    if !output.diagnostics.is_empty() {
        eprint!(
            "{}",
            lockgate_pipeline::render(&output.diagnostics, &output.sources)
        );
    }
    let has_errors = output.has_errors();
    let Some(plan) = output.plan.filter(|_| !has_errors) else {
        eprintln!("the pipeline is not valid; nothing was run");
        return Ok(EXIT_USAGE);
    };
    let mut registry = registry();
    for dir in &args.tasks {
        let packages = lockgate_runner::tasks::package::TaskPackage::load_all(dir)
            .map_err(|e| UsageError(format!("--tasks: {e}")))?;
        lockgate_runner::tasks::package::register_packages(&mut registry, packages);
    }
    let problems = validate_plan(&plan, &registry, &variable_groups);
    for problem in &problems {
        let level = if problem.warning { "warning" } else { "error" };
        eprintln!("{level}: {problem}");
    }
    if problems.iter().any(|p| !p.warning) {
        eprintln!("the pipeline cannot run locally; nothing was run");
        return Ok(EXIT_USAGE);
    }

    let selection = if args.stages.is_empty() && args.jobs.is_empty() {
        None
    } else {
        let jobs = crate::partial::select(&plan, &args.stages, &args.jobs)?;
        let previous = crate::partial::previous_outcomes(&base.join("runs"), &pipeline_key);
        let (selection, notes) = crate::partial::selection(&plan, jobs, previous);
        for note in notes {
            eprintln!("{note}");
        }
        Some(selection)
    };

    let (run_serial, run_dir) = new_run_dir(&base)?;
    let run_id = run_serial.to_string();
    let now_millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut facts = run_facts(Some(&root), &pipeline_name, &run_id, "");
    facts.push((
        run_number::START_TIME_VARIABLE.into(),
        run_number::start_time_text(now_millis),
    ));
    let fact = |name: &str| {
        facts
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    };
    let name_context = run_number::NameContext {
        now_millis,
        definition_name: pipeline_name.clone(),
        project: fact("System.TeamProject"),
        run_id: i64::try_from(run_serial).unwrap_or(i64::MAX),
        source_branch: fact("Build.SourceBranch"),
        variables: plan
            .value_variables()
            .into_iter()
            .chain(facts.clone())
            .collect(),
    };
    let build_number = local_build_number(
        &base,
        Path::new(&pipeline_key),
        plan.name.as_deref(),
        &name_context,
    )?;
    for fact in &mut facts {
        if fact.0 == "Build.BuildNumber" {
            fact.1.clone_from(&build_number);
        }
    }
    let artifacts =
        ArtifactStore::open(base.join("store")).map_err(|e| UsageError(e.to_string()))?;
    let mut base_env: Vec<(String, String)> = std::env::vars().collect();
    base_env.retain(|(name, _)| name != "LOCKGATE_MINUTE_MS");
    let context = Arc::new(RunContext {
        run_id: run_id.clone(),
        build_number: Mutex::new(build_number.clone()),
        artifacts,
        run_dir: run_dir.clone(),
        self_repository: Some(root.clone()),
        repositories,
        self_remote: None,
        base_env,
        minute: minute_length(),
        drain_grace: Duration::from_millis(500),
        cache_dir: base.join("cache"),
        sandbox,
        job_home: !args.shared_home,
        secure_files,
    });
    let options = LocalRunOptions {
        parallel,
        variables,
        variable_groups,
        run_variables: facts,
        work_dir: run_dir.join("work"),
        selection,
        os_mismatch: if args.os_mismatch == "run" {
            OsMismatch::Run
        } else {
            OsMismatch::Skip
        },
    };
    let mode = if args.json {
        ViewMode::Json
    } else if std::io::stdout().is_terminal() {
        ViewMode::Live
    } else {
        ViewMode::Plain
    };
    let view = Arc::new(CliView::new(mode, run_dir.join("logs")));
    view.event(Event::RunStarted {
        run_id: run_id.clone(),
        build_number,
        pipeline: pipeline_name,
    });
    let sink: Arc<dyn EventSink> = view.clone();
    let outcome = run_local(&plan, context, Arc::new(registry), &options, sink)?;
    if let Err(err) = crate::partial::save_outcome(&run_dir, &pipeline_key, &outcome) {
        eprintln!("warning: cannot record the run's outcome for later --stage/--job runs: {err}");
    }
    view.event(Event::RunFinished {
        run_id,
        result: outcome.result,
        seconds: outcome.seconds,
    });
    view.finish(
        &outcome,
        &run_dir,
        &base.join("store").join("runs").join(run_serial.to_string()),
    );
    Ok(if outcome.result.is_success() {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ViewMode {
    Live,
    Plain,
    Json,
}

/// What the live view shows for a running job.
struct RunningJob {
    id: JobId,
    display: String,
    step: String,
    started: Instant,
    last_line: String,
    group: Option<String>,
}

struct ViewState {
    out: BufWriter<std::io::Stdout>,
    logs: HashMap<JobId, BufWriter<File>>,
    running: BTreeMap<String, RunningJob>,
    /// Lines the live status area currently occupies.
    drawn: usize,
    last_draw: Instant,
    /// Recent output of each job's current step, shown when the step fails (live view).
    recent: HashMap<JobId, Vec<String>>,
    issues: Vec<String>,
    logs_dir: PathBuf,
}

/// The `EventSink` of the CLI: writes job logs to files and renders events for the chosen mode.
struct CliView {
    mode: ViewMode,
    state: Mutex<ViewState>,
}

const RECENT_LINES: usize = 30;
/// Lines of the running step shown live when one job runs.
const TAIL_LINES: usize = 5;

fn symbol(result: TaskResult) -> &'static str {
    match result {
        TaskResult::Succeeded => "✔",
        TaskResult::SucceededWithIssues => "!",
        TaskResult::Failed => "✘",
        TaskResult::Canceled => "⊘",
        TaskResult::Skipped => "-",
    }
}

fn colour(result: TaskResult) -> &'static str {
    match result {
        TaskResult::Succeeded => "\x1b[32m",
        TaskResult::SucceededWithIssues => "\x1b[33m",
        TaskResult::Failed | TaskResult::Canceled => "\x1b[31m",
        TaskResult::Skipped => "\x1b[90m",
    }
}

impl CliView {
    fn new(mode: ViewMode, logs_dir: PathBuf) -> Self {
        let _ = std::fs::create_dir_all(&logs_dir);
        Self {
            mode,
            state: Mutex::new(ViewState {
                out: BufWriter::with_capacity(64 * 1024, std::io::stdout()),
                logs: HashMap::new(),
                running: BTreeMap::new(),
                drawn: 0,
                last_draw: Instant::now(),
                recent: HashMap::new(),
                issues: Vec::new(),
                logs_dir,
            }),
        }
    }

    fn finish(&self, outcome: &RunOutcome, run_dir: &Path, artifacts_dir: &Path) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        clear_status(&mut state);
        for log in state.logs.values_mut() {
            let _ = log.flush();
        }
        if self.mode == ViewMode::Json {
            let _ = state.out.flush();
            return;
        }
        let live = self.mode == ViewMode::Live;
        let mut text = String::from("\nSummary\n");
        for job in &outcome.jobs {
            let name = job_label(&job.id);
            let mark = if live {
                format!("{}{}\x1b[0m", colour(job.result), symbol(job.result))
            } else {
                symbol(job.result).to_string()
            };
            text.push_str(&format!(
                "  {mark} {name:<40} {:<20} {:>8.1}s\n",
                job.result.as_str(),
                job.seconds
            ));
        }
        if !state.issues.is_empty() {
            text.push_str(&format!("\n{} issue(s):\n", state.issues.len()));
            for issue in state.issues.iter().take(50) {
                text.push_str(&format!("  {issue}\n"));
            }
        }
        text.push_str(&format!(
            "\nResult: {} in {:.1}s\n",
            outcome.result.as_str(),
            outcome.seconds
        ));
        text.push_str(&format!("Logs:      {}\n", state.logs_dir.display()));
        text.push_str(&format!("Workspace: {}\n", run_dir.join("work").display()));
        text.push_str(&format!("Artifacts: {}\n", artifacts_dir.display()));
        let test_results = run_dir.join("test-results");
        if test_results.is_dir() {
            text.push_str(&format!("Tests:     {}\n", test_results.display()));
        }
        let _ = state.out.write_all(text.as_bytes());
        let _ = state.out.flush();
    }
}

fn clear_status(state: &mut ViewState) {
    if state.drawn > 0 {
        let _ = write!(state.out, "\x1b[{}F\x1b[J", state.drawn);
        state.drawn = 0;
    }
}

/// The terminal width from `COLUMNS` (shells export it), else 100; status lines are cut to fit so that
/// redrawing can move the cursor up by the number of lines drawn.
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|w| *w >= 20)
        .unwrap_or(100)
}

fn draw_status(state: &mut ViewState) {
    let width = terminal_width();
    let lines: Vec<String> = state
        .running
        .values()
        .map(|job| {
            let elapsed = job.started.elapsed().as_secs_f64();
            let head: String = format!("{} › {} ({elapsed:.0}s) ", job.display, job.step)
                .chars()
                .take(width.saturating_sub(3))
                .collect();
            let room = width.saturating_sub(3 + head.chars().count());
            let last = job
                .group
                .as_ref()
                .map_or_else(|| job.last_line.clone(), |g| format!("▸ {g}"));
            let last: String = last
                .chars()
                .filter(|c| !c.is_control())
                .take(room)
                .collect();
            format!("\x1b[36m⟳\x1b[0m {head}\x1b[90m{last}\x1b[0m")
        })
        .collect();
    let mut lines = lines;
    // With one job running, its step's last few lines show under the status line (unless it is inside a
    // folded `##[group]`).
    if let [job] = state.running.values().collect::<Vec<_>>()[..]
        && job.group.is_none()
        && let Some(recent) = state.recent.get(&job.id)
    {
        let tail: Vec<&String> = recent
            .iter()
            .filter(|l| !l.starts_with("##[command]"))
            .rev()
            .take(TAIL_LINES)
            .collect();
        for line in tail.into_iter().rev() {
            let text: String = line
                .chars()
                .filter(|c| !c.is_control())
                .take(width.saturating_sub(4))
                .collect();
            lines.push(format!("  \x1b[90m│ {text}\x1b[0m"));
        }
    }
    for line in &lines {
        let _ = writeln!(state.out, "{line}\x1b[K");
    }
    state.drawn = lines.len();
    state.last_draw = Instant::now();
    let _ = state.out.flush();
}

fn job_label(job: &JobId) -> String {
    let name = if job.job == "__default" {
        "Job"
    } else {
        job.job.as_str()
    };
    if job.stage.is_empty() || job.stage == "__default" {
        name.to_string()
    } else {
        format!("{}.{name}", job.stage)
    }
}

impl EventSink for CliView {
    fn event(&self, event: Event) {
        let Ok(mut guard) = self.state.lock() else {
            return;
        };
        let state = &mut *guard;
        // Job log files, whatever the mode.
        match &event {
            Event::JobStarted { job, .. } => {
                let path = state
                    .logs_dir
                    .join(format!("{}.log", job_label(job).replace(['/', '\\'], "_")));
                if let Ok(file) = File::create(path) {
                    state.logs.insert(job.clone(), BufWriter::new(file));
                }
            }
            Event::Log { job, lines, .. } => {
                if let Some(log) = state.logs.get_mut(job) {
                    for line in lines {
                        let _ = log.write_all(line.as_bytes());
                        let _ = log.write_all(b"\n");
                    }
                }
            }
            Event::StepStarted {
                job, display_name, ..
            } => {
                if let Some(log) = state.logs.get_mut(job) {
                    let _ = writeln!(log, "##[section]Starting: {display_name}");
                }
            }
            Event::StepFinished {
                job,
                display_name,
                result,
                ..
            } => {
                if let Some(log) = state.logs.get_mut(job) {
                    let _ = writeln!(log, "##[section]Finishing: {display_name} ({result})");
                }
            }
            Event::Issue {
                job, kind, message, ..
            } => {
                if let Some(log) = state.logs.get_mut(job) {
                    let prefix = if *kind == IssueKind::Error {
                        "##[error]"
                    } else {
                        "##[warning]"
                    };
                    let _ = writeln!(log, "{prefix}{message}");
                }
                let where_ = if job.job.is_empty() {
                    String::new()
                } else {
                    format!("{}: ", job_label(job))
                };
                state.issues.push(format!(
                    "{}{where_}{message}",
                    if *kind == IssueKind::Error {
                        "error: "
                    } else {
                        "warning: "
                    }
                ));
            }
            Event::JobFinished { job, .. } => {
                if let Some(mut log) = state.logs.remove(job) {
                    let _ = log.flush();
                }
            }
            _ => {}
        }
        match self.mode {
            ViewMode::Json => {
                if let Ok(line) = serde_json_line(&event) {
                    let _ = state.out.write_all(line.as_bytes());
                }
                let _ = state.out.flush();
            }
            ViewMode::Plain => {
                // Piped output is read as it comes (CI logs, `tee`): flush every event.
                plain_event(state, &event);
                let _ = state.out.flush();
            }
            ViewMode::Live => live_event(state, &event),
        }
    }
}

fn serde_json_line(event: &Event) -> Result<String, String> {
    lockgate_runner::events::to_json_line(event)
}

fn plain_event(state: &mut ViewState, event: &Event) {
    let out = &mut state.out;
    let _ = match event {
        Event::RunStarted {
            run_id,
            build_number,
            pipeline,
        } => writeln!(out, "Run {run_id} of {pipeline} ({build_number})"),
        Event::StageStarted {
            stage,
            display_name,
        } if stage != "__default" => writeln!(out, "== Stage {display_name}"),
        Event::StageFinished {
            stage,
            result,
            seconds,
        } if stage != "__default" => {
            writeln!(out, "== Stage {stage}: {result} ({seconds:.1}s)")
        }
        Event::JobStarted { job, display_name } => {
            writeln!(out, "[{}] Job {display_name}", job_label(job))
        }
        Event::JobFinished {
            job,
            result,
            seconds,
        } => writeln!(out, "[{}] Job {result} ({seconds:.1}s)", job_label(job)),
        Event::StepStarted {
            job, display_name, ..
        } => writeln!(out, "[{}] ▶ {display_name}", job_label(job)),
        Event::StepFinished {
            job,
            display_name,
            result,
            seconds,
            ..
        } => {
            writeln!(
                out,
                "[{}] {} {display_name}: {result} ({seconds:.1}s)",
                job_label(job),
                symbol(*result)
            )
        }
        Event::Log { job, lines, .. } => {
            let label = job_label(job);
            for line in lines {
                let _ = writeln!(out, "[{label}] {line}");
            }
            Ok(())
        }
        Event::Group {
            job,
            title: Some(title),
            ..
        } => writeln!(out, "[{}] ▸ {title}", job_label(job)),
        Event::Issue {
            job, kind, message, ..
        } => {
            let kind = if *kind == IssueKind::Error {
                "error"
            } else {
                "warning"
            };
            if job.job.is_empty() {
                writeln!(out, "{kind}: {message}")
            } else {
                writeln!(out, "[{}] {kind}: {message}", job_label(job))
            }
        }
        Event::Artifact {
            job,
            name,
            files,
            bytes,
        } => {
            writeln!(
                out,
                "[{}] artifact {name}: {files} files, {bytes} bytes",
                job_label(job)
            )
        }
        Event::TestResults {
            job,
            passed,
            failed,
            skipped,
            ..
        } => {
            writeln!(
                out,
                "[{}] tests: {passed} passed, {failed} failed, {skipped} skipped",
                job_label(job)
            )
        }
        _ => Ok(()),
    };
}

fn live_event(state: &mut ViewState, event: &Event) {
    let permanent: Option<String> = match event {
        Event::RunStarted {
            run_id,
            build_number,
            pipeline,
        } => Some(format!(
            "\x1b[1mRun {run_id}\x1b[0m of {pipeline} ({build_number})"
        )),
        Event::StageStarted {
            stage,
            display_name,
        } if stage != "__default" => Some(format!("\x1b[1mStage {display_name}\x1b[0m")),
        Event::JobStarted { job, display_name } => {
            state.running.insert(
                job_label(job),
                RunningJob {
                    id: job.clone(),
                    display: display_name.clone(),
                    step: "starting".into(),
                    started: Instant::now(),
                    last_line: String::new(),
                    group: None,
                },
            );
            None
        }
        Event::StepStarted {
            job, display_name, ..
        } => {
            if let Some(running) = state.running.get_mut(&job_label(job)) {
                running.step.clone_from(display_name);
                running.last_line.clear();
                running.group = None;
            }
            state.recent.remove(job);
            None
        }
        Event::Log { job, lines, .. } => {
            if let Some(running) = state.running.get_mut(&job_label(job))
                && let Some(last) = lines
                    .iter()
                    .rev()
                    .find(|line| !line.starts_with("##[command]"))
            {
                running.last_line.clone_from(last);
            }
            let recent = state.recent.entry(job.clone()).or_default();
            recent.extend(lines.iter().rev().take(RECENT_LINES).rev().cloned());
            if recent.len() > RECENT_LINES {
                let excess = recent.len() - RECENT_LINES;
                recent.drain(..excess);
            }
            None
        }
        Event::Group { job, title, .. } => {
            if let Some(running) = state.running.get_mut(&job_label(job)) {
                running.group.clone_from(title);
            }
            None
        }
        Event::StepFinished {
            job,
            display_name,
            result,
            seconds,
            ..
        } => {
            let mut text = format!(
                "  {}{}\x1b[0m {} › {display_name} \x1b[90m({seconds:.1}s)\x1b[0m",
                colour(*result),
                symbol(*result),
                job_label(job)
            );
            if *result == TaskResult::Failed
                && let Some(recent) = state.recent.get(job)
            {
                for line in recent {
                    text.push_str(&format!("\n    \x1b[90m│\x1b[0m {line}"));
                }
            }
            Some(text)
        }
        Event::JobFinished {
            job,
            result,
            seconds,
        } => {
            state.running.remove(&job_label(job));
            Some(format!(
                "{}{}\x1b[0m Job {} {result} ({seconds:.1}s)",
                colour(*result),
                symbol(*result),
                job_label(job)
            ))
        }
        Event::Issue {
            job, kind, message, ..
        } => {
            let (c, k) = if *kind == IssueKind::Error {
                ("\x1b[31m", "error")
            } else {
                ("\x1b[33m", "warning")
            };
            let where_ = if job.job.is_empty() {
                String::new()
            } else {
                format!("{}: ", job_label(job))
            };
            Some(format!("    {c}{k}\x1b[0m {where_}{message}"))
        }
        Event::Artifact {
            job,
            name,
            files,
            bytes,
        } => Some(format!(
            "    artifact {name} from {}: {files} files, {bytes} bytes",
            job_label(job)
        )),
        Event::TestResults {
            job,
            passed,
            failed,
            skipped,
            ..
        } => Some(format!(
            "    tests in {}: {passed} passed, {failed} failed, {skipped} skipped",
            job_label(job)
        )),
        _ => None,
    };
    let structural = permanent.is_some()
        || matches!(event, Event::JobStarted { .. } | Event::StepStarted { .. });
    if !structural && state.last_draw.elapsed() < Duration::from_millis(100) {
        return;
    }
    clear_status(state);
    if let Some(line) = permanent {
        let _ = writeln!(state.out, "{line}");
    }
    draw_status(state);
}
