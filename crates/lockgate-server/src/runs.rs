//! The scheduler: a push or a request queues a run (compiled at queue time; an invalid pipeline gives
//! a failed run carrying the diagnostics), jobs become `queued` when their dependencies are done and
//! their condition holds, agents lease them, and a run completes when every job has. Also cancel,
//! re-run, re-run failed jobs, and failing jobs whose agent stopped sending heartbeats.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use lockgate_engine::Decision;
use lockgate_pipeline::plan::Plan;
use lockgate_pipeline::{CompileInput, ReadError, SourceReader};
use lockgate_protocol::agent::LeaseVariable;
use lockgate_store::{Job, NewJob, NewRun, Pipeline, Run, now_millis};
use serde_json::json;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::git::{self, RefUpdate};
use crate::live::{LiveMessage, LogLine};
use crate::run_engine;
use crate::trigger::{self, PushedRef};
use lockgate_pipeline::run_number::{self as run_name, NameContext};

/// Reads pipeline files from a bare repository at one commit (`git show COMMIT:PATH`).
struct CommitReader {
    repo_dir: PathBuf,
    commit: String,
}

/// Largest pipeline or template file read.
const MAX_PIPELINE_FILE: usize = 1024 * 1024;

impl SourceReader for CommitReader {
    fn read(&self, repository: Option<&str>, path: &str) -> Result<String, ReadError> {
        if repository.is_some_and(|alias| alias != "self") {
            return Err(ReadError::RepositoryNotMapped);
        }
        read_at_commit(&self.repo_dir, &self.commit, path)
    }
}

fn read_at_commit(
    repo_dir: &std::path::Path,
    commit: &str,
    path: &str,
) -> Result<String, ReadError> {
    let output = std::process::Command::new("git")
        .args(["cat-file", "blob", &format!("{commit}:{path}")])
        .current_dir(repo_dir)
        .output()
        .map_err(|e| ReadError::Other(format!("cannot start git: {e}")))?;
    if !output.status.success() {
        return Err(ReadError::NotFound);
    }
    if output.stdout.len() > MAX_PIPELINE_FILE {
        return Err(ReadError::Other(format!(
            "{path} is larger than {MAX_PIPELINE_FILE} bytes"
        )));
    }
    String::from_utf8(output.stdout)
        .map_err(|_| ReadError::Other(format!("{path} is not UTF-8 text")))
}

/// The project and repository a pipeline belongs to.
pub async fn pipeline_home(
    state: &AppState,
    pipeline: &Pipeline,
) -> ApiResult<(lockgate_store::Project, lockgate_store::Repository)> {
    let project = state
        .store
        .project_by_id(pipeline.project_id)
        .await?
        .ok_or_else(|| ApiError::not_found("project"))?;
    let repository = state
        .store
        .repository_by_id(pipeline.repository_id)
        .await?
        .ok_or_else(|| ApiError::not_found("repository"))?;
    Ok((project, repository))
}

/// Compiles a pipeline at the head of a branch (for the pipeline page and its manual-run form): the
/// plan with default parameter values, or the diagnostics. `None` when the branch or the YAML file is
/// missing. Results are cached per (pipeline, commit, file) in `state.compile_cache`, so a view at
/// an unchanged branch head does not compile again.
pub async fn compile_at_branch(
    state: &AppState,
    pipeline: &Pipeline,
    branch: &str,
) -> ApiResult<Option<std::sync::Arc<lockgate_pipeline::CompileOutput>>> {
    let (project, repository) = pipeline_home(state, pipeline).await?;
    let repo_dir = git::repository_dir(state, &project.name, &repository.name);
    let Ok(commit) = git::git(
        &repo_dir,
        &[
            "rev-parse",
            "--verify",
            "-q",
            &format!("refs/heads/{branch}^{{commit}}"),
        ],
    )
    .await
    else {
        return Ok(None);
    };
    let commit = String::from_utf8_lossy(&commit).trim().to_string();
    if let Some(output) = state
        .compile_cache
        .get(pipeline.id, &commit, &pipeline.yaml_path)
    {
        return Ok(Some(output));
    }
    let reader = CommitReader {
        repo_dir,
        commit: commit.clone(),
    };
    let entry = pipeline.yaml_path.clone();
    let output = tokio::task::spawn_blocking(move || {
        reader.read(None, &entry).ok()?;
        let input = CompileInput {
            entry,
            reader: &reader,
            parameters: Vec::new(),
            variables: Vec::new(),
        };
        Some(lockgate_pipeline::compile(&input))
    })
    .await
    .map_err(ApiError::internal)?;
    Ok(output.map(|output| {
        state
            .compile_cache
            .insert(pipeline.id, &commit, &pipeline.yaml_path, output)
    }))
}

/// What starts a run.
#[derive(Clone, Debug)]
pub struct QueueRequest {
    pub pipeline: Pipeline,
    /// Full ref name.
    pub branch: String,
    pub commit: String,
    /// `push`, `manual` or `rerun`.
    pub reason: String,
    pub requested_by: String,
    pub parameters: Vec<(String, String)>,
    /// Queue-time values for the pipeline's variables that allow them (`allowOverride`).
    pub variables: BTreeMap<String, String>,
}

/// The pipeline's own variables with the queue-time values applied, in their defined order, as jobs
/// get them. Azure Pipelines refuses a queue-time value for a variable that is not defined on the
/// pipeline with "Let users override this value when running this pipeline" (the "Limit variables
/// that can be set at queue time" behaviour), naming every such variable; so does this.
pub fn resolve_pipeline_variables(
    defined: &[lockgate_store::PipelineVariable],
    queue_time: &BTreeMap<String, String>,
) -> ApiResult<Vec<LeaseVariable>> {
    let settable = |name: &str| {
        defined
            .iter()
            .any(|v| v.allow_override && v.name.eq_ignore_ascii_case(name))
    };
    let refused: Vec<&str> = queue_time
        .keys()
        .filter(|name| !settable(name))
        .map(String::as_str)
        .collect();
    if !refused.is_empty() {
        return Err(ApiError::bad_request(format!(
            "You can't set the following variables ({}). To set a variable at queue time, define it \
             on the pipeline with \"Let users override this value when running this pipeline\" \
             (allowOverride).",
            refused.join(", ")
        )));
    }
    Ok(defined
        .iter()
        .map(|variable| {
            let value = queue_time
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(&variable.name))
                .map(|(_, value)| value.clone())
                .unwrap_or_else(|| variable.value.clone());
            LeaseVariable {
                name: variable.name.clone(),
                value,
                secret: variable.secret,
                // Queue-time variables are read-only in Azure Pipelines ("Securely use variables
                // and parameters"); `plan_jobs` lifts this where YAML redefines the name.
                readonly: variable.allow_override,
            }
        })
        .collect())
}

/// Compiles the pipeline at the commit and inserts the run with its jobs.
pub async fn queue_run(state: &AppState, request: QueueRequest) -> ApiResult<Run> {
    let pipeline = &request.pipeline;
    // Checked before anything is compiled or stored: a refused variable queues nothing.
    let defined = state
        .secrets
        .open_variables(state.store.pipeline_variables(pipeline.id).await?);
    let pipeline_variables = resolve_pipeline_variables(&defined, &request.variables)?;
    let (project, repository) = pipeline_home(state, pipeline).await?;
    let repo_dir = git::repository_dir(state, &project.name, &repository.name);
    let reader = CommitReader {
        repo_dir: repo_dir.clone(),
        commit: request.commit.clone(),
    };
    let yaml_path = pipeline.yaml_path.clone();
    let parameters = request.parameters.clone();
    let predefined = vec![
        ("Build.SourceBranch".to_string(), request.branch.clone()),
        (
            "Build.SourceBranchName".to_string(),
            short_branch(&request.branch),
        ),
        ("Build.SourceVersion".to_string(), request.commit.clone()),
        (
            "Build.Reason".to_string(),
            build_reason(&request.reason).to_string(),
        ),
        ("Build.DefinitionName".to_string(), pipeline.name.clone()),
        ("System.TeamProject".to_string(), project.name.clone()),
    ];
    // `${{ variables.X }}` sees the predefined variables only, not the pipeline's own or queue-time
    // ones: Microsoft's "Template expressions", section "Context"
    // (learn.microsoft.com/azure/devops/pipelines/process/template-expressions), says the context
    // "doesn't have runtime variables such as those stored on the pipeline or given when you start a
    // run", since template expansion happens early in the run. Conditions and `$[ ]` variables read
    // them (the run engine, from each job's `pipelineVariables`).
    let compile_variables = predefined.clone();
    let (yaml, output) = tokio::task::spawn_blocking(move || {
        let yaml = read_at_commit(&reader.repo_dir, &reader.commit, &yaml_path).unwrap_or_default();
        let input = CompileInput {
            entry: yaml_path,
            reader: &reader,
            parameters,
            variables: compile_variables,
        };
        (yaml, lockgate_pipeline::compile(&input))
    })
    .await
    .map_err(ApiError::internal)?;

    let diagnostics = serde_json::to_string(&output.diagnostics).unwrap_or_else(|_| "[]".into());
    let parameters_json =
        serde_json::to_string(&request.parameters).unwrap_or_else(|_| "[]".into());
    // Azure Pipelines shows the commit message after the run number unless the pipeline says
    // `appendCommitMessageToRunName: false` (YAML schema, pipeline definition).
    let show_message = output
        .plan
        .as_ref()
        .is_none_or(|plan| plan.append_commit_message_to_run_name);
    let title = if show_message {
        commit_subject(&repo_dir, &request.commit).await
    } else {
        String::new()
    };
    let mut new_run = NewRun {
        pipeline_id: pipeline.id,
        name: String::new(),
        title,
        status: "queued".into(),
        result: None,
        reason: request.reason.clone(),
        source_branch: request.branch.clone(),
        source_commit: request.commit.clone(),
        requested_by: request.requested_by.clone(),
        yaml,
        diagnostics,
        parameters: parameters_json,
    };
    let name_context = NameContext {
        now_millis: now_millis(),
        definition_name: pipeline.name.clone(),
        project: project.name.clone(),
        run_id: 0,
        source_branch: request.branch.clone(),
        variables: output
            .plan
            .as_ref()
            .map(Plan::value_variables)
            .unwrap_or_default()
            .into_iter()
            .chain(
                pipeline_variables
                    .iter()
                    .filter(|v| !v.secret)
                    .map(|v| (v.name.clone(), v.value.clone())),
            )
            .collect(),
    };
    let format = output
        .plan
        .as_ref()
        .and_then(|p| p.name.clone())
        .unwrap_or_else(|| run_name::DEFAULT_FORMAT.into());
    let mut prefix = None;
    run_name::expand(&format, &name_context, |p| {
        prefix = Some(p.to_string());
        0
    });
    let revision = match &prefix {
        Some(prefix) => state.store.next_name_revision(pipeline.id, prefix).await?,
        None => 0,
    };
    new_run.name = run_name::expand(&format, &name_context, |_| revision);

    let plan = match output.plan {
        Some(plan) if !output.has_errors() => plan,
        _ => {
            new_run.status = "completed".into();
            new_run.result = Some("failed".into());
            if new_run.name.is_empty() {
                new_run.name = "invalid pipeline".into();
            }
            return Ok(state.store.create_run(&new_run, &[]).await?);
        }
    };
    // A variable group, service connection or secure file that does not exist fails the run
    // before anything runs.
    let missing = match crate::library::missing_groups(state, project.id, &plan).await? {
        Some(why) => Some(("server::unknown-variable-group", why)),
        None => match crate::connections::problems(state, project.id, &plan).await? {
            Some(why) => Some(("server::service-connection", why)),
            None => crate::secure_files::problems(state, project.id, &plan)
                .await?
                .map(|why| ("server::secure-file", why)),
        },
    };
    if let Some((code, why)) = missing {
        let diagnostic = lockgate_pipeline::Diagnostic::error(code, why, None);
        let mut diagnostics = output.diagnostics.clone();
        diagnostics.push(diagnostic);
        new_run.diagnostics = serde_json::to_string(&diagnostics).unwrap_or_else(|_| "[]".into());
        new_run.status = "completed".into();
        new_run.result = Some("failed".into());
        return Ok(state.store.create_run(&new_run, &[]).await?);
    }
    // Deployments over an environment's virtual machines: one job per matching target.
    let mut plan = plan;
    let pinned =
        match crate::targets::expand(state, project.id, &mut plan, &request.requested_by).await? {
            Ok(pinned) => pinned,
            Err(why) => {
                let diagnostic =
                    lockgate_pipeline::Diagnostic::error("server::invalid-rollout", why, None);
                let mut diagnostics = output.diagnostics.clone();
                diagnostics.push(diagnostic);
                new_run.diagnostics =
                    serde_json::to_string(&diagnostics).unwrap_or_else(|_| "[]".into());
                new_run.status = "completed".into();
                new_run.result = Some("failed".into());
                return Ok(state.store.create_run(&new_run, &[]).await?);
            }
        };
    let mut jobs = plan_jobs(
        &state.vm_images,
        &plan,
        &pipeline_variables,
        &request.variables,
    );
    pinned.apply(&mut jobs);
    // Environments are created on first use, when the run is queued; a name that breaks the rules
    // fails the run before anything runs.
    let environments = match crate::environments::environments_of(&jobs) {
        Ok(names) => names,
        Err(why) => {
            let diagnostic =
                lockgate_pipeline::Diagnostic::error("server::invalid-environment", why, None);
            let mut diagnostics = output.diagnostics.clone();
            diagnostics.push(diagnostic);
            new_run.diagnostics =
                serde_json::to_string(&diagnostics).unwrap_or_else(|_| "[]".into());
            new_run.status = "completed".into();
            new_run.result = Some("failed".into());
            return Ok(state.store.create_run(&new_run, &[]).await?);
        }
    };
    crate::environments::create_on_first_use(
        state,
        project.id,
        &environments,
        &request.requested_by,
    )
    .await?;
    // Secret values never reach a job row in clear (docs/security.md, "Secrets at rest").
    for job in &mut jobs {
        job.spec = state.secrets.seal_spec_text(&job.spec);
    }
    if jobs.is_empty() {
        new_run.status = "completed".into();
        new_run.result = Some("succeeded".into());
    }
    let run = state.store.create_run(&new_run, &jobs).await?;
    advance_run(state, run.id).await?;
    Ok(state.store.run_by_id(run.id).await?.unwrap_or(run))
}

/// The first line of a commit's message (at most 200 characters), or empty when git cannot tell.
async fn commit_subject(repo_dir: &std::path::Path, commit: &str) -> String {
    match git::git(repo_dir, &["log", "-1", "--format=%s", commit, "--"]).await {
        Ok(out) => String::from_utf8_lossy(&out)
            .trim()
            .chars()
            .take(200)
            .collect(),
        Err(_) => String::new(),
    }
}

fn short_branch(branch: &str) -> String {
    branch.rsplit('/').next().unwrap_or(branch).to_string()
}

/// `Build.Reason` values (Microsoft's predefined variables page).
fn build_reason(reason: &str) -> &'static str {
    match reason {
        "push" => "IndividualCI",
        "batch" => "BatchedCI",
        _ => "Manual",
    }
}

/// The key of a job within a run: `stage/job`.
fn job_key(stage: &str, job: &str) -> String {
    format!("{stage}/{job}")
}

/// One row per job instance. `depends_on` lists the keys of the jobs it waits for: the jobs of its
/// stage it names in `dependsOn` (every matrix/parallel instance of them) and, for jobs that wait for
/// nothing in their stage, every job of the stages the stage depends on. Each spec carries the
/// What a job's pool asks of an agent, with `$( )` macros in the pool read from the job's variables (a
/// matrix leg's `imageName`), its stage's and pipeline's, the queue-time values and the pipeline's own:
/// the pool's name (`None`: the default pool), its demands, the `Agent.OS` it asks for, and the image
/// of a `vmImage` the server's table does not map (see [`crate::agents::VmImages`]).
fn pool_requirements(
    vm_images: &crate::agents::VmImages,
    job: &lockgate_pipeline::plan::Job,
    outer: &[lockgate_pipeline::plan::Variable],
    pipeline_variables: &[LeaseVariable],
    queue_time: &BTreeMap<String, String>,
) -> PoolRequirements {
    use lockgate_pipeline::plan::Variable;
    let lookup = |name: &str| -> Option<String> {
        let yaml = job.variables.iter().rev().chain(outer.iter().rev());
        let from_yaml = yaml.into_iter().find_map(|v| match v {
            Variable::Value { name: n, value, .. } if n.eq_ignore_ascii_case(name) => {
                Some(value.clone())
            }
            _ => None,
        });
        queue_time
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .or(from_yaml)
            .or_else(|| {
                pipeline_variables
                    .iter()
                    .find(|v| v.name.eq_ignore_ascii_case(name) && !v.secret)
                    .map(|v| v.value.clone())
            })
    };
    let Some(pool) = job.pool.as_ref() else {
        return PoolRequirements::default();
    };
    let expand = |text: &str| lockgate_expr::expand_macros(text, lookup).into_owned();
    let demands = pool.demands.iter().map(|d| expand(d)).collect();
    let image = pool.vm_image.as_deref().map(&expand);
    if pool.name.is_none()
        && let Some(image) = image
    {
        if let Some(mapped) = vm_images.pool_for(&image) {
            // The table chose the pool: only an `Agent.OS` demand still asks for an OS.
            let without_image = lockgate_pipeline::plan::Pool {
                vm_image: None,
                ..pool.clone()
            };
            return PoolRequirements {
                pool: Some(mapped.to_string()),
                demands,
                agent_os: without_image.wanted_os(expand).map(str::to_string),
                unmapped_image: None,
            };
        }
        let agent_os = pool.wanted_os(expand).map(str::to_string);
        return PoolRequirements {
            pool: None,
            demands,
            unmapped_image: agent_os.is_some().then_some(image),
            agent_os,
        };
    }
    PoolRequirements {
        pool: pool.name.as_deref().map(&expand),
        demands,
        agent_os: pool.wanted_os(expand).map(str::to_string),
        unmapped_image: None,
    }
}

/// What [`pool_requirements`] found.
#[derive(Debug, Default, PartialEq)]
struct PoolRequirements {
    pool: Option<String>,
    demands: Vec<String>,
    agent_os: Option<String>,
    unmapped_image: Option<String>,
}

/// The key of a job's spec holding the `vmImage` no pool is mapped to (for the waiting reason).
pub const UNMAPPED_VM_IMAGE: &str = "unmappedVmImage";

/// pipeline's own variables (`pipelineVariables`, for the lease) and the queue-time values
/// (`queueVariables`, for a re-run).
fn plan_jobs(
    vm_images: &crate::agents::VmImages,
    plan: &Plan,
    pipeline_variables: &[LeaseVariable],
    queue_time: &BTreeMap<String, String>,
) -> Vec<NewJob> {
    let mut rows = Vec::new();
    for stage in &plan.stages {
        let upstream: Vec<String> = plan
            .stages
            .iter()
            .filter(|other| {
                stage
                    .depends_on
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(&other.name))
            })
            .flat_map(|other| other.jobs.iter().map(|job| job_key(&other.name, &job.name)))
            .collect();
        for job in &stage.jobs {
            let in_stage: Vec<String> = stage
                .jobs
                .iter()
                .filter(|other| {
                    job.depends_on
                        .iter()
                        .any(|d| d.eq_ignore_ascii_case(&other.base_name))
                })
                .map(|other| job_key(&stage.name, &other.name))
                .collect();
            let first_in_stage = job.depends_on.is_empty();
            let depends_on = if first_in_stage {
                upstream.clone()
            } else {
                in_stage
            };
            // The stage's condition applies to every job of the stage (a skipped stage skips them
            // all); the job's own condition is read from the job.
            let condition = json!({
                "first": first_in_stage,
                "stage": stage.condition,
                "stageDependsOn": stage.depends_on,
                "manual": stage.manual_trigger,
                "lockBehavior": stage.lock_behavior.as_ref().or(plan.lock_behavior.as_ref()),
            });
            let mut variables = plan.variables.clone();
            variables.extend(stage.variables.iter().cloned());
            // YAML variables take precedence over the pipeline's own ones ("Define variables",
            // expansion of variables), so a read-only queue-time variable the YAML redefines
            // must not keep the YAML value out.
            let in_yaml = |name: &str| {
                variables.iter().chain(&job.variables).any(|v| {
                    matches!(v, lockgate_pipeline::plan::Variable::Value { name: yaml, .. }
                        if yaml.eq_ignore_ascii_case(name))
                })
            };
            let own: Vec<LeaseVariable> = pipeline_variables
                .iter()
                .map(|v| LeaseVariable {
                    readonly: v.readonly && !in_yaml(&v.name),
                    ..v.clone()
                })
                .collect();
            let requirements =
                pool_requirements(vm_images, job, &variables, pipeline_variables, queue_time);
            let mut spec = json!({
                "job": job,
                "variables": variables,
                "conditions": condition,
                "pipelineVariables": own,
                "stageDisplayName": stage.display_name.as_deref().unwrap_or(&stage.name),
                "queueVariables": queue_time,
                "connections": crate::connections::connections_of_job(job),
                "secureFiles": crate::secure_files::secure_files_of_job(job),
            });
            if let Some(image) = &requirements.unmapped_image {
                spec[UNMAPPED_VM_IMAGE] = json!(image);
            }
            rows.push(NewJob {
                stage_name: stage.name.clone(),
                name: job.name.clone(),
                // The implied job of a `steps:`-only pipeline is called "Job" in Azure Pipelines' UI.
                display_name: job.display_name.clone().unwrap_or_else(|| {
                    if job.name == "__default" {
                        "Job".to_string()
                    } else {
                        job.name.clone()
                    }
                }),
                depends_on: serde_json::to_string(&depends_on).unwrap_or_else(|_| "[]".into()),
                spec: spec.to_string(),
                status: "pending".into(),
                environment: job.environment.as_ref().map(|e| e.name.clone()),
                agent_os: requirements.agent_os,
                pool: requirements.pool,
                demands: requirements.demands,
                target: None,
            });
        }
    }
    rows
}

/// The predefined variables of a run that do not depend on the job (Microsoft's page "Predefined
/// variables"); agents get these plus the job's own.
pub fn run_predefined_variables(
    state: &AppState,
    run: &Run,
    pipeline: &Pipeline,
    project: &lockgate_store::Project,
    repository: &lockgate_store::Repository,
) -> Vec<(String, String)> {
    let base = state.base_url();
    vec![
        ("Build.BuildId".to_string(), run.id.to_string()),
        ("Build.BuildNumber".to_string(), run.name.clone()),
        ("Build.DefinitionName".to_string(), pipeline.name.clone()),
        ("Build.DefinitionId".to_string(), pipeline.id.to_string()),
        (
            "Build.Reason".to_string(),
            build_reason(&run.reason).to_string(),
        ),
        ("Build.RequestedFor".to_string(), run.requested_by.clone()),
        ("Build.SourceBranch".to_string(), run.source_branch.clone()),
        (
            "Build.SourceBranchName".to_string(),
            short_branch(&run.source_branch),
        ),
        ("Build.SourceVersion".to_string(), run.source_commit.clone()),
        ("Build.Repository.Name".to_string(), repository.name.clone()),
        (
            "Build.Repository.Uri".to_string(),
            format!("{base}/git/{}/{}.git", project.name, repository.name),
        ),
        ("System.TeamProject".to_string(), project.name.clone()),
        ("System.CollectionUri".to_string(), format!("{base}/")),
        (
            run_name::START_TIME_VARIABLE.to_string(),
            run_name::start_time_text(run.queued_at),
        ),
    ]
}

/// Writes an error line into a job's log (a job that never ran: why).
async fn note_in_log(state: &AppState, job_id: i64, message: &str) -> ApiResult<()> {
    let line = LogLine {
        step: None,
        text: format!("##[error]{message}"),
    };
    state
        .store
        .append_log_chunk(
            job_id,
            1,
            &crate::live::compress_lines(std::slice::from_ref(&line)),
        )
        .await?;
    Ok(())
}

/// Ends a waiting job as failed with an error line in its log (a condition that cannot be evaluated).
async fn fail_waiting_job(state: &AppState, job_id: i64, message: &str) -> ApiResult<()> {
    note_in_log(state, job_id, message).await?;
    state
        .store
        .set_job_status(job_id, "completed", Some("failed"))
        .await?;
    state.live.publish(
        job_id,
        LiveMessage::End {
            result: "failed".into(),
        },
    );
    Ok(())
}

/// Keeps the values of a job's runtime-expression variables in its spec (`runtimeValues`), for the
/// lease; the expressions themselves stay, so a re-run evaluates them again.
async fn record_runtime_values(
    state: &AppState,
    job: &mut Job,
    values: &run_engine::RuntimeValues,
) -> ApiResult<()> {
    let mut spec: serde_json::Value =
        serde_json::from_str(&job.spec).map_err(ApiError::internal)?;
    spec["runtimeValues"] = serde_json::to_value(values).map_err(ApiError::internal)?;
    // `job` holds the clear spec (read through `SecretBox::open_job`); the row gets it sealed.
    job.spec = spec.to_string();
    state.secrets.seal_spec(&mut spec);
    state.store.set_job_spec(job.id, &spec.to_string()).await?;
    Ok(())
}

/// The run's predefined variables, as conditions read them (empty when the pipeline is gone).
async fn run_variables(state: &AppState, run: &Run) -> ApiResult<Vec<(String, String)>> {
    let Some(pipeline) = state.store.pipeline_by_id(run.pipeline_id).await? else {
        return Ok(Vec::new());
    };
    let (project, repository) = pipeline_home(state, &pipeline).await?;
    Ok(run_predefined_variables(
        state,
        run,
        &pipeline,
        &project,
        &repository,
    ))
}

/// Moves waiting jobs forward (queued, skipped or failed, as the run engine decides) and completes
/// the run when every job is done. Each decision is stored as it is carried out, so a crash part
/// way leaves rows the next pass (after [`reconcile`]) continues from.
pub async fn advance_run(state: &AppState, run_id: i64) -> ApiResult<()> {
    let Some(run) = state.store.run_by_id(run_id).await? else {
        return Ok(());
    };
    if run.status == "completed" {
        return Ok(());
    }
    let mut jobs = state
        .secrets
        .open_jobs(state.store.jobs_of_run(run_id).await?);
    // A cancel is recorded on the run (see [`cancel_run`]); re-running jobs clears it. A flag on an
    // unfinished job also counts, for runs canceled before the run recorded it; a job that finished
    // despite its flag keeps it, so a flag on a completed job does not.
    let run_canceled = cancel_recorded(&run)
        || jobs
            .iter()
            .any(|j| j.cancel_requested && j.status != "completed");
    let predefined = run_variables(state, &run).await?;
    let gates = crate::approvals::stage_gates(state, &run, &jobs).await?;
    let run_engine::Decided {
        decisions,
        origins,
        stages,
    } = run_engine::decide(
        &jobs,
        predefined,
        run_canceled,
        false,
        &gates.gates,
        &gates.started,
    );
    let mut queued_any = false;
    let mut look_again = false;
    for decision in decisions {
        match decision {
            Decision::Start {
                job: index,
                values,
                fields,
            } => {
                let values = run_engine::RuntimeValues::of_start(&origins, index, &values, &fields);
                if !values.is_empty() {
                    record_runtime_values(state, &mut jobs[index], &values).await?;
                }
                let job = &mut jobs[index];
                if crate::agentless::is_agentless(job) {
                    // The server runs agentless jobs itself: no agent ever sees them queued.
                    state.store.set_job_status(job.id, "running", None).await?;
                    job.status = "running".into();
                    crate::agentless::start(state, job.id);
                } else {
                    state.store.set_job_status(job.id, "queued", None).await?;
                    job.status = "queued".into();
                    queued_any = true;
                }
            }
            Decision::Finish {
                job: index,
                result,
                message,
            } => {
                let job = &mut jobs[index];
                // A stage an automatic check refused: its jobs' logs say why.
                if let Some(reason) = gates.refused.get(&job.stage_name) {
                    note_in_log(state, job.id, reason).await?;
                }
                match message {
                    Some(message) => fail_waiting_job(state, job.id, &message).await?,
                    None => {
                        state
                            .store
                            .set_job_status(
                                job.id,
                                "completed",
                                Some(run_engine::result_text(result)),
                            )
                            .await?;
                    }
                }
                job.status = "completed".into();
                job.result = Some(run_engine::result_text(result).into());
            }
            Decision::RunFinished { result } => {
                state
                    .store
                    .set_run_status(
                        run_id,
                        "completed",
                        Some(run_engine::run_result_text(result)),
                    )
                    .await?;
                crate::locks::release(state, run_id, None).await?;
            }
            // The server keeps no stage rows; a stage is its jobs.
            Decision::AwaitChecks { stage } => {
                look_again |=
                    crate::approvals::request(state, &run, &jobs, &stages[stage], &gates).await?;
            }
            // A stage that ends frees the exclusive locks it held.
            Decision::StageFinished { stage, .. } if gates.gates.contains_key(&stages[stage]) => {
                crate::locks::release(state, run_id, Some(&stages[stage])).await?;
            }
            Decision::StageStarted { .. }
            | Decision::StageFinished { .. }
            | Decision::CancelRunning { .. } => {}
        }
    }
    if queued_any {
        state.job_queued.notify_waiters();
    }
    if look_again {
        // A lock was granted (or given up) just now: the stage's gate is decided.
        return Box::pin(advance_run(state, run_id)).await;
    }
    if !jobs.iter().all(|j| j.status == "completed")
        && jobs.iter().any(|j| j.status == "running")
        && run.status == "queued"
    {
        // Keeps a recorded cancel.
        state
            .store
            .set_run_status(run_id, "running", run.result.as_deref())
            .await?;
    }
    Ok(())
}

/// Whether a cancel was recorded on a run that is still in progress: its result is already
/// `canceled` while the jobs that run after a cancel (`always()`, `canceled()`) finish.
pub fn cancel_recorded(run: &Run) -> bool {
    run.status != "completed" && run.result.as_deref() == Some("canceled")
}

/// Cancels a run as Azure Pipelines does (Microsoft's pages "Pipeline conditions", section
/// "Condition outcomes when a build is canceled", and "Pipeline run sequence"): running jobs are told
/// through their heartbeat (the agent cancels their steps; `always()` steps still run), queued jobs
/// end as canceled, and a job not started yet ends as skipped unless its condition may hold for a
/// canceled run (the run engine's `Engine::cancel`); such a job waits for its
/// dependencies and is evaluated with `canceled()` and `always()` true. The run's result is
/// `canceled` from now on, while those jobs finish.
pub async fn cancel_run(state: &AppState, run_id: i64) -> ApiResult<()> {
    let Some(run) = state.store.run_by_id(run_id).await? else {
        return Ok(());
    };
    if run.status == "completed" {
        return Ok(());
    }
    let variables = run_variables(state, &run).await?;
    let before = state
        .secrets
        .open_jobs(state.store.jobs_of_run(run_id).await?);
    // Decided on the jobs as they were: the engine ends what cannot run after a cancel.
    let gates = crate::approvals::stage_gates(state, &run, &before).await?;
    let decisions = run_engine::decide(
        &before,
        variables,
        false,
        true,
        &gates.gates,
        &gates.started,
    )
    .decisions;
    let ended: Vec<usize> = decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Finish { job, .. } => Some(*job),
            _ => None,
        })
        .collect();
    let still_waiting: Vec<i64> = (0..before.len())
        .filter(|index| before[*index].status == "pending" && !ended.contains(index))
        .map(|index| before[index].id)
        .collect();
    // One transaction: the run's result, the waiting jobs' ends and the running jobs' cancel flags.
    state.store.request_cancel(run_id, &still_waiting).await?;
    let jobs = state.store.jobs_of_run(run_id).await?;
    for job in &jobs {
        let was_waiting = before
            .iter()
            .any(|b| b.id == job.id && matches!(b.status.as_str(), "pending" | "queued"));
        if was_waiting && job.status == "completed" {
            state.live.publish(
                job.id,
                LiveMessage::End {
                    result: job.result.clone().unwrap_or_default(),
                },
            );
        }
    }
    advance_run(state, run_id).await
}

/// Runs every job that did not succeed again (a new attempt), keeping the successful ones.
pub async fn rerun_failed_jobs(state: &AppState, run: &Run) -> ApiResult<()> {
    if run.status != "completed" {
        return Err(ApiError::conflict("the run is still in progress"));
    }
    let jobs = state.store.jobs_of_run(run.id).await?;
    let again: Vec<i64> = jobs
        .iter()
        .filter(|j| {
            !matches!(
                j.result.as_deref(),
                Some("succeeded") | Some("succeededWithIssues")
            )
        })
        .map(|j| j.id)
        .collect();
    if again.is_empty() {
        return Err(ApiError::conflict("every job of this run succeeded"));
    }
    state.store.reset_jobs(&again).await?;
    state.store.set_run_status(run.id, "running", None).await?;
    advance_run(state, run.id).await
}

/// Queues a new run of the same pipeline, branch and commit, with the same parameters and the same
/// queue-time values for the variables that are still settable.
pub async fn rerun(state: &AppState, run: &Run, requested_by: &str) -> ApiResult<Run> {
    let pipeline = state
        .store
        .pipeline_by_id(run.pipeline_id)
        .await?
        .ok_or_else(|| ApiError::not_found("pipeline"))?;
    let parameters: Vec<(String, String)> =
        serde_json::from_str(&run.parameters).unwrap_or_default();
    let mut variables: BTreeMap<String, String> =
        match state.store.jobs_of_run(run.id).await?.into_iter().next() {
            Some(job) => {
                serde_json::from_str::<serde_json::Value>(&state.secrets.open_job(job).spec)
                    .ok()
                    .and_then(|spec| serde_json::from_value(spec["queueVariables"].clone()).ok())
                    .unwrap_or_default()
            }
            None => BTreeMap::new(),
        };
    let defined = state.store.pipeline_variables(pipeline.id).await?;
    variables.retain(|name, _| {
        defined
            .iter()
            .any(|v| v.allow_override && v.name.eq_ignore_ascii_case(name))
    });
    queue_run(
        state,
        QueueRequest {
            pipeline,
            branch: run.source_branch.clone(),
            commit: run.source_commit.clone(),
            reason: "rerun".into(),
            requested_by: requested_by.to_string(),
            parameters,
            variables,
        },
    )
    .await
}

/// Queues the runs a push triggers: for each updated ref and each pipeline of the repository whose
/// YAML exists at the new commit and whose CI trigger fires. With `batch: true`, a push to a branch
/// that already has a run in progress is not queued; the run queued when that one ends builds the
/// newest commit (see [`queue_batched_followup`]).
pub async fn on_push(
    state: &AppState,
    repository_id: i64,
    pusher: &str,
    updates: &[RefUpdate],
) -> ApiResult<Vec<Run>> {
    let repository = state
        .store
        .repository_by_id(repository_id)
        .await?
        .ok_or_else(|| ApiError::not_found("repository"))?;
    let project = state
        .store
        .project_by_id(repository.project_id)
        .await?
        .ok_or_else(|| ApiError::not_found("project"))?;
    let dir = git::repository_dir(state, &project.name, &repository.name);
    let mut queued = Vec::new();
    for update in updates {
        if git::skips_ci(&dir, update).await {
            continue;
        }
        let pushed = PushedRef {
            name: update.name.clone(),
            changed_paths: git::changed_paths(&dir, update).await,
        };
        for pipeline in state.store.pipelines_of_repository(repository_id).await? {
            let Some(trigger_value) = trigger_at(state, &dir, &update.new, &pipeline).await else {
                continue;
            };
            if !trigger::ci_trigger_fires(trigger_value.as_ref(), &pushed) {
                continue;
            }
            if trigger::batches(trigger_value.as_ref())
                && has_run_in_progress(state, pipeline.id, &update.name).await?
            {
                continue;
            }
            let run = queue_run(
                state,
                QueueRequest {
                    pipeline,
                    branch: update.name.clone(),
                    commit: update.new.clone(),
                    reason: "push".into(),
                    requested_by: pusher.to_string(),
                    parameters: Vec::new(),
                    variables: BTreeMap::new(),
                },
            )
            .await?;
            queued.push(run);
        }
    }
    Ok(queued)
}

/// The trigger of a pipeline at a commit: `None` when the YAML file is not there (no run), `Some(None)`
/// when the pipeline has no trigger. An invalid pipeline counts as having no trigger, so the push
/// queues a failed run that shows the diagnostics.
async fn trigger_at(
    state: &AppState,
    dir: &std::path::Path,
    commit: &str,
    pipeline: &Pipeline,
) -> Option<Option<serde_json::Value>> {
    let _ = state;
    let reader = CommitReader {
        repo_dir: dir.to_path_buf(),
        commit: commit.to_string(),
    };
    let entry = pipeline.yaml_path.clone();
    tokio::task::spawn_blocking(move || {
        reader.read(None, &entry).ok()?;
        let input = CompileInput {
            entry,
            reader: &reader,
            parameters: Vec::new(),
            variables: Vec::new(),
        };
        let output = lockgate_pipeline::compile(&input);
        Some(output.plan.and_then(|plan| plan.trigger))
    })
    .await
    .ok()
    .flatten()
}

async fn has_run_in_progress(state: &AppState, pipeline_id: i64, branch: &str) -> ApiResult<bool> {
    for status in ["queued", "running"] {
        let filter = lockgate_store::RunFilter {
            pipeline_id: Some(pipeline_id),
            branch: Some(branch.to_string()),
            status: Some(status.to_string()),
            limit: 1,
            ..Default::default()
        };
        if !state.store.list_runs(&filter).await?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// After a pushed run completes: if its pipeline batches and the branch moved meanwhile, queue one run
/// for the newest commit.
pub async fn queue_batched_followup(state: &AppState, run_id: i64) -> ApiResult<()> {
    let Some(run) = state.store.run_by_id(run_id).await? else {
        return Ok(());
    };
    if run.status != "completed" || !matches!(run.reason.as_str(), "push" | "batch") {
        return Ok(());
    }
    let Some(pipeline) = state.store.pipeline_by_id(run.pipeline_id).await? else {
        return Ok(());
    };
    let Some(repository) = state.store.repository_by_id(pipeline.repository_id).await? else {
        return Ok(());
    };
    let Some(project) = state.store.project_by_id(pipeline.project_id).await? else {
        return Ok(());
    };
    let dir = git::repository_dir(state, &project.name, &repository.name);
    let Ok(head) = git::git(&dir, &["rev-parse", "--verify", "-q", &run.source_branch]).await
    else {
        return Ok(());
    };
    let head = String::from_utf8_lossy(&head).trim().to_string();
    if head == run.source_commit
        || has_run_in_progress(state, pipeline.id, &run.source_branch).await?
    {
        return Ok(());
    }
    let Some(trigger_value) = trigger_at(state, &dir, &head, &pipeline).await else {
        return Ok(());
    };
    if !trigger::batches(trigger_value.as_ref()) {
        return Ok(());
    }
    queue_run(
        state,
        QueueRequest {
            pipeline,
            branch: run.source_branch.clone(),
            commit: head,
            reason: "batch".into(),
            requested_by: run.requested_by.clone(),
            parameters: Vec::new(),
            variables: BTreeMap::new(),
        },
    )
    .await?;
    Ok(())
}

/// The names of the built-in agents start with this (the API refuses such names for remote agents).
/// They live inside the server process, so when a server starts, a job still leased to one was
/// abandoned by an earlier process that stopped. They are told apart by the flag the server sets when
/// it registers them (`Agent::builtin`), not by this name.
pub const BUILTIN_AGENT_PREFIX: &str = "built-in-";

/// What [`reconcile`] found on start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Unfinished runs looked at.
    pub runs: usize,
    /// Jobs of the built-in agents that had not started a step, queued again.
    pub requeued: usize,
    /// Jobs of the built-in agents that had started a step, failed.
    pub failed: usize,
}

/// The error line a job gets when the server stopped (killed, crashed) while its built-in agent ran it.
pub const SERVER_STOPPED_LINE: &str =
    "##[error]The server stopped while this job ran; the job failed.";

/// Brings every unfinished run up to date when the server starts, before its built-in agents lease
/// anything: a server killed between storing a run and queueing its jobs, or between finishing a job
/// and moving its run on, left runs that nothing else would wake. Jobs leased to built-in agents of
/// the stopped process (`builtin_agents`, the names this server gives its own; other servers on the
/// same database keep theirs) are released ([`Storage::release_abandoned_jobs`]): queued again when they had
/// not started a step, failed with [`SERVER_STOPPED_LINE`] in their log otherwise (a step may have had
/// effects; running it twice is not safe). Then each run is advanced as if its last job had just
/// finished: waiting jobs are queued or skipped, a finished run gets its result, and a batched CI
/// run that completed queues its follow-up. Jobs of remote agents keep their leases; the lease reaper
/// ends them if their agent is gone too.
///
/// [`Storage::release_abandoned_jobs`]: lockgate_store::Storage::release_abandoned_jobs
pub async fn reconcile(state: &AppState, builtin_agents: &[String]) -> ApiResult<Reconciled> {
    let mut reconciled = Reconciled::default();
    for job in state.store.release_abandoned_jobs(builtin_agents).await? {
        let text = if job.status == "queued" {
            reconciled.requeued += 1;
            "The server stopped before this job started a step; the job was queued again.".into()
        } else {
            reconciled.failed += 1;
            SERVER_STOPPED_LINE.to_string()
        };
        let line = LogLine { step: None, text };
        state
            .store
            .append_log_chunk(
                job.id,
                1,
                &crate::live::compress_lines(std::slice::from_ref(&line)),
            )
            .await?;
    }
    let mut unfinished = Vec::new();
    for status in ["queued", "running"] {
        let mut before_id = None;
        loop {
            let page = state
                .store
                .list_runs(&lockgate_store::RunFilter {
                    status: Some(status.to_string()),
                    before_id,
                    limit: 1000,
                    ..Default::default()
                })
                .await?;
            before_id = page.last().map(|run| run.id);
            let done = page.len() < 1000;
            unfinished.extend(page.into_iter().filter(|run| run.status == status));
            if done {
                break;
            }
        }
    }
    // Oldest first, as they were queued.
    unfinished.sort_by_key(|run| run.id);
    reconciled.runs = unfinished.len();
    for run in unfinished {
        // Agentless jobs the stopped process was running go on where they were.
        if let Err(error) = crate::agentless::resume_run(state, run.id).await {
            eprintln!(
                "lockgate-server: cannot resume the agentless jobs of run {}: {}",
                run.id, error.message
            );
        }
        let advanced = if cancel_recorded(&run) {
            // Ends the jobs queued again above as canceled, as a cancel would have.
            cancel_run(state, run.id).await
        } else {
            advance_run(state, run.id).await
        };
        // One run that cannot be moved on (its pipeline is gone...) does not keep the server down.
        if let Err(error) = advanced.and(queue_batched_followup(state, run.id).await) {
            eprintln!(
                "lockgate-server: cannot reconcile run {}: {}",
                run.id, error.message
            );
        }
    }
    Ok(reconciled)
}

/// Every few seconds, fails jobs whose agent stopped sending heartbeats and moves their runs on.
pub async fn reap_expired_leases(state: AppState) {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = now_millis();
        // A job whose agent died before any step goes to another agent (docs/agents.md).
        if let Ok(requeued) = state.store.requeue_unstarted_expired_jobs(now).await
            && !requeued.is_empty()
        {
            for job in &requeued {
                let line = LogLine {
                    step: None,
                    text: format!(
                        "##[warning]{} before the job's first step; the job is queued for another agent.",
                        crate::agents::stopped_responding(&state, job)
                    ),
                };
                let lines = crate::live::compress_lines(std::slice::from_ref(&line));
                let _ = state.store.append_log_chunk(job.id, 1, &lines).await;
            }
            state.job_queued.notify_waiters();
        }
        let Ok(expired) = state.store.expire_leases(now).await else {
            continue;
        };
        for job in expired {
            let line = LogLine {
                step: None,
                text: format!(
                    "##[error]{}; the job failed.",
                    crate::agents::stopped_responding(&state, &job)
                ),
            };
            let _ = state
                .store
                .append_log_chunk(
                    job.id,
                    1,
                    &crate::live::compress_lines(std::slice::from_ref(&line)),
                )
                .await;
            state.live.publish(
                job.id,
                LiveMessage::End {
                    result: "failed".into(),
                },
            );
            let _ = advance_run(&state, job.run_id).await;
        }
        // Approvals not decided within their timeout reject their stage.
        let _ = crate::approvals::expire_overdue(&state).await;
        // Lock requests past their timeout, and holders that ended without releasing.
        let _ = crate::locks::sweep(&state).await;
    }
}
