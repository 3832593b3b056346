//! End-to-end tests of `lockgate` commands in run.rs of the binary.
