//! End-to-end tests of `lockgate` commands in solution.rs of the binary.
