//! The description of one job as the runner executes it: steps already normalised (script shortcuts turned
//! into their tasks), phases for deployment hooks, limits as durations, and the variables the job starts
//! with. Serialisable, so that a server can hand the same description to a remote agent.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One job to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    pub stage: String,
    pub stage_display_name: String,
    /// The job instance name (`build_linux` for a matrix leg).
    pub name: String,
    pub display_name: String,
    /// Phases in order. Ordinary jobs have one phase without a hook; deployment jobs one per hook.
    pub phases: Vec<PhaseSpec>,
    /// Variables the job starts with, lowest precedence first (pipeline, stage, job, matrix, command line).
    /// Runtime expressions are already evaluated.
    pub variables: Vec<InitialVariable>,
    /// Values masked like secrets in everything the job reports, without being variables: a server
    /// sends the values of the `issecret` outputs of the run's other jobs, which may reach this job
    /// through `$[ dependencies... ]` variables or conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_values: Vec<String>,
    pub timeout: Option<Duration>,
    pub cancel_timeout: Duration,
    pub workspace_clean: Option<String>,
    /// `System.JobPositionInPhase` and `System.TotalJobsInPhase`.
    pub position_in_phase: u32,
    pub total_jobs_in_phase: u32,
    /// For deployment jobs: environment name and strategy name.
    pub environment: Option<String>,
    pub strategy: Option<String>,
    /// `continueOnError` (after its `$[ ]` value, if any): a failure of the job is reported as
    /// succeeded with issues, the run engine's `Engine::job_result`.
    pub continue_on_error: bool,
}

/// A variable the job starts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitialVariable {
    pub name: String,
    pub value: String,
    pub secret: bool,
    pub readonly: bool,
}

impl InitialVariable {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            secret: false,
            readonly: false,
        }
    }
}

/// A group of steps: the whole job, or one lifecycle hook of a deployment job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseSpec {
    /// `preDeploy`, `deploy`, `routeTraffic`, `postRouteTraffic`, `on.failure`, `on.success`; None for
    /// ordinary jobs.
    pub hook: Option<String>,
    /// Canary increment of this phase.
    pub increment: Option<u32>,
    /// Prefixes under which output variables of this phase are published in addition to `step.var`
    /// (deployment jobs: `<job>`, `<hook>`, `<hook>_<increment>`...).
    pub output_prefixes: Vec<String>,
    pub steps: Vec<StepSpec>,
}

/// One step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepSpec {
    /// Reference name (`name:`) used for output variables.
    pub name: Option<String>,
    pub display_name: String,
    pub action: StepAction,
    /// Condition text; None = `succeeded()`.
    pub condition: Option<String>,
    pub enabled: bool,
    pub continue_on_error: bool,
    pub timeout: Option<Duration>,
    pub retry_count_on_task_failure: u32,
    /// `env:` of the step (values may hold macros).
    pub env: BTreeMap<String, String>,
    /// Where the step was written (`file:line:col`), for messages.
    pub location: String,
    /// `target.commands: restricted` and `target.settableVariables`.
    #[serde(default)]
    pub restrictions: CommandRestrictions,
}

/// What logging commands a step may use (`target:` of the step; docs: "Step targets" / restricted
/// commands). The default allows everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRestrictions {
    /// `commands: restricted`: only the commands the agent allows in restricted mode.
    pub restricted: bool,
    /// `settableVariables`: None = any; Some(list) = only these names (empty = none).
    pub settable_variables: Option<Vec<String>>,
}

impl StepSpec {
    /// An enabled step with the default condition and no limits, retries or `env`.
    pub fn new(
        display_name: impl Into<String>,
        action: StepAction,
        location: impl Into<String>,
    ) -> Self {
        Self {
            name: None,
            display_name: display_name.into(),
            action,
            condition: None,
            enabled: true,
            continue_on_error: false,
            timeout: None,
            retry_count_on_task_failure: 0,
            env: BTreeMap::new(),
            location: location.into(),
            restrictions: CommandRestrictions::default(),
        }
    }
}

/// What a step does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StepAction {
    /// A task (`script`/`bash`/`pwsh`/`powershell` are tasks too: CmdLine@2, Bash@3, PowerShell@2).
    Task {
        name: String,
        major: u32,
        inputs: BTreeMap<String, String>,
    },
    /// `checkout: self | none | <alias>` with its options.
    Checkout {
        repository: String,
        inputs: BTreeMap<String, String>,
    },
    /// `publish: path` with `artifact:`.
    Publish {
        path: String,
        artifact: Option<String>,
    },
    /// `download: current | none | <alias>` with `artifact`, `patterns`, `path`.
    Download {
        source: String,
        inputs: BTreeMap<String, String>,
    },
}
