//! The HTTP surface driven in-process (`tower::ServiceExt::oneshot`) over a fresh store: authentication,
//! CSRF, token scopes, roles, the JSON error shape and input limits.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use lockgate_server::{AppState, auth, router};
use lockgate_store::Store;
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    state: AppState,
    app: Router,
    admin_token: String,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(dir.path()).await.unwrap();
    let state = AppState::new(
        store,
        dir.path().to_path_buf(),
        "http://127.0.0.1:1".into(),
        60,
    );
    std::fs::create_dir_all(state.repos_dir()).unwrap();
    let hash = auth::hash_password("s3cret-pass").unwrap();
    let admin = state.store.create_user("admin", &hash, true).await.unwrap();
    let admin_token = token_for(&state, admin.id, "read,write,admin").await;
    let app = router(state.clone());
    Fixture {
        _dir: dir,
        state,
        app,
        admin_token,
    }
}

/// Gives a user a new personal access token with `scopes`; returns the secret.
async fn token_for(state: &AppState, user_id: i64, scopes: &str) -> String {
    let token = auth::random_token("lgp_");
    state
        .store
        .create_access_token(user_id, "t", &auth::token_hash(&token), scopes)
        .await
        .unwrap();
    token
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn get(uri: &str, token: Option<&str>) -> Request<Body> {
    let mut builder = Request::get(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(Body::empty()).unwrap()
}

fn post_json(uri: &str, token: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn only_the_health_endpoint_is_open() {
    let f = fixture().await;
    assert_eq!(
        send(&f.app, get("/healthz", None)).await.status,
        StatusCode::OK
    );
    for uri in [
        "/api/v1/projects",
        "/api/v1/runs",
        "/api/v1/openapi.json",
        "/api/v1/runs/1/logs",
    ] {
        let reply = send(&f.app, get(uri, None)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(reply.json()["error"]["code"], "unauthorized");
    }
    let page = send(&f.app, get("/runs/1", None)).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.headers[header::LOCATION], "/login?next=%2Fruns%2F1");
    let wrong = send(&f.app, get("/api/v1/projects", Some("lgp_nope"))).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_openapi_document_lists_the_api() {
    let f = fixture().await;
    let reply = send(&f.app, get("/api/v1/openapi.json", Some(&f.admin_token))).await;
    assert_eq!(reply.status, StatusCode::OK);
    let doc = reply.json();
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/api/v1/runs"]["get"].is_object());
    assert!(doc["paths"]["/api/v1/agent/lease"]["post"].is_object());
    assert!(doc["paths"]["/api/v1/tasks"]["post"].is_object());
    assert!(doc["paths"]["/api/v1/runs/{id}/approvals"]["post"].is_object());
    assert!(
        doc["paths"]["/api/v1/projects/{project}/environments/{environment}/checks/approval"]["put"]
            .is_object()
    );
    assert!(
        doc["paths"]["/api/v1/projects/{project}/environments/{environment}"]["patch"].is_object()
    );
    assert!(doc["paths"]["/api/v1/pipelines/{id}/environments"]["get"].is_object());
    assert!(
        doc["paths"]["/api/v1/projects/{project}/environments/{environment}/checks/exclusive-lock"]
            ["put"]
            .is_object()
    );
    assert!(doc["paths"]["/api/v1/runs/{id}/locks"]["get"].is_object());
    for collection in [
        "variable-groups",
        "secure-files",
        "service-connections",
        "agent-pools",
    ] {
        for check in [
            "approval",
            "branch-control",
            "business-hours",
            "required-template",
            "rest-api",
            "exclusive-lock",
        ] {
            let path = format!("/api/v1/projects/{{project}}/{collection}/{{name}}/checks/{check}");
            assert!(doc["paths"][&path]["put"].is_object(), "{path}");
        }
    }
    assert!(doc["paths"]["/api/v1/projects/{project}/variable-groups/{name}"]["put"].is_object());
    assert!(
        doc["paths"]["/api/v1/projects/{project}/service-connections/{name}/usage"]["get"]
            .is_object()
    );
    assert!(
        doc["paths"]["/api/v1/projects/{project}/environments/{environment}/redeploy"]["post"]
            .is_object()
    );
    assert!(doc["paths"]["/api/v1/runs/{id}/stages/{stage}/start"]["post"].is_object());
    assert!(doc["paths"]["/api/v1/projects/{project}/secure-files/{name}"]["put"].is_object());
}

#[tokio::test]
async fn malformed_and_oversized_bodies_get_json_4xx_and_change_nothing() {
    let f = fixture().await;
    let bad = send(
        &f.app,
        post_json("/api/v1/projects", &f.admin_token, "{not json"),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["error"]["code"], "bad-request");
    let missing = send(&f.app, post_json("/api/v1/projects", &f.admin_token, "{}")).await;
    assert_eq!(missing.status.as_u16() / 100, 4);
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let too_big = send(&f.app, post_json("/api/v1/projects", &f.admin_token, &huge)).await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_big.json()["error"]["code"], "payload-too-large");
    let bad_name = send(
        &f.app,
        post_json("/api/v1/projects", &f.admin_token, r#"{"name": "../etc"}"#),
    )
    .await;
    assert_eq!(bad_name.status, StatusCode::BAD_REQUEST);
    assert!(f.state.store.list_projects().await.unwrap().is_empty());
    let bad_query = send(&f.app, get("/api/v1/runs?limit=lots", Some(&f.admin_token))).await;
    assert_eq!(bad_query.status, StatusCode::BAD_REQUEST);
    assert!(bad_query.json()["error"]["message"].is_string());
}

#[tokio::test]
async fn sessions_need_the_csrf_token_for_changes() {
    let f = fixture().await;
    let wrong = send(
        &f.app,
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("name=admin&password=wrong"))
            .unwrap(),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.headers.get(header::SET_COOKIE).is_none());

    let login = send(
        &f.app,
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("name=admin&password=s3cret-pass&next=%2Fp%2Fx"))
            .unwrap(),
    )
    .await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);
    assert_eq!(login.headers[header::LOCATION], "/p/x");
    let cookie = login.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(
        login.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("HttpOnly")
    );

    // Signing in again over an existing session works without a CSRF token.
    let again = send(
        &f.app,
        Request::post("/login")
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("name=admin&password=s3cret-pass"))
            .unwrap(),
    )
    .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);

    let home = send(
        &f.app,
        Request::get("/")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(home.status, StatusCode::OK);
    let csrf = home
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();

    let form = |body: String| {
        Request::post("/projects")
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap()
    };
    let forged = send(&f.app, form("name=evil".into())).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let forged_wrong = send(&f.app, form("name=evil&csrf=abc".into())).await;
    assert_eq!(forged_wrong.status, StatusCode::FORBIDDEN);
    assert!(
        f.state
            .store
            .project_by_name("evil")
            .await
            .unwrap()
            .is_none()
    );
    let ok = send(&f.app, form(format!("name=web&csrf={csrf}"))).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert!(
        f.state
            .store
            .project_by_name("web")
            .await
            .unwrap()
            .is_some()
    );

    // JSON calls from the page's scripts send the token in a header.
    let api = send(
        &f.app,
        Request::post("/api/v1/tokens")
            .header(header::COOKIE, &cookie)
            .header("x-csrf-token", &csrf)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"name": "ci", "scopes": ["read"]}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(api.status, StatusCode::CREATED);
    let token = api.json()["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("lgp_"));
    let listed = f.state.store.list_access_tokens(1).await.unwrap();
    assert!(
        listed.iter().all(|t| !t.scopes.contains(&token)),
        "the secret is not stored"
    );
}

#[tokio::test]
async fn token_scopes_and_project_roles_limit_what_a_user_can_do() {
    let f = fixture().await;
    let created = send(
        &f.app,
        post_json("/api/v1/projects", &f.admin_token, r#"{"name": "shop"}"#),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let read_only = send(
        &f.app,
        post_json(
            "/api/v1/tokens",
            &f.admin_token,
            r#"{"name": "ro", "scopes": ["read"]}"#,
        ),
    )
    .await;
    let read_only = read_only.json()["token"].as_str().unwrap().to_string();
    let denied = send(
        &f.app,
        post_json("/api/v1/projects", &read_only, r#"{"name": "other"}"#),
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.json()["error"]["code"], "forbidden");
    let unknown_scope = send(
        &f.app,
        post_json(
            "/api/v1/tokens",
            &read_only,
            r#"{"name": "x", "scopes": ["root"]}"#,
        ),
    )
    .await;
    assert_eq!(unknown_scope.status, StatusCode::BAD_REQUEST);
    let escalate = send(
        &f.app,
        post_json(
            "/api/v1/tokens",
            &read_only,
            r#"{"name": "x", "scopes": ["write"]}"#,
        ),
    )
    .await;
    assert_eq!(escalate.status, StatusCode::FORBIDDEN);

    // A second user sees nothing of the project until given a role, and readers cannot create.
    let bob = f.state.store.create_user("bob", "x", false).await.unwrap();
    let bob_token = token_for(&f.state, bob.id, "read,write").await;
    let hidden = send(
        &f.app,
        get("/api/v1/projects/shop/repositories", Some(&bob_token)),
    )
    .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert_eq!(
        send(&f.app, get("/api/v1/projects", Some(&bob_token)))
            .await
            .json(),
        serde_json::json!([])
    );
    let project = f
        .state
        .store
        .project_by_name("shop")
        .await
        .unwrap()
        .unwrap();
    f.state
        .store
        .set_project_role(project.id, bob.id, "reader")
        .await
        .unwrap();
    assert_eq!(
        send(
            &f.app,
            get("/api/v1/projects/shop/repositories", Some(&bob_token))
        )
        .await
        .status,
        StatusCode::OK
    );
    let create = send(
        &f.app,
        post_json(
            "/api/v1/projects/shop/repositories",
            &bob_token,
            r#"{"name": "app"}"#,
        ),
    )
    .await;
    assert_eq!(create.status, StatusCode::FORBIDDEN);

    let repo = send(
        &f.app,
        post_json(
            "/api/v1/projects/shop/repositories",
            &f.admin_token,
            r#"{"name": "app"}"#,
        ),
    )
    .await;
    assert_eq!(repo.status, StatusCode::CREATED);
    assert_eq!(
        repo.json()["cloneUrl"],
        "http://127.0.0.1:1/git/shop/app.git"
    );
    assert!(f.state.repos_dir().join("shop/app.git/HEAD").exists());
    let again = send(
        &f.app,
        post_json(
            "/api/v1/projects/shop/repositories",
            &f.admin_token,
            r#"{"name": "app"}"#,
        ),
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn agents_need_their_token_and_a_held_lease() {
    let f = fixture().await;
    let lease = post_json(
        "/api/v1/agent/lease",
        &f.admin_token,
        r#"{"waitSeconds": 0}"#,
    );
    assert_eq!(
        send(&f.app, lease).await.status,
        StatusCode::UNAUTHORIZED,
        "a user token is not an agent token"
    );
    let agent_token = auth::random_token("lga_");
    f.state
        .store
        .register_agent("a1", &auth::token_hash(&agent_token))
        .await
        .unwrap();
    let idle = send(
        &f.app,
        post_json("/api/v1/agent/lease", &agent_token, r#"{"waitSeconds": 0}"#),
    )
    .await;
    assert_eq!(idle.status, StatusCode::NO_CONTENT);
    let stranger = Request::post("/api/v1/agent/jobs/1/finish")
        .header(header::AUTHORIZATION, format!("Bearer {agent_token}"))
        .header("lockgate-lease", "lgl_forged")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"result": "succeeded"}"#))
        .unwrap();
    assert_eq!(send(&f.app, stranger).await.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn administrators_register_remote_agents_that_can_lease() {
    let f = fixture().await;
    let bob = f.state.store.create_user("bob", "x", false).await.unwrap();
    let bob_token = token_for(&f.state, bob.id, "read,write,admin").await;
    let denied = send(
        &f.app,
        post_json("/api/v1/agents", &bob_token, r#"{"name": "linux-1"}"#),
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let bad = send(
        &f.app,
        post_json("/api/v1/agents", &f.admin_token, r#"{"name": "a b"}"#),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let created = send(
        &f.app,
        post_json("/api/v1/agents", &f.admin_token, r#"{"name": "linux-1"}"#),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let token = created.json()["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("lga_"));
    let lease = send(
        &f.app,
        post_json("/api/v1/agent/lease", &token, r#"{"waitSeconds": 0}"#),
    )
    .await;
    assert_eq!(
        lease.status,
        StatusCode::NO_CONTENT,
        "the new agent is accepted: {}",
        lease.body
    );
}

fn put_json(uri: &str, token: &str, body: &str) -> Request<Body> {
    Request::put(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn administrators_create_users_and_project_administrators_grant_roles() {
    let f = fixture().await;
    let short = send(
        &f.app,
        post_json(
            "/api/v1/users",
            &f.admin_token,
            r#"{"name": "cy", "password": "short"}"#,
        ),
    )
    .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    let created = send(
        &f.app,
        post_json(
            "/api/v1/users",
            &f.admin_token,
            r#"{"name": "cy", "password": "long-enough"}"#,
        ),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert!(
        !created.body.contains("long-enough") && !created.body.contains("argon2"),
        "no secrets in replies"
    );
    let user = f.state.store.user_by_name("cy").await.unwrap().unwrap();
    assert!(auth::verify_password("long-enough", &user.password_hash));
    let cy_token = token_for(&f.state, user.id, "read,write,admin").await;
    let not_admin = send(
        &f.app,
        post_json(
            "/api/v1/users",
            &cy_token,
            r#"{"name": "dee", "password": "long-enough"}"#,
        ),
    )
    .await;
    assert_eq!(not_admin.status, StatusCode::FORBIDDEN);

    send(
        &f.app,
        post_json("/api/v1/projects", &f.admin_token, r#"{"name": "shop"}"#),
    )
    .await;
    let bad_role = send(
        &f.app,
        put_json(
            "/api/v1/projects/shop/members/cy",
            &f.admin_token,
            r#"{"role": "owner"}"#,
        ),
    )
    .await;
    assert_eq!(bad_role.status, StatusCode::BAD_REQUEST);
    let granted = send(
        &f.app,
        put_json(
            "/api/v1/projects/shop/members/cy",
            &f.admin_token,
            r#"{"role": "contributor"}"#,
        ),
    )
    .await;
    assert_eq!(granted.status, StatusCode::OK, "{}", granted.body);
    assert_eq!(
        send(&f.app, get("/api/v1/projects", Some(&cy_token)))
            .await
            .json()[0]["name"],
        "shop"
    );
    let self_promote = send(
        &f.app,
        put_json(
            "/api/v1/projects/shop/members/cy",
            &cy_token,
            r#"{"role": "administrator"}"#,
        ),
    )
    .await;
    assert_eq!(
        self_promote.status,
        StatusCode::FORBIDDEN,
        "contributors cannot grant roles"
    );
    let nobody = send(
        &f.app,
        put_json(
            "/api/v1/projects/shop/members/zed",
            &f.admin_token,
            r#"{"role": "reader"}"#,
        ),
    )
    .await;
    assert_eq!(nobody.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn git_asks_for_credentials_and_hides_unknown_repositories() {
    let f = fixture().await;
    let anonymous = send(
        &f.app,
        get("/git/shop/app.git/info/refs?service=git-upload-pack", None),
    )
    .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(
        anonymous.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let missing = send(
        &f.app,
        get(
            "/git/shop/app.git/info/refs?service=git-upload-pack",
            Some(&f.admin_token),
        ),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let traversal = send(
        &f.app,
        get("/git/..%2F/x.git/info/refs", Some(&f.admin_token)),
    )
    .await;
    assert_eq!(traversal.status, StatusCode::NOT_FOUND);
}

/// Creates user `ada`, project `p`, repository `r`, pipeline `ci` and a queued manual run of it with
/// `jobs`, plus a registered agent `a1`; returns the run and the agent's token.
async fn run_with_jobs(
    state: &AppState,
    jobs: &[lockgate_store::NewJob],
) -> (lockgate_store::Run, String) {
    let user = state.store.create_user("ada", "x", true).await.unwrap();
    let project = state.store.create_project("p", user.id).await.unwrap();
    let repo = state
        .store
        .create_repository(project.id, "r")
        .await
        .unwrap();
    let pipeline = state
        .store
        .create_pipeline(project.id, repo.id, "ci", "azure-pipelines.yml")
        .await
        .unwrap();
    let run = state
        .store
        .create_run(
            &lockgate_store::NewRun {
                pipeline_id: pipeline.id,
                name: "1".into(),
                status: "queued".into(),
                reason: "manual".into(),
                source_branch: "refs/heads/main".into(),
                source_commit: "abc".into(),
                requested_by: "ada".into(),
                yaml: String::new(),
                diagnostics: "[]".into(),
                parameters: "[]".into(),
                ..Default::default()
            },
            jobs,
        )
        .await
        .unwrap();
    let agent_token = auth::random_token("lga_");
    state
        .store
        .register_agent("a1", &auth::token_hash(&agent_token))
        .await
        .unwrap();
    (run, agent_token)
}

/// A job of stage `s` as the scheduler stores it.
fn stored_job(
    name: &str,
    depends_on: &str,
    status: &str,
    spec: serde_json::Value,
) -> lockgate_store::NewJob {
    lockgate_store::NewJob {
        stage_name: "s".into(),
        name: name.into(),
        display_name: name.into(),
        depends_on: depends_on.into(),
        spec: spec.to_string(),
        status: status.into(),
        environment: None,
        agent_os: None,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_job_whose_agent_stops_heartbeating_fails_and_its_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(dir.path()).await.unwrap();
    // Leases of one second, checked by the reaper every two seconds.
    let state = AppState::new(
        store,
        dir.path().to_path_buf(),
        "http://127.0.0.1:1".into(),
        1,
    );
    let (run, agent_token) = run_with_jobs(
        &state,
        &[stored_job(
            "j",
            "[]",
            "queued",
            serde_json::json!({"job": {}, "variables": [], "conditions": {"first": true}}),
        )],
    )
    .await;
    let app = router(state.clone());
    let lease = send(
        &app,
        post_json("/api/v1/agent/lease", &agent_token, r#"{"waitSeconds": 0}"#),
    )
    .await;
    assert_eq!(lease.status, StatusCode::OK, "{}", lease.body);
    assert_eq!(
        state.store.run_by_id(run.id).await.unwrap().unwrap().status,
        "running"
    );
    // The agent started a step before it went silent (a job without one is queued again).
    let lease = lease.json();
    let started = Request::post(format!(
        "/api/v1/agent/jobs/{}/events",
        lease["jobId"].as_i64().unwrap()
    ))
    .header(header::AUTHORIZATION, format!("Bearer {agent_token}"))
    .header("lockgate-lease", lease["leaseToken"].as_str().unwrap())
    .header(header::CONTENT_TYPE, "application/json")
    .body(Body::from(
        r#"{"events": [{"type": "stepStarted", "step": 1, "displayName": "s"}]}"#,
    ))
    .unwrap();
    assert!(send(&app, started).await.status.is_success());
    tokio::spawn(lockgate_server::runs::reap_expired_leases(state.clone()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let run = state.store.run_by_id(run.id).await.unwrap().unwrap();
        if run.status == "completed" {
            assert_eq!(run.result.as_deref(), Some("failed"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let log = lockgate_server::api::job_log_lines(
        &state,
        state.store.jobs_of_run(run.id).await.unwrap()[0].id,
    )
    .await
    .unwrap();
    assert!(
        log.iter().any(|line| line
            .text
            .contains("The agent `a1` stopped responding (no heartbeat for 1 s); the job failed.")),
        "{log:?}"
    );
}

#[tokio::test]
async fn a_job_whose_agent_goes_silent_before_its_first_step_is_queued_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(dir.path()).await.unwrap();
    let state = AppState::new(
        store,
        dir.path().to_path_buf(),
        "http://127.0.0.1:1".into(),
        1,
    );
    let (run, agent_token) = run_with_jobs(
        &state,
        &[stored_job(
            "j",
            "[]",
            "queued",
            serde_json::json!({"job": {}, "variables": [], "conditions": {"first": true}}),
        )],
    )
    .await;
    let app = router(state.clone());
    let lease = send(
        &app,
        post_json("/api/v1/agent/lease", &agent_token, r#"{"waitSeconds": 0}"#),
    )
    .await;
    assert_eq!(lease.status, StatusCode::OK, "{}", lease.body);
    tokio::spawn(lockgate_server::runs::reap_expired_leases(state.clone()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let job = loop {
        let job = state.store.jobs_of_run(run.id).await.unwrap().remove(0);
        if job.status == "queued" {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "{job:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(job.agent_name.is_none() && job.result.is_none());
    let log = lockgate_server::api::job_log_lines(&state, job.id)
        .await
        .unwrap();
    assert!(
        log.iter().any(|line| line
            .text
            .contains("before the job's first step; the job is queued for another agent")),
        "{log:?}"
    );
    // Another agent (here the same token, as a fresh process would) leases it again.
    let again = send(
        &app,
        post_json("/api/v1/agent/lease", &agent_token, r#"{"waitSeconds": 0}"#),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
}

#[tokio::test]
async fn output_variables_reach_later_conditions_and_a_rerun_after_a_cancel_runs_again() {
    let f = fixture().await;
    let state = &f.state;
    let conditions = serde_json::json!({"first": true, "stage": null, "stageDependsOn": []});
    let (run, agent_token) = run_with_jobs(
        state,
        &[
            stored_job(
                "A",
                "[]",
                "queued",
                serde_json::json!({"job": {"name": "A", "baseName": "A"}, "variables": [],
                    "conditions": conditions}),
            ),
            stored_job(
                "B",
                r#"["s/A"]"#,
                "pending",
                serde_json::json!({"job": {"name": "B", "baseName": "B",
                    "condition": "and(succeeded(), eq(dependencies.A.outputs['setvar.flag'], 'yes'))"},
                    "variables": [],
                    "conditions": {"first": false, "stage": null, "stageDependsOn": []}}),
            ),
        ],
    )
    .await;
    let lease = send(
        &f.app,
        post_json("/api/v1/agent/lease", &agent_token, r#"{"waitSeconds": 0}"#),
    )
    .await;
    assert_eq!(lease.status, StatusCode::OK, "{}", lease.body);
    let lease = lease.json();
    // The run is canceled while A runs; B's condition reads A's outputs, so B waits for A. A
    // finishes anyway and publishes an output variable; B's `succeeded()` is false after the cancel.
    lockgate_server::runs::cancel_run(state, run.id)
        .await
        .unwrap();
    let jobs = state.store.jobs_of_run(run.id).await.unwrap();
    assert_eq!(jobs[1].status, "pending", "{jobs:?}");
    let finish = Request::post(format!(
        "/api/v1/agent/jobs/{}/finish",
        lease["jobId"].as_i64().unwrap()
    ))
    .header(header::AUTHORIZATION, format!("Bearer {agent_token}"))
    .header(
        lockgate_protocol::agent::LEASE_HEADER,
        lease["leaseToken"].as_str().unwrap(),
    )
    .header(header::CONTENT_TYPE, "application/json")
    .body(Body::from(
        r#"{"result": "succeeded", "outputs": {"setvar.flag": "yes"}}"#,
    ))
    .unwrap();
    let finished = send(&f.app, finish).await;
    assert_eq!(finished.status, StatusCode::NO_CONTENT, "{}", finished.body);
    let jobs = state.store.jobs_of_run(run.id).await.unwrap();
    assert_eq!(jobs[0].outputs, r#"{"setvar.flag":"yes"}"#);
    assert_eq!(jobs[1].result.as_deref(), Some("skipped"));
    let canceled = state.store.run_by_id(run.id).await.unwrap().unwrap();
    assert_eq!(canceled.result.as_deref(), Some("canceled"));

    // Running the canceled job again evaluates its condition against A's stored outputs.
    lockgate_server::runs::rerun_failed_jobs(state, &canceled)
        .await
        .unwrap();
    let jobs = state.store.jobs_of_run(run.id).await.unwrap();
    assert_eq!(
        (jobs[1].status.as_str(), jobs[1].attempt),
        ("queued", 2),
        "{jobs:?}"
    );
}

/// An agent API request with the agent token and a lease's token.
fn leased_request(
    path: String,
    agent_token: &str,
    lease: &serde_json::Value,
    body: &str,
) -> Request<Body> {
    Request::post(path)
        .header(header::AUTHORIZATION, format!("Bearer {agent_token}"))
        .header(
            lockgate_protocol::agent::LEASE_HEADER,
            lease["leaseToken"].as_str().unwrap(),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn after_a_cancel_jobs_whose_condition_holds_for_a_canceled_run_still_run() {
    let f = fixture().await;
    let state = &f.state;
    let first = serde_json::json!({"first": true, "stage": null, "stageDependsOn": []});
    let after_a = serde_json::json!({"first": false, "stage": null, "stageDependsOn": []});
    let spec = |name: &str, condition: Option<&str>, conditions: &serde_json::Value| {
        serde_json::json!({"job": {"name": name, "baseName": name, "condition": condition},
            "variables": [], "conditions": conditions})
    };
    let (run, agent_token) = run_with_jobs(
        state,
        &[
            stored_job("A", "[]", "queued", spec("A", None, &first)),
            stored_job(
                "B",
                r#"["s/A"]"#,
                "pending",
                spec("B", Some("always()"), &after_a),
            ),
            stored_job("C", r#"["s/A"]"#, "pending", spec("C", None, &after_a)),
            stored_job(
                "D",
                r#"["s/A"]"#,
                "pending",
                spec("D", Some("canceled()"), &after_a),
            ),
            stored_job(
                "E",
                r#"["s/A"]"#,
                "pending",
                spec("E", Some("succeededOrFailed()"), &after_a),
            ),
            stored_job("Q", "[]", "queued", spec("Q", Some("always()"), &first)),
        ],
    )
    .await;
    let lease_a = send(
        &f.app,
        post_json("/api/v1/agent/lease", &agent_token, r#"{"waitSeconds": 0}"#),
    )
    .await;
    assert_eq!(lease_a.status, StatusCode::OK, "{}", lease_a.body);
    let lease_a = lease_a.json();
    let a_id = lease_a["jobId"].as_i64().unwrap();

    let canceled = send(
        &f.app,
        post_json(
            &format!("/api/v1/runs/{}/cancel", run.id),
            &f.admin_token,
            "{}",
        ),
    )
    .await;
    assert_eq!(canceled.status, StatusCode::OK, "{}", canceled.body);
    assert_eq!(canceled.json()["status"], "running", "{}", canceled.body);
    assert_eq!(canceled.json()["result"], "canceled", "{}", canceled.body);
    let state_of = |jobs: &[lockgate_store::Job], name: &str| {
        let job = jobs.iter().find(|j| j.name == name).unwrap();
        (job.status.clone(), job.result.clone())
    };
    let jobs = state.store.jobs_of_run(run.id).await.unwrap();
    let waiting = ("pending".to_string(), None);
    let skipped = ("completed".to_string(), Some("skipped".to_string()));
    assert_eq!(state_of(&jobs, "B"), waiting, "{jobs:?}");
    assert_eq!(state_of(&jobs, "C"), skipped, "{jobs:?}");
    assert_eq!(state_of(&jobs, "D"), waiting, "{jobs:?}");
    assert_eq!(state_of(&jobs, "E"), skipped, "{jobs:?}");
    // A job already waiting for an agent gets the cancel, like a running one.
    assert_eq!(
        state_of(&jobs, "Q"),
        ("completed".to_string(), Some("canceled".to_string())),
        "{jobs:?}"
    );

    // The running job hears of the cancel through its heartbeat and ends canceled.
    let heartbeat = send(
        &f.app,
        leased_request(
            format!("/api/v1/agent/jobs/{a_id}/heartbeat"),
            &agent_token,
            &lease_a,
            "{}",
        ),
    )
    .await;
    assert_eq!(heartbeat.status, StatusCode::OK, "{}", heartbeat.body);
    assert_eq!(
        heartbeat.json()["cancelRequested"],
        true,
        "{}",
        heartbeat.body
    );
    let finished = send(
        &f.app,
        leased_request(
            format!("/api/v1/agent/jobs/{a_id}/finish"),
            &agent_token,
            &lease_a,
            r#"{"result": "canceled", "outputs": {}}"#,
        ),
    )
    .await;
    assert_eq!(finished.status, StatusCode::NO_CONTENT, "{}", finished.body);
    let jobs = state.store.jobs_of_run(run.id).await.unwrap();
    assert_eq!(
        state_of(&jobs, "B"),
        ("queued".to_string(), None),
        "{jobs:?}"
    );
    assert_eq!(
        state_of(&jobs, "D"),
        ("queued".to_string(), None),
        "{jobs:?}"
    );
    let open = state.store.run_by_id(run.id).await.unwrap().unwrap();
    assert_eq!(
        (open.status.as_str(), open.result.as_deref()),
        ("running", Some("canceled"))
    );

    // B and D run to the end: their own heartbeats ask for no cancel.
    for _ in 0..2 {
        let lease = send(
            &f.app,
            post_json("/api/v1/agent/lease", &agent_token, r#"{"waitSeconds": 0}"#),
        )
        .await;
        assert_eq!(lease.status, StatusCode::OK, "{}", lease.body);
        let lease = lease.json();
        let id = lease["jobId"].as_i64().unwrap();
        let heartbeat = send(
            &f.app,
            leased_request(
                format!("/api/v1/agent/jobs/{id}/heartbeat"),
                &agent_token,
                &lease,
                "{}",
            ),
        )
        .await;
        assert_eq!(
            heartbeat.json()["cancelRequested"],
            false,
            "{}",
            heartbeat.body
        );
        let finished = send(
            &f.app,
            leased_request(
                format!("/api/v1/agent/jobs/{id}/finish"),
                &agent_token,
                &lease,
                r#"{"result": "succeeded", "outputs": {}}"#,
            ),
        )
        .await;
        assert_eq!(finished.status, StatusCode::NO_CONTENT, "{}", finished.body);
    }
    let jobs = state.store.jobs_of_run(run.id).await.unwrap();
    let succeeded = ("completed".to_string(), Some("succeeded".to_string()));
    assert_eq!(state_of(&jobs, "B"), succeeded, "{jobs:?}");
    assert_eq!(state_of(&jobs, "D"), succeeded, "{jobs:?}");
    let done = state.store.run_by_id(run.id).await.unwrap().unwrap();
    assert_eq!(
        (done.status.as_str(), done.result.as_deref()),
        ("completed", Some("canceled"))
    );

    // Re-running the jobs that did not succeed runs them without the cancel.
    lockgate_server::runs::rerun_failed_jobs(state, &done)
        .await
        .unwrap();
    let jobs = state.store.jobs_of_run(run.id).await.unwrap();
    assert_eq!(
        state_of(&jobs, "A"),
        ("queued".to_string(), None),
        "{jobs:?}"
    );
    assert_eq!(
        state_of(&jobs, "C"),
        ("pending".to_string(), None),
        "{jobs:?}"
    );
    let again = state.store.run_by_id(run.id).await.unwrap().unwrap();
    assert_eq!(
        (again.status.as_str(), again.result.as_deref()),
        ("running", None)
    );
}

/// Signs in as the fixture's admin; returns the session cookie and the page's CSRF token.
async fn sign_in(f: &Fixture) -> (String, String) {
    let login = send(
        &f.app,
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("name=admin&password=s3cret-pass"))
            .unwrap(),
    )
    .await;
    let cookie = login.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let home = send(
        &f.app,
        Request::get("/")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let csrf = home
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    (cookie, csrf)
}

fn form_post(uri: &str, cookie: &str, body: String) -> Request<Body> {
    Request::post(uri)
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn the_web_ui_creates_users_and_gives_them_roles() {
    let f = fixture().await;
    let (cookie, csrf) = sign_in(&f).await;
    let home = send(
        &f.app,
        Request::get("/")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(
        home.body.contains("Create user"),
        "administrators see the user form"
    );
    let created = send(
        &f.app,
        form_post(
            "/users",
            &cookie,
            format!("csrf={csrf}&name=eve&password=eve-password"),
        ),
    )
    .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    assert!(
        f.state
            .store
            .user_by_name("eve")
            .await
            .unwrap()
            .is_some_and(|u| !u.is_admin)
    );
    let short = send(
        &f.app,
        form_post(
            "/users",
            &cookie,
            format!("csrf={csrf}&name=mal&password=x"),
        ),
    )
    .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert!(
        short.body.contains("8 to 1024"),
        "errors are shown as a page: {}",
        short.body
    );

    send(
        &f.app,
        form_post("/projects", &cookie, format!("csrf={csrf}&name=web")),
    )
    .await;
    let granted = send(
        &f.app,
        form_post(
            "/p/web/members",
            &cookie,
            format!("csrf={csrf}&user=eve&role=reader"),
        ),
    )
    .await;
    assert_eq!(granted.status, StatusCode::SEE_OTHER, "{}", granted.body);
    let page = send(
        &f.app,
        Request::get("/p/web")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(
        page.body
            .contains("eve <span class=\"muted\">reader</span>"),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn pipeline_variables_are_edited_in_the_ui_and_api_and_secrets_never_come_back() {
    const SECRET: &str = "hunter2-deploy-key";
    let f = fixture().await;
    let (cookie, csrf) = sign_in(&f).await;
    for (uri, body) in [
        ("/api/v1/projects", r#"{"name": "shop"}"#),
        ("/api/v1/projects/shop/repositories", r#"{"name": "app"}"#),
        (
            "/api/v1/projects/shop/pipelines",
            r#"{"name": "ci", "repository": "app"}"#,
        ),
    ] {
        let reply = send(&f.app, post_json(uri, &f.admin_token, body)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{uri}: {}", reply.body);
    }
    let pipeline = f.state.store.list_pipelines(1).await.unwrap()[0].id;
    let variables = format!("/api/v1/pipelines/{pipeline}/variables");
    let form = format!("/pipelines/{pipeline}/variables");

    // The form's last row adds a variable; without the CSRF token nothing changes.
    let forged = send(
        &f.app,
        form_post(&form, &cookie, "v0.name=Greeting&v0.value=x".into()),
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let added = send(
        &f.app,
        form_post(
            &form,
            &cookie,
            format!("csrf={csrf}&v0.name=Greeting&v0.value=hello&v0.allowOverride=true"),
        ),
    )
    .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let added = send(
        &f.app,
        form_post(
            &form,
            &cookie,
            format!(
                "csrf={csrf}&v0.name=Greeting&v0.value=hello&v0.allowOverride=true\
                 &v1.name=DeployKey&v1.value={SECRET}&v1.secret=true&v1.allowOverride=true"
            ),
        ),
    )
    .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    // Saving the form again with the secret's field left empty keeps the secret.
    let kept = send(
        &f.app,
        form_post(
            &form,
            &cookie,
            format!(
                "csrf={csrf}&v0.name=Greeting&v0.value=hi&v0.allowOverride=true\
                 &v1.name=DeployKey&v1.value=&v1.secret=true&v1.allowOverride=true&v2.name="
            ),
        ),
    )
    .await;
    assert_eq!(kept.status, StatusCode::SEE_OTHER, "{}", kept.body);
    let stored = f.state.store.pipeline_variables(pipeline).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(
        (stored[0].name.as_str(), stored[0].value.as_str()),
        ("Greeting", "hi")
    );
    assert!(!stored[1].value.contains(SECRET), "stored encrypted");
    assert_eq!(f.state.secrets.open(&stored[1].value).unwrap(), SECRET);
    assert!(stored[1].secret && stored[1].allow_override);

    let listed = send(&f.app, get(&variables, Some(&f.admin_token))).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(!listed.body.contains(SECRET), "{}", listed.body);
    assert_eq!(
        listed.json()["variables"][1]["value"],
        serde_json::Value::Null
    );
    assert_eq!(listed.json()["variables"][1]["allowOverride"], true);

    // The page lists the settable variables in the run form; the secret is an empty password field.
    let page = send(
        &f.app,
        Request::get(format!("/pipelines/{pipeline}"))
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains(SECRET), "{}", page.body);
    assert!(
        page.body.contains("name=\"var.Greeting\" value=\"hi\""),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("type=\"password\" name=\"var.DeployKey\""),
        "{}",
        page.body
    );

    // A PUT replaces the list; a secret sent back as null keeps its value. Names are checked.
    let put = send(
        &f.app,
        put_json(
            &variables,
            &f.admin_token,
            r#"{"variables": [{"name": "DeployKey", "value": null, "secret": true}]}"#,
        ),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    let stored = f.state.store.pipeline_variables(pipeline).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(f.state.secrets.open(&stored[0].value).unwrap(), SECRET);
    assert!(!stored[0].allow_override);
    for (body, message) in [
        (r#"{"variables": [{"name": "secretThing"}]}"#, "reserved"),
        (r#"{"variables": [{"name": "a b"}]}"#, "not a variable name"),
        (
            r#"{"variables": [{"name": "X"}, {"name": "x"}]}"#,
            "defined twice",
        ),
    ] {
        let bad = send(&f.app, put_json(&variables, &f.admin_token, body)).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            bad.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(message),
            "{}",
            bad.body
        );
    }

    // Readers see the list but cannot change it.
    let bob = f.state.store.create_user("bob", "x", false).await.unwrap();
    let bob_token = token_for(&f.state, bob.id, "read,write").await;
    f.state
        .store
        .set_project_role(1, bob.id, "reader")
        .await
        .unwrap();
    let read = send(&f.app, get(&variables, Some(&bob_token))).await;
    assert_eq!(read.status, StatusCode::OK);
    let denied = send(
        &f.app,
        put_json(&variables, &bob_token, r#"{"variables": []}"#),
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(
        f.state
            .store
            .pipeline_variables(pipeline)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_read_only_token_cannot_cancel_or_rerun_through_the_ui_or_the_api() {
    let f = fixture().await;
    let spec = serde_json::json!({"job": {"name": "A", "baseName": "A"}, "variables": [],
        "conditions": {"first": true, "stage": null, "stageDependsOn": []}});
    let (run, _) = run_with_jobs(&f.state, &[stored_job("A", "[]", "queued", spec)]).await;
    let ada = f.state.store.user_by_name("ada").await.unwrap().unwrap();
    let read_only = token_for(&f.state, ada.id, "read").await;
    let bearer = format!("Bearer {read_only}");
    for path in ["cancel", "rerun", "rerun-failed"] {
        for prefix in ["/runs", "/api/v1/runs"] {
            let uri = format!("{prefix}/{}/{path}", run.id);
            let reply = send(
                &f.app,
                Request::post(&uri)
                    .header(header::AUTHORIZATION, &bearer)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{uri}: {}", reply.body);
        }
    }
    let after = f.state.store.run_by_id(run.id).await.unwrap().unwrap();
    assert_eq!(after.status, "queued");
    assert_eq!(after.result, None);
    assert_eq!(
        f.state
            .store
            .run_by_id(run.id + 1)
            .await
            .unwrap()
            .map(|r| r.id),
        None
    );
    // The same token still reads the run in both.
    let page = send(&f.app, get(&format!("/runs/{}", run.id), Some(&read_only))).await;
    assert_eq!(page.status, StatusCode::OK);
    let json = send(
        &f.app,
        get(&format!("/api/v1/runs/{}", run.id), Some(&read_only)),
    )
    .await;
    assert_eq!(json.status, StatusCode::OK);
}

#[tokio::test]
async fn an_authorization_header_does_not_switch_off_the_csrf_check_for_the_cookie() {
    let f = fixture().await;
    let (cookie, _csrf) = sign_in(&f).await;
    for authorization in ["Basic !!!", "Negotiate abc", "Bearer", "Basic Og=="] {
        let mut request = form_post("/projects", &cookie, "name=forged".into());
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, authorization.parse().unwrap());
        let reply = send(&f.app, request).await;
        // Refused: 403 from the CSRF check, or the login page for a token that is not one.
        assert!(
            reply.status == StatusCode::FORBIDDEN
                || reply
                    .headers
                    .get(header::LOCATION)
                    .is_some_and(|l| l.to_str().unwrap().starts_with("/login")),
            "{authorization}: {} {}",
            reply.status,
            reply.body
        );
        assert!(
            f.state
                .store
                .project_by_name("forged")
                .await
                .unwrap()
                .is_none(),
            "{authorization}"
        );
    }
    // A real token authenticates on its own, cookie or not.
    let mut request = post_json("/api/v1/projects", &f.admin_token, r#"{"name": "bytoken"}"#);
    request
        .headers_mut()
        .insert(header::COOKIE, cookie.parse().unwrap());
    assert_eq!(send(&f.app, request).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn login_follows_only_same_site_paths_and_never_fails_on_next() {
    let f = fixture().await;
    for (next, expected) in [
        ("%2Fruns%2F1", "/runs/1"),
        ("%2F%2Fevil.example", "/"),
        ("%2F%5Cevil.example", "/"),
        ("https%3A%2F%2Fevil.example", "/"),
        ("%2Fx%0D%0ASet-Cookie%3A+a%3D1", "/"),
        ("%2F%09%2Fevil.example", "/"),
    ] {
        let reply = send(
            &f.app,
            Request::post("/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!(
                    "name=admin&password=s3cret-pass&next={next}"
                )))
                .unwrap(),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::SEE_OTHER,
            "{next}: {}",
            reply.body
        );
        assert_eq!(reply.headers[header::LOCATION], expected, "{next}");
    }
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let f = fixture().await;
    for request in [
        get("/login", None),
        get("/healthz", None),
        get("/api/v1/projects", None),
        get("/no-such-page", None),
        get("/api/v1/projects", Some(&f.admin_token)),
    ] {
        let uri = request.uri().to_string();
        let reply = send(&f.app, request).await;
        let csp = reply.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{uri}: {csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(reply.headers[header::X_FRAME_OPTIONS], "DENY", "{uri}");
        assert_eq!(
            reply.headers[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff",
            "{uri}"
        );
        assert!(reply.headers.contains_key(header::REFERRER_POLICY), "{uri}");
    }
    // The UI has no inline script the policy would block.
    let (cookie, _) = sign_in(&f).await;
    let home = send(
        &f.app,
        Request::get("/")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(!home.body.contains("<script>") && !home.body.contains("javascript:"));
}

#[tokio::test]
async fn artifact_uploads_with_unsafe_names_or_paths_get_400_naming_the_field() {
    let f = fixture().await;
    let spec = serde_json::json!({"job": {"name": "A", "baseName": "A"}, "variables": [],
        "conditions": {"first": true, "stage": null, "stageDependsOn": []}});
    let (run, agent_token) =
        run_with_jobs(&f.state, &[stored_job("A", "[]", "queued", spec)]).await;
    let lease = send(
        &f.app,
        post_json("/api/v1/agent/lease", &agent_token, r#"{"waitSeconds": 0}"#),
    )
    .await
    .json();
    let job = lease["jobId"].as_i64().unwrap();
    let lease_token = lease["leaseToken"].as_str().unwrap().to_string();
    let upload = |name: &str, path: &str| {
        Request::put(format!(
            "/api/v1/agent/jobs/{job}/artifacts/{name}?path={path}"
        ))
        .header(header::AUTHORIZATION, format!("Bearer {agent_token}"))
        .header("lockgate-lease", &lease_token)
        .body(Body::from("data"))
        .unwrap()
    };
    for (name, path, field) in [
        ("drop", "a%00b", "`path`"),
        ("drop", "a%0D%0Ab", "`path`"),
        ("drop", "C%3A%2Fx", "`path`"),
        ("drop", "a%5Cb", "`path`"),
        ("drop", "..%2Fx", "`path`"),
        ("drop", "%2Fetc%2Fpasswd", "`path`"),
        ("a%00b", "ok.txt", "`name`"),
        ("a%0D%0Ab", "ok.txt", "`name`"),
        ("C%3A", "ok.txt", "`name`"),
        ("a%5Cb", "ok.txt", "`name`"),
        ("..", "ok.txt", "`name`"),
    ] {
        let reply = send(&f.app, upload(name, path)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{name} {path}: {}",
            reply.body
        );
        assert!(reply.body.contains(field), "{name} {path}: {}", reply.body);
    }
    assert!(
        f.state
            .store
            .artifact_files(run.id)
            .await
            .unwrap()
            .is_empty()
    );
    std::fs::create_dir_all(f.state.artifacts_dir()).unwrap();
    let ok = send(&f.app, upload("drop", "bin%2Fok.txt")).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
}

#[tokio::test]
async fn failed_sign_ins_lock_the_user_name_for_a_while() {
    let f = fixture().await;
    let login = |password: &str| {
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("name=admin&password={password}")))
            .unwrap()
    };
    // An unknown user gets the same answer as a wrong password.
    let unknown = send(
        &f.app,
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("name=nobody&password=x"))
            .unwrap(),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    for _ in 0..auth::LOGIN_FAILURES_PER_USER {
        let wrong = send(&f.app, login("wrong")).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        assert_eq!(wrong.body, unknown.body);
    }
    let locked = send(&f.app, login("s3cret-pass")).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(locked.headers.get(header::SET_COOKIE).is_none());
}

/// Runs git in `dir` with a fixed identity; panics with its stderr on failure.
fn git_in(dir: &std::path::Path, args: &[&str]) {
    let output = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_pipeline_page_compiles_once_per_commit() {
    let f = fixture().await;
    let (cookie, _) = sign_in(&f).await;
    for (uri, body) in [
        ("/api/v1/projects", r#"{"name": "shop"}"#),
        ("/api/v1/projects/shop/repositories", r#"{"name": "app"}"#),
        (
            "/api/v1/projects/shop/pipelines",
            r#"{"name": "ci", "repository": "app"}"#,
        ),
    ] {
        let reply = send(&f.app, post_json(uri, &f.admin_token, body)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{uri}: {}", reply.body);
    }
    let pipeline = f.state.store.list_pipelines(1).await.unwrap()[0].id;
    let bare = lockgate_server::git::repository_dir(&f.state, "shop", "app");
    let work = tempfile::tempdir().unwrap();
    git_in(work.path(), &["init", "-q", "-b", "main"]);
    let commit_pipeline = |greeting: &str| {
        std::fs::write(
            work.path().join("azure-pipelines.yml"),
            format!(
                "parameters:\n- name: greeting\n  type: string\n  default: {greeting}\nsteps:\n- script: echo ${{{{ parameters.greeting }}}}\n"
            ),
        )
        .unwrap();
        git_in(work.path(), &["add", "-A"]);
        git_in(work.path(), &["commit", "-q", "-m", greeting]);
        git_in(
            work.path(),
            &["push", "-q", bare.to_str().unwrap(), "HEAD:refs/heads/main"],
        );
    };
    let view = |branch: &str| {
        Request::get(format!("/pipelines/{pipeline}?branch={branch}"))
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap()
    };
    commit_pipeline("hello");
    let before = f.state.compile_cache.compiles();

    // The first view compiles; the second, at the same commit, is served from the cache.
    for _ in 0..2 {
        let page = send(&f.app, view("main")).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(
            page.body.contains(r#"name="param.greeting" value="hello""#),
            "{}",
            page.body
        );
        assert_eq!(f.state.compile_cache.compiles(), before + 1);
    }
    // Another branch at the same commit is the same compile.
    git_in(
        work.path(),
        &[
            "push",
            "-q",
            bare.to_str().unwrap(),
            "HEAD:refs/heads/other",
        ],
    );
    let page = send(&f.app, view("other")).await;
    assert!(page.body.contains(r#"value="hello""#), "{}", page.body);
    assert_eq!(f.state.compile_cache.compiles(), before + 1);

    // A new commit on the branch is compiled afresh, once.
    commit_pipeline("bonjour");
    for _ in 0..2 {
        let page = send(&f.app, view("main")).await;
        assert!(
            page.body
                .contains(r#"name="param.greeting" value="bonjour""#),
            "{}",
            page.body
        );
        assert_eq!(f.state.compile_cache.compiles(), before + 2);
    }
}

/// A zip holding a task.json and the given extra files.
fn task_zip(extra: &[&str]) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file("task.json", options).unwrap();
    zip.write_all(
        br#"{"id": "0b1c", "name": "Hello", "version": {"Major": 2, "Minor": 0, "Patch": 1},
            "execution": {"Node20_1": {"target": "index.js"}}}"#,
    )
    .unwrap();
    for name in extra {
        zip.start_file(*name, options).unwrap();
        zip.write_all(b"x").unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn post_zip(token: &str, body: Vec<u8>) -> Request<Body> {
    Request::post("/api/v1/tasks")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/zip")
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn administrators_upload_task_packages_and_bad_archives_are_refused() {
    let f = fixture().await;
    let bob = f.state.store.create_user("bob", "x", false).await.unwrap();
    let bob_token = token_for(&f.state, bob.id, "read,write,admin").await;
    let forbidden = send(&f.app, post_zip(&bob_token, task_zip(&["index.js"]))).await;
    assert_eq!(
        forbidden.status,
        StatusCode::FORBIDDEN,
        "{}",
        forbidden.body
    );

    let escaping = send(
        &f.app,
        post_zip(&f.admin_token, task_zip(&["index.js", "../evil.js"])),
    )
    .await;
    assert_eq!(
        escaping.status,
        StatusCode::BAD_REQUEST,
        "{}",
        escaping.body
    );
    assert!(
        escaping.body.contains("entry `../evil.js`"),
        "{}",
        escaping.body
    );
    let not_zip = send(&f.app, post_zip(&f.admin_token, b"not a zip".to_vec())).await;
    assert_eq!(not_zip.status, StatusCode::BAD_REQUEST, "{}", not_zip.body);

    let stored = send(&f.app, post_zip(&f.admin_token, task_zip(&["index.js"]))).await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.body);
    assert_eq!(stored.json()["version"], "2.0.1");
    let listed = send(&f.app, get("/api/v1/tasks", Some(&bob_token))).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json()[0]["name"], "Hello");
    assert!(f.state.data_dir.join("tasks/0b1c/2.0.1.zip").is_file());
    // Nothing else is left in the task folder (uploads and checks are cleaned up).
    let leftovers: Vec<_> = std::fs::read_dir(f.state.data_dir.join("tasks"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("0b1c")]);
}

#[tokio::test]
async fn a_secret_output_is_masked_in_what_a_later_jobs_agent_reports() {
    let f = fixture().await;
    let state = &f.state;
    let value = "upstream-Secret-4410";
    let spec = serde_json::json!({"job": {"name": "A", "baseName": "A"}, "variables": [],
        "conditions": {"first": true, "stage": null, "stageDependsOn": []}});
    let (run, agent_token) = run_with_jobs(
        state,
        &[
            stored_job("A", "[]", "queued", spec.clone()),
            stored_job("B", "[]", "queued", spec),
        ],
    )
    .await;
    let lease_of = || post_json("/api/v1/agent/lease", &agent_token, r#"{"waitSeconds": 0}"#);
    let first = send(&f.app, lease_of()).await.json();
    let first_id = first["jobId"].as_i64().unwrap();
    let finished = send(
        &f.app,
        leased_request(
            format!("/api/v1/agent/jobs/{first_id}/finish"),
            &agent_token,
            &first,
            &serde_json::json!({"result": "succeeded", "outputs": {"gen.key": value},
                "secretOutputs": ["gen.key"]})
            .to_string(),
        ),
    )
    .await;
    assert_eq!(finished.status, StatusCode::NO_CONTENT, "{}", finished.body);
    let second = send(&f.app, lease_of()).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    let second = second.json();
    let second_id = second["jobId"].as_i64().unwrap();
    assert_ne!(second_id, first_id);
    assert_eq!(second["secretValues"], serde_json::json!([value]));
    // Its agent does not mask: the server does.
    let sent = send(
        &f.app,
        leased_request(
            format!("/api/v1/agent/jobs/{second_id}/events"),
            &agent_token,
            &second,
            &serde_json::json!({"events": [
                {"type": "log", "step": 1, "lines": [format!("key={value}")]}]})
            .to_string(),
        ),
    )
    .await;
    assert_eq!(sent.status, StatusCode::NO_CONTENT, "{}", sent.body);
    let logs = send(
        &f.app,
        get(
            &format!("/api/v1/runs/{}/jobs/{second_id}/logs", run.id),
            Some(&f.admin_token),
        ),
    )
    .await;
    assert!(logs.body.contains("key=***"), "{}", logs.body);
    assert!(!logs.body.contains(value), "{}", logs.body);
}

#[tokio::test]
async fn what_an_agent_reports_unmasked_is_masked_with_the_jobs_secrets_before_it_is_stored() {
    let f = fixture().await;
    let state = &f.state;
    let secret = "hunter2-Value-77";
    let spec = serde_json::json!({
        "job": {"name": "A", "baseName": "A"}, "variables": [],
        "conditions": {"first": true, "stage": null, "stageDependsOn": []},
        "pipelineVariables": [{"name": "pw", "value": secret, "secret": true, "readonly": false}],
    });
    let mut job = stored_job("A", "[]", "queued", spec);
    job.spec = state.secrets.seal_spec_text(&job.spec);
    assert!(!job.spec.contains(secret), "stored sealed");
    let (run, agent_token) = run_with_jobs(state, &[job]).await;
    let lease = send(
        &f.app,
        post_json("/api/v1/agent/lease", &agent_token, r#"{"waitSeconds": 0}"#),
    )
    .await;
    assert_eq!(lease.status, StatusCode::OK, "{}", lease.body);
    let lease = lease.json();
    let job_id = lease["jobId"].as_i64().unwrap();
    // An agent that does not mask (older or modified) sends the raw value on every path.
    let events = serde_json::json!({"events": [
        {"type": "stepStarted", "step": 1, "displayName": format!("deploy {secret}")},
        {"type": "log", "step": 1, "lines": [format!("token={secret}"), "plain line"]},
        // How the build number a step sets and the issues it logs reach the server.
        {"type": "log", "step": null, "lines": [format!("Build number set to 1.0-{secret}")]},
        {"type": "log", "step": 1, "lines": [format!("##[error]deploy failed for {secret}"),
            format!("##[warning]retrying {secret}")]},
        {"type": "testResults", "cases": [{"suite": format!("s-{secret}"), "name": format!("case-{secret}"),
            "outcome": "failed", "durationMs": 1, "message": format!("got {secret}")}]},
        {"type": "stepFinished", "step": 1, "displayName": format!("deploy {secret}"), "result": "failed"},
    ]});
    let sent = send(
        &f.app,
        leased_request(
            format!("/api/v1/agent/jobs/{job_id}/events"),
            &agent_token,
            &lease,
            &events.to_string(),
        ),
    )
    .await;
    assert_eq!(sent.status, StatusCode::NO_CONTENT, "{}", sent.body);
    let steps = state.store.steps_of_run(run.id).await.unwrap();
    assert_eq!(steps[0].name, "deploy ***");
    let tests = state.store.test_results(run.id).await.unwrap();
    assert_eq!(
        (
            tests[0].suite.as_str(),
            tests[0].name.as_str(),
            tests[0].message.as_str()
        ),
        ("s-***", "case-***", "got ***")
    );
    let logs = send(
        &f.app,
        get(
            &format!("/api/v1/runs/{}/jobs/{job_id}/logs", run.id),
            Some(&f.admin_token),
        ),
    )
    .await;
    assert_eq!(logs.status, StatusCode::OK, "{}", logs.body);
    assert!(logs.body.contains("token=***"), "{}", logs.body);
    assert!(logs.body.contains("plain line"), "{}", logs.body);
    assert!(
        logs.body.contains("Build number set to 1.0-***"),
        "{}",
        logs.body
    );
    assert!(
        logs.body.contains("##[error]deploy failed for ***"),
        "{}",
        logs.body
    );
    assert!(
        logs.body.contains("##[warning]retrying ***"),
        "{}",
        logs.body
    );
    assert!(!logs.body.contains(secret), "{}", logs.body);
    // Nor does the run's name change, nor its detail show the secret.
    let detail = send(
        &f.app,
        get(&format!("/api/v1/runs/{}", run.id), Some(&f.admin_token)),
    )
    .await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.body);
    assert!(!detail.body.contains(secret), "{}", detail.body);
    // An artifact name or file path holding the secret is refused, naming the field, not the value.
    std::fs::create_dir_all(state.artifacts_dir()).unwrap();
    let lease_token = lease["leaseToken"].as_str().unwrap().to_string();
    for (name, path, field) in [
        (format!("drop-{secret}"), "ok.txt".to_string(), "`name`"),
        ("drop".to_string(), format!("bin%2F{secret}.txt"), "`path`"),
    ] {
        let reply = send(
            &f.app,
            Request::put(format!(
                "/api/v1/agent/jobs/{job_id}/artifacts/{name}?path={path}"
            ))
            .header(header::AUTHORIZATION, format!("Bearer {agent_token}"))
            .header("lockgate-lease", &lease_token)
            .body(Body::from("data"))
            .unwrap(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
        assert!(reply.body.contains(field), "{}", reply.body);
        assert!(!reply.body.contains(secret), "{}", reply.body);
    }
    assert!(state.store.artifact_files(run.id).await.unwrap().is_empty());
    // Outputs: `secretOutputs` must name outputs; an output holding the job's secret is stored
    // sealed even when an older agent does not list it as secret.
    let finish = |body: serde_json::Value| {
        leased_request(
            format!("/api/v1/agent/jobs/{job_id}/finish"),
            &agent_token,
            &lease,
            &body.to_string(),
        )
    };
    let refused = send(
        &f.app,
        finish(
            serde_json::json!({"result": "succeeded", "outputs": {"s.a": "1"},
            "secretOutputs": ["s.missing"]}),
        ),
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(refused.body.contains("`s.missing`"), "{}", refused.body);
    let finished = send(
        &f.app,
        finish(serde_json::json!({"result": "succeeded",
            "outputs": {"s.copy": format!("x{secret}"), "s.plain": "visible"}})),
    )
    .await;
    assert_eq!(finished.status, StatusCode::NO_CONTENT, "{}", finished.body);
    let row = state.store.job_by_id(job_id).await.unwrap().unwrap();
    assert!(!row.outputs.contains(secret), "{}", row.outputs);
    assert!(
        row.outputs.contains("\"s.plain\":\"visible\""),
        "{}",
        row.outputs
    );
    let opened = state.secrets.open_job(row);
    assert!(
        opened.outputs.contains(&format!("x{secret}")),
        "{}",
        opened.outputs
    );
}

fn patch_json(uri: &str, token: &str, body: &str) -> Request<Body> {
    Request::patch(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// Environments through the API: names are checked and unique ignoring case, the creator is the
/// first owner, only owners and project administrators change one, and bad input names its field.
#[tokio::test]
async fn environments_are_created_checked_and_changed_only_by_their_owners() {
    let f = fixture().await;
    let hash = auth::hash_password("s3cret-pass").unwrap();
    let carol = f
        .state
        .store
        .create_user("carol", &hash, false)
        .await
        .unwrap();
    let dave = f
        .state
        .store
        .create_user("dave", &hash, false)
        .await
        .unwrap();
    let carol_token = token_for(&f.state, carol.id, "read,write").await;
    let dave_token = token_for(&f.state, dave.id, "read,write").await;
    let project = f.state.store.create_project("p", carol.id).await.unwrap();
    f.state
        .store
        .set_project_role(project.id, dave.id, "contributor")
        .await
        .unwrap();
    let base = "/api/v1/projects/p/environments";

    let created = send(
        &f.app,
        post_json(
            base,
            &dave_token,
            r#"{"name": "QA east", "description": "testers"}"#,
        ),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.json()["owners"], serde_json::json!(["dave"]));
    let again = send(
        &f.app,
        post_json(base, &carol_token, r#"{"name": "qa EAST"}"#),
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    for (body, field) in [
        (r#"{"name": "a/b"}"#, "`name`"),
        (r#"{"name": ""}"#, "`name`"),
        (r#"{"name": "dev.vm1"}"#, "`name`"),
        (r#"{"nmae": "dev"}"#, "nmae"),
    ] {
        let reply = send(&f.app, post_json(base, &carol_token, body)).await;
        assert!(reply.status.is_client_error(), "{body}: {}", reply.body);
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains(field), "{body}: {message}");
    }

    let one = "/api/v1/projects/p/environments/qa%20east";
    let shown = send(&f.app, get(one, Some(&carol_token))).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    assert_eq!(shown.json()["name"], "QA east");
    assert_eq!(shown.json()["description"], "testers");
    assert!(shown.json()["latestDeployment"].is_null());

    // Carol administers the project; dave owns the environment; eve is a mere contributor.
    let eve = f
        .state
        .store
        .create_user("eve", &hash, false)
        .await
        .unwrap();
    let eve_token = token_for(&f.state, eve.id, "read,write").await;
    f.state
        .store
        .set_project_role(project.id, eve.id, "contributor")
        .await
        .unwrap();
    let refused = send(
        &f.app,
        patch_json(one, &eve_token, r#"{"description": "mine"}"#),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let by_owner = send(
        &f.app,
        patch_json(one, &dave_token, r#"{"owners": ["dave", "eve"]}"#),
    )
    .await;
    assert_eq!(by_owner.status, StatusCode::OK, "{}", by_owner.body);
    assert_eq!(
        by_owner.json()["owners"],
        serde_json::json!(["dave", "eve"])
    );
    let by_eve = send(
        &f.app,
        patch_json(one, &eve_token, r#"{"description": "now mine"}"#),
    )
    .await;
    assert_eq!(by_eve.status, StatusCode::OK, "{}", by_eve.body);
    assert_eq!(by_eve.json()["description"], "now mine");
    for (body, field) in [
        (r#"{"owners": ["nobody"]}"#, "`owners`"),
        (r#"{"owners": []}"#, "`owners`"),
        (r#"{"owner": ["carol"]}"#, "owner"),
    ] {
        let reply = send(&f.app, patch_json(one, &carol_token, body)).await;
        assert!(reply.status.is_client_error(), "{body}: {}", reply.body);
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains(field), "{body}: {message}");
    }
    let ledger = send(
        &f.app,
        get(&format!("{one}/deployments?limit=0"), Some(&carol_token)),
    )
    .await;
    assert_eq!(ledger.status, StatusCode::BAD_REQUEST);
    assert!(ledger.body.contains("`limit`"), "{}", ledger.body);
    let empty = send(
        &f.app,
        get(&format!("{one}/deployments"), Some(&carol_token)),
    )
    .await;
    assert_eq!(empty.json(), serde_json::json!([]));
    let missing = send(&f.app, get(&format!("{base}/prod"), Some(&carol_token))).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(
        missing.body.contains("environment `prod`"),
        "{}",
        missing.body
    );
}

/// The environment pages: created from a form, listed with what runs now, the ledger with its
/// artifacts and redacted variables, and the change form refusing an unknown owner.
#[tokio::test]
async fn the_environment_pages_list_environments_and_show_the_ledger() {
    let f = fixture().await;
    let (cookie, csrf) = sign_in(&f).await;
    let page = |uri: &str| {
        Request::get(uri)
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap()
    };
    let store = &f.state.store;
    let admin = store.user_by_name("admin").await.unwrap().unwrap();
    let project = store.create_project("p", admin.id).await.unwrap();
    let created = send(
        &f.app,
        form_post(
            "/p/p/environments",
            &cookie,
            format!("csrf={csrf}&name=QA+east&description=testers"),
        ),
    )
    .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    assert_eq!(
        created.headers[header::LOCATION],
        "/p/p/environments/QA%20east"
    );
    let bad = send(
        &f.app,
        form_post(
            "/p/p/environments",
            &cookie,
            format!("csrf={csrf}&name=a%2Fb"),
        ),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("`name`"), "{}", bad.body);

    // A deployment of a run, as the lease records it.
    let repo = store.create_repository(project.id, "app").await.unwrap();
    let pipeline = store
        .create_pipeline(project.id, repo.id, "ci", "azure-pipelines.yml")
        .await
        .unwrap();
    let run = store
        .create_run(
            &lockgate_store::NewRun {
                pipeline_id: pipeline.id,
                name: "20261207.1".into(),
                status: "running".into(),
                reason: "push".into(),
                source_branch: "refs/heads/main".into(),
                source_commit: "0123456789abcdef".into(),
                requested_by: "admin".into(),
                diagnostics: "[]".into(),
                parameters: "{}".into(),
                ..Default::default()
            },
            &[lockgate_store::NewJob {
                stage_name: "Deploy".into(),
                name: "web".into(),
                display_name: "web".into(),
                depends_on: "[]".into(),
                spec: "{}".into(),
                status: "queued".into(),
                environment: Some("QA east".into()),
                agent_os: None,
                ..Default::default()
            }],
        )
        .await
        .unwrap();
    let job = &store.jobs_of_run(run.id).await.unwrap()[0];
    let qa = store
        .environment_by_name(project.id, "qa east")
        .await
        .unwrap()
        .unwrap();
    store
        .start_deployment(&lockgate_store::NewDeployment {
            environment_id: qa.id,
            run_id: run.id,
            job_id: job.id,
            attempt: 1,
            pipeline_id: pipeline.id,
            stage_name: "Deploy".into(),
            job_name: "web".into(),
            resource_name: None,
            source_commit: run.source_commit.clone(),
            source_branch: run.source_branch.clone(),
            artifacts: r#"[{"name":"drop","digest":"abcdef0123456789","files":2,"size":10}]"#
                .into(),
            variables: r#"{"region":"eu","token":"***"}"#.into(),
            requested_by: "admin".into(),
        })
        .await
        .unwrap();
    store
        .set_job_status(job.id, "completed", Some("succeeded"))
        .await
        .unwrap();

    let list = send(&f.app, page("/p/p/environments")).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert!(
        list.body.contains("QA east") && list.body.contains("testers"),
        "{}",
        list.body
    );
    assert!(
        list.body.contains("01234567"),
        "what runs now: {}",
        list.body
    );
    let shown = send(&f.app, page("/p/p/environments/qa%20east")).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    for needle in [
        "Owners: admin",
        "succeeded",
        "drop",
        "abcdef012345",
        "region",
        "***",
        "Deploy / web",
    ] {
        assert!(shown.body.contains(needle), "{needle}: {}", shown.body);
    }
    let refused = send(
        &f.app,
        form_post(
            "/p/p/environments/QA%20east",
            &cookie,
            format!("csrf={csrf}&description=x&owners=admin%2C+nobody"),
        ),
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        refused.body.contains("no user `nobody`"),
        "{}",
        refused.body
    );
    let changed = send(
        &f.app,
        form_post(
            "/p/p/environments/QA%20east",
            &cookie,
            format!("csrf={csrf}&description=the+QA+team&owners=admin"),
        ),
    )
    .await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.body);
    let shown = send(&f.app, page("/p/p/environments/QA%20east")).await;
    assert!(shown.body.contains("the QA team"), "{}", shown.body);
    let pipeline_page = send(&f.app, page(&format!("/pipelines/{}", pipeline.id))).await;
    assert!(
        pipeline_page.body.contains("What is where"),
        "{}",
        pipeline_page.body
    );
    assert!(
        pipeline_page.body.contains("up to date"),
        "{}",
        pipeline_page.body
    );
}
