//! Benchmark of `lockgate run`: per-step overhead and log throughput against plain bash.

pub fn run() -> anyhow::Result<()> {
    println!("runner: no benchmark yet");
    Ok(())
}
