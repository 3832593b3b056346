//! Benchmark of job dispatch through the store: simulated agents (tokio tasks) lease the oldest queued
//! job and finish it, as fast as they can, until a queue of jobs is empty; jobs per minute with 100
//! and 500 agents, on SQLite and on PostgreSQL (a throwaway cluster unless `--database URL` is given),
//! with one store (one server's connection pool) or two (two servers on one database).

use std::time::Instant;

use lockgate_store::test_postgres::TestPostgres;
use lockgate_store::{NewJob, NewRun, Store, now_millis};

const JOBS: usize = 3000;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let database = args
        .iter()
        .position(|arg| arg == "--database")
        .and_then(|at| args.get(at + 1))
        .cloned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let sqlite = tempfile::tempdir()?;
        let postgres = match &database {
            Some(_) => None,
            None => Some(TestPostgres::start().await),
        };
        let url = database
            .clone()
            .or_else(|| postgres.as_ref().map(|p| p.url().to_string()))
            .unwrap_or_default();
        println!("dispatch: {JOBS} queued jobs, each leased and finished by a simulated agent");
        println!("| database | servers | agents | jobs/min |");
        println!("|---|---|---|---|");
        let sqlite_url = format!("sqlite://{}", sqlite.path().display());
        for (label, url, servers) in [
            ("SQLite", sqlite_url.as_str(), 1),
            ("PostgreSQL", url.as_str(), 1),
            ("PostgreSQL", url.as_str(), 2),
        ] {
            let mut stores = Vec::new();
            for _ in 0..servers {
                stores.push(Store::open(url, sqlite.path()).await?);
            }
            for agents in [100, 500] {
                let per_minute = measure(&stores, agents).await?;
                println!("| {label} | {servers} | {agents} | {per_minute:.0} |");
            }
        }
        drop(postgres);
        Ok(())
    })
}

/// Queues [`JOBS`] jobs in one run and lets `agents` agents, spread over `stores`, take them all.
async fn measure(stores: &[Store], agents: usize) -> anyhow::Result<f64> {
    let store = &stores[0];
    let name = format!("bench-{}", now_millis());
    let user = store.create_user(&name, "h", true).await?;
    let project = store.create_project(&name, user.id).await?;
    let repo = store.create_repository(project.id, "app").await?;
    let pipeline = store
        .create_pipeline(project.id, repo.id, "ci", "azure-pipelines.yml")
        .await?;
    let jobs: Vec<NewJob> = (0..JOBS)
        .map(|n| NewJob {
            stage_name: "build".into(),
            name: format!("j{n}"),
            display_name: format!("j{n}"),
            depends_on: "[]".into(),
            spec: "{}".into(),
            status: "queued".into(),
            ..NewJob::default()
        })
        .collect();
    let run = NewRun {
        pipeline_id: pipeline.id,
        name: "1".into(),
        status: "queued".into(),
        reason: "manual".into(),
        source_branch: "refs/heads/main".into(),
        source_commit: "abc".into(),
        requested_by: name.clone(),
        diagnostics: "[]".into(),
        parameters: "{}".into(),
        ..NewRun::default()
    };
    store.create_run(&run, &jobs).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for agent in 0..agents {
        let store = stores[agent % stores.len()].clone();
        tasks.push(tokio::spawn(async move {
            let lease = format!("lease-{agent}");
            let mut done = 0usize;
            while let Some(job) = store
                .lease_next_job(
                    &format!("agent-{agent}"),
                    "Linux",
                    &lease,
                    now_millis() + 60_000,
                )
                .await?
            {
                store
                    .finish_leased_job(job.id, &lease, "succeeded", "{}")
                    .await?;
                done += 1;
            }
            Ok::<_, lockgate_store::StoreError>(done)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    anyhow::ensure!(total == JOBS, "{total} of {JOBS} jobs were dispatched");
    Ok(total as f64 / started.elapsed().as_secs_f64() * 60.0)
}
