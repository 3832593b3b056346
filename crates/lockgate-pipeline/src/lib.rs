//! The pipeline compiler: Azure Pipelines YAML to a spanned tree, template expansion and the plan,
//! with diagnostics. Pure: strings in (through [`SourceReader`]), plan plus diagnostics out.

pub mod diagnostic;
pub mod plan;
pub mod rollout;
pub mod run_number;
pub mod yaml;

mod compiler;
mod expression;
mod final_yaml;
mod lower;
mod parameters;
mod template;

pub use diagnostic::{Diagnostic, Severity, SourceFile, SourceSpan, render};
pub use final_yaml::to_final_yaml;
pub use plan::Plan;

/// Why a file could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The repository is available but the file is not in it.
    NotFound,
    /// No local checkout is mapped for this repository alias (`--repo ALIAS=DIR`).
    RepositoryNotMapped,
    /// Any other failure, with a message.
    Other(String),
}

/// Supplies file contents to the compiler; the compiler itself does no IO.
pub trait SourceReader {
    /// Reads `path` (relative to the repository root, `/`-separated, already normalised, no `..`)
    /// from the repository `repository`: None for the pipeline's own repository (`self`), else the
    /// alias declared under `resources.repositories`.
    fn read(&self, repository: Option<&str>, path: &str) -> Result<String, ReadError>;
}

/// A pipeline given as one text: every path reads as that text (tests, benchmarks, and YAML given
/// without a repository around it).
pub struct SingleFile<'a>(pub &'a str);

impl SourceReader for SingleFile<'_> {
    fn read(&self, _repository: Option<&str>, _path: &str) -> Result<String, ReadError> {
        Ok(self.0.to_string())
    }
}

/// Everything the compiler needs.
pub struct CompileInput<'a> {
    /// The entry file, relative to the root of the pipeline's repository (`/`-separated).
    pub entry: String,
    pub reader: &'a dyn SourceReader,
    /// Runtime parameter values given on the command line (`--param NAME=VALUE`), in order.
    pub parameters: Vec<(String, String)>,
    /// Predefined variables available to template expressions (`Build.SourceBranch`, …), if known.
    pub variables: Vec<(String, String)>,
}

/// The compiler's result: a plan when there is no error, and every diagnostic found.
#[derive(Clone, Debug, Default)]
pub struct CompileOutput {
    pub plan: Option<Plan>,
    pub diagnostics: Vec<Diagnostic>,
    /// Every file read, for rendering diagnostics with snippets.
    pub sources: Vec<SourceFile>,
}

impl CompileOutput {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Compiles a pipeline: loads the entry file and its templates, expands templates and `${{ }}`
/// expressions, checks the document and builds the plan.
pub fn compile(input: &CompileInput<'_>) -> CompileOutput {
    compiler::compile(input)
}
