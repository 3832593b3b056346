//! Secure files of a project's library, after Microsoft's "Secure files"
//! (learn.microsoft.com/azure/devops/pipelines/library/secure-files): files such as signing
//! certificates, provisioning profiles or SSH keys stored sealed at rest, never downloadable
//! through the API, handed only to the jobs of pipelines authorized to use them. A job's steps
//! name one in an input (`DownloadSecureFile@1`'s `secureFile`, and the inputs of the Apple and
//! SSH key installers); a run naming one the project lacks fails when queued, one naming it through
//! a variable too (as with service connections), and an unauthorized pipeline's stage waits for a
//! project administrator. The agent fetches a leased job's files with its lease
//! (`GET /api/v1/agent/jobs/{job}/secure-files/{name}`) and removes them when the job ends.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use lockgate_protocol::agent::LeaseSecureFile;
use lockgate_protocol::api;
use lockgate_store::{Job, NewSecureFile, SecureFile};

use crate::AppState;
use crate::agent_api::AgentCaller;
use crate::api::project_for;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};

/// The largest secure file (Azure's limit is 10 MB).
pub const MAX_SECURE_FILE_BYTES: usize = 10 * 1024 * 1024;

/// Task inputs that name a secure file (lowercase).
const SECURE_FILE_INPUTS: [&str; 4] = [
    "securefile",
    "sshkeysecurefile",
    "certsecurefile",
    "provprofilesecurefile",
];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/projects/{project}/secure-files", get(list_files))
        .route(
            "/api/v1/projects/{project}/secure-files/{name}",
            get(get_file).delete(delete_file),
        )
        .route(
            "/api/v1/projects/{project}/secure-files/{name}/pipelines/{pipeline}",
            post(authorize),
        )
        .route(
            "/api/v1/agent/jobs/{job}/secure-files/{name}",
            get(download),
        )
}

/// The upload route: its body is limited here, not by the API's JSON limit.
pub fn upload_routes() -> Router<AppState> {
    Router::new().route(
        "/api/v1/projects/{project}/secure-files/{name}",
        put(upload),
    )
}

/// The secure files a compiled job's steps (deployment hooks' included) name, in order, once each.
pub(crate) fn secure_files_of_job(job: &lockgate_pipeline::plan::Job) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for step in job.all_steps() {
        for (key, value) in &step.inputs {
            let value = value.trim();
            if SECURE_FILE_INPUTS.contains(&key.to_ascii_lowercase().as_str())
                && !value.is_empty()
                && !names.iter().any(|n| n.eq_ignore_ascii_case(value))
            {
                names.push(value.to_string());
            }
        }
    }
    names
}

/// Why a run cannot be queued: a secure file named through a variable, or one the project lacks.
pub(crate) async fn problems(
    state: &AppState,
    project_id: i64,
    plan: &lockgate_pipeline::Plan,
) -> ApiResult<Option<String>> {
    let wanted = match crate::library::named_in_plan(plan, secure_files_of_job, |job, name| {
        format!(
            "job `{job}` names secure file `{name}` through a variable: name the secure file itself"
        )
    }) {
        Ok(wanted) => wanted,
        Err(why) => return Ok(Some(why)),
    };
    if wanted.is_empty() {
        return Ok(None);
    }
    let known = state.store.secure_files(project_id).await?;
    let missing = crate::library::missing_names(wanted, known.iter().map(|k| k.name.as_str()));
    Ok((!missing.is_empty()).then(|| {
        format!(
            "secure file {} does not exist in this project (upload it to the library: `lockgate secure-files upload NAME FILE`)",
            missing.join(", ")
        )
    }))
}

/// The secure files a job row names (recorded when the run was queued).
pub(crate) fn secure_files_of_row(job: &Job) -> Vec<String> {
    if !job.spec.contains("\"secureFiles\":[\"") {
        return Vec::new();
    }
    serde_json::from_str::<crate::run_engine::StoredSpec>(&job.spec)
        .map(|spec| spec.secure_files)
        .unwrap_or_default()
}

/// The stages of a run that wait for a secure file's authorization, with why.
pub(crate) async fn unauthorized_stages(
    state: &AppState,
    pipeline_id: i64,
    project_id: i64,
    jobs: &[Job],
) -> ApiResult<BTreeMap<String, String>> {
    let used: Vec<(&str, Vec<String>)> = jobs
        .iter()
        .map(|j| (j.stage_name.as_str(), secure_files_of_row(j)))
        .filter(|(_, names)| !names.is_empty())
        .collect();
    if used.is_empty() {
        return Ok(BTreeMap::new());
    }
    let known = state.store.secure_files(project_id).await?;
    Ok(crate::library::unauthorized(
        used,
        |name| {
            known
                .iter()
                .find(|f| f.name.eq_ignore_ascii_case(name))
                .is_some_and(|f| f.pipelines.contains(&pipeline_id))
        },
        |name| {
            format!(
                "a project administrator to authorize this pipeline to use secure file `{name}` \
                 (`lockgate secure-files authorize {name} --pipeline {pipeline_id}`)"
            )
        },
    ))
}

/// The secure files a leased job gets, with where its agent downloads them.
pub(crate) async fn lease_files(
    state: &AppState,
    project_id: i64,
    job: &Job,
) -> ApiResult<Vec<LeaseSecureFile>> {
    let names = secure_files_of_row(job);
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let known = state.store.secure_files(project_id).await?;
    Ok(names
        .iter()
        .filter_map(|name| known.iter().find(|f| f.name.eq_ignore_ascii_case(name)))
        .map(|file| LeaseSecureFile {
            name: file.name.clone(),
            size: u64::try_from(file.size).unwrap_or_default(),
            digest: file.digest.clone(),
            download_path: format!(
                "/api/v1/agent/jobs/{}/secure-files/{}",
                job.id,
                encode_segment(&file.name)
            ),
        })
        .collect())
}

/// `name` as one URL path segment: unreserved characters as they are, every other byte `%XX`.
fn encode_segment(name: &str) -> String {
    let mut out = String::new();
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn file_json(file: &SecureFile) -> api::SecureFile {
    api::SecureFile {
        name: file.name.clone(),
        description: file.description.clone(),
        size: u64::try_from(file.size).unwrap_or_default(),
        digest: file.digest.clone(),
        pipelines: file.pipelines.clone(),
        created_by: file.created_by.clone(),
        updated_at: file.updated_at,
    }
}

async fn find(state: &AppState, project_id: i64, name: &str) -> ApiResult<SecureFile> {
    state
        .store
        .secure_files(project_id)
        .await?
        .into_iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| ApiError::not_found(format!("secure file `{name}`")))
}

async fn list_files(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<api::SecureFile>>> {
    let project = project_for(&state, &caller, &project, Role::Reader).await?;
    let all = state.store.secure_files(project.id).await?;
    Ok(Json(all.iter().map(file_json).collect()))
}

async fn get_file(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<Json<api::SecureFile>> {
    let project = project_for(&state, &caller, &project, Role::Reader).await?;
    Ok(Json(file_json(&find(&state, project.id, &name).await?)))
}

#[derive(serde::Deserialize)]
struct UploadQuery {
    #[serde(default)]
    description: String,
}

async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
    Query(query): Query<UploadQuery>,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<api::SecureFile>)> {
    let project = project_for(&state, &caller, &project, Role::Administrator).await?;
    check_file_name(&name)?;
    if query.description.len() > 2_000 {
        return Err(ApiError::bad_request(
            "`description` must be at most 2000 bytes",
        ));
    }
    let content = axum::body::to_bytes(body, MAX_SECURE_FILE_BYTES)
        .await
        .map_err(|_| crate::limits::payload_too_large(MAX_SECURE_FILE_BYTES as u64))?;
    if content.is_empty() {
        return Err(ApiError::bad_request("a secure file must not be empty"));
    }
    let existed = state
        .store
        .secure_files(project.id)
        .await?
        .iter()
        .any(|f| f.name.eq_ignore_ascii_case(&name));
    let sealed = state
        .secrets
        .seal(&base64::engine::general_purpose::STANDARD.encode(&content));
    let file = state
        .store
        .put_secure_file(&NewSecureFile {
            project_id: project.id,
            name: name.clone(),
            description: query.description,
            content: sealed,
            size: content.len() as i64,
            digest: blake3::hash(&content).to_hex().to_string(),
            user: caller.user.name.clone(),
        })
        .await?;
    crate::approvals::advance_project_runs(&state, project.id).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(file_json(&file))))
}

/// A secure file's name: what `DownloadSecureFile@1` names it by and the file name it gets on the
/// agent, so no folders.
fn check_file_name(name: &str) -> ApiResult<()> {
    let bad = |why: &str| Err(ApiError::bad_request(format!("secure file name: {why}")));
    if name.is_empty() || name.len() > 255 {
        return bad("must be 1 to 255 bytes");
    }
    if name == "." || name == ".." || name.contains(['/', '\\']) {
        return bad("must be a file name, without folders");
    }
    if name.chars().any(char::is_control) || name.contains("$(") {
        return bad("must not hold control characters or `$(`");
    }
    Ok(())
}

async fn delete_file(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let project = project_for(&state, &caller, &project, Role::Administrator).await?;
    if !state.store.delete_secure_file(project.id, &name).await? {
        return Err(ApiError::not_found(format!("secure file `{name}`")));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn authorize(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name, pipeline)): Path<(String, String, i64)>,
) -> ApiResult<Json<api::SecureFile>> {
    let project = project_for(&state, &caller, &project, Role::Administrator).await?;
    let file = find(&state, project.id, &name).await?;
    let pipeline = crate::library::project_pipeline(&state, project.id, pipeline).await?;
    state
        .store
        .authorize_secure_file(
            file.id,
            pipeline.id,
            &caller.user.name,
            lockgate_store::now_millis(),
        )
        .await?;
    crate::approvals::advance_project_runs(&state, project.id).await?;
    Ok(Json(file_json(&find(&state, project.id, &name).await?)))
}

/// A leased job's secure file, for its agent: only one its steps name, while the lease holds.
async fn download(
    State(state): State<AppState>,
    _agent: AgentCaller,
    Path((job_id, name)): Path<(i64, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (job, _) = crate::agent_api::leased_job(&state, job_id, &headers).await?;
    if !secure_files_of_row(&job)
        .iter()
        .any(|n| n.eq_ignore_ascii_case(&name))
    {
        return Err(ApiError::not_found(format!(
            "secure file `{name}` of this job"
        )));
    }
    let run = state
        .store
        .run_by_id(job.run_id)
        .await?
        .ok_or_else(|| ApiError::not_found("run"))?;
    let sealed = state
        .store
        .secure_file_content(run.project_id, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("secure file `{name}`")))?;
    let clear = state
        .secrets
        .open(&sealed)
        .map_err(|_| ApiError::internal("a secure file cannot be opened with this server's key"))?;
    let content = base64::engine::general_purpose::STANDARD
        .decode(clear)
        .map_err(ApiError::internal)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        content,
    )
        .into_response())
}
