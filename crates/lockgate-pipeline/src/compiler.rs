//! The compile driver: reads the entry file and templates through the [`crate::SourceReader`], keeps
//! the file table, and runs expansion and lowering into the plan.

use crate::{CompileInput, CompileOutput};

pub fn compile(input: &CompileInput<'_>) -> CompileOutput {
    let _ = input;
    CompileOutput::default()
}
