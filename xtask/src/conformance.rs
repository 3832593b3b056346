//! `cargo xtask conformance expressions FILE [--min-pass PERCENT]`: runs expression test vectors (the JSON-lines
//! format of ../shared/conformance/expressions) against lockgate-expr and prints a table by category, every failure,
//! and `N passed, M failed`. Exits 1 when the pass rate of the azure-pipelines vectors is below `--min-pass`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context as _, bail};
use lockgate_expr::{
    Counters, ErrorKind, ExprError, MapContext, Object, ParseOptions, StatusInput, Syntax,
    TaskResult, Value, Version, eq_ignore_case, expand_macros, expand_variables, parse, render,
};
use serde_json::Value as Json;

const USAGE: &str = "usage: cargo xtask conformance expressions <FILE.jsonl> [--min-pass PERCENT]";

pub fn main(args: &[String]) -> anyhow::Result<u8> {
    let mut file = None;
    let mut min_pass = None;
    match args.first().map(String::as_str) {
        Some("expressions") => {}
        _ => bail!("{USAGE}"),
    }
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--min-pass" => {
                let value = rest
                    .next()
                    .with_context(|| format!("--min-pass needs a percentage\n{USAGE}"))?;
                let percent: f64 = value
                    .trim_end_matches('%')
                    .parse()
                    .with_context(|| format!("--min-pass: '{value}' is not a number"))?;
                if !(0.0..=100.0).contains(&percent) {
                    bail!("--min-pass: {percent} is not between 0 and 100");
                }
                min_pass = Some(percent);
            }
            other if other.starts_with("--") => bail!("unknown option {other}\n{USAGE}"),
            other if file.is_none() => file = Some(other.to_string()),
            other => bail!("unexpected argument {other}\n{USAGE}"),
        }
    }
    let Some(file) = file else { bail!("{USAGE}") };
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?;
    let report = run_vectors(&text).with_context(|| format!("in {file}"))?;
    print!("{}", report.render());
    let rate = report.pass_rate();
    if let Some(min) = min_pass
        && rate < min
    {
        eprintln!("pass rate {rate:.1}% is below the required {min}%");
        return Ok(1);
    }
    Ok(0)
}

/// The outcome of one vector.
struct Outcome {
    id: String,
    category: String,
    expr: String,
    expected: String,
    actual: String,
    passed: bool,
}

/// Results of a whole file.
#[derive(Default)]
pub struct Report {
    outcomes: Vec<Outcome>,
    other_dialects: BTreeMap<String, usize>,
}

impl Report {
    fn passed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.passed).count()
    }

    fn failed(&self) -> usize {
        self.outcomes.len() - self.passed()
    }

    /// Percentage of azure-pipelines vectors that passed (100 when there are none).
    pub fn pass_rate(&self) -> f64 {
        if self.outcomes.is_empty() {
            100.0
        } else {
            self.passed() as f64 * 100.0 / self.outcomes.len() as f64
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut by_category: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for outcome in &self.outcomes {
            let entry = by_category.entry(&outcome.category).or_default();
            if outcome.passed {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
        let _ = writeln!(out, "{:<24} {:>7} {:>7}", "category", "passed", "failed");
        for (category, (passed, failed)) in &by_category {
            let _ = writeln!(out, "{category:<24} {passed:>7} {failed:>7}");
        }
        for (dialect, count) in &self.other_dialects {
            let _ = writeln!(
                out,
                "({count} {dialect} vectors not run: only the azure-pipelines dialect is implemented)"
            );
        }
        let failures: Vec<_> = self.outcomes.iter().filter(|o| !o.passed).collect();
        if !failures.is_empty() {
            let _ = writeln!(out, "\nfailures:");
            for failure in failures {
                let _ = writeln!(
                    out,
                    "- {} [{}] {}",
                    failure.id,
                    failure.category,
                    shorten(&failure.expr, 160)
                );
                let _ = writeln!(out, "    expected: {}", shorten(&failure.expected, 300));
                let _ = writeln!(out, "    actual:   {}", shorten(&failure.actual, 300));
            }
            out.push('\n');
        }
        let _ = writeln!(out, "{} passed, {} failed", self.passed(), self.failed());
        out
    }
}

fn shorten(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', "\\n");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let head: String = one_line.chars().take(max).collect();
    format!("{head}... ({} characters)", one_line.chars().count())
}

/// Runs every vector of a JSON-lines text.
pub fn run_vectors(text: &str) -> anyhow::Result<Report> {
    let mut report = Report::default();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let vector: Json = serde_json::from_str(line)
            .with_context(|| format!("line {}: not valid JSON", number + 1))?;
        let field = |name: &str| vector.get(name).and_then(Json::as_str);
        let dialect = field("dialect").unwrap_or("azure-pipelines");
        if dialect != "azure-pipelines" {
            *report
                .other_dialects
                .entry(dialect.to_string())
                .or_default() += 1;
            continue;
        }
        let id = field("id").map_or_else(|| format!("line {}", number + 1), str::to_string);
        let expr = field("expr")
            .with_context(|| format!("line {}: missing string field `expr`", number + 1))?;
        let mode = field("mode")
            .with_context(|| format!("line {}: missing string field `mode`", number + 1))?;
        let expect = vector
            .get("expect")
            .with_context(|| format!("line {}: missing field `expect`", number + 1))?;
        let empty = Json::Object(Default::default());
        let context = vector.get("context").unwrap_or(&empty);
        let scope = field("scope").unwrap_or("step");
        let actual = run_one(mode, scope, expr, context);
        let passed = matches(expect, &actual, expr);
        report.outcomes.push(Outcome {
            id,
            category: field("category").unwrap_or("uncategorised").to_string(),
            expr: expr.to_string(),
            expected: expect.to_string(),
            actual: describe(&actual, expr),
            passed,
        });
    }
    Ok(report)
}

/// What running a vector produced.
enum Actual {
    Value(Value),
    Values(Vec<Value>),
    Valid,
    Error(ExprError),
    /// The vector cannot be run (an unknown mode or a malformed context).
    Unsupported(String),
}

fn describe(actual: &Actual, expr: &str) -> String {
    match actual {
        Actual::Value(v) => value_to_json(v).to_string(),
        Actual::Values(vs) => Json::Array(vs.iter().map(value_to_json).collect()).to_string(),
        Actual::Valid => "{\"valid\":true}".into(),
        Actual::Error(e) => format!(
            "error {} at '{}': {}",
            e.kind.legacy_name(),
            e.span.text(expr),
            e.message
        ),
        Actual::Unsupported(why) => format!("not run: {why}"),
    }
}

/// Converts a vector's JSON to a value; `{"$version": "1.2"}` is a version.
fn json_to_value(json: &Json) -> Result<Value, String> {
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => Value::Number(
            n.as_f64()
                .ok_or_else(|| format!("number {n} is out of range"))?,
        ),
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => {
            Value::Array(items.iter().map(json_to_value).collect::<Result<_, _>>()?)
        }
        Json::Object(map) => {
            if let (1, Some(Json::String(v))) = (map.len(), map.get("$version")) {
                return Version::parse(v)
                    .map(Value::Version)
                    .ok_or_else(|| format!("'{v}' is not a version"));
            }
            let mut object = Object::new();
            for (k, v) in map {
                object.insert(k.clone(), json_to_value(v)?);
            }
            Value::Object(object)
        }
    })
}

fn value_to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Number(n) => serde_json::Number::from_f64(*n).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.clone()),
        Value::Version(v) => serde_json::json!({ "$version": v.to_string() }),
        Value::Array(items) => Json::Array(items.iter().map(value_to_json).collect()),
        Value::Object(object) => Json::Object(
            object
                .iter()
                .map(|(k, v)| (k.to_string(), value_to_json(v)))
                .collect(),
        ),
    }
}

/// Builds the parse options and the context a vector describes.
fn setup(mode: &str, scope: &str, context: &Json) -> Result<(ParseOptions, MapContext), String> {
    let mut options = match mode {
        "template" | "template-condition" | "template-render" => ParseOptions::template(),
        "runtime-render" | "counter-sequence" => ParseOptions::runtime(),
        "validate-syntax" => ParseOptions::syntax_only(),
        _ => ParseOptions::condition(),
    };
    let mut map = MapContext::new();
    let Some(entries) = context.as_object() else {
        return Err("`context` is not an object".into());
    };
    for (name, value) in entries {
        if name == "$functions" {
            let Some(functions) = value.as_object() else {
                return Err("`$functions` is not an object".into());
            };
            for (function, spec) in functions {
                let bound = |key: &str| spec.get(key).and_then(Json::as_u64).map(|n| n as usize);
                let (min, max) = (
                    bound("min").unwrap_or(0),
                    bound("max").unwrap_or(usize::MAX),
                );
                options = options.with_function(function.clone(), min, max);
                if let Some(returns) = spec.get("returns") {
                    let returns = json_to_value(returns)?;
                    map.set_function(function.clone(), move |_| Ok(returns.clone()));
                } else if let Some(lookup) = spec.get("lookup") {
                    let lookup = json_to_value(lookup)?;
                    map.set_function(function.clone(), move |args| {
                        let key = args
                            .first()
                            .and_then(|a| a.convert_to_string())
                            .unwrap_or_default();
                        Ok(lookup.property(&key).cloned().unwrap_or(Value::Null))
                    });
                }
            }
            continue;
        }
        if name.starts_with('$') || name == "runs" {
            continue;
        }
        options = options.with_named_value(name.clone());
        map.set(name.clone(), json_to_value(value)?);
    }
    if scope == "job" || scope == "stage" {
        let mut results = Vec::new();
        if let Some(dependencies) = context.get("dependencies").and_then(Json::as_object) {
            for (name, dependency) in dependencies {
                if let Some(result) = dependency.get("result").and_then(Json::as_str) {
                    let result = TaskResult::parse(result)
                        .ok_or_else(|| format!("unknown result '{result}'"))?;
                    results.push((name.clone(), result));
                }
            }
        }
        let canceled = results.iter().any(|(_, r)| *r == TaskResult::Canceled);
        map.set_status(StatusInput::Dependencies { results, canceled });
    }
    Ok((options, map))
}

fn variables_of(context: &Json) -> Vec<(String, String)> {
    context
        .get("variables")
        .and_then(Json::as_object)
        .map(|vars| {
            vars.iter()
                .map(|(k, v)| {
                    let value = match v {
                        Json::Null => String::new(),
                        Json::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn lookup_in(variables: &[(String, String)]) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| {
        variables
            .iter()
            .find(|(k, _)| eq_ignore_case(k, name))
            .map(|(_, v)| v.clone())
    }
}

fn run_one(mode: &str, scope: &str, expr: &str, context: &Json) -> Actual {
    match mode {
        "macro" => {
            let variables = variables_of(context);
            return Actual::Value(Value::String(
                expand_macros(expr, lookup_in(&variables)).into_owned(),
            ));
        }
        "macro-recursive" => {
            let expanded: Vec<(String, String)> = expand_variables(&variables_of(context))
                .into_iter()
                .map(|v| (v.name, v.value))
                .collect();
            return Actual::Value(Value::String(
                expand_macros(expr, lookup_in(&expanded)).into_owned(),
            ));
        }
        _ => {}
    }
    let (options, map) = match setup(mode, scope, context) {
        Ok(setup) => setup,
        Err(why) => return Actual::Unsupported(why),
    };
    match mode {
        "validate-syntax" => match parse(expr, &options) {
            Ok(_) => Actual::Valid,
            Err(e) => Actual::Error(e),
        },
        "expression" | "template" => match parse(expr, &options).and_then(|e| e.evaluate(&map)) {
            Ok(v) => Actual::Value(v),
            Err(e) => Actual::Error(e),
        },
        "condition" | "template-condition" => {
            match parse(expr, &options).and_then(|e| e.evaluate_bool(&map)) {
                Ok(b) => Actual::Value(Value::Boolean(b)),
                Err(e) => Actual::Error(e),
            }
        }
        "template-render" | "runtime-render" => {
            let syntax = if mode == "template-render" {
                Syntax::Template
            } else {
                Syntax::Runtime
            };
            match render(expr, syntax, &options, &map) {
                Ok(v) => Actual::Value(Value::String(v.to_display_string())),
                Err(e) => Actual::Error(e),
            }
        }
        "counter-sequence" => {
            let Some(runs) = context.get("runs").and_then(Json::as_array) else {
                return Actual::Unsupported("`context.runs` is missing".into());
            };
            let expression = match parse(expr, &options) {
                Ok(e) => e,
                Err(e) => return Actual::Error(e),
            };
            let mut counters = Counters::new();
            let mut values = Vec::new();
            for run in runs {
                let (_, mut map) = match setup(mode, scope, run) {
                    Ok(setup) => setup,
                    Err(why) => return Actual::Unsupported(why),
                };
                map.set_counters(counters);
                match expression.evaluate(&map) {
                    Ok(v) => values.push(v),
                    Err(e) => return Actual::Error(e),
                }
                counters = map.into_counters();
            }
            Actual::Values(values)
        }
        other => Actual::Unsupported(format!("unknown mode '{other}'")),
    }
}

/// Compares a result with the vector's `expect`: numbers numerically, strings exactly, arrays and objects
/// structurally; errors by category and any given kind, token, cast types and value, or message (a substring,
/// ignoring case).
fn matches(expect: &Json, actual: &Actual, expr: &str) -> bool {
    if let Some(category) = expect.get("error").and_then(Json::as_str) {
        let Actual::Error(error) = actual else {
            return false;
        };
        let given = |key: &str| expect.get(key).and_then(Json::as_str);
        if let Some(message) = given("message")
            && !error
                .message
                .to_lowercase()
                .contains(&message.to_lowercase())
        {
            return false;
        }
        return match category {
            "parse" => {
                error.kind.is_parse()
                    && given("kind").is_none_or(|k| k == error.kind.legacy_name())
                    && given("token").is_none_or(|t| t == error.span.text(expr))
            }
            "cast" => match &error.kind {
                ErrorKind::Cast { from, to, value } => {
                    given("from").is_none_or(|f| f == from.name())
                        && given("to").is_none_or(|t| t == to.name())
                        && expect
                            .get("value")
                            .is_none_or(|v| json_to_value(v).is_ok_and(|v| same_value(&v, value)))
                }
                _ => false,
            },
            // Template validation: any error (parse or evaluation) counts, subject to the message check above.
            "validation" => true,
            _ => false,
        };
    }
    match (expect, actual) {
        (Json::Object(map), Actual::Valid) => map.get("valid") == Some(&Json::Bool(true)),
        (Json::Array(items), Actual::Values(values)) => {
            items.len() == values.len()
                && items
                    .iter()
                    .zip(values)
                    .all(|(e, v)| json_to_value(e).is_ok_and(|e| same_value(&e, v)))
        }
        (expected, Actual::Value(value)) => {
            json_to_value(expected).is_ok_and(|e| same_value(&e, value))
        }
        _ => false,
    }
}

fn same_value(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Number(a), Value::Number(b)) => {
            a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_value(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter().all(|(k, v)| {
                    b.get_entry(k)
                        .is_some_and(|(bk, bv)| bk == k && same_value(v, bv))
                })
        }
        _ => expected == actual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_passes_failures_and_other_dialects() {
        let text = r#"{"id":"a","dialect":"azure-pipelines","category":"eq","mode":"condition","expr":"eq(1, 1)","context":{},"expect":true}
{"id":"b","dialect":"azure-pipelines","category":"eq","mode":"condition","expr":"eq(1, 2)","context":{},"expect":true}
{"id":"c","dialect":"azure-pipelines","category":"gt","mode":"condition","expr":"gt(1, 'x')","context":{},"expect":{"error":"cast","from":"String","to":"Number","value":"x"}}
{"id":"d","dialect":"github-actions","category":"op-eq","mode":"expression","expr":"1 == 1","context":{},"expect":true}
"#;
        let report = run_vectors(text).unwrap();
        let rendered = report.render();
        assert!(rendered.ends_with("2 passed, 1 failed\n"), "{rendered}");
        assert!(rendered.contains("- b [eq] eq(1, 2)"), "{rendered}");
        assert!(
            rendered.contains("1 github-actions vectors not run"),
            "{rendered}"
        );
        assert!((report.pass_rate() - 200.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let Err(error) = run_vectors("{\"expr\": 1}\nnot json") else {
            panic!("a file with a malformed line was accepted");
        };
        assert!(format!("{error:#}").contains("line 1"), "{error:#}");
    }
}
