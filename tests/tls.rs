//! TLS: each site's certificate chosen by SNI, HTTP/2 by ALPN, and verified https upstreams.

mod common;

use std::sync::Arc;

use common::certs::TestCa;
use common::client::{self, read_answer};
use common::{TestGateway, TestUpstream};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Two sites, `a.test` and `b.test`, each with its own certificate and upstream.
async fn two_tls_sites(ca: &TestCa) -> (TestGateway, TestUpstream, TestUpstream) {
    let site_a = TestUpstream::start().await;
    let site_b = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    ca.write_leaf(dir.path(), "a", &["a.test"]);
    ca.write_leaf(dir.path(), "b", &["b.test", "*.b.test"]);
    let gateway = TestGateway::start_in(
        dir,
        &format!(
            "[server]\ntls_listen = \"127.0.0.1:0\"\n\n\
             [[site]]\nhosts = [\"a.test\"]\nupstream = \"http://{}\"\ntls = {{ cert = \"a.pem\", key = \"a.key\" }}\n\n\
             [[site]]\nhosts = [\"b.test\", \"*.b.test\"]\nupstream = \"http://{}\"\ntls = {{ cert = \"b.pem\", key = \"b.key\" }}\n",
            site_a.addr, site_b.addr
        ),
    )
    .await;
    (gateway, site_a, site_b)
}

async fn https_get(
    gateway: &TestGateway,
    ca: &TestCa,
    sni: &str,
    host: &str,
    path: &str,
) -> client::Answer {
    let req = client::request("GET", host, path)
        .body(Full::<bytes::Bytes>::default())
        .expect("request");
    https_send(gateway, ca, sni, req).await
}

async fn https_send(
    gateway: &TestGateway,
    ca: &TestCa,
    sni: &str,
    req: http::Request<Full<bytes::Bytes>>,
) -> client::Answer {
    let tls_addr = gateway.tls_addr.expect("tls listener");
    let stream = client::tls_connect(tls_addr, sni, ca.client_config(&[b"http/1.1"]))
        .await
        .expect("TLS handshake");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1");
    tokio::spawn(conn);
    read_answer(send.send_request(req).await.expect("send")).await
}

/// A health check on a new connection made with `config`, whose session store carries what the
/// server gave one connection to the next; whether the handshake resumed a session.
async fn healthz_resumed(gateway: &TestGateway, config: Arc<rustls::ClientConfig>) -> bool {
    let tls_addr = gateway.tls_addr.expect("tls listener");
    let stream = client::tls_connect(tls_addr, "a.test", config)
        .await
        .expect("TLS handshake");
    let resumed = stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1");
    tokio::spawn(conn);
    let req = client::request("GET", "a.test", "/_pagegate/healthz")
        .body(Full::<bytes::Bytes>::default())
        .expect("request");
    // The server sends its session tickets before any answer: once the answer is read, the
    // client holds them.
    let answer = read_answer(send.send_request(req).await.expect("send")).await;
    assert_eq!(answer.status, 200);
    resumed
}

#[tokio::test]
async fn a_returning_visitor_resumes_its_session_however_many_others_came_meanwhile() {
    let ca = TestCa::new();
    let (gateway, _a, _b) = two_tls_sites(&ca).await;
    let returning = ca.client_config(&[b"http/1.1"]);
    assert!(
        !healthz_resumed(&gateway, returning.clone()).await,
        "a first visit is a full handshake"
    );
    // Other visitors, each with a full handshake. A server keeping sessions in a bounded store
    // has forgotten the first visitor's by the end of them; one handing out tickets has not.
    for _ in 0..300 {
        assert!(!healthz_resumed(&gateway, ca.client_config(&[b"http/1.1"])).await);
    }
    assert!(
        healthz_resumed(&gateway, returning).await,
        "the returning visitor's handshake must resume its session"
    );
}

#[tokio::test]
async fn an_answer_given_before_a_large_upload_was_read_reaches_the_client() {
    let ca = TestCa::new();
    let (gateway, _a, _b) = two_tls_sites(&ca).await;
    // The health check refuses a POST (405) without reading its body; the connection then
    // closes, and the client, still sending, must get that answer rather than a reset.
    for _ in 0..3 {
        let req = client::request("POST", "a.test", "/_pagegate/healthz")
            .body(Full::new(bytes::Bytes::from(vec![b'x'; 8 << 20])))
            .expect("request");
        let answer = https_send(&gateway, &ca, "a.test", req).await;
        assert_eq!(answer.status, 405);
    }
}

#[tokio::test]
async fn each_sni_name_gets_its_own_certificate_and_site() {
    let ca = TestCa::new();
    let (gateway, site_a, site_b) = two_tls_sites(&ca).await;

    // The client verifies the certificate against the name it asked for: a handshake that
    // succeeds proves the right certificate was served.
    let a = https_get(&gateway, &ca, "a.test", "a.test", "/from-a").await;
    assert_eq!(a.body, "hello from upstream /from-a");
    let b = https_get(&gateway, &ca, "www.b.test", "www.b.test", "/from-b").await;
    assert_eq!(b.body, "hello from upstream /from-b");

    assert_eq!(site_a.last().target, "/from-a");
    assert_eq!(
        site_a.last().header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(site_b.last().target, "/from-b");
    assert_eq!(site_a.count() + site_b.count(), 2);
}

#[tokio::test]
async fn an_unknown_server_name_gets_no_certificate() {
    let ca = TestCa::new();
    let (gateway, _a, _b) = two_tls_sites(&ca).await;
    let tls_addr = gateway.tls_addr.expect("tls listener");
    let result = client::tls_connect(tls_addr, "c.test", ca.client_config(&[])).await;
    assert!(
        result.is_err(),
        "handshake for an unconfigured name must fail"
    );
}

#[tokio::test]
async fn a_host_header_naming_another_site_than_sni_is_misdirected() {
    let ca = TestCa::new();
    let (gateway, site_a, site_b) = two_tls_sites(&ca).await;
    let answer = https_get(&gateway, &ca, "a.test", "b.test", "/secret").await;
    assert_eq!(answer.status, 421);
    assert_eq!(site_a.count() + site_b.count(), 0);
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn() {
    let ca = TestCa::new();
    let (gateway, site_a, _b) = two_tls_sites(&ca).await;
    let tls_addr = gateway.tls_addr.expect("tls listener");
    let stream = client::tls_connect(tls_addr, "a.test", ca.client_config(&[b"h2", b"http/1.1"]))
        .await
        .expect("TLS");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("https://a.test/over-h2")
        .body(Full::<bytes::Bytes>::default())
        .expect("request");
    let response = send.send_request(req).await.expect("send");
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(
        read_answer(response).await.body,
        "hello from upstream /over-h2"
    );
    assert_eq!(site_a.last().header("host").as_deref(), Some("a.test"));
}

#[tokio::test]
async fn https_upstream_is_verified_against_the_configured_ca() {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["localhost"]);
    let upstream = TestUpstream::start_tls(&leaf.cert_pem, &leaf.key_pem).await;
    let port = upstream.addr.port();

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("internal-ca.pem"), &ca.cert_pem).expect("write ca");
    let trusted = TestGateway::start_in(
        dir,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[[site]]\nhosts = [\"*\"]\n\
             upstream = \"https://localhost:{port}\"\nupstream_ca = \"internal-ca.pem\"\n"
        ),
    )
    .await;
    let answer = client::get(trusted.addr, "site.example", "/over-tls").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "hello from upstream /over-tls");
    assert_eq!(
        upstream.last().version,
        http::Version::HTTP_2,
        "ALPN picked h2 to the upstream"
    );

    // Without the CA the upstream's certificate is not trusted: 502, nothing served.
    let untrusting = TestGateway::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[site]]\nhosts = [\"*\"]\nupstream = \"https://localhost:{port}\"\n"
    ))
    .await;
    let before = upstream.count();
    let answer = client::get(untrusting.addr, "site.example", "/over-tls").await;
    assert_eq!(answer.status, 502);
    assert_eq!(upstream.count(), before);
}

#[tokio::test]
async fn plain_http_to_a_tls_site_is_redirected_and_no_sni_cannot_reach_a_plain_site() {
    let ca = TestCa::new();
    let secure = TestUpstream::start().await;
    let plain = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    ca.write_leaf(dir.path(), "a", &["a.test"]);
    let gateway = TestGateway::start_in(
        dir,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n\n\
             [[site]]\nhosts = [\"a.test\"]\nupstream = \"http://{}\"\ntls = {{ cert = \"a.pem\", key = \"a.key\" }}\n\n\
             [[site]]\nhosts = [\"plain.test\"]\nupstream = \"http://{}\"\n",
            secure.addr, plain.addr
        ),
    )
    .await;
    let tls_port = gateway.tls_addr.expect("tls listener").port();

    let answer = client::get(gateway.addr, "A.test:80", "/course/?lesson=2").await;
    assert_eq!(answer.status, 308);
    assert_eq!(
        answer.header("location"),
        Some(format!("https://a.test:{tls_port}/course/?lesson=2").as_str())
    );
    assert_eq!(
        client::get(gateway.addr, "plain.test", "/").await.status,
        200,
        "plain sites stay on HTTP"
    );

    // A client that sends no server name gets the first certificate; it must not be able to
    // use that connection to reach the plain-HTTP-only site.
    let mut config = (*ca.client_config(&[b"http/1.1"])).clone();
    config.enable_sni = false;
    let stream = client::tls_connect(
        gateway.tls_addr.expect("tls"),
        "a.test",
        std::sync::Arc::new(config),
    )
    .await
    .expect("handshake without SNI");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1");
    tokio::spawn(conn);
    let req = client::request("GET", "plain.test", "/")
        .body(Full::<bytes::Bytes>::default())
        .expect("request");
    assert_eq!(
        read_answer(send.send_request(req).await.expect("send"))
            .await
            .status,
        421
    );
    let req = client::request("GET", "a.test", "/ok")
        .body(Full::<bytes::Bytes>::default())
        .expect("request");
    assert_eq!(
        read_answer(send.send_request(req).await.expect("send"))
            .await
            .status,
        200
    );
    assert_eq!(plain.count(), 1);
    assert_eq!(secure.last().target, "/ok");
}
