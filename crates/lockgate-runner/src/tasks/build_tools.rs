//! Tasks that run a build tool installed on the machine: Npm@1, PythonScript@0, CMake@1, DotNetCoreCLI@2
//! and Docker@2. Input names and defaults follow Microsoft's task reference pages ("Npm@1 - npm v1 task",
//! "PythonScript@0", "CMake@1", "DotNetCoreCLI@2", "Docker@2"). A tool that is not installed fails the
//! step with "<tool> is not installed"; Lockgate never installs tools.

use std::path::PathBuf;
use std::sync::Arc;

use crate::events::TaskResult;
use crate::job::StepContext;
use crate::tasks::script::{
    find_program, run_shell, script_file, split_arguments, working_directory,
};
use crate::tasks::test_results::find_files;
use crate::tasks::{Task, TaskError, TaskFuture, TaskRegistry};

pub fn register(registry: &mut TaskRegistry) {
    registry.register("Npm", 1, Arc::new(Npm));
    registry.register("PythonScript", 0, Arc::new(PythonScript));
    registry.register("CMake", 1, Arc::new(CMake));
    registry.register("DotNetCoreCLI", 2, Arc::new(DotNetCoreCli));
    registry.register("Docker", 2, Arc::new(Docker));
}

/// `name` on the step's PATH, or the step error every build-tool task gives when it is missing.
fn installed(step: &StepContext<'_, '_>, name: &str, task: &str) -> Result<PathBuf, TaskError> {
    find_program(&step.process_env(), name).ok_or_else(|| {
        TaskError(format!(
            "{name} is not installed: {task} runs `{name}`, which is not on PATH (Lockgate never installs tools)"
        ))
    })
}

/// Runs `program args` in `cwd` and maps its exit code to the step result, naming the tool.
async fn run_tool(
    step: &mut StepContext<'_, '_>,
    name: &str,
    program: PathBuf,
    args: Vec<String>,
    cwd: PathBuf,
) -> Result<TaskResult, TaskError> {
    run_shell(step, name, program, args, cwd, false).await
}

/// Npm@1: `command` install (default), ci, publish or custom (`customCommand`), in `workingDir` (default
/// the sources folder); `verbose` adds `--verbose`. Registries come from the project's `.npmrc`.
struct Npm;

impl Task for Npm {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let command = step
                .input("command")
                .unwrap_or("install")
                .trim()
                .to_ascii_lowercase();
            let mut args = match command.as_str() {
                "install" | "ci" | "publish" => vec![command.clone()],
                "custom" => {
                    let custom = split_arguments(step.required_input(&["customCommand"])?);
                    if custom.is_empty() {
                        return Err(TaskError("Npm@1 command custom needs customCommand".into()));
                    }
                    custom
                }
                other => {
                    return Err(TaskError(format!(
                        "Npm@1 command must be install, ci, publish or custom, not `{other}`"
                    )));
                }
            };
            if command != "custom" && step.input_bool(&["verbose"], false)? {
                args.push("--verbose".into());
            }
            let cwd = working_directory(step, &["workingDir"])?;
            let npm = installed(step, "npm", "Npm@1")?;
            run_tool(step, "npm", npm, args, cwd).await
        })
    }
}

/// PythonScript@0: `scriptSource` filePath (default, `scriptPath`) or inline (`script`), `arguments`,
/// `pythonInterpreter` (default `python` on PATH, else `python3`), `workingDirectory`, `failOnStderr`.
struct PythonScript;

impl Task for PythonScript {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let inline = step
                .input("scriptSource")
                .is_some_and(|s| s.trim().eq_ignore_ascii_case("inline"));
            let file = if inline {
                let script = step.required_input(&["script"])?.to_string();
                step.write_temp_script("py", &script)?
            } else {
                script_file(step, "scriptPath")?
            };
            let interpreter = match step.input("pythonInterpreter").map(str::trim) {
                Some(path) if !path.is_empty() => {
                    let path = path.to_string();
                    find_program(&step.process_env(), &path).ok_or_else(|| {
                        TaskError(format!("python interpreter `{path}` was not found"))
                    })?
                }
                _ => match find_program(&step.process_env(), "python") {
                    Some(python) => python,
                    None => installed(step, "python3", "PythonScript@0")?,
                },
            };
            let cwd = working_directory(step, &["workingDirectory"])?;
            let fail_on_stderr = step.input_bool(&["failOnStderr"], false)?;
            let mut args = vec![file.display().to_string()];
            args.extend(split_arguments(step.input("arguments").unwrap_or("")));
            run_shell(step, "Python", interpreter, args, cwd, fail_on_stderr).await
        })
    }
}

/// CMake@1: runs `cmake cmakeArgs` in `workingDirectory` (alias `cwd`, default `build` under the sources
/// folder), creating it first; `runInsideShell` lets bash expand the arguments.
struct CMake;

impl Task for CMake {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let dir = step.resolve_path(
                step.input_any(&["workingDirectory", "cwd"])
                    .unwrap_or("build"),
            );
            std::fs::create_dir_all(&dir)
                .map_err(|e| TaskError(format!("cannot create {}: {e}", dir.display())))?;
            let arguments = step.input("cmakeArgs").unwrap_or("").to_string();
            let cmake = installed(step, "cmake", "CMake@1")?;
            if step.input_bool(&["runInsideShell"], false)? {
                let bash = installed(step, "bash", "CMake@1 with runInsideShell")?;
                let line = format!(
                    "'{}' {arguments}",
                    cmake.display().to_string().replace('\'', "'\\''")
                );
                return run_tool(step, "cmake", bash, vec!["-c".into(), line], dir).await;
            }
            run_tool(step, "cmake", cmake, split_arguments(&arguments), dir).await
        })
    }
}

/// DotNetCoreCLI@2: `command` build (default), restore, test, publish, run, pack, push or custom
/// (`custom`), once per file matching `projects` (or once in the working folder without it), with
/// `arguments`, in `workingDirectory`.
struct DotNetCoreCli;

impl Task for DotNetCoreCli {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let command = step
                .input("command")
                .unwrap_or("build")
                .trim()
                .to_ascii_lowercase();
            let verb = match command.as_str() {
                "build" | "restore" | "test" | "publish" | "run" | "pack" | "push" => {
                    command.clone()
                }
                "custom" => step.required_input(&["custom"])?.trim().to_string(),
                other => {
                    return Err(TaskError(format!(
                        "DotNetCoreCLI@2 command must be build, restore, test, publish, run, pack, push or custom, not `{other}`"
                    )));
                }
            };
            let patterns = step
                .input_any(&["projects", "packagesToPack", "searchPatternPack"])
                .unwrap_or("")
                .trim()
                .to_string();
            let sources = step.job.workspace.sources.clone();
            let projects = if patterns.is_empty() {
                vec![None]
            } else {
                let found = find_files(step, &sources, &patterns)?;
                if found.is_empty() {
                    return Err(TaskError(format!(
                        "no project file matches `{}` in {}",
                        patterns.replace('\n', ", "),
                        sources.display()
                    )));
                }
                found.into_iter().map(Some).collect()
            };
            let arguments = split_arguments(step.input("arguments").unwrap_or(""));
            let cwd = working_directory(step, &["workingDirectory"])?;
            let dotnet = installed(step, "dotnet", "DotNetCoreCLI@2")?;
            for project in projects {
                let mut args = split_arguments(&verb);
                if let Some(project) = project {
                    args.push(project.display().to_string());
                }
                args.extend(arguments.iter().cloned());
                let result = run_tool(step, "dotnet", dotnet.clone(), args, cwd.clone()).await?;
                if result != TaskResult::Succeeded {
                    return Ok(result);
                }
            }
            Ok(TaskResult::Succeeded)
        })
    }
}

/// Docker@2: `command` buildAndPush (default), build, push, login or logout; `Dockerfile` (default
/// `**/Dockerfile`, the first match), `buildContext` (default the Dockerfile's folder), `repository`,
/// `tags` (default `$(Build.BuildId)`, one per line or comma), `arguments` (build and push only).
/// `login` needs a Docker registry service connection (`containerRegistry`), which local runs do not have.
struct Docker;

impl Task for Docker {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let command = step
                .input("command")
                .unwrap_or("buildAndPush")
                .trim()
                .to_ascii_lowercase();
            if !["buildandpush", "build", "push", "login", "logout"].contains(&command.as_str()) {
                return Err(TaskError(format!(
                    "Docker@2 command must be buildAndPush, build, push, login or logout, not `{command}`"
                )));
            }
            if command == "login" {
                let registry = step.input("containerRegistry").unwrap_or("").to_string();
                return Err(TaskError(format!(
                    "Docker@2 login needs the Docker registry service connection `{registry}`, which Lockgate does not have; run `docker login` in a script step with a secret variable instead"
                )));
            }
            let docker = installed(step, "docker", "Docker@2")?;
            let sources = step.job.workspace.sources.clone();
            if command == "logout" {
                return run_tool(step, "docker", docker, vec!["logout".into()], sources).await;
            }
            let repository = step.input("repository").unwrap_or("").trim().to_string();
            let tags_text = step
                .input("tags")
                .map(str::to_string)
                .or_else(|| step.variable("Build.BuildId").map(str::to_string))
                .unwrap_or_default();
            let tags: Vec<String> = tags_text
                .split(['\n', ','])
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect();
            let images: Vec<String> = if repository.is_empty() {
                Vec::new()
            } else {
                tags.iter()
                    .map(|tag| format!("{repository}:{tag}"))
                    .collect()
            };
            let arguments = split_arguments(step.input("arguments").unwrap_or(""));
            if command == "build" || command == "buildandpush" {
                let pattern = step
                    .input("Dockerfile")
                    .unwrap_or("**/Dockerfile")
                    .trim()
                    .to_string();
                let dockerfile = find_files(step, &sources, &pattern)?
                    .into_iter()
                    .next()
                    .ok_or_else(|| {
                        TaskError(format!(
                            "no Dockerfile matches `{pattern}` in {}",
                            sources.display()
                        ))
                    })?;
                let context = match step.input("buildContext").map(str::trim) {
                    Some(dir) if !dir.is_empty() && dir != "**" => step.resolve_path(dir),
                    _ => dockerfile
                        .parent()
                        .map_or_else(|| sources.clone(), |p| p.to_path_buf()),
                };
                let mut args = vec![
                    "build".to_string(),
                    "-f".into(),
                    dockerfile.display().to_string(),
                ];
                for image in &images {
                    args.push("-t".into());
                    args.push(image.clone());
                }
                if command == "build" {
                    args.extend(arguments.iter().cloned());
                }
                args.push(context.display().to_string());
                let result =
                    run_tool(step, "docker", docker.clone(), args, sources.clone()).await?;
                if result != TaskResult::Succeeded || command == "build" {
                    return Ok(result);
                }
            }
            if images.is_empty() {
                return Err(TaskError(
                    "Docker@2 push needs `repository` (and tags)".into(),
                ));
            }
            for image in images {
                let mut args = vec!["push".to_string(), image];
                if command == "push" {
                    args.extend(arguments.iter().cloned());
                }
                let result =
                    run_tool(step, "docker", docker.clone(), args, sources.clone()).await?;
                if result != TaskResult::Succeeded {
                    return Ok(result);
                }
            }
            Ok(TaskResult::Succeeded)
        })
    }
}
