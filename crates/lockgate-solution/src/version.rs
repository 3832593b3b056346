//! version (in progress).
