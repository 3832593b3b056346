//! The SQLite backend: one `lockgate.db` file in the data folder, WAL mode, embedded migrations
//! (`migrations/sqlite`); its statements are the ones in `sql.rs`, expanded for SQLite's rows.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};

use crate::sql::{Dialect, migrator};
use crate::{StoreError, StoreResult};

/// The migrations of the SQLite backend (`migrations/sqlite`).
pub(crate) const SQLITE_MIGRATIONS: &[(i64, &str, &str)] =
    migrations!(own: "sqlite", same: "sqlite");

/// The SQLite implementation of [`Storage`]. Cloning is cheap (a pool handle).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating when missing) `lockgate.db` in `data_dir` in WAL mode and applies the migrations.
    pub async fn open(data_dir: &Path) -> StoreResult<SqliteStore> {
        Self::open_with(data_dir, SQLITE_MIGRATIONS).await
    }

    /// [`open`](Self::open) applying only `migrations` (tests build older databases with it).
    pub(crate) async fn open_with(
        data_dir: &Path,
        migrations: &[(i64, &'static str, &'static str)],
    ) -> StoreResult<SqliteStore> {
        let path = data_dir.join("lockgate.db");
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // Deleted and overwritten rows are zeroed, not left in free pages: an encrypted secret
            // replacing its clear value (the upgrade of an older database) leaves no copy behind.
            .pragma("secure_delete", "ON")
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        migrator(migrations).run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    /// Opens an existing `lockgate.db` in `data_dir` read-only, as it is (no migration): what
    /// `lockgate migrate-store` copies from, leaving it untouched.
    pub async fn open_read_only(data_dir: &Path) -> StoreResult<SqliteStore> {
        let path = data_dir.join("lockgate.db");
        let open_error = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(open_error)?
            .filename(&path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        Ok(SqliteStore { pool })
    }

    /// Closes every connection (the last one writes the WAL back into `lockgate.db`).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The highest migration of this binary's SQLite schema.
    pub fn latest_migration() -> i64 {
        SQLITE_MIGRATIONS
            .last()
            .map_or(0, |(version, _, _)| *version)
    }
}

impl Dialect for SqliteStore {
    // One writer at a time: the conditional update hands a queued job to one agent.
    const LEASE_NEXT_JOB: &'static str = "UPDATE jobs SET status = 'running', agent_name = $1, \
        lease_token_hash = $2, lease_expires_at = $3, started_at = $4 \
        WHERE id = (SELECT id FROM jobs WHERE status = 'queued' \
        AND (agent_os IS NULL OR agent_os = $5) ORDER BY id LIMIT 1) \
        AND status = 'queued' RETURNING *";
    // SQLite serializes writers: a transaction that writes first holds the lock from its start.
    const LOCK_PIPELINE: Option<&'static str> = None;
    const LOCK_JOB: Option<&'static str> = None;
    const LOCK_ENVIRONMENT_QUEUE: Option<&'static str> = None;
    // secure_delete zeroes freed pages in the database file; the checkpoint writes the WAL back and
    // truncates it, so older page images (with the clear values) go too.
    const PURGE_OVERWRITTEN: &'static [&'static str] = &["PRAGMA wal_checkpoint(TRUNCATE)"];
}

sql_storage!(SqliteStore, SqliteRow);
