-- Approval checks on environments (owned by the project's administrators, not by pipeline
-- authors), the approvals a run's stages wait for, and every decision taken on them (the audit
-- trail). Azure Pipelines' "Define approvals and checks": approvers, minimum number of approvals,
-- whether the requester may approve, instructions and a timeout that rejects.
CREATE TABLE approval_checks (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    environment TEXT NOT NULL,
    approvers TEXT NOT NULL,
    min_approvals INTEGER NOT NULL,
    allow_requester INTEGER NOT NULL DEFAULT 0,
    instructions TEXT NOT NULL DEFAULT '',
    timeout_minutes INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE UNIQUE INDEX approval_checks_environment
    ON approval_checks (project_id, environment COLLATE NOCASE);

CREATE TABLE approvals (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    stage TEXT NOT NULL,
    environment TEXT NOT NULL,
    check_id INTEGER NOT NULL,
    approvers TEXT NOT NULL,
    min_approvals INTEGER NOT NULL,
    allow_requester INTEGER NOT NULL,
    instructions TEXT NOT NULL,
    timeout_minutes INTEGER NOT NULL,
    status TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    decided_at INTEGER
);

CREATE UNIQUE INDEX approvals_once ON approvals (run_id, stage, check_id);

CREATE TABLE approval_decisions (
    id INTEGER PRIMARY KEY,
    approval_id INTEGER NOT NULL REFERENCES approvals(id) ON DELETE CASCADE,
    user_name TEXT NOT NULL,
    approve INTEGER NOT NULL,
    comment TEXT NOT NULL,
    decided_at INTEGER NOT NULL
);
