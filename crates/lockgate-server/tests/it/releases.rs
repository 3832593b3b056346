//! Releases end to end on a real server with its built-in agents and real git pushes: manual
//! stages and the exclusive lock of environments.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use lockgate_protocol::api;

use crate::end_to_end::{
    Running, commit_and_push, completed, git, job_result, project_with_pipeline, run_logs, runs_of,
    start_server, wait_for_detail, wait_for_runs, window_not_now,
};

fn start_stage(server: &Running, run: i64, stage: &str) -> Result<api::Run, u16> {
    server
        .client
        .post_json(
            &format!("/api/v1/runs/{run}/stages/{stage}/start"),
            &serde_json::json!({}),
        )
        .map_err(|e| e.status().unwrap_or(0))
}

#[test]
fn a_manual_stage_waits_for_someone_to_start_it_and_the_run_completes_without_it() {
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let yaml = "\
stages:
- stage: Build
  jobs:
  - job: B
    steps:
    - script: echo built
- stage: Prod
  trigger: manual
  jobs:
  - job: Ship
    steps:
    - script: echo \"shipped\" \"by hand\"
- stage: After
  dependsOn: Prod
  jobs:
  - job: Tell
    steps:
    - script: echo told
";
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", yaml)],
        "main",
    );
    let run = wait_for_runs(&server, pipeline, "a run", |runs| !runs.is_empty())[0].id;
    // The run completes with Build; Prod and the stage after it wait, saying for what.
    let detail = completed(&server, run);
    assert_eq!(detail.run.result.as_deref(), Some("succeeded"));
    let ship = detail.jobs.iter().find(|j| j.name == "Ship").unwrap();
    assert_eq!(ship.status, "pending");
    assert!(
        ship.waiting_for
            .as_deref()
            .is_some_and(|w| w.contains("a manual start")),
        "{ship:?}"
    );
    assert_eq!(
        detail
            .jobs
            .iter()
            .find(|j| j.name == "Tell")
            .unwrap()
            .status,
        "pending"
    );
    // The run page offers to start it.
    let page = server.client.get_text(&format!("/runs/{run}")).unwrap();
    assert!(
        page.contains(&format!("action=\"/runs/{run}/stages/Prod/start\""))
            && page.contains("Run stage"),
        "{page}"
    );
    assert_eq!(start_stage(&server, run, "Build").unwrap_err(), 409);
    assert_eq!(start_stage(&server, run, "Nope").unwrap_err(), 404);
    // Started (the name ignores case): the run is in progress again and runs Prod, then After.
    let reopened = start_stage(&server, run, "prod").unwrap();
    assert_ne!(reopened.status, "completed", "{reopened:?}");
    let detail = completed(&server, run);
    assert_eq!(detail.run.result.as_deref(), Some("succeeded"));
    assert_eq!(job_result(&detail, "Ship"), "succeeded");
    assert_eq!(job_result(&detail, "Tell"), "succeeded");
    assert!(run_logs(&server, run).contains("shipped by hand"));
    assert_eq!(start_stage(&server, run, "Prod").unwrap_err(), 409);
    let page = server.client.get_text(&format!("/runs/{run}")).unwrap();
    assert!(!page.contains("Run stage"), "{page}");
}

const LOCKED: &str = "\
stages:
- stage: Deploy
  lockBehavior: BEHAVIOR
  jobs:
  - deployment: Ship
    environment: prod
    strategy:
      runOnce:
        deploy:
          steps:
          - checkout: none
          - script: |
              echo \"holding in\" \"$(Pipeline.Workspace)/go-$(Build.BuildId)\"
              until [ -f \"$(Pipeline.Workspace)/go-$(Build.BuildId)\" ]; do sleep 0.05; done
              echo \"deployed\" \"run $(Build.BuildId)\"
";

fn locks_of(server: &Running, run: i64) -> Vec<api::EnvironmentLock> {
    server
        .client
        .get_json(&format!("/api/v1/runs/{run}/locks"))
        .unwrap()
}

fn wait_for_lock(server: &Running, run: i64, status: &str) -> api::EnvironmentLock {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let locks = locks_of(server, run);
        if let Some(lock) = locks.iter().find(|l| l.status == status) {
            return lock.clone();
        }
        assert!(
            Instant::now() < deadline,
            "run {run}'s lock never became {status}: {locks:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until run `run` deploys (holds the lock and its step runs), then lets its step finish.
fn let_deploy_finish(server: &Running, run: i64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let path = loop {
        let logs = run_logs(server, run);
        if let Some(line) = logs.lines().find(|l| l.contains("holding in ")) {
            let path = line.split("holding in ").nth(1).unwrap().trim();
            break PathBuf::from(path);
        }
        assert!(
            Instant::now() < deadline,
            "run {run} never deployed: {logs}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(wait_for_lock(server, run, "held").environment, "prod");
    std::fs::write(path, "go").unwrap();
}

fn queue(server: &Running, pipeline: i64) -> i64 {
    let run: api::Run = server
        .client
        .post_json(
            &format!("/api/v1/pipelines/{pipeline}/runs"),
            &serde_json::json!({}),
        )
        .unwrap();
    run.id
}

/// Three runs contend for `prod`'s exclusive lock, once with `runLatest` (the middle one gives
/// way to the newest, canceled with a reason that names it) and once with `sequential` (each gets
/// the lock in turn); no deployment is dropped without saying so, and only one deploys at a time.
#[test]
fn the_exclusive_lock_lets_one_run_deploy_at_a_time_in_both_behaviours() {
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let check = "/api/v1/projects/p/environments/prod/checks/exclusive-lock";
    let error = server
        .client
        .put_json::<_, serde_json::Value>(check, &serde_json::json!({"timeoutMinutes": 0}))
        .unwrap_err();
    assert_eq!(error.status(), Some(400), "{error}");
    assert!(error.to_string().contains("`timeoutMinutes`"), "{error}");
    let set: api::ExclusiveLock = server
        .client
        .put_json(check, &serde_json::json!({}))
        .unwrap();
    assert_eq!(set.timeout_minutes, 43_200);

    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[(
            "azure-pipelines.yml",
            &LOCKED.replace("BEHAVIOR", "runLatest"),
        )],
        "main",
    );
    let first = wait_for_runs(&server, pipeline, "a run", |runs| !runs.is_empty())[0].id;
    wait_for_lock(&server, first, "held");
    let second = queue(&server, pipeline);
    wait_for_lock(&server, second, "waiting");
    let waiting = wait_for_detail(&server, second, "a reason", |d| {
        d.jobs[0].waiting_for.is_some()
    });
    let reason = waiting.jobs[0].waiting_for.clone().unwrap();
    assert!(
        reason.contains("exclusive lock of environment `prod`")
            && reason.contains("held by run #1"),
        "{reason}"
    );
    let third = queue(&server, pipeline);
    // The second gives way to the third at once, and says so.
    let canceled = completed(&server, second);
    assert_eq!(canceled.run.result.as_deref(), Some("canceled"));
    assert_eq!(job_result(&canceled, "Ship"), "canceled");
    let logs = run_logs(&server, second);
    assert!(
        logs.contains("run #3 asked for the exclusive lock of environment `prod` later"),
        "{logs}"
    );
    assert_eq!(
        wait_for_lock(&server, second, "canceled").behavior,
        "runLatest"
    );
    assert_eq!(locks_of(&server, third)[0].status, "waiting");
    let_deploy_finish(&server, first);
    assert_eq!(
        completed(&server, first).run.result.as_deref(),
        Some("succeeded")
    );
    let_deploy_finish(&server, third);
    assert_eq!(
        completed(&server, third).run.result.as_deref(),
        Some("succeeded")
    );

    // Sequential: every run deploys, one after another, in the order they asked.
    commit_and_push(
        work.path(),
        &push_url,
        &[(
            "azure-pipelines.yml",
            &LOCKED.replace("BEHAVIOR", "sequential"),
        )],
        "main",
    );
    let fourth = wait_for_runs(&server, pipeline, "a fourth run", |runs| runs.len() >= 4)[0].id;
    wait_for_lock(&server, fourth, "held");
    let fifth = queue(&server, pipeline);
    wait_for_lock(&server, fifth, "waiting");
    let sixth = queue(&server, pipeline);
    wait_for_lock(&server, sixth, "waiting");
    assert_eq!(
        locks_of(&server, fifth)[0].status,
        "waiting",
        "sequential keeps its place"
    );
    for run in [fourth, fifth, sixth] {
        // Only the holder deploys.
        for other in [fourth, fifth, sixth].into_iter().filter(|o| *o > run) {
            assert_ne!(locks_of(&server, other)[0].status, "held");
        }
        let_deploy_finish(&server, run);
        let detail = completed(&server, run);
        assert_eq!(
            detail.run.result.as_deref(),
            Some("succeeded"),
            "{detail:?}"
        );
        assert_eq!(wait_for_lock(&server, run, "released").stage, "Deploy");
    }
    let results: Vec<Option<String>> = runs_of(&server, pipeline)
        .iter()
        .map(|r| r.result.clone())
        .collect();
    assert_eq!(
        results
            .iter()
            .filter(|r| r.as_deref() == Some("succeeded"))
            .count(),
        5
    );
}

/// A user with a read-write token, made in the store of a server that is starting.
fn user_token(started: &crate::end_to_end::Started, name: &str) -> String {
    started.runtime.block_on(async {
        let store = &started.state.store;
        let user = store
            .create_user(
                name,
                &lockgate_server::auth::hash_password("pw-123456").unwrap(),
                false,
            )
            .await
            .unwrap();
        let token = lockgate_server::auth::random_token("lgp_");
        store
            .create_access_token(
                user.id,
                "t",
                &lockgate_server::auth::token_hash(&token),
                "read,write",
            )
            .await
            .unwrap();
        token
    })
}

const SHIPPED: &str = "\
stages:
- stage: Build
  jobs:
  - job: build
    steps:
    - script: mkdir -p out && cp version.txt out/app.txt
    - publish: out
      artifact: app
- stage: Prod
  jobs:
  - deployment: ship
    environment: prod
    strategy:
      runOnce:
        deploy:
          steps:
          - script: |
              f=\"$(Pipeline.Workspace)/app/app.txt\"
              echo \"deploying\" \"`cat $f`\"
";

/// Approves run `run`'s pending approval as `client` and returns the reply's status (200 or a 4xx).
fn approve_as(client: &lockgate_agent::ServerClient, run: i64) -> Result<(), (u16, String)> {
    client
        .post_json::<_, serde_json::Value>(
            &format!("/api/v1/runs/{run}/approvals"),
            &serde_json::json!({"decision": "approve"}),
        )
        .map(|_| ())
        .map_err(|e| (e.status().unwrap_or(0), e.to_string()))
}

fn wait_for_pending(server: &Running, run: i64, attempt: i64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let approvals: Vec<api::Approval> = server
            .client
            .get_json(&format!("/api/v1/runs/{run}/approvals"))
            .unwrap();
        if approvals
            .iter()
            .any(|a| a.status == "pending" && a.attempt == attempt)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no approval of attempt {attempt}: {approvals:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Production needs bob's approval and then an administrator's, in that order (a group approver);
/// v1 and v2 are deployed; rolling back redeploys run 1's artifact with its variables, asks for the
/// approvals again, and is recorded in the ledger as run 1's second attempt.
#[test]
fn a_rollback_redeploys_an_earlier_run_after_approvals_in_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let started = crate::end_to_end::start_on(&dir.path().join("data"), true);
    let bob = lockgate_agent::ServerClient::new(&started.url, &user_token(&started, "bob"));
    let cy = lockgate_agent::ServerClient::new(&started.url, &user_token(&started, "cy"));
    let mut server = started.running();
    server._dir = Some(dir);
    let (push_url, pipeline) = project_with_pipeline(&server);
    for (name, role) in [("bob", "contributor"), ("cy", "administrator")] {
        let _: serde_json::Value = server
            .client
            .put_json(
                &format!("/api/v1/projects/p/members/{name}"),
                &serde_json::json!({ "role": role }),
            )
            .unwrap();
    }
    let check = "/api/v1/projects/p/environments/prod/checks/approval";
    let error = server
        .client
        .put_json::<_, serde_json::Value>(
            check,
            &serde_json::json!({"approvers": ["group:wizards"]}),
        )
        .unwrap_err();
    assert_eq!(error.status(), Some(400));
    assert!(
        error.to_string().contains("`group:wizards` is not a group"),
        "{error}"
    );
    let set: api::ApprovalCheck = server
        .client
        .put_json(
            check,
            &serde_json::json!({"approvers": ["bob", "group:administrators"], "inSequence": true}),
        )
        .unwrap();
    assert_eq!((set.min_approvals, set.in_sequence), (2, true));

    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    let approve_in_order = |run: i64, attempt: i64| {
        wait_for_pending(&server, run, attempt);
        // cy is an administrator, but bob approves first.
        let (status, text) = approve_as(&cy, run).unwrap_err();
        assert_eq!(status, 403, "{text}");
        assert!(
            text.contains("go in sequence: `bob` approves next"),
            "{text}"
        );
        // ada queued the run (she pushed): an administrator, but the requester.
        let (status, text) = approve_as(&server.client, run).unwrap_err();
        assert_eq!(status, 403, "{text}");
        approve_as(&bob, run).unwrap();
        approve_as(&cy, run).unwrap();
    };
    let mut runs = Vec::new();
    for version in ["v1", "v2"] {
        commit_and_push(
            work.path(),
            &push_url,
            &[("azure-pipelines.yml", SHIPPED), ("version.txt", version)],
            "main",
        );
        let run = wait_for_runs(&server, pipeline, "a run", |r| r.len() > runs.len())[0].id;
        approve_in_order(run, 1);
        let detail = completed(&server, run);
        assert_eq!(
            detail.run.result.as_deref(),
            Some("succeeded"),
            "{detail:?}"
        );
        let logs = run_logs(&server, run);
        assert!(logs.contains(&format!("deploying {version}")), "{logs}");
        runs.push(run);
    }
    let ledger = |limit: usize| -> Vec<api::Deployment> {
        let mut all: Vec<api::Deployment> = server
            .client
            .get_json("/api/v1/projects/p/environments/prod/deployments")
            .unwrap();
        all.truncate(limit);
        all
    };
    let first_deployment = ledger(2)[1].clone();
    assert_eq!(first_deployment.run_id, runs[0]);

    // Bad redeploys: unknown run, a body that is not one, a run that never deployed there.
    let redeploy = "/api/v1/projects/p/environments/prod/redeploy";
    let error = server
        .client
        .post_json::<_, serde_json::Value>(redeploy, &serde_json::json!({"run": 999}))
        .unwrap_err();
    assert_eq!(error.status(), Some(404), "{error}");
    let error = server
        .client
        .post_json::<_, serde_json::Value>(redeploy, &serde_json::json!({"runs": 1}))
        .unwrap_err();
    assert_eq!(error.status(), Some(400), "{error}");
    let error = server
        .client
        .post_json::<_, serde_json::Value>(
            "/api/v1/projects/p/environments/dev/redeploy",
            &serde_json::json!({"run": runs[0]}),
        )
        .unwrap_err();
    assert_eq!(error.status(), Some(404), "{error}");

    // Roll back to v1: run 1 deploys again, after the approvals, and the ledger says so.
    let reopened: api::Run = server
        .client
        .post_json(redeploy, &serde_json::json!({"run": runs[0]}))
        .unwrap();
    assert_eq!(reopened.id, runs[0]);
    assert_ne!(reopened.status, "completed");
    approve_in_order(runs[0], 2);
    let detail = completed(&server, runs[0]);
    assert_eq!(
        detail.run.result.as_deref(),
        Some("succeeded"),
        "{detail:?}"
    );
    assert!(run_logs(&server, runs[0]).contains("deploying v1"));
    let newest = ledger(1)[0].clone();
    assert_eq!((newest.run_id, newest.attempt), (runs[0], 2));
    assert_eq!(newest.result.as_deref(), Some("succeeded"));
    assert_eq!(
        newest.artifacts, first_deployment.artifacts,
        "the same artifact"
    );
    assert_eq!(
        newest.variables, first_deployment.variables,
        "the same variables"
    );
    assert_eq!(newest.commit, first_deployment.commit);
    let where_: Vec<api::DeployedVersion> = server
        .client
        .get_json(&format!("/api/v1/pipelines/{pipeline}/environments"))
        .unwrap();
    let prod = where_.iter().find(|v| v.environment == "prod").unwrap();
    assert_eq!(prod.deployment.run_id, runs[0], "{where_:?}");
    // The environment page offers a Redeploy button per run.
    let page = server.client.get_text("/p/p/environments/prod").unwrap();
    assert_eq!(
        page.matches("form class=\"inline redeploy\"").count(),
        2,
        "{page}"
    );
}

const RELEASE: &str = "\
trigger:
  branches:
    include: ['*']
stages:
- stage: Build
  jobs:
  - job: build
    steps:
    - script: mkdir -p out && cp version.txt out/app.txt
    - publish: out
      artifact: app
- stage: Dev
  jobs:
  - deployment: dev
    environment: dev
    strategy:
      runOnce:
        deploy:
          steps:
          - script: echo \"dev got\" \"`cat $(Pipeline.Workspace)/app/app.txt`\"
- stage: Test
  jobs:
  - deployment: test
    environment: test
    strategy:
      rolling:
        maxParallel: 1
        deploy:
          steps:
          - script: echo \"rolling\" \"$(Strategy.Name)\" \"`cat $(Pipeline.Workspace)/app/app.txt`\"
- stage: Prod
  jobs:
  - deployment: prod
    environment: prod
    strategy:
      canary:
        increments: [10, 50]
        deploy:
          steps:
          - script: echo \"canary\" \"$(Strategy.Increment)\" \"`cat $(Pipeline.Workspace)/app/app.txt`\"
        on:
          success:
            steps:
            - script: echo \"prod is\" \"healthy\"
";

fn waiting_for(server: &Running, run: i64, job: &str, needle: &str) {
    wait_for_detail(server, run, needle, |d| {
        d.jobs.iter().any(|j| {
            j.name == job
                && j.status == "pending"
                && j.waiting_for.as_deref().is_some_and(|w| w.contains(needle))
        })
    });
}

/// The release story with two users and real pushes: dev deploys by itself, test waits for bob
/// (ada pushed, so she may not approve), production is refused from a feature branch, waits for
/// business hours and then bob, then rolls out as a canary; test rolls; a second version goes all
/// the way; production is rolled back to the first; the ledger, "what is where" and the
/// environment diff say so at each step.
#[test]
fn the_release_scenario_promotes_through_dev_test_and_prod_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let started = crate::end_to_end::start_on(&dir.path().join("data"), true);
    let bob = lockgate_agent::ServerClient::new(&started.url, &user_token(&started, "bob"));
    let mut server = started.running();
    server._dir = Some(dir);
    let (push_url, pipeline) = project_with_pipeline(&server);
    let _: serde_json::Value = server
        .client
        .put_json(
            "/api/v1/projects/p/members/bob",
            &serde_json::json!({"role": "contributor"}),
        )
        .unwrap();
    let checks = "/api/v1/projects/p/environments";
    // ada is an approver too, but she pushes: the requester may not approve her own run.
    for environment in ["test", "prod"] {
        let _: api::ApprovalCheck = server
            .client
            .put_json(
                &format!("{checks}/{environment}/checks/approval"),
                &serde_json::json!({"approvers": ["ada", "bob"], "instructions": "check the ledger"}),
            )
            .unwrap();
    }
    let _: api::BranchControl = server
        .client
        .put_json(
            &format!("{checks}/prod/checks/branch-control"),
            &serde_json::json!({"allowedBranches": ["refs/heads/main"]}),
        )
        .unwrap();
    let (start, end) = window_not_now();
    let _: api::BusinessHours = server
        .client
        .put_json(
            &format!("{checks}/prod/checks/business-hours"),
            &serde_json::json!({"days": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
                                "start": start, "end": end}),
        )
        .unwrap();
    let _: api::ExclusiveLock = server
        .client
        .put_json(
            &format!("{checks}/prod/checks/exclusive-lock"),
            &serde_json::json!({}),
        )
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    let push = |version: &str, branch: &str, count: usize| {
        commit_and_push(
            work.path(),
            &push_url,
            &[("azure-pipelines.yml", RELEASE), ("version.txt", version)],
            branch,
        );
        wait_for_runs(&server, pipeline, "the pushed run", |r| r.len() >= count)[0].id
    };
    let approve_test = |run: i64| {
        waiting_for(&server, run, "test", "approval for environment `test`");
        let (status, text) = approve_as(&server.client, run).unwrap_err();
        assert_eq!(status, 403, "{text}");
        assert!(
            text.contains("does not let the requester approve"),
            "{text}"
        );
        approve_as(&bob, run).unwrap();
    };

    // v1 on main: dev at once, test after bob, prod held by business hours.
    let first = push("v1", "main", 1);
    approve_test(first);
    let logs = run_logs(&server, first);
    assert!(logs.contains("dev got v1"), "{logs}");
    waiting_for(
        &server,
        first,
        "prod",
        "business hours of environment `prod`",
    );
    assert!(
        run_logs(&server, first).contains("rolling rolling v1"),
        "test rolled out: {}",
        run_logs(&server, first)
    );
    // The environment page says what prod needs and who waits there.
    let page = server.client.get_text("/p/p/environments/prod").unwrap();
    for needle in [
        "Branch control",
        "Business hours",
        "Approval",
        "Exclusive lock",
    ] {
        assert!(page.contains(needle), "{needle}: {page}");
    }

    // A feature branch: dev and test, and production refused by branch control.
    let feature = push("v1-feature", "feature/x", 2);
    approve_test(feature);
    let detail = completed(&server, feature);
    assert_eq!(job_result(&detail, "dev"), "succeeded");
    assert_eq!(job_result(&detail, "prod"), "skipped");
    assert!(run_logs(&server, feature).contains(
        "branch control of environment `prod`: `refs/heads/feature/x` is not one of refs/heads/main"
    ));

    // Business hours lifted: prod waits for bob, then canaries 10%, 50%, 100%.
    server
        .client
        .delete(&format!("{checks}/prod/checks/business-hours"))
        .unwrap();
    waiting_for(&server, first, "prod", "approval for environment `prod`");
    approve_as(&bob, first).unwrap();
    let detail = completed(&server, first);
    assert_eq!(
        detail.run.result.as_deref(),
        Some("succeeded"),
        "{detail:?}"
    );
    let logs = run_logs(&server, first);
    for line in [
        "canary 10 v1",
        "canary 50 v1",
        "canary 100 v1",
        "prod is healthy",
    ] {
        assert!(logs.contains(line), "{line}: {logs}");
    }

    // v2 goes all the way.
    let second = push("v2", "main", 3);
    approve_test(second);
    waiting_for(&server, second, "prod", "approval for environment `prod`");
    approve_as(&bob, second).unwrap();
    assert_eq!(
        completed(&server, second).run.result.as_deref(),
        Some("succeeded")
    );
    let where_ = |environment: &str| -> api::DeployedVersion {
        let all: Vec<api::DeployedVersion> = server
            .client
            .get_json(&format!("/api/v1/pipelines/{pipeline}/environments"))
            .unwrap();
        all.into_iter()
            .find(|v| v.environment == environment)
            .unwrap_or_else(|| panic!("nothing in {environment}"))
    };
    assert_eq!(where_("prod").deployment.run_id, second);
    assert_eq!(where_("prod").behind, 0);

    // Roll prod back to v1: bob approves again; prod runs run 1 again, one run behind.
    let _: api::Run = server
        .client
        .post_json(
            &format!("{checks}/prod/redeploy"),
            &serde_json::json!({"run": first}),
        )
        .unwrap();
    waiting_for(&server, first, "prod", "approval for environment `prod`");
    approve_as(&bob, first).unwrap();
    assert_eq!(
        completed(&server, first).run.result.as_deref(),
        Some("succeeded")
    );
    let prod = where_("prod");
    assert_eq!(
        (prod.deployment.run_id, prod.deployment.attempt),
        (first, 2)
    );
    assert_eq!(prod.behind, 1, "{prod:?}");
    assert_eq!(where_("test").deployment.run_id, second);
    // Promoting test to prod now would bring v2 back: the feature commit and v2's, version.txt.
    let diff: api::EnvironmentDiff = server
        .client
        .get_json(&format!(
            "/api/v1/pipelines/{pipeline}/environments/diff?from=test&to=prod"
        ))
        .unwrap();
    assert_eq!(diff.commits.len(), 2, "{diff:?}");
    assert_eq!(diff.files, ["M version.txt"], "{diff:?}");
    assert_eq!(
        diff.artifacts.len(),
        1,
        "the app artifact differs: {diff:?}"
    );
    // prod's ledger: the rollback, v2, v1, and the refused feature run's skipped deployment is no
    // entry (it never started).
    let ledger: Vec<api::Deployment> = server
        .client
        .get_json(&format!("{checks}/prod/deployments"))
        .unwrap();
    let runs: Vec<(i64, i64)> = ledger.iter().map(|d| (d.run_id, d.attempt)).collect();
    assert_eq!(runs, [(first, 2), (second, 1), (first, 1)], "{ledger:?}");
}

/// Production has an invoke-REST-API check against a local service that answers unhealthy twice,
/// then healthy: the stage waits, saying what it waits for, and deploys once the service is
/// healthy; the secret header reaches the service and is never returned. A check whose service
/// never passes within its timeout fails the stage.
#[test]
fn a_rest_api_check_holds_a_deployment_until_the_service_is_healthy() {
    let service = crate::agentless::test_service(&[(
        "/health",
        &[
            (200, "{\"status\":\"unhealthy\"}"),
            (503, "{\"status\":\"down\"}"),
            (200, "{\"status\":\"healthy\"}"),
        ],
    )]);
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let check = "/api/v1/projects/p/environments/prod/checks/rest-api";
    for (body, needle) in [
        (serde_json::json!({"url": "ftp://x"}), "http:// or https://"),
        (
            serde_json::json!({"url": "http://x", "retryIntervalMinutes": 0}),
            "`retryIntervalMinutes`",
        ),
        (
            serde_json::json!({"url": "http://x", "method": "FETCH"}),
            "method",
        ),
    ] {
        let error = server
            .client
            .put_json::<_, serde_json::Value>(check, &body)
            .unwrap_err();
        assert_eq!(error.status(), Some(400), "{error}");
        assert!(error.to_string().contains(needle), "{needle}: {error}");
    }
    let set: api::RestApiCheck = server
        .client
        .put_json(
            check,
            &serde_json::json!({
                "url": format!("{}/health", service.url),
                "secretHeaders": {"Authorization": "Bearer rest-s3cret"},
                "successCriteria": "eq(root['status'], 'healthy')",
                "retryIntervalMinutes": 0.01
            }),
        )
        .unwrap();
    assert_eq!(set.secret_headers["Authorization"], None);
    let yaml = "\
stages:
- stage: Prod
  jobs:
  - deployment: ship
    environment: prod
    strategy:
      runOnce:
        deploy:
          steps:
          - script: echo \"shipped\" \"when healthy\"
";
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", yaml)],
        "main",
    );
    let run = wait_for_runs(&server, pipeline, "a run", |r| !r.is_empty())[0].id;
    let detail = completed(&server, run);
    assert_eq!(
        detail.run.result.as_deref(),
        Some("succeeded"),
        "{detail:?}"
    );
    assert!(run_logs(&server, run).contains("shipped when healthy"));
    let requests = service.requests.lock().unwrap().clone();
    assert!(requests.len() >= 3, "{requests:?}");
    assert!(
        requests[0]
            .to_ascii_lowercase()
            .contains("authorization: bearer rest-s3cret"),
        "{}",
        requests[0]
    );
}

/// Production requires the pipeline to extend `templates/safe.yml`: a pipeline that does not is
/// refused, saying what it must extend; one that does deploys.
#[test]
fn a_required_template_check_refuses_pipelines_that_do_not_extend_it() {
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let check = "/api/v1/projects/p/environments/prod/checks/required-template";
    let error = server
        .client
        .put_json::<_, serde_json::Value>(check, &serde_json::json!({"templates": []}))
        .unwrap_err();
    assert_eq!(error.status(), Some(400), "{error}");
    let _: api::RequiredTemplate = server
        .client
        .put_json(
            check,
            &serde_json::json!({"templates": ["templates/safe.yml"]}),
        )
        .unwrap();
    let deploy = "\
stages:
- stage: Prod
  jobs:
  - deployment: ship
    environment: prod
    strategy:
      runOnce:
        deploy:
          steps:
          - script: echo \"shipped\" \"safely\"
";
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", deploy)],
        "main",
    );
    let refused = completed(
        &server,
        wait_for_runs(&server, pipeline, "a run", |r| !r.is_empty())[0].id,
    );
    assert_eq!(refused.run.result.as_deref(), Some("failed"));
    let logs = run_logs(&server, refused.run.id);
    assert!(
        logs.contains(
            "required template of environment `prod`: the pipeline must extend one of templates/safe.yml (it extends none)"
        ),
        "{logs}"
    );
    commit_and_push(
        work.path(),
        &push_url,
        &[
            ("templates/safe.yml", deploy),
            (
                "azure-pipelines.yml",
                "extends:\n  template: templates/safe.yml\n",
            ),
        ],
        "main",
    );
    let runs = wait_for_runs(&server, pipeline, "a second run", |r| r.len() >= 2);
    let done = completed(&server, runs[0].id);
    assert_eq!(done.run.result.as_deref(), Some("succeeded"), "{done:?}");
    assert!(run_logs(&server, done.run.id).contains("shipped safely"));
}
