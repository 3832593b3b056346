-- Approvals are asked per stage attempt (a rerun or a redeploy of a stage asks again, as Azure's
-- checks do per `Checks.StageAttempt`), and may be required in sequence (each approver in the order
-- listed).
ALTER TABLE approval_checks ADD COLUMN in_sequence INTEGER NOT NULL DEFAULT 0;
ALTER TABLE approvals ADD COLUMN in_sequence INTEGER NOT NULL DEFAULT 0;
ALTER TABLE approvals ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
DROP INDEX approvals_once;
CREATE UNIQUE INDEX approvals_once ON approvals (run_id, stage, attempt, check_id);
