//! `lockgate approve`, `lockgate reject` and `lockgate checks`: the approvals a run's stages wait
//! for, and the approval checks on environments (project administrators).

use lockgate_protocol::api;

use crate::EXIT_OK;
use crate::server::{Connection, client_error, encode};

/// Which pending approvals of a run a decision applies to.
#[derive(clap::Args)]
pub struct DecideArgs {
    #[command(flatten)]
    connection: Connection,
    /// The run id.
    run: i64,
    /// Only the approvals of this stage (default: every pending one you may decide).
    #[arg(long)]
    stage: Option<String>,
    /// Only the approvals for this environment.
    #[arg(long)]
    environment: Option<String>,
    /// A comment kept with the decision in the audit trail.
    #[arg(long, default_value = "")]
    comment: String,
}

#[derive(clap::Subcommand)]
pub enum ChecksCommand {
    /// Require approval before a stage deploys to an environment (replaces its approval check).
    Approval {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
        /// The environment, or the resource `--on` names.
        environment: String,
        /// The kind of resource the check is on (default: an environment).
        #[arg(long = "on", value_enum, default_value_t = ResourceArg::Environment)]
        on: ResourceArg,
        /// Users who may approve, comma-separated; `group:administrators`, `group:contributors` or
        /// `group:readers` for any one user with that role in the project.
        #[arg(long, value_delimiter = ',', required = true)]
        approvers: Vec<String>,
        /// How many of them must approve.
        #[arg(long, default_value_t = 1)]
        min: i64,
        /// Let the user who queued the run approve it.
        #[arg(long)]
        allow_requester: bool,
        /// Shown to the approvers.
        #[arg(long, default_value = "")]
        instructions: String,
        /// Minutes before an undecided approval rejects the stage (default one day; at most 43200).
        #[arg(long, default_value_t = 1_440)]
        timeout: i64,
        /// Every approver approves, in the order given (--min is then ignored).
        #[arg(long)]
        in_sequence: bool,
    },
    /// Only runs of these branches may deploy to the environment (branch control).
    BranchControl {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
        environment: String,
        /// The kind of resource the check is on (default: an environment).
        #[arg(long = "on", value_enum, default_value_t = ResourceArg::Environment)]
        on: ResourceArg,
        /// Refs or branch names, comma-separated; a trailing `*` matches any rest.
        #[arg(long, value_delimiter = ',', required = true)]
        allowed: Vec<String>,
    },
    /// Deployments to the environment wait for these hours (business hours).
    BusinessHours {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
        environment: String,
        /// The kind of resource the check is on (default: an environment).
        #[arg(long = "on", value_enum, default_value_t = ResourceArg::Environment)]
        on: ResourceArg,
        /// Days, comma-separated: Mon,Tue,Wed,Thu,Fri,Sat,Sun.
        #[arg(long, value_delimiter = ',', default_value = "Mon,Tue,Wed,Thu,Fri")]
        days: Vec<String>,
        /// HH:MM.
        #[arg(long)]
        start: String,
        /// HH:MM, after --start.
        #[arg(long)]
        end: String,
        /// The time zone as an offset from UTC (+01:00).
        #[arg(long, default_value = "+00:00")]
        utc_offset: String,
    },
    /// One stage at a time deploys to the environment (exclusive lock); the stages'
    /// `lockBehavior` says whether waiting runs give way to newer ones (runLatest) or queue.
    ExclusiveLock {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
        environment: String,
        /// The kind of resource the check is on (default: an environment).
        #[arg(long = "on", value_enum, default_value_t = ResourceArg::Environment)]
        on: ResourceArg,
        /// Minutes a stage waits for the lock before it fails.
        #[arg(long, default_value_t = 43_200)]
        timeout: i64,
    },
    /// Deployments to the environment wait until a REST API call passes (invoke REST API check).
    RestApi {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
        environment: String,
        /// The kind of resource the check is on (default: an environment).
        #[arg(long = "on", value_enum, default_value_t = ResourceArg::Environment)]
        on: ResourceArg,
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "GET")]
        method: String,
        /// An expression over the JSON answer (`root`), e.g. "eq(root['status'], 'healthy')".
        #[arg(long)]
        success_criteria: Option<String>,
        /// NAME=VALUE, repeatable.
        #[arg(long = "header")]
        headers: Vec<String>,
        /// NAME=VALUE of a header with a secret value (stored encrypted), repeatable.
        #[arg(long = "secret-header")]
        secret_headers: Vec<String>,
        /// Minutes between evaluations.
        #[arg(long, default_value_t = 5.0)]
        retry_interval: f64,
        /// Minutes before the check fails.
        #[arg(long, default_value_t = 1_440)]
        timeout: i64,
    },
    /// Remove a check from an environment.
    Remove {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
        environment: String,
        /// The kind of resource the check is on (default: an environment).
        #[arg(long = "on", value_enum, default_value_t = ResourceArg::Environment)]
        on: ResourceArg,
        /// approval, branch-control, business-hours, exclusive-lock or rest-api.
        #[arg(long, default_value = "approval")]
        kind: String,
    },
}

fn print_approvals(approvals: &[api::Approval]) {
    for approval in approvals {
        println!(
            "  {} / {}: {}",
            approval.stage, approval.environment, approval.status
        );
        for decision in &approval.decisions {
            println!(
                "    {} {}: {}",
                decision.user, decision.decision, decision.comment
            );
        }
    }
}

/// Approves (`approve`) or rejects the run's pending approvals that the caller may decide.
pub fn decide(args: DecideArgs, approve: bool) -> anyhow::Result<u8> {
    let body = api::DecideApprovals {
        decision: if approve { "approve" } else { "reject" }.into(),
        stage: args.stage,
        environment: args.environment,
        comment: args.comment,
    };
    let approvals: Vec<api::Approval> = args
        .connection
        .client()?
        .post_json(&format!("/api/v1/runs/{}/approvals", args.run), &body)
        .map_err(client_error)?;
    println!("run {}:", args.run);
    print_approvals(&approvals);
    Ok(EXIT_OK)
}

pub fn checks(cmd: ChecksCommand) -> anyhow::Result<u8> {
    match cmd {
        ChecksCommand::Approval {
            connection,
            project,
            environment,
            on,
            approvers,
            min,
            allow_requester,
            instructions,
            timeout,
            in_sequence,
        } => {
            let body = api::ApprovalCheck {
                approvers,
                min_approvals: min,
                allow_requester,
                instructions,
                timeout_minutes: timeout,
                in_sequence,
            };
            let check: api::ApprovalCheck = connection
                .client()?
                .put_json(&kind_path(&project, on, &environment, "approval"), &body)
                .map_err(client_error)?;
            if check.in_sequence {
                println!(
                    "{} {environment}: {} must approve, in this order",
                    on.label(),
                    check.approvers.join(", ")
                );
            } else {
                println!(
                    "{} {environment}: {} of {} must approve",
                    on.label(),
                    check.min_approvals,
                    check.approvers.join(", ")
                );
            }
        }
        ChecksCommand::BranchControl {
            connection,
            project,
            environment,
            on,
            allowed,
        } => {
            let body = api::BranchControl {
                allowed_branches: allowed,
            };
            let _: api::BranchControl = connection
                .client()?
                .put_json(
                    &kind_path(&project, on, &environment, "branch-control"),
                    &body,
                )
                .map_err(client_error)?;
            println!(
                "{} {environment}: only {} may deploy",
                on.label(),
                body.allowed_branches.join(", ")
            );
        }
        ChecksCommand::BusinessHours {
            connection,
            project,
            environment,
            on,
            days,
            start,
            end,
            utc_offset,
        } => {
            let body = api::BusinessHours {
                days,
                start,
                end,
                utc_offset,
            };
            let _: api::BusinessHours = connection
                .client()?
                .put_json(
                    &kind_path(&project, on, &environment, "business-hours"),
                    &body,
                )
                .map_err(client_error)?;
            println!(
                "{} {environment}: deployments wait for {} {}-{} (UTC{})",
                on.label(),
                body.days.join(","),
                body.start,
                body.end,
                body.utc_offset
            );
        }
        ChecksCommand::ExclusiveLock {
            connection,
            project,
            environment,
            on,
            timeout,
        } => {
            let body = api::ExclusiveLock {
                timeout_minutes: timeout,
            };
            let _: api::ExclusiveLock = connection
                .client()?
                .put_json(
                    &kind_path(
                        &project,
                        ResourceArg::Environment,
                        &environment,
                        "exclusive-lock",
                    ),
                    &body,
                )
                .map_err(client_error)?;
            println!(
                "{} {environment}: one stage at a time uses it (waits up to {timeout} minutes)",
                on.label()
            );
        }
        ChecksCommand::RestApi {
            connection,
            project,
            environment,
            on,
            url,
            method,
            success_criteria,
            headers,
            secret_headers,
            retry_interval,
            timeout,
        } => {
            let pairs = |list: &[String]| -> anyhow::Result<Vec<(String, String)>> {
                list.iter()
                    .map(|text| {
                        text.split_once('=')
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .ok_or_else(|| {
                                crate::UsageError(format!("`{text}`: give NAME=VALUE")).into()
                            })
                    })
                    .collect()
            };
            let body = api::RestApiCheck {
                method,
                url,
                headers: pairs(&headers)?.into_iter().collect(),
                secret_headers: pairs(&secret_headers)?
                    .into_iter()
                    .map(|(k, v)| (k, Some(v)))
                    .collect(),
                body: None,
                success_criteria,
                retry_interval_minutes: retry_interval,
                timeout_minutes: timeout,
            };
            let set: api::RestApiCheck = connection
                .client()?
                .put_json(&kind_path(&project, on, &environment, "rest-api"), &body)
                .map_err(client_error)?;
            println!(
                "{} {environment}: stages that use it wait for {} {} to pass",
                on.label(),
                set.method,
                set.url
            );
        }
        ChecksCommand::Remove {
            connection,
            project,
            environment,
            on,
            kind,
        } => {
            const KINDS: [&str; 5] = [
                "approval",
                "branch-control",
                "business-hours",
                "exclusive-lock",
                "rest-api",
            ];
            if !KINDS.contains(&kind.as_str()) {
                return Err(crate::UsageError(format!(
                    "--kind must be one of {}, not `{kind}`",
                    KINDS.join(", ")
                ))
                .into());
            }
            connection
                .client()?
                .delete(&kind_path(&project, on, &environment, &kind))
                .map_err(client_error)?;
            println!("{} {environment}: {kind} check removed", on.label());
        }
    }
    Ok(EXIT_OK)
}

fn kind_path(project: &str, on: ResourceArg, name: &str, kind: &str) -> String {
    format!(
        "/api/v1/projects/{}/{}/{}/checks/{kind}",
        encode(project),
        on.segment(),
        encode(name)
    )
}

/// The protected resources checks go on ("Define approvals and checks").
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ResourceArg {
    Environment,
    VariableGroup,
    SecureFile,
    ServiceConnection,
    AgentPool,
}

impl ResourceArg {
    fn segment(self) -> &'static str {
        match self {
            ResourceArg::Environment => "environments",
            ResourceArg::VariableGroup => "variable-groups",
            ResourceArg::SecureFile => "secure-files",
            ResourceArg::ServiceConnection => "service-connections",
            ResourceArg::AgentPool => "agent-pools",
        }
    }

    fn label(self) -> &'static str {
        match self {
            ResourceArg::Environment => "environment",
            ResourceArg::VariableGroup => "variable group",
            ResourceArg::SecureFile => "secure file",
            ResourceArg::ServiceConnection => "service connection",
            ResourceArg::AgentPool => "agent pool",
        }
    }
}
