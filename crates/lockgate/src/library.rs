//! `lockgate variable-groups`, `lockgate service-connections` and `lockgate secure-files`: a project's library on a
//! Lockgate server.

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

#[derive(clap::Subcommand)]
pub enum ServiceConnectionsCommand {
    /// List a project's service connections.
    List {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
    },
    /// Show a connection's fields (secret ones never shown) and authorized pipelines.
    Show {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
        name: String,
    },
    /// Create a connection or replace its fields (project administrators).
    Set {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
        name: String,
        /// generic, powerPlatformSPN, ssh or azureRM.
        #[arg(long)]
        kind: String,
        #[arg(long, default_value = "")]
        description: String,
        /// FIELD=VALUE, repeatable (for example tenantId=..., clientSecret=...); the kind says
        /// which fields are secret.
        #[arg(long = "field")]
        fields: Vec<String>,
    },
    /// Delete a connection.
    Delete {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
        name: String,
    },
    /// Let a pipeline use the connection (project administrators); its waiting runs go on.
    Authorize {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
        name: String,
        #[arg(long)]
        pipeline: i64,
    },
    /// The jobs that used the connection, newest first.
    Usage {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
        name: String,
    },
}

fn connection_path(project: &str, name: &str) -> String {
    format!(
        "/api/v1/projects/{}/service-connections/{}",
        encode(project),
        encode(name)
    )
}

fn print_connection(connection: &api::ServiceConnection) {
    println!("{} ({})", connection.name, connection.kind);
    for (field, value) in &connection.fields {
        match value {
            Some(value) => println!("  {field} = {value}"),
            None => println!("  {field} = *** (secret)"),
        }
    }
    let pipelines: Vec<String> = connection.pipelines.iter().map(i64::to_string).collect();
    println!(
        "  pipelines: {}",
        if pipelines.is_empty() {
            "none authorized".to_string()
        } else {
            pipelines.join(", ")
        }
    );
}

pub fn service_connections(cmd: ServiceConnectionsCommand) -> anyhow::Result<u8> {
    match cmd {
        ServiceConnectionsCommand::List {
            connection,
            project,
        } => {
            let all: Vec<api::ServiceConnection> = connection
                .client()?
                .get_json(&format!(
                    "/api/v1/projects/{}/service-connections",
                    encode(&project)
                ))
                .map_err(client_error)?;
            for c in &all {
                println!("{}\t{}\tpipelines: {:?}", c.name, c.kind, c.pipelines);
            }
        }
        ServiceConnectionsCommand::Show {
            connection,
            project,
            name,
        } => {
            let c: api::ServiceConnection = connection
                .client()?
                .get_json(&connection_path(&project, &name))
                .map_err(client_error)?;
            print_connection(&c);
        }
        ServiceConnectionsCommand::Set {
            connection,
            project,
            name,
            kind,
            description,
            fields,
        } => {
            let mut all = std::collections::BTreeMap::new();
            for text in &fields {
                let (field, value) = text
                    .split_once('=')
                    .ok_or_else(|| UsageError(format!("`{text}`: give FIELD=VALUE")))?;
                all.insert(field.to_string(), Some(value.to_string()));
            }
            let c: api::ServiceConnection = connection
                .client()?
                .put_json(
                    &connection_path(&project, &name),
                    &api::PutServiceConnection {
                        kind,
                        description,
                        fields: all,
                    },
                )
                .map_err(client_error)?;
            print_connection(&c);
        }
        ServiceConnectionsCommand::Delete {
            connection,
            project,
            name,
        } => {
            connection
                .client()?
                .delete(&connection_path(&project, &name))
                .map_err(client_error)?;
            println!("service connection {name} deleted");
        }
        ServiceConnectionsCommand::Authorize {
            connection,
            project,
            name,
            pipeline,
        } => {
            let c: api::ServiceConnection = connection
                .client()?
                .post_json(
                    &format!("{}/pipelines/{pipeline}", connection_path(&project, &name)),
                    &serde_json::json!({}),
                )
                .map_err(client_error)?;
            print_connection(&c);
        }
        ServiceConnectionsCommand::Usage {
            connection,
            project,
            name,
        } => {
            let uses: Vec<api::ConnectionUse> = connection
                .client()?
                .get_json(&format!("{}/usage", connection_path(&project, &name)))
                .map_err(client_error)?;
            for u in &uses {
                println!(
                    "run {} job {} attempt {} at {}",
                    u.run_id, u.job_id, u.attempt, u.used_at
                );
            }
        }
    }
    Ok(EXIT_OK)
}

#[derive(clap::Subcommand)]
pub enum SecureFilesCommand {
    /// List a project's secure files (never their content).
    List {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
    },
    /// Upload a file as secure file NAME, or replace its content (project administrators).
    Upload {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
        name: String,
        file: std::path::PathBuf,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete a secure file.
    Delete {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        project: String,
        name: String,
    },
    /// Let a pipeline use the secure file (project administrators); its waiting runs go on.
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

fn print_secure_file(file: &api::SecureFile) {
    let pipelines: Vec<String> = file.pipelines.iter().map(i64::to_string).collect();
    println!(
        "{}\t{} bytes\tblake3 {}\tpipelines: {}",
        file.name,
        file.size,
        &file.digest[..file.digest.len().min(16)],
        if pipelines.is_empty() {
            "none authorized".to_string()
        } else {
            pipelines.join(", ")
        }
    );
}

pub fn secure_files(cmd: SecureFilesCommand) -> anyhow::Result<u8> {
    let file_path = |project: &str, name: &str| {
        format!(
            "/api/v1/projects/{}/secure-files/{}",
            encode(project),
            encode(name)
        )
    };
    match cmd {
        SecureFilesCommand::List {
            connection,
            project,
        } => {
            let files: Vec<api::SecureFile> = connection
                .client()?
                .get_json(&format!(
                    "/api/v1/projects/{}/secure-files",
                    encode(&project)
                ))
                .map_err(client_error)?;
            files.iter().for_each(print_secure_file);
        }
        SecureFilesCommand::Upload {
            connection,
            project,
            name,
            file,
            description,
        } => {
            let content =
                std::fs::read(&file).map_err(|e| UsageError(format!("{}: {e}", file.display())))?;
            let uploaded: api::SecureFile = connection
                .client()?
                .put_bytes(
                    &format!(
                        "{}?description={}",
                        file_path(&project, &name),
                        encode(&description)
                    ),
                    "application/octet-stream",
                    &content,
                )
                .map_err(client_error)?;
            print_secure_file(&uploaded);
        }
        SecureFilesCommand::Delete {
            connection,
            project,
            name,
        } => {
            connection
                .client()?
                .delete(&file_path(&project, &name))
                .map_err(client_error)?;
            println!("secure file {name} deleted");
        }
        SecureFilesCommand::Authorize {
            connection,
            project,
            name,
            pipeline,
        } => {
            let file: api::SecureFile = connection
                .client()?
                .post_json(
                    &format!("{}/pipelines/{pipeline}", file_path(&project, &name)),
                    &serde_json::json!({}),
                )
                .map_err(client_error)?;
            print_secure_file(&file);
        }
    }
    Ok(EXIT_OK)
}
