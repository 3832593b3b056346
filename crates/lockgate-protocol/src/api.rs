//! Shapes of the public REST API under `/api/v1` (requests and responses), shared by the server and
//! the `lockgate` CLI. Every error is an [`ErrorBody`].

use serde::{Deserialize, Serialize};

/// The one JSON shape of every error response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code: `unauthorized`, `forbidden`, `not-found`, `bad-request`,
    /// `conflict`, `payload-too-large`, `internal`.
    pub code: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    pub id: i64,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateProject {
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Repository {
    pub id: i64,
    pub project: String,
    pub name: String,
    pub clone_url: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRepository {
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pipeline {
    pub id: i64,
    pub project: String,
    pub name: String,
    pub repository: String,
    pub yaml_path: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatePipeline {
    pub name: String,
    pub repository: String,
    #[serde(default = "default_yaml_path")]
    pub yaml_path: String,
}

fn default_yaml_path() -> String {
    "azure-pipelines.yml".into()
}

/// `POST /api/v1/pipelines/{id}/runs`: queue a run by hand.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueRun {
    /// Branch name or full ref; default: the repository's default branch (`main`).
    #[serde(default)]
    pub branch: Option<String>,
    /// Runtime parameter values by name.
    #[serde(default)]
    pub parameters: Vec<(String, String)>,
    /// Values for the pipeline's variables that users may override at queue time (defined with
    /// `allowOverride`), by name. Naming any other variable is a `400` that lists them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub variables: std::collections::BTreeMap<String, String>,
}

/// A variable defined on the pipeline itself (Azure Pipelines: the pipeline editor's **Variables**).
/// YAML variables of the same name take precedence over it; a queue-time value replaces its value.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineVariable {
    pub name: String,
    /// The value. Always `null` for a secret in responses; in a `PUT`, `null` on a secret keeps the
    /// value stored for that name.
    #[serde(default)]
    pub value: Option<String>,
    /// Masked in logs, never returned, not exported to scripts' environments unless mapped.
    #[serde(default)]
    pub secret: bool,
    /// "Let users override this value when running this pipeline": settable at queue time.
    #[serde(default)]
    pub allow_override: bool,
}

impl std::fmt::Debug for PipelineVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineVariable")
            .field("name", &self.name)
            .field(
                "value",
                &if self.secret {
                    self.value.as_ref().map(|_| "***")
                } else {
                    self.value.as_deref()
                },
            )
            .field("secret", &self.secret)
            .field("allow_override", &self.allow_override)
            .finish()
    }
}

/// `GET`/`PUT /api/v1/pipelines/{id}/variables`: every variable of a pipeline (a `PUT` replaces them
/// all).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineVariables {
    pub variables: Vec<PipelineVariable>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub id: i64,
    pub pipeline_id: i64,
    pub pipeline: String,
    pub number: i64,
    /// The run name built from the pipeline's `name:` (the build number).
    pub name: String,
    /// The commit subject shown after the name (`appendCommitMessageToRunName`); empty when off.
    #[serde(default)]
    pub title: String,
    /// `queued`, `running` or `completed`.
    pub status: String,
    /// When completed: `succeeded`, `partiallySucceeded`, `failed` or `canceled`. A canceled run
    /// shows `canceled` at once, while the jobs that run after a cancel (`always()`) finish.
    pub result: Option<String>,
    /// `push`, `manual` or `rerun`.
    pub reason: String,
    pub source_branch: String,
    pub source_commit: String,
    pub requested_by: String,
    pub queued_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: Run,
    pub jobs: Vec<Job>,
    /// Compiler diagnostics (as the compiler serialises them); a run with errors has no jobs.
    pub diagnostics: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: i64,
    pub stage: String,
    pub name: String,
    pub display_name: String,
    /// `pending`, `queued`, `running` or `completed`.
    pub status: String,
    pub result: Option<String>,
    pub attempt: i64,
    pub agent: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub steps: Vec<Step>,
    /// Why a queued job has not started, when the server can tell (no agent matches its pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub position: i64,
    pub name: String,
    pub status: String,
    pub result: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactFile {
    pub id: i64,
    pub artifact: String,
    pub path: String,
    pub size: i64,
    pub download_url: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    pub suite: String,
    pub name: String,
    pub outcome: String,
    pub duration_ms: i64,
    pub message: String,
}

/// `POST /api/v1/tokens`: create a personal access token; the secret is shown once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateToken {
    pub name: String,
    /// Any of `read`, `write`, `admin`; default `read` and `write`.
    #[serde(default)]
    pub scopes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedToken {
    pub id: i64,
    pub name: String,
    pub scopes: Vec<String>,
    pub token: String,
}

/// A task package stored on the server (`POST /api/v1/tasks`, `GET /api/v1/tasks`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskPackageInfo {
    pub id: String,
    pub name: String,
    /// `Major.Minor.Patch`.
    pub version: String,
    /// blake3 of the package zip.
    pub digest: String,
    pub size: u64,
}

/// An environment's approval check (`PUT /api/v1/projects/{p}/environments/{e}/checks/approval`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalCheck {
    /// User names, or groups (`group:administrators`, `group:contributors`, `group:readers`: any
    /// one user with that role in the project approves for the group); any `minApprovals` of
    /// them approve.
    pub approvers: Vec<String>,
    #[serde(default = "one")]
    pub min_approvals: i64,
    /// The user who queued the run may approve it too (off by default, as in Azure Pipelines).
    #[serde(default)]
    pub allow_requester: bool,
    #[serde(default)]
    pub instructions: String,
    /// How long a stage waits before the approval is rejected (default one day, 1440 minutes, as
    /// Azure's approval check; at most 30 days).
    #[serde(default = "one_day")]
    pub timeout_minutes: i64,
    /// Every approver approves, in the order listed (Azure's "Approval order: In sequence");
    /// `minApprovals` is then the number of approvers.
    #[serde(default)]
    pub in_sequence: bool,
}

fn one() -> i64 {
    1
}

fn one_day() -> i64 {
    24 * 60
}

/// One decision on an approval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalDecision {
    pub user: String,
    /// `approve` or `reject`.
    pub decision: String,
    pub comment: String,
    pub at: i64,
}

/// An approval a stage of a run waits for (`GET /api/v1/runs/{id}/approvals`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    pub id: i64,
    pub stage: String,
    /// The key of the resource whose check asked for it: an environment's name, or `type:name`
    /// for another resource (`variablegroup:Secrets`); `resourceType` and `resource` split it.
    pub environment: String,
    /// Azure's resource type: `environment`, `variablegroup`, `securefile`, `endpoint` or `queue`.
    #[serde(default = "environment_type")]
    pub resource_type: String,
    /// The resource's name.
    #[serde(default)]
    pub resource: String,
    /// `pending`, `approved`, `rejected` or `timedOut`.
    pub status: String,
    pub approvers: Vec<String>,
    pub min_approvals: i64,
    pub allow_requester: bool,
    pub instructions: String,
    pub timeout_minutes: i64,
    #[serde(default)]
    pub in_sequence: bool,
    /// The stage attempt it was asked for (a rerun or a redeploy of the stage asks again).
    #[serde(default = "first_attempt")]
    pub attempt: i64,
    pub requested_at: i64,
    pub decided_at: Option<i64>,
    pub decisions: Vec<ApprovalDecision>,
}

fn first_attempt() -> i64 {
    1
}

fn environment_type() -> String {
    "environment".into()
}

/// Approve or reject the pending approvals of a run (`POST /api/v1/runs/{id}/approvals`), those
/// of one stage or of one environment when given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecideApprovals {
    /// `approve` or `reject`.
    pub decision: String,
    #[serde(default)]
    pub stage: Option<String>,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub comment: String,
}

/// Branch control on an environment
/// (`PUT /api/v1/projects/{p}/environments/{e}/checks/branch-control`): only runs of these
/// branches may deploy there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BranchControl {
    /// Full refs (`refs/heads/main`) or branch names, a trailing `*` matching any rest
    /// (`refs/heads/release/*`); `*` alone allows every branch.
    pub allowed_branches: Vec<String>,
}

/// Business hours on an environment
/// (`PUT /api/v1/projects/{p}/environments/{e}/checks/business-hours`): a deployment waits until
/// the time is within the window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BusinessHours {
    /// `Mon` … `Sun`.
    pub days: Vec<String>,
    /// `HH:MM`, inclusive.
    pub start: String,
    /// `HH:MM`, exclusive; after `start`.
    pub end: String,
    /// The time zone as an offset from UTC, `+01:00` or `-05:30` (default `+00:00`).
    #[serde(default = "utc")]
    pub utc_offset: String,
}

fn utc() -> String {
    "+00:00".into()
}

/// A variable group of a project's library (`GET /api/v1/projects/{p}/variable-groups/{name}`):
/// secret values are never returned (`value` is null).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VariableGroup {
    pub name: String,
    pub description: String,
    pub variables: Vec<PipelineVariable>,
    /// The pipelines authorized to use it, by id.
    pub pipelines: Vec<i64>,
    pub created_by: String,
    pub updated_at: i64,
}

/// `PUT /api/v1/projects/{p}/variable-groups/{name}`: creates or replaces a group (project
/// administrators). A secret sent with a null value keeps the value stored for that name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutVariableGroup {
    #[serde(default)]
    pub description: String,
    pub variables: Vec<PipelineVariable>,
}

/// A service connection of a project (`GET /api/v1/projects/{p}/service-connections/{name}`):
/// its kind and fields; secret fields are never returned (null).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceConnection {
    pub name: String,
    /// `generic`, `powerPlatformSPN`, `ssh` or `azureRM`.
    pub kind: String,
    pub description: String,
    pub fields: std::collections::BTreeMap<String, Option<String>>,
    /// The pipelines authorized to use it, by id.
    pub pipelines: Vec<i64>,
    pub created_by: String,
    pub updated_at: i64,
}

/// A secure file of a project's library (`GET /api/v1/projects/{p}/secure-files`): never its
/// content, which only the jobs of authorized pipelines receive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecureFile {
    pub name: String,
    pub description: String,
    /// Bytes.
    pub size: u64,
    /// blake3 of the content, hex.
    pub digest: String,
    /// The pipelines authorized to use it, by id.
    pub pipelines: Vec<i64>,
    pub created_by: String,
    pub updated_at: i64,
}

/// `PUT /api/v1/projects/{p}/service-connections/{name}` (project administrators): a secret field
/// sent as null keeps the value stored for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutServiceConnection {
    pub kind: String,
    #[serde(default)]
    pub description: String,
    pub fields: std::collections::BTreeMap<String, Option<String>>,
}

/// One use of a service connection by a job (`GET .../service-connections/{name}/usage`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionUse {
    pub run_id: i64,
    pub job_id: i64,
    pub attempt: i64,
    pub used_at: i64,
}

/// The required-template check of an environment
/// (`PUT /api/v1/projects/{p}/environments/{e}/checks/required-template`): only runs whose YAML
/// `extends` one of these templates may deploy there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequiredTemplate {
    /// `path` (in the pipeline's repository) or `path@alias` (a repository resource), as
    /// `extends: template:` names it.
    pub templates: Vec<String>,
}

/// The invoke-REST-API check of an environment
/// (`PUT /api/v1/projects/{p}/environments/{e}/checks/rest-api`): a stage deploying there waits
/// until a call to `url` passes (a 2xx answer whose JSON makes `successCriteria` true), asked
/// again every `retryIntervalMinutes`, failing after `timeoutMinutes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestApiCheck {
    #[serde(default = "get_method")]
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Headers with secret values (a token): stored encrypted, never returned (null); a null
    /// value in a `PUT` keeps the stored one.
    #[serde(default)]
    pub secret_headers: std::collections::BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub body: Option<String>,
    /// An expression over the JSON answer as `root`, e.g. `eq(root['status'], 'healthy')`.
    #[serde(default)]
    pub success_criteria: Option<String>,
    /// Minutes between evaluations (default 5, as Azure's "Time between evaluations").
    #[serde(default = "five")]
    pub retry_interval_minutes: f64,
    /// Minutes before the check fails (default 1440).
    #[serde(default = "one_day")]
    pub timeout_minutes: i64,
}

fn get_method() -> String {
    "GET".into()
}

fn five() -> f64 {
    5.0
}

/// The exclusive lock of an environment
/// (`PUT /api/v1/projects/{p}/environments/{e}/checks/exclusive-lock`): one stage at a time
/// deploys there; the stages' `lockBehavior` (`runLatest`, the default, or `sequential`) says what
/// happens to those that wait.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExclusiveLock {
    /// How long a stage waits for the lock before it fails (default 43,200 minutes, 30 days, as
    /// Azure's check).
    #[serde(default = "thirty_days")]
    pub timeout_minutes: i64,
}

fn thirty_days() -> i64 {
    43_200
}

/// A request of a run's stage for an environment's exclusive lock
/// (`GET /api/v1/runs/{id}/locks`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentLock {
    pub environment: String,
    pub stage: String,
    /// `runLatest` or `sequential`.
    pub behavior: String,
    /// `waiting`, `held`, `released`, `canceled`, `withdrawn` or `timedOut`.
    pub status: String,
    /// Why it ended without the lock.
    pub reason: String,
    pub requested_at: i64,
    pub granted_at: Option<i64>,
    pub ended_at: Option<i64>,
}

/// An environment of a project: `GET /api/v1/projects/{p}/environments` lists them with their newest
/// successful deployment; `GET .../environments/{name}` adds the owners and the newest deployments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    pub id: i64,
    pub project: String,
    pub name: String,
    pub description: String,
    pub created_at: i64,
    /// Who created it (the requester of the run that first deployed to it, or the API caller).
    pub created_by: String,
    /// Users who may change it (with the project's administrators).
    #[serde(default)]
    pub owners: Vec<String>,
    /// The newest deployment that succeeded.
    pub latest_deployment: Option<Deployment>,
    /// The newest deployments of any result, newest first (only on `GET .../environments/{name}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<Deployment>,
    /// Its virtual machine resources (agents registered as its targets), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<EnvironmentResource>,
}

/// `POST /api/v1/projects/{p}/environments`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateEnvironment {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// `PATCH /api/v1/projects/{p}/environments/{name}`: what is given changes; `owners` replaces the
/// whole list.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateEnvironment {
    pub description: Option<String>,
    pub owners: Option<Vec<String>>,
}

/// One entry of an environment's deployment ledger: a deployment job's attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub id: i64,
    pub environment: String,
    pub run_id: i64,
    pub run_name: String,
    pub run_number: i64,
    pub pipeline_id: i64,
    pub pipeline: String,
    pub stage: String,
    pub job: String,
    pub attempt: i64,
    /// The environment resource (`environment: name.resource` or `resourceName`).
    pub resource: Option<String>,
    pub commit: String,
    pub branch: String,
    /// The artifacts the run had published when the deployment started.
    pub artifacts: Vec<DeployedArtifact>,
    /// The job's variables when it started; secret values are `***`.
    pub variables: std::collections::BTreeMap<String, String>,
    pub requested_by: String,
    /// `running` or `completed`.
    pub status: String,
    /// The deployment job's result once completed: `succeeded`, `succeededWithIssues`, `failed`,
    /// `canceled`.
    pub result: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// An artifact as a deployment saw it: its name, its file count and size, and one digest over its
/// files (blake3 of each `path`, NUL, file digest, newline, by path), equal for equal contents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployedArtifact {
    pub name: String,
    pub digest: String,
    pub files: i64,
    pub size: i64,
}

/// "What is where": `GET /api/v1/pipelines/{id}/environments`, one entry per environment the
/// pipeline deployed to successfully.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployedVersion {
    pub environment: String,
    /// The pipeline's newest successful deployment to it.
    pub deployment: Deployment,
    /// How many successful runs of the pipeline on the deployment's branch are newer than the one
    /// deployed.
    pub behind: i64,
}

/// What promoting one environment's deployment to another would change
/// (`GET /api/v1/pipelines/{id}/environments/diff?from=test&to=prod`): from the version `to` runs
/// now to the version `from` runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentDiff {
    pub from: Deployment,
    pub to: Deployment,
    /// Commits in `from`'s version that `to`'s does not have, newest first: `sha subject`.
    pub commits: Vec<String>,
    /// Files changed between the two versions: `M path`, `A path`, `D path`, ...
    pub files: Vec<String>,
    /// Artifacts by name whose digest differs, or that only one side has.
    pub artifacts: Vec<ArtifactChange>,
    /// Variables whose value differs, or that only one side has (secret values are `***`).
    pub variables: Vec<VariableChange>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactChange {
    pub name: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VariableChange {
    pub name: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// `POST /api/v1/agents/registrations`: a one-time token that registers one agent in a pool.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateAgentRegistration {
    /// The pool; empty (or absent) with `environment`.
    #[serde(default)]
    pub pool: String,
    /// A token for a target of this environment of `project` instead of a pool's agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// A pool of this project (its administrators may create the token); absent: a pool of the
    /// whole server (server administrators only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// How long the token can be used; default 60, at most 10080 (a week).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_minutes: Option<u32>,
}

/// A created registration token, shown once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRegistration {
    /// `lgr_...`, for `lockgate agent register --token`.
    pub token: String,
    pub pool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    pub expires_at: i64,
}

/// An agent as `GET /api/v1/agents` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSummary {
    pub name: String,
    pub pool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// `online` (seen within the last lease period), `offline` or `disabled`.
    pub state: String,
    pub enabled: bool,
    /// One of the server's own agents.
    pub builtin: bool,
    pub last_seen_at: Option<i64>,
    /// The job it runs now, and that job's run.
    pub current_job: Option<i64>,
    pub current_run: Option<i64>,
    pub version: Option<String>,
    pub capabilities: std::collections::BTreeMap<String, String>,
    /// The environment it is a target of (then `pool` is that environment's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// A resource of an environment: an agent registered as its target (`resourceType`
/// `VirtualMachine`), with its tags and state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentResource {
    pub name: String,
    /// `VirtualMachine`.
    pub resource_type: String,
    pub tags: Vec<String>,
    /// `online`, `offline` or `disabled`, as for agents.
    pub state: String,
    pub last_seen_at: Option<i64>,
    /// The job it runs now.
    pub current_job: Option<i64>,
}
