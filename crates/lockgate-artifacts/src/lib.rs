//! Content-addressed storage for artifacts and logs (blake3 digests, files on disk). Blobs live once under
//! `blobs/ab/abcdef...`; an artifact is a named manifest (relative path -> digest) under `runs/<run>/`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything that can go wrong while storing or fetching artifacts; each variant names what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid artifact name `{0}`: use letters, digits, spaces, `.`, `-` and `_` only")]
    InvalidName(String),
    #[error("invalid artifact file path `{path}`: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("invalid run id `{0}`")]
    InvalidRun(String),
    #[error(
        "artifact `{name}` already exists in run {run}; artifacts are immutable once published"
    )]
    AlreadyExists { run: String, name: String },
    #[error("artifact `{name}` not found in run {run}")]
    NotFound { run: String, name: String },
    #[error("nothing to publish: {0} does not exist")]
    MissingSource(PathBuf),
    #[error("the manifest of artifact `{name}` is damaged: {reason}")]
    BadManifest { name: String, reason: String },
    #[error("blob {0} is missing from the store")]
    MissingBlob(String),
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> ArtifactError + 'a {
    move |source| ArtifactError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// A blake3 digest as 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Digest(pub String);

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One file of an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub executable: bool,
}

/// A published artifact: its name and its files by relative path (always `/`-separated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub files: BTreeMap<String, ManifestEntry>,
}

impl Manifest {
    /// Total size of the files in bytes.
    pub fn size(&self) -> u64 {
        self.files.values().map(|entry| entry.size).sum()
    }
}

/// A store rooted at one directory. Cheap to clone; safe to use from several threads and processes
/// (blobs are written to a temporary file and renamed into place).
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    root: PathBuf,
}

impl ArtifactStore {
    /// Opens (creating if needed) a store under `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ArtifactError> {
        let root = root.into();
        let blobs = root.join("blobs");
        fs::create_dir_all(&blobs).map_err(io_err("creating", &blobs))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let prefix = digest.0.get(..2).unwrap_or("00");
        self.root.join("blobs").join(prefix).join(&digest.0)
    }

    /// Stores bytes and returns their digest. Storing the same content twice keeps one copy.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, ArtifactError> {
        self.put_reader(bytes)
    }

    /// Stores a file's content and returns its digest.
    pub fn put_file(&self, path: &Path) -> Result<Digest, ArtifactError> {
        let file = File::open(path).map_err(io_err("opening", path))?;
        self.put_reader(file)
    }

    fn put_reader(&self, mut reader: impl Read) -> Result<Digest, ArtifactError> {
        let tmp_dir = self.root.join("tmp");
        fs::create_dir_all(&tmp_dir).map_err(io_err("creating", &tmp_dir))?;
        let tmp_path = tmp_dir.join(format!(
            "{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let mut tmp = File::create(&tmp_path).map_err(io_err("creating", &tmp_path))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    let _ = fs::remove_file(&tmp_path);
                    return Err(ArtifactError::Io {
                        action: "reading",
                        path: tmp_path,
                        source: err,
                    });
                }
            };
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .map_err(io_err("writing", &tmp_path))?;
        }
        drop(tmp);
        let digest = Digest(hasher.finalize().to_hex().to_string());
        let dest = self.blob_path(&digest);
        if dest.exists() {
            let _ = fs::remove_file(&tmp_path);
        } else {
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
            }
            fs::rename(&tmp_path, &dest).map_err(io_err("storing", &dest))?;
        }
        Ok(digest)
    }

    /// Opens a stored blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, ArtifactError> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|_| ArtifactError::MissingBlob(digest.0.clone()))
    }

    fn run_dir(&self, run: &str) -> Result<PathBuf, ArtifactError> {
        if run.is_empty()
            || !run
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            || run.starts_with('.')
        {
            return Err(ArtifactError::InvalidRun(run.to_string()));
        }
        Ok(self.root.join("runs").join(run))
    }

    fn manifest_path(&self, run: &str, name: &str) -> Result<PathBuf, ArtifactError> {
        validate_name(name)?;
        Ok(self.run_dir(run)?.join(format!("{name}.json")))
    }

    /// Publishes a file or a directory (recursively) as artifact `name` of `run`.
    pub fn publish(&self, run: &str, name: &str, source: &Path) -> Result<Manifest, ArtifactError> {
        let manifest_path = self.manifest_path(run, name)?;
        if manifest_path.exists() {
            return Err(ArtifactError::AlreadyExists {
                run: run.to_string(),
                name: name.to_string(),
            });
        }
        let meta =
            fs::metadata(source).map_err(|_| ArtifactError::MissingSource(source.to_path_buf()))?;
        let mut files = BTreeMap::new();
        if meta.is_dir() {
            self.add_dir(source, source, &mut files)?;
        } else {
            let file_name = source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| name.to_string());
            files.insert(file_name, self.entry_for(source, &meta)?);
        }
        let manifest = Manifest {
            name: name.to_string(),
            files,
        };
        self.write_manifest(&manifest_path, &manifest)?;
        Ok(manifest)
    }

    /// Publishes an explicit list of files (relative name -> path on disk) as one artifact.
    pub fn publish_files(
        &self,
        run: &str,
        name: &str,
        files: &[(String, PathBuf)],
    ) -> Result<Manifest, ArtifactError> {
        let manifest_path = self.manifest_path(run, name)?;
        if manifest_path.exists() {
            return Err(ArtifactError::AlreadyExists {
                run: run.to_string(),
                name: name.to_string(),
            });
        }
        let mut entries = BTreeMap::new();
        for (relative, path) in files {
            let meta =
                fs::metadata(path).map_err(|_| ArtifactError::MissingSource(path.clone()))?;
            entries.insert(relative.replace('\\', "/"), self.entry_for(path, &meta)?);
        }
        let manifest = Manifest {
            name: name.to_string(),
            files: entries,
        };
        self.write_manifest(&manifest_path, &manifest)?;
        Ok(manifest)
    }

    fn write_manifest(
        &self,
        manifest_path: &Path,
        manifest: &Manifest,
    ) -> Result<(), ArtifactError> {
        for path in manifest.files.keys() {
            validate_file_path(path)?;
        }
        if let Some(parent) = manifest_path.parent() {
            fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        let json =
            serde_json::to_vec_pretty(manifest).map_err(|err| ArtifactError::BadManifest {
                name: manifest.name.clone(),
                reason: err.to_string(),
            })?;
        let tmp = manifest_path.with_extension("json.tmp");
        fs::write(&tmp, json).map_err(io_err("writing", &tmp))?;
        fs::rename(&tmp, manifest_path).map_err(io_err("writing", manifest_path))
    }

    fn entry_for(&self, path: &Path, meta: &fs::Metadata) -> Result<ManifestEntry, ArtifactError> {
        let digest = self.put_file(path)?;
        Ok(ManifestEntry {
            digest,
            size: meta.len(),
            executable: is_executable(meta),
        })
    }

    fn add_dir(
        &self,
        base: &Path,
        dir: &Path,
        files: &mut BTreeMap<String, ManifestEntry>,
    ) -> Result<(), ArtifactError> {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(current) = stack.pop() {
            let entries = fs::read_dir(&current).map_err(io_err("listing", &current))?;
            for entry in entries {
                let entry = entry.map_err(io_err("listing", &current))?;
                let path = entry.path();
                let meta = fs::metadata(&path).map_err(io_err("reading", &path))?;
                if meta.is_dir() {
                    stack.push(path);
                } else if meta.is_file() {
                    let relative = relative_slash_path(base, &path);
                    files.insert(relative, self.entry_for(&path, &meta)?);
                }
            }
        }
        Ok(())
    }

    /// Reads the manifest of a published artifact.
    pub fn manifest(&self, run: &str, name: &str) -> Result<Manifest, ArtifactError> {
        let path = self.manifest_path(run, name)?;
        let bytes = fs::read(&path).map_err(|_| ArtifactError::NotFound {
            run: run.to_string(),
            name: name.to_string(),
        })?;
        serde_json::from_slice(&bytes).map_err(|err| ArtifactError::BadManifest {
            name: name.to_string(),
            reason: err.to_string(),
        })
    }

    /// Names of every artifact published by `run`, sorted.
    pub fn list(&self, run: &str) -> Result<Vec<String>, ArtifactError> {
        let dir = self.run_dir(run)?;
        let mut names = Vec::new();
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(names);
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if let Some(name) = file_name.strip_suffix(".json") {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Writes the files of artifact `name` under `dest`, keeping those whose relative path passes `keep`.
    /// Returns the number of files written.
    pub fn download(
        &self,
        run: &str,
        name: &str,
        dest: &Path,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<usize, ArtifactError> {
        let manifest = self.manifest(run, name)?;
        let mut count = 0;
        for (relative, entry) in &manifest.files {
            if !keep(relative) {
                continue;
            }
            let Some(target) = safe_join(dest, relative) else {
                return Err(ArtifactError::BadManifest {
                    name: name.to_string(),
                    reason: format!("unsafe path `{relative}`"),
                });
            };
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
            }
            let mut blob = self.open_blob(&entry.digest)?;
            let mut out = File::create(&target).map_err(io_err("creating", &target))?;
            io::copy(&mut blob, &mut out).map_err(io_err("writing", &target))?;
            set_executable(&target, entry.executable)
                .map_err(io_err("setting permissions of", &target))?;
            count += 1;
        }
        Ok(count)
    }
}

static TMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Artifact names as Azure Pipelines accepts them: no path separators or characters that are invalid in file names.
pub fn validate_name(name: &str) -> Result<(), ArtifactError> {
    let bad = name.trim().is_empty()
        || name.len() > 200
        || name.starts_with('.')
        || name.chars().any(|c| {
            matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|') || c.is_control()
        });
    if bad {
        Err(ArtifactError::InvalidName(name.to_string()))
    } else {
        Ok(())
    }
}

/// Paths of files inside an artifact: relative, `/`-separated, at most 1024 bytes; no NUL, CR, LF or
/// other control characters, no backslash, no drive (`C:/`), no empty, `.` or `..` segments. The
/// same rule holds for what an agent uploads and what a step publishes.
pub fn validate_file_path(path: &str) -> Result<(), ArtifactError> {
    let reason = if path.is_empty() {
        Some("it is empty")
    } else if path.len() > 1024 {
        Some("it is longer than 1024 bytes")
    } else if path.chars().any(char::is_control) {
        Some("it holds a control character (NUL, CR, LF, ...)")
    } else if path.contains('\\') {
        Some("it holds a backslash; use `/`")
    } else if path.starts_with('/') {
        Some("it is absolute")
    } else if path
        .split('/')
        .next()
        .is_some_and(|first| first.contains(':'))
    {
        Some("it starts with a drive or scheme")
    } else if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        Some("it has an empty, `.` or `..` segment")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ArtifactError::InvalidPath {
            path: path.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

fn relative_slash_path(base: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(base).unwrap_or(path);
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Joins a `/`-separated relative path under `base`, refusing absolute paths and `..`.
pub fn safe_join(base: &Path, relative: &str) -> Option<PathBuf> {
    let mut out = base.to_path_buf();
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(unix)]
fn is_executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &fs::Metadata) -> bool {
    false
}

#[cfg(unix)]
fn set_executable(path: &Path, executable: bool) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if executable { 0o755 } else { 0o644 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_executable(_path: &Path, _executable: bool) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_names_and_file_paths_refuse_what_would_escape_or_mislead() {
        for bad in ["a\0b", "a\r\nb", "C:", "a\\b", "..", ".x", "", "a/b"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name("drop 1.0-x_y").is_ok());
        for bad in [
            "a\0b",
            "a\rb",
            "a\nb",
            "C:/x",
            "c:x",
            "a\\b",
            "../x",
            "a/../b",
            "/etc/passwd",
            "./a",
            "a//b",
            "",
            "a/",
        ] {
            assert!(validate_file_path(bad).is_err(), "{bad:?}");
        }
        assert!(validate_file_path("bin/app.dll").is_ok());
        assert!(validate_file_path("dir/a:b").is_ok());
    }

    #[test]
    fn a_published_file_with_a_newline_in_its_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path().join("store")).unwrap();
        let source = dir.path().join("src");
        fs::create_dir_all(&source).unwrap();
        fs::write(source.join("ok.txt"), "x").unwrap();
        fs::write(source.join("bad\nname"), "x").unwrap();
        let error = store.publish("1", "drop", &source).unwrap_err();
        assert!(
            matches!(error, ArtifactError::InvalidPath { .. }),
            "{error}"
        );
        assert!(store.list("1").unwrap().is_empty());
    }

    fn sample_tree(dir: &Path) {
        fs::create_dir_all(dir.join("bin/sub")).unwrap();
        fs::write(dir.join("bin/app"), b"binary").unwrap();
        fs::write(dir.join("bin/sub/readme.txt"), b"hello").unwrap();
        fs::write(dir.join("copy.txt"), b"hello").unwrap();
    }

    #[test]
    fn same_content_is_stored_once() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(tmp.path().join("store")).unwrap();
        let a = store.put_bytes(b"same").unwrap();
        let b = store.put_bytes(b"same").unwrap();
        let c = store.put_bytes(b"other").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.0, blake3::hash(b"same").to_hex().to_string());
        let mut text = String::new();
        store
            .open_blob(&a)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "same");
    }

    #[test]
    fn publish_and_download_a_directory_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        sample_tree(&src);
        let store = ArtifactStore::open(tmp.path().join("store")).unwrap();
        let manifest = store.publish("run-1", "drop", &src).unwrap();
        assert_eq!(manifest.files.len(), 3);
        assert_eq!(
            manifest.files["bin/sub/readme.txt"].digest,
            manifest.files["copy.txt"].digest
        );
        assert_eq!(manifest.size(), 6 + 5 + 5);
        assert_eq!(store.list("run-1").unwrap(), vec!["drop".to_string()]);

        let out = tmp.path().join("out");
        let written = store
            .download("run-1", "drop", &out, &|path| path.starts_with("bin/"))
            .unwrap();
        assert_eq!(written, 2);
        assert_eq!(
            fs::read_to_string(out.join("bin/sub/readme.txt")).unwrap(),
            "hello"
        );
        assert!(!out.join("copy.txt").exists());
    }

    #[test]
    fn publishing_twice_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("one.txt");
        fs::write(&src, b"1").unwrap();
        let store = ArtifactStore::open(tmp.path().join("store")).unwrap();
        store.publish("r", "a", &src).unwrap();
        let err = store.publish("r", "a", &src).unwrap_err();
        assert!(matches!(err, ArtifactError::AlreadyExists { .. }), "{err}");
    }

    #[test]
    fn bad_names_and_missing_artifacts_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(tmp.path()).unwrap();
        assert!(matches!(
            store.publish("r", "../x", tmp.path()),
            Err(ArtifactError::InvalidName(_))
        ));
        assert!(matches!(
            store.publish("../r", "x", tmp.path()),
            Err(ArtifactError::InvalidRun(_))
        ));
        assert!(matches!(
            store.manifest("r", "nope"),
            Err(ArtifactError::NotFound { .. })
        ));
        assert!(matches!(
            store.publish("r", "x", &tmp.path().join("missing")),
            Err(ArtifactError::MissingSource(_))
        ));
    }

    #[test]
    fn safe_join_refuses_escapes() {
        let base = Path::new("/base");
        assert_eq!(safe_join(base, "a/b"), Some(PathBuf::from("/base/a/b")));
        assert_eq!(safe_join(base, "../etc/passwd"), None);
        assert_eq!(safe_join(base, "/etc/passwd"), None);
    }
}
