//! Environment resources: `lockgate agent` processes registered with `--environment staging --tags
//! web` are virtual machine resources of the environment, listed on its page with their tags and
//! state, and deployment jobs with `resourceType: VirtualMachine` run on each of them under the
//! deployment strategies.

use std::path::Path;
use std::time::{Duration, Instant};

use lockgate_protocol::api;

use crate::agent::{AgentProcess, run_agent};
use crate::server::{Up, client, start_server, stdout};

/// A server with project `shop` and its environment `staging`, and the API client.
fn shop_with_staging(dir: &Path) -> (Up, lockgate_agent::ServerClient) {
    let up = start_server(dir, &["up", "--port", "0", "--no-demo"]);
    let api = lockgate_agent::ServerClient::new(&up.url, &up.token);
    let _: api::Project = api
        .post_json(
            "/api/v1/projects",
            &api::CreateProject {
                name: "shop".into(),
            },
        )
        .unwrap();
    let _: api::Environment = api
        .post_json(
            "/api/v1/projects/shop/environments",
            &api::CreateEnvironment {
                name: "staging".into(),
                description: String::new(),
            },
        )
        .unwrap();
    (up, api)
}

/// `lockgate agents token ARGS`: the token, or the failed output.
fn token(dir: &Path, up: &Up, args: &[&str]) -> Result<String, std::process::Output> {
    let mut all = vec!["agents", "token"];
    all.extend(args);
    let out = client(dir, up, &all);
    if out.status.code() == Some(0) {
        Ok(stdout(&out).trim().to_string())
    } else {
        Err(out)
    }
}

/// `lockgate agent register --environment staging ...` into `dir/<name>`.
fn register_target(
    dir: &Path,
    up: &Up,
    token: &str,
    name: &str,
    extra: &[&str],
) -> std::process::Output {
    let work = dir.join(name).to_string_lossy().into_owned();
    let mut args = vec![
        "agent", "register", "--url", &up.url, "--token", token, "--name", name, "--work", &work,
    ];
    args.extend(extra);
    crate::cli::lockgate(dir, &args)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Registers and starts targets `names` of `staging` with tag `web`.
fn web_targets(dir: &Path, up: &Up, names: &[&str]) -> Vec<AgentProcess> {
    names
        .iter()
        .map(|name| {
            let token = token(dir, up, &["--environment", "staging", "--project", "shop"]).unwrap();
            let out = register_target(
                dir,
                up,
                &token,
                name,
                &["--environment", "staging", "--tags", "web,eu"],
            );
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            assert!(
                stdout(&out).contains(&format!(
                    "Registered agent `{name}` in environment `staging` (tags web, eu)"
                )),
                "{}",
                stdout(&out)
            );
            run_agent(dir, name)
        })
        .collect()
}

#[test]
fn agents_registered_to_an_environment_are_its_tagged_resources() {
    let dir = tempfile::tempdir().unwrap();
    let (up, api) = shop_with_staging(dir.path());

    // A token names an environment of a project; one that does not exist is refused.
    let missing = token(
        dir.path(),
        &up,
        &["--environment", "prod", "--project", "shop"],
    )
    .unwrap_err();
    assert_ne!(missing.status.code(), Some(0));
    assert!(
        stderr(&missing).contains("environment `prod` in project `shop`"),
        "{}",
        stderr(&missing)
    );
    let no_project = token(dir.path(), &up, &["--environment", "staging"]).unwrap_err();
    assert_ne!(no_project.status.code(), Some(0), "{}", stderr(&no_project));

    // Bad tags and the wrong environment are refused, and leave the token usable.
    let staging_token = token(
        dir.path(),
        &up,
        &["--environment", "staging", "--project", "shop"],
    )
    .unwrap();
    let bad = register_target(
        dir.path(),
        &up,
        &staging_token,
        "vm-bad",
        &["--environment", "staging", "--tags", "web,no spaces"],
    );
    assert_ne!(bad.status.code(), Some(0));
    assert!(
        stderr(&bad).contains("`no spaces` is not a tag"),
        "{}",
        stderr(&bad)
    );
    let elsewhere = register_target(
        dir.path(),
        &up,
        &staging_token,
        "vm-bad2",
        &["--environment", "prod", "--tags", "web"],
    );
    assert_ne!(elsewhere.status.code(), Some(0));
    assert!(
        stderr(&elsewhere).contains("not for environment `prod`"),
        "{}",
        stderr(&elsewhere)
    );
    // A pool's token does not make a target, nor an environment's token a pool agent.
    let pool_token = token(dir.path(), &up, &["--pool", "build"]).unwrap();
    let wrong = register_target(
        dir.path(),
        &up,
        &pool_token,
        "vm-bad3",
        &["--environment", "staging"],
    );
    assert_ne!(wrong.status.code(), Some(0), "{}", stderr(&wrong));
    let as_pool = register_target(
        dir.path(),
        &up,
        &staging_token,
        "vm-bad4",
        &["--pool", "staging"],
    );
    assert_ne!(as_pool.status.code(), Some(0), "{}", stderr(&as_pool));
    let ok = register_target(
        dir.path(),
        &up,
        &staging_token,
        "vm-0",
        &["--environment", "Staging", "--tags", "web"],
    );
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));

    let _agents = web_targets(dir.path(), &up, &["vm-1", "vm-2"]);
    let resources = online_resources_after(&api, &["vm-1", "vm-2"]);
    for resource in &resources {
        assert_eq!(resource.resource_type, "VirtualMachine");
        assert_eq!(resource.tags, ["web", "eu"]);
    }
    let all: api::Environment = api
        .get_json("/api/v1/projects/shop/environments/staging")
        .unwrap();
    let never = all.resources.iter().find(|r| r.name == "vm-0").unwrap();
    assert_eq!(
        (never.state.as_str(), never.tags.clone()),
        ("offline", vec!["web".to_string()])
    );

    // The CLI and the web page list them with their tags and state; the agents list names the
    // environment instead of a pool.
    let shown = client(
        dir.path(),
        &up,
        &["environments", "show", "staging", "--project", "shop"],
    );
    let text = stdout(&shown);
    assert!(
        text.contains("resource vm-1 (VirtualMachine, online) tags web,eu"),
        "{text}"
    );
    let listed = stdout(&client(dir.path(), &up, &["agents", "list"]));
    assert!(
        listed.contains("vm-2  environment staging [web,eu]"),
        "{listed}"
    );
    let page = reqwest_page(&up, "/p/shop/environments/staging");
    assert!(
        page.contains("Resources") && page.contains("vm-2"),
        "{page}"
    );
}

/// The environment's resources once those named are online.
fn online_resources_after(
    api: &lockgate_agent::ServerClient,
    names: &[&str],
) -> Vec<api::EnvironmentResource> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let staging: api::Environment = api
            .get_json("/api/v1/projects/shop/environments/staging")
            .unwrap();
        let up: Vec<api::EnvironmentResource> = staging
            .resources
            .into_iter()
            .filter(|r| names.contains(&r.name.as_str()) && r.state == "online")
            .collect();
        if up.len() == names.len() {
            return up;
        }
        assert!(
            Instant::now() < deadline,
            "targets never came online: {up:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The HTML of a web page, fetched with the access token.
fn reqwest_page(up: &Up, path: &str) -> String {
    let api = lockgate_agent::ServerClient::new(&up.url, &up.token);
    api.get_text(path).unwrap()
}

/// A rollout over the three `web,eu` targets one at a time, then a canary over all four `web`
/// targets whose second increment fails: the rest is not deployed to and the failure hook runs on
/// the failed targets. A deployment to targets nobody registered waits and says why.
const ROLLOUT: &str = "\
stages:
- stage: Roll
  jobs:
  - deployment: Web
    environment:
      name: staging
      resourceType: VirtualMachine
      tags: web,eu
    strategy:
      rolling:
        maxParallel: 1
        deploy:
          steps:
          - script: echo \"deploying to $(Environment.ResourceName) on $(Agent.Name) as [$(Environment.ResourceType) $(Environment.ResourceId)]\" && sleep 0.3
        on:
          success:
            steps:
            - script: echo \"rolled $(Environment.ResourceName)\"
- stage: Canary
  dependsOn: Roll
  jobs:
  - deployment: Canary
    environment:
      name: staging
      resourceType: VirtualMachine
      tags: [web]
    strategy:
      canary:
        increments: [1, 2]
        deploy:
          steps:
          - script: echo \"canary on $(Environment.ResourceName)\" && test \"$(Environment.ResourceName)\" = vm-1
        on:
          failure:
            steps:
            - script: echo \"rolling back $(Environment.ResourceName)\"
          success:
            steps:
            - script: echo \"canary kept on $(Environment.ResourceName)\"
- stage: Db
  dependsOn: []
  jobs:
  - deployment: Db
    environment:
      name: staging
      resourceType: VirtualMachine
      tags: db
    strategy:
      runOnce:
        deploy:
          steps:
          - script: echo never
";

#[test]
fn rolling_and_canary_deployments_go_target_by_target_and_a_failed_increment_stops_the_canary() {
    let dir = tempfile::tempdir().unwrap();
    let (up, api) = shop_with_staging(dir.path());
    let mut agents = web_targets(dir.path(), &up, &["vm-1", "vm-2", "vm-3"]);
    let token = token(
        dir.path(),
        &up,
        &["--environment", "staging", "--project", "shop"],
    )
    .unwrap();
    let out = register_target(
        dir.path(),
        &up,
        &token,
        "vm-4",
        &["--environment", "staging", "--tags", "web"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    agents.push(run_agent(dir.path(), "vm-4"));
    online_resources_after(&api, &["vm-1", "vm-2", "vm-3", "vm-4"]);

    crate::server::push_pipeline_to(dir.path(), &up, "shop", ROLLOUT);
    let refs: Vec<&AgentProcess> = agents.iter().collect();
    let detail = crate::agent::wait_for_run(&api, "the canary to end", &refs, |detail| {
        detail.jobs.iter().filter(|j| j.stage == "Canary").count() == 4
            && detail
                .jobs
                .iter()
                .filter(|j| j.stage != "Db")
                .all(|j| j.status == "completed")
    });
    let outcome = |name: &str| {
        let job = crate::agent::job(&detail, name);
        (job.result.clone().unwrap_or_default(), job.agent.clone())
    };
    for (index, target) in ["vm-1", "vm-2", "vm-3"].iter().enumerate() {
        let job = crate::agent::job(&detail, &format!("Web_{}", index + 1));
        assert_eq!(job.display_name, format!("Web {target}"));
        assert_eq!(
            outcome(&job.name),
            ("succeeded".to_string(), Some(target.to_string()))
        );
    }
    let logs = |job: &str| {
        let id = crate::agent::job(&detail, job).id;
        api.get_text(&format!("/api/v1/runs/{}/jobs/{id}/logs", detail.run.id))
            .unwrap()
    };
    assert_eq!(
        outcome("Canary_1"),
        ("succeeded".into(), Some("vm-1".into())),
        "{}",
        logs("Canary_1")
    );
    assert_eq!(outcome("Canary_2"), ("failed".into(), Some("vm-2".into())));
    assert_eq!(outcome("Canary_3"), ("failed".into(), Some("vm-3".into())));
    assert_eq!(outcome("Canary_4"), ("skipped".into(), None));

    // The job nobody can run waits, saying why.
    let db = crate::agent::job(&detail, "Db");
    assert_eq!(db.status, "queued");
    let reason = db.waiting_for.clone().unwrap_or_default();
    assert!(
        reason.contains("a virtual machine resource with tags `db` of environment `staging`"),
        "{reason}"
    );

    // Each target ran the hooks for itself: the success hook after a good deployment, the
    // failure hook where the canary failed.
    let web_2 = logs("Web_2");
    assert!(
        web_2.contains("deploying to vm-2 on vm-2") && web_2.contains("rolled vm-2"),
        "{web_2}"
    );
    // `Environment.ResourceId` is the target's agent id.
    let has_id = web_2.split("as [VirtualMachine ").skip(1).any(|rest| {
        rest.split(']')
            .next()
            .is_some_and(|id| id.parse::<i64>().is_ok())
    });
    assert!(has_id, "Environment.ResourceId: {web_2}");
    let canary_1 = logs("Canary_1");
    assert!(
        canary_1.contains("canary kept on vm-1") && !canary_1.contains("rolling back"),
        "{canary_1}"
    );
    let canary_3 = logs("Canary_3");
    assert!(
        canary_3.contains("rolling back vm-3") && !canary_3.contains("canary kept"),
        "{canary_3}"
    );

    // The ledger has one entry per target; the rolling ones one after another.
    let ledger: Vec<api::Deployment> = api
        .get_json("/api/v1/projects/shop/environments/staging/deployments?limit=50")
        .unwrap();
    let mut rolled: Vec<&api::Deployment> = ledger
        .iter()
        .filter(|d| d.job.starts_with("Web_"))
        .collect();
    rolled.sort_by_key(|d| d.started_at);
    let order: Vec<(&str, Option<&str>, Option<&str>)> = rolled
        .iter()
        .map(|d| (d.job.as_str(), d.resource.as_deref(), d.result.as_deref()))
        .collect();
    assert_eq!(
        order,
        [
            ("Web_1", Some("vm-1"), Some("succeeded")),
            ("Web_2", Some("vm-2"), Some("succeeded")),
            ("Web_3", Some("vm-3"), Some("succeeded")),
        ]
    );
    for pair in rolled.windows(2) {
        assert!(
            pair[1].started_at >= pair[0].finished_at.unwrap(),
            "{} started before {} finished",
            pair[1].job,
            pair[0].job
        );
    }
    let mut canaries: Vec<(String, Option<String>)> = ledger
        .iter()
        .filter(|d| d.job.starts_with("Canary_"))
        .map(|d| (d.resource.clone().unwrap_or_default(), d.result.clone()))
        .collect();
    canaries.sort();
    assert_eq!(
        canaries,
        [
            ("vm-1".to_string(), Some("succeeded".to_string())),
            ("vm-2".to_string(), Some("failed".to_string())),
            ("vm-3".to_string(), Some("failed".to_string())),
        ]
    );
}
