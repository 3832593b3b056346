-- Secure files of a project (the library): the content sealed by the server, its size and blake3
-- digest; the pipelines authorized to use each.
CREATE TABLE secure_files (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    content TEXT NOT NULL,
    size INTEGER NOT NULL,
    digest TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE UNIQUE INDEX secure_files_name ON secure_files (project_id, lower(name));

CREATE TABLE secure_file_pipelines (
    file_id INTEGER NOT NULL REFERENCES secure_files(id) ON DELETE CASCADE,
    pipeline_id INTEGER NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    authorized_by TEXT NOT NULL,
    authorized_at INTEGER NOT NULL,
    PRIMARY KEY (file_id, pipeline_id)
);
