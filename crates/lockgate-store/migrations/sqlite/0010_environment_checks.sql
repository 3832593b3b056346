-- Automatic checks on environments besides approvals (branch control, business hours), one of
-- each kind per environment; `config` is the check's settings as JSON, read by the server.
CREATE TABLE environment_checks (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    environment TEXT NOT NULL,
    kind TEXT NOT NULL,
    config TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE UNIQUE INDEX environment_checks_kind
    ON environment_checks (project_id, environment COLLATE NOCASE, kind);
