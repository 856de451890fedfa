//! Forwarding: what a site behind pagegate sees, and what a visitor gets back.

mod common;

use bytes::Bytes;
use common::client::{self, request};
use common::upstream::{VIDEO_LEN, pattern_byte};
use common::{TestGateway, TestUpstream};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn forwards_method_path_query_and_body_and_returns_the_answer() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;

    let req = request("POST", "shop.example", "/cart/add?item=42&qty=2")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::from("a=1"))
        .expect("request");
    let answer = client::send(gateway.addr, req).await;

    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "hello from upstream /cart/add?item=42&qty=2");
    let seen = upstream.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/cart/add?item=42&qty=2");
    assert_eq!(
        seen.header("host").as_deref(),
        Some("shop.example"),
        "the client's Host is kept"
    );
    assert_eq!(
        seen.header("content-type").as_deref(),
        Some("application/x-www-form-urlencoded")
    );
}

#[tokio::test]
async fn spoofed_forwarding_headers_are_replaced_not_appended() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;

    let req = request("GET", "site.example", "/")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "admin.internal")
        .header("forwarded", "for=6.6.6.6;proto=https")
        .header("x-real-ip", "6.6.6.6")
        .body(Full::default())
        .expect("request");
    client::send(gateway.addr, req).await;

    let seen = upstream.last();
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("site.example")
    );
    assert_eq!(
        seen.header("forwarded").as_deref(),
        Some("for=127.0.0.1;host=site.example;proto=http")
    );
    assert_eq!(seen.header("x-real-ip").as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn a_trusted_front_proxy_extends_the_chain() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.0/8\"]\n\n\
         [[site]]\nhosts = [\"*\"]\nupstream = \"http://{}\"\n",
        upstream.addr
    ))
    .await;

    let req = request("GET", "site.example", "/")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .body(Full::default())
        .expect("request");
    client::send(gateway.addr, req).await;

    let seen = upstream.last();
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;

    let req = request("GET", "site.example", "/hop")
        .header("connection", "keep-alive, x-client-private")
        .header("x-client-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "gzip")
        .header("x-client-public", "visible")
        .body(Full::default())
        .expect("request");
    let answer = client::send(gateway.addr, req).await;

    let seen = upstream.last();
    for name in [
        "x-client-private",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
    ] {
        assert_eq!(seen.header(name), None, "{name} reached the upstream");
    }
    assert_ne!(
        seen.header("connection").as_deref(),
        Some("keep-alive, x-client-private")
    );
    assert_eq!(seen.header("x-client-public").as_deref(), Some("visible"));

    for name in ["x-upstream-private", "keep-alive", "proxy-connection"] {
        assert_eq!(answer.header(name), None, "{name} reached the client");
    }
    assert_eq!(answer.header("x-upstream-public"), Some("visible"));
}

#[tokio::test]
async fn range_requests_pass_unchanged_for_video_seeking() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;

    let req = request("GET", "site.example", "/video")
        .header("range", "bytes=1000-1999")
        .body(Full::default())
        .expect("request");
    let mut conn = client::http1(gateway.addr).await;
    let response = conn.send_request(req).await.expect("send");
    assert_eq!(response.status(), 206);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes 1000-1999/{VIDEO_LEN}")
    );
    assert_eq!(response.headers()["accept-ranges"], "bytes");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let expected: Vec<u8> = (1000..2000).map(pattern_byte).collect();
    assert_eq!(body.as_ref(), expected.as_slice());
    assert_eq!(
        upstream.last().header("range").as_deref(),
        Some("bytes=1000-1999")
    );
}

#[tokio::test]
async fn large_download_and_chunked_upload_stream_through() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;
    let size: u64 = 64 * 1024 * 1024;

    // Download: read it frame by frame, checking every byte, never holding it whole.
    let mut conn = client::http1(gateway.addr).await;
    let req = request("GET", "site.example", &format!("/big/{size}"))
        .body(Full::default())
        .expect("request");
    let response = conn.send_request(req).await.expect("send");
    assert_eq!(response.headers()["content-length"], size.to_string());
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("frame");
        if let Some(data) = frame.data_ref() {
            assert!(
                data.iter()
                    .enumerate()
                    .all(|(i, b)| *b == pattern_byte(received + i as u64))
            );
            received += data.len() as u64;
        }
    }
    assert_eq!(received, size);

    // Upload with no Content-Length: chunked on the wire, streamed to the upstream.
    let chunks = futures_util::stream::iter((0..size / 65536).map(|i| {
        let chunk: Vec<u8> = (i * 65536..(i + 1) * 65536).map(pattern_byte).collect();
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(chunk)))
    }));
    let stream = tokio::net::TcpStream::connect(gateway.addr)
        .await
        .expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let req = request("PUT", "site.example", "/upload")
        .body(StreamBody::new(chunks))
        .expect("request");
    let answer = client::read_answer(send.send_request(req).await.expect("send")).await;
    assert_eq!(answer.body, format!("{size} true"));
    assert_eq!(
        upstream.last().header("transfer-encoding").as_deref(),
        Some("chunked")
    );
}

#[tokio::test]
async fn content_length_uploads_keep_their_length() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;
    let body: Vec<u8> = (0..100_000).map(pattern_byte).collect();
    let req = request("POST", "site.example", "/upload")
        .body(Full::from(body))
        .expect("request");
    let answer = client::send(gateway.addr, req).await;
    assert_eq!(answer.body, "100000 true");
    let seen = upstream.last();
    assert_eq!(seen.header("content-length").as_deref(), Some("100000"));
    assert_eq!(seen.header("transfer-encoding"), None);
}

#[tokio::test]
async fn websocket_is_tunnelled_both_ways() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;

    let stream = tokio::net::TcpStream::connect(gateway.addr)
        .await
        .expect("connect");
    let url = format!("ws://{}/ws", gateway.addr);
    let (mut ws, response) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("websocket handshake");
    assert_eq!(response.status(), 101);
    for text in ["hello", "second message", &"x".repeat(100_000)] {
        ws.send(Message::text(text)).await.expect("send");
        let echoed = ws.next().await.expect("an echo").expect("a message");
        assert_eq!(echoed.into_text().expect("text").as_str(), text);
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .expect("send binary");
    let echoed = ws.next().await.expect("an echo").expect("a message");
    assert_eq!(echoed.into_data().as_ref(), &[0u8, 1, 2, 255]);
    ws.close(None).await.expect("close");

    let seen = upstream.last();
    assert_eq!(seen.header("upgrade").as_deref(), Some("websocket"));
    assert_eq!(seen.header("connection").as_deref(), Some("upgrade"));
}

#[tokio::test]
async fn http2_client_to_http1_upstream() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;

    let mut conn = client::http2(gateway.addr).await;
    let req = http::Request::builder()
        .uri(format!(
            "http://site.example:{}/h2/path?x=1",
            gateway.addr.port()
        ))
        .body(Full::default())
        .expect("request");
    let response = conn.send_request(req).await.expect("send");
    assert_eq!(response.version(), http::Version::HTTP_2);
    let answer = client::read_answer(response).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "hello from upstream /h2/path?x=1");
    let seen = upstream.last();
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(
        seen.header("host"),
        Some(format!("site.example:{}", gateway.addr.port()))
    );
}

#[tokio::test]
async fn http2_to_an_h2c_upstream() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[site]]\nhosts = [\"*\"]\nupstream = \"http://{}\"\nupstream_http2 = true\n",
        upstream.addr
    ))
    .await;

    let mut conn = client::http2(gateway.addr).await;
    let mut answers = Vec::new();
    for i in 0..5 {
        let req = http::Request::builder()
            .uri(format!("http://site.example/stream/{i}"))
            .body(Full::default())
            .expect("request");
        answers.push(conn.send_request(req));
    }
    for (i, pending) in answers.into_iter().enumerate() {
        let answer = client::read_answer(pending.await.expect("send")).await;
        assert_eq!(answer.body, format!("hello from upstream /stream/{i}"));
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|s| s.version == http::Version::HTTP_2));
    assert!(
        seen.iter()
            .all(|s| s.header("host").as_deref() == Some("site.example"))
    );
}

#[tokio::test]
async fn keep_alive_connections_carry_many_requests() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;
    let mut conn = client::http1(gateway.addr).await;
    for i in 0..20 {
        let req = request("GET", "site.example", &format!("/n/{i}"))
            .body(Full::default())
            .expect("request");
        let answer = client::read_answer(conn.send_request(req).await.expect("send")).await;
        assert_eq!(answer.body, format!("hello from upstream /n/{i}"));
    }
    assert_eq!(upstream.count(), 20);
}

#[tokio::test]
async fn each_worker_keeps_its_own_upstream_connections() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of_with(&upstream, "workers = 2").await;
    // Two visitors connected at once are served by the two workers: whichever worker accepts
    // the second connection, the one already serving the first passes it to the other.
    let mut visitors = [
        client::http1(gateway.addr).await,
        client::http1(gateway.addr).await,
    ];
    // They take turns; each worker opens one upstream connection and reuses it, never borrowing
    // the other's (a shared pool would have carried every request on one).
    for i in 0..10 {
        let req = request("GET", "site.example", &format!("/n/{i}"))
            .body(Full::default())
            .expect("request");
        let answer = visitors[i % 2].send_request(req).await.expect("send");
        assert_eq!(client::read_answer(answer).await.status, 200);
    }
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn upstream_connections_are_reused_and_replaced_once_closed() {
    let upstream = TestUpstream::start().await;
    // One connection worker, so every visitor's connection draws on the same idle stack.
    let gateway = TestGateway::in_front_of_with(&upstream, "workers = 1").await;
    let get = |path: &str| {
        let req = request("GET", "site.example", path)
            .body(Full::default())
            .expect("request");
        client::send(gateway.addr, req)
    };

    // One visitor after another: one upstream connection carries them all.
    for i in 0..10 {
        assert_eq!(get(&format!("/n/{i}")).await.status, 200);
    }
    assert_eq!(upstream.connections(), 1, "the connection was not reused");

    // The upstream closes it after an answer; the next request gets a new one and succeeds.
    let closing = get("/close/now").await;
    assert_eq!(closing.status, 200);
    assert_eq!(closing.body, "closing");
    for i in 0..5 {
        let answer = get(&format!("/after/{i}")).await;
        assert_eq!(answer.status, 200, "request {i} after the close");
    }
    assert_eq!(upstream.connections(), 2);

    // Requests at once each need a connection of their own, then they are all pooled.
    let together: Vec<_> = (0..6).map(|i| get(&format!("/slow/{}", 200 + i))).collect();
    for answer in futures_util::future::join_all(together).await {
        assert_eq!(answer.body, "slow done");
    }
    let after_burst = upstream.connections();
    assert!(after_burst <= 2 + 6, "{after_burst} connections");
    for i in 0..10 {
        assert_eq!(get(&format!("/again/{i}")).await.status, 200);
    }
    assert_eq!(
        upstream.connections(),
        after_burst,
        "pooled connections were not reused"
    );
    // Every request reached the upstream in origin form, never as an absolute URL.
    assert!(upstream.seen().iter().all(|s| s.target.starts_with('/')));
}

#[tokio::test]
async fn client_sent_identity_headers_never_reach_the_upstream() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;
    let req = request("GET", "site.example", "/account")
        .header("x-pagegate-email", "ceo@example.com")
        .header("X-Pagegate-Name", "Mallory")
        .header("x_pagegate_page", "course")
        .header("connection", "x-forwarded-for")
        .header("x-original-url", "/course/secret")
        .header("x-rewrite-url", "/course/secret")
        .body(Full::default())
        .expect("request");
    client::send(gateway.addr, req).await;
    let seen = upstream.last();
    let leaked: Vec<&str> = seen
        .headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.replace('_', "-").starts_with("x-pagegate-"))
        .collect();
    assert!(
        leaked.is_empty(),
        "identity headers reached the upstream: {leaked:?}"
    );
    assert_eq!(
        seen.header("x-original-url"),
        None,
        "path overrides are removed"
    );
    assert_eq!(seen.header("x-rewrite-url"), None);
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("127.0.0.1"),
        "Connection cannot drop pagegate's headers"
    );
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_connections = 1\n\n[[site]]\nhosts = [\"*\"]\nupstream = \"http://{}\"\n",
        upstream.addr
    ))
    .await;
    let mut first = client::http1(gateway.addr).await;
    let req = request("GET", "a.example", "/first")
        .body(Full::default())
        .expect("request");
    assert_eq!(
        client::read_answer(first.send_request(req).await.expect("send"))
            .await
            .status,
        200
    );

    // A second client connects (the kernel completes it in the listen backlog) and sends its
    // request; then the first asks again, round after round. Had the second been let in, its
    // request, sent before all of them, would have reached the upstream among them.
    let mut second = tokio::net::TcpStream::connect(gateway.addr)
        .await
        .expect("connect");
    second
        .write_all(b"GET /second HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .expect("write");
    let mut expected = vec!["/first".to_string()];
    for round in 0..20 {
        let target = format!("/first-again/{round}");
        let req = request("GET", "a.example", &target)
            .body(Full::default())
            .expect("request");
        assert_eq!(
            client::read_answer(first.send_request(req).await.expect("send"))
                .await
                .status,
            200
        );
        expected.push(target);
    }
    let targets: Vec<String> = upstream.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(
        targets, expected,
        "a second connection was served while the first held the only slot"
    );
    drop(first);
    let (status, body) = client::read_one(&mut second).await.expect("an answer");
    assert_eq!(
        (status, body.as_str()),
        (200, "hello from upstream /second")
    );
}
