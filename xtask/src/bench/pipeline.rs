//! Benchmark of the pipeline compiler: time to plan large and synthetic pipelines.

pub fn run() -> anyhow::Result<()> {
    println!("pipeline: no benchmark yet");
    Ok(())
}
