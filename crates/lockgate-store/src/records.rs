//! The records the store reads and writes: plain data shared by every backend (each backend maps its
//! rows to them by hand).

/// A user account.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub password_hash: String,
    pub is_admin: bool,
    pub created_at: i64,
}

/// A personal access token (only its hash is stored).
#[derive(Clone, Debug, PartialEq)]
pub struct AccessToken {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub scopes: String,
    pub created_at: i64,
}

/// A project: the unit of access control.
#[derive(Clone, Debug, PartialEq)]
pub struct Project {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
}

/// A Git repository hosted by the server.
#[derive(Clone, Debug, PartialEq)]
pub struct Repository {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
    pub created_at: i64,
}

/// A pipeline: a repository plus the path of its YAML file.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    pub id: i64,
    pub project_id: i64,
    pub repository_id: i64,
    pub name: String,
    pub yaml_path: String,
    pub created_at: i64,
}

/// A variable defined on a pipeline rather than in its YAML (Azure Pipelines' pipeline editor,
/// "Variables"). A secret's value leaves the server only in the jobs an agent leases; `Debug` does not
/// print it.
#[derive(Clone, PartialEq, Eq)]
pub struct PipelineVariable {
    pub name: String,
    pub value: String,
    pub secret: bool,
    /// Users may set its value when they queue a run ("Let users override this value when running
    /// this pipeline").
    pub allow_override: bool,
}

impl std::fmt::Debug for PipelineVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineVariable")
            .field("name", &self.name)
            .field("value", &if self.secret { "***" } else { &self.value })
            .field("secret", &self.secret)
            .field("allow_override", &self.allow_override)
            .finish()
    }
}

/// A run of a pipeline, with its pipeline's name.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub id: i64,
    pub pipeline_id: i64,
    pub pipeline_name: String,
    pub project_id: i64,
    pub number: i64,
    pub name: String,
    pub title: String,
    pub status: String,
    pub result: Option<String>,
    pub reason: String,
    pub source_branch: String,
    pub source_commit: String,
    pub requested_by: String,
    pub yaml: String,
    pub diagnostics: String,
    pub parameters: String,
    pub queued_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// A job of a run; `spec` is the compiled job as JSON, `depends_on` a JSON list of job ids.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Job {
    pub id: i64,
    pub run_id: i64,
    pub stage_name: String,
    pub name: String,
    pub display_name: String,
    pub depends_on: String,
    pub spec: String,
    pub status: String,
    pub result: Option<String>,
    pub attempt: i64,
    pub agent_name: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub cancel_requested: bool,
    pub queued_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Output variables the job published: a JSON object of `step.var` to value.
    pub outputs: String,
    /// The `Agent.OS` the job's pool asks for; only an agent with that OS leases it.
    pub agent_os: Option<String>,
    /// For deployment jobs: the environment deployed to, as the YAML names it.
    pub environment: Option<String>,
    /// The agent pool the job asks for; `None` is the default pool.
    pub pool: Option<String>,
    /// The pool's demands (`name` or `name -equals value`, macros expanded).
    pub demands: Vec<String>,
    /// For a deployment job over an environment's targets: which (JSON, see the server's
    /// `targets` module); only such a target leases it.
    pub target: Option<String>,
}

/// A job waiting for an agent or running on one, with the project of its pipeline (agent pools may
/// belong to a project).
#[derive(Clone, Debug, PartialEq)]
pub struct AgentJob {
    pub job: Job,
    pub project_id: i64,
}

/// A one-time registration token to create, as its hash.
#[derive(Clone, Debug, Default)]
pub struct NewAgentRegistration {
    pub token_hash: String,
    pub pool: String,
    /// The project whose pool it is; `None`: a pool of the whole server.
    pub project_id: Option<i64>,
    pub created_by: String,
    pub expires_at: i64,
    /// A token for a target of this environment (`pool` is then the environment's name).
    pub environment_id: Option<i64>,
}

/// What an agent says about itself when it starts: its system and user capabilities.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentInfo {
    pub os: String,
    pub version: String,
    /// A JSON object of capability name to value.
    pub capabilities: String,
}

/// A step of a job as reported by its agent.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub job_id: i64,
    pub position: i64,
    pub name: String,
    pub status: String,
    pub result: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// A compressed chunk of a job's log lines.
#[derive(Clone, Debug, PartialEq)]
pub struct LogChunk {
    pub job_id: i64,
    pub sequence: i64,
    pub first_line: i64,
    pub line_count: i64,
    /// Empty when `object` holds the lines instead.
    pub compressed: Vec<u8>,
    /// The object-storage key of the lines of an archived log (this chunk then stands for the log's
    /// first `line_count` lines, `first_line` 1).
    pub object: Option<String>,
}

/// What [`crate::Storage::archive_log_chunks`] replaces: the chunks a caller read of one attempt of
/// a completed job, now held by one object.
#[derive(Clone, Debug, PartialEq)]
pub struct LogArchive {
    pub job_id: i64,
    pub attempt: i64,
    pub through_sequence: i64,
    pub chunk_count: i64,
    pub line_count: i64,
    pub object: String,
}

/// One file of a published artifact; the content lives in the data folder under its digest.
#[derive(Clone, Debug, PartialEq)]
pub struct ArtifactFile {
    pub id: i64,
    pub run_id: i64,
    pub job_id: i64,
    pub name: String,
    pub file_path: String,
    pub size: i64,
    pub digest: String,
    pub created_at: i64,
}

/// One test case result published by a job.
#[derive(Clone, Debug, PartialEq)]
pub struct TestResult {
    pub run_id: i64,
    pub job_id: i64,
    pub suite: String,
    pub name: String,
    pub outcome: String,
    pub duration_ms: i64,
    pub message: String,
}

/// A registered agent.
#[derive(Clone, Debug, PartialEq)]
pub struct Agent {
    pub id: i64,
    pub name: String,
    pub last_seen_at: Option<i64>,
    pub created_at: i64,
    /// One of the server's own built-in agents (registered by the server at start, never through the
    /// API): the jobs it held when the server stopped are released on the next start.
    pub builtin: bool,
    /// Its pool (`default` for the built-in agents).
    pub pool: String,
    /// The project whose pool it is in; `None`: a pool of the whole server.
    pub project_id: Option<i64>,
    /// A disabled agent finishes its job but leases no other.
    pub enabled: bool,
    /// `Agent.OS` as the agent reported it (`None` until it does).
    pub os: Option<String>,
    pub version: Option<String>,
    /// Its capabilities as it reported them: a JSON object of name to value.
    pub capabilities: String,
    /// The environment it is a target (a virtual machine resource) of; such an agent leases only
    /// the deployment jobs pinned to it, never a pool's jobs.
    pub environment_id: Option<i64>,
    /// A target's tags, as given at registration.
    pub tags: Vec<String>,
}

/// A user's session (cookie), with the CSRF token its forms must carry.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    pub user: User,
    pub csrf_token: String,
    pub expires_at: i64,
}

/// An environment of a project: a target that deployment jobs deploy to (Azure Pipelines' "Create and
/// target an environment"). Created on first use by a deployment job or through the API.
#[derive(Clone, Debug, PartialEq)]
pub struct Environment {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
    pub description: String,
    pub created_at: i64,
    /// The user who created it (the requester of the run that first deployed to it); empty for
    /// environments found in job rows older than the ledger.
    pub created_by: String,
}

/// One entry of the deployment ledger: a deployment job's attempt against an environment, with what
/// it deployed. `artifacts` is a JSON list of `{name, digest, files}`; `variables` a JSON object of the
/// job's variables with secret values replaced by `***`.
#[derive(Clone, Debug, PartialEq)]
pub struct Deployment {
    pub id: i64,
    pub environment_id: i64,
    /// The environment's name (as stored on the environment).
    pub environment: String,
    pub run_id: i64,
    /// The run's name (`20261207.1`) and number.
    pub run_name: String,
    pub run_number: i64,
    pub job_id: i64,
    pub attempt: i64,
    pub pipeline_id: i64,
    pub pipeline_name: String,
    pub stage_name: String,
    pub job_name: String,
    /// `environment: name.resource` or `resourceName`.
    pub resource_name: Option<String>,
    pub source_commit: String,
    pub source_branch: String,
    pub artifacts: String,
    pub variables: String,
    pub requested_by: String,
    /// `running` or `completed`.
    pub status: String,
    /// The job's result once completed.
    pub result: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// A deployment to record when a deployment job starts.
#[derive(Clone, Debug, Default)]
pub struct NewDeployment {
    pub environment_id: i64,
    pub run_id: i64,
    pub job_id: i64,
    pub attempt: i64,
    pub pipeline_id: i64,
    pub stage_name: String,
    pub job_name: String,
    pub resource_name: Option<String>,
    pub source_commit: String,
    pub source_branch: String,
    pub artifacts: String,
    pub variables: String,
    pub requested_by: String,
}

/// "What is where" for one pipeline and one environment: the newest successful deployment of the
/// pipeline to it, and how many successful runs of the pipeline on the same branch are newer.
#[derive(Clone, Debug, PartialEq)]
pub struct DeployedVersion {
    pub deployment: Deployment,
    pub behind: i64,
}

/// A run to insert.
#[derive(Clone, Debug, Default)]
pub struct NewRun {
    pub pipeline_id: i64,
    pub name: String,
    /// The commit subject shown after the name; empty when not shown.
    pub title: String,
    pub status: String,
    pub result: Option<String>,
    pub reason: String,
    pub source_branch: String,
    pub source_commit: String,
    pub requested_by: String,
    pub yaml: String,
    pub diagnostics: String,
    pub parameters: String,
}

/// A job to insert with its run.
#[derive(Clone, Debug, Default)]
pub struct NewJob {
    pub stage_name: String,
    pub name: String,
    pub display_name: String,
    pub depends_on: String,
    pub spec: String,
    pub status: String,
    /// For deployment jobs: the environment deployed to.
    pub environment: Option<String>,
    /// The `Agent.OS` the job's pool asks for (`Pool::wanted_os`), when it says.
    pub agent_os: Option<String>,
    /// The agent pool the job asks for; `None` is the default pool.
    pub pool: Option<String>,
    /// The pool's demands, macros expanded.
    pub demands: Vec<String>,
    /// As [`Job::target`].
    pub target: Option<String>,
}

/// An artifact file to record.
#[derive(Clone, Debug, Default)]
pub struct NewArtifactFile {
    pub run_id: i64,
    pub job_id: i64,
    pub name: String,
    pub file_path: String,
    pub size: i64,
    pub digest: String,
}

/// Which runs to list.
#[derive(Clone, Debug)]
pub struct RunFilter {
    pub project_id: Option<i64>,
    pub pipeline_id: Option<i64>,
    pub branch: Option<String>,
    pub status: Option<String>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

impl Default for RunFilter {
    fn default() -> Self {
        RunFilter {
            project_id: None,
            pipeline_id: None,
            branch: None,
            status: None,
            before_id: None,
            limit: 50,
        }
    }
}

/// An approval check on an environment: who may approve a stage that deploys there, how many must,
/// and how long the stage waits before the check rejects it.
#[derive(Clone, Debug, PartialEq)]
pub struct ApprovalCheck {
    pub id: i64,
    pub project_id: i64,
    pub environment: String,
    /// User names; any `min_approvals` of them approve.
    pub approvers: Vec<String>,
    pub min_approvals: i64,
    /// The user who queued the run may approve it too.
    pub allow_requester: bool,
    pub instructions: String,
    pub timeout_minutes: i64,
    /// Every approver must approve, in the order listed.
    pub in_sequence: bool,
    pub created_by: String,
    pub created_at: i64,
}

/// What an approval check asks for, as configured.
#[derive(Clone, Debug, PartialEq)]
pub struct NewApprovalCheck {
    pub approvers: Vec<String>,
    pub min_approvals: i64,
    pub allow_requester: bool,
    pub instructions: String,
    pub timeout_minutes: i64,
    pub in_sequence: bool,
    pub created_by: String,
}

/// An automatic check on an environment (branch control, business hours): its kind and its
/// settings as JSON, which the server reads.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvironmentCheck {
    pub id: i64,
    pub project_id: i64,
    pub environment: String,
    pub kind: String,
    pub config: String,
    pub created_by: String,
    pub created_at: i64,
}

/// A variable group of a project: its variables as JSON (`[{name, value, secret}]`, secret
/// values sealed by the server) and the pipelines authorized to use it.
#[derive(Clone, PartialEq)]
pub struct VariableGroup {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
    pub description: String,
    pub variables: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Pipeline ids, ascending.
    pub pipelines: Vec<i64>,
}

impl std::fmt::Debug for VariableGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VariableGroup")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("pipelines", &self.pipelines)
            .finish_non_exhaustive()
    }
}

/// A service connection of a project: its kind, its fields as a JSON object (secret fields
/// sealed by the server) and the pipelines authorized to use it.
#[derive(Clone, PartialEq)]
pub struct ServiceConnection {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
    pub kind: String,
    pub description: String,
    pub fields: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Pipeline ids, ascending.
    pub pipelines: Vec<i64>,
}

impl std::fmt::Debug for ServiceConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConnection")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("pipelines", &self.pipelines)
            .finish_non_exhaustive()
    }
}

/// A job's use of a service connection.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionUse {
    pub run_id: i64,
    pub job_id: i64,
    pub job_attempt: i64,
    pub used_at: i64,
}

/// A secure file to store: its sealed content, the clear content's size and blake3 digest.
#[derive(Clone, PartialEq)]
pub struct NewSecureFile {
    pub project_id: i64,
    pub name: String,
    pub description: String,
    pub content: String,
    pub size: i64,
    pub digest: String,
    pub user: String,
}

/// A secure file of a project (without its content) and the pipelines authorized to use it.
#[derive(Clone, Debug, PartialEq)]
pub struct SecureFile {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
    pub description: String,
    pub size: i64,
    pub digest: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Pipeline ids, ascending.
    pub pipelines: Vec<i64>,
}

/// A manual stage someone started.
#[derive(Clone, Debug, PartialEq)]
pub struct StageStart {
    pub run_id: i64,
    pub stage: String,
    pub started_by: String,
    pub started_at: i64,
}

/// A request of a run's stage for the exclusive lock of an environment.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvironmentLock {
    pub id: i64,
    pub project_id: i64,
    pub environment: String,
    pub run_id: i64,
    pub stage: String,
    /// The stage's attempt (the highest attempt of its jobs): a rerun of the stage asks again.
    pub attempt: i64,
    /// `runLatest` or `sequential`.
    pub behavior: String,
    pub timeout_minutes: i64,
    /// `waiting`, `held`, `released`, `canceled`, `withdrawn` or `timedOut`.
    pub status: String,
    /// Why a request ended without the lock (canceled, timed out).
    pub reason: String,
    pub requested_at: i64,
    pub granted_at: Option<i64>,
    pub ended_at: Option<i64>,
}

/// What asking for an environment's lock gave: the request as it stands, the holder when another
/// run holds it, and the runs whose requests changed (granted, canceled, timed out) on the way.
#[derive(Clone, Debug, PartialEq)]
pub struct LockOutcome {
    pub request: EnvironmentLock,
    pub holder: Option<EnvironmentLock>,
    /// How many requests are ahead of this one in the queue.
    pub ahead: usize,
    pub changed_runs: Vec<i64>,
}

/// A request for an environment's lock, as [`crate::Storage::request_lock`] takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewLockRequest<'a> {
    pub project_id: i64,
    pub environment: &'a str,
    pub run_id: i64,
    pub stage: &'a str,
    pub attempt: i64,
    pub behavior: &'a str,
    pub timeout_minutes: i64,
}

/// One decision on an approval: the audit trail.
#[derive(Clone, Debug, PartialEq)]
pub struct ApprovalDecision {
    pub user: String,
    pub approve: bool,
    pub comment: String,
    pub decided_at: i64,
}

/// An approval a run's stage waits for, with the check as it was when it was asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct Approval {
    pub id: i64,
    pub run_id: i64,
    pub stage: String,
    pub environment: String,
    pub check_id: i64,
    pub approvers: Vec<String>,
    pub min_approvals: i64,
    pub allow_requester: bool,
    pub instructions: String,
    pub timeout_minutes: i64,
    pub in_sequence: bool,
    /// The stage attempt it was asked for.
    pub attempt: i64,
    /// `pending`, `approved`, `rejected` or `timedOut`.
    pub status: String,
    pub requested_at: i64,
    pub decided_at: Option<i64>,
    pub decisions: Vec<ApprovalDecision>,
}
