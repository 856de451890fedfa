//! Forward-auth through real edges configured with the shipped snippets
//! (`config/forward-auth/`): nginx `auth_request`, Caddy `forward_auth`, Traefik `forwardAuth`
//! (file provider and Docker labels), each in front of a real site, with pagegate started from
//! `config/forward-auth/gateway.toml` and mailing through a real SMTP server.
//!
//! Each edge runs the same story: a visitor is sent to sign in, signs in by code on the site's
//! own host, sees the page with her identity (and never a forged one), and loses it on sign-out
//! and on removal from the list; forged originals sent through the edge, and straight to
//! pagegate from an untrusted address, are refused.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::browser::Browser;
use common::client::Answer;
use common::edges::{Edge, HOST, Kind, snippet};
use common::school::School;
use common::smtp::TestSmtp;
use common::{TestGateway, TestUpstream};
use http_body_util::Full;
use hyper_util::rt::TokioIo;

const ANN: &str = "ann@example.com";

/// pagegate as `config/forward-auth/gateway.toml` has it, with the test's site, data directory,
/// port and SMTP server.
pub async fn gateway(site: SocketAddr, smtp: &TestSmtp) -> TestGateway {
    let toml = snippet("gateway.toml")
        .replace("listen = \"127.0.0.1:9091\"", "listen = \"127.0.0.1:0\"")
        .replace("127.0.0.1:8000", &site.to_string())
        .replace("data_dir = \"/var/lib/pagegate\"", "data_dir = \"data\"");
    // Ann signs in twice in one story, well within a minute.
    TestGateway::start(&format!(
        "{toml}\n{}\n[auth]\nresend_after = \"1ms\"\n",
        smtp.mail_toml("Example School <school@example.com>")
    ))
    .await
}

struct Setup {
    school: School,
    edge: Edge,
}

async fn setup(kind: Kind) -> Setup {
    let upstream = TestUpstream::start().await;
    let smtp = TestSmtp::start();
    let gateway = gateway(upstream.addr, &smtp).await;
    let edge = Edge::start(kind, upstream.addr, gateway.addr).await;
    Setup {
        school: School {
            upstream,
            smtp,
            gateway,
        },
        edge,
    }
}

impl Setup {
    /// A browser talking to the edge.
    fn browser(&self) -> Browser {
        Browser::new(self.edge.addr, HOST)
    }

    /// The upstream's requests for `path`.
    fn site_saw(&self, path: &str) -> Vec<common::upstream::Seen> {
        self.school
            .upstream
            .seen()
            .into_iter()
            .filter(|s| s.target == path)
            .collect()
    }
}

/// Who the site was told the visitor is: every header whose name mentions pagegate, in any
/// spelling, with all its values.
fn identity_seen(seen: &common::upstream::Seen) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = seen
        .headers
        .iter()
        .filter(|(k, _)| k.as_str().replace('_', "-").contains("pagegate"))
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.to_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Headers a visitor forges to pose as someone signed in.
const FORGED_IDENTITY: [(&str, &str); 6] = [
    ("X-Pagegate-Email", "eve@example.com"),
    ("x-pagegate-name", "Eve"),
    ("X-PAGEGATE-PAGE", "course,extra"),
    ("X_Pagegate_Email", "eve@example.com"),
    ("x_pagegate_name", "Eve"),
    ("X-Pagegate_Page", "extra"),
];

/// Headers a visitor forges to make the edge's question about another request.
const FORGED_ORIGINAL: [(&str, &str); 7] = [
    ("X-Forwarded-Uri", "/about"),
    ("X-Original-URL", "http://school.example/about"),
    ("X-Original-URI", "/about"),
    ("X-Forwarded-Method", "OPTIONS"),
    ("X-Forwarded-Host", "other.example"),
    ("X_Forwarded_Uri", "/about"),
    ("X-Original-Method", "OPTIONS"),
];

async fn story(kind: Kind) {
    let s = setup(kind).await;
    let log = || s.edge.log();
    s.school.add_client("course", ANN, "Ann Lee", None).await;
    let mut ann = s.browser();

    // Not signed in: sent to the email form on the site's own host.
    let first = ann.get("/course/lesson-1?t=30").await;
    assert_eq!(first.status, 302, "{kind:?}: {}\n{}", first.body, log());
    assert_eq!(
        first.header("location"),
        Some("http://school.example/_pagegate/login?next=%2Fcourse%2Flesson-1%3Ft%3D30"),
        "{kind:?}"
    );
    assert!(s.site_saw("/course/lesson-1?t=30").is_empty());

    // A public page passes, with nobody's identity even when the visitor forges one.
    let mut eve = s.browser();
    eve.extra = FORGED_IDENTITY
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let about = eve.get("/about").await;
    assert_eq!(about.status, 200, "{kind:?}: {}", about.body);
    assert_eq!(about.body, "hello from upstream /about");
    let seen = s.site_saw("/about");
    assert_eq!(identity_seen(&seen[0]), [], "{kind:?}");
    // Forged identity does not open a protected page either.
    assert_eq!(eve.get("/course/lesson-1").await.status, 302, "{kind:?}");

    // Ann signs in by code through the edge.
    let signed_in = s.school.sign_in(&mut ann, ANN).await;
    assert_eq!(signed_in.status, 303, "{kind:?}: {}", signed_in.body);
    assert_eq!(signed_in.header("location"), Some("/course/lesson-1"));
    assert!(ann.has_session());

    // She sees the page; the site learns who she is from pagegate alone.
    ann.extra = FORGED_IDENTITY
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let page = ann.get("/course/lesson-1").await;
    assert_eq!(page.status, 200, "{kind:?}: {}\n{}", page.body, log());
    assert_eq!(page.body, "hello from upstream /course/lesson-1");
    let seen = s.site_saw("/course/lesson-1");
    assert_eq!(
        identity_seen(&seen[0]),
        [
            ("x-pagegate-email".to_string(), ANN.to_string()),
            ("x-pagegate-name".to_string(), "Ann Lee".to_string()),
            ("x-pagegate-page".to_string(), "course".to_string()),
        ],
        "{kind:?}"
    );
    ann.extra.clear();

    // Forged originals sent through the edge change nothing: a visitor without a session is
    // still sent to sign in, and the question cannot be asked from outside.
    let mut forger = s.browser();
    forger.extra = FORGED_ORIGINAL
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let forged = forger.get("/course/lesson-2").await;
    assert_ne!(forged.status.as_u16() / 100, 2, "{kind:?}: {}", forged.body);
    for (name, value) in FORGED_ORIGINAL {
        let mut one = s.browser();
        one.extra = vec![(name.to_string(), value.to_string())];
        let answer = one.get("/course/lesson-2").await;
        assert_ne!(answer.status.as_u16() / 100, 2, "{kind:?} {name}");
    }
    assert!(s.site_saw("/course/lesson-2").is_empty(), "{kind:?}");
    for endpoint in ["/_pagegate/auth/request", "/_pagegate/auth/forward"] {
        let answer = forger.get(endpoint).await;
        assert_ne!(answer.status.as_u16() / 100, 2, "{kind:?} {endpoint}");
        assert_eq!(answer.header("x-pagegate-email"), None);
        // Even with Ann's cookie: nothing of hers comes back.
        let mut ann_forging = Browser::new(s.edge.addr, HOST);
        ann_forging.cookies = ann.cookies.clone();
        ann_forging.extra = forger.extra.clone();
        let answer = ann_forging.get(endpoint).await;
        assert_ne!(answer.status.as_u16() / 100, 2, "{kind:?} {endpoint}");
        assert_eq!(answer.header("x-pagegate-email"), None);
    }

    // Signing out takes effect on the next request.
    let bye = ann.post_form("/_pagegate/logout", &[]).await;
    assert_eq!(bye.status, 200, "{kind:?}: {}", bye.body);
    assert_eq!(ann.get("/course/lesson-1").await.status, 302, "{kind:?}");

    // Signed in again, then removed from the list: the next request is refused.
    assert_eq!(s.school.sign_in(&mut ann, ANN).await.status, 303);
    assert_eq!(ann.get("/course/lesson-3").await.status, 200, "{kind:?}");
    s.school.remove_client("course", ANN).await;
    assert_eq!(ann.get("/course/lesson-3").await.status, 302, "{kind:?}");
    assert_eq!(s.site_saw("/course/lesson-3").len(), 1);

    // Straight to pagegate from an address it does not trust, the same questions are refused.
    for (endpoint, original) in [
        ("/_pagegate/auth/forward", ("x-forwarded-uri", "/about")),
        ("/_pagegate/auth/request", ("x-original-uri", "/about")),
        (
            "/_pagegate/auth/request",
            ("x-original-url", "http://school.example/about"),
        ),
    ] {
        let answer = ask_from_stranger(
            s.school.gateway.addr,
            endpoint,
            &[
                original,
                ("x-forwarded-method", "GET"),
                ("x-original-method", "GET"),
                ("x-forwarded-host", HOST),
                ("x-forwarded-proto", "http"),
            ],
        )
        .await;
        assert_eq!(answer.status, 403, "{endpoint}");
    }
}

/// A request to the gateway from 127.0.0.2, a loopback address the gateway does not trust.
async fn ask_from_stranger(gateway: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.2:0".parse().expect("addr"))
        .expect("bind 127.0.0.2");
    let stream = socket.connect(gateway).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = http::Request::builder().uri(path).header("host", HOST);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = send
        .send_request(req.body(Full::<Bytes>::default()).expect("request"))
        .await
        .expect("send");
    common::client::read_answer(response).await
}

#[tokio::test]
async fn nginx_auth_request_story() {
    story(Kind::Nginx).await;
}

/// Paths through pagegate's own prefix, which the snippets route to pagegate: each must end at
/// pagegate (which serves nothing of the site) or be asked about as the page it resolves to.
const THROUGH_PREFIX: &[&str] = &[
    "/_pagegate/../course/lesson1.html",
    "/_pagegate/%2e%2e/course/lesson1.html",
    "/_pagegate/..%2fcourse/lesson1.html",
    "/_pagegate%2f..%2fcourse/lesson1.html",
    "/_pagegate/auth/request/../../../course/lesson1.html",
    "/_pagegate/auth/forward/../../../course/lesson1.html",
    "/_pagegate/healthz/../../course/",
    "/_pagegate//../course/lesson1.html",
    "/_PAGEGATE/../course/lesson1.html",
];

/// The path-bypass corpus of `path_bypass.rs`, every payload with every method, through the
/// edge in front of Debian's nginx serving the course: nothing protected leaks. The site's own
/// log is the evidence: it never served a protected file, whatever the method (a HEAD or a
/// POST shows no body, so the answers alone could not tell).
async fn bypass_corpus(kind: Kind) {
    use common::bypass::{METHODS, SECRET, TARGETS, corpus, show};
    use futures_util::StreamExt;

    let site = common::nginx::Nginx::start(&common::bypass::docroot()).await;
    let smtp = TestSmtp::start();
    let toml = snippet("gateway.toml")
        .replace("listen = \"127.0.0.1:9091\"", "listen = \"127.0.0.1:0\"")
        .replace("127.0.0.1:8000", &site.addr.to_string())
        .replace("data_dir = \"/var/lib/pagegate\"", "data_dir = \"data\"")
        .replace(
            "paths = [\"/course/\"]",
            "paths = [\"/course/\", \"/downloads/course/\"]",
        );
    let gateway =
        TestGateway::start(&format!("{toml}\n{}\n", smtp.mail_toml("s@example.com"))).await;
    let edge = Edge::start(kind, site.addr, gateway.addr).await;

    // The protected targets, asked plainly, are sent to sign in.
    for target in TARGETS {
        let answer = common::client::get(edge.addr, HOST, target).await;
        assert_eq!(answer.status, 302, "{kind:?} {target}\n{}", edge.log());
    }
    assert!(site.served().is_empty(), "{:?}", site.served());

    let mut payloads: Vec<Vec<u8>> = corpus().into_iter().map(|p| p.target).collect();
    payloads.extend(THROUGH_PREFIX.iter().map(|p| p.as_bytes().to_vec()));
    let edge_addr = edge.addr;
    let leaks: Vec<String> = futures_util::stream::iter(payloads)
        .map(|target| async move {
            let mut leaks = Vec::new();
            for method in METHODS {
                let mut r = format!("{method} ").into_bytes();
                r.extend_from_slice(&target);
                r.extend_from_slice(
                    format!(" HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n").as_bytes(),
                );
                if *method == "POST" {
                    r.extend_from_slice(b"Content-Length: 0\r\n");
                }
                r.extend_from_slice(b"\r\n");
                let answer = common::client::raw(edge_addr, &r).await;
                if answer.contains(SECRET) {
                    leaks.push(format!("{method} {}", show(&target)));
                }
            }
            leaks
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(leaks.is_empty(), "{kind:?} leaked:\n{}", leaks.join("\n"));
    let served: Vec<(u16, String)> = site
        .served()
        .into_iter()
        .filter(|(status, file)| {
            *status < 400 && (file.starts_with("/course") || file.starts_with("/downloads/course"))
        })
        .collect();
    assert!(
        served.is_empty(),
        "{kind:?}: the site served protected files: {served:?}"
    );
    // The corpus did reach the site for public paths: the edge was really in the way.
    assert!(
        site.served().iter().any(|(s, _)| *s == 200),
        "nothing reached the site through the {kind:?} edge"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_bypass_corpus() {
    bypass_corpus(Kind::Nginx).await;
}

#[tokio::test]
async fn caddy_forward_auth_story() {
    story(Kind::Caddy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_bypass_corpus() {
    bypass_corpus(Kind::Caddy).await;
}

#[tokio::test]
async fn traefik_forward_auth_story() {
    story(Kind::Traefik).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_forward_auth_bypass_corpus() {
    bypass_corpus(Kind::Traefik).await;
}

#[tokio::test]
async fn traefik_docker_labels_story() {
    story(Kind::TraefikLabels).await;
}
