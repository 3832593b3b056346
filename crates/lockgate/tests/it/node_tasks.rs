//! Task packages written against the real `azure-pipelines-task-lib` from npm: `lockgate run --tasks DIR`
//! runs them by name or id, with inputs, defaults, aliases and secrets as the agent passes them, and the
//! task's `##vso` output (setvariable, task.complete) deciding the step.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run::{Project, text};

/// The id of the test task.
pub(crate) const GREET_ID: &str = "6f1c2d3e-4a5b-4c6d-8e9f-a0b1c2d3e4f5";

/// A `node_modules` folder holding `azure-pipelines-task-lib`, installed with npm once per target folder.
fn task_lib_modules() -> PathBuf {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("azure-pipelines-task-lib");
    let modules = cache.join("node_modules");
    if modules.join("azure-pipelines-task-lib/task.js").is_file() {
        return modules;
    }
    std::fs::create_dir_all(Path::new(env!("CARGO_TARGET_TMPDIR"))).unwrap();
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::write(
        scratch.path().join("package.json"),
        r#"{"name": "lockgate-test-task", "version": "1.0.0", "private": true}"#,
    )
    .unwrap();
    let output = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--silent",
            "azure-pipelines-task-lib",
        ])
        .current_dir(scratch.path())
        .output()
        .expect("npm must be installed for the task package tests (.ci/run installs it)");
    assert!(
        output.status.success(),
        "npm install azure-pipelines-task-lib failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Another test may have finished first; either copy works.
    if std::fs::rename(scratch.path(), &cache).is_err() {
        assert!(modules.join("azure-pipelines-task-lib/task.js").is_file());
    } else {
        // The folder now lives at `cache`; keep TempDir from deleting the new location's old name.
        std::mem::forget(scratch);
    }
    modules
}

/// Writes the `Greet` task (task.json with a Node20_1 and a Node16 handler, index.js using the real
/// task library) into `root/Greet`, with `handlers` as its `execution` object when given.
pub(crate) fn write_greet_task(root: &Path, handlers: Option<&str>) -> PathBuf {
    let dir = root.join("Greet");
    std::fs::create_dir_all(&dir).unwrap();
    let execution = handlers
        .unwrap_or(r#"{"Node16": {"target": "old.js"}, "Node20_1": {"target": "index.js"}}"#);
    std::fs::write(
        dir.join("task.json"),
        format!(
            r#"{{
  "id": "{GREET_ID}",
  "name": "Greet",
  "friendlyName": "Greet someone",
  "version": {{"Major": 1, "Minor": 4, "Patch": 2}},
  "instanceNameFormat": "Greet $(who)",
  "inputs": [
    {{"name": "who", "type": "string", "label": "Who", "aliases": ["person"], "defaultValue": "world", "required": true}},
    {{"name": "mode", "type": "pickList", "label": "Mode", "defaultValue": "greet"}}
  ],
  "execution": {execution}
}}"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("index.js"),
        r#"const tl = require('azure-pipelines-task-lib/task');
try {
  const who = tl.getInput('who', true);
  const mode = tl.getInput('mode', false);
  console.log('Hello ' + who + ' from handler Node20_1');
  console.log('temp dir set: ' + (tl.getVariable('Agent.TempDirectory') ? 'yes' : 'no'));
  console.log('sources: ' + tl.getVariable('Build.SourcesDirectory'));
  console.log('token: [' + (tl.getVariable('api.token') || '') + ']');
  if (mode === 'fail') {
    tl.setResult(tl.TaskResult.Failed, 'asked to fail for ' + who);
  } else {
    tl.setVariable('greeting', 'hello-' + who);
    tl.setResult(tl.TaskResult.Succeeded, 'greeted ' + who);
  }
} catch (err) {
  tl.setResult(tl.TaskResult.Failed, err.message);
}
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("old.js"),
        "console.log('the Node16 handler ran instead of Node20_1'); process.exit(3);\n",
    )
    .unwrap();
    let modules = task_lib_modules();
    let status = Command::new("cp")
        .arg("-a")
        .arg(&modules)
        .arg(dir.join("node_modules"))
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

#[test]
fn a_node_task_package_reads_inputs_sets_variables_and_fails_its_step() {
    let project = Project::new(&format!(
        r#"
variables:
- group: credentials
steps:
- task: Greet@1
  inputs:
    person: lockgate
- script: echo "later step sees greeting=$(greeting)"
- task: Greet@1
  displayName: with defaults
- task: {GREET_ID}@1
  displayName: by id
  inputs:
    who: by-id
    mode: fail
- script: echo "this step must not run"
  displayName: last step
"#
    ));
    let tasks = tempfile::tempdir().unwrap();
    write_greet_task(tasks.path(), None);
    let group = project.path().join("credentials.json");
    std::fs::write(
        &group,
        r#"{"api.token": {"value": "n0de-s3cret", "isSecret": true}}"#,
    )
    .unwrap();
    let group_arg = format!("credentials={}", group.display());
    let tasks_arg = tasks.path().display().to_string();
    let output = project.run(&["--tasks", &tasks_arg, "--var-group", &group_arg]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("Hello lockgate from handler Node20_1"),
        "{all}"
    );
    assert!(all.contains("temp dir set: yes"), "{all}");
    assert!(
        all.contains("later step sees greeting=hello-lockgate"),
        "{all}"
    );
    assert!(all.contains("Hello world from handler Node20_1"), "{all}");
    assert!(all.contains("Hello by-id"), "{all}");
    assert!(all.contains("asked to fail for by-id"), "{all}");
    // The secret reached the task (through SECRET_API_TOKEN) and was masked.
    assert!(all.contains("token: [***]"), "{all}");
    assert!(!all.contains("n0de-s3cret"), "{all}");
    assert!(!all.contains("Node16 handler ran"), "{all}");
    assert!(!all.contains("this step must not run"), "{all}");
    assert!(all.contains("last step: Skipped"), "{all}");
    assert!(
        all.lines()
            .any(|l| l.contains("sources: /") && l.trim_end().ends_with("/s")),
        "Build.SourcesDirectory reaches the task: {all}"
    );
}

#[test]
fn a_task_package_without_a_usable_node_fails_its_step_naming_the_handler() {
    let project = Project::new(
        r#"
steps:
- checkout: none
- task: Greet@1
- script: echo "after the task"
  condition: always()
"#,
    );
    let tasks = tempfile::tempdir().unwrap();
    write_greet_task(
        tasks.path(),
        Some(r#"{"Node20_1": {"target": "index.js"}}"#),
    );
    // A `node` that is too old comes first on PATH.
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("node");
    std::fs::write(&fake, "#!/bin/sh\necho v18.19.0\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let tasks_arg = tasks.path().display().to_string();
    let output = project
        .command(&["--tasks", &tasks_arg])
        .env("PATH", &path)
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("needs the handler Node20_1 (Node.js 20 or newer)")
            && all.contains("v18.19.0"),
        "{all}"
    );
    assert!(all.contains("after the task"), "{all}");

    // No `node` at all: the step says so (PATH holds only what the run itself needs).
    let bare = tempfile::tempdir().unwrap();
    for tool in ["bash", "sh", "git"] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join(tool))
            .find(|candidate| candidate.is_file())
            .unwrap_or_else(|| panic!("{tool} is not on PATH"));
        std::os::unix::fs::symlink(found, bare.path().join(tool)).unwrap();
    }
    let output = project
        .command(&["--tasks", &tasks_arg])
        .env("PATH", bare.path())
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("needs Node.js for its handler Node20_1 (Node.js 20 or newer), but `node` was not found on PATH"),
        "{all}"
    );
    assert!(all.contains("after the task"), "{all}");
}

#[test]
fn an_invalid_task_json_is_a_usage_error_naming_the_field() {
    let project = Project::new("steps:\n- script: echo hi\n");
    let tasks = tempfile::tempdir().unwrap();
    let dir = tasks.path().join("Broken");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("task.json"),
        r#"{"id": "x", "name": "Broken", "version": {"Major": 1, "Minor": 0}, "execution": {"Node20_1": {"target": "a.js"}}}"#,
    )
    .unwrap();
    let tasks_arg = tasks.path().display().to_string();
    let output = project.run(&["--tasks", &tasks_arg]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(2), "{all}");
    assert!(all.contains("task.json: version.Patch: missing"), "{all}");
}

#[test]
fn an_uploaded_task_package_runs_on_the_servers_agents() {
    let dir = tempfile::tempdir().unwrap();
    let up = crate::server::start_server_with_env(
        dir.path(),
        &["up", "--port", "0", "--no-demo", "--agents", "1"],
        &[],
    );
    let cli = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--server", up.url.as_str(), "--token", up.token.as_str()]);
        crate::cli::lockgate(dir.path(), &all)
    };
    let tasks = tempfile::tempdir().unwrap();
    let greet = write_greet_task(tasks.path(), None);
    let greet_arg = greet.display().to_string();
    let uploaded = cli(&["tasks", "upload", &greet_arg]);
    assert_eq!(uploaded.status.code(), Some(0), "{}", text(&uploaded));
    assert!(
        text(&uploaded).contains("Uploaded Greet@1.4.2"),
        "{}",
        text(&uploaded)
    );
    let listed = text(&cli(&["tasks", "list"]));
    assert!(
        listed.contains(&format!("{GREET_ID}  Greet@1.4.2")),
        "{listed}"
    );
    // The same version again is refused unless --overwrite says so.
    let again = cli(&["tasks", "upload", &greet_arg]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(text(&again).contains("already stored"), "{}", text(&again));
    let overwrite = cli(&["tasks", "upload", &greet_arg, "--overwrite"]);
    assert_eq!(overwrite.status.code(), Some(0), "{}", text(&overwrite));
    // A broken task.json is refused before anything is sent, naming the field.
    let broken = tasks.path().join("Broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("task.json"),
        r#"{"id": "b", "name": "Broken", "version": {"Major": 1, "Minor": 0}, "execution": {"Node20_1": {"target": "a.js"}}}"#,
    )
    .unwrap();
    let refused = cli(&["tasks", "upload", &broken.display().to_string()]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("version.Patch: missing"),
        "{}",
        text(&refused)
    );

    let api = crate::sandbox::push_pipeline(
        dir.path(),
        &up,
        r#"
steps:
- checkout: none
- task: Greet@1
  inputs:
    person: server
- script: echo "later step sees greeting=$(greeting)"
- task: Greet@1
  displayName: told to fail
  inputs:
    who: by-id
    mode: fail
- script: echo "this step must not run"
  displayName: last step
"#,
    );
    let run = crate::sandbox::completed_run(&api);
    let logs = api
        .get_text(&format!("/api/v1/runs/{}/logs", run.id))
        .unwrap();
    assert_eq!(run.result.as_deref(), Some("failed"), "{logs}");
    assert!(logs.contains("Downloaded task Greet@1.4.2"), "{logs}");
    assert!(
        logs.contains("Hello server from handler Node20_1"),
        "{logs}"
    );
    assert!(
        logs.contains("later step sees greeting=hello-server"),
        "{logs}"
    );
    assert!(logs.contains("asked to fail for by-id"), "{logs}");
    assert!(!logs.contains("this step must not run"), "{logs}");
    let detail: lockgate_protocol::api::RunDetail =
        api.get_json(&format!("/api/v1/runs/{}", run.id)).unwrap();
    let steps: Vec<(String, Option<String>)> = detail.jobs[0]
        .steps
        .iter()
        .map(|step| (step.name.clone(), step.result.clone()))
        .collect();
    assert!(
        steps.contains(&("told to fail".into(), Some("failed".into()))),
        "{steps:?}"
    );
}
