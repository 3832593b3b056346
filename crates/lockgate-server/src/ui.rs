//! The web UI: server-rendered pages (maud) that read well without JavaScript, plus one small
//! hand-written script for live logs (SSE), ANSI colours, folding groups, search and line links.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use lockgate_protocol::api;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;

use crate::AppState;
use crate::api::{RunsQuery, find_runs, job_log_lines, project_for, run_detail, run_for};
use crate::auth::{self, CSRF_FIELD, Caller, PageCaller, Role};
use crate::error::{ApiError, Form, Query};
use crate::live::LogLine;

mod environments;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route(
            "/static/app.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], APP_CSS) }),
        )
        .route(
            "/static/run.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], RUN_JS) }),
        )
        .route("/projects", post(create_project))
        .route("/users", post(create_user))
        .route("/p/{project}/members", post(grant_role))
        .route("/tokens", get(tokens_page).post(create_token))
        .route("/agents", get(agents_page))
        .route("/agents/{name}/{action}", post(change_agent))
        .route("/p/{project}", get(project_page))
        .route("/p/{project}/repositories", post(create_repository))
        .route("/p/{project}/pipelines", post(create_pipeline))
        .route(
            "/p/{project}/environments",
            get(environments::environments_page).post(environments::create_environment),
        )
        .route(
            "/p/{project}/environments/{environment}",
            get(environments::environment_page).post(environments::change_environment_form),
        )
        .route(
            "/p/{project}/environments/{environment}/redeploy",
            post(environments::redeploy_form),
        )
        .route("/pipelines/{id}", get(pipeline_page))
        .route("/pipelines/{id}/queue", post(queue_run))
        .route("/pipelines/{id}/variables", post(save_variables))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/cancel", post(cancel_run))
        .route("/runs/{id}/rerun", post(rerun))
        .route("/runs/{id}/rerun-failed", post(rerun_failed))
        .route("/runs/{id}/approvals", post(decide_approvals))
        .route("/runs/{id}/stages/{stage}/start", post(start_stage))
}

const APP_CSS: &str = include_str!("ui/app.css");
const RUN_JS: &str = include_str!("ui/run.js");

/// An error shown as a page (forms and pages answer HTML, not JSON).
struct PageError(ApiError);

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> Self {
        PageError(error)
    }
}

impl From<lockgate_store::StoreError> for PageError {
    fn from(error: lockgate_store::StoreError) -> Self {
        PageError(error.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = layout(
            "Error",
            None,
            html! {
                h1 { "Something went wrong" }
                p.error { (self.0.message) }
                // No `javascript:` link: the Content-Security-Policy allows scripts from /static only.
                p { a href="/" { "Back to the projects" } }
            },
        );
        (self.0.status, body).into_response()
    }
}

type PageResult = Result<Response, PageError>;

fn layout(title: &str, caller: Option<&Caller>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · Lockgate" }
                link rel="stylesheet" href="/static/app.css";
            }
            body {
                header.top {
                    a.brand href="/" { "Lockgate" }
                    @if let Some(caller) = caller {
                        nav {
                            a href="/" { "Projects" }
                            a href="/tokens" { "Tokens" }
                            @if caller.user.is_admin { a href="/agents" { "Agents" } }
                            form.inline method="post" action="/logout" {
                                input type="hidden" name=(CSRF_FIELD) value=(caller.csrf_token());
                                button.link type="submit" { "Sign out " (caller.user.name) }
                            }
                        }
                    }
                }
                main { (content) }
            }
        }
    }
}

fn csrf(caller: &Caller) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(caller.csrf_token()); }
}

fn status_badge(status: &str, result: Option<&str>) -> Markup {
    let label = result.unwrap_or(status);
    html! { span class={"badge " (label)} { (label) } }
}

fn when(millis: Option<i64>) -> String {
    match millis {
        Some(ms) => {
            let c = lockgate_pipeline::run_number::Civil::from_millis(ms);
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                c.year, c.month, c.day, c.hour, c.minute, c.second
            )
        }
        None => "—".into(),
    }
}

fn duration(start: Option<i64>, end: Option<i64>) -> String {
    match (start, end) {
        (Some(s), Some(e)) if e >= s => format!("{:.1}s", (e - s) as f64 / 1000.0),
        (Some(_), None) => "running".into(),
        _ => String::new(),
    }
}

// ---- sign in ----

#[derive(Deserialize, Default)]
struct NextQuery {
    next: Option<String>,
}

/// Only same-site relative paths are followed after signing in: `/x`, never `//x` or `/\x` (both
/// reach another host in browsers), a scheme, or control characters and spaces (which browsers strip
/// or which cannot go into a `Location` header); anything else goes to `/`.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && !path.contains('\\')
                && path.len() <= 2048
                && path.chars().all(|c| c.is_ascii_graphic()) =>
        {
            path.to_string()
        }
        _ => "/".into(),
    }
}

async fn login_page(Query(query): Query<NextQuery>) -> Markup {
    login_form(query.next.as_deref(), None)
}

fn login_form(next: Option<&str>, error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(error) = error { p.error { (error) } }
            form.card method="post" action="/login" {
                input type="hidden" name="next" value=(safe_next(next));
                label { "User name" input name="name" autocomplete="username" required; }
                label { "Password" input name="password" type="password" autocomplete="current-password" required; }
                button type="submit" { "Sign in" }
            }
        },
    )
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    next: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    auth::ClientAddress(address): auth::ClientAddress,
    Form(form): Form<LoginForm>,
) -> PageResult {
    let now = lockgate_store::now_millis();
    let user_key = format!("user:{}", form.name);
    let address_key = address.map(|ip| format!("ip:{ip}"));
    let throttle = &state.login_throttle;
    if throttle.locked(&user_key, auth::LOGIN_FAILURES_PER_USER, now)
        || address_key
            .as_deref()
            .is_some_and(|key| throttle.locked(key, auth::LOGIN_FAILURES_PER_ADDRESS, now))
    {
        return Ok((
            StatusCode::TOO_MANY_REQUESTS,
            login_form(
                form.next.as_deref(),
                Some("Too many failed sign-ins; try again in 15 minutes."),
            ),
        )
            .into_response());
    }
    let user = state.store.user_by_name(&form.name).await?;
    // An unknown user is verified against a dummy hash: the answer takes as long either way.
    let hash = user
        .as_ref()
        .map(|user| user.password_hash.clone())
        .unwrap_or_else(|| auth::dummy_password_hash().to_string());
    let password = form.password.clone();
    let verified = tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|_| verified) else {
        throttle.fail(&user_key, now);
        if let Some(key) = &address_key {
            throttle.fail(key, now);
        }
        return Ok((
            StatusCode::UNAUTHORIZED,
            login_form(form.next.as_deref(), Some("Wrong user name or password.")),
        )
            .into_response());
    };
    throttle.clear(&user_key);
    let cookie = auth::start_session(&state, user.id).await?;
    let mut response = Redirect::to(&safe_next(form.next.as_deref())).into_response();
    if let Ok(value) = cookie.parse() {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> PageResult {
    auth::end_session(&state, &headers).await?;
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = format!(
        "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0",
        auth::SESSION_COOKIE
    )
    .parse()
    {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

// ---- projects ----

async fn home(State(state): State<AppState>, PageCaller(caller): PageCaller) -> PageResult {
    let mut projects = Vec::new();
    for project in state.store.list_projects().await? {
        if auth::require_role(&state, &caller, project.id, Role::Reader)
            .await
            .is_ok()
        {
            projects.push(project);
        }
    }
    Ok(layout("Projects", Some(&caller), html! {
        h1 { "Projects" }
        @if projects.is_empty() { p { "No projects yet." } }
        ul.list { @for project in &projects { li { a href={"/p/" (project.name)} { (project.name) } } } }
        form.card method="post" action="/projects" {
            (csrf(&caller))
            label { "New project" input name="name" required pattern="[A-Za-z0-9_.\\-]+" placeholder="name"; }
            button type="submit" { "Create project" }
        }
        @if caller.user.is_admin {
            h2 { "Users" }
            form.card method="post" action="/users" {
                (csrf(&caller))
                label { "User name" input name="name" required; }
                label { "Password (8 characters or more)" input name="password" type="password" required minlength="8" autocomplete="new-password"; }
                label.row { input type="checkbox" name="is_admin" value="true"; " server administrator" }
                button type="submit" { "Create user" }
            }
        }
    }).into_response())
}

#[derive(Deserialize)]
struct NameForm {
    name: String,
}

async fn create_project(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Form(form): Form<NameForm>,
) -> PageResult {
    let project = crate::api::new_project(&state, &caller, form.name.trim()).await?;
    Ok(Redirect::to(&format!("/p/{}", project.name)).into_response())
}

async fn project_page(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(project): Path<String>,
    Query(query): Query<RunsQuery>,
) -> PageResult {
    let project = project_for(&state, &caller, &project, Role::Reader).await?;
    let repositories = state.store.list_repositories(project.id).await?;
    let pipelines = state.store.list_pipelines(project.id).await?;
    let deployments = state.store.latest_deployments(project.id).await?;
    let members = state.store.project_members(project.id).await?;
    let runs = find_runs(
        &state,
        &caller,
        &RunsQuery {
            project: Some(project.name.clone()),
            ..query.clone()
        },
    )
    .await?;
    Ok(layout(&project.name, Some(&caller), html! {
        h1 { (project.name) }
        section {
            h2 { "Repositories" }
            @if repositories.is_empty() { p { "No repositories yet." } }
            ul.list {
                @for repo in &repositories {
                    li { strong { (repo.name) } " " code.clone { (crate::api::clone_url(&state, &project.name, &repo.name)) } }
                }
            }
            p.hint { "Clone and push with your access token as the password (create one under Tokens)." }
            form.card.row method="post" action={"/p/" (project.name) "/repositories"} {
                (csrf(&caller))
                input name="name" required placeholder="repository name";
                button type="submit" { "Create repository" }
            }
        }
        section {
            h2 { "Pipelines" }
            @if pipelines.is_empty() { p { "No pipelines yet." } }
            ul.list {
                @for pipeline in &pipelines {
                    li {
                        a href={"/pipelines/" (pipeline.id)} { strong { (pipeline.name) } } " "
                        span.muted { (repositories.iter().find(|r| r.id == pipeline.repository_id).map(|r| r.name.as_str()).unwrap_or("?")) ":" (pipeline.yaml_path) }
                        form.inline method="post" action={"/pipelines/" (pipeline.id) "/queue"} {
                            (csrf(&caller))
                            input name="branch" value="main" size="10" aria-label="branch";
                            input name="parameters" placeholder="name=value, …" size="16" aria-label="parameters";
                            button type="submit" { "Run" }
                        }
                    }
                }
            }
            @if !repositories.is_empty() {
                form.card.row method="post" action={"/p/" (project.name) "/pipelines"} {
                    (csrf(&caller))
                    input name="name" required placeholder="pipeline name";
                    select name="repository" aria-label="repository" { @for repo in &repositories { option value=(repo.name) { (repo.name) } } }
                    input name="yaml_path" value="azure-pipelines.yml" aria-label="YAML path";
                    button type="submit" { "Create pipeline" }
                }
            }
        }
        section {
            h2 { "Members" }
            ul.list { @for (name, role) in &members { li { (name) " " span.muted { (role) } } } }
            form.card.row method="post" action={"/p/" (project.name) "/members"} {
                (csrf(&caller))
                input name="user" required placeholder="user name" aria-label="user name";
                select name="role" aria-label="role" { @for role in ["reader", "contributor", "administrator"] { option value=(role) { (role) } } }
                button type="submit" { "Give role" }
            }
        }
        section {
                h2 { a href={"/p/" (project.name) "/environments"} { "Environments" } }
                @if deployments.is_empty() { p.muted { "Nothing deployed yet." } }
                table { tbody { @for deployment in &deployments {
                    tr { td { strong { a href=(environments::environment_href(&project.name, &deployment.environment)) { (deployment.environment) } } }
                        td { a href={"/runs/" (deployment.run_id)} { (deployment.pipeline_name) " " (deployment.run_name) } }
                        td.muted { (deployment.source_branch.trim_start_matches("refs/heads/")) " @ " (deployment.source_commit.get(..8).unwrap_or(&deployment.source_commit)) }
                        td.muted { (when(deployment.finished_at)) } }
                } } }
        }
        section {
            h2 { "Runs" }
            form.row method="get" {
                input name="branch" placeholder="branch" value=(query.branch.clone().unwrap_or_default());
                select name="status" aria-label="status" {
                    @for s in ["", "queued", "running", "completed", "succeeded", "failed", "canceled", "partiallySucceeded"] {
                        option value=(s) selected[query.status.as_deref() == Some(s)] { @if s.is_empty() { "any status" } @else { (s) } }
                    }
                }
                button type="submit" { "Filter" }
            }
            (runs_table(&runs))
        }
    }).into_response())
}

fn runs_table(runs: &[lockgate_store::Run]) -> Markup {
    html! {
        @if runs.is_empty() { p { "No runs." } } @else {
            table.runs {
                thead { tr { th { "Run" } th { "Pipeline" } th { "Branch" } th { "Status" } th { "Queued" } } }
                tbody {
                    @for run in runs {
                        tr {
                            td { a href={"/runs/" (run.id)} { "#" (run.number) " " (run.name) } @if !run.title.is_empty() { div.muted { (run.title) } } }
                            td { (run.pipeline_name) }
                            td { (run.source_branch.trim_start_matches("refs/heads/")) }
                            td { (status_badge(&run.status, run.result.as_deref())) }
                            td.muted { (when(Some(run.queued_at))) }
                        }
                    }
                }
            }
        }
    }
}

async fn create_repository(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(project): Path<String>,
    Form(form): Form<NameForm>,
) -> PageResult {
    crate::api::new_repository(&state, &caller, &project, form.name.trim()).await?;
    Ok(Redirect::to(&format!("/p/{project}")).into_response())
}

#[derive(Deserialize)]
struct UserForm {
    name: String,
    password: String,
    is_admin: Option<String>,
}

async fn create_user(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Form(form): Form<UserForm>,
) -> PageResult {
    crate::api::new_user(
        &state,
        &caller,
        form.name.trim(),
        &form.password,
        form.is_admin.is_some(),
    )
    .await?;
    Ok(Redirect::to("/").into_response())
}

#[derive(Deserialize)]
struct RoleForm {
    user: String,
    role: String,
}

async fn grant_role(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(project): Path<String>,
    Form(form): Form<RoleForm>,
) -> PageResult {
    crate::api::grant_role(&state, &caller, &project, form.user.trim(), &form.role).await?;
    Ok(Redirect::to(&format!("/p/{project}")).into_response())
}

#[derive(Deserialize)]
struct PipelineForm {
    name: String,
    repository: String,
    yaml_path: String,
}

async fn create_pipeline(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(project): Path<String>,
    Form(form): Form<PipelineForm>,
) -> PageResult {
    let body = api::CreatePipeline {
        name: form.name,
        repository: form.repository,
        yaml_path: form.yaml_path,
    };
    crate::api::new_pipeline(&state, &caller, &project, &body).await?;
    Ok(Redirect::to(&format!("/p/{project}")).into_response())
}

#[derive(Deserialize, Default)]
struct BranchQuery {
    branch: Option<String>,
}

/// A pipeline: its recent runs, the manual-run form generated from its runtime `parameters:` and its
/// settable variables, and the form that edits the pipeline's own variables.
async fn pipeline_page(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(id): Path<i64>,
    Query(query): Query<BranchQuery>,
) -> PageResult {
    let pipeline = state
        .store
        .pipeline_by_id(id)
        .await?
        .ok_or_else(|| ApiError::not_found("pipeline"))?;
    auth::require_role(&state, &caller, pipeline.project_id, Role::Reader).await?;
    let project = state
        .store
        .project_by_id(pipeline.project_id)
        .await?
        .map(|p| p.name)
        .unwrap_or_default();
    let branch = query
        .branch
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| "main".into());
    let compiled = crate::runs::compile_at_branch(&state, &pipeline, &branch).await?;
    let runs = find_runs(
        &state,
        &caller,
        &RunsQuery {
            pipeline: Some(pipeline.id),
            limit: Some(20),
            ..RunsQuery::default()
        },
    )
    .await?;
    let parameters = compiled
        .as_ref()
        .and_then(|c| c.plan.as_ref())
        .map(|p| p.parameters.clone())
        .unwrap_or_default();
    let problems = compiled
        .as_ref()
        .map(|c| c.diagnostics.iter().filter(|d| d.is_error()).count())
        .unwrap_or(0);
    let variables = state.store.pipeline_variables(pipeline.id).await?;
    let versions = crate::environments::deployed_versions(&state, pipeline.id).await?;
    Ok(layout(&pipeline.name, Some(&caller), html! {
        p.crumbs { a href={"/p/" (project)} { (project) } " / " (pipeline.name) }
        h1 { (pipeline.name) }
        p.muted { (pipeline.yaml_path) }
        (environments::what_is_where(&project, &versions))
        section {
            h2 { "Run pipeline" }
            form.row method="get" { input name="branch" value=(branch) aria-label="branch"; button type="submit" { "Load parameters" } }
            @match &compiled {
                None => p.error { "No " (pipeline.yaml_path) " on branch " (branch) "." },
                Some(_) if problems > 0 => p.error { "The pipeline on " (branch) " has " (problems) " problem(s); a run would fail and show them." },
                Some(_) => {}
            }
            form.card method="post" action={"/pipelines/" (pipeline.id) "/queue"} {
                (csrf(&caller))
                input type="hidden" name="branch" value=(branch);
                @for parameter in &parameters {
                    @let field = format!("param.{}", parameter.name);
                    @if parameter.r#type == "boolean" {
                        input type="hidden" name=(field) value="false";
                        label.row { input type="checkbox" name=(field) value="true" checked[parameter.value == serde_json::Value::Bool(true)]; " " (parameter.name) }
                    } @else {
                        label { (parameter.name) " (" (parameter.r#type) ")"
                            input name=(field) value=(match &parameter.value { serde_json::Value::String(s) => s.clone(), other => other.to_string() }); }
                    }
                }
                @let settable: Vec<&lockgate_store::PipelineVariable> = variables.iter().filter(|v| v.allow_override).collect();
                @if !settable.is_empty() {
                    fieldset {
                        legend { "Variables" }
                        @for variable in &settable {
                            @let field = format!("var.{}", variable.name);
                            @if variable.secret {
                                label { (variable.name) " (secret; empty keeps it)"
                                    input type="password" name=(field) autocomplete="off"; }
                            } @else {
                                label { (variable.name) input name=(field) value=(variable.value); }
                            }
                        }
                    }
                }
                button type="submit" { "Run on " (branch) }
            }
        }
        section {
            h2 { "Variables" }
            p.hint { "Pipeline variables; YAML variables of the same name take precedence. Secrets are never shown again." }
            form.card.wide method="post" action={"/pipelines/" (pipeline.id) "/variables"} {
                (csrf(&caller))
                table {
                    thead { tr { th { "Name" } th { "Value" } th { "Secret" } th { "Settable at queue time" } th { "Delete" } } }
                    tbody {
                        @for (index, variable) in variables.iter().enumerate() {
                            tr {
                                td { input type="hidden" name={"v" (index) ".name"} value=(variable.name); code { (variable.name) } }
                                td { @if variable.secret {
                                    input type="password" name={"v" (index) ".value"} autocomplete="off" placeholder="unchanged" aria-label={"value of " (variable.name)};
                                } @else {
                                    input name={"v" (index) ".value"} value=(variable.value) aria-label={"value of " (variable.name)};
                                } }
                                td { input type="checkbox" name={"v" (index) ".secret"} value="true" checked[variable.secret] aria-label="secret"; }
                                td { input type="checkbox" name={"v" (index) ".allowOverride"} value="true" checked[variable.allow_override] aria-label="let users override this value when running this pipeline"; }
                                td { input type="checkbox" name={"v" (index) ".delete"} value="true" aria-label="delete"; }
                            }
                        }
                        @let new = variables.len();
                        tr {
                            td { input name={"v" (new) ".name"} placeholder="new variable" aria-label="new variable name"; }
                            td { input name={"v" (new) ".value"} aria-label="new variable value"; }
                            td { input type="checkbox" name={"v" (new) ".secret"} value="true" aria-label="secret"; }
                            td { input type="checkbox" name={"v" (new) ".allowOverride"} value="true" aria-label="let users override this value when running this pipeline"; }
                            td {}
                        }
                    }
                }
                button type="submit" { "Save variables" }
            }
        }
        section { h2 { "Runs" } (runs_table(&runs)) }
    }).into_response())
}

async fn queue_run(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(id): Path<i64>,
    Form(fields): Form<Vec<(String, String)>>,
) -> PageResult {
    let mut branch = None;
    let mut parameters: Vec<(String, String)> = Vec::new();
    let mut variables = std::collections::BTreeMap::new();
    for (key, value) in fields {
        if key == "branch" && !value.trim().is_empty() {
            branch = Some(value.trim().to_string());
        } else if key == "parameters" {
            // The project page's quick form: `name=value, name=value`.
            parameters.extend(
                value
                    .split(',')
                    .filter_map(|pair| {
                        pair.split_once('=')
                            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    })
                    .filter(|(k, _)| !k.is_empty()),
            );
        } else if let Some(name) = key.strip_prefix("param.") {
            // A checked checkbox follows its hidden `false`: the last value wins.
            parameters.retain(|(existing, _)| existing != name);
            parameters.push((name.to_string(), value));
        } else if let Some(name) = key.strip_prefix("var.") {
            variables.insert(name.to_string(), value);
        }
    }
    // Only values the user changed are queue-time values: an unchanged field, or a secret's empty
    // password field, leaves the pipeline's value.
    if !variables.is_empty() {
        let defined = state.store.pipeline_variables(id).await?;
        variables.retain(|name, value| {
            match defined.iter().find(|v| v.name.eq_ignore_ascii_case(name)) {
                Some(v) if v.secret => !value.is_empty(),
                Some(v) => *value != v.value,
                None => true,
            }
        });
    }
    let body = api::QueueRun {
        branch,
        parameters,
        variables,
    };
    let run = crate::api::queue_manual(&state, &caller, id, body).await?;
    Ok(Redirect::to(&format!("/runs/{}", run.id)).into_response())
}

/// The pipeline page's variables form: rows `v<i>.name`, `.value`, `.secret`, `.allowOverride`,
/// `.delete`; the last row adds a variable when it has a name. A secret's empty value keeps it.
async fn save_variables(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(id): Path<i64>,
    Form(fields): Form<Vec<(String, String)>>,
) -> PageResult {
    #[derive(Default)]
    struct Row {
        name: String,
        value: String,
        secret: bool,
        allow_override: bool,
        delete: bool,
    }
    let mut rows: std::collections::BTreeMap<usize, Row> = std::collections::BTreeMap::new();
    for (key, value) in fields {
        let Some((index, field)) = key
            .strip_prefix('v')
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(index, field)| Some((index.parse::<usize>().ok()?, field)))
        else {
            continue;
        };
        let row = rows.entry(index).or_default();
        match field {
            "name" => row.name = value.trim().to_string(),
            "value" => row.value = value,
            "secret" => row.secret = true,
            "allowOverride" => row.allow_override = true,
            "delete" => row.delete = true,
            _ => {}
        }
    }
    let variables = rows
        .into_values()
        .filter(|row| !row.delete && !row.name.is_empty())
        .map(|row| api::PipelineVariable {
            value: if row.secret && row.value.is_empty() {
                None
            } else {
                Some(row.value)
            },
            name: row.name,
            secret: row.secret,
            allow_override: row.allow_override,
        })
        .collect();
    crate::api::replace_pipeline_variables(&state, &caller, id, variables).await?;
    Ok(Redirect::to(&format!("/pipelines/{id}")).into_response())
}

// ---- runs ----

async fn run_page(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(id): Path<i64>,
) -> PageResult {
    let run = run_for(&state, &caller, id, Role::Reader).await?;
    let detail = run_detail(&state, &run).await?;
    let project = state
        .store
        .project_by_id(run.project_id)
        .await?
        .map(|p| p.name)
        .unwrap_or_default();
    let artifacts = state.store.artifact_files(run.id).await?;
    let tests = state.store.test_results(run.id).await?;
    let approvals = state.store.approvals_of_run(run.id).await?;
    let approver = crate::approvals::Approver::of(&state, &caller, run.project_id).await?;
    // Readers see the run, not its Cancel / Run again / Run stage buttons.
    let may_run = auth::require_role(&state, &caller, run.project_id, Role::Contributor)
        .await
        .is_ok();
    let mut logs = Vec::new();
    for job in &detail.jobs {
        logs.push(job_log_lines(&state, job.id).await?);
    }
    let diagnostics: Vec<lockgate_pipeline::Diagnostic> =
        serde_json::from_str(&run.diagnostics).unwrap_or_default();
    let mut stages: Vec<(&str, Vec<&api::Job>)> = Vec::new();
    for job in &detail.jobs {
        match stages.iter_mut().find(|(name, _)| *name == job.stage) {
            Some((_, jobs)) => jobs.push(job),
            None => stages.push((&job.stage, vec![job])),
        }
    }
    let title = format!("{} #{}", run.pipeline_name, run.number);
    Ok(layout(&title, Some(&caller), html! {
        p.crumbs { a href={"/p/" (project)} { (project) } " / " (run.pipeline_name) }
        h1 { (run.name) @if !run.title.is_empty() { " · " (run.title) } " " (status_badge(&run.status, run.result.as_deref())) }
        p.muted {
            "Run #" (run.number) " · " (run.reason) " by " (run.requested_by) " · "
            (run.source_branch.trim_start_matches("refs/heads/")) " @ " code { (run.source_commit.get(..12).unwrap_or(&run.source_commit)) }
            " · queued " (when(Some(run.queued_at)))
        }
        div.actions {
            @if !may_run {
            } @else if run.status != "completed" {
                form.inline method="post" action={"/runs/" (run.id) "/cancel"} { (csrf(&caller)) button type="submit" { "Cancel" } }
            } @else {
                form.inline method="post" action={"/runs/" (run.id) "/rerun"} { (csrf(&caller)) button type="submit" { "Run again" } }
                @if run.result.as_deref() != Some("succeeded") && !detail.jobs.is_empty() {
                    form.inline method="post" action={"/runs/" (run.id) "/rerun-failed"} { (csrf(&caller)) button type="submit" { "Re-run failed jobs" } }
                }
            }
        }
        @if !diagnostics.is_empty() {
            section.diagnostics {
                h2 { "Pipeline problems" }
                ul { @for d in &diagnostics {
                    li { span class={"badge " @if d.is_error() { "failed" } @else { "warning" }} { (d.code) } " "
                        @if let Some(span) = &d.span { a href={"#Y" (span.line)} { (span.file) ":" (span.line) ":" (span.column) } " " }
                        (d.message) @if let Some(help) = &d.help { span.muted { " — " (help) } } }
                } }
            }
        }
        @if !approvals.is_empty() {
            section.approvals {
                h2 { "Approvals" }
                @for approval in &approvals {
                    div.approval data-status=(approval.status) {
                        p {
                            @if crate::agentless::is_manual_validation(approval) {
                                strong { (approval.stage) } " → manual validation "
                            } @else {
                                @let (kind, name) = crate::resources::parse_key(&approval.environment);
                                strong { (approval.stage) } " → " (kind.label()) " " code { (name) } " "
                            }
                            span class={"badge " (approval_badge(&approval.status))} { (approval.status) }
                            span.muted { " · " (approval.min_approvals) " of " (approval.approvers.join(", ")) " · asked " (when(Some(approval.requested_at))) }
                        }
                        @if !approval.instructions.is_empty() { p.instructions { (approval.instructions) } }
                        @if !approval.decisions.is_empty() {
                            ul.decisions { @for d in &approval.decisions {
                                li { (d.user) " " @if d.approve { "approved" } @else { "rejected" } " " (when(Some(d.decided_at)))
                                    @if !d.comment.is_empty() { ": " q { (d.comment) } } }
                            } }
                        }
                        @if crate::approvals::may_decide(&approver, &run, approval) {
                            form.decide method="post" action={"/runs/" (run.id) "/approvals"} {
                                (csrf(&caller))
                                input type="hidden" name="stage" value=(approval.stage);
                                input type="hidden" name="environment" value=(approval.environment);
                                textarea name="comment" placeholder="Comment (kept in the audit trail)" aria-label="Comment" {}
                                button.approve type="submit" name="decision" value="approve" {
                                    @if crate::agentless::is_manual_validation(approval) { "Resume" } @else { "Approve" }
                                }
                                " "
                                button.reject type="submit" name="decision" value="reject" { "Reject" }
                            }
                        }
                    }
                }
            }
        }
        @if !stages.is_empty() {
            section {
                h2 { "Stages" }
                div.graph {
                    @for (stage, jobs) in &stages {
                        div.stage {
                            h3 { (stage) }
                            @if may_run && jobs.iter().any(|j| j.status == "pending" && j.waiting_for.as_deref().is_some_and(|w| w.starts_with(MANUAL_START))) {
                                form.inline.startstage method="post" action={"/runs/" (run.id) "/stages/" (lockgate_agent::client::percent_encode(stage)) "/start"} {
                                    (csrf(&caller)) button type="submit" { "Run stage" }
                                }
                            }
                            @for job in jobs {
                                a.job href={"#job-" (job.id)} { (status_badge(&job.status, job.result.as_deref())) " " (job.display_name) }
                            }
                        }
                    }
                }
            }
        }
        @for (job, lines) in detail.jobs.iter().zip(&logs) {
            section.jobpanel id={"job-" (job.id)} data-run=(run.id) data-job=(job.id) data-lines=(lines.len()) data-status=(job.status) {
                h2 { (job.stage) " / " (job.display_name) " " span.jobstatus { (status_badge(&job.status, job.result.as_deref())) }
                    span.muted { " " (duration(job.started_at, job.finished_at)) @if job.attempt > 1 { " · attempt " (job.attempt) } } }
                @if let Some(reason) = &job.waiting_for { p.waiting { "Waiting for " (reason) } }
                ol.steps { @for step in &job.steps { li { (status_badge(&step.status, step.result.as_deref())) " " (step.name) span.muted { " " (duration(step.started_at, step.finished_at)) } } } }
                div.logtools { input.logsearch type="search" placeholder="Search log" aria-label="Search log"; a href={"/api/v1/runs/" (run.id) "/jobs/" (job.id) "/logs"} { "Raw log" } }
                pre.log { (render_log(job.id, lines)) }
            }
        }
        @if !artifacts.is_empty() {
            section {
                h2 { "Artifacts" }
                p { @for name in artifact_names(&artifacts) {
                    a.zip href={"/api/v1/runs/" (run.id) "/artifact-archives/" (lockgate_agent::client::percent_encode(&name))} download { (name) ".zip" } " "
                } }
                table { tbody { @for file in &artifacts {
                    tr { td { (file.name) } td { a.artifact href={"/api/v1/runs/" (run.id) "/artifacts/" (file.id)} download { (file.file_path) } } td.muted { (file.size) " bytes" } }
                } } }
            }
        }
        @if !tests.is_empty() {
            @let count = |outcome: &str| tests.iter().filter(|t| t.outcome == outcome).count();
            section.tests id="tests" {
                h2 { "Tests" }
                p.testsummary {
                    span.badge.passed { (count("passed")) " passed" } " "
                    span.badge.failed { (count("failed")) " failed" } " "
                    span.badge.skipped { (count("skipped")) " skipped" } " · "
                    a href={"/api/v1/runs/" (run.id) "/tests"} download={"run-" (run.id) "-tests.json"} { "Download (JSON)" }
                }
                table { thead { tr { th { "Suite" } th { "Test" } th { "Outcome" } th { "ms" } } } tbody { @for t in failed_first(&tests) {
                    tr class={"test " (t.outcome)} {
                        td { (t.suite) }
                        td { (t.name) @if !t.message.is_empty() {
                            details.testmessage { summary { "Message" } pre { (t.message) } }
                        } }
                        td { span class={"badge " (t.outcome)} { (t.outcome) } }
                        td { (t.duration_ms) }
                    }
                } } }
            }
        }
        section {
            details open[!diagnostics.is_empty()] {
                summary { "YAML" }
                pre.yaml { @for (n, line) in run.yaml.lines().enumerate() {
                    @let marked = diagnostics.iter().any(|d| d.span.as_ref().is_some_and(|s| s.line as usize == n + 1));
                    span id={"Y" (n + 1)} class=@if marked { "line marked" } @else { "line" } { span.ln { (n + 1) } (line) "\n" }
                } }
            }
        }
        script src="/static/run.js" {}
    }).into_response())
}

/// A run's test results with the failed ones first, each group in the order they were published.
fn failed_first(tests: &[lockgate_store::TestResult]) -> Vec<&lockgate_store::TestResult> {
    let mut sorted: Vec<&lockgate_store::TestResult> = tests.iter().collect();
    sorted.sort_by_key(|t| t.outcome != "failed");
    sorted
}

/// Renders stored log lines with line anchors, ANSI colours and `##[group]` folds (same rules as run.js).
fn render_log(job_id: i64, lines: &[LogLine]) -> Markup {
    let mut out = String::new();
    let mut open_group = false;
    for (index, line) in lines.iter().enumerate() {
        let number = index + 1;
        let text = line.text.as_str();
        if let Some(title) = text.strip_prefix("##[group]") {
            if open_group {
                out.push_str("</details>");
            }
            out.push_str(&format!(
                "<details class=\"group\" open><summary>{}</summary>",
                escape_html(title)
            ));
            open_group = true;
            continue;
        }
        if text.starts_with("##[endgroup]") {
            if open_group {
                out.push_str("</details>");
                open_group = false;
            }
            continue;
        }
        let class = if text.starts_with("##[error]") {
            "l err"
        } else if text.starts_with("##[warning]") {
            "l warn"
        } else if text.starts_with("##[section]") || text.starts_with("##[command]") {
            "l cmd"
        } else {
            "l"
        };
        out.push_str(&format!(
            "<span class=\"{class}\" id=\"L{job_id}-{number}\"><a class=\"n\" href=\"#L{job_id}-{number}\">{number}</a>{}</span>",
            ansi_to_html(text)
        ));
    }
    if open_group {
        out.push_str("</details>");
    }
    PreEscaped(out)
}

/// Escapes a line and turns ANSI SGR colour codes (30–37, 90–97, bold, reset) into spans.
pub fn ansi_to_html(text: &str) -> String {
    let mut out = String::new();
    let mut open = 0;
    let mut rest = text;
    while let Some(at) = rest.find("\u{1b}[") {
        out.push_str(&escape_html(&rest[..at]));
        let after = &rest[at + 2..];
        let Some(end) = after.find(|c: char| !(c.is_ascii_digit() || c == ';')) else {
            rest = "";
            break;
        };
        let (codes, tail) = after.split_at(end);
        // `end` is where a char starts (find gives char boundaries); skip that whole char, which may
        // be several bytes (`ESC[é`).
        let mut chars = tail.chars();
        let terminator = chars.next();
        rest = chars.as_str();
        if terminator != Some('m') {
            continue;
        }
        for code in codes.split(';') {
            match code.parse::<u32>().unwrap_or(0) {
                0 => {
                    out.push_str(&"</span>".repeat(open));
                    open = 0;
                }
                1 => {
                    out.push_str("<span class=\"b\">");
                    open += 1;
                }
                c @ (30..=37 | 90..=97) => {
                    out.push_str(&format!("<span class=\"c{c}\">"));
                    open += 1;
                }
                _ => {}
            }
        }
    }
    out.push_str(&escape_html(rest));
    out.push_str(&"</span>".repeat(open));
    out
}

/// The badge class of an approval's status.
fn approval_badge(status: &str) -> &'static str {
    match status {
        "approved" => "succeeded",
        "rejected" | "timedOut" => "failed",
        _ => "running",
    }
}

#[derive(Deserialize)]
struct DecisionForm {
    decision: String,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    comment: String,
}

async fn decide_approvals(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(id): Path<i64>,
    Form(form): Form<DecisionForm>,
) -> PageResult {
    let body = api::DecideApprovals {
        decision: form.decision,
        stage: form.stage.filter(|s| !s.is_empty()),
        environment: form.environment.filter(|e| !e.is_empty()),
        comment: form.comment.trim().to_string(),
    };
    crate::approvals::decide(&state, &caller, id, &body).await?;
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

/// How the reason of a job waiting for a manual start begins (see `api::run_detail`).
const MANUAL_START: &str = crate::api::MANUAL_START;

async fn start_stage(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path((id, stage)): Path<(i64, String)>,
) -> PageResult {
    crate::locks::start_manual_stage(&state, &caller, id, &stage).await?;
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

async fn cancel_run(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(id): Path<i64>,
) -> PageResult {
    let run = run_for(&state, &caller, id, Role::Contributor).await?;
    if run.status != "completed" {
        crate::runs::cancel_run(&state, run.id).await?;
    }
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

async fn rerun(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(id): Path<i64>,
) -> PageResult {
    let run = run_for(&state, &caller, id, Role::Contributor).await?;
    let new_run = crate::runs::rerun(&state, &run, &caller.user.name).await?;
    Ok(Redirect::to(&format!("/runs/{}", new_run.id)).into_response())
}

async fn rerun_failed(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(id): Path<i64>,
) -> PageResult {
    let run = run_for(&state, &caller, id, Role::Contributor).await?;
    crate::runs::rerun_failed_jobs(&state, &run).await?;
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

// ---- tokens ----

async fn tokens_page(State(state): State<AppState>, PageCaller(caller): PageCaller) -> PageResult {
    Ok(tokens_view(&state, &caller, None).await?.into_response())
}

async fn tokens_view(
    state: &AppState,
    caller: &Caller,
    created: Option<&api::CreatedToken>,
) -> Result<Markup, PageError> {
    let tokens = state.store.list_access_tokens(caller.user.id).await?;
    Ok(layout(
        "Tokens",
        Some(caller),
        html! {
            h1 { "Personal access tokens" }
            @if let Some(created) = created {
                p.notice { "New token " strong { (created.name) } " — copy it now, it is not shown again: " code id="new-token" { (created.token) } }
            }
            ul.list { @for token in &tokens { li { (token.name) " " span.muted { (token.scopes) " · created " (when(Some(token.created_at))) } } } }
            form.card.row method="post" action="/tokens" {
                (csrf(caller))
                input name="name" required placeholder="token name";
                label { input type="checkbox" name="read" value="1" checked; " read" }
                label { input type="checkbox" name="write" value="1" checked; " write" }
                label { input type="checkbox" name="admin" value="1"; " admin" }
                button type="submit" { "Create token" }
            }
        },
    ))
}

#[derive(Deserialize)]
struct TokenForm {
    name: String,
    read: Option<String>,
    write: Option<String>,
    admin: Option<String>,
}

async fn create_token(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Form(form): Form<TokenForm>,
) -> PageResult {
    let scopes = [
        ("read", &form.read),
        ("write", &form.write),
        ("admin", &form.admin),
    ]
    .into_iter()
    .filter(|(_, on)| on.is_some())
    .map(|(scope, _)| scope.to_string())
    .collect();
    let created = crate::api::issue_token(&state, &caller, &form.name, scopes).await?;
    Ok(tokens_view(&state, &caller, Some(&created))
        .await?
        .into_response())
}

/// The server's agents (server administrators): state, last heartbeat, current job, version,
/// capabilities, and buttons to disable (drain), enable or remove one.
async fn agents_page(State(state): State<AppState>, PageCaller(caller): PageCaller) -> PageResult {
    crate::agents::require_server_admin(&caller)?;
    let agents = crate::agents::summaries(&state).await?;
    Ok(layout(
        "Agents",
        Some(&caller),
        html! {
            h1 { "Agents" }
            p.muted { "Register one on another machine: " code { "lockgate agents token --pool NAME" } ", then " code { "lockgate agent register" } " there (docs/agents.md)." }
            table.agents {
                thead { tr { th { "Agent" } th { "Pool" } th { "State" } th { "Last heartbeat" } th { "Current job" } th { "Version" } th { "Capabilities" } th {} } }
                tbody { @for agent in &agents {
                    tr data-agent=(agent.name) {
                        td { (agent.name) @if agent.builtin { span.muted { " built-in" } } }
                        td { (agent.pool) @if let Some(project) = &agent.project { span.muted { " (" (project) ")" } } }
                        td.state { (agent.state) }
                        td { (when(agent.last_seen_at)) }
                        td { @if let (Some(job), Some(run)) = (agent.current_job, agent.current_run) { a href={"/runs/" (run) "#job-" (job)} { "run " (run) } } @else { "idle" } }
                        td { (agent.version.as_deref().unwrap_or("-")) }
                        td.muted { @for (name, value) in &agent.capabilities { (name) @if !value.is_empty() { "=" (value) } " " } }
                        td {
                            form.inline method="post" action={"/agents/" (agent.name) "/" (if agent.enabled { "disable" } else { "enable" })} {
                                (csrf(&caller))
                                button type="submit" { (if agent.enabled { "Disable" } else { "Enable" }) }
                            }
                            @if !agent.builtin {
                                form.inline method="post" action={"/agents/" (agent.name) "/remove"} {
                                    (csrf(&caller))
                                    button type="submit" { "Remove" }
                                }
                            }
                        }
                    }
                } }
            }
        },
    )
    .into_response())
}

async fn change_agent(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path((name, action)): Path<(String, String)>,
) -> PageResult {
    match action.as_str() {
        "enable" => crate::agents::set_enabled(&state, &caller, &name, true).await?,
        "disable" => crate::agents::set_enabled(&state, &caller, &name, false).await?,
        "remove" => crate::agents::remove_agent(&state, &caller, &name).await?,
        _ => return Err(ApiError::not_found("page").into()),
    };
    Ok(Redirect::to("/agents").into_response())
}

/// The distinct artifact names, in order.
fn artifact_names(files: &[lockgate_store::ArtifactFile]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for file in files {
        if !names.contains(&file.name) {
            names.push(file.name.clone());
        }
    }
    names
}

/// Escapes text for HTML element content and attribute values.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_colours_become_spans_and_text_is_escaped() {
        assert_eq!(
            ansi_to_html("\u{1b}[31mred\u{1b}[0m <b>"),
            "<span class=\"c31\">red</span> &lt;b&gt;"
        );
        assert_eq!(
            ansi_to_html("\u{1b}[1;32mok"),
            "<span class=\"b\"><span class=\"c32\">ok</span></span>"
        );
        assert_eq!(ansi_to_html("broken \u{1b}["), "broken ");
        // A multi-byte character right after `ESC[` once panicked at a char boundary.
        assert_eq!(ansi_to_html("\u{1b}[é after"), " after");
        assert_eq!(ansi_to_html("\u{1b}[12é"), "");
    }

    #[test]
    fn ansi_parsing_survives_arbitrary_text() {
        // A deterministic spread of inputs: escape fragments mixed with multi-byte characters, and
        // lossily decoded random bytes (what a log line holds after the runner's decoding).
        let pieces = [
            "\u{1b}", "[", "\u{1b}[", "m", ";", "3", "1", "é", "€", "😀", "<", "&", "a", "\u{0}",
            "9",
        ];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let len = (next() % 12) as usize;
            let text: String = (0..len)
                .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                .collect();
            let html = ansi_to_html(&text);
            // Only the parser's own spans are markup; everything else came out escaped.
            let mut stripped = html
                .replace("</span>", "")
                .replace("<span class=\"b\">", "");
            for c in (30..=37).chain(90..=97) {
                stripped = stripped.replace(&format!("<span class=\"c{c}\">"), "");
            }
            assert!(!stripped.contains(['<', '>']), "{text:?} -> {html:?}");
            assert_eq!(
                html.matches("<span").count(),
                html.matches("</span>").count()
            );
            let bytes: Vec<u8> = (0..len * 3).map(|_| (next() % 256) as u8).collect();
            let _ = ansi_to_html(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/runs/1")), "/runs/1");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(None), "/");
        for bad in [
            "/\\evil.example",
            "/\\/evil.example",
            "\\\\evil.example",
            "javascript:alert(1)",
            "/runs/1\r\nSet-Cookie: x=1",
            "/\t/evil.example",
            "/ok\u{0}",
            "/é",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(
            safe_next(Some("/runs/1?tab=logs#L3")),
            "/runs/1?tab=logs#L3"
        );
    }

    #[test]
    fn groups_fold_and_lines_get_anchors() {
        let lines = vec![
            LogLine {
                step: Some(1),
                text: "##[group]Install".into(),
            },
            LogLine {
                step: Some(1),
                text: "npm ci".into(),
            },
            LogLine {
                step: Some(1),
                text: "##[endgroup]".into(),
            },
            LogLine {
                step: Some(1),
                text: "##[error]boom".into(),
            },
        ];
        let html = render_log(9, &lines).into_string();
        assert!(html.contains("<details class=\"group\" open><summary>Install</summary>"));
        assert!(html.contains("id=\"L9-2\""));
        assert!(html.contains("class=\"l err\" id=\"L9-4\""));
    }
}
