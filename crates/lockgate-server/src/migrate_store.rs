//! `lockgate migrate-store --from sqlite:DATA --to postgres://... [--objects URL]`: moves an embedded
//! install to PostgreSQL (the copy itself is `lockgate_store::migrate`) and, with `--objects`, its
//! artifact contents from `DATA/artifacts` to other object storage (first), each verified by its digest.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::objects::Objects;

/// What the command was asked.
#[derive(Clone, Debug)]
pub struct MigrateOptions {
    /// The data folder of the embedded install (`sqlite:DATA`).
    pub data_dir: PathBuf,
    /// The empty PostgreSQL database.
    pub database: String,
    /// Where the artifact contents go (`--objects`), when they move.
    pub objects: Option<String>,
}

/// Parses `--from`: `sqlite:DATA` or `sqlite://DATA`, a data folder holding `lockgate.db`.
pub fn parse_from(from: &str) -> Result<PathBuf, String> {
    let folder = from
        .strip_prefix("sqlite://")
        .or_else(|| from.strip_prefix("sqlite:"))
        .filter(|folder| !folder.is_empty())
        .ok_or_else(|| {
            format!(
                "--from `{from}`: expected `sqlite:DATA_DIR` (the data folder of `lockgate up`)"
            )
        })?;
    Ok(PathBuf::from(folder))
}

/// Checks `--to`: a PostgreSQL URL.
pub fn check_to(to: &str) -> Result<(), String> {
    if to.starts_with("postgres://") || to.starts_with("postgresql://") {
        Ok(())
    } else {
        Err("--to: expected a `postgres://user:password@host:port/database` URL".into())
    }
}

/// Runs the copy and prints what was copied and verified: a line per table (rows and checksum), then
/// the objects.
pub fn run(options: MigrateOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let target_objects = match &options.objects {
            Some(spec) => Some(Objects::open(spec, &options.data_dir).map_err(anyhow::Error::msg)?),
            None => None,
        };
        // The objects first: copying them again is harmless, while a filled database refuses a
        // second try.
        if let Some(objects) = &target_objects {
            objects.check().await?;
            let copied = copy_objects(&options.data_dir.join("artifacts"), objects).await?;
            println!(
                "copied {} artifact contents and {} archived logs to {}; each read back matches",
                copied.contents,
                copied.logs,
                objects.describe()
            );
        }
        let tables =
            lockgate_store::migrate::sqlite_to_postgres(&options.data_dir, &options.database)
                .await?;
        println!("{:<32} {:>10}  checksum (blake3)", "table", "rows");
        for table in &tables {
            println!("{:<32} {:>10}  {}", table.table, table.rows, table.checksum);
        }
        let rows: u64 = tables.iter().map(|t| t.rows).sum();
        println!(
            "copied {} tables, {rows} rows; counts and checksums match",
            tables.len()
        );
        Ok(())
    })
}

/// What [`copy_objects`] copied.
#[derive(Debug, Default, PartialEq)]
struct CopiedObjects {
    /// Artifact contents, each named by its blake3 digest.
    contents: usize,
    /// Archived job logs (`logs/...`, see `log_archive.rs`).
    logs: usize,
}

/// Copies every artifact content (a file named by its blake3 digest) and every archived log
/// (`logs/*`) of `folder` to `objects`, and reads each back: a content must match its digest, a log
/// the local bytes.
async fn copy_objects(folder: &Path, objects: &Objects) -> anyhow::Result<CopiedObjects> {
    let mut copied = CopiedObjects::default();
    for name in file_names(folder)? {
        if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        objects.copy_file(&name, &folder.join(&name)).await?;
        let stored = objects
            .get(&name)
            .await?
            .with_context(|| format!("object {name} is missing after the copy"))?;
        anyhow::ensure!(
            blake3::hash(&stored).to_hex().as_str() == name,
            "object {name} in {} does not match its digest",
            objects.describe()
        );
        copied.contents += 1;
    }
    let logs = folder.join("logs");
    for name in file_names(&logs)? {
        if name.contains(".partial") {
            continue;
        }
        let key = format!("logs/{name}");
        let local = std::fs::read(logs.join(&name))
            .with_context(|| format!("cannot read {}", logs.join(&name).display()))?;
        objects.copy_file(&key, &logs.join(&name)).await?;
        let stored = objects
            .get(&key)
            .await?
            .with_context(|| format!("object {key} is missing after the copy"))?;
        anyhow::ensure!(
            stored == local,
            "object {key} in {} differs from {}",
            objects.describe(),
            logs.join(&name).display()
        );
        copied.logs += 1;
    }
    Ok(copied)
}

/// The names of the files in `folder`, sorted; none when it does not exist.
fn file_names(folder: &Path) -> anyhow::Result<Vec<String>> {
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot list {}", folder.display()));
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", folder.display()))?;
        if entry.file_type().is_ok_and(|kind| kind.is_file()) {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_targets_are_checked() {
        assert_eq!(
            parse_from("sqlite:/srv/lg").unwrap(),
            PathBuf::from("/srv/lg")
        );
        assert_eq!(parse_from("sqlite://data").unwrap(), PathBuf::from("data"));
        for bad in ["", "sqlite:", "/srv/lg", "postgres://x/y"] {
            assert!(
                parse_from(bad).unwrap_err().contains("sqlite:DATA_DIR"),
                "{bad}"
            );
        }
        assert!(check_to("postgres://u@h/db").is_ok());
        assert!(check_to("sqlite:x").is_err());
    }
}
