//! End-to-end tests of `lockgate run`: each writes a pipeline into a temporary Git repository, runs the real
//! binary, and checks its exit code, output, log files and the files it produced.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A temporary repository with a pipeline, and a separate work folder for runs.
pub(crate) struct Project {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) work: tempfile::TempDir,
}

impl Project {
    pub(crate) fn new(pipeline: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("azure-pipelines.yml"), pipeline).unwrap();
        let git = |args: &[&str]| {
            let status = Command::new("git")
                .args(args)
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "git {args:?}");
        };
        git(&["init", "-q", "-b", "main"]);
        git(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "add",
            ".",
        ]);
        git(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-q",
            "-m",
            "first",
        ]);
        Self { dir, work }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, text: &str) {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lockgate"));
        command
            .arg("run")
            .arg("--work-dir")
            .arg(self.work.path())
            .args(args)
            .current_dir(self.dir.path());
        command.env("LOCKGATE_MINUTE_MS", "1000");
        command
    }

    /// Starts `lockgate run` and waits until a step wrote `<run>/ready`; returns the child and the start time.
    fn start_until_ready(&self) -> (std::process::Child, Instant) {
        let child = self
            .command(&[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let ready = self.run_dir().join("ready");
        let start = Instant::now();
        while !ready.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the step never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        (child, start)
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// The log file of a job of run 1.
    fn log(&self, job: &str) -> String {
        let path = self
            .work
            .path()
            .join("runs/1/logs")
            .join(format!("{job}.log"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn run_dir(&self) -> PathBuf {
        self.work.path().join("runs/1")
    }
}

pub(crate) fn text(output: &Output) -> String {
    format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn output_variables_flow_between_steps_jobs_and_stages() {
    let project = Project::new(
        r###"
stages:
- stage: Build
  jobs:
  - job: Version
    steps:
    - bash: echo "##vso[task.setvariable variable=number;isOutput=true]4.5.6"
      name: setver
    - script: echo "same job sees $(setver.number)"
  - job: UseIt
    dependsOn: Version
    condition: eq(dependencies.Version.outputs['setver.number'], '4.5.6')
    variables:
      fromJob: $[ dependencies.Version.outputs['setver.number'] ]
    steps:
    - checkout: none
    - script: echo "job got $(fromJob)"
- stage: Deploy
  condition: and(succeeded(), eq(dependencies.Build.outputs['Version.setver.number'], '4.5.6'))
  jobs:
  - job: Ship
    variables:
      fromStage: $[ stageDependencies.Build.Version.outputs['setver.number'] ]
    steps:
    - checkout: none
    - script: echo "stage got $(fromStage)"
"###,
    );
    let output = project.run(&[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("same job sees 4.5.6"), "{all}");
    assert!(all.contains("job got 4.5.6"), "{all}");
    assert!(all.contains("stage got 4.5.6"), "{all}");
    assert!(project.log("Deploy.Ship").contains("stage got 4.5.6"));
}

#[test]
fn secrets_from_a_variable_group_are_masked_everywhere() {
    let project = Project::new(
        r#"
variables:
- group: credentials
steps:
- script: |
    echo "token is $TOKEN"
    echo "unmapped: [$API_TOKEN]"
    echo "plain: $(user)"
  env:
    TOKEN: $(api.token)
"#,
    );
    let group = project.path().join("credentials.json");
    std::fs::write(
        &group,
        r#"{"api.token": {"value": "sup3r-s3cret-value", "isSecret": true}, "user": "alice"}"#,
    )
    .unwrap();
    let group_arg = format!("credentials={}", group.display());
    let output = project.run(&["--var-group", &group_arg, "--json"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(!all.contains("sup3r-s3cret-value"), "secret leaked: {all}");
    assert!(all.contains("token is ***"), "{all}");
    assert!(
        all.contains("unmapped: []"),
        "secrets are not exported without env: {all}"
    );
    assert!(all.contains("plain: alice"), "{all}");
    let log = project.log("Job");
    assert!(
        log.contains("token is ***") && !log.contains("sup3r"),
        "{log}"
    );
    // Every stdout line is one JSON event.
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        assert!(line.starts_with("{\"event\":"), "{line}");
    }
}

#[test]
fn a_secret_output_reaches_a_dependent_job_masked() {
    let project = Project::new(
        r###"
jobs:
- job: A
  steps:
  - script: |
      P=dep; Q=loy
      echo "##vso[task.setvariable variable=key;isOutput=true;issecret=true]${P}${Q}-Key-5521"
    name: gen
- job: B
  dependsOn: A
  variables:
    key: $[ dependencies.A.outputs['gen.key'] ]
  steps:
  - script: |
      P=dep; Q=loy
      [ "$(key)" = "${P}${Q}-Key-5521" ] && echo KEY-MATCHES
      echo "key=$(key)"
"###,
    );
    let output = project.run(&[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("KEY-MATCHES"), "{all}");
    assert!(
        all.contains("key=***"),
        "masked in the dependent job: {all}"
    );
    assert!(!all.contains("deploy-Key-5521"), "{all}");
    let log = project.log("B");
    assert!(
        log.contains("key=***") && !log.contains("-Key-5521"),
        "{log}"
    );
}

#[test]
fn a_missing_variable_group_is_a_usage_error() {
    let project = Project::new("variables:\n- group: nowhere\nsteps:\n- script: echo hi\n");
    let output = project.run(&[]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("--var-group nowhere=FILE"),
        "{}",
        text(&output)
    );
}

#[test]
fn conditions_after_a_failure_and_the_exit_code() {
    let project = Project::new(
        r#"
jobs:
- job: Broken
  steps:
  - checkout: none
  - script: exit 4
  - script: echo "after-failure-should-not-run"
  - script: echo "cleanup-ran"
    condition: always()
- job: Next
  dependsOn: Broken
  steps:
  - script: echo "next-should-not-run"
- job: OnFailure
  dependsOn: Broken
  condition: failed()
  steps:
  - checkout: none
  - script: echo "on-failure-ran"
"#,
    );
    let output = project.run(&[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("cleanup-ran") && all.contains("on-failure-ran"),
        "{all}"
    );
    assert!(
        !all.contains("after-failure-should-not-run\n") && !all.contains("next-should-not-run\n"),
        "{all}"
    );
    assert!(all.contains("Next") && all.contains("Skipped"), "{all}");
}

#[test]
fn matrix_legs_run_as_separate_jobs_with_their_variables() {
    let project = Project::new(
        r###"
jobs:
- job: Test
  strategy:
    matrix:
      linux:
        flavour: penguin
      mac:
        flavour: apple
  steps:
  - checkout: none
  - bash: |
      echo "leg $(flavour) at $(System.JobPositionInPhase)/$(System.TotalJobsInPhase)"
      echo "##vso[task.setvariable variable=seen;isOutput=true]$(flavour)"
    name: report
- job: After
  dependsOn: Test
  variables:
    linuxSaw: $[ dependencies.Test.outputs['linux.report.seen'] ]
  steps:
  - checkout: none
  - script: echo "linux leg said $(linuxSaw)"
"###,
    );
    let output = project.run(&["--parallel", "2"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("leg penguin at"), "{all}");
    assert!(all.contains("leg apple at"), "{all}");
    assert!(all.contains("linux leg said penguin"), "{all}");
}

#[test]
fn matrix_legs_with_punctuation_run_under_safe_distinct_job_names() {
    let project = Project::new(
        r###"
jobs:
- job: Build
  strategy:
    matrix:
      Debug++:
        flavour: debug
      "Linux (nightly)":
        flavour: nightly
      a+b:
        flavour: plus
      a-b:
        flavour: minus
  steps:
  - checkout: none
  - bash: echo "leg $(flavour) is $(System.JobName) shown as $(System.JobDisplayName)"
"###,
    );
    let output = project.run(&[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    for (job, line) in [
        (
            "Build_Debug__",
            "leg debug is Build_Debug__ shown as Build Debug++",
        ),
        (
            "Build_Linux__nightly_",
            "leg nightly is Build_Linux__nightly_ shown as Build Linux (nightly)",
        ),
        ("Build_a_b", "leg plus is Build_a_b shown as Build a+b"),
        ("Build_a_b_2", "leg minus is Build_a_b_2 shown as Build a-b"),
    ] {
        let log = project.log(job);
        assert!(log.contains(line), "{job}: {log}");
    }
}

#[test]
fn templates_with_each_expand_into_steps() {
    let project = Project::new(
        r#"
steps:
- checkout: none
- template: templates/greet.yml
  parameters:
    names: [ada, grace, linus]
"#,
    );
    project.write(
        "templates/greet.yml",
        r#"
parameters:
- name: names
  type: object
  default: []
steps:
- ${{ each name in parameters.names }}:
  - script: echo "hello ${{ name }}"
    displayName: greet ${{ name }}
"#,
    );
    let output = project.run(&[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    for name in ["ada", "grace", "linus"] {
        assert!(all.contains(&format!("hello {name}")), "{all}");
        assert!(all.contains(&format!("greet {name}")), "{all}");
    }
}

#[test]
fn checkout_copies_uncommitted_changes_and_leaves_the_tree_alone() {
    let project = Project::new(
        "steps:\n- script: cat notes.txt; git status --short; echo touched > made-by-step.txt\n",
    );
    project.write("notes.txt", "uncommitted note");
    let output = project.run(&[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("uncommitted note"), "{all}");
    assert!(
        !project.path().join("made-by-step.txt").exists(),
        "the step wrote into the user's tree"
    );
}

#[test]
fn a_step_timeout_stops_a_process_that_ignores_sigterm() {
    // With LOCKGATE_MINUTE_MS=1000 a "minute" lasts one second.
    let project = Project::new(
        r#"
jobs:
- job: Stubborn
  cancelTimeoutInMinutes: 1
  steps:
  - checkout: none
  - bash: |
      trap 'echo got-term' TERM
      echo started
      while true; do sleep 0.1; done
    timeoutInMinutes: 1
  - script: echo "cleanup after timeout"
    condition: always()
"#,
    );
    let started = Instant::now();
    let output = project.run(&[]);
    let all = text(&output);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("got-term"), "SIGTERM was sent first: {all}");
    assert!(all.contains("timed out"), "{all}");
    assert!(all.contains("cleanup after timeout"), "{all}");
}

#[test]
fn a_background_process_holding_stdout_does_not_hang_the_run() {
    let project = Project::new(
        r#"
steps:
- checkout: none
- bash: |
    sleep 60 &
    echo $! > "$(Agent.TempDirectory)/../../../bg.pid"
    echo "left a background process"
- script: echo "next step ran"
"#,
    );
    let started = Instant::now();
    let output = project.run(&[]);
    let all = text(&output);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("next step ran"), "{all}");
    // The job cleaned up the process it left behind.
    let pid = std::fs::read_to_string(project.run_dir().join("bg.pid")).unwrap();
    assert!(
        !Path::new(&format!("/proc/{}", pid.trim())).exists() || is_zombie(pid.trim()),
        "background process {pid} survived"
    );
}

fn is_zombie(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

#[test]
fn interrupting_the_run_cancels_the_step_group_and_runs_always_steps() {
    cancel_with_signal("-INT", "interrupted");
}

#[test]
fn sigterm_to_lockgate_cancels_the_run_like_ctrl_c() {
    cancel_with_signal("-TERM", "terminated");
}

/// Starts a run whose step waits on a background child, sends `signal` to `lockgate`, and checks that the
/// run was canceled: the step's process group is gone, `always()` steps ran, others did not.
fn cancel_with_signal(signal: &str, message: &str) {
    let project = Project::new(
        r#"
steps:
- checkout: none
- bash: |
    sleep 60 &
    echo $! > "$(Pipeline.Workspace)/../../child.pid"
    echo ready > "$(Pipeline.Workspace)/../../ready"
    wait
- script: echo "finally-ran"
  condition: always()
- script: echo "normal-step-ran"
"#,
    );
    let (child, _) = project.start_until_ready();
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("finally-ran"), "{all}");
    assert!(!all.contains("normal-step-ran\n"), "{all}");
    assert!(all.contains("Canceled"), "{all}");
    assert!(
        all.contains(&format!("{message}: canceling the run")),
        "{all}"
    );
    let pid = std::fs::read_to_string(project.run_dir().join("child.pid")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !Path::new(&format!("/proc/{}", pid.trim())).exists() || is_zombie(pid.trim()),
        "the step's child {pid} survived"
    );
}

#[test]
fn artifacts_pass_from_a_build_job_to_a_deployment() {
    let project = Project::new(
        r#"
stages:
- stage: Build
  jobs:
  - job: Package
    steps:
    - script: mkdir -p out && echo "v1 payload" > out/app.txt
    - publish: out
      artifact: app
- stage: Release
  jobs:
  - deployment: ToDev
    environment: dev
    strategy:
      runOnce:
        deploy:
          steps:
          - script: cat "$(Pipeline.Workspace)/app/app.txt"; echo "env=$(Environment.Name) strategy=$(Strategy.Name) type=$(Environment.ResourceType)"
"#,
    );
    let output = project.run(&[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("v1 payload"), "{all}");
    assert!(
        all.contains("env=dev strategy=runOnce type=VirtualMachine"),
        "{all}"
    );
    // Local runs say once per environment that server-side checks are not evaluated.
    let notes = all
        .lines()
        .filter(|l| {
            l.starts_with("[Release.ToDev] warning:")
                && l.contains("environment `dev`: approvals and checks configured on a Lockgate server are not evaluated in local runs")
        })
        .count();
    assert_eq!(notes, 1, "{all}");
}

#[test]
fn a_rolling_deployment_to_virtual_machines_runs_as_one_job_locally_and_says_so() {
    let project = Project::new(
        r#"
jobs:
- deployment: Web
  environment:
    name: staging
    resourceType: VirtualMachine
    tags: web
  strategy:
    rolling:
      maxParallel: 50%
      deploy:
        steps:
        - script: echo "deploying to [$(Environment.ResourceName)]"
"#,
    );
    let output = project.run(&[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    let deployed: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("deploying to [") && !l.contains("echo"))
        .collect();
    assert_eq!(deployed.len(), 1, "{all}");
    let note = all
        .lines()
        .find(|l| {
            l.contains("a deployment to virtual machine resources runs as one job, on this machine")
        })
        .unwrap_or_else(|| panic!("no note: {all}"));
    let resource = note
        .split("`Environment.ResourceName` is `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap();
    assert!(
        deployed[0].contains(&format!("deploying to [{resource}]")),
        "{all}"
    );
}

#[test]
fn a_manual_stage_runs_locally_only_when_selected_with_stage() {
    let project = Project::new(
        r#"
stages:
- stage: Build
  jobs:
  - job: B
    steps:
    - script: echo "built" "it"
- stage: Prod
  trigger: manual
  jobs:
  - job: Ship
    steps:
    - script: echo "shipped" "by hand"
"#,
    );
    let output = project.run(&[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("built it"), "{all}");
    assert!(!all.contains("shipped by hand"), "{all}");
    assert!(
        all.contains("stage `Prod` has `trigger: manual`: local runs run it only when it is selected with --stage Prod"),
        "{all}"
    );
    let output = project.run(&["--stage", "Prod"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("shipped by hand"), "{all}");
    assert!(!all.contains("has `trigger: manual`"), "{all}");
}

#[test]
fn unknown_tasks_fail_their_step_and_invalid_pipelines_exit_with_2() {
    // As on Azure Pipelines, an unknown task fails the step that reaches it, not the run: a skipped
    // one does nothing, a reached one fails its step with the name and where it was written.
    let project = Project::new(
        "steps:\n- task: NoSuchTask@3\n  condition: false\n- script: echo before\n- task: NoSuchTask@4\n",
    );
    let output = project.run(&[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("warning:") && all.contains("NoSuchTask@4") && all.contains("cmdline@2"),
        "{all}"
    );
    let log = project.log("Job");
    assert!(log.contains("before"), "{log}");
    assert!(
        log.contains("task NoSuchTask@4 is not built into Lockgate") && log.contains(":5:"),
        "{log}"
    );

    let project = Project::new("stages:\n- stage: A\n  jobs: 7\n");
    let output = project.run(&[]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        !project.run_dir().exists(),
        "nothing is run for an invalid pipeline"
    );
}

#[test]
fn test_results_and_file_tasks() {
    let project = Project::new(
        r#"
steps:
- script: |
    mkdir -p reports
    cat > reports/TEST-unit.xml <<'XML'
    <testsuite><testcase classname="calc" name="adds"/><testcase classname="calc" name="divides"><failure/></testcase></testsuite>
    XML
- task: PublishTestResults@2
  inputs:
    testResultsFormat: JUnit
    testResultsFiles: '**/TEST-*.xml'
- task: CopyFiles@2
  inputs:
    Contents: |
      **/*.xml
      !**/nothing/**
    TargetFolder: $(Build.ArtifactStagingDirectory)/copied
- task: ArchiveFiles@2
  inputs:
    rootFolderOrFile: $(Build.ArtifactStagingDirectory)/copied
    archiveFile: $(Build.ArtifactStagingDirectory)/reports.zip
- task: ExtractFiles@1
  inputs:
    archiveFilePatterns: $(Build.ArtifactStagingDirectory)/reports.zip
    destinationFolder: $(Build.ArtifactStagingDirectory)/unpacked
- script: cd $(Build.ArtifactStagingDirectory)/unpacked && find . -type f
"#,
    );
    let output = project.run(&[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("1 passed, 1 failed, 0 skipped"), "{all}");
    assert!(all.contains("failed: calc.divides"), "{all}");
    assert!(
        all.contains("Tests:     "),
        "the summary says where test results are: {all}"
    );
    let results = std::fs::read_dir(project.run_dir().join("test-results"))
        .unwrap()
        .count();
    assert_eq!(results, 1);
    assert!(all.contains("./copied/reports/TEST-unit.xml"), "{all}");
}

#[test]
fn json_output_carries_each_test_case() {
    let project = Project::new(
        r#"
steps:
- script: |
    cat > TEST-calc.xml <<'XML'
    <testsuite name="calc"><testcase classname="calc" name="adds" time="0.5"/><testcase classname="calc" name="divides"><failure message="division by zero"/></testcase></testsuite>
    XML
- task: PublishTestResults@2
"#,
    );
    let output = project.run(&["--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let results: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["event"] == "testResults")
        .collect();
    assert_eq!(results.len(), 1, "{}", text(&output));
    assert_eq!(
        (results[0]["passed"].as_u64(), results[0]["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        results[0]["cases"],
        serde_json::json!([
            {"suite": "calc", "name": "divides", "outcome": "failed", "duration_ms": 0, "message": "division by zero"},
            {"suite": "calc", "name": "adds", "outcome": "passed", "duration_ms": 500, "message": ""},
        ])
    );
}

#[test]
fn power_platform_tasks_are_registered() {
    let project = Project::new("steps:\n- checkout: none\n- task: PowerPlatformToolInstaller@2\n");
    let output = project.run(&[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(
        all.contains("PowerPlatformToolInstaller@2: Succeeded"),
        "{all}"
    );
}

#[test]
fn max_parallel_limits_matrix_legs_running_at_once() {
    let project = Project::new(
        r#"
jobs:
- job: Leg
  strategy:
    maxParallel: 1
    matrix:
      one: { n: 1 }
      two: { n: 2 }
      three: { n: 3 }
  steps:
  - checkout: none
  - bash: |
      lock="$(Pipeline.Workspace)/../../running"
      if [ -e "$lock" ]; then echo "overlap"; exit 1; fi
      touch "$lock"; sleep 0.3; rm "$lock"
      echo "leg $(n) done"
"#,
    );
    let output = project.run(&["--parallel", "3"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    for n in 1..=3 {
        assert!(all.contains(&format!("leg {n} done")), "{all}");
    }
    assert!(!all.contains("overlap\n"), "{all}");
}

#[test]
fn canary_deployment_runs_each_increment_then_on_success() {
    let project = Project::new(
        r#"
jobs:
- deployment: Roll
  environment: production
  strategy:
    canary:
      increments: [10, 50]
      preDeploy:
        steps:
        - script: echo "pre"
      deploy:
        steps:
        - script: echo "deploy $(Strategy.Increment)"
      on:
        failure:
          steps:
          - script: echo "rollback"
        success:
          steps:
          - script: echo "all good"
"#,
    );
    let output = project.run(&[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    let order: Vec<&str> = all
        .lines()
        .filter_map(|l| l.split("] ").nth(1))
        .filter(|l| {
            [
                "pre",
                "deploy 10",
                "deploy 50",
                "deploy 100",
                "all good",
                "rollback",
            ]
            .contains(l)
        })
        .collect();
    assert!(
        order.starts_with(&["pre", "deploy 10", "deploy 50"]),
        "{order:?}\n{all}"
    );
    assert_eq!(order.last(), Some(&"all good"), "{all}");
    assert!(!order.contains(&"rollback"), "{all}");
}

#[test]
fn checkout_of_a_mapped_repository() {
    let project = Project::new(
        r#"
resources:
  repositories:
  - repository: tools
    type: git
    name: team/tools
steps:
- checkout: self
- checkout: tools
- script: cat "$(Build.SourcesDirectory)/tools/tool.txt"; ls -a "$(Build.SourcesDirectory)"
"#,
    );
    let tools = tempfile::tempdir().unwrap();
    std::fs::write(tools.path().join("tool.txt"), "tool content").unwrap();
    let mapping = format!("tools={}", tools.path().display());
    let output = project.run(&["--repo", &mapping]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("tool content"), "{all}");
    let self_folder = project
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        all.contains(&format!("] {self_folder}\n")),
        "self goes to s/<repository folder>: {all}"
    );

    let output = project.run(&[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("--repo tools=DIR"),
        "{}",
        text(&output)
    );
}

#[test]
fn a_second_interrupt_kills_a_step_that_ignores_sigterm() {
    let project = Project::new(
        r#"
jobs:
- job: Stubborn
  cancelTimeoutInMinutes: 60
  steps:
  - checkout: none
  - bash: |
      trap '' TERM
      echo ready > "$(Pipeline.Workspace)/../../ready"
      while true; do sleep 0.1; done
"#,
    );
    let (child, start) = project.start_until_ready();
    let pid = child.id().to_string();
    for _ in 0..2 {
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let output = child.wait_with_output().unwrap();
    let all = text(&output);
    // Without the second interrupt it would wait the 60 "minutes" of grace (60 s here).
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("interrupted again: killing what is still running"),
        "{all}"
    );
}

#[test]
fn step_targets_restrict_settable_variables() {
    let project = Project::new(
        r###"
steps:
- checkout: none
- bash: |
    echo "##vso[task.setvariable variable=ok]1"
    echo "##vso[task.setvariable variable=sneaky]1"
  target:
    commands: restricted
    settableVariables: [ok]
- script: echo "ok=$(ok) sneaky=$(sneaky)"
"###,
    );
    let output = project.run(&[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("ok=1 sneaky=$(sneaky)"), "{all}");
    assert!(
        all.contains("not in this step's settableVariables"),
        "{all}"
    );
}

#[test]
fn deployment_outputs_use_the_documented_key_forms() {
    let project = Project::new(
        r###"
jobs:
- deployment: Ship
  environment: test
  strategy:
    runOnce:
      deploy:
        steps:
        - bash: echo "##vso[task.setvariable variable=url;isOutput=true]http://test.local"
          name: setUrl
- job: Check
  dependsOn: Ship
  variables:
    byJob: $[ dependencies.Ship.outputs['Ship.setUrl.url'] ]
    byHook: $[ dependencies.Ship.outputs['deploy.setUrl.url'] ]
  steps:
  - checkout: none
  - script: echo "job form=$(byJob) hook form=$(byHook)"
"###,
    );
    let output = project.run(&[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(
        all.contains("job form=http://test.local hook form=http://test.local"),
        "{all}"
    );
}

#[test]
fn a_work_folder_inside_the_repository_is_not_copied_into_checkouts() {
    let project = Project::new("steps:\n- script: ls -a; test ! -e .lockgate-work\n");
    for _ in 0..2 {
        let output = Command::new(env!("CARGO_BIN_EXE_lockgate"))
            .args(["run", "--work-dir", ".lockgate-work"])
            .current_dir(project.path())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    }
    assert!(project.path().join(".lockgate-work/runs/2").is_dir());
}

#[test]
fn variable_values_expand_references_to_other_variables() {
    let project = Project::new(
        r###"
variables:
  PIP_CACHE_DIR: $(Pipeline.Workspace)/.pip
  UNKNOWN_REF: $(No.Such.Variable)/x
jobs:
- job: Build
  variables:
    WHEELS: $(PIP_CACHE_DIR)/wheels
  steps:
  - checkout: none
  - bash: |
      echo "cache=$PIP_CACHE_DIR"
      echo "wheels=$WHEELS"
      echo "unknown=$UNKNOWN_REF"
      echo "workspace=$PIPELINE_WORKSPACE"
"###,
    );
    let output = project.run(&[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    let workspace = all
        .lines()
        .find_map(|line| {
            line.split_once("workspace=")
                .map(|(_, w)| w.trim().to_string())
        })
        .unwrap_or_else(|| panic!("{all}"));
    assert!(!workspace.is_empty(), "{all}");
    assert!(all.contains(&format!("cache={workspace}/.pip")), "{all}");
    assert!(
        all.contains(&format!("wheels={workspace}/.pip/wheels")),
        "{all}"
    );
    assert!(all.contains("unknown=$(No.Such.Variable)/x"), "{all}");
}

#[test]
fn stage_dependencies_expose_only_direct_dependencies() {
    let project = Project::new(
        r###"
stages:
- stage: One
  jobs:
  - job: A
    steps:
    - checkout: none
    - bash: echo "##vso[task.setvariable variable=flag;isOutput=true]from-one"
      name: setvar
- stage: Two
  jobs:
  - job: B
    steps:
    - checkout: none
    - bash: echo "##vso[task.setvariable variable=flag;isOutput=true]from-two"
      name: setvar
- stage: Three
  jobs:
  - job: C
    variables:
      direct: $[ stageDependencies.Two.B.outputs['setvar.flag'] ]
      indirect: $[ stageDependencies.One.A.outputs['setvar.flag'] ]
    steps:
    - checkout: none
    - bash: echo "direct=[$DIRECT] indirect=[$INDIRECT]"
"###,
    );
    let output = project.run(&[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("direct=[from-two] indirect=[]"), "{all}");
}

#[test]
fn stage_and_job_selection_reuses_outputs_of_earlier_runs() {
    let project = Project::new(
        r###"
stages:
- stage: Build
  jobs:
  - job: Version
    steps:
    - checkout: none
    - bash: |
        echo "VERSION-RAN"
        echo "##vso[task.setvariable variable=number;isOutput=true]4.5.6"
      name: setver
  - job: UseIt
    dependsOn: Version
    variables:
      fromJob: $[ dependencies.Version.outputs['setver.number'] ]
    steps:
    - checkout: none
    - script: echo "job got [$(fromJob)]"
- stage: Deploy
  jobs:
  - job: Ship
    variables:
      fromStage: $[ stageDependencies.Build.Version.outputs['setver.number'] ]
    steps:
    - checkout: none
    - script: echo "stage got [$(fromStage)]"
"###,
    );
    // No earlier run: the dependency counts as Succeeded with no outputs, and the run says so.
    let output = project.run(&["--stage", "deploy"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(!all.contains("VERSION-RAN"), "{all}");
    assert!(all.contains("stage got []"), "{all}");
    assert!(
        all.contains("`Build.Version` does not run and no earlier local run"),
        "{all}"
    );
    // A full run records every job's outputs.
    let output = project.run(&[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("VERSION-RAN"));
    // Now the left-out jobs' outputs come from run 2.
    let output = project.run(&["--stage", "Deploy"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(!all.contains("VERSION-RAN"), "{all}");
    assert!(all.contains("stage got [4.5.6]"), "{all}");
    assert!(all.contains("outputs come from local run 2"), "{all}");
    let output = project.run(&["--job", "Build.UseIt"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("job got [4.5.6]"), "{all}");
    assert!(
        !all.contains("VERSION-RAN") && !all.contains("stage got"),
        "{all}"
    );
    // A name that matches nothing is a usage error naming what the pipeline has.
    for (args, message) in [
        (
            ["--stage", "Nope"],
            "--stage Nope: no such stage; the pipeline's stages are: Build, Deploy",
        ),
        (
            ["--job", "Nope"],
            "--job Nope: no such job; the pipeline's jobs are: Build.UseIt, Build.Version, Deploy.Ship",
        ),
    ] {
        let output = project.run(&args);
        assert_eq!(output.status.code(), Some(2), "{}", text(&output));
        assert!(text(&output).contains(message), "{}", text(&output));
    }
}

#[test]
fn jobs_for_another_os_are_skipped_with_a_note_unless_asked_to_run() {
    let project = Project::new(
        r###"
strategy:
  matrix:
    linux:
      imageName: ubuntu-latest
    mac:
      imageName: macOS-latest
    windows:
      imageName: windows-latest
pool:
  vmImage: $(imageName)
steps:
- checkout: none
- script: echo "RAN-ON-$(imageName)"
"###,
    );
    let output = project.run(&[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("RAN-ON-ubuntu-latest"), "{all}");
    assert!(!all.contains("RAN-ON-macOS-latest"), "{all}");
    assert!(!all.contains("RAN-ON-windows-latest"), "{all}");
    assert!(
        all.contains("vmImage `macOS-latest` asks for an agent with Agent.OS Darwin"),
        "{all}"
    );
    assert!(
        all.contains("vmImage `windows-latest` asks for an agent with Agent.OS Windows_NT"),
        "{all}"
    );
    assert!(all.contains("--os-mismatch run"), "{all}");
    let output = project.run(&["--os-mismatch", "run"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    for image in ["ubuntu-latest", "macOS-latest", "windows-latest"] {
        assert!(all.contains(&format!("RAN-ON-{image}")), "{all}");
    }
    let output = project.run(&["--os-mismatch", "maybe"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
}

/// Each job has its own HOME under its workspace (a file one job writes to `~` is not in the other's),
/// toolchain roots in the user's HOME stay reachable, and `--shared-home` gives steps the user's HOME.
#[test]
fn each_job_has_its_own_home_unless_shared() {
    let project = Project::new(
        r#"
jobs:
- job: A
  steps:
  - checkout: none
  - bash: |
      echo "A home=$HOME rustup=$RUSTUP_HOME"
      echo from-a > ~/a.txt
- job: B
  dependsOn: A
  steps:
  - checkout: none
  - bash: |
      echo "B home=$HOME"
      if [ -e ~/a.txt ]; then echo "B sees a.txt"; else echo "B has no a.txt"; fi
"#,
    );
    let user_home = tempfile::tempdir().unwrap();
    std::fs::create_dir(user_home.path().join(".rustup")).unwrap();
    let run = |args: &[&str]| {
        let output = project
            .command(args)
            .env("HOME", user_home.path())
            .env_remove("RUSTUP_HOME")
            .output()
            .unwrap();
        let all = text(&output);
        assert_eq!(output.status.code(), Some(0), "{all}");
        all
    };
    let home_of = |all: &str, job: &str| -> String {
        let prefix = format!("[{job}] {job} home=");
        let line = all
            .lines()
            .find_map(|l| l.split_once(&prefix).map(|(_, rest)| rest.to_string()))
            .unwrap_or_else(|| panic!("no `{prefix}` line: {all}"));
        line.split_whitespace().next().unwrap_or("").to_string()
    };
    let all = run(&[]);
    let (a, b) = (home_of(&all, "A"), home_of(&all, "B"));
    assert_ne!(a, b, "{all}");
    assert!(a.ends_with("/home") && b.ends_with("/home"), "{all}");
    assert!(
        !a.starts_with(&user_home.path().display().to_string()),
        "{all}"
    );
    assert!(all.contains("B has no a.txt"), "{all}");
    let rustup = format!("rustup={}/.rustup", user_home.path().display());
    assert!(all.contains(&rustup), "{all}");
    assert!(!user_home.path().join("a.txt").exists());

    let all = run(&["--shared-home"]);
    let shown = user_home.path().display().to_string();
    assert_eq!(home_of(&all, "A"), shown, "{all}");
    assert_eq!(home_of(&all, "B"), shown, "{all}");
    assert!(all.contains("B sees a.txt"), "{all}");
    assert!(
        all.contains("rustup= ") || all.contains("rustup=\n"),
        "{all}"
    );
}

#[test]
fn rev_counts_runs_with_the_same_number_and_pipeline_start_time_is_set() {
    // `$(Rev:rr)` counts runs of this pipeline whose number is otherwise the same; `pipeline.startTime`
    // feeds the documented `counter(format('{0:yyyyMMdd}', pipeline.startTime), 100)`.
    let pipeline = |major: &str| {
        format!(
            r#"
name: v{major}.$(Rev:rr)
variables:
  day: $[ format('{{0:yyyyMMdd}}', pipeline.startTime) ]
  build: $[ counter(format('{{0:yyyyMMdd}}', pipeline.startTime), 100) ]
steps:
- checkout: none
- script: |
    echo "number=$(Build.BuildNumber)"
    echo "day=$(day) build=$(build) start=$(System.PipelineStartTime)"
"#
        )
    };
    let project = Project::new(&pipeline("1"));
    // The value after `key` on the last line that has it (the step's output, not the echoed script).
    let value = |all: &str, key: &str| {
        all.lines()
            .rev()
            .find_map(|line| line.split(key).nth(1))
            .map(|rest| rest.split([' ', '"']).next().unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("no {key} in {all}"))
    };
    let number = |output: &Output| {
        let all = text(output);
        assert_eq!(output.status.code(), Some(0), "{all}");
        value(&all, "number=")
    };
    let first = project.run(&[]);
    assert_eq!(number(&first), "v1.01");
    let all = text(&first);
    let day = value(&all, "day=");
    assert!(day.len() == 8 && day.starts_with("20"), "{all}");
    assert_eq!(value(&all, "build="), "100", "{all}");
    let start = value(&all, "start=");
    assert!(
        start.replace('-', "").starts_with(&day),
        "{start} / {day}: {all}"
    );
    // `yyyy-MM-dd HH:mm:ss+00:00`, in UTC.
    let time = all.split(&format!("start={start} ")).last().unwrap_or("");
    assert!(
        time.len() >= 14 && &time[8..14] == "+00:00",
        "{time}: {all}"
    );
    assert_eq!(number(&project.run(&[])), "v1.02");
    // A different prefix starts again at 1; going back resumes its own count.
    std::fs::write(project.path().join("azure-pipelines.yml"), pipeline("2")).unwrap();
    assert_eq!(number(&project.run(&[])), "v2.01");
    std::fs::write(project.path().join("azure-pipelines.yml"), pipeline("1")).unwrap();
    assert_eq!(number(&project.run(&[])), "v1.03");
}

#[test]
fn a_single_checkout_with_a_path_becomes_the_sources_directory() {
    let project = Project::new(
        r###"
jobs:
- job: custom
  steps:
  - checkout: self
    path: a/b/c
  - bash: |
      echo "PWD=$(pwd)"
      echo "SD=$(Build.SourcesDirectory)"
      test -f azure-pipelines.yml && echo FOUND-IN-CWD
- job: escape
  steps:
  - checkout: self
    path: ../../outside
  - script: echo NOT-REACHED
"###,
    );
    let output = project.run(&[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    let log = project.log("custom");
    assert!(log.contains("FOUND-IN-CWD"), "{log}");
    let pwd = log.lines().find_map(|l| l.strip_prefix("PWD=")).unwrap();
    assert!(pwd.ends_with("/a/b/c"), "{log}");
    assert!(log.contains(&format!("SD={pwd}")), "{log}");
    let escape = project.log("escape");
    assert!(
        escape.contains(
            "checkout: path `../../outside` must be a relative folder under $(Pipeline.Workspace)"
        ),
        "{escape}"
    );
    assert!(!escape.lines().any(|l| l == "NOT-REACHED"), "{escape}");
}

#[test]
fn runtime_expressions_in_job_keys_are_evaluated_when_the_job_starts() {
    let project = Project::new(
        r###"
variables:
  allow: yes
  minutes: 1
jobs:
- job: flaky
  continueOnError: $[ eq(variables.allow, 'yes') ]
  steps:
  - checkout: none
  - script: exit 3
- job: after
  dependsOn: flaky
  steps:
  - checkout: none
  - script: echo AFTER-RAN
- job: slow
  timeoutInMinutes: $[ variables.minutes ]
  steps:
  - checkout: none
  - script: sleep 20
- job: bad
  continueOnError: $[ 'maybe' ]
  steps:
  - checkout: none
  - script: echo BAD-RAN
"###,
    );
    let output = project.run(&[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    // continueOnError from the expression lets the dependent job run.
    assert!(all.contains("AFTER-RAN"), "{all}");
    // One "minute" is one second in tests: the evaluated timeout stopped the step.
    assert!(
        project
            .log("slow")
            .contains("ran longer than its maximum time of 1 seconds"),
        "{}",
        project.log("slow")
    );
    assert!(
        all.contains(
            "`continueOnError` must evaluate to true or false, but `$[ 'maybe' ]` gave `maybe`"
        ),
        "{all}"
    );
    assert!(
        !all.lines()
            .any(|l| l.ends_with("] BAD-RAN") || l == "BAD-RAN"),
        "{all}"
    );
}

/// A local HTTP service on 127.0.0.1 answering `answers` in turn (the last one again after that);
/// returns its URL and the requests it got (request line and headers).
fn answering_service(answers: &[&str]) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answers: Vec<String> = answers.iter().map(|a| a.to_string()).collect();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let requests = seen.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            requests.lock().unwrap().push(head);
            let body = &answers[n.min(answers.len() - 1)];
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

#[test]
fn agentless_jobs_delay_and_call_a_rest_api_locally() {
    let (url, requests) =
        answering_service(&[r#"{"status":"starting"}"#, r#"{"status":"healthy"}"#]);
    let project = Project::new(&format!(
        r#"
variables:
  token: abc-123
jobs:
- job: Build
  steps:
  - script: echo "built" "it"
- job: Gate
  dependsOn: Build
  pool: server
  steps:
  - task: Delay@1
    inputs:
      delayForMinutes: '0.5'
  - task: InvokeRESTAPI@1
    retryCountOnTaskFailure: 1
    inputs:
      method: GET
      urlSuffix: {url}/health
      headers: '{{"X-Token": "$(token)"}}'
      successCriteria: eq(root['status'], 'healthy')
- job: After
  dependsOn: Gate
  steps:
  - script: echo "after" "the gate"
"#
    ));
    let started = Instant::now();
    let output = project.run(&[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the delay waited"
    );
    assert!(all.contains("after the gate"), "{all}");
    let log = project.log("Gate");
    for expected in [
        "Waiting 0.5 seconds",
        "The delay is over.",
        "Response: HTTP 200 {\"status\":\"starting\"}",
        "trying again (attempt 2 of 2)",
        "Response: HTTP 200 {\"status\":\"healthy\"}",
    ] {
        assert!(log.contains(expected), "missing {expected:?} in {log}");
    }
    let requests = requests.lock().unwrap();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(
        requests[0]
            .to_ascii_lowercase()
            .contains("x-token: abc-123"),
        "{requests:?}"
    );
}

/// Locally, `--var NAME.Url=...` (and `NAME.Username`, `NAME.Password`) stand in for the generic
/// service connection an agentless `InvokeRESTAPI@1` names; without them the step fails saying so.
#[test]
fn a_local_agentless_rest_call_takes_its_connection_from_vars() {
    let (url, requests) = answering_service(&[r#"{"status":"healthy"}"#]);
    let project = Project::new(
        r#"
jobs:
- job: Gate
  pool: server
  steps:
  - task: InvokeRESTAPI@1
    inputs:
      connectedServiceName: health
      method: GET
      urlSuffix: /health
"#,
    );
    let missing = project.run(&[]);
    let all = text(&missing);
    assert_eq!(missing.status.code(), Some(1), "{all}");
    assert!(
        project
            .log("Gate")
            .contains("service connection `health` is not available here"),
        "{all}"
    );
    assert!(requests.lock().unwrap().is_empty());
    let output = project.run(&[
        "--var",
        &format!("health.Url={url}"),
        "--var",
        "health.Username=ops",
        "--var",
        "health.Password=pw",
    ]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    let requests = requests.lock().unwrap();
    assert_eq!(requests.len(), 1, "{requests:?}");
    // ops:pw, base64.
    assert!(
        requests[0].starts_with("GET /health") && requests[0].contains("Basic b3BzOnB3"),
        "{requests:?}"
    );
}

#[test]
fn a_manual_validation_without_a_terminal_fails_with_a_clear_message() {
    let project = Project::new(
        r#"
jobs:
- job: Wait
  pool: server
  steps:
  - task: ManualValidation@0
    inputs:
      notifyUsers: ''
      instructions: look at staging
- job: Ship
  dependsOn: Wait
  steps:
  - script: echo "shipped" "it"
"#,
    );
    let output = project.command(&[]).stdin(Stdio::null()).output().unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("stdin is not a terminal"), "{all}");
    assert!(!all.contains("shipped it"), "{all}");
    assert!(
        project
            .log("Wait")
            .contains("Instructions: look at staging")
    );
}

const DOWNLOAD_SECURE_FILE: &str = r#"
steps:
- task: DownloadSecureFile@1
  name: cert
  inputs:
    secureFile: ca.pem
- script: |
    set -e
    echo "in temp: $(case "$CERT" in "$(Agent.TempDirectory)"/*) echo yes;; *) echo no;; esac)"
    echo "content: $(cat "$CERT")"
    echo "path: $CERT"
  env:
    CERT: $(cert.secureFilePath)
"#;

#[test]
fn download_secure_file_takes_a_local_file_and_removes_its_copy_when_the_job_ends() {
    let project = Project::new(DOWNLOAD_SECURE_FILE);
    let local = project.path().join("local-ca.pem");
    std::fs::write(&local, "local-certificate-body\n").unwrap();
    let output = project.run(&["--secure-file", &format!("ca.pem={}", local.display())]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("in temp: yes"), "{all}");
    assert!(all.contains("content: local-certificate-body"), "{all}");
    let seen = all
        .lines()
        .find_map(|line| line.split_once("path: ").map(|(_, path)| path.to_string()))
        .expect("the step printed the path");
    let copy = std::path::Path::new(seen.trim());
    assert!(copy.ends_with("ca.pem"), "{seen}");
    assert!(
        !copy.exists(),
        "the job's copy {} is still there",
        copy.display()
    );
    assert!(local.exists(), "the user's own file stays");

    // Without the file the step fails saying how to give it; a missing path is a usage error.
    let output = project.run(&[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("pass --secure-file ca.pem=PATH"),
        "{}",
        text(&output)
    );
    let output = project.run(&["--secure-file", "ca.pem=/nowhere/at/all"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("--secure-file ca.pem"),
        "{}",
        text(&output)
    );
}
