//! What a run reports while it happens: results, and the events (stage/job/step started and finished,
//! masked log lines, issues, variables, artifacts) sent to an [`EventSink`]. The CLI renders them; the
//! server's agent forwards them. Every text in an event is already masked.

use std::sync::Mutex;

use serde::Serialize;

use crate::masking::{MASK, SecretMasker};
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
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
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

impl Event {
    /// The event with every secret in every text replaced by `***`: names, display names, log lines,
    /// messages, variable values (a secret variable's value is `***` whole), artifact names, build
    /// numbers, tags, file paths and test cases. Ids (stage and job names) are masked too.
    pub fn masked(self, masker: &SecretMasker) -> Event {
        if masker.is_empty() {
            return self;
        }
        let m = |text: String| -> String {
            match masker.mask(&text) {
                std::borrow::Cow::Borrowed(_) => text,
                std::borrow::Cow::Owned(masked) => masked,
            }
        };
        let id = |job: JobId| JobId {
            stage: m(job.stage),
            job: m(job.job),
        };
        match self {
            Event::RunStarted {
                run_id,
                build_number,
                pipeline,
            } => Event::RunStarted {
                run_id,
                build_number: m(build_number),
                pipeline: m(pipeline),
            },
            Event::RunFinished { .. } => self,
            Event::StageStarted {
                stage,
                display_name,
            } => Event::StageStarted {
                stage: m(stage),
                display_name: m(display_name),
            },
            Event::StageFinished {
                stage,
                result,
                seconds,
            } => Event::StageFinished {
                stage: m(stage),
                result,
                seconds,
            },
            Event::JobStarted { job, display_name } => Event::JobStarted {
                job: id(job),
                display_name: m(display_name),
            },
            Event::JobFinished {
                job,
                result,
                seconds,
            } => Event::JobFinished {
                job: id(job),
                result,
                seconds,
            },
            Event::StepStarted {
                job,
                step,
                display_name,
            } => Event::StepStarted {
                job: id(job),
                step,
                display_name: m(display_name),
            },
            Event::StepFinished {
                job,
                step,
                display_name,
                result,
                seconds,
            } => Event::StepFinished {
                job: id(job),
                step,
                display_name: m(display_name),
                result,
                seconds,
            },
            Event::Log {
                job,
                step,
                stream,
                lines,
            } => Event::Log {
                job: id(job),
                step,
                stream,
                lines: lines.into_iter().map(m).collect(),
            },
            Event::Group { job, step, title } => Event::Group {
                job: id(job),
                step,
                title: title.map(m),
            },
            Event::Issue {
                job,
                step,
                kind,
                message,
            } => Event::Issue {
                job: id(job),
                step,
                kind,
                message: m(message),
            },
            Event::VariableSet {
                job,
                step,
                name,
                value,
                is_output,
                is_secret,
            } => Event::VariableSet {
                job: id(job),
                step,
                name: m(name),
                value: if is_secret {
                    MASK.to_string()
                } else {
                    m(value)
                },
                is_output,
                is_secret,
            },
            Event::Artifact {
                job,
                name,
                files,
                bytes,
            } => Event::Artifact {
                job: id(job),
                name: m(name),
                files,
                bytes,
            },
            Event::BuildNumber { job, build_number } => Event::BuildNumber {
                job: id(job),
                build_number: m(build_number),
            },
            Event::BuildTag { job, tag } => Event::BuildTag {
                job: id(job),
                tag: m(tag),
            },
            Event::Progress {
                job,
                step,
                percent,
                message,
            } => Event::Progress {
                job: id(job),
                step,
                percent,
                message: m(message),
            },
            Event::FileUploaded { job, path } => Event::FileUploaded {
                job: id(job),
                path: m(path),
            },
            Event::TestResults {
                job,
                passed,
                failed,
                skipped,
                cases,
            } => Event::TestResults {
                job: id(job),
                passed,
                failed,
                skipped,
                cases: cases
                    .into_iter()
                    .map(|case| TestCase {
                        suite: m(case.suite),
                        name: m(case.name),
                        message: m(case.message),
                        ..case
                    })
                    .collect(),
            },
        }
    }
}

/// The one place where a job's events leave it: every event passes through [`Event::masked`] with the
/// job's masker (which grows as steps register secrets) before it reaches the sink behind.
pub struct MaskingSink<'a> {
    inner: &'a dyn EventSink,
    masker: SecretMasker,
}

impl<'a> MaskingSink<'a> {
    pub fn new(inner: &'a dyn EventSink, masker: SecretMasker) -> MaskingSink<'a> {
        MaskingSink { inner, masker }
    }
}

impl EventSink for MaskingSink<'_> {
    fn event(&self, event: Event) {
        self.inner.event(event.masked(&self.masker));
    }
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
