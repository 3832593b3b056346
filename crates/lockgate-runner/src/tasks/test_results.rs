//! PublishTestResults@2 (JUnit, NUnit 2 and 3, xUnit 2, VSTest TRX, CTest) and PublishCodeCoverageResults@1
//! and @2 (Cobertura and JaCoCo summaries). Results are read with a streaming XML reader, summarised in the
//! step log and as an event, and kept in the run folder. Inputs and defaults from the task reference pages
//! (docs: tasks/reference/publish-test-results-v2, publish-code-coverage-results-v1/v2).

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event as XmlEvent};
use serde::Serialize;

use crate::events::{Event, TaskResult};
use crate::glob::{PatternSet, list_files};
use crate::job::StepContext;
use crate::tasks::{Task, TaskError, TaskFuture, TaskRegistry};

pub fn register(registry: &mut TaskRegistry) {
    registry.register("PublishTestResults", 2, Arc::new(PublishTestResults));
    registry.register("PublishCodeCoverageResults", 1, Arc::new(PublishCoverage));
    registry.register("PublishCodeCoverageResults", 2, Arc::new(PublishCoverage));
}

/// Outcome counts of a set of result files, with the names of failed tests.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct TestSummary {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub failures: Vec<String>,
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

enum Outcome {
    Passed,
    Failed,
    Skipped,
}

impl TestSummary {
    fn add(&mut self, name: String, outcome: Outcome) {
        match outcome {
            Outcome::Passed => self.passed += 1,
            Outcome::Failed => {
                self.failed += 1;
                self.failures.push(name);
            }
            Outcome::Skipped => self.skipped += 1,
        }
    }

    fn merge(&mut self, other: TestSummary) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.failures.extend(other.failures);
    }
}

/// Reads one result file of the given format.
pub fn read_test_results(path: &Path, format: TestFormat) -> Result<TestSummary, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut reader = Reader::from_reader(BufReader::new(file));
    let mut buf = Vec::new();
    let mut summary = TestSummary::default();
    // JUnit: the open test case and what its children said.
    let mut junit_case: Option<(String, Outcome)> = None;
    // CTest: the open <Test> status, and whether the next text is its <Name>.
    let mut ctest: Option<(Outcome, String)> = None;
    let mut in_ctest_name = false;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("{}: invalid XML: {e}", path.display()))?;
        let (element, empty) = match &event {
            XmlEvent::Start(e) => (Some(e.clone()), false),
            XmlEvent::Empty(e) => (Some(e.clone()), true),
            XmlEvent::End(e) => {
                let name = e.local_name();
                let name = name.as_ref();
                if format == TestFormat::JUnit && name == "testcase" {
                    if let Some((case, outcome)) = junit_case.take() {
                        summary.add(case, outcome);
                    }
                } else if format == TestFormat::CTest && name == "Test" {
                    if let Some((outcome, test)) = ctest.take() {
                        summary.add(test, outcome);
                    }
                } else if name == "Name" {
                    in_ctest_name = false;
                }
                (None, false)
            }
            XmlEvent::Text(text) if in_ctest_name => {
                if let Some((_, name)) = ctest.as_mut() {
                    name.push_str(text.as_ref());
                }
                (None, false)
            }
            XmlEvent::Eof => break,
            _ => (None, false),
        };
        if let Some(e) = element {
            let local = e.local_name();
            let local = local.as_ref();
            match format {
                TestFormat::JUnit => {
                    if local == "testcase" {
                        let class = attribute(&e, "classname")
                            .map(|c| format!("{c}."))
                            .unwrap_or_default();
                        let name = format!("{class}{}", attribute(&e, "name").unwrap_or_default());
                        if empty {
                            summary.add(name, Outcome::Passed);
                        } else {
                            junit_case = Some((name, Outcome::Passed));
                        }
                    } else if let Some((_, outcome)) = junit_case.as_mut() {
                        match local {
                            "failure" | "error" => *outcome = Outcome::Failed,
                            "skipped" if !matches!(outcome, Outcome::Failed) => {
                                *outcome = Outcome::Skipped
                            }
                            _ => {}
                        }
                    }
                }
                TestFormat::NUnit if local == "test-case" => {
                    let name = attribute(&e, "fullname")
                        .or_else(|| attribute(&e, "name"))
                        .unwrap_or_default();
                    let result = attribute(&e, "result")
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    let executed =
                        attribute(&e, "executed").is_none_or(|v| v.eq_ignore_ascii_case("true"));
                    let outcome = match result.as_str() {
                        "passed" | "success" if executed => Outcome::Passed,
                        "failed" | "failure" | "error" => Outcome::Failed,
                        _ => Outcome::Skipped,
                    };
                    summary.add(name, outcome);
                }
                TestFormat::XUnit if local == "test" => {
                    let name = attribute(&e, "name").unwrap_or_default();
                    let outcome = match attribute(&e, "result")
                        .unwrap_or_default()
                        .to_ascii_lowercase()
                        .as_str()
                    {
                        "pass" => Outcome::Passed,
                        "fail" => Outcome::Failed,
                        _ => Outcome::Skipped,
                    };
                    summary.add(name, outcome);
                }
                TestFormat::VSTest if local == "UnitTestResult" => {
                    let name = attribute(&e, "testName").unwrap_or_default();
                    let outcome = match attribute(&e, "outcome")
                        .unwrap_or_default()
                        .to_ascii_lowercase()
                        .as_str()
                    {
                        "passed" => Outcome::Passed,
                        "failed" | "error" | "timeout" | "aborted" => Outcome::Failed,
                        _ => Outcome::Skipped,
                    };
                    summary.add(name, outcome);
                }
                TestFormat::CTest => {
                    if local == "Test" && attribute(&e, "Status").is_some() {
                        let outcome = match attribute(&e, "Status")
                            .unwrap_or_default()
                            .to_ascii_lowercase()
                            .as_str()
                        {
                            "passed" => Outcome::Passed,
                            "failed" => Outcome::Failed,
                            _ => Outcome::Skipped,
                        };
                        ctest = Some((outcome, String::new()));
                    } else if local == "Name" && ctest.is_some() && !empty {
                        in_ctest_name = true;
                    }
                }
                _ => {}
            }
        }
        buf.clear();
    }
    Ok(summary)
}

fn find_files(
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
                step.warning(&message);
                return Ok(TaskResult::SucceededWithIssues);
            }
            let summary = publish_results(step, &format_text, format, &files);
            if summary.failed > 0 && fail_on_failed {
                return Err(TaskError(format!("{} test(s) failed", summary.failed)));
            }
            Ok(TaskResult::Succeeded)
        })
    }
}

/// Reads result files, logs the summary and failed tests, keeps it in the run folder and reports it as
/// an event. Shared by PublishTestResults@2 and `##vso[results.publish]`.
pub fn publish_results(
    step: &StepContext<'_, '_>,
    format_text: &str,
    format: TestFormat,
    files: &[PathBuf],
) -> TestSummary {
    let mut summary = TestSummary::default();
    for file in files {
        match read_test_results(file, format) {
            Ok(one) => summary.merge(one),
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
    for failure in summary.failures.iter().take(100) {
        step.log(&format!("  failed: {failure}"));
    }
    let folder = step.job.run.run_dir.join("test-results");
    if std::fs::create_dir_all(&folder).is_ok() {
        let path = folder.join(format!("{}-step{}.json", step.job.id, step.index));
        let _ = std::fs::write(
            &path,
            serde_json::to_vec_pretty(&summary).unwrap_or_default(),
        );
    }
    step.job.sink.event(Event::TestResults {
        job: step.job.id.clone(),
        passed: summary.passed,
        failed: summary.failed,
        skipped: summary.skipped,
        failures: summary.failures.clone(),
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

    #[test]
    fn every_format_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let junit = write(
            dir.path(),
            "j.xml",
            r#"<testsuites><testsuite><testcase classname="A" name="ok"/><testcase classname="A" name="bad"><failure message="x"/></testcase><testcase name="skip"><skipped/></testcase><testcase name="err"><error/></testcase></testsuite></testsuites>"#,
        );
        let s = read_test_results(&junit, TestFormat::JUnit).unwrap();
        assert_eq!((s.passed, s.failed, s.skipped), (1, 2, 1));
        assert_eq!(s.failures, ["A.bad", "err"]);
        let nunit3 = write(
            dir.path(),
            "n.xml",
            r#"<test-run><test-suite><test-case fullname="N.a" result="Passed"/><test-case fullname="N.b" result="Failed"><failure/></test-case><test-case fullname="N.c" result="Skipped"/></test-suite></test-run>"#,
        );
        let s = read_test_results(&nunit3, TestFormat::NUnit).unwrap();
        assert_eq!(
            (s.passed, s.failed, s.skipped, s.failures.clone()),
            (1, 1, 1, vec!["N.b".to_string()])
        );
        let xunit = write(
            dir.path(),
            "x.xml",
            r#"<assemblies><assembly><collection><test name="X.a" result="Pass"/><test name="X.b" result="Fail"/><test name="X.c" result="Skip"/></collection></assembly></assemblies>"#,
        );
        let s = read_test_results(&xunit, TestFormat::XUnit).unwrap();
        assert_eq!((s.passed, s.failed, s.skipped), (1, 1, 1));
        let trx = write(
            dir.path(),
            "t.trx",
            r#"<TestRun xmlns="http://microsoft.com/schemas/VisualStudio/TeamTest/2010"><Results><UnitTestResult testName="T.a" outcome="Passed"/><UnitTestResult testName="T.b" outcome="Failed"/><UnitTestResult testName="T.c" outcome="NotExecuted"/></Results></TestRun>"#,
        );
        let s = read_test_results(&trx, TestFormat::VSTest).unwrap();
        assert_eq!(
            (s.passed, s.failed, s.skipped, s.failures.clone()),
            (1, 1, 1, vec!["T.b".to_string()])
        );
        let ctest = write(
            dir.path(),
            "c.xml",
            r#"<Site><Testing><Test Status="passed"><Name>c1</Name></Test><Test Status="failed"><Name>c2</Name></Test><Test Status="notrun"><Name>c3</Name></Test></Testing></Site>"#,
        );
        let s = read_test_results(&ctest, TestFormat::CTest).unwrap();
        assert_eq!(
            (s.passed, s.failed, s.skipped, s.failures.clone()),
            (1, 1, 1, vec!["c2".to_string()])
        );
        let broken = write(dir.path(), "b.xml", "<testsuite><testcase></testsuite>");
        assert!(read_test_results(&broken, TestFormat::JUnit).is_err());
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
