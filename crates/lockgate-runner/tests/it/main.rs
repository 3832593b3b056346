//! Integration tests of lockgate-runner with real child processes, one module per area.

mod helpers;
mod job;
mod process;
mod sandbox;
mod ssh;
mod tasks;
