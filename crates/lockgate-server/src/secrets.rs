//! Secrets at rest (docs/security.md, "Secrets at rest"): secret pipeline variables, queue-time values
//! of secret variables, values the scheduler computed for `$[ ]` variables and `issecret` outputs are
//! stored encrypted with XChaCha20-Poly1305 (an AEAD; a random 24-byte nonce per value) under one
//! 32-byte server key. A sealed value is text: `lgsec1:` then base64 (URL alphabet, no padding) of the
//! nonce followed by the ciphertext and its tag. The key comes from `LOCKGATE_SECRET_KEY` (64 hex
//! digits or base64) or from the file `secret.key` in the data folder, created with mode 0600 on the
//! first start; a key file that other users may read makes the server refuse to start.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use chacha20poly1305::aead::Aead;
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
use lockgate_store::{Job, Store};
use serde_json::Value;

/// What every sealed value starts with.
pub const SEALED_PREFIX: &str = "lgsec1:";
/// The key file in the data folder.
pub const KEY_FILE: &str = "secret.key";
/// The environment variable that gives the key instead of the file.
pub const KEY_ENV: &str = "LOCKGATE_SECRET_KEY";

const NONCE_LEN: usize = 24;
/// The setting holding a sealed known text: opening it proves the key is the database's.
const KEY_CHECK_SETTING: &str = "secrets.key-check";
const KEY_CHECK_TEXT: &str = "lockgate secret key check";
/// The setting recording that clear secrets of older databases were encrypted.
const UPGRADED_SETTING: &str = "secrets.encrypted-at-rest";

/// Encrypts and decrypts values with the server's key. `Debug` never shows the key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    /// Keys the macs of job access tokens (derived from the secret key).
    token_key: [u8; 32],
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

/// A sealed value that does not open: not sealed with this key, or damaged.
#[derive(Debug, thiserror::Error)]
#[error("a stored secret cannot be decrypted with this server's secret key")]
pub struct OpenError;

impl SecretBox {
    pub fn new(key: [u8; 32]) -> SecretBox {
        SecretBox {
            cipher: XChaCha20Poly1305::new(&Key::from(key)),
            token_key: blake3::derive_key("lockgate 2026 job access tokens", &key),
        }
    }

    /// The access token of a job's attempt (`System.AccessToken`): `lgj_<job id>_<mac>`, the mac a
    /// keyed hash of the job id, attempt and start time. Nothing is stored: the server checks a
    /// presented token against the job as it is ([`SecretBox::job_of_token`]), so the token is
    /// good only while that attempt runs.
    pub fn job_token(&self, job_id: i64, attempt: i64, started_at: i64) -> String {
        format!("lgj_{job_id}_{}", self.job_mac(job_id, attempt, started_at))
    }

    fn job_mac(&self, job_id: i64, attempt: i64, started_at: i64) -> String {
        let text = format!("{job_id}\0{attempt}\0{started_at}");
        blake3::keyed_hash(&self.token_key, text.as_bytes())
            .to_hex()
            .to_string()
    }

    /// The job id a presented job token names, if it has the shape of one.
    pub fn job_of_token(token: &str) -> Option<(i64, &str)> {
        let rest = token.strip_prefix("lgj_")?;
        let (id, mac) = rest.split_once('_')?;
        Some((id.parse().ok()?, mac))
    }

    /// Whether `mac` is the mac of the job's attempt (compared in constant time).
    pub fn job_token_matches(&self, mac: &str, job_id: i64, attempt: i64, started_at: i64) -> bool {
        let expected = self.job_mac(job_id, attempt, started_at);
        expected.len() == mac.len()
            && expected
                .bytes()
                .zip(mac.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// A box with a fresh random key (tests and servers built without a data folder key).
    pub fn random() -> SecretBox {
        SecretBox::new(random_key())
    }

    pub fn is_sealed(text: &str) -> bool {
        text.starts_with(SEALED_PREFIX)
    }

    /// Encrypts `clear` with a new random nonce.
    pub fn seal(&self, clear: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(&XNonce::from(nonce), clear.as_bytes())
            .unwrap_or_default();
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&ciphertext);
        format!(
            "{SEALED_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    /// Decrypts a sealed value.
    pub fn open(&self, sealed: &str) -> Result<String, OpenError> {
        let encoded = sealed.strip_prefix(SEALED_PREFIX).ok_or(OpenError)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| OpenError)?;
        if bytes.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError)?;
        let clear = self
            .cipher
            .decrypt(&XNonce::from(nonce), ciphertext)
            .map_err(|_| OpenError)?;
        String::from_utf8(clear).map_err(|_| OpenError)
    }

    /// The clear text of a stored value: sealed values are opened; one that does not open stays as
    /// it is (never a clear secret: the key was checked at startup, so such a value was stored clear
    /// or damaged).
    pub fn open_or_keep(&self, stored: &str) -> String {
        if Self::is_sealed(stored) {
            self.open(stored).unwrap_or_else(|_| stored.to_string())
        } else {
            stored.to_string()
        }
    }

    /// Seals a value unless it is sealed already (upgrading data that may hold both).
    fn seal_once(&self, value: &str) -> String {
        if Self::is_sealed(value) && self.open(value).is_ok() {
            value.to_string()
        } else {
            self.seal(value)
        }
    }

    /// A pipeline's stored variables with their secret values decrypted.
    pub fn open_variables(
        &self,
        variables: Vec<lockgate_store::PipelineVariable>,
    ) -> Vec<lockgate_store::PipelineVariable> {
        variables
            .into_iter()
            .map(|mut variable| {
                if variable.secret {
                    variable.value = self.open_or_keep(&variable.value);
                }
                variable
            })
            .collect()
    }

    /// Seals the secret parts of a clear job spec before it is stored: the values of secret
    /// `pipelineVariables`, the `queueVariables` values of secret variables, and every value in
    /// `runtimeValues` (a `$[ ]` variable may copy a secret). A clear value that looks sealed is
    /// sealed too, so every sealed-looking value of a stored spec is one.
    pub fn seal_spec(&self, spec: &mut Value) {
        self.map_spec(spec, &mut |value, secret| {
            if secret || Self::is_sealed(value) {
                *value = self.seal(value);
            }
        });
    }

    /// The clear form of a stored spec (see [`seal_spec`](Self::seal_spec)).
    pub fn open_spec(&self, spec: &mut Value) {
        self.map_spec(spec, &mut |value, _| *value = self.open_or_keep(value));
    }

    /// Calls `each(value, secret)` on every value [`seal_spec`](Self::seal_spec) covers.
    fn map_spec(&self, spec: &mut Value, each: &mut dyn FnMut(&mut String, bool)) {
        let mut secret_names: Vec<String> = Vec::new();
        if let Some(list) = spec
            .get_mut("pipelineVariables")
            .and_then(Value::as_array_mut)
        {
            for entry in list {
                let secret = entry["secret"].as_bool().unwrap_or(false);
                if secret && let Some(name) = entry["name"].as_str() {
                    secret_names.push(name.to_ascii_lowercase());
                }
                if let Some(Value::String(value)) = entry.get_mut("value") {
                    each(value, secret);
                }
            }
        }
        if let Some(map) = spec
            .get_mut("queueVariables")
            .and_then(Value::as_object_mut)
        {
            for (name, value) in map.iter_mut() {
                if let Value::String(value) = value {
                    each(value, secret_names.contains(&name.to_ascii_lowercase()));
                }
            }
        }
        if let Some(values) = spec.get_mut("runtimeValues") {
            for list in ["outer", "job"] {
                if let Some(entries) = values.get_mut(list).and_then(Value::as_array_mut) {
                    for entry in entries {
                        if let Some(Value::String(value)) = entry.get_mut(1) {
                            each(value, true);
                        }
                    }
                }
            }
        }
    }

    /// The clear values of the secrets a stored job spec carries (secret pipeline variables and the
    /// queue-time values given for them), for masking what the job's agent reports.
    pub fn secret_values(&self, spec: &str) -> Vec<String> {
        let Ok(mut spec) = serde_json::from_str::<Value>(spec) else {
            return Vec::new();
        };
        self.open_spec(&mut spec);
        let mut names = Vec::new();
        let mut values = Vec::new();
        for entry in spec["pipelineVariables"].as_array().into_iter().flatten() {
            if entry["secret"].as_bool() == Some(true) {
                if let Some(name) = entry["name"].as_str() {
                    names.push(name.to_ascii_lowercase());
                }
                if let Some(value) = entry["value"].as_str() {
                    values.push(value.to_string());
                }
            }
        }
        for (name, value) in spec["queueVariables"].as_object().into_iter().flatten() {
            if names.contains(&name.to_ascii_lowercase())
                && let Some(value) = value.as_str()
            {
                values.push(value.to_string());
            }
        }
        values
    }

    /// Seals a clear spec given as JSON text.
    pub fn seal_spec_text(&self, spec: &str) -> String {
        match serde_json::from_str::<Value>(spec) {
            Ok(mut value) => {
                self.seal_spec(&mut value);
                value.to_string()
            }
            Err(_) => spec.to_string(),
        }
    }

    /// A job's outputs as stored: the `secret` ones (and any clear value that looks sealed) sealed.
    pub fn seal_outputs(
        &self,
        outputs: &BTreeMap<String, String>,
        secret: &BTreeSet<String>,
    ) -> String {
        let sealed: BTreeMap<&String, String> = outputs
            .iter()
            .map(|(name, value)| {
                let value = if secret.contains(name) || Self::is_sealed(value) {
                    self.seal(value)
                } else {
                    value.clone()
                };
                (name, value)
            })
            .collect();
        serde_json::to_string(&sealed).unwrap_or_else(|_| "{}".into())
    }

    /// A job row as the scheduler and the lease read it: spec and outputs decrypted. Such a row
    /// is never written back as it is (see [`seal_spec`](Self::seal_spec)).
    pub fn open_job(&self, mut job: Job) -> Job {
        if job.spec.contains(SEALED_PREFIX)
            && let Ok(mut spec) = serde_json::from_str::<Value>(&job.spec)
        {
            self.open_spec(&mut spec);
            job.spec = spec.to_string();
        }
        if job.outputs.contains(SEALED_PREFIX)
            && let Ok(outputs) = serde_json::from_str::<BTreeMap<String, String>>(&job.outputs)
        {
            let opened: BTreeMap<String, String> = outputs
                .into_iter()
                .map(|(name, value)| (name, self.open_or_keep(&value)))
                .collect();
            job.outputs = serde_json::to_string(&opened).unwrap_or_else(|_| "{}".into());
        }
        job
    }

    /// The clear values of the sealed (`issecret`) outputs of `jobs`, for masking in the jobs that
    /// may read them.
    pub fn secret_output_values(&self, jobs: &[Job]) -> Vec<String> {
        let mut values = Vec::new();
        for job in jobs {
            if !job.outputs.contains(SEALED_PREFIX) {
                continue;
            }
            let Ok(outputs) = serde_json::from_str::<BTreeMap<String, String>>(&job.outputs) else {
                continue;
            };
            for value in outputs.values() {
                if Self::is_sealed(value)
                    && let Ok(clear) = self.open(value)
                    && !values.contains(&clear)
                {
                    values.push(clear);
                }
            }
        }
        values
    }

    pub fn open_jobs(&self, jobs: Vec<Job>) -> Vec<Job> {
        jobs.into_iter().map(|job| self.open_job(job)).collect()
    }

    /// Checks at startup that this key is the one the database's secrets were sealed with (a clear
    /// error instead of garbage), then encrypts in place the clear secrets an older database holds:
    /// secret pipeline variables and the secret parts of job specs. Runs once per database.
    pub async fn prepare_store(&self, store: &Store, source: &str) -> anyhow::Result<()> {
        match store.setting(KEY_CHECK_SETTING).await? {
            Some(check) => {
                if self.open(&check).ok().as_deref() != Some(KEY_CHECK_TEXT) {
                    anyhow::bail!(
                        "the secret key ({source}) is not the key this server's stored secrets were \
                         encrypted with: give the original key (the `{KEY_FILE}` file of the data \
                         folder, or {KEY_ENV}); docs/security.md, \"Secrets at rest\""
                    );
                }
            }
            None => {
                store
                    .set_setting(KEY_CHECK_SETTING, &self.seal(KEY_CHECK_TEXT))
                    .await?
            }
        }
        if store.setting(UPGRADED_SETTING).await?.is_some() {
            return Ok(());
        }
        for project in store.list_projects().await? {
            for pipeline in store.list_pipelines(project.id).await? {
                let variables = store.pipeline_variables(pipeline.id).await?;
                if !variables
                    .iter()
                    .any(|v| v.secret && self.open(&v.value).is_err())
                {
                    continue;
                }
                let sealed: Vec<_> = variables
                    .into_iter()
                    .map(|mut v| {
                        if v.secret {
                            v.value = self.seal_once(&v.value);
                        }
                        v
                    })
                    .collect();
                store.set_pipeline_variables(pipeline.id, &sealed).await?;
            }
        }
        let mut after = 0;
        loop {
            let page = store.jobs_after(after, 500).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for job in page {
                let Ok(mut spec) = serde_json::from_str::<Value>(&job.spec) else {
                    continue;
                };
                let before = spec.clone();
                self.map_spec(&mut spec, &mut |value, secret| {
                    if secret {
                        *value = self.seal_once(value);
                    }
                });
                if spec != before {
                    store.set_job_spec(job.id, &spec.to_string()).await?;
                }
            }
        }
        store.purge_overwritten().await?;
        store.set_setting(UPGRADED_SETTING, "1").await?;
        Ok(())
    }
}

/// Where the key came from, for messages.
pub fn key_source(data_dir: &Path, env_value: Option<&str>) -> String {
    match env_value {
        Some(_) => KEY_ENV.to_string(),
        None => data_dir.join(KEY_FILE).display().to_string(),
    }
}

/// Reads the server key: `env_value` (the value of `LOCKGATE_SECRET_KEY`) when given, else the key
/// file in the data folder, created (mode 0600, 64 hex digits) when missing. A key file that group
/// or others may read or write is refused, naming the `chmod` that fixes it.
pub fn load_key(data_dir: &Path, env_value: Option<&str>) -> anyhow::Result<[u8; 32]> {
    if let Some(text) = env_value {
        return parse_key(text).map_err(|problem| anyhow::anyhow!("{KEY_ENV}: {problem}"));
    }
    let path = data_dir.join(KEY_FILE);
    if !path.exists() {
        return create_key_file(&path);
    }
    check_key_file_mode(&path)?;
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    if bytes.len() == 32 && parse_key(text.trim()).is_err() {
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        return Ok(key);
    }
    parse_key(text.trim()).map_err(|problem| anyhow::anyhow!("{}: {problem}", path.display()))
}

fn create_key_file(path: &PathBuf) -> anyhow::Result<[u8; 32]> {
    use std::os::unix::fs::OpenOptionsExt;
    let key = random_key();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create the secret key file {}", path.display()))?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    file.write_all(format!("{hex}\n").as_bytes())?;
    file.sync_all()?;
    Ok(key)
}

fn check_key_file_mode(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "the secret key file {} has mode {mode:04o}: other users may read it; the server \
             refuses to start until only its owner can (`chmod 600 {}`), and consider the stored \
             secrets exposed",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// A 32-byte key written as 64 hex digits or as base64 (standard or URL alphabet, padded or not).
/// The message never repeats the text.
pub fn parse_key(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| "not hex".to_string())?
    } else {
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .ok_or_else(|| {
                format!(
                    "a secret key is 32 bytes written as 64 hex digits or as base64 (44 \
                     characters); this is {} characters and neither",
                    text.chars().count()
                )
            })?
    };
    bytes.as_slice().try_into().map_err(|_| {
        format!(
            "a secret key is 32 bytes (64 hex digits or 44 base64 characters); this one decodes \
             to {} bytes",
            bytes.len()
        )
    })
}

fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    fill_random(&mut key);
    key
}

fn fill_random(bytes: &mut [u8]) {
    // getrandom fails only where the OS has no random source; no key or nonce is made without one.
    if getrandom::fill(bytes).is_err() {
        panic!("the operating system gave no random bytes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_token_checks_out_only_for_its_attempt_and_key() {
        let secrets = SecretBox::new([7; 32]);
        let token = secrets.job_token(12, 2, 1_000);
        let (job, mac) = SecretBox::job_of_token(&token).unwrap();
        assert_eq!(job, 12);
        assert!(secrets.job_token_matches(mac, 12, 2, 1_000));
        assert!(
            !secrets.job_token_matches(mac, 12, 3, 1_000),
            "another attempt"
        );
        assert!(
            !secrets.job_token_matches(mac, 12, 2, 1_001),
            "another lease"
        );
        assert!(!secrets.job_token_matches(mac, 13, 2, 1_000), "another job");
        assert!(
            !SecretBox::new([8; 32]).job_token_matches(mac, 12, 2, 1_000),
            "another key"
        );
        assert!(!secrets.job_token_matches("", 12, 2, 1_000));
        assert_eq!(SecretBox::job_of_token("lgp_personal"), None);
        assert_eq!(SecretBox::job_of_token("lgj_x_abc"), None);
    }

    #[test]
    fn sealed_values_open_with_their_key_only_and_nonces_differ() {
        let secret_box = SecretBox::random();
        let a = secret_box.seal("hunter2");
        let b = secret_box.seal("hunter2");
        assert_ne!(a, b, "a random nonce per value");
        assert!(!a.contains("hunter2"));
        assert_eq!(secret_box.open(&a).unwrap(), "hunter2");
        assert!(SecretBox::random().open(&a).is_err());
        assert!(secret_box.open("lgsec1:AAAA").is_err());
        assert_eq!(secret_box.open_or_keep("plain"), "plain");
    }

    #[test]
    fn keys_parse_from_hex_and_base64_and_bad_ones_are_named() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let key = parse_key(hex).unwrap();
        assert_eq!(key[1], 0x11);
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        assert_eq!(parse_key(&b64).unwrap(), key);
        let short = parse_key("abcd").unwrap_err();
        assert!(short.contains("32 bytes"), "{short}");
        let junk = parse_key("not a key at all!").unwrap_err();
        assert!(
            junk.contains("hex") && !junk.contains("not a key"),
            "{junk}"
        );
    }

    #[test]
    fn the_key_file_is_created_0600_and_refused_when_others_may_read_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = load_key(dir.path(), None).unwrap();
        let path = dir.path().join(KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_key(dir.path(), None).unwrap(), key, "read back");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_key(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");
        let err = load_key(dir.path(), Some("zz")).unwrap_err().to_string();
        assert!(err.contains(KEY_ENV), "{err}");
    }

    #[test]
    fn specs_seal_secret_parts_only_and_open_back() {
        let secret_box = SecretBox::random();
        let clear = serde_json::json!({
            "job": {"name": "A"},
            "pipelineVariables": [
                {"name": "Key", "value": "s3cr3t", "secret": true, "readonly": false},
                {"name": "Plain", "value": "shown", "secret": false, "readonly": false}
            ],
            "queueVariables": {"key": "override", "Plain": "p"},
            "runtimeValues": {"outer": [[0, "copied"]], "job": []}
        });
        let mut spec = clear.clone();
        secret_box.seal_spec(&mut spec);
        let text = spec.to_string();
        for hidden in ["s3cr3t", "override", "copied"] {
            assert!(!text.contains(hidden), "{text}");
        }
        assert!(text.contains("shown") && text.contains("\"p\""), "{text}");
        secret_box.open_spec(&mut spec);
        assert_eq!(spec, clear);
    }
}
