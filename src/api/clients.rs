//! Adding, listing and removing a page's clients.

use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::auth::input::normalize_email;
use crate::config::Config;
use crate::store::{AuditEvent, AuditKind, Client, Source, Store, Timestamp, now};

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
            let date: jiff::civil::Date = date.trim().parse().map_err(|_| {
                ApiError::invalid(
                    "until",
                    format!("expected a date as YYYY-MM-DD, got {date:?}"),
                )
            })?;
            let end = date
                .tomorrow()
                .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC))
                .map_err(|_| ApiError::invalid("until", "the date is out of range"))?
                .timestamp()
                .as_second();
            if end <= now {
                return Err(ApiError::invalid("until", "the date is in the past"));
            }
            Ok(Some(end))
        }
        (None, Some(0)) => Err(ApiError::invalid("days", "expected at least 1 day")),
        (None, Some(days)) => Ok(Some(now.saturating_add(i64::from(days) * 86_400))),
        (None, None) => Ok(None),
    }
}

fn check_page(config: &Config, page: &str) -> Result<(), ApiError> {
    let known = config.sites.iter().any(|s| s.page(page).is_some());
    if page.trim().is_empty() {
        return Err(ApiError::invalid("page", "expected a page id"));
    }
    if !known {
        return Err(ApiError::NotFound(format!(
            "no page with id {page:?} in the configuration"
        )));
    }
    Ok(())
}

/// Adds a client, or replaces the name and access period of an existing one. Returns the record
/// and whether it was new.
pub fn add_client(
    config: &Config,
    store: &dyn Store,
    input: &ClientInput,
    source: Source,
    actor: &str,
) -> Result<(ClientView, bool), ApiError> {
    check_page(config, &input.page)?;
    let email = normalize_email(&input.email).ok_or_else(|| {
        ApiError::invalid(
            "email",
            format!("not a valid email address: {:?}", input.email),
        )
    })?;
    let name = input.name.as_deref().unwrap_or("").trim().to_owned();
    if name.len() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "expected at most 200 characters without control characters",
        ));
    }
    let now = now();
    let access_until = access_end(input.until.as_deref(), input.days, now)?;
    let existing = store.client(&input.page, &email)?;
    let is_new = existing.is_none();
    let client = match existing {
        Some(old) => Client {
            name: if input.name.is_some() { name } else { old.name },
            access_until,
            updated_at: now,
            ..old
        },
        None => Client {
            email: email.clone(),
            name,
            created_at: now,
            updated_at: now,
            access_until,
            source,
            last_login: None,
        },
    };
    let event = AuditEvent {
        at: now,
        kind: if is_new {
            AuditKind::ClientAdded
        } else {
            AuditKind::ClientUpdated
        },
        site: None,
        page: Some(input.page.clone()),
        email: Some(email),
        actor: actor.to_owned(),
        detail: client.access_until.map_or_else(
            || "unlimited".to_owned(),
            |t| format!("until {}", rfc3339(t)),
        ),
    };
    store.put_client(&input.page, &client, &event)?;
    Ok((ClientView::new(&input.page, &client, now), is_new))
}

/// A page's clients.
pub fn list_clients(
    config: &Config,
    store: &dyn Store,
    page: &str,
) -> Result<Vec<ClientView>, ApiError> {
    check_page(config, page)?;
    let now = now();
    Ok(store
        .clients(page)?
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
        for (until, days, field) in [
            (Some("2020-01-01"), None, "until"),
            (Some("31.01.2027"), None, "until"),
            (Some("2027-01-31"), Some(3), "until"),
            (None, Some(0), "days"),
        ] {
            match access_end(until, days, now) {
                Err(ApiError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected an error on {field}, got {other:?}"),
            }
        }
    }
}
