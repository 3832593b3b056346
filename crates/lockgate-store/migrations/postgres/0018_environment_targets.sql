-- Environment resources: agents as targets of an environment with tags, registration tokens for an
-- environment, jobs pinned to targets; as migrations/sqlite/0018_environment_targets.sql.
ALTER TABLE agent_registrations ADD COLUMN environment_id BIGINT REFERENCES environments(id) ON DELETE CASCADE;
ALTER TABLE agents ADD COLUMN environment_id BIGINT REFERENCES environments(id) ON DELETE CASCADE;
ALTER TABLE agents ADD COLUMN tags TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN target TEXT;
