//! The library: variable groups of a project, after Microsoft's "Add & use variable groups"
//! (learn.microsoft.com/azure/devops/pipelines/library/variable-groups). A group is a named set of
//! variables (secret ones sealed at rest, never returned); YAML uses it with `variables: - group:
//! NAME` at pipeline, stage or job level, where its variables take the place of the entry in the
//! list (later entries win, as for any variable). A pipeline must be authorized to use a group
//! (project administrators, "Pipeline permissions"): until then the stages that use it wait,
//! saying so, and a group that does not exist fails the run when it is queued.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use lockgate_pipeline::plan::Variable;
use lockgate_protocol::agent::LeaseVariable;
use lockgate_protocol::api;
use lockgate_store::{Job, PipelineVariable, VariableGroup};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::project_for;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/projects/{project}/variable-groups",
            get(list_groups),
        )
        .route(
            "/api/v1/projects/{project}/variable-groups/{name}",
            get(get_group).put(put_group).delete(delete_group),
        )
        .route(
            "/api/v1/projects/{project}/variable-groups/{name}/pipelines/{pipeline}",
            post(authorize),
        )
}

/// A group's variables as stored: JSON, secret values sealed.
#[derive(Serialize, Deserialize)]
struct StoredVariable {
    name: String,
    value: String,
    #[serde(default)]
    secret: bool,
}

fn stored_variables(group: &VariableGroup) -> Vec<PipelineVariable> {
    serde_json::from_str::<Vec<StoredVariable>>(&group.variables)
        .unwrap_or_default()
        .into_iter()
        .map(|v| PipelineVariable {
            name: v.name,
            value: v.value,
            secret: v.secret,
            allow_override: false,
        })
        .collect()
}

fn group_json(group: &VariableGroup) -> api::VariableGroup {
    api::VariableGroup {
        name: group.name.clone(),
        description: group.description.clone(),
        variables: stored_variables(group)
            .into_iter()
            .map(|v| api::PipelineVariable {
                value: (!v.secret).then_some(v.value),
                name: v.name,
                secret: v.secret,
                allow_override: false,
            })
            .collect(),
        pipelines: group.pipelines.clone(),
        created_by: group.created_by.clone(),
        updated_at: group.updated_at,
    }
}

async fn find_group(state: &AppState, project_id: i64, name: &str) -> ApiResult<VariableGroup> {
    state
        .store
        .variable_groups(project_id)
        .await?
        .into_iter()
        .find(|g| g.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| ApiError::not_found(format!("variable group `{name}`")))
}

async fn list_groups(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<api::VariableGroup>>> {
    let project = project_for(&state, &caller, &project, Role::Reader).await?;
    let groups = state.store.variable_groups(project.id).await?;
    Ok(Json(groups.iter().map(group_json).collect()))
}

async fn get_group(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<Json<api::VariableGroup>> {
    let project = project_for(&state, &caller, &project, Role::Reader).await?;
    Ok(Json(group_json(
        &find_group(&state, project.id, &name).await?,
    )))
}

async fn put_group(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
    body: Result<Json<api::PutVariableGroup>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<api::VariableGroup>> {
    let project = project_for(&state, &caller, &project, Role::Administrator).await?;
    let Json(body) = body
        .map_err(|e| ApiError::bad_request(format!("invalid variable group: {}", e.body_text())))?;
    crate::environments::check_name(&name)
        .map_err(|why| ApiError::bad_request(format!("variable group name: {why}")))?;
    if body.description.len() > 2_000 {
        return Err(ApiError::bad_request(
            "`description` must be at most 2000 bytes",
        ));
    }
    let existing = state
        .store
        .variable_groups(project.id)
        .await?
        .into_iter()
        .find(|g| g.name.eq_ignore_ascii_case(&name));
    let stored = existing.as_ref().map(stored_variables).unwrap_or_default();
    let rows = crate::api::checked_variables(&state, body.variables, &stored)?;
    let text = serde_json::to_string(
        &rows
            .into_iter()
            .map(|v| StoredVariable {
                name: v.name,
                value: v.value,
                secret: v.secret,
            })
            .collect::<Vec<_>>(),
    )
    .map_err(ApiError::internal)?;
    let group = state
        .store
        .put_variable_group(
            project.id,
            &name,
            &body.description,
            &text,
            &caller.user.name,
        )
        .await?;
    advance_waiting(&state, project.id).await?;
    Ok(Json(group_json(&group)))
}

async fn delete_group(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let project = project_for(&state, &caller, &project, Role::Administrator).await?;
    if !state.store.delete_variable_group(project.id, &name).await? {
        return Err(ApiError::not_found(format!("variable group `{name}`")));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Authorizes a pipeline of the project to use the group (project administrators) and moves on
/// the runs that waited for it.
async fn authorize(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name, pipeline)): Path<(String, String, i64)>,
) -> ApiResult<Json<api::VariableGroup>> {
    let project = project_for(&state, &caller, &project, Role::Administrator).await?;
    let group = find_group(&state, project.id, &name).await?;
    let pipeline = project_pipeline(&state, project.id, pipeline).await?;
    state
        .store
        .authorize_variable_group(
            group.id,
            pipeline.id,
            &caller.user.name,
            lockgate_store::now_millis(),
        )
        .await?;
    advance_waiting(&state, project.id).await?;
    Ok(Json(group_json(
        &find_group(&state, project.id, &name).await?,
    )))
}

/// Moves on the project's runs in progress (one may wait for the group just authorized).
async fn advance_waiting(state: &AppState, project_id: i64) -> ApiResult<()> {
    crate::approvals::advance_project_runs(state, project_id).await
}

/// The groups a job row's spec names (pipeline, stage and job level).
pub(crate) fn groups_of_spec(spec: &str) -> Vec<String> {
    // Most jobs use no group: no parsing for them.
    if !spec.contains("\"kind\":\"group\"") {
        return Vec::new();
    }
    let spec: crate::run_engine::StoredSpec = serde_json::from_str(spec).unwrap_or_default();
    spec.variables
        .iter()
        .chain(&spec.job.variables)
        .filter_map(|v| match v {
            Variable::Group { name, .. } => Some(name.clone()),
            Variable::Value { .. } => None,
        })
        .collect()
}

/// The groups a compiled plan names anywhere; for checking that they exist when a run is queued.
pub(crate) fn groups_of_plan(plan: &lockgate_pipeline::Plan) -> BTreeSet<String> {
    let stage_variables = plan.stages.iter().flat_map(|s| {
        s.variables
            .iter()
            .chain(s.jobs.iter().flat_map(|j| j.variables.iter()))
    });
    plan.variables
        .iter()
        .chain(stage_variables)
        .filter_map(|v| match v {
            Variable::Group { name, .. } => Some(name.clone()),
            Variable::Value { .. } => None,
        })
        .collect()
}

/// Why a run cannot be queued: a group it names does not exist in the project.
pub(crate) async fn missing_groups(
    state: &AppState,
    project_id: i64,
    plan: &lockgate_pipeline::Plan,
) -> ApiResult<Option<String>> {
    let wanted = groups_of_plan(plan);
    if wanted.is_empty() {
        return Ok(None);
    }
    let groups = state.store.variable_groups(project_id).await?;
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|name| !groups.iter().any(|g| g.name.eq_ignore_ascii_case(name)))
        .collect();
    Ok((!missing.is_empty()).then(|| {
        format!(
            "variable group {} does not exist in this project (create it in the library: `lockgate variable-groups set NAME`)",
            missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }))
}

/// The library resources the jobs of a plan name (`names_of`), once each ignoring case, or the
/// reason `through_variable(job, name)` for the first one named through a variable.
pub(crate) fn named_in_plan(
    plan: &lockgate_pipeline::Plan,
    names_of: impl Fn(&lockgate_pipeline::plan::Job) -> Vec<String>,
    through_variable: impl Fn(&str, &str) -> String,
) -> Result<Vec<String>, String> {
    let mut wanted: Vec<String> = Vec::new();
    for job in plan.stages.iter().flat_map(|s| &s.jobs) {
        for name in names_of(job) {
            if name.contains("$(") {
                return Err(through_variable(&job.name, &name));
            }
            if !wanted.iter().any(|w| w.eq_ignore_ascii_case(&name)) {
                wanted.push(name);
            }
        }
    }
    Ok(wanted)
}

/// Those of `wanted` that are not among the `known` names (ignoring case), quoted.
pub(crate) fn missing_names<'k>(
    wanted: Vec<String>,
    known: impl Iterator<Item = &'k str> + Clone,
) -> Vec<String> {
    wanted
        .into_iter()
        .filter(|w| !known.clone().any(|k| k.eq_ignore_ascii_case(w)))
        .map(|m| format!("`{m}`"))
        .collect()
}

/// The stages whose jobs use (`used`: stage and resource names) a library resource the pipeline
/// is not authorized for (`authorized(name)`), with the reason `why(name)` for each (the first).
pub(crate) fn unauthorized<'j>(
    used: impl IntoIterator<Item = (&'j str, Vec<String>)>,
    authorized: impl Fn(&str) -> bool,
    why: impl Fn(&str) -> String,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (stage, names) in used {
        for name in names.iter().filter(|name| !authorized(name)) {
            out.entry(stage.to_string()).or_insert_with(|| why(name));
        }
    }
    out
}

/// The stages of a run that wait for a group's authorization, with why.
pub(crate) async fn unauthorized_stages(
    state: &AppState,
    pipeline_id: i64,
    project_id: i64,
    jobs: &[Job],
) -> ApiResult<BTreeMap<String, String>> {
    let used: Vec<(&str, Vec<String>)> = jobs
        .iter()
        .map(|j| (j.stage_name.as_str(), groups_of_spec(&j.spec)))
        .filter(|(_, groups)| !groups.is_empty())
        .collect();
    if used.is_empty() {
        return Ok(BTreeMap::new());
    }
    let groups = state.store.variable_groups(project_id).await?;
    Ok(unauthorized(
        used,
        |name| {
            groups
                .iter()
                .find(|g| g.name.eq_ignore_ascii_case(name))
                .is_some_and(|g| g.pipelines.contains(&pipeline_id))
        },
        |name| {
            format!(
                "a project administrator to authorize this pipeline to use variable group `{name}` \
                 (`lockgate variable-groups authorize {name} --pipeline {pipeline_id}`)"
            )
        },
    ))
}

/// A pipeline of the project (for authorizing it), or a 404.
pub(crate) async fn project_pipeline(
    state: &AppState,
    project_id: i64,
    pipeline: i64,
) -> ApiResult<lockgate_store::Pipeline> {
    state
        .store
        .pipeline_by_id(pipeline)
        .await?
        .filter(|p| p.project_id == project_id)
        .ok_or_else(|| ApiError::not_found(format!("pipeline {pipeline}")))
}

/// The variables of the groups a leased job names, by group name, secrets opened (the agent
/// puts them in place of the `- group:` entries and masks the secret ones).
pub(crate) async fn lease_groups(
    state: &AppState,
    project_id: i64,
    spec: &str,
) -> ApiResult<BTreeMap<String, Vec<LeaseVariable>>> {
    let mut out = BTreeMap::new();
    let names = groups_of_spec(spec);
    if names.is_empty() {
        return Ok(out);
    }
    let groups = state.store.variable_groups(project_id).await?;
    for name in names {
        if let Some(group) = groups.iter().find(|g| g.name.eq_ignore_ascii_case(&name)) {
            let variables = stored_variables(group)
                .into_iter()
                .map(|v| LeaseVariable {
                    value: if v.secret {
                        state.secrets.open_or_keep(&v.value)
                    } else {
                        v.value
                    },
                    name: v.name,
                    secret: v.secret,
                    readonly: false,
                })
                .collect();
            out.insert(name, variables);
        }
    }
    Ok(out)
}
