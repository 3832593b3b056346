//! The script tasks: CmdLine@2 (`script:`), Bash@3 (`bash:`), ShellScript@2 and PowerShell@2 (`pwsh:` and
//! `powershell:`). Inline scripts are written to the job's temp folder and run the way the agent runs them
//! on Linux: `bash --noprofile --norc FILE` (no `-e`: the last command's exit code decides).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::events::TaskResult;
use crate::job::StepContext;
use crate::process::ProcessSpec;
use crate::tasks::{Task, TaskError, TaskFuture, TaskRegistry};

pub fn register(registry: &mut TaskRegistry) {
    registry.register("CmdLine", 2, Arc::new(CommandLine));
    registry.register("Bash", 3, Arc::new(Bash));
    registry.register("ShellScript", 2, Arc::new(ShellScript));
    registry.register("PowerShell", 2, Arc::new(PowerShell));
}

/// Finds a program on the PATH of the step's environment.
pub fn find_program(env: &[(String, String)], name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    let path = env
        .iter()
        .find(|(key, _)| key == "PATH")
        .map(|(_, value)| value.as_str())
        .unwrap_or("");
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// The script file named by input `name`, which must exist.
pub(crate) fn script_file(step: &StepContext<'_, '_>, name: &str) -> Result<PathBuf, TaskError> {
    let file = step.resolve_path(step.required_input(&[name])?);
    if !file.is_file() {
        return Err(TaskError(format!(
            "script file not found: {}",
            file.display()
        )));
    }
    Ok(file)
}

pub(crate) fn working_directory(
    step: &StepContext<'_, '_>,
    names: &[&str],
) -> Result<PathBuf, TaskError> {
    let dir = match step.input_any(names) {
        Some(dir) => step.resolve_path(dir),
        None => step.job.workspace.sources.clone(),
    };
    if !dir.is_dir() {
        return Err(TaskError(format!(
            "working directory not found: {}",
            dir.display()
        )));
    }
    Ok(dir)
}

/// Runs `program args` as the step's process and turns the outcome into a step result.
pub(crate) async fn run_shell(
    step: &mut StepContext<'_, '_>,
    shell: &str,
    program: PathBuf,
    args: Vec<String>,
    cwd: PathBuf,
    fail_on_stderr: bool,
) -> Result<TaskResult, TaskError> {
    let env = step.process_env();
    let shown = std::iter::once(program.display().to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    step.log(&format!("##[command]{shown}"));
    let spec = ProcessSpec {
        program,
        args,
        cwd,
        env,
    };
    match step.run_process(&spec).await? {
        Err(stopped) => Ok(stopped),
        Ok(0) if fail_on_stderr && step.stderr_seen => {
            step.error(&format!(
                "{shell} wrote one or more lines to the standard error stream."
            ));
            Ok(TaskResult::Failed)
        }
        Ok(0) => Ok(TaskResult::Succeeded),
        Ok(code) => {
            step.error(&format!("{shell} exited with code '{code}'."));
            Ok(TaskResult::Failed)
        }
    }
}

fn bash_program(step: &StepContext<'_, '_>) -> Result<PathBuf, TaskError> {
    find_program(&step.process_env(), "bash")
        .ok_or_else(|| TaskError("bash was not found on PATH".into()))
}

/// `script:` and CmdLine@2: an inline script run by bash.
struct CommandLine;

impl Task for CommandLine {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let script = step
                .input("script")
                .unwrap_or("echo Write your commands here")
                .to_string();
            let cwd = working_directory(step, &["workingDirectory"])?;
            let fail_on_stderr = step.input_bool(&["failOnStderr"], false)?;
            let file = step.write_temp_script("sh", &script)?;
            let bash = bash_program(step)?;
            let args = vec![
                "--noprofile".into(),
                "--norc".into(),
                file.display().to_string(),
            ];
            run_shell(step, "Bash", bash, args, cwd, fail_on_stderr).await
        })
    }
}

/// `bash:` and Bash@3: an inline script or a script file with arguments.
struct Bash;

impl Task for Bash {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let inline = step
                .input("targetType")
                .is_some_and(|t| t.eq_ignore_ascii_case("inline"))
                || (step.input("targetType").is_none()
                    && step.input("filePath").is_none()
                    && step.input("script").is_some());
            let cwd = working_directory(step, &["workingDirectory", "cwd"])?;
            let fail_on_stderr = step.input_bool(&["failOnStderr"], false)?;
            let no_profile = step.input_bool(&["noProfile"], true)?;
            let no_rc = step.input_bool(&["noRc"], true)?;
            if let Some(bash_env) = step.input("bashEnvValue").map(str::to_string) {
                step.env.insert("BASH_ENV".into(), bash_env);
            }
            let bash = bash_program(step)?;
            let mut args = Vec::new();
            if no_profile {
                args.push("--noprofile".to_string());
            }
            if no_rc {
                args.push("--norc".to_string());
            }
            if inline {
                let script = step.input("script").unwrap_or("").to_string();
                let file = step.write_temp_script("sh", &script)?;
                args.push(file.display().to_string());
            } else {
                let file = script_file(step, "filePath")?;
                args.push(file.display().to_string());
                args.extend(split_arguments(step.input("arguments").unwrap_or("")));
            }
            run_shell(step, "Bash", bash, args, cwd, fail_on_stderr).await
        })
    }
}

/// ShellScript@2: runs a script file with `sh`-style arguments.
struct ShellScript;

impl Task for ShellScript {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let file = script_file(step, "scriptPath")?;
            let disable_auto_cwd = step.input_bool(&["disableAutoCwd"], false)?;
            let cwd = if disable_auto_cwd {
                working_directory(step, &["cwd"])?
            } else {
                file.parent()
                    .map_or_else(|| step.job.workspace.sources.clone(), Path::to_path_buf)
            };
            let fail_on_stderr = step.input_bool(&["failOnStandardError"], false)?;
            let bash = bash_program(step)?;
            let mut args = vec![file.display().to_string()];
            args.extend(split_arguments(step.input("args").unwrap_or("")));
            run_shell(step, "Bash", bash, args, cwd, fail_on_stderr).await
        })
    }
}

/// `pwsh:`, `powershell:` and PowerShell@2; on Linux and macOS always PowerShell Core (`pwsh`).
struct PowerShell;

impl Task for PowerShell {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let Some(pwsh) = find_program(&step.process_env(), "pwsh") else {
                return Err(TaskError(
                    "PowerShell steps need `pwsh` (PowerShell 7) on PATH, and it is not installed on this machine".into(),
                ));
            };
            let inline = !step
                .input("targetType")
                .is_some_and(|t| t.eq_ignore_ascii_case("filePath"));
            let cwd = working_directory(step, &["workingDirectory"])?;
            let fail_on_stderr = step.input_bool(&["failOnStderr"], false)?;
            let ignore_last_exit_code = step.input_bool(&["ignoreLASTEXITCODE"], false)?;
            let preference = step
                .input("errorActionPreference")
                .unwrap_or("stop")
                .to_string();
            if !["stop", "continue", "silentlycontinue"]
                .contains(&preference.to_ascii_lowercase().as_str())
            {
                return Err(TaskError(format!(
                    "errorActionPreference must be Stop, Continue or SilentlyContinue, not `{preference}`"
                )));
            }
            let body = if inline {
                step.input("script").unwrap_or("").to_string()
            } else {
                let file = script_file(step, "filePath")?;
                let arguments = step.input("arguments").unwrap_or("");
                format!(
                    ". '{}' {arguments}",
                    file.display().to_string().replace('\'', "''")
                )
            };
            let exit = if ignore_last_exit_code {
                "exit 0".to_string()
            } else {
                "if (!(Test-Path -LiteralPath variable:\\LASTEXITCODE)) { exit 0 } else { exit $LASTEXITCODE }".to_string()
            };
            let wrapper = format!("$ErrorActionPreference = '{preference}'\n{body}\n{exit}\n");
            let file = step.write_temp_script("ps1", &wrapper)?;
            let args = vec![
                "-NoLogo".into(),
                "-NoProfile".into(),
                "-NonInteractive".into(),
                "-Command".into(),
                format!(". '{}'", file.display().to_string().replace('\'', "''")),
            ];
            run_shell(step, "PowerShell", pwsh, args, cwd, fail_on_stderr).await
        })
    }
}

/// Splits an argument string like a shell does for simple cases: whitespace separates, single and double
/// quotes group, backslash escapes the next character outside single quotes.
pub fn split_arguments(text: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut in_arg = false;
    let mut chars = text.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => current.push(c),
            (_, '\\') => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
                in_arg = true;
            }
            (Some(_), c) => current.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_arg = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_arg {
                    args.push(std::mem::take(&mut current));
                    in_arg = false;
                }
            }
            (None, c) => {
                current.push(c);
                in_arg = true;
            }
        }
    }
    if in_arg {
        args.push(current);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_like_a_shell() {
        assert_eq!(
            split_arguments(r#"a "b c" 'd e' f\ g """#),
            vec!["a", "b c", "d e", "f g", ""]
        );
        assert!(split_arguments("   ").is_empty());
    }
}
