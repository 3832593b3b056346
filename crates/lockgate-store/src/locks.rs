//! The queue of an environment's exclusive lock, decided the same way by every backend: the
//! backend reads the requests (with what it knows of their runs) inside a transaction, this module
//! says what changes, and the backend writes the changes in the same transaction.
//!
//! After Microsoft's "Define approvals and checks", section "Exclusive lock": only one stage uses
//! the resource at a time; with `lockBehavior: runLatest` (the default) only the latest request
//! proceeds and earlier waiting ones are canceled; with `sequential` every request gets the lock in
//! the order it was made.

use crate::{EnvironmentLock, LockOutcome};

/// A request as the queue sees it, with what the backend knows of its run.
#[derive(Clone, Debug)]
pub(crate) struct Queued {
    pub lock: EnvironmentLock,
    /// The run's number and pipeline (for the reasons given to the runs that give way).
    pub run_number: i64,
    /// The run completed, or (for a holder) its stage has no unfinished job any more.
    pub over: bool,
}

/// One change to write.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Change {
    pub id: i64,
    pub run_id: i64,
    pub status: &'static str,
    pub reason: String,
}

/// What changes in an environment's queue at `now`: `queue` holds its `waiting` and `held`
/// requests, oldest first.
pub(crate) fn settle(queue: &[Queued], now: i64) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut held = false;
    let mut waiting: Vec<&Queued> = Vec::new();
    for entry in queue {
        match entry.lock.status.as_str() {
            "held" if entry.over => changes.push(change(entry, "released", String::new())),
            "held" => held = true,
            "waiting" if entry.over => changes.push(change(entry, "withdrawn", String::new())),
            "waiting"
                if now
                    >= entry
                        .lock
                        .requested_at
                        .saturating_add(entry.lock.timeout_minutes.saturating_mul(60_000)) =>
            {
                let reason = format!(
                    "the exclusive lock of environment `{}` was not free within {} minutes",
                    entry.lock.environment, entry.lock.timeout_minutes
                );
                changes.push(change(entry, "timedOut", reason));
            }
            "waiting" => waiting.push(entry),
            _ => {}
        }
    }
    // A runLatest request gives way to any request made after it.
    let mut remaining: Vec<&Queued> = Vec::new();
    for (index, entry) in waiting.iter().enumerate() {
        let newer = waiting[index + 1..].last();
        match newer {
            Some(newer) if entry.lock.behavior == "runLatest" => {
                let reason = format!(
                    "run #{} asked for the exclusive lock of environment `{}` later \
                     (lockBehavior: runLatest lets only the latest run proceed)",
                    newer.run_number, entry.lock.environment
                );
                changes.push(change(entry, "canceled", reason));
            }
            _ => remaining.push(entry),
        }
    }
    if !held && let Some(first) = remaining.first() {
        changes.push(change(first, "held", String::new()));
    }
    changes
}

/// The outcome for the request of `run_id` (`own`, as stored after the changes).
pub(crate) fn outcome(
    own: EnvironmentLock,
    queue: &[Queued],
    changes: &[Change],
    run_id: i64,
) -> LockOutcome {
    fn status_of<'q>(entry: &'q Queued, changes: &[Change]) -> &'q str {
        changes
            .iter()
            .find(|c| c.id == entry.lock.id)
            .map_or(entry.lock.status.as_str(), |c| c.status)
    }
    let holder = queue
        .iter()
        .find(|e| e.lock.id != own.id && status_of(e, changes) == "held")
        .map(|e| {
            let mut lock = e.lock.clone();
            lock.status = "held".into();
            lock
        });
    let ahead = queue
        .iter()
        .filter(|e| e.lock.id < own.id && status_of(e, changes) == "waiting")
        .count();
    let mut changed_runs: Vec<i64> = changes
        .iter()
        .map(|c| c.run_id)
        .filter(|id| *id != run_id)
        .collect();
    changed_runs.dedup();
    LockOutcome {
        request: own,
        holder,
        ahead,
        changed_runs,
    }
}

fn change(entry: &Queued, status: &'static str, reason: String) -> Change {
    Change {
        id: entry.lock.id,
        run_id: entry.lock.run_id,
        status,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: i64, status: &str, behavior: &str, over: bool) -> Queued {
        Queued {
            lock: EnvironmentLock {
                id,
                project_id: 1,
                environment: "prod".into(),
                run_id: id * 10,
                stage: "Deploy".into(),
                attempt: 1,
                behavior: behavior.into(),
                timeout_minutes: 5,
                status: status.into(),
                reason: String::new(),
                requested_at: 0,
                granted_at: None,
                ended_at: None,
            },
            run_number: id,
            over,
        }
    }

    fn statuses(changes: &[Change]) -> Vec<(i64, &'static str)> {
        changes.iter().map(|c| (c.id, c.status)).collect()
    }

    #[test]
    fn the_oldest_waiting_request_gets_a_free_lock() {
        let queue = [
            entry(1, "waiting", "sequential", false),
            entry(2, "waiting", "sequential", false),
        ];
        assert_eq!(statuses(&settle(&queue, 1)), [(1, "held")]);
    }

    #[test]
    fn nobody_gets_a_held_lock_and_sequential_requests_keep_waiting() {
        let queue = [
            entry(1, "held", "sequential", false),
            entry(2, "waiting", "sequential", false),
            entry(3, "waiting", "sequential", false),
        ];
        assert!(settle(&queue, 1).is_empty());
    }

    #[test]
    fn run_latest_cancels_the_older_waiting_requests_and_names_the_newest_run() {
        let queue = [
            entry(1, "held", "runLatest", false),
            entry(2, "waiting", "runLatest", false),
            entry(3, "waiting", "runLatest", false),
            entry(4, "waiting", "runLatest", false),
        ];
        let changes = settle(&queue, 1);
        assert_eq!(statuses(&changes), [(2, "canceled"), (3, "canceled")]);
        assert!(
            changes[0].reason.contains("run #4"),
            "{}",
            changes[0].reason
        );
    }

    #[test]
    fn a_finished_holder_releases_and_the_next_request_gets_the_lock() {
        let queue = [
            entry(1, "held", "sequential", true),
            entry(2, "waiting", "sequential", false),
            entry(3, "waiting", "sequential", false),
        ];
        assert_eq!(statuses(&settle(&queue, 1)), [(1, "released"), (2, "held")]);
    }

    #[test]
    fn a_request_past_its_timeout_times_out_and_one_of_a_finished_run_is_withdrawn() {
        let queue = [
            entry(1, "held", "sequential", false),
            entry(2, "waiting", "sequential", true),
            entry(3, "waiting", "sequential", false),
        ];
        let changes = settle(&queue, 5 * 60_000);
        assert_eq!(statuses(&changes), [(2, "withdrawn"), (3, "timedOut")]);
        assert!(changes[1].reason.contains("5 minutes"));
    }
}
