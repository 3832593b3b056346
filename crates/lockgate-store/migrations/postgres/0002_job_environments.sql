-- Deployment jobs remember the environment they deploy to, for "which version is where".
ALTER TABLE jobs ADD COLUMN environment TEXT COLLATE "C";
CREATE INDEX jobs_by_environment ON jobs (environment, id) WHERE environment IS NOT NULL;
