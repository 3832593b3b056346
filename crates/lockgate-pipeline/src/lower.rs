//! Lowering: turns the expanded YAML tree into the plan, checking every key and value.
