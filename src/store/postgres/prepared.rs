//! Every statement the store sends, sent as a prepared statement kept per connection.
//!
//! A statement sent as text is prepared afresh on each call: one round trip to parse and plan
//! it, a second to run it. Kept in the connection's statement cache (deadpool's
//! `prepare_cached`, keyed by the SQL text), it is parsed once per pooled connection, and each
//! later call costs one round trip and no parsing, which halves the round trips of a grant or a
//! sign-in and the CPU both sides spend on them.
//!
//! The cache is keyed by text, so the SQL passed here must be the same text on every call: a
//! `const` or a literal, never `format!` of values (those are parameters); statements built from
//! constants are built with `concat!`. A prepared statement may run a plan made for no
//! particular parameters: statements whose best plan depends on the value (a search term) are
//! sent as text instead, where they are (`lists.rs`).

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::backend;
use crate::store::StoreError;

/// A statement's parameters, as the driver takes them.
pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Runs `sql` and returns how many rows it changed.
pub(super) async fn execute(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, StoreError> {
    let statement = c.prepare_cached(sql).await.map_err(backend)?;
    c.execute(&statement, params).await.map_err(backend)
}

/// Runs `sql` and returns its rows.
pub(super) async fn query(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await.map_err(backend)?;
    c.query(&statement, params).await.map_err(backend)
}

/// Runs `sql`, which returns at most one row.
pub(super) async fn query_opt(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await.map_err(backend)?;
    c.query_opt(&statement, params).await.map_err(backend)
}

/// Runs `sql`, which returns exactly one row.
pub(super) async fn query_one(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Row, StoreError> {
    let statement = c.prepare_cached(sql).await.map_err(backend)?;
    c.query_one(&statement, params).await.map_err(backend)
}
