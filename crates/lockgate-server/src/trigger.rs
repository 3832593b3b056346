//! CI trigger evaluation: does a pushed ref (with its changed files) start a run of a pipeline, given
//! the plan's `trigger` as written? Semantics from Microsoft's "trigger definition" and "Build Azure
//! Repos Git repositories" pages: no trigger means every branch (tags do not trigger by default);
//! `none` disables CI; a list includes branches; the full form filters branches, tags and paths, where
//! only what is explicitly included triggers and exclusions are removed from that.

use serde_json::Value;

/// What a push changed on one ref.
#[derive(Clone, Debug, PartialEq)]
pub struct PushedRef {
    /// Full ref name: `refs/heads/main`, `refs/tags/v1`.
    pub name: String,
    /// Files changed by the push (for path filters); empty when unknown.
    pub changed_paths: Vec<String>,
}

/// Whether the CI trigger (`trigger` as written; `None` when absent) fires for this pushed ref.
pub fn ci_trigger_fires(trigger: Option<&Value>, pushed: &PushedRef) -> bool {
    let (is_tag, short) = if let Some(tag) = pushed.name.strip_prefix("refs/tags/") {
        (true, tag)
    } else if let Some(branch) = pushed.name.strip_prefix("refs/heads/") {
        (false, branch)
    } else {
        return false;
    };
    let Some(trigger) = trigger else {
        return !is_tag;
    };
    match trigger {
        Value::Null => !is_tag,
        Value::String(text) if text.eq_ignore_ascii_case("none") => false,
        Value::Bool(enabled) => *enabled && !is_tag,
        Value::String(single) => !is_tag && ref_matches(single, short, &pushed.name),
        Value::Array(branches) => {
            !is_tag
                && branches
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|pattern| ref_matches(pattern, short, &pushed.name))
        }
        Value::Object(full) => {
            let filter_key = if is_tag { "tags" } else { "branches" };
            let Some(filter) = full.get(filter_key) else {
                // Full syntax without `branches` (for example only `paths` or `batch`): every branch.
                // Without `tags`: tags do not trigger.
                return !is_tag
                    && !full.contains_key("tags")
                    && paths_match(full.get("paths"), &pushed.changed_paths);
            };
            let (includes, excludes) = include_exclude(filter);
            let included = includes.iter().any(|p| ref_matches(p, short, &pushed.name));
            let excluded = excludes.iter().any(|p| ref_matches(p, short, &pushed.name));
            included
                && !excluded
                && (is_tag || paths_match(full.get("paths"), &pushed.changed_paths))
        }
        _ => false,
    }
}

/// Whether the full-syntax trigger asks for batching (`batch: true`).
pub fn batches(trigger: Option<&Value>) -> bool {
    trigger
        .and_then(|t| t.get("batch"))
        .is_some_and(|b| b.as_bool() == Some(true) || b.as_str() == Some("true"))
}

/// `include`/`exclude` lists of a filter (a bare list is an include list).
fn include_exclude(filter: &Value) -> (Vec<String>, Vec<String>) {
    let list = |value: Option<&Value>| -> Vec<String> {
        match value {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        }
    };
    match filter {
        Value::Object(map) => (list(map.get("include")), list(map.get("exclude"))),
        other => (list(Some(other)), Vec::new()),
    }
}

/// Path filters: with includes, some changed file must be included and not excluded; with only
/// excludes, some changed file must not be excluded. Unknown changes (empty list) pass.
fn paths_match(paths: Option<&Value>, changed: &[String]) -> bool {
    let Some(paths) = paths else { return true };
    if changed.is_empty() {
        return true;
    }
    let (includes, excludes) = include_exclude(paths);
    changed.iter().any(|file| {
        let included = includes.is_empty() || includes.iter().any(|p| path_matches(p, file));
        included && !excludes.iter().any(|p| path_matches(p, file))
    })
}

/// A branch/tag pattern matches the short name or the full ref name (`refs/heads/main`).
fn ref_matches(pattern: &str, short: &str, full: &str) -> bool {
    let pattern = pattern.trim();
    wildcard_matches(pattern, short) || wildcard_matches(pattern, full)
}

/// A path filter matches the file itself or anything under it (`src` matches `src/a.rs`); wildcards allowed.
fn path_matches(pattern: &str, file: &str) -> bool {
    let pattern = pattern.trim().trim_start_matches('/').trim_end_matches('/');
    if pattern.is_empty() {
        return true;
    }
    wildcard_matches(pattern, file)
        || file
            .strip_prefix(pattern)
            .is_some_and(|rest| rest.starts_with('/'))
        || (pattern.contains(['*', '?']) && wildcard_matches(&format!("{pattern}/*"), file))
}

/// `*` matches any run of characters (slashes included), `?` one character; case-sensitive.
pub fn wildcard_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // Iterative matching with one backtrack point: linear memory, no recursion.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn push(name: &str, paths: &[&str]) -> PushedRef {
        PushedRef {
            name: name.into(),
            changed_paths: paths.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn no_trigger_means_every_branch_but_no_tags() {
        assert!(ci_trigger_fires(None, &push("refs/heads/feature/x", &[])));
        assert!(!ci_trigger_fires(None, &push("refs/tags/v1", &[])));
        assert!(!ci_trigger_fires(None, &push("refs/notes/commits", &[])));
    }

    #[test]
    fn none_disables_and_a_list_includes_branches_with_wildcards() {
        assert!(!ci_trigger_fires(
            Some(&json!("none")),
            &push("refs/heads/main", &[])
        ));
        let list = json!(["main", "releases/*"]);
        assert!(ci_trigger_fires(Some(&list), &push("refs/heads/main", &[])));
        assert!(ci_trigger_fires(
            Some(&list),
            &push("refs/heads/releases/1.0", &[])
        ));
        assert!(!ci_trigger_fires(Some(&list), &push("refs/heads/dev", &[])));
        assert!(ci_trigger_fires(
            Some(&json!(["refs/heads/main"])),
            &push("refs/heads/main", &[])
        ));
    }

    #[test]
    fn full_syntax_filters_branches_tags_and_paths() {
        let trigger = json!({
            "batch": true,
            "branches": {"include": ["main", "releases/*"], "exclude": ["releases/old*"]},
            "paths": {"include": ["src"], "exclude": ["src/docs/*"]},
            "tags": {"include": ["v*"], "exclude": ["v0*"]}
        });
        let t = Some(&trigger);
        assert!(ci_trigger_fires(
            t,
            &push("refs/heads/main", &["src/app.rs"])
        ));
        assert!(
            !ci_trigger_fires(t, &push("refs/heads/main", &["README.md"])),
            "outside the included paths"
        );
        assert!(
            !ci_trigger_fires(t, &push("refs/heads/main", &["src/docs/a.md"])),
            "excluded path"
        );
        assert!(ci_trigger_fires(
            t,
            &push("refs/heads/main", &["src/docs/a.md", "src/lib.rs"])
        ));
        assert!(!ci_trigger_fires(
            t,
            &push("refs/heads/releases/old-1", &["src/a"])
        ));
        assert!(ci_trigger_fires(t, &push("refs/tags/v1.2", &[])));
        assert!(!ci_trigger_fires(t, &push("refs/tags/v0.9", &[])));
        assert!(batches(t));
        assert!(!batches(Some(&json!(["main"]))));
    }

    #[test]
    fn exclusions_without_inclusions_trigger_nothing() {
        let trigger = json!({"branches": {"exclude": ["dev"]}});
        assert!(!ci_trigger_fires(
            Some(&trigger),
            &push("refs/heads/main", &[])
        ));
        let only_paths = json!({"paths": {"exclude": ["docs"]}});
        assert!(ci_trigger_fires(
            Some(&only_paths),
            &push("refs/heads/main", &["src/a"])
        ));
        assert!(!ci_trigger_fires(
            Some(&only_paths),
            &push("refs/heads/main", &["docs/a"])
        ));
        assert!(!ci_trigger_fires(
            Some(&only_paths),
            &push("refs/tags/v1", &[])
        ));
    }

    #[test]
    fn wildcards_backtrack_without_blowing_up() {
        assert!(wildcard_matches("a*b*c", "aXbYbZc"));
        assert!(!wildcard_matches("a*b*c", "aXbYbZ"));
        assert!(wildcard_matches("*", ""));
        assert!(wildcard_matches("re?ease", "release"));
        let long = "a".repeat(5000);
        assert!(!wildcard_matches(&format!("{}b", "*a".repeat(50)), &long));
    }
}
