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
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// The markers that keep a push from triggering CI, in the message of any of its commits
/// (Microsoft's "Build Azure Repos Git repositories", "Skipping CI for individual pushes").
const SKIP_CI_MARKERS: [&str; 11] = [
    "[skip ci]",
    "[ci skip]",
    "skip-checks: true",
    "skip-checks:true",
    "[skip azurepipelines]",
    "[azurepipelines skip]",
    "[skip azpipelines]",
    "[azpipelines skip]",
    "[skip azp]",
    "[azp skip]",
    "***no_ci***",
];

/// Whether one of the commits a ref update brings says to skip CI (a new ref: its tip commit).
pub async fn skips_ci(dir: &Path, update: &RefUpdate) -> bool {
    let range = match &update.old {
        Some(old) => format!("{old}..{}", update.new),
        None => update.new.clone(),
    };
    let mut args = vec!["log", "--format=%B%x00", &range];
    if update.old.is_none() {
        args.insert(1, "-1");
    }
    match git(dir, &args).await {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
            SKIP_CI_MARKERS.iter().any(|marker| text.contains(marker))
        }
        Err(_) => false,
    }
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
    /// A running job's `System.AccessToken`: its run's project only.
    Job {
        project_id: i64,
    },
}

/// The caller behind a job access token (`lgj_...`), when the token is one and its job's attempt
/// is still running; a token of that shape that does not check out is refused.
async fn job_caller(state: &AppState, token: &str) -> ApiResult<Option<GitCaller>> {
    let Some((job_id, mac)) = crate::secrets::SecretBox::job_of_token(token) else {
        return Ok(None);
    };
    let job = state
        .store
        .job_by_id(job_id)
        .await?
        .filter(|job| job.status == "running")
        .filter(|job| {
            job.started_at.is_some_and(|started| {
                state
                    .secrets
                    .job_token_matches(mac, job.id, job.attempt, started)
            })
        })
        .ok_or_else(ApiError::unauthorized)?;
    let run = state
        .store
        .run_by_id(job.run_id)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    Ok(Some(GitCaller::Job {
        project_id: run.project_id,
    }))
}

/// The user (personal access token) or agent behind a token.
async fn user_or_agent(state: &AppState, token: &str) -> ApiResult<GitCaller> {
    Ok(
        match state
            .store
            .user_by_token_hash(&auth::token_hash(token))
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
                .agent_by_token_hash(&auth::token_hash(token))
                .await?
                .is_some() =>
            {
                GitCaller::Agent
            }
            None => return Err(ApiError::unauthorized()),
        },
    )
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
    body: Body,
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
    body: Body,
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
    let caller = match job_caller(&state, &token).await? {
        Some(caller) => caller,
        None => user_or_agent(&state, &token).await?,
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
        // A job's token reaches the repositories of its run's project, nothing else.
        GitCaller::Job { project_id } if *project_id == project.id => {
            format!("{} Build Service", project.name)
        }
        GitCaller::Job { .. } => return Err(ApiError::not_found("repository")),
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
        receiving,
    )
    .await?;

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

/// Largest CGI header block accepted from `git http-backend`.
const MAX_CGI_HEAD_BYTES: usize = 64 * 1024;

/// Runs `git http-backend` with the request body streamed into its stdin (counted against
/// `max_upload_bytes`: over the limit the child is killed and the answer is 413). Its reply is
/// streamed back, except for a push (`collect`), whose short report is read whole so that the refs
/// are compared after `git-receive-pack` has finished.
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
    body: Body,
    collect: bool,
) -> ApiResult<Response> {
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
        .env(
            "HTTP_CONTENT_ENCODING",
            header_text(header::CONTENT_ENCODING),
        )
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    // Without CONTENT_LENGTH (a chunked push) git http-backend reads its input to the end.
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
    {
        command.env("CONTENT_LENGTH", length.trim());
    }
    if let Some(protocol) = headers.get("git-protocol").and_then(|v| v.to_str().ok()) {
        command.env("GIT_PROTOCOL", protocol);
    }
    let mut child = command.spawn().map_err(ApiError::internal)?;
    let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(ApiError::internal("git http-backend has no pipes"));
    };
    let limit = state.limits.max_upload_bytes;
    let (over_limit, mut over_limit_seen) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        if let Err(crate::limits::CopyError::TooLarge) =
            crate::limits::copy_body(body, &mut stdin, limit, |_| {}).await
        {
            let _ = over_limit.send(());
        }
        let _ = stdin.shutdown().await;
    });
    let head = tokio::select! {
        Ok(()) = &mut over_limit_seen => {
            let _ = child.start_kill();
            return Err(crate::limits::payload_too_large(limit));
        }
        head = read_cgi_head(&mut stdout) => head,
    };
    let (head, rest) = head.map_err(ApiError::internal)?;
    if !collect {
        let tail = child_stdout_stream(rest, stdout, child);
        return parse_cgi_head(&head, Body::from_stream(tail)).map_err(ApiError::internal);
    }
    let mut reply = rest;
    stdout
        .read_to_end(&mut reply)
        .await
        .map_err(ApiError::internal)?;
    let _ = writer.await;
    let _ = child.wait().await;
    if over_limit_seen.try_recv().is_ok() {
        return Err(crate::limits::payload_too_large(limit));
    }
    parse_cgi_head(&head, Body::from(reply)).map_err(ApiError::internal)
}

/// Reads the CGI header block (up to the blank line); returns it and the body bytes read past it.
async fn read_cgi_head(
    stdout: &mut tokio::process::ChildStdout,
) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let mut raw = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        if let Some((at, gap)) = head_end(&raw) {
            let rest = raw.split_off(at + gap);
            raw.truncate(at);
            return Ok((raw, rest));
        }
        anyhow::ensure!(
            raw.len() <= MAX_CGI_HEAD_BYTES,
            "git http-backend sent headers over {MAX_CGI_HEAD_BYTES} bytes"
        );
        let read = stdout.read(&mut buffer).await?;
        if read == 0 {
            anyhow::bail!("git http-backend sent no headers");
        }
        raw.extend_from_slice(&buffer[..read]);
    }
}

/// Where the CGI header block ends: the position of the blank line and its length.
fn head_end(raw: &[u8]) -> Option<(usize, usize)> {
    raw.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|at| (at, 2)))
}

/// The rest of git's reply as a stream: the bytes already read, then stdout until it closes. The child
/// lives as long as the stream (dropping the response kills it).
fn child_stdout_stream(
    first: Vec<u8>,
    stdout: tokio::process::ChildStdout,
    child: tokio::process::Child,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let first = (!first.is_empty()).then(|| Ok(Bytes::from(first)));
    let state = (stdout, child);
    futures_util::stream::iter(first).chain(futures_util::stream::unfold(
        Some(state),
        |state| async move {
            let (mut stdout, mut child) = state?;
            let mut buffer = vec![0u8; 64 * 1024];
            match stdout.read(&mut buffer).await {
                Ok(0) => {
                    let _ = child.wait().await;
                    None
                }
                Ok(read) => {
                    buffer.truncate(read);
                    Some((Ok(Bytes::from(buffer)), Some((stdout, child))))
                }
                Err(error) => Some((Err(error), None)),
            }
        },
    ))
}

/// Splits a CGI reply into its headers (with `Status:`) and body.
#[cfg(test)]
fn parse_cgi_output(raw: &[u8]) -> anyhow::Result<Response> {
    let Some((at, gap)) = head_end(raw) else {
        anyhow::bail!("git http-backend sent no headers")
    };
    parse_cgi_head(&raw[..at], Body::from(raw[at + gap..].to_vec()))
}

/// A response from CGI headers (with `Status:`) and a body.
fn parse_cgi_head(head: &[u8], body: Body) -> anyhow::Result<Response> {
    let head = String::from_utf8_lossy(head);
    let mut response = Response::new(body);
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
