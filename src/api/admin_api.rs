//! The admin API under `{prefix}/api/v1/`, for scripts and the command line: pages, a page's
//! clients (list and search, add, read, edit, remove, revoke sessions, CSV export and import) and
//! the audit log.
//!
//! Only keys with the `admin` scope, presented as `Authorization: Bearer <secret>`: a webhook
//! signature covers the body but not the method and path, so a captured signed request for one
//! route could be replayed against another; signatures are for `POST /grants` only. A key's
//! `sites` and `pages` limits apply to every route: other pages are 403, and the page list and
//! the audit log show only what the key covers. Every route that names a client acts on that
//! page's record alone, except revoking sessions, which reaches the whole site's session: it
//! needs the email to be a client of the page ([`clients::revoke_sessions`]).

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::clients::{self, ClientChange, ClientInput, ClientQuery, find_page, rfc3339};
use super::csv::{self, Rejected};
use super::json::{self, Object};
use super::keys::{Credentials, credentials, require_cover, require_scope};
use super::web::Route;
use super::{Api, CSV_LIMIT, JSON_LIMIT, read_body};
use crate::body::{self, Body};
use crate::config::{ApiKeyConfig, Config, Scope};
use crate::runtime::blocking;
use crate::store::{AuditEvent, AuditKind, Source, Store, now};

/// Audit entries per answer when the caller does not say.
pub const DEFAULT_AUDIT_LIMIT: usize = 100;
/// Most audit entries per answer.
pub const MAX_AUDIT_LIMIT: usize = 1000;
/// Most audit entries one answer looks through for a key limited to some sites or pages.
const MAX_AUDIT_SCAN: usize = 10_000;

/// A protected page, as `GET /pages` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageView {
    /// Page id.
    pub id: String,
    /// Human title.
    pub title: String,
    /// Name of the site the page is on.
    pub site: String,
    /// Path prefixes.
    pub paths: Vec<String>,
    /// The page's address (the site's `public_url` and the first path), if the site has one.
    pub url: Option<String>,
}

/// `GET /pages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageList {
    /// The pages the key covers, in configuration order.
    pub pages: Vec<PageView>,
}

/// One audit entry, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Sequence number: pass the last one seen as `after` to read on.
    pub id: u64,
    /// When (RFC 3339).
    pub at: String,
    /// What.
    pub kind: AuditKind,
    /// Site name, where relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Page id, where relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// The client's email, where relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Who: "visitor", "cli", an admin's email, an API key's name.
    pub actor: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// `GET /audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditList {
    /// Entries after `after`, oldest first.
    pub entries: Vec<AuditEntry>,
    /// Pass as `after` to read on (the last entry looked at; `after` again when none was).
    pub next: u64,
    /// Whether more entries may follow right away (`false`: the end of the log was reached).
    pub more: bool,
}

/// The answer to a CSV import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Rows applied.
    pub accepted: usize,
    /// Of those, clients new on the page.
    pub created: usize,
    /// Of those, clients already there, changed.
    pub updated: usize,
    /// Rows refused, with the line and the reason.
    pub rejected: Vec<Rejected>,
}

/// `POST …/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// Sessions ended.
    pub revoked: usize,
}

/// Answers an admin API route.
pub(crate) async fn handle(
    api: &Arc<Api>,
    route: Route,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let key = match credentials(&parts.headers)? {
        Credentials::Bearer(token) => api.keys().bearer(token)?,
        Credentials::Signature(_) => {
            return Err(ApiError::Unauthorized(
                "the admin API takes Authorization: Bearer <secret>; signatures are for POST /grants"
                    .into(),
            ));
        }
    };
    require_scope(key, Scope::Admin)?;
    let config = api.config().clone();
    if let Some(page) = route.page() {
        let (site, _) = find_page(&config, page)?;
        require_cover(key, &site.name, page)?;
    }
    let store = api.store().clone();
    let actor = key.name.clone();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    match route {
        Route::Pages => Ok(json::respond(StatusCode::OK, &pages(&config, key))),
        Route::ListClients(page) => {
            let query = ClientQuery::from_query(&query)?;
            let list =
                blocking(move || clients::search_clients(&config, store.as_ref(), &page, &query))
                    .await?;
            Ok(json::respond(StatusCode::OK, &list))
        }
        Route::GetClient(page, email) => {
            let view =
                blocking(move || clients::get_client(&config, store.as_ref(), &page, &email))
                    .await?;
            Ok(json::respond(StatusCode::OK, &view))
        }
        Route::AddClient(page) => {
            let bytes = read_body(body, &parts.headers, JSON_LIMIT).await?;
            let input = client_input(page, &bytes)?;
            let (view, created) = blocking(move || {
                clients::add_client(&config, store.as_ref(), &input, Source::Admin, &actor)
            })
            .await?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json::respond(status, &view))
        }
        Route::EditClient(page, email) => {
            let bytes = read_body(body, &parts.headers, JSON_LIMIT).await?;
            let change = client_change(&bytes)?;
            let view = blocking(move || {
                clients::edit_client(&config, store.as_ref(), &page, &email, &change, &actor)
            })
            .await?;
            Ok(json::respond(StatusCode::OK, &view))
        }
        Route::RemoveClient(page, email) => {
            blocking(move || {
                clients::remove_client(&config, store.as_ref(), &page, &email, &actor)
            })
            .await?;
            let mut r = Response::new(body::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            Ok(r)
        }
        Route::RevokeSessions(page, email) => {
            let revoked = blocking(move || {
                clients::revoke_sessions(&config, store.as_ref(), &page, &email, &actor)
            })
            .await?;
            Ok(json::respond(StatusCode::OK, &Revoked { revoked }))
        }
        Route::ExportCsv(page) => {
            let file_name = safe_file_name(&page);
            Ok(csv_response(
                csv::export_body(store, page, now()),
                &file_name,
            ))
        }
        Route::ImportCsv(page) => {
            let bytes = read_body(body, &parts.headers, CSV_LIMIT).await?;
            let import = csv::parse_import(&bytes)?;
            let report =
                blocking(move || apply_import(store.as_ref(), &page, import, &actor)).await?;
            Ok(json::respond(StatusCode::OK, &report))
        }
        Route::Audit => {
            let (after, limit) = audit_query(&query)?;
            let key = key.clone();
            let list = blocking(move || audit(&config, store.as_ref(), &key, after, limit)).await?;
            Ok(json::respond(StatusCode::OK, &list))
        }
        Route::OpenApi | Route::Grant => Err(ApiError::NotFound("no such API endpoint".into())),
    }
}

/// The pages `key` covers.
pub fn pages(config: &Config, key: &ApiKeyConfig) -> PageList {
    let pages = config
        .sites
        .iter()
        .flat_map(|site| site.pages.iter().map(move |page| (site, page)))
        .filter(|(site, page)| key.covers(&site.name, &page.id))
        .map(|(site, page)| PageView {
            id: page.id.clone(),
            title: page.title.clone(),
            site: site.name.clone(),
            paths: page.paths.clone(),
            url: site.public_url.as_deref().map(|base| {
                format!(
                    "{}{}",
                    base.trim_end_matches('/'),
                    page.paths.first().map_or("/", String::as_str)
                )
            }),
        })
        .collect();
    PageList { pages }
}

/// `POST /pages/{page}/clients` body: `{"email", "name"?, "until"? | "days"?}`.
pub(crate) fn client_input(page: String, bytes: &[u8]) -> Result<ClientInput, ApiError> {
    let mut o = Object::parse(bytes, &["email", "name", "until", "days"])?;
    Ok(ClientInput {
        page,
        email: o.required_string("email")?,
        name: o.string("name")?,
        until: o.string("until")?,
        days: o.take("days", "a whole number of days from 1 to 36500")?,
    })
}

/// `PATCH /pages/{page}/clients/{email}` body: any of `name`, `email`, and one of `until`,
/// `days`, `unlimited`.
pub(crate) fn client_change(bytes: &[u8]) -> Result<ClientChange, ApiError> {
    let mut o = Object::parse(bytes, &["name", "email", "until", "days", "unlimited"])?;
    Ok(ClientChange {
        name: o.string("name")?,
        email: o.string("email")?,
        until: o.string("until")?,
        days: o.take("days", "a whole number of days from 1 to 36500")?,
        unlimited: o.bool("unlimited")?.unwrap_or(false),
    })
}

/// Applies an import's accepted rows in batches (see [`csv::apply_import`]) and reports them
/// with the rejected ones.
fn apply_import(
    store: &dyn Store,
    page: &str,
    import: csv::Import,
    actor: &str,
) -> Result<ImportReport, ApiError> {
    let applied = csv::apply_import(store, page, &import.rows, actor)?;
    Ok(ImportReport {
        accepted: applied.created + applied.updated,
        created: applied.created,
        updated: applied.updated,
        rejected: import.problems.into_iter().map(Rejected::from).collect(),
    })
}

fn csv_response(body: Body, file_name: &str) -> Response<Body> {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // A browser that sniffed the list as HTML would run whatever a client's name holds.
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

fn safe_file_name(page: &str) -> String {
    let stem: String = page
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{stem}-clients.csv")
}

pub(crate) fn audit_query(query: &str) -> Result<(Option<u64>, usize), ApiError> {
    let (mut after, mut limit) = (None, DEFAULT_AUDIT_LIMIT);
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "after" => {
                after = Some(value.parse().map_err(|_| {
                    ApiError::invalid("after", "expected an entry id (a whole number)")
                })?);
            }
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_AUDIT_LIMIT).contains(l))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "limit",
                            format!("expected a whole number from 1 to {MAX_AUDIT_LIMIT}"),
                        )
                    })?;
            }
            _ => {}
        }
    }
    Ok((after, limit))
}

/// Audit entries after `after` that `key` may see, at most `limit`.
pub fn audit(
    config: &Config,
    store: &dyn Store,
    key: &ApiKeyConfig,
    after: Option<u64>,
    limit: usize,
) -> Result<AuditList, ApiError> {
    let mut entries = Vec::new();
    let mut cursor = after;
    let mut scanned = 0;
    let chunk = limit.max(100);
    loop {
        let batch = store.audit_log(cursor, chunk)?;
        let exhausted = batch.len() < chunk;
        for (id, event) in batch {
            cursor = Some(id);
            scanned += 1;
            if visible(config, key, &event) {
                entries.push(entry(id, event));
                if entries.len() == limit {
                    return Ok(AuditList {
                        entries,
                        next: id,
                        more: true,
                    });
                }
            }
        }
        if exhausted || scanned >= MAX_AUDIT_SCAN {
            return Ok(AuditList {
                entries,
                next: cursor.unwrap_or(0),
                more: !exhausted,
            });
        }
    }
}

/// Whether a key limited to some sites or pages may see an entry: one about a page it covers,
/// or about a site it covers when it is not limited to pages.
fn visible(config: &Config, key: &ApiKeyConfig, event: &AuditEvent) -> bool {
    if key.sites.is_none() && key.pages.is_none() {
        return true;
    }
    match (&event.page, &event.site) {
        (Some(page), _) => {
            find_page(config, page).is_ok_and(|(site, _)| key.covers(&site.name, page))
        }
        (None, Some(site)) => {
            key.pages.is_none() && key.sites.as_ref().is_some_and(|s| s.contains(site))
        }
        (None, None) => false,
    }
}

fn entry(id: u64, event: AuditEvent) -> AuditEntry {
    AuditEntry {
        id,
        at: rfc3339(event.at),
        kind: event.kind,
        site: event.site,
        page: event.page,
        email: event.email,
        actor: event.actor,
        detail: event.detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_and_queries() {
        assert_eq!(safe_file_name("course"), "course-clients.csv");
        assert_eq!(safe_file_name("a\"b/c"), "a_b_c-clients.csv");
        assert_eq!(audit_query("").expect("defaults"), (None, 100));
        assert_eq!(audit_query("after=7&limit=5").expect("given"), (Some(7), 5));
        for bad in ["after=-1", "limit=0", "limit=1001", "after=x"] {
            assert!(audit_query(bad).is_err(), "{bad}");
        }
    }
}
