//! Benchmark of releases (issue 12): the time from the last approval of a stage to the first step
//! of its deployment job, with the server and its built-in agent in this process. The deployment
//! stage waits for an approval check on its environment; each round pushes, waits until the
//! approval is asked for, approves through the HTTP API, and measures until a step of the
//! deployment job has started. The approval call's own latency is reported next to it.

use std::time::{Duration, Instant};

use super::server::{git, percentile, start};

const PIPELINE: &str = "\
appendCommitMessageToRunName: false
stages:
- stage: Build
  jobs:
  - job: B
    steps:
    - checkout: none
    - script: echo built
- stage: Deploy
  jobs:
  - deployment: Ship
    environment: prod
    strategy:
      runOnce:
        deploy:
          steps:
          - script: echo shipped
";

pub fn run() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let bench = start(&runtime, true)?;
    let _: serde_json::Value = bench.client.put_json(
        "/api/v1/projects/b/environments/prod/checks/approval",
        &serde_json::json!({"approvers": ["bench"], "allowRequester": true}),
    )?;
    let work = tempfile::tempdir()?;
    git(work.path(), &["init", "-q"])?;
    std::fs::write(work.path().join("azure-pipelines.yml"), PIPELINE)?;
    let rounds = 20;
    let mut to_step = Vec::new();
    let mut call = Vec::new();
    for round in 0..rounds {
        std::fs::write(work.path().join("change.txt"), round.to_string())?;
        git(work.path(), &["add", "."])?;
        git(work.path(), &["commit", "-q", "-m", "change"])?;
        git(
            work.path(),
            &["push", "-q", &bench.push_url, "HEAD:refs/heads/main"],
        )?;
        let store = &bench.state.store;
        let deadline = Instant::now() + Duration::from_secs(60);
        // Wait for the run of this push and its pending approval.
        let run = runtime.block_on(async {
            loop {
                let filter = lockgate_store::RunFilter {
                    pipeline_id: Some(bench.pipeline_id),
                    limit: 1,
                    ..Default::default()
                };
                if let Some(run) = store.list_runs(&filter).await?.into_iter().next()
                    && run.number == round + 1
                    && store
                        .approvals_of_run(run.id)
                        .await?
                        .iter()
                        .any(|a| a.status == "pending")
                {
                    return anyhow::Ok(run);
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "no approval asked for push {round}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })?;
        let approved = Instant::now();
        let _: serde_json::Value = bench.client.post_json(
            &format!("/api/v1/runs/{}/approvals", run.id),
            &serde_json::json!({"decision": "approve"}),
        )?;
        call.push(approved.elapsed().as_secs_f64() * 1000.0);
        let latency = runtime.block_on(async {
            loop {
                let jobs = store.jobs_of_run(run.id).await?;
                let ship = jobs.iter().find(|j| j.stage_name == "Deploy").map(|j| j.id);
                let steps = store.steps_of_run(run.id).await?;
                if steps.iter().any(|s| Some(s.job_id) == ship) {
                    return anyhow::Ok(approved.elapsed());
                }
                anyhow::ensure!(Instant::now() < deadline, "the deployment did not start");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })?;
        to_step.push(latency.as_secs_f64() * 1000.0);
        runtime.block_on(async {
            loop {
                let done = store
                    .run_by_id(run.id)
                    .await?
                    .is_some_and(|r| r.status == "completed");
                if done {
                    return anyhow::Ok(());
                }
                anyhow::ensure!(Instant::now() < deadline, "the run did not finish");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })?;
    }
    println!(
        "releases: last approval -> deployment's first step ({rounds} runs, built-in agent): p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms (target p50 < 100)",
        percentile(&mut to_step, 0.5),
        percentile(&mut to_step, 0.9),
        percentile(&mut to_step, 1.0)
    );
    println!(
        "  the approval call itself (HTTP, decision stored, run advanced): p50 {:.1} ms, p90 {:.1} ms",
        percentile(&mut call, 0.5),
        percentile(&mut call, 0.9)
    );
    Ok(())
}
