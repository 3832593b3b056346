-- Environments as objects (created on first use by a deployment job, or through the API), their owners,
-- and the deployment ledger: one row per deployment job attempt, with what it deployed (commit, artifact
-- names and digests, the job's variables with secrets redacted) and how it ended. Names are unique per
-- project ignoring case, as job rows refer to them by the name the YAML spells.
CREATE TABLE environments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
);
CREATE UNIQUE INDEX environments_name ON environments (project_id, name COLLATE NOCASE);

CREATE TABLE environment_owners (
    environment_id INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    user_name TEXT NOT NULL,
    PRIMARY KEY (environment_id, user_name)
);

CREATE TABLE deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    environment_id INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    pipeline_id INTEGER NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    stage_name TEXT NOT NULL,
    job_name TEXT NOT NULL,
    resource_name TEXT,
    source_commit TEXT NOT NULL,
    source_branch TEXT NOT NULL,
    artifacts TEXT NOT NULL DEFAULT '[]',
    variables TEXT NOT NULL DEFAULT '{}',
    requested_by TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    UNIQUE (job_id, attempt)
);
CREATE INDEX deployments_by_environment ON deployments (environment_id, id);
CREATE INDEX deployments_by_pipeline ON deployments (pipeline_id, environment_id, id);

-- Environments and finished deployments that job rows already name (deployments before the ledger
-- existed: no artifacts or variables were kept for them).
INSERT INTO environments (project_id, name, description, created_at, created_by)
SELECT p.project_id, MIN(j.environment), '', MIN(j.queued_at), ''
FROM jobs j JOIN runs r ON r.id = j.run_id JOIN pipelines p ON p.id = r.pipeline_id
WHERE j.environment IS NOT NULL
GROUP BY p.project_id, j.environment COLLATE NOCASE;

INSERT INTO deployments (environment_id, run_id, job_id, attempt, pipeline_id, stage_name, job_name,
    source_commit, source_branch, requested_by, status, result, started_at, finished_at)
SELECT e.id, r.id, j.id, j.attempt, r.pipeline_id, j.stage_name, j.name, r.source_commit,
    r.source_branch, r.requested_by, j.status, CASE WHEN j.status = 'completed' THEN j.result END,
    j.started_at, j.finished_at
FROM jobs j JOIN runs r ON r.id = j.run_id JOIN pipelines p ON p.id = r.pipeline_id
JOIN environments e ON e.project_id = p.project_id AND e.name = j.environment COLLATE NOCASE
WHERE j.environment IS NOT NULL AND j.started_at IS NOT NULL;

-- Whichever way a job completes (its agent finishes it, its lease expires, the server that ran it
-- stopped, a cancel), its running deployment completes with it, in the same statement.
CREATE TRIGGER deployments_complete_with_their_job AFTER UPDATE OF status ON jobs
WHEN NEW.status = 'completed'
BEGIN
    UPDATE deployments SET status = 'completed', result = NEW.result, finished_at = NEW.finished_at
    WHERE job_id = NEW.id AND status = 'running';
END;
