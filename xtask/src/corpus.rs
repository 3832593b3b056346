//! `cargo xtask corpus DIR [--out FILE] [--fail-on-crash]`: validates and plans every entry pipeline
//! of a corpus laid out as `DIR/MANIFEST.tsv` (repo, path, commit, entry, features) with files under
//! `DIR/<owner>__<repo>/`, and classifies each as ok, diagnosed or crash.

use std::path::{Path, PathBuf};

use lockgate_pipeline::{CompileInput, ReadError, SourceReader};

/// Reads files of one corpus repository; other repositories are not available.
struct CorpusReader {
    root: PathBuf,
}

impl SourceReader for CorpusReader {
    fn read(&self, repository: Option<&str>, path: &str) -> Result<String, ReadError> {
        if repository.is_some() {
            return Err(ReadError::RepositoryNotMapped);
        }
        match std::fs::read(self.root.join(path)) {
            Ok(bytes) => String::from_utf8(bytes).map_err(|_| ReadError::Other("not UTF-8".into())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(ReadError::NotFound),
            Err(err) => Err(ReadError::Other(err.to_string())),
        }
    }
}

/// How one entry file fared.
pub enum Outcome {
    Ok,
    Diagnosed(String),
    Crash(String),
}

/// Compiles `entry` of the repository folder `root` with no parameters or predefined variables.
pub fn compile_entry(root: &Path, entry: &str) -> lockgate_pipeline::CompileOutput {
    let reader = CorpusReader {
        root: root.to_path_buf(),
    };
    let input = CompileInput {
        entry: entry.to_string(),
        reader: &reader,
        parameters: Vec::new(),
        variables: Vec::new(),
    };
    lockgate_pipeline::compile(&input)
}

/// Compiles one file under `catch_unwind`, so that a panic is counted instead of ending the run.
pub fn classify(root: &Path, entry: &str) -> Outcome {
    let result = std::panic::catch_unwind(|| compile_entry(root, entry));
    match result {
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            Outcome::Crash(message)
        }
        Ok(output) if output.plan.is_some() => Outcome::Ok,
        Ok(output) => {
            let errors: Vec<String> = output
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(|d| match &d.span {
                    Some(span) => {
                        format!("{} at {}:{}: {}", d.code, span.file, span.line, d.message)
                    }
                    None => format!("{}: {}", d.code, d.message),
                })
                .collect();
            Outcome::Diagnosed(errors.join("; "))
        }
    }
}

pub fn main(args: &[String]) -> anyhow::Result<u8> {
    let mut dir = None;
    let mut out = None;
    let mut fail_on_crash = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--out" => {
                out = Some(
                    iter.next()
                        .ok_or_else(|| anyhow::anyhow!("--out needs a file"))?
                        .clone(),
                )
            }
            "--fail-on-crash" => fail_on_crash = true,
            other if dir.is_none() && !other.starts_with("--") => dir = Some(PathBuf::from(other)),
            other => anyhow::bail!("unexpected argument `{other}`"),
        }
    }
    let dir = dir.ok_or_else(|| {
        anyhow::anyhow!("usage: cargo xtask corpus <DIR> [--out FILE] [--fail-on-crash]")
    })?;
    let manifest_path = dir.join("MANIFEST.tsv");
    let manifest = std::fs::read_to_string(&manifest_path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", manifest_path.display()))?;
    // Silence the default panic message: crashes are reported in the table.
    std::panic::set_hook(Box::new(|_| {}));
    let mut table = String::from("status\tfile\tdetail\n");
    let (mut passed, mut failed, mut crashed) = (0usize, 0usize, 0usize);
    for (number, line) in manifest.lines().enumerate() {
        let columns: Vec<&str> = line.split('\t').collect();
        if number == 0 && columns.first() == Some(&"repo") {
            continue;
        }
        let [repo, path, _commit, entry, ..] = columns.as_slice() else {
            continue;
        };
        if *entry != "yes" {
            continue;
        }
        let root = dir.join(repo.replace('/', "__"));
        let display = format!("{repo}/{path}");
        let (status, detail) = match classify(&root, path) {
            Outcome::Ok => {
                passed += 1;
                ("ok", String::new())
            }
            Outcome::Diagnosed(detail) => {
                failed += 1;
                ("diagnosed", detail)
            }
            Outcome::Crash(message) => {
                failed += 1;
                crashed += 1;
                ("crash", message)
            }
        };
        let row = format!(
            "{status}\t{display}\t{}\n",
            detail.replace(['\t', '\n'], " ")
        );
        print!("{row}");
        table.push_str(&row);
    }
    let _ = std::panic::take_hook();
    let summary = format!("{passed} passed, {failed} failed");
    if let Some(out) = out {
        std::fs::write(&out, format!("{table}{summary}\n"))
            .map_err(|e| anyhow::anyhow!("cannot write {out}: {e}"))?;
    }
    println!("{summary}");
    Ok(if fail_on_crash && crashed > 0 { 1 } else { 0 })
}
