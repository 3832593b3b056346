//! Artifacts in an S3-compatible bucket (`--objects s3://...`): a real S3 server, moto in server mode
//! (`moto_server` from PyPI, which .ci/run installs), on 127.0.0.1 at a free port.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};

use lockgate_store::test_postgres::TestPostgres;

use crate::server::{
    Up, client, newest_completed_run, push_new_pipeline, start_another_server,
    start_server_with_env, stdout,
};

/// A `moto_server` child process, stopped when dropped.
pub(crate) struct Moto {
    child: Child,
    pub(crate) port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto on a free port (it prints the address it bound); fails the test, saying how to
    /// install it, when `moto_server` is missing.
    pub(crate) fn start() -> Moto {
        let mut child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start moto_server ({error}): the S3 tests need it; .ci/run installs it \
                     with `pip install 'moto[server]'`"
                )
            });
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let port = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!("moto_server ended before printing its address");
            };
            if let Some(rest) = line.split("Running on http://127.0.0.1:").nth(1) {
                break rest.trim().parse::<u16>().expect("moto's port");
            }
        };
        // Keep reading its request log so that moto never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Moto { child, port }
    }

    /// An unsigned request to moto (which does not check signatures): status and body.
    pub(crate) fn request(&self, method: &str, path: &str) -> (u16, String) {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// Creates bucket `name`.
    pub(crate) fn create_bucket(&self, name: &str) {
        let (status, body) = self.request("PUT", &format!("/{name}"));
        assert_eq!(status, 200, "creating bucket {name}: {body}");
    }

    /// The `--objects` value for `bucket/prefix` on this server.
    pub(crate) fn objects(&self, bucket_and_prefix: &str) -> String {
        format!(
            "s3://{bucket_and_prefix}?endpoint=http://127.0.0.1:{}&region=us-east-1",
            self.port
        )
    }
}

/// The environment both servers get: moto's fixed test credentials and one secret key, as a
/// deployment of several servers gives each of them the same key.
pub(crate) const SERVER_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    (
        "LOCKGATE_SECRET_KEY",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ),
];

/// Ten MiB, more than one 8 MiB part of a multipart upload.
const BIG_BYTES: usize = 10 * 1024 * 1024;

const PUBLISHING: &str = "steps:\n\
- script: mkdir -p out/sub && echo built in a bucket > out/app.txt && echo nested > out/sub/b.txt\n\
- script: yes lockgate | head -c 10485760 > out/big.bin\n\
- publish: out\n  artifact: drop\n\
- script: echo the log stays readable\n";

/// The content of `big.bin` as the pipeline writes it.
fn big_content() -> Vec<u8> {
    b"lockgate\n"
        .iter()
        .copied()
        .cycle()
        .take(BIG_BYTES)
        .collect()
}

/// The artifact files of `run` on the server `api` talks to, with the blake3 digest of each
/// download.
fn artifact_digests(
    api: &lockgate_agent::ServerClient,
    run: i64,
) -> std::collections::BTreeMap<String, String> {
    let files: Vec<lockgate_protocol::api::ArtifactFile> = api
        .get_json(&format!("/api/v1/runs/{run}/artifacts"))
        .unwrap();
    files
        .iter()
        .map(|file| {
            let bytes = api.get_bytes(&file.download_url).unwrap();
            assert_eq!(bytes.len() as i64, file.size, "{file:?}");
            (
                format!("{}/{}", file.artifact, file.path),
                blake3::hash(&bytes).to_hex().to_string(),
            )
        })
        .collect()
}

/// The keys under `prefix` in bucket `bucket`.
fn bucket_keys(moto: &Moto, bucket: &str, prefix: &str) -> Vec<String> {
    let (status, listing) = moto.request("GET", &format!("/{bucket}?list-type=2&prefix={prefix}"));
    assert_eq!(status, 200, "{listing}");
    listing
        .split("<Key>")
        .skip(1)
        .filter_map(|rest| rest.split_once("</Key>").map(|(key, _)| key.to_string()))
        .collect()
}

/// Two servers with their own data folders on one PostgreSQL and one bucket: the artifact the first
/// one's agent uploaded (one file in two parts) and the job's log are stored in the bucket only, and
/// the second server, started afterwards with an empty data folder, serves the same run, its log and
/// its artifact files, each download equal to the upload.
#[test]
fn artifacts_and_logs_go_to_the_bucket_and_are_served_back_by_any_server() {
    let moto = Moto::start();
    moto.create_bucket("lockgate");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let postgres = runtime.block_on(TestPostgres::start());
    let objects = moto.objects("lockgate/ci");
    let args = [
        "up",
        "--port",
        "0",
        "--no-demo",
        "--database",
        postgres.url(),
        "--objects",
        &objects,
    ];
    let first_dir = tempfile::tempdir().unwrap();
    let one = start_server_with_env(first_dir.path(), &args, &SERVER_ENV);
    let api = push_new_pipeline(first_dir.path(), &one, "bucket", PUBLISHING);
    let run = newest_completed_run(&api);
    assert_eq!(run.result.as_deref(), Some("succeeded"), "{run:?}");
    let digest = |bytes: &[u8]| blake3::hash(bytes).to_hex().to_string();
    let expected = std::collections::BTreeMap::from([
        ("drop/app.txt".to_string(), digest(b"built in a bucket\n")),
        ("drop/big.bin".to_string(), digest(&big_content())),
        ("drop/sub/b.txt".to_string(), digest(b"nested\n")),
    ]);
    assert_eq!(artifact_digests(&api, run.id), expected);

    // The contents are objects under the prefix named by their digest, not files in the data
    // folder; the completed job's log follows them there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let keys = loop {
        let keys = bucket_keys(&moto, "lockgate", "ci/");
        if keys.iter().any(|key| key.starts_with("ci/logs/job-")) {
            break keys;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no log in the bucket: {keys:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    for digest in expected.values() {
        assert!(keys.contains(&format!("ci/{digest}")), "{digest}: {keys:?}");
    }
    assert_eq!(keys.len(), 4, "three contents and one log: {keys:?}");
    let local = first_dir.path().join("data").join("artifacts");
    let stored: Vec<_> = std::fs::read_dir(&local)
        .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        stored.is_empty(),
        "files in {}: {stored:?}",
        local.display()
    );

    let second_dir = tempfile::tempdir().unwrap();
    let mut two = start_another_server(second_dir.path(), &args, &SERVER_ENV);
    two.token = one.token.clone();
    drop::<Up>(one);
    let other = lockgate_agent::ServerClient::new(&two.url, &two.token);
    assert_eq!(artifact_digests(&other, run.id), expected);
    let logs = stdout(&client(
        second_dir.path(),
        &two,
        &["runs", "logs", &run.id.to_string()],
    ));
    assert!(logs.contains("the log stays readable"), "{logs}");
    drop::<Up>(two);
}

/// A bucket that does not exist, an endpoint where nothing listens and a bad `--objects` value each
/// stop the server at start with an error naming the option and the storage, before it serves.
#[test]
fn a_bad_or_unreachable_bucket_stops_the_server_at_start() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let start = |objects: &str, env: &[(&str, &str)]| {
        let output = Command::new(env!("CARGO_BIN_EXE_lockgate"))
            .args(["up", "--port", "0", "--no-demo", "--objects", objects])
            .env("LOCKGATE_DATA", dir.path().join("data"))
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(!stdout.contains("Lockgate is running"), "{stdout}");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = start(&moto.objects("no-such-bucket"), &SERVER_ENV);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("--objects: object storage (s3://no-such-bucket at http://127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.contains("listing"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Nothing listens on the port a just-closed listener had.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable = format!("s3://lockgate?endpoint=http://127.0.0.1:{port}&region=us-east-1");
    let (code, stderr) = start(&unreachable, &SERVER_ENV);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("--objects: object storage (s3://lockgate at"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("testing"),
        "no credentials in errors: {stderr}"
    );

    let (code, stderr) = start("s3://b?colour=red", &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--objects"), "{stderr}");
    assert!(stderr.contains("unknown key `colour`"), "{stderr}");
}
