-- Whether an agent is one of the server's built-in agents: set only by the server when it registers its own
-- agents at start, never by `POST /api/v1/agents` (see migrations/sqlite/0009_agent_builtin.sql).
ALTER TABLE agents ADD COLUMN builtin BOOLEAN NOT NULL DEFAULT FALSE;
-- Earlier versions told them apart by name (`built-in-<number>`).
UPDATE agents SET builtin = TRUE WHERE name ~ '^built-in-[0-9]+$';
