//! `lockgate environments list|show|diff` and `lockgate redeploy`: a project's environments with what each runs now, and one
//! environment's deployment ledger, from a Lockgate server.

use lockgate_protocol::api;

use crate::server::{Connection, client_error, encode};
use crate::{EXIT_OK, UsageError};

#[derive(clap::Subcommand)]
pub enum EnvironmentsCommand {
    /// List a project's environments with their newest successful deployment.
    List {
        #[command(flatten)]
        connection: Connection,
        /// The project (default: your only project).
        #[arg(long)]
        project: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show an environment: description, owners and its deployment ledger, newest first.
    Show {
        #[command(flatten)]
        connection: Connection,
        /// The environment.
        name: String,
        /// The project (default: your only project).
        #[arg(long)]
        project: Option<String>,
        /// How many ledger entries (1 to 1000).
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// What promoting FROM's deployed version to TO would change: commits, files, artifacts and
    /// variables between the pipeline's newest successful deployments to the two.
    Diff {
        #[command(flatten)]
        connection: Connection,
        /// The environment whose version would be promoted.
        from: String,
        /// The environment it would be promoted to.
        to: String,
        /// The pipeline (id, see `lockgate pipelines list`).
        #[arg(long)]
        pipeline: i64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn environments(cmd: EnvironmentsCommand) -> anyhow::Result<u8> {
    match cmd {
        EnvironmentsCommand::List {
            connection,
            project,
            json,
        } => {
            let client = connection.client()?;
            let project = project_or_only(&client, project)?;
            let environments: Vec<api::Environment> = client
                .get_json(&format!(
                    "/api/v1/projects/{}/environments",
                    encode(&project)
                ))
                .map_err(client_error)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&environments)?);
            } else if environments.is_empty() {
                println!("no environments in project `{project}` yet");
            } else {
                for environment in &environments {
                    match &environment.latest_deployment {
                        Some(d) => println!(
                            "{:<24} {} #{} {} {} @ {} by {}",
                            environment.name,
                            d.pipeline,
                            d.run_number,
                            d.run_name,
                            d.branch.trim_start_matches("refs/heads/"),
                            short(&d.commit),
                            d.requested_by
                        ),
                        None => println!("{:<24} (nothing deployed yet)", environment.name),
                    }
                }
            }
            Ok(EXIT_OK)
        }
        EnvironmentsCommand::Show {
            connection,
            name,
            project,
            limit,
            json,
        } => {
            let client = connection.client()?;
            let project = project_or_only(&client, project)?;
            let base = format!(
                "/api/v1/projects/{}/environments/{}",
                encode(&project),
                encode(&name)
            );
            let environment: api::Environment = client.get_json(&base).map_err(client_error)?;
            let ledger: Vec<api::Deployment> = client
                .get_json(&format!("{base}/deployments?limit={limit}"))
                .map_err(client_error)?;
            if json {
                let mut value = serde_json::to_value(&environment)?;
                value["deployments"] = serde_json::to_value(&ledger)?;
                println!("{}", serde_json::to_string_pretty(&value)?);
                return Ok(EXIT_OK);
            }
            println!("{} (project {})", environment.name, environment.project);
            if !environment.description.is_empty() {
                println!("  {}", environment.description);
            }
            println!("  owners: {}", environment.owners.join(", "));
            if let Some(d) = &environment.latest_deployment {
                println!(
                    "  runs now: {} #{} {} @ {}",
                    d.pipeline,
                    d.run_number,
                    d.run_name,
                    short(&d.commit)
                );
            }
            for r in &environment.resources {
                println!(
                    "  resource {} ({}, {}){}",
                    r.name,
                    r.resource_type,
                    r.state,
                    if r.tags.is_empty() {
                        String::new()
                    } else {
                        format!(" tags {}", r.tags.join(","))
                    }
                );
            }
            if ledger.is_empty() {
                println!("no deployments yet");
            }
            for d in &ledger {
                let artifacts: Vec<String> = d
                    .artifacts
                    .iter()
                    .map(|a| format!("{}@{}", a.name, &a.digest[..a.digest.len().min(12)]))
                    .collect();
                println!(
                    "{:>6}  {:<20} {:<10} {} #{} {} {} / {} {} @ {} by {}{}",
                    d.id,
                    time(d.started_at),
                    d.result.as_deref().unwrap_or(&d.status),
                    d.pipeline,
                    d.run_number,
                    d.run_name,
                    d.stage,
                    d.job,
                    d.branch.trim_start_matches("refs/heads/"),
                    short(&d.commit),
                    d.requested_by,
                    if artifacts.is_empty() {
                        String::new()
                    } else {
                        format!("  [{}]", artifacts.join(", "))
                    }
                );
            }
            Ok(EXIT_OK)
        }
        EnvironmentsCommand::Diff {
            connection,
            from,
            to,
            pipeline,
            json,
        } => {
            let diff: api::EnvironmentDiff = connection
                .client()?
                .get_json(&format!(
                    "/api/v1/pipelines/{pipeline}/environments/diff?from={}&to={}",
                    encode(&from),
                    encode(&to)
                ))
                .map_err(client_error)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&diff)?);
                return Ok(EXIT_OK);
            }
            println!(
                "{from} runs #{} @ {}; {to} runs #{} @ {}",
                diff.from.run_number,
                short(&diff.from.commit),
                diff.to.run_number,
                short(&diff.to.commit)
            );
            println!("commits ({}):", diff.commits.len());
            diff.commits.iter().for_each(|c| println!("  {c}"));
            println!("files ({}):", diff.files.len());
            diff.files.iter().for_each(|f| println!("  {f}"));
            println!("artifacts ({}):", diff.artifacts.len());
            for a in &diff.artifacts {
                let side = |d: &Option<String>| {
                    d.as_deref()
                        .map_or("-".to_string(), |d| d[..d.len().min(12)].to_string())
                };
                println!("  {}: {} -> {}", a.name, side(&a.to), side(&a.from));
            }
            println!("variables ({}):", diff.variables.len());
            for v in &diff.variables {
                println!(
                    "  {}: {} -> {}",
                    v.name,
                    v.to.as_deref().unwrap_or("-"),
                    v.from.as_deref().unwrap_or("-")
                );
            }
            Ok(EXIT_OK)
        }
    }
}

/// The project given, or the caller's only project.
fn project_or_only(
    client: &lockgate_agent::ServerClient,
    project: Option<String>,
) -> anyhow::Result<String> {
    if let Some(project) = project {
        return Ok(project);
    }
    let projects: Vec<api::Project> = client.get_json("/api/v1/projects").map_err(client_error)?;
    match projects.as_slice() {
        [only] => Ok(only.name.clone()),
        [] => Err(UsageError("you have no project on this server".into()).into()),
        many => Err(UsageError(format!(
            "give --project: you have {} projects ({})",
            many.len(),
            many.iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into()),
    }
}

fn short(commit: &str) -> &str {
    commit.get(..8).unwrap_or(commit)
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` UTC.
fn time(millis: i64) -> String {
    lockgate_pipeline::run_number::Civil::from_millis(millis).format("yyyy-MM-dd HH:mm:ss")
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_printed_in_utc() {
        assert_eq!(super::time(0), "1970-01-01 00:00:00");
        assert_eq!(super::time(951_782_400_000), "2000-02-29 00:00:00");
    }
}

/// `lockgate redeploy ENV --run N`: deploy what run N deployed to ENV again (rollback).
#[derive(clap::Args)]
pub struct RedeployArgs {
    #[command(flatten)]
    connection: Connection,
    /// The environment.
    environment: String,
    /// The run (its id) whose deployment to the environment is deployed again.
    #[arg(long)]
    run: i64,
    /// The project (default: your only project).
    #[arg(long)]
    project: Option<String>,
}

pub fn redeploy(args: RedeployArgs) -> anyhow::Result<u8> {
    let client = args.connection.client()?;
    let project = project_or_only(&client, args.project)?;
    let run: api::Run = client
        .post_json(
            &format!(
                "/api/v1/projects/{}/environments/{}/redeploy",
                encode(&project),
                encode(&args.environment)
            ),
            &serde_json::json!({ "run": args.run }),
        )
        .map_err(client_error)?;
    println!(
        "run {} (#{} {}) deploys to {} again: {} (its checks apply again)",
        run.id, run.number, run.name, args.environment, run.status
    );
    Ok(EXIT_OK)
}
