//! Agentless jobs (`pool: server`): the server runs them itself, never leasing them to an agent.
//! The steps run with lockgate-runner's agentless loop (`Delay@1`, `InvokeRESTAPI@1`,
//! `ManualValidation@0/1`) on a blocking thread; what they do goes into the job's log and step
//! rows, a manual validation is an approval of the run (decided like any other), and every state
//! is in the store, so a restarted server picks the job up where it was.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lockgate_pipeline::plan;
use lockgate_runner::agentless::{self, AgentlessHost, ManualValidation, StepState};
use lockgate_runner::events::TaskResult;
use lockgate_runner::masking::SecretMasker;
use lockgate_runner::variables::VariableStore;
use lockgate_store::{Approval, ApprovalCheck, Job, Run, Step, now_millis};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::live::{LiveMessage, LogLine};

/// Whether the job row is an agentless job.
pub(crate) fn is_agentless(job: &Job) -> bool {
    serde_json::from_str::<serde_json::Value>(&job.spec)
        .is_ok_and(|spec| spec["job"]["kind"] == "server")
}

/// Manual validations are approvals of the run whose check id is negative: minus the job id times
/// 1000 plus the step's position (approval checks have positive ids).
fn validation_check_id(job_id: i64, position: u32) -> i64 {
    -(job_id.saturating_mul(1000) + i64::from(position))
}

/// Whether an approval is a manual validation of an agentless job (not an environment's check).
pub(crate) fn is_manual_validation(approval: &Approval) -> bool {
    approval.check_id < 0
}

/// The job a manual validation belongs to.
fn validation_job(approval: &Approval) -> i64 {
    (-approval.check_id) / 1000
}

/// Why each agentless job waits (its pending manual validation), by job id.
pub(crate) fn waiting_reasons(approvals: &[Approval]) -> HashMap<i64, String> {
    approvals
        .iter()
        .filter(|a| a.status == "pending" && is_manual_validation(a))
        .map(|a| {
            let mut text = format!(
                "a manual validation: resume or reject, by {}",
                a.approvers.join(", ")
            );
            if !a.instructions.is_empty() {
                text.push_str(&format!(" ({})", a.instructions));
            }
            (validation_job(a), text)
        })
        .collect()
}

/// Jobs being run by this process, so that a job is never run twice at once.
static RUNNING: Mutex<Option<HashSet<(String, i64)>>> = Mutex::new(None);

fn claim(state: &AppState, job_id: i64) -> bool {
    let key = (state.data_dir.display().to_string(), job_id);
    let Ok(mut running) = RUNNING.lock() else {
        return false;
    };
    running.get_or_insert_with(HashSet::new).insert(key)
}

/// Releases the claim on a job when its task ends, however it ends (a stopped runtime drops it).
struct Claim(String, i64);

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut running) = RUNNING.lock()
            && let Some(set) = running.as_mut()
        {
            set.remove(&(std::mem::take(&mut self.0), self.1));
        }
    }
}

/// Starts running an agentless job that is `running` in the store (just started by the run engine,
/// or left running by a stopped server), unless this process runs it already.
pub(crate) fn start(state: &AppState, job_id: i64) {
    if !claim(state, job_id) {
        return;
    }
    let claim = Claim(state.data_dir.display().to_string(), job_id);
    let state = state.clone();
    tokio::spawn(async move {
        let _claim = claim;
        if let Err(error) = run(&state, job_id).await {
            eprintln!(
                "lockgate-server: agentless job {job_id} stopped: {}",
                error.message
            );
        }
    });
}

/// Starts the agentless jobs of a run that a stopped server left running.
pub(crate) async fn resume_run(state: &AppState, run_id: i64) -> ApiResult<()> {
    for job in state.store.jobs_of_run(run_id).await? {
        if job.status == "running" && job.agent_name.is_none() && is_agentless(&job) {
            start(state, job.id);
        }
    }
    Ok(())
}

async fn run(state: &AppState, job_id: i64) -> ApiResult<()> {
    let Some(job) = state.store.job_by_id(job_id).await? else {
        return Ok(());
    };
    if job.status != "running" {
        return Ok(());
    }
    let run = state
        .store
        .run_by_id(job.run_id)
        .await?
        .ok_or_else(|| ApiError::not_found("run"))?;
    let lease = crate::agent_api::job_lease(state, &job, String::new()).await?;
    let plan_job: plan::Job =
        serde_json::from_value(lease.job.clone()).map_err(ApiError::internal)?;
    let mut variables = VariableStore::new();
    for variable in &lease.pipeline_variables {
        let _ = variables.set(
            &variable.name,
            variable.value.clone(),
            variable.secret,
            false,
        );
    }
    for (name, value) in &lease.predefined {
        variables.set_system(name, value.clone());
    }
    let outer: Vec<plan::Variable> =
        serde_json::from_value(lease.variables.clone()).unwrap_or_default();
    for variable in outer.iter().chain(&plan_job.variables) {
        if let plan::Variable::Value { name, value, .. } = variable {
            let _ = variables.set(name, value.clone(), false, false);
        }
    }
    variables.expand_values();
    let masker = SecretMasker::new();
    for variable in variables.iter().filter(|v| v.secret) {
        masker.add(&variable.value);
    }
    for value in &lease.secret_values {
        masker.add(value);
    }
    let steps: HashMap<u32, Step> = state
        .store
        .steps_of_run(run.id)
        .await?
        .into_iter()
        .filter(|s| s.job_id == job.id)
        .map(|s| (s.position as u32, s))
        .collect();
    let started_at = job.started_at.unwrap_or_else(now_millis);
    let host = ServerHost {
        state: state.clone(),
        handle: tokio::runtime::Handle::current(),
        job: job.clone(),
        run,
        masker,
        steps: Mutex::new(steps),
        cancel_seen: Mutex::new((Instant::now() - Duration::from_secs(10), false)),
    };
    let result = tokio::task::spawn_blocking(move || {
        let result = agentless::run_job(
            &plan_job,
            &variables,
            started_at,
            Duration::from_secs(60),
            &host,
        );
        (result, plan_job.continue_on_error)
    })
    .await
    .map_err(ApiError::internal)?;
    let (result, continue_on_error) = result;
    let mut text = crate::agent_api::normalize_result(result.as_str());
    if text == "failed" && continue_on_error {
        text = "succeededWithIssues";
    }
    // Completed only if it still runs (a rerun may have reset it meanwhile).
    match state.store.job_by_id(job_id).await? {
        Some(current) if current.status == "running" && current.attempt == job.attempt => {}
        _ => return Ok(()),
    }
    state
        .store
        .set_job_status(job_id, "completed", Some(text))
        .await?;
    state.live.publish(
        job_id,
        LiveMessage::End {
            result: text.to_string(),
        },
    );
    crate::runs::advance_run(state, job.run_id).await?;
    crate::runs::queue_batched_followup(state, job.run_id).await?;
    Ok(())
}

/// The server as the place an agentless job runs: log lines and step rows go to the store (and to
/// live viewers), a cancel is read from the job row, a manual validation is an approval.
struct ServerHost {
    state: AppState,
    handle: tokio::runtime::Handle,
    job: Job,
    run: Run,
    masker: SecretMasker,
    steps: Mutex<HashMap<u32, Step>>,
    /// When the job row was last read, and whether it was canceled then.
    cancel_seen: Mutex<(Instant, bool)>,
}

impl ServerHost {
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.handle.block_on(future)
    }

    fn record_step(&self, position: u32, name: &str, result: Option<TaskResult>) {
        let now = now_millis();
        let Ok(mut steps) = self.steps.lock() else {
            return;
        };
        let started_at = steps
            .get(&position)
            .and_then(|s| s.started_at)
            .unwrap_or(now);
        let row = Step {
            job_id: self.job.id,
            position: i64::from(position),
            name: self.masker.mask(name).into_owned(),
            status: if result.is_some() {
                "completed"
            } else {
                "running"
            }
            .into(),
            result: result.map(|r| crate::agent_api::normalize_result(r.as_str()).to_string()),
            started_at: Some(started_at),
            finished_at: result.map(|_| now),
        };
        let _ = self.block_on(self.state.store.upsert_step(&row));
        steps.insert(position, row);
    }

    fn validation_approval(&self, approval_id: i64) -> Option<Approval> {
        self.block_on(self.state.store.approvals_of_run(self.run.id))
            .ok()?
            .into_iter()
            .find(|a| a.id == approval_id)
    }
}

/// Who may resume a validation without `approvers`: anyone who may queue runs ("users with queue
/// build permission"), the project's contributors and administrators.
const QUEUE_PERMISSION: [&str; 2] = ["group:contributors", "group:administrators"];

impl AgentlessHost for ServerHost {
    fn log(&self, step: Option<u32>, text: &str) {
        let line = LogLine {
            step,
            text: self.masker.mask(text).into_owned(),
        };
        let lines = vec![line];
        if let Ok(first_line) = self.block_on(self.state.store.append_log_chunk(
            self.job.id,
            1,
            &crate::live::compress_lines(&lines),
        )) {
            self.state
                .live
                .publish(self.job.id, LiveMessage::Lines { first_line, lines });
        }
    }

    fn step_state(&self, position: u32) -> StepState {
        let Ok(steps) = self.steps.lock() else {
            return StepState::New;
        };
        match steps.get(&position) {
            None => StepState::New,
            Some(step) if step.status == "completed" => StepState::Finished(
                step.result
                    .as_deref()
                    .and_then(TaskResult::parse)
                    .unwrap_or(TaskResult::Failed),
            ),
            Some(step) => StepState::Started(step.started_at.unwrap_or_else(now_millis)),
        }
    }

    fn step_started(&self, position: u32, name: &str) {
        self.record_step(position, name, None);
    }

    fn step_finished(&self, position: u32, name: &str, result: TaskResult) {
        self.record_step(position, name, Some(result));
    }

    fn canceled(&self) -> bool {
        let Ok(mut seen) = self.cancel_seen.lock() else {
            return true;
        };
        if seen.1 || seen.0.elapsed() < Duration::from_millis(500) {
            return seen.1;
        }
        let canceled = match self.block_on(self.state.store.job_by_id(self.job.id)) {
            Ok(Some(job)) => {
                job.cancel_requested || job.status != "running" || job.attempt != self.job.attempt
            }
            // A store that cannot be read (the server is stopping): stop; the next process
            // resumes the job from its rows.
            Ok(None) | Err(_) => true,
        };
        *seen = (Instant::now(), canceled);
        canceled
    }

    fn manual_validation(
        &self,
        position: u32,
        validation: &ManualValidation,
        timeout: Duration,
    ) -> Result<bool, String> {
        let approvers = if validation.approvers.is_empty() {
            QUEUE_PERMISSION.iter().map(|s| s.to_string()).collect()
        } else {
            validation.approvers.clone()
        };
        let now = now_millis();
        let check = ApprovalCheck {
            id: validation_check_id(self.job.id, position),
            project_id: self.run.project_id,
            environment: String::new(),
            approvers: approvers.clone(),
            min_approvals: 1,
            allow_requester: validation.allow_own_runs,
            instructions: validation.instructions.clone(),
            timeout_minutes: (timeout.as_secs().div_ceil(60) as i64).clamp(1, 43_200),
            in_sequence: false,
            created_by: self.run.requested_by.clone(),
            created_at: now,
        };
        let approval = self
            .block_on(self.state.store.request_approval(
                self.run.id,
                &self.job.stage_name,
                self.job.attempt,
                &check,
                now,
            ))
            .map_err(|e| format!("cannot ask for the manual validation: {e}"))?;
        self.log(
            Some(position),
            &format!(
                "Waiting for a manual validation by {} (at most {} minutes, then {}): `lockgate approve {}` or Resume on the run page resumes, `lockgate reject {}` or Reject rejects",
                approvers.join(", "),
                check.timeout_minutes,
                if validation.resume_on_timeout { "resume" } else { "reject" },
                self.run.id,
                self.run.id
            ),
        );
        loop {
            if self.canceled() {
                return Err(
                    "the job was canceled while it waited for the manual validation".into(),
                );
            }
            let current = self.validation_approval(approval.id);
            let Some(current) = current else {
                return Err("the manual validation is gone".into());
            };
            let decided = |verb: &str| {
                let decision = current.decisions.iter().rev().find(|d| !d.user.is_empty());
                let who = decision.map_or(String::new(), |d| format!(" by {}", d.user));
                let comment = decision
                    .filter(|d| !d.comment.is_empty())
                    .map_or(String::new(), |d| format!(": {}", d.comment));
                format!("{verb}{who}{comment}")
            };
            match current.status.as_str() {
                "approved" => {
                    self.log(Some(position), &decided("Resumed"));
                    return Ok(true);
                }
                "rejected" => {
                    self.log(Some(position), &format!("##[error]{}", decided("Rejected")));
                    return Ok(false);
                }
                "timedOut" => {
                    let text = format!(
                        "Nobody resumed or rejected the manual validation within {} minutes (onTimeout: {})",
                        current.timeout_minutes,
                        if validation.resume_on_timeout {
                            "resume"
                        } else {
                            "reject"
                        }
                    );
                    if validation.resume_on_timeout {
                        self.log(Some(position), &text);
                    } else {
                        self.log(Some(position), &format!("##[error]{text}"));
                    }
                    return Ok(validation.resume_on_timeout);
                }
                _ => {}
            }
            let due = current.requested_at + current.timeout_minutes.saturating_mul(60_000);
            if now_millis() >= due {
                let _ = self.block_on(self.state.store.expire_approval(current.id, now_millis()));
                continue;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}
