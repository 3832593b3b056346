//! Integration tests of the pipeline compiler through its public API: snapshot tests over
//! `test_data/ok` and `test_data/err`, and robustness tests that garbage input never panics.

mod robustness;
mod scale;
mod snapshots;
mod support;
