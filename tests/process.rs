//! The real binary: config errors and exit codes, graceful shutdown on SIGTERM, memory while
//! streaming, and the built-in demo.

mod common;

use std::time::Duration;

use common::client;
use common::process::{GatewayProcess, run};
use common::{TestUpstream, write_config};

/// One site with one page, `course`, behind an upstream nobody answers on: for the client
/// commands, which never reach it.
const COURSE_SITE: &str = "[server]\nlisten = \"127.0.0.1:0\"\n\n[[site]]\nhosts = [\"*\"]\nupstream = \"http://127.0.0.1:9\"\n\
     public_url = \"http://school.test\"\n\n[[site.page]]\nid = \"course\"\npaths = [\"/course/\"]\n";
const VALID: &str = "[server]\nlisten = \"127.0.0.1:8080\"\n\n[[site]]\nhosts = [\"a.example\"]\nupstream = \"http://127.0.0.1:8000\"\n";

#[test]
fn check_accepts_a_valid_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(dir.path(), VALID);
    let (status, stdout, _) = run(&["check", "--config", &path.display().to_string()]);
    assert!(status.success());
    assert!(stdout.contains("OK (sites: 1, pages: 0)"), "{stdout}");
}

#[test]
fn each_config_error_names_the_file_the_key_the_line_and_what_is_expected() {
    let cases = [
        // (config, expected fragments of the message)
        (
            VALID.replace("listen =", "listn ="),
            vec!["gateway.toml", "listn", "line 3", "unknown field"],
        ),
        (
            VALID.replace("127.0.0.1:8080", "localhost:http"),
            vec!["gateway.toml:3:", "`server.listen`", "IP address and port"],
        ),
        (
            format!(
                "{VALID}tls = {{ cert = \"certs/missing.pem\", key = \"certs/missing.key\" }}\n"
            )
            .replace(
                "listen = \"127.0.0.1:8080\"",
                "tls_listen = \"127.0.0.1:8443\"",
            ),
            vec![
                "gateway.toml:8:",
                "`site[0].tls.cert`",
                "missing.pem does not exist",
            ],
        ),
        (
            format!(
                "{VALID}\n[[site]]\nhosts = [\"A.example\"]\nupstream = \"http://127.0.0.1:9000\"\n"
            ),
            vec![
                "gateway.toml:10:",
                "`site[1].hosts[0]`",
                "already claimed by site[0]",
            ],
        ),
        (
            VALID.replace("http://127.0.0.1:8000", "ftp://files"),
            vec!["gateway.toml:7:", "`site[0].upstream`", "http://host:port"],
        ),
        (
            VALID.replace("listen = \"127.0.0.1:8080\"", "listen = 8080"),
            vec!["gateway.toml", "line 3", "invalid type"],
        ),
        (
            "[server\nlisten = 1".to_string(),
            vec!["gateway.toml", "line 2", "unclosed table"],
        ),
        (
            format!("{VALID}\n[store]\naudit_retention = \"12h\"\n"),
            vec![
                "gateway.toml:10:",
                "`store.audit_retention`",
                "at least 1 day",
            ],
        ),
        (
            format!("{VALID}\n[store]\ngrant_retention = \"sometimes\"\n"),
            vec!["gateway.toml:10:", "`store.grant_retention`", "\"forever\""],
        ),
        (
            format!("{VALID}\n[mail]\nretry_for = \"2d\"\n"),
            vec!["gateway.toml:10:", "`mail.retry_for`", "at most 24h"],
        ),
        (
            format!("{VALID}tls = {{ cert = \"a.pem\", key = \"b.key\" }}\n").replace(
                "listen = \"127.0.0.1:8080\"",
                "tls_listen = \"127.0.0.1:8443\"",
            ),
            vec!["gateway.toml:8:", "`site[0].tls`", "do not belong together"],
        ),
    ];
    let ca = common::certs::TestCa::new();
    for (toml, fragments) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        ca.write_leaf(dir.path(), "a", &["a.example"]);
        ca.write_leaf(dir.path(), "b", &["b.example"]);
        let path = write_config(dir.path(), &toml);
        let (status, _, stderr) = run(&["check", "--config", &path.display().to_string()]);
        let ok = status.success();
        assert!(!ok, "accepted:\n{toml}");
        for fragment in fragments {
            assert!(
                stderr.contains(fragment),
                "missing {fragment:?} in:\n{stderr}\nfor:\n{toml}"
            );
        }
    }
}

#[test]
fn serve_refuses_a_bad_config_and_serves_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(dir.path(), &VALID.replace("a.example", "not a host"));
    let (status, _, stderr) = run(&["serve", "--config", &path.display().to_string()]);
    assert!(!status.success());
    assert!(stderr.contains("`site[0].hosts[0]`"), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let (status, _, stderr) = run(&["check", "--config", "/nonexistent/gateway.toml"]);
    assert!(!status.success());
    assert!(
        stderr.contains("/nonexistent/gateway.toml: cannot read the configuration"),
        "{stderr}"
    );
}

#[test]
fn the_shipped_example_configs_are_valid() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut examples = vec![format!("{root}/gateway.example.toml")];
    for entry in std::fs::read_dir(format!("{root}/config")).expect("config/ exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            examples.push(path.display().to_string());
        }
    }
    assert!(
        examples.len() >= 4,
        "expected gateway.example.toml and the config/ examples: {examples:?}"
    );
    let ca = common::certs::TestCa::new();
    for example in examples {
        // Examples refer to certificates as certs/NAME.pem and certs/NAME.key: give them real
        // ones in a copy of the example's directory.
        let dir = tempfile::tempdir().expect("temp dir");
        let text = std::fs::read_to_string(&example).expect("read example");
        std::fs::create_dir(dir.path().join("certs")).expect("certs dir");
        for name in text
            .split("certs/")
            .skip(1)
            .filter_map(|rest| rest.split(".pem").next())
        {
            if !name.contains('"') && !name.contains('\n') {
                ca.write_leaf(
                    &dir.path().join("certs"),
                    name,
                    &[&format!("{name}.example")],
                );
            }
        }
        let copy = dir.path().join("example.toml");
        std::fs::write(&copy, &text).expect("copy example");
        let (status, stdout, stderr) = run(&["check", "--config", &copy.display().to_string()]);
        assert!(status.success(), "{example} is invalid:\n{stderr}");
        assert!(stdout.contains("OK"), "{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_request_in_flight_finish_then_exits() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"10s\"\n\n[[site]]\nhosts = [\"*\"]\nupstream = \"http://{}\"\n",
            upstream.addr
        ),
    );
    let mut gateway = GatewayProcess::serve(&path);
    let addr = gateway.addr;

    let in_flight = tokio::spawn(client::get(addr, "a.example", "/slow/1500"));
    while upstream.count() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gateway.signal("TERM");
    // Logged once every accept loop has returned and dropped its listener.
    gateway
        .wait_for_log("shutting down: no new connections", 1)
        .await;

    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "new connections are refused once shutting down"
    );
    let answer = in_flight.await.expect("task");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "slow done");
    let status = tokio::task::spawn_blocking(move || {
        let status = gateway.wait_exit(Duration::from_secs(10));
        (status, gateway.log())
    })
    .await
    .expect("join");
    assert!(
        status.0.success(),
        "exit status {:?}; log:\n{}",
        status.0,
        status.1
    );
    assert!(
        status.1.contains("shutdown signal received"),
        "{}",
        status.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_while_gigabytes_stream_through() {
    use http_body_util::BodyExt;

    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[[site]]\nhosts = [\"*\"]\nupstream = \"http://{}\"\n",
            upstream.addr
        ),
    );
    let gateway = GatewayProcess::serve(&path);
    let baseline_kib = gateway.status_kib("VmRSS");
    let size: u64 = 1024 * 1024 * 1024;

    // Download 1 GiB, reading frame by frame.
    let mut conn = client::http1(gateway.addr).await;
    let req = client::request("GET", "a.example", &format!("/big/{size}"))
        .body(http_body_util::Full::default())
        .expect("request");
    let mut body = conn.send_request(req).await.expect("send").into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.expect("frame").data_ref() {
            received += data.len() as u64;
        }
    }
    assert_eq!(received, size);

    // Upload 1 GiB with a Content-Length, generated as it is sent.
    let chunk = bytes::Bytes::from(
        (0..1024 * 1024u64)
            .map(common::upstream::pattern_byte)
            .collect::<Vec<u8>>(),
    );
    let frames =
        futures_util::stream::iter((0..1024).map(move |_| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk.clone()))
        }));
    let stream = tokio::net::TcpStream::connect(gateway.addr)
        .await
        .expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let req = client::request("PUT", "a.example", "/upload")
        .header("content-length", size.to_string())
        .body(http_body_util::StreamBody::new(frames))
        .expect("request");
    let answer = client::read_answer(send.send_request(req).await.expect("send")).await;
    // The 1 MiB chunk repeats, so the byte pattern restarts each MiB: count is what matters.
    assert!(
        answer.body.starts_with(&format!("{size} ")),
        "{}",
        answer.body
    );

    let peak_kib = gateway.status_kib("VmHWM");
    assert!(
        peak_kib < baseline_kib + 64 * 1024,
        "peak resident memory grew from {baseline_kib} KiB to {peak_kib} KiB while streaming 2 GiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_the_sample_site_through_the_gateway() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gateway = GatewayProcess::demo(&dir.path().join("demo-data"));

    gateway.assert_demo_home().await;
    let health = client::get(gateway.addr, "localhost", "/_pagegate/healthz").await;
    assert_eq!(health.status, 200);
    assert!(
        gateway.log().contains("demo ready: open http://127.0.0.1:"),
        "{}",
        gateway.log()
    );
}

#[test]
fn clients_are_managed_from_the_command_line_with_or_without_a_running_gateway() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(dir.path(), COURSE_SITE);
    let config = path.display().to_string();
    let clients = |args: &[&str]| {
        let mut all = vec!["clients", "--config", &config];
        all.extend_from_slice(args);
        run(&all)
    };

    // Gateway stopped: the command opens the database itself.
    let (status, stdout, stderr) = clients(&[
        "add",
        "--page",
        "course",
        "--email",
        "Ann@Example.com",
        "--name",
        "Ann",
        "--until",
        "2099-12-31",
    ]);
    assert!(status.success(), "{stderr}");
    assert_eq!(
        stdout.trim(),
        "added ann@example.com on course (access until 2100-01-01T00:00:00Z)"
    );

    // Gateway running: the same commands go through its control socket.
    let gateway = GatewayProcess::serve(&path);
    let (status, stdout, stderr) = clients(&[
        "add",
        "--page",
        "course",
        "--email",
        "bob@example.com",
        "--days",
        "30",
    ]);
    assert!(status.success(), "{stderr}");
    assert!(
        stdout.starts_with("added bob@example.com on course (access until "),
        "{stdout}"
    );
    let (status, stdout, _) = clients(&["list", "--page", "course"]);
    assert!(status.success());
    assert!(
        stdout.contains("ann@example.com") && stdout.contains("bob@example.com"),
        "{stdout}"
    );
    let (status, stdout, _) = clients(&["list", "--page", "course", "--json"]);
    assert!(status.success());
    let list: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(2));

    let (status, _, stderr) = clients(&["add", "--page", "course", "--email", "not-an-email"]);
    assert!(!status.success());
    assert!(
        stderr.contains("email: not a valid email address"),
        "{stderr}"
    );
    let (status, _, stderr) = clients(&["add", "--page", "nope", "--email", "c@example.com"]);
    assert!(!status.success());
    assert!(stderr.contains("no page with id \"nope\""), "{stderr}");
    let (status, _, stderr) = clients(&[
        "add",
        "--page",
        "course",
        "--email",
        "c@example.com",
        "--until",
        "2001-01-01",
    ]);
    assert!(!status.success());
    assert!(
        stderr.contains("until: the date is in the past"),
        "{stderr}"
    );

    let (status, stdout, _) =
        clients(&["remove", "--page", "course", "--email", "bob@example.com"]);
    assert!(status.success());
    assert_eq!(stdout.trim(), "removed bob@example.com from course");
    let (status, _, stderr) =
        clients(&["remove", "--page", "course", "--email", "bob@example.com"]);
    assert!(!status.success());
    assert!(stderr.contains("is not a client of course"), "{stderr}");
    drop(gateway);
}

#[test]
fn the_healthcheck_command_tells_a_serving_gateway_from_a_stopped_one() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nprefix = \"/_gate\"\n\n[[site]]\nhosts = [\"a.example\"]\nupstream = \"http://127.0.0.1:9\"\n"
        ),
    );
    let config = path.display().to_string();

    let mut gateway = GatewayProcess::serve(&path);
    let (status, stdout, stderr) = run(&["healthcheck", "--config", &config]);
    assert!(status.success(), "{stderr}");
    assert!(
        stdout.contains(&format!("http://127.0.0.1:{port}/_gate/healthz: ok")),
        "{stdout}"
    );
    let wrong = format!("http://127.0.0.1:{port}/_gate/nothing-here");
    let (status, _, stderr) = run(&["healthcheck", "--url", &wrong]);
    assert!(!status.success());
    assert!(stderr.contains("answered 404"), "{stderr}");

    gateway.signal("TERM");
    gateway.wait_exit(Duration::from_secs(10));
    let (status, _, stderr) = run(&["healthcheck", "--config", &config]);
    assert!(!status.success(), "a stopped gateway is reported healthy");
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

#[test]
fn a_long_list_is_printed_whole_a_chunk_at_a_time_with_or_without_a_running_gateway() {
    use pagegate::store::{AuditEvent, AuditKind, ClientSet, Source, Store, redb::RedbStore};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(dir.path(), COURSE_SITE);
    // 2,345 clients (more than two of the command's chunks), imported straight into the file.
    let emails: Vec<String> = (0..2_345).rev().map(|i| format!("m{i:05}@x.org")).collect();
    {
        let store = RedbStore::open(&dir.path().join("data")).expect("open the data dir");
        let rows: Vec<ClientSet<'_>> = emails
            .iter()
            .map(|email| ClientSet {
                email,
                name: Some("Member"),
                access_until: Some(None),
                source: Source::Import,
                now: 1,
            })
            .collect();
        store
            .set_clients("course", &rows, &|c, _| AuditEvent {
                at: 1,
                kind: AuditKind::ClientAdded,
                site: None,
                page: Some("course".into()),
                email: Some(c.email.clone()),
                actor: "import".into(),
                detail: String::new(),
            })
            .expect("import");
    }
    let mut expected = emails.clone();
    expected.sort();
    let config = path.display().to_string();
    let listed = |json: bool| -> Vec<String> {
        let mut args = vec!["clients", "--config", &config, "list", "--page", "course"];
        if json {
            args.push("--json");
        }
        let (status, stdout, stderr) = run(&args);
        assert!(status.success(), "{stderr}");
        if json {
            let list: Vec<serde_json::Value> =
                serde_json::from_str(&stdout).expect("one JSON array");
            list.iter()
                .map(|c| c["email"].as_str().expect("email").to_owned())
                .collect()
        } else {
            let mut lines = stdout.lines();
            assert!(
                lines.next().is_some_and(|h| h.starts_with("EMAIL")),
                "{stdout}"
            );
            lines
                .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
                .collect()
        }
    };

    // No gateway: the command reads the file itself.
    assert_eq!(listed(true), expected);
    assert_eq!(listed(false), expected);

    // A gateway holds the file: the command asks it, chunk by chunk, over the control socket.
    let gateway = GatewayProcess::serve(&path);
    assert_eq!(listed(true), expected);
    assert_eq!(listed(false), expected);
    drop(gateway);
}
