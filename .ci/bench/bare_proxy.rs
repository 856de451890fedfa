//! The floor of the stack pagegate is built on: a reverse proxy made of hyper's HTTP/1.1 server
//! and client alone, laid out like pagegate's hot path (one pinned single-threaded runtime per
//! CPU, sockets handed to them in turn, idle upstream connections kept per worker) and setting
//! the same forwarding headers, but with nothing else: no routing, no sign-in, no timeouts, no
//! request-smuggling watch, no metrics, no parking, no graceful shutdown.
//!
//! The proxy benchmark (`.ci/bench-proxy.sh`) runs it beside nginx and pagegate, so that what
//! pagegate's own work costs per request can be told apart from what hyper and tokio cost. It
//! is a measuring instrument, not a product: do not put it in front of anything.
//!
//! ```sh
//! cargo run --release --example bare_proxy -- 127.0.0.1:8081 127.0.0.1:8000
//! ```

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

thread_local! {
    /// Idle upstream connections of this worker.
    static IDLE: RefCell<Vec<http1::SendRequest<Incoming>>> = const { RefCell::new(Vec::new()) };
}

/// The upstream's body, giving its connection back to the worker's idle list once read whole.
struct Pooled {
    sender: Option<http1::SendRequest<Incoming>>,
    body: Incoming,
}

impl Body for Pooled {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        let whole = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.body.is_end_stream(),
            _ => false,
        };
        if whole {
            if let Some(sender) = self.sender.take() {
                IDLE.with(|idle| idle.borrow_mut().push(sender));
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

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// The forwarding headers nginx's benchmark configuration sets, for one client connection.
struct Forwarding {
    address: HeaderValue,
    forwarded: HeaderValue,
}

async fn connect(upstream: SocketAddr) -> std::io::Result<http1::SendRequest<Incoming>> {
    let stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}

fn bad_gateway() -> Response<ProxyBody> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

async fn forward(
    upstream: SocketAddr,
    fwd: &Forwarding,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let idle = IDLE.with(|idle| idle.borrow_mut().pop());
    let mut sender = match idle {
        Some(sender) if !sender.is_closed() => sender,
        _ => match connect(upstream).await {
            Ok(sender) => sender,
            Err(_) => return Ok(bad_gateway()),
        },
    };
    let host = req.headers().get(header::HOST).cloned();
    let headers = req.headers_mut();
    headers.insert(
        HeaderName::from_static("x-forwarded-for"),
        fwd.address.clone(),
    );
    headers.insert(HeaderName::from_static("x-real-ip"), fwd.address.clone());
    headers.insert(header::FORWARDED, fwd.forwarded.clone());
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    if let Some(host) = host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    match sender.send_request(req).await {
        Ok(response) => Ok(response.map(|body| {
            Pooled {
                sender: Some(sender),
                body,
            }
            .boxed()
        })),
        Err(_) => Ok(bad_gateway()),
    }
}

async fn serve(stream: TcpStream, peer: SocketAddr, upstream: SocketAddr) {
    let ip = peer.ip().to_canonical().to_string();
    let Ok(address) = HeaderValue::from_str(&ip) else {
        return;
    };
    let Ok(forwarded) = HeaderValue::from_str(&format!("for={ip};proto=http")) else {
        return;
    };
    let fwd = std::sync::Arc::new(Forwarding { address, forwarded });
    let service = hyper::service::service_fn(move |req| {
        let fwd = fwd.clone();
        async move { forward(upstream, &fwd, req).await }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn usage() -> ! {
    eprintln!("usage: bare_proxy LISTEN_ADDR UPSTREAM_ADDR");
    std::process::exit(2);
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        usage()
    };
    let (Ok(listen), Ok(upstream)) = (listen.parse::<SocketAddr>(), upstream.parse()) else {
        usage()
    };
    let cpus: Vec<usize> = {
        use nix::sched::{CpuSet, sched_getaffinity};
        sched_getaffinity(nix::unistd::Pid::from_raw(0))
            .map(|set| {
                (0..CpuSet::count())
                    .filter(|&c| set.is_set(c).unwrap_or(false))
                    .collect()
            })
            .unwrap_or_default()
    };
    let workers = cpus.len().max(1);
    let mut handles = Vec::with_capacity(workers);
    for i in 0..workers {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        handles.push(runtime.handle().clone());
        let cpu = cpus.get(i).copied();
        std::thread::Builder::new()
            .name(format!("bare-worker-{i}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    let mut set = nix::sched::CpuSet::new();
                    if set.set(cpu).is_ok() {
                        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
                    }
                }
                runtime.block_on(std::future::pending::<()>());
            })?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        let mut turn = 0usize;
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let stream = stream.into_std()?;
            handles[turn % workers].spawn(async move {
                if let Ok(stream) = TcpStream::from_std(stream) {
                    serve(stream, peer, upstream).await;
                }
            });
            turn += 1;
        }
    })
}
