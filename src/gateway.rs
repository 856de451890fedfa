//! The request's journey: edge checks → pagegate's own endpoints → site by host → upstream.
//!
//! [`Gateway::handle`] only logs and turns errors into pages; [`Gateway::route`] holds the logic
//! and returns `Result` so each step can bail out with `?`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use ipnet::IpNet;

use crate::api::Api;
use crate::auth::forward::{self, Edge};
use crate::auth::watch::WatchedBody;
use crate::auth::{Auth, Gate, Identity, Visitor, cookies};
use crate::body::{self, Body};
use crate::config::{Config, PageCache};
use crate::error::HttpError;
use crate::metrics::{Exporter, RequestSeries, SiteMetrics};
use crate::proxy::{Forwarding, Upstream, headers};
use crate::routing::path::PageMatcher;
use crate::routing::{Router, SiteId, normalize_host};
use crate::{access_log, metrics, ui};

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The site chosen by the TLS server name, if the client sent one that matched.
    pub sni_site: Option<SiteId>,
}

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    router: Arc<Router>,
    sites: Vec<SiteRuntime>,
    prefix: String,
    healthz: String,
    trusted_proxies: Vec<IpNet>,
    /// Port of the HTTPS listener, for redirects.
    https_port: Option<u16>,
    /// The sign-in flow; `None` only for gateways built without a store (no protected pages).
    auth: Option<Arc<Auth>>,
    /// The grant endpoint, admin API and admin page.
    api: Option<Arc<Api>>,
    identity: IdentityHeaders,
    /// `{prefix}/metrics` on every site, when `[metrics] on_sites` is set.
    metrics: Option<Arc<Exporter>>,
    /// Requests that reached no site, counted under `site=""`.
    unrouted: Arc<RequestSeries>,
    /// `[server] access_log`.
    access_log: bool,
    /// `[server] access_log_email`.
    access_log_email: bool,
}

struct SiteRuntime {
    name: String,
    upstream: Upstream,
    has_tls: bool,
    redirect_http: bool,
    pages: PageMatcher,
    /// By page index: whether its answers are `no-store` rather than `private`.
    no_store: Vec<bool>,
    metrics: SiteMetrics,
}

/// What [`Gateway::route`] learnt about a request, for the metrics and the access log.
#[derive(Default)]
struct RequestNote {
    site: Option<SiteId>,
    /// The first protected page the path falls under (an index into the site's pages).
    page: Option<usize>,
    /// The visitor's address, through trusted proxies.
    client: Option<IpAddr>,
    /// The signed-in visitor, kept only when the access log names them.
    email: Option<String>,
}

impl Gateway {
    /// Builds the routing table and one upstream client per site.
    pub fn new(
        config: &Config,
        https_port: Option<u16>,
        auth: Option<Arc<Auth>>,
        api: Option<Arc<Api>>,
    ) -> Result<Gateway, String> {
        let mut sites = Vec::with_capacity(config.sites.len());
        for site in &config.sites {
            let upstream =
                Upstream::new(&site.upstream).map_err(|e| format!("site {}: {e}", site.name))?;
            let page_ids: Vec<&str> = site.pages.iter().map(|p| p.id.as_str()).collect();
            sites.push(SiteRuntime {
                name: site.name.clone(),
                upstream,
                has_tls: site.tls.is_some(),
                redirect_http: site.redirect_http,
                pages: PageMatcher::new(&site.pages),
                no_store: site
                    .pages
                    .iter()
                    .map(|p| p.cache == PageCache::NoStore)
                    .collect(),
                metrics: metrics::global().site(&site.name, &page_ids),
            });
        }
        for net in config
            .server
            .trusted_proxies
            .iter()
            .filter(|n| n.prefix_len() == 0)
        {
            tracing::warn!(
                %net,
                "server.trusted_proxies trusts every address: any client can set the address \
                 and scheme pagegate and the upstream believe; list the front proxies' own \
                 addresses instead"
            );
        }
        let exporter = config.metrics.on_sites.then(|| {
            Arc::new(Exporter::new(
                config.metrics.token.as_ref(),
                auth.as_ref().map(|a| a.store().clone()),
            ))
        });
        Ok(Gateway {
            router: Arc::new(Router::new(config)),
            sites,
            prefix: config.server.prefix.clone(),
            healthz: format!("{}/healthz", config.server.prefix),
            trusted_proxies: config.server.trusted_proxies.clone(),
            https_port,
            auth,
            api,
            identity: IdentityHeaders {
                enabled: config.auth.identity_headers,
                names: vec![
                    config.auth.email_header.clone(),
                    config.auth.name_header.clone(),
                    config.auth.page_header.clone(),
                ],
            },
            metrics: exporter,
            unrouted: metrics::global().unrouted(),
            access_log: config.server.access_log,
            access_log_email: config.server.access_log_email,
        })
    }

    /// The sign-in flow, if the gateway has one.
    pub fn auth(&self) -> Option<&Arc<Auth>> {
        self.auth.as_ref()
    }

    /// Closes the upstream connections that have idled past their timeout, on every site.
    pub fn prune_idle_upstreams(&self) -> usize {
        self.sites.iter().map(|s| s.upstream.prune_idle()).sum()
    }

    /// The admin interfaces, if the gateway has them.
    pub fn api(&self) -> Option<&Arc<Api>> {
        self.api.as_ref()
    }

    /// Host routing, shared with the TLS certificate resolver.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Answers one request; never fails, errors become pages.
    ///
    /// This and the functions it awaits on a proxied request's way (`route`,
    /// `Upstream::forward`, the upstream client's `send`) return `async move` blocks instead of
    /// being `async fn`s: an `async fn` keeps its arguments in its state and then a second copy
    /// of the request (264 bytes) once the body takes it, at every level. The nested future
    /// is moved into place on every request; this halved it (4.6 KiB to 2.2 KiB).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn doubles the request in its state"
    )]
    pub fn handle(
        &self,
        req: Request<Incoming>,
        conn: ConnectionInfo,
    ) -> impl Future<Output = Response<Body>> {
        async move {
            let started = self.access_log_started();
            // Kept for the log lines; both are shared, not copied.
            let method = req.method().clone();
            let uri = req.uri().clone();
            let mut note = RequestNote::default();
            let response = match self.route(req, conn, &mut note).await {
                Ok(response) => response,
                Err(err) => error_response(&err, &method, &self.path_for_log(uri.path()), conn),
            };
            self.finish(response, note, started, conn, method, &uri)
        }
    }

    /// Answers a request the connection layer already found unacceptable.
    pub fn refuse<B>(
        &self,
        err: HttpError,
        req: &Request<B>,
        conn: ConnectionInfo,
    ) -> Response<Body> {
        let started = self.access_log_started();
        let path = self.path_for_log(req.uri().path());
        let response = error_response(&err, req.method(), &path, conn);
        let method = req.method().clone();
        self.finish(
            response,
            RequestNote::default(),
            started,
            conn,
            method,
            req.uri(),
        )
    }

    /// The path as logs show it: pagegate's own paths with any email in them masked, since the
    /// admin API names clients by email.
    fn path_for_log(&self, path: &str) -> String {
        if under_prefix(path, &self.prefix).is_some() {
            access_log::mask_emails(path)
        } else {
            path.to_owned()
        }
    }

    /// When the access log is on (in the config and in the log filter), the request's start.
    fn access_log_started(&self) -> Option<Instant> {
        (self.access_log && access_log::enabled()).then(Instant::now)
    }

    /// Counts the answer and, when the access log is on, arranges its line for the body's end.
    fn finish(
        &self,
        response: Response<Body>,
        note: RequestNote,
        started: Option<Instant>,
        conn: ConnectionInfo,
        method: Method,
        uri: &http::Uri,
    ) -> Response<Body> {
        let series = match note.site.and_then(|id| self.sites.get(id)) {
            Some(site) => site.metrics.series(note.page),
            None => &self.unrouted,
        };
        series.count(response.status());
        let Some(started) = started else {
            return response;
        };
        let entry = access_log::Entry {
            started,
            series: series.clone(),
            method,
            uri: uri.clone(),
            mask_emails: under_prefix(uri.path(), &self.prefix).is_some(),
            status: response.status(),
            client: note.client.unwrap_or_else(|| conn.peer.ip().to_canonical()),
            email: note.email,
        };
        access_log::wrap(response, entry)
    }

    /// Not an `async fn`, like [`Gateway::handle`].
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn doubles the request in its state"
    )]
    fn route(
        &self,
        mut req: Request<Incoming>,
        conn: ConnectionInfo,
        note: &mut RequestNote,
    ) -> impl Future<Output = Result<Response<Body>, HttpError>> {
        async move {
            check_framing(&req)?;
            if req.method() == Method::CONNECT {
                return Err(HttpError::BadRequest(
                    "CONNECT is not supported by this server.",
                ));
            }
            if req.uri().path() == self.healthz {
                return Ok(healthz(req.method()));
            }
            // Forward-auth questions describe another request, for any host: answered before the
            // question's own Host chooses a site.
            if let Some(edge) =
                under_prefix(req.uri().path(), &self.prefix).and_then(Edge::for_endpoint)
            {
                return self
                    .forward_auth(edge, &req, conn, note)
                    .await
                    .map(never_stored_by_default);
            }
            let raw_host = request_host(&req)?;
            let host = raw_host
                .to_str()
                .ok()
                .and_then(normalize_host)
                .ok_or(HttpError::BadRequest("The Host header is not valid."))?;
            let site_id = self
                .router
                .site_for_host(&host)
                .ok_or(HttpError::UnknownHost)?;
            let site = &self.sites[site_id];
            note.site = Some(site_id);
            // Over TLS, only the site the handshake was for, and only sites that have a
            // certificate: a client that sent no server name cannot reach a plain-HTTP-only site
            // this way.
            if conn.tls && (!site.has_tls || conn.sni_site.is_some_and(|sni| sni != site_id)) {
                return Err(HttpError::Misdirected);
            }
            if !conn.tls && site.redirect_http {
                if let Some(port) = self.https_port {
                    return Ok(redirect_to_https(&host, port, req.uri()));
                }
            }
            let peer_trusted = is_trusted(&self.trusted_proxies, conn.peer.ip());
            let visitor = Visitor {
                ip: client_ip(&req, conn, &self.trusted_proxies),
                secure: conn.tls || (peer_trusted && forwarded_proto_is_https(&req)),
            };
            note.client = Some(visitor.ip);
            if let Some(sub_path) = under_prefix(req.uri().path(), &self.prefix) {
                // pagegate's own endpoints are boxed: their futures are large and rare, and
                // inline they would make every proxied request's future (moved into place per
                // request) as large as the largest of them.
                let sub_path = sub_path.to_owned();
                // HTTP/2 requests carry their authority in `:authority`, not `Host`; checks that
                // compare with the request's own origin read it from `Host`.
                if !req.headers().contains_key(header::HOST) {
                    req.headers_mut().insert(header::HOST, raw_host.clone());
                }
                return Box::pin(self.own_endpoint(site_id, &sub_path, req, visitor))
                    .await
                    .map(never_stored_by_default);
            }
            let mut identity = None;
            let mut no_store = false;
            if !site.pages.is_empty() {
                let protected = site
                    .pages
                    .pages_for(req.uri().path())
                    .map_err(|e| HttpError::BadRequest(e.0))?;
                if !protected.is_empty() {
                    note.page = protected.first().copied();
                    let Some(auth) = &self.auth else {
                        return Err(HttpError::Unauthorized);
                    };
                    match auth.gate(site_id, &protected, &req, visitor).await? {
                        Gate::Allow(who) => {
                            if self.access_log_email {
                                note.email = Some(who.email.clone());
                            }
                            no_store = protected
                                .iter()
                                .any(|&i| site.no_store.get(i).copied().unwrap_or(true));
                            if is_upgrade(&req) {
                                // A tunnel no request will check again: watched from the start,
                                // and handed to the proxy with the request.
                                let watched = auth
                                    .watch(site_id, &who.session, who.pages.clone())
                                    .map_err(|e| HttpError::Internal(format!("store: {e}")))?;
                                match watched {
                                    Some(watched) => req
                                        .extensions_mut()
                                        .insert(crate::proxy::Access(watched.signal())),
                                    None => return Ok(auth.sign_in_required(&req)),
                                };
                            }
                            identity = Some(who);
                        }
                        Gate::Deny(response) => return Ok(response),
                    }
                }
            }
            cookies::strip_own(req.headers_mut());
            let identity_headers = identity
                .as_ref()
                .map(|who| self.identity.headers_for(who))
                .unwrap_or_default();
            let fwd = Forwarding {
                peer: conn.peer,
                peer_trusted,
                proto: if visitor.secure { "https" } else { "http" },
                host: &raw_host,
                strip: &self.identity.names,
                identity: &identity_headers,
            };
            let forwarded_at = Instant::now();
            let mut response = site
                .upstream
                .forward(req, &fwd)
                .await
                .inspect(|_| site.metrics.observe_upstream(forwarded_at.elapsed()))
                .inspect_err(|e| {
                    if e.is_server_side() {
                        tracing::debug!(site = %site.name, "upstream error");
                    }
                })?;
            let Some(who) = identity else {
                return Ok(response);
            };
            headers::keep_from_shared_caches(response.headers_mut(), no_store);
            // A protected body may stream for as long as the upstream likes: it is cut off when
            // access ends (it joins the watch only if it is still streaming after a second).
            match &self.auth {
                Some(auth) if !http_body::Body::is_end_stream(response.body()) => {
                    let auth = auth.clone();
                    Ok(response.map(|inner| {
                        body::boxed(WatchedBody::new(
                            inner,
                            auth,
                            site_id,
                            who.session,
                            who.pages,
                        ))
                    }))
                }
                _ => Ok(response),
            }
        }
    }

    /// A forward-auth question from an edge proxy (see [`forward`]): may the request it
    /// describes pass? The same decision as the full proxy makes on that request: the site by
    /// its host, its pages by the same matcher, the same sessions. Only a trusted proxy may ask;
    /// anything that cannot be read for sure is refused, never allowed.
    async fn forward_auth<B>(
        &self,
        edge: Edge,
        req: &Request<B>,
        conn: ConnectionInfo,
        note: &mut RequestNote,
    ) -> Result<Response<Body>, HttpError> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Ok(crate::ui::method_not_allowed("GET, HEAD"));
        }
        if !is_trusted(&self.trusted_proxies, conn.peer.ip()) {
            return Err(HttpError::Forbidden(
                "Only the front proxies in server.trusted_proxies may ask this.",
            ));
        }
        let original = forward::read_original(req.headers(), edge).map_err(|e| {
            tracing::debug!(peer = %conn.peer, error = %e, "forward-auth question refused");
            HttpError::BadRequest(e.public_message())
        })?;
        let site_id = self
            .router
            .site_for_host(&original.host)
            .ok_or(HttpError::UnknownHost)?;
        note.site = Some(site_id);
        let site = &self.sites[site_id];
        let visitor = Visitor {
            ip: client_ip(req, conn, &self.trusted_proxies),
            secure: original.secure,
        };
        note.client = Some(visitor.ip);
        if site.pages.is_empty() {
            return Ok(forward::allowed(&[]));
        }
        let protected = site
            .pages
            .pages_for(&original.target)
            .map_err(|e| HttpError::BadRequest(e.0))?;
        if protected.is_empty() {
            return Ok(forward::allowed(&[]));
        }
        note.page = protected.first().copied();
        let Some(auth) = &self.auth else {
            return Err(HttpError::Unauthorized);
        };
        match auth
            .signed_in(site_id, &protected, req.headers(), visitor)
            .await?
        {
            Some(who) => {
                let identity = self.identity.headers_for(&who);
                if self.access_log_email {
                    note.email = Some(who.email);
                }
                Ok(forward::allowed(&identity))
            }
            None => Ok(forward::sign_in(
                edge,
                crate::auth::wants_page(&original.method, req.headers()),
                &original.url_of(&auth.login_location(&original.target)),
                auth.sign_in_json(),
            )),
        }
    }

    /// pagegate's own endpoints under the prefix: metrics, the API, the admin page and the
    /// sign-in flow.
    async fn own_endpoint(
        &self,
        site_id: SiteId,
        sub_path: &str,
        req: Request<Incoming>,
        visitor: Visitor,
    ) -> Result<Response<Body>, HttpError> {
        if let (Some(exporter), "/metrics") = (&self.metrics, sub_path) {
            return Ok(exporter.answer(&req).await);
        }
        if let (Some(api), Some(rest)) = (&self.api, section(sub_path, "/api/v1")) {
            return api.handle_api(site_id, rest, req, visitor).await;
        }
        if let (Some(api), Some(rest)) = (&self.api, section(sub_path, "/admin")) {
            return api.handle_admin_page(site_id, rest, req, visitor).await;
        }
        match &self.auth {
            Some(auth) => auth.endpoint(site_id, sub_path, req, visitor).await,
            None => Err(HttpError::NotFound),
        }
    }
}

/// pagegate's own answers speak of one visitor (forms with their anti-forgery token, a
/// visitor's sign-in state, an admin's lists), and even a plain 404 or 405 is storable by
/// default: whatever an endpoint did not mark otherwise is `no-store`.
fn never_stored_by_default(mut response: Response<Body>) -> Response<Body> {
    if !response.headers().contains_key(header::CACHE_CONTROL) {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Whether the request asks to switch protocols (a WebSocket): hyper marks such HTTP/1.1
/// requests, and only those, with the means to take the connection over.
fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.extensions()
        .get::<hyper::upgrade::OnUpgrade>()
        .is_some()
}

/// The identity headers the upstream receives, and every spelling a client must not send.
#[derive(Debug, Clone)]
struct IdentityHeaders {
    enabled: bool,
    /// email, name, page.
    names: Vec<HeaderName>,
}

impl IdentityHeaders {
    fn headers_for(&self, who: &Identity) -> Vec<(HeaderName, HeaderValue)> {
        if !self.enabled {
            return Vec::new();
        }
        let values = RecentIdentities::values(who);
        let mut headers = Vec::with_capacity(values.len());
        for (name, value) in self.names.iter().zip(values) {
            if let Some(value) = value {
                headers.push((name.clone(), value));
            }
        }
        headers
    }
}

/// The identity header values (email, name, page ids) a thread built last, so that a visitor's
/// run of requests (a page and its assets) encodes them once: a hit costs three comparisons and
/// three reference counts instead of encoding and copying three values.
///
/// Keyed by everything the values are made of, not by the session alone: a name changed in
/// the client list, or another page, makes new values at once. Direct-mapped by the session
/// hash, per thread: no locking, a fixed few KiB per worker, and a visitor whose slot another
/// took simply encodes again.
struct RecentIdentities;

const RECENT_IDENTITY_SLOTS: usize = 64;

type IdentityValues = [Option<HeaderValue>; 3];

struct IdentitySlot {
    email: String,
    name: String,
    pages: Vec<String>,
    values: IdentityValues,
}

thread_local! {
    static RECENT_IDENTITIES: std::cell::RefCell<Vec<Option<IdentitySlot>>> =
        std::cell::RefCell::new((0..RECENT_IDENTITY_SLOTS).map(|_| None).collect());
}

impl RecentIdentities {
    fn values(who: &Identity) -> IdentityValues {
        RECENT_IDENTITIES
            .try_with(|recent| {
                let Ok(mut recent) = recent.try_borrow_mut() else {
                    return identity_values(who);
                };
                let slot = &mut recent[usize::from(who.session[0]) % RECENT_IDENTITY_SLOTS];
                if let Some(kept) = slot.as_ref().filter(|kept| {
                    kept.email == who.email && kept.name == who.name && kept.pages == who.pages
                }) {
                    return kept.values.clone();
                }
                let values = identity_values(who);
                *slot = Some(IdentitySlot {
                    email: who.email.clone(),
                    name: who.name.clone(),
                    pages: who.pages.clone(),
                    values: values.clone(),
                });
                values
            })
            .unwrap_or_else(|_| identity_values(who))
    }
}

/// An address may be UTF-8 (a local part in Cyrillic, an IDN domain): like the name, it is
/// percent-encoded rather than dropped, so the site never sees a signed-in request without an
/// email. ASCII addresses without `%` pass unchanged.
fn identity_values(who: &Identity) -> IdentityValues {
    [
        header_text(&who.email),
        header_text(&who.name),
        HeaderValue::from_maybe_shared(bytes::Bytes::from(who.pages.join(","))).ok(),
    ]
}

/// Header values are ASCII: a name with other characters (Ann, Анна) is sent percent-encoded
/// as UTF-8, as are `%` and control characters, so it can always be decoded back exactly.
/// Built on every signed-in request: text with nothing to encode (nearly every address and
/// name) is copied once, straight into the value, and encoded text is not copied again.
fn header_text(text: &str) -> Option<HeaderValue> {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    match std::borrow::Cow::from(percent_encoding::utf8_percent_encode(text, KEEP)) {
        std::borrow::Cow::Borrowed(plain) => HeaderValue::from_str(plain).ok(),
        std::borrow::Cow::Owned(encoded) => {
            HeaderValue::from_maybe_shared(bytes::Bytes::from(encoded)).ok()
        }
    }
}

fn is_trusted(trusted_proxies: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    trusted_proxies.iter().any(|net| net.contains(&ip))
}

/// The visitor's address. From an untrusted peer, the peer itself. From a trusted front proxy,
/// `X-Forwarded-For` is walked from its end, where each trusted hop appended the address it saw,
/// past every address that is itself a trusted proxy (a CDN in front of a load balancer): the
/// first address that is not is the visitor. Entries left of it were written by the visitor and
/// are never believed. An entry that is no address ends the walk at the last trusted hop.
fn client_ip<B>(req: &Request<B>, conn: ConnectionInfo, trusted_proxies: &[IpNet]) -> IpAddr {
    let mut client = conn.peer.ip().to_canonical();
    if !is_trusted(trusted_proxies, client) {
        return client;
    }
    let chain = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for entry in chain.rev() {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            return client;
        };
        client = ip.to_canonical();
        if !is_trusted(trusted_proxies, client) {
            return client;
        }
    }
    client
}

fn forwarded_proto_is_https<B>(req: &Request<B>) -> bool {
    req.headers()
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// Logs an error at the level its side deserves and renders its page.
fn error_response(
    err: &HttpError,
    method: &Method,
    path: &str,
    conn: ConnectionInfo,
) -> Response<Body> {
    if err.is_server_side() {
        tracing::warn!(peer = %conn.peer, %method, path, error = %err, "request failed");
    } else {
        tracing::debug!(peer = %conn.peer, %method, path, error = %err, "request refused");
    }
    ui::error_page(err.status(), err.public_message())
}

/// Requests whose length is ambiguous are refused before anything reads their body: a front and a
/// back end that disagree about where a request ends is how request smuggling works.
fn check_framing<B>(req: &Request<B>) -> Result<(), HttpError> {
    let headers = req.headers();
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        if lengths.next().is_some() {
            return Err(HttpError::BadRequest(
                "The request has more than one Content-Length.",
            ));
        }
        let digits = first.as_bytes();
        if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(HttpError::BadRequest(
                "The request's Content-Length is not a number.",
            ));
        }
        if headers.contains_key(header::TRANSFER_ENCODING) {
            return Err(HttpError::BadRequest(
                "The request has both Content-Length and Transfer-Encoding.",
            ));
        }
    }
    Ok(())
}

/// The host the request names. In absolute form (HTTP/1.1) or HTTP/2, the URI authority and the
/// Host header must agree, so neither can be used to reach a site the other does not name.
/// The value is the client's own (shared, not copied): it is forwarded as it came.
fn request_host<B>(req: &Request<B>) -> Result<HeaderValue, HttpError> {
    let mut host_headers = req.headers().get_all(header::HOST).iter();
    let header_host = host_headers.next();
    if host_headers.next().is_some() {
        return Err(HttpError::BadRequest(
            "The request has more than one Host header.",
        ));
    }
    let header_host = header_host
        .map(|v| {
            v.to_str()
                .map(|text| (v, text))
                .map_err(|_| HttpError::BadRequest("The Host header is not valid."))
        })
        .transpose()?;
    let authority = req.uri().authority().map(|a| a.as_str());
    match (authority, header_host) {
        (Some(a), Some((value, h))) => {
            let same = normalize_host(a).is_some()
                && normalize_host(a) == normalize_host(h)
                && port_of(a) == port_of(h);
            if !same {
                return Err(HttpError::BadRequest(
                    "The request target and the Host header disagree.",
                ));
            }
            Ok(value.clone())
        }
        (Some(a), None) => HeaderValue::from_str(a)
            .map_err(|_| HttpError::BadRequest("The request target is not valid.")),
        (None, Some((value, _))) => Ok(value.clone()),
        (None, None) => Err(HttpError::BadRequest("The request has no Host header.")),
    }
}

fn port_of(host: &str) -> Option<&str> {
    let after_bracket = host.rfind(']').map_or(host, |i| &host[i..]);
    after_bracket.rsplit_once(':').map(|(_, p)| p)
}

/// The rest of `path` after `section` when `path` is `section` itself or below it.
fn section<'a>(path: &'a str, section: &str) -> Option<&'a str> {
    under_prefix(path, section)
}

/// The rest of `path` after `prefix` when `path` is `prefix` itself or below it.
fn under_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// `308` to the same path on HTTPS; 308 keeps the method and body of a POST.
fn redirect_to_https(host: &str, port: u16, uri: &http::Uri) -> Response<Body> {
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    let mut r = Response::new(body::empty());
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => *r.status_mut() = StatusCode::BAD_REQUEST,
    }
    r
}

fn healthz(method: &Method) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = Response::new(body::empty());
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = Response::new(body::full("ok\n"));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn identity_headers_follow_the_client_list_even_when_kept_for_a_session() {
        let identity = IdentityHeaders {
            enabled: true,
            names: ["x-pagegate-email", "x-pagegate-name", "x-pagegate-page"]
                .map(HeaderName::from_static)
                .to_vec(),
        };
        let who = |name: &str| Identity {
            email: "ann@example.com".into(),
            name: name.into(),
            pages: vec!["course".into(), "extra".into()],
            session: [7; 32],
        };
        let sent = |who: &Identity| -> Vec<String> {
            identity
                .headers_for(who)
                .iter()
                .map(|(n, v)| format!("{n}: {}", v.to_str().expect("ascii")))
                .collect()
        };
        let first = sent(&who("Ann"));
        assert_eq!(
            first,
            [
                "x-pagegate-email: ann@example.com",
                "x-pagegate-name: Ann",
                "x-pagegate-page: course,extra"
            ]
        );
        // The same session again: the same values.
        assert_eq!(sent(&who("Ann")), first);
        // Renamed in the client list meanwhile: the new name, encoded, at once.
        assert_eq!(
            sent(&who("Анна 100%"))[1],
            "x-pagegate-name: %D0%90%D0%BD%D0%BD%D0%B0 100%25"
        );
        let off = IdentityHeaders {
            enabled: false,
            names: identity.names.clone(),
        };
        assert!(off.headers_for(&who("Ann")).is_empty());
    }

    #[test]
    fn the_visitor_is_the_first_untrusted_address_from_the_end_of_the_chain() {
        let trusted: Vec<IpNet> = ["10.0.0.0/8", "192.0.2.1/32"]
            .iter()
            .map(|n| n.parse().expect("net"))
            .collect();
        let from = |peer: &str, xff: &[&str]| {
            let headers: Vec<(&str, &str)> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
            let conn = ConnectionInfo {
                peer: SocketAddr::new(peer.parse().expect("peer"), 40000),
                tls: false,
                sni_site: None,
            };
            client_ip(&req("/", &headers), conn, &trusted).to_string()
        };
        // An untrusted peer is the visitor, whatever it claims.
        assert_eq!(from("203.0.113.9", &["198.51.100.1"]), "203.0.113.9");
        // Balancer only: the entry it appended.
        assert_eq!(from("10.0.0.2", &["198.51.100.1"]), "198.51.100.1");
        // CDN (192.0.2.1) in front of the balancer; the visitor forged a first entry.
        assert_eq!(
            from("10.0.0.2", &["1.2.3.4, 198.51.100.1", "192.0.2.1"]),
            "198.51.100.1"
        );
        // Every hop trusted: the leftmost.
        assert_eq!(from("10.0.0.2", &["10.1.1.1, 192.0.2.1"]), "10.1.1.1");
        // Garbage stops the walk at the last trusted hop; no header leaves the peer.
        assert_eq!(from("10.0.0.2", &["nonsense, 192.0.2.1"]), "192.0.2.1");
        assert_eq!(from("10.0.0.2", &[]), "10.0.0.2");
        // An IPv4-mapped peer matches its IPv4 range.
        assert_eq!(from("::ffff:10.0.0.2", &["198.51.100.1"]), "198.51.100.1");
    }

    #[test]
    fn framing_rules() {
        assert!(check_framing(&req("/", &[("content-length", "5")])).is_ok());
        assert!(check_framing(&req("/", &[("transfer-encoding", "chunked")])).is_ok());
        for bad in [
            req(
                "/",
                &[("content-length", "5"), ("transfer-encoding", "chunked")],
            ),
            req("/", &[("content-length", "5"), ("content-length", "5")]),
            req("/", &[("content-length", "+5")]),
            req("/", &[("content-length", "5, 5")]),
        ] {
            assert!(check_framing(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_and_authority_must_agree() {
        assert_eq!(
            request_host(&req("/", &[("host", "a.example")])).ok(),
            Some(HeaderValue::from_static("a.example"))
        );
        assert_eq!(
            request_host(&req("http://a.example/", &[])).ok(),
            Some(HeaderValue::from_static("a.example"))
        );
        assert_eq!(
            request_host(&req("http://A.example/", &[("host", "a.example")])).ok(),
            Some(HeaderValue::from_static("a.example"))
        );
        assert!(request_host(&req("http://b.example/", &[("host", "a.example")])).is_err());
        assert!(request_host(&req("http://a.example:81/", &[("host", "a.example")])).is_err());
        assert!(request_host(&req("/", &[("host", "a"), ("host", "b")])).is_err());
        assert!(request_host(&req("/", &[])).is_err());
    }

    #[test]
    fn prefix_containment() {
        assert_eq!(under_prefix("/_pagegate", "/_pagegate"), Some(""));
        assert_eq!(under_prefix("/_pagegate/x", "/_pagegate"), Some("/x"));
        assert_eq!(under_prefix("/_pagegatex", "/_pagegate"), None);
    }
}
