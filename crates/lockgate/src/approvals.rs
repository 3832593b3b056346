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
        /// The environment.
        environment: String,
        /// Users who may approve, comma-separated.
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
        /// Minutes before an undecided approval rejects the stage (default 30 days).
        #[arg(long, default_value_t = 43_200)]
        timeout: i64,
    },
    /// Remove an environment's approval check.
    Remove {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
        environment: String,
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
            approvers,
            min,
            allow_requester,
            instructions,
            timeout,
        } => {
            let body = api::ApprovalCheck {
                approvers,
                min_approvals: min,
                allow_requester,
                instructions,
                timeout_minutes: timeout,
            };
            let check: api::ApprovalCheck = connection
                .client()?
                .put_json(&check_path(&project, &environment), &body)
                .map_err(client_error)?;
            println!(
                "environment {environment}: {} of {} must approve",
                check.min_approvals,
                check.approvers.join(", ")
            );
        }
        ChecksCommand::Remove {
            connection,
            project,
            environment,
        } => {
            connection
                .client()?
                .delete(&check_path(&project, &environment))
                .map_err(client_error)?;
            println!("environment {environment}: approval check removed");
        }
    }
    Ok(EXIT_OK)
}

fn check_path(project: &str, environment: &str) -> String {
    format!(
        "/api/v1/projects/{}/environments/{}/checks/approval",
        encode(project),
        encode(environment)
    )
}
