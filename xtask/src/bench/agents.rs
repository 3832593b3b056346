//! Benchmark of remote agents (issue 13): real `lockgate agent run` processes (the release binary,
//! without the sandbox, so that job start-up cost does not hide dispatch) long-poll a server in this
//! process over HTTP on 127.0.0.1. Measured: the latency from queuing a one-job run to the job's lease
//! (the job row's `started_at - queued_at`, both stamped by the server) with 1, 10 and 100 idle agents;
//! jobs dispatched per minute when 100 agents run trivial jobs; and the resident memory (`VmRSS`) of an
//! idle agent process, fresh and after it ran jobs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lockgate_protocol::api;

use super::server::{Bench, git, percentile, start};

/// Latency samples per agent count.
const ROUNDS: usize = 40;
/// Parallel jobs per run, and runs, of the throughput round.
const JOBS_PER_RUN: usize = 50;
const RUNS: usize = 20;

/// An agent process, stopped when dropped.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run() -> anyhow::Result<()> {
    let binary = release_binary()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let bench = start(&runtime, false)?;
    let work = tempfile::tempdir()?;
    let agents_dir = tempfile::tempdir()?;
    git(work.path(), &["init", "-q"])?;
    let mut yaml = String::from("trigger: none\npool: bench\njobs:\n");
    for job in 0..JOBS_PER_RUN {
        yaml.push_str(&format!(
            "- job: j{job}\n  steps:\n  - checkout: none\n  - script: 'true'\n"
        ));
    }
    // Two pipelines in one repository: one job (latency) and many (throughput).
    std::fs::write(
        work.path().join("one.yml"),
        "trigger: none\npool: bench\nsteps:\n- checkout: none\n- script: 'true'\n",
    )?;
    std::fs::write(work.path().join("many.yml"), yaml)?;
    std::fs::write(
        work.path().join("azure-pipelines.yml"),
        "trigger: none\nsteps: []\n",
    )?;
    git(work.path(), &["add", "."])?;
    git(work.path(), &["commit", "-q", "-m", "bench"])?;
    git(
        work.path(),
        &["push", "-q", &bench.push_url, "HEAD:refs/heads/main"],
    )?;
    let one = create_pipeline(&bench, "one", "one.yml")?;
    let many = create_pipeline(&bench, "many", "many.yml")?;

    println!(
        "agents: real `lockgate agent run --no-sandbox` processes (release build) long-polling a server on 127.0.0.1"
    );
    println!("| idle agents | queue-to-lease p50 | p99 | max |");
    println!("|---|---|---|---|");
    let mut agents: Vec<AgentProcess> = Vec::new();
    let mut fresh_rss = None;
    for count in [1usize, 10, 100] {
        while agents.len() < count {
            agents.push(spawn_agent(
                &bench,
                &binary,
                agents_dir.path(),
                agents.len(),
            )?);
        }
        wait_until_connected(&runtime, &bench, count)?;
        if fresh_rss.is_none() {
            std::thread::sleep(Duration::from_secs(2));
            fresh_rss = Some(rss_kib(agents[0].0.id())?);
        }
        let mut samples = Vec::new();
        for _ in 0..ROUNDS {
            let run = queue(&bench, one)?;
            let jobs = wait_for_completion(&runtime, &bench, &[run], Duration::from_millis(10))?;
            let job = &jobs[0];
            anyhow::ensure!(
                job.result.as_deref() == Some("succeeded"),
                "the bench job failed: {job:?}"
            );
            let started = job
                .started_at
                .ok_or_else(|| anyhow::anyhow!("the job has no start time"))?;
            samples.push((started - job.queued_at) as f64);
            // Let the agent that ran it ask for work again.
            std::thread::sleep(Duration::from_millis(50));
        }
        let max = samples.iter().copied().fold(0.0, f64::max);
        println!(
            "| {count} | {:.0} ms | {:.0} ms | {max:.0} ms |",
            percentile(&mut samples, 0.5),
            percentile(&mut samples, 0.99)
        );
    }

    let started = Instant::now();
    let runs: Vec<i64> = (0..RUNS)
        .map(|_| queue(&bench, many))
        .collect::<anyhow::Result<_>>()?;
    let jobs = wait_for_completion(&runtime, &bench, &runs, Duration::from_millis(100))?;
    let elapsed = started.elapsed().as_secs_f64();
    let failed = jobs
        .iter()
        .filter(|j| j.result.as_deref() != Some("succeeded"))
        .count();
    anyhow::ensure!(failed == 0, "{failed} bench jobs failed");
    let agents_used = jobs
        .iter()
        .filter_map(|j| j.agent_name.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    println!(
        "100 agents, {} trivial jobs ({RUNS} runs of {JOBS_PER_RUN} parallel jobs; `script: 'true'`): \
         {:.0} jobs/min ({elapsed:.1} s; {agents_used} agents ran jobs)",
        jobs.len(),
        jobs.len() as f64 / elapsed * 60.0
    );
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(agents[0].0.id())?;
    println!(
        "idle agent RSS (VmRSS of `lockgate agent run`): {} KiB fresh, {after} KiB after running jobs",
        fresh_rss.unwrap_or_default()
    );
    drop(agents);
    Ok(())
}

/// The release `lockgate` binary, built first.
fn release_binary() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--quiet", "--release", "--package", "lockgate"])
        .status()?;
    anyhow::ensure!(status.success(), "cannot build the lockgate binary");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    Ok(std::path::absolute(
        Path::new(&target).join("release/lockgate"),
    )?)
}

fn create_pipeline(bench: &Bench, name: &str, yaml_path: &str) -> anyhow::Result<i64> {
    let pipeline: api::Pipeline = bench.client.post_json(
        "/api/v1/projects/b/pipelines",
        &api::CreatePipeline {
            name: name.into(),
            repository: "app".into(),
            yaml_path: yaml_path.into(),
        },
    )?;
    Ok(pipeline.id)
}

/// Registers agent `bench-N` in pool `bench` (the protocol's registration, in this process) and
/// starts `lockgate agent run` on its folder.
fn spawn_agent(
    bench: &Bench,
    binary: &Path,
    root: &Path,
    number: usize,
) -> anyhow::Result<AgentProcess> {
    let registration: api::AgentRegistration = bench.client.post_json(
        "/api/v1/agents/registrations",
        &api::CreateAgentRegistration {
            pool: "bench".into(),
            ..Default::default()
        },
    )?;
    let dir = root.join(format!("bench-{number}"));
    lockgate_agent::remote::register(
        bench.client.base_url(),
        &registration.token,
        &lockgate_agent::remote::Placement::Pool("bench".into()),
        &format!("bench-{number}"),
        Default::default(),
        &dir,
    )
    .map_err(|e| anyhow::anyhow!("cannot register agent {number}: {e}"))?;
    let child = Command::new(binary)
        .args(["agent", "run", "--no-sandbox", "--work"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(AgentProcess(child))
}

/// Waits until `count` agents have reported their capabilities (each then long-polls for work).
fn wait_until_connected(
    runtime: &tokio::runtime::Runtime,
    bench: &Bench,
    count: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let agents = runtime.block_on(bench.state.store.list_agents())?;
        let connected = agents.iter().filter(|a| a.version.is_some()).count();
        if connected >= count {
            // Every agent's first lease request is on its way.
            std::thread::sleep(Duration::from_secs(1));
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {connected} of {count} agents connected"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn queue(bench: &Bench, pipeline: i64) -> anyhow::Result<i64> {
    let run: api::Run = bench.client.post_json(
        &format!("/api/v1/pipelines/{pipeline}/runs"),
        &api::QueueRun::default(),
    )?;
    Ok(run.id)
}

/// Waits until every job of `runs` has completed, looking every `poll`; returns them.
fn wait_for_completion(
    runtime: &tokio::runtime::Runtime,
    bench: &Bench,
    runs: &[i64],
    poll: Duration,
) -> anyhow::Result<Vec<lockgate_store::Job>> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let mut jobs = Vec::new();
        for run in runs {
            jobs.extend(runtime.block_on(bench.state.store.jobs_of_run(*run))?);
        }
        if !jobs.is_empty() && jobs.iter().all(|j| j.status == "completed") {
            return Ok(jobs);
        }
        anyhow::ensure!(Instant::now() < deadline, "the bench jobs never finished");
        std::thread::sleep(poll);
    }
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for process {pid}"))
}
