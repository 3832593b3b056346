//! Azure Pipelines expression language: lexer, parser, evaluator, functions and casting rules. Pure: no IO.
//!
//! Parse once with [`parse`] and [`ParseOptions`] (one constructor per Azure syntax: [`ParseOptions::template`],
//! [`ParseOptions::runtime`], [`ParseOptions::condition`]), then evaluate many times with [`Expr::evaluate`]
//! against a [`Context`] that resolves named values lazily ([`MapContext`] is a ready-made one). [`expand_macros`]
//! and [`expand_variables`] handle `$(name)`; [`render`] and [`split_expressions`] handle `${{ }}` / `$[ ]` inside
//! strings.
//!
//! ```
//! use lockgate_expr::{MapContext, ParseOptions, parse};
//! let condition = parse("and(succeeded(), eq(variables['Build.SourceBranch'], 'refs/heads/main'))",
//!     &ParseOptions::condition()).unwrap();
//! let mut context = MapContext::new();
//! context.set_variable("build.sourcebranch", "refs/heads/main");
//! assert!(condition.evaluate_bool(&context).unwrap());
//! ```

#![warn(missing_docs)]

mod context;
mod error;
mod eval;
mod functions;
mod macros;
mod parser;
mod template;
mod value;

pub use context::{Context, Counters, MapContext, PathKey, Resolved, StatusInput, TaskResult};
pub use error::{ErrorKind, ExprError, Span};
pub use functions::to_json;
pub use macros::{
    ExpandedVariable, MAX_MACRO_DEPTH, MacroProblem, expand_macros, expand_variables,
};
pub use parser::{
    Accessor, DEFAULT_MAX_DEPTH, DEFAULT_MAX_LENGTH, Expr, ExtraFunction, Function, HARD_MAX_DEPTH,
    NamedValues, Node, ParseOptions, parse,
};
pub use template::{Piece, Syntax, contains_expression, render, split_expressions};
pub use value::{
    Object, Value, ValueKind, Version, cmp_ignore_case, eq_ignore_case, format_number,
    parse_number_string,
};
