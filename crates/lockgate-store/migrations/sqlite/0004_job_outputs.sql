-- The output variables a job published (`step.var` -> value, a JSON object), read by the conditions and
-- runtime expressions of later jobs and stages (`dependencies.<job>.outputs['step.var']`).
ALTER TABLE jobs ADD COLUMN outputs TEXT NOT NULL DEFAULT '{}';
