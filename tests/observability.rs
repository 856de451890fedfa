//! What an operator sees of a day at the gateway: the real binary with JSON logs at the most
//! verbose level, in front of a real upstream and a real SMTP server. An admin adds a client with
//! a bearer key, a shop grants access with a signed request, one visitor mistypes her code and
//! then signs in with it, another signs in with the mailed link and signs out. Then the metrics
//! must count exactly that, every log line must be one JSON object, the access log must describe
//! the requests, and no code, link token, cookie, key, secret or full address of that day may
//! appear anywhere in the log.

mod common;

use std::time::Duration;

use common::api::{ApiClient, Cred};
use common::browser::{Browser, hidden};
use common::client::Answer;
use common::observe::{access_lines, contains_number, json_lines, scrape, scrape_path, value};
use common::process::GatewayProcess;
use common::smtp::{Received, TestSmtp};
use common::{TestGateway, TestUpstream, write_config};
use serde_json::{Value, json};

const MAIL_WAIT: Duration = Duration::from_secs(10);
/// Codes this long cannot be mistaken for the numbers a log is full of (ports, timestamps).
const CODE_DIGITS: usize = 10;
const ADMIN_KEY: &str = "admin-key-0123456789abcdefghij";
const SHOP_SIGNING_KEY: &str = "shop-signing-0123456789abcdef";
const MASTER_SECRET: &str = "master-secret-0123456789abcdefghijklmnop";
const METRICS_TOKEN: &str = "metrics-token-0123456789abcdef";
const LESSON: &str = "/course/lesson-1";
const LESSON_BODY: &str = "hello from upstream /course/lesson-1";

/// The school site with its course page, mailing through `smtp`, with an admin key, a shop's
/// signing key, a configured master secret and a metrics listener wanting a token.
fn school_toml(upstream: &TestUpstream, smtp: &TestSmtp, server_extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server_extra}\n\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\ntoken = \"{METRICS_TOKEN}\"\n\n\
         [[site]]\nname = \"school\"\ntitle = \"Demo School\"\nhosts = [\"school.test\"]\n\
         upstream = \"http://{}\"\npublic_url = \"http://school.test\"\n\n\
         [[site.page]]\nid = \"course\"\ntitle = \"Video course\"\npaths = [\"/course/\"]\n\n\
         {}\n[auth]\ncode_length = {CODE_DIGITS}\nsecret = \"{MASTER_SECRET}\"\n\n\
         [[api_key]]\nname = \"admin\"\nsecret = \"{ADMIN_KEY}\"\nscopes = [\"admin\"]\n\n\
         [[api_key]]\nname = \"shop\"\nsecret = \"{SHOP_SIGNING_KEY}\"\nscopes = [\"grant\"]\n",
        upstream.addr,
        smtp.mail_toml("Demo School <school@example.com>")
    )
}

/// The binary serving the school with JSON logs, at `log_level`.
struct School {
    upstream: TestUpstream,
    smtp: TestSmtp,
    gateway: GatewayProcess,
    _dir: tempfile::TempDir,
}

impl School {
    async fn open(server_extra: &str, log_level: &str) -> School {
        let upstream = TestUpstream::start().await;
        let smtp = TestSmtp::start();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_config(dir.path(), &school_toml(&upstream, &smtp, server_extra));
        let config = path.display().to_string();
        let gateway = GatewayProcess::spawn_with_env(
            &["--log-format", "json", "serve", "--config", &config],
            &[("PAGEGATE_LOG", log_level)],
        );
        School {
            upstream,
            smtp,
            gateway,
            _dir: dir,
        }
    }

    fn browser(&self) -> Browser {
        Browser::new(self.gateway.addr, "school.test")
    }

    fn api(&self) -> ApiClient {
        ApiClient::new(self.gateway.addr, "school.test")
    }

    /// Asks for a code for `email` and returns the mail it produced.
    async fn request_code(&self, browser: &mut Browser, email: &str) -> Received {
        let before = self.smtp.messages().len();
        ask_for_code(browser, email).await;
        self.smtp.wait_for(before + 1, MAIL_WAIT).await[before].clone()
    }

    async fn verify(&self, browser: &mut Browser, email: &str, code: &str) -> Answer {
        let csrf = browser.open_login(LESSON).await;
        browser
            .post_form(
                "/_pagegate/verify",
                &[
                    ("email", email),
                    ("code", code),
                    ("next", LESSON),
                    ("csrf", &csrf),
                ],
            )
            .await
    }

    /// Stops the gateway with SIGTERM and returns every line it logged, parsed.
    async fn stop_and_read_log(mut self) -> (String, Vec<Value>) {
        self.gateway.signal("TERM");
        let gateway = tokio::task::spawn_blocking(move || {
            let status = self.gateway.wait_exit(Duration::from_secs(10));
            assert!(status.success(), "exit {status:?}:\n{}", self.gateway.log());
            self.gateway.wait_for_log_end();
            self.gateway
        })
        .await
        .expect("join");
        let lines = gateway.lines();
        (lines.join("\n"), json_lines(&lines))
    }
}

/// Puts `email` on the course page with the admin key.
async fn add_to_course(api: &ApiClient, email: &str) {
    let added = api
        .post(
            "/pages/course/clients",
            &Cred::Bearer(ADMIN_KEY),
            &json!({ "email": email }),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.body);
}

/// Asks for a code for `email` on the email form. The answer does not wait for the mail.
async fn ask_for_code(browser: &mut Browser, email: &str) {
    let csrf = browser.open_login(LESSON).await;
    let answer = browser
        .post_form(
            "/_pagegate/login",
            &[("email", email), ("next", LESSON), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

/// A well-formed code that is not `code`.
fn wrong_code(code: &str) -> String {
    let mut digits: Vec<u8> = code.bytes().collect();
    if let Some(last) = digits.last_mut() {
        *last = b'0' + (*last - b'0' + 1) % 10;
    }
    String::from_utf8(digits).expect("digits")
}

/// The session cookie's value in a browser.
fn session_cookie(browser: &Browser) -> String {
    browser
        .cookies
        .iter()
        .find(|(name, _)| name.contains("pagegate-") && !name.contains("csrf"))
        .map(|(_, value)| value.clone())
        .expect("a session cookie")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_sign_ins_is_counted_and_logged_as_json_without_a_single_secret() {
    let school = School::open("", "trace").await;
    let api = school.api();

    // An admin adds Ann with a bearer key and looks her record up (her email is in that path).
    let added = api
        .post(
            "/pages/course/clients",
            &Cred::Bearer(ADMIN_KEY),
            &json!({"email": "ann@example.com", "name": "Ann Lee"}),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.body);
    let found = api
        .get(
            "/pages/course/clients/ann@example.com",
            &Cred::Bearer(ADMIN_KEY),
        )
        .await;
    assert_eq!(found.status, 200, "{}", found.body);

    // A shop grants Bob the course with a signed request.
    let granted = api
        .post(
            "/grants",
            &Cred::Signed(SHOP_SIGNING_KEY),
            &json!({"page": "course", "email": "bob@example.com", "name": "Bob"}),
        )
        .await;
    assert_eq!(granted.status, 201, "{}", granted.body);

    // Ann is sent to sign in, mistypes her code once, then signs in and reads the lesson.
    let mut ann = school.browser();
    assert_eq!(ann.get(LESSON).await.status, 302);
    let ann_mail = school.request_code(&mut ann, "ann@example.com").await;
    let ann_code = ann_mail.code(CODE_DIGITS).expect("a code in Ann's mail");
    let mistyped = school
        .verify(&mut ann, "ann@example.com", &wrong_code(&ann_code))
        .await;
    assert_eq!(mistyped.status, 400);
    let signed_in = school.verify(&mut ann, "ann@example.com", &ann_code).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let lesson = ann.get(LESSON).await;
    assert_eq!(lesson.status, 200);
    assert_eq!(lesson.body, LESSON_BODY);

    // Bob signs in with the mailed link instead, reads the lesson and signs out.
    let mut bob = school.browser();
    let bob_mail = school.request_code(&mut bob, "bob@example.com").await;
    let bob_code = bob_mail.code(CODE_DIGITS).expect("a code in Bob's mail");
    let link = bob_mail
        .text()
        .expect("text part")
        .split_whitespace()
        .find(|w| w.starts_with("http://school.test/_pagegate/link?t="))
        .expect("a link in Bob's mail")
        .to_string();
    let link_token = link.split("?t=").nth(1).expect("token").to_string();
    let confirm = bob.get(link.trim_start_matches("http://school.test")).await;
    assert_eq!(confirm.status, 200);
    let (token, csrf) = (
        hidden(&confirm.body, "token").expect("token field"),
        hidden(&confirm.body, "csrf").expect("csrf field"),
    );
    let clicked = bob
        .post_form("/_pagegate/link", &[("token", &token), ("csrf", &csrf)])
        .await;
    assert_eq!(clicked.status, 303, "{}", clicked.body);
    assert_eq!(bob.get(LESSON).await.status, 200);
    let bob_session = session_cookie(&bob);
    let bob_cookies: Vec<String> = bob.cookies.values().cloned().collect();
    assert_eq!(bob.post_form("/_pagegate/logout", &[]).await.status, 200);
    assert!(!bob.has_session());

    // The metrics listener wants its token.
    let metrics_addr = school.gateway.logged_addr("metrics on http://");
    assert_eq!(scrape(metrics_addr, None).await.status, 401);
    assert_eq!(
        scrape(metrics_addr, Some("not-the-token-0123456789abcdef"))
            .await
            .status,
        401
    );
    let scraped = scrape(metrics_addr, Some(METRICS_TOKEN)).await;
    assert_eq!(scraped.status, 200, "{}", scraped.body);
    assert!(
        scraped
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        scraped.header("content-type")
    );
    let m = scraped.body.as_str();

    // The sign-in funnel: two codes asked for and sent, one mistyped, one right, one link.
    let login = |event: &str| {
        value(
            m,
            "pagegate_login_events_total",
            &[("site", "school"), ("flow", "visitor"), ("event", event)],
        )
    };
    assert_eq!(login("code_requested"), 2.0);
    assert_eq!(login("code_sent"), 2.0);
    assert_eq!(login("code_failed"), 1.0);
    assert_eq!(login("code_verified"), 1.0);
    assert_eq!(login("link_verified"), 1.0);
    assert_eq!(login("link_failed"), 0.0);
    assert_eq!(login("rate_limited"), 0.0);
    assert_eq!(login("locked"), 0.0);

    // Requests by page and exact status: both lessons read, Ann's first visit sent to sign in.
    let requests = |page: &str, status: &str| {
        value(
            m,
            "pagegate_http_requests_total",
            &[("site", "school"), ("page", page), ("status", status)],
        )
    };
    assert_eq!(requests("course", "200"), 2.0);
    assert_eq!(requests("course", "302"), 1.0);
    assert_eq!(
        requests("", "201"),
        2.0,
        "the admin API's add and the grant"
    );
    assert_eq!(requests("", "303"), 2.0, "the two sign-ins");

    // The upstream was asked exactly twice, and each wait was timed.
    assert_eq!(school.upstream.count(), 2);
    assert_eq!(
        value(
            m,
            "pagegate_upstream_duration_seconds_count",
            &[("site", "school")]
        ),
        2.0
    );
    assert!(
        value(
            m,
            "pagegate_upstream_duration_seconds_sum",
            &[("site", "school")]
        ) > 0.0
    );

    // Grants by key name; sessions: Ann's is live, Bob's ended.
    assert_eq!(
        value(
            m,
            "pagegate_grants_total",
            &[("key", "shop"), ("outcome", "created")]
        ),
        1.0
    );
    assert_eq!(
        value(
            m,
            "pagegate_active_sessions",
            &[("site", "school"), ("kind", "visitor")]
        ),
        1.0
    );
    for kind in ["login", "admin", "welcome"] {
        assert_eq!(
            value(m, "pagegate_mail_send_failures_total", &[("kind", kind)]),
            0.0,
            "no {kind} mail failed"
        );
    }
    assert_eq!(value(m, "pagegate_mail_waiting", &[]), 0.0);
    assert!(value(m, "pagegate_open_connections", &[]) >= 0.0);
    assert_eq!(
        value(
            m,
            "pagegate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(value(m, "pagegate_start_time_seconds", &[]) > 1.7e9);
    assert!(
        !m.contains(ADMIN_KEY) && !m.contains(SHOP_SIGNING_KEY),
        "key names only"
    );

    let ann_session = session_cookie(&ann);
    let ann_cookies: Vec<String> = ann.cookies.values().cloned().collect();
    let (raw, lines) = school.stop_and_read_log().await;

    // Every line is one JSON object with a timestamp, a level, a target and a message.
    for line in &lines {
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(line["level"].is_string(), "{line}");
        assert!(line["target"].is_string(), "{line}");
        assert!(line["fields"]["message"].is_string(), "{line}");
    }
    assert!(
        lines.iter().any(|l| l["level"] == "TRACE"),
        "the log ran at trace level, so the secrecy check below covers it"
    );

    // The access log: one line per request, the lesson with its status, size and time.
    let access = access_lines(&lines);
    let lesson_line = access
        .iter()
        .find(|a| a["path"] == LESSON && a["status"] == 200)
        .unwrap_or_else(|| panic!("no access line for the lesson in {access:#?}"));
    assert_eq!(lesson_line["site"], "school");
    assert_eq!(lesson_line["page"], "course");
    assert_eq!(lesson_line["method"], "GET");
    assert_eq!(lesson_line["bytes"], LESSON_BODY.len());
    assert!(
        lesson_line["duration_ms"]
            .as_f64()
            .is_some_and(|d| d >= 0.0)
    );
    assert_eq!(lesson_line["client"], "127.0.0.1");
    assert_eq!(lesson_line["complete"], true);
    assert!(
        access
            .iter()
            .any(|a| a["path"] == "/_pagegate/api/v1/pages/course/clients/*"),
        "the admin API path is logged with the email masked: {access:#?}"
    );
    assert!(
        access.iter().all(|a| a.get("email").is_none()),
        "no emails in access lines by default"
    );
    assert!(
        access
            .iter()
            .all(|a| !a["path"].as_str().unwrap_or("").contains('?')),
        "no query strings in access lines"
    );

    // Nothing secret anywhere in the log.
    for code in [&ann_code, &bob_code] {
        assert!(!contains_number(&raw, code), "a code is in the log");
    }
    let mut secrets = vec![
        ("the link token", link_token.clone()),
        ("Ann's session cookie", ann_session),
        ("Bob's session cookie", bob_session),
        ("the admin API key", ADMIN_KEY.to_string()),
        ("the shop's signing key", SHOP_SIGNING_KEY.to_string()),
        ("the master secret", MASTER_SECRET.to_string()),
        ("the metrics token", METRICS_TOKEN.to_string()),
        ("Ann's address", "ann@example.com".to_string()),
        ("Bob's address", "bob@example.com".to_string()),
    ];
    for cookie in ann_cookies.into_iter().chain(bob_cookies) {
        secrets.push(("a cookie value", cookie));
    }
    for (what, secret) in secrets {
        assert!(!raw.contains(&secret), "{what} is in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_names_the_visitor_only_when_asked() {
    let school = School::open("access_log_email = true", "info").await;
    add_to_course(&school.api(), "ann@example.com").await;
    let mut ann = school.browser();
    let mail = school.request_code(&mut ann, "ann@example.com").await;
    let code = mail.code(CODE_DIGITS).expect("code");
    assert_eq!(
        school
            .verify(&mut ann, "ann@example.com", &code)
            .await
            .status,
        303
    );
    assert_eq!(ann.get(LESSON).await.status, 200);
    assert_eq!(ann.get("/").await.status, 200);

    let (_, lines) = school.stop_and_read_log().await;
    let access = access_lines(&lines);
    let lesson = access
        .iter()
        .find(|a| a["path"] == LESSON)
        .expect("the lesson's line");
    assert_eq!(lesson["email"], "ann@example.com");
    let home = access
        .iter()
        .find(|a| a["path"] == "/")
        .expect("the home page's line");
    assert!(
        home.get("email").is_none(),
        "only protected pages name the visitor"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_access_log_off_requests_are_counted_but_not_logged() {
    let school = School::open("access_log = false", "info").await;
    let answer = common::client::get(school.gateway.addr, "school.test", "/").await;
    assert_eq!(answer.status, 200);
    let metrics_addr = school.gateway.logged_addr("metrics on http://");
    let scraped = scrape(metrics_addr, Some(METRICS_TOKEN)).await;
    assert_eq!(
        value(
            &scraped.body,
            "pagegate_http_requests_total",
            &[("site", "school"), ("page", ""), ("status", "200")]
        ),
        1.0
    );
    let (_, lines) = school.stop_and_read_log().await;
    assert!(access_lines(&lines).is_empty());
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "all connections closed"),
        "the rest of the log is there"
    );
}

/// A site in front of `upstream`, with `extra` before it (e.g. a `[metrics]` table).
fn plain_site(upstream: &TestUpstream, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n{extra}\n\n\
         [[site]]\nname = \"school\"\nhosts = [\"school.test\"]\nupstream = \"http://{}\"\n",
        upstream.addr
    )
}

#[tokio::test]
async fn metrics_stay_off_the_sites_unless_asked_and_then_need_the_token() {
    let upstream = TestUpstream::start().await;
    let off = TestGateway::start(&plain_site(&upstream, "")).await;
    for token in [None, Some(METRICS_TOKEN)] {
        let answer = scrape_path(off.addr, "school.test", "/_pagegate/metrics", token).await;
        assert_eq!(answer.status, 404, "no metrics on the sites by default");
    }
    assert_eq!(upstream.count(), 0, "nor are they passed to the site");
    off.stop().await;

    let on = TestGateway::start(&plain_site(
        &upstream,
        &format!("[metrics]\non_sites = true\ntoken = \"{METRICS_TOKEN}\""),
    ))
    .await;
    let scrape_on = |token: Option<&'static str>| {
        scrape_path(on.addr, "school.test", "/_pagegate/metrics", token)
    };
    let missing = scrape_on(None).await;
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"pagegate metrics\"")
    );
    assert_eq!(
        scrape_on(Some("not-the-token-0123456789abcdef"))
            .await
            .status,
        401
    );
    let scraped = scrape_on(Some(METRICS_TOKEN)).await;
    assert_eq!(scraped.status, 200);
    assert!(
        value(
            &scraped.body,
            "pagegate_http_requests_total",
            &[("site", "school"), ("page", ""), ("status", "401")]
        ) >= 2.0,
        "the refused scrapes were counted:\n{}",
        scraped.body
    );
    let posted = common::client::send(
        on.addr,
        common::client::request("POST", "school.test", "/_pagegate/metrics")
            .header("authorization", format!("Bearer {METRICS_TOKEN}"))
            .body(http_body_util::Full::default())
            .expect("request"),
    )
    .await;
    assert_eq!(posted.status, 405);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn the_metrics_listener_serves_only_metrics() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::start(&plain_site(
        &upstream,
        "[metrics]\nlisten = \"127.0.0.1:0\"",
    ))
    .await;
    let addr = gateway.metrics_addr.expect("a metrics listener");
    let scraped = scrape(addr, None).await;
    assert_eq!(scraped.status, 200, "no token configured, none needed");
    assert!(scraped.body.ends_with("# EOF\n"));
    assert!(value(&scraped.body, "pagegate_open_connections", &[]) >= 0.0);
    assert_eq!(
        scrape_path(addr, "school.test", "/", None).await.status,
        404,
        "the listener is not a way into the sites"
    );
    assert_eq!(upstream.count(), 0);
    gateway.stop().await;
    let mut closed = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "the listener closes with the gateway");
}

#[tokio::test]
async fn a_refused_sign_in_mail_is_counted_as_a_failure() {
    let upstream = TestUpstream::start().await;
    let smtp = TestSmtp::start_refusing(common::smtp::Refusal::Rcpt(550));
    let gateway = TestGateway::start(&school_toml(&upstream, &smtp, "")).await;
    add_to_course(
        &ApiClient::new(gateway.addr, "school.test"),
        "ann@example.com",
    )
    .await;
    let mut ann = Browser::new(gateway.addr, "school.test");
    // Answered at once although the mail is refused: the answer does not wait for the mail.
    ask_for_code(&mut ann, "ann@example.com").await;

    let addr = gateway.metrics_addr.expect("a metrics listener");
    let failures = || async {
        let scraped = scrape(addr, Some(METRICS_TOKEN)).await;
        value(
            &scraped.body,
            "pagegate_mail_send_failures_total",
            &[("kind", "login")],
        )
    };
    let started = tokio::time::Instant::now();
    while failures().await < 1.0 {
        assert!(
            started.elapsed() < MAIL_WAIT,
            "the refused mail was never counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(smtp.messages().is_empty());
}
