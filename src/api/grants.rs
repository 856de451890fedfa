//! `POST {prefix}/api/v1/grants`: a shop adds a buyer to a page's client list, or extends the
//! access of one already there.
//!
//! The body is `{"page", "email", "name"?, "days"? | "until"?, "order_id"?, "notify"?}`. A grant
//! never shortens access: a later end wins and unlimited stays unlimited
//! ([`crate::store::merge_grant`]). With an `order_id`, the grant is idempotent per API key: the
//! store applies it and records the order in one write transaction, so retries (even concurrent
//! ones) grant once and get the first answer again, marked `Idempotent-Replayed: true`. The
//! same order id for another page or email is a conflict (409). Every check runs before the one
//! write, so a refused request changes nothing.
//!
//! A signed request's signature is spent by that same write ([`crate::store::Grant::signature`]),
//! so a spent signature costs the grant no write of its own, is refused after a restart too, and
//! is never spent by a request refused before the write: sent again, that one gets the same
//! refusal. A signature spent before answers `401 replayed signature`, as the signature check
//! itself would.
//!
//! `"notify": true` mails the buyer a welcome message with the page's link after the answer is
//! sent; retries do not mail again.
//!
//! `"signin": true` answers with a `signin_url`: a single-use link, valid for
//! `auth.signin_link_ttl`, that signs the buyer in to the page (see [`crate::auth::signin`]). It
//! is stored by the grant's own write; a retried order gets the same link while it is live and a
//! new one once it is spent or expired ([`crate::store::signin_plan`]).

use std::sync::Arc;

use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::clients::{
    ClientView, MAX_DAYS, access_end, check_email, check_name, find_page, last_day, rfc3339,
};
use super::json::{self, Object};
use super::keys::{self, Credentials, credentials, require_cover, require_scope};
use super::{Api, JSON_LIMIT, read_body};
use crate::auth::signin;
use crate::body::Body;
use crate::config::{ApiKeyConfig, Config, Scope};
use crate::mail::{Delivery, MailError, Outgoing};
use crate::metrics::{self, GrantOutcome, MailKind};
use crate::runtime::blocking;
use crate::store::{
    AuditEvent, AuditKind, Client, Grant, GrantResult, SigninNonce, SigninRecord, SigninRequest,
    Source, SpentSignature, StoreError, Timestamp, now,
};
use crate::ui::WelcomeMail;

/// Most characters in an order id.
pub const MAX_ORDER_ID_CHARS: usize = 200;
/// The header marking an answer repeated for a retried order.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

const FIELDS: &[&str] = &[
    "page", "email", "name", "days", "until", "order_id", "notify", "signin",
];

/// A grant request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRequest {
    /// Site name of the page.
    pub site: String,
    /// Page id.
    pub page: String,
    /// Normalised email.
    pub email: String,
    /// Name, trimmed; `None` keeps an existing client's name.
    pub name: Option<String>,
    /// End of access asked for; `None` is unlimited.
    pub access_until: Option<Timestamp>,
    /// The shop's order id, for idempotency.
    pub order_id: Option<String>,
    /// Whether to mail the buyer.
    pub notify: bool,
    /// Whether to answer with a sign-in link for the buyer.
    pub signin: bool,
}

/// The answer: the client record and whether the grant created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantAnswer {
    /// The client as stored after the grant.
    #[serde(flatten)]
    pub client: ClientView,
    /// Whether the client is new on the page (for a retried order: whether the first grant
    /// created it).
    pub created: bool,
    /// The buyer's single-use sign-in link, when asked for with `"signin": true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signin_url: Option<String>,
    /// When the sign-in link stops working (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signin_expires_at: Option<String>,
}

/// Checks a grant body for `key` at `now`. Field errors (400) come first, then the page (404),
/// then the key's site and page limits (403).
pub fn parse(
    config: &Config,
    key: &ApiKeyConfig,
    body: &[u8],
    now: Timestamp,
) -> Result<GrantRequest, ApiError> {
    let mut o = Object::parse(body, FIELDS)?;
    let page = o.required_string("page")?;
    let email = o.required_string("email")?;
    let name = o.string("name")?;
    let days_expected = format!("a whole number of days from 1 to {MAX_DAYS}");
    let days = o.take::<u32>("days", &days_expected)?;
    let until = o.string("until")?;
    let order_id = o.string("order_id")?;
    let notify = o.bool("notify")?.unwrap_or(false);
    let signin = o.bool("signin")?.unwrap_or(false);

    let email = check_email("email", &email)?;
    let name = name.as_deref().map(check_name).transpose()?;
    if days.is_some_and(|d| d == 0 || d > MAX_DAYS) {
        return Err(ApiError::invalid(
            "days",
            format!("expected {days_expected}"),
        ));
    }
    let access_until = access_end(until.as_deref(), days, now)?;
    let order_id = order_id.as_deref().map(check_order_id).transpose()?;
    let (site, _) = find_page(config, &page)?;
    require_cover(key, &site.name, &page)?;
    if signin && site.public_url.is_none() {
        return Err(ApiError::invalid(
            "signin",
            format!(
                "the site {:?} has no public_url to build a sign-in link on",
                site.name
            ),
        ));
    }
    Ok(GrantRequest {
        site: site.name.clone(),
        page,
        email,
        name,
        access_until,
        order_id,
        notify,
        signin,
    })
}

fn check_order_id(raw: &str) -> Result<String, ApiError> {
    let id = raw.trim();
    let chars = id.chars().count();
    if chars == 0 || chars > MAX_ORDER_ID_CHARS || id.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "order_id",
            format!("expected 1 to {MAX_ORDER_ID_CHARS} printable characters"),
        ));
    }
    Ok(id.to_owned())
}

/// Answers `POST /grants` and counts how it ended in `pagegate_grants_total`, under the key's
/// name once the key is known.
pub(crate) async fn handle(
    api: &Arc<Api>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let mut key_name = None;
    let answer = apply(api, req, &mut key_name).await;
    if let Err(e) = &answer {
        let outcome = match e {
            ApiError::Conflict { .. } => GrantOutcome::Conflict,
            _ => GrantOutcome::Refused,
        };
        metrics::global().grant(key_name.as_deref().unwrap_or(""), outcome);
    }
    answer
}

/// A Bearer key is checked before the body is read; a signature needs the body, so it is
/// checked after. `key_name` is set as soon as the key is known.
async fn apply(
    api: &Arc<Api>,
    req: Request<Incoming>,
    key_name: &mut Option<String>,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let (key, bytes, signature): (_, _, Option<SpentSignature>) = match credentials(&parts.headers)?
    {
        Credentials::Bearer(token) => {
            let key = api.keys().bearer(token)?;
            *key_name = Some(key.name.clone());
            require_scope(key, Scope::Grant)?;
            (
                key,
                read_body(body, &parts.headers, JSON_LIMIT).await?,
                None,
            )
        }
        Credentials::Signature(header) => {
            let bytes = read_body(body, &parts.headers, JSON_LIMIT).await?;
            let (key, spent) = api.keys().signature(header, &bytes, now())?;
            *key_name = Some(key.name.clone());
            (key, bytes, Some(spent))
        }
    };
    require_scope(key, Scope::Grant)?;
    // The sign-in flow's clock: the access and the sign-in link a grant gives end by the time
    // the gate goes by. A signature's age is the shop's real time, checked above.
    let grant = parse(api.config(), key, &bytes, api.auth().now())?;
    let links = grant.signin.then(|| {
        api.auth()
            .signin_links(&key.name, grant.order_id.as_deref())
    });
    let (result, at) = {
        let (store, auth) = (api.store().clone(), api.auth().clone());
        let (grant, actor) = (grant.clone(), key.name.clone());
        blocking(move || {
            let now = auth.now();
            let audit = AuditEvent {
                at: now,
                kind: AuditKind::Grant,
                site: Some(grant.site.clone()),
                page: Some(grant.page.clone()),
                email: Some(grant.email.clone()),
                actor: actor.clone(),
                detail: audit_detail(&grant),
            };
            let link = match &links {
                Some(links) => {
                    let record = auth
                        .signin_record(
                            &grant.site,
                            &grant.page,
                            &grant.email,
                            grant.order_id.as_deref(),
                            now,
                        )
                        .ok_or_else(|| ApiError::NotFound(format!("no page {:?}", grant.page)))?;
                    let issued = AuditEvent {
                        kind: AuditKind::SigninLinkIssued,
                        detail: signin_detail(&record),
                        ..audit.clone()
                    };
                    Some((links, record, issued))
                }
                None => None,
            };
            let hashes = |nonce: &SigninNonce| match &links {
                Some(links) => links.hashes(nonce),
                None => Vec::new(),
            };
            let applied = store.grant(
                &Grant {
                    page: &grant.page,
                    email: &grant.email,
                    name: grant.name.as_deref(),
                    access_until: grant.access_until,
                    order: grant.order_id.as_deref().map(|o| (actor.as_str(), o)),
                    signature,
                    source: Source::Grant,
                    signin: link.as_ref().map(|(_, record, audit)| SigninRequest {
                        record,
                        nonce: signin::new_nonce(),
                        hashes: &hashes,
                        audit,
                    }),
                    now,
                },
                &audit,
            )?;
            // The clear link, derived again from what the store handed out.
            let url = match (&applied, &link) {
                (
                    GrantResult::Applied {
                        signin: Some(issued),
                        ..
                    }
                    | GrantResult::Replayed {
                        signin: Some(issued),
                        ..
                    },
                    Some((links, _, _)),
                ) => {
                    let token = links.token(issued).ok_or_else(|| {
                        ApiError::Store(StoreError::Backend(
                            "the sign-in link's key was retired while it was issued".into(),
                        ))
                    })?;
                    let url = auth
                        .signin_url(&grant.site, &grant.page, &token)
                        .ok_or_else(|| ApiError::NotFound(format!("no page {:?}", grant.page)))?;
                    Some((url, issued.expires_at, issued.fresh))
                }
                _ => None,
            };
            Ok::<_, ApiError>(((applied, url), now))
        })
        .await?
    };
    let (result, signin) = result;
    let (client, created, replayed) = match result {
        GrantResult::Applied {
            client, created, ..
        } => (client, created, false),
        GrantResult::Replayed {
            client, created, ..
        } => (client, created, true),
        GrantResult::SignatureSpent => return Err(keys::replayed()),
        GrantResult::Conflict => {
            return Err(ApiError::Conflict {
                field: "order_id",
                message: format!(
                    "the order id {:?} was already used for another page or email",
                    grant.order_id.unwrap_or_default()
                ),
            });
        }
    };
    let new_link = signin.as_ref().map(|(_, _, fresh)| *fresh);
    tracing::info!(key = %key.name, page = %grant.page, created, replayed, new_link, "grant");
    let outcome = match (replayed, created) {
        (true, _) => GrantOutcome::Replayed,
        (false, true) => GrantOutcome::Created,
        (false, false) => GrantOutcome::Extended,
    };
    metrics::global().grant(&key.name, outcome);
    if grant.notify && !replayed {
        send_welcome(api, &grant, &client);
    }
    let (signin_url, signin_expires_at) = match signin {
        Some((url, expires_at, _)) => (Some(url), Some(rfc3339(expires_at))),
        None => (None, None),
    };
    let mut answer = json::respond(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &GrantAnswer {
            client: ClientView::new(&grant.page, &client, at),
            created,
            signin_url,
            signin_expires_at,
        },
    );
    if replayed {
        answer
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(answer)
}

/// The audit detail of an issued sign-in link: never the link, which is a credential.
fn signin_detail(record: &SigninRecord) -> String {
    let until = format!("valid until {}", rfc3339(record.expires_at));
    match &record.order {
        Some(order) => format!("order {order}; {until}"),
        None => until,
    }
}

fn audit_detail(grant: &GrantRequest) -> String {
    let period = grant.access_until.map_or_else(
        || "unlimited".to_owned(),
        |t| format!("until {}", rfc3339(t)),
    );
    match &grant.order_id {
        Some(order) => format!("order {order}; {period}"),
        None => period,
    }
}

/// Mails the welcome message in the background: the answer does not wait for the mail server,
/// and a failure is logged (without the address) by the mailer.
fn send_welcome(api: &Api, grant: &GrantRequest, client: &Client) {
    let Some((site, page)) = api
        .config()
        .sites
        .iter()
        .find(|s| s.name == grant.site)
        .and_then(|s| s.page(&grant.page).map(|p| (s, p)))
    else {
        return;
    };
    let Some(public_url) = site.public_url.as_deref() else {
        return;
    };
    let link = format!(
        "{}{}",
        public_url.trim_end_matches('/'),
        page.paths.first().map_or("/", String::as_str)
    );
    let until = client.access_until.map(last_day);
    let rendered = api.auth().templates().welcome_mail(
        &WelcomeMail {
            site_title: &site.title,
            page_title: &page.title,
            name: &client.name,
            link: &link,
            until: until.as_deref(),
        },
        site.language,
    );
    let rendered = match rendered {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "welcome mail not sent: the template does not render");
            return;
        }
    };
    let message = Outgoing {
        to: client.email.clone(),
        to_name: Some(client.name.clone()).filter(|n| !n.is_empty()),
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
    };
    let mailer = api.auth().mailer().clone();
    tokio::spawn(async move {
        // Retried for up to `mail.retry_for`; the mailer logs the outcome. Only a final
        // failure counts: a message that got through on a retry was delivered.
        match mailer.deliver(message, Delivery::default()).await {
            Ok(()) | Err(MailError::Replaced | MailError::Stopped) => {}
            Err(_) => metrics::global().mail_failed(MailKind::Welcome),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = 1_700_000_000;

    fn config() -> Config {
        let text = "data_dir = \"d\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
            [[site]]\nname = \"school\"\nhosts = [\"a\"]\nupstream = \"http://127.0.0.1:1\"\n\
            public_url = \"https://school.example\"\n\
            [[site.page]]\nid = \"course\"\npaths = [\"/course/\"]\n\
            [[api_key]]\nname = \"shop\"\nsecret = \"0123456789abcdef01234567\"\nscopes = [\"grant\"]\n\
            [[api_key]]\nname = \"other\"\nsecret = \"abcdef0123456789abcdef01\"\nscopes = [\"grant\"]\npages = [\"course\"]\n";
        crate::config::parse_str(
            text,
            std::path::Path::new("t.toml"),
            std::path::Path::new("."),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn field(body: &str) -> String {
        let config = config();
        match parse(&config, &config.api_keys[0], body.as_bytes(), NOW) {
            Err(e) => format!("{} {}", e.status().as_u16(), e.field().unwrap_or("-")),
            Ok(g) => format!("ok {g:?}"),
        }
    }

    #[test]
    fn a_valid_grant() {
        let config = config();
        let g = parse(
            &config,
            &config.api_keys[0],
            br#"{"page":"course","email":" Ann@Example.com ","name":" Ann ","days":30,"order_id":" A-1 "}"#,
            NOW,
        )
        .expect("valid");
        assert_eq!(
            g,
            GrantRequest {
                site: "school".into(),
                page: "course".into(),
                email: "ann@example.com".into(),
                name: Some("Ann".into()),
                access_until: Some(NOW + 30 * 86_400),
                order_id: Some("A-1".into()),
                notify: false,
                signin: false,
            }
        );
    }

    #[test]
    fn each_mistake_names_its_field() {
        for (body, want) in [
            (r#"{"email":"a@x.org"}"#, "400 page"),
            (r#"{"page":"course"}"#, "400 email"),
            (r#"{"page":"course","email":"nope"}"#, "400 email"),
            (
                r#"{"page":"course","email":"a@x.org","days":0}"#,
                "400 days",
            ),
            (
                r#"{"page":"course","email":"a@x.org","days":36501}"#,
                "400 days",
            ),
            (
                r#"{"page":"course","email":"a@x.org","days":-1}"#,
                "400 days",
            ),
            (
                r#"{"page":"course","email":"a@x.org","days":"30"}"#,
                "400 days",
            ),
            (
                r#"{"page":"course","email":"a@x.org","until":"2020-01-01"}"#,
                "400 until",
            ),
            (
                r#"{"page":"course","email":"a@x.org","until":"31.01.2030"}"#,
                "400 until",
            ),
            (
                r#"{"page":"course","email":"a@x.org","until":"2030-01-01","days":3}"#,
                "400 until",
            ),
            (
                r#"{"page":"course","email":"a@x.org","order_id":""}"#,
                "400 order_id",
            ),
            (
                r#"{"page":"course","email":"a@x.org","order_id":"a\nb"}"#,
                "400 order_id",
            ),
            (
                r#"{"page":"course","email":"a@x.org","notify":"yes"}"#,
                "400 notify",
            ),
            (
                r#"{"page":"course","email":"a@x.org","signin":1}"#,
                "400 signin",
            ),
            (
                r#"{"page":"course","email":"a@x.org","name":"a\u0000"}"#,
                "400 name",
            ),
            (
                r#"{"page":"course","email":"a@x.org","extra":1}"#,
                "400 extra",
            ),
            (r#"{"page":"nope","email":"a@x.org"}"#, "404 -"),
            ("[]", "400 body"),
            ("{", "400 body"),
        ] {
            assert_eq!(field(body), want, "{body}");
        }
        let long = format!(
            r#"{{"page":"course","email":"a@x.org","order_id":"{}"}}"#,
            "x".repeat(201)
        );
        assert_eq!(field(&long), "400 order_id");
    }
}
