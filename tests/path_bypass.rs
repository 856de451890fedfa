//! Path-bypass corpus against a real upstream: Debian's nginx serves a course directory and some
//! public files; pagegate protects `/course/` and `/downloads/course/` in front of it.
//!
//! The corpus is generated: each delimiter and `%`, `\`, `.`, NUL, `?`, `#` is inserted raw,
//! percent-encoded (lower and upper case hex), double-encoded and half-encoded at every segment
//! boundary and inside segments of each protected target, separators and dots are replaced by
//! their encodings, letters are encoded, case is changed, and a list of well-known tricks is
//! added. Every payload is sent as raw bytes (a client library would normalise it) with GET, HEAD,
//! POST, OPTIONS and an unknown method. The test proves two things:
//!
//! - sent straight to nginx, a good number of payloads do reach the secret, so the corpus holds
//!   real bypass candidates for this upstream, and
//! - through pagegate, none does: every such payload gets pagegate's own answer (the sign-in
//!   redirect for GET and HEAD, 401 for other methods, or 400 for a path it refuses), and no
//!   answer to any payload carries the secret.
//!
//! Run with `--nocapture` to see the table by payload class (docs/security.md quotes it), and
//! with `PATH_BYPASS_DUMP=1` as well to list every payload with its answers.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use common::TestGateway;
use common::bypass::{METHODS, PUBLIC, SECRET, TARGETS, corpus, docroot, show};
use common::client::{raw, raw_status};
use common::nginx::Nginx;
use futures_util::StreamExt;

const HOST: &str = "a.example";
/// Requests in flight at once.
const PARALLEL: usize = 16;

struct Outcome {
    class: String,
    target: Vec<u8>,
    direct_secret: bool,
    /// What pagegate answered, by method.
    through: Vec<(&'static str, Answer)>,
}

#[derive(Debug, Clone, Copy)]
struct Answer {
    status: u16,
    /// The answer carries the protected marker.
    secret: bool,
    /// A redirect to pagegate's sign-in page.
    login: bool,
    /// Answered by nginx (forwarded), not by pagegate itself.
    upstream: bool,
    /// pagegate's 400 names the request path (its path rules), not the HTTP parser.
    path_rule: bool,
}

impl Answer {
    /// pagegate answered itself: sign-in required, or the path refused.
    fn gated(self) -> bool {
        !self.upstream && (matches!(self.status, 400 | 401) || (self.status == 302 && self.login))
    }

    /// pagegate's own answers as `400:path` (its path rules), `400` (the HTTP parser), `401`,
    /// `login`; forwarded ones as `up:STATUS`.
    fn label(self) -> String {
        if self.upstream {
            format!("up:{}", self.status)
        } else if self.status == 302 && self.login {
            "login".to_string()
        } else if self.status == 400 && self.path_rule {
            "400:path".to_string()
        } else {
            self.status.to_string()
        }
    }
}

fn request(method: &str, target: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} ").into_bytes();
    r.extend_from_slice(target);
    r.extend_from_slice(format!(" HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n").as_bytes());
    if method == "POST" {
        r.extend_from_slice(b"Content-Length: 0\r\n");
    }
    r.extend_from_slice(b"\r\n");
    r
}

async fn send(addr: SocketAddr, method: &str, target: &[u8]) -> Answer {
    let answer = raw(addr, &request(method, target)).await;
    let head = answer.split("\r\n\r\n").next().unwrap_or_default();
    Answer {
        status: raw_status(&answer),
        secret: answer.contains(SECRET),
        login: head.lines().any(|l| {
            l.to_ascii_lowercase()
                .starts_with("location: /_pagegate/login")
        }),
        upstream: head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("server: nginx")),
        path_rule: answer.contains("The request path"),
    }
}

async fn setup() -> (Nginx, TestGateway) {
    let nginx = Nginx::start(&docroot()).await;
    let gateway = TestGateway::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n\
         [[site]]\nhosts = [\"*\"]\nupstream = \"http://{}\"\npublic_url = \"http://a.example\"\n\n\
         [[site.page]]\nid = \"course\"\npaths = [\"/course/\", \"/downloads/course/\"]\n",
        nginx.addr
    ))
    .await;
    (nginx, gateway)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_bypass_corpus_never_reaches_protected_content() {
    let started = Instant::now();
    let (nginx, gateway) = setup().await;
    // The protected content is really there, straight from nginx.
    for target in TARGETS {
        let a = send(nginx.addr, "GET", target.as_bytes()).await;
        assert!(
            a.status == 200 && a.secret,
            "nginx does not serve {target}: {a:?}\n{}",
            nginx.error_log()
        );
    }

    let payloads = corpus();
    let (nginx_addr, gateway_addr) = (nginx.addr, gateway.addr);
    let outcomes: Vec<Outcome> = futures_util::stream::iter(payloads)
        .map(|payload| async move {
            let direct_secret = send(nginx_addr, "GET", &payload.target).await.secret;
            let mut through = Vec::new();
            for method in METHODS {
                through.push((*method, send(gateway_addr, method, &payload.target).await));
            }
            // The path rules do not depend on the method; a HEAD answer has no body to say so.
            if through.iter().any(|(_, a)| a.path_rule) {
                for (_, a) in &mut through {
                    a.path_rule = true;
                }
            }
            Outcome {
                class: payload.class,
                target: payload.target,
                direct_secret,
                through,
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;

    // The table: payload class → how many reached the secret straight on nginx → what pagegate
    // answered.
    let mut by_class: BTreeMap<&str, (usize, usize, BTreeMap<String, usize>)> = BTreeMap::new();
    for o in &outcomes {
        let row = by_class.entry(&o.class).or_default();
        row.0 += 1;
        row.1 += usize::from(o.direct_secret);
        for (_, a) in &o.through {
            *row.2.entry(a.label()).or_default() += 1;
        }
    }
    println!(
        "\n{:<24} {:>8} {:>14}  through pagegate (status × requests, all methods)",
        "payload class", "payloads", "nginx: secret"
    );
    for (class, (count, secret, statuses)) in &by_class {
        let statuses: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
        println!(
            "{class:<24} {count:>8} {secret:>14}  {}",
            statuses.join(" ")
        );
    }
    let total = outcomes.len();
    let direct: Vec<&Outcome> = outcomes.iter().filter(|o| o.direct_secret).collect();
    let requests = outcomes.len() * (1 + METHODS.len());
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for o in &outcomes {
        for (_, a) in &o.through {
            *statuses.entry(a.label()).or_default() += 1;
        }
    }
    println!(
        "\n{total} payloads, {requests} requests; {} reach the secret straight on nginx, 0 through \
         pagegate; pagegate statuses: {statuses:?}; {:.1} s",
        direct.len(),
        started.elapsed().as_secs_f64()
    );
    println!("\npayloads that reach the secret straight on nginx:");
    for o in &direct {
        let through: Vec<String> = o.through.iter().map(|(_, a)| a.label()).collect();
        println!("  {:<50} pagegate {}", show(&o.target), through.join(","));
    }

    if std::env::var_os("PATH_BYPASS_DUMP").is_some() {
        for o in &outcomes {
            let through: Vec<String> = o.through.iter().map(|(_, a)| a.label()).collect();
            println!(
                "payload {:<28} {:<50} nginx-secret={} {}",
                o.class,
                show(&o.target),
                o.direct_secret,
                through.join(",")
            );
        }
    }
    // Nothing through pagegate ever carries the secret, whatever the method.
    let leaks: Vec<String> = outcomes
        .iter()
        .flat_map(|o| {
            o.through
                .iter()
                .filter(|(_, a)| a.secret)
                .map(|(m, a)| format!("{m} {} → {}", show(&o.target), a.status))
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "secret reached through pagegate:\n{}",
        leaks.join("\n")
    );
    // A payload that reaches the secret on nginx is never forwarded by pagegate, for any method
    // (HEAD, POST, OPTIONS and FOO carry no body, so the status is the evidence).
    let forwarded: Vec<String> = direct
        .iter()
        .flat_map(|o| {
            o.through
                .iter()
                .filter(|(_, a)| !a.gated())
                .map(|(m, a)| format!("{m} {} → {}", show(&o.target), a.status))
        })
        .collect();
    assert!(
        forwarded.is_empty(),
        "pagegate forwarded payloads that nginx resolves to the secret:\n{}",
        forwarded.join("\n")
    );
    // Every request got an answer.
    assert!(
        !statuses.contains_key("0"),
        "some requests got no answer: {statuses:?}"
    );
    // The corpus holds real bypass candidates for this upstream.
    assert!(
        direct.len() > 100,
        "only {} payloads reach the secret straight on nginx; the corpus is too weak",
        direct.len()
    );
    assert!(
        started.elapsed().as_secs() < 60,
        "the corpus took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn public_pages_and_lookalikes_still_pass() {
    let (_nginx, gateway) = setup().await;
    let cases: &[(&str, u16, bool)] = &[
        ("/", 200, true),
        ("/index.html", 200, true),
        ("/public/page.html", 200, true),
        ("/public/page.html?next=/course/lesson1.html", 200, true),
        ("/public/my%20page.html", 200, true),
        ("/public//page.html", 200, true),
        ("/public/./page.html", 200, true),
        ("/x/../public/page.html", 200, true),
        ("/course-info.html", 200, true),
        ("/Course-Info.html", 404, false),
        ("/downloads/course-list.txt", 200, true),
        ("/courseware/", 404, false),
        ("/courses/lesson1.html", 404, false),
        ("/public/course/lesson1.html", 404, false),
        ("/downloads/", 403, false),
    ];
    for (target, status, public) in cases {
        for method in ["GET", "HEAD"] {
            let answer = raw(gateway.addr, &request(method, target.as_bytes())).await;
            assert_eq!(raw_status(&answer), *status, "{method} {target}\n{answer}");
            if method == "GET" {
                assert_eq!(answer.contains(PUBLIC), *public, "{target}\n{answer}");
            }
            assert!(!answer.contains(SECRET), "{target}");
        }
    }
    // And the protected ones are protected, for every method: the sign-in page for GET and
    // HEAD, 401 for the others.
    for target in [
        "/course",
        "/course/",
        "/course/lesson1.html",
        "/downloads/course/notes.txt",
    ] {
        for method in METHODS {
            let a = send(gateway.addr, method, target.as_bytes()).await;
            let expected = if matches!(*method, "GET" | "HEAD") {
                "login"
            } else {
                "401"
            };
            assert_eq!(a.label(), expected, "{method} {target}: {a:?}");
            assert!(!a.secret);
        }
    }
}

#[tokio::test]
async fn nginx_harness_reports_what_it_serves() {
    let nginx = Nginx::start(&[("a/b.txt", "hello")]).await;
    let answer = raw(nginx.addr, &request("GET", b"/a/b.txt")).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert!(answer.ends_with("hello"), "{answer}");
    // Killed on drop: the port stops accepting.
    let addr = nginx.addr;
    drop(nginx);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
