//! A throwaway OpenSSH server for tests of the SSH tasks (feature `test-sshd`): Debian's
//! `/usr/sbin/sshd` started as a child process on 127.0.0.1 on a free port, with its own host key,
//! configuration, authorized client key (generated with `ssh-keygen`) and log, all in a temp folder,
//! running as the current user. Missing sshd is a test failure naming the package `.ci/run` installs.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    pub port: u16,
    /// The client's private key (OpenSSH format), authorized for the current user.
    pub private_key: String,
    /// The current user's name.
    pub user: String,
    dir: tempfile::TempDir,
    child: Child,
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (Debian package openssh-client, installed by .ci/run) must be on PATH");
    assert!(status.success(), "ssh-keygen failed for {}", path.display());
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// `id FLAG` (`-un`: the user's name, `-u`: the user's number).
fn id(flag: &str) -> String {
    let output = Command::new("id").arg(flag).output().expect("id");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

impl Sshd {
    /// Starts the server; panics (failing the test) when sshd is missing or does not come up.
    pub fn start() -> Self {
        assert!(
            Path::new(SSHD).is_file(),
            "{SSHD} is missing: the SSH task tests need Debian's openssh-server, which .ci/run \
             installs (apt-get install openssh-server openssh-client)"
        );
        let is_root = id("-u") == "0";
        if is_root {
            // sshd started as root wants its privilege separation folder, which systemd creates
            // at boot (RuntimeDirectory) and containers often lack.
            std::fs::create_dir_all("/run/sshd").expect("cannot create /run/sshd");
        }
        let dir = tempfile::tempdir().expect("temp folder");
        let host_key = dir.path().join("host_key");
        let client_key = dir.path().join("client_key");
        keygen(&host_key);
        keygen(&client_key);
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized).expect("authorized_keys");
        let private_key = std::fs::read_to_string(&client_key).expect("client key");
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            let log = dir.path().join("sshd.log");
            let _ = std::fs::remove_file(&log);
            std::fs::write(
                &config,
                format!(
                    "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nAuthorizedKeysFile {}\n\
                     UsePAM no\nStrictModes no\nPidFile {}\nPermitRootLogin yes\n\
                     PasswordAuthentication yes\nKbdInteractiveAuthentication no\n\
                     Subsystem sftp internal-sftp\n",
                    host_key.display(),
                    authorized.display(),
                    dir.path().join("sshd.pid").display()
                ),
            )
            .expect("sshd_config");
            let mut child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .arg("-E")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cannot start sshd");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                last_log = std::fs::read_to_string(&log).unwrap_or_default();
                if last_log.contains("Server listening on") {
                    return Self {
                        port,
                        private_key,
                        user: id("-un"),
                        dir,
                        child,
                    };
                }
                if child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("sshd did not start: {last_log}");
    }

    /// What sshd logged so far (sign-ins accepted and refused).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// A folder for the test's own files, removed with the server.
    pub fn folder(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
