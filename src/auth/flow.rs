//! The sign-in endpoints under `{prefix}/`:
//!
//! | method | path      | what                                                          |
//! |--------|-----------|---------------------------------------------------------------|
//! | GET    | `/login`  | the email form (`?next=` the page asked for)                   |
//! | POST   | `/login`  | request a code: same answer whether or not the email is listed |
//! | POST   | `/verify` | check a code, sign in, 303 to `next`                           |
//! | GET    | `/link`   | the one-button confirm page for a mailed link (`?t=` token)    |
//! | POST   | `/link`   | spend the link's token, sign in, 303 to `next`                 |
//! | GET    | `/signin` | a shop's sign-in link: the confirm page ([`super::signin`])    |
//! | POST   | `/signin` | spend a shop's sign-in link, sign in, 303 to the page          |
//! | POST   | `/logout` | end the session, clear the cookie                              |

use std::collections::HashMap;
use std::sync::Arc;

use cookie::SameSite;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::keys::CookiePurpose;
use super::steps::{email_domain, matches_any, query_map, random_token, read_form, same_origin};
use super::{Auth, SiteAuth, Visitor, cookies, input};
use crate::body::Body;
use crate::config::Language;
use crate::error::HttpError;
use crate::mail::Outgoing;
use crate::metrics::{self, Flow, LoginEvent};
use crate::routing::SiteId;
use crate::runtime::blocking;
use crate::store::{
    AuditEvent, AuditKind, CodeCheck, CodeRecord, SecretHash, SessionRecord, TokenRecord,
};
use crate::ui::{Frame, LoginMail, Page, html_response, method_not_allowed, redirect};

/// Per-request facts the handlers share.
pub(super) struct Ctx<'a> {
    pub(super) auth: &'a Arc<Auth>,
    site_id: SiteId,
    pub(super) site: &'a SiteAuth,
    visitor: Visitor,
    pub(super) lang: Language,
    /// The CSRF token for forms rendered in this answer, and the cookie to set if it is new.
    pub(super) csrf: String,
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
        let (csrf, csrf_cookie) = self.csrf_token(
            site.cookies.csrf(visitor.secure),
            CookiePurpose::Csrf,
            &req,
            visitor.secure,
        );
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
            (&Method::GET | &Method::HEAD, "/link") => ctx.link_confirm(&req).await?,
            (&Method::POST, "/link") => ctx.link_sign_in(req).await?,
            (&Method::GET | &Method::HEAD, "/signin") => ctx.signin_confirm(&req).await?,
            (&Method::POST, "/signin") => ctx.signin_spend(req).await?,
            (&Method::POST, "/logout") => ctx.logout(req).await?,
            (_, "/login" | "/verify" | "/link" | "/signin" | "/logout") => {
                return Ok(method_not_allowed("GET, HEAD, POST"));
            }
            _ => return Err(HttpError::NotFound),
        };
        if let Some(cookie) = ctx.csrf_cookie {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        Ok(response)
    }
}

impl Ctx<'_> {
    pub(super) fn frame(&self) -> Frame<'_> {
        Frame {
            site_title: &self.site.title,
            page_title: None,
            prefix: &self.auth.prefix,
        }
    }

    /// This browser, as codes and links are bound to it.
    fn browser(&self) -> Vec<SecretHash> {
        self.auth.browser_binding(&self.csrf)
    }

    pub(super) fn frame_for<'b>(&'b self, next: &str) -> Frame<'b> {
        Frame {
            site_title: &self.site.title,
            page_title: Some(
                self.page_for(next)
                    .map_or(self.site.title.as_str(), |p| p.title.as_str()),
            ),
            prefix: &self.auth.prefix,
        }
    }

    pub(super) fn render(
        &self,
        status: StatusCode,
        page: &Page<'_>,
    ) -> Result<Response<Body>, HttpError> {
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
    pub(super) fn next_or_default(&self, raw: Option<&str>) -> String {
        raw.and_then(input::safe_next)
            .map(str::to_owned)
            .or_else(|| self.site.pages.first().map(|p| p.first_path.clone()))
            .unwrap_or_else(|| "/".into())
    }

    fn email_form(&self, req: &Request<Incoming>) -> Result<Response<Body>, HttpError> {
        let query = query_map(req);
        let next = self.next_or_default(query.get("next").map(String::as_str));
        self.login_form(StatusCode::OK, "", &next, None)
    }

    /// The email form, with what was typed and the problem with it.
    fn login_form(
        &self,
        status: StatusCode,
        email: &str,
        next: &str,
        error: Option<&str>,
    ) -> Result<Response<Body>, HttpError> {
        self.render(
            status,
            &Page::EmailForm {
                frame: self.frame_for(next),
                next,
                csrf: &self.csrf,
                email,
                error,
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

    /// Forms must come from this site: the signed CSRF cookie matches the form's token, and the
    /// browser does not say the request is cross-site.
    pub(super) fn csrf_ok(
        &self,
        headers: &http::HeaderMap,
        form: &HashMap<String, String>,
    ) -> bool {
        let given = form.get("csrf").map(String::as_str).unwrap_or("");
        let secure = self.visitor.secure;
        self.auth.csrf_matches(
            headers,
            secure,
            (self.site.cookies.csrf(secure), CookiePurpose::Csrf),
            given,
        )
    }

    async fn request_code(&self, req: Request<Incoming>) -> Result<Response<Body>, HttpError> {
        let (headers, form) = read_form(req).await?;
        let next = self.next_or_default(form.get("next").map(String::as_str));
        let raw_email = form.get("email").map(String::as_str).unwrap_or("");
        if !self.csrf_ok(&headers, &form) {
            return self.login_form(StatusCode::FORBIDDEN, raw_email, &next, Some("csrf"));
        }
        let Some(email) = input::normalize_email(raw_email) else {
            return self.login_form(
                StatusCode::BAD_REQUEST,
                raw_email,
                &next,
                Some("invalid_email"),
            );
        };
        if let Err(wait) = self
            .auth
            .limits
            .code_request(self.visitor.ip, &self.site.name, &email)
            .await
            .map_err(HttpError::store)?
        {
            tracing::info!(site = %self.site.name, domain = email_domain(&email), "code request rate-limited");
            self.count(LoginEvent::RateLimited);
            return self.auth.rate_limited(self.site, self.lang, wait);
        }
        self.count(LoginEvent::CodeRequested);
        // The answer is the same whether or not the email is listed, and so is the work done
        // before answering: the same two reads. Issuing and mailing happen after, in the background.
        if let Some(page) = self.page_for(&next) {
            // Both reads happen for every email, listed or not.
            let browser = self.browser();
            let (page_id, site, asked, policy, at) = (
                page.id.clone(),
                self.site.name.clone(),
                email.clone(),
                self.auth.policy(),
                self.auth.now(),
            );
            let in_browser = browser.clone();
            let (client, locked) = self
                .auth
                .read(move |store| {
                    let client = store.client(&page_id, &asked)?;
                    let locked = store.is_locked(&site, &asked, &in_browser, at, policy)?;
                    Ok((client, locked))
                })
                .await
                .map_err(HttpError::store)?;
            let eligible = client.is_some_and(|c| c.has_access(self.auth.now())) && !locked;
            if eligible {
                let auth = self.auth.clone();
                let (site_id, page_id, lang, next) =
                    (self.site_id, page.id.clone(), self.lang, next.clone());
                let email = email.clone();
                let browser = browser.first().copied();
                self.auth.in_background(async move {
                    auth.issue_and_mail(site_id, &page_id, &email, &next, lang, browser)
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
        if let Err(wait) = self
            .auth
            .limits
            .verify_attempt(self.visitor.ip)
            .await
            .map_err(HttpError::store)?
        {
            self.count(LoginEvent::RateLimited);
            return self.auth.rate_limited(self.site, self.lang, wait);
        }
        let Some(email) = input::normalize_email(raw_email) else {
            return self.code_form(
                StatusCode::BAD_REQUEST,
                raw_email,
                &next,
                Some("wrong_code"),
            );
        };
        if self.auth.take_send_failure(&self.site.name, &email) {
            return self.code_form(
                StatusCode::SERVICE_UNAVAILABLE,
                &email,
                &next,
                Some("send_failed"),
            );
        }
        let typed = form.get("code").map(String::as_str).unwrap_or("");
        let checked = self
            .auth
            .check_code(&self.site.name, &email, "code", typed, self.browser())
            .await?;
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

    async fn link_confirm(&self, req: &Request<Incoming>) -> Result<Response<Body>, HttpError> {
        let query = query_map(req);
        let token = query.get("t").map(String::as_str).unwrap_or("");
        let hashes = self.auth.keys.load().hashes("token", &[token.as_bytes()]);
        match self.peek_link(hashes).await? {
            Some(record) => self.confirm_page(StatusCode::OK, token, &record, None),
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

    /// The one-button page a mailed link opens, naming the account it signs into. Opened in a
    /// browser other than the one that asked for it, it warns that someone may have sent their
    /// own link and asks the visitor to confirm the account.
    fn confirm_page(
        &self,
        status: StatusCode,
        token: &str,
        record: &TokenRecord,
        error: Option<&str>,
    ) -> Result<Response<Body>, HttpError> {
        self.render(
            status,
            &Page::LinkConfirm {
                frame: self.frame_for(&record.next),
                token,
                next: &record.next,
                csrf: &self.csrf,
                account: &input::mask_email(&record.email),
                elsewhere: !self.asked_here(record),
                error,
            },
        )
    }

    /// The live link token of this site stored under one of `hashes` (its hash under each
    /// accepted key), without spending it.
    async fn peek_link(&self, hashes: Vec<SecretHash>) -> Result<Option<TokenRecord>, HttpError> {
        let at = self.auth.now();
        let found = self
            .auth
            .read(move |store| {
                for hash in &hashes {
                    if let Some(record) = store.peek_token(hash, at)? {
                        return Ok(Some(record));
                    }
                }
                Ok(None)
            })
            .await
            .map_err(HttpError::store)?;
        Ok(found.filter(|record| record.site == self.site.name))
    }

    /// Whether this browser asked for the link. A link stored by an earlier version knows no
    /// browser and counts as asked for elsewhere.
    fn asked_here(&self, record: &TokenRecord) -> bool {
        record
            .browser
            .is_some_and(|b| matches_any(&b, &self.browser()))
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
        // Only a live link of this site is spent (one posted to another site's host stays
        // usable where it belongs), and one opened in another browser only once the visitor
        // confirmed the account it signs into.
        let Some(record) = self.peek_link(hashes.clone()).await? else {
            return self.link_gone();
        };
        let confirmed = form.get("confirm_account").is_some_and(|v| v == "yes");
        if !confirmed && !self.asked_here(&record) {
            return self.confirm_page(
                StatusCode::BAD_REQUEST,
                token,
                &record,
                Some("link_confirm_account"),
            );
        }
        let auth = self.auth.clone();
        let taken = blocking(move || {
            for hash in &hashes {
                if let Some(record) = auth
                    .store
                    .take_token(hash, auth.now())
                    .map_err(HttpError::store)?
                {
                    return Ok(Some(record));
                }
            }
            Ok::<_, HttpError>(None)
        })
        .await?;
        match taken.filter(|r| r.site == self.site.name) {
            Some(record) => {
                self.count(LoginEvent::LinkVerified);
                let next = self.next_or_default(Some(&record.next));
                self.sign_in(&record.email, &next).await
            }
            None => self.link_gone(),
        }
    }

    /// The answer to a link that is used, expired or not this site's.
    fn link_gone(&self) -> Result<Response<Body>, HttpError> {
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

    async fn logout(&self, req: Request<Incoming>) -> Result<Response<Body>, HttpError> {
        // Sites link to logout from their own pages, which cannot carry pagegate's CSRF token;
        // a cross-site logout is refused by the browser's own origin headers instead.
        if !same_origin(req.headers(), self.visitor.secure) {
            return Err(HttpError::BadRequest("Sign-out must come from this site."));
        }
        let name = self.site.cookies.session(self.visitor.secure);
        let signed = self
            .auth
            .keys
            .load()
            .read_cookie(req.headers(), name, CookiePurpose::Session)
            .map(|(id, by)| by.hash("session", &[id.as_bytes()]));
        if let Some(hash) = signed {
            let event = self.event(AuditKind::Logout, None, "");
            self.auth.end_session(hash, event).await?;
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
    pub(super) async fn sign_in(
        &self,
        email: &str,
        next: &str,
    ) -> Result<Response<Body>, HttpError> {
        let now = self.auth.now();
        let record = SessionRecord {
            site: self.site.name.clone(),
            email: email.to_owned(),
            created_at: now,
            expires_at: now.saturating_add(self.site.max_lifetime.as_secs() as i64),
        };
        let pages: Vec<String> = self.site.pages.iter().map(|p| p.id.clone()).collect();
        let event = self.event(AuditKind::Login, Some(email), "");
        let (session_id, keys) = self
            .auth
            .store_session("session", record, pages, event)
            .await?;
        tracing::info!(site = %self.site.name, domain = email_domain(email), "signed in");
        let mut response = redirect(StatusCode::SEE_OTHER, next);
        let cookie = cookies::set_signed(
            self.site.cookies.session(self.visitor.secure),
            &session_id,
            self.visitor.secure,
            SameSite::Lax,
            Some(self.site.max_lifetime),
            keys.cookie_key(CookiePurpose::Session),
        )
        .ok_or_else(|| HttpError::Internal("session cookie could not be built".into()))?;
        response.headers_mut().append(header::SET_COOKIE, cookie);
        Ok(response)
    }

    pub(super) fn event(&self, kind: AuditKind, email: Option<&str>, detail: &str) -> AuditEvent {
        AuditEvent {
            at: self.auth.now(),
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

    pub(super) fn count(&self, event: LoginEvent) {
        metrics::global().login(&self.site.name, Flow::Visitor, event);
    }

    async fn audit(&self, kind: AuditKind, email: Option<&str>, detail: &str) {
        self.auth.write_audit(self.event(kind, email, detail)).await;
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
        browser: Option<SecretHash>,
    ) {
        let site = &self.sites[site_id];
        let Some(page) = site.pages.iter().find(|p| p.id == page_id) else {
            return;
        };
        let Some(public_url) = site.public_url.as_deref() else {
            tracing::error!(site = %site.name, "cannot mail a sign-in link: the site has no public_url");
            return;
        };
        let code = self.new_code();
        let token = random_token(32);
        let now = self.now();
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
            browser,
        };
        let token_record = TokenRecord {
            site: site.name.clone(),
            email: email.to_owned(),
            page: page.id.clone(),
            next: next.to_owned(),
            expires_at,
            browser,
        };
        let (page_id, asked) = (page.id.clone(), email.to_owned());
        let name = self
            .read(move |store| store.client(&page_id, &asked))
            .await
            .ok()
            .flatten()
            .map(|c| c.name)
            .unwrap_or_default();
        if !self
            .store_code(&site.name, email, record, token_record)
            .await
        {
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
        let sent = AuditEvent {
            at: 0, // set when the mail is sent
            kind: AuditKind::CodeSent,
            site: Some(site.name.clone()),
            page: Some(page.id.clone()),
            email: Some(email.to_owned()),
            actor: "visitor".into(),
            detail: String::new(),
        };
        self.mail_code(site, &site.name, email, outgoing, Flow::Visitor, sent)
            .await;
    }
}
