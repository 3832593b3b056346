//! The executor of real agents: turns a leased job (the compiled plan job as JSON) into the runner's
//! `JobSpec`, runs it with `lockgate_runner::job::run_job` on this machine, forwards the runner's events
//! as protocol events, and uploads each artifact the moment a step publishes it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockgate_artifacts::ArtifactStore;
use lockgate_pipeline::plan;
use lockgate_protocol::agent::{JobEvent, TestCase};
use lockgate_runner::events::{
    Event, EventSink, IssueKind, TaskResult, TestCase as RunnerTestCase,
};
use lockgate_runner::job::{RunContext, run_job};
use lockgate_runner::orchestrator::job_phases;
use lockgate_runner::process::CancelSignal;
pub use lockgate_runner::sandbox::Sandbox;
use lockgate_runner::sandbox::scrubbed_environment;
use lockgate_runner::spec::{InitialVariable, JobSpec};
pub use lockgate_runner::tasks::TaskRegistry;
use lockgate_runner::tasks::package::{TaskPackage, register_packages};

use crate::{EventReporter, ExecutionOutcome, JobExecutor, LeasedJob};

/// Runs jobs with the tasks of a registry: by default the built-in tasks of `lockgate-runner`.
pub struct RunnerExecutor {
    registry: Arc<TaskRegistry>,
    /// How long one minute of `timeoutInMinutes` lasts (60 s; tests may shorten it).
    pub minute: Duration,
    /// Runs every step in this sandbox; None runs steps directly on this machine (no isolation).
    pub sandbox: Option<Sandbox>,
}

impl Default for RunnerExecutor {
    fn default() -> Self {
        RunnerExecutor::with_registry(TaskRegistry::with_builtins())
    }
}

impl RunnerExecutor {
    /// Runs jobs with the tasks of `registry` (e.g. the built-in ones plus the Power Platform tasks
    /// the `lockgate` binary registers).
    pub fn with_registry(registry: TaskRegistry) -> RunnerExecutor {
        RunnerExecutor {
            registry: Arc::new(registry),
            minute: Duration::from_secs(60),
            sandbox: None,
        }
    }
}

/// Forwards runner events to the server as protocol events, and uploads each artifact when its step
/// publishes it (before the step goes on), so "Published artifact ..." in a log means it is stored.
struct ForwardingSink<'a> {
    reporter: &'a EventReporter,
    /// Where the artifact goes: the job's local store, its run, a scratch folder and the uploader.
    publisher: Option<Publisher<'a>>,
    /// Set when an upload failed (the job fails).
    upload_failed: std::sync::atomic::AtomicBool,
}

struct Publisher<'a> {
    artifacts: ArtifactStore,
    run_id: String,
    out_dir: PathBuf,
    upload: &'a (dyn Fn(&str, &std::path::Path) -> Result<(), String> + Sync),
}

impl Publisher<'_> {
    /// Copies the artifact out of the job's local store and uploads it.
    fn upload(&self, name: &str) -> Result<(), String> {
        let dest = self.out_dir.join(name);
        self.artifacts
            .download(&self.run_id, name, &dest, &|_| true)
            .map_err(|error| format!("cannot read artifact {name}: {error}"))?;
        let uploaded = (self.upload)(name, &dest)
            .map_err(|error| format!("Cannot upload artifact {name}: {error}"));
        let _ = std::fs::remove_dir_all(&dest);
        uploaded
    }
}

fn result_name(result: TaskResult) -> String {
    match result {
        TaskResult::Succeeded => "succeeded",
        TaskResult::SucceededWithIssues => "succeededWithIssues",
        TaskResult::Failed => "failed",
        TaskResult::Canceled => "canceled",
        TaskResult::Skipped => "skipped",
    }
    .to_string()
}

impl EventSink for ForwardingSink<'_> {
    fn event(&self, event: Event) {
        let step_number = |step: usize| u32::try_from(step).unwrap_or(u32::MAX);
        let forwarded = match event {
            Event::StepStarted {
                step, display_name, ..
            } => Some(JobEvent::StepStarted {
                step: step_number(step),
                display_name,
            }),
            Event::StepFinished {
                step,
                display_name,
                result,
                ..
            } => Some(JobEvent::StepFinished {
                step: step_number(step),
                display_name,
                result: result_name(result),
            }),
            Event::Log { step, lines, .. } => Some(JobEvent::Log {
                step: Some(step_number(step)),
                lines,
            }),
            Event::Group { step, title, .. } => Some(JobEvent::Log {
                step: Some(step_number(step)),
                lines: vec![match title {
                    Some(title) => format!("##[group]{title}"),
                    None => "##[endgroup]".to_string(),
                }],
            }),
            Event::Issue {
                step,
                kind,
                message,
                ..
            } => Some(JobEvent::Log {
                step: step.map(step_number),
                lines: vec![match kind {
                    IssueKind::Error => format!("##[error]{message}"),
                    IssueKind::Warning => format!("##[warning]{message}"),
                }],
            }),
            Event::Artifact {
                name, files, bytes, ..
            } => {
                let uploaded = match &self.publisher {
                    Some(publisher) => publisher.upload(&name),
                    None => Ok(()),
                };
                Some(JobEvent::Log {
                    step: None,
                    lines: vec![match uploaded {
                        Ok(()) => {
                            format!("Published artifact {name} ({files} files, {bytes} bytes)")
                        }
                        Err(message) => {
                            self.upload_failed.store(true, Ordering::SeqCst);
                            format!("##[error]{message}")
                        }
                    }],
                })
            }
            Event::TestResults { cases, .. } => {
                for chunk in test_case_chunks(cases, TEST_CASE_CHUNK_BYTES) {
                    self.reporter.report(JobEvent::TestResults { cases: chunk });
                }
                None
            }
            Event::BuildNumber { build_number, .. } => Some(JobEvent::Log {
                step: None,
                lines: vec![format!("Build number set to {build_number}")],
            }),
            _ => None,
        };
        if let Some(event) = forwarded {
            self.reporter.report(event);
        }
    }
}

/// Test cases travel in events of about this many bytes of JSON, so that one publish of many cases
/// never makes a request the server refuses.
const TEST_CASE_CHUNK_BYTES: usize = 256 * 1024;

/// The runner's test cases as the protocol's, 1:1 and in order, in chunks of about `max_bytes` of JSON.
fn test_case_chunks(cases: Vec<RunnerTestCase>, max_bytes: usize) -> Vec<Vec<TestCase>> {
    let cases = cases.into_iter().map(|case| TestCase {
        suite: case.suite,
        name: case.name,
        outcome: case.outcome.as_str().to_string(),
        duration_ms: i64::try_from(case.duration_ms).unwrap_or(i64::MAX),
        message: case.message,
    });
    crate::split_by_json_size(cases, max_bytes)
}

impl JobExecutor for RunnerExecutor {
    fn execute(&self, job: &LeasedJob<'_>, reporter: &EventReporter) -> ExecutionOutcome {
        let failed = |message: String| {
            reporter.agent_line(&format!("##[error]{message}"));
            ExecutionOutcome {
                result: "failed".into(),
                ..ExecutionOutcome::default()
            }
        };
        let plan_job: plan::Job = match serde_json::from_value(job.lease.job.clone()) {
            Ok(plan_job) => plan_job,
            Err(error) => {
                return failed(format!(
                    "the server sent a job this agent cannot read: {error}"
                ));
            }
        };
        let outer_variables: Vec<plan::Variable> =
            serde_json::from_value(job.lease.variables.clone()).unwrap_or_default();
        // Lowest precedence first: the pipeline's own variables (queue-time values applied), then
        // the predefined ones (which they cannot hide), then the YAML variables.
        let mut variables: Vec<InitialVariable> = job
            .lease
            .pipeline_variables
            .iter()
            .map(|variable| InitialVariable {
                name: variable.name.clone(),
                value: variable.value.clone(),
                secret: variable.secret,
                readonly: variable.readonly,
            })
            .collect();
        variables.extend(
            job.lease
                .predefined
                .iter()
                .map(|(name, value)| InitialVariable::new(name, value)),
        );
        for variable in outer_variables.iter().chain(plan_job.variables.iter()) {
            match variable {
                plan::Variable::Value {
                    name,
                    value,
                    readonly,
                    ..
                } => variables.push(InitialVariable {
                    name: name.clone(),
                    value: value.clone(),
                    secret: false,
                    readonly: *readonly,
                }),
                // The group's variables take the place of its entry (later entries win).
                plan::Variable::Group { name, .. } => match job.lease.variable_groups.get(name) {
                    Some(group) => variables.extend(group.iter().map(|v| InitialVariable {
                        name: v.name.clone(),
                        value: v.value.clone(),
                        secret: v.secret,
                        readonly: v.readonly,
                    })),
                    None => reporter.agent_line(&format!(
                        "##[warning]variable group `{name}` is not available on this server"
                    )),
                },
            }
        }
        let build_number = job
            .lease
            .predefined
            .iter()
            .find(|(name, _)| name == "Build.BuildNumber")
            .map(|(_, value)| value.clone())
            .unwrap_or_default();
        let artifact_root = job.job_dir.join("artifact-store");
        let artifacts = match ArtifactStore::open(&artifact_root) {
            Ok(store) => store,
            Err(error) => return failed(format!("cannot prepare the artifact store: {error}")),
        };
        let run_id = job.lease.run_id.to_string();
        for (name, folder) in &job.inputs {
            if let Err(error) = artifacts.publish(&run_id, name, folder) {
                return failed(format!(
                    "cannot stage artifact {name} for this job: {error}"
                ));
            }
        }
        /// The job's access token, as the server leases it (a secret pipeline variable).
        const ACCESS_TOKEN: &str = "System.AccessToken";
        let context = RunContext {
            run_id: run_id.clone(),
            build_number: Mutex::new(build_number),
            artifacts: artifacts.clone(),
            run_dir: job.job_dir.join("run"),
            self_repository: Some(job.source_dir.to_path_buf()),
            repositories: BTreeMap::new(),
            self_remote: job
                .lease
                .pipeline_variables
                .iter()
                .find(|v| v.name == ACCESS_TOKEN)
                .map(|token| lockgate_runner::job::SelfRemote {
                    url: job.lease.source.clone_url.clone(),
                    token: token.value.clone(),
                }),
            // Steps never see the agent's own environment (tokens, LOCKGATE_*, database URLs).
            base_env: scrubbed_environment(std::env::vars()),
            minute: self.minute,
            drain_grace: Duration::from_millis(500),
            cache_dir: job.job_dir.join("cache"),
            sandbox: self.sandbox.clone(),
            job_home: true,
            secure_files: job.secure_files.iter().cloned().collect(),
        };
        let spec = JobSpec {
            stage: job.lease.stage_name.clone(),
            stage_display_name: job
                .lease
                .stage_display_name
                .clone()
                .unwrap_or_else(|| job.lease.stage_name.clone()),
            name: plan_job.name.clone(),
            display_name: plan_job
                .display_name
                .clone()
                .unwrap_or_else(|| plan_job.name.clone()),
            phases: job_phases(&plan_job, self.minute, "built-in"),
            variables,
            secret_values: job.lease.secret_values.clone(),
            timeout: (plan_job.timeout_in_minutes > 0)
                .then(|| self.minute * plan_job.timeout_in_minutes),
            cancel_timeout: self.minute * plan_job.cancel_timeout_in_minutes,
            workspace_clean: plan_job.workspace_clean.clone(),
            position_in_phase: plan_job.strategy.position_in_phase.max(1),
            total_jobs_in_phase: plan_job.strategy.total_jobs_in_phase.max(1),
            environment: plan_job.environment.as_ref().map(|e| e.name.clone()),
            strategy: plan_job.deployment.as_ref().map(|d| d.name.clone()),
            continue_on_error: plan_job.continue_on_error,
        };
        // Uploaded task packages join (and replace) the agent's tasks for this job only.
        let registry = if job.task_packages.is_empty() {
            self.registry.clone()
        } else {
            let mut packages = Vec::new();
            for folder in &job.task_packages {
                match TaskPackage::load(folder) {
                    Ok(package) => packages.push(package),
                    Err(error) => return failed(format!("cannot load a task package: {error}")),
                }
            }
            let mut registry = (*self.registry).clone();
            register_packages(&mut registry, packages);
            Arc::new(registry)
        };
        let sink = ForwardingSink {
            reporter,
            publisher: Some(Publisher {
                artifacts: artifacts.clone(),
                run_id: run_id.clone(),
                out_dir: job.job_dir.join("artifacts-out"),
                upload: job.upload,
            }),
            upload_failed: Default::default(),
        };
        let cancel = CancelSignal::new();
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => return failed(format!("cannot start the job runtime: {error}")),
        };
        let workspace = job.job_dir.join("w");
        let outcome = runtime.block_on(async {
            let watcher_cancel = cancel.clone();
            let flag = job.cancel.clone();
            let watcher = tokio::spawn(async move {
                loop {
                    if flag.load(Ordering::SeqCst) {
                        watcher_cancel.cancel();
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            let outcome = run_job(&context, &registry, &spec, &workspace, &sink, &cancel).await;
            watcher.abort();
            outcome
        });
        let result = if sink.upload_failed.load(Ordering::SeqCst) {
            "failed".to_string()
        } else {
            result_name(outcome.result)
        };
        ExecutionOutcome {
            result,
            artifacts: Vec::new(),
            outputs: outcome.outputs,
            secret_outputs: outcome.secret_outputs,
        }
    }
}

#[cfg(test)]
mod tests {
    use lockgate_runner::events::{JobId, TestOutcome};

    use super::*;

    fn runner_case(name: &str, outcome: TestOutcome, message: &str) -> RunnerTestCase {
        RunnerTestCase {
            suite: "calc".into(),
            name: name.into(),
            outcome,
            duration_ms: 7,
            message: message.into(),
        }
    }

    #[test]
    fn test_cases_are_forwarded_one_to_one() {
        let reporter = EventReporter::new();
        let sink = ForwardingSink {
            reporter: &reporter,
            publisher: None,
            upload_failed: Default::default(),
        };
        sink.event(Event::TestResults {
            job: JobId {
                stage: "s".into(),
                job: "j".into(),
            },
            passed: 1,
            failed: 1,
            skipped: 1,
            cases: vec![
                runner_case("divides", TestOutcome::Failed, "expected 2"),
                runner_case("adds", TestOutcome::Passed, ""),
                runner_case("rounds", TestOutcome::Skipped, "later"),
            ],
        });
        let case = |name: &str, outcome: &str, message: &str| TestCase {
            suite: "calc".into(),
            name: name.into(),
            outcome: outcome.into(),
            duration_ms: 7,
            message: message.into(),
        };
        assert_eq!(
            reporter.take(Duration::from_millis(1)),
            [JobEvent::TestResults {
                cases: vec![
                    case("divides", "failed", "expected 2"),
                    case("adds", "passed", ""),
                    case("rounds", "skipped", "later"),
                ]
            }]
        );
    }

    #[test]
    fn many_test_cases_travel_in_bounded_chunks() {
        let cases: Vec<RunnerTestCase> = (0..100)
            .map(|n| runner_case(&format!("t{n}"), TestOutcome::Passed, &"x".repeat(100)))
            .collect();
        let chunks = test_case_chunks(cases, 1000);
        assert!(chunks.len() > 10, "{}", chunks.len());
        for chunk in &chunks {
            assert!(serde_json::to_vec(chunk).unwrap().len() <= 1000 + chunk.len());
        }
        let names: Vec<String> = chunks.into_iter().flatten().map(|c| c.name).collect();
        let expected: Vec<String> = (0..100).map(|n| format!("t{n}")).collect();
        assert_eq!(names, expected);
    }
}
