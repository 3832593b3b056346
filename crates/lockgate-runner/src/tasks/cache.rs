//! Cache@2 against a local cache folder: the key's segments (`|`-separated) are literal strings or file
//! patterns whose matching files are hashed; an exact hit restores and sets `cacheHitVar` to `true`, a
//! `restoreKeys` prefix hit restores and sets `inexact`; otherwise the path is saved after the job if the job
//! succeeded (docs: pipelines/release/caching).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::events::TaskResult;
use crate::glob::{PatternSet, list_files};
use crate::job::{PostJobAction, StepContext};
use crate::tasks::{Task, TaskError, TaskFuture, TaskRegistry};
use crate::workspace::copy_tree;

pub fn register(registry: &mut TaskRegistry) {
    registry.register("Cache", 2, Arc::new(Cache));
}

/// Resolves a key: file-pattern segments become the hash of the files they match.
pub fn resolve_key(key: &str, sources: &Path) -> Result<String, TaskError> {
    let files = list_files(sources).unwrap_or_default();
    let mut parts = Vec::new();
    for segment in key.split('|').map(str::trim).filter(|s| !s.is_empty()) {
        let patterns = PatternSet::new(&segment.replace(',', "\n"));
        let matched: Vec<&PathBuf> = files
            .iter()
            .filter(|(relative, _)| patterns.matches(relative))
            .map(|(_, path)| path)
            .collect();
        let looks_like_path =
            segment.contains('/') || segment.contains('*') || segment.contains('.');
        if matched.is_empty() || !looks_like_path {
            parts.push(segment.to_string());
            continue;
        }
        let mut hasher = blake3::Hasher::new();
        for path in matched {
            let bytes = std::fs::read(path)
                .map_err(|e| TaskError(format!("cannot hash {}: {e}", path.display())))?;
            hasher.update(
                path.strip_prefix(sources)
                    .unwrap_or(path)
                    .to_string_lossy()
                    .as_bytes(),
            );
            hasher.update(&bytes);
        }
        parts.push(hasher.finalize().to_hex()[..16].to_string());
    }
    Ok(parts.join("|"))
}

fn entry_dir(cache: &Path, resolved: &str) -> PathBuf {
    cache.join(blake3::hash(resolved.as_bytes()).to_hex().to_string())
}

struct Cache;

impl Task for Cache {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let key = step.required_input(&["key"])?.to_string();
            let path = step.resolve_path(step.required_input(&["path"])?);
            let hit_var = step.input("cacheHitVar").map(str::to_string);
            let restore_keys = step.input("restoreKeys").unwrap_or("").to_string();
            let sources = step.job.workspace.sources.clone();
            let cache = step.job.run.cache_dir.clone();
            let resolved = resolve_key(&key, &sources)?;
            step.log(&format!("Resolved cache key: {resolved}"));
            let exact = entry_dir(&cache, &resolved);
            let mut hit = "false";
            if exact.join("content").is_dir() {
                copy_tree(&exact.join("content"), &path, &[])
                    .map_err(|e| TaskError(format!("cannot restore the cache: {e}")))?;
                step.log(&format!("Cache restored from key {resolved}"));
                hit = "true";
            } else {
                for prefix in restore_keys
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                {
                    let prefix = resolve_key(prefix, &sources)?;
                    if let Some(entry) = newest_with_prefix(&cache, &prefix) {
                        copy_tree(&entry.join("content"), &path, &[])
                            .map_err(|e| TaskError(format!("cannot restore the cache: {e}")))?;
                        step.log(&format!("Cache restored from restore key {prefix}"));
                        hit = "inexact";
                        break;
                    }
                }
            }
            if hit == "false" {
                step.log("Cache miss; the path is saved when the job succeeds");
            }
            if hit != "true" {
                step.job.post_job.push(PostJobAction::SaveCache {
                    entry: exact,
                    path,
                    key: resolved,
                });
            }
            if let Some(name) = hit_var {
                step.set_variable(&name, hit, false, false, false);
            }
            Ok(TaskResult::Succeeded)
        })
    }
}

fn newest_with_prefix(cache: &Path, prefix: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(cache).ok()?;
    entries
        .flatten()
        .filter(|entry| {
            std::fs::read_to_string(entry.path().join("key"))
                .is_ok_and(|key| key.starts_with(prefix))
                && entry.path().join("content").is_dir()
        })
        .max_by_key(|entry| entry.metadata().and_then(|m| m.modified()).ok())
        .map(|entry| entry.path())
}

/// Saves `path` as the cache entry `entry` (written beside it, then renamed into place).
pub fn save(entry: &Path, path: &Path, key: &str) -> Result<u64, String> {
    if entry.join("content").is_dir() {
        return Ok(0);
    }
    if !path.exists() {
        return Err(format!(
            "the path to cache does not exist: {}",
            path.display()
        ));
    }
    let staging = entry.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let count = copy_tree(path, &staging.join("content"), &[]).map_err(|e| e.to_string())?;
    std::fs::write(staging.join("key"), key).map_err(|e| e.to_string())?;
    match std::fs::rename(&staging, entry) {
        Ok(()) => Ok(count),
        Err(_) if entry.join("content").is_dir() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(0)
        }
        Err(err) => Err(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_matching_files_and_keep_literals() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.lock"), "v1").unwrap();
        let first = resolve_key("cargo | \"$(Agent.OS)\" | Cargo.lock", dir.path()).unwrap();
        assert!(first.starts_with("cargo|\"$(Agent.OS)\"|"), "{first}");
        std::fs::write(dir.path().join("Cargo.lock"), "v2").unwrap();
        let second = resolve_key("cargo | \"$(Agent.OS)\" | Cargo.lock", dir.path()).unwrap();
        assert_ne!(first, second);
        assert_eq!(
            resolve_key("plain|words", dir.path()).unwrap(),
            "plain|words"
        );
    }

    #[test]
    fn save_then_find_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("f"), "x").unwrap();
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        let entry = entry_dir(&cache, "npm|abc");
        assert_eq!(save(&entry, &data, "npm|abc").unwrap(), 1);
        assert_eq!(newest_with_prefix(&cache, "npm|"), Some(entry.clone()));
        assert_eq!(newest_with_prefix(&cache, "pip|"), None);
        assert_eq!(
            save(&entry, &data, "npm|abc").unwrap(),
            0,
            "an existing entry is kept"
        );
    }
}
