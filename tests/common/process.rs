//! The real `pagegate` binary as a child process, for what only a process shows: exit codes,
//! signals, error messages and memory use.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_pagegate")
}

/// Runs `pagegate ARGS` to completion: (exit status, stdout, stderr).
pub fn run(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("run pagegate");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `pagegate ARGS` to completion in the working directory `dir`.
pub fn run_in(dir: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(binary())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run pagegate");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub struct GatewayProcess {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    /// Takes the log lines off the pipe until the process closes it.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl GatewayProcess {
    /// Starts `pagegate serve --config FILE` and waits until it says where it listens.
    pub fn serve(config: &Path) -> GatewayProcess {
        Self::spawn(&["serve", "--config", &config.display().to_string()])
    }

    /// Starts `pagegate ARGS` and waits for its "listening on http://ADDR" line.
    pub fn spawn(args: &[&str]) -> GatewayProcess {
        Self::spawn_with_env(args, &[])
    }

    /// Same, with extra environment variables (`PAGEGATE_LOG` is `info` unless given). The
    /// address is found in text and JSON log lines alike.
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> GatewayProcess {
        let mut command = Command::new(binary());
        command.args(args).env("PAGEGATE_LOG", "info");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pagegate");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = addr_after(&line, "listening on http://") {
                    let _ = tx.send(addr);
                }
                log2.lock().expect("log lock").push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "pagegate did not start; its log:\n{}",
                    log.lock().expect("log").join("\n")
                );
            }
        };
        GatewayProcess {
            child,
            addr,
            log,
            reader: Some(reader),
        }
    }

    /// Waits until every line the process wrote has been taken off the pipe: after it exited,
    /// once the reader has seen the end of its output.
    pub fn wait_for_log_end(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// Starts `pagegate demo` on a free port, with its data in `data_dir`.
    pub fn demo(data_dir: &Path) -> GatewayProcess {
        Self::spawn(&[
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data_dir.display().to_string(),
        ])
    }

    /// Asserts that the demo's sample site answers its home page through this gateway.
    pub async fn assert_demo_home(&self) {
        let home = super::client::get(self.addr, "127.0.0.1", "/").await;
        assert_eq!(home.status, 200);
        assert!(home.body.contains("Demo School"), "{}", home.body);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (TERM, HUP, …) with the system's `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "pagegate did not exit within {limit:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits (at most 30 s) for a clean exit; panics with the log otherwise.
    pub fn stop(&mut self) {
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(30));
        assert!(
            status.success(),
            "pagegate exited with {status:?}; log:\n{}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// Every log line so far.
    pub fn lines(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// The address logged after `marker` (e.g. "metrics on http://"), waiting for the line.
    pub fn logged_addr(&self, marker: &str) -> SocketAddr {
        let start = Instant::now();
        loop {
            if let Some(addr) = self.lines().iter().find_map(|l| addr_after(l, marker)) {
                return addr.parse().expect("logged address");
            }
            if start.elapsed() > Duration::from_secs(10) {
                panic!("no {marker:?} in the log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The HTTPS listener's address, once the log names it (the gateway logs it right after the
    /// plain one).
    pub fn tls_addr(&self) -> SocketAddr {
        self.logged_addr("listening on https://")
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// Waits until at least `count` log lines contain `needle` (at most 10 s) and returns those
    /// lines.
    pub async fn wait_for_log(&self, needle: &str, count: usize) -> Vec<String> {
        let start = Instant::now();
        loop {
            let lines: Vec<String> = self
                .log
                .lock()
                .expect("log lock")
                .iter()
                .filter(|line| line.contains(needle))
                .cloned()
                .collect();
            if lines.len() >= count {
                return lines;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "expected {count} log line(s) with {needle:?}; the log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A field of /proc/PID/status in KiB, e.g. "VmHWM" (peak resident memory).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }
}

/// The `IP:port` right after `marker` in a log line, whatever follows it (end of line, a quote
/// in JSON, `/metrics`).
fn addr_after(line: &str, marker: &str) -> Option<String> {
    let rest = line.split(marker).nth(1)?;
    let end = rest
        .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
