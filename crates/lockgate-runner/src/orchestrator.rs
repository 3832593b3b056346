//! The local orchestrator behind `lockgate run`: checks that a compiled plan can run here, turns its jobs
//! into [`JobSpec`]s, and runs the jobs the run engine (lockgate-engine, shared with the server) starts —
//! independent jobs concurrently up to a limit — feeding their results and outputs back to it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockgate_engine::{Decision, Engine, Graph, JobState, StageState, TaskResult as EngineResult};
use lockgate_pipeline::plan::{self, JobKind, Plan, Step, StepKind, Variable, VariableScope};
use tokio::task::JoinSet;

use crate::events::{Event, EventSink, IssueKind, JobId, TaskResult};
use crate::job::{JobOutcome, RunContext, run_job};
use crate::process::CancelSignal;
use crate::spec::{CommandRestrictions, InitialVariable, JobSpec, PhaseSpec, StepAction, StepSpec};
use crate::tasks::TaskRegistry;

/// Options of a local run.
#[derive(Debug, Clone)]
pub struct LocalRunOptions {
    /// Most jobs running at once.
    pub parallel: usize,
    /// `--var NAME=VALUE`: override every definition of the variable.
    pub variables: Vec<(String, String)>,
    /// Variable groups by name (`--var-group NAME=FILE`).
    pub variable_groups: BTreeMap<String, Vec<InitialVariable>>,
    /// Predefined variables that hold for the whole run (Build.*, System.*, Agent.* facts).
    pub run_variables: Vec<(String, String)>,
    /// Where job workspaces go (`<work>/<n>/`).
    pub work_dir: PathBuf,
    /// `--stage` / `--job`: run only these jobs. The others do not run: each counts as finished with its
    /// result and outputs from `previous` (an earlier local run), or as Succeeded with no outputs when
    /// there is none, so that the selected jobs' conditions and dependency outputs can be evaluated.
    pub selection: Option<Selection>,
    /// What to do with a job whose pool asks for another operating system than this machine's.
    pub os_mismatch: OsMismatch,
}

/// `--os-mismatch`: a job for a `windows-*` or `macOS-*` pool cannot run as written on a Linux machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OsMismatch {
    /// Skip the job with a warning that says why (the default).
    #[default]
    Skip,
    /// Run it here anyway, with this machine's `Agent.OS`.
    Run,
}

/// The jobs a partial run runs, and what the others left in earlier runs.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub jobs: BTreeSet<JobId>,
    pub previous: BTreeMap<JobId, JobOutcome>,
}

/// One finished job, for the summary.
#[derive(Debug, Clone)]
pub struct JobSummary {
    pub id: JobId,
    pub display_name: String,
    pub result: TaskResult,
    pub seconds: f64,
    /// The job's output variables (`step.var`), for a later `--stage`/`--job` run.
    pub outputs: BTreeMap<String, String>,
}

/// How the run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub result: TaskResult,
    pub stages: Vec<(String, TaskResult)>,
    pub jobs: Vec<JobSummary>,
    pub seconds: f64,
}

/// A problem found in a plan before it runs, with where it was written. An error keeps the plan from
/// running locally; a warning (an unknown task) fails only its step once the step runs, as on Azure
/// Pipelines, where a missing task fails the step that is reached, not the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanProblem {
    pub location: String,
    pub message: String,
    pub warning: bool,
}

impl std::fmt::Display for PlanProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Checks everything that would fail only once the run reached it: unknown tasks (warnings; their steps
/// fail when reached), step kinds and job kinds a local run cannot do, variable groups that were not
/// given (errors).
pub fn validate_plan(
    plan: &Plan,
    registry: &TaskRegistry,
    groups: &BTreeMap<String, Vec<InitialVariable>>,
) -> Vec<PlanProblem> {
    let mut problems = Vec::new();
    let check_groups = |variables: &[Variable], location: &str, problems: &mut Vec<PlanProblem>| {
        for variable in variables {
            if let Variable::Group { name, .. } = variable
                && !groups.contains_key(name)
            {
                problems.push(PlanProblem {
                    location: location.to_string(),
                    message: format!("variable group `{name}` is not available locally; pass --var-group {name}=FILE"),
                    warning: false,
                });
            }
        }
    };
    check_groups(&plan.variables, "pipeline", &mut problems);
    for stage in &plan.stages {
        check_groups(&stage.variables, &stage.source.to_string(), &mut problems);
        for job in &stage.jobs {
            check_groups(&job.variables, &job.source.to_string(), &mut problems);
            if job.kind == JobKind::Server {
                // Agentless jobs run here too (Delay, InvokeRESTAPI, ManualValidation); any other
                // step would fail them.
                for step in job
                    .steps
                    .iter()
                    .filter(|s| !crate::agentless::is_server_task(s))
                {
                    // A connection's URL (`$(NAME.Url)`) is known only when the job runs (from
                    // `--var NAME.Url=...` here): any URL stands in for it while checking.
                    let expand = |text: &str| {
                        if text.starts_with("$(") && text.ends_with(".Url)") {
                            "http://connection.invalid".to_string()
                        } else {
                            text.to_string()
                        }
                    };
                    if let Err(message) = crate::agentless::server_task(step, &expand) {
                        problems.push(PlanProblem {
                            location: step.source.to_string(),
                            message: format!("job `{}`: {message}", job.name),
                            warning: false,
                        });
                    }
                }
                continue;
            }
            for step in job_steps(job) {
                let location = step.source.to_string();
                match step.kind {
                    StepKind::Task => {
                        if let Some(task) = &step.task
                            && !registry.contains(&task.name, task.major)
                        {
                            problems.push(PlanProblem {
                                location,
                                message: format!(
                                    "{}; the step fails when it runs (built-in tasks: {})",
                                    crate::tasks::unknown_task_message(&task.name, task.major),
                                    display_task_names(registry)
                                ),
                                warning: true,
                            });
                        }
                    }
                    StepKind::GetPackage | StepKind::ReviewApp => problems.push(PlanProblem {
                        location,
                        message: format!(
                            "`{}` steps are not supported in local runs",
                            step.kind.key()
                        ),
                        warning: false,
                    }),
                    _ => {}
                }
            }
        }
    }
    problems
}

fn display_task_names(registry: &TaskRegistry) -> String {
    registry.names().join(", ")
}

fn job_steps(job: &plan::Job) -> impl Iterator<Item = &Step> {
    job.steps.iter().chain(
        job.deployment
            .iter()
            .flat_map(|d| d.phases.iter().flat_map(|p| p.steps.iter())),
    )
}

fn default_display_name(step: &Step) -> String {
    if let Some(name) = &step.display_name {
        return name.clone();
    }
    match step.kind {
        StepKind::Script | StepKind::Bash | StepKind::Pwsh | StepKind::Powershell => {
            let first = step
                .value
                .as_deref()
                .unwrap_or("")
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            let short: String = first.chars().take(60).collect();
            if short.is_empty() {
                step.kind.key().to_string()
            } else {
                short
            }
        }
        StepKind::Task => step
            .task
            .as_ref()
            .map_or_else(|| "task".into(), |t| format!("{}@{}", t.name, t.major)),
        StepKind::Checkout => format!("Checkout {}", step.value.as_deref().unwrap_or("self")),
        StepKind::Publish | StepKind::Upload => {
            format!(
                "Publish artifact {}",
                step.inputs.get("artifact").map_or("drop", String::as_str)
            )
        }
        StepKind::Download | StepKind::DownloadBuild => "Download artifacts".into(),
        other => other.key().to_string(),
    }
}

/// Turns a plan step into the runner's step (script shortcuts become their tasks).
pub fn step_spec(step: &Step, minute: Duration) -> StepSpec {
    let mut inputs = step.inputs.clone();
    let value = step.value.clone().unwrap_or_default();
    if let Some(dir) = &step.working_directory {
        inputs.insert("workingDirectory".into(), dir.clone());
    }
    if step.fail_on_stderr {
        inputs.insert("failOnStderr".into(), "true".into());
    }
    let task =
        |name: &str, major: u32, mut inputs: BTreeMap<String, String>, extra: &[(&str, &str)]| {
            for (k, v) in extra {
                inputs.insert((*k).to_string(), (*v).to_string());
            }
            StepAction::Task {
                name: name.into(),
                major,
                inputs,
            }
        };
    let action = match step.kind {
        StepKind::Script => task("CmdLine", 2, inputs, &[("script", &value)]),
        StepKind::Bash => task(
            "Bash",
            3,
            inputs,
            &[("targetType", "inline"), ("script", &value)],
        ),
        StepKind::Pwsh | StepKind::Powershell => task(
            "PowerShell",
            2,
            inputs,
            &[
                ("targetType", "inline"),
                ("script", &value),
                ("pwsh", "true"),
            ],
        ),
        StepKind::Checkout => StepAction::Checkout {
            repository: if value.is_empty() {
                "self".into()
            } else {
                value
            },
            inputs,
        },
        StepKind::Publish | StepKind::Upload => StepAction::Publish {
            path: value,
            artifact: inputs.get("artifact").cloned(),
        },
        StepKind::Download => StepAction::Download {
            source: if value.is_empty() {
                "current".into()
            } else {
                value
            },
            inputs,
        },
        StepKind::DownloadBuild => task(
            "DownloadBuildArtifacts",
            1,
            inputs,
            &[(
                "buildType",
                if value.is_empty() { "current" } else { &value },
            )],
        ),
        StepKind::Task => {
            let (name, major) = step
                .task
                .as_ref()
                .map_or_else(|| (String::new(), 0), |t| (t.name.clone(), t.major));
            StepAction::Task {
                name,
                major,
                inputs,
            }
        }
        StepKind::GetPackage | StepKind::ReviewApp => StepAction::Task {
            name: format!("<{} step>", step.kind.key()),
            major: 0,
            inputs,
        },
    };
    StepSpec {
        name: step.name.clone(),
        display_name: default_display_name(step),
        action,
        condition: step.condition.clone(),
        enabled: step.enabled,
        continue_on_error: step.continue_on_error,
        timeout: step
            .timeout_in_minutes
            .filter(|m| *m > 0)
            .map(|m| minute * m),
        retry_count_on_task_failure: step.retry_count_on_task_failure.unwrap_or(0),
        env: step.env.clone(),
        location: step.source.to_string(),
        restrictions: step
            .target
            .as_ref()
            .map_or_else(Default::default, |target| CommandRestrictions {
                restricted: target
                    .commands
                    .as_deref()
                    .is_some_and(|c| c.eq_ignore_ascii_case("restricted")),
                settable_variables: target.settable_variables.clone(),
            }),
    }
}

/// With more than one repository checked out, each goes to `s/<name>` unless it has a `path` (docs:
/// "Check out multiple repositories": the folder is named after the repository).
fn place_multiple_checkouts(steps: &mut [StepSpec], self_name: &str) {
    let is_checkout = |step: &StepSpec| matches!(&step.action, StepAction::Checkout { repository, .. } if !repository.eq_ignore_ascii_case("none"));
    if steps.iter().filter(|step| is_checkout(step)).count() < 2 {
        // One checkout: its folder is the sources directory, wherever its `path:` puts it (the agent
        // points Build.SourcesDirectory and the default working directory at it).
        for step in steps.iter_mut() {
            if let StepAction::Checkout { repository, inputs } = &mut step.action
                && !repository.eq_ignore_ascii_case("none")
            {
                inputs.insert(
                    crate::tasks::builtin_steps::ONLY_CHECKOUT.into(),
                    "true".into(),
                );
            }
        }
        return;
    }
    for step in steps.iter_mut() {
        if let StepAction::Checkout { repository, inputs } = &mut step.action
            && !repository.eq_ignore_ascii_case("none")
            && !inputs.keys().any(|key| key.eq_ignore_ascii_case("path"))
        {
            let name = if repository.eq_ignore_ascii_case("self") {
                self_name
            } else {
                repository.as_str()
            };
            inputs.insert("path".into(), format!("s/{name}"));
        }
    }
}

fn checkout_self() -> StepSpec {
    let action = StepAction::Checkout {
        repository: "self".into(),
        inputs: BTreeMap::new(),
    };
    StepSpec::new("Checkout self", action, "(implicit checkout)")
}

fn download_current() -> StepSpec {
    let action = StepAction::Download {
        source: "current".into(),
        inputs: BTreeMap::new(),
    };
    StepSpec::new(
        "Download artifacts",
        action,
        "(implicit download in the deploy hook)",
    )
}

/// The phases of a job: one for an agent job (with the implicit `checkout: self` first unless the job has
/// a checkout step), one per hook for a deployment job (the deploy hook downloads the run's artifacts first
/// unless it has a `download` step).
pub fn job_phases(job: &plan::Job, minute: Duration, machine: &str) -> Vec<PhaseSpec> {
    job_phases_with_self_folder(job, minute, machine, "self")
}

/// [`job_phases`], naming the folder `checkout: self` uses when a job checks out several repositories
/// (the repository's name).
pub fn job_phases_with_self_folder(
    job: &plan::Job,
    minute: Duration,
    machine: &str,
    self_name: &str,
) -> Vec<PhaseSpec> {
    let Some(deployment) = &job.deployment else {
        let mut steps: Vec<StepSpec> = job.steps.iter().map(|s| step_spec(s, minute)).collect();
        if !job.steps.iter().any(|s| s.kind == StepKind::Checkout) {
            steps.insert(0, checkout_self());
        }
        place_multiple_checkouts(&mut steps, self_name);
        return vec![PhaseSpec {
            hook: None,
            increment: None,
            output_prefixes: Vec::new(),
            steps,
        }];
    };
    let resource = job
        .environment
        .as_ref()
        .and_then(|e| e.resource_name.clone())
        .unwrap_or_else(|| machine.to_string());
    deployment
        .phases
        .iter()
        .map(|phase| {
            let mut steps: Vec<StepSpec> =
                phase.steps.iter().map(|s| step_spec(s, minute)).collect();
            if phase.hook == "deploy"
                && !phase
                    .steps
                    .iter()
                    .any(|s| matches!(s.kind, StepKind::Download | StepKind::DownloadBuild))
            {
                steps.insert(0, download_current());
            }
            // Output-variable key forms of deployment jobs (docs: deployment-jobs, "Support for output
            // variables"): runOnce `<job>.<step>.<var>` (older docs: `<hook>.<step>.<var>`), canary
            // `<hook>_<increment>.<step>.<var>`, rolling `<hook>_<resource>.<step>.<var>`.
            let prefixes = match deployment.name.as_str() {
                "canary" => match phase.increment {
                    Some(increment) => vec![format!("{}_{increment}", phase.hook)],
                    None => vec![phase.hook.clone()],
                },
                "rolling" => vec![format!("{}_{resource}", phase.hook)],
                _ => vec![
                    job.base_name.clone(),
                    phase.hook.clone(),
                    format!("Deploy_{resource}"),
                ],
            };
            PhaseSpec {
                hook: Some(phase.hook.clone()),
                increment: phase.increment,
                output_prefixes: prefixes,
                steps,
            }
        })
        .collect()
}

/// A job the engine decided to start, waiting for a free slot.
struct Ready {
    index: usize,
    values: Vec<(usize, String)>,
    fields: Vec<(String, serde_json::Value)>,
}

/// The runner's result as the engine names it, and back.
fn to_engine(result: TaskResult) -> EngineResult {
    match result {
        TaskResult::Succeeded => EngineResult::Succeeded,
        TaskResult::SucceededWithIssues => EngineResult::SucceededWithIssues,
        TaskResult::Failed => EngineResult::Failed,
        TaskResult::Canceled => EngineResult::Canceled,
        TaskResult::Skipped => EngineResult::Skipped,
    }
}

fn from_engine(result: EngineResult) -> TaskResult {
    match result {
        EngineResult::Succeeded => TaskResult::Succeeded,
        EngineResult::SucceededWithIssues => TaskResult::SucceededWithIssues,
        EngineResult::Failed => TaskResult::Failed,
        EngineResult::Canceled => TaskResult::Canceled,
        EngineResult::Skipped => TaskResult::Skipped,
    }
}

/// Runs every stage and job of `plan`, reporting through `sink`. What runs, is skipped or canceled,
/// and the results, are the run engine's decisions (lockgate-engine, shared with the server); this
/// loop carries them out: it runs the jobs the engine starts, up to `options.parallel` at once, and
/// feeds their results back.
pub async fn run_plan(
    plan: &Plan,
    run: Arc<RunContext>,
    registry: Arc<TaskRegistry>,
    options: &LocalRunOptions,
    sink: Arc<dyn EventSink>,
    cancel: CancelSignal,
) -> RunOutcome {
    let started = Instant::now();
    let machine = options
        .run_variables
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Agent.MachineName"))
        .map_or_else(|| "localhost".to_string(), |(_, v)| v.clone());
    let self_name = run
        .self_repository
        .as_deref()
        .and_then(Path::file_name)
        .map_or_else(
            || "self".to_string(),
            |name| name.to_string_lossy().into_owned(),
        );
    // Jobs in plan order, as the engine's graph lists them, with the variables each job gets: the
    // engine reads them in conditions and `$[ ]` values, by position.
    let mut plan_jobs: Vec<(usize, plan::Job)> = Vec::new();
    let mut job_variables: Vec<Vec<InitialVariable>> = Vec::new();
    let graph = Graph::from_plan(plan, |stage, job| {
        let mut variables = pipeline_variables(plan, Some(stage), options);
        if let Some(job) = job {
            append_job_variables(&mut variables, job, options);
        }
        let pairs = variables
            .iter()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect();
        if let Some(job) = job {
            let stage_index = plan
                .stages
                .iter()
                .position(|s| std::ptr::eq(s, stage))
                .unwrap_or_default();
            plan_jobs.push((stage_index, job.clone()));
            job_variables.push(variables);
        }
        pairs
    });
    // A job left out of a partial run counts as finished, with what an earlier run left.
    let states: Vec<JobState> = plan_jobs
        .iter()
        .map(|(stage, job)| {
            let id = JobId {
                stage: plan.stages[*stage].name.clone(),
                job: job.name.clone(),
            };
            match &options.selection {
                Some(selection) if !selection.jobs.contains(&id) => {
                    let outcome = selection.previous.get(&id);
                    JobState::Done {
                        result: outcome.map_or(EngineResult::Succeeded, |o| to_engine(o.result)),
                        outputs: outcome.map(|o| o.outputs.clone()).unwrap_or_default(),
                    }
                }
                _ => JobState::Waiting,
            }
        })
        .collect();
    let stage_count = plan.stages.len();
    // Stages with no selected job are settled from their jobs' preset outcomes, without events,
    // and left out of the run's result.
    let mut stage_selected = vec![true; stage_count];
    if options.selection.is_some() {
        for (index, selected) in stage_selected.iter_mut().enumerate() {
            *selected = plan_jobs
                .iter()
                .zip(&states)
                .any(|((stage, _), state)| *stage == index && *state == JobState::Waiting);
        }
    }
    let mut engine = Engine::restore(
        graph,
        options.run_variables.clone(),
        states,
        cancel.is_canceled(),
    );
    for (index, selected) in stage_selected.iter().enumerate() {
        if !selected {
            engine.leave_out_of_result(index);
        }
        // A manual stage runs locally only when `--stage` (or `--job`) selects it.
        let stage = &plan.stages[index];
        if stage.manual_trigger {
            if options.selection.is_some() && *selected {
                engine.start_manually(index);
            } else {
                sink.event(Event::Issue {
                    job: JobId {
                        stage: stage.name.clone(),
                        job: String::new(),
                    },
                    step: None,
                    kind: IssueKind::Warning,
                    message: format!(
                        "{}: stage `{}` has `trigger: manual`: local runs run it only when it is selected with --stage {}",
                        stage.source, stage.name, stage.name
                    ),
                });
            }
        }
    }
    let mut stage_clock: Vec<Option<Instant>> = vec![None; stage_count];
    let mut running: JoinSet<(usize, JobOutcome)> = JoinSet::new();
    let mut ready: std::collections::VecDeque<Ready> = std::collections::VecDeque::new();
    let parallel = options.parallel.max(1);
    let mut workspace_counter = 0usize;
    let mut summaries = Vec::new();
    let mut run_result = None;
    // Values of outputs set with `issecret=true`: later jobs mask them, as the server's agents do.
    let mut secret_values: Vec<String> = Vec::new();
    // Environments this run deployed to, to say once that their server-side checks do not apply.
    let mut environments_seen: BTreeSet<String> = BTreeSet::new();
    let id_of = |index: usize| JobId {
        stage: plan.stages[plan_jobs[index].0].name.clone(),
        job: plan_jobs[index].1.name.clone(),
    };
    // A job that ends without running: shown as started and finished at once.
    let end_now = |index: usize,
                   result: TaskResult,
                   summaries: &mut Vec<JobSummary>,
                   issue: Option<(IssueKind, String)>| {
        let id = id_of(index);
        let display_name = job_display_name(&plan_jobs[index].1);
        sink.event(Event::JobStarted {
            job: id.clone(),
            display_name: display_name.clone(),
        });
        if let Some((kind, message)) = issue {
            sink.event(Event::Issue {
                job: id.clone(),
                step: None,
                kind,
                message,
            });
        }
        sink.event(Event::JobFinished {
            job: id.clone(),
            result,
            seconds: 0.0,
        });
        summaries.push(JobSummary {
            id,
            display_name,
            result,
            seconds: 0.0,
            outputs: BTreeMap::new(),
        });
    };
    let announce = |stage: usize, stage_clock: &mut Vec<Option<Instant>>| {
        if stage_clock[stage].is_none() {
            let node = &plan.stages[stage];
            sink.event(Event::StageStarted {
                stage: node.name.clone(),
                display_name: node
                    .display_name
                    .clone()
                    .unwrap_or_else(|| node.name.clone()),
            });
            stage_clock[stage] = Some(Instant::now());
        }
    };

    let mut decisions = engine.advance();
    loop {
        if cancel.is_canceled() && !engine.is_canceled() {
            decisions.extend(engine.cancel());
        }
        for decision in std::mem::take(&mut decisions) {
            match decision {
                Decision::StageStarted { stage } => announce(stage, &mut stage_clock),
                Decision::StageFinished { stage, result } => {
                    announce(stage, &mut stage_clock);
                    let seconds = stage_clock[stage].map_or(0.0, |c| c.elapsed().as_secs_f64());
                    sink.event(Event::StageFinished {
                        stage: plan.stages[stage].name.clone(),
                        result: from_engine(result),
                        seconds,
                    });
                }
                Decision::Start {
                    job,
                    values,
                    fields,
                } => ready.push_back(Ready {
                    index: job,
                    values,
                    fields,
                }),
                Decision::Finish {
                    job,
                    result,
                    message,
                } => {
                    announce(plan_jobs[job].0, &mut stage_clock);
                    let issue = message.map(|message| {
                        (
                            IssueKind::Error,
                            format!("{}: {message}", plan_jobs[job].1.source),
                        )
                    });
                    end_now(job, from_engine(result), &mut summaries, issue);
                }
                // The cancel signal reaches the running jobs itself.
                Decision::CancelRunning { .. } => {}
                // Local runs know no server-owned checks: no stage is gated here.
                Decision::AwaitChecks { .. } => {}
                Decision::RunFinished { result } => run_result = Some(result),
            }
        }
        // Start what the engine made ready, up to the limit.
        while running.len() < parallel
            && let Some(next) = ready.pop_front()
        {
            let index = next.index;
            if engine.job_state(index) != Some(&JobState::Queued) {
                continue;
            }
            let stage = &plan.stages[plan_jobs[index].0];
            let mut job = plan_jobs[index].1.clone();
            let id = id_of(index);
            let display_name = job_display_name(&job);
            let mut resolved = job_variables[index].clone();
            for (position, value) in next.values {
                if let Some(variable) = resolved.get_mut(position) {
                    variable.value = value;
                }
            }
            for (key, value) in &next.fields {
                // Checked by the engine; the job takes the value.
                let text = match value {
                    serde_json::Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                let _ = job.apply_runtime_field(key, &text);
            }
            let mut resolved = expand_variable_macros(resolved);
            if let Some(message) = os_mismatch(&job, &resolved, options) {
                end_now(
                    index,
                    TaskResult::Skipped,
                    &mut summaries,
                    Some((IssueKind::Warning, message)),
                );
                engine.job_finished(index, EngineResult::Skipped, BTreeMap::new());
                decisions.extend(engine.advance());
                continue;
            }
            if let Some(environment) = &job.environment {
                // Deployment jobs target this machine as the environment's one resource.
                let resource = environment
                    .resource_name
                    .clone()
                    .unwrap_or_else(|| machine.clone());
                for (name, value) in [
                    ("Environment.Id", "1".to_string()),
                    ("Environment.ResourceName", resource),
                    (
                        "Environment.ResourceId",
                        environment
                            .resource_id
                            .clone()
                            .unwrap_or_else(|| "1".into()),
                    ),
                    (
                        "Environment.ResourceType",
                        environment
                            .resource_type
                            .clone()
                            .unwrap_or_else(|| "VirtualMachine".into()),
                    ),
                ] {
                    resolved.push(InitialVariable {
                        name: name.into(),
                        value,
                        secret: false,
                        readonly: true,
                    });
                }
            }
            workspace_counter += 1;
            let spec = JobSpec {
                stage: stage.name.clone(),
                stage_display_name: stage
                    .display_name
                    .clone()
                    .unwrap_or_else(|| stage.name.clone()),
                name: job.name.clone(),
                display_name,
                phases: job_phases_with_self_folder(&job, run.minute, &machine, &self_name),
                variables: resolved,
                secret_values: secret_values.clone(),
                timeout: if job.timeout_in_minutes == 0 {
                    None
                } else {
                    Some(run.minute * job.timeout_in_minutes)
                },
                cancel_timeout: run.minute * job.cancel_timeout_in_minutes,
                workspace_clean: job.workspace_clean.clone(),
                position_in_phase: job.strategy.position_in_phase.max(1),
                total_jobs_in_phase: job.strategy.total_jobs_in_phase.max(1),
                environment: job.environment.as_ref().map(|e| e.name.clone()),
                strategy: job.deployment.as_ref().map(|d| d.name.clone()),
                continue_on_error: job.continue_on_error,
            };
            if let Some(environment) = &job.environment
                && environments_seen.insert(environment.name.to_ascii_lowercase())
            {
                sink.event(Event::Issue {
                    job: id.clone(),
                    step: None,
                    kind: IssueKind::Warning,
                    message: format!(
                        "{}: environment `{}`: approvals and checks configured on a Lockgate server are not evaluated in local runs",
                        job.source, environment.name
                    ),
                });
            }
            if let Some(environment) = &job.environment
                && environment
                    .resource_type
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case("VirtualMachine"))
            {
                let resource = environment
                    .resource_name
                    .clone()
                    .unwrap_or_else(|| machine.clone());
                sink.event(Event::Issue {
                    job: id.clone(),
                    step: None,
                    kind: IssueKind::Warning,
                    message: format!(
                        "{}: environment `{}`: a deployment to virtual machine resources runs as one job, on this machine, in local runs (`Environment.ResourceName` is `{resource}`); the targets registered on a Lockgate server and the strategy's batches apply there",
                        job.source, environment.name
                    ),
                });
            }
            if job.container.is_some() {
                sink.event(Event::Issue {
                    job: id.clone(),
                    step: None,
                    kind: IssueKind::Warning,
                    message: format!("{}: container jobs run on this machine's host in local runs; the container is ignored", job.source),
                });
            }
            let workspace = options.work_dir.join(workspace_counter.to_string());
            let run = Arc::clone(&run);
            let registry = Arc::clone(&registry);
            let sink = Arc::clone(&sink);
            let cancel = cancel.clone();
            engine.job_started(index);
            let server_job = (job.kind == JobKind::Server).then_some(job);
            running.spawn(async move {
                let outcome = match server_job {
                    Some(job) => {
                        crate::agentless::run_local_job(&job, &spec, run.minute, sink, &cancel)
                            .await
                    }
                    None => {
                        run_job(&run, &registry, &spec, &workspace, sink.as_ref(), &cancel).await
                    }
                };
                (index, outcome)
            });
        }
        if !decisions.is_empty() {
            continue;
        }
        if run_result.is_some() {
            break;
        }
        match running.join_next().await {
            Some(Ok((index, outcome))) => {
                for name in &outcome.secret_outputs {
                    if let Some(value) = outcome.outputs.get(name)
                        && !value.is_empty()
                        && !secret_values.contains(value)
                    {
                        secret_values.push(value.clone());
                    }
                }
                summaries.push(JobSummary {
                    id: id_of(index),
                    display_name: job_display_name(&plan_jobs[index].1),
                    result: from_engine(engine.job_result(index, to_engine(outcome.result))),
                    seconds: outcome.seconds,
                    outputs: outcome.outputs.clone(),
                });
                engine.job_finished(index, to_engine(outcome.result), outcome.outputs);
                decisions = engine.advance();
            }
            Some(Err(err)) => {
                // A job task panicked: nothing a pipeline can cause should get here; fail loudly but
                // keep the run's bookkeeping consistent.
                sink.event(Event::Issue {
                    job: JobId {
                        stage: String::new(),
                        job: String::new(),
                    },
                    step: None,
                    kind: IssueKind::Error,
                    message: format!("internal error: a job stopped unexpectedly: {err}"),
                });
                running.abort_all();
                for index in 0..plan_jobs.len() {
                    if engine.job_state(index) == Some(&JobState::Running) {
                        engine.job_finished(index, EngineResult::Failed, BTreeMap::new());
                    }
                }
                while running.join_next().await.is_some() {}
                decisions = engine.advance();
            }
            // Nothing running and nothing startable: the remaining stages wait on something that
            // cannot finish (a dependency cycle the compiler missed). Fail them rather than hang.
            None => decisions = engine.abandon(),
        }
    }
    let mut result = from_engine(run_result.unwrap_or(EngineResult::Failed));
    if cancel.is_canceled() && result != TaskResult::Failed {
        result = TaskResult::Canceled;
    }
    // The summary lists jobs in plan order, whatever order they finished in.
    let position = |id: &JobId| {
        plan.stages
            .iter()
            .flat_map(|stage| {
                stage
                    .jobs
                    .iter()
                    .map(move |job| (stage.name.as_str(), job.name.as_str()))
            })
            .position(|(stage, job)| stage == id.stage && job == id.job)
            .unwrap_or(usize::MAX)
    };
    summaries.sort_by_key(|summary| position(&summary.id));
    RunOutcome {
        result,
        stages: plan
            .stages
            .iter()
            .enumerate()
            .filter(|(index, _)| stage_selected[*index])
            .map(|(index, s)| {
                let result = match engine.stage_state(index) {
                    Some(StageState::Done(result)) => from_engine(result),
                    _ => TaskResult::Skipped,
                };
                (s.name.clone(), result)
            })
            .collect(),
        jobs: summaries,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// The name shown for a job: its `displayName`, else its name (`Job` for the implied job, as Azure shows it).
fn job_display_name(job: &plan::Job) -> String {
    match &job.display_name {
        Some(name) => name.clone(),
        None if job.name == "__default" => "Job".into(),
        None => job.name.clone(),
    }
}

/// Why a job is skipped because its pool wants another operating system than this machine's, when it is
/// and `--os-mismatch run` was not given. Azure Pipelines runs such a job only on an agent with that
/// `Agent.OS`; running it here would run Windows or macOS steps on Linux and report the wrong `Agent.OS`.
fn os_mismatch(
    job: &plan::Job,
    variables: &[InitialVariable],
    options: &LocalRunOptions,
) -> Option<String> {
    if options.os_mismatch == OsMismatch::Run {
        return None;
    }
    let pool = job.pool.as_ref()?;
    let expand = |text: &str| {
        lockgate_expr::expand_macros(text, |name| {
            variables
                .iter()
                .rev()
                .find(|v| v.name.eq_ignore_ascii_case(name))
                .map(|v| v.value.clone())
        })
        .into_owned()
    };
    let wanted = pool.wanted_os(expand)?;
    let here = options
        .run_variables
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Agent.OS"))
        .map_or("Linux", |(_, v)| v.as_str());
    if wanted.eq_ignore_ascii_case(here) {
        return None;
    }
    let asked = pool
        .vm_image
        .as_deref()
        .map(|image| format!("vmImage `{}`", expand(image)))
        .or_else(|| {
            pool.name
                .as_deref()
                .map(|name| format!("pool `{}`", expand(name)))
        })
        .unwrap_or_else(|| "its pool".into());
    Some(format!(
        "{}: skipped: {asked} asks for an agent with Agent.OS {wanted}, and this machine is {here} \
         (`lockgate run --os-mismatch run` runs it here anyway)",
        job.source
    ))
}

fn push_variables(
    out: &mut Vec<InitialVariable>,
    variables: &[Variable],
    options: &LocalRunOptions,
) {
    for variable in variables {
        match variable {
            Variable::Value {
                name,
                value,
                readonly,
                ..
            } => {
                out.push(InitialVariable {
                    name: name.clone(),
                    value: value.clone(),
                    secret: false,
                    readonly: *readonly,
                });
            }
            Variable::Group { name, .. } => {
                if let Some(group) = options.variable_groups.get(name) {
                    out.extend(group.iter().cloned());
                }
            }
        }
    }
}

/// Run, pipeline and stage variables in precedence order (later wins), with `--var` last.
fn pipeline_variables(
    plan: &Plan,
    stage: Option<&plan::Stage>,
    options: &LocalRunOptions,
) -> Vec<InitialVariable> {
    let mut out: Vec<InitialVariable> = options
        .run_variables
        .iter()
        .map(|(k, v)| InitialVariable::new(k, v))
        .collect();
    push_variables(&mut out, &plan.variables, options);
    if let Some(stage) = stage {
        push_variables(&mut out, &stage.variables, options);
    }
    out.extend(
        options
            .variables
            .iter()
            .map(|(k, v)| InitialVariable::new(k, v)),
    );
    out
}

fn append_job_variables(
    out: &mut Vec<InitialVariable>,
    job: &plan::Job,
    options: &LocalRunOptions,
) {
    let job_level: Vec<Variable> = job
        .variables
        .iter()
        .filter(|v| {
            !matches!(
                v,
                Variable::Value {
                    scope: VariableScope::Matrix,
                    ..
                }
            )
        })
        .cloned()
        .collect();
    let matrix: Vec<Variable> = job
        .variables
        .iter()
        .filter(|v| {
            matches!(
                v,
                Variable::Value {
                    scope: VariableScope::Matrix,
                    ..
                }
            )
        })
        .cloned()
        .collect();
    push_variables(out, &job_level, options);
    push_variables(out, &matrix, options);
    out.extend(
        options
            .variables
            .iter()
            .map(|(k, v)| InitialVariable::new(k, v)),
    );
}

/// Keeps the last definition of each name (case-insensitive) and expands macros between variable values
/// the way the agent does when a job starts.
fn expand_variable_macros(variables: Vec<InitialVariable>) -> Vec<InitialVariable> {
    let mut last: HashMap<String, usize> = HashMap::new();
    for (index, variable) in variables.iter().enumerate() {
        last.insert(variable.name.to_ascii_lowercase(), index);
    }
    let kept: Vec<InitialVariable> = variables
        .into_iter()
        .enumerate()
        .filter(|(index, v)| last.get(&v.name.to_ascii_lowercase()) == Some(index))
        .map(|(_, v)| v)
        .collect();
    let pairs: Vec<(String, String)> = kept
        .iter()
        .map(|v| (v.name.clone(), v.value.clone()))
        .collect();
    let expanded = lockgate_expr::expand_variables(&pairs);
    kept.into_iter()
        .zip(expanded)
        .map(|(mut variable, expanded)| {
            variable.value = expanded.value;
            variable
        })
        .collect()
}

/// Reads a variable-group file: a JSON object (`{"name": "value"}` or `{"name": {"value": "...",
/// "isSecret": true}}`), or `NAME=VALUE` lines (`#` comments).
pub fn read_variable_group(path: &Path) -> Result<Vec<InitialVariable>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    if text.trim_start().starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|err| format!("{}: invalid JSON: {err}", path.display()))?;
        let Some(object) = value.as_object() else {
            return Err(format!("{}: expected a JSON object", path.display()));
        };
        let mut out = Vec::new();
        for (name, value) in object {
            let variable = match value {
                serde_json::Value::String(text) => InitialVariable::new(name, text),
                serde_json::Value::Object(fields) => {
                    let text = match fields.get("value") {
                        Some(serde_json::Value::String(text)) => text.clone(),
                        Some(other) => other.to_string(),
                        None => {
                            return Err(format!(
                                "{}: variable `{name}` has no `value`",
                                path.display()
                            ));
                        }
                    };
                    let secret = fields
                        .get("isSecret")
                        .and_then(serde_json::Value::as_bool)
                        .unwrap_or(false);
                    InitialVariable {
                        name: name.clone(),
                        value: text,
                        secret,
                        readonly: false,
                    }
                }
                serde_json::Value::Null => InitialVariable::new(name, ""),
                other => InitialVariable::new(name, other.to_string()),
            };
            out.push(variable);
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!(
                "{}:{}: expected NAME=VALUE",
                path.display(),
                number + 1
            ));
        };
        out.push(InitialVariable::new(name.trim(), value.trim()));
    }
    Ok(out)
}

/// Facts about the repository and this machine for the predefined variables, with local values where a
/// server would have its own (Build.Reason `Manual`, System.TeamProject `local`).
pub fn run_facts(
    repository: Option<&Path>,
    pipeline_name: &str,
    run_id: &str,
    build_number: &str,
) -> Vec<(String, String)> {
    let git = |args: &[&str]| -> Option<String> {
        let dir = repository?;
        let output = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    let branch =
        git(&["symbolic-ref", "--quiet", "HEAD"]).unwrap_or_else(|| "refs/heads/main".to_string());
    let branch_name = branch.rsplit('/').next().unwrap_or("main").to_string();
    let version = git(&["rev-parse", "HEAD"]).unwrap_or_default();
    let message = git(&["log", "-1", "--format=%s"]).unwrap_or_default();
    let author = git(&["log", "-1", "--format=%an"]).unwrap_or_default();
    let user = std::env::var("USER").unwrap_or_else(|_| "local".into());
    let machine = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let repo_name = repository
        .and_then(|d| d.file_name())
        .map_or_else(|| "local".to_string(), |n| n.to_string_lossy().into_owned());
    let os = lockgate_pipeline::plan::host_os();
    let arch = lockgate_pipeline::plan::host_architecture();
    let home = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.display().to_string()))
        .unwrap_or_default();
    vec![
        ("Agent.Id".into(), "1".into()),
        ("Agent.Name".into(), "lockgate-local".into()),
        ("Agent.MachineName".into(), machine),
        ("Agent.OS".into(), os.into()),
        ("Agent.OSArchitecture".into(), arch.into()),
        ("Agent.HomeDirectory".into(), home),
        ("Agent.Version".into(), env!("CARGO_PKG_VERSION").into()),
        ("Build.BuildId".into(), run_id.into()),
        ("Build.BuildNumber".into(), build_number.into()),
        ("Build.DefinitionName".into(), pipeline_name.into()),
        ("Build.DefinitionVersion".into(), "1".into()),
        ("Build.Reason".into(), "Manual".into()),
        ("Build.QueuedBy".into(), user.clone()),
        ("Build.RequestedFor".into(), user),
        ("Build.Repository.Name".into(), repo_name),
        ("Build.Repository.Provider".into(), "Git".into()),
        (
            "Build.Repository.Uri".into(),
            repository
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
        ),
        ("Build.SourceBranch".into(), branch),
        ("Build.SourceBranchName".into(), branch_name),
        ("Build.SourceVersion".into(), version),
        ("Build.SourceVersionMessage".into(), message),
        ("Build.SourceVersionAuthor".into(), author),
        ("System.CollectionUri".into(), String::new()),
        ("System.TeamFoundationCollectionUri".into(), String::new()),
        ("System.TeamProject".into(), "local".into()),
        ("System.DefinitionId".into(), "1".into()),
        ("System.HostType".into(), "build".into()),
        ("System.PlanId".into(), run_id.into()),
        ("System.TimelineId".into(), run_id.into()),
        ("System.IsTriggeringRepository".into(), "True".into()),
        ("System.Debug".into(), "false".into()),
    ]
}

/// Runs a plan on a fresh multi-threaded runtime; Ctrl-C cancels the run (SIGTERM to the running steps,
/// then `always()` work still runs). For callers without their own async runtime, such as the CLI.
pub fn run_local(
    plan: &Plan,
    run: Arc<RunContext>,
    registry: Arc<TaskRegistry>,
    options: &LocalRunOptions,
    sink: Arc<dyn EventSink>,
) -> std::io::Result<RunOutcome> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cancel = CancelSignal::new();
    Ok(runtime.block_on(async {
        let on_interrupt = cancel.clone();
        let interrupt_sink = Arc::clone(&sink);
        let watcher = tokio::spawn(async move {
            // Ctrl-C, or SIGTERM from a supervisor (`timeout`, a CI system), cancels the run; a second one
            // kills what is still running without waiting for the grace period.
            #[cfg(unix)]
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            for round in 0..2 {
                #[cfg(unix)]
                let terminated = async {
                    match terminate.as_mut() {
                        Some(stream) => {
                            stream.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                #[cfg(not(unix))]
                let terminated = std::future::pending::<()>();
                let which = tokio::select! {
                    result = tokio::signal::ctrl_c() => match result {
                        Ok(()) => "interrupted",
                        Err(_) => return,
                    },
                    () = terminated => "terminated",
                };
                let message = if round == 0 {
                    format!("{which}: canceling the run (again to stop at once)")
                } else {
                    format!("{which} again: killing what is still running")
                };
                interrupt_sink.event(Event::Issue {
                    job: JobId {
                        stage: String::new(),
                        job: String::new(),
                    },
                    step: None,
                    kind: IssueKind::Warning,
                    message,
                });
                if round == 0 {
                    on_interrupt.cancel();
                } else {
                    on_interrupt.force();
                }
            }
        });
        let outcome = run_plan(plan, run, registry, options, sink, cancel).await;
        watcher.abort();
        outcome
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(yaml: &'static str) -> Plan {
        let output = lockgate_pipeline::compile(&lockgate_pipeline::CompileInput {
            entry: "azure-pipelines.yml".into(),
            reader: &lockgate_pipeline::SingleFile(yaml),
            parameters: Vec::new(),
            variables: Vec::new(),
        });
        output
            .plan
            .unwrap_or_else(|| panic!("{:?}", output.diagnostics))
    }

    #[test]
    fn script_shortcuts_become_tasks_and_agent_jobs_check_out_first() {
        let plan = compile(
            "steps:\n- script: echo hi\n  workingDirectory: sub\n  failOnStderr: true\n- bash: ls\n- pwsh: dir\n",
        );
        let phases = job_phases(&plan.stages[0].jobs[0], Duration::from_secs(60), "box");
        let steps = &phases[0].steps;
        assert!(
            matches!(&steps[0].action, StepAction::Checkout { repository, .. } if repository == "self")
        );
        let tasks: Vec<(String, u32)> = steps[1..]
            .iter()
            .filter_map(|s| match &s.action {
                StepAction::Task { name, major, .. } => Some((name.clone(), *major)),
                _ => None,
            })
            .collect();
        assert_eq!(
            tasks,
            [
                ("CmdLine".to_string(), 2),
                ("Bash".to_string(), 3),
                ("PowerShell".to_string(), 2)
            ]
        );
        let StepAction::Task { inputs, .. } = &steps[1].action else {
            panic!()
        };
        assert_eq!(
            inputs.get("workingDirectory").map(String::as_str),
            Some("sub")
        );
        assert_eq!(inputs.get("failOnStderr").map(String::as_str), Some("true"));
        assert_eq!(steps[1].display_name, "echo hi");
    }

    #[test]
    fn deployment_phases_carry_the_documented_output_key_forms() {
        let plan = compile(
            "jobs:\n- deployment: Web\n  environment: prod\n  strategy:\n    rolling:\n      maxParallel: 1\n      deploy:\n        steps:\n        - script: echo d\n",
        );
        let phases = job_phases(&plan.stages[0].jobs[0], Duration::from_secs(60), "box");
        let deploy = phases
            .iter()
            .find(|p| p.hook.as_deref() == Some("deploy"))
            .unwrap();
        assert_eq!(deploy.output_prefixes, ["deploy_box"]);
        assert!(
            matches!(&deploy.steps[0].action, StepAction::Download { source, .. } if source == "current")
        );
        let plan = compile(
            "jobs:\n- deployment: Web\n  environment: prod\n  strategy:\n    runOnce:\n      deploy:\n        steps:\n        - download: none\n",
        );
        let phases = job_phases(&plan.stages[0].jobs[0], Duration::from_secs(60), "box");
        let deploy = phases
            .iter()
            .find(|p| p.hook.as_deref() == Some("deploy"))
            .unwrap();
        assert_eq!(deploy.output_prefixes, ["Web", "deploy", "Deploy_box"]);
        assert_eq!(
            deploy.steps.len(),
            1,
            "download: none replaces the automatic download"
        );
    }

    #[test]
    fn unknown_tasks_name_the_built_in_ones() {
        let plan = compile("steps:\n- task: Nope@1\n- task: Bash@3\n  inputs:\n    script: ls\n");
        let problems = validate_plan(&plan, &TaskRegistry::with_builtins(), &BTreeMap::new());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].warning, "an unknown task fails only its step");
        assert!(
            problems[0].message.contains("Nope@1") && problems[0].message.contains("copyfiles@2"),
            "{}",
            problems[0]
        );
        assert!(
            problems[0].location.contains(":2:"),
            "{}",
            problems[0].location
        );
    }

    #[test]
    fn variable_group_files() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("g.json");
        std::fs::write(
            &json,
            r#"{"a": "1", "token": {"value": "s3", "isSecret": true}}"#,
        )
        .unwrap();
        let group = read_variable_group(&json).unwrap();
        assert_eq!(
            group[1],
            InitialVariable {
                name: "token".into(),
                value: "s3".into(),
                secret: true,
                readonly: false
            }
        );
        let env = dir.path().join("g.env");
        std::fs::write(&env, "# comment\nA = 1\nB=x=y\n").unwrap();
        let group = read_variable_group(&env).unwrap();
        assert_eq!(
            group,
            vec![
                InitialVariable::new("A", "1"),
                InitialVariable::new("B", "x=y")
            ]
        );
        std::fs::write(&env, "novalue\n").unwrap();
        assert!(read_variable_group(&env).unwrap_err().contains(":1:"));
    }
}
