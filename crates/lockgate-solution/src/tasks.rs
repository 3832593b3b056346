//! The Power Platform Build Tools tasks (v2) as runner-independent functions: `execute` takes the task
//! name, its inputs (documented input names, matched case-insensitively), a variable lookup for the
//! service connection, the working folder and a log sink, and returns the outcome.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::check::{CheckOptions, Level};
use crate::dataverse::{DataverseClient, DataverseConfig, ImportOptions, ServicePrincipal};
use crate::package::{SolutionPackage, write_file_atomically};
use crate::version::SolutionVersion;
use crate::{PackageType, Solution, SourceTree};

/// Every task this module implements, as (name, major version).
pub const TASKS: &[(&str, u32)] = &[
    ("PowerPlatformToolInstaller", 2),
    ("PowerPlatformWhoAmi", 2),
    ("PowerPlatformExportSolution", 2),
    ("PowerPlatformUnpackSolution", 2),
    ("PowerPlatformPackSolution", 2),
    ("PowerPlatformChecker", 2),
    ("PowerPlatformImportSolution", 2),
    ("PowerPlatformSetSolutionVersion", 2),
    ("PowerPlatformPublishCustomizations", 2),
    ("PowerPlatformApplySolutionUpgrade", 2),
    ("PowerPlatformDeleteSolution", 2),
];

/// How a task ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskOutcome {
    /// Problems worth a warning that did not fail the task.
    pub warnings: Vec<String>,
    /// Variables to set: (name, value, secret).
    pub variables: Vec<(String, String, bool)>,
}

/// Why a task failed.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskError(pub String);

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TaskError {}

impl From<crate::SolutionError> for TaskError {
    fn from(err: crate::SolutionError) -> Self {
        TaskError(err.to_string())
    }
}

/// The inputs and surroundings of one task invocation.
struct Invocation<'a> {
    inputs: BTreeMap<String, String>,
    variables: &'a dyn Fn(&str) -> Option<String>,
    working_dir: &'a Path,
    cancel: Option<crate::dataverse::CancelCheck>,
}

impl Invocation<'_> {
    fn input(&self, name: &str) -> Option<&str> {
        self.inputs
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
            .map(str::trim)
            .filter(|value| !value.is_empty())
    }

    fn required(&self, name: &str) -> Result<&str, TaskError> {
        self.input(name)
            .ok_or_else(|| TaskError(format!("input required: {name}")))
    }

    fn flag(&self, name: &str, default: bool) -> Result<bool, TaskError> {
        match self.input(name) {
            None => Ok(default),
            Some(value) if value.eq_ignore_ascii_case("true") => Ok(true),
            Some(value) if value.eq_ignore_ascii_case("false") => Ok(false),
            Some(value) => Err(TaskError(format!(
                "input {name} must be true or false, not `{value}`"
            ))),
        }
    }

    fn path(&self, name: &str) -> Result<PathBuf, TaskError> {
        let value = self.required(name)?;
        let path = Path::new(value);
        Ok(if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.working_dir.join(path)
        })
    }

    fn variable(&self, name: &str) -> Option<String> {
        (self.variables)(name).filter(|value| !value.trim().is_empty())
    }

    /// `MaxAsyncWaitTime` is in minutes (default 60).
    fn max_wait(&self) -> Result<Duration, TaskError> {
        let minutes = match self.input("MaxAsyncWaitTime") {
            None => 60,
            Some(text) => text.parse::<u64>().map_err(|_| {
                TaskError(format!(
                    "input MaxAsyncWaitTime must be a number of minutes, not `{text}`"
                ))
            })?,
        };
        Ok(Duration::from_secs(minutes.saturating_mul(60)))
    }

    /// The service connection: named by `PowerPlatformSPN`; its tenant, application id, secret and
    /// URL come from variables `<name>.TenantId`, `<name>.ApplicationId`, `<name>.ClientSecret`,
    /// `<name>.EnvironmentUrl` (or the same under `PowerPlatform.`); the `Environment` input wins for the URL.
    fn connect(&self, log: &mut dyn FnMut(&str)) -> Result<DataverseClient, TaskError> {
        if let Some(kind) = self.input("authenticationType")
            && !kind.eq_ignore_ascii_case("PowerPlatformSPN")
        {
            return Err(TaskError(format!(
                "authenticationType `{kind}` is not supported: Lockgate connects as a service principal (PowerPlatformSPN)"
            )));
        }
        let connection = self
            .input("PowerPlatformSPN")
            .or(self.input("PowerPlatformEnvironment"))
            .map(str::to_string);
        let lookup = |field: &str| -> Option<String> {
            connection
                .iter()
                .map(|name| format!("{name}.{field}"))
                .chain(std::iter::once(format!("PowerPlatform.{field}")))
                .find_map(|name| self.variable(&name))
        };
        let environment_url = self
            .input("Environment")
            .map(str::to_string)
            .or_else(|| lookup("EnvironmentUrl"))
            .or_else(|| self.variable("BuildTools.EnvironmentUrl"))
            .ok_or_else(|| TaskError("no environment URL: set the Environment input or the service connection's EnvironmentUrl".into()))?;
        let label = connection.as_deref().unwrap_or("PowerPlatform");
        let principal = ServicePrincipal {
            tenant_id: lookup("TenantId").ok_or_else(|| {
                TaskError(format!("service connection `{label}` has no TenantId"))
            })?,
            client_id: lookup("ApplicationId")
                .or_else(|| lookup("ClientId"))
                .ok_or_else(|| {
                    TaskError(format!("service connection `{label}` has no ApplicationId"))
                })?,
            client_secret: lookup("ClientSecret").ok_or_else(|| {
                TaskError(format!("service connection `{label}` has no ClientSecret"))
            })?,
        };
        let mut config = DataverseConfig::new(&environment_url, principal);
        config.cancel = self.cancel.clone();
        if let Some(authority) = lookup("AuthorityUrl") {
            config.authority_url = authority;
        }
        if let Some(seconds) = lookup("PollIntervalSeconds").and_then(|text| text.parse().ok()) {
            config.poll_interval = Duration::from_secs(seconds);
        }
        log(&format!(
            "Connecting to {} as application {}",
            config.environment_url, config.principal.client_id
        ));
        Ok(DataverseClient::connect(config)?)
    }
}

fn flush_client_log(client: &mut DataverseClient, log: &mut dyn FnMut(&str)) {
    for line in client.log.drain(..) {
        log(&line);
    }
}

/// True when `name` (any case) is one of [`TASKS`].
pub fn is_power_platform_task(name: &str, major: u32) -> bool {
    TASKS
        .iter()
        .any(|(task, version)| task.eq_ignore_ascii_case(name) && *version == major)
}

/// Runs one task. `inputs` are matched case-insensitively; `variables` looks up pipeline variables
/// (service-connection fields); relative paths resolve against `working_dir`.
pub fn execute(
    task_name: &str,
    inputs: &BTreeMap<String, String>,
    variables: &dyn Fn(&str) -> Option<String>,
    working_dir: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<TaskOutcome, TaskError> {
    execute_with_cancel(task_name, inputs, variables, working_dir, None, log)
}

/// [`execute`] with a cancellation check that ends waits on Dataverse early (a canceled run).
pub fn execute_with_cancel(
    task_name: &str,
    inputs: &BTreeMap<String, String>,
    variables: &dyn Fn(&str) -> Option<String>,
    working_dir: &Path,
    cancel: Option<crate::dataverse::CancelCheck>,
    log: &mut dyn FnMut(&str),
) -> Result<TaskOutcome, TaskError> {
    let invocation = Invocation {
        inputs: inputs
            .iter()
            .map(|(key, value)| (key.to_ascii_lowercase(), value.clone()))
            .collect(),
        variables,
        working_dir,
        cancel,
    };
    let name = task_name
        .split('@')
        .next()
        .unwrap_or(task_name)
        .to_ascii_lowercase();
    let mut outcome = TaskOutcome::default();
    match name.as_str() {
        "powerplatformtoolinstaller" => {
            log("Lockgate runs the Power Platform tasks natively; no tools need installing.");
        }
        "powerplatformwhoami" => {
            let mut client = invocation.connect(log)?;
            let who = client.who_am_i();
            flush_client_log(&mut client, log);
            let who = who?;
            log(&format!(
                "Connected as user {} (business unit {}, organization {})",
                who.user_id, who.business_unit_id, who.organization_id
            ));
            outcome
                .variables
                .push(("PowerPlatformWhoAmi.UserId".into(), who.user_id, false));
        }
        "powerplatformexportsolution" => export(&invocation, log)?,
        "powerplatformunpacksolution" => unpack(&invocation, &mut outcome, log)?,
        "powerplatformpacksolution" => pack(&invocation, log)?,
        "powerplatformchecker" => checker(&invocation, &mut outcome, log)?,
        "powerplatformimportsolution" => import(&invocation, &mut outcome, log)?,
        "powerplatformsetsolutionversion" => {
            let solution = invocation.required("SolutionName")?.to_string();
            let version: SolutionVersion = invocation
                .required("SolutionVersionNumber")?
                .parse()
                .map_err(TaskError)?;
            let mut client = invocation.connect(log)?;
            let result = client.set_online_version(&solution, &version.to_string());
            flush_client_log(&mut client, log);
            result?;
            log(&format!("Set the version of {solution} to {version}"));
        }
        "powerplatformpublishcustomizations" => {
            let mut client = invocation.connect(log)?;
            let result = client.publish_all();
            flush_client_log(&mut client, log);
            result?;
            log("Published all customizations");
        }
        "powerplatformapplysolutionupgrade" => {
            let solution = invocation.required("SolutionName")?.to_string();
            let mut client = invocation.connect(log)?;
            let result = client.delete_and_promote(&solution);
            flush_client_log(&mut client, log);
            let id = result?;
            log(&format!(
                "Applied the staged upgrade of {solution} (solution {id})"
            ));
        }
        "powerplatformdeletesolution" => {
            let solution = invocation.required("SolutionName")?.to_string();
            let mut client = invocation.connect(log)?;
            let result = client.delete_solution(&solution);
            flush_client_log(&mut client, log);
            result?;
            log(&format!("Deleted solution {solution}"));
        }
        _ => {
            return Err(TaskError(format!(
                "{task_name} is not a Power Platform task Lockgate implements"
            )));
        }
    }
    Ok(outcome)
}

fn export(invocation: &Invocation<'_>, log: &mut dyn FnMut(&str)) -> Result<(), TaskError> {
    let solution = invocation.required("SolutionName")?.to_string();
    let output = invocation.path("SolutionOutputFile")?;
    let managed = invocation.flag("Managed", false)?;
    if output.exists() && !invocation.flag("OverwriteLocalSolution", true)? {
        return Err(TaskError(format!(
            "{} exists and OverwriteLocalSolution is false",
            output.display()
        )));
    }
    let mut settings = Vec::new();
    for name in [
        "ExportAutoNumberingSettings",
        "ExportCalendarSettings",
        "ExportCustomizationSettings",
        "ExportEmailTrackingSettings",
        "ExportGeneralSettings",
        "ExportIsvConfig",
        "ExportMarketingSettings",
        "ExportOutlookSynchronizationSettings",
        "ExportRelationshipRoles",
        "ExportSales",
    ] {
        if invocation.flag(name, false)? {
            settings.push((name, true));
        }
    }
    if invocation.flag("ExportExternalApplicationSettings", false)? {
        settings.push(("ExportExternalApplications", true));
    }
    let mut client = invocation.connect(log)?;
    let max_wait = if invocation.flag("AsyncOperation", true)? {
        Some(invocation.max_wait()?)
    } else {
        None
    };
    let result = client.export_solution(&solution, managed, &settings, max_wait);
    flush_client_log(&mut client, log);
    let zip = result?;
    SolutionPackage::from_zip_bytes(&zip, &output)
        .map_err(|err| TaskError(format!("the exported file is not a usable solution: {err}")))?;
    write_file_atomically(&output, &zip)?;
    log(&format!(
        "Exported {} solution {solution} to {} ({} bytes)",
        if managed { "managed" } else { "unmanaged" },
        output.display(),
        zip.len()
    ));
    Ok(())
}

fn package_type(invocation: &Invocation<'_>) -> Result<Option<PackageType>, TaskError> {
    invocation
        .input("SolutionType")
        .map(|text| text.parse::<PackageType>().map_err(TaskError))
        .transpose()
}

fn warn_unsupported(
    invocation: &Invocation<'_>,
    outcome: &mut TaskOutcome,
    log: &mut dyn FnMut(&str),
) {
    for name in ["LocaleTemplate", "SingleComponent"] {
        if let Some(value) = invocation
            .input(name)
            .filter(|value| !value.eq_ignore_ascii_case("none"))
        {
            let message =
                format!("input {name} ({value}) is not supported by Lockgate and was ignored");
            log(&message);
            outcome.warnings.push(message);
        }
    }
    for name in ["Localize", "UseLcid", "ProcessCanvasApps"] {
        if invocation.flag(name, false).unwrap_or(false) {
            let message = format!("input {name} is not supported by Lockgate and was ignored");
            log(&message);
            outcome.warnings.push(message);
        }
    }
}

fn unpack(
    invocation: &Invocation<'_>,
    outcome: &mut TaskOutcome,
    log: &mut dyn FnMut(&str),
) -> Result<(), TaskError> {
    let input = invocation.path("SolutionInputFile")?;
    let target = invocation.path("SolutionTargetFolder")?;
    warn_unsupported(invocation, outcome, log);
    let kind = package_type(invocation)?;
    if target.exists() && !invocation.flag("OverwriteFiles", true)? {
        return Err(TaskError(format!(
            "{} exists and OverwriteFiles is false",
            target.display()
        )));
    }
    let tree = if kind == Some(PackageType::Both) {
        let name = input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = name
            .strip_suffix("_managed.zip")
            .or(name.strip_suffix(".zip"))
            .unwrap_or(&name)
            .to_string();
        let unmanaged = SolutionPackage::read_zip(&input.with_file_name(format!("{stem}.zip")))?;
        let managed =
            SolutionPackage::read_zip(&input.with_file_name(format!("{stem}_managed.zip")))?;
        crate::unpack_both(&unmanaged, &managed)?
    } else {
        crate::unpack(&SolutionPackage::read_zip(&input)?, kind)?
    };
    let mut tree = tree;
    if let Some(map) = invocation.input("MapFile") {
        let mapping = crate::mapping::Mapping::read(&invocation.working_dir.join(map))?;
        let before = tree.files.len();
        tree.files
            .retain(|path, _| mapping.source_for(path, &target).is_none());
        log(&format!(
            "{} mapped file(s) not written ({map})",
            before - tree.files.len()
        ));
    }
    tree.write_dir(&target)?;
    log(&format!(
        "Unpacked {} into {} ({} files)",
        input.display(),
        target.display(),
        tree.files.len()
    ));
    Ok(())
}

fn pack(invocation: &Invocation<'_>, log: &mut dyn FnMut(&str)) -> Result<(), TaskError> {
    let source = invocation.path("SolutionSourceFolder")?;
    let output = invocation.path("SolutionOutputFile")?;
    let mut tree = SourceTree::read_dir(&source)?;
    if let Some(map) = invocation.input("MapFile") {
        let mapping = crate::mapping::Mapping::read(&invocation.working_dir.join(map))?;
        let applied = crate::mapping::apply(&mut tree, &mapping, &source)?;
        log(&format!(
            "{applied} file(s) taken from the locations in {map}"
        ));
    }
    let kinds = match package_type(invocation)? {
        Some(PackageType::Both) => vec![Some(PackageType::Unmanaged), Some(PackageType::Managed)],
        other => vec![other],
    };
    for kind in kinds {
        let target = if kind == Some(PackageType::Managed) && kinds_is_both(invocation) {
            let name = output
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            output.with_file_name(format!(
                "{}_managed.zip",
                name.strip_suffix(".zip").unwrap_or(&name)
            ))
        } else {
            output.clone()
        };
        let package = crate::pack(&tree, kind)?;
        package.write_zip(&target)?;
        log(&format!(
            "Packed {} into {}",
            source.display(),
            target.display()
        ));
    }
    Ok(())
}

fn kinds_is_both(invocation: &Invocation<'_>) -> bool {
    invocation
        .input("SolutionType")
        .is_some_and(|text| text.eq_ignore_ascii_case("both"))
}

/// Finds the zips for the checker: a file path, or a pattern whose file-name part may hold `*`
/// (`**` folders are searched recursively under the working folder).
fn files_to_analyze(invocation: &Invocation<'_>) -> Result<Vec<PathBuf>, TaskError> {
    let pattern = invocation
        .input("FilesToAnalyze")
        .unwrap_or("**/*.zip")
        .replace('\\', "/");
    if !pattern.contains('*') {
        return Ok(vec![invocation.working_dir.join(&pattern)]);
    }
    let file_pattern = pattern.rsplit('/').next().unwrap_or("*.zip").to_string();
    let (prefix, suffix) = file_pattern.split_once('*').unwrap_or((&file_pattern, ""));
    let base: Vec<&str> = pattern
        .split('/')
        .take_while(|segment| !segment.contains('*'))
        .collect();
    let base = if base.len() == pattern.split('/').count() {
        Vec::new()
    } else {
        base
    };
    let mut found = Vec::new();
    let mut pending = vec![invocation.working_dir.join(base.join("/"))];
    while let Some(folder) = pending.pop() {
        let Ok(listing) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in listing.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() && !name.starts_with('.') && pattern.contains("**") {
                pending.push(path);
            } else if path.is_file() && name.starts_with(prefix) && name.ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn checker(
    invocation: &Invocation<'_>,
    outcome: &mut TaskOutcome,
    log: &mut dyn FnMut(&str),
) -> Result<(), TaskError> {
    let level = match invocation.input("ErrorLevel").unwrap_or("HighIssueCount") {
        "CriticalIssueCount" | "HighIssueCount" => Level::Error,
        "MediumIssueCount" => Level::Warning,
        "LowIssueCount" | "InformationalIssueCount" => Level::Note,
        other => {
            return Err(TaskError(format!(
                "input ErrorLevel `{other}` is not one of CriticalIssueCount, HighIssueCount, MediumIssueCount, LowIssueCount, InformationalIssueCount"
            )));
        }
    };
    let threshold: usize = match invocation.input("ErrorThreshold") {
        None => 0,
        Some(text) => text.parse().map_err(|_| {
            TaskError(format!(
                "input ErrorThreshold must be a number, not `{text}`"
            ))
        })?,
    };
    let mut options = CheckOptions::default();
    if let Some(overrides) = invocation.input("RulesToOverride") {
        options.level_overrides =
            crate::check::parse_level_overrides(overrides).map_err(TaskError)?;
    }
    let files = files_to_analyze(invocation)?;
    if files.is_empty() {
        return Err(TaskError("no solution zips matched FilesToAnalyze".into()));
    }
    let destination = invocation
        .input("ArtifactDestinationName")
        .unwrap_or("CodeAnalysisLogs");
    let mut over_threshold = 0;
    for file in files {
        let package = SolutionPackage::read_zip(&file)?;
        let model = Solution::from_package(&package)?;
        let findings = crate::check::check(&model, &options);
        for line in crate::check::to_text(&findings).lines() {
            log(line);
        }
        for finding in findings.iter().filter(|finding| finding.level < level) {
            outcome.warnings.push(finding.message.clone());
        }
        over_threshold += findings
            .iter()
            .filter(|finding| finding.level >= level)
            .count();
        let sarif = crate::check::to_sarif(&findings, &file.display().to_string());
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let out = invocation
            .working_dir
            .join(destination)
            .join(format!("{stem}.sarif"));
        let text =
            serde_json::to_string_pretty(&sarif).map_err(|err| TaskError(err.to_string()))?;
        write_file_atomically(&out, text.as_bytes())?;
        log(&format!("Wrote {}", out.display()));
    }
    if over_threshold > threshold {
        return Err(TaskError(format!(
            "{over_threshold} issue(s) at {} or worse, more than the threshold {threshold}",
            level.severity()
        )));
    }
    Ok(())
}

fn import(
    invocation: &Invocation<'_>,
    outcome: &mut TaskOutcome,
    log: &mut dyn FnMut(&str),
) -> Result<(), TaskError> {
    let input = invocation.path("SolutionInputFile")?;
    let zip =
        std::fs::read(&input).map_err(|err| TaskError(format!("{}: {err}", input.display())))?;
    let package = SolutionPackage::from_zip_bytes(&zip, &input)?;
    let model = Solution::from_package(&package)?;
    let mut options = ImportOptions {
        overwrite_unmanaged_customizations: invocation
            .flag("OverwriteUnmanagedCustomizations", false)?,
        publish_workflows: invocation.flag("ActivatePlugins", true)?
            || invocation.flag("PublishWorkflows", false)?,
        holding_solution: invocation.flag("HoldingSolution", false)?,
        stage_and_upgrade: invocation.flag("StageAndUpgrade", false)?,
        skip_product_update_dependencies: invocation
            .flag("SkipProductUpdateDependencies", false)?,
        component_parameters: Vec::new(),
        max_wait: invocation.max_wait()?,
    };
    if invocation.flag("ConvertToManaged", false)? {
        outcome
            .warnings
            .push("ConvertToManaged is obsolete in Dataverse and was ignored".into());
    }
    if invocation.flag("UseDeploymentSettingsFile", false)? {
        let settings_path = invocation.path("DeploymentSettingsFile")?;
        let settings = crate::settings::read_settings(&settings_path)?;
        crate::settings::validate_against(&settings, &model, &settings_path)?;
        options.component_parameters = crate::settings::component_parameters(&settings, &model);
        log(&format!(
            "Using {} ({} component parameter(s))",
            settings_path.display(),
            options.component_parameters.len()
        ));
    }
    let mut client = invocation.connect(log)?;
    if invocation.flag("SkipLowerVersion", false)? {
        let online = client.find_solution(&model.unique_name);
        flush_client_log(&mut client, log);
        if let Some(online) = online? {
            let (installed, incoming) = (
                online.version.parse::<SolutionVersion>(),
                model.version.parse::<SolutionVersion>(),
            );
            if let (Ok(installed), Ok(incoming)) = (installed, incoming)
                && incoming <= installed
            {
                log(&format!(
                    "Skipped: {} {incoming} is not higher than the installed {installed}",
                    model.unique_name
                ));
                return Ok(());
            }
        }
    }
    log(&format!(
        "Importing {} {} from {}",
        model.unique_name,
        model.version,
        input.display()
    ));
    let result = client.import_solution(&zip, &options);
    flush_client_log(&mut client, log);
    let imported = result?;
    log(&format!(
        "Imported {} (import job {})",
        model.unique_name, imported.import_job_id
    ));
    if invocation.flag("PublishCustomizationChanges", false)? {
        let result = client.publish_all();
        flush_client_log(&mut client, log);
        result?;
        log("Published all customizations");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{SampleOptions, sample};

    fn run(
        task: &str,
        inputs: &[(&str, &str)],
        dir: &Path,
    ) -> (Result<TaskOutcome, TaskError>, Vec<String>) {
        let inputs: BTreeMap<String, String> = inputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut lines = Vec::new();
        let result = execute(task, &inputs, &|_| None, dir, &mut |line| {
            lines.push(line.to_string())
        });
        (result, lines)
    }

    #[test]
    fn offline_tasks_unpack_pack_and_check() {
        let dir = tempfile::tempdir().unwrap();
        sample(&SampleOptions {
            embedded_connection: true,
            ..SampleOptions::default()
        })
        .write_zip(&dir.path().join("in.zip"))
        .unwrap();
        let (result, _) = run(
            "PowerPlatformUnpackSolution@2",
            &[
                ("SolutionInputFile", "in.zip"),
                ("SolutionTargetFolder", "src"),
            ],
            dir.path(),
        );
        result.unwrap();
        assert!(dir.path().join("src/Other/Solution.xml").is_file());
        let (result, _) = run(
            "PowerPlatformPackSolution@2",
            &[
                ("solutionsourcefolder", "src"),
                ("SolutionOutputFile", "out/packed.zip"),
            ],
            dir.path(),
        );
        result.unwrap();
        assert!(dir.path().join("out/packed.zip").is_file());
        let (result, lines) = run(
            "PowerPlatformChecker@2",
            &[("FilesToAnalyze", "out/*.zip")],
            dir.path(),
        );
        let err = result.unwrap_err();
        assert!(err.0.contains("1 issue(s) at High"), "{err}");
        assert!(
            lines
                .iter()
                .any(|line| line.contains("flow-embedded-connection")),
            "{lines:?}"
        );
        assert!(dir.path().join("CodeAnalysisLogs/packed.sarif").is_file());
    }

    #[test]
    fn missing_inputs_and_unknown_tasks_fail_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let (result, _) = run(
            "PowerPlatformPackSolution@2",
            &[("SolutionSourceFolder", "src")],
            dir.path(),
        );
        assert_eq!(result.unwrap_err().0, "input required: SolutionOutputFile");
        let (result, _) = run("PowerPlatformDeployPackage@2", &[], dir.path());
        assert!(
            result
                .unwrap_err()
                .0
                .contains("not a Power Platform task Lockgate implements")
        );
        let (result, _) = run(
            "PowerPlatformWhoAmi@2",
            &[("PowerPlatformSPN", "dev")],
            dir.path(),
        );
        assert!(result.unwrap_err().0.contains("no environment URL"));
        let (result, lines) = run("PowerPlatformToolInstaller@2", &[], dir.path());
        result.unwrap();
        assert!(lines[0].contains("no tools need installing"));
    }
}
