-- Environment resources (Azure's "virtual machine resources"): an agent registered with `--environment ENV --tags
-- a,b` is a target of that environment (`environment_id`) with its tags (one a line), and leases only the
-- deployment jobs pinned to it. A registration token for an environment names it (`environment_id`; its `pool`
-- holds the environment's name). A job pinned to targets says which in `target` (JSON: environment id, tags,
-- resource name).
ALTER TABLE agent_registrations ADD COLUMN environment_id INTEGER REFERENCES environments(id) ON DELETE CASCADE;
ALTER TABLE agents ADD COLUMN environment_id INTEGER REFERENCES environments(id) ON DELETE CASCADE;
ALTER TABLE agents ADD COLUMN tags TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN target TEXT;
