//! Benchmark of Power Platform solution unpack and pack.

pub fn run() -> anyhow::Result<()> {
    println!("solution: no benchmark yet");
    Ok(())
}
