//! Step conditions, evaluated with lockgate-expr inside a running job (the same code locally and on
//! agents). A missing condition is `succeeded()`; a custom one replaces the default (docs:
//! process/conditions). Job and stage conditions are the run engine's (lockgate-engine).

use lockgate_expr::{MapContext, ParseOptions, StatusInput, parse};
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
}
