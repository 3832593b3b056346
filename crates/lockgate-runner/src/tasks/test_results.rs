//! PublishTestResults@2 (JUnit, NUnit 2 and 3, xUnit 2, VSTest TRX, CTest) and PublishCodeCoverageResults@1
//! and @2 (Cobertura and JaCoCo summaries). Result files are read with a streaming XML reader into test
//! cases (suite, name, outcome, duration, message), summarised in the step log, reported as an event and
//! kept in the run folder. Inputs and defaults from the task reference pages (docs:
//! tasks/reference/publish-test-results-v2, publish-code-coverage-results-v1/v2).

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event as XmlEvent};
use serde::Serialize;

use crate::events::{Event, TaskResult, TestCase, TestOutcome};
use crate::glob::{PatternSet, list_files};
use crate::job::StepContext;
use crate::tasks::{Task, TaskError, TaskFuture, TaskRegistry};

/// At most this many test cases are kept (and sent) per publish; the rest are only counted. Failed cases
/// are kept before passed and skipped ones.
pub const MAX_TEST_CASES: usize = 10_000;

/// A test case's message (failure message and stack trace) is cut to this many bytes.
pub const MAX_TEST_MESSAGE_BYTES: usize = 4096;

/// The failed tests named in the step log.
const LOGGED_FAILURES: usize = 100;

pub fn register(registry: &mut TaskRegistry) {
    registry.register("PublishTestResults", 2, Arc::new(PublishTestResults));
    registry.register("PublishCodeCoverageResults", 1, Arc::new(PublishCoverage));
    registry.register("PublishCodeCoverageResults", 2, Arc::new(PublishCoverage));
}

/// Outcome counts of a set of result files, with their test cases: failed ones first, at most
/// [`MAX_TEST_CASES`] in all (the counts cover every case).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TestSummary {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    failed_cases: Vec<TestCase>,
    other_cases: Vec<TestCase>,
}

impl TestSummary {
    /// The kept cases, failed ones first, each group in file order.
    pub fn cases(&self) -> impl Iterator<Item = &TestCase> {
        self.failed_cases.iter().chain(&self.other_cases)
    }

    pub fn into_cases(self) -> Vec<TestCase> {
        let mut cases = self.failed_cases;
        cases.extend(self.other_cases);
        cases
    }

    /// Every case counted, kept or not.
    pub fn total(&self) -> u64 {
        self.passed + self.failed + self.skipped
    }

    fn kept(&self) -> usize {
        self.failed_cases.len() + self.other_cases.len()
    }

    fn add(&mut self, case: TestCase) {
        match case.outcome {
            TestOutcome::Passed => self.passed += 1,
            TestOutcome::Failed => self.failed += 1,
            TestOutcome::Skipped => self.skipped += 1,
        }
        self.keep(case);
    }

    /// Keeps a case if there is room; a failed case takes the place of a passed or skipped one.
    fn keep(&mut self, case: TestCase) {
        let full = self.kept() >= MAX_TEST_CASES;
        if case.outcome == TestOutcome::Failed {
            if full && self.other_cases.pop().is_none() {
                return;
            }
            self.failed_cases.push(case);
        } else if !full {
            self.other_cases.push(case);
        }
    }

    fn merge(&mut self, other: TestSummary) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
        for case in other.into_cases() {
            self.keep(case);
        }
    }
}

/// What is kept in the run folder (`test-results/<job>-step<n>.json`).
#[derive(Serialize)]
struct StoredSummary<'a> {
    passed: u64,
    failed: u64,
    skipped: u64,
    cases: Vec<&'a TestCase>,
}

/// The result formats of PublishTestResults@2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestFormat {
    JUnit,
    NUnit,
    XUnit,
    VSTest,
    CTest,
}

impl TestFormat {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "junit" => Some(Self::JUnit),
            "nunit" => Some(Self::NUnit),
            "xunit" => Some(Self::XUnit),
            "vstest" => Some(Self::VSTest),
            "ctest" => Some(Self::CTest),
            _ => None,
        }
    }
}

fn attribute(element: &BytesStart<'_>, name: &str) -> Option<String> {
    element
        .attributes()
        .flatten()
        .find(|a| a.key.as_ref().eq_ignore_ascii_case(name))
        .map(|a| {
            let raw = a.value.to_string();
            quick_xml::escape::unescape(&raw)
                .map(|v| v.into_owned())
                .unwrap_or(raw)
        })
}

/// Seconds (`1.25`) as milliseconds; 0 if not a number.
fn seconds_to_ms(text: &str) -> u64 {
    match text.trim().parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 => (seconds * 1000.0).round() as u64,
        _ => 0,
    }
}

/// A TRX duration (`00:00:01.2500000`) as milliseconds; 0 if malformed.
fn timespan_to_ms(text: &str) -> u64 {
    let mut parts = text.trim().rsplit(':');
    let seconds = parts.next().map_or(0, seconds_to_ms);
    let minutes = parts
        .next()
        .and_then(|m| m.parse::<u64>().ok())
        .unwrap_or(0);
    let hours = parts
        .next()
        .and_then(|h| h.parse::<u64>().ok())
        .unwrap_or(0);
    seconds + (minutes * 60 + hours * 3600) * 1000
}

/// Appends to a message, stopping at [`MAX_TEST_MESSAGE_BYTES`] (on a character boundary).
fn append_bounded(message: &mut String, text: &str) {
    let room = MAX_TEST_MESSAGE_BYTES.saturating_sub(message.len());
    if text.len() <= room {
        message.push_str(text);
    } else {
        let mut cut = room;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        message.push_str(&text[..cut]);
    }
}

/// Where the text inside the current element goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Capture {
    /// The open case's message, until the end of the named element.
    Message,
    /// CTest's `<Name>`.
    Name,
    /// CTest's `<NamedMeasurement name="Execution Time"><Value>`, in seconds.
    Seconds,
}

/// A test case being read, with the name the step log uses for it.
struct OpenCase {
    case: TestCase,
    display: String,
    seconds: String,
}

impl OpenCase {
    fn new(suite: String, name: String, outcome: TestOutcome, duration_ms: u64) -> OpenCase {
        OpenCase {
            display: name.clone(),
            case: TestCase {
                suite,
                name,
                outcome,
                duration_ms,
                message: String::new(),
            },
            seconds: String::new(),
        }
    }

    fn add_message(&mut self, text: &str) {
        if !self.case.message.is_empty() && !self.case.message.ends_with('\n') {
            append_bounded(&mut self.case.message, "\n");
        }
        append_bounded(&mut self.case.message, text);
    }

    fn finish(mut self) -> (TestCase, String) {
        if !self.seconds.is_empty() {
            self.case.duration_ms = seconds_to_ms(&self.seconds);
        }
        let message = self.case.message.trim();
        if message.len() != self.case.message.len() {
            self.case.message = message.to_string();
        }
        if self.case.suite.is_empty() {
            self.case.suite = "tests".into();
        }
        (self.case, self.display)
    }
}

/// Reads one result file of the given format. `default_suite` names the suite of cases whose file says
/// none (the test run title, or the file's name).
pub fn read_test_results(
    path: &Path,
    format: TestFormat,
    default_suite: &str,
) -> Result<(TestSummary, Vec<String>), String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut reader = Reader::from_reader(BufReader::new(file));
    let mut buf = Vec::new();
    let mut summary = TestSummary::default();
    let mut failures = Vec::new();
    // The enclosing <testsuite>/<test-suite>/<collection> names.
    let mut suites: Vec<String> = Vec::new();
    let mut open: Option<OpenCase> = None;
    // Where text goes, and the element whose end stops it.
    let mut capture: Option<(Capture, String)> = None;
    // CTest: inside <NamedMeasurement name="Execution Time">.
    let mut in_execution_time = false;
    let suite_of = |suites: &[String], explicit: Option<String>| {
        explicit
            .filter(|s| !s.is_empty())
            .or_else(|| suites.last().filter(|s| !s.is_empty()).cloned())
            .unwrap_or_else(|| default_suite.to_string())
    };
    let mut finish = |open: &mut Option<OpenCase>, summary: &mut TestSummary| {
        if let Some(case) = open.take() {
            let (case, display) = case.finish();
            if case.outcome == TestOutcome::Failed && failures.len() < LOGGED_FAILURES {
                failures.push(display);
            }
            summary.add(case);
        }
    };
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("{}: invalid XML: {e}", path.display()))?;
        let (element, empty) = match &event {
            XmlEvent::Start(e) => (Some(e.clone()), false),
            XmlEvent::Empty(e) => (Some(e.clone()), true),
            XmlEvent::End(e) => {
                let name = e.local_name();
                let name: &str = name.as_ref();
                if capture.as_ref().is_some_and(|(_, until)| until == name) {
                    capture = None;
                }
                match (format, name) {
                    (TestFormat::JUnit, "testcase")
                    | (TestFormat::NUnit, "test-case")
                    | (TestFormat::XUnit, "test")
                    | (TestFormat::VSTest, "UnitTestResult")
                    | (TestFormat::CTest, "Test") => finish(&mut open, &mut summary),
                    (TestFormat::JUnit, "testsuite")
                    | (TestFormat::NUnit, "test-suite")
                    | (TestFormat::XUnit, "collection") => {
                        suites.pop();
                    }
                    (TestFormat::CTest, "NamedMeasurement") => in_execution_time = false,
                    _ => {}
                }
                (None, false)
            }
            XmlEvent::Text(text) => {
                captured(&mut open, capture.as_ref(), text);
                (None, false)
            }
            XmlEvent::CData(text) => {
                captured(&mut open, capture.as_ref(), text);
                (None, false)
            }
            XmlEvent::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(c)) => Some(c.to_string()),
                    _ => {
                        quick_xml::escape::resolve_predefined_entity(reference).map(str::to_string)
                    }
                };
                if let Some(text) = resolved {
                    captured(&mut open, capture.as_ref(), &text);
                }
                (None, false)
            }
            XmlEvent::Eof => break,
            _ => (None, false),
        };
        let Some(e) = element else {
            buf.clear();
            continue;
        };
        let local = e.local_name();
        let local: &str = local.as_ref();
        // Text of this element goes to `what` until it ends.
        let mut capture_text = |what: Capture| {
            if !empty {
                capture = Some((what, local.to_string()));
            }
        };
        match (format, local) {
            (TestFormat::JUnit, "testsuite") | (TestFormat::NUnit, "test-suite") if !empty => {
                suites.push(attribute(&e, "name").unwrap_or_default());
            }
            (TestFormat::XUnit, "collection") if !empty => {
                suites.push(attribute(&e, "name").unwrap_or_default());
            }
            (TestFormat::JUnit, "testcase") => {
                finish(&mut open, &mut summary);
                let class = attribute(&e, "classname");
                let name = attribute(&e, "name").unwrap_or_default();
                let display = match &class {
                    Some(class) if !class.is_empty() => format!("{class}.{name}"),
                    _ => name.clone(),
                };
                let duration = attribute(&e, "time").map_or(0, |t| seconds_to_ms(&t));
                let mut case = OpenCase::new(
                    suite_of(&suites, class),
                    name,
                    TestOutcome::Passed,
                    duration,
                );
                case.display = display;
                open = Some(case);
                if empty {
                    finish(&mut open, &mut summary);
                }
            }
            (TestFormat::JUnit, "failure" | "error" | "skipped") if open.is_some() => {
                if let Some(case) = open.as_mut() {
                    if local == "skipped" {
                        if case.case.outcome != TestOutcome::Failed {
                            case.case.outcome = TestOutcome::Skipped;
                        }
                    } else {
                        case.case.outcome = TestOutcome::Failed;
                    }
                    if let Some(message) = attribute(&e, "message").filter(|m| !m.is_empty()) {
                        case.add_message(&message);
                    }
                    if !empty {
                        case.add_message("");
                    }
                }
                capture_text(Capture::Message);
            }
            (TestFormat::NUnit, "test-case") => {
                finish(&mut open, &mut summary);
                let name = attribute(&e, "name")
                    .or_else(|| attribute(&e, "fullname"))
                    .unwrap_or_default();
                let display = attribute(&e, "fullname").unwrap_or_else(|| name.clone());
                let result = attribute(&e, "result")
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                let executed =
                    attribute(&e, "executed").is_none_or(|v| v.eq_ignore_ascii_case("true"));
                let outcome = match result.as_str() {
                    "passed" | "success" if executed => TestOutcome::Passed,
                    "failed" | "failure" | "error" => TestOutcome::Failed,
                    _ => TestOutcome::Skipped,
                };
                // NUnit 3 says `duration`, NUnit 2 `time`, both in seconds.
                let duration = attribute(&e, "duration")
                    .or_else(|| attribute(&e, "time"))
                    .map_or(0, |t| seconds_to_ms(&t));
                let mut case = OpenCase::new(
                    suite_of(&suites, attribute(&e, "classname")),
                    name,
                    outcome,
                    duration,
                );
                case.display = display;
                open = Some(case);
                if empty {
                    finish(&mut open, &mut summary);
                }
            }
            (TestFormat::NUnit | TestFormat::XUnit, "message" | "stack-trace" | "reason")
                if open.is_some() =>
            {
                if let Some(case) = open.as_mut() {
                    case.add_message("");
                }
                capture_text(Capture::Message);
            }
            (TestFormat::XUnit, "test") => {
                finish(&mut open, &mut summary);
                let name = attribute(&e, "name").unwrap_or_default();
                let outcome = match attribute(&e, "result")
                    .unwrap_or_default()
                    .to_ascii_lowercase()
                    .as_str()
                {
                    "pass" => TestOutcome::Passed,
                    "fail" => TestOutcome::Failed,
                    _ => TestOutcome::Skipped,
                };
                let duration = attribute(&e, "time").map_or(0, |t| seconds_to_ms(&t));
                open = Some(OpenCase::new(
                    suite_of(&suites, attribute(&e, "type")),
                    name,
                    outcome,
                    duration,
                ));
                if empty {
                    finish(&mut open, &mut summary);
                }
            }
            (TestFormat::VSTest, "UnitTestResult") => {
                finish(&mut open, &mut summary);
                let name = attribute(&e, "testName").unwrap_or_default();
                let outcome = match attribute(&e, "outcome")
                    .unwrap_or_default()
                    .to_ascii_lowercase()
                    .as_str()
                {
                    "passed" => TestOutcome::Passed,
                    "failed" | "error" | "timeout" | "aborted" => TestOutcome::Failed,
                    _ => TestOutcome::Skipped,
                };
                let duration = attribute(&e, "duration").map_or(0, |t| timespan_to_ms(&t));
                open = Some(OpenCase::new(
                    default_suite.to_string(),
                    name,
                    outcome,
                    duration,
                ));
                if empty {
                    finish(&mut open, &mut summary);
                }
            }
            (TestFormat::VSTest, "Message" | "StackTrace") if open.is_some() => {
                if let Some(case) = open.as_mut() {
                    case.add_message("");
                }
                capture_text(Capture::Message);
            }
            (TestFormat::CTest, "Test") if attribute(&e, "Status").is_some() => {
                finish(&mut open, &mut summary);
                let outcome = match attribute(&e, "Status")
                    .unwrap_or_default()
                    .to_ascii_lowercase()
                    .as_str()
                {
                    "passed" => TestOutcome::Passed,
                    "failed" => TestOutcome::Failed,
                    _ => TestOutcome::Skipped,
                };
                open = Some(OpenCase::new(
                    default_suite.to_string(),
                    String::new(),
                    outcome,
                    0,
                ));
                if empty {
                    finish(&mut open, &mut summary);
                }
            }
            (TestFormat::CTest, "Name")
                if open.as_ref().is_some_and(|c| c.case.name.is_empty()) =>
            {
                capture_text(Capture::Name);
            }
            (TestFormat::CTest, "NamedMeasurement") if open.is_some() => {
                in_execution_time = attribute(&e, "name").as_deref() == Some("Execution Time");
            }
            (TestFormat::CTest, "Value") if open.is_some() => {
                if in_execution_time {
                    capture_text(Capture::Seconds);
                } else if open
                    .as_ref()
                    .is_some_and(|c| c.case.outcome != TestOutcome::Passed)
                {
                    // The output of a failed or skipped test (`<Measurement><Value>`).
                    capture_text(Capture::Message);
                }
            }
            _ => {}
        }
        buf.clear();
    }
    finish(&mut open, &mut summary);
    Ok((summary, failures))
}

/// Sends text inside a captured element to the open case.
fn captured(open: &mut Option<OpenCase>, capture: Option<&(Capture, String)>, text: &str) {
    let (Some(case), Some((what, _))) = (open.as_mut(), capture) else {
        return;
    };
    match what {
        Capture::Message => append_bounded(&mut case.case.message, text),
        Capture::Name => case.case.name.push_str(text.trim()),
        Capture::Seconds => {
            if case.seconds.len() < 64 {
                case.seconds.push_str(text);
            }
        }
    }
}

pub(crate) fn find_files(
    step: &StepContext<'_, '_>,
    folder: &Path,
    patterns: &str,
) -> Result<Vec<PathBuf>, TaskError> {
    let mut found: Vec<PathBuf> = patterns
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('!') && Path::new(line).is_absolute())
        .map(PathBuf::from)
        .filter(|path| path.is_file())
        .collect();
    if folder.is_dir() {
        let set = PatternSet::new(patterns);
        let files = list_files(folder)
            .map_err(|e| TaskError(format!("cannot list {}: {e}", folder.display())))?;
        found.extend(
            files
                .into_iter()
                .filter(|(relative, _)| set.matches(relative))
                .map(|(_, path)| path),
        );
    }
    let _ = step;
    found.sort();
    found.dedup();
    Ok(found)
}

struct PublishTestResults;

impl Task for PublishTestResults {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let format_text = step
                .input_any(&["testResultsFormat", "testRunner"])
                .unwrap_or("JUnit")
                .to_string();
            let format = TestFormat::parse(&format_text).ok_or_else(|| {
                TaskError(format!(
                    "testResultsFormat `{format_text}` is not JUnit, NUnit, VSTest, XUnit or CTest"
                ))
            })?;
            let patterns = step
                .input("testResultsFiles")
                .unwrap_or("**/TEST-*.xml")
                .to_string();
            let folder = match step.input("searchFolder") {
                Some(dir) => step.resolve_path(dir),
                None => step.job.workspace.sources.clone(),
            };
            let fail_on_failed = step.input_bool(&["failTaskOnFailedTests"], false)?;
            let fail_on_missing = step.input_bool(&["failTaskOnMissingResultsFile"], false)?;
            let files = find_files(step, &folder, &patterns)?;
            if files.is_empty() {
                let message = format!(
                    "no test result files matching `{}` were found in {}",
                    patterns.replace('\n', ", "),
                    folder.display()
                );
                if fail_on_missing {
                    return Err(TaskError(message));
                }
                // The task's own source (PublishTestResultsV2) only warns and leaves the result
                // Succeeded when nothing matches and failTaskOnMissingResultsFile is false.
                step.warning(&message);
                return Ok(TaskResult::Succeeded);
            }
            let run_title = step.input("testRunTitle").map(str::to_string);
            let summary = publish_results(step, &format_text, format, &files, run_title.as_deref());
            if summary.failed > 0 && fail_on_failed {
                return Err(TaskError(format!("{} test(s) failed", summary.failed)));
            }
            Ok(TaskResult::Succeeded)
        })
    }
}

/// Reads result files, logs the summary and failed tests, keeps them in the run folder and reports them
/// as an event. `run_title` (testRunTitle, runTitle) names the suite of cases whose file names none.
/// Shared by PublishTestResults@2 and `##vso[results.publish]`.
pub fn publish_results(
    step: &StepContext<'_, '_>,
    format_text: &str,
    format: TestFormat,
    files: &[PathBuf],
    run_title: Option<&str>,
) -> TestSummary {
    let mut summary = TestSummary::default();
    let mut failures = Vec::new();
    for file in files {
        let default_suite = match run_title.map(str::trim).filter(|t| !t.is_empty()) {
            Some(title) => title.to_string(),
            None => file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        match read_test_results(file, format, &default_suite) {
            Ok((one, failed)) => {
                summary.merge(one);
                failures.extend(failed);
            }
            Err(message) => step.warning(&message),
        }
    }
    step.log(&format!(
        "Test results ({format_text}, {} files): {} passed, {} failed, {} skipped",
        files.len(),
        summary.passed,
        summary.failed,
        summary.skipped
    ));
    for failure in failures.iter().take(LOGGED_FAILURES) {
        step.log(&format!("  failed: {failure}"));
    }
    if summary.failed as usize > LOGGED_FAILURES {
        step.log(&format!(
            "  ... and {} more failed tests",
            summary.failed as usize - LOGGED_FAILURES
        ));
    }
    let kept = summary.kept() as u64;
    if kept < summary.total() {
        step.log(&format!(
            "Reporting {kept} of {} test cases (failed ones first, at most {MAX_TEST_CASES} per publish); \
             the other {} are in the counts only",
            summary.total(),
            summary.total() - kept
        ));
    }
    let folder = step.job.run.run_dir.join("test-results");
    if std::fs::create_dir_all(&folder).is_ok() {
        let path = folder.join(format!("{}-step{}.json", step.job.id, step.index));
        let stored = StoredSummary {
            passed: summary.passed,
            failed: summary.failed,
            skipped: summary.skipped,
            cases: summary.cases().collect(),
        };
        let _ = std::fs::write(
            &path,
            serde_json::to_vec_pretty(&stored).unwrap_or_default(),
        );
    }
    step.job.sink.event(Event::TestResults {
        job: step.job.id.clone(),
        passed: summary.passed,
        failed: summary.failed,
        skipped: summary.skipped,
        cases: summary.cases().cloned().collect(),
    });
    summary
}

/// Reads a coverage summary and logs it. Shared by PublishCodeCoverageResults and
/// `##vso[codecoverage.publish]`.
pub fn report_coverage(step: &StepContext<'_, '_>, file: &Path) -> Result<(), TaskError> {
    let summary = read_coverage(file).map_err(TaskError)?;
    step.log(&format!(
        "Code coverage ({}) from {}: lines {} ({}/{}), branches {} ({}/{})",
        summary.format,
        file.display(),
        percent(summary.lines_covered, summary.lines_total),
        summary.lines_covered,
        summary.lines_total,
        percent(summary.branches_covered, summary.branches_total),
        summary.branches_covered,
        summary.branches_total
    ));
    Ok(())
}

/// Line (and branch) coverage of a Cobertura or JaCoCo report, in percent.
#[derive(Debug, Clone, PartialEq)]
pub struct CoverageSummary {
    pub format: &'static str,
    pub lines_covered: u64,
    pub lines_total: u64,
    pub branches_covered: u64,
    pub branches_total: u64,
}

/// Reads the summary of a Cobertura (`<coverage lines-covered lines-valid ...>`) or JaCoCo (report-level
/// `<counter type="LINE" missed covered>`) file.
pub fn read_coverage(path: &Path) -> Result<CoverageSummary, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut reader = Reader::from_reader(BufReader::new(file));
    let mut buf = Vec::new();
    let mut depth = 0usize;
    let mut jacoco: Option<CoverageSummary> = None;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("{}: invalid XML: {e}", path.display()))?;
        match &event {
            XmlEvent::Start(e) | XmlEvent::Empty(e) => {
                let local = e.local_name();
                let number = |name: &str| {
                    attribute(e, name)
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(0)
                };
                if depth == 0 && local.as_ref() == "coverage" {
                    return Ok(CoverageSummary {
                        format: "Cobertura",
                        lines_covered: number("lines-covered"),
                        lines_total: number("lines-valid"),
                        branches_covered: number("branches-covered"),
                        branches_total: number("branches-valid"),
                    });
                }
                if depth == 0 && local.as_ref() == "report" {
                    jacoco = Some(CoverageSummary {
                        format: "JaCoCo",
                        lines_covered: 0,
                        lines_total: 0,
                        branches_covered: 0,
                        branches_total: 0,
                    });
                }
                if depth == 1
                    && local.as_ref() == "counter"
                    && let Some(summary) = jacoco.as_mut()
                {
                    let (missed, covered) = (number("missed"), number("covered"));
                    match attribute(e, "type").as_deref() {
                        Some("LINE") => {
                            summary.lines_covered = covered;
                            summary.lines_total = covered + missed;
                        }
                        Some("BRANCH") => {
                            summary.branches_covered = covered;
                            summary.branches_total = covered + missed;
                        }
                        _ => {}
                    }
                }
                if matches!(event, XmlEvent::Start(_)) {
                    depth += 1;
                }
            }
            XmlEvent::End(_) => depth = depth.saturating_sub(1),
            XmlEvent::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    jacoco.ok_or_else(|| {
        format!(
            "{}: neither a Cobertura nor a JaCoCo report",
            path.display()
        )
    })
}

fn percent(covered: u64, total: u64) -> String {
    if total == 0 {
        "n/a".into()
    } else {
        format!("{:.2}%", covered as f64 * 100.0 / total as f64)
    }
}

struct PublishCoverage;

impl Task for PublishCoverage {
    fn run<'a>(&'a self, step: &'a mut StepContext<'_, '_>) -> TaskFuture<'a> {
        Box::pin(async move {
            let patterns = step.required_input(&["summaryFileLocation"])?.to_string();
            let sources = step.job.workspace.sources.clone();
            let files = find_files(step, &sources, &patterns)?;
            let Some(file) = files.first() else {
                let message = format!("no code coverage summary matches `{patterns}`");
                if step.input_bool(&["failIfCoverageEmpty"], false)? {
                    return Err(TaskError(message));
                }
                step.warning(&message);
                return Ok(TaskResult::SucceededWithIssues);
            };
            report_coverage(step, file)?;
            Ok(TaskResult::Succeeded)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn read(path: &Path, format: TestFormat) -> TestSummary {
        read_test_results(path, format, "run").unwrap().0
    }

    /// (suite, name, outcome, duration_ms, message) of every kept case.
    fn cases(summary: &TestSummary) -> Vec<(&str, &str, &str, u64, &str)> {
        summary
            .cases()
            .map(|c| {
                (
                    c.suite.as_str(),
                    c.name.as_str(),
                    c.outcome.as_str(),
                    c.duration_ms,
                    c.message.as_str(),
                )
            })
            .collect()
    }

    #[test]
    fn every_format_is_read_case_by_case() {
        let dir = tempfile::tempdir().unwrap();
        let junit = write(
            dir.path(),
            "j.xml",
            r#"<testsuites><testsuite name="S"><testcase classname="A" name="ok" time="0.25"/><testcase classname="A" name="bad" time="1"><failure message="x &lt; y">trace &amp; more<![CDATA[ <raw>]]></failure></testcase><testcase name="skip"><skipped message="later"/></testcase><testcase name="err"><error/></testcase></testsuite></testsuites>"#,
        );
        let (s, failures) = read_test_results(&junit, TestFormat::JUnit, "run").unwrap();
        assert_eq!((s.passed, s.failed, s.skipped), (1, 2, 1));
        assert_eq!(failures, ["A.bad", "err"]);
        assert_eq!(
            cases(&s),
            [
                ("A", "bad", "failed", 1000, "x < y\ntrace & more <raw>"),
                ("S", "err", "failed", 0, ""),
                ("A", "ok", "passed", 250, ""),
                ("S", "skip", "skipped", 0, "later"),
            ]
        );
        let nunit3 = write(
            dir.path(),
            "n.xml",
            r#"<test-run><test-suite name="Fixture"><test-case name="a" fullname="N.a" classname="N" result="Passed" duration="0.002"/><test-case name="b" fullname="N.b" result="Failed"><failure><message>expected 1</message><stack-trace>at N.b()</stack-trace></failure></test-case><test-case name="c" fullname="N.c" result="Skipped"><reason><message>not today</message></reason></test-case></test-suite></test-run>"#,
        );
        let (s, failures) = read_test_results(&nunit3, TestFormat::NUnit, "run").unwrap();
        assert_eq!(failures, ["N.b"]);
        assert_eq!(
            cases(&s),
            [
                ("Fixture", "b", "failed", 0, "expected 1\nat N.b()"),
                ("N", "a", "passed", 2, ""),
                ("Fixture", "c", "skipped", 0, "not today"),
            ]
        );
        let xunit = write(
            dir.path(),
            "x.xml",
            r#"<assemblies><assembly><collection name="C"><test name="X.a" type="X" result="Pass" time="0.5"/><test name="X.b" result="Fail"><failure><message>boom</message></failure></test><test name="X.c" result="Skip"><reason>slow</reason></test></collection></assembly></assemblies>"#,
        );
        assert_eq!(
            cases(&read(&xunit, TestFormat::XUnit)),
            [
                ("C", "X.b", "failed", 0, "boom"),
                ("X", "X.a", "passed", 500, ""),
                ("C", "X.c", "skipped", 0, "slow"),
            ]
        );
        let trx = write(
            dir.path(),
            "t.trx",
            r#"<TestRun xmlns="http://microsoft.com/schemas/VisualStudio/TeamTest/2010"><Results><UnitTestResult testName="T.a" outcome="Passed" duration="00:01:01.5000000"/><UnitTestResult testName="T.b" outcome="Failed"><Output><ErrorInfo><Message>Assert.Equal failed</Message><StackTrace>at T.b</StackTrace></ErrorInfo></Output></UnitTestResult><UnitTestResult testName="T.c" outcome="NotExecuted"/></Results></TestRun>"#,
        );
        assert_eq!(
            cases(&read(&trx, TestFormat::VSTest)),
            [
                ("run", "T.b", "failed", 0, "Assert.Equal failed\nat T.b"),
                ("run", "T.a", "passed", 61_500, ""),
                ("run", "T.c", "skipped", 0, ""),
            ]
        );
        let ctest = write(
            dir.path(),
            "c.xml",
            r#"<Site><Testing><TestList><Test>./c1</Test></TestList><Test Status="passed"><Name>c1</Name><Results><NamedMeasurement type="numeric/double" name="Execution Time"><Value>0.125</Value></NamedMeasurement></Results></Test><Test Status="failed"><Name>c2</Name><Results><Measurement><Value>segfault</Value></Measurement></Results></Test><Test Status="notrun"><Name>c3</Name></Test></Testing></Site>"#,
        );
        assert_eq!(
            cases(&read(&ctest, TestFormat::CTest)),
            [
                ("run", "c2", "failed", 0, "segfault"),
                ("run", "c1", "passed", 125, ""),
                ("run", "c3", "skipped", 0, ""),
            ]
        );
        let broken = write(dir.path(), "b.xml", "<testsuite><testcase></testsuite>");
        assert!(read_test_results(&broken, TestFormat::JUnit, "run").is_err());
    }

    #[test]
    fn messages_and_cases_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let long = "é".repeat(MAX_TEST_MESSAGE_BYTES);
        let mut xml =
            format!(r#"<testsuite><testcase name="long"><failure>{long}</failure></testcase>"#);
        for n in 0..MAX_TEST_CASES + 5 {
            xml.push_str(&format!(r#"<testcase name="p{n}"/>"#));
        }
        xml.push_str(r#"<testcase name="late"><failure/></testcase></testsuite>"#);
        let path = write(dir.path(), "big.xml", &xml);
        let s = read(&path, TestFormat::JUnit);
        assert_eq!((s.passed, s.failed), (MAX_TEST_CASES as u64 + 5, 2));
        assert_eq!(s.cases().count(), MAX_TEST_CASES);
        let failed: Vec<&str> = s
            .cases()
            .filter(|c| c.outcome == TestOutcome::Failed)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(failed, ["long", "late"], "failed cases are kept first");
        let message = &s.cases().next().unwrap().message;
        assert!(message.len() <= MAX_TEST_MESSAGE_BYTES && message.len() > 4000);
        assert!(message.chars().all(|c| c == 'é'));
        let mut merged = TestSummary::default();
        merged.merge(s.clone());
        merged.merge(s);
        assert_eq!(merged.total(), 2 * (MAX_TEST_CASES as u64 + 7));
        assert_eq!(merged.cases().count(), MAX_TEST_CASES);
        assert_eq!(
            merged
                .cases()
                .filter(|c| c.outcome == TestOutcome::Failed)
                .count(),
            4
        );
    }

    #[test]
    fn coverage_summaries() {
        let dir = tempfile::tempdir().unwrap();
        let cobertura = write(
            dir.path(),
            "c.xml",
            r#"<?xml version="1.0"?><coverage line-rate="0.5" lines-covered="5" lines-valid="10" branches-covered="1" branches-valid="4"><packages/></coverage>"#,
        );
        let s = read_coverage(&cobertura).unwrap();
        assert_eq!(
            (
                s.format,
                s.lines_covered,
                s.lines_total,
                s.branches_covered,
                s.branches_total
            ),
            ("Cobertura", 5, 10, 1, 4)
        );
        let jacoco = write(
            dir.path(),
            "j.xml",
            r#"<report name="r"><package name="p"><counter type="LINE" missed="100" covered="100"/></package><counter type="LINE" missed="3" covered="7"/><counter type="BRANCH" missed="1" covered="1"/></report>"#,
        );
        let s = read_coverage(&jacoco).unwrap();
        assert_eq!(
            (s.format, s.lines_covered, s.lines_total, s.branches_total),
            ("JaCoCo", 7, 10, 2)
        );
        assert_eq!(percent(7, 10), "70.00%");
    }
}
