//! One client connection, from the accepted socket to its close.
//!
//! HTTP/1.1 over plain TCP is served by a hyper connection per burst of requests: when every
//! request read so far has been answered and nothing of the next one has arrived, that hyper
//! connection is ended without closing the socket, the connection's task ends, and the socket
//! waits for its next request in its worker's parking lot ([`super::parking`]), which starts a
//! new task for it when the client speaks again. An idle keep-alive connection therefore costs a
//! socket and a slot of about 150 bytes instead of a task and hyper's read and write buffers
//! (16 KiB and more), the way nginx gives an idle connection's buffers back. The hand-over
//! happens only on an exact request boundary, as the framing watch ([`super::framing`]) follows
//! it below hyper; whenever that is not certain (pipelined or partial requests,
//! `Connection: close`, HTTP/1.0, upgrades) the hyper connection simply goes on.
//!
//! TLS connections and HTTP/2 (prior knowledge on plain TCP) are served by one hyper connection
//! from start to end. Every HTTP/1.1 connection that pagegate closes, plain or TLS, closes
//! lingering ([`close_lingering`]), so an answer given before a request body was read survives.
//!
//! A connection that switches protocols (a WebSocket) stops being a hyper connection: hyper ends
//! the connection's future and hands the socket to the tunnel the proxy spawns. What the
//! connection holds from the server ([`Hold`]: its slot, its place in the shutdown wait) is
//! therefore shared, through a [`Lease`] that travels with every upgrade request, with that
//! tunnel, and given back only when both are gone.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::ConnectionSettings;
use super::framing::{FramingVerdict, FramingWatch};
use super::reload::Live;
use crate::body::{Body, BoxError};
use crate::error::HttpError;
use crate::gateway::ConnectionInfo;
use crate::proxy::Lease;
use crate::routing::normalize_host;
use crate::runtime::EndSignal;

/// How long a connection stays idle with its hyper connection before parking. Parking costs a
/// new hyper connection (two buffer allocations) at the next request, so a client sending
/// request after request keeps its hyper connection, and only a connection that has really gone
/// quiet gives its buffers back.
const LINGER: Duration = Duration::from_millis(100);

/// What an HTTP/2 client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An accepted client connection and what it holds until it closes, parked or not: kept small,
/// since it is all a quiet connection holds besides its socket.
pub(super) struct Connection {
    pub(super) live: Arc<Live>,
    pub(super) settings: Arc<ConnectionSettings>,
    /// The worker (0-based) that serves the connection, and whose lot it parks in.
    pub(super) worker: usize,
    pub(super) peer: SocketAddr,
    /// Shared with the tunnel the connection may become.
    pub(super) hold: Arc<Hold>,
}

/// What an open client connection holds from the server, given back when the connection and
/// any tunnel it became have both ended.
pub(super) struct Hold {
    /// Cancelled when the server shuts down: in-flight requests finish, idle connections close,
    /// tunnels close. Its worker's token, so that polling it never contends with another worker.
    pub(super) shutdown: CancellationToken,
    /// Its slot under `server.max_connections`.
    pub(super) _slot: tokio::sync::OwnedSemaphorePermit,
    /// Its count in `pagegate_open_connections`.
    pub(super) _open: crate::metrics::OpenConnection,
    /// Its count on its worker, which decides where new connections go.
    pub(super) _on_worker: super::balance::OpenOnWorker,
    /// Its place in what the shutdown waits for.
    pub(super) _tracked: tokio_util::task::task_tracker::TaskTrackerToken,
}

/// A connection's [`Hold`] is what the tunnel it may become keeps (as a [`Lease`]), and ends
/// on when the server shuts down.
impl EndSignal for Hold {
    fn token(&self) -> &CancellationToken {
        &self.shutdown
    }
}

impl Connection {
    /// Serves the connection on the worker this runs on, which must be `self.worker`.
    pub(super) async fn serve(self, stream: TcpStream, tls: Option<TlsAcceptor>) {
        match tls {
            None => self.serve_plain(stream).await,
            // Boxed: a TLS connection's state is large, and a plain connection's task would
            // otherwise be as large, idle or not.
            Some(acceptor) => Box::pin(self.serve_tls(stream, acceptor)).await,
        }
    }

    async fn serve_plain(self, stream: TcpStream) {
        // Nothing but the socket is held until the client speaks.
        let mut first = [0u8; H2_PREFACE.len()];
        let idle = self.settings.idle_timeout;
        let peeked = tokio::select! {
            peeked = tokio::time::timeout(idle, stream.peek(&mut first)) => peeked,
            () = self.shutdown().cancelled() => return,
        };
        let n = match peeked {
            Ok(Ok(n)) if n > 0 => n,
            _ => return,
        };
        if H2_PREFACE.starts_with(&first[..n]) {
            // HTTP/2 by prior knowledge, or too little read to tell: hyper decides. Boxed, so
            // that a connection's task is small while it waits for its first request.
            Box::pin(self.serve_whole(stream, false, None)).await;
        } else {
            self.serve_http1_parking(stream).await;
        }
    }

    async fn serve_tls(self, stream: TcpStream, acceptor: TlsAcceptor) {
        let timeout = self.live.config().server.tls_handshake_timeout;
        let handshake = tokio::time::timeout(timeout, acceptor.accept(stream)).await;
        let stream = match handshake {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                return;
            }
        };
        // The name, not the site it mapped to: a reload may renumber or remove sites, so each
        // request looks the name up in the configuration it is answered with.
        let sni = stream
            .get_ref()
            .1
            .server_name()
            .and_then(normalize_host)
            .map(|host| Arc::<str>::from(host.as_ref()));
        if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
            self.serve_whole(stream, true, sni).await;
        } else {
            self.serve_http1_to_end(stream, sni).await;
        }
    }

    /// HTTP/1.1 over TLS: one hyper connection for the connection's life (rustls may hold read
    /// bytes of its own, so the socket's readiness cannot tell when to resume a parked one), then
    /// a lingering close.
    async fn serve_http1_to_end<I>(self, io: I, sni: Option<Arc<str>>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (io, framing) = FramingWatch::new(io);
        let exchanges = Arc::new(Exchanges::never_parking());
        let service = service(
            self.live.clone(),
            self.peer,
            true,
            sni,
            framing.clone(),
            exchanges.clone(),
            self.lease(),
        );
        // The same driver as plain connections, which with parking ruled out runs to the end.
        let _never_parked = self
            .serve_until_parked(TokioIo::new(io), &service, &framing, &exchanges)
            .await;
    }

    /// One hyper connection (HTTP/1.1 or HTTP/2, upgrades allowed) for the connection's life.
    async fn serve_whole<I>(self, io: I, tls: bool, sni: Option<Arc<str>>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (io, framing) = FramingWatch::new(io);
        let exchanges = Arc::new(Exchanges::default());
        let service = service(
            self.live.clone(),
            self.peer,
            tls,
            sni,
            framing,
            exchanges,
            self.lease(),
        );
        let conn = self
            .settings
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        let mut conn = pin!(conn);
        let ended = tokio::select! {
            ended = conn.as_mut() => ended,
            () = self.shutdown().cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
        }
    }

    /// A parked connection whose client spoke again: served on a task of its own from here.
    /// Called by the lot's task, on the connection's worker.
    pub(super) fn resume(socket: std::net::TcpStream, conn: Connection) {
        tokio::spawn(async move {
            match TcpStream::from_std(socket) {
                Ok(stream) => conn.serve_http1_parking(stream).await,
                Err(e) => {
                    tracing::debug!(peer = %conn.peer, error = %e, "cannot resume a quiet connection");
                }
            }
        });
    }

    /// HTTP/1.1 on plain TCP, until it ends or goes quiet; then parked, without a task or
    /// hyper's buffers, until the client's next request (a new hyper connection, framing watch
    /// and request count then: nothing of this request boundary carries over).
    async fn serve_http1_parking(self, stream: TcpStream) {
        let (io, framing) = FramingWatch::new(stream);
        let exchanges = Arc::new(Exchanges::default());
        let service = service(
            self.live.clone(),
            self.peer,
            false,
            None,
            framing.clone(),
            exchanges.clone(),
            self.lease(),
        );
        let served = self.serve_until_parked(TokioIo::new(io), &service, &framing, &exchanges);
        if let Some(io) = served.await {
            self.park(io.into_inner().into_inner());
        }
    }

    fn lease(&self) -> Lease {
        Lease(self.hold.clone())
    }

    fn shutdown(&self) -> &CancellationToken {
        &self.hold.shutdown
    }

    /// Hands a quiet socket to the worker's lot (which closes it if the server is shutting
    /// down); this task ends.
    fn park(self, stream: TcpStream) {
        let Some(lot) = self.settings.lots.get(self.worker).cloned() else {
            return;
        };
        // Leaves the runtime's reactor: the lot's epoll instance watches it from now on.
        match stream.into_std() {
            Ok(socket) => lot.park(socket, self),
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "cannot park a quiet connection")
            }
        }
    }

    /// Serves requests on a new hyper connection until the client goes quiet on a request
    /// boundary; returns the socket to park, or `None` once the connection is over (closed,
    /// upgraded, or ended by hyper, in which case it has been closed lingering).
    async fn serve_until_parked<I, S>(
        &self,
        io: TokioIo<FramingWatch<I>>,
        service: &S,
        framing: &Arc<FramingVerdict>,
        exchanges: &Arc<Exchanges>,
    ) -> Option<TokioIo<FramingWatch<I>>>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::HttpService<Incoming, ResBody = TrackedBody> + Clone,
        S::Error: Into<BoxError>,
    {
        // Boxed, so the parked task does not carry hyper's connection state inline.
        let mut conn = Box::pin(
            self.settings
                .http1
                .serve_connection(io, service.clone())
                .with_upgrades(),
        );
        let outcome = serve_until_idle(conn.as_mut(), framing, exchanges, self.shutdown()).await;
        // `None` once upgraded: the socket belongs to the tunnel then.
        let parts = Pin::into_inner(conn).into_parts();
        match outcome {
            Ok(true) => {}
            // hyper ended the connection itself: `Connection: close`, an early answer to a
            // request whose body it did not read, an error, or the shutdown.
            ended => {
                if let Err(e) = ended {
                    tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
                }
                if let (Some(parts), false) = (parts, self.shutdown().is_cancelled()) {
                    Box::pin(close_lingering(parts.io.into_inner().into_inner())).await;
                }
                return None;
            }
        }
        let hyper::server::conn::http1::Parts { io, read_buf, .. } = parts?;
        if !read_buf.is_empty() {
            // Cannot happen on a request boundary; never resume mid-stream.
            tracing::debug!(peer = %self.peer, "unread bytes at a request boundary; closing");
            return None;
        }
        // The read buffer's memory goes with it: nothing of hyper's is kept while parked.
        Some(io)
    }
}

/// The per-request service: each request is answered by the state in force as it arrives.
fn service(
    live: Arc<Live>,
    peer: SocketAddr,
    tls: bool,
    sni: Option<Arc<str>>,
    framing: Arc<FramingVerdict>,
    exchanges: Arc<Exchanges>,
    lease: Lease,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<TrackedBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<TrackedBody>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(move |mut req: Request<Incoming>| {
        // The state in force as the request arrives serves it to the end, even if a reload
        // swaps another one in meanwhile.
        let state = live.load();
        // hyper marks the requests that may take the connection over, and only those.
        if req
            .extensions()
            .get::<hyper::upgrade::OnUpgrade>()
            .is_some()
        {
            req.extensions_mut().insert(lease.clone());
        }
        let exchange = Exchange::begin(&exchanges, &req);
        let ambiguous = framing.is_ambiguous(exchange.seq);
        let sni = sni.clone();
        async move {
            let gateway = &state.gateway;
            let mut info = ConnectionInfo {
                peer,
                tls,
                sni_site: None,
            };
            let response = if ambiguous {
                gateway.refuse(
                        HttpError::BadRequest(
                            "The request's length is ambiguous (Content-Length with Transfer-Encoding, or repeated).",
                        ),
                        &req,
                        info,
                    )
            } else {
                match sni
                    .as_deref()
                    .map(|name| gateway.router().site_for_host(name))
                {
                    // The name the handshake was for belongs to no site any more (a reload
                    // removed it): this connection may not be used for another site.
                    Some(None) => gateway.refuse(HttpError::Misdirected, &req, info),
                    sni_site => {
                        info.sni_site = sni_site.flatten();
                        gateway.handle(req, info).await
                    }
                }
            };
            Ok::<_, Infallible>(response.map(|body| TrackedBody {
                inner: body,
                _exchange: exchange,
            }))
        }
    })
}

/// How long a closing connection waits for more of what the client still sends, and how long it
/// reads and discards it at most (nginx's `lingering_timeout` and `lingering_time`).
const CLOSE_LINGER_QUIET: Duration = Duration::from_secs(2);
const CLOSE_LINGER_MAX: Duration = Duration::from_secs(10);

/// Closes a connection after its last response without losing that response. Closing a socket
/// that still has unread data makes the kernel reset the connection, and the reset can reach the
/// client before it has read the response: a visitor uploading a file that is too large would
/// see "connection reset" instead of the 413 page. So the write side is shut first, and what the
/// client still sends is read and thrown away until it stops, for a bounded time.
async fn close_lingering<S>(mut stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.shutdown().await;
    let until = tokio::time::Instant::now() + CLOSE_LINGER_MAX;
    // Most clients send nothing more: a small buffer tells, and only a client that does send
    // more gets the large one, so the usual close neither allocates nor zeroes 16 KiB.
    let mut small = [0u8; 512];
    let mut large: Vec<u8> = Vec::new();
    loop {
        let quiet = (tokio::time::Instant::now() + CLOSE_LINGER_QUIET).min(until);
        let sink: &mut [u8] = if large.is_empty() {
            &mut small
        } else {
            &mut large
        };
        match tokio::time::timeout_at(quiet, stream.read(sink)).await {
            Ok(Ok(n)) if n > 0 => {
                if large.is_empty() {
                    large = vec![0u8; 16 * 1024];
                }
            }
            _ => return,
        }
    }
}

/// Drives a hyper connection until it ends (`Ok(false)`) or until it has been idle between two
/// requests for [`LINGER`], in which case it is ended with the socket left open (`Ok(true)`).
///
/// The linger timer is armed once and not disarmed by new requests: when it fires, a connection
/// that saw requests meanwhile is given another full period. A busy connection therefore costs
/// one timer update per period, not one per request.
async fn serve_until_idle<C>(
    mut conn: Pin<&mut C>,
    framing: &FramingVerdict,
    exchanges: &Exchanges,
    shutdown: &CancellationToken,
) -> hyper::Result<bool>
where
    C: Future<Output = hyper::Result<()>> + GracefulEnd,
{
    let mut cancelled = pin!(shutdown.cancelled());
    let mut linger = pin!(tokio::time::sleep(LINGER));
    // The request count when the linger period running now began.
    let mut lingering_since: Option<u64> = None;
    let (mut parking, mut stopping) = (false, false);
    std::future::poll_fn(|cx: &mut Context<'_>| {
        if !stopping && cancelled.as_mut().poll(cx).is_ready() {
            // Finish what is in flight, then close for real.
            stopping = true;
            parking = false;
            framing.keep_open(false);
            conn.as_mut().end_gracefully();
        }
        loop {
            match conn.as_mut().poll(cx) {
                Poll::Ready(ended) => return Poll::Ready(ended.map(|()| parking)),
                Poll::Pending if !parking && !stopping && is_idle(framing, exchanges) => {
                    let seen = exchanges.seen.load(Ordering::Acquire);
                    if lingering_since.is_none() {
                        linger.as_mut().reset(tokio::time::Instant::now() + LINGER);
                        lingering_since = Some(seen);
                    }
                    if linger.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if lingering_since != Some(seen) {
                        // Busy meanwhile: a new period from now.
                        linger.as_mut().reset(tokio::time::Instant::now() + LINGER);
                        lingering_since = Some(seen);
                        if linger.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                    }
                    parking = true;
                    framing.keep_open(true);
                    conn.as_mut().end_gracefully();
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

/// Every request read has been answered, the bytes read end exactly after the last one, and
/// hyper is waiting on the socket (so it holds no read bytes it has not used: a service that
/// stopped reading a body early leaves hyper to drain or close, never to park).
fn is_idle(framing: &FramingVerdict, exchanges: &Exchanges) -> bool {
    exchanges.in_flight.load(Ordering::Acquire) == 0
        && !exchanges.no_parking.load(Ordering::Acquire)
        && framing.boundary() == Some(exchanges.seen.load(Ordering::Acquire))
}

/// hyper's graceful end, under one name for the connection types it is called on.
trait GracefulEnd {
    fn end_gracefully(self: Pin<&mut Self>);
}

impl<I, S, B> GracefulEnd for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: HttpBody + 'static,
    B::Error: Into<BoxError>,
{
    fn end_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// The requests of one connection, counted as they start and as their responses end.
#[derive(Default)]
struct Exchanges {
    /// Requests handed to the service so far.
    seen: AtomicU64,
    /// Requests whose response body has not yet been sent in full (or dropped).
    in_flight: AtomicU64,
    /// Set once a request asked for the connection to close after it, or spoke HTTP/1.0: hyper
    /// ends such a connection itself.
    no_parking: AtomicBool,
}

/// One request's place among its connection's exchanges, held until its response ends.
struct Exchange {
    exchanges: Arc<Exchanges>,
    /// The request's number on the connection, from 0.
    seq: u64,
}

impl Exchanges {
    /// For a connection that must keep its hyper connection to the end.
    fn never_parking() -> Exchanges {
        Exchanges {
            no_parking: AtomicBool::new(true),
            ..Exchanges::default()
        }
    }
}

impl Exchange {
    fn begin<B>(exchanges: &Arc<Exchanges>, req: &Request<B>) -> Exchange {
        if req.version() != Version::HTTP_11 || asks_to_close(req) {
            exchanges.no_parking.store(true, Ordering::Release);
        }
        exchanges.in_flight.fetch_add(1, Ordering::AcqRel);
        Exchange {
            exchanges: exchanges.clone(),
            seq: exchanges.seen.fetch_add(1, Ordering::AcqRel),
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.exchanges.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn asks_to_close<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// A response body that ends its exchange when hyper is done with it.
pub(super) struct TrackedBody {
    inner: Body,
    _exchange: Exchange,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::task::Waker;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream, ReadBuf};

    /// Stands in for hyper's connection: pending until ended gracefully, woken by the test as
    /// hyper's would be when a response body ends.
    #[derive(Default)]
    struct FakeConn {
        ended: bool,
        waker: Arc<Mutex<Option<Waker>>>,
    }

    impl Future for FakeConn {
        type Output = hyper::Result<()>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            if let Ok(mut waker) = self.waker.lock() {
                *waker = Some(cx.waker().clone());
            }
            Poll::Pending
        }
    }

    impl GracefulEnd for FakeConn {
        fn end_gracefully(mut self: Pin<&mut Self>) {
            self.ended = true;
        }
    }

    /// A framing watch that has read `bytes` (all there is) and found its socket empty after
    /// them, as hyper's reader leaves it when it waits for more.
    async fn framing_after(bytes: &[u8]) -> (Arc<FramingVerdict>, FramingWatch<DuplexStream>) {
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        far.write_all(bytes).await.expect("write");
        std::mem::forget(far);
        let (mut watch, verdict) = FramingWatch::new(near);
        let mut read = vec![0u8; bytes.len()];
        watch.read_exact(&mut read).await.expect("read");
        let mut more = [0u8; 16];
        let mut buf = ReadBuf::new(&mut more);
        let polled =
            Pin::new(&mut watch).poll_read(&mut Context::from_waker(Waker::noop()), &mut buf);
        assert!(polled.is_pending(), "nothing more to read");
        (verdict, watch)
    }

    fn request(version: Version, connection: Option<&str>) -> Request<()> {
        let mut req = Request::builder().version(version);
        if let Some(value) = connection {
            req = req.header(header::CONNECTION, value);
        }
        req.body(()).expect("request")
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n";

    /// Long enough for any linger to have run out, several times over (the clock is paused, so
    /// this costs nothing).
    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn a_connection_parks_once_its_only_request_is_answered_and_it_stayed_quiet() {
        let (framing, _io) = framing_after(GET).await;
        let exchanges = Arc::new(Exchanges::default());
        let shutdown = CancellationToken::new();
        let mut conn = FakeConn::default();
        let waker = conn.waker.clone();
        let exchange = Exchange::begin(&exchanges, &request(Version::HTTP_11, None));
        assert!(
            !is_idle(&framing, &exchanges),
            "its answer is still being sent"
        );

        let parked = {
            let mut serving = pin!(serve_until_idle(
                Pin::new(&mut conn),
                &framing,
                &exchanges,
                &shutdown
            ));
            assert!(
                tokio::time::timeout(LONG, serving.as_mut()).await.is_err(),
                "never parked with a request in flight"
            );
            drop(exchange);
            assert!(is_idle(&framing, &exchanges));
            if let Some(waker) = waker.lock().expect("waker").take() {
                waker.wake();
            }
            tokio::time::timeout(LONG, serving).await.expect("it ends")
        };
        assert!(parked.expect("no error"), "ended to be parked");
        assert!(conn.ended, "hyper's connection was ended gracefully");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_inside_a_request_or_asked_to_close_never_parks() {
        for (bytes, version, connection, case) in [
            (&GET[..10], Version::HTTP_11, None, "half a head read"),
            (GET, Version::HTTP_11, Some("close"), "Connection: close"),
            (GET, Version::HTTP_10, None, "HTTP/1.0"),
        ] {
            let (framing, _io) = framing_after(bytes).await;
            let exchanges = Arc::new(Exchanges::default());
            if bytes == GET {
                drop(Exchange::begin(&exchanges, &request(version, connection)));
            }
            assert!(!is_idle(&framing, &exchanges), "{case}");
            let shutdown = CancellationToken::new();
            let mut conn = FakeConn::default();
            let mut serving = pin!(serve_until_idle(
                Pin::new(&mut conn),
                &framing,
                &exchanges,
                &shutdown
            ));
            assert!(
                tokio::time::timeout(LONG, serving.as_mut()).await.is_err(),
                "not parked: {case}"
            );
            shutdown.cancel();
            let parked = tokio::time::timeout(LONG, serving).await.expect("it ends");
            assert!(!parked.expect("no error"), "the shutdown closes it: {case}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pipelined_requests_not_yet_handed_to_the_service_keep_the_connection() {
        // Two requests read, one begun: the second is in hyper's buffer, not on the boundary.
        let (framing, _io) = framing_after(&[GET, GET].concat()).await;
        let exchanges = Arc::new(Exchanges::default());
        drop(Exchange::begin(
            &exchanges,
            &request(Version::HTTP_11, None),
        ));
        assert_eq!(framing.boundary(), Some(2));
        assert!(!is_idle(&framing, &exchanges));
        drop(Exchange::begin(
            &exchanges,
            &request(Version::HTTP_11, None),
        ));
        assert!(is_idle(&framing, &exchanges), "both answered: quiet");
    }

    #[tokio::test(start_paused = true)]
    async fn the_shutdown_ends_a_quiet_connection_for_good_rather_than_parking_it() {
        let (framing, _io) = framing_after(GET).await;
        let exchanges = Arc::new(Exchanges::default());
        drop(Exchange::begin(
            &exchanges,
            &request(Version::HTTP_11, None),
        ));
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let mut conn = FakeConn::default();
        let parked = serve_until_idle(Pin::new(&mut conn), &framing, &exchanges, &shutdown).await;
        assert!(!parked.expect("no error"), "closed, not parked");
        assert!(conn.ended);
    }

    #[test]
    fn close_is_found_among_connection_tokens() {
        let req = |value: &str| {
            Request::builder()
                .header(header::CONNECTION, value)
                .body(())
                .expect("request")
        };
        assert!(asks_to_close(&req("close")));
        assert!(asks_to_close(&req("keep-alive, Close")));
        assert!(!asks_to_close(&req("keep-alive")));
        assert!(!asks_to_close(&req("closed")));
    }
}
