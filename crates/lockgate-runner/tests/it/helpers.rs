//! Small helpers shared by the runner's integration tests: bash process specs and pid checks.

use std::path::Path;
use std::time::Duration;

use lockgate_runner::process::{ProcessLimits, ProcessSpec};

/// A spec that runs `script` with bash in `dir`, with PATH from the test's environment.
pub fn bash(dir: &Path, script: &str) -> ProcessSpec {
    ProcessSpec {
        program: "bash".into(),
        args: vec![
            "--noprofile".into(),
            "--norc".into(),
            "-c".into(),
            script.into(),
        ],
        cwd: dir.to_path_buf(),
        env: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())],
    }
}

/// Limits with short, test-sized grace periods.
pub fn quick_limits(timeout: Option<Duration>) -> ProcessLimits {
    ProcessLimits {
        timeout,
        kill_grace: Duration::from_millis(300),
        drain_grace: Duration::from_millis(200),
        masker: None,
    }
}

/// True while a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Waits up to `limit` for a file to appear and returns its trimmed content.
pub fn wait_for_file(path: &Path, limit: Duration) -> String {
    let start = std::time::Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.trim().is_empty()
        {
            return text.trim().to_string();
        }
        assert!(start.elapsed() < limit, "{} did not appear", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

use std::collections::BTreeMap;

use lockgate_runner::events::{CollectingSink, Event, TaskResult};
use lockgate_runner::job::{JobOutcome, RunContext, run_job};
use lockgate_runner::process::CancelSignal;
use lockgate_runner::spec::{InitialVariable, JobSpec, PhaseSpec, StepAction, StepSpec};
use lockgate_runner::tasks::TaskRegistry;

/// A run context rooted in `dir` with short limits (a "minute" lasts one second).
pub fn run_context(dir: &Path) -> RunContext {
    RunContext {
        run_id: "1".into(),
        build_number: std::sync::Mutex::new("20261123.1".into()),
        artifacts: lockgate_artifacts::ArtifactStore::open(dir.join("store")).unwrap(),
        run_dir: dir.join("run"),
        self_repository: None,
        repositories: BTreeMap::new(),
        self_remote: None,
        base_env: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())],
        minute: Duration::from_secs(1),
        drain_grace: Duration::from_millis(200),
        cache_dir: dir.join("cache"),
        sandbox: None,
        job_home: true,
        secure_files: Default::default(),
    }
}

/// A `script:` step (CmdLine@2).
pub fn script(name: Option<&str>, text: &str) -> StepSpec {
    let inputs = BTreeMap::from([("script".to_string(), text.to_string())]);
    let action = StepAction::Task {
        name: "CmdLine".into(),
        major: 2,
        inputs,
    };
    let mut step = StepSpec::new(name.unwrap_or("script"), action, "test.yml:1:1");
    step.name = name.map(str::to_string);
    step
}

/// A job of `steps` with `variables`.
pub fn job(steps: Vec<StepSpec>, variables: Vec<InitialVariable>) -> JobSpec {
    JobSpec {
        stage: "Build".into(),
        stage_display_name: "Build".into(),
        name: "Job".into(),
        display_name: "Job".into(),
        phases: vec![PhaseSpec {
            hook: None,
            increment: None,
            output_prefixes: Vec::new(),
            steps,
        }],
        variables,
        secret_values: Vec::new(),
        timeout: None,
        cancel_timeout: Duration::from_millis(300),
        workspace_clean: None,
        position_in_phase: 1,
        total_jobs_in_phase: 1,
        environment: None,
        strategy: None,
        continue_on_error: false,
    }
}

/// Runs a job in `dir` and returns its outcome and every event.
pub fn run(dir: &Path, spec: &JobSpec) -> (JobOutcome, Vec<Event>, CollectingSink) {
    let context = run_context(dir);
    let sink = CollectingSink::default();
    let registry = TaskRegistry::with_builtins();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime.block_on(run_job(
        &context,
        &registry,
        spec,
        &dir.join("work"),
        &sink,
        &CancelSignal::new(),
    ));
    let events = sink.snapshot();
    (outcome, events, sink)
}

/// The results of the steps, in order.
pub fn step_results(events: &[Event]) -> Vec<TaskResult> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::StepFinished { result, .. } => Some(*result),
            _ => None,
        })
        .collect()
}
