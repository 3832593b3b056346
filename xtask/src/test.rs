//! `cargo xtask test [NEXTEST ARGS...]`: the whole test suite with its set-up, so that it is one
//! command on a fresh machine. It installs cargo-nextest when cargo does not have it (from
//! crates.io, `--locked`), then runs `cargo nextest run --workspace --no-fail-fast` with any extra
//! arguments, and prints nothing after it, so the last line is nextest's own summary.

use std::process::{Command, Stdio};

pub fn main(args: &[String]) -> anyhow::Result<u8> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let has_nextest = Command::new(&cargo)
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !has_nextest {
        eprintln!("cargo-nextest is missing: cargo install cargo-nextest --locked");
        let status = Command::new(&cargo)
            .args(["install", "cargo-nextest", "--locked"])
            .status()?;
        anyhow::ensure!(
            status.success(),
            "cannot install cargo-nextest ({status}); install it by hand and run again"
        );
    }
    let status = Command::new(&cargo)
        .args(["nextest", "run", "--workspace", "--no-fail-fast"])
        .args(args)
        .status()?;
    // A test failure is nextest's own exit code (100); a signal counts as a failure.
    Ok(status
        .code()
        .and_then(|code| u8::try_from(code).ok())
        .unwrap_or(1))
}
