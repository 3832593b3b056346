-- Approvals are asked per stage attempt and may be required in sequence; as
-- migrations/sqlite/0013_approval_attempts.sql.
ALTER TABLE approval_checks ADD COLUMN in_sequence BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE approvals ADD COLUMN in_sequence BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE approvals ADD COLUMN attempt BIGINT NOT NULL DEFAULT 1;
DROP INDEX approvals_once;
CREATE UNIQUE INDEX approvals_once ON approvals (run_id, stage, attempt, check_id);
