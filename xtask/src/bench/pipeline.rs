//! Benchmark of the pipeline compiler: time to plan the largest corpus pipeline, and a synthetic
//! pipeline of 50 nested templates that expands to 1,000 job instances (111 jobs with a 3x3 matrix,
//! plus one).
//!
//! Then the scaling cases, each a generated pipeline (nothing checked in): a `variables:` mapping of
//! 10k/30k/60k keys, a `jobs:` list of 100/1,000/10,000 jobs each with a script step, and one job of
//! 1,000/10,000 steps. Compile time should grow linearly with the input.
//!
//! The corpus folder is `$LOCKGATE_CORPUS`, else `../shared/corpus/azure-pipelines` next to the
//! workspace; without it that half is skipped with a message.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::corpus::compile_entry as compile;

/// Runs `work` at least once and then again while under a second (at most 5 times), and returns the
/// median: a slow case (seconds per compile before the scaling fix) is not run five times.
fn measure_scaling(mut work: impl FnMut()) -> (Duration, usize) {
    let mut samples = Vec::new();
    let started = Instant::now();
    while samples.is_empty() || (started.elapsed() < Duration::from_secs(1) && samples.len() < 5) {
        let start = Instant::now();
        work();
        samples.push(start.elapsed());
    }
    samples.sort();
    (samples[samples.len() / 2], samples.len())
}

/// A generated pipeline for the scaling cases.
#[derive(Clone, Copy)]
pub enum Scaling {
    /// A top-level `variables:` mapping of N keys and one step using the first.
    VariableKeys(usize),
    /// A `jobs:` list of N jobs, each with one named script step.
    Jobs(usize),
    /// One job of N named script steps.
    Steps(usize),
}

impl Scaling {
    pub fn label(self) -> String {
        match self {
            Scaling::VariableKeys(n) => format!("variables mapping, {n} keys"),
            Scaling::Jobs(n) => format!("jobs list, {n} jobs"),
            Scaling::Steps(n) => format!("one job, {n} steps"),
        }
    }

    /// The pipeline's YAML text.
    pub fn yaml(self) -> String {
        use std::fmt::Write;
        let mut text = String::from("trigger: none\n");
        match self {
            Scaling::VariableKeys(n) => {
                text.push_str("variables:\n");
                for i in 0..n {
                    let _ = writeln!(text, "  v{i}: x{i}");
                }
                text.push_str("steps:\n- script: echo $(v0)\n");
            }
            Scaling::Jobs(n) => {
                text.push_str("jobs:\n");
                for i in 0..n {
                    let _ = writeln!(
                        text,
                        "- job: j{i}\n  steps:\n  - script: echo {i}\n    name: s{i}"
                    );
                }
            }
            Scaling::Steps(n) => {
                text.push_str("steps:\n");
                for i in 0..n {
                    let _ = writeln!(text, "- script: echo {i}\n  name: s{i}");
                }
            }
        }
        text
    }
}

/// Runs `work` repeatedly for about a second (at least 5 times) and returns the median.
fn measure(mut work: impl FnMut()) -> (Duration, usize) {
    let mut samples = Vec::new();
    let started = Instant::now();
    while samples.len() < 5 || (started.elapsed() < Duration::from_secs(1) && samples.len() < 1000)
    {
        let start = Instant::now();
        work();
        samples.push(start.elapsed());
    }
    samples.sort();
    (samples[samples.len() / 2], samples.len())
}

fn corpus_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LOCKGATE_CORPUS") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/azure-pipelines")
}

/// The entry pipeline of the corpus with the most YAML read (entry plus templates) that plans ok.
fn largest_corpus_pipeline(dir: &Path) -> Option<(PathBuf, String, usize)> {
    let manifest = std::fs::read_to_string(dir.join("MANIFEST.tsv")).ok()?;
    let mut best: Option<(PathBuf, String, usize)> = None;
    for line in manifest.lines().skip(1) {
        let columns: Vec<&str> = line.split('\t').collect();
        let [repo, path, _, "yes", ..] = columns.as_slice() else {
            continue;
        };
        let root = dir.join(repo.replace('/', "__"));
        let output = compile(&root, path);
        if output.plan.is_none() {
            continue;
        }
        let bytes: usize = output.sources.iter().map(|s| s.text.len()).sum();
        if best.as_ref().is_none_or(|(_, _, b)| bytes > *b) {
            best = Some((root, path.to_string(), bytes));
        }
    }
    best
}

/// Writes the synthetic pipeline: `azure-pipelines.yml` includes `level0.yml`, each level adds a
/// stage of matrix jobs (3 operating systems x 3 versions) and includes the next level, 50 deep.
pub fn write_synthetic(dir: &Path) -> std::io::Result<()> {
    std::fs::write(
        dir.join("azure-pipelines.yml"),
        "trigger: none\nvariables:\n  configuration: Release\nstages:\n- template: templates/level0.yml\n  parameters:\n    oses: [linux, windows, macos]\n    versions: ['8', '9', '10']\n- stage: Final\n  jobs:\n  - job: report\n    steps:\n    - script: echo done\n",
    )?;
    std::fs::create_dir_all(dir.join("templates"))?;
    std::fs::write(
        dir.join("templates/steps.yml"),
        "parameters:\n- name: version\n  type: string\nsteps:\n- checkout: self\n- script: dotnet build -f net${{ parameters.version }} -c $(configuration)\n  displayName: Build ${{ parameters.version }}\n- task: PublishTestResults@2\n  inputs:\n    testResultsFiles: '**/*.trx'\n",
    )?;
    for level in 0..50 {
        let jobs = if level < 11 { 3 } else { 2 };
        let ids: Vec<String> = (0..jobs).map(|j| format!("j{j}")).collect();
        let next = if level < 49 {
            format!(
                "- template: level{}.yml\n  parameters:\n    oses: ${{{{ parameters.oses }}}}\n    versions: ${{{{ parameters.versions }}}}\n",
                level + 1
            )
        } else {
            String::new()
        };
        let text = format!(
            "parameters:\n- name: oses\n  type: object\n- name: versions\n  type: object\nstages:\n- stage: level{level}\n  jobs:\n  - ${{{{ each id in split('{ids}', ',') }}}}:\n    - job: ${{{{ id }}}}\n      strategy:\n        matrix:\n          ${{{{ each os in parameters.oses }}}}:\n            ${{{{ each version in parameters.versions }}}}:\n              ${{{{ os }}}}_${{{{ version }}}}:\n                os: ${{{{ os }}}}\n                version: ${{{{ version }}}}\n      steps:\n      - template: steps.yml\n        parameters:\n          version: $(version)\n{next}",
            ids = ids.join(",")
        );
        std::fs::write(dir.join(format!("templates/level{level}.yml")), text)?;
    }
    Ok(())
}

pub fn run() -> anyhow::Result<()> {
    println!("pipeline compiler (median of repeated runs, release build):");
    let corpus = corpus_dir();
    match largest_corpus_pipeline(&corpus) {
        Some((root, entry, bytes)) => {
            let (median, runs) = measure(|| {
                let output = compile(&root, &entry);
                assert!(output.plan.is_some());
            });
            println!(
                "  largest corpus pipeline  {} ({bytes} bytes of YAML): {:.3} ms ({runs} runs)",
                root.join(&entry).display(),
                median.as_secs_f64() * 1e3
            );
        }
        None => println!(
            "  largest corpus pipeline: skipped, no corpus at {} (set LOCKGATE_CORPUS)",
            corpus.display()
        ),
    }
    let dir = std::env::temp_dir().join(format!("lockgate-bench-pipeline-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    write_synthetic(&dir)?;
    let output = compile(&dir, "azure-pipelines.yml");
    let Some(plan) = &output.plan else {
        anyhow::bail!(
            "the synthetic pipeline does not plan: {}",
            lockgate_pipeline::render(&output.diagnostics, &output.sources)
        );
    };
    let jobs: usize = plan.stages.iter().map(|s| s.jobs.len()).sum();
    let steps: usize = plan
        .stages
        .iter()
        .flat_map(|s| &s.jobs)
        .map(|j| j.steps.len())
        .sum();
    let (median, runs) = measure(|| {
        let output = compile(&dir, "azure-pipelines.yml");
        assert!(output.plan.is_some());
    });
    println!(
        "  synthetic: 50 nested templates, {} stages, {jobs} job instances, {steps} steps: {:.3} ms ({runs} runs)",
        plan.stages.len(),
        median.as_secs_f64() * 1e3
    );
    println!("  scaling (median of up to 5 compiles within a second, at least 1):");
    for case in [
        Scaling::VariableKeys(10_000),
        Scaling::VariableKeys(30_000),
        Scaling::VariableKeys(60_000),
        Scaling::Jobs(100),
        Scaling::Jobs(1_000),
        Scaling::Jobs(10_000),
        Scaling::Steps(1_000),
        Scaling::Steps(10_000),
    ] {
        let text = case.yaml();
        std::fs::write(dir.join("scaling.yml"), &text)?;
        let output = compile(&dir, "scaling.yml");
        if output.plan.is_none() {
            anyhow::bail!(
                "the scaling case `{}` does not plan: {}",
                case.label(),
                lockgate_pipeline::render(&output.diagnostics, &output.sources)
            );
        }
        let (median, runs) = measure_scaling(|| {
            let output = compile(&dir, "scaling.yml");
            assert!(output.plan.is_some());
        });
        println!(
            "    {:<28} {:>9} bytes: {:>10.1} ms ({runs} runs)",
            case.label(),
            text.len(),
            median.as_secs_f64() * 1e3
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
