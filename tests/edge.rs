//! The edge: requests pagegate refuses or answers itself, and how it behaves when the upstream
//! is down or slow. Raw bytes are used where a client library would refuse to send the request.

mod common;

use std::time::Duration;

use common::client::{self, raw, raw_status};
use common::{TestGateway, TestUpstream};

#[tokio::test]
async fn ambiguous_framing_is_refused_before_the_upstream() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;

    let cases: [&[u8]; 6] = [
        b"POST /smuggle HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /smuggle HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        b"POST /smuggle HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /smuggle HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST /smuggle HTTP/1.1\r\nHost: a.example\r\nContent-Length: -5\r\n\r\nhello",
        b"POST /smuggle HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: gzip\r\n\r\nhello",
    ];
    for case in cases {
        let answer = raw(gateway.addr, case).await;
        assert_eq!(
            raw_status(&answer),
            400,
            "{}\n---\n{answer}",
            String::from_utf8_lossy(case)
        );
    }
    assert_eq!(
        upstream.count(),
        0,
        "a refused request reached the upstream"
    );
}

#[tokio::test]
async fn a_smuggled_request_behind_a_clean_one_on_the_same_connection_is_refused() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;
    let answer = raw(
        gateway.addr,
        b"POST /first HTTP/1.1\r\nHost: a.example\r\nContent-Length: 4\r\n\r\nbody\
          POST /second HTTP/1.1\r\nHost: a.example\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\n",
    )
    .await;
    let statuses: Vec<&str> = answer
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|rest| &rest[..3])
        .collect();
    assert_eq!(statuses, ["200", "400"], "{answer}");
    let targets: Vec<String> = upstream.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/first"]);
}

#[tokio::test]
async fn control_characters_in_the_target_are_refused() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;
    let cases: [&[u8]; 4] = [
        b"GET /a\x00b HTTP/1.1\r\nHost: a.example\r\n\r\n",
        b"GET /a\x01b HTTP/1.1\r\nHost: a.example\r\n\r\n",
        b"GET /a\x7fb HTTP/1.1\r\nHost: a.example\r\n\r\n",
        b"GET /a\tb HTTP/1.1\r\nHost: a.example\r\n\r\n",
    ];
    for case in cases {
        let answer = raw(gateway.addr, case).await;
        assert_eq!(
            raw_status(&answer),
            400,
            "{:?}\n---\n{answer}",
            String::from_utf8_lossy(case)
        );
    }
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn absolute_form_target_cannot_pick_another_site() {
    let site_a = TestUpstream::start().await;
    let site_b = TestUpstream::start().await;
    let gateway = TestGateway::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n\
         [[site]]\nhosts = [\"a.example\"]\nupstream = \"http://{}\"\n\n\
         [[site]]\nhosts = [\"b.example\"]\nupstream = \"http://{}\"\n",
        site_a.addr, site_b.addr
    ))
    .await;

    let answer = raw(
        gateway.addr,
        b"GET http://b.example/secret HTTP/1.1\r\nHost: a.example\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 400, "{answer}");
    let answer = raw(
        gateway.addr,
        b"GET http://b.example/page HTTP/1.1\r\nHost: b.example\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert_eq!(site_a.count(), 0);
    assert_eq!(
        site_b.last().target,
        "/page",
        "the upstream gets origin form"
    );

    // HTTP/2: an :authority naming site b with a Host header naming site a is refused too.
    let mut conn = client::http2(gateway.addr).await;
    let req = http::Request::builder()
        .uri("http://b.example/secret")
        .header("host", "a.example")
        .body(http_body_util::Full::default())
        .expect("request");
    let answer = client::read_answer(conn.send_request(req).await.expect("send")).await;
    assert_eq!(answer.status, 400);
    assert_eq!(site_b.count(), 1);
}

#[tokio::test]
async fn host_header_must_be_single_and_present() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;
    for case in [
        &b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    ] {
        let answer = raw(gateway.addr, case).await;
        assert_eq!(raw_status(&answer), 400, "{answer}");
    }
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn h2c_upgrade_is_never_forwarded() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;
    let answer = raw(
        gateway.addr,
        b"GET /page HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert_eq!(
        raw_status(&answer),
        200,
        "served as plain HTTP/1.1: {answer}"
    );
    let seen = upstream.last();
    assert_eq!(seen.header("upgrade"), None);
    assert_eq!(seen.header("http2-settings"), None);
}

#[tokio::test]
async fn unknown_host_gets_a_page_never_another_sites_content() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[site]]\nhosts = [\"known.example\", \"*.known.example\"]\nupstream = \"http://{}\"\n",
        upstream.addr
    ))
    .await;

    let answer = client::get(gateway.addr, "unknown.example", "/").await;
    assert_eq!(answer.status, 404);
    assert!(
        answer.body.contains("no site configured"),
        "{}",
        answer.body
    );
    assert_eq!(
        answer.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let answer = client::get(gateway.addr, "known.example.evil.example", "/").await;
    assert_eq!(answer.status, 404);
    assert_eq!(upstream.count(), 0);

    assert_eq!(
        client::get(gateway.addr, "KNOWN.example:8080", "/")
            .await
            .status,
        200
    );
    assert_eq!(
        client::get(gateway.addr, "www.known.example", "/")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn healthz_answers_without_the_upstream() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;
    upstream.stop();

    let answer = client::get(gateway.addr, "anything.example", "/_pagegate/healthz").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "ok\n");
    let answer = client::get(gateway.addr, "anything.example", "/_pagegate/nothing-here").await;
    assert_eq!(answer.status, 404);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn upstream_down_gives_502_and_the_gateway_keeps_serving() {
    let alive = TestUpstream::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let gateway = TestGateway::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n\
         [[site]]\nhosts = [\"down.example\"]\nupstream = \"http://{dead_addr}\"\n\n\
         [[site]]\nhosts = [\"up.example\"]\nupstream = \"http://{}\"\n",
        alive.addr
    ))
    .await;

    let answer = client::get(gateway.addr, "down.example", "/").await;
    assert_eq!(answer.status, 502);
    assert!(answer.body.contains("cannot be reached"), "{}", answer.body);
    assert!(
        !answer.body.contains(&dead_addr.to_string()),
        "the page leaks the upstream address"
    );
    assert_eq!(
        client::get(gateway.addr, "up.example", "/").await.status,
        200
    );
}

#[tokio::test]
async fn slow_upstream_gives_504_after_the_configured_timeout() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[site]]\nhosts = [\"*\"]\nupstream = \"http://{}\"\nresponse_timeout = \"300ms\"\n",
        upstream.addr
    ))
    .await;

    let slow = tokio::spawn(client::get(gateway.addr, "a.example", "/slow/5000"));
    let fast = client::get(gateway.addr, "a.example", "/fast").await;
    assert_eq!(fast.status, 200, "a slow request does not hold up others");
    let slow = tokio::time::timeout(Duration::from_secs(4), slow)
        .await
        .expect("504 before the upstream finished")
        .expect("task");
    assert_eq!(slow.status, 504);
}

#[tokio::test]
async fn connect_is_refused() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;
    let answer = raw(
        gateway.addr,
        b"CONNECT internal.example:22 HTTP/1.1\r\nHost: internal.example:22\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 400, "{answer}");
    assert_eq!(upstream.count(), 0);
}
