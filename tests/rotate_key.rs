//! Session-key rotation with the real binary and a real SMTP server: `pagegate rotate-key` makes
//! a new key current at once, sessions and codes made under the old one keep working for
//! `auth.key_grace`, and after that the old key is gone. Configured secrets rotate through
//! `auth.previous_secrets` and a reload.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::process::{GatewayProcess, run};
use common::smtp::{Received, TestSmtp};
use common::{TestUpstream, write_config};
use pagegate::api::clients::ClientInput;

const MAIL_WAIT: Duration = Duration::from_secs(10);

/// A school site with one protected page, mailing through `smtp`, with `auth` lines in `[auth]`.
fn school_toml(upstream: &TestUpstream, smtp: &TestSmtp, auth: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n\
         [[site]]\nname = \"school\"\nhosts = [\"school.test\"]\n\
         upstream = \"http://{}\"\npublic_url = \"http://school.test\"\n\n\
         [[site.page]]\nid = \"course\"\npaths = [\"/course/\"]\n\n\
         {}\n[auth]\nresend_after = \"1s\"\n{auth}\n",
        upstream.addr,
        smtp.mail_toml("School <school@example.com>")
    )
}

/// The running gateway and what it talks to.
struct School {
    _upstream: TestUpstream,
    smtp: TestSmtp,
    config: PathBuf,
    gateway: GatewayProcess,
    _dir: tempfile::TempDir,
}

impl School {
    async fn open(auth: &str) -> School {
        let upstream = TestUpstream::start().await;
        let smtp = TestSmtp::start();
        let dir = tempfile::tempdir().expect("temp dir");
        let config = write_config(dir.path(), &school_toml(&upstream, &smtp, auth));
        let gateway = GatewayProcess::serve(&config);
        let school = School {
            _upstream: upstream,
            smtp,
            config,
            gateway,
            _dir: dir,
        };
        for email in ["ann@example.com", "bob@example.com", "cy@example.com"] {
            school.add_client(email).await;
        }
        school
    }

    fn data_dir(&self) -> PathBuf {
        self.config.parent().expect("dir").join("data")
    }

    async fn add_client(&self, email: &str) {
        let input = ClientInput {
            page: "course".into(),
            email: email.into(),
            name: None,
            until: None,
            days: None,
        };
        let (status, _) = pagegate::server::control::call(
            &self.data_dir(),
            http::Method::POST,
            "/v1/clients",
            Some(serde_json::to_vec(&input).expect("json")),
        )
        .await
        .expect("control socket");
        assert!(status.is_success(), "{status}");
    }

    fn browser(&self) -> Browser {
        Browser::new(self.gateway.addr, "school.test")
    }

    /// Asks for a code for `email`; returns the mail.
    async fn request_code(&self, browser: &mut Browser, email: &str) -> Received {
        let before = self.smtp.messages().len();
        let csrf = browser.open_login("/course/").await;
        let answer = browser
            .post_form(
                "/_pagegate/login",
                &[("email", email), ("next", "/course/"), ("csrf", &csrf)],
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        self.smtp.wait_for(before + 1, MAIL_WAIT).await[before].clone()
    }

    /// Enters `code` for `email`; returns the status (303 when signed in).
    async fn verify(&self, browser: &mut Browser, email: &str, code: &str) -> u16 {
        let csrf = browser.open_login("/course/").await;
        browser
            .post_form(
                "/_pagegate/verify",
                &[
                    ("email", email),
                    ("code", code),
                    ("next", "/course/"),
                    ("csrf", &csrf),
                ],
            )
            .await
            .status
            .as_u16()
    }

    /// A browser signed in as `email` with a mailed code.
    async fn signed_in(&self, email: &str) -> Browser {
        let mut browser = self.browser();
        let code = self
            .request_code(&mut browser, email)
            .await
            .code(6)
            .expect("a code in the mail");
        assert_eq!(self.verify(&mut browser, email, &code).await, 303);
        assert_eq!(sees_course(&mut browser).await, 200);
        browser
    }
}

/// The status of the protected page for this browser: 200, or 302 to sign in.
async fn sees_course(browser: &mut Browser) -> u16 {
    browser.get("/course/lesson").await.status.as_u16()
}

/// `pagegate rotate-key --config FILE`: (success, stdout, stderr).
async fn rotate_key(config: &Path) -> (bool, String, String) {
    let config = config.display().to_string();
    let (status, stdout, stderr) =
        tokio::task::spawn_blocking(move || run(&["rotate-key", "--config", &config]))
            .await
            .expect("join");
    (status.success(), stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_keeps_sessions_and_codes_for_the_grace_period_then_is_gone() {
    let grace = Duration::from_secs(4);
    let school = School::open("key_grace = \"4s\"").await;
    let mut ann = school.signed_in("ann@example.com").await;
    // Bob asks for a code before the rotation and types it in after.
    let mut bob = school.browser();
    let bobs_code = school
        .request_code(&mut bob, "bob@example.com")
        .await
        .code(6)
        .expect("code");

    let (ok, stdout, stderr) = rotate_key(&school.config).await;
    let rotated_at = Instant::now();
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("rotated the session key") && stdout.contains("accepted until"),
        "{stdout}"
    );

    // Within the grace: the old session and the old code still work.
    assert_eq!(sees_course(&mut ann).await, 200, "ann's session survives");
    assert_eq!(
        school.verify(&mut bob, "bob@example.com", &bobs_code).await,
        303,
        "a code mailed before the rotation is accepted"
    );
    assert_eq!(sees_course(&mut bob).await, 200);
    assert!(
        rotated_at.elapsed() < grace,
        "the checks above took longer than the grace period; the test proves nothing"
    );

    // After the grace, only what was made with the new key counts: Ann's session stops working
    // once the grace has passed (looked at until then, and for a long while after at most).
    loop {
        let status = sees_course(&mut ann).await;
        if status == 302 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            rotated_at.elapsed() < grace + Duration::from_secs(30),
            "the old key is still accepted long after its grace period"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The retirement is recorded in whole seconds, so the grace may end up to a second early.
    assert!(
        rotated_at.elapsed() >= grace - Duration::from_secs(1),
        "the old key was refused before its grace period ended"
    );
    assert_eq!(
        sees_course(&mut bob).await,
        200,
        "bob signed in after the rotation"
    );
    let mut cy = school.signed_in("cy@example.com").await;
    assert_eq!(sees_course(&mut cy).await, 200, "a new sign-in works");

    let log = school.gateway.log();
    assert!(log.contains("session key rotated"), "{log}");
    assert_eq!(school.gateway.log_count(" ERROR "), 0, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_gateway_rotates_its_key_directly_and_keeps_sessions_after_the_restart() {
    let mut school = School::open("key_grace = \"1h\"").await;
    let mut ann = school.signed_in("ann@example.com").await;
    school.gateway.signal("TERM");
    school.gateway.wait_exit(Duration::from_secs(10));

    let (ok, stdout, stderr) = rotate_key(&school.config).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("rotated the session key"), "{stdout}");
    let secret_file = school.data_dir().join("secret.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_file)
            .expect("secret.key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let text = std::fs::read_to_string(&secret_file).expect("read");
    let state: serde_json::Value = serde_json::from_str(&text).expect("JSON after a rotation");
    assert_eq!(state["previous"].as_array().map(Vec::len), Some(1));

    school.gateway = GatewayProcess::serve(&school.config);
    ann.addr = school.gateway.addr;
    assert_eq!(sees_course(&mut ann).await, 200, "the session survives");
    let mut bob = school.signed_in("bob@example.com").await;
    assert_eq!(sees_course(&mut bob).await, 200);
    let log = school.gateway.log();
    for secret in [&state["current"], &state["previous"][0]["secret"]] {
        let secret = secret.as_str().expect("hex");
        assert!(!log.contains(secret), "secrets never reach the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_secret_rotates_through_previous_secrets_and_a_reload() {
    let first = "first-secret-0123456789abcdef0123456789";
    let second = "second-secret-0123456789abcdef012345678";
    let school = School::open(&format!("secret = \"{first}\"")).await;
    let mut ann = school.signed_in("ann@example.com").await;

    // pagegate cannot rewrite the configuration: it says what to do instead.
    let (ok, _, stderr) = rotate_key(&school.config).await;
    assert!(!ok);
    assert!(stderr.contains("auth.previous_secrets"), "{stderr}");
    assert_eq!(sees_course(&mut ann).await, 200, "nothing changed");

    let rewrite = |auth: &str| {
        let text = std::fs::read_to_string(&school.config).expect("read");
        let head = text.split("\n[auth]\n").next().expect("head").to_owned();
        std::fs::write(
            &school.config,
            format!("{head}\n[auth]\nresend_after = \"1s\"\n{auth}\n"),
        )
        .expect("write");
    };
    let reload = || {
        let (status, _, stderr) =
            run(&["reload", "--config", &school.config.display().to_string()]);
        assert!(status.success(), "{stderr}");
    };

    rewrite(&format!(
        "secret = \"{second}\"\nprevious_secrets = [\"{first}\"]"
    ));
    tokio::task::block_in_place(reload);
    assert_eq!(
        sees_course(&mut ann).await,
        200,
        "the previous secret is accepted"
    );
    let mut bob = school.signed_in("bob@example.com").await;

    // Once the old secret is no longer listed, its sessions end; new ones stay.
    rewrite(&format!("secret = \"{second}\""));
    tokio::task::block_in_place(reload);
    assert_eq!(sees_course(&mut ann).await, 302);
    assert_eq!(sees_course(&mut bob).await, 200);
    assert!(
        !school.gateway.log().contains(first),
        "secrets never reach the log"
    );
}
