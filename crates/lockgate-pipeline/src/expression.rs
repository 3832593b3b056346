//! The bridge to the expression engine (`lockgate-expr`): finding `${{ }}` in text, evaluating
//! template expressions against a template scope, and checking condition and runtime syntax.

use std::borrow::Cow;
use std::cell::Cell;

use lockgate_expr::{Context, ParseOptions, PathKey, Resolved, Value};

use crate::template::{MAX_EXPANDED_BYTES, Scope, node_to_value, too_many_bytes};
use crate::yaml::Node;

/// A piece of a scalar: literal text or the inside of a `${{ }}`.
#[derive(Debug, PartialEq)]
pub enum Piece<'a> {
    Text(&'a str),
    Expression(&'a str),
}

/// Splits text into literal parts and `${{ … }}` expressions. `}}` inside a single-quoted string
/// of the expression does not close it. Errors on an unclosed `${{`.
pub fn split_template(text: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        if start > 0 {
            pieces.push(Piece::Text(&rest[..start]));
        }
        let inner = &rest[start + 3..];
        let mut in_string = false;
        let mut end = None;
        let bytes = inner.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\'' => in_string = !in_string,
                b'}' if !in_string && bytes.get(i + 1) == Some(&b'}') => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        let Some(end) = end else {
            return Err("`${{` is not closed by `}}`".to_string());
        };
        pieces.push(Piece::Expression(&inner[..end]));
        rest = &inner[end + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// The template scope seen through the engine's lazy [`Context`].
pub struct ExpressionScope<'s> {
    scope: &'s Scope,
    /// Bytes of text built so far in this compile, charged by the functions the engine runs.
    built: Option<&'s Cell<usize>>,
}

impl<'s> ExpressionScope<'s> {
    pub fn new(scope: &'s Scope) -> ExpressionScope<'s> {
        ExpressionScope { scope, built: None }
    }

    /// Charges the text functions build to `built`, failing past [`MAX_EXPANDED_BYTES`].
    pub fn with_budget(mut self, built: &'s Cell<usize>) -> ExpressionScope<'s> {
        self.built = Some(built);
        self
    }
}

fn key_of<'a>(path: &'a [PathKey<'_>]) -> Option<Cow<'a, str>> {
    path.first().and_then(|k| k.as_key())
}

impl Context for ExpressionScope<'_> {
    fn charge(&self, bytes: usize) -> Result<(), String> {
        let Some(built) = self.built else {
            return Ok(());
        };
        built.set(built.get().saturating_add(bytes));
        if built.get() > MAX_EXPANDED_BYTES {
            return Err(too_many_bytes());
        }
        Ok(())
    }

    fn lookup<'c>(&'c self, name: &str, path: &[PathKey<'_>]) -> Result<Resolved<'c>, String> {
        if let Some(local) = self.scope.local(name) {
            return Ok(Resolved::whole(Cow::Owned(node_to_value(local))));
        }
        if name.eq_ignore_ascii_case("parameters") {
            if let Some(key) = key_of(path) {
                return match self.scope.parameter(&key) {
                    Some(node) => Ok(Resolved {
                        value: Cow::Owned(node_to_value(node)),
                        consumed: 1,
                    }),
                    None if self.scope.strict_parameters => Err(format!(
                        "unrecognized parameter `{key}`: it is not declared"
                    )),
                    None => Ok(Resolved::missing(path.len())),
                };
            }
            let mut object = lockgate_expr::Object::new();
            for (k, v) in self.scope.parameters.iter() {
                object.insert(k.clone(), node_to_value(v));
            }
            return Ok(Resolved::whole(Cow::Owned(Value::Object(object))));
        }
        if name.eq_ignore_ascii_case("variables") {
            if let Some(key) = key_of(path) {
                return Ok(match self.scope.variable(&key) {
                    Some(value) => Resolved {
                        value: Cow::Owned(Value::String(value.to_string())),
                        consumed: 1,
                    },
                    None => Resolved::missing(path.len()),
                });
            }
            let mut object = lockgate_expr::Object::new();
            for (k, v) in self.scope.variables.iter() {
                object.insert(k.clone(), Value::String(v.clone()));
            }
            return Ok(Resolved::whole(Cow::Owned(Value::Object(object))));
        }
        Ok(Resolved::missing(path.len()))
    }
}

fn template_options(scope: &Scope) -> ParseOptions {
    let mut options = ParseOptions::template();
    for (name, _) in &scope.locals {
        options = options.with_named_value(name.clone());
    }
    options
}

/// Evaluates the inside of a `${{ }}`.
pub fn evaluate_template(text: &str, context: &ExpressionScope<'_>) -> Result<Value, String> {
    let expr = lockgate_expr::parse(text, &template_options(context.scope))
        .map_err(|e| e.describe(text))?;
    expr.evaluate(context).map_err(|e| e.describe(text))
}

/// Checks the syntax of a `condition:` (which may still hold macros inside string literals).
pub fn check_condition(text: &str) -> Result<(), String> {
    lockgate_expr::parse(text, &ParseOptions::condition())
        .map(|_| ())
        .map_err(|e| e.describe(text))
}

/// Checks the syntax of a runtime expression `$[ … ]` that makes up a whole value.
pub fn check_runtime(text: &str) -> Result<(), String> {
    lockgate_expr::parse(text, &ParseOptions::runtime())
        .map(|_| ())
        .map_err(|e| e.describe(text))
}

/// Whether a node holds a runtime expression as its whole value.
pub fn runtime_expression(node: &Node) -> Option<&str> {
    let text = node.as_str()?.trim();
    text.strip_prefix("$[")?.strip_suffix(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_text_and_expressions() {
        let pieces = split_template("a ${{ parameters.x }} b ${{ '}}' }}").unwrap();
        assert_eq!(
            pieces,
            [
                Piece::Text("a "),
                Piece::Expression(" parameters.x "),
                Piece::Text(" b "),
                Piece::Expression(" '}}' ")
            ]
        );
        assert!(split_template("${{ unclosed").is_err());
    }
}
