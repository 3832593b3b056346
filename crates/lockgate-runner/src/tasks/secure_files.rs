//! `DownloadSecureFile@1` (docs: tasks/reference/download-secure-file-v1): puts a secure file of the
//! library into `$(Agent.TempDirectory)`, sets the output variable `secureFilePath` of the step
//! (`$(name.secureFilePath)`) and removes the file when the job ends, whatever its result. Where
//! the content comes from is the run's business: an agent fetched the job's secure files from its
//! server before the job started, `lockgate run` takes `--secure-file NAME=PATH`.

use std::path::Path;
use std::sync::Arc;

use crate::events::TaskResult;
use crate::job::StepContext;
use crate::tasks::{Task, TaskError, TaskFuture, TaskRegistry};

pub fn register(registry: &mut TaskRegistry) {
    registry.register("DownloadSecureFile", 1, Arc::new(DownloadSecureFile));
}

struct DownloadSecureFile;

impl Task for DownloadSecureFile {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let name = step.required_input(&["secureFile"])?.trim().to_string();
            let source = step
                .job
                .run
                .secure_files
                .iter()
                .find(|(known, _)| known.eq_ignore_ascii_case(&name))
                .map(|(_, path)| path.clone())
                .ok_or_else(|| TaskError(missing_message(step, &name)))?;
            let file_name = Path::new(&name)
                .file_name()
                .filter(|n| !n.is_empty() && *n != "." && *n != "..")
                .ok_or_else(|| TaskError(format!("secure file name `{name}` is not a file name")))?
                .to_owned();
            let target = step.job.workspace.temp.join(file_name);
            copy_private(&source, &target).map_err(|e| {
                TaskError(format!(
                    "cannot write secure file `{name}` to {}: {e}",
                    target.display()
                ))
            })?;
            step.job.removals.push(target.clone());
            let path = target.to_string_lossy().into_owned();
            step.log(&format!("Downloaded secure file `{name}` to {path}"));
            if step.step_name.is_some() {
                step.set_variable("secureFilePath", &path, false, true, false);
            }
            Ok(TaskResult::Succeeded)
        })
    }
}

fn missing_message(step: &StepContext<'_, '_>, name: &str) -> String {
    if step.job.run.self_remote.is_some() {
        format!(
            "secure file `{name}` was not given to this job: upload it to the project's library (`lockgate secure-files upload {name} FILE`)"
        )
    } else {
        format!(
            "secure file `{name}` is not available locally: pass --secure-file {name}=PATH to `lockgate run`"
        )
    }
}

/// Copies `from` to `to` readable by its owner only.
fn copy_private(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let content = std::fs::read(from)?;
    let _ = std::fs::remove_file(to);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    file.write_all(&content)?;
    file.sync_all()
}
