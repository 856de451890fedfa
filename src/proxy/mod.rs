//! Forwarding a request to its site's upstream and streaming the answer back.
//!
//! Bodies are never buffered: hyper's streams pass through with back-pressure both ways, so an
//! upload or download of any size costs a bounded amount of memory. Upgrades (WebSocket) become
//! a byte tunnel once both sides agreed to switch ([`tunnel`]).

mod client;
pub mod headers;
mod tunnel;
pub use tunnel::{Access, Lease};

use std::error::Error as _;

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::body::{self, Body};
use crate::config::UpstreamConfig;
use crate::error::HttpError;
use crate::runtime::coarse_timer;
use client::{ClientError, PooledBody, UpstreamClient};
pub use headers::Forwarding;

/// One site's upstream: where it is and the pool of connections to it.
pub struct Upstream {
    client: UpstreamClient,
    /// The Host the upstream is sent unless `preserve_host`.
    authority: HeaderValue,
    preserve_host: bool,
    response_timeout: std::time::Duration,
}

impl Upstream {
    /// Prepares the pooled client; no connection is opened until the first request.
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, String> {
        Ok(Upstream {
            client: client::build(config)?,
            authority: HeaderValue::from_str(config.authority.as_str())
                .map_err(|e| format!("{}: {e}", config.authority))?,
            preserve_host: config.preserve_host,
            response_timeout: config.response_timeout,
        })
    }

    /// Closes idle pooled connections past their idle timeout; returns how many.
    pub fn prune_idle(&self) -> usize {
        self.client.prune_idle()
    }

    /// Sends the request upstream and returns the upstream's answer, streaming. Not an
    /// `async fn`, like [`crate::gateway::Gateway::handle`].
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn doubles the request in its state"
    )]
    pub fn forward(
        &self,
        mut req: Request<Incoming>,
        fwd: &Forwarding<'_>,
    ) -> impl Future<Output = Result<Response<Body>, HttpError>> {
        async move {
            let client_version = req.version();
            let upgrade = if client_version == Version::HTTP_11 {
                headers::requested_upgrade(req.headers())
            } else {
                None
            };
            // What the tunnel will need, taken off the request before it goes upstream: the
            // client's side of the switch, the connection's lease (from the server) and, on a
            // protected page, the access watch (from the gate).
            let tunnel_terms = upgrade.as_ref().map(|_| {
                let extensions = req.extensions_mut();
                let lease = extensions.remove::<Lease>();
                let access = extensions.remove::<Access>();
                (hyper::upgrade::on(&mut req), lease, access)
            });

            let headers = req.headers_mut();
            let wants_trailers = headers::remove_hop_by_hop(headers);
            headers::remove_client_claims(headers, fwd.strip, fwd.peer_trusted);
            // Room for the headers added below in one step: a typical request's map was sized for
            // its own few headers and would otherwise grow, rehashing, two or three times.
            let _ = headers.try_reserve(8 + fwd.identity.len());
            if wants_trailers {
                headers.insert(header::TE, HeaderValue::from_static("trailers"));
            }
            if let Some(protocol) = &upgrade {
                headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                headers.insert(header::UPGRADE, protocol.clone());
            }
            let host = if self.preserve_host {
                fwd.host
            } else {
                &self.authority
            };
            headers.insert(header::HOST, host.clone());
            headers::set_forwarding(headers, fwd);
            for (name, value) in fwd.identity {
                headers.insert(name.clone(), value.clone());
            }

            *req.uri_mut() = origin_form(req.uri());
            *req.version_mut() = Version::HTTP_11;

            // On the worker's coarse timer: armed on every request, it almost never fires.
            let sent = coarse_timer::timeout(
                self.response_timeout,
                self.client.send(req, upgrade.is_some()),
            )
            .await;
            let (mut response, checkin) = match sent {
                Err(_) => return Err(HttpError::UpstreamTimeout),
                Ok(Err(e)) => return Err(classify_client_error(e)),
                Ok(Ok(answer)) => answer,
            };

            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                let Some((client_upgrade, lease, access)) = tunnel_terms else {
                    return Err(HttpError::UpstreamUnavailable(
                        "upstream switched protocols without being asked".into(),
                    ));
                };
                let upstream_upgrade = hyper::upgrade::on(&mut response);
                tokio::spawn(tunnel::run(client_upgrade, upstream_upgrade, lease, access));
                let (parts, _) = response.into_parts();
                return Ok(Response::from_parts(parts, body::empty()));
            }

            headers::remove_hop_by_hop(response.headers_mut());
            *response.version_mut() = client_version;
            Ok(response.map(|incoming| body::boxed(PooledBody::new(incoming, checkin))))
        }
    }
}

/// The request target as the upstream sees it: the path and query alone (origin form), whatever
/// form the client used; the upstream's authority travels in `Host`.
fn origin_form(original: &Uri) -> Uri {
    let path_and_query = original
        .path_and_query()
        .filter(|pq| pq.as_str().starts_with('/'))
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::from(path_and_query)
}

/// Connect timeouts answer 504 like response timeouts; every other failure to talk to the
/// upstream is a 502. The detail goes to the log, never to the client.
fn classify_client_error(e: ClientError) -> HttpError {
    match &e {
        ClientError::ConnectTimeout => return HttpError::UpstreamTimeout,
        ClientError::Connect(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            return HttpError::UpstreamTimeout;
        }
        _ => {}
    }
    let mut detail = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    HttpError::UpstreamUnavailable(detail)
}
