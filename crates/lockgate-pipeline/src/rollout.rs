//! A deployment job over an environment's virtual machines (`environment: {name, resourceType:
//! VirtualMachine, tags}`) runs on every target that matches: one job instance per target, in
//! batches the strategy gives. `runOnce` deploys to all targets at once; `rolling` to `maxParallel`
//! of them at a time (a number, or a percentage of the targets); `canary` to `increments[0]`
//! targets, then `increments[1]` more, ..., then the rest. A batch starts when every earlier one
//! succeeded (the run engine's `rollout_batch`), so a failed target stops the rollout.
//!
//! Sources: Microsoft's "Deployment jobs" (deployment strategies, lifecycle hooks: "rolling ...
//! maxParallel: [ number or percentage as x% ]", "canary ... increments"), "jobs.deployment.strategy.
//! rolling" ("replaces instances ... on a fixed set of virtual machines (rolling set) in each
//! iteration") and "Environment - virtual machine resource" (targets picked by tags). The docs do not
//! say how a percentage rounds: here it is rounded down, and at least one target.

use crate::plan::{DeploymentStrategy, Job};

/// The resource type of an environment's virtual machines.
pub const VIRTUAL_MACHINE: &str = "VirtualMachine";

/// Whether the job is a deployment to an environment's virtual machine resources.
pub fn targets_virtual_machines(job: &Job) -> bool {
    job.deployment.is_some()
        && job
            .environment
            .as_ref()
            .and_then(|e| e.resource_type.as_deref())
            .is_some_and(|t| t.eq_ignore_ascii_case(VIRTUAL_MACHINE))
}

/// How many of `count` targets a `rolling` batch deploys to: `maxParallel` as a whole number of
/// targets (at least 1), or `N%` of the targets (1 to 100) rounded down and at least one. Without
/// `maxParallel`, one target at a time.
pub fn rolling_batch_size(max_parallel: Option<&str>, count: usize) -> Result<usize, String> {
    let Some(text) = max_parallel.map(str::trim) else {
        return Ok(1);
    };
    let wrong = || {
        format!(
            "`maxParallel` is a number of targets (1 or more) or a percentage of them (`1%` to \
             `100%`), not `{text}`"
        )
    };
    match text.strip_suffix('%') {
        Some(percent) => {
            let percent: usize = percent.trim().parse().map_err(|_| wrong())?;
            if !(1..=100).contains(&percent) {
                return Err(wrong());
            }
            Ok((count * percent / 100).max(1))
        }
        None => match text.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(wrong()),
        },
    }
}

/// The sizes of the batches `count` targets are deployed in, in order (they add up to `count`;
/// none is empty).
pub fn batch_sizes(strategy: &DeploymentStrategy, count: usize) -> Result<Vec<usize>, String> {
    let mut sizes = Vec::new();
    let mut left = count;
    match strategy.name.as_str() {
        "rolling" => {
            let size = rolling_batch_size(strategy.max_parallel.as_deref(), count)?;
            while left > 0 {
                let take = size.min(left);
                sizes.push(take);
                left -= take;
            }
        }
        "canary" => {
            for &increment in &strategy.increments {
                let take = (increment as usize).min(left);
                if take > 0 {
                    sizes.push(take);
                    left -= take;
                }
            }
            if left > 0 {
                sizes.push(left);
            }
        }
        _ => {
            if count > 0 {
                sizes.push(count);
            }
        }
    }
    Ok(sizes)
}

/// The job's instances, one per target in `targets`' order: `NAME_1`, `NAME_2`, ... (displayed as
/// `DISPLAY TARGET`), each with the target as its `environment.resourceName` and its batch in
/// `strategy.rollout_batch`. For `canary`, a target keeps the hooks of its own increment (the
/// last batch, the rest, those of the promotion to 100%) with `preDeploy` and `on`.
pub fn expand(job: &Job, targets: &[String]) -> Result<Vec<Job>, String> {
    let Some(deployment) = &job.deployment else {
        return Ok(vec![job.clone()]);
    };
    let sizes = batch_sizes(deployment, targets.len())?;
    let display = job.display_name.clone().unwrap_or_else(|| job.name.clone());
    let mut out = Vec::with_capacity(targets.len());
    let mut index = 0;
    for (batch, size) in sizes.iter().enumerate() {
        let increment = canary_increment(deployment, batch);
        for target in &targets[index..index + size] {
            index += 1;
            let mut instance = job.clone();
            instance.name = format!("{}_{index}", job.name);
            instance.display_name = Some(format!("{display} {target}"));
            instance.strategy.position_in_phase = index as u32;
            instance.strategy.total_jobs_in_phase = targets.len() as u32;
            instance.strategy.max_parallel = 0;
            instance.strategy.rollout_batch = batch as u32 + 1;
            if let Some(environment) = &mut instance.environment {
                environment.resource_name = Some(target.clone());
            }
            if let (Some(increment), Some(strategy)) = (increment, &mut instance.deployment) {
                strategy
                    .phases
                    .retain(|phase| phase.increment.is_none_or(|own| own == increment));
            }
            out.push(instance);
        }
    }
    Ok(out)
}

/// The increment whose hooks canary batch `batch` runs: its own, or for the batch of the rest
/// the promotion to 100% (the last increment when that is 100). `None` for other strategies and
/// a canary without increments.
fn canary_increment(deployment: &DeploymentStrategy, batch: usize) -> Option<u32> {
    if deployment.name != "canary" || deployment.increments.is_empty() {
        return None;
    }
    deployment.increments.get(batch).copied().or_else(|| {
        let promoted = deployment
            .phases
            .iter()
            .any(|phase| phase.increment == Some(100));
        if promoted {
            Some(100)
        } else {
            deployment.increments.last().copied()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strategy(name: &str, max_parallel: Option<&str>, increments: &[u32]) -> DeploymentStrategy {
        DeploymentStrategy {
            name: name.into(),
            max_parallel: max_parallel.map(str::to_string),
            increments: increments.to_vec(),
            phases: Vec::new(),
        }
    }

    #[test]
    fn batches_follow_the_strategy_and_percentages_round_down_to_at_least_one() {
        let rolling = |max: Option<&str>, n| batch_sizes(&strategy("rolling", max, &[]), n);
        assert_eq!(rolling(Some("1"), 3).unwrap(), [1, 1, 1]);
        assert_eq!(rolling(Some("2"), 5).unwrap(), [2, 2, 1]);
        assert_eq!(rolling(Some("10"), 3).unwrap(), [3]);
        assert_eq!(rolling(None, 2).unwrap(), [1, 1]);
        assert_eq!(rolling(Some("50%"), 5).unwrap(), [2, 2, 1]);
        assert_eq!(rolling(Some("25%"), 8).unwrap(), [2, 2, 2, 2]);
        assert_eq!(rolling(Some("10%"), 3).unwrap(), [1, 1, 1]);
        assert_eq!(rolling(Some("100%"), 4).unwrap(), [4]);
        assert_eq!(rolling(Some(" 34% "), 3).unwrap(), [1, 1, 1]);
        assert!(rolling(Some("1"), 0).unwrap().is_empty());
        for bad in ["0", "-1", "abc", "0%", "150%", "%", "1.5"] {
            let error = rolling(Some(bad), 3).unwrap_err();
            assert!(error.contains(&format!("not `{bad}`")), "{error}");
        }
        let canary = |increments: &[u32], n| batch_sizes(&strategy("canary", None, increments), n);
        assert_eq!(canary(&[1, 2], 3).unwrap(), [1, 2]);
        assert_eq!(canary(&[1, 2], 5).unwrap(), [1, 2, 2]);
        assert_eq!(canary(&[1, 2], 1).unwrap(), [1]);
        assert_eq!(canary(&[10], 3).unwrap(), [3]);
        assert_eq!(canary(&[], 3).unwrap(), [3]);
        assert_eq!(
            batch_sizes(&strategy("runOnce", None, &[]), 4).unwrap(),
            [4]
        );
        assert!(
            batch_sizes(&strategy("runOnce", None, &[]), 0)
                .unwrap()
                .is_empty()
        );
    }

    fn compiled(yaml: &'static str) -> Job {
        let output = crate::compile(&crate::CompileInput {
            entry: "azure-pipelines.yml".into(),
            reader: &crate::SingleFile(yaml),
            parameters: Vec::new(),
            variables: Vec::new(),
        });
        assert!(!output.has_errors(), "{:?}", output.diagnostics);
        output.plan.unwrap().stages.remove(0).jobs.remove(0)
    }

    #[test]
    fn each_target_gets_an_instance_with_its_batch_and_its_increments_hooks() {
        let job = compiled(
            "jobs:\n- deployment: Web\n  environment:\n    name: staging\n    resourceType: VirtualMachine\n    tags: web\n  strategy:\n    canary:\n      increments: [1, 2]\n      preDeploy:\n        steps:\n        - script: echo pre\n      deploy:\n        steps:\n        - script: echo deploy\n      on:\n        failure:\n          steps:\n          - script: echo failed\n",
        );
        assert!(targets_virtual_machines(&job));
        let targets: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let legs = expand(&job, &targets).unwrap();
        let summary: Vec<(String, String, u32, Vec<String>)> = legs
            .iter()
            .map(|leg| {
                (
                    leg.name.clone(),
                    leg.environment
                        .as_ref()
                        .unwrap()
                        .resource_name
                        .clone()
                        .unwrap(),
                    leg.strategy.rollout_batch,
                    leg.deployment
                        .as_ref()
                        .unwrap()
                        .phases
                        .iter()
                        .map(|p| match p.increment {
                            Some(n) => format!("{}_{n}", p.hook),
                            None => p.hook.clone(),
                        })
                        .collect(),
                )
            })
            .collect();
        let hooks = |increment: &str| {
            vec![
                "preDeploy".to_string(),
                format!("deploy_{increment}"),
                "on.failure".to_string(),
            ]
        };
        assert_eq!(
            summary,
            [
                ("Web_1".into(), "a".into(), 1, hooks("1")),
                ("Web_2".into(), "b".into(), 2, hooks("2")),
                ("Web_3".into(), "c".into(), 2, hooks("2")),
                ("Web_4".into(), "d".into(), 3, hooks("100")),
            ]
        );
        assert_eq!(legs[2].display_name.as_deref(), Some("Web c"));
        assert_eq!(legs[2].base_name, "Web");
        assert_eq!(
            (
                legs[3].strategy.position_in_phase,
                legs[3].strategy.total_jobs_in_phase
            ),
            (4, 4)
        );
        let plain = compiled(
            "jobs:\n- deployment: Web\n  environment: staging\n  strategy:\n    runOnce:\n      deploy:\n        steps:\n        - script: echo d\n",
        );
        assert!(!targets_virtual_machines(&plain));
    }
}
