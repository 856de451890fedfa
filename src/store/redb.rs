//! The embedded backend: one redb file under `data_dir`.
//!
//! Records are JSON in byte columns so that a field can be added without a migration; the
//! schema version in `meta` guards against files this build does not understand. Every write
//! transaction commits with redb's default (immediate, fsynced) durability before returning.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{
    Database, MultimapTableDefinition, ReadTransaction, ReadableMultimapTable, ReadableTable,
    ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

mod lists;
mod search_blocks;

use lists::ClientTables;

use super::{
    AttemptPolicy, AuditEvent, BackupError, Client, ClientCounts, ClientEdit, ClientSet, CodeCheck,
    CodeRecord, Grant, GrantResult, Inventory, IssuedSignin, MatchCount, PRUNE_BATCH, Pruned,
    Record, RecordSink, Retention, SecretHash, SessionAccess, SessionRecord, SigninNonce,
    SigninRecord, SigninRequest, Store, StoreCounts, StoreError, Timestamp, TokenRecord,
    earlier_signin, merge_grant, merge_set,
};

/// The schema this build reads and writes.
pub const SCHEMA_VERSION: u64 = 1;

/// The most memory redb's own page cache takes. redb's default is 1 GiB, which a file holding a
/// million clients fills (its pages are cached as lists are read, searched and exported), so the
/// gateway's memory would grow with its lists up to that. What a session check reads (a session
/// and a client) stays cached within far less; pages read past this come from the operating
/// system's file cache, which is shared and given back under pressure.
const CACHE_BYTES: usize = 256 * 1024 * 1024;

/// The database's file name inside `data_dir`.
pub const DB_FILE: &str = "pagegate.redb";

/// Why a restore did not happen. In every case the current database is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A running gateway has the database open.
    #[error("the gateway is running ({} is in use): stop the gateway first", .0.display())]
    InUse(PathBuf),
    /// The file is missing, damaged, not pagegate's, or of another schema version.
    #[error("{} is not a usable pagegate backup: {detail}", path.display())]
    NotABackup {
        /// The backup file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// Copying or renaming in `data_dir` failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The database now in place.
    pub path: PathBuf,
    /// Where the database it replaced is kept, if there was one.
    pub kept_aside: Option<PathBuf>,
    /// What the restored database holds.
    pub counts: StoreCounts,
}

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `page \0 email` → Client.
const CLIENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("clients");
/// `site \0 email` → CodeRecord.
const CODES: TableDefinition<&str, &[u8]> = TableDefinition::new("codes");
/// `site \0 email` → Attempts over all browsers; `site \0 email \0 browser hex` → Attempts in
/// one browser.
const ATTEMPTS: TableDefinition<&str, &[u8]> = TableDefinition::new("attempts");
/// token hash → TokenRecord.
const TOKENS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tokens");
/// session hash → SessionRecord.
const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
/// `site \0 email` → session hashes, for revoking an email's sessions.
const SESSIONS_BY_EMAIL: MultimapTableDefinition<&str, &[u8]> =
    MultimapTableDefinition::new("sessions_by_email");
/// `key name \0 order id` → GrantRecord, for idempotent grants.
const GRANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("grants");
/// sequence → AuditEvent.
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// hash of (key digest, MAC) → SignatureRecord: the webhook signatures grants have spent.
const SIGNATURES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("signatures");
/// sign-in link token hash → SigninRecord: the shops' sign-in links not yet spent.
const SIGNINS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("signins");

/// A spent signature: refused until its timestamp is stale, and pruned after.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SignatureRecord {
    until: Timestamp,
}

/// The first answer to an order, kept to answer retries the same way.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct GrantRecord {
    page: String,
    email: String,
    client: Client,
    created: bool,
    /// The nonce of the order's latest sign-in link, if one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signin: Option<SigninNonce>,
}

/// Wrong-code bookkeeping for one (site, email).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct Attempts {
    failures: u32,
    window_start: Timestamp,
}

impl Attempts {
    /// The counter as it stands at `now`: a window that has passed starts over.
    fn current(mut self, now: Timestamp, policy: AttemptPolicy) -> Attempts {
        if now - self.window_start >= policy.window {
            self.failures = 0;
            self.window_start = now;
        }
        self
    }

    /// Whether the counters over all browsers (`overall`) and in the trying browser (`mine`)
    /// lock the email there.
    fn locks(overall: &Attempts, mine: Option<&Attempts>, policy: AttemptPolicy) -> bool {
        overall.failures >= policy.max_attempts_per_email
            || mine.is_some_and(|m| m.failures >= policy.max_attempts)
    }
}

/// The redb-backed store.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    /// Bumped after every committed write. This process is the only writer (redb locks the
    /// file), so a cached read tagged with the current generation is exactly what the database
    /// would answer now.
    generation: AtomicU64,
    /// Recent answers of [`Store::session_access`], the per-request check, valid for one
    /// generation. Time limits are not cached: callers compare the records' timestamps.
    access_cache: Mutex<AccessCache>,
}

#[derive(Default)]
struct AccessCache {
    generation: u64,
    entries: HashMap<SecretHash, (Vec<String>, Option<SessionAccess>)>,
}

/// Most cached session checks kept before the cache starts over.
const ACCESS_CACHE_LIMIT: usize = 50_000;

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

fn key(a: &str, b: &str) -> String {
    let mut k = String::with_capacity(a.len() + b.len() + 1);
    k.push_str(a);
    k.push('\0');
    k.push_str(b);
    k
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

/// The record stored under `k` in a table of JSON records, decoded; `None` when there is none.
fn get_record<'k, K, R>(
    table: &impl ReadableTable<K, &'static [u8]>,
    name: &'static str,
    k: impl std::borrow::Borrow<K::SelfType<'k>>,
) -> Result<Option<R>, StoreError>
where
    K: redb::Key + 'static,
    R: DeserializeOwned,
{
    table.get(k)?.map(|v| decode(name, v.value())).transpose()
}

/// Removes the record stored under `k` and returns it decoded; `None` when there was none.
fn remove_record<'k, K, R>(
    table: &mut redb::Table<'_, K, &'static [u8]>,
    name: &'static str,
    k: impl std::borrow::Borrow<K::SelfType<'k>>,
) -> Result<Option<R>, StoreError>
where
    K: redb::Key + 'static,
    R: DeserializeOwned,
{
    table
        .remove(k)?
        .map(|v| decode(name, v.value()))
        .transpose()
}

macro_rules! backend_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                StoreError::Backend(e.to_string())
            }
        }
    )*};
}
backend_error!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl RedbStore {
    /// Opens (or creates) `data_dir/pagegate.redb`, creating `data_dir` with owner-only access.
    pub fn open(data_dir: &Path) -> Result<RedbStore, StoreError> {
        create_private_dir(data_dir)?;
        RedbStore::open_file(&data_dir.join(DB_FILE))
    }

    /// Opens (or creates) the database file `path` itself, such as a backup that a copy to
    /// another backend reads.
    pub fn open_file(path: &Path) -> Result<RedbStore, StoreError> {
        let path = path.to_path_buf();
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    StoreError::Locked(path.display().to_string())
                }
                other => StoreError::Backend(format!("{}: {other}", path.display())),
            })?;
        restrict_file(&path)?;
        let store = RedbStore {
            db,
            path,
            generation: AtomicU64::new(0),
            access_cache: Mutex::new(AccessCache::default()),
        };
        store.check_schema()?;
        Ok(store)
    }

    /// Where the database file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get("schema_version")?.map(|v| v.value());
            match found {
                Some(v) if v == SCHEMA_VERSION => {}
                Some(v) => {
                    return Err(StoreError::Schema {
                        path: self.path.display().to_string(),
                        found: v,
                        expected: SCHEMA_VERSION,
                        hint: if v > SCHEMA_VERSION {
                            "it was written by a newer pagegate; run that version or restore a backup"
                        } else {
                            "it is from an unknown version"
                        },
                    });
                }
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
            }
            // Create every table so read transactions never meet a missing one.
            txn.open_table(CLIENTS)?;
            txn.open_table(CODES)?;
            txn.open_table(ATTEMPTS)?;
            txn.open_table(TOKENS)?;
            txn.open_table(SESSIONS)?;
            txn.open_multimap_table(SESSIONS_BY_EMAIL)?;
            txn.open_table(AUDIT)?;
            txn.open_table(GRANTS)?;
            // Added after schema version 1: an older file gets them here, empty.
            txn.open_table(SIGNATURES)?;
            txn.open_table(SIGNINS)?;
        }
        lists::build_if_missing(&txn)?;
        txn.commit()?;
        Ok(())
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_write()?;
        let out = f(&txn)?;
        txn.commit()?;
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(out)
    }

    /// A write transaction that is committed only when `f` says it changed something, and
    /// otherwise dropped: an answer that changes nothing costs no sync to disk.
    fn write_if_changed<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_write()?;
        let (out, changed) = f(&txn)?;
        if changed {
            txn.commit()?;
            self.generation.fetch_add(1, Ordering::AcqRel);
        } else {
            txn.abort()?;
        }
        Ok(out)
    }

    fn cached_access(
        &self,
        generation: u64,
        hash: &SecretHash,
        pages: &[&str],
    ) -> Option<Option<SessionAccess>> {
        let cache = self.access_cache.lock().ok()?;
        if cache.generation != generation {
            return None;
        }
        let (cached_pages, access) = cache.entries.get(hash)?;
        (cached_pages.len() == pages.len() && cached_pages.iter().zip(pages).all(|(a, b)| a == b))
            .then(|| access.clone())
    }

    fn remember_access(
        &self,
        generation: u64,
        hash: &SecretHash,
        pages: &[&str],
        access: &Option<SessionAccess>,
    ) {
        let Ok(mut cache) = self.access_cache.lock() else {
            return;
        };
        if generation < cache.generation {
            return;
        }
        if generation > cache.generation || cache.entries.len() >= ACCESS_CACHE_LIMIT {
            cache.entries.clear();
            cache.generation = generation;
        }
        cache.entries.insert(
            *hash,
            (
                pages.iter().map(|p| (*p).to_owned()).collect(),
                access.clone(),
            ),
        );
    }
}

/// The attempts key of (site, email) in one browser.
fn browser_key(site: &str, email: &str, browser: &SecretHash) -> String {
    let mut k = key(site, email);
    k.push('\0');
    for b in browser {
        k.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        k.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    k
}

/// The wrong-code counters of (site, email) at `now`: over all browsers, and in `browser` (the
/// first of its hashes, under the current key).
fn counters(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    site: &str,
    email: &str,
    browser: &[SecretHash],
    now: Timestamp,
    policy: AttemptPolicy,
) -> Result<(Attempts, Option<Attempts>), StoreError> {
    let fresh = Attempts {
        failures: 0,
        window_start: now,
    };
    let overall = get_record::<_, Attempts>(table, "attempts", key(site, email).as_str())?
        .unwrap_or_else(|| fresh.clone())
        .current(now, policy);
    let mine = match browser.first() {
        Some(b) => Some(
            get_record::<_, Attempts>(table, "attempts", browser_key(site, email, b).as_str())?
                .unwrap_or(fresh)
                .current(now, policy),
        ),
        None => None,
    };
    Ok((overall, mine))
}

fn append_audit(txn: &WriteTransaction, event: &AuditEvent) -> Result<u64, StoreError> {
    let mut audit = txn.open_table(AUDIT)?;
    let next = audit.last()?.map_or(1, |(k, _)| k.value() + 1);
    audit.insert(next, encode(event)?.as_slice())?;
    Ok(next)
}

fn remove_session(txn: &WriteTransaction, hash: &[u8]) -> Result<bool, StoreError> {
    let mut sessions = txn.open_table(SESSIONS)?;
    let Some(session) = remove_record::<_, SessionRecord>(&mut sessions, "sessions", hash)? else {
        return Ok(false);
    };
    let mut index = txn.open_multimap_table(SESSIONS_BY_EMAIL)?;
    index.remove(key(&session.site, &session.email).as_str(), hash)?;
    Ok(true)
}

/// The sign-in link a grant hands out, and whether it issued a new one (a write), given the
/// nonce of the order's earlier link (see [`super::signin_plan`]). A new link is stored under its
/// current key's hash with its audit entry; the records of the earlier one, if any are left
/// (one kept under a key that was rotated out meanwhile), go.
fn order_signin(
    txn: &WriteTransaction,
    request: &SigninRequest<'_>,
    earlier: Option<SigninNonce>,
    now: Timestamp,
) -> Result<(IssuedSignin, bool), StoreError> {
    let mut links = txn.open_table(SIGNINS)?;
    let mut live = None;
    if let Some(nonce) = earlier {
        for hash in (request.hashes)(&nonce) {
            let record = get_record::<_, SigninRecord>(&links, "signins", hash.as_slice())?;
            if let Some(record) = record.filter(|r| r.expires_at > now) {
                live = Some(IssuedSignin {
                    nonce,
                    hash,
                    expires_at: record.expires_at,
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
            links.remove(hash.as_slice())?;
        }
    }
    let hash = (request.hashes)(&request.nonce)
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Backend("no key to hash a sign-in link with".into()))?;
    links.insert(hash.as_slice(), encode(request.record)?.as_slice())?;
    drop(links);
    append_audit(txn, request.audit)?;
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

impl Store for RedbStore {
    fn client(&self, page: &str, email: &str) -> Result<Option<Client>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CLIENTS)?;
        get_record(&table, "clients", key(page, email).as_str())
    }

    fn clients(&self, page: &str) -> Result<Vec<Client>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CLIENTS)?;
        let start = key(page, "");
        let end = format!("{page}\u{1}");
        let mut out = Vec::new();
        for entry in table.range(start.as_str()..end.as_str())? {
            let (_, v) = entry?;
            out.push(decode("clients", v.value())?);
        }
        Ok(out)
    }

    fn put_client(
        &self,
        page: &str,
        client: &Client,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.write(|txn| {
            ClientTables::open(txn)?.put(page, client)?;
            append_audit(txn, audit)?;
            Ok(())
        })
    }

    fn remove_client(
        &self,
        page: &str,
        email: &str,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        self.write(|txn| {
            let removed = ClientTables::open(txn)?.remove(page, email)?.is_some();
            if removed {
                append_audit(txn, audit)?;
            }
            Ok(removed)
        })
    }

    fn issue_code(
        &self,
        site: &str,
        email: &str,
        code: &CodeRecord,
        token: &TokenRecord,
    ) -> Result<(), StoreError> {
        self.write(|txn| {
            let k = key(site, email);
            let mut codes = txn.open_table(CODES)?;
            let mut tokens = txn.open_table(TOKENS)?;
            if let Some(old) = get_record::<_, CodeRecord>(&codes, "codes", k.as_str())? {
                tokens.remove(old.token_hash.as_slice())?;
            }
            codes.insert(k.as_str(), encode(code)?.as_slice())?;
            tokens.insert(code.token_hash.as_slice(), encode(token)?.as_slice())?;
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
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ATTEMPTS)?;
        let (overall, mine) = counters(&table, site, email, browser, now, policy)?;
        Ok(Attempts::locks(&overall, mine.as_ref(), policy))
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
        self.write(|txn| {
            let k = key(site, email);
            let mut attempts_table = txn.open_table(ATTEMPTS)?;
            let (mut overall, mut mine) =
                counters(&attempts_table, site, email, browser, now, policy)?;
            if Attempts::locks(&overall, mine.as_ref(), policy) {
                return Ok(CodeCheck::Locked);
            }
            let mut codes = txn.open_table(CODES)?;
            let pending = get_record::<_, CodeRecord>(&codes, "codes", k.as_str())?
                .filter(|c| c.expires_at > now && c.browser.is_none_or(|b| browser.contains(&b)));
            let mut tokens = txn.open_table(TOKENS)?;
            let browser_attempts = browser.first().map(|b| browser_key(site, email, b));
            if let Some(code) = pending.as_ref().filter(|c| matches(c)) {
                codes.remove(k.as_str())?;
                tokens.remove(code.token_hash.as_slice())?;
                if let Some(bk) = &browser_attempts {
                    attempts_table.remove(bk.as_str())?;
                }
                return Ok(CodeCheck::Accepted(code.clone()));
            }
            if let (Some(bk), Some(mine)) = (&browser_attempts, mine.as_mut()) {
                mine.failures += 1;
                attempts_table.insert(bk.as_str(), encode(&*mine)?.as_slice())?;
            }
            if pending.is_some() {
                overall.failures += 1;
                attempts_table.insert(k.as_str(), encode(&overall)?.as_slice())?;
            }
            if Attempts::locks(&overall, mine.as_ref(), policy) {
                // The code dies with the last allowed failure, and so does its link.
                if let Some(code) = &pending {
                    codes.remove(k.as_str())?;
                    tokens.remove(code.token_hash.as_slice())?;
                }
                return Ok(CodeCheck::Locked);
            }
            let left_overall = policy.max_attempts_per_email - overall.failures;
            let left_here = mine.map_or(left_overall, |m| policy.max_attempts - m.failures);
            Ok(CodeCheck::Rejected {
                attempts_left: left_here.min(left_overall),
            })
        })
    }

    fn peek_token(
        &self,
        token_hash: &SecretHash,
        now: Timestamp,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TOKENS)?;
        let token = get_record::<_, TokenRecord>(&table, "tokens", token_hash.as_slice())?;
        Ok(token.filter(|t| t.expires_at > now))
    }

    fn take_token(
        &self,
        token_hash: &SecretHash,
        now: Timestamp,
    ) -> Result<Option<TokenRecord>, StoreError> {
        self.write(|txn| {
            let mut tokens = txn.open_table(TOKENS)?;
            let taken =
                remove_record::<_, TokenRecord>(&mut tokens, "tokens", token_hash.as_slice())?;
            let Some(token) = taken else {
                return Ok(None);
            };
            let mut codes = txn.open_table(CODES)?;
            let k = key(&token.site, &token.email);
            let issued_with_code = get_record::<_, CodeRecord>(&codes, "codes", k.as_str())?
                .is_some_and(|c| c.token_hash == *token_hash);
            if issued_with_code {
                codes.remove(k.as_str())?;
            }
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
        self.write(|txn| {
            txn.open_table(SESSIONS)?
                .insert(session_hash.as_slice(), encode(session)?.as_slice())?;
            txn.open_multimap_table(SESSIONS_BY_EMAIL)?.insert(
                key(&session.site, &session.email).as_str(),
                session_hash.as_slice(),
            )?;
            let mut clients = txn.open_table(CLIENTS)?;
            for page in pages {
                let k = key(page, &session.email);
                if let Some(mut client) = get_record::<_, Client>(&clients, "clients", k.as_str())?
                {
                    client.last_login = Some(session.created_at);
                    clients.insert(k.as_str(), encode(&client)?.as_slice())?;
                }
            }
            append_audit(txn, audit)?;
            Ok(())
        })
    }

    fn session_access(
        &self,
        session_hash: &SecretHash,
        pages: &[&str],
    ) -> Result<Option<SessionAccess>, StoreError> {
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(cached) = self.cached_access(generation, session_hash, pages) {
            return Ok(cached);
        }
        let access = self.read_access(session_hash, pages)?;
        self.remember_access(generation, session_hash, pages, &access);
        Ok(access)
    }

    /// The write generation: this process is the database's only writer (redb locks the file),
    /// and every committed write moves it.
    fn changes(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn delete_session(
        &self,
        session_hash: &SecretHash,
        audit: Option<&AuditEvent>,
    ) -> Result<(), StoreError> {
        self.write(|txn| {
            if remove_session(txn, session_hash)? {
                if let Some(event) = audit {
                    append_audit(txn, event)?;
                }
            }
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
        self.write(|txn| {
            if txn
                .open_table(CLIENTS)?
                .get(key(page, email).as_str())?
                .is_none()
            {
                return Ok(None);
            }
            let mut hashes: Vec<Vec<u8>> = Vec::new();
            {
                let index = txn.open_multimap_table(SESSIONS_BY_EMAIL)?;
                for v in index.get(key(site, email).as_str())? {
                    hashes.push(v?.value().to_vec());
                }
            }
            let mut revoked = 0;
            for hash in &hashes {
                if remove_session(txn, hash)? {
                    revoked += 1;
                }
            }
            append_audit(txn, audit)?;
            Ok(Some(revoked))
        })
    }

    fn count_active_sessions(&self, now: Timestamp) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.db.begin_read()?;
        let sessions = txn.open_table(SESSIONS)?;
        let mut counts = std::collections::BTreeMap::<String, u64>::new();
        for entry in sessions.iter()? {
            let (_, v) = entry?;
            let session: SessionRecord = decode("sessions", v.value())?;
            if session.expires_at > now {
                *counts.entry(session.site).or_default() += 1;
            }
        }
        Ok(counts.into_iter().collect())
    }

    fn grant(&self, grant: &Grant<'_>, audit: &AuditEvent) -> Result<GrantResult, StoreError> {
        self.write_if_changed(|txn| {
            let mut signatures = txn.open_table(SIGNATURES)?;
            if let Some(signature) = &grant.signature {
                // A record still here is not stale: the caller checked the timestamp, and the
                // record lasts as long as the timestamp is fresh.
                if signatures.get(signature.hash.as_slice())?.is_some() {
                    return Ok((GrantResult::SignatureSpent, false));
                }
            }
            let mut spend = || -> Result<bool, StoreError> {
                let Some(signature) = &grant.signature else {
                    return Ok(false);
                };
                let record = SignatureRecord {
                    until: signature.until,
                };
                signatures.insert(signature.hash.as_slice(), encode(&record)?.as_slice())?;
                Ok(true)
            };
            let mut grants = txn.open_table(GRANTS)?;
            let order_key = grant.order.map(|(k, o)| key(k, o));
            if let Some(order_key) = &order_key {
                if let Some(mut first) =
                    get_record::<_, GrantRecord>(&grants, "grants", order_key.as_str())?
                {
                    if first.page != grant.page || first.email != grant.email {
                        return Ok((GrantResult::Conflict, false));
                    }
                    let spent = spend()?;
                    let (signin, issued) = match grant.signin {
                        None => (None, false),
                        Some(request) => {
                            let (link, issued) =
                                order_signin(txn, &request, first.signin, grant.now)?;
                            if issued {
                                first.signin = Some(link.nonce);
                                grants.insert(order_key.as_str(), encode(&first)?.as_slice())?;
                            }
                            (Some(link), issued)
                        }
                    };
                    let replayed = GrantResult::Replayed {
                        client: first.client,
                        created: first.created,
                        signin,
                    };
                    return Ok((replayed, spent || issued));
                }
            }
            spend()?;
            let mut clients = ClientTables::open(txn)?;
            let existing = clients.get(grant.page, grant.email)?;
            let created = existing.is_none();
            let client = merge_grant(existing, grant);
            clients.put(grant.page, &client)?;
            drop(clients);
            append_audit(txn, audit)?;
            let signin = match &grant.signin {
                Some(request) => Some(order_signin(txn, request, None, grant.now)?.0),
                None => None,
            };
            if let Some(order_key) = &order_key {
                let record = GrantRecord {
                    page: grant.page.to_owned(),
                    email: grant.email.to_owned(),
                    client: client.clone(),
                    created,
                    signin: signin.map(|s| s.nonce),
                };
                grants.insert(order_key.as_str(), encode(&record)?.as_slice())?;
            }
            Ok((
                GrantResult::Applied {
                    client,
                    created,
                    signin,
                },
                true,
            ))
        })
    }

    fn peek_signin(
        &self,
        hashes: &[SecretHash],
        now: Timestamp,
    ) -> Result<Option<SigninRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SIGNINS)?;
        for hash in hashes {
            if let Some(record) = get_record::<_, SigninRecord>(&table, "signins", hash.as_slice())?
            {
                return Ok((record.expires_at > now).then_some(record));
            }
        }
        Ok(None)
    }

    fn take_signin(
        &self,
        hashes: &[SecretHash],
        site: &str,
        now: Timestamp,
        audit: &dyn Fn(&SigninRecord) -> AuditEvent,
    ) -> Result<Option<SigninRecord>, StoreError> {
        self.write_if_changed(|txn| {
            let mut table = txn.open_table(SIGNINS)?;
            for hash in hashes {
                let Some(record) =
                    get_record::<_, SigninRecord>(&table, "signins", hash.as_slice())?
                else {
                    continue;
                };
                if record.site != site {
                    return Ok((None, false));
                }
                table.remove(hash.as_slice())?;
                if record.expires_at <= now {
                    return Ok((None, true));
                }
                append_audit(txn, &audit(&record))?;
                return Ok((Some(record), true));
            }
            Ok((None, false))
        })
    }

    fn edit_client(
        &self,
        page: &str,
        email: &str,
        update: &dyn Fn(&Client) -> Option<Client>,
        audit: &dyn Fn(&Client) -> AuditEvent,
    ) -> Result<ClientEdit, StoreError> {
        self.write(|txn| {
            let mut clients = ClientTables::open(txn)?;
            let Some(old) = clients.get(page, email)? else {
                return Ok(ClientEdit::Missing);
            };
            let Some(new) = update(&old) else {
                return Ok(ClientEdit::Unchanged(old));
            };
            if new.email != old.email {
                if clients.contains(page, &new.email)? {
                    return Ok(ClientEdit::EmailTaken);
                }
                clients.remove(page, &old.email)?;
            }
            clients.put(page, &new)?;
            drop(clients);
            append_audit(txn, &audit(&new))?;
            Ok(ClientEdit::Edited(new))
        })
    }

    fn set_clients(
        &self,
        page: &str,
        rows: &[ClientSet<'_>],
        audit: &dyn Fn(&Client, bool) -> AuditEvent,
    ) -> Result<Vec<(Client, bool)>, StoreError> {
        self.write(|txn| {
            let mut clients = ClientTables::open(txn)?;
            let mut audit_table = txn.open_table(AUDIT)?;
            // The audit sequence read once for the batch, not once per row.
            let first = audit_table.last()?.map_or(1, |(k, _)| k.value() + 1);
            let mut out = Vec::with_capacity(rows.len());
            for (seq, row) in (first..).zip(rows) {
                let existing = clients.get(page, row.email)?;
                let created = existing.is_none();
                let client = merge_set(existing, row);
                clients.put(page, &client)?;
                audit_table.insert(seq, encode(&audit(&client, created))?.as_slice())?;
                out.push((client, created));
            }
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
        lists::client_page(&self.db, page, after, limit, search)
    }

    fn client_counts(&self, page: &str, now: Timestamp) -> Result<ClientCounts, StoreError> {
        lists::client_counts(&self.db, page, now)
    }

    fn count_matching(&self, page: &str, search: &str, cap: u64) -> Result<MatchCount, StoreError> {
        lists::count_matching(&self.db, page, search, cap)
    }

    // ---- end of large lists ----

    fn audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.write(|txn| append_audit(txn, event).map(|_| ()))
    }

    fn audit_log(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, AuditEvent)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(AUDIT)?;
        let mut out = Vec::new();
        for entry in table.range(after.map_or(0, |a| a + 1)..)?.take(limit) {
            let (k, v) = entry?;
            out.push((k.value(), decode("audit", v.value())?));
        }
        Ok(out)
    }

    fn prune(
        &self,
        now: Timestamp,
        policy: AttemptPolicy,
        retention: Retention,
    ) -> Result<Pruned, StoreError> {
        self.write(|txn| {
            let all = usize::MAX;
            let codes = prune_table::<_, CodeRecord>(txn, CODES, "codes", .., all, |c| {
                c.expires_at <= now
            })?;
            prune_table::<_, TokenRecord>(txn, TOKENS, "tokens", .., all, |t| t.expires_at <= now)?;
            let sessions =
                prune_table::<_, SessionRecord>(txn, SESSIONS, "sessions", .., all, |s| {
                    s.expires_at <= now
                })?;
            let mut index = txn.open_multimap_table(SESSIONS_BY_EMAIL)?;
            for (hash, session) in &sessions {
                if let Some(session) = session {
                    index.remove(key(&session.site, &session.email).as_str(), hash.as_slice())?;
                }
            }
            drop(index);
            let attempts = prune_table::<_, Attempts>(txn, ATTEMPTS, "attempts", .., all, |a| {
                now - a.window_start >= policy.window
            })?;
            let signatures =
                prune_table::<_, SignatureRecord>(txn, SIGNATURES, "signatures", .., all, |r| {
                    r.until < now
                })?;
            let signin_links =
                prune_table::<_, SigninRecord>(txn, SIGNINS, "signins", .., all, |l| {
                    l.expires_at <= now
                })?;
            let audit = match retention.audit {
                None => 0,
                Some(keep) => {
                    let cutoff = now.saturating_sub(keep);
                    // Entries are appended in about time order (one may be a little older than
                    // the one before it, such as a mail's entry written after its retries), so
                    // only the oldest end is scanned; a straggler goes on a later pass.
                    let end = first_audit_at_or_after(txn, cutoff, PRUNE_BATCH)?;
                    prune_table::<_, AuditEvent>(txn, AUDIT, "audit", ..end, PRUNE_BATCH, |e| {
                        e.at < cutoff
                    })?
                    .len()
                }
            };
            let grants = match retention.grants {
                None => 0,
                Some(keep) => {
                    let cutoff = now.saturating_sub(keep);
                    // A grant record's client was last updated by that very grant.
                    prune_table::<_, GrantRecord>(txn, GRANTS, "grants", .., PRUNE_BATCH, |g| {
                        g.client.updated_at < cutoff
                    })?
                    .len()
                }
            };
            Ok(Pruned {
                codes: codes.len(),
                sessions: sessions.len(),
                attempts: attempts.len(),
                audit,
                grants,
                signatures: signatures.len(),
                signin_links: signin_links.len(),
            })
        })
    }

    fn backup_to(&self, dest: &Path, overwrite: bool) -> Result<StoreCounts, BackupError> {
        if !overwrite && dest.symlink_metadata().is_ok() {
            return Err(BackupError::Exists(dest.to_path_buf()));
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = dest.file_name().ok_or_else(|| BackupError::Io {
            path: dest.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
        })?;
        let partial = dir.join(format!(
            ".{}.partial-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let copied = self
            .copy_snapshot(&partial)
            .and_then(|counts| place_file(&partial, dest, overwrite).map(|()| counts));
        if copied.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        copied
    }

    fn export_records(&self, now: Timestamp, sink: RecordSink<'_>) -> Result<(), StoreError> {
        copy::export(self, now, sink)
    }

    fn import_records(&self, batch: &[Record]) -> Result<(), StoreError> {
        copy::import(self, batch)
    }

    fn inventory(&self) -> Result<Inventory, StoreError> {
        copy::inventory(self)
    }

    fn clear(&self) -> Result<(), StoreError> {
        copy::clear(self)
    }
}

/// The key of the first audit entry at or after `cutoff`, looking at no more than `limit`
/// entries from the oldest: the end of the range pruning may remove.
fn first_audit_at_or_after(
    txn: &WriteTransaction,
    cutoff: Timestamp,
    limit: usize,
) -> Result<u64, StoreError> {
    let table = txn.open_table(AUDIT)?;
    let mut end = table
        .last()?
        .map_or(0, |(k, _)| k.value().saturating_add(1));
    for entry in table.iter()?.take(limit) {
        let (k, v) = entry?;
        let fresh = decode::<AuditEvent>("audit", v.value()).is_ok_and(|e| e.at >= cutoff);
        if fresh {
            end = k.value();
            break;
        }
        end = k.value().saturating_add(1);
    }
    Ok(end)
}

/// An entry pruning removed: its key's bytes, and its record unless it could not be decoded.
type Removed<R> = (Vec<u8>, Option<R>);

/// The one scan-and-remove behind every kind of pruning: removes from `def`, within `range`
/// and at most `limit` of them, the entries whose record `stale` picks, and returns each
/// removed entry's key bytes with its record. A record that cannot be decoded is removed too
/// (as `None`): left in place it would be met, and skipped, on every pass forever.
fn prune_table<'r, K, R>(
    txn: &WriteTransaction,
    def: TableDefinition<K, &'static [u8]>,
    name: &'static str,
    range: impl std::ops::RangeBounds<K::SelfType<'r>> + 'r,
    limit: usize,
    stale: impl Fn(&R) -> bool,
) -> Result<Vec<Removed<R>>, StoreError>
where
    K: redb::Key + 'static,
    K::SelfType<'r>: std::borrow::Borrow<K::SelfType<'r>>,
    R: DeserializeOwned,
{
    let mut table = txn.open_table(def)?;
    let mut removed = Vec::new();
    let extracted = table.extract_from_if(range, |_, v| {
        decode::<R>(name, v).map_or(true, |record| stale(&record))
    })?;
    for entry in extracted.take(limit) {
        let (k, v) = entry?;
        let key_bytes = K::as_bytes(&k.value()).as_ref().to_vec();
        removed.push((key_bytes, decode::<R>(name, v.value()).ok()));
    }
    Ok(removed)
}

impl RedbStore {
    fn read_access(
        &self,
        session_hash: &SecretHash,
        pages: &[&str],
    ) -> Result<Option<SessionAccess>, StoreError> {
        let txn = self.db.begin_read()?;
        let sessions = txn.open_table(SESSIONS)?;
        let found = get_record::<_, SessionRecord>(&sessions, "sessions", session_hash.as_slice())?;
        let Some(session) = found else {
            return Ok(None);
        };
        let table = txn.open_table(CLIENTS)?;
        let mut clients = Vec::with_capacity(pages.len());
        for page in pages {
            clients.push(get_record(
                &table,
                "clients",
                key(page, &session.email).as_str(),
            )?);
        }
        Ok(Some(SessionAccess { session, clients }))
    }

    /// Copies one read snapshot, table by table, into a new database at `path` (created `0600`,
    /// never over an existing file), committed durably. The snapshot is a redb read
    /// transaction: writers go on meanwhile, and the copy is exactly the database at one moment.
    fn copy_snapshot(&self, path: &Path) -> Result<StoreCounts, BackupError> {
        let io = |source| BackupError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path).map_err(io)?;
        let copy = redb::Builder::new()
            .create_file(file)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        Ok(self.copy_into(&copy)?)
    }

    fn copy_into(&self, copy: &Database) -> Result<StoreCounts, StoreError> {
        let snapshot = self.db.begin_read()?;
        let txn = copy.begin_write()?;
        copy_table(&snapshot, &txn, META)?;
        let clients = copy_table(&snapshot, &txn, CLIENTS)?;
        copy_table(&snapshot, &txn, CODES)?;
        copy_table(&snapshot, &txn, ATTEMPTS)?;
        copy_table(&snapshot, &txn, TOKENS)?;
        let sessions = copy_table(&snapshot, &txn, SESSIONS)?;
        {
            let from = snapshot.open_multimap_table(SESSIONS_BY_EMAIL)?;
            let mut to = txn.open_multimap_table(SESSIONS_BY_EMAIL)?;
            for entry in from.iter()? {
                let (k, values) = entry?;
                for v in values {
                    to.insert(k.value(), v?.value())?;
                }
            }
        }
        let grants = copy_table(&snapshot, &txn, GRANTS)?;
        let audit = copy_table(&snapshot, &txn, AUDIT)?;
        // A restored copy must not take spent signatures for fresh ones.
        copy_table(&snapshot, &txn, SIGNATURES)?;
        copy_table(&snapshot, &txn, SIGNINS)?;
        // The search table and the counts, which `meta` says the copy has.
        copy_table(&snapshot, &txn, lists::CLIENT_SEARCH)?;
        copy_table(&snapshot, &txn, lists::CLIENT_TOTALS)?;
        copy_table(&snapshot, &txn, lists::CLIENT_ENDS)?;
        // The default durability: the copy is on disk when this returns.
        txn.commit()?;
        Ok(StoreCounts {
            clients,
            sessions,
            audit,
            grants,
        })
    }

    /// Checks that `path` is a pagegate database this build can use (it opens, has this schema
    /// version and every table, and every record decodes) and counts what it holds. Opening
    /// may let redb repair a file that was not closed cleanly, so restore calls this on its own
    /// copy, never on the operator's backup.
    ///
    /// redb asserts, rather than reports, some kinds of damage (a truncated file panics while
    /// opening), so a panic while inspecting is caught and reported as damage too.
    pub fn inspect(path: &Path) -> Result<StoreCounts, RestoreError> {
        std::panic::catch_unwind(|| RedbStore::inspect_unguarded(path)).unwrap_or_else(|panic| {
            let cause = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            Err(RestoreError::NotABackup {
                path: path.to_path_buf(),
                detail: format!("the file is damaged (the database engine gave up: {cause})"),
            })
        })
    }

    fn inspect_unguarded(path: &Path) -> Result<StoreCounts, RestoreError> {
        let bad = |detail: String| RestoreError::NotABackup {
            path: path.to_path_buf(),
            detail,
        };
        let db = Database::open(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => bad("it is open in another process".into()),
            other => bad(format!("not a database file ({other})")),
        })?;
        let txn = db.begin_read().map_err(|e| bad(e.to_string()))?;
        let meta = match txn.open_table(META) {
            Ok(meta) => meta,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Err(bad(
                    "a database, but not pagegate's (it has no meta table)".into()
                ));
            }
            Err(e) => return Err(bad(e.to_string())),
        };
        let version = meta
            .get("schema_version")
            .map_err(|e| bad(e.to_string()))?
            .map(|v| v.value());
        match version {
            Some(SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(bad(format!(
                    "it has schema version {v}, this pagegate understands {SCHEMA_VERSION}{}",
                    if v > SCHEMA_VERSION {
                        " (written by a newer pagegate: restore it with that version)"
                    } else {
                        ""
                    }
                )));
            }
            None => {
                return Err(bad(
                    "a database, but not pagegate's (no schema version)".into()
                ));
            }
        }
        let check = |result: Result<u64, StoreError>| result.map_err(|e| bad(e.to_string()));
        let clients = check(check_table::<_, Client>(&txn, CLIENTS, "clients"))?;
        check(check_table::<_, CodeRecord>(&txn, CODES, "codes"))?;
        check(check_table::<_, Attempts>(&txn, ATTEMPTS, "attempts"))?;
        check(check_table::<_, TokenRecord>(&txn, TOKENS, "tokens"))?;
        let sessions = check(check_table::<_, SessionRecord>(&txn, SESSIONS, "sessions"))?;
        let grants = check(check_table::<_, GrantRecord>(&txn, GRANTS, "grants"))?;
        let audit = check(check_table::<_, AuditEvent>(&txn, AUDIT, "audit"))?;
        txn.open_multimap_table(SESSIONS_BY_EMAIL)
            .map_err(|e| bad(format!("table sessions_by_email: {e}")))?;
        // A backup from before spent signatures were kept has no such table; opening the
        // restored file creates it.
        match txn.open_table(SIGNATURES) {
            Ok(_) => {
                check(check_table::<_, SignatureRecord>(
                    &txn,
                    SIGNATURES,
                    "signatures",
                ))?;
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(bad(format!("table signatures: {e}"))),
        }
        // Nor from before shops' sign-in links.
        match txn.open_table(SIGNINS) {
            Ok(_) => {
                check(check_table::<_, SigninRecord>(&txn, SIGNINS, "signins"))?;
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(bad(format!("table signins: {e}"))),
        }
        Ok(StoreCounts {
            clients,
            sessions,
            audit,
            grants,
        })
    }

    /// Puts the backup `backup` in place of `data_dir/pagegate.redb`, which must not be in use.
    ///
    /// The backup is copied into `data_dir` first and the copy is checked ([`RedbStore::inspect`]),
    /// so nothing changes unless it is usable. The current database is then kept aside as
    /// `pagegate.redb.before-restore-<time>` (a hard link, or a copy where links are not
    /// possible) and the copy renamed over it: at every moment `pagegate.redb` is either the old
    /// database or the restored one. The current database stays open (locked) throughout, so
    /// a gateway cannot start on it halfway.
    pub fn restore(data_dir: &Path, backup: &Path) -> Result<Restored, RestoreError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RestoreError::Io { path, source }
        };
        if !backup.is_file() {
            return Err(RestoreError::NotABackup {
                path: backup.to_path_buf(),
                detail: if backup.exists() {
                    "not a file".into()
                } else {
                    "no such file".into()
                },
            });
        }
        create_private_dir(data_dir).map_err(|e| RestoreError::Io {
            path: data_dir.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let current = data_dir.join(DB_FILE);
        // Holding the current database shows no gateway uses it, and keeps one from starting.
        let _held = if current.exists() {
            match Database::open(&current) {
                Ok(db) => Some(db),
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(RestoreError::InUse(current));
                }
                Err(e) => {
                    // Restoring is how a damaged database is replaced: go on, keeping it aside.
                    tracing::warn!(path = %current.display(), error = %e, "the current database does not open; it is kept aside");
                    None
                }
            }
        } else {
            None
        };
        let incoming = data_dir.join(format!("{DB_FILE}.restoring-{}", std::process::id()));
        let staged = copy_durably(backup, &incoming)
            .map_err(io(&incoming))
            .and_then(|()| {
                RedbStore::inspect(&incoming).map_err(|e| match e {
                    RestoreError::NotABackup { detail, .. } => RestoreError::NotABackup {
                        path: backup.to_path_buf(),
                        detail,
                    },
                    other => other,
                })
            });
        let counts = match staged {
            Ok(counts) => counts,
            Err(e) => {
                let _ = std::fs::remove_file(&incoming);
                return Err(e);
            }
        };
        let kept_aside = if current.exists() {
            let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ");
            let mut aside = data_dir.join(format!("{DB_FILE}.before-restore-{stamp}"));
            for n in 1.. {
                if aside.symlink_metadata().is_err() {
                    break;
                }
                aside = data_dir.join(format!("{DB_FILE}.before-restore-{stamp}-{n}"));
            }
            let linked =
                std::fs::hard_link(&current, &aside).or_else(|_| copy_durably(&current, &aside));
            if let Err(e) = linked {
                let _ = std::fs::remove_file(&incoming);
                return Err(RestoreError::Io {
                    path: aside,
                    source: e,
                });
            }
            Some(aside)
        } else {
            None
        };
        if let Err(e) = std::fs::rename(&incoming, &current) {
            let _ = std::fs::remove_file(&incoming);
            return Err(RestoreError::Io {
                path: current,
                source: e,
            });
        }
        sync_dir(data_dir).map_err(io(data_dir))?;
        Ok(Restored {
            path: current,
            kept_aside,
            counts,
        })
    }

    /// Number of live sessions (for metrics and tests).
    pub fn session_count(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(SESSIONS)?.len()?)
    }
}

/// Copies every entry of `def` from a snapshot into a write transaction; returns how many.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &ReadTransaction,
    to: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let source = from.open_table(def)?;
    let mut target = to.open_table(def)?;
    let mut copied = 0;
    for entry in source.iter()? {
        let (k, v) = entry?;
        target.insert(k.value(), v.value())?;
        copied += 1;
    }
    Ok(copied)
}

/// Decodes every record of a table (a damaged one is an error); returns how many there are.
fn check_table<K: redb::Key + 'static, R: DeserializeOwned>(
    txn: &ReadTransaction,
    def: TableDefinition<K, &'static [u8]>,
    name: &'static str,
) -> Result<u64, StoreError> {
    let table = txn.open_table(def).map_err(|e| StoreError::Corrupt {
        table: name,
        detail: e.to_string(),
    })?;
    let mut count = 0;
    for entry in table.iter()? {
        let (_, v) = entry?;
        decode::<R>(name, v.value())?;
        count += 1;
    }
    Ok(count)
}

/// Moves the finished copy `from` to `to`: over an existing file only with `overwrite`, and
/// otherwise by a hard link, which fails rather than replace a file that appeared meanwhile.
/// The folder is synced after, so the new name survives a crash.
fn place_file(from: &Path, to: &Path, overwrite: bool) -> Result<(), BackupError> {
    let io = |source| BackupError::Io {
        path: to.to_path_buf(),
        source,
    };
    if overwrite {
        std::fs::rename(from, to).map_err(io)?;
    } else {
        match std::fs::hard_link(from, to) {
            Ok(()) => {
                let _ = std::fs::remove_file(from);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(BackupError::Exists(to.to_path_buf()));
            }
            // A file system without hard links: check, then rename.
            Err(_) if to.symlink_metadata().is_err() => std::fs::rename(from, to).map_err(io)?,
            Err(_) => return Err(BackupError::Exists(to.to_path_buf())),
        }
    }
    let dir = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    sync_dir(dir).map_err(|source| BackupError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Copies a file to a new name (`0600`, not over an existing file) and syncs it to disk.
fn copy_durably(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut source = std::fs::File::open(from)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut target = options.open(to)?;
    std::io::copy(&mut source, &mut target)?;
    target.sync_all()
}

/// Makes a rename or a new file in `dir` durable (a no-op where folders cannot be opened).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        StoreError::Backend(format!(
            "cannot create the data directory {}: {e}",
            dir.display()
        ))
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

fn restrict_file(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| StoreError::Backend(format!("cannot restrict {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Moving every durable record to or from another backend (`pagegate store copy`).
mod copy;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditKind, Source, SpentSignature};

    const POLICY: AttemptPolicy = AttemptPolicy {
        max_attempts: 5,
        max_attempts_per_email: 8,
        window: 3600,
    };

    /// The browser that asks for codes in these tests, and a stranger's.
    const MINE: [u8; 32] = [1; 32];
    const STRANGER: [u8; 32] = [2; 32];

    fn store() -> (tempfile::TempDir, RedbStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = RedbStore::open(dir.path()).expect("open");
        (dir, store)
    }

    fn event(kind: AuditKind) -> AuditEvent {
        AuditEvent {
            at: 1,
            kind,
            site: None,
            page: None,
            email: None,
            actor: "test".into(),
            detail: String::new(),
        }
    }

    /// Puts Ann (`client`) on `page`, with an audit entry.
    fn add(store: &RedbStore, page: &str, email: &str, until: Option<Timestamp>) {
        store
            .put_client(page, &client(email, until), &event(AuditKind::ClientAdded))
            .expect("put");
    }

    /// A session of a@x.org on the site `s`, from 10 to 99.
    fn session() -> SessionRecord {
        SessionRecord {
            site: "s".into(),
            email: "a@x.org".into(),
            created_at: 10,
            expires_at: 99,
        }
    }

    /// Stores `session` under the hash `[n; 32]`, as a sign-in to `pages`.
    fn sign_in(store: &RedbStore, n: u8, session: &SessionRecord, pages: &[String]) {
        store
            .create_session(&[n; 32], session, pages, &event(AuditKind::Login))
            .expect("session");
    }

    fn client(email: &str, until: Option<Timestamp>) -> Client {
        Client {
            email: email.into(),
            name: "Ann".into(),
            created_at: 1,
            updated_at: 1,
            access_until: until,
            source: Source::Admin,
            last_login: None,
        }
    }

    fn code(hash: u8, token: u8, expires_at: Timestamp) -> (CodeRecord, TokenRecord) {
        (
            CodeRecord {
                code_hash: [hash; 32],
                token_hash: [token; 32],
                page: "course".into(),
                next: "/course/".into(),
                issued_at: 0,
                expires_at,
                browser: Some(MINE),
            },
            TokenRecord {
                site: "s".into(),
                email: "a@x.org".into(),
                page: "course".into(),
                next: "/course/".into(),
                expires_at,
                browser: Some(MINE),
            },
        )
    }

    /// Issues a@x.org on the site `s` the code and link token `code` makes.
    fn issue(store: &RedbStore, hash: u8, token: u8, expires_at: Timestamp) {
        let (c, t) = code(hash, token, expires_at);
        store.issue_code("s", "a@x.org", &c, &t).expect("issue");
    }

    /// Issues a@x.org a code, valid until 1000, asked for in `browser`.
    fn issue_in(store: &RedbStore, browser: SecretHash, hash: u8, token: u8) {
        let (mut c, mut t) = code(hash, token, 1000);
        c.browser = Some(browser);
        t.browser = Some(browser);
        store.issue_code("s", "a@x.org", &c, &t).expect("issue");
    }

    fn check(store: &RedbStore, guess: u8, now: Timestamp) -> CodeCheck {
        check_in(store, MINE, guess, now)
    }

    fn check_in(store: &RedbStore, browser: SecretHash, guess: u8, now: Timestamp) -> CodeCheck {
        store
            .check_code("s", "a@x.org", &[browser], now, POLICY, &|c| {
                c.code_hash == [guess; 32]
            })
            .expect("check")
    }

    fn locked_in(store: &RedbStore, browser: SecretHash, now: Timestamp) -> bool {
        store
            .is_locked("s", "a@x.org", &[browser], now, POLICY)
            .expect("lock state")
    }

    #[test]
    fn clients_are_listed_per_page_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let store = RedbStore::open(dir.path()).expect("open");
            add(&store, "course", "b@x.org", None);
            add(&store, "course", "a@x.org", None);
            add(&store, "course2", "c@x.org", None);
        }
        let store = RedbStore::open(dir.path()).expect("reopen");
        let emails: Vec<String> = store
            .clients("course")
            .expect("list")
            .into_iter()
            .map(|c| c.email)
            .collect();
        assert_eq!(emails, ["a@x.org", "b@x.org"]);
        assert!(
            store
                .remove_client("course", "a@x.org", &event(AuditKind::ClientRemoved))
                .expect("remove")
        );
        assert!(
            !store
                .remove_client("course", "a@x.org", &event(AuditKind::ClientRemoved))
                .expect("remove")
        );
        assert_eq!(store.audit_log(None, 100).expect("audit").len(), 4);
    }

    #[test]
    fn a_second_open_of_the_same_file_is_reported_as_locked() {
        let (dir, _store) = store();
        assert!(matches!(
            RedbStore::open(dir.path()),
            Err(StoreError::Locked(_))
        ));
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let store = RedbStore::open(dir.path()).expect("open");
            store
                .write(|txn| {
                    txn.open_table(META)?
                        .insert("schema_version", SCHEMA_VERSION + 1)?;
                    Ok(())
                })
                .expect("bump");
        }
        let err = RedbStore::open(dir.path()).expect_err("newer schema");
        assert!(
            matches!(
                err,
                StoreError::Schema {
                    found: 2,
                    expected: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_right_code_is_accepted_once() {
        let (_dir, store) = store();
        issue(&store, 7, 8, 100);
        assert!(matches!(check(&store, 7, 10), CodeCheck::Accepted(_)));
        assert_eq!(
            check(&store, 7, 10),
            CodeCheck::Rejected { attempts_left: 4 }
        );
        assert_eq!(
            store.peek_token(&[8; 32], 10).expect("peek"),
            None,
            "the link died with the code"
        );
    }

    #[test]
    fn expired_codes_do_not_work() {
        let (_dir, store) = store();
        issue(&store, 7, 8, 100);
        assert_eq!(
            check(&store, 7, 100),
            CodeCheck::Rejected { attempts_left: 4 }
        );
    }

    #[test]
    fn the_sixth_try_fails_even_when_right_and_a_new_code_does_not_reset_the_count() {
        let (_dir, store) = store();
        issue(&store, 7, 8, 1000);
        for left in (2..=4).rev() {
            assert_eq!(
                check(&store, 1, 10),
                CodeCheck::Rejected {
                    attempts_left: left
                }
            );
        }
        issue(&store, 9, 10, 1000);
        assert_eq!(
            check(&store, 1, 10),
            CodeCheck::Rejected { attempts_left: 1 }
        );
        assert_eq!(check(&store, 1, 10), CodeCheck::Locked);
        assert_eq!(
            check(&store, 9, 10),
            CodeCheck::Locked,
            "right code after five wrong ones"
        );
        assert!(locked_in(&store, MINE, 10));
        assert!(!locked_in(&store, MINE, 10 + 3600), "window passed");
    }

    #[test]
    fn without_a_code_of_its_own_a_browser_locks_out_only_itself() {
        let (_dir, store) = store();
        // No code at all: the typing browser locks itself out, as it would for any email (listed
        // or not, the answers are the same), and nobody else.
        for _ in 0..4 {
            assert!(matches!(
                check_in(&store, STRANGER, 1, 10),
                CodeCheck::Rejected { .. }
            ));
        }
        assert_eq!(check_in(&store, STRANGER, 1, 10), CodeCheck::Locked);
        assert!(!locked_in(&store, MINE, 10));
        // A code asked for in my browser does not work in a stranger's, even when right.
        issue(&store, 7, 8, 1000);
        assert!(matches!(
            check_in(&store, [3; 32], 7, 10),
            CodeCheck::Rejected { .. }
        ));
        assert!(matches!(check(&store, 7, 10), CodeCheck::Accepted(_)));
    }

    #[test]
    fn a_stranger_who_guesses_wrong_locks_out_only_their_own_browser() {
        let (_dir, store) = store();
        // The stranger asked for a code in their browser and guesses five times.
        issue_in(&store, STRANGER, 7, 8);
        for _ in 0..4 {
            assert!(matches!(
                check_in(&store, STRANGER, 1, 10),
                CodeCheck::Rejected { .. }
            ));
        }
        assert_eq!(check_in(&store, STRANGER, 1, 10), CodeCheck::Locked);
        assert!(locked_in(&store, STRANGER, 10));
        // The client's own browser asks for a fresh code and signs in.
        assert!(!locked_in(&store, MINE, 10));
        issue(&store, 9, 10, 1000);
        assert!(matches!(check(&store, 9, 10), CodeCheck::Accepted(_)));
    }

    #[test]
    fn guesses_spread_over_browsers_meet_the_cap_per_email() {
        let (_dir, store) = store();
        // Eight wrong tries allowed per email (POLICY), five per browser: four from each of two
        // browsers, each with a code of its own, reach the overall cap.
        for (n, browser) in [[3u8; 32], [4; 32]].into_iter().enumerate() {
            issue_in(&store, browser, 7, 8 + n as u8);
            for _ in 0..3 {
                assert!(matches!(
                    check_in(&store, browser, 1, 10),
                    CodeCheck::Rejected { .. }
                ));
            }
            let last = check_in(&store, browser, 1, 10);
            if n == 0 {
                assert!(matches!(last, CodeCheck::Rejected { .. }), "{last:?}");
            } else {
                assert_eq!(last, CodeCheck::Locked);
            }
        }
        assert!(
            locked_in(&store, MINE, 10),
            "the cap holds for every browser"
        );
        assert!(!locked_in(&store, MINE, 10 + 3600));
    }

    #[test]
    fn a_link_token_is_single_use_and_retires_its_code() {
        let (_dir, store) = store();
        issue(&store, 7, 8, 100);
        assert!(store.peek_token(&[8; 32], 10).expect("peek").is_some());
        assert!(store.take_token(&[8; 32], 10).expect("take").is_some());
        assert!(store.take_token(&[8; 32], 10).expect("take").is_none());
        assert_eq!(
            check(&store, 7, 10),
            CodeCheck::Rejected { attempts_left: 4 }
        );
    }

    #[test]
    fn sessions_see_current_client_records_and_can_be_revoked() {
        let (_dir, store) = store();
        add(&store, "course", "a@x.org", Some(50));
        sign_in(&store, 1, &session(), &["course".into()]);
        sign_in(&store, 2, &session(), &["course".into()]);
        let access = store
            .session_access(&[1; 32], &["course", "other"])
            .expect("read")
            .expect("session");
        assert_eq!(access.clients.len(), 2);
        let course = access.clients[0].as_ref().expect("client");
        assert_eq!(course.last_login, Some(10));
        assert!(course.has_access(49) && !course.has_access(50));
        assert!(access.clients[1].is_none());
        let elsewhere = SessionRecord {
            site: "t".into(),
            ..session()
        };
        sign_in(&store, 3, &elsewhere, &[]);
        let audited = store.audit_log(None, 100).expect("log").len();
        let revoke = |page: &str| {
            store
                .revoke_sessions("s", page, "a@x.org", &event(AuditKind::SessionsRevoked))
                .expect("revoke")
        };
        assert_eq!(revoke("other"), None, "not a client of that page");
        assert_eq!(store.session_count().expect("count"), 3, "nothing ended");
        assert_eq!(store.audit_log(None, 100).expect("log").len(), audited);
        assert_eq!(revoke("course"), Some(2));
        assert!(
            store
                .session_access(&[1; 32], &["course"])
                .expect("read")
                .is_none()
        );
        assert!(
            store.session_access(&[3; 32], &[]).expect("read").is_some(),
            "the session on another site stays"
        );
        assert_eq!(store.session_count().expect("count"), 1);
    }

    #[test]
    fn every_change_to_access_moves_the_change_count_and_reads_do_not() {
        let (_dir, store) = store();
        let mut last = store.changes();
        let moved = |store: &RedbStore, last: &mut u64, what: &str| {
            let now = store.changes();
            assert!(now > *last, "{what} did not move the change count");
            *last = now;
        };
        add(&store, "course", "a@x.org", None);
        moved(&store, &mut last, "adding a client");
        sign_in(&store, 1, &session(), &["course".into()]);
        moved(&store, &mut last, "a sign-in");
        store
            .session_access(&[1; 32], &["course"])
            .expect("read")
            .expect("session");
        assert_eq!(store.changes(), last, "a read moved the change count");
        store
            .delete_session(&[1; 32], Some(&event(AuditKind::Logout)))
            .expect("logout");
        moved(&store, &mut last, "a sign-out");
        sign_in(&store, 2, &session(), &["course".into()]);
        store
            .revoke_sessions("s", "course", "a@x.org", &event(AuditKind::SessionsRevoked))
            .expect("revoke");
        moved(&store, &mut last, "a revocation");
        store
            .remove_client("course", "a@x.org", &event(AuditKind::ClientRemoved))
            .expect("remove");
        moved(&store, &mut last, "a removal");
    }

    #[test]
    fn live_sessions_are_counted_per_site() {
        let (_dir, store) = store();
        for (hash, site, expires_at) in [(1, "a", 100), (2, "a", 200), (3, "b", 200), (4, "a", 50)]
        {
            let session = SessionRecord {
                site: site.into(),
                email: format!("{hash}@x.org"),
                created_at: 10,
                expires_at,
            };
            sign_in(&store, hash, &session, &[]);
        }
        assert_eq!(
            store.count_active_sessions(60).expect("count"),
            vec![("a".to_string(), 2), ("b".to_string(), 1)]
        );
        assert_eq!(
            store.count_active_sessions(100).expect("count"),
            vec![("a".to_string(), 1), ("b".to_string(), 1)]
        );
        assert!(store.count_active_sessions(200).expect("count").is_empty());
    }

    fn grant<'a>(
        order: Option<(&'a str, &'a str)>,
        until: Option<Timestamp>,
        email: &'a str,
    ) -> Grant<'a> {
        Grant {
            page: "course",
            email,
            name: Some("Ann"),
            access_until: until,
            order,
            signature: None,
            source: Source::Grant,
            signin: None,
            now: 10,
        }
    }

    /// The hash of a sign-in link's nonce under the test key `key`.
    fn link_hash(key: u8, nonce: &SigninNonce) -> SecretHash {
        let mut hash = [key; 32];
        hash[..16].copy_from_slice(nonce);
        hash
    }

    /// One accepted key, 0.
    fn before_rotation(nonce: &SigninNonce) -> Vec<SecretHash> {
        vec![link_hash(0, nonce)]
    }

    /// Key 1 current, key 0 still accepted.
    fn after_rotation(nonce: &SigninNonce) -> Vec<SecretHash> {
        vec![link_hash(1, nonce), link_hash(0, nonce)]
    }

    /// The link of a@x.org to the course, on the site `s`, until `expires_at`.
    fn link(expires_at: Timestamp) -> SigninRecord {
        SigninRecord {
            site: "s".into(),
            page: "course".into(),
            email: "a@x.org".into(),
            next: "/course/".into(),
            expires_at,
            order: Some("o-1".into()),
        }
    }

    /// A grant of order o-1 at `now` asking for a sign-in link with the nonce `[n; 16]`, valid
    /// until `now + 100`.
    fn with_link(
        now: Timestamp,
        n: u8,
        hashes: &(dyn Fn(&SigninNonce) -> Vec<SecretHash> + Sync),
        apply: impl FnOnce(&Grant<'_>) -> GrantResult,
    ) -> GrantResult {
        let record = link(now + 100);
        let audit = event(AuditKind::SigninLinkIssued);
        apply(&Grant {
            now,
            signin: Some(SigninRequest {
                record: &record,
                nonce: [n; 16],
                hashes,
                audit: &audit,
            }),
            ..grant(Some(("shop", "o-1")), None, "a@x.org")
        })
    }

    fn handed_out(result: &GrantResult) -> Option<IssuedSignin> {
        match result {
            GrantResult::Applied { signin, .. } | GrantResult::Replayed { signin, .. } => *signin,
            _ => None,
        }
    }

    fn used(record: &SigninRecord) -> AuditEvent {
        AuditEvent {
            email: Some(record.email.clone()),
            ..event(AuditKind::SigninLinkUsed)
        }
    }

    fn kinds(store: &RedbStore) -> Vec<AuditKind> {
        store
            .audit_log(None, 100)
            .expect("log")
            .into_iter()
            .map(|(_, e)| e.kind)
            .collect()
    }

    #[test]
    fn a_sign_in_link_is_issued_with_its_grant_handed_out_again_while_live_and_spent_once() {
        let (_dir, store) = store();
        let grant = |g: &Grant<'_>| store.grant(g, &event(AuditKind::Grant)).expect("grant");
        let first = with_link(10, 1, &before_rotation, grant);
        assert!(matches!(first, GrantResult::Applied { created: true, .. }));
        let issued = handed_out(&first).expect("a link");
        assert_eq!(
            issued,
            IssuedSignin {
                nonce: [1; 16],
                hash: link_hash(0, &[1; 16]),
                expires_at: 110,
                fresh: true
            }
        );
        assert_eq!(
            kinds(&store),
            [AuditKind::Grant, AuditKind::SigninLinkIssued],
            "issued in the grant's transaction"
        );
        let hashes = before_rotation(&[1; 16]);
        assert_eq!(
            store.peek_signin(&hashes, 50).expect("peek"),
            Some(link(110))
        );
        assert_eq!(store.peek_signin(&hashes, 110).expect("peek"), None);

        // A retry of the order while the link is live gets the same link, and writes nothing.
        let changes = store.changes();
        let retry = with_link(20, 2, &before_rotation, grant);
        assert!(matches!(retry, GrantResult::Replayed { .. }), "{retry:?}");
        assert_eq!(
            handed_out(&retry),
            Some(IssuedSignin {
                fresh: false,
                ..issued
            })
        );
        assert_eq!(store.changes(), changes, "nothing was written");
        // A retry that does not ask for a link gets none.
        let plain = store
            .grant(
                &grant_at(30, Some(("shop", "o-1"))),
                &event(AuditKind::Grant),
            )
            .expect("grant");
        assert_eq!(handed_out(&plain), None);

        // Opened on another site, the link is left alone.
        assert_eq!(
            store
                .take_signin(&hashes, "other", 30, &used)
                .expect("take"),
            None
        );
        let taken = store.take_signin(&hashes, "s", 30, &used).expect("take");
        assert_eq!(taken, Some(link(110)));
        assert_eq!(
            store.take_signin(&hashes, "s", 31, &used).expect("again"),
            None,
            "spent once"
        );
        assert_eq!(store.peek_signin(&hashes, 31).expect("peek"), None);
        let log = store.audit_log(None, 100).expect("log");
        let (_, spent) = log.last().expect("an entry");
        assert_eq!(
            (spent.kind, spent.email.as_deref()),
            (AuditKind::SigninLinkUsed, Some("a@x.org"))
        );

        // Spent, the order's next retry gets a new link; that one, once expired, a newer one,
        // and the expired one's record goes.
        let renewed = with_link(40, 3, &before_rotation, grant);
        let second = handed_out(&renewed).expect("a new link");
        assert_eq!((second.nonce, second.fresh), ([3; 16], true));
        let later = with_link(200, 4, &before_rotation, grant);
        let third = handed_out(&later).expect("a newer link");
        assert_eq!((third.nonce, third.expires_at), ([4; 16], 300));
        assert!(
            store
                .peek_signin(&before_rotation(&[3; 16]), 0)
                .expect("peek")
                .is_none(),
            "replaced"
        );
        assert_eq!(
            kinds(&store)
                .iter()
                .filter(|k| **k == AuditKind::SigninLinkIssued)
                .count(),
            3
        );
        // Expired, it is refused, and removed.
        let third_hashes = before_rotation(&[4; 16]);
        assert_eq!(
            store
                .take_signin(&third_hashes, "s", 300, &used)
                .expect("take"),
            None
        );
        assert!(
            store
                .write(|txn| Ok(txn.open_table(SIGNINS)?.is_empty()?))
                .expect("read"),
            "nothing left"
        );
    }

    fn grant_at<'a>(now: Timestamp, order: Option<(&'a str, &'a str)>) -> Grant<'a> {
        Grant {
            now,
            ..grant(order, None, "a@x.org")
        }
    }

    #[test]
    fn a_live_link_issued_under_a_rotated_out_key_is_still_found_and_handed_out() {
        let (_dir, store) = store();
        let grant = |g: &Grant<'_>| store.grant(g, &event(AuditKind::Grant)).expect("grant");
        with_link(10, 1, &before_rotation, grant);
        let retry = with_link(20, 2, &after_rotation, grant);
        let again = handed_out(&retry).expect("a link");
        assert_eq!(
            (again.nonce, again.hash, again.fresh),
            ([1; 16], link_hash(0, &[1; 16]), false),
            "the hash tells which key derives the token"
        );
        let taken = store
            .take_signin(&after_rotation(&[1; 16]), "s", 30, &used)
            .expect("take");
        assert!(taken.is_some());
        let renewed = with_link(40, 3, &after_rotation, grant);
        assert_eq!(
            handed_out(&renewed).map(|l| l.hash),
            Some(link_hash(1, &[3; 16])),
            "new links are stored under the current key"
        );
    }

    #[test]
    fn expired_sign_in_links_are_pruned_and_live_ones_kept_in_backups() {
        let (dir, store) = store();
        let grant = |g: &Grant<'_>| store.grant(g, &event(AuditKind::Grant)).expect("grant");
        with_link(10, 1, &before_rotation, grant);
        let copy = dir.path().join("copy.redb");
        store.backup_to(&copy, false).expect("backup");
        let kept = store
            .prune(109, POLICY, Retention::default())
            .expect("prune");
        assert_eq!(kept.signin_links, 0);
        let pruned = store
            .prune(110, POLICY, Retention::default())
            .expect("prune");
        assert_eq!(pruned.signin_links, 1);

        let restored = tempfile::tempdir().expect("data");
        RedbStore::restore(restored.path(), &copy).expect("restore");
        let back = RedbStore::open(restored.path()).expect("open");
        assert_eq!(
            back.peek_signin(&before_rotation(&[1; 16]), 50)
                .expect("peek"),
            Some(link(110)),
            "a backup holds the live link"
        );
        let retry = with_link(20, 2, &before_rotation, |g| {
            back.grant(g, &event(AuditKind::Grant)).expect("grant")
        });
        assert_eq!(
            handed_out(&retry).map(|l| (l.nonce, l.fresh)),
            Some(([1; 16], false)),
            "and the order's nonce with it"
        );
    }

    /// A grant signed with the signature `n`, fresh until 400.
    fn signed<'a>(n: u8, order: Option<(&'a str, &'a str)>, email: &'a str) -> Grant<'a> {
        Grant {
            signature: Some(SpentSignature {
                hash: [n; 32],
                until: 400,
            }),
            ..grant(order, None, email)
        }
    }

    #[test]
    fn a_signature_is_spent_by_its_grant_once_and_for_good() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ev = event(AuditKind::Grant);
        {
            let store = RedbStore::open(dir.path()).expect("open");
            let first = store
                .grant(&signed(1, None, "a@x.org"), &ev)
                .expect("grant");
            assert!(matches!(first, GrantResult::Applied { created: true, .. }));
            assert_eq!(
                store
                    .grant(&signed(1, None, "a@x.org"), &ev)
                    .expect("again"),
                GrantResult::SignatureSpent
            );
            // An order replayed under a new signature answers as the first time and spends it.
            let order = Some(("shop", "o-1"));
            store
                .grant(&signed(2, order, "a@x.org"), &ev)
                .expect("order");
            let retried = store
                .grant(&signed(3, order, "a@x.org"), &ev)
                .expect("retry");
            assert!(
                matches!(retried, GrantResult::Replayed { .. }),
                "{retried:?}"
            );
            assert_eq!(
                store
                    .grant(&signed(3, order, "a@x.org"), &ev)
                    .expect("again"),
                GrantResult::SignatureSpent
            );
            // A conflict changes nothing, and so spends nothing.
            let conflict = store
                .grant(&signed(4, order, "b@x.org"), &ev)
                .expect("conflict");
            assert_eq!(conflict, GrantResult::Conflict);
            let fresh = store
                .grant(&signed(4, None, "b@x.org"), &ev)
                .expect("grant");
            assert!(matches!(fresh, GrantResult::Applied { .. }), "{fresh:?}");
        }
        let store = RedbStore::open(dir.path()).expect("reopen");
        for n in 1..=4 {
            assert_eq!(
                store
                    .grant(&signed(n, None, "c@x.org"), &ev)
                    .expect("after reopening"),
                GrantResult::SignatureSpent,
                "signature {n}"
            );
        }
        let emails: Vec<String> = store
            .clients("course")
            .expect("list")
            .into_iter()
            .map(|c| c.email)
            .collect();
        assert_eq!(
            emails,
            ["a@x.org", "b@x.org"],
            "refused grants changed nothing"
        );
        assert_eq!(
            store.audit_log(None, 100).expect("log").len(),
            3,
            "one entry per applied grant"
        );

        let kept = store
            .prune(400, POLICY, Retention::default())
            .expect("prune");
        assert_eq!(kept.signatures, 0, "fresh through its last second");
        let pruned = store
            .prune(401, POLICY, Retention::default())
            .expect("prune");
        assert_eq!(pruned.signatures, 4);
        assert!(matches!(
            store
                .grant(&signed(1, None, "c@x.org"), &ev)
                .expect("stale"),
            GrantResult::Applied { .. }
        ));
    }

    #[test]
    fn a_database_from_before_spent_signatures_opens_and_restores() {
        let (dir, store) = filled_store();
        store
            .write(|txn| {
                txn.delete_table(SIGNATURES)?;
                txn.delete_table(SIGNINS)?;
                Ok(())
            })
            .expect("make it an older file");
        drop(store);
        let old = dir.path().join(DB_FILE);
        let data = tempfile::tempdir().expect("data");
        RedbStore::restore(data.path(), &old).expect("an older backup restores");
        let store = RedbStore::open(data.path()).expect("and opens");
        let ev = event(AuditKind::Grant);
        store
            .grant(&signed(1, None, "d@x.org"), &ev)
            .expect("grant");
        assert_eq!(
            store
                .grant(&signed(1, None, "d@x.org"), &ev)
                .expect("again"),
            GrantResult::SignatureSpent
        );
        let copy = data.path().join("copy.redb");
        store.backup_to(&copy, false).expect("backup");
        drop(store);
        let restored = tempfile::tempdir().expect("data");
        RedbStore::restore(restored.path(), &copy).expect("restore");
        let store = RedbStore::open(restored.path()).expect("open");
        assert_eq!(
            store
                .grant(&signed(1, None, "d@x.org"), &ev)
                .expect("restored"),
            GrantResult::SignatureSpent,
            "a backup keeps spent signatures"
        );
    }

    #[test]
    fn grants_extend_access_and_orders_apply_once() {
        let (_dir, store) = store();
        let first = store
            .grant(
                &grant(Some(("shop", "o-1")), Some(100), "a@x.org"),
                &event(AuditKind::Grant),
            )
            .expect("grant");
        assert!(matches!(first, GrantResult::Applied { created: true, .. }));
        let retry = store
            .grant(
                &grant(Some(("shop", "o-1")), Some(100), "a@x.org"),
                &event(AuditKind::Grant),
            )
            .expect("retry");
        assert!(
            matches!(retry, GrantResult::Replayed { created: true, ref client, .. } if client.access_until == Some(100))
        );
        let other_key = store
            .grant(
                &grant(Some(("shop2", "o-1")), Some(50), "a@x.org"),
                &event(AuditKind::Grant),
            )
            .expect("g");
        assert!(
            matches!(other_key, GrantResult::Applied { created: false, ref client, .. } if client.access_until == Some(100)),
            "a later end wins"
        );
        let longer = store
            .grant(
                &grant(Some(("shop", "o-2")), Some(300), "a@x.org"),
                &event(AuditKind::Grant),
            )
            .expect("g");
        assert!(
            matches!(longer, GrantResult::Applied { ref client, .. } if client.access_until == Some(300))
        );
        let unlimited = store
            .grant(&grant(None, None, "a@x.org"), &event(AuditKind::Grant))
            .expect("g");
        assert!(
            matches!(unlimited, GrantResult::Applied { ref client, .. } if client.access_until.is_none())
        );
        let after = store
            .grant(&grant(None, Some(400), "a@x.org"), &event(AuditKind::Grant))
            .expect("g");
        assert!(
            matches!(after, GrantResult::Applied { ref client, .. } if client.access_until.is_none()),
            "unlimited stays unlimited"
        );
        let conflict = store
            .grant(
                &grant(Some(("shop", "o-1")), Some(100), "b@x.org"),
                &event(AuditKind::Grant),
            )
            .expect("g");
        assert_eq!(conflict, GrantResult::Conflict);
        assert_eq!(store.clients("course").expect("list").len(), 1);
    }

    #[test]
    fn the_cached_session_check_follows_every_write() {
        let (_dir, store) = store();
        add(&store, "course", "a@x.org", None);
        sign_in(&store, 1, &session(), &[]);
        let read = |pages: &[&str]| store.session_access(&[1; 32], pages).expect("read");
        let first = read(&["course"]).expect("session");
        assert_eq!(
            first.clients[0].as_ref().map(|c| c.access_until),
            Some(None)
        );
        assert_eq!(read(&["course"]).expect("cached").clients.len(), 1);
        assert_eq!(
            read(&["course", "other"])
                .expect("other pages")
                .clients
                .len(),
            2
        );

        store
            .put_client(
                "course",
                &client("a@x.org", Some(50)),
                &event(AuditKind::ClientUpdated),
            )
            .expect("put");
        assert_eq!(
            read(&["course"]).expect("session").clients[0]
                .as_ref()
                .and_then(|c| c.access_until),
            Some(50)
        );
        store
            .remove_client("course", "a@x.org", &event(AuditKind::ClientRemoved))
            .expect("remove");
        assert!(read(&["course"]).expect("session").clients[0].is_none());
        store.delete_session(&[1; 32], None).expect("logout");
        assert!(read(&["course"]).is_none());
    }

    #[test]
    fn pruning_removes_only_what_has_expired() {
        let (_dir, store) = store();
        issue(&store, 7, 8, 100);
        let live = SessionRecord {
            created_at: 0,
            expires_at: 500,
            ..session()
        };
        let dead = SessionRecord {
            expires_at: 150,
            ..live.clone()
        };
        sign_in(&store, 1, &live, &[]);
        sign_in(&store, 2, &dead, &[]);
        let pruned = store
            .prune(200, POLICY, Retention::default())
            .expect("prune");
        assert_eq!((pruned.codes, pruned.sessions), (1, 1));
        assert!(store.session_access(&[1; 32], &[]).expect("read").is_some());
        assert!(store.peek_token(&[8; 32], 0).expect("peek").is_none());
    }

    fn audit_at(at: Timestamp) -> AuditEvent {
        AuditEvent {
            at,
            ..event(AuditKind::Login)
        }
    }

    #[test]
    fn retention_removes_old_audit_entries_and_grant_orders_only() {
        let (_dir, store) = store();
        let order = |order: &'static str, now: Timestamp| {
            store
                .grant(
                    &Grant {
                        now,
                        ..grant(Some(("shop", order)), None, "a@x.org")
                    },
                    &audit_at(now),
                )
                .expect("grant");
        };
        store.audit(&audit_at(100)).expect("audit");
        store.audit(&audit_at(200)).expect("audit");
        order("old", 250);
        store.audit(&audit_at(300)).expect("audit");
        order("new", 400);
        let keep_all = store
            .prune(500, POLICY, Retention::default())
            .expect("prune");
        assert_eq!(
            (keep_all.audit, keep_all.grants),
            (0, 0),
            "no retention, nothing goes"
        );

        let retention = Retention {
            audit: Some(225),
            grants: Some(225),
        };
        let pruned = store.prune(500, POLICY, retention).expect("prune");
        assert_eq!((pruned.audit, pruned.grants), (3, 1));
        let left: Vec<Timestamp> = store
            .audit_log(None, 100)
            .expect("log")
            .into_iter()
            .map(|(_, e)| e.at)
            .collect();
        assert_eq!(left, [300, 400]);

        // The old order is forgotten: sent again, it is applied as a new grant.
        let again = store
            .grant(
                &grant(Some(("shop", "old")), None, "a@x.org"),
                &audit_at(500),
            )
            .expect("grant");
        assert!(matches!(again, GrantResult::Applied { .. }), "{again:?}");
        let replay = store
            .grant(
                &grant(Some(("shop", "new")), None, "a@x.org"),
                &audit_at(500),
            )
            .expect("grant");
        assert!(matches!(replay, GrantResult::Replayed { .. }), "{replay:?}");
        assert_eq!(
            store.clients("course").expect("clients").len(),
            1,
            "clients are never pruned"
        );
    }

    #[test]
    fn audit_pruning_goes_in_batches_from_the_oldest_end() {
        let (_dir, store) = store();
        store
            .write(|txn| {
                for at in 0..(PRUNE_BATCH as i64 + 5) {
                    append_audit(txn, &audit_at(at))?;
                }
                append_audit(txn, &audit_at(1_000_000))?;
                Ok(())
            })
            .expect("fill");
        let retention = Retention {
            audit: Some(10),
            grants: None,
        };
        let first = store.prune(1_000_000, POLICY, retention).expect("prune");
        assert_eq!(first.audit, PRUNE_BATCH);
        assert!(first.hit_limit(), "more is left: come back soon");
        let second = store.prune(1_000_000, POLICY, retention).expect("prune");
        assert_eq!(second.audit, 5);
        assert!(!second.hit_limit());
        let left = store.audit_log(None, 10).expect("log");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1.at, 1_000_000);
        assert_eq!(left[0].0, PRUNE_BATCH as u64 + 6, "sequence numbers go on");
        store.audit(&audit_at(1_000_001)).expect("append");
        let last = store.audit_log(Some(left[0].0), 10).expect("log");
        assert_eq!(last[0].0, PRUNE_BATCH as u64 + 7);
    }

    #[test]
    fn pruning_removes_an_unreadable_record_instead_of_tripping_on_it_forever() {
        let (_dir, store) = store();
        store
            .write(|txn| {
                txn.open_table(SESSIONS)?
                    .insert([9u8; 32].as_slice(), b"not json".as_slice())?;
                txn.open_table(CODES)?
                    .insert("s\0a@x.org", b"{".as_slice())?;
                Ok(())
            })
            .expect("damage");
        let pruned = store.prune(0, POLICY, Retention::default()).expect("prune");
        assert_eq!((pruned.sessions, pruned.codes), (1, 1));
        assert_eq!(store.session_count().expect("count"), 0);
    }

    fn filled_store() -> (tempfile::TempDir, RedbStore) {
        let (dir, store) = store();
        for email in ["a@x.org", "b@x.org"] {
            add(&store, "course", email, None);
        }
        sign_in(&store, 1, &session(), &[]);
        store
            .grant(
                &grant(Some(("shop", "o-1")), None, "c@x.org"),
                &event(AuditKind::Grant),
            )
            .expect("grant");
        (dir, store)
    }

    #[test]
    fn a_backup_is_a_complete_private_database_and_never_overwrites_unasked() {
        let (dir, store) = filled_store();
        let dest = dir.path().join("copy.redb");
        let counts = store.backup_to(&dest, false).expect("backup");
        let expected = StoreCounts {
            clients: 3,
            sessions: 1,
            audit: 4,
            grants: 1,
        };
        assert_eq!(counts, expected);
        assert_eq!(RedbStore::inspect(&dest).expect("inspect"), expected);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dest).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        let before = std::fs::read(&dest).expect("read");
        store
            .remove_client("course", "a@x.org", &event(AuditKind::ClientRemoved))
            .expect("rm");
        assert!(matches!(
            store.backup_to(&dest, false),
            Err(BackupError::Exists(_))
        ));
        assert_eq!(
            std::fs::read(&dest).expect("read"),
            before,
            "left untouched"
        );
        let replaced = store.backup_to(&dest, true).expect("overwrite");
        assert_eq!(replaced.clients, 2);

        let nowhere = dir.path().join("missing-folder").join("copy.redb");
        assert!(matches!(
            store.backup_to(&nowhere, false),
            Err(BackupError::Io { .. })
        ));
    }

    #[test]
    fn a_backup_taken_while_writing_goes_on_is_one_moment_of_the_database() {
        let (dir, store) = store();
        let store = std::sync::Arc::new(store);
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..300 {
                    let email = format!("{i:04}@x.org");
                    add(&store, "course", &email, None);
                }
            })
        };
        let dest = dir.path().join("live.redb");
        while store.clients("course").expect("list").len() < 20 {
            std::thread::yield_now();
        }
        let counts = store.backup_to(&dest, false).expect("backup");
        writer.join().expect("writer");
        assert!(counts.clients >= 20);
        // Each write adds a client and its audit entry in one transaction: a snapshot taken
        // between transactions has as many of one as of the other, and a prefix of the writes.
        assert_eq!(counts.clients, counts.audit);
        let restored_dir = tempfile::tempdir().expect("dir");
        RedbStore::restore(restored_dir.path(), &dest).expect("restore");
        let restored = RedbStore::open(restored_dir.path()).expect("open");
        let emails: Vec<String> = restored
            .clients("course")
            .expect("list")
            .into_iter()
            .map(|c| c.email)
            .collect();
        let prefix: Vec<String> = (0..counts.clients)
            .map(|i| format!("{i:04}@x.org"))
            .collect();
        assert_eq!(emails, prefix);
    }

    #[test]
    fn restore_puts_a_backup_in_place_and_keeps_the_old_database_aside() {
        let (dir, store) = filled_store();
        let backup = dir.path().join("backup.redb");
        store.backup_to(&backup, false).expect("backup");
        let data = tempfile::tempdir().expect("data");
        {
            let other = RedbStore::open(data.path()).expect("open");
            add(&other, "other", "z@x.org", None);
            assert!(
                matches!(
                    RedbStore::restore(data.path(), &backup),
                    Err(RestoreError::InUse(_))
                ),
                "refused while the database is open"
            );
        }
        let restored = RedbStore::restore(data.path(), &backup).expect("restore");
        assert_eq!(restored.counts.clients, 3);
        let aside = restored.kept_aside.expect("kept aside");
        assert!(
            aside.file_name().is_some_and(|n| n
                .to_string_lossy()
                .starts_with("pagegate.redb.before-restore-")),
            "{}",
            aside.display()
        );
        let now = RedbStore::open(data.path()).expect("open restored");
        assert_eq!(now.clients("course").expect("list").len(), 3);
        assert!(now.clients("other").expect("list").is_empty());
        assert_eq!(now.session_count().expect("sessions"), 1);
        drop(now);
        let again = RedbStore::restore(data.path(), &backup).expect("restore again");
        assert_ne!(
            again.kept_aside.as_ref(),
            Some(&aside),
            "each restore keeps its own"
        );
        let old_dir = tempfile::tempdir().expect("dir");
        std::fs::copy(&aside, old_dir.path().join(DB_FILE)).expect("copy aside");
        let old = RedbStore::open(old_dir.path()).expect("open aside");
        assert_eq!(old.clients("other").expect("list").len(), 1);
    }

    #[test]
    fn restore_refuses_what_is_not_a_backup_and_changes_nothing() {
        let data = tempfile::tempdir().expect("data");
        {
            let current = RedbStore::open(data.path()).expect("open");
            add(&current, "course", "a@x.org", None);
        }
        let files = tempfile::tempdir().expect("files");
        let garbage = files.path().join("garbage.redb");
        std::fs::write(&garbage, vec![0x5a; 64 * 1024]).expect("write");
        let empty = files.path().join("empty.redb");
        std::fs::write(&empty, b"").expect("write");
        let foreign = files.path().join("foreign.redb");
        {
            let db = Database::create(&foreign).expect("create");
            let txn = db.begin_write().expect("txn");
            txn.open_table(TableDefinition::<&str, &str>::new("things"))
                .expect("table")
                .insert("a", "b")
                .expect("insert");
            txn.commit().expect("commit");
        }
        let newer = files.path().join("newer");
        {
            let store = RedbStore::open(&newer).expect("open");
            store
                .write(|txn| {
                    txn.open_table(META)?
                        .insert("schema_version", SCHEMA_VERSION + 1)?;
                    Ok(())
                })
                .expect("bump");
        }
        let cases = [
            (files.path().join("missing.redb"), "no such file"),
            (garbage, "not a database file"),
            (empty, "not a database file"),
            (foreign, "not pagegate's"),
            (newer.join(DB_FILE), "schema version 2"),
        ];
        let before = std::fs::read(data.path().join(DB_FILE)).expect("read");
        for (file, expected) in cases {
            let err = RedbStore::restore(data.path(), &file).expect_err("refused");
            let shown = err.to_string();
            assert!(
                matches!(err, RestoreError::NotABackup { .. }) && shown.contains(expected),
                "{}: {shown}",
                file.display()
            );
            assert!(shown.contains(&file.display().to_string()), "{shown}");
        }
        assert_eq!(
            std::fs::read(data.path().join(DB_FILE)).expect("read"),
            before
        );
        let names: Vec<String> = std::fs::read_dir(data.path())
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [DB_FILE], "no copies left behind");
    }
}
