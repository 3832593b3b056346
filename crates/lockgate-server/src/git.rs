//! Git hosting over smart HTTP: each request runs `git http-backend` as a CGI program against the bare
//! repositories under `<data>/repos/<project>/<repo>.git`, authenticated by a personal access token (the
//! password of HTTP basic auth) or an agent token (read only). A push compares the refs before and after
//! `git-receive-pack` and hands the updated refs to the scheduler.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use tokio::io::AsyncWriteExt;

use crate::AppState;
use crate::auth::{self, Role};
use crate::error::{ApiError, ApiResult};

pub fn routes() -> Router<AppState> {
    Router::new().route("/git/{project}/{*rest}", any(git_http))
}

/// Names of projects and repositories: letters, digits, `-`, `_`, `.`; not starting with `.`; ≤ 100.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && !name.ends_with(".git")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub fn repository_dir(state: &AppState, project: &str, repo: &str) -> PathBuf {
    state.repos_dir().join(project).join(format!("{repo}.git"))
}

/// Creates an empty bare repository whose default branch is `main`.
pub async fn init_bare(dir: &Path) -> anyhow::Result<()> {
    if let Some(parent) = dir.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let dir_text = dir.to_string_lossy().into_owned();
    git(
        Path::new("."),
        &["init", "-q", "--bare", "-b", "main", &dir_text],
    )
    .await?;
    Ok(())
}

/// Runs git in `dir` and returns its stdout; fails with its stderr.
pub async fn git(dir: &Path, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let output = tokio::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .await?;
    if !output.status.success() {
        anyhow::bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output.stdout)
}

/// Every ref of a repository and the object it points at.
pub async fn refs(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let out = git(dir, &["for-each-ref", "--format=%(objectname) %(refname)"]).await?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|line| {
            line.split_once(' ')
                .map(|(sha, name)| (name.to_string(), sha.to_string()))
        })
        .collect())
}

/// A ref changed by a push: `old` is `None` for a new ref.
#[derive(Clone, Debug, PartialEq)]
pub struct RefUpdate {
    pub name: String,
    pub old: Option<String>,
    pub new: String,
}

/// Refs created or moved between two snapshots (deleted refs trigger nothing).
pub fn ref_updates(before: &[(String, String)], after: &[(String, String)]) -> Vec<RefUpdate> {
    after
        .iter()
        .filter_map(|(name, new)| {
            let old = before
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, sha)| sha.clone());
            (old.as_deref() != Some(new.as_str())).then(|| RefUpdate {
                name: name.clone(),
                old,
                new: new.clone(),
            })
        })
        .collect()
}

/// Files changed by a ref update (all files of the commit for a new ref).
pub async fn changed_paths(dir: &Path, update: &RefUpdate) -> Vec<String> {
    let out = match &update.old {
        Some(old) => git(dir, &["diff", "--name-only", old, &update.new]).await,
        None => git(dir, &["ls-tree", "-r", "--name-only", &update.new]).await,
    };
    out.map(|bytes| {
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

/// Who is talking to git: a user (with scopes) or an agent (read only).
enum GitCaller {
    User(auth::Caller),
    Agent,
}

fn challenge() -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "authentication required: use your access token as the password\n",
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Lockgate\""),
    );
    response
}

async fn git_http(
    State(state): State<AppState>,
    UrlPath((project_name, rest)): UrlPath<(String, String)>,
    RawQuery(query): RawQuery,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match serve_git(state, project_name, rest, query, method, headers, body).await {
        Ok(response) => response,
        Err(error) if error.status == StatusCode::UNAUTHORIZED => challenge(),
        Err(error) => (error.status, format!("{}\n", error.message)).into_response(),
    }
}

async fn serve_git(
    state: AppState,
    project_name: String,
    rest: String,
    query: Option<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let (repo_segment, service_path) = rest.split_once('/').unwrap_or((rest.as_str(), ""));
    let repo_name = repo_segment.strip_suffix(".git").unwrap_or(repo_segment);
    if !valid_name(&project_name) || !valid_name(repo_name) || service_path.contains("..") {
        return Err(ApiError::not_found("repository"));
    }
    let query = query.unwrap_or_default();
    let is_push = service_path == "git-receive-pack" || query.contains("service=git-receive-pack");

    let Some(token) = auth::presented_token(&headers) else {
        return Err(ApiError::unauthorized());
    };
    let caller = match state
        .store
        .user_by_token_hash(&auth::token_hash(&token))
        .await?
    {
        Some((user, token)) => GitCaller::User(auth::Caller {
            user,
            credential: auth::Credential::Token {
                scopes: token.scopes.split(',').map(str::to_string).collect(),
            },
        }),
        None if state
            .store
            .agent_by_token_hash(&auth::token_hash(&token))
            .await?
            .is_some() =>
        {
            GitCaller::Agent
        }
        None => return Err(ApiError::unauthorized()),
    };
    let project = state
        .store
        .project_by_name(&project_name)
        .await?
        .ok_or_else(|| ApiError::not_found("repository"))?;
    let repository = state
        .store
        .repository(project.id, repo_name)
        .await?
        .ok_or_else(|| ApiError::not_found("repository"))?;
    let user_name = match &caller {
        GitCaller::User(caller) => {
            auth::require_role(
                &state,
                caller,
                project.id,
                if is_push {
                    Role::Contributor
                } else {
                    Role::Reader
                },
            )
            .await?;
            caller.require_scope(if is_push { "write" } else { "read" })?;
            caller.user.name.clone()
        }
        GitCaller::Agent if is_push => return Err(ApiError::forbidden("agents cannot push")),
        GitCaller::Agent => "agent".to_string(),
    };
    let dir = repository_dir(&state, &project.name, &repository.name);
    let receiving = is_push && method == Method::POST;
    let before = if receiving {
        refs(&dir).await.map_err(ApiError::internal)?
    } else {
        Vec::new()
    };

    let response = run_cgi(
        &state,
        &project.name,
        repo_segment,
        service_path,
        &query,
        &method,
        &headers,
        &user_name,
        body,
    )
    .await
    .map_err(ApiError::internal)?;

    if receiving {
        let after = refs(&dir).await.map_err(ApiError::internal)?;
        let updates = ref_updates(&before, &after);
        if !updates.is_empty() {
            let state = state.clone();
            let pusher = user_name.clone();
            let repository_id = repository.id;
            tokio::spawn(async move {
                if let Err(error) =
                    crate::runs::on_push(&state, repository_id, &pusher, &updates).await
                {
                    eprintln!(
                        "lockgate-server: cannot queue runs for a push: {}",
                        error.message
                    );
                }
            });
        }
    }
    Ok(response)
}

#[allow(clippy::too_many_arguments)]
async fn run_cgi(
    state: &AppState,
    project: &str,
    repo_segment: &str,
    service_path: &str,
    query: &str,
    method: &Method,
    headers: &HeaderMap,
    user: &str,
    body: Bytes,
) -> anyhow::Result<Response> {
    let header_text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let repo_segment = if repo_segment.ends_with(".git") {
        repo_segment.to_string()
    } else {
        format!("{repo_segment}.git")
    };
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", state.repos_dir())
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env(
            "PATH_INFO",
            format!("/{project}/{repo_segment}/{service_path}"),
        )
        .env("REQUEST_METHOD", method.as_str())
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header_text(header::CONTENT_TYPE))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env(
            "HTTP_CONTENT_ENCODING",
            header_text(header::CONTENT_ENCODING),
        )
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(protocol) = headers.get("git-protocol").and_then(|v| v.to_str().ok()) {
        command.env("GIT_PROTOCOL", protocol);
    }
    let mut child = command.spawn()?;
    let mut stdin = child.stdin.take();
    let writer = tokio::spawn(async move {
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(&body).await;
            let _ = stdin.shutdown().await;
        }
    });
    let output = child.wait_with_output().await?;
    let _ = writer.await;
    parse_cgi_output(&output.stdout)
}

/// Splits a CGI reply into its headers (with `Status:`) and body.
fn parse_cgi_output(raw: &[u8]) -> anyhow::Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|at| (at, 2)));
    let Some((at, gap)) = split else {
        anyhow::bail!("git http-backend sent no headers")
    };
    let head = String::from_utf8_lossy(&raw[..at]);
    let mut response = Response::new(Body::from(raw[at + gap..].to_vec()));
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .unwrap_or(500);
            *response.status_mut() =
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_restricted() {
        assert!(valid_name("app-1.x_y"));
        for bad in ["", ".hidden", "a/b", "a b", "x.git", &"a".repeat(101)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn ref_updates_list_new_and_moved_refs() {
        let before = vec![
            ("refs/heads/main".to_string(), "a".to_string()),
            ("refs/heads/dev".into(), "b".into()),
        ];
        let after = vec![
            ("refs/heads/main".to_string(), "c".to_string()),
            ("refs/heads/dev".into(), "b".into()),
            ("refs/tags/v1".into(), "c".into()),
        ];
        let updates = ref_updates(&before, &after);
        assert_eq!(updates.len(), 2);
        assert_eq!(
            updates[0],
            RefUpdate {
                name: "refs/heads/main".into(),
                old: Some("a".into()),
                new: "c".into()
            }
        );
        assert_eq!(updates[1].old, None);
    }

    #[test]
    fn cgi_output_becomes_a_response() {
        let response =
            parse_cgi_output(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope")
                .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()["content-type"], "text/plain");
        let ok =
            parse_cgi_output(b"Content-Type: application/x-git-upload-pack-advertisement\n\nbody")
                .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert!(parse_cgi_output(b"no headers").is_err());
    }
}
