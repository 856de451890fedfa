//! Forwarding a request to its site's upstream and streaming the answer back.
//!
//! Bodies are never buffered: hyper's streams pass through with back-pressure both ways, so an
//! upload or download of any size costs a bounded amount of memory. Upgrades (WebSocket) become
//! a byte tunnel once both sides agreed to switch.

mod client;
pub mod headers;

use std::error::Error as _;

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::body::{self, Body};
use crate::config::UpstreamConfig;
use crate::error::HttpError;
use client::UpstreamClient;
pub use headers::Forwarding;

/// One site's upstream: where it is and the pool of connections to it.
pub struct Upstream {
    client: UpstreamClient,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    preserve_host: bool,
    response_timeout: std::time::Duration,
}

impl Upstream {
    /// Prepares the pooled client; no connection is opened until the first request.
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, String> {
        Ok(Upstream {
            client: client::build(config)?,
            scheme: config.scheme.clone(),
            authority: config.authority.clone(),
            preserve_host: config.preserve_host,
            response_timeout: config.response_timeout,
        })
    }

    /// Sends the request upstream and returns the upstream's answer, streaming.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        fwd: &Forwarding<'_>,
    ) -> Result<Response<Body>, HttpError> {
        let client_version = req.version();
        let upgrade = if client_version == Version::HTTP_11 {
            headers::requested_upgrade(req.headers())
        } else {
            None
        };
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

        let headers = req.headers_mut();
        let wants_trailers = headers::remove_hop_by_hop(headers);
        headers::remove_identity_headers(headers, fwd.strip);
        headers::remove_path_overrides(headers);
        if wants_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some(protocol) = &upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol.clone());
        }
        if self.preserve_host {
            headers.insert(header::HOST, fwd.host.clone());
        } else {
            headers.remove(header::HOST);
        }
        headers::set_forwarding(headers, fwd);
        for (name, value) in fwd.identity {
            headers.insert(name.clone(), value.clone());
        }

        *req.uri_mut() = self.upstream_uri(req.uri())?;
        *req.version_mut() = Version::HTTP_11;

        let sent = tokio::time::timeout(self.response_timeout, self.client.request(req)).await;
        let mut response = match sent {
            Err(_) => return Err(HttpError::UpstreamTimeout),
            Ok(Err(e)) => return Err(classify_client_error(&e)),
            Ok(Ok(r)) => r,
        };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                return Err(HttpError::UpstreamUnavailable(
                    "upstream switched protocols without being asked".into(),
                ));
            };
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(tunnel(client_upgrade, upstream_upgrade));
            let (parts, _) = response.into_parts();
            return Ok(Response::from_parts(parts, body::empty()));
        }

        headers::remove_hop_by_hop(response.headers_mut());
        *response.version_mut() = client_version;
        Ok(response.map(body::stream))
    }

    fn upstream_uri(&self, original: &Uri) -> Result<Uri, HttpError> {
        let path_and_query = original
            .path_and_query()
            .filter(|pq| pq.as_str().starts_with('/'))
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| HttpError::BadRequest("The request target is not valid."))
    }
}

/// Copies bytes both ways between the client and the upstream after a 101 answer, until either
/// side closes.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "upgraded connection ended with an error");
    }
}

/// Connect timeouts answer 504 like response timeouts; every other failure to talk to the
/// upstream is a 502. The detail goes to the log, never to the client.
fn classify_client_error(e: &hyper_util::client::legacy::Error) -> HttpError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return HttpError::UpstreamTimeout;
            }
        }
        source = s.source();
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
