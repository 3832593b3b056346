-- Agents on other machines: each belongs to a pool (server-wide, or of one project when `project_id` is set),
-- reports its operating system, version and capabilities (a JSON object of name to value) and can be disabled
-- (drained: it finishes its job but leases no other). Built-in agents are in the pool `default`.
ALTER TABLE agents ADD COLUMN pool TEXT NOT NULL DEFAULT 'default';
ALTER TABLE agents ADD COLUMN project_id INTEGER REFERENCES projects(id) ON DELETE CASCADE;
ALTER TABLE agents ADD COLUMN enabled BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE agents ADD COLUMN os TEXT;
ALTER TABLE agents ADD COLUMN version TEXT;
ALTER TABLE agents ADD COLUMN capabilities TEXT NOT NULL DEFAULT '{}';

-- The pool a job asks for (NULL: the default pool) and its demands, one a line (`name` or
-- `name -equals value`, macros expanded when the job was created).
ALTER TABLE jobs ADD COLUMN pool TEXT;
ALTER TABLE jobs ADD COLUMN demands TEXT NOT NULL DEFAULT '';

-- One-time registration tokens an administrator hands to a machine: `lockgate agent register` trades one for
-- an agent token. Stored hashed; used once (`used_at`), unusable after `expires_at`.
CREATE TABLE agent_registrations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash TEXT NOT NULL UNIQUE,
    pool TEXT NOT NULL,
    project_id INTEGER REFERENCES projects(id) ON DELETE CASCADE,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    used_by_agent TEXT
);
