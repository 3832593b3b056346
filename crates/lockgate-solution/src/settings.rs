//! Deployment settings files (`EnvironmentVariables` with SchemaName/Value, `ConnectionReferences` with
//! LogicalName/ConnectionId/ConnectorId): creating and merging them from a solution, reading them strictly,
//! and turning them into the `ComponentParameters` of a Dataverse import.

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::{Solution, SolutionError};

const TOP_LEVEL_KEYS: &[&str] = &["EnvironmentVariables", "ConnectionReferences"];

/// The result of [`create_settings`]: the file's JSON and the entries that were dropped because the
/// solution no longer has them.
#[derive(Debug, Clone)]
pub struct CreatedSettings {
    pub settings: Value,
    pub dropped: Vec<String>,
}

fn entries<'a>(settings: Option<&'a Value>, list: &str) -> Vec<&'a Map<String, Value>> {
    settings
        .and_then(|value| value.get(list))
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default()
}

fn find<'a>(
    items: &[&'a Map<String, Value>],
    key: &str,
    name: &str,
) -> Option<&'a Map<String, Value>> {
    items.iter().copied().find(|item| {
        item.get(key)
            .and_then(Value::as_str)
            .is_some_and(|value| value.eq_ignore_ascii_case(name))
    })
}

/// Builds the settings for `solution`: one entry per environment-variable definition and connection
/// reference, in the solution's order. Values, connection ids and extra keys of an `existing` file
/// are kept; the connector id always comes from the solution.
pub fn create_settings(solution: &Solution, existing: Option<&Value>) -> CreatedSettings {
    let old_variables = entries(existing, "EnvironmentVariables");
    let old_references = entries(existing, "ConnectionReferences");
    let mut variables = Vec::new();
    for variable in &solution.environment_variables {
        let mut entry = find(&old_variables, "SchemaName", &variable.schema_name)
            .cloned()
            .unwrap_or_default();
        entry.insert("SchemaName".into(), json!(variable.schema_name));
        entry.entry("Value").or_insert_with(|| json!(""));
        variables.push(Value::Object(reorder(entry, &["SchemaName", "Value"])));
    }
    let mut references = Vec::new();
    for reference in &solution.connection_references {
        let mut entry = find(&old_references, "LogicalName", &reference.logical_name)
            .cloned()
            .unwrap_or_default();
        entry.insert("LogicalName".into(), json!(reference.logical_name));
        entry.entry("ConnectionId").or_insert_with(|| json!(""));
        entry.insert("ConnectorId".into(), json!(reference.connector_id));
        references.push(Value::Object(reorder(
            entry,
            &["LogicalName", "ConnectionId", "ConnectorId"],
        )));
    }
    let mut dropped = Vec::new();
    for old in old_variables {
        let name = old
            .get("SchemaName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !solution
            .environment_variables
            .iter()
            .any(|v| v.schema_name.eq_ignore_ascii_case(name))
        {
            dropped.push(format!("environment variable {name}"));
        }
    }
    for old in old_references {
        let name = old
            .get("LogicalName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !solution
            .connection_references
            .iter()
            .any(|r| r.logical_name.eq_ignore_ascii_case(name))
        {
            dropped.push(format!("connection reference {name}"));
        }
    }
    let mut settings = existing
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    settings.insert("EnvironmentVariables".into(), Value::Array(variables));
    settings.insert("ConnectionReferences".into(), Value::Array(references));
    CreatedSettings {
        settings: Value::Object(reorder(settings, TOP_LEVEL_KEYS)),
        dropped,
    }
}

fn reorder(mut map: Map<String, Value>, first: &[&str]) -> Map<String, Value> {
    let mut ordered = Map::new();
    for key in first {
        if let Some(value) = map.remove(*key) {
            ordered.insert((*key).to_string(), value);
        }
    }
    ordered.extend(map);
    ordered
}

/// One environment-variable value from a settings file.
#[derive(Debug, Clone, PartialEq)]
pub struct VariableSetting {
    pub schema_name: String,
    pub value: String,
}

/// One connection-reference binding from a settings file.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceSetting {
    pub logical_name: String,
    pub connection_id: String,
    pub connector_id: String,
}

/// A parsed deployment settings file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeploymentSettings {
    pub environment_variables: Vec<VariableSetting>,
    pub connection_references: Vec<ReferenceSetting>,
}

/// Reads a settings file: unknown top-level keys and entries without their name are errors naming
/// the file; extra keys inside an entry (such as the ALM Accelerator's `ConnectionOwner`) are allowed.
pub fn read_settings(path: &Path) -> Result<DeploymentSettings, SolutionError> {
    let bytes = std::fs::read(path).map_err(|err| SolutionError::io(path, err))?;
    parse_settings(&bytes, path)
}

pub fn parse_settings(bytes: &[u8], path: &Path) -> Result<DeploymentSettings, SolutionError> {
    let fail = |message: String| SolutionError::Settings {
        path: path.to_path_buf(),
        message,
    };
    let value: Value = serde_json::from_slice(crate::model::strip_bom(bytes)).map_err(|err| {
        fail(format!(
            "invalid JSON at line {} column {}: {err}",
            err.line(),
            err.column()
        ))
    })?;
    let object = value
        .as_object()
        .ok_or_else(|| fail("expected a JSON object".into()))?;
    for key in object.keys() {
        if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
            return Err(fail(format!(
                "unknown key `{key}` (expected EnvironmentVariables and ConnectionReferences)"
            )));
        }
    }
    let mut settings = DeploymentSettings::default();
    let string = |item: &Map<String, Value>,
                  key: &str,
                  list: &str,
                  index: usize|
     -> Result<String, SolutionError> {
        match item.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(text)) => Ok(text.clone()),
            Some(other) => Err(fail(format!(
                "{list}[{index}].{key} must be a string, found {other}"
            ))),
        }
    };
    let list = |name: &str| -> Result<Vec<&Map<String, Value>>, SolutionError> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    item.as_object()
                        .ok_or_else(|| fail(format!("{name}[{index}] must be an object")))
                })
                .collect(),
            Some(_) => Err(fail(format!("{name} must be a list"))),
        }
    };
    for (index, item) in list("EnvironmentVariables")?.into_iter().enumerate() {
        let schema_name = string(item, "SchemaName", "EnvironmentVariables", index)?;
        if schema_name.is_empty() {
            return Err(fail(format!(
                "EnvironmentVariables[{index}] has no SchemaName"
            )));
        }
        let value = match item.get("Value") {
            Some(Value::Number(number)) => number.to_string(),
            Some(Value::Bool(flag)) => flag.to_string(),
            _ => string(item, "Value", "EnvironmentVariables", index)?,
        };
        settings
            .environment_variables
            .push(VariableSetting { schema_name, value });
    }
    for (index, item) in list("ConnectionReferences")?.into_iter().enumerate() {
        let logical_name = string(item, "LogicalName", "ConnectionReferences", index)?;
        if logical_name.is_empty() {
            return Err(fail(format!(
                "ConnectionReferences[{index}] has no LogicalName"
            )));
        }
        settings.connection_references.push(ReferenceSetting {
            logical_name,
            connection_id: string(item, "ConnectionId", "ConnectionReferences", index)?,
            connector_id: string(item, "ConnectorId", "ConnectionReferences", index)?,
        });
    }
    Ok(settings)
}

/// Checks that every name in the settings exists in the solution; the error lists every unknown name.
pub fn validate_against(
    settings: &DeploymentSettings,
    solution: &Solution,
    path: &Path,
) -> Result<(), SolutionError> {
    let mut unknown = Vec::new();
    for variable in &settings.environment_variables {
        if !solution
            .environment_variables
            .iter()
            .any(|v| v.schema_name.eq_ignore_ascii_case(&variable.schema_name))
        {
            unknown.push(format!("environment variable `{}`", variable.schema_name));
        }
    }
    for reference in &settings.connection_references {
        if !solution
            .connection_references
            .iter()
            .any(|r| r.logical_name.eq_ignore_ascii_case(&reference.logical_name))
        {
            unknown.push(format!("connection reference `{}`", reference.logical_name));
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    Err(SolutionError::Settings {
        path: path.to_path_buf(),
        message: format!(
            "names not in solution {}: {}",
            solution.unique_name,
            unknown.join(", ")
        ),
    })
}

/// The `ComponentParameters` of ImportSolution(Async)/StageAndUpgrade(Async): one
/// `connectionreference` record per bound reference and one `environmentvariablevalue` per value.
/// Entries left empty are skipped, so the target keeps its default or existing value.
pub fn component_parameters(settings: &DeploymentSettings, solution: &Solution) -> Vec<Value> {
    let mut parameters = Vec::new();
    for reference in &settings.connection_references {
        if reference.connection_id.is_empty() {
            continue;
        }
        let known = solution
            .connection_references
            .iter()
            .find(|r| r.logical_name.eq_ignore_ascii_case(&reference.logical_name));
        let connector_id = if reference.connector_id.is_empty() {
            known.map(|r| r.connector_id.clone()).unwrap_or_default()
        } else {
            reference.connector_id.clone()
        };
        parameters.push(json!({
            "@odata.type": "Microsoft.Dynamics.CRM.connectionreference",
            "connectionreferencelogicalname": reference.logical_name,
            "connectionreferencedisplayname": known.map(|r| r.display_name.clone()).unwrap_or_default(),
            "connectorid": connector_id,
            "connectionid": reference.connection_id,
        }));
    }
    for variable in &settings.environment_variables {
        if variable.value.is_empty() {
            continue;
        }
        let mut record = json!({
            "@odata.type": "Microsoft.Dynamics.CRM.environmentvariablevalue",
            "schemaname": variable.schema_name,
            "value": variable.value,
        });
        if let Some(id) = solution
            .environment_variables
            .iter()
            .find(|v| v.schema_name.eq_ignore_ascii_case(&variable.schema_name))
            .and_then(|v| v.value_id.clone())
        {
            record["environmentvariablevalueid"] = json!(id);
        }
        parameters.push(record);
    }
    parameters
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{SampleOptions, sample};

    fn solution() -> Solution {
        Solution::from_package(&sample(&SampleOptions {
            value_in_solution: true,
            ..SampleOptions::default()
        }))
        .unwrap()
    }

    #[test]
    fn creates_one_entry_per_variable_and_reference() {
        let created = create_settings(&solution(), None);
        assert_eq!(
            created.settings,
            json!({
                "EnvironmentVariables": [{"SchemaName": "cts_ApiUrl", "Value": ""}],
                "ConnectionReferences": [{"LogicalName": "cts_sharedapprovals_1a2b3", "ConnectionId": "", "ConnectorId": "/providers/Microsoft.PowerApps/apis/shared_approvals"}]
            })
        );
    }

    #[test]
    fn merging_keeps_values_and_extra_keys_and_drops_stale_entries() {
        let existing = json!({
            "EnvironmentVariables": [{"SchemaName": "cts_apiurl", "Value": "https://test.example"}, {"SchemaName": "cts_Gone", "Value": "x"}],
            "ConnectionReferences": [{"LogicalName": "cts_sharedapprovals_1a2b3", "ConnectionId": "abc123", "ConnectorId": "old", "ConnectionOwner": "me@contoso.example"}]
        });
        let created = create_settings(&solution(), Some(&existing));
        assert_eq!(
            created.settings["EnvironmentVariables"][0]["Value"],
            "https://test.example"
        );
        assert_eq!(
            created.settings["EnvironmentVariables"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let reference = &created.settings["ConnectionReferences"][0];
        assert_eq!(reference["ConnectionId"], "abc123");
        assert_eq!(reference["ConnectionOwner"], "me@contoso.example");
        assert_eq!(
            reference["ConnectorId"],
            "/providers/Microsoft.PowerApps/apis/shared_approvals"
        );
        assert_eq!(
            created.dropped,
            vec!["environment variable cts_Gone".to_string()]
        );
    }

    #[test]
    fn unknown_keys_and_names_are_errors_naming_the_file() {
        let path = Path::new("config/test/deploymentSettings.json");
        let err = parse_settings(br#"{"EnvironmentVariable": []}"#, path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("deploymentSettings.json") && err.contains("EnvironmentVariable"),
            "{err}"
        );
        let settings = parse_settings(
            br#"{"EnvironmentVariables":[{"SchemaName":"cts_Typo","Value":"1"}]}"#,
            path,
        )
        .unwrap();
        let err = validate_against(&settings, &solution(), path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("deploymentSettings.json") && err.contains("cts_Typo"),
            "{err}"
        );
        let err = parse_settings(b"{\n  \"EnvironmentVariables\": [,]\n}", path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn component_parameters_use_the_documented_record_shapes() {
        let settings = DeploymentSettings {
            environment_variables: vec![VariableSetting {
                schema_name: "cts_ApiUrl".into(),
                value: "https://prod.example".into(),
            }],
            connection_references: vec![ReferenceSetting {
                logical_name: "cts_sharedapprovals_1a2b3".into(),
                connection_id: "0123abcd".into(),
                connector_id: String::new(),
            }],
        };
        let parameters = component_parameters(&settings, &solution());
        assert_eq!(
            parameters[0]["@odata.type"],
            "Microsoft.Dynamics.CRM.connectionreference"
        );
        assert_eq!(
            parameters[0]["connectorid"],
            "/providers/Microsoft.PowerApps/apis/shared_approvals"
        );
        assert_eq!(
            parameters[1]["@odata.type"],
            "Microsoft.Dynamics.CRM.environmentvariablevalue"
        );
        assert_eq!(
            parameters[1]["environmentvariablevalueid"],
            "02b34632-9c07-ec11-94ef-00224826aa05"
        );
    }
}
