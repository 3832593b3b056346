//! The plan: the fully expanded pipeline that the runner and the server execute (stages, jobs after
//! matrix/parallel expansion, deployment hook phases, steps). These types are a contract with the
//! runner: change them only by adding fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A place in a source file, for messages such as "step at templates/build.yml:12".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    /// The file as shown to users: a path relative to its repository root, with `@alias` for files
    /// of other repositories (`templates/build.yml@tools`).
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column (in characters).
    pub column: u32,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// The whole expanded pipeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The run-number format (`name:`), macros such as `$(Rev:r)` left unexpanded.
    pub name: Option<String>,
    /// `appendCommitMessageToRunName` (default true).
    pub append_commit_message_to_run_name: bool,
    /// The CI trigger as written (after template expansion), or null when absent.
    pub trigger: Option<serde_json::Value>,
    /// The pull-request trigger as written, or null when absent.
    pub pr: Option<serde_json::Value>,
    /// Scheduled triggers as written.
    pub schedules: Vec<serde_json::Value>,
    /// Declared resources.
    pub resources: Resources,
    /// The runtime parameters with their final values (defaults or `--param`), in declaration order.
    pub parameters: Vec<ParameterValue>,
    /// Pipeline-level variables and variable groups, in order.
    pub variables: Vec<Variable>,
    /// `lockBehavior`: `sequential` or `runLatest`, when given.
    pub lock_behavior: Option<String>,
    /// Stages in source order. A pipeline written with only `jobs` or `steps` has one implied stage
    /// named `__default`.
    pub stages: Vec<Stage>,
}

impl Plan {
    /// The pipeline-level variables with a value (not the groups), in order: what a run-number format
    /// can refer to.
    pub fn value_variables(&self) -> Vec<(String, String)> {
        self.variables
            .iter()
            .filter_map(|variable| match variable {
                Variable::Value { name, value, .. } => Some((name.clone(), value.clone())),
                Variable::Group { .. } => None,
            })
            .collect()
    }
}

/// A runtime parameter and the value it ended with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParameterValue {
    pub name: String,
    /// Declared type (`string`, `number`, `boolean`, `object`, `stepList`, …).
    pub r#type: String,
    pub value: serde_json::Value,
    /// `displayName` of the declaration, for forms that ask for values.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The `values` allow-list of the declaration (empty when any value is allowed).
    #[serde(default)]
    pub values: Vec<serde_json::Value>,
}

/// Resources declared under `resources:` (each entry kept as written, keyed by its alias).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub repositories: Vec<Resource>,
    pub pipelines: Vec<Resource>,
    pub containers: Vec<Resource>,
    pub builds: Vec<Resource>,
    pub packages: Vec<Resource>,
    pub webhooks: Vec<Resource>,
}

/// One resource: its alias (the value of `repository:`, `pipeline:`, `container:`, …) and all its
/// properties as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    pub alias: String,
    pub properties: serde_json::Map<String, serde_json::Value>,
    pub source: Location,
}

/// Where a variable was defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VariableScope {
    Pipeline,
    Stage,
    Job,
    /// A variable of a matrix leg (job scope, set by the strategy).
    Matrix,
}

/// One entry of a `variables:` block, in source order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Variable {
    /// `name: value` or `- name: … value: … readonly: …`. The value keeps macros `$( )` and runtime
    /// expressions `$[ ]` for the runner.
    Value {
        name: String,
        value: String,
        readonly: bool,
        scope: VariableScope,
    },
    /// `- group: name`: a variable group the runner or server resolves by name.
    Group { name: String, scope: VariableScope },
}

impl Variable {
    /// Where the variable was defined.
    pub fn scope(&self) -> VariableScope {
        match self {
            Variable::Value { scope, .. } | Variable::Group { scope, .. } => *scope,
        }
    }
}

/// An agent pool (`pool: name` or `pool: {name, vmImage, demands}`); `pool: server` marks an agentless job.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pool {
    pub name: Option<String>,
    pub vm_image: Option<String>,
    pub demands: Vec<String>,
    /// True for `pool: server` (agentless job).
    pub server: bool,
}

impl Pool {
    /// The operating system the pool asks for, as `Agent.OS` names it (`Windows_NT`, `Darwin`, `Linux`),
    /// when it can be told: from the `vmImage` (Microsoft-hosted images: `windows-*`, `vs20*-win*`,
    /// `win*`, `macOS-*`, `macos-*`, `ubuntu-*`; "Microsoft-hosted agents"), from an `Agent.OS -equals X`
    /// demand ("Demands"), or from a hosted pool's name (`Hosted Windows 2019 with VS2019`, `Hosted
    /// macOS`, `Hosted Ubuntu 1604`). `expand` expands `$( )` macros first, so that `vmImage:
    /// $(imageName)` from a matrix leg is read with the leg's value. `None` when the pool does not say.
    pub fn wanted_os(&self, expand: impl Fn(&str) -> String) -> Option<&'static str> {
        let demand = self.demands.iter().find_map(|demand| {
            let demand = expand(demand);
            let mut words = demand.split_whitespace();
            let (name, op, value) = (words.next()?, words.next()?, words.next()?);
            (name.eq_ignore_ascii_case("Agent.OS") && op.eq_ignore_ascii_case("-equals"))
                .then(|| os_name(value))
                .flatten()
        });
        if demand.is_some() {
            return demand;
        }
        if let Some(image) = &self.vm_image {
            let image = expand(image).to_ascii_lowercase();
            if image.starts_with("windows") || image.starts_with("win") || image.starts_with("vs20")
            {
                return Some("Windows_NT");
            }
            if image.starts_with("macos") || image.starts_with("mac") {
                return Some("Darwin");
            }
            if image.starts_with("ubuntu") {
                return Some("Linux");
            }
            return None;
        }
        let name = expand(self.name.as_deref()?).to_ascii_lowercase();
        let hosted = name.strip_prefix("hosted ")?;
        if hosted.contains("windows") || hosted.starts_with("vs20") {
            Some("Windows_NT")
        } else if hosted.contains("mac") {
            Some("Darwin")
        } else if hosted.contains("ubuntu") || hosted.contains("linux") {
            Some("Linux")
        } else {
            None
        }
    }
}

/// The `Agent.OS` of the machine this process runs on, as the agent spells it ("Use predefined variables").
pub fn host_os() -> &'static str {
    match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        "windows" => "Windows_NT",
        other => other,
    }
}

/// `Agent.OSArchitecture` of this machine as Azure Pipelines' agent spells it (`X64`, `ARM64`, `X86`).
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "X64",
        "aarch64" => "ARM64",
        "x86" => "X86",
        other => other,
    }
}

/// `Agent.OS` spelled as the agent spells it, from a demand's value.
fn os_name(value: &str) -> Option<&'static str> {
    match value.to_ascii_lowercase().as_str() {
        "windows_nt" | "windows" => Some("Windows_NT"),
        "darwin" | "macos" => Some("Darwin"),
        "linux" => Some("Linux"),
        _ => None,
    }
}

/// A stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    /// The stage identifier (`stage:`), or `__default` for the implied stage.
    pub name: String,
    pub display_name: Option<String>,
    /// Names of the stages this one waits for. When `dependsOn` is absent this is the previous stage
    /// (already filled in); `dependsOn: []` gives an empty list.
    pub depends_on: Vec<String>,
    /// The condition text; None means the default `succeeded()`.
    pub condition: Option<String>,
    pub variables: Vec<Variable>,
    /// The stage pool, when given (jobs without a pool inherit it, already filled in on each job).
    pub pool: Option<Pool>,
    pub lock_behavior: Option<String>,
    /// `isSkippable` (default true).
    pub is_skippable: bool,
    /// `trigger: manual` makes the stage wait for a manual start; default `automatic`.
    pub manual_trigger: bool,
    pub template_context: Option<serde_json::Value>,
    pub jobs: Vec<Job>,
    pub source: Location,
    /// `group`: the path of the group the stage belongs to (for display).
    #[serde(default)]
    pub group: Option<String>,
}

/// What kind of job this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobKind {
    /// `job:` running on an agent.
    Agent,
    /// `job:` with `pool: server` (agentless).
    Server,
    /// `deployment:` with an environment and a strategy.
    Deployment,
}

/// A job instance. Matrix and parallel strategies are expanded: a job `build` with matrix legs
/// `linux` and `windows` becomes two jobs named `build_linux` and `build_windows`, both with
/// `base_name` `build`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// The instance name: `base_name`, or `base_name_leg` for matrix legs, `base_name_N` for parallel slices.
    pub name: String,
    /// The job identifier as written (`job:`/`deployment:`), or `__default` for the implied job.
    /// `dependsOn` and `dependencies.X` refer to this name.
    pub base_name: String,
    pub kind: JobKind,
    /// Display name; for matrix legs `"<displayName or name> <leg>"`, for slices `"<…> N"`.
    pub display_name: Option<String>,
    /// Base names of the jobs (in the same stage) this job waits for. Absent `dependsOn` means no
    /// dependency for jobs.
    pub depends_on: Vec<String>,
    /// The condition text; None means the default `succeeded()`.
    pub condition: Option<String>,
    /// Variables in order: pipeline-level ones are not repeated here; job variables (scope Job) then
    /// matrix leg variables (scope Matrix).
    pub variables: Vec<Variable>,
    /// The effective pool (job, else stage, else pipeline), when any is given.
    pub pool: Option<Pool>,
    /// `timeoutInMinutes` (default 60; 0 means the maximum).
    pub timeout_in_minutes: u32,
    /// `cancelTimeoutInMinutes` (default 5).
    pub cancel_timeout_in_minutes: u32,
    pub continue_on_error: bool,
    /// Job keys given as a `$[ ]` runtime expression (see [`JOB_RUNTIME_FIELDS`]), key to the
    /// expression as written; evaluated when the job is ready, with its condition's context, and
    /// applied with [`Job::apply_runtime_field`]. The typed field holds the default until then.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub runtime_fields: BTreeMap<String, String>,
    /// The job container (`container:` alias or inline spec), as written.
    pub container: Option<serde_json::Value>,
    /// Service containers (`services:`), name to alias or spec, as written.
    pub services: BTreeMap<String, serde_json::Value>,
    /// `workspace.clean`: `outputs`, `resources` or `all`.
    pub workspace_clean: Option<String>,
    /// Matrix/parallel information for this instance.
    pub strategy: JobStrategy,
    /// For deployment jobs: the target environment.
    pub environment: Option<Environment>,
    /// For deployment jobs: the strategy and its hook phases in execution order.
    pub deployment: Option<DeploymentStrategy>,
    /// Steps in order (agent and server jobs; empty for deployment jobs, whose steps are in the phases).
    pub steps: Vec<Step>,
    pub template_context: Option<serde_json::Value>,
    /// `uses: {repositories, pools}` as written.
    pub uses: Option<serde_json::Value>,
    pub source: Location,
}

/// Job keys that may hold a `$[ ]` runtime expression, evaluated when the job is ready to run.
pub const JOB_RUNTIME_FIELDS: [&str; 3] = [
    "continueOnError",
    "timeoutInMinutes",
    "cancelTimeoutInMinutes",
];

/// Checks the value the runtime expression `expression` of job key `key` (one of
/// [`JOB_RUNTIME_FIELDS`]) evaluated to, as the key's JSON value in a plan job: a boolean for
/// `continueOnError`, a whole number of minutes for the timeouts. The error names the key.
pub fn runtime_field_value(
    key: &str,
    expression: &str,
    value: &str,
) -> Result<serde_json::Value, String> {
    let text = value.trim();
    match key {
        "continueOnError" if text.eq_ignore_ascii_case("true") => Ok(true.into()),
        "continueOnError" if text.eq_ignore_ascii_case("false") => Ok(false.into()),
        "continueOnError" => Err(format!(
            "`continueOnError` must evaluate to true or false, but `{expression}` gave `{text}`"
        )),
        "timeoutInMinutes" | "cancelTimeoutInMinutes" => match text.parse::<u32>() {
            Ok(minutes) => Ok(minutes.into()),
            Err(_) => Err(format!(
                "`{key}` must evaluate to a whole number of minutes, but `{expression}` gave `{text}`"
            )),
        },
        _ => Err(format!("`{key}` is not a job key evaluated at run time")),
    }
}

impl Job {
    /// Every step of the job: its own, then those of its deployment strategy's hooks.
    pub fn all_steps(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().chain(
            self.deployment
                .iter()
                .flat_map(|strategy| &strategy.phases)
                .flat_map(|phase| &phase.steps),
        )
    }

    /// Sets the job key `key` (one of [`JOB_RUNTIME_FIELDS`]) from the value its runtime
    /// expression evaluated to; an error names the key and says what it needed.
    pub fn apply_runtime_field(&mut self, key: &str, value: &str) -> Result<(), String> {
        let expression = self.runtime_fields.get(key).map_or("", String::as_str);
        match runtime_field_value(key, expression, value)? {
            serde_json::Value::Bool(b) => self.continue_on_error = b,
            other => {
                let minutes = other.as_u64().unwrap_or_default() as u32;
                if key == "timeoutInMinutes" {
                    self.timeout_in_minutes = minutes;
                } else {
                    self.cancel_timeout_in_minutes = minutes;
                }
            }
        }
        Ok(())
    }

    /// The job's own variables and groups, without the matrix leg's.
    pub fn job_variables(&self) -> impl Iterator<Item = &Variable> {
        self.variables
            .iter()
            .filter(|v| v.scope() != VariableScope::Matrix)
    }

    /// The matrix leg's variables as name/value pairs.
    pub fn matrix_variables(&self) -> impl Iterator<Item = (&str, &str)> {
        self.variables.iter().filter_map(|v| match v {
            Variable::Value {
                name,
                value,
                scope: VariableScope::Matrix,
                ..
            } => Some((name.as_str(), value.as_str())),
            _ => None,
        })
    }
}

/// Matrix/parallel facts for one job instance (`System.JobPositionInPhase` and friends).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStrategy {
    /// The matrix leg name, or the slice number as text for `parallel`; None without a strategy.
    pub leg: Option<String>,
    /// 1-based position of this instance among its siblings (1 without a strategy).
    pub position_in_phase: u32,
    /// Number of instances the job expanded into (1 without a strategy).
    pub total_jobs_in_phase: u32,
    /// `maxParallel` (0 = unlimited).
    pub max_parallel: u32,
    /// For one target of a deployment over an environment's virtual machines
    /// ([`crate::rollout`]): its batch, from 1; a batch starts when every earlier one succeeded.
    /// 0 otherwise.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rollout_batch: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A deployment environment (`environment: name`, `name.resource`, or the object form).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    pub name: String,
    pub resource_name: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub tags: Vec<String>,
}

/// The strategy of a deployment job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStrategy {
    /// `runOnce`, `rolling` or `canary`.
    pub name: String,
    /// `rolling.maxParallel` as written (a number or `N%`).
    pub max_parallel: Option<String>,
    /// `canary.increments`.
    pub increments: Vec<u32>,
    /// Hook phases in execution order: preDeploy, deploy, routeTraffic, postRouteTraffic (for canary
    /// repeated per increment), then `on.failure` and `on.success` (the runner picks one).
    pub phases: Vec<HookPhase>,
}

/// One lifecycle hook of a deployment strategy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookPhase {
    /// `preDeploy`, `deploy`, `routeTraffic`, `postRouteTraffic`, `on.failure` or `on.success`.
    pub hook: String,
    /// For canary deploy/routeTraffic/postRouteTraffic phases: the increment (percent).
    pub increment: Option<u32>,
    /// The hook's own pool, else the job's.
    pub pool: Option<Pool>,
    pub steps: Vec<Step>,
}

/// The kind of a step (the key that identifies it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StepKind {
    Script,
    Bash,
    Pwsh,
    Powershell,
    Checkout,
    Download,
    DownloadBuild,
    GetPackage,
    Publish,
    Upload,
    Task,
    ReviewApp,
}

impl StepKind {
    /// The YAML key that introduces this kind of step.
    pub fn key(self) -> &'static str {
        match self {
            StepKind::Script => "script",
            StepKind::Bash => "bash",
            StepKind::Pwsh => "pwsh",
            StepKind::Powershell => "powershell",
            StepKind::Checkout => "checkout",
            StepKind::Download => "download",
            StepKind::DownloadBuild => "downloadBuild",
            StepKind::GetPackage => "getPackage",
            StepKind::Publish => "publish",
            StepKind::Upload => "upload",
            StepKind::Task => "task",
            StepKind::ReviewApp => "reviewApp",
        }
    }
}

/// A task reference normalised from `Name@Major`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReference {
    /// The task name as written (may be `publisher.extension.Name` or a GUID). Compare case-insensitively.
    pub name: String,
    /// The major version.
    pub major: u32,
}

/// Where a step runs (`target:`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepTarget {
    /// Container alias, or `host`.
    pub container: Option<String>,
    /// `any` or `restricted`.
    pub commands: Option<String>,
    /// `settableVariables`: None = any; Some(list) = only these (empty = none).
    pub settable_variables: Option<Vec<String>>,
}

/// A step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub kind: StepKind,
    /// The value of the kind's own key: the script text for script/bash/pwsh/powershell, the
    /// repository for checkout (`self`, alias, `none`), the source for download/downloadBuild
    /// (`current`, alias, `none`), the path for publish/upload, the package for getPackage, the name
    /// for reviewApp. None for tasks.
    pub value: Option<String>,
    /// For `task:` steps, the normalised reference.
    pub task: Option<TaskReference>,
    /// Task inputs, or the kind-specific keys of shortcut steps (checkout `clean`, `fetchDepth`, …;
    /// download `artifact`, `patterns`, `path`; pwsh `errorActionPreference`, …) as strings.
    /// A list of strings (such as `sparseCheckoutDirectories`) is joined with newlines. Macros `$( )`
    /// and runtime expressions `$[ ]` are left for the runner. `workingDirectory` and `failOnStderr`
    /// are not here but in their own fields.
    pub inputs: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
    /// The step's reference name (`name:`), used for output variables.
    pub name: Option<String>,
    pub display_name: Option<String>,
    /// The condition text; None means the default `succeeded()`.
    pub condition: Option<String>,
    pub enabled: bool,
    pub continue_on_error: bool,
    pub timeout_in_minutes: Option<u32>,
    pub retry_count_on_task_failure: Option<u32>,
    pub working_directory: Option<String>,
    pub fail_on_stderr: bool,
    pub target: Option<StepTarget>,
    pub source: Location,
}

#[cfg(test)]
mod tests {
    use super::Pool;

    fn pool(name: Option<&str>, image: Option<&str>, demands: &[&str]) -> Pool {
        Pool {
            name: name.map(str::to_string),
            vm_image: image.map(str::to_string),
            demands: demands.iter().map(|d| (*d).to_string()).collect(),
            server: false,
        }
    }

    #[test]
    fn the_wanted_os_comes_from_the_image_a_demand_or_a_hosted_pool_name() {
        let none = |s: &str| s.to_string();
        for (p, os) in [
            (pool(None, Some("windows-latest"), &[]), Some("Windows_NT")),
            (pool(None, Some("vs2017-win2016"), &[]), Some("Windows_NT")),
            (pool(None, Some("macOS-13"), &[]), Some("Darwin")),
            (pool(None, Some("ubuntu-22.04"), &[]), Some("Linux")),
            (pool(None, Some("my-image"), &[]), None),
            (pool(Some("Default"), None, &[]), None),
            (pool(Some("Hosted macOS"), None, &[]), Some("Darwin")),
            (
                pool(Some("Hosted Windows 2019 with VS2019"), None, &[]),
                Some("Windows_NT"),
            ),
            (
                pool(Some("Default"), None, &["agent.os -equals Windows_NT"]),
                Some("Windows_NT"),
            ),
            (
                pool(None, Some("windows-latest"), &["Agent.OS -equals Linux"]),
                Some("Linux"),
            ),
            (pool(Some("Default"), None, &["java"]), None),
        ] {
            assert_eq!(p.wanted_os(none), os, "{p:?}");
        }
        // Macros are expanded first (a matrix leg's `imageName`).
        let leg = |s: &str| s.replace("$(imageName)", "macOS-latest");
        assert_eq!(
            pool(None, Some("$(imageName)"), &[]).wanted_os(leg),
            Some("Darwin")
        );
    }
}
