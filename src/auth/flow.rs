//! The sign-in endpoints under `{prefix}/`:
//!
//! | method | path      | what                                                          |
//! |--------|-----------|---------------------------------------------------------------|
//! | GET    | `/login`  | the email form (`?next=` the page asked for)                   |
//! | POST   | `/login`  | request a code: same answer whether or not the email is listed |
//! | POST   | `/verify` | check a code, sign in, 303 to `next`                           |
//! | GET    | `/link`   | the one-button confirm page for a mailed link (`?t=` token)    |
//! | POST   | `/link`   | spend the link's token, sign in, 303 to `next`                 |
//! | POST   | `/logout` | end the session, clear the cookie                              |

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookie::SameSite;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rand::{Rng, RngCore};
use subtle::ConstantTimeEq;

use super::{Auth, SiteAuth, Visitor, cookies, input, redirect, store_error};
use crate::body::Body;
use crate::config::Language;
use crate::error::HttpError;
use crate::mail::{Delivery, MailError, Outgoing};
use crate::metrics::{self, Flow, LoginEvent, MailKind};
use crate::routing::SiteId;
use crate::store::{
    AuditEvent, AuditKind, CodeCheck, CodeRecord, SecretHash, SessionRecord, TokenRecord, now,
};
use crate::ui::{Frame, LoginMail, Page, html_response};

/// Largest form body accepted.
const MAX_FORM: usize = 16 * 1024;

/// Per-request facts the handlers share.
struct Ctx<'a> {
    auth: &'a Arc<Auth>,
    site_id: SiteId,
    site: &'a SiteAuth,
    visitor: Visitor,
    lang: Language,
    /// The CSRF token for forms rendered in this answer, and the cookie to set if it is new.
    csrf: String,
    csrf_cookie: Option<HeaderValue>,
}

impl Auth {
    /// Answers a request under `{prefix}/` other than the health check. `sub_path` is the part
    /// after the prefix.
    pub async fn endpoint(
        self: &Arc<Self>,
        site_id: SiteId,
        sub_path: &str,
        req: Request<Incoming>,
        visitor: Visitor,
    ) -> Result<Response<Body>, HttpError> {
        let site = &self.sites[site_id];
        let (csrf, csrf_cookie) = self.csrf_token(site, &req, visitor.secure);
        let ctx = Ctx {
            auth: self,
            site_id,
            site,
            visitor,
            lang: self.language(site, &req),
            csrf,
            csrf_cookie,
        };
        let method = req.method().clone();
        let mut response = match (&method, sub_path) {
            (&Method::GET | &Method::HEAD, "/login") => ctx.email_form(&req)?,
            (&Method::POST, "/login") => ctx.request_code(req).await?,
            (&Method::POST, "/verify") => ctx.verify(req).await?,
            (&Method::GET | &Method::HEAD, "/link") => ctx.link_confirm(&req)?,
            (&Method::POST, "/link") => ctx.link_sign_in(req).await?,
            (&Method::POST, "/logout") => ctx.logout(req).await?,
            (_, "/login" | "/verify" | "/link" | "/logout") => {
                return Ok(method_not_allowed("GET, HEAD, POST"));
            }
            _ => return Err(HttpError::NotFound),
        };
        if let Some(cookie) = ctx.csrf_cookie {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        Ok(response)
    }

    /// The site's CSRF token: the one in the visitor's signed cookie, or a new one to set.
    fn csrf_token<B>(
        &self,
        site: &SiteAuth,
        req: &Request<B>,
        secure: bool,
    ) -> (String, Option<HeaderValue>) {
        let name = site.cookies.csrf(secure);
        let keys = self.keys.load();
        if let Some((token, _)) = keys.read_cookie(req.headers(), name) {
            return (token, None);
        }
        let token = random_token(18);
        let cookie = cookies::set_signed(
            name,
            &token,
            secure,
            SameSite::Strict,
            None,
            keys.cookie_key(),
        );
        (token, cookie)
    }
}

impl Ctx<'_> {
    fn frame(&self) -> Frame<'_> {
        Frame {
            site_title: &self.site.title,
            page_title: None,
            prefix: &self.auth.prefix,
        }
    }

    fn frame_for<'b>(&'b self, next: &str) -> Frame<'b> {
        Frame {
            site_title: &self.site.title,
            page_title: Some(
                self.page_for(next)
                    .map_or(self.site.title.as_str(), |p| p.title.as_str()),
            ),
            prefix: &self.auth.prefix,
        }
    }

    fn render(&self, status: StatusCode, page: &Page<'_>) -> Result<Response<Body>, HttpError> {
        let html = self
            .auth
            .templates
            .page(page, self.lang)
            .map_err(|e| HttpError::Internal(format!("template: {e}")))?;
        Ok(html_response(status, html))
    }

    /// The page a `next` target belongs to, or the site's first page.
    fn page_for(&self, next: &str) -> Option<&super::PageAuth> {
        let path = next.split(['?', '#']).next().unwrap_or(next);
        let matched = self
            .site
            .matcher
            .pages_for(path)
            .ok()
            .and_then(|set| set.first().copied());
        matched
            .or(if self.site.pages.is_empty() {
                None
            } else {
                Some(0)
            })
            .and_then(|i| self.site.pages.get(i))
    }

    /// A safe `next`: the one given if it stays on the site, else the first protected path.
    fn next_or_default(&self, raw: Option<&str>) -> String {
        raw.and_then(input::safe_next)
            .map(str::to_owned)
            .or_else(|| self.site.pages.first().map(|p| p.first_path.clone()))
            .unwrap_or_else(|| "/".into())
    }

    fn email_form(&self, req: &Request<Incoming>) -> Result<Response<Body>, HttpError> {
        let query = query_map(req);
        let next = self.next_or_default(query.get("next").map(String::as_str));
        self.render(
            StatusCode::OK,
            &Page::EmailForm {
                frame: self.frame_for(&next),
                next: &next,
                csrf: &self.csrf,
                email: "",
                error: None,
            },
        )
    }

    fn code_form(
        &self,
        status: StatusCode,
        email: &str,
        next: &str,
        error: Option<&str>,
    ) -> Result<Response<Body>, HttpError> {
        self.render(
            status,
            &Page::CodeForm {
                frame: self.frame_for(next),
                email,
                next,
                csrf: &self.csrf,
                code_length: self.auth.config.code_length,
                error,
            },
        )
    }

    fn rate_limited(&self, wait: Duration) -> Result<Response<Body>, HttpError> {
        let minutes = wait.as_secs().div_ceil(60).max(1);
        let mut response = self.render(
            StatusCode::TOO_MANY_REQUESTS,
            &Page::RateLimited {
                frame: self.frame(),
                retry_after_minutes: minutes,
            },
        )?;
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(wait.as_secs().max(1)),
        );
        Ok(response)
    }

    /// Forms must come from this site: the signed CSRF cookie matches the form's token, and the
    /// browser does not say the request is cross-site.
    fn csrf_ok(&self, headers: &http::HeaderMap, form: &HashMap<String, String>) -> bool {
        let cookie = self
            .auth
            .keys
            .load()
            .read_cookie(headers, self.site.cookies.csrf(self.visitor.secure))
            .map(|(token, _)| token);
        let given = form.get("csrf").map(String::as_str).unwrap_or("");
        let token_ok = cookie.is_some_and(|c| c.as_bytes().ct_eq(given.as_bytes()).into());
        token_ok && same_origin(headers)
    }

    async fn request_code(&self, req: Request<Incoming>) -> Result<Response<Body>, HttpError> {
        let (headers, form) = read_form(req).await?;
        let next = self.next_or_default(form.get("next").map(String::as_str));
        let raw_email = form.get("email").map(String::as_str).unwrap_or("");
        if !self.csrf_ok(&headers, &form) {
            return self.render(
                StatusCode::FORBIDDEN,
                &Page::EmailForm {
                    frame: self.frame_for(&next),
                    next: &next,
                    csrf: &self.csrf,
                    email: raw_email,
                    error: Some("csrf"),
                },
            );
        }
        let Some(email) = input::normalize_email(raw_email) else {
            return self.render(
                StatusCode::BAD_REQUEST,
                &Page::EmailForm {
                    frame: self.frame_for(&next),
                    next: &next,
                    csrf: &self.csrf,
                    email: raw_email,
                    error: Some("invalid_email"),
                },
            );
        };
        if let Err(wait) = self
            .auth
            .limits
            .code_request(self.visitor.ip, &self.site.name, &email)
        {
            tracing::info!(site = %self.site.name, domain = email_domain(&email), "code request rate-limited");
            self.count(LoginEvent::RateLimited);
            return self.rate_limited(wait);
        }
        self.count(LoginEvent::CodeRequested);
        // The answer is the same whether or not the email is listed, and so is the work done
        // before answering: the same two reads. Issuing and mailing happen after, in the background.
        if let Some(page) = self.page_for(&next) {
            // Both reads happen for every email, listed or not.
            let client = self
                .auth
                .store
                .client(&page.id, &email)
                .map_err(store_error)?;
            let locked = self
                .auth
                .store
                .is_locked(&self.site.name, &email, now(), self.auth.policy())
                .map_err(store_error)?;
            let eligible = client.is_some_and(|c| c.has_access(now())) && !locked;
            if eligible {
                let auth = self.auth.clone();
                let (site_id, page_id, lang, next) =
                    (self.site_id, page.id.clone(), self.lang, next.clone());
                let email = email.clone();
                tokio::spawn(async move {
                    auth.issue_and_mail(site_id, &page_id, &email, &next, lang)
                        .await
                });
            }
        }
        self.code_form(StatusCode::OK, &email, &next, None)
    }

    async fn verify(&self, req: Request<Incoming>) -> Result<Response<Body>, HttpError> {
        let (headers, form) = read_form(req).await?;
        let next = self.next_or_default(form.get("next").map(String::as_str));
        let raw_email = form.get("email").map(String::as_str).unwrap_or("");
        if !self.csrf_ok(&headers, &form) {
            return self.code_form(StatusCode::FORBIDDEN, raw_email, &next, Some("csrf"));
        }
        if let Err(wait) = self.auth.limits.verify_attempt(self.visitor.ip) {
            self.count(LoginEvent::RateLimited);
            return self.rate_limited(wait);
        }
        let Some(email) = input::normalize_email(raw_email) else {
            return self.code_form(
                StatusCode::BAD_REQUEST,
                raw_email,
                &next,
                Some("wrong_code"),
            );
        };
        let send_failed = self
            .auth
            .failed_sends
            .lock()
            .map(|mut f| f.remove(&send_key(&self.site.name, &email)).is_some())
            .unwrap_or(false);
        if send_failed {
            return self.code_form(
                StatusCode::SERVICE_UNAVAILABLE,
                &email,
                &next,
                Some("send_failed"),
            );
        }
        let code: String = form
            .get("code")
            .map(String::as_str)
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        // A code mailed before a key rotation was hashed under the previous key.
        let expected = self.auth.keys.load().hashes(
            "code",
            &[self.site.name.as_bytes(), email.as_bytes(), code.as_bytes()],
        );
        let auth = self.auth.clone();
        let (site_name, email2, policy) =
            (self.site.name.clone(), email.clone(), self.auth.policy());
        let checked = tokio::task::spawn_blocking(move || {
            auth.store
                .check_code(&site_name, &email2, now(), policy, &|record| {
                    matches_any(&record.code_hash, &expected)
                })
        })
        .await
        .map_err(|e| HttpError::Internal(format!("code check task: {e}")))?
        .map_err(store_error)?;
        match checked {
            CodeCheck::Accepted(_) => {
                self.count(LoginEvent::CodeVerified);
                self.sign_in(&email, &next).await
            }
            CodeCheck::Rejected { .. } => {
                self.count(LoginEvent::CodeFailed);
                self.audit(AuditKind::LoginFailed, Some(&email), "wrong code")
                    .await;
                self.code_form(StatusCode::BAD_REQUEST, &email, &next, Some("wrong_code"))
            }
            CodeCheck::Locked => {
                self.count(LoginEvent::Locked);
                self.audit(AuditKind::Locked, Some(&email), "too many wrong codes")
                    .await;
                self.code_form(
                    StatusCode::TOO_MANY_REQUESTS,
                    &email,
                    &next,
                    Some("too_many_attempts"),
                )
            }
        }
    }

    fn link_confirm(&self, req: &Request<Incoming>) -> Result<Response<Body>, HttpError> {
        let query = query_map(req);
        let token = query.get("t").map(String::as_str).unwrap_or("");
        let mut record = None;
        for hash in self.auth.keys.load().hashes("token", &[token.as_bytes()]) {
            record = self
                .auth
                .store
                .peek_token(&hash, now())
                .map_err(store_error)?;
            if record.is_some() {
                break;
            }
        }
        match record.filter(|r| r.site == self.site.name) {
            Some(record) => self.render(
                StatusCode::OK,
                &Page::LinkConfirm {
                    frame: self.frame_for(&record.next),
                    token,
                    next: &record.next,
                    csrf: &self.csrf,
                },
            ),
            None => self.render(
                StatusCode::GONE,
                &Page::Message {
                    frame: self.frame(),
                    title_key: "link_invalid_title",
                    message_key: "link_invalid",
                },
            ),
        }
    }

    async fn link_sign_in(&self, req: Request<Incoming>) -> Result<Response<Body>, HttpError> {
        let (headers, form) = read_form(req).await?;
        if !self.csrf_ok(&headers, &form) {
            return self.render(
                StatusCode::FORBIDDEN,
                &Page::Message {
                    frame: self.frame(),
                    title_key: "error_title",
                    message_key: "csrf",
                },
            );
        }
        let token = form.get("token").map(String::as_str).unwrap_or("");
        let hashes = self.auth.keys.load().hashes("token", &[token.as_bytes()]);
        let auth = self.auth.clone();
        let taken = tokio::task::spawn_blocking(move || {
            for hash in &hashes {
                if let Some(record) = auth.store.take_token(hash, now())? {
                    return Ok(Some(record));
                }
            }
            Ok(None)
        })
        .await
        .map_err(|e| HttpError::Internal(format!("token task: {e}")))?
        .map_err(store_error)?;
        match taken.filter(|r| r.site == self.site.name) {
            Some(record) => {
                self.count(LoginEvent::LinkVerified);
                let next = self.next_or_default(Some(&record.next));
                self.sign_in(&record.email, &next).await
            }
            None => {
                self.count(LoginEvent::LinkFailed);
                self.render(
                    StatusCode::GONE,
                    &Page::Message {
                        frame: self.frame(),
                        title_key: "link_invalid_title",
                        message_key: "link_used",
                    },
                )
            }
        }
    }

    async fn logout(&self, req: Request<Incoming>) -> Result<Response<Body>, HttpError> {
        // Sites link to logout from their own pages, which cannot carry pagegate's CSRF token;
        // a cross-site logout is refused by the browser's own origin headers instead.
        if !same_origin(req.headers()) {
            return Err(HttpError::BadRequest("Sign-out must come from this site."));
        }
        let name = self.site.cookies.session(self.visitor.secure);
        let signed = self
            .auth
            .keys
            .load()
            .read_cookie(req.headers(), name)
            .map(|(id, by)| by.hash("session", &[id.as_bytes()]));
        if let Some(hash) = signed {
            let auth = self.auth.clone();
            let event = self.event(AuditKind::Logout, None, "");
            tokio::task::spawn_blocking(move || auth.store.delete_session(&hash, Some(&event)))
                .await
                .map_err(|e| HttpError::Internal(format!("logout task: {e}")))?
                .map_err(store_error)?;
        }
        let mut response = self.render(
            StatusCode::OK,
            &Page::LoggedOut {
                frame: self.frame(),
                home: "/",
            },
        )?;
        if let Some(clear) = cookies::clear(name, self.visitor.secure) {
            response.headers_mut().append(header::SET_COOKIE, clear);
        }
        Ok(response)
    }

    /// Creates the session, sets its cookie and sends the visitor to `next`.
    async fn sign_in(&self, email: &str, next: &str) -> Result<Response<Body>, HttpError> {
        let now = now();
        let session_id = random_token(32);
        // One set of keys for the stored hash and the cookie, even if a rotation happens now.
        let keys = self.auth.keys.load_full();
        let hash = keys.hash("session", &[session_id.as_bytes()]);
        let record = SessionRecord {
            site: self.site.name.clone(),
            email: email.to_owned(),
            created_at: now,
            expires_at: now.saturating_add(self.site.max_lifetime.as_secs() as i64),
        };
        let pages: Vec<String> = self.site.pages.iter().map(|p| p.id.clone()).collect();
        let event = self.event(AuditKind::Login, Some(email), "");
        let auth = self.auth.clone();
        tokio::task::spawn_blocking(move || {
            auth.store.create_session(&hash, &record, &pages, &event)
        })
        .await
        .map_err(|e| HttpError::Internal(format!("session task: {e}")))?
        .map_err(store_error)?;
        tracing::info!(site = %self.site.name, domain = email_domain(email), "signed in");
        let mut response = redirect(StatusCode::SEE_OTHER, next);
        let cookie = cookies::set_signed(
            self.site.cookies.session(self.visitor.secure),
            &session_id,
            self.visitor.secure,
            SameSite::Lax,
            Some(self.site.max_lifetime),
            keys.cookie_key(),
        )
        .ok_or_else(|| HttpError::Internal("session cookie could not be built".into()))?;
        response.headers_mut().append(header::SET_COOKIE, cookie);
        Ok(response)
    }

    fn event(&self, kind: AuditKind, email: Option<&str>, detail: &str) -> AuditEvent {
        AuditEvent {
            at: now(),
            kind,
            site: Some(self.site.name.clone()),
            page: None,
            email: email.map(str::to_owned),
            actor: "visitor".into(),
            detail: if detail.is_empty() {
                format!("from {}", self.visitor.ip)
            } else {
                format!("{detail}, from {}", self.visitor.ip)
            },
        }
    }

    fn count(&self, event: LoginEvent) {
        metrics::global().login(&self.site.name, Flow::Visitor, event);
    }

    async fn audit(&self, kind: AuditKind, email: Option<&str>, detail: &str) {
        let event = self.event(kind, email, detail);
        let auth = self.auth.clone();
        match tokio::task::spawn_blocking(move || auth.store.audit(&event)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "audit write failed"),
            Err(e) => tracing::warn!(error = %e, "audit task failed"),
        }
    }
}

impl Auth {
    /// Issues a code and link for a listed email and mails them. Runs after the visitor already
    /// has an answer, so the answer's timing says nothing about the list. A failure is noted for
    /// the code form.
    async fn issue_and_mail(
        self: Arc<Self>,
        site_id: SiteId,
        page_id: &str,
        email: &str,
        next: &str,
        lang: Language,
    ) {
        let site = &self.sites[site_id];
        let Some(page) = site.pages.iter().find(|p| p.id == page_id) else {
            return;
        };
        let Some(public_url) = site.public_url.as_deref() else {
            tracing::error!(site = %site.name, "cannot mail a sign-in link: the site has no public_url");
            return;
        };
        let code: String = {
            let mut rng = rand::rng();
            (0..self.config.code_length)
                .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                .collect()
        };
        let token = random_token(32);
        let now = now();
        let expires_at = now.saturating_add(self.config.code_ttl.as_secs() as i64);
        let keys = self.keys.load_full();
        let record = CodeRecord {
            code_hash: keys.hash(
                "code",
                &[site.name.as_bytes(), email.as_bytes(), code.as_bytes()],
            ),
            token_hash: keys.hash("token", &[token.as_bytes()]),
            page: page.id.clone(),
            next: next.to_owned(),
            issued_at: now,
            expires_at,
        };
        let token_record = TokenRecord {
            site: site.name.clone(),
            email: email.to_owned(),
            page: page.id.clone(),
            next: next.to_owned(),
            expires_at,
        };
        let name = self
            .store
            .client(&page.id, email)
            .ok()
            .flatten()
            .map(|c| c.name)
            .unwrap_or_default();
        let store = self.store.clone();
        let (site_name, email_owned) = (site.name.clone(), email.to_owned());
        let stored = tokio::task::spawn_blocking(move || {
            store.issue_code(&site_name, &email_owned, &record, &token_record)
        })
        .await;
        if !matches!(stored, Ok(Ok(()))) {
            tracing::error!(site = %site.name, "could not store a new code");
            self.note_send_failure(&site.name, email);
            return;
        }
        let link = format!("{public_url}{}/link?t={token}", self.prefix);
        let valid_minutes = self.config.code_ttl.as_secs().div_ceil(60);
        let mail = LoginMail {
            site_title: &site.title,
            page_title: &page.title,
            name: &name,
            code: &code,
            link: &link,
            valid_minutes,
        };
        let rendered = match self.templates.login_mail(&mail, lang) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "login mail template failed");
                self.note_send_failure(&site.name, email);
                return;
            }
        };
        let outgoing = Outgoing {
            to: email.to_owned(),
            to_name: (!name.is_empty()).then_some(name.clone()),
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
        };
        // Retried while the code is valid; a newer code for the same visitor replaces it.
        let delivery = Delivery {
            useful_for: Some(self.config.code_ttl),
            key: Some(send_key(&site.name, email)),
        };
        match self.mailer.deliver(outgoing, delivery).await {
            Ok(()) => {
                metrics::global().login(&site.name, Flow::Visitor, LoginEvent::CodeSent);
                self.clear_send_failure(&site.name, email);
                let event = AuditEvent {
                    at: crate::store::now(),
                    kind: AuditKind::CodeSent,
                    site: Some(site.name.clone()),
                    page: Some(page.id.clone()),
                    email: Some(email.to_owned()),
                    actor: "visitor".into(),
                    detail: String::new(),
                };
                let store = self.store.clone();
                let _ = tokio::task::spawn_blocking(move || store.audit(&event)).await;
            }
            Err(MailError::Replaced | MailError::Stopped) => {}
            Err(e) => {
                tracing::warn!(site = %site.name, domain = email_domain(email), error = %e, "sign-in mail not sent");
                metrics::global().mail_failed(MailKind::Login);
                self.note_send_failure(&site.name, email);
            }
        }
    }

    /// Notes that the mail for (site, email) finally failed (refused for good, or retries used
    /// up), so the code form says so.
    fn note_send_failure(&self, site: &str, email: &str) {
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
fn email_domain(email: &str) -> &str {
    email.rsplit_once('@').map_or("", |(_, d)| d)
}

/// URL-safe random text from `bytes` random bytes.
pub(super) fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Whether the browser's origin headers (when it sends them) say the request comes from this
/// very origin. Stricter than the visitors' check: a sibling subdomain (`same-site`) is refused.
///
/// pagegate's pages send `Referrer-Policy: no-referrer`, under which browsers send `Origin: null`
/// with a form POST even to the same origin; the fetch metadata (`Sec-Fetch-Site`), which a page
/// cannot forge, then decides.
pub(super) fn same_origin(headers: &http::HeaderMap) -> bool {
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
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_authority = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    match (origin_authority, host) {
        (Some(o), Some(h)) => o.eq_ignore_ascii_case(h),
        (Some(_), None) => true,
        (None, _) => false,
    }
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
    let bytes = http_body_util::Limited::new(body, MAX_FORM)
        .collect()
        .await
        .map_err(|_| HttpError::BadRequest("The form is too large or was cut off."))?
        .to_bytes();
    let form = form_urlencoded::parse(&bytes).into_owned().collect();
    Ok((parts.headers, form))
}

pub(super) fn query_map<B>(req: &Request<B>) -> HashMap<String, String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

pub(super) fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = Response::new(crate::body::empty());
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
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
        assert!(same_origin(&headers(&[("host", "a.example")])));
        assert!(same_origin(&headers(&[
            ("host", "a.example"),
            ("origin", "https://a.example")
        ])));
        assert!(same_origin(&headers(&[
            ("host", "a.example:8080"),
            ("origin", "http://a.example:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "a.example"),
            ("origin", "https://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "a.example"),
            ("origin", "null")
        ])));
        // A form on a `Referrer-Policy: no-referrer` page, as Chromium and Firefox send it.
        assert!(same_origin(&headers(&[
            ("host", "a.example"),
            ("origin", "null"),
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "a.example"),
            ("sec-fetch-site", "cross-site")
        ])));
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
            assert!(!same_origin(&h), "{bad:?}");
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
