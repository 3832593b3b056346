//! Fuzz target for the pipeline compiler: any bytes, read as an entry file and a template file it may
//! include, must compile to a plan or diagnostics, never a panic; a plan must print as final YAML.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockgate_pipeline::{CompileInput, ReadError, SourceReader};

/// Serves the fuzzed files: `azure-pipelines.yml` and `t.yml` (the input split at the first NUL byte).
struct FuzzReader {
    entry: String,
    template: String,
}

impl SourceReader for FuzzReader {
    fn read(&self, repository: Option<&str>, path: &str) -> Result<String, ReadError> {
        match (repository, path) {
            (None, "azure-pipelines.yml") => Ok(self.entry.clone()),
            (None, "t.yml") => Ok(self.template.clone()),
            (Some(_), _) => Err(ReadError::RepositoryNotMapped),
            _ => Err(ReadError::NotFound),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (entry, template) = text
        .split_once('\0')
        .unwrap_or((&text, "steps:\n- script: echo\n"));
    let reader = FuzzReader {
        entry: entry.to_string(),
        template: template.to_string(),
    };
    let input = CompileInput {
        entry: "azure-pipelines.yml".into(),
        reader: &reader,
        parameters: vec![("p".into(), "1".into())],
        variables: Vec::new(),
    };
    let output = lockgate_pipeline::compile(&input);
    assert!(output.plan.is_some() || !output.diagnostics.is_empty());
    if let Some(plan) = &output.plan {
        let _ = lockgate_pipeline::to_final_yaml(plan);
        let _ = lockgate_pipeline::render(&output.diagnostics, &output.sources);
    }
});
