//! A local stand-in for Entra ID's token endpoint and the Dataverse Web API on 127.0.0.1, answering with
//! the request and response shapes of Microsoft's Web API reference, including failures: bad
//! credentials (401), a failed import with an import log, throttling (429 with Retry-After).
//! Self-contained (std and serde_json only) so that the lockgate binary's tests can include it too.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

pub const TENANT: &str = "11111111-2222-3333-4444-555555555555";
pub const CLIENT_ID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
pub const CLIENT_SECRET: &str = "s3cr3t-value";
const TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.lockgate-test-token";

/// Reads (unique name, version, managed) from a solution zip.
pub type ManifestReader = fn(&[u8]) -> Option<(String, String, bool)>;

/// A solution installed in the fake environment.
#[derive(Debug, Clone)]
pub struct InstalledSolution {
    pub id: String,
    pub version: String,
    pub managed: bool,
}

/// One import request as received.
#[derive(Debug, Clone)]
pub struct ImportRecord {
    pub action: String,
    pub zip: Vec<u8>,
    pub body: Value,
}

#[derive(Debug, Default)]
pub struct State {
    /// Zips returned by ExportSolution, by (unique name, managed).
    pub exports: BTreeMap<(String, bool), Vec<u8>>,
    pub solutions: BTreeMap<String, InstalledSolution>,
    pub imports: Vec<ImportRecord>,
    /// Answer the next N Web API requests with 429 and `Retry-After: 1`.
    pub throttle_next: u32,
    /// Refuse every bearer token (as when the application user was removed from the environment).
    pub reject_tokens: bool,
    /// Make imports fail with this message.
    pub fail_imports_with: Option<String>,
    /// Polls that report "in progress" before an async operation completes.
    pub polls_before_done: u32,
    pub requests: Vec<String>,
    pub published: u32,
    /// Reads (unique name, version, managed) from an imported zip; set by tests with the crate's reader.
    pub manifest_reader: Option<ManifestReader>,
    operations: BTreeMap<String, (u32, Option<String>)>,
    export_jobs: BTreeMap<String, (String, bool)>,
    next_id: u32,
}

pub struct FakeDataverse {
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

impl FakeDataverse {
    /// Binds 127.0.0.1 on a free port and serves until the process ends.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || {
                    let _ = handle(stream, &state);
                });
            }
        });
        FakeDataverse { url, state }
    }

    pub fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }
}

struct Request {
    method: String,
    target: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}

fn respond(mut stream: &TcpStream, status: u16, extra_headers: &[(&str, String)], body: &str) {
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str(
            "Content-Type: application/json; odata.metadata=minimal\r\nOData-Version: 4.0\r\n",
        );
    }
    for (name, value) in extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
}

fn form_value(body: &str, key: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == key).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                index += 2;
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let values: Vec<u32> = text
        .bytes()
        .filter(|b| *b != b'=')
        .filter_map(|b| BASE64.iter().position(|c| *c == b).map(|p| p as u32))
        .collect();
    for chunk in values.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, v)| acc | (v << (18 - 6 * i)));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push(((n >> (16 - 8 * i)) & 255) as u8);
        }
    }
    out
}

fn text_between(text: &str, open: &str, close: &str) -> String {
    text.find(open)
        .and_then(|start| {
            let rest = &text[start + open.len()..];
            rest.find(close).map(|end| rest[..end].to_string())
        })
        .unwrap_or_default()
}

fn odata_error(code: &str, message: &str) -> String {
    json!({"error": {"code": code, "message": message}}).to_string()
}

fn handle(stream: TcpStream, state: &Mutex<State>) -> Option<()> {
    let request = read_request(&stream)?;
    let body_text = String::from_utf8_lossy(&request.body).into_owned();
    let mut state = state.lock().unwrap();
    state
        .requests
        .push(format!("{} {}", request.method, request.target));

    if request.target.ends_with("/oauth2/v2.0/token") {
        let tenant_ok = request.target == format!("/{TENANT}/oauth2/v2.0/token");
        let grant_ok =
            form_value(&body_text, "grant_type").as_deref() == Some("client_credentials");
        let id_ok = form_value(&body_text, "client_id").as_deref() == Some(CLIENT_ID);
        let secret_ok = form_value(&body_text, "client_secret").as_deref() == Some(CLIENT_SECRET);
        let scope_ok =
            form_value(&body_text, "scope").is_some_and(|scope| scope.ends_with("/.default"));
        if tenant_ok && grant_ok && id_ok && secret_ok && scope_ok {
            respond(&stream, 200, &[], &json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": TOKEN}).to_string());
        } else {
            let body = json!({
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
                "error_codes": [7000215]
            });
            respond(&stream, 401, &[], &body.to_string());
        }
        return Some(());
    }

    let Some(path) = request.target.strip_prefix("/api/data/v9.2/") else {
        respond(
            &stream,
            404,
            &[],
            &odata_error("0x80060888", "Resource not found"),
        );
        return Some(());
    };
    if state.reject_tokens
        || request.headers.get("authorization").map(String::as_str)
            != Some(&format!("Bearer {TOKEN}"))
    {
        respond(
            &stream,
            401,
            &[("WWW-Authenticate", "Bearer".into())],
            &odata_error(
                "0x80072560",
                "The user is not a member of the organization.",
            ),
        );
        return Some(());
    }
    if state.throttle_next > 0 {
        state.throttle_next -= 1;
        respond(
            &stream,
            429,
            &[("Retry-After", "1".into())],
            &odata_error(
                "0x80072322",
                "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
            ),
        );
        return Some(());
    }
    let body: Value = serde_json::from_str(&body_text).unwrap_or(Value::Null);
    let context = "https://org.crm.dynamics.com/api/data/v9.2/$metadata";
    match (request.method.as_str(), path) {
        ("GET", "WhoAmI") => respond(
            &stream,
            200,
            &[],
            &json!({
                "@odata.context": format!("{context}#Microsoft.Dynamics.CRM.WhoAmIResponse"),
                "BusinessUnitId": "6f202e6c-e471-ec11-8941-000d3a8e7d23",
                "UserId": "88057198-a9b1-ec11-9840-00224829c4f9",
                "OrganizationId": "e34c95a5-f34c-430c-a05e-a23437e5b9fa"
            })
            .to_string(),
        ),
        ("POST", "ExportSolution") => {
            let name = body["SolutionName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let managed = body["Managed"].as_bool().unwrap_or(false);
            match state.exports.get(&(name.clone(), managed)) {
                Some(zip) => respond(
                    &stream,
                    200,
                    &[],
                    &json!({"@odata.context": format!("{context}#Microsoft.Dynamics.CRM.ExportSolutionResponse"), "ExportSolutionFile": base64_encode(zip)}).to_string(),
                ),
                None => respond(&stream, 404, &[], &odata_error("0x8004F00B", &format!("The solution {name} was not found."))),
            }
        }
        ("POST", "ExportSolutionAsync") => {
            let name = body["SolutionName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let managed = body["Managed"].as_bool().unwrap_or(false);
            if !state.exports.contains_key(&(name.clone(), managed)) {
                respond(
                    &stream,
                    404,
                    &[],
                    &odata_error("0x8004F00B", &format!("The solution {name} was not found.")),
                );
                return Some(());
            }
            state.next_id += 1;
            let operation = format!("{:08x}-3333-4000-8000-000000000000", state.next_id);
            let job = format!("{:08x}-4444-4000-8000-000000000000", state.next_id);
            let polls = state.polls_before_done;
            state.operations.insert(operation.clone(), (polls, None));
            state.export_jobs.insert(job.clone(), (name, managed));
            respond(
                &stream,
                200,
                &[],
                &json!({"@odata.context": format!("{context}#Microsoft.Dynamics.CRM.ExportSolutionAsyncResponse"), "AsyncOperationId": operation, "ExportJobId": job}).to_string(),
            );
        }
        ("POST", "DownloadSolutionExportData") => {
            let job = body["ExportJobId"].as_str().unwrap_or_default();
            match state.export_jobs.get(job).and_then(|key| state.exports.get(key)) {
                Some(zip) => respond(
                    &stream,
                    200,
                    &[],
                    &json!({"@odata.context": format!("{context}#Microsoft.Dynamics.CRM.DownloadSolutionExportDataResponse"), "ExportSolutionFile": base64_encode(zip)}).to_string(),
                ),
                None => respond(&stream, 404, &[], &odata_error("0x80040217", &format!("exportsolutionupload With Id = {job} Does Not Exist"))),
            }
        }
        ("POST", "StageSolution") => {
            let zip = base64_decode(body["CustomizationFile"].as_str().unwrap_or_default());
            state.next_id += 1;
            let upload = format!("{:08x}-0000-4000-8000-000000000000", state.next_id);
            respond(
                &stream,
                200,
                &[],
                &json!({"StageSolutionResults": {"StageSolutionUploadId": upload, "StageSolutionStatus": 1, "SolutionDetails": {"SolutionUniqueName": "", "SolutionVersion": ""}, "SolutionComponentsDetails": [], "MissingDependencies": [], "SolutionValidationResults": [], "Size": zip.len()}}).to_string(),
            );
        }
        ("POST", action @ ("ImportSolutionAsync" | "StageAndUpgradeAsync" | "ImportSolution")) => {
            let zip = base64_decode(body["CustomizationFile"].as_str().unwrap_or_default());
            state.next_id += 1;
            let operation = format!("{:08x}-1111-4000-8000-000000000000", state.next_id);
            let import_job = body["ImportJobId"].as_str().unwrap_or_default().to_string();
            let failure = state.fail_imports_with.clone();
            if failure.is_none()
                && let Some((name, version, managed)) =
                    state.manifest_reader.and_then(|read| read(&zip))
            {
                let id = format!("{:08x}-2222-4000-8000-000000000000", state.next_id);
                state.solutions.insert(
                    name,
                    InstalledSolution {
                        id,
                        version,
                        managed,
                    },
                );
            }
            let polls = state.polls_before_done;
            state.operations.insert(operation.clone(), (polls, failure));
            state.imports.push(ImportRecord {
                action: action.to_string(),
                zip,
                body: body.clone(),
            });
            respond(&stream, 200, &[], &json!({"@odata.context": format!("{context}#Microsoft.Dynamics.CRM.ImportSolutionAsyncResponse"), "AsyncOperationId": operation, "ImportJobKey": import_job}).to_string());
        }
        ("GET", target) if target.starts_with("asyncoperations(") => {
            let id = text_between(target, "asyncoperations(", ")");
            let Some((remaining, failure)) = state.operations.get_mut(&id) else {
                respond(
                    &stream,
                    404,
                    &[],
                    &odata_error(
                        "0x80040217",
                        &format!("asyncoperation With Id = {id} Does Not Exist"),
                    ),
                );
                return Some(());
            };
            let answer = if *remaining > 0 {
                *remaining -= 1;
                json!({"asyncoperationid": id, "statecode": 2, "statuscode": 20, "message": null, "friendlymessage": null})
            } else {
                match failure {
                    None => {
                        json!({"asyncoperationid": id, "statecode": 3, "statuscode": 30, "message": null, "friendlymessage": null})
                    }
                    Some(message) => {
                        json!({"asyncoperationid": id, "statecode": 3, "statuscode": 31, "message": message, "friendlymessage": message})
                    }
                }
            };
            respond(&stream, 200, &[], &answer.to_string());
        }
        ("GET", target) if target.starts_with("RetrieveFormattedImportJobResults(") => {
            let message = state.fail_imports_with.clone().unwrap_or_default();
            let workbook = format!(
                "<?xml version=\"1.0\"?><Workbook><Worksheet ss:Name=\"Components\"><Table><Row><Cell><Data>Workflow</Data></Cell><Cell><Data>Failure</Data></Cell><Cell><Data>{message}</Data></Cell></Row></Table></Worksheet></Workbook>"
            );
            respond(
                &stream,
                200,
                &[],
                &json!({"FormattedResults": workbook}).to_string(),
            );
        }
        ("POST", "PublishAllXml") => {
            state.published += 1;
            respond(&stream, 204, &[], "");
        }
        ("GET", target) if target.starts_with("solutions?") => {
            let name = percent_decode(&text_between(
                &format!("{target}&"),
                "uniquename%20eq%20'",
                "'",
            ));
            let rows: Vec<Value> = state
                .solutions
                .get(&name)
                .map(|s| vec![json!({"solutionid": s.id, "uniquename": name, "version": s.version, "ismanaged": s.managed})])
                .unwrap_or_default();
            respond(
                &stream,
                200,
                &[],
                &json!({"@odata.context": format!("{context}#solutions"), "value": rows})
                    .to_string(),
            );
        }
        ("POST", "DeleteAndPromote") => {
            let name = body["UniqueName"].as_str().unwrap_or_default().to_string();
            match state.solutions.get(&name) {
                Some(solution) => {
                    let id = solution.id.clone();
                    respond(&stream, 200, &[], &json!({"@odata.context": format!("{context}#Microsoft.Dynamics.CRM.DeleteAndPromoteResponse"), "SolutionId": id}).to_string());
                }
                None => respond(
                    &stream,
                    404,
                    &[],
                    &odata_error("0x8004F00B", &format!("The solution {name} was not found.")),
                ),
            }
        }
        ("DELETE", target) if target.starts_with("solutions(") => {
            let id = text_between(target, "solutions(", ")");
            let before = state.solutions.len();
            state.solutions.retain(|_, solution| solution.id != id);
            if state.solutions.len() < before {
                respond(&stream, 204, &[], "");
            } else {
                respond(
                    &stream,
                    404,
                    &[],
                    &odata_error("0x80040217", "solution With Id Does Not Exist"),
                );
            }
        }
        ("PATCH", target) if target.starts_with("solutions(") => {
            let id = text_between(target, "solutions(", ")");
            let version = body["version"].as_str().unwrap_or_default().to_string();
            match state.solutions.values_mut().find(|s| s.id == id) {
                Some(solution) => {
                    solution.version = version;
                    respond(&stream, 204, &[], "");
                }
                None => respond(
                    &stream,
                    404,
                    &[],
                    &odata_error("0x80040217", "solution With Id Does Not Exist"),
                ),
            }
        }
        _ => respond(
            &stream,
            404,
            &[],
            &odata_error(
                "0x80060888",
                &format!("Resource not found for the segment '{path}'."),
            ),
        ),
    }
    Some(())
}
