//! The conformance suite every [`Storage`] backend passes: each case takes a fresh, empty database as
//! `&dyn Storage`. A backend's test module runs them all with
//! `conformance_tests!(fresh)`, where `fresh().await` returns `(guard, Store)` and the guard (a
//! temporary folder, a scratch schema...) lives until the case ends.

use crate::*;

/// Expands to one `#[tokio::test]` per conformance case, each on a fresh store from `$fresh`.
macro_rules! conformance_tests {
    ($fresh:path) => {
        conformance_tests!(
            @cases $fresh;
            a_run_is_created_leased_and_finished,
            a_job_for_another_os_waits_for_an_agent_of_that_os,
            duplicate_names_are_reported_as_already_existing,
            sessions_expire_and_tokens_find_their_user,
            project_creator_is_administrator,
            run_numbers_count_up_per_pipeline_and_list_filters,
            a_queued_job_is_leased_once_and_finished_only_with_its_lease,
            a_cancel_keeps_the_jobs_that_may_still_run_and_ends_the_others,
            expired_leases_fail_their_jobs,
            jobs_of_dead_agents_are_queued_again_or_failed,
            log_chunks_number_their_lines_and_reset_clears_a_job,
            artifacts_tests_and_agents_round_trip,
            environments_are_unique_ignoring_case_and_keep_their_owners,
            the_ledger_follows_deployment_jobs_and_finds_what_is_where,
            pipeline_variables_keep_order_and_flags_and_are_replaced_as_a_whole,
            settings_are_replaced_and_jobs_are_paged_by_id,
            approvals_are_asked_once_decided_atomically_and_audited,
            environment_checks_are_one_per_kind_and_replaced,
            manual_stages_are_started_once,
            service_connections_are_replaced_authorized_and_keep_their_uses,
            secure_files_keep_their_content_apart_and_are_replaced_authorized_and_deleted,
            variable_groups_are_unique_ignoring_case_replaced_and_authorized_per_pipeline,
            approvals_are_asked_again_for_a_new_stage_attempt_and_keep_their_order,
            exclusive_locks_queue_in_both_behaviours_and_free_themselves,
            agents_register_once_with_a_token_and_report_capabilities,
            jobs_keep_their_pool_and_are_leased_by_id_once,
            environment_tokens_register_targets_with_tags,
            a_job_the_server_runs_itself_is_never_leased_or_released,
            names_ignore_ascii_case_only_and_sort_by_their_bytes,
            a_server_releases_only_the_jobs_of_its_own_built_in_agents,
            expired_jobs_without_a_step_are_queued_again,
            a_completed_jobs_log_chunks_are_archived_once,
        );
    };
    (@cases $fresh:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let (_guard, store) = $fresh().await;
                $crate::conformance::$case(&*store).await;
            }
        )*
    };
}

/// The storage cycle the server relies on, through `&dyn Storage` only: names are unique, a run is
/// created with its jobs at once, its queued job is leased by one agent, logged to, finished with
/// the lease, and the finished job is what readers see.
pub(crate) async fn a_run_is_created_leased_and_finished(store: &dyn Storage) {
    assert!(store.schema_version().await.unwrap() >= 1);
    let (user, project, pipeline) = pipeline(store).await;
    for err in [
        store.create_user("ada", "h", false).await.unwrap_err(),
        store.create_project("demo", user.id).await.unwrap_err(),
        store
            .create_repository(project.id, "app")
            .await
            .unwrap_err(),
        store
            .create_pipeline(project.id, pipeline.repository_id, "app-ci", "other.yml")
            .await
            .unwrap_err(),
    ] {
        assert!(
            matches!(err, StoreError::AlreadyExists { .. }),
            "expected AlreadyExists, got {err:?}"
        );
    }
    assert_eq!(store.list_projects().await.unwrap().len(), 1);

    let run = store
        .create_run(
            &new_run(pipeline.id, "refs/heads/main"),
            &[new_job("build", "queued"), new_job("test", "pending")],
        )
        .await
        .unwrap();
    assert_eq!((run.number, run.status.as_str()), (1, "queued"));
    assert_eq!(
        (run.project_id, run.pipeline_name.as_str()),
        (project.id, "app-ci")
    );
    let jobs = store.jobs_of_run(run.id).await.unwrap();
    assert_eq!(
        jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
        vec!["build", "test"],
        "a run is stored with every job, in order"
    );

    let leased = store
        .lease_next_job("agent-1", "Linux", "lease-1", now_millis() + 60_000)
        .await
        .unwrap()
        .expect("the queued job is leased");
    assert_eq!(leased.id, jobs[0].id);
    assert_eq!(
        (leased.status.as_str(), leased.agent_name.as_deref()),
        ("running", Some("agent-1"))
    );
    assert!(leased.started_at.is_some());
    assert!(
        store
            .lease_next_job("agent-2", "Linux", "lease-2", now_millis() + 60_000)
            .await
            .unwrap()
            .is_none(),
        "a pending job is not leased"
    );
    assert_eq!(
        store
            .leased_job(leased.id, "lease-1")
            .await
            .unwrap()
            .map(|j| j.id),
        Some(leased.id)
    );
    store.set_run_status(run.id, "running", None).await.unwrap();
    assert_eq!(
        store.append_log_chunk(leased.id, 2, b"zz").await.unwrap(),
        1
    );

    assert!(
        store
            .finish_leased_job(leased.id, "lease-1", "succeeded", r#"{"a.b":"c"}"#)
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_leased_job(leased.id, "lease-1", "failed", "{}")
            .await
            .unwrap(),
        "a lease finishes its job once"
    );
    assert!(
        store
            .leased_job(leased.id, "lease-1")
            .await
            .unwrap()
            .is_none()
    );
    let finished = store.job_by_id(leased.id).await.unwrap().unwrap();
    assert_eq!(
        (
            finished.status.as_str(),
            finished.result.as_deref(),
            finished.outputs.as_str()
        ),
        ("completed", Some("succeeded"), r#"{"a.b":"c"}"#)
    );
    assert!(finished.finished_at.is_some());

    store
        .set_run_status(run.id, "completed", Some("succeeded"))
        .await
        .unwrap();
    let run = store.run_by_id(run.id).await.unwrap().unwrap();
    assert_eq!(
        (run.status.as_str(), run.result.as_deref()),
        ("completed", Some("succeeded"))
    );
    assert!(run.started_at.is_some() && run.finished_at.is_some());
}

pub(crate) async fn pipeline(store: &dyn Storage) -> (User, Project, Pipeline) {
    let user = store.create_user("ada", "hash", true).await.unwrap();
    let project = store.create_project("demo", user.id).await.unwrap();
    let repo = store.create_repository(project.id, "app").await.unwrap();
    let pipeline = store
        .create_pipeline(project.id, repo.id, "app-ci", "azure-pipelines.yml")
        .await
        .unwrap();
    (user, project, pipeline)
}

pub(crate) fn new_run(pipeline_id: i64, branch: &str) -> NewRun {
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

pub(crate) fn new_job(name: &str, status: &str) -> NewJob {
    NewJob {
        stage_name: "build".into(),
        name: name.into(),
        display_name: name.into(),
        depends_on: "[]".into(),
        spec: "{}".into(),
        status: status.into(),
        environment: None,
        agent_os: None,
        ..Default::default()
    }
}

pub(crate) async fn a_job_for_another_os_waits_for_an_agent_of_that_os(store: &dyn Storage) {
    let (_, _, pipeline) = pipeline(store).await;
    let windows = NewJob {
        agent_os: Some("Windows_NT".into()),
        ..new_job("win", "queued")
    };
    let run = store
        .create_run(
            &new_run(pipeline.id, "main"),
            &[windows, new_job("any", "queued")],
        )
        .await
        .unwrap();
    let jobs = store.jobs_of_run(run.id).await.unwrap();
    assert_eq!(jobs[0].agent_os.as_deref(), Some("Windows_NT"));
    let expires = now_millis() + 60_000;
    let first = store
        .lease_next_job("linux-1", "Linux", "l1", expires)
        .await
        .unwrap()
        .expect("the job without an OS is leased");
    assert_eq!(first.name, "any", "the Windows job is passed over");
    assert!(
        store
            .lease_next_job("linux-2", "Linux", "l2", expires)
            .await
            .unwrap()
            .is_none(),
        "a Linux agent never leases the Windows job"
    );
    let win = store
        .lease_next_job("win-1", "Windows_NT", "l3", expires)
        .await
        .unwrap()
        .expect("a Windows agent leases it");
    assert_eq!((win.name.as_str(), win.status.as_str()), ("win", "running"));
}

pub(crate) async fn duplicate_names_are_reported_as_already_existing(store: &dyn Storage) {
    store.create_user("ada", "h", false).await.unwrap();
    let err = store.create_user("ada", "h", false).await.unwrap_err();
    assert_eq!(err.to_string(), "user `ada` already exists");
}

pub(crate) async fn sessions_expire_and_tokens_find_their_user(store: &dyn Storage) {
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

pub(crate) async fn project_creator_is_administrator(store: &dyn Storage) {
    let (user, project, _) = pipeline(store).await;
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

pub(crate) async fn run_numbers_count_up_per_pipeline_and_list_filters(store: &dyn Storage) {
    let (_, project, pipeline) = pipeline(store).await;
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

pub(crate) async fn a_queued_job_is_leased_once_and_finished_only_with_its_lease(
    store: &dyn Storage,
) {
    let (_, _, pipeline) = pipeline(store).await;
    let run = store
        .create_run(
            &new_run(pipeline.id, "main"),
            &[new_job("a", "queued"), new_job("b", "pending")],
        )
        .await
        .unwrap();
    let leased = store
        .lease_next_job("agent-1", "Linux", "lease-1", now_millis() + 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leased.name, "a");
    assert_eq!(leased.status, "running");
    assert!(
        store
            .lease_next_job("agent-2", "Linux", "lease-2", now_millis() + 60_000)
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
    store.request_cancel(run.id, &[]).await.unwrap();
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
        ("completed", Some("skipped"))
    );
    let run = store.run_by_id(run.id).await.unwrap().unwrap();
    assert_eq!(run.result.as_deref(), Some("canceled"));
}

pub(crate) async fn a_cancel_keeps_the_jobs_that_may_still_run_and_ends_the_others(
    store: &dyn Storage,
) {
    let (_, _, pipeline) = pipeline(store).await;
    let run = store
        .create_run(
            &new_run(pipeline.id, "main"),
            &[
                new_job("build", "queued"),
                new_job("cleanup", "pending"),
                new_job("deploy", "pending"),
                new_job("report", "queued"),
            ],
        )
        .await
        .unwrap();
    let build = store
        .lease_next_job("agent-1", "Linux", "lease-1", now_millis() + 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(build.name, "build");
    let jobs = store.jobs_of_run(run.id).await.unwrap();
    let cleanup = jobs.iter().find(|j| j.name == "cleanup").unwrap().id;
    store.request_cancel(run.id, &[cleanup]).await.unwrap();

    let state = |jobs: &[Job], name: &str| {
        let job = jobs.iter().find(|j| j.name == name).unwrap();
        (job.status.clone(), job.result.clone(), job.cancel_requested)
    };
    let jobs = store.jobs_of_run(run.id).await.unwrap();
    assert_eq!(state(&jobs, "build"), ("running".into(), None, true));
    assert_eq!(state(&jobs, "cleanup"), ("pending".into(), None, false));
    assert_eq!(
        state(&jobs, "deploy"),
        ("completed".into(), Some("skipped".into()), false)
    );
    assert_eq!(
        state(&jobs, "report"),
        ("completed".into(), Some("canceled".into()), false)
    );
    let after = store.run_by_id(run.id).await.unwrap().unwrap();
    assert_eq!(after.result.as_deref(), Some("canceled"));
    assert_eq!(after.status, run.status);

    // A completed run is not touched by a late cancel.
    store
        .set_run_status(run.id, "completed", Some("succeeded"))
        .await
        .unwrap();
    store.request_cancel(run.id, &[]).await.unwrap();
    let jobs = store.jobs_of_run(run.id).await.unwrap();
    assert_eq!(state(&jobs, "cleanup"), ("pending".into(), None, false));
    let after = store.run_by_id(run.id).await.unwrap().unwrap();
    assert_eq!(after.result.as_deref(), Some("succeeded"));
}

pub(crate) async fn expired_leases_fail_their_jobs(store: &dyn Storage) {
    let (_, _, pipeline) = pipeline(store).await;
    store
        .create_run(&new_run(pipeline.id, "main"), &[new_job("a", "queued")])
        .await
        .unwrap();
    let job = store
        .lease_next_job("agent-1", "Linux", "lease-1", 100)
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

/// A server that starts again releases what its earlier process's agents held: a job that had not
/// started a step is queued again for any agent, one that had is failed with its running step; jobs
/// of other agents and jobs that are not running are left alone.
pub(crate) async fn jobs_of_dead_agents_are_queued_again_or_failed(store: &dyn Storage) {
    let (_, _, pipeline) = pipeline(store).await;
    let run = store
        .create_run(
            &new_run(pipeline.id, "main"),
            &[
                new_job("fresh", "queued"),
                new_job("stepping", "queued"),
                new_job("remote", "queued"),
                new_job("lookalike", "queued"),
                new_job("waiting", "queued"),
            ],
        )
        .await
        .unwrap();
    for name in ["built-in-1", "built-in-2"] {
        let agent = store
            .register_builtin_agent(name, &format!("h-{name}"))
            .await
            .unwrap();
        assert!(agent.builtin);
    }
    // A registered agent is never built-in, whatever its name.
    for name in ["remote-1", "built-in-x"] {
        let agent = store
            .register_agent(name, &format!("h-{name}"))
            .await
            .unwrap();
        assert!(!agent.builtin);
    }
    let far = now_millis() + 60_000;
    let fresh = store
        .lease_next_job("built-in-1", "Linux", "l1", far)
        .await
        .unwrap()
        .unwrap();
    let stepping = store
        .lease_next_job("built-in-2", "Linux", "l2", far)
        .await
        .unwrap()
        .unwrap();
    let remote = store
        .lease_next_job("remote-1", "Linux", "l3", far)
        .await
        .unwrap()
        .unwrap();
    let lookalike = store
        .lease_next_job("built-in-x", "Linux", "l5", far)
        .await
        .unwrap()
        .unwrap();
    store
        .append_log_chunk(fresh.id, 1, b"checked out")
        .await
        .unwrap();
    for (position, status) in [(0, "completed"), (1, "running")] {
        store
            .upsert_step(&Step {
                job_id: stepping.id,
                position,
                name: format!("step {position}"),
                status: status.into(),
                result: (status == "completed").then(|| "succeeded".into()),
                started_at: Some(1),
                finished_at: None,
            })
            .await
            .unwrap();
    }
    let released = store
        .release_abandoned_jobs(&builtin_names())
        .await
        .unwrap();
    let summary: Vec<(i64, &str, Option<&str>)> = released
        .iter()
        .map(|j| (j.id, j.status.as_str(), j.result.as_deref()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (fresh.id, "queued", None),
            (stepping.id, "completed", Some("failed")),
        ]
    );
    let fresh_now = store.job_by_id(fresh.id).await.unwrap().unwrap();
    assert_eq!(fresh_now.agent_name, None);
    assert!(fresh_now.started_at.is_none());
    assert_eq!(
        store.log_chunks(fresh.id).await.unwrap().len(),
        1,
        "the log is kept"
    );
    // The queued-again job is leased like any other (the still-queued one has a higher id).
    let again = store
        .lease_next_job("built-in-1", "Linux", "l4", far)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.id, fresh.id);
    assert!(
        !store
            .finish_leased_job(fresh.id, "l1", "succeeded", "{}")
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_leased_job(stepping.id, "l2", "succeeded", "{}")
            .await
            .unwrap()
    );
    let steps = store.steps_of_run(run.id).await.unwrap();
    let step_states: Vec<(&str, Option<&str>)> = steps
        .iter()
        .map(|s| (s.status.as_str(), s.result.as_deref()))
        .collect();
    assert_eq!(
        step_states,
        vec![
            ("completed", Some("succeeded")),
            ("completed", Some("failed"))
        ]
    );
    let remote_now = store.job_by_id(remote.id).await.unwrap().unwrap();
    assert_eq!(remote_now.status, "running", "other agents keep their jobs");
    let lookalike_now = store.job_by_id(lookalike.id).await.unwrap().unwrap();
    assert_eq!(
        (
            lookalike_now.status.as_str(),
            lookalike_now.agent_name.as_deref()
        ),
        ("running", Some("built-in-x")),
        "a registered agent named like a built-in one keeps its job"
    );
    let waiting = store.jobs_of_run(run.id).await.unwrap();
    assert_eq!(waiting[4].status, "queued");
    // Registering a built-in agent's name as a remote agent makes it a remote agent.
    assert!(
        !store
            .register_agent("built-in-2", "h-taken")
            .await
            .unwrap()
            .builtin
    );
    assert!(
        !store
            .agent_by_token_hash("h-taken")
            .await
            .unwrap()
            .unwrap()
            .builtin
    );
}

pub(crate) async fn log_chunks_number_their_lines_and_reset_clears_a_job(store: &dyn Storage) {
    let (_, _, pipeline) = pipeline(store).await;
    let run = store
        .create_run(&new_run(pipeline.id, "main"), &[new_job("a", "queued")])
        .await
        .unwrap();
    let job = store
        .lease_next_job("agent", "Linux", "l", now_millis() + 1000)
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
    // A live reader with `after` lines gets the chunks holding the lines it lacks.
    for (after, expected) in [(0, 2), (2, 2), (3, 1), (4, 1), (5, 0), (9, 0)] {
        let later = store.log_chunks_after(job.id, after).await.unwrap();
        assert_eq!(later.len(), expected, "after line {after}");
        assert_eq!(
            later.last().map(|c| c.sequence),
            (expected > 0).then_some(2)
        );
    }
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

/// A completed job's chunks are replaced by one chunk naming an object, once: a second archiver that
/// read the same chunks, one of a job that is running again, or one that read fewer chunks than
/// there are changes nothing; lines appended later are numbered after the archived ones.
pub(crate) async fn a_completed_jobs_log_chunks_are_archived_once(store: &dyn Storage) {
    let (_, _, pipeline) = pipeline(store).await;
    store
        .create_run(&new_run(pipeline.id, "main"), &[new_job("a", "queued")])
        .await
        .unwrap();
    let job = store
        .lease_next_job("agent", "Linux", "l", now_millis() + 1000)
        .await
        .unwrap()
        .unwrap();
    store.append_log_chunk(job.id, 3, b"one").await.unwrap();
    store.append_log_chunk(job.id, 2, b"two").await.unwrap();
    assert!(
        store
            .jobs_with_logs_to_archive(10)
            .await
            .unwrap()
            .is_empty()
    );
    let archive = LogArchive {
        job_id: job.id,
        attempt: job.attempt,
        through_sequence: 2,
        chunk_count: 2,
        line_count: 5,
        object: format!("logs/job-{}", job.id),
    };
    assert!(
        !store.archive_log_chunks(&archive).await.unwrap(),
        "the job still runs"
    );
    store
        .finish_leased_job(job.id, "l", "succeeded", "{}")
        .await
        .unwrap();
    assert_eq!(
        store.jobs_with_logs_to_archive(10).await.unwrap(),
        vec![job.id]
    );
    let fewer = LogArchive {
        through_sequence: 1,
        chunk_count: 2,
        ..archive.clone()
    };
    assert!(!store.archive_log_chunks(&fewer).await.unwrap());
    assert!(store.archive_log_chunks(&archive).await.unwrap());
    assert!(
        !store.archive_log_chunks(&archive).await.unwrap(),
        "archived once"
    );
    let chunks = store.log_chunks(job.id).await.unwrap();
    assert_eq!(chunks.len(), 1, "{chunks:?}");
    assert_eq!(
        (
            chunks[0].sequence,
            chunks[0].first_line,
            chunks[0].line_count
        ),
        (2, 1, 5)
    );
    assert_eq!(chunks[0].object.as_deref(), Some(archive.object.as_str()));
    assert!(chunks[0].compressed.is_empty());
    assert!(
        store
            .jobs_with_logs_to_archive(10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.log_chunks_after(job.id, 4).await.unwrap().len(), 1);
    assert!(store.log_chunks_after(job.id, 5).await.unwrap().is_empty());
    // A line added after the archive continues the numbering and waits for the next archive.
    assert_eq!(store.append_log_chunk(job.id, 1, b"late").await.unwrap(), 6);
    assert_eq!(
        store.jobs_with_logs_to_archive(10).await.unwrap(),
        vec![job.id]
    );
    let again = LogArchive {
        attempt: job.attempt + 1,
        through_sequence: 3,
        chunk_count: 2,
        line_count: 6,
        ..archive.clone()
    };
    assert!(
        !store.archive_log_chunks(&again).await.unwrap(),
        "another attempt"
    );
}

pub(crate) async fn artifacts_tests_and_agents_round_trip(store: &dyn Storage) {
    let (_, _, pipeline) = pipeline(store).await;
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

/// Environments: created with their creator as first owner, names unique per project ignoring case,
/// found ignoring case, created once by `ensure_environment`, updated (description, owners) in part.
pub(crate) async fn environments_are_unique_ignoring_case_and_keep_their_owners(
    store: &dyn Storage,
) {
    let (_, project, _) = pipeline(store).await;
    let other = store.create_project("other", 1).await.unwrap();
    let dev = store
        .create_environment(project.id, "Dev", "the first stop", "ada")
        .await
        .unwrap();
    assert_eq!(
        (
            dev.name.as_str(),
            dev.description.as_str(),
            dev.created_by.as_str()
        ),
        ("Dev", "the first stop", "ada")
    );
    let err = store
        .create_environment(project.id, "dev", "", "bob")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::AlreadyExists { what } if what == "environment `dev`"),
        "{err:?}"
    );
    // Another project may use the same name.
    store
        .create_environment(other.id, "dev", "", "bob")
        .await
        .unwrap();
    let found = store
        .environment_by_name(project.id, "DEV")
        .await
        .unwrap()
        .expect("found ignoring case");
    assert_eq!(found, dev);
    assert!(
        store
            .environment_by_name(project.id, "prod")
            .await
            .unwrap()
            .is_none()
    );
    let ensured = store
        .ensure_environment(project.id, "dEV", "carol")
        .await
        .unwrap();
    assert_eq!(ensured, dev, "an existing environment is returned as it is");
    let prod = store
        .ensure_environment(project.id, "prod", "carol")
        .await
        .unwrap();
    assert_eq!(
        (prod.name.as_str(), prod.created_by.as_str()),
        ("prod", "carol")
    );
    assert_eq!(store.environment_owners(prod.id).await.unwrap(), ["carol"]);
    let names: Vec<String> = store
        .list_environments(project.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["Dev", "prod"]);

    assert_eq!(store.environment_owners(dev.id).await.unwrap(), ["ada"]);
    store
        .update_environment(
            dev.id,
            None,
            Some(&["zoe".to_string(), "bob".to_string(), "zoe".to_string()]),
        )
        .await
        .unwrap();
    assert_eq!(
        store.environment_owners(dev.id).await.unwrap(),
        ["bob", "zoe"]
    );
    store
        .update_environment(dev.id, Some("changed"), None)
        .await
        .unwrap();
    let dev = store
        .environment_by_name(project.id, "dev")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dev.description, "changed");
    assert_eq!(
        store.environment_owners(dev.id).await.unwrap(),
        ["bob", "zoe"],
        "owners not given stay"
    );
}

/// The deployment ledger: a deployment starts `running`, completes with its job whichever way the
/// job completes, pages newest first, and the newest successful one per environment (and per
/// pipeline, with how many successful runs on its branch are newer) is found.
pub(crate) async fn the_ledger_follows_deployment_jobs_and_finds_what_is_where(
    store: &dyn Storage,
) {
    let (_, project, pipeline) = pipeline(store).await;
    let dev = store
        .ensure_environment(project.id, "dev", "ada")
        .await
        .unwrap();
    let test = store
        .ensure_environment(project.id, "test", "ada")
        .await
        .unwrap();
    let deploy = |env: &str| NewJob {
        environment: Some(env.into()),
        ..new_job(&format!("deploy_{env}"), "queued")
    };
    // Runs one deployment job per environment of a new run on `branch`; each job ends as `outcome`
    // says. Returns the run.
    let deploy_run = async |branch: &str, outcomes: &[(&Environment, &str)]| {
        let jobs: Vec<NewJob> = outcomes.iter().map(|(env, _)| deploy(&env.name)).collect();
        let run = store
            .create_run(&new_run(pipeline.id, branch), &jobs)
            .await
            .unwrap();
        for ((env, outcome), job) in outcomes
            .iter()
            .zip(store.jobs_of_run(run.id).await.unwrap())
        {
            assert_eq!(job.environment.as_deref(), Some(env.name.as_str()));
            let lease = format!("lease-{}", job.id);
            store
                .lease_next_job("a", "Linux", &lease, now_millis() + 60_000)
                .await
                .unwrap()
                .unwrap();
            let started = store
                .start_deployment(&NewDeployment {
                    environment_id: env.id,
                    run_id: run.id,
                    job_id: job.id,
                    attempt: job.attempt,
                    pipeline_id: pipeline.id,
                    stage_name: job.stage_name.clone(),
                    job_name: job.name.clone(),
                    resource_name: None,
                    source_commit: format!("commit-{}", run.id),
                    source_branch: branch.into(),
                    artifacts: r#"[{"name":"drop"}]"#.into(),
                    variables: r#"{"a":"1","s":"***"}"#.into(),
                    requested_by: "ada".into(),
                })
                .await
                .unwrap();
            assert_eq!(
                (started.status.as_str(), started.result.as_deref()),
                ("running", None)
            );
            assert_eq!(
                (started.environment.as_str(), started.pipeline_name.as_str()),
                (env.name.as_str(), "app-ci")
            );
            assert_eq!(started.run_number, run.number);
            assert!(
                store
                    .finish_leased_job(job.id, &lease, outcome, "{}")
                    .await
                    .unwrap()
            );
            let finished = store
                .deployment_of_job(job.id, job.attempt)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (finished.status.as_str(), finished.result.as_deref()),
                ("completed", Some(*outcome)),
                "the deployment completes with its job"
            );
            assert!(finished.finished_at.is_some());
            assert_eq!(finished.variables, r#"{"a":"1","s":"***"}"#);
        }
        let result = if outcomes.iter().all(|(_, o)| *o == "succeeded") {
            "succeeded"
        } else {
            "failed"
        };
        store
            .set_run_status(run.id, "completed", Some(result))
            .await
            .unwrap();
        run
    };
    let first = deploy_run("main", &[(&dev, "succeeded"), (&test, "succeeded")]).await;
    let second = deploy_run("main", &[(&dev, "succeeded"), (&test, "failed")]).await;
    let latest: Vec<(String, i64)> = store
        .latest_deployments(project.id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.environment, d.run_id))
        .collect();
    assert_eq!(
        latest,
        [
            ("dev".to_string(), second.id),
            ("test".to_string(), first.id)
        ],
        "a failed deployment does not replace the latest successful one"
    );
    // A newer successful run on main without deployments, and one on another branch.
    let plain = store
        .create_run(&new_run(pipeline.id, "main"), &[])
        .await
        .unwrap();
    store
        .set_run_status(plain.id, "completed", Some("succeeded"))
        .await
        .unwrap();
    let elsewhere = store
        .create_run(&new_run(pipeline.id, "feature"), &[])
        .await
        .unwrap();
    store
        .set_run_status(elsewhere.id, "completed", Some("succeeded"))
        .await
        .unwrap();
    let versions: Vec<(String, i64, i64)> = store
        .deployed_versions(pipeline.id)
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.deployment.environment, v.deployment.run_id, v.behind))
        .collect();
    assert_eq!(
        versions,
        [
            ("dev".to_string(), second.id, 1),
            // The second run failed (its test deployment failed): it does not count as newer.
            ("test".to_string(), first.id, 1),
        ]
    );

    let ledger = store.deployments(dev.id, None, 10).await.unwrap();
    assert_eq!(
        ledger.iter().map(|d| d.run_id).collect::<Vec<_>>(),
        [second.id, first.id],
        "newest first"
    );
    let page = store
        .deployments(dev.id, Some(ledger[0].id), 10)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|d| d.run_id).collect::<Vec<_>>(),
        [first.id]
    );
    assert_eq!(store.deployments(dev.id, None, 1).await.unwrap().len(), 1);

    // A job whose lease expires fails, and so does its deployment; a job queued again after its
    // agent died before a step keeps one deployment record for the attempt.
    let run = store
        .create_run(&new_run(pipeline.id, "main"), &[deploy("dev")])
        .await
        .unwrap();
    let job = &store.jobs_of_run(run.id).await.unwrap()[0];
    let new = |commit: &str| NewDeployment {
        environment_id: dev.id,
        run_id: run.id,
        job_id: job.id,
        attempt: job.attempt,
        pipeline_id: pipeline.id,
        stage_name: "build".into(),
        job_name: job.name.clone(),
        resource_name: Some("vm1".into()),
        source_commit: commit.into(),
        source_branch: "main".into(),
        artifacts: "[]".into(),
        variables: "{}".into(),
        requested_by: "ada".into(),
    };
    store
        .register_builtin_agent("built-in-1", "h-built-in-1")
        .await
        .unwrap();
    store
        .lease_next_job("built-in-1", "Linux", "l1", now_millis() + 60_000)
        .await
        .unwrap()
        .unwrap();
    let once = store.start_deployment(&new("one")).await.unwrap();
    let requeued = store
        .release_abandoned_jobs(&builtin_names())
        .await
        .unwrap();
    assert_eq!(requeued[0].status, "queued");
    assert_eq!(
        store
            .deployment_of_job(job.id, job.attempt)
            .await
            .unwrap()
            .unwrap()
            .status,
        "running",
        "a job queued again has not finished deploying"
    );
    store
        .lease_next_job("remote", "Linux", "l2", now_millis() - 1)
        .await
        .unwrap()
        .unwrap();
    let again = store.start_deployment(&new("two")).await.unwrap();
    assert_eq!(again.id, once.id, "one record per job attempt");
    assert_eq!(
        (again.source_commit.as_str(), again.resource_name.as_deref()),
        ("two", Some("vm1"))
    );
    store.expire_leases(now_millis()).await.unwrap();
    let failed = store
        .deployment_of_job(job.id, job.attempt)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (failed.status.as_str(), failed.result.as_deref()),
        ("completed", Some("failed"))
    );
    assert_eq!(store.deployments(dev.id, None, 10).await.unwrap().len(), 3);
}

/// A pipeline's own variables: saved in order with their flags, replaced as a whole, names unique
/// ignoring case (a refused list changes nothing), and `Debug` never prints a secret.
pub(crate) async fn pipeline_variables_keep_order_and_flags_and_are_replaced_as_a_whole(
    store: &dyn Storage,
) {
    let (_, _, pipeline) = pipeline(store).await;
    assert!(
        store
            .pipeline_variables(pipeline.id)
            .await
            .unwrap()
            .is_empty()
    );
    let variable = |name: &str, value: &str, secret: bool, allow_override: bool| PipelineVariable {
        name: name.into(),
        value: value.into(),
        secret,
        allow_override,
    };
    let first = vec![
        variable("Zeta", "z", false, true),
        variable("Alpha", "hidden", true, false),
    ];
    store
        .set_pipeline_variables(pipeline.id, &first)
        .await
        .unwrap();
    assert_eq!(store.pipeline_variables(pipeline.id).await.unwrap(), first);
    assert!(
        !format!("{first:?}").contains("hidden"),
        "Debug hides secrets"
    );

    let clash = [
        variable("a", "1", false, false),
        variable("A", "2", false, false),
    ];
    let err = store
        .set_pipeline_variables(pipeline.id, &clash)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(store.pipeline_variables(pipeline.id).await.unwrap(), first);

    let second = vec![variable("Alpha", "shown", false, true)];
    store
        .set_pipeline_variables(pipeline.id, &second)
        .await
        .unwrap();
    assert_eq!(store.pipeline_variables(pipeline.id).await.unwrap(), second);
    store
        .set_pipeline_variables(pipeline.id, &[])
        .await
        .unwrap();
    assert!(
        store
            .pipeline_variables(pipeline.id)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Settings are read back, replaced, absent until set; `jobs_after` pages through the jobs of every
/// run by id; `purge_overwritten` succeeds.
pub(crate) async fn settings_are_replaced_and_jobs_are_paged_by_id(store: &dyn Storage) {
    assert_eq!(store.setting("secrets.key-check").await.unwrap(), None);
    store.set_setting("secrets.key-check", "one").await.unwrap();
    store.set_setting("secrets.key-check", "two").await.unwrap();
    store.set_setting("other", "x").await.unwrap();
    assert_eq!(
        store.setting("secrets.key-check").await.unwrap().as_deref(),
        Some("two")
    );

    let (_, _, pipeline) = pipeline(store).await;
    let jobs = [new_job("A", "queued"), new_job("B", "pending")];
    store
        .create_run(&new_run(pipeline.id, "refs/heads/main"), &jobs)
        .await
        .unwrap();
    store
        .create_run(&new_run(pipeline.id, "refs/heads/main"), &jobs[..1])
        .await
        .unwrap();
    let first = store.jobs_after(0, 2).await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(first[0].id < first[1].id);
    let rest = store.jobs_after(first[1].id, 2).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert!(rest[0].id > first[1].id);
    assert!(store.jobs_after(rest[0].id, 2).await.unwrap().is_empty());
    store.purge_overwritten().await.unwrap();
}

/// An environment's approval check is replaced as a whole; a stage asks for its approval once; the
/// decisions are kept in order; a rejection or enough distinct approvers end it, and nothing is
/// recorded on an approval that is no longer pending.
pub(crate) async fn approvals_are_asked_once_decided_atomically_and_audited(store: &dyn Storage) {
    let (_, project, pipeline) = pipeline(store).await;
    let check = NewApprovalCheck {
        approvers: vec!["bob".into(), "cy".into()],
        min_approvals: 2,
        allow_requester: false,
        instructions: "look at the diff".into(),
        timeout_minutes: 60,
        in_sequence: false,
        created_by: "ada".into(),
    };
    let stored = store
        .set_approval_check(project.id, "Test", Some(&check))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.approvers, ["bob", "cy"]);
    // Replaced, matching the name without regard to case.
    let replaced = store
        .set_approval_check(project.id, "test", Some(&check))
        .await
        .unwrap()
        .unwrap();
    let checks = store.approval_checks(project.id).await.unwrap();
    assert_eq!(checks, vec![replaced.clone()]);
    let run = store
        .create_run(
            &new_run(pipeline.id, "refs/heads/main"),
            &[new_job("a", "pending")],
        )
        .await
        .unwrap();
    let first = store
        .request_approval(run.id, "Deploy", 1, &replaced, 1_000)
        .await
        .unwrap();
    let again = store
        .request_approval(run.id, "Deploy", 1, &replaced, 2_000)
        .await
        .unwrap();
    assert_eq!(first.id, again.id);
    assert_eq!(again.requested_at, 1_000);
    assert_eq!(again.status, "pending");
    assert_eq!(store.pending_approvals().await.unwrap().len(), 1);
    let decide = |user: &str, approve: bool| ApprovalDecision {
        user: user.into(),
        approve,
        comment: format!("{user} says {approve}"),
        decided_at: 3_000,
    };
    let after_bob = store
        .decide_approval(first.id, &decide("bob", true))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after_bob.status, "pending", "one of two approvals");
    // The same approver twice still counts once.
    let twice = store
        .decide_approval(first.id, &decide("bob", true))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(twice.status, "pending");
    let done = store
        .decide_approval(first.id, &decide("cy", true))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, "approved");
    assert_eq!(done.decided_at, Some(3_000));
    assert_eq!(done.decisions.len(), 3);
    assert_eq!(done.decisions[2].comment, "cy says true");
    assert!(
        store
            .decide_approval(first.id, &decide("cy", false))
            .await
            .unwrap()
            .is_none(),
        "an approved approval takes no more decisions"
    );
    // Another stage: one rejection ends it; a timeout ends only a pending one.
    let other = store
        .request_approval(run.id, "Prod", 1, &replaced, 4_000)
        .await
        .unwrap();
    let rejected = store
        .decide_approval(other.id, &decide("bob", false))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rejected.status, "rejected");
    assert!(!store.expire_approval(other.id, 5_000).await.unwrap());
    let third = store
        .request_approval(run.id, "Late", 1, &replaced, 4_000)
        .await
        .unwrap();
    assert!(store.expire_approval(third.id, 5_000).await.unwrap());
    let all = store.approvals_of_run(run.id).await.unwrap();
    let statuses: Vec<&str> = all.iter().map(|a| a.status.as_str()).collect();
    assert_eq!(statuses, ["approved", "rejected", "timedOut"]);
    assert!(store.pending_approvals().await.unwrap().is_empty());
    // Removing the check leaves the approvals asked for.
    assert!(
        store
            .set_approval_check(project.id, "TEST", None)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.approval_checks(project.id).await.unwrap().is_empty());
    assert_eq!(store.approvals_of_run(run.id).await.unwrap().len(), 3);
}

/// One automatic check of each kind per environment (names ignoring case), replaced or removed
/// as a whole, listed by environment and kind.
pub(crate) async fn environment_checks_are_one_per_kind_and_replaced(store: &dyn Storage) {
    let (_, project, _) = pipeline(store).await;
    let branch = store
        .set_environment_check(
            project.id,
            "Prod",
            "branchControl",
            Some(("{\"a\":1}", "ada")),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(branch.config, "{\"a\":1}");
    store
        .set_environment_check(
            project.id,
            "prod",
            "branchControl",
            Some(("{\"a\":2}", "ada")),
        )
        .await
        .unwrap();
    store
        .set_environment_check(project.id, "prod", "businessHours", Some(("{}", "ada")))
        .await
        .unwrap();
    let checks = store.environment_checks(project.id).await.unwrap();
    let kinds: Vec<(&str, &str)> = checks
        .iter()
        .map(|c| (c.kind.as_str(), c.config.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [("branchControl", "{\"a\":2}"), ("businessHours", "{}")]
    );
    assert!(
        store
            .set_environment_check(project.id, "PROD", "businessHours", None)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.environment_checks(project.id).await.unwrap().len(), 1);
}

pub(crate) async fn manual_stages_are_started_once(store: &dyn Storage) {
    let (_, _, pipeline) = pipeline(store).await;
    let run = store
        .create_run(&new_run(pipeline.id, "main"), &[new_job("a", "pending")])
        .await
        .unwrap();
    assert!(store.stage_starts(run.id).await.unwrap().is_empty());
    assert!(store.start_stage(run.id, "Prod", "ada", 5).await.unwrap());
    assert!(!store.start_stage(run.id, "Prod", "bob", 6).await.unwrap());
    let starts = store.stage_starts(run.id).await.unwrap();
    assert_eq!(
        starts,
        [StageStart {
            run_id: run.id,
            stage: "Prod".into(),
            started_by: "ada".into(),
            started_at: 5,
        }]
    );
}

/// Four runs of one pipeline ask for the lock of `prod`: the first gets it, a later runLatest
/// request cancels an earlier waiting runLatest one (naming the newer run), a sequential one keeps
/// its place; a holder whose stage finished frees the lock for the next; names ignore case.
pub(crate) async fn exclusive_locks_queue_in_both_behaviours_and_free_themselves(
    store: &dyn Storage,
) {
    let (_, project, pipeline) = pipeline(store).await;
    let mut runs = Vec::new();
    for _ in 0..4 {
        let job = NewJob {
            stage_name: "Deploy".into(),
            ..new_job("deploy", "pending")
        };
        runs.push(
            store
                .create_run(&new_run(pipeline.id, "main"), &[job])
                .await
                .unwrap(),
        );
    }
    let ask = |index: usize, environment: &'static str, behavior: &'static str| {
        let run_id = runs[index].id;
        async move {
            let request = NewLockRequest {
                project_id: project.id,
                environment,
                run_id,
                stage: "Deploy",
                attempt: 1,
                behavior,
                timeout_minutes: 60,
            };
            store
                .request_lock(&request, 1_000 + index as i64)
                .await
                .unwrap()
        }
    };
    let first = ask(0, "prod", "runLatest").await;
    assert_eq!(first.request.status, "held");
    assert_eq!(first.holder, None);
    // Asking again changes nothing.
    assert_eq!(ask(0, "Prod", "runLatest").await.request.status, "held");
    let second = ask(1, "PROD", "runLatest").await;
    assert_eq!(second.request.status, "waiting");
    assert_eq!(second.holder.as_ref().map(|h| h.run_id), Some(runs[0].id));
    assert_eq!(second.ahead, 0);
    let third = ask(2, "prod", "sequential").await;
    assert_eq!(third.request.status, "waiting");
    assert_eq!(third.changed_runs, [runs[1].id]);
    let locks = store.locks_of_run(runs[1].id).await.unwrap();
    assert_eq!(locks[0].status, "canceled");
    assert!(
        locks[0].reason.contains(&format!("#{}", runs[2].number)),
        "{}",
        locks[0].reason
    );
    let fourth = ask(3, "prod", "runLatest").await;
    assert_eq!(fourth.request.status, "waiting");
    assert_eq!(fourth.ahead, 1, "the sequential request keeps its place");
    let mut waiting = store.runs_waiting_for_locks().await.unwrap();
    waiting.sort();
    assert_eq!(waiting, [runs[2].id, runs[3].id]);
    // The holder's stage ends: released, and the runs still waiting are told.
    let told = store
        .release_locks(runs[0].id, Some("Deploy"), 2_000)
        .await
        .unwrap();
    assert_eq!(told, [runs[2].id, runs[3].id]);
    let next = ask(2, "prod", "sequential").await;
    assert_eq!(next.request.status, "held");
    assert!(next.request.granted_at.is_some());
    // A holder whose stage has no unfinished job any more is released when someone asks.
    let jobs = store.jobs_of_run(runs[2].id).await.unwrap();
    store
        .set_job_status(jobs[0].id, "completed", Some("succeeded"))
        .await
        .unwrap();
    let last = ask(3, "prod", "runLatest").await;
    assert_eq!(last.request.status, "held");
    assert_eq!(
        store.locks_of_run(runs[2].id).await.unwrap()[0].status,
        "released"
    );
    // Another environment has its own lock; withdrawing a waiting request tells nobody.
    assert_eq!(ask(1, "dev", "sequential").await.request.status, "held");
    assert!(
        store
            .release_locks(runs[3].id, None, 3_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.runs_waiting_for_locks().await.unwrap().is_empty());
}

pub(crate) async fn approvals_are_asked_again_for_a_new_stage_attempt_and_keep_their_order(
    store: &dyn Storage,
) {
    let (_, project, pipeline) = pipeline(store).await;
    let check = NewApprovalCheck {
        approvers: vec!["cy".into(), "bob".into()],
        min_approvals: 2,
        allow_requester: false,
        instructions: String::new(),
        timeout_minutes: 60,
        in_sequence: true,
        created_by: "ada".into(),
    };
    let stored = store
        .set_approval_check(project.id, "prod", Some(&check))
        .await
        .unwrap()
        .unwrap();
    assert!(stored.in_sequence);
    assert_eq!(stored.approvers, ["cy", "bob"], "the order is kept");
    let run = store
        .create_run(&new_run(pipeline.id, "main"), &[new_job("a", "pending")])
        .await
        .unwrap();
    let first = store
        .request_approval(run.id, "Deploy", 1, &stored, 1_000)
        .await
        .unwrap();
    assert!(first.in_sequence);
    assert_eq!(first.attempt, 1);
    let again = store
        .request_approval(run.id, "Deploy", 2, &stored, 2_000)
        .await
        .unwrap();
    assert_ne!(first.id, again.id);
    assert_eq!((again.attempt, again.status.as_str()), (2, "pending"));
    assert_eq!(store.approvals_of_run(run.id).await.unwrap().len(), 2);
}

pub(crate) async fn variable_groups_are_unique_ignoring_case_replaced_and_authorized_per_pipeline(
    store: &dyn Storage,
) {
    let (_, project, pipeline) = pipeline(store).await;
    assert!(store.variable_groups(project.id).await.unwrap().is_empty());
    let group = store
        .put_variable_group(project.id, "Shared", "first", "[{\"name\":\"a\"}]", "ada")
        .await
        .unwrap();
    assert_eq!(
        (group.name.as_str(), group.description.as_str()),
        ("Shared", "first")
    );
    assert!(group.pipelines.is_empty());
    assert!(
        store
            .authorize_variable_group(group.id, pipeline.id, "ada", 5)
            .await
            .unwrap()
    );
    assert!(
        !store
            .authorize_variable_group(group.id, pipeline.id, "bob", 6)
            .await
            .unwrap()
    );
    // Replaced by a name in another case: same id and name, new contents, authorizations kept.
    let replaced = store
        .put_variable_group(project.id, "SHARED", "second", "[]", "bob")
        .await
        .unwrap();
    assert_eq!(replaced.id, group.id);
    assert_eq!(replaced.name, "Shared");
    assert_eq!(
        (replaced.description.as_str(), replaced.variables.as_str()),
        ("second", "[]")
    );
    assert_eq!(replaced.pipelines, [pipeline.id]);
    assert!(replaced.updated_at >= group.updated_at);
    store
        .put_variable_group(project.id, "other", "", "[]", "ada")
        .await
        .unwrap();
    let names: Vec<String> = store
        .variable_groups(project.id)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(names, ["other", "Shared"]);
    assert!(
        store
            .delete_variable_group(project.id, "shared")
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_variable_group(project.id, "shared")
            .await
            .unwrap()
    );
    assert_eq!(store.variable_groups(project.id).await.unwrap().len(), 1);
}

pub(crate) async fn agents_register_once_with_a_token_and_report_capabilities(store: &dyn Storage) {
    let (_, project, _) = pipeline(store).await;
    let now = now_millis();
    for (hash, pool, project_id, expires_at) in [
        ("r-build", "build", None, now + 60_000),
        ("r-team", "team", Some(project.id), now + 60_000),
        ("r-old", "build", None, now - 1),
    ] {
        store
            .create_agent_registration(&NewAgentRegistration {
                token_hash: hash.into(),
                pool: pool.into(),
                project_id,
                created_by: "ada".into(),
                expires_at,
                environment_id: None,
            })
            .await
            .unwrap();
    }
    let agent = store
        .redeem_agent_registration("r-build", "Build", None, now, "linux-1", "a1")
        .await
        .unwrap()
        .expect("a fresh token registers an agent");
    assert_eq!(
        (agent.name.as_str(), agent.pool.as_str(), agent.project_id),
        ("linux-1", "build", None)
    );
    assert!(agent.enabled && !agent.builtin);
    assert_eq!(agent.capabilities, "{}");
    assert!(
        store
            .redeem_agent_registration("r-build", "Build", None, now, "linux-2", "a2")
            .await
            .unwrap()
            .is_none(),
        "a token registers one agent only"
    );
    assert!(
        store
            .redeem_agent_registration("r-old", "build", None, now, "linux-3", "a3")
            .await
            .unwrap()
            .is_none(),
        "an expired token registers nothing"
    );
    assert!(
        store
            .redeem_agent_registration("r-team", "build", None, now, "team-0", "a6")
            .await
            .unwrap()
            .is_none(),
        "a token registers in its own pool only"
    );
    assert!(matches!(
        store
            .redeem_agent_registration("r-team", "team", None, now, "linux-1", "a4")
            .await,
        Err(StoreError::AlreadyExists { what }) if what == "agent `linux-1`"
    ));
    let team = store
        .redeem_agent_registration("r-team", "team", None, now, "team-1", "a5")
        .await
        .unwrap()
        .expect("a refused name leaves the token unused");
    assert_eq!(
        (team.pool.as_str(), team.project_id),
        ("team", Some(project.id))
    );
    let info = AgentInfo {
        os: "Linux".into(),
        version: "0.1.0".into(),
        capabilities: r#"{"java":"/usr/bin/java"}"#.into(),
    };
    store.set_agent_info(agent.id, &info).await.unwrap();
    let found = store.agent_by_token_hash("a1").await.unwrap().unwrap();
    assert_eq!(found.os.as_deref(), Some("Linux"));
    assert_eq!(found.version.as_deref(), Some("0.1.0"));
    assert_eq!(found.capabilities, info.capabilities);
    assert!(found.last_seen_at.is_some());

    assert!(store.set_agent_enabled("linux-1", false).await.unwrap());
    assert!(!store.set_agent_enabled("nobody", false).await.unwrap());
    let names: Vec<(String, bool)> = store
        .list_agents()
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.name, a.enabled))
        .collect();
    assert_eq!(
        names,
        [("linux-1".to_string(), false), ("team-1".to_string(), true)]
    );
    assert!(store.remove_agent("linux-1").await.unwrap());
    assert!(!store.remove_agent("linux-1").await.unwrap());
    assert!(store.agent_by_token_hash("a1").await.unwrap().is_none());
}

pub(crate) async fn environment_tokens_register_targets_with_tags(store: &dyn Storage) {
    let (_, project, _) = pipeline(store).await;
    let staging = store
        .create_environment(project.id, "staging", "", "ada")
        .await
        .unwrap();
    let now = now_millis();
    for (hash, pool, environment_id) in [
        ("r-env", "staging", Some(staging.id)),
        ("r-pool", "build", None),
    ] {
        store
            .create_agent_registration(&NewAgentRegistration {
                token_hash: hash.into(),
                pool: pool.into(),
                project_id: Some(project.id),
                created_by: "ada".into(),
                expires_at: now + 60_000,
                environment_id,
            })
            .await
            .unwrap();
    }
    let tags = ["web".to_string(), "eu".to_string()];
    assert!(
        store
            .redeem_agent_registration("r-env", "staging", None, now, "vm-0", "t0")
            .await
            .unwrap()
            .is_none(),
        "an environment's token does not register a pool agent"
    );
    assert!(
        store
            .redeem_agent_registration("r-pool", "build", Some(&tags), now, "vm-0", "t0")
            .await
            .unwrap()
            .is_none(),
        "a pool's token does not register a target"
    );
    let target = store
        .redeem_agent_registration("r-env", "Staging", Some(&tags), now, "vm-1", "t1")
        .await
        .unwrap()
        .expect("the environment's token registers a target");
    assert_eq!(
        (
            target.environment_id,
            target.tags.clone(),
            target.project_id
        ),
        (Some(staging.id), tags.to_vec(), Some(project.id))
    );
    let listed = store.list_agents().await.unwrap();
    assert_eq!(listed, vec![target]);
    let builder = store
        .redeem_agent_registration("r-pool", "build", None, now, "linux-1", "t2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((builder.environment_id, builder.tags.len()), (None, 0));
}

pub(crate) async fn jobs_keep_their_pool_and_are_leased_by_id_once(store: &dyn Storage) {
    let (_, project, pipeline) = pipeline(store).await;
    let java = NewJob {
        pool: Some("build".into()),
        demands: vec!["java".into(), "Agent.OS -equals Linux".into()],
        ..new_job("java", "queued")
    };
    let run = store
        .create_run(
            &new_run(pipeline.id, "main"),
            &[
                new_job("plain", "queued"),
                java,
                new_job("later", "pending"),
            ],
        )
        .await
        .unwrap();
    let jobs = store.jobs_of_run(run.id).await.unwrap();
    assert_eq!((jobs[0].pool.as_deref(), jobs[0].demands.len()), (None, 0));
    assert_eq!(jobs[1].pool.as_deref(), Some("build"));
    assert_eq!(jobs[1].demands, ["java", "Agent.OS -equals Linux"]);
    let open = store.agent_jobs().await.unwrap();
    assert_eq!(
        open.iter()
            .map(|j| (j.job.name.as_str(), j.project_id))
            .collect::<Vec<_>>(),
        [("plain", project.id), ("java", project.id)],
        "pending jobs wait for their dependencies, not for an agent"
    );
    let expires = now_millis() + 60_000;
    let leased = store
        .lease_job(jobs[1].id, "java-1", "l1", expires)
        .await
        .unwrap()
        .expect("a queued job is leased by id");
    assert_eq!(
        (leased.status.as_str(), leased.agent_name.as_deref()),
        ("running", Some("java-1"))
    );
    assert!(leased.started_at.is_some());
    assert!(
        store
            .lease_job(jobs[1].id, "java-2", "l2", expires)
            .await
            .unwrap()
            .is_none(),
        "a leased job is not leased again"
    );
    assert!(
        store
            .lease_job(jobs[2].id, "java-2", "l2", expires)
            .await
            .unwrap()
            .is_none(),
        "a pending job is not leased"
    );
    assert!(store.leased_job(jobs[1].id, "l1").await.unwrap().is_some());
    let open = store.agent_jobs().await.unwrap();
    assert_eq!(open.len(), 2, "running jobs are still listed");
    assert_eq!(open[1].job.status, "running");
}

/// An agentless job (`pool: server`) goes from `pending` straight to `running` without an agent:
/// it gets its start time once, no agent leases it, and neither the lease reaper nor the release
/// of a stopped process's jobs touches it.
pub(crate) async fn a_job_the_server_runs_itself_is_never_leased_or_released(store: &dyn Storage) {
    let (_, _, pipeline) = pipeline(store).await;
    let run = store
        .create_run(&new_run(pipeline.id, "main"), &[new_job("gate", "pending")])
        .await
        .unwrap();
    let job = store.jobs_of_run(run.id).await.unwrap().remove(0);
    assert_eq!(job.started_at, None);
    store.set_job_status(job.id, "running", None).await.unwrap();
    let running = store.job_by_id(job.id).await.unwrap().unwrap();
    assert_eq!(running.status, "running");
    let started = running.started_at.expect("running sets the start");
    store.set_job_status(job.id, "running", None).await.unwrap();
    assert_eq!(
        store.job_by_id(job.id).await.unwrap().unwrap().started_at,
        Some(started),
        "the start is kept"
    );
    assert!(
        store
            .lease_next_job("agent", "Linux", "t", now_millis() + 60_000)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .expire_leases(now_millis() + 1_000_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .release_abandoned_jobs(&builtin_names())
            .await
            .unwrap()
            .is_empty()
    );
    store
        .set_job_status(job.id, "completed", Some("succeeded"))
        .await
        .unwrap();
    let done = store.job_by_id(job.id).await.unwrap().unwrap();
    assert_eq!(done.started_at, Some(started));
    assert!(done.finished_at.is_some());
}

/// Names that ignore case (environments, their checks, pipeline variables) ignore ASCII case only,
/// as SQLite's `NOCASE` does, and list by their bytes after ASCII lower-casing, whatever the
/// backend and the database's locale: `É` and `é` are different names, `_` sorts before letters.
pub(crate) async fn names_ignore_ascii_case_only_and_sort_by_their_bytes(store: &dyn Storage) {
    let (_, project, pipeline) = pipeline(store).await;
    for name in ["beta", "Alpha", "_tools", "Zulu", "éclair", "Éclair", "[x]"] {
        store
            .create_environment(project.id, name, "", "ada")
            .await
            .unwrap();
    }
    for name in ["ALPHA", "zULU", "_TOOLS"] {
        let err = store
            .create_environment(project.id, name, "", "ada")
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::AlreadyExists { .. }),
            "{name}: {err:?}"
        );
    }
    let names: Vec<String> = store
        .list_environments(project.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        names,
        ["[x]", "_tools", "Alpha", "beta", "Zulu", "Éclair", "éclair"]
    );
    for (asked, found) in [
        ("ÉCLAIR", "Éclair"),
        ("éCLAIR", "éclair"),
        ("aLPHA", "Alpha"),
    ] {
        let environment = store
            .environment_by_name(project.id, asked)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{asked} not found"));
        assert_eq!(environment.name, found);
    }
    assert!(
        store
            .environment_by_name(project.id, "eclair")
            .await
            .unwrap()
            .is_none()
    );

    let check = NewApprovalCheck {
        approvers: vec!["bob".into()],
        min_approvals: 1,
        allow_requester: false,
        instructions: String::new(),
        timeout_minutes: 60,
        in_sequence: false,
        created_by: "ada".into(),
    };
    for environment in ["Alpha", "ALPHA", "Éclair", "éclair"] {
        store
            .set_approval_check(project.id, environment, Some(&check))
            .await
            .unwrap();
        store
            .set_environment_check(
                project.id,
                environment,
                "branchControl",
                Some(("{}", "ada")),
            )
            .await
            .unwrap();
    }
    let approval_checks = store.approval_checks(project.id).await.unwrap();
    let environment_checks = store.environment_checks(project.id).await.unwrap();
    for checked in [
        approval_checks
            .iter()
            .map(|c| c.environment.as_str())
            .collect::<Vec<_>>(),
        environment_checks
            .iter()
            .map(|c| c.environment.as_str())
            .collect(),
    ] {
        assert_eq!(checked, ["ALPHA", "Éclair", "éclair"]);
    }

    let variable = |name: &str| PipelineVariable {
        name: name.into(),
        value: "v".into(),
        secret: false,
        allow_override: false,
    };
    let err = store
        .set_pipeline_variables(pipeline.id, &[variable("Foo"), variable("FOO")])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    store
        .set_pipeline_variables(pipeline.id, &[variable("é"), variable("É")])
        .await
        .unwrap();
    assert_eq!(
        store.pipeline_variables(pipeline.id).await.unwrap().len(),
        2
    );
}

pub(crate) async fn service_connections_are_replaced_authorized_and_keep_their_uses(
    store: &dyn Storage,
) {
    let (_, project, pipeline) = pipeline(store).await;
    let run = store
        .create_run(&new_run(pipeline.id, "main"), &[new_job("a", "pending")])
        .await
        .unwrap();
    let created = store
        .put_service_connection(project.id, "Dev", "generic", "", "{\"url\":\"x\"}", "ada")
        .await
        .unwrap();
    assert_eq!(
        (created.kind.as_str(), created.fields.as_str()),
        ("generic", "{\"url\":\"x\"}")
    );
    assert!(
        store
            .authorize_service_connection(created.id, pipeline.id, "ada", 1)
            .await
            .unwrap()
    );
    assert!(
        !store
            .authorize_service_connection(created.id, pipeline.id, "ada", 2)
            .await
            .unwrap()
    );
    let replaced = store
        .put_service_connection(project.id, "dev", "powerPlatformSPN", "pp", "{}", "bob")
        .await
        .unwrap();
    assert_eq!((replaced.id, replaced.name.as_str()), (created.id, "Dev"));
    assert_eq!(replaced.kind, "powerPlatformSPN");
    assert_eq!(replaced.pipelines, [pipeline.id]);
    for (job_id, attempt, at) in [(1, 1, 10), (1, 1, 11), (1, 2, 12)] {
        let usage = ConnectionUse {
            run_id: run.id,
            job_id,
            job_attempt: attempt,
            used_at: at,
        };
        store
            .record_connection_use(created.id, &usage)
            .await
            .unwrap();
    }
    let uses = store.connection_uses(created.id, 10).await.unwrap();
    let seen: Vec<(i64, i64)> = uses.iter().map(|u| (u.job_attempt, u.used_at)).collect();
    assert_eq!(seen, [(2, 12), (1, 10)], "once per attempt, newest first");
    assert_eq!(store.connection_uses(created.id, 1).await.unwrap().len(), 1);
    assert!(
        store
            .delete_service_connection(project.id, "DEV")
            .await
            .unwrap()
    );
    assert!(
        store
            .service_connections(project.id)
            .await
            .unwrap()
            .is_empty()
    );
}

pub(crate) async fn secure_files_keep_their_content_apart_and_are_replaced_authorized_and_deleted(
    store: &dyn Storage,
) {
    let (_, project, pipeline) = pipeline(store).await;
    let file = |content: &str, size: i64| NewSecureFile {
        project_id: project.id,
        name: "Signing.pfx".into(),
        description: "release key".into(),
        content: content.into(),
        size,
        digest: format!("d{size}"),
        user: "ada".into(),
    };
    let created = store.put_secure_file(&file("sealed-1", 10)).await.unwrap();
    assert_eq!((created.name.as_str(), created.size), ("Signing.pfx", 10));
    assert!(
        store
            .authorize_secure_file(created.id, pipeline.id, "ada", 1)
            .await
            .unwrap()
    );
    assert!(
        !store
            .authorize_secure_file(created.id, pipeline.id, "ada", 2)
            .await
            .unwrap()
    );
    let mut other_name = file("sealed-2", 20);
    other_name.name = "SIGNING.PFX".into();
    let replaced = store.put_secure_file(&other_name).await.unwrap();
    assert_eq!(
        (replaced.id, replaced.name.as_str()),
        (created.id, "Signing.pfx")
    );
    assert_eq!((replaced.size, replaced.digest.as_str()), (20, "d20"));
    assert_eq!(replaced.pipelines, [pipeline.id]);
    assert_eq!(
        store
            .secure_file_content(project.id, "signing.PFX")
            .await
            .unwrap()
            .as_deref(),
        Some("sealed-2")
    );
    assert_eq!(store.secure_files(project.id).await.unwrap().len(), 1);
    assert!(
        store
            .delete_secure_file(project.id, "signing.pfx")
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_secure_file(project.id, "signing.pfx")
            .await
            .unwrap()
    );
    assert!(
        store
            .secure_file_content(project.id, "signing.pfx")
            .await
            .unwrap()
            .is_none()
    );
}

/// The built-in agents of the server the conformance cases play.
fn builtin_names() -> Vec<String> {
    vec!["built-in-1".into(), "built-in-2".into()]
}

/// Several servers on one database: a starting server releases the jobs of its own built-in agents
/// only; another server's built-in agent keeps its job running.
pub(crate) async fn a_server_releases_only_the_jobs_of_its_own_built_in_agents(
    store: &dyn Storage,
) {
    let (_, _, pipeline) = pipeline(store).await;
    store
        .create_run(
            &new_run(pipeline.id, "main"),
            &[new_job("mine", "queued"), new_job("theirs", "queued")],
        )
        .await
        .unwrap();
    let far = now_millis() + 60_000;
    let mut leased = Vec::new();
    for name in ["built-in-a-1", "built-in-b-1"] {
        store
            .register_builtin_agent(name, &format!("h-{name}"))
            .await
            .unwrap();
        leased.push(
            store
                .lease_next_job(name, "Linux", &format!("l-{name}"), far)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let released = store
        .release_abandoned_jobs(&["built-in-a-1".into()])
        .await
        .unwrap();
    let ids: Vec<i64> = released.iter().map(|job| job.id).collect();
    assert_eq!(ids, [leased[0].id]);
    let theirs = store.job_by_id(leased[1].id).await.unwrap().unwrap();
    assert_eq!(
        (theirs.status.as_str(), theirs.agent_name.as_deref()),
        ("running", Some("built-in-b-1"))
    );
}

pub(crate) async fn expired_jobs_without_a_step_are_queued_again(store: &dyn Storage) {
    let (_, _, pipeline) = pipeline(store).await;
    let run = store
        .create_run(
            &new_run(pipeline.id, "main"),
            &[
                new_job("unstarted", "queued"),
                new_job("stepping", "queued"),
                new_job("alive", "queued"),
            ],
        )
        .await
        .unwrap();
    let jobs = store.jobs_of_run(run.id).await.unwrap();
    let past = now_millis() - 1;
    for (job, agent, expires) in [
        (&jobs[0], "a1", past),
        (&jobs[1], "a2", past),
        (&jobs[2], "a3", now_millis() + 60_000),
    ] {
        store
            .lease_job(job.id, agent, &format!("l-{agent}"), expires)
            .await
            .unwrap()
            .unwrap();
    }
    store
        .upsert_step(&Step {
            job_id: jobs[1].id,
            position: 1,
            name: "s".into(),
            status: "running".into(),
            result: None,
            started_at: Some(now_millis()),
            finished_at: None,
        })
        .await
        .unwrap();
    let requeued = store
        .requeue_unstarted_expired_jobs(now_millis())
        .await
        .unwrap();
    assert_eq!(requeued.len(), 1, "{requeued:?}");
    assert_eq!(
        (requeued[0].id, requeued[0].agent_name.as_deref()),
        (jobs[0].id, Some("a1")),
        "the job is returned with the agent that lost it"
    );
    let now = store.jobs_of_run(run.id).await.unwrap();
    assert_eq!(now[0].status, "queued");
    assert!(now[0].agent_name.is_none() && now[0].started_at.is_none());
    assert!(
        store
            .leased_job(jobs[0].id, "l-a1")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        now[1].status, "running",
        "a job that ran a step is not run twice"
    );
    assert_eq!(now[2].status, "running", "a live lease is kept");
    let failed = store.expire_leases(now_millis()).await.unwrap();
    assert_eq!(
        failed.iter().map(|j| j.id).collect::<Vec<_>>(),
        [jobs[1].id]
    );
    let leased = store
        .lease_job(jobs[0].id, "a4", "l-a4", now_millis() + 60_000)
        .await
        .unwrap()
        .expect("another agent leases the queued job");
    assert_eq!(leased.agent_name.as_deref(), Some("a4"));
}
