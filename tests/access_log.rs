//! The access log as an operator gets it from the real binary: every request answered before a
//! stop has its line, with its fields, whether the lines go to stderr or to a file; a file moved
//! away by log rotation is reopened at the reload that follows; and a log nobody reads costs
//! lines, counted and reported, never a request held up.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::observe::{access_lines, json_lines, scrape, value};
use common::process::GatewayProcess;
use common::{TestUpstream, write_config};
use serde_json::Value;

/// Long enough for the slowest machine running the tests beside others.
const PATIENCE: Duration = Duration::from_secs(30);

/// One site, `school`, in front of `upstream`, with a metrics listener and `server_extra` in
/// `[server]`.
fn site_toml(upstream: &TestUpstream, server_extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server_extra}\n\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\n\
         [[site]]\nname = \"school\"\nhosts = [\"school.test\"]\nupstream = \"http://{}\"\n",
        upstream.addr
    )
}

/// `GET path` for each path, `concurrency` at a time, each on its own connection; asserts each
/// was answered `200` by the upstream.
async fn get_all(gateway: &GatewayProcess, paths: Vec<String>, concurrency: usize) {
    let paths = std::sync::Arc::new(std::sync::Mutex::new(paths));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (addr, paths) = (gateway.addr, paths.clone());
        clients.spawn(async move {
            loop {
                let Some(path) = paths.lock().expect("paths").pop() else {
                    return;
                };
                let answer = common::client::get(addr, "school.test", &path).await;
                assert_eq!(answer.status, 200, "{path}");
                assert_eq!(answer.body, format!("hello from upstream {path}"));
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.expect("client");
    }
}

/// Waits until `read` gives something `ready` accepts, at most [`PATIENCE`].
async fn wait_until<T>(what: &str, mut read: impl FnMut() -> T, ready: impl Fn(&T) -> bool) -> T {
    let start = Instant::now();
    loop {
        let value = read();
        if ready(&value) {
            return value;
        }
        assert!(start.elapsed() < PATIENCE, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_request_answered_before_the_stop_has_its_line() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), &site_toml(&upstream, ""));
    let mut gateway = GatewayProcess::spawn(&[
        "--log-format",
        "json",
        "serve",
        "--config",
        &config.display().to_string(),
    ]);
    const REQUESTS: usize = 300;
    let paths: Vec<String> = (0..REQUESTS).map(|i| format!("/lesson/{i}")).collect();
    get_all(&gateway, paths, 16).await;

    // Requests in flight when the stop comes finish in its grace period, moments before the
    // exit: their lines are still waiting for the writer then, and must be written on the way
    // out.
    const IN_FLIGHT: usize = 8;
    let mut slow = tokio::task::JoinSet::new();
    for i in 0..IN_FLIGHT {
        let addr = gateway.addr;
        slow.spawn(async move {
            common::client::get(addr, "school.test", &format!("/slow/{}", 300 + i)).await
        });
    }
    wait_until(
        "the slow requests to reach the upstream",
        || upstream.count(),
        |seen| *seen >= REQUESTS + IN_FLIGHT,
    )
    .await;
    gateway.signal("TERM");
    while let Some(answer) = slow.join_next().await {
        assert_eq!(answer.expect("client").status, 200);
    }
    let gateway = tokio::task::spawn_blocking(move || {
        let status = gateway.wait_exit(PATIENCE);
        assert!(status.success(), "exit {status:?}:\n{}", gateway.log());
        gateway
    })
    .await
    .expect("join");
    let access = wait_until(
        "the access lines of every request",
        || access_lines(&json_lines(&gateway.lines())),
        |lines| lines.len() >= REQUESTS + IN_FLIGHT,
    )
    .await;
    assert_eq!(access.len(), REQUESTS + IN_FLIGHT, "one line per request");
    for i in 0..IN_FLIGHT {
        let path = format!("/slow/{}", 300 + i);
        assert!(
            access
                .iter()
                .any(|a| a["path"] == path.as_str() && a["status"] == 200),
            "no line for {path}"
        );
    }
    for i in 0..REQUESTS {
        let path = format!("/lesson/{i}");
        let line: &Value = access
            .iter()
            .find(|a| a["path"] == path.as_str())
            .unwrap_or_else(|| panic!("no line for {path}"));
        assert_eq!(line["message"], "request");
        assert_eq!(line["site"], "school");
        assert_eq!(line["page"], "");
        assert_eq!(line["method"], "GET");
        assert_eq!(line["status"], 200);
        assert_eq!(
            line["bytes"],
            format!("hello from upstream {path}").len(),
            "{line}"
        );
        assert!(
            line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
            "{line}"
        );
        assert_eq!(line["client"], "127.0.0.1");
        assert_eq!(line["complete"], true);
        assert!(line.get("email").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_gets_the_lines_and_is_reopened_at_the_reload_after_rotation() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(
        dir.path(),
        &site_toml(&upstream, "access_log_path = \"access.log\""),
    );
    let mut gateway = GatewayProcess::serve(&config);
    let file = dir.path().join("access.log");

    assert_eq!(
        common::client::get(gateway.addr, "school.test", "/before")
            .await
            .status,
        200
    );
    let text = wait_until(
        "the line in the file",
        || read_text(&file),
        |t| t.contains(" path=/before "),
    )
    .await;
    // The text format of the other log lines: timestamp, level, target, message, fields.
    let line = text.lines().next().expect("a line");
    let (stamp, rest) = line.split_at(27);
    assert!(
        stamp.len() == 27 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "{line}"
    );
    let body = "hello from upstream /before".len();
    let (head, tail) = rest.split_once(" duration_ms=").expect("duration_ms");
    assert_eq!(
        head,
        format!(
            "  INFO pagegate::access: request site=\"school\" page=\"\" method=GET \
             path=/before status=200 bytes={body}"
        )
    );
    let (duration, tail) = tail.split_once(' ').expect("after duration_ms");
    assert!(duration.parse::<f64>().is_ok_and(|d| d >= 0.0), "{line}");
    assert_eq!(tail, "client=127.0.0.1 complete=true");
    assert!(
        !gateway.log().contains("pagegate::access"),
        "the lines go to the file, not stderr:\n{}",
        gateway.log()
    );

    // Log rotation: the file is moved away, then the gateway is told to reopen it.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&file, &rotated).expect("rotate");
    gateway.signal("HUP");
    gateway.wait_for_log("configuration reloaded", 1).await;
    assert_eq!(
        common::client::get(gateway.addr, "school.test", "/after")
            .await
            .status,
        200
    );
    wait_until(
        "the line in the new file",
        || read_text(&file),
        |t| t.contains(" path=/after "),
    )
    .await;
    let old = read_text(&rotated);
    assert!(
        old.contains(" path=/before ") && !old.contains("/after"),
        "{old}"
    );
    gateway.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_log_nobody_reads_costs_lines_counted_and_reported_never_a_request() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("access.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    // Held open for reading (so the gateway can open it for writing) and never read: once the
    // pipe's buffer is full, every write blocks.
    let _never_read = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .expect("open the pipe");
    let config = write_config(
        dir.path(),
        &site_toml(&upstream, "access_log_path = \"access.fifo\""),
    );
    let mut gateway = GatewayProcess::serve(&config);
    let metrics = gateway.logged_addr("metrics on http://");

    // Lines of about 8 KiB: the pipe holds a handful, the writer's queue about 500.
    const REQUESTS: usize = 1200;
    let long = "x".repeat(8 * 1024);
    let paths: Vec<String> = (0..REQUESTS).map(|i| format!("/{long}/{i}")).collect();
    get_all(&gateway, paths, 16).await;

    let start = Instant::now();
    let count = loop {
        let scraped = scrape(metrics, None).await;
        let count = value(&scraped.body, "pagegate_access_log_dropped_total", &[]);
        if count > 0.0 || start.elapsed() > PATIENCE {
            break count;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(count > 0.0, "no line was counted as dropped");
    assert!(count < REQUESTS as f64, "{count}: the queue took none");
    let warning = gateway.wait_for_log("access log lines dropped", 1).await;
    assert!(warning[0].contains("WARN"), "{warning:?}");

    // Still answering, and still able to stop: the exit gives up on the stuck lines.
    assert_eq!(
        common::client::get(gateway.addr, "school.test", "/after")
            .await
            .status,
        200
    );
    gateway.stop();
}
