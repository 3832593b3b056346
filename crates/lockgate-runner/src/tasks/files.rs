//! File tasks: CopyFiles@2 and DeleteFiles@1, with the tasks' match-pattern inputs (one pattern per line,
//! `!` excludes, `**` any depth). Inputs and defaults from the task reference pages (docs:
//! tasks/reference/copy-files-v2, delete-files-v1).

use std::path::Path;
use std::sync::Arc;

use crate::events::TaskResult;
use crate::glob::{PatternSet, list_files};
use crate::job::StepContext;
use crate::tasks::{Task, TaskError, TaskFuture, TaskRegistry};

pub fn register(registry: &mut TaskRegistry) {
    // CopyFiles@1 has the inputs of @2 that matter here (SourceFolder, Contents, TargetFolder,
    // CleanTargetFolder, OverWrite, flattenFolders; "Copy files" task reference).
    registry.register("CopyFiles", 1, Arc::new(CopyFiles));
    registry.register("CopyFiles", 2, Arc::new(CopyFiles));
    registry.register("DeleteFiles", 1, Arc::new(DeleteFiles));
}

fn io_error(action: &str, path: &Path, err: std::io::Error) -> TaskError {
    TaskError(format!("{action} {}: {err}", path.display()))
}

struct CopyFiles;

impl Task for CopyFiles {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let source = match step.input_any(&["SourceFolder", "sourceFolder"]) {
                Some(dir) => step.resolve_path(dir),
                None => step.job.workspace.sources.clone(),
            };
            let contents = step
                .input_any(&["Contents", "contents"])
                .unwrap_or("**")
                .to_string();
            let target = step.resolve_path(step.required_input(&["TargetFolder", "targetFolder"])?);
            let clean = step.input_bool(&["CleanTargetFolder", "cleanTargetFolder"], false)?;
            let overwrite = step.input_bool(&["OverWrite", "overWrite"], false)?;
            let flatten = step.input_bool(&["flattenFolders"], false)?;
            if !source.is_dir() {
                return Err(TaskError(format!(
                    "source folder not found: {}",
                    source.display()
                )));
            }
            if clean && target.exists() {
                std::fs::remove_dir_all(&target)
                    .map_err(|e| io_error("cannot clean", &target, e))?;
            }
            std::fs::create_dir_all(&target).map_err(|e| io_error("cannot create", &target, e))?;
            let patterns = PatternSet::new(&contents);
            let files = list_files(&source).map_err(|e| io_error("cannot list", &source, e))?;
            let mut copied = 0;
            let mut skipped = 0;
            for (relative, path) in files {
                if !patterns.matches(&relative) || path.starts_with(&target) {
                    continue;
                }
                let destination = if flatten {
                    target.join(path.file_name().unwrap_or_default())
                } else {
                    lockgate_artifacts::safe_join(&target, &relative)
                        .ok_or_else(|| TaskError(format!("unsafe path {relative}")))?
                };
                if destination.exists() && !overwrite {
                    step.log(&format!(
                        "File {} already exists at {}; skipped (OverWrite is false)",
                        relative,
                        destination.display()
                    ));
                    skipped += 1;
                    continue;
                }
                if let Some(parent) = destination.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| io_error("cannot create", parent, e))?;
                }
                std::fs::copy(&path, &destination)
                    .map_err(|e| io_error("cannot copy", &path, e))?;
                copied += 1;
            }
            step.log(&format!(
                "Copied {copied} files from {} to {} ({skipped} skipped)",
                source.display(),
                target.display()
            ));
            Ok(TaskResult::Succeeded)
        })
    }
}

struct DeleteFiles;

impl Task for DeleteFiles {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let source = match step.input_any(&["SourceFolder", "sourceFolder"]) {
                Some(dir) => step.resolve_path(dir),
                None => step.job.workspace.sources.clone(),
            };
            let contents = step.required_input(&["Contents", "contents"])?.to_string();
            let remove_source = step.input_bool(&["RemoveSourceFolder"], false)?;
            let remove_dot_files = step.input_bool(&["RemoveDotFiles"], false)?;
            if !source.exists() {
                step.log(&format!(
                    "{} does not exist; nothing to delete",
                    source.display()
                ));
                return Ok(TaskResult::Succeeded);
            }
            let patterns = PatternSet::new(&contents);
            let mut deleted = 0;
            // Whole folders that match go at once; then files.
            let mut dirs = Vec::new();
            let mut stack = vec![source.clone()];
            while let Some(dir) = stack.pop() {
                let entries =
                    std::fs::read_dir(&dir).map_err(|e| io_error("cannot list", &dir, e))?;
                for entry in entries.flatten() {
                    let path = entry.path();
                    let relative = path
                        .strip_prefix(&source)
                        .unwrap_or(&path)
                        .to_string_lossy()
                        .replace('\\', "/");
                    let hidden = relative.split('/').any(|part| part.starts_with('.'));
                    if hidden
                        && !remove_dot_files
                        && !contents.contains("/.")
                        && !contents.starts_with('.')
                    {
                        continue;
                    }
                    let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                    if patterns.matches(&relative) {
                        if is_dir {
                            dirs.push(path);
                        } else {
                            std::fs::remove_file(&path)
                                .map_err(|e| io_error("cannot delete", &path, e))?;
                            deleted += 1;
                        }
                    } else if is_dir {
                        stack.push(path);
                    }
                }
            }
            for dir in dirs {
                std::fs::remove_dir_all(&dir).map_err(|e| io_error("cannot delete", &dir, e))?;
                deleted += 1;
            }
            if remove_source {
                std::fs::remove_dir_all(&source)
                    .map_err(|e| io_error("cannot delete", &source, e))?;
            }
            step.log(&format!(
                "Deleted {deleted} files and folders under {}",
                source.display()
            ));
            Ok(TaskResult::Succeeded)
        })
    }
}
