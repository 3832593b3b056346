//! The differential test of issue 11: every pipeline in `test_data/differential/` runs through
//! `lockgate run` and through one `lockgate up` server with its built-in agents. Both sides must give
//! the job and run results the file expects (Azure Pipelines' semantics) and the same `OUT:` lines of
//! step output per job. The file format is described in `test_data/differential/README.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lockgate_protocol::api;

use crate::server::{git, start_server_with_env};

/// What a line of step output starts with when the test compares it between the two sides.
const MARKER: &str = "OUT:";

/// The job and run results Azure Pipelines reports (camelCase, as the server's API shows them).
const JOB_RESULTS: &[&str] = &[
    "succeeded",
    "succeededWithIssues",
    "failed",
    "canceled",
    "skipped",
];
const RUN_RESULTS: &[&str] = &["succeeded", "partiallySucceeded", "failed", "canceled"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Local,
    Server,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Local => "lockgate run",
            Side::Server => "server",
        }
    }
}

/// One file of the corpus with the expectations of its leading comment block.
struct Case {
    /// The file name, as failures name it.
    file: String,
    /// Expected result of every job, by `Stage.Job` (or `Job` in a pipeline without stages).
    jobs: BTreeMap<String, String>,
    run: String,
    /// `(job, text)`: the job's log must contain the text on both sides.
    log_contains: Vec<(String, String)>,
    /// `(job, text)`: the job's log must not contain the text on either side.
    log_lacks: Vec<(String, String)>,
    /// The sides known to be wrong today, with why; their mismatches are reported, not failed on.
    divergence: Option<(Vec<Side>, String)>,
    /// Whether the YAML (after the comment block) prints marker lines.
    echoes_marker: bool,
}

/// What one side reported for a case.
#[derive(Default, Debug)]
struct Observed {
    jobs: BTreeMap<String, String>,
    run: String,
    /// Each job's whole log (output lines and issue messages).
    logs: BTreeMap<String, Vec<String>>,
}

impl Observed {
    /// The marker lines of a job's log, with surrounding blanks trimmed.
    fn output(&self, job: &str) -> Vec<String> {
        self.logs
            .get(job)
            .into_iter()
            .flatten()
            .map(|line| line.trim())
            .filter(|line| line.starts_with(MARKER))
            .map(str::to_string)
            .collect()
    }
}

fn corpus_dir() -> PathBuf {
    match std::env::var_os("LOCKGATE_DIFFERENTIAL_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/differential"),
    }
}

/// Reads the expectations of one file; a malformed directive names the file and line.
fn parse_case(file: &str, text: &str) -> Result<Case, String> {
    let mut case = Case {
        file: file.to_string(),
        jobs: BTreeMap::new(),
        run: String::new(),
        log_contains: Vec::new(),
        log_lacks: Vec::new(),
        divergence: None,
        echoes_marker: false,
    };
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some(comment) = line.strip_prefix('#') else {
            // The leading comment block ends at the first line of YAML.
            case.echoes_marker = text.lines().skip(number).any(|l| l.contains(MARKER));
            break;
        };
        let at = || format!("{file}:{}", number + 1);
        let comment = comment.trim();
        let Some((key, value)) = comment.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "expect" => {
                let (job, result) = value
                    .split_once('=')
                    .ok_or_else(|| format!("{}: `expect: JOB = RESULT`", at()))?;
                let result = result.trim();
                if !JOB_RESULTS.contains(&result) {
                    return Err(format!(
                        "{}: unknown job result `{result}` (one of {JOB_RESULTS:?})",
                        at()
                    ));
                }
                if case
                    .jobs
                    .insert(job.trim().to_string(), result.to_string())
                    .is_some()
                {
                    return Err(format!("{}: job `{}` expected twice", at(), job.trim()));
                }
            }
            "expect-run" => {
                if !RUN_RESULTS.contains(&value) {
                    return Err(format!(
                        "{}: unknown run result `{value}` (one of {RUN_RESULTS:?})",
                        at()
                    ));
                }
                case.run = value.to_string();
            }
            "expect-log" => {
                let (list, (job, needle)) = if let Some(pair) = value.split_once(" contains ") {
                    (&mut case.log_contains, pair)
                } else if let Some(pair) = value.split_once(" lacks ") {
                    (&mut case.log_lacks, pair)
                } else {
                    return Err(format!(
                        "{}: `expect-log: JOB contains TEXT` or `expect-log: JOB lacks TEXT`",
                        at()
                    ));
                };
                list.push((job.trim().to_string(), needle.trim().to_string()));
            }
            "known-divergence" => {
                let (side, why) = value.split_once(':').ok_or_else(|| {
                    format!("{}: `known-divergence: local|server|both: WHY`", at())
                })?;
                let sides = match side.trim() {
                    "local" => vec![Side::Local],
                    "server" => vec![Side::Server],
                    "both" => vec![Side::Local, Side::Server],
                    other => {
                        return Err(format!(
                            "{}: known-divergence side `{other}` is not `local`, `server` or `both`",
                            at()
                        ));
                    }
                };
                case.divergence = Some((sides, why.trim().to_string()));
            }
            other if other.starts_with("expect") || other.starts_with("known") => {
                return Err(format!("{}: unknown directive `{other}`", at()));
            }
            _ => {}
        }
    }
    if case.jobs.is_empty() || case.run.is_empty() {
        return Err(format!(
            "{file}: the leading comment block needs `# expect: JOB = RESULT` lines and `# expect-run: RESULT`"
        ));
    }
    Ok(case)
}

/// `Succeeded` → `succeeded`, `SucceededWithIssues` → `succeededWithIssues`.
fn camel(result: &str) -> String {
    let mut chars = result.chars();
    match chars.next() {
        Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// How a job is named in expectations: `Stage.Job`, or `Job` in the implied stage.
fn label(stage: &str, job: &str) -> String {
    if stage.is_empty() || stage == "__default" {
        job.to_string()
    } else {
        format!("{stage}.{job}")
    }
}

/// Runs `file` (in the repository `repo`) with `lockgate run --json` and reads its events.
fn run_local(repo: &Path, work: &Path, file: &str) -> Observed {
    let output = Command::new(env!("CARGO_BIN_EXE_lockgate"))
        .args(["run", "--json", "--work-dir"])
        .arg(work)
        .arg(file)
        .current_dir(repo)
        .env("LOCKGATE_MINUTE_MS", "1000")
        .output()
        .unwrap();
    let mut observed = Observed::default();
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in stdout.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            observed
                .logs
                .entry("(not json)".into())
                .or_default()
                .push(line.to_string());
            continue;
        };
        let text = |key: &str| event[key].as_str().unwrap_or_default().to_string();
        let job = || {
            label(
                event["job"]["stage"].as_str().unwrap_or_default(),
                event["job"]["job"].as_str().unwrap_or_default(),
            )
        };
        match event["event"].as_str().unwrap_or_default() {
            "jobFinished" => {
                observed.jobs.insert(job(), camel(&text("result")));
            }
            "runFinished" => {
                observed.run = match text("result").as_str() {
                    "SucceededWithIssues" => "partiallySucceeded".to_string(),
                    other => camel(other),
                };
            }
            "log" => {
                let lines = event["lines"].as_array().cloned().unwrap_or_default();
                observed.logs.entry(job()).or_default().extend(
                    lines
                        .iter()
                        .map(|line| line.as_str().unwrap_or_default().to_string()),
                );
            }
            "issue" => {
                observed
                    .logs
                    .entry(job())
                    .or_default()
                    .push(text("message"));
            }
            _ => {}
        }
    }
    if observed.run.is_empty() {
        observed.run = format!(
            "(no result: exit {:?}, stderr {})",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    observed
}

/// What the server shows for a finished run: its jobs' results and logs.
fn observe_server(client: &lockgate_agent::ServerClient, run: &api::Run) -> Observed {
    let detail: api::RunDetail = client
        .get_json(&format!("/api/v1/runs/{}", run.id))
        .unwrap();
    let mut observed = Observed {
        run: run.result.clone().unwrap_or_else(|| "(none)".into()),
        ..Observed::default()
    };
    for job in &detail.jobs {
        let name = label(&job.stage, &job.name);
        observed.jobs.insert(
            name.clone(),
            job.result.clone().unwrap_or_else(|| job.status.clone()),
        );
        let log = client
            .get_text(&format!("/api/v1/runs/{}/jobs/{}/logs", run.id, job.id))
            .unwrap_or_default();
        observed
            .logs
            .insert(name, log.lines().map(str::to_string).collect());
    }
    observed
}

/// Every way `observed` differs from what `case` expects.
fn expectation_problems(case: &Case, observed: &Observed) -> Vec<String> {
    let mut problems = Vec::new();
    let names: BTreeSet<&String> = case.jobs.keys().chain(observed.jobs.keys()).collect();
    for name in names {
        let expected = case.jobs.get(name).map_or("(not expected)", String::as_str);
        let got = observed.jobs.get(name).map_or("(absent)", String::as_str);
        if expected != got {
            problems.push(format!("job {name}: expected {expected}, got {got}"));
        }
    }
    if case.run != observed.run {
        problems.push(format!(
            "run result: expected {}, got {}",
            case.run, observed.run
        ));
    }
    // A case whose scripts echo marker lines must show some, so that a broken log reader cannot make
    // both sides agree on nothing.
    if case.echoes_marker
        && observed
            .jobs
            .keys()
            .all(|job| observed.output(job).is_empty())
    {
        problems.push(format!("no job printed a `{MARKER}` line"));
    }
    for (job, needle) in &case.log_lacks {
        let log = observed.logs.get(job).cloned().unwrap_or_default();
        if let Some(line) = log.iter().find(|line| line.contains(needle.as_str())) {
            problems.push(format!("job {job}: log contains `{needle}`: {line}"));
        }
    }
    for (job, needle) in &case.log_contains {
        let log = observed.logs.get(job).cloned().unwrap_or_default();
        if !log.iter().any(|line| line.contains(needle.as_str())) {
            problems.push(format!(
                "job {job}: log does not contain `{needle}`; it is:\n      {}",
                log.join("\n      ")
            ));
        }
    }
    problems
}

/// The jobs whose `OUT:` lines differ between the two sides, showing both.
fn output_problems(local: &Observed, server: &Observed) -> Vec<String> {
    let names: BTreeSet<&String> = local.jobs.keys().chain(server.jobs.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let (here, there) = (local.output(name), server.output(name));
            (here != there).then(|| {
                format!(
                    "job {name}: step output differs\n      lockgate run: {here:?}\n      server:       {there:?}"
                )
            })
        })
        .collect()
}

/// A server with one pipeline per case, all pushed at once; returns its finished runs by file name.
fn run_on_server(dir: &Path, repo: &Path, files: &[String]) -> BTreeMap<String, Observed> {
    let up = start_server_with_env(
        dir,
        &["up", "--port", "0", "--no-demo", "--agents", "4"],
        &[],
    );
    let client = lockgate_agent::ServerClient::new(&up.url, &up.token);
    let _: api::Project = client
        .post_json(
            "/api/v1/projects",
            &api::CreateProject {
                name: "differential".into(),
            },
        )
        .unwrap();
    let repository: api::Repository = client
        .post_json(
            "/api/v1/projects/differential/repositories",
            &api::CreateRepository {
                name: "corpus".into(),
            },
        )
        .unwrap();
    let mut pipelines = BTreeMap::new();
    for file in files {
        let pipeline: api::Pipeline = client
            .post_json(
                "/api/v1/projects/differential/pipelines",
                &api::CreatePipeline {
                    name: file.trim_end_matches(".yml").to_string(),
                    repository: "corpus".into(),
                    yaml_path: file.clone(),
                },
            )
            .unwrap();
        pipelines.insert(pipeline.id, file.clone());
    }
    let push_url = repository
        .clone_url
        .replace("http://", &format!("http://admin:{}@", up.token));
    git(repo, &["push", "-q", &push_url, "HEAD:refs/heads/main"]);
    let deadline = Instant::now() + Duration::from_secs(150);
    let runs = loop {
        let runs: Vec<api::Run> = client.get_json("/api/v1/runs?limit=1000").unwrap();
        let done = runs.iter().filter(|run| run.status == "completed").count();
        if runs.len() >= files.len() && done == runs.len() {
            break runs;
        }
        if Instant::now() >= deadline {
            let started: BTreeSet<i64> = runs.iter().map(|run| run.pipeline_id).collect();
            let never: Vec<&String> = pipelines
                .iter()
                .filter(|(id, _)| !started.contains(id))
                .map(|(_, file)| file)
                .collect();
            let unfinished: Vec<(&String, &String)> = runs
                .iter()
                .filter(|run| run.status != "completed")
                .map(|run| (&pipelines[&run.pipeline_id], &run.status))
                .collect();
            panic!(
                "the server did not finish the corpus's runs ({done} of {} completed); \
                 no run of {never:?}; unfinished: {unfinished:?}",
                files.len()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    runs.iter()
        .map(|run| {
            let file = pipelines
                .get(&run.pipeline_id)
                .cloned()
                .unwrap_or_else(|| run.pipeline.clone());
            (file, observe_server(&client, run))
        })
        .collect()
}

#[test]
fn the_local_runner_and_the_server_agree_with_azure_on_the_corpus() {
    let corpus = corpus_dir();
    let mut files: Vec<String> = std::fs::read_dir(&corpus)
        .unwrap_or_else(|e| panic!("{}: {e}", corpus.display()))
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .yml files in {}", corpus.display());
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let mut cases = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(corpus.join(file)).unwrap();
        cases.push(parse_case(file, &text).unwrap_or_else(|e| panic!("{e}")));
        std::fs::write(repo.join(file), text).unwrap();
    }
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "corpus"]);

    // The server works through its runs while the local runs happen one after the other.
    let work = dir.path().join("work");
    let (server, local) = std::thread::scope(|scope| {
        let server = scope.spawn(|| run_on_server(dir.path(), &repo, &files));
        let local: BTreeMap<String, Observed> = files
            .iter()
            .map(|file| (file.clone(), run_local(&repo, &work, file)))
            .collect();
        (server.join().unwrap(), local)
    });

    let mut failures = Vec::new();
    let mut known = Vec::new();
    for case in &cases {
        let missing = Observed::default();
        let local = &local[&case.file];
        let server = server.get(&case.file).unwrap_or(&missing);
        let mut failed = Vec::new();
        let mut tolerated = Vec::new();
        for (side, observed) in [(Side::Local, local), (Side::Server, server)] {
            let problems: Vec<String> = expectation_problems(case, observed)
                .into_iter()
                .map(|p| format!("  [{}] {p}", side.name()))
                .collect();
            match &case.divergence {
                Some((wrong, why)) if wrong.contains(&side) => {
                    if problems.is_empty() {
                        failed.push(format!(
                            "  marked `known-divergence` for {} ({why}), but it now gives the expected results: remove the marker",
                            side.name()
                        ));
                    }
                    tolerated.extend(problems);
                }
                _ => failed.extend(problems),
            }
        }
        // Output is compared only when neither side is known to be wrong.
        let cross = output_problems(local, server)
            .into_iter()
            .map(|p| format!("  {p}"));
        if case.divergence.is_some() {
            tolerated.extend(cross);
        } else {
            failed.extend(cross);
        }
        if !failed.is_empty() {
            failures.push(format!("{}:\n{}", case.file, failed.join("\n")));
        }
        if let Some((sides, why)) = &case.divergence {
            let sides: Vec<&str> = sides.iter().map(|side| side.name()).collect();
            known.push(format!(
                "{} (known divergence of {}: {why}):\n{}",
                case.file,
                sides.join(" and "),
                tolerated.join("\n")
            ));
        }
    }
    if !known.is_empty() {
        eprintln!(
            "known divergences (reported, not failed on):\n{}",
            known.join("\n")
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus files disagree:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn corpus_files_with_a_bad_expectation_block_are_refused_with_file_and_line() {
    let error = parse_case(
        "x.yml",
        "# expect: A = succeded\n# expect-run: succeeded\njobs: []\n",
    )
    .err()
    .unwrap();
    assert!(
        error.contains("x.yml:1") && error.contains("succeded"),
        "{error}"
    );
    let error = parse_case("y.yml", "# expect-run: succeeded\nsteps: []\n")
        .err()
        .unwrap();
    assert!(
        error.contains("y.yml") && error.contains("expect:"),
        "{error}"
    );
    let error = parse_case(
        "z.yml",
        "# expect: A = failed\n# expect-run: failed\n# known-divergence: neither: no\n",
    )
    .err()
    .unwrap();
    assert!(error.contains("z.yml:3"), "{error}");
    let case = parse_case(
        "ok.yml",
        "# Title line.\n# expect: S.A = failed\n# expect-run: failed\n# expect-log: S.A contains OUT:a b\n# expect-log: S.A lacks x\n# known-divergence: server: why\n\njobs: []\n# expect: later = skipped\n",
    )
    .unwrap();
    assert_eq!(case.jobs.len(), 1, "only the leading block counts");
    assert_eq!(
        case.log_contains,
        vec![("S.A".to_string(), "OUT:a b".to_string())]
    );
    assert_eq!(case.log_lacks, vec![("S.A".to_string(), "x".to_string())]);
    assert_eq!(
        case.divergence,
        Some((vec![Side::Server], "why".to_string()))
    );
}
