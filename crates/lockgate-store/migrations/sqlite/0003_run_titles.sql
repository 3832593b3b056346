-- A run's title: the subject of its commit, shown after the run name (`appendCommitMessageToRunName`).
ALTER TABLE runs ADD COLUMN title TEXT NOT NULL DEFAULT '';
