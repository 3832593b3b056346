//! Diagnostics: a stable code, a lowercase message, a primary span with a label, and help; plus the
//! plain-text renderer with a source snippet that the CLI prints (the server sends the JSON form).

use serde::{Deserialize, Serialize};

/// How bad a diagnostic is. Any error means there is no plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    Error,
    Warning,
}

/// A range of a source file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpan {
    /// The file as shown to users (see [`crate::plan::Location::file`]).
    pub file: String,
    /// 1-based line of the start.
    pub line: u32,
    /// 1-based column (characters) of the start.
    pub column: u32,
    /// Byte offset of the start.
    pub start: usize,
    /// Byte offset of the end (exclusive).
    pub end: usize,
}

/// One problem found in a pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostic {
    /// Stable code such as `pipeline::unknown-key`.
    pub code: String,
    pub severity: Severity,
    /// Lowercase message.
    pub message: String,
    /// The primary span; None only for problems not tied to a file (such as a bad `--param`).
    pub span: Option<SourceSpan>,
    /// What the span points at.
    pub label: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &str, message: impl Into<String>, span: Option<SourceSpan>) -> Diagnostic {
        Diagnostic {
            code: code.to_string(),
            severity: Severity::Error,
            message: message.into(),
            span,
            label: String::new(),
            help: None,
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = label.into();
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// A source file the compiler read, kept so that diagnostics can be rendered with snippets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

/// Renders diagnostics as plain text: `error[code]: message`, ` --> file:line:col`, the source
/// line with a caret underline and the label, then help.
pub fn render(diagnostics: &[Diagnostic], sources: &[SourceFile]) -> String {
    let mut out = String::new();
    for diagnostic in diagnostics {
        render_one(&mut out, diagnostic, sources);
        out.push('\n');
    }
    out
}

fn render_one(out: &mut String, diagnostic: &Diagnostic, sources: &[SourceFile]) {
    let severity = match diagnostic.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    out.push_str(&format!(
        "{severity}[{}]: {}\n",
        diagnostic.code, diagnostic.message
    ));
    // The gutter is as wide as the line number, so that `-->`, `|` and `=` line up.
    let pad = " ".repeat(
        diagnostic
            .span
            .as_ref()
            .map_or(1, |s| s.line.to_string().len()),
    );
    if let Some(span) = &diagnostic.span {
        out.push_str(&format!(
            "{pad}--> {}:{}:{}\n",
            span.file, span.line, span.column
        ));
        let text = sources
            .iter()
            .find(|s| s.name == span.file)
            .map(|s| s.text.as_str());
        if let Some(line_text) =
            text.and_then(|t| t.lines().nth(span.line.saturating_sub(1) as usize))
        {
            let line_text = line_text.trim_end_matches('\r');
            let start_col = span.column.saturating_sub(1) as usize;
            let line_chars = line_text.chars().count();
            let span_chars = text
                .and_then(|t| t.get(span.start..span.end.min(t.len())))
                .map(|s| s.lines().next().unwrap_or("").chars().count())
                .unwrap_or(1);
            let width = span_chars.clamp(1, line_chars.saturating_sub(start_col).max(1));
            out.push_str(&format!("{pad} |\n{} | {line_text}\n", span.line));
            let indent: String = line_text
                .chars()
                .take(start_col)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            out.push_str(&format!("{pad} | {indent}{}", "^".repeat(width)));
            if !diagnostic.label.is_empty() {
                out.push(' ');
                out.push_str(&diagnostic.label);
            }
            out.push('\n');
        } else if !diagnostic.label.is_empty() {
            out.push_str(&format!("{pad} = {}\n", diagnostic.label));
        }
    } else if !diagnostic.label.is_empty() {
        out.push_str(&format!("{pad} = {}\n", diagnostic.label));
    }
    if let Some(help) = &diagnostic.help {
        out.push_str(&format!("{pad} = help: {help}\n"));
    }
}
