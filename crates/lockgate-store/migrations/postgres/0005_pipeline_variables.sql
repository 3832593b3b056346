-- Variables defined on a pipeline itself rather than in its YAML (Azure Pipelines' pipeline editor,
-- "Variables"): a value, whether it is secret, and whether users may override it when they queue a run.
-- Names are unique ignoring ASCII case.
CREATE TABLE pipeline_variables (
    pipeline_id BIGINT NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    value TEXT NOT NULL,
    is_secret BOOLEAN NOT NULL DEFAULT FALSE,
    allow_override BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (pipeline_id, position)
);

CREATE UNIQUE INDEX pipeline_variables_name ON pipeline_variables (pipeline_id, lower(name));
