//! Artifact tasks against the run's local content-addressed store: PublishPipelineArtifact@0/@1,
//! DownloadPipelineArtifact@0/@1/@2, PublishBuildArtifacts@1, DownloadBuildArtifacts@0 and @1, and the helpers the
//! `publish`/`download` steps and `##vso[artifact.upload]` share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::events::{Event, TaskResult};
use crate::glob::PatternSet;
use crate::job::StepContext;
use crate::tasks::{Task, TaskError, TaskFuture, TaskRegistry};

pub fn register(registry: &mut TaskRegistry) {
    // Older majors whose inputs are a subset of the current ones (Microsoft task reference pages and the
    // task's v0/v1 task.json): PublishPipelineArtifact@0 takes `artifactName` and `targetPath`;
    // DownloadPipelineArtifact@0/@1 take `artifactName`, `itemPattern` and `downloadPath` (v2 renamed it
    // `targetPath`, keeping `downloadPath` as an alias), which the v2 implementation reads.
    for major in [0, 1] {
        registry.register(
            "PublishPipelineArtifact",
            major,
            Arc::new(PublishArtifact {
                build_artifact: false,
            }),
        );
    }
    for major in [0, 1] {
        registry.register(
            "DownloadPipelineArtifact",
            major,
            Arc::new(DownloadArtifact {
                build_artifact: false,
            }),
        );
    }
    registry.register(
        "PublishBuildArtifacts",
        1,
        Arc::new(PublishArtifact {
            build_artifact: true,
        }),
    );
    registry.register(
        "DownloadPipelineArtifact",
        2,
        Arc::new(DownloadArtifact {
            build_artifact: false,
        }),
    );
    registry.register(
        "DownloadBuildArtifacts",
        0,
        Arc::new(DownloadArtifact {
            build_artifact: true,
        }),
    );
    registry.register(
        "DownloadBuildArtifacts",
        1,
        Arc::new(DownloadArtifact {
            build_artifact: true,
        }),
    );
}

/// Publishes a file or folder as artifact `name` of the run and reports it.
pub fn publish_path(
    step: &mut StepContext<'_, '_>,
    path: &Path,
    name: &str,
) -> Result<TaskResult, TaskError> {
    if !path.exists() {
        return Err(TaskError(format!(
            "path to publish not found: {}",
            path.display()
        )));
    }
    // The name leaves the job (events, the server's artifact list, download URLs): it is masked first,
    // so a name holding a secret is refused (`*` is not a name character) without showing the secret.
    let name = &*step.job.masker.mask(name).into_owned();
    let run = &step.job.run;
    let manifest = run
        .artifacts
        .publish(&run.run_id, name, path)
        .map_err(|err| TaskError(format!("publishing artifact `{name}`: {err}")))?;
    // The event first: an agent uploads the artifact while handling it, so by the time this step
    // logs that it published, the artifact is on the server.
    step.job.sink.event(Event::Artifact {
        job: step.job.id.clone(),
        name: name.to_string(),
        files: manifest.files.len(),
        bytes: manifest.size(),
    });
    step.log(&format!(
        "Published artifact `{name}`: {} files, {} bytes from {}",
        manifest.files.len(),
        manifest.size(),
        path.display()
    ));
    Ok(TaskResult::Succeeded)
}

/// Downloads one artifact, or every artifact of the run when `name` is None (each into a folder named
/// after it), keeping files that match `patterns`.
pub fn download_artifacts(
    step: &mut StepContext<'_, '_>,
    name: Option<&str>,
    patterns: &str,
    target: &Path,
    subfolder_per_artifact: bool,
) -> Result<TaskResult, TaskError> {
    let run = &step.job.run;
    let names = match name {
        Some(name) => vec![name.to_string()],
        None => run
            .artifacts
            .list(&run.run_id)
            .map_err(|err| TaskError(err.to_string()))?,
    };
    let patterns = PatternSet::new(patterns);
    let mut total = 0;
    for artifact in &names {
        let dest: PathBuf = if subfolder_per_artifact {
            target.join(artifact)
        } else {
            target.to_path_buf()
        };
        let count = run
            .artifacts
            .download(&run.run_id, artifact, &dest, &|path| patterns.matches(path))
            .map_err(|err| TaskError(format!("downloading artifact `{artifact}`: {err}")))?;
        step.log(&format!(
            "Downloaded artifact `{artifact}`: {count} files to {}",
            dest.display()
        ));
        total += count;
    }
    if names.is_empty() {
        step.log("No artifacts have been published in this run yet");
    } else if total == 0 {
        step.warning("no files matched the download patterns");
        return Ok(TaskResult::SucceededWithIssues);
    }
    Ok(TaskResult::Succeeded)
}

struct PublishArtifact {
    build_artifact: bool,
}

impl Task for PublishArtifact {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let (path, name) = if self.build_artifact {
                let path = step
                    .input_any(&["PathtoPublish", "pathToPublish"])
                    .unwrap_or("$(Build.ArtifactStagingDirectory)");
                let path = step.job.variables.expand(path);
                (
                    path,
                    step.input_any(&["ArtifactName", "artifactName"])
                        .unwrap_or("drop")
                        .to_string(),
                )
            } else {
                let path = step.input_any(&["targetPath", "path"]).map_or_else(
                    || step.job.variables.expand("$(Pipeline.Workspace)"),
                    str::to_string,
                );
                (
                    path,
                    step.input_any(&["artifact", "artifactName"])
                        .unwrap_or("drop")
                        .to_string(),
                )
            };
            let path = step.resolve_path(&path);
            publish_path(step, &path, &name)
        })
    }
}

struct DownloadArtifact {
    build_artifact: bool,
}

impl Task for DownloadArtifact {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let source = step
                .input_any(&["buildType", "source"])
                .unwrap_or("current")
                .to_ascii_lowercase();
            if source != "current" {
                return Err(TaskError(format!(
                    "downloading artifacts of another pipeline (buildType `{source}`) is not possible in a local run"
                )));
            }
            let name = step
                .input_any(&["artifactName", "artifact"])
                .map(str::to_string);
            let (patterns, target, single_default) = if self.build_artifact {
                let patterns = step.input_any(&["itemPattern"]).unwrap_or("**").to_string();
                let target = step
                    .input_any(&["downloadPath"])
                    .unwrap_or("$(System.ArtifactsDirectory)")
                    .to_string();
                (patterns, target, true)
            } else {
                let patterns = step
                    .input_any(&["itemPattern", "patterns"])
                    .unwrap_or("**")
                    .to_string();
                let target = step
                    .input_any(&["targetPath", "path", "downloadPath"])
                    .unwrap_or("$(Pipeline.Workspace)")
                    .to_string();
                (patterns, target, false)
            };
            let target = step.resolve_path(&step.job.variables.expand(&target));
            // Build artifacts always land in a folder named after the artifact; pipeline artifacts only
            // when all of them are downloaded.
            let per_artifact = single_default || name.is_none();
            download_artifacts(step, name.as_deref(), &patterns, &target, per_artifact)
        })
    }
}
