//! The records the store reads and writes, each mapped by hand from its row.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::{FromSqliteRow, StoreResult};

/// A user account.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub password_hash: String,
    pub is_admin: bool,
    pub created_at: i64,
}

impl FromSqliteRow for User {
    fn from_row(row: &SqliteRow) -> StoreResult<Self> {
        Ok(User {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            password_hash: row.try_get("password_hash")?,
            is_admin: row.try_get("is_admin")?,
            created_at: row.try_get("created_at")?,
        })
    }
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

impl FromSqliteRow for AccessToken {
    fn from_row(row: &SqliteRow) -> StoreResult<Self> {
        Ok(AccessToken {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            name: row.try_get("name")?,
            scopes: row.try_get("scopes")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// A project: the unit of access control.
#[derive(Clone, Debug, PartialEq)]
pub struct Project {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
}

impl FromSqliteRow for Project {
    fn from_row(row: &SqliteRow) -> StoreResult<Self> {
        Ok(Project {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// A Git repository hosted by the server.
#[derive(Clone, Debug, PartialEq)]
pub struct Repository {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
    pub created_at: i64,
}

impl FromSqliteRow for Repository {
    fn from_row(row: &SqliteRow) -> StoreResult<Self> {
        Ok(Repository {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            name: row.try_get("name")?,
            created_at: row.try_get("created_at")?,
        })
    }
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

impl FromSqliteRow for Pipeline {
    fn from_row(row: &SqliteRow) -> StoreResult<Self> {
        Ok(Pipeline {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            repository_id: row.try_get("repository_id")?,
            name: row.try_get("name")?,
            yaml_path: row.try_get("yaml_path")?,
            created_at: row.try_get("created_at")?,
        })
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

impl FromSqliteRow for Run {
    fn from_row(row: &SqliteRow) -> StoreResult<Self> {
        Ok(Run {
            id: row.try_get("id")?,
            pipeline_id: row.try_get("pipeline_id")?,
            pipeline_name: row.try_get("pipeline_name")?,
            project_id: row.try_get("project_id")?,
            number: row.try_get("number")?,
            name: row.try_get("name")?,
            title: row.try_get("title")?,
            status: row.try_get("status")?,
            result: row.try_get("result")?,
            reason: row.try_get("reason")?,
            source_branch: row.try_get("source_branch")?,
            source_commit: row.try_get("source_commit")?,
            requested_by: row.try_get("requested_by")?,
            yaml: row.try_get("yaml")?,
            diagnostics: row.try_get("diagnostics")?,
            parameters: row.try_get("parameters")?,
            queued_at: row.try_get("queued_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }
}

/// A job of a run; `spec` is the compiled job as JSON, `depends_on` a JSON list of job ids.
#[derive(Clone, Debug, PartialEq)]
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
}

impl FromSqliteRow for Job {
    fn from_row(row: &SqliteRow) -> StoreResult<Self> {
        Ok(Job {
            id: row.try_get("id")?,
            run_id: row.try_get("run_id")?,
            stage_name: row.try_get("stage_name")?,
            name: row.try_get("name")?,
            display_name: row.try_get("display_name")?,
            depends_on: row.try_get("depends_on")?,
            spec: row.try_get("spec")?,
            status: row.try_get("status")?,
            result: row.try_get("result")?,
            attempt: row.try_get("attempt")?,
            agent_name: row.try_get("agent_name")?,
            lease_expires_at: row.try_get("lease_expires_at")?,
            cancel_requested: row.try_get("cancel_requested")?,
            queued_at: row.try_get("queued_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            outputs: row.try_get("outputs")?,
        })
    }
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

impl FromSqliteRow for Step {
    fn from_row(row: &SqliteRow) -> StoreResult<Self> {
        Ok(Step {
            job_id: row.try_get("job_id")?,
            position: row.try_get("position")?,
            name: row.try_get("name")?,
            status: row.try_get("status")?,
            result: row.try_get("result")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }
}

/// A compressed chunk of a job's log lines.
#[derive(Clone, Debug, PartialEq)]
pub struct LogChunk {
    pub job_id: i64,
    pub sequence: i64,
    pub first_line: i64,
    pub line_count: i64,
    pub compressed: Vec<u8>,
}

impl FromSqliteRow for LogChunk {
    fn from_row(row: &SqliteRow) -> StoreResult<Self> {
        Ok(LogChunk {
            job_id: row.try_get("job_id")?,
            sequence: row.try_get("sequence")?,
            first_line: row.try_get("first_line")?,
            line_count: row.try_get("line_count")?,
            compressed: row.try_get("compressed")?,
        })
    }
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

impl FromSqliteRow for ArtifactFile {
    fn from_row(row: &SqliteRow) -> StoreResult<Self> {
        Ok(ArtifactFile {
            id: row.try_get("id")?,
            run_id: row.try_get("run_id")?,
            job_id: row.try_get("job_id")?,
            name: row.try_get("name")?,
            file_path: row.try_get("file_path")?,
            size: row.try_get("size")?,
            digest: row.try_get("digest")?,
            created_at: row.try_get("created_at")?,
        })
    }
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

impl FromSqliteRow for TestResult {
    fn from_row(row: &SqliteRow) -> StoreResult<Self> {
        Ok(TestResult {
            run_id: row.try_get("run_id")?,
            job_id: row.try_get("job_id")?,
            suite: row.try_get("suite")?,
            name: row.try_get("name")?,
            outcome: row.try_get("outcome")?,
            duration_ms: row.try_get("duration_ms")?,
            message: row.try_get("message")?,
        })
    }
}

/// A registered agent.
#[derive(Clone, Debug, PartialEq)]
pub struct Agent {
    pub id: i64,
    pub name: String,
    pub last_seen_at: Option<i64>,
    pub created_at: i64,
}

impl FromSqliteRow for Agent {
    fn from_row(row: &SqliteRow) -> StoreResult<Self> {
        Ok(Agent {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            last_seen_at: row.try_get("last_seen_at")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// A user's session (cookie), with the CSRF token its forms must carry.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    pub user: User,
    pub csrf_token: String,
    pub expires_at: i64,
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
