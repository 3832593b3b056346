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
