//! [`Storage`]: the whole storage API as one dyn-compatible trait. Every backend implements it (SQLite
//! today, PostgreSQL next), and its documentation is the contract a backend is written against.

use std::future::Future;
use std::pin::Pin;

use crate::{
    AccessToken, Agent, AgentInfo, AgentJob, Approval, ApprovalCheck, ApprovalDecision,
    ArtifactFile, ConnectionUse, DeployedVersion, Deployment, Environment, EnvironmentCheck,
    EnvironmentLock, Job, LockOutcome, LogArchive, LogChunk, NewAgentRegistration,
    NewApprovalCheck, NewArtifactFile, NewDeployment, NewJob, NewLockRequest, NewRun,
    NewSecureFile, Pipeline, PipelineVariable, Project, Repository, Run, RunFilter, SecureFile,
    ServiceConnection, Session, StageStart, Step, StoreResult, TestResult, User, VariableGroup,
};

/// What every [`Storage`] method returns: a boxed future, so the trait can be used as
/// `dyn Storage`. Implementations write `Box::pin(async move { ... })`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 'a>>;

/// The storage API of Lockgate: users, sessions, tokens, projects, roles, repositories, pipelines,
/// runs, jobs and their leases, steps, logs, artifacts, test results, agents and deployments.
///
/// Conventions every backend keeps:
/// - Ids are assigned by the database and only grow; times are Unix milliseconds (see
///   [`now_millis`](crate::now_millis)); timestamps the caller does not pass are taken at the call.
/// - A lookup that finds nothing returns `Ok(None)` (or an empty list), never an error.
/// - An insert that breaks a uniqueness rule returns [`StoreError::AlreadyExists`](crate::StoreError)
///   naming what exists, e.g. ``user `ada` ``; the server answers it with 409 Conflict.
/// - Updates of rows that do not exist do nothing and succeed, unless documented otherwise.
/// - Statuses and results are stored as given: jobs and runs use `pending`, `queued`, `running`,
///   `completed` with results `succeeded`, `succeededWithIssues`, `failed`, `canceled`, `skipped`.
///   JSON columns (`spec`, `depends_on`, `outputs`, `diagnostics`, `parameters`) are opaque text.
/// - Every method may fail with [`StoreError::Database`](crate::StoreError) when the database does.
pub trait Storage: Send + Sync {
    /// The version of the newest migration applied (15 once every current migration ran).
    fn schema_version(&self) -> StoreFuture<'_, i64>;

    // ---- users and sessions ----

    /// Creates a user; `AlreadyExists` (``user `name` ``) when the name is taken.
    fn create_user<'a>(
        &'a self,
        name: &'a str,
        password_hash: &'a str,
        is_admin: bool,
    ) -> StoreFuture<'a, User>;

    /// The user with this exact name.
    fn user_by_name<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<User>>;

    fn user_by_id(&self, id: i64) -> StoreFuture<'_, Option<User>>;

    /// How many users exist (0 before the first administrator is created).
    fn count_users(&self) -> StoreFuture<'_, i64>;

    fn set_password_hash<'a>(&'a self, user_id: i64, password_hash: &'a str)
    -> StoreFuture<'a, ()>;

    /// Records a session (a cookie) by the hash of its token.
    fn create_session<'a>(
        &'a self,
        token_hash: &'a str,
        user_id: i64,
        csrf_token: &'a str,
        expires_at: i64,
    ) -> StoreFuture<'a, ()>;

    /// The session with this token hash and its user, when `expires_at > now`.
    fn session<'a>(&'a self, token_hash: &'a str, now: i64) -> StoreFuture<'a, Option<Session>>;

    /// Deletes the session (signing out); nothing happens when there is none.
    fn delete_session<'a>(&'a self, token_hash: &'a str) -> StoreFuture<'a, ()>;

    // ---- personal access tokens ----

    /// Records a personal access token by its hash; `scopes` is a comma-separated list.
    fn create_access_token<'a>(
        &'a self,
        user_id: i64,
        name: &'a str,
        token_hash: &'a str,
        scopes: &'a str,
    ) -> StoreFuture<'a, AccessToken>;

    /// The user owning the token with this hash, with the token.
    fn user_by_token_hash<'a>(
        &'a self,
        token_hash: &'a str,
    ) -> StoreFuture<'a, Option<(User, AccessToken)>>;

    /// A user's tokens, oldest first.
    fn list_access_tokens(&self, user_id: i64) -> StoreFuture<'_, Vec<AccessToken>>;

    // ---- projects and roles ----

    /// Creates a project and makes `owner_id` its `administrator`, both or neither (one transaction);
    /// `AlreadyExists` (``project `name` ``) when the name is taken.
    fn create_project<'a>(&'a self, name: &'a str, owner_id: i64) -> StoreFuture<'a, Project>;

    fn project_by_name<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<Project>>;

    fn project_by_id(&self, id: i64) -> StoreFuture<'_, Option<Project>>;

    /// Every project, by name.
    fn list_projects(&self) -> StoreFuture<'_, Vec<Project>>;

    /// The role (`reader`, `contributor`, `administrator`) of a user in a project, if any.
    fn project_role(&self, project_id: i64, user_id: i64) -> StoreFuture<'_, Option<String>>;

    /// The members of a project as (user name, role), by user name.
    fn project_members(&self, project_id: i64) -> StoreFuture<'_, Vec<(String, String)>>;

    /// Gives a user a role in a project, replacing the role they had.
    fn set_project_role<'a>(
        &'a self,
        project_id: i64,
        user_id: i64,
        role: &'a str,
    ) -> StoreFuture<'a, ()>;

    // ---- repositories and pipelines ----

    /// Creates a repository; `AlreadyExists` (``repository `name` ``) when the project has one with
    /// that name.
    fn create_repository<'a>(
        &'a self,
        project_id: i64,
        name: &'a str,
    ) -> StoreFuture<'a, Repository>;

    /// The repository of a project with this name.
    fn repository<'a>(
        &'a self,
        project_id: i64,
        name: &'a str,
    ) -> StoreFuture<'a, Option<Repository>>;

    fn repository_by_id(&self, id: i64) -> StoreFuture<'_, Option<Repository>>;

    /// A project's repositories, by name.
    fn list_repositories(&self, project_id: i64) -> StoreFuture<'_, Vec<Repository>>;

    /// Creates a pipeline; `AlreadyExists` (``pipeline `name` ``) when the project has one with that
    /// name.
    fn create_pipeline<'a>(
        &'a self,
        project_id: i64,
        repository_id: i64,
        name: &'a str,
        yaml_path: &'a str,
    ) -> StoreFuture<'a, Pipeline>;

    fn pipeline_by_id(&self, id: i64) -> StoreFuture<'_, Option<Pipeline>>;

    /// A project's pipelines, by name.
    fn list_pipelines(&self, project_id: i64) -> StoreFuture<'_, Vec<Pipeline>>;

    /// The pipelines defined on a repository, oldest first (a push triggers each of them).
    fn pipelines_of_repository(&self, repository_id: i64) -> StoreFuture<'_, Vec<Pipeline>>;

    /// The variables defined on a pipeline (not in its YAML), in the order they were saved; empty
    /// for a pipeline that has none or does not exist. Secret values are returned as stored: the
    /// caller keeps them from users.
    fn pipeline_variables(&self, pipeline_id: i64) -> StoreFuture<'_, Vec<PipelineVariable>>;

    /// Replaces every variable of a pipeline at once, keeping the given order. Names are unique per
    /// pipeline ignoring ASCII case: a list with two such names is `AlreadyExists`
    /// (``variable `name` ``) and changes nothing.
    fn set_pipeline_variables<'a>(
        &'a self,
        pipeline_id: i64,
        variables: &'a [PipelineVariable],
    ) -> StoreFuture<'a, ()>;

    // ---- runs ----

    /// Increments and returns the `$(Rev:r)` counter of a pipeline for a run name prefix: 1 the first
    /// time a prefix is seen, then 2, 3... Atomic: concurrent callers never get the same number.
    fn next_name_revision<'a>(
        &'a self,
        pipeline_id: i64,
        name_prefix: &'a str,
    ) -> StoreFuture<'a, i64>;

    /// Inserts a run with all its jobs atomically (one transaction: readers see the run with every job
    /// or not at all) and returns the stored run. The run number is the pipeline's previous highest
    /// plus one; `queued_at` (of the run and its jobs) is now, and a run inserted as `completed` gets
    /// `finished_at` now. Jobs are inserted in the given order, so their ids follow it.
    fn create_run<'a>(&'a self, run: &'a NewRun, jobs: &'a [NewJob]) -> StoreFuture<'a, Run>;

    /// The run with its pipeline's name and project.
    fn run_by_id(&self, id: i64) -> StoreFuture<'_, Option<Run>>;

    /// Runs newest first (by id) matching every filter given; `status` matches the status or the
    /// result; `before_id` pages backwards; `limit` is clamped to 1..=1000.
    fn list_runs<'a>(&'a self, filter: &'a RunFilter) -> StoreFuture<'a, Vec<Run>>;

    /// Sets a run's status and result. `started_at` is set to now the first time the status is not
    /// `queued`; `finished_at` is now when the status is `completed` and cleared otherwise.
    fn set_run_status<'a>(
        &'a self,
        run_id: i64,
        status: &'a str,
        result: Option<&'a str>,
    ) -> StoreFuture<'a, ()>;

    // ---- jobs ----

    /// A run's jobs, by id (the order they were created in).
    fn jobs_of_run(&self, run_id: i64) -> StoreFuture<'_, Vec<Job>>;

    fn job_by_id(&self, id: i64) -> StoreFuture<'_, Option<Job>>;

    /// Jobs of every run with an id above `after_id`, by id, at most `limit` (clamped to 1..=1000):
    /// pages through all jobs (the server's one-time upgrades of stored specs).
    fn jobs_after(&self, after_id: i64, limit: i64) -> StoreFuture<'_, Vec<Job>>;

    /// Replaces a job's stored spec (the scheduler records values it computed when queueing the job).
    fn set_job_spec<'a>(&'a self, job_id: i64, spec: &'a str) -> StoreFuture<'a, ()>;

    /// Sets the status and result of a job that is not leased (scheduling: `pending` -> `queued`,
    /// skipped, canceled; `running` for an agentless job the server runs itself); `started_at` is
    /// set to now when the status becomes `running` (kept if set), `finished_at` when it is `completed`.
    fn set_job_status<'a>(
        &'a self,
        job_id: i64,
        status: &'a str,
        result: Option<&'a str>,
    ) -> StoreFuture<'a, ()>;

    /// Atomically leases the oldest (lowest id) `queued` job to an agent: it becomes `running` with
    /// this agent, lease token hash, lease expiry and `started_at` now, and is returned. `None` when
    /// nothing is queued. Atomic: when agents ask at the same time, each queued job goes to exactly
    /// one of them (a single conditional `UPDATE ... WHERE status = 'queued'`, or `FOR UPDATE SKIP
    /// LOCKED` on PostgreSQL). A job whose `agent_os` is set goes only to an agent of that `agent_os`.
    fn lease_next_job<'a>(
        &'a self,
        agent_name: &'a str,
        agent_os: &'a str,
        lease_token_hash: &'a str,
        lease_expires_at: i64,
    ) -> StoreFuture<'a, Option<Job>>;

    /// The job, when it is `running` under this lease token hash (whatever the expiry: expired leases
    /// are ended by [`expire_leases`](Storage::expire_leases)).
    fn leased_job<'a>(
        &'a self,
        job_id: i64,
        lease_token_hash: &'a str,
    ) -> StoreFuture<'a, Option<Job>>;

    /// Extends a held lease to `lease_expires_at`; returns whether cancellation of the job was
    /// requested, or `None` when the job no longer runs under this lease.
    fn renew_lease<'a>(
        &'a self,
        job_id: i64,
        lease_token_hash: &'a str,
        lease_expires_at: i64,
    ) -> StoreFuture<'a, Option<bool>>;

    /// Completes a leased job with its result and output variables (a JSON object), and drops the
    /// lease, in one conditional update: `true` when the job was `running` under this lease token
    /// hash, `false` (and nothing changes) otherwise, e.g. when the lease expired or the job was
    /// finished already. Two calls with the same lease never both return `true`.
    fn finish_leased_job<'a>(
        &'a self,
        job_id: i64,
        lease_token_hash: &'a str,
        result: &'a str,
        outputs: &'a str,
    ) -> StoreFuture<'a, bool>;

    /// Queues again every running job whose lease expired before `now` and that has no step row yet
    /// (its agent died before any step, so no pipeline code ran): agent, lease and `started_at` are
    /// cleared so that another agent leases it; its log is kept. Returns them as they were before
    /// (with the agent that held them), by id. Called before [`expire_leases`](Self::expire_leases).
    fn requeue_unstarted_expired_jobs(&self, now: i64) -> StoreFuture<'_, Vec<Job>>;

    /// Completes as `failed` every running job whose lease expired before `now` (its agent died), drops
    /// their leases, and returns them as updated.
    fn expire_leases(&self, now: i64) -> StoreFuture<'_, Vec<Job>>;

    /// Ends the jobs held by agents that died with an earlier server process (its built-in agents),
    /// in one transaction: every `running` job leased to an agent registered as built-in
    /// ([`register_builtin_agent`](Self::register_builtin_agent)) and named in `agent_names` (the
    /// starting server's own: other servers on the same database keep theirs)
    /// that has no step row yet goes back to `queued` (agent, lease and `started_at` cleared, so another
    /// agent leases it; its log is kept); every other such job completes as `failed` with its lease
    /// dropped, and its steps still `running` complete as `failed`. Returns the jobs as updated, by id.
    fn release_abandoned_jobs<'a>(&'a self, agent_names: &'a [String])
    -> StoreFuture<'a, Vec<Job>>;

    /// Cancels a run in one transaction: the run's result becomes `canceled` (its status stays as it
    /// is until its last job completes; a completed run is left alone), `queued` jobs (waiting for an
    /// agent) complete as `canceled`, `running` ones get a cancel request (seen by
    /// [`renew_lease`](Storage::renew_lease)), `pending` jobs listed in `still_waiting` stay pending
    /// (their condition may hold for a canceled run) and every other `pending` job completes as
    /// `skipped`. Nothing is changed when the run does not exist.
    fn request_cancel<'a>(&'a self, run_id: i64, still_waiting: &'a [i64]) -> StoreFuture<'a, ()>;

    /// Puts completed jobs back to `pending` for another attempt (`attempt` + 1), dropping their
    /// steps, logs, test results, artifacts, outputs and lease, in one transaction. Jobs that are not
    /// `completed` keep their state (their steps and logs are still dropped).
    fn reset_jobs<'a>(&'a self, job_ids: &'a [i64]) -> StoreFuture<'a, ()>;

    // ---- environments and the deployment ledger ----

    /// Creates an environment with `created_by` as its first owner (one transaction);
    /// `AlreadyExists` (``environment `name` ``) when the project has one with that name ignoring
    /// ASCII case.
    fn create_environment<'a>(
        &'a self,
        project_id: i64,
        name: &'a str,
        description: &'a str,
        created_by: &'a str,
    ) -> StoreFuture<'a, Environment>;

    /// The project's environment with this name ignoring ASCII case, created as by
    /// [`create_environment`](Storage::create_environment) (no description) when there is none.
    /// Concurrent callers get the same environment; an existing one is left as it is.
    fn ensure_environment<'a>(
        &'a self,
        project_id: i64,
        name: &'a str,
        created_by: &'a str,
    ) -> StoreFuture<'a, Environment>;

    /// The project's environment with this name, ignoring ASCII case.
    fn environment_by_name<'a>(
        &'a self,
        project_id: i64,
        name: &'a str,
    ) -> StoreFuture<'a, Option<Environment>>;

    /// A project's environments, by name ignoring case.
    fn list_environments(&self, project_id: i64) -> StoreFuture<'_, Vec<Environment>>;

    /// The owners of an environment (user names), by name.
    fn environment_owners(&self, environment_id: i64) -> StoreFuture<'_, Vec<String>>;

    /// Changes what is given of an environment in one transaction: its description, and its owners
    /// (the whole list replaced; duplicates are kept once).
    fn update_environment<'a>(
        &'a self,
        environment_id: i64,
        description: Option<&'a str>,
        owners: Option<&'a [String]>,
    ) -> StoreFuture<'a, ()>;

    /// Records a deployment as `running`, started now, and returns it. Recording the same job attempt
    /// again (a job queued again because its agent died before a step) replaces that record's
    /// contents and start, and puts it back to `running`. Whenever the job later completes, by
    /// whatever method ([`finish_leased_job`](Storage::finish_leased_job),
    /// [`expire_leases`](Storage::expire_leases), [`release_abandoned_jobs`](Storage::release_abandoned_jobs),
    /// [`set_job_status`](Storage::set_job_status)), its running deployment completes with the
    /// job's result and finish time in the same statement.
    fn start_deployment<'a>(&'a self, deployment: &'a NewDeployment)
    -> StoreFuture<'a, Deployment>;

    /// The deployment recorded for a job's attempt.
    fn deployment_of_job(&self, job_id: i64, attempt: i64) -> StoreFuture<'_, Option<Deployment>>;

    /// An environment's ledger, newest first (by id); `before_id` pages backwards; `limit` is
    /// clamped to 1..=1000.
    fn deployments(
        &self,
        environment_id: i64,
        before_id: Option<i64>,
        limit: i64,
    ) -> StoreFuture<'_, Vec<Deployment>>;

    /// For each environment of a project that has one (by environment name), its newest deployment
    /// that completed as `succeeded` or `succeededWithIssues`.
    fn latest_deployments(&self, project_id: i64) -> StoreFuture<'_, Vec<Deployment>>;

    /// "What is where" for a pipeline: for each environment it deployed to successfully (by
    /// environment name), its newest successful deployment from this pipeline, and how many runs of
    /// the pipeline on the deployment's branch completed as `succeeded` or `succeededWithIssues`
    /// with a higher id than the deployed run (`behind`).
    fn deployed_versions(&self, pipeline_id: i64) -> StoreFuture<'_, Vec<DeployedVersion>>;

    // ---- steps ----

    /// Inserts or updates the step at `(job_id, position)`; an update keeps the first `started_at`.
    fn upsert_step<'a>(&'a self, step: &'a Step) -> StoreFuture<'a, ()>;

    /// The steps of every job of a run, by job id then position.
    fn steps_of_run(&self, run_id: i64) -> StoreFuture<'_, Vec<Step>>;

    // ---- logs ----

    /// Appends a compressed chunk of `line_count` log lines to a job's log; returns the number of the
    /// chunk's first line (1 for the first chunk). Chunks are numbered 1, 2, ... per job.
    fn append_log_chunk<'a>(
        &'a self,
        job_id: i64,
        line_count: i64,
        compressed: &'a [u8],
    ) -> StoreFuture<'a, i64>;

    /// A job's log chunks in order.
    fn log_chunks(&self, job_id: i64) -> StoreFuture<'_, Vec<LogChunk>>;

    /// A job's log chunks in order that hold lines after line `after` (the chunk holding line
    /// `after + 1` first, which may start earlier): what a live reader that has `after` lines lacks.
    fn log_chunks_after(&self, job_id: i64, after: i64) -> StoreFuture<'_, Vec<LogChunk>>;

    /// Completed jobs with a log chunk still held in the database (its `object` empty), oldest job
    /// first, at most `limit`: the logs to move to object storage.
    fn jobs_with_logs_to_archive(&self, limit: i64) -> StoreFuture<'_, Vec<i64>>;

    /// Replaces the first `archive.chunk_count` chunks of a completed job's log (sequences 1 to
    /// `archive.through_sequence`, `archive.line_count` lines) by one chunk naming
    /// `archive.object`, where the caller stored their lines; later chunks stay. Returns `false` and
    /// changes nothing when the job is no longer completed at `archive.attempt` or those chunks are
    /// no longer the ones the caller read (another server archived them first).
    fn archive_log_chunks<'a>(&'a self, archive: &'a LogArchive) -> StoreFuture<'a, bool>;

    // ---- artifacts and test results ----

    /// Records an artifact file; uploading the same `(run, artifact name, file path)` again replaces
    /// its job, size and digest.
    fn add_artifact_file<'a>(&'a self, file: &'a NewArtifactFile) -> StoreFuture<'a, ArtifactFile>;

    /// A run's artifact files, by artifact name then path.
    fn artifact_files(&self, run_id: i64) -> StoreFuture<'_, Vec<ArtifactFile>>;

    /// Records test results, all or none (one transaction).
    fn add_test_results<'a>(&'a self, results: &'a [TestResult]) -> StoreFuture<'a, ()>;

    /// A run's test results in the order they were added.
    fn test_results(&self, run_id: i64) -> StoreFuture<'_, Vec<TestResult>>;

    // ---- agents ----

    /// Registers a remote agent, or replaces the token hash of the agent with that name (which is
    /// then a remote agent, whatever it was).
    fn register_agent<'a>(&'a self, name: &'a str, token_hash: &'a str) -> StoreFuture<'a, Agent>;

    /// Registers one of the server's built-in agents (or replaces its token): only the server does,
    /// when it starts them. Their jobs are the ones [`release_abandoned_jobs`](Self::release_abandoned_jobs)
    /// ends.
    fn register_builtin_agent<'a>(
        &'a self,
        name: &'a str,
        token_hash: &'a str,
    ) -> StoreFuture<'a, Agent>;

    /// The agent with this token hash, after marking it as seen now (`last_seen_at`).
    fn agent_by_token_hash<'a>(&'a self, token_hash: &'a str) -> StoreFuture<'a, Option<Agent>>;

    /// Stores a one-time registration token (its hash).
    fn create_agent_registration<'a>(
        &'a self,
        registration: &'a NewAgentRegistration,
    ) -> StoreFuture<'a, ()>;

    /// Trades a registration token for a new agent, in one transaction: when the token with this
    /// hash is for `pool` (ignoring ASCII case), unused and expires after `now`, it is marked used
    /// and an agent `name` with `token_hash` is created in the token's pool (as the token spells
    /// it) and project, and returned. With `tags` the token must be one for an environment's
    /// targets (`pool` is the environment's name) and the agent becomes a target of it with these
    /// tags; without, it must be a pool's. `None` (nothing changes) when the token is unknown, for
    /// another pool or environment, used or expired; `AlreadyExists` (``agent `name` ``, and the
    /// token stays unused) when an agent has that name.
    fn redeem_agent_registration<'a>(
        &'a self,
        registration_hash: &'a str,
        pool: &'a str,
        tags: Option<&'a [String]>,
        now: i64,
        name: &'a str,
        token_hash: &'a str,
    ) -> StoreFuture<'a, Option<Agent>>;

    /// Records what an agent reported about itself (OS, version, capabilities).
    fn set_agent_info<'a>(&'a self, agent_id: i64, info: &'a AgentInfo) -> StoreFuture<'a, ()>;

    /// Every agent, by name.
    fn list_agents(&self) -> StoreFuture<'_, Vec<Agent>>;

    /// Enables or disables (drains) the agent with this name; `false` when there is none.
    fn set_agent_enabled<'a>(&'a self, name: &'a str, enabled: bool) -> StoreFuture<'a, bool>;

    /// Removes the agent with this name (its token stops working); `false` when there is none.
    /// A job it holds keeps its lease until the lease expires.
    fn remove_agent<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool>;

    /// The jobs that are `queued` (waiting for an agent) or `running` (leased), oldest first, with
    /// the project of their pipeline.
    fn agent_jobs(&self) -> StoreFuture<'_, Vec<AgentJob>>;

    /// Leases this `queued` job to an agent as [`lease_next_job`](Self::lease_next_job) does (one
    /// conditional update): `None` when the job is not `queued` any more (another agent took it).
    fn lease_job<'a>(
        &'a self,
        job_id: i64,
        agent_name: &'a str,
        lease_token_hash: &'a str,
        lease_expires_at: i64,
    ) -> StoreFuture<'a, Option<Job>>;

    // ---- approvals ----

    /// Sets (or with `None` removes) the approval check of an environment of a project; the
    /// environment name ignores ASCII case. Approvals already asked for keep the check as it was.
    fn set_approval_check<'a>(
        &'a self,
        project_id: i64,
        environment: &'a str,
        check: Option<&'a NewApprovalCheck>,
    ) -> StoreFuture<'a, Option<ApprovalCheck>>;

    /// The approval checks of a project, by environment name.
    fn approval_checks(&self, project_id: i64) -> StoreFuture<'_, Vec<ApprovalCheck>>;

    /// Asks for the approval of `check` for a run's stage attempt: a new `pending` approval, or the
    /// one already asked for (once per run, stage, attempt and check, whoever asks).
    fn request_approval<'a>(
        &'a self,
        run_id: i64,
        stage: &'a str,
        attempt: i64,
        check: &'a ApprovalCheck,
        now: i64,
    ) -> StoreFuture<'a, Approval>;

    /// The approvals of a run with their decisions, oldest first.
    fn approvals_of_run(&self, run_id: i64) -> StoreFuture<'_, Vec<Approval>>;

    /// Records a decision on a pending approval, atomically: a rejection rejects it; an approval
    /// approves it once `min_approvals` different users approved. `None` when the approval does
    /// not exist or is no longer pending (nothing is recorded); a user's second approval counts once.
    fn decide_approval<'a>(
        &'a self,
        approval_id: i64,
        decision: &'a ApprovalDecision,
    ) -> StoreFuture<'a, Option<Approval>>;

    /// Ends a pending approval as `timedOut` (a timeout rejects); false when it was not pending.
    fn expire_approval(&self, approval_id: i64, now: i64) -> StoreFuture<'_, bool>;

    /// The pending approvals of every run, for the timeout sweep.
    fn pending_approvals(&self) -> StoreFuture<'_, Vec<Approval>>;

    /// Sets (or with `None` removes) the check of `kind` on an environment of a project (the
    /// name ignores ASCII case); `config` (the check's settings) and `created_by` as given.
    fn set_environment_check<'a>(
        &'a self,
        project_id: i64,
        environment: &'a str,
        kind: &'a str,
        config: Option<(&'a str, &'a str)>,
    ) -> StoreFuture<'a, Option<EnvironmentCheck>>;

    /// The automatic checks of a project, by environment and kind.
    fn environment_checks(&self, project_id: i64) -> StoreFuture<'_, Vec<EnvironmentCheck>>;

    // ---- variable groups ----

    /// Creates the variable group `name` of a project, or replaces the description and variables
    /// of the one with that name (ignoring ASCII case; it keeps its id, name and authorizations).
    fn put_variable_group<'a>(
        &'a self,
        project_id: i64,
        name: &'a str,
        description: &'a str,
        variables: &'a str,
        user: &'a str,
    ) -> StoreFuture<'a, VariableGroup>;

    /// A project's variable groups with their authorized pipelines, by name.
    fn variable_groups(&self, project_id: i64) -> StoreFuture<'_, Vec<VariableGroup>>;

    /// Deletes a variable group (name ignoring ASCII case); false when there was none.
    fn delete_variable_group<'a>(&'a self, project_id: i64, name: &'a str)
    -> StoreFuture<'a, bool>;

    /// Authorizes a pipeline to use a group; false when it was already.
    fn authorize_variable_group<'a>(
        &'a self,
        group_id: i64,
        pipeline_id: i64,
        user: &'a str,
        now: i64,
    ) -> StoreFuture<'a, bool>;

    // ---- service connections ----

    /// Creates the service connection `name` of a project, or replaces the kind, description and
    /// fields of the one with that name (ignoring ASCII case; it keeps its id, name,
    /// authorizations and usage history).
    fn put_service_connection<'a>(
        &'a self,
        project_id: i64,
        name: &'a str,
        kind: &'a str,
        description: &'a str,
        fields: &'a str,
        user: &'a str,
    ) -> StoreFuture<'a, ServiceConnection>;

    /// A project's service connections with their authorized pipelines, by name.
    fn service_connections(&self, project_id: i64) -> StoreFuture<'_, Vec<ServiceConnection>>;

    /// Deletes a service connection (name ignoring ASCII case); false when there was none.
    fn delete_service_connection<'a>(
        &'a self,
        project_id: i64,
        name: &'a str,
    ) -> StoreFuture<'a, bool>;

    /// Authorizes a pipeline to use a service connection; false when it was already.
    fn authorize_service_connection<'a>(
        &'a self,
        connection_id: i64,
        pipeline_id: i64,
        user: &'a str,
        now: i64,
    ) -> StoreFuture<'a, bool>;

    /// Records that a job's attempt used a connection (once per attempt).
    fn record_connection_use(
        &self,
        connection_id: i64,
        usage: &ConnectionUse,
    ) -> StoreFuture<'_, ()>;

    /// A connection's newest uses, newest first, at most `limit`.
    fn connection_uses(
        &self,
        connection_id: i64,
        limit: i64,
    ) -> StoreFuture<'_, Vec<ConnectionUse>>;

    // ---- secure files ----

    /// Creates the secure file `name` of a project, or replaces the content and description of
    /// the one with that name (ignoring ASCII case; it keeps its id, name and authorizations).
    /// `content` is sealed by the server; `size` and `digest` describe the clear content.
    fn put_secure_file<'a>(&'a self, file: &'a NewSecureFile) -> StoreFuture<'a, SecureFile>;

    /// A project's secure files (without their content) with their authorized pipelines, by name.
    fn secure_files(&self, project_id: i64) -> StoreFuture<'_, Vec<SecureFile>>;

    /// The sealed content of a project's secure file `name` (ignoring ASCII case).
    fn secure_file_content<'a>(
        &'a self,
        project_id: i64,
        name: &'a str,
    ) -> StoreFuture<'a, Option<String>>;

    /// Deletes a project's secure file `name` (ignoring ASCII case); false when there is none.
    fn delete_secure_file<'a>(&'a self, project_id: i64, name: &'a str) -> StoreFuture<'a, bool>;

    /// Authorizes a pipeline to use a secure file; false when it was already.
    fn authorize_secure_file<'a>(
        &'a self,
        file_id: i64,
        pipeline_id: i64,
        user: &'a str,
        now: i64,
    ) -> StoreFuture<'a, bool>;

    // ---- manual stages and exclusive locks ----

    /// Records that `user` started a manual stage of a run; false when it was started already.
    fn start_stage<'a>(
        &'a self,
        run_id: i64,
        stage: &'a str,
        user: &'a str,
        now: i64,
    ) -> StoreFuture<'a, bool>;

    /// The manual stages of a run someone started.
    fn stage_starts(&self, run_id: i64) -> StoreFuture<'_, Vec<StageStart>>;

    /// Asks for the exclusive lock of an environment for a run's stage, atomically with every
    /// other request on it: the request is added once (asking again changes nothing); a `held`
    /// lock whose run completed or whose stage has no unfinished job any more is released; waiting
    /// requests past their timeout time out; a waiting `runLatest` request with a newer waiting
    /// request behind it is canceled (its reason names the newer run); and when nobody holds the
    /// lock the oldest waiting request gets it.
    fn request_lock<'a>(
        &'a self,
        request: &'a NewLockRequest<'a>,
        now: i64,
    ) -> StoreFuture<'a, LockOutcome>;

    /// Ends a run's lock requests (of one stage, or all): held ones are released, waiting ones
    /// withdrawn. Returns the runs still waiting for the environments whose lock was released.
    fn release_locks<'a>(
        &'a self,
        run_id: i64,
        stage: Option<&'a str>,
        now: i64,
    ) -> StoreFuture<'a, Vec<i64>>;

    /// A run's lock requests, oldest first.
    fn locks_of_run(&self, run_id: i64) -> StoreFuture<'_, Vec<EnvironmentLock>>;

    /// The runs with a waiting lock request (for the periodic sweep of timeouts and stale holders).
    fn runs_waiting_for_locks(&self) -> StoreFuture<'_, Vec<i64>>;

    // ---- settings ----

    /// A named value the server keeps about its data (`secrets.key-check`, upgrade markers).
    fn setting<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<String>>;

    /// Sets a named value, replacing the one stored.
    fn set_setting<'a>(&'a self, name: &'a str, value: &'a str) -> StoreFuture<'a, ()>;

    /// Makes sure values that were overwritten or deleted are gone from the database's files (no
    /// copy left in free pages or a write-ahead log), after secrets were encrypted in place.
    fn purge_overwritten(&self) -> StoreFuture<'_, ()>;
}
