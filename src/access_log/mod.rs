//! The access log: one line per request, written when the response body has been sent to the
//! end, or dropped (the client went away, the stream broke).
//!
//! Fields: `site` and `page` (`""` when none), `method`, `path` (never the query string, which
//! can carry a sign-in link's token or whatever secret a site puts there; under pagegate's own
//! prefix, segments holding an email, as admin API paths do, are written `*`), `status`, `bytes` (of
//! the response body, counted as it streams), `duration_ms` (from the request's arrival to the
//! body's end), `client` (the visitor's address, through trusted proxies), `complete` (whether
//! the whole body was sent) and, only with `[server] access_log_email = true`, `email`: the
//! signed-in visitor of a protected page. Cookies, headers and bodies are never logged.
//!
//! The lines look like the `info` events with target `pagegate::access` they used to be, in the
//! process's log format ([`set_format`]), and that target in `PAGEGATE_LOG` still turns them
//! off; but they do not go through `tracing`, whose formatting and unbuffered write on the
//! request's worker cost a fifth of the proxy's throughput. The worker formats its line into a
//! reused buffer ([`line`]) and hands it to one writer thread ([`writer`]) that writes batches to
//! stderr or `[server] access_log_path`.
//!
//! **Drop, never block.** A worker never waits for the log: when the writer is behind by
//! [`writer::MAX_WAITING`] bytes (the disk or the stderr reader does not keep up), new lines are
//! dropped and counted in `pagegate_access_log_dropped_total`, with a warning in the log at
//! most every [`writer::WARN_INTERVAL`]. Lines wait at most [`writer::FLUSH_INTERVAL`]; a
//! gateway's shutdown and the binary's exit [`flush`] them, so every request that ended before
//! the stop has its line.
//!
//! When `[server] access_log = false`, or the `pagegate::access` target is filtered out, nothing
//! here runs: no timestamp is taken and the body is not wrapped.

pub mod line;
pub mod writer;

use std::cell::RefCell;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Method, Response, StatusCode, Uri};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{Body, BoxError};
use crate::metrics::RequestSeries;
pub use line::Format;
pub use writer::{Output, flush, report_drops};

/// The target that `PAGEGATE_LOG` names to filter access log lines.
pub const TARGET: &str = "pagegate::access";

/// Whether access log lines would be written at all under the current log filter.
pub fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// Whether lines are written as JSON; set once, by the binary's logging set-up.
static JSON: AtomicBool = AtomicBool::new(false);

/// Writes lines in `format` from now on, to match the rest of the process's log.
pub fn set_format(format: Format) {
    JSON.store(format == Format::Json, Ordering::Relaxed);
}

fn format() -> Format {
    if JSON.load(Ordering::Relaxed) {
        Format::Json
    } else {
        Format::Text
    }
}

/// Sends lines to `output` from the next batch on; a gateway calls it at start and at each
/// reload, which reopens the file (for log rotation). One destination per process: the last
/// gateway started or reloaded decides.
pub fn use_output(output: Output) {
    writer::switch(output);
}

/// How long the binary's exit waits for the access log to be written.
pub const EXIT_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// What is known about a request once its response head is ready.
#[derive(Debug)]
pub struct Entry {
    /// When the request arrived.
    pub started: Instant,
    /// The (site, page) it was counted under; names the site and page.
    pub series: Arc<RequestSeries>,
    /// The method.
    pub method: Method,
    /// The request's target; only its path is logged.
    pub uri: Uri,
    /// Whether the path is pagegate's own, where segments holding an email are masked.
    pub mask_emails: bool,
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

thread_local! {
    /// Each thread's line, reused: formatting a line allocates nothing once it has grown.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Formats `entry`'s line and hands it to the writer.
fn log(entry: Entry, bytes: u64, complete: bool) {
    let micros = entry.started.elapsed().as_micros();
    let masked;
    let path = if entry.mask_emails {
        masked = mask_emails(entry.uri.path());
        masked.as_str()
    } else {
        entry.uri.path()
    };
    let fields = line::Fields {
        site: entry.series.site(),
        page: entry.series.page(),
        method: entry.method.as_str(),
        path,
        status: entry.status.as_u16(),
        bytes,
        duration_micros: u64::try_from(micros).unwrap_or(u64::MAX),
        client: entry.client,
        email: entry.email.as_deref(),
        complete,
    };
    LINE.with_borrow_mut(|buf| {
        buf.clear();
        line::write(buf, format(), SystemTime::now(), &fields);
        writer::push(buf);
    });
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
        if let Some(entry) = self.entry.take() {
            log(entry, self.bytes, complete);
        }
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
