//! Template expansion of one YAML tree: `${{ }}` expressions in keys and values, the directives
//! `if`/`elseif`/`else`, `each` and `insert`, with a scope of parameters, variables and loop items.
//! Template includes (`- template:`) are left in place for lowering, which resolves them.

use std::cell::Cell;
use std::rc::Rc;

use lockgate_expr::{Object, Value};

use crate::expression::{self, ExpressionScope};
use crate::yaml::{KeyIndex, Node, NodeValue, Span};

/// Deepest tree that expansion builds (parameters inserted into templates can nest trees).
pub const MAX_EXPANDED_DEPTH: usize = 200;
/// Most nodes that expansion may produce in one compile (protects memory against `each` blow-ups).
pub const MAX_EXPANDED_NODES: usize = 500_000;
/// Most bytes of text that expansion may build in one compile: scalars and keys it produces plus every
/// string the expression functions build along the way (`replace`, `format`, `join`, ...), so that a few
/// nested functions inside `${{ each }}` cannot exhaust memory.
pub const MAX_EXPANDED_BYTES: usize = 32 * 1024 * 1024;

/// The message of the byte budget, shared by the expander and the expression scope.
pub fn too_many_bytes() -> String {
    format!("template expansion built more than {MAX_EXPANDED_BYTES} bytes of text")
}

/// The names visible to `${{ }}` expressions.
#[derive(Clone, Default)]
pub struct Scope {
    /// `parameters`, already bound and type-checked, as nodes (their spans point at the caller).
    pub parameters: Rc<Vec<(String, Node)>>,
    /// Compile-time variables (`variables.X`), later definitions win.
    pub variables: Rc<Vec<(String, String)>>,
    /// Loop variables of enclosing `${{ each }}` directives, innermost last.
    pub locals: Vec<(String, Rc<Node>)>,
    /// Whether referencing an undeclared parameter is an error (the file declares parameters) or
    /// gives null (the file declares none, the older untyped form).
    pub strict_parameters: bool,
}

impl Scope {
    /// Looks up a variable ignoring case; the last definition wins.
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.variables
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn parameter(&self, name: &str) -> Option<&Node> {
        self.parameters
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn local(&self, name: &str) -> Option<&Node> {
        self.locals
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    /// Returns a scope with `variables` extended by the given definitions.
    pub fn with_variables(&self, extra: Vec<(String, String)>) -> Scope {
        if extra.is_empty() {
            return self.clone();
        }
        let mut variables = (*self.variables).clone();
        variables.extend(extra);
        Scope {
            variables: Rc::new(variables),
            ..self.clone()
        }
    }
}

/// A problem found while expanding, reported by the caller with the file name.
pub struct ExpansionError {
    pub code: &'static str,
    pub message: String,
    pub span: Span,
    pub label: String,
}

/// Expands one tree. Errors are collected; the result is still produced where possible.
pub struct Expander<'r> {
    pub errors: Vec<ExpansionError>,
    /// Nodes produced so far in this compile (carried from one expansion to the next).
    pub produced: usize,
    /// Bytes of text built so far in this compile (carried like `produced`, capped by
    /// `MAX_EXPANDED_BYTES`).
    pub built: Cell<usize>,
    /// Set once a budget is exhausted: expansion then stops producing anything.
    pub exhausted: bool,
    /// Gives the compile-time variables of a `- template:` entry of a `variables` list, so that
    /// later `${{ variables.X }}` see them.
    pub variable_templates: Option<VariableTemplateResolver<'r>>,
}

/// See [`Expander::variable_templates`].
pub type VariableTemplateResolver<'r> = &'r mut dyn FnMut(&Node, &Scope) -> Vec<(String, String)>;

/// A template directive found in a mapping key.
enum Directive<'a> {
    If(&'a str),
    ElseIf(&'a str),
    Else,
    Each {
        variable: &'a str,
        collection: &'a str,
    },
    Insert,
}

impl Default for Expander<'_> {
    fn default() -> Self {
        Expander::new()
    }
}

impl Expander<'_> {
    pub fn new() -> Self {
        Expander {
            errors: Vec::new(),
            produced: 0,
            built: Cell::new(0),
            exhausted: false,
            variable_templates: None,
        }
    }

    fn error(
        &mut self,
        code: &'static str,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) {
        self.errors.push(ExpansionError {
            code,
            message: message.into(),
            span,
            label: label.into(),
        });
    }

    /// Expands `node` in `scope`. Returns None when the node expands to nothing.
    pub fn expand(&mut self, node: &Node, scope: &Scope) -> Node {
        self.expand_at(node, scope, 0)
    }

    fn count(&mut self, span: Span) -> bool {
        self.charge(1, 0, span, None)
    }

    /// Charges `nodes` nodes and `bytes` bytes of text to the compile's budgets. Past either one,
    /// records `pipeline::too-large` once (naming `expr`, the expression that went over, when there
    /// is one) and returns false; expansion then stops.
    fn charge(&mut self, nodes: usize, bytes: usize, span: Span, expr: Option<&str>) -> bool {
        if self.exhausted {
            return false;
        }
        self.produced = self.produced.saturating_add(nodes);
        self.built.set(self.built.get().saturating_add(bytes));
        let message = if self.produced > MAX_EXPANDED_NODES {
            format!("template expansion produced more than {MAX_EXPANDED_NODES} nodes")
        } else if self.built.get() > MAX_EXPANDED_BYTES {
            too_many_bytes()
        } else {
            return true;
        };
        self.over_budget(message, span, expr);
        false
    }

    fn over_budget(&mut self, message: String, span: Span, expr: Option<&str>) {
        self.exhausted = true;
        let label = match expr {
            Some(expr) => format!("expansion stopped at `${{{{ {} }}}}`", expr.trim()),
            None => "expansion stopped here".to_string(),
        };
        self.error("pipeline::too-large", message, span, label);
    }

    /// Charges a node that an expression produced: every node and byte of text below it.
    fn charge_inserted(&mut self, node: &Node, span: Span, expr: &str) -> bool {
        let (nodes, bytes) = node_size(node);
        self.charge(nodes.saturating_sub(1), bytes, span, Some(expr))
    }

    fn expand_at(&mut self, node: &Node, scope: &Scope, depth: usize) -> Node {
        if depth > MAX_EXPANDED_DEPTH {
            if depth == MAX_EXPANDED_DEPTH + 1 {
                self.error(
                    "pipeline::too-deep",
                    format!("the expanded pipeline nests deeper than {MAX_EXPANDED_DEPTH} levels"),
                    node.span,
                    "too deep",
                );
            }
            return Node::scalar("", true, node.span);
        }
        if !self.count(node.span) {
            return Node::scalar("", true, node.span);
        }
        match &node.value {
            NodeValue::Scalar { text, plain } => self.expand_scalar(text, *plain, node.span, scope),
            NodeValue::Sequence(items) => Node {
                value: NodeValue::Sequence(self.expand_sequence(items, scope, depth)),
                span: node.span,
            },
            NodeValue::Mapping(entries) => Node {
                value: NodeValue::Mapping(self.expand_mapping(entries, scope, depth)),
                span: node.span,
            },
        }
    }

    fn expand_scalar(&mut self, text: &str, plain: bool, span: Span, scope: &Scope) -> Node {
        if !text.contains("${{") {
            if !self.charge(0, text.len(), span, None) {
                return Node::scalar("", true, span);
            }
            return Node::scalar(text, plain, span);
        }
        let pieces = match expression::split_template(text) {
            Ok(pieces) => pieces,
            Err(message) => {
                self.error(
                    "pipeline::invalid-expression",
                    message,
                    span,
                    "in this value",
                );
                return Node::scalar(text, plain, span);
            }
        };
        if let [expression::Piece::Expression(expr)] = pieces.as_slice() {
            return match self.evaluate_to_node(expr, span, scope) {
                Some(node) if self.charge_inserted(&node, span, expr) => node,
                _ => Node::scalar("", true, span),
            };
        }
        let mut out = String::new();
        for piece in &pieces {
            match piece {
                expression::Piece::Text(t) => out.push_str(t),
                expression::Piece::Expression(expr) => match self.evaluate(expr, span, scope) {
                    Some(Value::Array(_)) | Some(Value::Object(_)) => self.error(
                        "pipeline::invalid-expression",
                        format!("`{}` gives a sequence or mapping, which cannot be inserted into a string", expr.trim()),
                        span,
                        "in this value",
                    ),
                    Some(value) => {
                        let piece = value.to_display_string();
                        if !self.charge(0, piece.len(), span, Some(expr)) {
                            return Node::scalar("", true, span);
                        }
                        out.push_str(&piece);
                    }
                    None => {}
                },
            }
        }
        Node::scalar(out, false, span)
    }

    /// Evaluates an expression; on error records it and returns None.
    fn evaluate(&mut self, expr: &str, span: Span, scope: &Scope) -> Option<Value> {
        if let Some(node) = resolve_path(expr, scope) {
            return Some(node_to_value(&node));
        }
        if self.exhausted {
            return None;
        }
        let context = ExpressionScope::new(scope).with_budget(&self.built);
        match expression::evaluate_template(expr, &context) {
            Ok(value) => Some(value),
            Err(_) if self.built.get() > MAX_EXPANDED_BYTES => {
                self.over_budget(too_many_bytes(), span, Some(expr));
                None
            }
            Err(message) => {
                self.error(
                    "pipeline::invalid-expression",
                    message,
                    span,
                    format!("in `${{{{ {} }}}}`", expr.trim()),
                );
                None
            }
        }
    }

    /// Evaluates an expression to a node, keeping the source spans of parameter values when the
    /// expression is a plain path such as `parameters.steps`.
    fn evaluate_to_node(&mut self, expr: &str, span: Span, scope: &Scope) -> Option<Node> {
        if let Some(node) = resolve_path(expr, scope) {
            return Some(node.clone());
        }
        let value = self.evaluate(expr, span, scope)?;
        Some(value_to_node(&value, span))
    }

    fn expand_sequence(&mut self, items: &[Node], scope: &Scope, depth: usize) -> Vec<Node> {
        let mut out = Vec::with_capacity(items.len());
        let mut chain: Option<bool> = None;
        for item in items {
            // A scalar item that is a single expression giving a sequence is spliced in.
            if let NodeValue::Scalar { text, .. } = &item.value
                && text.contains("${{")
            {
                chain = None;
                let expanded = self.expand_at(item, scope, depth + 1);
                match expanded.value {
                    NodeValue::Sequence(inner) => out.extend(inner),
                    _ if expanded.is_null() && is_single_expression(text) => {}
                    _ => out.push(expanded),
                }
                continue;
            }
            if let NodeValue::Mapping(entries) = &item.value
                && !entries.is_empty()
                && entries
                    .iter()
                    .all(|(k, _)| k.as_str().and_then(parse_directive).is_some())
            {
                // Sequence bodies are spliced into this sequence. A lone `if`/`elseif`/`else`/
                // `insert` holding a mapping gives one item (and chains with the items around it);
                // `each` or several directives holding mappings build one mapping item together.
                let single_non_each = entries.len() == 1
                    && !matches!(
                        entries[0].0.as_str().and_then(parse_directive),
                        Some(Directive::Each { .. })
                    );
                let splice = single_non_each
                    || entries
                        .iter()
                        .all(|(_, v)| matches!(v.value, NodeValue::Sequence(_)) || v.is_null());
                if splice {
                    for (key, value) in entries {
                        let Some(directive) = key.as_str().and_then(parse_directive) else {
                            continue;
                        };
                        let bodies =
                            self.apply_directive(&directive, key, value, scope, depth, &mut chain);
                        for body in bodies {
                            match body.value {
                                NodeValue::Sequence(inner) => out.extend(inner),
                                NodeValue::Mapping(ref inner) if inner.is_empty() => {}
                                _ if body.is_null() => {}
                                _ => out.push(body),
                            }
                        }
                    }
                    continue;
                }
                // Directives holding mappings: the item is one mapping built from them.
                chain = None;
                let expanded = self.expand_mapping(entries, scope, depth);
                if !expanded.is_empty() {
                    out.push(Node {
                        value: NodeValue::Mapping(expanded),
                        span: item.span,
                    });
                }
                continue;
            }
            chain = None;
            out.push(self.expand_at(item, scope, depth + 1));
        }
        out
    }

    /// Applies one directive and returns the expanded bodies it selects (zero, one, or one per
    /// `each` item). `chain` tracks whether an `if`/`elseif` branch before it was taken.
    fn apply_directive(
        &mut self,
        directive: &Directive<'_>,
        key: &Node,
        value: &Node,
        scope: &Scope,
        depth: usize,
        chain: &mut Option<bool>,
    ) -> Vec<Node> {
        let mut bodies = Vec::new();
        match directive {
            Directive::If(condition) => {
                let taken = self
                    .evaluate(condition, key.span, scope)
                    .is_some_and(|v| v.to_bool());
                *chain = Some(taken);
                if taken {
                    bodies.push(self.expand_at(value, scope, depth + 1));
                }
            }
            Directive::ElseIf(condition) => match *chain {
                None => self.error(
                    "pipeline::misplaced-directive",
                    "`elseif` must follow an `if` or `elseif`",
                    key.span,
                    "no `if` before this",
                ),
                Some(true) => {}
                Some(false) => {
                    let taken = self
                        .evaluate(condition, key.span, scope)
                        .is_some_and(|v| v.to_bool());
                    *chain = Some(taken);
                    if taken {
                        bodies.push(self.expand_at(value, scope, depth + 1));
                    }
                }
            },
            Directive::Else => {
                match *chain {
                    None => self.error(
                        "pipeline::misplaced-directive",
                        "`else` must follow an `if` or `elseif`",
                        key.span,
                        "no `if` before this",
                    ),
                    Some(true) => {}
                    Some(false) => bodies.push(self.expand_at(value, scope, depth + 1)),
                }
                *chain = None;
            }
            Directive::Each {
                variable,
                collection,
            } => {
                *chain = None;
                let Some(items) = self.each_items(collection, key.span, scope) else {
                    return bodies;
                };
                for item in items {
                    let mut inner = scope.clone();
                    inner.locals.push((variable.to_string(), Rc::new(item)));
                    bodies.push(self.expand_at(value, &inner, depth + 1));
                    if self.exhausted {
                        break;
                    }
                }
            }
            Directive::Insert => {
                *chain = None;
                bodies.push(self.expand_at(value, scope, depth + 1));
            }
        }
        bodies
    }

    /// The items an `each` iterates: sequence items, or `{key, value}` pairs of a mapping.
    fn each_items(&mut self, collection: &str, span: Span, scope: &Scope) -> Option<Vec<Node>> {
        let node = self.evaluate_to_node(collection, span, scope)?;
        match node.value {
            NodeValue::Sequence(items) => Some(items),
            NodeValue::Mapping(entries) => Some(
                entries
                    .into_iter()
                    .map(|(k, v)| {
                        let span = k.span;
                        let key = Node::scalar("key", true, span);
                        let value_key = Node::scalar("value", true, span);
                        Node {
                            value: NodeValue::Mapping(vec![(key, k), (value_key, v)]),
                            span,
                        }
                    })
                    .collect(),
            ),
            _ if node.is_null() => Some(Vec::new()),
            _ => {
                self.error(
                    "pipeline::invalid-each",
                    format!(
                        "`each` needs a sequence or a mapping, but `{}` is {}",
                        collection.trim(),
                        node.kind_name()
                    ),
                    span,
                    "in this `each`",
                );
                None
            }
        }
    }

    fn expand_mapping(
        &mut self,
        entries: &[(Node, Node)],
        scope: &Scope,
        depth: usize,
    ) -> Vec<(Node, Node)> {
        let mut out: Vec<(Node, Node)> = Vec::with_capacity(entries.len());
        let mut index = KeyIndex::default();
        let mut chain: Option<bool> = None;
        let mut scope = scope.clone();
        for (key, value) in entries {
            let key_text = key.as_str().unwrap_or("");
            if key_text.contains("${{") {
                if let Some(directive) = parse_directive(key_text) {
                    let bodies =
                        self.apply_directive(&directive, key, value, &scope, depth, &mut chain);
                    for body in bodies {
                        self.merge_into_mapping(&mut out, &mut index, body, key.span);
                    }
                    continue;
                }
                chain = None;
                let new_key = self.expand_scalar(key_text, false, key.span, &scope);
                let Some(new_key_text) = new_key.as_str() else {
                    self.error(
                        "pipeline::invalid-key",
                        "a mapping key must expand to a string",
                        key.span,
                        "this key",
                    );
                    continue;
                };
                let new_key = Node::scalar(new_key_text, true, key.span);
                let expanded = self.expand_at(value, &scope, depth + 1);
                set_entry(&mut out, &mut index, new_key, expanded);
                continue;
            }
            chain = None;
            if !self.charge(0, key_text.len(), key.span, None) {
                break;
            }
            let expanded = self.expand_at(value, &scope, depth + 1);
            if key_text == "variables" {
                let mut statics = static_variables(&expanded);
                if let (Some(resolve), Some(items)) =
                    (self.variable_templates.as_mut(), expanded.as_sequence())
                {
                    for item in items.iter().filter(|i| i.get("template").is_some()) {
                        let inner = scope.with_variables(statics.clone());
                        statics.extend(resolve(item, &inner));
                    }
                }
                scope = scope.with_variables(statics);
            }
            set_entry(&mut out, &mut index, key.clone(), expanded);
        }
        out
    }

    fn merge_into_mapping(
        &mut self,
        out: &mut Vec<(Node, Node)>,
        index: &mut KeyIndex,
        body: Node,
        span: Span,
    ) {
        match body.value {
            NodeValue::Mapping(entries) => {
                for (k, v) in entries {
                    set_entry(out, index, k, v);
                }
            }
            _ if body.is_null() => {}
            _ => self.error(
                "pipeline::invalid-insert",
                format!(
                    "this directive sits in a mapping, so its content must be a mapping, not {}",
                    body.kind_name()
                ),
                span,
                "this directive",
            ),
        }
    }
}

/// The nodes and bytes of text in a tree.
fn node_size(node: &Node) -> (usize, usize) {
    match &node.value {
        NodeValue::Scalar { text, .. } => (1, text.len()),
        NodeValue::Sequence(items) => items.iter().fold((1, 0), |(n, b), item| {
            let (dn, db) = node_size(item);
            (n + dn, b + db)
        }),
        NodeValue::Mapping(entries) => entries.iter().fold((1, 0), |(n, b), (k, v)| {
            let (kn, kb) = node_size(k);
            let (vn, vb) = node_size(v);
            (n + kn + vn, b + kb + vb)
        }),
    }
}

/// Adds or replaces a mapping entry (a later key replaces an earlier one of the same name, keeping
/// the earlier one's place). `index` must have seen only `out`.
fn set_entry(out: &mut Vec<(Node, Node)>, index: &mut KeyIndex, key: Node, value: Node) {
    if let Some(name) = key.as_str()
        && let Some(at) = index.find(out, name)
    {
        out[at].1 = value;
        return;
    }
    out.push((key, value));
}

fn is_single_expression(text: &str) -> bool {
    matches!(
        expression::split_template(text).as_deref(),
        Ok([expression::Piece::Expression(_)])
    )
}

/// Recognises `${{ if c }}`, `${{ elseif c }}`, `${{ else }}`, `${{ each x in c }}`, `${{ insert }}`.
fn parse_directive(key: &str) -> Option<Directive<'_>> {
    let inner = key.trim().strip_prefix("${{")?.strip_suffix("}}")?.trim();
    let (word, rest) = match inner.find(|c: char| c.is_whitespace() || c == '(') {
        Some(at) => (&inner[..at], inner[at..].trim()),
        None => (inner, ""),
    };
    match word {
        "if" if !rest.is_empty() => Some(Directive::If(rest)),
        "elseif" if !rest.is_empty() => Some(Directive::ElseIf(rest)),
        "else" if rest.is_empty() => Some(Directive::Else),
        "insert" if rest.is_empty() => Some(Directive::Insert),
        "each" => {
            let (variable, collection) = rest.split_once(char::is_whitespace)?;
            let collection = collection.trim_start().strip_prefix("in")?;
            if !collection.starts_with(char::is_whitespace) {
                return None;
            }
            Some(Directive::Each {
                variable: variable.trim(),
                collection: collection.trim(),
            })
        }
        _ => None,
    }
}

/// Name/value pairs of a `variables:` value that are known without running anything (map form and
/// `- name:`/`value:` items).
pub fn static_variables(node: &Node) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match &node.value {
        NodeValue::Mapping(entries) => {
            for (k, v) in entries {
                if let (Some(name), Some(value)) = (k.as_str(), v.as_str()) {
                    out.push((name.to_string(), value.to_string()));
                }
            }
        }
        NodeValue::Sequence(items) => {
            for item in items {
                if let (Some(name), Some(value)) = (
                    item.get("name").and_then(Node::as_str),
                    item.get("value").and_then(Node::as_str),
                ) {
                    out.push((name.to_string(), value.to_string()));
                }
            }
        }
        NodeValue::Scalar { .. } => {}
    }
    out
}

/// One step of a property path: `.name`, `['name']` or `[0]`.
enum PathStep<'a> {
    Name(&'a str),
    Index(usize),
}

/// Resolves a plain property path (`parameters.a.b`, `item['x']`, `list[0]`) directly on the
/// nodes, so that inserted values keep their source positions. None when the expression is not a
/// plain path or does not resolve to a node (the evaluator then handles it).
pub fn resolve_path(expr: &str, scope: &Scope) -> Option<Node> {
    let text = expr.trim();
    let root_end = text.find(['.', '[']).unwrap_or(text.len());
    let root = &text[..root_end];
    if root.is_empty() || !root.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let mut steps = Vec::new();
    let mut rest = &text[root_end..];
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let name = &after[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return None;
            }
            steps.push(PathStep::Name(name));
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix("['") {
            let end = after.find("']")?;
            let name = &after[..end];
            if name.contains('\'') {
                return None;
            }
            steps.push(PathStep::Name(name));
            rest = &after[end + 2..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let index: usize = after[..end].trim().parse().ok()?;
            steps.push(PathStep::Index(index));
            rest = &after[end + 1..];
        } else {
            return None;
        }
    }
    let (start, steps): (&Node, &[PathStep<'_>]) = if root.eq_ignore_ascii_case("parameters") {
        match steps.split_first() {
            Some((PathStep::Name(first), remaining)) => (scope.parameter(first)?, remaining),
            _ => return None,
        }
    } else {
        (scope.local(root)?, &steps)
    };
    let mut current = start;
    for step in steps {
        current = match step {
            PathStep::Name(name) => {
                &current
                    .as_mapping()?
                    .iter()
                    .find(|(k, _)| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case(name)))?
                    .1
            }
            PathStep::Index(index) => current.as_sequence()?.get(*index)?,
        };
    }
    Some(current.clone())
}

/// Converts a node to an expression value. Plain scalars follow the YAML core schema (`true`, `1`,
/// `null` are typed); quoted scalars are strings.
pub fn node_to_value(node: &Node) -> Value {
    match &node.value {
        NodeValue::Scalar { text, plain: true } => plain_scalar_value(text),
        NodeValue::Scalar { text, plain: false } => Value::String(text.clone()),
        NodeValue::Sequence(items) => Value::Array(items.iter().map(node_to_value).collect()),
        NodeValue::Mapping(entries) => {
            let mut object = Object::new();
            for (k, v) in entries {
                object.insert(k.as_str().unwrap_or_default(), node_to_value(v));
            }
            Value::Object(object)
        }
    }
}

/// Types a plain scalar: booleans, null, numbers, else a string.
pub fn plain_scalar_value(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Boolean(true),
        "false" | "False" | "FALSE" => Value::Boolean(false),
        _ => match parse_yaml_number(text) {
            Some(n) => Value::Number(n),
            None => Value::String(text.to_string()),
        },
    }
}

fn parse_yaml_number(text: &str) -> Option<f64> {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    if body.is_empty() || !body.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    if !body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
    {
        return None;
    }
    text.parse::<f64>().ok()
}

/// Converts an expression value back to a node placed at `span`.
pub fn value_to_node(value: &Value, span: Span) -> Node {
    match value {
        Value::Null => Node::scalar("", true, span),
        Value::Boolean(_) | Value::Number(_) => Node::scalar(value.to_display_string(), true, span),
        Value::String(s) => Node::scalar(s.clone(), false, span),
        Value::Version(_) => Node::scalar(value.to_display_string(), false, span),
        Value::Array(items) => Node {
            value: NodeValue::Sequence(items.iter().map(|v| value_to_node(v, span)).collect()),
            span,
        },
        Value::Object(object) => Node {
            value: NodeValue::Mapping(
                object
                    .iter()
                    .map(|(k, v)| (Node::scalar(k, true, span), value_to_node(v, span)))
                    .collect(),
            ),
            span,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::load;

    fn node(text: &str) -> Node {
        load(text, 0, "t.yml").expect("test yaml parses")
    }

    #[test]
    fn directives_are_recognised_and_others_are_not() {
        assert!(matches!(
            parse_directive("${{ if eq(1, 1) }}"),
            Some(Directive::If("eq(1, 1)"))
        ));
        assert!(matches!(
            parse_directive("${{elseif true}}"),
            Some(Directive::ElseIf("true"))
        ));
        assert!(matches!(
            parse_directive("${{ else }}"),
            Some(Directive::Else)
        ));
        assert!(matches!(
            parse_directive("${{ insert }}"),
            Some(Directive::Insert)
        ));
        assert!(matches!(
            parse_directive("${{ each step in parameters.steps }}"),
            Some(Directive::Each {
                variable: "step",
                collection: "parameters.steps"
            })
        ));
        assert!(parse_directive("${{ parameters.name }}").is_none());
        assert!(parse_directive("${{ each x inparameters.y }}").is_none());
        assert!(parse_directive("${{ else true }}").is_none());
        assert!(parse_directive("${{ if }}").is_none());
    }

    #[test]
    fn paths_resolve_on_nodes_ignoring_case_and_keep_spans() {
        let parameters = node("steps:\n- script: a\n- script: b\nmap:\n  Key: value\n");
        let scope = Scope {
            parameters: Rc::new(
                parameters
                    .as_mapping()
                    .unwrap_or(&[])
                    .iter()
                    .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), v.clone()))
                    .collect(),
            ),
            ..Scope::default()
        };
        let second = resolve_path("parameters.steps[1]", &scope).expect("resolves");
        assert_eq!(second.get("script").and_then(Node::as_str), Some("b"));
        assert_eq!(second.span.line, 3);
        let value = resolve_path("parameters['MAP'].key", &scope).expect("resolves");
        assert_eq!(value.as_str(), Some("value"));
        assert!(resolve_path("parameters.steps[5]", &scope).is_none());
        assert!(resolve_path("length(parameters.steps)", &scope).is_none());
        assert!(resolve_path("parameters.my-param", &scope).is_none());
    }

    #[test]
    fn plain_scalars_are_typed_and_quoted_ones_are_strings() {
        let value = node_to_value(&node("a: true\nb: '1'\nc: 1.5\nd: ~\ne: yes\n"));
        let object = value.as_object().expect("mapping");
        assert_eq!(object.get("a"), Some(&Value::Boolean(true)));
        assert_eq!(object.get("b"), Some(&Value::String("1".into())));
        assert_eq!(object.get("c"), Some(&Value::Number(1.5)));
        assert_eq!(object.get("d"), Some(&Value::Null));
        assert_eq!(object.get("e"), Some(&Value::String("yes".into())));
    }

    #[test]
    fn later_keys_replace_earlier_ones_when_merging() {
        let mut entries = Vec::new();
        let mut index = KeyIndex::default();
        let span = Span::default();
        set_entry(
            &mut entries,
            &mut index,
            Node::scalar("a", true, span),
            Node::scalar("1", true, span),
        );
        set_entry(
            &mut entries,
            &mut index,
            Node::scalar("b", true, span),
            Node::scalar("2", true, span),
        );
        set_entry(
            &mut entries,
            &mut index,
            Node::scalar("a", true, span),
            Node::scalar("3", true, span),
        );
        let rendered: Vec<(&str, &str)> = entries
            .iter()
            .map(|(k, v)| (k.as_str().unwrap_or(""), v.as_str().unwrap_or("")))
            .collect();
        assert_eq!(rendered, [("a", "3"), ("b", "2")]);
    }
}
