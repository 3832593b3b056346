//! Agents on other machines: one-time registration tokens, registration, the capabilities agents
//! report, pools and the matching of a job's pool and demands against an agent ("Demands": `name`
//! checks that a capability exists, `name -equals value` its value, both ignoring case), the list of
//! agents, and disabling (draining) or removing one.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use lockgate_protocol::agent::{AgentInfo, RegisterAgent, RegisteredAgent};
use lockgate_protocol::api;
use lockgate_store::{Agent, AgentJob, Job, NewAgentRegistration, StoreError, now_millis};

use crate::AppState;
use crate::agent_api::AgentCaller;
use crate::auth::{self, Caller, Role};
use crate::error::{ApiError, ApiResult, Json};
use crate::git;
use crate::targets::JobTarget;

/// The pool of the built-in agents, and of every job whose pool names none (no `pool`, or a `vmImage`
/// that [`VmImages`] maps to no other pool). Pool names ignore case, so `pool: Default` (Azure's default pool) is this one.
pub const DEFAULT_POOL: &str = "default";

/// Which pool a `pool: {vmImage: IMAGE}` job (with no pool name) goes to: the `[vm_images]` table of
/// the server config, `"IMAGE" = "POOL"` lines, where an image name may end in `*` to match every
/// name it starts with; names ignore case, an exact name wins over a pattern and a longer pattern
/// over a shorter one. `ubuntu-*` goes to the built-in agents' pool unless the table says otherwise.
/// A mapped image's job runs on the pool's agents whatever their OS (the administrator chose the
/// pool); an image the table does not map goes to [`DEFAULT_POOL`] and, when it is a Windows or
/// macOS image, waits for an agent with that `Agent.OS` (`Windows_NT`, `Darwin`; "Use predefined
/// variables").
#[derive(Clone, Debug, PartialEq)]
pub struct VmImages {
    /// Lowercased image name or `prefix*` pattern, and the pool.
    entries: Vec<(String, String)>,
}

impl Default for VmImages {
    fn default() -> VmImages {
        VmImages {
            entries: vec![("ubuntu-*".into(), DEFAULT_POOL.into())],
        }
    }
}

impl VmImages {
    /// The default table with `image` mapped to `pool` (replacing an entry for the same name); an
    /// error names what is wrong.
    pub fn insert(&mut self, image: &str, pool: &str) -> Result<(), String> {
        let image = image.trim();
        let pattern = image.strip_suffix('*').unwrap_or(image);
        if pattern.is_empty() || pattern.contains(['*', ' ']) {
            return Err(format!(
                "`{image}` is not an image name (a name, or a name that ends in `*`)"
            ));
        }
        if !valid_pool(pool) {
            return Err(format!("`{pool}` is not a pool name"));
        }
        let image = image.to_ascii_lowercase();
        self.entries.retain(|(known, _)| *known != image);
        self.entries.push((image, pool.to_ascii_lowercase()));
        Ok(())
    }

    /// The pool `image` maps to, if any.
    pub fn pool_for(&self, image: &str) -> Option<&str> {
        let image = image.to_ascii_lowercase();
        if let Some((_, pool)) = self.entries.iter().find(|(known, _)| *known == image) {
            return Some(pool);
        }
        self.entries
            .iter()
            .filter_map(|(known, pool)| {
                let prefix = known.strip_suffix('*')?;
                image.starts_with(prefix).then_some((prefix.len(), pool))
            })
            .max_by_key(|(length, _)| *length)
            .map(|(_, pool)| pool.as_str())
    }
}

/// The resource type of an environment's targets (`environment: {resourceType: VirtualMachine}`).
pub const VIRTUAL_MACHINE: &str = "VirtualMachine";

/// Registration tokens last this long unless asked otherwise, and at most a week.
const DEFAULT_REGISTRATION_MINUTES: u32 = 60;
const MAX_REGISTRATION_MINUTES: u32 = 7 * 24 * 60;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/agents", get(list))
        .route("/api/v1/agents/registrations", post(create_registration))
        .route("/api/v1/agents/{name}", axum::routing::delete(remove))
        .route("/api/v1/agents/{name}/enable", post(enable))
        .route("/api/v1/agents/{name}/disable", post(disable))
        .route("/api/v1/agent/register", post(register))
        .route("/api/v1/agent/info", put(set_info))
}

/// Whether a pool name is usable: the rules of other names, at most 100 characters.
fn valid_pool(name: &str) -> bool {
    git::valid_name(name)
}

/// The project a pool belongs to, checked against what the caller may do there: a project's pool
/// needs its Administrator role, a server-wide pool a server administrator.
async fn pool_scope(
    state: &AppState,
    caller: &Caller,
    project: Option<&str>,
) -> ApiResult<Option<lockgate_store::Project>> {
    caller.require_scope("admin")?;
    match project {
        Some(name) => {
            let project = state
                .store
                .project_by_name(name)
                .await?
                .ok_or_else(|| ApiError::not_found("project"))?;
            auth::require_role(state, caller, project.id, Role::Administrator).await?;
            Ok(Some(project))
        }
        None if caller.user.is_admin => Ok(None),
        None => Err(ApiError::forbidden(
            "only server administrators create tokens for server-wide pools; give a project",
        )),
    }
}

async fn create_registration(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<api::CreateAgentRegistration>,
) -> ApiResult<(StatusCode, Json<api::AgentRegistration>)> {
    if body.environment.is_none() && !valid_pool(&body.pool) {
        return Err(ApiError::bad_request(
            "pool: a pool name uses letters, digits, `-`, `_` and `.`",
        ));
    }
    if body.environment.is_some() && !body.pool.is_empty() {
        return Err(ApiError::bad_request(
            "give `pool` or `environment`, not both: a target of an environment is in no pool",
        ));
    }
    let minutes = body
        .expires_in_minutes
        .unwrap_or(DEFAULT_REGISTRATION_MINUTES);
    if minutes == 0 || minutes > MAX_REGISTRATION_MINUTES {
        return Err(ApiError::bad_request(format!(
            "expiresInMinutes: between 1 and {MAX_REGISTRATION_MINUTES}"
        )));
    }
    let project = pool_scope(&state, &caller, body.project.as_deref()).await?;
    // A target's token is for one environment of the project: its administrators create it.
    let environment = match (&body.environment, &project) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(ApiError::bad_request(
                "environment: an environment belongs to a project; give `project` too",
            ));
        }
        (Some(name), Some(project)) => Some(
            state
                .store
                .environment_by_name(project.id, name)
                .await?
                .ok_or_else(|| {
                    ApiError::not_found(format!(
                        "environment `{name}` in project `{}` (create it first: `POST \
                         /api/v1/projects/{}/environments`)",
                        project.name, project.name
                    ))
                })?,
        ),
    };
    let pool = environment
        .as_ref()
        .map_or_else(|| body.pool.clone(), |e| e.name.clone());
    let token = auth::random_token("lgr_");
    let expires_at = now_millis() + i64::from(minutes) * 60_000;
    state
        .store
        .create_agent_registration(&NewAgentRegistration {
            token_hash: auth::token_hash(&token),
            pool: pool.clone(),
            project_id: project.as_ref().map(|p| p.id),
            created_by: caller.user.name.clone(),
            expires_at,
            environment_id: environment.as_ref().map(|e| e.id),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(api::AgentRegistration {
            token,
            pool: if environment.is_some() {
                String::new()
            } else {
                pool
            },
            project: project.map(|p| p.name),
            environment: environment.map(|e| e.name),
            expires_at,
        }),
    ))
}

/// Trades a registration token for an agent token. The registration token is the credential.
async fn register(
    State(state): State<AppState>,
    Json(body): Json<RegisterAgent>,
) -> ApiResult<(StatusCode, Json<RegisteredAgent>)> {
    if !git::valid_name(&body.name) || body.name.starts_with("built-in") {
        return Err(ApiError::bad_request(
            "name: an agent name uses letters, digits, `-`, `_` and `.` and does not start with `built-in`",
        ));
    }
    let tags = match &body.environment {
        Some(_) if !body.pool.is_empty() => {
            return Err(ApiError::bad_request(
                "give --pool or --environment, not both: a target of an environment is in no pool",
            ));
        }
        Some(_) => Some(check_tags(&body.tags).map_err(ApiError::bad_request)?),
        None if !body.tags.is_empty() => {
            return Err(ApiError::bad_request(
                "tags: only a target of an environment has tags (--environment)",
            ));
        }
        None => None,
    };
    let (wanted, what) = match &body.environment {
        Some(environment) => (environment, "environment"),
        None => (&body.pool, "pool"),
    };
    let token = auth::random_token("lga_");
    let registration = auth::token_hash(&body.token);
    let agent = match state
        .store
        .redeem_agent_registration(
            &registration,
            wanted,
            tags.as_deref(),
            now_millis(),
            &body.name,
            &auth::token_hash(&token),
        )
        .await
    {
        Ok(Some(agent)) => agent,
        Ok(None) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!(
                    "the registration token is unknown, used, expired or not for {what} `{wanted}`: \
                     ask an administrator for a new one (`lockgate agents token --{what} {wanted}{}`)",
                    if what == "environment" {
                        " --project PROJECT"
                    } else {
                        ""
                    }
                ),
            ));
        }
        Err(StoreError::AlreadyExists { .. }) => {
            return Err(ApiError::conflict(format!(
                "an agent named `{}` exists: choose another --name or remove it (`lockgate agents remove {}`)",
                body.name, body.name
            )));
        }
        Err(error) => return Err(error.into()),
    };
    let project = match agent.project_id {
        Some(id) => state.store.project_by_id(id).await?.map(|p| p.name),
        None => None,
    };
    Ok((
        StatusCode::CREATED,
        Json(RegisteredAgent {
            name: agent.name,
            environment: agent.environment_id.map(|_| agent.pool.clone()),
            pool: if agent.environment_id.is_some() {
                String::new()
            } else {
                agent.pool
            },
            project,
            token,
        }),
    ))
}

/// A target's tags as given at registration: at most 50, each 1 to 100 letters, digits, `-`, `_`
/// and `.`, none twice (ignoring case).
pub fn check_tags(tags: &[String]) -> Result<Vec<String>, String> {
    if tags.len() > 50 {
        return Err("tags: at most 50".into());
    }
    let mut out: Vec<String> = Vec::new();
    for tag in tags {
        let tag = tag.trim();
        if !git::valid_name(tag) {
            return Err(format!(
                "tags: `{tag}` is not a tag (1 to 100 letters, digits, `-`, `_` and `.`; separate tags with commas)"
            ));
        }
        if !out.iter().any(|t| t.eq_ignore_ascii_case(tag)) {
            out.push(tag.to_string());
        }
    }
    Ok(out)
}

/// Records the agent's version and capabilities (system ones and those given at registration).
async fn set_info(
    State(state): State<AppState>,
    AgentCaller(agent): AgentCaller,
    Json(info): Json<AgentInfo>,
) -> ApiResult<StatusCode> {
    if info.capabilities.len() > 1000
        || info
            .capabilities
            .iter()
            .any(|(name, value)| name.is_empty() || name.len() > 200 || value.len() > 4096)
    {
        return Err(ApiError::bad_request(
            "capabilities: at most 1000, each with a name of 1 to 200 bytes and a value of at most 4096",
        ));
    }
    let os = info
        .capabilities
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("Agent.OS"))
        .map(|(_, os)| os.clone())
        .unwrap_or_default();
    let capabilities = serde_json::to_string(&info.capabilities).map_err(ApiError::internal)?;
    state
        .store
        .set_agent_info(
            agent.id,
            &lockgate_store::AgentInfo {
                os,
                version: info.version,
                capabilities,
            },
        )
        .await?;
    // A job that waited for these capabilities may be leased now.
    state.job_queued.notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}

/// An agent's capabilities as it reported them, with `Agent.Name` (and, for an agent that has
/// reported none, `Agent.OS` of the server, where the built-in agents run).
pub fn capabilities(agent: &Agent) -> BTreeMap<String, String> {
    let mut capabilities: BTreeMap<String, String> =
        serde_json::from_str(&agent.capabilities).unwrap_or_default();
    capabilities.insert("Agent.Name".into(), agent.name.clone());
    if !capabilities
        .keys()
        .any(|name| name.eq_ignore_ascii_case("Agent.OS"))
    {
        capabilities.insert(
            "Agent.OS".into(),
            agent
                .os
                .clone()
                .unwrap_or_else(|| lockgate_pipeline::plan::host_os().to_string()),
        );
    }
    capabilities
}

/// One demand of a pool: `name` (the capability exists) or `name -equals value`.
#[derive(Debug, PartialEq)]
enum Demand<'a> {
    Exists(&'a str),
    Equals(&'a str, &'a str),
}

fn parse_demand(text: &str) -> Option<Demand<'_>> {
    let text = text.trim();
    let Some((name, rest)) = text.split_once(char::is_whitespace) else {
        return (!text.is_empty()).then_some(Demand::Exists(text));
    };
    let rest = rest.trim_start();
    let (op, value) = rest.split_once(char::is_whitespace)?;
    op.eq_ignore_ascii_case("-equals")
        .then_some(Demand::Equals(name, value.trim()))
}

/// The first thing this agent lacks to run the job, said as the reason it does not (`None`: it can).
fn lacks(capabilities: &BTreeMap<String, String>, job: &Job) -> Option<String> {
    let lookup = |name: &str| {
        capabilities
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    };
    if let Some(os) = &job.agent_os
        && lookup("Agent.OS").is_none_or(|have| !have.eq_ignore_ascii_case(os))
    {
        return Some(format!("Agent.OS {os}"));
    }
    for text in &job.demands {
        match parse_demand(text) {
            Some(Demand::Exists(name)) if lookup(name).is_none() => {
                return Some(format!("`{name}`"));
            }
            Some(Demand::Equals(name, value))
                if lookup(name).is_none_or(|have| !have.eq_ignore_ascii_case(value)) =>
            {
                return Some(format!("`{name}` equal to `{value}`"));
            }
            None => {
                return Some(format!(
                    "a demand it can read (`{text}` is neither `name` nor `name -equals value`)"
                ));
            }
            Some(_) => {}
        }
    }
    None
}

/// The pool a job asks for.
pub fn job_pool(job: &Job) -> &str {
    job.pool.as_deref().unwrap_or(DEFAULT_POOL)
}

/// Whether the agent is in the job's pool: the same name (ignoring case), server-wide or of the
/// job's project.
fn in_pool(agent: &Agent, job: &AgentJob) -> bool {
    agent.environment_id.is_none()
        && agent.pool.eq_ignore_ascii_case(job_pool(&job.job))
        && agent.project_id.is_none_or(|id| id == job.project_id)
}

/// Whether this agent may lease the job.
pub fn can_run(agent: &Agent, capabilities: &BTreeMap<String, String>, job: &AgentJob) -> bool {
    if !agent.enabled {
        return false;
    }
    match JobTarget::of(&job.job) {
        // A deployment to an environment's targets runs on such a target, never on a pool's agent.
        Some(target) => target.admits(agent),
        None => in_pool(agent, job) && lacks(capabilities, &job.job).is_none(),
    }
}

/// Leases the oldest queued job this agent can run (its pool, OS and demands), if any. The agent
/// is read again first: it may have been disabled, removed (401), or have reported its
/// capabilities, since it asked. `os` is what an agent that reports no capabilities said in its lease request.
pub async fn lease_for(
    state: &AppState,
    caller: &Agent,
    os: Option<&str>,
    lease_token_hash: &str,
    expires: i64,
) -> ApiResult<Option<Job>> {
    let Some(mut agent) = state
        .store
        .list_agents()
        .await?
        .into_iter()
        .find(|a| a.id == caller.id)
    else {
        // Removed while it waited: its token is no longer valid.
        return Err(ApiError::unauthorized());
    };
    if !agent.enabled {
        return Ok(None);
    }
    if agent.os.as_deref().is_none_or(str::is_empty) {
        agent.os = os.map(str::to_string);
    }
    let capabilities = capabilities(&agent);
    for open in state.store.agent_jobs().await? {
        if open.job.status != "queued" || !can_run(&agent, &capabilities, &open) {
            continue;
        }
        if let Some(job) = state
            .store
            .lease_job(open.job.id, &agent.name, lease_token_hash, expires)
            .await?
        {
            return Ok(Some(job));
        }
    }
    Ok(None)
}

/// What the log says of a job whose agent stopped sending heartbeats.
pub fn stopped_responding(state: &AppState, job: &Job) -> String {
    format!(
        "The agent {}stopped responding (no heartbeat for {} s)",
        job.agent_name
            .as_deref()
            .map(|name| format!("`{name}` "))
            .unwrap_or_default(),
        state.lease_seconds
    )
}

/// Why a queued job waits, when no agent can run it (`None` when one can: it is merely busy), in
/// words that follow "Waiting for": "an agent: no agent in pool `build` has `java`".
pub fn waiting_reason(job: &AgentJob, agents: &[Agent]) -> Option<String> {
    if job.job.status != "queued" {
        return None;
    }
    if let Some(target) = JobTarget::of(&job.job) {
        return target.waiting_reason(agents);
    }
    let pool = job_pool(&job.job);
    let members: Vec<&Agent> = agents.iter().filter(|a| in_pool(a, job)).collect();
    // A Windows or macOS `vmImage` the server maps to no pool: say which image, and what it needs.
    let unmapped = |theirs: String| {
        let image = serde_json::from_str::<serde_json::Value>(&job.job.spec)
            .ok()?
            .get(crate::runs::UNMAPPED_VM_IMAGE)?
            .as_str()?
            .to_string();
        let os = job.job.agent_os.as_deref()?;
        Some(format!(
            "an agent with Agent.OS {os} for vmImage `{image}`: no pool is mapped to this image \
             (`[vm_images]` in the server config), and {theirs}"
        ))
    };
    if members.is_empty() {
        if let Some(reason) = unmapped(format!("pool `{pool}` has no agent")) {
            return Some(reason);
        }
        return Some(format!(
            "an agent in pool `{pool}`: no agent is registered in it (`lockgate agents token --pool {pool}`)"
        ));
    }
    let mut missing = Vec::new();
    for agent in &members {
        match lacks(&capabilities(agent), &job.job) {
            None if agent.enabled => return None,
            None => {}
            Some(what) => missing.push(what),
        }
    }
    if missing.is_empty() {
        return Some(format!(
            "an agent: every agent in pool `{pool}` that could run this job is disabled"
        ));
    }
    if let Some(os) = &job.job.agent_os
        && missing.iter().all(|m| *m == format!("Agent.OS {os}"))
    {
        let mut theirs: Vec<String> = members
            .iter()
            .map(|a| capabilities(a).get("Agent.OS").cloned().unwrap_or_default())
            .collect();
        theirs.sort();
        theirs.dedup();
        let theirs = theirs.join(", ");
        if let Some(reason) = unmapped(format!("the agents of pool `{pool}` run {theirs}")) {
            return Some(reason);
        }
        return Some(format!(
            "an agent with Agent.OS {os}: its pool asks for one, and the agents of pool `{pool}` run {theirs}"
        ));
    }
    missing.sort();
    missing.dedup();
    let first = &missing[0];
    let has = if missing.iter().all(|m| m == first) {
        format!("has {first}")
    } else {
        "meets all of its demands".into()
    };
    Some(format!("an agent: no agent in pool `{pool}` {has}"))
}

/// Why each queued job of these waits, by job id.
pub async fn waiting_reasons(state: &AppState, jobs: &[Job]) -> ApiResult<BTreeMap<i64, String>> {
    if !jobs.iter().any(|job| job.status == "queued") {
        return Ok(BTreeMap::new());
    }
    let agents = state.store.list_agents().await?;
    let open = state.store.agent_jobs().await?;
    Ok(open
        .iter()
        .filter(|open| jobs.iter().any(|job| job.id == open.job.id))
        .filter_map(|open| waiting_reason(open, &agents).map(|reason| (open.job.id, reason)))
        .collect())
}

/// Agents are listed by server administrators.
pub(crate) fn require_server_admin(caller: &Caller) -> ApiResult<()> {
    caller.require_scope("admin")?;
    if caller.user.is_admin {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "only server administrators manage agents",
        ))
    }
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<api::AgentSummary>>> {
    require_server_admin(&caller)?;
    Ok(Json(summaries(&state).await?))
}

/// Every agent with its state and current job.
pub async fn summaries(state: &AppState) -> ApiResult<Vec<api::AgentSummary>> {
    let agents = state.store.list_agents().await?;
    let open = state.store.agent_jobs().await?;
    let projects: BTreeMap<i64, String> = state
        .store
        .list_projects()
        .await?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    let online_since = online_since(state);
    Ok(agents
        .iter()
        .map(|agent| {
            let current = current_job(&open, agent);
            let state = agent_state(agent, online_since);
            api::AgentSummary {
                name: agent.name.clone(),
                pool: agent.pool.clone(),
                project: agent.project_id.and_then(|id| projects.get(&id).cloned()),
                state: state.into(),
                enabled: agent.enabled,
                builtin: agent.builtin,
                last_seen_at: agent.last_seen_at,
                current_job: current.map(|j| j.job.id),
                current_run: current.map(|j| j.job.run_id),
                version: agent.version.clone(),
                capabilities: capabilities(agent),
                environment: agent.environment_id.map(|_| agent.pool.clone()),
                tags: agent.tags.clone(),
            }
        })
        .collect())
}

/// An agent heard from since this time is online.
fn online_since(state: &AppState) -> i64 {
    now_millis() - i64::from(state.lease_seconds) * 1000
}

/// The running job this agent holds.
fn current_job<'j>(open: &'j [AgentJob], agent: &Agent) -> Option<&'j AgentJob> {
    open.iter()
        .find(|j| j.job.status == "running" && j.job.agent_name.as_deref() == Some(&agent.name))
}

/// `disabled`, `online` (heard from within the lease period) or `offline`.
fn agent_state(agent: &Agent, online_since: i64) -> &'static str {
    if !agent.enabled {
        "disabled"
    } else if agent.last_seen_at.is_some_and(|seen| seen >= online_since) {
        "online"
    } else {
        "offline"
    }
}

/// The virtual machine resources of an environment: the agents registered as its targets.
pub async fn environment_resources(
    state: &AppState,
    environment_id: i64,
) -> ApiResult<Vec<api::EnvironmentResource>> {
    let agents = state.store.list_agents().await?;
    let open = state.store.agent_jobs().await?;
    let online_since = online_since(state);
    Ok(agents
        .iter()
        .filter(|agent| agent.environment_id == Some(environment_id))
        .map(|agent| api::EnvironmentResource {
            name: agent.name.clone(),
            resource_type: VIRTUAL_MACHINE.into(),
            tags: agent.tags.clone(),
            state: agent_state(agent, online_since).into(),
            last_seen_at: agent.last_seen_at,
            current_job: current_job(&open, agent).map(|j| j.job.id),
        })
        .collect())
}

pub(crate) async fn set_enabled(
    state: &AppState,
    caller: &Caller,
    name: &str,
    enabled: bool,
) -> ApiResult<StatusCode> {
    require_server_admin(caller)?;
    caller.require_scope("write")?;
    if !state.store.set_agent_enabled(name, enabled).await? {
        return Err(ApiError::not_found("agent"));
    }
    state.job_queued.notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}

async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    set_enabled(&state, &caller, &name, true).await
}

/// Drains an agent: it finishes the job it runs and leases no other.
async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    set_enabled(&state, &caller, &name, false).await
}

/// `DELETE /api/v1/agents/{name}`.
async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    remove_agent(&state, &caller, &name).await
}

/// Removes an agent: its token stops working. A built-in agent cannot be removed (the server
/// registers it again at start); disable it instead.
pub(crate) async fn remove_agent(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> ApiResult<StatusCode> {
    require_server_admin(caller)?;
    caller.require_scope("write")?;
    let agents = state.store.list_agents().await?;
    match agents.iter().find(|a| a.name == name) {
        None => Err(ApiError::not_found("agent")),
        Some(agent) if agent.builtin => Err(ApiError::bad_request(
            "a built-in agent cannot be removed (the server starts it again); disable it",
        )),
        Some(_) => {
            state.store.remove_agent(name).await?;
            // Its waiting lease request ends now (401), not when its long poll would.
            state.job_queued.notify_waiters();
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(pool: &str, capabilities: &str) -> Agent {
        Agent {
            id: 1,
            name: "a".into(),
            last_seen_at: None,
            created_at: 0,
            builtin: false,
            pool: pool.into(),
            project_id: None,
            enabled: true,
            os: Some("Linux".into()),
            version: None,
            capabilities: capabilities.into(),
            environment_id: None,
            tags: Vec::new(),
        }
    }

    fn job(pool: Option<&str>, demands: &[&str]) -> AgentJob {
        AgentJob {
            job: Job {
                id: 1,
                run_id: 1,
                stage_name: "s".into(),
                name: "j".into(),
                display_name: "j".into(),
                depends_on: "[]".into(),
                spec: "{}".into(),
                status: "queued".into(),
                result: None,
                attempt: 1,
                agent_name: None,
                lease_expires_at: None,
                cancel_requested: false,
                queued_at: 0,
                started_at: None,
                finished_at: None,
                outputs: "{}".into(),
                agent_os: None,
                environment: None,
                pool: pool.map(str::to_string),
                demands: demands.iter().map(|d| d.to_string()).collect(),
                target: None,
            },
            project_id: 7,
        }
    }

    #[test]
    fn demands_check_existence_and_equality_ignoring_case() {
        let java = agent("build", r#"{"JAVA_HOME":"/opt/jdk","Agent.OS":"Linux"}"#);
        let caps = capabilities(&java);
        let ok = |demands: &[&str]| can_run(&java, &caps, &job(Some("Build"), demands));
        assert!(ok(&[]));
        assert!(ok(&["java_home"]));
        assert!(ok(&["Agent.OS -equals linux", "agent.name -EQUALS A"]));
        assert!(!ok(&["maven"]));
        assert!(!ok(&["Agent.OS -equals Windows_NT"]));
        assert!(
            !ok(&["Agent.OS -contains Linux"]),
            "only exists and equals exist"
        );
        assert!(!can_run(&java, &caps, &job(None, &[])), "another pool");
        let mut team = agent("build", "{}");
        team.project_id = Some(8);
        assert!(!can_run(
            &team,
            &capabilities(&team),
            &job(Some("build"), &[])
        ));
        team.project_id = Some(7);
        assert!(can_run(
            &team,
            &capabilities(&team),
            &job(Some("build"), &[])
        ));
        team.enabled = false;
        assert!(!can_run(
            &team,
            &capabilities(&team),
            &job(Some("build"), &[])
        ));
    }

    #[test]
    fn a_job_no_agent_can_run_says_what_is_missing() {
        let agents = [agent("build", "{}"), agent(DEFAULT_POOL, r#"{"java":"x"}"#)];
        assert_eq!(
            waiting_reason(&job(Some("build"), &["java"]), &agents).as_deref(),
            Some("an agent: no agent in pool `build` has `java`")
        );
        assert_eq!(waiting_reason(&job(None, &["java"]), &agents), None);
        let reason = waiting_reason(&job(Some("gpu"), &[]), &agents).unwrap();
        assert!(
            reason.contains("pool `gpu`: no agent is registered"),
            "{reason}"
        );
        let mut drained = agents.clone();
        drained[0].enabled = false;
        let reason = waiting_reason(&job(Some("build"), &[]), &drained).unwrap();
        assert!(reason.contains("disabled"), "{reason}");
        let mut windows = job(None, &[]);
        windows.job.agent_os = Some("Windows_NT".into());
        let reason = waiting_reason(&windows, &agents).unwrap();
        assert!(
            reason.contains("Agent.OS Windows_NT") && reason.contains("run Linux"),
            "{reason}"
        );
        // A `vmImage` no pool is mapped to is named, with what it needs.
        windows.job.spec = format!(
            r#"{{"{}":"windows-latest"}}"#,
            crate::runs::UNMAPPED_VM_IMAGE
        );
        assert_eq!(
            waiting_reason(&windows, &agents).as_deref(),
            Some(
                "an agent with Agent.OS Windows_NT for vmImage `windows-latest`: no pool is mapped \
                 to this image (`[vm_images]` in the server config), and the agents of pool \
                 `default` run Linux"
            )
        );
        let reason = waiting_reason(&windows, &agents[..1]).unwrap();
        assert!(
            reason.contains("vmImage `windows-latest`")
                && reason.contains("pool `default` has no agent"),
            "{reason}"
        );
        let mut mac = agent(DEFAULT_POOL, r#"{"Agent.OS":"Darwin"}"#);
        mac.os = Some("Darwin".into());
        windows.job.agent_os = Some("Darwin".into());
        assert_eq!(
            waiting_reason(&windows, &[mac]),
            None,
            "a Mac agent takes it"
        );
    }

    #[test]
    fn vm_images_map_by_name_then_by_the_longest_pattern() {
        let mut images = VmImages::default();
        assert_eq!(images.pool_for("Ubuntu-22.04"), Some(DEFAULT_POOL));
        assert_eq!(images.pool_for("windows-latest"), None);
        images.insert("windows-*", "win").unwrap();
        images.insert("windows-2019", "Old-Win").unwrap();
        images.insert("ubuntu-24*", "noble").unwrap();
        assert_eq!(images.pool_for("WINDOWS-2022"), Some("win"));
        assert_eq!(images.pool_for("windows-2019"), Some("old-win"));
        assert_eq!(images.pool_for("ubuntu-24.04"), Some("noble"));
        assert_eq!(images.pool_for("ubuntu-latest"), Some(DEFAULT_POOL));
        images.insert("ubuntu-*", "linux").unwrap();
        assert_eq!(images.pool_for("ubuntu-latest"), Some("linux"), "replaced");
        assert!(images.insert("*", "all").is_err());
        assert!(images.insert("ubuntu latest", "x").is_err());
    }
}
