//! One job end to end with real bash steps: variables and output variables, secret masking, conditions
//! after a failure and after a cancel, continueOnError, task.complete, prependpath, step timeouts and
//! retries.

use std::time::Duration;

use lockgate_runner::events::{Event, IssueKind, TaskResult};
use lockgate_runner::spec::InitialVariable;

use crate::helpers::{job, run, script, step_results};

#[test]
fn variables_reach_scripts_as_environment_and_macros() {
    let dir = tempfile::tempdir().unwrap();
    let spec = job(
        vec![script(
            None,
            "echo \"env=$MY_CONFIG macro=$(my.config) tf=$TF_BUILD\" 'missing=$(nope)'; pwd",
        )],
        vec![InitialVariable::new("My.Config", "release")],
    );
    let (outcome, _, sink) = run(dir.path(), &spec);
    assert_eq!(outcome.result, TaskResult::Succeeded);
    let lines = sink.log_lines();
    assert!(
        lines.contains(&"env=release macro=release tf=True missing=$(nope)".to_string()),
        "{lines:?}"
    );
    let sources = dir.path().join("work/s");
    assert!(
        lines.contains(&sources.display().to_string()),
        "steps start in the sources folder: {lines:?}"
    );
}

#[test]
fn output_variables_are_set_for_later_steps_and_the_job_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let spec = job(
        vec![
            script(
                Some("setver"),
                "echo '##vso[task.setvariable variable=version;isOutput=true]1.2.3'\necho '##vso[task.setvariable variable=plain]p'",
            ),
            script(
                None,
                "echo \"out=$(setver.version) env=$SETVER_VERSION plain=$PLAIN\"",
            ),
        ],
        vec![],
    );
    let (outcome, events, sink) = run(dir.path(), &spec);
    assert_eq!(outcome.result, TaskResult::Succeeded);
    assert_eq!(
        outcome.outputs.get("setver.version").map(String::as_str),
        Some("1.2.3")
    );
    assert!(
        sink.log_lines()
            .contains(&"out=1.2.3 env=1.2.3 plain=p".to_string()),
        "{:?}",
        sink.log_lines()
    );
    assert!(events.iter().any(
        |e| matches!(e, Event::VariableSet { name, is_output: true, .. } if name == "version")
    ));
}

#[test]
fn secrets_are_masked_and_not_exported() {
    let dir = tempfile::tempdir().unwrap();
    let mut secret = InitialVariable::new("db.password", "hunter2-secret");
    secret.secret = true;
    let mut mapped = script(
        None,
        "echo \"direct=$DB_PASSWORD mapped=$PW macro=$(db.password)\"; echo \"##vso[task.setvariable variable=tok;issecret=true]tok-123456\"",
    );
    mapped.env.insert("PW".into(), "$(db.password)".into());
    let later = script(
        None,
        "echo \"later $(tok) and setsecret\"; echo '##vso[task.setsecret]other-value'; echo other-value",
    );
    let (outcome, events, sink) = run(dir.path(), &job(vec![mapped, later], vec![secret]));
    assert_eq!(outcome.result, TaskResult::Succeeded);
    let lines = sink.log_lines();
    assert!(
        lines.contains(&"direct= mapped=*** macro=***".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"later *** and setsecret".to_string()),
        "{lines:?}"
    );
    assert!(lines.contains(&"***".to_string()), "{lines:?}");
    let everything = format!("{events:?}");
    for secret in ["hunter2-secret", "tok-123456", "other-value"] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked: {everything}"
        );
    }
}

#[test]
fn after_a_failure_only_steps_whose_condition_allows_it_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut always = script(None, "echo always-ran");
    always.condition = Some("always()".into());
    let mut on_failure = script(None, "echo failed-ran; echo status=$AGENT_JOBSTATUS");
    on_failure.condition = Some("failed()".into());
    let spec = job(
        vec![
            script(None, "exit 3"),
            script(None, "echo must-not-run"),
            always,
            on_failure,
        ],
        vec![],
    );
    let (outcome, events, sink) = run(dir.path(), &spec);
    assert_eq!(outcome.result, TaskResult::Failed);
    assert_eq!(
        step_results(&events),
        [
            TaskResult::Failed,
            TaskResult::Skipped,
            TaskResult::Succeeded,
            TaskResult::Succeeded
        ]
    );
    let lines = sink.log_lines();
    assert!(!lines.contains(&"must-not-run".to_string()));
    assert!(
        lines.contains(&"always-ran".to_string()) && lines.contains(&"status=Failed".to_string()),
        "{lines:?}"
    );
    assert!(events.iter().any(|e| matches!(e, Event::Issue { kind: IssueKind::Error, message, .. } if message.contains("exited with code '3'"))));
}

#[test]
fn continue_on_error_and_task_complete_give_succeeded_with_issues() {
    let dir = tempfile::tempdir().unwrap();
    let mut tolerated = script(None, "exit 1");
    tolerated.continue_on_error = true;
    let forced = script(
        None,
        "echo '##vso[task.complete result=SucceededWithIssues;]done'",
    );
    let (outcome, events, _) = run(
        dir.path(),
        &job(vec![tolerated, forced, script(None, "true")], vec![]),
    );
    assert_eq!(
        step_results(&events),
        [
            TaskResult::SucceededWithIssues,
            TaskResult::SucceededWithIssues,
            TaskResult::Succeeded
        ]
    );
    assert_eq!(outcome.result, TaskResult::SucceededWithIssues);
}

#[test]
fn prependpath_and_fail_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let tools = dir.path().join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    let mut stderr_step = script(None, "echo oops >&2");
    if let lockgate_runner::spec::StepAction::Task { inputs, .. } = &mut stderr_step.action {
        inputs.insert("failOnStderr".into(), "true".into());
    }
    let spec = job(
        vec![
            script(
                None,
                &format!("echo '##vso[task.prependpath]{}'", tools.display()),
            ),
            script(None, "echo \"first=${PATH%%:*}\""),
            stderr_step,
        ],
        vec![],
    );
    let (outcome, _, sink) = run(dir.path(), &spec);
    assert!(
        sink.log_lines()
            .contains(&format!("first={}", tools.display()))
    );
    assert_eq!(outcome.result, TaskResult::Failed);
}

#[test]
fn a_step_timeout_fails_the_step_and_retries_rerun_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut slow = script(None, "sleep 30");
    slow.timeout = Some(Duration::from_millis(300));
    let mut flaky = script(
        None,
        "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; echo attempt=$n; [ $n -ge 3 ]",
    );
    flaky.retry_count_on_task_failure = 2;
    flaky.condition = Some("always()".into());
    let mut after = script(None, "true");
    after.condition = Some("always()".into());
    let started = std::time::Instant::now();
    let (outcome, events, sink) = run(dir.path(), &job(vec![slow, flaky, after], vec![]));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        step_results(&events),
        [
            TaskResult::Failed,
            TaskResult::Succeeded,
            TaskResult::Succeeded
        ]
    );
    assert_eq!(outcome.result, TaskResult::Failed);
    assert!(sink.log_lines().contains(&"attempt=3".to_string()));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Issue { message, .. } if message.contains("timed out")))
    );
}

#[test]
fn a_job_timeout_cancels_the_running_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = job(
        vec![script(None, "sleep 30"), script(None, "echo skipped")],
        vec![],
    );
    // Long enough that the first step has surely started on a loaded machine (a shorter timeout can
    // fire before the step spawns, which skips it instead of canceling it), far below the sleep.
    spec.timeout = Some(Duration::from_secs(3));
    let started = std::time::Instant::now();
    let (outcome, events, _) = run(dir.path(), &spec);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(outcome.result, TaskResult::Canceled);
    assert_eq!(
        step_results(&events),
        [TaskResult::Canceled, TaskResult::Skipped]
    );
}

#[test]
fn group_markers_and_build_commands_become_events() {
    let dir = tempfile::tempdir().unwrap();
    let spec = job(
        vec![script(
            None,
            "echo '##[group]Restore'; echo inside; echo '##[endgroup]'; echo '##vso[build.updatebuildnumber]1.0.7'; echo '##vso[build.addbuildtag]nightly'; echo '##vso[task.logissue type=warning;sourcepath=a.rs;linenumber=3]careful'; echo 'build=$(Build.BuildNumber)'",
        )],
        vec![],
    );
    let (outcome, events, _) = run(dir.path(), &spec);
    assert_eq!(outcome.result, TaskResult::Succeeded);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Group { title: Some(t), .. } if t == "Restore"))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Group { title: None, .. }))
    );
    assert!(
        events.iter().any(
            |e| matches!(e, Event::BuildNumber { build_number, .. } if build_number == "1.0.7")
        )
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::BuildTag { tag, .. } if tag == "nightly"))
    );
    assert!(events.iter().any(|e| matches!(e, Event::Issue { kind: IssueKind::Warning, message, .. } if message == "a.rs:3: careful")));
}

#[test]
fn restricted_steps_may_only_use_allowed_commands_and_variables() {
    let dir = tempfile::tempdir().unwrap();
    let mut restricted = script(
        None,
        "echo '##vso[task.setvariable variable=allowed]yes'\necho '##vso[task.setvariable variable=other]no'\necho '##vso[build.addbuildtag]tag'",
    );
    restricted.restrictions.restricted = true;
    restricted.restrictions.settable_variables = Some(vec!["allowed".into()]);
    let spec = job(
        vec![
            restricted,
            script(None, "echo \"allowed=$ALLOWED other=$OTHER\""),
        ],
        vec![],
    );
    let (outcome, events, sink) = run(dir.path(), &spec);
    assert_eq!(outcome.result, TaskResult::Succeeded);
    assert!(
        sink.log_lines().contains(&"allowed=yes other=".to_string()),
        "{:?}",
        sink.log_lines()
    );
    assert!(!events.iter().any(|e| matches!(e, Event::BuildTag { .. })));
    let warnings = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Issue {
                    kind: IssueKind::Warning,
                    ..
                }
            )
        })
        .count();
    assert_eq!(warnings, 2);
}

#[test]
fn results_and_coverage_can_be_published_with_logging_commands() {
    let dir = tempfile::tempdir().unwrap();
    let spec = job(
        vec![script(
            None,
            "echo '<testsuite><testcase name=\"a\"/><testcase name=\"b\"><failure/></testcase></testsuite>' > r.xml\n\
             echo '<coverage lines-covered=\"3\" lines-valid=\"4\" branches-covered=\"0\" branches-valid=\"0\"/>' > c.xml\n\
             echo '##vso[results.publish type=JUnit;runTitle=unit]r.xml'\n\
             echo '##vso[codecoverage.publish codecoveragetool=Cobertura;summaryfile=c.xml]'\n\
             echo '##vso[task.logdetail id=1;name=x]'",
        )],
        vec![],
    );
    let (outcome, events, sink) = run(dir.path(), &spec);
    assert_eq!(outcome.result, TaskResult::Succeeded);
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::TestResults {
                passed: 1,
                failed: 1,
                cases,
                ..
            } if cases.len() == 2 && cases.iter().all(|c| c.suite == "unit")
        )),
        "runTitle names the suite of cases without a class: {events:?}"
    );
    assert!(
        sink.log_lines()
            .iter()
            .any(|l| l.contains("lines 75.00% (3/4)")),
        "{:?}",
        sink.log_lines()
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::Issue { .. })),
        "logdetail is accepted silently: {events:?}"
    );
}

/// Runs `spec` in `dir`, canceling the job once the file `started` appears in `dir`.
fn run_canceled_once_started(
    dir: &std::path::Path,
    spec: &lockgate_runner::spec::JobSpec,
) -> (
    lockgate_runner::job::JobOutcome,
    Vec<Event>,
    lockgate_runner::events::CollectingSink,
) {
    let cancel = lockgate_runner::process::CancelSignal::new();
    let trigger = cancel.clone();
    let marker = dir.join("started");
    let canceler = std::thread::spawn(move || {
        crate::helpers::wait_for_file(&marker, Duration::from_secs(60));
        trigger.cancel();
    });
    let sink = lockgate_runner::events::CollectingSink::default();
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(lockgate_runner::job::run_job(
            &crate::helpers::run_context(dir),
            &lockgate_runner::tasks::TaskRegistry::with_builtins(),
            spec,
            &dir.join("work"),
            &sink,
            &cancel,
        ));
    canceler.join().unwrap();
    let events = sink.snapshot();
    (outcome, events, sink)
}

#[test]
fn after_a_cancel_always_steps_run_to_their_end_and_other_steps_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let mut cleanup = script(None, "sleep 1; echo \"cleaned\" \"up\"");
    cleanup.condition = Some("always()".into());
    let mut on_cancel = script(None, "echo \"saw the\" \"cancel\"");
    on_cancel.condition = Some("canceled()".into());
    let mut spec = job(
        vec![
            script(None, &format!("echo go > {}; sleep 60", started.display())),
            script(None, "echo \"went\" \"on\""),
            cleanup,
            on_cancel,
        ],
        vec![],
    );
    // The cancel timeout is the time steps have after a cancel: far more than the cleanup needs.
    spec.cancel_timeout = Duration::from_secs(120);
    let (outcome, events, sink) = run_canceled_once_started(dir.path(), &spec);
    assert_eq!(outcome.result, TaskResult::Canceled);
    assert_eq!(
        step_results(&events),
        [
            TaskResult::Canceled,
            TaskResult::Skipped,
            TaskResult::Succeeded,
            TaskResult::Succeeded
        ]
    );
    let lines = sink.log_lines();
    assert!(lines.contains(&"cleaned up".to_string()), "{lines:?}");
    assert!(lines.contains(&"saw the cancel".to_string()), "{lines:?}");
    assert!(!lines.contains(&"went on".to_string()), "{lines:?}");
}

#[test]
fn an_always_step_still_running_when_the_cancel_timeout_ends_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let mut cleanup = script(None, "sleep 60");
    cleanup.condition = Some("always()".into());
    let spec = job(
        vec![
            script(None, &format!("echo go > {}; sleep 60", started.display())),
            cleanup,
        ],
        vec![],
    );
    let (outcome, events, _) = run_canceled_once_started(dir.path(), &spec);
    assert_eq!(outcome.result, TaskResult::Canceled);
    assert_eq!(
        step_results(&events),
        [TaskResult::Canceled, TaskResult::Canceled]
    );
}
