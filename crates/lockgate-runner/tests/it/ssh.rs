//! SSH@0 and CopyFilesOverSSH@0 against a real sshd (Debian's openssh-server, started per test on
//! 127.0.0.1 with its own keys): commands, inline and script runs, a failing command, failOnStdErr,
//! remote `##vso` lines left alone, copying a tree with a pattern, cleanTargetFolder, flattenFolders and
//! overwrite, password sign-in through the askpass helper, and the key never reaching the log.

use std::collections::BTreeMap;
use std::path::Path;

use lockgate_runner::events::{Event, TaskResult};
use lockgate_runner::spec::{InitialVariable, StepAction, StepSpec};
use lockgate_runner::test_sshd::Sshd;

use crate::helpers::{job, run, script, step_results};

fn task(name: &str, inputs: &[(&str, &str)]) -> StepSpec {
    let mut step = script(None, "");
    step.display_name = name.into();
    step.action = StepAction::Task {
        name: name.into(),
        major: 0,
        inputs: inputs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect::<BTreeMap<_, _>>(),
    };
    // Every step runs, whatever the ones before it did.
    step.condition = Some("always()".into());
    step
}

/// The variables a job gets for connection `web` (as the server gives them, secret ones secret).
fn connection(sshd: &Sshd, key: Option<&str>, password: Option<&str>) -> Vec<InitialVariable> {
    let mut vars = vec![
        InitialVariable::new("web.Host", "127.0.0.1"),
        InitialVariable::new("web.Port", sshd.port.to_string()),
        InitialVariable::new("web.Username", &sshd.user),
    ];
    for (name, value) in [("web.PrivateKey", key), ("web.Password", password)] {
        if let Some(value) = value {
            let mut secret = InitialVariable::new(name, value);
            secret.secret = true;
            vars.push(secret);
        }
    }
    vars
}

fn errors(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Issue { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// Files left under `dir` whose name ends with one of `suffixes`.
fn leftovers(dir: &Path, suffixes: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if suffixes.iter().any(|s| path.to_string_lossy().ends_with(s)) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// The key's lines that are long enough to be unmistakable.
fn key_lines(key: &str) -> Vec<&str> {
    key.lines()
        .filter(|l| l.len() > 20 && !l.starts_with("-----"))
        .collect()
}

#[test]
fn ssh_runs_commands_inline_and_script_and_fails_on_errors() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let remote = sshd.folder().join("remote");
    std::fs::create_dir_all(&remote).unwrap();
    let script_file = dir.path().join("deploy.sh");
    std::fs::write(&script_file, "#!/bin/sh\r\necho \"script args=$1,$2\"\r\n").unwrap();
    let marker = remote.join("second.txt");
    let commands = format!(
        "echo first-`expr 40 + 2`\n\n  echo second > {}  \necho '##vso[task.setvariable variable=leak]yes'",
        marker.display()
    );
    let spec = job(
        vec![
            task("SSH", &[("sshEndpoint", "web"), ("commands", &commands)]),
            task(
                "SSH",
                &[
                    ("sshEndpoint", "web"),
                    ("runOptions", "inline"),
                    (
                        "inline",
                        "case \"$0\" in *lockgate-*inline.sh) echo inline-from-a-copied-file;; esac",
                    ),
                ],
            ),
            task(
                "SSH",
                &[
                    ("sshEndpoint", "web"),
                    ("runOptions", "script"),
                    ("scriptPath", &script_file.display().to_string()),
                    ("args", "one two"),
                ],
            ),
            task(
                "SSH",
                &[
                    ("sshEndpoint", "web"),
                    ("commands", "true\nexit 7\necho never-printed"),
                ],
            ),
            task(
                "SSH",
                &[("sshEndpoint", "web"), ("commands", "echo on-stderr >&2")],
            ),
            task(
                "SSH",
                &[
                    ("sshEndpoint", "web"),
                    ("commands", "echo on-stderr-allowed >&2"),
                    ("failOnStdErr", "false"),
                ],
            ),
            script(None, "echo \"leak=${LEAK:-unset}\""),
            task(
                "SSH",
                &[
                    ("sshEndpoint", "web"),
                    ("commands", "echo leftovers=`ls -a | grep -c '^.lockgate-'`"),
                ],
            ),
        ],
        connection(&sshd, Some(&sshd.private_key), None),
    );
    let mut spec = spec;
    spec.phases[0].steps[6].condition = Some("always()".into());
    let (outcome, events, sink) = run(dir.path(), &spec);
    let lines = sink.log_lines();
    let errors = errors(&events);
    assert_eq!(
        step_results(&events),
        [
            TaskResult::Succeeded,
            TaskResult::Succeeded,
            TaskResult::Succeeded,
            TaskResult::Failed,
            TaskResult::Failed,
            TaskResult::Succeeded,
            TaskResult::Succeeded,
            TaskResult::Succeeded,
        ],
        "{lines:#?}\n{errors:#?}"
    );
    assert_eq!(outcome.result, TaskResult::Failed);
    let has = |text: &str| lines.iter().any(|l| l.contains(text));
    assert!(has("first-42"), "{lines:#?}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "second\n");
    // The remote output's logging command is printed, not run.
    assert!(
        has("##vso[task.setvariable variable=leak]yes"),
        "{lines:#?}"
    );
    assert!(has("leak=unset"), "{lines:#?}");
    assert!(has("inline-from-a-copied-file"), "{lines:#?}");
    // CRLF line endings were dropped before the script ran.
    assert!(has("script args=one,two"), "{lines:#?}");
    assert!(!has("never-printed"), "{lines:#?}");
    let target = format!("{}@127.0.0.1:{}", sshd.user, sshd.port);
    assert!(
        errors.contains(&format!("`exit 7` on {target} exited with code 7")),
        "{errors:#?}"
    );
    assert!(
        errors.contains(&format!(
            "`echo on-stderr >&2` on {target} wrote to the standard error stream (failOnStdErr is true)"
        )),
        "{errors:#?}"
    );
    assert!(has("on-stderr-allowed"), "{lines:#?}");
    // The scripts copied to the remote home folder were removed after they ran.
    assert!(has("leftovers=0"), "{lines:#?}");
    // Neither the key nor its file reaches the events; the key and askpass files are gone.
    let everything = format!("{events:?}");
    for line in key_lines(&sshd.private_key) {
        assert!(!everything.contains(line), "the key leaked");
    }
    assert!(!everything.contains(".key"), "the key file was named");
    assert_eq!(
        leftovers(dir.path(), &[".key", ".askpass"]),
        Vec::<String>::new()
    );
    assert!(sshd.log().contains("Accepted publickey"), "{}", sshd.log());
}

#[test]
fn copy_files_over_ssh_copies_matches_cleans_flattens_and_keeps() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("site");
    for (path, text) in [
        ("index.txt", "index"),
        ("a/one.txt", "one"),
        ("a/b/two.txt", "two"),
        ("a/skip.log", "log"),
    ] {
        let path = source.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let target = sshd.folder().join("srv/site");
    std::fs::create_dir_all(target.join("old-folder")).unwrap();
    std::fs::write(target.join("old.txt"), "old").unwrap();
    std::fs::write(target.join(".keep"), "hidden").unwrap();
    let flat = sshd.folder().join("flat");
    std::fs::create_dir_all(&flat).unwrap();
    std::fs::write(flat.join("two.txt"), "kept").unwrap();
    let source_text = source.display().to_string();
    let spec = job(
        vec![
            task(
                "CopyFilesOverSSH",
                &[
                    ("sshEndpoint", "web"),
                    ("sourceFolder", &source_text),
                    ("contents", "**/*.txt"),
                    ("targetFolder", &target.display().to_string()),
                    ("cleanTargetFolder", "true"),
                ],
            ),
            task(
                "CopyFilesOverSSH",
                &[
                    ("sshEndpoint", "web"),
                    ("sourceFolder", &source_text),
                    ("contents", "a/**\n!**/*.log"),
                    ("targetFolder", &flat.display().to_string()),
                    ("flattenFolders", "true"),
                    ("overwrite", "false"),
                ],
            ),
            task(
                "CopyFilesOverSSH",
                &[
                    ("sshEndpoint", "web"),
                    ("sourceFolder", &source_text),
                    ("targetFolder", "C:\\site"),
                    ("isWindowsOnTarget", "true"),
                ],
            ),
            task(
                "CopyFilesOverSSH",
                &[
                    ("sshEndpoint", "web"),
                    ("sourceFolder", &source_text),
                    ("contents", "**/*.none"),
                    ("failOnEmptySource", "true"),
                ],
            ),
        ],
        connection(&sshd, Some(&sshd.private_key), None),
    );
    let (_, events, sink) = run(dir.path(), &spec);
    let lines = sink.log_lines();
    let errors = errors(&events);
    assert_eq!(
        step_results(&events),
        [
            TaskResult::Succeeded,
            TaskResult::Succeeded,
            TaskResult::Failed,
            TaskResult::Failed
        ],
        "{lines:#?}\n{errors:#?}"
    );
    let read = |path: &Path| std::fs::read_to_string(path).ok();
    assert_eq!(read(&target.join("index.txt")).as_deref(), Some("index"));
    assert_eq!(read(&target.join("a/one.txt")).as_deref(), Some("one"));
    assert_eq!(read(&target.join("a/b/two.txt")).as_deref(), Some("two"));
    assert!(!target.join("a/skip.log").exists());
    // Cleaned: the old file and folder went, the hidden file stayed (cleanHiddenFilesInTarget false).
    assert!(!target.join("old.txt").exists());
    assert!(!target.join("old-folder").exists());
    assert_eq!(read(&target.join(".keep")).as_deref(), Some("hidden"));
    // Flattened, and the existing two.txt kept (overwrite false).
    assert_eq!(read(&flat.join("one.txt")).as_deref(), Some("one"));
    assert_eq!(read(&flat.join("two.txt")).as_deref(), Some("kept"));
    assert!(!flat.join("a").exists());
    assert!(
        lines
            .iter()
            .any(|l| l.contains("two.txt already exists") && l.contains("skipped")),
        "{lines:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("isWindowsOnTarget: true is not supported")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("no files matching `**/*.none`")),
        "{errors:#?}"
    );
    let everything = format!("{events:?}");
    for line in key_lines(&sshd.private_key) {
        assert!(!everything.contains(line), "the key leaked");
    }
}

/// A password connection signs in through the askpass helper: sshd records the password attempt
/// (this machine's account has no usable password, so it is refused), the step fails naming ssh's
/// exit code 255, and the password appears nowhere.
#[test]
fn ssh_password_goes_through_askpass_and_a_refusal_fails_clearly() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let password = "Not-The-Password-731";
    let spec = job(
        vec![task(
            "SSH",
            &[("sshEndpoint", "web"), ("commands", "echo signed-in")],
        )],
        connection(&sshd, None, Some(password)),
    );
    let (_, events, sink) = run(dir.path(), &spec);
    let lines = sink.log_lines();
    let errors = errors(&events);
    assert_eq!(step_results(&events), [TaskResult::Failed], "{lines:#?}");
    assert!(!lines.iter().any(|l| l == "signed-in"), "{lines:#?}");
    assert!(
        errors.iter().any(|e| e.contains("exited with code 255")
            && e.contains("the connection or the sign-in may have failed")),
        "{errors:#?}"
    );
    assert!(
        sshd.log()
            .contains(&format!("Failed password for {}", sshd.user)),
        "{}",
        sshd.log()
    );
    assert!(!format!("{events:?}").contains(password));
    assert_eq!(
        leftovers(dir.path(), &[".key", ".askpass"]),
        Vec::<String>::new()
    );
}

/// A job without the connection's variables fails the step naming the missing variable.
#[test]
fn ssh_without_connection_variables_fails_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let spec = job(
        vec![task("SSH", &[("sshEndpoint", "web"), ("commands", "true")])],
        vec![],
    );
    let (_, events, _) = run(dir.path(), &spec);
    assert_eq!(step_results(&events), [TaskResult::Failed]);
    assert!(
        errors(&events)
            .iter()
            .any(|e| e.contains("SSH service connection `web`: variable web.Host is not set")),
        "{:?}",
        errors(&events)
    );
}
