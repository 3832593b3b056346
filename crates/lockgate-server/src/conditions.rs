//! Job and stage conditions on the server, evaluated with lockgate-expr against the run's variables
//! (the pipeline's own ones with their queue-time values, the YAML ones, the predefined ones) and the
//! stored results and output variables of the dependencies. A missing condition is `succeeded()` over
//! the dependencies (Microsoft's pages "Pipeline conditions" and "Expressions", section
//! "Dependencies").

use std::collections::BTreeMap;

use lockgate_expr::{MapContext, Object, ParseOptions, StatusInput, TaskResult, Value, parse};
use lockgate_pipeline::plan::Variable;
use lockgate_pipeline::run_number;
use lockgate_protocol::agent::LeaseVariable;
use lockgate_store::Job;
use serde::Deserialize;

/// The parts of a job row's spec that decide whether the job runs (written by `runs::plan_jobs`).
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
    /// What the scheduler evaluated when it queued the job (see [`RuntimeValues`]).
    #[serde(rename = "runtimeValues")]
    pub runtime_values: RuntimeValues,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct StoredJob {
    pub base_name: String,
    pub condition: Option<String>,
    pub variables: Vec<Variable>,
    pub continue_on_error: bool,
    /// Job keys written as `$[ ]` (`continueOnError`, the timeouts), key to expression.
    pub runtime_fields: BTreeMap<String, String>,
    pub strategy: StoredStrategy,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct StoredStrategy {
    pub leg: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct StoredConditions {
    /// The job waits for nothing in its stage (it waits for the stages the stage depends on).
    pub first: bool,
    /// The stage's condition.
    pub stage: Option<String>,
    /// The stages the job's stage depends on. Absent in runs queued before it was recorded; then
    /// the stage condition is checked only for the first jobs, against the stages they wait for.
    pub stage_depends_on: Option<Vec<String>>,
}

/// What later jobs and stages see of one job row.
struct JobFacts {
    stage: String,
    base_name: String,
    leg: Option<String>,
    continue_on_error: bool,
    outputs: BTreeMap<String, String>,
    /// The job waits for nothing in its stage: it is among the jobs that start the stage.
    first: bool,
}

/// The jobs of one run as conditions see them; built once per scheduling pass.
pub(crate) struct RunView {
    facts: Vec<JobFacts>,
    /// The run's predefined variables (pipeline variables come with each job's spec).
    predefined: Vec<(String, String)>,
    canceled: bool,
}

/// A job or stage result as the status functions see it.
fn task_result(result: Option<&str>) -> TaskResult {
    match result {
        Some("succeeded") => TaskResult::Succeeded,
        Some("succeededWithIssues") => TaskResult::SucceededWithIssues,
        Some("failed") => TaskResult::Failed,
        Some("canceled") => TaskResult::Canceled,
        _ => TaskResult::Skipped,
    }
}

fn result_name(result: TaskResult) -> &'static str {
    match result {
        TaskResult::Succeeded => "Succeeded",
        TaskResult::SucceededWithIssues => "SucceededWithIssues",
        TaskResult::Failed => "Failed",
        TaskResult::Canceled => "Canceled",
        TaskResult::Skipped => "Skipped",
    }
}

/// The result of several jobs together: the worst one (skipped < succeeded < with issues < failed
/// < canceled), as the local runner aggregates matrix legs and stages.
fn merge(a: TaskResult, b: TaskResult) -> TaskResult {
    let rank = |r: TaskResult| match r {
        TaskResult::Skipped => 0,
        TaskResult::Succeeded => 1,
        TaskResult::SucceededWithIssues => 2,
        TaskResult::Failed => 3,
        TaskResult::Canceled => 4,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// A finished dependency: its result and outputs.
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

impl RunView {
    /// `jobs` are all job rows of the run; `predefined` the run's predefined variables.
    pub(crate) fn new(jobs: &[Job], predefined: Vec<(String, String)>, canceled: bool) -> RunView {
        let facts = jobs
            .iter()
            .map(|job| {
                let spec: StoredSpec = serde_json::from_str(&job.spec).unwrap_or_default();
                JobFacts {
                    stage: job.stage_name.clone(),
                    base_name: if spec.job.base_name.is_empty() {
                        job.name.clone()
                    } else {
                        spec.job.base_name
                    },
                    leg: spec.job.strategy.leg,
                    continue_on_error: spec
                        .runtime_values
                        .continue_on_error()
                        .unwrap_or(spec.job.continue_on_error),
                    outputs: serde_json::from_str(&job.outputs).unwrap_or_default(),
                    first: spec.conditions.first,
                }
            })
            .collect();
        RunView {
            facts,
            predefined,
            canceled,
        }
    }

    /// The aggregate state of the jobs of `stage` named `base_name` (every matrix leg; legs publish
    /// their outputs as `leg.step.var`). Only completed rows count.
    fn job_state(&self, jobs: &[Job], stage: &str, base_name: &str) -> DependencyState {
        let mut result = TaskResult::Skipped;
        let mut outputs = BTreeMap::new();
        for (job, facts) in jobs.iter().zip(&self.facts) {
            if facts.stage != stage || facts.base_name != base_name || job.status != "completed" {
                continue;
            }
            let mut own = task_result(job.result.as_deref());
            if facts.continue_on_error && own == TaskResult::Failed {
                own = TaskResult::SucceededWithIssues;
            }
            result = merge(result, own);
            for (key, value) in &facts.outputs {
                let key = match &facts.leg {
                    Some(leg) => format!("{leg}.{key}"),
                    None => key.clone(),
                };
                outputs.insert(key, value.clone());
            }
        }
        DependencyState { result, outputs }
    }

    /// Whether `stage` has started: one of the jobs that start it was queued, ran, or ended other than
    /// skipped, so its condition held before now. Azure evaluates a stage's condition once, when the
    /// stage would start; a cancel after that does not skip the stage's remaining jobs.
    fn stage_started(&self, jobs: &[Job], stage: &str) -> bool {
        jobs.iter().zip(&self.facts).any(|(job, facts)| {
            facts.stage == stage
                && facts.first
                && match job.status.as_str() {
                    "queued" | "running" => true,
                    "completed" => job.result.as_deref() != Some("skipped"),
                    _ => false,
                }
        })
    }

    /// Base names of the jobs of a stage, in order, without repeats.
    fn base_names<'v>(&'v self, stage: &str) -> Vec<&'v str> {
        let mut names: Vec<&str> = Vec::new();
        for facts in self.facts.iter().filter(|f| f.stage == stage) {
            if !names.contains(&facts.base_name.as_str()) {
                names.push(&facts.base_name);
            }
        }
        names
    }

    /// Every job of each stage, for `stageDependencies.<stage>.<job>`, of the stages whose jobs all
    /// completed, among `direct`: the stages `current` depends on directly (Microsoft's page
    /// "Expressions", section "Dependencies": only direct dependencies are visible). `None` (runs
    /// queued before the stage's dependencies were recorded) shows every other completed stage.
    fn stage_dependencies(&self, jobs: &[Job], current: &str, direct: Option<&[String]>) -> Value {
        let mut stages = Object::new();
        let mut seen: Vec<&str> = Vec::new();
        for facts in &self.facts {
            let stage = facts.stage.as_str();
            if stage == current || seen.contains(&stage) {
                continue;
            }
            if direct.is_some_and(|direct| !direct.iter().any(|name| name == stage)) {
                continue;
            }
            seen.push(stage);
            let done = jobs
                .iter()
                .zip(&self.facts)
                .filter(|(_, f)| f.stage == stage)
                .all(|(job, _)| job.status == "completed");
            if !done {
                continue;
            }
            let mut stage_object = Object::new();
            for base in self.base_names(stage) {
                stage_object.insert(base, self.job_state(jobs, stage, base).value());
            }
            stages.insert(stage, Value::Object(stage_object));
        }
        Value::Object(stages)
    }

    /// A stage as a later stage's condition sees it: the worst result of its jobs, and the outputs of
    /// every job as `job.step.var`.
    fn stage_state(&self, jobs: &[Job], stage: &str) -> DependencyState {
        let mut result = TaskResult::Skipped;
        let mut outputs = BTreeMap::new();
        for base in self.base_names(stage) {
            let state = self.job_state(jobs, stage, base);
            result = merge(result, state.result);
            for (key, value) in state.outputs {
                outputs.insert(format!("{base}.{key}"), value);
            }
        }
        DependencyState { result, outputs }
    }

    /// The `variables` a condition or runtime expression reads, lowest precedence first: the
    /// pipeline's own variables (queue-time value, else the pipeline's value), then the YAML ones
    /// (`variables`: pipeline, stage, job), then the predefined ones. This is the order of Microsoft's
    /// "Define variables", section "Expansion of variables": YAML variables win over a variable set
    /// at queue time, which wins over one set in the pipeline settings UI.
    ///
    /// Secret pipeline variables are included. Microsoft's "Set secret variables"
    /// (learn.microsoft.com/azure/devops/pipelines/process/set-secret-variables) and "Define
    /// variables", section "Set secret variables", restrict only how secrets reach scripts (they are
    /// not decrypted into environment variables; map them with `env:`), and "Template expressions",
    /// section "Context", keeps pipeline and queue-time variables out of `${{ }}` only; nothing takes
    /// them out of conditions or `$[ ]` expressions. A condition only decides whether a job runs, and a
    /// `$[ ]` variable copying a secret still reaches the agent next to the secret itself, whose value
    /// the runner masks wherever it appears.
    fn context(&self, pipeline: &[LeaseVariable], variables: &[Variable]) -> MapContext {
        let mut context = MapContext::new();
        context.set_strict_parameters(false);
        for variable in pipeline {
            context.set_variable(variable.name.as_str(), variable.value.as_str());
        }
        for variable in variables {
            if let Variable::Value { name, value, .. } = variable {
                context.set_variable(name.as_str(), value.as_str());
            }
        }
        // System variables are read-only in Azure Pipelines: a pipeline variable cannot hide them.
        for (name, value) in &self.predefined {
            context.set_variable(name.as_str(), value.as_str());
        }
        let start_time = self
            .predefined
            .iter()
            .find(|(name, _)| name == run_number::START_TIME_VARIABLE)
            .map(|(_, value)| value.as_str());
        run_number::set_pipeline_context(&mut context, start_time);
        context
    }

    /// Whether the job at `index` of `jobs` runs: its stage's condition (for the jobs that start the
    /// stage, or for every job when the stage's dependencies are recorded) and its own condition.
    /// `Err` names the condition that cannot be parsed or evaluated.
    pub(crate) fn job_runs(&self, jobs: &[Job], index: usize) -> Result<bool, String> {
        let Some(job) = jobs.get(index) else {
            return Ok(false);
        };
        let spec: StoredSpec = serde_json::from_str(&job.spec)
            .map_err(|error| format!("the job's stored plan cannot be read: {error}"))?;
        let stage = job.stage_name.as_str();
        let mut variables = spec.variables.clone();
        let stage_depends_on = match &spec.conditions.stage_depends_on {
            Some(names) => Some(names.clone()),
            None if spec.conditions.first => Some(upstream_stages(job)),
            None => None,
        };
        if let Some(stage_deps) = stage_depends_on {
            let mut context = self.context(&spec.pipeline_variables, &variables);
            let mut dependencies = Object::new();
            let mut status_of = Vec::new();
            for name in &stage_deps {
                let state = self.stage_state(jobs, name);
                status_of.push((name.clone(), state.result));
                dependencies.insert(name.as_str(), state.value());
            }
            context.set("dependencies", Value::Object(dependencies));
            context.set(
                "stageDependencies",
                self.stage_dependencies(jobs, stage, Some(&stage_deps)),
            );
            context.set_status(StatusInput::Dependencies {
                results: status_of,
                // A stage that started before the cancel keeps running.
                canceled: self.canceled && !self.stage_started(jobs, stage),
            });
            let holds = evaluate(spec.conditions.stage.as_deref(), &context)
                .map_err(|error| format!("invalid condition of stage {stage}: {error}"))?;
            if !holds {
                return Ok(false);
            }
        }
        variables.extend(spec.job.variables.iter().cloned());
        let context = self.job_context(jobs, job, &spec, &variables);
        evaluate(spec.job.condition.as_deref(), &context)
            .map_err(|error| format!("invalid condition of job {}: {error}", job.name))
    }

    /// Whether the job at `index`, not started when its run was canceled, may still run, so that it
    /// waits for its dependencies instead of ending at once (the view must be built with `canceled`).
    ///
    /// Microsoft's page "Pipeline conditions", section "Condition outcomes when a build is canceled"
    /// (learn.microsoft.com/azure/devops/pipelines/process/conditions): a job runs after a cancel
    /// whenever its condition (and its stage's) evaluates to true, so `always()`, `canceled()` and
    /// custom conditions without a status function may run; `succeeded()` (the default),
    /// `succeededOrFailed()` and `failed()` are false once the run is canceled. Under a cancel the
    /// status functions no longer depend on the dependencies' results, so a condition that reads no
    /// `dependencies`/`stageDependencies` is decided now; one that does, or that cannot be evaluated,
    /// waits (and is evaluated, or reported, when its dependencies are done).
    pub(crate) fn may_run_after_cancel(&self, jobs: &[Job], index: usize) -> bool {
        let Some(job) = jobs.get(index) else {
            return false;
        };
        let Ok(spec) = serde_json::from_str::<StoredSpec>(&job.spec) else {
            return true;
        };
        let reads_dependencies = [
            spec.conditions.stage.as_deref(),
            spec.job.condition.as_deref(),
        ]
        .into_iter()
        .flatten()
        .any(|text| text.to_ascii_lowercase().contains("dependencies"));
        if reads_dependencies || !self.canceled {
            return true;
        }
        self.job_runs(jobs, index).unwrap_or(true)
    }

    /// What a job's condition and runtime expressions read: `variables`, `dependencies.<job>` for
    /// the jobs it depends on in its stage, `stageDependencies`, and the status of those jobs.
    fn job_context(
        &self,
        jobs: &[Job],
        job: &Job,
        spec: &StoredSpec,
        variables: &[Variable],
    ) -> MapContext {
        let stage = job.stage_name.as_str();
        let mut context = self.context(&spec.pipeline_variables, variables);
        let mut dependencies = Object::new();
        let mut status_of = Vec::new();
        if !spec.conditions.first {
            let mut names: Vec<&str> = Vec::new();
            for key in depends_on_keys(job) {
                let Some(position) = jobs.iter().position(|other| {
                    other.stage_name == stage
                        && key == format!("{}/{}", other.stage_name, other.name)
                }) else {
                    continue;
                };
                let base = self.facts[position].base_name.as_str();
                if !names.contains(&base) {
                    names.push(base);
                }
            }
            for base in names {
                let state = self.job_state(jobs, stage, base);
                status_of.push((base.to_string(), state.result));
                dependencies.insert(base, state.value());
            }
        }
        context.set("dependencies", Value::Object(dependencies));
        let direct = match &spec.conditions.stage_depends_on {
            Some(names) => Some(names.clone()),
            None if spec.conditions.first => Some(upstream_stages(job)),
            None => None,
        };
        context.set(
            "stageDependencies",
            self.stage_dependencies(jobs, stage, direct.as_deref()),
        );
        context.set_status(StatusInput::Dependencies {
            results: status_of,
            canceled: self.canceled,
        });
        context
    }

    /// The variables of the job at `index` whose value is a runtime expression (`$[ ... ]`),
    /// evaluated in the job's scope once its dependencies finished: positions and values in the
    /// pipeline/stage list and in the job's own list. `Err` names the variable that failed.
    pub(crate) fn runtime_values(
        &self,
        jobs: &[Job],
        index: usize,
    ) -> Result<RuntimeValues, String> {
        let mut values = RuntimeValues::default();
        let Some(job) = jobs.get(index) else {
            return Ok(values);
        };
        let spec: StoredSpec = serde_json::from_str(&job.spec)
            .map_err(|error| format!("the job's stored plan cannot be read: {error}"))?;
        let mut variables = spec.variables.clone();
        variables.extend(spec.job.variables.iter().cloned());
        if !variables.iter().any(|v| runtime_expression(v).is_some())
            && spec.job.runtime_fields.is_empty()
        {
            return Ok(values);
        }
        let context = self.job_context(jobs, job, &spec, &variables);
        let outer = spec.variables.len();
        for (position, variable) in variables.iter().enumerate() {
            let Some((name, text)) = runtime_expression(variable) else {
                continue;
            };
            let value = parse(text, &ParseOptions::runtime())
                .and_then(|expr| expr.evaluate(&context))
                .map_err(|error| format!("variable `{name}`: {}", error.describe(text)))?;
            let value = match value {
                Value::Null => String::new(),
                other => other.to_display_string(),
            };
            if position < outer {
                values.outer.push((position, value));
            } else {
                values.job.push((position - outer, value));
            }
        }
        // Job keys given as `$[ ]`: the same context as the condition and the variables.
        for (key, expression) in &spec.job.runtime_fields {
            let text = expression
                .trim()
                .strip_prefix("$[")
                .and_then(|inner| inner.strip_suffix(']'))
                .unwrap_or(expression);
            let value = parse(text, &ParseOptions::runtime())
                .and_then(|expr| expr.evaluate(&context))
                .map_err(|error| format!("job `{key}`: {}", error.describe(text)))?;
            let value = match value {
                Value::Null => String::new(),
                other => other.to_display_string(),
            };
            let value = lockgate_pipeline::plan::runtime_field_value(key, expression, &value)
                .map_err(|message| format!("job `{key}`: {message}"))?;
            values.fields.push((key.clone(), value));
        }
        Ok(values)
    }
}

/// Evaluated runtime-expression variables of a job, by position in its lists.
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

    /// Puts the values into a stored spec's variable lists (JSON), as the agent receives them.
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

/// The name and inner expression of a variable whose whole value is `$[ ... ]`.
fn runtime_expression(variable: &Variable) -> Option<(&str, &str)> {
    let Variable::Value { name, value, .. } = variable else {
        return None;
    };
    let inner = value.trim().strip_prefix("$[")?.strip_suffix(']')?;
    Some((name, inner))
}

fn depends_on_keys(job: &Job) -> Vec<String> {
    serde_json::from_str(&job.depends_on).unwrap_or_default()
}

/// The stages a first job waits for, read from its dependency keys (`stage/job`).
fn upstream_stages(job: &Job) -> Vec<String> {
    let mut stages: Vec<String> = Vec::new();
    for key in depends_on_keys(job) {
        if let Some((stage, _)) = key.split_once('/')
            && !stages.iter().any(|s| s == stage)
        {
            stages.push(stage.to_string());
        }
    }
    stages
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
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

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
        RunView::new(&jobs, predefined(), canceled).job_runs(&jobs, 1)
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
        RunView::new(&jobs, predefined(), true).may_run_after_cancel(&jobs, 1)
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
        let view = RunView::new(&jobs, predefined(), true);
        assert!(view.may_run_after_cancel(&jobs, 2));
        let mut jobs = jobs_in_two("completed", Some("canceled"));
        assert_eq!(
            RunView::new(&jobs, predefined(), true).job_runs(&jobs, 2),
            Ok(true)
        );
        // One whose first jobs were all skipped did not start.
        jobs[1].result = Some("skipped".into());
        assert!(!RunView::new(&jobs, predefined(), true).may_run_after_cancel(&jobs, 2));
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
        assert!(RunView::new(&jobs, predefined(), false).may_run_after_cancel(&jobs, 1));
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
        let view = RunView::new(&jobs, predefined(), false);
        let values = view.runtime_values(&jobs, 1).unwrap();
        assert_eq!(values.outer, vec![(1, "yes".to_string())]);
        let mut spec: serde_json::Value = serde_json::from_str(&jobs[1].spec).unwrap();
        values.apply(&mut spec);
        assert_eq!(spec["variables"][1]["value"], "yes");
        assert_eq!(spec["variables"][0]["value"], "x");
        let jobs = [a.clone(), b("$[ dependencies.A.outputs['setvar.none'] ]")];
        let values = RunView::new(&jobs, predefined(), false)
            .runtime_values(&jobs, 1)
            .unwrap();
        assert_eq!(values.outer, vec![(1, String::new())]);
        let jobs = [a.clone(), b("plain text")];
        let values = RunView::new(&jobs, predefined(), false)
            .runtime_values(&jobs, 1)
            .unwrap();
        assert!(values.is_empty());
        let jobs = [a, b("$[ eq(1, ]")];
        let error = RunView::new(&jobs, predefined(), false)
            .runtime_values(&jobs, 1)
            .unwrap_err();
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
        let values = RunView::new(&jobs, predefined(), false)
            .runtime_values(&jobs, 1)
            .unwrap();
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
        let view = RunView::new(&[a.clone(), stored], predefined(), false);
        assert!(view.facts[1].continue_on_error);

        let jobs = [
            a.clone(),
            with_fields(json!({"timeoutInMinutes": "$[ 'soon' ]"})),
        ];
        let error = RunView::new(&jobs, predefined(), false)
            .runtime_values(&jobs, 1)
            .unwrap_err();
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
            let view = RunView::new(&jobs, predefined(), false);
            assert_eq!(view.job_runs(&jobs, 0), Ok(expected), "{condition}");
        }
        // Runs queued before the spec carried them read none (and still evaluate).
        let mut old = b_with_pipeline_variables(Some("eq(variables.target, '')"), json!([]));
        let mut spec: serde_json::Value = serde_json::from_str(&old.spec).unwrap();
        spec.as_object_mut().unwrap().remove("pipelineVariables");
        old.spec = spec.to_string();
        let jobs = [old];
        assert_eq!(
            RunView::new(&jobs, predefined(), false).job_runs(&jobs, 0),
            Ok(true)
        );
    }

    #[test]
    fn runtime_expression_variables_read_pipeline_and_queue_time_variables() {
        let jobs = [b_with_pipeline_variables(None, json!([]))];
        let values = RunView::new(&jobs, predefined(), false)
            .runtime_values(&jobs, 0)
            .unwrap();
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
        let view = RunView::new(&jobs, predefined(), false);
        assert_eq!(view.job_runs(&jobs, 2), Ok(true));
        let jobs = [
            leg(1, "linux", "succeeded"),
            leg(2, "windows", "failed"),
            b(None),
        ];
        let view = RunView::new(&jobs, predefined(), false);
        assert_eq!(view.job_runs(&jobs, 2), Ok(false));
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
        let runs =
            |jobs: &[Job], index| RunView::new(jobs, predefined(), false).job_runs(jobs, index);
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
        let mut jobs = jobs_with(Some("failed()"), Some("always()"), "succeeded", false);
        assert_eq!(runs(&jobs, 1), Ok(false));
        jobs[1].status = "completed".into();
        jobs[1].result = Some("skipped".into());
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
            RunView::new(&jobs, predefined(), false).job_runs(&jobs, 2)
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
