//! The steps that are not tasks: `checkout` (a copy of the working tree, uncommitted changes included, the
//! user's tree never touched), `publish` and `download`.

use std::path::{Path, PathBuf};

use crate::events::TaskResult;
use crate::job::StepContext;
use crate::tasks::TaskError;
use crate::tasks::artifacts::{download_artifacts, publish_path};
use crate::workspace::copy_tree;

/// An input the orchestrator adds to the job's only checkout step: that checkout's folder becomes the
/// sources directory.
pub const ONLY_CHECKOUT: &str = "lockgate.onlyCheckout";

/// `checkout: self | none | <alias>`. `path:` is relative to `$(Pipeline.Workspace)`
/// (Agent.BuildDirectory) and may not leave it ("Check out multiple repositories", checkout path). When
/// the job has one checkout (or the step says `workspaceRepo: true`), later steps run in its folder:
/// with one checkout `Build.SourcesDirectory`, `Build.Repository.LocalPath` and
/// `System.DefaultWorkingDirectory` follow a custom `path:`, as on an Azure agent.
pub async fn checkout(
    step: &mut StepContext<'_, '_>,
    repository: &str,
) -> Result<TaskResult, TaskError> {
    if repository.eq_ignore_ascii_case("none") {
        step.log("Checkout is disabled for this job (checkout: none)");
        return Ok(TaskResult::Succeeded);
    }
    let source = if repository.eq_ignore_ascii_case("self") {
        step.job.run.self_repository.clone().ok_or_else(|| {
            TaskError("checkout: self needs the pipeline to be inside a repository folder".into())
        })?
    } else {
        step.job.run.repositories.get(repository).cloned().ok_or_else(|| {
            TaskError(format!("repository `{repository}` is not mapped to a folder; pass --repo {repository}=DIR"))
        })?
    };
    let target = match step.input("path") {
        Some(path) => {
            let relative = Path::new(path);
            let escapes = relative.components().any(|c| {
                !matches!(
                    c,
                    std::path::Component::Normal(_) | std::path::Component::CurDir
                )
            });
            if escapes || path.trim().is_empty() {
                return Err(TaskError(format!(
                    "checkout: path `{path}` must be a relative folder under $(Pipeline.Workspace) ({}), without `..`",
                    step.job.workspace.root.display()
                )));
            }
            step.job.workspace.root.join(relative)
        }
        None => step.job.workspace.sources.clone(),
    };
    let only = step.input(ONLY_CHECKOUT).is_some_and(|v| v == "true");
    let workspace_repo = step
        .input("workspacerepo")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if target.exists() {
        std::fs::remove_dir_all(&target)
            .map_err(|err| TaskError(format!("cannot clean {}: {err}", target.display())))?;
    }
    step.log(&format!(
        "Copying {} to {}",
        source.display(),
        target.display()
    ));
    // A work folder inside the tree being copied (`--work-dir .lockgate`) is left out.
    let work_base = step
        .job
        .run
        .run_dir
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf);
    let copied = copy_working_tree(&source, &target, work_base.as_deref()).await?;
    step.log(&format!("Checked out {copied} files"));
    if repository.eq_ignore_ascii_case("self")
        && let Some(remote) = step.job.run.self_remote.clone()
        && target.join(".git").exists()
    {
        let persist = step.input_bool(&["persistCredentials"], false)?;
        point_origin(&target, &remote, persist).await?;
        if persist {
            step.log("Persisted the job's access token in the repository's git config (persistCredentials)");
        }
    }
    if (only || workspace_repo) && target != step.job.workspace.sources {
        let shown = target.display().to_string();
        if only {
            step.job
                .variables
                .set_system("Build.SourcesDirectory", shown.clone());
            step.job
                .variables
                .set_system("Build.Repository.LocalPath", shown.clone());
        }
        step.job
            .variables
            .set_system("System.DefaultWorkingDirectory", shown);
        step.job.workspace.sources = target;
    }
    Ok(TaskResult::Succeeded)
}

/// Points the checked-out copy's `origin` at the hosted repository; with `persist`, also keeps the
/// job's token as an HTTP header in its git config (Azure's `persistCredentials`: "leave the OAuth
/// token in the Git config after the initial fetch"), so a later `git push` authenticates.
async fn point_origin(
    target: &Path,
    remote: &crate::job::SelfRemote,
    persist: bool,
) -> Result<(), TaskError> {
    let dir = target.display().to_string();
    let run = |args: Vec<String>| async move {
        let output = tokio::process::Command::new("git")
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|err| TaskError(format!("checkout: cannot run git: {err}")))?;
        Ok::<bool, TaskError>(output.status.success())
    };
    let set = run(vec![
        "-C".into(),
        dir.clone(),
        "remote".into(),
        "set-url".into(),
        "origin".into(),
        remote.url.clone(),
    ])
    .await?;
    if !set {
        run(vec![
            "-C".into(),
            dir.clone(),
            "remote".into(),
            "add".into(),
            "origin".into(),
            remote.url.clone(),
        ])
        .await?;
    }
    if persist {
        let header = format!("AUTHORIZATION: Bearer {}", remote.token);
        let ok = run(vec![
            "-C".into(),
            dir,
            "config".into(),
            "--local".into(),
            format!("http.{}.extraheader", remote.url),
            header,
        ])
        .await?;
        if !ok {
            return Err(TaskError(
                "checkout: cannot keep the access token in the git config".into(),
            ));
        }
    }
    Ok(())
}

/// Makes `target` a copy of the working tree at `source`. For a Git repository: a local clone (so `git`
/// commands work in the copy) with the tracked and untracked-but-not-ignored files of the working tree laid
/// over it, and files deleted in the working tree deleted. Otherwise a plain recursive copy.
pub async fn copy_working_tree(
    source: &Path,
    target: &Path,
    exclude: Option<&Path>,
) -> Result<usize, TaskError> {
    let fail = |what: &str, err: String| TaskError(format!("checkout: {what}: {err}"));
    if !source.join(".git").exists() {
        let count = copy_tree(source, target, exclude.as_slice())
            .map_err(|err| fail("copying", err.to_string()))?;
        return Ok(count as usize);
    }
    let git = |args: Vec<String>| async move {
        let output = tokio::process::Command::new("git")
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|err| format!("cannot run git: {err}"))?;
        if output.status.success() {
            Ok(output.stdout)
        } else {
            Err(format!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    };
    let src = source.display().to_string();
    let dst = target.display().to_string();
    let has_head = git(vec![
        "-C".into(),
        src.clone(),
        "rev-parse".into(),
        "--verify".into(),
        "-q".into(),
        "HEAD".into(),
    ])
    .await
    .is_ok();
    if has_head {
        git(vec![
            "clone".into(),
            "--quiet".into(),
            "--shared".into(),
            src.clone(),
            dst.clone(),
        ])
        .await
        .map_err(|err| fail("cloning", err))?;
        // A detached HEAD in the source is checked out as the same commit.
        let head = git(vec![
            "-C".into(),
            src.clone(),
            "rev-parse".into(),
            "HEAD".into(),
        ])
        .await
        .map_err(|err| fail("reading HEAD", err))?;
        let head = String::from_utf8_lossy(&head).trim().to_string();
        git(vec![
            "-C".into(),
            dst.clone(),
            "checkout".into(),
            "--quiet".into(),
            "--detach".into(),
            head,
        ])
        .await
        .map_err(|err| fail("checking out HEAD", err))?;
    } else {
        std::fs::create_dir_all(target).map_err(|err| fail("creating", err.to_string()))?;
        git(vec!["init".into(), "--quiet".into(), dst.clone()])
            .await
            .map_err(|err| fail("git init", err))?;
    }
    let listing = git(vec![
        "-C".into(),
        src,
        "ls-files".into(),
        "-z".into(),
        "--cached".into(),
        "--others".into(),
        "--exclude-standard".into(),
    ])
    .await
    .map_err(|err| fail("listing files", err))?;
    let mut count = 0;
    for relative in listing.split(|b| *b == 0).filter(|name| !name.is_empty()) {
        let relative = String::from_utf8_lossy(relative).into_owned();
        let Some(from) = lockgate_artifacts::safe_join(source, &relative) else {
            continue;
        };
        if exclude.is_some_and(|excluded| from.starts_with(excluded)) {
            continue;
        }
        let Some(to) = lockgate_artifacts::safe_join(target, &relative) else {
            continue;
        };
        match std::fs::symlink_metadata(&from) {
            Err(_) => {
                // Deleted in the working tree.
                let _ = std::fs::remove_file(&to);
            }
            Ok(meta) if meta.is_dir() => {} // a submodule or nested repository
            Ok(meta) => {
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|err| fail("creating", err.to_string()))?;
                }
                if meta.file_type().is_symlink() {
                    copy_link(&from, &to).map_err(|err| fail("copying a link", err.to_string()))?;
                } else if !same_content(&from, &to) {
                    std::fs::copy(&from, &to)
                        .map_err(|err| fail(&format!("copying {relative}"), err.to_string()))?;
                }
                count += 1;
            }
        }
    }
    Ok(count)
}

fn same_content(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(ma), Ok(mb)) if ma.len() == mb.len() => std::fs::read(a).ok() == std::fs::read(b).ok(),
        _ => false,
    }
}

#[cfg(unix)]
fn copy_link(from: &Path, to: &Path) -> std::io::Result<()> {
    let link = std::fs::read_link(from)?;
    let _ = std::fs::remove_file(to);
    std::os::unix::fs::symlink(link, to)
}

#[cfg(not(unix))]
fn copy_link(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::copy(from, to).map(|_| ())
}

/// `publish: path` (PublishPipelineArtifact@1).
pub fn publish(
    step: &mut StepContext<'_, '_>,
    path: &str,
    artifact: Option<&str>,
) -> Result<TaskResult, TaskError> {
    let path = step.resolve_path(path);
    publish_path(step, &path, artifact.unwrap_or("drop"))
}

/// `download: current | none | <alias>` with `artifact`, `patterns` and `path`.
pub fn download(step: &mut StepContext<'_, '_>, source: &str) -> Result<TaskResult, TaskError> {
    if source.eq_ignore_ascii_case("none") {
        step.log("Artifact download is disabled (download: none)");
        return Ok(TaskResult::Succeeded);
    }
    if !source.eq_ignore_ascii_case("current") {
        return Err(TaskError(format!(
            "downloading artifacts of pipeline resource `{source}` is not possible in a local run"
        )));
    }
    let name = step.input("artifact").map(str::to_string);
    let patterns = step.input("patterns").unwrap_or("**").to_string();
    let target: PathBuf = match step.input("path") {
        Some(path) => step.resolve_path(path),
        None => step.job.workspace.root.clone(),
    };
    // The `download` step puts each artifact in a folder named after it under the target
    // (docs: "artifacts are downloaded to $(Pipeline.Workspace)/<artifact name>").
    let per_artifact = step.input("path").is_none() || name.is_none();
    download_artifacts(step, name.as_deref(), &patterns, &target, per_artifact)
}
