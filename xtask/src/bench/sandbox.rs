//! Benchmark of job isolation: what the bubblewrap sandbox costs per step start and per job, measured
//! side by side with no sandbox in the same run (interleaved, best of 5 each), through the same library
//! calls the built-in agents make.

use std::path::PathBuf;
use std::time::Duration;

use lockgate_runner::sandbox::Sandbox;

use super::runner::run_pipeline_in;

const STEPS: usize = 50;
const ROUNDS: usize = 5;

pub fn run() -> anyhow::Result<()> {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("lockgate-bench-sandbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // The bench folder plays the data folder: hidden, with the job's workspace inside it.
    let sandbox = Sandbox::detect(std::slice::from_ref(&dir))
        .map_err(|error| anyhow::anyhow!("the sandbox benchmark needs bubblewrap: {error}"))?;

    let mut many = String::from("steps:\n- checkout: none\n");
    for _ in 0..STEPS {
        many.push_str("- script: true\n");
    }
    let one = "steps:\n- checkout: none\n- script: true\n";
    let (mut open_many, mut boxed_many) = (Duration::MAX, Duration::MAX);
    let (mut open_one, mut boxed_one) = (Duration::MAX, Duration::MAX);
    for _ in 0..ROUNDS {
        open_many = open_many.min(run_pipeline_in(&dir, &many, None)?);
        boxed_many = boxed_many.min(run_pipeline_in(&dir, &many, Some(&sandbox))?);
        open_one = open_one.min(run_pipeline_in(&dir, one, None)?);
        boxed_one = boxed_one.min(run_pipeline_in(&dir, one, Some(&sandbox))?);
    }
    let _ = std::fs::remove_dir_all(&dir);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let per_step = |d: Duration| ms(d) / STEPS as f64;
    println!(
        "sandbox ({}; best of {ROUNDS} each, interleaved)",
        sandbox.version()
    );
    println!(
        "  {STEPS} `script: true` steps: no sandbox {:.1} ms ({:.2} ms/step), bubblewrap {:.1} ms ({:.2} ms/step); sandbox cost {:.2} ms per step start",
        ms(open_many),
        per_step(open_many),
        ms(boxed_many),
        per_step(boxed_many),
        per_step(boxed_many) - per_step(open_many)
    );
    println!(
        "  a job of one `script: true` step: no sandbox {:.1} ms, bubblewrap {:.1} ms; sandbox cost {:.2} ms per job",
        ms(open_one),
        ms(boxed_one),
        ms(boxed_one) - ms(open_one)
    );
    Ok(())
}
