//! The PostgreSQL side of a copy between backends: every durable record out of one snapshot, in
//! batches, and batches written one transaction each.
//!
//! Gateways may go on writing to a database being read, so the export runs in one
//! `REPEATABLE READ` transaction: every batch comes from the same snapshot, and the counts
//! verified afterwards are those of that snapshot. Batches are read by key ranges, so a table
//! of any size costs one batch of memory.

use deadpool_postgres::{Object, Transaction};
use tokio_postgres::IsolationLevel;

use super::{CLIENT_COLUMNS, PgStore, backend, client_of, decode, encode, order_key};
use crate::store::{
    COPY_BATCH, GrantOrder, Inventory, Record, RecordSink, SecretHash, SessionRecord,
    SpentSignature, StoreError, Timestamp,
};

/// The batch size as a query parameter.
const LIMIT: i64 = COPY_BATCH as i64;

fn corrupt(table: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.into(),
    }
}

fn hash_of(table: &'static str, bytes: &[u8]) -> Result<SecretHash, StoreError> {
    bytes
        .try_into()
        .map_err(|_| corrupt(table, format!("a key of {} bytes, not 32", bytes.len())))
}

fn text_of(table: &'static str, bytes: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec()).map_err(|e| corrupt(table, e.to_string()))
}

/// The key name and order id of a grant order's key, `key name \0 order id`.
fn split_order_key(k: &[u8]) -> Result<(String, String), StoreError> {
    let at = k
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| corrupt("grants", "an order key without its separator"))?;
    Ok((
        text_of("grants", &k[..at])?,
        text_of("grants", &k[at + 1..])?,
    ))
}

impl PgStore {
    /// What tells two databases apart, even when named by different host names: the
    /// database's name, the server's port and the moment the server started.
    pub fn database_identity(&self) -> Result<String, StoreError> {
        self.block(async {
            let conn = self.conn().await?;
            let row = conn
                .query_one(
                    "SELECT current_database() || ' ' || current_setting('port') || ' ' \
                     || pg_postmaster_start_time()::text",
                    &[],
                )
                .await
                .map_err(backend)?;
            Ok(row.get(0))
        })
    }

    /// Runs one query of the export's snapshot.
    fn snapshot_query(
        &self,
        tx: &Transaction<'_>,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.block(async { tx.query(sql, params).await.map_err(backend) })
    }
}

/// Reads every durable record. Each batch is fetched in its own wait on the store's runtime and
/// handed to `sink` between them, outside it: the sink may be another store that waits on a
/// runtime of its own.
pub(super) fn export(
    store: &PgStore,
    now: Timestamp,
    sink: RecordSink<'_>,
) -> Result<(), StoreError> {
    let mut conn: Object = store.block(store.conn())?;
    let tx = store.block(async {
        conn.build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(backend)
    })?;

    let mut after: Option<(String, String)> = None;
    loop {
        let rows = match &after {
            None => store.snapshot_query(
                &tx,
                &format!(
                    "SELECT page, {CLIENT_COLUMNS} FROM clients ORDER BY page, email LIMIT $1"
                ),
                &[&LIMIT],
            )?,
            Some((page, email)) => store.snapshot_query(
                &tx,
                &format!(
                    "SELECT page, {CLIENT_COLUMNS} FROM clients WHERE (page, email) > ($1, $2)
                     ORDER BY page, email LIMIT $3"
                ),
                &[page, email, &LIMIT],
            )?,
        };
        let Some(last) = rows.last() else { break };
        after = Some((last.get(0), last.get(1)));
        let batch = rows
            .iter()
            .map(|r| {
                Ok(Record::Client {
                    page: r.get(0),
                    client: client_of(r, 1)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        sink(batch)?;
    }

    let mut after: Vec<u8> = Vec::new();
    loop {
        let rows = store.snapshot_query(
            &tx,
            "SELECT order_key, record FROM grants WHERE order_key > $1 ORDER BY order_key LIMIT $2",
            &[&after, &LIMIT],
        )?;
        let Some(last) = rows.last() else { break };
        after = last.get::<_, &[u8]>(0).to_vec();
        let batch = rows
            .iter()
            .map(|r| {
                let (key, order) = split_order_key(r.get(0))?;
                Ok(Record::GrantOrder {
                    key,
                    order,
                    record: decode::<GrantOrder>("grants", r.get(1))?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        sink(batch)?;
    }

    let mut after: Vec<u8> = Vec::new();
    loop {
        // A signature is refused until `until` is past, when pruning removes it.
        let rows = store.snapshot_query(
            &tx,
            "SELECT signature_hash, until FROM signatures
             WHERE signature_hash > $1 AND until >= $2 ORDER BY signature_hash LIMIT $3",
            &[&after, &now, &LIMIT],
        )?;
        let Some(last) = rows.last() else { break };
        after = last.get::<_, &[u8]>(0).to_vec();
        let batch = rows
            .iter()
            .map(|r| {
                Ok(Record::Signature(SpentSignature {
                    hash: hash_of("signatures", r.get(0))?,
                    until: r.get(1),
                }))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        sink(batch)?;
    }

    let mut after: Vec<u8> = Vec::new();
    loop {
        let rows = store.snapshot_query(
            &tx,
            "SELECT session_hash, site, email, created_at, expires_at FROM sessions
             WHERE session_hash > $1 AND expires_at > $2 ORDER BY session_hash LIMIT $3",
            &[&after, &now, &LIMIT],
        )?;
        let Some(last) = rows.last() else { break };
        after = last.get::<_, &[u8]>(0).to_vec();
        let batch = rows
            .iter()
            .map(|r| {
                Ok(Record::Session {
                    hash: hash_of("sessions", r.get(0))?,
                    session: SessionRecord {
                        site: text_of("sessions", r.get(1))?,
                        email: r.get(2),
                        created_at: r.get(3),
                        expires_at: r.get(4),
                    },
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        sink(batch)?;
    }

    let mut after: i64 = 0;
    loop {
        let rows = store.snapshot_query(
            &tx,
            "SELECT id, record FROM audit WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after, &LIMIT],
        )?;
        let Some(last) = rows.last() else { break };
        after = last.get(0);
        let batch = rows
            .iter()
            .map(|r| Ok(Record::Audit(decode("audit", r.get(1))?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        sink(batch)?;
    }
    store.block(async { tx.commit().await.map_err(backend) })
}

/// A batch as one column array per field, for `INSERT … SELECT FROM UNNEST(…)`: one statement
/// per kind and batch, however many records.
#[derive(Default)]
struct Columns<'r> {
    client_pages: Vec<&'r str>,
    client_emails: Vec<&'r str>,
    client_names: Vec<&'r str>,
    client_created: Vec<i64>,
    client_updated: Vec<i64>,
    client_until: Vec<Option<i64>>,
    client_sources: Vec<&'static str>,
    client_logins: Vec<Option<i64>>,
    /// What a search matches, as every client write stores it.
    client_search: Vec<String>,
    order_keys: Vec<Vec<u8>>,
    order_updated: Vec<i64>,
    order_records: Vec<Vec<u8>>,
    signature_hashes: Vec<&'r [u8]>,
    signature_until: Vec<i64>,
    session_hashes: Vec<&'r [u8]>,
    session_sites: Vec<&'r [u8]>,
    session_emails: Vec<&'r str>,
    session_created: Vec<i64>,
    session_expires: Vec<i64>,
    audit_at: Vec<i64>,
    audit_records: Vec<Vec<u8>>,
}

impl<'r> Columns<'r> {
    fn of(batch: &'r [Record]) -> Result<Columns<'r>, StoreError> {
        let mut c = Columns::default();
        for record in batch {
            match record {
                Record::Client { page, client } => {
                    c.client_pages.push(page);
                    c.client_emails.push(&client.email);
                    c.client_names.push(&client.name);
                    c.client_created.push(client.created_at);
                    c.client_updated.push(client.updated_at);
                    c.client_until.push(client.access_until);
                    c.client_sources.push(client.source.name());
                    c.client_logins.push(client.last_login);
                    c.client_search.push(crate::store::search_text(client));
                }
                Record::GrantOrder { key, order, record } => {
                    c.order_keys.push(order_key(key, order));
                    // As a grant stores it: the record's age is its client's last change.
                    c.order_updated.push(record.client.updated_at);
                    c.order_records.push(encode(record)?);
                }
                Record::Signature(signature) => {
                    c.signature_hashes.push(&signature.hash);
                    c.signature_until.push(signature.until);
                }
                Record::Session { hash, session } => {
                    c.session_hashes.push(hash);
                    c.session_sites.push(session.site.as_bytes());
                    c.session_emails.push(&session.email);
                    c.session_created.push(session.created_at);
                    c.session_expires.push(session.expires_at);
                }
                Record::Audit(event) => {
                    c.audit_at.push(event.at);
                    c.audit_records.push(encode(event)?);
                }
            }
        }
        Ok(c)
    }
}

/// Writes a batch in one transaction. Plain inserts: a key the target already holds fails the
/// batch rather than being overwritten.
pub(super) fn import(store: &PgStore, batch: &[Record]) -> Result<(), StoreError> {
    let c = Columns::of(batch)?;
    store.block(async {
        let mut conn = store.conn().await?;
        let tx = conn.transaction().await.map_err(backend)?;
        if !c.client_pages.is_empty() {
            tx.execute(
                "INSERT INTO clients
                     (page, email, name, created_at, updated_at, access_until, source, last_login,
                      search)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[],
                     $5::bigint[], $6::bigint[], $7::text[], $8::bigint[], $9::text[])",
                &[
                    &c.client_pages,
                    &c.client_emails,
                    &c.client_names,
                    &c.client_created,
                    &c.client_updated,
                    &c.client_until,
                    &c.client_sources,
                    &c.client_logins,
                    &c.client_search,
                ],
            )
            .await
            .map_err(backend)?;
        }
        if !c.order_keys.is_empty() {
            tx.execute(
                "INSERT INTO grants (order_key, updated_at, record)
                 SELECT * FROM UNNEST($1::bytea[], $2::bigint[], $3::bytea[])",
                &[&c.order_keys, &c.order_updated, &c.order_records],
            )
            .await
            .map_err(backend)?;
        }
        if !c.signature_hashes.is_empty() {
            tx.execute(
                "INSERT INTO signatures (signature_hash, until)
                 SELECT * FROM UNNEST($1::bytea[], $2::bigint[])",
                &[&c.signature_hashes, &c.signature_until],
            )
            .await
            .map_err(backend)?;
        }
        if !c.session_hashes.is_empty() {
            tx.execute(
                "INSERT INTO sessions (session_hash, site, email, created_at, expires_at)
                 SELECT * FROM UNNEST($1::bytea[], $2::bytea[], $3::text[], $4::bigint[],
                     $5::bigint[])",
                &[
                    &c.session_hashes,
                    &c.session_sites,
                    &c.session_emails,
                    &c.session_created,
                    &c.session_expires,
                ],
            )
            .await
            .map_err(backend)?;
        }
        if !c.audit_at.is_empty() {
            // Ids are drawn in the order rows are inserted: the batch's order.
            tx.execute(
                "INSERT INTO audit (at, record)
                 SELECT at, record FROM UNNEST($1::bigint[], $2::bytea[])
                     WITH ORDINALITY AS batch(at, record, n)
                 ORDER BY n",
                &[&c.audit_at, &c.audit_records],
            )
            .await
            .map_err(backend)?;
        }
        store.commit(tx).await?;
        if !c.client_pages.is_empty() || !c.session_hashes.is_empty() {
            store.announce(&conn).await;
        }
        Ok(())
    })
}

pub(super) fn inventory(store: &PgStore) -> Result<Inventory, StoreError> {
    store.block(async {
        let mut conn = store.conn().await?;
        // One snapshot for every count.
        let tx = conn
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(backend)?;
        let pages = tx
            .query("SELECT page, count(*) FROM clients GROUP BY page", &[])
            .await
            .map_err(backend)?;
        let totals = tx
            .query_one(
                "SELECT (SELECT count(*) FROM audit), (SELECT count(*) FROM grants),
                        (SELECT count(*) FROM signatures), (SELECT count(*) FROM sessions)",
                &[],
            )
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(Inventory {
            clients: pages
                .iter()
                .map(|r| (r.get::<_, String>(0), n(r.get(1))))
                .collect(),
            audit: n(totals.get(0)),
            grants: n(totals.get(1)),
            signatures: n(totals.get(2)),
            sessions: n(totals.get(3)),
        })
    })
}

pub(super) fn clear(store: &PgStore) -> Result<(), StoreError> {
    store.block(async {
        let mut conn = store.conn().await?;
        let tx = conn.transaction().await.map_err(backend)?;
        tx.batch_execute(
            "TRUNCATE clients, client_totals, client_ends, codes, tokens, attempts, sessions,
                 grants, signatures, signins, audit, rate_limits",
        )
        .await
        .map_err(backend)?;
        store.commit(tx).await?;
        store.announce(&conn).await;
        Ok(())
    })
}
