//! Who may see a protected page: the gate on every protected request, and the sign-in flow
//! (email form → mailed code or link → session cookie) under `{prefix}/`.
//!
//! The pieces: [`keys`] (secrets), [`cookies`] (signed cookies), [`input`] (emails, `next`),
//! [`limits`] (rate limits), [`flow`] (the endpoints), [`signin`] (a shop's sign-in link),
//! [`watch`] (requests that stay open, ended when access ends). State lives in the [`Store`];
//! this module holds only what can be rebuilt (limiters, a note of failed mail sends, the open
//! requests being watched).

pub mod admin;
pub mod clock;
pub mod cookies;
mod flow;
pub mod forward;
pub use crate::input;
pub mod keys;
pub mod limits;
pub mod signin;
mod steps;

pub(crate) use steps::{FORM_CUT_OFF, read_urlencoded};
pub mod watch;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::body::{self, Body};
use crate::config::{AuthConfig, Config, Language};
use crate::error::HttpError;
use crate::mail::Mailer;
use crate::routing::SiteId;
use crate::routing::path::PageMatcher;
use crate::store::{
    AttemptPolicy, Retention, SecretHash, SessionAccess, Store, StoreError, Timestamp, now,
};
use crate::ui::{Templates, redirect};
pub use clock::Clock;
use cookies::CookieNames;
use keys::{KeyError, Keys, Rotation};
use limits::Limits;
use watch::{Subject, Verdict, Watch, Watched};

/// One protected page, as the flow needs it.
#[derive(Debug, Clone)]
pub struct PageAuth {
    /// Page id.
    pub id: String,
    /// Human title.
    pub title: String,
    /// Where to send a visitor whose `next` is unusable.
    pub first_path: String,
    /// Session lifetime on this page.
    pub lifetime: Duration,
}

/// The sign-in settings of one site.
#[derive(Debug)]
pub struct SiteAuth {
    name: String,
    title: String,
    language: Language,
    /// Base of links in mail; never taken from the request.
    public_url: Option<String>,
    pages: Vec<PageAuth>,
    matcher: PageMatcher,
    cookies: CookieNames,
    /// The longest page lifetime: how long a session and its cookie live.
    max_lifetime: Duration,
}

/// The signed-in visitor a protected request is forwarded for.
#[derive(Clone)]
pub struct Identity {
    /// Normalised email.
    pub email: String,
    /// Client name on the (first) page.
    pub name: String,
    /// Ids of the pages the request falls under.
    pub pages: Vec<String>,
    /// The keyed hash of the session id, for watching a request that stays open.
    pub session: SecretHash,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("email", &self.email)
            .field("name", &self.name)
            .field("pages", &self.pages)
            .finish_non_exhaustive()
    }
}

/// What the gate decided for a protected request.
pub enum Gate {
    /// Forward, telling the upstream who this is.
    Allow(Identity),
    /// Answer with this (a redirect to sign in, or 401).
    Deny(Response<Body>),
}

/// What the flow knows about the request beyond its headers.
#[derive(Debug, Clone, Copy)]
pub struct Visitor {
    /// The client's address (through trusted proxies).
    pub ip: IpAddr,
    /// Whether the visitor reached the site over HTTPS.
    pub secure: bool,
}

/// Shared sign-in state.
///
/// A configuration reload builds a new `Auth` ([`Auth::reloaded`]) on the same store; what must
/// not start over on a reload (the rate limiters while their settings stay the same, the notes of
/// failed sends) is shared between the old and the new one.
pub struct Auth {
    store: Arc<dyn Store>,
    mailer: Mailer,
    templates: Templates,
    /// Swapped whole by a key rotation, so it takes effect without a reload.
    keys: ArcSwap<Keys>,
    limits: Arc<Limits>,
    config: AuthConfig,
    /// Where a generated secret lives.
    data_dir: PathBuf,
    prefix: String,
    sites: Vec<SiteAuth>,
    /// (site, email) whose last code could not be mailed, so the code form can say so.
    failed_sends: Arc<Mutex<HashMap<String, Instant>>>,
    /// Sign-in work running after the visitor's answer (issuing a code, mailing it, noting how
    /// that went), counted so that anyone can tell when all of it has finished.
    sign_in_work: Arc<std::sync::atomic::AtomicUsize>,
    /// How long audit entries and grant orders are kept.
    retention: Retention,
    /// When housekeeping next applies `retention`: hourly, as those limits are days long, and
    /// on every tick while a backlog is being worked through.
    retention_due: Mutex<Instant>,
    /// Requests that stay open (tunnels, long bodies), ended when access ends; shared by every
    /// `Auth` a reload builds, as they outlive the configuration that let them in.
    watch: Arc<Watch>,
    /// What codes, links, sessions and the gate go by; shared by every `Auth` a reload builds.
    clock: Clock,
}

/// How often audit entries and grant orders past their retention are looked for.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("sites", &self.sites.len())
            .finish_non_exhaustive()
    }
}

/// Seconds a request joining the watch without a check of its own (see [`Auth::watch`]) may
/// run before one, should the store not answer meanwhile.
const WATCH_GRACE: Timestamp = 5;

impl Auth {
    /// Builds the flow's state from the config and the opened store.
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        mailer: Mailer,
        templates: Templates,
    ) -> Result<Auth, String> {
        let keys = Keys::load(&config.auth, &config.data_dir).map_err(|e| e.to_string())?;
        let sites = config
            .sites
            .iter()
            .map(|site| {
                let pages: Vec<PageAuth> = site
                    .pages
                    .iter()
                    .map(|p| PageAuth {
                        id: p.id.clone(),
                        title: p.title.clone(),
                        first_path: p.paths.first().cloned().unwrap_or_else(|| "/".into()),
                        lifetime: p.session_lifetime,
                    })
                    .collect();
                let max_lifetime = pages
                    .iter()
                    .map(|p| p.lifetime)
                    .max()
                    .unwrap_or(config.auth.session_lifetime);
                SiteAuth {
                    name: site.name.clone(),
                    title: site.title.clone(),
                    language: site.language,
                    public_url: site.public_url.clone(),
                    matcher: PageMatcher::new(&site.pages),
                    cookies: CookieNames::for_site(&site.name),
                    pages,
                    max_lifetime,
                }
            })
            .collect();
        Ok(Auth {
            limits: Arc::new(Limits::new(&config.auth, &store)),
            store,
            mailer,
            templates,
            keys: ArcSwap::from_pointee(keys),
            config: config.auth.clone(),
            data_dir: config.data_dir.clone(),
            prefix: config.server.prefix.clone(),
            sites,
            failed_sends: Arc::new(Mutex::new(HashMap::new())),
            sign_in_work: Arc::default(),
            retention: config.store.retention(),
            retention_due: Mutex::new(Instant::now()),
            watch: Watch::new(),
            clock: Clock::default(),
        })
    }

    /// The sign-in state of a reloaded configuration, on this one's store. The rate limiters
    /// carry over when their four settings are unchanged (a visitor cannot get a fresh allowance
    /// by waiting for a reload); changed settings start them over. Keys are loaded afresh, so
    /// changed `auth.secret`, `previous_secrets` or `key_grace` apply.
    pub fn reloaded(
        &self,
        config: &Config,
        mailer: Mailer,
        templates: Templates,
    ) -> Result<Auth, String> {
        let mut next = Auth::new(config, self.store.clone(), mailer, templates)?;
        let (old, new) = (&self.config, &config.auth);
        let same_limits = old.email_codes_per_hour == new.email_codes_per_hour
            && old.resend_after == new.resend_after
            && old.ip_codes_per_hour == new.ip_codes_per_hour
            && old.ip_verifies_per_hour == new.ip_verifies_per_hour;
        if same_limits {
            next.limits = self.limits.clone();
        }
        next.failed_sends = self.failed_sends.clone();
        next.sign_in_work = self.sign_in_work.clone();
        next.watch = self.watch.clone();
        next.clock = self.clock.clone();
        Ok(next)
    }

    /// Replaces a generated secret: the new one signs and hashes everything from now on, the
    /// old one stays accepted for `auth.key_grace`. Refused for a configured secret. Blocking
    /// (file writes).
    pub fn rotate_keys(&self) -> Result<Rotation, KeyError> {
        if self.config.secret.is_some() {
            return Err(KeyError::Configured);
        }
        let rotation = keys::rotate(&self.data_dir, self.config.key_grace, now())?;
        self.keys
            .store(Arc::new(Keys::load(&self.config, &self.data_dir)?));
        tracing::info!(
            previous_kept = rotation.previous_kept,
            "session key rotated; the previous key is accepted until its grace period ends"
        );
        Ok(rotation)
    }

    /// Runs sign-in work that must not hold up the visitor's answer (issuing and mailing a code,
    /// then noting the outcome) in the background, counted in [`Auth::sign_in_work`].
    pub(crate) fn in_background(
        &self,
        work: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        use std::sync::atomic::Ordering;
        let counter = self.sign_in_work.clone();
        counter.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            work.await;
            counter.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// How much sign-in work is still running in the background: 0 once every code asked for
    /// has been mailed or given up on, and the outcome noted for the code form.
    pub fn sign_in_work(&self) -> usize {
        self.sign_in_work.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The mail transport, shared with the welcome mail of grants.
    pub fn mailer(&self) -> &Mailer {
        &self.mailer
    }

    /// The page and mail templates, with the configured overrides.
    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    /// The store, for admin tools sharing this process.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn policy(&self) -> AttemptPolicy {
        AttemptPolicy {
            max_attempts: self.config.max_attempts,
            max_attempts_per_email: self.config.max_attempts_per_email,
            window: self.config.attempt_window.as_secs() as i64,
        }
    }

    /// Decides a request to protected pages `pages` (indexes into the site's pages): forward it
    /// for a signed-in client whose access to every one of them is valid now, else deny.
    /// Reads only; nothing is written on this path.
    pub async fn gate<B>(
        &self,
        site_id: SiteId,
        pages: &[usize],
        req: &Request<B>,
        visitor: Visitor,
    ) -> Result<Gate, HttpError> {
        if let Some(identity) = self
            .signed_in(site_id, pages, req.headers(), visitor)
            .await?
        {
            return Ok(Gate::Allow(identity));
        }
        Ok(Gate::Deny(self.sign_in_required(req)))
    }

    /// The visitor whose session cookie (in `headers`) is valid now for every one of `pages`
    /// (indexes into the site's pages), if any. Reads only. The gate and the forward-auth
    /// endpoint both decide with it, so both apply the same sessions, client lists and access
    /// periods.
    pub async fn signed_in(
        &self,
        site_id: SiteId,
        pages: &[usize],
        headers: &http::HeaderMap,
        visitor: Visitor,
    ) -> Result<Option<Identity>, HttpError> {
        let site = &self.sites[site_id];
        let keys = self.keys.load();
        // The session was stored under the hash key of the secret that signed its cookie.
        let Some(hash) = keys.session_hash(headers, site.cookies.session(visitor.secure)) else {
            return Ok(None);
        };
        drop(keys);
        let ids: Vec<String> = pages
            .iter()
            .filter_map(|&i| site.pages.get(i))
            .map(|p| p.id.clone())
            .collect();
        let access = self.session_access(hash, &ids).await;
        let Some(access) = access.map_err(HttpError::store)? else {
            return Ok(None);
        };
        let on_pages = pages.iter().map(|&i| site.pages.get(i));
        match access_ends(site, on_pages, &access) {
            Some(ends) if self.now() < ends => {}
            _ => return Ok(None),
        }
        let name = access
            .clients
            .first()
            .and_then(Option::as_ref)
            .map(|c| c.name.clone())
            .unwrap_or_default();
        let SessionAccess { session, .. } = access;
        Ok(Some(Identity {
            email: session.email,
            name,
            pages: ids,
            session: hash,
        }))
    }

    /// The time codes, links, sessions and the gate go by (see [`clock`]).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Seconds since the epoch by [`Auth::clock`].
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Runs store reads on a request's path: inline where the backend answers from memory or
    /// the page cache, on a blocking thread where it may wait on the network, so a connection
    /// worker never stops serving its other connections for a database round trip.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        if !self.store.reads_wait() {
            return f(self.store.as_ref());
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| StoreError::Backend(format!("store read task: {e}")))?
    }

    /// [`Store::session_access`] on a request's path: inline from the backend's memory or page
    /// cache when it can answer there, else on a blocking thread (see [`Auth::read`]).
    pub(crate) async fn session_access(
        &self,
        hash: SecretHash,
        pages: &[String],
    ) -> Result<Option<SessionAccess>, StoreError> {
        let asked: Vec<&str> = pages.iter().map(String::as_str).collect();
        if !self.store.reads_wait() {
            return self.store.session_access(&hash, &asked);
        }
        if let Some(kept) = self.store.kept_session_access(&hash, &asked) {
            return Ok(kept);
        }
        let pages = pages.to_vec();
        self.read(move |store| {
            let asked: Vec<&str> = pages.iter().map(String::as_str).collect();
            store.session_access(&hash, &asked)
        })
        .await
    }

    /// The registry of requests watched for the end of their access.
    pub fn watch_registry(&self) -> &Arc<Watch> {
        &self.watch
    }

    /// Puts a request that will stay open (a tunnel, a long body) in the watch, after checking
    /// afresh that `session` still has access to `pages` (ids) of `site`; `None` when it has
    /// not. Reads the store once.
    pub fn watch(
        &self,
        site: SiteId,
        session: &SecretHash,
        pages: Vec<String>,
    ) -> Result<Option<Watched>, StoreError> {
        let Some(site) = self.sites.get(site) else {
            return Ok(None);
        };
        let subject = Subject {
            session: *session,
            site: site.name.clone(),
            pages,
        };
        // Read before the check: a change committed after it moves the count past this.
        let changes = self.store.changes();
        let now = self.now();
        if self.store.reads_wait() {
            // Called on a connection worker, which must not wait on the database: the gate
            // admitted this session moments ago, so the request joins as not yet checked and
            // the next pass of `recheck_watched` (off the workers, every second) decides,
            // within a short grace should the database not answer.
            return Ok(Some(self.watch.join(
                subject,
                watch::UNCHECKED,
                now.saturating_add(WATCH_GRACE),
            )));
        }
        Ok(match self.access_until(&subject)? {
            Some(ends) if now < ends => Some(self.watch.join(subject, changes, ends)),
            _ => None,
        })
    }

    /// Checks the watched requests that are due (see [`watch`]) against the store and the
    /// configuration of this `Auth`, and ends those whose access has ended; returns how many.
    /// Blocking (store reads).
    pub fn recheck_watched(&self) -> usize {
        let changes = self.store.changes();
        let now = self.now();
        let due = self.watch.due(changes, now);
        if due.is_empty() {
            return 0;
        }
        let verdicts: Vec<(watch::Due, Verdict)> = due
            .into_iter()
            .map(|d| {
                let verdict = self.access_until(&d.subject);
                (d, verdict)
            })
            .collect();
        let ended = self.watch.settle(changes, now, verdicts);
        if ended > 0 {
            tracing::info!(ended, "access ended: open tunnels and downloads closed");
        }
        ended
    }

    /// Until when `subject`'s session may use its pages under this configuration: `None` for no
    /// access at all, including a site or page it no longer has.
    fn access_until(&self, subject: &Subject) -> Verdict {
        let Some(site) = self.sites.iter().find(|s| s.name == subject.site) else {
            return Ok(None);
        };
        let ids: Vec<&str> = subject.pages.iter().map(String::as_str).collect();
        let Some(access) = self.store.session_access(&subject.session, &ids)? else {
            return Ok(None);
        };
        let on_pages = ids.iter().map(|id| site.pages.iter().find(|p| p.id == *id));
        Ok(access_ends(site, on_pages, &access))
    }

    /// A browser asking for a page is sent to the email form; anything else gets 401.
    pub(crate) fn sign_in_required<B>(&self, req: &Request<B>) -> Response<Body> {
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        if wants_page(req.method(), req.headers()) {
            return redirect(StatusCode::FOUND, &self.login_location(target));
        }
        sign_in_json(&self.prefix)
    }

    /// Where a visitor who asked for `target` (path and query) signs in: the email form on the
    /// same site, coming back to `target` afterwards.
    pub fn login_location(&self, target: &str) -> String {
        let next: String = form_urlencoded::byte_serialize(target.as_bytes()).collect();
        format!("{}/login?next={next}", self.prefix)
    }

    /// The `401` for a request that is no browser navigation (see [`sign_in_json`]).
    pub fn sign_in_json(&self) -> Response<Body> {
        sign_in_json(&self.prefix)
    }

    /// Forgets idle rate-limit keys and stale notes, prunes expired codes and sessions and,
    /// when due, audit entries and grant orders past their retention, and deletes retired
    /// secrets whose grace is over; called periodically.
    pub fn housekeeping(&self) {
        self.limits.forget_idle();
        if self.config.secret.is_none() {
            match keys::prune(&self.data_dir, self.config.key_grace, now()) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    dropped = n,
                    "retired session keys reached the end of their grace period"
                ),
                Err(e) => tracing::warn!(error = %e, "pruning retired session keys failed"),
            }
        }
        if let Ok(mut failed) = self.failed_sends.lock() {
            failed.retain(|_, at| at.elapsed() < Duration::from_secs(3600));
        }
        let due = self
            .retention_due
            .lock()
            .map(|next| Instant::now() >= *next)
            .unwrap_or(true);
        let retention = if due {
            self.retention
        } else {
            Retention::default()
        };
        match self.store.prune(self.now(), self.policy(), retention) {
            Ok(pruned) => {
                if pruned.audit > 0 || pruned.grants > 0 {
                    tracing::info!(
                        audit_entries = pruned.audit,
                        grant_orders = pruned.grants,
                        "removed records past their retention"
                    );
                }
                if due {
                    if let Ok(mut next) = self.retention_due.lock() {
                        *next = if pruned.hit_limit() {
                            Instant::now()
                        } else {
                            Instant::now() + RETENTION_EVERY
                        };
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "pruning expired codes and sessions failed"),
        }
    }

    /// The language to answer in.
    fn language<B>(&self, site: &SiteAuth, req: &Request<B>) -> Language {
        let accept = req
            .headers()
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok());
        crate::ui::negotiate_language(accept, site.language)
    }
}

/// Whether a request for a page is a browser navigation, which is sent to the email form,
/// rather than a form post, an API or a fetch call, which gets a `401`.
pub fn wants_page(method: &Method, headers: &http::HeaderMap) -> bool {
    (method == Method::GET || method == Method::HEAD) && !asks_for_json(headers)
}

/// The `401` JSON answer for a request that needs a session and is no browser navigation.
fn sign_in_json(prefix: &str) -> Response<Body> {
    let mut response = Response::new(body::full(format!(
        "{{\"error\":\"sign-in required\",\"login\":\"{prefix}/login\"}}\n"
    )));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("pagegate"),
    );
    response
}

/// Whether a client prefers JSON to HTML (an API or fetch call, not a browser navigation).
fn asks_for_json(headers: &http::HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    (accept.contains("application/json") && !accept.contains("text/html"))
        || headers
            .get("x-requested-with")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"xmlhttprequest"))
}

/// Until when (exclusive) `access` lets its session use `pages` of `site`: the earliest of the
/// session's own end, its lifetime on each page, and each page's client's end of access. `None`
/// when it gives no access at all: a session of another site, an email missing from a page's
/// list, a page that does not exist (`None` in `pages`). The gate and the watch on open requests
/// both decide by it, so a tunnel or a download ends on the terms a new request is refused.
fn access_ends<'a>(
    site: &SiteAuth,
    pages: impl Iterator<Item = Option<&'a PageAuth>>,
    access: &SessionAccess,
) -> Option<Timestamp> {
    let session = &access.session;
    if session.site != site.name {
        return None;
    }
    let mut ends = session.expires_at;
    let mut clients = access.clients.iter();
    for page in pages {
        let (page, client) = (page?, clients.next()?.as_ref()?);
        let lifetime = page.lifetime.as_secs() as i64;
        ends = ends.min(session.created_at.saturating_add(lifetime));
        if let Some(until) = client.access_until {
            ends = ends.min(until);
        }
    }
    Some(ends)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Client, SessionRecord, Source};

    fn site() -> SiteAuth {
        let page = |id: &str, hours: u64| PageAuth {
            id: id.into(),
            title: id.into(),
            first_path: format!("/{id}/"),
            lifetime: Duration::from_secs(hours * 3600),
        };
        SiteAuth {
            name: "school".into(),
            title: "School".into(),
            language: Language::En,
            public_url: None,
            pages: vec![page("course", 24), page("extra", 1)],
            matcher: PageMatcher::new(&[]),
            cookies: CookieNames::for_site("school"),
            max_lifetime: Duration::from_secs(24 * 3600),
        }
    }

    fn client(access_until: Option<Timestamp>) -> Client {
        Client {
            email: "ann@example.com".into(),
            name: "Ann".into(),
            created_at: 0,
            updated_at: 0,
            access_until,
            source: Source::Admin,
            last_login: None,
        }
    }

    fn access(site: &str, clients: Vec<Option<Client>>) -> SessionAccess {
        SessionAccess {
            session: SessionRecord {
                site: site.into(),
                email: "ann@example.com".into(),
                created_at: 1_000,
                expires_at: 1_000 + 24 * 3600,
            },
            clients,
        }
    }

    #[test]
    fn access_ends_at_the_earliest_of_session_lifetime_and_access_period() {
        let site = site();
        let [course, extra] = [Some(&site.pages[0]), Some(&site.pages[1])];
        let session_end = 1_000 + 24 * 3600;
        let on = |pages: Vec<Option<&PageAuth>>, access: &SessionAccess| {
            access_ends(&site, pages.into_iter(), access)
        };
        // Unlimited client: the session's own end.
        let unlimited = access("school", vec![Some(client(None))]);
        assert_eq!(on(vec![course], &unlimited), Some(session_end));
        // The client's access period ends first.
        let until = access("school", vec![Some(client(Some(5_000)))]);
        assert_eq!(on(vec![course], &until), Some(5_000));
        // A page with a shorter session lifetime, among two.
        let both = access("school", vec![Some(client(None)), Some(client(None))]);
        assert_eq!(on(vec![course, extra], &both), Some(1_000 + 3600));
        // No access at all: another site's session, a page's list without the email, a page
        // that is not configured (any more).
        assert_eq!(
            on(vec![course], &access("club", vec![Some(client(None))])),
            None
        );
        assert_eq!(
            on(
                vec![course, extra],
                &access("school", vec![Some(client(None)), None])
            ),
            None
        );
        assert_eq!(on(vec![None], &unlimited), None);
    }
}
