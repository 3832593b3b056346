//! Task packages uploaded to the server (`lockgate tasks upload`, like `tfx build tasks upload`):
//! `POST /api/v1/tasks` takes a zip of one task folder (server administrators; bounded by
//! `max_upload_bytes`), checks every entry and the task.json with the runner's parser, and stores it in
//! the data folder as `tasks/<id>/<version>.zip` next to `<version>.json`; `GET /api/v1/tasks` lists
//! them. A lease names the packages its job's `task:` steps need ([`lease_tasks`]) and the agent fetches
//! them with `GET /api/v1/agent/jobs/{job}/tasks/{id}/{version}`.

use std::path::PathBuf;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lockgate_protocol::agent::LeaseTask;
use lockgate_protocol::api::TaskPackageInfo;
use lockgate_runner::tasks::package::unpack_package;

use crate::AppState;
use crate::agent_api::AgentCaller;
use crate::auth::{self, Caller};
use crate::error::{ApiError, ApiResult, Json, Query};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/tasks", get(list)).route(
        "/api/v1/agent/jobs/{job}/tasks/{id}/{version}",
        get(download),
    )
}

/// `POST /api/v1/tasks`: its body is streamed, so it lives with the other uploads.
pub fn upload_routes() -> Router<AppState> {
    Router::new().route("/api/v1/tasks", post(upload))
}

fn tasks_dir(state: &AppState) -> PathBuf {
    state.data_dir.join("tasks")
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct UploadQuery {
    /// Replace a stored package of the same id and version (`tfx build tasks upload --overwrite`).
    #[serde(default)]
    overwrite: bool,
}

async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<UploadQuery>,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<TaskPackageInfo>)> {
    caller.require_scope("admin")?;
    if !caller.user.is_admin {
        return Err(ApiError::forbidden(
            "only server administrators upload task packages",
        ));
    }
    let dir = tasks_dir(&state);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(ApiError::internal)?;
    let scratch = dir.join(format!("upload-{}", auth::random_token("")));
    let archive = scratch.with_extension("zip");
    let stored = store_upload(&state, body, &archive, &scratch, query.overwrite).await;
    let _ = tokio::fs::remove_file(&archive).await;
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    Ok((StatusCode::CREATED, Json(stored?)))
}

async fn store_upload(
    state: &AppState,
    body: axum::body::Body,
    archive: &std::path::Path,
    scratch: &std::path::Path,
    overwrite: bool,
) -> ApiResult<TaskPackageInfo> {
    let limit = state.limits.max_upload_bytes;
    let mut file = tokio::fs::File::create(archive)
        .await
        .map_err(ApiError::internal)?;
    let mut hasher = blake3::Hasher::new();
    let size = crate::limits::copy_body(body, &mut file, limit, |chunk| {
        hasher.update(chunk);
    })
    .await
    .map_err(|error| error.into_api_error(limit))?;
    drop(file);
    let (archive_path, scratch_path) = (archive.to_path_buf(), scratch.to_path_buf());
    let package = tokio::task::spawn_blocking(move || unpack_package(&archive_path, &scratch_path))
        .await
        .map_err(ApiError::internal)?
        .map_err(|error| ApiError::bad_request(format!("task package: {error}")))?;
    let definition = package.definition;
    let info = TaskPackageInfo {
        id: definition.id.to_ascii_lowercase(),
        name: definition.name.clone(),
        version: definition.version_text(),
        digest: hasher.finalize().to_hex().to_string(),
        size,
    };
    let existing = stored(state).await?;
    if let Some(other) = existing
        .iter()
        .find(|other| other.name.eq_ignore_ascii_case(&info.name) && other.id != info.id)
    {
        return Err(ApiError::conflict(format!(
            "a task named {} with another id ({}) is already stored",
            other.name, other.id
        )));
    }
    if !overwrite
        && existing
            .iter()
            .any(|other| other.id == info.id && other.version == info.version)
    {
        return Err(ApiError::conflict(format!(
            "task {}@{} is already stored; upload a higher version or pass overwrite=true",
            info.name, info.version
        )));
    }
    let home = tasks_dir(state).join(&info.id);
    tokio::fs::create_dir_all(&home)
        .await
        .map_err(ApiError::internal)?;
    let meta = serde_json::to_vec_pretty(&info).map_err(ApiError::internal)?;
    let meta_temp = home.join(format!("{}.json.partial", info.version));
    tokio::fs::write(&meta_temp, meta)
        .await
        .map_err(ApiError::internal)?;
    // The zip first, then its description: a listed package always has its zip.
    tokio::fs::rename(archive, home.join(format!("{}.zip", info.version)))
        .await
        .map_err(ApiError::internal)?;
    tokio::fs::rename(&meta_temp, home.join(format!("{}.json", info.version)))
        .await
        .map_err(ApiError::internal)?;
    Ok(info)
}

/// Every stored package, by id then version.
async fn stored(state: &AppState) -> ApiResult<Vec<TaskPackageInfo>> {
    let dir = tasks_dir(state);
    tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        let Ok(ids) = std::fs::read_dir(&dir) else {
            return found;
        };
        for id in ids.flatten().filter(|e| e.path().is_dir()) {
            let Ok(files) = std::fs::read_dir(id.path()) else {
                continue;
            };
            for file in files.flatten() {
                let path = file.path();
                if path.extension().is_some_and(|e| e == "json")
                    && let Ok(text) = std::fs::read_to_string(&path)
                    && let Ok(info) = serde_json::from_str::<TaskPackageInfo>(&text)
                {
                    found.push(info);
                }
            }
        }
        found.sort_by_key(|info| (info.id.clone(), version_key(&info.version)));
        found
    })
    .await
    .map_err(ApiError::internal)
}

fn version_key(version: &str) -> Vec<u64> {
    version.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

async fn list(
    State(state): State<AppState>,
    _caller: Caller,
) -> ApiResult<Json<Vec<TaskPackageInfo>>> {
    Ok(Json(stored(&state).await?))
}

/// The stored packages the `task:` steps of a leased job name (by name or id, with their major; the
/// highest version of that major), for the lease. Uploaded packages replace built-in tasks of the same
/// name, as `lockgate run --tasks` does.
pub async fn lease_tasks(
    state: &AppState,
    job_id: i64,
    job: &serde_json::Value,
) -> ApiResult<Vec<LeaseTask>> {
    let mut wanted: Vec<(String, u64)> = Vec::new();
    collect_task_references(job, &mut wanted, 0);
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let packages = stored(state).await?;
    let mut tasks: Vec<LeaseTask> = Vec::new();
    for (name, major) in wanted {
        let best = packages
            .iter()
            .filter(|info| {
                (info.name.eq_ignore_ascii_case(&name) || info.id.eq_ignore_ascii_case(&name))
                    && version_key(&info.version).first() == Some(&major)
            })
            .max_by_key(|info| version_key(&info.version));
        if let Some(info) = best
            && !tasks
                .iter()
                .any(|t| t.id == info.id && t.version == info.version)
        {
            tasks.push(LeaseTask {
                id: info.id.clone(),
                name: info.name.clone(),
                version: info.version.clone(),
                digest: info.digest.clone(),
                download_path: format!(
                    "/api/v1/agent/jobs/{job_id}/tasks/{}/{}",
                    info.id, info.version
                ),
            });
        }
    }
    Ok(tasks)
}

/// Every `{"kind": "task", "task": {"name", "major"}}` step anywhere in a plan job (its steps and its
/// deployment hooks' steps).
fn collect_task_references(value: &serde_json::Value, out: &mut Vec<(String, u64)>, depth: u32) {
    if depth > 64 {
        return;
    }
    match value {
        serde_json::Value::Object(object) => {
            if object.get("kind").and_then(|k| k.as_str()) == Some("task")
                && let Some(task) = object.get("task")
                && let (Some(name), Some(major)) = (
                    task.get("name").and_then(|n| n.as_str()),
                    task.get("major").and_then(|m| m.as_u64()),
                )
                && !out
                    .iter()
                    .any(|(n, m)| n.eq_ignore_ascii_case(name) && *m == major)
            {
                out.push((name.to_string(), major));
            }
            for child in object.values() {
                collect_task_references(child, out, depth + 1);
            }
        }
        serde_json::Value::Array(items) => {
            for child in items {
                collect_task_references(child, out, depth + 1);
            }
        }
        _ => {}
    }
}

async fn download(
    State(state): State<AppState>,
    _agent: AgentCaller,
    Path((job_id, id, version)): Path<(i64, String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    crate::agent_api::leased_job(&state, job_id, &headers).await?;
    let known = stored(&state)
        .await?
        .into_iter()
        .any(|info| info.id == id && info.version == version);
    if !known {
        return Err(ApiError::not_found("task package"));
    }
    let content = tokio::fs::read(tasks_dir(&state).join(&id).join(format!("{version}.zip")))
        .await
        .map_err(|_| ApiError::not_found("task package"))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/zip")],
        content,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_references_are_found_in_steps_and_hooks() {
        let job = serde_json::json!({
            "steps": [{"kind": "task", "task": {"name": "Greet", "major": 1}},
                      {"kind": "script", "value": "echo"},
                      {"kind": "task", "task": {"name": "greet", "major": 1}}],
            "deployment": {"hooks": [{"steps": [{"kind": "task", "task": {"name": "Other", "major": 2}}]}]}
        });
        let mut found = Vec::new();
        collect_task_references(&job, &mut found, 0);
        assert_eq!(found, vec![("Greet".into(), 1), ("Other".into(), 2)]);
        assert!(version_key("1.10.0") > version_key("1.9.3"));
    }
}
