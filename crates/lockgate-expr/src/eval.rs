//! The evaluator: walks an [`Expr`] against a [`Context`], borrowing values from the tree and the context where it
//! can, with the comparison and conversion rules of Azure Pipelines (right operand converted to the left's type).

use std::borrow::Cow;
use std::cmp::Ordering;

use crate::context::{Context, PathKey, StatusInput, TaskResult};
use crate::error::{ErrorKind, ExprError, Span};
use crate::functions;
use crate::parser::{Accessor, Expr, Function, Node};
use crate::value::{Value, ValueKind, cmp_ignore_case, eq_ignore_case};

static NULL: Value = Value::Null;

type Evaluated<'a> = Result<Cow<'a, Value>, ExprError>;

impl Expr {
    /// Evaluates the expression against `context`.
    pub fn evaluate<C: Context + ?Sized>(&self, context: &C) -> Result<Value, ExprError> {
        evaluate_node(&self.root, context).map(Cow::into_owned)
    }

    /// Evaluates the expression and casts the result to a boolean (how conditions and `${{ if }}` use it).
    pub fn evaluate_bool<C: Context + ?Sized>(&self, context: &C) -> Result<bool, ExprError> {
        evaluate_node(&self.root, context).map(|v| v.to_bool())
    }
}

fn evaluation_error(span: Span, message: impl Into<String>) -> ExprError {
    ExprError::new(ErrorKind::Evaluation, span, message)
}

pub(crate) fn evaluate_node<'a, C: Context + ?Sized>(
    node: &'a Node,
    context: &'a C,
) -> Evaluated<'a> {
    match node {
        Node::Literal { value, .. } => Ok(Cow::Borrowed(value)),
        Node::NamedValue { name, span } => context
            .lookup(name, &[])
            .map(|resolved| resolved.value)
            .map_err(|message| evaluation_error(*span, message)),
        Node::Access { base, path, .. } => evaluate_access(base, path, context),
        Node::Call {
            function,
            name,
            args,
            span,
        } => call(function, name, args, *span, context),
    }
}

/// Applies one property or index step to a value, keeping the borrow when there is one.
fn step<'a>(value: Cow<'a, Value>, key: &PathKey<'_>) -> Cow<'a, Value> {
    let pick = |v: &Value| -> Option<Value> {
        match key {
            PathKey::Property(name) => v.property(name).cloned(),
            PathKey::Index(index) => v.index(index).cloned(),
            PathKey::Wildcard => None,
        }
    };
    match value {
        Cow::Borrowed(v) => {
            let found = match key {
                PathKey::Property(name) => v.property(name),
                PathKey::Index(index) => v.index(index),
                PathKey::Wildcard => None,
            };
            Cow::Borrowed(found.unwrap_or(&NULL))
        }
        Cow::Owned(v) => Cow::Owned(pick(&v).unwrap_or(Value::Null)),
    }
}

/// Like [`step`], but `None` when the key or index is not there (filtered arrays drop such items).
fn step_present<'a>(value: Cow<'a, Value>, key: &PathKey<'_>) -> Option<Cow<'a, Value>> {
    let found = |v: &Value| match key {
        PathKey::Property(name) => v.property(name).is_some(),
        PathKey::Index(index) => v.index(index).is_some(),
        PathKey::Wildcard => false,
    };
    if found(value.as_ref()) {
        Some(step(value, key))
    } else {
        None
    }
}

/// The children a wildcard selects: array items or object values.
fn wildcard_children<'a>(value: Cow<'a, Value>) -> Vec<Cow<'a, Value>> {
    match value {
        Cow::Borrowed(Value::Array(items)) => items.iter().map(Cow::Borrowed).collect(),
        Cow::Borrowed(Value::Object(object)) => object.values().map(Cow::Borrowed).collect(),
        Cow::Owned(Value::Array(items)) => items.into_iter().map(Cow::Owned).collect(),
        Cow::Owned(Value::Object(object)) => {
            object.into_iter().map(|(_, v)| Cow::Owned(v)).collect()
        }
        _ => Vec::new(),
    }
}

fn evaluate_access<'a, C: Context + ?Sized>(
    base: &'a Node,
    path: &'a [Accessor],
    context: &'a C,
) -> Evaluated<'a> {
    // The common case, one property or index after a named value (`variables['X']`), needs no allocation.
    if let [accessor] = path {
        let index_value;
        let key = match accessor {
            Accessor::Property { name, .. } => PathKey::Property(name),
            Accessor::Index { index, .. } => {
                index_value = evaluate_node(index, context)?;
                PathKey::Index(index_value.as_ref())
            }
            Accessor::Wildcard { .. } => PathKey::Wildcard,
        };
        return resolve_path(base, &[key], context);
    }
    // Evaluate index expressions first (left to right), then resolve the path.
    let mut indexes: Vec<Cow<'a, Value>> = Vec::new();
    for accessor in path {
        if let Accessor::Index { index, .. } = accessor {
            indexes.push(evaluate_node(index, context)?);
        }
    }
    let mut index_values = indexes.iter();
    let keys: Vec<PathKey<'_>> = path
        .iter()
        .map(|accessor| match accessor {
            Accessor::Property { name, .. } => PathKey::Property(name),
            Accessor::Index { .. } => {
                PathKey::Index(index_values.next().map_or(&NULL, |v| v.as_ref()))
            }
            Accessor::Wildcard { .. } => PathKey::Wildcard,
        })
        .collect();
    resolve_path(base, &keys, context)
}

/// Resolves `keys` after `base`: a named value asks the context (which may apply leading keys itself), anything
/// else is evaluated; the remaining keys are applied here, a wildcard turning the rest into a filtered array.
fn resolve_path<'a, C: Context + ?Sized>(
    base: &'a Node,
    keys: &[PathKey<'_>],
    context: &'a C,
) -> Evaluated<'a> {
    let (start, consumed) = match base {
        Node::NamedValue {
            name,
            span: name_span,
        } => {
            let resolved = context
                .lookup(name, keys)
                .map_err(|message| evaluation_error(*name_span, message))?;
            (resolved.value, resolved.consumed.min(keys.len()))
        }
        other => (evaluate_node(other, context)?, 0),
    };
    let rest = &keys[consumed..];
    let Some(first_wildcard) = rest.iter().position(|k| *k == PathKey::Wildcard) else {
        let mut value = start;
        for key in rest {
            value = step(value, key);
        }
        return Ok(value);
    };
    let mut value = start;
    for key in &rest[..first_wildcard] {
        value = step(value, key);
    }
    // A filtered array: later steps apply to every selected item; items where a step finds nothing are dropped.
    let mut items = wildcard_children(value);
    for key in &rest[first_wildcard + 1..] {
        items = match key {
            PathKey::Wildcard => items.into_iter().flat_map(wildcard_children).collect(),
            _ => items
                .into_iter()
                .filter_map(|item| step_present(item, key))
                .collect(),
        };
    }
    Ok(Cow::Owned(Value::Array(
        items.into_iter().map(Cow::into_owned).collect(),
    )))
}

fn cast_error(span: Span, left: &Value, right: &Value, to: ValueKind) -> ExprError {
    ExprError::new(
        ErrorKind::Cast {
            from: right.kind(),
            to,
            value: right.clone(),
        },
        span,
        format!(
            "cannot compare {} with {}: the {} does not convert to {}",
            describe(left),
            describe(right),
            right.kind().name().to_ascii_lowercase(),
            article(to)
        ),
    )
}

fn article(kind: ValueKind) -> &'static str {
    match kind {
        ValueKind::Null => "null",
        ValueKind::Boolean => "a boolean",
        ValueKind::Number => "a number",
        ValueKind::String => "a string",
        ValueKind::Version => "a version",
        ValueKind::Array => "an array",
        ValueKind::Object => "an object",
    }
}

/// A value named for a message: `number 3`, `version '1.2'`, `string 'abc'`.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Boolean(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {}", crate::value::format_number(*n)),
        Value::String(s) => {
            let shown: String = s.chars().take(60).collect();
            let ellipsis = if shown.len() < s.len() { "..." } else { "" };
            format!("string '{shown}{ellipsis}'")
        }
        Value::Version(v) => format!("version '{v}'"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// `eq` semantics: the right value converted to the left's type; a failed conversion is "not equal".
pub(crate) fn values_equal(left: &Value, right: &Value) -> bool {
    match left {
        Value::Null => right.converts_to_null(),
        Value::Boolean(l) => *l == right.to_bool(),
        Value::Number(l) => right.convert_to_number().is_some_and(|r| *l == r),
        Value::String(l) => right
            .convert_to_string()
            .is_some_and(|r| eq_ignore_case(l, &r)),
        Value::Version(l) => right.convert_to_version().is_some_and(|r| *l == r),
        Value::Array(_) | Value::Object(_) => left == right,
    }
}

/// Ordering for `gt`/`ge`/`lt`/`le`: the right value converted to the left's type; a failed conversion is an error.
/// A null, array or object on the left is itself converted to a number first (null is 0; the others fail).
fn compare(left: &Value, right: &Value, span: Span) -> Result<Ordering, ExprError> {
    match left {
        Value::Null | Value::Array(_) | Value::Object(_) => {
            let Some(l) = left.convert_to_number() else {
                return Err(ExprError::new(
                    ErrorKind::Cast {
                        from: left.kind(),
                        to: ValueKind::Number,
                        value: left.clone(),
                    },
                    span,
                    format!(
                        "cannot compare {} with {}: the left side does not convert to a number",
                        describe(left),
                        describe(right)
                    ),
                ));
            };
            compare(&Value::Number(l), right, span)
        }
        Value::Boolean(l) => Ok(l.cmp(&right.to_bool())),
        Value::Number(l) => {
            let r = right
                .convert_to_number()
                .ok_or_else(|| cast_error(span, left, right, ValueKind::Number))?;
            l.partial_cmp(&r).ok_or_else(|| {
                evaluation_error(
                    span,
                    format!("cannot compare {} with {}", describe(left), describe(right)),
                )
            })
        }
        Value::String(l) => {
            let r = right
                .convert_to_string()
                .ok_or_else(|| cast_error(span, left, right, ValueKind::String))?;
            Ok(cmp_ignore_case(l, &r))
        }
        Value::Version(l) => {
            let r = right
                .convert_to_version()
                .ok_or_else(|| cast_error(span, left, right, ValueKind::Version))?;
            Ok(l.cmp(&r))
        }
    }
}

fn to_string_arg<'v>(
    value: &'v Value,
    function: &str,
    span: Span,
) -> Result<Cow<'v, str>, ExprError> {
    value.convert_to_string().ok_or_else(|| {
        ExprError::new(
            ErrorKind::Cast {
                from: value.kind(),
                to: ValueKind::String,
                value: value.clone(),
            },
            span,
            format!(
                "{function}() cannot convert {} to a string",
                describe(value)
            ),
        )
    })
}

fn status_result<C: Context + ?Sized>(
    function: &Function,
    names: &[String],
    span: Span,
    context: &C,
) -> Result<bool, ExprError> {
    let status = context
        .status()
        .map_err(|message| evaluation_error(span, message))?;
    let ok = |r: &TaskResult| matches!(r, TaskResult::Succeeded | TaskResult::SucceededWithIssues);
    Ok(match status {
        StatusInput::Step { job_status } => match function {
            Function::Always => true,
            Function::Canceled => job_status == Some(TaskResult::Canceled),
            Function::Failed => job_status == Some(TaskResult::Failed),
            Function::Succeeded => job_status.is_none_or(|r| ok(&r)),
            Function::SucceededOrFailed => {
                job_status.is_none_or(|r| ok(&r) || r == TaskResult::Failed)
            }
            _ => false,
        },
        StatusInput::Dependencies { results, canceled } => {
            let selected: Vec<TaskResult> = if names.is_empty() {
                results.iter().map(|(_, r)| *r).collect()
            } else {
                let mut selected = Vec::new();
                for name in names {
                    let Some((_, result)) = results.iter().find(|(n, _)| eq_ignore_case(n, name))
                    else {
                        return Err(evaluation_error(
                            span,
                            format!("'{name}' is not a dependency"),
                        ));
                    };
                    selected.push(*result);
                }
                selected
            };
            match function {
                Function::Always => true,
                Function::Canceled => canceled,
                Function::Failed => !canceled && selected.contains(&TaskResult::Failed),
                Function::Succeeded => !canceled && selected.iter().all(ok),
                Function::SucceededOrFailed => {
                    !canceled && selected.iter().all(|r| ok(r) || *r == TaskResult::Failed)
                }
                _ => false,
            }
        }
    })
}

/// Dispatches a call. Functions that short-circuit evaluate their own arguments; all others get their arguments
/// evaluated here and are computed by [`call_with_values`]. Keeping the big per-function code out of the recursive
/// path keeps each nesting level's stack frame small.
fn call<'a, C: Context + ?Sized>(
    function: &Function,
    name: &str,
    args: &'a [Node],
    span: Span,
    context: &'a C,
) -> Evaluated<'a> {
    match function {
        Function::And
        | Function::Or
        | Function::In
        | Function::NotIn
        | Function::Iif
        | Function::Coalesce => call_lazy(function, args, context),
        Function::Format => {
            let text = call_format(args, span, context)?;
            charge(context, text.len(), span)?;
            Ok(Cow::Owned(Value::String(text)))
        }
        Function::Eq | Function::Ne | Function::Gt | Function::Ge | Function::Lt | Function::Le => {
            let (Some(left), Some(right)) = (args.first(), args.get(1)) else {
                return Err(evaluation_error(
                    span,
                    format!("{name}() needs two arguments"),
                ));
            };
            let left = evaluate_node(left, context)?;
            let right = evaluate_node(right, context)?;
            compare_call(function, &left, &right, span).map(|b| Cow::Owned(Value::Boolean(b)))
        }
        _ => {
            let mut values: Vec<Cow<'a, Value>> = Vec::with_capacity(args.len());
            for node in args {
                values.push(evaluate_node(node, context)?);
            }
            let value = call_with_values(function, name, &values, span, context)?;
            charge(context, built_bytes(&value), span)?;
            Ok(Cow::Owned(value))
        }
    }
}

/// Charges the bytes a call built to the context's budget ([`Context::charge`]).
fn charge<C: Context + ?Sized>(context: &C, bytes: usize, span: Span) -> Result<(), ExprError> {
    if bytes == 0 {
        return Ok(());
    }
    context
        .charge(bytes)
        .map_err(|message| evaluation_error(span, message))
}

/// The string bytes a function result holds (strings, and the items `split` builds).
fn built_bytes(value: &Value) -> usize {
    match value {
        Value::String(text) => text.len(),
        Value::Array(items) => items.iter().map(|item| built_bytes(item) + 1).sum(),
        _ => 0,
    }
}

/// `format(pattern, args...)`: the pattern is checked first, then only the arguments it uses are evaluated, as
/// the Azure engine does (an unused argument cannot fail).
#[inline(never)]
fn call_format<C: Context + ?Sized>(
    args: &[Node],
    span: Span,
    context: &C,
) -> Result<String, ExprError> {
    let Some((pattern, rest)) = args.split_first() else {
        return Err(evaluation_error(span, "format() needs a format string"));
    };
    let pattern = evaluate_node(pattern, context)?;
    let pattern = to_string_arg(&pattern, "format", span)?;
    let segments =
        functions::parse_format(&pattern, rest.len()).map_err(|m| evaluation_error(span, m))?;
    let mut values: Vec<Option<Cow<'_, Value>>> = vec![None; rest.len()];
    for segment in &segments {
        if let functions::FormatSegment::Argument { index, .. } = segment
            && let (Some(slot), Some(node)) = (values.get_mut(*index), rest.get(*index))
            && slot.is_none()
        {
            *slot = Some(evaluate_node(node, context)?);
        }
    }
    let arguments: Vec<Option<&Value>> = values.iter().map(|v| v.as_deref()).collect();
    functions::render_format(&segments, &arguments).map_err(|m| evaluation_error(span, m))
}

/// `and`, `or`, `in`, `notIn`, `iif`, `coalesce`: arguments are evaluated only as far as needed.
fn call_lazy<'a, C: Context + ?Sized>(
    function: &Function,
    args: &'a [Node],
    context: &'a C,
) -> Evaluated<'a> {
    let boolean = |b: bool| -> Evaluated<'a> { Ok(Cow::Owned(Value::Boolean(b))) };
    match function {
        Function::And => {
            for node in args {
                if !evaluate_node(node, context)?.to_bool() {
                    return boolean(false);
                }
            }
            boolean(true)
        }
        Function::Or => {
            for node in args {
                if evaluate_node(node, context)?.to_bool() {
                    return boolean(true);
                }
            }
            boolean(false)
        }
        Function::In | Function::NotIn => {
            let Some((first, rest)) = args.split_first() else {
                return boolean(false);
            };
            let left = evaluate_node(first, context)?;
            for node in rest {
                if values_equal(&left, evaluate_node(node, context)?.as_ref()) {
                    return boolean(*function == Function::In);
                }
            }
            boolean(*function == Function::NotIn)
        }
        Function::Iif => {
            let condition = match args.first() {
                Some(node) => evaluate_node(node, context)?.to_bool(),
                None => false,
            };
            let (taken, other) = if condition {
                (args.get(1), args.get(2))
            } else {
                (args.get(2), args.get(1))
            };
            // Both branches are checked, as a peer Azure Pipelines emulator reports (an undeclared parameter in
            // the branch not taken is still an error); only the taken branch's value is returned.
            if let Some(node) = other {
                evaluate_node(node, context)?;
            }
            match taken {
                Some(node) => evaluate_node(node, context),
                None => Ok(Cow::Borrowed(&NULL)),
            }
        }
        _ => {
            // coalesce
            for node in args {
                let value = evaluate_node(node, context)?;
                if !value.converts_to_null() {
                    return Ok(value);
                }
            }
            Ok(Cow::Borrowed(&NULL))
        }
    }
}

#[inline(never)]
fn compare_call(
    function: &Function,
    left: &Value,
    right: &Value,
    span: Span,
) -> Result<bool, ExprError> {
    Ok(match function {
        Function::Eq => values_equal(left, right),
        Function::Ne => !values_equal(left, right),
        _ => {
            let ordering = compare(left, right, span)?;
            match function {
                Function::Gt => ordering == Ordering::Greater,
                Function::Ge => ordering != Ordering::Less,
                Function::Lt => ordering == Ordering::Less,
                _ => ordering != Ordering::Greater,
            }
        }
    })
}

/// Every function whose arguments are all evaluated up front.
#[inline(never)]
fn call_with_values<C: Context + ?Sized>(
    function: &Function,
    name: &str,
    values: &[Cow<'_, Value>],
    span: Span,
    context: &C,
) -> Result<Value, ExprError> {
    let arg = |i: usize| -> &Value { values.get(i).map_or(&NULL, |v| v.as_ref()) };
    let function_name = function.canonical_name().unwrap_or(name);
    let text = |i: usize| to_string_arg(arg(i), function_name, span);
    Ok(match function {
        Function::Not => Value::Boolean(!arg(0).to_bool()),
        Function::Xor => Value::Boolean(arg(0).to_bool() != arg(1).to_bool()),
        Function::Contains | Function::StartsWith | Function::EndsWith => {
            let haystack = text(0)?;
            let needle = text(1)?;
            let haystack = crate::value::fold_case(&haystack);
            let needle = crate::value::fold_case(&needle);
            Value::Boolean(match function {
                Function::Contains => haystack.contains(needle.as_ref()),
                Function::StartsWith => haystack.starts_with(needle.as_ref()),
                _ => haystack.ends_with(needle.as_ref()),
            })
        }
        Function::ContainsValue => {
            let wanted = arg(1);
            Value::Boolean(match arg(0) {
                Value::Array(items) => items.iter().any(|item| values_equal(wanted, item)),
                Value::Object(object) => object.values().any(|item| values_equal(wanted, item)),
                _ => false,
            })
        }
        Function::Join => Value::String(
            functions::join(&text(0)?, arg(1)).map_err(|m| evaluation_error(span, m))?,
        ),
        Function::Split => functions::split(&text(0)?, &text(1)?),
        Function::Replace => {
            let (subject, old, new) = (text(0)?, text(1)?, text(2)?);
            Value::String(
                functions::replace(&subject, &old, &new).map_err(|m| evaluation_error(span, m))?,
            )
        }
        Function::Lower => Value::String(text(0)?.to_lowercase()),
        Function::Upper => Value::String(text(0)?.to_uppercase()),
        Function::Trim => Value::String(text(0)?.trim().to_string()),
        Function::Length => {
            let length = match arg(0) {
                Value::Null => 0,
                Value::String(s) => s.encode_utf16().count(),
                Value::Array(items) => items.len(),
                Value::Object(object) => object.len(),
                other => {
                    return Err(evaluation_error(
                        span,
                        format!(
                            "length() expects a string, an array or an object, not {}",
                            describe(other)
                        ),
                    ));
                }
            };
            Value::Number(length as f64)
        }
        Function::ConvertToJson => Value::String(functions::to_json(arg(0), true)),
        Function::Counter => {
            let prefix = text(0)?;
            let seed = arg(1).convert_to_number().ok_or_else(|| {
                evaluation_error(
                    span,
                    format!(
                        "counter() needs a number as its seed, not {}",
                        describe(arg(1))
                    ),
                )
            })?;
            Value::Number(
                context
                    .counter(&prefix, seed)
                    .map_err(|m| evaluation_error(span, m))?,
            )
        }
        Function::Always
        | Function::Canceled
        | Function::Failed
        | Function::Succeeded
        | Function::SucceededOrFailed => {
            let mut names = Vec::new();
            for i in 0..values.len() {
                names.push(text(i)?.into_owned());
            }
            Value::Boolean(status_result(function, &names, span, context)?)
        }
        Function::Extra => {
            let owned: Vec<Value> = values.iter().map(|v| v.as_ref().clone()).collect();
            context
                .call_function(name, &owned)
                .map_err(|m| evaluation_error(span, m))?
        }
        Function::Unknown => {
            return Err(ExprError::new(
                ErrorKind::UnrecognizedFunction,
                span,
                format!("unrecognized function: '{name}'."),
            ));
        }
        // Handled by `call` / `call_lazy`.
        Function::And
        | Function::Or
        | Function::In
        | Function::NotIn
        | Function::Iif
        | Function::Coalesce
        | Function::Format
        | Function::Eq
        | Function::Ne
        | Function::Gt
        | Function::Ge
        | Function::Lt
        | Function::Le => {
            return Err(evaluation_error(
                span,
                format!("{name}() was dispatched incorrectly"),
            ));
        }
    })
}
