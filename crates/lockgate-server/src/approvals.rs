//! Approvals: the approval checks a project's administrators (the environments' owners, not the
//! pipeline's authors) put on an environment, and the gates they make of the stages that deploy
//! there. After Microsoft's "Define approvals and checks" (learn.microsoft.com/azure/devops/
//! pipelines/process/approvals): a stage that deploys to an environment with checks waits, after
//! its condition held and before any of its jobs start, until every check passed; approvers are
//! users, a minimum number of them must approve, the user who queued the run may not approve unless
//! the check allows it, one rejection rejects, and a check that is not decided within its timeout
//! rejects. The run engine decides when a stage waits ([`lockgate_engine::Decision::AwaitChecks`]);
//! this module keeps the approvals and says how each gate stands.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use lockgate_engine::Gate;
use lockgate_protocol::api;
use lockgate_store::{
    Approval, ApprovalCheck, ApprovalDecision, Job, NewApprovalCheck, Run, now_millis,
};

use crate::AppState;
use crate::api::{project_for, run_for};
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/projects/{project}/environments/{environment}/checks/approval",
            get(get_check).put(put_check).delete(delete_check),
        )
        .route(
            "/api/v1/runs/{id}/approvals",
            get(list_approvals).post(decide_approvals),
        )
}

/// The environment a deployment job deploys to, from its stored plan (`environment.name`).
fn job_environment(job: &Job) -> Option<String> {
    let spec: serde_json::Value = serde_json::from_str(&job.spec).ok()?;
    spec["job"]["environment"]["name"]
        .as_str()
        .filter(|name| !name.is_empty())
        .map(str::to_string)
}

/// The environments the jobs of `stage` deploy to.
fn stage_environments(jobs: &[Job], stage: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for job in jobs.iter().filter(|j| j.stage_name == stage) {
        if let Some(environment) = job_environment(job)
            && !names.iter().any(|n| n.eq_ignore_ascii_case(&environment))
        {
            names.push(environment);
        }
    }
    names
}

/// The checks on the environments `stage` deploys to.
fn checks_of_stage<'c>(
    checks: &'c [ApprovalCheck],
    jobs: &[Job],
    stage: &str,
) -> Vec<&'c ApprovalCheck> {
    let environments = stage_environments(jobs, stage);
    checks
        .iter()
        .filter(|check| {
            environments
                .iter()
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

/// The gate of every stage of the run that deploys to an environment with a check (stages
/// without one are not in the map). Approvals past their timeout are ended as timed out here.
pub(crate) async fn stage_gates(
    state: &AppState,
    run: &Run,
    jobs: &[Job],
) -> ApiResult<BTreeMap<String, Gate>> {
    let mut gates = BTreeMap::new();
    let checks = state.store.approval_checks(run.project_id).await?;
    if checks.is_empty() {
        return Ok(gates);
    }
    let mut approvals = state.store.approvals_of_run(run.id).await?;
    let now = now_millis();
    for approval in approvals.iter_mut().filter(|a| overdue(a, now)) {
        if state.store.expire_approval(approval.id, now).await? {
            approval.status = "timedOut".into();
        }
    }
    for job in jobs {
        if gates.contains_key(&job.stage_name) {
            continue;
        }
        let stage_checks = checks_of_stage(&checks, jobs, &job.stage_name);
        if stage_checks.is_empty() {
            continue;
        }
        let asked: Vec<&Approval> = approvals
            .iter()
            .filter(|a| a.stage == job.stage_name)
            .collect();
        gates.insert(job.stage_name.clone(), gate_of(&stage_checks, &asked));
    }
    Ok(gates)
}

/// Asks for the approvals a stage waits for (once per check: asking again changes nothing).
pub(crate) async fn request(
    state: &AppState,
    run: &Run,
    jobs: &[Job],
    stage: &str,
) -> ApiResult<()> {
    let checks = state.store.approval_checks(run.project_id).await?;
    for check in checks_of_stage(&checks, jobs, stage) {
        state
            .store
            .request_approval(run.id, stage, check, now_millis())
            .await?;
    }
    Ok(())
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
    for approval in approvals.iter().filter(|a| a.status == "pending") {
        let approved = approval.decisions.iter().filter(|d| d.approve).count();
        let mut text = format!(
            "approval for environment `{}`: {approved} of {} from {}",
            approval.environment,
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

fn approval_json(approval: &Approval) -> api::Approval {
    api::Approval {
        id: approval.id,
        stage: approval.stage.clone(),
        environment: approval.environment.clone(),
        status: approval.status.clone(),
        approvers: approval.approvers.clone(),
        min_approvals: approval.min_approvals,
        allow_requester: approval.allow_requester,
        instructions: approval.instructions.clone(),
        timeout_minutes: approval.timeout_minutes,
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
    }
}

/// An environment name as a check names it: 1 to 100 characters, no control characters, no
/// leading or trailing space.
fn valid_environment(name: &str) -> ApiResult<()> {
    if name.is_empty()
        || name.chars().count() > 100
        || name.trim() != name
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "`environment` must be 1 to 100 characters without control characters or surrounding spaces",
        ));
    }
    Ok(())
}

async fn get_check(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, environment)): Path<(String, String)>,
) -> ApiResult<Json<api::ApprovalCheck>> {
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
    Path((project, environment)): Path<(String, String)>,
    body: Result<Json<api::ApprovalCheck>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<api::ApprovalCheck>> {
    let project = project_for(&state, &caller, &project, Role::Administrator).await?;
    valid_environment(&environment)?;
    let Json(body) = body
        .map_err(|e| ApiError::bad_request(format!("invalid approval check: {}", e.body_text())))?;
    if body.approvers.is_empty() || body.approvers.len() > 50 {
        return Err(ApiError::bad_request("`approvers` must name 1 to 50 users"));
    }
    let mut approvers: Vec<String> = Vec::new();
    for name in &body.approvers {
        let user =
            state.store.user_by_name(name).await?.ok_or_else(|| {
                ApiError::bad_request(format!("`approvers`: `{name}` is not a user"))
            })?;
        if !approvers.contains(&user.name) {
            approvers.push(user.name);
        }
    }
    if body.min_approvals < 1 || body.min_approvals > approvers.len() as i64 {
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
        min_approvals: body.min_approvals,
        allow_requester: body.allow_requester,
        instructions: body.instructions,
        timeout_minutes: body.timeout_minutes,
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
    Path((project, environment)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let project = project_for(&state, &caller, &project, Role::Administrator).await?;
    state
        .store
        .set_approval_check(project.id, &environment, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
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

/// Why `caller` may not decide `approval` of `run`, if so.
fn refusal(caller: &Caller, run: &Run, approval: &Approval) -> Option<String> {
    if !approval.approvers.iter().any(|a| a == &caller.user.name) {
        return Some(format!(
            "`{}` is not an approver of environment `{}` (approvers: {})",
            caller.user.name,
            approval.environment,
            approval.approvers.join(", ")
        ));
    }
    if !approval.allow_requester && run.requested_by == caller.user.name {
        return Some(format!(
            "`{}` queued this run, and the approval check of environment `{}` does not let the requester approve",
            caller.user.name, approval.environment
        ));
    }
    None
}

async fn decide_approvals(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    body: Result<Json<api::DecideApprovals>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Vec<api::Approval>>> {
    caller.require_scope("write")?;
    let run = run_for(&state, &caller, id, Role::Reader).await?;
    let Json(body) =
        body.map_err(|e| ApiError::bad_request(format!("invalid decision: {}", e.body_text())))?;
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
            body.environment
                .as_ref()
                .is_none_or(|e| a.environment.eq_ignore_ascii_case(e))
        })
        .collect();
    if waiting.is_empty() {
        return Err(ApiError::conflict(match (&body.stage, &body.environment) {
            (Some(stage), _) => format!(
                "no approval of run {} is waiting for stage `{stage}`",
                run.id
            ),
            (None, Some(environment)) => format!(
                "no approval of run {} is waiting for environment `{environment}`",
                run.id
            ),
            (None, None) => format!("no approval of run {} is waiting", run.id),
        }));
    }
    let (allowed, refused): (Vec<&Approval>, Vec<&Approval>) = waiting
        .into_iter()
        .partition(|a| refusal(&caller, &run, a).is_none());
    if allowed.is_empty() {
        let reason = refused
            .first()
            .and_then(|a| refusal(&caller, &run, a))
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
    crate::runs::advance_run(&state, run.id).await?;
    let approvals = state.store.approvals_of_run(run.id).await?;
    Ok(Json(approvals.iter().map(approval_json).collect()))
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
    fn the_stage_checks_follow_its_jobs_environments_ignoring_case() {
        let mut deploy = crate::run_engine::tests::bare_job(1, None);
        deploy.stage_name = "Deploy".into();
        deploy.spec = serde_json::json!({"job": {"environment": {"name": "Test"}}}).to_string();
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
