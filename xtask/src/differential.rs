//! `cargo xtask differential DIR`: runs the differential test of `crates/lockgate` (issue 11) on
//! another folder of pipelines in the corpus format (`crates/lockgate/test_data/differential/README.md`):
//! each file through `lockgate run` and through a `lockgate up` server, checked against its expected
//! results. The test reads the folder from `LOCKGATE_DIFFERENTIAL_DIR`.

use std::process::Command;

use anyhow::Context;

pub fn main(args: &[String]) -> anyhow::Result<u8> {
    let [dir] = args else {
        anyhow::bail!("usage: cargo xtask differential DIR");
    };
    let dir = std::fs::canonicalize(dir).with_context(|| format!("{dir}: cannot read it"))?;
    anyhow::ensure!(dir.is_dir(), "{}: not a folder", dir.display());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args([
            "test",
            "-p",
            "lockgate",
            "--test",
            "it",
            "--",
            "--exact",
            "differential::the_local_runner_and_the_server_agree_with_azure_on_the_corpus",
            "--nocapture",
        ])
        .env("LOCKGATE_DIFFERENTIAL_DIR", &dir)
        .status()?;
    Ok(status
        .code()
        .and_then(|code| u8::try_from(code).ok())
        .unwrap_or(1))
}
