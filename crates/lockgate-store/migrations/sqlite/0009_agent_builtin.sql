-- Whether an agent is one of the server's built-in agents: set only by the server when it registers its own
-- agents at start, never by `POST /api/v1/agents`. On start the server releases the jobs these agents held
-- (they died with the previous process); other agents keep their leases.
ALTER TABLE agents ADD COLUMN builtin BOOLEAN NOT NULL DEFAULT FALSE;
-- Earlier versions told them apart by name: the server named its own `built-in-<number>`, and the API has
-- refused names starting with `built-in` since agents could be registered.
UPDATE agents SET builtin = TRUE
WHERE name GLOB 'built-in-[0-9]*' AND substr(name, 10) NOT GLOB '*[^0-9]*';
