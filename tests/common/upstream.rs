//! A real HTTP upstream for tests: HTTP/1.1 and h2c on one port (or HTTPS), recording every
//! request head it receives so a test can prove what did, or did not, reach the site.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pagegate::body::{self as gbody, Body, BoxError};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub version: Version,
    pub headers: HeaderMap,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        let all: Vec<&str> = self
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!all.is_empty()).then(|| all.join(", "))
    }
}

/// Size of the `/video` resource.
pub const VIDEO_LEN: usize = 1024 * 1024;

/// The byte at `index` of every generated body, so content can be checked without storing it.
pub fn pattern_byte(index: u64) -> u8 {
    (index % 251) as u8
}

pub struct TestUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    shutdown: CancellationToken,
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestUpstream {
    /// Plain TCP: HTTP/1.1, or HTTP/2 with prior knowledge.
    pub async fn start() -> TestUpstream {
        Self::start_with(None).await
    }

    /// HTTPS with the given certificate chain and key (PEM); ALPN h2 and http/1.1.
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> TestUpstream {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("test cert");
        let key =
            rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("test key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("test cert and key");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (seen2, stop, accepted) = (seen.clone(), shutdown.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    () = stop.cancelled() => return,
                    r = listener.accept() => match r { Ok(pair) => pair, Err(_) => continue },
                };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let seen = seen2.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let seen = seen.clone();
                        async move { Ok::<_, Infallible>(handle(req, seen).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = builder
                                    .serve_connection_with_upgrades(TokioIo::new(s), service)
                                    .await;
                            }
                        }
                    }
                });
            }
        });
        TestUpstream {
            addr,
            seen,
            connections,
            shutdown,
        }
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }

    /// The most recent request; panics if there was none.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream saw no request")
    }

    /// How many connections the upstream accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many requests reached the upstream.
    pub fn count(&self) -> usize {
        self.seen.lock().expect("seen lock").len()
    }

    /// Stops accepting connections (existing ones finish).
    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

async fn handle(mut req: Request<Incoming>, seen: Arc<Mutex<Vec<Seen>>>) -> Response<Body> {
    let target = req
        .uri()
        .path_and_query()
        .map(|pq| pq.to_string())
        .unwrap_or_default();
    seen.lock().expect("seen lock").push(Seen {
        method: req.method().to_string(),
        target: target.clone(),
        version: req.version(),
        headers: req.headers().clone(),
    });
    let path = req.uri().path().to_string();
    // `?cache=public` on any path: the answer tells every cache it may keep it for a day.
    let cacheable = req.uri().query() == Some("cache=public");
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let mut response = match (parts.next().unwrap_or(""), parts.next()) {
        ("big", Some(n)) => big(n.parse().unwrap_or(0)),
        ("drip", Some(n)) => drip(n.parse().unwrap_or(0)),
        ("upload", _) => upload(req.into_body()).await,
        ("video", _) => video(req.headers()),
        ("ws", _) => websocket(&mut req),
        ("slow", Some(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            text(StatusCode::OK, "slow done")
        }
        // Answers, then closes the connection (as an upstream at its keep-alive limit does).
        ("close", _) => {
            let mut r = text(StatusCode::OK, "closing");
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
        ("hop", _) => {
            let mut r = text(StatusCode::OK, "hop");
            let h = r.headers_mut();
            h.insert(
                header::CONNECTION,
                HeaderValue::from_static("x-upstream-private"),
            );
            h.insert("x-upstream-private", HeaderValue::from_static("secret"));
            h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
            h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
            h.insert("x-upstream-public", HeaderValue::from_static("visible"));
            r
        }
        _ => text(StatusCode::OK, &format!("hello from upstream {target}")),
    };
    if cacheable {
        let h = response.headers_mut();
        for (name, value) in [
            ("cache-control", "public, max-age=86400, s-maxage=86400"),
            ("expires", "Thu, 01 Jan 2037 00:00:00 GMT"),
            ("surrogate-control", "max-age=86400"),
            ("cdn-cache-control", "max-age=86400"),
            ("x-accel-expires", "86400"),
        ] {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(gbody::full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// `n` bytes of the pattern, produced 64 KiB at a time and never held whole.
fn big(n: u64) -> Response<Body> {
    const CHUNK: u64 = 64 * 1024;
    let chunks = stream::unfold(0u64, move |sent| async move {
        if sent >= n {
            return None;
        }
        let len = CHUNK.min(n - sent);
        let chunk: Vec<u8> = (sent..sent + len).map(pattern_byte).collect();
        Some((
            Ok::<_, BoxError>(Frame::data(Bytes::from(chunk))),
            sent + len,
        ))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    r
}

/// How long [`drip`] waits between two chunks.
pub const DRIP_EVERY: Duration = Duration::from_millis(200);

/// A slow download: `n` lines `chunk {i}\n`, one every [`DRIP_EVERY`], with no length given.
fn drip(n: usize) -> Response<Body> {
    let chunks = stream::unfold(0usize, move |sent| async move {
        if sent >= n {
            return None;
        }
        if sent > 0 {
            tokio::time::sleep(DRIP_EVERY).await;
        }
        let chunk = Bytes::from(format!("chunk {sent}\n"));
        Some((Ok::<_, BoxError>(Frame::data(chunk)), sent + 1))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Reads the whole upload as a stream and answers `"<bytes> <pattern-ok>"`.
async fn upload(mut body: Incoming) -> Response<Body> {
    let mut count = 0u64;
    let mut matches = true;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return text(StatusCode::BAD_REQUEST, "broken upload");
        };
        if let Some(data) = frame.data_ref() {
            for (i, b) in data.iter().enumerate() {
                matches &= *b == pattern_byte(count + i as u64);
            }
            count += data.len() as u64;
        }
    }
    text(StatusCode::OK, &format!("{count} {matches}"))
}

/// A 1 MiB resource honouring a single `Range: bytes=a-b`.
fn video(headers: &HeaderMap) -> Response<Body> {
    let all = || (0..VIDEO_LEN as u64).map(pattern_byte).collect::<Vec<u8>>();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
    let mut r = match range {
        Some((start, end)) if start <= end && end < VIDEO_LEN => {
            let mut r = Response::new(gbody::full(all()[start..=end].to_vec()));
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{end}/{VIDEO_LEN}")).expect("range"),
            );
            r
        }
        _ => Response::new(gbody::full(all())),
    };
    r.headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    r
}

/// Accepts a WebSocket and echoes every message back.
fn websocket(req: &mut Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return text(StatusCode::BAD_REQUEST, "not a websocket request");
    };
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
            if futures_util::SinkExt::send(&mut ws, msg).await.is_err() {
                break;
            }
        }
    });
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = Response::new(gbody::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        "sec-websocket-accept",
        HeaderValue::from_str(&accept).expect("accept key"),
    );
    r
}
