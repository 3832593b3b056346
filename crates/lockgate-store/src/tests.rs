//! Tests of the SQLite store on a fresh database file in a temporary folder.

use super::*;

async fn fresh() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(dir.path()).await.unwrap();
    (dir, store)
}

async fn pipeline(store: &Store) -> (User, Project, Pipeline) {
    let user = store.create_user("ada", "hash", true).await.unwrap();
    let project = store.create_project("demo", user.id).await.unwrap();
    let repo = store.create_repository(project.id, "app").await.unwrap();
    let pipeline = store
        .create_pipeline(project.id, repo.id, "app-ci", "azure-pipelines.yml")
        .await
        .unwrap();
    (user, project, pipeline)
}

fn new_run(pipeline_id: i64, branch: &str) -> NewRun {
    NewRun {
        pipeline_id,
        name: "20261123.1".into(),
        status: "queued".into(),
        reason: "manual".into(),
        source_branch: branch.into(),
        source_commit: "abc".into(),
        requested_by: "ada".into(),
        yaml: "steps: []".into(),
        diagnostics: "[]".into(),
        parameters: "{}".into(),
        ..NewRun::default()
    }
}

fn new_job(name: &str, status: &str) -> NewJob {
    NewJob {
        stage_name: "build".into(),
        name: name.into(),
        display_name: name.into(),
        depends_on: "[]".into(),
        spec: "{}".into(),
        status: status.into(),
        environment: None,
    }
}

#[tokio::test]
async fn opening_applies_migrations_in_wal_mode_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(dir.path()).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 4);
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&store.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode, "wal");
    store.create_user("ada", "h", false).await.unwrap();
    drop(store);
    let again = Store::open_sqlite(dir.path()).await.unwrap();
    assert_eq!(again.count_users().await.unwrap(), 1);
}

#[tokio::test]
async fn duplicate_names_are_reported_as_already_existing() {
    let (_dir, store) = fresh().await;
    store.create_user("ada", "h", false).await.unwrap();
    let err = store.create_user("ada", "h", false).await.unwrap_err();
    assert_eq!(err.to_string(), "user `ada` already exists");
}

#[tokio::test]
async fn sessions_expire_and_tokens_find_their_user() {
    let (_dir, store) = fresh().await;
    let user = store.create_user("ada", "h", false).await.unwrap();
    store
        .create_session("s1", user.id, "csrf", 1_000)
        .await
        .unwrap();
    assert_eq!(
        store.session("s1", 999).await.unwrap().unwrap().csrf_token,
        "csrf"
    );
    assert!(store.session("s1", 1_000).await.unwrap().is_none());
    store
        .create_access_token(user.id, "ci", "t1", "read,write")
        .await
        .unwrap();
    let (found, token) = store.user_by_token_hash("t1").await.unwrap().unwrap();
    assert_eq!(
        (found.name.as_str(), token.scopes.as_str()),
        ("ada", "read,write")
    );
    assert!(store.user_by_token_hash("t2").await.unwrap().is_none());
}

#[tokio::test]
async fn project_creator_is_administrator() {
    let (_dir, store) = fresh().await;
    let (user, project, _) = pipeline(&store).await;
    assert_eq!(
        store
            .project_role(project.id, user.id)
            .await
            .unwrap()
            .as_deref(),
        Some("administrator")
    );
    let other = store.create_user("bob", "h", false).await.unwrap();
    assert_eq!(
        store.project_role(project.id, other.id).await.unwrap(),
        None
    );
    store
        .set_project_role(project.id, other.id, "reader")
        .await
        .unwrap();
    store
        .set_project_role(project.id, other.id, "contributor")
        .await
        .unwrap();
    assert_eq!(
        store
            .project_role(project.id, other.id)
            .await
            .unwrap()
            .as_deref(),
        Some("contributor")
    );
    let members = store.project_members(project.id).await.unwrap();
    assert_eq!(
        members,
        vec![
            ("ada".to_string(), "administrator".to_string()),
            ("bob".into(), "contributor".into())
        ]
    );
}

#[tokio::test]
async fn run_numbers_count_up_per_pipeline_and_list_filters() {
    let (_dir, store) = fresh().await;
    let (_, project, pipeline) = pipeline(&store).await;
    let first = store
        .create_run(&new_run(pipeline.id, "refs/heads/main"), &[])
        .await
        .unwrap();
    let second = store
        .create_run(&new_run(pipeline.id, "refs/heads/dev"), &[])
        .await
        .unwrap();
    assert_eq!((first.number, second.number), (1, 2));
    assert_eq!(second.pipeline_name, "app-ci");
    let all = store
        .list_runs(&RunFilter {
            project_id: Some(project.id),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.iter().map(|r| r.number).collect::<Vec<_>>(), vec![2, 1]);
    let main = store
        .list_runs(&RunFilter {
            branch: Some("refs/heads/main".into()),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(main.len(), 1);
    assert_eq!(main[0].id, first.id);
    let page = store
        .list_runs(&RunFilter {
            before_id: Some(second.id),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(
        store
            .next_name_revision(pipeline.id, "20261123")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .next_name_revision(pipeline.id, "20261123")
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .next_name_revision(pipeline.id, "20261124")
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn a_queued_job_is_leased_once_and_finished_only_with_its_lease() {
    let (_dir, store) = fresh().await;
    let (_, _, pipeline) = pipeline(&store).await;
    let run = store
        .create_run(
            &new_run(pipeline.id, "main"),
            &[new_job("a", "queued"), new_job("b", "pending")],
        )
        .await
        .unwrap();
    let leased = store
        .lease_next_job("agent-1", "lease-1", now_millis() + 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leased.name, "a");
    assert_eq!(leased.status, "running");
    assert!(
        store
            .lease_next_job("agent-2", "lease-2", now_millis() + 60_000)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .renew_lease(leased.id, "lease-1", now_millis() + 60_000)
            .await
            .unwrap(),
        Some(false)
    );
    assert_eq!(
        store
            .renew_lease(leased.id, "wrong", now_millis())
            .await
            .unwrap(),
        None
    );
    store.request_cancel(run.id).await.unwrap();
    assert_eq!(
        store
            .renew_lease(leased.id, "lease-1", now_millis() + 60_000)
            .await
            .unwrap(),
        Some(true)
    );
    assert!(
        !store
            .finish_leased_job(leased.id, "wrong", "succeeded", "{}")
            .await
            .unwrap()
    );
    assert!(
        store
            .finish_leased_job(leased.id, "lease-1", "canceled", "{}")
            .await
            .unwrap()
    );
    let jobs = store.jobs_of_run(run.id).await.unwrap();
    assert_eq!(jobs[0].result.as_deref(), Some("canceled"));
    assert_eq!(
        (jobs[1].status.as_str(), jobs[1].result.as_deref()),
        ("completed", Some("canceled"))
    );
}

#[tokio::test]
async fn expired_leases_fail_their_jobs() {
    let (_dir, store) = fresh().await;
    let (_, _, pipeline) = pipeline(&store).await;
    store
        .create_run(&new_run(pipeline.id, "main"), &[new_job("a", "queued")])
        .await
        .unwrap();
    let job = store
        .lease_next_job("agent-1", "lease-1", 100)
        .await
        .unwrap()
        .unwrap();
    assert!(store.expire_leases(50).await.unwrap().is_empty());
    let expired = store.expire_leases(101).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].result.as_deref(), Some("failed"));
    assert!(
        !store
            .finish_leased_job(job.id, "lease-1", "succeeded", "{}")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn log_chunks_number_their_lines_and_reset_clears_a_job() {
    let (_dir, store) = fresh().await;
    let (_, _, pipeline) = pipeline(&store).await;
    let run = store
        .create_run(&new_run(pipeline.id, "main"), &[new_job("a", "queued")])
        .await
        .unwrap();
    let job = store
        .lease_next_job("agent", "l", now_millis() + 1000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.append_log_chunk(job.id, 3, b"one").await.unwrap(), 1);
    assert_eq!(store.append_log_chunk(job.id, 2, b"two").await.unwrap(), 4);
    let chunks = store.log_chunks(job.id).await.unwrap();
    assert_eq!(
        chunks
            .iter()
            .map(|c| c.compressed.as_slice())
            .collect::<Vec<_>>(),
        vec![b"one", b"two"]
    );
    store
        .upsert_step(&Step {
            job_id: job.id,
            position: 0,
            name: "build".into(),
            status: "completed".into(),
            result: Some("failed".into()),
            started_at: Some(1),
            finished_at: Some(2),
        })
        .await
        .unwrap();
    assert_eq!(store.steps_of_run(run.id).await.unwrap().len(), 1);
    store
        .finish_leased_job(job.id, "l", "failed", r#"{"setvar.flag":"yes"}"#)
        .await
        .unwrap();
    let finished = store.job_by_id(job.id).await.unwrap().unwrap();
    assert_eq!(finished.outputs, r#"{"setvar.flag":"yes"}"#);
    store
        .set_job_spec(job.id, r#"{"runtimeValues": {}}"#)
        .await
        .unwrap();
    assert_eq!(
        store.job_by_id(job.id).await.unwrap().unwrap().spec,
        r#"{"runtimeValues": {}}"#
    );
    store.reset_jobs(&[job.id]).await.unwrap();
    let job = store.job_by_id(job.id).await.unwrap().unwrap();
    assert_eq!((job.status.as_str(), job.attempt), ("pending", 2));
    assert_eq!(job.outputs, "{}");
    assert!(store.log_chunks(job.id).await.unwrap().is_empty());
    assert!(store.steps_of_run(run.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn artifacts_tests_and_agents_round_trip() {
    let (_dir, store) = fresh().await;
    let (_, _, pipeline) = pipeline(&store).await;
    let run = store
        .create_run(&new_run(pipeline.id, "main"), &[new_job("a", "queued")])
        .await
        .unwrap();
    let job = &store.jobs_of_run(run.id).await.unwrap()[0];
    let file = NewArtifactFile {
        run_id: run.id,
        job_id: job.id,
        name: "drop".into(),
        file_path: "app.txt".into(),
        size: 5,
        digest: "d1".into(),
    };
    store.add_artifact_file(&file).await.unwrap();
    store
        .add_artifact_file(&NewArtifactFile {
            digest: "d2".into(),
            ..file
        })
        .await
        .unwrap();
    let files = store.artifact_files(run.id).await.unwrap();
    assert_eq!(files.len(), 1, "re-uploading a file replaces it");
    assert_eq!(files[0].digest, "d2");
    let result = TestResult {
        run_id: run.id,
        job_id: job.id,
        suite: "unit".into(),
        name: "adds".into(),
        outcome: "passed".into(),
        duration_ms: 3,
        message: String::new(),
    };
    store
        .add_test_results(std::slice::from_ref(&result))
        .await
        .unwrap();
    assert_eq!(store.test_results(run.id).await.unwrap(), vec![result]);
    store.register_agent("built-in", "h1").await.unwrap();
    store.register_agent("built-in", "h2").await.unwrap();
    assert!(store.agent_by_token_hash("h1").await.unwrap().is_none());
    assert_eq!(
        store.agent_by_token_hash("h2").await.unwrap().unwrap().name,
        "built-in"
    );
}

#[tokio::test]
async fn the_newest_successful_deployment_per_environment_is_found() {
    let (_dir, store) = fresh().await;
    let (_, project, pipeline) = pipeline(&store).await;
    let deploy = |env: &str| NewJob {
        environment: Some(env.into()),
        ..new_job(&format!("deploy_{env}"), "queued")
    };
    let first = store
        .create_run(&new_run(pipeline.id, "main"), &[deploy("dev")])
        .await
        .unwrap();
    let second = store
        .create_run(
            &new_run(pipeline.id, "main"),
            &[deploy("dev"), deploy("test")],
        )
        .await
        .unwrap();
    for run in [&first, &second] {
        for job in store.jobs_of_run(run.id).await.unwrap() {
            let outcome = if job.name == "deploy_test" {
                "failed"
            } else {
                "succeeded"
            };
            store
                .set_job_status(job.id, "completed", Some(outcome))
                .await
                .unwrap();
        }
    }
    let deployments = store.latest_deployments(project.id).await.unwrap();
    let found: Vec<(&str, i64)> = deployments
        .iter()
        .map(|(env, run)| (env.as_str(), run.id))
        .collect();
    assert_eq!(
        found,
        vec![("dev", second.id)],
        "a failed deployment to test does not count"
    );
}
