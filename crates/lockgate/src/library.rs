//! `lockgate variable-groups`: a project's variable groups on a Lockgate server (the library).

use lockgate_protocol::api;

use crate::server::{Connection, client_error, encode};
use crate::{EXIT_OK, UsageError};

#[derive(clap::Subcommand)]
pub enum VariableGroupsCommand {
    /// List a project's variable groups.
    List {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
    },
    /// Show a group's variables (secret values are never shown) and authorized pipelines.
    Show {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
        name: String,
    },
    /// Create a group or replace its variables (project administrators).
    Set {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// NAME=VALUE, repeatable.
        #[arg(long = "var")]
        variables: Vec<String>,
        /// NAME=VALUE of a secret variable (stored encrypted, masked in logs), repeatable.
        #[arg(long = "secret")]
        secrets: Vec<String>,
    },
    /// Delete a group.
    Delete {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
        name: String,
    },
    /// Let a pipeline use the group (project administrators); its waiting runs go on.
    Authorize {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
        name: String,
        #[arg(long)]
        pipeline: i64,
    },
}

fn pair(text: &str, secret: bool) -> anyhow::Result<api::PipelineVariable> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| UsageError(format!("`{text}`: give NAME=VALUE")))?;
    Ok(api::PipelineVariable {
        name: name.to_string(),
        value: Some(value.to_string()),
        secret,
        allow_override: false,
    })
}

fn path(project: &str, name: &str) -> String {
    format!(
        "/api/v1/projects/{}/variable-groups/{}",
        encode(project),
        encode(name)
    )
}

fn print_group(group: &api::VariableGroup) {
    println!("{} ({} variables)", group.name, group.variables.len());
    if !group.description.is_empty() {
        println!("  {}", group.description);
    }
    for variable in &group.variables {
        match &variable.value {
            Some(value) => println!("  {} = {value}", variable.name),
            None => println!("  {} = *** (secret)", variable.name),
        }
    }
    let pipelines: Vec<String> = group.pipelines.iter().map(i64::to_string).collect();
    println!(
        "  pipelines: {}",
        if pipelines.is_empty() {
            "none authorized".to_string()
        } else {
            pipelines.join(", ")
        }
    );
}

pub fn variable_groups(cmd: VariableGroupsCommand) -> anyhow::Result<u8> {
    match cmd {
        VariableGroupsCommand::List {
            connection,
            project,
        } => {
            let groups: Vec<api::VariableGroup> = connection
                .client()?
                .get_json(&format!(
                    "/api/v1/projects/{}/variable-groups",
                    encode(&project)
                ))
                .map_err(client_error)?;
            for group in &groups {
                println!(
                    "{}\t{} variables\tpipelines: {:?}",
                    group.name,
                    group.variables.len(),
                    group.pipelines
                );
            }
        }
        VariableGroupsCommand::Show {
            connection,
            project,
            name,
        } => {
            let group: api::VariableGroup = connection
                .client()?
                .get_json(&path(&project, &name))
                .map_err(client_error)?;
            print_group(&group);
        }
        VariableGroupsCommand::Set {
            connection,
            project,
            name,
            description,
            variables,
            secrets,
        } => {
            let mut all = Vec::new();
            for text in &variables {
                all.push(pair(text, false)?);
            }
            for text in &secrets {
                all.push(pair(text, true)?);
            }
            let group: api::VariableGroup = connection
                .client()?
                .put_json(
                    &path(&project, &name),
                    &api::PutVariableGroup {
                        description,
                        variables: all,
                    },
                )
                .map_err(client_error)?;
            print_group(&group);
        }
        VariableGroupsCommand::Delete {
            connection,
            project,
            name,
        } => {
            connection
                .client()?
                .delete(&path(&project, &name))
                .map_err(client_error)?;
            println!("variable group {name} deleted");
        }
        VariableGroupsCommand::Authorize {
            connection,
            project,
            name,
            pipeline,
        } => {
            let group: api::VariableGroup = connection
                .client()?
                .post_json(
                    &format!("{}/pipelines/{pipeline}", path(&project, &name)),
                    &serde_json::json!({}),
                )
                .map_err(client_error)?;
            print_group(&group);
        }
    }
    Ok(EXIT_OK)
}
