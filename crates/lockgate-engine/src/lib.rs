//! The run engine: the state machine of one run, shared by `lockgate run` and the server.
//!
//! Given a run's [`Graph`] (stages and jobs with their conditions, dependencies and variables), the
//! run's predefined variables and what happened so far (jobs started and finished with their results
//! and outputs, a cancel), the [`Engine`] decides which jobs start, which are skipped or canceled,
//! each starting job's `$[ ]` values, and the stage and run results. It does no IO: callers feed it
//! events and carry out its [`Decision`]s (spawn a local job, queue a job row for an agent).
//!
//! Semantics follow Microsoft's pages "Pipeline conditions" (default `succeeded()`, status
//! functions, "Condition outcomes when a build is canceled"), "Expressions" (section
//! "Dependencies": `dependencies` and `stageDependencies`, only direct dependencies visible) and
//! "Define variables" (output variables; `$[ ]` runtime expressions evaluated when the job starts).

use std::collections::BTreeMap;

use lockgate_expr::{MapContext, Object, ParseOptions, StatusInput, Value, parse};
use lockgate_pipeline::plan;
use lockgate_pipeline::run_number;

pub use lockgate_expr::TaskResult;

/// A stage of the run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StageNode {
    pub name: String,
    /// Names of the stages it waits for (unknown names are not waited for).
    pub depends_on: Vec<String>,
    /// Its condition as written (`succeeded()` when absent).
    pub condition: Option<String>,
    /// What its condition reads as `variables`, lowest precedence first (the run's predefined
    /// variables are added above them).
    pub variables: Vec<(String, String)>,
    /// The stage waits for checks (approvals and the like on the environments it deploys to) after
    /// its condition held and before its jobs start; the caller says how they stand
    /// ([`Engine::set_gate`]).
    pub gated: bool,
    /// `trigger: manual`: the stage does not start by itself; someone starts it
    /// ([`Engine::start_manually`]). A run whose remaining stages all wait for a manual start (or
    /// for a stage that does) is finished without them (Microsoft's release notes of sprint 234,
    /// "Manually queued stages": "a pipeline run completes when there are only manually
    /// triggered stages left to execute").
    pub manual: bool,
}

/// One job instance (a matrix leg or parallel slice is one instance of its base job).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobNode {
    /// Index of its stage in [`Graph::stages`].
    pub stage: usize,
    pub name: String,
    /// The job name as written (`dependsOn` and `dependencies.<name>` use it).
    pub base_name: String,
    /// The matrix leg or slice; its outputs appear as `leg.step.var`.
    pub leg: Option<String>,
    /// Base names of the jobs of its stage it waits for.
    pub depends_on: Vec<String>,
    pub condition: Option<String>,
    /// What its condition and `$[ ]` expressions read, lowest precedence first. A value that is a
    /// whole `$[ ]` expression is evaluated when the job starts ([`Decision::Start`]).
    pub variables: Vec<(String, String)>,
    /// Job keys written as `$[ ]` (see [`plan::JOB_RUNTIME_FIELDS`]), key to expression.
    pub runtime_fields: BTreeMap<String, String>,
    pub continue_on_error: bool,
    /// `strategy.maxParallel`: at most this many instances of the base job at once (0: no limit).
    pub max_parallel: u32,
    /// One target of a deployment over virtual machines (`lockgate_pipeline::rollout`): its batch,
    /// from 1. It waits until the instances of earlier batches are done and is skipped when one of
    /// them did not succeed (the rollout stops). 0: not such an instance.
    pub rollout_batch: u32,
}

impl JobNode {
    /// The node of a compiled job; `variables` as [`JobNode::variables`].
    pub fn from_plan(stage: usize, job: &plan::Job, variables: Vec<(String, String)>) -> JobNode {
        JobNode {
            stage,
            name: job.name.clone(),
            base_name: if job.base_name.is_empty() {
                job.name.clone()
            } else {
                job.base_name.clone()
            },
            leg: job.strategy.leg.clone(),
            depends_on: job.depends_on.clone(),
            condition: job.condition.clone(),
            variables,
            runtime_fields: job.runtime_fields.clone(),
            continue_on_error: job.continue_on_error,
            max_parallel: job.strategy.max_parallel,
            rollout_batch: job.strategy.rollout_batch,
        }
    }
}

/// The stages and jobs of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub stages: Vec<StageNode>,
    pub jobs: Vec<JobNode>,
}

impl Graph {
    /// The graph of a compiled plan. `variables(stage, job)` lists what the conditions of a
    /// stage (`job` None) or job read, lowest precedence first; [`yaml_variables`] gives the
    /// YAML ones.
    pub fn from_plan(
        plan: &plan::Plan,
        mut variables: impl FnMut(&plan::Stage, Option<&plan::Job>) -> Vec<(String, String)>,
    ) -> Graph {
        let mut graph = Graph::default();
        for (index, stage) in plan.stages.iter().enumerate() {
            graph.stages.push(StageNode {
                name: stage.name.clone(),
                depends_on: stage.depends_on.clone(),
                condition: stage.condition.clone(),
                variables: variables(stage, None),
                gated: false,
                manual: stage.manual_trigger,
            });
            for job in &stage.jobs {
                let own = variables(stage, Some(job));
                graph.jobs.push(JobNode::from_plan(index, job, own));
            }
        }
        graph
    }
}

/// The name/value pairs of YAML variables (groups left out), in order.
pub fn yaml_variables<'v>(
    variables: impl IntoIterator<Item = &'v plan::Variable>,
) -> impl Iterator<Item = (String, String)> {
    variables.into_iter().filter_map(|variable| match variable {
        plan::Variable::Value { name, value, .. } => Some((name.clone(), value.clone())),
        plan::Variable::Group { .. } => None,
    })
}

/// Where a job is.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum JobState {
    /// Not started: its stage or dependencies are not done, or it was never evaluated.
    #[default]
    Waiting,
    /// Decided to run, not picked up yet.
    Queued,
    Running,
    Done {
        result: TaskResult,
        outputs: BTreeMap<String, String>,
    },
}

/// How a gated stage's checks stand.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Gate {
    /// Not decided yet: the stage waits.
    #[default]
    Pending,
    /// Every check passed: the stage starts.
    Open,
    /// A check was rejected, timed out or failed: the stage fails without running its jobs.
    Rejected,
    /// The stage gave way (a newer run took the environment's exclusive lock, `lockBehavior:
    /// runLatest`): its jobs end as canceled without running, and so does the stage.
    Canceled,
}

/// Where a stage is.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum StageState {
    /// Its dependencies are not done yet, so its condition was not evaluated.
    #[default]
    Waiting,
    /// Its condition held; it waits for its checks.
    Gated,
    /// Its condition held; its jobs run.
    Running,
    Done(TaskResult),
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// The stage's condition held: its jobs are evaluated from now on.
    StageStarted {
        stage: usize,
    },
    /// The stage's condition held and it waits for its checks: the caller evaluates them (asks for
    /// approvals, ...) and reports with [`Engine::set_gate`]. Repeated while they are pending in a
    /// restored engine; acting on it must be idempotent.
    AwaitChecks {
        stage: usize,
    },
    StageFinished {
        stage: usize,
        result: TaskResult,
    },
    /// Run the job. `values` are the evaluated `$[ ]` variables, by position in
    /// [`JobNode::variables`]; `fields` the evaluated job keys, as the plan job's JSON values.
    Start {
        job: usize,
        values: Vec<(usize, String)>,
        fields: Vec<(String, serde_json::Value)>,
    },
    /// The job ends without running: skipped (its or its stage's condition is false, or the run
    /// was canceled), canceled (queued when the run was canceled) or failed (`message` says why).
    Finish {
        job: usize,
        result: TaskResult,
        message: Option<String>,
    },
    /// The run was canceled while the job runs: tell it to stop (its `always()` steps still run).
    CancelRunning {
        job: usize,
    },
    /// Every stage is done.
    RunFinished {
        result: TaskResult,
    },
}

/// The result of several parts together: the worse wins (skipped < succeeded < with issues <
/// failed < canceled); skipped parts change nothing.
pub fn merge(a: TaskResult, b: TaskResult) -> TaskResult {
    fn rank(result: TaskResult) -> u8 {
        match result {
            TaskResult::Skipped => 0,
            TaskResult::Succeeded => 1,
            TaskResult::SucceededWithIssues => 2,
            TaskResult::Failed => 3,
            TaskResult::Canceled => 4,
        }
    }
    if rank(b) > rank(a) { b } else { a }
}

/// Azure Pipelines' name of a result, as `dependencies.X.result` shows it.
pub fn result_name(result: TaskResult) -> &'static str {
    match result {
        TaskResult::Succeeded => "Succeeded",
        TaskResult::SucceededWithIssues => "SucceededWithIssues",
        TaskResult::Failed => "Failed",
        TaskResult::Canceled => "Canceled",
        TaskResult::Skipped => "Skipped",
    }
}

/// The inner text of a value that is a whole `$[ ... ]` runtime expression.
pub fn runtime_expression(value: &str) -> Option<&str> {
    value.trim().strip_prefix("$[")?.strip_suffix(']')
}

/// A job or stage as a condition sees it.
struct DependencyState {
    result: TaskResult,
    outputs: BTreeMap<String, String>,
}

impl DependencyState {
    fn value(&self) -> Value {
        let mut outputs = Object::new();
        for (key, value) in &self.outputs {
            outputs.insert(key.clone(), Value::String(value.clone()));
        }
        let mut object = Object::new();
        object.insert("result", Value::String(result_name(self.result).into()));
        object.insert("outputs", Value::Object(outputs));
        Value::Object(object)
    }
}

/// The state of one run.
#[derive(Clone, Debug)]
pub struct Engine {
    graph: Graph,
    /// The run's predefined variables; they win over every other variable in conditions.
    predefined: Vec<(String, String)>,
    jobs: Vec<JobState>,
    stages: Vec<StageState>,
    gates: Vec<Gate>,
    /// Manual stages someone started.
    started: Vec<bool>,
    canceled: bool,
    /// Stages whose jobs count towards the run's result (all but those a partial run left out).
    counted: Vec<bool>,
    abandoned: bool,
    finished: bool,
    /// The jobs of each stage, in graph order (built once: the graph's shape does not change).
    members: Vec<Vec<usize>>,
    /// The instances of each base job name (lowercase) of each stage.
    bases: Vec<BTreeMap<String, Vec<usize>>>,
}

impl Engine {
    /// A run where nothing happened yet.
    pub fn new(graph: Graph, predefined: Vec<(String, String)>) -> Engine {
        let jobs = vec![JobState::Waiting; graph.jobs.len()];
        let stages = vec![StageState::Waiting; graph.stages.len()];
        let counted = vec![true; graph.stages.len()];
        let gates = vec![Gate::Pending; graph.stages.len()];
        let started = vec![false; graph.stages.len()];
        let mut members = vec![Vec::new(); graph.stages.len()];
        let mut bases: Vec<BTreeMap<String, Vec<usize>>> =
            vec![BTreeMap::new(); graph.stages.len()];
        for (index, node) in graph.jobs.iter().enumerate() {
            if let Some(list) = members.get_mut(node.stage) {
                list.push(index);
                bases[node.stage]
                    .entry(node.base_name.to_ascii_lowercase())
                    .or_default()
                    .push(index);
            }
        }
        Engine {
            members,
            bases,
            graph,
            predefined,
            jobs,
            stages,
            gates,
            started,
            canceled: false,
            counted,
            abandoned: false,
            finished: false,
        }
    }

    /// A run in progress, from its jobs' states (in [`Graph::jobs`] order; missing ones wait).
    /// A stage whose jobs all wait has not started; one whose jobs are all done is done with
    /// their result; any other has started. The engine keeps this true: a stage is skipped as a
    /// whole, and a cancel never ends part of the jobs of a stage that has not started.
    pub fn restore(
        graph: Graph,
        predefined: Vec<(String, String)>,
        jobs: Vec<JobState>,
        canceled: bool,
    ) -> Engine {
        let mut engine = Engine::new(graph, predefined);
        for (slot, state) in engine.jobs.iter_mut().zip(jobs) {
            *slot = state;
        }
        engine.canceled = canceled;
        for stage in 0..engine.stages.len() {
            let states: Vec<&JobState> =
                engine.stage_jobs(stage).map(|j| &engine.jobs[j]).collect();
            engine.stages[stage] = if states.iter().all(|s| matches!(s, JobState::Done { .. })) {
                if states.is_empty() {
                    StageState::Waiting
                } else {
                    StageState::Done(engine.stage_result(stage))
                }
            } else if states.iter().all(|s| **s == JobState::Waiting) {
                StageState::Waiting
            } else {
                StageState::Running
            };
        }
        engine
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn job_state(&self, job: usize) -> Option<&JobState> {
        self.jobs.get(job)
    }

    pub fn stage_state(&self, stage: usize) -> Option<StageState> {
        self.stages.get(stage).copied()
    }

    pub fn is_canceled(&self) -> bool {
        self.canceled
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// How the checks of a gated stage stand (see [`StageNode::gated`]); takes effect at the next
    /// [`Engine::advance`].
    pub fn set_gate(&mut self, stage: usize, gate: Gate) {
        if let Some(slot) = self.gates.get_mut(stage) {
            *slot = gate;
        }
    }

    /// Someone started a manual stage (see [`StageNode::manual`]): it starts like any other stage
    /// once its dependencies are done. Takes effect at the next [`Engine::advance`].
    pub fn start_manually(&mut self, stage: usize) {
        if let Some(slot) = self.started.get_mut(stage) {
            *slot = true;
        }
    }

    /// Whether a stage waits for a manual start: a manual stage nobody started, or a stage that
    /// depends (directly or not) on one that waits.
    pub fn waits_for_manual_start(&self, stage: usize) -> bool {
        let mut seen = vec![false; self.stages.len()];
        self.dormant(stage, &mut seen)
    }

    fn dormant(&self, stage: usize, seen: &mut [bool]) -> bool {
        if self.stages.get(stage) != Some(&StageState::Waiting) || seen[stage] {
            return false;
        }
        seen[stage] = true;
        let node = &self.graph.stages[stage];
        if node.manual && !self.started[stage] {
            return true;
        }
        node.depends_on.iter().any(|name| {
            self.stage_index(name)
                .is_some_and(|index| self.dormant(index, seen))
        })
    }

    /// Leaves a stage's jobs out of the run's result (a partial run that did not select them).
    pub fn leave_out_of_result(&mut self, stage: usize) {
        if let Some(counted) = self.counted.get_mut(stage) {
            *counted = false;
        }
    }

    /// A queued job was picked up.
    pub fn job_started(&mut self, job: usize) {
        if let Some(state @ JobState::Queued) = self.jobs.get_mut(job) {
            *state = JobState::Running;
        }
    }

    /// A job ended with `result` and the output variables it set (`step.var`). A failed job with
    /// `continueOnError` is recorded as succeeded with issues (see [`Engine::job_result`]).
    pub fn job_finished(
        &mut self,
        job: usize,
        result: TaskResult,
        outputs: BTreeMap<String, String>,
    ) {
        let result = self.job_result(job, result);
        if let Some(state) = self.jobs.get_mut(job) {
            *state = JobState::Done { result, outputs };
        }
    }

    /// The result a job that ended with `result` has: a failure of a job with `continueOnError:
    /// true` is "succeeded with issues" for the job itself, its dependents, its stage and the run
    /// (Microsoft's "Pipeline conditions", FAQ "How can I trigger a job if a previous job succeeded
    /// with issues?").
    pub fn job_result(&self, job: usize, result: TaskResult) -> TaskResult {
        if job < self.graph.jobs.len() {
            self.effective(job, result)
        } else {
            result
        }
    }

    /// The run is canceled ("Condition outcomes when a build is canceled"): running jobs are told
    /// to stop, queued ones end as canceled, and a waiting job whose condition cannot hold any
    /// more ends as skipped now. A waiting job whose condition may still hold (`always()`,
    /// `canceled()`, one that reads `dependencies`) waits for its dependencies and is evaluated
    /// with the cancel. A stage that has not started is ended only as a whole.
    pub fn cancel(&mut self) -> Vec<Decision> {
        let mut out = Vec::new();
        if self.canceled || self.finished {
            self.canceled = true;
            return out;
        }
        self.canceled = true;
        for job in 0..self.jobs.len() {
            match self.jobs[job] {
                JobState::Queued => {
                    self.finish(job, TaskResult::Canceled, None, &mut out);
                }
                JobState::Running => out.push(Decision::CancelRunning { job }),
                _ => {}
            }
        }
        for stage in 0..self.stages.len() {
            // A stage that has not started: decided now when its condition does not read its
            // dependencies. Skipped as a whole when false; when true it will start, so its jobs
            // are decided as in a started stage (a restored run reads it as started, which it
            // would be).
            if matches!(self.stages[stage], StageState::Waiting | StageState::Gated) {
                let node = &self.graph.stages[stage];
                if reads_dependencies(node.condition.as_deref()) {
                    continue;
                }
                let context = self.stage_context(stage);
                match evaluate(node.condition.as_deref(), &context) {
                    Ok(false) => {
                        self.skip_stage(stage, &mut out);
                        continue;
                    }
                    Ok(true) => {}
                    Err(_) => continue,
                }
            }
            match self.stages[stage] {
                StageState::Waiting | StageState::Gated | StageState::Running => {
                    for job in self.stage_jobs(stage).collect::<Vec<_>>() {
                        let node = &self.graph.jobs[job];
                        if self.jobs[job] != JobState::Waiting
                            || reads_dependencies(node.condition.as_deref())
                        {
                            continue;
                        }
                        let context = self.job_context(job);
                        if evaluate(node.condition.as_deref(), &context) == Ok(false) {
                            self.finish(job, TaskResult::Skipped, None, &mut out);
                        }
                    }
                }
                StageState::Done(_) => {}
            }
        }
        out.extend(self.advance());
        out
    }

    /// Moves the run forward as far as it goes with what is known: starts or skips stages whose
    /// dependencies are done, starts, skips or fails jobs whose dependencies are done, finishes
    /// stages whose jobs are done, and the run when every stage is.
    pub fn advance(&mut self) -> Vec<Decision> {
        let mut out = Vec::new();
        let mut changed = true;
        while changed && !self.finished {
            changed = false;
            for stage in 0..self.stages.len() {
                match self.stages[stage] {
                    StageState::Waiting => {
                        if self.stage_ready(stage) {
                            self.start_stage(stage, &mut out);
                            changed = true;
                        }
                    }
                    StageState::Gated => {
                        if self.gates[stage] != Gate::Pending {
                            self.pass_gate(stage, &mut out);
                            changed = true;
                        }
                    }
                    StageState::Running => {
                        for job in self.stage_jobs(stage).collect::<Vec<_>>() {
                            if self.jobs[job] == JobState::Waiting && self.job_ready(job) {
                                self.evaluate_job(job, &mut out);
                                changed = true;
                            }
                        }
                        if self
                            .stage_jobs(stage)
                            .all(|j| matches!(self.jobs[j], JobState::Done { .. }))
                        {
                            let result = self.stage_result(stage);
                            self.stages[stage] = StageState::Done(result);
                            out.push(Decision::StageFinished { stage, result });
                            changed = true;
                        }
                    }
                    StageState::Done(_) => {}
                }
            }
            if (0..self.stages.len()).all(|stage| {
                matches!(self.stages[stage], StageState::Done(_))
                    || self.waits_for_manual_start(stage)
            }) {
                self.finished = true;
                out.push(Decision::RunFinished {
                    result: self.run_result(),
                });
            }
        }
        out
    }

    /// Nothing runs and nothing can start, yet stages remain (they wait on each other): ends them
    /// as failed, their jobs skipped, rather than waiting forever.
    pub fn abandon(&mut self) -> Vec<Decision> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.abandoned = true;
        for stage in 0..self.stages.len() {
            if matches!(self.stages[stage], StageState::Done(_)) {
                continue;
            }
            for job in self.stage_jobs(stage).collect::<Vec<_>>() {
                if !matches!(self.jobs[job], JobState::Done { .. }) {
                    self.finish(job, TaskResult::Skipped, None, &mut out);
                }
            }
            self.stages[stage] = StageState::Done(TaskResult::Failed);
            out.push(Decision::StageFinished {
                stage,
                result: TaskResult::Failed,
            });
        }
        self.finished = true;
        out.push(Decision::RunFinished {
            result: self.run_result(),
        });
        out
    }

    /// The run's result from its jobs: failed if one failed (a failure is kept after a cancel),
    /// else canceled if the run or a job was canceled, else succeeded with issues if one did, else
    /// succeeded. A `continueOnError` job's failure counts as succeeded with issues.
    pub fn run_result(&self) -> TaskResult {
        let mut failed = self.abandoned;
        let mut canceled = self.canceled;
        let mut issues = false;
        for (job, state) in self.jobs.iter().enumerate() {
            let node = &self.graph.jobs[job];
            if !self.counted.get(node.stage).copied().unwrap_or(true) {
                continue;
            }
            if let JobState::Done { result, .. } = state {
                match self.effective(job, *result) {
                    TaskResult::Failed => failed = true,
                    TaskResult::Canceled => canceled = true,
                    TaskResult::SucceededWithIssues => issues = true,
                    _ => {}
                }
            }
        }
        for (stage, state) in self.stages.iter().enumerate() {
            if self.counted[stage] && *state == StageState::Done(TaskResult::Failed) {
                failed = true;
            }
        }
        if failed {
            TaskResult::Failed
        } else if canceled {
            TaskResult::Canceled
        } else if issues {
            TaskResult::SucceededWithIssues
        } else {
            TaskResult::Succeeded
        }
    }

    fn stage_jobs(&self, stage: usize) -> impl Iterator<Item = usize> + '_ {
        self.members.get(stage).into_iter().flatten().copied()
    }

    /// Stage and job names ignore ASCII case, as in Azure Pipelines (`dependsOn: build` waits for
    /// the stage `Build`).
    fn stage_index(&self, name: &str) -> Option<usize> {
        self.graph
            .stages
            .iter()
            .position(|s| s.name.eq_ignore_ascii_case(name))
    }

    fn stage_ready(&self, stage: usize) -> bool {
        if self.graph.stages[stage].manual && !self.started[stage] {
            return false;
        }
        self.graph.stages[stage].depends_on.iter().all(|name| {
            self.stage_index(name)
                .is_none_or(|index| matches!(self.stages[index], StageState::Done(_)))
        })
    }

    /// The instances of base job `base` of `stage`.
    fn instances<'e>(&'e self, stage: usize, base: &'e str) -> impl Iterator<Item = usize> + 'e {
        self.bases
            .get(stage)
            .and_then(|bases| bases.get(&base.to_ascii_lowercase()))
            .into_iter()
            .flatten()
            .copied()
    }

    fn job_ready(&self, job: usize) -> bool {
        let node = &self.graph.jobs[job];
        let done = node.depends_on.iter().all(|base| {
            self.instances(node.stage, base)
                .all(|j| matches!(self.jobs[j], JobState::Done { .. }))
        });
        if !done {
            return false;
        }
        if node.rollout_batch > 1
            && self
                .earlier_batches(job)
                .any(|j| !matches!(self.jobs[j], JobState::Done { .. }))
        {
            return false;
        }
        if node.max_parallel > 0 {
            let active = self
                .instances(node.stage, &node.base_name)
                .filter(|&j| matches!(self.jobs[j], JobState::Queued | JobState::Running))
                .count();
            if active >= node.max_parallel as usize {
                return false;
            }
        }
        true
    }

    /// The instances of the same base job in earlier rollout batches than `job`'s.
    fn earlier_batches(&self, job: usize) -> impl Iterator<Item = usize> + '_ {
        let node = &self.graph.jobs[job];
        self.instances(node.stage, &node.base_name)
            .filter(move |&other| {
                let batch = self.graph.jobs[other].rollout_batch;
                batch > 0 && batch < node.rollout_batch
            })
    }

    fn effective(&self, job: usize, result: TaskResult) -> TaskResult {
        if self.graph.jobs[job].continue_on_error && result == TaskResult::Failed {
            TaskResult::SucceededWithIssues
        } else {
            result
        }
    }

    /// Every instance of a base job together: the worst effective result of those done, and their
    /// outputs (matrix legs as `leg.step.var`).
    fn base_state(&self, stage: usize, base: &str) -> DependencyState {
        let mut result = TaskResult::Skipped;
        let mut outputs = BTreeMap::new();
        for job in self.instances(stage, base) {
            let JobState::Done {
                result: own,
                outputs: own_outputs,
            } = &self.jobs[job]
            else {
                continue;
            };
            result = merge(result, self.effective(job, *own));
            for (key, value) in own_outputs {
                let key = match &self.graph.jobs[job].leg {
                    Some(leg) => format!("{leg}.{key}"),
                    None => key.clone(),
                };
                outputs.insert(key, value.clone());
            }
        }
        DependencyState { result, outputs }
    }

    fn base_names(&self, stage: usize) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for job in self.stage_jobs(stage) {
            let base = self.graph.jobs[job].base_name.as_str();
            if !names.iter().any(|n| n.eq_ignore_ascii_case(base)) {
                names.push(base);
            }
        }
        names
    }

    fn stage_result(&self, stage: usize) -> TaskResult {
        let jobs: Vec<usize> = self.stage_jobs(stage).collect();
        if jobs.is_empty() {
            return TaskResult::Succeeded;
        }
        let mut result = TaskResult::Skipped;
        for job in jobs {
            if let JobState::Done { result: own, .. } = &self.jobs[job] {
                result = merge(result, self.effective(job, *own));
            }
        }
        result
    }

    /// `stageDependencies`: for each done stage among `direct`, each base job's state.
    fn stage_dependencies(&self, direct: &[String]) -> Value {
        let mut stages = Object::new();
        for name in direct {
            let Some(index) = self.stage_index(name) else {
                continue;
            };
            if !matches!(self.stages[index], StageState::Done(_)) {
                continue;
            }
            let mut jobs = Object::new();
            for base in self.base_names(index) {
                jobs.insert(base, self.base_state(index, base).value());
            }
            stages.insert(name.as_str(), Value::Object(jobs));
        }
        Value::Object(stages)
    }

    /// `variables` (lowest first, the predefined ones last: system variables are read-only) and
    /// `pipeline.startTime`.
    fn context(&self, variables: &[(String, String)]) -> MapContext {
        let mut context = MapContext::new();
        context.set_strict_parameters(false);
        for (name, value) in variables.iter().chain(&self.predefined) {
            context.set_variable(name.as_str(), value.as_str());
        }
        let start_time = variables
            .iter()
            .chain(&self.predefined)
            .rev()
            .find(|(name, _)| name.eq_ignore_ascii_case(run_number::START_TIME_VARIABLE))
            .map(|(_, value)| value.as_str());
        run_number::set_pipeline_context(&mut context, start_time);
        context
    }

    /// What a stage's condition reads: `dependencies.<stage>` (result, outputs as
    /// `job.step.var`), `stageDependencies` of its direct dependencies, their status.
    fn stage_context(&self, stage: usize) -> MapContext {
        let node = &self.graph.stages[stage];
        let mut context = self.context(&node.variables);
        let mut dependencies = Object::new();
        let mut status_of = Vec::new();
        let mut stage_names = Vec::new();
        for name in &node.depends_on {
            let Some(index) = self.stage_index(name) else {
                continue;
            };
            let StageState::Done(result) = self.stages[index] else {
                continue;
            };
            let mut outputs = BTreeMap::new();
            for base in self.base_names(index) {
                for (key, value) in self.base_state(index, base).outputs {
                    outputs.insert(format!("{base}.{key}"), value);
                }
            }
            status_of.push((name.clone(), result));
            stage_names.push(name.clone());
            dependencies.insert(name.as_str(), DependencyState { result, outputs }.value());
        }
        context.set("dependencies", Value::Object(dependencies));
        context.set(
            "stageDependencies",
            self.stage_dependencies(&node.depends_on),
        );
        context.set_status(StatusInput::Dependencies {
            results: status_of,
            canceled: self.canceled,
        });
        // `$[ ]` variables a stage condition reads have their values (Microsoft's "Pipeline
        // conditions", "Use a variable set at runtime": `isMain: $[eq(...)]` read by a stage
        // condition). One that cannot be evaluated here keeps its text: its job reports it.
        let _ = evaluate_variables(&node.variables, &self.predefined, &mut context);
        context
    }

    /// What a job's condition and `$[ ]` expressions read: `dependencies.<job>` for the jobs of
    /// its stage it depends on, `stageDependencies` of its stage's direct dependencies, and the
    /// status of its dependencies.
    fn job_context(&self, job: usize) -> MapContext {
        let node = &self.graph.jobs[job];
        let mut context = self.context(&node.variables);
        let mut dependencies = Object::new();
        let mut status_of = Vec::new();
        for base in &node.depends_on {
            let state = self.base_state(node.stage, base);
            status_of.push((base.clone(), state.result));
            dependencies.insert(base.as_str(), state.value());
        }
        context.set("dependencies", Value::Object(dependencies));
        context.set(
            "stageDependencies",
            self.stage_dependencies(&self.graph.stages[node.stage].depends_on),
        );
        context.set_status(StatusInput::Dependencies {
            results: status_of,
            canceled: self.canceled,
        });
        context
    }

    fn finish(
        &mut self,
        job: usize,
        result: TaskResult,
        message: Option<String>,
        out: &mut Vec<Decision>,
    ) {
        self.jobs[job] = JobState::Done {
            result,
            outputs: BTreeMap::new(),
        };
        out.push(Decision::Finish {
            job,
            result,
            message,
        });
    }

    fn skip_stage(&mut self, stage: usize, out: &mut Vec<Decision>) {
        for job in self.stage_jobs(stage).collect::<Vec<_>>() {
            if !matches!(self.jobs[job], JobState::Done { .. }) {
                self.finish(job, TaskResult::Skipped, None, out);
            }
        }
        self.stages[stage] = StageState::Done(TaskResult::Skipped);
        out.push(Decision::StageFinished {
            stage,
            result: TaskResult::Skipped,
        });
    }

    /// Evaluates the condition of a stage whose dependencies are done, once.
    fn start_stage(&mut self, stage: usize, out: &mut Vec<Decision>) {
        let node = &self.graph.stages[stage];
        let context = self.stage_context(stage);
        match evaluate(node.condition.as_deref(), &context) {
            Ok(true) if node.gated => {
                self.stages[stage] = StageState::Gated;
                if self.gates[stage] == Gate::Pending {
                    out.push(Decision::AwaitChecks { stage });
                } else {
                    self.pass_gate(stage, out);
                }
            }
            Ok(true) => {
                self.stages[stage] = StageState::Running;
                out.push(Decision::StageStarted { stage });
            }
            Ok(false) => self.skip_stage(stage, out),
            Err(error) => {
                // The jobs that start the stage fail with the reason; the others never run.
                let message = format!("invalid condition of stage {}: {error}", node.name);
                for job in self.stage_jobs(stage).collect::<Vec<_>>() {
                    if self.graph.jobs[job].depends_on.is_empty() {
                        self.finish(job, TaskResult::Failed, Some(message.clone()), out);
                    } else {
                        self.finish(job, TaskResult::Skipped, None, out);
                    }
                }
                self.stages[stage] = StageState::Done(TaskResult::Failed);
                out.push(Decision::StageFinished {
                    stage,
                    result: TaskResult::Failed,
                });
            }
        }
    }

    /// A gated stage whose checks are decided: it starts, or fails without running its jobs.
    fn pass_gate(&mut self, stage: usize, out: &mut Vec<Decision>) {
        let (jobs, result) = match self.gates[stage] {
            Gate::Open => {
                self.stages[stage] = StageState::Running;
                out.push(Decision::StageStarted { stage });
                return;
            }
            Gate::Canceled => (TaskResult::Canceled, TaskResult::Canceled),
            Gate::Pending | Gate::Rejected => (TaskResult::Skipped, TaskResult::Failed),
        };
        for job in self.stage_jobs(stage).collect::<Vec<_>>() {
            if !matches!(self.jobs[job], JobState::Done { .. }) {
                self.finish(job, jobs, None, out);
            }
        }
        self.stages[stage] = StageState::Done(result);
        out.push(Decision::StageFinished { stage, result });
    }

    /// Evaluates the `$[ ]` values and the condition of a job whose dependencies are done. The
    /// condition reads the evaluated values; a value that cannot be evaluated fails the job only
    /// when its condition holds.
    fn evaluate_job(&mut self, job: usize, out: &mut Vec<Decision>) {
        // A target of a rollout whose earlier batch did not succeed is not deployed to.
        let stopped = self.earlier_batches(job).any(|j| match &self.jobs[j] {
            JobState::Done { result, .. } => !matches!(
                self.effective(j, *result),
                TaskResult::Succeeded | TaskResult::SucceededWithIssues
            ),
            _ => false,
        });
        if stopped {
            return self.finish(job, TaskResult::Skipped, None, out);
        }
        let mut context = self.job_context(job);
        let node = &self.graph.jobs[job];
        let values = runtime_values(node, &self.predefined, &mut context);
        match evaluate(node.condition.as_deref(), &context) {
            Ok(true) => {}
            Ok(false) => return self.finish(job, TaskResult::Skipped, None, out),
            Err(error) => {
                let message = format!("invalid condition of job {}: {error}", node.name);
                return self.finish(job, TaskResult::Failed, Some(message), out);
            }
        }
        match values {
            Ok((values, fields)) => {
                if let Some(flag) = fields
                    .iter()
                    .find(|(key, _)| key == "continueOnError")
                    .and_then(|(_, value)| value.as_bool())
                {
                    self.graph.jobs[job].continue_on_error = flag;
                }
                self.jobs[job] = JobState::Queued;
                out.push(Decision::Start {
                    job,
                    values,
                    fields,
                });
            }
            Err(message) => self.finish(job, TaskResult::Failed, Some(message), out),
        }
    }
}

type RuntimeValues = (Vec<(usize, String)>, Vec<(String, serde_json::Value)>);

/// Evaluates a runtime expression's text to the string a variable holds.
fn eval_text(text: &str, context: &MapContext) -> Result<String, String> {
    let value = parse(text, &ParseOptions::runtime())
        .and_then(|expr| expr.evaluate(context))
        .map_err(|error| error.describe(text))?;
    Ok(match value {
        Value::Null => String::new(),
        other => other.to_display_string(),
    })
}

/// Evaluates the `$[ ]` values among `variables` in order, each one seeing the values before it,
/// and puts each value into `context` unless a later variable or a predefined one of that name
/// wins there. Returns the values by position; stops at the first that fails, naming it.
fn evaluate_variables(
    variables: &[(String, String)],
    predefined: &[(String, String)],
    context: &mut MapContext,
) -> Result<Vec<(usize, String)>, String> {
    let mut values = Vec::new();
    for (position, (name, value)) in variables.iter().enumerate() {
        let Some(text) = runtime_expression(value) else {
            continue;
        };
        let value =
            eval_text(text, context).map_err(|error| format!("variable `{name}`: {error}"))?;
        let hidden = variables[position + 1..]
            .iter()
            .chain(predefined)
            .any(|(other, _)| other.eq_ignore_ascii_case(name));
        if !hidden {
            context.set_variable(name.as_str(), value.as_str());
        }
        values.push((position, value));
    }
    Ok(values)
}

/// The job's `$[ ]` variables and job keys, evaluated in its condition's context, which then holds
/// the variables' values. The error names the variable or key.
fn runtime_values(
    node: &JobNode,
    predefined: &[(String, String)],
    context: &mut MapContext,
) -> Result<RuntimeValues, String> {
    let values = evaluate_variables(&node.variables, predefined, context)?;
    let mut fields = Vec::new();
    for (key, expression) in &node.runtime_fields {
        let text = runtime_expression(expression).unwrap_or(expression);
        let value = eval_text(text, context)
            .and_then(|value| plan::runtime_field_value(key, expression, &value))
            .map_err(|error| format!("job `{key}`: {error}"))?;
        fields.push((key.clone(), value));
    }
    Ok((values, fields))
}

/// Whether a condition reads the dependencies' outputs or results (then a cancel cannot decide
/// it before they are done).
fn reads_dependencies(condition: Option<&str>) -> bool {
    condition.is_some_and(|text| text.to_ascii_lowercase().contains("dependencies"))
}

/// Parses and evaluates a job or stage condition (`succeeded()` when absent or blank).
fn evaluate(condition: Option<&str>, context: &MapContext) -> Result<bool, String> {
    let text = condition
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .unwrap_or("succeeded()");
    let expr = parse(text, &ParseOptions::condition()).map_err(|error| error.describe(text))?;
    expr.evaluate_bool(context)
        .map_err(|error| error.describe(text))
}

#[cfg(test)]
mod tests;
