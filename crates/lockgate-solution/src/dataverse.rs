//! A Dataverse Web API client for solution ALM, authenticated as a service principal (OAuth2 client
//! credentials): WhoAmI, ExportSolution, StageSolution, ImportSolutionAsync, StageAndUpgradeAsync,
//! polling of async operations with the formatted import log on failure, PublishAllXml, online version.
//! Request and response shapes follow learn.microsoft.com/power-apps/developer/data-platform/webapi/reference.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::SolutionError;

/// The login authority used when none is configured.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// Most attempts for one request that is throttled (429) or briefly unavailable (503).
const MAX_ATTEMPTS: u32 = 5;
/// Longest single wait honoured from a `Retry-After` header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Largest response body read (exports arrive base64-encoded in JSON).
const MAX_BODY_BYTES: u64 = 1 << 30;

/// What a service connection holds.
#[derive(Debug, Clone)]
pub struct ServicePrincipal {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
}

/// Asks a long wait to stop (a canceled pipeline run); checked between polls and retries.
pub type CancelCheck = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

/// Where and how to connect.
#[derive(Clone)]
pub struct DataverseConfig {
    /// `https://<org>.crm.dynamics.com` (any trailing slash is ignored).
    pub environment_url: String,
    /// The token authority, `https://login.microsoftonline.com` unless overridden (tests, sovereign clouds).
    pub authority_url: String,
    pub principal: ServicePrincipal,
    /// Pause between polls of an async operation.
    pub poll_interval: Duration,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// When it returns true, waits (polling, throttling) end with a "canceled" error.
    pub cancel: Option<CancelCheck>,
}

impl std::fmt::Debug for DataverseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataverseConfig")
            .field("environment_url", &self.environment_url)
            .field("authority_url", &self.authority_url)
            .field("client_id", &self.principal.client_id)
            .finish_non_exhaustive()
    }
}

impl DataverseConfig {
    pub fn new(environment_url: &str, principal: ServicePrincipal) -> Self {
        DataverseConfig {
            environment_url: environment_url.trim_end_matches('/').to_string(),
            authority_url: DEFAULT_AUTHORITY.to_string(),
            principal,
            poll_interval: Duration::from_secs(10),
            request_timeout: Duration::from_secs(600),
            cancel: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct WhoAmI {
    pub user_id: String,
    pub business_unit_id: String,
    pub organization_id: String,
}

/// A solution as the target environment has it.
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineSolution {
    pub id: String,
    pub unique_name: String,
    pub version: String,
    pub managed: bool,
}

/// Parameters of an import (see ImportSolution in the Web API reference).
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    pub overwrite_unmanaged_customizations: bool,
    pub publish_workflows: bool,
    pub holding_solution: bool,
    pub stage_and_upgrade: bool,
    pub skip_product_update_dependencies: bool,
    pub component_parameters: Vec<Value>,
    pub max_wait: Duration,
}

/// What an import reports when it succeeds.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportOutcome {
    pub async_operation_id: String,
    pub import_job_id: String,
}

fn dataverse_error(message: String) -> SolutionError {
    SolutionError::Dataverse(message)
}

fn new_guid() -> String {
    let mut bytes = [0u8; 16];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mixed = seed ^ (u128::from(std::process::id()) << 64);
    bytes.copy_from_slice(&mix128(mixed).to_le_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A 128-bit mix with a process-wide counter, so that ids made in the same nanosecond still differ.
fn mix128(mut value: u128) -> u128 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    value ^= u128::from(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) << 32;
    value = (value ^ (value >> 67)).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    value ^ (value >> 61)
}

/// A connected client holding a bearer token.
pub struct DataverseClient {
    agent: ureq::Agent,
    config: DataverseConfig,
    token: String,
    /// Lines describing what the client did (requests, retries), for task logs.
    pub log: Vec<String>,
}

impl DataverseClient {
    /// Obtains a token for the environment with the client-credentials grant.
    pub fn connect(config: DataverseConfig) -> Result<Self, SolutionError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.request_timeout))
            .build()
            .into();
        let mut client = DataverseClient {
            agent,
            config,
            token: String::new(),
            log: Vec::new(),
        };
        client.token = client.fetch_token()?;
        Ok(client)
    }

    fn fetch_token(&mut self) -> Result<String, SolutionError> {
        let principal = self.config.principal.clone();
        if principal.tenant_id.is_empty()
            || principal.client_id.is_empty()
            || principal.client_secret.is_empty()
        {
            return Err(dataverse_error("service principal is incomplete: tenant id, client id and client secret are all required".into()));
        }
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            self.config.authority_url.trim_end_matches('/'),
            principal.tenant_id
        );
        let scope = format!("{}/.default", self.config.environment_url);
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", principal.client_id.as_str()),
            ("client_secret", principal.client_secret.as_str()),
            ("scope", scope.as_str()),
        ];
        let (status, _, body) =
            self.send_with_retries("POST", &url, |agent| agent.post(&url).send_form(form))?;
        let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if status != 200 {
            let reason = parsed["error_description"]
                .as_str()
                .or(parsed["error"].as_str())
                .unwrap_or(body.as_str());
            return Err(dataverse_error(format!(
                "authentication failed ({status}) at {url}: {reason}"
            )));
        }
        parsed["access_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| {
                dataverse_error(format!("token response from {url} has no access_token"))
            })
    }

    fn api_url(&self, path: &str) -> String {
        format!("{}/api/data/v9.2/{path}", self.config.environment_url)
    }

    /// Sends one request, retrying 429 and 503 after `Retry-After` (bounded attempts and wait).
    fn send_with_retries(
        &mut self,
        method: &str,
        url: &str,
        send: impl Fn(&ureq::Agent) -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, Option<String>, String), SolutionError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut response = send(&self.agent)
                .map_err(|err| dataverse_error(format!("{method} {url}: {err}")))?;
            let status = response.status().as_u16();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let retry_after = header("Retry-After");
            let location = header("OData-EntityId").or_else(|| header("Location"));
            let body = response
                .body_mut()
                .with_config()
                .limit(MAX_BODY_BYTES)
                .read_to_string()
                .map_err(|err| {
                    dataverse_error(format!("{method} {url}: reading the response: {err}"))
                })?;
            if (status == 429 || status == 503) && attempt < MAX_ATTEMPTS {
                let wait = retry_after
                    .and_then(|value| value.trim().parse::<u64>().ok())
                    .map_or(Duration::from_secs(1 << attempt), Duration::from_secs)
                    .min(MAX_RETRY_AFTER);
                self.log.push(format!("{method} {url}: {status}, retrying in {}s (attempt {attempt} of {MAX_ATTEMPTS})", wait.as_secs()));
                self.pause(wait)?;
                continue;
            }
            return Ok((status, location, body));
        }
    }

    /// Calls the Web API; non-2xx answers become errors carrying Dataverse's error message.
    fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, SolutionError> {
        let url = self.api_url(path);
        let token = format!("Bearer {}", self.token);
        let payload = body.map(Value::to_string);
        let (status, _, text) = self.send_with_retries(method, &url, |agent| {
            let with_headers = |builder: ureq::RequestBuilder<ureq::typestate::WithBody>| {
                builder
                    .header("Authorization", &token)
                    .header("Accept", "application/json")
                    .header("OData-MaxVersion", "4.0")
                    .header("OData-Version", "4.0")
                    .header("Content-Type", "application/json; charset=utf-8")
            };
            match method {
                "GET" => agent
                    .get(&url)
                    .header("Authorization", &token)
                    .header("Accept", "application/json")
                    .header("OData-MaxVersion", "4.0")
                    .header("OData-Version", "4.0")
                    .call(),
                "DELETE" => agent
                    .delete(&url)
                    .header("Authorization", &token)
                    .header("Accept", "application/json")
                    .header("OData-MaxVersion", "4.0")
                    .header("OData-Version", "4.0")
                    .call(),
                "PATCH" => {
                    with_headers(agent.patch(&url)).send(payload.clone().unwrap_or_default())
                }
                _ => with_headers(agent.post(&url))
                    .send(payload.clone().unwrap_or_else(|| "{}".into())),
            }
        })?;
        self.log.push(format!("{method} {path} -> {status}"));
        if !(200..300).contains(&status) {
            let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let message = parsed["error"]["message"].as_str().unwrap_or(text.as_str());
            let hint = if status == 401 {
                " (the token was refused: check the application user in this environment)"
            } else {
                ""
            };
            return Err(dataverse_error(format!(
                "{method} {path} failed with {status}: {message}{hint}"
            )));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|err| dataverse_error(format!("{method} {path}: response is not JSON: {err}")))
    }

    pub fn who_am_i(&mut self) -> Result<WhoAmI, SolutionError> {
        let value = self.call("GET", "WhoAmI", None)?;
        let field = |name: &str| value[name].as_str().unwrap_or_default().to_string();
        Ok(WhoAmI {
            user_id: field("UserId"),
            business_unit_id: field("BusinessUnitId"),
            organization_id: field("OrganizationId"),
        })
    }

    /// ExportSolution, or with `max_wait` set ExportSolutionAsync + waiting for the async operation +
    /// DownloadSolutionExportData: returns the zip bytes. `settings` are extra boolean parameters
    /// such as `ExportAutoNumberingSettings`.
    pub fn export_solution(
        &mut self,
        unique_name: &str,
        managed: bool,
        settings: &[(&str, bool)],
        max_wait: Option<Duration>,
    ) -> Result<Vec<u8>, SolutionError> {
        let mut body = json!({"SolutionName": unique_name, "Managed": managed});
        for (name, value) in settings {
            body[*name] = json!(value);
        }
        let (action, response) = match max_wait {
            None => (
                "ExportSolution",
                self.call("POST", "ExportSolution", Some(&body))?,
            ),
            Some(max_wait) => {
                let started = self.call("POST", "ExportSolutionAsync", Some(&body))?;
                let operation = started["AsyncOperationId"]
                    .as_str()
                    .ok_or_else(|| {
                        dataverse_error(
                            "ExportSolutionAsync response has no AsyncOperationId".into(),
                        )
                    })?
                    .to_string();
                let job = started["ExportJobId"]
                    .as_str()
                    .ok_or_else(|| {
                        dataverse_error("ExportSolutionAsync response has no ExportJobId".into())
                    })?
                    .to_string();
                self.wait_for_async_operation(&operation, max_wait)?;
                let download = json!({"ExportJobId": job});
                (
                    "DownloadSolutionExportData",
                    self.call("POST", "DownloadSolutionExportData", Some(&download))?,
                )
            }
        };
        let encoded = response["ExportSolutionFile"].as_str().ok_or_else(|| {
            dataverse_error(format!("{action} response has no ExportSolutionFile"))
        })?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|err| dataverse_error(format!("ExportSolutionFile is not base64: {err}")))
    }

    /// StageSolution: uploads the zip and returns the `StageSolutionResults` object.
    pub fn stage_solution(&mut self, zip: &[u8]) -> Result<Value, SolutionError> {
        let body =
            json!({"CustomizationFile": base64::engine::general_purpose::STANDARD.encode(zip)});
        let response = self.call("POST", "StageSolution", Some(&body))?;
        let results = response["StageSolutionResults"].clone();
        if results["StageSolutionStatus"].as_i64() == Some(0)
            || results["StageSolutionStatus"].as_str() == Some("Failed")
        {
            let problems: Vec<String> = results["SolutionValidationResults"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|item| item["Message"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            return Err(dataverse_error(format!(
                "StageSolution failed: {}",
                problems.join("; ")
            )));
        }
        Ok(results)
    }

    /// ImportSolutionAsync (or StageAndUpgradeAsync), then waits for the async operation; on failure
    /// the error carries the formatted import log.
    pub fn import_solution(
        &mut self,
        zip: &[u8],
        options: &ImportOptions,
    ) -> Result<ImportOutcome, SolutionError> {
        let import_job_id = new_guid();
        let mut body = json!({
            "CustomizationFile": base64::engine::general_purpose::STANDARD.encode(zip),
            "OverwriteUnmanagedCustomizations": options.overwrite_unmanaged_customizations,
            "PublishWorkflows": options.publish_workflows,
            "ImportJobId": import_job_id,
            "SkipProductUpdateDependencies": options.skip_product_update_dependencies,
        });
        if !options.component_parameters.is_empty() {
            body["ComponentParameters"] = Value::Array(options.component_parameters.clone());
        }
        let action = if options.stage_and_upgrade {
            "StageAndUpgradeAsync"
        } else {
            body["HoldingSolution"] = json!(options.holding_solution);
            "ImportSolutionAsync"
        };
        let response = self.call("POST", action, Some(&body))?;
        let async_operation_id = response["AsyncOperationId"]
            .as_str()
            .ok_or_else(|| dataverse_error(format!("{action} response has no AsyncOperationId")))?
            .to_string();
        let import_job_id = response["ImportJobKey"]
            .as_str()
            .map_or(import_job_id, str::to_string);
        if let Err(err) = self.wait_for_async_operation(&async_operation_id, options.max_wait) {
            let log = self
                .formatted_import_log(&import_job_id)
                .unwrap_or_else(|log_err| format!("(import log unavailable: {log_err})"));
            return Err(dataverse_error(format!(
                "{err}\nimport log of job {import_job_id}:\n{log}"
            )));
        }
        Ok(ImportOutcome {
            async_operation_id,
            import_job_id,
        })
    }

    /// Polls `asyncoperations(<id>)` until statecode 3 (completed): statuscode 30 is success,
    /// 31 failed, 32 canceled. Gives up after `max_wait`.
    pub fn wait_for_async_operation(
        &mut self,
        id: &str,
        max_wait: Duration,
    ) -> Result<(), SolutionError> {
        let started = Instant::now();
        loop {
            let operation = self.call(
                "GET",
                &format!(
                    "asyncoperations({id})?$select=statecode,statuscode,message,friendlymessage"
                ),
                None,
            )?;
            if operation["statecode"].as_i64() == Some(3) {
                return match operation["statuscode"].as_i64() {
                    Some(30) => Ok(()),
                    status => {
                        let what = if status == Some(32) {
                            "was canceled"
                        } else {
                            "failed"
                        };
                        let message = operation["friendlymessage"]
                            .as_str()
                            .or(operation["message"].as_str())
                            .unwrap_or("no message");
                        Err(dataverse_error(format!(
                            "async operation {id} {what}: {message}"
                        )))
                    }
                };
            }
            if started.elapsed() >= max_wait {
                return Err(dataverse_error(format!(
                    "async operation {id} did not finish within {}s",
                    max_wait.as_secs()
                )));
            }
            self.pause(
                self.config
                    .poll_interval
                    .min(max_wait.saturating_sub(started.elapsed())),
            )?;
        }
    }

    /// Sleeps for `duration` in short slices, ending early with an error when the run is canceled.
    fn pause(&self, duration: Duration) -> Result<(), SolutionError> {
        let until = Instant::now() + duration;
        loop {
            if self
                .config
                .cancel
                .as_ref()
                .is_some_and(|canceled| canceled())
            {
                return Err(dataverse_error(
                    "canceled while waiting for Dataverse".into(),
                ));
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(Duration::from_millis(200)));
        }
    }

    /// RetrieveFormattedImportJobResults: the import log (spreadsheet XML) of an import job.
    pub fn formatted_import_log(&mut self, import_job_id: &str) -> Result<String, SolutionError> {
        let response = self.call(
            "GET",
            &format!("RetrieveFormattedImportJobResults(ImportJobId={import_job_id})"),
            None,
        )?;
        Ok(response["FormattedResults"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    pub fn publish_all(&mut self) -> Result<(), SolutionError> {
        self.call("POST", "PublishAllXml", None).map(|_| ())
    }

    /// The solution with this unique name, if the environment has it.
    pub fn find_solution(
        &mut self,
        unique_name: &str,
    ) -> Result<Option<OnlineSolution>, SolutionError> {
        if !unique_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(SolutionError::Invalid(format!(
                "`{unique_name}` is not a solution unique name (letters, digits and _)"
            )));
        }
        let path = format!(
            "solutions?$filter=uniquename%20eq%20'{unique_name}'&$select=solutionid,uniquename,version,ismanaged"
        );
        let response = self.call("GET", &path, None)?;
        Ok(response["value"]
            .as_array()
            .and_then(|rows| rows.first())
            .map(|row| OnlineSolution {
                id: row["solutionid"].as_str().unwrap_or_default().to_string(),
                unique_name: row["uniquename"].as_str().unwrap_or_default().to_string(),
                version: row["version"].as_str().unwrap_or_default().to_string(),
                managed: row["ismanaged"].as_bool().unwrap_or(false),
            }))
    }

    /// DeleteAndPromote: applies a staged upgrade (deletes the old managed solution and promotes the
    /// holding copy); returns the promoted solution's id.
    pub fn delete_and_promote(&mut self, unique_name: &str) -> Result<String, SolutionError> {
        let response = self.call(
            "POST",
            "DeleteAndPromote",
            Some(&json!({"UniqueName": unique_name})),
        )?;
        Ok(response["SolutionId"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Deletes a solution from the environment (`DELETE solutions(<id>)`).
    pub fn delete_solution(&mut self, unique_name: &str) -> Result<(), SolutionError> {
        let solution = self.find_solution(unique_name)?.ok_or_else(|| {
            dataverse_error(format!(
                "solution {unique_name} does not exist in {}",
                self.config.environment_url
            ))
        })?;
        self.call("DELETE", &format!("solutions({})", solution.id), None)
            .map(|_| ())
    }

    /// Sets the version of a solution in the environment (`PATCH solutions(<id>)`).
    pub fn set_online_version(
        &mut self,
        unique_name: &str,
        version: &str,
    ) -> Result<(), SolutionError> {
        let solution = self.find_solution(unique_name)?.ok_or_else(|| {
            dataverse_error(format!(
                "solution {unique_name} does not exist in {}",
                self.config.environment_url
            ))
        })?;
        self.call(
            "PATCH",
            &format!("solutions({})", solution.id),
            Some(&json!({"version": version})),
        )
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_guids_are_well_formed_and_distinct() {
        let a = new_guid();
        let b = new_guid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
