//! `cargo xtask ...`: conformance runs, the pipeline corpus, the differential test on other pipelines,
//! benchmarks, chaos and the test suite. Argument parsing is deliberately plain (no clap) so that the
//! tool stays cheap to build.
//!
//! Benchmarks must not run in the debug build that `cargo xtask` uses, so `cargo xtask bench NAME`
//! re-runs this tool with `--release` and the hidden `bench-release` command.

mod bench;
mod chaos;
mod conformance;
mod corpus;
mod differential;
mod real_pipelines;
mod test;

use std::process::ExitCode;

const USAGE: &str = "usage:
  cargo xtask conformance expressions <FILE.jsonl> [--min-pass PERCENT]
  cargo xtask corpus <DIR> [--out FILE] [--fail-on-crash]
  cargo xtask differential <DIR>
  cargo xtask real-pipelines <DIR>... [--timeout SECS] [--lockgate PATH]
  cargo xtask bench <expr|pipeline|runner|sandbox|solution|server|releases|dispatch|agents|all>
  cargo xtask chaos server --runs N [--seed S]
  cargo xtask test [NEXTEST ARGS...]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("conformance") => conformance::main(&args[1..]),
        Some("corpus") => corpus::main(&args[1..]),
        Some("differential") => differential::main(&args[1..]),
        Some("real-pipelines") => real_pipelines::main(&args[1..]),
        Some("bench") => bench::spawn_release(&args[1..]),
        Some("bench-release") => bench::main(&args[1..]),
        Some("chaos") => chaos::main(&args[1..]),
        Some("test") => test::main(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
