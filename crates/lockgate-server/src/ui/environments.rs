//! The environment pages: a project's environments with what each runs now, and one environment with
//! its owners and deployment ledger (and, for its owners and the project's administrators, a form
//! to change it).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use lockgate_protocol::api;
use maud::{Markup, html};
use serde::Deserialize;

use super::{PageResult, csrf, layout, status_badge, when};
use crate::AppState;
use crate::auth::{PageCaller, Role};
use crate::environments::{
    LedgerQuery, change_environment, environment_detail, environment_for, environment_list,
    ledger_limit, may_change, new_environment,
};
use crate::error::{Form, Query};

fn encode(text: &str) -> String {
    lockgate_agent::client::percent_encode(text)
}

/// The link to an environment's page.
pub(super) fn environment_href(project: &str, environment: &str) -> String {
    format!(
        "/p/{}/environments/{}",
        encode(project),
        encode(environment)
    )
}

fn short(commit: &str) -> &str {
    commit.get(..8).unwrap_or(commit)
}

/// One deployment as a table cell group: run, branch @ commit, when and by whom.
fn deployment_cells(deployment: &api::Deployment) -> Markup {
    html! {
        td { a href={"/runs/" (deployment.run_id)} { (deployment.pipeline) " #" (deployment.run_number) " " (deployment.run_name) } }
        td.muted { (deployment.branch.trim_start_matches("refs/heads/")) " @ " code { (short(&deployment.commit)) } }
        td.muted { (when(deployment.finished_at.or(Some(deployment.started_at)))) }
        td.muted { (deployment.requested_by) }
    }
}

pub(super) async fn environments_page(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(project): Path<String>,
) -> PageResult {
    let project = crate::api::project_for(&state, &caller, &project, Role::Reader).await?;
    let environments = environment_list(&state, &project).await?;
    let may_create = crate::auth::require_role(&state, &caller, project.id, Role::Contributor)
        .await
        .is_ok();
    Ok(layout(&format!("Environments · {}", project.name), Some(&caller), html! {
        p.muted { a href={"/p/" (project.name)} { (project.name) } " / environments" }
        h1 { "Environments" }
        @if environments.is_empty() {
            p { "No environments yet. A deployment job creates its environment when its run is queued." }
        } @else {
            table.environments {
                thead { tr { th { "Environment" } th { "Runs now" } th { "Branch @ commit" } th { "Deployed" } th { "By" } } }
                tbody { @for environment in &environments {
                    tr {
                        td {
                            strong { a href=(environment_href(&project.name, &environment.name)) { (environment.name) } }
                            @if !environment.description.is_empty() { div.muted { (environment.description) } }
                        }
                        @match &environment.latest_deployment {
                            Some(deployment) => (deployment_cells(deployment)),
                            None => { td.muted colspan="4" { "nothing deployed yet" } },
                        }
                    }
                } }
            }
        }
        @if may_create {
            section {
                h2 { "New environment" }
                form.row method="post" action={"/p/" (encode(&project.name)) "/environments"} {
                    (csrf(&caller))
                    input name="name" placeholder="name" required maxlength="100";
                    input name="description" placeholder="description";
                    button type="submit" { "Create" }
                }
            }
        }
    }).into_response())
}

#[derive(Deserialize)]
pub(super) struct EnvironmentForm {
    name: String,
    #[serde(default)]
    description: String,
}

pub(super) async fn create_environment(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(project): Path<String>,
    Form(form): Form<EnvironmentForm>,
) -> PageResult {
    let (project, environment) = new_environment(
        &state,
        &caller,
        &project,
        form.name.trim(),
        form.description.trim(),
    )
    .await?;
    Ok(Redirect::to(&environment_href(&project.name, &environment.name)).into_response())
}

pub(super) async fn environment_page(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path((project, name)): Path<(String, String)>,
    Query(query): Query<LedgerQuery>,
) -> PageResult {
    let limit = ledger_limit(query.limit)?;
    let (project, environment) = environment_for(&state, &caller, &project, &name).await?;
    let detail = environment_detail(&state, &project, &environment).await?;
    let ledger: Vec<api::Deployment> = state
        .store
        .deployments(environment.id, query.before, limit)
        .await?
        .iter()
        .map(crate::environments::deployment_json)
        .collect();
    let editable = may_change(&state, &caller, &project, &environment).await?;
    let checks = checks_of(&state, project.id, &environment.name).await?;
    let waiting = waiting_here(&state, project.id, &environment.name).await?;
    let may_deploy = crate::auth::require_role(&state, &caller, project.id, Role::Contributor)
        .await
        .is_ok();
    // One Redeploy button per run (its newest successful entry).
    let mut redeployable = std::collections::BTreeSet::new();
    let href = environment_href(&project.name, &environment.name);
    Ok(layout(&format!("{} · {}", environment.name, project.name), Some(&caller), html! {
        p.muted {
            a href={"/p/" (project.name)} { (project.name) } " / "
            a href={"/p/" (encode(&project.name)) "/environments"} { "environments" }
        }
        h1 { (environment.name) }
        @if !environment.description.is_empty() { p { (environment.description) } }
        p.muted { "Owners: " (detail.owners.join(", ")) " · created by " (if environment.created_by.is_empty() { "—" } else { &environment.created_by }) " " (when(Some(environment.created_at))) }
        @if let Some(deployment) = &detail.latest_deployment {
            p { "Runs now: " a href={"/runs/" (deployment.run_id)} { (deployment.pipeline) " #" (deployment.run_number) " " (deployment.run_name) }
                " · " code { (short(&deployment.commit)) } " · " (when(deployment.finished_at)) }
        }
        section.checks {
            h2 { "Checks" }
            @if checks.is_empty() { p.muted { "None: stages deploy here as soon as their conditions hold." } } @else {
                p.muted { "In the order they are evaluated." }
                ul { @for (kind, text) in &checks { li { strong { (kind) } " " (text) } } }
            }
            @if !waiting.is_empty() {
                h3 { "Waiting here" }
                ul.waiting { @for (run_id, label, reason) in &waiting {
                    li { a href={"/runs/" (run_id)} { (label) } ": " (reason) }
                } }
            }
        }
        section.resources {
            h2 { "Resources" }
            @if detail.resources.is_empty() {
                p.muted { "No virtual machines: register one with " code { "lockgate agent register --environment " (environment.name) " --tags TAG,TAG" } " (a token from " code { "lockgate agents token --environment " (environment.name) " --project " (project.name) } ")." }
            } @else {
                table.resources {
                    thead { tr { th { "Name" } th { "Type" } th { "Tags" } th { "State" } th { "Last heard" } th { "Job" } } }
                    tbody { @for resource in &detail.resources {
                        tr {
                            td { strong { (resource.name) } }
                            td { (resource.resource_type) }
                            td { @for tag in &resource.tags { code { (tag) } " " } }
                            td.state { (resource.state) }
                            td { (when(resource.last_seen_at)) }
                            td { @if let Some(job) = resource.current_job { "job " (job) } @else { span.muted { "idle" } } }
                        }
                    } }
                }
            }
        }
        section {
            h2 { "Deployments" }
            @if ledger.is_empty() { p { "No deployments." } } @else {
                table.ledger {
                    thead { tr { th { "Result" } th { "Run" } th { "Branch @ commit" } th { "When" } th { "By" } th { "Job" } th { "Artifacts" } th { "Variables" } @if may_deploy { th {} } } }
                    tbody { @for deployment in &ledger {
                        tr {
                            td { (status_badge(&deployment.status, deployment.result.as_deref())) }
                            (deployment_cells(deployment))
                            td.muted { (deployment.stage) " / " (deployment.job)
                                @if let Some(resource) = &deployment.resource { " → " (resource) } }
                            td { @for artifact in &deployment.artifacts {
                                div { (artifact.name) " " code.muted title=(artifact.digest) { (artifact.digest.get(..12).unwrap_or(&artifact.digest)) } }
                            } }
                            td { @if !deployment.variables.is_empty() {
                                details { summary { (deployment.variables.len()) " variables" }
                                    table { tbody { @for (name, value) in &deployment.variables {
                                        tr { td { code { (name) } } td { code { (value) } } }
                                    } } }
                                }
                            } }
                            @if may_deploy {
                                td { @if deployment.result.as_deref() == Some("succeeded") && redeployable.insert(deployment.run_id) {
                                    form.inline.redeploy method="post" action={(href) "/redeploy"} {
                                        (csrf(&caller))
                                        input type="hidden" name="run" value=(deployment.run_id);
                                        button type="submit" title="Deploy this run's artifacts and variables again (the checks apply again)" { "Redeploy" }
                                    }
                                } }
                            }
                        }
                    } }
                }
                @if ledger.len() as i64 == limit {
                    @if let Some(last) = ledger.last() {
                        p { a href={(href) "?before=" (last.id)} { "Older deployments" } }
                    }
                }
            }
        }
        @if editable {
            section {
                h2 { "Change" }
                form method="post" action=(href) {
                    (csrf(&caller))
                    label { "Description " input name="description" value=(environment.description); }
                    label { "Owners (comma-separated) " input name="owners" value=(detail.owners.join(", ")); }
                    button type="submit" { "Save" }
                }
            }
        }
    }).into_response())
}

#[derive(Deserialize)]
pub(super) struct ChangeForm {
    description: String,
    owners: String,
}

pub(super) async fn change_environment_form(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path((project, name)): Path<(String, String)>,
    Form(form): Form<ChangeForm>,
) -> PageResult {
    let (project, environment) = environment_for(&state, &caller, &project, &name).await?;
    let owners: Vec<String> = form
        .owners
        .split(',')
        .map(|owner| owner.trim().to_string())
        .filter(|owner| !owner.is_empty())
        .collect();
    let update = api::UpdateEnvironment {
        description: Some(form.description.trim().to_string()),
        owners: Some(owners),
    };
    change_environment(&state, &caller, &project, &environment, &update).await?;
    Ok(Redirect::to(&environment_href(&project.name, &environment.name)).into_response())
}

/// "What is where" for a pipeline page: each environment with the version deployed and how far
/// behind the branch's newest successful run it is.
pub(super) fn what_is_where(project: &str, versions: &[api::DeployedVersion]) -> Markup {
    html! {
        @if !versions.is_empty() {
            section {
                h2 { "What is where" }
                table.environments {
                    thead { tr { th { "Environment" } th { "Run" } th { "Branch @ commit" } th { "Deployed" } th { "By" } th { "Behind" } } }
                    tbody { @for version in versions {
                        tr {
                            td { strong { a href=(environment_href(project, &version.environment)) { (version.environment) } } }
                            (deployment_cells(&version.deployment))
                            td { @if version.behind == 0 { "up to date" } @else { (version.behind) " newer successful run" @if version.behind > 1 { "s" } } }
                        }
                    } }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub(super) struct RedeployForm {
    run: i64,
}

pub(super) async fn redeploy_form(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path((project, name)): Path<(String, String)>,
    Form(form): Form<RedeployForm>,
) -> PageResult {
    let run = crate::redeploy::redeploy(&state, &caller, &project, &name, form.run).await?;
    Ok(Redirect::to(&format!("/runs/{}", run.id)).into_response())
}

/// The checks of an environment as its page lists them, in the order the server evaluates them:
/// branch control, business hours and other automatic checks, approval, exclusive lock.
async fn checks_of(
    state: &AppState,
    project_id: i64,
    environment: &str,
) -> crate::error::ApiResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut automatic: Vec<lockgate_store::EnvironmentCheck> = state
        .store
        .environment_checks(project_id)
        .await?
        .into_iter()
        .filter(|c| c.environment.eq_ignore_ascii_case(environment))
        .collect();
    automatic.sort_by_key(|c| match c.kind.as_str() {
        "branchControl" => 0,
        crate::locks::EXCLUSIVE_LOCK => 3,
        _ => 1,
    });
    let approval = state
        .store
        .approval_checks(project_id)
        .await?
        .into_iter()
        .find(|c| c.environment.eq_ignore_ascii_case(environment));
    for check in &automatic {
        if check.kind == crate::locks::EXCLUSIVE_LOCK
            && let Some(approval) = &approval
        {
            out.push(approval_line(approval));
        }
        let text = match check.kind.as_str() {
            "branchControl" => serde_json::from_str::<api::BranchControl>(&check.config)
                .map(|c| format!("only {}", c.allowed_branches.join(", "))),
            "businessHours" => serde_json::from_str::<api::BusinessHours>(&check.config).map(|c| {
                format!(
                    "{} {}-{} (UTC{})",
                    c.days.join(","),
                    c.start,
                    c.end,
                    c.utc_offset
                )
            }),
            crate::locks::EXCLUSIVE_LOCK => {
                serde_json::from_str::<api::ExclusiveLock>(&check.config).map(|c| {
                    format!(
                        "one stage at a time (waits up to {} minutes)",
                        c.timeout_minutes
                    )
                })
            }
            _ => Ok(check.config.clone()),
        }
        .unwrap_or_else(|_| "cannot be read: refuses every deployment".into());
        out.push((kind_name(&check.kind), text));
    }
    if let Some(approval) = &approval
        && !automatic
            .iter()
            .any(|c| c.kind == crate::locks::EXCLUSIVE_LOCK)
    {
        out.push(approval_line(approval));
    }
    Ok(out)
}

fn kind_name(kind: &str) -> String {
    match kind {
        "branchControl" => "Branch control".into(),
        "businessHours" => "Business hours".into(),
        crate::locks::EXCLUSIVE_LOCK => "Exclusive lock".into(),
        other => other.to_string(),
    }
}

fn approval_line(check: &lockgate_store::ApprovalCheck) -> (String, String) {
    let who = check.approvers.join(", ");
    let text = if check.in_sequence {
        format!("{who}, in this order")
    } else {
        format!("{} of {who}", check.min_approvals)
    };
    let requester = if check.allow_requester {
        ""
    } else {
        "; the requester may not approve"
    };
    ("Approval".into(), format!("{text}{requester}"))
}

/// The stages of runs in progress that wait for this environment: for an approval, or in its
/// lock's queue.
async fn waiting_here(
    state: &AppState,
    project_id: i64,
    environment: &str,
) -> crate::error::ApiResult<Vec<(i64, String, String)>> {
    let mut out = Vec::new();
    let label =
        |run: &lockgate_store::Run, stage: &str| format!("#{} {} / {stage}", run.number, run.name);
    let pending = state.store.pending_approvals().await?;
    for approval in &pending {
        if !approval.environment.eq_ignore_ascii_case(environment) {
            continue;
        }
        if let Some(run) = state.store.run_by_id(approval.run_id).await?
            && run.project_id == project_id
        {
            let reason = crate::approvals::waiting_reasons(std::slice::from_ref(approval))
                .remove(&approval.stage)
                .unwrap_or_default();
            out.push((run.id, label(&run, &approval.stage), reason));
        }
    }
    for run_id in state.store.runs_waiting_for_locks().await? {
        let Some(run) = state.store.run_by_id(run_id).await? else {
            continue;
        };
        if run.project_id != project_id {
            continue;
        }
        for lock in state.store.locks_of_run(run_id).await? {
            if lock.status == "waiting" && lock.environment.eq_ignore_ascii_case(environment) {
                let reason = crate::locks::waiting_reason(state, &run, &lock).await?;
                out.push((run.id, label(&run, &lock.stage), reason));
            }
        }
    }
    Ok(out)
}
