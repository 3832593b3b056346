//! The folders of one job, laid out like the agent's `_work/<n>/` (docs: pipelines/build/variables and the
//! agent's jobdirectories.md): `s` sources, `a` artifact staging, `b` binaries, `TestResults`, plus the
//! job's own temp, tool and home folders so that concurrent local jobs never share scratch space or caches.

use std::io;
use std::path::{Path, PathBuf};

/// Paths of a job's workspace (`Pipeline.Workspace` is `root`).
#[derive(Debug, Clone)]
pub struct JobWorkspace {
    pub root: PathBuf,
    pub sources: PathBuf,
    pub artifact_staging: PathBuf,
    pub binaries: PathBuf,
    pub test_results: PathBuf,
    pub temp: PathBuf,
    pub tools: PathBuf,
    /// The job's own `HOME` (created at job start unless the run shares the user's HOME).
    pub home: PathBuf,
}

impl JobWorkspace {
    /// The layout under `root` (nothing created).
    pub fn at(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            sources: root.join("s"),
            artifact_staging: root.join("a"),
            binaries: root.join("b"),
            test_results: root.join("TestResults"),
            temp: root.join("_temp"),
            tools: root.join("_tool"),
            home: root.join("home"),
        }
    }

    /// Creates the folders; `clean` (`workspace.clean`: `outputs`, `resources`, `all`) empties the
    /// matching ones first, as the agent does for a reused workspace.
    pub fn create(root: &Path, clean: Option<&str>) -> io::Result<Self> {
        let workspace = Self::at(root);
        match clean.map(str::to_ascii_lowercase).as_deref() {
            Some("all") => remove_dir_if_exists(&workspace.root)?,
            Some("resources") => remove_dir_if_exists(&workspace.sources)?,
            Some("outputs") => remove_dir_if_exists(&workspace.binaries)?,
            _ => {}
        }
        for dir in [
            &workspace.sources,
            &workspace.artifact_staging,
            &workspace.binaries,
            &workspace.test_results,
            &workspace.temp,
            &workspace.tools,
        ] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(workspace)
    }
}

fn remove_dir_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Copies a directory tree (files, folders, symlinks kept as links), leaving out the paths in `skip`
/// (such as a run's own work folder inside the tree being copied).
pub fn copy_tree(from: &Path, to: &Path, skip: &[&Path]) -> io::Result<u64> {
    let mut copied = 0;
    std::fs::create_dir_all(to)?;
    let mut stack = vec![(from.to_path_buf(), to.to_path_buf())];
    while let Some((src, dst)) = stack.pop() {
        for entry in std::fs::read_dir(&src)? {
            let entry = entry?;
            let name = entry.file_name();
            if skip.iter().any(|skipped| entry.path() == *skipped) {
                continue;
            }
            let kind = entry.file_type()?;
            let target = dst.join(&name);
            if kind.is_dir() {
                std::fs::create_dir_all(&target)?;
                stack.push((entry.path(), target));
            } else if kind.is_symlink() {
                copy_symlink(&entry.path(), &target)?;
            } else {
                std::fs::copy(entry.path(), &target)?;
                copied += 1;
            }
        }
    }
    Ok(copied)
}

#[cfg(unix)]
fn copy_symlink(src: &Path, dst: &Path) -> io::Result<()> {
    let link = std::fs::read_link(src)?;
    let _ = std::fs::remove_file(dst);
    std::os::unix::fs::symlink(link, dst)
}

#[cfg(not(unix))]
fn copy_symlink(src: &Path, dst: &Path) -> io::Result<()> {
    std::fs::copy(src, dst).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_lays_out_the_agent_folders_and_cleans_on_request() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = JobWorkspace::create(&tmp.path().join("1"), None).unwrap();
        for dir in [
            &ws.sources,
            &ws.artifact_staging,
            &ws.binaries,
            &ws.test_results,
            &ws.temp,
        ] {
            assert!(dir.is_dir(), "{}", dir.display());
        }
        std::fs::write(ws.binaries.join("old"), "x").unwrap();
        std::fs::write(ws.sources.join("keep"), "x").unwrap();
        let ws = JobWorkspace::create(&tmp.path().join("1"), Some("outputs")).unwrap();
        assert!(!ws.binaries.join("old").exists());
        assert!(ws.sources.join("keep").exists());
    }

    #[test]
    fn copy_tree_skips_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("a/.git")).unwrap();
        std::fs::write(src.join("a/f.txt"), "f").unwrap();
        std::fs::write(src.join("a/.git/HEAD"), "x").unwrap();
        let n = copy_tree(&src, &tmp.path().join("dst"), &[&src.join("a/.git")]).unwrap();
        assert_eq!(n, 1);
        assert!(tmp.path().join("dst/a/f.txt").exists());
        assert!(!tmp.path().join("dst/a/.git").exists());
    }
}
