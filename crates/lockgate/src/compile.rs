//! `lockgate validate` and `lockgate plan`: compile a pipeline file and report diagnostics or the plan.
//! This module supplies the compiler's file reader (the repository root and `--repo` checkouts).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use lockgate_pipeline::{CompileInput, CompileOutput, ReadError, SourceReader};
use lockgate_runner::orchestrator::validate_plan;

use crate::{EXIT_FAILED, EXIT_OK, UsageError};

#[derive(clap::Args)]
pub struct CompileArgs {
    /// The pipeline file (default: azure-pipelines.yml in the current directory).
    pub file: Option<PathBuf>,
    /// The repository root that `/`-rooted template paths resolve against (default: the Git top
    /// level of FILE, else FILE's folder).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// A runtime parameter value; repeat for several.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// A local checkout for a repository resource alias used by `template: x@ALIAS`; repeat for several.
    #[arg(long = "repo", value_name = "ALIAS=DIR")]
    pub repos: Vec<String>,
    /// How diagnostics are written to stderr: rendered with source snippets, or as one JSON array
    /// (code, severity, message, span, label, help) for editors and CI annotations.
    #[arg(long, value_enum, default_value_t = DiagnosticsFormat::Text)]
    pub diagnostics: DiagnosticsFormat,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DiagnosticsFormat {
    /// `error[code]: message` with the source line and a caret label.
    #[default]
    Text,
    /// A JSON array of diagnostics.
    Json,
}

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum PlanFormat {
    /// The fully expanded pipeline as Azure Pipelines YAML.
    #[default]
    Yaml,
    /// The stage/job graph with every job's steps, as JSON.
    Json,
}

#[derive(clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub compile: CompileArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Yaml)]
    pub format: PlanFormat,
}

/// Reads pipeline files from the repository root and the `--repo` checkouts.
pub struct FileSystemReader {
    pub root: PathBuf,
    pub repositories: BTreeMap<String, PathBuf>,
}

impl SourceReader for FileSystemReader {
    fn read(&self, repository: Option<&str>, path: &str) -> Result<String, ReadError> {
        let base = match repository {
            None => &self.root,
            Some(alias) => self
                .repositories
                .get(alias)
                .ok_or(ReadError::RepositoryNotMapped)?,
        };
        match std::fs::read(base.join(path)) {
            Ok(bytes) => String::from_utf8(bytes)
                .map_err(|_| ReadError::Other("the file is not UTF-8 text".into())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(ReadError::NotFound),
            Err(err) if err.kind() == std::io::ErrorKind::IsADirectory => {
                Err(ReadError::Other("it is a directory".into()))
            }
            Err(err) => Err(ReadError::Other(err.to_string())),
        }
    }
}

/// Runs `git -C dir ARGS` and returns its trimmed output when it succeeds.
fn git_output(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8(output.stdout).ok()?.trim().to_string())
}

/// Predefined variables that template expressions may read ("available in templates" in the
/// predefined-variables table), taken from the Git checkout: the branch and commit, and
/// `Build.Reason` `Manual` as for a run queued by hand.
pub fn predefined_variables(root: &Path) -> Vec<(String, String)> {
    let mut variables = vec![("Build.Reason".to_string(), "Manual".to_string())];
    if let Some(name) = root.file_name() {
        variables.push((
            "Build.Repository.Name".into(),
            name.to_string_lossy().into_owned(),
        ));
    }
    if let Some(branch) =
        git_output(root, &["symbolic-ref", "--short", "HEAD"]).filter(|b| b != "HEAD")
    {
        variables.push(("Build.SourceBranch".into(), format!("refs/heads/{branch}")));
        let short = branch.rsplit('/').next().unwrap_or(&branch).to_string();
        variables.push(("Build.SourceBranchName".into(), short));
    }
    if let Some(commit) = git_output(root, &["rev-parse", "HEAD"]) {
        variables.push(("Build.SourceVersion".into(), commit));
    }
    variables
}

/// The Git top level of `dir`, if it is inside a work tree.
fn git_top_level(dir: &Path) -> Option<PathBuf> {
    let top = PathBuf::from(git_output(dir, &["rev-parse", "--show-toplevel"])?);
    top.canonicalize().ok()
}

pub fn split_pair<'a>(
    text: &'a str,
    flag: &str,
    shape: &str,
) -> Result<(&'a str, &'a str), UsageError> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => Ok((name.trim(), value)),
        _ => Err(UsageError(format!("{flag} expects {shape}, got `{text}`"))),
    }
}

/// Compiles the file named by the arguments. Usage problems (missing file, bad flags) are errors.
/// Finds the pipeline file (default `azure-pipelines.yml`) and its repository root (`--root`, else
/// the Git top level of the file, else its folder). Returns the root and the file's path relative
/// to it, `/`-separated. Shared by every command that compiles a pipeline.
pub fn locate_pipeline(
    file: Option<&Path>,
    root: Option<&Path>,
) -> anyhow::Result<(PathBuf, String)> {
    let file = file.map_or_else(|| PathBuf::from("azure-pipelines.yml"), Path::to_path_buf);
    if !file.is_file() {
        return Err(
            UsageError(format!("pipeline file `{}` does not exist", file.display())).into(),
        );
    }
    let file = file
        .canonicalize()
        .map_err(|e| UsageError(format!("cannot open `{}`: {e}", file.display())))?;
    let folder = file
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let root = match root {
        Some(root) => root
            .canonicalize()
            .map_err(|e| UsageError(format!("--root `{}`: {e}", root.display())))?,
        None => git_top_level(&folder).unwrap_or(folder),
    };
    let Ok(relative) = file.strip_prefix(&root) else {
        return Err(UsageError(format!(
            "`{}` is not inside the root `{}`",
            file.display(),
            root.display()
        ))
        .into());
    };
    let entry = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");
    Ok((root, entry))
}

/// Parses `--param NAME=VALUE` flags.
pub fn parameter_values(params: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    params
        .iter()
        .map(|param| {
            let (name, value) = split_pair(param, "--param", "NAME=VALUE")?;
            Ok((name.to_string(), value.to_string()))
        })
        .collect()
}

/// Parses `--repo ALIAS=DIR` flags into existing directories.
pub fn repository_checkouts(repos: &[String]) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut repositories = BTreeMap::new();
    for repo in repos {
        let (alias, dir) = split_pair(repo, "--repo", "ALIAS=DIR")?;
        let dir = Path::new(dir)
            .canonicalize()
            .map_err(|e| UsageError(format!("--repo {alias}: `{dir}`: {e}")))?;
        if !dir.is_dir() {
            return Err(UsageError(format!(
                "--repo {alias}: `{}` is not a directory",
                dir.display()
            ))
            .into());
        }
        repositories.insert(alias.to_string(), dir);
    }
    Ok(repositories)
}

/// Compiles the file named by the arguments. Usage problems (missing file, bad flags) are errors.
fn compile_from_args(args: &CompileArgs) -> anyhow::Result<CompileOutput> {
    let (root, entry) = locate_pipeline(args.file.as_deref(), args.root.as_deref())?;
    let parameters = parameter_values(&args.params)?;
    let repositories = repository_checkouts(&args.repos)?;
    let variables = predefined_variables(&root);
    let reader = FileSystemReader { root, repositories };
    let input = CompileInput {
        entry,
        reader: &reader,
        parameters,
        variables,
    };
    Ok(lockgate_pipeline::compile(&input))
}

/// Prints diagnostics to stderr in the chosen format; returns whether any is an error.
fn report(output: &CompileOutput, format: DiagnosticsFormat) -> anyhow::Result<bool> {
    match format {
        DiagnosticsFormat::Json => eprintln!("{}", serde_json::to_string(&output.diagnostics)?),
        DiagnosticsFormat::Text if !output.diagnostics.is_empty() => {
            eprint!(
                "{}",
                lockgate_pipeline::render(&output.diagnostics, &output.sources)
            );
        }
        DiagnosticsFormat::Text => {}
    }
    Ok(output.has_errors())
}

pub fn validate(args: CompileArgs) -> anyhow::Result<u8> {
    let output = compile_from_args(&args)?;
    if report(&output, args.diagnostics)? {
        if args.diagnostics == DiagnosticsFormat::Text {
            let errors = output.diagnostics.iter().filter(|d| d.is_error()).count();
            eprintln!("{errors} error{} found", if errors == 1 { "" } else { "s" });
        }
        return Ok(EXIT_FAILED);
    }
    if let Some(plan) = &output.plan {
        let jobs: usize = plan.stages.iter().map(|s| s.jobs.len()).sum();
        let steps: usize = plan
            .stages
            .iter()
            .flat_map(|s| &s.jobs)
            .map(|j| {
                j.steps.len()
                    + j.deployment
                        .as_ref()
                        .map_or(0, |d| d.phases.iter().map(|p| p.steps.len()).sum())
            })
            .sum();
        // What `lockgate run` would report before starting (unknown tasks, what a local run cannot
        // do), so that `validate` and `run` agree. Variable groups come from `--var-group` in a run;
        // here none are given, so a group is reported as a warning too. None of these make the
        // pipeline invalid: on a server they fail at the step or job that needs them.
        let registry = crate::run::registry();
        for problem in validate_plan(plan, &registry, &BTreeMap::new()) {
            if problem.warning {
                eprintln!("warning: {problem}");
            } else {
                eprintln!("warning: {problem} (`lockgate run` refuses this)");
            }
        }
        println!(
            "valid: {} stage(s), {jobs} job(s), {steps} step(s)",
            plan.stages.len()
        );
    }
    Ok(EXIT_OK)
}

pub fn plan(args: PlanArgs) -> anyhow::Result<u8> {
    let output = compile_from_args(&args.compile)?;
    if report(&output, args.compile.diagnostics)? {
        return Ok(EXIT_FAILED);
    }
    let Some(plan) = &output.plan else {
        return Ok(EXIT_FAILED);
    };
    match args.format {
        PlanFormat::Yaml => print!("{}", lockgate_pipeline::to_final_yaml(plan)),
        PlanFormat::Json => println!("{}", serde_json::to_string_pretty(plan)?),
    }
    Ok(EXIT_OK)
}
