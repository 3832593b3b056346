//! What the SQL backends share: every statement that reads the same on SQLite and PostgreSQL, written
//! once in [`sql_storage!`] and expanded for each backend's pool and row type, the hand-written
//! mapping from rows to records, and the [`Dialect`] each backend fills in where the two differ
//! (leasing, row locks, purging). Names that ignore case (environments) compare as SQLite's
//! `NOCASE` does, ASCII letters only, on both backends: the column's `lower()` (ASCII only on SQLite,
//! and on PostgreSQL too, where those columns use the "C" collation) against the value lowered with
//! `to_ascii_lowercase` before it is bound.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::{StoreError, StoreResult};

/// The statements in which the backends differ. Each is a static string with `$n` placeholders.
pub(crate) trait Dialect {
    /// `lease_next_job`: binds agent name, lease token hash, lease expiry, now and agent OS, and
    /// returns the leased job row, or no row when nothing is queued for that OS.
    const LEASE_NEXT_JOB: &'static str;
    /// Run inside `create_run`'s transaction before the run is numbered, binding the pipeline id.
    const LOCK_PIPELINE: Option<&'static str>;
    /// Run inside `append_log_chunk`'s transaction before the chunk is numbered, binding the job id.
    const LOCK_JOB: Option<&'static str>;
    /// Run first in `request_lock`'s transaction, binding the project id and the environment name in
    /// ASCII lower case, so that requests on one environment settle one after the other.
    const LOCK_ENVIRONMENT_QUEUE: Option<&'static str>;
    /// `purge_overwritten`, statement by statement.
    const PURGE_OVERWRITTEN: &'static [&'static str];
}

/// Hand-written mapping from a result row of backend row type `R` to a record.
pub(crate) trait FromDbRow<R>: Sized {
    fn from_row(row: &R) -> StoreResult<Self>;
}

/// The migrations of one backend, embedded in the binary (the sqlx `macros` feature is not used):
/// `(version, description, sql)` from `migrations/<own>/`, except those whose statements read the
/// same on both backends, which are kept once, in `migrations/<same>/`. Both backends have every
/// number.
macro_rules! migrations {
    (own: $own:literal, same: $same:literal) => {
        &[
            (1, "initial", migrations!(@file $own, "0001_initial")),
            (2, "job environments", migrations!(@file $own, "0002_job_environments")),
            (3, "run titles", migrations!(@file $same, "0003_run_titles")),
            (4, "job outputs", migrations!(@file $same, "0004_job_outputs")),
            (5, "pipeline variables", migrations!(@file $own, "0005_pipeline_variables")),
            (6, "job agent OS", migrations!(@file $same, "0006_job_agent_os")),
            (7, "settings", migrations!(@file $same, "0007_settings")),
            (8, "approvals", migrations!(@file $own, "0008_approvals")),
            (9, "built-in agents", migrations!(@file $own, "0009_agent_builtin")),
            (10, "environment checks", migrations!(@file $own, "0010_environment_checks")),
            (11, "environments and deployments", migrations!(@file $own, "0011_environments")),
            (
                12,
                "stage starts and environment locks",
                migrations!(@file $own, "0012_stage_starts_and_locks"),
            ),
            (13, "approval attempts", migrations!(@file $own, "0013_approval_attempts")),
            (14, "variable groups", migrations!(@file $own, "0014_variable_groups")),
            (15, "agent pools", migrations!(@file $own, "0015_agent_pools")),
            (16, "service connections", migrations!(@file $own, "0016_service_connections")),
            (17, "secure files", migrations!(@file $own, "0017_secure_files")),
            (18, "environment targets", migrations!(@file $own, "0018_environment_targets")),
            (19, "log objects", migrations!(@file $same, "0019_log_objects")),
        ]
    };
    (@file $dir:literal, $name:literal) => {
        include_str!(concat!("../migrations/", $dir, "/", $name, ".sql"))
    };
}

/// A migrator for `(version, description, sql)` triples.
pub(crate) fn migrator(migrations: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    sqlx::SqlSafeStr::into_sql_str(*sql),
                    false,
                )
            })
            .collect(),
    )
}

/// Maps a unique-constraint violation to an error naming what already exists.
pub(crate) fn exists_as(error: sqlx::Error, what: String) -> StoreError {
    match StoreError::from(error) {
        StoreError::AlreadyExists { .. } => StoreError::AlreadyExists { what },
        other => other,
    }
}

/// Approver names are stored one per line (user names hold no line breaks).
pub(crate) fn names_of(text: &str) -> Vec<String> {
    text.lines()
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}

/// A query for deployments with the names of their environment, run and pipeline: `$columns` are
/// selected before the deployment's, `$rest` follows the joins (a static string, no formatting).
macro_rules! deployments_query {
    ($columns:literal, $rest:literal) => {
        concat!(
            "SELECT ",
            $columns,
            " d.*, e.name AS environment, r.name AS run_name, r.number AS run_number, \
             p.name AS pipeline_name FROM deployments d \
             JOIN environments e ON e.id = d.environment_id JOIN runs r ON r.id = d.run_id \
             JOIN pipelines p ON p.id = d.pipeline_id ",
            $rest
        )
    };
}

/// The [`Storage`](crate::Storage) implementation and row mappings of a backend: `$store` is a
/// struct with a `pool` field that implements [`Dialect`], `$row` its driver's row type.
macro_rules! sql_storage {
    ($store:ty, $row:ty) => {
        const _: () = {
            use sqlx::Row;

            use $crate::sql::{Dialect, FromDbRow, exists_as, names_of};
            use $crate::{
                AccessToken, Agent, AgentInfo, AgentJob, Approval, ApprovalCheck, ApprovalDecision,
                ArtifactFile, DeployedVersion, Deployment, Environment, EnvironmentCheck,
                EnvironmentLock, Job, LockOutcome, LogArchive, LogChunk, NewAgentRegistration,
                NewApprovalCheck, NewArtifactFile, NewDeployment, NewJob, NewLockRequest, NewRun,
                Pipeline, PipelineVariable, Project, Repository, Run, RunFilter, Session,
                StageStart, Step, Storage, StoreError, StoreFuture, StoreResult, TestResult, User,
                VariableGroup, ServiceConnection, ConnectionUse, NewSecureFile, SecureFile, locks, now_millis,
            };

            impl $store {
            /// Registers an agent or replaces the token of the one with that name; `builtin` is stored as
            /// given, so a registration through the API turns a name into a remote agent's.
            async fn upsert_agent(
                &self,
                name: &str,
                token_hash: &str,
                builtin: bool,
            ) -> StoreResult<Agent> {
                let row = sqlx::query(
                    "INSERT INTO agents (name, token_hash, created_at, builtin) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash, \
                     builtin = excluded.builtin RETURNING *",
                )
                .bind(name)
                .bind(token_hash)
                .bind(now_millis())
                .bind(builtin)
                .fetch_one(&self.pool)
                .await?;
                Agent::from_row(&row)
            }
            }

        impl Storage for $store {
            fn schema_version(&self) -> StoreFuture<'_, i64> {
                Box::pin(async move {
                    let row = sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations")
                        .fetch_one(&self.pool)
                        .await?;
                    Ok(row.try_get::<Option<i64>, _>("v")?.unwrap_or(0))
                })
            }

            // ---- users and sessions ----

            fn create_user<'a>(
                &'a self,
                name: &'a str,
                password_hash: &'a str,
                is_admin: bool,
            ) -> StoreFuture<'a, User> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "INSERT INTO users (name, password_hash, is_admin, created_at) VALUES ($1, $2, $3, $4) RETURNING *",
                    )
                    .bind(name)
                    .bind(password_hash)
                    .bind(is_admin)
                    .bind(now_millis())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| exists_as(e, format!("user `{name}`")))?;
                    User::from_row(&row)
                })
            }

            fn user_by_name<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<User>> {
                Box::pin(async move {
                    let row = sqlx::query("SELECT * FROM users WHERE name = $1")
                        .bind(name)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.as_ref().map(User::from_row).transpose()
                })
            }

            fn user_by_id(&self, id: i64) -> StoreFuture<'_, Option<User>> {
                Box::pin(async move {
                    let row = sqlx::query("SELECT * FROM users WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.as_ref().map(User::from_row).transpose()
                })
            }

            fn count_users(&self) -> StoreFuture<'_, i64> {
                Box::pin(async move {
                    let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
                        .fetch_one(&self.pool)
                        .await?;
                    Ok(row.try_get("n")?)
                })
            }

            fn set_password_hash<'a>(
                &'a self,
                user_id: i64,
                password_hash: &'a str,
            ) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
                        .bind(user_id)
                        .bind(password_hash)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }

            fn create_session<'a>(
                &'a self,
                token_hash: &'a str,
                user_id: i64,
                csrf_token: &'a str,
                expires_at: i64,
            ) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    sqlx::query("INSERT INTO sessions (token_hash, user_id, csrf_token, expires_at) VALUES ($1, $2, $3, $4)")
                        .bind(token_hash)
                        .bind(user_id)
                        .bind(csrf_token)
                        .bind(expires_at)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }

            fn session<'a>(&'a self, token_hash: &'a str, now: i64) -> StoreFuture<'a, Option<Session>> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT u.*, s.csrf_token, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id \
                         WHERE s.token_hash = $1 AND s.expires_at > $2",
                    )
                    .bind(token_hash)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.map(|row| {
                        Ok(Session {
                            user: User::from_row(&row)?,
                            csrf_token: row.try_get("csrf_token")?,
                            expires_at: row.try_get("expires_at")?,
                        })
                    })
                    .transpose()
                })
            }

            fn delete_session<'a>(&'a self, token_hash: &'a str) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                        .bind(token_hash)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }

            // ---- personal access tokens ----

            fn create_access_token<'a>(
                &'a self,
                user_id: i64,
                name: &'a str,
                token_hash: &'a str,
                scopes: &'a str,
            ) -> StoreFuture<'a, AccessToken> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "INSERT INTO access_tokens (user_id, name, token_hash, scopes, created_at) \
                         VALUES ($1, $2, $3, $4, $5) RETURNING *",
                    )
                    .bind(user_id)
                    .bind(name)
                    .bind(token_hash)
                    .bind(scopes)
                    .bind(now_millis())
                    .fetch_one(&self.pool)
                    .await?;
                    AccessToken::from_row(&row)
                })
            }

            fn user_by_token_hash<'a>(
                &'a self,
                token_hash: &'a str,
            ) -> StoreFuture<'a, Option<(User, AccessToken)>> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT u.*, t.id AS token_id, t.name AS token_name, t.scopes, t.created_at AS token_created_at \
                         FROM access_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
                    )
                    .bind(token_hash)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.map(|row| {
                        let user = User::from_row(&row)?;
                        let token = AccessToken {
                            id: row.try_get("token_id")?,
                            user_id: user.id,
                            name: row.try_get("token_name")?,
                            scopes: row.try_get("scopes")?,
                            created_at: row.try_get("token_created_at")?,
                        };
                        Ok((user, token))
                    })
                    .transpose()
                })
            }

            fn list_access_tokens(&self, user_id: i64) -> StoreFuture<'_, Vec<AccessToken>> {
                Box::pin(async move {
                    let rows = sqlx::query("SELECT * FROM access_tokens WHERE user_id = $1 ORDER BY id")
                        .bind(user_id)
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(AccessToken::from_row).collect()
                })
            }

            // ---- projects and roles ----

            fn create_project<'a>(&'a self, name: &'a str, owner_id: i64) -> StoreFuture<'a, Project> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    let row =
                        sqlx::query("INSERT INTO projects (name, created_at) VALUES ($1, $2) RETURNING *")
                            .bind(name)
                            .bind(now_millis())
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(|e| exists_as(e, format!("project `{name}`")))?;
                    let project = Project::from_row(&row)?;
                    sqlx::query("INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, 'administrator')")
                        .bind(project.id)
                        .bind(owner_id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(project)
                })
            }

            fn project_by_name<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<Project>> {
                Box::pin(async move {
                    let row = sqlx::query("SELECT * FROM projects WHERE name = $1")
                        .bind(name)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.as_ref().map(Project::from_row).transpose()
                })
            }

            fn project_by_id(&self, id: i64) -> StoreFuture<'_, Option<Project>> {
                Box::pin(async move {
                    let row = sqlx::query("SELECT * FROM projects WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.as_ref().map(Project::from_row).transpose()
                })
            }

            fn list_projects(&self) -> StoreFuture<'_, Vec<Project>> {
                Box::pin(async move {
                    let rows = sqlx::query("SELECT * FROM projects ORDER BY name")
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(Project::from_row).collect()
                })
            }

            fn project_role(&self, project_id: i64, user_id: i64) -> StoreFuture<'_, Option<String>> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT role FROM project_members WHERE project_id = $1 AND user_id = $2",
                    )
                    .bind(project_id)
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(row.map(|r| r.try_get("role")).transpose()?)
                })
            }

            fn project_members(&self, project_id: i64) -> StoreFuture<'_, Vec<(String, String)>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT u.name, m.role FROM project_members m JOIN users u ON u.id = m.user_id \
                         WHERE m.project_id = $1 ORDER BY u.name",
                    )
                    .bind(project_id)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|row| Ok((row.try_get("name")?, row.try_get("role")?)))
                        .collect()
                })
            }

            fn set_project_role<'a>(
                &'a self,
                project_id: i64,
                user_id: i64,
                role: &'a str,
            ) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, $3) \
                         ON CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role",
                    )
                    .bind(project_id)
                    .bind(user_id)
                    .bind(role)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                })
            }

            // ---- repositories and pipelines ----

            fn create_repository<'a>(
                &'a self,
                project_id: i64,
                name: &'a str,
            ) -> StoreFuture<'a, Repository> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "INSERT INTO repositories (project_id, name, created_at) VALUES ($1, $2, $3) RETURNING *",
                    )
                    .bind(project_id)
                    .bind(name)
                    .bind(now_millis())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| exists_as(e, format!("repository `{name}`")))?;
                    Repository::from_row(&row)
                })
            }

            fn repository<'a>(
                &'a self,
                project_id: i64,
                name: &'a str,
            ) -> StoreFuture<'a, Option<Repository>> {
                Box::pin(async move {
                    let row = sqlx::query("SELECT * FROM repositories WHERE project_id = $1 AND name = $2")
                        .bind(project_id)
                        .bind(name)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.as_ref().map(Repository::from_row).transpose()
                })
            }

            fn repository_by_id(&self, id: i64) -> StoreFuture<'_, Option<Repository>> {
                Box::pin(async move {
                    let row = sqlx::query("SELECT * FROM repositories WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.as_ref().map(Repository::from_row).transpose()
                })
            }

            fn list_repositories(&self, project_id: i64) -> StoreFuture<'_, Vec<Repository>> {
                Box::pin(async move {
                    let rows =
                        sqlx::query("SELECT * FROM repositories WHERE project_id = $1 ORDER BY name")
                            .bind(project_id)
                            .fetch_all(&self.pool)
                            .await?;
                    rows.iter().map(Repository::from_row).collect()
                })
            }

            fn create_pipeline<'a>(
                &'a self,
                project_id: i64,
                repository_id: i64,
                name: &'a str,
                yaml_path: &'a str,
            ) -> StoreFuture<'a, Pipeline> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "INSERT INTO pipelines (project_id, repository_id, name, yaml_path, created_at) \
                         VALUES ($1, $2, $3, $4, $5) RETURNING *",
                    )
                    .bind(project_id)
                    .bind(repository_id)
                    .bind(name)
                    .bind(yaml_path)
                    .bind(now_millis())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| exists_as(e, format!("pipeline `{name}`")))?;
                    Pipeline::from_row(&row)
                })
            }

            fn pipeline_by_id(&self, id: i64) -> StoreFuture<'_, Option<Pipeline>> {
                Box::pin(async move {
                    let row = sqlx::query("SELECT * FROM pipelines WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.as_ref().map(Pipeline::from_row).transpose()
                })
            }

            fn list_pipelines(&self, project_id: i64) -> StoreFuture<'_, Vec<Pipeline>> {
                Box::pin(async move {
                    let rows = sqlx::query("SELECT * FROM pipelines WHERE project_id = $1 ORDER BY name")
                        .bind(project_id)
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(Pipeline::from_row).collect()
                })
            }

            fn pipelines_of_repository(&self, repository_id: i64) -> StoreFuture<'_, Vec<Pipeline>> {
                Box::pin(async move {
                    let rows = sqlx::query("SELECT * FROM pipelines WHERE repository_id = $1 ORDER BY id")
                        .bind(repository_id)
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(Pipeline::from_row).collect()
                })
            }

            fn pipeline_variables(&self, pipeline_id: i64) -> StoreFuture<'_, Vec<PipelineVariable>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT * FROM pipeline_variables WHERE pipeline_id = $1 ORDER BY position",
                    )
                    .bind(pipeline_id)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(PipelineVariable::from_row).collect()
                })
            }

            fn set_pipeline_variables<'a>(
                &'a self,
                pipeline_id: i64,
                variables: &'a [PipelineVariable],
            ) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    sqlx::query("DELETE FROM pipeline_variables WHERE pipeline_id = $1")
                        .bind(pipeline_id)
                        .execute(&mut *tx)
                        .await?;
                    for (position, variable) in variables.iter().enumerate() {
                        sqlx::query(
                            "INSERT INTO pipeline_variables \
                             (pipeline_id, position, name, value, is_secret, allow_override) \
                             VALUES ($1, $2, $3, $4, $5, $6)",
                        )
                        .bind(pipeline_id)
                        .bind(position as i64)
                        .bind(&variable.name)
                        .bind(&variable.value)
                        .bind(variable.secret)
                        .bind(variable.allow_override)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| exists_as(e, format!("variable `{}`", variable.name)))?;
                    }
                    tx.commit().await?;
                    Ok(())
                })
            }

            // ---- runs ----

            fn next_name_revision<'a>(
                &'a self,
                pipeline_id: i64,
                name_prefix: &'a str,
            ) -> StoreFuture<'a, i64> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "INSERT INTO run_name_revisions (pipeline_id, name_prefix, revision) VALUES ($1, $2, 1) \
                         ON CONFLICT (pipeline_id, name_prefix) DO UPDATE SET revision = run_name_revisions.revision + 1 RETURNING revision",
                    )
                    .bind(pipeline_id)
                    .bind(name_prefix)
                    .fetch_one(&self.pool)
                    .await?;
                    Ok(row.try_get("revision")?)
                })
            }

            fn create_run<'a>(&'a self, run: &'a NewRun, jobs: &'a [NewJob]) -> StoreFuture<'a, Run> {
                Box::pin(async move {
                    let now = now_millis();
                    let mut tx = self.pool.begin().await?;
                    if let Some(lock) = <Self as Dialect>::LOCK_PIPELINE {
                        sqlx::query(lock)
                            .bind(run.pipeline_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    let row = sqlx::query(
                        "INSERT INTO runs (pipeline_id, number, name, status, result, reason, source_branch, source_commit, \
                         requested_by, yaml, diagnostics, parameters, queued_at, finished_at, title) \
                         VALUES ($1, (SELECT COALESCE(MAX(number), 0) + 1 FROM runs WHERE pipeline_id = $1), $2, $3, $4, $5, \
                         $6, $7, $8, $9, $10, $11, $12, CASE WHEN $3 = 'completed' THEN $12 END, $13) RETURNING id",
                    )
                    .bind(run.pipeline_id)
                    .bind(&run.name)
                    .bind(&run.status)
                    .bind(&run.result)
                    .bind(&run.reason)
                    .bind(&run.source_branch)
                    .bind(&run.source_commit)
                    .bind(&run.requested_by)
                    .bind(&run.yaml)
                    .bind(&run.diagnostics)
                    .bind(&run.parameters)
                    .bind(now)
                    .bind(&run.title)
                    .fetch_one(&mut *tx)
                    .await?;
                    let run_id: i64 = row.try_get("id")?;
                    for job in jobs {
                        sqlx::query(
                            "INSERT INTO jobs (run_id, stage_name, name, display_name, depends_on, spec, status, queued_at, \
                             environment, agent_os, pool, demands, target) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                        )
                        .bind(run_id)
                        .bind(&job.stage_name)
                        .bind(&job.name)
                        .bind(&job.display_name)
                        .bind(&job.depends_on)
                        .bind(&job.spec)
                        .bind(&job.status)
                        .bind(now)
                        .bind(&job.environment)
                        .bind(&job.agent_os)
                        .bind(&job.pool)
                        .bind(job.demands.join("\n"))
                        .bind(&job.target)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    self.run_by_id(run_id)
                        .await?
                        .ok_or(StoreError::Database(sqlx::Error::RowNotFound))
                })
            }

            fn run_by_id(&self, id: i64) -> StoreFuture<'_, Option<Run>> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT r.*, p.name AS pipeline_name, p.project_id FROM runs r JOIN pipelines p ON p.id = r.pipeline_id \
                         WHERE r.id = $1",
                    )
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(Run::from_row).transpose()
                })
            }

            fn list_runs<'a>(&'a self, filter: &'a RunFilter) -> StoreFuture<'a, Vec<Run>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT r.*, p.name AS pipeline_name, p.project_id FROM runs r JOIN pipelines p ON p.id = r.pipeline_id \
                         WHERE ($1 IS NULL OR p.project_id = $1) AND ($2 IS NULL OR r.pipeline_id = $2) \
                         AND ($3 IS NULL OR r.source_branch = $3) AND ($4 IS NULL OR r.status = $4 OR r.result = $4) \
                         AND ($5 IS NULL OR r.id < $5) ORDER BY r.id DESC LIMIT $6",
                    )
                    .bind(filter.project_id)
                    .bind(filter.pipeline_id)
                    .bind(&filter.branch)
                    .bind(&filter.status)
                    .bind(filter.before_id)
                    .bind(filter.limit.clamp(1, 1000))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(Run::from_row).collect()
                })
            }

            fn set_run_status<'a>(
                &'a self,
                run_id: i64,
                status: &'a str,
                result: Option<&'a str>,
            ) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    let now = now_millis();
                    sqlx::query(
                        "UPDATE runs SET status = $2, result = $3, \
                         started_at = CASE WHEN started_at IS NULL AND $2 <> 'queued' THEN $4 ELSE started_at END, \
                         finished_at = CASE WHEN $2 = 'completed' THEN $4 ELSE NULL END WHERE id = $1",
                    )
                    .bind(run_id)
                    .bind(status)
                    .bind(result)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                })
            }

            // ---- jobs ----

            fn jobs_of_run(&self, run_id: i64) -> StoreFuture<'_, Vec<Job>> {
                Box::pin(async move {
                    let rows = sqlx::query("SELECT * FROM jobs WHERE run_id = $1 ORDER BY id")
                        .bind(run_id)
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(Job::from_row).collect()
                })
            }

            fn job_by_id(&self, id: i64) -> StoreFuture<'_, Option<Job>> {
                Box::pin(async move {
                    let row = sqlx::query("SELECT * FROM jobs WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.as_ref().map(Job::from_row).transpose()
                })
            }

            fn set_job_spec<'a>(&'a self, job_id: i64, spec: &'a str) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    sqlx::query("UPDATE jobs SET spec = $2 WHERE id = $1")
                        .bind(job_id)
                        .bind(spec)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }

            fn jobs_after(&self, after_id: i64, limit: i64) -> StoreFuture<'_, Vec<Job>> {
                Box::pin(async move {
                    let rows = sqlx::query("SELECT * FROM jobs WHERE id > $1 ORDER BY id LIMIT $2")
                        .bind(after_id)
                        .bind(limit.clamp(1, 1000))
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(Job::from_row).collect()
                })
            }

            fn set_job_status<'a>(
                &'a self,
                job_id: i64,
                status: &'a str,
                result: Option<&'a str>,
            ) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE jobs SET status = $2, result = $3, \
                         started_at = CASE WHEN $2 = 'running' THEN COALESCE(started_at, $4) ELSE started_at END, \
                         finished_at = CASE WHEN $2 = 'completed' THEN $4 ELSE finished_at END WHERE id = $1",
                    )
                    .bind(job_id)
                    .bind(status)
                    .bind(result)
                    .bind(now_millis())
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                })
            }

            fn lease_next_job<'a>(
                &'a self,
                agent_name: &'a str,
                agent_os: &'a str,
                lease_token_hash: &'a str,
                lease_expires_at: i64,
            ) -> StoreFuture<'a, Option<Job>> {
                Box::pin(async move {
                    let row = sqlx::query(<Self as Dialect>::LEASE_NEXT_JOB)
                    .bind(agent_name)
                    .bind(lease_token_hash)
                    .bind(lease_expires_at)
                    .bind(now_millis())
                    .bind(agent_os)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(Job::from_row).transpose()
                })
            }

            fn leased_job<'a>(
                &'a self,
                job_id: i64,
                lease_token_hash: &'a str,
            ) -> StoreFuture<'a, Option<Job>> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT * FROM jobs WHERE id = $1 AND lease_token_hash = $2 AND status = 'running'",
                    )
                    .bind(job_id)
                    .bind(lease_token_hash)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(Job::from_row).transpose()
                })
            }

            fn renew_lease<'a>(
                &'a self,
                job_id: i64,
                lease_token_hash: &'a str,
                lease_expires_at: i64,
            ) -> StoreFuture<'a, Option<bool>> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "UPDATE jobs SET lease_expires_at = $3 WHERE id = $1 AND lease_token_hash = $2 AND status = 'running' \
                         RETURNING cancel_requested",
                    )
                    .bind(job_id)
                    .bind(lease_token_hash)
                    .bind(lease_expires_at)
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(row
                        .map(|r| r.try_get::<bool, _>("cancel_requested"))
                        .transpose()?)
                })
            }

            fn finish_leased_job<'a>(
                &'a self,
                job_id: i64,
                lease_token_hash: &'a str,
                result: &'a str,
                outputs: &'a str,
            ) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE jobs SET status = 'completed', result = $3, finished_at = $4, lease_token_hash = NULL, \
                         outputs = $5 WHERE id = $1 AND lease_token_hash = $2 AND status = 'running'",
                    )
                    .bind(job_id)
                    .bind(lease_token_hash)
                    .bind(result)
                    .bind(now_millis())
                    .bind(outputs)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn requeue_unstarted_expired_jobs(&self, now: i64) -> StoreFuture<'_, Vec<Job>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT * FROM jobs WHERE status = 'running' AND lease_expires_at < $1 \
                         AND NOT EXISTS (SELECT 1 FROM steps WHERE steps.job_id = jobs.id) ORDER BY id",
                    )
                    .bind(now)
                    .fetch_all(&self.pool)
                    .await?;
                    let mut requeued = Vec::new();
                    for row in &rows {
                        let job = Job::from_row(row)?;
                        // The conditions again: a heartbeat or a first step may have come since.
                        let done = sqlx::query(
                            "UPDATE jobs SET status = 'queued', agent_name = NULL, lease_token_hash = NULL, \
                             lease_expires_at = NULL, started_at = NULL \
                             WHERE id = $1 AND status = 'running' AND lease_expires_at < $2 \
                             AND NOT EXISTS (SELECT 1 FROM steps WHERE steps.job_id = jobs.id)",
                        )
                        .bind(job.id)
                        .bind(now)
                        .execute(&self.pool)
                        .await?;
                        if done.rows_affected() == 1 {
                            requeued.push(job);
                        }
                    }
                    Ok(requeued)
                })
            }

            fn expire_leases(&self, now: i64) -> StoreFuture<'_, Vec<Job>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "UPDATE jobs SET status = 'completed', result = 'failed', finished_at = $1, lease_token_hash = NULL \
                         WHERE status = 'running' AND lease_expires_at < $1 RETURNING *",
                    )
                    .bind(now)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(Job::from_row).collect()
                })
            }

            fn release_abandoned_jobs<'a>(
                &'a self,
                agent_names: &'a [String],
            ) -> StoreFuture<'a, Vec<Job>> {
                Box::pin(async move {
                    let now = now_millis();
                    let mut tx = self.pool.begin().await?;
                    let mut rows = Vec::new();
                    let mut failed = Vec::new();
                    for name in agent_names {
                        rows.extend(
                            sqlx::query(
                                "UPDATE jobs SET status = 'queued', agent_name = NULL, lease_token_hash = NULL, \
                                 lease_expires_at = NULL, started_at = NULL \
                                 WHERE status = 'running' AND agent_name = $1 \
                                 AND agent_name IN (SELECT name FROM agents WHERE builtin) \
                                 AND NOT EXISTS (SELECT 1 FROM steps WHERE steps.job_id = jobs.id) RETURNING *",
                            )
                            .bind(name)
                            .fetch_all(&mut *tx)
                            .await?,
                        );
                        failed.extend(
                            sqlx::query(
                                "UPDATE jobs SET status = 'completed', result = 'failed', finished_at = $1, \
                                 lease_token_hash = NULL \
                                 WHERE status = 'running' AND agent_name = $2 \
                                 AND agent_name IN (SELECT name FROM agents WHERE builtin) RETURNING *",
                            )
                            .bind(now)
                            .bind(name)
                            .fetch_all(&mut *tx)
                            .await?,
                        );
                    }
                    for row in &failed {
                        sqlx::query(
                            "UPDATE steps SET status = 'completed', result = 'failed', finished_at = $2 \
                             WHERE job_id = $1 AND status = 'running'",
                        )
                        .bind(row.try_get::<i64, _>("id")?)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    rows.extend(failed);
                    let mut jobs = rows
                        .iter()
                        .map(Job::from_row)
                        .collect::<Result<Vec<_>, _>>()?;
                    jobs.sort_by_key(|job| job.id);
                    Ok(jobs)
                })
            }

            fn request_cancel<'a>(&'a self, run_id: i64, still_waiting: &'a [i64]) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    let now = now_millis();
                    let mut tx = self.pool.begin().await?;
                    let open = sqlx::query(
                        "UPDATE runs SET result = 'canceled' WHERE id = $1 AND status <> 'completed'",
                    )
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await?;
                    if open.rows_affected() == 0 {
                        return Ok(());
                    }
                    // Jobs that may still run are marked first so the statements below pass them over.
                    for id in still_waiting {
                        sqlx::query(
                            "UPDATE jobs SET status = 'waiting-after-cancel' \
                             WHERE id = $1 AND run_id = $2 AND status = 'pending'",
                        )
                        .bind(id)
                        .bind(run_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    for (sql, finished) in [
                        (
                            "UPDATE jobs SET status = 'completed', result = 'canceled', finished_at = $2 \
                             WHERE run_id = $1 AND status = 'queued'",
                            true,
                        ),
                        (
                            "UPDATE jobs SET status = 'completed', result = 'skipped', finished_at = $2 \
                             WHERE run_id = $1 AND status = 'pending'",
                            true,
                        ),
                        (
                            "UPDATE jobs SET status = 'pending' WHERE run_id = $1 AND status = 'waiting-after-cancel'",
                            false,
                        ),
                        (
                            "UPDATE jobs SET cancel_requested = TRUE WHERE run_id = $1 AND status = 'running'",
                            false,
                        ),
                    ] {
                        let query = sqlx::query(sql).bind(run_id);
                        let query = if finished { query.bind(now) } else { query };
                        query.execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    Ok(())
                })
            }

            fn reset_jobs<'a>(&'a self, job_ids: &'a [i64]) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    for id in job_ids {
                        for sql in [
                            "DELETE FROM steps WHERE job_id = $1",
                            "DELETE FROM log_chunks WHERE job_id = $1",
                            "DELETE FROM test_results WHERE job_id = $1",
                            "DELETE FROM artifacts WHERE job_id = $1",
                            "UPDATE jobs SET status = 'pending', result = NULL, attempt = attempt + 1, agent_name = NULL, \
                             lease_token_hash = NULL, lease_expires_at = NULL, cancel_requested = FALSE, started_at = NULL, \
                             finished_at = NULL, outputs = '{}' WHERE id = $1 AND status = 'completed'",
                        ] {
                            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
                        }
                    }
                    tx.commit().await?;
                    Ok(())
                })
            }

            // ---- environments and the deployment ledger ----

            fn create_environment<'a>(
                &'a self,
                project_id: i64,
                name: &'a str,
                description: &'a str,
                created_by: &'a str,
            ) -> StoreFuture<'a, Environment> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    let row = sqlx::query(
                        "INSERT INTO environments (project_id, name, description, created_at, created_by) \
                         VALUES ($1, $2, $3, $4, $5) RETURNING *",
                    )
                    .bind(project_id)
                    .bind(name)
                    .bind(description)
                    .bind(now_millis())
                    .bind(created_by)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| exists_as(e, format!("environment `{name}`")))?;
                    let environment = Environment::from_row(&row)?;
                    if !created_by.is_empty() {
                        sqlx::query(
                            "INSERT INTO environment_owners (environment_id, user_name) VALUES ($1, $2)",
                        )
                        .bind(environment.id)
                        .bind(created_by)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(environment)
                })
            }

            fn ensure_environment<'a>(
                &'a self,
                project_id: i64,
                name: &'a str,
                created_by: &'a str,
            ) -> StoreFuture<'a, Environment> {
                Box::pin(async move {
                    if let Some(environment) = self.environment_by_name(project_id, name).await? {
                        return Ok(environment);
                    }
                    match self
                        .create_environment(project_id, name, "", created_by)
                        .await
                    {
                        Err(StoreError::AlreadyExists { what }) => self
                            .environment_by_name(project_id, name)
                            .await?
                            .ok_or(StoreError::AlreadyExists { what }),
                        other => other,
                    }
                })
            }

            fn environment_by_name<'a>(
                &'a self,
                project_id: i64,
                name: &'a str,
            ) -> StoreFuture<'a, Option<Environment>> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT * FROM environments WHERE project_id = $1 AND lower(name) = $2",
                    )
                    .bind(project_id)
                    .bind(name.to_ascii_lowercase())
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(Environment::from_row).transpose()
                })
            }

            fn list_environments(&self, project_id: i64) -> StoreFuture<'_, Vec<Environment>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT * FROM environments WHERE project_id = $1 ORDER BY lower(name), id",
                    )
                    .bind(project_id)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(Environment::from_row).collect()
                })
            }

            fn environment_owners(&self, environment_id: i64) -> StoreFuture<'_, Vec<String>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT user_name FROM environment_owners WHERE environment_id = $1 ORDER BY user_name",
                    )
                    .bind(environment_id)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|row| Ok(row.try_get("user_name")?))
                        .collect()
                })
            }

            fn update_environment<'a>(
                &'a self,
                environment_id: i64,
                description: Option<&'a str>,
                owners: Option<&'a [String]>,
            ) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    if let Some(description) = description {
                        sqlx::query("UPDATE environments SET description = $2 WHERE id = $1")
                            .bind(environment_id)
                            .bind(description)
                            .execute(&mut *tx)
                            .await?;
                    }
                    if let Some(owners) = owners {
                        sqlx::query("DELETE FROM environment_owners WHERE environment_id = $1")
                            .bind(environment_id)
                            .execute(&mut *tx)
                            .await?;
                        for owner in owners {
                            sqlx::query(
                                "INSERT INTO environment_owners (environment_id, user_name) \
                                 SELECT id, $2 FROM environments WHERE id = $1 \
                                 ON CONFLICT (environment_id, user_name) DO NOTHING",
                            )
                            .bind(environment_id)
                            .bind(owner)
                            .execute(&mut *tx)
                            .await?;
                        }
                    }
                    tx.commit().await?;
                    Ok(())
                })
            }

            fn start_deployment<'a>(
                &'a self,
                deployment: &'a NewDeployment,
            ) -> StoreFuture<'a, Deployment> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "INSERT INTO deployments (environment_id, run_id, job_id, attempt, pipeline_id, stage_name, \
                         job_name, resource_name, source_commit, source_branch, artifacts, variables, requested_by, \
                         status, result, started_at, finished_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'running', NULL, $14, NULL) \
                         ON CONFLICT (job_id, attempt) DO UPDATE SET environment_id = excluded.environment_id, \
                         run_id = excluded.run_id, pipeline_id = excluded.pipeline_id, stage_name = excluded.stage_name, \
                         job_name = excluded.job_name, resource_name = excluded.resource_name, \
                         source_commit = excluded.source_commit, source_branch = excluded.source_branch, \
                         artifacts = excluded.artifacts, variables = excluded.variables, \
                         requested_by = excluded.requested_by, status = 'running', result = NULL, \
                         started_at = excluded.started_at, finished_at = NULL RETURNING id",
                    )
                    .bind(deployment.environment_id)
                    .bind(deployment.run_id)
                    .bind(deployment.job_id)
                    .bind(deployment.attempt)
                    .bind(deployment.pipeline_id)
                    .bind(&deployment.stage_name)
                    .bind(&deployment.job_name)
                    .bind(&deployment.resource_name)
                    .bind(&deployment.source_commit)
                    .bind(&deployment.source_branch)
                    .bind(&deployment.artifacts)
                    .bind(&deployment.variables)
                    .bind(&deployment.requested_by)
                    .bind(now_millis())
                    .fetch_one(&self.pool)
                    .await?;
                    let id: i64 = row.try_get("id")?;
                    let row = sqlx::query(deployments_query!("", "WHERE d.id = $1"))
                        .bind(id)
                        .fetch_one(&self.pool)
                        .await?;
                    Deployment::from_row(&row)
                })
            }

            fn deployment_of_job(&self, job_id: i64, attempt: i64) -> StoreFuture<'_, Option<Deployment>> {
                Box::pin(async move {
                    let row = sqlx::query(deployments_query!(
                        "",
                        "WHERE d.job_id = $1 AND d.attempt = $2"
                    ))
                    .bind(job_id)
                    .bind(attempt)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(Deployment::from_row).transpose()
                })
            }

            fn deployments(
                &self,
                environment_id: i64,
                before_id: Option<i64>,
                limit: i64,
            ) -> StoreFuture<'_, Vec<Deployment>> {
                Box::pin(async move {
                    let rows = sqlx::query(deployments_query!(
                        "",
                        "WHERE d.environment_id = $1 AND ($2 IS NULL OR d.id < $2) ORDER BY d.id DESC LIMIT $3"
                    ))
                    .bind(environment_id)
                    .bind(before_id)
                    .bind(limit.clamp(1, 1000))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(Deployment::from_row).collect()
                })
            }

            fn latest_deployments(&self, project_id: i64) -> StoreFuture<'_, Vec<Deployment>> {
                Box::pin(async move {
                    let rows = sqlx::query(deployments_query!(
                        "",
                        "WHERE d.id IN (SELECT MAX(n.id) FROM deployments n \
                         JOIN environments ne ON ne.id = n.environment_id WHERE ne.project_id = $1 \
                         AND n.status = 'completed' AND n.result IN ('succeeded', 'succeededWithIssues') \
                         GROUP BY n.environment_id) ORDER BY lower(e.name), e.id"
                    ))
                    .bind(project_id)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(Deployment::from_row).collect()
                })
            }

            fn deployed_versions(&self, pipeline_id: i64) -> StoreFuture<'_, Vec<DeployedVersion>> {
                Box::pin(async move {
                    let rows = sqlx::query(deployments_query!(
                        "(SELECT COUNT(*) FROM runs b WHERE b.pipeline_id = d.pipeline_id \
                         AND b.source_branch = d.source_branch AND b.id > d.run_id AND b.status = 'completed' \
                         AND b.result IN ('succeeded', 'succeededWithIssues')) AS behind,",
                        "WHERE d.id IN (SELECT MAX(n.id) FROM deployments n WHERE n.pipeline_id = $1 \
                         AND n.status = 'completed' AND n.result IN ('succeeded', 'succeededWithIssues') \
                         GROUP BY n.environment_id) ORDER BY lower(e.name), e.id"
                    ))
                    .bind(pipeline_id)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|row| {
                            Ok(DeployedVersion {
                                deployment: Deployment::from_row(row)?,
                                behind: row.try_get("behind")?,
                            })
                        })
                        .collect()
                })
            }

            // ---- steps ----

            fn upsert_step<'a>(&'a self, step: &'a Step) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO steps (job_id, position, name, status, result, started_at, finished_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (job_id, position) DO UPDATE SET \
                         name = excluded.name, status = excluded.status, result = excluded.result, \
                         started_at = COALESCE(steps.started_at, excluded.started_at), finished_at = excluded.finished_at",
                    )
                    .bind(step.job_id)
                    .bind(step.position)
                    .bind(&step.name)
                    .bind(&step.status)
                    .bind(&step.result)
                    .bind(step.started_at)
                    .bind(step.finished_at)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                })
            }

            fn steps_of_run(&self, run_id: i64) -> StoreFuture<'_, Vec<Step>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT s.* FROM steps s JOIN jobs j ON j.id = s.job_id WHERE j.run_id = $1 ORDER BY s.job_id, s.position",
                    )
                    .bind(run_id)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(Step::from_row).collect()
                })
            }

            // ---- logs ----

            fn append_log_chunk<'a>(
                &'a self,
                job_id: i64,
                line_count: i64,
                compressed: &'a [u8],
            ) -> StoreFuture<'a, i64> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    if let Some(lock) = <Self as Dialect>::LOCK_JOB {
                        sqlx::query(lock).bind(job_id).execute(&mut *tx).await?;
                    }
                    let row = sqlx::query(
                        "INSERT INTO log_chunks (job_id, sequence, first_line, line_count, compressed) \
                         SELECT $1, COALESCE(MAX(sequence), 0) + 1, COALESCE(SUM(line_count), 0) + 1, $2, $3 \
                         FROM log_chunks WHERE job_id = $1 RETURNING first_line",
                    )
                    .bind(job_id)
                    .bind(line_count)
                    .bind(compressed)
                    .fetch_one(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(row.try_get("first_line")?)
                })
            }

            fn log_chunks(&self, job_id: i64) -> StoreFuture<'_, Vec<LogChunk>> {
                Box::pin(async move {
                    let rows = sqlx::query("SELECT * FROM log_chunks WHERE job_id = $1 ORDER BY sequence")
                        .bind(job_id)
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(LogChunk::from_row).collect()
                })
            }

            fn log_chunks_after(&self, job_id: i64, after: i64) -> StoreFuture<'_, Vec<LogChunk>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT * FROM log_chunks WHERE job_id = $1 AND first_line + line_count - 1 > $2 \
                         ORDER BY sequence",
                    )
                    .bind(job_id)
                    .bind(after)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(LogChunk::from_row).collect()
                })
            }

            fn jobs_with_logs_to_archive(&self, limit: i64) -> StoreFuture<'_, Vec<i64>> {
                Box::pin(async move {
                    let ids = sqlx::query_scalar(
                        "SELECT id FROM jobs WHERE status = 'completed' AND id IN \
                         (SELECT job_id FROM log_chunks WHERE object IS NULL) ORDER BY id LIMIT $1",
                    )
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                    Ok(ids)
                })
            }

            fn archive_log_chunks<'a>(&'a self, archive: &'a LogArchive) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    if let Some(lock) = <Self as Dialect>::LOCK_JOB {
                        sqlx::query(lock).bind(archive.job_id).execute(&mut *tx).await?;
                    }
                    // A write first: SQLite takes its write lock here, waiting for other writers.
                    let removed = sqlx::query(
                        "DELETE FROM log_chunks WHERE job_id = $1 AND sequence <= $2 AND EXISTS \
                         (SELECT 1 FROM jobs WHERE id = $1 AND attempt = $3 AND status = 'completed')",
                    )
                    .bind(archive.job_id)
                    .bind(archive.through_sequence)
                    .bind(archive.attempt)
                    .execute(&mut *tx)
                    .await?;
                    if removed.rows_affected() != archive.chunk_count as u64 {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                    sqlx::query(
                        "INSERT INTO log_chunks (job_id, sequence, first_line, line_count, compressed, object) \
                         VALUES ($1, $2, 1, $3, $4, $5)",
                    )
                    .bind(archive.job_id)
                    .bind(archive.through_sequence)
                    .bind(archive.line_count)
                    .bind(Vec::<u8>::new())
                    .bind(&archive.object)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(true)
                })
            }

            // ---- artifacts and test results ----

            fn add_artifact_file<'a>(&'a self, file: &'a NewArtifactFile) -> StoreFuture<'a, ArtifactFile> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "INSERT INTO artifacts (run_id, job_id, name, file_path, size, digest, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (run_id, name, file_path) DO UPDATE SET \
                         job_id = excluded.job_id, size = excluded.size, digest = excluded.digest RETURNING *",
                    )
                    .bind(file.run_id)
                    .bind(file.job_id)
                    .bind(&file.name)
                    .bind(&file.file_path)
                    .bind(file.size)
                    .bind(&file.digest)
                    .bind(now_millis())
                    .fetch_one(&self.pool)
                    .await?;
                    ArtifactFile::from_row(&row)
                })
            }

            fn artifact_files(&self, run_id: i64) -> StoreFuture<'_, Vec<ArtifactFile>> {
                Box::pin(async move {
                    let rows =
                        sqlx::query("SELECT * FROM artifacts WHERE run_id = $1 ORDER BY name, file_path")
                            .bind(run_id)
                            .fetch_all(&self.pool)
                            .await?;
                    rows.iter().map(ArtifactFile::from_row).collect()
                })
            }

            fn add_test_results<'a>(&'a self, results: &'a [TestResult]) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    for result in results {
                        sqlx::query(
                            "INSERT INTO test_results (run_id, job_id, suite, name, outcome, duration_ms, message) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        )
                        .bind(result.run_id)
                        .bind(result.job_id)
                        .bind(&result.suite)
                        .bind(&result.name)
                        .bind(&result.outcome)
                        .bind(result.duration_ms)
                        .bind(&result.message)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                })
            }

            fn test_results(&self, run_id: i64) -> StoreFuture<'_, Vec<TestResult>> {
                Box::pin(async move {
                    let rows = sqlx::query("SELECT * FROM test_results WHERE run_id = $1 ORDER BY id")
                        .bind(run_id)
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(TestResult::from_row).collect()
                })
            }

            // ---- agents ----

            fn register_agent<'a>(&'a self, name: &'a str, token_hash: &'a str) -> StoreFuture<'a, Agent> {
                Box::pin(self.upsert_agent(name, token_hash, false))
            }

            fn register_builtin_agent<'a>(
                &'a self,
                name: &'a str,
                token_hash: &'a str,
            ) -> StoreFuture<'a, Agent> {
                Box::pin(self.upsert_agent(name, token_hash, true))
            }

            fn agent_by_token_hash<'a>(&'a self, token_hash: &'a str) -> StoreFuture<'a, Option<Agent>> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "UPDATE agents SET last_seen_at = $2 WHERE token_hash = $1 RETURNING *",
                    )
                    .bind(token_hash)
                    .bind(now_millis())
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(Agent::from_row).transpose()
                })
            }

            fn create_agent_registration<'a>(
                &'a self,
                registration: &'a NewAgentRegistration,
            ) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO agent_registrations (token_hash, pool, project_id, created_by, created_at, \
                         expires_at, environment_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(&registration.token_hash)
                    .bind(&registration.pool)
                    .bind(registration.project_id)
                    .bind(&registration.created_by)
                    .bind(now_millis())
                    .bind(registration.expires_at)
                    .bind(registration.environment_id)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                })
            }

            fn redeem_agent_registration<'a>(
                &'a self,
                registration_hash: &'a str,
                pool: &'a str,
                tags: Option<&'a [String]>,
                now: i64,
                name: &'a str,
                token_hash: &'a str,
            ) -> StoreFuture<'a, Option<Agent>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    let Some(row) = sqlx::query(
                        "UPDATE agent_registrations SET used_at = $2, used_by_agent = $3 \
                         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 \
                         AND lower(pool) = $4 AND (environment_id IS NOT NULL) = $5 \
                         RETURNING pool, project_id, environment_id",
                    )
                    .bind(registration_hash)
                    .bind(now)
                    .bind(name)
                    .bind(pool.to_ascii_lowercase())
                    .bind(tags.is_some())
                    .fetch_optional(&mut *tx)
                    .await?
                    else {
                        return Ok(None);
                    };
                    let pool: String = row.try_get("pool")?;
                    let project_id: Option<i64> = row.try_get("project_id")?;
                    let environment_id: Option<i64> = row.try_get("environment_id")?;
                    let row = sqlx::query(
                        "INSERT INTO agents (name, token_hash, created_at, builtin, pool, project_id, \
                         environment_id, tags) VALUES ($1, $2, $3, FALSE, $4, $5, $6, $7) RETURNING *",
                    )
                    .bind(name)
                    .bind(token_hash)
                    .bind(now)
                    .bind(&pool)
                    .bind(project_id)
                    .bind(environment_id)
                    .bind(tags.unwrap_or_default().join("\n"))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| exists_as(e, format!("agent `{name}`")))?;
                    let agent = Agent::from_row(&row)?;
                    tx.commit().await?;
                    Ok(Some(agent))
                })
            }

            fn set_agent_info<'a>(&'a self, agent_id: i64, info: &'a AgentInfo) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    sqlx::query("UPDATE agents SET os = $2, version = $3, capabilities = $4 WHERE id = $1")
                        .bind(agent_id)
                        .bind(&info.os)
                        .bind(&info.version)
                        .bind(&info.capabilities)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }

            fn list_agents(&self) -> StoreFuture<'_, Vec<Agent>> {
                Box::pin(async move {
                    let rows = sqlx::query("SELECT * FROM agents ORDER BY name")
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(Agent::from_row).collect()
                })
            }

            fn set_agent_enabled<'a>(&'a self, name: &'a str, enabled: bool) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let done = sqlx::query("UPDATE agents SET enabled = $2 WHERE name = $1")
                        .bind(name)
                        .bind(enabled)
                        .execute(&self.pool)
                        .await?;
                    Ok(done.rows_affected() > 0)
                })
            }

            fn remove_agent<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let done = sqlx::query("DELETE FROM agents WHERE name = $1")
                        .bind(name)
                        .execute(&self.pool)
                        .await?;
                    Ok(done.rows_affected() > 0)
                })
            }

            fn agent_jobs(&self) -> StoreFuture<'_, Vec<AgentJob>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT j.*, p.project_id AS agent_job_project FROM jobs j \
                         JOIN runs r ON r.id = j.run_id JOIN pipelines p ON p.id = r.pipeline_id \
                         WHERE j.status IN ('queued', 'running') ORDER BY j.id",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|row| {
                            Ok(AgentJob {
                                job: Job::from_row(row)?,
                                project_id: row.try_get("agent_job_project")?,
                            })
                        })
                        .collect()
                })
            }

            fn lease_job<'a>(
                &'a self,
                job_id: i64,
                agent_name: &'a str,
                lease_token_hash: &'a str,
                lease_expires_at: i64,
            ) -> StoreFuture<'a, Option<Job>> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "UPDATE jobs SET status = 'running', agent_name = $2, lease_token_hash = $3, \
                         lease_expires_at = $4, started_at = $5 WHERE id = $1 AND status = 'queued' RETURNING *",
                    )
                    .bind(job_id)
                    .bind(agent_name)
                    .bind(lease_token_hash)
                    .bind(lease_expires_at)
                    .bind(now_millis())
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(Job::from_row).transpose()
                })
            }

            // ---- settings ----

            fn set_approval_check<'a>(
                &'a self,
                project_id: i64,
                environment: &'a str,
                check: Option<&'a NewApprovalCheck>,
            ) -> StoreFuture<'a, Option<ApprovalCheck>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    sqlx::query(
                        "DELETE FROM approval_checks WHERE project_id = $1 AND lower(environment) = $2",
                    )
                    .bind(project_id)
                    .bind(environment.to_ascii_lowercase())
                    .execute(&mut *tx)
                    .await?;
                    let Some(check) = check else {
                        tx.commit().await?;
                        return Ok(None);
                    };
                    let row = sqlx::query(
                        "INSERT INTO approval_checks (project_id, environment, approvers, min_approvals, \
                         allow_requester, instructions, timeout_minutes, created_by, created_at, in_sequence) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *",
                    )
                    .bind(project_id)
                    .bind(environment)
                    .bind(check.approvers.join("\n"))
                    .bind(check.min_approvals)
                    .bind(check.allow_requester)
                    .bind(&check.instructions)
                    .bind(check.timeout_minutes)
                    .bind(&check.created_by)
                    .bind(now_millis())
                    .bind(check.in_sequence)
                    .fetch_one(&mut *tx)
                    .await?;
                    let stored = ApprovalCheck::from_row(&row)?;
                    tx.commit().await?;
                    Ok(Some(stored))
                })
            }

            fn approval_checks(&self, project_id: i64) -> StoreFuture<'_, Vec<ApprovalCheck>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT * FROM approval_checks WHERE project_id = $1 ORDER BY lower(environment)",
                    )
                    .bind(project_id)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(ApprovalCheck::from_row).collect()
                })
            }

            fn request_approval<'a>(
                &'a self,
                run_id: i64,
                stage: &'a str,
                attempt: i64,
                check: &'a ApprovalCheck,
                now: i64,
            ) -> StoreFuture<'a, Approval> {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO approvals (run_id, stage, environment, check_id, approvers, \
                         min_approvals, allow_requester, instructions, timeout_minutes, status, requested_at, \
                         attempt, in_sequence) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $11, $12) \
                         ON CONFLICT (run_id, stage, attempt, check_id) DO NOTHING",
                    )
                    .bind(run_id)
                    .bind(stage)
                    .bind(&check.environment)
                    .bind(check.id)
                    .bind(check.approvers.join("\n"))
                    .bind(check.min_approvals)
                    .bind(check.allow_requester)
                    .bind(&check.instructions)
                    .bind(check.timeout_minutes)
                    .bind(now)
                    .bind(attempt)
                    .bind(check.in_sequence)
                    .execute(&self.pool)
                    .await?;
                    let row = sqlx::query(
                        "SELECT * FROM approvals WHERE run_id = $1 AND stage = $2 AND attempt = $3 \
                         AND check_id = $4",
                    )
                    .bind(run_id)
                    .bind(stage)
                    .bind(attempt)
                    .bind(check.id)
                    .fetch_one(&self.pool)
                    .await?;
                    let mut approval = Approval::from_row(&row)?;
                    approval.decisions = self.decisions_of(approval.id).await?;
                    Ok(approval)
                })
            }

            fn approvals_of_run(&self, run_id: i64) -> StoreFuture<'_, Vec<Approval>> {
                Box::pin(async move {
                    let rows = sqlx::query("SELECT * FROM approvals WHERE run_id = $1 ORDER BY id")
                        .bind(run_id)
                        .fetch_all(&self.pool)
                        .await?;
                    let mut approvals = Vec::with_capacity(rows.len());
                    for row in &rows {
                        let mut approval = Approval::from_row(row)?;
                        approval.decisions = self.decisions_of(approval.id).await?;
                        approvals.push(approval);
                    }
                    Ok(approvals)
                })
            }

            fn decide_approval<'a>(
                &'a self,
                approval_id: i64,
                decision: &'a ApprovalDecision,
            ) -> StoreFuture<'a, Option<Approval>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    // Taking the write lock first makes the read and the update one step.
                    let claimed = sqlx::query(
                        "UPDATE approvals SET status = status WHERE id = $1 AND status = 'pending'",
                    )
                    .bind(approval_id)
                    .execute(&mut *tx)
                    .await?;
                    if claimed.rows_affected() == 0 {
                        return Ok(None);
                    }
                    let row = sqlx::query("SELECT * FROM approvals WHERE id = $1")
                        .bind(approval_id)
                        .fetch_one(&mut *tx)
                        .await?;
                    let approval = Approval::from_row(&row)?;
                    sqlx::query(
                        "INSERT INTO approval_decisions (approval_id, user_name, approve, comment, decided_at) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(approval_id)
                    .bind(&decision.user)
                    .bind(decision.approve)
                    .bind(&decision.comment)
                    .bind(decision.decided_at)
                    .execute(&mut *tx)
                    .await?;
                    let approvers: i64 = sqlx::query_scalar(
                        "SELECT COUNT(DISTINCT user_name) FROM approval_decisions \
                         WHERE approval_id = $1 AND approve",
                    )
                    .bind(approval_id)
                    .fetch_one(&mut *tx)
                    .await?;
                    let status = if !decision.approve {
                        Some("rejected")
                    } else if approvers >= approval.min_approvals.max(1) {
                        Some("approved")
                    } else {
                        None
                    };
                    if let Some(status) = status {
                        sqlx::query("UPDATE approvals SET status = $1, decided_at = $2 WHERE id = $3")
                            .bind(status)
                            .bind(decision.decided_at)
                            .bind(approval_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    let row = sqlx::query("SELECT * FROM approvals WHERE id = $1")
                        .bind(approval_id)
                        .fetch_one(&self.pool)
                        .await?;
                    let mut approval = Approval::from_row(&row)?;
                    approval.decisions = self.decisions_of(approval.id).await?;
                    Ok(Some(approval))
                })
            }

            fn expire_approval(&self, approval_id: i64, now: i64) -> StoreFuture<'_, bool> {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE approvals SET status = 'timedOut', decided_at = $1 \
                         WHERE id = $2 AND status = 'pending'",
                    )
                    .bind(now)
                    .bind(approval_id)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn pending_approvals(&self) -> StoreFuture<'_, Vec<Approval>> {
                Box::pin(async move {
                    let rows = sqlx::query("SELECT * FROM approvals WHERE status = 'pending' ORDER BY id")
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(Approval::from_row).collect()
                })
            }

            fn set_environment_check<'a>(
                &'a self,
                project_id: i64,
                environment: &'a str,
                kind: &'a str,
                config: Option<(&'a str, &'a str)>,
            ) -> StoreFuture<'a, Option<EnvironmentCheck>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    sqlx::query(
                        "DELETE FROM environment_checks \
                         WHERE project_id = $1 AND lower(environment) = $2 AND kind = $3",
                    )
                    .bind(project_id)
                    .bind(environment.to_ascii_lowercase())
                    .bind(kind)
                    .execute(&mut *tx)
                    .await?;
                    let Some((config, created_by)) = config else {
                        tx.commit().await?;
                        return Ok(None);
                    };
                    let row = sqlx::query(
                        "INSERT INTO environment_checks \
                         (project_id, environment, kind, config, created_by, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
                    )
                    .bind(project_id)
                    .bind(environment)
                    .bind(kind)
                    .bind(config)
                    .bind(created_by)
                    .bind(now_millis())
                    .fetch_one(&mut *tx)
                    .await?;
                    let stored = EnvironmentCheck::from_row(&row)?;
                    tx.commit().await?;
                    Ok(Some(stored))
                })
            }

            fn environment_checks(&self, project_id: i64) -> StoreFuture<'_, Vec<EnvironmentCheck>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT * FROM environment_checks WHERE project_id = $1 \
                         ORDER BY lower(environment), kind",
                    )
                    .bind(project_id)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(EnvironmentCheck::from_row).collect()
                })
            }

            fn put_variable_group<'a>(
                &'a self,
                project_id: i64,
                name: &'a str,
                description: &'a str,
                variables: &'a str,
                user: &'a str,
            ) -> StoreFuture<'a, VariableGroup> {
                Box::pin(async move {
                    let now = now_millis();
                    let mut tx = self.pool.begin().await?;
                    let updated = sqlx::query(
                        "UPDATE variable_groups SET description = $1, variables = $2, updated_at = $3 \
                         WHERE project_id = $4 AND lower(name) = $5",
                    )
                    .bind(description)
                    .bind(variables)
                    .bind(now)
                    .bind(project_id)
                    .bind(name.to_ascii_lowercase())
                    .execute(&mut *tx)
                    .await?;
                    if updated.rows_affected() == 0 {
                        sqlx::query(
                            "INSERT INTO variable_groups (project_id, name, description, variables, \
                             created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                        )
                        .bind(project_id)
                        .bind(name)
                        .bind(description)
                        .bind(variables)
                        .bind(user)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    self.variable_groups(project_id)
                        .await?
                        .into_iter()
                        .find(|g| g.name.eq_ignore_ascii_case(name))
                        .ok_or_else(|| StoreError::Database(sqlx::Error::RowNotFound))
                })
            }

            fn variable_groups(&self, project_id: i64) -> StoreFuture<'_, Vec<VariableGroup>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT * FROM variable_groups WHERE project_id = $1 ORDER BY lower(name)",
                    )
                    .bind(project_id)
                    .fetch_all(&self.pool)
                    .await?;
                    let mut groups = Vec::new();
                    for row in &rows {
                        let id: i64 = row.try_get("id")?;
                        let pipelines = self
                            .authorized_pipelines(
                                "SELECT pipeline_id FROM variable_group_pipelines \
                                 WHERE group_id = $1 ORDER BY pipeline_id",
                                id,
                            )
                            .await?;
                        groups.push(VariableGroup {
                            id,
                            project_id: row.try_get("project_id")?,
                            name: row.try_get("name")?,
                            description: row.try_get("description")?,
                            variables: row.try_get("variables")?,
                            created_by: row.try_get("created_by")?,
                            created_at: row.try_get("created_at")?,
                            updated_at: row.try_get("updated_at")?,
                            pipelines,
                        });
                    }
                    Ok(groups)
                })
            }

            fn delete_variable_group<'a>(
                &'a self,
                project_id: i64,
                name: &'a str,
            ) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let done = sqlx::query(
                        "DELETE FROM variable_groups WHERE project_id = $1 AND lower(name) = $2",
                    )
                    .bind(project_id)
                    .bind(name.to_ascii_lowercase())
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() > 0)
                })
            }

            fn authorize_variable_group<'a>(
                &'a self,
                group_id: i64,
                pipeline_id: i64,
                user: &'a str,
                now: i64,
            ) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let done = sqlx::query(
                        "INSERT INTO variable_group_pipelines (group_id, pipeline_id, authorized_by, \
                         authorized_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    )
                    .bind(group_id)
                    .bind(pipeline_id)
                    .bind(user)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn put_service_connection<'a>(
                &'a self,
                project_id: i64,
                name: &'a str,
                kind: &'a str,
                description: &'a str,
                fields: &'a str,
                user: &'a str,
            ) -> StoreFuture<'a, ServiceConnection> {
                Box::pin(async move {
                    let now = now_millis();
                    let mut tx = self.pool.begin().await?;
                    let updated = sqlx::query(
                        "UPDATE service_connections SET kind = $1, description = $2, fields = $3, \
                         updated_at = $4 WHERE project_id = $5 AND lower(name) = $6",
                    )
                    .bind(kind)
                    .bind(description)
                    .bind(fields)
                    .bind(now)
                    .bind(project_id)
                    .bind(name.to_ascii_lowercase())
                    .execute(&mut *tx)
                    .await?;
                    if updated.rows_affected() == 0 {
                        sqlx::query(
                            "INSERT INTO service_connections (project_id, name, kind, description, \
                             fields, created_by, created_at, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                        )
                        .bind(project_id)
                        .bind(name)
                        .bind(kind)
                        .bind(description)
                        .bind(fields)
                        .bind(user)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    self.service_connections(project_id)
                        .await?
                        .into_iter()
                        .find(|c| c.name.eq_ignore_ascii_case(name))
                        .ok_or_else(|| StoreError::Database(sqlx::Error::RowNotFound))
                })
            }

            fn service_connections(
                &self,
                project_id: i64,
            ) -> StoreFuture<'_, Vec<ServiceConnection>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT * FROM service_connections WHERE project_id = $1 ORDER BY lower(name)",
                    )
                    .bind(project_id)
                    .fetch_all(&self.pool)
                    .await?;
                    let mut out = Vec::new();
                    for row in &rows {
                        let id: i64 = row.try_get("id")?;
                        let pipelines = self
                            .authorized_pipelines(
                                "SELECT pipeline_id FROM service_connection_pipelines \
                                 WHERE connection_id = $1 ORDER BY pipeline_id",
                                id,
                            )
                            .await?;
                        out.push(ServiceConnection {
                            id,
                            project_id: row.try_get("project_id")?,
                            name: row.try_get("name")?,
                            kind: row.try_get("kind")?,
                            description: row.try_get("description")?,
                            fields: row.try_get("fields")?,
                            created_by: row.try_get("created_by")?,
                            created_at: row.try_get("created_at")?,
                            updated_at: row.try_get("updated_at")?,
                            pipelines,
                        });
                    }
                    Ok(out)
                })
            }

            fn delete_service_connection<'a>(
                &'a self,
                project_id: i64,
                name: &'a str,
            ) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let done = sqlx::query(
                        "DELETE FROM service_connections WHERE project_id = $1 AND lower(name) = $2",
                    )
                    .bind(project_id)
                    .bind(name.to_ascii_lowercase())
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() > 0)
                })
            }

            fn authorize_service_connection<'a>(
                &'a self,
                connection_id: i64,
                pipeline_id: i64,
                user: &'a str,
                now: i64,
            ) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let done = sqlx::query(
                        "INSERT INTO service_connection_pipelines (connection_id, pipeline_id, \
                         authorized_by, authorized_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    )
                    .bind(connection_id)
                    .bind(pipeline_id)
                    .bind(user)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn put_secure_file<'a>(&'a self, file: &'a NewSecureFile) -> StoreFuture<'a, SecureFile> {
                Box::pin(async move {
                    let now = now_millis();
                    let mut tx = self.pool.begin().await?;
                    let updated = sqlx::query(
                        "UPDATE secure_files SET description = $1, content = $2, size = $3, \
                         digest = $4, updated_at = $5 WHERE project_id = $6 AND lower(name) = $7",
                    )
                    .bind(&file.description)
                    .bind(&file.content)
                    .bind(file.size)
                    .bind(&file.digest)
                    .bind(now)
                    .bind(file.project_id)
                    .bind(file.name.to_ascii_lowercase())
                    .execute(&mut *tx)
                    .await?;
                    if updated.rows_affected() == 0 {
                        sqlx::query(
                            "INSERT INTO secure_files (project_id, name, description, content, \
                             size, digest, created_by, created_at, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                        )
                        .bind(file.project_id)
                        .bind(&file.name)
                        .bind(&file.description)
                        .bind(&file.content)
                        .bind(file.size)
                        .bind(&file.digest)
                        .bind(&file.user)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    self.secure_files(file.project_id)
                        .await?
                        .into_iter()
                        .find(|f| f.name.eq_ignore_ascii_case(&file.name))
                        .ok_or_else(|| StoreError::Database(sqlx::Error::RowNotFound))
                })
            }

            fn secure_files(&self, project_id: i64) -> StoreFuture<'_, Vec<SecureFile>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT id, project_id, name, description, size, digest, created_by, \
                         created_at, updated_at FROM secure_files WHERE project_id = $1 \
                         ORDER BY lower(name)",
                    )
                    .bind(project_id)
                    .fetch_all(&self.pool)
                    .await?;
                    let mut out = Vec::new();
                    for row in &rows {
                        let id: i64 = row.try_get("id")?;
                        let pipelines = self
                            .authorized_pipelines(
                                "SELECT pipeline_id FROM secure_file_pipelines \
                                 WHERE file_id = $1 ORDER BY pipeline_id",
                                id,
                            )
                            .await?;
                        out.push(SecureFile {
                            id,
                            project_id: row.try_get("project_id")?,
                            name: row.try_get("name")?,
                            description: row.try_get("description")?,
                            size: row.try_get("size")?,
                            digest: row.try_get("digest")?,
                            created_by: row.try_get("created_by")?,
                            created_at: row.try_get("created_at")?,
                            updated_at: row.try_get("updated_at")?,
                            pipelines,
                        });
                    }
                    Ok(out)
                })
            }

            fn secure_file_content<'a>(
                &'a self,
                project_id: i64,
                name: &'a str,
            ) -> StoreFuture<'a, Option<String>> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT content FROM secure_files WHERE project_id = $1 AND lower(name) = $2",
                    )
                    .bind(project_id)
                    .bind(name.to_ascii_lowercase())
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(match row {
                        Some(row) => Some(row.try_get("content")?),
                        None => None,
                    })
                })
            }

            fn delete_secure_file<'a>(
                &'a self,
                project_id: i64,
                name: &'a str,
            ) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let done = sqlx::query(
                        "DELETE FROM secure_files WHERE project_id = $1 AND lower(name) = $2",
                    )
                    .bind(project_id)
                    .bind(name.to_ascii_lowercase())
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() > 0)
                })
            }

            fn authorize_secure_file<'a>(
                &'a self,
                file_id: i64,
                pipeline_id: i64,
                user: &'a str,
                now: i64,
            ) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let done = sqlx::query(
                        "INSERT INTO secure_file_pipelines (file_id, pipeline_id, \
                         authorized_by, authorized_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    )
                    .bind(file_id)
                    .bind(pipeline_id)
                    .bind(user)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn record_connection_use(
                &self,
                connection_id: i64,
                usage: &ConnectionUse,
            ) -> StoreFuture<'_, ()> {
                let usage = usage.clone();
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO service_connection_uses (connection_id, run_id, job_id, \
                         job_attempt, used_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    )
                    .bind(connection_id)
                    .bind(usage.run_id)
                    .bind(usage.job_id)
                    .bind(usage.job_attempt)
                    .bind(usage.used_at)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                })
            }

            fn connection_uses(
                &self,
                connection_id: i64,
                limit: i64,
            ) -> StoreFuture<'_, Vec<ConnectionUse>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT * FROM service_connection_uses WHERE connection_id = $1 \
                         ORDER BY id DESC LIMIT $2",
                    )
                    .bind(connection_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|row| {
                            Ok(ConnectionUse {
                                run_id: row.try_get("run_id")?,
                                job_id: row.try_get("job_id")?,
                                job_attempt: row.try_get("job_attempt")?,
                                used_at: row.try_get("used_at")?,
                            })
                        })
                        .collect()
                })
            }

            fn start_stage<'a>(
                &'a self,
                run_id: i64,
                stage: &'a str,
                user: &'a str,
                now: i64,
            ) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let done = sqlx::query(
                        "INSERT INTO stage_starts (run_id, stage, started_by, started_at) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    )
                    .bind(run_id)
                    .bind(stage)
                    .bind(user)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn stage_starts(&self, run_id: i64) -> StoreFuture<'_, Vec<StageStart>> {
                Box::pin(async move {
                    let rows = sqlx::query("SELECT * FROM stage_starts WHERE run_id = $1 ORDER BY id")
                        .bind(run_id)
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter()
                        .map(|row| {
                            Ok(StageStart {
                                run_id: row.try_get("run_id")?,
                                stage: row.try_get("stage")?,
                                started_by: row.try_get("started_by")?,
                                started_at: row.try_get("started_at")?,
                            })
                        })
                        .collect()
                })
            }

            fn request_lock<'a>(
                &'a self,
                request: &'a NewLockRequest<'a>,
                now: i64,
            ) -> StoreFuture<'a, LockOutcome> {
                Box::pin(async move {
                    // The write comes first, so the transaction holds SQLite's write lock from its
                    // start; PostgreSQL takes a lock on the environment's queue first.
                    let mut tx = self.pool.begin().await?;
                    if let Some(lock) = <Self as Dialect>::LOCK_ENVIRONMENT_QUEUE {
                        sqlx::query(lock)
                            .bind(request.project_id)
                            .bind(request.environment.to_ascii_lowercase())
                            .execute(&mut *tx)
                            .await?;
                    }
                    sqlx::query(
                        "INSERT INTO environment_locks (project_id, environment, run_id, stage, attempt, \
                         behavior, timeout_minutes, status, requested_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, 'waiting', $8) ON CONFLICT DO NOTHING",
                    )
                    .bind(request.project_id)
                    .bind(request.environment)
                    .bind(request.run_id)
                    .bind(request.stage)
                    .bind(request.attempt)
                    .bind(request.behavior)
                    .bind(request.timeout_minutes)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    let rows = sqlx::query(
                        "SELECT l.*, r.number AS run_number, r.status AS run_status, \
                         (SELECT COUNT(*) FROM jobs j WHERE j.run_id = l.run_id AND j.stage_name = l.stage \
                          AND j.status != 'completed') AS unfinished \
                         FROM environment_locks l JOIN runs r ON r.id = l.run_id \
                         WHERE l.project_id = $1 AND lower(l.environment) = $2 \
                         AND l.status IN ('waiting', 'held') ORDER BY l.id",
                    )
                    .bind(request.project_id)
                    .bind(request.environment.to_ascii_lowercase())
                    .fetch_all(&mut *tx)
                    .await?;
                    let mut queue = Vec::new();
                    for row in &rows {
                        let lock = EnvironmentLock::from_row(row)?;
                        let run_status: String = row.try_get("run_status")?;
                        let unfinished: i64 = row.try_get("unfinished")?;
                        let over = run_status == "completed" || (lock.status == "held" && unfinished == 0);
                        queue.push(locks::Queued {
                            run_number: row.try_get("run_number")?,
                            lock,
                            over,
                        });
                    }
                    let changes = locks::settle(&queue, now);
                    for change in &changes {
                        sqlx::query(
                            "UPDATE environment_locks SET status = $1, reason = $2, \
                             granted_at = CASE WHEN $1 = 'held' THEN $3 ELSE granted_at END, \
                             ended_at = CASE WHEN $1 = 'held' THEN NULL ELSE $3 END WHERE id = $4",
                        )
                        .bind(change.status)
                        .bind(&change.reason)
                        .bind(now)
                        .bind(change.id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    let row = sqlx::query(
                        "SELECT * FROM environment_locks WHERE run_id = $1 AND stage = $2 \
                         AND attempt = $3 AND lower(environment) = $4",
                    )
                    .bind(request.run_id)
                    .bind(request.stage)
                    .bind(request.attempt)
                    .bind(request.environment.to_ascii_lowercase())
                    .fetch_one(&mut *tx)
                    .await?;
                    let own = EnvironmentLock::from_row(&row)?;
                    tx.commit().await?;
                    Ok(locks::outcome(own, &queue, &changes, request.run_id))
                })
            }

            fn release_locks<'a>(
                &'a self,
                run_id: i64,
                stage: Option<&'a str>,
                now: i64,
            ) -> StoreFuture<'a, Vec<i64>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    let released = sqlx::query(
                        "UPDATE environment_locks SET \
                         status = CASE status WHEN 'held' THEN 'released' ELSE 'withdrawn' END, ended_at = $1 \
                         WHERE run_id = $2 AND ($3 IS NULL OR stage = $3) AND status IN ('waiting', 'held') \
                         RETURNING project_id, environment, status",
                    )
                    .bind(now)
                    .bind(run_id)
                    .bind(stage)
                    .fetch_all(&mut *tx)
                    .await?;
                    let mut waiting: Vec<i64> = Vec::new();
                    for row in released {
                        let status: String = row.try_get("status")?;
                        if status != "released" {
                            continue;
                        }
                        let project_id: i64 = row.try_get("project_id")?;
                        let environment: String = row.try_get("environment")?;
                        let runs = sqlx::query(
                            "SELECT DISTINCT run_id FROM environment_locks WHERE project_id = $1 \
                             AND lower(environment) = $2 AND status = 'waiting' ORDER BY run_id",
                        )
                        .bind(project_id)
                        .bind(environment.to_ascii_lowercase())
                        .fetch_all(&mut *tx)
                        .await?;
                        for row in runs {
                            let id: i64 = row.try_get("run_id")?;
                            if !waiting.contains(&id) {
                                waiting.push(id);
                            }
                        }
                    }
                    tx.commit().await?;
                    Ok(waiting)
                })
            }

            fn locks_of_run(&self, run_id: i64) -> StoreFuture<'_, Vec<EnvironmentLock>> {
                Box::pin(async move {
                    let rows = sqlx::query("SELECT * FROM environment_locks WHERE run_id = $1 ORDER BY id")
                        .bind(run_id)
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(EnvironmentLock::from_row).collect()
                })
            }

            fn runs_waiting_for_locks(&self) -> StoreFuture<'_, Vec<i64>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT DISTINCT run_id FROM environment_locks WHERE status = 'waiting' ORDER BY run_id",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(|row| Ok(row.try_get("run_id")?)).collect()
                })
            }

            fn setting<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<String>> {
                Box::pin(async move {
                    let row = sqlx::query("SELECT value FROM settings WHERE name = $1")
                        .bind(name)
                        .fetch_optional(&self.pool)
                        .await?;
                    Ok(row.map(|row| row.try_get("value")).transpose()?)
                })
            }

            fn set_setting<'a>(&'a self, name: &'a str, value: &'a str) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO settings (name, value) VALUES ($1, $2) \
                         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    )
                    .bind(name)
                    .bind(value)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                })
            }

            fn purge_overwritten(&self) -> StoreFuture<'_, ()> {
                Box::pin(async move {
                    for sql in <Self as Dialect>::PURGE_OVERWRITTEN {
                        sqlx::query(*sql).execute(&self.pool).await?;
                    }
                    Ok(())
                })
            }
        }


        impl FromDbRow<$row> for User {
            fn from_row(row: &$row) -> StoreResult<Self> {
                Ok(User {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    password_hash: row.try_get("password_hash")?,
                    is_admin: row.try_get("is_admin")?,
                    created_at: row.try_get("created_at")?,
                })
            }
        }

        impl FromDbRow<$row> for AccessToken {
            fn from_row(row: &$row) -> StoreResult<Self> {
                Ok(AccessToken {
                    id: row.try_get("id")?,
                    user_id: row.try_get("user_id")?,
                    name: row.try_get("name")?,
                    scopes: row.try_get("scopes")?,
                    created_at: row.try_get("created_at")?,
                })
            }
        }

        impl FromDbRow<$row> for Project {
            fn from_row(row: &$row) -> StoreResult<Self> {
                Ok(Project {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    created_at: row.try_get("created_at")?,
                })
            }
        }

        impl FromDbRow<$row> for Repository {
            fn from_row(row: &$row) -> StoreResult<Self> {
                Ok(Repository {
                    id: row.try_get("id")?,
                    project_id: row.try_get("project_id")?,
                    name: row.try_get("name")?,
                    created_at: row.try_get("created_at")?,
                })
            }
        }

        impl FromDbRow<$row> for PipelineVariable {
            fn from_row(row: &$row) -> StoreResult<Self> {
                Ok(PipelineVariable {
                    name: row.try_get("name")?,
                    value: row.try_get("value")?,
                    secret: row.try_get("is_secret")?,
                    allow_override: row.try_get("allow_override")?,
                })
            }
        }

        impl FromDbRow<$row> for Pipeline {
            fn from_row(row: &$row) -> StoreResult<Self> {
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

        impl FromDbRow<$row> for Run {
            fn from_row(row: &$row) -> StoreResult<Self> {
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

        impl FromDbRow<$row> for Job {
            fn from_row(row: &$row) -> StoreResult<Self> {
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
                    agent_os: row.try_get("agent_os")?,
                    environment: row.try_get("environment")?,
                    pool: row.try_get("pool")?,
                    demands: names_of(&row.try_get::<String, _>("demands")?),
                    target: row.try_get("target")?,
                })
            }
        }

        impl FromDbRow<$row> for Step {
            fn from_row(row: &$row) -> StoreResult<Self> {
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

        impl FromDbRow<$row> for LogChunk {
            fn from_row(row: &$row) -> StoreResult<Self> {
                Ok(LogChunk {
                    job_id: row.try_get("job_id")?,
                    sequence: row.try_get("sequence")?,
                    first_line: row.try_get("first_line")?,
                    line_count: row.try_get("line_count")?,
                    compressed: row.try_get("compressed")?,
                    object: row.try_get("object")?,
                })
            }
        }

        impl FromDbRow<$row> for ArtifactFile {
            fn from_row(row: &$row) -> StoreResult<Self> {
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

        impl FromDbRow<$row> for TestResult {
            fn from_row(row: &$row) -> StoreResult<Self> {
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

        impl FromDbRow<$row> for Agent {
            fn from_row(row: &$row) -> StoreResult<Self> {
                Ok(Agent {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    last_seen_at: row.try_get("last_seen_at")?,
                    created_at: row.try_get("created_at")?,
                    builtin: row.try_get("builtin")?,
                    pool: row.try_get("pool")?,
                    project_id: row.try_get("project_id")?,
                    enabled: row.try_get("enabled")?,
                    os: row.try_get("os")?,
                    version: row.try_get("version")?,
                    capabilities: row.try_get("capabilities")?,
                    environment_id: row.try_get("environment_id")?,
                    tags: names_of(&row.try_get::<String, _>("tags")?),
                })
            }
        }

        impl $store {
            /// The pipeline ids a library resource is authorized for: `sql` selects `pipeline_id`
            /// by the resource's id (`$1`), in order.
            async fn authorized_pipelines(&self, sql: &'static str, id: i64) -> StoreResult<Vec<i64>> {
                sqlx::query(sql)
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(|r| Ok(r.try_get("pipeline_id")?))
                    .collect()
            }

            async fn decisions_of(&self, approval_id: i64) -> StoreResult<Vec<ApprovalDecision>> {
                let rows =
                    sqlx::query("SELECT * FROM approval_decisions WHERE approval_id = $1 ORDER BY id")
                        .bind(approval_id)
                        .fetch_all(&self.pool)
                        .await?;
                rows.iter()
                    .map(|row| {
                        Ok(ApprovalDecision {
                            user: row.try_get("user_name")?,
                            approve: row.try_get("approve")?,
                            comment: row.try_get("comment")?,
                            decided_at: row.try_get("decided_at")?,
                        })
                    })
                    .collect()
            }
        }


        impl FromDbRow<$row> for ApprovalCheck {
            fn from_row(row: &$row) -> StoreResult<Self> {
                Ok(ApprovalCheck {
                    id: row.try_get("id")?,
                    project_id: row.try_get("project_id")?,
                    environment: row.try_get("environment")?,
                    approvers: names_of(&row.try_get::<String, _>("approvers")?),
                    min_approvals: row.try_get("min_approvals")?,
                    allow_requester: row.try_get("allow_requester")?,
                    instructions: row.try_get("instructions")?,
                    timeout_minutes: row.try_get("timeout_minutes")?,
                    in_sequence: row.try_get("in_sequence")?,
                    created_by: row.try_get("created_by")?,
                    created_at: row.try_get("created_at")?,
                })
            }
        }

        impl FromDbRow<$row> for Approval {
            fn from_row(row: &$row) -> StoreResult<Self> {
                Ok(Approval {
                    id: row.try_get("id")?,
                    run_id: row.try_get("run_id")?,
                    stage: row.try_get("stage")?,
                    environment: row.try_get("environment")?,
                    check_id: row.try_get("check_id")?,
                    approvers: names_of(&row.try_get::<String, _>("approvers")?),
                    min_approvals: row.try_get("min_approvals")?,
                    allow_requester: row.try_get("allow_requester")?,
                    instructions: row.try_get("instructions")?,
                    timeout_minutes: row.try_get("timeout_minutes")?,
                    in_sequence: row.try_get("in_sequence")?,
                    attempt: row.try_get("attempt")?,
                    status: row.try_get("status")?,
                    requested_at: row.try_get("requested_at")?,
                    decided_at: row.try_get("decided_at")?,
                    decisions: Vec::new(),
                })
            }
        }

        impl FromDbRow<$row> for EnvironmentCheck {
            fn from_row(row: &$row) -> StoreResult<Self> {
                Ok(EnvironmentCheck {
                    id: row.try_get("id")?,
                    project_id: row.try_get("project_id")?,
                    environment: row.try_get("environment")?,
                    kind: row.try_get("kind")?,
                    config: row.try_get("config")?,
                    created_by: row.try_get("created_by")?,
                    created_at: row.try_get("created_at")?,
                })
            }
        }

        impl FromDbRow<$row> for EnvironmentLock {
            fn from_row(row: &$row) -> StoreResult<Self> {
                Ok(EnvironmentLock {
                    id: row.try_get("id")?,
                    project_id: row.try_get("project_id")?,
                    environment: row.try_get("environment")?,
                    run_id: row.try_get("run_id")?,
                    stage: row.try_get("stage")?,
                    attempt: row.try_get("attempt")?,
                    behavior: row.try_get("behavior")?,
                    timeout_minutes: row.try_get("timeout_minutes")?,
                    status: row.try_get("status")?,
                    reason: row.try_get("reason")?,
                    requested_at: row.try_get("requested_at")?,
                    granted_at: row.try_get("granted_at")?,
                    ended_at: row.try_get("ended_at")?,
                })
            }
        }

        impl FromDbRow<$row> for Environment {
            fn from_row(row: &$row) -> StoreResult<Self> {
                Ok(Environment {
                    id: row.try_get("id")?,
                    project_id: row.try_get("project_id")?,
                    name: row.try_get("name")?,
                    description: row.try_get("description")?,
                    created_at: row.try_get("created_at")?,
                    created_by: row.try_get("created_by")?,
                })
            }
        }

        impl FromDbRow<$row> for Deployment {
            fn from_row(row: &$row) -> StoreResult<Self> {
                Ok(Deployment {
                    id: row.try_get("id")?,
                    environment_id: row.try_get("environment_id")?,
                    environment: row.try_get("environment")?,
                    run_id: row.try_get("run_id")?,
                    run_name: row.try_get("run_name")?,
                    run_number: row.try_get("run_number")?,
                    job_id: row.try_get("job_id")?,
                    attempt: row.try_get("attempt")?,
                    pipeline_id: row.try_get("pipeline_id")?,
                    pipeline_name: row.try_get("pipeline_name")?,
                    stage_name: row.try_get("stage_name")?,
                    job_name: row.try_get("job_name")?,
                    resource_name: row.try_get("resource_name")?,
                    source_commit: row.try_get("source_commit")?,
                    source_branch: row.try_get("source_branch")?,
                    artifacts: row.try_get("artifacts")?,
                    variables: row.try_get("variables")?,
                    requested_by: row.try_get("requested_by")?,
                    status: row.try_get("status")?,
                    result: row.try_get("result")?,
                    started_at: row.try_get("started_at")?,
                    finished_at: row.try_get("finished_at")?,
                })
            }
        }

        };
    };
}
