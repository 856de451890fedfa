//! Attack stories: what a careful attacker tried against a running gateway, and what each one
//! gets now. Each story failed on the gateway before its fix (see `docs/security.md`, "Defects
//! found and fixed").

mod common;

use bytes::Bytes;
use common::browser::{Browser, hidden};
use common::certs::TestCa;
use common::client::{self, read_answer};
use common::school::{MAIL_WAIT, School, link_in, school_toml};
use common::smtp::TestSmtp;
use common::{TestGateway, TestUpstream};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pagegate::auth::keys::{CookiePurpose, Keys};

const ANN: &str = "ann@example.com";

/// A shop's CDN in front of the gateway: the upstream says "cache this for a day, anyone may",
/// and a signed-in buyer fetches a paid lesson. Had the answer kept those headers, the CDN would
/// hand the lesson to the next visitor without the gateway ever seeing the request.
#[tokio::test]
async fn a_shared_cache_never_gets_to_keep_a_signed_in_visitors_answer() {
    let school = School::open("").await;
    school.add_client("course", ANN, "Ann", None).await;
    let mut browser = school.browser();

    let asked = browser.get("/course/lesson-1?cache=public").await;
    assert_eq!(asked.status, 302);
    assert_eq!(asked.header("cache-control"), Some("no-store"));

    assert_eq!(school.sign_in(&mut browser, ANN).await.status, 303);
    let lesson = browser.get("/course/lesson-1?cache=public").await;
    assert_eq!(lesson.status, 200);
    assert_eq!(
        lesson.header("cache-control"),
        Some("private, max-age=86400"),
        "the browser may keep it, no shared cache may"
    );
    for gone in [
        "expires",
        "surrogate-control",
        "cdn-cache-control",
        "x-accel-expires",
    ] {
        assert_eq!(lesson.header(gone), None, "{gone} reached the CDN");
    }
    assert_eq!(lesson.header("vary"), Some("Cookie"));

    // pagegate's own answers: even a plain 404 under the prefix is not to be kept.
    let missing = browser.get("/_pagegate/no-such-page").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("cache-control"), Some("no-store"));

    // Unprotected pages are the site's business: its caching orders pass as they are.
    let home = browser.get("/?cache=public").await;
    assert_eq!(
        home.header("cache-control"),
        Some("public, max-age=86400, s-maxage=86400")
    );
}

/// A personal page set to `no-store`: not even the visitor's browser may keep it.
#[tokio::test]
async fn a_no_store_page_is_kept_by_no_cache_at_all() {
    let upstream = TestUpstream::start().await;
    let smtp = TestSmtp::start();
    let toml = school_toml(&upstream, &smtp, "").replace(
        "paths = [\"/extra/\"]",
        "paths = [\"/extra/\"]\ncache = \"no-store\"",
    );
    let school = School {
        gateway: TestGateway::start(&toml).await,
        upstream,
        smtp,
    };
    // A sign-in covers every page of the site the client is on.
    school.add_client("course", ANN, "Ann", None).await;
    school.add_client("extra", ANN, "Ann", None).await;
    let mut browser = school.browser();
    assert_eq!(school.sign_in(&mut browser, ANN).await.status, 303);
    let personal = browser.get("/extra/account?cache=public").await;
    assert_eq!(personal.status, 200);
    assert_eq!(personal.header("cache-control"), Some("no-store"));
    assert_eq!(personal.header("expires"), None);
}

/// A visitor (no trusted proxy in between) claims to come through the site's CDN from an
/// allow-listed address, on HTTPS, under an admin prefix, in every spelling frameworks accept.
#[tokio::test]
async fn forwarding_claims_from_a_visitor_never_reach_the_site() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;
    let claims = [
        ("x-forwarded-prefix", "/admin"),
        ("x-forwarded-port", "443"),
        ("x_forwarded_port", "443"),
        ("x-forwarded-ssl", "on"),
        ("x-forwarded-scheme", "https"),
        ("front-end-https", "on"),
        ("true-client-ip", "10.0.0.1"),
        ("x-client-ip", "10.0.0.1"),
        ("cf-connecting-ip", "10.0.0.1"),
        ("x-cluster-client-ip", "10.0.0.1"),
        ("x_cluster_client_ip", "10.0.0.1"),
        ("fastly-client-ip", "10.0.0.1"),
        ("x_forwarded_for", "10.0.0.1"),
        ("x_real_ip", "10.0.0.1"),
        ("x_original_url", "/course/secret"),
    ];
    let mut req = client::request("GET", "site.example", "/");
    for (name, value) in claims {
        req = req.header(name, value);
    }
    client::send(gateway.addr, req.body(Full::default()).expect("request")).await;
    let seen = upstream.last();
    for (name, _) in claims {
        let canonical = name.replace('_', "-");
        let value = seen.header(name);
        let allowed = ["x-forwarded-for", "x-real-ip"].contains(&canonical.as_str());
        if allowed {
            // Set by the gateway itself, from the connection.
            assert_eq!(seen.header(&canonical).as_deref(), Some("127.0.0.1"));
        } else {
            assert_eq!(value, None, "{name} reached the site");
        }
    }
    assert!(
        seen.headers.keys().all(|k| !k.as_str().contains('_')),
        "{:?}",
        seen.headers
    );

    // A trusted front proxy may tell the site these things; its visitors' own spellings go.
    let gateway =
        TestGateway::in_front_of_with(&upstream, "trusted_proxies = [\"127.0.0.1/32\"]").await;
    let req = client::request("GET", "site.example", "/")
        .header("x-forwarded-prefix", "/shop")
        .header("cf-connecting-ip", "203.0.113.9")
        .header("x_forwarded_prefix", "/admin")
        .body(Full::default())
        .expect("request");
    client::send(gateway.addr, req).await;
    let seen = upstream.last();
    assert_eq!(seen.header("x-forwarded-prefix").as_deref(), Some("/shop"));
    assert_eq!(
        seen.header("cf-connecting-ip").as_deref(),
        Some("203.0.113.9")
    );
}

/// A stranger asks for a code for Ann's email in their own browser and guesses wrong until
/// locked; another types codes for her email without asking for one at all. Neither keeps Ann
/// out: her own browser still gets a code and signs in.
#[tokio::test]
async fn nobody_can_lock_a_client_out_by_guessing_codes_for_her_email() {
    let school = School::open("resend_after = \"1ms\"").await;
    school.add_client("course", ANN, "Ann", None).await;

    let mut stranger = school.browser();
    school.ask_for_code(&mut stranger, ANN).await;
    school.smtp.wait_for(1, MAIL_WAIT).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(school.verify(&mut stranger, ANN, "000000").await.status);
    }
    assert_eq!(statuses, [400, 400, 400, 400, 429, 429]);

    let mut typist = school.browser();
    for _ in 0..10 {
        school.verify(&mut typist, ANN, "123456").await;
    }

    let mut ann = school.browser();
    let signed_in = school.sign_in(&mut ann, ANN).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    assert!(ann.has_session());
    assert!(!stranger.has_session() && !typist.has_session());
}

/// The same against the admin sign-in: a stranger's wrong guesses must not keep the admin from
/// the admin page.
#[tokio::test]
async fn nobody_can_lock_an_admin_out_of_the_admin_page() {
    let school =
        School::open("resend_after = \"1ms\"\n[admin]\nemails = [\"boss@example.com\"]").await;
    let mut stranger = school.browser();
    let (csrf, _) = ask_for_admin_code(&school, &mut stranger).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(admin_verify(&mut stranger, &csrf, "000000").await);
    }
    assert_eq!(statuses, [400, 400, 400, 400, 429, 429]);

    let mut boss = school.browser();
    let (csrf, code) = ask_for_admin_code(&school, &mut boss).await;
    assert_eq!(admin_verify(&mut boss, &csrf, &code).await, 303);
    assert_eq!(boss.get("/_pagegate/admin/").await.status, 200);
}

/// Asks for an admin code for the boss in `browser`; the form's anti-forgery token and the
/// mailed code.
async fn ask_for_admin_code(school: &School, browser: &mut Browser) -> (String, String) {
    let form = browser.get("/_pagegate/admin/login").await;
    let csrf = hidden(&form.body, "csrf").expect("csrf");
    let before = school.smtp.messages().len();
    let asked = browser
        .post_form(
            "/_pagegate/admin/login",
            &[
                ("email", "boss@example.com"),
                ("next", "/_pagegate/admin/"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(asked.status, 200);
    let mail = school.smtp.wait_for(before + 1, MAIL_WAIT).await[before].clone();
    (csrf, mail.code(6).expect("code"))
}

async fn admin_verify(browser: &mut Browser, csrf: &str, code: &str) -> http::StatusCode {
    browser
        .post_form(
            "/_pagegate/admin/verify",
            &[
                ("email", "boss@example.com"),
                ("code", code),
                ("next", "/_pagegate/admin/"),
                ("csrf", csrf),
            ],
        )
        .await
        .status
}

/// Over HTTP/2 the authority travels in `:authority`, not `Host`. A page on another site posts
/// the sign-in form with the visitor's own anti-forgery cookie and token (a sibling subdomain
/// can plant both): the browser's `Origin` names the other site, and that must be refused.
#[tokio::test]
async fn a_form_posted_from_another_origin_is_refused_over_http2() {
    let ca = TestCa::new();
    let upstream = TestUpstream::start().await;
    let smtp = TestSmtp::start();
    let dir = tempfile::tempdir().expect("temp dir");
    ca.write_leaf(dir.path(), "school", &["school.test"]);
    let toml = school_toml(&upstream, &smtp, "")
        .replace(
            "listen = \"127.0.0.1:0\"",
            "tls_listen = \"127.0.0.1:0\"",
        )
        .replace(
            "public_url = \"http://school.test\"",
            "public_url = \"https://school.test\"\ntls = { cert = \"school.pem\", key = \"school.key\" }",
        );
    let gateway = TestGateway::start_in(dir, &toml).await;
    let stream = client::tls_connect(
        gateway.tls_addr.expect("tls listener"),
        "school.test",
        ca.client_config(&[b"h2"]),
    )
    .await
    .expect("TLS handshake");
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);

    let form = read_answer(
        h2.send_request(
            http::Request::get("https://school.test/_pagegate/login?next=/course/")
                .body(Full::<Bytes>::default())
                .expect("request"),
        )
        .await
        .expect("form"),
    )
    .await;
    assert_eq!(form.status, 200);
    let csrf = hidden(&form.body, "csrf").expect("csrf");
    let cookie = form
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("csrf cookie")
        .to_string();
    let body = format!("email=ann%40example.com&next=%2Fcourse%2F&csrf={csrf}");
    let mut post_from = async |origin: &str| {
        let req = http::Request::post("https://school.test/_pagegate/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", &cookie)
            .header("origin", origin)
            .body(Full::from(body.clone()))
            .expect("request");
        read_answer(h2.send_request(req).await.expect("post")).await
    };
    assert_eq!(post_from("https://evil.test").await.status, 403);
    assert_eq!(
        post_from("http://school.test").await.status,
        403,
        "another scheme is another origin"
    );
    assert_eq!(post_from("https://school.test").await.status, 200);
}

/// A listed client sends their own sign-in link to someone else: opened there, it would sign
/// that person in as the client, and whatever they then do on the site (a purchase, a message)
/// is done as the client. The link's page names the account and, opened in a browser that did
/// not ask for it, signs in only once the visitor confirms that account is theirs.
#[tokio::test]
async fn a_sign_in_link_opened_in_another_browser_names_the_account_and_asks_first() {
    let school = School::open("resend_after = \"1ms\"").await;
    school.add_client("course", ANN, "Ann", None).await;
    let mut ann = school.browser();
    let mail = school.request_code(&mut ann, ANN).await;
    let link = link_in(&mail);

    let mut victim = school.browser();
    let page = victim.get(&link).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("a***@example.com"), "{}", page.body);
    assert!(page.body.contains("name=\"confirm_account\""));
    let csrf = hidden(&page.body, "csrf").expect("csrf");
    let token = hidden(&page.body, "token").expect("token");
    let unconfirmed = victim
        .post_form("/_pagegate/link", &[("token", &token), ("csrf", &csrf)])
        .await;
    assert_eq!(unconfirmed.status, 400);
    assert!(!victim.has_session(), "signed in without confirming");

    // In the browser that asked, the same link is one button, naming the account too.
    let page = ann.get(&link).await;
    assert!(page.body.contains("a***@example.com"));
    assert!(!page.body.contains("name=\"confirm_account\""));
    let csrf = hidden(&page.body, "csrf").expect("csrf");
    let signed_in = ann
        .post_form("/_pagegate/link", &[("token", &token), ("csrf", &csrf)])
        .await;
    assert_eq!(signed_in.status, 303);
    assert!(ann.has_session());
}

/// Someone who really did ask on their laptop and opens the mail on their phone confirms the
/// account and is signed in there.
#[tokio::test]
async fn a_link_confirmed_in_another_browser_signs_in() {
    let school = School::open("").await;
    school.add_client("course", ANN, "Ann", None).await;
    let mut laptop = school.browser();
    let mail = school.request_code(&mut laptop, ANN).await;
    let link = link_in(&mail);
    let mut phone = school.browser();
    let page = phone.get(&link).await;
    let csrf = hidden(&page.body, "csrf").expect("csrf");
    let token = hidden(&page.body, "token").expect("token");
    let signed_in = phone
        .post_form(
            "/_pagegate/link",
            &[
                ("token", &token),
                ("csrf", &csrf),
                ("confirm_account", "yes"),
            ],
        )
        .await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    assert_eq!(phone.get("/course/lesson-1").await.status, 200);
}

/// A client whose address is not ASCII signs in: the site must still learn who it is. (The
/// mail goes to a folder here: sending to such an address over SMTP needs a server that offers
/// SMTPUTF8, which the test server does not.)
#[tokio::test]
async fn the_site_learns_a_utf8_address_instead_of_an_anonymous_signed_in_request() {
    let upstream = TestUpstream::start().await;
    let smtp = TestSmtp::start();
    let toml = school_toml(&upstream, &smtp, "").replace(
        &smtp.mail_toml("Demo School <school@example.com>"),
        "[mail]\ntransport = \"file\"\ndir = \"outbox\"\n",
    );
    let school = School {
        gateway: TestGateway::start(&toml).await,
        upstream,
        smtp,
    };
    let email = "анна@example.com";
    school.add_client("course", email, "Анна", None).await;
    let mut browser = school.browser();
    school.ask_for_code(&mut browser, email).await;
    let outbox = school.gateway.dir.path().join("outbox");
    let code = wait_for_code_in(&outbox).await;
    assert_eq!(school.verify(&mut browser, email, &code).await.status, 303);
    assert_eq!(browser.get("/course/lesson-1").await.status, 200);
    let seen = school.upstream.last();
    let header = seen.header("x-pagegate-email").expect("the email header");
    assert_eq!(
        percent_encoding::percent_decode_str(&header)
            .decode_utf8()
            .expect("UTF-8"),
        email
    );
}

/// The code in the first message the file transport wrote to `outbox`.
async fn wait_for_code_in(outbox: &std::path::Path) -> String {
    let deadline = tokio::time::Instant::now() + MAIL_WAIT;
    loop {
        let message = std::fs::read_dir(outbox)
            .into_iter()
            .flatten()
            .flatten()
            .find_map(|entry| std::fs::read_to_string(entry.path()).ok());
        if let Some(code) = message.and_then(|m| {
            common::smtp::part(&m, "text/plain").and_then(|text| common::smtp::find_code(&text, 6))
        }) {
            return code;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no mail in {}",
            outbox.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Every cookie the gateway signs is signed for one purpose: a value it signed as one cookie
/// (here the anti-forgery token any visitor can get) never verifies as another.
#[tokio::test]
async fn a_value_signed_for_one_cookie_never_verifies_as_another() {
    let school = School::open("").await;
    let mut browser = school.browser();
    browser.open_login("/course/").await;
    let (name, value) = browser
        .cookies
        .iter()
        .find(|(k, _)| k.contains("csrf"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .expect("the anti-forgery cookie");
    let config =
        pagegate::config::load(&school.gateway.dir.path().join("gateway.toml")).expect("config");
    let keys = Keys::load(&config.auth, &config.data_dir).expect("the gateway's keys");
    let as_cookie = |cookie_name: &str| {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            http::HeaderValue::from_str(&format!("{cookie_name}={value}")).expect("value"),
        );
        h
    };
    assert!(
        keys.read_cookie(&as_cookie(&name), &name, CookiePurpose::Csrf)
            .is_some()
    );
    let session_name = name.replace("csrf-", "");
    for purpose in [
        CookiePurpose::Session,
        CookiePurpose::AdminSession,
        CookiePurpose::AdminCsrf,
        CookiePurpose::AdminFlash,
    ] {
        assert!(
            keys.read_cookie(&as_cookie(&session_name), &session_name, purpose)
                .is_none(),
            "verified as {purpose:?}"
        );
    }
}

/// A mailed link posted to another site's host on the same gateway is refused there and stays
/// usable on its own site: it is not spent where it does not belong.
#[tokio::test]
async fn a_link_posted_to_another_site_is_not_spent_there() {
    let upstream = TestUpstream::start().await;
    let smtp = TestSmtp::start();
    let toml = format!(
        "{}\n[[site]]\nname = \"other\"\nhosts = [\"other.test\"]\nupstream = \"http://{}\"\n",
        school_toml(&upstream, &smtp, ""),
        upstream.addr
    );
    let school = School {
        gateway: TestGateway::start(&toml).await,
        upstream,
        smtp,
    };
    school.add_client("course", ANN, "Ann", None).await;
    let mut ann = school.browser();
    let mail = school.request_code(&mut ann, ANN).await;
    let link = link_in(&mail);
    let token = link.split("?t=").nth(1).expect("token").to_string();

    let mut elsewhere = Browser::new(school.gateway.addr, "other.test");
    let csrf = elsewhere.open_login("/").await;
    let refused = elsewhere
        .post_form(
            "/_pagegate/link",
            &[
                ("token", &token),
                ("csrf", &csrf),
                ("confirm_account", "yes"),
            ],
        )
        .await;
    assert_eq!(refused.status, 410);
    assert!(!elsewhere.has_session());

    let page = ann.get(&link).await;
    let csrf = hidden(&page.body, "csrf").expect("csrf");
    let signed_in = ann
        .post_form("/_pagegate/link", &[("token", &token), ("csrf", &csrf)])
        .await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
}
