//! Finding and rendering expressions embedded in strings: `${{ ... }}` (template) and `$[ ... ]` (runtime).
//! An expression that is the whole string keeps its type; embedded ones render to strings.

use crate::context::Context;
use crate::error::{ErrorKind, ExprError, Span};
use crate::parser::{ParseOptions, parse};
use crate::value::Value;

/// The two delimited syntaxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// `${{ expression }}`, evaluated while the YAML is expanded.
    Template,
    /// `$[ expression ]`, evaluated at run time.
    Runtime,
}

impl Syntax {
    fn open(self) -> &'static str {
        match self {
            Syntax::Template => "${{",
            Syntax::Runtime => "$[",
        }
    }
}

/// A piece of a string split by [`split_expressions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Literal text.
    Text(&'a str),
    /// An embedded expression.
    Expression {
        /// The expression text between the delimiters.
        body: &'a str,
        /// Where the body is in the string.
        body_span: Span,
        /// Where the whole `${{ ... }}` / `$[ ... ]` is in the string.
        outer: Span,
    },
}

/// Whether `text` contains an opening delimiter of `syntax`.
pub fn contains_expression(text: &str, syntax: Syntax) -> bool {
    text.contains(syntax.open())
}

/// Splits `text` into literal text and embedded expressions. Quotes inside an expression are respected, so
/// `${{ '}}' }}` is one expression; for `$[ ]`, nested brackets (`variables['a']`) are counted.
pub fn split_expressions(text: &str, syntax: Syntax) -> Result<Vec<Piece<'_>>, ExprError> {
    let open = syntax.open();
    let mut pieces = Vec::new();
    let mut rest_start = 0;
    while let Some(found) = text[rest_start..].find(open) {
        let start = rest_start + found;
        let body_start = start + open.len();
        let body_end = find_close(text, body_start, syntax).ok_or_else(|| {
            ExprError::new(
                ErrorKind::UnclosedExpression,
                Span::new(start, text.len()),
                format!(
                    "the expression starting with '{open}' is not closed with '{}'",
                    close_text(syntax)
                ),
            )
        })?;
        if start > rest_start {
            pieces.push(Piece::Text(&text[rest_start..start]));
        }
        let outer_end = body_end + close_text(syntax).len();
        pieces.push(Piece::Expression {
            body: &text[body_start..body_end],
            body_span: Span::new(body_start, body_end),
            outer: Span::new(start, outer_end),
        });
        rest_start = outer_end;
    }
    if rest_start < text.len() || pieces.is_empty() {
        pieces.push(Piece::Text(&text[rest_start..]));
    }
    Ok(pieces)
}

fn close_text(syntax: Syntax) -> &'static str {
    match syntax {
        Syntax::Template => "}}",
        Syntax::Runtime => "]",
    }
}

/// The byte position of the closing delimiter for a body starting at `from`.
fn find_close(text: &str, from: usize, syntax: Syntax) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut in_string = false;
    let mut depth = 0usize;
    let mut i = from;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            if b == b'\'' {
                in_string = false;
            }
        } else {
            match (syntax, b) {
                (_, b'\'') => in_string = true,
                (Syntax::Template, b'}') if bytes.get(i + 1) == Some(&b'}') => return Some(i),
                (Syntax::Runtime, b'[') => depth += 1,
                (Syntax::Runtime, b']') if depth == 0 => return Some(i),
                (Syntax::Runtime, b']') => depth -= 1,
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// Evaluates the expressions in `text`. When the whole string is one expression the result keeps its type;
/// otherwise each expression's value is cast to a string (booleans `True`/`False`, null '') and spliced into the
/// text; an array or object cannot be spliced. Error spans are positions in `text`.
pub fn render<C: Context + ?Sized>(
    text: &str,
    syntax: Syntax,
    options: &ParseOptions,
    context: &C,
) -> Result<Value, ExprError> {
    let pieces = split_expressions(text, syntax)?;
    if let [
        Piece::Expression {
            body, body_span, ..
        },
    ] = pieces.as_slice()
    {
        return evaluate_body(body, *body_span, options, context);
    }
    let mut out = String::with_capacity(text.len());
    for piece in pieces {
        match piece {
            Piece::Text(literal) => out.push_str(literal),
            Piece::Expression {
                body,
                body_span,
                outer,
            } => {
                let value = evaluate_body(body, body_span, options, context)?;
                match value.convert_to_string() {
                    Some(rendered) => out.push_str(&rendered),
                    None => {
                        return Err(ExprError::new(
                            ErrorKind::Cast {
                                from: value.kind(),
                                to: crate::ValueKind::String,
                                value: value.clone(),
                            },
                            outer,
                            format!(
                                "cannot insert {} into a string",
                                if matches!(value, Value::Array(_)) {
                                    "an array"
                                } else {
                                    "an object"
                                }
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(Value::String(out))
}

fn evaluate_body<C: Context + ?Sized>(
    body: &str,
    span: Span,
    options: &ParseOptions,
    context: &C,
) -> Result<Value, ExprError> {
    let expression = parse(body, options).map_err(|e| e.offset(span.start))?;
    expression
        .evaluate(context)
        .map_err(|e| e.offset(span.start))
}
