//! `GET /metrics` over HTTP: on the separate listener of `[metrics] listen`, and, with
//! `on_sites`, as `GET {prefix}/metrics` on every site.
//!
//! With `[metrics] token` set, every scrape must send `Authorization: Bearer <token>`, on the
//! listener and on the sites alike; the token is compared through its SHA-256 digest in constant
//! time, as API keys are. The listener is plain HTTP/1.1, meant for loopback or a private
//! network; it serves nothing but `/metrics`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::{self, Body};
use crate::config::Secret;
use crate::store::{Store, now};

/// The media type of the exposition: OpenMetrics text, which Prometheus reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a scraper may take to send its request head on the listener.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers scrapes: checks the token, counts the store's sessions and encodes [`super::global`].
pub struct Exporter {
    token_digest: Option<[u8; 32]>,
    store: Option<Arc<dyn Store>>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("token", &self.token_digest.map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

impl Exporter {
    /// An exporter wanting `token` (when set) and counting sessions in `store` (when given).
    pub fn new(token: Option<&Secret>, store: Option<Arc<dyn Store>>) -> Exporter {
        Exporter {
            token_digest: token.map(|t| Sha256::digest(t.0.as_bytes()).into()),
            store,
        }
    }

    /// Answers a request for the metrics (the path was already matched).
    pub async fn answer<B>(&self, req: &Request<B>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        if !self.authorized(req.headers()) {
            let mut r = text(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"pagegate metrics\""),
            );
            return r;
        }
        let sessions = match &self.store {
            Some(store) => {
                let store = store.clone();
                match tokio::task::spawn_blocking(move || store.count_active_sessions(now())).await
                {
                    Ok(Ok(counts)) => Some(counts),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "metrics: counting active sessions failed");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics: the session count task failed");
                        None
                    }
                }
            }
            None => None,
        };
        let mut out = String::with_capacity(16 * 1024);
        let hears_changes = self.store.as_ref().and_then(|s| s.hears_changes());
        if super::global()
            .encode(&mut out, sessions, hears_changes)
            .is_err()
        {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the metrics could not be encoded\n",
            );
        }
        let mut r = Response::new(body::full(out));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }

    fn authorized(&self, headers: &http::HeaderMap) -> bool {
        let Some(want) = &self.token_digest else {
            return true;
        };
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return false;
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(token) = token else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        given.ct_eq(want).into()
    }
}

fn text(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut r = Response::new(body::full(message));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Serves `/metrics` on `listener` until `shutdown` is cancelled; then stops accepting, lets the
/// scrapes in progress finish, closes idle connections, and returns once they are all gone (each
/// holds the exporter, and with it the store).
pub async fn serve(listener: TcpListener, exporter: Arc<Exporter>, shutdown: CancellationToken) {
    let connections = TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let exporter = exporter.clone();
        let stop = shutdown.clone();
        connections.spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let exporter = exporter.clone();
                async move {
                    Ok::<_, Infallible>(if req.uri().path() == "/metrics" {
                        exporter.answer(&req).await
                    } else {
                        text(StatusCode::NOT_FOUND, "only /metrics is served here\n")
                    })
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "metrics listener: connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}
