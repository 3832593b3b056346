//! Errors of the expression language: a kind, a byte span into the expression text and a lowercase message.
//! Every failure (parse, cast, validation, evaluation) is one of these values; nothing panics.

use std::fmt;

use crate::value::{Value, ValueKind};

/// A byte range `start..end` into the expression text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// The span `start..end`.
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The text this span covers in `source` (empty when the span does not fit the text).
    pub fn text<'a>(&self, source: &'a str) -> &'a str {
        source.get(self.start..self.end).unwrap_or("")
    }

    /// The span shifted right by `offset` bytes (used when an expression sits inside a larger string).
    pub fn offset(self, offset: usize) -> Span {
        Span {
            start: self.start + offset,
            end: self.end + offset,
        }
    }
}

/// What went wrong. The first group are the legacy Azure engine's parse error kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum ErrorKind {
    /// A token that is neither a literal, a keyword nor a symbol (`3.4a`, an unterminated string).
    UnrecognizedValue,
    /// A symbol where it is not allowed (`+`, a stray `,`, too many or too few arguments).
    UnexpectedSymbol,
    /// A function name not followed by `(`.
    ExpectedStartParameter,
    /// A function call missing its closing `)`.
    UnclosedFunction,
    /// An index missing its closing `]`.
    UnclosedIndexer,
    /// A `.` not followed by a property name or `*`.
    ExpectedPropertyName,
    /// Nesting deeper than the limit (50 levels by default).
    ExceededMaxDepth,
    /// An expression longer than the limit (2,000 characters by default).
    ExceededMaxLength,
    /// A call to a function that is not available here.
    UnrecognizedFunction,
    /// A named value (`variables`, `parameters`, ...) that is not available here.
    UnrecognizedNamedValue,
    /// A `${{` or `$[` in a string without its closing `}}` or `]`.
    UnclosedExpression,
    /// A value that cannot be converted to the type a comparison needs (`gt(1, 'abc')`).
    Cast {
        /// The type of the value.
        from: ValueKind,
        /// The type it had to become.
        to: ValueKind,
        /// The value that failed to convert.
        value: Value,
    },
    /// Any other failure while evaluating (a bad argument, an undeclared parameter, a context error).
    Evaluation,
}

impl ErrorKind {
    /// Whether this is a parse (syntax or validation) error rather than an evaluation error.
    pub fn is_parse(&self) -> bool {
        !matches!(self, ErrorKind::Cast { .. } | ErrorKind::Evaluation)
    }

    /// The kind's name in the legacy Azure engine. That engine reports unknown functions and named values as
    /// `UnrecognizedValue`; evaluation errors have no legacy parse kind and are named `Cast` / `Evaluation`.
    pub fn legacy_name(&self) -> &'static str {
        match self {
            ErrorKind::UnrecognizedValue
            | ErrorKind::UnrecognizedFunction
            | ErrorKind::UnrecognizedNamedValue => "UnrecognizedValue",
            ErrorKind::UnexpectedSymbol => "UnexpectedSymbol",
            ErrorKind::ExpectedStartParameter => "ExpectedStartParameter",
            ErrorKind::UnclosedFunction => "UnclosedFunction",
            ErrorKind::UnclosedIndexer => "UnclosedIndexer",
            ErrorKind::ExpectedPropertyName => "ExpectedPropertyName",
            ErrorKind::ExceededMaxDepth => "ExceededMaxDepth",
            ErrorKind::ExceededMaxLength => "ExceededMaxLength",
            ErrorKind::UnclosedExpression => "UnclosedExpression",
            ErrorKind::Cast { .. } => "Cast",
            ErrorKind::Evaluation => "Evaluation",
        }
    }
}

/// An error with its kind, the span of the offending token or call, and a lowercase message.
#[derive(Debug, Clone, PartialEq)]
pub struct ExprError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Where, as bytes of the expression text.
    pub span: Span,
    /// A precise lowercase message, e.g. `cannot compare version '1.2' with number 3`.
    pub message: String,
}

impl ExprError {
    /// An error of `kind` at `span`.
    pub fn new(kind: ErrorKind, span: Span, message: impl Into<String>) -> ExprError {
        ExprError {
            kind,
            span,
            message: message.into(),
        }
    }

    /// The message followed by where it happened in `source`, e.g.
    /// `unexpected symbol: '+' (at position 3 in expression: 3 + 4)`.
    pub fn describe(&self, source: &str) -> String {
        let position = source
            .get(..self.span.start)
            .map_or(self.span.start, |before| before.chars().count())
            + 1;
        format!(
            "{} (at position {position} in expression: {source})",
            self.message
        )
    }

    /// The same error with its span shifted by `offset` bytes.
    pub fn offset(mut self, offset: usize) -> ExprError {
        self.span = self.span.offset(offset);
        self
    }
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExprError {}
