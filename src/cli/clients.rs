//! `pagegate clients add | list | remove`: a page's client list, on the database directly (a
//! PostgreSQL database always, a redb file while no gateway runs), or through the running
//! gateway's control socket while it holds the redb file.

use crate::api::ApiError;
use crate::api::clients::{self as ops, ClientInput, ClientView};
use crate::config::{Config, StoreBackend};
use crate::store::postgres::PgStore;
use crate::store::redb::RedbStore;
use crate::store::{Source, Store, StoreError};

use super::control::control;

/// Runs `op` on the database itself, off the async runtime (a PostgreSQL store waits on the
/// network); `None` when a running gateway holds the redb file and must be asked instead. A
/// PostgreSQL database is shared: no gateway needs to run.
async fn on_store<T: Send + 'static>(
    config: &Config,
    op: impl FnOnce(&Config, &dyn Store) -> Result<T, ApiError> + Send + 'static,
) -> anyhow::Result<Option<T>> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        let store: Box<dyn Store> = match &config.store.backend {
            StoreBackend::Postgres(pg) => Box::new(PgStore::open(pg)?),
            StoreBackend::Redb => match RedbStore::open(&config.data_dir) {
                Ok(store) => Box::new(store),
                Err(StoreError::Locked(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            },
        };
        Ok(Some(op(&config, store.as_ref())?))
    })
    .await?
}

/// Adds a client, or changes the name and access period of one already listed.
pub async fn add(config: &Config, input: ClientInput) -> anyhow::Result<()> {
    let direct = input.clone();
    let done = on_store(config, move |config, store| {
        ops::add_client(config, store, &direct, Source::Cli, "cli")
    })
    .await?;
    let (view, new) = match done {
        Some(done) => done,
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
    let asked = page.to_owned();
    let list = match on_store(config, move |config, store| {
        ops::list_clients(config, store, &asked)
    })
    .await?
    {
        Some(list) => list,
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
    let (asked_page, asked_email) = (page.to_owned(), email.to_owned());
    let done = on_store(config, move |config, store| {
        ops::remove_client(config, store, &asked_page, &asked_email, "cli")
    })
    .await?;
    match done {
        Some(()) => {}
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
