//! Small helpers shared by the runner's integration tests: bash process specs and pid checks.

use std::path::Path;
use std::time::Duration;

use lockgate_runner::process::{ProcessLimits, ProcessSpec};

/// A spec that runs `script` with bash in `dir`, with PATH from the test's environment.
pub fn bash(dir: &Path, script: &str) -> ProcessSpec {
    ProcessSpec {
        program: "bash".into(),
        args: vec![
            "--noprofile".into(),
            "--norc".into(),
            "-c".into(),
            script.into(),
        ],
        cwd: dir.to_path_buf(),
        env: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())],
    }
}

/// Limits with short, test-sized grace periods.
pub fn quick_limits(timeout: Option<Duration>) -> ProcessLimits {
    ProcessLimits {
        timeout,
        kill_grace: Duration::from_millis(300),
        drain_grace: Duration::from_millis(200),
    }
}

/// True while a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Waits up to `limit` for a file to appear and returns its trimmed content.
pub fn wait_for_file(path: &Path, limit: Duration) -> String {
    let start = std::time::Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.trim().is_empty()
        {
            return text.trim().to_string();
        }
        assert!(start.elapsed() < limit, "{} did not appear", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}
