//! Offline checks that matter before a deployment (embedded connections in flows, environment variables
//! used but undefined, values shipped inside the solution, unmanaged packages headed for test or
//! production, missing dependencies), reported as text or as SARIF 2.1.0 like Microsoft's checker.

use serde_json::{Value, json};

use crate::Solution;
use crate::model::flow_usage;

/// How serious a finding is (SARIF `level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Note,
    Warning,
    Error,
}

impl Level {
    pub fn sarif(self) -> &'static str {
        match self {
            Level::Note => "note",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }

    /// The severity word Microsoft's checker puts in `properties.severity`.
    pub fn severity(self) -> &'static str {
        match self {
            Level::Note => "Low",
            Level::Warning => "Medium",
            Level::Error => "High",
        }
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "error" => Ok(Level::Error),
            "warning" => Ok(Level::Warning),
            "note" => Ok(Level::Note),
            _ => Err(format!(
                "unknown level `{text}` (expected error, warning or note)"
            )),
        }
    }
}

/// A rule: stable id, level, short description, category.
pub struct Rule {
    pub id: &'static str,
    pub level: Level,
    pub description: &'static str,
    pub category: &'static str,
}

pub const RULES: &[Rule] = &[
    Rule {
        id: "flow-embedded-connection",
        level: Level::Error,
        description: "Cloud flows should use connection references, not embedded connections, so that each environment can bind its own connection.",
        category: "Upgrade readiness",
    },
    Rule {
        id: "flow-unknown-connection-reference",
        level: Level::Warning,
        description: "A cloud flow uses a connection reference that this solution does not contain.",
        category: "Design",
    },
    Rule {
        id: "env-var-undefined",
        level: Level::Warning,
        description: "A cloud flow uses an environment variable that this solution does not define.",
        category: "Design",
    },
    Rule {
        id: "env-var-value-in-solution",
        level: Level::Warning,
        description: "An environment variable value is shipped inside the solution; set it per environment with a deployment settings file instead.",
        category: "Supportability",
    },
    Rule {
        id: "unmanaged-for-deployment",
        level: Level::Warning,
        description: "Unmanaged solutions belong in development; deploy managed solutions to test and production.",
        category: "Supportability",
    },
    Rule {
        id: "missing-dependency",
        // A warning: most real solutions depend on platform components every environment has, and
        // whether the target has them cannot be known offline.
        level: Level::Warning,
        description: "The solution needs a component that is not part of it; import fails unless the target environment has it.",
        category: "Supportability",
    },
    Rule {
        id: "env-var-required-without-value",
        level: Level::Warning,
        description: "A required environment variable has neither a default nor a value; every target environment needs it in its deployment settings file.",
        category: "Supportability",
    },
    Rule {
        id: "settings-unbound-connection-reference",
        level: Level::Error,
        description: "A connection reference has no ConnectionId in the deployment settings; flows that use it stay off after import.",
        category: "Supportability",
    },
    Rule {
        id: "settings-missing-required-value",
        level: Level::Error,
        description: "A required environment variable without a default gets no value from the deployment settings.",
        category: "Supportability",
    },
];

/// One finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub rule: &'static str,
    pub level: Level,
    pub message: String,
    /// A file inside the package, when the finding is about one.
    pub file: Option<String>,
    /// The component it is about (`solution/flow name`).
    pub component: String,
}

/// Options of a check run.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// The stage the package is headed for (`test`, `production`, ...); an unmanaged package headed
    /// anywhere but development is then an error rather than a warning.
    pub target_stage: Option<String>,
    /// Levels that replace the rules' own (the checker task's `RulesToOverride`), by rule id.
    pub level_overrides: std::collections::BTreeMap<String, Level>,
    /// The deployment settings the package will be imported with, and the file's name: every
    /// connection reference must be bound and every required variable valued in it.
    pub settings: Option<(crate::settings::DeploymentSettings, String)>,
}

/// Reads `RulesToOverride` JSON, `[{"Id": "rule-id", "OverrideLevel": "Medium"}]`; levels are the
/// checker's severities (Critical and High become errors, Medium warnings, Low and Informational notes).
pub fn parse_level_overrides(
    json: &str,
) -> Result<std::collections::BTreeMap<String, Level>, String> {
    let value: Value =
        serde_json::from_str(json).map_err(|err| format!("RulesToOverride is not JSON: {err}"))?;
    let items = value
        .as_array()
        .ok_or("RulesToOverride must be a JSON list")?;
    let mut overrides = std::collections::BTreeMap::new();
    for (index, item) in items.iter().enumerate() {
        let id = item["Id"]
            .as_str()
            .ok_or_else(|| format!("RulesToOverride[{index}] has no Id"))?;
        let given = item["OverrideLevel"].as_str().unwrap_or_default();
        let level = match given.to_ascii_lowercase().as_str() {
            "critical" | "high" => Level::Error,
            "medium" => Level::Warning,
            "low" | "informational" => Level::Note,
            _ => {
                return Err(format!(
                    "RulesToOverride[{index}]: unknown OverrideLevel `{given}` (Critical, High, Medium, Low, Informational)"
                ));
            }
        };
        if !RULES.iter().any(|rule| rule.id == id) {
            return Err(format!("RulesToOverride[{index}]: unknown rule `{id}`"));
        }
        overrides.insert(id.to_string(), level);
    }
    Ok(overrides)
}

fn rule_level(id: &str) -> Level {
    RULES
        .iter()
        .find(|rule| rule.id == id)
        .map_or(Level::Warning, |rule| rule.level)
}

/// Runs every rule over a solution.
pub fn check(solution: &Solution, options: &CheckOptions) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut push = |rule: &'static str,
                    level: Option<Level>,
                    message: String,
                    file: Option<String>,
                    component: String| {
        findings.push(Finding {
            rule,
            level: options
                .level_overrides
                .get(rule)
                .copied()
                .or(level)
                .unwrap_or_else(|| rule_level(rule)),
            message,
            file,
            component,
        });
    };
    let defined_variables: Vec<String> = solution
        .environment_variables
        .iter()
        .map(|v| v.schema_name.to_ascii_lowercase())
        .collect();
    let required_elsewhere: Vec<String> = solution
        .missing_dependencies
        .iter()
        .flat_map(|d| {
            d.required
                .attributes
                .values()
                .map(|v| v.to_ascii_lowercase())
        })
        .collect();
    for flow in &solution.workflows {
        let Some(definition) = &flow.definition else {
            continue;
        };
        let usage = flow_usage(definition);
        let component = format!("{}/{}", solution.unique_name, flow.name);
        for (key, logical_name, _source) in &usage.connections {
            match logical_name {
                None => push(
                    "flow-embedded-connection",
                    None,
                    format!(
                        "cloud flow `{}` uses an embedded connection for `{key}` instead of a connection reference",
                        flow.name
                    ),
                    flow.file.clone(),
                    component.clone(),
                ),
                Some(name) => {
                    let known = solution
                        .connection_references
                        .iter()
                        .any(|r| r.logical_name.eq_ignore_ascii_case(name))
                        || required_elsewhere.contains(&name.to_ascii_lowercase());
                    if !known {
                        push(
                            "flow-unknown-connection-reference",
                            None,
                            format!(
                                "cloud flow `{}` uses connection reference `{name}`, which is not in the solution",
                                flow.name
                            ),
                            flow.file.clone(),
                            component.clone(),
                        );
                    }
                }
            }
        }
        for variable in &usage.environment_variables {
            let lower = variable.to_ascii_lowercase();
            if !defined_variables.contains(&lower) && !required_elsewhere.contains(&lower) {
                push(
                    "env-var-undefined",
                    None,
                    format!(
                        "cloud flow `{}` uses environment variable `{variable}`, which the solution does not define",
                        flow.name
                    ),
                    flow.file.clone(),
                    component.clone(),
                );
            }
        }
    }
    for variable in &solution.environment_variables {
        if variable.required
            && variable.value.is_none()
            && variable.default_value.as_deref().is_none_or(str::is_empty)
        {
            push(
                "env-var-required-without-value",
                None,
                format!(
                    "environment variable `{}` is required but has no default or value; give it a value in each stage's deployment settings",
                    variable.schema_name
                ),
                Some(format!(
                    "environmentvariabledefinitions/{}/environmentvariabledefinition.xml",
                    variable.schema_name
                )),
                format!("{}/{}", solution.unique_name, variable.schema_name),
            );
        }
        if variable.value.is_some() {
            push(
                "env-var-value-in-solution",
                None,
                format!(
                    "environment variable `{}` ships a current value inside the solution",
                    variable.schema_name
                ),
                Some(format!(
                    "environmentvariabledefinitions/{}/environmentvariablevalues.json",
                    variable.schema_name
                )),
                format!("{}/{}", solution.unique_name, variable.schema_name),
            );
        }
    }
    if solution.managed == 0 {
        let stage = options.target_stage.as_deref().map(str::to_ascii_lowercase);
        let level = match stage.as_deref() {
            Some("dev" | "development") => None,
            Some(_) => Some(Level::Error),
            None => Some(Level::Warning),
        };
        if let Some(level) = level {
            let headed = options
                .target_stage
                .as_deref()
                .map_or(String::new(), |stage| {
                    format!(" but is headed for `{stage}`")
                });
            push(
                "unmanaged-for-deployment",
                Some(level),
                format!(
                    "solution `{}` is unmanaged{headed}; deploy a managed export to test and production",
                    solution.unique_name
                ),
                Some("solution.xml".into()),
                solution.unique_name.clone(),
            );
        }
    }
    for dependency in &solution.missing_dependencies {
        push(
            "missing-dependency",
            None,
            format!(
                "missing dependency: {} is required by {}",
                dependency.required.describe(),
                dependency.dependent.describe()
            ),
            Some("solution.xml".into()),
            solution.unique_name.clone(),
        );
    }
    if let Some((settings, file)) = &options.settings {
        for reference in &solution.connection_references {
            let bound = settings.connection_references.iter().any(|r| {
                r.logical_name.eq_ignore_ascii_case(&reference.logical_name)
                    && !r.connection_id.trim().is_empty()
            });
            if !bound {
                push(
                    "settings-unbound-connection-reference",
                    None,
                    format!(
                        "connection reference `{}` has no ConnectionId in {file}",
                        reference.logical_name
                    ),
                    Some(file.clone()),
                    format!("{}/{}", solution.unique_name, reference.logical_name),
                );
            }
        }
        for variable in &solution.environment_variables {
            let has_fallback = variable.value.is_some()
                || variable
                    .default_value
                    .as_deref()
                    .is_some_and(|v| !v.is_empty());
            let set = settings.environment_variables.iter().any(|v| {
                v.schema_name.eq_ignore_ascii_case(&variable.schema_name) && !v.value.is_empty()
            });
            if variable.required && !has_fallback && !set {
                push(
                    "settings-missing-required-value",
                    None,
                    format!(
                        "required environment variable `{}` gets no value from {file}",
                        variable.schema_name
                    ),
                    Some(file.clone()),
                    format!("{}/{}", solution.unique_name, variable.schema_name),
                );
            }
        }
    }
    findings
}

/// The findings as a SARIF 2.1.0 log with one run, in the shape of Microsoft's checker output
/// (`tool.driver.rules`, `ruleIndex`, logical locations, `properties.severity`).
pub fn to_sarif(findings: &[Finding], analyzed_file: &str) -> Value {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|rule| {
            json!({
                "id": rule.id,
                "name": rule.id,
                "shortDescription": {"text": rule.description},
                "defaultConfiguration": {"level": rule.level.sarif()},
                "properties": {"category": rule.category, "severity": rule.level.severity()}
            })
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|finding| {
            let mut location =
                json!({"logicalLocations": [{"fullyQualifiedName": finding.component}]});
            if let Some(file) = &finding.file {
                location["physicalLocation"] =
                    json!({"artifactLocation": {"uri": file, "uriBaseId": "PACKAGE"}});
            }
            json!({
                "ruleId": finding.rule,
                "ruleIndex": RULES.iter().position(|rule| rule.id == finding.rule).unwrap_or(0),
                "level": finding.level.sarif(),
                "message": {"text": finding.message},
                "locations": [location],
                "properties": {"severity": finding.level.severity()}
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "lockgate-solution-check", "informationUri": "https://github.com/lockgate/lockgate/blob/main/docs/solution.md", "rules": rules}},
            "originalUriBaseIds": {"PACKAGE": {"uri": analyzed_file}},
            "results": results
        }]
    })
}

/// The text report, one line per finding.
pub fn to_text(findings: &[Finding]) -> String {
    let mut out = String::new();
    for finding in findings {
        let file = finding
            .file
            .as_deref()
            .map_or(String::new(), |file| format!(" [{file}]"));
        out.push_str(&format!(
            "{}: {}: {}{file}\n",
            finding.level.sarif(),
            finding.rule,
            finding.message
        ));
    }
    let count = |level: Level| findings.iter().filter(|f| f.level == level).count();
    out.push_str(&format!(
        "{} error(s), {} warning(s), {} note(s)\n",
        count(Level::Error),
        count(Level::Warning),
        count(Level::Note)
    ));
    out
}

/// True when any finding is at `fail_on` or worse.
pub fn fails(findings: &[Finding], fail_on: Level) -> bool {
    findings.iter().any(|finding| finding.level >= fail_on)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{SampleOptions, sample};

    fn run(options: SampleOptions, check_options: &CheckOptions) -> Vec<Finding> {
        check(
            &Solution::from_package(&sample(&options)).unwrap(),
            check_options,
        )
    }

    #[test]
    fn a_clean_managed_solution_has_no_findings() {
        let findings = run(
            SampleOptions {
                managed: true,
                ..SampleOptions::default()
            },
            &CheckOptions::default(),
        );
        assert_eq!(findings, Vec::new());
    }

    #[test]
    fn each_rule_fires_on_its_problem() {
        let findings = run(
            SampleOptions {
                embedded_connection: true,
                undefined_variable: true,
                value_in_solution: true,
                missing_dependency: true,
                ..SampleOptions::default()
            },
            &CheckOptions {
                target_stage: Some("production".into()),
                ..CheckOptions::default()
            },
        );
        let rules: Vec<&str> = findings.iter().map(|f| f.rule).collect();
        assert_eq!(
            rules,
            vec![
                "flow-embedded-connection",
                "env-var-undefined",
                "env-var-value-in-solution",
                "unmanaged-for-deployment",
                "missing-dependency"
            ]
        );
        let unmanaged = findings
            .iter()
            .find(|f| f.rule == "unmanaged-for-deployment")
            .unwrap();
        assert_eq!(unmanaged.level, Level::Error, "headed for production");
        assert!(fails(&findings, Level::Error));
        let text = to_text(&findings);
        assert!(text.contains("error: flow-embedded-connection: cloud flow `Trip approval 0` uses an embedded connection for `shared_approvals`"), "{text}");
    }

    #[test]
    fn unmanaged_is_only_a_warning_without_a_target_and_fine_for_development() {
        let findings = run(SampleOptions::default(), &CheckOptions::default());
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].level, Level::Warning);
        assert!(!fails(&findings, Level::Error));
        assert!(fails(&findings, Level::Warning));
        assert!(
            run(
                SampleOptions::default(),
                &CheckOptions {
                    target_stage: Some("dev".into()),
                    ..CheckOptions::default()
                }
            )
            .is_empty()
        );
    }

    #[test]
    fn required_variables_without_any_value_are_reported() {
        let mut package = sample(&SampleOptions {
            managed: true,
            ..SampleOptions::default()
        });
        for (name, data) in &mut package.entries {
            if name.ends_with("environmentvariabledefinition.xml") {
                let text = String::from_utf8(data.clone()).unwrap();
                let text = text.replace("<isrequired>0</isrequired>", "<isrequired>1</isrequired>");
                let text = text.replace(
                    "  <defaultvalue>https://api.contoso.example</defaultvalue>\r\n",
                    "",
                );
                *data = text.into_bytes();
            }
        }
        let findings = check(
            &Solution::from_package(&package).unwrap(),
            &CheckOptions::default(),
        );
        let rules: Vec<&str> = findings.iter().map(|f| f.rule).collect();
        assert_eq!(rules, vec!["env-var-required-without-value"]);
        assert!(findings[0].message.contains("cts_ApiUrl"));
    }

    #[test]
    fn a_settings_file_must_bind_every_connection_reference() {
        let solution = Solution::from_package(&sample(&SampleOptions {
            managed: true,
            ..SampleOptions::default()
        }))
        .unwrap();
        let path = std::path::Path::new("config/prod.json");
        let unbound = crate::settings::parse_settings(br#"{"ConnectionReferences":[{"LogicalName":"cts_sharedapprovals_1a2b3","ConnectionId":""}]}"#, path).unwrap();
        let options = CheckOptions {
            settings: Some((unbound, "config/prod.json".into())),
            ..CheckOptions::default()
        };
        let findings = check(&solution, &options);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].rule, "settings-unbound-connection-reference");
        assert!(
            findings[0].message.contains("cts_sharedapprovals_1a2b3")
                && findings[0].message.contains("config/prod.json")
        );
        let bound = crate::settings::parse_settings(br#"{"ConnectionReferences":[{"LogicalName":"cts_sharedapprovals_1a2b3","ConnectionId":"abc"}]}"#, path).unwrap();
        let options = CheckOptions {
            settings: Some((bound, "config/prod.json".into())),
            ..CheckOptions::default()
        };
        assert!(check(&solution, &options).is_empty());
    }

    #[test]
    fn rule_levels_can_be_overridden() {
        let overrides = parse_level_overrides(
            r#"[{"Id": "unmanaged-for-deployment", "OverrideLevel": "Critical"}]"#,
        )
        .unwrap();
        let findings = run(
            SampleOptions::default(),
            &CheckOptions {
                level_overrides: overrides,
                ..CheckOptions::default()
            },
        );
        assert_eq!(findings[0].level, Level::Error);
        assert!(
            parse_level_overrides(r#"[{"Id": "no-such-rule", "OverrideLevel": "Low"}]"#)
                .unwrap_err()
                .contains("no-such-rule")
        );
        assert!(
            parse_level_overrides(r#"[{"Id": "missing-dependency", "OverrideLevel": "Severe"}]"#)
                .unwrap_err()
                .contains("Severe")
        );
    }

    #[test]
    fn sarif_has_the_2_1_0_shape() {
        let findings = run(
            SampleOptions {
                embedded_connection: true,
                managed: true,
                ..SampleOptions::default()
            },
            &CheckOptions::default(),
        );
        let sarif = to_sarif(&findings, "ContosoTravel.zip");
        assert_eq!(sarif["version"], "2.1.0");
        let run = &sarif["runs"][0];
        assert_eq!(
            run["tool"]["driver"]["rules"].as_array().unwrap().len(),
            RULES.len()
        );
        let result = &run["results"][0];
        assert_eq!(result["ruleId"], "flow-embedded-connection");
        assert_eq!(result["ruleIndex"], 0);
        assert_eq!(result["level"], "error");
        assert_eq!(result["properties"]["severity"], "High");
        assert_eq!(
            result["locations"][0]["logicalLocations"][0]["fullyQualifiedName"],
            "ContosoTravel/Trip approval 0"
        );
        assert!(
            result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                .as_str()
                .unwrap()
                .starts_with("Workflows/")
        );
    }
}
