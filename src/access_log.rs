//! The access log: one `info` line per request, target `pagegate::access`, written when the
//! response body has been sent to the end, or dropped (the client went away, the stream broke).
//!
//! Fields: `site` and `page` (`""` when none), `method`, `path` (never the query string, which
//! can carry a sign-in link's token or whatever secret a site puts there; under pagegate's own
//! prefix, segments holding an email, as admin API paths do, are written `*`), `status`, `bytes` (of
//! the response body, counted as it streams), `duration_ms` (from the request's arrival to the
//! body's end), `client` (the visitor's address, through trusted proxies), `complete` (whether
//! the whole body was sent) and, only with `[server] access_log_email = true`, `email`: the
//! signed-in visitor of a protected page. Cookies, headers and bodies are never logged.
//!
//! When `[server] access_log = false`, or the `pagegate::access` target is filtered out, nothing
//! here runs: no timestamp is taken and the body is not wrapped.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{Body, BoxError};
use crate::metrics::RequestSeries;

/// The `tracing` target of access log lines.
pub const TARGET: &str = "pagegate::access";

/// Whether access log lines would be written at all under the current log filter.
pub fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// What is known about a request once its response head is ready.
#[derive(Debug)]
pub struct Entry {
    /// When the request arrived.
    pub started: Instant,
    /// The (site, page) it was counted under; names the site and page.
    pub series: Arc<RequestSeries>,
    /// The method.
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// The status answered.
    pub status: StatusCode,
    /// The visitor's address.
    pub client: IpAddr,
    /// The signed-in visitor's email, only when configured.
    pub email: Option<String>,
}

/// `path` with every segment that holds an email (an `@`, plain or percent-encoded) written
/// `*`: for pagegate's own paths, where the admin API names clients by email.
pub fn mask_emails(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            let email = segment.contains('@') || segment.to_ascii_lowercase().contains("%40");
            if email { "*" } else { segment }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Logs `entry` when `response`'s body ends or is dropped.
pub fn wrap(response: Response<Body>, entry: Entry) -> Response<Body> {
    response.map(|inner| {
        LoggedBody {
            inner,
            entry: Some(entry),
            bytes: 0,
        }
        .boxed()
    })
}

/// A response body that counts its bytes and writes the access log line once, at its end.
struct LoggedBody {
    inner: Body,
    /// Taken when the line is written.
    entry: Option<Entry>,
    bytes: u64,
}

impl LoggedBody {
    fn finish(&mut self, complete: bool) {
        let Some(e) = self.entry.take() else {
            return;
        };
        let duration_ms = e.started.elapsed().as_micros() as f64 / 1000.0;
        tracing::info!(
            target: TARGET,
            site = e.series.site(),
            page = e.series.page(),
            method = %e.method,
            path = %e.path,
            status = e.status.as_u16(),
            bytes = self.bytes,
            duration_ms,
            client = %e.client,
            email = e.email.as_deref(),
            complete,
            "request"
        );
    }
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        // An empty body is never polled; one dropped unfinished was cut short.
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}

#[cfg(test)]
mod tests {
    use super::mask_emails;

    #[test]
    fn emails_in_paths_are_masked() {
        assert_eq!(
            mask_emails("/_pagegate/api/v1/pages/course/clients/ann@example.com/revoke"),
            "/_pagegate/api/v1/pages/course/clients/*/revoke"
        );
        assert_eq!(
            mask_emails("/_pagegate/api/v1/pages/course/clients/ann%40example.com"),
            "/_pagegate/api/v1/pages/course/clients/*"
        );
        assert_eq!(mask_emails("/_pagegate/login"), "/_pagegate/login");
        assert_eq!(mask_emails("/"), "/");
    }
}
