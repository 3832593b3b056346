//! Runs jobs on this machine with Azure Pipelines agent semantics: workspace, child processes, variables, logging commands, secret masking and built-in tasks.
