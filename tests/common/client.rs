//! Clients for tests: HTTP/1.1 and HTTP/2 over TCP or TLS, and raw bytes for what a
//! well-behaved client library would refuse to send.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A fully read response.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn read_answer(response: Response<Incoming>) -> Answer {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("read body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// An HTTP/1.1 connection to `addr`.
pub async fn http1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn.with_upgrades());
    send
}

/// An HTTP/2 prior-knowledge (h2c) connection to `addr`.
pub async fn http2(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    send
}

/// A TLS connection to `addr` with this SNI name; returns the stream and the negotiated ALPN.
pub async fn tls_connect(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let stream = TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
}

/// GET `path` with this Host over a fresh HTTP/1.1 connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Answer {
    send(
        addr,
        request("GET", host, path)
            .body(Full::default())
            .expect("request"),
    )
    .await
}

/// Sends one request over a fresh HTTP/1.1 connection and reads the whole answer.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Answer {
    let mut conn = http1(addr).await;
    let response = conn.send_request(req).await.expect("send request");
    read_answer(response).await
}

/// A request builder with method, Host and path.
pub fn request(method: &str, host: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
}

/// Writes raw bytes and returns whatever comes back until the peer closes or stays quiet for a
/// moment. For requests a client library would not send.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write raw request");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let wait = if out.is_empty() {
            Duration::from_secs(5)
        } else {
            Duration::from_millis(300)
        };
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in raw output, or 0 when nothing came back.
pub fn raw_status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A WebSocket opened through `addr` to `path` on `host`.
pub async fn websocket(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let url = format!("ws://{host}{path}");
    let (ws, response) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("websocket handshake");
    assert_eq!(response.status(), 101);
    ws
}

/// Sends `text` on a WebSocket and returns what comes back.
pub async fn echo(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>, text: &str) -> String {
    use futures_util::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::text(text))
        .await
        .expect("send");
    let answer = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("an answer within 5 s")
        .expect("an echo")
        .expect("a message");
    answer.into_text().expect("text").as_str().to_owned()
}

/// The DER of the leaf certificate the server presented on a TLS connection.
pub fn peer_leaf(stream: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the server presented a certificate")
        .to_vec()
}

/// The DER of the first certificate in a PEM text.
pub fn pem_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("a PEM certificate")
        .to_vec()
}

/// Reads exactly one response with a `Content-Length` body from a raw keep-alive connection,
/// leaving the connection ready for the next. `None` when the peer closed before a response.
pub async fn read_one(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no response within 10 s"),
        }
    };
    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .expect("response has a Content-Length");
    while got.len() < head_end + length {
        let n = stream.read(&mut buf).await.expect("read body");
        assert!(n > 0, "connection closed inside a body");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got.len(), head_end + length, "bytes after the response");
    let body = String::from_utf8_lossy(&got[head_end..]).into_owned();
    Some((raw_status(&head), body))
}

/// One request over a fresh HTTP/1.1 connection, `None` when no answer came (the server is
/// gone, or broke the exchange): for stories where a server may die mid-flight.
pub async fn try_send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Option<Answer> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let response = send.send_request(req).await.ok()?;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.ok()?.to_bytes();
    Some(Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}
