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

/// Clients read and printed at a time: memory stays bounded whatever the list's size.
const LIST_CHUNK: usize = 1_000;

/// Prints a page's clients as a table, or as JSON, a chunk at a time: from the database when
/// no gateway holds it, else through the running gateway's control socket.
pub async fn list(config: &Config, page: &str, json: bool) -> anyhow::Result<()> {
    let asked = page.to_owned();
    let direct = on_store(config, move |config, store| {
        let mut out = ListPrinter::new(json);
        let mut after: Option<String> = None;
        loop {
            let chunk = ops::list_clients(config, store, &asked, after.as_deref(), LIST_CHUNK)?;
            out.rows(&chunk);
            if chunk.len() < LIST_CHUNK {
                return Ok(out);
            }
            after = chunk.last().map(|c| c.email.clone());
        }
    })
    .await?;
    let out = match direct {
        Some(out) => out,
        None => {
            let mut out = ListPrinter::new(json);
            let mut after: Option<String> = None;
            loop {
                let mut query = form_urlencoded::Serializer::new(String::new());
                query.append_pair("page", page);
                query.append_pair("limit", &LIST_CHUNK.to_string());
                if let Some(after) = &after {
                    query.append_pair("after", after);
                }
                let path = format!("/v1/clients?{}", query.finish());
                let (_, body) = control(config, http::Method::GET, &path, None).await?;
                let chunk: Vec<ClientView> = serde_json::from_slice(&body)?;
                out.rows(&chunk);
                if chunk.len() < LIST_CHUNK {
                    break out;
                }
                after = chunk.last().map(|c| c.email.clone());
            }
        }
    };
    out.finish()
}

/// Writes a list as it arrives: the table's header before the first row, or a JSON array laid
/// out as `serde_json`'s pretty printer lays out a whole one.
struct ListPrinter {
    json: bool,
    rows: usize,
    out: std::io::BufWriter<std::io::Stdout>,
    /// The first failed write (a closed pipe): reported at the end, later writes skipped.
    failed: Option<std::io::Error>,
}

impl ListPrinter {
    fn new(json: bool) -> ListPrinter {
        ListPrinter {
            json,
            rows: 0,
            out: std::io::BufWriter::new(std::io::stdout()),
            failed: None,
        }
    }

    fn rows(&mut self, chunk: &[ClientView]) {
        for client in chunk {
            if self.failed.is_none() {
                let written = self.row(client);
                self.failed = written.err();
            }
            self.rows += 1;
        }
    }

    fn row(&mut self, c: &ClientView) -> std::io::Result<()> {
        use std::io::Write;
        if self.json {
            let item = serde_json::to_string_pretty(c)?.replace('\n', "\n  ");
            let lead = if self.rows == 0 { "[\n" } else { ",\n" };
            return write!(self.out, "{lead}  {item}");
        }
        if self.rows == 0 {
            writeln!(
                self.out,
                "{:<32} {:<24} {:<22} {:<8} LAST SIGN-IN",
                "EMAIL", "NAME", "ACCESS UNTIL", "SOURCE"
            )?;
        }
        let until = c.access_until.as_deref().unwrap_or("unlimited");
        let status = if c.active { "" } else { " (ended)" };
        let source = serde_json::to_value(c.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        writeln!(
            self.out,
            "{:<32} {:<24} {:<22} {:<8} {}",
            c.email,
            c.name,
            format!("{until}{status}"),
            source,
            c.last_login.as_deref().unwrap_or("-")
        )
    }

    fn finish(mut self) -> anyhow::Result<()> {
        use std::io::Write;
        if let Some(e) = self.failed.take() {
            return Err(e.into());
        }
        match (self.json, self.rows) {
            (true, 0) => writeln!(self.out, "[]")?,
            (true, _) => writeln!(self.out, "\n]")?,
            (false, 0) => writeln!(self.out, "no clients")?,
            (false, _) => {}
        }
        self.out.flush()?;
        Ok(())
    }
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
