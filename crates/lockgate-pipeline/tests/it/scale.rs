//! Large generated pipelines: the look-ups by name that keep compile time linear (hash indexes
//! instead of scans) keep key order, replacement in place and every duplicate and dependency
//! diagnostic. Not timed; `cargo xtask bench pipeline` measures the speed.

use std::fmt::Write;

use lockgate_pipeline::CompileOutput;
use lockgate_pipeline::plan::Variable;

use crate::support::compile_text;

const KEYS: usize = 5_000;

fn errors(output: &CompileOutput) -> Vec<(String, u32, String)> {
    output
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| {
            (
                d.code.clone(),
                d.span.as_ref().map_or(0, |s| s.line),
                d.message.clone(),
            )
        })
        .collect()
}

fn variable_pairs(output: &CompileOutput) -> Vec<(String, String)> {
    let plan = output.plan.as_ref().expect("plans");
    plan.variables
        .iter()
        .map(|v| match v {
            Variable::Value { name, value, .. } => (name.clone(), value.clone()),
            Variable::Group { name, .. } => (format!("group {name}"), String::new()),
        })
        .collect()
}

#[test]
fn a_large_mapping_keeps_order_and_a_later_expanded_key_replaces_in_place() {
    let mut text = String::from("variables:\n");
    for i in 0..KEYS {
        writeln!(text, "  v{i}: x{i}").unwrap();
    }
    // Keys produced by expressions merge into the mapping: an existing name keeps its place.
    text.push_str("  ${{ if true }}:\n    v17: replaced\n    extra: added\n");
    text.push_str("  ${{ format('v{0}', 4321) }}: formatted\n");
    text.push_str("steps:\n- script: echo $(v0)\n");
    let output = compile_text(&text);
    assert_eq!(errors(&output), []);
    let pairs = variable_pairs(&output);
    assert_eq!(pairs.len(), KEYS + 1);
    for (i, (name, value)) in pairs.iter().take(KEYS).enumerate() {
        assert_eq!(name, &format!("v{i}"));
        let expected = match i {
            17 => "replaced".to_string(),
            4321 => "formatted".to_string(),
            _ => format!("x{i}"),
        };
        assert_eq!(value, &expected, "variable v{i}");
    }
    assert_eq!(pairs[KEYS], ("extra".to_string(), "added".to_string()));
}

#[test]
fn a_duplicate_key_in_a_large_mapping_is_reported_with_the_first_definition() {
    let mut text = String::from("variables:\n");
    for i in 0..KEYS {
        writeln!(text, "  v{i}: x{i}").unwrap();
    }
    // Line 2 holds v0, so v4000 is on line 4002; the repeats sit after the last key.
    text.push_str("  v4000: again\n  v3: again\n");
    text.push_str("steps:\n- script: echo hi\n");
    let output = compile_text(&text);
    let duplicates: Vec<(u32, String, Option<String>)> = output
        .diagnostics
        .iter()
        .filter(|d| d.code == "pipeline::duplicate-key")
        .map(|d| {
            (
                d.span.as_ref().map_or(0, |s| s.line),
                d.message.clone(),
                d.help.clone(),
            )
        })
        .collect();
    let last = KEYS as u32 + 2;
    assert_eq!(
        duplicates,
        [
            (
                last,
                "key `v4000` is defined twice in this mapping".to_string(),
                Some("the first definition is on line 4002".to_string())
            ),
            (
                last + 1,
                "key `v3` is defined twice in this mapping".to_string(),
                Some("the first definition is on line 5".to_string())
            ),
        ]
    );
    assert!(output.plan.is_none());
}

#[test]
fn many_jobs_keep_duplicate_name_generated_name_and_dependency_diagnostics() {
    let jobs = 3_000;
    let mut text = String::from("jobs:\n");
    for i in 0..jobs {
        writeln!(text, "- job: j{i}\n  steps:\n  - script: echo {i}").unwrap();
        if i > 0 {
            writeln!(text, "  dependsOn: j{}", i - 1).unwrap();
        }
    }
    // Names compare ignoring ASCII case; unnamed jobs get Job, Job1, ...; a cycle and an unknown
    // dependency at the end of a long chain are still found.
    text.push_str("- job: J2500\n  steps:\n  - script: echo dup\n");
    text.push_str("- job:\n  steps:\n  - script: echo a\n- job:\n  steps:\n  - script: echo b\n");
    text.push_str("- job: cA\n  dependsOn: cB\n  steps:\n  - script: echo c\n");
    text.push_str("- job: cB\n  dependsOn: [j2999, cA]\n  steps:\n  - script: echo c\n");
    let output = compile_text(&text);
    let found = errors(&output);
    let codes: Vec<&str> = found.iter().map(|(c, _, _)| c.as_str()).collect();
    assert_eq!(
        codes,
        ["pipeline::duplicate-name", "pipeline::dependency-cycle"],
        "{found:?}"
    );
    assert_eq!(found[0].2, "job `J2500` is defined twice in this stage");
    assert_eq!(
        found[1].2,
        "jobs `cA`, `cB` depend on each other in a cycle"
    );

    // Without the duplicate and the cycle the plan has every job in order, with generated names.
    let fixed = text
        .replace("- job: J2500\n", "- job: k2500\n")
        .replace("dependsOn: [j2999, cA]", "dependsOn: [j2999]");
    let output = compile_text(&fixed);
    assert_eq!(errors(&output), []);
    let plan = output.plan.expect("plans");
    let names: Vec<&str> = plan.stages[0]
        .jobs
        .iter()
        .map(|j| j.name.as_str())
        .collect();
    assert_eq!(names.len(), jobs + 5);
    assert_eq!(names[..3], ["j0", "j1", "j2"]);
    assert_eq!(names[jobs..], ["k2500", "Job", "Job1", "cA", "cB"]);

    let unknown = text.replace("dependsOn: j1233", "dependsOn: j99999");
    let found = errors(&compile_text(&unknown));
    assert!(
        found
            .iter()
            .any(|(code, _, message)| code == "pipeline::unknown-dependency"
                && message == "job `j1234` depends on `j99999`, which does not exist"),
        "{found:?}"
    );
}

#[test]
fn many_steps_keep_the_duplicate_step_name_diagnostic() {
    let mut text = String::from("steps:\n");
    for i in 0..KEYS {
        writeln!(text, "- script: echo {i}\n  name: s{i}").unwrap();
    }
    text.push_str("- script: echo again\n  name: S42\n");
    let found = errors(&compile_text(&text));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "pipeline::duplicate-name");
    assert!(
        found[0].2.starts_with(
            "step name `S42` is used twice in this job (first at azure-pipelines.yml:"
        ),
        "{found:?}"
    );
}
