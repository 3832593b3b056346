//! Rollback: redeploy what a previous run deployed to an environment.
//!
//! A redeploy runs again, as a new attempt, the stages of run N that deployed to the environment
//! successfully: the same commit, the same artifacts (those run N published), the same variables
//! (its job specs as queued; runtime values as evaluated then). It is recorded in the ledger like
//! any deployment (a new entry for the new attempt), and every check of the environment applies
//! again, approvals included (they are asked per stage attempt): a rollback to production needs
//! the same approvals as a deployment. After Azure Pipelines' "Rerun stage" of an earlier run.

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use lockgate_protocol::api;
use serde::Deserialize;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/api/v1/projects/{project}/environments/{environment}/redeploy",
        post(redeploy_route),
    )
}

/// `POST .../environments/{environment}/redeploy`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedeployBody {
    /// The id of the run whose deployment to the environment is deployed again.
    pub run: i64,
}

/// Redeploys run `run_id`'s deployment to `environment` (contributors of the project). 404 for a
/// run of another project, 409 for a run in progress or one that never deployed there
/// successfully.
pub(crate) async fn redeploy(
    state: &AppState,
    caller: &Caller,
    project: &str,
    environment: &str,
    run_id: i64,
) -> ApiResult<api::Run> {
    let (project, environment) =
        crate::environments::environment_for(state, caller, project, environment).await?;
    crate::auth::require_role(state, caller, project.id, Role::Contributor).await?;
    let run = state
        .store
        .run_by_id(run_id)
        .await?
        .filter(|r| r.project_id == project.id)
        .ok_or_else(|| ApiError::not_found(format!("run {run_id}")))?;
    if run.status != "completed" {
        return Err(ApiError::conflict(format!(
            "run {run_id} is still in progress"
        )));
    }
    let jobs = state.store.jobs_of_run(run.id).await?;
    let deployed = |job: &lockgate_store::Job| {
        job.environment
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case(&environment.name))
            && matches!(
                job.result.as_deref(),
                Some("succeeded") | Some("succeededWithIssues")
            )
    };
    let stages: Vec<&str> = jobs
        .iter()
        .filter(|j| deployed(j))
        .map(|j| j.stage_name.as_str())
        .collect();
    if stages.is_empty() {
        return Err(ApiError::conflict(format!(
            "run {run_id} has no successful deployment to environment `{}` to redeploy",
            environment.name
        )));
    }
    let again: Vec<i64> = jobs
        .iter()
        .filter(|j| stages.contains(&j.stage_name.as_str()))
        .map(|j| j.id)
        .collect();
    state.store.reset_jobs(&again).await?;
    state.store.set_run_status(run.id, "running", None).await?;
    crate::runs::advance_run(state, run.id).await?;
    let run = state
        .store
        .run_by_id(run.id)
        .await?
        .ok_or_else(|| ApiError::not_found("run"))?;
    Ok(crate::api::run_json(&run))
}

async fn redeploy_route(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, environment)): Path<(String, String)>,
    body: Result<Json<RedeployBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<api::Run>> {
    let Json(body) =
        body.map_err(|e| ApiError::bad_request(format!("invalid redeploy: {}", e.body_text())))?;
    Ok(Json(
        redeploy(&state, &caller, &project, &environment, body.run).await?,
    ))
}
