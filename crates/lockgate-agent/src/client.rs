//! A blocking HTTP client for a Lockgate server: the agent protocol calls and plain JSON requests to
//! the REST API (used by the `lockgate` CLI). Errors from the server arrive as `ErrorBody` JSON.

use std::time::Duration;

use lockgate_protocol::agent::{
    AGENT_API, EventBatch, FinishJob, HeartbeatReply, JobEvent, JobLease, LEASE_HEADER,
    LeaseRequest,
};
use lockgate_protocol::api::ErrorBody;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a request to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the server at {url}: {message}")]
    Transport { url: String, message: String },
    #[error("the server answered {status}: {message}")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the server sent an unexpected reply to {url}: {message}")]
    Decode { url: String, message: String },
}

impl ClientError {
    /// The HTTP status of a server error, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Server { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A connection to one server, authenticated with one bearer token (a user's or an agent's).
#[derive(Clone)]
pub struct ServerClient {
    base_url: String,
    token: String,
    http: ureq::Agent,
}

impl std::fmt::Debug for ServerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl ServerClient {
    pub fn new(base_url: &str, token: &str) -> ServerClient {
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .new_agent();
        ServerClient {
            base_url: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// Turns a response into its body text, or into a [`ClientError::Server`] for 4xx/5xx.
    fn read(
        url: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, String), ClientError> {
        let mut response = response.map_err(|e| ClientError::Transport {
            url: url.to_string(),
            message: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| ClientError::Transport {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        if status >= 400 {
            let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
                Ok(body) => (body.error.code, body.error.message),
                Err(_) => ("http".to_string(), text.trim().chars().take(300).collect()),
            };
            return Err(ClientError::Server {
                status,
                code,
                message,
            });
        }
        Ok((status, text))
    }

    fn decode<T: DeserializeOwned>(url: &str, text: &str) -> Result<T, ClientError> {
        serde_json::from_str(text).map_err(|e| ClientError::Decode {
            url: url.to_string(),
            message: e.to_string(),
        })
    }

    /// `GET path` and decode the JSON reply.
    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.url(path);
        let (_, text) = Self::read(
            &url,
            self.http
                .get(&url)
                .header("Authorization", self.auth())
                .call(),
        )?;
        Self::decode(&url, &text)
    }

    /// `DELETE path`; the reply's body is ignored.
    pub fn delete(&self, path: &str) -> Result<(), ClientError> {
        let url = self.url(path);
        Self::read(
            &url,
            self.http
                .delete(&url)
                .header("Authorization", self.auth())
                .call(),
        )?;
        Ok(())
    }

    /// `GET path` and return the reply as text.
    pub fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let url = self.url(path);
        Ok(Self::read(
            &url,
            self.http
                .get(&url)
                .header("Authorization", self.auth())
                .call(),
        )?
        .1)
    }

    /// `GET path` of a server-sent-events stream; calls `on_event(event, data)` for each event until it
    /// returns false or the stream ends.
    pub fn follow_events(
        &self,
        path: &str,
        mut on_event: impl FnMut(&str, &str) -> bool,
    ) -> Result<(), ClientError> {
        use std::io::BufRead;
        let url = self.url(path);
        let response = self
            .http
            .get(&url)
            .config()
            .timeout_global(None)
            .build()
            .header("Authorization", self.auth())
            .header("Accept", "text/event-stream")
            .call()
            .map_err(|e| ClientError::Transport {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let status = response.status().as_u16();
        if status >= 400 {
            return Err(ClientError::Server {
                status,
                code: "http".into(),
                message: format!("cannot follow {path}"),
            });
        }
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        let (mut event, mut data) = (String::new(), String::new());
        for line in reader.lines() {
            let line = line.map_err(|e| ClientError::Transport {
                url: url.clone(),
                message: e.to_string(),
            })?;
            if line.is_empty() {
                if (!event.is_empty() || !data.is_empty()) && !on_event(&event, &data) {
                    return Ok(());
                }
                event.clear();
                data.clear();
            } else if let Some(value) = line.strip_prefix("event:") {
                event = value.trim_start().to_string();
            } else if let Some(value) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        Ok(())
    }

    /// `GET path` and return the reply's bytes (downloads).
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        self.fetch_bytes(path, None)
    }

    /// Downloads bytes, with the lease header for job-scoped paths.
    fn fetch_bytes(&self, path: &str, lease: Option<&JobLease>) -> Result<Vec<u8>, ClientError> {
        let url = self.url(path);
        let mut request = self.http.get(&url).header("Authorization", self.auth());
        if let Some(lease) = lease {
            request = request.header(LEASE_HEADER, &lease.lease_token);
        }
        let mut response = request.call().map_err(|e| ClientError::Transport {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let status = response.status().as_u16();
        if status >= 400 {
            let message = response.body_mut().read_to_string().unwrap_or_default();
            return Err(ClientError::Server {
                status,
                code: "http".into(),
                message,
            });
        }
        response
            .body_mut()
            .with_config()
            .limit(1024 * 1024 * 1024)
            .read_to_vec()
            .map_err(|e| ClientError::Transport {
                url,
                message: e.to_string(),
            })
    }

    /// `POST path` with a JSON body and decode the JSON reply.
    pub fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        self.send_json(self.http.post(&url), &url, body)
    }

    /// `POST path` without a body; the reply's body is ignored.
    pub fn post_empty(&self, path: &str) -> Result<(), ClientError> {
        let url = self.url(path);
        Self::read(
            &url,
            self.http
                .post(&url)
                .header("Authorization", self.auth())
                .send_empty(),
        )
        .map(drop)
    }

    /// `POST path` with a raw body (an archive) and decode the JSON reply.
    pub fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        self.send_bytes(self.http.post(&url), &url, content_type, body)
    }

    /// `PUT path` with a raw body (a file) and decode the JSON reply.
    pub fn put_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        self.send_bytes(self.http.put(&url), &url, content_type, body)
    }

    fn send_bytes<T: DeserializeOwned>(
        &self,
        request: ureq::RequestBuilder<ureq::typestate::WithBody>,
        url: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<T, ClientError> {
        let request = request
            .header("Authorization", self.auth())
            .header("Content-Type", content_type);
        let (_, text) = Self::read(url, request.send(body))?;
        Self::decode(url, &text)
    }

    /// `PATCH path` with a JSON body and decode the JSON reply.
    pub fn patch_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        self.send_json(self.http.patch(&url), &url, body)
    }

    /// `PUT path` with a JSON body and decode the JSON reply.
    pub fn put_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        self.send_json(self.http.put(&url), &url, body)
    }

    /// Sends `body` as JSON with the caller's credentials and decodes the JSON reply.
    fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        request: ureq::RequestBuilder<ureq::typestate::WithBody>,
        url: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let (_, text) = Self::read(
            url,
            request.header("Authorization", self.auth()).send_json(body),
        )?;
        Self::decode(url, &text)
    }

    // ---- the agent protocol ----

    /// Asks for a job, waiting up to `wait_seconds`; `None` when none was queued in time.
    pub fn lease(&self, wait_seconds: u32) -> Result<Option<JobLease>, ClientError> {
        let url = self.url(&format!("{AGENT_API}/lease"));
        let (status, text) = Self::read(
            &url,
            self.http
                .post(&url)
                .header("Authorization", self.auth())
                .send_json(&LeaseRequest {
                    wait_seconds,
                    os: Some(lockgate_pipeline::plan::host_os().to_string()),
                }),
        )?;
        if status == 204 {
            return Ok(None);
        }
        Self::decode(&url, &text).map(Some)
    }

    /// Trades a one-time registration token for an agent token (`POST /api/v1/agent/register`,
    /// the registration token is the credential; this client's own token is not sent).
    pub fn register(
        &self,
        request: &lockgate_protocol::agent::RegisterAgent,
    ) -> Result<lockgate_protocol::agent::RegisteredAgent, ClientError> {
        let url = self.url(&format!("{AGENT_API}/register"));
        let (_, text) = Self::read(&url, self.http.post(&url).send_json(request))?;
        Self::decode(&url, &text)
    }

    /// Tells the server this agent's version and capabilities (`PUT /api/v1/agent/info`).
    pub fn announce(&self, info: &lockgate_protocol::agent::AgentInfo) -> Result<(), ClientError> {
        let url = self.url(&format!("{AGENT_API}/info"));
        Self::read(
            &url,
            self.http
                .put(&url)
                .header("Authorization", self.auth())
                .send_json(info),
        )
        .map(drop)
    }

    fn job_post<B: Serialize>(
        &self,
        lease: &JobLease,
        action: &str,
        body: &B,
    ) -> Result<String, ClientError> {
        let url = self.url(&format!("{AGENT_API}/jobs/{}/{action}", lease.job_id));
        let response = self
            .http
            .post(&url)
            .header("Authorization", self.auth())
            .header(LEASE_HEADER, &lease.lease_token)
            .send_json(body);
        Ok(Self::read(&url, response)?.1)
    }

    pub fn heartbeat(&self, lease: &JobLease) -> Result<HeartbeatReply, ClientError> {
        let url = format!("{AGENT_API}/jobs/{}/heartbeat", lease.job_id);
        let text = self.job_post(lease, "heartbeat", &serde_json::json!({}))?;
        Self::decode(&url, &text)
    }

    pub fn send_events(&self, lease: &JobLease, events: Vec<JobEvent>) -> Result<(), ClientError> {
        self.job_post(lease, "events", &EventBatch { events })
            .map(drop)
    }

    /// Reports the job's result and output variables (and which of them are secret); the lease ends.
    pub fn finish(
        &self,
        lease: &JobLease,
        result: &str,
        outputs: &std::collections::BTreeMap<String, String>,
        secret_outputs: &std::collections::BTreeSet<String>,
    ) -> Result<(), ClientError> {
        self.job_post(
            lease,
            "finish",
            &FinishJob {
                result: result.to_string(),
                outputs: outputs.clone(),
                secret_outputs: secret_outputs.clone(),
            },
        )
        .map(drop)
    }

    /// The artifact files other jobs of the run published so far.
    pub fn run_artifacts(
        &self,
        lease: &JobLease,
    ) -> Result<Vec<lockgate_protocol::api::ArtifactFile>, ClientError> {
        let url = self.url(&format!("{AGENT_API}/jobs/{}/artifact-files", lease.job_id));
        let response = self
            .http
            .get(&url)
            .header("Authorization", self.auth())
            .header(LEASE_HEADER, &lease.lease_token)
            .call();
        let (_, text) = Self::read(&url, response)?;
        Self::decode(&url, &text)
    }

    /// Downloads one artifact file (by its `download_url`) as bytes.
    pub fn download(&self, lease: &JobLease, path: &str) -> Result<Vec<u8>, ClientError> {
        self.fetch_bytes(path, Some(lease))
    }

    /// Uploads one file of an artifact.
    pub fn upload_artifact_file(
        &self,
        lease: &JobLease,
        artifact: &str,
        path: &str,
        content: &[u8],
    ) -> Result<(), ClientError> {
        let url = self.url(&format!(
            "{AGENT_API}/jobs/{}/artifacts/{}",
            lease.job_id,
            percent_encode(artifact)
        ));
        let response = self
            .http
            .put(&url)
            .query("path", path)
            .header("Authorization", self.auth())
            .header(LEASE_HEADER, &lease.lease_token)
            .send(content);
        Self::read(&url, response).map(drop)
    }
}

/// Percent-encodes a path segment (everything but unreserved characters).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
