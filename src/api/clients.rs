//! Adding, listing, searching, editing and removing a page's clients, and revoking their
//! sessions: the operations every front end (command line, control socket, admin API, admin
//! page) shares. Each validates its input and names the offending field in its error.

use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::config::{Config, PageConfig, SiteConfig};
use crate::input::normalize_email;
use crate::store::{
    AuditEvent, AuditKind, CLIENT_CHUNK, Client, ClientEdit, ClientSet, Source, Store, Timestamp,
    now,
};

/// Most days of access one request may give (about a hundred years).
pub const MAX_DAYS: u32 = 36_500;
/// Most characters in a client's name.
pub const MAX_NAME_CHARS: usize = 200;
/// Clients per page of a listing when the caller does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// Most clients per page of a listing.
pub const MAX_LIMIT: usize = 1000;
/// Most matches a search counts for its `total`: past this, the count is given as this many and
/// marked inexact, rather than reading a million records to count a common term's matches.
pub const SEARCH_COUNT_CAP: u64 = 10_000;

/// A request to add a client or change one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientInput {
    /// Page id.
    pub page: String,
    /// Email address.
    pub email: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Last day of access, `YYYY-MM-DD` (access ends when that day ends, UTC).
    #[serde(default)]
    pub until: Option<String>,
    /// Days of access from now.
    #[serde(default)]
    pub days: Option<u32>,
}

/// A client as shown to admins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientView {
    /// Page id.
    pub page: String,
    /// Email.
    pub email: String,
    /// Name.
    pub name: String,
    /// End of access as RFC 3339, or `null` for unlimited.
    pub access_until: Option<String>,
    /// Whether access is current.
    pub active: bool,
    /// Who added the client.
    pub source: Source,
    /// When the client was added (RFC 3339).
    pub created_at: String,
    /// Last sign-in (RFC 3339), if any.
    pub last_login: Option<String>,
}

/// RFC 3339 text of a timestamp.
pub fn rfc3339(ts: Timestamp) -> String {
    jiff::Timestamp::from_second(ts).map_or_else(|_| ts.to_string(), |t| t.to_string())
}

impl ClientView {
    /// The view of a stored client.
    pub fn new(page: &str, client: &Client, now: Timestamp) -> ClientView {
        ClientView {
            page: page.to_owned(),
            email: client.email.clone(),
            name: client.name.clone(),
            access_until: client.access_until.map(rfc3339),
            active: client.has_access(now),
            source: client.source,
            created_at: rfc3339(client.created_at),
            last_login: client.last_login.map(rfc3339),
        }
    }
}

/// The end of access for `until` (a date: access through that whole day, UTC) or `days` from
/// `now`; `None` is unlimited.
pub fn access_end(
    until: Option<&str>,
    days: Option<u32>,
    now: Timestamp,
) -> Result<Option<Timestamp>, ApiError> {
    match (until, days) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "until",
            "give either `until` or `days`, not both",
        )),
        (Some(date), None) => {
            let end = day_end(date)?;
            if end <= now {
                return Err(ApiError::invalid("until", "the date is in the past"));
            }
            Ok(Some(end))
        }
        (None, Some(0)) => Err(ApiError::invalid("days", "expected at least 1 day")),
        (None, Some(days)) if days > MAX_DAYS => Err(ApiError::invalid(
            "days",
            format!("expected at most {MAX_DAYS} days"),
        )),
        (None, Some(days)) => Ok(Some(now.saturating_add(i64::from(days) * 86_400))),
        (None, None) => Ok(None),
    }
}

/// The end of access for a last day `YYYY-MM-DD`: the start of the next day, UTC. Errors are on
/// `until`.
pub fn day_end(date: &str) -> Result<Timestamp, ApiError> {
    let parsed: jiff::civil::Date = date.trim().parse().map_err(|_| {
        ApiError::invalid(
            "until",
            format!("expected a date as YYYY-MM-DD, got {date:?}"),
        )
    })?;
    Ok(parsed
        .tomorrow()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC))
        .map_err(|_| ApiError::invalid("until", "the date is out of range"))?
        .timestamp()
        .as_second())
}

/// The last day of access, `YYYY-MM-DD` (UTC), of an access period ending at `access_until`
/// (exclusive): the inverse of [`day_end`].
pub fn last_day(access_until: Timestamp) -> String {
    jiff::Timestamp::from_second(access_until.saturating_sub(1)).map_or_else(
        |_| access_until.to_string(),
        |t| t.to_zoned(jiff::tz::TimeZone::UTC).date().to_string(),
    )
}

fn check_page(config: &Config, page: &str) -> Result<(), ApiError> {
    find_page(config, page).map(|_| ())
}

/// The site and page with this id: `page` is 400 when empty, 404 when unknown.
pub fn find_page<'a>(
    config: &'a Config,
    page: &str,
) -> Result<(&'a SiteConfig, &'a PageConfig), ApiError> {
    if page.trim().is_empty() {
        return Err(ApiError::invalid("page", "expected a page id"));
    }
    config
        .sites
        .iter()
        .find_map(|site| site.page(page).map(|p| (site, p)))
        .ok_or_else(|| ApiError::NotFound(format!("no page with id {page:?} in the configuration")))
}

/// A normalised email address, or an error on `field`.
pub fn check_email(field: &'static str, raw: &str) -> Result<String, ApiError> {
    normalize_email(raw)
        .ok_or_else(|| ApiError::invalid(field, format!("not a valid email address: {raw:?}")))
}

/// A display name, trimmed: at most [`MAX_NAME_CHARS`] characters, no control characters.
pub fn check_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            format!("expected at most {MAX_NAME_CHARS} characters without control characters"),
        ));
    }
    Ok(name.to_owned())
}

/// `until …` or `unlimited`, for audit details.
fn period_text(access_until: Option<Timestamp>) -> String {
    access_until.map_or_else(
        || "unlimited".to_owned(),
        |t| format!("until {}", rfc3339(t)),
    )
}

/// The audit entry of a client set on `page` by `actor` ([`Store::set_clients`]): added or
/// updated, with the access period after `what` (an empty `what` gives the period alone).
pub(crate) fn set_event(
    at: Timestamp,
    page: &str,
    actor: &str,
    what: &str,
    client: &Client,
    created: bool,
) -> AuditEvent {
    let period = period_text(client.access_until);
    AuditEvent {
        at,
        kind: if created {
            AuditKind::ClientAdded
        } else {
            AuditKind::ClientUpdated
        },
        site: None,
        page: Some(page.to_owned()),
        email: Some(client.email.clone()),
        actor: actor.to_owned(),
        detail: if what.is_empty() {
            period
        } else {
            format!("{what}; {period}")
        },
    }
}

/// Adds a client, or replaces the name and access period of an existing one. Returns the record
/// and whether it was new. The read and the write are one transaction, so a grant arriving at
/// the same moment is never lost.
pub fn add_client(
    config: &Config,
    store: &dyn Store,
    input: &ClientInput,
    source: Source,
    actor: &str,
) -> Result<(ClientView, bool), ApiError> {
    check_page(config, &input.page)?;
    let email = check_email("email", &input.email)?;
    let name = input.name.as_deref().map(check_name).transpose()?;
    let now = now();
    let access_until = access_end(input.until.as_deref(), input.days, now)?;
    let row = ClientSet {
        email: &email,
        name: name.as_deref(),
        access_until: Some(access_until),
        source,
        now,
    };
    let audit =
        |client: &Client, created: bool| set_event(now, &input.page, actor, "", client, created);
    let mut stored = store.set_clients(&input.page, &[row], &audit)?;
    let (client, is_new) = stored
        .pop()
        .ok_or_else(|| ApiError::NotFound(format!("{email} was not stored")))?;
    Ok((ClientView::new(&input.page, &client, now), is_new))
}

/// Up to `limit` of a page's clients in email order, after `after` when given: a list of any
/// size is read a chunk at a time.
pub fn list_clients(
    config: &Config,
    store: &dyn Store,
    page: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<ClientView>, ApiError> {
    check_page(config, page)?;
    let now = now();
    Ok(store
        .client_page(page, after, limit, None)?
        .iter()
        .map(|c| ClientView::new(page, c, now))
        .collect())
}

/// Removes a client (and so ends their access on their next request).
pub fn remove_client(
    config: &Config,
    store: &dyn Store,
    page: &str,
    email: &str,
    actor: &str,
) -> Result<(), ApiError> {
    check_page(config, page)?;
    let email = normalize_email(email).ok_or_else(|| {
        ApiError::invalid("email", format!("not a valid email address: {email:?}"))
    })?;
    let event = AuditEvent {
        at: now(),
        kind: AuditKind::ClientRemoved,
        site: None,
        page: Some(page.to_owned()),
        email: Some(email.clone()),
        actor: actor.to_owned(),
        detail: String::new(),
    };
    if store.remove_client(page, &email, &event)? {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!(
            "{email} is not a client of {page}"
        )))
    }
}

/// What to list of a page's clients: those whose email or name contains `q` (ignoring case),
/// `limit` of them after the email `after` and from `offset`, ordered by email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientQuery {
    /// Search text; empty lists everyone.
    pub q: String,
    /// The last email of the previous page of the listing (its `next`): the listing goes on
    /// after it. Each page then costs the same, wherever it is in the list.
    pub after: Option<String>,
    /// How many matching clients to skip (after `after`). Kept for callers that page by
    /// offset; skipping costs a read of every client skipped, so `after` is the way to page
    /// through a long list.
    pub offset: usize,
    /// Most clients to return, 1..=[`MAX_LIMIT`].
    pub limit: usize,
}

impl Default for ClientQuery {
    fn default() -> ClientQuery {
        ClientQuery {
            q: String::new(),
            after: None,
            offset: 0,
            limit: DEFAULT_LIMIT,
        }
    }
}

impl ClientQuery {
    /// Reads `q`, `after`, `offset` and `limit` from a URL query string; other parameters are
    /// ignored.
    pub fn from_query(query: &str) -> Result<ClientQuery, ApiError> {
        let mut out = ClientQuery::default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "q" => out.q = value.trim().to_owned(),
                "after" => {
                    out.after = Some(value.trim().to_lowercase()).filter(|a| !a.is_empty());
                }
                "offset" => {
                    out.offset = value.parse().map_err(|_| {
                        ApiError::invalid("offset", "expected a whole number from 0")
                    })?;
                }
                "limit" => {
                    out.limit = value
                        .parse()
                        .ok()
                        .filter(|l| (1..=MAX_LIMIT).contains(l))
                        .ok_or_else(|| {
                            ApiError::invalid(
                                "limit",
                                format!("expected a whole number from 1 to {MAX_LIMIT}"),
                            )
                        })?;
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// One page of a client listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientList {
    /// Clients matching the search, on all pages of the listing: exact without a search; with
    /// one, counted up to [`SEARCH_COUNT_CAP`] (then `total_is_exact` is `false`).
    pub total: usize,
    /// Whether `total` is the exact count.
    #[serde(default = "exact")]
    pub total_is_exact: bool,
    /// As asked.
    pub offset: usize,
    /// As asked.
    pub limit: usize,
    /// The `after` that asks for the next page of the listing; `null` on its last page.
    #[serde(default)]
    pub next: Option<String>,
    /// The clients of this page of the listing, ordered by email.
    pub clients: Vec<ClientView>,
}

fn exact() -> bool {
    true
}

/// A page's clients matching `query`, one page of the listing: read by keyset from the
/// store, never the whole list.
pub fn search_clients(
    config: &Config,
    store: &dyn Store,
    page: &str,
    query: &ClientQuery,
) -> Result<ClientList, ApiError> {
    check_page(config, page)?;
    let now = now();
    let search = (!query.q.is_empty()).then_some(query.q.as_str());
    let mut after = query.after.clone();
    let mut skip = query.offset;
    let mut past_the_end = false;
    while skip > 0 {
        let chunk = store.client_page(page, after.as_deref(), skip.min(CLIENT_CHUNK), search)?;
        if chunk.len() < skip.min(CLIENT_CHUNK) {
            past_the_end = true;
            break;
        }
        skip -= chunk.len();
        after = chunk.last().map(|c| c.email.clone());
    }
    let mut clients = if past_the_end {
        Vec::new()
    } else {
        store.client_page(page, after.as_deref(), query.limit + 1, search)?
    };
    let next = if clients.len() > query.limit {
        clients.truncate(query.limit);
        clients.last().map(|c| c.email.clone())
    } else {
        None
    };
    let whole_listing = query.after.is_none() && query.offset == 0 && next.is_none();
    let (total, total_is_exact) = match search {
        None => (store.client_counts(page, now)?.total, true),
        // This answer holds every match: no second pass to count them (a rare term's search
        // reads the whole page once, not twice).
        Some(_) if whole_listing => (clients.len() as u64, true),
        Some(q) => {
            let counted = store.count_matching(page, q, SEARCH_COUNT_CAP)?;
            (counted.count, counted.exact)
        }
    };
    Ok(ClientList {
        total: usize::try_from(total).unwrap_or(usize::MAX),
        total_is_exact,
        offset: query.offset,
        limit: query.limit,
        next,
        clients: clients
            .iter()
            .map(|c| ClientView::new(page, c, now))
            .collect(),
    })
}

/// One client of a page.
pub fn get_client(
    config: &Config,
    store: &dyn Store,
    page: &str,
    email: &str,
) -> Result<ClientView, ApiError> {
    check_page(config, page)?;
    let email = check_email("email", email)?;
    store
        .client(page, &email)?
        .map(|c| ClientView::new(page, &c, now()))
        .ok_or_else(|| not_a_client(&email, page))
}

fn not_a_client(email: &str, page: &str) -> ApiError {
    ApiError::NotFound(format!("{email} is not a client of {page}"))
}

/// A change to one client: only the fields given change. At most one of `until`, `days` and
/// `unlimited` sets the access period.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientChange {
    /// New display name ("" clears it).
    #[serde(default)]
    pub name: Option<String>,
    /// New email address: the record moves to it (sessions of the old address no longer open
    /// the page).
    #[serde(default)]
    pub email: Option<String>,
    /// Last day of access, `YYYY-MM-DD` (access ends when that day ends, UTC).
    #[serde(default)]
    pub until: Option<String>,
    /// Days of access from now.
    #[serde(default)]
    pub days: Option<u32>,
    /// `true` makes access unlimited.
    #[serde(default)]
    pub unlimited: bool,
}

/// Changes one client's name, email or access period, atomically. Renaming to an email the page
/// already lists is a conflict on `email`; nothing changes then.
pub fn edit_client(
    config: &Config,
    store: &dyn Store,
    page: &str,
    email: &str,
    edit: &ClientChange,
    actor: &str,
) -> Result<ClientView, ApiError> {
    check_page(config, page)?;
    let email = check_email("email", email)?;
    let new_email = edit
        .email
        .as_deref()
        .map(|e| check_email("email", e))
        .transpose()?;
    let name = edit.name.as_deref().map(check_name).transpose()?;
    let now = now();
    let period = match (edit.unlimited, edit.until.is_some() || edit.days.is_some()) {
        (true, true) => {
            return Err(ApiError::invalid(
                "unlimited",
                "give one of `until`, `days` and `unlimited`",
            ));
        }
        (true, false) => Some(None),
        (false, true) => Some(access_end(edit.until.as_deref(), edit.days, now)?),
        (false, false) => None,
    };
    let mut detail = Vec::new();
    if name.is_some() {
        detail.push("name".to_owned());
    }
    if let Some(new) = new_email.as_deref().filter(|n| *n != email) {
        detail.push(format!("email {email} → {new}"));
    }
    if let Some(p) = period {
        detail.push(period_text(p));
    }
    let event = AuditEvent {
        at: now,
        kind: AuditKind::ClientUpdated,
        site: None,
        page: Some(page.to_owned()),
        email: Some(new_email.clone().unwrap_or_else(|| email.clone())),
        actor: actor.to_owned(),
        detail: detail.join("; "),
    };
    let update = |old: &Client| {
        Some(Client {
            email: new_email.clone().unwrap_or_else(|| old.email.clone()),
            name: name.clone().unwrap_or_else(|| old.name.clone()),
            access_until: period.unwrap_or(old.access_until),
            updated_at: now,
            ..old.clone()
        })
    };
    match store.edit_client(page, &email, &update, &|_| event.clone())? {
        ClientEdit::Edited(client) | ClientEdit::Unchanged(client) => {
            Ok(ClientView::new(page, &client, now))
        }
        ClientEdit::Missing => Err(not_a_client(&email, page)),
        ClientEdit::EmailTaken => Err(ApiError::Conflict {
            field: "email",
            message: format!(
                "{} is already a client of {page}",
                new_email.unwrap_or_default()
            ),
        }),
    }
}

/// Ends every session of `email` on the site of `page`, at once; returns how many there were.
/// The email must be a client of `page` (404 otherwise, and nothing ends): a session opens
/// every page of its site, so without this a caller allowed one page could sign a visitor out
/// of pages it has no part in. What ends is the whole session, on that site only: a session
/// cannot be narrowed to some of its pages, and the visitor signs in again for the others.
pub fn revoke_sessions(
    config: &Config,
    store: &dyn Store,
    page: &str,
    email: &str,
    actor: &str,
) -> Result<usize, ApiError> {
    let (site, _) = find_page(config, page)?;
    let email = check_email("email", email)?;
    let event = AuditEvent {
        at: now(),
        kind: AuditKind::SessionsRevoked,
        site: Some(site.name.clone()),
        page: Some(page.to_owned()),
        email: Some(email.clone()),
        actor: actor.to_owned(),
        detail: String::new(),
    };
    store
        .revoke_sessions(&site.name, page, &email, &event)?
        .ok_or_else(|| not_a_client(&email, page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_periods() {
        let now = 1_700_000_000; // 2023-11-14
        assert_eq!(access_end(None, None, now).expect("unlimited"), None);
        assert_eq!(
            access_end(None, Some(2), now).expect("days"),
            Some(now + 2 * 86_400)
        );
        let end = access_end(Some("2027-01-31"), None, now)
            .expect("date")
            .expect("limited");
        assert_eq!(rfc3339(end), "2027-02-01T00:00:00Z");
        assert_eq!(last_day(end), "2027-01-31");
        assert_eq!(last_day(end + 1), "2027-02-01");
        for (until, days, field) in [
            (Some("2020-01-01"), None, "until"),
            (Some("31.01.2027"), None, "until"),
            (Some("2027-01-31"), Some(3), "until"),
            (None, Some(0), "days"),
            (None, Some(36_501), "days"),
        ] {
            match access_end(until, days, now) {
                Err(ApiError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected an error on {field}, got {other:?}"),
            }
        }
    }
}
