//! Typed parameters: binding the values a template reference (or `--param`) provides to the
//! `parameters:` declarations of a file, with defaults, type checks and `values` allow-lists.

use crate::compiler::Compiler;
use crate::yaml::{self, Node, NodeValue, Span};

/// Parameter types that template and pipeline files may declare.
const TYPES: &[&str] = &[
    "string",
    "number",
    "boolean",
    "object",
    "step",
    "stepList",
    "job",
    "jobList",
    "deployment",
    "deploymentList",
    "stage",
    "stageList",
    "stringList",
    "legacyObject",
    "container",
    "containerList",
    "environment",
    "filePath",
    "pool",
    "secureFile",
    "serviceConnection",
];

struct Declaration<'n> {
    name: String,
    r#type: String,
    default: Option<&'n Node>,
    values: Option<&'n Node>,
    span: Span,
}

/// Reads declarations; reports malformed ones.
fn declarations<'n>(c: &mut Compiler<'_>, declared: &'n Node) -> Vec<Declaration<'n>> {
    let mut out = Vec::new();
    match &declared.value {
        NodeValue::Sequence(items) => {
            for item in items {
                let Some(entries) = item.as_mapping() else {
                    c.error(
                        "pipeline::wrong-type",
                        "a parameter declaration must be a mapping with `name`",
                        item.span,
                        format!("found {}", item.kind_name()),
                    );
                    continue;
                };
                c.check_keys(
                    entries,
                    &[&["name", "displayName", "type", "default", "values"]],
                    "a parameter declaration",
                );
                let Some(name) = item.get("name").and_then(Node::as_str) else {
                    c.error(
                        "pipeline::missing-key",
                        "a parameter declaration needs `name`",
                        item.span,
                        "no `name`",
                    );
                    continue;
                };
                let r#type = item
                    .get("type")
                    .and_then(Node::as_str)
                    .unwrap_or("string")
                    .to_string();
                let type_node = item.get("type");
                let Some(canonical) = TYPES.iter().find(|t| t.eq_ignore_ascii_case(&r#type)) else {
                    let span = type_node.map_or(item.span, |n| n.span);
                    let d = c.error(
                        "pipeline::invalid-parameter-type",
                        format!("unknown parameter type `{type}`"),
                        span,
                        "this type",
                    );
                    d.help = crate::lower::suggest(&r#type, TYPES)
                        .or(Some(format!("known types: {}", TYPES.join(", "))));
                    continue;
                };
                if out
                    .iter()
                    .any(|d: &Declaration<'_>| d.name.eq_ignore_ascii_case(name))
                {
                    c.error(
                        "pipeline::duplicate-name",
                        format!("parameter `{name}` is declared twice"),
                        item.span,
                        "second declaration",
                    );
                    continue;
                }
                out.push(Declaration {
                    name: name.to_string(),
                    r#type: canonical.to_string(),
                    default: item.get("default"),
                    values: item.get("values"),
                    span: item.span,
                });
            }
        }
        NodeValue::Mapping(entries) => {
            // The older form: `parameters: {name: default}`, untyped.
            for (key, value) in entries {
                let Some(name) = key.as_str() else { continue };
                out.push(Declaration {
                    name: name.to_string(),
                    r#type: "legacyObject".into(),
                    default: Some(value),
                    values: None,
                    span: key.span,
                });
            }
        }
        NodeValue::Scalar { .. } if declared.is_null() => {}
        NodeValue::Scalar { .. } => {
            c.error(
                "pipeline::wrong-type",
                "`parameters` must be a sequence of declarations",
                declared.span,
                format!("found {}", declared.kind_name()),
            );
        }
    }
    out
}

/// Binds provided values to the declarations (see [`Compiler::bind_parameters`]).
pub fn bind(
    c: &mut Compiler<'_>,
    declared: Option<&Node>,
    provided: Option<&Node>,
    at: Span,
    runtime: bool,
) -> Vec<(String, Node)> {
    let declarations = match declared {
        Some(node) => declarations(c, node),
        None => Vec::new(),
    };
    let mut given: Vec<(String, Node, Span)> = Vec::new();
    if runtime {
        for (name, text) in c.input.parameters.clone() {
            let Some(declaration) = declarations
                .iter()
                .find(|d| d.name.eq_ignore_ascii_case(&name))
            else {
                let known: Vec<&str> = declarations.iter().map(|d| d.name.as_str()).collect();
                let mut d = crate::diagnostic::Diagnostic::error(
                    "pipeline::unknown-parameter",
                    format!("the pipeline declares no parameter `{name}`"),
                    None,
                )
                .with_label("given with --param");
                d.help = crate::lower::suggest(&name, &known).or_else(|| {
                    (!known.is_empty())
                        .then(|| format!("declared parameters: {}", known.join(", ")))
                });
                c.diagnostics.push(d);
                continue;
            };
            let node = runtime_value(c, &declaration.r#type, &name, &text, at);
            given.push((name, node, declaration.span));
        }
    } else if let Some(provided) = provided {
        match &provided.value {
            NodeValue::Mapping(entries) => {
                for (key, value) in entries {
                    let name = key.as_str().unwrap_or("").to_string();
                    given.push((name, value.clone(), key.span));
                }
            }
            _ if provided.is_null() => {}
            _ => {
                c.error(
                    "pipeline::wrong-type",
                    "template `parameters` must be a mapping of names to values",
                    provided.span,
                    format!("found {}", provided.kind_name()),
                );
            }
        }
    }
    let mut bound = Vec::new();
    if declared.is_none() && !runtime {
        // A template without declarations takes whatever it is given, untyped (the older form).
        return given
            .into_iter()
            .map(|(name, node, _)| (name, node))
            .collect();
    }
    // The older mapping form (`parameters: {a: x}`) only gives defaults: Azure passes keys the
    // template does not declare through to `${{ parameters.NAME }}` (issue 9.1), so only the typed
    // list form is strict about them.
    let legacy = declared.is_some_and(is_legacy);
    for (name, _, span) in &given {
        if !runtime
            && !legacy
            && !declarations
                .iter()
                .any(|d| d.name.eq_ignore_ascii_case(name))
        {
            let known: Vec<&str> = declarations.iter().map(|d| d.name.as_str()).collect();
            let d = c.error(
                "pipeline::unknown-parameter",
                format!("the template declares no parameter `{name}`"),
                *span,
                "unexpected parameter",
            );
            d.help = crate::lower::suggest(name, &known).or_else(|| {
                (!known.is_empty()).then(|| format!("declared parameters: {}", known.join(", ")))
            });
        }
    }
    for declaration in &declarations {
        let value = given
            .iter()
            .rev()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(&declaration.name));
        let (node, span) = match (value, declaration.default) {
            (Some((_, node, span)), _) => (node.clone(), *span),
            (None, Some(default)) => (default.clone(), default.span),
            (None, None) => {
                let d = c.error(
                    "pipeline::missing-parameter",
                    format!(
                        "parameter `{}` has no default and no value was given",
                        declaration.name
                    ),
                    if runtime { declaration.span } else { at },
                    if runtime {
                        "declared here"
                    } else {
                        "in this template reference"
                    },
                );
                if runtime {
                    d.help = Some(format!("pass `--param {}=VALUE`", declaration.name));
                }
                // Bind null so that uses of the parameter do not report again.
                bound.push((declaration.name.clone(), Node::scalar("", true, at)));
                continue;
            }
        };
        match check_type(&declaration.r#type, &node) {
            Ok(node) => {
                check_values(c, declaration, &node, span);
                bound.push((declaration.name.clone(), node));
            }
            Err(expected) => {
                c.error(
                    "pipeline::parameter-type",
                    format!(
                        "parameter `{}` must be {expected}, but the value is {}",
                        declaration.name,
                        node.kind_name()
                    ),
                    span,
                    format!(
                        "`{}` is declared as {}",
                        declaration.name, declaration.r#type
                    ),
                );
                bound.push((declaration.name.clone(), node));
            }
        }
    }
    if legacy && !runtime {
        let mut extra: Vec<(String, Node)> = Vec::new();
        for (name, node, _) in given.into_iter().rev() {
            let known = declarations
                .iter()
                .any(|d| d.name.eq_ignore_ascii_case(&name))
                || extra.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name));
            if !known {
                extra.push((name, node));
            }
        }
        extra.reverse();
        bound.extend(extra);
    }
    bound
}

/// Whether `parameters:` uses the older untyped mapping form (`parameters: {name: default}`),
/// which accepts, and does not insist on, keys it does not declare.
pub fn is_legacy(declared: &Node) -> bool {
    matches!(declared.value, NodeValue::Mapping(_))
}

/// Turns a `--param` text into a node of the declared type.
fn runtime_value(c: &mut Compiler<'_>, r#type: &str, name: &str, text: &str, at: Span) -> Node {
    match r#type {
        "string" | "filePath" | "environment" | "secureFile" | "serviceConnection" => {
            Node::scalar(text, false, at)
        }
        "number" | "boolean" => Node::scalar(text, true, at),
        _ => match yaml::load(text, at.file, &format!("--param {name}")) {
            Ok(node) => respan(node, at),
            Err(_) => {
                c.diagnostics.push(crate::diagnostic::Diagnostic::error(
                    "pipeline::parameter-type",
                    format!("the value of --param {name} is not valid yaml for a {type} parameter"),
                    None,
                ));
                Node::scalar(text, false, at)
            }
        },
    }
}

fn respan(node: Node, span: Span) -> Node {
    let value = match node.value {
        NodeValue::Scalar { .. } => node.value,
        NodeValue::Sequence(items) => {
            NodeValue::Sequence(items.into_iter().map(|n| respan(n, span)).collect())
        }
        NodeValue::Mapping(entries) => NodeValue::Mapping(
            entries
                .into_iter()
                .map(|(k, v)| (respan(k, span), respan(v, span)))
                .collect(),
        ),
    };
    Node { value, span }
}

/// Checks a value against a declared type and normalises scalars (strings become quoted scalars,
/// booleans `True`/`False` as Azure prints them). Returns what was expected on mismatch.
fn check_type(r#type: &str, node: &Node) -> Result<Node, &'static str> {
    let is_scalar = matches!(node.value, NodeValue::Scalar { .. });
    let all_mappings = |n: &Node| {
        n.as_sequence()
            .is_some_and(|items| items.iter().all(|i| i.as_mapping().is_some()))
    };
    match r#type {
        "string" => match &node.value {
            NodeValue::Scalar { text, .. } => Ok(Node::scalar(text.clone(), false, node.span)),
            _ => Err("a string"),
        },
        "number" => match node.as_str().map(str::trim) {
            Some(text) if lockgate_expr::parse_number_string(text).is_some() => {
                Ok(Node::scalar(text, true, node.span))
            }
            _ => Err("a number"),
        },
        "boolean" => match node.as_str().map(str::trim) {
            Some(text) if text.eq_ignore_ascii_case("true") => {
                Ok(Node::scalar("True", true, node.span))
            }
            Some(text) if text.eq_ignore_ascii_case("false") => {
                Ok(Node::scalar("False", true, node.span))
            }
            _ => Err("a boolean (true or false)"),
        },
        "step" | "job" | "deployment" | "stage" => {
            if node.as_mapping().is_some() {
                Ok(node.clone())
            } else {
                Err("a mapping")
            }
        }
        "stepList" | "jobList" | "deploymentList" | "stageList" => {
            if node.is_null() {
                Ok(Node {
                    value: NodeValue::Sequence(Vec::new()),
                    span: node.span,
                })
            } else if all_mappings(node) {
                Ok(node.clone())
            } else {
                Err("a sequence of mappings")
            }
        }
        "stringList" => {
            if node.as_sequence().is_some_and(|items| {
                items
                    .iter()
                    .all(|i| matches!(i.value, NodeValue::Scalar { .. }))
            }) {
                Ok(node.clone())
            } else if is_scalar && node.is_null() {
                Ok(Node {
                    value: NodeValue::Sequence(Vec::new()),
                    span: node.span,
                })
            } else {
                Err("a sequence of strings")
            }
        }
        _ => Ok(node.clone()),
    }
}

/// Checks `values:` allow-lists.
fn check_values(c: &mut Compiler<'_>, declaration: &Declaration<'_>, node: &Node, span: Span) {
    let Some(allowed) = declaration.values.and_then(Node::as_sequence) else {
        return;
    };
    let allowed: Vec<&str> = allowed.iter().filter_map(Node::as_str).collect();
    let check = |text: &str| allowed.iter().any(|a| a.eq_ignore_ascii_case(text.trim()));
    let bad: Vec<String> = match &node.value {
        NodeValue::Scalar { text, .. } if !check(text) => vec![text.clone()],
        NodeValue::Sequence(items) => items
            .iter()
            .filter_map(Node::as_str)
            .filter(|t| !check(t))
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    for value in bad {
        let d = c.error(
            "pipeline::parameter-value",
            format!(
                "`{value}` is not an allowed value of parameter `{}`",
                declaration.name
            ),
            span,
            "this value",
        );
        d.help = Some(format!("allowed values: {}", allowed.join(", ")));
    }
}

/// What a pipeline file declares about one parameter, for the plan.
pub struct DeclaredParameter<'n> {
    pub name: &'n str,
    /// `string` when not given; `object` for the older mapping form.
    pub r#type: &'n str,
    pub display_name: Option<&'n str>,
    pub values: Option<&'n Node>,
}

/// The declarations of a `parameters:` section, as written.
pub fn declared(declared: &Node) -> Vec<DeclaredParameter<'_>> {
    match &declared.value {
        NodeValue::Sequence(items) => items
            .iter()
            .filter_map(|item| {
                Some(DeclaredParameter {
                    name: item.get("name")?.as_str()?,
                    r#type: item.get("type").and_then(Node::as_str).unwrap_or("string"),
                    display_name: item.get("displayName").and_then(Node::as_str),
                    values: item.get("values"),
                })
            })
            .collect(),
        NodeValue::Mapping(entries) => entries
            .iter()
            .filter_map(|(k, _)| {
                Some(DeclaredParameter {
                    name: k.as_str()?,
                    r#type: "object",
                    display_name: None,
                    values: None,
                })
            })
            .collect(),
        NodeValue::Scalar { .. } => Vec::new(),
    }
}
