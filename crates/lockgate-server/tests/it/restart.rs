//! A server killed half way starts again on the same data folder and finishes every run: a run
//! stored but never scheduled gets its jobs queued, a job its built-in agent held before any step is
//! queued again, and one that had started a step fails with the reason in its log.

use lockgate_protocol::api;
use lockgate_server::runs::{Reconciled, SERVER_STOPPED_LINE};
use lockgate_store::{Step, now_millis};

use crate::end_to_end::{
    commit_and_push, git, job_result, project_with_pipeline, run_detail, run_logs, start_on,
    wait_for_runs,
};

const PIPELINE: &str = "\
trigger: [main]
jobs:
- job: first
  steps:
  - script: echo first job ran
- job: second
  dependsOn: first
  steps:
  - script: echo second job ran
";

#[test]
fn a_restarted_server_finishes_the_runs_a_killed_one_left_unfinished() {
    let data = tempfile::tempdir().unwrap();
    // The first process has no agents, so nothing moves while the state is arranged.
    let first = start_on(data.path(), false);
    let state = first.state.clone();
    let server = first.running();
    let (push_url, pipeline) = project_with_pipeline(&server);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    commit_and_push(
        work.path(),
        &push_url,
        &[("azure-pipelines.yml", PIPELINE)],
        "main",
    );
    for _ in 0..2 {
        let _: api::Run = server
            .client
            .post_json(
                &format!("/api/v1/pipelines/{pipeline}/runs"),
                &api::QueueRun {
                    branch: None,
                    parameters: Vec::new(),
                    variables: Default::default(),
                },
            )
            .unwrap();
    }
    let mut runs: Vec<api::Run> = crate::end_to_end::runs_of(&server, pipeline);
    runs.reverse();
    assert_eq!(runs.len(), 3);
    let [unscheduled, leased, stepping] = [runs[0].id, runs[1].id, runs[2].id];
    server.block_on(async {
        let store = &state.store;
        // Killed between storing the run and queueing its jobs.
        let jobs = store.jobs_of_run(unscheduled).await.unwrap();
        store
            .set_job_status(jobs[0].id, "pending", None)
            .await
            .unwrap();
        // Killed while built-in agents held a job each, one before its first step. (This process
        // has none: they are registered as an earlier process with built-in agents left them.)
        for name in ["built-in-1", "built-in-2"] {
            store
                .register_builtin_agent(name, &format!("old-{name}"))
                .await
                .unwrap();
        }
        let far = now_millis() + 600_000;
        let held = store
            .lease_next_job("built-in-1", "Linux", "lease-1", far)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(held.run_id, leased);
        let held = store
            .lease_next_job("built-in-2", "Linux", "lease-2", far)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(held.run_id, stepping);
        store
            .upsert_step(&Step {
                job_id: held.id,
                position: 1,
                name: "CmdLine".into(),
                status: "running".into(),
                result: None,
                started_at: Some(now_millis()),
                finished_at: None,
            })
            .await
            .unwrap();
        for run in [leased, stepping] {
            store.set_run_status(run, "running", None).await.unwrap();
        }
    });
    // SIGKILL-like: the runtime goes, nothing is finished or cleaned up.
    drop(server);

    let second = start_on(data.path(), true);
    assert_eq!(
        second.reconciled,
        Reconciled {
            runs: 3,
            requeued: 1,
            failed: 1
        }
    );
    let server = second.running();
    let runs = wait_for_runs(&server, pipeline, "every run completed", |runs| {
        runs.len() == 3 && runs.iter().all(|run| run.status == "completed")
    });
    let result_of = |id: i64| {
        runs.iter()
            .find(|run| run.id == id)
            .and_then(|run| run.result.clone())
            .unwrap()
    };
    for run in [unscheduled, leased] {
        assert_eq!(result_of(run), "succeeded", "run {run}");
        let logs = run_logs(&server, run);
        assert!(logs.contains("first job ran"), "{logs}");
        assert!(logs.contains("second job ran"), "{logs}");
    }
    assert!(run_logs(&server, leased).contains("the job was queued again"));

    assert_eq!(result_of(stepping), "failed");
    let detail = run_detail(&server, stepping);
    assert_eq!(job_result(&detail, "first"), "failed");
    assert_eq!(job_result(&detail, "second"), "skipped");
    let steps = &detail.jobs[0].steps;
    assert!(
        steps.iter().all(|step| step.status == "completed"),
        "{steps:?}"
    );
    let logs = run_logs(&server, stepping);
    assert!(logs.contains(SERVER_STOPPED_LINE), "{logs}");
    assert!(
        !logs.contains("first job ran"),
        "the step was not run again: {logs}"
    );
}
