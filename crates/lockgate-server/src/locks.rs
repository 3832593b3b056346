//! The exclusive lock of environments and manual stages.
//!
//! Exclusive lock, after Microsoft's "Define approvals and checks" ("Exclusive lock"): an
//! environment's owners put the check on it; a stage deploying there gets the lock after every
//! other check passed (the lock is the last of Azure's five categories), holds it until the stage
//! ends, and waits in the environment's queue meanwhile. `lockBehavior` (the stage's, else the
//! pipeline's; `runLatest` by default) decides what waits: with `runLatest` a request gives way
//! to any newer one (its stage ends as canceled, its jobs' logs naming the newer run: no deploy is
//! dropped silently), with `sequential` every request gets the lock in turn. The queue is decided
//! in the store, atomically ([`lockgate_store::Storage::request_lock`]).
//!
//! Manual stages (`trigger: manual`): the run engine leaves them waiting and finishes the run
//! without them; `POST /api/v1/runs/{id}/stages/{stage}/start` starts one (contributors), which
//! opens the run again.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use lockgate_engine::Gate;
use lockgate_protocol::api;
use lockgate_store::{EnvironmentCheck, EnvironmentLock, Job, NewLockRequest, Run};

use crate::AppState;
use crate::api::run_for;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};

pub(crate) const EXCLUSIVE_LOCK: &str = "exclusiveLock";

pub fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for base in crate::resources::check_bases() {
        router = router.route(
            &format!("{base}/checks/exclusive-lock"),
            get(get_lock_check)
                .put(put_lock_check)
                .delete(delete_lock_check),
        );
    }
    router
        .route("/api/v1/runs/{id}/locks", get(list_locks))
        .route("/api/v1/runs/{id}/stages/{stage}/start", post(start_stage))
}

fn now_millis() -> i64 {
    lockgate_store::now_millis()
}

/// The exclusive-lock checks among a stage's automatic checks, with their settings (a check whose
/// settings cannot be read fails closed: `Err` says why).
pub(crate) fn lock_checks<'c>(
    checks: &[&'c EnvironmentCheck],
) -> Result<Vec<(&'c EnvironmentCheck, api::ExclusiveLock)>, String> {
    let mut out = Vec::new();
    for check in checks.iter().filter(|c| c.kind == EXCLUSIVE_LOCK) {
        let config = serde_json::from_str::<api::ExclusiveLock>(&check.config).map_err(|_| {
            format!(
                "the exclusive lock of {} cannot be read",
                crate::resources::describe(&check.environment)
            )
        })?;
        out.push((*check, config));
    }
    Ok(out)
}

/// How a stage whose other checks passed stands with the locks it needs: open when it holds each,
/// canceled or rejected (with the reason) when a request ended without the lock, pending with what
/// it waits for otherwise. A request not made yet is pending; [`request`] makes it.
pub(crate) fn lock_gate(
    locks: &[EnvironmentLock],
    needed: &[(&EnvironmentCheck, api::ExclusiveLock)],
    stage: &str,
    attempt: i64,
) -> (Gate, Option<String>) {
    let mut waiting: Option<String> = None;
    for (check, _) in needed {
        let request = locks.iter().find(|l| {
            l.stage == stage
                && l.attempt == attempt
                && l.environment.eq_ignore_ascii_case(&check.environment)
        });
        match request.map(|l| l.status.as_str()) {
            Some("held") => {}
            Some("canceled") => return (Gate::Canceled, request.map(|l| l.reason.clone())),
            Some("timedOut") | Some("withdrawn") | Some("released") => {
                let reason = request
                    .map(|l| l.reason.clone())
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| {
                        format!(
                            "the exclusive lock of {} was given up",
                            crate::resources::describe(&check.environment)
                        )
                    });
                return (Gate::Rejected, Some(reason));
            }
            _ => {
                waiting.get_or_insert_with(|| {
                    format!(
                        "the exclusive lock of {}",
                        crate::resources::describe(&check.environment)
                    )
                });
            }
        }
    }
    match waiting {
        Some(reason) => (Gate::Pending, Some(reason)),
        None => (Gate::Open, None),
    }
}

/// Asks for the locks a stage needs (once its other checks passed) and moves on the other runs
/// whose requests changed on the way. True when this stage's request is no longer waiting (the
/// caller looks again).
pub(crate) async fn request_for_stage(
    state: &AppState,
    run: &Run,
    jobs: &[Job],
    stage: &str,
    attempt: i64,
) -> ApiResult<bool> {
    let automatic = state.store.environment_checks(run.project_id).await?;
    let stage_checks = crate::approvals::environment_checks_of_stage(&automatic, jobs, stage);
    let Ok(needed) = lock_checks(&stage_checks) else {
        return Ok(false);
    };
    let behavior = behaviors(jobs).remove(stage).flatten();
    let (changed, others) =
        request(state, run, stage, attempt, behavior.as_deref(), &needed).await?;
    advance_others(state, &others, run.id).await?;
    Ok(changed)
}

async fn request(
    state: &AppState,
    run: &Run,
    stage: &str,
    attempt: i64,
    behavior: Option<&str>,
    needed: &[(&EnvironmentCheck, api::ExclusiveLock)],
) -> ApiResult<(bool, Vec<i64>)> {
    let behavior = match behavior {
        Some(b) if b.eq_ignore_ascii_case("sequential") => "sequential",
        _ => "runLatest",
    };
    let mut changed = false;
    let mut others = Vec::new();
    for (check, config) in needed {
        let outcome = state
            .store
            .request_lock(
                &NewLockRequest {
                    project_id: run.project_id,
                    environment: &check.environment,
                    run_id: run.id,
                    stage,
                    attempt,
                    behavior,
                    timeout_minutes: config.timeout_minutes,
                },
                now_millis(),
            )
            .await?;
        if outcome.request.status != "waiting" {
            changed = true;
        }
        others.extend(outcome.changed_runs);
    }
    Ok((changed, others))
}

/// Why a stage waits for a lock, for the run page: who holds it and how many wait before.
pub(crate) async fn waiting_reason(
    state: &AppState,
    run: &Run,
    lock: &EnvironmentLock,
) -> ApiResult<String> {
    let outcome = state
        .store
        .request_lock(
            &NewLockRequest {
                project_id: run.project_id,
                environment: &lock.environment,
                run_id: run.id,
                stage: &lock.stage,
                attempt: lock.attempt,
                behavior: &lock.behavior,
                timeout_minutes: lock.timeout_minutes,
            },
            now_millis(),
        )
        .await?;
    let mut text = format!(
        "the exclusive lock of {} ({})",
        crate::resources::describe(&lock.environment),
        lock.behavior
    );
    if let Some(holder) = outcome.holder {
        let holder_run = state.store.run_by_id(holder.run_id).await?;
        text.push_str(&format!(
            ": held by run #{} (stage {})",
            holder_run.map_or(holder.run_id, |r| r.number),
            holder.stage
        ));
    }
    if outcome.ahead > 0 {
        text.push_str(&format!(", {} ahead in the queue", outcome.ahead));
    }
    Ok(text)
}

/// Ends a run's lock requests (a stage's, or all when the run finished) and moves on the runs
/// that wait for the locks freed.
pub(crate) async fn release(state: &AppState, run_id: i64, stage: Option<&str>) -> ApiResult<()> {
    let waiting = state
        .store
        .release_locks(run_id, stage, now_millis())
        .await?;
    advance_others(state, &waiting, run_id).await
}

/// Moves on other runs whose lock requests changed.
pub(crate) async fn advance_others(state: &AppState, runs: &[i64], except: i64) -> ApiResult<()> {
    for id in runs.iter().filter(|id| **id != except) {
        Box::pin(crate::runs::advance_run(state, *id)).await?;
    }
    Ok(())
}

/// Moves on the runs that wait for a lock: timeouts and holders that ended without releasing
/// (a crash between a stage's end and its release) are settled there (called periodically).
pub async fn sweep(state: &AppState) -> ApiResult<()> {
    for run_id in state.store.runs_waiting_for_locks().await? {
        crate::runs::advance_run(state, run_id).await?;
    }
    Ok(())
}

/// The stages with `trigger: manual` among a run's jobs that nobody started, and the started ones.
pub(crate) fn manual_stages(jobs: &[Job]) -> Vec<String> {
    crate::run_engine::stage_settings(jobs)
        .into_iter()
        .filter(|(_, settings)| settings.manual)
        .map(|(stage, _)| stage)
        .collect()
}

/// The lock behavior of each stage of a run.
pub(crate) fn behaviors(jobs: &[Job]) -> BTreeMap<String, Option<String>> {
    crate::run_engine::stage_settings(jobs)
        .into_iter()
        .map(|(stage, settings)| (stage, settings.lock_behavior))
        .collect()
}

fn lock_json(lock: &EnvironmentLock) -> api::EnvironmentLock {
    api::EnvironmentLock {
        environment: lock.environment.clone(),
        stage: lock.stage.clone(),
        behavior: lock.behavior.clone(),
        status: lock.status.clone(),
        reason: lock.reason.clone(),
        requested_at: lock.requested_at,
        granted_at: lock.granted_at,
        ended_at: lock.ended_at,
    }
}

async fn list_locks(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<api::EnvironmentLock>>> {
    let run = run_for(&state, &caller, id, Role::Reader).await?;
    let locks = state.store.locks_of_run(run.id).await?;
    Ok(Json(locks.iter().map(lock_json).collect()))
}

/// Starts a manual stage of a run: contributors may (as anyone who may queue runs, in Azure).
/// 404 for a stage the run does not have, 409 when the stage is not manual or was started.
pub(crate) async fn start_manual_stage(
    state: &AppState,
    caller: &Caller,
    id: i64,
    stage: &str,
) -> ApiResult<()> {
    let run = run_for(state, caller, id, Role::Contributor).await?;
    let jobs = state.store.jobs_of_run(run.id).await?;
    let Some(name) = jobs
        .iter()
        .map(|j| j.stage_name.as_str())
        .find(|s| s.eq_ignore_ascii_case(stage))
    else {
        return Err(ApiError::not_found("stage"));
    };
    if !manual_stages(&jobs).iter().any(|s| s == name) {
        return Err(ApiError::conflict(format!(
            "stage `{name}` is not a manual stage (`trigger: manual`): it starts by itself"
        )));
    }
    if jobs
        .iter()
        .any(|j| j.stage_name == name && j.status != "pending")
        || !state
            .store
            .start_stage(run.id, name, &caller.user.name, now_millis())
            .await?
    {
        return Err(ApiError::conflict(format!(
            "stage `{name}` was started already"
        )));
    }
    if run.status == "completed" {
        // The run finished without its manual stages; it is in progress again.
        state.store.set_run_status(run.id, "running", None).await?;
    }
    crate::runs::advance_run(state, run.id).await
}

async fn start_stage(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, stage)): Path<(i64, String)>,
) -> ApiResult<Json<api::Run>> {
    start_manual_stage(&state, &caller, id, &stage).await?;
    let run = run_for(&state, &caller, id, Role::Reader).await?;
    Ok(Json(crate::api::run_json(&run)))
}

async fn get_lock_check(
    State(state): State<AppState>,
    caller: Caller,
    resource: crate::resources::ResourcePath,
) -> ApiResult<Json<api::ExclusiveLock>> {
    let environment = resource.key();
    let project = resource.project;
    crate::approvals::get_automatic(&state, &caller, &project, &environment, EXCLUSIVE_LOCK).await
}

async fn put_lock_check(
    State(state): State<AppState>,
    caller: Caller,
    resource: crate::resources::ResourcePath,
    body: Result<Json<api::ExclusiveLock>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<api::ExclusiveLock>> {
    let environment = resource.key();
    let project = resource.project;
    let Json(body) = body
        .map_err(|e| ApiError::bad_request(format!("invalid exclusive lock: {}", e.body_text())))?;
    if !(1..=43_200).contains(&body.timeout_minutes) {
        return Err(ApiError::bad_request(
            "`timeoutMinutes` must be between 1 and 43200 (30 days)",
        ));
    }
    crate::approvals::put_automatic(
        &state,
        &caller,
        &project,
        &environment,
        EXCLUSIVE_LOCK,
        &body,
    )
    .await?;
    Ok(Json(body))
}

async fn delete_lock_check(
    State(state): State<AppState>,
    caller: Caller,
    resource: crate::resources::ResourcePath,
) -> ApiResult<StatusCode> {
    let environment = resource.key();
    let project = resource.project;
    crate::approvals::delete_automatic(&state, &caller, &project, &environment, EXCLUSIVE_LOCK)
        .await
}
