//! The gateway on the PostgreSQL store: a real upstream, a real SMTP server, a throwaway
//! PostgreSQL server, and the sign-in flow end to end; and `pagegate check` reporting the
//! database.

mod common;

use std::process::Command;

use common::postgres::{self as pg_server, psql};
use common::school::School;

/// The rest of the `[auth]` table (the secret every gateway on one database shares) and the
/// `[store]` table of a gateway on the database at `url`. The school's configuration ends with
/// `[auth]`, so a table written after its settings starts a table of its own.
fn on_postgres(url: &str) -> String {
    format!(
        "secret = \"{}\"\n\n[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n",
        pg_server::SHARED_SECRET
    )
}

#[tokio::test]
async fn a_client_signs_in_on_postgres_and_loses_access_when_removed() {
    let url = pg_server::fresh_database();
    let school = School::open(&on_postgres(&url)).await;
    school
        .add_client("course", "ann@example.com", "Ann Lee", None)
        .await;
    let mut browser = school.browser();
    assert_eq!(browser.get("/course/lesson-1").await.status, 302);

    let signed_in = school.sign_in(&mut browser, "ann@example.com").await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let page = browser.get("/course/lesson-1").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        school.upstream.count(),
        1,
        "the page came from the upstream"
    );

    // The database holds what the gateway wrote: the client and the session.
    let rows = psql(
        &url,
        "SELECT (SELECT count(*) FROM clients) || ' ' || (SELECT count(*) FROM sessions)",
    );
    assert_eq!(rows.trim(), "1 1");

    school.remove_client("course", "ann@example.com").await;
    let after = browser.get("/course/lesson-1").await;
    assert_eq!(after.status, 302, "a removed client is sent to sign in");
    assert_eq!(
        school.upstream.count(),
        1,
        "nothing more reached the upstream"
    );
}

#[test]
fn check_reports_the_database_and_its_schema_version() {
    let url = pg_server::fresh_database();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[[site]]\nhosts = [\"*\"]\n\
             upstream = \"http://127.0.0.1:9\"\n\n[auth]\n{}",
            on_postgres(&url)
        ),
    )
    .expect("write config");
    let check = || {
        let out = Command::new(env!("CARGO_BIN_EXE_pagegate"))
            .arg("check")
            .arg("--config")
            .arg(&config)
            .output()
            .expect("run pagegate check");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = check();
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("reachable, new"), "{stdout}");

    let current = pagegate::store::postgres::SCHEMA_VERSION;
    psql(
        &url,
        &format!(
            "CREATE TABLE schema_version (version bigint PRIMARY KEY, applied_at timestamptz); \
             INSERT INTO schema_version (version) SELECT generate_series(1, {current})"
        ),
    );
    let (ok, stdout, _) = check();
    assert!(ok);
    assert!(
        stdout.contains(&format!("reachable, schema version {current}, current")),
        "{stdout}"
    );

    psql(&url, "INSERT INTO schema_version (version) VALUES (99)");
    let (ok, stdout, stderr) = check();
    assert!(!ok, "a database a newer pagegate migrated fails the check");
    assert!(stderr.contains("99"), "{stdout}{stderr}");

    // Nothing answers on the database's address any more: unreachable, and the check fails.
    let gone = url.replace(
        &format!(":{}/", pg_server::server().port),
        &format!(":{}/", free_port()),
    );
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .expect("read")
            .replace(&url, &gone),
    )
    .expect("rewrite");
    let (ok, _, stderr) = check();
    assert!(!ok);
    assert!(stderr.contains("not reachable"), "{stderr}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test]
async fn the_clients_command_edits_a_postgres_list_with_or_without_a_gateway() {
    let url = pg_server::fresh_database();
    let school = School::open(&on_postgres(&url)).await;
    let config = school.gateway.dir.path().join("gateway.toml");
    let clients = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_pagegate"))
            .arg("clients")
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .expect("run pagegate clients");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        text
    };

    // Added from the command line, straight into the database the running gateway uses: the
    // visitor can sign in at once.
    let added = clients(&[
        "add",
        "--page",
        "course",
        "--email",
        "ann@example.com",
        "--name",
        "Ann Lee",
    ]);
    assert!(added.contains("added ann@example.com"), "{added}");
    let mut browser = school.browser();
    assert_eq!(
        school.sign_in(&mut browser, "ann@example.com").await.status,
        303
    );
    assert_eq!(browser.get("/course/lesson-1").await.status, 200);

    // With the gateway stopped, the list is still there to read and edit.
    let _dir = school.gateway.stop_and_keep_dir().await;
    let listed = clients(&["list", "--page", "course"]);
    assert!(listed.contains("ann@example.com"), "{listed}");
    assert!(listed.contains("Ann Lee"), "{listed}");
    clients(&["remove", "--page", "course", "--email", "ann@example.com"]);
    assert_eq!(psql(&url, "SELECT count(*) FROM clients").trim(), "0");
}

#[tokio::test]
async fn without_its_database_the_gateway_answers_503_and_fails_closed_then_recovers() {
    let link = pg_server::CuttableLink::open().await;
    let url = link.url_through(&pg_server::fresh_database());
    let school = School::open(&on_postgres(&url)).await;
    school
        .add_client("course", "ann@example.com", "Ann Lee", None)
        .await;
    let mut browser = school.browser();
    assert_eq!(
        school.sign_in(&mut browser, "ann@example.com").await.status,
        303
    );
    assert_eq!(browser.get("/course/lesson-1").await.status, 200);

    link.cut();
    // The visitor keeps access only as long as the remembered answer is fresh (3 s), then the
    // gate fails closed with a page that says to come back.
    let start = std::time::Instant::now();
    let closed = loop {
        let page = browser.get("/course/lesson-1").await;
        if page.status != 200 {
            break page;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "the page stayed open without a database"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(closed.status, 503, "{}", closed.body);
    assert_eq!(closed.header("retry-after"), Some("10"));
    assert!(closed.body.contains("try again"), "{}", closed.body);
    let served = school.upstream.count();

    // A sign-in cannot start, and says why.
    let mut other = school.browser();
    let csrf = other.open_login("/course/lesson-1").await;
    let asked = other
        .post_form(
            "/_pagegate/login",
            &[
                ("email", "bob@example.com"),
                ("next", "/course/lesson-1"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(asked.status, 503, "{}", asked.body);

    link.mend();
    let start = std::time::Instant::now();
    while browser.get("/course/lesson-1").await.status != 200 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the gateway did not come back by itself"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        school.upstream.count(),
        served + 1,
        "nothing passed while closed"
    );
}

#[tokio::test]
async fn the_metrics_say_whether_the_gateway_hears_the_others() {
    let url = pg_server::fresh_database();
    let school = School::open(&format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        on_postgres(&url)
    ))
    .await;
    let addr = school.gateway.metrics_addr.expect("a metrics listener");
    let start = std::time::Instant::now();
    loop {
        let scraped = common::observe::scrape(addr, None).await;
        assert_eq!(scraped.status, 200);
        if scraped.body.contains("\npagegate_store_listening 1\n") {
            break;
        }
        assert!(
            scraped.body.contains("\npagegate_store_listening 0\n"),
            "{}",
            scraped.body
        );
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "the gateway never listened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
