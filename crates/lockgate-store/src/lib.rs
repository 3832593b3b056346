//! Every SQL statement of Lockgate, behind one interface: the [`Storage`] trait, used through the
//! cheap-clone [`Store`] handle. SQLite is the default backend ([`SqliteStore`]: WAL mode, one file in
//! the data folder); [`PostgresStore`] serves several servers on one database. Both have their own
//! DDL and pass the same conformance tests; their queries are runtime queries with `$1`
//! placeholders and hand-written row mapping, written once in `sql.rs` for both.

mod locks;
pub mod migrate;
mod records;
#[macro_use]
mod sql;
mod postgres;
mod sqlite;
mod storage;

use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use postgres::PostgresStore;
pub use records::*;
pub use sqlite::SqliteStore;
pub use storage::{Storage, StoreFuture};

/// What can go wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database at {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// The database setting is neither `sqlite` nor a `postgres://` URL.
    #[error(
        "unknown database `{scheme}`: expected `sqlite`, `sqlite://<data folder>` or a `postgres://` URL"
    )]
    UnknownDatabase { scheme: String },
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &error
            && db.is_unique_violation()
        {
            return StoreError::AlreadyExists {
                what: "a record with that name".into(),
            };
        }
        StoreError::Database(error)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The handle the rest of Lockgate uses: any [`Storage`] backend behind an `Arc`. Cloning is cheap,
/// and it dereferences to `dyn Storage`, so `store.create_run(..)` calls the backend.
#[derive(Clone)]
pub struct Store(Arc<dyn Storage>);

impl Store {
    /// Wraps a backend.
    pub fn new(backend: impl Storage + 'static) -> Store {
        Store(Arc::new(backend))
    }

    /// Opens the database a server is configured with. `database` is one of:
    /// - `sqlite` (or empty): `lockgate.db` in `data_dir`, created when missing;
    /// - `sqlite://<folder>`: `lockgate.db` in that folder instead;
    /// - `postgres://...` or `postgresql://...`: that PostgreSQL database ([`PostgresStore`]);
    ///   `data_dir` is not used.
    ///
    /// Anything else fails with [`StoreError::UnknownDatabase`] (naming only the scheme, so that no
    /// password in a URL ends up in a log).
    pub async fn open(database: &str, data_dir: &Path) -> StoreResult<Store> {
        let database = database.trim();
        let scheme = database
            .split_once("://")
            .map_or(database, |(scheme, _)| scheme);
        match scheme.to_ascii_lowercase().as_str() {
            "" | "sqlite" => match database.split_once("://") {
                Some((_, folder)) if !folder.is_empty() => {
                    Store::open_sqlite(Path::new(folder)).await
                }
                _ => Store::open_sqlite(data_dir).await,
            },
            "postgres" | "postgresql" => Ok(Store::new(PostgresStore::open(database).await?)),
            _ => Err(StoreError::UnknownDatabase {
                scheme: scheme.to_string(),
            }),
        }
    }

    /// Opens (creating when missing) the SQLite database `lockgate.db` in `data_dir`.
    pub async fn open_sqlite(data_dir: &Path) -> StoreResult<Store> {
        Ok(Store::new(SqliteStore::open(data_dir).await?))
    }
}

impl Deref for Store {
    type Target = dyn Storage;
    fn deref(&self) -> &(dyn Storage + 'static) {
        &*self.0
    }
}

impl From<Arc<dyn Storage>> for Store {
    fn from(backend: Arc<dyn Storage>) -> Store {
        Store(backend)
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Store")
    }
}

/// Current time in Unix milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
#[macro_use]
mod conformance;
#[cfg(test)]
mod postgres_tests;
#[cfg(any(test, feature = "test-postgres"))]
pub mod test_postgres;
#[cfg(test)]
mod tests;
