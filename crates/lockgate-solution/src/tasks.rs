//! tasks (in progress).
