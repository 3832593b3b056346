//! The evaluation context: a trait through which callers supply named values lazily, job status, `counter` state
//! and extra functions, and [`MapContext`], a ready-made context backed by maps for tests and simple callers.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;

use crate::value::{NameMap, Object, Value, eq_ignore_case, fold_case, with_folded};

/// One step of the path that follows a named value, handed to [`Context::lookup`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PathKey<'a> {
    /// `.name`
    Property(&'a str),
    /// `[value]` with the index already evaluated.
    Index(&'a Value),
    /// `.*` / `[*]`
    Wildcard,
}

impl PathKey<'_> {
    /// The key as a string, if it is a property or an index that casts to a string.
    pub fn as_key(&self) -> Option<Cow<'_, str>> {
        match self {
            PathKey::Property(name) => Some(Cow::Borrowed(name)),
            PathKey::Index(value) => value.convert_to_string(),
            PathKey::Wildcard => None,
        }
    }
}

/// What [`Context::lookup`] found: a value, and how many leading path steps it already applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved<'c> {
    /// The value of the named value after `consumed` path steps.
    pub value: Cow<'c, Value>,
    /// How many path steps `value` already reflects; the evaluator applies the rest.
    pub consumed: usize,
}

impl<'c> Resolved<'c> {
    /// The whole named value (no path step applied).
    pub fn whole(value: Cow<'c, Value>) -> Resolved<'c> {
        Resolved { value, consumed: 0 }
    }

    /// Null with the whole path consumed (a miss).
    pub fn missing(path_len: usize) -> Resolved<'c> {
        Resolved {
            value: Cow::Owned(Value::Null),
            consumed: path_len,
        }
    }
}

/// The result of a job, stage or step, as Azure Pipelines names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskResult {
    /// Succeeded.
    Succeeded,
    /// Succeeded with warnings ("partially succeeded").
    SucceededWithIssues,
    /// Failed.
    Failed,
    /// Canceled.
    Canceled,
    /// Skipped (its condition was false).
    Skipped,
}

impl TaskResult {
    /// Parses a result name ignoring case (`Succeeded`, `succeededwithissues`, ...).
    pub fn parse(text: &str) -> Option<TaskResult> {
        [
            TaskResult::Succeeded,
            TaskResult::SucceededWithIssues,
            TaskResult::Failed,
            TaskResult::Canceled,
            TaskResult::Skipped,
        ]
        .into_iter()
        .find(|r| eq_ignore_case(r.as_str(), text.trim()))
    }

    /// The name as Azure Pipelines writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskResult::Succeeded => "Succeeded",
            TaskResult::SucceededWithIssues => "SucceededWithIssues",
            TaskResult::Failed => "Failed",
            TaskResult::Canceled => "Canceled",
            TaskResult::Skipped => "Skipped",
        }
    }
}

/// What the status functions (`succeeded()`, `failed()`, ...) look at.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusInput {
    /// Step scope: the job's current status (`Agent.JobStatus`), `None` before any status was recorded.
    Step {
        /// The job status so far.
        job_status: Option<TaskResult>,
    },
    /// Job or stage scope: the results of the dependencies, and whether the run was canceled.
    Dependencies {
        /// Each dependency's name and result.
        results: Vec<(String, TaskResult)>,
        /// Whether the run has been canceled.
        canceled: bool,
    },
}

/// Supplies everything an expression reads. Only [`Context::lookup`] is required.
pub trait Context {
    /// Resolves the named value `name` followed by `path`. The implementation may apply any number of leading path
    /// steps itself (e.g. look a single variable up in a map instead of building an object of all variables) and
    /// reports how many in [`Resolved::consumed`]. A missing value is null. An `Err` message becomes an evaluation
    /// error at the access's span.
    fn lookup<'c>(&'c self, name: &str, path: &[PathKey<'_>]) -> Result<Resolved<'c>, String>;

    /// The status the job status functions read. The default is step scope with no status recorded yet.
    fn status(&self) -> Result<StatusInput, String> {
        Ok(StatusInput::Step { job_status: None })
    }

    /// `counter(prefix, seed)`: the next value for `prefix`, starting at `seed`.
    fn counter(&self, prefix: &str, seed: f64) -> Result<f64, String> {
        let _ = (prefix, seed);
        Err("counter() is not available here".into())
    }

    /// Charges `bytes` of string data that a function built (`replace`, `format`, `join`, `split`, ...) to the
    /// caller's budget. An `Err` stops the evaluation with that message at the call's span. The default accepts
    /// everything (each function result is still bounded on its own).
    fn charge(&self, bytes: usize) -> Result<(), String> {
        let _ = bytes;
        Ok(())
    }

    /// Calls a function declared in [`crate::ParseOptions::extra_functions`].
    fn call_function(&self, name: &str, args: &[Value]) -> Result<Value, String> {
        let _ = args;
        Err(format!("function '{name}' is not available here"))
    }
}

/// Per-prefix state of `counter(prefix, seed)`: the first call for a prefix returns the seed, later calls one more
/// than the last; returning to an old prefix resumes where it stopped.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    values: RefCell<HashMap<String, f64>>,
}

impl Counters {
    /// Empty counter state.
    pub fn new() -> Counters {
        Counters::default()
    }

    /// The next value for `prefix`.
    pub fn next(&self, prefix: &str, seed: f64) -> f64 {
        let mut values = self.values.borrow_mut();
        let next = values.get(prefix).map_or(seed, |last| last + 1.0);
        values.insert(prefix.to_string(), next);
        next
    }
}

/// A function added to a [`MapContext`].
type ExtraFunctionImpl = Box<dyn Fn(&[Value]) -> Result<Value, String>>;

/// A ready-made context backed by maps: named values as [`Value`]s, `variables` as a case-insensitive map of
/// strings (looked up without building an object), an optional status, counters and extra functions.
#[derive(Default)]
pub struct MapContext {
    named_values: Object,
    /// Folded name -> (name as given, value).
    variables: NameMap<(String, Value)>,
    status: Option<StatusInput>,
    counters: Counters,
    functions: Vec<(String, ExtraFunctionImpl)>,
    strict_parameters: bool,
}

impl std::fmt::Debug for MapContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapContext")
            .field("named_values", &self.named_values)
            .field("variables", &self.variables)
            .field("status", &self.status)
            .field("counters", &self.counters)
            .field(
                "functions",
                &self.functions.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl MapContext {
    /// An empty context. Referencing a parameter that was not declared is an error (as in templates).
    pub fn new() -> MapContext {
        MapContext {
            strict_parameters: true,
            ..MapContext::default()
        }
    }

    /// Sets the variable `name` (case-insensitive) to a string value.
    pub fn set_variable(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.set_variable_value(name, Value::String(value.into()))
    }

    /// Sets the variable `name` (case-insensitive) to any value (null for a variable without a value).
    pub fn set_variable_value(&mut self, name: impl Into<String>, value: Value) -> &mut Self {
        let name = name.into();
        self.variables
            .insert(fold_case(&name).into_owned(), (name, value));
        self
    }

    /// Sets the named value `name` (`parameters`, `dependencies`, a test-only name, ...). Setting `variables` to an
    /// object loads its entries as variables.
    pub fn set(&mut self, name: impl Into<String>, value: Value) -> &mut Self {
        let name = name.into();
        if eq_ignore_case(&name, "variables")
            && let Value::Object(object) = value
        {
            for (k, v) in object {
                self.set_variable_value(k, v);
            }
            return self;
        }
        self.named_values.insert(name, value);
        self
    }

    /// Sets what the status functions read. Without it, step scope is assumed and the status comes from the
    /// variable `Agent.JobStatus` (absent: nothing recorded yet).
    pub fn set_status(&mut self, status: StatusInput) -> &mut Self {
        self.status = Some(status);
        self
    }

    /// Whether a reference to an undeclared parameter (`parameters.nosuch`) is an error (the default) or null.
    pub fn set_strict_parameters(&mut self, strict: bool) -> &mut Self {
        self.strict_parameters = strict;
        self
    }

    /// Adds a function for names declared in [`crate::ParseOptions::extra_functions`].
    pub fn set_function(
        &mut self,
        name: impl Into<String>,
        function: impl Fn(&[Value]) -> Result<Value, String> + 'static,
    ) -> &mut Self {
        self.functions.push((name.into(), Box::new(function)));
        self
    }

    /// Replaces the counter state (to carry it from one run's context to the next).
    pub fn set_counters(&mut self, counters: Counters) -> &mut Self {
        self.counters = counters;
        self
    }

    /// The counter state, e.g. to hand it to the next run's context.
    pub fn into_counters(self) -> Counters {
        self.counters
    }

    /// The variable `name` (case-insensitive), if set.
    pub fn variable(&self, name: &str) -> Option<&Value> {
        with_folded(name, |folded| self.variables.get(folded)).map(|(_, v)| v)
    }

    fn variables_object(&self) -> Object {
        let mut entries: Vec<_> = self.variables.values().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
            .into_iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl Context for MapContext {
    fn lookup<'c>(&'c self, name: &str, path: &[PathKey<'_>]) -> Result<Resolved<'c>, String> {
        if eq_ignore_case(name, "variables") {
            return Ok(match path.first() {
                None | Some(PathKey::Wildcard) => {
                    Resolved::whole(Cow::Owned(Value::Object(self.variables_object())))
                }
                Some(key) => match key.as_key() {
                    Some(key) => match with_folded(&key, |folded| self.variables.get(folded)) {
                        Some((_, value)) => Resolved {
                            value: Cow::Borrowed(value),
                            consumed: 1,
                        },
                        None => Resolved::missing(path.len()),
                    },
                    None => Resolved::missing(path.len()),
                },
            });
        }
        let Some(value) = self.named_values.get(name) else {
            return Ok(Resolved::missing(path.len()));
        };
        if self.strict_parameters
            && eq_ignore_case(name, "parameters")
            && let (Value::Object(parameters), Some(key)) =
                (value, path.first().and_then(|k| k.as_key()))
            && parameters.get(&key).is_none()
        {
            return Err(format!("unrecognized parameter: '{key}' is not declared"));
        }
        Ok(Resolved::whole(Cow::Borrowed(value)))
    }

    fn status(&self) -> Result<StatusInput, String> {
        if let Some(status) = &self.status {
            return Ok(status.clone());
        }
        let job_status = match self.variable("Agent.JobStatus") {
            None | Some(Value::Null) => None,
            Some(value) => {
                let text = value.to_display_string();
                Some(
                    TaskResult::parse(&text)
                        .ok_or_else(|| format!("unknown job status '{text}' in Agent.JobStatus"))?,
                )
            }
        };
        Ok(StatusInput::Step { job_status })
    }

    fn counter(&self, prefix: &str, seed: f64) -> Result<f64, String> {
        Ok(self.counters.next(prefix, seed))
    }

    fn call_function(&self, name: &str, args: &[Value]) -> Result<Value, String> {
        match self.functions.iter().find(|(n, _)| eq_ignore_case(n, name)) {
            Some((_, function)) => function(args),
            None => Err(format!("function '{name}' is not available here")),
        }
    }
}
