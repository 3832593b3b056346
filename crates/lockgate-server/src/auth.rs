//! Accounts and access: argon2 password hashes, random opaque tokens stored as blake3 hashes, the
//! session cookie with its CSRF token, personal access tokens with scopes, and project roles.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use lockgate_store::{User, now_millis};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

pub const SESSION_COOKIE: &str = "lockgate_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const CSRF_FIELD: &str = "csrf";
const SESSION_MILLIS: i64 = 7 * 24 * 3600 * 1000;

/// Hashes a password with argon2id and a random salt.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string())
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// An argon2id hash of a random password, computed once: signing in as an unknown user verifies
/// against it so that the answer takes as long as for a known user with a wrong password.
pub fn dummy_password_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&random_token("")).unwrap_or_default())
}

/// Failed sign-ins allowed per user name in [`LOGIN_WINDOW_MILLIS`] before it is locked.
pub const LOGIN_FAILURES_PER_USER: u32 = 5;
/// Failed sign-ins allowed per client address in [`LOGIN_WINDOW_MILLIS`].
pub const LOGIN_FAILURES_PER_ADDRESS: u32 = 20;
/// The window over which failed sign-ins are counted; a lock lasts until it ends.
pub const LOGIN_WINDOW_MILLIS: i64 = 15 * 60 * 1000;

/// Failed sign-ins counted per key (`user:NAME`, `ip:ADDRESS`), in memory: each key holds the
/// failures since its window started.
#[derive(Default)]
pub struct LoginThrottle {
    failures: std::sync::Mutex<std::collections::HashMap<String, (u32, i64)>>,
}

impl LoginThrottle {
    /// True while `key` has used up `allowed` failures in its window.
    pub fn locked(&self, key: &str, allowed: u32, now: i64) -> bool {
        let Ok(map) = self.failures.lock() else {
            return false;
        };
        map.get(key)
            .is_some_and(|(count, start)| now - start < LOGIN_WINDOW_MILLIS && *count >= allowed)
    }

    pub fn fail(&self, key: &str, now: i64) {
        if let Ok(mut map) = self.failures.lock() {
            // Bounded: expired windows are dropped when the map grows.
            if map.len() > 100_000 {
                map.retain(|_, (_, start)| now - *start < LOGIN_WINDOW_MILLIS);
            }
            let entry = map.entry(key.to_string()).or_insert((0, now));
            if now - entry.1 >= LOGIN_WINDOW_MILLIS {
                *entry = (0, now);
            }
            entry.0 += 1;
        }
    }

    pub fn clear(&self, key: &str) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(key);
        }
    }
}

/// The client's address when the server was started with connection info (`None` in router tests).
pub struct ClientAddress(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}

/// A random opaque secret: `prefix` then 64 hex digits (256 bits).
pub fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    // getrandom only fails when the OS has no entropy source at all; the server cannot work then.
    if getrandom::fill(&mut bytes).is_err() {
        panic!("the operating system gives no randomness");
    }
    let mut out = String::from(prefix);
    for byte in bytes {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// What is stored for a token: its blake3 hash in hex.
pub fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// The scopes a personal access token may carry.
pub const SCOPES: [&str; 3] = ["read", "write", "admin"];

/// How the caller proved who they are.
#[derive(Clone, Debug)]
pub enum Credential {
    /// The browser session cookie (all scopes; unsafe requests checked for CSRF by [`csrf_guard`]).
    Session { csrf_token: String },
    /// A personal access token with its scopes.
    Token { scopes: Vec<String> },
}

/// An authenticated user.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: User,
    pub credential: Credential,
}

impl Caller {
    pub fn has_scope(&self, scope: &str) -> bool {
        match &self.credential {
            Credential::Session { .. } => true,
            Credential::Token { scopes } => scopes.iter().any(|s| s == scope || s == "admin"),
        }
    }

    pub fn require_scope(&self, scope: &str) -> ApiResult<()> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "the token lacks the `{scope}` scope"
            )))
        }
    }

    pub fn csrf_token(&self) -> &str {
        match &self.credential {
            Credential::Session { csrf_token } => csrf_token,
            Credential::Token { .. } => "",
        }
    }
}

/// Project roles, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Reader,
    Contributor,
    Administrator,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "reader" => Some(Role::Reader),
            "contributor" => Some(Role::Contributor),
            "administrator" => Some(Role::Administrator),
            _ => None,
        }
    }
}

/// The one permission check of the API, the web UI and git: fails unless the caller has at least
/// `needed` in the project (server administrators have every role) and, for a change (contributor or
/// administrator), a credential with the `write` scope: a read-only token reads, whatever its user
/// may do.
pub async fn require_role(
    state: &AppState,
    caller: &Caller,
    project_id: i64,
    needed: Role,
) -> ApiResult<()> {
    if needed >= Role::Contributor {
        caller.require_scope("write")?;
    }
    if caller.user.is_admin {
        return Ok(());
    }
    let role = state
        .store
        .project_role(project_id, caller.user.id)
        .await?
        .as_deref()
        .and_then(Role::parse);
    match role {
        Some(role) if role >= needed => Ok(()),
        // Someone without any role does not learn that the project exists.
        None => Err(ApiError::not_found("project")),
        Some(_) => Err(ApiError::forbidden(
            format!("this needs the {needed:?} role in the project").to_lowercase(),
        )),
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The token sent as `Authorization: Bearer T` or as the password of `Authorization: Basic` (git).
pub fn presented_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    // Authentication schemes ignore case (RFC 9110, section 11.1).
    let (scheme, rest) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_string());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let encoded = rest;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_string())
}

/// Finds the caller from a token or the session cookie; `None` when neither is present.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> ApiResult<Option<Caller>> {
    if let Some(token) = presented_token(headers) {
        let Some((user, token)) = state.store.user_by_token_hash(&token_hash(&token)).await? else {
            return Err(ApiError::unauthorized());
        };
        let scopes = token
            .scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        return Ok(Some(Caller {
            user,
            credential: Credential::Token { scopes },
        }));
    }
    if let Some(session) = cookie(headers, SESSION_COOKIE)
        && let Some(session) = state
            .store
            .session(&token_hash(session), now_millis())
            .await?
    {
        return Ok(Some(Caller {
            user: session.user,
            credential: Credential::Session {
                csrf_token: session.csrf_token,
            },
        }));
    }
    Ok(None)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(state, &parts.headers)
            .await?
            .ok_or_else(ApiError::unauthorized)
    }
}

/// A signed-in user of the web UI; anyone else is sent to the login page.
pub struct PageCaller(pub Caller);

impl FromRequestParts<AppState> for PageCaller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(state, &parts.headers).await {
            Ok(Some(caller)) => Ok(PageCaller(caller)),
            Ok(None) | Err(_) => {
                let next = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                Err(Redirect::to(&format!(
                    "/login?next={}",
                    lockgate_agent::client::percent_encode(next)
                ))
                .into_response())
            }
        }
    }
}

/// Creates a session; returns the `Set-Cookie` value.
pub async fn start_session(state: &AppState, user_id: i64) -> ApiResult<String> {
    let secret = random_token("");
    let csrf = random_token("");
    state
        .store
        .create_session(
            &token_hash(&secret),
            user_id,
            &csrf,
            now_millis() + SESSION_MILLIS,
        )
        .await?;
    Ok(format!(
        "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
        SESSION_MILLIS / 1000
    ))
}

pub async fn end_session(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    if let Some(session) = cookie(headers, SESSION_COOKIE) {
        state.store.delete_session(&token_hash(session)).await?;
    }
    Ok(())
}

/// Middleware: an unsafe request (POST, PUT, PATCH, DELETE) authenticated by the session cookie must
/// carry the session's CSRF token, in the `x-csrf-token` header or as the `csrf` field of a form.
/// Requests authenticated by a token pass; an `Authorization` header that is not a valid token (which
/// a cross-site form cannot send anyway) does not switch the check off while the cookie is what
/// authenticates.
pub async fn csrf_guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let unsafe_method = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let has_cookie = cookie(request.headers(), SESSION_COOKIE).is_some();
    // Signing in again while a session cookie exists needs no token (the form has none to give).
    let is_login = request.uri().path() == "/login";
    if !unsafe_method || !has_cookie || is_login {
        return next.run(request).await;
    }
    let expected = match authenticate(&state, request.headers()).await {
        Ok(Some(Caller {
            credential: Credential::Session { csrf_token },
            ..
        })) => csrf_token,
        // A stale cookie: let the handler decide (login works, the rest answers 401).
        _ => return next.run(request).await,
    };
    if let Some(sent) = request
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        return if sent == expected {
            next.run(request).await
        } else {
            csrf_failure()
        };
    }
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return csrf_failure();
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, state.limits.max_body_bytes).await else {
        return ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "the form is too large",
        )
        .into_response();
    };
    let sent = form_urlencoded_field(&bytes, CSRF_FIELD);
    if sent.as_deref() != Some(expected.as_str()) {
        return csrf_failure();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn csrf_failure() -> Response {
    ApiError::forbidden("missing or wrong CSRF token; reload the page and try again")
        .into_response()
}

/// The value of one field of an `application/x-www-form-urlencoded` body.
fn form_urlencoded_field(body: &[u8], name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded_pairs(body);
    pairs
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

fn serde_urlencoded_pairs(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(key)?, percent_decode(value)?))
        })
        .collect()
}

/// Decodes `+` and `%XX` escapes; `None` on a malformed escape or invalid UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = random_token("lgp_");
        let b = random_token("lgp_");
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
        assert_ne!(token_hash(&a), a);
        assert_eq!(token_hash(&a), token_hash(&a));
    }

    #[test]
    fn basic_auth_password_is_the_token() {
        let mut headers = HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode("anyone:lgp_secret");
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {encoded}").parse().unwrap(),
        );
        assert_eq!(presented_token(&headers).as_deref(), Some("lgp_secret"));
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(presented_token(&headers).as_deref(), Some("abc"));
    }

    #[test]
    fn form_fields_are_decoded() {
        assert_eq!(
            form_urlencoded_field(b"a=1&csrf=x%2By+z", "csrf").as_deref(),
            Some("x+y z")
        );
        assert_eq!(form_urlencoded_field(b"a=%zz", "a"), None);
    }
}
