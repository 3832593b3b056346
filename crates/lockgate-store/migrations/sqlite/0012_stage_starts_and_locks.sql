-- Manual stages (`trigger: manual`) someone started, once per run and stage.
CREATE TABLE stage_starts (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    stage TEXT NOT NULL,
    started_by TEXT NOT NULL,
    started_at INTEGER NOT NULL
);

CREATE UNIQUE INDEX stage_starts_once ON stage_starts (run_id, stage);

-- The exclusive lock of environments: one request per run, stage (attempt: a rerun asks again)
-- and environment. `status` is
-- `waiting`, `held`, `released` (the holder's stage ended), `canceled` (a newer run took its place:
-- lockBehavior runLatest), `withdrawn` (its stage ended without it) or `timedOut`.
CREATE TABLE environment_locks (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    environment TEXT NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    stage TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    behavior TEXT NOT NULL,
    timeout_minutes INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    requested_at INTEGER NOT NULL,
    granted_at INTEGER,
    ended_at INTEGER
);

CREATE UNIQUE INDEX environment_locks_once
    ON environment_locks (run_id, stage, attempt, environment COLLATE NOCASE);
CREATE INDEX environment_locks_queue
    ON environment_locks (project_id, environment COLLATE NOCASE, status);
