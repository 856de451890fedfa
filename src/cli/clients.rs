//! `pagegate clients add | list | remove`: a page's client list, on the database directly while
//! the gateway is stopped, or through the running gateway's control socket while it holds the
//! database.

use crate::api::clients::{self as ops, ClientInput, ClientView};
use crate::config::Config;
use crate::store::redb::RedbStore;
use crate::store::{Source, StoreError};

use super::control::control;

/// The database, or `None` when a running gateway holds it and must be asked instead. A
/// PostgreSQL store is shared with running gateways: the action goes through this machine's
/// gateway, which holds the connections.
fn open_store(config: &Config) -> anyhow::Result<Option<RedbStore>> {
    if let crate::config::StoreBackend::Postgres(_) = config.store.backend {
        return Ok(None);
    }
    match RedbStore::open(&config.data_dir) {
        Ok(store) => Ok(Some(store)),
        Err(StoreError::Locked(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Adds a client, or changes the name and access period of one already listed.
pub async fn add(config: &Config, input: ClientInput) -> anyhow::Result<()> {
    let (view, new) = match &open_store(config)? {
        Some(store) => ops::add_client(config, store, &input, Source::Cli, "cli")?,
        None => {
            let (status, body) = control(
                config,
                http::Method::POST,
                "/v1/clients",
                Some(serde_json::to_vec(&input)?),
            )
            .await?;
            (
                serde_json::from_slice::<ClientView>(&body)?,
                status == http::StatusCode::CREATED,
            )
        }
    };
    let period = view
        .access_until
        .as_deref()
        .map_or("unlimited access".to_owned(), |u| {
            format!("access until {u}")
        });
    println!(
        "{} {} on {} ({period})",
        if new { "added" } else { "updated" },
        view.email,
        view.page
    );
    Ok(())
}

/// Prints a page's clients as a table, or as JSON.
pub async fn list(config: &Config, page: &str, json: bool) -> anyhow::Result<()> {
    let list = match &open_store(config)? {
        Some(store) => ops::list_clients(config, store, page)?,
        None => {
            let query = format!(
                "/v1/clients?page={}",
                form_urlencoded::byte_serialize(page.as_bytes()).collect::<String>()
            );
            let (_, body) = control(config, http::Method::GET, &query, None).await?;
            serde_json::from_slice(&body)?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print_clients(&list);
    }
    Ok(())
}

/// Removes a client: their access ends on their next request.
pub async fn remove(config: &Config, page: &str, email: &str) -> anyhow::Result<()> {
    match &open_store(config)? {
        Some(store) => ops::remove_client(config, store, page, email, "cli")?,
        None => {
            let query = format!(
                "/v1/clients?page={}&email={}",
                form_urlencoded::byte_serialize(page.as_bytes()).collect::<String>(),
                form_urlencoded::byte_serialize(email.as_bytes()).collect::<String>()
            );
            control(config, http::Method::DELETE, &query, None).await?;
        }
    }
    println!("removed {email} from {page}");
    Ok(())
}

fn print_clients(list: &[ClientView]) {
    if list.is_empty() {
        println!("no clients");
        return;
    }
    println!(
        "{:<32} {:<24} {:<22} {:<8} LAST SIGN-IN",
        "EMAIL", "NAME", "ACCESS UNTIL", "SOURCE"
    );
    for c in list {
        let until = c.access_until.as_deref().unwrap_or("unlimited");
        let status = if c.active { "" } else { " (ended)" };
        let source = serde_json::to_value(c.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        println!(
            "{:<32} {:<24} {:<22} {:<8} {}",
            c.email,
            c.name,
            format!("{until}{status}"),
            source,
            c.last_login.as_deref().unwrap_or("-")
        );
    }
}
