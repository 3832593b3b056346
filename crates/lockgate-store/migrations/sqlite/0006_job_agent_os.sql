-- The operating system a job's pool asks for (`Agent.OS`: Windows_NT, Darwin, Linux), or NULL when it does not
-- say. Only an agent with that OS may lease the job; until one connects the job stays queued with that reason.
ALTER TABLE jobs ADD COLUMN agent_os TEXT;
