//! A small XML element tree that keeps element order, attribute order, text, CDATA and comments, with a
//! parser (quick-xml), a deterministic pretty-printer and a canonical form for comparing documents.

use quick_xml::events::Event;

use crate::SolutionError;

/// Deepest element nesting accepted; deeper documents are rejected instead of risking the stack.
const MAX_DEPTH: usize = 256;

/// One node inside an element.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Element(Element),
    Text(String),
    CData(String),
    Comment(String),
}

/// An element with its attributes in document order.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    pub name: String,
    pub attributes: Vec<(String, String)>,
    pub children: Vec<Node>,
    /// Written as `<x />` rather than `<x></x>` when it has no children.
    pub self_closing: bool,
}

/// A parsed document: its root element and whether it started with an XML declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub declaration: bool,
    pub root: Element,
}

/// How [`Document::to_string_with`] lays out the text.
#[derive(Debug, Clone, Copy)]
pub struct WriteStyle {
    pub newline: &'static str,
    pub declaration: bool,
}

impl WriteStyle {
    /// Source-tree style: LF line endings, with the declaration the document had.
    pub fn tree(doc: &Document) -> Self {
        WriteStyle {
            newline: "\n",
            declaration: doc.declaration,
        }
    }
}

impl Element {
    pub fn new(name: &str) -> Self {
        Element {
            name: name.to_string(),
            attributes: Vec::new(),
            children: Vec::new(),
            self_closing: true,
        }
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn set_attribute(&mut self, name: &str, value: &str) {
        match self.attributes.iter_mut().find(|(key, _)| key == name) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.attributes.push((name.to_string(), value.to_string())),
        }
    }

    pub fn remove_attribute(&mut self, name: &str) -> Option<String> {
        let index = self.attributes.iter().position(|(key, _)| key == name)?;
        Some(self.attributes.remove(index).1)
    }

    /// Child elements in order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|node| match node {
            Node::Element(element) => Some(element),
            _ => None,
        })
    }

    pub fn elements_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.children.iter_mut().filter_map(|node| match node {
            Node::Element(element) => Some(element),
            _ => None,
        })
    }

    /// The first child element with this name (exact, case-sensitive).
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.elements().find(|element| element.name == name)
    }

    pub fn child_mut(&mut self, name: &str) -> Option<&mut Element> {
        self.elements_mut().find(|element| element.name == name)
    }

    /// The concatenated text and CDATA directly inside this element.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for node in &self.children {
            match node {
                Node::Text(text) | Node::CData(text) => out.push_str(text),
                _ => {}
            }
        }
        out
    }

    /// The trimmed text of a child element, if the child exists.
    pub fn child_text(&self, name: &str) -> Option<String> {
        self.child(name)
            .map(|child| child.text().trim().to_string())
    }

    /// A readable name for a component row: its `Name` attribute, else a `Name`/`name`/`UniqueName`/
    /// `SiteMapUniqueName` child, else its first attribute value, else its text.
    pub fn row_name(&self) -> String {
        self.attribute("Name")
            .map(str::to_string)
            .or_else(|| {
                ["Name", "name", "UniqueName", "SiteMapUniqueName"]
                    .iter()
                    .find_map(|n| self.child_text(n))
            })
            .or_else(|| self.attributes.first().map(|(_, value)| value.clone()))
            .unwrap_or_else(|| self.text().trim().to_string())
    }

    /// Replaces the content with a single text node.
    pub fn set_text(&mut self, text: &str) {
        self.children = vec![Node::Text(text.to_string())];
    }

    pub fn push_element(&mut self, element: Element) {
        self.children.push(Node::Element(element));
    }
}

/// Parses an XML document from bytes (UTF-8, optional BOM). `path` is only used in error messages.
pub fn parse(bytes: &[u8], path: &str) -> Result<Document, SolutionError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes)
        .map_err(|err| invalid(path, format!("not UTF-8 text (byte {})", err.valid_up_to())))?;
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut declaration = false;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut pending_text = String::new();

    let line_of = |offset: u64| -> usize {
        let end = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(text.len());
        text.as_bytes()[..end]
            .iter()
            .filter(|&&byte| byte == b'\n')
            .count()
            + 1
    };

    loop {
        let event = reader.read_event().map_err(|err| {
            invalid(
                path,
                format!(
                    "malformed XML at line {}: {err}",
                    line_of(reader.error_position())
                ),
            )
        })?;
        let position = reader.buffer_position();
        let at_line = || line_of(position);
        if !matches!(event, Event::Text(_) | Event::GeneralRef(_)) && !pending_text.is_empty() {
            let text_node = Node::Text(std::mem::take(&mut pending_text));
            match stack.last_mut() {
                Some(parent) => parent.children.push(text_node),
                None => {
                    if let Node::Text(text) = &text_node
                        && !text.trim().is_empty()
                    {
                        return Err(invalid(
                            path,
                            format!("text outside the root element at line {}", at_line()),
                        ));
                    }
                }
            }
        }
        match event {
            Event::Decl(_) => declaration = true,
            Event::Start(start) | Event::Empty(start) if root.is_some() => {
                let _ = start;
                return Err(invalid(
                    path,
                    format!("a second root element at line {}", at_line()),
                ));
            }
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(invalid(
                        path,
                        format!("elements nested deeper than {MAX_DEPTH} levels"),
                    ));
                }
                let mut element = element_from(&start)
                    .map_err(|message| invalid(path, format!("{message} at line {}", at_line())))?;
                element.self_closing = false;
                stack.push(element);
            }
            Event::Empty(start) => {
                let element = element_from(&start)
                    .map_err(|message| invalid(path, format!("{message} at line {}", at_line())))?;
                match stack.last_mut() {
                    Some(parent) => parent.push_element(element),
                    None => root = Some(element),
                }
            }
            Event::End(_) => {
                let Some(element) = stack.pop() else {
                    return Err(invalid(
                        path,
                        format!("unexpected closing tag at line {}", at_line()),
                    ));
                };
                match stack.last_mut() {
                    Some(parent) => parent.push_element(element),
                    None => root = Some(element),
                }
            }
            Event::Text(text) => pending_text.push_str(&text.xml10_content()),
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(ch)) => ch.to_string(),
                    Ok(None) => match quick_xml::escape::resolve_predefined_entity(&reference) {
                        Some(value) => value.to_string(),
                        None => {
                            return Err(invalid(
                                path,
                                format!("unknown entity `&{};` at line {}", &*reference, at_line()),
                            ));
                        }
                    },
                    Err(err) => {
                        return Err(invalid(
                            path,
                            format!("bad character reference at line {}: {err}", at_line()),
                        ));
                    }
                };
                pending_text.push_str(&resolved);
            }
            Event::CData(data) => {
                if let Some(parent) = stack.last_mut() {
                    parent
                        .children
                        .push(Node::CData(data.xml10_content().into_owned()));
                }
            }
            Event::Comment(comment) => {
                if let Some(parent) = stack.last_mut() {
                    parent
                        .children
                        .push(Node::Comment(comment.xml10_content().into_owned()));
                }
            }
            Event::PI(_) => {}
            Event::DocType(_) => {
                return Err(invalid(
                    path,
                    "document type declarations are not accepted".into(),
                ));
            }
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(invalid(
            path,
            format!(
                "unexpected end of file inside <{}>",
                stack[stack.len() - 1].name
            ),
        ));
    }
    let root =
        root.ok_or_else(|| invalid(path, "no root element (empty or truncated file)".into()))?;
    Ok(Document { declaration, root })
}

fn element_from(start: &quick_xml::events::BytesStart<'_>) -> Result<Element, String> {
    let mut element = Element::new(start.name().as_ref());
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|err| format!("bad attribute: {err}"))?;
        let value = attribute
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|err| format!("bad attribute value: {err}"))?;
        element
            .attributes
            .push((attribute.key.as_ref().to_string(), value.into_owned()));
    }
    Ok(element)
}

fn invalid(path: &str, message: String) -> SolutionError {
    SolutionError::InvalidXml {
        path: path.to_string(),
        message,
    }
}

impl Document {
    /// Pretty-prints with two-space indentation; element-only content is indented, text and mixed
    /// content are written exactly. The result is a function of the tree alone (deterministic).
    pub fn to_string_with(&self, style: WriteStyle) -> String {
        let mut out = String::new();
        if style.declaration {
            out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>");
            out.push_str(style.newline);
        }
        write_element(&mut out, &self.root, 0, style.newline, true);
        out
    }
}

fn is_blank_text(node: &Node) -> bool {
    matches!(node, Node::Text(text) if text.trim().is_empty())
}

/// Writes `<name attr="value" ...` (without the closing `>`).
fn write_start_tag(out: &mut String, element: &Element) {
    out.push('<');
    out.push_str(&element.name);
    for (key, value) in &element.attributes {
        out.push(' ');
        out.push_str(key);
        out.push_str("=\"");
        escape_attribute(out, value);
        out.push('"');
    }
}

fn write_element(out: &mut String, element: &Element, depth: usize, newline: &str, indent: bool) {
    write_start_tag(out, element);
    if element.children.is_empty() {
        out.push_str(if element.self_closing { " />" } else { "></" });
        if !element.self_closing {
            out.push_str(&element.name);
            out.push('>');
        }
        return;
    }
    out.push('>');
    let has_structure = element
        .children
        .iter()
        .any(|node| matches!(node, Node::Element(_) | Node::Comment(_)));
    let mixed = element
        .children
        .iter()
        .any(|node| matches!(node, Node::Text(_) | Node::CData(_)) && !is_blank_text(node));
    if !has_structure || mixed || !indent {
        for node in &element.children {
            write_node(out, node, depth, newline, false);
        }
    } else {
        for node in element.children.iter().filter(|node| !is_blank_text(node)) {
            out.push_str(newline);
            push_indent(out, depth + 1);
            write_node(out, node, depth + 1, newline, true);
        }
        out.push_str(newline);
        push_indent(out, depth);
    }
    out.push_str("</");
    out.push_str(&element.name);
    out.push('>');
}

fn write_node(out: &mut String, node: &Node, depth: usize, newline: &str, indent: bool) {
    match node {
        Node::Element(element) => write_element(out, element, depth, newline, indent),
        Node::Text(text) => escape_text(out, text),
        Node::CData(text) => {
            out.push_str("<![CDATA[");
            out.push_str(text);
            out.push_str("]]>");
        }
        Node::Comment(text) => {
            out.push_str("<!--");
            out.push_str(text);
            out.push_str("-->");
        }
    }
}

fn push_indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

fn escape_text(out: &mut String, text: &str) {
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            _ => out.push(ch),
        }
    }
}

fn escape_attribute(out: &mut String, text: &str) {
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            '\t' => out.push_str("&#x9;"),
            _ => out.push(ch),
        }
    }
}

/// Which elements' children [`canonical`] sorts, for collections whose order carries no meaning.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unordered<'a> {
    /// Sort the children of every element at this depth (root = 0).
    pub depth: Option<usize>,
    /// Sort the children of elements with these names, at any depth.
    pub names: &'a [&'a str],
}

/// A canonical one-line form for comparison: no declaration, no indentation, whitespace between
/// elements dropped, `<x />` and `<x></x>` the same, comments dropped, and the children of the
/// collections named by `unordered` sorted.
pub fn canonical(element: &Element, unordered: Unordered<'_>) -> String {
    let mut out = String::new();
    canonical_into(&mut out, element, 0, unordered);
    out
}

fn canonical_into(out: &mut String, element: &Element, depth: usize, unordered: Unordered<'_>) {
    write_start_tag(out, element);
    out.push('>');
    let has_elements = element
        .children
        .iter()
        .any(|node| matches!(node, Node::Element(_)));
    let mut parts: Vec<String> = Vec::new();
    for node in &element.children {
        let mut part = String::new();
        match node {
            Node::Element(child) => canonical_into(&mut part, child, depth + 1, unordered),
            Node::Text(text) | Node::CData(text) => {
                if has_elements && text.trim().is_empty() {
                    continue;
                }
                escape_text(&mut part, text);
            }
            Node::Comment(_) => continue,
        }
        parts.push(part);
    }
    if unordered.depth == Some(depth) || unordered.names.contains(&element.name.as_str()) {
        parts.sort();
    }
    for part in parts {
        out.push_str(&part);
    }
    out.push_str("</");
    out.push_str(&element.name);
    out.push('>');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_printing_is_stable_and_keeps_content() {
        let source = "<?xml version=\"1.0\"?>\r\n<a x=\"1 &amp; 2\"><b>t &lt; u</b><c/><d></d><e>mixed <i>x</i> text</e></a>";
        let doc = parse(source.as_bytes(), "t.xml").unwrap();
        let written = doc.to_string_with(WriteStyle::tree(&doc));
        assert_eq!(
            written,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<a x=\"1 &amp; 2\">\n  <b>t &lt; u</b>\n  <c />\n  <d></d>\n  <e>mixed <i>x</i> text</e>\n</a>"
        );
        let again = parse(written.as_bytes(), "t.xml").unwrap();
        assert_eq!(again.to_string_with(WriteStyle::tree(&again)), written);
        assert_eq!(
            canonical(&doc.root, Unordered::default()),
            canonical(&again.root, Unordered::default())
        );
    }

    #[test]
    fn malformed_and_truncated_documents_are_errors_naming_the_file() {
        let err = parse(b"<a><b></a>", "bad.xml").unwrap_err().to_string();
        assert!(err.starts_with("bad.xml:"), "{err}");
        let err = parse(b"<a><b>", "cut.xml").unwrap_err().to_string();
        assert!(
            err.contains("cut.xml") && err.contains("end of file"),
            "{err}"
        );
        let err = parse(b"", "empty.xml").unwrap_err().to_string();
        assert!(err.contains("no root element"), "{err}");
        let err = parse(b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>", "dtd.xml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("document type"), "{err}");
    }

    #[test]
    fn deep_nesting_is_rejected_not_overflowed() {
        let deep = "<a>".repeat(MAX_DEPTH + 5);
        assert!(
            parse(deep.as_bytes(), "deep.xml")
                .unwrap_err()
                .to_string()
                .contains("nested deeper")
        );
    }

    #[test]
    fn canonical_form_ignores_layout_and_can_sort_collections() {
        let a = parse(b"<r>\r\n  <s><x n=\"2\"/><x n=\"1\"/></s>\r\n</r>", "a").unwrap();
        let b = parse(b"<r><s><x n=\"1\"></x><x n=\"2\"></x></s></r>", "b").unwrap();
        assert_ne!(
            canonical(&a.root, Unordered::default()),
            canonical(&b.root, Unordered::default())
        );
        let by_depth = Unordered {
            depth: Some(1),
            names: &[],
        };
        assert_eq!(canonical(&a.root, by_depth), canonical(&b.root, by_depth));
        let by_name = Unordered {
            depth: None,
            names: &["s"],
        };
        assert_eq!(canonical(&a.root, by_name), canonical(&b.root, by_name));
    }
}
