//! Compiled pipelines by (pipeline, commit, file path), so that viewing a pipeline's page again does
//! not compile it again. A commit's files never change, so an entry never goes stale; a push moves the
//! branch to a new commit, which is a new key and a fresh compile. Bounded: past [`CAPACITY`] entries
//! the least recently used one is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lockgate_pipeline::CompileOutput;

/// Most compiled pipelines kept in memory.
pub const CAPACITY: usize = 64;

/// (pipeline id, commit sha, entry file path).
type Key = (i64, String, String);

#[derive(Default)]
pub struct CompileCache {
    entries: Mutex<Entries>,
    compiles: AtomicU64,
}

#[derive(Default)]
struct Entries {
    map: HashMap<Key, (Arc<CompileOutput>, u64)>,
    /// Counts look-ups; an entry's number is when it was last used.
    clock: u64,
}

impl CompileCache {
    /// The cached result for the key, marked as just used.
    pub fn get(&self, pipeline: i64, commit: &str, path: &str) -> Option<Arc<CompileOutput>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.clock += 1;
        let now = entries.clock;
        let key = (pipeline, commit.to_string(), path.to_string());
        let (output, used) = entries.map.get_mut(&key)?;
        *used = now;
        Some(output.clone())
    }

    /// Stores a fresh compile (counted by [`CompileCache::compiles`]), dropping the least recently
    /// used entry when full.
    pub fn insert(
        &self,
        pipeline: i64,
        commit: &str,
        path: &str,
        output: CompileOutput,
    ) -> Arc<CompileOutput> {
        self.compiles.fetch_add(1, Ordering::Relaxed);
        let output = Arc::new(output);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.clock += 1;
        let now = entries.clock;
        let key = (pipeline, commit.to_string(), path.to_string());
        if entries.map.len() >= CAPACITY
            && !entries.map.contains_key(&key)
            && let Some(oldest) = entries
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            entries.map.remove(&oldest);
        }
        entries.map.insert(key, (output.clone(), now));
        output
    }

    /// How many compiles were stored since the server started (for tests and diagnostics).
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    /// How many compiled pipelines are held.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_capacity_entries_and_drops_the_least_recently_used() {
        let cache = CompileCache::default();
        for i in 0..CAPACITY as i64 {
            cache.insert(i, "c1", "azure-pipelines.yml", CompileOutput::default());
        }
        // Pipeline 0 is used again, so pipeline 1 is now the least recently used.
        assert!(cache.get(0, "c1", "azure-pipelines.yml").is_some());
        cache.insert(999, "c1", "azure-pipelines.yml", CompileOutput::default());
        assert_eq!(cache.len(), CAPACITY);
        assert!(cache.get(0, "c1", "azure-pipelines.yml").is_some());
        assert!(cache.get(1, "c1", "azure-pipelines.yml").is_none());
        assert!(cache.get(999, "c1", "azure-pipelines.yml").is_some());
        // Another commit or another file is another entry.
        assert!(cache.get(0, "c2", "azure-pipelines.yml").is_none());
        assert!(cache.get(0, "c1", "other.yml").is_none());
        assert_eq!(cache.compiles(), CAPACITY as u64 + 1);
    }
}
