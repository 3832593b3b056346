//! Benchmark of `lockgate run`: per-step overhead and log throughput, each side by side with plain bash doing
//! the same work in the same run. The pipeline is compiled and run in-process through the same library calls
//! `lockgate run` makes, with log lines written to a file as the CLI does.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockgate_pipeline::{CompileInput, SingleFile};
use lockgate_runner::artifacts::ArtifactStore;
use lockgate_runner::events::{Event, EventSink, TaskResult};
use lockgate_runner::job::RunContext;
use lockgate_runner::orchestrator::{LocalRunOptions, run_facts, run_local};
use lockgate_runner::sandbox::Sandbox;
use lockgate_runner::tasks::TaskRegistry;

/// Writes every log line to one file, like the CLI's per-job log files.
struct FileSink {
    out: Mutex<BufWriter<File>>,
}

impl EventSink for FileSink {
    fn event(&self, event: Event) {
        if let Event::Log { lines, .. } = event
            && let Ok(mut out) = self.out.lock()
        {
            for line in lines {
                let _ = out.write_all(line.as_bytes());
                let _ = out.write_all(b"\n");
            }
        }
    }
}

/// Compiles and runs `yaml` in `dir`; returns the wall time.
fn run_pipeline(dir: &Path, yaml: &str) -> anyhow::Result<Duration> {
    run_pipeline_in(dir, yaml, None)
}

/// [`run_pipeline`] with every step in `sandbox` when one is given.
pub(super) fn run_pipeline_in(
    dir: &Path,
    yaml: &str,
    sandbox: Option<&Sandbox>,
) -> anyhow::Result<Duration> {
    let reader = SingleFile(yaml);
    let output = lockgate_pipeline::compile(&CompileInput {
        entry: "azure-pipelines.yml".into(),
        reader: &reader,
        parameters: Vec::new(),
        variables: Vec::new(),
    });
    let Some(plan) = output.plan else {
        anyhow::bail!(
            "benchmark pipeline did not compile: {:?}",
            output.diagnostics
        )
    };
    let run_dir = dir.join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)?;
    let context = Arc::new(RunContext {
        run_id: "1".into(),
        build_number: Mutex::new("1".into()),
        artifacts: ArtifactStore::open(dir.join("store"))?,
        run_dir: run_dir.clone(),
        self_repository: None,
        repositories: Default::default(),
        self_remote: None,
        base_env: std::env::vars().collect(),
        minute: Duration::from_secs(60),
        drain_grace: Duration::from_millis(500),
        cache_dir: dir.join("cache"),
        sandbox: sandbox.cloned(),
        job_home: true,
        secure_files: Default::default(),
    });
    let options = LocalRunOptions {
        parallel: 1,
        variables: Vec::new(),
        variable_groups: Default::default(),
        run_variables: run_facts(None, "bench", "1", "1"),
        work_dir: run_dir.join("work"),
        selection: None,
        os_mismatch: Default::default(),
    };
    let sink = Arc::new(FileSink {
        out: Mutex::new(BufWriter::with_capacity(
            64 * 1024,
            File::create(run_dir.join("job.log"))?,
        )),
    });
    let started = Instant::now();
    let outcome = run_local(
        &plan,
        context,
        Arc::new(TaskRegistry::with_builtins()),
        &options,
        sink.clone(),
    )?;
    if let Ok(mut out) = sink.out.lock() {
        out.flush()?;
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(
        outcome.result == TaskResult::Succeeded,
        "benchmark run ended {:?}",
        outcome.result
    );
    let _ = std::fs::remove_dir_all(&run_dir);
    Ok(elapsed)
}

fn bash(script: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let status = Command::new("bash")
        .args(["--noprofile", "--norc", "-c", script])
        .status()?;
    anyhow::ensure!(status.success(), "bash baseline failed");
    Ok(started.elapsed())
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|kb| kb.parse::<f64>().ok())
                })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn best_of(
    runs: usize,
    mut measure: impl FnMut() -> anyhow::Result<Duration>,
) -> anyhow::Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..runs {
        best = best.min(measure()?);
    }
    Ok(best)
}

pub fn run() -> anyhow::Result<()> {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("lockgate-bench-runner-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    // 1,000,000 lines first, so that the peak RSS reflects the big log and not the step-count run.
    let producer = "seq 1 1000000 | sed 's/^/log line number /'";
    let lines_yaml = format!("steps:\n- checkout: none\n- bash: \"{producer}\"\n");
    let out_file = dir.join("bash-lines.txt");
    let bash_lines = best_of(3, || {
        bash(&format!("{producer} > '{}'", out_file.display()))
    })?;
    let lockgate_lines = best_of(3, || run_pipeline(&dir, &lines_yaml))?;
    let rss = peak_rss_mb();

    let mut steps_yaml = String::from("steps:\n- checkout: none\n");
    for _ in 0..100 {
        steps_yaml.push_str("- script: true\n");
    }
    let bash_steps = best_of(3, || {
        bash("for i in $(seq 100); do bash --noprofile --norc -c true; done")
    })?;
    let lockgate_steps = best_of(3, || run_pipeline(&dir, &steps_yaml))?;
    let _ = std::fs::remove_dir_all(&dir);

    let per_step = lockgate_steps.as_secs_f64() * 1000.0 / 100.0;
    let per_shell = bash_steps.as_secs_f64() * 1000.0 / 100.0;
    println!("runner (best of 3 each)");
    println!(
        "  100 `script: true` steps: lockgate {:.3} s ({per_step:.2} ms/step, bash start included), bash spawning 100 shells {:.3} s ({per_shell:.2} ms each); overhead {:.2} ms/step (target < 3)",
        lockgate_steps.as_secs_f64(),
        bash_steps.as_secs_f64(),
        per_step - per_shell
    );
    println!(
        "  1,000,000 output lines: lockgate {:.3} s, bash to a file {:.3} s, ratio {:.2}x (target <= 1.5x)",
        lockgate_lines.as_secs_f64(),
        bash_lines.as_secs_f64(),
        lockgate_lines.as_secs_f64() / bash_lines.as_secs_f64().max(1e-9)
    );
    println!(
        "  peak RSS of the benchmark process after the 1M-line run: {rss:.1} MB (target < 50)"
    );
    Ok(())
}
