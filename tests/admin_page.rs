//! The admin page over HTTP: admins sign in with mailed codes, manage a page's clients through
//! plain forms, and every change lands in the audit log under their email. A real upstream and a
//! real SMTP server, as in `login.rs`.

mod common;

use std::time::Duration;

use common::browser::{Browser, hidden};
use common::client::Answer;
use common::smtp::TestSmtp;
use common::{TestGateway, TestUpstream};
use pagegate::auth::cookies::CookieNames;
use pagegate::store::AuditKind;

const MAIL_WAIT: Duration = Duration::from_secs(10);
const ADMIN: &str = "admin@example.com";
const BOSS: &str = "boss@example.com";
const ADMIN_PAGE: &str = "/_pagegate/admin/";
const COURSE: &str = "/_pagegate/admin/pages/course";

struct School {
    _upstream: TestUpstream,
    smtp: TestSmtp,
    gateway: TestGateway,
}

fn school_toml(upstream: &TestUpstream, smtp: &TestSmtp, admins: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n\
         [[site]]\nname = \"school\"\ntitle = \"Demo School\"\nhosts = [\"school.test\"]\n\
         upstream = \"http://{}\"\npublic_url = \"http://school.test\"\n\n\
         [[site.page]]\nid = \"course\"\ntitle = \"Video course\"\npaths = [\"/course/\"]\n\n\
         [[site.page]]\nid = \"extra\"\ntitle = \"Bonus lessons\"\npaths = [\"/extra/\"]\n\n\
         {}\n{admins}\n",
        upstream.addr,
        smtp.mail_toml("Demo School <school@example.com>")
    )
}

fn admins(list: &[&str]) -> String {
    let quoted: Vec<String> = list.iter().map(|e| format!("\"{e}\"")).collect();
    format!("[admin]\nemails = [{}]\n", quoted.join(", "))
}

impl School {
    async fn open() -> School {
        Self::open_with(&admins(&[ADMIN])).await
    }

    async fn open_with(admin_section: &str) -> School {
        let upstream = TestUpstream::start().await;
        let smtp = TestSmtp::start();
        let gateway = TestGateway::start(&school_toml(&upstream, &smtp, admin_section)).await;
        School {
            _upstream: upstream,
            smtp,
            gateway,
        }
    }

    fn browser(&self) -> Browser {
        Browser::new(self.gateway.addr, "school.test")
    }

    /// Signs `browser` in as an admin with the mailed code.
    async fn admin_sign_in(&self, browser: &mut Browser, email: &str) {
        let form = browser.get("/_pagegate/admin/login").await;
        assert_eq!(form.status, 200, "{}", form.body);
        let csrf = hidden(&form.body, "csrf").expect("csrf");
        let before = self.smtp.messages().len();
        let asked = browser
            .post_form(
                "/_pagegate/admin/login",
                &[("email", email), ("next", ADMIN_PAGE), ("csrf", &csrf)],
            )
            .await;
        assert_eq!(asked.status, 200, "{}", asked.body);
        let mail = self.smtp.wait_for(before + 1, MAIL_WAIT).await[before].clone();
        assert_eq!(mail.to, [email]);
        let code = mail.code(6).expect("a code in the admin mail");
        let signed_in = browser
            .post_form(
                "/_pagegate/admin/verify",
                &[
                    ("email", email),
                    ("code", &code),
                    ("next", ADMIN_PAGE),
                    ("csrf", &csrf),
                ],
            )
            .await;
        assert_eq!(signed_in.status, 303, "{}", signed_in.body);
        assert_eq!(signed_in.header("location"), Some(ADMIN_PAGE));
    }

    /// Signs `browser` in as a visitor on /course/ with the mailed code.
    async fn visitor_sign_in(&self, browser: &mut Browser, email: &str) -> Answer {
        let csrf = browser.open_login("/course/").await;
        let before = self.smtp.messages().len();
        let asked = browser
            .post_form(
                "/_pagegate/login",
                &[("email", email), ("next", "/course/"), ("csrf", &csrf)],
            )
            .await;
        assert_eq!(asked.status, 200);
        let mail = self.smtp.wait_for(before + 1, MAIL_WAIT).await[before].clone();
        let code = mail.code(6).expect("code");
        browser
            .post_form(
                "/_pagegate/verify",
                &[
                    ("email", email),
                    ("code", &code),
                    ("next", "/course/"),
                    ("csrf", &csrf),
                ],
            )
            .await
    }

    async fn audit(self) -> Vec<pagegate::store::AuditEvent> {
        let dir = self.gateway.stop_and_keep_dir().await;
        common::with_store(dir.path(), |store| {
            store
                .audit_log(None, 10_000)
                .expect("audit log")
                .into_iter()
                .map(|(_, e)| e)
                .collect()
        })
        .await
    }
}

/// The admin CSRF token shown on a page.
async fn csrf_of(browser: &mut Browser, path: &str) -> String {
    let page = browser.get(path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    hidden(&page.body, "csrf").expect("csrf on the page")
}

/// POSTs an admin form from the client table and returns the answer.
async fn post(browser: &mut Browser, action: &str, fields: &[(&str, &str)]) -> Answer {
    let csrf = csrf_of(browser, COURSE).await;
    let mut all: Vec<(&str, &str)> = fields.to_vec();
    all.push(("csrf", &csrf));
    browser.post_form(&format!("{COURSE}/{action}"), &all).await
}

fn multipart(fields: &[(&str, Option<&str>, &str)]) -> (String, String) {
    let boundary = "----pagegate-test-7MA4YWxkTrZu0gW";
    let mut body = String::new();
    for (name, filename, value) in fields {
        body.push_str(&format!("--{boundary}\r\n"));
        match filename {
            Some(f) => body.push_str(&format!(
                "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: text/csv\r\n\r\n"
            )),
            None => body.push_str(&format!(
                "Content-Disposition: form-data; name=\"{name}\"\r\n\r\n"
            )),
        }
        body.push_str(value);
        body.push_str("\r\n");
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn mails_to(smtp: &TestSmtp, email: &str) -> usize {
    smtp.messages()
        .iter()
        .filter(|m| m.to.iter().any(|t| t == email))
        .count()
}

#[tokio::test]
async fn only_listed_admins_get_a_code_and_the_answer_is_the_same_for_everyone() {
    let school = School::open().await;
    let mut browser = school.browser();

    let first = browser.get(ADMIN_PAGE).await;
    assert_eq!(first.status, 302);
    assert_eq!(
        first.header("location"),
        Some("/_pagegate/admin/login?next=%2F_pagegate%2Fadmin%2F")
    );
    let form = browser.get("/_pagegate/admin/login").await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("Admin sign-in"), "{}", form.body);
    assert_eq!(
        form.header("content-security-policy"),
        Some("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
    );
    let csrf = hidden(&form.body, "csrf").expect("csrf");

    let mut answers = Vec::new();
    for email in ["nobody@example.com", ADMIN] {
        let answer = browser
            .post_form(
                "/_pagegate/admin/login",
                &[("email", email), ("next", ADMIN_PAGE), ("csrf", &csrf)],
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answers.push(answer.body.replace(email, "EMAIL"));
    }
    assert_eq!(answers[0], answers[1], "the answers differ");
    let mails = school.smtp.wait_for(1, MAIL_WAIT).await;
    assert_eq!(mails[0].to, [ADMIN]);
    let subject = mails[0].subject().expect("subject");
    assert!(subject.contains("Demo School"), "{subject}");
    let text = mails[0].text().expect("text");
    assert!(!text.contains("http"), "admin mail has no link: {text}");
    common::school::assert_nothing_mailed_since(&school.gateway, &school.smtp, 1).await;
    assert_eq!(mails_to(&school.smtp, "nobody@example.com"), 0);

    // A wrong code signs nobody in.
    let wrong = browser
        .post_form(
            "/_pagegate/admin/verify",
            &[
                ("email", "nobody@example.com"),
                ("code", "000000"),
                ("next", ADMIN_PAGE),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(wrong.status, 400);
    assert!(browser.get(ADMIN_PAGE).await.status == 302);
}

#[tokio::test]
async fn an_admin_manages_a_page_and_every_change_is_audited_with_their_email() {
    let school = School::open().await;
    let mut browser = school.browser();
    school.admin_sign_in(&mut browser, ADMIN).await;
    let names = CookieNames::for_site("admin:school");
    assert!(browser.cookies.contains_key(names.session(false)));

    let overview = browser.get(ADMIN_PAGE).await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    for want in [
        "Demo School",
        "Video course",
        "Bonus lessons",
        "href=\"/_pagegate/admin/pages/course\"",
        "0 clients",
        "Signed in as admin@example.com",
    ] {
        assert!(overview.body.contains(want), "{want} missing");
    }
    assert!(!overview.body.contains("<script"));

    // Add.
    let added = post(
        &mut browser,
        "add",
        &[
            ("email", "Ann@Example.com"),
            ("name", "Ann Lee"),
            ("access", "unlimited"),
            ("until", ""),
            ("days", ""),
        ],
    )
    .await;
    assert_eq!(added.status, 303, "{}", added.body);
    assert_eq!(added.header("location"), Some(COURSE));
    let table = browser.get(COURSE).await;
    assert!(table.body.contains("ann@example.com was added."), "flash");
    assert!(table.body.contains("Ann Lee") && table.body.contains("unlimited"));
    assert!(
        !browser.get(COURSE).await.body.contains("was added"),
        "a flash shows once"
    );

    // Adding the same email again is refused and the form keeps what was typed.
    let again = post(
        &mut browser,
        "add",
        &[
            ("email", "ann@example.com"),
            ("name", "Other"),
            ("access", "unlimited"),
        ],
    )
    .await;
    assert_eq!(again.status, 400);
    assert!(again.body.contains("already a client"), "{}", again.body);
    assert!(again.body.contains("value=\"Other\""));

    // A date typed next to "unlimited" is pointed out, not ignored.
    let unclear = post(
        &mut browser,
        "add",
        &[
            ("email", "cy@example.com"),
            ("access", "unlimited"),
            ("until", "2999-01-01"),
        ],
    )
    .await;
    assert_eq!(unclear.status, 400);

    // Edit: a new name and 10 days.
    let edited = post(
        &mut browser,
        "edit",
        &[
            ("email", "ann@example.com"),
            ("name", "Ann Lee-Smith"),
            ("access", "days"),
            ("days", "10"),
        ],
    )
    .await;
    assert_eq!(edited.status, 303, "{}", edited.body);
    let table = browser.get(COURSE).await;
    assert!(table.body.contains("Ann Lee-Smith"));
    assert!(table.body.contains("Extend by 30 days"));

    // Extend by 30 days: 40 days from now.
    let extended = post(&mut browser, "extend", &[("email", "ann@example.com")]).await;
    assert_eq!(extended.status, 303);
    let flash = browser.get(COURSE).await;
    assert!(
        flash
            .body
            .contains("Access for ann@example.com was extended by 30 days."),
        "{}",
        flash.body
    );

    // Search and paging keep to the matching clients.
    let found = browser.get(&format!("{COURSE}?q=smith")).await;
    assert!(found.body.contains("ann@example.com") && found.body.contains("1–1 of 1"));
    let none = browser.get(&format!("{COURSE}?q=zzz")).await;
    assert!(none.body.contains("No client matches the search."));

    // Import: a file (multipart) with one new and one existing client.
    let csrf = csrf_of(&mut browser, COURSE).await;
    let (content_type, body) = multipart(&[
        ("csrf", None, &csrf),
        (
            "file",
            Some("clients.csv"),
            "email,name,until\r\nbob@example.com,Bob,2999-12-31\r\nann@example.com,Ann L.,\r\n",
        ),
        ("csv", None, ""),
    ]);
    let imported = browser
        .send(
            "POST",
            &format!("{COURSE}/import"),
            Some((content_type.as_str(), body)),
        )
        .await;
    assert_eq!(imported.status, 303, "{}", imported.body);
    let table = browser.get(COURSE).await;
    assert!(table.body.contains("Import done: 1 added, 1 updated."));
    assert!(table.body.contains("bob@example.com") && table.body.contains("2999-12-31"));

    // Import: pasted text with a bad line takes the good lines and names the bad one, with
    // the text kept to fix it.
    let csrf = csrf_of(&mut browser, COURSE).await;
    let (content_type, body) = multipart(&[
        ("csrf", None, &csrf),
        ("csv", None, "cy@example.com,Cy\nnot-an-email,X\n"),
    ]);
    let partly = browser
        .send(
            "POST",
            &format!("{COURSE}/import"),
            Some((content_type.as_str(), body)),
        )
        .await;
    assert_eq!(partly.status, 200, "{}", partly.body);
    for want in [
        "Import done: 1 added, 0 updated.",
        "These lines were not imported.",
        "Line 2: not a valid email address.",
        "not-an-email,X",
    ] {
        assert!(
            partly.body.contains(want),
            "{want} missing:\n{}",
            partly.body
        );
    }
    assert!(browser.get(COURSE).await.body.contains("cy@example.com"));

    // Import: when no line is good, nothing is imported and every bad line is named.
    let csrf = csrf_of(&mut browser, COURSE).await;
    let (content_type, body) = multipart(&[
        ("csrf", None, &csrf),
        ("csv", None, "dee at example.com,Dee\nnot-an-email,X\n"),
    ]);
    let refused = browser
        .send(
            "POST",
            &format!("{COURSE}/import"),
            Some((content_type.as_str(), body)),
        )
        .await;
    assert_eq!(refused.status, 400);
    for want in [
        "Nothing was imported.",
        "Line 1: not a valid email address.",
        "Line 2: not a valid email address.",
    ] {
        assert!(
            refused.body.contains(want),
            "{want} missing:\n{}",
            refused.body
        );
    }
    assert!(!refused.body.contains("Import done"), "{}", refused.body);

    // Export.
    let csv = browser.get(&format!("{COURSE}/clients.csv")).await;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    assert!(
        csv.header("content-disposition")
            .is_some_and(|d| d.contains("course-clients.csv"))
    );
    let mut lines = csv.body.lines();
    assert_eq!(
        lines.next(),
        Some("\"name\",\"email\",\"until\",\"active\",\"source\",\"created_at\",\"last_login\"")
    );
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("\"Ann L.\",\"ann@example.com\","))
    );
    assert!(lines.next().is_some_and(|l| {
        l.starts_with("\"Bob\",\"bob@example.com\",\"2999-12-31\",\"true\",\"import\",")
    }));

    // Remove.
    let removed = post(&mut browser, "remove", &[("email", "bob@example.com")]).await;
    assert_eq!(removed.status, 303);
    let table = browser.get(COURSE).await;
    assert!(table.body.contains("bob@example.com was removed."));
    let removed_again = post(&mut browser, "remove", &[("email", "bob@example.com")]).await;
    assert_eq!(removed_again.status, 404);

    // Sign out ends the session.
    let csrf = csrf_of(&mut browser, ADMIN_PAGE).await;
    let out = browser
        .post_form("/_pagegate/admin/logout", &[("csrf", &csrf)])
        .await;
    assert_eq!(out.status, 303);
    assert_eq!(browser.get(ADMIN_PAGE).await.status, 302);

    let audit = school.audit().await;
    let by_admin = |kind: AuditKind, email: &str| {
        audit.iter().any(|e| {
            e.kind == kind
                && e.actor == ADMIN
                && e.page.as_deref() == Some("course")
                && e.email.as_deref() == Some(email)
        })
    };
    assert!(by_admin(AuditKind::ClientAdded, "ann@example.com"));
    assert!(by_admin(AuditKind::ClientUpdated, "ann@example.com"));
    assert!(
        audit
            .iter()
            .any(|e| e.kind == AuditKind::ClientUpdated && e.detail.contains("extended by 30 days"))
    );
    assert!(
        by_admin(AuditKind::ClientAdded, "bob@example.com"),
        "import"
    );
    assert!(
        by_admin(AuditKind::ClientAdded, "cy@example.com"),
        "the good line of a partly bad import"
    );
    assert!(by_admin(AuditKind::ClientRemoved, "bob@example.com"));
    assert!(
        audit
            .iter()
            .any(|e| e.kind == AuditKind::Login && e.actor == ADMIN && e.detail.contains("admin"))
    );
    assert!(
        audit
            .iter()
            .any(|e| e.kind == AuditKind::Logout && e.actor == ADMIN)
    );
    let client_changes = audit
        .iter()
        .filter(|e| e.page.as_deref() == Some("course"))
        .count();
    assert_eq!(client_changes, 7, "{audit:#?}");
}

#[tokio::test]
async fn every_admin_post_needs_the_token_and_this_origin() {
    let school = School::open().await;
    let mut browser = school.browser();
    school.admin_sign_in(&mut browser, ADMIN).await;
    let csrf = csrf_of(&mut browser, COURSE).await;
    fn fields(token: &str) -> [(&str, &str); 3] {
        [
            ("email", "eve@example.com"),
            ("access", "unlimited"),
            ("csrf", token),
        ]
    }
    let add = format!("{COURSE}/add");
    let missing = browser.post_form(&add, &fields("")).await;
    assert_eq!(missing.status, 403);
    let wrong = browser.post_form(&add, &fields("forged")).await;
    assert_eq!(wrong.status, 403);
    assert!(wrong.body.contains("The form expired"), "{}", wrong.body);

    let token = csrf.as_str();
    for (header, value) in [
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        browser.extra = vec![(header.to_string(), value.to_string())];
        let refused = browser.post_form(&add, &fields(token)).await;
        assert_eq!(refused.status, 403, "{header}: {value}");
    }
    browser.extra = vec![
        ("origin".into(), "http://school.test".into()),
        ("sec-fetch-site".into(), "same-origin".into()),
    ];
    let accepted = browser.post_form(&add, &fields(token)).await;
    assert_eq!(accepted.status, 303, "{}", accepted.body);
    browser.extra.clear();

    // Without a session, a POST changes nothing and is sent to sign in.
    let mut stranger = school.browser();
    let stranger_csrf = {
        let form = stranger.get("/_pagegate/admin/login").await;
        hidden(&form.body, "csrf").expect("csrf")
    };
    let refused = stranger
        .post_form(
            &format!("{COURSE}/remove"),
            &[("email", "eve@example.com"), ("csrf", &stranger_csrf)],
        )
        .await;
    assert_eq!(refused.status, 303);
    assert_eq!(refused.header("location"), Some("/_pagegate/admin/login"));

    let audit = school.audit().await;
    let added: Vec<_> = audit
        .iter()
        .filter(|e| e.email.as_deref() == Some("eve@example.com"))
        .collect();
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!(added[0].kind, AuditKind::ClientAdded);
}

#[tokio::test]
async fn an_admin_taken_off_the_list_is_locked_out_at_once() {
    let upstream = TestUpstream::start().await;
    let smtp = TestSmtp::start();
    // No resend wait: on a shared database the rate limits outlive the restart below, and the
    // point there is that no code goes out even when the limits would let one.
    let no_wait = "[auth]\nresend_after = \"1ms\"\n";
    let gateway = TestGateway::start(&school_toml(
        &upstream,
        &smtp,
        &format!("{}\n{no_wait}", admins(&[ADMIN])),
    ))
    .await;
    let school = School {
        _upstream: upstream,
        smtp,
        gateway,
    };
    let mut browser = school.browser();
    school.admin_sign_in(&mut browser, ADMIN).await;
    assert_eq!(browser.get(COURSE).await.status, 200);
    let csrf = csrf_of(&mut browser, COURSE).await;

    // Restart on the same data with the admin removed from the config.
    let School {
        _upstream: upstream,
        smtp,
        gateway,
    } = school;
    let dir = gateway.stop_and_keep_dir().await;
    let toml = school_toml(
        &upstream,
        &smtp,
        &format!("{}\n{no_wait}", admins(&["boss@example.com"])),
    );
    let gateway = TestGateway::start_in(dir, &toml).await;
    browser.addr = gateway.addr;

    let page = browser.get(COURSE).await;
    assert_eq!(page.status, 302, "{}", page.body);
    assert!(
        page.header("location")
            .is_some_and(|l| l.starts_with("/_pagegate/admin/login"))
    );
    let refused = browser
        .post_form(
            &format!("{COURSE}/add"),
            &[
                ("email", "eve@example.com"),
                ("access", "unlimited"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(refused.status, 303);
    // And no new code for the old admin either.
    let before = smtp.messages().len();
    let form = browser.get("/_pagegate/admin/login").await;
    let csrf = hidden(&form.body, "csrf").expect("csrf");
    let asked = browser
        .post_form(
            "/_pagegate/admin/login",
            &[("email", ADMIN), ("next", ADMIN_PAGE), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(asked.status, 200);
    common::school::assert_nothing_mailed_since(&gateway, &smtp, before).await;

    let school = School {
        _upstream: upstream,
        smtp,
        gateway,
    };
    let audit = school.audit().await;
    assert!(
        !audit
            .iter()
            .any(|e| e.email.as_deref() == Some("eve@example.com"))
    );
}

#[tokio::test]
async fn admin_and_visitor_sessions_and_codes_never_mix() {
    let school = School::open_with(&admins(&[ADMIN, BOSS])).await;
    let session_names = CookieNames::for_site("school");
    let admin_names = CookieNames::for_site("admin:school");

    // The admins are also clients of the course.
    let mut admin = school.browser();
    school.admin_sign_in(&mut admin, ADMIN).await;
    for email in [ADMIN, BOSS] {
        let added = post(
            &mut admin,
            "add",
            &[("email", email), ("access", "unlimited")],
        )
        .await;
        assert_eq!(added.status, 303);
    }
    let ann = post(
        &mut admin,
        "add",
        &[("email", "ann@example.com"), ("access", "unlimited")],
    )
    .await;
    assert_eq!(ann.status, 303);

    // An admin session is not a visitor session, whatever cookie it is put in.
    assert_eq!(admin.get("/course/").await.status, 302);
    let admin_session = admin.cookies[admin_names.session(false)].clone();
    let mut forged = school.browser();
    forged
        .cookies
        .insert(session_names.session(false).into(), admin_session.clone());
    assert_eq!(forged.get("/course/").await.status, 302);

    // A visitor session is not an admin session.
    let mut visitor = school.browser();
    let signed_in = school
        .visitor_sign_in(&mut visitor, "ann@example.com")
        .await;
    assert_eq!(signed_in.status, 303);
    assert_eq!(visitor.get("/course/").await.status, 200);
    assert_eq!(visitor.get(ADMIN_PAGE).await.status, 302);
    let visitor_session = visitor.cookies[session_names.session(false)].clone();
    let mut forged = school.browser();
    forged
        .cookies
        .insert(admin_names.session(false).into(), visitor_session);
    assert_eq!(forged.get(ADMIN_PAGE).await.status, 302);

    // An admin code does not sign in a visitor, and a visitor code does not sign in an admin.
    let mut both = school.browser();
    let form = both.get("/_pagegate/admin/login").await;
    let admin_csrf = hidden(&form.body, "csrf").expect("csrf");
    let before = school.smtp.messages().len();
    both.post_form(
        "/_pagegate/admin/login",
        &[("email", BOSS), ("next", ADMIN_PAGE), ("csrf", &admin_csrf)],
    )
    .await;
    let admin_code = school.smtp.wait_for(before + 1, MAIL_WAIT).await[before]
        .code(6)
        .expect("admin code");
    let visitor_csrf = both.open_login("/course/").await;
    let wrong = both
        .post_form(
            "/_pagegate/verify",
            &[
                ("email", BOSS),
                ("code", &admin_code),
                ("next", "/course/"),
                ("csrf", &visitor_csrf),
            ],
        )
        .await;
    assert_eq!(wrong.status, 400, "an admin code is not a visitor code");

    let before = school.smtp.messages().len();
    both.post_form(
        "/_pagegate/login",
        &[
            ("email", BOSS),
            ("next", "/course/"),
            ("csrf", &visitor_csrf),
        ],
    )
    .await;
    let visitor_code = school.smtp.wait_for(before + 1, MAIL_WAIT).await[before]
        .code(6)
        .expect("visitor code");
    let wrong = both
        .post_form(
            "/_pagegate/admin/verify",
            &[
                ("email", BOSS),
                ("code", &visitor_code),
                ("next", ADMIN_PAGE),
                ("csrf", &admin_csrf),
            ],
        )
        .await;
    assert_eq!(wrong.status, 400, "a visitor code is not an admin code");
    assert!(!both.cookies.contains_key(admin_names.session(false)));
    // The right admin code still works after both wrong tries.
    let right = both
        .post_form(
            "/_pagegate/admin/verify",
            &[
                ("email", BOSS),
                ("code", &admin_code),
                ("next", ADMIN_PAGE),
                ("csrf", &admin_csrf),
            ],
        )
        .await;
    assert_eq!(right.status, 303, "{}", right.body);
    let cookie = right
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(admin_names.session(false)))
        .expect("admin session cookie")
        .to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(attr), "{attr} missing in {cookie}");
    }
    assert!(
        admin_session != both.cookies[admin_names.session(false)],
        "a new session"
    );
}

#[tokio::test]
async fn without_admins_there_is_no_admin_page() {
    let school = School::open_with("").await;
    let mut browser = school.browser();
    assert_eq!(browser.get(ADMIN_PAGE).await.status, 404);
    assert_eq!(browser.get("/_pagegate/admin/login").await.status, 404);
}

/// A list longer than a screen: the table shows 50 clients and a link to the next 50, found
/// by the last email shown (not by counting rows from the top); a change made on a later screen
/// returns to that screen; the overview counts clients and those with access without listing
/// them.
#[tokio::test]
async fn a_long_list_pages_screen_by_screen_with_next_links() {
    let school = School::open().await;
    let mut browser = school.browser();
    school.admin_sign_in(&mut browser, ADMIN).await;
    let lines: String = (0..120)
        .map(|i| {
            let until = if i % 4 == 0 { "2001-01-01" } else { "" };
            format!("p{i:03}@example.com,Pupil {i},{until}\n")
        })
        .collect();
    let csrf = csrf_of(&mut browser, COURSE).await;
    let (content_type, body) = multipart(&[("csrf", None, &csrf), ("csv", None, &lines)]);
    let imported = browser
        .send(
            "POST",
            &format!("{COURSE}/import"),
            Some((content_type.as_str(), body)),
        )
        .await;
    assert_eq!(imported.status, 303, "{}", imported.body);

    let overview = browser.get(ADMIN_PAGE).await;
    assert!(overview.body.contains("120 clients"), "{}", overview.body);
    assert!(
        overview.body.contains("90 with access"),
        "{}",
        overview.body
    );

    let first = browser.get(COURSE).await;
    assert!(first.body.contains("1–50 of 120"), "{}", first.body);
    let row = |email: &str| format!("<td data-label=\"Email\">{email}</td>");
    assert!(first.body.contains(&row("p049@example.com")));
    assert!(!first.body.contains(&row("p050@example.com")));
    let next = "after=p049%40example.com&amp;at=51";
    assert!(first.body.contains(next), "{}", first.body);

    let second = browser
        .get(&format!("{COURSE}?{}", next.replace("&amp;", "&")))
        .await;
    assert!(second.body.contains("51–100 of 120"), "{}", second.body);
    assert!(second.body.contains(&row("p050@example.com")));
    assert!(!second.body.contains(&row("p049@example.com")));
    assert!(second.body.contains("after=p099%40example.com&amp;at=101"));

    // Removing a client on the second screen comes back to it.
    let removed = post(
        &mut browser,
        "remove",
        &[
            ("email", "p060@example.com"),
            ("after", "p049@example.com"),
            ("at", "51"),
        ],
    )
    .await;
    assert_eq!(removed.status, 303);
    assert_eq!(
        removed.header("location"),
        Some("/_pagegate/admin/pages/course?after=p049%40example.com&at=51")
    );

    let last = browser
        .get(&format!("{COURSE}?after=p099%40example.com&at=100"))
        .await;
    assert!(last.body.contains("100–119 of 119"), "{}", last.body);
    assert!(
        !last.body.contains("at=120"),
        "no next link on the last screen"
    );

    // A search pages the same way, its count from the search.
    let found = browser.get(&format!("{COURSE}?q=pupil%201")).await;
    assert!(found.body.contains("1–31 of 31"), "{}", found.body);
}

/// A form as RFC 7578 and RFC 2046 allow it, written the way browsers seldom do: the quoted
/// boundary holds a space, each delimiter line ends in transport padding (spaces and a tab
/// before its CRLF), and the file's name holds escaped quotes and a semicolon. The import reads
/// it like any other, and the form's size limit still refuses a larger one.
#[tokio::test]
async fn an_import_in_any_legal_multipart_spelling_is_read() {
    let school = School::open().await;
    let mut browser = school.browser();
    school.admin_sign_in(&mut browser, ADMIN).await;
    let csrf = csrf_of(&mut browser, COURSE).await;
    let boundary = "pagegate edge 42";
    let body = format!(
        "preamble, ignored\r\n\
         --{boundary}  \t\r\n\
         Content-Disposition: form-data; name=\"csrf\"\r\n\r\n\
         {csrf}\r\n\
         --{boundary} \r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"the \\\"spring; 2027\\\" list.csv\"\r\n\
         Content-Type: text/csv\r\n\r\n\
         email,name\r\neve@example.com,Eve\r\n\
         \r\n--{boundary}--  \r\n"
    );
    let imported = browser
        .send(
            "POST",
            &format!("{COURSE}/import"),
            Some((
                &format!("multipart/form-data; boundary=\"{boundary}\""),
                body,
            )),
        )
        .await;
    assert_eq!(imported.status, 303, "{}", imported.body);
    let table = browser.get(COURSE).await;
    assert!(
        table.body.contains("Import done: 1 added, 0 updated."),
        "{}",
        table.body
    );
    assert!(table.body.contains("eve@example.com"), "{}", table.body);

    // The limit on the whole form still holds: past 2 MiB the form is refused, and nothing of it
    // is imported.
    let csrf = csrf_of(&mut browser, COURSE).await;
    let padding = "x".repeat(2 * 1024 * 1024);
    let (content_type, body) = multipart(&[
        ("csrf", None, &csrf),
        ("file", Some("one.csv"), "fay@example.com,Fay\r\n"),
        ("csv", None, &padding),
    ]);
    let refused = browser
        .send(
            "POST",
            &format!("{COURSE}/import"),
            Some((content_type.as_str(), body)),
        )
        .await;
    assert_eq!(refused.status, 400);
    assert!(
        refused
            .body
            .contains("The form is too large or was cut off."),
        "{}",
        refused.body
    );
    assert!(!browser.get(COURSE).await.body.contains("fay@example.com"));
}
