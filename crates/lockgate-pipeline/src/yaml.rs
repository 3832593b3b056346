//! Loads YAML text into a tree where every node keeps its file and position. Rejects what Azure
//! Pipelines rejects (anchors, aliases, duplicate keys) and caps size and depth before building.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle};

use crate::diagnostic::{Diagnostic, SourceSpan};

/// Largest file accepted, in bytes (Azure documents a 20 MB parse-memory limit, about 2 MB of YAML).
pub const MAX_FILE_BYTES: usize = 2 * 1024 * 1024;
/// Deepest nesting of mappings and sequences accepted in one file.
pub const MAX_DEPTH: usize = 100;
/// Most nodes accepted in one file.
pub const MAX_NODES: usize = 500_000;

/// Index of a loaded file in the compiler's file table.
pub type FileId = u32;

/// Where a node is: the file and its byte range, with the 1-based line and column of the start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
    pub line: u32,
    pub column: u32,
}

/// A YAML node with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: NodeValue,
    pub span: Span,
}

/// The value of a node. Scalars keep their text and whether they were written plain (unquoted),
/// which decides whether `true`, `1` or `null` are typed values or strings.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeValue {
    Scalar { text: String, plain: bool },
    Sequence(Vec<Node>),
    Mapping(Vec<(Node, Node)>),
}

impl Node {
    pub fn scalar(text: impl Into<String>, plain: bool, span: Span) -> Node {
        Node {
            value: NodeValue::Scalar {
                text: text.into(),
                plain,
            },
            span,
        }
    }

    /// The text of a scalar node.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn as_mapping(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            NodeValue::Mapping(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_sequence(&self) -> Option<&[Node]> {
        match &self.value {
            NodeValue::Sequence(items) => Some(items),
            _ => None,
        }
    }

    /// True for an empty plain scalar (`key:` with nothing after it) or `null`/`~`.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, NodeValue::Scalar { text, plain: true } if text.is_empty() || text == "~" || text == "null" || text == "Null" || text == "NULL")
    }

    /// Looks up a key of a mapping node (exact match).
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_mapping()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// A short name of the node's shape for messages ("a mapping", "a sequence", "a string").
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            NodeValue::Scalar { .. } if self.is_null() => "null",
            NodeValue::Scalar { .. } => "a scalar",
            NodeValue::Sequence(_) => "a sequence",
            NodeValue::Mapping(_) => "a mapping",
        }
    }
}

/// Finds the first entry of a mapping under construction by its key text. Small mappings (nearly all)
/// are scanned; from [`KeyIndex::SCAN_LIMIT`] entries on, a hash index is kept, caught up lazily with
/// the entries pushed since the last look-up, so that building a mapping of n keys costs O(n) rather
/// than O(n²). Entries may only be appended (or have their value replaced) between look-ups.
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    first: HashMap<String, usize>,
    indexed: usize,
}

impl KeyIndex {
    const SCAN_LIMIT: usize = 16;

    /// The position of the first entry whose key is the scalar `name`.
    pub(crate) fn find(&mut self, entries: &[(Node, Node)], name: &str) -> Option<usize> {
        if entries.len() < Self::SCAN_LIMIT {
            return entries.iter().position(|(k, _)| k.as_str() == Some(name));
        }
        for (i, (key, _)) in entries.iter().enumerate().skip(self.indexed) {
            if let Some(text) = key.as_str() {
                self.first.entry(text.to_string()).or_insert(i);
            }
        }
        self.indexed = entries.len();
        self.first.get(name).copied()
    }
}

/// Converts a span to the public form with the file's display name.
pub fn source_span(span: Span, file_name: &str) -> SourceSpan {
    SourceSpan {
        file: file_name.to_string(),
        line: span.line,
        column: span.column,
        start: span.start as usize,
        end: span.end as usize,
    }
}

/// Maps the parser's character offsets to byte offsets.
struct Offsets {
    /// Byte offset of each character when the text is not ASCII; empty when it is.
    char_to_byte: Vec<u32>,
    len: u32,
}

impl Offsets {
    fn new(text: &str) -> Offsets {
        let char_to_byte = if text.is_ascii() {
            Vec::new()
        } else {
            let mut table: Vec<u32> = text.char_indices().map(|(i, _)| i as u32).collect();
            table.push(text.len() as u32);
            table
        };
        Offsets {
            char_to_byte,
            len: text.len() as u32,
        }
    }

    fn byte(&self, char_index: usize) -> u32 {
        if self.char_to_byte.is_empty() {
            (char_index as u32).min(self.len)
        } else {
            self.char_to_byte
                .get(char_index)
                .copied()
                .unwrap_or(self.len)
        }
    }
}

enum Open {
    Sequence(Vec<Node>, Span),
    Mapping(Vec<(Node, Node)>, Option<Node>, Span, KeyIndex),
}

/// Loads one YAML document. An empty file gives an empty mapping. Errors are returned as diagnostics
/// pointing into `file_name`.
pub fn load(text: &str, file: FileId, file_name: &str) -> Result<Node, Vec<Diagnostic>> {
    let whole = Span {
        file,
        start: 0,
        end: 0,
        line: 1,
        column: 1,
    };
    if text.len() > MAX_FILE_BYTES {
        return Err(vec![
            Diagnostic::error(
                "pipeline::file-too-large",
                format!(
                    "the file is {} bytes; the limit is {MAX_FILE_BYTES}",
                    text.len()
                ),
                Some(source_span(whole, file_name)),
            )
            .with_label("this file"),
        ]);
    }
    let offsets = Offsets::new(text);
    let make_span = |s: &saphyr_parser::Span| Span {
        file,
        start: offsets.byte(s.start.index()),
        end: offsets
            .byte(s.end.index())
            .max(offsets.byte(s.start.index())),
        line: s.start.line() as u32,
        column: s.start.col() as u32 + 1,
    };
    let mut diagnostics = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    let mut nodes = 0usize;
    let mut parser = Parser::new_from_str(text);
    while let Some(event) = parser.next_event() {
        let (event, raw_span) = match event {
            Ok(pair) => pair,
            Err(err) => {
                let marker = err.marker();
                let at = Span {
                    file,
                    start: offsets.byte(marker.index()),
                    end: offsets.byte(marker.index() + 1),
                    line: marker.line() as u32,
                    column: marker.col() as u32 + 1,
                };
                let code = if err.info().contains("recursion limit") {
                    "pipeline::too-deep"
                } else {
                    "pipeline::yaml-syntax"
                };
                diagnostics.push(
                    Diagnostic::error(
                        code,
                        format!("invalid yaml: {}", err.info()),
                        Some(source_span(at, file_name)),
                    )
                    .with_label("here"),
                );
                return Err(diagnostics);
            }
        };
        let span = make_span(&raw_span);
        let node = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    diagnostics.push(
                        Diagnostic::error(
                            "pipeline::multiple-documents",
                            "a pipeline file must hold a single yaml document",
                            Some(source_span(span, file_name)),
                        )
                        .with_label("second document starts here"),
                    );
                    return Err(diagnostics);
                }
                continue;
            }
            Event::Alias(_) => {
                diagnostics.push(
                    Diagnostic::error("pipeline::yaml-alias", "yaml aliases are not supported", Some(source_span(span, file_name)))
                        .with_label("alias")
                        .with_help("Azure Pipelines does not accept anchors and aliases; repeat the content or use a template"),
                );
                Node::scalar("", true, span)
            }
            Event::Scalar(text, style, anchor, _tag) => {
                if anchor != 0 {
                    diagnostics.push(anchor_diagnostic(span, file_name));
                }
                Node::scalar(text.into_owned(), style == ScalarStyle::Plain, span)
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if anchor != 0 {
                    diagnostics.push(anchor_diagnostic(span, file_name));
                }
                if stack.len() >= MAX_DEPTH {
                    diagnostics.push(
                        Diagnostic::error(
                            "pipeline::too-deep",
                            format!("the yaml nests deeper than {MAX_DEPTH} levels"),
                            Some(source_span(span, file_name)),
                        )
                        .with_label("too deep"),
                    );
                    return Err(diagnostics);
                }
                if matches!(event, Event::SequenceStart(..)) {
                    stack.push(Open::Sequence(Vec::new(), span));
                } else {
                    stack.push(Open::Mapping(Vec::new(), None, span, KeyIndex::default()));
                }
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Open::Sequence(items, start)) => Node {
                    value: NodeValue::Sequence(items),
                    span: Span {
                        end: span.end.max(start.start),
                        ..start
                    },
                },
                Some(Open::Mapping(entries, _, start, _)) => Node {
                    value: NodeValue::Mapping(entries),
                    span: Span {
                        end: span.end.max(start.start),
                        ..start
                    },
                },
                None => continue,
            },
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => continue,
        };
        nodes += 1;
        if nodes > MAX_NODES {
            diagnostics.push(
                Diagnostic::error(
                    "pipeline::too-large",
                    format!("the yaml has more than {MAX_NODES} nodes"),
                    Some(source_span(node.span, file_name)),
                )
                .with_label("limit reached here"),
            );
            return Err(diagnostics);
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Open::Sequence(items, _)) => items.push(node),
            Some(Open::Mapping(entries, pending_key, _, index)) => match pending_key.take() {
                None => {
                    if !matches!(node.value, NodeValue::Scalar { .. }) {
                        diagnostics.push(
                            Diagnostic::error(
                                "pipeline::complex-key",
                                "mapping keys must be scalars",
                                Some(source_span(node.span, file_name)),
                            )
                            .with_label("complex key"),
                        );
                    }
                    *pending_key = Some(node);
                }
                Some(key) => {
                    if let Some(name) = key.as_str()
                        && let Some(at) = index.find(entries, name)
                    {
                        let first = &entries[at].0;
                        diagnostics.push(
                            Diagnostic::error(
                                "pipeline::duplicate-key",
                                format!("key `{name}` is defined twice in this mapping"),
                                Some(source_span(key.span, file_name)),
                            )
                            .with_label("second definition")
                            .with_help(format!(
                                "the first definition is on line {}",
                                first.span.line
                            )),
                        );
                    }
                    entries.push((key, node));
                }
            },
        }
    }
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    Ok(match root {
        Some(node) if node.is_null() => Node {
            value: NodeValue::Mapping(Vec::new()),
            span: node.span,
        },
        Some(node) => node,
        None => Node {
            value: NodeValue::Mapping(Vec::new()),
            span: whole,
        },
    })
}

fn anchor_diagnostic(span: Span, file_name: &str) -> Diagnostic {
    Diagnostic::error(
        "pipeline::yaml-anchor",
        "yaml anchors are not supported",
        Some(source_span(span, file_name)),
    )
    .with_label("anchored node")
    .with_help(
        "Azure Pipelines does not accept anchors and aliases; repeat the content or use a template",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_positions_of_nodes() {
        let node = load("a: 1\nb:\n  - x\n  - 'y'\n", 0, "f.yml").unwrap();
        let b = node.get("b").unwrap();
        let items = b.as_sequence().unwrap();
        assert_eq!(items[1].span.line, 4);
        assert_eq!(items[1].span.column, 5);
        assert_eq!(
            items[1].value,
            NodeValue::Scalar {
                text: "y".into(),
                plain: false
            }
        );
    }

    #[test]
    fn rejects_anchors_aliases_and_duplicate_keys() {
        let errors = load("a: &x 1\nb: *x\nb: 2\n", 0, "f.yml").unwrap_err();
        let codes: Vec<&str> = errors.iter().map(|d| d.code.as_str()).collect();
        assert_eq!(
            codes,
            [
                "pipeline::yaml-anchor",
                "pipeline::yaml-alias",
                "pipeline::duplicate-key"
            ]
        );
    }

    #[test]
    fn byte_offsets_follow_multibyte_text() {
        let text = "é: ü\nkey: value\n";
        let node = load(text, 0, "f.yml").unwrap();
        let value = node.get("key").unwrap();
        assert_eq!(
            &text[value.span.start as usize..value.span.end as usize],
            "value"
        );
    }

    #[test]
    fn caps_depth() {
        let text = "[".repeat(MAX_DEPTH + 5) + &"]".repeat(MAX_DEPTH + 5);
        let errors = load(&text, 0, "f.yml").unwrap_err();
        assert_eq!(errors[0].code, "pipeline::too-deep");
    }
}
