//! Deployment jobs over an environment's virtual machine resources (agents registered with
//! `--environment ENV --tags ...`): when a run is queued, such a job becomes one job per matching
//! target (`lockgate_pipeline::rollout`: batches per strategy, a failed batch stops the rollout),
//! each pinned to its target by the job row's `target`; only that target leases it.
//!
//! A job is such a deployment when its `environment` says `resourceType: VirtualMachine`, or names
//! a resource (`environment: staging.web-1`, `resourceName`) that is a registered target ("Deployment
//! jobs", "Environment - virtual machine resource"). A target matches when it has every tag the job
//! lists (ignoring case) and, with a resource name, is that resource. Disabled targets are left
//! out. With no target at all the job stays one job that waits, saying why, and runs on the first
//! target that matches.

use lockgate_pipeline::plan::Plan;
use lockgate_pipeline::rollout;
use lockgate_store::{Agent, NewJob};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiResult;

/// Which targets may lease a job (the job row's `target`, JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobTarget {
    pub environment_id: i64,
    /// The environment's name, for the waiting reason.
    pub environment: String,
    /// The one target (resource) it is pinned to; `None`: any target with the tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl JobTarget {
    /// The target a job row names, if any.
    pub fn of(job: &lockgate_store::Job) -> Option<JobTarget> {
        serde_json::from_str(job.target.as_deref()?).ok()
    }

    /// Whether `agent` is a target this job may run on (enabled or not).
    pub fn admits(&self, agent: &Agent) -> bool {
        agent.environment_id == Some(self.environment_id)
            && self
                .resource
                .as_deref()
                .is_none_or(|name| name.eq_ignore_ascii_case(&agent.name))
            && has_tags(agent, &self.tags)
    }

    /// Why the job waits, when no target can run it (`None`: one can, it is merely busy), in words
    /// that follow "Waiting for".
    pub fn waiting_reason(&self, agents: &[Agent]) -> Option<String> {
        let matching: Vec<&Agent> = agents.iter().filter(|a| self.admits(a)).collect();
        if matching.iter().any(|a| a.enabled) {
            return None;
        }
        let what = match (&self.resource, self.tags.is_empty()) {
            (Some(name), _) => format!("the resource `{name}`"),
            (None, true) => "a virtual machine resource".to_string(),
            (None, false) => format!(
                "a virtual machine resource with tags `{}`",
                self.tags.join(", ")
            ),
        };
        if matching.is_empty() {
            Some(format!(
                "{what} of environment `{}`: none is registered (`lockgate agent register \
                 --environment {}{}`)",
                self.environment,
                self.environment,
                if self.tags.is_empty() {
                    String::new()
                } else {
                    format!(" --tags {}", self.tags.join(","))
                }
            ))
        } else {
            Some(format!(
                "{what} of environment `{}`: every matching one is disabled",
                self.environment
            ))
        }
    }
}

fn has_tags(agent: &Agent, tags: &[String]) -> bool {
    tags.iter()
        .all(|tag| agent.tags.iter().any(|have| have.eq_ignore_ascii_case(tag)))
}

/// The target of each job row of a run queued from `plan` (rows in plan order), for the
/// deployments [`expand`] left over virtual machines.
pub struct Pinned(Vec<Option<JobTarget>>);

impl Pinned {
    /// Writes each row's target.
    pub fn apply(self, rows: &mut [NewJob]) {
        for (row, target) in rows.iter_mut().zip(self.0) {
            row.target = target.and_then(|t| serde_json::to_string(&t).ok());
        }
    }
}

/// Replaces every deployment over virtual machines in `plan` by one job per matching target
/// (environments are created on first use, as for the run); an error (a `maxParallel` a macro
/// made unreadable) names the job.
pub async fn expand(
    state: &AppState,
    project_id: i64,
    plan: &mut Plan,
    requested_by: &str,
) -> ApiResult<Result<Pinned, String>> {
    let agents = state.store.list_agents().await?;
    let mut pinned = Vec::new();
    for stage in &mut plan.stages {
        let mut jobs = Vec::with_capacity(stage.jobs.len());
        for job in std::mem::take(&mut stage.jobs) {
            let Some(environment) = job
                .environment
                .as_ref()
                .filter(|_| job.deployment.is_some())
            else {
                pinned.push(None);
                jobs.push(job);
                continue;
            };
            let typed = rollout::targets_virtual_machines(&job);
            if !typed && environment.resource_name.is_none() {
                pinned.push(None);
                jobs.push(job);
                continue;
            }
            if crate::environments::check_name(&environment.name).is_err() {
                // The run fails on the name before anything is created (`environments_of`).
                pinned.push(None);
                jobs.push(job);
                continue;
            }
            let stored = state
                .store
                .ensure_environment(project_id, &environment.name, requested_by)
                .await?;
            let target = JobTarget {
                environment_id: stored.id,
                environment: stored.name.clone(),
                resource: None,
                tags: environment.tags.clone(),
            };
            let mut matching: Vec<String> = agents
                .iter()
                .filter(|a| a.enabled && target.admits(a))
                .filter(|a| {
                    environment
                        .resource_name
                        .as_deref()
                        .is_none_or(|name| name.eq_ignore_ascii_case(&a.name))
                })
                .map(|a| a.name.clone())
                .collect();
            // Targets in the order of their names, whatever the database's collation
            // (docs/compat.md).
            matching.sort_by_key(|name| (name.to_ascii_lowercase(), name.clone()));
            // An environment nobody registered a target in, deployed to without tags, keeps the
            // resource as a name only (`environment: dev.vm1`): an ordinary job, as before
            // environments had targets. With tags, the job waits for a target (below).
            let untargeted = environment.tags.is_empty()
                && !agents.iter().any(|a| a.environment_id == Some(stored.id));
            if (!typed || untargeted) && matching.is_empty() {
                // `environment: name.resource` of another kind of resource: an ordinary job.
                pinned.push(None);
                jobs.push(job);
                continue;
            }
            if matching.is_empty() {
                pinned.push(Some(JobTarget {
                    resource: environment.resource_name.clone(),
                    ..target
                }));
                jobs.push(job);
                continue;
            }
            let legs = match rollout::expand(&job, &matching) {
                Ok(legs) => legs,
                Err(why) => return Ok(Err(format!("job `{}`: {why}", job.name))),
            };
            for leg in legs {
                let resource = leg
                    .environment
                    .as_ref()
                    .and_then(|e| e.resource_name.clone());
                pinned.push(Some(JobTarget {
                    resource,
                    ..target.clone()
                }));
                jobs.push(leg);
            }
        }
        stage.jobs = jobs;
    }
    Ok(Ok(Pinned(pinned)))
}

/// The resource a target's job deploys to, as its lease says it: a job any target with its tags
/// may run is deployed to the target that leased it, so the lease's `environment.resourceName`
/// (the ledger's resource) becomes that target, and `resourceId` its id. Returns the variables
/// "Environment - virtual machine resource" gives such a job: `Environment.Id`,
/// `Environment.ResourceName`, `Environment.ResourceId`, `Environment.ResourceType`.
pub async fn leased_resource(
    state: &AppState,
    job: &lockgate_store::Job,
    lease_job: &mut serde_json::Value,
) -> ApiResult<Vec<(String, String)>> {
    let Some(target) = JobTarget::of(job) else {
        return Ok(Vec::new());
    };
    let Some(environment) = lease_job
        .get_mut("environment")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return Ok(Vec::new());
    };
    let resource = match environment.get("resourceName").and_then(|v| v.as_str()) {
        Some(name) => name.to_string(),
        None => job.agent_name.clone().unwrap_or_default(),
    };
    let id = state
        .store
        .list_agents()
        .await?
        .into_iter()
        .find(|agent| target.admits(agent) && agent.name.eq_ignore_ascii_case(&resource))
        .map(|agent| agent.id.to_string())
        .unwrap_or_default();
    environment.insert("resourceName".into(), resource.clone().into());
    environment.insert("resourceId".into(), id.clone().into());
    Ok(vec![
        ("Environment.Id".into(), target.environment_id.to_string()),
        ("Environment.ResourceName".into(), resource),
        ("Environment.ResourceId".into(), id),
        (
            "Environment.ResourceType".into(),
            rollout::VIRTUAL_MACHINE.into(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str, environment_id: i64, tags: &[&str], enabled: bool) -> Agent {
        Agent {
            id: 1,
            name: name.into(),
            last_seen_at: None,
            created_at: 0,
            builtin: false,
            pool: String::new(),
            project_id: None,
            enabled,
            os: Some("Linux".into()),
            version: None,
            capabilities: "{}".into(),
            environment_id: Some(environment_id),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn wanted(resource: Option<&str>, tags: &[&str]) -> JobTarget {
        JobTarget {
            environment_id: 3,
            environment: "staging".into(),
            resource: resource.map(str::to_string),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn a_target_needs_every_tag_of_its_own_environment_and_the_waiting_reason_names_them() {
        let web = target("web-1", 3, &["Web", "eu"], true);
        assert!(wanted(None, &[]).admits(&web));
        assert!(wanted(None, &["web"]).admits(&web), "tags ignore case");
        assert!(wanted(None, &["web", "EU"]).admits(&web));
        assert!(!wanted(None, &["web", "us"]).admits(&web), "every tag");
        assert!(wanted(Some("WEB-1"), &["web"]).admits(&web));
        assert!(!wanted(Some("web-2"), &[]).admits(&web));
        assert!(
            !wanted(None, &[]).admits(&target("web-1", 4, &["web"], true)),
            "another environment's target"
        );
        let mut pool_agent = target("b", 3, &["web"], true);
        pool_agent.environment_id = None;
        assert!(!wanted(None, &[]).admits(&pool_agent));

        assert_eq!(
            wanted(None, &["web"]).waiting_reason(std::slice::from_ref(&web)),
            None
        );
        assert_eq!(
            wanted(None, &["db"])
                .waiting_reason(std::slice::from_ref(&web))
                .unwrap(),
            "a virtual machine resource with tags `db` of environment `staging`: none is \
             registered (`lockgate agent register --environment staging --tags db`)"
        );
        let disabled = target("web-1", 3, &["web"], false);
        assert_eq!(
            wanted(Some("web-1"), &[])
                .waiting_reason(&[disabled])
                .unwrap(),
            "the resource `web-1` of environment `staging`: every matching one is disabled"
        );
    }

    #[test]
    fn pinned_targets_are_written_to_the_job_rows_in_order() {
        let mut rows = vec![NewJob::default(), NewJob::default()];
        Pinned(vec![None, Some(wanted(Some("web-1"), &["web"]))]).apply(&mut rows);
        assert_eq!(rows[0].target, None);
        let row = lockgate_store::Job {
            target: rows[1].target.clone(),
            ..test_job()
        };
        assert_eq!(JobTarget::of(&row), Some(wanted(Some("web-1"), &["web"])));
    }

    fn test_job() -> lockgate_store::Job {
        lockgate_store::Job {
            id: 1,
            run_id: 1,
            stage_name: "s".into(),
            name: "j".into(),
            display_name: "j".into(),
            depends_on: "[]".into(),
            spec: "{}".into(),
            status: "queued".into(),
            result: None,
            attempt: 1,
            agent_name: None,
            lease_expires_at: None,
            cancel_requested: false,
            queued_at: 0,
            started_at: None,
            finished_at: None,
            outputs: "{}".into(),
            agent_os: None,
            environment: None,
            pool: None,
            demands: Vec::new(),
            target: None,
        }
    }
}
