//! Lowering: turns the expanded YAML tree into the plan, resolving template references (stages,
//! jobs, steps, variables, `extends`) as it meets them and checking every key and value.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use crate::compiler::{Compiler, TemplateKind};
use crate::expression;
use crate::plan::*;
use crate::template::{Scope, plain_scalar_value};
use crate::yaml::{Node, NodeValue, Span};

const PIPELINE_COMMON: &[&str] = &[
    "name",
    "appendCommitMessageToRunName",
    "trigger",
    "parameters",
    "pr",
    "schedules",
    "resources",
    "variables",
    "lockBehavior",
];
const PIPELINE_SHAPES: &[&str] = &[
    "stages",
    "extends",
    "jobs",
    "steps",
    "pool",
    "strategy",
    "continueOnError",
    "container",
    "services",
    "workspace",
];
const STAGE_KEYS: &[&str] = &[
    "stage",
    "group",
    "displayName",
    "pool",
    "dependsOn",
    "condition",
    "variables",
    "jobs",
    "lockBehavior",
    "trigger",
    "isSkippable",
    "templateContext",
    "checks",
];
const JOB_KEYS: &[&str] = &[
    "job",
    "displayName",
    "dependsOn",
    "condition",
    "continueOnError",
    "timeoutInMinutes",
    "cancelTimeoutInMinutes",
    "variables",
    "strategy",
    "pool",
    "container",
    "services",
    "workspace",
    "uses",
    "steps",
    "templateContext",
];
const DEPLOYMENT_KEYS: &[&str] = &[
    "deployment",
    "displayName",
    "dependsOn",
    "condition",
    "continueOnError",
    "timeoutInMinutes",
    "cancelTimeoutInMinutes",
    "variables",
    "pool",
    "environment",
    "strategy",
    "workspace",
    "uses",
    "container",
    "services",
    "templateContext",
];
const STEP_COMMON: &[&str] = &[
    "condition",
    "continueOnError",
    "displayName",
    "target",
    "enabled",
    "env",
    "name",
    "timeoutInMinutes",
    "retryCountOnTaskFailure",
];
const STEP_KINDS: &[StepKind] = &[
    StepKind::Script,
    StepKind::Bash,
    StepKind::Pwsh,
    StepKind::Powershell,
    StepKind::Checkout,
    StepKind::Download,
    StepKind::DownloadBuild,
    StepKind::GetPackage,
    StepKind::Publish,
    StepKind::Upload,
    StepKind::Task,
    StepKind::ReviewApp,
];
const HOOKS: &[&str] = &["preDeploy", "deploy", "routeTraffic", "postRouteTraffic"];

/// Keys a step of this kind accepts besides the common ones.
fn step_keys(kind: StepKind) -> &'static [&'static str] {
    match kind {
        StepKind::Script | StepKind::Bash => &["failOnStderr", "workingDirectory"],
        StepKind::Pwsh | StepKind::Powershell => &[
            "errorActionPreference",
            "failOnStderr",
            "ignoreLASTEXITCODE",
            "workingDirectory",
        ],
        StepKind::Checkout => &[
            "clean",
            "fetchDepth",
            "fetchFilter",
            "fetchTags",
            "lfs",
            "persistCredentials",
            "submodules",
            "path",
            "sparseCheckoutDirectories",
            "sparseCheckoutPatterns",
            "workspaceRepo",
        ],
        StepKind::Download => &["artifact", "patterns", "path"],
        StepKind::DownloadBuild => &["artifact", "path", "patterns", "inputs"],
        StepKind::GetPackage => &["path"],
        StepKind::Publish | StepKind::Upload => &["artifact"],
        StepKind::Task => &["inputs"],
        StepKind::ReviewApp => &[],
    }
}

/// "did you mean `x`?" for a close spelling (edit distance up to 2, or the same ignoring case).
pub fn suggest(word: &str, candidates: &[&str]) -> Option<String> {
    let lower = word.to_ascii_lowercase();
    // Ranked by edit distance, then by sharing a prefix (`branch` is `branches`, not `batch`).
    let mut best: Option<((usize, bool), &str)> = None;
    for candidate in candidates {
        let candidate_lower = candidate.to_ascii_lowercase();
        let distance = edit_distance(&lower, &candidate_lower);
        let rank = (
            distance,
            !(candidate_lower.starts_with(&lower) || lower.starts_with(&candidate_lower)),
        );
        if distance <= 2.max(word.len() / 4) && best.is_none_or(|(r, _)| rank < r) {
            best = Some((rank, candidate));
        }
    }
    best.map(|(_, c)| format!("did you mean `{c}`?"))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            current.push(
                (previous[j] + cost)
                    .min(previous[j + 1] + 1)
                    .min(current[j] + 1),
            );
        }
        previous = current;
    }
    previous[b.len()]
}

/// Whether `name` is a valid stage or job identifier: letters, digits and `_`, not starting with a digit.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Converts a node to JSON, typing plain scalars as YAML does.
pub fn node_to_json(node: &Node) -> serde_json::Value {
    match &node.value {
        NodeValue::Scalar { text, plain: true } => match plain_scalar_value(text) {
            lockgate_expr::Value::Null => serde_json::Value::Null,
            lockgate_expr::Value::Boolean(b) => serde_json::Value::Bool(b),
            lockgate_expr::Value::Number(n) => {
                if n.fract() == 0.0 && n.abs() < 9e15 {
                    serde_json::Value::from(n as i64)
                } else {
                    serde_json::Number::from_f64(n).map_or(
                        serde_json::Value::String(text.clone()),
                        serde_json::Value::Number,
                    )
                }
            }
            _ => serde_json::Value::String(text.clone()),
        },
        NodeValue::Scalar { text, plain: false } => serde_json::Value::String(text.clone()),
        NodeValue::Sequence(items) => {
            serde_json::Value::Array(items.iter().map(node_to_json).collect())
        }
        NodeValue::Mapping(entries) => serde_json::Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), node_to_json(v)))
                .collect(),
        ),
    }
}

/// What enclosing levels pass down.
#[derive(Clone, Default)]
struct Inherited {
    scope: Scope,
    pool: Option<Pool>,
}

struct Lowerer<'c, 'a> {
    c: &'c mut Compiler<'a>,
    /// Where each stage (`stage:NAME`) and job (`job:NAME`) states its dependencies (its
    /// `dependsOn`, else its name), for dependency diagnostics. A later entry replaces an earlier one.
    dependency_spans: HashMap<String, Span>,
}

/// The names of one list (the stages of a pipeline, the jobs of a stage), compared as Azure compares
/// them (ASCII case-insensitive), with O(1) look-ups so that a list of n items is checked in O(n).
#[derive(Default)]
struct Names {
    folded: HashSet<String>,
    /// No generated name with a smaller number is free (the set only grows).
    next_generated: usize,
}

impl Names {
    fn contains(&self, name: &str) -> bool {
        self.folded.contains(&name.to_ascii_lowercase())
    }

    fn insert(&mut self, name: &str) {
        self.folded.insert(name.to_ascii_lowercase());
    }

    /// The name of an unnamed item: `base`, then `base1`, `base2`, …, the first one not taken.
    fn generated(&mut self, base: &str) -> String {
        loop {
            let candidate = match self.next_generated {
                0 => base.to_string(),
                n => format!("{base}{n}"),
            };
            if !self.contains(&candidate) {
                return candidate;
            }
            self.next_generated += 1;
        }
    }
}

/// Lowers the entry file into a plan (None when it could not be built at all).
pub fn lower_pipeline(c: &mut Compiler<'_>, root: &Node) -> Option<Plan> {
    let mut lowerer = Lowerer {
        c,
        dependency_spans: HashMap::new(),
    };
    lowerer.pipeline(root)
}

impl Lowerer<'_, '_> {
    fn error(
        &mut self,
        code: &str,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> &mut crate::Diagnostic {
        self.c.error(code, message, span, label)
    }

    fn wrong_type(&mut self, node: &Node, key: &str, expected: &str) {
        self.error(
            "pipeline::wrong-type",
            format!("`{key}` must be {expected}, not {}", node.kind_name()),
            node.span,
            format!("expected {expected}"),
        );
    }

    /// Reports keys that are not in `allowed`.
    fn check_keys(&mut self, entries: &[(Node, Node)], allowed: &[&[&str]], what: &str) {
        self.c.check_keys(entries, allowed, what);
    }

    /// Resolves a `- template:` item of a stages/jobs/steps list: checks its keys, instantiates
    /// the template and returns the list it provides (None when it failed, already reported).
    /// The caller lowers the list with `template_depth` raised, and must call
    /// [`Lowerer::leave_template`] afterwards.
    fn enter_template(
        &mut self,
        item: &Node,
        reference: &Node,
        kind: TemplateKind,
        scope: &Scope,
    ) -> Option<Node> {
        let key = kind.key();
        let singular = key.trim_end_matches('s');
        self.check_keys(
            item.as_mapping().unwrap_or(&[]),
            &[&["template", "parameters"]],
            &format!("a {singular} template reference"),
        );
        self.c.template_depth += 1;
        let template = self
            .c
            .instantiate(reference, item.get("parameters"), kind, scope)?;
        self.check_template_keys(&template, key);
        template.get(key).cloned()
    }

    fn leave_template(&mut self) {
        self.c.template_depth -= 1;
    }

    fn string(&mut self, node: Option<&Node>, key: &str) -> Option<String> {
        let node = node?;
        match &node.value {
            NodeValue::Scalar { .. } if node.is_null() => None,
            NodeValue::Scalar { text, .. } => Some(text.clone()),
            _ => {
                self.wrong_type(node, key, "a string");
                None
            }
        }
    }

    fn boolean(&mut self, node: Option<&Node>, key: &str, default: bool) -> bool {
        let Some(node) = node else { return default };
        match node.as_str().map(str::trim) {
            Some(t) if t.eq_ignore_ascii_case("true") => true,
            Some(t) if t.eq_ignore_ascii_case("false") => false,
            _ if node.is_null() => default,
            _ if self.runtime_value(node, key) => default,
            _ => {
                self.error(
                    "pipeline::wrong-type",
                    format!("`{key}` must be true or false"),
                    node.span,
                    format!("found `{}`", node.as_str().unwrap_or(node.kind_name())),
                );
                default
            }
        }
    }

    /// Reports a value computed at run time (`$[ … ]` or a `$( )` macro) where the plan needs a
    /// literal, and returns whether it was one.
    fn runtime_value(&mut self, node: &Node, key: &str) -> bool {
        let Some(text) = node.as_str() else {
            return false;
        };
        if !(text.contains("$[") || text.contains("$(")) {
            return false;
        }
        let d = self.error(
            "pipeline::unsupported",
            format!("a value computed at run time is not supported for `{key}`"),
            node.span,
            "runtime value",
        );
        d.help = Some("write a literal, or compute it at compile time with `${{ }}`".into());
        true
    }

    fn number(&mut self, node: Option<&Node>, key: &str) -> Option<u32> {
        let node = node?;
        if node.is_null() {
            return None;
        }
        match node
            .as_str()
            .map(str::trim)
            .and_then(|t| t.parse::<u32>().ok())
        {
            Some(n) => Some(n),
            None if self.runtime_value(node, key) => None,
            None => {
                self.error(
                    "pipeline::wrong-type",
                    format!("`{key}` must be a whole number"),
                    node.span,
                    format!("found `{}`", node.as_str().unwrap_or(node.kind_name())),
                );
                None
            }
        }
    }

    fn string_list(&mut self, node: Option<&Node>, key: &str) -> Vec<String> {
        let Some(node) = node else { return Vec::new() };
        match &node.value {
            NodeValue::Scalar { .. } if node.is_null() => Vec::new(),
            NodeValue::Scalar { text, .. } => vec![text.clone()],
            NodeValue::Sequence(items) => items
                .iter()
                .filter_map(|i| self.string(Some(i), key))
                .collect(),
            NodeValue::Mapping(_) => {
                self.wrong_type(node, key, "a string or a sequence of strings");
                Vec::new()
            }
        }
    }

    /// The job keys Azure evaluates when the job is ready to run (`continueOnError`,
    /// `timeoutInMinutes`, `cancelTimeoutInMinutes`) that hold a `$[ ]` runtime expression, by
    /// key; the orchestrators evaluate them with the job's condition context (issue 9.9).
    fn job_runtime_fields(&mut self, node: &Node) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for key in crate::plan::JOB_RUNTIME_FIELDS {
            let Some(value) = node.get(key) else { continue };
            let Some(inner) = expression::runtime_expression(value) else {
                continue;
            };
            if let Err(message) = expression::check_runtime(inner) {
                self.error(
                    "pipeline::invalid-expression",
                    format!("invalid runtime expression in `{key}`: {message}"),
                    value.span,
                    "this expression",
                );
                continue;
            }
            out.insert(
                key.to_string(),
                value.as_str().unwrap_or_default().trim().to_string(),
            );
        }
        out
    }

    fn condition(&mut self, node: Option<&Node>) -> Option<String> {
        let text = self.string(node, "condition")?;
        if text.trim().is_empty() {
            return None;
        }
        // A condition is a runtime expression already; the `$[ ]` form some pipelines write
        // (`condition: $[ eq(variables.go, 'yes') ]`) means the same and is unwrapped (issue 9.9).
        let text = match text
            .trim()
            .strip_prefix("$[")
            .and_then(|t| t.strip_suffix(']'))
        {
            Some(inner) if !inner.trim().is_empty() => inner.trim().to_string(),
            _ => text,
        };
        if let Err(message) = expression::check_condition(&text)
            && let Some(node) = node
        {
            self.error(
                "pipeline::invalid-condition",
                format!("invalid condition: {message}"),
                node.span,
                "this condition",
            );
        }
        Some(text)
    }

    fn mapping<'n>(&mut self, node: &'n Node, key: &str) -> Option<&'n [(Node, Node)]> {
        match &node.value {
            NodeValue::Mapping(entries) => Some(entries),
            _ if node.is_null() => Some(&[]),
            _ => {
                self.wrong_type(node, key, "a mapping");
                None
            }
        }
    }

    fn sequence<'n>(&mut self, node: &'n Node, key: &str) -> Option<&'n [Node]> {
        match &node.value {
            NodeValue::Sequence(items) => Some(items),
            _ if node.is_null() => Some(&[]),
            _ => {
                self.wrong_type(node, key, "a sequence");
                None
            }
        }
    }

    fn pipeline(&mut self, root: &Node) -> Option<Plan> {
        let Some(entries) = root.as_mapping() else {
            self.error(
                "pipeline::wrong-type",
                "a pipeline file must be a mapping",
                root.span,
                format!("found {}", root.kind_name()),
            );
            return None;
        };
        let parameters = self
            .c
            .bind_parameters(root.get("parameters"), None, root.span, true);
        let mut variables: Vec<(String, String)> = self.c.input.variables.clone();
        if let Some(v) = root.get("variables") {
            variables.extend(crate::template::static_variables(v));
        }
        let scope = Scope {
            parameters: Rc::new(parameters.clone()),
            variables: Rc::new(variables),
            locals: Vec::new(),
            strict_parameters: true,
        };
        let body: Vec<(Node, Node)> = entries
            .iter()
            .filter(|(k, _)| k.as_str() != Some("parameters"))
            .cloned()
            .collect();
        let mut document = self.c.expand(
            &Node {
                value: NodeValue::Mapping(body),
                span: root.span,
            },
            &scope,
        );
        let extended = document.get("extends").is_some();
        self.declare_repositories(&document);

        // `extends`: the template supplies the body; the entry file keeps its own keys.
        while let Some(extends) = document.get("extends").cloned() {
            if let Some((key, _)) =
                document.as_mapping().unwrap_or(&[]).iter().find(|(k, _)| {
                    matches!(k.as_str(), Some("stages" | "jobs" | "steps" | "phases"))
                })
            {
                let name = key.as_str().unwrap_or_default().to_string();
                self.error(
                    "pipeline::conflicting-keys",
                    format!("a pipeline that uses `extends` cannot also have `{name}`"),
                    key.span,
                    "the extended template supplies these",
                )
                .help = Some(format!("pass the {name} to the template as a parameter"));
                break;
            }
            let Some(extends_entries) = self.mapping(&extends, "extends") else {
                break;
            };
            self.check_keys(extends_entries, &[&["template", "parameters"]], "`extends`");
            let Some(reference) = extends.get("template") else {
                self.error(
                    "pipeline::missing-key",
                    "`extends` needs `template`",
                    extends.span,
                    "no `template`",
                );
                break;
            };
            self.c.template_depth += 1;
            let template = self.c.instantiate(
                reference,
                extends.get("parameters"),
                TemplateKind::Extends,
                &scope,
            );
            let Some(template) = template else { break };
            document = merge_extended(&document, &template);
            self.declare_repositories(&document);
        }
        self.c.template_depth = 0;
        let entries = document.as_mapping().unwrap_or(&[]).to_vec();
        self.check_keys(
            &entries,
            &[
                PIPELINE_COMMON,
                PIPELINE_SHAPES,
                &["phases", "queue", "server"],
            ],
            "the pipeline",
        );
        for deprecated in ["phases", "queue", "server"] {
            if let Some((key, _)) = entries.iter().find(|(k, _)| k.as_str() == Some(deprecated)) {
                let d = self.error(
                    "pipeline::unsupported",
                    format!("the deprecated top-level `{deprecated}` is not supported"),
                    key.span,
                    "deprecated",
                );
                d.help = Some(match deprecated {
                    "phases" => "rename `phases` to `jobs` and `phase` to `job`".to_string(),
                    _ => format!("use `pool` instead of `{deprecated}`"),
                });
            }
        }

        let mut plan = Plan {
            append_commit_message_to_run_name: self.boolean(
                document.get("appendCommitMessageToRunName"),
                "appendCommitMessageToRunName",
                true,
            ),
            name: self.string(document.get("name"), "name"),
            trigger: document.get("trigger").map(node_to_json),
            pr: document.get("pr").map(node_to_json),
            lock_behavior: self.lock_behavior(document.get("lockBehavior")),
            ..Plan::default()
        };
        if let Some(trigger) = document.get("trigger") {
            self.check_trigger(trigger, "trigger", &["batch", "branches", "paths", "tags"]);
        }
        if let Some(pr) = document.get("pr") {
            self.check_trigger(pr, "pr", &["autoCancel", "branches", "paths", "drafts"]);
        }
        if let Some(schedules) = document
            .get("schedules")
            .and_then(|s| self.sequence(s, "schedules"))
        {
            for schedule in schedules {
                let entries = self.mapping(schedule, "schedules").unwrap_or(&[]);
                self.check_keys(
                    entries,
                    &[&["cron", "displayName", "branches", "batch", "always"]],
                    "a schedule",
                );
                if schedule.as_mapping().is_some() && schedule.get("cron").is_none() {
                    self.error(
                        "pipeline::missing-key",
                        "a schedule needs `cron`",
                        schedule.span,
                        "no `cron`",
                    );
                }
                if let Some(branches) = schedule.get("branches") {
                    self.check_filter(branches, "branches");
                }
            }
            plan.schedules = schedules.iter().map(node_to_json).collect();
        }
        plan.resources = self.resources(document.get("resources"));
        let declared = root
            .get("parameters")
            .map(crate::parameters::declared)
            .unwrap_or_default();
        plan.parameters = parameters
            .iter()
            .map(|(name, node)| {
                let declaration = declared.iter().find(|d| d.name == name);
                ParameterValue {
                    name: name.clone(),
                    r#type: declaration.map_or("object", |d| d.r#type).to_string(),
                    value: node_to_json(node),
                    display_name: declaration.and_then(|d| d.display_name).map(str::to_string),
                    values: declaration
                        .and_then(|d| d.values)
                        .and_then(Node::as_sequence)
                        .map(|items| items.iter().map(node_to_json).collect())
                        .unwrap_or_default(),
                }
            })
            .collect();
        let mut inherited = Inherited {
            scope: scope.clone(),
            pool: None,
        };
        if let Some(v) = document.get("variables") {
            plan.variables = self.variables(v, VariableScope::Pipeline, &mut inherited.scope);
        }
        inherited.pool = document.get("pool").and_then(|p| self.pool(p));

        let stages_node = document.get("stages");
        let jobs_node = document.get("jobs");
        let steps_node = document.get("steps");
        let shapes = [
            stages_node.is_some(),
            jobs_node.is_some(),
            steps_node.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if shapes > 1 {
            self.error(
                "pipeline::conflicting-keys",
                "a pipeline has exactly one of `stages`, `jobs` or `steps`",
                document.span,
                "more than one given",
            );
        }
        if steps_node.is_none() {
            for key in [
                "strategy",
                "continueOnError",
                "container",
                "services",
                "workspace",
            ] {
                if let Some((k, _)) = entries.iter().find(|(k, _)| k.as_str() == Some(key)) {
                    let d = self.error(
                        "pipeline::unknown-key",
                        format!(
                            "`{key}` is only allowed at the top level of a pipeline with `steps`"
                        ),
                        k.span,
                        "not allowed here",
                    );
                    d.help = Some("move it into a job".into());
                }
            }
        }
        if let Some(stages) = stages_node {
            plan.stages = self.stages(stages, &inherited);
        } else if let Some(jobs) = jobs_node {
            let jobs = self.jobs(jobs, &inherited);
            plan.stages.push(implied_stage(
                jobs,
                self.c.location(jobs_node.map_or(document.span, |n| n.span)),
            ));
        } else if let Some(steps) = steps_node {
            // The implied job takes the job-level keys of the pipeline.
            let mut job_entries: Vec<(Node, Node)> = vec![(
                Node::scalar("job", true, steps.span),
                Node::scalar("__default", true, steps.span),
            )];
            for key in [
                "strategy",
                "continueOnError",
                "container",
                "services",
                "workspace",
                "steps",
            ] {
                if let Some((k, v)) = entries.iter().find(|(k, _)| k.as_str() == Some(key)) {
                    job_entries.push((k.clone(), v.clone()));
                }
            }
            let job = Node {
                value: NodeValue::Mapping(job_entries),
                span: steps.span,
            };
            let mut jobs = Vec::new();
            self.job(&job, &inherited, &mut jobs, &mut Names::default());
            plan.stages
                .push(implied_stage(jobs, self.c.location(steps.span)));
        } else {
            let deprecated = entries
                .iter()
                .any(|(k, _)| matches!(k.as_str(), Some("phases" | "queue" | "server")));
            // After a failed `extends` the missing body is already explained.
            let failed_extends =
                extended && self.c.diagnostics.iter().any(crate::Diagnostic::is_error);
            if !deprecated && !failed_extends {
                self.error(
                    "pipeline::empty",
                    "the pipeline has no `stages`, `jobs` or `steps`",
                    document.span,
                    "nothing to run",
                );
            }
        }
        let shape_node = stages_node.or(jobs_node).or(steps_node);
        if let Some(shape_node) = shape_node
            && !self.c.diagnostics.iter().any(crate::Diagnostic::is_error)
        {
            if plan.stages.is_empty() {
                self.error(
                    "pipeline::empty",
                    "the pipeline has no stages",
                    shape_node.span,
                    "empty",
                );
            } else if stages_node.is_none() && plan.stages.iter().all(|s| s.jobs.is_empty()) {
                self.error(
                    "pipeline::empty",
                    "the pipeline has no jobs",
                    shape_node.span,
                    "empty",
                );
            }
        }
        self.check_stage_graph(&plan.stages, stages_node.map_or(document.span, |n| n.span));
        Some(plan)
    }

    /// Checks a `trigger`/`pr`: `none`, a list of branches, or a mapping with filters.
    fn check_trigger(&mut self, node: &Node, key: &str, allowed: &[&str]) {
        match &node.value {
            NodeValue::Scalar { .. } | NodeValue::Sequence(_) => {
                self.string_list(Some(node), key);
            }
            NodeValue::Mapping(entries) => {
                self.check_keys(entries, &[allowed], &format!("`{key}`"));
                for filter in ["branches", "paths", "tags"] {
                    if let Some(value) = node.get(filter) {
                        self.check_filter(value, filter);
                    }
                }
            }
        }
    }

    /// Checks an include/exclude filter (`branches`, `paths`, `tags`): a list, or
    /// `{include, exclude}`.
    fn check_filter(&mut self, node: &Node, key: &str) {
        match &node.value {
            NodeValue::Mapping(entries) => {
                self.check_keys(entries, &[&["include", "exclude"]], &format!("`{key}`"));
                for part in ["include", "exclude"] {
                    self.string_list(node.get(part), part);
                }
            }
            _ => {
                self.string_list(Some(node), key);
            }
        }
    }

    fn declare_repositories(&mut self, document: &Node) {
        let Some(resources) = document.get("resources") else {
            return;
        };
        let mut aliases = Vec::new();
        match &resources.value {
            NodeValue::Mapping(_) => {
                if let Some(items) = resources.get("repositories").and_then(Node::as_sequence) {
                    aliases.extend(
                        items
                            .iter()
                            .filter_map(|i| i.get("repository").and_then(Node::as_str))
                            .map(str::to_string),
                    );
                }
            }
            NodeValue::Sequence(items) => {
                aliases.extend(
                    items
                        .iter()
                        .filter_map(|i| i.get("repo").and_then(Node::as_str))
                        .map(str::to_string),
                );
            }
            NodeValue::Scalar { .. } => {}
        }
        for alias in aliases {
            if !self.c.repositories.contains(&alias) {
                self.c.repositories.push(alias);
            }
        }
    }

    fn lock_behavior(&mut self, node: Option<&Node>) -> Option<String> {
        let text = self.string(node, "lockBehavior")?;
        if text != "sequential"
            && text != "runLatest"
            && let Some(node) = node
        {
            let d = self.error(
                "pipeline::invalid-value",
                format!("`lockBehavior` must be `sequential` or `runLatest`, not `{text}`"),
                node.span,
                "this value",
            );
            d.help = suggest(&text, &["sequential", "runLatest"]);
        }
        Some(text)
    }

    fn resources(&mut self, node: Option<&Node>) -> Resources {
        let mut resources = Resources::default();
        let Some(node) = node else { return resources };
        if let Some(items) = node.as_sequence() {
            // The legacy form: a list of `- repo: self` entries.
            for item in items {
                if let Some(resource) = self.resource(item, "repo") {
                    resources.repositories.push(resource);
                }
            }
            return resources;
        }
        let Some(entries) = self.mapping(node, "resources") else {
            return resources;
        };
        let kinds: &[(&str, &str)] = &[
            ("repositories", "repository"),
            ("pipelines", "pipeline"),
            ("containers", "container"),
            ("builds", "build"),
            ("packages", "package"),
            ("webhooks", "webhook"),
        ];
        let names: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
        self.check_keys(entries, &[&names], "`resources`");
        for (key, value) in entries {
            let Some((list, alias_key)) = kinds.iter().find(|(k, _)| key.as_str() == Some(k))
            else {
                continue;
            };
            let Some(items) = self.sequence(value, list) else {
                continue;
            };
            let mut out = Vec::new();
            for item in items {
                if let Some(resource) = self.resource(item, alias_key) {
                    if out.iter().any(|r: &Resource| r.alias == resource.alias) {
                        self.error(
                            "pipeline::duplicate-name",
                            format!("{alias_key} `{}` is declared twice", resource.alias),
                            item.span,
                            "second declaration",
                        );
                    }
                    out.push(resource);
                }
            }
            match *list {
                "repositories" => resources.repositories = out,
                "pipelines" => resources.pipelines = out,
                "containers" => resources.containers = out,
                "builds" => resources.builds = out,
                "packages" => resources.packages = out,
                _ => resources.webhooks = out,
            }
        }
        resources
    }

    fn resource(&mut self, item: &Node, alias_key: &str) -> Option<Resource> {
        let entries = self.mapping(item, alias_key)?;
        let Some(alias) = item.get(alias_key).and_then(Node::as_str) else {
            self.error(
                "pipeline::missing-key",
                format!("a {alias_key} resource needs `{alias_key}`"),
                item.span,
                format!("no `{alias_key}`"),
            );
            return None;
        };
        // Properties per resource kind (YAML schema reference, resources-*.md).
        let allowed: &[&str] = match alias_key {
            // Checkout options on a repository resource are the older form that real pipelines
            // still use for `self` (`clean: true`); the agent honours them.
            "repository" => &[
                "endpoint",
                "trigger",
                "name",
                "ref",
                "type",
                "clean",
                "fetchDepth",
                "fetchTags",
                "lfs",
                "submodules",
                "persistCredentials",
            ],
            "pipeline" => &["project", "source", "version", "branch", "tags", "trigger"],
            "container" => &[
                "image",
                "type",
                "trigger",
                "azureSubscription",
                "resourceGroup",
                "registry",
                "repository",
                "localImage",
                "endpoint",
                "env",
                "mapDockerSocket",
                "options",
                "ports",
                "volumes",
                "mountReadOnly",
            ],
            "build" => &[
                "type",
                "connection",
                "source",
                "version",
                "branch",
                "trigger",
            ],
            "package" => &["type", "connection", "name", "version", "tag", "trigger"],
            "webhook" => &["connection", "type", "filters"],
            // The legacy `- repo: self` form: its options are not listed in the schema.
            _ => &[],
        };
        if !allowed.is_empty() {
            self.check_keys(
                entries,
                &[&[alias_key], allowed],
                &format!("a {alias_key} resource"),
            );
        }
        let properties = entries
            .iter()
            .filter(|(k, _)| k.as_str() != Some(alias_key))
            .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), node_to_json(v)))
            .collect();
        Some(Resource {
            alias: alias.to_string(),
            properties,
            source: self.c.location(item.span),
        })
    }

    /// Lowers a `variables:` block (map or list form) and adds its values to `scope`.
    fn variables(
        &mut self,
        node: &Node,
        scope_kind: VariableScope,
        scope: &mut Scope,
    ) -> Vec<Variable> {
        let mut out = Vec::new();
        match &node.value {
            NodeValue::Mapping(entries) => {
                for (key, value) in entries {
                    let Some(name) = key.as_str() else { continue };
                    if let Some(text) = self.variable_value(value, name) {
                        self.check_variable_name(name, key.span);
                        out.push(Variable::Value {
                            name: name.to_string(),
                            value: text,
                            readonly: false,
                            scope: scope_kind,
                        });
                    }
                }
            }
            NodeValue::Sequence(items) => {
                for item in items {
                    let Some(entries) = self.mapping(item, "variables") else {
                        continue;
                    };
                    if let Some(reference) = item.get("template") {
                        self.check_keys(
                            entries,
                            &[&["template", "parameters"]],
                            "a variable template reference",
                        );
                        self.c.template_depth += 1;
                        let template = self.c.instantiate(
                            reference,
                            item.get("parameters"),
                            TemplateKind::Variables,
                            scope,
                        );
                        if let Some(template) = template {
                            self.check_keys(
                                template.as_mapping().unwrap_or(&[]),
                                &[&["variables"]],
                                "a variable template",
                            );
                            if let Some(inner) = template.get("variables") {
                                out.extend(self.variables(inner, scope_kind, scope));
                            }
                        }
                        self.c.template_depth -= 1;
                    } else if let Some(group) = item.get("group") {
                        self.check_keys(entries, &[&["group"]], "a variable group reference");
                        if let Some(name) = self.string(Some(group), "group") {
                            out.push(Variable::Group {
                                name,
                                scope: scope_kind,
                            });
                        }
                    } else if let Some(name_node) = item.get("name") {
                        self.check_keys(entries, &[&["name", "value", "readonly"]], "a variable");
                        let Some(name) = self.string(Some(name_node), "name") else {
                            continue;
                        };
                        self.check_variable_name(&name, name_node.span);
                        let value = match item.get("value") {
                            Some(v) => self.variable_value(v, &name).unwrap_or_default(),
                            None => String::new(),
                        };
                        let readonly = self.boolean(item.get("readonly"), "readonly", false);
                        out.push(Variable::Value {
                            name,
                            value,
                            readonly,
                            scope: scope_kind,
                        });
                    } else {
                        let all: Vec<&str> =
                            entries.iter().filter_map(|(k, _)| k.as_str()).collect();
                        let help = all
                            .first()
                            .and_then(|k| suggest(k, &["name", "group", "template"]));
                        let d = self.error(
                            "pipeline::invalid-variable",
                            "a variable in list form needs `name`, `group` or `template`",
                            item.span,
                            "this entry",
                        );
                        d.help = help.or(Some("write `- name: NAME` and `value: VALUE`".into()));
                    }
                }
            }
            NodeValue::Scalar { .. } if node.is_null() => {}
            NodeValue::Scalar { .. } => {
                self.wrong_type(node, "variables", "a mapping or a sequence")
            }
        }
        let statics: Vec<(String, String)> = out
            .iter()
            .filter_map(|v| match v {
                Variable::Value { name, value, .. } => Some((name.clone(), value.clone())),
                Variable::Group { .. } => None,
            })
            .collect();
        *scope = scope.with_variables(statics);
        out
    }

    fn variable_value(&mut self, node: &Node, name: &str) -> Option<String> {
        match &node.value {
            NodeValue::Scalar { text, .. } => {
                if let Some(runtime) = expression::runtime_expression(node)
                    && let Err(message) = expression::check_runtime(runtime)
                {
                    self.error(
                        "pipeline::invalid-expression",
                        format!("invalid runtime expression: {message}"),
                        node.span,
                        "in this value",
                    );
                }
                Some(if node.is_null() {
                    String::new()
                } else {
                    text.clone()
                })
            }
            _ => {
                self.error(
                    "pipeline::wrong-type",
                    format!(
                        "the value of variable `{name}` must be a string, not {}",
                        node.kind_name()
                    ),
                    node.span,
                    "expected a string",
                );
                None
            }
        }
    }

    fn check_variable_name(&mut self, name: &str, span: Span) {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            self.error(
                "pipeline::invalid-name",
                format!("`{name}` is not a valid variable name"),
                span,
                "variable names use letters, digits, `.`, `-` and `_`",
            );
        }
    }

    fn pool(&mut self, node: &Node) -> Option<Pool> {
        match &node.value {
            NodeValue::Scalar { .. } if node.is_null() => None,
            NodeValue::Scalar { text, .. } => Some(if text.eq_ignore_ascii_case("server") {
                Pool {
                    server: true,
                    ..Pool::default()
                }
            } else {
                Pool {
                    name: Some(text.clone()),
                    ..Pool::default()
                }
            }),
            NodeValue::Mapping(entries) => {
                self.check_keys(entries, &[&["name", "vmImage", "demands"]], "`pool`");
                let name = self.string(node.get("name"), "name");
                Some(Pool {
                    server: name
                        .as_deref()
                        .is_some_and(|n| n.eq_ignore_ascii_case("server")),
                    name,
                    vm_image: self.string(node.get("vmImage"), "vmImage"),
                    demands: self.string_list(node.get("demands"), "demands"),
                })
            }
            NodeValue::Sequence(_) => {
                self.wrong_type(node, "pool", "a pool name or a mapping");
                None
            }
        }
    }

    fn stages(&mut self, node: &Node, inherited: &Inherited) -> Vec<Stage> {
        let mut out = Vec::new();
        self.stage_list(node, inherited, &mut out, &mut Names::default());
        // Stages without `dependsOn` depend on the previous stage.
        out
    }

    fn stage_list(
        &mut self,
        node: &Node,
        inherited: &Inherited,
        out: &mut Vec<Stage>,
        names: &mut Names,
    ) {
        let Some(items) = self.sequence(node, "stages") else {
            return;
        };
        for item in items {
            if let Some(reference) = item.get("template") {
                if let Some(stages) =
                    self.enter_template(item, reference, TemplateKind::Stages, &inherited.scope)
                {
                    self.stage_list(&stages, inherited, out, names);
                }
                self.leave_template();
                continue;
            }
            let previous = out.last().map(|s| s.name.clone());
            if let Some(stage) = self.stage(item, inherited, previous, names) {
                if names.contains(&stage.name) {
                    let span = item.get("stage").map_or(item.span, |n| n.span);
                    self.error(
                        "pipeline::duplicate-name",
                        format!("stage `{}` is defined twice", stage.name),
                        span,
                        "second definition",
                    );
                }
                names.insert(&stage.name);
                out.push(stage);
            }
        }
    }

    /// Stage, job and step template files hold `parameters` and their list (steps-template,
    /// jobs-template, stages-template in the YAML schema reference).
    fn check_template_keys(&mut self, template: &Node, content: &str) {
        // `parameters` is already removed; other keys would be ignored, so they are reported.
        let entries = template.as_mapping().unwrap_or(&[]);
        self.check_keys(
            entries,
            &[&[content]],
            &format!("a {} template", content.trim_end_matches('s')),
        );
    }

    /// `previous` is the stage before this one; `names` holds the names of the stages before it.
    fn stage(
        &mut self,
        node: &Node,
        inherited: &Inherited,
        previous: Option<String>,
        names: &mut Names,
    ) -> Option<Stage> {
        let entries = self.mapping(node, "stages")?;
        let Some(name_node) = node.get("stage") else {
            let help = entries
                .iter()
                .filter_map(|(k, _)| k.as_str())
                .find_map(|k| suggest(k, &["stage", "template"]));
            let d = self.error(
                "pipeline::missing-key",
                "a stage needs `stage` (its name) or `template`",
                node.span,
                "this stage",
            );
            d.help = help;
            return None;
        };
        self.check_keys(entries, &[STAGE_KEYS], "a stage");
        // An unnamed stage (`- stage:`) gets a generated name: `Stage`, then `Stage1`, …
        let name = if name_node.is_null() {
            names.generated("Stage")
        } else {
            self.identifier(name_node, "stage")?
        };
        let mut inner = inherited.clone();
        let variables = match node.get("variables") {
            Some(v) => self.variables(v, VariableScope::Stage, &mut inner.scope),
            None => Vec::new(),
        };
        let pool = node.get("pool").and_then(|p| self.pool(p));
        if pool.is_some() {
            inner.pool = pool.clone();
        }
        let at = node.get("dependsOn").map_or(name_node.span, |d| d.span);
        self.dependency_spans.insert(format!("stage:{name}"), at);
        let depends_on = match node.get("dependsOn") {
            Some(d) => self.string_list(Some(d), "dependsOn"),
            None => previous.into_iter().collect(),
        };
        let manual_trigger = match self.string(node.get("trigger"), "trigger").as_deref() {
            None | Some("automatic") => false,
            Some("manual") => true,
            Some(other) => {
                let span = node.get("trigger").map_or(node.span, |n| n.span);
                self.error(
                    "pipeline::invalid-value",
                    format!("stage `trigger` must be `manual` or `automatic`, not `{other}`"),
                    span,
                    "this value",
                );
                false
            }
        };
        if let Some(checks) = node.get("checks") {
            self.error(
                "pipeline::unsupported",
                "in-yaml stage `checks` are not supported",
                checks.span,
                "not supported",
            )
            .help = Some("configure checks on the environment or resource instead".into());
        }
        let mut jobs = Vec::new();
        let diagnostics_before = self.c.diagnostics.len();
        if let Some(jobs_node) = node.get("jobs") {
            jobs = self.jobs(jobs_node, &inner);
        }
        // Only when nothing else went wrong inside (a missing job template already explains it).
        if jobs.is_empty() && self.c.diagnostics.len() == diagnostics_before {
            // Azure Pipelines: "Stage X must contain at least one job with no dependencies."
            let at = node.get("jobs").map_or(name_node.span, |j| j.span);
            self.error(
                "pipeline::empty-stage",
                format!("stage `{name}` has no jobs"),
                at,
                "no job here",
            )
            .help = Some(
                "a stage needs at least one job (check `${{ if }}` conditions around its jobs)"
                    .into(),
            );
        }
        Some(Stage {
            name,
            display_name: self.string(node.get("displayName"), "displayName"),
            depends_on,
            condition: self.condition(node.get("condition")),
            variables,
            pool,
            lock_behavior: self.lock_behavior(node.get("lockBehavior")),
            is_skippable: self.boolean(node.get("isSkippable"), "isSkippable", true),
            manual_trigger,
            template_context: node.get("templateContext").map(node_to_json),
            jobs,
            source: self.c.location(node.span),
            group: self.string(node.get("group"), "group"),
        })
    }

    fn identifier(&mut self, node: &Node, key: &str) -> Option<String> {
        let name = self.string(Some(node), key)?;
        if !is_identifier(&name) {
            self.error(
                "pipeline::invalid-name",
                format!("`{name}` is not a valid {key} name"),
                node.span,
                "use letters, digits and `_`, not starting with a digit",
            );
        }
        Some(name)
    }

    fn jobs(&mut self, node: &Node, inherited: &Inherited) -> Vec<Job> {
        let mut out = Vec::new();
        self.job_list(node, inherited, &mut out, &mut Names::default());
        self.check_job_graph(&out, node.span);
        out
    }

    fn job_list(
        &mut self,
        node: &Node,
        inherited: &Inherited,
        out: &mut Vec<Job>,
        names: &mut Names,
    ) {
        let Some(items) = self.sequence(node, "jobs") else {
            return;
        };
        for item in items {
            if let Some(reference) = item.get("template") {
                if let Some(jobs) =
                    self.enter_template(item, reference, TemplateKind::Jobs, &inherited.scope)
                {
                    self.job_list(&jobs, inherited, out, names);
                }
                self.leave_template();
                continue;
            }
            let before = out.len();
            self.job(item, inherited, out, names);
            if let Some(first) = out.get(before).map(|j| j.base_name.clone())
                && names.contains(&first)
            {
                let span = item
                    .get("job")
                    .or_else(|| item.get("deployment"))
                    .map_or(item.span, |n| n.span);
                self.error(
                    "pipeline::duplicate-name",
                    format!("job `{first}` is defined twice in this stage"),
                    span,
                    "second definition",
                );
            }
            for job in &out[before..] {
                names.insert(&job.base_name);
            }
        }
    }

    /// Lowers one job and pushes its instances (several for matrix/parallel). `names` holds the
    /// names of the jobs in `out`.
    fn job(&mut self, node: &Node, inherited: &Inherited, out: &mut Vec<Job>, names: &mut Names) {
        let Some(entries) = self.mapping(node, "jobs") else {
            return;
        };
        let (kind_key, keys) = if node.get("deployment").is_some() {
            ("deployment", DEPLOYMENT_KEYS)
        } else if node.get("job").is_some() {
            ("job", JOB_KEYS)
        } else {
            let help = entries
                .iter()
                .filter_map(|(k, _)| k.as_str())
                .find_map(|k| suggest(k, &["job", "deployment", "template"]));
            let d = self.error(
                "pipeline::missing-key",
                "a job needs `job`, `deployment` or `template`",
                node.span,
                "this job",
            );
            d.help = help;
            return;
        };
        self.check_keys(
            entries,
            &[keys],
            if kind_key == "job" {
                "a job"
            } else {
                "a deployment job"
            },
        );
        let Some(name_node) = node.get(kind_key) else {
            return;
        };
        // An unnamed job (`- job:`) gets a generated name: `Job`, then `Job1`, `Job2`, …
        let base_name = if name_node.is_null() {
            names.generated("Job")
        } else {
            let Some(base_name) = self.identifier(name_node, "job") else {
                return;
            };
            base_name
        };
        if kind_key == "deployment" && base_name == "deploy" {
            self.error(
                "pipeline::invalid-name",
                "`deploy` is a keyword and cannot name a deployment job",
                name_node.span,
                "reserved name",
            );
        }
        let mut inner = inherited.clone();
        let variables = match node.get("variables") {
            Some(v) => self.variables(v, VariableScope::Job, &mut inner.scope),
            None => Vec::new(),
        };
        let own_pool = node.get("pool").and_then(|p| self.pool(p));
        let pool = own_pool.or_else(|| inherited.pool.clone());
        let workspace_clean = match node.get("workspace") {
            Some(w) => {
                let entries = self.mapping(w, "workspace").unwrap_or(&[]);
                self.check_keys(entries, &[&["clean"]], "`workspace`");
                let clean = self.string(w.get("clean"), "clean");
                if let Some(c) = &clean
                    && !matches!(c.as_str(), "outputs" | "resources" | "all")
                {
                    let span = w.get("clean").map_or(w.span, |n| n.span);
                    self.error(
                        "pipeline::invalid-value",
                        format!(
                            "`workspace.clean` must be `outputs`, `resources` or `all`, not `{c}`"
                        ),
                        span,
                        "this value",
                    );
                }
                clean
            }
            None => None,
        };
        let services = match node.get("services") {
            Some(s) => self
                .mapping(s, "services")
                .unwrap_or(&[])
                .iter()
                .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), node_to_json(v)))
                .collect(),
            None => BTreeMap::new(),
        };
        let at = node.get("dependsOn").map_or(name_node.span, |d| d.span);
        self.dependency_spans.insert(format!("job:{base_name}"), at);
        let runtime_fields = self.job_runtime_fields(node);
        let literal = |key: &str| node.get(key).filter(|_| !runtime_fields.contains_key(key));
        let mut job = Job {
            name: base_name.clone(),
            base_name: base_name.clone(),
            kind: if kind_key == "deployment" {
                JobKind::Deployment
            } else if pool.as_ref().is_some_and(|p| p.server) {
                JobKind::Server
            } else {
                JobKind::Agent
            },
            display_name: self.string(node.get("displayName"), "displayName"),
            depends_on: self.string_list(node.get("dependsOn"), "dependsOn"),
            condition: self.condition(node.get("condition")),
            variables,
            pool,
            timeout_in_minutes: self
                .number(literal("timeoutInMinutes"), "timeoutInMinutes")
                .unwrap_or(60),
            cancel_timeout_in_minutes: self
                .number(literal("cancelTimeoutInMinutes"), "cancelTimeoutInMinutes")
                .unwrap_or(5),
            continue_on_error: self.boolean(literal("continueOnError"), "continueOnError", false),
            runtime_fields,
            container: node.get("container").map(|c| self.container(c)),
            services,
            workspace_clean,
            strategy: JobStrategy {
                leg: None,
                position_in_phase: 1,
                total_jobs_in_phase: 1,
                max_parallel: 0,
                rollout_batch: 0,
            },
            environment: None,
            deployment: None,
            steps: Vec::new(),
            template_context: node.get("templateContext").map(node_to_json),
            uses: node.get("uses").map(|u| {
                let entries = self.mapping(u, "uses").unwrap_or(&[]);
                self.check_keys(entries, &[&["repositories", "pools"]], "`uses`");
                node_to_json(u)
            }),
            source: self.c.location(node.span),
        };
        if kind_key == "deployment" {
            job.environment = match node.get("environment") {
                Some(e) => self.environment(e),
                None => None,
            };
            match node.get("strategy") {
                Some(strategy) => {
                    job.deployment = self.deployment_strategy(strategy, &inner, job.pool.clone())
                }
                None => {
                    self.error(
                        "pipeline::missing-key",
                        "a deployment job needs `strategy`",
                        node.span,
                        "no `strategy`",
                    )
                    .help = Some("add `strategy: {runOnce: {deploy: {steps: [...]}}}`".into());
                }
            }
            out.push(job);
            return;
        }
        if let Some(steps) = node.get("steps") {
            job.steps = self.steps(steps, &inner);
        } else {
            self.error(
                "pipeline::missing-key",
                "a job needs `steps`",
                name_node.span,
                "this job has no steps",
            );
        }
        match node.get("strategy") {
            Some(strategy) => self.expand_strategy(job, strategy, out),
            None => out.push(job),
        }
    }

    fn expand_strategy(&mut self, job: Job, strategy: &Node, out: &mut Vec<Job>) {
        let Some(entries) = self.mapping(strategy, "strategy") else {
            out.push(job);
            return;
        };
        self.check_keys(
            entries,
            &[&["matrix", "maxParallel", "parallel"]],
            "a job `strategy`",
        );
        let max_parallel = self
            .number(strategy.get("maxParallel"), "maxParallel")
            .unwrap_or(0);
        let display = job
            .display_name
            .clone()
            .unwrap_or_else(|| job.base_name.clone());
        if let Some(matrix) = strategy.get("matrix") {
            if let Some(runtime) = expression::runtime_expression(matrix) {
                let _ = runtime;
                self.error(
                    "pipeline::unsupported",
                    "a matrix computed at runtime (`$[ ]`) is not supported",
                    matrix.span,
                    "runtime matrix",
                )
                .help = Some(
                    "write the matrix legs in the YAML or generate them with `${{ each }}`".into(),
                );
                out.push(job);
                return;
            }
            let Some(legs) = self.mapping(matrix, "matrix") else {
                out.push(job);
                return;
            };
            if legs.is_empty() {
                out.push(job);
                return;
            }
            let total = legs.len() as u32;
            let mut identifiers: Vec<String> = Vec::new();
            for (position, (leg_key, leg_value)) in legs.iter().enumerate() {
                let leg = leg_key.as_str().unwrap_or_default().to_string();
                // The YAML schema (jobs.job.strategy) asks for letters, digits and `_`, starting
                // with a letter, at most 100 characters; real pipelines also use `-`, `.`, `+`,
                // spaces and brackets (`Debug++`, `Linux (nightly)`), which Azure runs. Any
                // printable name is accepted; the leg keeps it as its display name and the job
                // identifier is derived from it (see `leg_identifier`).
                if leg.trim().is_empty()
                    || leg.chars().count() > 100
                    || leg.chars().any(char::is_control)
                {
                    self.error(
                        "pipeline::invalid-name",
                        format!("`{leg}` is not a valid matrix leg name"),
                        leg_key.span,
                        "a leg name must be 1 to 100 printable characters",
                    );
                }
                let mut instance = job.clone();
                let identifier = leg_identifier(&job.base_name, &leg, &identifiers);
                identifiers.push(identifier.clone());
                instance.name = identifier;
                instance.display_name = Some(format!("{display} {leg}"));
                if let Some(vars) = self.mapping(leg_value, "matrix leg") {
                    for (k, v) in vars {
                        let name = k.as_str().unwrap_or_default().to_string();
                        if let Some(value) = self.variable_value(v, &name) {
                            instance.variables.push(Variable::Value {
                                name,
                                value,
                                readonly: false,
                                scope: VariableScope::Matrix,
                            });
                        }
                    }
                }
                instance.strategy = JobStrategy {
                    leg: Some(leg),
                    position_in_phase: position as u32 + 1,
                    total_jobs_in_phase: total,
                    max_parallel,
                    rollout_batch: 0,
                };
                out.push(instance);
            }
            return;
        }
        if let Some(parallel) = strategy.get("parallel") {
            let count = self.number(Some(parallel), "parallel").unwrap_or(1).max(1);
            if count > 99 {
                self.error(
                    "pipeline::invalid-value",
                    "`parallel` may be at most 99",
                    parallel.span,
                    "too many slices",
                );
            }
            for i in 1..=count.min(99) {
                let mut instance = job.clone();
                instance.name = format!("{}_{i}", job.base_name);
                instance.display_name = Some(format!("{display} {i}"));
                instance.strategy = JobStrategy {
                    leg: Some(i.to_string()),
                    position_in_phase: i,
                    total_jobs_in_phase: count.min(99),
                    max_parallel,
                    rollout_batch: 0,
                };
                out.push(instance);
            }
            return;
        }
        out.push(job);
    }

    /// A job container: a resource alias, or an inline spec (jobs-job-container.md).
    fn container(&mut self, node: &Node) -> serde_json::Value {
        if let Some(entries) = node.as_mapping() {
            self.check_keys(
                entries,
                &[&[
                    "image",
                    "endpoint",
                    "env",
                    "mapDockerSocket",
                    "options",
                    "ports",
                    "volumes",
                    "mountReadOnly",
                ]],
                "`container`",
            );
            if node.get("image").is_none() {
                self.error(
                    "pipeline::missing-key",
                    "an inline `container` needs `image`",
                    node.span,
                    "no `image`",
                );
            }
        }
        node_to_json(node)
    }

    fn environment(&mut self, node: &Node) -> Option<Environment> {
        match &node.value {
            NodeValue::Scalar { text, .. } if !node.is_null() => {
                let (name, resource) = match text.split_once('.') {
                    Some((name, resource)) => (name.to_string(), Some(resource.to_string())),
                    None => (text.clone(), None),
                };
                Some(Environment {
                    name,
                    resource_name: resource,
                    ..Environment::default()
                })
            }
            NodeValue::Mapping(entries) => {
                self.check_keys(
                    entries,
                    &[&["name", "resourceName", "resourceId", "resourceType", "tags"]],
                    "`environment`",
                );
                let Some(name) = self.string(node.get("name"), "name") else {
                    self.error(
                        "pipeline::missing-key",
                        "`environment` needs `name`",
                        node.span,
                        "no `name`",
                    );
                    return None;
                };
                let tags = match node.get("tags") {
                    Some(t) if t.as_str().is_some() => t
                        .as_str()
                        .unwrap_or_default()
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect(),
                    other => self.string_list(other, "tags"),
                };
                Some(Environment {
                    name,
                    resource_name: self.string(node.get("resourceName"), "resourceName"),
                    resource_type: self.string(node.get("resourceType"), "resourceType"),
                    resource_id: self.string(node.get("resourceId"), "resourceId"),
                    tags,
                })
            }
            _ => {
                self.wrong_type(node, "environment", "an environment name or a mapping");
                None
            }
        }
    }

    fn deployment_strategy(
        &mut self,
        node: &Node,
        inherited: &Inherited,
        pool: Option<Pool>,
    ) -> Option<DeploymentStrategy> {
        let entries = self.mapping(node, "strategy")?;
        let Some((key, body)) = entries.first() else {
            self.error(
                "pipeline::missing-key",
                "a deployment `strategy` needs `runOnce`, `rolling` or `canary`",
                node.span,
                "empty strategy",
            );
            return None;
        };
        let name = key.as_str().unwrap_or_default().to_string();
        if entries.len() > 1 || !matches!(name.as_str(), "runOnce" | "rolling" | "canary") {
            self.check_keys(
                entries,
                &[&["runOnce", "rolling", "canary"]],
                "a deployment `strategy`",
            );
            if entries.len() > 1 {
                self.error(
                    "pipeline::conflicting-keys",
                    "a deployment `strategy` has exactly one of `runOnce`, `rolling`, `canary`",
                    node.span,
                    "more than one",
                );
            }
            if !matches!(name.as_str(), "runOnce" | "rolling" | "canary") {
                return None;
            }
        }
        let body_entries = self.mapping(body, &name)?;
        let extra: &[&str] = match name.as_str() {
            "rolling" => &["maxParallel"],
            "canary" => &["increments"],
            _ => &[],
        };
        self.check_keys(body_entries, &[HOOKS, &["on"], extra], &format!("`{name}`"));
        let max_parallel = self.string(body.get("maxParallel"), "maxParallel");
        if let (Some(text), Some(node)) = (&max_parallel, body.get("maxParallel"))
            && !text.contains("$(")
            && let Err(why) = crate::rollout::rolling_batch_size(Some(text), 1)
        {
            self.error(
                "pipeline::invalid-value",
                why,
                node.span,
                "not a batch size",
            );
        }
        let mut increments = Vec::new();
        if let Some(list) = body
            .get("increments")
            .and_then(|n| self.sequence(n, "increments"))
        {
            for item in list {
                match self.number(Some(item), "increments") {
                    // A batch of no target would never end the rollout (docs: "Maximum batch
                    // size for deployment").
                    Some(0) => {
                        self.error(
                            "pipeline::invalid-value",
                            "each of `increments` is a batch size, 1 or more, not `0`",
                            item.span,
                            "an empty batch",
                        );
                    }
                    Some(n) => increments.push(n),
                    None => {}
                }
            }
        }
        let mut phases = Vec::new();
        let iterations: Vec<Option<u32>> = if name == "canary" && !increments.is_empty() {
            // Each increment, then the promotion to 100%.
            let mut list: Vec<Option<u32>> = increments.iter().copied().map(Some).collect();
            if increments.last() != Some(&100) {
                list.push(Some(100));
            }
            list
        } else {
            vec![None]
        };
        if let Some(hook) = body.get("preDeploy") {
            phases.extend(self.hook("preDeploy", hook, None, inherited, &pool));
        }
        for increment in &iterations {
            for hook_name in &HOOKS[1..] {
                if let Some(hook) = body.get(hook_name) {
                    phases.extend(self.hook(hook_name, hook, *increment, inherited, &pool));
                }
            }
        }
        if let Some(on) = body.get("on") {
            let on_entries = self.mapping(on, "on").unwrap_or(&[]);
            self.check_keys(on_entries, &[&["failure", "success"]], "`on`");
            for outcome in ["failure", "success"] {
                if let Some(hook) = on.get(outcome) {
                    phases.extend(self.hook(
                        &format!("on.{outcome}"),
                        hook,
                        None,
                        inherited,
                        &pool,
                    ));
                }
            }
        }
        if body.get("deploy").is_none() {
            self.error(
                "pipeline::missing-key",
                format!("`{name}` needs a `deploy` hook"),
                key.span,
                "no `deploy`",
            );
        }
        Some(DeploymentStrategy {
            name,
            max_parallel,
            increments,
            phases,
        })
    }

    fn hook(
        &mut self,
        hook_name: &str,
        node: &Node,
        increment: Option<u32>,
        inherited: &Inherited,
        pool: &Option<Pool>,
    ) -> Option<HookPhase> {
        let entries = self.mapping(node, hook_name)?;
        self.check_keys(
            entries,
            &[&["steps", "pool"]],
            &format!("the `{hook_name}` hook"),
        );
        let own_pool = node.get("pool").and_then(|p| self.pool(p));
        let steps = match node.get("steps") {
            Some(s) => self.steps(s, inherited),
            None => Vec::new(),
        };
        Some(HookPhase {
            hook: hook_name.to_string(),
            increment,
            pool: own_pool.or_else(|| pool.clone()),
            steps,
        })
    }

    fn steps(&mut self, node: &Node, inherited: &Inherited) -> Vec<Step> {
        let mut out = Vec::new();
        self.step_list(node, inherited, &mut out);
        // The first step of each name (ASCII case-insensitive), by folded name.
        let mut seen: HashMap<String, &Location> = HashMap::new();
        for step in &out {
            if let Some(name) = &step.name {
                if let Some(first) = seen.get(&name.to_ascii_lowercase()) {
                    let message =
                        format!("step name `{name}` is used twice in this job (first at {first})");
                    let span = crate::SourceSpan {
                        file: step.source.file.clone(),
                        line: step.source.line,
                        column: step.source.column,
                        start: 0,
                        end: 0,
                    };
                    self.c.diagnostics.push(
                        crate::Diagnostic::error("pipeline::duplicate-name", message, Some(span))
                            .with_label("second use"),
                    );
                } else {
                    seen.insert(name.to_ascii_lowercase(), &step.source);
                }
            }
        }
        out
    }

    fn step_list(&mut self, node: &Node, inherited: &Inherited, out: &mut Vec<Step>) {
        let Some(items) = self.sequence(node, "steps") else {
            return;
        };
        for item in items {
            if let Some(reference) = item.get("template") {
                if let Some(steps) =
                    self.enter_template(item, reference, TemplateKind::Steps, &inherited.scope)
                {
                    self.step_list(&steps, inherited, out);
                }
                self.leave_template();
                continue;
            }
            if let Some(step) = self.step(item) {
                out.push(step);
            }
        }
    }

    fn step(&mut self, node: &Node) -> Option<Step> {
        let entries = self.mapping(node, "steps")?;
        let present: Vec<StepKind> = STEP_KINDS
            .iter()
            .copied()
            .filter(|k| node.get(k.key()).is_some())
            .collect();
        let Some(&kind) = present.first() else {
            let kinds: Vec<&str> = STEP_KINDS
                .iter()
                .map(|k| k.key())
                .chain(["template"])
                .collect();
            let help = entries
                .iter()
                .filter_map(|(k, _)| k.as_str())
                .find_map(|k| suggest(k, &kinds));
            let d = self.error("pipeline::unknown-step", "a step needs one of `script`, `bash`, `pwsh`, `powershell`, `checkout`, `task`, `template`, …", node.span, "unknown kind of step");
            d.help = help.or(Some(format!("step kinds: {}", kinds.join(", "))));
            return None;
        };
        if present.len() > 1 {
            let names: Vec<&str> = present.iter().map(|k| k.key()).collect();
            self.error(
                "pipeline::conflicting-keys",
                format!(
                    "a step has exactly one kind, but this one has `{}`",
                    names.join("`, `")
                ),
                node.span,
                "several kinds",
            );
        }
        let kind_keys = [kind.key()];
        self.check_keys(
            entries,
            &[STEP_COMMON, step_keys(kind), &kind_keys],
            &format!("a `{}` step", kind.key()),
        );
        let value_node = node.get(kind.key());
        let mut step = Step {
            kind,
            value: None,
            task: None,
            inputs: BTreeMap::new(),
            env: BTreeMap::new(),
            name: None,
            display_name: self.string(node.get("displayName"), "displayName"),
            condition: self.condition(node.get("condition")),
            enabled: self.boolean(node.get("enabled"), "enabled", true),
            continue_on_error: self.boolean(node.get("continueOnError"), "continueOnError", false),
            timeout_in_minutes: self.number(node.get("timeoutInMinutes"), "timeoutInMinutes"),
            retry_count_on_task_failure: self.number(
                node.get("retryCountOnTaskFailure"),
                "retryCountOnTaskFailure",
            ),
            working_directory: self.string(node.get("workingDirectory"), "workingDirectory"),
            fail_on_stderr: self.boolean(node.get("failOnStderr"), "failOnStderr", false),
            target: node.get("target").and_then(|t| self.target(t)),
            source: self.c.location(node.span),
        };
        if let Some(name_node) = node.get("name")
            && let Some(name) = self.string(Some(name_node), "name")
        {
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                self.error(
                    "pipeline::invalid-name",
                    format!("`{name}` is not a valid step name"),
                    name_node.span,
                    "use letters, digits, `-` and `_`",
                );
            }
            step.name = Some(name);
        }
        if kind == StepKind::Task {
            let text = self.string(value_node, "task").unwrap_or_default();
            step.task = self.task_reference(&text, value_node.map_or(node.span, |n| n.span));
        } else {
            step.value = self.string(value_node, kind.key());
            if value_node.is_none_or(Node::is_null) && !matches!(kind, StepKind::ReviewApp) {
                self.error(
                    "pipeline::missing-value",
                    format!("`{}` needs a value", kind.key()),
                    node.span,
                    "empty",
                );
            }
        }
        if kind == StepKind::Checkout
            && let Some(repository) = &step.value
            && !matches!(repository.as_str(), "self" | "none")
            && !repository.contains("://")
            && !self.c.repositories.iter().any(|r| r == repository)
        {
            let span = value_node.map_or(node.span, |n| n.span);
            let known = self.c.repositories.clone();
            let d = self.error("pipeline::unknown-repository", format!("checkout of `{repository}`, which is not declared under `resources.repositories`"), span, "unknown repository");
            d.help = Some(if known.is_empty() {
                "declare it under `resources.repositories`, or use `self` or `none`".into()
            } else {
                format!("declared repositories: {}", known.join(", "))
            });
        }
        for (key, value) in entries {
            let Some(key) = key.as_str() else { continue };
            if key == kind.key()
                || STEP_COMMON.contains(&key)
                || matches!(key, "workingDirectory" | "failOnStderr")
            {
                continue;
            }
            if key == "inputs" {
                if let Some(inputs) = self.mapping(value, "inputs") {
                    for (k, v) in inputs {
                        let name = k.as_str().unwrap_or_default().to_string();
                        if let Some(text) = self.input_value(v, &name) {
                            step.inputs.insert(name, text);
                        }
                    }
                }
                continue;
            }
            if let Some(text) = self.input_value(value, key) {
                step.inputs.insert(key.to_string(), text);
            }
        }
        if let Some(env) = node.get("env")
            && let Some(pairs) = self.mapping(env, "env")
        {
            for (k, v) in pairs {
                let name = k.as_str().unwrap_or_default().to_string();
                if let Some(text) = self.input_value(v, &name) {
                    step.env.insert(name, text);
                }
            }
        }
        Some(step)
    }

    /// A task input or step property as a string. Lists of strings (such as `patterns`) are joined
    /// with newlines, as multi-line inputs are.
    fn input_value(&mut self, node: &Node, name: &str) -> Option<String> {
        match &node.value {
            NodeValue::Scalar { .. } if node.is_null() => Some(String::new()),
            NodeValue::Scalar { text, .. } => Some(text.clone()),
            NodeValue::Sequence(items) if items.iter().all(|i| i.as_str().is_some()) => Some(
                items
                    .iter()
                    .filter_map(Node::as_str)
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            _ => {
                self.error(
                    "pipeline::wrong-type",
                    format!("`{name}` must be a string, not {}", node.kind_name()),
                    node.span,
                    "expected a string",
                );
                None
            }
        }
    }

    fn task_reference(&mut self, text: &str, span: Span) -> Option<TaskReference> {
        let text = text.trim();
        let Some((name, version)) = text.rsplit_once('@') else {
            self.error(
                "pipeline::invalid-task",
                format!("task `{text}` has no major version"),
                span,
                "expected `Name@Major`",
            )
            .help = Some(format!("write `{text}@1` (or the version you need)"));
            return None;
        };
        let major = version.split('.').next().unwrap_or("").trim();
        match major.parse::<u32>() {
            Ok(major) if !name.trim().is_empty() => Some(TaskReference {
                name: name.trim().to_string(),
                major,
            }),
            _ => {
                self.error(
                    "pipeline::invalid-task",
                    format!("task reference `{text}` is not `Name@Major`"),
                    span,
                    "expected `Name@Major`",
                );
                None
            }
        }
    }

    fn target(&mut self, node: &Node) -> Option<StepTarget> {
        match &node.value {
            NodeValue::Scalar { text, .. } if !node.is_null() => Some(StepTarget {
                container: Some(text.clone()),
                ..StepTarget::default()
            }),
            NodeValue::Mapping(entries) => {
                self.check_keys(
                    entries,
                    &[&["container", "commands", "settableVariables"]],
                    "`target`",
                );
                let commands = self.string(node.get("commands"), "commands");
                if let Some(c) = &commands
                    && c != "any"
                    && c != "restricted"
                {
                    let span = node.get("commands").map_or(node.span, |n| n.span);
                    self.error(
                        "pipeline::invalid-value",
                        format!("`commands` must be `any` or `restricted`, not `{c}`"),
                        span,
                        "this value",
                    );
                }
                let settable_variables = match node.get("settableVariables") {
                    None => None,
                    Some(n) if n.as_str() == Some("none") => Some(Vec::new()),
                    Some(n) => Some(self.string_list(Some(n), "settableVariables")),
                };
                Some(StepTarget {
                    container: self.string(node.get("container"), "container"),
                    commands,
                    settable_variables,
                })
            }
            _ if node.is_null() => None,
            _ => {
                self.wrong_type(node, "target", "a container name or a mapping");
                None
            }
        }
    }

    fn dependency_span(&self, kind: &str, name: &str, fallback: Span) -> Span {
        self.dependency_spans
            .get(&format!("{kind}:{name}"))
            .copied()
            .unwrap_or(fallback)
    }

    /// Checks stage `dependsOn` names and cycles.
    fn check_stage_graph(&mut self, stages: &[Stage], span: Span) {
        let mut edges: Vec<(String, Vec<String>, Span)> = Vec::new();
        let mut seen = HashSet::new();
        for stage in stages {
            if seen.insert(stage.name.as_str()) {
                let at = self.dependency_span("stage", &stage.name, span);
                edges.push((stage.name.clone(), stage.depends_on.clone(), at));
            }
        }
        self.check_graph(&edges, "stage");
    }

    fn check_job_graph(&mut self, jobs: &[Job], span: Span) {
        let mut edges: Vec<(String, Vec<String>, Span)> = Vec::new();
        let mut seen = HashSet::new();
        for job in jobs {
            if seen.insert(job.base_name.as_str()) {
                let at = self.dependency_span("job", &job.base_name, span);
                edges.push((job.base_name.clone(), job.depends_on.clone(), at));
            }
        }
        self.check_graph(&edges, "job");
    }

    fn check_graph(&mut self, nodes: &[(String, Vec<String>, Span)], what: &str) {
        let names: Vec<&str> = nodes.iter().map(|(n, _, _)| n.as_str()).collect();
        // The first node of each name (ASCII case-insensitive), by folded name.
        let mut first_of: HashMap<String, usize> = HashMap::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            first_of.entry(name.to_ascii_lowercase()).or_insert(i);
        }
        let index_of = |name: &str| first_of.get(&name.to_ascii_lowercase()).copied();
        let mut ok = true;
        for (name, depends, at) in nodes {
            for dependency in depends {
                if index_of(dependency).is_none() {
                    ok = false;
                    let mut d = crate::Diagnostic::error(
                        "pipeline::unknown-dependency",
                        format!("{what} `{name}` depends on `{dependency}`, which does not exist"),
                        Some(self.c.source_span(*at)),
                    )
                    .with_label(format!("no {what} `{dependency}`"));
                    d.help = suggest(dependency, &names)
                        .or_else(|| Some(format!("{what}s here: {}", names.join(", "))));
                    self.c.diagnostics.push(d);
                } else if dependency.eq_ignore_ascii_case(name) {
                    ok = false;
                    self.c.diagnostics.push(
                        crate::Diagnostic::error(
                            "pipeline::dependency-cycle",
                            format!("{what} `{name}` depends on itself"),
                            Some(self.c.source_span(*at)),
                        )
                        .with_label("its own name is listed here"),
                    );
                }
            }
        }
        if !ok {
            return;
        }
        // Kahn's algorithm: whatever cannot be ordered is on a cycle. `dependents[j]` lists each
        // node that depends on j, once per listing (every dependency is known by now).
        let mut remaining: Vec<usize> = nodes.iter().map(|(_, d, _)| d.len()).collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        for (i, (_, depends, _)) in nodes.iter().enumerate() {
            for dependency in depends {
                if let Some(j) = index_of(dependency) {
                    dependents[j].push(i);
                }
            }
        }
        let mut done = vec![false; nodes.len()];
        let mut ready: Vec<usize> = (0..nodes.len()).filter(|&i| remaining[i] == 0).collect();
        while let Some(next) = ready.pop() {
            done[next] = true;
            for &i in &dependents[next] {
                remaining[i] -= 1;
                if remaining[i] == 0 {
                    ready.push(i);
                }
            }
        }
        let cycle: Vec<&str> = (0..nodes.len())
            .filter(|&i| !done[i])
            .map(|i| names[i])
            .collect();
        if let Some(first) = (0..nodes.len()).find(|&i| !done[i]) {
            let at = nodes[first].2;
            self.c.diagnostics.push(
                crate::Diagnostic::error(
                    "pipeline::dependency-cycle",
                    format!(
                        "{what}s `{}` depend on each other in a cycle",
                        cycle.join("`, `")
                    ),
                    Some(self.c.source_span(at)),
                )
                .with_label("this dependency closes the cycle"),
            );
        }
    }
}

fn implied_stage(jobs: Vec<Job>, source: Location) -> Stage {
    Stage {
        name: "__default".into(),
        display_name: None,
        depends_on: Vec::new(),
        condition: None,
        variables: Vec::new(),
        pool: None,
        lock_behavior: None,
        is_skippable: true,
        manual_trigger: false,
        template_context: None,
        jobs,
        source,
        group: None,
    }
}

/// Merges an `extends` template into the document that extends it: the document's own keys stay
/// (except `extends`), the template adds its keys; `variables` and `resources` are combined.
fn merge_extended(document: &Node, template: &Node) -> Node {
    let mut entries: Vec<(Node, Node)> = document
        .as_mapping()
        .unwrap_or(&[])
        .iter()
        .filter(|(k, _)| k.as_str() != Some("extends"))
        .cloned()
        .collect();
    for (key, value) in template.as_mapping().unwrap_or(&[]) {
        let name = key.as_str().unwrap_or_default();
        match entries.iter_mut().find(|(k, _)| k.as_str() == Some(name)) {
            None => entries.push((key.clone(), value.clone())),
            Some((_, existing)) if name == "variables" => {
                let mut items = variables_as_list(existing);
                items.extend(variables_as_list(value));
                *existing = Node {
                    value: NodeValue::Sequence(items),
                    span: existing.span,
                };
            }
            Some((_, existing)) if name == "resources" => {
                if let (NodeValue::Mapping(mine), NodeValue::Mapping(theirs)) =
                    (&mut existing.value, &value.value)
                {
                    for (k, v) in theirs {
                        match mine.iter_mut().find(|(mk, _)| mk.as_str() == k.as_str()) {
                            Some((_, list)) => {
                                if let (NodeValue::Sequence(a), NodeValue::Sequence(b)) =
                                    (&mut list.value, &v.value)
                                {
                                    a.extend(b.iter().cloned());
                                }
                            }
                            None => mine.push((k.clone(), v.clone())),
                        }
                    }
                }
            }
            Some(_) => {}
        }
    }
    Node {
        value: NodeValue::Mapping(entries),
        span: document.span,
    }
}

fn variables_as_list(node: &Node) -> Vec<Node> {
    match &node.value {
        NodeValue::Sequence(items) => items.clone(),
        NodeValue::Mapping(entries) => entries
            .iter()
            .map(|(k, v)| Node {
                value: NodeValue::Mapping(vec![
                    (Node::scalar("name", true, k.span), k.clone()),
                    (Node::scalar("value", true, v.span), v.clone()),
                ]),
                span: k.span,
            })
            .collect(),
        NodeValue::Scalar { .. } => Vec::new(),
    }
}

/// The job identifier of a matrix leg: `JOB_LEG` with every character of the leg other than ASCII
/// letters, digits and `_` replaced by `_` (`Debug++` gives `JOB_Debug__`), made distinct from the
/// identifiers of earlier legs (`taken`, compared case-insensitively like job names) with a `_2`,
/// `_3`, ... suffix, so `a+b` and `a-b` still run as two jobs.
fn leg_identifier(base: &str, leg: &str, taken: &[String]) -> String {
    let safe: String = leg
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let first = format!("{base}_{safe}");
    let free = |name: &str| !taken.iter().any(|t| t.eq_ignore_ascii_case(name));
    if free(&first) {
        return first;
    }
    let mut n = 2u64;
    loop {
        let name = format!("{first}_{n}");
        if free(&name) {
            return name;
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_find_close_spellings_only() {
        assert_eq!(
            suggest("stpes", &["steps", "jobs"]).as_deref(),
            Some("did you mean `steps`?")
        );
        assert_eq!(
            suggest("DisplayName", &["displayName"]).as_deref(),
            Some("did you mean `displayName`?")
        );
        assert_eq!(suggest("somethingelse", &["steps", "jobs"]), None);
        assert_eq!(
            suggest("branch", &["batch", "branches"]).as_deref(),
            Some("did you mean `branches`?")
        );
    }

    #[test]
    fn identifiers_follow_the_stage_and_job_rule() {
        assert!(is_identifier("Build_1"));
        assert!(is_identifier("_private"));
        assert!(!is_identifier("1job"));
        assert!(!is_identifier("my-job"));
        assert!(!is_identifier(""));
    }
}
