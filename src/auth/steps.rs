//! The steps of signing in that the visitors' flow ([`super::flow`]) and the admin sign-in
//! ([`super::admin`]) share: anti-forgery tokens and the origin check, rate-limit answers, codes
//! (made, stored, mailed, checked), sessions (stored, ended), audit entries, the note of a mail
//! that could not be sent, and reading the sign-in forms. Each flow keeps only what differs:
//! where its codes and sessions live, who may sign in, and its pages.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookie::SameSite;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rand::{Rng, RngCore};
use subtle::ConstantTimeEq;

use super::keys::{CookiePurpose, Keys};
use super::{Auth, SiteAuth, cookies};
use crate::body::Body;
use crate::config::Language;
use crate::error::HttpError;
use crate::mail::{Delivery, MailError, Outgoing};
use crate::metrics::{self, Flow, LoginEvent, MailKind};
use crate::runtime::blocking;
use crate::store::{AuditEvent, CodeCheck, CodeRecord, SecretHash, SessionRecord, TokenRecord};
use crate::ui::{Frame, Page, html_response};

/// Largest form body accepted.
const MAX_FORM: usize = 16 * 1024;

/// The steps of signing in that the visitors' flow and the admin sign-in share. `ns` is where
/// codes, attempts and sessions are kept in the store: the site's name for visitors,
/// [`namespace`](super::admin::namespace) for admins. `purpose` separates the keyed hashes of the
/// two (`code`/`session` and `admin-code`/`admin-session`).
impl Auth {
    /// Notes that the mail for (site, email) finally failed (refused for good, or retries used
    /// up), so the code form says so.
    pub(super) fn note_send_failure(&self, site: &str, email: &str) {
        if let Ok(mut failed) = self.failed_sends.lock() {
            failed.insert(send_key(site, email), Instant::now());
        }
    }

    /// Forgets an earlier failure once a later mail for (site, email) got through.
    pub(super) fn clear_send_failure(&self, site: &str, email: &str) {
        if let Ok(mut failed) = self.failed_sends.lock() {
            failed.remove(&send_key(site, email));
        }
    }

    /// The CSRF token in the signed cookie `name`, or a new one and the `Set-Cookie` for it.
    pub(super) fn csrf_token<B>(
        &self,
        name: &str,
        purpose: CookiePurpose,
        req: &Request<B>,
        secure: bool,
    ) -> (String, Option<HeaderValue>) {
        let keys = self.keys.load();
        if let Some((token, _)) = keys.read_cookie(req.headers(), name, purpose) {
            return (token, None);
        }
        let token = random_token(18);
        let cookie = cookies::set_signed(
            name,
            &token,
            secure,
            SameSite::Strict,
            None,
            keys.cookie_key(purpose),
        );
        (token, cookie)
    }

    /// Whether a form comes from this origin: its token `given` matches the signed cookie `name`
    /// (compared in constant time), and the browser's origin headers do not say otherwise.
    pub(super) fn csrf_matches(
        &self,
        headers: &http::HeaderMap,
        secure: bool,
        (name, purpose): (&str, CookiePurpose),
        given: &str,
    ) -> bool {
        let cookie = self
            .keys
            .load()
            .read_cookie(headers, name, purpose)
            .map(|(token, _)| token);
        let token_ok = cookie.is_some_and(|c| c.as_bytes().ct_eq(given.as_bytes()).into());
        token_ok && same_origin(headers, secure)
    }

    /// The "too many requests" page, with `Retry-After`.
    pub(super) fn rate_limited(
        &self,
        site: &SiteAuth,
        lang: Language,
        wait: Duration,
    ) -> Result<Response<Body>, HttpError> {
        let html = self
            .templates
            .page(
                &Page::RateLimited {
                    frame: Frame {
                        site_title: &site.title,
                        page_title: None,
                        prefix: &self.prefix,
                    },
                    retry_after_minutes: wait.as_secs().div_ceil(60).max(1),
                },
                lang,
            )
            .map_err(|e| HttpError::Internal(format!("template: {e}")))?;
        let mut response = html_response(StatusCode::TOO_MANY_REQUESTS, html);
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(wait.as_secs().max(1)),
        );
        Ok(response)
    }

    /// Whether the last code for (ns, email) could not be mailed; the note is used up, so the
    /// code form says so once.
    pub(super) fn take_send_failure(&self, ns: &str, email: &str) -> bool {
        self.failed_sends
            .lock()
            .map(|mut f| f.remove(&send_key(ns, email)).is_some())
            .unwrap_or(false)
    }

    /// Checks the code typed for (ns, email) (spaces and dashes ignored) against the stored one,
    /// atomically: a right code is used up, a wrong one counts against the email. A code mailed
    /// before a key rotation was hashed under the previous key, so every accepted key is tried.
    pub(super) async fn check_code(
        self: &Arc<Self>,
        ns: &str,
        email: &str,
        purpose: &'static str,
        typed: &str,
        browser: Vec<SecretHash>,
    ) -> Result<CodeCheck, HttpError> {
        let code: String = typed
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        let expected = self
            .keys
            .load()
            .hashes(purpose, &[ns.as_bytes(), email.as_bytes(), code.as_bytes()]);
        let auth = self.clone();
        let (ns, email, policy) = (ns.to_owned(), email.to_owned(), self.policy());
        blocking(move || {
            auth.store
                .check_code(&ns, &email, &browser, auth.now(), policy, &|record| {
                    matches_any(&record.code_hash, &expected)
                })
                .map_err(HttpError::store)
        })
        .await
    }

    /// The binding of codes and links to the browser that asked for them: its anti-forgery
    /// token `csrf` (a random value in a signed cookie of that browser only), hashed under each
    /// accepted key, current first.
    pub(super) fn browser_binding(&self, csrf: &str) -> Vec<SecretHash> {
        self.keys.load().hashes("browser", &[csrf.as_bytes()])
    }

    /// A new one-time code: `code_length` random digits.
    pub(super) fn new_code(&self) -> String {
        let mut rng = rand::rng();
        (0..self.config.code_length)
            .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
            .collect()
    }

    /// Stores a new code and its link token for (ns, email), replacing any earlier one. `false`
    /// when the store failed: the caller logs it and notes the failure for the code form.
    pub(super) async fn store_code(
        &self,
        ns: &str,
        email: &str,
        record: CodeRecord,
        token: TokenRecord,
    ) -> bool {
        let store = self.store.clone();
        let (ns, email) = (ns.to_owned(), email.to_owned());
        let stored =
            tokio::task::spawn_blocking(move || store.issue_code(&ns, &email, &record, &token))
                .await;
        matches!(stored, Ok(Ok(())))
    }

    /// Mails a code, retried while the code is valid (a newer code for the same (ns, email)
    /// replaces it). Sent: counted, an earlier failure forgotten, and `sent` written to the audit
    /// log with the time of sending. Failed for good: logged, counted and noted for the code
    /// form. Replaced or dropped at shutdown: nothing.
    pub(super) async fn mail_code(
        &self,
        site: &SiteAuth,
        ns: &str,
        email: &str,
        outgoing: Outgoing,
        flow: Flow,
        sent: AuditEvent,
    ) {
        let delivery = Delivery {
            useful_for: Some(self.config.code_ttl),
            key: Some(send_key(ns, email)),
        };
        match self.mailer.deliver(outgoing, delivery).await {
            Ok(()) => {
                metrics::global().login(&site.name, flow, LoginEvent::CodeSent);
                self.clear_send_failure(ns, email);
                let event = AuditEvent {
                    at: self.now(),
                    ..sent
                };
                let store = self.store.clone();
                let _ = tokio::task::spawn_blocking(move || store.audit(&event)).await;
            }
            Err(MailError::Replaced | MailError::Stopped) => {}
            Err(e) => {
                match flow {
                    Flow::Visitor => {
                        tracing::warn!(site = %site.name, domain = email_domain(email), error = %e, "sign-in mail not sent");
                        metrics::global().mail_failed(MailKind::Login);
                    }
                    Flow::Admin => {
                        tracing::warn!(site = %site.name, error = %e, "admin sign-in mail not sent");
                        metrics::global().mail_failed(MailKind::Admin);
                    }
                }
                self.note_send_failure(ns, email);
            }
        }
    }

    /// Stores a new session `record` under a fresh id hashed for `purpose`, with the last
    /// sign-in on `pages` and the audit `event`, in one write. Returns the id and the keys that
    /// hashed it: its cookie must be signed with the same ones, even if a rotation happens now.
    pub(super) async fn store_session(
        self: &Arc<Self>,
        purpose: &'static str,
        record: SessionRecord,
        pages: Vec<String>,
        event: AuditEvent,
    ) -> Result<(String, Arc<Keys>), HttpError> {
        let session_id = random_token(32);
        let keys = self.keys.load_full();
        let hash = keys.hash(purpose, &[session_id.as_bytes()]);
        let auth = self.clone();
        blocking(move || {
            auth.store
                .create_session(&hash, &record, &pages, &event)
                .map_err(HttpError::store)
        })
        .await?;
        Ok((session_id, keys))
    }

    /// Deletes the session stored under `hash`, writing `event` to the audit log if there was
    /// one.
    pub(super) async fn end_session(
        self: &Arc<Self>,
        hash: SecretHash,
        event: AuditEvent,
    ) -> Result<(), HttpError> {
        let auth = self.clone();
        blocking(move || {
            auth.store
                .delete_session(&hash, Some(&event))
                .map_err(HttpError::store)
        })
        .await
    }

    /// Writes `event` to the audit log; a failure is logged, and the request goes on.
    pub(super) async fn write_audit(self: &Arc<Self>, event: AuditEvent) {
        let auth = self.clone();
        match tokio::task::spawn_blocking(move || auth.store.audit(&event)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "audit write failed"),
            Err(e) => tracing::warn!(error = %e, "audit task failed"),
        }
    }
}

pub(super) fn send_key(site: &str, email: &str) -> String {
    format!("{site}\0{email}")
}

/// Whether `stored` equals any of `candidates` (the hashes under each accepted key). Every
/// comparison is made, in constant time, so the timing says nothing about which one matched.
pub(super) fn matches_any(stored: &SecretHash, candidates: &[SecretHash]) -> bool {
    candidates
        .iter()
        .fold(subtle::Choice::from(0), |found, c| found | stored.ct_eq(c))
        .into()
}

/// The part of an address after `@`, the most a log line says about who signed in.
pub(super) fn email_domain(email: &str) -> &str {
    email.rsplit_once('@').map_or("", |(_, d)| d)
}

/// URL-safe random text from `bytes` random bytes.
pub(super) fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Whether the browser's origin headers (when it sends them) say the request comes from this
/// very origin: the same scheme (`secure`: the visitor reached the site over HTTPS) and the same
/// host and port as the request's effective authority, which the gateway has put in `Host` for
/// every request, HTTP/2's `:authority` included. Stricter than the visitors' check: a sibling
/// subdomain (`same-site`) is refused.
///
/// pagegate's pages send `Referrer-Policy: no-referrer`, under which browsers send `Origin: null`
/// with a form POST even to the same origin; the fetch metadata (`Sec-Fetch-Site`), which a page
/// cannot forge, then decides.
pub(super) fn same_origin(headers: &http::HeaderMap, secure: bool) -> bool {
    let fetch_site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
    if let Some(site) = fetch_site {
        if !(site.eq_ignore_ascii_case(b"same-origin") || site.eq_ignore_ascii_case(b"none")) {
            return false;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if origin == "null" && fetch_site.is_some_and(|s| s.eq_ignore_ascii_case(b"same-origin")) {
        return true;
    }
    let scheme = if secure { "https" } else { "http" };
    let Some((origin_scheme, origin_authority)) = origin.split_once("://") else {
        return false;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    origin_scheme.eq_ignore_ascii_case(scheme)
        && without_default_port(origin_authority.trim_end_matches('/'), scheme)
            .eq_ignore_ascii_case(without_default_port(host, scheme))
}

/// `authority` without the scheme's default port, as browsers write an `Origin`.
fn without_default_port<'a>(authority: &'a str, scheme: &str) -> &'a str {
    let default = if scheme == "https" { ":443" } else { ":80" };
    authority.strip_suffix(default).unwrap_or(authority)
}

pub(super) async fn read_form(
    req: Request<Incoming>,
) -> Result<(http::HeaderMap, HashMap<String, String>), HttpError> {
    let (parts, body) = req.into_parts();
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(HttpError::BadRequest(
            "Expected a form (application/x-www-form-urlencoded).",
        ));
    }
    let form = read_urlencoded(body, MAX_FORM).await?;
    Ok((parts.headers, form))
}

/// The fields of an `application/x-www-form-urlencoded` body of at most `limit` bytes; the sign-in
/// forms and the admin page's read theirs through it.
pub(crate) async fn read_urlencoded(
    body: Incoming,
    limit: usize,
) -> Result<HashMap<String, String>, HttpError> {
    let bytes = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|_| HttpError::BadRequest(FORM_CUT_OFF))?
        .to_bytes();
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}

/// Why a form that was too large, or whose connection broke, was refused.
pub(crate) const FORM_CUT_OFF: &str = "The form is too large or was cut off.";

pub(super) fn query_map<B>(req: &Request<B>) -> HashMap<String, String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn origin_checks() {
        let plain = |pairs: &[(&str, &str)]| same_origin(&headers(pairs), false);
        let tls = |pairs: &[(&str, &str)]| same_origin(&headers(pairs), true);
        assert!(plain(&[("host", "a.example")]));
        assert!(tls(&[
            ("host", "a.example"),
            ("origin", "https://a.example")
        ]));
        assert!(tls(&[
            ("host", "a.example:443"),
            ("origin", "https://a.example")
        ]));
        assert!(plain(&[
            ("host", "a.example:8080"),
            ("origin", "http://a.example:8080")
        ]));
        assert!(!plain(&[
            ("host", "a.example"),
            ("origin", "https://evil.example")
        ]));
        assert!(!plain(&[("host", "a.example"), ("origin", "null")]));
        // The same host over the other scheme is another origin.
        assert!(!tls(&[
            ("host", "a.example"),
            ("origin", "http://a.example")
        ]));
        assert!(!plain(&[
            ("host", "a.example"),
            ("origin", "https://a.example")
        ]));
        // Without an authority to compare with, an Origin is never taken as ours.
        assert!(!tls(&[("origin", "https://a.example")]));
        // A form on a `Referrer-Policy: no-referrer` page, as Chromium and Firefox send it.
        assert!(plain(&[
            ("host", "a.example"),
            ("origin", "null"),
            ("sec-fetch-site", "same-origin")
        ]));
        assert!(!plain(&[
            ("host", "a.example"),
            ("sec-fetch-site", "cross-site")
        ]));
        // The admin forms' cases: only the site's own origin, whatever the fetch metadata says.
        for bad in [
            [
                ("origin", "https://evil.example"),
                ("sec-fetch-site", "none"),
            ],
            [
                ("origin", "https://a.example"),
                ("sec-fetch-site", "same-site"),
            ],
            [
                ("origin", "https://a.example"),
                ("sec-fetch-site", "cross-site"),
            ],
        ] {
            let mut h = headers(&bad);
            h.insert(header::HOST, HeaderValue::from_static("a.example"));
            assert!(!same_origin(&h, true), "{bad:?}");
        }
    }

    #[test]
    fn tokens_are_url_safe_and_distinct() {
        let a = random_token(32);
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(a, random_token(32));
    }
}
