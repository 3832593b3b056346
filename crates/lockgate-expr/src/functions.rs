//! Helpers behind the string and collection functions: `format` (.NET composite formatting with date/time
//! specifiers), `join`, `split` and `convertToJson`.

use crate::value::{Value, format_number};

/// The largest string `format`, `join` and `replace` may build (the legacy engine also bounds result memory), so
/// that a few placeholders over a large variable cannot exhaust memory.
pub const MAX_RESULT_BYTES: usize = 10 * 1024 * 1024;

fn too_large(function: &str) -> String {
    format!("{function}() would produce more than {MAX_RESULT_BYTES} bytes")
}

/// A piece of a parsed `format` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FormatSegment {
    /// Literal text (with `{{` / `}}` already unescaped).
    Text(String),
    /// `{index}` or `{index:specifiers}`.
    Argument {
        /// Which argument after the pattern (0-based).
        index: usize,
        /// The specifiers after `:` (empty when there are none).
        specifiers: String,
    },
}

/// Parses a `format` pattern as the Azure engine reads it: `{N}` or `{N:specifiers}` with N a number below 256,
/// `{{` and `}}` for literal braces; anything else with a brace (alignment `{0,5}` included) is an invalid format
/// string. `argument_count` is how many arguments follow the pattern.
pub(crate) fn parse_format(
    pattern: &str,
    argument_count: usize,
) -> Result<Vec<FormatSegment>, String> {
    let invalid = || format!("format(): the format string '{pattern}' is invalid");
    let mut segments = Vec::new();
    let mut text = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '}' => return Err(invalid()),
            '{' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    digits.push(d);
                    chars.next();
                }
                let index: u8 = digits.parse().map_err(|_| invalid())?;
                let mut specifiers = String::new();
                match chars.next() {
                    Some('}') => {}
                    Some(':') => loop {
                        match chars.next() {
                            None => return Err(invalid()),
                            Some('}') if chars.peek() == Some(&'}') => {
                                chars.next();
                                specifiers.push('}');
                            }
                            Some('}') => break,
                            Some(other) => specifiers.push(other),
                        }
                    },
                    _ => return Err(invalid()),
                }
                if usize::from(index) >= argument_count {
                    return Err(format!(
                        "format(): the format string '{pattern}' refers to argument {{{index}}} but only {argument_count} \
                         followed it"
                    ));
                }
                if !text.is_empty() {
                    segments.push(FormatSegment::Text(std::mem::take(&mut text)));
                }
                segments.push(FormatSegment::Argument {
                    index: usize::from(index),
                    specifiers,
                });
            }
            other => text.push(other),
        }
    }
    if !text.is_empty() {
        segments.push(FormatSegment::Text(text));
    }
    Ok(segments)
}

/// Renders parsed `format` segments. `arguments[i]` is the value of argument `i` when the pattern uses it. An
/// argument is cast to a string (an array or object cannot be); specifiers are allowed only on a date-time (a
/// string in date-time form, as `pipeline.startTime` is).
pub(crate) fn render_format(
    segments: &[FormatSegment],
    arguments: &[Option<&Value>],
) -> Result<String, String> {
    let mut out = String::new();
    for segment in segments {
        let piece = match segment {
            FormatSegment::Text(text) => std::borrow::Cow::Borrowed(text.as_str()),
            FormatSegment::Argument { index, specifiers } => {
                let value = arguments
                    .get(*index)
                    .copied()
                    .flatten()
                    .unwrap_or(&Value::Null);
                if specifiers.is_empty() {
                    value.convert_to_string().ok_or_else(|| {
                        format!(
                            "format(): cannot convert {} to a string",
                            crate::eval::describe(value)
                        )
                    })?
                } else {
                    let date = value.as_str().and_then(parse_date_time).ok_or_else(|| {
                        format!(
                            "format(): the specifiers '{specifiers}' apply only to a date-time, not to {}",
                            crate::eval::describe(value)
                        )
                    })?;
                    std::borrow::Cow::Owned(format_date_time(&date, specifiers)?)
                }
            }
        };
        if out.len() + piece.len() > MAX_RESULT_BYTES {
            return Err(too_large("format"));
        }
        out.push_str(&piece);
    }
    Ok(out)
}

/// A value as `format` and `join` put it into text: the string cast, and '' for arrays and objects.
fn format_plain(value: &Value) -> String {
    value
        .convert_to_string()
        .map(|s| s.into_owned())
        .unwrap_or_default()
}

/// `join(separator, value)`: array items cast to strings (arrays and objects inside become ''); any other value is
/// cast to a string on its own.
pub fn join(separator: &str, value: &Value) -> Result<String, String> {
    match value {
        Value::Array(items) => {
            let mut out = String::new();
            for (i, item) in items.iter().enumerate() {
                let text = format_plain(item);
                if out.len() + separator.len() + text.len() > MAX_RESULT_BYTES {
                    return Err(too_large("join"));
                }
                if i > 0 {
                    out.push_str(separator);
                }
                out.push_str(&text);
            }
            Ok(out)
        }
        other => Ok(format_plain(other)),
    }
}

/// `replace(text, old, new)`: every occurrence of `old` (ordinal, case-sensitive) replaced by `new`; an empty
/// `old` leaves the text as it is.
pub fn replace(text: &str, old: &str, new: &str) -> Result<String, String> {
    if old.is_empty() {
        return Ok(text.to_string());
    }
    let count = text.matches(old).count();
    let size = (text.len() - count * old.len()).saturating_add(count.saturating_mul(new.len()));
    if size > MAX_RESULT_BYTES {
        return Err(too_large("replace"));
    }
    Ok(text.replace(old, new))
}

/// `split(text, delimiters)`: every character of `delimiters` separates; empty pieces (consecutive or trailing
/// delimiters) are kept. An empty delimiter string leaves the text whole.
pub fn split(text: &str, delimiters: &str) -> Value {
    if delimiters.is_empty() {
        return Value::Array(vec![Value::String(text.to_string())]);
    }
    Value::Array(
        text.split(|c| delimiters.contains(c))
            .map(|piece| Value::String(piece.to_string()))
            .collect(),
    )
}

/// Serialises a value as JSON; `pretty` indents by two spaces as `convertToJson` does. Versions become strings.
pub fn to_json(value: &Value, pretty: bool) -> String {
    let mut out = String::new();
    write_json(&mut out, value, pretty, 0);
    out
}

fn write_json(out: &mut String, value: &Value, pretty: bool, indent: usize) {
    let newline = |out: &mut String, level: usize| {
        if pretty {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', level * 2));
        }
    };
    match value {
        Value::Null => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) if n.is_finite() => out.push_str(&format_number(*n)),
        Value::Number(_) => out.push_str("null"),
        Value::String(s) => write_json_string(out, s),
        Value::Version(v) => write_json_string(out, &v.to_string()),
        Value::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent + 1);
                write_json(out, item, pretty, indent + 1);
            }
            newline(out, indent);
            out.push(']');
        }
        Value::Object(object) => {
            if object.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push('{');
            for (i, (key, item)) in object.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent + 1);
                write_json_string(out, key);
                out.push_str(if pretty { ": " } else { ":" });
                write_json(out, item, pretty, indent + 1);
            }
            newline(out, indent);
            out.push('}');
        }
    }
}

fn write_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A date and time read from text such as `2024-05-06T07:08:09.123+02:00` or `2024-05-06 07:08:09`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DateTime {
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// Fraction of a second in 100-nanosecond ticks (seven digits, as .NET).
    ticks: u32,
    /// Offset from UTC in minutes, when the text gives one.
    offset_minutes: Option<i32>,
}

fn digits(text: &str, at: usize, count: usize) -> Option<u32> {
    let part = text.get(at..at + count)?;
    if !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

pub(crate) fn parse_date_time(text: &str) -> Option<DateTime> {
    let text = text.trim();
    let year = digits(text, 0, 4)?;
    if text.get(4..5)? != "-" || text.get(7..8)? != "-" {
        return None;
    }
    let month = digits(text, 5, 2)?;
    let day = digits(text, 8, 2)?;
    let mut date = DateTime {
        year,
        month,
        day,
        hour: 0,
        minute: 0,
        second: 0,
        ticks: 0,
        offset_minutes: None,
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let rest = &text[10..];
    if rest.is_empty() {
        return Some(date);
    }
    let rest = rest.strip_prefix('T').or_else(|| rest.strip_prefix(' '))?;
    date.hour = digits(rest, 0, 2)?;
    if rest.get(2..3)? != ":" {
        return None;
    }
    date.minute = digits(rest, 3, 2)?;
    let mut rest = &rest[5..];
    if let Some(after) = rest.strip_prefix(':') {
        date.second = digits(after, 0, 2)?;
        rest = &after[2..];
    }
    if let Some(after) = rest.strip_prefix('.') {
        let count = after.bytes().take_while(u8::is_ascii_digit).count();
        if count == 0 {
            return None;
        }
        let mut fraction: String = after[..count].chars().take(7).collect();
        while fraction.len() < 7 {
            fraction.push('0');
        }
        date.ticks = fraction.parse().ok()?;
        rest = &after[count..];
    }
    if rest == "Z" {
        date.offset_minutes = Some(0);
    } else if !rest.is_empty() {
        let sign = match rest.as_bytes()[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let hours = digits(rest, 1, 2)? as i32;
        let minutes = match &rest[3..] {
            "" => 0,
            tail => digits(tail.strip_prefix(':').unwrap_or(tail), 0, 2)? as i32,
        };
        date.offset_minutes = Some(sign * (hours * 60 + minutes));
    }
    if date.hour > 23 || date.minute > 59 || date.second > 59 {
        return None;
    }
    Some(date)
}

/// Applies date/time specifiers as the Azure engine does: `yyyy`, `yy`, `MM`, `M`, `dd`, `d`, `HH`, `H`, `mm`, `m`,
/// `ss`, `s`, `f` to `fffffff`, `zzz`, `K`, `\x` (a literal character) and spaces; anything else is an error.
pub(crate) fn format_date_time(date: &DateTime, specifiers: &str) -> Result<String, String> {
    let invalid = || format!("format(): '{specifiers}' is not a valid date-time format");
    let chars: Vec<char> = specifiers.chars().collect();
    let offset = date.offset_minutes.unwrap_or(0);
    let sign = if offset < 0 { '-' } else { '+' };
    let (offset_hours, offset_minutes) = (offset.abs() / 60, offset.abs() % 60);
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            let escaped = chars.get(i + 1).ok_or_else(invalid)?;
            out.push(*escaped);
            i += 2;
            continue;
        }
        let run = chars[i..].iter().take_while(|&&x| x == c).count();
        let piece = match (c, run) {
            ('y', 4) => format!("{:04}", date.year),
            ('y', 2) => format!("{:02}", date.year % 100),
            ('M', 2) => format!("{:02}", date.month),
            ('M', 1) => date.month.to_string(),
            ('d', 2) => format!("{:02}", date.day),
            ('d', 1) => date.day.to_string(),
            ('H', 2) => format!("{:02}", date.hour),
            ('H', 1) => date.hour.to_string(),
            ('m', 2) => format!("{:02}", date.minute),
            ('m', 1) => date.minute.to_string(),
            ('s', 2) => format!("{:02}", date.second),
            ('s', 1) => date.second.to_string(),
            ('f', 1..=7) => format!("{:07}", date.ticks)[..run].to_string(),
            ('z', 3) => format!("{sign}{offset_hours:02}:{offset_minutes:02}"),
            ('K', 1) => format!("{sign}{offset_hours:02}:{offset_minutes:02}"),
            (' ', _) => " ".repeat(run),
            _ => return Err(invalid()),
        };
        out.push_str(&piece);
        i += run;
    }
    Ok(out)
}
