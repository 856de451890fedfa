//! The sign-in flow end to end: a real upstream, a real SMTP server receiving the mail (or
//! deferring and refusing it), the code read from the received message, and the session cookie
//! used for the protected page.

mod common;

use std::time::Duration;

use common::browser::hidden;
use common::school::{MAIL_WAIT, School, link_in, school_toml};
use common::smtp::{Refusal, TestSmtp};
use common::{TestGateway, TestUpstream};

#[tokio::test]
async fn a_listed_email_gets_a_code_signs_in_and_sees_the_page() {
    let school = School::open("").await;
    school
        .add_client("course", "ann@example.com", "Ann Lee", None)
        .await;
    let mut browser = school.browser();

    let first = browser.get("/course/lesson-1?t=30").await;
    assert_eq!(first.status, 302);
    assert_eq!(
        first.header("location"),
        Some("/_pagegate/login?next=%2Fcourse%2Flesson-1%3Ft%3D30")
    );
    assert_eq!(
        school.upstream.count(),
        0,
        "nothing reaches the upstream before sign-in"
    );

    let mail = school.request_code(&mut browser, "Ann@Example.com").await;
    assert_eq!(mail.to, ["ann@example.com"]);
    let subject = mail.subject().expect("subject");
    assert!(
        subject.contains("Video course") && subject.contains("Demo School"),
        "{subject}"
    );
    let text = mail.text().expect("text part");
    let code = mail.code(6).expect("code");
    assert!(!subject.contains(&code), "the code is not in the subject");
    assert!(
        text.contains("http://school.test/_pagegate/link?t="),
        "{text}"
    );
    assert!(mail.html().expect("html part").contains(&code));

    let signed_in = school.verify(&mut browser, "ann@example.com", &code).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    assert_eq!(signed_in.header("location"), Some("/course/lesson-1"));
    let cookie = signed_in
        .headers
        .get("set-cookie")
        .expect("session cookie")
        .to_str()
        .expect("ascii");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"),
        "{cookie}"
    );

    let page = browser.get("/course/lesson-1").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body, "hello from upstream /course/lesson-1");
    let seen = school.upstream.last();
    assert_eq!(
        seen.header("x-pagegate-email").as_deref(),
        Some("ann@example.com")
    );
    assert_eq!(seen.header("x-pagegate-name").as_deref(), Some("Ann Lee"));
    assert_eq!(seen.header("x-pagegate-page").as_deref(), Some("course"));
    assert!(
        seen.header("cookie")
            .is_none_or(|c| !c.contains("pagegate")),
        "the session cookie reached the upstream: {:?}",
        seen.header("cookie")
    );

    // The session is per site and email: a page whose list lacks Ann stays closed.
    assert_eq!(browser.get("/extra/").await.status, 302);
}

#[tokio::test]
async fn an_unlisted_email_gets_the_same_answer_and_no_mail() {
    let school = School::open("").await;
    school
        .add_client("course", "ann@example.com", "Ann", None)
        .await;

    let mut listed = school.browser();
    let csrf = listed.open_login("/course/").await;
    let a = listed
        .post_form(
            "/_pagegate/login",
            &[
                ("email", "ann@example.com"),
                ("next", "/course/"),
                ("csrf", &csrf),
            ],
        )
        .await;
    let mut stranger = school.browser();
    let csrf2 = stranger.open_login("/course/").await;
    let b = stranger
        .post_form(
            "/_pagegate/login",
            &[
                ("email", "eve@example.com"),
                ("next", "/course/"),
                ("csrf", &csrf2),
            ],
        )
        .await;

    assert_eq!(a.status, b.status);
    let normalise =
        |body: &str, email: &str, csrf: &str| body.replace(email, "EMAIL").replace(csrf, "CSRF");
    assert_eq!(
        normalise(&a.body, "ann@example.com", &csrf),
        normalise(&b.body, "eve@example.com", &csrf2)
    );
    let mails = school.smtp.wait_for(1, MAIL_WAIT).await;
    assert_eq!(mails[0].to, ["ann@example.com".to_string()]);
    school.assert_nothing_mailed_since(1).await;
}

#[tokio::test]
async fn the_sixth_wrong_code_fails_even_when_right() {
    let school = School::open("resend_after = \"1ms\"").await;
    school
        .add_client("course", "ann@example.com", "Ann", None)
        .await;
    let mut browser = school.browser();
    let mail = school.request_code(&mut browser, "ann@example.com").await;
    let code = mail.code(6).expect("code");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..4 {
        assert_eq!(
            school
                .verify(&mut browser, "ann@example.com", wrong)
                .await
                .status,
            400
        );
    }
    let fifth = school.verify(&mut browser, "ann@example.com", wrong).await;
    assert_eq!(fifth.status, 429);
    let right = school.verify(&mut browser, "ann@example.com", &code).await;
    assert_eq!(
        right.status, 429,
        "the right code after five wrong ones must fail"
    );
    assert!(!browser.has_session());

    // Asking for a new code in the same browser does not reset the count: no code is even sent
    // there while it is locked. The lock is this browser's alone: another one (the client's own
    // phone, say) gets a fresh code that works.
    school.ask_for_code(&mut browser, "ann@example.com").await;
    let mut other = school.browser();
    let fresh = school.request_code(&mut other, "ann@example.com").await;
    let fresh = fresh.code(6).expect("code");
    assert_eq!(
        school
            .verify(&mut other, "ann@example.com", &fresh)
            .await
            .status,
        303
    );
    assert_eq!(
        school.smtp.messages().len(),
        2,
        "the locked browser's request sent nothing"
    );
}

#[tokio::test]
async fn codes_are_single_use_and_expire() {
    let school = School::open("code_ttl = \"10m\"\nresend_after = \"1ms\"").await;
    school
        .add_client("course", "ann@example.com", "Ann", None)
        .await;
    let mut browser = school.browser();
    let code = school
        .request_code(&mut browser, "ann@example.com")
        .await
        .code(6)
        .expect("code");
    assert_eq!(
        school
            .verify(&mut browser, "ann@example.com", &code)
            .await
            .status,
        303
    );
    let mut second = school.browser();
    assert_eq!(
        school
            .verify(&mut second, "ann@example.com", &code)
            .await
            .status,
        400,
        "a used code is spent"
    );

    let mut late = school.browser();
    let code = school
        .request_code(&mut late, "ann@example.com")
        .await
        .code(6)
        .expect("code");
    school.gateway.clock().advance(Duration::from_secs(11 * 60));
    assert_eq!(
        school
            .verify(&mut late, "ann@example.com", &code)
            .await
            .status,
        400,
        "an expired code fails"
    );
    assert!(!late.has_session());
}

#[tokio::test]
async fn the_mailed_link_needs_a_click_and_works_once() {
    let school = School::open("").await;
    school
        .add_client("course", "ann@example.com", "Ann", None)
        .await;
    let mut browser = school.browser();
    let mail = school.request_code(&mut browser, "ann@example.com").await;
    let path = &link_in(&mail);

    // A mail scanner fetching the link twice neither signs in nor burns it.
    let mut scanner = school.browser();
    for _ in 0..2 {
        let page = scanner.get(path).await;
        assert_eq!(page.status, 200);
        assert!(!scanner.has_session());
    }
    let page = browser.get(path).await;
    let token = hidden(&page.body, "token").expect("token field");
    let csrf = hidden(&page.body, "csrf").expect("csrf field");
    let signed_in = browser
        .post_form("/_pagegate/link", &[("token", &token), ("csrf", &csrf)])
        .await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    assert_eq!(signed_in.header("location"), Some("/course/lesson-1"));
    assert_eq!(browser.get("/course/lesson-1").await.status, 200);

    let again = browser
        .post_form("/_pagegate/link", &[("token", &token), ("csrf", &csrf)])
        .await;
    assert_eq!(again.status, 410);
    assert_eq!(scanner.get(path).await.status, 410);
}

#[tokio::test]
async fn removing_a_client_locks_them_out_on_their_next_request() {
    let school = School::open("").await;
    school
        .add_client("course", "ann@example.com", "Ann", None)
        .await;
    let mut browser = school.browser();
    assert_eq!(
        school.sign_in(&mut browser, "ann@example.com").await.status,
        303
    );
    assert_eq!(browser.get("/course/").await.status, 200);

    school.remove_client("course", "ann@example.com").await;
    let after = browser.get("/course/").await;
    assert_eq!(
        after.status, 302,
        "a removed client's session no longer opens the page"
    );
    assert_eq!(school.upstream.count(), 1);
}

#[tokio::test]
async fn an_expired_client_gets_no_code_and_their_session_stops_and_data_survives_restart() {
    use pagegate::store::{AuditEvent, AuditKind};

    let upstream = TestUpstream::start().await;
    let smtp = TestSmtp::start();
    let dir = tempfile::tempdir().expect("temp dir");
    // No resend wait: on a shared database the rate limits outlive the restart, and the point
    // here is that an expired client gets no code even when the limits would let one go out.
    let toml = school_toml(&upstream, &smtp, "resend_after = \"1ms\"");
    let gateway = TestGateway::start_in(dir, &toml).await;
    let school = School {
        upstream,
        smtp,
        gateway,
    };
    school
        .add_client("course", "ann@example.com", "Ann", Some(30))
        .await;
    let mut browser = school.browser();
    assert_eq!(
        school.sign_in(&mut browser, "ann@example.com").await.status,
        303
    );

    // Stop the gateway, end Ann's access directly in the database, start again on the same data.
    let School {
        upstream,
        smtp,
        gateway,
    } = school;
    let dir = gateway.stop_and_keep_dir().await;
    common::with_store(dir.path(), |store| {
        let mut ann = store
            .client("course", "ann@example.com")
            .expect("read")
            .expect("ann survived");
        assert!(ann.last_login.is_some(), "the sign-in was recorded");
        ann.access_until = Some(pagegate::store::now() - 1);
        let event = AuditEvent {
            at: 0,
            kind: AuditKind::ClientUpdated,
            site: None,
            page: None,
            email: None,
            actor: "test".into(),
            detail: String::new(),
        };
        store.put_client("course", &ann, &event).expect("write");
    })
    .await;
    let gateway = TestGateway::start_in(dir, &toml).await;
    let school = School {
        upstream,
        smtp,
        gateway,
    };
    browser.addr = school.gateway.addr;

    assert_eq!(
        browser.get("/course/").await.status,
        302,
        "the session of an expired client stops working"
    );
    let csrf = browser.open_login("/course/").await;
    let answer = browser
        .post_form(
            "/_pagegate/login",
            &[
                ("email", "ann@example.com"),
                ("next", "/course/"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(answer.status, 200);
    // No code for an expired client.
    school.assert_nothing_mailed_since(1).await;
}

#[tokio::test]
async fn open_redirects_through_next_are_refused() {
    let school = School::open("").await;
    let mut browser = school.browser();
    for payload in [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
        "javascript:alert(1)",
    ] {
        let target = format!(
            "/_pagegate/login?next={}",
            form_urlencoded::byte_serialize(payload.as_bytes()).collect::<String>()
        );
        let form = browser.get(&target).await;
        assert_eq!(
            hidden(&form.body, "next").as_deref(),
            Some("/course/"),
            "{payload}"
        );
    }

    school
        .add_client("course", "ann@example.com", "Ann", None)
        .await;
    let code = school
        .request_code(&mut browser, "ann@example.com")
        .await
        .code(6)
        .expect("code");
    let csrf = browser.open_login("/course/").await;
    let answer = browser
        .post_form(
            "/_pagegate/verify",
            &[
                ("email", "ann@example.com"),
                ("code", &code),
                ("next", "//evil.example/"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(answer.status, 303);
    assert_eq!(answer.header("location"), Some("/course/"));
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let school = School::open("").await;
    school
        .add_client("course", "ann@example.com", "Ann", None)
        .await;
    let mut browser = school.browser();
    browser.extra = vec![
        ("X-Pagegate-Email".into(), "ceo@example.com".into()),
        ("x_pagegate_name".into(), "The CEO".into()),
        ("connection".into(), "x-pagegate-email".into()),
    ];
    assert_eq!(
        school.sign_in(&mut browser, "ann@example.com").await.status,
        303
    );
    assert_eq!(browser.get("/course/").await.status, 200);
    browser.get("/public").await;
    let seen = school.upstream.seen();
    assert_eq!(
        seen[0].header("x-pagegate-email").as_deref(),
        Some("ann@example.com")
    );
    assert_eq!(seen[0].header("x-pagegate-name").as_deref(), Some("Ann"));
    assert_eq!(seen[0].header("x_pagegate_name"), None);
    assert_eq!(
        seen[1].header("x-pagegate-email"),
        None,
        "unprotected requests carry no identity"
    );
}

#[tokio::test]
async fn every_method_is_protected_and_apis_get_401() {
    let school = School::open("").await;
    let mut browser = school.browser();
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "FOO"] {
        let answer = browser.send(method, "/course/x", None).await;
        assert_eq!(answer.status, 401, "{method}");
    }
    assert_eq!(browser.send("HEAD", "/course/x", None).await.status, 302);
    browser.extra = vec![("accept".into(), "application/json".into())];
    assert_eq!(browser.get("/course/x").await.status, 401);
    assert_eq!(school.upstream.count(), 0);
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server() {
    let school = School::open("").await;
    school
        .add_client("course", "ann@example.com", "Ann", None)
        .await;
    let mut browser = school.browser();
    assert_eq!(
        school.sign_in(&mut browser, "ann@example.com").await.status,
        303
    );
    let stolen = browser.cookies.clone();

    let out = browser.post_form("/_pagegate/logout", &[]).await;
    assert_eq!(out.status, 200);
    assert!(!browser.has_session(), "the cookie is cleared");
    let mut thief = school.browser();
    thief.cookies = stolen;
    assert_eq!(
        thief.get("/course/").await.status,
        302,
        "the old cookie no longer works"
    );
}

#[tokio::test]
async fn forms_need_their_csrf_token_and_resends_wait() {
    let school = School::open("resend_after = \"1h\"").await;
    school
        .add_client("course", "ann@example.com", "Ann", None)
        .await;
    let mut browser = school.browser();
    browser.open_login("/course/").await;
    let forged = browser
        .post_form(
            "/_pagegate/login",
            &[("email", "ann@example.com"), ("csrf", "guess")],
        )
        .await;
    assert_eq!(forged.status, 403);

    school.request_code(&mut browser, "ann@example.com").await;
    let csrf = browser.open_login("/course/").await;
    let again = browser
        .post_form(
            "/_pagegate/login",
            &[
                ("email", "ann@example.com"),
                ("next", "/course/"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(again.status, 429);
    assert!(again.header("retry-after").is_some());
    assert!(
        again.body.contains("60") || again.body.contains("59"),
        "{}",
        again.body
    );
    assert_eq!(school.smtp.messages().len(), 1);
}

#[tokio::test]
async fn tampered_and_foreign_cookies_are_simply_not_signed_in() {
    let school = School::open("").await;
    school
        .add_client("course", "ann@example.com", "Ann", None)
        .await;
    let mut browser = school.browser();
    assert_eq!(
        school.sign_in(&mut browser, "ann@example.com").await.status,
        303
    );
    let (name, value) = browser
        .cookies
        .iter()
        .find(|(k, _)| !k.contains("csrf"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .expect("session");

    let mut tampered = school.browser();
    let mut bad = value.clone();
    bad.pop();
    bad.push(if value.ends_with('A') { 'B' } else { 'A' });
    tampered.cookies.insert(name.clone(), bad);
    assert_eq!(tampered.get("/course/").await.status, 302);
    let mut truncated = school.browser();
    truncated
        .cookies
        .insert(name.clone(), value[..value.len() / 2].to_string());
    assert_eq!(truncated.get("/course/").await.status, 302);
}

#[tokio::test]
async fn over_https_the_session_cookie_is_secure_and_host_prefixed() {
    let upstream = TestUpstream::start().await;
    let smtp = TestSmtp::start();
    // A TLS-terminating front proxy on this host reports the scheme in X-Forwarded-Proto.
    let toml = school_toml(&upstream, &smtp, "").replace(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n",
    );
    let gateway = TestGateway::start(&toml).await;
    let school = School {
        upstream,
        smtp,
        gateway,
    };
    school
        .add_client("course", "ann@example.com", "Ann", None)
        .await;
    let mut browser = school.browser();
    browser.extra = vec![("x-forwarded-proto".into(), "https".into())];

    let answer = school.sign_in(&mut browser, "ann@example.com").await;
    assert_eq!(answer.status, 303);
    let cookie = answer
        .headers
        .get("set-cookie")
        .expect("cookie")
        .to_str()
        .expect("ascii");
    assert!(cookie.starts_with("__Host-pagegate-"), "{cookie}");
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(!cookie.contains("Domain="), "{cookie}");
    assert_eq!(browser.get("/course/").await.status, 200);
    assert_eq!(
        school
            .upstream
            .last()
            .header("x-forwarded-proto")
            .as_deref(),
        Some("https")
    );
}

/// What the code form says once the mail finally could not be sent.
const SEND_FAILED: &str = "We could not send the mail, please try again.";

/// Waits until the test SMTP server has seen `tries` recipients, at most [`MAIL_WAIT`].
async fn until_tries(smtp: &TestSmtp, tries: usize) {
    let start = std::time::Instant::now();
    while smtp.rcpt_attempts() < tries {
        assert!(
            start.elapsed() < MAIL_WAIT,
            "{tries} tries at the SMTP server"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_code_mail_the_server_defers_still_arrives_once_and_signs_in() {
    let school = School::open("").await;
    school
        .add_client("course", "ann@example.com", "Ann Lee", None)
        .await;
    // Greylisting: the first two tries are told to come back later.
    school.smtp.set_refusal(Refusal::RcptFirst(451, 2));
    let mut browser = school.browser();

    let signed_in = school.sign_in(&mut browser, "ann@example.com").await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    assert_eq!(
        school.smtp.rcpt_attempts(),
        3,
        "two deferrals, then accepted"
    );
    let page = browser.get("/course/lesson-1").await;
    assert_eq!(page.status, 200);

    school.gateway.until_sign_in_work_done(MAIL_WAIT).await;
    assert_eq!(school.smtp.messages().len(), 1, "exactly one message");
}

#[tokio::test]
async fn a_refused_code_mail_is_not_retried_and_the_code_form_says_so() {
    let school = School::open("").await;
    school
        .add_client("course", "ann@example.com", "Ann Lee", None)
        .await;
    school.smtp.set_refusal(Refusal::Rcpt(550));
    let mut browser = school.browser();

    school.ask_for_code(&mut browser, "ann@example.com").await;
    school.gateway.until_sign_in_work_done(MAIL_WAIT).await;
    let answer = school
        .verify(&mut browser, "ann@example.com", "000000")
        .await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(answer.body.contains(SEND_FAILED), "{}", answer.body);
    assert_eq!(school.smtp.rcpt_attempts(), 1, "a 5xx refusal is final");
    assert!(school.smtp.messages().is_empty());
}

#[tokio::test]
async fn retries_of_a_code_mail_end_when_the_code_expires_and_only_then_the_form_says_so() {
    let school = School::open("code_ttl = \"5s\"").await;
    school
        .add_client("course", "ann@example.com", "Ann Lee", None)
        .await;
    school.smtp.set_refusal(Refusal::Rcpt(451));
    let mut browser = school.browser();

    school.ask_for_code(&mut browser, "ann@example.com").await;
    until_tries(&school.smtp, 2).await;
    // Deferred and being retried, not failed: the form does not claim the mail failed.
    let meanwhile = school
        .verify(&mut browser, "ann@example.com", "000000")
        .await;
    assert_eq!(meanwhile.status, 400, "{}", meanwhile.body);
    assert!(!meanwhile.body.contains(SEND_FAILED), "{}", meanwhile.body);

    // mail.retry_for is 10 minutes by default, but a code mail is useless once the code expired
    // (5 s here): the retries end by then, far within the minute this waits, and only then does
    // the form say the mail failed.
    school
        .gateway
        .until_sign_in_work_done(Duration::from_secs(60))
        .await;
    let tries = school.smtp.rcpt_attempts();
    assert!(tries >= 2, "retried: {tries} tries");
    let answer = school
        .verify(&mut browser, "ann@example.com", "000000")
        .await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(answer.body.contains(SEND_FAILED), "{}", answer.body);
    assert!(school.smtp.messages().is_empty());
}

#[tokio::test]
async fn the_suite_runs_on_the_store_the_switch_names() {
    let school = School::open("").await;
    school
        .add_client("course", "ann@example.com", "Ann", None)
        .await;
    let on_postgres = school.gateway.dir.path().join("database-url").exists();
    assert_eq!(on_postgres, common::store_under_test() == "postgres");
    assert_eq!(
        school.data_dir().join("pagegate.redb").exists(),
        !on_postgres,
        "the redb file exists only when the suite runs on redb"
    );
}
