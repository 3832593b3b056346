//! Test helpers: a reader over `test_data/` (the pipeline repository root, with `repos/<alias>/`
//! as the checkouts of other repositories) and the `check()` helper that compiles one file.

use std::path::{Path, PathBuf};

use lockgate_pipeline::{CompileInput, CompileOutput, ReadError, SourceReader};

pub fn test_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data")
}

/// Reads from a directory; repository aliases map to `repos/<alias>` when that folder exists.
pub struct DirReader {
    pub root: PathBuf,
}

impl SourceReader for DirReader {
    fn read(&self, repository: Option<&str>, path: &str) -> Result<String, ReadError> {
        let base = match repository {
            None => self.root.clone(),
            Some(alias) => {
                let dir = self.root.join("repos").join(alias);
                if !dir.is_dir() {
                    return Err(ReadError::RepositoryNotMapped);
                }
                dir
            }
        };
        std::fs::read_to_string(base.join(path)).map_err(|_| ReadError::NotFound)
    }
}

/// Reads from memory: (path, text) pairs of the pipeline's own repository.
pub struct MemoryReader(pub Vec<(String, String)>);

impl SourceReader for MemoryReader {
    fn read(&self, repository: Option<&str>, path: &str) -> Result<String, ReadError> {
        if repository.is_some() {
            return Err(ReadError::RepositoryNotMapped);
        }
        self.0
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, t)| t.clone())
            .ok_or(ReadError::NotFound)
    }
}

/// Compiles `entry` (relative to `test_data/`). Lines `# param: NAME=VALUE` at the top of the
/// entry file become `--param` values.
pub fn check(entry: &str) -> CompileOutput {
    let root = test_data();
    let text = std::fs::read_to_string(root.join(entry)).unwrap_or_default();
    let parameters = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("# param: "))
        .filter_map(|p| p.split_once('='))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let reader = DirReader { root };
    let input = CompileInput {
        entry: entry.to_string(),
        reader: &reader,
        parameters,
        variables: Vec::new(),
    };
    lockgate_pipeline::compile(&input)
}

/// Compiles a single in-memory file.
pub fn compile_text(text: &str) -> CompileOutput {
    let reader = MemoryReader(vec![("azure-pipelines.yml".into(), text.to_string())]);
    let input = CompileInput {
        entry: "azure-pipelines.yml".into(),
        reader: &reader,
        parameters: Vec::new(),
        variables: Vec::new(),
    };
    lockgate_pipeline::compile(&input)
}
