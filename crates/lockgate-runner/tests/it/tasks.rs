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

fn tool_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "x86" => "x86",
        "arm" => "arm",
        _ => "x64",
    }
}

/// Writes an executable shell script.
fn write_program(path: &std::path::Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A tool-cache version folder `<root>/<tool>/<version>/<arch>`, with the `<arch>.complete` marker
/// when `complete`.
fn cached_tool(
    root: &std::path::Path,
    tool: &str,
    version: &str,
    complete: bool,
) -> std::path::PathBuf {
    let dir = root.join(tool).join(version).join(tool_arch());
    std::fs::create_dir_all(&dir).unwrap();
    if complete {
        std::fs::write(
            root.join(tool)
                .join(version)
                .join(format!("{}.complete", tool_arch())),
            "",
        )
        .unwrap();
    }
    dir
}

fn issues(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Issue { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// Runs `spec` with `base_env` as the environment steps start from.
fn run_with_env(
    dir: &std::path::Path,
    spec: &lockgate_runner::spec::JobSpec,
    base_env: Vec<(String, String)>,
) -> (Vec<Event>, Vec<String>) {
    let mut context = run_context(dir);
    context.base_env = base_env;
    let sink = lockgate_runner::events::CollectingSink::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run_job(
        &context,
        &TaskRegistry::with_builtins(),
        spec,
        &dir.join("work"),
        &sink,
        &CancelSignal::new(),
    ));
    (sink.snapshot(), sink.log_lines())
}

fn path_env() -> (String, String) {
    ("PATH".into(), std::env::var("PATH").unwrap_or_default())
}

/// GoTool@0 takes the newest complete matching version from `$AGENT_TOOLSDIRECTORY/go/<v>/<arch>`
/// (an incomplete newer one is ignored), puts its bin first on PATH and sets GOROOT/GOPATH; a version
/// found nowhere fails the step naming where it looked.
#[test]
fn go_tool_uses_the_tool_cache_and_fails_clearly_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("hostedtoolcache");
    let good = cached_tool(&cache, "go", "1.21.5", true);
    write_program(&good.join("bin/go"), "echo \"fake go 1.21.5 $*\"");
    let incomplete = cached_tool(&cache, "go", "1.21.9", false);
    write_program(&incomplete.join("bin/go"), "echo \"incomplete go\"");
    let spec = job(
        vec![
            task(
                "GoTool",
                0,
                &[("version", "1.21"), ("goPath", "/tmp/gopath")],
            ),
            script(None, "go build ./...; echo \"root=$GOROOT path=$GOPATH\""),
            task("GoTool", 0, &[("version", "1.99.1")]),
        ],
        vec![],
    );
    let env = vec![
        path_env(),
        ("AGENT_TOOLSDIRECTORY".into(), cache.display().to_string()),
    ];
    let (events, lines) = run_with_env(dir.path(), &spec, env);
    assert_eq!(
        step_results(&events),
        [
            TaskResult::Succeeded,
            TaskResult::Succeeded,
            TaskResult::Failed
        ],
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l == "fake go 1.21.5 build ./..."),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("root={} path=/tmp/gopath", good.display())),
        "{lines:?}"
    );
    let errors = issues(&events);
    assert!(
        errors.iter().any(|m| m.contains("no go matching `1.99.1`")
            && m.contains(&format!("{}/go/<version>/{}", cache.display(), tool_arch()))
            && m.contains("never downloads")),
        "{errors:?}"
    );
}

/// UsePythonVersion@0 with `pypy3` looks in the `PyPy` tool-cache folder; a `Python` version folder
/// without its `.complete` marker is not used.
#[test]
fn use_python_version_finds_pypy_and_python_in_the_tool_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("toolcache");
    let pypy = cached_tool(&cache, "PyPy", "3.9.18", true);
    write_program(
        &pypy.join("bin/pypy3"),
        "if [ \"$1\" = -c ]; then echo 3.9.18; echo \"$0\"; else echo \"fake pypy $*\"; fi",
    );
    let python = cached_tool(&cache, "Python", "3.77.1", false);
    write_program(&python.join("bin/python3"), "echo 3.77.1; echo \"$0\"");
    let spec = job(
        vec![
            task("UsePythonVersion", 0, &[("versionSpec", "pypy3")]),
            script(None, "pypy3 hello.py; echo \"location=$(pythonLocation)\""),
            task("UsePythonVersion", 0, &[("versionSpec", "3.77")]),
        ],
        vec![],
    );
    let env = vec![
        path_env(),
        ("AGENT_TOOLSDIRECTORY".into(), cache.display().to_string()),
    ];
    let (events, lines) = run_with_env(dir.path(), &spec, env);
    assert_eq!(
        step_results(&events),
        [
            TaskResult::Succeeded,
            TaskResult::Succeeded,
            TaskResult::Failed
        ],
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l == "fake pypy hello.py"), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("location={}", pypy.display())),
        "{lines:?}"
    );
    assert!(
        issues(&events)
            .iter()
            .any(|m| m.contains("no installed Python matches `3.77`")),
        "{:?}",
        issues(&events)
    );
}

/// JavaToolInstaller@0 (PreInstalled) takes JAVA_HOME_<v>_X64, sets JAVA_HOME and puts its bin first;
/// a version with no variable and nothing in the tool cache fails clearly.
#[test]
fn java_tool_installer_uses_the_preinstalled_jdk_variable() {
    let dir = tempfile::tempdir().unwrap();
    let jdk = dir.path().join("jdk-17");
    write_program(&jdk.join("bin/java"), "echo \"fake java $*\"");
    let spec = job(
        vec![
            task(
                "JavaToolInstaller",
                0,
                &[
                    ("versionSpec", "17"),
                    ("jdkArchitectureOption", "x64"),
                    ("jdkSourceOption", "PreInstalled"),
                ],
            ),
            script(None, "java -version; echo \"home=$JAVA_HOME\""),
            task(
                "JavaToolInstaller",
                0,
                &[("versionSpec", "5"), ("jdkSourceOption", "PreInstalled")],
            ),
        ],
        vec![lockgate_runner::spec::InitialVariable::new(
            "JAVA_HOME_17_X64",
            jdk.display().to_string(),
        )],
    );
    let (events, lines) = run_with_env(dir.path(), &spec, vec![path_env()]);
    assert_eq!(
        step_results(&events),
        [
            TaskResult::Succeeded,
            TaskResult::Succeeded,
            TaskResult::Failed
        ],
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l == "fake java -version"), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("home={}", jdk.display())),
        "{lines:?}"
    );
    assert!(
        issues(&events)
            .iter()
            .any(|m| m.contains("JAVA_HOME_5_X64 is not set")),
        "{:?}",
        issues(&events)
    );
}

/// NuGetToolInstaller@1 finds nuget in the tool cache; without nuget anywhere it fails clearly.
#[test]
fn nuget_tool_installer_finds_nuget_or_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("toolcache");
    let nuget = cached_tool(&cache, "NuGet", "6.8.0", true);
    write_program(&nuget.join("nuget"), "echo \"fake nuget $*\"");
    let without_nuget: String = std::env::split_paths(&std::env::var("PATH").unwrap_or_default())
        .filter(|d| !d.join("nuget").exists())
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let spec = job(
        vec![
            task("NuGetToolInstaller", 1, &[("versionSpec", "6.x")]),
            script(None, "nuget restore"),
        ],
        vec![],
    );
    let env = vec![
        ("PATH".into(), without_nuget.clone()),
        ("AGENT_TOOLSDIRECTORY".into(), cache.display().to_string()),
    ];
    let (events, lines) = run_with_env(dir.path(), &spec, env);
    assert_eq!(
        step_results(&events),
        [TaskResult::Succeeded, TaskResult::Succeeded],
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l == "fake nuget restore"), "{lines:?}");

    let other = tempfile::tempdir().unwrap();
    let spec = job(vec![task("NuGetToolInstaller", 1, &[])], vec![]);
    let (events, _) = run_with_env(other.path(), &spec, vec![("PATH".into(), without_nuget)]);
    assert_eq!(step_results(&events), [TaskResult::Failed]);
    assert!(
        issues(&events)
            .iter()
            .any(|m| m.contains("no NuGet matching `*`") && m.contains("never downloads")),
        "{:?}",
        issues(&events)
    );
}

/// PATH without any folder holding one of `programs`, with `extra` first.
fn path_without(programs: &[&str], extra: Option<&std::path::Path>) -> (String, String) {
    let current = std::env::var("PATH").unwrap_or_default();
    let kept = std::env::split_paths(&current)
        .filter(|d| !programs.iter().any(|p| d.join(p).exists()))
        .map(|d| d.display().to_string());
    let path: Vec<String> = extra
        .map(|e| e.display().to_string())
        .into_iter()
        .chain(kept)
        .collect();
    ("PATH".into(), path.join(":"))
}

/// Npm@1 runs the real npm: a custom command in workingDir; an unknown command fails clearly.
#[test]
fn npm_runs_custom_commands_in_the_working_folder() {
    let dir = tempfile::tempdir().unwrap();
    let spec = job(
        vec![
            script(
                None,
                "mkdir -p web && printf '%s' '{\"name\":\"demo\",\"version\":\"1.0.0\",\"scripts\":{\"hello\":\"echo npm-hello-$npm_package_name in $(basename $PWD)\"}}' > web/package.json",
            ),
            task(
                "Npm",
                1,
                &[
                    ("command", "custom"),
                    ("customCommand", "run hello"),
                    ("workingDir", "web"),
                ],
            ),
            task("Npm", 1, &[("command", "frobnicate")]),
        ],
        vec![],
    );
    let (events, lines) = run_with_env(dir.path(), &spec, vec![path_env()]);
    assert_eq!(
        step_results(&events),
        [
            TaskResult::Succeeded,
            TaskResult::Succeeded,
            TaskResult::Failed
        ],
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l == "npm-hello-demo in web"),
        "{lines:?}"
    );
    assert!(
        issues(&events)
            .iter()
            .any(|m| m.contains("Npm@1 command must be install, ci, publish or custom")),
        "{:?}",
        issues(&events)
    );
}

/// PythonScript@0 runs inline scripts and files with arguments through the real python; a failing
/// script fails the step.
#[test]
fn python_script_runs_inline_and_file_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let spec = job(
        vec![
            task(
                "PythonScript",
                0,
                &[
                    ("scriptSource", "inline"),
                    ("script", "import sys\nprint('inline args', sys.argv[1:])"),
                    ("arguments", "one 'two words'"),
                ],
            ),
            script(
                None,
                "mkdir -p tools && printf 'import os\\nprint(\"file in\", os.path.basename(os.getcwd()))\\n' > tools/run.py",
            ),
            task(
                "PythonScript",
                0,
                &[
                    ("scriptPath", "tools/run.py"),
                    ("workingDirectory", "tools"),
                    ("pythonInterpreter", "python3"),
                ],
            ),
            task(
                "PythonScript",
                0,
                &[
                    ("scriptSource", "inline"),
                    ("script", "raise SystemExit(3)"),
                ],
            ),
        ],
        vec![],
    );
    let (events, lines) = run_with_env(dir.path(), &spec, vec![path_env()]);
    assert_eq!(
        step_results(&events),
        [
            TaskResult::Succeeded,
            TaskResult::Succeeded,
            TaskResult::Succeeded,
            TaskResult::Failed
        ],
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "inline args ['one', 'two words']"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l == "file in tools"), "{lines:?}");
    assert!(
        issues(&events)
            .iter()
            .any(|m| m.contains("exited with code '3'")),
        "{:?}",
        issues(&events)
    );
}

/// CMake@1 creates its working folder (default `build`) and runs cmake there with cmakeArgs; without
/// cmake the step fails saying it is not installed.
#[test]
fn cmake_creates_its_folder_and_runs_cmake_or_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("fakebin");
    write_program(&bin.join("cmake"), "echo \"cmake $* in $(basename $PWD)\"");
    let spec = job(
        vec![task(
            "CMake",
            1,
            &[("cmakeArgs", "-DCMAKE_BUILD_TYPE=Release ..")],
        )],
        vec![],
    );
    let (events, lines) = run_with_env(
        dir.path(),
        &spec,
        vec![path_without(&["cmake"], Some(&bin))],
    );
    assert_eq!(step_results(&events), [TaskResult::Succeeded], "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l == "cmake -DCMAKE_BUILD_TYPE=Release .. in build"),
        "{lines:?}"
    );

    let other = tempfile::tempdir().unwrap();
    let (events, _) = run_with_env(other.path(), &spec, vec![path_without(&["cmake"], None)]);
    assert_eq!(step_results(&events), [TaskResult::Failed]);
    assert!(other.path().join("work/s/build").is_dir());
    assert!(
        issues(&events)
            .iter()
            .any(|m| m.contains("cmake is not installed")),
        "{:?}",
        issues(&events)
    );
}

/// DotNetCoreCLI@2 runs `dotnet <command> <project> <arguments>` once per matching project; without
/// dotnet the step fails saying it is not installed.
#[test]
fn dotnet_core_cli_runs_per_project_or_says_dotnet_is_not_installed() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("fakebin");
    write_program(
        &bin.join("dotnet"),
        "echo \"dotnet $*\" | sed \"s|$PWD/||\"",
    );
    let spec = job(
        vec![
            script(
                None,
                "mkdir -p src/A tests/B && touch src/A/A.csproj tests/B/B.csproj",
            ),
            task(
                "DotNetCoreCLI",
                2,
                &[
                    ("command", "test"),
                    ("projects", "**/*.csproj\n!src/**"),
                    ("arguments", "-c Release"),
                ],
            ),
            task("DotNetCoreCLI", 2, &[("projects", "**/*.fsproj")]),
        ],
        vec![],
    );
    let (events, lines) = run_with_env(
        dir.path(),
        &spec,
        vec![path_without(&["dotnet"], Some(&bin))],
    );
    assert_eq!(
        step_results(&events),
        [
            TaskResult::Succeeded,
            TaskResult::Succeeded,
            TaskResult::Failed
        ],
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "dotnet test tests/B/B.csproj -c Release"),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("A.csproj -c")),
        "{lines:?}"
    );
    assert!(
        issues(&events)
            .iter()
            .any(|m| m.contains("no project file matches `**/*.fsproj`")),
        "{:?}",
        issues(&events)
    );

    let other = tempfile::tempdir().unwrap();
    let spec = job(
        vec![task("DotNetCoreCLI", 2, &[("command", "build")])],
        vec![],
    );
    let (events, _) = run_with_env(other.path(), &spec, vec![path_without(&["dotnet"], None)]);
    assert_eq!(step_results(&events), [TaskResult::Failed]);
    assert!(
        issues(&events)
            .iter()
            .any(|m| m.contains("dotnet is not installed")),
        "{:?}",
        issues(&events)
    );
}

/// Docker@2 buildAndPush builds the matching Dockerfile with every tag and pushes each; without docker
/// the step fails saying it is not installed.
#[test]
fn docker_builds_and_pushes_or_says_docker_is_not_installed() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("fakebin");
    write_program(
        &bin.join("docker"),
        "echo \"docker $*\" | sed \"s|$PWD/||g\"",
    );
    let spec = job(
        vec![
            script(None, "mkdir -p app && echo 'FROM scratch' > app/Dockerfile"),
            task(
                "Docker",
                2,
                &[
                    ("repository", "me/app"),
                    ("tags", "1.0\nlatest"),
                    ("Dockerfile", "**/Dockerfile"),
                ],
            ),
            task(
                "Docker",
                2,
                &[("command", "login"), ("containerRegistry", "hub")],
            ),
        ],
        vec![],
    );
    let (events, lines) = run_with_env(
        dir.path(),
        &spec,
        vec![path_without(&["docker"], Some(&bin))],
    );
    assert_eq!(
        step_results(&events),
        [
            TaskResult::Succeeded,
            TaskResult::Succeeded,
            TaskResult::Failed
        ],
        "{lines:?}"
    );
    for expected in [
        "docker build -f app/Dockerfile -t me/app:1.0 -t me/app:latest app",
        "docker push me/app:1.0",
        "docker push me/app:latest",
    ] {
        assert!(lines.iter().any(|l| l == expected), "{expected}: {lines:?}");
    }
    assert!(
        issues(&events)
            .iter()
            .any(|m| m.contains("service connection `hub`")),
        "{:?}",
        issues(&events)
    );

    let other = tempfile::tempdir().unwrap();
    let spec = job(vec![task("Docker", 2, &[("command", "build")])], vec![]);
    let (events, _) = run_with_env(other.path(), &spec, vec![path_without(&["docker"], None)]);
    assert_eq!(step_results(&events), [TaskResult::Failed]);
    assert!(
        issues(&events)
            .iter()
            .any(|m| m.contains("docker is not installed")),
        "{:?}",
        issues(&events)
    );
}

/// UseDotNet@2 also finds a .NET SDK in the tool cache (`dotnet/<v>/<arch>`).
#[test]
fn use_dotnet_finds_an_sdk_in_the_tool_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("toolcache");
    let sdk = cached_tool(&cache, "dotnet", "8.0.100", true);
    write_program(
        &sdk.join("dotnet"),
        "if [ \"$1\" = --list-sdks ]; then echo \"8.0.100 [$(dirname $0)/sdk]\"; else echo \"fake dotnet $*\"; fi",
    );
    let spec = job(
        vec![
            task("UseDotNet", 2, &[("version", "8.0.x")]),
            script(None, "dotnet --info; echo \"root=$DOTNET_ROOT\""),
        ],
        vec![],
    );
    let env = vec![
        path_without(&["dotnet"], None),
        ("AGENT_TOOLSDIRECTORY".into(), cache.display().to_string()),
    ];
    let (events, lines) = run_with_env(dir.path(), &spec, env);
    assert_eq!(
        step_results(&events),
        [TaskResult::Succeeded, TaskResult::Succeeded],
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l == "fake dotnet --info"), "{lines:?}");
    let real = sdk.canonicalize().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("root={}", real.display())),
        "{lines:?}"
    );
}

/// Macro-expanded script files hold secrets: each is removed when its step ends, whether the step
/// succeeded or failed, so after the job no file under its folder holds the secret.
#[test]
fn script_files_holding_a_secret_are_removed_when_their_step_ends() {
    let dir = tempfile::tempdir().unwrap();
    let secret_value = "scr1pt-S3cret-77";
    let mut secret = lockgate_runner::spec::InitialVariable::new("pw", secret_value);
    secret.secret = true;
    let mut failing = script(None, "echo \"$(pw)\" > /dev/null; exit 3");
    failing.continue_on_error = true;
    // The last step looks for the earlier steps' scripts while the job still runs.
    let mut checker = script(
        None,
        "if grep -rqF -- \"$NEEDLE\" \"$(Agent.TempDirectory)\"; then echo leftover; else echo clean; fi",
    );
    checker.env.insert("NEEDLE".into(), secret_value.into());
    let spec = job(
        vec![
            script(None, "test -n \"$(pw)\" && echo used"),
            failing,
            checker,
        ],
        vec![secret],
    );
    let (_, _, sink) = run(dir.path(), &spec);
    let lines = sink.log_lines();
    assert!(lines.iter().any(|l| l == "used"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "clean"), "{lines:?}");
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap_or_default();
                assert!(
                    !bytes
                        .windows(secret_value.len())
                        .any(|w| w == secret_value.as_bytes()),
                    "{} holds the secret",
                    path.display()
                );
            }
        }
    }
}
