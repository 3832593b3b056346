//! Where artifact file contents live, by content digest: a folder (`artifacts/` in the data folder, the
//! default) or an S3-compatible bucket (`--objects s3://BUCKET[/PREFIX]?endpoint=...`, through the
//! `object_store` crate, the `s3` feature). Several servers on one database share one bucket; the
//! store rows say which digests a run has, the object storage holds each digest once.

use std::path::{Path, PathBuf};
#[cfg(feature = "s3")]
use std::sync::Arc;

/// Bucket credentials given in the server's config file (`objects_access_key_id`,
/// `objects_secret_access_key`) instead of the `AWS_*` environment variables. Never printed: its
/// `Debug` hides both values.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("S3Credentials(hidden)")
    }
}

/// An object storage failure, naming the key and what was being done.
#[derive(Debug, thiserror::Error)]
#[error("object storage ({storage}): {action} `{key}`: {reason}")]
pub struct ObjectsError {
    storage: String,
    action: &'static str,
    key: String,
    reason: String,
}

/// The artifact object storage of a server.
#[derive(Clone, Debug)]
pub enum Objects {
    /// One file per key in a folder.
    Folder(PathBuf),
    /// One object per key in a bucket, under an optional prefix.
    #[cfg(feature = "s3")]
    Bucket {
        store: Arc<dyn object_store::ObjectStore>,
        prefix: String,
        url: String,
    },
}

/// Part size of multipart uploads (S3's smallest part is 5 MiB).
#[cfg(feature = "s3")]
const PART_BYTES: usize = 8 * 1024 * 1024;

impl Objects {
    /// Opens the object storage `spec` names: empty or `folder` for `artifacts/` in the data folder, an
    /// absolute path or `file:///PATH` for another folder, or `s3://BUCKET[/PREFIX]` with the query
    /// keys `endpoint`, `region` and `allow_http`; the credentials come from the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, ...).
    pub fn open(spec: &str, data_dir: &Path) -> Result<Objects, String> {
        Objects::open_with(spec, data_dir, None)
    }

    /// [`Objects::open`] with the bucket credentials of the config file, which take precedence over
    /// the environment's.
    pub fn open_with(
        spec: &str,
        data_dir: &Path,
        credentials: Option<&S3Credentials>,
    ) -> Result<Objects, String> {
        let spec = spec.trim();
        if spec.is_empty() || spec == "folder" {
            return Ok(Objects::Folder(data_dir.join("artifacts")));
        }
        if let Some(path) = spec.strip_prefix("file://") {
            return folder(path);
        }
        if spec.starts_with('/') {
            return folder(spec);
        }
        if let Some(rest) = spec.strip_prefix("s3://") {
            return bucket(spec, rest, credentials);
        }
        Err(format!(
            "objects `{spec}`: expected `folder`, an absolute path, `file:///PATH` or `s3://BUCKET[/PREFIX]?endpoint=URL`"
        ))
    }

    /// Where an upload is written before [`Objects::put_file`] takes it: the folder itself (so that
    /// storing is a rename), or `fallback` (a local folder) for a bucket.
    pub fn staging_dir(&self, fallback: &Path) -> PathBuf {
        match self {
            Objects::Folder(dir) => dir.clone(),
            #[cfg(feature = "s3")]
            Objects::Bucket { .. } => fallback.to_path_buf(),
        }
    }

    /// What this storage is, for logs and errors (no credentials).
    pub fn describe(&self) -> String {
        match self {
            Objects::Folder(dir) => dir.display().to_string(),
            #[cfg(feature = "s3")]
            Objects::Bucket { url, .. } => url.clone(),
        }
    }

    /// Prepares the storage at start: creates the folder, or checks that the bucket answers.
    pub async fn check(&self) -> Result<(), ObjectsError> {
        match self {
            Objects::Folder(dir) => tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| self.error("creating", "", e)),
            #[cfg(feature = "s3")]
            Objects::Bucket { store, prefix, .. } => {
                use futures_util::StreamExt;
                let prefix = object_store::path::Path::from(prefix.as_str());
                let mut listing = store.list(Some(&prefix));
                match listing.next().await {
                    Some(Err(error)) => Err(self.error("listing", "", error)),
                    _ => Ok(()),
                }
            }
        }
    }

    /// Moves the local file `file` into the storage as `key`, unless `key` is there already (the
    /// content is addressed by its digest). The file is gone afterwards either way.
    pub async fn put_file(&self, key: &str, file: &Path) -> Result<(), ObjectsError> {
        let result = self.store_file(key, file, true).await;
        let _ = tokio::fs::remove_file(file).await;
        result
    }

    /// Copies the local file `file` into the storage as `key`, unless `key` is there already; the
    /// file stays.
    pub async fn copy_file(&self, key: &str, file: &Path) -> Result<(), ObjectsError> {
        self.store_file(key, file, false).await
    }

    async fn store_file(&self, key: &str, file: &Path, moving: bool) -> Result<(), ObjectsError> {
        match self {
            Objects::Folder(dir) => {
                let target = dir.join(key);
                if tokio::fs::try_exists(&target).await.unwrap_or(false) {
                    return Ok(());
                }
                if moving {
                    return tokio::fs::rename(file, &target)
                        .await
                        .map_err(|e| self.error("storing", key, e));
                }
                tokio::fs::create_dir_all(target.parent().unwrap_or(dir))
                    .await
                    .map_err(|e| self.error("creating the folder for", key, e))?;
                let temp = dir.join(format!("{key}.partial-{}", std::process::id()));
                tokio::fs::copy(file, &temp)
                    .await
                    .map_err(|e| self.error("copying", key, e))?;
                tokio::fs::rename(&temp, &target)
                    .await
                    .map_err(|e| self.error("storing", key, e))
            }
            #[cfg(feature = "s3")]
            Objects::Bucket { store, .. } => {
                use object_store::ObjectStoreExt;
                use tokio::io::AsyncReadExt;
                let location = self.location(key);
                if store.head(&location).await.is_ok() {
                    return Ok(());
                }
                let upload = store
                    .put_multipart(&location)
                    .await
                    .map_err(|e| self.error("starting the upload of", key, e))?;
                let mut writer =
                    object_store::WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
                let mut source = tokio::fs::File::open(file)
                    .await
                    .map_err(|e| self.error("reading the upload of", key, e))?;
                let mut buffer = vec![0u8; 256 * 1024];
                loop {
                    let read = match source.read(&mut buffer).await {
                        Ok(0) => break,
                        Ok(read) => read,
                        Err(error) => {
                            let _ = writer.abort().await;
                            return Err(self.error("reading the upload of", key, error));
                        }
                    };
                    if let Err(error) = writer.wait_for_capacity(4).await {
                        return Err(self.error("uploading", key, error));
                    }
                    writer.write(&buffer[..read]);
                }
                writer
                    .finish()
                    .await
                    .map(|_| ())
                    .map_err(|e| self.error("uploading", key, e))
            }
        }
    }

    /// Stores `bytes` as `key` (replacing what was there).
    pub async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), ObjectsError> {
        match self {
            Objects::Folder(dir) => {
                let target = dir.join(key);
                if let Some(parent) = target.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| self.error("creating the folder for", key, e))?;
                }
                let temp = dir.join(format!("{key}.partial-{}", std::process::id()));
                tokio::fs::write(&temp, bytes)
                    .await
                    .map_err(|e| self.error("writing", key, e))?;
                tokio::fs::rename(&temp, &target)
                    .await
                    .map_err(|e| self.error("storing", key, e))
            }
            #[cfg(feature = "s3")]
            Objects::Bucket { store, .. } => {
                use object_store::ObjectStoreExt;
                store
                    .put(&self.location(key), bytes.into())
                    .await
                    .map(|_| ())
                    .map_err(|e| self.error("uploading", key, e))
            }
        }
    }

    /// The content of `key`; `Ok(None)` when there is no such object.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ObjectsError> {
        match self {
            Objects::Folder(dir) => match tokio::fs::read(dir.join(key)).await {
                Ok(bytes) => Ok(Some(bytes)),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(error) => Err(self.error("reading", key, error)),
            },
            #[cfg(feature = "s3")]
            Objects::Bucket { store, .. } => {
                use object_store::ObjectStoreExt;
                match store.get(&self.location(key)).await {
                    Ok(result) => result
                        .bytes()
                        .await
                        .map(|bytes| Some(bytes.to_vec()))
                        .map_err(|e| self.error("downloading", key, e)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(error) => Err(self.error("downloading", key, error)),
                }
            }
        }
    }

    /// Removes `key`; removing a missing key is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectsError> {
        match self {
            Objects::Folder(dir) => match tokio::fs::remove_file(dir.join(key)).await {
                Ok(()) => Ok(()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(error) => Err(self.error("deleting", key, error)),
            },
            #[cfg(feature = "s3")]
            Objects::Bucket { store, .. } => {
                use object_store::ObjectStoreExt;
                match store.delete(&self.location(key)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(error) => Err(self.error("deleting", key, error)),
                }
            }
        }
    }

    #[cfg(feature = "s3")]
    fn location(&self, key: &str) -> object_store::path::Path {
        match self {
            Objects::Bucket { prefix, .. } if !prefix.is_empty() => {
                object_store::path::Path::from(format!("{prefix}/{key}"))
            }
            _ => object_store::path::Path::from(key),
        }
    }

    fn error(
        &self,
        action: &'static str,
        key: &str,
        reason: impl std::fmt::Display,
    ) -> ObjectsError {
        ObjectsError {
            storage: self.describe(),
            action,
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }
}

fn folder(path: &str) -> Result<Objects, String> {
    let dir = PathBuf::from(path);
    if !dir.is_absolute() {
        return Err(format!("objects folder `{path}` must be an absolute path"));
    }
    Ok(Objects::Folder(dir))
}

#[cfg(not(feature = "s3"))]
fn bucket(
    spec: &str,
    _rest: &str,
    _credentials: Option<&S3Credentials>,
) -> Result<Objects, String> {
    Err(format!(
        "objects `{spec}`: this lockgate was built without the `s3` feature"
    ))
}

#[cfg(feature = "s3")]
fn bucket(spec: &str, rest: &str, credentials: Option<&S3Credentials>) -> Result<Objects, String> {
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
    let prefix = prefix.trim_matches('/').to_string();
    if bucket.is_empty() {
        return Err(format!("objects `{spec}`: the bucket name is missing"));
    }
    let mut builder = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        // A bucket that does not answer fails a request in seconds, not after minutes of retries.
        .with_retry(object_store::RetryConfig {
            max_retries: 3,
            retry_timeout: std::time::Duration::from_secs(20),
            ..Default::default()
        })
        .with_client_options(
            object_store::ClientOptions::new()
                .with_connect_timeout(std::time::Duration::from_secs(5)),
        );
    if let Some(credentials) = credentials {
        builder = builder
            .with_access_key_id(&credentials.access_key_id)
            .with_secret_access_key(&credentials.secret_access_key);
    }
    let mut shown = format!("s3://{location}");
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if value.is_empty() {
            return Err(format!("objects `{spec}`: `{key}` needs a value"));
        }
        builder = match key {
            "endpoint" => {
                if !(value.starts_with("http://") || value.starts_with("https://")) {
                    return Err(format!(
                        "objects `{spec}`: `endpoint` must be an http:// or https:// URL"
                    ));
                }
                shown = format!("{shown} at {value}");
                builder
                    .with_endpoint(value)
                    .with_allow_http(value.starts_with("http://"))
            }
            "region" => builder.with_region(value),
            "allow_http" => match value {
                "true" => builder.with_allow_http(true),
                "false" => builder.with_allow_http(false),
                _ => {
                    return Err(format!(
                        "objects `{spec}`: `allow_http` must be true or false"
                    ));
                }
            },
            other => {
                return Err(format!(
                    "objects `{spec}`: unknown key `{other}` (known: endpoint, region, allow_http)"
                ));
            }
        };
    }
    // reqwest's TLS runs on rustls; use ring, as the agent's HTTP client does (no C crypto build).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = builder
        .build()
        .map_err(|error| format!("objects `{spec}`: {error}"))?;
    Ok(Objects::Bucket {
        store: Arc::new(store),
        prefix,
        url: shown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_checked() {
        let data = Path::new("/data");
        assert!(matches!(
            Objects::open("", data),
            Ok(Objects::Folder(dir)) if dir == Path::new("/data/artifacts")
        ));
        assert!(matches!(
            Objects::open("file:///srv/objects", data),
            Ok(Objects::Folder(dir)) if dir == Path::new("/srv/objects")
        ));
        for (bad, says) in [
            ("relative/dir", "expected `folder`"),
            ("file://relative", "must be an absolute path"),
            ("s3://", "bucket name is missing"),
            ("s3://b?colour=red", "unknown key `colour`"),
            ("s3://b?endpoint=ftp://x", "`endpoint` must be"),
            ("s3://b?allow_http=maybe", "`allow_http` must be"),
        ] {
            let error = Objects::open(bad, data).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
