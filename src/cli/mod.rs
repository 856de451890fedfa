//! The `pagegate` command's work, one module a command; `main.rs` parses the arguments and
//! calls in here.

pub mod backup;
pub mod check;
pub mod clients;
mod control;
pub mod demo;
pub mod health;
pub mod logging;
pub mod reload;
pub mod restore;
pub mod rotate_key;
pub mod serve;
mod signals;
pub mod store_copy;

/// The `pagegate backup`/`restore` answer for a PostgreSQL store.
fn not_for_postgres(config: &crate::config::Config, what: &str) -> anyhow::Result<()> {
    if matches!(
        config.store.backend,
        crate::config::StoreBackend::Postgres(_)
    ) {
        anyhow::bail!(
            "the store is a PostgreSQL database: {what} it with pg_dump and pg_restore; \
             `pagegate backup` and `restore` work on the embedded redb file"
        );
    }
    Ok(())
}
