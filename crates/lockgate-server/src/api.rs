//! The REST API under `/api/v1` (JSON; shapes in `lockgate_protocol::api`), its OpenAPI document, and
//! the log endpoints (plain text and a server-sent-events stream). Also the helpers the web UI shares.

use std::convert::Infallible;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures_util::stream::{self, Stream};
use lockgate_protocol::api;
use lockgate_store::{Project, Run, RunFilter};
use serde::Deserialize;

use crate::AppState;
use crate::auth::{self, Caller, Role};
use crate::error::{ApiError, ApiResult, Json, Query};
use crate::git;
use crate::live::{LiveMessage, LogLine};
use crate::runs::{self, QueueRequest};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/user", get(current_user))
        .route("/api/v1/tokens", post(create_token))
        .route("/api/v1/agents", post(register_agent))
        .route("/api/v1/users", post(create_user))
        .route(
            "/api/v1/projects/{project}/members/{user}",
            put(set_member_role),
        )
        .route("/api/v1/projects", get(list_projects).post(create_project))
        .route(
            "/api/v1/projects/{project}/repositories",
            get(list_repositories).post(create_repository),
        )
        .route(
            "/api/v1/projects/{project}/pipelines",
            get(list_pipelines).post(create_pipeline),
        )
        .route("/api/v1/pipelines/{id}/runs", post(queue))
        .route(
            "/api/v1/pipelines/{id}/variables",
            get(get_pipeline_variables).put(put_pipeline_variables),
        )
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/runs/{id}", get(show_run))
        .route("/api/v1/runs/{id}/cancel", post(cancel))
        .route("/api/v1/runs/{id}/rerun", post(rerun))
        .route("/api/v1/runs/{id}/rerun-failed", post(rerun_failed))
        .route("/api/v1/runs/{id}/logs", get(run_logs))
        .route("/api/v1/runs/{id}/jobs/{job}/logs", get(job_logs))
        .route(
            "/api/v1/runs/{id}/jobs/{job}/logs/stream",
            get(job_log_stream),
        )
        .route("/api/v1/runs/{id}/artifacts", get(list_artifacts))
        .route("/api/v1/runs/{id}/artifacts/{file}", get(download_artifact))
        .route(
            "/api/v1/runs/{id}/artifact-archives/{name}",
            get(download_artifact_zip),
        )
        .route("/api/v1/runs/{id}/tests", get(list_tests))
}

// ---- shared lookups (API and UI) ----

/// The project by name, if the caller holds at least `role` in it.
pub async fn project_for(
    state: &AppState,
    caller: &Caller,
    name: &str,
    role: Role,
) -> ApiResult<Project> {
    let project = state
        .store
        .project_by_name(name)
        .await?
        .ok_or_else(|| ApiError::not_found("project"))?;
    auth::require_role(state, caller, project.id, role).await?;
    Ok(project)
}

/// The run by id, if the caller holds at least `role` in its project.
pub async fn run_for(state: &AppState, caller: &Caller, id: i64, role: Role) -> ApiResult<Run> {
    let run = state
        .store
        .run_by_id(id)
        .await?
        .ok_or_else(|| ApiError::not_found("run"))?;
    auth::require_role(state, caller, run.project_id, role)
        .await
        .map_err(|e| {
            if e.status == StatusCode::FORBIDDEN {
                e
            } else {
                ApiError::not_found("run")
            }
        })?;
    Ok(run)
}

pub fn clone_url(state: &AppState, project: &str, repo: &str) -> String {
    format!("{}/git/{project}/{repo}.git", state.base_url())
}

pub fn run_json(run: &Run) -> api::Run {
    api::Run {
        id: run.id,
        pipeline_id: run.pipeline_id,
        pipeline: run.pipeline_name.clone(),
        number: run.number,
        name: run.name.clone(),
        title: run.title.clone(),
        status: run.status.clone(),
        result: run.result.clone(),
        reason: run.reason.clone(),
        source_branch: run.source_branch.clone(),
        source_commit: run.source_commit.clone(),
        requested_by: run.requested_by.clone(),
        queued_at: run.queued_at,
        started_at: run.started_at,
        finished_at: run.finished_at,
    }
}

/// How a job's `waitingFor` begins when its stage waits for a manual start.
pub(crate) const MANUAL_START: &str = "a manual start";

pub async fn run_detail(state: &AppState, run: &Run) -> ApiResult<api::RunDetail> {
    let jobs = state.store.jobs_of_run(run.id).await?;
    let steps = state.store.steps_of_run(run.id).await?;
    let mut no_agent = crate::agents::waiting_reasons(state, &jobs).await?;
    let asked = state.store.approvals_of_run(run.id).await?;
    let validations = crate::agentless::waiting_reasons(&asked);
    let mut approvals = crate::approvals::waiting_reasons(&asked);
    if run.status != "completed" {
        // Business hours and the like: why a stage waits before any approval is asked.
        let gates = crate::approvals::stage_gates(state, run, &jobs).await?;
        // Only a stage whose dependencies are done waits for its checks; the others wait for them.
        let settings = crate::run_engine::stage_settings(&jobs);
        let reached = |stage: &str| {
            settings
                .get(stage)
                .and_then(|s| s.stage_depends_on.as_ref())
                .is_none_or(|depends| {
                    jobs.iter()
                        .filter(|j| {
                            depends
                                .iter()
                                .any(|d| d.eq_ignore_ascii_case(&j.stage_name))
                        })
                        .all(|j| j.status == "completed")
                })
        };
        for (stage, reason) in gates.waiting {
            if reached(&stage) {
                approvals.entry(stage).or_insert(reason);
            }
        }
        // Who holds the lock a stage waits for, and how many wait before it.
        for lock in state.store.locks_of_run(run.id).await? {
            if lock.status == "waiting" && gates.lock_pending.contains(&lock.stage) {
                let reason = crate::locks::waiting_reason(state, run, &lock).await?;
                approvals.insert(lock.stage.clone(), reason);
            }
        }
    }
    // A run finishes without the manual stages nobody started; they still wait.
    let manual = crate::locks::manual_stages(&jobs);
    if !manual.is_empty() {
        let started = state.store.stage_starts(run.id).await?;
        for stage in manual {
            if !started.iter().any(|s| s.stage == stage) {
                approvals.entry(stage).or_insert_with(|| {
                    format!(
                        "{MANUAL_START} (`trigger: manual`): `lockgate runs start-stage RUN STAGE` \
                         or Run stage on the run page"
                    )
                });
            }
        }
    }
    Ok(api::RunDetail {
        run: run_json(run),
        jobs: jobs
            .iter()
            .map(|job| api::Job {
                id: job.id,
                stage: job.stage_name.clone(),
                name: job.name.clone(),
                display_name: job.display_name.clone(),
                status: job.status.clone(),
                result: job.result.clone(),
                attempt: job.attempt,
                agent: job.agent_name.clone(),
                started_at: job.started_at,
                finished_at: job.finished_at,
                waiting_for: no_agent
                    .remove(&job.id)
                    .or_else(|| validations.get(&job.id).cloned())
                    .or_else(|| {
                        (job.status == "pending")
                            .then(|| approvals.get(&job.stage_name).cloned())
                            .flatten()
                    }),
                steps: steps
                    .iter()
                    .filter(|s| s.job_id == job.id)
                    .map(|s| api::Step {
                        position: s.position,
                        name: s.name.clone(),
                        status: s.status.clone(),
                        result: s.result.clone(),
                        started_at: s.started_at,
                        finished_at: s.finished_at,
                    })
                    .collect(),
            })
            .collect(),
        diagnostics: serde_json::from_str(&run.diagnostics).unwrap_or_default(),
    })
}

/// Creates a project owned by the caller.
pub async fn new_project(state: &AppState, caller: &Caller, name: &str) -> ApiResult<Project> {
    caller.require_scope("write")?;
    if !git::valid_name(name) {
        return Err(ApiError::bad_request(
            "a project name uses letters, digits, `-`, `_` and `.` (at most 100)",
        ));
    }
    Ok(state.store.create_project(name, caller.user.id).await?)
}

/// Creates a repository (and its bare Git folder) in a project.
pub async fn new_repository(
    state: &AppState,
    caller: &Caller,
    project: &str,
    name: &str,
) -> ApiResult<api::Repository> {
    caller.require_scope("write")?;
    let project = project_for(state, caller, project, Role::Administrator).await?;
    if !git::valid_name(name) {
        return Err(ApiError::bad_request(
            "a repository name uses letters, digits, `-`, `_` and `.` (at most 100)",
        ));
    }
    let repository = state.store.create_repository(project.id, name).await?;
    git::init_bare(&git::repository_dir(state, &project.name, name))
        .await
        .map_err(ApiError::internal)?;
    Ok(api::Repository {
        id: repository.id,
        project: project.name.clone(),
        name: repository.name.clone(),
        clone_url: clone_url(state, &project.name, &repository.name),
    })
}

/// Creates a pipeline for a repository of the project.
pub async fn new_pipeline(
    state: &AppState,
    caller: &Caller,
    project: &str,
    body: &api::CreatePipeline,
) -> ApiResult<api::Pipeline> {
    caller.require_scope("write")?;
    let project = project_for(state, caller, project, Role::Contributor).await?;
    let repository = state
        .store
        .repository(project.id, &body.repository)
        .await?
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "no repository `{}` in project `{}`",
                body.repository, project.name
            ))
        })?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::bad_request(
            "a pipeline needs a name of at most 200 characters",
        ));
    }
    let path = body.yaml_path.trim().trim_start_matches('/');
    if !crate::agent_api::valid_artifact_path(path) {
        return Err(ApiError::bad_request(format!(
            "`{}` is not a relative file path",
            body.yaml_path
        )));
    }
    let pipeline = state
        .store
        .create_pipeline(project.id, repository.id, name, path)
        .await?;
    Ok(api::Pipeline {
        id: pipeline.id,
        project: project.name,
        name: pipeline.name,
        repository: repository.name,
        yaml_path: pipeline.yaml_path,
    })
}

/// Queues a manual run of a pipeline on a branch (default `main`).
pub async fn queue_manual(
    state: &AppState,
    caller: &Caller,
    pipeline_id: i64,
    body: api::QueueRun,
) -> ApiResult<Run> {
    caller.require_scope("write")?;
    let pipeline = state
        .store
        .pipeline_by_id(pipeline_id)
        .await?
        .ok_or_else(|| ApiError::not_found("pipeline"))?;
    auth::require_role(state, caller, pipeline.project_id, Role::Contributor).await?;
    let (project, repository) = crate::runs::pipeline_home(state, &pipeline).await?;
    let branch = body.branch.unwrap_or_else(|| "main".into());
    let branch = if branch.starts_with("refs/") {
        branch
    } else {
        format!("refs/heads/{branch}")
    };
    if branch.contains("..") || branch.contains(char::is_whitespace) || branch.starts_with('-') {
        return Err(ApiError::bad_request(format!("invalid branch `{branch}`")));
    }
    let dir = git::repository_dir(state, &project.name, &repository.name);
    let commit = git::git(
        &dir,
        &[
            "rev-parse",
            "--verify",
            "-q",
            &format!("{branch}^{{commit}}"),
        ],
    )
    .await
    .map_err(|_| ApiError::bad_request(format!("the repository has no branch `{branch}`")))?;
    let commit = String::from_utf8_lossy(&commit).trim().to_string();
    runs::queue_run(
        state,
        QueueRequest {
            pipeline,
            branch,
            commit,
            reason: "manual".into(),
            requested_by: caller.user.name.clone(),
            parameters: body.parameters,
            variables: body.variables,
        },
    )
    .await
}

/// The pipeline by id, if the caller holds at least `role` in its project.
pub async fn pipeline_for(
    state: &AppState,
    caller: &Caller,
    id: i64,
    role: Role,
) -> ApiResult<lockgate_store::Pipeline> {
    let pipeline = state
        .store
        .pipeline_by_id(id)
        .await?
        .ok_or_else(|| ApiError::not_found("pipeline"))?;
    auth::require_role(state, caller, pipeline.project_id, role).await?;
    Ok(pipeline)
}

/// A pipeline variable as the API and the UI show it: a secret's value is never shown.
pub fn pipeline_variable_json(
    variable: &lockgate_store::PipelineVariable,
) -> api::PipelineVariable {
    api::PipelineVariable {
        name: variable.name.clone(),
        value: (!variable.secret).then(|| variable.value.clone()),
        secret: variable.secret,
        allow_override: variable.allow_override,
    }
}

/// Prefixes Azure Pipelines reserves for the system ("Define variables", variable naming
/// restrictions): a variable starting with one is not available to tasks and scripts.
const RESERVED_VARIABLE_PREFIXES: [&str; 5] = ["endpoint", "input", "secret", "path", "securefile"];
const MAX_PIPELINE_VARIABLES: usize = 500;
const MAX_VARIABLE_VALUE: usize = 64 * 1024;

/// Replaces every variable of a pipeline (contributors). A secret sent without a value keeps the
/// value stored for that name, so a client can send back what it read.
pub async fn replace_pipeline_variables(
    state: &AppState,
    caller: &Caller,
    pipeline_id: i64,
    variables: Vec<api::PipelineVariable>,
) -> ApiResult<Vec<lockgate_store::PipelineVariable>> {
    caller.require_scope("write")?;
    let pipeline = pipeline_for(state, caller, pipeline_id, Role::Contributor).await?;
    if variables.len() > MAX_PIPELINE_VARIABLES {
        return Err(ApiError::bad_request(format!(
            "a pipeline has at most {MAX_PIPELINE_VARIABLES} variables"
        )));
    }
    let stored = state.store.pipeline_variables(pipeline.id).await?;
    let rows = checked_variables(state, variables, &stored)?;
    state
        .store
        .set_pipeline_variables(pipeline.id, &rows)
        .await?;
    Ok(rows)
}

/// Variables as a client sent them (a pipeline's, a variable group's), checked and ready to
/// store: names Azure allows and not reserved, unique ignoring case, values of a bounded size; a
/// new secret value sealed, a secret sent without a value keeping the one `stored` for its name.
pub(crate) fn checked_variables(
    state: &AppState,
    variables: Vec<api::PipelineVariable>,
    stored: &[lockgate_store::PipelineVariable],
) -> ApiResult<Vec<lockgate_store::PipelineVariable>> {
    let mut rows: Vec<lockgate_store::PipelineVariable> = Vec::with_capacity(variables.len());
    for variable in variables {
        let name = variable.name.trim().to_string();
        let valid_chars = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
        if name.is_empty() || name.len() > 200 || !valid_chars {
            return Err(ApiError::bad_request(format!(
                "`{name}` is not a variable name: use letters, digits, `.` and `_` (at most 200)"
            )));
        }
        let lower = name.to_ascii_lowercase();
        if let Some(prefix) = RESERVED_VARIABLE_PREFIXES
            .iter()
            .find(|prefix| lower.starts_with(*prefix))
        {
            return Err(ApiError::bad_request(format!(
                "variable `{name}` starts with `{prefix}`, a prefix reserved by the system"
            )));
        }
        if rows.iter().any(|row| row.name.eq_ignore_ascii_case(&name)) {
            return Err(ApiError::bad_request(format!(
                "variable `{name}` is defined twice (names ignore case)"
            )));
        }
        let sent = variable.value.is_some();
        let value = match variable.value {
            Some(value) => value,
            None if variable.secret => stored
                .iter()
                .find(|old| old.secret && old.name.eq_ignore_ascii_case(&name))
                .map(|old| old.value.clone())
                .unwrap_or_default(),
            None => String::new(),
        };
        if value.len() > MAX_VARIABLE_VALUE {
            return Err(ApiError::bad_request(format!(
                "the value of variable `{name}` is longer than {MAX_VARIABLE_VALUE} bytes"
            )));
        }
        // A new secret value is stored encrypted; a kept one is copied as it was stored (sealed).
        let value = if variable.secret && sent {
            state.secrets.seal(&value)
        } else {
            value
        };
        rows.push(lockgate_store::PipelineVariable {
            name,
            value,
            secret: variable.secret,
            allow_override: variable.allow_override,
        });
    }
    Ok(rows)
}

/// Every stored log line of a job, in order.
pub async fn job_log_lines(state: &AppState, job_id: i64) -> ApiResult<Vec<LogLine>> {
    let chunks = state.store.log_chunks(job_id).await?;
    let mut lines = Vec::new();
    for chunk in &chunks {
        lines.extend(crate::log_archive::chunk_lines(&state.objects, chunk).await);
    }
    Ok(lines)
}

// ---- handlers ----

async fn openapi(_caller: Caller) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

async fn current_user(caller: Caller) -> Json<serde_json::Value> {
    Json(
        serde_json::json!({"id": caller.user.id, "name": caller.user.name, "isAdmin": caller.user.is_admin}),
    )
}

async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<api::CreateToken>,
) -> ApiResult<(StatusCode, Json<api::CreatedToken>)> {
    Ok((
        StatusCode::CREATED,
        Json(issue_token(&state, &caller, &body.name, body.scopes).await?),
    ))
}

/// Creates a personal access token; a token can only grant scopes its creator has.
pub async fn issue_token(
    state: &AppState,
    caller: &Caller,
    name: &str,
    scopes: Vec<String>,
) -> ApiResult<api::CreatedToken> {
    let scopes = if scopes.is_empty() {
        vec!["read".to_string(), "write".to_string()]
    } else {
        scopes
    };
    for scope in &scopes {
        if !auth::SCOPES.contains(&scope.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown scope `{scope}` (use read, write, admin)"
            )));
        }
        caller.require_scope(scope)?;
    }
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::bad_request(
            "a token needs a name of at most 100 characters",
        ));
    }
    let secret = auth::random_token("lgp_");
    let token = state
        .store
        .create_access_token(
            caller.user.id,
            name,
            &auth::token_hash(&secret),
            &scopes.join(","),
        )
        .await?;
    Ok(api::CreatedToken {
        id: token.id,
        name: token.name,
        scopes,
        token: secret,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateUser {
    name: String,
    password: String,
    #[serde(default)]
    is_admin: bool,
}

/// Creates a user account (server administrators only).
async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateUser>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let user = new_user(&state, &caller, &body.name, &body.password, body.is_admin).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"id": user.id, "name": user.name, "isAdmin": user.is_admin})),
    ))
}

/// Creates a user account (server administrators only).
pub async fn new_user(
    state: &AppState,
    caller: &Caller,
    name: &str,
    password: &str,
    is_admin: bool,
) -> ApiResult<lockgate_store::User> {
    caller.require_scope("admin")?;
    if !caller.user.is_admin {
        return Err(ApiError::forbidden(
            "only server administrators create users",
        ));
    }
    if !git::valid_name(name) {
        return Err(ApiError::bad_request(
            "a user name uses letters, digits, `-`, `_` and `.` (at most 100)",
        ));
    }
    if password.chars().count() < 8 || password.len() > 1024 {
        return Err(ApiError::bad_request("a password has 8 to 1024 characters"));
    }
    let password = password.to_string();
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(state.store.create_user(name, &hash, is_admin).await?)
}

#[derive(Deserialize)]
struct MemberRole {
    role: String,
}

/// Gives a user a role in a project (project administrators).
async fn set_member_role(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, user)): Path<(String, String)>,
    Json(body): Json<MemberRole>,
) -> ApiResult<Json<serde_json::Value>> {
    let project = grant_role(&state, &caller, &project, &user, &body.role).await?;
    Ok(Json(
        serde_json::json!({"project": project.name, "user": user, "role": body.role}),
    ))
}

/// Gives a user a role in a project (project administrators).
pub async fn grant_role(
    state: &AppState,
    caller: &Caller,
    project: &str,
    user: &str,
    role: &str,
) -> ApiResult<Project> {
    caller.require_scope("write")?;
    let project = project_for(state, caller, project, Role::Administrator).await?;
    if Role::parse(role).is_none() {
        return Err(ApiError::bad_request(
            "a role is reader, contributor or administrator",
        ));
    }
    let user = state
        .store
        .user_by_name(user)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    state
        .store
        .set_project_role(project.id, user.id, role)
        .await?;
    Ok(project)
}

#[derive(Deserialize)]
struct RegisterAgent {
    name: String,
}

/// Registers a remote agent (server administrators only); the token is shown once. Registering an
/// existing name replaces its token.
async fn register_agent(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<RegisterAgent>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    caller.require_scope("admin")?;
    if !caller.user.is_admin {
        return Err(ApiError::forbidden(
            "only server administrators register agents",
        ));
    }
    if !git::valid_name(&body.name) || body.name.starts_with("built-in") {
        return Err(ApiError::bad_request(
            "an agent name uses letters, digits, `-`, `_` and `.` and does not start with `built-in`",
        ));
    }
    let token = auth::random_token("lga_");
    let agent = state
        .store
        .register_agent(&body.name, &auth::token_hash(&token))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"id": agent.id, "name": agent.name, "token": token})),
    ))
}

async fn list_projects(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<api::Project>>> {
    let mut visible = Vec::new();
    for project in state.store.list_projects().await? {
        if auth::require_role(&state, &caller, project.id, Role::Reader)
            .await
            .is_ok()
        {
            visible.push(api::Project {
                id: project.id,
                name: project.name,
            });
        }
    }
    Ok(Json(visible))
}

async fn create_project(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<api::CreateProject>,
) -> ApiResult<(StatusCode, Json<api::Project>)> {
    let project = new_project(&state, &caller, &body.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(api::Project {
            id: project.id,
            name: project.name,
        }),
    ))
}

async fn list_repositories(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<api::Repository>>> {
    let project = project_for(&state, &caller, &project, Role::Reader).await?;
    let repositories = state.store.list_repositories(project.id).await?;
    Ok(Json(
        repositories
            .into_iter()
            .map(|r| api::Repository {
                id: r.id,
                clone_url: clone_url(&state, &project.name, &r.name),
                project: project.name.clone(),
                name: r.name,
            })
            .collect(),
    ))
}

async fn create_repository(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    Json(body): Json<api::CreateRepository>,
) -> ApiResult<(StatusCode, Json<api::Repository>)> {
    Ok((
        StatusCode::CREATED,
        Json(new_repository(&state, &caller, &project, &body.name).await?),
    ))
}

async fn list_pipelines(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<api::Pipeline>>> {
    let project = project_for(&state, &caller, &project, Role::Reader).await?;
    let repositories = state.store.list_repositories(project.id).await?;
    let pipelines = state.store.list_pipelines(project.id).await?;
    Ok(Json(
        pipelines
            .into_iter()
            .map(|p| api::Pipeline {
                id: p.id,
                project: project.name.clone(),
                repository: repositories
                    .iter()
                    .find(|r| r.id == p.repository_id)
                    .map(|r| r.name.clone())
                    .unwrap_or_default(),
                name: p.name,
                yaml_path: p.yaml_path,
            })
            .collect(),
    ))
}

async fn create_pipeline(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    Json(body): Json<api::CreatePipeline>,
) -> ApiResult<(StatusCode, Json<api::Pipeline>)> {
    Ok((
        StatusCode::CREATED,
        Json(new_pipeline(&state, &caller, &project, &body).await?),
    ))
}

async fn queue(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<api::QueueRun>,
) -> ApiResult<(StatusCode, Json<api::Run>)> {
    let run = queue_manual(&state, &caller, id, body).await?;
    Ok((StatusCode::CREATED, Json(run_json(&run))))
}

async fn get_pipeline_variables(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<api::PipelineVariables>> {
    let pipeline = pipeline_for(&state, &caller, id, Role::Reader).await?;
    let variables = state.store.pipeline_variables(pipeline.id).await?;
    Ok(Json(api::PipelineVariables {
        variables: variables.iter().map(pipeline_variable_json).collect(),
    }))
}

async fn put_pipeline_variables(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<api::PipelineVariables>,
) -> ApiResult<Json<api::PipelineVariables>> {
    let variables = replace_pipeline_variables(&state, &caller, id, body.variables).await?;
    Ok(Json(api::PipelineVariables {
        variables: variables.iter().map(pipeline_variable_json).collect(),
    }))
}

#[derive(Deserialize, Default, Clone)]
pub struct RunsQuery {
    pub project: Option<String>,
    pub pipeline: Option<i64>,
    pub branch: Option<String>,
    pub status: Option<String>,
    pub before: Option<i64>,
    pub limit: Option<i64>,
}

/// Runs visible to the caller, newest first, filtered.
pub async fn find_runs(
    state: &AppState,
    caller: &Caller,
    query: &RunsQuery,
) -> ApiResult<Vec<Run>> {
    let project_id = match &query.project {
        Some(name) => Some(project_for(state, caller, name, Role::Reader).await?.id),
        None => None,
    };
    let branch = query.branch.as_ref().filter(|b| !b.is_empty()).map(|b| {
        if b.starts_with("refs/") {
            b.clone()
        } else {
            format!("refs/heads/{b}")
        }
    });
    let filter = RunFilter {
        project_id,
        pipeline_id: query.pipeline,
        branch,
        status: query.status.clone().filter(|s| !s.is_empty()),
        before_id: query.before,
        limit: query.limit.unwrap_or(50),
    };
    let runs = state.store.list_runs(&filter).await?;
    if caller.user.is_admin {
        return Ok(runs);
    }
    let mut visible = Vec::new();
    for run in runs {
        if auth::require_role(state, caller, run.project_id, Role::Reader)
            .await
            .is_ok()
        {
            visible.push(run);
        }
    }
    Ok(visible)
}

async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<RunsQuery>,
) -> ApiResult<Json<Vec<api::Run>>> {
    Ok(Json(
        find_runs(&state, &caller, &query)
            .await?
            .iter()
            .map(run_json)
            .collect(),
    ))
}

async fn show_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<api::RunDetail>> {
    let run = run_for(&state, &caller, id, Role::Reader).await?;
    Ok(Json(run_detail(&state, &run).await?))
}

async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<api::Run>> {
    caller.require_scope("write")?;
    let run = run_for(&state, &caller, id, Role::Contributor).await?;
    if run.status == "completed" {
        return Err(ApiError::conflict("the run has already completed"));
    }
    runs::cancel_run(&state, run.id).await?;
    let run = state
        .store
        .run_by_id(run.id)
        .await?
        .ok_or_else(|| ApiError::not_found("run"))?;
    Ok(Json(run_json(&run)))
}

async fn rerun(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<(StatusCode, Json<api::Run>)> {
    caller.require_scope("write")?;
    let run = run_for(&state, &caller, id, Role::Contributor).await?;
    let new_run = runs::rerun(&state, &run, &caller.user.name).await?;
    Ok((StatusCode::CREATED, Json(run_json(&new_run))))
}

async fn rerun_failed(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<api::Run>> {
    caller.require_scope("write")?;
    let run = run_for(&state, &caller, id, Role::Contributor).await?;
    runs::rerun_failed_jobs(&state, &run).await?;
    let run = state
        .store
        .run_by_id(run.id)
        .await?
        .ok_or_else(|| ApiError::not_found("run"))?;
    Ok(Json(run_json(&run)))
}

fn text_response(text: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

async fn run_logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    let run = run_for(&state, &caller, id, Role::Reader).await?;
    let mut text = String::new();
    for job in state.store.jobs_of_run(run.id).await? {
        text.push_str(&format!(
            "##[section]{} / {}\n",
            job.stage_name, job.display_name
        ));
        for line in job_log_lines(&state, job.id).await? {
            text.push_str(&line.text);
            text.push('\n');
        }
    }
    Ok(text_response(text))
}

async fn job_of_run(
    state: &AppState,
    caller: &Caller,
    run_id: i64,
    job_id: i64,
) -> ApiResult<lockgate_store::Job> {
    let run = run_for(state, caller, run_id, Role::Reader).await?;
    let job = state
        .store
        .job_by_id(job_id)
        .await?
        .filter(|j| j.run_id == run.id);
    job.ok_or_else(|| ApiError::not_found("job"))
}

async fn job_logs(
    State(state): State<AppState>,
    caller: Caller,
    Path((run_id, job_id)): Path<(i64, i64)>,
) -> ApiResult<Response> {
    let job = job_of_run(&state, &caller, run_id, job_id).await?;
    let mut text = String::new();
    for line in job_log_lines(&state, job.id).await? {
        text.push_str(&line.text);
        text.push('\n');
    }
    Ok(text_response(text))
}

#[derive(Deserialize)]
struct StreamQuery {
    /// Send lines after this line number (the number of lines the client already has).
    #[serde(default)]
    after: i64,
}

/// Server-sent events: `lines` events carry `{"first": N, "lines": [{"step", "text"}]}`, `steps` says
/// the step list changed, `end` carries the job result and closes the stream.
async fn job_log_stream(
    State(state): State<AppState>,
    caller: Caller,
    Path((run_id, job_id)): Path<(i64, i64)>,
    Query(query): Query<StreamQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let job = job_of_run(&state, &caller, run_id, job_id).await?;
    // Subscribe before reading what is stored so that no line falls in between.
    let receiver = state.live.subscribe(job.id);
    let stored = job_log_lines(&state, job.id).await?;
    let stored_count = stored.len() as i64;
    let mut initial = Vec::new();
    let from = query.after.max(0);
    if stored_count > from {
        let lines: Vec<LogLine> = stored.into_iter().skip(from as usize).collect();
        initial.push(lines_event(from + 1, &lines));
    }
    let finished = state
        .store
        .job_by_id(job.id)
        .await?
        .filter(|j| j.status == "completed");
    if let Some(job) = &finished {
        initial.push(
            SseEvent::default()
                .event("end")
                .data(job.result.clone().unwrap_or_default()),
        );
    }
    let done = finished.is_some();
    let store = state.store.clone();
    let objects = state.objects.clone();
    let job_id = job.id;
    let mut poll = tokio::time::interval(LIVE_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let live = stream::unfold(
        (receiver, stored_count, done, poll),
        move |(mut receiver, mut seen, done, mut poll)| {
            let store = store.clone();
            let objects = objects.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    tokio::select! {
                        message = receiver.recv() => match message {
                            Ok(LiveMessage::Lines { first_line, lines }) => {
                                let last = first_line + lines.len() as i64 - 1;
                                if last <= seen {
                                    continue;
                                }
                                let skip = (seen + 1 - first_line).max(0) as usize;
                                let fresh: Vec<LogLine> = lines.into_iter().skip(skip).collect();
                                let event = lines_event(seen + 1, &fresh);
                                seen = last;
                                return Some((Ok(event), (receiver, seen, false, poll)));
                            }
                            Ok(LiveMessage::Steps) => {
                                return Some((
                                    Ok(SseEvent::default().event("steps").data("")),
                                    (receiver, seen, false, poll),
                                ));
                            }
                            Ok(LiveMessage::End { result }) => {
                                return Some((
                                    Ok(SseEvent::default().event("end").data(result)),
                                    (receiver, seen, true, poll),
                                ));
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                                // Too slow a reader: tell it to reload from what is stored.
                                return Some((
                                    Ok(SseEvent::default().event("reload").data(seen.to_string())),
                                    (receiver, seen, true, poll),
                                ));
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                        },
                        _ = poll.tick() => {
                            if let Some(event) = stored_since(&store, &objects, job_id, &mut seen).await {
                                let end = event.1;
                                return Some((Ok(event.0), (receiver, seen, end, poll)));
                            }
                        }
                    }
                }
            }
        },
    );
    let events = stream::iter(initial.into_iter().map(Ok)).chain(live);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

use futures_util::StreamExt;

/// How often a live log stream reads the store for what reached it through another server (several
/// servers on one PostgreSQL database: the job's agent may be connected to any of them).
const LIVE_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// What the store holds of a job beyond line `seen`: a `lines` event (and `seen` moved on), else the
/// `end` event (`true`) once the job completed, else nothing. The status is read before the lines, so
/// that lines stored just before the job completed are sent before its end.
async fn stored_since(
    store: &lockgate_store::Store,
    objects: &crate::objects::Objects,
    job_id: i64,
    seen: &mut i64,
) -> Option<(SseEvent, bool)> {
    let completed = match store.job_by_id(job_id).await {
        Ok(Some(job)) if job.status == "completed" => Some(job.result.unwrap_or_default()),
        _ => None,
    };
    let chunks = store.log_chunks_after(job_id, *seen).await.ok()?;
    let first = *seen + 1;
    let mut fresh = Vec::new();
    for chunk in chunks {
        let lines = crate::log_archive::chunk_lines(objects, &chunk).await;
        for (index, line) in lines.into_iter().enumerate() {
            if chunk.first_line + index as i64 > *seen {
                fresh.push(line);
            }
        }
    }
    if !fresh.is_empty() {
        *seen += fresh.len() as i64;
        return Some((lines_event(first, &fresh), false));
    }
    completed.map(|result| (SseEvent::default().event("end").data(result), true))
}

fn lines_event(first: i64, lines: &[LogLine]) -> SseEvent {
    let data = serde_json::json!({"first": first, "lines": lines});
    SseEvent::default().event("lines").data(data.to_string())
}

async fn list_artifacts(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<api::ArtifactFile>>> {
    let run = run_for(&state, &caller, id, Role::Reader).await?;
    let prefix = format!("/api/v1/runs/{}/artifacts", run.id);
    Ok(Json(artifact_list(&state, run.id, &prefix).await?))
}

/// The artifact files of a run, each with its download URL under `prefix`.
pub async fn artifact_list(
    state: &AppState,
    run_id: i64,
    prefix: &str,
) -> ApiResult<Vec<api::ArtifactFile>> {
    let files = state.store.artifact_files(run_id).await?;
    Ok(files
        .into_iter()
        .map(|f| api::ArtifactFile {
            id: f.id,
            download_url: format!("{prefix}/{}", f.id),
            artifact: f.name,
            path: f.file_path,
            size: f.size,
        })
        .collect())
}

/// One artifact file of a run and its content.
pub async fn artifact_content(
    state: &AppState,
    run_id: i64,
    file_id: i64,
) -> ApiResult<(lockgate_store::ArtifactFile, Vec<u8>)> {
    let file = state
        .store
        .artifact_files(run_id)
        .await?
        .into_iter()
        .find(|f| f.id == file_id)
        .ok_or_else(|| ApiError::not_found("artifact file"))?;
    let content = artifact_bytes(state, &file.digest).await?;
    Ok((file, content))
}

/// The stored content of one digest; a digest the rows name but the object storage lacks is a
/// server error that says so.
async fn artifact_bytes(state: &AppState, digest: &str) -> ApiResult<Vec<u8>> {
    state
        .objects
        .get(digest)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::internal(format!(
                "artifact content {digest} is missing from {}",
                state.objects.describe()
            ))
        })
}

async fn download_artifact(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, file_id)): Path<(i64, i64)>,
) -> ApiResult<Response> {
    let run = run_for(&state, &caller, id, Role::Reader).await?;
    let (file, content) = artifact_content(&state, run.id, file_id).await?;
    let file_name = file
        .file_path
        .rsplit('/')
        .next()
        .unwrap_or("file")
        .replace(['"', '\\'], "_");
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
        ],
        Body::from(content),
    )
        .into_response())
}

/// Largest artifact the server zips in memory for one download.
const MAX_ZIP_BYTES: i64 = 256 * 1024 * 1024;

/// A whole artifact as a zip file (deflate), built from the stored files.
async fn download_artifact_zip(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, name)): Path<(i64, String)>,
) -> ApiResult<Response> {
    let run = run_for(&state, &caller, id, Role::Reader).await?;
    let files: Vec<_> = state
        .store
        .artifact_files(run.id)
        .await?
        .into_iter()
        .filter(|f| f.name == name)
        .collect();
    if files.is_empty() {
        return Err(ApiError::not_found("artifact"));
    }
    if files.iter().map(|f| f.size).sum::<i64>() > MAX_ZIP_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "the artifact is too large to zip; download its files one by one",
        ));
    }
    let mut contents = Vec::new();
    for file in &files {
        let bytes = artifact_bytes(&state, &file.digest).await?;
        contents.push((file.file_path.clone(), bytes));
    }
    let archive = tokio::task::spawn_blocking(move || -> zip::result::ZipResult<Vec<u8>> {
        use std::io::Write;
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (path, bytes) in contents {
            writer.start_file(path, options)?;
            writer.write_all(&bytes)?;
        }
        Ok(writer.finish()?.into_inner())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let file_name = name.replace(['"', '\\'], "_");
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}.zip\""),
            ),
        ],
        Body::from(archive),
    )
        .into_response())
}

async fn list_tests(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<api::TestResult>>> {
    let run = run_for(&state, &caller, id, Role::Reader).await?;
    let results = state.store.test_results(run.id).await?;
    Ok(Json(
        results
            .into_iter()
            .map(|t| api::TestResult {
                suite: t.suite,
                name: t.name,
                outcome: t.outcome,
                duration_ms: t.duration_ms,
                message: t.message,
            })
            .collect(),
    ))
}
