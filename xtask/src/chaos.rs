//! `cargo xtask chaos server --runs N [--seed S]`: queues runs with long, chatty steps and an artifact
//! on a real `lockgate up` (the debug binary), SIGKILLs the server at random moments (seeded, the seed
//! is printed), starts it again on the same data folder, and checks that nothing was lost: every run
//! completes, every step log line the server had stored before a kill is still stored, every artifact
//! a log reports as published is downloadable, and no step process outlived its server.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use lockgate_agent::ServerClient;
use lockgate_protocol::api;

/// Every step process of the chaos pipeline has this in its environment (a pipeline variable), so
/// leftovers are found in `/proc/*/environ`.
const MARKER: &str = "LGCHAOS_MARKER=on";

const PIPELINE: &str = "\
trigger: none
variables:
  LGCHAOS_MARKER: 'on'
steps:
- script: for i in $(seq 1 30); do echo \"chaos-line $i of run $(Build.BuildId)\"; sleep 0.05; done
  displayName: chatty
- script: mkdir -p out && echo \"payload of run $(Build.BuildId)\" > out/payload.txt
  displayName: build
- publish: out
  artifact: drop
- script: for i in $(seq 1 30); do echo \"chaos-tail $i of run $(Build.BuildId)\"; sleep 0.05; done
  displayName: tail
";

/// How long the runs get to finish after the last restart.
const FINISH_WITHIN: Duration = Duration::from_secs(45);

pub fn main(args: &[String]) -> anyhow::Result<u8> {
    let mut runs = 3usize;
    let mut seed = None;
    let mut rest = args.iter();
    match rest.next().map(String::as_str) {
        Some("server") => {}
        _ => anyhow::bail!("usage: cargo xtask chaos server --runs N [--seed S]"),
    }
    while let Some(arg) = rest.next() {
        let value = rest
            .next()
            .with_context(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--runs" => runs = value.parse().context("--runs takes a number")?,
            "--seed" => seed = Some(value.parse::<u64>().context("--seed takes a number")?),
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    println!("chaos server: {runs} run(s), seed {seed} (repeat with --seed {seed})");
    let binary = build_lockgate()?;
    let (passed, failed) = chaos(&binary, runs, seed)?;
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 { 0 } else { 1 })
}

/// SplitMix64: enough randomness for kill moments, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low))
    }
}

fn build_lockgate() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--quiet", "--package", "lockgate"])
        .status()?;
    anyhow::ensure!(status.success(), "cannot build the lockgate binary");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    Ok(std::path::absolute(
        Path::new(&target).join("debug/lockgate"),
    )?)
}

/// A running `lockgate up`, its URL and (on the first start) the admin token it printed.
struct Server {
    child: Child,
    url: String,
    token: Option<String>,
}

fn start(binary: &Path, data: &Path) -> anyhow::Result<Server> {
    let mut child = Command::new(binary)
        .args(["up", "--no-demo", "--port", "0", "--data-dir"])
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start lockgate up")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let (mut url, mut token) = (None, None);
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("Lockgate is running at ") {
            url = Some(rest.trim_end_matches('/').to_string());
        } else if let Some(rest) =
            line.strip_prefix("Access token for git and the CLI (shown once): ")
        {
            token = Some(rest.trim().to_string());
        } else if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let url = match url {
        Some(url) => url,
        None => {
            let _ = child.kill();
            let status = child.wait()?;
            anyhow::bail!("lockgate up did not start ({status}); is bubblewrap installed?");
        }
    };
    Ok(Server { child, url, token })
}

fn kill(server: &mut Server) {
    // SIGKILL: nothing is flushed, finished or cleaned up.
    let _ = server.child.kill();
    let _ = server.child.wait();
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=Chaos",
            "-c",
            "user.email=chaos@example.com",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Creates project `chaos` with repository `app` holding the pipeline; returns the pipeline id.
fn set_up(client: &ServerClient, token: &str, work: &Path) -> anyhow::Result<i64> {
    let _: api::Project = client.post_json(
        "/api/v1/projects",
        &api::CreateProject {
            name: "chaos".into(),
        },
    )?;
    let repo: api::Repository = client.post_json(
        "/api/v1/projects/chaos/repositories",
        &api::CreateRepository { name: "app".into() },
    )?;
    let pipeline: api::Pipeline = client.post_json(
        "/api/v1/projects/chaos/pipelines",
        &api::CreatePipeline {
            name: "chaos".into(),
            repository: "app".into(),
            yaml_path: "azure-pipelines.yml".into(),
        },
    )?;
    std::fs::write(work.join("azure-pipelines.yml"), PIPELINE)?;
    git(work, &["init", "-q", "-b", "main"])?;
    git(work, &["add", "."])?;
    git(work, &["commit", "-q", "-m", "chaos pipeline"])?;
    let push_url = repo
        .clone_url
        .replace("http://", &format!("http://admin:{token}@"));
    git(work, &["push", "-q", &push_url, "HEAD:refs/heads/main"])?;
    Ok(pipeline.id)
}

/// The step lines (`chaos-...`) of a run's log as the server stores them.
fn chaos_lines(client: &ServerClient, run: i64) -> anyhow::Result<Vec<String>> {
    let text = client.get_text(&format!("/api/v1/runs/{run}/logs"))?;
    Ok(text
        .lines()
        .filter(|line| line.contains("chaos-"))
        .map(str::to_string)
        .collect())
}

/// Process ids whose environment holds [`MARKER`] (step processes).
fn step_processes() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|var| var == MARKER.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// Waits up to `within` for the step processes to be gone; returns the ones left.
fn leftover_steps(within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    loop {
        let left = step_processes();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn chaos(binary: &Path, runs: usize, seed: u64) -> anyhow::Result<(usize, usize)> {
    let mut rng = Rng(seed);
    let temp = tempfile::tempdir()?;
    let data = temp.path().join("data");
    let work = temp.path().join("work");
    std::fs::create_dir_all(&work)?;
    let mut server = start(binary, &data)?;
    let token = server
        .token
        .clone()
        .context("the first start printed no access token")?;
    let mut client = ServerClient::new(&server.url, &token);
    let pipeline = set_up(&client, &token, &work)?;

    let mut failures: Vec<String> = Vec::new();
    // Checks that belong to no run (leftover step processes); each counts as one failure.
    let mut process_failures: Vec<String> = Vec::new();
    let mut queued: Vec<i64> = Vec::new();
    // Step lines of each run that the server had stored when it was killed.
    let mut stored_before_kill: Vec<(i64, Vec<String>)> = Vec::new();
    for round in 1..=runs {
        let run: api::Run = client.post_json(
            &format!("/api/v1/pipelines/{pipeline}/runs"),
            &api::QueueRun {
                branch: None,
                parameters: Vec::new(),
                variables: Default::default(),
            },
        )?;
        queued.push(run.id);
        let wait = rng.millis(100, 3000);
        std::thread::sleep(wait);
        for &id in &queued {
            stored_before_kill.push((id, chaos_lines(&client, id)?));
        }
        kill(&mut server);
        println!(
            "round {round}: queued run {}, killed the server after {wait:?}",
            run.id
        );
        let left = leftover_steps(Duration::from_secs(3));
        if !left.is_empty() {
            process_failures.push(format!(
                "round {round}: step processes outlived the killed server: {left:?}"
            ));
        }
        server = start(binary, &data)?;
        client = ServerClient::new(&server.url, &token);
    }

    let deadline = Instant::now() + FINISH_WITHIN;
    let mut unfinished = queued.clone();
    while !unfinished.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let mut still = Vec::new();
        for &id in &unfinished {
            let detail: api::RunDetail = client.get_json(&format!("/api/v1/runs/{id}"))?;
            if detail.run.status != "completed" {
                still.push(id);
            }
        }
        unfinished = still;
    }
    let mut passed = 0;
    for &id in &queued {
        let before = failures.len();
        let detail: api::RunDetail = client.get_json(&format!("/api/v1/runs/{id}"))?;
        if detail.run.status != "completed" {
            failures.push(format!(
                "run {id} is still {} after {FINISH_WITHIN:?}",
                detail.run.status
            ));
        }
        let now = chaos_lines(&client, id)?;
        for (_, lines) in stored_before_kill.iter().filter(|(run, _)| *run == id) {
            if let Some(lost) = lines.iter().find(|line| !now.contains(line)) {
                failures.push(format!("run {id}: the stored log line {lost:?} was lost"));
            }
        }
        let log = client.get_text(&format!("/api/v1/runs/{id}/logs"))?;
        let files: Vec<api::ArtifactFile> =
            client.get_json(&format!("/api/v1/runs/{id}/artifacts"))?;
        // The agent logs this line only after the upload succeeded.
        if log.contains("Published artifact drop (") {
            match files.iter().find(|f| f.artifact == "drop") {
                Some(file) => {
                    let content = client.get_text(&file.download_url)?;
                    if content.trim() != format!("payload of run {id}") {
                        failures.push(format!("run {id}: artifact drop holds {content:?}"));
                    }
                }
                None => failures.push(format!(
                    "run {id}: the log reports artifact drop as published but it is not stored"
                )),
            }
        }
        println!(
            "run {id}: {} {}",
            detail.run.status,
            detail.run.result.as_deref().unwrap_or("")
        );
        if failures.len() == before {
            passed += 1;
        }
    }
    let run_failures = queued.len() - passed;
    kill(&mut server);
    let left = leftover_steps(Duration::from_secs(3));
    if !left.is_empty() {
        process_failures.push(format!("step processes outlived the last server: {left:?}"));
    }
    for failure in failures.iter().chain(&process_failures) {
        println!("FAILED: {failure}");
    }
    Ok((passed, run_failures + process_failures.len()))
}
