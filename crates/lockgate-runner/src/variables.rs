//! The variables of a running job: case-insensitive names, secret and read-only flags, the environment a
//! step sees (names upper-cased with `.` and space turned into `_`; secrets never exported), and macro
//! `$(name)` expansion (unknown names stay as written, values are not expanded again).

use std::collections::BTreeMap;

/// One variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The name as first written (case kept for display and for `VSTS_PUBLIC_VARIABLES`).
    pub name: String,
    pub value: String,
    pub secret: bool,
    pub readonly: bool,
}

/// Why a variable could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VariableError {
    #[error("variable `{0}` is read-only and was not changed")]
    ReadOnly(String),
    #[error("`{0}` is not a valid variable name")]
    InvalidName(String),
}

/// Variables by case-insensitive name.
#[derive(Debug, Clone, Default)]
pub struct VariableStore {
    entries: BTreeMap<String, Variable>,
}

impl VariableStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a variable, refusing to change a read-only one.
    pub fn set(
        &mut self,
        name: &str,
        value: impl Into<String>,
        secret: bool,
        readonly: bool,
    ) -> Result<(), VariableError> {
        let name = name.trim();
        if name.is_empty() || name.chars().any(|c| c.is_control()) {
            return Err(VariableError::InvalidName(name.to_string()));
        }
        let key = name.to_ascii_lowercase();
        if let Some(existing) = self.entries.get(&key)
            && existing.readonly
        {
            return Err(VariableError::ReadOnly(existing.name.clone()));
        }
        let display = self
            .entries
            .get(&key)
            .map_or_else(|| name.to_string(), |existing| existing.name.clone());
        let secret = secret
            || self
                .entries
                .get(&key)
                .is_some_and(|existing| existing.secret);
        self.entries.insert(
            key,
            Variable {
                name: display,
                value: value.into(),
                secret,
                readonly,
            },
        );
        Ok(())
    }

    /// Sets a variable even when it is read-only (the runner's own predefined variables).
    pub fn set_system(&mut self, name: &str, value: impl Into<String>) {
        let key = name.to_ascii_lowercase();
        self.entries.insert(
            key,
            Variable {
                name: name.to_string(),
                value: value.into(),
                secret: false,
                readonly: true,
            },
        );
    }

    pub fn get(&self, name: &str) -> Option<&Variable> {
        self.entries.get(&name.trim().to_ascii_lowercase())
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).map(|variable| variable.value.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Variable> {
        self.entries.values()
    }

    /// Environment entries for every non-secret variable.
    pub fn environment(&self) -> Vec<(String, String)> {
        self.entries
            .values()
            .filter(|variable| !variable.secret)
            .map(|variable| (env_name(&variable.name), variable.value.clone()))
            .collect()
    }

    /// Expands `$(name)` macros with the values of known variables. Unknown names stay as written.
    pub fn expand(&self, text: &str) -> String {
        expand_macros(text, |name| self.value(name).map(str::to_string))
    }

    /// Expands macros inside the variables' own values against every other variable (pipeline, stage,
    /// job and predefined alike), as the agent does when a job starts: `PIP_CACHE_DIR:
    /// $(Pipeline.Workspace)/.pip` becomes the real path. Uses lockgate-expr's recursive expansion:
    /// unknown names stay as written, a value in a cycle stays unexpanded. Returns the names whose
    /// values changed.
    pub fn expand_values(&mut self) -> Vec<String> {
        let pairs: Vec<(String, String)> = self
            .entries
            .values()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect();
        let mut changed = Vec::new();
        for expanded in lockgate_expr::expand_variables(&pairs) {
            let key = expanded.name.to_ascii_lowercase();
            if let Some(variable) = self.entries.get_mut(&key)
                && variable.value != expanded.value
            {
                variable.value = expanded.value;
                changed.push(variable.name.clone());
            }
        }
        changed
    }
}

/// The environment-variable form of a variable name: upper case, `.` and space become `_`.
pub fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '.' | ' ' => '_',
            other => other.to_ascii_uppercase(),
        })
        .collect()
}

/// Replaces `$(name)` by `lookup(name)` where it returns a value; leaves the rest untouched. Names are
/// letters, digits, `_`, `.`, `-` and spaces (as the agent accepts); replaced text is not rescanned.
pub fn expand_macros(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    if !text.contains("$(") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = &after[..end];
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | ' '));
        match valid.then(|| lookup(name)).flatten() {
            Some(value) => out.push_str(&value),
            None => out.push_str(&rest[start..start + 2 + end + 1]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive_and_keep_their_first_spelling() {
        let mut store = VariableStore::new();
        store.set("Build.Config", "debug", false, false).unwrap();
        store.set("build.config", "release", false, false).unwrap();
        assert_eq!(store.value("BUILD.CONFIG"), Some("release"));
        assert_eq!(store.get("build.config").unwrap().name, "Build.Config");
    }

    #[test]
    fn readonly_variables_refuse_changes() {
        let mut store = VariableStore::new();
        store.set("locked", "1", false, true).unwrap();
        assert_eq!(
            store.set("LOCKED", "2", false, false),
            Err(VariableError::ReadOnly("locked".into()))
        );
        assert_eq!(store.value("locked"), Some("1"));
    }

    #[test]
    fn environment_skips_secrets_and_formats_names() {
        let mut store = VariableStore::new();
        store.set("Build.Source Dir", "/src", false, false).unwrap();
        store.set("token", "s3cret", true, false).unwrap();
        let env = store.environment();
        assert_eq!(
            env,
            vec![("BUILD_SOURCE_DIR".to_string(), "/src".to_string())]
        );
        // Once secret, always secret.
        store.set("token", "other", false, false).unwrap();
        assert!(store.get("token").unwrap().secret);
    }

    #[test]
    fn values_expand_references_to_other_variables() {
        let mut store = VariableStore::new();
        store.set_system("Pipeline.Workspace", "/w/1");
        store
            .set("PIP_CACHE_DIR", "$(pipeline.workspace)/.pip", false, false)
            .unwrap();
        store
            .set("wheel_dir", "$(PIP_CACHE_DIR)/wheels", false, false)
            .unwrap();
        store
            .set("keep", "$(not.defined) and $(keep)", false, false)
            .unwrap();
        store.set("ping", "$(pong)", false, false).unwrap();
        store.set("pong", "$(ping)", false, false).unwrap();
        store.expand_values();
        assert_eq!(store.value("pip_cache_dir"), Some("/w/1/.pip"));
        assert_eq!(store.value("wheel_dir"), Some("/w/1/.pip/wheels"));
        assert_eq!(store.value("keep"), Some("$(not.defined) and $(keep)"));
        // A value in a cycle stays as written.
        assert_eq!(store.value("ping"), Some("$(pong)"));
        assert_eq!(
            store
                .environment()
                .iter()
                .find(|(n, _)| n == "PIP_CACHE_DIR")
                .map(|(_, v)| v.as_str()),
            Some("/w/1/.pip")
        );
    }

    #[test]
    fn macros_expand_known_names_only_and_once() {
        let mut store = VariableStore::new();
        store.set("a", "$(b)", false, false).unwrap();
        store.set("b", "B", false, false).unwrap();
        assert_eq!(
            store.expand("x $(a) $(B) $(missing) $(bad!) $(unclosed"),
            "x $(b) B $(missing) $(bad!) $(unclosed"
        );
    }
}
