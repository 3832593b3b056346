//! Agentless (`pool: server`) tasks as `lockgate run` and the server both run them: `Delay@1`,
//! `InvokeRESTAPI@1` and `ManualValidation@0/1` read from a step's inputs, and the one HTTP call +
//! success criterion that `InvokeRESTAPI@1` and the server's Invoke REST API check share.
//!
//! Sources: Microsoft's task references "Delay@1", "InvokeRESTAPI@1", "ManualValidation@0" and
//! "ManualValidation@1" (learn.microsoft.com/azure/devops/pipelines/tasks/reference/...), and
//! "Invoke Azure Function / REST API checks" (…/pipelines/process/invoke-checks).

use std::time::Duration;

use lockgate_expr::{MapContext, NamedValues, Object, ParseOptions, Value};
use lockgate_pipeline::plan::{Step, StepKind};

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::events::{Event, EventSink, TaskResult};
use crate::variables::VariableStore;

/// The longest `Delay@1` takes: 86400 minutes, 60 days ("The maximum value is 86400").
pub const MAX_DELAY_MINUTES: f64 = 86_400.0;

/// The HTTP methods `InvokeRESTAPI@1` allows.
pub const METHODS: [&str; 8] = [
    "OPTIONS", "GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "PATCH",
];

/// Most bytes of a response body read (and kept for the success criterion).
const MAX_RESPONSE_BYTES: u64 = 8 * 1024 * 1024;

/// One agentless task, its inputs read and macro-expanded.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerTask {
    /// `Delay@1`: waits, cancellable.
    Delay { duration: Duration },
    /// `InvokeRESTAPI@1`.
    InvokeRestApi(RestCall),
    /// `ManualValidation@0` / `@1`: waits for someone to resume or reject.
    ManualValidation(ManualValidation),
}

/// What a manual validation asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct ManualValidation {
    /// `notifyUsers`, as written (Lockgate sends no mail; they are listed in the log).
    pub notify_users: Vec<String>,
    /// `approvers` (v1): users or `group:` entries; empty means anyone who may queue runs.
    pub approvers: Vec<String>,
    /// `allowApproversToApproveTheirOwnRuns` (v1, default true); v0 has no such input.
    pub allow_own_runs: bool,
    pub instructions: String,
    /// `onTimeout: resume` (the default is `reject`).
    pub resume_on_timeout: bool,
}

/// An HTTP call and what makes it pass.
#[derive(Clone, Debug, PartialEq)]
pub struct RestCall {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// Sent for every method but GET and HEAD.
    pub body: Option<String>,
    /// An expression over the JSON response (`root`); none: any 2xx answer passes.
    pub success_criteria: Option<String>,
}

/// What the server answered.
#[derive(Clone, Debug, PartialEq)]
pub struct RestResponse {
    pub status: u16,
    pub body: String,
}

fn input<'s>(step: &'s Step, names: &[&str]) -> Option<&'s str> {
    names.iter().find_map(|name| {
        step.inputs
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    })
}

fn input_bool(step: &Step, names: &[&str], default: bool) -> Result<bool, String> {
    match input(step, names).map(str::trim) {
        None | Some("") => Ok(default),
        Some(text) if text.eq_ignore_ascii_case("true") => Ok(true),
        Some(text) if text.eq_ignore_ascii_case("false") => Ok(false),
        Some(text) => Err(format!(
            "input `{}` must be true or false, not `{text}`",
            names[0]
        )),
    }
}

/// A comma-separated list, trimmed, without empty entries.
pub fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether a step is a task agentless jobs run.
pub fn is_server_task(step: &Step) -> bool {
    server_task_name(step).is_some()
}

fn server_task_name(step: &Step) -> Option<(&'static str, u32)> {
    let task = step.task.as_ref().filter(|_| step.kind == StepKind::Task)?;
    let name = task.name.rsplit('.').next().unwrap_or(&task.name);
    [
        ("Delay", 1),
        ("InvokeRESTAPI", 1),
        ("ManualValidation", 0),
        ("ManualValidation", 1),
    ]
    .into_iter()
    .find(|(known, major)| name.eq_ignore_ascii_case(known) && task.major == *major)
}

/// Reads an agentless task from its step, expanding `$(macros)` in its inputs with `expand`. The
/// error says which input is wrong, or that the step is not an agentless task.
pub fn server_task(step: &Step, expand: &dyn Fn(&str) -> String) -> Result<ServerTask, String> {
    let Some((name, major)) = server_task_name(step) else {
        let what = match &step.task {
            Some(task) if step.kind == StepKind::Task => {
                format!("task `{}@{}`", task.name, task.major)
            }
            _ => format!("a `{}` step", step.kind.key()),
        };
        return Err(format!(
            "{what} cannot run in an agentless job (pool: server): only Delay@1, InvokeRESTAPI@1 and ManualValidation@0/1 run there"
        ));
    };
    let read = |names: &[&str]| input(step, names).map(expand);
    match name {
        "Delay" => {
            let text = read(&["delayForMinutes"]).unwrap_or_else(|| "0".into());
            let minutes: f64 = text.trim().parse().map_err(|_| {
                format!("input `delayForMinutes` must be a number of minutes, not `{text}`")
            })?;
            if !(0.0..=MAX_DELAY_MINUTES).contains(&minutes) {
                return Err(format!(
                    "input `delayForMinutes` must be between 0 and {MAX_DELAY_MINUTES} (60 days), not `{text}`"
                ));
            }
            Ok(ServerTask::Delay {
                duration: Duration::from_secs_f64(minutes * 60.0),
            })
        }
        "InvokeRESTAPI" => {
            let selector = read(&["connectionType", "connectedServiceNameSelector"])
                .unwrap_or_else(|| "connectedServiceName".into());
            if !selector.eq_ignore_ascii_case("connectedServiceName") {
                return Err(format!(
                    "input `connectionType: {selector}` is not supported: Lockgate has no Azure subscriptions; give the full URL in `urlSuffix`"
                ));
            }
            let connection = read(&[
                "serviceConnection",
                "connectedServiceName",
                "genericService",
            ])
            .unwrap_or_default();
            let suffix = read(&["urlSuffix"]).unwrap_or_default();
            // A library service connection (generic: URL, user name, password) reaches the job as
            // the variables `<name>.Url`, `<name>.Username` and `<name>.Password`; the URL is the
            // connection's URL followed by `urlSuffix`, sent with basic authentication when the
            // connection has a user name or password ("Invoke REST API task": "the base URL is
            // taken from the generic service connection"). A connection given as a URL is the base.
            let mut basic_auth = None;
            let url = if is_http_url(&suffix) {
                suffix
            } else if is_http_url(&connection) {
                format!("{}{suffix}", connection)
            } else {
                let field = |name: &str| {
                    let text = format!("$({connection}.{name})");
                    let value = expand(&text);
                    (value != text).then_some(value)
                };
                match field("Url").filter(|u| is_http_url(u)) {
                    Some(base) if !connection.trim().is_empty() => {
                        let user = field("Username").unwrap_or_default();
                        let password = field("Password").unwrap_or_default();
                        if !user.is_empty() || !password.is_empty() {
                            basic_auth = Some(basic_authorization(&user, &password));
                        }
                        format!("{base}{suffix}")
                    }
                    _ if connection.trim().is_empty() => {
                        return Err("input `connectedServiceName` (a generic service connection) or a full URL (http:// or https://) in `urlSuffix` is required".into());
                    }
                    _ => {
                        return Err(format!(
                            "service connection `{connection}` is not available here: on a server, create a generic service connection of that name (`lockgate service-connections`); on this machine, give its URL with `--var {connection}.Url=https://...` or the full URL in `urlSuffix`"
                        ));
                    }
                }
            };
            let method = read(&["method"])
                .unwrap_or_else(|| "POST".into())
                .trim()
                .to_ascii_uppercase();
            if input_bool(step, &["waitForCompletion"], false)? {
                return Err("input `waitForCompletion: true` (the callback completion event) is not supported: use `successCriteria`".into());
            }
            let mut headers = match read(&["headers"]) {
                Some(text) => parse_headers(&text).map_err(|e| format!("input `headers`: {e}"))?,
                None => Vec::new(),
            };
            if let Some(value) = basic_auth
                && !headers
                    .iter()
                    .any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
            {
                headers.push(("Authorization".into(), value));
            }
            let call = RestCall {
                method,
                url,
                headers,
                body: read(&["body"]),
                success_criteria: read(&["successCriteria"]).filter(|s| !s.trim().is_empty()),
            };
            call.validate()?;
            Ok(ServerTask::InvokeRestApi(call))
        }
        _ => {
            let on_timeout = read(&["onTimeout"]).unwrap_or_else(|| "reject".into());
            let resume_on_timeout = match on_timeout.trim() {
                t if t.eq_ignore_ascii_case("resume") => true,
                t if t.eq_ignore_ascii_case("reject") => false,
                other => {
                    return Err(format!(
                        "input `onTimeout` must be `reject` or `resume`, not `{other}`"
                    ));
                }
            };
            let (approvers, allow_own_runs) = if major == 1 {
                (
                    split_list(&read(&["approvers"]).unwrap_or_default()),
                    input_bool(step, &["allowApproversToApproveTheirOwnRuns"], true)?,
                )
            } else {
                (Vec::new(), true)
            };
            Ok(ServerTask::ManualValidation(ManualValidation {
                notify_users: split_list(&read(&["notifyUsers"]).unwrap_or_default()),
                approvers,
                allow_own_runs,
                instructions: read(&["instructions"]).unwrap_or_default(),
                resume_on_timeout,
            }))
        }
    }
}

/// An `Authorization` header value for HTTP basic authentication.
fn basic_authorization(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn is_http_url(text: &str) -> bool {
    let lower = text.trim().to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// Headers given as a JSON object (`{"Content-Type": "application/json"}`); values that are
/// numbers or booleans are sent as written.
pub fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("must be a JSON object: {e}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err("must be a JSON object of header names to values".into());
    };
    map.into_iter()
        .map(|(name, value)| {
            let value = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => return Err(format!("the value of header `{name}` must be a string")),
            };
            Ok((name, value))
        })
        .collect()
}

/// The parse options of success criteria: the response is the named value `root`.
fn criteria_options() -> ParseOptions {
    ParseOptions {
        named_values: NamedValues::Only(vec!["root".into()]),
        ..ParseOptions::template()
    }
}

/// Checks a success criterion's syntax (when it is configured, before any call).
pub fn check_criteria(criteria: &str) -> Result<(), String> {
    lockgate_expr::parse(criteria, &criteria_options())
        .map(|_| ())
        .map_err(|e| format!("success criteria `{criteria}`: {e}"))
}

impl RestCall {
    /// Checks the method, URL and criterion; the error names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !METHODS.contains(&self.method.as_str()) {
            return Err(format!(
                "method `{}` is not one of {}",
                self.method,
                METHODS.join(", ")
            ));
        }
        if !is_http_url(&self.url) {
            return Err(format!("`{}` is not an http:// or https:// URL", self.url));
        }
        if let Some(criteria) = &self.success_criteria {
            check_criteria(criteria)?;
        }
        Ok(())
    }

    /// Makes the call (blocking; at most `timeout`). `Err` for a call that got no answer.
    pub fn send(&self, timeout: Duration) -> Result<RestResponse, String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .new_agent();
        let mut builder = ureq::http::Request::builder()
            .method(self.method.as_str())
            .uri(self.url.as_str());
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let sent = if matches!(self.method.as_str(), "GET" | "HEAD") || self.body.is_none() {
            builder
                .body(())
                .map_err(|e| e.to_string())
                .and_then(|r| agent.run(r).map_err(|e| e.to_string()))
        } else {
            builder
                .body(self.body.clone().unwrap_or_default())
                .map_err(|e| e.to_string())
                .and_then(|r| agent.run(r).map_err(|e| e.to_string()))
        };
        let mut response = sent.map_err(|e| format!("{} {}: {e}", self.method, self.url))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_string()
            .unwrap_or_default();
        Ok(RestResponse { status, body })
    }

    /// Whether `response` passes: a 2xx status, and the success criterion (if any) true over the
    /// JSON body. `Err` says why not (a failed criterion, a status, a body that is not JSON).
    pub fn passes(&self, response: &RestResponse) -> Result<(), String> {
        if !(200..300).contains(&response.status) {
            return Err(format!("the server answered HTTP {}", response.status));
        }
        let Some(criteria) = &self.success_criteria else {
            return Ok(());
        };
        let expr = lockgate_expr::parse(criteria, &criteria_options())
            .map_err(|e| format!("success criteria `{criteria}`: {e}"))?;
        let json: serde_json::Value = serde_json::from_str(&response.body).map_err(|_| {
            format!(
                "the response is not JSON, so success criteria `{criteria}` cannot be evaluated"
            )
        })?;
        let mut context = MapContext::new();
        context.set("root", json_value(&json));
        match expr.evaluate_bool(&context) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("success criteria `{criteria}` are false")),
            Err(e) => Err(format!("success criteria `{criteria}`: {e}")),
        }
    }
}

/// A JSON value as an expression value.
pub fn json_value(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(json_value).collect()),
        serde_json::Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), json_value(v)))
                .collect::<Object>(),
        ),
    }
}

/// The first line of a response body, shortened, for a log line.
pub fn body_excerpt(body: &str) -> String {
    let line = body.lines().next().unwrap_or("").trim();
    if line.chars().count() > 200 {
        let short: String = line.chars().take(200).collect();
        format!("{short}…")
    } else {
        line.to_string()
    }
}

/// Where an agentless job runs (the server, or `lockgate run`): its log, its steps' state and the
/// manual validations it waits for. Called from a thread that may block.
pub trait AgentlessHost {
    /// One log line of the job (`step`: the step's 1-based position); the host masks secrets.
    fn log(&self, step: Option<u32>, text: &str);
    /// What is known of a step from an earlier process: nothing, started at (ms since the epoch),
    /// or finished with a result. A new job knows nothing.
    fn step_state(&self, position: u32) -> StepState {
        let _ = position;
        StepState::New
    }
    fn step_started(&self, position: u32, name: &str);
    fn step_finished(&self, position: u32, name: &str, result: TaskResult);
    /// Whether the job was canceled.
    fn canceled(&self) -> bool;
    /// Waits until someone resumes (`Ok(true)`) or rejects (`Ok(false)`) the validation, or until
    /// `timeout` passes (then `Ok(validation.resume_on_timeout)`); `Err` when it cannot be asked.
    fn manual_validation(
        &self,
        position: u32,
        validation: &ManualValidation,
        timeout: Duration,
    ) -> Result<bool, String>;
}

/// A step's state from an earlier process (the server restarted while its job ran).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StepState {
    New,
    /// Started at this time (ms since the epoch), not finished.
    Started(i64),
    Finished(TaskResult),
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The name a step shows: its display name, else its task.
pub fn step_name(step: &Step) -> String {
    step.display_name
        .clone()
        .unwrap_or_else(|| match &step.task {
            Some(task) => format!("{}@{}", task.name, task.major),
            None => step.kind.key().to_string(),
        })
}

/// The longest an agentless job may run when its `timeoutInMinutes` is 0 (30 days, the most a
/// manual validation waits).
const MAX_JOB_MINUTES: u64 = 43_200;

/// Runs an agentless job's steps in order, as an agent runs an agent job's: step conditions
/// (default `succeeded()`), `enabled`, `continueOnError`, `retryCountOnTaskFailure` for REST calls,
/// the job's `timeoutInMinutes` counted from `started_at` (ms since the epoch), and cancel. Steps
/// an earlier process finished keep their result; a delay it started keeps its end. `minute` is
/// how long a minute of the pipeline lasts (a minute; shorter in `lockgate run`'s tests).
pub fn run_job(
    job: &lockgate_pipeline::plan::Job,
    variables: &VariableStore,
    started_at: i64,
    minute: Duration,
    host: &dyn AgentlessHost,
) -> TaskResult {
    let minutes = if job.timeout_in_minutes == 0 {
        MAX_JOB_MINUTES
    } else {
        u64::from(job.timeout_in_minutes)
    };
    let minute_ms = minute.as_millis().max(1) as i64;
    let deadline = started_at.saturating_add(minutes as i64 * minute_ms);
    let mut status = TaskResult::Succeeded;
    for (index, step) in job.steps.iter().enumerate() {
        let position = index as u32 + 1;
        let name = step_name(step);
        let resumed = match host.step_state(position) {
            StepState::Finished(result) => {
                status = status.merge(step_result(result, step.continue_on_error));
                continue;
            }
            StepState::Started(at) => Some(at),
            StepState::New => None,
        };
        if !step.enabled {
            continue;
        }
        let canceled = host.canceled();
        match crate::conditions::step_condition(
            step.condition.as_deref(),
            variables,
            status,
            canceled,
        ) {
            Ok(true) => {}
            Ok(false) => {
                host.step_started(position, &name);
                host.log(
                    Some(position),
                    &format!("Skipping {name}: its condition is false"),
                );
                host.step_finished(position, &name, TaskResult::Skipped);
                continue;
            }
            Err(message) => {
                host.step_started(position, &name);
                host.log(Some(position), &format!("##[error]{message}"));
                host.step_finished(position, &name, TaskResult::Failed);
                status = status.merge(TaskResult::Failed);
                continue;
            }
        }
        if resumed.is_none() {
            host.step_started(position, &name);
        }
        host.log(Some(position), &format!("Starting: {name}"));
        let expand = |text: &str| variables.expand(text);
        let (result, timed_out) = match server_task(step, &expand) {
            Err(message) => {
                host.log(Some(position), &format!("##[error]{message}"));
                (TaskResult::Failed, false)
            }
            Ok(task) => run_task(
                &scaled(task, minute),
                step,
                position,
                resumed.unwrap_or_else(now_millis),
                deadline,
                host,
            ),
        };
        host.log(Some(position), &format!("Finishing: {name} ({result})"));
        host.step_finished(position, &name, result);
        status = status.merge(step_result(result, step.continue_on_error));
        if timed_out {
            host.log(
                None,
                &format!("##[error]The job ran longer than its timeout of {minutes} minutes and was stopped."),
            );
            return TaskResult::Failed;
        }
    }
    if host.canceled() {
        return TaskResult::Canceled;
    }
    status
}

/// A delay in pipeline minutes of `minute` each.
fn scaled(task: ServerTask, minute: Duration) -> ServerTask {
    match task {
        ServerTask::Delay { duration } => ServerTask::Delay {
            duration: minute.mul_f64(duration.as_secs_f64() / 60.0),
        },
        other => other,
    }
}

fn step_result(result: TaskResult, continue_on_error: bool) -> TaskResult {
    if result == TaskResult::Failed && continue_on_error {
        TaskResult::SucceededWithIssues
    } else {
        result
    }
}

/// Waits until `until` (ms since the epoch), in short slices, unless the job is canceled. True when
/// the time came.
fn wait_until(until: i64, host: &dyn AgentlessHost) -> bool {
    loop {
        if host.canceled() {
            return false;
        }
        let left = until - now_millis();
        if left <= 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(left.clamp(1, 250) as u64));
    }
}

/// Runs one task; the result, and whether the job's deadline stopped it.
fn run_task(
    task: &ServerTask,
    step: &Step,
    position: u32,
    started_at: i64,
    deadline: i64,
    host: &dyn AgentlessHost,
) -> (TaskResult, bool) {
    let log = |text: &str| host.log(Some(position), text);
    match task {
        ServerTask::Delay { duration } => {
            let end = started_at.saturating_add(duration.as_millis() as i64);
            log(&format!(
                "Waiting {} seconds",
                lockgate_expr::format_number(duration.as_secs_f64())
            ));
            if !wait_until(end.min(deadline), host) {
                log("The delay was canceled.");
                return (TaskResult::Canceled, false);
            }
            if end > deadline {
                return (TaskResult::Failed, true);
            }
            log("The delay is over.");
            (TaskResult::Succeeded, false)
        }
        ServerTask::InvokeRestApi(call) => {
            let attempts = step.retry_count_on_task_failure.unwrap_or(0) + 1;
            for attempt in 1..=attempts {
                if host.canceled() {
                    return (TaskResult::Canceled, false);
                }
                let left = deadline - now_millis();
                if left <= 0 {
                    return (TaskResult::Failed, true);
                }
                log(&format!("{} {}", call.method, call.url));
                let outcome = call
                    .send(Duration::from_millis(left as u64).min(Duration::from_secs(600)))
                    .and_then(|response| {
                        log(&format!(
                            "Response: HTTP {} {}",
                            response.status,
                            body_excerpt(&response.body)
                        ));
                        call.passes(&response)
                    });
                match outcome {
                    Ok(()) => return (TaskResult::Succeeded, false),
                    Err(reason) if attempt < attempts => {
                        log(&format!(
                            "##[warning]{reason}; trying again (attempt {} of {attempts})",
                            attempt + 1
                        ));
                        if !wait_until(now_millis() + 1_000, host) {
                            return (TaskResult::Canceled, false);
                        }
                    }
                    Err(reason) => log(&format!("##[error]{reason}")),
                }
            }
            (TaskResult::Failed, false)
        }
        ServerTask::ManualValidation(validation) => {
            if !validation.notify_users.is_empty() {
                log(&format!(
                    "Notify users: {} (Lockgate sends no mail)",
                    validation.notify_users.join(", ")
                ));
            }
            if !validation.instructions.is_empty() {
                log(&format!("Instructions: {}", validation.instructions));
            }
            let timeout = Duration::from_millis((deadline - started_at).max(0) as u64);
            match host.manual_validation(position, validation, timeout) {
                Ok(true) => (TaskResult::Succeeded, false),
                Ok(false) => (TaskResult::Failed, false),
                Err(message) => {
                    log(&format!("##[error]{message}"));
                    if host.canceled() {
                        (TaskResult::Canceled, false)
                    } else {
                        (TaskResult::Failed, false)
                    }
                }
            }
        }
    }
}

/// Runs an agentless job in `lockgate run`: events go to `sink` (masked), a cancel of the run
/// stops it, and a manual validation asks on the terminal (stdin), or fails without one.
pub async fn run_local_job(
    job: &lockgate_pipeline::plan::Job,
    spec: &crate::spec::JobSpec,
    minute: Duration,
    sink: std::sync::Arc<dyn crate::events::EventSink>,
    cancel: &crate::process::CancelSignal,
) -> crate::job::JobOutcome {
    let started = std::time::Instant::now();
    let id = crate::events::JobId {
        stage: spec.stage.clone(),
        job: spec.name.clone(),
    };
    let mut variables = VariableStore::new();
    let masker = crate::masking::SecretMasker::new();
    for variable in &spec.variables {
        let _ = variables.set(
            &variable.name,
            variable.value.clone(),
            variable.secret,
            false,
        );
        if variable.secret {
            masker.add(&variable.value);
        }
    }
    for value in &spec.secret_values {
        masker.add(value);
    }
    let host = std::sync::Arc::new(LocalHost {
        id: id.clone(),
        sink,
        masker,
        cancel: cancel.clone(),
        started: Mutex::new(BTreeMap::new()),
    });
    host.event(Event::JobStarted {
        job: id.clone(),
        display_name: spec.display_name.clone(),
    });
    let job = job.clone();
    let running = host.clone();
    let result = tokio::task::spawn_blocking(move || {
        let result = run_job(&job, &variables, now_millis(), minute, running.as_ref());
        if result == TaskResult::Failed && job.continue_on_error {
            TaskResult::SucceededWithIssues
        } else {
            result
        }
    })
    .await
    .unwrap_or(TaskResult::Failed);
    let seconds = started.elapsed().as_secs_f64();
    host.event(Event::JobFinished {
        job: id,
        result,
        seconds,
    });
    crate::job::JobOutcome {
        result,
        outputs: BTreeMap::new(),
        secret_outputs: Default::default(),
        seconds,
    }
}

struct LocalHost {
    id: crate::events::JobId,
    sink: std::sync::Arc<dyn crate::events::EventSink>,
    masker: crate::masking::SecretMasker,
    cancel: crate::process::CancelSignal,
    started: Mutex<BTreeMap<u32, std::time::Instant>>,
}

impl LocalHost {
    fn event(&self, event: Event) {
        crate::events::MaskingSink::new(self.sink.as_ref(), self.masker.clone()).event(event);
    }
}

impl AgentlessHost for LocalHost {
    fn log(&self, step: Option<u32>, text: &str) {
        let issue = |kind, message: &str| Event::Issue {
            job: self.id.clone(),
            step: step.map(|s| s as usize),
            kind,
            message: message.to_string(),
        };
        let event = if let Some(message) = text.strip_prefix("##[error]") {
            issue(crate::events::IssueKind::Error, message)
        } else if let Some(message) = text.strip_prefix("##[warning]") {
            issue(crate::events::IssueKind::Warning, message)
        } else {
            Event::Log {
                job: self.id.clone(),
                step: step.unwrap_or(0) as usize,
                stream: crate::process::Stream::Stdout,
                lines: vec![text.to_string()],
            }
        };
        self.event(event);
    }

    fn step_started(&self, position: u32, name: &str) {
        if let Ok(mut started) = self.started.lock() {
            started.insert(position, std::time::Instant::now());
        }
        self.event(Event::StepStarted {
            job: self.id.clone(),
            step: position as usize,
            display_name: name.to_string(),
        });
    }

    fn step_finished(&self, position: u32, name: &str, result: TaskResult) {
        let seconds = self
            .started
            .lock()
            .ok()
            .and_then(|s| s.get(&position).map(|t| t.elapsed().as_secs_f64()))
            .unwrap_or(0.0);
        self.event(Event::StepFinished {
            job: self.id.clone(),
            step: position as usize,
            display_name: name.to_string(),
            result,
            seconds,
        });
    }

    fn canceled(&self) -> bool {
        self.cancel.is_canceled()
    }

    fn manual_validation(
        &self,
        position: u32,
        validation: &ManualValidation,
        timeout: Duration,
    ) -> Result<bool, String> {
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            return Err("ManualValidation needs someone to resume or reject it, and stdin is not a terminal: run `lockgate run` in a terminal, or leave this job out (--stage/--job)".into());
        }
        let (send, receive) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            loop {
                eprint!("Manual validation: type `resume` or `reject`: ");
                let mut line = String::new();
                if std::io::stdin().read_line(&mut line).unwrap_or(0) == 0 {
                    let _ = send.send(None);
                    return;
                }
                match line.trim().to_ascii_lowercase().as_str() {
                    "resume" | "r" | "yes" | "y" => {
                        let _ = send.send(Some(true));
                        return;
                    }
                    "reject" | "n" | "no" => {
                        let _ = send.send(Some(false));
                        return;
                    }
                    _ => {}
                }
            }
        });
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.canceled() {
                return Err(
                    "the run was canceled while it waited for the manual validation".into(),
                );
            }
            match receive.recv_timeout(Duration::from_millis(250)) {
                Ok(Some(true)) => {
                    self.log(Some(position), "Resumed on the terminal");
                    return Ok(true);
                }
                Ok(Some(false)) => {
                    self.log(Some(position), "##[error]Rejected on the terminal");
                    return Ok(false);
                }
                Ok(None) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(
                        "stdin ended before the manual validation was resumed or rejected".into(),
                    );
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            if std::time::Instant::now() >= deadline {
                return Ok(validation.resume_on_timeout);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(criteria: Option<&str>) -> RestCall {
        RestCall {
            method: "GET".into(),
            url: "http://127.0.0.1:1/health".into(),
            headers: Vec::new(),
            body: None,
            success_criteria: criteria.map(str::to_string),
        }
    }

    fn answer(status: u16, body: &str) -> RestResponse {
        RestResponse {
            status,
            body: body.into(),
        }
    }

    #[test]
    fn success_needs_a_2xx_answer_and_a_true_criterion_over_root() {
        let healthy = call(Some("eq(root['status'], 'healthy')"));
        assert_eq!(
            healthy.passes(&answer(200, r#"{"status":"healthy"}"#)),
            Ok(())
        );
        let refused = healthy.passes(&answer(200, r#"{"status":"starting"}"#));
        assert!(refused.unwrap_err().contains("are false"));
        let status = healthy.passes(&answer(503, r#"{"status":"healthy"}"#));
        assert_eq!(status, Err("the server answered HTTP 503".into()));
        let text = healthy.passes(&answer(200, "ok"));
        assert!(text.unwrap_err().contains("not JSON"));
        // Without a criterion any 2xx passes, whatever the body.
        assert_eq!(call(None).passes(&answer(204, "")), Ok(()));
        // Nested values and numbers.
        let nested = call(Some("and(eq(root.checks[0].ok, true), gt(root.count, 2))"));
        assert_eq!(
            nested.passes(&answer(200, r#"{"checks":[{"ok":true}],"count":3}"#)),
            Ok(())
        );
    }

    #[test]
    fn bad_criteria_methods_urls_and_headers_are_named() {
        assert!(check_criteria("eq(root['a'], ").is_err());
        assert!(check_criteria("eq(variables.x, 1)").is_err());
        let mut bad = call(None);
        bad.method = "FETCH".into();
        assert!(bad.validate().unwrap_err().contains("method `FETCH`"));
        bad.method = "GET".into();
        bad.url = "ftp://x".into();
        assert!(bad.validate().unwrap_err().contains("not an http"));
        assert!(parse_headers("[1]").is_err());
        assert!(
            parse_headers(r#"{"a": {"b": 1}}"#)
                .unwrap_err()
                .contains("`a`")
        );
        let mut headers = parse_headers(r#"{"X-Count": 2, "Accept": "application/json"}"#).unwrap();
        headers.sort();
        assert_eq!(
            headers,
            vec![
                ("Accept".to_string(), "application/json".to_string()),
                ("X-Count".to_string(), "2".to_string())
            ]
        );
    }
}
