//! `lockgate run --stage NAME` / `--job NAME`: run part of a pipeline. The jobs left out do not run; what
//! the selected jobs read from them (results for conditions, output variables) comes from the newest
//! earlier local run of the same pipeline that ran them, recorded in `<run>/outcome.json`. A dependency
//! that no earlier run recorded counts as Succeeded with no outputs, and the run says so.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use lockgate_pipeline::plan::Plan;
use lockgate_runner::events::{JobId, TaskResult};
use lockgate_runner::job::JobOutcome;
use lockgate_runner::orchestrator::{RunOutcome, Selection};

use crate::UsageError;

/// The file a finished local run leaves for later partial runs.
const OUTCOME_FILE: &str = "outcome.json";

/// How a name on the command line reads: stage and job names are case-insensitive, as in Azure Pipelines.
fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// A job as the user names it: `Stage.Job`, or `Job` for the implied stage.
pub fn label(stage: &str, job: &str) -> String {
    if stage.is_empty() || stage == "__default" {
        job.to_string()
    } else {
        format!("{stage}.{job}")
    }
}

/// The jobs that `--stage` and `--job` name (their union). A name that matches nothing is a usage error
/// listing what the pipeline has. A `--job` name matches a job's name or, for matrix legs and parallel
/// slices, its base name (every leg runs).
pub fn select(
    plan: &Plan,
    stages: &[String],
    jobs: &[String],
) -> Result<BTreeSet<JobId>, UsageError> {
    let mut selected = BTreeSet::new();
    let id = |stage: &str, job: &str| JobId {
        stage: stage.to_string(),
        job: job.to_string(),
    };
    for name in stages {
        let Some(stage) = plan.stages.iter().find(|s| same(&s.name, name)) else {
            let known: Vec<&str> = plan
                .stages
                .iter()
                .map(|s| s.name.as_str())
                .filter(|s| *s != "__default")
                .collect();
            return Err(UsageError(if known.is_empty() {
                format!("--stage {name}: the pipeline has no stages (use --job)")
            } else {
                format!(
                    "--stage {name}: no such stage; the pipeline's stages are: {}",
                    known.join(", ")
                )
            }));
        };
        for job in &stage.jobs {
            selected.insert(id(&stage.name, &job.name));
        }
    }
    for name in jobs {
        let (stage_part, job_part) = match name.split_once('.') {
            Some((stage, job)) if plan.stages.iter().any(|s| same(&s.name, stage)) => {
                (Some(stage), job)
            }
            _ => (None, name.as_str()),
        };
        let mut found = false;
        for stage in &plan.stages {
            if stage_part.is_some_and(|s| !same(&stage.name, s)) {
                continue;
            }
            for job in &stage.jobs {
                if same(&job.name, job_part) || same(&job.base_name, job_part) {
                    selected.insert(id(&stage.name, &job.name));
                    found = true;
                }
            }
        }
        if !found {
            let known: Vec<String> = plan
                .stages
                .iter()
                .flat_map(|s| s.jobs.iter().map(|j| label(&s.name, &j.base_name)))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            return Err(UsageError(format!(
                "--job {name}: no such job; the pipeline's jobs are: {}",
                known.join(", ")
            )));
        }
    }
    Ok(selected)
}

/// What earlier runs of `pipeline` under `runs` left, newest first: for each job the newest run that
/// recorded it, with that run's number. Unreadable or foreign files are passed over.
pub fn previous_outcomes(runs: &Path, pipeline: &str) -> BTreeMap<JobId, (u64, JobOutcome)> {
    let mut numbers: Vec<u64> = std::fs::read_dir(runs)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u64>().ok())
        .collect();
    numbers.sort_unstable_by(|a, b| b.cmp(a));
    let mut found = BTreeMap::new();
    for number in numbers {
        let path = runs.join(number.to_string()).join(OUTCOME_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if value.get("pipeline").and_then(|p| p.as_str()) != Some(pipeline) {
            continue;
        }
        for job in value
            .get("jobs")
            .and_then(|j| j.as_array())
            .into_iter()
            .flatten()
        {
            let text = |key: &str| job.get(key).and_then(|v| v.as_str());
            let (Some(stage), Some(name), Some(result)) = (
                text("stage"),
                text("job"),
                text("result").and_then(TaskResult::parse),
            ) else {
                continue;
            };
            let outputs = job
                .get("outputs")
                .and_then(|o| o.as_object())
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            let id = JobId {
                stage: stage.to_string(),
                job: name.to_string(),
            };
            found.entry(id).or_insert((
                number,
                JobOutcome {
                    result,
                    outputs,
                    secret_outputs: BTreeSet::new(),
                    seconds: 0.0,
                },
            ));
        }
    }
    found
}

/// Builds the selection for the orchestrator and the notes that say where each left-out direct
/// dependency of a selected job comes from.
pub fn selection(
    plan: &Plan,
    jobs: BTreeSet<JobId>,
    previous: BTreeMap<JobId, (u64, JobOutcome)>,
) -> (Selection, Vec<String>) {
    let mut notes = Vec::new();
    let mut noted = BTreeSet::new();
    for stage in &plan.stages {
        for job in &stage.jobs {
            if !jobs.contains(&JobId {
                stage: stage.name.clone(),
                job: job.name.clone(),
            }) {
                continue;
            }
            // Jobs of the same stage it depends on, and every job of the stages its stage depends on.
            let same_stage = stage
                .jobs
                .iter()
                .filter(|other| job.depends_on.iter().any(|d| same(d, &other.base_name)))
                .map(|other| (stage.name.as_str(), other.name.as_str()));
            let other_stages = plan
                .stages
                .iter()
                .filter(|other| stage.depends_on.iter().any(|d| same(d, &other.name)))
                .flat_map(|other| {
                    other
                        .jobs
                        .iter()
                        .map(move |j| (other.name.as_str(), j.name.as_str()))
                });
            for (dep_stage, dep_job) in same_stage.chain(other_stages) {
                let id = JobId {
                    stage: dep_stage.to_string(),
                    job: dep_job.to_string(),
                };
                if jobs.contains(&id) || !noted.insert(id.clone()) {
                    continue;
                }
                let name = label(dep_stage, dep_job);
                notes.push(match previous.get(&id) {
                    Some((number, outcome)) => format!(
                        "note: `{name}` does not run; its result ({}) and outputs come from local run {number}",
                        outcome.result.as_str()
                    ),
                    None => format!(
                        "note: `{name}` does not run and no earlier local run of this pipeline ran it; it counts as Succeeded with no outputs"
                    ),
                });
            }
        }
    }
    let previous = previous
        .into_iter()
        .map(|(id, (_, outcome))| (id, outcome))
        .collect();
    (Selection { jobs, previous }, notes)
}

/// Records what each job of a finished run left (result and output variables) for later partial runs.
/// The file is private to the user (0600): output variables may hold values a step marked secret.
pub fn save_outcome(run_dir: &Path, pipeline: &str, outcome: &RunOutcome) -> std::io::Result<()> {
    let jobs: Vec<serde_json::Value> = outcome
        .jobs
        .iter()
        .map(|job| {
            serde_json::json!({
                "stage": job.id.stage,
                "job": job.id.job,
                "result": job.result.as_str(),
                "outputs": job.outputs,
            })
        })
        .collect();
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "pipeline": pipeline,
        "jobs": jobs,
    }))?;
    let path = run_dir.join(OUTCOME_FILE);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())
}
