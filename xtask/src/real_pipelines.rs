//! `cargo xtask real-pipelines DIR... [--timeout SECS] [--lockgate PATH]`: tries real projects' own
//! pipelines as a new user would. For each checkout (a work tree, or a bare mirror such as the search
//! tool's `fetch` gives, which is cloned first) it finds the pipeline file, runs `lockgate validate` and
//! then `lockgate run --json` under a time limit, and prints whether Lockgate refused it, which steps ran,
//! and why each failed step failed when that can be told from its log (a missing tool, no network).
//!
//! A pipeline *fails* this check when Lockgate refused to run it (exit 2), when `validate` called it
//! valid but `run` refused it, or when Lockgate crashed. Steps that fail because this machine lacks a
//! tool or the network are the environment's doing, not Lockgate's, and are listed as such. Ends with
//! `N passed, M failed`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Where a project keeps its pipeline, in the order they are tried.
const PIPELINE_FILES: &[&str] = &[
    "azure-pipelines.yml",
    "azure-pipelines.yaml",
    ".azure-pipelines.yml",
    ".azure-pipelines/azure-pipelines.yml",
    "azure-pipelines/azure-pipelines.yml",
    ".azure-pipelines/ci.yml",
    ".ci/azure-pipelines.yml",
    "ci/azure-pipelines.yml",
    "build/azure-pipelines.yml",
    ".pipelines/azure-pipelines.yml",
    ".azure/pipelines/ci.yml",
];

pub fn main(args: &[String]) -> anyhow::Result<u8> {
    let mut dirs = Vec::new();
    let mut timeout = Duration::from_secs(300);
    let mut lockgate: Option<PathBuf> = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--timeout" => {
                let value = iter.next().context("--timeout needs a number of seconds")?;
                let secs: u64 = value
                    .parse()
                    .with_context(|| format!("--timeout {value}: not a number of seconds"))?;
                timeout = Duration::from_secs(secs.max(1));
            }
            "--lockgate" => {
                lockgate = Some(PathBuf::from(
                    iter.next().context("--lockgate needs the binary's path")?,
                ));
            }
            other if other.starts_with("--") => bail!("unknown option {other}"),
            dir => dirs.push(PathBuf::from(dir)),
        }
    }
    if dirs.is_empty() {
        bail!("usage: cargo xtask real-pipelines DIR... [--timeout SECS] [--lockgate PATH]");
    }
    let lockgate = match lockgate {
        Some(path) => path,
        None => build_lockgate()?,
    };
    let scratch = tempfile::tempdir()?;
    let (mut passed, mut failed) = (0, 0);
    for (index, dir) in dirs.iter().enumerate() {
        let report = match try_project(
            &lockgate,
            dir,
            scratch.path().join(index.to_string()),
            timeout,
        ) {
            Ok(report) => report,
            Err(err) => Report {
                verdict: Verdict::Failed(format!("{err:#}")),
                lines: Vec::new(),
            },
        };
        match &report.verdict {
            Verdict::Passed(summary) => {
                passed += 1;
                println!("PASS {}: {summary}", dir.display());
            }
            Verdict::Failed(why) => {
                failed += 1;
                println!("FAIL {}: {why}", dir.display());
            }
        }
        for line in &report.lines {
            println!("    {line}");
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(u8::from(failed > 0))
}

enum Verdict {
    Passed(String),
    Failed(String),
}

struct Report {
    verdict: Verdict,
    lines: Vec<String>,
}

/// Builds the `lockgate` binary (debug, as the tests use it) and returns its path.
fn build_lockgate() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "-q", "-p", "lockgate", "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !output.status.success() {
        bail!("cargo build -p lockgate failed");
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == "lockgate")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .context("cargo build did not name the lockgate binary")
}

/// A bare repository (a mirror) has no work tree: clone it so that its files exist.
fn work_tree(dir: &Path, scratch: &Path) -> anyhow::Result<PathBuf> {
    if !dir.is_dir() {
        bail!("not a folder");
    }
    let bare = dir.join("HEAD").is_file() && dir.join("objects").is_dir();
    if !bare {
        return Ok(dir.to_path_buf());
    }
    let target = scratch.join("checkout");
    let status = Command::new("git")
        .args(["clone", "-q", "--depth", "1"])
        .arg(format!("file://{}", dir.canonicalize()?.display()))
        .arg(&target)
        .stdout(Stdio::null())
        .status()
        .context("running git clone")?;
    if !status.success() {
        bail!("git clone of the mirror failed");
    }
    Ok(target)
}

fn try_project(
    lockgate: &Path,
    dir: &Path,
    scratch: PathBuf,
    timeout: Duration,
) -> anyhow::Result<Report> {
    std::fs::create_dir_all(&scratch)?;
    let root = work_tree(dir, &scratch)?;
    let Some(file) = PIPELINE_FILES
        .iter()
        .map(|name| root.join(name))
        .find(|path| path.is_file())
        .or_else(|| find_named(&root))
    else {
        bail!(
            "no pipeline file found (looked for {})",
            PIPELINE_FILES.join(", ")
        );
    };
    let shown = file
        .strip_prefix(&root)
        .unwrap_or(&file)
        .display()
        .to_string();
    let validate = Command::new(lockgate)
        .arg("validate")
        .arg(&file)
        .arg("--root")
        .arg(&root)
        .output()
        .context("running lockgate validate")?;
    let valid = validate.status.code() == Some(0);
    let mut lines = vec![format!(
        "{shown}: validate {}",
        if valid {
            "says valid"
        } else {
            "finds problems"
        }
    )];
    if !valid {
        lines.extend(first_lines(&validate.stderr, 5));
    }
    let events_path = scratch.join("events.jsonl");
    let stderr_path = scratch.join("stderr.txt");
    let mut child = Command::new(lockgate)
        .arg("run")
        .arg(&file)
        .arg("--root")
        .arg(&root)
        .arg("--json")
        .arg("--work-dir")
        .arg(scratch.join("work"))
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&events_path)?)
        .stderr(std::fs::File::create(&stderr_path)?)
        .spawn()
        .context("running lockgate run")?;
    let started = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout && !timed_out {
            // SIGTERM cancels the run as Ctrl-C does; a second stop after a grace kills it.
            timed_out = true;
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        if timed_out && started.elapsed() > timeout + Duration::from_secs(20) {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let seconds = started.elapsed().as_secs_f64();
    let stderr = std::fs::read(&stderr_path).unwrap_or_default();
    let events = std::fs::read_to_string(&events_path).unwrap_or_default();
    let steps = read_steps(&events);
    let code = status.code();
    if code == Some(2) {
        lines.extend(first_lines(&stderr, 8));
        let why = if valid {
            "lockgate run refused a pipeline that validate called valid".to_string()
        } else {
            "lockgate refused the pipeline (exit 2)".to_string()
        };
        return Ok(Report {
            verdict: Verdict::Failed(why),
            lines,
        });
    }
    if code.is_none() && !timed_out || code.is_some_and(|c| c > 2) {
        lines.extend(first_lines(&stderr, 8));
        return Ok(Report {
            verdict: Verdict::Failed(format!("lockgate run crashed ({status})")),
            lines,
        });
    }
    let ran = steps.values().filter(|s| s.result.is_some()).count();
    let failed: Vec<&StepRecord> = steps
        .values()
        .filter(|s| s.result.as_deref() == Some("Failed"))
        .collect();
    for step in &failed {
        lines.push(format!(
            "failed: {} / {}: {}",
            step.job,
            step.name,
            step.cause()
        ));
    }
    let result = if timed_out {
        format!("stopped after the {} s limit", timeout.as_secs())
    } else if code == Some(0) {
        "the run succeeded".into()
    } else {
        "the run failed".into()
    };
    Ok(Report {
        verdict: Verdict::Passed(format!(
            "{ran} steps ran, {} failed; {result} in {seconds:.0} s",
            failed.len()
        )),
        lines,
    })
}

/// Else the shallowest file (up to three folders down) whose name contains `azure-pipelines` or sits in
/// an `.azure-pipelines` folder.
fn find_named(root: &Path) -> Option<PathBuf> {
    let mut level = vec![root.to_path_buf()];
    for _ in 0..4 {
        let mut next = Vec::new();
        let mut found: Vec<PathBuf> = Vec::new();
        for dir in &level {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().to_ascii_lowercase();
                if path.is_dir() {
                    if name != ".git" && name != "node_modules" {
                        next.push(path);
                    }
                } else if (name.ends_with(".yml") || name.ends_with(".yaml"))
                    && (name.contains("azure-pipelines")
                        || dir.file_name().is_some_and(|d| d == ".azure-pipelines"))
                {
                    found.push(path);
                }
            }
        }
        if !found.is_empty() {
            found.sort();
            return found.into_iter().next();
        }
        level = next;
    }
    None
}

fn first_lines(bytes: &[u8], count: usize) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .take(count)
        .map(str::to_string)
        .collect()
}

/// A step as the JSON events describe it.
#[derive(Default)]
struct StepRecord {
    job: String,
    name: String,
    result: Option<String>,
    /// The step's last stderr/stdout lines, for telling a cause.
    tail: Vec<String>,
    /// The step's error issues (Lockgate's own messages, "Bash exited with code ...").
    errors: Vec<String>,
}

impl StepRecord {
    /// Why the step failed, when its log tells: a command that is not installed, no network, a task
    /// Lockgate does not have; else the last error.
    fn cause(&self) -> String {
        for line in self.errors.iter().rev() {
            let lower = line.to_ascii_lowercase();
            if lower.contains("is not installed") || lower.contains("no installed") {
                return format!("missing tool ({})", clip(line));
            }
            if lower.contains("unknown task") || lower.contains("is not a known task") {
                return format!("Lockgate lacks the task ({})", clip(line));
            }
        }
        for line in self.tail.iter().rev() {
            if let Some(at) = line
                .find(": command not found")
                .or_else(|| line.find(": No such file or directory"))
                .filter(|_| self.errors.iter().any(|e| e.contains("code '127'")))
                .or_else(|| line.find(": command not found"))
            {
                let before = &line[..at];
                let tool = before.rsplit(": ").next().unwrap_or(before).trim();
                return format!("missing tool `{tool}`");
            }
            let lower = line.to_ascii_lowercase();
            if line.contains("ENOTFOUND")
                || line.contains("EAI_AGAIN")
                || [
                    "could not resolve host",
                    "temporary failure in name resolution",
                    "name or service not known",
                    "network is unreachable",
                    "failed to establish a new connection",
                    "max retries exceeded with url",
                    "failed to connect to",
                    "could not resolve proxy",
                    "unable to access 'http",
                ]
                .iter()
                .any(|needle| lower.contains(needle))
            {
                return format!("no network ({})", clip(line));
            }
        }
        if self.errors.iter().any(|e| e.contains("code '127'")) {
            return "missing tool (exit code 127: a command was not found)".into();
        }
        self.errors
            .last()
            .or(self.tail.last())
            .map_or_else(|| "no output".to_string(), |line| clip(line))
    }
}

fn clip(line: &str) -> String {
    let line = line.trim();
    if line.chars().count() > 160 {
        let cut: String = line.chars().take(160).collect();
        format!("{cut}…")
    } else {
        line.to_string()
    }
}

/// Steps by (job, step index), from `lockgate run --json` output.
fn read_steps(events: &str) -> BTreeMap<(String, u64), StepRecord> {
    let mut steps: BTreeMap<(String, u64), StepRecord> = BTreeMap::new();
    for event in events
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
    {
        let job = format!(
            "{}.{}",
            event["job"]["stage"].as_str().unwrap_or(""),
            event["job"]["job"].as_str().unwrap_or("")
        );
        let Some(index) = event["step"].as_u64() else {
            continue;
        };
        let step = steps.entry((job.clone(), index)).or_default();
        step.job.clone_from(&job);
        match event["event"].as_str() {
            Some("stepStarted") => {
                step.name = event["display_name"].as_str().unwrap_or("").to_string();
            }
            Some("stepFinished") => {
                step.result = event["result"].as_str().map(str::to_string);
            }
            Some("log") => {
                for line in event["lines"].as_array().into_iter().flatten() {
                    if let Some(line) = line.as_str() {
                        step.tail.push(line.to_string());
                    }
                }
                let excess = step.tail.len().saturating_sub(40);
                step.tail.drain(..excess);
            }
            Some("issue") if event["kind"] == "error" => {
                if let Some(message) = event["message"].as_str() {
                    step.errors.push(message.to_string());
                }
            }
            _ => {}
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(lines: &[&str]) -> StepRecord {
        StepRecord {
            tail: lines.iter().map(|l| (*l).to_string()).collect(),
            ..StepRecord::default()
        }
    }

    #[test]
    fn causes_are_told_from_the_log() {
        assert_eq!(
            step(&[
                "/w/_temp/s.sh: line 1: tox: command not found",
                "Bash exited with code '127'."
            ])
            .cause(),
            "missing tool `tox`"
        );
        assert!(
            step(&["curl: (6) Could not resolve host: example.com"])
                .cause()
                .starts_with("no network")
        );
        assert_eq!(
            step(&["something else broke"]).cause(),
            "something else broke"
        );
    }

    #[test]
    fn steps_are_read_from_json_events() {
        let events = r#"{"event":"stepStarted","job":{"stage":"s","job":"j"},"step":1,"display_name":"Build"}
{"event":"log","job":{"stage":"s","job":"j"},"step":1,"stream":"stderr","lines":["go: command not found"]}
{"event":"stepFinished","job":{"stage":"s","job":"j"},"step":1,"display_name":"Build","result":"Failed","seconds":0.1}
{"event":"jobFinished","job":{"stage":"s","job":"j"},"result":"Failed","seconds":0.2}"#;
        let steps = read_steps(events);
        let build = &steps[&("s.j".to_string(), 1)];
        assert_eq!(
            (build.name.as_str(), build.result.as_deref()),
            ("Build", Some("Failed"))
        );
        assert_eq!(build.cause(), "missing tool `go`");
    }
}
