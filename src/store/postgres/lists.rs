//! Large client lists in PostgreSQL: keyset pages from the (page, email) key, contains-search on
//! the `search` column (trigram-indexed when pg_trgm is available), counts summed from the
//! striped tables the triggers of migrations 3 and 4 keep, and imports written a batch per
//! statement.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::{GenericClient, Transaction};

use super::{backend, client_columns, client_lock, client_of, encode, lock, prepared};
use crate::store::{
    AuditEvent, Client, ClientCounts, ClientSet, MatchCount, StoreError, Timestamp, merge_set,
    search_needle, search_text,
};

/// The name of the trigram index on `clients.search`.
const SEARCH_INDEX: &str = "clients_search_trgm";

/// A LIKE pattern matching text that contains `needle` anywhere.
fn contains_pattern(needle: &str) -> String {
    let mut pattern = String::with_capacity(needle.len() + 2);
    pattern.push('%');
    for c in needle.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Creates the trigram index contains-search uses, when the server allows it. pg_trgm is an
/// extension, and creating one needs rights a database owner may lack: then searches still
/// work, reading the page's rows in email order, and this says so once, when the store opens.
/// Under the migration lock, so gateways starting together create it once.
pub(super) async fn ensure_search_index(conn: &mut deadpool_postgres::Object, name: &str) {
    let present = conn
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&SEARCH_INDEX])
        .await
        .map(|row| row.get::<_, bool>(0));
    if matches!(present, Ok(true)) {
        return;
    }
    let created = async {
        let tx = conn.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&super::connect::MIGRATION_LOCK],
        )
        .await?;
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = 0;
             CREATE EXTENSION IF NOT EXISTS pg_trgm;
             CREATE INDEX IF NOT EXISTS {SEARCH_INDEX} ON clients USING gin (search gin_trgm_ops);"
        ))
        .await?;
        tx.commit().await
    }
    .await;
    match created {
        Ok(()) => tracing::info!(database = %name, "client search index ready"),
        Err(e) => tracing::warn!(
            database = %name,
            error = %super::with_causes(&e),
            "cannot create the pg_trgm extension or its index: client searches read the page's rows"
        ),
    }
}

/// See [`crate::store::Store::client_page`].
pub(super) async fn client_page(
    c: &impl GenericClient,
    page: &str,
    after: Option<&str>,
    limit: usize,
    search: Option<&str>,
) -> Result<Vec<Client>, StoreError> {
    let after = after.unwrap_or("");
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = match search.and_then(search_needle) {
        None => {
            prepared::query(
                c,
                concat!(
                    "SELECT ",
                    client_columns!(),
                    " FROM clients
                     WHERE page = $1 AND email > $2 ORDER BY email LIMIT $3"
                ),
                &[&page, &after, &limit],
            )
            .await?
        }
        Some(needle) if needle.contains('\n') => return Ok(Vec::new()),
        // Not prepared: planned for each term, since the best plan depends on how rare it is
        // (the trigram index for a rare one, the page in email order for a common one).
        Some(needle) => c
            .query(
                concat!(
                    "SELECT ",
                    client_columns!(),
                    " FROM clients
                     WHERE page = $1 AND email > $2 AND search LIKE $4
                     ORDER BY email LIMIT $3"
                ),
                &[&page, &after, &limit, &contains_pattern(&needle)],
            )
            .await
            .map_err(backend)?,
    };
    rows.iter().map(|r| client_of(r, 0)).collect()
}

/// See [`crate::store::Store::client_counts`].
pub(super) async fn client_counts(
    c: &impl GenericClient,
    page: &str,
    now: Timestamp,
) -> Result<ClientCounts, StoreError> {
    let row = prepared::query_one(
        c,
        "SELECT coalesce(sum(total), 0)::bigint, coalesce(sum(unlimited), 0)::bigint
                    + coalesce((SELECT sum(clients) FROM client_ends
                                WHERE page = $1 AND until > $2), 0)::bigint
         FROM client_totals WHERE page = $1",
        &[&page, &now],
    )
    .await?;
    let count = |at: usize| u64::try_from(row.get::<_, i64>(at)).unwrap_or(0);
    Ok(ClientCounts {
        total: count(0),
        active: count(1),
    })
}

/// See [`crate::store::Store::count_matching`].
pub(super) async fn count_matching(
    c: &impl GenericClient,
    page: &str,
    search: &str,
    cap: u64,
) -> Result<MatchCount, StoreError> {
    let Some(needle) = search_needle(search) else {
        let total = client_counts(c, page, 0).await?.total;
        return Ok(MatchCount {
            count: total.min(cap),
            exact: total <= cap,
        });
    };
    if needle.contains('\n') {
        return Ok(MatchCount {
            count: 0,
            exact: true,
        });
    }
    // One more than the cap tells "exactly cap" from "more".
    let limit = i64::try_from(cap.saturating_add(1)).unwrap_or(i64::MAX);
    // Not prepared, as a search's page (see `client_page`).
    let row = c
        .query_one(
            "SELECT count(*) FROM (SELECT 1 FROM clients
                 WHERE page = $1 AND search LIKE $2 LIMIT $3) AS matching",
            &[&page, &contains_pattern(&needle), &limit],
        )
        .await
        .map_err(backend)?;
    let found = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
    Ok(MatchCount {
        count: found.min(cap),
        exact: found <= cap,
    })
}

/// See [`crate::store::Store::set_clients`]: the rows' locks, their current records, their new
/// records and their audit entries each in one statement, so a batch of thousands costs a few
/// round trips rather than four per row.
pub(super) async fn set_clients(
    tx: &Transaction<'_>,
    page: &str,
    rows: &[ClientSet<'_>],
    audit: &dyn Fn(&Client, bool) -> AuditEvent,
) -> Result<Vec<(Client, bool)>, StoreError> {
    let mut ids: Vec<i64> = rows.iter().map(|r| client_lock(page, r.email)).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() <= 1 {
        lock(tx, &ids).await?;
    } else {
        // In ascending order, as `lock` takes them: the volatile call runs after the sort.
        prepared::execute(
            tx,
            "SELECT pg_advisory_xact_lock(id)
             FROM unnest($1::bigint[]) WITH ORDINALITY AS locks(id, n) ORDER BY n",
            &[&ids],
        )
        .await?;
    }
    let emails: Vec<&str> = rows.iter().map(|r| r.email).collect();
    let mut current: HashMap<String, Client> = HashMap::with_capacity(rows.len());
    for row in prepared::query(
        tx,
        concat!(
            "SELECT ",
            client_columns!(),
            " FROM clients WHERE page = $1 AND email = ANY($2)"
        ),
        &[&page, &emails],
    )
    .await?
    {
        let client = client_of(&row, 0)?;
        current.insert(client.email.clone(), client);
    }
    let mut out = Vec::with_capacity(rows.len());
    // Each email once, in the order of its first row: the record its last row left.
    let mut written: Vec<&str> = Vec::with_capacity(rows.len());
    let mut seen: HashSet<&str> = HashSet::with_capacity(rows.len());
    let (mut at, mut records) = (
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
    );
    for row in rows {
        let existing = current.remove(row.email);
        let created = existing.is_none();
        let client = merge_set(existing, row);
        let event = audit(&client, created);
        at.push(event.at);
        records.push(encode(&event)?);
        if seen.insert(row.email) {
            written.push(row.email);
        }
        current.insert(client.email.clone(), client.clone());
        out.push((client, created));
    }
    write_clients(tx, page, written.iter().filter_map(|e| current.get(*e))).await?;
    prepared::execute(tx, "INSERT INTO audit (at, record)
         SELECT at, record FROM unnest($1::bigint[], $2::bytea[]) WITH ORDINALITY AS a(at, record, n)
         ORDER BY n",
        &[&at, &records],).await?;
    Ok(out)
}

/// Inserts or replaces clients in one statement; each email at most once.
async fn write_clients<'c>(
    tx: &Transaction<'_>,
    page: &str,
    clients: impl Iterator<Item = &'c Client>,
) -> Result<(), StoreError> {
    let mut email = Vec::new();
    let mut name = Vec::new();
    let mut created_at = Vec::new();
    let mut updated_at = Vec::new();
    let mut access_until = Vec::new();
    let mut source = Vec::new();
    let mut last_login = Vec::new();
    let mut search = Vec::new();
    for c in clients {
        email.push(c.email.as_str());
        name.push(c.name.as_str());
        created_at.push(c.created_at);
        updated_at.push(c.updated_at);
        access_until.push(c.access_until);
        source.push(c.source.name());
        last_login.push(c.last_login);
        search.push(search_text(c));
    }
    prepared::execute(
        tx,
        "INSERT INTO clients (page, email, name, created_at, updated_at, access_until, source,
                              last_login, search)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[],
                                  $6::bigint[], $7::text[], $8::bigint[], $9::text[])
         ON CONFLICT (page, email) DO UPDATE SET name = EXCLUDED.name,
             created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
             access_until = EXCLUDED.access_until, source = EXCLUDED.source,
             last_login = EXCLUDED.last_login, search = EXCLUDED.search",
        &[
            &page,
            &email,
            &name,
            &created_at,
            &updated_at,
            &access_until,
            &source,
            &last_login,
            &search,
        ],
    )
    .await?;
    Ok(())
}
