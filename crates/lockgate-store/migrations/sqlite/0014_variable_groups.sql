-- Variable groups of a project (the Library): named sets of variables that pipelines use with
-- `variables: - group: NAME`, once a project administrator authorized the pipeline. `variables` is
-- a JSON list of {name, value, secret}; the server seals secret values before they are stored.
CREATE TABLE variable_groups (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    variables TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE UNIQUE INDEX variable_groups_name ON variable_groups (project_id, name COLLATE NOCASE);

CREATE TABLE variable_group_pipelines (
    group_id INTEGER NOT NULL REFERENCES variable_groups(id) ON DELETE CASCADE,
    pipeline_id INTEGER NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    authorized_by TEXT NOT NULL,
    authorized_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, pipeline_id)
);
