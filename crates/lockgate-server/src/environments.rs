//! Environments as objects and the deployment ledger: environments are created on first use when a
//! run with deployment jobs is queued, a ledger entry is written when a deployment job is leased
//! (with the commit, the run's artifacts so far and the job's variables, secrets redacted) and
//! completes with its job (the store does that). Also the API routes over them, "what is where" per
//! pipeline, and the name rules shared with the UI.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use lockgate_protocol::agent::JobLease;
use lockgate_protocol::api;
use lockgate_store::{Deployment, Environment, Job, NewDeployment, NewJob, Project};
use serde::Deserialize;

use crate::AppState;
use crate::api::{pipeline_for, project_for};
use crate::auth::{self, Caller, Role};
use crate::error::{ApiError, ApiResult, Json, Query};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/projects/{project}/environments",
            get(list_environments).post(create_environment),
        )
        .route(
            "/api/v1/projects/{project}/environments/{environment}",
            get(show_environment).patch(update_environment),
        )
        .route(
            "/api/v1/projects/{project}/environments/{environment}/deployments",
            get(list_deployments),
        )
        .route("/api/v1/pipelines/{id}/environments", get(what_is_where))
        .route(
            "/api/v1/pipelines/{id}/environments/diff",
            get(environment_diff),
        )
}

/// Longest environment name.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
/// How many deployments `GET .../environments/{environment}` shows.
pub const SHOWN_DEPLOYMENTS: i64 = 20;

/// Checks an environment name: 1 to 100 letters, digits, `-`, `_` and spaces, not starting or
/// ending with a space. No `.`: in `environment: name.resource` it separates the resource.
pub fn check_name(name: &str) -> Result<(), String> {
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_CHARS {
        return Err(format!(
            "an environment name has 1 to {MAX_NAME_CHARS} characters, this one has {count}"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '-' | '_' | ' ')))
    {
        return Err(format!(
            "an environment name holds only letters, digits, `-`, `_` and spaces, not {bad:?}"
        ));
    }
    if name.starts_with(' ') || name.ends_with(' ') {
        return Err("an environment name does not start or end with a space".into());
    }
    Ok(())
}

/// The environments the deployment jobs of a run to be queued name, each once (ignoring case), or
/// the first name that breaks the rules with why, naming its job.
pub fn environments_of(jobs: &[NewJob]) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    for job in jobs {
        let Some(name) = &job.environment else {
            continue;
        };
        check_name(name).map_err(|why| {
            format!(
                "job `{}` of stage `{}`: `environment` `{name}`: {why}",
                job.name, job.stage_name
            )
        })?;
        if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            names.push(name.clone());
        }
    }
    Ok(names)
}

/// Creates the environments a run deploys to that its project does not have yet, with the run's
/// requester as creator and first owner ("Create and target an environment": an environment a
/// YAML pipeline refers to is created when the user is known).
pub async fn create_on_first_use(
    state: &AppState,
    project_id: i64,
    names: &[String],
    requested_by: &str,
) -> ApiResult<()> {
    for name in names {
        state
            .store
            .ensure_environment(project_id, name, requested_by)
            .await?;
    }
    Ok(())
}

/// Writes the ledger entry of a deployment job the moment an agent leases it: the run's commit and
/// branch, the artifacts the run published so far and the job's variables as leased, secret ones as
/// `***` and every other value masked with the job's secrets. Jobs without an environment deploy
/// nothing.
pub async fn record_start(
    state: &AppState,
    job: &Job,
    lease: &JobLease,
    masker: &lockgate_runner::masking::SecretMasker,
) -> ApiResult<()> {
    let Some(name) = &job.environment else {
        return Ok(());
    };
    let Some(run) = state.store.run_by_id(job.run_id).await? else {
        return Ok(());
    };
    let environment = state
        .store
        .ensure_environment(run.project_id, name, &run.requested_by)
        .await?;
    let artifacts = artifact_summary(&state.store.artifact_files(run.id).await?);
    let variables = variables_snapshot(lease, masker);
    let resource = lease.job["environment"]["resourceName"]
        .as_str()
        .map(str::to_string);
    state
        .store
        .start_deployment(&NewDeployment {
            environment_id: environment.id,
            run_id: run.id,
            job_id: job.id,
            attempt: job.attempt,
            pipeline_id: run.pipeline_id,
            stage_name: job.stage_name.clone(),
            job_name: job.name.clone(),
            resource_name: resource,
            source_commit: run.source_commit.clone(),
            source_branch: run.source_branch.clone(),
            artifacts: serde_json::to_string(&artifacts).map_err(ApiError::internal)?,
            variables: serde_json::to_string(&variables).map_err(ApiError::internal)?,
            requested_by: run.requested_by.clone(),
        })
        .await?;
    Ok(())
}

/// Each artifact of a run once: name, file count, total size and one digest over its files.
fn artifact_summary(files: &[lockgate_store::ArtifactFile]) -> Vec<api::DeployedArtifact> {
    let mut by_name: BTreeMap<&str, Vec<&lockgate_store::ArtifactFile>> = BTreeMap::new();
    for file in files {
        by_name.entry(&file.name).or_default().push(file);
    }
    by_name
        .into_iter()
        .map(|(name, mut files)| {
            files.sort_by(|a, b| a.file_path.cmp(&b.file_path));
            let mut hasher = blake3::Hasher::new();
            for file in &files {
                hasher.update(file.file_path.as_bytes());
                hasher.update(b"\0");
                hasher.update(file.digest.as_bytes());
                hasher.update(b"\n");
            }
            api::DeployedArtifact {
                name: name.to_string(),
                digest: hasher.finalize().to_hex().to_string(),
                files: files.len() as i64,
                size: files.iter().map(|f| f.size).sum(),
            }
        })
        .collect()
}

/// The variables a job was leased with, by name: the pipeline's own (secret ones as `***`), then
/// the YAML's (pipeline, stage, job scope; later scopes win, and YAML wins over the pipeline's own,
/// as when the job runs). Every value is masked with the job's secrets.
fn variables_snapshot(
    lease: &JobLease,
    masker: &lockgate_runner::masking::SecretMasker,
) -> BTreeMap<String, String> {
    let mut snapshot: BTreeMap<String, String> = BTreeMap::new();
    let mut set = |name: &str, value: String| {
        // Variable names are case-insensitive: the last definition replaces an earlier spelling.
        snapshot.retain(|existing, _| !existing.eq_ignore_ascii_case(name));
        snapshot.insert(name.to_string(), value);
    };
    for variable in &lease.pipeline_variables {
        let value = if variable.secret {
            "***".to_string()
        } else {
            masker.mask(&variable.value).into_owned()
        };
        set(&variable.name, value);
    }
    let yaml = lease
        .variables
        .as_array()
        .into_iter()
        .chain(lease.job["variables"].as_array())
        .flatten();
    for variable in yaml {
        if let (Some("value"), Some(name), Some(value)) = (
            variable["kind"].as_str(),
            variable["name"].as_str(),
            variable["value"].as_str(),
        ) {
            set(name, masker.mask(value).into_owned());
        }
    }
    snapshot
}

// ---- JSON shapes ----

pub fn deployment_json(deployment: &Deployment) -> api::Deployment {
    api::Deployment {
        id: deployment.id,
        environment: deployment.environment.clone(),
        run_id: deployment.run_id,
        run_name: deployment.run_name.clone(),
        run_number: deployment.run_number,
        pipeline_id: deployment.pipeline_id,
        pipeline: deployment.pipeline_name.clone(),
        stage: deployment.stage_name.clone(),
        job: deployment.job_name.clone(),
        attempt: deployment.attempt,
        resource: deployment.resource_name.clone(),
        commit: deployment.source_commit.clone(),
        branch: deployment.source_branch.clone(),
        // Stored by `record_start` in these shapes; a row the upgrade wrote has none.
        artifacts: serde_json::from_str(&deployment.artifacts).unwrap_or_default(),
        variables: serde_json::from_str(&deployment.variables).unwrap_or_default(),
        requested_by: deployment.requested_by.clone(),
        status: deployment.status.clone(),
        result: deployment.result.clone(),
        started_at: deployment.started_at,
        finished_at: deployment.finished_at,
    }
}

fn environment_json(
    project: &Project,
    environment: &Environment,
    owners: Vec<String>,
    latest: Option<&Deployment>,
    deployments: &[Deployment],
) -> api::Environment {
    api::Environment {
        id: environment.id,
        project: project.name.clone(),
        name: environment.name.clone(),
        description: environment.description.clone(),
        created_at: environment.created_at,
        created_by: environment.created_by.clone(),
        owners,
        latest_deployment: latest.map(deployment_json),
        deployments: deployments.iter().map(deployment_json).collect(),
        resources: Vec::new(),
    }
}

// ---- shared lookups (API and UI) ----

/// The project's environment with this name (ignoring case), if the caller may read the project.
pub async fn environment_for(
    state: &AppState,
    caller: &Caller,
    project: &str,
    name: &str,
) -> ApiResult<(Project, Environment)> {
    let project = project_for(state, caller, project, Role::Reader).await?;
    let environment = state
        .store
        .environment_by_name(project.id, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("environment `{name}`")))?;
    Ok((project, environment))
}

/// An environment with its owners, its newest successful deployment and its newest deployments.
pub async fn environment_detail(
    state: &AppState,
    project: &Project,
    environment: &Environment,
) -> ApiResult<api::Environment> {
    let owners = state.store.environment_owners(environment.id).await?;
    let deployments = state
        .store
        .deployments(environment.id, None, SHOWN_DEPLOYMENTS)
        .await?;
    let latest = state
        .store
        .latest_deployments(project.id)
        .await?
        .into_iter()
        .find(|d| d.environment_id == environment.id);
    let mut detail = environment_json(project, environment, owners, latest.as_ref(), &deployments);
    detail.resources = crate::agents::environment_resources(state, environment.id).await?;
    Ok(detail)
}

/// A project's environments, each with its owners and newest successful deployment.
pub async fn environment_list(
    state: &AppState,
    project: &Project,
) -> ApiResult<Vec<api::Environment>> {
    let environments = state.store.list_environments(project.id).await?;
    let latest = state.store.latest_deployments(project.id).await?;
    let mut list = Vec::with_capacity(environments.len());
    for environment in &environments {
        let owners = state.store.environment_owners(environment.id).await?;
        let newest = latest.iter().find(|d| d.environment_id == environment.id);
        list.push(environment_json(project, environment, owners, newest, &[]));
    }
    Ok(list)
}

// ---- API ----

async fn list_environments(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<api::Environment>>> {
    let project = project_for(&state, &caller, &project, Role::Reader).await?;
    Ok(Json(environment_list(&state, &project).await?))
}

async fn create_environment(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    Json(body): Json<api::CreateEnvironment>,
) -> ApiResult<(StatusCode, Json<api::Environment>)> {
    let (project, environment) =
        new_environment(&state, &caller, &project, &body.name, &body.description).await?;
    Ok((
        StatusCode::CREATED,
        Json(environment_detail(&state, &project, &environment).await?),
    ))
}

/// Creates an environment (contributors), the caller its first owner, after checking its name and
/// description.
pub async fn new_environment(
    state: &AppState,
    caller: &Caller,
    project: &str,
    name: &str,
    description: &str,
) -> ApiResult<(Project, Environment)> {
    let project = project_for(state, caller, project, Role::Contributor).await?;
    check_name(name).map_err(|why| ApiError::bad_request(format!("`name`: {why}")))?;
    check_description(description)?;
    let environment = state
        .store
        .create_environment(project.id, name, description, &caller.user.name)
        .await?;
    Ok((project, environment))
}

fn check_description(description: &str) -> ApiResult<()> {
    let count = description.chars().count();
    if count > MAX_DESCRIPTION_CHARS {
        return Err(ApiError::bad_request(format!(
            "`description`: at most {MAX_DESCRIPTION_CHARS} characters, this one has {count}"
        )));
    }
    Ok(())
}

async fn show_environment(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<Json<api::Environment>> {
    let (project, environment) = environment_for(&state, &caller, &project, &name).await?;
    Ok(Json(
        environment_detail(&state, &project, &environment).await?,
    ))
}

/// Whether the caller may change the environment: a server or project administrator, or one of
/// its owners (with a credential that may write).
pub async fn may_change(
    state: &AppState,
    caller: &Caller,
    project: &Project,
    environment: &Environment,
) -> ApiResult<bool> {
    if !caller.has_scope("write") {
        return Ok(false);
    }
    if auth::require_role(state, caller, project.id, Role::Administrator)
        .await
        .is_ok()
    {
        return Ok(true);
    }
    let owners = state.store.environment_owners(environment.id).await?;
    Ok(owners.iter().any(|owner| owner == &caller.user.name))
}

/// Changes an environment's description and owners, after checking who asks and what is asked.
pub async fn change_environment(
    state: &AppState,
    caller: &Caller,
    project: &Project,
    environment: &Environment,
    update: &api::UpdateEnvironment,
) -> ApiResult<()> {
    caller.require_scope("write")?;
    if !may_change(state, caller, project, environment).await? {
        return Err(ApiError::forbidden(
            "only the environment's owners and the project's administrators may change it",
        ));
    }
    if let Some(description) = &update.description {
        check_description(description)?;
    }
    if let Some(owners) = &update.owners {
        if owners.is_empty() {
            return Err(ApiError::bad_request(
                "`owners`: an environment keeps at least one owner",
            ));
        }
        for owner in owners {
            if state.store.user_by_name(owner).await?.is_none() {
                return Err(ApiError::bad_request(format!(
                    "`owners`: there is no user `{owner}`"
                )));
            }
        }
    }
    state
        .store
        .update_environment(
            environment.id,
            update.description.as_deref(),
            update.owners.as_deref(),
        )
        .await?;
    Ok(())
}

async fn update_environment(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
    Json(body): Json<api::UpdateEnvironment>,
) -> ApiResult<Json<api::Environment>> {
    let (project, environment) = environment_for(&state, &caller, &project, &name).await?;
    change_environment(&state, &caller, &project, &environment, &body).await?;
    let environment = state
        .store
        .environment_by_name(project.id, &environment.name)
        .await?
        .unwrap_or(environment);
    Ok(Json(
        environment_detail(&state, &project, &environment).await?,
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LedgerQuery {
    pub limit: Option<i64>,
    pub before: Option<i64>,
}

/// Most ledger entries one page returns.
pub const MAX_LEDGER_PAGE: i64 = 1000;

/// The `limit` of a ledger page: 1 to 1000, 50 when not given.
pub fn ledger_limit(limit: Option<i64>) -> ApiResult<i64> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=MAX_LEDGER_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "`limit`: between 1 and {MAX_LEDGER_PAGE}, not {n}"
        ))),
    }
}

async fn list_deployments(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
    Query(query): Query<LedgerQuery>,
) -> ApiResult<Json<Vec<api::Deployment>>> {
    let limit = ledger_limit(query.limit)?;
    let (_, environment) = environment_for(&state, &caller, &project, &name).await?;
    let deployments = state
        .store
        .deployments(environment.id, query.before, limit)
        .await?;
    Ok(Json(deployments.iter().map(deployment_json).collect()))
}

/// "What is where" for a pipeline, by environment name.
pub async fn deployed_versions(
    state: &AppState,
    pipeline_id: i64,
) -> ApiResult<Vec<api::DeployedVersion>> {
    Ok(state
        .store
        .deployed_versions(pipeline_id)
        .await?
        .iter()
        .map(|version| api::DeployedVersion {
            environment: version.deployment.environment.clone(),
            deployment: deployment_json(&version.deployment),
            behind: version.behind,
        })
        .collect())
}

async fn what_is_where(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<api::DeployedVersion>>> {
    let pipeline = pipeline_for(&state, &caller, id, Role::Reader).await?;
    Ok(Json(deployed_versions(&state, pipeline.id).await?))
}

#[derive(serde::Deserialize)]
struct DiffQuery {
    from: String,
    to: String,
}

/// Lines of `git ARGS` in the repository, or an error naming the command.
async fn git_lines(repo_dir: &std::path::Path, args: &[&str]) -> ApiResult<Vec<String>> {
    let stdout = crate::git::git(repo_dir, args)
        .await
        .map_err(ApiError::internal)?;
    Ok(String::from_utf8_lossy(&stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// The changes between two sides keyed by name: those whose value differs or that one side lacks.
fn changed<'a>(
    from: impl IntoIterator<Item = (&'a str, &'a str)>,
    to: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<(String, Option<String>, Option<String>)> {
    let from: std::collections::BTreeMap<&str, &str> = from.into_iter().collect();
    let to: std::collections::BTreeMap<&str, &str> = to.into_iter().collect();
    let mut names: Vec<&str> = from.keys().chain(to.keys()).copied().collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .filter(|name| from.get(name) != to.get(name))
        .map(|name| {
            (
                name.to_string(),
                from.get(name).map(|v| v.to_string()),
                to.get(name).map(|v| v.to_string()),
            )
        })
        .collect()
}

/// What promoting `from`'s deployed version to `to` changes: commits, files, artifacts and
/// variables between the newest successful deployments of the pipeline to the two environments.
async fn environment_diff(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(query): Query<DiffQuery>,
) -> ApiResult<Json<api::EnvironmentDiff>> {
    let pipeline = pipeline_for(&state, &caller, id, Role::Reader).await?;
    let versions = deployed_versions(&state, pipeline.id).await?;
    let find = |name: &str| {
        versions
            .iter()
            .find(|v| v.environment.eq_ignore_ascii_case(name))
            .map(|v| v.deployment.clone())
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "a successful deployment of pipeline {} to environment `{name}`",
                    pipeline.name
                ))
            })
    };
    let (from, to) = (find(&query.from)?, find(&query.to)?);
    let (project, repository) = crate::runs::pipeline_home(&state, &pipeline).await?;
    let repo_dir = crate::git::repository_dir(&state, &project.name, &repository.name);
    let valid = |sha: &str| sha.len() >= 7 && sha.chars().all(|c| c.is_ascii_hexdigit());
    if !valid(&from.commit) || !valid(&to.commit) {
        return Err(ApiError::internal("a deployment has no commit"));
    }
    let range = format!("{}..{}", to.commit, from.commit);
    let commits = git_lines(
        &repo_dir,
        &["log", "--format=%h %s", "--max-count=500", &range],
    )
    .await?;
    let files = git_lines(
        &repo_dir,
        &["diff", "--name-status", &to.commit, &from.commit],
    )
    .await?
    .into_iter()
    .map(|line| line.replacen('\t', " ", 2))
    .collect();
    let artifacts = changed(
        from.artifacts
            .iter()
            .map(|a| (a.name.as_str(), a.digest.as_str())),
        to.artifacts
            .iter()
            .map(|a| (a.name.as_str(), a.digest.as_str())),
    )
    .into_iter()
    .map(|(name, from, to)| api::ArtifactChange { name, from, to })
    .collect();
    let variables = changed(
        from.variables.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        to.variables.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .into_iter()
    // Run-specific values change every time; they say nothing about the promotion.
    .filter(|(name, _, _)| !RUN_SPECIFIC.iter().any(|p| name.starts_with(p)))
    .map(|(name, from, to)| api::VariableChange { name, from, to })
    .collect();
    Ok(Json(api::EnvironmentDiff {
        from,
        to,
        commits,
        files,
        artifacts,
        variables,
    }))
}

/// Predefined variables that differ between any two runs or jobs.
const RUN_SPECIFIC: [&str; 4] = ["Build.", "System.", "Environment.", "Agent."];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        for good in ["dev", "Prod-EU_2", "staging east", "тест"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        let long = "x".repeat(MAX_NAME_CHARS + 1);
        for (bad, why) in [
            ("", "1 to 100 characters, this one has 0"),
            (long.as_str(), "this one has 101"),
            ("dev.vm1", "not '.'"),
            ("a/b", "not '/'"),
            (" dev", "start or end with a space"),
            ("dev\n", "not '\\n'"),
        ] {
            let err = check_name(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_run_names_each_environment_once_and_a_bad_one_names_its_job() {
        let job = |name: &str, environment: Option<&str>| NewJob {
            stage_name: "Deploy".into(),
            name: name.into(),
            environment: environment.map(str::to_string),
            ..NewJob::default()
        };
        assert_eq!(
            environments_of(&[job("a", Some("dev")), job("b", None), job("c", Some("DEV"))]),
            Ok(vec!["dev".to_string()])
        );
        let err = environments_of(&[job("web", Some("a/b"))]).unwrap_err();
        assert!(
            err.starts_with("job `web` of stage `Deploy`: `environment` `a/b`:"),
            "{err}"
        );
    }
}
