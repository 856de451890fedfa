//! A throwaway PostgreSQL server from Debian's `postgresql` package, one per test binary, with a
//! fresh database for each test that asks.
//!
//! One server per binary, not per test: `initdb` and a start cost seconds, and a database per
//! test keeps tests apart just as well. A static is never dropped, so the server cannot be
//! stopped from a `Drop`; instead a small guardian shell started with the server holds the read
//! end of a pipe whose write end only this process has. When the process ends, however it ends
//! (tests done, panic, `SIGKILL`), the kernel closes the pipe, the guardian reads end-of-file,
//! stops the server at once and removes its directory. A parent-death signal would not do: it
//! fires when the *thread* that started the child ends, which for a test is its own end.

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The `[auth] secret` of test gateways on PostgreSQL: every gateway on one database must share
/// one.
#[allow(dead_code)]
pub const SHARED_SECRET: &str = "several-gateways-share-this-one-secret";

/// How long the server may take to accept connections, on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The running server of this test binary.
pub struct TestPostgres {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// The folder holding its data and its unix socket.
    pub dir: PathBuf,
    bin: PathBuf,
    /// Kept open for the life of the process: its closing tells the guardian to stop.
    _guardian: Mutex<(Child, ChildStdin)>,
}

static SERVER: OnceLock<TestPostgres> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The server of this test binary, started on first use.
pub fn server() -> &'static TestPostgres {
    SERVER.get_or_init(TestPostgres::start)
}

/// A new, empty database on the server: its connection URL (TCP, trusted local login).
pub fn fresh_database() -> String {
    let server = server();
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    let out = Command::new(server.bin.join("createdb"))
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
        .args(["-U", "postgres", &name])
        .output()
        .expect("run createdb");
    assert!(
        out.status.success(),
        "createdb {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.url(&name)
}

/// The folder of the newest installed PostgreSQL's programs; fails loudly when there is none.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed: no /usr/lib/postgresql/*/bin/initdb. Install the \
             Debian package `postgresql` (apt-get install postgresql), as .ci/run does"
        ),
    }
}

/// Whether this process runs as root, where `initdb` refuses to run.
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A command running `program` as the `postgres` OS user when this process is root.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--reset-env",
        ]);
        c.arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl TestPostgres {
    fn start() -> TestPostgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("pagegate-pg-")
            .tempdir()
            .expect("temp dir")
            .keep();
        // TLS for the tests of the store's encrypted connections: a certificate for the
        // loopback address from a CA of its own (`ca.pem` in the folder).
        super::certs::TestCa::new().write_leaf(&dir, "server", &["127.0.0.1", "localhost"]);
        let key = dir.join("server.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod server.key");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown of {} failed", dir.display());
        }
        let data = dir.join("data");
        let out = as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        // The guardian: starts the server in the background, waits for its standard input to
        // close (this process ended), then stops the server at once and removes the folder.
        // A line on its standard input restarts the server (a fast shutdown, then a start),
        // as an operator's restart would.
        let script = r#"
            trap '' INT TERM HUP
            while :; do
                "$@" >>"$DIR/server.log" 2>&1 &
                pid=$!
                if read -r _; then
                    kill -INT "$pid" 2>/dev/null
                    wait "$pid"
                    continue
                fi
                kill -QUIT "$pid" 2>/dev/null
                wait "$pid"
                rm -rf "$DIR"
                exit
            done
        "#;
        let mut server = as_server_user(&bin.join("postgres"));
        server
            .arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
            .arg(&dir)
            // Throwaway data: durability only costs time here.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
            .args(["-c", "ssl=on", "-c"])
            .arg(format!(
                "ssl_cert_file={}",
                dir.join("server.pem").display()
            ))
            .arg("-c")
            .arg(format!("ssl_key_file={}", key.display()));
        let mut guardian = Command::new("sh");
        guardian
            .arg("-c")
            .arg(script)
            .arg("guardian")
            .arg(server.get_program())
            .args(server.get_args())
            .env("DIR", &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = guardian.spawn().expect("start the PostgreSQL guardian");
        let stdin = child.stdin.take().expect("guardian stdin");
        let started = TestPostgres {
            port,
            dir,
            bin,
            _guardian: Mutex::new((child, stdin)),
        };
        started.wait_ready();
        started
    }

    /// Polls until the server accepts connections; fails with its log if it does not.
    fn wait_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            let exited = self
                ._guardian
                .lock()
                .map(|mut g| matches!(g.0.try_wait(), Ok(Some(_))))
                .unwrap_or(false);
            let log = || std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            if exited || Instant::now() > deadline {
                panic!("PostgreSQL did not start on port {}: {}", self.port, log());
            }
            let server_gone = log().contains("database system is shut down");
            assert!(!server_gone, "PostgreSQL stopped: {}", log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Restarts the server (a fast shutdown: every connection is cut, as in a real restart) and
    /// waits until it accepts connections again.
    pub fn restart(&self) {
        use std::io::Write;
        let ready = "database system is ready to accept connections";
        let log = || std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let before = log().matches(ready).count();
        {
            let mut guardian = self._guardian.lock().expect("guardian");
            guardian
                .1
                .write_all(b"restart\n")
                .expect("tell the guardian");
            guardian.1.flush().expect("tell the guardian");
        }
        let deadline = Instant::now() + START_TIMEOUT;
        while log().matches(ready).count() <= before {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not come back: {}",
                log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The path of one of the server's programs (`psql`, `pg_dump`, …).
    pub fn bin_path(&self, program: &str) -> PathBuf {
        self.bin.join(program)
    }

    /// The CA that signed the server's certificate (for `127.0.0.1` and `localhost`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The connection URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

/// A TCP link to the server that a test can cut and mend, to play a database that becomes
/// unreachable (a network partition, a server down) and comes back. While cut, every open
/// connection through it is closed and new ones are refused at once.
pub struct CuttableLink {
    /// Where gateways connect instead of the server.
    pub port: u16,
    cut: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl CuttableLink {
    /// A link to this binary's server. Needs a tokio runtime.
    pub async fn open() -> CuttableLink {
        let target = format!("127.0.0.1:{}", server().port);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the link");
        let port = listener.local_addr().expect("link address").port();
        let (cut, _) = tokio::sync::watch::channel(false);
        let cut = std::sync::Arc::new(cut);
        let state = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut_now = state.subscribe();
                if *cut_now.borrow() {
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_now.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        CuttableLink { port, cut }
    }

    /// The URL of database `url` reached through this link.
    pub fn url_through(&self, url: &str) -> String {
        url.replace(&format!(":{}/", server().port), &format!(":{}/", self.port))
    }

    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn mend(&self) {
        self.cut.send_replace(false);
    }
}

/// Runs `sql` on the database at `url` and returns what it printed (unaligned, tuples only).
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new(server().bin_path("psql"))
        .args([url, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
