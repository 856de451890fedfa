//! The upstream client of one site: keep-alive connections on hyper's connection API, TLS
//! verified against the platform's roots (plus an optional CA file), HTTP/2 by ALPN or prior
//! knowledge.
//!
//! A pool of our own rather than hyper-util's general-purpose client, because a proxy's pattern
//! is narrow and hot: one origin per pool, so no keyed map to hash into on every request; and an
//! HTTP/1.1 connection goes back to the pool the moment the response body has been read, from the
//! request's own task, instead of a task spawned per request to wait for the connection to become
//! ready. That spawn and its wake-ups were a good part of the proxy's cost per request.
//!
//! HTTP/1.1 connections are handed out last-in first-out (the warmest first) and each serves one
//! request at a time; an HTTP/2 connection is shared by every request until it closes. Idle
//! HTTP/1.1 connections are kept per connection worker ([`crate::runtime::workers`]): a
//! connection opened on one worker's event loop is only reused there, so a request never wakes
//! another thread to talk to its upstream.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::UpstreamConfig;
use crate::runtime::workers::PerWorker;

/// An idle HTTP/1.1 connection older than this is closed rather than reused: the upstream may
/// be about to close it (nginx's default `keepalive_timeout` is 75 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// TCP keep-alive probes on upstream connections, so a dead peer is noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub(super) enum ClientError {
    /// No connection within `connect_timeout` (TCP and TLS together).
    #[error("connecting to the upstream timed out")]
    ConnectTimeout,
    /// The upstream's name did not resolve, or refused or reset the connection.
    #[error("cannot connect to the upstream: {0}")]
    Connect(std::io::Error),
    /// The TLS handshake failed (certificate not trusted, name mismatch, protocol).
    #[error("TLS handshake with the upstream failed: {0}")]
    Tls(std::io::Error),
    /// The request's target could not be expressed for HTTP/2.
    #[error("request target unusable for HTTP/2: {0}")]
    Target(String),
    /// The HTTP exchange failed: connection closed early, malformed answer.
    #[error("upstream exchange failed: {0}")]
    Http(#[from] hyper::Error),
}

/// The client every site uses; cheap to share.
pub(super) struct UpstreamClient {
    pool: Arc<Pool>,
}

struct Pool {
    /// `host:port` to resolve and connect to.
    address: String,
    tls: Option<Tls>,
    http2_only: bool,
    connect_timeout: Duration,
    /// Idle HTTP/1.1 connections, one stack per worker (see [`Pool::idle_here`]).
    idle: PerWorker<Arc<IdleStack>>,
    shared_h2: Mutex<Option<http2::SendRequest<Incoming>>>,
    /// Set once an HTTP/2 connection has been made, so that an HTTP/1.1-only upstream's
    /// requests never take `shared_h2`'s lock, which every worker would share.
    h2_seen: AtomicBool,
}

/// One worker's idle HTTP/1.1 connections, referenced per request through its own `Arc`. The
/// `Arc`'s allocation is what a request writes (the lock, the reference count), so it is
/// aligned to cache lines of its own, as [`PerWorker`] does for the shares it holds inline.
#[repr(align(128))]
struct IdleStack {
    idle: Mutex<VecDeque<Idle>>,
    /// Idle connections kept (`upstream_keepalive`); more are closed as their answers end.
    max_idle: usize,
}

struct Tls {
    /// Offers `h2` and `http/1.1` (only `h2` when the site asks for HTTP/2 only).
    negotiated: TlsConnector,
    /// Offers `http/1.1` alone: upgrades (WebSocket) exist only there.
    http1_only: TlsConnector,
    server_name: ServerName<'static>,
}

struct Idle {
    sender: http1::SendRequest<Incoming>,
    since: Instant,
}

/// A connection ready for one request.
enum Conn {
    Http1 {
        sender: http1::SendRequest<Incoming>,
        reused: bool,
    },
    Http2(http2::SendRequest<Incoming>),
}

/// Gives an HTTP/1.1 connection back to its pool once the response body has been read whole.
pub(super) struct Checkin {
    sender: http1::SendRequest<Incoming>,
    stack: Arc<IdleStack>,
}

impl Checkin {
    fn check_in(self) {
        if self.sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.stack.idle.lock() {
            if idle.len() < self.stack.max_idle {
                idle.push_back(Idle {
                    sender: self.sender,
                    since: Instant::now(),
                });
            }
        }
    }
}

/// Builds a site's client. Fails only on an unreadable CA file or when no root is available for
/// an https upstream: both are start-up errors an admin must see.
pub(super) fn build(config: &UpstreamConfig) -> Result<UpstreamClient, String> {
    let host = config.authority.host();
    let https = config.scheme == http::uri::Scheme::HTTPS;
    let port = config
        .authority
        .port_u16()
        .unwrap_or(if https { 443 } else { 80 });
    let tls = if https {
        let base = tls_client_config(config)?;
        let with_alpn = |protocols: &[&[u8]]| {
            let mut tls = base.clone();
            tls.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
            TlsConnector::from(Arc::new(tls))
        };
        let negotiated: &[&[u8]] = if config.http2 {
            &[b"h2"]
        } else {
            &[b"h2", b"http/1.1"]
        };
        let name = host.trim_start_matches('[').trim_end_matches(']');
        Some(Tls {
            negotiated: with_alpn(negotiated),
            http1_only: with_alpn(&[b"http/1.1"]),
            server_name: ServerName::try_from(name.to_owned())
                .map_err(|e| format!("{}: not a valid TLS server name: {e}", config.authority))?,
        })
    } else {
        None
    };
    Ok(UpstreamClient {
        pool: Arc::new(Pool {
            address: format!("{host}:{port}"),
            tls,
            http2_only: config.http2,
            connect_timeout: config.connect_timeout,
            idle: PerWorker::new(|| {
                Arc::new(IdleStack {
                    idle: Mutex::new(VecDeque::new()),
                    max_idle: config.keepalive,
                })
            }),
            shared_h2: Mutex::new(None),
            h2_seen: AtomicBool::new(false),
        }),
    })
}

impl Idle {
    fn is_stale(&self, max_age: Duration) -> bool {
        self.since.elapsed() > max_age || self.sender.is_closed()
    }
}

impl UpstreamClient {
    /// Closes the idle connections past their idle timeout; returns how many.
    pub(super) fn prune_idle(&self) -> usize {
        self.pool.prune_idle(IDLE_TIMEOUT)
    }

    /// Sends the request on a pooled or new connection. For an HTTP/1.1 answer, the returned
    /// [`Checkin`] gives the connection back once the body has been read ([`PooledBody`] does
    /// that). A request that a reused connection could not even start sending (the upstream
    /// closed it meanwhile) is sent again on the next connection, idle or new, and so on until
    /// a new connection fails too: at most once per idle connection, plus once. Not an
    /// `async fn`, like
    /// [`crate::gateway::Gateway::handle`].
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn doubles the request in its state"
    )]
    pub(super) fn send(
        &self,
        mut req: Request<Incoming>,
        upgrade: bool,
    ) -> impl Future<Output = Result<(Response<Incoming>, Option<Checkin>), ClientError>> {
        async move {
            loop {
                let conn = self.pool.checkout(upgrade).await?;
                match conn {
                    Conn::Http2(mut sender) => {
                        self.pool.to_h2_form(&mut req)?;
                        return match sender.try_send_request(req).await {
                            Ok(response) => Ok((response, None)),
                            Err(e) => Err(e.into_error().into()),
                        };
                    }
                    Conn::Http1 { mut sender, reused } => {
                        match sender.try_send_request(req).await {
                            Ok(response) => {
                                let checkin = (!upgrade).then(|| Checkin {
                                    sender,
                                    stack: self.pool.idle_here().clone(),
                                });
                                return Ok((response, checkin));
                            }
                            Err(e) => req = retry_or_fail(e, reused)?,
                        }
                    }
                }
            }
        }
    }
}

/// The request back, when it never left and its connection was a reused one; otherwise the
/// error.
fn retry_or_fail(
    mut e: TrySendError<Request<Incoming>>,
    reused: bool,
) -> Result<Request<Incoming>, ClientError> {
    match e.take_message() {
        Some(req) if reused => {
            tracing::debug!(error = %e.error(), "reused upstream connection was closed; retrying on a new one");
            Ok(req)
        }
        _ => Err(e.into_error().into()),
    }
}

impl Pool {
    /// HTTP/2 names the target in `:scheme` and `:authority`: the request's origin-form target
    /// becomes absolute, with the Host it was given as the authority. The `Host` header stays,
    /// equal to `:authority`, for upstreams that read only that.
    fn to_h2_form(&self, req: &mut Request<Incoming>) -> Result<(), ClientError> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok().map(str::to_owned))
            .unwrap_or_else(|| self.address.clone());
        let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        *req.uri_mut() = format!("{scheme}://{host}{path}")
            .parse()
            .map_err(|e: http::uri::InvalidUri| ClientError::Target(e.to_string()))?;
        Ok(())
    }

    async fn checkout(&self, upgrade: bool) -> Result<Conn, ClientError> {
        if !upgrade {
            if let Some(sender) = self.live_h2() {
                return Ok(Conn::Http2(sender));
            }
        }
        while let Some(mut sender) = self.take_idle() {
            // Ready at once, normally: it was checked in after its last answer was read.
            if sender.ready().await.is_ok() {
                tracing::trace!(upstream = %self.address, "reusing an idle upstream connection");
                return Ok(Conn::Http1 {
                    sender,
                    reused: true,
                });
            }
        }
        // Boxed: connecting (TCP, TLS, handshake) is rare on a warm pool and its future is the
        // largest part of a request's.
        Box::pin(self.connect(upgrade)).await
    }

    /// This worker's idle stack. Threads that are no worker (tests driving the gateway on their
    /// own runtime) share the first.
    fn idle_here(&self) -> &Arc<IdleStack> {
        self.idle.here()
    }

    fn live_h2(&self) -> Option<http2::SendRequest<Incoming>> {
        if !self.h2_seen.load(Ordering::Acquire) {
            return None;
        }
        let mut shared = self.shared_h2.lock().ok()?;
        match shared.as_ref() {
            Some(sender) if !sender.is_closed() => Some(sender.clone()),
            Some(_) => {
                *shared = None;
                None
            }
            None => None,
        }
    }

    /// The most recently used idle connection; expired and closed ones at the old end are
    /// dropped on the way.
    fn take_idle(&self) -> Option<http1::SendRequest<Incoming>> {
        let mut idle = self.idle_here().idle.lock().ok()?;
        while idle.front().is_some_and(|i| i.is_stale(IDLE_TIMEOUT)) {
            idle.pop_front();
        }
        idle.pop_back().map(|i| i.sender)
    }

    /// Closes every idle connection unused for `max_age`, or closed by the upstream, on every
    /// worker. Requests drop stale connections as they pass ([`Pool::take_idle`]), but a site
    /// that goes quiet after a burst would otherwise keep the burst's connections, about 27 KiB
    /// each (hyper's two 8 KiB buffers, its request channel and the connection's task), and up
    /// to `upstream_keepalive` per worker, until its next request.
    fn prune_idle(&self, max_age: Duration) -> usize {
        let mut closed = 0;
        for stack in self.idle.iter() {
            if let Ok(mut idle) = stack.idle.lock() {
                let before = idle.len();
                idle.retain(|i| !i.is_stale(max_age));
                closed += before - idle.len();
            }
        }
        closed
    }

    async fn connect(&self, upgrade: bool) -> Result<Conn, ClientError> {
        tokio::time::timeout(self.connect_timeout, self.open(upgrade))
            .await
            .map_err(|_| ClientError::ConnectTimeout)?
    }

    async fn open(&self, upgrade: bool) -> Result<Conn, ClientError> {
        tracing::trace!(upstream = %self.address, upgrade, "opening an upstream connection");
        let tcp = TcpStream::connect(self.address.as_str())
            .await
            .map_err(ClientError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let _ = socket2::SockRef::from(&tcp)
            .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE));
        match &self.tls {
            None if self.http2_only => self.handshake_h2(TokioIo::new(tcp)).await,
            None => handshake_h1(TokioIo::new(tcp)).await,
            Some(tls) => {
                let connector = if upgrade {
                    &tls.http1_only
                } else {
                    &tls.negotiated
                };
                let stream = connector
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .map_err(ClientError::Tls)?;
                if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                    self.handshake_h2(TokioIo::new(stream)).await
                } else {
                    handshake_h1(TokioIo::new(stream)).await
                }
            }
        }
    }

    /// A new HTTP/2 connection, kept as the shared one for the requests that follow.
    async fn handshake_h2<I>(&self, io: TokioIo<I>) -> Result<Conn, ClientError>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
            }
        });
        if let Ok(mut shared) = self.shared_h2.lock() {
            *shared = Some(sender.clone());
            self.h2_seen.store(true, Ordering::Release);
        }
        Ok(Conn::Http2(sender))
    }
}

async fn handshake_h1<I>(io: TokioIo<I>) -> Result<Conn, ClientError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new().handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(Conn::Http1 {
        sender,
        reused: false,
    })
}

/// An upstream response body that checks its connection back in when it has been read whole,
/// whether the server saw the end (`None`) or knew it from the length and stopped polling.
pub(super) struct PooledBody {
    body: Incoming,
    checkin: Option<Checkin>,
}

impl PooledBody {
    pub(super) fn new(body: Incoming, checkin: Option<Checkin>) -> PooledBody {
        PooledBody { body, checkin }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            if let Some(checkin) = self.checkin.take() {
                checkin.check_in();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Read whole: the connection is clean. Otherwise (the client went away mid-body) it is
        // dropped, and hyper closes it rather than reading the rest.
        if let Some(checkin) = self.checkin.take() {
            if self.body.is_end_stream() {
                checkin.check_in();
            }
        }
    }
}

fn tls_client_config(config: &UpstreamConfig) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A malformed platform root is skipped, as browsers do; the others still verify.
        let _ = roots.add(cert);
    }
    if let Some(ca) = &config.ca_file {
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: not a PEM CA file: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: holds no PEM certificate", ca.display()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{}: unusable CA certificate: {e}", ca.display()))?;
        }
    }
    if roots.is_empty() {
        return Err(format!(
            "no trusted root certificates for the https upstream {}: install the platform's \
             CA bundle (ca-certificates) or set upstream_ca",
            config.authority
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A real upstream on loopback; the counter is the number of its connections still open.
    async fn upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let open = Arc::new(AtomicUsize::new(0));
        let counter = open.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let counter = counter.clone();
                tokio::spawn(async move {
                    let answer = hyper::service::service_fn(|_req| async {
                        Ok::<_, Infallible>(Response::new(http_body_util::Empty::<Bytes>::new()))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), answer)
                        .await;
                    counter.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (addr, open)
    }

    fn client_for(addr: std::net::SocketAddr, keepalive: usize) -> UpstreamClient {
        build(&UpstreamConfig {
            scheme: http::uri::Scheme::HTTP,
            authority: addr.to_string().parse().expect("authority"),
            ca_file: None,
            http2: false,
            preserve_host: false,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            keepalive,
        })
        .expect("client")
    }

    /// Waits up to 5 s for the upstream to count `n` open connections; returns the last count.
    async fn settle(open: &AtomicUsize, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        while open.load(Ordering::SeqCst) != n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        open.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_quiet_pool_gives_its_idle_connections_back() {
        let (addr, open) = upstream().await;
        let client = client_for(addr, 64);
        for _ in 0..3 {
            let Conn::Http1 { sender, .. } = client.pool.connect(false).await.expect("connects")
            else {
                panic!("a plain upstream speaks HTTP/1.1");
            };
            Checkin {
                sender,
                stack: client.pool.idle_here().clone(),
            }
            .check_in();
        }
        assert_eq!(settle(&open, 3).await, 3, "three idle connections");
        assert_eq!(
            client.prune_idle(),
            0,
            "none has idled past the timeout yet"
        );

        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(client.pool.prune_idle(Duration::from_millis(1)), 3);
        assert_eq!(settle(&open, 0).await, 0, "the upstream saw them closed");
    }

    /// Opens `n` connections at once, as a burst of concurrent requests would, and checks each
    /// back in.
    async fn burst(client: &UpstreamClient, n: usize) {
        let mut senders = Vec::new();
        for _ in 0..n {
            let Conn::Http1 { sender, .. } = client.pool.connect(false).await.expect("connects")
            else {
                panic!("a plain upstream speaks HTTP/1.1");
            };
            senders.push(sender);
        }
        for sender in senders {
            Checkin {
                sender,
                stack: client.pool.idle_here().clone(),
            }
            .check_in();
        }
    }

    /// An answer body: `Content-Length` says `len`; its first kilobyte comes at once, the rest
    /// only if `whole` (otherwise never: the upstream is slow, and the body cannot be read whole).
    struct Answer {
        len: usize,
        whole: bool,
        sent: bool,
    }

    impl HttpBody for Answer {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if self.sent {
                return if self.whole {
                    Poll::Ready(None)
                } else {
                    Poll::Pending
                };
            }
            self.sent = true;
            let now = if self.whole { self.len } else { 1024 };
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; now])))))
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.len as u64)
        }
    }

    /// A real upstream that answers every request with `len` bytes, all of them if `whole`
    /// (see [`Answer`]); the counter is the number of its connections still open.
    async fn upstream_sending(len: usize, whole: bool) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let open = Arc::new(AtomicUsize::new(0));
        let counter = open.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let counter = counter.clone();
                tokio::spawn(async move {
                    let answer = hyper::service::service_fn(move |_req| async move {
                        Ok::<_, Infallible>(Response::new(Answer {
                            len,
                            whole,
                            sent: false,
                        }))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), answer)
                        .await;
                    counter.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (addr, open)
    }

    /// A minimal proxy in front of `client`, as the gateway uses it: each request it receives
    /// (a real `Incoming` body) is sent with [`UpstreamClient::send`] and the answer streamed
    /// back in a [`PooledBody`]. `before_send` runs in the request's task just before the send.
    async fn relay(
        client: Arc<UpstreamClient>,
        before_send: Arc<dyn Fn() + Send + Sync>,
    ) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (client, before_send) = (client.clone(), before_send.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (client, before_send) = (client.clone(), before_send.clone());
                        async move {
                            before_send();
                            Ok::<_, Infallible>(match client.send(req, false).await {
                                Ok((response, checkin)) => {
                                    response.map(|body| PooledBody::new(body, checkin).boxed())
                                }
                                Err(e) => {
                                    let mut failed = Response::new(
                                        http_body_util::Full::new(Bytes::from(e.to_string()))
                                            .map_err(|never| match never {})
                                            .boxed(),
                                    );
                                    *failed.status_mut() = http::StatusCode::BAD_GATEWAY;
                                    failed
                                }
                            })
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    /// `GET /` through `relay` on a new connection: the status and the whole body.
    async fn get_through(relay: std::net::SocketAddr) -> (u16, Vec<u8>) {
        let stream = TcpStream::connect(relay)
            .await
            .expect("connect to the relay");
        let (mut sender, conn) =
            http1::handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        let req = Request::builder()
            .uri("/")
            .header(http::header::HOST, "upstream.test")
            .body(http_body_util::Empty::new())
            .expect("request");
        let response = sender.send_request(req).await.expect("an answer");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the body")
            .to_bytes();
        (status, body.to_vec())
    }

    fn idle_count(client: &UpstreamClient) -> usize {
        client
            .pool
            .idle_here()
            .idle
            .lock()
            .map_or(0, |idle| idle.len())
    }

    #[tokio::test]
    async fn a_request_a_reused_connection_could_not_send_goes_out_on_the_next_one() {
        let (addr, open) = upstream_sending(2, true).await;
        let client = Arc::new(client_for(addr, 8));
        // Two idle connections the upstream is about to close (their far ends are dropped just
        // before the request is sent, too late for the pool to have noticed), then the real
        // upstream behind them.
        let mut far_ends = Vec::new();
        for _ in 0..2 {
            let (near, far) = tokio::io::duplex(4096);
            let Conn::Http1 { sender, .. } =
                handshake_h1(TokioIo::new(near)).await.expect("handshake")
            else {
                panic!("an HTTP/1.1 connection");
            };
            Checkin {
                sender,
                stack: client.pool.idle_here().clone(),
            }
            .check_in();
            far_ends.push(far);
        }
        assert_eq!(idle_count(&client), 2);
        let far_ends = Arc::new(Mutex::new(far_ends));
        let closing = far_ends.clone();
        let relay = relay(
            client.clone(),
            Arc::new(move || {
                if let Ok(mut far_ends) = closing.lock() {
                    far_ends.clear();
                }
            }),
        )
        .await;

        let (status, body) = get_through(relay).await;
        assert_eq!((status, body.as_slice()), (200, b"xx".as_slice()));
        assert_eq!(settle(&open, 1).await, 1, "sent on one new connection");
        assert_eq!(idle_count(&client), 1, "which went back to the pool");
    }

    #[tokio::test]
    async fn a_request_whose_new_connection_fails_too_is_refused() {
        // An address nothing listens on any more.
        let gone = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("address")
        };
        let client = Arc::new(client_for(gone, 8));
        let (near, far) = tokio::io::duplex(4096);
        let Conn::Http1 { sender, .. } = handshake_h1(TokioIo::new(near)).await.expect("handshake")
        else {
            panic!("an HTTP/1.1 connection");
        };
        Checkin {
            sender,
            stack: client.pool.idle_here().clone(),
        }
        .check_in();
        let far = Arc::new(Mutex::new(Some(far)));
        let relay = relay(
            client.clone(),
            Arc::new(move || {
                if let Ok(mut far) = far.lock() {
                    far.take();
                }
            }),
        )
        .await;
        let (status, body) = get_through(relay).await;
        assert_eq!(status, 502);
        assert!(
            String::from_utf8_lossy(&body).starts_with("cannot connect to the upstream"),
            "the new connection's error: {}",
            String::from_utf8_lossy(&body)
        );
    }

    #[tokio::test]
    async fn a_body_read_whole_returns_its_connection_and_one_dropped_midway_does_not() {
        let (addr, open) = upstream_sending(64 * 1024, true).await;
        let client = Arc::new(client_for(addr, 8));
        let first = relay(client.clone(), Arc::new(|| {})).await;
        let (status, body) = get_through(first).await;
        assert_eq!((status, body.len()), (200, 64 * 1024));
        assert_eq!(idle_count(&client), 1, "read whole: back in the pool");
        assert_eq!(settle(&open, 1).await, 1);

        // An upstream slow to send the rest, and a client that reads the start of the answer
        // and goes away.
        let (addr, open) = upstream_sending(64 * 1024, false).await;
        let client = Arc::new(client_for(addr, 8));
        let second = relay(client.clone(), Arc::new(|| {})).await;
        let mut reader = TcpStream::connect(second).await.expect("connect");
        {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            reader
                .write_all(b"GET / HTTP/1.1\r\nHost: upstream.test\r\n\r\n")
                .await
                .expect("write");
            let mut start = [0u8; 512];
            let n = reader.read(&mut start).await.expect("read");
            assert!(start[..n].starts_with(b"HTTP/1.1 200"), "an answer started");
        }
        assert_eq!(settle(&open, 1).await, 1, "the answer's connection is open");
        drop(reader);
        assert_eq!(
            settle(&open, 0).await,
            0,
            "the half-read connection is closed, not kept"
        );
        assert_eq!(idle_count(&client), 0, "and never returned to the pool");
    }

    #[tokio::test]
    async fn a_burst_keeps_only_upstream_keepalive_connections() {
        let (addr, open) = upstream().await;
        let client = client_for(addr, 2);
        burst(&client, 5).await;
        assert_eq!(settle(&open, 2).await, 2, "three closed as they came back");

        let (addr, open) = upstream().await;
        let client = client_for(addr, 0);
        burst(&client, 3).await;
        assert_eq!(settle(&open, 0).await, 0, "keepalive 0 keeps none");
    }
}
