//! Two gateway processes on one PostgreSQL database, as behind a load balancer: the school's
//! site (page "course" under /course/), one upstream, one SMTP server, an admin key and a shop
//! key, each gateway with its own data folder and port.

use std::path::PathBuf;

use serde_json::json;

use super::TestUpstream;
use super::api::{ApiClient, Cred};
use super::browser::Browser;
use super::postgres as pg_server;
use super::process::GatewayProcess;
use super::smtp::TestSmtp;

pub const ADMIN: &str = "admin-key-of-both-gateways-0123456789";
pub const SHOP: &str = "shop-key-of-both-gateways-0123456789ab";

pub struct Pair {
    pub a: GatewayProcess,
    pub b: GatewayProcess,
    pub upstream: TestUpstream,
    pub smtp: TestSmtp,
    /// The database both use.
    pub url: String,
    pub configs: [PathBuf; 2],
    _dirs: [tempfile::TempDir; 2],
}

impl Pair {
    /// Two gateways on a fresh database, with `auth` lines added to `[auth]`.
    pub async fn start(auth: &str) -> Pair {
        Self::start_on(pg_server::fresh_database(), auth).await
    }

    /// The same on the database at `url`.
    pub async fn start_on(url: String, auth: &str) -> Pair {
        let upstream = TestUpstream::start().await;
        let smtp = TestSmtp::start();
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n\
             [[site]]\nname = \"school\"\ntitle = \"Demo School\"\nhosts = [\"school.test\"]\n\
             upstream = \"http://{up}\"\npublic_url = \"http://school.test\"\n\n\
             [[site.page]]\nid = \"course\"\ntitle = \"Video course\"\npaths = [\"/course/\"]\n\n\
             [[api_key]]\nname = \"admin\"\nsecret = \"{ADMIN}\"\nscopes = [\"admin\"]\n\n\
             [[api_key]]\nname = \"shop\"\nsecret = \"{SHOP}\"\nscopes = [\"grant\"]\n\n\
             {mail}\n[auth]\nsecret = \"{secret}\"\n{auth}\n\n\
             [store]\nbackend = \"postgres\"\nurl = \"{url}\"\n",
            up = upstream.addr,
            mail = smtp.mail_toml("Demo School <school@example.com>"),
            secret = pg_server::SHARED_SECRET,
        );
        let dirs = [
            tempfile::tempdir().expect("temp dir"),
            tempfile::tempdir().expect("temp dir"),
        ];
        let configs = [
            super::write_config(dirs[0].path(), &toml),
            super::write_config(dirs[1].path(), &toml),
        ];
        let a = GatewayProcess::serve(&configs[0]);
        let b = GatewayProcess::serve(&configs[1]);
        Pair {
            a,
            b,
            upstream,
            smtp,
            url,
            configs,
            _dirs: dirs,
        }
    }

    /// A browser of the school, talking to gateway A (set `addr` to move it).
    pub fn browser(&self) -> Browser {
        Browser::new(self.a.addr, "school.test")
    }

    pub fn api_a(&self) -> ApiClient {
        ApiClient::new(self.a.addr, "school.test")
    }

    pub fn api_b(&self) -> ApiClient {
        ApiClient::new(self.b.addr, "school.test")
    }

    /// Lists `email` on the course through `api`.
    pub async fn add(&self, api: &ApiClient, email: &str) {
        let answer = api
            .post(
                "/pages/course/clients",
                &Cred::Bearer(ADMIN),
                &json!({"email": email, "name": "Ann Lee"}),
            )
            .await;
        assert!(answer.status.is_success(), "{}", answer.body);
    }

    /// Removes `email` from the course through `api`.
    pub async fn remove(&self, api: &ApiClient, email: &str) {
        let answer = api
            .delete(
                &format!("/pages/course/clients/{email}"),
                &Cred::Bearer(ADMIN),
            )
            .await;
        assert_eq!(answer.status, 204, "{}", answer.body);
    }

    /// A browser at gateway A in which `email` signed in with a code from A, and saw the page.
    pub async fn signed_in(&self, email: &str) -> Browser {
        let mut browser = self.browser();
        let code = self.request_code(&mut browser, email).await;
        assert_eq!(self.verify(&mut browser, email, &code).await, 303);
        assert_eq!(browser.get("/course/lesson-1").await.status, 200);
        browser
    }

    /// Asks for a code in `browser` at the gateway it talks to; returns the mailed code.
    pub async fn request_code(&self, browser: &mut Browser, email: &str) -> String {
        let before = self.smtp.messages().len();
        self.ask_for_code(browser, email).await;
        let messages = self
            .smtp
            .wait_for(before + 1, super::school::MAIL_WAIT)
            .await;
        messages[before]
            .code(6)
            .expect("a 6-digit code in the mail")
    }

    /// Submits the email form; returns its answer's status.
    pub async fn ask_for_code(&self, browser: &mut Browser, email: &str) -> u16 {
        let csrf = browser.open_login("/course/lesson-1").await;
        browser
            .post_form(
                "/_pagegate/login",
                &[
                    ("email", email),
                    ("next", "/course/lesson-1"),
                    ("csrf", &csrf),
                ],
            )
            .await
            .status
            .as_u16()
    }

    /// Enters `code` in `browser` at the gateway it talks to; returns the answer's status.
    pub async fn verify(&self, browser: &mut Browser, email: &str, code: &str) -> u16 {
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
            .status
            .as_u16()
    }
}

/// One grant of the course to buyer `n` through the gateway at `addr`, with the shop's key: its
/// status, or `None` when no answer came (the gateway died, say).
pub async fn grant(addr: std::net::SocketAddr, n: usize) -> Option<u16> {
    let body = serde_json::to_vec(
        &json!({"page": "course", "email": format!("buyer{n}@example.com"), "days": 30}),
    )
    .expect("json");
    let req = super::api::request(
        "school.test",
        "POST",
        "/grants",
        &Cred::Bearer(SHOP),
        Some("application/json"),
        body,
    );
    super::client::try_send(addr, req)
        .await
        .map(|a| a.status.as_u16())
}
