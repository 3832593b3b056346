//! Helpers behind the string and collection functions: `format` (.NET composite formatting with date/time
//! specifiers), `join`, `split` and `convertToJson`.

use crate::value::{Value, format_number};

/// The largest string `format`, `join` and `replace` may build (the legacy engine also bounds result memory), so
/// that a few placeholders over a large variable cannot exhaust memory.
pub const MAX_RESULT_BYTES: usize = 10 * 1024 * 1024;

fn too_large(function: &str) -> String {
    format!("{function}() would produce more than {MAX_RESULT_BYTES} bytes")
}

/// .NET-style composite formatting: `{0}`, `{0,alignment}`, `{0:format}`; `{{` and `}}` are literal braces.
/// A format specifier is applied to a value that reads as a date/time (`pipeline.startTime`); strings and other
/// values ignore it, as .NET strings do.
pub fn format(pattern: &str, args: &[std::borrow::Cow<'_, Value>]) -> Result<String, String> {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.char_indices().peekable();
    while let Some((position, c)) = chars.next() {
        match c {
            '{' if chars.peek().is_some_and(|&(_, n)| n == '{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek().is_some_and(|&(_, n)| n == '}') => {
                chars.next();
                out.push('}');
            }
            '}' => {
                return Err(format!(
                    "format(): unmatched '}}' at position {position} of the format string"
                ));
            }
            '{' => {
                let mut item = String::new();
                let mut closed = false;
                for (_, c) in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    item.push(c);
                }
                if !closed {
                    return Err(format!(
                        "format(): unclosed '{{' at position {position} of the format string"
                    ));
                }
                let (head, specifier) = match item.split_once(':') {
                    Some((head, specifier)) => (head, Some(specifier)),
                    None => (item.as_str(), None),
                };
                let (index, alignment) = match head.split_once(',') {
                    Some((index, alignment)) => (index, Some(alignment)),
                    None => (head, None),
                };
                let index: usize = index
                    .trim()
                    .parse()
                    .map_err(|_| format!("format(): '{{{item}}}' is not a valid placeholder"))?;
                let value = args.get(index).ok_or_else(|| {
                    format!(
                        "format(): placeholder {{{index}}} refers to a missing argument ({} given)",
                        args.len()
                    )
                })?;
                let text = match specifier {
                    Some(specifier) => match value.as_ref() {
                        Value::String(s) => match parse_date_time(s) {
                            Some(date) => format_date_time(&date, specifier)?,
                            None => s.clone(),
                        },
                        other => format_plain(other),
                    },
                    None => format_plain(value),
                };
                if out.len() + text.len() > MAX_RESULT_BYTES {
                    return Err(too_large("format"));
                }
                match alignment {
                    Some(alignment) => {
                        let width: i64 = alignment.trim().parse().map_err(|_| {
                            format!("format(): '{alignment}' is not a valid alignment")
                        })?;
                        let pad = (width.unsigned_abs() as usize)
                            .saturating_sub(text.chars().count())
                            .min(10_000);
                        if width < 0 {
                            out.push_str(&text);
                            out.extend(std::iter::repeat_n(' ', pad));
                        } else {
                            out.extend(std::iter::repeat_n(' ', pad));
                            out.push_str(&text);
                        }
                    }
                    None => out.push_str(&text),
                }
            }
            c => out.push(c),
        }
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

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Day of the week, 0 = Sunday (Sakamoto's method).
fn weekday(year: u32, month: u32, day: u32) -> usize {
    const T: [u32; 12] = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4];
    let y = if month < 3 { year - 1 } else { year };
    ((y + y / 4 - y / 100 + y / 400 + T[(month - 1) as usize] + day) % 7) as usize
}

const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Applies .NET custom date/time specifiers (`yyyy`, `MM`, `dd`, `HH`, `mm`, `ss`, `fff`, `tt`, `zzz`, quoted
/// literals, `\` escapes) to a date.
pub(crate) fn format_date_time(date: &DateTime, specifier: &str) -> Result<String, String> {
    let chars: Vec<char> = specifier.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let run = chars[i..].iter().take_while(|&&x| x == c).count();
        match c {
            'y' => {
                match run {
                    1 => out.push_str(&(date.year % 100).to_string()),
                    2 => out.push_str(&format!("{:02}", date.year % 100)),
                    n => out.push_str(&format!("{:0width$}", date.year, width = n)),
                }
                i += run;
            }
            'M' => {
                match run {
                    1 => out.push_str(&date.month.to_string()),
                    2 => out.push_str(&format!("{:02}", date.month)),
                    3 => out.push_str(&MONTHS[(date.month - 1) as usize][..3]),
                    _ => out.push_str(MONTHS[(date.month - 1) as usize]),
                }
                i += run;
            }
            'd' => {
                match run {
                    1 => out.push_str(&date.day.to_string()),
                    2 => out.push_str(&format!("{:02}", date.day)),
                    3 => out.push_str(&DAYS[weekday(date.year, date.month, date.day)][..3]),
                    _ => out.push_str(DAYS[weekday(date.year, date.month, date.day)]),
                }
                i += run;
            }
            'H' | 'h' | 'm' | 's' => {
                let value = match c {
                    'H' => date.hour,
                    'h' => match date.hour % 12 {
                        0 => 12,
                        h => h,
                    },
                    'm' => date.minute,
                    _ => date.second,
                };
                if run == 1 {
                    out.push_str(&value.to_string());
                } else {
                    out.push_str(&format!("{value:02}"));
                }
                i += run.min(2);
            }
            'f' | 'F' => {
                if run > 7 {
                    return Err(format!(
                        "format(): '{specifier}' has more than seven fraction digits"
                    ));
                }
                let fraction = format!("{:07}", date.ticks);
                let mut part = fraction[..run].to_string();
                if c == 'F' {
                    part = part.trim_end_matches('0').to_string();
                }
                out.push_str(&part);
                i += run;
            }
            't' => {
                let designator = if date.hour < 12 { "AM" } else { "PM" };
                out.push_str(if run == 1 {
                    &designator[..1]
                } else {
                    designator
                });
                i += run.min(2);
            }
            'z' => {
                let offset = date.offset_minutes.unwrap_or(0);
                let sign = if offset < 0 { '-' } else { '+' };
                let (hours, minutes) = (offset.abs() / 60, offset.abs() % 60);
                match run {
                    1 => out.push_str(&format!("{sign}{hours}")),
                    2 => out.push_str(&format!("{sign}{hours:02}")),
                    _ => out.push_str(&format!("{sign}{hours:02}:{minutes:02}")),
                }
                i += run.min(3);
            }
            '\'' | '"' => {
                let Some(end) = chars[i + 1..].iter().position(|&x| x == c) else {
                    return Err(format!(
                        "format(): unclosed quote in the date format '{specifier}'"
                    ));
                };
                out.extend(&chars[i + 1..i + 1 + end]);
                i += end + 2;
            }
            '\\' => {
                if let Some(next) = chars.get(i + 1) {
                    out.push(*next);
                }
                i += 2;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    Ok(out)
}
