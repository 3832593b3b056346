//! Tests of the server: the real router driven in-process with a fresh SQLite store (`router`), and
//! end to end with the server listening on 127.0.0.1, the built-in agent running jobs with the runner,
//! and the real git client pushing (`end_to_end`), and in Chromium through chromedriver (`browser`);
//! `startup` covers opening the store from the database setting, `restart` a server started again on
//! the data folder of a killed one.

mod agentless;
mod browser;
mod end_to_end;
mod library;
mod releases;
mod restart;
mod router;
mod startup;
