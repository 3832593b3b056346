//! End-to-end tests of `lockgate` commands in server.rs of the binary.
