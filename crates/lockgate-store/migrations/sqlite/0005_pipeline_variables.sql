-- Variables defined on a pipeline itself rather than in its YAML (Azure Pipelines' pipeline editor,
-- "Variables"): a value, whether it is secret, and whether users may override it when they queue a run
-- ("Let users override this value when running this pipeline"). Names are unique ignoring case.
CREATE TABLE pipeline_variables (
    pipeline_id INTEGER NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    is_secret INTEGER NOT NULL DEFAULT 0,
    allow_override INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (pipeline_id, position)
);

CREATE UNIQUE INDEX pipeline_variables_name ON pipeline_variables (pipeline_id, name COLLATE NOCASE);
