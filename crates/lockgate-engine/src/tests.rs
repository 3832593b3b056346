//! Data in, decisions out: each test compiles a pipeline, plays job results into the engine and
//! compares the decisions it took, as a trace, with the expected one.

use super::*;

fn graph(yaml: &'static str) -> Graph {
    let output = lockgate_pipeline::compile(&lockgate_pipeline::CompileInput {
        entry: "azure-pipelines.yml".into(),
        reader: &lockgate_pipeline::SingleFile(yaml),
        parameters: Vec::new(),
        variables: Vec::new(),
    });
    let plan = output
        .plan
        .unwrap_or_else(|| panic!("{:?}", output.diagnostics));
    Graph::from_plan(&plan, |stage, job| {
        let mut all: Vec<(String, String)> = yaml_variables(&plan.variables).collect();
        all.extend(yaml_variables(&stage.variables));
        if let Some(job) = job {
            all.extend(yaml_variables(&job.variables));
        }
        all
    })
}

/// What a job reports when it runs: its result and outputs (`step.var=value`).
type Script = &'static [(
    &'static str,
    TaskResult,
    &'static [(&'static str, &'static str)],
)];

fn line(engine: &Engine, decision: &Decision) -> String {
    let graph = engine.graph();
    let job = |index: usize| graph.jobs[index].name.clone();
    match decision {
        Decision::StageStarted { stage } => format!("stage {} started", graph.stages[*stage].name),
        Decision::AwaitChecks { stage } => {
            format!("stage {} waits for checks", graph.stages[*stage].name)
        }
        Decision::StageFinished { stage, result } => {
            format!(
                "stage {}: {}",
                graph.stages[*stage].name,
                result_name(*result)
            )
        }
        Decision::Start {
            job: index,
            values,
            fields,
        } => {
            let mut text = format!("start {}", job(*index));
            for (position, value) in values {
                let name = &graph.jobs[*index].variables[*position].0;
                text.push_str(&format!(" {name}={value}"));
            }
            for (key, value) in fields {
                text.push_str(&format!(" {key}={value}"));
            }
            text
        }
        Decision::Finish {
            job: index,
            result,
            message,
        } => match message {
            Some(message) => format!("end {}: {} ({message})", job(*index), result_name(*result)),
            None => format!("end {}: {}", job(*index), result_name(*result)),
        },
        Decision::CancelRunning { job: index } => format!("cancel {}", job(*index)),
        Decision::RunFinished { result } => format!("run: {}", result_name(*result)),
    }
}

/// Runs the engine to the end: started jobs finish one at a time, in the order they started, with
/// the script's result (succeeded, no outputs, when not listed). `cancel_after` cancels the run
/// once that job has started, before it finishes.
fn play(graph: Graph, script: Script, cancel_after: Option<&str>) -> Vec<String> {
    let mut engine = Engine::new(graph, vec![("Build.Reason".into(), "Manual".into())]);
    let mut trace = Vec::new();
    let mut running: Vec<usize> = Vec::new();
    let mut decisions = engine.advance();
    loop {
        for decision in &decisions {
            trace.push(line(&engine, decision));
            if let Decision::Start { job, .. } = decision {
                running.push(*job);
            }
        }
        for &job in &running {
            engine.job_started(job);
        }
        if engine.is_finished() {
            return trace;
        }
        let Some(&job) = running.first() else {
            decisions = engine.abandon();
            continue;
        };
        let name = engine.graph().jobs[job].name.clone();
        if cancel_after == Some(name.as_str()) && !engine.is_canceled() {
            decisions = engine.cancel();
            continue;
        }
        running.remove(0);
        let (result, outputs) = script
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, result, outputs)| {
                let outputs = outputs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                (*result, outputs)
            })
            .unwrap_or((TaskResult::Succeeded, BTreeMap::new()));
        let result = if engine.is_canceled() && cancel_after == Some(name.as_str()) {
            TaskResult::Canceled
        } else {
            result
        };
        trace.push(format!("{name} -> {}", result_name(result)));
        engine.job_finished(job, result, outputs);
        decisions = engine.advance();
    }
}

fn assert_trace(actual: Vec<String>, expected: &str) {
    let expected: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(actual, expected, "actual trace:\n{}", actual.join("\n"));
}

#[test]
fn a_failure_skips_default_dependents_and_always_still_runs() {
    let trace = play(
        graph(
            "jobs:\n- job: A\n  steps: [script: x]\n- job: B\n  dependsOn: A\n  steps: [script: x]\n\
             - job: C\n  dependsOn: A\n  condition: always()\n  steps: [script: x]\n\
             - job: D\n  dependsOn: A\n  condition: failed()\n  steps: [script: x]\n",
        ),
        &[("A", TaskResult::Failed, &[])],
        None,
    );
    assert_trace(
        trace,
        "stage __default started
         start A
         A -> Failed
         end B: Skipped
         start C
         start D
         C -> Succeeded
         D -> Succeeded
         stage __default: Failed
         run: Failed",
    );
}

#[test]
fn outputs_reach_dependent_jobs_stages_and_runtime_values() {
    let trace = play(
        graph(
            "stages:\n- stage: One\n  jobs:\n  - job: A\n    steps: [script: x]\n\
             \x20 - job: B\n    dependsOn: A\n    condition: eq(dependencies.A.outputs['s.v'], 'yes')\n\
             \x20   variables:\n      got: $[ dependencies.A.outputs['s.v'] ]\n      plain: p\n\
             \x20   steps: [script: x]\n\
             - stage: Two\n  condition: eq(dependencies.One.outputs['A.s.v'], 'yes')\n  jobs:\n\
             \x20 - job: C\n    variables:\n      far: $[ stageDependencies.One.A.outputs['s.v'] ]\n\
             \x20   steps: [script: x]\n\
             - stage: Three\n  dependsOn: Two\n  jobs:\n\
             \x20 - job: D\n    variables:\n      hidden: $[ stageDependencies.One.A.outputs['s.v'] ]\n\
             \x20   steps: [script: x]\n",
        ),
        &[("A", TaskResult::Succeeded, &[("s.v", "yes")])],
        None,
    );
    // Only direct stage dependencies are visible: Three does not see One.
    assert_trace(
        trace,
        "stage One started
         start A
         A -> Succeeded
         start B got=yes
         B -> Succeeded
         stage One: Succeeded
         stage Two started
         start C far=yes
         C -> Succeeded
         stage Two: Succeeded
         stage Three started
         start D hidden=
         D -> Succeeded
         stage Three: Succeeded
         run: Succeeded",
    );
}

#[test]
fn matrix_legs_respect_max_parallel_and_publish_outputs_under_their_leg() {
    let trace = play(
        graph(
            "jobs:\n- job: T\n  strategy:\n    maxParallel: 1\n    matrix:\n      a: {x: 1}\n      b: {x: 2}\n\
             \x20 steps: [script: x]\n\
             - job: R\n  dependsOn: T\n  variables:\n    seen: $[ dependencies.T.outputs['b.s.v'] ]\n\
             \x20 steps: [script: x]\n",
        ),
        &[
            ("T_a", TaskResult::Failed, &[("s.v", "from-a")]),
            ("T_b", TaskResult::Succeeded, &[("s.v", "from-b")]),
        ],
        None,
    );
    assert_trace(
        trace,
        "stage __default started
         start T_a
         T_a -> Failed
         start T_b
         T_b -> Succeeded
         end R: Skipped
         stage __default: Failed
         run: Failed",
    );
}

#[test]
fn continue_on_error_turns_a_failure_into_issues_for_dependents_and_results() {
    let trace = play(
        graph(
            "variables:\n  allow: yes\njobs:\n- job: A\n  continueOnError: true\n  steps: [script: x]\n\
             - job: B\n  dependsOn: A\n  steps: [script: x]\n\
             - job: C\n  continueOnError: $[ eq(variables.allow, 'yes') ]\n  timeoutInMinutes: $[ 5 ]\n\
             \x20 steps: [script: x]\n\
             - job: D\n  dependsOn: C\n  condition: eq(dependencies.C.result, 'SucceededWithIssues')\n\
             \x20 steps: [script: x]\n\
             - job: E\n  continueOnError: $[ 'maybe' ]\n  steps: [script: x]\n",
        ),
        &[
            ("A", TaskResult::Failed, &[]),
            ("C", TaskResult::Failed, &[]),
        ],
        None,
    );
    assert_trace(
        trace,
        "stage __default started
         start A
         start C continueOnError=true timeoutInMinutes=5
         end E: Failed (job `continueOnError`: `continueOnError` must evaluate to true or false, but `$[ 'maybe' ]` gave `maybe`)
         A -> Failed
         start B
         C -> Failed
         start D
         B -> Succeeded
         D -> Succeeded
         stage __default: Failed
         run: Failed",
    );
}

#[test]
fn issues_alone_make_the_run_partially_succeed() {
    let trace = play(
        graph("jobs:\n- job: A\n  continueOnError: true\n  steps: [script: x]\n"),
        &[("A", TaskResult::Failed, &[])],
        None,
    );
    assert_eq!(trace.last().unwrap(), "run: SucceededWithIssues");
}

#[test]
fn bad_conditions_fail_the_job_or_the_stage_with_the_reason() {
    let trace = play(
        graph(
            "stages:\n- stage: One\n  jobs:\n  - job: A\n    condition: succeeded('Nope')\n    steps: [script: x]\n\
             - stage: Two\n  dependsOn: []\n  condition: succeeded('Nowhere')\n  jobs:\n  - job: B\n    steps: [script: x]\n\
             \x20 - job: C\n    dependsOn: B\n    steps: [script: x]\n",
        ),
        &[],
        None,
    );
    assert_eq!(trace[0], "stage One started");
    assert!(
        trace
            .iter()
            .any(|l| l.starts_with("end A: Failed (invalid condition of job A: ")),
        "{trace:?}"
    );
    assert!(
        trace
            .iter()
            .any(|l| l.starts_with("end B: Failed (invalid condition of stage Two: ")),
        "{trace:?}"
    );
    assert!(trace.contains(&"end C: Skipped".to_string()), "{trace:?}");
    assert!(
        trace.contains(&"stage Two: Failed".to_string()),
        "{trace:?}"
    );
    assert_eq!(trace.last().unwrap(), "run: Failed");
}

#[test]
fn a_cancel_stops_running_jobs_and_only_jobs_that_may_run_after_it_wait() {
    let trace = play(
        graph(
            "stages:\n- stage: One\n  jobs:\n  - job: A\n    steps: [script: x]\n\
             \x20 - job: B\n    dependsOn: A\n    steps: [script: x]\n\
             \x20 - job: C\n    dependsOn: A\n    condition: always()\n    steps: [script: x]\n\
             \x20 - job: D\n    dependsOn: A\n    condition: eq(dependencies.A.result, 'Canceled')\n\
             \x20   steps: [script: x]\n\
             - stage: Two\n  jobs:\n  - job: E\n    steps: [script: x]\n\
             - stage: Three\n  dependsOn: One\n  condition: canceled()\n  jobs:\n  - job: F\n    steps: [script: x]\n\
             \x20 - job: G\n    condition: canceled()\n    steps: [script: x]\n",
        ),
        &[],
        Some("A"),
    );
    assert_trace(
        trace,
        "stage One started
         start A
         cancel A
         end B: Skipped
         end E: Skipped
         stage Two: Skipped
         end F: Skipped
         A -> Canceled
         start C
         start D
         C -> Succeeded
         D -> Succeeded
         stage One: Canceled
         stage Three started
         start G
         G -> Succeeded
         stage Three: Succeeded
         run: Canceled",
    );
}

#[test]
fn a_queued_job_ends_canceled_and_a_failure_outlasts_the_cancel() {
    let mut engine = Engine::new(
        graph("jobs:\n- job: A\n  steps: [script: x]\n- job: B\n  steps: [script: x]\n"),
        Vec::new(),
    );
    let started = engine.advance();
    assert_eq!(started.len(), 3, "{started:?}");
    engine.job_started(0);
    let decisions = engine.cancel();
    assert_eq!(
        decisions,
        vec![
            Decision::CancelRunning { job: 0 },
            Decision::Finish {
                job: 1,
                result: TaskResult::Canceled,
                message: None
            },
        ]
    );
    engine.job_finished(0, TaskResult::Failed, BTreeMap::new());
    let decisions = engine.advance();
    assert_eq!(
        decisions.last(),
        Some(&Decision::RunFinished {
            result: TaskResult::Failed
        })
    );
}

#[test]
fn a_restored_run_goes_on_where_it_was() {
    let yaml = "stages:\n- stage: One\n  jobs:\n  - job: A\n    steps: [script: x]\n\
                \x20 - job: B\n    dependsOn: A\n    condition: failed()\n    steps: [script: x]\n\
                \x20 - job: C\n    dependsOn: B\n    condition: always()\n    steps: [script: x]\n\
                - stage: Two\n  jobs:\n  - job: D\n    steps: [script: x]\n";
    let done = |result| JobState::Done {
        result,
        outputs: BTreeMap::new(),
    };
    // B was skipped, C waits: the stage has started, so its condition is not evaluated again.
    let mut engine = Engine::restore(
        graph(yaml),
        Vec::new(),
        vec![
            done(TaskResult::Succeeded),
            done(TaskResult::Skipped),
            JobState::Waiting,
            JobState::Waiting,
        ],
        false,
    );
    assert_eq!(engine.stage_state(0), Some(StageState::Running));
    assert_eq!(engine.stage_state(1), Some(StageState::Waiting));
    let trace: Vec<String> = engine.advance().iter().map(|d| line(&engine, d)).collect();
    assert_eq!(trace, ["start C"]);
    // Everything done: the run finishes with what its jobs did.
    let mut engine = Engine::restore(
        graph(yaml),
        Vec::new(),
        vec![
            done(TaskResult::Succeeded),
            done(TaskResult::Skipped),
            done(TaskResult::Succeeded),
            done(TaskResult::SucceededWithIssues),
        ],
        false,
    );
    assert_eq!(
        engine.advance(),
        vec![Decision::RunFinished {
            result: TaskResult::SucceededWithIssues
        }]
    );
}

#[test]
fn predefined_variables_win_and_pipeline_start_time_is_readable() {
    let graph = graph(
        "variables:\n  Build.Reason: Schedule\njobs:\n- job: A\n  condition: eq(variables['Build.Reason'], 'Manual')\n\
         \x20 variables:\n    year: $[ format('{0:yyyy}', pipeline.startTime) ]\n  steps: [script: x]\n",
    );
    let mut engine = Engine::new(
        graph,
        vec![
            ("Build.Reason".into(), "Manual".into()),
            (
                run_number::START_TIME_VARIABLE.into(),
                "2026-12-07 10:00:00Z".into(),
            ),
        ],
    );
    let decisions = engine.advance();
    let trace: Vec<String> = decisions.iter().map(|d| line(&engine, d)).collect();
    assert_eq!(trace[1], "start A year=2026", "{trace:?}");
}

#[test]
fn a_partial_run_leaves_unselected_stages_out_of_the_result() {
    let yaml = "stages:\n- stage: One\n  jobs:\n  - job: A\n    steps: [script: x]\n\
                - stage: Two\n  dependsOn: []\n  jobs:\n  - job: B\n    steps: [script: x]\n";
    let mut engine = Engine::restore(
        graph(yaml),
        Vec::new(),
        vec![
            JobState::Done {
                result: TaskResult::Failed,
                outputs: BTreeMap::new(),
            },
            JobState::Waiting,
        ],
        false,
    );
    engine.leave_out_of_result(0);
    let decisions = engine.advance();
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    engine.job_started(1);
    engine.job_finished(1, TaskResult::Succeeded, BTreeMap::new());
    assert_eq!(
        engine.advance().last(),
        Some(&Decision::RunFinished {
            result: TaskResult::Succeeded
        })
    );
}

#[test]
fn a_gated_stage_waits_for_its_checks_and_fails_when_rejected() {
    let yaml = "stages:\n- stage: Build\n  jobs:\n  - job: A\n    steps: [script: x]\n\
                - stage: Test\n  jobs:\n  - job: B\n    steps: [script: x]\n\
                - stage: Prod\n  dependsOn: Test\n  jobs:\n  - job: C\n    steps: [script: x]\n";
    let gated = || {
        let mut graph = graph(yaml);
        graph.stages[1].gated = true;
        graph.stages[2].gated = true;
        graph
    };
    let done = |result| JobState::Done {
        result,
        outputs: BTreeMap::new(),
    };
    let mut engine = Engine::new(gated(), Vec::new());
    let mut trace: Vec<String> = engine.advance().iter().map(|d| line(&engine, d)).collect();
    engine.job_started(0);
    engine.job_finished(0, TaskResult::Succeeded, BTreeMap::new());
    trace.extend(engine.advance().iter().map(|d| line(&engine, d)));
    // Nothing moves while the checks are pending.
    assert!(engine.advance().is_empty());
    engine.set_gate(1, Gate::Open);
    trace.extend(engine.advance().iter().map(|d| line(&engine, d)));
    engine.job_started(1);
    engine.job_finished(1, TaskResult::Succeeded, BTreeMap::new());
    trace.extend(engine.advance().iter().map(|d| line(&engine, d)));
    engine.set_gate(2, Gate::Rejected);
    trace.extend(engine.advance().iter().map(|d| line(&engine, d)));
    assert_trace(
        trace,
        "stage Build started
         start A
         stage Build: Succeeded
         stage Test waits for checks
         stage Test started
         start B
         stage Test: Succeeded
         stage Prod waits for checks
         end C: Skipped
         stage Prod: Failed
         run: Failed",
    );
    // Restored while waiting: the stage asks again, and starts once the checks passed.
    let mut engine = Engine::restore(
        gated(),
        Vec::new(),
        vec![
            done(TaskResult::Succeeded),
            JobState::Waiting,
            JobState::Waiting,
        ],
        false,
    );
    assert_eq!(engine.advance(), vec![Decision::AwaitChecks { stage: 1 }]);
    let mut engine = Engine::restore(
        gated(),
        Vec::new(),
        vec![
            done(TaskResult::Succeeded),
            JobState::Waiting,
            JobState::Waiting,
        ],
        false,
    );
    engine.set_gate(1, Gate::Open);
    let trace: Vec<String> = engine.advance().iter().map(|d| line(&engine, d)).collect();
    assert_eq!(trace, ["stage Test started", "start B"]);
    // A cancel while a stage waits for its checks skips it under its default condition.
    let mut engine = Engine::new(gated(), Vec::new());
    engine.advance();
    engine.job_started(0);
    engine.job_finished(0, TaskResult::Succeeded, BTreeMap::new());
    engine.advance();
    let trace: Vec<String> = engine.cancel().iter().map(|d| line(&engine, d)).collect();
    assert_eq!(
        trace,
        [
            "end B: Skipped",
            "stage Test: Skipped",
            "end C: Skipped",
            "stage Prod: Skipped",
            "run: Canceled"
        ]
    );
}

#[test]
fn names_ignore_case_and_runtime_variables_see_each_other_and_reach_conditions() {
    let trace = play(
        graph(
            "variables:\n  a: $[ 'one' ]\n  b: $[ format('{0}-two', variables.a) ]\n\
             \x20 isMain: $[ eq(variables['Build.Reason'], 'Manual') ]\n\
             stages:\n- stage: Build\n  jobs:\n  - job: Producer\n    steps: [script: x]\n\
             - stage: Deploy\n  dependsOn: build\n  condition: and(succeeded(), eq(variables.isMain, true))\n\
             \x20 jobs:\n  - job: First\n    steps: [script: x]\n\
             \x20 - job: Second\n    dependsOn: first\n    condition: eq(dependencies.FIRST.result, 'SucceededWithIssues')\n\
             \x20   variables:\n      c: $[ variables.b ]\n    steps: [script: x]\n",
        ),
        &[
            ("Producer", TaskResult::Succeeded, &[("s.v", "out")]),
            ("First", TaskResult::Failed, &[]),
        ],
        None,
    );
    // Deploy waits for Build although `dependsOn` spells it `build`; a continueOnError-less
    // failure does not satisfy Second's condition.
    assert_trace(
        trace,
        "stage Build started
         start Producer a=one b=one-two isMain=True
         Producer -> Succeeded
         stage Build: Succeeded
         stage Deploy started
         start First a=one b=one-two isMain=True
         First -> Failed
         end Second: Skipped
         stage Deploy: Failed
         run: Failed",
    );
}

#[test]
fn a_tolerated_failure_is_the_jobs_own_result_too() {
    let mut engine = Engine::new(
        graph("jobs:\n- job: A\n  continueOnError: true\n  steps: [script: x]\n"),
        Vec::new(),
    );
    engine.advance();
    engine.job_started(0);
    assert_eq!(
        engine.job_result(0, TaskResult::Failed),
        TaskResult::SucceededWithIssues
    );
    assert_eq!(
        engine.job_result(0, TaskResult::Canceled),
        TaskResult::Canceled
    );
    engine.job_finished(0, TaskResult::Failed, BTreeMap::new());
    assert!(matches!(
        engine.job_state(0),
        Some(JobState::Done {
            result: TaskResult::SucceededWithIssues,
            ..
        })
    ));
}

#[test]
fn a_manual_stage_waits_for_a_start_and_the_run_finishes_without_it() {
    let yaml = "stages:\n- stage: Build\n  jobs:\n  - job: A\n    steps: [script: x]\n\
                - stage: Prod\n  trigger: manual\n  jobs:\n  - job: B\n    steps: [script: x]\n\
                - stage: After\n  dependsOn: Prod\n  jobs:\n  - job: C\n    steps: [script: x]\n";
    assert!(graph(yaml).stages[1].manual);
    // Nobody starts Prod: the run is finished once Build is, with Build's result; Prod and the
    // stage after it are left waiting, not skipped.
    let trace = play(graph(yaml), &[], None);
    assert_trace(
        trace,
        "stage Build started
         start A
         A -> Succeeded
         stage Build: Succeeded
         run: Succeeded",
    );
    // Started later (a restored engine, as the server has it): Prod runs, then After.
    let done = JobState::Done {
        result: TaskResult::Succeeded,
        outputs: BTreeMap::new(),
    };
    let mut engine = Engine::restore(
        graph(yaml),
        Vec::new(),
        vec![done, JobState::Waiting, JobState::Waiting],
        false,
    );
    assert!(engine.waits_for_manual_start(1) && engine.waits_for_manual_start(2));
    assert!(!engine.waits_for_manual_start(0));
    engine.start_manually(1);
    let mut trace: Vec<String> = engine.advance().iter().map(|d| line(&engine, d)).collect();
    engine.job_started(1);
    engine.job_finished(1, TaskResult::Failed, BTreeMap::new());
    trace.extend(engine.advance().iter().map(|d| line(&engine, d)));
    assert_trace(
        trace,
        "stage Prod started
         start B
         stage Prod: Failed
         end C: Skipped
         stage After: Skipped
         run: Failed",
    );
}

#[test]
fn a_stage_whose_gate_cancels_it_ends_canceled_without_running() {
    let yaml = "stages:\n- stage: Prod\n  jobs:\n  - job: A\n    steps: [script: x]\n";
    let mut graph = graph(yaml);
    graph.stages[0].gated = true;
    let mut engine = Engine::new(graph, Vec::new());
    let mut trace: Vec<String> = engine.advance().iter().map(|d| line(&engine, d)).collect();
    engine.set_gate(0, Gate::Canceled);
    trace.extend(engine.advance().iter().map(|d| line(&engine, d)));
    assert_trace(
        trace,
        "stage Prod waits for checks
         end A: Canceled
         stage Prod: Canceled
         run: Canceled",
    );
}

/// [`graph`] with the first job, a deployment over virtual machines, expanded over `targets`.
fn rollout_graph(yaml: &'static str, targets: &[&str]) -> Graph {
    let output = lockgate_pipeline::compile(&lockgate_pipeline::CompileInput {
        entry: "azure-pipelines.yml".into(),
        reader: &lockgate_pipeline::SingleFile(yaml),
        parameters: Vec::new(),
        variables: Vec::new(),
    });
    let mut plan = output
        .plan
        .unwrap_or_else(|| panic!("{:?}", output.diagnostics));
    let targets: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
    let job = plan.stages[0].jobs.remove(0);
    let legs = lockgate_pipeline::rollout::expand(&job, &targets).unwrap();
    plan.stages[0].jobs.splice(0..0, legs);
    Graph::from_plan(&plan, |_, _| Vec::new())
}

#[test]
fn a_rollout_deploys_batch_after_batch_and_stops_at_a_failed_target() {
    let rolling = "jobs:\n- deployment: Web\n  environment: {name: staging, resourceType: VirtualMachine}\n  \
                   strategy:\n    rolling:\n      maxParallel: 1\n      deploy:\n        steps: [script: x]\n\
                   - job: After\n  dependsOn: Web\n  steps: [script: x]\n";
    let trace = play(
        rollout_graph(rolling, &["a", "b", "c"]),
        &[
            ("Web_1", TaskResult::Succeeded, &[]),
            ("Web_2", TaskResult::Failed, &[]),
        ],
        None,
    );
    assert_trace(
        trace,
        "stage __default started
         start Web_1
         Web_1 -> Succeeded
         start Web_2
         Web_2 -> Failed
         end Web_3: Skipped
         end After: Skipped
         stage __default: Failed
         run: Failed",
    );
    let canary = "jobs:\n- deployment: Web\n  environment: {name: staging, resourceType: VirtualMachine}\n  \
                  strategy:\n    canary:\n      increments: [1, 2]\n      deploy:\n        steps: [script: x]\n\
                  - job: After\n  dependsOn: Web\n  steps: [script: x]\n";
    let trace = play(
        rollout_graph(canary, &["a", "b", "c", "d"]),
        &[
            ("Web_1", TaskResult::Succeeded, &[]),
            ("Web_2", TaskResult::Succeeded, &[]),
            ("Web_3", TaskResult::Succeeded, &[]),
            ("Web_4", TaskResult::Succeeded, &[]),
            ("After", TaskResult::Succeeded, &[]),
        ],
        None,
    );
    assert_trace(
        trace,
        "stage __default started
         start Web_1
         Web_1 -> Succeeded
         start Web_2
         start Web_3
         Web_2 -> Succeeded
         Web_3 -> Succeeded
         start Web_4
         Web_4 -> Succeeded
         start After
         After -> Succeeded
         stage __default: Succeeded
         run: Succeeded",
    );
}
