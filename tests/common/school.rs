//! A school site for sign-in stories: one gateway with two protected pages ("course" under
//! /course/, "extra" under /extra/) in front of a real upstream, mailing through a real SMTP
//! server, with the steps a visitor takes.

use std::time::Duration;

use super::browser::Browser;
use super::smtp::TestSmtp;
use super::{TestGateway, TestUpstream};
use pagegate::api::clients::ClientInput;

/// How long a story waits for a mail to arrive.
pub const MAIL_WAIT: Duration = Duration::from_secs(10);

/// A site with one protected page, "course" under /course/, mailing through a test SMTP server.
pub struct School {
    pub upstream: TestUpstream,
    pub smtp: TestSmtp,
    pub gateway: TestGateway,
}

pub fn school_toml(upstream: &TestUpstream, smtp: &TestSmtp, auth: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n\
         [[site]]\nname = \"school\"\ntitle = \"Demo School\"\nhosts = [\"school.test\"]\n\
         upstream = \"http://{}\"\npublic_url = \"http://school.test\"\n\n\
         [[site.page]]\nid = \"course\"\ntitle = \"Video course\"\npaths = [\"/course/\"]\n\n\
         [[site.page]]\nid = \"extra\"\ntitle = \"Bonus lessons\"\npaths = [\"/extra/\"]\n\n\
         {}\n[auth]\n{auth}\n",
        upstream.addr,
        smtp.mail_toml("Demo School <school@example.com>")
    )
}

impl School {
    pub async fn open(auth: &str) -> School {
        let upstream = TestUpstream::start().await;
        let smtp = TestSmtp::start();
        let gateway = TestGateway::start(&school_toml(&upstream, &smtp, auth)).await;
        School {
            upstream,
            smtp,
            gateway,
        }
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.gateway.dir.path().join("data")
    }

    pub fn browser(&self) -> Browser {
        Browser::new(self.gateway.addr, "school.test")
    }

    /// Adds a client through the running gateway's control socket, as `pagegate clients add` does.
    pub async fn add_client(&self, page: &str, email: &str, name: &str, days: Option<u32>) {
        add_client_at(&self.data_dir(), page, email, name, days).await;
    }

    pub async fn remove_client(&self, page: &str, email: &str) {
        let path = format!("/v1/clients?page={page}&email={email}");
        let (status, _) =
            pagegate::server::control::call(&self.data_dir(), http::Method::DELETE, &path, None)
                .await
                .expect("control socket");
        assert_eq!(status, 204);
    }

    /// Asks for a code for `email` and returns the mail it produced.
    pub async fn request_code(&self, browser: &mut Browser, email: &str) -> super::smtp::Received {
        let before = self.smtp.messages().len();
        self.ask_for_code(browser, email).await;
        let messages = self.smtp.wait_for(before + 1, MAIL_WAIT).await;
        messages[before].clone()
    }

    /// See [`assert_nothing_mailed_since`].
    pub async fn assert_nothing_mailed_since(&self, before: usize) {
        assert_nothing_mailed_since(&self.gateway, &self.smtp, before).await;
    }

    /// Submits the email form for `email`, without waiting for the mail.
    pub async fn ask_for_code(&self, browser: &mut Browser, email: &str) {
        let csrf = browser.open_login("/course/lesson-1").await;
        let answer = browser
            .post_form(
                "/_pagegate/login",
                &[
                    ("email", email),
                    ("next", "/course/lesson-1"),
                    ("csrf", &csrf),
                ],
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }

    /// Signs `email` in with the mailed code; returns the verify answer.
    pub async fn sign_in(&self, browser: &mut Browser, email: &str) -> super::client::Answer {
        let mail = self.request_code(browser, email).await;
        let code = mail.code(6).expect("a 6-digit code in the mail");
        self.verify(browser, email, &code).await
    }

    pub async fn verify(
        &self,
        browser: &mut Browser,
        email: &str,
        code: &str,
    ) -> super::client::Answer {
        let csrf = browser.open_login("/course/lesson-1").await;
        browser
            .post_form(
                "/_pagegate/verify",
                &[
                    ("email", email),
                    ("code", code),
                    ("next", "/course/lesson-1"),
                    ("csrf", &csrf),
                ],
            )
            .await
    }
}

/// The path and query of the sign-in link in `mail` (`/_pagegate/link?t=…`), as a browser of
/// the school opens it.
pub fn link_in(mail: &super::smtp::Received) -> String {
    let text = mail.text().expect("text part");
    text.split_whitespace()
        .find(|w| w.starts_with("http://school.test/_pagegate/link?t="))
        .expect("a link in the mail")
        .trim_start_matches("http://school.test")
        .to_string()
}

/// Adds a client through a running gateway's control socket in `data_dir`, as `pagegate clients
/// add` does.
pub async fn add_client_at(
    data_dir: &std::path::Path,
    page: &str,
    email: &str,
    name: &str,
    days: Option<u32>,
) {
    let input = ClientInput {
        page: page.into(),
        email: email.into(),
        name: Some(name.into()),
        until: None,
        days,
    };
    let body = serde_json::to_vec(&input).expect("json");
    let (status, answer) =
        pagegate::server::control::call(data_dir, http::Method::POST, "/v1/clients", Some(body))
            .await
            .expect("control socket");
    assert!(
        status.is_success(),
        "{status}: {}",
        String::from_utf8_lossy(&answer)
    );
}

/// Shows that no mail went out since `smtp` held `before` messages, without waiting a fixed
/// time for nothing: witnesses listed on the school's `course` page ask for a code one after
/// the other, each mail certainly going out, and theirs must be the first new messages. A mail
/// the earlier requests caused starts before the first witness even asks; two witnesses in turn
/// give it a whole delivery's time more to arrive and be caught.
pub async fn assert_nothing_mailed_since(gateway: &TestGateway, smtp: &TestSmtp, before: usize) {
    const WITNESSES: [&str; 2] = ["witness-1@example.com", "witness-2@example.com"];
    let data_dir = gateway.dir.path().join("data");
    for (n, witness) in WITNESSES.into_iter().enumerate() {
        add_client_at(&data_dir, "course", witness, "Witness", None).await;
        let mut browser = Browser::new(gateway.addr, "school.test");
        let csrf = browser.open_login("/course/").await;
        let answer = browser
            .post_form(
                "/_pagegate/login",
                &[("email", witness), ("next", "/course/"), ("csrf", &csrf)],
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let messages = smtp.wait_for(before + n + 1, MAIL_WAIT).await;
        let new: Vec<&[String]> = messages[before..].iter().map(|m| m.to.as_slice()).collect();
        let expected: Vec<[String; 1]> = WITNESSES[..=n].iter().map(|w| [w.to_string()]).collect();
        assert_eq!(
            new,
            expected.iter().map(|w| w.as_slice()).collect::<Vec<_>>(),
            "a mail went out besides the witnesses'"
        );
    }
}
