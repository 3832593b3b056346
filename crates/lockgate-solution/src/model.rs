//! What a solution contains, read from a package: the manifest of solution.xml and the components of
//! customizations.xml and the payload folders, each with the identity Microsoft's tools use for it.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::package::{CUSTOMIZATIONS_XML, SOLUTION_XML, SolutionPackage};
use crate::xml::{self, Element};
use crate::{SolutionError, layout};

/// Environment-variable type codes (documented values of `environmentvariabledefinition.type`).
pub fn environment_variable_type_name(code: &str) -> &'static str {
    match code {
        "100000000" => "String",
        "100000001" => "Number",
        "100000002" => "Boolean",
        "100000003" => "JSON",
        "100000004" => "Data source",
        "100000005" => "Secret",
        _ => "unknown",
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Publisher {
    pub unique_name: String,
    pub customization_prefix: String,
}

/// A `<RootComponent>`: its type code and whichever identity attribute it carries.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RootComponent {
    pub component_type: String,
    pub key: String,
    pub behavior: String,
}

/// One side of a missing dependency, with every attribute as exported.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DependencyNode {
    pub attributes: BTreeMap<String, String>,
}

impl DependencyNode {
    /// A readable identity: type plus schema name, id or named key.
    pub fn describe(&self) -> String {
        let key = self
            .attributes
            .iter()
            .find(|(name, _)| *name == "schemaName" || *name == "id" || name.starts_with("id."))
            .map(|(_, value)| value.as_str())
            .unwrap_or("?");
        let kind = self.attributes.get("type").map_or("?", String::as_str);
        match self.attributes.get("displayName") {
            Some(display) => format!("{kind} {key} ({display})"),
            None => format!("{kind} {key}"),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MissingDependency {
    pub required: DependencyNode,
    pub dependent: DependencyNode,
}

/// A cloud flow, classic workflow, business rule or desktop flow (`<Workflow>` row).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Workflow {
    /// Lower-case GUID without braces.
    pub id: String,
    pub name: String,
    pub category: String,
    pub file: Option<String>,
    /// The flow JSON (cloud flows only).
    #[serde(skip)]
    pub definition: Option<Value>,
}

impl Workflow {
    pub fn kind(&self) -> &'static str {
        match self.category.as_str() {
            "5" => "cloud flow",
            "6" => "desktop flow",
            "2" => "business rule",
            "0" => "classic workflow",
            "3" => "action",
            "4" => "business process flow",
            _ => "workflow",
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConnectionReference {
    pub logical_name: String,
    pub display_name: String,
    pub connector_id: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EnvironmentVariable {
    pub schema_name: String,
    pub display_name: String,
    pub type_code: String,
    pub default_value: Option<String>,
    /// A current value shipped inside the solution (`environmentvariablevalues.json`).
    pub value: Option<String>,
    pub value_id: Option<String>,
    /// `isrequired`: the variable must have a value in every environment.
    pub required: bool,
}

/// Any other component, identified by its kind and name.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct OtherComponent {
    pub kind: String,
    pub name: String,
}

/// A solution's manifest and components.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Solution {
    pub unique_name: String,
    pub version: String,
    /// 0 unmanaged, 1 managed, 2 both (unpacked "Both" trees only).
    pub managed: u8,
    pub publisher: Publisher,
    pub root_components: Vec<RootComponent>,
    pub missing_dependencies: Vec<MissingDependency>,
    pub entities: Vec<String>,
    pub workflows: Vec<Workflow>,
    pub connection_references: Vec<ConnectionReference>,
    pub environment_variables: Vec<EnvironmentVariable>,
    pub canvas_apps: Vec<String>,
    pub other_components: Vec<OtherComponent>,
}

fn guid(text: &str) -> String {
    text.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .to_ascii_lowercase()
}

impl Solution {
    /// Reads the model from a package; `origin` of the package names it in errors.
    pub fn from_package(package: &SolutionPackage) -> Result<Self, SolutionError> {
        let origin = &package.origin;
        let solution_path = format!("{origin}!{SOLUTION_XML}");
        let solution = xml::parse(package.required(SOLUTION_XML)?, &solution_path)?;
        let manifest =
            solution
                .root
                .child("SolutionManifest")
                .ok_or_else(|| SolutionError::InvalidXml {
                    path: solution_path.clone(),
                    message: "no <SolutionManifest> element".into(),
                })?;
        let unique_name = manifest
            .child_text("UniqueName")
            .filter(|name| !name.is_empty())
            .ok_or_else(|| SolutionError::InvalidXml {
                path: solution_path.clone(),
                message: "no <UniqueName> in <SolutionManifest>".into(),
            })?;
        let publisher = manifest.child("Publisher");
        let mut model = Solution {
            unique_name,
            version: manifest.child_text("Version").unwrap_or_default(),
            managed: layout::managed_flag(&solution).unwrap_or(0),
            publisher: Publisher {
                unique_name: publisher
                    .and_then(|p| p.child_text("UniqueName"))
                    .unwrap_or_default(),
                customization_prefix: publisher
                    .and_then(|p| p.child_text("CustomizationPrefix"))
                    .unwrap_or_default(),
            },
            root_components: Vec::new(),
            missing_dependencies: Vec::new(),
            entities: Vec::new(),
            workflows: Vec::new(),
            connection_references: Vec::new(),
            environment_variables: Vec::new(),
            canvas_apps: Vec::new(),
            other_components: Vec::new(),
        };
        if let Some(roots) = manifest.child("RootComponents") {
            for root in roots.elements() {
                let key = ["schemaName", "id"]
                    .iter()
                    .find_map(|name| root.attribute(name))
                    .map(str::to_string)
                    .or_else(|| {
                        root.attributes
                            .iter()
                            .find(|(name, _)| name.starts_with("id."))
                            .map(|(_, value)| value.clone())
                    })
                    .unwrap_or_default();
                model.root_components.push(RootComponent {
                    component_type: root.attribute("type").unwrap_or_default().to_string(),
                    key,
                    behavior: root.attribute("behavior").unwrap_or_default().to_string(),
                });
            }
        }
        if let Some(missing) = manifest.child("MissingDependencies") {
            for dependency in missing.elements() {
                let node = |name: &str| DependencyNode {
                    attributes: dependency
                        .child(name)
                        .map(|e| e.attributes.iter().cloned().collect())
                        .unwrap_or_default(),
                };
                model.missing_dependencies.push(MissingDependency {
                    required: node("Required"),
                    dependent: node("Dependent"),
                });
            }
        }
        let customizations_path = format!("{origin}!{CUSTOMIZATIONS_XML}");
        let customizations =
            xml::parse(package.required(CUSTOMIZATIONS_XML)?, &customizations_path)?;
        model.read_customizations(&customizations.root, package)?;
        model.read_environment_variables(package)?;
        Ok(model)
    }

    fn read_customizations(
        &mut self,
        root: &Element,
        package: &SolutionPackage,
    ) -> Result<(), SolutionError> {
        for section in root.elements() {
            for row in section.elements() {
                match (section.name.as_str(), row.name.as_str()) {
                    ("Entities", "Entity") => self
                        .entities
                        .push(row.child_text("Name").unwrap_or_default()),
                    ("Workflows", "Workflow") => {
                        let file = ["JsonFileName", "XamlFileName"]
                            .iter()
                            .find_map(|name| row.child_text(name))
                            .map(|path| path.trim_start_matches('/').to_string());
                        let definition = match &file {
                            Some(path) if path.to_ascii_lowercase().ends_with(".json") => {
                                match package.get(path) {
                                    Some(bytes) => {
                                        Some(serde_json::from_slice(strip_bom(bytes)).map_err(
                                            |err| SolutionError::InvalidJson {
                                                path: format!("{}!{path}", package.origin),
                                                message: err.to_string(),
                                            },
                                        )?)
                                    }
                                    None => None,
                                }
                            }
                            _ => None,
                        };
                        self.workflows.push(Workflow {
                            id: guid(row.attribute("WorkflowId").unwrap_or_default()),
                            name: row.attribute("Name").unwrap_or_default().to_string(),
                            category: row.child_text("Category").unwrap_or_default(),
                            file,
                            definition,
                        });
                    }
                    ("connectionreferences", "connectionreference") => {
                        self.connection_references.push(ConnectionReference {
                            logical_name: row
                                .attribute("connectionreferencelogicalname")
                                .unwrap_or_default()
                                .to_string(),
                            display_name: row
                                .child_text("connectionreferencedisplayname")
                                .unwrap_or_default(),
                            connector_id: row.child_text("connectorid").unwrap_or_default(),
                        });
                    }
                    ("CanvasApps", "CanvasApp") => self
                        .canvas_apps
                        .push(row.child_text("Name").unwrap_or_default()),
                    (section_name, _) => {
                        let name = row.row_name();
                        if section_name != "Languages" {
                            self.other_components.push(OtherComponent {
                                kind: row.name.clone(),
                                name,
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn read_environment_variables(
        &mut self,
        package: &SolutionPackage,
    ) -> Result<(), SolutionError> {
        for (name, data) in &package.entries {
            let Some(folder) = name.strip_prefix("environmentvariabledefinitions/") else {
                continue;
            };
            let Some(folder) = folder.strip_suffix("/environmentvariabledefinition.xml") else {
                continue;
            };
            let path = format!("{}!{name}", package.origin);
            let definition = xml::parse(data, &path)?.root;
            let schema_name = definition
                .attribute("schemaname")
                .map_or_else(|| folder.to_string(), str::to_string);
            let values_name =
                format!("environmentvariabledefinitions/{folder}/environmentvariablevalues.json");
            let (value, value_id) = match package.get(&values_name) {
                Some(bytes) => {
                    let json: Value = serde_json::from_slice(strip_bom(bytes)).map_err(|err| {
                        SolutionError::InvalidJson {
                            path: format!("{}!{values_name}", package.origin),
                            message: err.to_string(),
                        }
                    })?;
                    let row = &json["environmentvariablevalues"]["environmentvariablevalue"];
                    let row = if row.is_array() { &row[0] } else { row };
                    (
                        row["value"].as_str().map(str::to_string),
                        row["@environmentvariablevalueid"]
                            .as_str()
                            .map(str::to_string),
                    )
                }
                None => (None, None),
            };
            self.environment_variables.push(EnvironmentVariable {
                schema_name,
                display_name: definition
                    .child("displayname")
                    .and_then(|e| e.attribute("default"))
                    .unwrap_or_default()
                    .to_string(),
                type_code: definition.child_text("type").unwrap_or_default(),
                default_value: definition.child_text("defaultvalue"),
                value,
                value_id,
                required: definition.child_text("isrequired").as_deref() == Some("1"),
            });
        }
        self.environment_variables
            .sort_by(|a, b| a.schema_name.cmp(&b.schema_name));
        Ok(())
    }

    pub fn is_managed(&self) -> bool {
        self.managed == 1
    }
}

/// What one cloud flow uses: its connection-reference entries and the environment variables named
/// in its definition's parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowUsage {
    /// (local key, connection-reference logical name if any, runtime source)
    pub connections: Vec<(String, Option<String>, String)>,
    pub environment_variables: Vec<String>,
}

/// Reads the connection references and environment variables a flow JSON uses.
pub fn flow_usage(flow: &Value) -> FlowUsage {
    let mut usage = FlowUsage::default();
    if let Some(references) = flow["properties"]["connectionReferences"].as_object() {
        for (key, reference) in references {
            let logical = reference["connection"]["connectionReferenceLogicalName"]
                .as_str()
                .filter(|name| !name.is_empty())
                .map(str::to_string);
            let source = reference["runtimeSource"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            usage.connections.push((key.clone(), logical, source));
        }
    }
    if let Some(parameters) = flow["properties"]["definition"]["parameters"].as_object() {
        for parameter in parameters.values() {
            if let Some(schema) = parameter["metadata"]["schemaName"].as_str() {
                usage.environment_variables.push(schema.to_string());
            }
        }
    }
    usage
}

pub(crate) fn strip_bom(data: &[u8]) -> &[u8] {
    data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data)
}
