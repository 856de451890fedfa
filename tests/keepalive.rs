//! Keep-alive connections across idle periods. An idle plain HTTP/1.1 connection is parked
//! between requests (hyper's connection and buffers are let go, the socket kept): whatever the
//! client does next must be served exactly as on a connection that never went quiet.
//!
//! The tests wait for a connection to be parked by watching `pagegate_parked_connections`. That
//! gauge is the process's, shared by every gateway in it, so the tests here run one at a time
//! ([`one_at_a_time`]).

mod common;

use std::time::Duration;

use common::client::{self, read_one};
use common::{TestGateway, TestUpstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, MutexGuard};

/// Longer than the quiet time after which a connection is parked: how long a client pauses in
/// the middle of a request, which must not park it.
const PAUSE: Duration = Duration::from_millis(700);

/// Held by each test for its whole run: they count parked connections in one process-wide gauge.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Waits for the tests before this one to finish, and for their gateways' lots to be empty.
async fn one_at_a_time() -> MutexGuard<'static, ()> {
    let turn = SERIAL.lock().await;
    parked_becomes(0).await;
    turn
}

/// `pagegate_parked_connections` as a scrape shows it.
fn parked() -> f64 {
    let mut text = String::new();
    pagegate::metrics::global()
        .encode(&mut text, None, None)
        .expect("the metrics encode");
    common::observe::value(&text, "pagegate_parked_connections", &[])
}

/// Waits (at most 30 s) until exactly `count` connections are parked.
async fn parked_becomes(count: u32) {
    let wanted = f64::from(count);
    let mut seen = parked();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen != wanted {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{seen} connections parked, not {count}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        seen = parked();
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: site.example\r\n\r\n")
}

#[tokio::test]
async fn a_connection_that_went_quiet_serves_its_next_requests() {
    let _turn = one_at_a_time().await;
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;
    let mut conn = TcpStream::connect(gateway.addr).await.expect("connect");
    for round in 0..3 {
        conn.write_all(get(&format!("/round/{round}")).as_bytes())
            .await
            .expect("write");
        let (status, body) = read_one(&mut conn).await.expect("an answer");
        assert_eq!(status, 200);
        assert_eq!(body, format!("hello from upstream /round/{round}"));
        parked_becomes(1).await;
    }
    // A request with a body after a quiet period, on the same connection.
    let upload = "POST /upload HTTP/1.1\r\nHost: site.example\r\nContent-Length: 3\r\n\r\n";
    conn.write_all(upload.as_bytes()).await.expect("write head");
    conn.write_all(&[0, 1, 2]).await.expect("write body");
    let (status, body) = read_one(&mut conn).await.expect("an answer");
    assert_eq!((status, body.as_str()), (200, "3 true"));
    assert_eq!(upstream.count(), 4);
}

#[tokio::test]
async fn pipelined_requests_and_a_head_split_by_a_pause_are_answered_in_order() {
    let _turn = one_at_a_time().await;
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;
    let mut conn = TcpStream::connect(gateway.addr).await.expect("connect");

    // Two requests in one write, then a quiet period.
    let two = format!("{}{}", get("/first"), get("/second"));
    conn.write_all(two.as_bytes()).await.expect("write");
    for path in ["/first", "/second"] {
        let (status, body) = read_one(&mut conn).await.expect("an answer");
        assert_eq!((status, body), (200, format!("hello from upstream {path}")));
    }
    parked_becomes(1).await;

    // Half a request, a pause longer than the quiet time, then the rest: never cut in two.
    let third = get("/third");
    let (start, rest) = third.split_at(10);
    conn.write_all(start.as_bytes()).await.expect("write start");
    parked_becomes(0).await;
    tokio::time::sleep(PAUSE).await;
    assert_eq!(parked(), 0.0, "a connection inside a request is not parked");
    conn.write_all(rest.as_bytes()).await.expect("write rest");
    let (status, body) = read_one(&mut conn).await.expect("an answer");
    assert_eq!((status, body.as_str()), (200, "hello from upstream /third"));

    let targets: Vec<String> = upstream.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/first", "/second", "/third"]);
}

#[tokio::test]
async fn a_smuggled_request_after_a_quiet_period_is_still_refused() {
    let _turn = one_at_a_time().await;
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;
    let mut conn = TcpStream::connect(gateway.addr).await.expect("connect");
    conn.write_all(get("/clean").as_bytes())
        .await
        .expect("write");
    assert_eq!(read_one(&mut conn).await.expect("an answer").0, 200);
    parked_becomes(1).await;

    // The framing watch follows the connection across parked periods.
    let smuggled = "POST /x HTTP/1.1\r\nHost: site.example\r\nContent-Length: 4\r\n\
                    Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    conn.write_all(smuggled.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
    assert_eq!(client::raw_status(&String::from_utf8_lossy(&answer)), 400);
    assert_eq!(
        upstream.count(),
        1,
        "only the clean request reached the upstream"
    );
}

#[tokio::test]
async fn connection_close_and_http_1_0_are_honoured_after_the_answer() {
    let _turn = one_at_a_time().await;
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;
    for request in [
        "GET /bye HTTP/1.1\r\nHost: site.example\r\nConnection: close\r\n\r\n",
        "GET /old HTTP/1.0\r\nHost: site.example\r\n\r\n",
    ] {
        let mut conn = TcpStream::connect(gateway.addr).await.expect("connect");
        conn.write_all(request.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer))
            .await
            .expect("the gateway closes the connection after the answer")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(client::raw_status(&answer), 200, "{request}");
    }
}

#[tokio::test]
async fn an_answer_given_before_a_large_upload_was_read_reaches_the_client() {
    let _turn = one_at_a_time().await;
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of(&upstream).await;
    // The health check refuses a POST (405) without reading its body; the connection then
    // closes, and the client, still sending, must get that answer rather than a reset.
    for _ in 0..3 {
        let req = client::request("POST", "site.example", "/_pagegate/healthz")
            .body(http_body_util::Full::new(bytes::Bytes::from(vec![
                b'x';
                8 << 20
            ])))
            .expect("request");
        assert_eq!(client::send(gateway.addr, req).await.status, 405);
    }
}

#[tokio::test]
async fn shutdown_closes_quiet_connections_at_once() {
    let _turn = one_at_a_time().await;
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of_with(&upstream, "shutdown_grace = \"60s\"").await;
    let mut quiet = TcpStream::connect(gateway.addr).await.expect("connect");
    quiet
        .write_all(get("/once").as_bytes())
        .await
        .expect("write");
    assert_eq!(read_one(&mut quiet).await.expect("an answer").0, 200);
    parked_becomes(1).await;

    // With a minute of grace, the stop still ends now: a quiet connection has nothing to finish.
    tokio::time::timeout(Duration::from_secs(30), gateway.stop())
        .await
        .expect("the stop did not wait for the grace period");
    assert_eq!(parked(), 0.0, "the lot let go of it");
    assert!(
        read_one(&mut quiet).await.is_none(),
        "the connection was closed"
    );
}

/// A gateway with a quiet connection parked in a lot, and that connection.
async fn gateway_holding_a_parked_connection(upstream: &TestUpstream) -> (TestGateway, TcpStream) {
    // On redb whatever the suites run on: the file's lock tells when the state was let go.
    let gateway = TestGateway::start_on_redb(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"60s\"\n\n\
         [[site]]\nhosts = [\"*\"]\nupstream = \"http://{}\"\n",
        upstream.addr
    ))
    .await;
    let mut quiet = TcpStream::connect(gateway.addr).await.expect("connect");
    quiet
        .write_all(get("/once").as_bytes())
        .await
        .expect("write");
    assert_eq!(read_one(&mut quiet).await.expect("an answer").0, 200);
    parked_becomes(1).await;
    (gateway, quiet)
}

#[tokio::test]
async fn a_stopped_gateway_has_let_go_of_its_database() {
    let _turn = one_at_a_time().await;
    let upstream = TestUpstream::start().await;
    let (gateway, mut quiet) = gateway_holding_a_parked_connection(&upstream).await;
    // A control client (`pagegate clients`) that asked once and keeps its connection open.
    let mut control = tokio::net::UnixStream::connect(gateway.dir.path().join("data/control.sock"))
        .await
        .expect("connect to the control socket");
    control
        .write_all(b"GET /v1/clients?page=none HTTP/1.1\r\nHost: control\r\n\r\n")
        .await
        .expect("ask the control socket");
    let mut answer = [0u8; 12];
    control
        .read_exact(&mut answer)
        .await
        .expect("the control socket answers");
    assert!(answer.starts_with(b"HTTP/1.1 "), "an HTTP answer");
    let dir = tokio::time::timeout(Duration::from_secs(30), gateway.stop_and_keep_dir())
        .await
        .expect("the stop ends");
    pagegate::store::redb::RedbStore::open(&dir.path().join("data"))
        .expect("the database is free as soon as the stop returns");
    assert_eq!(parked(), 0.0, "the lot let go of the parked connection");
    assert!(
        read_one(&mut quiet).await.is_none(),
        "the parked connection was closed"
    );
    drop(control);
}

#[tokio::test]
async fn a_dropped_gateway_lets_go_of_its_database_and_connections() {
    let _turn = one_at_a_time().await;
    let upstream = TestUpstream::start().await;
    let (gateway, mut quiet) = gateway_holding_a_parked_connection(&upstream).await;
    let addr = gateway.addr;
    let dir = gateway.drop_and_keep_dir();
    let store = tokio::time::timeout(
        Duration::from_secs(30),
        common::open_store_when_free(&dir.path().join("data")),
    )
    .await
    .expect("the dropped gateway let go of the database");
    drop(store);
    assert!(
        read_one(&mut quiet).await.is_none(),
        "the parked connection was closed"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener was closed"
    );
}

#[test]
fn a_gateway_whose_runtime_ends_under_it_closes_its_connections_and_then_lets_go() {
    // The test's own runtime keeps the upstream and the checks going; the gateway is started on
    // a second one, which is then shut down with the gateway neither stopped nor dropped.
    let outer = tokio::runtime::Runtime::new().expect("runtime");
    let _turn = outer.block_on(one_at_a_time());
    let upstream = outer.block_on(TestUpstream::start());
    let inner = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (running, dir, quiet) = inner.block_on(async {
        let (gateway, quiet) = gateway_holding_a_parked_connection(&upstream).await;
        let (running, dir) = gateway.into_parts();
        (running, dir, quiet.into_std().expect("a plain socket"))
    });
    drop(inner);

    // Nothing serves the gateway any more: its worker threads end, and the lots close what
    // they held, though the handle is still there.
    outer.block_on(parked_becomes(0));
    let mut quiet = quiet;
    quiet.set_nonblocking(false).expect("blocking");
    quiet
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut quiet, &mut rest).expect("the gateway closed it");
    assert!(rest.is_empty());

    // The handle was the last thing holding the state.
    drop(running);
    pagegate::store::redb::RedbStore::open(&dir.path().join("data"))
        .expect("the database is free once the handle is dropped");
}
