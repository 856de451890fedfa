//! Large client lists in the redb file: what lets a page of a million clients be paged,
//! searched and counted without reading the whole list.
//!
//! Beside `clients` (`page \0 email` → the client's JSON), three tables are kept:
//!
//! - `client_search`: `page \0 email` → the client's [`search_text`]. A search scans this
//!   compact table in key order and decodes only the clients it returns, instead of decoding
//!   every record.
//! - `client_totals`: page → (clients, clients with unlimited access).
//! - `client_ends`: (page, end of access) → clients with that end. With the totals, the clients
//!   active at `now` are the unlimited ones plus those whose end lies after `now`: a range over
//!   the distinct end times still to come, not over the clients.
//!
//! Invariant: every write that adds, changes or removes a client record goes through
//! [`ClientTables`], in the same write transaction as the record, so the three tables always
//! describe `clients` exactly. A file from before these tables has them built once, when it is
//! opened ([`build_if_missing`]); `meta` then records that it has them.

use std::ops::Bound;

use redb::{Database, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::{META, StoreError, decode, encode, get_record, key};
use crate::store::{Client, ClientCounts, MatchCount, Timestamp, search_needle, search_text};

/// A search needle (from [`search_needle`]) compiled once for a scan of [`search_text`]s, rather
/// than a searcher built per entry, which is much of a scan's time over a million entries.
struct Needle(Option<memchr::memmem::Finder<'static>>);

impl Needle {
    fn new(needle: &str) -> Needle {
        // A needle with a line break would match across the email and the name.
        Needle((!needle.contains('\n')).then(|| memchr::memmem::Finder::new(needle).into_owned()))
    }

    fn matches(&self, text: &str) -> bool {
        self.0
            .as_ref()
            .is_some_and(|f| f.find(text.as_bytes()).is_some())
    }
}

/// The clients table (defined with the others in the backend's module).
use super::CLIENTS;

/// `page \0 email` → the client's search text.
pub(super) const CLIENT_SEARCH: TableDefinition<&str, &str> = TableDefinition::new("client_search");
/// page → (clients, clients with unlimited access).
pub(super) const CLIENT_TOTALS: TableDefinition<&str, (u64, u64)> =
    TableDefinition::new("client_totals");
/// (page, end of access) → clients with that end.
pub(super) const CLIENT_ENDS: TableDefinition<(&str, i64), u64> =
    TableDefinition::new("client_ends");

/// The `meta` key set once the tables above describe `clients`.
const INDEXED: &str = "client_index_version";
/// Its value: a different layout later would set another and be built again.
const INDEX_VERSION: u64 = 1;

/// The range of a page's keys in `clients` and `client_search`, after `after` when given.
fn page_range(page: &str, after: Option<&str>) -> (Bound<String>, Bound<String>) {
    let start = match after {
        Some(email) => Bound::Excluded(key(page, email)),
        None => Bound::Included(key(page, "")),
    };
    (start, Bound::Excluded(format!("{page}\u{1}")))
}

/// The client tables of one write transaction. Every write of a client record goes through it,
/// which keeps the search table and the counts true to the list (see the module's invariant).
pub(super) struct ClientTables<'t> {
    clients: Table<'t, &'static str, &'static [u8]>,
    search: Table<'t, &'static str, &'static str>,
    totals: Table<'t, &'static str, (u64, u64)>,
    ends: Table<'t, (&'static str, i64), u64>,
}

impl<'t> ClientTables<'t> {
    pub(super) fn open(txn: &'t WriteTransaction) -> Result<ClientTables<'t>, StoreError> {
        Ok(ClientTables {
            clients: txn.open_table(CLIENTS)?,
            search: txn.open_table(CLIENT_SEARCH)?,
            totals: txn.open_table(CLIENT_TOTALS)?,
            ends: txn.open_table(CLIENT_ENDS)?,
        })
    }

    /// The stored client, if any.
    pub(super) fn get(&self, page: &str, email: &str) -> Result<Option<Client>, StoreError> {
        get_record(&self.clients, "clients", key(page, email).as_str())
    }

    /// Whether the page lists `email`.
    pub(super) fn contains(&self, page: &str, email: &str) -> Result<bool, StoreError> {
        Ok(self.clients.get(key(page, email).as_str())?.is_some())
    }

    /// Stores `client` under its email, replacing any record there; returns the one replaced.
    pub(super) fn put(
        &mut self,
        page: &str,
        client: &Client,
    ) -> Result<Option<Client>, StoreError> {
        let k = key(page, &client.email);
        let old: Option<Client> = self
            .clients
            .insert(k.as_str(), encode(client)?.as_slice())?
            .map(|v| decode("clients", v.value()))
            .transpose()?;
        if old.as_ref().is_none_or(|o| o.name != client.name) {
            self.search
                .insert(k.as_str(), search_text(client).as_str())?;
        }
        match &old {
            Some(o) if o.access_until == client.access_until => {}
            Some(o) => {
                self.count(page, o, false)?;
                self.count(page, client, true)?;
            }
            None => self.count(page, client, true)?,
        }
        Ok(old)
    }

    /// Removes the client stored under `email`; returns it.
    pub(super) fn remove(&mut self, page: &str, email: &str) -> Result<Option<Client>, StoreError> {
        let k = key(page, email);
        let old: Option<Client> = self
            .clients
            .remove(k.as_str())?
            .map(|v| decode("clients", v.value()))
            .transpose()?;
        if let Some(o) = &old {
            self.search.remove(k.as_str())?;
            self.count(page, o, false)?;
        }
        Ok(old)
    }

    /// Adds `client` to the page's counts, or takes it out of them.
    fn count(&mut self, page: &str, client: &Client, add: bool) -> Result<(), StoreError> {
        let step = |n: u64, by: u64| if add { n + by } else { n.saturating_sub(by) };
        let (total, unlimited) = self.totals.get(page)?.map_or((0, 0), |v| v.value());
        let unlimited_step = u64::from(client.access_until.is_none());
        self.totals
            .insert(page, (step(total, 1), step(unlimited, unlimited_step)))?;
        if let Some(end) = client.access_until {
            let n = self.ends.get((page, end))?.map_or(0, |v| v.value());
            match step(n, 1) {
                0 => {
                    self.ends.remove((page, end))?;
                }
                left => {
                    self.ends.insert((page, end), left)?;
                }
            }
        }
        Ok(())
    }
}

/// Builds the search table and the counts from `clients` when the file does not have them yet
/// (a file from before them, or a restored backup of one), in the caller's transaction.
pub(super) fn build_if_missing(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    if meta.get(INDEXED)?.map(|v| v.value()) == Some(INDEX_VERSION) {
        return Ok(());
    }
    let started = std::time::Instant::now();
    txn.delete_table(CLIENT_SEARCH)?;
    txn.delete_table(CLIENT_TOTALS)?;
    txn.delete_table(CLIENT_ENDS)?;
    let clients = txn.open_table(CLIENTS)?;
    let mut search = txn.open_table(CLIENT_SEARCH)?;
    let mut totals = std::collections::BTreeMap::<String, (u64, u64)>::new();
    let mut ends = std::collections::BTreeMap::<(String, i64), u64>::new();
    let mut indexed = 0u64;
    for entry in clients.iter()? {
        let (k, v) = entry?;
        let Some((page, _)) = k.value().split_once('\0') else {
            continue;
        };
        let client: Client = decode("clients", v.value())?;
        search.insert(k.value(), search_text(&client).as_str())?;
        let t = totals.entry(page.to_owned()).or_default();
        t.0 += 1;
        match client.access_until {
            None => t.1 += 1,
            Some(end) => *ends.entry((page.to_owned(), end)).or_default() += 1,
        }
        indexed += 1;
    }
    let mut totals_table = txn.open_table(CLIENT_TOTALS)?;
    for (page, counts) in &totals {
        totals_table.insert(page.as_str(), *counts)?;
    }
    let mut ends_table = txn.open_table(CLIENT_ENDS)?;
    for ((page, end), n) in &ends {
        ends_table.insert((page.as_str(), *end), *n)?;
    }
    meta.insert(INDEXED, INDEX_VERSION)?;
    tracing::info!(
        clients = indexed,
        ms = started.elapsed().as_millis() as u64,
        "client search table and counts built"
    );
    Ok(())
}

/// See [`crate::store::Store::client_page`].
pub(super) fn client_page(
    db: &Database,
    page: &str,
    after: Option<&str>,
    limit: usize,
    search: Option<&str>,
) -> Result<Vec<Client>, StoreError> {
    let txn = db.begin_read()?;
    let clients = txn.open_table(CLIENTS)?;
    let mut out = Vec::with_capacity(limit.min(1024));
    if limit == 0 {
        return Ok(out);
    }
    let (start, end) = page_range(page, after);
    let bounds = (
        start.as_ref().map(String::as_str),
        end.as_ref().map(String::as_str),
    );
    let Some(needle) = search.and_then(search_needle) else {
        for entry in clients.range::<&str>(bounds)? {
            let (_, v) = entry?;
            out.push(decode("clients", v.value())?);
            if out.len() == limit {
                break;
            }
        }
        return Ok(out);
    };
    let needle = Needle::new(&needle);
    let index = txn.open_table(CLIENT_SEARCH)?;
    for entry in index.range::<&str>(bounds)? {
        let (k, text) = entry?;
        if !needle.matches(text.value()) {
            continue;
        }
        if let Some(client) = get_record(&clients, "clients", k.value())? {
            out.push(client);
            if out.len() == limit {
                break;
            }
        }
    }
    Ok(out)
}

/// See [`crate::store::Store::client_counts`].
pub(super) fn client_counts(
    db: &Database,
    page: &str,
    now: Timestamp,
) -> Result<ClientCounts, StoreError> {
    let txn = db.begin_read()?;
    let (total, unlimited) = txn
        .open_table(CLIENT_TOTALS)?
        .get(page)?
        .map_or((0, 0), |v| v.value());
    let mut active = unlimited;
    let ends = txn.open_table(CLIENT_ENDS)?;
    let from = now.saturating_add(1);
    if from < i64::MAX {
        for entry in ends.range((page, from)..=(page, i64::MAX))? {
            active += entry?.1.value();
        }
    }
    Ok(ClientCounts { total, active })
}

/// See [`crate::store::Store::count_matching`].
pub(super) fn count_matching(
    db: &Database,
    page: &str,
    search: &str,
    cap: u64,
) -> Result<MatchCount, StoreError> {
    let txn = db.begin_read()?;
    let Some(needle) = search_needle(search) else {
        let total = client_counts(db, page, 0)?.total;
        return Ok(MatchCount {
            count: total.min(cap),
            exact: total <= cap,
        });
    };
    let index = txn.open_table(CLIENT_SEARCH)?;
    let (start, end) = page_range(page, None);
    let bounds = (
        start.as_ref().map(String::as_str),
        end.as_ref().map(String::as_str),
    );
    let needle = Needle::new(&needle);
    let mut count = 0;
    for entry in index.range::<&str>(bounds)? {
        let (_, text) = entry?;
        if needle.matches(text.value()) {
            if count == cap {
                return Ok(MatchCount {
                    count,
                    exact: false,
                });
            }
            count += 1;
        }
    }
    Ok(MatchCount { count, exact: true })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::{DB_FILE, RedbStore};
    use crate::store::{AuditEvent, AuditKind, Source, Store};

    fn client(email: &str, name: &str, until: Option<Timestamp>) -> Client {
        Client {
            email: email.into(),
            name: name.into(),
            created_at: 1,
            updated_at: 1,
            access_until: until,
            source: Source::Admin,
            last_login: None,
        }
    }

    fn added() -> AuditEvent {
        AuditEvent {
            at: 1,
            kind: AuditKind::ClientAdded,
            site: None,
            page: None,
            email: None,
            actor: "test".into(),
            detail: String::new(),
        }
    }

    /// Makes the file look like one written before the search table and the counts: only
    /// `clients` holds the list.
    fn forget_index(path: &std::path::Path) {
        let db = Database::open(path).expect("open");
        let txn = db.begin_write().expect("write");
        txn.delete_table(CLIENT_SEARCH).expect("drop search");
        txn.delete_table(CLIENT_TOTALS).expect("drop totals");
        txn.delete_table(CLIENT_ENDS).expect("drop ends");
        txn.open_table(META)
            .expect("meta")
            .remove(INDEXED)
            .expect("unmark");
        txn.commit().expect("commit");
    }

    #[test]
    fn a_file_from_before_the_counts_gets_them_built_once_when_opened() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let store = RedbStore::open(dir.path()).expect("open");
            for (email, name, until) in [
                ("a@x.org", "Ann", None),
                ("b@x.org", "Bea", Some(500)),
                ("c@x.org", "Cy", Some(2_000)),
            ] {
                store
                    .put_client("course", &client(email, name, until), &added())
                    .expect("put");
            }
        }
        forget_index(&dir.path().join(DB_FILE));
        {
            let db = Database::open(dir.path().join(DB_FILE)).expect("open");
            let txn = db.begin_read().expect("read");
            assert!(
                txn.open_table(CLIENT_TOTALS).is_err(),
                "the file really has no counts"
            );
        }
        let store = RedbStore::open(dir.path()).expect("reopen");
        assert_eq!(
            store.client_counts("course", 1_000).expect("counts"),
            ClientCounts {
                total: 3,
                active: 2
            }
        );
        let found = store
            .client_page("course", None, 10, Some("bea"))
            .expect("search");
        assert_eq!(found, [client("b@x.org", "Bea", Some(500))]);
        // Built once: writes from then on keep it, and opening again does not rebuild it.
        store
            .remove_client("course", "a@x.org", &added())
            .expect("remove");
        drop(store);
        let store = RedbStore::open(dir.path()).expect("reopen");
        assert_eq!(
            store.client_counts("course", 1_000).expect("counts"),
            ClientCounts {
                total: 2,
                active: 1
            }
        );
    }
}
