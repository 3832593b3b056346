//! Request limits and response headers: the security headers every response carries; the middleware
//! that answers 431 to an oversized request head and 413 to a declared body over its route's limit
//! before anything is read; and [`copy_body`], which streams a body to a writer while counting it
//! against a limit (git pushes and artifact files are never held in memory).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::AppState;
use crate::error::ApiError;

/// Routes whose bodies are streamed and bounded by `max_upload_bytes` rather than `max_body_bytes`.
pub fn is_upload_path(path: &str) -> bool {
    path.starts_with("/git/")
        || path == "/api/v1/tasks"
        || (path.starts_with("/api/v1/agent/jobs/") && path.contains("/artifacts/"))
        || (path.starts_with("/api/v1/projects/") && path.contains("/secure-files/"))
}

/// The size of a request head as sent: request line plus `name: value\r\n` for every header.
fn head_bytes(request: &Request) -> usize {
    let line = request.method().as_str().len() + request.uri().to_string().len() + 12;
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + line
}

pub fn payload_too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        format!("the request body is larger than this server's limit of {limit} bytes"),
    )
}

/// Middleware: 431 when the request head is over `max_header_bytes`, 413 when `Content-Length` is over
/// the route's body limit. Runs before authentication and reads no body. (hyper itself refuses a head
/// larger than its fixed read buffer of about 400 KiB, also with 431.)
pub async fn enforce(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limits = state.limits;
    if head_bytes(&request) > limits.max_header_bytes {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            format!(
                "the request headers are larger than this server's limit of {} bytes",
                limits.max_header_bytes
            ),
        )
        .into_response();
    }
    let limit = if is_upload_path(request.uri().path()) {
        limits.max_upload_bytes
    } else {
        limits.max_body_bytes as u64
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return payload_too_large(limit).into_response();
    }
    next.run(request).await
}

/// The Content-Security-Policy of every response: scripts, styles and connections (SSE) from this
/// server only, no inline script (the UI has none: run.js is served from /static), no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Middleware: security headers on every response (docs/security.md, "Web protections").
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, axum::http::HeaderValue::from_static(value));
    }
    response
}

/// Why [`copy_body`] stopped.
#[derive(Debug)]
pub enum CopyError {
    /// More than the limit arrived; nothing after the limit was read.
    TooLarge,
    /// The client's body broke off.
    Body(axum::Error),
    /// The writer failed.
    Write(std::io::Error),
}

impl CopyError {
    /// The answer to the client: 413 over `limit`, 400 for a broken body, 500 for a failed write.
    pub fn into_api_error(self, limit: u64) -> ApiError {
        match self {
            CopyError::TooLarge => payload_too_large(limit),
            CopyError::Body(error) => {
                ApiError::bad_request(format!("the upload broke off: {error}"))
            }
            CopyError::Write(error) => ApiError::internal(error),
        }
    }
}

/// Streams `body` into `writer`, calling `inspect` on each chunk, and fails with
/// [`CopyError::TooLarge`] as soon as more than `limit` bytes arrived. Returns the byte count.
pub async fn copy_body<W: AsyncWrite + Unpin>(
    body: Body,
    writer: &mut W,
    limit: u64,
    mut inspect: impl FnMut(&[u8]),
) -> Result<u64, CopyError> {
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(CopyError::Body)?;
        total += chunk.len() as u64;
        if total > limit {
            return Err(CopyError::TooLarge);
        }
        inspect(&chunk);
        writer.write_all(&chunk).await.map_err(CopyError::Write)?;
    }
    writer.flush().await.map_err(CopyError::Write)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_paths_are_git_and_artifact_files() {
        assert!(is_upload_path("/git/demo/app.git/git-receive-pack"));
        assert!(is_upload_path("/api/v1/agent/jobs/3/artifacts/drop"));
        assert!(is_upload_path("/api/v1/tasks"));
        assert!(!is_upload_path("/api/v1/runs/3/cancel"));
        assert!(!is_upload_path("/login"));
    }

    #[tokio::test]
    async fn copy_body_stops_at_the_limit() {
        let mut out = Vec::new();
        let copied = copy_body(Body::from(vec![1u8; 10]), &mut out, 10, |_| {})
            .await
            .unwrap();
        assert_eq!((copied, out.len()), (10, 10));
        let mut out = Vec::new();
        let over = copy_body(Body::from(vec![1u8; 11]), &mut out, 10, |_| {}).await;
        assert!(matches!(over, Err(CopyError::TooLarge)), "{over:?}");
        assert!(out.is_empty());
    }
}
