//! The invoke-REST-API check of environments, after Microsoft's "Define approvals and checks"
//! ("Invoke REST API"): an environment's owners give a URL, method, headers (secret ones sealed
//! at rest), body and a success criterion over the JSON answer; a stage deploying there waits,
//! once its dependencies are done and its branch control and business hours passed, until a call
//! passes, asking again every retry interval; it fails when the timeout passes, and a check that
//! cannot be read fails closed. The call is the one `InvokeRESTAPI@1` makes
//! (`lockgate_runner::agentless::RestCall`). Calls are made in the background, never in a
//! scheduling pass; how each stands is kept in memory, so a restarted server evaluates again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use lockgate_protocol::api;
use lockgate_runner::agentless::RestCall;
use lockgate_store::{EnvironmentCheck, Run};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

pub(crate) const INVOKE_REST_API: &str = "invokeRestApi";

pub fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for base in crate::resources::check_bases() {
        router = router.route(
            &format!("{base}/checks/rest-api"),
            get(get_check).put(put_check).delete(delete_check),
        );
    }
    router
}

/// How one check of one stage of one run stands.
#[derive(Clone, Debug, Default)]
struct Entry {
    first_at: i64,
    polling: bool,
    passed: bool,
    failed: Option<String>,
    last: String,
}

/// The evaluations in progress, by run, stage and check.
#[derive(Debug, Default)]
pub struct RestChecks(Mutex<HashMap<(i64, String, i64), Entry>>);

/// How a stage stands with its REST checks.
pub(crate) enum RestGate {
    Passed,
    Waiting(String),
    Refused(String),
}

fn now() -> i64 {
    lockgate_store::now_millis()
}

fn config_of(check: &EnvironmentCheck) -> Result<api::RestApiCheck, String> {
    serde_json::from_str(&check.config).map_err(|_| {
        format!(
            "the invoke REST API check of {} cannot be read",
            crate::resources::describe(&check.environment)
        )
    })
}

/// What the stage's REST checks say now (read only; [`poll`] starts the calls).
pub(crate) fn gate(
    state: &AppState,
    run: &Run,
    stage: &str,
    checks: &[&EnvironmentCheck],
) -> RestGate {
    let entries = state
        .rest_checks
        .0
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    for check in checks.iter().filter(|c| c.kind == INVOKE_REST_API) {
        let config = match config_of(check) {
            Ok(config) => config,
            Err(why) => return RestGate::Refused(why),
        };
        match entries.get(&(run.id, stage.to_string(), check.id)) {
            Some(entry) if entry.passed => continue,
            Some(Entry {
                failed: Some(why), ..
            }) => return RestGate::Refused(why.clone()),
            Some(entry) => {
                return RestGate::Waiting(format!(
                    "the invoke REST API check of {}: {} {} to pass{} (last answer: {})",
                    crate::resources::describe(&check.environment),
                    config.method,
                    config.url,
                    config
                        .success_criteria
                        .as_deref()
                        .map(|c| format!(" `{c}`"))
                        .unwrap_or_default(),
                    entry.last
                ));
            }
            None => {
                return RestGate::Waiting(format!(
                    "the invoke REST API check of {}: {} {} (not called yet)",
                    crate::resources::describe(&check.environment),
                    config.method,
                    config.url
                ));
            }
        }
    }
    RestGate::Passed
}

/// Starts the background evaluation of the stage's REST checks that have none yet.
pub(crate) fn poll(state: &AppState, run: &Run, stage: &str, checks: &[&EnvironmentCheck]) {
    for check in checks.iter().filter(|c| c.kind == INVOKE_REST_API) {
        let Ok(config) = config_of(check) else {
            continue;
        };
        let key = (run.id, stage.to_string(), check.id);
        {
            let Ok(mut entries) = state.rest_checks.0.lock() else {
                return;
            };
            let entry = entries.entry(key.clone()).or_default();
            if entry.polling || entry.passed || entry.failed.is_some() {
                continue;
            }
            entry.polling = true;
            entry.first_at = now();
            entry.last = "none yet".into();
        }
        let call = RestCall {
            method: config.method.clone(),
            url: config.url.clone(),
            headers: config
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .chain(config.secret_headers.iter().filter_map(|(k, v)| {
                    v.as_ref()
                        .map(|v| (k.clone(), state.secrets.open_or_keep(v)))
                }))
                .collect(),
            body: config.body.clone(),
            success_criteria: config.success_criteria.clone(),
        };
        let state = state.clone();
        let run_id = run.id;
        tokio::spawn(async move { evaluate(state, key, call, config, run_id).await });
    }
}

async fn evaluate(
    state: AppState,
    key: (i64, String, i64),
    call: RestCall,
    config: api::RestApiCheck,
    run_id: i64,
) {
    let interval = Duration::from_secs_f64((config.retry_interval_minutes * 60.0).max(0.05));
    let deadline = now() + config.timeout_minutes.saturating_mul(60_000);
    loop {
        // A run that ended (canceled, or its stage decided otherwise) needs no more calls.
        match state.store.run_by_id(run_id).await {
            Ok(Some(run)) if run.status != "completed" => {}
            _ => {
                if let Ok(mut entries) = state.rest_checks.0.lock() {
                    entries.remove(&key);
                }
                return;
            }
        }
        let attempt = call.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            attempt
                .send(Duration::from_secs(30))
                .and_then(|answer| attempt.passes(&answer).map(|()| answer.status))
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        let done = {
            let Ok(mut entries) = state.rest_checks.0.lock() else {
                return;
            };
            let entry = entries.entry(key.clone()).or_default();
            match outcome {
                Ok(status) => {
                    entry.passed = true;
                    entry.last = format!("HTTP {status}");
                    true
                }
                Err(why) if now() >= deadline => {
                    entry.failed = Some(format!(
                        "the invoke REST API check did not pass within {} minutes (last answer: {why})",
                        config.timeout_minutes
                    ));
                    true
                }
                Err(why) => {
                    entry.last = why;
                    false
                }
            }
        };
        let _ = crate::runs::advance_run(&state, run_id).await;
        if done {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

fn json_of(mut check: api::RestApiCheck) -> api::RestApiCheck {
    for value in check.secret_headers.values_mut() {
        *value = None;
    }
    check
}

async fn get_check(
    State(state): State<AppState>,
    caller: Caller,
    resource: crate::resources::ResourcePath,
) -> ApiResult<Json<api::RestApiCheck>> {
    let environment = resource.key();
    let project = resource.project;
    let Json(check) = crate::approvals::get_automatic::<api::RestApiCheck>(
        &state,
        &caller,
        &project,
        &environment,
        INVOKE_REST_API,
    )
    .await?;
    Ok(Json(json_of(check)))
}

async fn put_check(
    State(state): State<AppState>,
    caller: Caller,
    resource: crate::resources::ResourcePath,
    body: Result<Json<api::RestApiCheck>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<api::RestApiCheck>> {
    let environment = resource.key();
    let project = resource.project;
    let Json(mut body) = body.map_err(|e| {
        ApiError::bad_request(format!("invalid invoke REST API check: {}", e.body_text()))
    })?;
    body.method = body.method.trim().to_ascii_uppercase();
    if !(body.retry_interval_minutes.is_finite()
        && (0.01..=1_440.0).contains(&body.retry_interval_minutes))
    {
        return Err(ApiError::bad_request(
            "`retryIntervalMinutes` must be between 0.01 and 1440",
        ));
    }
    if !(1..=43_200).contains(&body.timeout_minutes) {
        return Err(ApiError::bad_request(
            "`timeoutMinutes` must be between 1 and 43200 (30 days)",
        ));
    }
    let call = RestCall {
        method: body.method.clone(),
        url: body.url.clone(),
        headers: Vec::new(),
        body: body.body.clone(),
        success_criteria: body.success_criteria.clone(),
    };
    call.validate().map_err(ApiError::bad_request)?;
    // Secret headers are sealed; one sent as null keeps the stored value.
    let stored: Option<api::RestApiCheck> =
        crate::approvals::get_automatic(&state, &caller, &project, &environment, INVOKE_REST_API)
            .await
            .ok()
            .map(|Json(c)| c);
    for (name, value) in body.secret_headers.iter_mut() {
        *value = match value.take() {
            Some(clear) => Some(state.secrets.seal(&clear)),
            None => stored
                .as_ref()
                .and_then(|s| s.secret_headers.get(name).cloned().flatten()),
        };
    }
    crate::approvals::put_automatic(
        &state,
        &caller,
        &project,
        &environment,
        INVOKE_REST_API,
        &body,
    )
    .await?;
    Ok(Json(json_of(body)))
}

async fn delete_check(
    State(state): State<AppState>,
    caller: Caller,
    resource: crate::resources::ResourcePath,
) -> ApiResult<StatusCode> {
    let environment = resource.key();
    let project = resource.project;
    crate::approvals::delete_automatic(&state, &caller, &project, &environment, INVOKE_REST_API)
        .await
}
