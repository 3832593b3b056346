//! Benchmark of the expression language: parses and evaluations per second.

pub fn run() -> anyhow::Result<()> {
    println!("expr: no benchmark yet");
    Ok(())
}
