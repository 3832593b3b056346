//! Archive tasks: ArchiveFiles@2 (zip natively; tar, tar.gz, tar.bz2, tar.xz through the system `tar`) and
//! ExtractFiles@1 (zip natively, tar formats through `tar`). Inputs from the task reference pages
//! (docs: tasks/reference/archive-files-v2, extract-files-v1).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::events::TaskResult;
use crate::glob::{PatternSet, list_files};
use crate::job::StepContext;
use crate::process::ProcessSpec;
use crate::tasks::{Task, TaskError, TaskFuture, TaskRegistry};

pub fn register(registry: &mut TaskRegistry) {
    registry.register("ArchiveFiles", 2, Arc::new(ArchiveFiles));
    registry.register("ExtractFiles", 1, Arc::new(ExtractFiles));
}

fn err(action: &str, path: &Path, error: impl std::fmt::Display) -> TaskError {
    TaskError(format!("{action} {}: {error}", path.display()))
}

/// Writes `files` (archive name, path on disk) into a new zip at `archive`.
pub fn write_zip(archive: &Path, files: &[(String, PathBuf)]) -> Result<(), TaskError> {
    let out = File::create(archive).map_err(|e| err("cannot create", archive, e))?;
    let mut zip = zip::ZipWriter::new(out);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut buffer = Vec::new();
    for (name, path) in files {
        zip.start_file(name.as_str(), options)
            .map_err(|e| err("cannot add", path, e))?;
        buffer.clear();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut buffer))
            .map_err(|e| err("cannot read", path, e))?;
        zip.write_all(&buffer)
            .map_err(|e| err("cannot write", archive, e))?;
    }
    zip.finish().map_err(|e| err("cannot finish", archive, e))?;
    Ok(())
}

/// Extracts a zip under `dest`, refusing entries that would land outside it.
pub fn extract_zip(archive: &Path, dest: &Path) -> Result<usize, TaskError> {
    let file = File::open(archive).map_err(|e| err("cannot open", archive, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| err("not a zip archive:", archive, e))?;
    let mut count = 0;
    for index in 0..zip.len() {
        let mut entry = zip
            .by_index(index)
            .map_err(|e| err("cannot read", archive, e))?;
        let Some(relative) = entry.enclosed_name() else {
            return Err(TaskError(format!(
                "{}: entry `{}` points outside the target folder",
                archive.display(),
                entry.name().unwrap_or_default()
            )));
        };
        let target = dest.join(relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| err("cannot create", &target, e))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err("cannot create", parent, e))?;
        }
        let mut out = File::create(&target).map_err(|e| err("cannot create", &target, e))?;
        std::io::copy(&mut entry, &mut out).map_err(|e| err("cannot write", &target, e))?;
        count += 1;
    }
    Ok(count)
}

struct ArchiveFiles;

impl Task for ArchiveFiles {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let root = step.resolve_path(
                step.input("rootFolderOrFile")
                    .unwrap_or("$(Build.BinariesDirectory)"),
            );
            let root = step.resolve_path(&step.job.variables.expand(&root.display().to_string()));
            let include_root = step.input_bool(&["includeRootFolder"], true)?;
            let kind = step
                .input("archiveType")
                .unwrap_or("zip")
                .to_ascii_lowercase();
            let tar_compression = step
                .input("tarCompression")
                .unwrap_or("gz")
                .to_ascii_lowercase();
            let default_name = format!("$(Build.ArtifactStagingDirectory)/$(Build.BuildId).{kind}");
            let archive = step
                .input("archiveFile")
                .map_or(default_name, str::to_string);
            let archive = step.resolve_path(&step.job.variables.expand(&archive));
            let replace = step.input_bool(&["replaceExistingArchive"], true)?;
            if !root.exists() {
                return Err(TaskError(format!(
                    "rootFolderOrFile not found: {}",
                    root.display()
                )));
            }
            if archive.exists() {
                if !replace {
                    return Err(TaskError(format!(
                        "{} exists and replaceExistingArchive is false (adding to an archive is not supported)",
                        archive.display()
                    )));
                }
                std::fs::remove_file(&archive).map_err(|e| err("cannot replace", &archive, e))?;
            }
            if let Some(parent) = archive.parent() {
                std::fs::create_dir_all(parent).map_err(|e| err("cannot create", parent, e))?;
            }
            let root_name = root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let files: Vec<(String, PathBuf)> = if root.is_dir() {
                list_files(&root)
                    .map_err(|e| err("cannot list", &root, e))?
                    .into_iter()
                    .map(|(relative, path)| {
                        (
                            if include_root {
                                format!("{root_name}/{relative}")
                            } else {
                                relative
                            },
                            path,
                        )
                    })
                    .collect()
            } else {
                vec![(root_name.clone(), root.clone())]
            };
            match kind.as_str() {
                "zip" => write_zip(&archive, &files)?,
                "tar" => {
                    let flag = match tar_compression.as_str() {
                        "gz" => "-z",
                        "bz2" => "-j",
                        "xz" => "-J",
                        "none" => "",
                        other => {
                            return Err(TaskError(format!(
                                "tarCompression `{other}` is not one of gz, bz2, xz, none"
                            )));
                        }
                    };
                    let (dir, entries) = if root.is_dir() && !include_root {
                        (root.clone(), vec![".".to_string()])
                    } else {
                        (
                            root.parent()
                                .map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
                            vec![root_name.clone()],
                        )
                    };
                    let mut args = vec!["-c".to_string()];
                    if !flag.is_empty() {
                        args.push(flag.to_string());
                    }
                    args.extend([
                        "-f".to_string(),
                        archive.display().to_string(),
                        "-C".to_string(),
                        dir.display().to_string(),
                    ]);
                    args.extend(entries);
                    let env = step.process_env();
                    let spec = ProcessSpec {
                        program: "tar".into(),
                        args,
                        cwd: step.job.workspace.sources.clone(),
                        env,
                    };
                    if step.run_process(&spec).await? != Ok(0) {
                        return Err(TaskError(format!(
                            "tar could not create {}",
                            archive.display()
                        )));
                    }
                }
                other => {
                    return Err(TaskError(format!(
                        "archiveType `{other}` is not supported locally (zip and tar are)"
                    )));
                }
            }
            step.log(&format!(
                "Created {} ({} files)",
                archive.display(),
                files.len()
            ));
            Ok(TaskResult::Succeeded)
        })
    }
}

struct ExtractFiles;

impl Task for ExtractFiles {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let patterns = step
                .input("archiveFilePatterns")
                .unwrap_or("**/*.zip")
                .to_string();
            let dest = step.resolve_path(step.required_input(&["destinationFolder"])?);
            let clean = step.input_bool(&["cleanDestinationFolder"], true)?;
            if clean && dest.exists() {
                std::fs::remove_dir_all(&dest).map_err(|e| err("cannot clean", &dest, e))?;
            }
            std::fs::create_dir_all(&dest).map_err(|e| err("cannot create", &dest, e))?;
            let sources = step.job.workspace.sources.clone();
            let set = PatternSet::new(&patterns);
            let mut archives: Vec<PathBuf> = Vec::new();
            for line in patterns
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('!'))
            {
                let path = Path::new(line);
                if path.is_absolute() && path.is_file() {
                    archives.push(path.to_path_buf());
                }
            }
            for (relative, path) in
                list_files(&sources).map_err(|e| err("cannot list", &sources, e))?
            {
                if set.matches(&relative) {
                    archives.push(path);
                }
            }
            if archives.is_empty() {
                return Err(TaskError(format!(
                    "no archives match `{}`",
                    patterns.replace('\n', ", ")
                )));
            }
            for archive in archives {
                let name = archive.display().to_string().to_ascii_lowercase();
                if name.ends_with(".zip") || name.ends_with(".jar") || name.ends_with(".nupkg") {
                    let count = extract_zip(&archive, &dest)?;
                    step.log(&format!(
                        "Extracted {count} files from {}",
                        archive.display()
                    ));
                } else if [".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".txz"]
                    .iter()
                    .any(|ext| name.ends_with(ext))
                {
                    let args = vec![
                        "-x".into(),
                        "-f".into(),
                        archive.display().to_string(),
                        "-C".into(),
                        dest.display().to_string(),
                    ];
                    let env = step.process_env();
                    let spec = ProcessSpec {
                        program: "tar".into(),
                        args,
                        cwd: sources.clone(),
                        env,
                    };
                    if step.run_process(&spec).await? != Ok(0) {
                        return Err(TaskError(format!(
                            "tar could not extract {}",
                            archive.display()
                        )));
                    }
                } else {
                    return Err(TaskError(format!(
                        "{}: unsupported archive format (zip and tar are supported)",
                        archive.display()
                    )));
                }
            }
            Ok(TaskResult::Succeeded)
        })
    }
}
