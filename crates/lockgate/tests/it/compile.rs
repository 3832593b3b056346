//! End-to-end tests of `lockgate validate` and `lockgate plan` (compile.rs of the binary): exit
//! codes, rendered diagnostics, `--root` from Git, `--param`, `--repo` and both plan formats.

use std::path::Path;
use std::process::Command;

use crate::cli::lockgate;

fn write(dir: &Path, path: &str, text: &str) {
    let file = dir.join(path);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, text).unwrap();
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const VALID: &str = "\
parameters:
- name: greeting
  type: string
  default: hello
jobs:
- job: build
  strategy:
    matrix:
      linux:
        os: linux
      windows:
        os: windows
  steps:
  - script: echo ${{ parameters.greeting }} $(os)
- job: test
  dependsOn: build
  steps:
  - task: DotNetCoreCLI@2
    inputs:
      command: test
";

#[test]
fn validate_accepts_a_valid_pipeline_in_the_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "azure-pipelines.yml", VALID);
    let out = lockgate(dir.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("valid: 1 stage(s), 3 job(s), 3 step(s)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn validate_reports_every_problem_with_location_and_snippet() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "ci.yml",
        "jobs:\n- job: build\n  stpes:\n  - script: echo\n- job: test\n  dependsOn: nothing\n  steps:\n  - task: NoVersion\n",
    );
    let out = lockgate(dir.path(), &["validate", "ci.yml"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains("error[pipeline::unknown-key]: unknown key `stpes` in a job"),
        "{text}"
    );
    assert!(text.contains("--> ci.yml:3:3"), "{text}");
    assert!(text.contains("3 |   stpes:"), "{text}");
    assert!(text.contains("help: did you mean `steps`?"), "{text}");
    assert!(text.contains("pipeline::unknown-dependency"), "{text}");
    assert!(text.contains("pipeline::invalid-task"), "{text}");
    assert!(text.contains("4 errors found"), "{text}");
}

#[test]
fn usage_errors_exit_with_two() {
    let dir = tempfile::tempdir().unwrap();
    let missing = lockgate(dir.path(), &["validate", "nope.yml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("nope.yml"),
        "{}",
        stderr(&missing)
    );
    write(dir.path(), "azure-pipelines.yml", VALID);
    let bad_param = lockgate(dir.path(), &["validate", "--param", "novalue"]);
    assert_eq!(bad_param.status.code(), Some(2));
    assert!(
        stderr(&bad_param).contains("--param expects NAME=VALUE"),
        "{}",
        stderr(&bad_param)
    );
    let bad_repo = lockgate(dir.path(), &["validate", "--repo", "tools=/does/not/exist"]);
    assert_eq!(bad_repo.status.code(), Some(2));
    let bad_format = lockgate(dir.path(), &["plan", "--format", "xml"]);
    assert_eq!(bad_format.status.code(), Some(2));
}

#[test]
fn params_override_defaults_and_unknown_params_are_diagnosed() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "azure-pipelines.yml", VALID);
    let out = lockgate(dir.path(), &["plan", "--param", "greeting=howdy"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("- script: echo howdy $(os)"),
        "{}",
        stdout(&out)
    );
    let unknown = lockgate(dir.path(), &["validate", "--param", "colour=blue"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("the pipeline declares no parameter `colour`"),
        "{}",
        stderr(&unknown)
    );
}

#[test]
fn plan_json_lists_expanded_jobs_with_steps() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "azure-pipelines.yml", VALID);
    let out = lockgate(dir.path(), &["plan", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan is JSON");
    let jobs = plan["stages"][0]["jobs"].as_array().unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["build_linux", "build_windows", "test"]);
    assert_eq!(jobs[1]["strategy"]["positionInPhase"], 2);
    assert_eq!(jobs[2]["dependsOn"][0], "build");
    assert_eq!(jobs[2]["steps"][0]["task"]["name"], "DotNetCoreCLI");
    assert_eq!(jobs[2]["steps"][0]["task"]["major"], 2);
    assert_eq!(jobs[0]["steps"][0]["source"]["file"], "azure-pipelines.yml");
}

#[test]
fn rooted_template_paths_resolve_against_the_git_top_level() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("git")
        .arg("init")
        .arg("-q")
        .arg(dir.path())
        .status()
        .expect("git runs");
    assert!(status.success());
    write(
        dir.path(),
        "templates/steps.yml",
        "steps:\n- script: echo from the root\n",
    );
    write(
        dir.path(),
        "pipelines/ci/azure-pipelines.yml",
        "steps:\n- template: /templates/steps.yml\n",
    );
    let out = lockgate(&dir.path().join("pipelines/ci"), &["plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("echo from the root"),
        "{}",
        stdout(&out)
    );
    // With --root pointing elsewhere the template is missing, and the message names it.
    let out = lockgate(
        dir.path(),
        &[
            "validate",
            "pipelines/ci/azure-pipelines.yml",
            "--root",
            "pipelines",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("template file `templates/steps.yml` does not exist"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn repository_templates_need_a_mapped_checkout() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "azure-pipelines.yml",
        "resources:\n  repositories:\n  - repository: tools\n    type: git\n    name: p/tools\nsteps:\n- template: build.yml@tools\n",
    );
    let tools = tempfile::tempdir().unwrap();
    write(tools.path(), "build.yml", "steps:\n- script: echo tools\n");
    let unmapped = lockgate(dir.path(), &["validate"]);
    assert_eq!(unmapped.status.code(), Some(1));
    assert!(
        stderr(&unmapped).contains("--repo tools=DIR"),
        "{}",
        stderr(&unmapped)
    );
    let repo_arg = format!("tools={}", tools.path().display());
    let mapped = lockgate(dir.path(), &["plan", "--repo", &repo_arg]);
    assert_eq!(mapped.status.code(), Some(0), "{}", stderr(&mapped));
    assert!(
        stdout(&mapped).contains("echo tools"),
        "{}",
        stdout(&mapped)
    );
}

#[test]
fn templates_see_the_current_git_branch() {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .arg("-C")
            .arg(dir.path())
            .args(args)
            .status()
            .expect("git runs");
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q", "-b", "release/v2"]);
    write(
        dir.path(),
        "azure-pipelines.yml",
        "steps:\n- ${{ if eq(variables['Build.SourceBranch'], 'refs/heads/release/v2') }}:\n  - script: echo on ${{ variables['Build.SourceBranchName'] }}\n- ${{ else }}:\n  - script: echo elsewhere\n",
    );
    let out = lockgate(dir.path(), &["plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("- script: echo on v2"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn unreadable_templates_are_reported_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("folder.yml")).unwrap();
    std::fs::write(dir.path().join("binary.yml"), [0xff, 0xfe, 0x00, 0x41]).unwrap();
    write(
        dir.path(),
        "azure-pipelines.yml",
        "steps:\n- template: folder.yml\n- template: binary.yml\n",
    );
    let out = lockgate(dir.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains(
            "error[pipeline::file-unreadable]: cannot read `folder.yml`: it is a directory"
        ),
        "{text}"
    );
    assert!(
        text.contains("cannot read `binary.yml`: the file is not UTF-8 text"),
        "{text}"
    );
}

#[test]
fn diagnostics_can_be_written_as_json() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "azure-pipelines.yml",
        "steps:\n- scirpt: echo\n",
    );
    let out = lockgate(dir.path(), &["validate", "--diagnostics", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let diagnostics: serde_json::Value =
        serde_json::from_slice(&out.stderr).expect("stderr is JSON");
    assert_eq!(diagnostics[0]["code"], "pipeline::unknown-step");
    assert_eq!(diagnostics[0]["severity"], "error");
    assert_eq!(diagnostics[0]["span"]["file"], "azure-pipelines.yml");
    assert_eq!(diagnostics[0]["span"]["line"], 2);
    assert_eq!(diagnostics[0]["help"], "did you mean `script`?");
}

#[test]
fn validate_warns_about_unknown_tasks_and_still_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "azure-pipelines.yml",
        "steps:\n- script: echo hi\n- task: NoSuchTask@3\n- task: PublishPipelineArtifact@0\n  inputs:\n    targetPath: .\n",
    );
    let out = lockgate(dir.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning:") && err.contains("NoSuchTask@3") && err.contains(":3:"),
        "{err}"
    );
    assert!(
        !err.contains("PublishPipelineArtifact"),
        "older major accepted: {err}"
    );
    assert!(stdout(&out).contains("valid:"), "{}", stdout(&out));
}
