//! Shared helpers for running the binary, and tests of the top-level command line.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `lockgate ARGS` in `dir` and returns its output.
pub fn lockgate(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockgate"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the lockgate binary starts")
}

#[test]
fn unknown_command_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = lockgate(dir.path(), &["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-command"));
}

#[test]
fn help_lists_the_main_commands() {
    let dir = tempfile::tempdir().unwrap();
    let out = lockgate(dir.path(), &["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for command in ["validate", "plan", "run", "solution", "up"] {
        assert!(text.contains(command), "help mentions {command}: {text}");
    }
}
