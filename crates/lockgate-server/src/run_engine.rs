//! The server's side of the run engine (lockgate-engine): a run's job rows as the engine's graph
//! and job states, and the engine's `$[ ]` values as they are kept in a job's spec. What a run
//! does — conditions, dependencies, outputs, cancel, results — is decided by the engine, the same
//! one `lockgate run` uses; this module only translates.

use std::collections::{BTreeMap, BTreeSet};

use lockgate_engine::{Decision, Engine, Gate, Graph, JobNode, JobState, StageNode, TaskResult};
use lockgate_pipeline::plan::Variable;
use lockgate_protocol::agent::LeaseVariable;
use lockgate_store::Job;
use serde::Deserialize;

/// The parts of a job row's spec the engine needs (written by `runs::plan_jobs`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct StoredSpec {
    pub job: StoredJob,
    /// Pipeline-level then stage-level variables.
    pub variables: Vec<Variable>,
    pub conditions: StoredConditions,
    /// The pipeline's own variables with the queue-time values applied (`runs::plan_jobs`); absent
    /// in runs queued before they existed.
    #[serde(rename = "pipelineVariables")]
    pub pipeline_variables: Vec<LeaseVariable>,
    /// What the engine evaluated when it queued the job (see [`RuntimeValues`]).
    #[serde(rename = "runtimeValues")]
    pub runtime_values: RuntimeValues,
    /// The service connections the job's steps name (`runs::plan_jobs`).
    pub connections: Vec<String>,
    /// The secure files the job's steps name (`runs::plan_jobs`).
    #[serde(rename = "secureFiles")]
    pub secure_files: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct StoredJob {
    pub base_name: String,
    /// `dependsOn` as written (jobs of the same stage, by base name); absent in old specs.
    pub depends_on: Option<Vec<String>>,
    pub condition: Option<String>,
    pub variables: Vec<Variable>,
    pub continue_on_error: bool,
    /// Job keys written as `$[ ]` (`continueOnError`, the timeouts), key to expression.
    pub runtime_fields: BTreeMap<String, String>,
    pub strategy: StoredStrategy,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct StoredStrategy {
    pub leg: Option<String>,
    pub max_parallel: u32,
    pub rollout_batch: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct StoredConditions {
    /// The job waits for nothing in its stage (it waits for the stages the stage depends on).
    pub first: bool,
    /// The stage's condition.
    pub stage: Option<String>,
    /// The stages the job's stage depends on. Absent in runs queued before it was recorded; then
    /// they are read from the first jobs' dependency keys (`stage/job`).
    pub stage_depends_on: Option<Vec<String>>,
    /// The stage has `trigger: manual`.
    pub manual: bool,
    /// The stage's `lockBehavior` (or the pipeline's): `runLatest` or `sequential`.
    pub lock_behavior: Option<String>,
}

/// Where each entry of a job node's `variables` came from, to put evaluated `$[ ]` values back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Origin {
    /// The pipeline's own variables (never evaluated: they are not YAML).
    Pipeline,
    /// `spec.variables[i]` (pipeline and stage YAML).
    Outer(usize),
    /// `spec.job.variables[i]`.
    Job(usize),
}

/// A run's job rows as the engine sees them.
pub(crate) struct RunGraph {
    pub graph: Graph,
    origins: Vec<Vec<Origin>>,
}

fn depends_on_keys(job: &Job) -> Vec<String> {
    serde_json::from_str(&job.depends_on).unwrap_or_default()
}

/// The name/value pairs of the YAML values in `variables`, with their positions.
fn values_of(variables: &[Variable]) -> impl Iterator<Item = (usize, &str, &str)> {
    variables
        .iter()
        .enumerate()
        .filter_map(|(index, variable)| match variable {
            Variable::Value { name, value, .. } => Some((index, name.as_str(), value.as_str())),
            Variable::Group { .. } => None,
        })
}

impl RunGraph {
    /// The graph of a run's job rows (in id order). A spec that cannot be read gives a job
    /// without conditions or variables, which runs when its dependencies succeeded.
    pub(crate) fn of(jobs: &[Job]) -> RunGraph {
        let specs: Vec<StoredSpec> = jobs
            .iter()
            .map(|job| serde_json::from_str(&job.spec).unwrap_or_default())
            .collect();
        let mut graph = Graph::default();
        let mut origins = Vec::new();
        for (job, spec) in jobs.iter().zip(&specs) {
            let stage = match graph.stages.iter().position(|s| s.name == job.stage_name) {
                Some(stage) => stage,
                None => {
                    let mut variables: Vec<(String, String)> = spec
                        .pipeline_variables
                        .iter()
                        .map(|v| (v.name.clone(), v.value.clone()))
                        .collect();
                    variables.extend(
                        values_of(&spec.variables).map(|(_, n, v)| (n.to_string(), v.to_string())),
                    );
                    graph.stages.push(StageNode {
                        name: job.stage_name.clone(),
                        depends_on: Vec::new(),
                        condition: spec.conditions.stage.clone(),
                        variables,
                        gated: false,
                        manual: spec.conditions.manual,
                    });
                    graph.stages.len() - 1
                }
            };
            // The stage's dependencies: recorded on every job, or read from a first job's keys.
            let node = &mut graph.stages[stage];
            match &spec.conditions.stage_depends_on {
                Some(names) => node.depends_on.clone_from(names),
                None if spec.conditions.first => {
                    for key in depends_on_keys(job) {
                        if let Some((other, _)) = key.split_once('/')
                            && !node.depends_on.iter().any(|s| s == other)
                        {
                            node.depends_on.push(other.to_string());
                        }
                    }
                }
                None => {}
            }
            let mut variables = Vec::new();
            let mut from = Vec::new();
            for v in &spec.pipeline_variables {
                variables.push((v.name.clone(), v.value.clone()));
                from.push(Origin::Pipeline);
            }
            for (index, name, value) in values_of(&spec.variables) {
                variables.push((name.to_string(), value.to_string()));
                from.push(Origin::Outer(index));
            }
            for (index, name, value) in values_of(&spec.job.variables) {
                variables.push((name.to_string(), value.to_string()));
                from.push(Origin::Job(index));
            }
            origins.push(from);
            graph.jobs.push(JobNode {
                stage,
                name: job.name.clone(),
                base_name: if spec.job.base_name.is_empty() {
                    job.name.clone()
                } else {
                    spec.job.base_name.clone()
                },
                leg: spec.job.strategy.leg.clone(),
                depends_on: Vec::new(),
                condition: spec.job.condition.clone(),
                variables,
                // Evaluated once, when the job was queued; a later view keeps that value.
                runtime_fields: if spec.runtime_values.fields.is_empty() {
                    spec.job.runtime_fields.clone()
                } else {
                    BTreeMap::new()
                },
                continue_on_error: spec
                    .runtime_values
                    .continue_on_error()
                    .unwrap_or(spec.job.continue_on_error),
                max_parallel: spec.job.strategy.max_parallel,
                rollout_batch: spec.job.strategy.rollout_batch,
            });
        }
        // In-stage dependencies as base names, from the dependency keys of the jobs that wait for
        // something in their stage (keys name every matrix instance).
        for (index, (job, spec)) in jobs.iter().zip(&specs).enumerate() {
            if let Some(names) = &spec.job.depends_on {
                graph.jobs[index].depends_on.clone_from(names);
                continue;
            }
            if spec.conditions.first {
                continue;
            }
            let stage = graph.jobs[index].stage;
            let mut bases: Vec<String> = Vec::new();
            for key in depends_on_keys(job) {
                let Some(position) = jobs.iter().enumerate().position(|(other, row)| {
                    key == format!("{}/{}", row.stage_name, row.name)
                        && graph.jobs[other].stage == stage
                }) else {
                    continue;
                };
                let base = graph.jobs[position].base_name.clone();
                if !bases.contains(&base) {
                    bases.push(base);
                }
            }
            graph.jobs[index].depends_on = bases;
        }
        RunGraph { graph, origins }
    }

    /// The engine for the run as its rows are now.
    pub(crate) fn engine(
        self,
        jobs: &[Job],
        predefined: Vec<(String, String)>,
        canceled: bool,
    ) -> (Engine, Vec<Vec<Origin>>) {
        let states = jobs.iter().map(job_state).collect();
        (
            Engine::restore(self.graph, predefined, states, canceled),
            self.origins,
        )
    }
}

/// The manual stages (`trigger: manual`) among a run's job rows, and each stage's lock behavior.
pub(crate) fn stage_settings(jobs: &[Job]) -> BTreeMap<String, StoredConditions> {
    let mut out = BTreeMap::new();
    for job in jobs {
        if !out.contains_key(&job.stage_name) {
            let spec: StoredSpec = serde_json::from_str(&job.spec).unwrap_or_default();
            out.insert(job.stage_name.clone(), spec.conditions);
        }
    }
    out
}

/// Whether a job row's spec says the job continues on error (its `continueOnError`, or the value
/// its `$[ ]` expression was given when the job was queued).
pub(crate) fn continues_on_error(spec: &str) -> bool {
    let spec: StoredSpec = serde_json::from_str(spec).unwrap_or_default();
    spec.runtime_values
        .continue_on_error()
        .unwrap_or(spec.job.continue_on_error)
}

/// A result as the store names it.
pub(crate) fn result_text(result: TaskResult) -> &'static str {
    match result {
        TaskResult::Succeeded => "succeeded",
        TaskResult::SucceededWithIssues => "succeededWithIssues",
        TaskResult::Failed => "failed",
        TaskResult::Canceled => "canceled",
        TaskResult::Skipped => "skipped",
    }
}

/// A run's result as the store names it (`partiallySucceeded` for issues).
pub(crate) fn run_result_text(result: TaskResult) -> &'static str {
    match result {
        TaskResult::SucceededWithIssues => "partiallySucceeded",
        other => result_text(other),
    }
}

fn parse_result(text: Option<&str>) -> TaskResult {
    match text {
        Some("succeeded") => TaskResult::Succeeded,
        Some("succeededWithIssues") => TaskResult::SucceededWithIssues,
        Some("failed") => TaskResult::Failed,
        Some("canceled") => TaskResult::Canceled,
        _ => TaskResult::Skipped,
    }
}

fn job_state(job: &Job) -> JobState {
    match job.status.as_str() {
        "queued" => JobState::Queued,
        "running" => JobState::Running,
        "completed" => JobState::Done {
            result: parse_result(job.result.as_deref()),
            outputs: serde_json::from_str(&job.outputs).unwrap_or_default(),
        },
        _ => JobState::Waiting,
    }
}

/// Evaluated runtime values of a job, as kept in its spec (`runtimeValues`).
#[derive(Debug, Default, PartialEq, serde::Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RuntimeValues {
    /// Positions in the pipeline/stage variables (`spec.variables`).
    pub outer: Vec<(usize, String)>,
    /// Positions in the job's own variables (`spec.job.variables`).
    pub job: Vec<(usize, String)>,
    /// Job keys written as `$[ ]` with their checked values (`continueOnError`: a boolean, the
    /// timeouts: minutes), as the plan job's JSON keys.
    pub fields: Vec<(String, serde_json::Value)>,
}

impl RuntimeValues {
    /// The values of a [`Decision::Start`] for job `index`, placed by where each variable came from.
    pub(crate) fn of_start(
        origins: &[Vec<Origin>],
        index: usize,
        values: &[(usize, String)],
        fields: &[(String, serde_json::Value)],
    ) -> RuntimeValues {
        let mut out = RuntimeValues {
            fields: fields.to_vec(),
            ..RuntimeValues::default()
        };
        let from = origins.get(index).map_or(&[][..], Vec::as_slice);
        for (position, value) in values {
            match from.get(*position) {
                Some(Origin::Outer(i)) => out.outer.push((*i, value.clone())),
                Some(Origin::Job(i)) => out.job.push((*i, value.clone())),
                Some(Origin::Pipeline) | None => {}
            }
        }
        out
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.outer.is_empty() && self.job.is_empty() && self.fields.is_empty()
    }

    /// The evaluated `continueOnError`, when the job wrote it as `$[ ]`.
    fn continue_on_error(&self) -> Option<bool> {
        self.fields
            .iter()
            .find(|(key, _)| key == "continueOnError")
            .and_then(|(_, value)| value.as_bool())
    }

    /// Puts the values into a stored spec (JSON), as the agent receives it.
    pub(crate) fn apply(&self, spec: &mut serde_json::Value) {
        let put = |list: &mut serde_json::Value, values: &[(usize, String)]| {
            for (position, value) in values {
                if let Some(entry) = list.get_mut(*position).and_then(|e| e.as_object_mut()) {
                    entry.insert("value".into(), serde_json::Value::String(value.clone()));
                }
            }
        };
        put(&mut spec["variables"], &self.outer);
        put(&mut spec["job"]["variables"], &self.job);
        if !self.fields.is_empty()
            && let Some(job) = spec["job"].as_object_mut()
        {
            for (key, value) in &self.fields {
                job.insert(key.clone(), value.clone());
            }
            // Evaluated once, here; the agent runs the job with the values.
            job.remove("runtimeFields");
        }
    }
}

/// What the engine decided for a run's rows, with what is needed to carry it out.
pub(crate) struct Decided {
    pub decisions: Vec<Decision>,
    /// Where each job's variables came from, to place `$[ ]` values.
    pub origins: Vec<Vec<Origin>>,
    /// The stages' names, by index.
    pub stages: Vec<String>,
}

/// The engine's decisions for a run's rows: what [`Engine::advance`] (or, with `cancel`,
/// [`Engine::cancel`]) says now. `gates` holds the stages that wait for checks and how those stand.
pub(crate) fn decide(
    jobs: &[Job],
    predefined: Vec<(String, String)>,
    canceled: bool,
    cancel: bool,
    gates: &BTreeMap<String, Gate>,
    started: &BTreeSet<String>,
) -> Decided {
    let mut graph = RunGraph::of(jobs);
    for stage in &mut graph.graph.stages {
        stage.gated = gates.contains_key(&stage.name);
    }
    let stages: Vec<String> = graph.graph.stages.iter().map(|s| s.name.clone()).collect();
    let (mut engine, origins) = graph.engine(jobs, predefined, canceled);
    for (index, name) in stages.iter().enumerate() {
        if let Some(gate) = gates.get(name) {
            engine.set_gate(index, *gate);
        }
        if started.contains(name) {
            engine.start_manually(index);
        }
    }
    let decisions = if cancel {
        engine.cancel()
    } else {
        engine.advance()
    };
    Decided {
        decisions,
        origins,
        stages,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use lockgate_engine::TaskResult;

    use super::*;

    /// What the engine decides now for the job at `index`: `Ok(true)` it starts, `Ok(false)` it is
    /// skipped, `Err` it fails with that message.
    fn job_runs(jobs: &[Job], canceled: bool, index: usize) -> Result<bool, String> {
        let decisions = decide(
            jobs,
            predefined(),
            canceled,
            false,
            &BTreeMap::new(),
            &BTreeSet::new(),
        )
        .decisions;
        for decision in decisions {
            match decision {
                Decision::Start { job, .. } if job == index => return Ok(true),
                Decision::Finish {
                    job,
                    result,
                    message,
                } if job == index => {
                    return match message {
                        Some(message) => Err(message),
                        None => {
                            assert_eq!(result, TaskResult::Skipped);
                            Ok(false)
                        }
                    };
                }
                _ => {}
            }
        }
        Err("undecided".into())
    }

    /// Whether the job at `index` still waits after the run is canceled now.
    fn may_run_after_cancel(jobs: &[Job], index: usize) -> bool {
        let decisions = decide(
            jobs,
            predefined(),
            false,
            true,
            &BTreeMap::new(),
            &BTreeSet::new(),
        )
        .decisions;
        !decisions
            .iter()
            .any(|d| matches!(d, Decision::Finish { job, .. } if *job == index))
    }

    /// The `$[ ]` values the engine gives the job at `index` when it starts.
    fn runtime_values(jobs: &[Job], index: usize) -> Result<RuntimeValues, String> {
        let Decided {
            decisions, origins, ..
        } = decide(
            jobs,
            predefined(),
            false,
            false,
            &BTreeMap::new(),
            &BTreeSet::new(),
        );
        for decision in decisions {
            match decision {
                Decision::Start {
                    job,
                    values,
                    fields,
                    ..
                } if job == index => {
                    return Ok(RuntimeValues::of_start(&origins, index, &values, &fields));
                }
                Decision::Finish {
                    job,
                    message: Some(message),
                    ..
                } if job == index => return Err(message),
                _ => {}
            }
        }
        Err("undecided".into())
    }

    #[test]
    fn the_run_result_prefers_failure_then_cancel_then_issues() {
        let result = |results: &[&str], canceled: bool| {
            let jobs: Vec<Job> = results
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let mut job = bare_job(i as i64 + 1, Some(r));
                    job.name = format!("j{i}");
                    job
                })
                .collect();
            let decisions = decide(
                &jobs,
                predefined(),
                canceled,
                false,
                &BTreeMap::new(),
                &BTreeSet::new(),
            )
            .decisions;
            match decisions.last() {
                Some(Decision::RunFinished { result }) => run_result_text(*result),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(result(&["succeeded", "skipped"], false), "succeeded");
        assert_eq!(
            result(&["succeeded", "succeededWithIssues"], false),
            "partiallySucceeded"
        );
        assert_eq!(result(&["failed", "canceled"], false), "failed");
        assert_eq!(result(&["canceled"], false), "canceled");
        // A canceled run whose remaining jobs succeeded or were skipped stays canceled.
        assert_eq!(result(&["succeeded", "skipped"], true), "canceled");
        assert_eq!(result(&["succeeded", "failed"], true), "failed");
    }

    /// One stored job row: `stage/name`, what it waits for, its state and spec.
    struct Row<'a> {
        stage: &'a str,
        name: &'a str,
        base: &'a str,
        leg: Option<&'a str>,
        depends_on: &'a [&'a str],
        first: bool,
        stage_condition: Option<&'a str>,
        stage_depends_on: &'a [&'a str],
        condition: Option<&'a str>,
        result: Option<&'a str>,
        outputs: serde_json::Value,
        variables: serde_json::Value,
        /// The spec's `pipelineVariables` (name, value, secret, readonly).
        pipeline_variables: serde_json::Value,
        continue_on_error: bool,
    }

    impl Default for Row<'_> {
        fn default() -> Self {
            Row {
                stage: "One",
                name: "",
                base: "",
                leg: None,
                depends_on: &[],
                first: true,
                stage_condition: None,
                stage_depends_on: &[],
                condition: None,
                result: None,
                outputs: json!({}),
                variables: json!([]),
                pipeline_variables: json!([]),
                continue_on_error: false,
            }
        }
    }

    fn job(id: i64, row: Row<'_>) -> Job {
        let base = if row.base.is_empty() {
            row.name
        } else {
            row.base
        };
        let spec = json!({
            "job": {
                "name": row.name,
                "baseName": base,
                "condition": row.condition,
                "continueOnError": row.continue_on_error,
                "variables": [],
                "strategy": {"leg": row.leg},
            },
            "variables": row.variables,
            "pipelineVariables": row.pipeline_variables,
            "conditions": {
                "first": row.first,
                "stage": row.stage_condition,
                "stageDependsOn": row.stage_depends_on,
            },
        });
        let mut stored = bare_job(id, row.result);
        stored.stage_name = row.stage.into();
        stored.name = row.name.into();
        stored.display_name = row.name.into();
        stored.depends_on = json!(row.depends_on).to_string();
        stored.spec = spec.to_string();
        stored.outputs = row.outputs.to_string();
        stored
    }

    /// A job row of stage `s` named `j`: completed with `result`, or pending without one.
    pub(crate) fn bare_job(id: i64, result: Option<&str>) -> Job {
        Job {
            id,
            run_id: 1,
            stage_name: "s".into(),
            name: "j".into(),
            display_name: "j".into(),
            depends_on: "[]".into(),
            spec: "{}".into(),
            status: if result.is_some() {
                "completed"
            } else {
                "pending"
            }
            .into(),
            result: result.map(Into::into),
            attempt: 1,
            agent_name: None,
            lease_expires_at: None,
            cancel_requested: false,
            queued_at: 0,
            started_at: None,
            finished_at: None,
            agent_os: None,
            outputs: "{}".into(),
            environment: None,
            pool: None,
            demands: Vec::new(),
            target: None,
        }
    }

    fn predefined() -> Vec<(String, String)> {
        vec![
            ("Build.SourceBranch".into(), "refs/heads/main".into()),
            ("Build.Reason".into(), "IndividualCI".into()),
        ]
    }

    /// Evaluates the condition of job `B` (depending on `A` in the same stage, which ended with
    /// `a_result` and published `setvar.flag=yes`).
    fn b_runs(a_result: &str, condition: Option<&str>, canceled: bool) -> Result<bool, String> {
        let jobs = [
            job(
                1,
                Row {
                    name: "A",
                    result: Some(a_result),
                    outputs: json!({"setvar.flag": "yes"}),
                    ..Row::default()
                },
            ),
            job(
                2,
                Row {
                    name: "B",
                    depends_on: &["One/A"],
                    first: false,
                    // The stage runs whatever happens, so these cases test the job's own condition.
                    stage_condition: Some("always()"),
                    condition,
                    variables: json!([
                        {"kind": "value", "name": "deploy", "value": "false", "readonly": false,
                         "scope": "pipeline"},
                        {"kind": "value", "name": "Build.SourceBranch", "value": "refs/heads/hidden",
                         "readonly": false, "scope": "pipeline"},
                    ]),
                    ..Row::default()
                },
            ),
        ];
        job_runs(&jobs, canceled, 1)
    }

    #[test]
    fn default_condition_is_succeeded_over_the_dependencies() {
        assert_eq!(b_runs("succeeded", None, false), Ok(true));
        assert_eq!(b_runs("succeededWithIssues", None, false), Ok(true));
        assert_eq!(b_runs("failed", None, false), Ok(false));
        assert_eq!(b_runs("skipped", Some("  "), false), Ok(false));
        assert_eq!(b_runs("succeeded", None, true), Ok(false));
    }

    #[test]
    fn status_functions_see_dependency_results_and_cancel() {
        assert_eq!(b_runs("failed", Some("failed()"), false), Ok(true));
        assert_eq!(b_runs("succeeded", Some("failed()"), false), Ok(false));
        assert_eq!(
            b_runs("failed", Some("succeededOrFailed()"), false),
            Ok(true)
        );
        assert_eq!(
            b_runs("failed", Some("succeededOrFailed()"), true),
            Ok(false)
        );
        assert_eq!(b_runs("failed", Some(" always() "), true), Ok(true));
        assert_eq!(b_runs("succeeded", Some("canceled()"), true), Ok(true));
        assert_eq!(b_runs("succeeded", Some("canceled()"), false), Ok(false));
        assert_eq!(b_runs("failed", Some("failed('A')"), false), Ok(true));
    }

    /// Whether job `B` (waiting for `A`, still running) may run after the run is canceled; `stage`
    /// puts B first in a stage `Two` after stage `One` with that stage condition.
    fn b_may_run_after_cancel(condition: Option<&str>, stage: Option<Option<&str>>) -> bool {
        let a = job(
            1,
            Row {
                name: "A",
                ..Row::default()
            },
        );
        let b = match stage {
            None => job(
                2,
                Row {
                    name: "B",
                    depends_on: &["One/A"],
                    first: false,
                    condition,
                    ..Row::default()
                },
            ),
            Some(stage_condition) => job(
                2,
                Row {
                    stage: "Two",
                    name: "B",
                    depends_on: &["One/A"],
                    stage_condition,
                    stage_depends_on: &["One"],
                    condition,
                    ..Row::default()
                },
            ),
        };
        let mut jobs = [a, b];
        jobs[0].status = "running".into();
        may_run_after_cancel(&jobs, 1)
    }

    #[test]
    fn after_a_cancel_only_jobs_whose_condition_may_hold_wait() {
        let job_cases = [
            (None, false),
            (Some("succeeded()"), false),
            (Some("succeededOrFailed()"), false),
            (Some("failed()"), false),
            (Some("always()"), true),
            (Some("canceled()"), true),
            // Custom conditions without a status function run after a cancel (Azure's "Job example 1").
            (
                Some("eq(variables['Build.SourceBranch'], 'refs/heads/main')"),
                true,
            ),
            (
                Some("and(succeeded(), eq(variables['Build.SourceBranch'], 'refs/heads/main'))"),
                false,
            ),
            (
                Some("eq(variables['Build.SourceBranch'], 'refs/heads/other')"),
                false,
            ),
            // What the dependencies end with is not known yet: wait for them.
            (
                Some("in(dependencies.A.result, 'Canceled', 'Failed')"),
                true,
            ),
            (
                Some("and(succeeded(), eq(dependencies.A.result, 'Succeeded'))"),
                true,
            ),
            // A condition that cannot be evaluated is reported when the job is evaluated.
            (Some("eq(1,"), true),
        ];
        for (condition, expected) in job_cases {
            assert_eq!(
                b_may_run_after_cancel(condition, None),
                expected,
                "{condition:?}"
            );
        }
        // A stage with the default condition is skipped after a cancel, whatever its jobs say
        // (Azure's "Stage example 2").
        assert!(!b_may_run_after_cancel(Some("always()"), Some(None)));
        assert!(!b_may_run_after_cancel(None, Some(Some("always()"))));
        assert!(b_may_run_after_cancel(
            Some("always()"),
            Some(Some("always()"))
        ));
        assert!(b_may_run_after_cancel(
            Some("always()"),
            Some(Some("eq(variables['Build.Reason'], 'IndividualCI')"))
        ));
        // A stage that started before the cancel is not skipped: its later `always()` job runs.
        let jobs_in_two = |x_status: &str, x_result: Option<&str>| {
            let mut jobs = [
                job(
                    1,
                    Row {
                        name: "A",
                        result: Some("succeeded"),
                        ..Row::default()
                    },
                ),
                job(
                    2,
                    Row {
                        stage: "Two",
                        name: "X",
                        depends_on: &["One/A"],
                        stage_depends_on: &["One"],
                        result: x_result,
                        ..Row::default()
                    },
                ),
                job(
                    3,
                    Row {
                        stage: "Two",
                        name: "B",
                        depends_on: &["Two/X"],
                        first: false,
                        stage_depends_on: &["One"],
                        condition: Some("always()"),
                        ..Row::default()
                    },
                ),
            ];
            jobs[1].status = x_status.into();
            jobs
        };
        let jobs = jobs_in_two("running", None);
        assert!(may_run_after_cancel(&jobs, 2));
        let mut jobs = jobs_in_two("completed", Some("canceled"));
        assert_eq!(job_runs(&jobs, true, 2), Ok(true));
        // One whose first job was skipped by its own condition started: the stage's condition is
        // evaluated once (a stage whose condition is false ends all its jobs at once).
        jobs[1].result = Some("skipped".into());
        assert!(may_run_after_cancel(&jobs, 2));
        // Without a cancel nothing is decided early.
        let jobs = [
            job(
                1,
                Row {
                    name: "A",
                    ..Row::default()
                },
            ),
            job(
                2,
                Row {
                    name: "B",
                    depends_on: &["One/A"],
                    first: false,
                    ..Row::default()
                },
            ),
        ];
        assert_eq!(job_runs(&jobs, false, 0), Ok(true));
        assert_eq!(job_runs(&jobs, false, 1), Err("undecided".into()));
    }

    #[test]
    fn conditions_read_variables_and_dependency_outputs() {
        let cases = [
            (
                "and(succeeded(), eq(variables['Build.SourceBranch'], 'refs/heads/main'))",
                true,
            ),
            (
                "eq(variables['build.sourcebranch'], 'refs/heads/nope')",
                false,
            ),
            ("ne(variables.deploy, 'false')", false),
            ("eq(variables.deploy, 'false')", true),
            ("eq(variables['Build.Reason'], 'IndividualCI')", true),
            ("eq(dependencies.A.outputs['setvar.flag'], 'yes')", true),
            ("eq(dependencies.a.outputs['SetVar.Flag'], 'yes')", true),
            ("eq(dependencies.A.outputs['setvar.other'], 'yes')", false),
            ("eq(dependencies.A.result, 'Succeeded')", true),
            ("in(dependencies.A.result, 'Failed', 'Canceled')", false),
            ("eq(variables.nosuch, '')", true),
        ];
        for (condition, expected) in cases {
            assert_eq!(
                b_runs("succeeded", Some(condition), false),
                Ok(expected),
                "{condition}"
            );
        }
    }

    #[test]
    fn runtime_expression_variables_read_dependency_outputs() {
        let b = |value: &str| {
            job(
                2,
                Row {
                    name: "B",
                    depends_on: &["One/A"],
                    first: false,
                    variables: json!([
                        {"kind": "value", "name": "plain", "value": "x", "readonly": false,
                         "scope": "pipeline"},
                        {"kind": "value", "name": "flag", "value": value, "readonly": false,
                         "scope": "pipeline"},
                    ]),
                    ..Row::default()
                },
            )
        };
        let a = job(
            1,
            Row {
                name: "A",
                result: Some("succeeded"),
                outputs: json!({"setvar.flag": "yes"}),
                ..Row::default()
            },
        );
        let jobs = [a.clone(), b("$[ dependencies.A.outputs['setvar.flag'] ]")];
        let values = runtime_values(&jobs, 1).unwrap();
        assert_eq!(values.outer, vec![(1, "yes".to_string())]);
        let mut spec: serde_json::Value = serde_json::from_str(&jobs[1].spec).unwrap();
        values.apply(&mut spec);
        assert_eq!(spec["variables"][1]["value"], "yes");
        assert_eq!(spec["variables"][0]["value"], "x");
        let jobs = [a.clone(), b("$[ dependencies.A.outputs['setvar.none'] ]")];
        let values = runtime_values(&jobs, 1).unwrap();
        assert_eq!(values.outer, vec![(1, String::new())]);
        let jobs = [a.clone(), b("plain text")];
        let values = runtime_values(&jobs, 1).unwrap();
        assert!(values.is_empty());
        let jobs = [a, b("$[ eq(1, ]")];
        let error = runtime_values(&jobs, 1).unwrap_err();
        assert!(error.starts_with("variable `flag`: "), "{error}");
    }

    #[test]
    fn runtime_expressions_in_job_keys_are_evaluated_and_applied() {
        let with_fields = |fields: serde_json::Value| {
            let mut b = job(
                2,
                Row {
                    name: "B",
                    depends_on: &["One/A"],
                    first: false,
                    ..Row::default()
                },
            );
            let mut spec: serde_json::Value = serde_json::from_str(&b.spec).unwrap();
            spec["job"]["runtimeFields"] = fields;
            b.spec = spec.to_string();
            b
        };
        let a = job(
            1,
            Row {
                name: "A",
                result: Some("succeeded"),
                outputs: json!({"out.minutes": "9"}),
                ..Row::default()
            },
        );
        let jobs = [
            a.clone(),
            with_fields(json!({
                "continueOnError": "$[ eq(dependencies.A.result, 'Succeeded') ]",
                "timeoutInMinutes": "$[ dependencies.A.outputs['out.minutes'] ]",
            })),
        ];
        let values = runtime_values(&jobs, 1).unwrap();
        assert_eq!(values.continue_on_error(), Some(true));
        let mut spec: serde_json::Value = serde_json::from_str(&jobs[1].spec).unwrap();
        values.apply(&mut spec);
        assert_eq!(spec["job"]["continueOnError"], true);
        assert_eq!(spec["job"]["timeoutInMinutes"], 9);
        assert!(spec["job"].get("runtimeFields").is_none());
        // A later view reads the evaluated continueOnError from the stored values.
        let mut stored = jobs[1].clone();
        let mut kept: serde_json::Value = serde_json::from_str(&stored.spec).unwrap();
        kept["runtimeValues"] = serde_json::to_value(&values).unwrap();
        stored.spec = kept.to_string();
        let graph = RunGraph::of(&[a.clone(), stored]);
        assert!(graph.graph.jobs[1].continue_on_error);
        assert!(graph.graph.jobs[1].runtime_fields.is_empty());

        let jobs = [
            a.clone(),
            with_fields(json!({"timeoutInMinutes": "$[ 'soon' ]"})),
        ];
        let error = runtime_values(&jobs, 1).unwrap_err();
        assert!(
            error.starts_with("job `timeoutInMinutes`: ") && error.contains("gave `soon`"),
            "{error}"
        );
    }

    /// Job `B` (first in stage `One`, its stage runs) with the pipeline's own variables as the spec
    /// carries them (queue-time values applied) and YAML variables at pipeline and job level.
    fn b_with_pipeline_variables(condition: Option<&str>, yaml: serde_json::Value) -> Job {
        let mut b = job(
            2,
            Row {
                name: "B",
                condition,
                variables: yaml,
                pipeline_variables: json!([
                    {"name": "Target", "value": "prod", "secret": false, "readonly": true},
                    {"name": "Region", "value": "west", "secret": false, "readonly": false},
                    {"name": "DeployKey", "value": "k3y", "secret": true, "readonly": false},
                    {"name": "Build.SourceBranch", "value": "refs/heads/ui",
                     "secret": false, "readonly": false},
                ]),
                ..Row::default()
            },
        );
        let mut spec: serde_json::Value = serde_json::from_str(&b.spec).unwrap();
        spec["job"]["variables"] = json!([
            {"kind": "value", "name": "fromJob", "value": "$[ variables.target ]",
             "readonly": false, "scope": "job"},
        ]);
        b.spec = spec.to_string();
        b
    }

    #[test]
    fn conditions_read_pipeline_and_queue_time_variables_below_yaml_and_predefined() {
        let yaml = json!([
            {"kind": "value", "name": "region", "value": "from-yaml", "readonly": false,
             "scope": "pipeline"},
        ]);
        let cases = [
            ("eq(variables['Target'], 'prod')", true),
            ("eq(variables.target, 'test')", false),
            // The YAML value wins over the pipeline's own one ("Define variables").
            ("eq(variables['Region'], 'from-yaml')", true),
            // Predefined variables cannot be hidden.
            (
                "eq(variables['Build.SourceBranch'], 'refs/heads/main')",
                true,
            ),
            // Secrets are readable by conditions.
            ("eq(variables['DeployKey'], 'k3y')", true),
            ("eq(variables['NotDefined'], '')", true),
        ];
        for (condition, expected) in cases {
            let jobs = [b_with_pipeline_variables(Some(condition), yaml.clone())];
            assert_eq!(job_runs(&jobs, false, 0), Ok(expected), "{condition}");
        }
        // Runs queued before the spec carried them read none (and still evaluate).
        let mut old = b_with_pipeline_variables(Some("eq(variables.target, '')"), json!([]));
        let mut spec: serde_json::Value = serde_json::from_str(&old.spec).unwrap();
        spec.as_object_mut().unwrap().remove("pipelineVariables");
        old.spec = spec.to_string();
        let jobs = [old];
        assert_eq!(job_runs(&jobs, false, 0), Ok(true));
    }

    #[test]
    fn runtime_expression_variables_read_pipeline_and_queue_time_variables() {
        let jobs = [b_with_pipeline_variables(None, json!([]))];
        let values = runtime_values(&jobs, 0).unwrap();
        assert_eq!(values.job, vec![(0, "prod".to_string())]);
        assert!(values.outer.is_empty());
    }

    #[test]
    fn a_bad_condition_is_an_error_naming_the_job() {
        let error = b_runs("succeeded", Some("eq(1,"), false).unwrap_err();
        assert!(error.starts_with("invalid condition of job B: "), "{error}");
        let error = b_runs("succeeded", Some("nosuchfunction()"), false).unwrap_err();
        assert!(error.contains("nosuchfunction"), "{error}");
    }

    #[test]
    fn matrix_legs_publish_outputs_under_their_leg_and_merge_results() {
        let leg = |id, leg_name, result| {
            job(
                id,
                Row {
                    name: if leg_name == "linux" {
                        "A_linux"
                    } else {
                        "A_windows"
                    },
                    base: "A",
                    leg: Some(leg_name),
                    result: Some(result),
                    outputs: json!({"setvar.flag": leg_name}),
                    ..Row::default()
                },
            )
        };
        let b = |condition| {
            job(
                3,
                Row {
                    name: "B",
                    depends_on: &["One/A_linux", "One/A_windows"],
                    first: false,
                    condition,
                    ..Row::default()
                },
            )
        };
        let jobs = [
            leg(1, "linux", "succeeded"),
            leg(2, "windows", "failed"),
            b(Some(
                "eq(dependencies.A.outputs['windows.setvar.flag'], 'windows')",
            )),
        ];
        assert_eq!(job_runs(&jobs, false, 2), Ok(true));
        let jobs = [
            leg(1, "linux", "succeeded"),
            leg(2, "windows", "failed"),
            b(None),
        ];
        assert_eq!(job_runs(&jobs, false, 2), Ok(false));
    }

    #[test]
    fn stage_conditions_read_stage_results_and_outputs() {
        let jobs_with = |stage_condition, job_condition, one_result, continue_on_error| {
            [
                job(
                    1,
                    Row {
                        name: "A",
                        result: Some(one_result),
                        outputs: json!({"setvar.flag": "yes"}),
                        continue_on_error,
                        ..Row::default()
                    },
                ),
                job(
                    2,
                    Row {
                        stage: "Two",
                        name: "C",
                        depends_on: &["One/A"],
                        stage_condition,
                        stage_depends_on: &["One"],
                        ..Row::default()
                    },
                ),
                job(
                    3,
                    Row {
                        stage: "Two",
                        name: "D",
                        depends_on: &["Two/C"],
                        first: false,
                        stage_condition,
                        stage_depends_on: &["One"],
                        condition: job_condition,
                        ..Row::default()
                    },
                ),
            ]
        };
        let runs = |jobs: &[Job], index| job_runs(jobs, false, index);
        let jobs = jobs_with(
            Some("eq(dependencies.One.outputs['A.setvar.flag'], 'yes')"),
            None,
            "failed",
            false,
        );
        assert_eq!(runs(&jobs, 1), Ok(true));
        let jobs = jobs_with(
            Some("eq(dependencies.One.result, 'Failed')"),
            None,
            "failed",
            false,
        );
        assert_eq!(runs(&jobs, 1), Ok(true));
        let jobs = jobs_with(None, None, "failed", false);
        assert_eq!(runs(&jobs, 1), Ok(false));
        // continueOnError turns the failure into "succeeded with issues" for later jobs.
        let jobs = jobs_with(None, None, "failed", true);
        assert_eq!(runs(&jobs, 1), Ok(true));
        // A skipped stage skips every job in it, even one whose own condition is always().
        let jobs = jobs_with(Some("failed()"), Some("always()"), "succeeded", false);
        assert_eq!(runs(&jobs, 1), Ok(false));
        assert_eq!(runs(&jobs, 2), Ok(false));
        // A later job reads the earlier stage through stageDependencies.
        let mut jobs = jobs_with(
            None,
            Some("eq(stageDependencies.One.A.outputs['setvar.flag'], 'yes')"),
            "succeeded",
            false,
        );
        jobs[1].status = "completed".into();
        jobs[1].result = Some("succeeded".into());
        assert_eq!(runs(&jobs, 2), Ok(true));
        let jobs = jobs_with(Some("and("), None, "succeeded", false);
        let error = runs(&jobs, 1).unwrap_err();
        assert!(
            error.starts_with("invalid condition of stage Two: "),
            "{error}"
        );
    }
    #[test]
    fn stage_dependencies_expose_only_direct_dependencies() {
        // One ▸ Two ▸ Three; a job of Three sees Two through stageDependencies, not One.
        let jobs_with = |condition| {
            [
                job(
                    1,
                    Row {
                        name: "A",
                        result: Some("succeeded"),
                        outputs: json!({"setvar.flag": "yes"}),
                        ..Row::default()
                    },
                ),
                job(
                    2,
                    Row {
                        stage: "Two",
                        name: "B",
                        depends_on: &["One/A"],
                        stage_depends_on: &["One"],
                        result: Some("succeeded"),
                        outputs: json!({"setvar.flag": "two"}),
                        ..Row::default()
                    },
                ),
                job(
                    3,
                    Row {
                        stage: "Three",
                        name: "C",
                        depends_on: &["Two/B"],
                        stage_depends_on: &["Two"],
                        condition: Some(condition),
                        ..Row::default()
                    },
                ),
            ]
        };
        let runs = |condition| {
            let jobs = jobs_with(condition);
            job_runs(&jobs, false, 2)
        };
        assert_eq!(
            runs("eq(stageDependencies.Two.B.outputs['setvar.flag'], 'two')"),
            Ok(true)
        );
        assert_eq!(
            runs("eq(stageDependencies.One.A.outputs['setvar.flag'], 'yes')"),
            Ok(false)
        );
        assert_eq!(runs("eq(stageDependencies.One.A.result, '')"), Ok(true));
    }
}
