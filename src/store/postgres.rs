//! The shared backend: one PostgreSQL database for every gateway behind a load balancer.
//!
//! Same semantics as [`super::redb::RedbStore`]: a write that answers "done" is committed.
//! Read-modify-write calls serialise per record with transaction-scoped advisory locks keyed by
//! a hash of what they change (the (site, email) of a code and its counters, a client's
//! (page, email), a grant's order), taken in a fixed order, so concurrent calls from any number
//! of gateways see each other's effects in turn; a lock that does not exist yet (no counter,
//! no client) is lockable all the same, which row locks are not. Single-statement changes rely
//! on the statement's atomicity (`DELETE … RETURNING` spends a token exactly once).
//!
//! The [`Store`] trait is synchronous. The store owns a small tokio runtime that drives the
//! pool's connections; each call waits on it with `block_on`, from the blocking threads its
//! callers use. Called on an async worker it panics: a worker must never wait on the network.
//!
//! [`Store::changes`] is a sequence that every gateway's writes which change who has access
//! (client lists, sessions ended) move after they commit, announcing the new value with
//! `NOTIFY` ([`listen`]); the store also reads it once a second, in case an announcement is lost,
//! and adds its own writes at once. The per-request session check is answered from memory
//! ([`cache`]) while that count stands still, for at most [`cache::FRESH_FOR`].

mod cache;
mod connect;
mod listen;
mod lists;
mod prepared;
mod settings;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::Transaction;
use deadpool_postgres::{Object, Pool};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

pub use connect::SCHEMA_VERSION;
pub use settings::{DatabaseUrl, PgTls, PostgresConfig};

use super::{
    AttemptPolicy, AuditEvent, BackupError, Client, ClientCounts, ClientEdit, ClientSet, CodeCheck,
    CodeRecord, Grant, GrantResult, IssuedSignin, MatchCount, PRUNE_BATCH, Pruned, Rate, Retention,
    SecretHash, SessionAccess, SessionRecord, SigninNonce, SigninRecord, SigninRequest, Source,
    Store, StoreCounts, StoreError, Timestamp, TokenRecord, earlier_signin, merge_grant,
};

/// How often the shared change count is read.
const CHANGES_POLL: Duration = Duration::from_secs(1);

/// The PostgreSQL-backed store.
pub struct PgStore {
    /// `Some` until drop, which shuts it down without waiting (drop may run on a worker).
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    name: String,
    /// The highest value of the shared `changes` sequence seen.
    seen: Arc<AtomicU64>,
    /// This gateway's own committed changes to who has access, counted at once.
    local: AtomicU64,
    /// Recent session checks, kept while `changes` stands still.
    cache: Arc<cache::AccessCache>,
    /// Whether the listening connection is up (see [`listen`]).
    listening: Arc<AtomicBool>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.name)
            .finish()
    }
}

/// What `pagegate check` reports about a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Host and database, without credentials.
    pub database: String,
    /// The schema version found (0: pagegate never used it).
    pub version: u64,
    /// The version this build writes.
    pub expected: u64,
}

/// A driver error as the store reports it: a lost or refused connection is
/// [`StoreError::Unavailable`] (nothing was changed; a 503 for the caller), anything the server
/// answered with is [`StoreError::Backend`].
fn backend(e: tokio_postgres::Error) -> StoreError {
    let io = std::error::Error::source(&e).is_some_and(|c| c.is::<std::io::Error>());
    if e.is_closed() || (e.code().is_none() && io) || is_unavailable(e.code()) {
        StoreError::Unavailable(with_causes(&e))
    } else {
        StoreError::Backend(with_causes(&e))
    }
}

/// Server answers that mean "not now" rather than "no": shutting down, starting up, too many
/// connections.
fn is_unavailable(code: Option<&tokio_postgres::error::SqlState>) -> bool {
    use tokio_postgres::error::SqlState;
    code.is_some_and(|c| {
        [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
        ]
        .contains(c)
    })
}

/// An error with its causes: the driver's own message is often only "error performing TLS
/// handshake", and the cause ("invalid peer certificate: UnknownIssuer") is what helps.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Backend(format!("encoding a record: {e}")))
}

fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table,
        detail: e.to_string(),
    })
}

/// The advisory lock number of a record: the first 8 bytes of a hash of its parts.
fn lock_id(kind: &str, parts: &[&[u8]]) -> i64 {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

fn code_lock(site: &str, email: &str) -> i64 {
    lock_id("code", &[site.as_bytes(), email.as_bytes()])
}

fn client_lock(page: &str, email: &str) -> i64 {
    lock_id("client", &[page.as_bytes(), email.as_bytes()])
}

/// Takes the advisory locks `ids` until the transaction ends, in ascending order so that two
/// transactions wanting the same ones never wait on each other in a circle.
async fn lock(tx: &Transaction<'_>, ids: &[i64]) -> Result<(), StoreError> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for id in sorted {
        prepared::execute(tx, "SELECT pg_advisory_xact_lock($1)", &[&id]).await?;
    }
    Ok(())
}

fn source_of(name: &str) -> Result<Source, StoreError> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).map_err(|e| {
        StoreError::Corrupt {
            table: "clients",
            detail: e.to_string(),
        }
    })
}

/// A client row's columns, in the order [`client_of`] reads them; a macro so that statements
/// can be `concat!`-ed from it into constants (see [`prepared`]).
macro_rules! client_columns {
    () => {
        "email, name, created_at, updated_at, access_until, source, last_login"
    };
    ($table:literal) => {
        concat!(
            $table,
            ".email, ",
            $table,
            ".name, ",
            $table,
            ".created_at, ",
            $table,
            ".updated_at, ",
            $table,
            ".access_until, ",
            $table,
            ".source, ",
            $table,
            ".last_login"
        )
    };
}
use client_columns;

const CLIENT_COLUMNS: &str = client_columns!();

fn client_of(row: &tokio_postgres::Row, at: usize) -> Result<Client, StoreError> {
    let source: String = row.get(at + 5);
    Ok(Client {
        email: row.get(at),
        name: row.get(at + 1),
        created_at: row.get(at + 2),
        updated_at: row.get(at + 3),
        access_until: row.get(at + 4),
        source: source_of(&source)?,
        last_login: row.get(at + 6),
    })
}

async fn read_client(
    c: &impl deadpool_postgres::GenericClient,
    page: &str,
    email: &str,
) -> Result<Option<Client>, StoreError> {
    let row = prepared::query_opt(
        c,
        concat!(
            "SELECT ",
            client_columns!(),
            " FROM clients WHERE page = $1 AND email = $2"
        ),
        &[&page, &email],
    )
    .await?;
    row.map(|r| client_of(&r, 0)).transpose()
}

async fn write_client(tx: &Transaction<'_>, page: &str, c: &Client) -> Result<(), StoreError> {
    prepared::execute(tx, "INSERT INTO clients (page, email, name, created_at, updated_at, access_until, source, last_login, search)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (page, email) DO UPDATE SET name = EXCLUDED.name,
             created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
             access_until = EXCLUDED.access_until, source = EXCLUDED.source,
             last_login = EXCLUDED.last_login, search = EXCLUDED.search",
        &[
            &page,
            &c.email,
            &c.name,
            &c.created_at,
            &c.updated_at,
            &c.access_until,
            &c.source.name(),
            &c.last_login,
            &super::search_text(c),
        ],).await?;
    Ok(())
}

async fn append_audit(tx: &Transaction<'_>, event: &AuditEvent) -> Result<(), StoreError> {
    prepared::execute(
        tx,
        "INSERT INTO audit (at, record) VALUES ($1, $2)",
        &[&event.at, &encode(event)?],
    )
    .await?;
    Ok(())
}

/// Wrong-code bookkeeping for one (site, email), in all browsers or in one.
#[derive(Debug, Clone, Copy)]
struct Attempts {
    failures: u32,
    window_start: Timestamp,
}

impl Attempts {
    fn current(mut self, now: Timestamp, policy: AttemptPolicy) -> Attempts {
        if now - self.window_start >= policy.window {
            self.failures = 0;
            self.window_start = now;
        }
        self
    }

    fn locks(overall: &Attempts, mine: Option<&Attempts>, policy: AttemptPolicy) -> bool {
        overall.failures >= policy.max_attempts_per_email
            || mine.is_some_and(|m| m.failures >= policy.max_attempts)
    }
}

/// The counter of (site, email) in `browser` (empty: over all browsers) at `now`.
async fn counter(
    c: &impl deadpool_postgres::GenericClient,
    site: &str,
    email: &str,
    browser: &[u8],
    now: Timestamp,
    policy: AttemptPolicy,
) -> Result<Attempts, StoreError> {
    let row = prepared::query_opt(
        c,
        "SELECT failures, window_start FROM attempts
             WHERE site = $1 AND email = $2 AND browser = $3",
        &[&site.as_bytes(), &email, &browser],
    )
    .await?;
    let stored = row.map(|r| Attempts {
        failures: u32::try_from(r.get::<_, i32>(0)).unwrap_or(0),
        window_start: r.get(1),
    });
    Ok(stored
        .unwrap_or(Attempts {
            failures: 0,
            window_start: now,
        })
        .current(now, policy))
}

async fn save_counter(
    tx: &Transaction<'_>,
    site: &str,
    email: &str,
    browser: &[u8],
    a: &Attempts,
) -> Result<(), StoreError> {
    let failures = i32::try_from(a.failures).unwrap_or(i32::MAX);
    prepared::execute(
        tx,
        "INSERT INTO attempts (site, email, browser, failures, window_start)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (site, email, browser) DO UPDATE
         SET failures = EXCLUDED.failures, window_start = EXCLUDED.window_start",
        &[
            &site.as_bytes(),
            &email,
            &browser,
            &failures,
            &a.window_start,
        ],
    )
    .await?;
    Ok(())
}

/// The first answer to an order, kept to answer retries the same way.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct GrantRecord {
    page: String,
    email: String,
    client: Client,
    created: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signin: Option<SigninNonce>,
}

async fn save_grant(
    tx: &Transaction<'_>,
    order_key: &[u8],
    record: &GrantRecord,
) -> Result<(), StoreError> {
    prepared::execute(
        tx,
        "INSERT INTO grants (order_key, updated_at, record) VALUES ($1, $2, $3)
         ON CONFLICT (order_key) DO UPDATE SET updated_at = EXCLUDED.updated_at,
             record = EXCLUDED.record",
        &[&order_key, &record.client.updated_at, &encode(record)?],
    )
    .await?;
    Ok(())
}

/// As the redb store's: the sign-in link a grant hands out, and whether it issued a new one.
async fn order_signin(
    tx: &Transaction<'_>,
    request: &SigninRequest<'_>,
    earlier: Option<SigninNonce>,
    now: Timestamp,
) -> Result<(IssuedSignin, bool), StoreError> {
    let mut live = None;
    if let Some(nonce) = earlier {
        for hash in (request.hashes)(&nonce) {
            let row = prepared::query_opt(
                tx,
                "SELECT expires_at FROM signins WHERE link_hash = $1",
                &[&hash.as_slice()],
            )
            .await?;
            if let Some(expires_at) = row.map(|r| r.get::<_, i64>(0)).filter(|e| *e > now) {
                live = Some(IssuedSignin {
                    nonce,
                    hash,
                    expires_at,
                    fresh: false,
                });
                break;
            }
        }
    }
    let replaced = match earlier_signin(earlier, live) {
        Err(link) => return Ok((link, false)),
        Ok(replaced) => replaced,
    };
    if let Some(nonce) = replaced {
        for hash in (request.hashes)(&nonce) {
            prepared::execute(
                tx,
                "DELETE FROM signins WHERE link_hash = $1",
                &[&hash.as_slice()],
            )
            .await?;
        }
    }
    let hash = (request.hashes)(&request.nonce)
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Backend("no key to hash a sign-in link with".into()))?;
    prepared::execute(
        tx,
        "INSERT INTO signins (link_hash, site, expires_at, record) VALUES ($1, $2, $3, $4)
         ON CONFLICT (link_hash) DO UPDATE SET site = EXCLUDED.site,
             expires_at = EXCLUDED.expires_at, record = EXCLUDED.record",
        &[
            &hash.as_slice(),
            &request.record.site.as_bytes(),
            &request.record.expires_at,
            &encode(request.record)?,
        ],
    )
    .await?;
    append_audit(tx, request.audit).await?;
    Ok((
        IssuedSignin {
            nonce: request.nonce,
            hash,
            expires_at: request.record.expires_at,
            fresh: true,
        },
        true,
    ))
}

fn order_key(key_name: &str, order: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key_name.len() + order.len() + 1);
    k.extend_from_slice(key_name.as_bytes());
    k.push(0);
    k.extend_from_slice(order.as_bytes());
    k
}

fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl PgStore {
    /// Connects to the database `config` names and brings its schema up to date (see
    /// [`connect::migrate`]). Fails, without changing anything, on a database a newer pagegate
    /// migrated.
    pub fn open(config: &PostgresConfig) -> Result<PgStore, StoreError> {
        let pg = connect::driver_config(config)?;
        let name = connect::describe(&pg);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pagegate-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("database runtime: {e}")))?;
        let pool = {
            let _inside = runtime.enter();
            connect::pool(config, pg.clone())?
        };
        let seen = Arc::new(AtomicU64::new(0));
        let store = PgStore {
            runtime: Some(runtime),
            pool,
            name,
            seen,
            local: AtomicU64::new(0),
            cache: Arc::default(),
            listening: Arc::default(),
        };
        store.block(async {
            let mut conn = store.conn().await?;
            connect::migrate(&mut conn, &store.name).await?;
            lists::ensure_search_index(&mut conn, &store.name).await;
            let v = read_changes(&conn).await?;
            store.seen.fetch_max(v, Ordering::AcqRel);
            Ok::<_, StoreError>(())
        })?;
        store.watch_changes();
        store.listen_for_changes(config, pg);
        Ok(store)
    }

    /// Whether the database is reachable and at which schema version, without migrating it.
    pub fn probe(config: &PostgresConfig) -> Result<Probe, StoreError> {
        let pg = connect::driver_config(config)?;
        let database = connect::describe(&pg);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("database runtime: {e}")))?;
        let version = runtime.block_on(async {
            let pool = connect::pool(config, pg)?;
            let conn = pool
                .get()
                .await
                .map_err(|e| StoreError::Backend(format!("{database}: {}", with_causes(&e))))?;
            connect::schema_version(&conn)
                .await
                .map_err(|e| StoreError::Backend(format!("{database}: {e}")))
        })?;
        Ok(Probe {
            database,
            version,
            expected: SCHEMA_VERSION,
        })
    }

    /// Host and database, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn block<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match &self.runtime {
            Some(rt) => rt.block_on(f),
            None => Err(StoreError::Backend("the store is closed".into())),
        }
    }

    /// A connection from the pool. Failing to get one (the server down, the network cut, every
    /// connection busy past `connect_timeout`) is [`StoreError::Unavailable`].
    async fn conn(&self) -> Result<Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(format!("{}: {}", self.name, with_causes(&e))))
    }

    /// Commits `tx`: the call's writes are durable once this returns.
    async fn commit(&self, tx: Transaction<'_>) -> Result<(), StoreError> {
        tx.commit().await.map_err(backend)
    }

    /// After a commit that changed who has access (a client list, a session ended): this
    /// gateway stops using its kept session answers at once, and every other one when it hears
    /// the announcement (or, should that be lost, at its next poll of the count). Only after the
    /// commit: moved before, another gateway could check again too early, see the old data, and
    /// keep that answer as current.
    async fn announce(&self, conn: &Object) {
        self.local.fetch_add(1, Ordering::AcqRel);
        match announce_change(conn).await {
            Ok(v) => {
                self.seen.fetch_max(v, Ordering::AcqRel);
            }
            Err(e) => tracing::warn!(error = %e, "could not announce a change to other gateways"),
        }
    }

    /// The session and its clients on `pages`, from the database.
    fn read_session_access(
        &self,
        session_hash: &SecretHash,
        pages: &[&str],
    ) -> Result<Option<SessionAccess>, StoreError> {
        self.block(async {
            let conn = self.conn().await?;
            // One statement, so one snapshot: the session and its clients as of one moment.
            let rows = prepared::query(
                &conn,
                concat!(
                    "SELECT s.site, s.email, s.created_at, s.expires_at, c.page, ",
                    client_columns!("c"),
                    " FROM sessions s
                 LEFT JOIN clients c ON c.email = s.email AND c.page = ANY($2)
                 WHERE s.session_hash = $1"
                ),
                &[&session_hash.as_slice(), &pages],
            )
            .await?;
            let Some(first) = rows.first() else {
                return Ok(None);
            };
            let site: &[u8] = first.get(0);
            let session = SessionRecord {
                site: String::from_utf8(site.to_vec()).map_err(|e| StoreError::Corrupt {
                    table: "sessions",
                    detail: e.to_string(),
                })?,
                email: first.get(1),
                created_at: first.get(2),
                expires_at: first.get(3),
            };
            let mut found: Vec<(String, Client)> = Vec::new();
            for row in &rows {
                if let Some(page) = row.get::<_, Option<String>>(4) {
                    found.push((page, client_of(row, 5)?));
                }
            }
            let clients = pages
                .iter()
                .map(|p| {
                    found
                        .iter()
                        .find(|(page, _)| page == p)
                        .map(|(_, c)| c.clone())
                })
                .collect();
            Ok(Some(SessionAccess { session, clients }))
        })
    }

    /// Starts the connection that hears other gateways' announcements (see [`listen`]).
    fn listen_for_changes(&self, config: &PostgresConfig, pg: tokio_postgres::Config) {
        let Some(rt) = &self.runtime else { return };
        rt.spawn(
            listen::Listener {
                seen: Arc::downgrade(&self.seen),
                cache: Arc::downgrade(&self.cache),
                listening: self.listening.clone(),
                config: config.clone(),
                pg,
                database: self.name.clone(),
            }
            .run(),
        );
    }

    /// Reads the shared change count once a second, on the store's runtime, for as long as the
    /// store lives.
    fn watch_changes(&self) {
        let Some(rt) = &self.runtime else { return };
        let pool = self.pool.clone();
        let seen = Arc::downgrade(&self.seen);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(CHANGES_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(seen) = seen.upgrade() else { return };
                let Ok(conn) = pool.get().await else { continue };
                if let Ok(v) = read_changes(&conn).await {
                    seen.fetch_max(v, Ordering::AcqRel);
                }
            }
        });
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn read_changes(c: &impl deadpool_postgres::GenericClient) -> Result<u64, StoreError> {
    let row = prepared::query_one(c, READ_CHANGES, &[]).await?;
    Ok(changes_in(&row))
}

/// Reads the shared change count; [`changes_in`] makes it a number.
const READ_CHANGES: &str = "SELECT last_value, is_called FROM changes";

fn changes_in(row: &tokio_postgres::Row) -> u64 {
    // A sequence never used still reports its start value, with is_called false.
    let called: bool = row.get(1);
    if called {
        u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)
    } else {
        0
    }
}

/// Moves the shared change count and announces its new value on [`listen::CHANNEL`].
async fn announce_change(c: &impl deadpool_postgres::GenericClient) -> Result<u64, StoreError> {
    let v: i64 = prepared::query_one(
        c,
        "SELECT n FROM (SELECT nextval('changes') AS n) moved, pg_notify($1, n::text)",
        &[&listen::CHANNEL],
    )
    .await?
    .get(0);
    Ok(u64::try_from(v).unwrap_or(0))
}

impl Store for PgStore {
    fn client(&self, page: &str, email: &str) -> Result<Option<Client>, StoreError> {
        self.block(async {
            let conn = self.conn().await?;
            read_client(&conn, page, email).await
        })
    }

    fn clients(&self, page: &str) -> Result<Vec<Client>, StoreError> {
        self.block(async {
            let conn = self.conn().await?;
            let rows = prepared::query(
                &conn,
                concat!(
                    "SELECT ",
                    client_columns!(),
                    " FROM clients WHERE page = $1 ORDER BY email"
                ),
                &[&page],
            )
            .await?;
            rows.iter().map(|r| client_of(r, 0)).collect()
        })
    }

    fn put_client(
        &self,
        page: &str,
        client: &Client,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.block(async {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(backend)?;
            write_client(&tx, page, client).await?;
            append_audit(&tx, audit).await?;
            self.commit(tx).await?;
            self.announce(&conn).await;
            Ok(())
        })
    }

    fn remove_client(
        &self,
        page: &str,
        email: &str,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        self.block(async {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(backend)?;
            let removed = prepared::execute(
                &tx,
                "DELETE FROM clients WHERE page = $1 AND email = $2",
                &[&page, &email],
            )
            .await?
                > 0;
            if !removed {
                return Ok(false);
            }
            append_audit(&tx, audit).await?;
            self.commit(tx).await?;
            self.announce(&conn).await;
            Ok(true)
        })
    }

    fn issue_code(
        &self,
        site: &str,
        email: &str,
        code: &CodeRecord,
        token: &TokenRecord,
    ) -> Result<(), StoreError> {
        self.block(async {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(backend)?;
            lock(&tx, &[code_lock(site, email)]).await?;
            prepared::execute(
                &tx,
                "DELETE FROM tokens WHERE token_hash IN
                 (SELECT token_hash FROM codes WHERE site = $1 AND email = $2)",
                &[&site.as_bytes(), &email],
            )
            .await?;
            prepared::execute(
                &tx,
                "INSERT INTO codes (site, email, token_hash, expires_at, record)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (site, email) DO UPDATE SET token_hash = EXCLUDED.token_hash,
                     expires_at = EXCLUDED.expires_at, record = EXCLUDED.record",
                &[
                    &site.as_bytes(),
                    &email,
                    &code.token_hash.as_slice(),
                    &code.expires_at,
                    &encode(code)?,
                ],
            )
            .await?;
            prepared::execute(
                &tx,
                "INSERT INTO tokens (token_hash, expires_at, record) VALUES ($1, $2, $3)
                 ON CONFLICT (token_hash) DO UPDATE SET expires_at = EXCLUDED.expires_at,
                     record = EXCLUDED.record",
                &[
                    &code.token_hash.as_slice(),
                    &token.expires_at,
                    &encode(token)?,
                ],
            )
            .await?;
            self.commit(tx).await?;
            Ok(())
        })
    }

    fn is_locked(
        &self,
        site: &str,
        email: &str,
        browser: &[SecretHash],
        now: Timestamp,
        policy: AttemptPolicy,
    ) -> Result<bool, StoreError> {
        self.block(async {
            let mut conn = self.conn().await?;
            // One snapshot for both counters.
            let tx = conn
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(backend)?;
            let overall = counter(&tx, site, email, &[], now, policy).await?;
            let mine = match browser.first() {
                Some(b) => Some(counter(&tx, site, email, b, now, policy).await?),
                None => None,
            };
            Ok(Attempts::locks(&overall, mine.as_ref(), policy))
        })
    }

    fn check_code(
        &self,
        site: &str,
        email: &str,
        browser: &[SecretHash],
        now: Timestamp,
        policy: AttemptPolicy,
        matches: &dyn Fn(&CodeRecord) -> bool,
    ) -> Result<CodeCheck, StoreError> {
        self.block(async {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(backend)?;
            // Every check and issue of this (site, email) waits here for the one before it
            // to commit, so no two wrong tries read the same count.
            lock(&tx, &[code_lock(site, email)]).await?;
            let mut overall = counter(&tx, site, email, &[], now, policy).await?;
            let mine_browser = browser.first();
            let mut mine = match mine_browser {
                Some(b) => Some(counter(&tx, site, email, b, now, policy).await?),
                None => None,
            };
            if Attempts::locks(&overall, mine.as_ref(), policy) {
                return Ok(CodeCheck::Locked);
            }
            let row = prepared::query_opt(
                &tx,
                "SELECT record FROM codes WHERE site = $1 AND email = $2",
                &[&site.as_bytes(), &email],
            )
            .await?;
            let pending = row
                .map(|r| decode::<CodeRecord>("codes", r.get::<_, &[u8]>(0)))
                .transpose()?
                .filter(|c| c.expires_at > now && c.browser.is_none_or(|b| browser.contains(&b)));
            let remove_code = |code: &CodeRecord| {
                let token = code.token_hash;
                let tx = &tx;
                async move {
                    prepared::execute(
                        tx,
                        "DELETE FROM codes WHERE site = $1 AND email = $2",
                        &[&site.as_bytes(), &email],
                    )
                    .await?;
                    prepared::execute(
                        tx,
                        "DELETE FROM tokens WHERE token_hash = $1",
                        &[&token.as_slice()],
                    )
                    .await?;
                    Ok::<_, StoreError>(())
                }
            };
            if let Some(code) = pending.as_ref().filter(|c| matches(c)) {
                remove_code(code).await?;
                if let Some(b) = mine_browser {
                    prepared::execute(
                        &tx,
                        "DELETE FROM attempts WHERE site = $1 AND email = $2 AND browser = $3",
                        &[&site.as_bytes(), &email, &b.as_slice()],
                    )
                    .await?;
                }
                let accepted = CodeCheck::Accepted(code.clone());
                self.commit(tx).await?;
                return Ok(accepted);
            }
            if let (Some(b), Some(m)) = (mine_browser, mine.as_mut()) {
                m.failures += 1;
                save_counter(&tx, site, email, b, m).await?;
            }
            if pending.is_some() {
                overall.failures += 1;
                save_counter(&tx, site, email, &[], &overall).await?;
            }
            let answer = if Attempts::locks(&overall, mine.as_ref(), policy) {
                // The code dies with the last allowed failure, and so does its link.
                if let Some(code) = &pending {
                    remove_code(code).await?;
                }
                CodeCheck::Locked
            } else {
                let left_overall = policy.max_attempts_per_email - overall.failures;
                let left_here = mine.map_or(left_overall, |m| policy.max_attempts - m.failures);
                CodeCheck::Rejected {
                    attempts_left: left_here.min(left_overall),
                }
            };
            self.commit(tx).await?;
            Ok(answer)
        })
    }

    fn peek_token(
        &self,
        token_hash: &SecretHash,
        now: Timestamp,
    ) -> Result<Option<TokenRecord>, StoreError> {
        self.block(async {
            let conn = self.conn().await?;
            let row = prepared::query_opt(
                &conn,
                "SELECT record FROM tokens WHERE token_hash = $1",
                &[&token_hash.as_slice()],
            )
            .await?;
            let token = row
                .map(|r| decode::<TokenRecord>("tokens", r.get::<_, &[u8]>(0)))
                .transpose()?;
            Ok(token.filter(|t| t.expires_at > now))
        })
    }

    fn take_token(
        &self,
        token_hash: &SecretHash,
        now: Timestamp,
    ) -> Result<Option<TokenRecord>, StoreError> {
        self.block(async {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(backend)?;
            // Only one caller gets the row back: the token is spent once.
            let row = prepared::query_opt(
                &tx,
                "DELETE FROM tokens WHERE token_hash = $1 RETURNING record",
                &[&token_hash.as_slice()],
            )
            .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let token = decode::<TokenRecord>("tokens", row.get::<_, &[u8]>(0))?;
            prepared::execute(
                &tx,
                "DELETE FROM codes WHERE site = $1 AND email = $2 AND token_hash = $3",
                &[&token.site.as_bytes(), &token.email, &token_hash.as_slice()],
            )
            .await?;
            self.commit(tx).await?;
            Ok((token.expires_at > now).then_some(token))
        })
    }

    fn create_session(
        &self,
        session_hash: &SecretHash,
        session: &SessionRecord,
        pages: &[String],
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.block(async {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(backend)?;
            prepared::execute(
                &tx,
                "INSERT INTO sessions (session_hash, site, email, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (session_hash) DO UPDATE SET site = EXCLUDED.site,
                     email = EXCLUDED.email, created_at = EXCLUDED.created_at,
                     expires_at = EXCLUDED.expires_at",
                &[
                    &session_hash.as_slice(),
                    &session.site.as_bytes(),
                    &session.email,
                    &session.created_at,
                    &session.expires_at,
                ],
            )
            .await?;
            prepared::execute(
                &tx,
                "UPDATE clients SET last_login = $1 WHERE email = $2 AND page = ANY($3)",
                &[&session.created_at, &session.email, &pages],
            )
            .await?;
            append_audit(&tx, audit).await?;
            self.commit(tx).await?;
            Ok(())
        })
    }

    fn session_access(
        &self,
        session_hash: &SecretHash,
        pages: &[&str],
    ) -> Result<Option<SessionAccess>, StoreError> {
        // The count before the question: a change committed while it is in flight moves the
        // count past it, so the answer is never kept as current.
        let changes = self.changes();
        if let Some(kept) = self.cache.get(session_hash, pages, changes) {
            return Ok(kept);
        }
        let asked_at = Instant::now();
        let access = self.read_session_access(session_hash, pages)?;
        self.cache
            .put(session_hash, pages, access.clone(), asked_at, changes);
        Ok(access)
    }

    fn shares_rate_limits(&self) -> bool {
        true
    }

    fn hears_changes(&self) -> Option<bool> {
        Some(self.listening.load(Ordering::Acquire))
    }

    fn take_rates(&self, limits: &[(&str, Rate)]) -> Result<Option<Duration>, StoreError> {
        self.block(async {
            let conn = self.conn().await?;
            for (key, rate) in limits {
                let key = Sha256::digest(key.as_bytes()).to_vec();
                let interval = i64::try_from(rate.interval.as_millis()).unwrap_or(i64::MAX / 4);
                let tolerance = interval.saturating_mul(i64::from(rate.burst.saturating_sub(1)));
                // One statement, atomic per key: the limit moves only when it lets the request
                // in.
                let taken = prepared::query_opt(
                    &conn,
                    "INSERT INTO rate_limits AS r (key, tat)
                         VALUES ($1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $2)
                         ON CONFLICT (key) DO UPDATE
                         SET tat = GREATEST(r.tat, EXCLUDED.tat - $2) + $2
                         WHERE GREATEST(r.tat, EXCLUDED.tat - $2) - (EXCLUDED.tat - $2) <= $3
                         RETURNING tat",
                    &[&key, &interval, &tolerance],
                )
                .await?;
                if taken.is_some() {
                    continue;
                }
                let wait: Option<i64> = prepared::query_opt(
                    &conn,
                    "SELECT tat - (extract(epoch FROM clock_timestamp()) * 1000)::bigint - $2
                         FROM rate_limits WHERE key = $1",
                    &[&key, &tolerance],
                )
                .await?
                .map(|row| row.get(0));
                let wait = u64::try_from(wait.unwrap_or(1).max(1)).unwrap_or(1);
                return Ok(Some(Duration::from_millis(wait)));
            }
            Ok(None)
        })
    }

    fn kept_session_access(
        &self,
        session_hash: &SecretHash,
        pages: &[&str],
    ) -> Option<Option<SessionAccess>> {
        self.cache.get(session_hash, pages, self.changes())
    }

    fn delete_session(
        &self,
        session_hash: &SecretHash,
        audit: Option<&AuditEvent>,
    ) -> Result<(), StoreError> {
        self.block(async {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(backend)?;
            let removed = prepared::execute(
                &tx,
                "DELETE FROM sessions WHERE session_hash = $1",
                &[&session_hash.as_slice()],
            )
            .await?
                > 0;
            if !removed {
                return Ok(());
            }
            if let Some(event) = audit {
                append_audit(&tx, event).await?;
            }
            self.commit(tx).await?;
            self.announce(&conn).await;
            Ok(())
        })
    }

    fn revoke_sessions(
        &self,
        site: &str,
        page: &str,
        email: &str,
        audit: &AuditEvent,
    ) -> Result<Option<usize>, StoreError> {
        self.block(async {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(backend)?;
            // The client stays listed until this commits.
            let listed = prepared::query_opt(
                &tx,
                "SELECT 1 FROM clients WHERE page = $1 AND email = $2 FOR SHARE",
                &[&page, &email],
            )
            .await?
            .is_some();
            if !listed {
                return Ok(None);
            }
            let revoked = prepared::execute(
                &tx,
                "DELETE FROM sessions WHERE site = $1 AND email = $2",
                &[&site.as_bytes(), &email],
            )
            .await?;
            append_audit(&tx, audit).await?;
            self.commit(tx).await?;
            self.announce(&conn).await;
            Ok(Some(count(revoked)))
        })
    }

    fn count_active_sessions(&self, now: Timestamp) -> Result<Vec<(String, u64)>, StoreError> {
        self.block(async {
            let conn = self.conn().await?;
            let rows = prepared::query(
                &conn,
                "SELECT site, count(*) FROM sessions WHERE expires_at > $1
                     GROUP BY site ORDER BY site",
                &[&now],
            )
            .await?;
            rows.iter()
                .map(|r| {
                    let site: &[u8] = r.get(0);
                    let n: i64 = r.get(1);
                    let site =
                        String::from_utf8(site.to_vec()).map_err(|e| StoreError::Corrupt {
                            table: "sessions",
                            detail: e.to_string(),
                        })?;
                    Ok((site, u64::try_from(n).unwrap_or(0)))
                })
                .collect()
        })
    }

    fn reads_wait(&self) -> bool {
        true
    }

    /// The local writes plus the highest shared count seen: both only grow, so the sum moves
    /// whenever either does.
    fn changes(&self) -> u64 {
        self.seen
            .load(Ordering::Acquire)
            .wrapping_add(self.local.load(Ordering::Acquire))
    }

    fn edit_client(
        &self,
        page: &str,
        email: &str,
        update: &dyn Fn(&Client) -> Option<Client>,
        audit: &dyn Fn(&Client) -> AuditEvent,
    ) -> Result<ClientEdit, StoreError> {
        self.block(async {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(backend)?;
            lock(&tx, &[client_lock(page, email)]).await?;
            let Some(old) = read_client(&tx, page, email).await? else {
                return Ok(ClientEdit::Missing);
            };
            let Some(new) = update(&old) else {
                return Ok(ClientEdit::Unchanged(old));
            };
            if new.email != old.email {
                // Ordered after the first lock: a rename locks old then new, so two renames
                // of the same pair could wait on each other; the database breaks such a cycle
                // by failing one of them.
                lock(&tx, &[client_lock(page, &new.email)]).await?;
                if read_client(&tx, page, &new.email).await?.is_some() {
                    return Ok(ClientEdit::EmailTaken);
                }
                prepared::execute(
                    &tx,
                    "DELETE FROM clients WHERE page = $1 AND email = $2",
                    &[&page, &email],
                )
                .await?;
            }
            write_client(&tx, page, &new).await?;
            append_audit(&tx, &audit(&new)).await?;
            self.commit(tx).await?;
            self.announce(&conn).await;
            Ok(ClientEdit::Edited(new))
        })
    }

    fn set_clients(
        &self,
        page: &str,
        rows: &[ClientSet<'_>],
        audit: &dyn Fn(&Client, bool) -> AuditEvent,
    ) -> Result<Vec<(Client, bool)>, StoreError> {
        self.block(async {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(backend)?;
            let out = lists::set_clients(&tx, page, rows, audit).await?;
            self.commit(tx).await?;
            self.announce(&conn).await;
            Ok(out)
        })
    }

    // ---- large lists (see the `lists` module) ----

    fn client_page(
        &self,
        page: &str,
        after: Option<&str>,
        limit: usize,
        search: Option<&str>,
    ) -> Result<Vec<Client>, StoreError> {
        self.block(async {
            let conn = self.conn().await?;
            lists::client_page(&conn, page, after, limit, search).await
        })
    }

    fn client_counts(&self, page: &str, now: Timestamp) -> Result<ClientCounts, StoreError> {
        self.block(async {
            let conn = self.conn().await?;
            lists::client_counts(&conn, page, now).await
        })
    }

    fn count_matching(&self, page: &str, search: &str, cap: u64) -> Result<MatchCount, StoreError> {
        self.block(async {
            let conn = self.conn().await?;
            lists::count_matching(&conn, page, search, cap).await
        })
    }

    // ---- end of large lists ----

    fn grant(&self, grant: &Grant<'_>, audit: &AuditEvent) -> Result<GrantResult, StoreError> {
        self.block(async {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(backend)?;
            let key = grant.order.map(|(k, o)| order_key(k, o));
            // The order first, then the client: every grant takes them in this order.
            if let Some(k) = &key {
                lock(&tx, &[lock_id("order", &[k])]).await?;
            }
            lock(&tx, &[client_lock(grant.page, grant.email)]).await?;
            if let Some(signature) = &grant.signature {
                let spent = prepared::query_opt(
                    &tx,
                    "SELECT 1 FROM signatures WHERE signature_hash = $1",
                    &[&signature.hash.as_slice()],
                )
                .await?
                .is_some();
                if spent {
                    return Ok(GrantResult::SignatureSpent);
                }
            }
            let first = match &key {
                None => None,
                Some(k) => {
                    prepared::query_opt(&tx, "SELECT record FROM grants WHERE order_key = $1", &[k])
                        .await?
                        .map(|r| decode::<GrantRecord>("grants", r.get::<_, &[u8]>(0)))
                        .transpose()?
                }
            };
            if let Some(first) = &first {
                if first.page != grant.page || first.email != grant.email {
                    return Ok(GrantResult::Conflict);
                }
            }
            // Spent in this transaction: of two grants with one signature, the second waits
            // on the first's row and then finds it, whatever their orders.
            let spent = match &grant.signature {
                None => false,
                Some(signature) => {
                    let inserted = prepared::execute(
                        &tx,
                        "INSERT INTO signatures (signature_hash, until) VALUES ($1, $2)
                             ON CONFLICT (signature_hash) DO NOTHING",
                        &[&signature.hash.as_slice(), &signature.until],
                    )
                    .await?;
                    if inserted == 0 {
                        return Ok(GrantResult::SignatureSpent);
                    }
                    true
                }
            };
            if let (Some(k), Some(mut first)) = (&key, first) {
                let (signin, issued) = match grant.signin {
                    None => (None, false),
                    Some(request) => {
                        let (link, issued) =
                            order_signin(&tx, &request, first.signin, grant.now).await?;
                        if issued {
                            first.signin = Some(link.nonce);
                            save_grant(&tx, k, &first).await?;
                        }
                        (Some(link), issued)
                    }
                };
                let replayed = GrantResult::Replayed {
                    client: first.client,
                    created: first.created,
                    signin,
                };
                if spent || issued {
                    self.commit(tx).await?;
                    self.announce(&conn).await;
                }
                return Ok(replayed);
            }
            let existing = read_client(&tx, grant.page, grant.email).await?;
            let created = existing.is_none();
            let client = merge_grant(existing, grant);
            write_client(&tx, grant.page, &client).await?;
            append_audit(&tx, audit).await?;
            let signin = match &grant.signin {
                Some(request) => Some(order_signin(&tx, request, None, grant.now).await?.0),
                None => None,
            };
            if let Some(k) = &key {
                let record = GrantRecord {
                    page: grant.page.to_owned(),
                    email: grant.email.to_owned(),
                    client: client.clone(),
                    created,
                    signin: signin.map(|s| s.nonce),
                };
                save_grant(&tx, k, &record).await?;
            }
            self.commit(tx).await?;
            self.announce(&conn).await;
            Ok(GrantResult::Applied {
                client,
                created,
                signin,
            })
        })
    }

    fn peek_signin(
        &self,
        hashes: &[SecretHash],
        now: Timestamp,
    ) -> Result<Option<SigninRecord>, StoreError> {
        self.block(async {
            let conn = self.conn().await?;
            let keys: Vec<&[u8]> = hashes.iter().map(|h| h.as_slice()).collect();
            let rows = prepared::query(
                &conn,
                "SELECT link_hash, record FROM signins WHERE link_hash = ANY($1)",
                &[&keys],
            )
            .await?;
            for hash in hashes {
                if let Some(row) = rows
                    .iter()
                    .find(|r| r.get::<_, &[u8]>(0) == hash.as_slice())
                {
                    let record = decode::<SigninRecord>("signins", row.get::<_, &[u8]>(1))?;
                    return Ok((record.expires_at > now).then_some(record));
                }
            }
            Ok(None)
        })
    }

    fn take_signin(
        &self,
        hashes: &[SecretHash],
        site: &str,
        now: Timestamp,
        audit: &dyn Fn(&SigninRecord) -> AuditEvent,
    ) -> Result<Option<SigninRecord>, StoreError> {
        self.block(async {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(backend)?;
            for hash in hashes {
                // Locked until commit: a second taker waits, then finds it gone.
                let row = prepared::query_opt(
                    &tx,
                    "SELECT record FROM signins WHERE link_hash = $1 FOR UPDATE",
                    &[&hash.as_slice()],
                )
                .await?;
                let Some(row) = row else { continue };
                let record = decode::<SigninRecord>("signins", row.get::<_, &[u8]>(0))?;
                if record.site != site {
                    return Ok(None);
                }
                prepared::execute(
                    &tx,
                    "DELETE FROM signins WHERE link_hash = $1",
                    &[&hash.as_slice()],
                )
                .await?;
                let live = record.expires_at > now;
                if live {
                    append_audit(&tx, &audit(&record)).await?;
                }
                self.commit(tx).await?;
                return Ok(live.then_some(record));
            }
            Ok(None)
        })
    }

    fn audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.block(async {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(backend)?;
            append_audit(&tx, event).await?;
            self.commit(tx).await?;
            Ok(())
        })
    }

    fn audit_log(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, AuditEvent)>, StoreError> {
        self.block(async {
            let conn = self.conn().await?;
            let after = after.map_or(0, |a| i64::try_from(a).unwrap_or(i64::MAX));
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = prepared::query(
                &conn,
                "SELECT id, record FROM audit WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &limit],
            )
            .await?;
            rows.iter()
                .map(|r| {
                    let id: i64 = r.get(0);
                    let event = decode::<AuditEvent>("audit", r.get::<_, &[u8]>(1))?;
                    Ok((u64::try_from(id).unwrap_or(0), event))
                })
                .collect()
        })
    }

    fn prune(
        &self,
        now: Timestamp,
        policy: AttemptPolicy,
        retention: Retention,
    ) -> Result<Pruned, StoreError> {
        self.block(async {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(backend)?;
            let run = |sql: &'static str, params: Vec<i64>| {
                let tx = &tx;
                async move {
                    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                        .iter()
                        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
                        .collect();
                    tx.execute(sql, &refs).await.map(count).map_err(backend)
                }
            };
            let codes = run("DELETE FROM codes WHERE expires_at <= $1", vec![now]).await?;
            run("DELETE FROM tokens WHERE expires_at <= $1", vec![now]).await?;
            let sessions = run("DELETE FROM sessions WHERE expires_at <= $1", vec![now]).await?;
            let attempts = run(
                "DELETE FROM attempts WHERE $1 - window_start >= $2",
                vec![now, policy.window],
            )
            .await?;
            let signatures = run("DELETE FROM signatures WHERE until < $1", vec![now]).await?;
            let signin_links = run("DELETE FROM signins WHERE expires_at <= $1", vec![now]).await?;
            // A limit whose arrival time has passed is as good as none.
            run(
                "DELETE FROM rate_limits WHERE tat < $1",
                vec![now.saturating_mul(1000)],
            )
            .await?;
            let batch = PRUNE_BATCH as i64;
            let audit = match retention.audit {
                None => 0,
                Some(keep) => {
                    run(
                        "DELETE FROM audit WHERE id IN
                         (SELECT id FROM audit WHERE at < $1 ORDER BY id LIMIT $2)",
                        vec![now.saturating_sub(keep), batch],
                    )
                    .await?
                }
            };
            let grants = match retention.grants {
                None => 0,
                Some(keep) => {
                    run(
                        "DELETE FROM grants WHERE order_key IN
                         (SELECT order_key FROM grants WHERE updated_at < $1 LIMIT $2)",
                        vec![now.saturating_sub(keep), batch],
                    )
                    .await?
                }
            };
            self.commit(tx).await?;
            Ok(Pruned {
                codes,
                sessions,
                attempts,
                audit,
                grants,
                signatures,
                signin_links,
            })
        })
    }

    fn backup_to(&self, _dest: &Path, _overwrite: bool) -> Result<StoreCounts, BackupError> {
        Err(BackupError::Store(StoreError::Backend(format!(
            "the store is the {}: back it up with pg_dump (and restore with pg_restore); \
             `pagegate backup` copies only the embedded redb file",
            self.name
        ))))
    }

    fn export_records(
        &self,
        now: Timestamp,
        sink: super::RecordSink<'_>,
    ) -> Result<(), StoreError> {
        copy::export(self, now, sink)
    }

    fn import_records(&self, batch: &[super::Record]) -> Result<(), StoreError> {
        copy::import(self, batch)
    }

    fn inventory(&self) -> Result<super::Inventory, StoreError> {
        copy::inventory(self)
    }

    fn clear(&self) -> Result<(), StoreError> {
        copy::clear(self)
    }
}

/// Moving every durable record to or from another backend (`pagegate store copy`).
mod copy;
