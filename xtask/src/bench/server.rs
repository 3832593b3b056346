//! Benchmark of the server: push-to-first-step latency, runs list API, log ingest, idle memory.

pub fn run() -> anyhow::Result<()> {
    println!("server: no benchmark yet");
    Ok(())
}
