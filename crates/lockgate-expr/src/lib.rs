//! Azure Pipelines expression language: lexer, parser, evaluator, functions and casting rules. Pure: no IO.
