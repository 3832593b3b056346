-- Service connections of a project (the library): a kind (generic, powerPlatformSPN, ssh,
-- azureRM) and its fields as a JSON object, secret fields sealed by the server; the pipelines
-- authorized to use each, and every use by a job (the usage history).
CREATE TABLE service_connections (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    fields TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE UNIQUE INDEX service_connections_name
    ON service_connections (project_id, lower(name));

CREATE TABLE service_connection_pipelines (
    connection_id INTEGER NOT NULL REFERENCES service_connections(id) ON DELETE CASCADE,
    pipeline_id INTEGER NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    authorized_by TEXT NOT NULL,
    authorized_at INTEGER NOT NULL,
    PRIMARY KEY (connection_id, pipeline_id)
);

CREATE TABLE service_connection_uses (
    id INTEGER PRIMARY KEY,
    connection_id INTEGER NOT NULL REFERENCES service_connections(id) ON DELETE CASCADE,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    job_id INTEGER NOT NULL,
    job_attempt INTEGER NOT NULL,
    used_at INTEGER NOT NULL
);

CREATE UNIQUE INDEX service_connection_uses_once
    ON service_connection_uses (connection_id, job_id, job_attempt);
