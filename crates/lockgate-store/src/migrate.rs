//! `lockgate migrate-store`: copies an embedded install (SQLite) into an empty PostgreSQL database.
//! The SQLite file is only read (opened read-only) and must be at this binary's migrations; the
//! PostgreSQL database is brought to them. The tables copied are those of the PostgreSQL schema, and
//! the SQLite schema must have exactly the same tables and columns ([`schema_differences`]): a table
//! one backend lacks stops the copy instead of being left behind. The tables are copied parent before child (from the foreign keys), each row with its own id, in one
//! PostgreSQL transaction (a failure leaves the target as it was); the identity sequences are then set
//! past the highest id. Each table is verified by its row count and a checksum: blake3 over the
//! sorted blake3 digests of its rows, each row read back from PostgreSQL and encoded by column type.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use futures_util::TryStreamExt;
use sqlx::Row;

use crate::{PostgresStore, SqliteStore, StoreError};

/// One copied table as verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableCopy {
    pub table: String,
    pub rows: u64,
    /// The checksum both sides agree on (64 hex digits).
    pub checksum: String,
}

/// What went wrong with a copy, naming the table (and column) when there is one.
#[derive(Debug, thiserror::Error)]
pub enum MigrateStoreError {
    #[error("no embedded database: {0} does not exist")]
    NoSource(String),
    #[error(
        "the embedded database is at migration {found}, this lockgate's schema at {expected}: {hint}"
    )]
    SourceVersion {
        found: i64,
        expected: i64,
        hint: &'static str,
    },
    #[error("the SQLite and PostgreSQL schemas differ, nothing was copied: {}", .0.join("; "))]
    SchemaDiffers(Vec<String>),
    #[error(
        "the target database is not empty: table `{table}` has {rows} rows; migrate into a new, empty database"
    )]
    TargetNotEmpty { table: String, rows: i64 },
    #[error("table `{table}`, column `{column}`: {reason}")]
    Column {
        table: String,
        column: String,
        reason: String,
    },
    #[error("the foreign keys between {0} form a cycle")]
    Cycle(String),
    #[error("table `{table}` differs after the copy: {detail}")]
    Mismatch { table: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for MigrateStoreError {
    fn from(error: sqlx::Error) -> Self {
        MigrateStoreError::Store(StoreError::from(error))
    }
}

/// Column types of the schema (the PostgreSQL migrations use only these).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Int,
    Bool,
    Text,
    Bytes,
}

#[derive(Clone, Debug)]
enum Value {
    Int(Option<i64>),
    Bool(Option<bool>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

impl Value {
    /// A self-delimiting encoding for the checksum: a tag, then the length and bytes.
    fn encode(&self, out: &mut Vec<u8>) {
        let (tag, bytes): (u8, Option<Vec<u8>>) = match self {
            Value::Int(v) => (1, v.map(|n| n.to_le_bytes().to_vec())),
            Value::Bool(v) => (2, v.map(|b| vec![u8::from(b)])),
            Value::Text(v) => (3, v.as_ref().map(|s| s.as_bytes().to_vec())),
            Value::Bytes(v) => (4, v.clone()),
        };
        match bytes {
            None => out.push(0),
            Some(bytes) => {
                out.push(tag);
                out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
                out.extend_from_slice(&bytes);
            }
        }
    }
}

struct Table {
    name: String,
    columns: Vec<(String, Kind)>,
    /// The identity column (`id`), when the table has one.
    identity: Option<String>,
}

/// Copies the SQLite database in `data_dir` into the empty PostgreSQL database at `url`, and returns
/// each table's verified row count and checksum, in the order copied.
pub async fn sqlite_to_postgres(
    data_dir: &Path,
    url: &str,
) -> Result<Vec<TableCopy>, MigrateStoreError> {
    let file = data_dir.join("lockgate.db");
    if !file.is_file() {
        return Err(MigrateStoreError::NoSource(file.display().to_string()));
    }
    let source = SqliteStore::open_read_only(data_dir).await?;
    let found: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&source.pool)
            .await
            .unwrap_or(None);
    let expected = SqliteStore::latest_migration();
    let found = found.unwrap_or(0);
    if found != expected {
        return Err(MigrateStoreError::SourceVersion {
            found,
            expected,
            hint: if found < expected {
                "start this lockgate's server on the data folder once (it upgrades the database), stop it, then migrate"
            } else {
                "migrate with the lockgate version that last ran this install"
            },
        });
    }
    let target = PostgresStore::open(url).await?;
    let tables = target_tables(&target).await?;
    let differences = schema_differences(&sqlite_schema(&source).await?, &postgres_schema(&tables));
    if !differences.is_empty() {
        return Err(MigrateStoreError::SchemaDiffers(differences));
    }
    for table in &tables {
        let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM \"{}\"",
            table.name
        )))
        .fetch_one(&target.pool)
        .await?;
        if rows > 0 {
            return Err(MigrateStoreError::TargetNotEmpty {
                table: table.name.clone(),
                rows,
            });
        }
    }
    let mut copied = Vec::new();
    let mut transaction = target.pool.begin().await?;
    for table in &tables {
        let (rows, checksum) = copy_table(&source, &mut transaction, table).await?;
        if let Some(identity) = &table.identity {
            // The next id a server gives out follows the highest one copied.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT setval(pg_get_serial_sequence('\"{name}\"', '{identity}'), \
                 COALESCE((SELECT MAX(\"{identity}\") FROM \"{name}\"), 0) + 1, false)",
                name = table.name
            )))
            .execute(&mut *transaction)
            .await?;
        }
        copied.push((table, rows, checksum));
    }
    transaction.commit().await?;
    // Verified against what PostgreSQL now holds, read back after the commit.
    for (table, rows, checksum) in copied.iter() {
        let query = format!("SELECT {} FROM \"{}\"", column_list(table), table.name);
        let mut stream = sqlx::query(sqlx::AssertSqlSafe(query)).fetch(&target.pool);
        let mut digests = Vec::new();
        while let Some(row) = stream.try_next().await? {
            let values = table
                .columns
                .iter()
                .map(|(column, kind)| postgres_value(&row, table, column, *kind))
                .collect::<Result<Vec<_>, _>>()?;
            digests.push(row_digest(&values));
        }
        let (target_rows, target_checksum) = checksum_of(digests);
        if target_rows != *rows || target_checksum != *checksum {
            return Err(MigrateStoreError::Mismatch {
                table: table.name.clone(),
                detail: format!(
                    "SQLite has {rows} rows ({checksum}), PostgreSQL {target_rows} ({target_checksum})"
                ),
            });
        }
    }
    source.pool.close().await;
    Ok(copied
        .into_iter()
        .map(|(table, rows, checksum)| TableCopy {
            table: table.name.clone(),
            rows,
            checksum,
        })
        .collect())
}

/// Tables by name with their column names.
pub type Schema = BTreeMap<String, BTreeSet<String>>;

/// The tables of a SQLite database and their columns, without SQLite's and sqlx's own tables.
pub async fn sqlite_schema(source: &SqliteStore) -> Result<Schema, MigrateStoreError> {
    let rows = sqlx::query(
        "SELECT m.name AS table_name, p.name AS column_name FROM sqlite_master m \
         JOIN pragma_table_info(m.name) p WHERE m.type = 'table' \
         AND m.name NOT LIKE 'sqlite_%' AND m.name <> '_sqlx_migrations'",
    )
    .fetch_all(&source.pool)
    .await?;
    let mut schema = Schema::new();
    for row in rows {
        schema
            .entry(row.try_get("table_name")?)
            .or_default()
            .insert(row.try_get("column_name")?);
    }
    Ok(schema)
}

/// The tables of a PostgreSQL database (its current schema) and their columns.
pub async fn postgres_schema_of(target: &PostgresStore) -> Result<Schema, MigrateStoreError> {
    Ok(postgres_schema(&target_tables(target).await?))
}

fn postgres_schema(tables: &[Table]) -> Schema {
    tables
        .iter()
        .map(|table| {
            let columns = table.columns.iter().map(|(name, _)| name.clone()).collect();
            (table.name.clone(), columns)
        })
        .collect()
}

/// What one schema has that the other lacks, a sentence each (empty when they agree): what
/// `migrate-store` checks before copying, and what a test checks of this binary's two schemas, so
/// that a table or column added to one backend only cannot be forgotten by the copy.
pub fn schema_differences(sqlite: &Schema, postgres: &Schema) -> Vec<String> {
    let mut differences = Vec::new();
    for (table, columns) in sqlite {
        let Some(other) = postgres.get(table) else {
            differences.push(format!("table `{table}` is only in SQLite"));
            continue;
        };
        for column in columns.difference(other) {
            differences.push(format!("column `{table}.{column}` is only in SQLite"));
        }
        for column in other.difference(columns) {
            differences.push(format!("column `{table}.{column}` is only in PostgreSQL"));
        }
    }
    for table in postgres.keys().filter(|table| !sqlite.contains_key(*table)) {
        differences.push(format!("table `{table}` is only in PostgreSQL"));
    }
    differences
}

/// The tables of the PostgreSQL schema with their columns, parents before children.
async fn target_tables(target: &PostgresStore) -> Result<Vec<Table>, MigrateStoreError> {
    let rows = sqlx::query(
        "SELECT c.table_name::text AS table_name, c.column_name::text AS column_name, \
         c.data_type::text AS data_type, c.is_identity::text AS is_identity \
         FROM information_schema.columns c JOIN information_schema.tables t \
         ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
         WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' \
         AND c.table_name <> '_sqlx_migrations' ORDER BY c.table_name, c.ordinal_position",
    )
    .fetch_all(&target.pool)
    .await?;
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    for row in rows {
        let name: String = row.try_get("table_name")?;
        let column: String = row.try_get("column_name")?;
        let data_type: String = row.try_get("data_type")?;
        let identity: String = row.try_get("is_identity")?;
        let kind = match data_type.as_str() {
            "bigint" | "integer" | "smallint" => Kind::Int,
            "boolean" => Kind::Bool,
            "text" | "character varying" => Kind::Text,
            "bytea" => Kind::Bytes,
            other => {
                return Err(MigrateStoreError::Column {
                    table: name,
                    column,
                    reason: format!("type `{other}` is not one migrate-store copies"),
                });
            }
        };
        let table = tables.entry(name.clone()).or_insert_with(|| Table {
            name,
            columns: Vec::new(),
            identity: None,
        });
        if identity == "YES" {
            table.identity = Some(column.clone());
        }
        table.columns.push((column, kind));
    }
    let edges = sqlx::query(
        "SELECT child.relname::text AS child, parent.relname::text AS parent FROM pg_constraint k \
         JOIN pg_class child ON child.oid = k.conrelid JOIN pg_class parent ON parent.oid = k.confrelid \
         JOIN pg_namespace n ON n.oid = child.relnamespace \
         WHERE k.contype = 'f' AND n.nspname = current_schema()",
    )
    .fetch_all(&target.pool)
    .await?;
    let mut parents: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for edge in edges {
        let child: String = edge.try_get("child")?;
        let parent: String = edge.try_get("parent")?;
        if child != parent {
            parents.entry(child).or_default().insert(parent);
        }
    }
    // Kahn's algorithm, by name among the tables whose parents are done, so the order is stable.
    let mut ordered = Vec::new();
    let mut done = BTreeSet::new();
    while done.len() < tables.len() {
        let ready: Vec<String> = tables
            .keys()
            .filter(|name| !done.contains(*name))
            .filter(|name| {
                parents
                    .get(*name)
                    .is_none_or(|set| set.iter().all(|p| done.contains(p)))
            })
            .cloned()
            .collect();
        if ready.is_empty() {
            let left: Vec<_> = tables.keys().filter(|n| !done.contains(*n)).collect();
            return Err(MigrateStoreError::Cycle(format!("{left:?}")));
        }
        for name in ready {
            done.insert(name.clone());
            ordered.push(name);
        }
    }
    Ok(ordered
        .into_iter()
        .filter_map(|name| tables.remove(&name))
        .collect())
}

fn column_list(table: &Table) -> String {
    table
        .columns
        .iter()
        .map(|(column, _)| format!("\"{column}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Largest number of bound values in one INSERT.
const MAX_BINDS: usize = 8000;

/// Copies one table's rows in rowid order, in INSERTs of many rows; returns its count and checksum.
async fn copy_table(
    source: &SqliteStore,
    transaction: &mut sqlx::PgConnection,
    table: &Table,
) -> Result<(u64, String), MigrateStoreError> {
    let columns = column_list(table);
    let query = format!("SELECT {columns} FROM \"{}\" ORDER BY rowid", table.name);
    let mut stream = sqlx::query(sqlx::AssertSqlSafe(query)).fetch(&source.pool);
    let per_batch = (MAX_BINDS / table.columns.len().max(1)).max(1);
    let mut batch: Vec<Vec<Value>> = Vec::new();
    let mut digests = Vec::new();
    loop {
        let row = stream
            .try_next()
            .await
            .map_err(|error| MigrateStoreError::Column {
                table: table.name.clone(),
                column: "*".into(),
                reason: format!("cannot read from SQLite: {error}"),
            })?;
        let end = row.is_none();
        if let Some(row) = row {
            let values = table
                .columns
                .iter()
                .map(|(column, kind)| sqlite_value(&row, table, column, *kind))
                .collect::<Result<Vec<_>, _>>()?;
            digests.push(row_digest(&values));
            batch.push(values);
        }
        if !batch.is_empty() && (end || batch.len() >= per_batch) {
            insert_rows(transaction, table, &columns, &batch).await?;
            batch.clear();
        }
        if end {
            break;
        }
    }
    Ok(checksum_of(digests))
}

async fn insert_rows(
    transaction: &mut sqlx::PgConnection,
    table: &Table,
    columns: &str,
    rows: &[Vec<Value>],
) -> Result<(), MigrateStoreError> {
    let width = table.columns.len();
    let values: Vec<String> = (0..rows.len())
        .map(|row| {
            let places: Vec<String> = (1..=width)
                .map(|column| format!("${}", row * width + column))
                .collect();
            format!("({})", places.join(", "))
        })
        .collect();
    let overriding = if table.identity.is_some() {
        " OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    let sql = format!(
        "INSERT INTO \"{}\" ({columns}){overriding} VALUES {}",
        table.name,
        values.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for row in rows {
        for value in row {
            query = match value {
                Value::Int(v) => query.bind(*v),
                Value::Bool(v) => query.bind(*v),
                Value::Text(v) => query.bind(v.clone()),
                Value::Bytes(v) => query.bind(v.clone()),
            };
        }
    }
    query
        .execute(transaction)
        .await
        .map_err(|error| MigrateStoreError::Column {
            table: table.name.clone(),
            column: "*".into(),
            reason: format!("cannot write to PostgreSQL: {error}"),
        })?;
    Ok(())
}

fn sqlite_value(
    row: &sqlx::sqlite::SqliteRow,
    table: &Table,
    column: &str,
    kind: Kind,
) -> Result<Value, MigrateStoreError> {
    let bad = |error: sqlx::Error| MigrateStoreError::Column {
        table: table.name.clone(),
        column: column.to_string(),
        reason: format!("cannot read the SQLite value: {error}"),
    };
    Ok(match kind {
        Kind::Int => Value::Int(row.try_get_unchecked(column).map_err(bad)?),
        // SQLite keeps booleans as integers.
        Kind::Bool => Value::Bool(
            row.try_get_unchecked::<Option<i64>, _>(column)
                .map_err(bad)?
                .map(|n| n != 0),
        ),
        Kind::Text => Value::Text(row.try_get(column).map_err(bad)?),
        Kind::Bytes => Value::Bytes(row.try_get(column).map_err(bad)?),
    })
}

fn postgres_value(
    row: &sqlx::postgres::PgRow,
    table: &Table,
    column: &str,
    kind: Kind,
) -> Result<Value, MigrateStoreError> {
    let bad = |error: sqlx::Error| MigrateStoreError::Column {
        table: table.name.clone(),
        column: column.to_string(),
        reason: format!("cannot read the PostgreSQL value: {error}"),
    };
    Ok(match kind {
        Kind::Int => Value::Int(row.try_get(column).map_err(bad)?),
        Kind::Bool => Value::Bool(row.try_get(column).map_err(bad)?),
        Kind::Text => Value::Text(row.try_get(column).map_err(bad)?),
        Kind::Bytes => Value::Bytes(row.try_get(column).map_err(bad)?),
    })
}

fn row_digest(values: &[Value]) -> [u8; 32] {
    let mut bytes = Vec::new();
    for value in values {
        value.encode(&mut bytes);
    }
    *blake3::hash(&bytes).as_bytes()
}

/// Count and checksum of a table from its rows' digests, whatever order the rows came in.
fn checksum_of(mut digests: Vec<[u8; 32]>) -> (u64, String) {
    digests.sort_unstable();
    let mut hasher = blake3::Hasher::new();
    for digest in &digests {
        hasher.update(digest);
    }
    (digests.len() as u64, hasher.finalize().to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This binary's two schemas have the same tables and columns, so `migrate-store` copies every
    /// table: a table or column added by a migration of one backend only fails here.
    #[tokio::test]
    async fn both_schemas_have_the_same_tables_and_columns() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(dir.path()).await.unwrap();
        let postgres = crate::test_postgres::TestPostgres::start().await;
        let target = PostgresStore::open(postgres.url()).await.unwrap();
        let sqlite_tables = sqlite_schema(&sqlite).await.unwrap();
        let postgres_tables = postgres_schema_of(&target).await.unwrap();
        assert_eq!(
            schema_differences(&sqlite_tables, &postgres_tables),
            Vec::<String>::new()
        );
        for table in [
            "runs",
            "jobs",
            "log_chunks",
            "secure_files",
            "service_connections",
            "agents",
        ] {
            assert!(
                sqlite_tables.contains_key(table),
                "{table}: {sqlite_tables:?}"
            );
        }
        assert!(sqlite_tables["log_chunks"].contains("object"));
        assert!(sqlite_tables["agents"].contains("environment_id"));
    }

    /// A copy that fails half way (a trigger refuses the secure files, copied after the users and
    /// projects) leaves every table of the target empty, so the same command can run again; it then
    /// copies what the source has, which it left as it was, and refuses a third time.
    #[tokio::test]
    async fn a_failed_copy_leaves_the_target_empty_and_can_run_again() {
        use crate::Storage;
        let dir = tempfile::tempdir().unwrap();
        {
            let sqlite = SqliteStore::open(dir.path()).await.unwrap();
            let user = sqlite.create_user("ada", "hash", true).await.unwrap();
            let project = sqlite.create_project("p", user.id).await.unwrap();
            sqlite
                .put_secure_file(&crate::NewSecureFile {
                    project_id: project.id,
                    name: "key.pfx".into(),
                    description: String::new(),
                    content: "sealed".into(),
                    size: 3,
                    digest: "abc".into(),
                    user: user.name.clone(),
                })
                .await
                .unwrap();
            sqlite.pool.close().await;
        }
        let source = std::fs::read(dir.path().join("lockgate.db")).unwrap();
        let postgres = crate::test_postgres::TestPostgres::start().await;
        let target = PostgresStore::open(postgres.url()).await.unwrap();
        for statement in [
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse BEFORE INSERT ON secure_files FOR EACH ROW EXECUTE FUNCTION refuse()",
        ] {
            sqlx::query(statement).execute(&target.pool).await.unwrap();
        }
        let error = sqlite_to_postgres(dir.path(), postgres.url())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("refused by the test"), "{error}");
        for table in target_tables(&target).await.unwrap() {
            let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM \"{}\"",
                table.name
            )))
            .fetch_one(&target.pool)
            .await
            .unwrap();
            assert_eq!(rows, 0, "{} after the failed copy", table.name);
        }
        sqlx::query("DROP TRIGGER refuse ON secure_files")
            .execute(&target.pool)
            .await
            .unwrap();
        let copied = sqlite_to_postgres(dir.path(), postgres.url())
            .await
            .unwrap();
        let rows = |name: &str| copied.iter().find(|t| t.table == name).unwrap().rows;
        assert_eq!(
            (rows("users"), rows("projects"), rows("secure_files")),
            (1, 1, 1)
        );
        assert_eq!(
            target
                .secure_file_content(1, "key.pfx")
                .await
                .unwrap()
                .as_deref(),
            Some("sealed")
        );
        let again = sqlite_to_postgres(dir.path(), postgres.url())
            .await
            .unwrap_err();
        assert!(
            matches!(&again, MigrateStoreError::TargetNotEmpty { .. }),
            "{again}"
        );
        assert_eq!(
            std::fs::read(dir.path().join("lockgate.db")).unwrap(),
            source
        );
    }

    #[test]
    fn differences_name_the_table_and_column() {
        let schema = |tables: &[(&str, &[&str])]| -> Schema {
            tables
                .iter()
                .map(|(table, columns)| {
                    let columns = columns.iter().map(|c| c.to_string()).collect();
                    (table.to_string(), columns)
                })
                .collect()
        };
        let sqlite = schema(&[("runs", &["id", "title"]), ("extra", &["id"])]);
        let postgres = schema(&[("runs", &["id", "note"]), ("other", &["id"])]);
        assert_eq!(
            schema_differences(&sqlite, &postgres),
            vec![
                "table `extra` is only in SQLite",
                "column `runs.title` is only in SQLite",
                "column `runs.note` is only in PostgreSQL",
                "table `other` is only in PostgreSQL",
            ]
        );
    }
}
