//! `lockgate solution ...`: Power Platform solution packages offline (unpack, pack, diff, check,
//! create-settings, version) and online (whoami, export, import, publish, online-version) through the same
//! task code as pipelines. Bad input exits 2, failed checks and failed remote operations exit 1.

use std::path::{Path, PathBuf};

use anyhow::Context;
use lockgate_solution::check::{CheckOptions, Level};
use lockgate_solution::version::{SolutionVersion, VersionPart};
use lockgate_solution::{PackageType, SolutionError, SolutionPackage, SourceTree};

use crate::{EXIT_FAILED, EXIT_OK, UsageError};

#[derive(clap::Subcommand)]
pub enum SolutionCommand {
    /// Unpack a solution zip into the SolutionPackager source layout (the folder is replaced).
    Unpack {
        zip: PathBuf,
        dir: PathBuf,
        /// unmanaged, managed, or both (reads ZIP and its `_managed.zip` sibling).
        #[arg(long, value_name = "TYPE")]
        package_type: Option<PackageType>,
    },
    /// Pack an unpacked solution folder into a zip.
    Pack {
        dir: PathBuf,
        zip: PathBuf,
        /// unmanaged or managed (default: what Other/Solution.xml says; unmanaged for a "both" folder).
        #[arg(long, value_name = "TYPE")]
        package_type: Option<PackageType>,
        /// A SolutionPackager mapping file: take mapped files (e.g. plug-in DLLs) from build output.
        #[arg(long, value_name = "FILE")]
        map: Option<PathBuf>,
    },
    /// Compare two solutions (zips or folders) by component.
    Diff {
        a: PathBuf,
        b: PathBuf,
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
        /// Exit 1 when there are differences.
        #[arg(long)]
        exit_code: bool,
    },
    /// Run the offline deployment checks on a solution (zip or folder).
    Check {
        path: PathBuf,
        /// Exit 1 when a finding is at this level or worse.
        #[arg(long, default_value = "error", value_parser = ["error", "warning"])]
        fail_on: String,
        /// The stage the package is headed for (e.g. test, production).
        #[arg(long)]
        target_stage: Option<String>,
        /// Also write the findings as SARIF 2.1.0 to this file.
        #[arg(long)]
        sarif: Option<PathBuf>,
        /// The deployment settings file the package will be imported with: every connection reference
        /// must be bound and every required variable valued in it.
        #[arg(long, value_name = "FILE")]
        settings: Option<PathBuf>,
        #[arg(long, default_value = "text", value_parser = ["text", "sarif"])]
        format: String,
    },
    /// Write the deployment settings file for a solution, merging into --out when it exists.
    CreateSettings {
        path: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print, set or bump the version of an unpacked solution.
    Version {
        dir: PathBuf,
        #[arg(long, conflicts_with = "bump")]
        set: Option<SolutionVersion>,
        #[arg(long, value_name = "build|revision")]
        bump: Option<VersionPart>,
    },
    /// Show who the service principal is in a Dataverse environment.
    Whoami {
        #[command(flatten)]
        connection: Connection,
    },
    /// Export a solution from a Dataverse environment into a zip.
    Export {
        name: String,
        zip: PathBuf,
        #[arg(long)]
        managed: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Import a solution zip into a Dataverse environment, optionally with a deployment settings file.
    Import {
        zip: PathBuf,
        #[arg(long, value_name = "FILE")]
        settings: Option<PathBuf>,
        /// Import as a holding solution and apply the upgrade (StageAndUpgradeAsync).
        #[arg(long)]
        stage_and_upgrade: bool,
        /// Publish all customizations afterwards.
        #[arg(long)]
        publish: bool,
        /// Give up waiting for the import after this many minutes.
        #[arg(long, default_value_t = 60)]
        max_wait_minutes: u64,
        #[command(flatten)]
        connection: Connection,
    },
    /// Publish all customizations in a Dataverse environment.
    Publish {
        #[command(flatten)]
        connection: Connection,
    },
    /// Set the version of a solution in a Dataverse environment.
    OnlineVersion {
        name: String,
        version: SolutionVersion,
        #[command(flatten)]
        connection: Connection,
    },
}

/// Where and as whom to connect. The client secret is read only from the environment variable
/// POWERPLATFORM_CLIENT_SECRET, never from the command line.
#[derive(clap::Args)]
pub struct Connection {
    /// Environment URL, e.g. https://contoso.crm.dynamics.com (default: $POWERPLATFORM_ENVIRONMENT_URL).
    #[arg(long, value_name = "URL")]
    environment: Option<String>,
    /// Entra ID tenant (default: $POWERPLATFORM_TENANT_ID).
    #[arg(long)]
    tenant_id: Option<String>,
    /// Application (client) id of the service principal (default: $POWERPLATFORM_CLIENT_ID).
    #[arg(long)]
    client_id: Option<String>,
    /// Token authority (default: $POWERPLATFORM_AUTHORITY_URL, else https://login.microsoftonline.com).
    #[arg(long, value_name = "URL")]
    authority: Option<String>,
}

impl Connection {
    /// The connection as the variables the Power Platform tasks read (`PowerPlatform.*`).
    fn variables(&self) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
        let pick = |flag: &Option<String>, env: &str| {
            flag.clone()
                .or_else(|| std::env::var(env).ok())
                .filter(|v| !v.is_empty())
        };
        let mut variables = std::collections::BTreeMap::new();
        for (name, value, env) in [
            (
                "EnvironmentUrl",
                &self.environment,
                "POWERPLATFORM_ENVIRONMENT_URL",
            ),
            ("TenantId", &self.tenant_id, "POWERPLATFORM_TENANT_ID"),
            ("ApplicationId", &self.client_id, "POWERPLATFORM_CLIENT_ID"),
            ("ClientSecret", &None, "POWERPLATFORM_CLIENT_SECRET"),
        ] {
            let value = pick(value, env).ok_or_else(|| {
                UsageError(format!(
                    "missing {name}: pass --{} or set {env}",
                    name_to_flag(name)
                ))
            })?;
            variables.insert(format!("PowerPlatform.{name}"), value);
        }
        if let Some(authority) = pick(&self.authority, "POWERPLATFORM_AUTHORITY_URL") {
            variables.insert("PowerPlatform.AuthorityUrl".into(), authority);
        }
        if let Ok(seconds) = std::env::var("POWERPLATFORM_POLL_INTERVAL_SECONDS") {
            variables.insert("PowerPlatform.PollIntervalSeconds".into(), seconds);
        }
        Ok(variables)
    }
}

fn name_to_flag(name: &str) -> &'static str {
    match name {
        "EnvironmentUrl" => "environment",
        "TenantId" => "tenant-id",
        "ApplicationId" => "client-id",
        _ => "(environment only)",
    }
}

/// Runs one Power Platform task for an online command, logging to stderr.
fn online(task: &str, inputs: &[(&str, String)], connection: &Connection) -> anyhow::Result<u8> {
    let variables = connection.variables()?;
    let inputs: std::collections::BTreeMap<String, String> = inputs
        .iter()
        .map(|(name, value)| (name.to_string(), value.clone()))
        .collect();
    let lookup = |name: &str| {
        variables
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    };
    let working_dir = std::env::current_dir().context("reading the current folder")?;
    let outcome =
        lockgate_solution::tasks::execute(task, &inputs, &lookup, &working_dir, &mut |line| {
            eprintln!("{line}")
        })
        .map_err(|err| anyhow::anyhow!(err.0))?;
    for warning in &outcome.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(EXIT_OK)
}

/// Bad input becomes a usage error (exit 2); a remote failure stays a plain error (exit 1).
fn classify(err: SolutionError) -> anyhow::Error {
    if err.is_bad_input() {
        UsageError(err.to_string()).into()
    } else {
        anyhow::Error::new(err)
    }
}

pub fn exec(cmd: SolutionCommand) -> anyhow::Result<u8> {
    match cmd {
        SolutionCommand::Unpack {
            zip,
            dir,
            package_type,
        } => unpack(&zip, &dir, package_type),
        SolutionCommand::Pack {
            dir,
            zip,
            package_type,
            map,
        } => {
            let mut tree = SourceTree::read_dir(&dir).map_err(classify)?;
            if let Some(map) = map {
                let mapping = lockgate_solution::mapping::Mapping::read(&map).map_err(classify)?;
                let applied = lockgate_solution::mapping::apply(&mut tree, &mapping, &dir)
                    .map_err(classify)?;
                eprintln!(
                    "{applied} file(s) taken from the locations in {}",
                    map.display()
                );
            }
            let package = lockgate_solution::pack(&tree, package_type).map_err(classify)?;
            package.write_zip(&zip).map_err(classify)?;
            println!(
                "packed {} into {} ({} entries)",
                dir.display(),
                zip.display(),
                package.entries.len() + 1
            );
            Ok(EXIT_OK)
        }
        SolutionCommand::Diff {
            a,
            b,
            format,
            exit_code,
        } => {
            let left = lockgate_solution::load_solution_input(&a).map_err(classify)?;
            let right = lockgate_solution::load_solution_input(&b).map_err(classify)?;
            let result = lockgate_solution::diff::diff(&left, &right).map_err(classify)?;
            if format == "json" {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                print!("{}", result.to_text());
            }
            Ok(if exit_code && !result.is_empty() {
                EXIT_FAILED
            } else {
                EXIT_OK
            })
        }
        SolutionCommand::Check {
            path,
            fail_on,
            target_stage,
            sarif,
            settings,
            format,
        } => {
            let package = lockgate_solution::load_solution_input(&path).map_err(classify)?;
            let model = lockgate_solution::Solution::from_package(&package).map_err(classify)?;
            let settings = match settings {
                Some(file) => {
                    let parsed =
                        lockgate_solution::settings::read_settings(&file).map_err(classify)?;
                    lockgate_solution::settings::validate_against(&parsed, &model, &file)
                        .map_err(classify)?;
                    Some((parsed, file.display().to_string()))
                }
                None => None,
            };
            let findings = lockgate_solution::check::check(
                &model,
                &CheckOptions {
                    target_stage,
                    settings,
                    ..CheckOptions::default()
                },
            );
            let log = lockgate_solution::check::to_sarif(&findings, &path.display().to_string());
            if let Some(sarif) = sarif {
                let text = serde_json::to_string_pretty(&log)?;
                lockgate_solution::package::write_file_atomically(&sarif, text.as_bytes())
                    .map_err(classify)?;
            }
            if format == "sarif" {
                println!("{}", serde_json::to_string_pretty(&log)?);
            } else {
                print!("{}", lockgate_solution::check::to_text(&findings));
            }
            let fail_on: Level = fail_on.parse().map_err(UsageError)?;
            Ok(if lockgate_solution::check::fails(&findings, fail_on) {
                EXIT_FAILED
            } else {
                EXIT_OK
            })
        }
        SolutionCommand::CreateSettings { path, out } => create_settings(&path, out.as_deref()),
        SolutionCommand::Version { dir, set, bump } => {
            let current = lockgate_solution::version::read_tree_version(&dir).map_err(classify)?;
            let next = match (set, bump) {
                (Some(version), _) => version,
                (None, Some(part)) => current.bumped(part).map_err(UsageError)?,
                (None, None) => {
                    println!("{current}");
                    return Ok(EXIT_OK);
                }
            };
            lockgate_solution::version::set_tree_version(&dir, next).map_err(classify)?;
            println!("{current} -> {next}");
            Ok(EXIT_OK)
        }
        SolutionCommand::Whoami { connection } => online("PowerPlatformWhoAmi@2", &[], &connection),
        SolutionCommand::Export {
            name,
            zip,
            managed,
            connection,
        } => online(
            "PowerPlatformExportSolution@2",
            &[
                ("SolutionName", name),
                ("SolutionOutputFile", zip.display().to_string()),
                ("Managed", managed.to_string()),
            ],
            &connection,
        ),
        SolutionCommand::Import {
            zip,
            settings,
            stage_and_upgrade,
            publish,
            max_wait_minutes,
            connection,
        } => {
            let mut inputs = vec![
                ("SolutionInputFile", zip.display().to_string()),
                ("StageAndUpgrade", stage_and_upgrade.to_string()),
                ("PublishCustomizationChanges", publish.to_string()),
                ("MaxAsyncWaitTime", max_wait_minutes.to_string()),
            ];
            if let Some(settings) = settings {
                let parsed =
                    lockgate_solution::settings::read_settings(&settings).map_err(classify)?;
                let package = SolutionPackage::read_zip(&zip).map_err(classify)?;
                let model =
                    lockgate_solution::Solution::from_package(&package).map_err(classify)?;
                lockgate_solution::settings::validate_against(&parsed, &model, &settings)
                    .map_err(classify)?;
                inputs.push(("UseDeploymentSettingsFile", "true".into()));
                inputs.push(("DeploymentSettingsFile", settings.display().to_string()));
            }
            online("PowerPlatformImportSolution@2", &inputs, &connection)
        }
        SolutionCommand::Publish { connection } => {
            online("PowerPlatformPublishCustomizations@2", &[], &connection)
        }
        SolutionCommand::OnlineVersion {
            name,
            version,
            connection,
        } => online(
            "PowerPlatformSetSolutionVersion@2",
            &[
                ("SolutionName", name),
                ("SolutionVersionNumber", version.to_string()),
            ],
            &connection,
        ),
    }
}

fn unpack(zip: &Path, dir: &Path, package_type: Option<PackageType>) -> anyhow::Result<u8> {
    let tree = if package_type == Some(PackageType::Both) {
        let name = zip
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (unmanaged, managed) = match name.strip_suffix("_managed.zip") {
            Some(stem) => (zip.with_file_name(format!("{stem}.zip")), zip.to_path_buf()),
            None => {
                let stem = name.strip_suffix(".zip").unwrap_or(&name);
                (
                    zip.to_path_buf(),
                    zip.with_file_name(format!("{stem}_managed.zip")),
                )
            }
        };
        for needed in [&unmanaged, &managed] {
            if !needed.is_file() {
                return Err(UsageError(format!(
                    "--package-type both needs {} and {} side by side; {} does not exist",
                    unmanaged.display(),
                    managed.display(),
                    needed.display()
                ))
                .into());
            }
        }
        let unmanaged = SolutionPackage::read_zip(&unmanaged).map_err(classify)?;
        let managed = SolutionPackage::read_zip(&managed).map_err(classify)?;
        lockgate_solution::unpack_both(&unmanaged, &managed).map_err(classify)?
    } else {
        let package = SolutionPackage::read_zip(zip).map_err(classify)?;
        lockgate_solution::unpack(&package, package_type).map_err(classify)?
    };
    tree.write_dir(dir).map_err(classify)?;
    println!(
        "unpacked {} into {} ({} files)",
        zip.display(),
        dir.display(),
        tree.files.len()
    );
    Ok(EXIT_OK)
}

fn create_settings(path: &Path, out: Option<&Path>) -> anyhow::Result<u8> {
    let package = lockgate_solution::load_solution_input(path).map_err(classify)?;
    let model = lockgate_solution::Solution::from_package(&package).map_err(classify)?;
    let existing = match out.filter(|out| out.exists()) {
        Some(out) => {
            let bytes = std::fs::read(out).with_context(|| format!("reading {}", out.display()))?;
            lockgate_solution::settings::parse_settings(&bytes, out).map_err(classify)?;
            Some(
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .map_err(|err| UsageError(format!("{}: {err}", out.display())))?,
            )
        }
        None => None,
    };
    let created = lockgate_solution::settings::create_settings(&model, existing.as_ref());
    let mut text = serde_json::to_string_pretty(&created.settings)?;
    text.push('\n');
    for dropped in &created.dropped {
        eprintln!(
            "note: dropped {dropped}: no longer in solution {}",
            model.unique_name
        );
    }
    match out {
        Some(out) => {
            lockgate_solution::package::write_file_atomically(out, text.as_bytes())
                .map_err(classify)?;
            println!(
                "wrote {} ({} environment variable(s), {} connection reference(s))",
                out.display(),
                model.environment_variables.len(),
                model.connection_references.len()
            );
        }
        None => print!("{text}"),
    }
    Ok(EXIT_OK)
}

/// The Power Platform Build Tools tasks (PowerPlatformToolInstaller@2 ... PowerPlatformPublishCustomizations@2)
/// as runner tasks: each step's inputs, variables and working folder go to `lockgate_solution::tasks`.
pub fn register_tasks(registry: &mut lockgate_runner::tasks::TaskRegistry) {
    for (name, major) in lockgate_solution::tasks::TASKS {
        registry.register(
            name,
            *major,
            std::sync::Arc::new(PowerPlatformTask { name }),
        );
    }
}

struct PowerPlatformTask {
    name: &'static str,
}

impl lockgate_runner::tasks::Task for PowerPlatformTask {
    fn run<'a>(
        &'a self,
        step: &'a mut lockgate_runner::job::StepContext<'_, '_>,
    ) -> lockgate_runner::tasks::TaskFuture<'a> {
        use lockgate_runner::events::TaskResult;
        Box::pin(async move {
            let inputs = step.inputs.clone();
            let working_dir = step.job.workspace.sources.clone();
            let cancel = step.cancel.clone();
            let result = {
                let context: &lockgate_runner::job::StepContext<'_, '_> = step;
                let variables = |name: &str| context.variable(name).map(str::to_string);
                lockgate_solution::tasks::execute_with_cancel(
                    self.name,
                    &inputs,
                    &variables,
                    &working_dir,
                    Some(std::sync::Arc::new(move || cancel.is_canceled())),
                    &mut |line| context.log(line),
                )
            };
            let outcome = result.map_err(|err| lockgate_runner::tasks::TaskError(err.0))?;
            for (name, value, secret) in &outcome.variables {
                step.set_variable(name, value, *secret, false, false);
            }
            for warning in &outcome.warnings {
                step.warning(warning);
            }
            Ok(if outcome.warnings.is_empty() {
                TaskResult::Succeeded
            } else {
                TaskResult::SucceededWithIssues
            })
        })
    }
}
