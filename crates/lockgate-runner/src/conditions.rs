//! Conditions of steps, jobs and stages, and runtime `$[ ]` variable values, evaluated with lockgate-expr.
//! A missing condition is `succeeded()`; a custom one replaces the default (docs: process/conditions).

use std::collections::BTreeMap;

use lockgate_expr::{MapContext, Object, ParseOptions, StatusInput, Value, parse};
use lockgate_pipeline::run_number;

use crate::events::TaskResult;
use crate::variables::VariableStore;

fn to_expr_result(result: TaskResult) -> lockgate_expr::TaskResult {
    match result {
        TaskResult::Succeeded => lockgate_expr::TaskResult::Succeeded,
        TaskResult::SucceededWithIssues => lockgate_expr::TaskResult::SucceededWithIssues,
        TaskResult::Failed => lockgate_expr::TaskResult::Failed,
        TaskResult::Canceled => lockgate_expr::TaskResult::Canceled,
        TaskResult::Skipped => lockgate_expr::TaskResult::Skipped,
    }
}

fn context_with_variables<'v>(variables: impl Iterator<Item = (&'v str, &'v str)>) -> MapContext {
    let mut context = MapContext::new();
    context.set_strict_parameters(false);
    let mut start_time = None;
    for (name, value) in variables {
        if name.eq_ignore_ascii_case(run_number::START_TIME_VARIABLE) {
            start_time = Some(value);
        }
        context.set_variable(name, value);
    }
    run_number::set_pipeline_context(&mut context, start_time);
    context
}

/// Evaluates a step condition against the job's variables and status (`Agent.JobStatus`); a canceled job
/// reports `Canceled` to the status functions.
pub fn step_condition(
    condition: Option<&str>,
    variables: &VariableStore,
    job_status: TaskResult,
    canceled: bool,
) -> Result<bool, String> {
    let status = if canceled {
        TaskResult::Canceled
    } else {
        job_status
    };
    let Some(text) = condition.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok(status.is_success());
    };
    let expr = parse(text, &ParseOptions::condition()).map_err(|err| err.describe(text))?;
    let mut context = context_with_variables(
        variables
            .iter()
            .map(|v| (v.name.as_str(), v.value.as_str())),
    );
    context.set_status(StatusInput::Step {
        job_status: Some(to_expr_result(status)),
    });
    expr.evaluate_bool(&context)
        .map_err(|err| err.describe(text))
}

/// A finished job as later jobs see it through `dependencies.<job>`.
#[derive(Debug, Clone)]
pub struct DependencyState {
    pub result: TaskResult,
    pub outputs: BTreeMap<String, String>,
}

/// What job and stage conditions and runtime expressions can read.
#[derive(Debug, Default, Clone)]
pub struct DependencyScope {
    /// `dependencies.<name>` (jobs of the same stage, or stages for a stage condition).
    pub dependencies: BTreeMap<String, DependencyState>,
    /// `stageDependencies.<stage>.<job>`.
    pub stage_dependencies: BTreeMap<String, BTreeMap<String, DependencyState>>,
    /// The dependencies the status functions look at, with their results.
    pub status_of: Vec<(String, TaskResult)>,
    pub canceled: bool,
}

fn dependency_value(state: &DependencyState) -> Value {
    let mut outputs = Object::new();
    for (key, value) in &state.outputs {
        outputs.insert(key.clone(), Value::String(value.clone()));
    }
    let mut object = Object::new();
    object.insert("result", Value::String(state.result.as_str().to_string()));
    object.insert("outputs", Value::Object(outputs));
    Value::Object(object)
}

fn scope_context<'v>(
    variables: impl Iterator<Item = (&'v str, &'v str)>,
    scope: &DependencyScope,
) -> MapContext {
    let mut context = context_with_variables(variables);
    let mut dependencies = Object::new();
    for (name, state) in &scope.dependencies {
        dependencies.insert(name.clone(), dependency_value(state));
    }
    context.set("dependencies", Value::Object(dependencies));
    let mut stages = Object::new();
    for (stage, jobs) in &scope.stage_dependencies {
        let mut stage_object = Object::new();
        for (job, state) in jobs {
            stage_object.insert(job.clone(), dependency_value(state));
        }
        stages.insert(stage.clone(), Value::Object(stage_object));
    }
    context.set("stageDependencies", Value::Object(stages));
    context.set_status(StatusInput::Dependencies {
        results: scope
            .status_of
            .iter()
            .map(|(name, result)| (name.clone(), to_expr_result(*result)))
            .collect(),
        canceled: scope.canceled,
    });
    context
}

/// Evaluates a job or stage condition (default `succeeded()` over the dependencies).
pub fn dependency_condition<'v>(
    condition: Option<&str>,
    variables: impl Iterator<Item = (&'v str, &'v str)>,
    scope: &DependencyScope,
) -> Result<bool, String> {
    let text = condition
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .unwrap_or("succeeded()");
    let expr = parse(text, &ParseOptions::condition()).map_err(|err| err.describe(text))?;
    let context = scope_context(variables, scope);
    expr.evaluate_bool(&context)
        .map_err(|err| err.describe(text))
}

/// If `value` is a runtime expression (`$[ ... ]` as the whole value), evaluates it; otherwise None.
pub fn runtime_value<'v>(
    value: &str,
    variables: impl Iterator<Item = (&'v str, &'v str)>,
    scope: &DependencyScope,
) -> Option<Result<String, String>> {
    let trimmed = value.trim();
    let inner = trimmed.strip_prefix("$[")?.strip_suffix(']')?;
    let result = parse(inner, &ParseOptions::runtime())
        .map_err(|err| err.describe(inner))
        .and_then(|expr| {
            let context = scope_context(variables, scope);
            expr.evaluate(&context).map_err(|err| err.describe(inner))
        })
        .map(|value| match value {
            Value::Null => String::new(),
            other => other.to_display_string(),
        });
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_step_condition_follows_the_job_status() {
        let vars = VariableStore::new();
        assert!(step_condition(None, &vars, TaskResult::SucceededWithIssues, false).unwrap());
        assert!(!step_condition(None, &vars, TaskResult::Failed, false).unwrap());
        assert!(!step_condition(None, &vars, TaskResult::Succeeded, true).unwrap());
    }

    #[test]
    fn custom_step_conditions_see_variables_and_status() {
        let mut vars = VariableStore::new();
        vars.set("Build.Reason", "Manual", false, false).unwrap();
        let cond = Some("and(failed(), eq(variables['build.reason'], 'Manual'))");
        assert!(step_condition(cond, &vars, TaskResult::Failed, false).unwrap());
        assert!(!step_condition(cond, &vars, TaskResult::Succeeded, false).unwrap());
        assert!(step_condition(Some("always()"), &vars, TaskResult::Failed, true).unwrap());
        assert!(step_condition(Some("canceled()"), &vars, TaskResult::Succeeded, true).unwrap());
        assert!(step_condition(Some("eq(1,"), &vars, TaskResult::Succeeded, false).is_err());
    }

    #[test]
    fn job_conditions_and_runtime_values_read_dependencies() {
        let mut scope = DependencyScope::default();
        let outputs = BTreeMap::from([("setver.version".to_string(), "1.2.3".to_string())]);
        scope.dependencies.insert(
            "A".into(),
            DependencyState {
                result: TaskResult::Succeeded,
                outputs: outputs.clone(),
            },
        );
        scope.status_of.push(("A".into(), TaskResult::Succeeded));
        let mut stage = BTreeMap::new();
        stage.insert(
            "Build".to_string(),
            DependencyState {
                result: TaskResult::Failed,
                outputs,
            },
        );
        scope.stage_dependencies.insert("One".into(), stage);
        assert!(dependency_condition(None, std::iter::empty(), &scope).unwrap());
        assert!(
            dependency_condition(
                Some("eq(dependencies.A.outputs['setver.version'], '1.2.3')"),
                std::iter::empty(),
                &scope
            )
            .unwrap()
        );
        let value = runtime_value(
            "$[ stageDependencies.One.Build.outputs['setver.version'] ]",
            std::iter::empty(),
            &scope,
        );
        assert_eq!(value, Some(Ok("1.2.3".to_string())));
        assert_eq!(runtime_value("plain", std::iter::empty(), &scope), None);
        scope.status_of.push(("B".into(), TaskResult::Failed));
        assert!(!dependency_condition(None, std::iter::empty(), &scope).unwrap());
        assert!(dependency_condition(Some("failed()"), std::iter::empty(), &scope).unwrap());
    }
}
