//! End-to-end tests of `lockgate` commands in compile.rs of the binary.
