//! Tests of the agent's event batching (the loop itself is exercised end to end by the server's tests).

use super::*;

#[test]
fn consecutive_log_lines_of_a_step_are_merged_into_one_event() {
    let reporter = EventReporter::new();
    reporter.report(JobEvent::StepStarted {
        step: 1,
        display_name: "build".into(),
    });
    reporter.report(JobEvent::Log {
        step: Some(1),
        lines: vec!["a".into()],
    });
    reporter.report(JobEvent::Log {
        step: Some(1),
        lines: vec!["b".into()],
    });
    reporter.report(JobEvent::Log {
        step: Some(2),
        lines: vec!["c".into()],
    });
    let events = reporter.take(Duration::from_millis(1));
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[1],
        JobEvent::Log {
            step: Some(1),
            lines: vec!["a".into(), "b".into()]
        }
    );
    assert!(reporter.take(Duration::from_millis(1)).is_empty());
}

#[test]
fn artifact_files_are_listed_relative_to_their_root_in_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("bin")).unwrap();
    std::fs::write(dir.path().join("bin/app"), "x").unwrap();
    std::fs::write(dir.path().join("README"), "y").unwrap();
    let mut files = Vec::new();
    collect_files(dir.path(), dir.path(), &mut files).unwrap();
    let names: Vec<_> = files.into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, vec!["README", "bin/app"]);
}

#[test]
fn percent_encoding_keeps_unreserved_characters() {
    assert_eq!(client::percent_encode("drop 1/a"), "drop%201%2Fa");
    assert_eq!(client::percent_encode("a-b_c.d~"), "a-b_c.d~");
}

#[test]
fn batches_stay_under_the_byte_limit_and_keep_order() {
    let events: Vec<JobEvent> = (0..50)
        .map(|n| JobEvent::Log {
            step: Some(n),
            lines: vec!["y".repeat(100)],
        })
        .collect();
    let batches = split_by_json_size(events.clone(), 1000);
    assert!(batches.len() > 5, "{}", batches.len());
    for batch in &batches {
        let size: usize = batch
            .iter()
            .map(|e| serde_json::to_vec(e).unwrap().len())
            .sum();
        assert!(size <= 1000, "{size}");
    }
    assert_eq!(batches.concat(), events);
    let huge = JobEvent::Log {
        step: None,
        lines: vec!["z".repeat(5000)],
    };
    assert_eq!(split_by_json_size(vec![huge.clone()], 1000), [vec![huge]]);
    assert!(split_by_json_size(Vec::<JobEvent>::new(), 1000).is_empty());
}

/// The compiled jobs of a pipeline as leases carry them (JSON).
fn leased_jobs(yaml: &'static str) -> Vec<serde_json::Value> {
    let output = lockgate_pipeline::compile(&lockgate_pipeline::CompileInput {
        entry: "azure-pipelines.yml".into(),
        reader: &lockgate_pipeline::SingleFile(yaml),
        parameters: Vec::new(),
        variables: Vec::new(),
    });
    let plan = output.plan.expect("the pipeline compiles");
    plan.stages
        .iter()
        .flat_map(|s| &s.jobs)
        .map(|j| serde_json::to_value(j).unwrap())
        .collect()
}

#[test]
fn sources_are_fetched_only_for_jobs_that_check_out_self() {
    let jobs = leased_jobs(
        "jobs:\n- job: Implied\n  steps:\n  - script: echo\n\
         - job: None\n  steps:\n  - checkout: none\n  - script: echo\n\
         - job: Explicit\n  steps:\n  - checkout: self\n    fetchDepth: 1\n\
         - deployment: Ship\n  environment: dev\n  strategy:\n    runOnce:\n      deploy:\n        steps:\n        - script: echo\n\
         - deployment: ShipWithSources\n  environment: dev\n  strategy:\n    runOnce:\n      deploy:\n        steps:\n        - checkout: self\n        - script: echo\n",
    );
    let fetched: Vec<bool> = jobs.iter().map(job_checks_out_self).collect();
    assert_eq!(fetched, [true, false, true, false, true]);
    assert!(job_checks_out_self(
        &serde_json::json!({"unreadable": true})
    ));
}
