//! A buyer straight in after purchase, in a real headless Chromium (Debian's `chromium` driven
//! over WebDriver by `chromedriver`): a small shop, served by this test on its own port, takes
//! the buyer back from "payment", calls the grant endpoint from its server side with a webhook
//! signature and `"signin": true`, and redirects the browser to the `signin_url` it got. The
//! buyer confirms once and reads the paid page, served through the gateway by the real upstream,
//! without typing a code. The same link opened again, in a fresh browser, signs nobody in.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::api::{ApiClient, Cred, body};
use common::chrome::{Chrome, ChromeDriver};
use common::smtp::TestSmtp;
use common::{TestGateway, TestUpstream};
use fantoccini::Locator;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

/// The shop's `[[api_key]]` secret, scope `grant`.
const SHOP: &str = "shop-secret-0123456789abcdef";

fn toml(port: u16, upstream: &TestUpstream, smtp: &TestSmtp) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [[site]]\nname = \"school\"\ntitle = \"Demo School\"\nhosts = [\"127.0.0.1\"]\n\
         upstream = \"http://{}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\n\
         [[site.page]]\nid = \"course\"\ntitle = \"Video course\"\npaths = [\"/course/\"]\n\n\
         {}\n\
         [[api_key]]\nname = \"shop\"\nsecret = \"{SHOP}\"\nscopes = [\"grant\"]\n",
        upstream.addr,
        smtp.mail_toml("Demo School <school@example.com>")
    )
}

/// A shop's "thank you" page: `GET /paid?order=N` grants the buyer of order N the course,
/// signed like a webhook, and answers `303` to the sign-in link it got back. The links it
/// handed out are kept for the test to compare.
struct Shop {
    addr: SocketAddr,
    links: Arc<Mutex<Vec<String>>>,
}

impl Shop {
    async fn start(gateway: SocketAddr) -> Shop {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind shop");
        let addr = listener.local_addr().expect("shop addr");
        let links = Arc::new(Mutex::new(Vec::new()));
        let kept = links.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let kept = kept.clone();
                        async move { Ok::<_, Infallible>(paid(req, gateway, &kept).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Shop { addr, links }
    }

    fn links(&self) -> Vec<String> {
        self.links.lock().expect("links").clone()
    }
}

async fn paid(
    req: Request<Incoming>,
    gateway: SocketAddr,
    links: &Mutex<Vec<String>>,
) -> Response<Full<Bytes>> {
    let order = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("order="))
        .unwrap_or_default()
        .to_string();
    if req.uri().path() != "/paid" || order.is_empty() {
        return page(StatusCode::NOT_FOUND, "no such page");
    }
    let grant = ApiClient::new(gateway, "127.0.0.1")
        .post(
            "/grants",
            &Cred::Signed(SHOP),
            &json!({"page": "course", "email": "ann@example.com", "name": "Ann Lee",
                    "days": 365, "order_id": order, "signin": true}),
        )
        .await;
    let url = match grant.status.as_u16() {
        200 | 201 => body(&grant)["signin_url"].as_str().map(str::to_string),
        _ => None,
    };
    let Some(url) = url else {
        return page(
            StatusCode::BAD_GATEWAY,
            &format!("the grant failed: {} {}", grant.status, grant.body),
        );
    };
    links.lock().expect("links").push(url.clone());
    let mut answer = page(StatusCode::SEE_OTHER, "");
    answer
        .headers_mut()
        .insert("location", url.parse().expect("a header value"));
    answer
        .headers_mut()
        .insert("cache-control", "no-store".parse().expect("a header value"));
    answer
}

fn page(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut answer = Response::new(Full::from(text.to_string()));
    *answer.status_mut() = status;
    answer
}

async fn wait_for_text(browser: &Chrome, text: &str) -> String {
    for _ in 0..100 {
        let body = browser.text().await;
        if body.contains(text) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{text:?} never appeared on {}: {}",
        browser.path().await,
        browser.text().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_sent_back_by_the_shop_lands_on_the_paid_page_and_the_link_works_once() {
    let upstream = TestUpstream::start().await;
    let smtp = TestSmtp::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let gateway = TestGateway::start(&toml(port, &upstream, &smtp)).await;
    let base = format!("http://127.0.0.1:{port}");
    let shop = Shop::start(gateway.addr).await;
    let driver = ChromeDriver::start().await;

    // Ann pays; the payment provider sends her back to the shop, which sends her on.
    let ann = driver.session(1280, 900).await;
    ann.goto(&format!("http://{}/paid?order=1001", shop.addr))
        .await;
    ann.wait_for_path("/_pagegate/signin").await;
    let confirm = wait_for_text(&ann, "a***@example.com").await;
    assert!(confirm.contains("Video course"), "{confirm}");
    assert!(!confirm.contains("ann@example.com"), "masked: {confirm}");
    let links = shop.links();
    assert_eq!(links.len(), 1);
    let link = links[0].clone();
    assert!(
        link.starts_with(&format!("{base}/_pagegate/signin?t=")),
        "on the site's public_url: {link}"
    );
    let opened = ann.client.current_url().await.expect("url");
    assert_eq!(
        opened.as_str(),
        link,
        "the browser followed the shop's redirect"
    );

    // One press, and she reads the course.
    ann.click("form[action$='/signin'] button[type=submit]")
        .await;
    ann.wait_for_path("/course/").await;
    let course = wait_for_text(&ann, "hello from upstream /course/").await;
    assert!(!course.contains("Sign in"), "{course}");
    let seen = upstream
        .seen()
        .into_iter()
        .rev()
        .find(|s| s.target.starts_with("/course/"))
        .expect("the upstream served the course");
    assert_eq!(
        seen.header("x-pagegate-email").as_deref(),
        Some("ann@example.com")
    );
    assert_eq!(seen.header("x-pagegate-name").as_deref(), Some("Ann Lee"));
    assert!(smtp.messages().is_empty(), "no code was mailed");

    // Someone else opens the same link afterwards: it signs nobody in, and says how to sign in.
    let other = driver.session(1280, 900).await;
    other.goto(&link).await;
    let gone = wait_for_text(&other, "already used").await;
    assert!(gone.contains("Sign in with a code"), "{gone}");
    assert!(
        other
            .client
            .find(Locator::Css("form[action$='/signin']"))
            .await
            .is_err(),
        "no button to press"
    );
    other.goto(&format!("{base}/course/")).await;
    other.wait_for_path("/_pagegate/login").await;
    // The offer on the used link's page leads to the course's email form.
    other.goto(&link).await;
    wait_for_text(&other, "already used").await;
    other.click("#sign-in-with-code").await;
    other
        .wait_for_path("/_pagegate/login?next=%2Fcourse%2F")
        .await;
    wait_for_text(&other, "Sign in to Video course").await;
    other.close().await;

    // Ann herself, back on the link: still refused as a link, still signed in.
    ann.goto(&link).await;
    wait_for_text(&ann, "already used").await;
    ann.goto(&format!("{base}/course/")).await;
    wait_for_text(&ann, "hello from upstream /course/").await;
    ann.close().await;
    driver.stop().await;
    gateway.stop().await;
}
