//! End-to-end tests of the `lockgate` binary, one module per command family. Each test runs the real
//! binary as a child process in a temporary directory.

mod agent;
mod alm;
mod cli;
mod compile;
mod differential;
mod limits;
mod migrate_store;
mod node_tasks;
mod objects;
mod postgres;
mod run;
mod sandbox;
mod server;
mod solution;
mod targets;
