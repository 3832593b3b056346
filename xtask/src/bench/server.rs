//! Benchmark of the server: push-to-first-step latency with the built-in agent, the runs list API with
//! 100,000 runs stored, log ingest through the agent protocol, and the idle memory of `lockgate up`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockgate_agent::ServerClient;
use lockgate_agent::runner_executor::RunnerExecutor;
use lockgate_protocol::agent::{JobEvent, JobLease};
use lockgate_protocol::api;
use lockgate_server::{ServerConfig, auth};
use lockgate_store::{NewJob, NewRun, Store};

pub fn run() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    push_to_first_step(&runtime)?;
    runs_list(&runtime)?;
    log_ingest(&runtime)?;
    idle_memory()?;
    Ok(())
}

pub(super) fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index.min(samples.len() - 1)]
}

pub(super) fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=Bench",
            "-c",
            "user.email=bench@localhost",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// A server with one user, token, project `b`, repository `app` and pipeline `ci`.
pub(super) struct Bench {
    pub(super) state: lockgate_server::AppState,
    pub(super) client: ServerClient,
    pub(super) push_url: String,
    pub(super) pipeline_id: i64,
    _dir: tempfile::TempDir,
}

pub(super) fn start(
    runtime: &tokio::runtime::Runtime,
    builtin_agent: bool,
) -> anyhow::Result<Bench> {
    let dir = tempfile::tempdir()?;
    let mut config = ServerConfig::new(
        dir.path().join("data"),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    );
    config.builtin_agent = builtin_agent;
    let (state, url, token) = runtime.block_on(async {
        let server = lockgate_server::start(config, Arc::new(RunnerExecutor::default())).await?;
        let user = server.state.store.create_user("bench", "x", true).await?;
        let token = auth::random_token("lgp_");
        server
            .state
            .store
            .create_access_token(user.id, "t", &auth::token_hash(&token), "read,write,admin")
            .await?;
        let state = server.state.clone();
        let url = server.url.clone();
        std::mem::forget(server);
        anyhow::Ok((state, url, token))
    })?;
    let client = ServerClient::new(&url, &token);
    let _: api::Project =
        client.post_json("/api/v1/projects", &api::CreateProject { name: "b".into() })?;
    let repo: api::Repository = client.post_json(
        "/api/v1/projects/b/repositories",
        &api::CreateRepository { name: "app".into() },
    )?;
    let pipeline: api::Pipeline = client.post_json(
        "/api/v1/projects/b/pipelines",
        &api::CreatePipeline {
            name: "ci".into(),
            repository: "app".into(),
            yaml_path: "azure-pipelines.yml".into(),
        },
    )?;
    let push_url = repo
        .clone_url
        .replace("http://", &format!("http://bench:{token}@"));
    Ok(Bench {
        state,
        client,
        push_url,
        pipeline_id: pipeline.id,
        _dir: dir,
    })
}

fn push_to_first_step(runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let bench = start(runtime, true)?;
    let work = tempfile::tempdir()?;
    git(work.path(), &["init", "-q"])?;
    std::fs::write(
        work.path().join("azure-pipelines.yml"),
        "steps:\n- checkout: none\n- script: echo hello\n",
    )?;
    let rounds = 20;
    let mut samples = Vec::new();
    for round in 0..rounds {
        std::fs::write(work.path().join("change.txt"), round.to_string())?;
        git(work.path(), &["add", "."])?;
        git(work.path(), &["commit", "-q", "-m", "change"])?;
        git(
            work.path(),
            &["push", "-q", &bench.push_url, "HEAD:refs/heads/main"],
        )?;
        let pushed = Instant::now();
        let deadline = pushed + Duration::from_secs(30);
        let latency = runtime.block_on(async {
            loop {
                let filter = lockgate_store::RunFilter {
                    pipeline_id: Some(bench.pipeline_id),
                    limit: 1,
                    ..Default::default()
                };
                let runs = bench.state.store.list_runs(&filter).await?;
                if let Some(run) = runs.first().filter(|r| r.number == round + 1)
                    && !bench.state.store.steps_of_run(run.id).await?.is_empty()
                {
                    return anyhow::Ok(pushed.elapsed());
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "no step started for push {round}"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })?;
        samples.push(latency.as_secs_f64() * 1000.0);
        // Let the run finish so each push starts from an idle agent.
        runtime.block_on(async {
            loop {
                let filter = lockgate_store::RunFilter {
                    pipeline_id: Some(bench.pipeline_id),
                    limit: 1,
                    ..Default::default()
                };
                if bench
                    .state
                    .store
                    .list_runs(&filter)
                    .await?
                    .first()
                    .is_some_and(|r| r.status == "completed")
                {
                    return anyhow::Ok(());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })?;
    }
    println!(
        "push -> first step running ({rounds} pushes, built-in agent): p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.9),
        percentile(&mut samples, 1.0)
    );
    Ok(())
}

fn runs_list(runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let bench = start(runtime, false)?;
    let count = 100_000;
    let started = Instant::now();
    runtime.block_on(async {
        let store: &Store = &bench.state.store;
        for i in 0..count {
            let run = NewRun {
                pipeline_id: bench.pipeline_id,
                name: format!("20261123.{i}"),
                title: "change".into(),
                status: "completed".into(),
                result: Some(if i % 10 == 0 { "failed" } else { "succeeded" }.into()),
                reason: "push".into(),
                source_branch: if i % 3 == 0 {
                    "refs/heads/dev".into()
                } else {
                    "refs/heads/main".into()
                },
                source_commit: format!("{i:040x}"),
                requested_by: "bench".into(),
                yaml: "steps: []".into(),
                diagnostics: "[]".into(),
                parameters: "[]".into(),
            };
            let job = NewJob {
                stage_name: "__default".into(),
                name: "__default".into(),
                display_name: "job".into(),
                depends_on: "[]".into(),
                spec: "{}".into(),
                status: "completed".into(),
                environment: None,
                agent_os: None,
                ..Default::default()
            };
            store.create_run(&run, std::slice::from_ref(&job)).await?;
        }
        anyhow::Ok(())
    })?;
    println!(
        "stored {count} runs with one job each in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for (label, query) in [
        ("newest 50", "/api/v1/runs?limit=50"),
        (
            "project, branch dev, 50",
            "/api/v1/runs?project=b&branch=dev&limit=50",
        ),
        ("status failed, 50", "/api/v1/runs?status=failed&limit=50"),
        ("page before id 50000", "/api/v1/runs?before=50000&limit=50"),
    ] {
        let mut samples = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            let runs: Vec<api::Run> = bench.client.get_json(query)?;
            samples.push(t.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(runs.len() == 50, "{query} returned {}", runs.len());
        }
        println!(
            "GET runs list ({label}), 100k runs: p50 {:.2} ms, p99 {:.2} ms",
            percentile(&mut samples, 0.5),
            percentile(&mut samples, 0.99)
        );
    }
    Ok(())
}

fn log_ingest(runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let bench = start(runtime, false)?;
    let agent_token = auth::random_token("lga_");
    runtime.block_on(
        bench
            .state
            .store
            .register_agent("bench-agent", &auth::token_hash(&agent_token)),
    )?;
    let work = tempfile::tempdir()?;
    git(work.path(), &["init", "-q"])?;
    std::fs::write(
        work.path().join("azure-pipelines.yml"),
        "steps:\n- script: echo hi\n",
    )?;
    git(work.path(), &["add", "."])?;
    git(work.path(), &["commit", "-q", "-m", "one"])?;
    let _: api::Run = {
        git(
            work.path(),
            &["push", "-q", &bench.push_url, "HEAD:refs/heads/main"],
        )?;
        // The push queues the run; wait for its job.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let runs: Vec<api::Run> = bench.client.get_json("/api/v1/runs?limit=1")?;
            if let Some(run) = runs.into_iter().next() {
                break run;
            }
            anyhow::ensure!(Instant::now() < deadline, "no run queued");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let agent = ServerClient::new(bench.client.base_url(), &agent_token);
    let lease: JobLease = agent
        .lease(5)?
        .ok_or_else(|| anyhow::anyhow!("no job to lease"))?;
    let batches = 200;
    let per_batch = 1000;
    let line = "2026-11-23T18:00:00Z info compiling crate lockgate-server v0.1.0 (/work/main/crates/lockgate-server)";
    let started = Instant::now();
    for batch in 0..batches {
        let lines = (0..per_batch)
            .map(|i| format!("{line} #{}", batch * per_batch + i))
            .collect();
        agent.send_events(
            &lease,
            vec![JobEvent::Log {
                step: Some(1),
                lines,
            }],
        )?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let total = (batches * per_batch) as f64;
    let bytes = total * (line.len() as f64 + 8.0);
    let stored: i64 = runtime.block_on(async {
        let chunks = bench.state.store.log_chunks(lease.job_id).await?;
        anyhow::Ok(chunks.iter().map(|c| c.compressed.len() as i64).sum())
    })?;
    println!(
        "log ingest: {} lines in {} batches of {per_batch}: {:.0} lines/s, {:.1} MB/s; stored {:.1} MB compressed from {:.1} MB",
        total as u64,
        batches,
        total / seconds,
        bytes / seconds / 1e6,
        stored as f64 / 1e6,
        bytes / 1e6
    );
    agent.finish(
        &lease,
        "succeeded",
        &Default::default(),
        &Default::default(),
    )?;
    Ok(())
}

fn idle_memory() -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--quiet", "--release", "--package", "lockgate"])
        .status()?;
    anyhow::ensure!(status.success(), "cannot build the lockgate binary");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let binary = Path::new(&target).join("release/lockgate");
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(&binary)
        .args(["up", "--no-demo", "--port", "0", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    use std::io::BufRead;
    for line in std::io::BufReader::new(stdout).lines() {
        if line?.starts_with("Press Ctrl-C") {
            break;
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
    let _ = child.kill();
    let _ = child.wait();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or("VmRSS: ?")
        .to_string();
    println!(
        "idle `lockgate up --no-demo` (server + built-in agent waiting for work): {}",
        rss.replace("VmRSS:", "RSS")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}
