//! pagegate's own pages and mail texts.
//!
//! Everything a visitor reads from pagegate itself is rendered with minijinja from the templates
//! in `src/ui/templates/`, built into the binary. An admin may replace any of them with a file of
//! the same name in the folder `auth.templates` names; [`Templates::new`] compiles and test-renders
//! them at start-up, so a broken override stops the start with the file and line.
//!
//! Words come from the translation table in `i18n.rs` (English and Russian), handed to
//! every template as `t`; the language follows the browser's `Accept-Language`
//! ([`negotiate_language`]) with the site's language as the fallback.
//!
//! Pages are self-contained: inline CSS, no scripts, no images, no external fonts, so they work
//! under the strict policy [`html_response`] sends (`default-src 'none'`).

mod admin;
mod i18n;
mod templates;

use std::sync::LazyLock;

use http::{HeaderValue, Response, StatusCode, header};

pub use admin::{
    AddForm, AdminFrame, AdminMail, AdminPage, ClientRow, ClientsView, Notice, PageSummary,
    SiteSummary,
};
pub use i18n::{MESSAGE_KEYS, negotiate_language};
pub use templates::{Frame, LoginMail, Page, RenderedMail, Templates, WelcomeMail};

use crate::body::{self, Body};
use crate::config::Language;

/// The Content-Security-Policy of every page pagegate writes: nothing loads from anywhere, styles
/// are inline, and forms post only to the same origin.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'";

/// An HTML page response with the headers every pagegate page carries: never cached (pages hold
/// anti-forgery tokens), never framed, never sniffed, no referrer (a sign-in link's token must not
/// leak to the next site), and the strict [`CONTENT_SECURITY_POLICY`].
pub fn html_response(status: StatusCode, html: String) -> Response<Body> {
    let mut response = Response::new(body::full(html));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

/// The built-in templates, for pages rendered where no configured [`Templates`] is at hand.
static BUILTIN: LazyLock<Result<Templates, String>> = LazyLock::new(|| Templates::new(None));

/// A small self-contained HTML page for an error status, in pagegate's look (the built-in
/// `error.html`; see [`Templates::error_html`] to honour overrides).
pub fn error_page(status: StatusCode, message: &str) -> Response<Body> {
    let rendered = match &*BUILTIN {
        Ok(templates) => templates.error_html(status, message, Language::En),
        Err(e) => Err(e.clone()),
    };
    let html = rendered.unwrap_or_else(|e| {
        tracing::error!(error = %e, "the built-in error page does not render");
        plain_error_html(status, message)
    });
    let mut response = html_response(status, html);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
    }
    response
}

/// When a visitor or client told "unavailable for a moment" (503) should try again.
pub const RETRY_AFTER_SECONDS: &str = "10";

/// The error page without templates: the fallback should the built-in ones ever fail.
fn plain_error_html(status: StatusCode, message: &str) -> String {
    let title = status.canonical_reason().unwrap_or("Error");
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{code} {title}</title></head>\
<body><main><h1>{code} {title}</h1><p>{message}</p></main></body></html>\n",
        code = status.as_u16(),
        title = escape_html(title),
        message = escape_html(message),
    )
}

/// A redirect pagegate answers itself (to a form, after a form, to the page signed in for): never
/// cached, since where it points depends on the visitor's state.
pub fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `405` for one of pagegate's own endpoints, with the methods it takes in `Allow`.
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = Response::new(body::empty());
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// Escapes text for HTML element content and quoted attributes.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
