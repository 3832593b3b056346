//! A throwaway PostgreSQL for tests (`cfg(test)` or the `test-postgres` feature): a fresh cluster
//! made with `initdb` in a temporary folder and started with `pg_ctl` on 127.0.0.1 at a free port,
//! stopped when the handle drops; or, when `LOCKGATE_TEST_POSTGRES` holds the URL of a running
//! server, a fresh database created there and dropped at the end. When neither is possible the test
//! fails saying how to get PostgreSQL: tests never skip silently.
//!
//! The programs are looked for in `LOCKGATE_POSTGRES_BIN`, on `PATH`, then in Debian's
//! `/usr/lib/postgresql/<version>/bin` (the newest). `initdb` refuses to run as root, so as root
//! the cluster belongs to, and runs as, the `nobody` user.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The environment variable naming a PostgreSQL server the tests may create databases on
/// (`postgres://user@127.0.0.1:5432/postgres`).
pub const URL_VARIABLE: &str = "LOCKGATE_TEST_POSTGRES";

/// A PostgreSQL database only this test uses; see the module documentation.
pub struct TestPostgres {
    url: String,
    owner: Owner,
}

enum Owner {
    Cluster {
        bin: PathBuf,
        folder: tempfile::TempDir,
        user: Option<(u32, u32)>,
    },
    Database {
        server_url: String,
        name: String,
    },
}

impl TestPostgres {
    /// Starts a cluster (or creates a database on `LOCKGATE_TEST_POSTGRES`); panics with the reason
    /// when that fails.
    pub async fn start() -> TestPostgres {
        match std::env::var(URL_VARIABLE) {
            Ok(url) if !url.trim().is_empty() => Self::database_on(url.trim()).await,
            _ => Self::cluster().await,
        }
    }

    /// The URL of the database (`postgres://lockgate@127.0.0.1:<port>/postgres`).
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn database_on(server_url: &str) -> TestPostgres {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "lockgate_test_{}_{}_{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed),
            crate::now_millis()
        );
        let pool = sqlx::PgPool::connect(server_url).await.unwrap_or_else(|e| {
            panic!("{URL_VARIABLE} is set but its server cannot be reached: {e}")
        });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("cannot create a test database on {URL_VARIABLE}: {e}"));
        pool.close().await;
        let url = match server_url.rsplit_once('/') {
            Some((server, _)) if server.contains("://") && server.len() > "postgres://".len() => {
                format!("{server}/{name}")
            }
            _ => panic!("{URL_VARIABLE} must be a URL ending in /<database>"),
        };
        TestPostgres {
            url,
            owner: Owner::Database {
                server_url: server_url.to_string(),
                name,
            },
        }
    }

    async fn cluster() -> TestPostgres {
        let bin = binaries().unwrap_or_else(|| {
            panic!(
                "no PostgreSQL for the tests: `initdb` and `pg_ctl` were found neither in \
                 LOCKGATE_POSTGRES_BIN, on PATH nor in /usr/lib/postgresql/<version>/bin. Install \
                 PostgreSQL (Debian: `apt-get install postgresql`) or set {URL_VARIABLE} to the \
                 postgres:// URL of a server on which the user may create databases"
            )
        });
        let folder = tempfile::Builder::new()
            .prefix("lockgate-test-postgres-")
            .tempdir()
            .expect("a temporary folder for the test cluster");
        let user = unprivileged_user();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(folder.path(), Some(uid), Some(gid))
                .expect("the test cluster's folder given to the unprivileged user");
        }
        let data = folder.path().join("data");
        let init = run(
            &bin,
            "initdb",
            user,
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "lockgate".as_ref(),
                "--auth=trust".as_ref(),
                "--no-sync".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-locale".as_ref(),
            ],
        )
        .await;
        if let Err(output) = init {
            panic!("initdb failed for the test cluster: {output}");
        }
        let log = folder.path().join("server.log");
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let options = format!(
                "-h 127.0.0.1 -p {port} -k {} -F -c synchronous_commit=off -c full_page_writes=off \
                 -c max_connections=200",
                folder.path().display()
            );
            let started = run(
                &bin,
                "pg_ctl",
                user,
                &[
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "60".as_ref(),
                    "-o".as_ref(),
                    options.as_ref(),
                    "start".as_ref(),
                ],
            )
            .await;
            match started {
                Ok(()) => {
                    return TestPostgres {
                        url: format!("postgres://lockgate@127.0.0.1:{port}/postgres"),
                        owner: Owner::Cluster { bin, folder, user },
                    };
                }
                // Another process may have taken the port between the probe and the start.
                Err(output) => {
                    last = format!(
                        "{output}\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    )
                }
            }
        }
        panic!("the test cluster did not start: {last}");
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        match &self.owner {
            Owner::Cluster { bin, folder, user } => {
                let mut stop = std::process::Command::new(bin.join("pg_ctl"));
                stop.arg("-D")
                    .arg(folder.path().join("data"))
                    .args(["-m", "immediate", "-w", "stop"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null());
                if let Some((uid, gid)) = user {
                    std::os::unix::process::CommandExt::uid(&mut stop, *uid);
                    std::os::unix::process::CommandExt::gid(&mut stop, *gid);
                }
                let _ = stop.status();
            }
            Owner::Database { server_url, name } => {
                let (server_url, name) = (server_url.clone(), name.clone());
                // Drop runs inside the test's runtime: the clean-up gets a thread of its own.
                let _ = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(async {
                        let pool = sqlx::PgPool::connect(&server_url).await?;
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&pool)
                        .await?;
                        Ok::<_, sqlx::Error>(())
                    })?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                })
                .join();
            }
        }
    }
}

/// The folder holding `initdb` and `pg_ctl`.
fn binaries() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("LOCKGATE_POSTGRES_BIN") {
        let dir = PathBuf::from(dir);
        return has_both(&dir).then_some(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_both(&dir) {
                // `initdb` finds `postgres` next to its real file, so links are followed.
                let real = std::fs::canonicalize(dir.join("initdb")).ok()?;
                return real.parent().map(Path::to_path_buf);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_both(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}

/// As root, the uid and gid of `nobody` (initdb refuses root); otherwise `None` (run as we are).
fn unprivileged_user() -> Option<(u32, u32)> {
    let me = std::fs::metadata("/proc/self").ok()?;
    if std::os::unix::fs::MetadataExt::uid(&me) != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let nobody = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&"nobody") && fields.len() > 3)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    });
    Some(nobody.unwrap_or((65534, 65534)))
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port on 127.0.0.1")
}

/// Runs `bin/program args` (as `user` when given); `Err` with its output when it fails.
async fn run(
    bin: &Path,
    program: &str,
    user: Option<(u32, u32)>,
    args: &[&std::ffi::OsStr],
) -> Result<(), String> {
    let mut command = tokio::process::Command::new(bin.join(program));
    command.args(args).current_dir("/").kill_on_drop(true);
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    let output = command
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", bin.join(program).display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} exited with {}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
