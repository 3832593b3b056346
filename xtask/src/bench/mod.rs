//! Benchmarks, one module per area. Each prints a table and the machine it ran on; the numbers go to
//! docs/benchmarks.md. They are measurements, never timed tests.

mod agents;
mod dispatch;
mod engine;
mod expr;
mod pipeline;
mod releases;
mod runner;
mod sandbox;
mod server;
mod solution;

use std::process::Command;

/// Re-runs xtask in release mode so that benchmarks measure optimised code.
pub fn spawn_release(args: &[String]) -> anyhow::Result<u8> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "run",
            "--quiet",
            "--release",
            "--package",
            "xtask",
            "--",
            "bench-release",
        ])
        .args(args)
        .status()?;
    Ok(status.code().unwrap_or(1).clamp(0, 255) as u8)
}

pub fn main(args: &[String]) -> anyhow::Result<u8> {
    let which = args.first().map(String::as_str).unwrap_or("all");
    println!("machine: {}", machine());
    match which {
        "expr" => expr::run()?,
        "engine" => engine::run()?,
        "pipeline" => pipeline::run()?,
        "runner" => runner::run()?,
        "sandbox" => sandbox::run()?,
        "solution" => solution::run()?,
        "server" => server::run()?,
        "releases" => releases::run()?,
        "dispatch" => dispatch::run(&args[1..])?,
        "agents" => agents::run()?,
        "all" => {
            expr::run()?;
            engine::run()?;
            pipeline::run()?;
            runner::run()?;
            sandbox::run()?;
            solution::run()?;
            server::run()?;
            releases::run()?;
            dispatch::run(&[])?;
            agents::run()?;
        }
        other => anyhow::bail!("unknown benchmark `{other}`"),
    }
    Ok(0)
}

/// A one-line description of this machine for the benchmark record.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|name| name.trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cpu}, {cores} cores")
}
