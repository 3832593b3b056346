//! Job status functions in step scope (`Agent.JobStatus`) and in job/stage scope (dependency results).

use lockgate_expr::{MapContext, ParseOptions, StatusInput, TaskResult, parse};

fn step(function: &str, status: Option<&str>) -> bool {
    let mut context = MapContext::new();
    if let Some(status) = status {
        context.set_variable("Agent.JobStatus", status);
    }
    parse(function, &ParseOptions::condition())
        .unwrap()
        .evaluate_bool(&context)
        .unwrap()
}

fn job(function: &str, results: &[(&str, TaskResult)], canceled: bool) -> Result<bool, String> {
    let mut context = MapContext::new();
    context.set_status(StatusInput::Dependencies {
        results: results.iter().map(|(n, r)| (n.to_string(), *r)).collect(),
        canceled,
    });
    parse(function, &ParseOptions::condition())
        .unwrap()
        .evaluate_bool(&context)
        .map_err(|e| e.message)
}

#[test]
fn step_scope_before_any_status() {
    assert!(step("always()", None));
    assert!(step("succeeded()", None));
    assert!(step("succeededOrFailed()", None));
    assert!(!step("failed()", None));
    assert!(!step("canceled()", None));
}

#[test]
fn step_scope_reads_agent_job_status() {
    assert!(step("succeeded()", Some("SucceededWithIssues")));
    assert!(!step("succeeded()", Some("Failed")));
    assert!(step("failed()", Some("failed")));
    assert!(step("succeededOrFailed()", Some("Failed")));
    assert!(!step("succeededOrFailed()", Some("Canceled")));
    assert!(step("canceled()", Some("Canceled")));
    assert!(step("always()", Some("Canceled")));
}

#[test]
fn an_unknown_agent_job_status_is_an_error() {
    let mut context = MapContext::new();
    context.set_variable("Agent.JobStatus", "Exploded");
    let e = parse("succeeded()", &ParseOptions::condition())
        .unwrap()
        .evaluate(&context)
        .unwrap_err();
    assert_eq!(
        e.message,
        "unknown job status 'Exploded' in Agent.JobStatus"
    );
}

#[test]
fn job_scope_reads_dependency_results() {
    use TaskResult::*;
    let all_good = [("A", Succeeded), ("B", SucceededWithIssues)];
    assert_eq!(job("succeeded()", &all_good, false), Ok(true));
    assert_eq!(
        job("succeeded()", &[("A", Succeeded), ("B", Failed)], false),
        Ok(false)
    );
    assert_eq!(
        job("succeeded('A')", &[("A", Succeeded), ("B", Failed)], false),
        Ok(true)
    );
    assert_eq!(
        job("failed()", &[("A", Succeeded), ("B", Failed)], false),
        Ok(true)
    );
    assert_eq!(
        job("failed('a')", &[("A", Succeeded), ("B", Failed)], false),
        Ok(false)
    );
    assert_eq!(job("succeeded()", &[("A", Skipped)], false), Ok(false));
    assert_eq!(
        job("succeededOrFailed()", &[("A", Failed)], false),
        Ok(true)
    );
    assert_eq!(job("succeededOrFailed()", &all_good, true), Ok(false));
    assert_eq!(job("succeeded()", &all_good, true), Ok(false));
    assert_eq!(job("canceled()", &all_good, true), Ok(true));
    assert_eq!(job("always()", &all_good, true), Ok(true));
    assert_eq!(job("succeeded()", &[], false), Ok(true));
    assert_eq!(
        job("succeeded('C')", &all_good, false),
        Err("'C' is not a dependency".into())
    );
}

#[test]
fn dependency_outputs_are_named_values() {
    let mut context = MapContext::new();
    let mut outputs = lockgate_expr::Object::new();
    outputs.insert("setVar.myVar", lockgate_expr::Value::from("yes"));
    let mut job_a = lockgate_expr::Object::new();
    job_a.insert("result", lockgate_expr::Value::from("Succeeded"));
    job_a.insert("outputs", lockgate_expr::Value::Object(outputs));
    let mut dependencies = lockgate_expr::Object::new();
    dependencies.insert("A", lockgate_expr::Value::Object(job_a));
    context.set("dependencies", lockgate_expr::Value::Object(dependencies));
    let condition = "and(eq(dependencies.A.result, 'Succeeded'), eq(dependencies.a.outputs['setVar.myVar'], 'yes'))";
    assert!(
        parse(condition, &ParseOptions::condition())
            .unwrap()
            .evaluate_bool(&context)
            .unwrap()
    );
}
