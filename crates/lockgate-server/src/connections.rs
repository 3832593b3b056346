//! Service connections of a project's library, after Microsoft's "Service connections"
//! (learn.microsoft.com/azure/devops/pipelines/library/service-endpoints): a named, typed set of
//! fields (secret ones sealed at rest, never returned) that tasks name in an input
//! (`PowerPlatformSPN: dev`, `sshEndpoint: web`, `serviceConnection: api`, `azureSubscription:
//! prod`). A run that names one the project does not have fails when it is queued, as does one
//! that names it through a variable ("Service connections cannot be specified by variable"); a
//! pipeline must be authorized to use it (the stages wait until then); every job that leases one
//! is recorded in its usage history. A job gets the fields as variables `<name>.<Field>` (secret
//! ones secret): what the Power Platform tasks read (`dev.TenantId`, `dev.ApplicationId`,
//! `dev.ClientSecret`, `dev.EnvironmentUrl`).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use lockgate_protocol::agent::LeaseVariable;
use lockgate_protocol::api;
use lockgate_store::{ConnectionUse, Job, ServiceConnection};

use crate::AppState;
use crate::api::project_for;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/projects/{project}/service-connections",
            get(list_connections),
        )
        .route(
            "/api/v1/projects/{project}/service-connections/{name}",
            get(get_connection)
                .put(put_connection)
                .delete(delete_connection),
        )
        .route(
            "/api/v1/projects/{project}/service-connections/{name}/pipelines/{pipeline}",
            post(authorize),
        )
        .route(
            "/api/v1/projects/{project}/service-connections/{name}/usage",
            get(usage),
        )
}

/// A field of a connection kind: its name, whether it must be given, whether it is secret.
type Field = (&'static str, bool, bool);

/// The kinds of connection and their fields.
const KINDS: [(&str, &[Field]); 4] = [
    (
        "generic",
        &[
            ("url", true, false),
            ("username", false, false),
            ("password", false, true),
        ],
    ),
    (
        "powerPlatformSPN",
        &[
            ("tenantId", true, false),
            ("applicationId", true, false),
            ("clientSecret", true, true),
            ("environmentUrl", true, false),
            // Entra ID's sign-in address, for sovereign clouds (default
            // https://login.microsoftonline.com); also how tests reach a local stand-in.
            ("authorityUrl", false, false),
        ],
    ),
    (
        "ssh",
        &[
            ("host", true, false),
            ("port", false, false),
            ("username", true, false),
            ("privateKey", false, true),
            ("password", false, true),
        ],
    ),
    (
        "azureRM",
        &[
            ("tenantId", true, false),
            ("subscriptionId", true, false),
            ("servicePrincipalId", true, false),
            ("servicePrincipalKey", true, true),
        ],
    ),
];

/// The task inputs that name a service connection (lowercase), across the tasks Lockgate knows
/// and the common Azure ones.
const CONNECTION_INPUTS: [&str; 9] = [
    "powerplatformspn",
    "powerplatformenvironment",
    "sshendpoint",
    "serviceconnection",
    "connectedservicename",
    "connectedservicenamearm",
    "azuresubscription",
    "externalendpoint",
    "endpoint",
];

fn kind_fields(kind: &str) -> Option<&'static [Field]> {
    KINDS
        .iter()
        .find(|(name, _)| *name == kind)
        .map(|(_, f)| *f)
}

fn is_http_url(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// The connections a compiled job's steps (deployment hooks' included) name, in order, once each.
pub(crate) fn connections_of_job(job: &lockgate_pipeline::plan::Job) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    // An agentless job's `InvokeRESTAPI@1` may name its base URL itself instead of a connection.
    let agentless = job.kind == lockgate_pipeline::plan::JobKind::Server;
    for step in job.all_steps() {
        // ... or give the whole URL in `urlSuffix`, when its connection input is not used.
        if agentless
            && step
                .inputs
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case("urlSuffix") && is_http_url(v.trim()))
        {
            continue;
        }
        for (key, value) in &step.inputs {
            let value = value.trim();
            // An agentless call given a whole URL names no connection.
            let plain_url = agentless && is_http_url(value);
            if CONNECTION_INPUTS.contains(&key.to_ascii_lowercase().as_str())
                && !value.is_empty()
                && !plain_url
                && !names.iter().any(|n| n.eq_ignore_ascii_case(value))
            {
                names.push(value.to_string());
            }
        }
    }
    names
}

/// Why a run cannot be queued: a connection named through a variable, or one the project lacks.
pub(crate) async fn problems(
    state: &AppState,
    project_id: i64,
    plan: &lockgate_pipeline::Plan,
) -> ApiResult<Option<String>> {
    let wanted = match crate::library::named_in_plan(plan, connections_of_job, |job, name| {
        format!(
            "job `{job}` names service connection `{name}` through a variable: service connections cannot be specified by variable"
        )
    }) {
        Ok(wanted) => wanted,
        Err(why) => return Ok(Some(why)),
    };
    if wanted.is_empty() {
        return Ok(None);
    }
    let known = state.store.service_connections(project_id).await?;
    let missing = crate::library::missing_names(wanted, known.iter().map(|k| k.name.as_str()));
    Ok((!missing.is_empty()).then(|| {
        format!(
            "service connection {} does not exist in this project (create it in the library: `lockgate service-connections set NAME --kind ...`)",
            missing.join(", ")
        )
    }))
}

/// The connections a job row names (recorded when the run was queued).
pub(crate) fn connections_of_row(job: &Job) -> Vec<String> {
    if !job.spec.contains("\"connections\":[\"") {
        return Vec::new();
    }
    serde_json::from_str::<crate::run_engine::StoredSpec>(&job.spec)
        .map(|spec| spec.connections)
        .unwrap_or_default()
}

/// The stages of a run that wait for a connection's authorization, with why.
pub(crate) async fn unauthorized_stages(
    state: &AppState,
    pipeline_id: i64,
    project_id: i64,
    jobs: &[Job],
) -> ApiResult<BTreeMap<String, String>> {
    let used: Vec<(&str, Vec<String>)> = jobs
        .iter()
        .map(|j| (j.stage_name.as_str(), connections_of_row(j)))
        .filter(|(_, names)| !names.is_empty())
        .collect();
    if used.is_empty() {
        return Ok(BTreeMap::new());
    }
    let known = state.store.service_connections(project_id).await?;
    Ok(crate::library::unauthorized(
        used,
        |name| {
            known
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(name))
                .is_some_and(|c| c.pipelines.contains(&pipeline_id))
        },
        |name| {
            format!(
                "a project administrator to authorize this pipeline to use service connection `{name}` \
                 (`lockgate service-connections authorize {name} --pipeline {pipeline_id}`)"
            )
        },
    ))
}

/// The variables a leased job gets for the connections it names (`<name>.<Field>`), secrets
/// opened; with `record`, each use is recorded in the connection's history.
pub(crate) async fn lease_variables(
    state: &AppState,
    project_id: i64,
    job: &Job,
    record: bool,
) -> ApiResult<Vec<LeaseVariable>> {
    let names = connections_of_row(job);
    let mut out = Vec::new();
    if names.is_empty() {
        return Ok(out);
    }
    let known = state.store.service_connections(project_id).await?;
    for name in names {
        let Some(connection) = known.iter().find(|c| c.name.eq_ignore_ascii_case(&name)) else {
            continue;
        };
        for (field, value) in stored_fields(connection) {
            let secret = is_secret(&connection.kind, &field);
            let mut capital = field.clone();
            if let Some(first) = capital.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            out.push(LeaseVariable {
                name: format!("{name}.{capital}"),
                value: if secret {
                    state.secrets.open_or_keep(&value)
                } else {
                    value
                },
                secret,
                readonly: true,
            });
        }
        if !record {
            continue;
        }
        state
            .store
            .record_connection_use(
                connection.id,
                &ConnectionUse {
                    run_id: job.run_id,
                    job_id: job.id,
                    job_attempt: job.attempt,
                    used_at: lockgate_store::now_millis(),
                },
            )
            .await?;
    }
    Ok(out)
}

fn is_secret(kind: &str, field: &str) -> bool {
    kind_fields(kind)
        .and_then(|fields| fields.iter().find(|(name, _, _)| *name == field))
        .is_some_and(|(_, _, secret)| *secret)
}

fn stored_fields(connection: &ServiceConnection) -> BTreeMap<String, String> {
    serde_json::from_str(&connection.fields).unwrap_or_default()
}

fn connection_json(connection: &ServiceConnection) -> api::ServiceConnection {
    api::ServiceConnection {
        name: connection.name.clone(),
        kind: connection.kind.clone(),
        description: connection.description.clone(),
        fields: stored_fields(connection)
            .into_iter()
            .map(|(field, value)| {
                let shown = (!is_secret(&connection.kind, &field)).then_some(value);
                (field, shown)
            })
            .collect(),
        pipelines: connection.pipelines.clone(),
        created_by: connection.created_by.clone(),
        updated_at: connection.updated_at,
    }
}

async fn find(state: &AppState, project_id: i64, name: &str) -> ApiResult<ServiceConnection> {
    state
        .store
        .service_connections(project_id)
        .await?
        .into_iter()
        .find(|c| c.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| ApiError::not_found(format!("service connection `{name}`")))
}

async fn list_connections(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<api::ServiceConnection>>> {
    let project = project_for(&state, &caller, &project, Role::Reader).await?;
    let all = state.store.service_connections(project.id).await?;
    Ok(Json(all.iter().map(connection_json).collect()))
}

async fn get_connection(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<Json<api::ServiceConnection>> {
    let project = project_for(&state, &caller, &project, Role::Reader).await?;
    Ok(Json(connection_json(
        &find(&state, project.id, &name).await?,
    )))
}

/// Checks a connection's fields against its kind: known fields only, the required ones present
/// (a secret may keep its stored value), bounded sizes; new secret values sealed.
fn checked_fields(
    state: &AppState,
    kind: &str,
    fields: BTreeMap<String, Option<String>>,
    stored: &BTreeMap<String, String>,
) -> ApiResult<BTreeMap<String, String>> {
    let Some(known) = kind_fields(kind) else {
        return Err(ApiError::bad_request(format!(
            "`kind` must be one of {}, not `{kind}`",
            KINDS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
        )));
    };
    let mut out = BTreeMap::new();
    for (field, value) in fields {
        let Some((_, _, secret)) = known.iter().find(|(name, _, _)| *name == field) else {
            return Err(ApiError::bad_request(format!(
                "`fields.{field}` is not a field of a {kind} connection (fields: {})",
                known
                    .iter()
                    .map(|(n, _, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let value = match value {
            Some(value) if value.len() > 16 * 1024 => {
                return Err(ApiError::bad_request(format!(
                    "`fields.{field}` is longer than 16384 bytes"
                )));
            }
            Some(value) if *secret => state.secrets.seal(&value),
            Some(value) => value,
            None if *secret => match stored.get(&field) {
                Some(kept) => kept.clone(),
                None => continue,
            },
            None => continue,
        };
        out.insert(field, value);
    }
    for (name, required, _) in known {
        if *required && out.get(*name).is_none_or(|v| v.is_empty()) {
            return Err(ApiError::bad_request(format!(
                "`fields.{name}` is required for a {kind} connection"
            )));
        }
    }
    if kind == "ssh" && !out.contains_key("privateKey") && !out.contains_key("password") {
        return Err(ApiError::bad_request(
            "an ssh connection needs `fields.privateKey` or `fields.password`",
        ));
    }
    if let Some(port) = out.get("port")
        && port.parse::<u16>().is_err()
    {
        return Err(ApiError::bad_request("`fields.port` must be a port number"));
    }
    Ok(out)
}

async fn put_connection(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
    body: Result<Json<api::PutServiceConnection>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<api::ServiceConnection>> {
    let project = project_for(&state, &caller, &project, Role::Administrator).await?;
    let Json(body) = body.map_err(|e| {
        ApiError::bad_request(format!("invalid service connection: {}", e.body_text()))
    })?;
    crate::environments::check_name(&name)
        .map_err(|why| ApiError::bad_request(format!("service connection name: {why}")))?;
    if body.description.len() > 2_000 {
        return Err(ApiError::bad_request(
            "`description` must be at most 2000 bytes",
        ));
    }
    let stored = state
        .store
        .service_connections(project.id)
        .await?
        .into_iter()
        .find(|c| c.name.eq_ignore_ascii_case(&name))
        .filter(|c| c.kind == body.kind)
        .map(|c| stored_fields(&c))
        .unwrap_or_default();
    let fields = checked_fields(&state, &body.kind, body.fields, &stored)?;
    let text = serde_json::to_string(&fields).map_err(ApiError::internal)?;
    let connection = state
        .store
        .put_service_connection(
            project.id,
            &name,
            &body.kind,
            &body.description,
            &text,
            &caller.user.name,
        )
        .await?;
    crate::approvals::advance_project_runs(&state, project.id).await?;
    Ok(Json(connection_json(&connection)))
}

async fn delete_connection(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let project = project_for(&state, &caller, &project, Role::Administrator).await?;
    if !state
        .store
        .delete_service_connection(project.id, &name)
        .await?
    {
        return Err(ApiError::not_found(format!("service connection `{name}`")));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn authorize(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name, pipeline)): Path<(String, String, i64)>,
) -> ApiResult<Json<api::ServiceConnection>> {
    let project = project_for(&state, &caller, &project, Role::Administrator).await?;
    let connection = find(&state, project.id, &name).await?;
    let pipeline = crate::library::project_pipeline(&state, project.id, pipeline).await?;
    state
        .store
        .authorize_service_connection(
            connection.id,
            pipeline.id,
            &caller.user.name,
            lockgate_store::now_millis(),
        )
        .await?;
    crate::approvals::advance_project_runs(&state, project.id).await?;
    Ok(Json(connection_json(
        &find(&state, project.id, &name).await?,
    )))
}

async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<Json<Vec<api::ConnectionUse>>> {
    let project = project_for(&state, &caller, &project, Role::Reader).await?;
    let connection = find(&state, project.id, &name).await?;
    let uses = state.store.connection_uses(connection.id, 100).await?;
    Ok(Json(
        uses.into_iter()
            .map(|u| api::ConnectionUse {
                run_id: u.run_id,
                job_id: u.job_id,
                attempt: u.job_attempt,
                used_at: u.used_at,
            })
            .collect(),
    ))
}
