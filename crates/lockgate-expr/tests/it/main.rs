//! Integration tests of lockgate-expr, one binary with a module per area. Every test goes through the public API
//! (`parse`, `Expr::evaluate`, `MapContext`, the macro and template helpers).

mod casting;
mod functions;
mod limits;
mod macros;
mod parsing;
mod roundtrip;
mod status;
mod templates;
mod values;

use lockgate_expr::{ExprError, MapContext, ParseOptions, Value, parse};

/// Evaluates `text` as a condition-style expression against `context`.
pub fn eval_in(text: &str, context: &MapContext) -> Result<Value, ExprError> {
    parse(
        text,
        &ParseOptions::condition().with_named_value("parameters"),
    )?
    .evaluate(context)
}

/// Evaluates `text` against an empty context; panics (failing the test) on an error.
pub fn eval(text: &str) -> Value {
    match eval_in(text, &MapContext::new()) {
        Ok(value) => value,
        Err(error) => panic!("{text}: {}", error.describe(text)),
    }
}

/// Evaluates `text` and casts to a boolean.
pub fn truthy(text: &str) -> bool {
    eval(text).to_bool()
}

/// The error `text` produces against an empty context; panics if it succeeds.
pub fn error(text: &str) -> ExprError {
    match eval_in(text, &MapContext::new()) {
        Ok(value) => panic!("{text}: expected an error, got {value:?}"),
        Err(error) => error,
    }
}

/// A string value.
pub fn s(text: &str) -> Value {
    Value::String(text.to_string())
}
