//! The web UI in a real browser: Debian's chromium driven through chromedriver (started here on
//! 127.0.0.1) signs in, opens a running run, watches its log arrive over the live stream without a
//! reload, and downloads an artifact. Screenshots go to `$CARGO_TARGET_TMPDIR/screenshots/`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use lockgate_protocol::api;

use crate::end_to_end::{
    commit_and_push, git, project_with_pipeline, run_logs, runs_of, start_on, start_server,
    wait_for_run, wait_for_runs,
};

/// Stops chromedriver (and its browser) when the test ends, however it ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_chromedriver() -> (Driver, String) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .args([
            format!("--port={port}"),
            "--allowed-ips=127.0.0.1".to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is installed (Debian package chromium-driver; .ci/run installs it)");
    let driver = Driver(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (driver, format!("http://127.0.0.1:{port}"))
}

fn screenshots_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).unwrap();
}

async fn connect(webdriver: &str, profile: &Path, downloads: &Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.display()), "--window-size=1280,900"
            ],
            "prefs": {"download.default_directory": downloads.display().to_string(), "download.prompt_for_download": false}
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(webdriver)
        .await
        .expect("a chromium session starts")
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const SLOW_PIPELINE: &str = "\
parameters:
- name: greeting
  type: string
  default: hello
steps:
- script: |
    echo \"${{ parameters.greeting }} from the form\"
    for i in $(seq 1 30); do echo \"tick $i\"; sleep 0.5; done
    mkdir -p out && echo 'artifact content' > out/report.txt
  displayName: Slow build
- publish: out
  artifact: report
";

#[test]
fn a_user_signs_in_watches_the_live_log_and_downloads_an_artifact() {
    let server = start_server();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", SLOW_PIPELINE)],
        "main",
    );
    let run = wait_for_runs(&server, pipeline, "the run to start", |runs| {
        runs.first().is_some_and(|r| r.status == "running")
    })[0]
        .clone();

    let (_driver, webdriver) = start_chromedriver();
    let browser_dirs = tempfile::tempdir().unwrap();
    let profile = browser_dirs.path().join("profile");
    let downloads = browser_dirs.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = connect(&webdriver, &profile, &downloads).await;
        client
            .goto(&format!("{}/runs/{}", server.url, run.id))
            .await
            .unwrap();
        assert!(
            client
                .current_url()
                .await
                .unwrap()
                .path()
                .starts_with("/login")
        );
        client
            .find(Locator::Css("input[name=name]"))
            .await
            .unwrap()
            .send_keys("ada")
            .await
            .unwrap();
        client
            .find(Locator::Css("input[name=password]"))
            .await
            .unwrap()
            .send_keys("pw-123456")
            .await
            .unwrap();
        screenshot(&client, "01-login").await;
        client
            .find(Locator::Css("form button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_for("the run page", || async {
            client.current_url().await.unwrap().path() == format!("/runs/{}", run.id)
        })
        .await;
        screenshot(&client, "02-run-running").await;

        // Mark this page load; lines that arrive while the marker survives came over the live stream.
        client
            .execute("window.lockgateMarker = 1; return null;", vec![])
            .await
            .unwrap();
        let panel = client.find(Locator::Css("section.jobpanel")).await.unwrap();
        let loaded_lines: usize = panel
            .attr("data-lines")
            .await
            .unwrap()
            .unwrap()
            .parse()
            .unwrap();
        let job: i64 = panel
            .attr("data-job")
            .await
            .unwrap()
            .unwrap()
            .parse()
            .unwrap();
        let next_line = format!("#L{job}-{}", loaded_lines + 2);
        wait_for("a streamed log line", || async {
            client.find(Locator::Css(&next_line)).await.is_ok()
        })
        .await;
        let marker = client
            .execute("return window.lockgateMarker === 1;", vec![])
            .await
            .unwrap();
        assert_eq!(
            marker,
            serde_json::json!(true),
            "the line arrived without reloading the page"
        );
        let detail: api::RunDetail = server
            .client
            .get_json(&format!("/api/v1/runs/{}", run.id))
            .unwrap();
        assert_eq!(
            detail.run.status, "running",
            "the line was live, before the job ended"
        );
        screenshot(&client, "03-live-log").await;

        // When the job ends the page reloads with the final state and the artifact link.
        wait_for("the finished run", || async {
            client.find(Locator::Css("a.artifact")).await.is_ok()
        })
        .await;
        let log_text = client
            .find(Locator::Css("pre.log"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(log_text.contains("tick 30"), "{log_text}");
        screenshot(&client, "04-run-finished").await;
        client
            .find(Locator::Css("a.artifact"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let downloaded = downloads.join("report.txt");
        wait_for("the downloaded artifact", || async { downloaded.exists() }).await;
        assert_eq!(
            std::fs::read_to_string(&downloaded).unwrap(),
            "artifact content\n"
        );

        // The project page lists the repository's clone URL and the run.
        client.goto(&format!("{}/p/p", server.url)).await.unwrap();
        let page = client
            .find(Locator::Css("main"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains(&format!("{}/git/p/app.git", server.url)),
            "{page}"
        );
        assert!(page.contains("succeeded"), "{page}");
        client.set_window_size(390, 844).await.unwrap();
        screenshot(&client, "05-project-phone").await;
        client.set_window_size(1280, 900).await.unwrap();

        // The pipeline page offers a form generated from the pipeline's parameters.
        client
            .goto(&format!("{}/pipelines/{pipeline}", server.url))
            .await
            .unwrap();
        let field = client
            .find(Locator::Css("input[name='param.greeting']"))
            .await
            .unwrap();
        assert_eq!(field.prop("value").await.unwrap().as_deref(), Some("hello"));
        field.clear().await.unwrap();
        field.send_keys("bonjour").await.unwrap();
        screenshot(&client, "06-run-form").await;
        client
            .find(Locator::Css("form.card button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_for("the queued run's page", || async {
            let path = client.current_url().await.unwrap().path().to_string();
            path.starts_with("/runs/") && path != format!("/runs/{}", run.id)
        })
        .await;
        // An invalid pipeline's run shows the compiler's diagnostics over the YAML.
        let invalid_yaml = "steps:\n- script: echo hi\n  bogusKey: 1\n";
        commit_and_push(
            work.path(),
            &push_url,
            &[("azure-pipelines.yml", invalid_yaml)],
            "main",
        );
        let invalid = wait_for_runs(&server, pipeline, "the invalid run", |runs| {
            runs.len() == 3 && runs[0].status == "completed"
        })[0]
            .clone();
        assert_eq!(invalid.result.as_deref(), Some("failed"));
        client
            .goto(&format!("{}/runs/{}", server.url, invalid.id))
            .await
            .unwrap();
        let problems = client
            .find(Locator::Css("section.diagnostics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(problems.contains("azure-pipelines.yml:3"), "{problems}");
        let marked = client.find(Locator::Css("pre.yaml .marked")).await.unwrap();
        assert_eq!(marked.attr("id").await.unwrap().as_deref(), Some("Y3"));
        screenshot(&client, "07-diagnostics").await;
        client.close().await.unwrap();
    });
    // The run queued from the form used the parameter value typed in.
    let manual = runs_of(&server, pipeline)[1].clone();
    assert_eq!(manual.reason, "manual");
    wait_for_runs(&server, pipeline, "the manual run", |runs| {
        runs[1].status == "completed"
    });
    let logs = server
        .client
        .get_text(&format!("/api/v1/runs/{}/logs", manual.id))
        .unwrap();
    assert!(logs.contains("bonjour from the form"), "{logs}");
}

/// Signs in as `user` (password `pw-123456`) from the login page `client` is on.
async fn sign_in(client: &Client, user: &str) {
    client
        .find(Locator::Css("input[name=name]"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    client
        .find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys("pw-123456")
        .await
        .unwrap();
    client
        .find(Locator::Css("form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[test]
fn an_approver_approves_a_waiting_deployment_from_the_run_page() {
    let dir = tempfile::tempdir().unwrap();
    let started = start_on(&dir.path().join("data"), true);
    started.runtime.block_on(async {
        started
            .state
            .store
            .create_user(
                "bob",
                &lockgate_server::auth::hash_password("pw-123456").unwrap(),
                false,
            )
            .await
            .unwrap();
    });
    let server = started.running();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let _: serde_json::Value = server
        .client
        .put_json(
            "/api/v1/projects/p/members/bob",
            &serde_json::json!({"role": "reader"}),
        )
        .unwrap();
    let _: api::ApprovalCheck = server
        .client
        .put_json(
            "/api/v1/projects/p/environments/test/checks/approval",
            &serde_json::json!({"approvers": ["bob"], "instructions": "look at dev first"}),
        )
        .unwrap();
    let yaml = "\
appendCommitMessageToRunName: false
stages:
- stage: Deploy
  jobs:
  - deployment: Ship
    environment: test
    strategy:
      runOnce:
        deploy:
          steps:
          - script: echo \"shipped\" \"after approval\"
";
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", yaml)],
        "main",
    );
    let run = wait_for_runs(&server, pipeline, "a run", |runs| !runs.is_empty())[0].clone();

    let (_driver, webdriver) = start_chromedriver();
    let browser_dirs = tempfile::tempdir().unwrap();
    let profile = browser_dirs.path().join("profile");
    let downloads = browser_dirs.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = connect(&webdriver, &profile, &downloads).await;
        client
            .goto(&format!("{}/runs/{}", server.url, run.id))
            .await
            .unwrap();
        sign_in(&client, "bob").await;
        // The page shows why the deployment waits and offers bob the decision.
        wait_for("the approval form", || async {
            if client.find(Locator::Css("form.decide")).await.is_ok() {
                return true;
            }
            let _ = client
                .goto(&format!("{}/runs/{}", server.url, run.id))
                .await;
            false
        })
        .await;
        let section = client
            .find(Locator::Css("section.approvals"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(section.contains("look at dev first"), "{section}");
        assert!(section.contains("pending"), "{section}");
        let waiting = client
            .find(Locator::Css("p.waiting"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            waiting.contains("approval for environment `test`"),
            "{waiting}"
        );
        // bob only reads the project: no Cancel for him.
        assert!(
            client.find(Locator::Css("div.actions form")).await.is_err(),
            "a reader is offered a run action"
        );
        screenshot(&client, "10-approval-waiting").await;
        client
            .find(Locator::Css("form.decide textarea[name=comment]"))
            .await
            .unwrap()
            .send_keys("dev is fine")
            .await
            .unwrap();
        client
            .find(Locator::Css("form.decide button.approve"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_for("the approved state", || async {
            client
                .find(Locator::Css("div.approval[data-status=approved]"))
                .await
                .is_ok()
        })
        .await;
        let section = client
            .find(Locator::Css("section.approvals"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(section.contains("bob approved"), "{section}");
        assert!(section.contains("dev is fine"), "{section}");
        assert!(
            client.find(Locator::Css("form.decide")).await.is_err(),
            "no form once decided"
        );
        screenshot(&client, "11-approval-approved").await;
        client.close().await.unwrap();
    });
    let done = wait_for_run(&server, pipeline, 1);
    assert_eq!(done.result.as_deref(), Some("succeeded"));
    assert!(run_logs(&server, run.id).contains("shipped after approval"));
    drop(dir);
}

/// Two versions deployed to dev and test: the pipeline page's release matrix says what runs where
/// and how far behind; dev's page lists its checks (none) and ledger, and its Redeploy button puts
/// the first version back.
#[test]
fn the_release_matrix_shows_what_runs_where_and_redeploy_rolls_dev_back() {
    let dir = tempfile::tempdir().unwrap();
    let started = start_on(&dir.path().join("data"), true);
    started.runtime.block_on(async {
        started
            .state
            .store
            .create_user(
                "cy",
                &lockgate_server::auth::hash_password("pw-123456").unwrap(),
                false,
            )
            .await
            .unwrap();
    });
    let server = started.running();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let _: serde_json::Value = server
        .client
        .put_json(
            "/api/v1/projects/p/members/cy",
            &serde_json::json!({"role": "contributor"}),
        )
        .unwrap();
    let yaml = "\
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
          - script: echo \"dev runs\" \"`cat $(Pipeline.Workspace)/app/app.txt`\"
- stage: Test
  jobs:
  - deployment: test
    environment: test
    strategy:
      runOnce:
        deploy:
          steps:
          - script: echo \"test runs\" \"`cat $(Pipeline.Workspace)/app/app.txt`\"
";
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    for (count, version) in [(1, "v1"), (2, "v2")] {
        commit_and_push(
            work.path(),
            &push_url,
            &[("azure-pipelines.yml", yaml), ("version.txt", version)],
            "main",
        );
        wait_for_run(&server, pipeline, count);
    }
    let first = crate::end_to_end::runs_of(&server, pipeline)[1].id;

    let (_driver, webdriver) = start_chromedriver();
    let browser_dirs = tempfile::tempdir().unwrap();
    let profile = browser_dirs.path().join("profile");
    let downloads = browser_dirs.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = connect(&webdriver, &profile, &downloads).await;
        client
            .goto(&format!("{}/pipelines/{}", server.url, pipeline))
            .await
            .unwrap();
        sign_in(&client, "cy").await;
        wait_for("the release matrix", || async {
            client
                .find(Locator::Css("table.environments"))
                .await
                .is_ok()
        })
        .await;
        let matrix = client
            .find(Locator::Css("table.environments"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            matrix.contains("dev") && matrix.contains("test"),
            "{matrix}"
        );
        assert!(matrix.contains("up to date"), "{matrix}");
        screenshot(&client, "12-release-matrix").await;
        client
            .goto(&format!("{}/p/p/environments/dev", server.url))
            .await
            .unwrap();
        let checks = client
            .find(Locator::Css("section.checks"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(checks.contains("None"), "{checks}");
        // One Redeploy per run; the older run's is the second row's.
        let buttons = client
            .find_all(Locator::Css("form.redeploy"))
            .await
            .unwrap();
        assert_eq!(buttons.len(), 2);
        screenshot(&client, "13-environment-ledger").await;
        let older = client
            .find(Locator::Css(&format!(
                "form.redeploy input[name=run][value=\"{first}\"]"
            )))
            .await
            .unwrap();
        assert_eq!(
            older.attr("value").await.unwrap().as_deref(),
            Some(first.to_string().as_str())
        );
        client
            .find(Locator::XPath(&format!(
                "//form[contains(@class,'redeploy')][input[@value='{first}']]/button"
            )))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_for("the run page of the redeployed run", || async {
            client
                .current_url()
                .await
                .is_ok_and(|u| u.path() == format!("/runs/{first}"))
        })
        .await;
        client.close().await.unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all: Vec<api::DeployedVersion> = server
            .client
            .get_json(&format!("/api/v1/pipelines/{pipeline}/environments"))
            .unwrap();
        let dev = all.iter().find(|v| v.environment == "dev").unwrap();
        if dev.deployment.run_id == first {
            assert_eq!((dev.deployment.attempt, dev.behind), (2, 1), "{dev:?}");
            let test = all.iter().find(|v| v.environment == "test").unwrap();
            assert_ne!(test.deployment.run_id, first, "only dev was rolled back");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dev was not rolled back: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(run_logs(&server, first).matches("dev runs v1").count() >= 1);
    drop(dir);
}
