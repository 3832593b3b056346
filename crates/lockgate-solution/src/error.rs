//! The error type of every offline and online solution operation; each variant names the file,
//! entry or endpoint it is about so that the CLI can print it as is.

use std::path::PathBuf;

/// Something went wrong reading, writing or talking about a solution.
#[derive(Debug, thiserror::Error)]
pub enum SolutionError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a readable zip archive: {message}")]
    CorruptZip { path: PathBuf, message: String },
    #[error("{path}: entry `{entry}` would be written outside the target folder (path traversal)")]
    PathTraversal { path: PathBuf, entry: String },
    #[error("{path}: {message}")]
    InvalidXml { path: String, message: String },
    #[error("{path}: invalid JSON: {message}")]
    InvalidJson { path: String, message: String },
    #[error("{path}: missing {what}")]
    Missing { path: PathBuf, what: String },
    #[error("{path}: {message}")]
    Settings { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Dataverse(String),
}

impl SolutionError {
    /// Wraps an IO error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SolutionError::Io {
            path: path.into(),
            source,
        }
    }

    /// True when the error is the caller's input (bad file, bad flag) rather than a failure of a remote service.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, SolutionError::Dataverse(_))
    }
}
