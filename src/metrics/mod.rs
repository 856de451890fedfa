//! Prometheus metrics: what pagegate counts, and the exposition text a scraper reads.
//!
//! There is one set per process, [`global`], which owns the registry. It lives outside the
//! [`Gateway`](crate::gateway::Gateway) on purpose: a gateway is rebuilt when the configuration
//! is reloaded, and counters that fell back to zero at each reload would read as restarts and
//! lose what was counted. A new gateway looks its sites' handles up by name ([`Metrics::site`])
//! and keeps adding to the same counters.
//!
//! The request path touches atomics only (see [`table`]): per-site handles are resolved when a
//! gateway is built, so counting a request is one relaxed addition, with no lock, no map lookup
//! and no allocation. Rarer events (sign-in steps, mail failures, grants) go through
//! `prometheus-client` label families. Active sessions are read from the store at scrape time.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `pagegate_http_requests_total` | counter | `site`, `page`, `status` | requests answered; `page` is the protected page the path fell under, `""` for other paths and pagegate's own endpoints; `site` is `""` for requests that reached no site (unknown host, health check, malformed) |
//! | `pagegate_upstream_duration_seconds` | histogram | `site` | from forwarding to the upstream's response headers, for requests that got an answer from it |
//! | `pagegate_login_events_total` | counter | `site`, `flow`, `event` | sign-in steps; `flow` is `visitor` or `admin`, `event` one of [`LoginEvent`] |
//! | `pagegate_mail_send_failures_total` | counter | `kind` | mail the transport refused or could not deliver: `login`, `admin`, `welcome` |
//! | `pagegate_mail_waiting` | gauge | | messages being sent or waiting for a retry |
//! | `pagegate_grants_total` | counter | `key`, `outcome` | grant requests by API key name (`""` when no key was recognised) and [`GrantOutcome`] |
//! | `pagegate_active_sessions` | gauge | `site`, `kind` | live sessions in the store, `kind` `visitor` or `admin` |
//! | `pagegate_open_connections` | gauge | | client connections open on the site listeners |
//! | `pagegate_open_tunnels` | gauge | | of those, connections upgraded to a byte tunnel (WebSocket) |
//! | `pagegate_parked_connections` | gauge | | of those, quiet keep-alive connections waiting in a worker's lot, without a task or buffers |
//! | `pagegate_access_log_dropped_total` | counter | | access log lines dropped because the writer did not keep up (or could not write them); see `access_log` |
//! | `pagegate_store_listening` | gauge | | PostgreSQL store only: 1 while this gateway hears other gateways' changes at once, 0 while it only polls for them |
//! | `pagegate_build_info` | info | `version` | the running build |
//! | `pagegate_start_time_seconds` | gauge | | when the process started, Unix time |
//!
//! Label values come from the configuration (site names, page ids, key names) or from fixed
//! lists, never from a request, so a client cannot make the set of series grow.

mod endpoint;
pub mod table;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

pub use endpoint::{CONTENT_TYPE, Exporter, serve};
pub use table::{RequestSeries, UpstreamTimer};

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &GLOBAL
}

/// Which sign-in a login event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// A visitor signing in to protected pages.
    Visitor,
    /// An admin signing in to the admin page.
    Admin,
}

/// A step of the sign-in funnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginEvent {
    /// A well-formed code request was accepted (listed address or not: the answer is the same).
    CodeRequested,
    /// A code (with its link) was handed to the mail transport successfully.
    CodeSent,
    /// A right code signed someone in.
    CodeVerified,
    /// A wrong (or expired, or missing) code was entered.
    CodeFailed,
    /// A code was entered for an address locked by too many wrong codes.
    Locked,
    /// A code request or a code check was refused by a rate limit.
    RateLimited,
    /// A mailed link signed someone in.
    LinkVerified,
    /// A link that was used, expired or unknown was followed.
    LinkFailed,
    /// A shop's sign-in link signed a buyer in.
    SigninLinkVerified,
    /// A shop's sign-in link that was used, expired or unknown was confirmed.
    SigninLinkFailed,
}

impl LoginEvent {
    /// Every event, in funnel order.
    pub const ALL: [LoginEvent; 10] = [
        LoginEvent::CodeRequested,
        LoginEvent::CodeSent,
        LoginEvent::CodeVerified,
        LoginEvent::CodeFailed,
        LoginEvent::Locked,
        LoginEvent::RateLimited,
        LoginEvent::LinkVerified,
        LoginEvent::LinkFailed,
        LoginEvent::SigninLinkVerified,
        LoginEvent::SigninLinkFailed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LoginEvent::CodeRequested => "code_requested",
            LoginEvent::CodeSent => "code_sent",
            LoginEvent::CodeVerified => "code_verified",
            LoginEvent::CodeFailed => "code_failed",
            LoginEvent::Locked => "locked",
            LoginEvent::RateLimited => "rate_limited",
            LoginEvent::LinkVerified => "link_verified",
            LoginEvent::LinkFailed => "link_failed",
            LoginEvent::SigninLinkVerified => "signin_link_verified",
            LoginEvent::SigninLinkFailed => "signin_link_failed",
        }
    }
}

/// The kinds of mail pagegate sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    /// A visitor's one-time code and sign-in link.
    Login,
    /// An admin's one-time code.
    Admin,
    /// The welcome message of a grant with `"notify": true`.
    Welcome,
}

impl MailKind {
    fn as_str(self) -> &'static str {
        match self {
            MailKind::Login => "login",
            MailKind::Admin => "admin",
            MailKind::Welcome => "welcome",
        }
    }
}

/// How a grant request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantOutcome {
    /// A new client was added.
    Created,
    /// An existing client's access was extended (or left as it was, when already longer).
    Extended,
    /// A retried order: nothing changed, the first answer was repeated.
    Replayed,
    /// The order id was already used for another page or email (409).
    Conflict,
    /// Refused before anything was written: bad credentials, scope, body or page.
    Refused,
}

impl GrantOutcome {
    fn as_str(self) -> &'static str {
        match self {
            GrantOutcome::Created => "created",
            GrantOutcome::Extended => "extended",
            GrantOutcome::Replayed => "replayed",
            GrantOutcome::Conflict => "conflict",
            GrantOutcome::Refused => "refused",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LoginLabels {
    site: String,
    flow: &'static str,
    event: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MailLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GrantLabels {
    key: String,
    outcome: &'static str,
}

/// Everything pagegate counts.
pub struct Metrics {
    registry: Registry,
    requests: Arc<table::RequestTable>,
    upstream: Arc<table::UpstreamTable>,
    login: Family<LoginLabels, Counter>,
    mail_failures: Family<MailLabels, Counter>,
    mail_waiting: Gauge,
    grants: Family<GrantLabels, Counter>,
    open_connections: Gauge,
    open_tunnels: Gauge,
    parked_connections: Gauge,
    access_log_dropped: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh, empty set. The gateway uses [`global`]; separate sets are for tests.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("pagegate");
        let requests = Arc::new(table::RequestTable::default());
        let upstream = Arc::new(table::UpstreamTable::default());
        registry.register_collector(Box::new(requests.clone()));
        registry.register_collector(Box::new(upstream.clone()));
        let login = Family::<LoginLabels, Counter>::default();
        registry.register(
            "login_events",
            "Sign-in steps by site, flow (visitor or admin) and event",
            login.clone(),
        );
        let mail_failures = Family::<MailLabels, Counter>::default();
        // The kinds are fixed: show them at zero, so an alert on an increase has a series to
        // watch from the start.
        for kind in [MailKind::Login, MailKind::Admin, MailKind::Welcome] {
            let _ = mail_failures.get_or_create(&MailLabels {
                kind: kind.as_str(),
            });
        }
        registry.register(
            "mail_send_failures",
            "Messages the mail transport refused or could not deliver, by kind",
            mail_failures.clone(),
        );
        let mail_waiting = Gauge::default();
        registry.register(
            "mail_waiting",
            "Messages not yet delivered: being sent or waiting for a retry",
            mail_waiting.clone(),
        );
        let grants = Family::<GrantLabels, Counter>::default();
        registry.register(
            "grants",
            "Grant requests by API key name (empty when no key was recognised) and outcome",
            grants.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections open on the site listeners",
            open_connections.clone(),
        );
        let open_tunnels = Gauge::default();
        registry.register(
            "open_tunnels",
            "Client connections upgraded to a byte tunnel (WebSocket), counted among the open connections",
            open_tunnels.clone(),
        );
        let parked_connections = Gauge::default();
        registry.register(
            "parked_connections",
            "Quiet keep-alive connections waiting for their next request without a task or buffers, counted among the open connections",
            parked_connections.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the disk or the stderr reader did not keep up, or writing failed",
            access_log_dropped.clone(),
        );
        registry.register(
            "build",
            "The running build",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        let started: Gauge = Gauge::default();
        started.set(crate::store::now());
        registry.register_with_unit(
            "start_time",
            "When the process started, Unix time",
            Unit::Seconds,
            started,
        );
        Metrics {
            registry,
            requests,
            upstream,
            login,
            mail_failures,
            mail_waiting,
            grants,
            open_connections,
            open_tunnels,
            parked_connections,
            access_log_dropped,
        }
    }

    /// The handles of one site, resolved by name: the same counters across gateway rebuilds.
    /// Also makes the site's visitor sign-in events show as zero before the first one.
    pub fn site(&self, name: &str, page_ids: &[&str]) -> SiteMetrics {
        let pages = std::iter::once("")
            .chain(page_ids.iter().copied())
            .map(|page| self.requests.series(name, page))
            .collect();
        if !page_ids.is_empty() {
            for event in LoginEvent::ALL {
                let _ = self.login.get_or_create(&LoginLabels {
                    site: name.to_owned(),
                    flow: "visitor",
                    event: event.as_str(),
                });
            }
        }
        SiteMetrics {
            pages,
            upstream: self.upstream.timer(name),
        }
    }

    /// The series of requests that reached no site (`site=""`).
    pub fn unrouted(&self) -> Arc<RequestSeries> {
        self.requests.series("", "")
    }

    /// Counts one sign-in step.
    pub fn login(&self, site: &str, flow: Flow, event: LoginEvent) {
        self.login
            .get_or_create(&LoginLabels {
                site: site.to_owned(),
                flow: match flow {
                    Flow::Visitor => "visitor",
                    Flow::Admin => "admin",
                },
                event: event.as_str(),
            })
            .inc();
    }

    /// Counts a message the transport did not deliver.
    pub fn mail_failed(&self, kind: MailKind) {
        self.mail_failures
            .get_or_create(&MailLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// One more message waits for delivery or a retry. Counted up and down rather than set,
    /// because after a reload the old mail sender still finishes its messages beside the new one.
    pub fn mail_waiting_entered(&self) {
        self.mail_waiting.inc();
    }

    /// A message counted by [`Metrics::mail_waiting_entered`] was delivered or given up.
    pub fn mail_waiting_left(&self) {
        self.mail_waiting.dec();
    }

    /// Counts a grant request. `key` is the API key's configured name, never its secret.
    pub fn grant(&self, key: &str, outcome: GrantOutcome) {
        self.grants
            .get_or_create(&GrantLabels {
                key: key.to_owned(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Counts access log lines that were dropped rather than written.
    pub fn access_log_dropped(&self, lines: u64) {
        self.access_log_dropped.inc_by(lines);
    }

    /// Access log lines dropped so far.
    pub fn access_log_dropped_count(&self) -> u64 {
        self.access_log_dropped.get()
    }

    /// Counts a client connection as open until the returned guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.open_connections.inc();
        OpenConnection(self.open_connections.clone())
    }

    /// Counts a tunnel as open until the returned guard is dropped. Its connection stays counted
    /// in `pagegate_open_connections` meanwhile.
    pub fn tunnel_opened(&self) -> OpenTunnel {
        self.open_tunnels.inc();
        OpenTunnel(self.open_tunnels.clone())
    }

    /// Counts a quiet connection as parked until the returned guard is dropped (it is resumed
    /// or closed). Parking happens once per quiet period, not per request, so one shared gauge
    /// is cheap enough. Its connection stays counted in `pagegate_open_connections` meanwhile.
    pub fn connection_parked(&self) -> ParkedConnection {
        self.parked_connections.inc();
        ParkedConnection(self.parked_connections.clone())
    }

    /// The exposition text: every metric, then the store's session counts when given, then
    /// the end marker. `sessions` is [`Store::count_active_sessions`](crate::store::Store)'s
    /// answer.
    pub fn encode(
        &self,
        out: &mut String,
        sessions: Option<Vec<(String, u64)>>,
        hears_changes: Option<bool>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::text;
        text::encode_registry(out, &self.registry)?;
        let mut extra = Registry::with_prefix("pagegate");
        if let Some(sessions) = sessions {
            extra.register_collector(Box::new(ActiveSessions(sessions)));
        }
        if let Some(up) = hears_changes {
            let gauge = Gauge::<i64>::default();
            gauge.set(i64::from(up));
            extra.register(
                "store_listening",
                "1 while this gateway hears other gateways' changes at once (PostgreSQL LISTEN); 0 while it only polls for them",
                gauge,
            );
        }
        text::encode_registry(out, &extra)?;
        text::encode_eof(out)
    }
}

/// One client connection, counted in `pagegate_open_connections` while it lives.
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One tunnel, counted in `pagegate_open_tunnels` while it lives.
#[derive(Debug)]
pub struct OpenTunnel(Gauge);

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One parked connection, counted in `pagegate_parked_connections` while it waits.
#[derive(Debug)]
pub struct ParkedConnection(Gauge);

impl Drop for ParkedConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One site's per-request handles.
#[derive(Debug, Clone)]
pub struct SiteMetrics {
    /// Index 0: paths under no protected page; `i + 1`: the site's page `i`.
    pages: Vec<Arc<RequestSeries>>,
    upstream: Arc<UpstreamTimer>,
}

impl SiteMetrics {
    /// The series for the site's page `page` (an index into its pages), or for paths under
    /// none.
    pub fn series(&self, page: Option<usize>) -> &Arc<RequestSeries> {
        let index = page.map_or(0, |p| p + 1);
        // Index 0 always exists; a page index out of range (impossible by construction) falls
        // back to it rather than panicking.
        self.pages.get(index).unwrap_or(&self.pages[0])
    }

    /// Records how long the upstream took to send response headers.
    pub fn observe_upstream(&self, elapsed: Duration) {
        self.upstream.observe(elapsed);
    }
}

/// `pagegate_active_sessions`, from one store count.
#[derive(Debug)]
struct ActiveSessions(Vec<(String, u64)>);

impl Collector for ActiveSessions {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "active_sessions",
            "Live sessions in the store, by site and kind (visitor or admin).",
            None,
            MetricType::Gauge,
        )?;
        for (namespace, count) in &self.0 {
            let (site, kind) = match crate::store::site_of_admin_namespace(namespace) {
                Some(site) => (site, "admin"),
                None => (namespace.as_str(), "visitor"),
            };
            let labels = [("site", site), ("kind", kind)];
            let value = i64::try_from(*count).unwrap_or(i64::MAX);
            ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn text(metrics: &Metrics, sessions: Option<Vec<(String, u64)>>) -> String {
        let mut out = String::new();
        metrics.encode(&mut out, sessions, None).expect("encode");
        out
    }

    fn has(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn a_fresh_set_shows_build_info_and_zero_gauges() {
        let m = Metrics::new();
        let out = text(&m, None);
        let version = format!(
            "pagegate_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(has(&out, &version), "{out}");
        assert!(has(&out, "pagegate_mail_waiting 0"), "{out}");
        assert!(
            has(&out, "pagegate_mail_send_failures_total{kind=\"login\"} 0"),
            "{out}"
        );
        assert!(has(&out, "pagegate_open_connections 0"), "{out}");
        assert!(has(&out, "pagegate_open_tunnels 0"), "{out}");
        assert!(has(&out, "pagegate_parked_connections 0"), "{out}");
        assert!(has(&out, "pagegate_access_log_dropped_total 0"), "{out}");
        assert!(
            out.lines()
                .any(|l| l.starts_with("pagegate_start_time_seconds 1")),
            "{out}"
        );
        assert!(out.ends_with("# EOF\n"), "{out}");
        assert!(!out.contains("pagegate_active_sessions"), "{out}");
    }

    #[test]
    fn events_are_encoded_with_their_labels() {
        let m = Metrics::new();
        let site = m.site("school", &["course"]);
        site.series(Some(0)).count(StatusCode::OK);
        site.series(None).count(StatusCode::NOT_FOUND);
        site.observe_upstream(Duration::from_millis(3));
        m.unrouted().count(StatusCode::OK);
        m.login("school", Flow::Visitor, LoginEvent::CodeRequested);
        m.login("school", Flow::Admin, LoginEvent::CodeVerified);
        m.mail_failed(MailKind::Welcome);
        m.grant("shop", GrantOutcome::Created);
        m.grant("shop", GrantOutcome::Created);
        for _ in 0..4 {
            m.mail_waiting_entered();
        }
        m.mail_waiting_left();
        let connection = m.connection_opened();
        let tunnel = m.tunnel_opened();
        let parked = m.connection_parked();
        let out = text(
            &m,
            Some(vec![
                ("admin\u{0}school".to_string(), 1),
                ("school".to_string(), 4),
            ]),
        );
        for line in [
            "pagegate_http_requests_total{site=\"school\",page=\"course\",status=\"200\"} 1",
            "pagegate_http_requests_total{site=\"school\",page=\"\",status=\"404\"} 1",
            "pagegate_http_requests_total{site=\"\",page=\"\",status=\"200\"} 1",
            "pagegate_upstream_duration_seconds_count{site=\"school\"} 1",
            "pagegate_login_events_total{site=\"school\",flow=\"visitor\",event=\"code_requested\"} 1",
            "pagegate_login_events_total{site=\"school\",flow=\"visitor\",event=\"code_verified\"} 0",
            "pagegate_login_events_total{site=\"school\",flow=\"admin\",event=\"code_verified\"} 1",
            "pagegate_mail_send_failures_total{kind=\"welcome\"} 1",
            "pagegate_mail_waiting 3",
            "pagegate_grants_total{key=\"shop\",outcome=\"created\"} 2",
            "pagegate_open_connections 1",
            "pagegate_open_tunnels 1",
            "pagegate_parked_connections 1",
            "# TYPE pagegate_active_sessions gauge",
            "pagegate_active_sessions{site=\"school\",kind=\"admin\"} 1",
            "pagegate_active_sessions{site=\"school\",kind=\"visitor\"} 4",
        ] {
            assert!(has(&out, line), "no {line:?} in:\n{out}");
        }
        drop((connection, tunnel, parked));
        let after = text(&m, None);
        assert!(has(&after, "pagegate_parked_connections 0"), "{after}");
        assert!(has(&after, "pagegate_open_connections 0"), "{after}");
        assert!(has(&after, "pagegate_open_tunnels 0"), "{after}");
        // Exactly one end marker, at the end, after the store's sessions.
        assert_eq!(out.matches("# EOF").count(), 1);
        assert!(out.ends_with("# EOF\n"));
    }

    #[test]
    fn a_rebuilt_site_keeps_counting_on_the_same_series() {
        let m = Metrics::new();
        let first = m.site("school", &["course"]);
        first.series(Some(0)).count(StatusCode::OK);
        let rebuilt = m.site("school", &["extra", "course"]);
        rebuilt.series(Some(1)).count(StatusCode::OK);
        assert_eq!(first.series(Some(0)).get(200), 2);
        assert!(Arc::ptr_eq(first.series(Some(0)), rebuilt.series(Some(1))));
    }
}
