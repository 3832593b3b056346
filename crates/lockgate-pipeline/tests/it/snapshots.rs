//! Snapshot tests: each `test_data/ok/NAME.yml` must plan without errors and match
//! `NAME.plan.yaml` (the final YAML) and `NAME.plan.json` when present; each `test_data/err/NAME.yml`
//! must fail and its rendered diagnostics must match `NAME.diagnostics.txt`. Run with
//! `UPDATE_SNAPSHOTS=1` to write new snapshots (then review them).

use std::path::Path;

use crate::support::{check, test_data};

fn cases(folder: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(test_data().join(folder))
        .expect("test_data folder exists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml"))
        .collect();
    names.sort();
    names
}

/// Compares `actual` with the snapshot file, or writes it under `UPDATE_SNAPSHOTS=1`. Returns a
/// failure message on mismatch.
fn compare(snapshot: &Path, actual: &str) -> Option<String> {
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(snapshot, actual).expect("snapshot written");
        return None;
    }
    let expected = match std::fs::read_to_string(snapshot) {
        Ok(text) => text,
        Err(_) => {
            return Some(format!(
                "{}: no snapshot (run with UPDATE_SNAPSHOTS=1)\n{actual}",
                snapshot.display()
            ));
        }
    };
    if expected == actual {
        return None;
    }
    let first_difference = expected
        .lines()
        .zip(actual.lines())
        .position(|(e, a)| e != a)
        .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
    Some(format!(
        "{}: snapshot differs at line {}\n--- expected\n{}\n--- actual\n{}",
        snapshot.display(),
        first_difference + 1,
        expected
            .lines()
            .skip(first_difference)
            .take(5)
            .collect::<Vec<_>>()
            .join("\n"),
        actual
            .lines()
            .skip(first_difference)
            .take(5)
            .collect::<Vec<_>>()
            .join("\n"),
    ))
}

#[test]
fn ok_cases_plan_and_match_their_snapshots() {
    let names = cases("ok");
    assert!(
        names.len() >= 10,
        "expected the ok cases, found {}",
        names.len()
    );
    let mut failures = Vec::new();
    for name in &names {
        let output = check(&format!("ok/{name}"));
        let Some(plan) = &output.plan else {
            failures.push(format!(
                "ok/{name}: did not plan:\n{}",
                lockgate_pipeline::render(&output.diagnostics, &output.sources)
            ));
            continue;
        };
        let stem = name.trim_end_matches(".yml");
        let yaml_path = test_data().join("ok").join(format!("{stem}.plan.yaml"));
        failures.extend(compare(&yaml_path, &lockgate_pipeline::to_final_yaml(plan)));
        let json_path = test_data().join("ok").join(format!("{stem}.plan.json"));
        if json_path.exists() {
            let json = serde_json::to_string_pretty(plan).expect("plan serialises") + "\n";
            failures.extend(compare(&json_path, &json));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn err_cases_fail_with_their_snapshot_diagnostics() {
    let names = cases("err");
    assert!(
        names.len() >= 10,
        "expected the err cases, found {}",
        names.len()
    );
    let mut failures = Vec::new();
    for name in &names {
        let output = check(&format!("err/{name}"));
        if output.plan.is_some() || !output.has_errors() {
            failures.push(format!("err/{name}: compiled without errors"));
            continue;
        }
        let rendered = lockgate_pipeline::render(&output.diagnostics, &output.sources);
        let stem = name.trim_end_matches(".yml");
        let path = test_data()
            .join("err")
            .join(format!("{stem}.diagnostics.txt"));
        failures.extend(compare(&path, &rendered));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn final_yaml_of_every_ok_case_compiles_to_the_same_plan() {
    // The printed final YAML is itself a valid pipeline that plans to the same plan.
    for name in cases("ok") {
        let output = check(&format!("ok/{name}"));
        let Some(plan) = output.plan else { continue };
        let yaml = lockgate_pipeline::to_final_yaml(&plan);
        let again = crate::support::compile_text(&yaml);
        let Some(replanned) = again.plan else {
            panic!(
                "ok/{name}: final yaml does not compile:\n{}\n{yaml}",
                lockgate_pipeline::render(&again.diagnostics, &again.sources)
            );
        };
        // Equal plans apart from source locations (the final YAML is one file).
        assert_eq!(
            without_sources(&plan),
            without_sources(&replanned),
            "ok/{name}: plans differ\n{yaml}"
        );
    }
}

/// The plan as JSON without `source` locations.
fn without_sources(plan: &lockgate_pipeline::Plan) -> serde_json::Value {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.remove("source");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(plan).expect("plan serialises");
    strip(&mut value);
    value
}
