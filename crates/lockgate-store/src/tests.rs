//! Tests of the SQLite backend on a fresh database file in a temporary folder: the whole conformance
//! suite, plus what only SQLite has (the file, WAL mode) and opening by database setting.

use sqlx::Row;

use super::*;

async fn fresh() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(dir.path()).await.unwrap();
    (dir, store)
}

conformance_tests!(fresh);

#[tokio::test]
async fn opening_applies_migrations_in_wal_mode_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    assert_eq!(
        store.schema_version().await.unwrap(),
        SqliteStore::latest_migration()
    );
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&store.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode, "wal");
    store.create_user("ada", "h", false).await.unwrap();
    drop(store);
    let again = Store::open("sqlite", dir.path()).await.unwrap();
    assert_eq!(again.count_users().await.unwrap(), 1);
    let elsewhere = tempfile::tempdir().unwrap();
    let by_url = format!("sqlite://{}", dir.path().display());
    let same = Store::open(&by_url, elsewhere.path()).await.unwrap();
    assert_eq!(same.count_users().await.unwrap(), 1);
    assert!(!elsewhere.path().join("lockgate.db").exists());
}

#[tokio::test]
async fn an_unknown_database_is_refused_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open("mysql://root:secret@127.0.0.1/db", dir.path())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownDatabase { .. }));
    assert!(!err.to_string().contains("secret"), "{err}");
    assert!(!dir.path().join("lockgate.db").exists());
}

#[tokio::test]
async fn the_upgrade_flags_the_built_in_agents_an_older_server_named_and_no_others() {
    let dir = tempfile::tempdir().unwrap();
    let older = SqliteStore::open_with(dir.path(), &sqlite::SQLITE_MIGRATIONS[..8])
        .await
        .unwrap();
    assert_eq!(older.schema_version().await.unwrap(), 8);
    let names = [
        "built-in-1",
        "built-in-12",
        "built-in-x",
        "built-in-1x",
        "built-in-",
        "remote-1",
    ];
    for name in names {
        sqlx::query("INSERT INTO agents (name, token_hash, created_at) VALUES ($1, $2, 1)")
            .bind(name)
            .bind(format!("h-{name}"))
            .execute(&older.pool)
            .await
            .unwrap();
    }
    drop(older);
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let mut flagged = Vec::new();
    for name in names {
        let agent = store
            .agent_by_token_hash(&format!("h-{name}"))
            .await
            .unwrap()
            .unwrap();
        if agent.builtin {
            flagged.push(agent.name);
        }
    }
    assert_eq!(flagged, ["built-in-1", "built-in-12"]);
}

#[tokio::test]
async fn the_upgrade_to_environments_keeps_the_deployments_job_rows_name() {
    let dir = tempfile::tempdir().unwrap();
    let old = SqliteStore::open_with(dir.path(), &sqlite::SQLITE_MIGRATIONS[..10])
        .await
        .unwrap();
    assert_eq!(old.schema_version().await.unwrap(), 10);
    let user = old.create_user("ada", "h", true).await.unwrap();
    let project = old.create_project("demo", user.id).await.unwrap();
    let repo = old.create_repository(project.id, "app").await.unwrap();
    let pipeline = old
        .create_pipeline(project.id, repo.id, "ci", "azure-pipelines.yml")
        .await
        .unwrap();
    let run = old
        .create_run(
            &NewRun {
                pipeline_id: pipeline.id,
                name: "1".into(),
                status: "queued".into(),
                reason: "manual".into(),
                source_branch: "refs/heads/main".into(),
                source_commit: "abc".into(),
                requested_by: "ada".into(),
                diagnostics: "[]".into(),
                parameters: "{}".into(),
                ..NewRun::default()
            },
            &[],
        )
        .await
        .unwrap();
    // Job rows as that version wrote them (later migrations add columns today's code writes):
    // jobs a and b ran (b failed), d never started.
    for (name, environment, result) in [
        ("a", Some("Prod"), Some("succeeded")),
        ("b", Some("prod"), Some("failed")),
        ("c", None, None),
        ("d", Some("dev"), None),
    ] {
        let (status, started) = match result {
            Some(_) => ("completed", Some(now_millis())),
            None => ("queued", None),
        };
        sqlx::query(
            "INSERT INTO jobs (run_id, stage_name, name, display_name, depends_on, spec, status, \
             result, queued_at, started_at, finished_at, environment) \
             VALUES ($1, 'deploy', $2, $2, '[]', '{}', $3, $4, $5, $6, $6, $7)",
        )
        .bind(run.id)
        .bind(name)
        .bind(status)
        .bind(result)
        .bind(now_millis())
        .bind(started)
        .bind(environment)
        .execute(&old.pool)
        .await
        .unwrap();
    }
    drop(old);

    let store = SqliteStore::open(dir.path()).await.unwrap();
    assert_eq!(
        store.schema_version().await.unwrap(),
        SqliteStore::latest_migration()
    );
    let names: Vec<String> = store
        .list_environments(project.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names[0] == "dev" && names[1].eq_ignore_ascii_case("prod"),
        "{names:?}"
    );
    let prod = store
        .environment_by_name(project.id, "PROD")
        .await
        .unwrap()
        .unwrap();
    let ledger = store.deployments(prod.id, None, 10).await.unwrap();
    let seen: Vec<(&str, Option<&str>, &str)> = ledger
        .iter()
        .map(|d| {
            (
                d.job_name.as_str(),
                d.result.as_deref(),
                d.source_commit.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("b", Some("failed"), "abc"),
            ("a", Some("succeeded"), "abc")
        ]
    );
    assert_eq!(ledger[0].run_id, run.id);
    let dev = store
        .environment_by_name(project.id, "dev")
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .deployments(dev.id, None, 10)
            .await
            .unwrap()
            .is_empty(),
        "a job that never started deployed nothing"
    );
}
