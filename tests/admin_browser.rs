//! The admin page and the visitor's sign-in in a real headless Chromium (Debian's `chromium`
//! driven over WebDriver by `chromedriver`): an admin signs in with a mailed code and adds a
//! client; the client, in a fresh browser, signs in with her mailed code and sees the page.
//!
//! Screenshots of the forms at a phone's and a desktop's width are taken on the way, into a
//! temporary folder, or into `$PAGEGATE_SCREENSHOTS` when set (that is how `docs/screenshots/`
//! was made: `PAGEGATE_SCREENSHOTS=/tmp/shots cargo test --test admin_browser`).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::chrome::{Chrome, ChromeDriver};
use common::smtp::TestSmtp;
use common::{TestGateway, TestUpstream};
use fantoccini::Locator;
use pagegate::api::clients::ClientInput;

const MAIL_WAIT: Duration = Duration::from_secs(15);
const ADMIN: &str = "admin@example.com";
const PHONE: u32 = 390;
const DESKTOP: u32 = 1280;

fn toml(port: u16, upstream: &TestUpstream, smtp: &TestSmtp) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [[site]]\nname = \"school\"\ntitle = \"Demo School\"\nhosts = [\"127.0.0.1\"]\n\
         upstream = \"http://{}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\n\
         [[site.page]]\nid = \"course\"\ntitle = \"Video course\"\npaths = [\"/course/\"]\n\n\
         [[site.page]]\nid = \"extra\"\ntitle = \"Bonus lessons\"\npaths = [\"/extra/\"]\n\n\
         {}\n[admin]\nemails = [\"{ADMIN}\"]\n",
        upstream.addr,
        smtp.mail_toml("Demo School <school@example.com>")
    )
}

/// Where screenshots go: `$PAGEGATE_SCREENSHOTS`, else a temporary folder.
fn screenshot_dir() -> (PathBuf, Option<tempfile::TempDir>) {
    match std::env::var_os("PAGEGATE_SCREENSHOTS") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir).expect("screenshot folder");
            (dir, None)
        }
        None => {
            let tmp = tempfile::tempdir().expect("temp dir");
            (tmp.path().to_path_buf(), Some(tmp))
        }
    }
}

/// The code in the newest mail to `email`, once there are `count` messages.
async fn code_for(smtp: &TestSmtp, count: usize, email: &str) -> String {
    let messages = smtp.wait_for(count, MAIL_WAIT).await;
    let mail = messages
        .iter()
        .rev()
        .find(|m| m.to.iter().any(|t| t == email))
        .unwrap_or_else(|| panic!("no mail to {email}"));
    mail.code(6).expect("a 6-digit code in the mail")
}

async fn wait_for(browser: &Chrome, css: &str) {
    for _ in 0..100 {
        if browser.client.find(Locator::Css(css)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{css} never appeared on {}: {}",
        browser.path().await,
        browser.text().await
    );
}

async fn wait_for_text(browser: &Chrome, text: &str) -> String {
    for _ in 0..100 {
        let body = browser.text().await;
        if body.contains(text) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{text:?} never appeared: {}", browser.text().await);
}

/// Adds a client through the running gateway's control socket (`pagegate clients add`).
async fn add_by_cli(data_dir: &std::path::Path, email: &str, name: &str, days: Option<u32>) {
    let input = ClientInput {
        page: "course".into(),
        email: email.into(),
        name: Some(name.into()),
        until: None,
        days,
    };
    let (status, body) = pagegate::server::control::call(
        data_dir,
        http::Method::POST,
        "/v1/clients",
        Some(serde_json::to_vec(&input).expect("json")),
    )
    .await
    .expect("control socket");
    assert!(status.is_success(), "{}", String::from_utf8_lossy(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_adds_a_client_who_then_signs_in_in_a_real_browser() {
    let upstream = TestUpstream::start().await;
    let smtp = TestSmtp::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let gateway = TestGateway::start(&toml(port, &upstream, &smtp)).await;
    assert_eq!(gateway.addr.port(), port);
    let base = format!("http://127.0.0.1:{port}");
    let data_dir = gateway.dir.path().join("data");
    add_by_cli(&data_dir, "bob@example.com", "Bob Stone", Some(90)).await;
    add_by_cli(&data_dir, "chen@example.com", "Chen Yu", None).await;
    let (shots, _keep) = screenshot_dir();
    let driver = ChromeDriver::start().await;

    // The admin signs in.
    let admin = driver.session(DESKTOP, 900).await;
    admin.goto(&format!("{base}/_pagegate/admin/")).await;
    admin.wait_for_path("/_pagegate/admin/login").await;
    admin.fill("#email", ADMIN).await;
    admin.click("button[type=submit]").await;
    wait_for(&admin, "#code").await;
    let code = code_for(&smtp, 1, ADMIN).await;
    admin.fill("#code", &code).await;
    admin
        .click("form[action$='/admin/verify'] button[type=submit]")
        .await;
    admin.wait_for_path("/_pagegate/admin/").await;
    let overview = wait_for_text(&admin, "Video course").await;
    assert!(
        overview.contains("Signed in as admin@example.com"),
        "{overview}"
    );

    // …opens the course's client list and adds Ann for 30 days.
    admin.click("a[href='/_pagegate/admin/pages/course']").await;
    admin.wait_for_path("/_pagegate/admin/pages/course").await;
    wait_for_text(&admin, "bob@example.com").await;
    admin.fill("#add-email", "ann@example.com").await;
    admin.fill("#add-name", "Ann Lee").await;
    admin.click("#add input[name=access][value=days]").await;
    admin.fill("#add input[name=days]", "30").await;
    for width in [PHONE, DESKTOP] {
        admin
            .client
            .set_window_size(width, 900)
            .await
            .expect("resize");
        admin
            .screenshot_of("#add", &shots, &format!("admin-add-client-{width}.png"))
            .await;
    }
    admin.click("#add button[type=submit]").await;
    let table = wait_for_text(&admin, "ann@example.com was added.").await;
    assert!(table.contains("Ann Lee"), "{table}");
    assert!(table.contains("3 clients"), "{table}");
    for width in [PHONE, DESKTOP] {
        admin
            .screenshot(&shots, &format!("admin-clients-{width}.png"), width, 3200)
            .await;
    }
    admin.close().await;

    // Ann, in a fresh browser, opens the course and lands on the sign-in form.
    let ann = driver.session(DESKTOP, 900).await;
    ann.goto(&format!("{base}/course/")).await;
    ann.wait_for_path("/_pagegate/login").await;
    wait_for_text(&ann, "Sign in to Video course").await;
    for width in [PHONE, DESKTOP] {
        ann.screenshot(
            &shots,
            &format!("visitor-email-form-{width}.png"),
            width,
            900,
        )
        .await;
    }
    ann.client
        .set_window_size(DESKTOP, 900)
        .await
        .expect("resize");
    let before = smtp.messages().len();
    ann.fill("#email", "ann@example.com").await;
    ann.click("button[type=submit]").await;
    wait_for(&ann, "#code").await;
    for width in [PHONE, DESKTOP] {
        ann.screenshot(
            &shots,
            &format!("visitor-code-form-{width}.png"),
            width,
            900,
        )
        .await;
    }
    ann.client
        .set_window_size(DESKTOP, 900)
        .await
        .expect("resize");
    let code = code_for(&smtp, before + 1, "ann@example.com").await;
    ann.fill("#code", &code).await;
    ann.click("form[action$='/verify'] button[type=submit]")
        .await;
    ann.wait_for_path("/course/").await;
    let page = wait_for_text(&ann, "hello from upstream").await;
    assert!(page.contains("hello from upstream /course/"), "{page}");
    // The browser also asks for /favicon.ico; the page's own request carries the identity.
    let seen = upstream
        .seen()
        .into_iter()
        .rev()
        .find(|s| s.target.starts_with("/course/"))
        .expect("the upstream saw /course/");
    assert_eq!(
        seen.header("x-pagegate-email").as_deref(),
        Some("ann@example.com")
    );
    assert_eq!(seen.header("x-pagegate-name").as_deref(), Some("Ann Lee"));
    ann.close().await;
    driver.stop().await;

    for name in [
        "admin-add-client",
        "admin-clients",
        "visitor-email-form",
        "visitor-code-form",
    ] {
        for width in [PHONE, DESKTOP] {
            let file = shots.join(format!("{name}-{width}.png"));
            let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            assert!(size > 1000, "{} is missing or empty", file.display());
        }
    }
    gateway.stop().await;
}
