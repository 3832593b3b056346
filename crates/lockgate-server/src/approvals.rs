//! Approvals: the approval checks a project's administrators (the environments' owners, not the
//! pipeline's authors) put on an environment, and the gates they make of the stages that deploy
//! there. After Microsoft's "Define approvals and checks" (learn.microsoft.com/azure/devops/
//! pipelines/process/approvals): a stage that deploys to an environment with checks waits, after
//! its condition held and before any of its jobs start, until every check passed; approvers are
//! users, a minimum number of them must approve, the user who queued the run may not approve unless
//! the check allows it, one rejection rejects, and a check that is not decided within its timeout
//! rejects. The run engine decides when a stage waits ([`lockgate_engine::Decision::AwaitChecks`]);
//! this module keeps the approvals and says how each gate stands.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use lockgate_engine::Gate;
use lockgate_protocol::api;
use lockgate_store::{
    Approval, ApprovalCheck, ApprovalDecision, EnvironmentCheck, Job, NewApprovalCheck, Run,
    now_millis,
};

use crate::AppState;
use crate::api::{project_for, run_for};
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::resources::{self, ResourceKind, ResourcePath};

pub fn routes() -> Router<AppState> {
    let mut router = Router::new();
    // The same checks on every kind of protected resource ([`crate::resources`]).
    for base in resources::check_bases() {
        router = router
            .route(
                &format!("{base}/checks/approval"),
                get(get_check).put(put_check).delete(delete_check),
            )
            .route(
                &format!("{base}/checks/branch-control"),
                get(get_branch_control)
                    .put(put_branch_control)
                    .delete(delete_branch_control),
            )
            .route(
                &format!("{base}/checks/required-template"),
                get(get_required_template)
                    .put(put_required_template)
                    .delete(delete_required_template),
            )
            .route(
                &format!("{base}/checks/business-hours"),
                get(get_business_hours)
                    .put(put_business_hours)
                    .delete(delete_business_hours),
            );
    }
    router.route(
        "/api/v1/runs/{id}/approvals",
        get(list_approvals).post(decide_approvals),
    )
}

const BRANCH_CONTROL: &str = "branchControl";
const BUSINESS_HOURS: &str = "businessHours";
const REQUIRED_TEMPLATE: &str = "requiredTemplate";

/// The template a run's YAML extends (`extends: template: x.yml[@alias]`), if any.
fn extended_template(yaml: &str) -> Option<String> {
    let node = lockgate_pipeline::yaml::load(yaml, 0, "azure-pipelines.yml").ok()?;
    let template = node.get("extends")?.get("template")?.as_str()?;
    Some(template.trim().trim_start_matches('/').to_string())
}

/// Whether `branch` (a full ref) is one of `allowed`: full refs or branch names, a trailing `*`
/// matching any rest, `*` alone every branch; letter case ignored.
fn branch_allowed(allowed: &[String], branch: &str) -> bool {
    let branch = branch.to_ascii_lowercase();
    allowed.iter().any(|pattern| {
        let pattern = pattern.trim().to_ascii_lowercase();
        let pattern = if pattern.starts_with("refs/") || pattern == "*" {
            pattern
        } else {
            format!("refs/heads/{pattern}")
        };
        match pattern.strip_suffix('*') {
            Some(prefix) => branch.starts_with(prefix),
            None => branch == pattern,
        }
    })
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// `HH:MM` as minutes after midnight.
fn minutes_of(text: &str) -> Option<i64> {
    let (hours, minutes) = text.split_once(':')?;
    let (hours, minutes): (i64, i64) = (hours.parse().ok()?, minutes.parse().ok()?);
    ((0..24).contains(&hours) && (0..60).contains(&minutes) && text.len() == 5)
        .then_some(hours * 60 + minutes)
}

/// `+HH:MM` / `-HH:MM` as minutes.
fn offset_of(text: &str) -> Option<i64> {
    let sign = match text.chars().next()? {
        '+' => 1,
        '-' => -1,
        _ => return None,
    };
    let minutes = minutes_of(&text[1..])?;
    (minutes <= 14 * 60).then_some(sign * minutes)
}

/// Whether `now` (milliseconds since the epoch) is within the business hours.
fn within_hours(hours: &api::BusinessHours, now: i64) -> bool {
    let (Some(start), Some(end), Some(offset)) = (
        minutes_of(&hours.start),
        minutes_of(&hours.end),
        offset_of(&hours.utc_offset),
    ) else {
        return false;
    };
    let local = now.div_euclid(60_000) + offset;
    let day = local.div_euclid(24 * 60);
    let minute = local.rem_euclid(24 * 60);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let weekday = DAYS[(day + 3).rem_euclid(7) as usize];
    hours.days.iter().any(|d| d.eq_ignore_ascii_case(weekday)) && start <= minute && minute < end
}

/// What the automatic checks of a stage say: `Err` the reason it is refused, `Ok(Some)` why it
/// waits, `Ok(None)` every one passed. A check whose settings cannot be read fails closed.
fn automatic_checks(
    checks: &[&EnvironmentCheck],
    run: &Run,
    now: i64,
) -> Result<Option<String>, String> {
    let mut waiting = None;
    // Azure's order: branch control before business hours ("Define approvals and checks").
    let mut ordered: Vec<&&EnvironmentCheck> = checks.iter().collect();
    // Static checks (branch control, required template) come before dynamic ones.
    ordered.sort_by_key(|c| match c.kind.as_str() {
        BRANCH_CONTROL => 0,
        REQUIRED_TEMPLATE => 1,
        _ => 2,
    });
    for check in ordered {
        match check.kind.as_str() {
            BRANCH_CONTROL => {
                let Ok(config) = serde_json::from_str::<api::BranchControl>(&check.config) else {
                    return Err(format!(
                        "the branch control of {} cannot be read",
                        resources::describe(&check.environment)
                    ));
                };
                if !branch_allowed(&config.allowed_branches, &run.source_branch) {
                    return Err(format!(
                        "branch control of {}: `{}` is not one of {}",
                        resources::describe(&check.environment),
                        run.source_branch,
                        config.allowed_branches.join(", ")
                    ));
                }
            }
            REQUIRED_TEMPLATE => {
                let Ok(config) = serde_json::from_str::<api::RequiredTemplate>(&check.config)
                else {
                    return Err(format!(
                        "the required template check of {} cannot be read",
                        resources::describe(&check.environment)
                    ));
                };
                let extended = extended_template(&run.yaml);
                let allowed = extended.as_deref().is_some_and(|t| {
                    config
                        .templates
                        .iter()
                        .any(|r| r.trim().trim_start_matches('/') == t)
                });
                if !allowed {
                    return Err(format!(
                        "required template of {}: the pipeline must extend one of {}{}",
                        resources::describe(&check.environment),
                        config.templates.join(", "),
                        match extended {
                            Some(t) => format!(" (it extends {t})"),
                            None => " (it extends none)".to_string(),
                        }
                    ));
                }
            }
            BUSINESS_HOURS => {
                let Ok(config) = serde_json::from_str::<api::BusinessHours>(&check.config) else {
                    return Err(format!(
                        "the business hours of {} cannot be read",
                        resources::describe(&check.environment)
                    ));
                };
                if !within_hours(&config, now) && waiting.is_none() {
                    waiting = Some(format!(
                        "business hours of {}: {} {}-{} (UTC{})",
                        resources::describe(&check.environment),
                        config.days.join(","),
                        config.start,
                        config.end,
                        config.utc_offset
                    ));
                }
            }
            // The lock comes last, after approvals ([`crate::locks`]); the REST API check is
            // called in the background ([`crate::rest_check`]).
            crate::locks::EXCLUSIVE_LOCK | crate::rest_check::INVOKE_REST_API => {}
            other => {
                return Err(format!(
                    "{} has a check of unknown kind `{other}`",
                    resources::describe(&check.environment)
                ));
            }
        }
    }
    Ok(waiting)
}

/// The automatic checks on the resources a stage uses (the environments it deploys to, and the
/// library resources and agent pools its jobs use when a check is on one).
pub(crate) fn environment_checks_of_stage<'c>(
    checks: &'c [EnvironmentCheck],
    jobs: &[Job],
    stage: &str,
) -> Vec<&'c EnvironmentCheck> {
    let library = resources::any_library_key(checks.iter().map(|c| c.environment.as_str()));
    let used = resources::stage_resources(jobs, stage, library);
    checks
        .iter()
        .filter(|check| {
            used.iter()
                .any(|e| e.eq_ignore_ascii_case(&check.environment))
        })
        .collect()
}

/// The approval checks on the resources a stage uses.
fn checks_of_stage<'c>(
    checks: &'c [ApprovalCheck],
    jobs: &[Job],
    stage: &str,
) -> Vec<&'c ApprovalCheck> {
    let library = resources::any_library_key(checks.iter().map(|c| c.environment.as_str()));
    let used = resources::stage_resources(jobs, stage, library);
    checks
        .iter()
        .filter(|check| {
            used.iter()
                .any(|e| e.eq_ignore_ascii_case(&check.environment))
        })
        .collect()
}

/// Whether a pending approval is past its timeout at `now`.
fn overdue(approval: &Approval, now: i64) -> bool {
    approval.status == "pending"
        && now >= approval.requested_at + approval.timeout_minutes.saturating_mul(60_000)
}

/// How a stage's gate stands from its checks and the approvals asked for them: rejected when one
/// was rejected or timed out, open when each check's approval was approved, pending otherwise (an
/// approval not asked for yet is pending).
fn gate_of(checks: &[&ApprovalCheck], approvals: &[&Approval]) -> Gate {
    let mut open = true;
    for check in checks {
        match approvals.iter().find(|a| a.check_id == check.id) {
            Some(a) if a.status == "rejected" || a.status == "timedOut" => return Gate::Rejected,
            Some(a) if a.status == "approved" => {}
            _ => open = false,
        }
    }
    if open { Gate::Open } else { Gate::Pending }
}

/// How the gated stages of a run stand: the gate of every stage that deploys to an environment
/// with a check (stages without one are not in `gates`), and why each refused or waiting one is so.
#[derive(Debug, Default)]
pub(crate) struct Gates {
    pub gates: BTreeMap<String, Gate>,
    /// Why a stage was refused by an automatic check (its jobs' logs say so).
    pub refused: BTreeMap<String, String>,
    /// Why a stage waits for an automatic check (business hours, the exclusive lock).
    pub waiting: BTreeMap<String, String>,
    /// Stages whose checks all passed but the exclusive lock, which they are to ask for.
    pub lock_pending: BTreeSet<String>,
    /// Stages that wait for an invoke-REST-API check, to be called once they are reached.
    pub rest_pending: BTreeSet<String>,
    /// The manual stages someone started.
    pub started: BTreeSet<String>,
}

/// The attempt of a stage: the highest of its jobs' (a rerun is a new attempt).
fn stage_attempt(jobs: &[Job], stage: &str) -> i64 {
    jobs.iter()
        .filter(|j| j.stage_name == stage)
        .map(|j| j.attempt)
        .max()
        .unwrap_or(1)
}

/// The gates of a run's stages, in Azure's order: automatic checks first (a refusal rejects the
/// stage, a wait keeps it waiting without asking for approval), then approvals. Approvals past
/// their timeout are ended as timed out here.
pub(crate) async fn stage_gates(state: &AppState, run: &Run, jobs: &[Job]) -> ApiResult<Gates> {
    let mut out = Gates::default();
    if !crate::locks::manual_stages(jobs).is_empty() {
        for start in state.store.stage_starts(run.id).await? {
            out.started.insert(start.stage);
        }
    }
    // A stage that uses a variable group, service connection or secure file its pipeline may not
    // use waits for an administrator.
    let groups =
        crate::library::unauthorized_stages(state, run.pipeline_id, run.project_id, jobs).await?;
    let connections =
        crate::connections::unauthorized_stages(state, run.pipeline_id, run.project_id, jobs)
            .await?;
    let files =
        crate::secure_files::unauthorized_stages(state, run.pipeline_id, run.project_id, jobs)
            .await?;
    for (stage, reason) in groups.into_iter().chain(connections).chain(files) {
        out.gates.insert(stage.clone(), Gate::Pending);
        out.waiting.entry(stage).or_insert(reason);
    }
    let checks = state.store.approval_checks(run.project_id).await?;
    let automatic = state.store.environment_checks(run.project_id).await?;
    if checks.is_empty() && automatic.is_empty() {
        return Ok(out);
    }
    // Without a check on a library resource or pool, only stages that deploy have gates.
    let keys = checks
        .iter()
        .map(|c| c.environment.as_str())
        .chain(automatic.iter().map(|c| c.environment.as_str()));
    if !resources::any_library_key(keys) && !jobs.iter().any(|j| j.environment.is_some()) {
        return Ok(out);
    }
    let locks = if automatic
        .iter()
        .any(|c| c.kind == crate::locks::EXCLUSIVE_LOCK)
    {
        state.store.locks_of_run(run.id).await?
    } else {
        Vec::new()
    };
    let mut approvals = state.store.approvals_of_run(run.id).await?;
    let now = now_millis();
    for approval in approvals.iter_mut().filter(|a| overdue(a, now)) {
        if state.store.expire_approval(approval.id, now).await? {
            approval.status = "timedOut".into();
        }
    }
    for job in jobs {
        let stage = &job.stage_name;
        if out.gates.contains_key(stage) {
            continue;
        }
        let stage_checks = checks_of_stage(&checks, jobs, stage);
        let stage_automatic = environment_checks_of_stage(&automatic, jobs, stage);
        if stage_checks.is_empty() && stage_automatic.is_empty() {
            continue;
        }
        let gate = match automatic_checks(&stage_automatic, run, now) {
            Err(reason) => {
                out.refused.insert(stage.clone(), reason);
                Gate::Rejected
            }
            Ok(Some(reason)) => {
                out.waiting.insert(stage.clone(), reason);
                Gate::Pending
            }
            Ok(None) => {
                let rest = if stage_automatic
                    .iter()
                    .any(|c| c.kind == crate::rest_check::INVOKE_REST_API)
                {
                    crate::rest_check::gate(state, run, stage, &stage_automatic)
                } else {
                    crate::rest_check::RestGate::Passed
                };
                match rest {
                    crate::rest_check::RestGate::Refused(reason) => {
                        out.refused.insert(stage.clone(), reason);
                        Gate::Rejected
                    }
                    crate::rest_check::RestGate::Waiting(reason) => {
                        out.rest_pending.insert(stage.clone());
                        out.waiting.insert(stage.clone(), reason);
                        Gate::Pending
                    }
                    crate::rest_check::RestGate::Passed => approval_and_lock_gate(
                        &mut out,
                        &stage_checks,
                        &stage_automatic,
                        &approvals,
                        &locks,
                        jobs,
                        stage,
                    ),
                }
            }
        };
        out.gates.insert(stage.clone(), gate);
    }
    Ok(out)
}

/// The last gates of a stage whose automatic checks passed: its approvals, then its exclusive locks.
fn approval_and_lock_gate(
    out: &mut Gates,
    stage_checks: &[&ApprovalCheck],
    stage_automatic: &[&EnvironmentCheck],
    approvals: &[Approval],
    locks: &[lockgate_store::EnvironmentLock],
    jobs: &[Job],
    stage: &str,
) -> Gate {
    let attempt = stage_attempt(jobs, stage);
    let asked: Vec<&Approval> = approvals
        .iter()
        .filter(|a| a.stage == stage && a.attempt == attempt)
        .collect();
    match gate_of(stage_checks, &asked) {
        Gate::Open => match crate::locks::lock_checks(stage_automatic) {
            Err(reason) => {
                out.refused.insert(stage.to_string(), reason);
                Gate::Rejected
            }
            Ok(needed) if needed.is_empty() => Gate::Open,
            Ok(needed) => {
                let (gate, reason) = crate::locks::lock_gate(locks, &needed, stage, attempt);
                match gate {
                    Gate::Pending => {
                        out.lock_pending.insert(stage.to_string());
                        if let Some(reason) = reason {
                            out.waiting.insert(stage.to_string(), reason);
                        }
                    }
                    Gate::Open => {}
                    Gate::Rejected | Gate::Canceled => {
                        if let Some(reason) = reason {
                            out.refused.insert(stage.to_string(), reason);
                        }
                    }
                }
                gate
            }
        },
        other => other,
    }
}

/// Asks for the approvals a stage waits for (once per check: asking again changes nothing), once
/// its automatic checks passed, or for the exclusive locks once everything else passed. True when
/// the stage's gate may have opened (a lock was granted): the caller looks again.
pub(crate) async fn request(
    state: &AppState,
    run: &Run,
    jobs: &[Job],
    stage: &str,
    gates: &Gates,
) -> ApiResult<bool> {
    if gates.rest_pending.contains(stage) {
        let automatic = state.store.environment_checks(run.project_id).await?;
        let stage_automatic = environment_checks_of_stage(&automatic, jobs, stage);
        crate::rest_check::poll(state, run, stage, &stage_automatic);
        return Ok(false);
    }
    if gates.lock_pending.contains(stage) {
        return crate::locks::request_for_stage(
            state,
            run,
            jobs,
            stage,
            stage_attempt(jobs, stage),
        )
        .await;
    }
    if gates.waiting.contains_key(stage) || gates.refused.contains_key(stage) {
        return Ok(false);
    }
    let checks = state.store.approval_checks(run.project_id).await?;
    for check in checks_of_stage(&checks, jobs, stage) {
        state
            .store
            .request_approval(
                run.id,
                stage,
                stage_attempt(jobs, stage),
                check,
                now_millis(),
            )
            .await?;
    }
    Ok(false)
}

/// Ends the approvals past their timeout and moves their runs on (called periodically).
pub async fn expire_overdue(state: &AppState) -> ApiResult<()> {
    let now = now_millis();
    for approval in state.store.pending_approvals().await? {
        if overdue(&approval, now) && state.store.expire_approval(approval.id, now).await? {
            crate::runs::advance_run(state, approval.run_id).await?;
        }
    }
    Ok(())
}

/// Why the pending jobs of each stage wait, for the run page and `lockgate runs show`.
pub(crate) fn waiting_reasons(approvals: &[Approval]) -> BTreeMap<String, String> {
    let mut reasons: BTreeMap<String, String> = BTreeMap::new();
    for approval in approvals
        .iter()
        .filter(|a| a.status == "pending" && !crate::agentless::is_manual_validation(a))
    {
        let approved = approval.decisions.iter().filter(|d| d.approve).count();
        let mut text = format!(
            "approval for {}: {approved} of {} from {}",
            resources::describe(&approval.environment),
            approval.min_approvals,
            approval.approvers.join(", ")
        );
        if !approval.instructions.is_empty() {
            text.push_str(&format!(" ({})", approval.instructions));
        }
        reasons
            .entry(approval.stage.clone())
            .and_modify(|existing| {
                existing.push_str("; ");
                existing.push_str(&text);
            })
            .or_insert(text);
    }
    reasons
}

pub(crate) fn approval_json(approval: &Approval) -> api::Approval {
    let (kind, name) = resources::parse_key(&approval.environment);
    api::Approval {
        id: approval.id,
        stage: approval.stage.clone(),
        environment: approval.environment.clone(),
        resource_type: kind.type_name().into(),
        resource: name.into(),
        status: approval.status.clone(),
        approvers: approval.approvers.clone(),
        min_approvals: approval.min_approvals,
        allow_requester: approval.allow_requester,
        instructions: approval.instructions.clone(),
        timeout_minutes: approval.timeout_minutes,
        in_sequence: approval.in_sequence,
        attempt: approval.attempt,
        requested_at: approval.requested_at,
        decided_at: approval.decided_at,
        decisions: approval
            .decisions
            .iter()
            .map(|d| api::ApprovalDecision {
                user: d.user.clone(),
                decision: if d.approve { "approve" } else { "reject" }.into(),
                comment: d.comment.clone(),
                at: d.decided_at,
            })
            .collect(),
    }
}

fn check_json(check: &ApprovalCheck) -> api::ApprovalCheck {
    api::ApprovalCheck {
        approvers: check.approvers.clone(),
        min_approvals: check.min_approvals,
        allow_requester: check.allow_requester,
        instructions: check.instructions.clone(),
        timeout_minutes: check.timeout_minutes,
        in_sequence: check.in_sequence,
    }
}

/// The project, if the caller may change the checks of `environment`: the environment's owners
/// and the project's administrators, never a pipeline's authors as such ("Define approvals and
/// checks": checks are owned by the resource).
async fn check_owner(
    state: &AppState,
    caller: &Caller,
    project: &str,
    environment: &str,
) -> ApiResult<lockgate_store::Project> {
    let project = project_for(state, caller, project, Role::Reader).await?;
    caller.require_scope("write")?;
    if crate::auth::require_role(state, caller, project.id, Role::Administrator)
        .await
        .is_ok()
    {
        return Ok(project);
    }
    if let Some(found) = state
        .store
        .environment_by_name(project.id, environment)
        .await?
        && state
            .store
            .environment_owners(found.id)
            .await?
            .iter()
            .any(|owner| owner == &caller.user.name)
    {
        return Ok(project);
    }
    Err(ApiError::forbidden(
        match resources::parse_key(environment) {
            (ResourceKind::Environment, _) => format!(
                "only the owners of environment `{environment}` and the project's administrators may change its checks"
            ),
            _ => format!(
                "only the project's administrators may change the checks of {}",
                resources::describe(environment)
            ),
        },
    ))
}

/// An environment name as a check names it: 1 to 100 characters, no control characters, no
/// leading or trailing space.
fn valid_environment(key: &str) -> ApiResult<()> {
    let (kind, name) = resources::parse_key(key);
    if name.is_empty()
        || name.chars().count() > 100
        || name.trim() != name
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(format!(
            "the {} name must be 1 to 100 characters without control characters or surrounding spaces",
            kind.label()
        )));
    }
    Ok(())
}

async fn get_check(
    State(state): State<AppState>,
    caller: Caller,
    resource: ResourcePath,
) -> ApiResult<Json<api::ApprovalCheck>> {
    let environment = resource.key();
    let project = resource.project;
    let project = project_for(&state, &caller, &project, Role::Reader).await?;
    state
        .store
        .approval_checks(project.id)
        .await?
        .iter()
        .find(|c| c.environment.eq_ignore_ascii_case(&environment))
        .map(|c| Json(check_json(c)))
        .ok_or_else(|| ApiError::not_found("approval check"))
}

async fn put_check(
    State(state): State<AppState>,
    caller: Caller,
    resource: ResourcePath,
    body: Result<Json<api::ApprovalCheck>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<api::ApprovalCheck>> {
    let environment = resource.key();
    let project = resource.project;
    let project = check_owner(&state, &caller, &project, &environment).await?;
    valid_environment(&environment)?;
    resources::require_exists(&state, project.id, &environment).await?;
    let Json(body) = body
        .map_err(|e| ApiError::bad_request(format!("invalid approval check: {}", e.body_text())))?;
    if body.approvers.is_empty() || body.approvers.len() > 50 {
        return Err(ApiError::bad_request("`approvers` must name 1 to 50 users"));
    }
    let mut approvers: Vec<String> = Vec::new();
    for name in &body.approvers {
        if let Some(group) = name.strip_prefix(GROUP_PREFIX) {
            if group_role(group).is_none() {
                return Err(ApiError::bad_request(format!(
                    "`approvers`: `{name}` is not a group (groups: group:administrators, group:contributors, group:readers)"
                )));
            }
            if !approvers.contains(name) {
                approvers.push(name.clone());
            }
            continue;
        }
        let user =
            state.store.user_by_name(name).await?.ok_or_else(|| {
                ApiError::bad_request(format!("`approvers`: `{name}` is not a user"))
            })?;
        if !approvers.contains(&user.name) {
            approvers.push(user.name);
        }
    }
    // In sequence, every approver approves, in the order listed.
    let min_approvals = if body.in_sequence {
        approvers.len() as i64
    } else {
        body.min_approvals
    };
    if min_approvals < 1 || min_approvals > approvers.len() as i64 {
        return Err(ApiError::bad_request(format!(
            "`minApprovals` must be between 1 and the number of approvers ({})",
            approvers.len()
        )));
    }
    if !(1..=43_200).contains(&body.timeout_minutes) {
        return Err(ApiError::bad_request(
            "`timeoutMinutes` must be between 1 and 43200 (30 days)",
        ));
    }
    if body.instructions.len() > 4_000 {
        return Err(ApiError::bad_request(
            "`instructions` must be at most 4000 bytes",
        ));
    }
    let check = NewApprovalCheck {
        approvers,
        min_approvals,
        allow_requester: body.allow_requester,
        instructions: body.instructions,
        timeout_minutes: body.timeout_minutes,
        in_sequence: body.in_sequence,
        created_by: caller.user.name.clone(),
    };
    let stored = state
        .store
        .set_approval_check(project.id, &environment, Some(&check))
        .await?
        .ok_or_else(|| ApiError::internal("the approval check was not stored"))?;
    Ok(Json(check_json(&stored)))
}

async fn delete_check(
    State(state): State<AppState>,
    caller: Caller,
    resource: ResourcePath,
) -> ApiResult<StatusCode> {
    let environment = resource.key();
    let project = resource.project;
    let project = check_owner(&state, &caller, &project, &environment).await?;
    state
        .store
        .set_approval_check(project.id, &environment, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Moves on the project's runs in progress after its checks changed (a stage waiting for business
/// hours, a removed check).
pub(crate) async fn advance_project_runs(state: &AppState, project_id: i64) -> ApiResult<()> {
    for status in ["queued", "running"] {
        let filter = lockgate_store::RunFilter {
            project_id: Some(project_id),
            status: Some(status.into()),
            limit: 200,
            ..lockgate_store::RunFilter::default()
        };
        for run in state.store.list_runs(&filter).await? {
            crate::runs::advance_run(state, run.id).await?;
        }
    }
    Ok(())
}

/// Stores an automatic check given as JSON (after `valid` accepted it) and moves the project's
/// runs on.
pub(crate) async fn put_automatic<T: serde::Serialize>(
    state: &AppState,
    caller: &Caller,
    project: &str,
    environment: &str,
    kind: &str,
    config: &T,
) -> ApiResult<()> {
    let project = check_owner(state, caller, project, environment).await?;
    valid_environment(environment)?;
    resources::require_exists(state, project.id, environment).await?;
    let text = serde_json::to_string(config).map_err(ApiError::internal)?;
    state
        .store
        .set_environment_check(
            project.id,
            environment,
            kind,
            Some((&text, &caller.user.name)),
        )
        .await?;
    advance_project_runs(state, project.id).await
}

pub(crate) async fn get_automatic<T: serde::de::DeserializeOwned>(
    state: &AppState,
    caller: &Caller,
    project: &str,
    environment: &str,
    kind: &str,
) -> ApiResult<Json<T>> {
    let project = project_for(state, caller, project, Role::Reader).await?;
    let check = state
        .store
        .environment_checks(project.id)
        .await?
        .into_iter()
        .find(|c| c.kind == kind && c.environment.eq_ignore_ascii_case(environment))
        .ok_or_else(|| ApiError::not_found("check"))?;
    serde_json::from_str(&check.config)
        .map(Json)
        .map_err(ApiError::internal)
}

pub(crate) async fn delete_automatic(
    state: &AppState,
    caller: &Caller,
    project: &str,
    environment: &str,
    kind: &str,
) -> ApiResult<StatusCode> {
    let project = check_owner(state, caller, project, environment).await?;
    state
        .store
        .set_environment_check(project.id, environment, kind, None)
        .await?;
    advance_project_runs(state, project.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_branch_control(
    State(state): State<AppState>,
    caller: Caller,
    resource: ResourcePath,
) -> ApiResult<Json<api::BranchControl>> {
    let environment = resource.key();
    let project = resource.project;
    get_automatic(&state, &caller, &project, &environment, BRANCH_CONTROL).await
}

async fn put_branch_control(
    State(state): State<AppState>,
    caller: Caller,
    resource: ResourcePath,
    body: Result<Json<api::BranchControl>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<api::BranchControl>> {
    let environment = resource.key();
    let project = resource.project;
    let Json(body) = body
        .map_err(|e| ApiError::bad_request(format!("invalid branch control: {}", e.body_text())))?;
    if body.allowed_branches.is_empty()
        || body.allowed_branches.len() > 100
        || body
            .allowed_branches
            .iter()
            .any(|b| b.trim().is_empty() || b.len() > 250 || b.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "`allowedBranches` must list 1 to 100 branches (refs or names, `*` at the end for any rest)",
        ));
    }
    put_automatic(
        &state,
        &caller,
        &project,
        &environment,
        BRANCH_CONTROL,
        &body,
    )
    .await?;
    Ok(Json(body))
}

async fn delete_branch_control(
    State(state): State<AppState>,
    caller: Caller,
    resource: ResourcePath,
) -> ApiResult<StatusCode> {
    let environment = resource.key();
    let project = resource.project;
    delete_automatic(&state, &caller, &project, &environment, BRANCH_CONTROL).await
}

async fn get_required_template(
    State(state): State<AppState>,
    caller: Caller,
    resource: ResourcePath,
) -> ApiResult<Json<api::RequiredTemplate>> {
    let environment = resource.key();
    let project = resource.project;
    get_automatic(&state, &caller, &project, &environment, REQUIRED_TEMPLATE).await
}

async fn put_required_template(
    State(state): State<AppState>,
    caller: Caller,
    resource: ResourcePath,
    body: Result<Json<api::RequiredTemplate>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<api::RequiredTemplate>> {
    let environment = resource.key();
    let project = resource.project;
    let Json(body) = body.map_err(|e| {
        ApiError::bad_request(format!("invalid required template: {}", e.body_text()))
    })?;
    if body.templates.is_empty()
        || body.templates.len() > 50
        || body
            .templates
            .iter()
            .any(|t| t.trim().is_empty() || t.len() > 500 || t.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "`templates` must list 1 to 50 template paths (`path` or `path@repository`)",
        ));
    }
    put_automatic(
        &state,
        &caller,
        &project,
        &environment,
        REQUIRED_TEMPLATE,
        &body,
    )
    .await?;
    Ok(Json(body))
}

async fn delete_required_template(
    State(state): State<AppState>,
    caller: Caller,
    resource: ResourcePath,
) -> ApiResult<StatusCode> {
    let environment = resource.key();
    let project = resource.project;
    delete_automatic(&state, &caller, &project, &environment, REQUIRED_TEMPLATE).await
}

async fn get_business_hours(
    State(state): State<AppState>,
    caller: Caller,
    resource: ResourcePath,
) -> ApiResult<Json<api::BusinessHours>> {
    let environment = resource.key();
    let project = resource.project;
    get_automatic(&state, &caller, &project, &environment, BUSINESS_HOURS).await
}

async fn put_business_hours(
    State(state): State<AppState>,
    caller: Caller,
    resource: ResourcePath,
    body: Result<Json<api::BusinessHours>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<api::BusinessHours>> {
    let environment = resource.key();
    let project = resource.project;
    let Json(body) = body
        .map_err(|e| ApiError::bad_request(format!("invalid business hours: {}", e.body_text())))?;
    if body.days.is_empty()
        || body
            .days
            .iter()
            .any(|d| !DAYS.iter().any(|day| day.eq_ignore_ascii_case(d)))
    {
        return Err(ApiError::bad_request(
            "`days` must list days among Mon, Tue, Wed, Thu, Fri, Sat, Sun",
        ));
    }
    let (Some(start), Some(end)) = (minutes_of(&body.start), minutes_of(&body.end)) else {
        return Err(ApiError::bad_request(
            "`start` and `end` must be times as HH:MM",
        ));
    };
    if start >= end {
        return Err(ApiError::bad_request("`end` must be after `start`"));
    }
    if offset_of(&body.utc_offset).is_none() {
        return Err(ApiError::bad_request(
            "`utcOffset` must be an offset from UTC such as +01:00 or -05:30",
        ));
    }
    put_automatic(
        &state,
        &caller,
        &project,
        &environment,
        BUSINESS_HOURS,
        &body,
    )
    .await?;
    Ok(Json(body))
}

async fn delete_business_hours(
    State(state): State<AppState>,
    caller: Caller,
    resource: ResourcePath,
) -> ApiResult<StatusCode> {
    let environment = resource.key();
    let project = resource.project;
    delete_automatic(&state, &caller, &project, &environment, BUSINESS_HOURS).await
}

async fn list_approvals(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<api::Approval>>> {
    let run = run_for(&state, &caller, id, Role::Reader).await?;
    let approvals = state.store.approvals_of_run(run.id).await?;
    Ok(Json(approvals.iter().map(approval_json).collect()))
}

/// How an approver names a group: `group:administrators`, `group:contributors` or
/// `group:readers`, the users with that role in the run's project (any one member of a group
/// approves for it, as in Azure).
const GROUP_PREFIX: &str = "group:";

fn group_role(group: &str) -> Option<Role> {
    match group.to_ascii_lowercase().as_str() {
        "administrators" => Some(Role::Administrator),
        "contributors" => Some(Role::Contributor),
        "readers" => Some(Role::Reader),
        _ => None,
    }
}

/// Who decides: the caller and their role in the run's project.
pub(crate) struct Approver<'c> {
    pub caller: &'c Caller,
    pub role: Option<Role>,
}

impl Approver<'_> {
    /// The caller with their role in `project_id`.
    pub(crate) async fn of<'c>(
        state: &AppState,
        caller: &'c Caller,
        project_id: i64,
    ) -> ApiResult<Approver<'c>> {
        let role = state
            .store
            .project_role(project_id, caller.user.id)
            .await?
            .as_deref()
            .and_then(Role::parse);
        Ok(Approver { caller, role })
    }

    /// Whether an entry of an approver list names the caller (a user name or a group of theirs).
    fn is(&self, entry: &str) -> bool {
        match entry.strip_prefix(GROUP_PREFIX) {
            Some(group) => group_role(group).is_some_and(|r| self.role == Some(r)),
            None => entry == self.caller.user.name,
        }
    }
}

/// Why the approver may not decide `approval` of `run`, if so.
fn refusal(approver: &Approver<'_>, run: &Run, approval: &Approval) -> Option<String> {
    let name = &approver.caller.user.name;
    let validation = crate::agentless::is_manual_validation(approval);
    if !approval.approvers.iter().any(|a| approver.is(a)) {
        let subject = if validation {
            "the manual validation".to_string()
        } else {
            resources::describe(&approval.environment)
        };
        return Some(format!(
            "`{name}` is not an approver of {subject} (approvers: {})",
            approval.approvers.join(", ")
        ));
    }
    if validation && !approval.allow_requester && &run.requested_by == name {
        return Some(format!(
            "`{name}` queued this run, and the manual validation does not let approvers approve their own runs"
        ));
    }
    if !approval.allow_requester && &run.requested_by == name {
        return Some(format!(
            "`{name}` queued this run, and the approval check of {} does not let the requester approve",
            resources::describe(&approval.environment)
        ));
    }
    if approval.in_sequence {
        let approved = approval.decisions.iter().filter(|d| d.approve).count();
        if let Some(next) = approval.approvers.get(approved)
            && !approver.is(next)
        {
            return Some(format!(
                "the approvals of {} go in sequence: `{next}` approves next",
                resources::describe(&approval.environment)
            ));
        }
    }
    None
}

async fn decide_approvals(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    body: Result<Json<api::DecideApprovals>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Vec<api::Approval>>> {
    let Json(body) =
        body.map_err(|e| ApiError::bad_request(format!("invalid decision: {}", e.body_text())))?;
    let approvals = decide(&state, &caller, id, &body).await?;
    Ok(Json(approvals.iter().map(approval_json).collect()))
}

/// Whether the caller may decide this pending approval of `run` (for the run page's buttons).
pub(crate) fn may_decide(approver: &Approver<'_>, run: &Run, approval: &Approval) -> bool {
    approval.status == "pending" && refusal(approver, run, approval).is_none()
}

/// Records the caller's decision on the run's pending approvals that `body` selects and the
/// caller may decide (API and run page), then moves the run on; the approvals after.
pub(crate) async fn decide(
    state: &AppState,
    caller: &Caller,
    id: i64,
    body: &api::DecideApprovals,
) -> ApiResult<Vec<Approval>> {
    caller.require_scope("write")?;
    let run = run_for(state, caller, id, Role::Reader).await?;
    let approve = match body.decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => {
            return Err(ApiError::bad_request(
                "`decision` must be `approve` or `reject`",
            ));
        }
    };
    if body.comment.len() > 2_000 {
        return Err(ApiError::bad_request(
            "`comment` must be at most 2000 bytes",
        ));
    }
    let approvals = state.store.approvals_of_run(run.id).await?;
    let waiting: Vec<&Approval> = approvals
        .iter()
        .filter(|a| a.status == "pending")
        .filter(|a| body.stage.as_ref().is_none_or(|s| &a.stage == s))
        .filter(|a| {
            body.environment.as_ref().is_none_or(|e| {
                a.environment.eq_ignore_ascii_case(e)
                    || resources::parse_key(&a.environment)
                        .1
                        .eq_ignore_ascii_case(e)
            })
        })
        .collect();
    if waiting.is_empty() {
        return Err(ApiError::conflict(match (&body.stage, &body.environment) {
            (Some(stage), _) => format!(
                "no approval of run {} is waiting for stage `{stage}`",
                run.id
            ),
            (None, Some(environment)) => format!(
                "no approval of run {} is waiting for `{environment}`",
                run.id
            ),
            (None, None) => format!("no approval of run {} is waiting", run.id),
        }));
    }
    let approver = Approver::of(state, caller, run.project_id).await?;
    let (allowed, refused): (Vec<&Approval>, Vec<&Approval>) = waiting
        .into_iter()
        .partition(|a| refusal(&approver, &run, a).is_none());
    if allowed.is_empty() {
        let reason = refused
            .first()
            .and_then(|a| refusal(&approver, &run, a))
            .unwrap_or_default();
        return Err(ApiError::forbidden(reason));
    }
    let decision = ApprovalDecision {
        user: caller.user.name.clone(),
        approve,
        comment: body.comment.clone(),
        decided_at: now_millis(),
    };
    for approval in allowed {
        // `None`: decided meanwhile (another approver, the timeout); nothing to record.
        state.store.decide_approval(approval.id, &decision).await?;
    }
    crate::runs::advance_run(state, run.id).await?;
    Ok(state.store.approvals_of_run(run.id).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(id: i64, environment: &str) -> ApprovalCheck {
        ApprovalCheck {
            id,
            project_id: 1,
            environment: environment.into(),
            approvers: vec!["bob".into()],
            min_approvals: 1,
            allow_requester: false,
            instructions: String::new(),
            timeout_minutes: 1,
            in_sequence: false,
            created_by: "ada".into(),
            created_at: 0,
        }
    }

    fn approval(check_id: i64, status: &str) -> Approval {
        Approval {
            id: check_id,
            run_id: 1,
            stage: "Deploy".into(),
            environment: "test".into(),
            check_id,
            approvers: vec!["bob".into()],
            min_approvals: 1,
            allow_requester: false,
            instructions: "look".into(),
            timeout_minutes: 1,
            in_sequence: false,
            attempt: 1,
            status: status.into(),
            requested_at: 1_000,
            decided_at: None,
            decisions: Vec::new(),
        }
    }

    #[test]
    fn a_gate_opens_when_every_check_approved_and_rejects_on_any_refusal() {
        let (a, b) = (check(1, "test"), check(2, "TEST-db"));
        let checks = [&a, &b];
        let pending = approval(1, "pending");
        let approved_a = approval(1, "approved");
        let approved_b = approval(2, "approved");
        let rejected = approval(2, "rejected");
        let timed_out = approval(2, "timedOut");
        assert_eq!(gate_of(&checks, &[]), Gate::Pending);
        assert_eq!(gate_of(&checks, &[&pending]), Gate::Pending);
        assert_eq!(gate_of(&checks, &[&approved_a]), Gate::Pending);
        assert_eq!(gate_of(&checks, &[&approved_a, &approved_b]), Gate::Open);
        assert_eq!(gate_of(&checks, &[&pending, &rejected]), Gate::Rejected);
        assert_eq!(gate_of(&checks, &[&approved_a, &timed_out]), Gate::Rejected);
        assert!(!overdue(&pending, 60_999));
        assert!(overdue(&pending, 61_000));
        assert!(!overdue(&approved_a, 1_000_000));
    }

    #[test]
    fn branch_patterns_and_business_hours() {
        let allowed = vec!["main".to_string(), "refs/heads/release/*".to_string()];
        assert!(branch_allowed(&allowed, "refs/heads/main"));
        assert!(branch_allowed(&allowed, "refs/heads/Main"));
        assert!(branch_allowed(&allowed, "refs/heads/release/1.2"));
        assert!(!branch_allowed(&allowed, "refs/heads/feature/x"));
        assert!(!branch_allowed(&allowed, "refs/heads/mainline"));
        assert!(branch_allowed(&["*".into()], "refs/tags/v1"));
        // 2026-12-07 was a Monday; 10:30 UTC.
        let monday = 1_796_639_400_000;
        let hours = |days: &[&str], start: &str, end: &str, offset: &str| api::BusinessHours {
            days: days.iter().map(|d| d.to_string()).collect(),
            start: start.into(),
            end: end.into(),
            utc_offset: offset.into(),
        };
        assert!(within_hours(
            &hours(&["Mon"], "09:00", "17:00", "+00:00"),
            monday
        ));
        assert!(!within_hours(
            &hours(&["Tue"], "09:00", "17:00", "+00:00"),
            monday
        ));
        assert!(!within_hours(
            &hours(&["Mon"], "11:00", "17:00", "+00:00"),
            monday
        ));
        // 10:30 UTC is 16:00 at +05:30, and still Monday; 00:30 Tuesday at +14:00.
        assert!(within_hours(
            &hours(&["mon"], "15:00", "16:01", "+05:30"),
            monday
        ));
        assert!(within_hours(
            &hours(&["Tue"], "00:00", "01:00", "+14:00"),
            monday
        ));
        assert!(!within_hours(
            &hours(&["Mon"], "9:00", "17:00", "+00:00"),
            monday
        ));
        assert_eq!(offset_of("-05:30"), Some(-330));
        assert_eq!(offset_of("05:30"), None);
        assert_eq!(minutes_of("24:00"), None);
    }

    #[test]
    fn the_stage_checks_follow_its_jobs_environments_ignoring_case() {
        let mut deploy = crate::run_engine::tests::bare_job(1, None);
        deploy.stage_name = "Deploy".into();
        deploy.environment = Some("Test".into());
        let mut build = crate::run_engine::tests::bare_job(2, None);
        build.stage_name = "Build".into();
        let jobs = [deploy, build];
        let checks = [check(1, "test"), check(2, "prod")];
        let of_deploy: Vec<i64> = checks_of_stage(&checks, &jobs, "Deploy")
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(of_deploy, [1]);
        assert!(checks_of_stage(&checks, &jobs, "Build").is_empty());
        let reasons = waiting_reasons(&[approval(1, "pending"), approval(2, "approved")]);
        assert_eq!(
            reasons.get("Deploy").map(String::as_str),
            Some("approval for environment `test`: 0 of 1 from bob (look)")
        );
    }
}
