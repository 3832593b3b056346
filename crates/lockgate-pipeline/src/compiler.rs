//! The compile driver: the file table (entry file and templates read through the
//! [`crate::SourceReader`]), template references and their typed parameters, and the diagnostics
//! list; [`crate::lower`] uses it to build the plan.

use std::collections::HashMap;
use std::rc::Rc;

use crate::diagnostic::{Diagnostic, SourceFile, SourceSpan};
use crate::template::{Expander, Scope};
use crate::yaml::{self, FileId, Node, NodeValue, Span};
use crate::{CompileInput, CompileOutput, ReadError};

/// Most distinct YAML files one pipeline may include, directly or indirectly (Azure's documented limit).
pub const MAX_FILES: usize = 100;
/// Deepest nesting of template references (Azure's documented limit).
pub const MAX_TEMPLATE_DEPTH: usize = 100;

/// The kind of document a template reference expects, which decides the key it provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateKind {
    Stages,
    Jobs,
    Steps,
    Variables,
    Extends,
}

impl TemplateKind {
    /// The key of the template file that holds the content.
    pub fn key(self) -> &'static str {
        match self {
            TemplateKind::Stages => "stages",
            TemplateKind::Jobs => "jobs",
            TemplateKind::Steps => "steps",
            TemplateKind::Variables => "variables",
            TemplateKind::Extends => "extends",
        }
    }
}

struct LoadedFile {
    display: String,
    repository: Option<String>,
    path: String,
    text: String,
    root: Option<Rc<Node>>,
    /// Why the file could not be loaded, kept so that a later reference reports it too (the first
    /// one may have come from a look-ahead whose diagnostics were dropped).
    load_errors: Vec<Diagnostic>,
}

/// State shared by the whole compile.
pub struct Compiler<'a> {
    pub input: &'a CompileInput<'a>,
    files: Vec<LoadedFile>,
    index: HashMap<(Option<String>, String), FileId>,
    pub diagnostics: Vec<Diagnostic>,
    /// Aliases declared under `resources.repositories`.
    pub repositories: Vec<String>,
    pub template_depth: usize,
    /// Nodes produced by template expansion so far (capped by `MAX_EXPANDED_NODES`).
    produced: usize,
    /// Bytes of text built by template expansion so far (capped by `MAX_EXPANDED_BYTES`).
    built: usize,
    /// Whether an expansion budget ran out (expansion then stops and reports it once).
    exhausted: bool,
}

impl<'a> Compiler<'a> {
    pub fn new(input: &'a CompileInput<'a>) -> Compiler<'a> {
        Compiler {
            input,
            files: Vec::new(),
            index: HashMap::new(),
            diagnostics: Vec::new(),
            repositories: Vec::new(),
            template_depth: 0,
            produced: 0,
            built: 0,
            exhausted: false,
        }
    }

    pub fn file_name(&self, file: FileId) -> &str {
        self.files
            .get(file as usize)
            .map_or("<unknown>", |f| f.display.as_str())
    }

    pub fn source_span(&self, span: Span) -> SourceSpan {
        yaml::source_span(span, self.file_name(span.file))
    }

    /// Records an error at `span`.
    pub fn error(
        &mut self,
        code: &str,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> &mut Diagnostic {
        let diagnostic =
            Diagnostic::error(code, message, Some(self.source_span(span))).with_label(label);
        self.diagnostics.push(diagnostic);
        let last = self.diagnostics.len() - 1;
        &mut self.diagnostics[last]
    }

    /// Reports keys of a mapping that are not in `allowed`, with a "did you mean" suggestion.
    pub fn check_keys(&mut self, entries: &[(Node, Node)], allowed: &[&[&str]], what: &str) {
        for (key, _) in entries {
            let Some(name) = key.as_str() else { continue };
            if allowed.iter().any(|set| set.contains(&name)) {
                continue;
            }
            let all: Vec<&str> = allowed.iter().flat_map(|s| s.iter().copied()).collect();
            let help = crate::lower::suggest(name, &all);
            let d = self.error(
                "pipeline::unknown-key",
                format!("unknown key `{name}` in {what}"),
                key.span,
                "not allowed here",
            );
            d.help = help;
        }
    }

    pub fn location(&self, span: Span) -> crate::plan::Location {
        crate::plan::Location {
            file: self.file_name(span.file).to_string(),
            line: span.line,
            column: span.column,
        }
    }

    /// Reads and parses a file once; later calls return the cached tree. `at` is the reference that
    /// asked for it (None for the entry file).
    pub fn load(
        &mut self,
        repository: Option<&str>,
        path: &str,
        at: Option<Span>,
    ) -> Option<(FileId, Rc<Node>)> {
        let key = (repository.map(str::to_string), path.to_string());
        if let Some(&id) = self.index.get(&key) {
            let file = &self.files[id as usize];
            if file.root.is_none() {
                let missing: Vec<Diagnostic> = file
                    .load_errors
                    .iter()
                    .filter(|d| !self.diagnostics.contains(d))
                    .cloned()
                    .collect();
                self.diagnostics.extend(missing);
            }
            return file.root.clone().map(|root| (id, root));
        }
        let display = match repository {
            Some(alias) => format!("{path}@{alias}"),
            None => path.to_string(),
        };
        if self.files.len() >= MAX_FILES {
            if let Some(at) = at {
                self.error(
                    "pipeline::too-many-files",
                    format!("a pipeline may include at most {MAX_FILES} files"),
                    at,
                    format!("`{display}` would be file {}", MAX_FILES + 1),
                );
            }
            return None;
        }
        let text = match self.input.reader.read(repository, path) {
            Ok(text) => text,
            Err(err) => {
                let (code, message, help) = match (&err, repository) {
                    (ReadError::RepositoryNotMapped, Some(alias)) => (
                        "pipeline::repository-not-available",
                        format!("repository `{alias}` is not available locally"),
                        Some(format!("map a local checkout with `--repo {alias}=DIR`")),
                    ),
                    (ReadError::Other(reason), _) => (
                        "pipeline::file-unreadable",
                        format!("cannot read `{display}`: {reason}"),
                        None,
                    ),
                    _ => (
                        "pipeline::template-not-found",
                        format!("template file `{display}` does not exist"),
                        None,
                    ),
                };
                match at {
                    Some(at) => {
                        let diagnostic = self.error(code, message, at, "referenced here");
                        if let Some(help) = help {
                            diagnostic.help = Some(help);
                        }
                    }
                    None => self
                        .diagnostics
                        .push(Diagnostic::error(code, message, None)),
                }
                return None;
            }
        };
        let id = self.files.len() as FileId;
        let parsed = yaml::load(&text, id, &display);
        self.index.insert(key, id);
        self.files.push(LoadedFile {
            display,
            repository: repository.map(str::to_string),
            path: path.to_string(),
            text,
            root: None,
            load_errors: Vec::new(),
        });
        match parsed {
            Ok(root) => {
                let root = Rc::new(root);
                self.files[id as usize].root = Some(root.clone());
                Some((id, root))
            }
            Err(diagnostics) => {
                self.diagnostics.extend(diagnostics.iter().cloned());
                self.files[id as usize].load_errors = diagnostics;
                None
            }
        }
    }

    /// Resolves `path[@alias]` written in `from`'s file to a repository and a normalised path.
    pub fn resolve_reference(
        &mut self,
        reference: &str,
        at: Span,
    ) -> Option<(Option<String>, String)> {
        let reference = reference.trim();
        let (path, alias) = match reference.rsplit_once('@') {
            Some((path, alias)) if !alias.contains('/') => (path, Some(alias)),
            _ => (reference, None),
        };
        if path.trim().is_empty() || path.ends_with('/') {
            self.error(
                "pipeline::invalid-template-path",
                if path.trim().is_empty() {
                    "the template path is empty".to_string()
                } else {
                    format!("`{reference}` does not name a file")
                },
                at,
                "this path",
            );
            return None;
        }
        let from_file = self.files.get(at.file as usize)?;
        let (repository, base_dir) = match alias {
            Some(alias) if alias.eq_ignore_ascii_case("self") => (None, None),
            Some(alias) => {
                if !self.repositories.iter().any(|r| r == alias) {
                    let available = if self.repositories.is_empty() {
                        "no repositories are declared".to_string()
                    } else {
                        format!("declared repositories: {}", self.repositories.join(", "))
                    };
                    self.error(
                        "pipeline::unknown-repository",
                        format!("repository alias `{alias}` is not declared under `resources.repositories`"),
                        at,
                        "used here",
                    )
                    .help = Some(available);
                    return None;
                }
                (Some(alias.to_string()), None)
            }
            None => {
                let dir = from_file
                    .path
                    .rsplit_once('/')
                    .map_or("", |(dir, _)| dir)
                    .to_string();
                (from_file.repository.clone(), Some(dir))
            }
        };
        let joined = if let Some(rooted) = path.strip_prefix('/') {
            rooted.to_string()
        } else {
            match base_dir {
                Some(dir) if !dir.is_empty() => format!("{dir}/{path}"),
                _ => path.to_string(),
            }
        };
        let mut parts: Vec<&str> = Vec::new();
        for part in joined.split(['/', '\\']) {
            match part {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        self.error(
                            "pipeline::template-outside-repository",
                            format!("template path `{path}` leaves the repository"),
                            at,
                            "this path",
                        );
                        return None;
                    }
                }
                other => parts.push(other),
            }
        }
        if parts.is_empty() {
            self.error(
                "pipeline::invalid-template-path",
                "the template path is empty",
                at,
                "this path",
            );
            return None;
        }
        Some((repository, parts.join("/")))
    }

    /// Expands a tree with the shared expander and reports its errors.
    pub fn expand(&mut self, node: &Node, scope: &Scope) -> Node {
        let (produced, built, exhausted) = (self.produced, self.built, self.exhausted);
        let mut resolve = |item: &Node, scope: &Scope| self.variable_template_statics(item, scope);
        let mut expander = Expander::new();
        expander.produced = produced;
        expander.built.set(built);
        expander.exhausted = exhausted;
        expander.variable_templates = Some(&mut resolve);
        let result = expander.expand(node, scope);
        let errors = std::mem::take(&mut expander.errors);
        let (produced, built, exhausted) =
            (expander.produced, expander.built.get(), expander.exhausted);
        drop(expander);
        self.produced = produced;
        self.built = built;
        self.exhausted = exhausted;
        for err in errors {
            self.error(err.code, err.message, err.span, err.label);
        }
        result
    }

    /// The static variables of a variable template entry (`- template: vars.yml`), looked up ahead
    /// of lowering so that `${{ variables.X }}` after it can see them. Its diagnostics are dropped:
    /// lowering instantiates the same template again and reports them there.
    fn variable_template_statics(&mut self, item: &Node, scope: &Scope) -> Vec<(String, String)> {
        let Some(reference) = item.get("template") else {
            return Vec::new();
        };
        if self.template_depth >= MAX_TEMPLATE_DEPTH {
            return Vec::new();
        }
        let diagnostics_before = self.diagnostics.len();
        self.template_depth += 1;
        let template = self.instantiate(
            reference,
            item.get("parameters"),
            TemplateKind::Variables,
            scope,
        );
        self.template_depth -= 1;
        self.diagnostics.truncate(diagnostics_before);
        template
            .and_then(|t| t.get("variables").map(crate::template::static_variables))
            .unwrap_or_default()
    }

    /// Instantiates a template reference: loads the file, binds `parameters` to its declarations,
    /// and expands it. Returns the expanded root mapping of the template (without `parameters`).
    pub fn instantiate(
        &mut self,
        reference: &Node,
        parameters: Option<&Node>,
        kind: TemplateKind,
        scope: &Scope,
    ) -> Option<Node> {
        let Some(text) = reference.as_str() else {
            self.error(
                "pipeline::wrong-type",
                "`template` must be a file path",
                reference.span,
                format!("found {}", reference.kind_name()),
            );
            return None;
        };
        if self.template_depth >= MAX_TEMPLATE_DEPTH {
            self.error(
                "pipeline::template-too-deep",
                format!("templates nest deeper than {MAX_TEMPLATE_DEPTH} levels"),
                reference.span,
                "this reference",
            )
            .help = Some("a template probably includes itself".into());
            return None;
        }
        let (repository, path) = self.resolve_reference(text, reference.span)?;
        let (_, root) = self.load(repository.as_deref(), &path, Some(reference.span))?;
        let Some(entries) = root.as_mapping() else {
            self.error(
                "pipeline::wrong-type",
                "a template file must be a mapping",
                root.span,
                format!("found {}", root.kind_name()),
            );
            return None;
        };
        let declared = root.get("parameters");
        let bound = self.bind_parameters(declared, parameters, reference.span, false);
        let body: Vec<(Node, Node)> = entries
            .iter()
            .filter(|(k, _)| k.as_str() != Some("parameters"))
            .cloned()
            .collect();
        let template_scope = Scope {
            parameters: Rc::new(bound),
            variables: scope.variables.clone(),
            locals: Vec::new(),
            // The older mapping form is untyped: an undeclared, unpassed name reads as empty.
            strict_parameters: declared.is_some_and(|d| !crate::parameters::is_legacy(d)),
        };
        let expanded = self.expand(
            &Node {
                value: NodeValue::Mapping(body),
                span: root.span,
            },
            &template_scope,
        );
        if kind != TemplateKind::Extends && expanded.get(kind.key()).is_none() {
            let keys: Vec<&str> = expanded
                .as_mapping()
                .unwrap_or(&[])
                .iter()
                .filter_map(|(k, _)| k.as_str())
                .collect();
            self.error(
                "pipeline::wrong-template-kind",
                format!(
                    "this reference expects a template with `{}`, but `{text}` has {}",
                    kind.key(),
                    if keys.is_empty() {
                        "no content".to_string()
                    } else {
                        format!("`{}`", keys.join("`, `"))
                    }
                ),
                reference.span,
                format!("{} template expected", kind.key().trim_end_matches('s')),
            );
            return None;
        }
        Some(expanded)
    }

    /// Binds provided parameters to declarations: defaults, type checks, `values`, unknown names.
    /// For the entry file (`runtime`), values come from `--param` and are parsed by declared type.
    pub fn bind_parameters(
        &mut self,
        declared: Option<&Node>,
        provided: Option<&Node>,
        at: Span,
        runtime: bool,
    ) -> Vec<(String, Node)> {
        crate::parameters::bind(self, declared, provided, at, runtime)
    }

    /// Finishes the compile: attaches the sources read so far.
    pub fn into_output(self, plan: Option<crate::plan::Plan>) -> CompileOutput {
        let sources = self
            .files
            .into_iter()
            .map(|f| SourceFile {
                name: f.display,
                text: f.text,
            })
            .collect();
        let has_errors = self.diagnostics.iter().any(Diagnostic::is_error);
        CompileOutput {
            plan: if has_errors { None } else { plan },
            diagnostics: self.diagnostics,
            sources,
        }
    }
}

/// Compiles a pipeline (see [`crate::compile`]).
pub fn compile(input: &CompileInput<'_>) -> CompileOutput {
    let mut compiler = Compiler::new(input);
    let entry = input
        .entry
        .trim_start_matches("./")
        .trim_start_matches('/')
        .to_string();
    let Some((_, root)) = compiler.load(None, &entry, None) else {
        return compiler.into_output(None);
    };
    let plan = crate::lower::lower_pipeline(&mut compiler, &root);
    compiler.into_output(plan)
}
