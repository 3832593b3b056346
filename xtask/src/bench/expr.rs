//! Benchmark of the expression language: parses per second of a typical condition, and evaluations per second of
//! a pre-parsed condition against a context of 200 variables (issue 2's targets: 300,000 and 2,000,000 per second).
//! Rates are given per second of wall time and per second of CPU time the thread actually got, because the
//! machine is shared and wall time alone mostly measures the other builds.

use std::hint::black_box;
use std::time::{Duration, Instant};

use lockgate_expr::{MapContext, ParseOptions, parse};

/// The condition both measurements use.
const CONDITION: &str = "and(succeeded(), eq(variables['Build.SourceBranch'], 'refs/heads/main'))";

/// Nanoseconds this thread has spent on a CPU (Linux `schedstat`), if the kernel reports it.
fn thread_cpu_nanos() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Operations per second of wall time and of CPU time.
struct Rate {
    wall: f64,
    cpu: Option<f64>,
}

/// Runs `work` in batches until `budget` has passed.
fn measure(budget: Duration, mut work: impl FnMut() -> bool) -> anyhow::Result<Rate> {
    // Warm up, and check once that the work does what it should.
    anyhow::ensure!(work(), "the benchmarked expression gave the wrong result");
    let start = Instant::now();
    let cpu_start = thread_cpu_nanos();
    let mut operations: u64 = 0;
    while start.elapsed() < budget {
        for _ in 0..1000 {
            black_box(work());
        }
        operations += 1000;
    }
    let wall = operations as f64 / start.elapsed().as_secs_f64();
    let cpu = match (cpu_start, thread_cpu_nanos()) {
        (Some(before), Some(after)) if after > before => {
            Some(operations as f64 * 1e9 / (after - before) as f64)
        }
        _ => None,
    };
    Ok(Rate { wall, cpu })
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

    let cpu = |rate: &Rate| {
        rate.cpu
            .map_or_else(|| "n/a".to_string(), |r| format!("{r:.0}"))
    };
    println!("expr: condition `{CONDITION}`, 200 variables");
    println!(
        "  {:<26} {:>16} {:>16} {:>12}",
        "measure", "per wall second", "per CPU second", "target"
    );
    println!(
        "  {:<26} {:>16.0} {:>16} {:>12}",
        "parse",
        parses.wall,
        cpu(&parses),
        "300,000"
    );
    println!(
        "  {:<26} {:>16.0} {:>16} {:>12}",
        "evaluate (pre-parsed)",
        evaluations.wall,
        cpu(&evaluations),
        "2,000,000"
    );
    Ok(())
}
