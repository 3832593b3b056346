//! What a run reports while it happens: results, and the events (stage/job/step started and finished,
//! masked log lines, issues, variables, artifacts) sent to an [`EventSink`]. The CLI renders them; the
//! server's agent forwards them. Every text in an event is already masked.

use std::sync::Mutex;

use serde::Serialize;

use crate::process::Stream;

/// The result of a step, job or stage, with Azure Pipelines' names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum TaskResult {
    Succeeded,
    SucceededWithIssues,
    Failed,
    Canceled,
    Skipped,
}

impl TaskResult {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskResult::Succeeded => "Succeeded",
            TaskResult::SucceededWithIssues => "SucceededWithIssues",
            TaskResult::Failed => "Failed",
            TaskResult::Canceled => "Canceled",
            TaskResult::Skipped => "Skipped",
        }
    }

    /// Parses the names used by `task.complete result=...` (case-insensitive).
    pub fn parse(text: &str) -> Option<TaskResult> {
        [
            TaskResult::Succeeded,
            TaskResult::SucceededWithIssues,
            TaskResult::Failed,
            TaskResult::Canceled,
            TaskResult::Skipped,
        ]
        .into_iter()
        .find(|result| result.as_str().eq_ignore_ascii_case(text.trim()))
    }

    pub fn is_success(self) -> bool {
        matches!(
            self,
            TaskResult::Succeeded | TaskResult::SucceededWithIssues
        )
    }

    /// Combines the result so far with the result of one more part (a step into its job, a job into
    /// its stage): the worse wins; skipped parts do not change anything.
    pub fn merge(self, part: TaskResult) -> TaskResult {
        fn rank(result: TaskResult) -> u8 {
            match result {
                TaskResult::Skipped => 0,
                TaskResult::Succeeded => 1,
                TaskResult::SucceededWithIssues => 2,
                TaskResult::Failed => 3,
                TaskResult::Canceled => 4,
            }
        }
        if rank(part) > rank(self) { part } else { self }
    }
}

impl std::fmt::Display for TaskResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Severity of an issue (`task.logissue type=...`, `##[warning]`, `##[error]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IssueKind {
    Warning,
    Error,
}

/// Which job an event belongs to: `Stage.Job` ids are unique within a run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct JobId {
    pub stage: String,
    pub job: String,
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.stage, self.job)
    }
}

/// One thing that happened in a run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Event {
    RunStarted {
        run_id: String,
        build_number: String,
        pipeline: String,
    },
    RunFinished {
        run_id: String,
        result: TaskResult,
        seconds: f64,
    },
    StageStarted {
        stage: String,
        display_name: String,
    },
    StageFinished {
        stage: String,
        result: TaskResult,
        seconds: f64,
    },
    JobStarted {
        job: JobId,
        display_name: String,
    },
    JobFinished {
        job: JobId,
        result: TaskResult,
        seconds: f64,
    },
    StepStarted {
        job: JobId,
        step: usize,
        display_name: String,
    },
    StepFinished {
        job: JobId,
        step: usize,
        display_name: String,
        result: TaskResult,
        seconds: f64,
    },
    /// Lines of step output (or messages of the runner about a step), masked, in order.
    Log {
        job: JobId,
        step: usize,
        stream: Stream,
        lines: Vec<String>,
    },
    /// A `##[group]`/`##[endgroup]` fold marker (the group title is in `title`).
    Group {
        job: JobId,
        step: usize,
        title: Option<String>,
    },
    Issue {
        job: JobId,
        step: Option<usize>,
        kind: IssueKind,
        message: String,
    },
    VariableSet {
        job: JobId,
        step: usize,
        name: String,
        value: String,
        is_output: bool,
        is_secret: bool,
    },
    Artifact {
        job: JobId,
        name: String,
        files: usize,
        bytes: u64,
    },
    BuildNumber {
        job: JobId,
        build_number: String,
    },
    BuildTag {
        job: JobId,
        tag: String,
    },
    Progress {
        job: JobId,
        step: usize,
        percent: u32,
        message: String,
    },
    /// A file a step attached with `task.uploadfile`/`build.uploadlog` (kept in the run folder).
    FileUploaded {
        job: JobId,
        path: String,
    },
    /// One publish of test results: the counts cover every case read, `cases` at most the first
    /// [`MAX_TEST_CASES`](crate::tasks::test_results::MAX_TEST_CASES) of them, failed ones first.
    TestResults {
        job: JobId,
        passed: u64,
        failed: u64,
        skipped: u64,
        cases: Vec<TestCase>,
    },
}

/// The outcome of one test case, with the names the server's store and UI use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TestOutcome {
    Passed,
    Failed,
    Skipped,
}

impl TestOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            TestOutcome::Passed => "passed",
            TestOutcome::Failed => "failed",
            TestOutcome::Skipped => "skipped",
        }
    }
}

/// One test case read from a result file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestCase {
    /// The class, test suite or (failing both) the test run title or the file's name.
    pub suite: String,
    pub name: String,
    pub outcome: TestOutcome,
    pub duration_ms: u64,
    /// The failure (or skip) message and the first lines of the stack trace, at most
    /// [`MAX_TEST_MESSAGE_BYTES`](crate::tasks::test_results::MAX_TEST_MESSAGE_BYTES); empty if none.
    pub message: String,
}

/// Receives events. Implementations must be cheap: they are called for every output line.
pub trait EventSink: Send + Sync {
    fn event(&self, event: Event);
}

/// Collects every event in memory (tests and small tools).
#[derive(Debug, Default)]
pub struct CollectingSink {
    pub events: Mutex<Vec<Event>>,
}

impl CollectingSink {
    /// A copy of what was collected so far.
    pub fn snapshot(&self) -> Vec<Event> {
        self.events
            .lock()
            .map(|events| events.clone())
            .unwrap_or_default()
    }

    /// Every log line collected, in order.
    pub fn log_lines(&self) -> Vec<String> {
        self.snapshot()
            .into_iter()
            .filter_map(|event| match event {
                Event::Log { lines, .. } => Some(lines),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

impl EventSink for CollectingSink {
    fn event(&self, event: Event) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event);
        }
    }
}

/// One event as a JSON line (with the trailing newline), for `--json` output and log shipping.
pub fn to_json_line(event: &Event) -> Result<String, String> {
    let mut line = serde_json::to_string(event).map_err(|err| err.to_string())?;
    line.push('\n');
    Ok(line)
}
