//! Benchmark of the expression language: parses per second of a typical condition, and evaluations per second of
//! a pre-parsed condition against a context of 200 variables (issue 2's targets: 300,000 and 2,000,000 per second).

use std::hint::black_box;
use std::time::{Duration, Instant};

use lockgate_expr::{MapContext, ParseOptions, parse};

/// The condition both measurements use.
const CONDITION: &str = "and(succeeded(), eq(variables['Build.SourceBranch'], 'refs/heads/main'))";

/// Runs `work` in batches until `budget` has passed; returns operations per second.
fn measure(budget: Duration, mut work: impl FnMut() -> bool) -> anyhow::Result<f64> {
    // Warm up, and check once that the work does what it should.
    anyhow::ensure!(work(), "the benchmarked expression gave the wrong result");
    let start = Instant::now();
    let mut operations: u64 = 0;
    while start.elapsed() < budget {
        for _ in 0..1000 {
            black_box(work());
        }
        operations += 1000;
    }
    Ok(operations as f64 / start.elapsed().as_secs_f64())
}

pub fn run() -> anyhow::Result<()> {
    let options = ParseOptions::condition();
    let mut context = MapContext::new();
    for i in 0..199 {
        context.set_variable(format!("Custom.Variable{i}"), format!("value number {i}"));
    }
    context.set_variable("Build.SourceBranch", "refs/heads/main");
    let budget = Duration::from_secs(3);

    let parses = measure(budget, || parse(black_box(CONDITION), &options).is_ok())?;
    let expression = parse(CONDITION, &options)?;
    let evaluations = measure(budget, || {
        expression
            .evaluate_bool(black_box(&context))
            .unwrap_or(false)
    })?;

    println!("expr: condition `{CONDITION}`, 200 variables");
    println!("  {:<34} {:>14} {:>12}", "measure", "per second", "target");
    println!("  {:<34} {:>14.0} {:>12}", "parse", parses, "300,000");
    println!(
        "  {:<34} {:>14.0} {:>12}",
        "evaluate (pre-parsed)", evaluations, "2,000,000"
    );
    Ok(())
}
