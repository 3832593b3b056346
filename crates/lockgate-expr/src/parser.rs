//! Lexer and parser: expression text to an [`Expr`] tree with byte spans, plus the canonical printer (`Display`).
//! The parser enforces the legacy engine's limits (50 levels of nesting, 2,000 characters) with an explicit depth
//! counter, so no input can overflow the stack.

use std::fmt;

use crate::error::{ErrorKind, ExprError, Span};
use crate::value::{Value, Version, eq_ignore_case};

/// Nesting limit of the legacy engine: fewer than 50 function calls and indexes open at once (so 49 nested
/// calls around a literal parse, 50 do not).
pub const DEFAULT_MAX_DEPTH: usize = 50;
/// Length limit of the legacy engine, in characters.
pub const DEFAULT_MAX_LENGTH: usize = 2000;
/// Whatever the options say, nesting never goes beyond this (keeps recursion bounded).
pub const HARD_MAX_DEPTH: usize = 100;

/// The built-in functions, plus caller-declared and (in syntax-only mode) unknown ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Function {
    /// `and(a, b, ...)`
    And,
    /// `or(a, b, ...)`
    Or,
    /// `not(a)`
    Not,
    /// `xor(a, b)`
    Xor,
    /// `eq(a, b)`
    Eq,
    /// `ne(a, b)`
    Ne,
    /// `gt(a, b)`
    Gt,
    /// `ge(a, b)`
    Ge,
    /// `lt(a, b)`
    Lt,
    /// `le(a, b)`
    Le,
    /// `contains(haystack, needle)`
    Contains,
    /// `containsValue(collection, value)`
    ContainsValue,
    /// `in(value, candidates...)`
    In,
    /// `notIn(value, candidates...)`
    NotIn,
    /// `startsWith(text, prefix)`
    StartsWith,
    /// `endsWith(text, suffix)`
    EndsWith,
    /// `coalesce(values...)`
    Coalesce,
    /// `format(pattern, args...)`
    Format,
    /// `join(separator, array)`
    Join,
    /// `split(text, delimiters)`
    Split,
    /// `replace(text, old, new)`
    Replace,
    /// `lower(text)`
    Lower,
    /// `upper(text)`
    Upper,
    /// `trim(text)`
    Trim,
    /// `length(value)`
    Length,
    /// `iif(condition, then, else)`
    Iif,
    /// `convertToJson(value)`
    ConvertToJson,
    /// `counter(prefix, seed)` (runtime variable definitions only)
    Counter,
    /// `always()` (conditions only)
    Always,
    /// `canceled()` (conditions only)
    Canceled,
    /// `failed(jobs...)` (conditions only)
    Failed,
    /// `succeeded(jobs...)` (conditions only)
    Succeeded,
    /// `succeededOrFailed(jobs...)` (conditions only)
    SucceededOrFailed,
    /// A function declared by the caller in [`ParseOptions::extra_functions`]; evaluated by
    /// [`crate::Context::call_function`].
    Extra,
    /// An unknown function accepted by a syntax-only parse; it cannot be evaluated.
    Unknown,
}

/// Built-in functions: canonical name, minimum and maximum argument count.
const BUILTINS: &[(Function, &str, usize, usize)] = &[
    (Function::And, "and", 2, usize::MAX),
    (Function::Or, "or", 2, usize::MAX),
    (Function::Not, "not", 1, 1),
    (Function::Xor, "xor", 2, 2),
    (Function::Eq, "eq", 2, 2),
    (Function::Ne, "ne", 2, 2),
    (Function::Gt, "gt", 2, 2),
    (Function::Ge, "ge", 2, 2),
    (Function::Lt, "lt", 2, 2),
    (Function::Le, "le", 2, 2),
    (Function::Contains, "contains", 2, 2),
    (Function::ContainsValue, "containsValue", 2, 2),
    (Function::In, "in", 2, usize::MAX),
    (Function::NotIn, "notIn", 2, usize::MAX),
    (Function::StartsWith, "startsWith", 2, 2),
    (Function::EndsWith, "endsWith", 2, 2),
    (Function::Coalesce, "coalesce", 2, usize::MAX),
    (Function::Format, "format", 1, usize::MAX),
    (Function::Join, "join", 2, 2),
    (Function::Split, "split", 2, 2),
    (Function::Replace, "replace", 3, 3),
    (Function::Lower, "lower", 1, 1),
    (Function::Upper, "upper", 1, 1),
    (Function::Trim, "trim", 1, 1),
    (Function::Length, "length", 1, 1),
    (Function::Iif, "iif", 3, 3),
    (Function::ConvertToJson, "convertToJson", 1, 1),
    (Function::Counter, "counter", 2, 2),
    (Function::Always, "always", 0, 0),
    (Function::Canceled, "canceled", 0, 0),
    (Function::Failed, "failed", 0, usize::MAX),
    (Function::Succeeded, "succeeded", 0, usize::MAX),
    (
        Function::SucceededOrFailed,
        "succeededOrFailed",
        0,
        usize::MAX,
    ),
];

impl Function {
    /// The built-in function called `name` (ignoring case), whether or not the current options allow it.
    pub fn builtin(name: &str) -> Option<Function> {
        BUILTINS
            .iter()
            .find(|(_, n, _, _)| eq_ignore_case(n, name))
            .map(|(f, _, _, _)| f.clone())
    }

    /// The canonical spelling of a built-in function (`startsWith`); `None` for extra and unknown functions.
    pub fn canonical_name(&self) -> Option<&'static str> {
        BUILTINS
            .iter()
            .find(|(f, _, _, _)| f == self)
            .map(|(_, n, _, _)| *n)
    }

    fn arity(&self) -> (usize, usize) {
        BUILTINS
            .iter()
            .find(|(f, _, _, _)| f == self)
            .map_or((0, usize::MAX), |(_, _, min, max)| (*min, *max))
    }

    /// Whether this is one of the job status functions (`always`, `canceled`, `failed`, `succeeded`,
    /// `succeededOrFailed`).
    pub fn is_status(&self) -> bool {
        matches!(
            self,
            Function::Always
                | Function::Canceled
                | Function::Failed
                | Function::Succeeded
                | Function::SucceededOrFailed
        )
    }
}

/// A function the caller adds to the language (name matched ignoring case, argument count checked by the parser).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraFunction {
    /// The function name.
    pub name: String,
    /// Fewest arguments.
    pub min_args: usize,
    /// Most arguments.
    pub max_args: usize,
}

/// Which named values (`variables`, `parameters`, ...) an expression may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedValues {
    /// Any name is accepted (syntax validation, or a caller that checks names itself).
    Any,
    /// Only these names (matched ignoring case).
    Only(Vec<String>),
}

/// What a parse accepts: named values, functions and limits. Use the constructors for the three Azure syntaxes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseOptions {
    /// Named values that may appear.
    pub named_values: NamedValues,
    /// Whether the job status functions are available (conditions).
    pub status_functions: bool,
    /// Whether `counter` is available (runtime variable definitions).
    pub counter: bool,
    /// Caller-declared functions.
    pub extra_functions: Vec<ExtraFunction>,
    /// Accept calls to unknown functions with any number of arguments (syntax-only validation).
    pub allow_unknown_functions: bool,
    /// Nesting limit: parsing fails when this many function calls and indexes are open at once; capped at
    /// [`HARD_MAX_DEPTH`].
    pub max_depth: usize,
    /// Length limit in characters.
    pub max_length: usize,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions::condition()
    }
}

impl ParseOptions {
    fn with_names(names: &[&str]) -> ParseOptions {
        ParseOptions {
            named_values: NamedValues::Only(names.iter().map(|n| n.to_string()).collect()),
            status_functions: false,
            counter: false,
            extra_functions: Vec::new(),
            allow_unknown_functions: false,
            max_depth: DEFAULT_MAX_DEPTH,
            max_length: DEFAULT_MAX_LENGTH,
        }
    }

    /// Template expressions `${{ }}`: `parameters` and compile-time `variables`; no status functions or counter.
    pub fn template() -> ParseOptions {
        ParseOptions::with_names(&["parameters", "variables"])
    }

    /// Runtime expressions `$[ ]`: `variables`, `dependencies`, `stageDependencies`, `pipeline`, and `counter`.
    pub fn runtime() -> ParseOptions {
        ParseOptions {
            counter: true,
            ..ParseOptions::with_names(&[
                "variables",
                "dependencies",
                "stageDependencies",
                "pipeline",
            ])
        }
    }

    /// `condition:` strings: `variables`, `dependencies`, `stageDependencies`, `pipeline`, and the status functions.
    pub fn condition() -> ParseOptions {
        ParseOptions {
            status_functions: true,
            ..ParseOptions::with_names(&[
                "variables",
                "dependencies",
                "stageDependencies",
                "pipeline",
            ])
        }
    }

    /// Syntax-only validation: any named value and any function name are accepted. As in the legacy engine's
    /// syntax check, only the always-available functions keep their argument counts; the status functions and
    /// `counter` are treated as unknown functions (any arguments). Such an expression cannot be evaluated.
    pub fn syntax_only() -> ParseOptions {
        ParseOptions {
            named_values: NamedValues::Any,
            status_functions: false,
            counter: false,
            allow_unknown_functions: true,
            ..ParseOptions::with_names(&[])
        }
    }

    /// These options plus the named value `name` (e.g. the loop variable of `${{ each x in ... }}`).
    pub fn with_named_value(mut self, name: impl Into<String>) -> ParseOptions {
        if let NamedValues::Only(names) = &mut self.named_values {
            names.push(name.into());
        }
        self
    }

    /// These options plus a caller-declared function.
    pub fn with_function(
        mut self,
        name: impl Into<String>,
        min_args: usize,
        max_args: usize,
    ) -> ParseOptions {
        self.extra_functions.push(ExtraFunction {
            name: name.into(),
            min_args,
            max_args,
        });
        self
    }

    /// Whether `name` may be used as a named value.
    pub fn allows_named_value(&self, name: &str) -> bool {
        match &self.named_values {
            NamedValues::Any => true,
            NamedValues::Only(names) => names.iter().any(|n| eq_ignore_case(n, name)),
        }
    }
}

/// A node of the expression tree. Equality ignores spans and the spelling of built-in function names.
#[derive(Debug, Clone)]
pub enum Node {
    /// A literal: boolean, number, string or version.
    Literal {
        /// The value.
        value: Value,
        /// Where it is.
        span: Span,
    },
    /// A named value such as `variables` or `parameters`, as written.
    NamedValue {
        /// The name as written.
        name: String,
        /// Where it is.
        span: Span,
    },
    /// A function call.
    Call {
        /// Which function.
        function: Function,
        /// The name as written.
        name: String,
        /// The arguments.
        args: Vec<Node>,
        /// The span of the function name (the call's anchor in messages).
        span: Span,
    },
    /// Property, index and wildcard accesses applied to a base (`variables['a']`, `x.y[0]`, `foo.*.id`).
    Access {
        /// What is accessed.
        base: Box<Node>,
        /// The accesses, left to right.
        path: Vec<Accessor>,
        /// The span of the whole access expression.
        span: Span,
    },
}

/// One step of an [`Node::Access`] path.
#[derive(Debug, Clone)]
pub enum Accessor {
    /// `.name`
    Property {
        /// The property name as written.
        name: String,
        /// Where it is.
        span: Span,
    },
    /// `[expression]`
    Index {
        /// The index expression.
        index: Node,
        /// Where the brackets are.
        span: Span,
    },
    /// `.*` or `[*]`
    Wildcard {
        /// Where it is.
        span: Span,
    },
}

impl PartialEq for Node {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Node::Literal { value: a, .. }, Node::Literal { value: b, .. }) => a == b,
            (Node::NamedValue { name: a, .. }, Node::NamedValue { name: b, .. }) => {
                eq_ignore_case(a, b)
            }
            (
                Node::Call {
                    function: fa,
                    name: na,
                    args: aa,
                    ..
                },
                Node::Call {
                    function: fb,
                    name: nb,
                    args: ab,
                    ..
                },
            ) => fa == fb && eq_ignore_case(na, nb) && aa == ab,
            (
                Node::Access {
                    base: ba, path: pa, ..
                },
                Node::Access {
                    base: bb, path: pb, ..
                },
            ) => ba == bb && pa == pb,
            _ => false,
        }
    }
}

impl PartialEq for Accessor {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Accessor::Property { name: a, .. }, Accessor::Property { name: b, .. }) => a == b,
            (Accessor::Index { index: a, .. }, Accessor::Index { index: b, .. }) => a == b,
            (Accessor::Wildcard { .. }, Accessor::Wildcard { .. }) => true,
            _ => false,
        }
    }
}

impl Node {
    /// The span of this node.
    pub fn span(&self) -> Span {
        match self {
            Node::Literal { span, .. }
            | Node::NamedValue { span, .. }
            | Node::Call { span, .. }
            | Node::Access { span, .. } => *span,
        }
    }
}

/// A parsed expression: parse once, evaluate many times. `Display` prints a canonical form that parses back to an
/// equal tree (equality compares trees, not source text).
#[derive(Debug, Clone)]
pub struct Expr {
    pub(crate) root: Node,
    pub(crate) source: String,
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root
    }
}

impl Expr {
    /// The root of the tree.
    pub fn root(&self) -> &Node {
        &self.root
    }

    /// The text this expression was parsed from (spans index into it).
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Parses `text` under `options`.
pub fn parse(text: &str, options: &ParseOptions) -> Result<Expr, ExprError> {
    // The limit counts UTF-16 code units, as the .NET engine does.
    if text.len() > options.max_length && text.encode_utf16().count() > options.max_length {
        return Err(ExprError::new(
            ErrorKind::ExceededMaxLength,
            Span::new(0, text.len()),
            format!(
                "expression exceeds the maximum length of {} characters",
                options.max_length
            ),
        ));
    }
    let tokens = lex(text);
    let mut parser = Parser {
        text,
        tokens,
        position: 0,
        options,
        max_depth: options.max_depth.min(HARD_MAX_DEPTH),
    };
    if parser.peek().is_none() {
        return Err(ExprError::new(
            ErrorKind::UnexpectedSymbol,
            Span::new(0, text.len()),
            "the expression is empty",
        ));
    }
    let root = parser.parse_expression(0)?;
    if let Some(token) = parser.peek() {
        return Err(parser.misplaced(token));
    }
    Ok(Expr {
        root,
        source: text.to_string(),
    })
}

#[derive(Debug, Clone, PartialEq)]
enum TokenKind {
    StartIndex,
    EndIndex,
    StartParameter,
    EndParameter,
    Separator,
    Dereference,
    Wildcard,
    Literal(Value),
    /// A keyword where a value may start: a function or named-value name.
    Keyword,
    /// A keyword right after `.`.
    PropertyName,
    /// A malformed number, version or string (`3.4a`, `4.5.6.7a`, an unterminated string).
    Unrecognized,
    /// A run of characters that is not a valid keyword (`+`, `param-minus`, `é`).
    BadKeyword,
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokenKind,
    span: Span,
}

/// Characters that end a number or keyword token.
fn is_punctuation_or_space(c: char) -> bool {
    matches!(c, '(' | ')' | ',' | '.' | '[' | ']') || c.is_whitespace()
}

/// A keyword is an ASCII letter or `_` followed by ASCII letters, digits or `_`.
fn is_valid_keyword(word: &str) -> bool {
    let mut bytes = word.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Splits the text into tokens. Never fails: malformed pieces become `Unrecognized` / `BadKeyword` tokens that the
/// parser reports in order.
fn lex(text: &str) -> Vec<Token> {
    let mut tokens: Vec<Token> = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let simple = match c {
            '[' => Some(TokenKind::StartIndex),
            ']' => Some(TokenKind::EndIndex),
            '(' => Some(TokenKind::StartParameter),
            ')' => Some(TokenKind::EndParameter),
            ',' => Some(TokenKind::Separator),
            '*' => Some(TokenKind::Wildcard),
            _ => None,
        };
        if let Some(kind) = simple {
            chars.next();
            tokens.push(Token {
                kind,
                span: Span::new(start, start + 1),
            });
            continue;
        }
        let value_may_start = tokens.last().is_none_or(|t| {
            matches!(
                t.kind,
                TokenKind::Separator | TokenKind::StartIndex | TokenKind::StartParameter
            )
        });
        if c == '.' && !value_may_start {
            chars.next();
            tokens.push(Token {
                kind: TokenKind::Dereference,
                span: Span::new(start, start + 1),
            });
            continue;
        }
        if c == '\'' {
            chars.next();
            let mut value = String::new();
            let mut closed = None;
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if chars.peek().is_some_and(|&(_, n)| n == '\'') {
                        chars.next();
                        value.push('\'');
                    } else {
                        closed = Some(i + 1);
                        break;
                    }
                } else {
                    value.push(c);
                }
            }
            let kind = if closed.is_some() {
                TokenKind::Literal(Value::String(value))
            } else {
                TokenKind::Unrecognized
            };
            tokens.push(Token {
                kind,
                span: Span::new(start, closed.unwrap_or(text.len())),
            });
            continue;
        }
        let is_number = c == '-' || c == '.' || c.is_ascii_digit();
        chars.next();
        let mut end = start + c.len_utf8();
        while let Some(&(i, c)) = chars.peek() {
            if is_punctuation_or_space(c) && !(is_number && c == '.') {
                break;
            }
            end = i + c.len_utf8();
            chars.next();
        }
        let span = Span::new(start, end);
        let word = span.text(text);
        let kind = if is_number {
            let literal = if word.bytes().filter(|&b| b == b'.').count() >= 2 {
                parse_version_literal(word).map(Value::Version)
            } else {
                parse_number_literal(word).map(Value::Number)
            };
            literal.map_or(TokenKind::Unrecognized, TokenKind::Literal)
        } else if !is_valid_keyword(word) {
            TokenKind::BadKeyword
        } else if tokens
            .last()
            .is_some_and(|t| t.kind == TokenKind::Dereference)
        {
            TokenKind::PropertyName
        } else if word.eq_ignore_ascii_case("true") {
            TokenKind::Literal(Value::Boolean(true))
        } else if word.eq_ignore_ascii_case("false") {
            TokenKind::Literal(Value::Boolean(false))
        } else {
            TokenKind::Keyword
        };
        tokens.push(Token { kind, span });
    }
    tokens
}

/// Largest magnitude of a .NET `decimal`, the number type of the Azure engine.
const DECIMAL_MAX: f64 = 7.922_816_251_426_434e28;

/// A number literal: optional `-`, digits with an optional decimal part (`1.`, `1.5`), or a decimal part alone
/// (`.5`, `-.5`); no exponent, no thousands separators.
fn parse_number_literal(token: &str) -> Option<f64> {
    let negative = token.starts_with('-');
    let body = token.strip_prefix('-').unwrap_or(token);
    let (integer, fraction) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if !integer.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    if integer.is_empty() && fraction.is_empty() {
        return None;
    }
    let normalised = format!(
        "{}{}.{}",
        if negative { "-" } else { "" },
        if integer.is_empty() { "0" } else { integer },
        if fraction.is_empty() { "0" } else { fraction }
    );
    normalised
        .parse::<f64>()
        .ok()
        .filter(|n| n.abs() <= DECIMAL_MAX)
}

/// A version literal: three or four dot-separated segments of digits (two segments are a number).
fn parse_version_literal(token: &str) -> Option<Version> {
    let segments = token.split('.').count();
    if !(3..=4).contains(&segments)
        || !token
            .split('.')
            .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    Version::parse(token)
}

fn unexpected(text: &str, token: &Token) -> ExprError {
    ExprError::new(
        ErrorKind::UnexpectedSymbol,
        token.span,
        format!("unexpected symbol: '{}'", token.span.text(text)),
    )
}

fn unrecognized(text: &str, token: &Token) -> ExprError {
    let raw = token.span.text(text);
    let why = if raw.starts_with('\'') {
        " (the string is not closed)"
    } else {
        ""
    };
    ExprError::new(
        ErrorKind::UnrecognizedValue,
        token.span,
        format!("unrecognized value: '{raw}'{why}"),
    )
}

struct Parser<'t> {
    text: &'t str,
    tokens: Vec<Token>,
    position: usize,
    options: &'t ParseOptions,
    max_depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.position).cloned();
        if token.is_some() {
            self.position += 1;
        }
        token
    }

    /// Called when a function call or an index opens; `open` counts the calls and indexes now open. Like the legacy
    /// engine, 50 open containers is too deep.
    fn check_depth(&self, open: usize, span: Span) -> Result<(), ExprError> {
        if open >= self.max_depth {
            return Err(ExprError::new(
                ErrorKind::ExceededMaxDepth,
                span,
                format!(
                    "expression exceeds the maximum depth of {} levels",
                    self.max_depth
                ),
            ));
        }
        Ok(())
    }

    fn end_of_input(&self) -> ExprError {
        let end = self.text.len();
        ExprError::new(
            ErrorKind::UnexpectedSymbol,
            Span::new(end, end),
            "unexpected end of expression",
        )
    }

    /// Reports a token that cannot stand where it is.
    fn misplaced(&self, token: &Token) -> ExprError {
        match token.kind {
            TokenKind::Unrecognized => unrecognized(self.text, token),
            _ => unexpected(self.text, token),
        }
    }

    /// An expression (a value and its accesses) with `open` calls and indexes around it.
    fn parse_expression(&mut self, open: usize) -> Result<Node, ExprError> {
        let Some(token) = self.next() else {
            return Err(self.end_of_input());
        };
        match token.kind {
            TokenKind::Literal(value) => Ok(Node::Literal {
                value,
                span: token.span,
            }),
            TokenKind::Keyword => {
                let base = self.parse_keyword(token, open)?;
                self.parse_accessors(base, open)
            }
            TokenKind::Unrecognized | TokenKind::BadKeyword => Err(unrecognized(self.text, &token)),
            _ => Err(unexpected(self.text, &token)),
        }
    }

    fn parse_keyword(&mut self, token: Token, open: usize) -> Result<Node, ExprError> {
        let name = token.span.text(self.text);
        let followed_by_paren = self
            .peek()
            .is_some_and(|t| t.kind == TokenKind::StartParameter);
        let builtin = Function::builtin(name).filter(|f| match f {
            _ if f.is_status() => self.options.status_functions,
            Function::Counter => self.options.counter,
            _ => true,
        });
        let signature = if let Some(builtin) = builtin {
            let (min, max) = builtin.arity();
            Some((builtin, min, max))
        } else if self.options.allow_unknown_functions
            && followed_by_paren
            && self.options.named_values == NamedValues::Any
        {
            Some((Function::Unknown, 0, usize::MAX))
        } else if self.options.allows_named_value(name) {
            None
        } else if let Some(extra) = self
            .options
            .extra_functions
            .iter()
            .find(|f| eq_ignore_case(&f.name, name))
        {
            Some((Function::Extra, extra.min_args, extra.max_args))
        } else if self.options.allow_unknown_functions && followed_by_paren {
            Some((Function::Unknown, 0, usize::MAX))
        } else if followed_by_paren {
            return Err(ExprError::new(
                ErrorKind::UnrecognizedFunction,
                token.span,
                format!("unrecognized function: '{name}'."),
            ));
        } else {
            return Err(ExprError::new(
                ErrorKind::UnrecognizedNamedValue,
                token.span,
                format!("unrecognized named-value: '{name}'."),
            ));
        };
        let Some((function, min, max)) = signature else {
            return Ok(Node::NamedValue {
                name: name.to_string(),
                span: token.span,
            });
        };
        if !followed_by_paren {
            return Err(ExprError::new(
                ErrorKind::ExpectedStartParameter,
                token.span,
                format!("expected '(' after the function name '{name}'"),
            ));
        }
        let open_paren = self.next().ok_or_else(|| self.end_of_input())?;
        let inner = open + 1;
        self.check_depth(inner, open_paren.span)?;
        let unclosed = || {
            ExprError::new(
                ErrorKind::UnclosedFunction,
                token.span,
                format!("unclosed function: '{name}'"),
            )
        };
        let mut args = Vec::new();
        loop {
            let Some(next) = self.peek().cloned() else {
                return Err(unclosed());
            };
            match next.kind {
                TokenKind::EndParameter => {
                    self.next();
                    if args.len() < min || args.len() > max {
                        return Err(unexpected(self.text, &next));
                    }
                    break;
                }
                TokenKind::Separator if !args.is_empty() => {
                    self.next();
                    if args.len() >= max {
                        return Err(unexpected(self.text, &next));
                    }
                    match self.peek() {
                        None => return Err(unclosed()),
                        Some(t)
                            if matches!(t.kind, TokenKind::EndParameter | TokenKind::Separator) =>
                        {
                            return Err(unexpected(self.text, t));
                        }
                        Some(_) => {}
                    }
                }
                _ if !args.is_empty() => return Err(self.misplaced(&next)),
                _ => {}
            }
            args.push(self.parse_expression(inner)?);
        }
        Ok(Node::Call {
            function,
            name: name.to_string(),
            args,
            span: token.span,
        })
    }

    /// Property, index and wildcard accesses after a named value or a call. Indexes count as open containers
    /// while their expression is parsed; `.name` does not nest.
    fn parse_accessors(&mut self, base: Node, open: usize) -> Result<Node, ExprError> {
        let start = base.span().start;
        let mut path = Vec::new();
        let mut end = base.span().end;
        while let Some(token) = self.peek().cloned() {
            match token.kind {
                TokenKind::Dereference => {
                    self.next();
                    match self.next() {
                        Some(Token {
                            kind: TokenKind::PropertyName,
                            span,
                        }) => {
                            path.push(Accessor::Property {
                                name: span.text(self.text).to_string(),
                                span,
                            });
                            end = span.end;
                        }
                        Some(Token {
                            kind: TokenKind::Wildcard,
                            span,
                        }) => {
                            path.push(Accessor::Wildcard {
                                span: Span::new(token.span.start, span.end),
                            });
                            end = span.end;
                        }
                        Some(other) => return Err(self.misplaced(&other)),
                        None => {
                            return Err(ExprError::new(
                                ErrorKind::ExpectedPropertyName,
                                token.span,
                                "expected a property name after '.'",
                            ));
                        }
                    }
                }
                TokenKind::StartIndex => {
                    self.next();
                    let inner = open + 1;
                    self.check_depth(inner, token.span)?;
                    let unclosed = || {
                        ExprError::new(
                            ErrorKind::UnclosedIndexer,
                            token.span,
                            "unclosed indexer: missing ']'",
                        )
                    };
                    if self.peek().is_some_and(|t| t.kind == TokenKind::Wildcard) {
                        self.next();
                        match self.next() {
                            Some(Token {
                                kind: TokenKind::EndIndex,
                                span,
                            }) => {
                                path.push(Accessor::Wildcard {
                                    span: Span::new(token.span.start, span.end),
                                });
                                end = span.end;
                                continue;
                            }
                            Some(other) => return Err(self.misplaced(&other)),
                            None => return Err(unclosed()),
                        }
                    }
                    if self.peek().is_none() {
                        return Err(unclosed());
                    }
                    let index = self.parse_expression(inner)?;
                    match self.next() {
                        Some(Token {
                            kind: TokenKind::EndIndex,
                            span,
                        }) => {
                            path.push(Accessor::Index {
                                index,
                                span: Span::new(token.span.start, span.end),
                            });
                            end = span.end;
                        }
                        Some(other) => return Err(self.misplaced(&other)),
                        None => return Err(unclosed()),
                    }
                }
                _ => break,
            }
        }
        if path.is_empty() {
            return Ok(base);
        }
        Ok(Node::Access {
            base: Box::new(base),
            path,
            span: Span::new(start, end),
        })
    }
}

/// Writes a literal in a form the lexer reads back to the same value.
fn write_literal(f: &mut fmt::Formatter<'_>, value: &Value) -> fmt::Result {
    match value {
        Value::Null => f.write_str("null"),
        Value::Boolean(b) => f.write_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if *n == 0.0 {
                f.write_str("0")
            } else {
                write!(f, "{n}")
            }
        }
        Value::String(s) => write!(f, "'{}'", s.replace('\'', "''")),
        Value::Version(v) => write!(f, "{v}"),
        Value::Array(_) | Value::Object(_) => {
            write!(f, "'{}'", value.to_display_string().replace('\'', "''"))
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Literal { value, .. } => write_literal(f, value),
            Node::NamedValue { name, .. } => f.write_str(name),
            Node::Call {
                function,
                name,
                args,
                ..
            } => {
                f.write_str(function.canonical_name().unwrap_or(name))?;
                f.write_str("(")?;
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{arg}")?;
                }
                f.write_str(")")
            }
            Node::Access { base, path, .. } => {
                write!(f, "{base}")?;
                for (i, accessor) in path.iter().enumerate() {
                    match accessor {
                        Accessor::Property { name, .. } => write!(f, ".{name}")?,
                        Accessor::Index { index, .. } => write!(f, "[{index}]")?,
                        // After a literal, `.` would start a number, so the first wildcard there is written `[*]`.
                        Accessor::Wildcard { .. }
                            if i == 0 && matches!(**base, Node::Literal { .. }) =>
                        {
                            f.write_str("[*]")?
                        }
                        Accessor::Wildcard { .. } => f.write_str(".*")?,
                    }
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.root)
    }
}
