//! The PostgreSQL backend, for several servers on one database: a connection pool to a
//! `postgres://` URL, embedded migrations (`migrations/postgres`, applied under sqlx's advisory lock
//! so that servers starting together migrate once), and the statements of `sql.rs` expanded for
//! PostgreSQL's rows. Where SQLite relies on its single writer, this backend takes row locks: jobs are
//! leased with `FOR UPDATE SKIP LOCKED`, run and log chunk numbers are taken under the pipeline's and
//! the job's row lock, and an environment's lock queue settles under an advisory lock.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, PgPool};

use crate::sql::{Dialect, migrator};
use crate::{StoreError, StoreResult};

/// The migrations of the PostgreSQL backend (`migrations/postgres`, and the few that read the same
/// on both backends from `migrations/sqlite`).
pub(crate) const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] =
    migrations!(own: "postgres", same: "sqlite");

/// The PostgreSQL implementation of [`Storage`](crate::Storage). Cloning is cheap (a pool handle).
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pub(crate) pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`) and
    /// applies the migrations. Errors name the host and database, never the password.
    pub async fn open(url: &str) -> StoreResult<PostgresStore> {
        Self::open_with(url, POSTGRES_MIGRATIONS).await
    }

    /// [`open`](Self::open) applying only `migrations` (tests build older databases with it).
    pub(crate) async fn open_with(
        url: &str,
        migrations: &[(i64, &'static str, &'static str)],
    ) -> StoreResult<PostgresStore> {
        let place = redacted(url);
        let options = PgConnectOptions::from_str(url).map_err(|source| StoreError::Open {
            path: place.clone().into(),
            source,
        })?;
        // One connection first, so that an unreachable server or a refused login fails at once
        // (the pool would retry until its acquire timeout); the pool connects as it needs.
        PgConnection::connect_with(&options)
            .await
            .map_err(|source| StoreError::Open {
                path: place.into(),
                source,
            })?
            .close()
            .await?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect_lazy_with(options);
        migrator(migrations).run(&pool).await?;
        Ok(PostgresStore { pool })
    }
}

/// `url` without its user information (`postgres://host:port/database`), for messages.
pub(crate) fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            let rest = rest.split_once('?').map_or(rest, |(place, _)| place);
            format!("{scheme}://{rest}")
        }
        None => "the PostgreSQL database".to_string(),
    }
}

impl Dialect for PostgresStore {
    // The oldest queued job nobody else is taking is locked and leased in one statement: agents
    // asking at the same time, through any server, skip each other's rows instead of waiting.
    const LEASE_NEXT_JOB: &'static str = "UPDATE jobs SET status = 'running', agent_name = $1, \
        lease_token_hash = $2, lease_expires_at = $3, started_at = $4 \
        WHERE id = (SELECT id FROM jobs WHERE status = 'queued' \
        AND (agent_os IS NULL OR agent_os = $5) ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
        AND status = 'queued' RETURNING *";
    const LOCK_PIPELINE: Option<&'static str> =
        Some("SELECT id FROM pipelines WHERE id = $1 FOR UPDATE");
    const LOCK_JOB: Option<&'static str> = Some("SELECT id FROM jobs WHERE id = $1 FOR UPDATE");
    const LOCK_ENVIRONMENT_QUEUE: Option<&'static str> =
        Some("SELECT pg_advisory_xact_lock(hashtextextended($2, $1))");
    // Rewrites the tables whose values the secrets upgrade overwrites, so that no old row version
    // (a clear value) stays in their files.
    const PURGE_OVERWRITTEN: &'static [&'static str] =
        &["VACUUM (FULL) pipeline_variables, jobs, settings"];
}

sql_storage!(PostgresStore, PgRow);
