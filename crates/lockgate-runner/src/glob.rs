//! Match patterns as the file tasks use them (minimatch style): `*`, `?`, `[abc]`, `{a,b}`, `**` for any
//! number of folders, `!` to exclude, one pattern per line. Matching is on `/`-separated relative paths and
//! includes dot files. Evaluation is iterative (no recursion a long pattern could exhaust).

use std::path::{Path, PathBuf};

/// A list of include and exclude patterns (one per line; blank lines and `#` comments ignored).
#[derive(Debug, Clone)]
pub struct PatternSet {
    rules: Vec<(bool, Vec<String>)>,
}

impl PatternSet {
    /// Parses patterns; a pattern starting with `!` excludes. Later lines win over earlier ones.
    pub fn new(text: &str) -> Self {
        let mut rules = Vec::new();
        for line in text.lines().flat_map(|line| split_semicolons(line)) {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (include, pattern) = match line.strip_prefix('!') {
                Some(rest) => (false, rest.trim()),
                None => (true, line),
            };
            let pattern = pattern.trim_start_matches("./").replace('\\', "/");
            rules.push((include, expand_braces(&pattern)));
        }
        Self { rules }
    }

    /// True when `path` (relative, `/`-separated) is included by the last matching rule.
    pub fn matches(&self, path: &str) -> bool {
        let has_include = self.rules.iter().any(|(include, _)| *include);
        let mut matched = !has_include;
        for (include, patterns) in &self.rules {
            if patterns.iter().any(|pattern| glob_match(pattern, path)) {
                matched = *include;
            }
        }
        matched
    }
}

fn split_semicolons(line: &str) -> Vec<&str> {
    // Build Artifact tasks accept `a;b`; a literal `;` in a file name is rare enough.
    line.split(';').collect()
}

/// Expands `{a,b}` alternatives (nested and repeated), capped to keep hostile input cheap.
pub fn expand_braces(pattern: &str) -> Vec<String> {
    let mut done = Vec::new();
    let mut pending = vec![pattern.to_string()];
    while let Some(current) = pending.pop() {
        if done.len() + pending.len() > 1024 {
            done.push(current);
            continue;
        }
        let Some(open) = current.find('{') else {
            done.push(current);
            continue;
        };
        let mut depth = 0;
        let mut close = None;
        let mut commas = Vec::new();
        for (index, c) in current[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(open + index);
                        break;
                    }
                }
                ',' if depth == 1 => commas.push(open + index),
                _ => {}
            }
        }
        let Some(close) = close.filter(|_| !commas.is_empty()) else {
            done.push(current);
            continue;
        };
        let mut starts = vec![open + 1];
        starts.extend(commas.iter().map(|c| c + 1));
        let mut ends = commas.clone();
        ends.push(close);
        for (start, end) in starts.into_iter().zip(ends) {
            pending.push(format!(
                "{}{}{}",
                &current[..open],
                &current[start..end],
                &current[close + 1..]
            ));
        }
    }
    done
}

/// Matches a whole `/`-separated path against one pattern (braces already expanded).
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pattern_parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
    let path_parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // reachable[j]: the first i pattern parts can match the first j path parts.
    let mut reachable = vec![false; path_parts.len() + 1];
    reachable[0] = true;
    for part in &pattern_parts {
        let mut next = vec![false; path_parts.len() + 1];
        if *part == "**" {
            let mut any = false;
            for j in 0..=path_parts.len() {
                any |= reachable[j];
                next[j] = any;
            }
        } else {
            for j in 0..path_parts.len() {
                if reachable[j] && segment_match(part, path_parts[j]) {
                    next[j + 1] = true;
                }
            }
        }
        reachable = next;
    }
    reachable[path_parts.len()]
}

/// Matches one path segment: `*`, `?`, `[set]`, `[!set]`.
fn segment_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, len)) = class_match(&p[pi..], t[ti])
                        && matched
                    {
                        pi += len;
                        ti += 1;
                        continue;
                    } else if class_match(&p[pi..], t[ti]).is_none() && t[ti] == '[' {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                c if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((star_pi, star_ti)) => {
                pi = star_pi + 1;
                ti = star_ti + 1;
                star = Some((star_pi, star_ti + 1));
            }
            None => return false,
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Matches a `[...]` class at the start of `p`; returns (matched, length of the class) or None if unclosed.
fn class_match(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(1), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

/// Every file under `root` (relative `/`-separated path, absolute path), sorted, without following
/// symlinked folders.
pub fn list_files(root: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(root).unwrap_or(&path);
                let relative = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                files.push((relative, path));
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_globstars() {
        assert!(glob_match("**", "a/b/c.txt"));
        assert!(glob_match("**/*.txt", "c.txt"));
        assert!(glob_match("**/*.txt", "a/b/c.txt"));
        assert!(!glob_match("*.txt", "a/c.txt"));
        assert!(glob_match("a/**/c.txt", "a/c.txt"));
        assert!(glob_match("**/bin/**", "src/bin/x/y"));
        assert!(glob_match("file?.[ch]", "file1.c"));
        assert!(!glob_match("file?.[!ch]", "file1.c"));
        assert!(glob_match("[a-c]*", "beta"));
    }

    #[test]
    fn braces_and_negation() {
        let set = PatternSet::new("**/*.{dll,exe}\n!**/obj/**\n");
        assert!(set.matches("bin/app.exe"));
        assert!(set.matches("bin/lib.dll"));
        assert!(!set.matches("obj/app.exe"));
        assert!(!set.matches("bin/readme.md"));
        assert!(PatternSet::new("!*.log").matches("keep.txt"));
    }

    #[test]
    fn hostile_patterns_stay_cheap() {
        let pattern = "*a".repeat(200);
        assert!(!glob_match(&pattern, &"a".repeat(150)));
        assert!(expand_braces(&"{a,b}".repeat(30)).len() <= 2048);
    }
}
