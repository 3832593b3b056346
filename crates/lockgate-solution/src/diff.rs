//! Differences between two versions of a solution by component identity (table name, workflow id,
//! connection-reference logical name, environment-variable schema name, ...), with version and
//! dependency changes and a path-by-path JSON diff for cloud flows.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::package::{
    CONTENT_TYPES_XML, CUSTOMIZATIONS_XML, SOLUTION_XML, SolutionPackage, entries_equivalent,
};
use crate::xml::{self, Element, Node};
use crate::{Solution, SolutionError};

/// Most JSON paths listed per changed flow.
const MAX_FLOW_CHANGES: usize = 200;
/// Deepest JSON nesting the flow diff descends into.
const MAX_JSON_DEPTH: usize = 64;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    Changed,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ComponentChange {
    pub change: Change,
    pub kind: String,
    pub identity: String,
    pub name: String,
    /// For flows: `path: old -> new` lines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SolutionDiff {
    pub unique_name: [String; 2],
    pub version: [String; 2],
    pub managed: [bool; 2],
    pub components: Vec<ComponentChange>,
    pub dependencies_added: Vec<String>,
    pub dependencies_removed: Vec<String>,
}

impl SolutionDiff {
    pub fn is_empty(&self) -> bool {
        self.unique_name[0] == self.unique_name[1]
            && self.version[0] == self.version[1]
            && self.managed[0] == self.managed[1]
            && self.components.is_empty()
            && self.dependencies_added.is_empty()
            && self.dependencies_removed.is_empty()
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let pair = |values: &[String; 2]| {
            if values[0] == values[1] {
                values[0].clone()
            } else {
                format!("{} -> {}", values[0], values[1])
            }
        };
        out.push_str(&format!(
            "solution {}: version {}\n",
            pair(&self.unique_name),
            pair(&self.version)
        ));
        if self.managed[0] != self.managed[1] {
            let kind = |managed: bool| if managed { "managed" } else { "unmanaged" };
            out.push_str(&format!(
                "package type: {} -> {}\n",
                kind(self.managed[0]),
                kind(self.managed[1])
            ));
        }
        for component in &self.components {
            let sign = match component.change {
                Change::Added => '+',
                Change::Removed => '-',
                Change::Changed => '~',
            };
            let name = if component.name.is_empty() || component.name == component.identity {
                String::new()
            } else {
                format!(" ({})", component.name)
            };
            out.push_str(&format!(
                "{sign} {} {}{name}\n",
                component.kind, component.identity
            ));
            for detail in &component.details {
                out.push_str(&format!("    {detail}\n"));
            }
        }
        for dependency in &self.dependencies_added {
            out.push_str(&format!("+ missing dependency {dependency}\n"));
        }
        for dependency in &self.dependencies_removed {
            out.push_str(&format!("- missing dependency {dependency}\n"));
        }
        if self.is_empty() {
            out.push_str("no differences\n");
        }
        out
    }
}

/// One component as compared: its kind, display name, canonical content and (flows) JSON.
struct ComponentContent {
    kind: String,
    name: String,
    canonical: String,
    json: Option<Value>,
}

fn label_free(element: &Element, inside_form: bool) -> Element {
    let inside_form = inside_form || element.name == "FormXml";
    let mut copy = element.clone();
    if inside_form && copy.name == "label" {
        copy.remove_attribute("description");
    }
    copy.children = element
        .children
        .iter()
        .map(|node| match node {
            Node::Element(child) => Node::Element(label_free(child, inside_form)),
            other => other.clone(),
        })
        .collect();
    copy
}

fn row_identity(section: &str, row: &Element) -> (String, String, String) {
    match (section, row.name.as_str()) {
        ("Entities", "Entity") => (
            "table".into(),
            row.child_text("Name").unwrap_or_default(),
            String::new(),
        ),
        ("Workflows", "Workflow") => {
            let id = row
                .attribute("WorkflowId")
                .unwrap_or_default()
                .trim_matches(['{', '}'])
                .to_ascii_lowercase();
            let kind = match row.child_text("Category").as_deref() {
                Some("5") => "cloud flow",
                Some("6") => "desktop flow",
                Some("2") => "business rule",
                _ => "workflow",
            };
            (
                kind.into(),
                id,
                row.attribute("Name").unwrap_or_default().to_string(),
            )
        }
        ("connectionreferences", _) => (
            "connection reference".into(),
            row.attribute("connectionreferencelogicalname")
                .unwrap_or_default()
                .to_string(),
            row.child_text("connectionreferencedisplayname")
                .unwrap_or_default(),
        ),
        (_, kind) => (kind.to_string(), row.row_name(), String::new()),
    }
}

fn components(
    package: &SolutionPackage,
    ignore_form_labels: bool,
) -> Result<BTreeMap<(String, String), ComponentContent>, SolutionError> {
    let mut found = BTreeMap::new();
    let customizations = xml::parse(
        package.required(CUSTOMIZATIONS_XML)?,
        &format!("{}!{CUSTOMIZATIONS_XML}", package.origin),
    )?;
    let mut referenced_files: Vec<String> = Vec::new();
    for section in customizations.root.elements() {
        if section.name == "Languages" {
            continue;
        }
        for row in section.elements() {
            let (kind, identity, name) = row_identity(&section.name, row);
            let row = if ignore_form_labels {
                label_free(row, false)
            } else {
                row.clone()
            };
            let mut json: Option<Value> = None;
            if kind == "cloud flow"
                && let Some(file) = row.child_text("JsonFileName")
            {
                let file = file.trim_start_matches('/').to_string();
                if let Some(bytes) = package.get(&file) {
                    json = serde_json::from_slice(crate::model::strip_bom(bytes)).ok();
                }
                referenced_files.push(file.to_ascii_lowercase());
            }
            let mut canonical = xml::canonical(
                &row,
                xml::Unordered {
                    depth: None,
                    names: crate::layout::UNORDERED_TABLE_PARTS,
                },
            );
            if let Some(value) = &json {
                canonical.push_str(&value.to_string());
            }
            found.insert(
                (kind.clone(), identity),
                ComponentContent {
                    kind,
                    name,
                    canonical,
                    json,
                },
            );
        }
    }
    let mut variables: BTreeMap<String, String> = BTreeMap::new();
    for (entry, data) in &package.entries {
        if let Some(rest) = entry.strip_prefix("environmentvariabledefinitions/")
            && let Some((schema, _file)) = rest.split_once('/')
        {
            let content = variables.entry(schema.to_string()).or_default();
            let normalized = if entry.ends_with(".xml") {
                xml::parse(data, entry)
                    .map(|doc| xml::canonical(&doc.root, xml::Unordered::default()))
                    .unwrap_or_default()
            } else {
                serde_json::from_slice::<Value>(crate::model::strip_bom(data))
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            };
            content.push_str(entry);
            content.push_str(&normalized);
            continue;
        }
        let lower = entry.to_ascii_lowercase();
        if [SOLUTION_XML, CUSTOMIZATIONS_XML, CONTENT_TYPES_XML]
            .iter()
            .any(|root| lower == root.to_ascii_lowercase())
            || referenced_files.contains(&lower)
        {
            continue;
        }
        found.insert(
            ("file".into(), entry.clone()),
            ComponentContent {
                kind: "file".into(),
                name: String::new(),
                canonical: String::new(),
                json: None,
            },
        );
    }
    for (schema, canonical) in variables {
        found.insert(
            ("environment variable".into(), schema),
            ComponentContent {
                kind: "environment variable".into(),
                name: String::new(),
                canonical,
                json: None,
            },
        );
    }
    Ok(found)
}

/// Lists `path: old -> new` for every leaf that differs between two JSON values.
pub fn json_changes(left: &Value, right: &Value) -> Vec<String> {
    let mut changes = Vec::new();
    json_walk(left, right, "", 0, &mut changes);
    changes
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

fn json_walk(left: &Value, right: &Value, path: &str, depth: usize, changes: &mut Vec<String>) {
    if changes.len() >= MAX_FLOW_CHANGES || left == right {
        return;
    }
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (left, right) {
        (Value::Object(a), Value::Object(b)) if depth < MAX_JSON_DEPTH => {
            for (key, value) in a {
                match b.get(key) {
                    Some(other) => json_walk(value, other, &join(key), depth + 1, changes),
                    None => changes.push(format!("{}: removed (was {})", join(key), short(value))),
                }
            }
            for (key, value) in b {
                if !a.contains_key(key) {
                    changes.push(format!("{}: added {}", join(key), short(value)));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if depth < MAX_JSON_DEPTH => {
            for index in 0..a.len().max(b.len()) {
                let key = format!("{path}[{index}]");
                match (a.get(index), b.get(index)) {
                    (Some(x), Some(y)) => json_walk(x, y, &key, depth + 1, changes),
                    (Some(x), None) => changes.push(format!("{key}: removed (was {})", short(x))),
                    (None, Some(y)) => changes.push(format!("{key}: added {}", short(y))),
                    (None, None) => {}
                }
            }
        }
        _ => changes.push(format!(
            "{}: {} -> {}",
            if path.is_empty() { "(root)" } else { path },
            short(left),
            short(right)
        )),
    }
}

/// Compares two packages. Form labels are ignored when one is managed and the other is not, because
/// managed exports blank labels that equal the column's display name.
pub fn diff(
    left: &SolutionPackage,
    right: &SolutionPackage,
) -> Result<SolutionDiff, SolutionError> {
    let (left_model, right_model) = (
        Solution::from_package(left)?,
        Solution::from_package(right)?,
    );
    let ignore_labels = left_model.is_managed() != right_model.is_managed();
    let (left_components, right_components) = (
        components(left, ignore_labels)?,
        components(right, ignore_labels)?,
    );
    let mut changes = Vec::new();
    for (key, content) in &left_components {
        match right_components.get(key) {
            None => changes.push(ComponentChange {
                change: Change::Removed,
                kind: content.kind.clone(),
                identity: key.1.clone(),
                name: content.name.clone(),
                details: Vec::new(),
            }),
            Some(other) => {
                let differs = if content.kind == "file" {
                    let (a, b) = (
                        left.get(&key.1).unwrap_or_default(),
                        right.get(&key.1).unwrap_or_default(),
                    );
                    !entries_equivalent(&key.1, a, b)
                } else {
                    content.canonical != other.canonical
                };
                if differs {
                    let details = match (&content.json, &other.json) {
                        (Some(a), Some(b)) => json_changes(a, b),
                        _ => Vec::new(),
                    };
                    changes.push(ComponentChange {
                        change: Change::Changed,
                        kind: content.kind.clone(),
                        identity: key.1.clone(),
                        name: other.name.clone(),
                        details,
                    });
                }
            }
        }
    }
    for (key, content) in &right_components {
        if !left_components.contains_key(key) {
            changes.push(ComponentChange {
                change: Change::Added,
                kind: content.kind.clone(),
                identity: key.1.clone(),
                name: content.name.clone(),
                details: Vec::new(),
            });
        }
    }
    let describe = |model: &Solution| -> Vec<String> {
        model
            .missing_dependencies
            .iter()
            .map(|d| {
                format!(
                    "{} required by {}",
                    d.required.describe(),
                    d.dependent.describe()
                )
            })
            .collect()
    };
    let (left_deps, right_deps) = (describe(&left_model), describe(&right_model));
    Ok(SolutionDiff {
        unique_name: [
            left_model.unique_name.clone(),
            right_model.unique_name.clone(),
        ],
        version: [left_model.version.clone(), right_model.version.clone()],
        managed: [left_model.is_managed(), right_model.is_managed()],
        components: changes,
        dependencies_added: right_deps
            .iter()
            .filter(|d| !left_deps.contains(d))
            .cloned()
            .collect(),
        dependencies_removed: left_deps
            .iter()
            .filter(|d| !right_deps.contains(d))
            .cloned()
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{SampleOptions, sample};

    #[test]
    fn identical_packages_have_no_differences() {
        let package = sample(&SampleOptions::default());
        let result = diff(&package, &package.clone()).unwrap();
        assert!(result.is_empty(), "{}", result.to_text());
        assert!(result.to_text().contains("no differences"));
    }

    #[test]
    fn reports_added_flows_version_dependencies_and_flow_json_changes() {
        let old = sample(&SampleOptions::default());
        let mut new = sample(&SampleOptions {
            flows: 2,
            version: "1.0.0.2".into(),
            missing_dependency: true,
            ..SampleOptions::default()
        });
        for (name, data) in &mut new.entries {
            if name == &crate::synthetic::flow_file(0) {
                *data = String::from_utf8(data.clone())
                    .unwrap()
                    .replace("\"Trip 0\"", "\"Trip zero\"")
                    .into_bytes();
            }
        }
        let result = diff(&old, &new).unwrap();
        let text = result.to_text();
        assert!(text.contains("version 1.0.0.1 -> 1.0.0.2"), "{text}");
        assert!(
            text.contains(&format!(
                "+ cloud flow {} (Trip approval 1)",
                crate::synthetic::flow_id(1)
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("~ cloud flow {}", crate::synthetic::flow_id(0))),
            "{text}"
        );
        assert!(
            text.contains("properties.definition.actions.Start_approval_0.inputs.parameters.WebhookApprovalCreationInput/title: \"Trip 0\" -> \"Trip zero\""),
            "{text}"
        );
        assert!(
            text.contains(
                "+ missing dependency 1 account (Account) required by 2 cts_accountid (Account)"
            ),
            "{text}"
        );
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["components"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn json_diff_lists_added_removed_and_changed_leaves() {
        let a = serde_json::json!({"x": 1, "y": [1, 2], "z": {"k": "v"}});
        let b = serde_json::json!({"x": 2, "y": [1], "w": true, "z": {"k": "v"}});
        assert_eq!(
            json_changes(&a, &b),
            vec!["x: 1 -> 2", "y[1]: removed (was 2)", "w: added true"]
        );
    }
}
