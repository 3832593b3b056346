//! Built-in tasks through a whole job: tool selection (never downloading), Cache@2 across two jobs, file and
//! archive tasks, artifacts with patterns, PowerShell without pwsh, deployment hook phases, and test results
//! published case by case.

use std::collections::BTreeMap;

use lockgate_runner::events::{Event, TaskResult, TestCase, TestOutcome};
use lockgate_runner::job::run_job;
use lockgate_runner::process::CancelSignal;
use lockgate_runner::spec::{PhaseSpec, StepAction, StepSpec};
use lockgate_runner::tasks::TaskRegistry;

use crate::helpers::{job, run, run_context, script, step_results};

fn task(name: &str, major: u32, inputs: &[(&str, &str)]) -> StepSpec {
    let mut step = script(None, "");
    step.display_name = format!("{name}@{major}");
    step.action = StepAction::Task {
        name: name.into(),
        major,
        inputs: inputs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect::<BTreeMap<_, _>>(),
    };
    step
}

fn python_version() -> Option<String> {
    let output = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.split_whitespace().nth(1).map(str::to_string)
}

#[test]
fn use_python_version_selects_an_installed_python_or_fails_clearly() {
    let Some(version) = python_version() else {
        panic!("these tests need python3 on PATH (Debian package python3)");
    };
    let major_minor: String = version.split('.').take(2).collect::<Vec<_>>().join(".");
    let dir = tempfile::tempdir().unwrap();
    let spec = job(
        vec![
            task(
                "UsePythonVersion",
                0,
                &[("versionSpec", &format!("{major_minor}.x"))],
            ),
            script(
                None,
                "echo \"location=$(pythonLocation)\"; python3 --version",
            ),
            task("UsePythonVersion", 0, &[("versionSpec", "2.1.x")]),
        ],
        vec![],
    );
    let (outcome, events, sink) = run(dir.path(), &spec);
    assert_eq!(
        step_results(&events),
        [
            TaskResult::Succeeded,
            TaskResult::Succeeded,
            TaskResult::Failed
        ]
    );
    assert_eq!(outcome.result, TaskResult::Failed);
    let lines = sink.log_lines();
    assert!(
        lines.iter().any(|l| l.starts_with("location=/")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains(&version)), "{lines:?}");
    let errors: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Issue { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect();
    assert!(
        errors
            .iter()
            .any(|m| m.contains("2.1.x") && m.contains("never downloads") && m.contains(&version)),
        "{errors:?}"
    );
}

#[test]
fn powershell_without_pwsh_is_a_clear_step_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut context_path = std::env::var("PATH").unwrap_or_default();
    // Keep only folders without pwsh, so the test means the same on every machine.
    context_path = std::env::split_paths(&context_path)
        .filter(|dir| !dir.join("pwsh").exists())
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let spec = job(
        vec![task(
            "PowerShell",
            2,
            &[("targetType", "inline"), ("script", "Write-Host hi")],
        )],
        vec![],
    );
    let mut context = run_context(dir.path());
    context.base_env = vec![("PATH".into(), context_path)];
    let sink = lockgate_runner::events::CollectingSink::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime.block_on(run_job(
        &context,
        &TaskRegistry::with_builtins(),
        &spec,
        &dir.path().join("work"),
        &sink,
        &CancelSignal::new(),
    ));
    assert_eq!(outcome.result, TaskResult::Failed);
    assert!(format!("{:?}", sink.snapshot()).contains("need `pwsh`"));
}

#[test]
fn cache_misses_then_hits_in_a_later_job() {
    let dir = tempfile::tempdir().unwrap();
    let context = run_context(dir.path());
    let registry = TaskRegistry::with_builtins();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache_step = task(
        "Cache",
        2,
        &[
            ("key", "deps | v1"),
            ("path", "deps"),
            ("cacheHitVar", "HIT"),
        ],
    );
    let first = job(
        vec![
            cache_step.clone(),
            script(
                None,
                "echo \"hit=$HIT\"; mkdir -p deps; echo cached-data > deps/file.txt",
            ),
        ],
        vec![],
    );
    let second = job(
        vec![
            cache_step,
            script(None, "echo \"hit=$HIT\"; cat deps/file.txt"),
        ],
        vec![],
    );
    let sink = lockgate_runner::events::CollectingSink::default();
    let cancel = CancelSignal::new();
    let one = runtime.block_on(run_job(
        &context,
        &registry,
        &first,
        &dir.path().join("w1"),
        &sink,
        &cancel,
    ));
    let two = runtime.block_on(run_job(
        &context,
        &registry,
        &second,
        &dir.path().join("w2"),
        &sink,
        &cancel,
    ));
    assert_eq!(
        (one.result, two.result),
        (TaskResult::Succeeded, TaskResult::Succeeded)
    );
    let lines = sink.log_lines();
    let hits: Vec<&String> = lines.iter().filter(|l| l.starts_with("hit=")).collect();
    assert_eq!(hits, ["hit=false", "hit=true"], "{lines:?}");
    assert!(lines.contains(&"cached-data".to_string()), "{lines:?}");
}

#[test]
fn copy_delete_archive_and_extract() {
    let dir = tempfile::tempdir().unwrap();
    let spec = job(
        vec![
            script(
                None,
                "mkdir -p src/sub && echo a > src/a.txt && echo b > src/sub/b.log && echo c > src/.hidden",
            ),
            task(
                "CopyFiles",
                2,
                &[
                    ("SourceFolder", "src"),
                    ("Contents", "**\n!**/*.log"),
                    ("TargetFolder", "copy"),
                ],
            ),
            task(
                "ArchiveFiles",
                2,
                &[
                    ("rootFolderOrFile", "src"),
                    ("includeRootFolder", "false"),
                    ("archiveFile", "out/src.zip"),
                ],
            ),
            task(
                "ArchiveFiles",
                2,
                &[
                    ("rootFolderOrFile", "src"),
                    ("archiveType", "tar"),
                    ("archiveFile", "out/src.tar.gz"),
                ],
            ),
            task(
                "ExtractFiles",
                1,
                &[
                    ("archiveFilePatterns", "out/*.zip"),
                    ("destinationFolder", "unzipped"),
                ],
            ),
            task(
                "ExtractFiles",
                1,
                &[
                    ("archiveFilePatterns", "out/*.tar.gz"),
                    ("destinationFolder", "untarred"),
                ],
            ),
            task(
                "DeleteFiles",
                1,
                &[("SourceFolder", "src"), ("Contents", "**/*.log")],
            ),
            script(None, "find copy unzipped untarred src -type f | sort"),
        ],
        vec![],
    );
    let (outcome, events, sink) = run(dir.path(), &spec);
    assert_eq!(outcome.result, TaskResult::Succeeded, "{events:?}");
    let lines = sink.log_lines();
    let listed: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| !l.contains(' ') && l.contains('/'))
        .collect();
    assert_eq!(
        listed,
        [
            "copy/.hidden",
            "copy/a.txt",
            "src/.hidden",
            "src/a.txt",
            "untarred/src/.hidden",
            "untarred/src/a.txt",
            "untarred/src/sub/b.log",
            "unzipped/.hidden",
            "unzipped/a.txt",
            "unzipped/sub/b.log",
        ],
        "{lines:?}"
    );
}

#[test]
fn artifacts_publish_and_download_with_patterns() {
    let dir = tempfile::tempdir().unwrap();
    let mut publish = script(None, "");
    publish.action = StepAction::Publish {
        path: "out".into(),
        artifact: Some("bundle".into()),
    };
    let mut download = script(None, "");
    download.action = StepAction::Download {
        source: "current".into(),
        inputs: BTreeMap::from([
            ("artifact".to_string(), "bundle".to_string()),
            ("patterns".to_string(), "**/*.txt".to_string()),
        ]),
    };
    let spec = job(
        vec![
            script(
                None,
                "mkdir -p out/docs && echo one > out/one.txt && echo two > out/docs/two.txt && echo bin > out/app.bin",
            ),
            publish.clone(),
            download,
            script(
                None,
                "cd $(Pipeline.Workspace)/bundle && find . -type f | sort",
            ),
            publish,
        ],
        vec![],
    );
    let (outcome, events, sink) = run(dir.path(), &spec);
    assert_eq!(
        step_results(&events).last(),
        Some(&TaskResult::Failed),
        "publishing the same name twice fails"
    );
    assert_eq!(outcome.result, TaskResult::Failed);
    let lines = sink.log_lines();
    assert!(
        lines.contains(&"./docs/two.txt".to_string()) && lines.contains(&"./one.txt".to_string()),
        "{lines:?}"
    );
    assert!(!lines.contains(&"./app.bin".to_string()), "{lines:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Artifact { name, files: 3, .. } if name == "bundle"))
    );
}

#[test]
fn deployment_hooks_run_in_order_and_publish_output_key_forms() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = job(vec![], vec![]);
    spec.environment = Some("staging".into());
    spec.strategy = Some("canary".into());
    let phase = |hook: &str, increment: Option<u32>, prefixes: Vec<String>, text: &str| PhaseSpec {
        hook: Some(hook.into()),
        increment,
        output_prefixes: prefixes,
        steps: vec![script(Some("s"), text)],
    };
    spec.phases = vec![
        phase(
            "preDeploy",
            None,
            vec!["preDeploy".into()],
            "echo \"pre cycle=$(Strategy.CycleName)\"",
        ),
        phase(
            "deploy",
            Some(10),
            vec!["deploy_10".into()],
            "echo \"deploy $(Strategy.Increment) env=$(Environment.Name)\"; echo '##vso[task.setvariable variable=v;isOutput=true]ten'",
        ),
        phase("on.failure", None, vec![], "echo failure-hook"),
        phase(
            "on.success",
            None,
            vec![],
            "echo \"success-hook cycle=$(Strategy.CycleName)\"",
        ),
    ];
    let (outcome, _, sink) = run(dir.path(), &spec);
    assert_eq!(outcome.result, TaskResult::Succeeded);
    let lines: Vec<String> = sink
        .log_lines()
        .into_iter()
        .filter(|l| !l.starts_with("##["))
        .collect();
    assert_eq!(
        lines,
        [
            "pre cycle=PreIteration",
            "deploy 10 env=staging",
            "success-hook cycle=PostIteration"
        ]
    );
    assert_eq!(
        outcome.outputs.get("deploy_10.s.v").map(String::as_str),
        Some("ten")
    );
    assert_eq!(outcome.outputs.get("s.v").map(String::as_str), Some("ten"));
}

#[test]
fn publish_test_results_reports_every_case() {
    let dir = tempfile::tempdir().unwrap();
    let spec = job(
        vec![
            script(
                None,
                "mkdir -p reports\n\
                 cat > reports/TEST-calc.xml <<'XML'\n\
                 <testsuites><testsuite name=\"calc\" tests=\"3\">\n\
                 <testcase classname=\"calc.Adding\" name=\"adds\" time=\"0.012\"/>\n\
                 <testcase classname=\"calc.Dividing\" name=\"divides by zero\" time=\"1.5\">\n\
                 <failure message=\"expected Err, got Ok(0)\" type=\"assert\">at calc::divide (src/lib.rs:9)</failure>\n\
                 </testcase>\n\
                 <testcase name=\"rounds\" time=\"0\"><skipped message=\"flaky\"/></testcase>\n\
                 </testsuite></testsuites>\n\
                 XML",
            ),
            task(
                "PublishTestResults",
                2,
                &[
                    ("testResultsFormat", "JUnit"),
                    ("testResultsFiles", "**/TEST-*.xml"),
                ],
            ),
        ],
        vec![],
    );
    let (outcome, events, sink) = run(dir.path(), &spec);
    assert_eq!(
        outcome.result,
        TaskResult::Succeeded,
        "{:?}",
        sink.log_lines()
    );
    let results: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::TestResults {
                passed,
                failed,
                skipped,
                cases,
                ..
            } => Some(((*passed, *failed, *skipped), cases.clone())),
            _ => None,
        })
        .collect();
    let case = |suite: &str, name: &str, outcome, duration_ms, message: &str| TestCase {
        suite: suite.into(),
        name: name.into(),
        outcome,
        duration_ms,
        message: message.into(),
    };
    assert_eq!(
        results,
        [(
            (1, 1, 1),
            vec![
                case(
                    "calc.Dividing",
                    "divides by zero",
                    TestOutcome::Failed,
                    1500,
                    "expected Err, got Ok(0)\nat calc::divide (src/lib.rs:9)"
                ),
                case("calc.Adding", "adds", TestOutcome::Passed, 12, ""),
                case("calc", "rounds", TestOutcome::Skipped, 0, "flaky"),
            ]
        )]
    );
    assert!(
        sink.log_lines()
            .iter()
            .any(|l| l.contains("failed: calc.Dividing.divides by zero")),
        "{:?}",
        sink.log_lines()
    );
}

/// Every path by which a text leaves a job is masked: step names, log lines, a secret straddling the
/// 64 KiB line split, the build number, progress, artifact names, test case names and messages,
/// issues and variables.
#[test]
fn a_secret_is_masked_on_every_path_out_of_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let secret_value = "s3cr3t-Value-42";
    let mut secret = lockgate_runner::spec::InitialVariable::new("pw", secret_value);
    secret.secret = true;
    // 65,530 bytes of padding put the secret across the 65,536-byte split.
    let mut named = script(
        None,
        "head -c 65530 /dev/zero | tr '\\0' x; echo \"$(pw)-tail\"\n\
         echo '##vso[build.updatebuildnumber]1.0-$(pw)'\n\
         echo '##vso[task.setprogress value=50]at $(pw)'\n\
         echo '##vso[task.logissue type=warning]issue $(pw)'\n\
         echo '##vso[task.setvariable variable=plain]v-$(pw)'\n\
         mkdir -p out reports && echo data > out/f.txt\n\
         cat > reports/TEST-s.xml <<XML\n\
         <testsuites><testsuite name=\"suite-$(pw)\" tests=\"1\">\n\
         <testcase classname=\"c-$(pw)\" name=\"case-$(pw)\"><failure message=\"got $(pw)\">trace $(pw)</failure></testcase>\n\
         </testsuite></testsuites>\n\
         XML",
    );
    named.display_name = "step $(pw)".into();
    let spec = job(
        vec![
            named,
            task(
                "PublishTestResults",
                2,
                &[
                    ("testResultsFormat", "JUnit"),
                    ("testResultsFiles", "**/TEST-*.xml"),
                ],
            ),
            task(
                "PublishPipelineArtifact",
                1,
                &[("targetPath", "out"), ("artifact", "art-$(pw)")],
            ),
        ],
        vec![secret],
    );
    let (_, events, sink) = run(dir.path(), &spec);
    let everything = format!("{events:?}");
    assert!(
        !everything.contains(secret_value),
        "the secret leaked: {}",
        everything.replace(&"x".repeat(1000), "")
    );
    let lines = sink.log_lines();
    // The masked line is 65,538 bytes: it is still cut, after the mask.
    let first = lines
        .iter()
        .position(|line| line.starts_with("xxx"))
        .unwrap();
    assert_eq!(lines[first].len(), 65536);
    let joined = format!("{}{}", lines[first], lines[first + 1]);
    assert!(
        joined.ends_with("***-tail"),
        "{}",
        &joined[joined.len() - 40..]
    );
    let tail = everything.replace(&"x".repeat(1000), "");
    // A name holding a secret is refused (`*` is not allowed in names), with the masked name.
    assert!(
        everything.contains("publishing artifact `art-***`"),
        "artifact: {tail}"
    );
    assert!(everything.contains("case-***"), "test case name: {tail}");
    assert!(everything.contains("build_number: \"1.0-***\""), "{tail}");
}

/// PublishTestResults@2 with nothing matching warns and stays Succeeded (as the task's source does);
/// with failTaskOnMissingResultsFile it fails.
#[test]
fn publish_test_results_without_files_warns_and_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let spec = job(
        vec![
            task(
                "PublishTestResults",
                2,
                &[("testResultsFiles", "**/TEST-none-*.xml")],
            ),
            task(
                "PublishTestResults",
                2,
                &[
                    ("testResultsFiles", "**/TEST-none-*.xml"),
                    ("failTaskOnMissingResultsFile", "true"),
                ],
            ),
        ],
        vec![],
    );
    let (_, events, _) = run(dir.path(), &spec);
    assert_eq!(
        step_results(&events),
        [TaskResult::Succeeded, TaskResult::Failed]
    );
    let warnings = events
        .iter()
        .filter(|e| {
            matches!(e, Event::Issue { message, .. } if message.contains("no test result files matching `**/TEST-none-*.xml`"))
        })
        .count();
    assert_eq!(warnings, 2, "{events:?}");
}
