//! `pagegate check`: validate a configuration file, and reach its database when it is a shared
//! one.

use std::path::Path;

use anyhow::Context;

use crate::config::{Config, StoreBackend};
use crate::store::postgres::PgStore;

/// Loads the file as `serve` would, and says how much it holds.
pub async fn run(config: &Path) -> anyhow::Result<()> {
    let parsed = crate::config::load(config)?;
    let pages: usize = parsed.sites.iter().map(|s| s.pages.len()).sum();
    println!(
        "{}: OK (sites: {}, pages: {})",
        config.display(),
        parsed.sites.len(),
        pages
    );
    check_database(&parsed).await
}

/// Whether a PostgreSQL store is reachable and at which schema version. A database pagegate
/// cannot run on (unreachable, or migrated by a newer pagegate) fails the check.
async fn check_database(config: &Config) -> anyhow::Result<()> {
    let StoreBackend::Postgres(pg) = &config.store.backend else {
        return Ok(());
    };
    let pg = pg.clone();
    let probe = tokio::task::spawn_blocking(move || PgStore::probe(&pg))
        .await
        .context("the database check did not finish")?
        .context("the database is not reachable")?;
    let state = match probe.version {
        0 => "new (pagegate creates its tables on start)".to_owned(),
        v if v == probe.expected => format!("schema version {v}, current"),
        v if v < probe.expected => format!(
            "schema version {v}; this pagegate migrates it to {} on start",
            probe.expected
        ),
        v => anyhow::bail!(
            "{}: schema version {v} is newer than this pagegate's {}: run the newer pagegate",
            probe.database,
            probe.expected
        ),
    };
    println!("{}: reachable, {state}", probe.database);
    Ok(())
}
