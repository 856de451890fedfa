//! Admin sign-in for the admin page, under `{prefix}/admin/`:
//!
//! | method | path             | what                                                        |
//! |--------|------------------|-------------------------------------------------------------|
//! | GET    | `/admin/login`   | the admin's email form (`?next=` an admin path)              |
//! | POST   | `/admin/login`   | request a code: same answer whether or not the email is an admin |
//! | POST   | `/admin/verify`  | check the code, start an admin session, 303 to `next`        |
//! | POST   | `/admin/logout`  | end the admin session                                        |
//!
//! It mirrors the visitors' flow (same code length and lifetime, same rate limits, mail sent in
//! the background after the answer) but never mixes with it: admin codes and sessions live in the
//! store under the namespace `admin\0{site}` ([`namespace`]) instead of the site's name, are
//! hashed for other purposes (`admin-code`, `admin-session`), and the session has its own cookie,
//! `SameSite=Strict`, for [`SESSION_LIFETIME`]. A visitor's session is never an admin's and the
//! other way round. The mail holds the code only, no link.
//!
//! Membership in `[admin] emails` is checked on every request ([`Auth::admin_request`]): an
//! address taken off the list is locked out at once, whatever session it holds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use cookie::SameSite;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::keys::CookiePurpose;
use super::steps::{random_token, read_form};
use super::{Auth, SiteAuth, Visitor, cookies, input};
use crate::body::Body;
use crate::config::Language;
use crate::error::HttpError;
use crate::mail::Outgoing;
use crate::metrics::{self, Flow, LoginEvent};
use crate::routing::SiteId;
use crate::store::{
    AuditEvent, AuditKind, CodeCheck, CodeRecord, SecretHash, SessionRecord, TokenRecord,
};
use crate::ui::{AdminFrame, AdminMail, AdminPage, html_response, method_not_allowed, redirect};
use cookies::CookieNames;

/// How long an admin session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

pub use crate::store::{admin_namespace as namespace, site_of_admin_namespace};

/// What the admin page knows about one request: language, the anti-forgery token for its forms,
/// and the signed-in admin, if any.
#[derive(Debug)]
pub struct AdminRequest {
    /// The site the request came to.
    pub site_id: SiteId,
    /// The language to answer in.
    pub lang: Language,
    /// The client's address.
    pub ip: IpAddr,
    /// Whether the request came over HTTPS.
    pub secure: bool,
    /// The CSRF token for forms in this answer.
    pub csrf: String,
    /// The signed-in admin's email: a live admin session whose email is still on the list.
    pub admin: Option<String>,
    csrf_cookie: Option<HeaderValue>,
    session_hash: Option<SecretHash>,
    names: CookieNames,
    flash_name: String,
}

impl AdminRequest {
    /// Adds the CSRF cookie to the answer when this request created the token.
    pub fn finish(&self, mut response: Response<Body>) -> Response<Body> {
        if let Some(cookie) = &self.csrf_cookie {
            response
                .headers_mut()
                .append(header::SET_COOKIE, cookie.clone());
        }
        response
    }
}

impl Auth {
    /// Reads the admin state of a request. `admins` is the configured admin list.
    pub async fn admin_request<B>(
        &self,
        site_id: SiteId,
        req: &Request<B>,
        visitor: Visitor,
        admins: &[String],
    ) -> Result<AdminRequest, HttpError> {
        let site = &self.sites[site_id];
        let names = CookieNames::for_site(&format!("admin:{}", site.name));
        let (csrf, csrf_cookie) = self.csrf_token(
            names.csrf(visitor.secure),
            CookiePurpose::AdminCsrf,
            req,
            visitor.secure,
        );
        let mut admin = None;
        let mut session_hash = None;
        // The session was stored under the hash key of the secret that signed its cookie.
        let signed = self
            .keys
            .load()
            .read_cookie(
                req.headers(),
                names.session(visitor.secure),
                CookiePurpose::AdminSession,
            )
            .map(|(id, by)| by.hash("admin-session", &[id.as_bytes()]));
        if let Some(hash) = signed {
            let access = self
                .session_access(hash, &[])
                .await
                .map_err(HttpError::store)?;
            if let Some(access) = access {
                let s = access.session;
                if s.site == namespace(&site.name)
                    && s.expires_at > self.now()
                    && admins.contains(&s.email)
                {
                    admin = Some(s.email);
                }
                session_hash = Some(hash);
            }
        }
        let flash_name = format!("{}-flash", names.session(visitor.secure));
        Ok(AdminRequest {
            site_id,
            lang: self.language(site, req),
            ip: visitor.ip,
            secure: visitor.secure,
            csrf,
            admin,
            csrf_cookie,
            session_hash,
            names,
            flash_name,
        })
    }

    /// Answers `/login`, `/verify` and `/logout` under `{prefix}/admin`.
    pub async fn admin_sign_in(
        self: &Arc<Self>,
        ar: &AdminRequest,
        sub_path: &str,
        req: Request<Incoming>,
        admins: &[String],
    ) -> Result<Response<Body>, HttpError> {
        let ctx = SignIn {
            auth: self,
            site: &self.sites[ar.site_id],
            ar,
            admins,
        };
        let method = req.method().clone();
        match (&method, sub_path) {
            (&Method::GET | &Method::HEAD, "/login") => ctx.email_form(&req),
            (&Method::POST, "/login") => ctx.request_code(req).await,
            (&Method::POST, "/verify") => ctx.verify(req).await,
            (&Method::POST, "/logout") => ctx.logout(req).await,
            (_, "/login") => Ok(method_not_allowed("GET, HEAD, POST")),
            (_, "/verify" | "/logout") => Ok(method_not_allowed("POST")),
            _ => Err(HttpError::NotFound),
        }
    }

    /// Whether a form posted to the admin page carries the right token and comes from this
    /// origin (the browser's fetch metadata, when sent, must say `same-origin`).
    pub fn admin_csrf_ok(&self, ar: &AdminRequest, headers: &http::HeaderMap, token: &str) -> bool {
        self.csrf_matches(
            headers,
            ar.secure,
            (ar.names.csrf(ar.secure), CookiePurpose::AdminCsrf),
            token,
        )
    }

    /// Path prefix of pagegate's endpoints.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Renders an admin page.
    pub(crate) fn admin_render(
        &self,
        status: StatusCode,
        page: &AdminPage<'_>,
        lang: Language,
    ) -> Result<Response<Body>, HttpError> {
        let html = self
            .templates
            .admin_page(page, lang)
            .map_err(|e| HttpError::Internal(format!("template: {e}")))?;
        Ok(html_response(status, html))
    }

    /// The frame of admin pages for this request.
    pub(crate) fn admin_frame<'a>(&'a self, ar: &'a AdminRequest) -> AdminFrame<'a> {
        AdminFrame {
            site_title: &self.sites[ar.site_id].title,
            prefix: &self.prefix,
            csrf: &ar.csrf,
            admin: ar.admin.as_deref(),
        }
    }

    /// A `Set-Cookie` carrying a short message to the page a change redirects to.
    pub(crate) fn admin_flash(&self, ar: &AdminRequest, text: &str) -> Option<HeaderValue> {
        cookies::set_signed(
            &ar.flash_name,
            text,
            ar.secure,
            SameSite::Strict,
            Some(Duration::from_secs(120)),
            self.keys.load().cookie_key(CookiePurpose::AdminFlash),
        )
    }

    /// The message a change left for this page, and the `Set-Cookie` that clears it.
    pub(crate) fn admin_take_flash<B>(
        &self,
        ar: &AdminRequest,
        req: &Request<B>,
    ) -> Option<(String, HeaderValue)> {
        let (text, _) = self.keys.load().read_cookie(
            req.headers(),
            &ar.flash_name,
            CookiePurpose::AdminFlash,
        )?;
        Some((text, cookies::clear(&ar.flash_name, ar.secure)?))
    }
}

/// Per-request facts of the sign-in handlers.
struct SignIn<'a> {
    auth: &'a Arc<Auth>,
    site: &'a SiteAuth,
    ar: &'a AdminRequest,
    admins: &'a [String],
}

impl SignIn<'_> {
    fn namespace(&self) -> String {
        namespace(&self.site.name)
    }

    fn bare_frame(&self) -> AdminFrame<'_> {
        AdminFrame {
            admin: None,
            ..self.auth.admin_frame(self.ar)
        }
    }

    fn render(
        &self,
        status: StatusCode,
        page: &AdminPage<'_>,
    ) -> Result<Response<Body>, HttpError> {
        self.auth.admin_render(status, page, self.ar.lang)
    }

    /// `next` if it is a path on the admin page, else the admin page's start.
    fn next_or_default(&self, raw: Option<&str>) -> String {
        let start = format!("{}/admin/", self.auth.prefix);
        raw.and_then(input::safe_next)
            .filter(|n| n.starts_with(&start))
            .map_or(start.clone(), str::to_owned)
    }

    fn login_form(
        &self,
        status: StatusCode,
        email: &str,
        next: &str,
        error: Option<&str>,
    ) -> Result<Response<Body>, HttpError> {
        self.render(
            status,
            &AdminPage::Login {
                frame: self.bare_frame(),
                email,
                next,
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
            &AdminPage::Code {
                frame: self.bare_frame(),
                email,
                next,
                code_length: self.auth.config.code_length,
                error,
            },
        )
    }

    fn email_form(&self, req: &Request<Incoming>) -> Result<Response<Body>, HttpError> {
        let query: HashMap<String, String> =
            form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let next = self.next_or_default(query.get("next").map(String::as_str));
        if self.ar.admin.is_some() {
            return Ok(redirect(StatusCode::SEE_OTHER, &next));
        }
        self.login_form(StatusCode::OK, "", &next, None)
    }

    async fn request_code(&self, req: Request<Incoming>) -> Result<Response<Body>, HttpError> {
        let (headers, form) = read_form(req).await?;
        let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
        let next = self.next_or_default(form.get("next").map(String::as_str));
        let raw_email = field("email");
        if !self.auth.admin_csrf_ok(self.ar, &headers, field("csrf")) {
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
        let ns = self.namespace();
        if let Err(wait) = self
            .auth
            .limits
            .code_request(self.ar.ip, &ns, &email)
            .await
            .map_err(HttpError::store)?
        {
            tracing::info!(site = %self.site.name, "admin code request rate-limited");
            self.count(LoginEvent::RateLimited);
            return self.auth.rate_limited(self.site, self.ar.lang, wait);
        }
        self.count(LoginEvent::CodeRequested);
        // The same read for every address, admin or not; the mail goes out after the answer.
        let browser = self.auth.browser_binding(&self.ar.csrf);
        let (asked, policy, at) = (email.clone(), self.auth.policy(), self.auth.now());
        let (in_ns, in_browser) = (ns.clone(), browser.clone());
        let locked = self
            .auth
            .read(move |store| store.is_locked(&in_ns, &asked, &in_browser, at, policy))
            .await
            .map_err(HttpError::store)?;
        let listed = self.admins.contains(&email);
        if listed && !locked {
            let auth = self.auth.clone();
            let (site_id, lang, email) = (self.ar.site_id, self.ar.lang, email.clone());
            let browser = browser.first().copied();
            self.auth.in_background(async move {
                auth.admin_issue_and_mail(site_id, &email, lang, browser)
                    .await
            });
        }
        self.code_form(StatusCode::OK, &email, &next, None)
    }

    async fn verify(&self, req: Request<Incoming>) -> Result<Response<Body>, HttpError> {
        let (headers, form) = read_form(req).await?;
        let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
        let next = self.next_or_default(form.get("next").map(String::as_str));
        let raw_email = field("email");
        if !self.auth.admin_csrf_ok(self.ar, &headers, field("csrf")) {
            return self.code_form(StatusCode::FORBIDDEN, raw_email, &next, Some("csrf"));
        }
        if let Err(wait) = self
            .auth
            .limits
            .verify_attempt(self.ar.ip)
            .await
            .map_err(HttpError::store)?
        {
            self.count(LoginEvent::RateLimited);
            return self.auth.rate_limited(self.site, self.ar.lang, wait);
        }
        let Some(email) = input::normalize_email(raw_email) else {
            return self.code_form(
                StatusCode::BAD_REQUEST,
                raw_email,
                &next,
                Some("wrong_code"),
            );
        };
        let ns = self.namespace();
        if self.auth.take_send_failure(&ns, &email) {
            return self.code_form(
                StatusCode::SERVICE_UNAVAILABLE,
                &email,
                &next,
                Some("send_failed"),
            );
        }
        let checked = self
            .auth
            .check_code(
                &ns,
                &email,
                "admin-code",
                field("code"),
                self.auth.browser_binding(&self.ar.csrf),
            )
            .await?;
        let listed = self.admins.contains(&email);
        match checked {
            CodeCheck::Accepted(_) if listed => {
                self.count(LoginEvent::CodeVerified);
                self.sign_in(&email, &next).await
            }
            CodeCheck::Accepted(_) | CodeCheck::Rejected { .. } => {
                self.count(LoginEvent::CodeFailed);
                self.audit(AuditKind::LoginFailed, &email, "admin, wrong code")
                    .await;
                self.code_form(StatusCode::BAD_REQUEST, &email, &next, Some("wrong_code"))
            }
            CodeCheck::Locked => {
                self.count(LoginEvent::Locked);
                self.audit(AuditKind::Locked, &email, "admin, too many wrong codes")
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

    async fn sign_in(&self, email: &str, next: &str) -> Result<Response<Body>, HttpError> {
        let now = self.auth.now();
        let record = SessionRecord {
            site: self.namespace(),
            email: email.to_owned(),
            created_at: now,
            expires_at: now.saturating_add(SESSION_LIFETIME.as_secs() as i64),
        };
        let event = self.event(AuditKind::Login, email, "admin sign-in");
        let (session_id, keys) = self
            .auth
            .store_session("admin-session", record, Vec::new(), event)
            .await?;
        tracing::info!(site = %self.site.name, "admin signed in");
        let mut response = redirect(StatusCode::SEE_OTHER, next);
        let cookie = cookies::set_signed(
            self.ar.names.session(self.ar.secure),
            &session_id,
            self.ar.secure,
            SameSite::Strict,
            Some(SESSION_LIFETIME),
            keys.cookie_key(CookiePurpose::AdminSession),
        )
        .ok_or_else(|| HttpError::Internal("admin session cookie could not be built".into()))?;
        response.headers_mut().append(header::SET_COOKIE, cookie);
        Ok(response)
    }

    async fn logout(&self, req: Request<Incoming>) -> Result<Response<Body>, HttpError> {
        let (headers, form) = read_form(req).await?;
        let token = form.get("csrf").map(String::as_str).unwrap_or("");
        if !self.auth.admin_csrf_ok(self.ar, &headers, token) {
            return Err(HttpError::BadRequest(
                "The form expired: reload the page and sign out again.",
            ));
        }
        if let Some(hash) = self.ar.session_hash {
            let email = self.ar.admin.clone().unwrap_or_default();
            let event = self.event(AuditKind::Logout, &email, "admin sign-out");
            self.auth.end_session(hash, event).await?;
        }
        let mut response = redirect(
            StatusCode::SEE_OTHER,
            &format!("{}/admin/login", self.auth.prefix),
        );
        if let Some(clear) = cookies::clear(self.ar.names.session(self.ar.secure), self.ar.secure) {
            response.headers_mut().append(header::SET_COOKIE, clear);
        }
        Ok(response)
    }

    fn event(&self, kind: AuditKind, email: &str, detail: &str) -> AuditEvent {
        AuditEvent {
            at: self.auth.now(),
            kind,
            site: Some(self.site.name.clone()),
            page: None,
            email: Some(email.to_owned()),
            actor: if email.is_empty() {
                "admin".into()
            } else {
                email.to_owned()
            },
            detail: format!("{detail}, from {}", self.ar.ip),
        }
    }

    fn count(&self, event: LoginEvent) {
        metrics::global().login(&self.site.name, Flow::Admin, event);
    }

    async fn audit(&self, kind: AuditKind, email: &str, detail: &str) {
        self.auth.write_audit(self.event(kind, email, detail)).await;
    }
}

impl Auth {
    /// Issues an admin code and mails it. Runs after the answer, so its timing says nothing
    /// about the admin list. A failure is noted for the code form.
    async fn admin_issue_and_mail(
        self: Arc<Self>,
        site_id: SiteId,
        email: &str,
        lang: Language,
        browser: Option<SecretHash>,
    ) {
        let site = &self.sites[site_id];
        let ns = namespace(&site.name);
        let code = self.new_code();
        let now = self.now();
        let expires_at = now.saturating_add(self.config.code_ttl.as_secs() as i64);
        let next = format!("{}/admin/", self.prefix);
        // The store keeps a link token with every code; admins get no link, so nobody ever
        // learns this one.
        let keys = self.keys.load_full();
        let token_hash = keys.hash("admin-token", &[random_token(32).as_bytes()]);
        let record = CodeRecord {
            code_hash: keys.hash(
                "admin-code",
                &[ns.as_bytes(), email.as_bytes(), code.as_bytes()],
            ),
            token_hash,
            page: String::new(),
            next: next.clone(),
            issued_at: now,
            expires_at,
            browser,
        };
        let token = TokenRecord {
            site: ns.clone(),
            email: email.to_owned(),
            page: String::new(),
            next,
            expires_at,
            browser,
        };
        if !self.store_code(&ns, email, record, token).await {
            tracing::error!(site = %site.name, "could not store a new admin code");
            self.note_send_failure(&ns, email);
            return;
        }
        let mail = AdminMail {
            site_title: &site.title,
            code: &code,
            valid_minutes: self.config.code_ttl.as_secs().div_ceil(60),
        };
        let rendered = match self.templates.admin_mail(&mail, lang) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "admin mail template failed");
                self.note_send_failure(&ns, email);
                return;
            }
        };
        let outgoing = Outgoing {
            to: email.to_owned(),
            to_name: None,
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
        };
        let sent = AuditEvent {
            at: 0, // set when the mail is sent
            kind: AuditKind::CodeSent,
            site: Some(site.name.clone()),
            page: None,
            email: Some(email.to_owned()),
            actor: email.to_owned(),
            detail: "admin sign-in code".into(),
        };
        self.mail_code(site, &ns, email, outgoing, Flow::Admin, sent)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_namespace_is_not_a_site_name() {
        assert_eq!(namespace("school"), "admin\u{0}school");
        assert_ne!(namespace("school"), "school");
    }
}
