//! Benchmark of releases (issue 12): the time from the last approval of a stage to the first step
//! of its deployment job, with the server and its built-in agent in this process. The deployment
//! stage waits for an approval check on its environment (with branch control and an exclusive
//! lock, so the whole chain of checks is measured); each round pushes, waits until the
//! approval is asked for, approves through the HTTP API, and measures until a step of the
//! deployment job has started. The approval call's own latency is reported next to it.
//!
//! Then "what is where" at scale: 50 pipelines deploying to 10 environments, 10,000 deployments in
//! the ledger, and the latency of `GET /api/v1/pipelines/{id}/environments` (what the pipeline
//! page shows) over 500 requests spread over the pipelines.

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
    approval_to_step(&runtime)?;
    what_is_where(&runtime)
}

fn what_is_where(runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let bench = start(runtime, false)?;
    let (pipelines, environments, deployments) = (50usize, 10usize, 10_000usize);
    let started = Instant::now();
    let ids = runtime.block_on(async {
        let store = &bench.state.store;
        let project = store
            .project_by_name("b")
            .await?
            .ok_or_else(|| anyhow::anyhow!("no project"))?;
        let first = store
            .pipeline_by_id(bench.pipeline_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no pipeline"))?;
        let mut ids = vec![first.id];
        for p in 1..pipelines {
            let pipeline = store
                .create_pipeline(
                    project.id,
                    first.repository_id,
                    &format!("app-{p}"),
                    "azure-pipelines.yml",
                )
                .await?;
            ids.push(pipeline.id);
        }
        let mut envs = Vec::new();
        for e in 0..environments {
            envs.push(
                store
                    .ensure_environment(project.id, &format!("env{e}"), "bench")
                    .await?,
            );
        }
        for i in 0..deployments {
            let pipeline_id = ids[i % pipelines];
            let environment = &envs[(i / pipelines) % environments];
            let run = lockgate_store::NewRun {
                pipeline_id,
                name: format!("20261207.{i}"),
                title: "change".into(),
                status: "completed".into(),
                result: Some("succeeded".into()),
                reason: "push".into(),
                source_branch: "refs/heads/main".into(),
                source_commit: format!("{i:040x}"),
                requested_by: "bench".into(),
                yaml: "steps: []".into(),
                diagnostics: "[]".into(),
                parameters: "[]".into(),
            };
            let job = lockgate_store::NewJob {
                stage_name: "Deploy".into(),
                name: "ship".into(),
                display_name: "ship".into(),
                depends_on: "[]".into(),
                spec: "{}".into(),
                status: "running".into(),
                environment: Some(environment.name.clone()),
                agent_os: None,
                ..Default::default()
            };
            let run = store.create_run(&run, std::slice::from_ref(&job)).await?;
            let job = store
                .jobs_of_run(run.id)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| anyhow::anyhow!("no job"))?;
            store
                .start_deployment(&lockgate_store::NewDeployment {
                    environment_id: environment.id,
                    run_id: run.id,
                    job_id: job.id,
                    attempt: 1,
                    pipeline_id,
                    stage_name: "Deploy".into(),
                    job_name: "ship".into(),
                    resource_name: None,
                    source_commit: run.source_commit.clone(),
                    source_branch: run.source_branch.clone(),
                    artifacts: "[]".into(),
                    variables: "{}".into(),
                    requested_by: "bench".into(),
                })
                .await?;
            store
                .set_job_status(job.id, "completed", Some("succeeded"))
                .await?;
        }
        anyhow::Ok(ids)
    })?;
    println!(
        "stored {deployments} deployments of {pipelines} pipelines to {environments} environments in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut samples = Vec::new();
    for round in 0..500 {
        let id = ids[round % ids.len()];
        let t = Instant::now();
        let versions: Vec<serde_json::Value> = bench
            .client
            .get_json(&format!("/api/v1/pipelines/{id}/environments"))?;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            versions.len() == environments,
            "pipeline {id} shows {} environments",
            versions.len()
        );
    }
    println!(
        "what is where (GET /api/v1/pipelines/{{id}}/environments), {deployments} deployments: p50 {:.2} ms, p99 {:.2} ms (target p99 < 50)",
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.99)
    );
    Ok(())
}

fn approval_to_step(runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let bench = start(runtime, true)?;
    let _: serde_json::Value = bench.client.put_json(
        "/api/v1/projects/b/environments/prod/checks/approval",
        &serde_json::json!({"approvers": ["bench"], "allowRequester": true}),
    )?;
    // Every check a production environment would have: branch control before the approval, the
    // exclusive lock after it (the stage asks for the lock once approved: one more pass).
    let _: serde_json::Value = bench.client.put_json(
        "/api/v1/projects/b/environments/prod/checks/branch-control",
        &serde_json::json!({"allowedBranches": ["refs/heads/main"]}),
    )?;
    let _: serde_json::Value = bench.client.put_json(
        "/api/v1/projects/b/environments/prod/checks/exclusive-lock",
        &serde_json::json!({}),
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
