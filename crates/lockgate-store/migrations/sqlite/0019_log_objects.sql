-- A completed job's log moves to object storage (lockgate-server/src/log_archive.rs): its chunks are
-- replaced by one chunk naming the object that holds their lines. The same on both backends.
ALTER TABLE log_chunks ADD COLUMN object TEXT;
CREATE INDEX log_chunks_in_database ON log_chunks (job_id) WHERE object IS NULL;
