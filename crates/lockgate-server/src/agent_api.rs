//! The server side of the agent protocol (docs/dev/agent-protocol.md): lease with long-poll,
//! heartbeat, event batches (steps, log lines, test results), artifact files, finish.

use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use lockgate_protocol::agent::{
    ArtifactFileQuery, EventBatch, FinishJob, HeartbeatReply, JobEvent, JobLease, LEASE_HEADER,
    LeaseRequest, MAX_LEASE_WAIT_SECONDS, SourceCheckout,
};
use lockgate_store::{Agent, Job, NewArtifactFile, Step, TestResult, now_millis};

use crate::AppState;
use crate::auth::{self, token_hash};
use crate::error::{ApiError, ApiResult, Json, Query};
use crate::live::{LiveMessage, LogLine, compress_lines};
use crate::runs;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/agent/lease", post(lease))
        .route("/api/v1/agent/jobs/{job}/heartbeat", post(heartbeat))
        .route("/api/v1/agent/jobs/{job}/events", post(events))
        .route("/api/v1/agent/jobs/{job}/finish", post(finish))
        .route(
            "/api/v1/agent/jobs/{job}/artifact-files",
            get(list_run_artifacts),
        )
        .route(
            "/api/v1/agent/jobs/{job}/artifact-files/{file}",
            get(download_run_artifact),
        )
}

pub fn upload_routes() -> Router<AppState> {
    Router::new().route(
        "/api/v1/agent/jobs/{job}/artifacts/{name}",
        put(upload_artifact_file),
    )
}

/// An authenticated agent.
pub struct AgentCaller(pub Agent);

impl FromRequestParts<AppState> for AgentCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = auth::presented_token(&parts.headers).ok_or_else(ApiError::unauthorized)?;
        let agent = state
            .store
            .agent_by_token_hash(&token_hash(&token))
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        Ok(AgentCaller(agent))
    }
}

/// The job whose lease token came with the request.
pub(crate) async fn leased_job(
    state: &AppState,
    job_id: i64,
    headers: &HeaderMap,
) -> ApiResult<(Job, String)> {
    let token = headers
        .get(LEASE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::bad_request(format!("missing the {LEASE_HEADER} header")))?;
    let hash = token_hash(token);
    let job = state
        .store
        .leased_job(job_id, &hash)
        .await?
        .ok_or_else(|| ApiError::conflict("the lease on this job is no longer held"))?;
    Ok((job, hash))
}

async fn lease(
    State(state): State<AppState>,
    AgentCaller(agent): AgentCaller,
    Json(request): Json<LeaseRequest>,
) -> ApiResult<Response> {
    let wait =
        std::time::Duration::from_secs(u64::from(request.wait_seconds.min(MAX_LEASE_WAIT_SECONDS)));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let notified = state.job_queued.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let lease_token = auth::random_token("lgl_");
        let expires = now_millis() + i64::from(state.lease_seconds) * 1000;
        if let Some(job) = crate::agents::lease_for(
            &state,
            &agent,
            request.os.as_deref(),
            &token_hash(&lease_token),
            expires,
        )
        .await?
        {
            let lease = job_lease(&state, &job, lease_token).await?;
            // Before the agent has the lease, so that the job cannot finish before its entry exists.
            let masker = job_masker(&state, &job).await?;
            crate::environments::record_start(&state, &job, &lease, &masker).await?;
            runs::advance_run(&state, job.run_id).await?;
            return Ok(Json(lease).into_response());
        }
        // Woken when this server queues a job; the store is read again every second as well, for
        // jobs queued through another server on the same database.
        let recheck = (tokio::time::Instant::now() + QUEUE_POLL).min(deadline);
        if tokio::time::timeout_at(recheck, notified).await.is_err()
            && tokio::time::Instant::now() >= deadline
        {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
}

/// How often a waiting lease request reads the queue even when this server queued nothing.
const QUEUE_POLL: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) async fn job_lease(
    state: &AppState,
    job: &Job,
    lease_token: String,
) -> ApiResult<JobLease> {
    let run = state
        .store
        .run_by_id(job.run_id)
        .await?
        .ok_or_else(|| ApiError::not_found("run"))?;
    let pipeline = state
        .store
        .pipeline_by_id(run.pipeline_id)
        .await?
        .ok_or_else(|| ApiError::not_found("pipeline"))?;
    let (project, repository) = crate::runs::pipeline_home(state, &pipeline).await?;
    // Secrets are decrypted here, for the agent, and nowhere else on the way out.
    let job = &state.secrets.open_job(job.clone());
    let mut spec: serde_json::Value =
        serde_json::from_str(&job.spec).map_err(ApiError::internal)?;
    // Variables written as `$[ ... ]` get the values the scheduler computed when it queued the job.
    if let Ok(values) =
        serde_json::from_value::<crate::run_engine::RuntimeValues>(spec["runtimeValues"].clone())
    {
        values.apply(&mut spec);
    }
    let resource_variables = crate::targets::leased_resource(state, job, &mut spec["job"]).await?;
    let base = state.base_url();
    let mut predefined =
        runs::run_predefined_variables(state, &run, &pipeline, &project, &repository);
    predefined.extend([
        ("System.JobAttempt".to_string(), job.attempt.to_string()),
        ("System.JobId".to_string(), job.id.to_string()),
        ("System.StageName".to_string(), job.stage_name.clone()),
        // The name the agent was registered with (Azure's `Agent.Name`).
        (
            "Agent.Name".to_string(),
            job.agent_name.clone().unwrap_or_default(),
        ),
    ]);
    predefined.extend(resource_variables);
    let tasks = crate::tasks::lease_tasks(state, job.id, &spec["job"]).await?;
    // `issecret` outputs of the run's other jobs reach this one in clear (its `$[ ]` variables and
    // conditions need the values), so the agent masks them like the job's own secrets, and so does
    // the server in what this job's agent reports.
    let secret_values = upstream_secret_values(state, job).await?;
    // `System.AccessToken`: good for the repositories of this run's project while this attempt
    // runs (docs/security.md, "Job access tokens"); a secret like any other.
    let access_token =
        state
            .secrets
            .job_token(job.id, job.attempt, job.started_at.unwrap_or_default());
    // The server masks it in what the agent reports; the agent masks it as a secret variable.
    let mut masked = secret_values.clone();
    masked.push(access_token.clone());
    let variable_groups = crate::library::lease_groups(state, run.project_id, &job.spec).await?;
    let mut pipeline_variables: Vec<lockgate_protocol::agent::LeaseVariable> =
        serde_json::from_value(spec["pipelineVariables"].clone()).unwrap_or_default();
    // The fields of the service connections the job's steps name, as `<name>.<Field>`.
    let connection_variables =
        crate::connections::lease_variables(state, run.project_id, job, true).await?;
    masked.extend(
        connection_variables
            .iter()
            .filter(|v| v.secret)
            .map(|v| v.value.clone()),
    );
    new_job_masker(state, job, &masked);
    pipeline_variables.extend(connection_variables);
    pipeline_variables.insert(
        0,
        lockgate_protocol::agent::LeaseVariable {
            name: "System.AccessToken".into(),
            value: access_token,
            secret: true,
            readonly: true,
        },
    );
    let secure_files = crate::secure_files::lease_files(state, run.project_id, job).await?;
    Ok(JobLease {
        job_id: job.id,
        run_id: job.run_id,
        lease_token,
        heartbeat_seconds: (state.lease_seconds / 4).max(1),
        lease_seconds: state.lease_seconds,
        attempt: job.attempt,
        stage_name: job.stage_name.clone(),
        stage_display_name: spec["stageDisplayName"].as_str().map(str::to_string),
        job: spec["job"].clone(),
        variables: spec["variables"].clone(),
        predefined,
        pipeline_variables,
        source: SourceCheckout {
            clone_url: format!("{base}/git/{}/{}.git", project.name, repository.name),
            commit: run.source_commit.clone(),
            branch: run.source_branch.clone(),
        },
        tasks,
        secret_values,
        variable_groups,
        secure_files,
    })
}

async fn heartbeat(
    State(state): State<AppState>,
    _agent: AgentCaller,
    Path(job_id): Path<i64>,
    headers: HeaderMap,
) -> ApiResult<Json<HeartbeatReply>> {
    let (_, hash) = leased_job(&state, job_id, &headers).await?;
    let expires = now_millis() + i64::from(state.lease_seconds) * 1000;
    let cancel = state
        .store
        .renew_lease(job_id, &hash, expires)
        .await?
        .ok_or_else(|| ApiError::conflict("the lease on this job is no longer held"))?;
    Ok(Json(HeartbeatReply {
        cancel_requested: cancel,
    }))
}

/// Largest number of log lines one batch may carry, and of characters in one line.
const MAX_LINES_PER_BATCH: usize = 50_000;
const MAX_LINE_CHARS: usize = 64 * 1024;

async fn events(
    State(state): State<AppState>,
    _agent: AgentCaller,
    Path(job_id): Path<i64>,
    headers: HeaderMap,
    Json(batch): Json<EventBatch>,
) -> ApiResult<StatusCode> {
    let (job, _) = leased_job(&state, job_id, &headers).await?;
    let total_lines: usize = batch
        .events
        .iter()
        .map(|e| {
            if let JobEvent::Log { lines, .. } = e {
                lines.len()
            } else {
                0
            }
        })
        .sum();
    if total_lines > MAX_LINES_PER_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "too many log lines in one batch",
        ));
    }
    // Defence in depth: whatever the agent sends is masked again with the job's secret values
    // before it is stored or shown (an older or modified agent may not mask). The build number a
    // step sets (`build.updatebuildnumber`) and the issues it logs (`task.logissue`, `##[error]`)
    // arrive as log lines ("Build number set to ...", "##[error]..."): agents never rename the run.
    let masker = job_masker(&state, &job).await?;
    let mask = |text: String| -> String {
        if masker.is_empty() {
            text
        } else {
            masker.mask(&text).into_owned()
        }
    };
    let mut pending_lines: Vec<LogLine> = Vec::new();
    let mut steps_changed = false;
    for event in batch.events {
        match event {
            JobEvent::Log { step, lines } => {
                pending_lines.extend(lines.into_iter().map(|text| {
                    let text = mask(text);
                    LogLine {
                        step,
                        text: if text.chars().count() > MAX_LINE_CHARS {
                            text.chars().take(MAX_LINE_CHARS).collect()
                        } else {
                            text
                        },
                    }
                }));
            }
            other => {
                flush_lines(&state, job.id, &mut pending_lines).await?;
                match other {
                    JobEvent::StepStarted { step, display_name } => {
                        record_step(&state, job.id, step, mask(display_name), None).await?;
                        steps_changed = true;
                    }
                    JobEvent::StepFinished {
                        step,
                        display_name,
                        result,
                    } => {
                        record_step(&state, job.id, step, mask(display_name), Some(result)).await?;
                        steps_changed = true;
                    }
                    JobEvent::TestResults { cases } => {
                        let rows: Vec<TestResult> = cases
                            .into_iter()
                            .map(|case| TestResult {
                                run_id: job.run_id,
                                job_id: job.id,
                                suite: mask(case.suite),
                                name: mask(case.name),
                                outcome: case.outcome,
                                duration_ms: case.duration_ms,
                                message: mask(case.message),
                            })
                            .collect();
                        state.store.add_test_results(&rows).await?;
                    }
                    JobEvent::Log { .. } => {}
                }
            }
        }
    }
    flush_lines(&state, job.id, &mut pending_lines).await?;
    if steps_changed {
        state.live.publish(job.id, LiveMessage::Steps);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The clear values of the `issecret` outputs of the other jobs of `job`'s run, and of the secret
/// variables of the variable groups the job uses.
async fn upstream_secret_values(state: &AppState, job: &Job) -> ApiResult<Vec<String>> {
    let others: Vec<Job> = state
        .store
        .jobs_of_run(job.run_id)
        .await?
        .into_iter()
        .filter(|other| other.id != job.id)
        .collect();
    let mut values = state.secrets.secret_output_values(&others);
    if let Some(run) = state.store.run_by_id(job.run_id).await? {
        for variables in crate::library::lease_groups(state, run.project_id, &job.spec)
            .await?
            .into_values()
        {
            values.extend(variables.into_iter().filter(|v| v.secret).map(|v| v.value));
        }
        for variable in
            crate::connections::lease_variables(state, run.project_id, job, false).await?
        {
            if variable.secret {
                values.push(variable.value);
            }
        }
    }
    Ok(values)
}

/// Most maskers kept at once (jobs whose lease ended without a finish leave theirs behind).
const MAX_JOB_MASKERS: usize = 10_000;

/// Builds and keeps the masker for what `job`'s agent reports: the job's secret values (its secret
/// pipeline variables and the queue-time values given for them, decrypted from its spec) and
/// `upstream`, the secret outputs of the run's other jobs.
fn new_job_masker(
    state: &AppState,
    job: &Job,
    upstream: &[String],
) -> lockgate_runner::masking::SecretMasker {
    let masker = lockgate_runner::masking::SecretMasker::new();
    for value in state
        .secrets
        .secret_values(&job.spec)
        .iter()
        .chain(upstream)
    {
        masker.add(value);
    }
    if let Ok(mut maskers) = state.job_maskers.lock() {
        if maskers.len() >= MAX_JOB_MASKERS {
            maskers.clear();
        }
        maskers.insert(job.id, masker.clone());
    }
    masker
}

/// The masker of a leased job: the one built at its lease, or a new one (after a restart).
async fn job_masker(
    state: &AppState,
    job: &Job,
) -> ApiResult<lockgate_runner::masking::SecretMasker> {
    let kept = state
        .job_maskers
        .lock()
        .ok()
        .and_then(|maskers| maskers.get(&job.id).cloned());
    match kept {
        Some(masker) => Ok(masker),
        None => {
            let mut upstream = upstream_secret_values(state, job).await?;
            upstream.push(state.secrets.job_token(
                job.id,
                job.attempt,
                job.started_at.unwrap_or_default(),
            ));
            Ok(new_job_masker(state, job, &upstream))
        }
    }
}

/// Refuses an artifact name or file path that holds one of the job's secret values: it would be
/// shown in the API and the run page, and masking it would give another artifact's name. The
/// answer names the field, never the value.
fn refuse_secret_in(
    masker: &lockgate_runner::masking::SecretMasker,
    field: &str,
    text: &str,
) -> ApiResult<()> {
    if !masker.is_empty() && masker.mask(text) != text {
        return Err(ApiError::bad_request(format!(
            "`{field}` holds the value of one of this job's secrets; an artifact is not stored under it"
        )));
    }
    Ok(())
}

/// Records a step as running (`result` absent) or completed with its result.
async fn record_step(
    state: &AppState,
    job_id: i64,
    step: u32,
    name: String,
    result: Option<String>,
) -> ApiResult<()> {
    let now = now_millis();
    let finished = result.is_some();
    state
        .store
        .upsert_step(&Step {
            job_id,
            position: i64::from(step),
            name,
            status: if finished { "completed" } else { "running" }.into(),
            result: result.map(|r| normalize_result(&r).to_string()),
            started_at: Some(now),
            finished_at: finished.then_some(now),
        })
        .await?;
    Ok(())
}

async fn flush_lines(state: &AppState, job_id: i64, lines: &mut Vec<LogLine>) -> ApiResult<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let lines = std::mem::take(lines);
    let first_line = state
        .store
        .append_log_chunk(job_id, lines.len() as i64, &compress_lines(&lines))
        .await?;
    state
        .live
        .publish(job_id, LiveMessage::Lines { first_line, lines });
    Ok(())
}

/// Results in the API's camelCase spelling whatever case the agent used.
pub fn normalize_result(result: &str) -> &'static str {
    match result.to_ascii_lowercase().as_str() {
        "succeeded" => "succeeded",
        "succeededwithissues" => "succeededWithIssues",
        "canceled" | "cancelled" => "canceled",
        "skipped" => "skipped",
        _ => "failed",
    }
}

/// Most output variables one job may publish.
const MAX_OUTPUTS: usize = 1000;

async fn finish(
    State(state): State<AppState>,
    _agent: AgentCaller,
    Path(job_id): Path<i64>,
    headers: HeaderMap,
    Json(body): Json<FinishJob>,
) -> ApiResult<StatusCode> {
    let (job, hash) = leased_job(&state, job_id, &headers).await?;
    let mut result = normalize_result(&body.result);
    // A failure of a job with `continueOnError: true` is "succeeded with issues" (the run engine's
    // rule, `Engine::job_result`).
    if result == "failed" && crate::run_engine::continues_on_error(&job.spec) {
        result = "succeededWithIssues";
    }
    if body.outputs.len() > MAX_OUTPUTS {
        return Err(ApiError::bad_request(format!(
            "a job may publish at most {MAX_OUTPUTS} output variables"
        )));
    }
    if let Some(name) = body
        .secret_outputs
        .iter()
        .find(|name| !body.outputs.contains_key(*name))
    {
        return Err(ApiError::bad_request(format!(
            "`secretOutputs` names `{name}`, which is not one of the job's `outputs`"
        )));
    }
    // `issecret` outputs, and any output holding one of the job's secret values, are stored
    // encrypted; the scheduler opens them where it reads outputs (`SecretBox::open_jobs`).
    let masker = job_masker(&state, &job).await?;
    let mut secret = body.secret_outputs.clone();
    secret.extend(
        body.outputs
            .iter()
            .filter(|(_, value)| !masker.is_empty() && masker.mask(value) != value.as_str())
            .map(|(name, _)| name.clone()),
    );
    let outputs = state.secrets.seal_outputs(&body.outputs, &secret);
    if !state
        .store
        .finish_leased_job(job.id, &hash, result, &outputs)
        .await?
    {
        return Err(ApiError::conflict(
            "the lease on this job is no longer held",
        ));
    }
    if let Ok(mut maskers) = state.job_maskers.lock() {
        maskers.remove(&job.id);
    }
    state.live.publish(
        job.id,
        LiveMessage::End {
            result: result.to_string(),
        },
    );
    runs::advance_run(&state, job.run_id).await?;
    let followup_state = state.clone();
    let run_id = job.run_id;
    tokio::spawn(async move {
        let _ = runs::queue_batched_followup(&followup_state, run_id).await;
    });
    Ok(StatusCode::NO_CONTENT)
}

/// A safe relative path inside an artifact: `/`-separated, no empty, `.` or `..` parts.
pub fn valid_artifact_path(path: &str) -> bool {
    lockgate_artifacts::validate_file_path(path).is_ok()
}

async fn upload_artifact_file(
    State(state): State<AppState>,
    _agent: AgentCaller,
    Path((job_id, name)): Path<(i64, String)>,
    Query(query): Query<ArtifactFileQuery>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<StatusCode> {
    let (job, _) = leased_job(&state, job_id, &headers).await?;
    // Checked first, so that no later error message repeats a secret the agent did not mask.
    let masker = job_masker(&state, &job).await?;
    refuse_secret_in(&masker, "name", &name)?;
    refuse_secret_in(&masker, "path", &query.path)?;
    // The same rules as a step's publish (lockgate-artifacts): no NUL, CR/LF, `C:`, backslashes, `..`
    // or absolute paths reach the store; the answer names the field.
    if let Err(error) = lockgate_artifacts::validate_name(&name) {
        return Err(ApiError::bad_request(format!("`name`: {error}")));
    }
    if let Err(error) = lockgate_artifacts::validate_file_path(&query.path) {
        return Err(ApiError::bad_request(format!("`path`: {error}")));
    }
    // Streamed to a temporary file while hashing: an artifact is never held in memory.
    let temp = state
        .objects
        .staging_dir(&state.artifacts_dir())
        .join(format!("upload-{}.partial", auth::random_token("")));
    let mut file = tokio::fs::File::create(&temp)
        .await
        .map_err(ApiError::internal)?;
    let mut hasher = blake3::Hasher::new();
    let copied =
        crate::limits::copy_body(body, &mut file, state.limits.max_upload_bytes, |chunk| {
            hasher.update(chunk);
        })
        .await;
    drop(file);
    let size = match copied {
        Ok(size) => size,
        Err(error) => {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(error.into_api_error(state.limits.max_upload_bytes));
        }
    };
    let digest = hasher.finalize().to_hex().to_string();
    state
        .objects
        .put_file(&digest, &temp)
        .await
        .map_err(ApiError::internal)?;
    state
        .store
        .add_artifact_file(&NewArtifactFile {
            run_id: job.run_id,
            job_id: job.id,
            name,
            file_path: query.path,
            size: size as i64,
            digest,
        })
        .await?;
    Ok(StatusCode::CREATED)
}

async fn list_run_artifacts(
    State(state): State<AppState>,
    _agent: AgentCaller,
    Path(job_id): Path<i64>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<lockgate_protocol::api::ArtifactFile>>> {
    let (job, _) = leased_job(&state, job_id, &headers).await?;
    let prefix = format!("/api/v1/agent/jobs/{job_id}/artifact-files");
    Ok(Json(
        crate::api::artifact_list(&state, job.run_id, &prefix).await?,
    ))
}

async fn download_run_artifact(
    State(state): State<AppState>,
    _agent: AgentCaller,
    Path((job_id, file_id)): Path<(i64, i64)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (job, _) = leased_job(&state, job_id, &headers).await?;
    let (_, content) = crate::api::artifact_content(&state, job.run_id, file_id).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        content,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_paths_stay_inside_the_artifact() {
        assert!(valid_artifact_path("bin/app.dll"));
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "./a",
            "a//b",
            "a\\b",
            "a\0b",
            "a\r\nb",
            "C:/x",
        ] {
            assert!(!valid_artifact_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn results_are_normalized() {
        assert_eq!(normalize_result("Succeeded"), "succeeded");
        assert_eq!(
            normalize_result("SucceededWithIssues"),
            "succeededWithIssues"
        );
        assert_eq!(normalize_result("nonsense"), "failed");
    }
}
