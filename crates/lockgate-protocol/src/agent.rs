//! Messages between an agent and the server (see docs/dev/agent-protocol.md). An agent authenticates
//! with `Authorization: Bearer <agent token>`; every job-scoped request also carries the lease token
//! in the [`LEASE_HEADER`] header, so a job can only be reported on by the agent that leased it.

use serde::{Deserialize, Serialize};

/// Path prefix of the agent endpoints on the server.
pub const AGENT_API: &str = "/api/v1/agent";
/// Header carrying the lease token on job-scoped requests.
pub const LEASE_HEADER: &str = "lockgate-lease";
/// Longest long-poll a lease request may ask for.
pub const MAX_LEASE_WAIT_SECONDS: u32 = 30;

/// `POST /api/v1/agent/lease`: asks for a job, waiting up to `wait_seconds` for one to be queued.
/// The reply is `200` with a [`JobLease`] or `204 No Content` when nothing was queued in time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRequest {
    pub wait_seconds: u32,
    /// The agent's `Agent.OS` (`Linux`, `Windows_NT`, `Darwin`): it is offered only jobs whose pool asks
    /// for that OS or for none. Absent (older agents): the server's own OS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
}

/// A job handed to an agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobLease {
    pub job_id: i64,
    pub run_id: i64,
    /// Secret proof of the lease; send it back in [`LEASE_HEADER`].
    pub lease_token: String,
    /// Send a heartbeat at least this often or the job fails when the lease runs out.
    pub heartbeat_seconds: u32,
    /// How long a lease lasts without a heartbeat.
    pub lease_seconds: u32,
    pub attempt: i64,
    /// The stage the job belongs to (its name in the plan).
    pub stage_name: String,
    /// The stage's `displayName` (`System.StageDisplayName`); older servers send none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_display_name: Option<String>,
    /// The compiled job: a `lockgate_pipeline::plan::Job` as JSON.
    pub job: serde_json::Value,
    /// The compiled pipeline-level and stage-level variables (`lockgate_pipeline::plan::Variable` list).
    pub variables: serde_json::Value,
    /// Predefined variables the server knows (`Build.BuildId`, `Build.SourceBranch`, …), in order.
    pub predefined: Vec<(String, String)>,
    /// Variables defined on the pipeline (not in YAML), with any queue-time values applied. They rank
    /// below the predefined and the YAML variables. Absent from older servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pipeline_variables: Vec<LeaseVariable>,
    /// Where the source code comes from.
    pub source: SourceCheckout,
    /// Task packages uploaded to the server (`lockgate tasks upload`) that the job's `task:` steps name:
    /// the agent downloads each into its task cache before the job starts. Absent from older servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<LeaseTask>,
    /// Values the agent masks like secrets in everything the job reports: the `issecret` outputs
    /// of the run's other jobs (they may reach this job through `$[ dependencies... ]`). Absent
    /// from older servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_values: Vec<String>,
    /// The variables of the variable groups the job's `variables` name (`- group: NAME`), by
    /// name: the agent puts them in place of the group's entry.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub variable_groups: std::collections::BTreeMap<String, Vec<LeaseVariable>>,
    /// The secure files the job's steps name (`DownloadSecureFile@1`): the agent fetches each
    /// before the job starts and removes it when the job ends. Absent from older servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secure_files: Vec<LeaseSecureFile>,
}

/// A secure file a leased job may download. `GET {download_path}` (agent token and lease header)
/// answers with its content, whose blake3 digest is `digest`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseSecureFile {
    pub name: String,
    pub size: u64,
    pub digest: String,
    pub download_path: String,
}

/// A task package a leased job needs. `GET {download_path}` (agent token and lease header) answers with
/// the package zip, whose blake3 digest is `digest`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseTask {
    pub id: String,
    pub name: String,
    /// `Major.Minor.Patch`.
    pub version: String,
    pub digest: String,
    pub download_path: String,
}

/// A variable the job starts with, beyond the compiled plan's.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseVariable {
    pub name: String,
    pub value: String,
    /// The runner masks the value in logs and does not export it to the environment.
    #[serde(default)]
    pub secret: bool,
    /// Steps cannot change it (queue-time variables are read-only in Azure Pipelines).
    #[serde(default)]
    pub readonly: bool,
}

impl std::fmt::Debug for LeaseVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseVariable")
            .field("name", &self.name)
            .field("value", &if self.secret { "***" } else { &self.value })
            .field("secret", &self.secret)
            .field("readonly", &self.readonly)
            .finish()
    }
}

/// The commit a job checks out, fetched over smart HTTP with the agent's own token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceCheckout {
    /// Clone URL of the repository on the server (`http://host/git/project/repo.git`).
    pub clone_url: String,
    pub commit: String,
    /// Full ref name (`refs/heads/main`).
    pub branch: String,
}

/// `POST /api/v1/agent/jobs/{job}/heartbeat`: keeps the lease alive.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatReply {
    /// The run was canceled: stop the job and finish it as `canceled`.
    pub cancel_requested: bool,
}

/// `POST /api/v1/agent/jobs/{job}/events`: what happened since the last batch, in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventBatch {
    pub events: Vec<JobEvent>,
}

/// One thing that happened in a leased job. Texts are already masked by the runner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum JobEvent {
    #[serde(rename_all = "camelCase")]
    StepStarted { step: u32, display_name: String },
    #[serde(rename_all = "camelCase")]
    StepFinished {
        step: u32,
        display_name: String,
        result: String,
    },
    /// Log lines of a step (or of the job itself when `step` is absent), with any `##[group]`,
    /// `##[endgroup]`, `##[warning]`, `##[error]` markers kept in the text.
    #[serde(rename_all = "camelCase")]
    Log {
        step: Option<u32>,
        lines: Vec<String>,
    },
    /// Test cases published by a step.
    #[serde(rename_all = "camelCase")]
    TestResults { cases: Vec<TestCase> },
}

/// One published test case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestCase {
    pub suite: String,
    pub name: String,
    /// `passed`, `failed` or `skipped`.
    pub outcome: String,
    pub duration_ms: i64,
    pub message: String,
}

/// `PUT /api/v1/agent/jobs/{job}/artifacts/{name}?path=relative/file`: the body is the file's bytes.
/// One request per file; the server stores it by digest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactFileQuery {
    pub path: String,
}

/// `GET /api/v1/agent/jobs/{job}/artifact-files`: the artifact files published so far by other jobs of
/// the run (a list of `api::ArtifactFile`); `GET /api/v1/agent/jobs/{job}/artifact-files/{file}`
/// downloads one. The agent fetches them before the job starts so `download` steps find them.
pub const RUN_ARTIFACT_FILES: &str = "artifact-files";

/// `POST /api/v1/agent/jobs/{job}/finish`: the job's result and output variables; the lease ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinishJob {
    /// `succeeded`, `succeededWithIssues`, `failed`, `canceled` or `skipped`.
    pub result: String,
    /// Output variables (`task.setvariable ...;isOutput=true`) by `step.var`; later jobs and stages
    /// read them as `dependencies.<job>.outputs['step.var']`. Absent from older agents.
    #[serde(default)]
    pub outputs: std::collections::BTreeMap<String, String>,
    /// The keys of `outputs` set with `issecret=true`: the server stores them encrypted and masks
    /// them in later jobs. Absent from older agents (then only values holding one of the job's
    /// secrets are treated so).
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub secret_outputs: std::collections::BTreeSet<String>,
}

/// `POST /api/v1/agent/register` (no agent token yet): trades a one-time registration token, which a
/// server or project administrator created for a pool, for this agent's own token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterAgent {
    /// The registration token (`lgr_...`).
    pub token: String,
    /// The agent's name: letters, digits, `-`, `_` and `.`, unique on the server.
    pub name: String,
    /// The pool the agent means to join; it must be the token's. Empty for a target of an
    /// environment.
    #[serde(default)]
    pub pool: String,
    /// The environment the agent becomes a target (a virtual machine resource) of; the token must
    /// be one an administrator of its project created for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// A target's tags (`environment: {tags: ...}` in a deployment job picks targets by them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// The answer to [`RegisterAgent`]: the agent token, shown once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredAgent {
    pub name: String,
    pub pool: String,
    /// The project whose pool it is; absent for a pool of the whole server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The environment it is a target of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The agent token (`lga_...`).
    pub token: String,
}

/// `PUT /api/v1/agent/info`: what the agent says about itself when it starts (and after it
/// reconnects): its version and its capabilities, which the demands of jobs are matched against.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    pub version: String,
    /// System capabilities (`Agent.OS`, `Agent.OSArchitecture`, `Agent.Version`, tools found on
    /// `PATH`) and the user capabilities given at registration (`--capability k=v`), by name.
    pub capabilities: std::collections::BTreeMap<String, String>,
}
