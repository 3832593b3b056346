//! Parser for the logging commands a step writes to its output: `##vso[area.action k=v;...]data` with the
//! agent's percent escaping, and the formatting commands `##[group]`, `##[error]` and friends.
//!
//! Source: learn.microsoft.com/azure/devops/pipelines/scripts/logging-commands (format and escaping:
//! `;` %3B, CR %0D, LF %0A, `]` %5D, `%` %AZP25); the agent finds `##vso[` anywhere in the line.

use std::collections::BTreeMap;

/// A `##vso[...]` command. Area, action and property names are lower-cased (the agent matches them
/// case-insensitively); property values and data are unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsoCommand {
    pub area: String,
    pub action: String,
    pub properties: BTreeMap<String, String>,
    pub data: String,
}

impl VsoCommand {
    /// A property by lower-case name.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str)
    }

    /// A boolean property (`true`/`false`, case-insensitive); absent or anything else is `false`.
    pub fn flag(&self, name: &str) -> bool {
        self.property(name)
            .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
    }
}

/// The formatting commands a log viewer renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatKind {
    Group,
    EndGroup,
    Section,
    Warning,
    Error,
    Debug,
    Command,
}

/// What one output line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputLine<'a> {
    Plain(&'a str),
    Vso(VsoCommand),
    Format(FormatKind, &'a str),
    /// A line that starts like a command but cannot be parsed; the agent logs it as it is.
    Malformed {
        line: &'a str,
        reason: String,
    },
}

const VSO_PREFIX: &str = "##vso[";

/// Classifies one line of step output.
pub fn parse_line(line: &str) -> OutputLine<'_> {
    // Nearly every line has no `#` at all; a single byte scan settles those.
    if !line.contains('#') {
        return OutputLine::Plain(line);
    }
    if let Some(start) = line.find(VSO_PREFIX) {
        return match parse_vso(&line[start + VSO_PREFIX.len()..]) {
            Ok(command) => OutputLine::Vso(command),
            Err(reason) => OutputLine::Malformed { line, reason },
        };
    }
    let trimmed = line.trim_start();
    if let Some(rest) = trimmed.strip_prefix("##[")
        && let Some(end) = rest.find(']')
    {
        let kind = match rest[..end].to_ascii_lowercase().as_str() {
            "group" => Some(FormatKind::Group),
            "endgroup" => Some(FormatKind::EndGroup),
            "section" => Some(FormatKind::Section),
            "warning" => Some(FormatKind::Warning),
            "error" => Some(FormatKind::Error),
            "debug" => Some(FormatKind::Debug),
            "command" => Some(FormatKind::Command),
            _ => None,
        };
        if let Some(kind) = kind {
            return OutputLine::Format(kind, &rest[end + 1..]);
        }
    }
    OutputLine::Plain(line)
}

fn parse_vso(rest: &str) -> Result<VsoCommand, String> {
    let end = rest
        .find(']')
        .ok_or_else(|| "missing `]` after the command".to_string())?;
    let head = &rest[..end];
    let data = unescape(&rest[end + 1..]);
    let (name, props) = match head.find(char::is_whitespace) {
        Some(space) => (&head[..space], &head[space + 1..]),
        None => (head, ""),
    };
    let (area, action) = name
        .split_once('.')
        .ok_or_else(|| format!("`{name}` is not `area.action`"))?;
    if area.is_empty() || action.is_empty() {
        return Err(format!("`{name}` is not `area.action`"));
    }
    let mut properties = BTreeMap::new();
    for pair in props.split(';') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        match pair.split_once('=') {
            Some((key, value)) => {
                properties.insert(key.trim().to_ascii_lowercase(), unescape(value));
            }
            None => {
                properties.insert(pair.to_ascii_lowercase(), String::new());
            }
        }
    }
    Ok(VsoCommand {
        area: area.to_ascii_lowercase(),
        action: action.to_ascii_lowercase(),
        properties,
        data,
    })
}

/// Reverses the documented escaping. `%AZP25` is decoded last so that `%AZP253B` stays `%3B`.
pub fn unescape(text: &str) -> String {
    if !text.contains('%') {
        return text.to_string();
    }
    text.replace("%3B", ";")
        .replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%5D", "]")
        .replace("%AZP25", "%")
}

/// Applies the documented escaping (used by built-in tasks that emit commands, and by tests).
pub fn escape(text: &str) -> String {
    text.replace('%', "%AZP25")
        .replace(';', "%3B")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
        .replace(']', "%5D")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setvariable_with_properties_and_escaped_data() {
        let OutputLine::Vso(cmd) = parse_line(
            "##vso[task.setvariable variable=x;isOutput=true;isSecret=False]a%3Bb%0Ac%5D%AZP25",
        ) else {
            panic!("not a command")
        };
        assert_eq!(cmd.area, "task");
        assert_eq!(cmd.action, "setvariable");
        assert_eq!(cmd.property("variable"), Some("x"));
        assert!(cmd.flag("isoutput"));
        assert!(!cmd.flag("issecret"));
        assert_eq!(cmd.data, "a;b\nc]%");
    }

    #[test]
    fn command_may_follow_other_text_and_have_no_properties() {
        let OutputLine::Vso(cmd) = parse_line("+ echo ##vso[Build.AddBuildTag]nightly") else {
            panic!()
        };
        assert_eq!(
            (cmd.area.as_str(), cmd.action.as_str(), cmd.data.as_str()),
            ("build", "addbuildtag", "nightly")
        );
        assert!(cmd.properties.is_empty());
    }

    #[test]
    fn escaped_percent_is_decoded_last() {
        assert_eq!(unescape("%AZP253B"), "%3B");
        assert_eq!(unescape(&escape("50%; done]\r\n")), "50%; done]\r\n");
    }

    #[test]
    fn formatting_commands() {
        assert_eq!(
            parse_line("##[group]Build"),
            OutputLine::Format(FormatKind::Group, "Build")
        );
        assert_eq!(
            parse_line("  ##[endgroup]"),
            OutputLine::Format(FormatKind::EndGroup, "")
        );
        assert_eq!(
            parse_line("##[ERROR]bad"),
            OutputLine::Format(FormatKind::Error, "bad")
        );
        assert_eq!(
            parse_line("##[unknown]x"),
            OutputLine::Plain("##[unknown]x")
        );
        assert_eq!(parse_line("plain text"), OutputLine::Plain("plain text"));
    }

    #[test]
    fn malformed_commands_are_reported() {
        assert!(matches!(
            parse_line("##vso[task.setvariable variable=x"),
            OutputLine::Malformed { .. }
        ));
        assert!(matches!(
            parse_line("##vso[nodot]x"),
            OutputLine::Malformed { .. }
        ));
    }
}
