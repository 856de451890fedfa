//! Debian's nginx as a real upstream. It decodes, merges slashes and resolves dot-segments the
//! way many real sites do, so path tricks are tried against the real thing, not a model of it.
//!
//! Each instance has its own config, docroot, logs and temp paths in a temporary directory,
//! listens on a free 127.0.0.1 port, runs in the foreground as a single process and is killed
//! on drop.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Where Debian installs nginx (package `nginx-light`, installed by `.ci/run`).
pub const NGINX: &str = "/usr/sbin/nginx";

pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    pub dir: TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Starts nginx serving `files` (path under the docroot, content) and waits until it
    /// accepts connections. Panics, never skips, when nginx is missing or does not start.
    pub async fn start(files: &[(&str, &str)]) -> Nginx {
        assert!(
            Path::new(NGINX).is_file(),
            "{NGINX} is missing. The path-bypass tests need Debian's nginx as a real upstream: \
             run .ci/run (it installs nginx-light), or apt-get install nginx-light."
        );
        let dir = tempfile::tempdir().expect("temp dir for nginx");
        let www = dir.path().join("www");
        for (path, content) in files {
            let file = www.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(file.parent().expect("file in a directory"))
                .expect("create docroot directory");
            std::fs::write(&file, content).expect("write docroot file");
        }
        std::fs::create_dir_all(&www).expect("create docroot");
        std::fs::create_dir_all(dir.path().join("tmp")).expect("create nginx temp dir");

        // The port is picked by binding port 0 and releasing it; another process may take it in
        // between, so a start that fails on the address is retried with a fresh one.
        let mut last_error = String::new();
        for _ in 0..5 {
            let addr = free_port();
            let conf = dir.path().join("nginx.conf");
            std::fs::write(&conf, config(dir.path(), addr)).expect("write nginx.conf");
            let error_log = dir.path().join("error.log");
            let _ = std::fs::remove_file(&error_log);
            let mut child = Command::new(NGINX)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(&error_log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {NGINX}: {e}"));
            match wait_ready(&mut child, addr, &error_log).await {
                Ok(()) => return Nginx { child, addr, dir },
                Err(log) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let retry = log.contains("Address already in use");
                    last_error = log;
                    if !retry {
                        break;
                    }
                }
            }
        }
        panic!("nginx did not start:\n{last_error}");
    }

    /// Every file nginx answered for so far, with the status: `(status, path under the
    /// docroot)`.
    pub fn served(&self) -> Vec<(u16, String)> {
        let www = self.dir.path().join("www");
        let www = www.display().to_string();
        std::fs::read_to_string(self.dir.path().join("served.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (status, file) = line.split_once(' ')?;
                let file = file.strip_prefix(&www).unwrap_or(file);
                Some((status.parse().ok()?, file.to_string()))
            })
            .collect()
    }

    /// nginx's error log so far, for failure messages.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

async fn wait_ready(child: &mut Child, addr: SocketAddr, error_log: &Path) -> Result<(), String> {
    let log = || std::fs::read_to_string(error_log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("nginx exited ({status}):\n{}", log()));
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "nginx did not accept connections on {addr} within 10 s:\n{}",
                log()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

fn config(dir: &Path, addr: SocketAddr) -> String {
    let d = dir.display();
    let mut c = String::new();
    // No `user` directive: as root with master_process off nginx keeps running as root, which
    // is what CI does; as another user it runs as that user.
    writeln!(c, "daemon off;").ok();
    writeln!(c, "master_process off;").ok();
    writeln!(c, "worker_processes 1;").ok();
    writeln!(c, "error_log \"{d}/error.log\";").ok();
    writeln!(c, "pid \"{d}/nginx.pid\";").ok();
    writeln!(c, "events {{ worker_connections 1024; }}").ok();
    writeln!(c, "http {{").ok();
    // What the site served, by file: a protected file served to anyone is a leak, whatever
    // the method and whatever the answer's body shows.
    writeln!(c, "    log_format served '$status $request_filename';").ok();
    writeln!(c, "    access_log \"{d}/served.log\" served;").ok();
    for (directive, sub) in [
        ("client_body_temp_path", "body"),
        ("proxy_temp_path", "proxy"),
        ("fastcgi_temp_path", "fastcgi"),
        ("uwsgi_temp_path", "uwsgi"),
        ("scgi_temp_path", "scgi"),
    ] {
        writeln!(c, "    {directive} \"{d}/tmp/{sub}\";").ok();
    }
    writeln!(
        c,
        "    types {{ text/html html; text/plain txt; }}\n    default_type application/octet-stream;"
    )
    .ok();
    writeln!(c, "    server {{").ok();
    writeln!(c, "        listen {addr};").ok();
    writeln!(c, "        server_name _;").ok();
    writeln!(c, "        root \"{d}/www\";").ok();
    writeln!(c, "        index index.html;").ok();
    writeln!(c, "    }}").ok();
    writeln!(c, "}}").ok();
    c
}
