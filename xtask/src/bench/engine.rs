//! Benchmark of the run engine (lockgate-engine): what one scheduling decision costs for large
//! runs. `lockgate run` keeps one engine for the whole run; the server restores it from the job
//! rows at every scheduling pass, so both the incremental cost (a job finished, advance) and the
//! restore-and-advance cost matter. Compared with plain bookkeeping of the same graph (a loop that
//! only tracks which jobs are done, no conditions), the baseline any scheduler pays.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use lockgate_engine::{Decision, Engine, Graph, JobNode, JobState, StageNode, TaskResult};

/// `stages` stages in a chain, each with `width` jobs: a fan-out of `width - 1` jobs after the
/// stage's first job, each reading an output of it in a `$[ ]` variable and a condition.
fn graph(stages: usize, width: usize) -> Graph {
    let mut graph = Graph::default();
    for stage in 0..stages {
        graph.stages.push(StageNode {
            name: format!("S{stage}"),
            depends_on: if stage == 0 {
                Vec::new()
            } else {
                vec![format!("S{}", stage - 1)]
            },
            condition: None,
            variables: vec![("mode".into(), "ci".into())],
            ..StageNode::default()
        });
        for job in 0..width {
            let first = job == 0;
            graph.jobs.push(JobNode {
                stage,
                name: format!("J{job}"),
                base_name: format!("J{job}"),
                depends_on: if first { Vec::new() } else { vec!["J0".into()] },
                condition: (!first).then(|| {
                    "and(succeeded(), eq(dependencies.J0.outputs['s.v'], 'ok'))".to_string()
                }),
                variables: if first {
                    Vec::new()
                } else {
                    vec![("got".into(), "$[ dependencies.J0.outputs['s.v'] ]".into())]
                },
                ..JobNode::default()
            });
        }
    }
    graph
}

/// Plays a whole run: every started job finishes at once with an output. Returns the decisions.
fn play(graph: Graph) -> usize {
    let mut engine = Engine::new(graph, vec![("Build.Reason".into(), "Manual".into())]);
    let mut decisions = engine.advance();
    let mut count = 0;
    while !engine.is_finished() {
        count += decisions.len();
        let started: Vec<usize> = decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Start { job, .. } => Some(*job),
                _ => None,
            })
            .collect();
        assert!(!started.is_empty(), "the run is stuck");
        decisions = Vec::new();
        for job in started {
            engine.job_started(job);
            let outputs = BTreeMap::from([("s.v".to_string(), "ok".to_string())]);
            engine.job_finished(job, TaskResult::Succeeded, outputs);
            decisions.extend(engine.advance());
        }
    }
    count + decisions.len()
}

/// The same run tracked by plain bookkeeping: a job starts once the jobs it waits for are done.
fn baseline(graph: &Graph) -> usize {
    let mut done = vec![false; graph.jobs.len()];
    let mut stage_done = vec![false; graph.stages.len()];
    let mut started = 0;
    while !done.iter().all(|d| *d) {
        for job in 0..graph.jobs.len() {
            let node = &graph.jobs[job];
            let stage_ready = node.stage == 0 || stage_done[node.stage - 1];
            let deps_done = node.depends_on.iter().all(|base| {
                graph
                    .jobs
                    .iter()
                    .enumerate()
                    .filter(|(_, j)| j.stage == node.stage && &j.base_name == base)
                    .all(|(i, _)| done[i])
            });
            if !done[job] && stage_ready && deps_done {
                done[job] = true;
                started += 1;
            }
        }
        for (stage, finished) in stage_done.iter_mut().enumerate() {
            *finished = graph
                .jobs
                .iter()
                .enumerate()
                .filter(|(_, j)| j.stage == stage)
                .all(|(i, _)| done[i]);
        }
    }
    started
}

fn best_of<T>(rounds: usize, mut work: impl FnMut() -> T) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let start = Instant::now();
        black_box(work());
        best = best.min(start.elapsed().as_secs_f64());
    }
    best
}

pub fn run() -> anyhow::Result<()> {
    println!("engine (best of 5 each)");
    for (stages, width) in [(10, 10), (10, 100), (20, 50)] {
        let jobs = stages * width;
        let engine = best_of(5, || play(graph(stages, width)));
        let plain = best_of(5, || baseline(&graph(stages, width)));
        // A server pass: restore from the job states half way through, then advance.
        let half: Vec<JobState> = (0..jobs)
            .map(|i| {
                if i < jobs / 2 {
                    JobState::Done {
                        result: TaskResult::Succeeded,
                        outputs: BTreeMap::from([("s.v".to_string(), "ok".to_string())]),
                    }
                } else {
                    JobState::Waiting
                }
            })
            .collect();
        let restore = best_of(5, || {
            let mut engine = Engine::restore(graph(stages, width), Vec::new(), half.clone(), false);
            engine.advance().len()
        });
        println!(
            "  {jobs} jobs ({stages} stages x {width}): whole run {:.1} ms ({:.1} us per job), \
             plain bookkeeping {:.1} ms; one server pass (restore + advance at half way) {:.2} ms",
            engine * 1e3,
            engine * 1e6 / jobs as f64,
            plain * 1e3,
            restore * 1e3
        );
    }
    Ok(())
}
