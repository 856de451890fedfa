//! The forward-auth endpoints asked directly, as an edge proxy asks them: who may ask, what an
//! answer says, and the shapes of the advisories other forward-auth services had (oauth2-proxy
//! CVE-2026-40575, Authelia CVE-2021-32637, Traefik's encoded-path bypasses). The edges
//! themselves, with the documented snippets, are in `forward_auth_edges.rs`.
//!
//! The gateway trusts 127.0.0.1 (the edge); questions from 127.0.0.2, another loopback address
//! of this machine, come from an untrusted peer.

mod common;

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use common::browser::Browser;
use common::client::{Answer, read_answer};
use common::school::{School, school_toml};
use common::smtp::TestSmtp;
use common::{TestGateway, TestUpstream};
use http_body_util::Full;
use hyper_util::rt::TokioIo;

const ANN: &str = "ann@example.com";
const EDGE: &str = "127.0.0.1";
const STRANGER: &str = "127.0.0.2";

/// The school with its edge trusted.
async fn school() -> School {
    let upstream = TestUpstream::start().await;
    let smtp = TestSmtp::start();
    let toml = school_toml(&upstream, &smtp, "").replace(
        "[server]\n",
        &format!("[server]\ntrusted_proxies = [\"{EDGE}\"]\n"),
    );
    School {
        gateway: TestGateway::start(&toml).await,
        upstream,
        smtp,
    }
}

/// One question over a fresh connection from `from` (a loopback address) to the gateway.
async fn ask_from(from: &str, gateway: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from.parse::<IpAddr>().expect("ip"), 0))
        .expect("bind the source address");
    let stream = socket.connect(gateway).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .uri(path)
        .header("host", "127.0.0.1:9091");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = send
        .send_request(req.body(Full::<Bytes>::default()).expect("request"))
        .await
        .expect("send");
    read_answer(response).await
}

/// Traefik's question about `GET http://school.test{uri}`, with the browser's cookies.
fn traefik(uri: &str, cookie: &str) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("x-forwarded-method", "GET".to_string()),
        ("x-forwarded-proto", "http".to_string()),
        ("x-forwarded-host", "school.test".to_string()),
        ("x-forwarded-uri", uri.to_string()),
        ("x-forwarded-for", "198.51.100.7".to_string()),
        ("accept", "text/html".to_string()),
    ];
    if !cookie.is_empty() {
        h.push(("cookie", cookie.to_string()));
    }
    h
}

/// The nginx snippet's question about the same.
fn nginx(uri: &str, cookie: &str) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("x-original-method", "GET".to_string()),
        ("x-forwarded-proto", "http".to_string()),
        ("x-forwarded-host", "school.test".to_string()),
        ("x-original-uri", uri.to_string()),
        ("accept", "text/html".to_string()),
    ];
    if !cookie.is_empty() {
        h.push(("cookie", cookie.to_string()));
    }
    h
}

async fn ask(school: &School, path: &str, headers: &[(&'static str, String)]) -> Answer {
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ask_from(EDGE, school.gateway.addr, path, &pairs).await
}

fn cookies(browser: &Browser) -> String {
    browser
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

const FORWARD: &str = "/_pagegate/auth/forward";
const REQUEST: &str = "/_pagegate/auth/request";

#[tokio::test]
async fn a_signed_in_visitor_is_allowed_with_identity_and_others_are_sent_to_sign_in() {
    let school = school().await;
    school.add_client("course", ANN, "Ann Lee", None).await;

    // Not signed in: Traefik and Caddy get the redirect to pass on, nginx a 401 naming it.
    let answer = ask(&school, FORWARD, &traefik("/course/lesson-1?t=30", "")).await;
    assert_eq!(answer.status, 302);
    assert_eq!(
        answer.header("location"),
        Some("http://school.test/_pagegate/login?next=%2Fcourse%2Flesson-1%3Ft%3D30")
    );
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let answer = ask(&school, REQUEST, &nginx("/course/lesson-1?t=30", "")).await;
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.header("x-pagegate-login"),
        Some("http://school.test/_pagegate/login?next=%2Fcourse%2Flesson-1%3Ft%3D30")
    );
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    // A form post or an API call is no navigation: 401, as the full proxy answers it.
    let mut post = traefik("/course/answers", "");
    post[0].1 = "POST".into();
    let answer = ask(&school, FORWARD, &post).await;
    assert_eq!(answer.status, 401);
    assert!(answer.body.contains("sign-in required"), "{}", answer.body);
    // Public paths pass without a session, and without identity.
    for edge in [FORWARD, REQUEST] {
        let headers = if edge == FORWARD {
            traefik("/about", "")
        } else {
            nginx("/about", "")
        };
        let answer = ask(&school, edge, &headers).await;
        assert_eq!(answer.status, 204, "{edge}");
        assert_eq!(answer.header("x-pagegate-email"), None);
        assert_eq!(answer.header("cache-control"), Some("no-store"));
    }

    // Ann signs in on the site (the snippets route the prefix to pagegate on the same host).
    let mut browser = school.browser();
    assert_eq!(school.sign_in(&mut browser, ANN).await.status, 303);
    let cookie = cookies(&browser);
    for (edge, headers) in [
        (FORWARD, traefik("/course/lesson-1", &cookie)),
        (REQUEST, nginx("/course/lesson-1", &cookie)),
    ] {
        let answer = ask(&school, edge, &headers).await;
        assert_eq!(answer.status, 204, "{edge}: {}", answer.body);
        assert_eq!(answer.header("x-pagegate-email"), Some(ANN));
        assert_eq!(answer.header("x-pagegate-name"), Some("Ann Lee"));
        assert_eq!(answer.header("x-pagegate-page"), Some("course"));
        assert_eq!(answer.header("cache-control"), Some("no-store"));
    }
    // Her session does not open a page whose list lacks her.
    let answer = ask(&school, FORWARD, &traefik("/extra/", &cookie)).await;
    assert_eq!(answer.status, 302);

    // Removed from the list: the next question is refused.
    school.remove_client("course", ANN).await;
    let answer = ask(&school, FORWARD, &traefik("/course/lesson-1", &cookie)).await;
    assert_eq!(answer.status, 302);
}

#[tokio::test]
async fn logging_out_takes_effect_on_the_next_question() {
    let school = school().await;
    school.add_client("course", ANN, "Ann", None).await;
    let mut browser = school.browser();
    assert_eq!(school.sign_in(&mut browser, ANN).await.status, 303);
    let cookie = cookies(&browser);
    assert_eq!(
        ask(&school, REQUEST, &nginx("/course/", &cookie))
            .await
            .status,
        204
    );
    let bye = browser.post_form("/_pagegate/logout", &[]).await;
    assert_eq!(bye.status, 200, "{}", bye.body);
    // The old cookie, replayed: its session is gone.
    let answer = ask(&school, REQUEST, &nginx("/course/", &cookie)).await;
    assert_eq!(answer.status, 401);
}

/// oauth2-proxy CVE-2026-40575: `X-Forwarded-Uri` was believed from any client. Here only a
/// peer in `trusted_proxies` may ask at all; anyone else gets 403, whatever the question says.
#[tokio::test]
async fn a_question_from_an_untrusted_address_is_refused() {
    let school = school().await;
    school.add_client("course", ANN, "Ann", None).await;
    let mut browser = school.browser();
    assert_eq!(school.sign_in(&mut browser, ANN).await.status, 303);
    let cookie = cookies(&browser);
    for (edge, headers) in [
        (FORWARD, traefik("/public/", "")),
        (FORWARD, traefik("/course/", &cookie)),
        (REQUEST, nginx("/public/", "")),
        (REQUEST, nginx("/course/", &cookie)),
        (
            FORWARD,
            vec![("x-original-url", "http://school.test/public/".into())],
        ),
        (
            REQUEST,
            vec![("x-original-url", "http://school.test/public/".into())],
        ),
    ] {
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = ask_from(STRANGER, school.gateway.addr, edge, &pairs).await;
        assert_eq!(answer.status, 403, "{edge} {headers:?}");
        assert_eq!(answer.header("x-pagegate-email"), None);
        assert_eq!(answer.header("cache-control"), Some("no-store"));
    }
    // The same questions from the edge are answered.
    assert_eq!(
        ask(&school, FORWARD, &traefik("/public/", "")).await.status,
        204
    );
    // Asked on a site's own host, it is the same endpoint: the Host of a question is not read.
    let answer = common::client::get(school.gateway.addr, "school.test", FORWARD).await;
    assert_eq!(
        answer.status, 400,
        "from the edge's address, but describing nothing"
    );
}

#[tokio::test]
async fn a_question_that_describes_nothing_or_two_things_is_refused_never_allowed() {
    let school = school().await;
    // Missing: never read as `/` (which is public here, so it would be allowed).
    for drop in [
        "x-forwarded-uri",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-method",
    ] {
        let headers: Vec<_> = traefik("/", "")
            .into_iter()
            .filter(|(k, _)| *k != drop)
            .collect();
        let answer = ask(&school, FORWARD, &headers).await;
        assert_eq!(answer.status, 400, "without {drop}");
    }
    let headers: Vec<_> = nginx("/", "")
        .into_iter()
        .filter(|(k, _)| *k != "x-original-uri")
        .collect();
    assert_eq!(ask(&school, REQUEST, &headers).await.status, 400);
    // Two values of one header, as a client adding its own copy makes it.
    let mut two = traefik("/course/", "");
    two.push(("x-forwarded-uri", "/public/".into()));
    assert_eq!(ask(&school, FORWARD, &two).await.status, 400);
    let mut two = nginx("/course/", "");
    two.push(("x-original-url", "http://school.test/public/".into()));
    assert_eq!(ask(&school, REQUEST, &two).await.status, 400);
    // The other edge's headers, or `_` spellings, in a question: a client's forgery that the
    // edge passed along.
    for (edge, mut headers, forged) in [
        (FORWARD, traefik("/course/", ""), "x-original-url"),
        (FORWARD, traefik("/course/", ""), "x_forwarded_uri"),
        (REQUEST, nginx("/course/", ""), "x-forwarded-uri"),
        (REQUEST, nginx("/course/", ""), "x_original_uri"),
    ] {
        headers.push((forged, "/public/".into()));
        let answer = ask(&school, edge, &headers).await;
        assert_eq!(answer.status, 400, "{edge} with {forged}");
    }
    // Only GET and HEAD are questions.
    let answer = common::client::send(
        school.gateway.addr,
        common::client::request("POST", "school.test", FORWARD)
            .body(Full::default())
            .expect("request"),
    )
    .await;
    assert_eq!(answer.status, 405);
    // A host no site answers: refused.
    let mut other = traefik("/course/", "");
    other[2].1 = "other.test".into();
    assert_eq!(ask(&school, FORWARD, &other).await.status, 404);
}

/// The shapes other forward-auth services let through, asked about a protected page by a
/// visitor without a session: each is denied (sent to sign in) or refused (400), never allowed.
#[tokio::test]
async fn the_advisories_shapes_are_never_allowed() {
    let school = school().await;
    let cases: &[(&str, &str)] = &[
        // Authelia CVE-2021-32637: a malformed original from nginx was allowed.
        ("malformed", "/course/%zz"),
        ("malformed", "/course/%"),
        ("malformed", "/course/%c0%af"),
        ("malformed", "/course/%u002e"),
        ("malformed", "course/lesson-1"),
        ("malformed", "*"),
        ("malformed", "/course/lesson-1%00"),
        ("malformed", "/course/lesson-1%0d%0a"),
        // oauth2-proxy GHSA-pxq7-h93f-9jrg: a fragment evaluated as the end of the path.
        ("fragment", "/public/#/../course/lesson-1"),
        ("fragment", "/about#/../../course/lesson-1"),
        // Traefik GHSA-vrch-868g-9jx5, GHSA-gm3x-23wp-hc2c: encoded `/`, `\`, NUL, `;`, `?`, `#`.
        ("encoded", "/course%2flesson-1"),
        ("encoded", "/course%2Flesson-1"),
        ("encoded", "/public%2f..%2fcourse/lesson-1"),
        ("encoded", "/public/..%2fcourse/lesson-1"),
        ("encoded", "/public%5c..%5ccourse/lesson-1"),
        ("encoded", "/course%00/lesson-1"),
        ("encoded", "/course%3b/lesson-1"),
        ("encoded", "/public%3f/../course/lesson-1"),
        ("encoded", "/public%23/../course/lesson-1"),
        ("encoded", "/%63ourse/lesson-1"),
        ("encoded", "/%2563ourse/lesson-1"),
        // Traefik GHSA-6jwx-7vp4-9847, GHSA-xf64-8mw2-4gr2: dot-segments left in the forwarded
        // URI by a stripped prefix.
        ("dots", "/./course/lesson-1"),
        ("dots", "/public/../course/lesson-1"),
        ("dots", "/public/%2e%2e/course/lesson-1"),
        ("dots", "/public/.%2e/course/lesson-1"),
        ("dots", "//course/lesson-1"),
        ("dots", "/COURSE/lesson-1"),
        ("dots", "/course./lesson-1"),
        // Traefik's "opaque form" and absolute forms naming another host.
        ("absolute", "http:%2f%2fschool.test/course/lesson-1"),
        ("absolute", "http://other.test/public/"),
        ("absolute", "http://school.test:81/public/"),
    ];
    for (class, uri) in cases {
        for (edge, headers) in [(FORWARD, traefik(uri, "")), (REQUEST, nginx(uri, ""))] {
            let answer = ask(&school, edge, &headers).await;
            let denied = answer.status == 400
                || (edge == FORWARD && answer.status == 302)
                || (edge == REQUEST && answer.status == 401);
            assert!(
                denied,
                "{class} {uri} via {edge}: {} {:?}",
                answer.status, answer.headers
            );
        }
    }
    // A public page that merely looks like one passes, as in the full proxy.
    for uri in ["/course-info", "/courses/", "/public/course/lesson-1"] {
        assert_eq!(
            ask(&school, FORWARD, &traefik(uri, "")).await.status,
            204,
            "{uri}"
        );
    }
}
