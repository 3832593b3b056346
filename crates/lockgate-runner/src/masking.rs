//! Secret masking: every registered secret value, and its common encodings (base64, URL, JSON, XML),
//! is replaced by `***` in every line before the line leaves the runner. Overlapping matches merge into
//! one `***`, as the agent does; substrings of a secret are never masked (docs: logging-commands).

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

/// The mask written in place of a secret.
pub const MASK: &str = "***";

/// A shared, growable set of secret values. Cloning shares the set (steps add secrets while running).
#[derive(Debug, Clone, Default)]
pub struct SecretMasker {
    values: Arc<RwLock<Vec<String>>>,
}

impl SecretMasker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a secret value and its encodings. Blank values are ignored (masking them would
    /// erase every line). A multi-line secret also registers each of its non-blank lines.
    pub fn add(&self, value: &str) {
        let mut candidates = vec![value.to_string()];
        if value.contains('\n') {
            candidates.extend(
                value
                    .lines()
                    .map(|line| line.trim_end_matches('\r').to_string()),
            );
        }
        candidates.retain(|candidate| !candidate.trim().is_empty());
        let mut encoded = Vec::new();
        for candidate in &candidates {
            encoded.push(
                base64(candidate.as_bytes())
                    .trim_end_matches('=')
                    .to_string(),
            );
            encoded.push(uri_data_escape(candidate));
            encoded.push(json_escape(candidate));
            encoded.push(xml_escape(candidate));
        }
        candidates.extend(encoded);
        let Ok(mut values) = self.values.write() else {
            return;
        };
        for candidate in candidates {
            if candidate.trim().is_empty() || values.contains(&candidate) {
                continue;
            }
            values.push(candidate);
        }
        // Longest first so that merged ranges are found with the fewest passes.
        values.sort_by_key(|value| std::cmp::Reverse(value.len()));
    }

    /// The length in bytes of the longest registered value (0 when none).
    pub fn longest(&self) -> usize {
        self.values
            .read()
            .map(|values| values.first().map_or(0, String::len))
            .unwrap_or(0)
    }

    /// True when no secret is registered (lets hot paths skip masking).
    pub fn is_empty(&self) -> bool {
        self.values
            .read()
            .map(|values| values.is_empty())
            .unwrap_or(true)
    }

    /// Replaces every occurrence of every secret in `line` by `***`.
    pub fn mask<'a>(&self, line: &'a str) -> Cow<'a, str> {
        let Ok(values) = self.values.read() else {
            return Cow::Owned(MASK.to_string());
        };
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        for value in values.iter() {
            for (start, found) in line.match_indices(value.as_str()) {
                ranges.push((start, start + found.len()));
            }
        }
        if ranges.is_empty() {
            return Cow::Borrowed(line);
        }
        ranges.sort_unstable();
        let mut out = String::with_capacity(line.len());
        let mut cursor = 0;
        let mut index = 0;
        while index < ranges.len() {
            let (start, mut end) = ranges[index];
            index += 1;
            while index < ranges.len() && ranges[index].0 <= end {
                end = end.max(ranges[index].1);
                index += 1;
            }
            if start >= cursor {
                out.push_str(&line[cursor..start]);
                out.push_str(MASK);
                cursor = end;
            } else if end > cursor {
                cursor = end;
            }
        }
        out.push_str(&line[cursor..]);
        Cow::Owned(out)
    }
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn uri_data_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn json_escape(text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap_or_default();
    quoted
        .get(1..quoted.len().saturating_sub(1))
        .unwrap_or_default()
        .to_string()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence() {
        let masker = SecretMasker::new();
        masker.add("hunter2");
        assert_eq!(
            masker.mask("pw=hunter2, again hunter2"),
            "pw=***, again ***"
        );
        assert_eq!(masker.mask("hunter is fine"), "hunter is fine");
    }

    #[test]
    fn overlapping_secrets_merge() {
        let masker = SecretMasker::new();
        masker.add("abcd");
        masker.add("cdef");
        assert_eq!(masker.mask("xabcdefx"), "x***x");
    }

    #[test]
    fn encodings_are_masked() {
        let masker = SecretMasker::new();
        masker.add("p@ss word\"");
        // The `=` padding is not secret and may stay.
        assert_eq!(masker.mask(&base64(b"p@ss word\"")), "***==");
        assert_eq!(masker.mask("u=p%40ss%20word%22"), "u=***");
        assert_eq!(masker.mask(r#"{"pw":"p@ss word\""}"#), r#"{"pw":"***"}"#);
    }

    #[test]
    fn blank_values_are_ignored_and_multiline_secrets_mask_each_line() {
        let masker = SecretMasker::new();
        masker.add("  ");
        assert!(masker.is_empty());
        masker.add("line-one\nline-two");
        assert_eq!(masker.mask("got line-two"), "got ***");
    }

    #[test]
    fn base64_matches_known_values() {
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
