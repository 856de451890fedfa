//! Large client lists in the redb file: what lets a page of a million clients be paged,
//! searched and counted without reading the whole list.
//!
//! Beside `clients` (`page \0 email` → the client's JSON), three tables are kept:
//!
//! - `client_search_blocks`: `page \0 first email` → a block of up to 128 consecutive clients' search
//!   texts and emails (layout in [`super::search_blocks`]). A search runs one `memmem` pass over
//!   each block, in key order, and decodes only the clients it returns.
//! - `client_totals`: page → (clients, clients with unlimited access).
//! - `client_ends`: (page, end of access) → clients with that end. With the totals, the clients
//!   active at `now` are the unlimited ones plus those whose end lies after `now`: a range over
//!   the distinct end times still to come, not over the clients.
//!
//! Invariant: every write that adds, changes or removes a client record goes through
//! [`ClientTables`], in the same write transaction as the record, so the three tables always
//! describe `clients` exactly. A file from before these tables (or from before the blocks) has
//! them built once, when it is opened ([`build_if_missing`]); `meta` then records that it has
//! them.

use std::ops::Bound;

use redb::{Database, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::search_blocks::{self as blocks, BadBlock, Needle};
use super::{META, StoreError, decode, encode, get_record, key};
use crate::store::{Client, ClientCounts, MatchCount, Timestamp, search_needle, search_text};

impl From<BadBlock> for StoreError {
    fn from(_: BadBlock) -> StoreError {
        StoreError::Corrupt {
            table: "client_search",
            detail: "a search block does not follow its layout".into(),
        }
    }
}

/// The clients table (defined with the others in the backend's module).
use super::CLIENTS;

/// `page \0 first email` → a block of clients' search texts (see [`super::search_blocks`]).
pub(super) const CLIENT_SEARCH: TableDefinition<&str, &[u8]> =
    TableDefinition::new("client_search_blocks");
/// One search text per client: the layout of index version 1, dropped when a file is upgraded.
const CLIENT_SEARCH_V1: TableDefinition<&str, &str> = TableDefinition::new("client_search");
/// page → (clients, clients with unlimited access).
pub(super) const CLIENT_TOTALS: TableDefinition<&str, (u64, u64)> =
    TableDefinition::new("client_totals");
/// (page, end of access) → clients with that end.
pub(super) const CLIENT_ENDS: TableDefinition<(&str, i64), u64> =
    TableDefinition::new("client_ends");

/// The `meta` key set once the tables above describe `clients`.
const INDEXED: &str = "client_index_version";
/// Its value: a different layout later sets another and is built again (1: one search entry
/// per client; 2: search blocks).
const INDEX_VERSION: u64 = 2;

/// The range of a page's keys in `clients`, after `after` when given.
fn page_range(page: &str, after: Option<&str>) -> (Bound<String>, Bound<String>) {
    let start = match after {
        Some(email) => Bound::Excluded(key(page, email)),
        None => Bound::Included(key(page, "")),
    };
    (start, Bound::Excluded(page_end(page)))
}

/// The first key after every key of `page`.
fn page_end(page: &str) -> String {
    format!("{page}\u{1}")
}

/// The key and bytes of the block that holds, or would hold, `email`: the last block starting
/// at or before it, else the page's first block. `None` when the page has no block.
fn block_for(
    search: &impl ReadableTable<&'static str, &'static [u8]>,
    page: &str,
    email: &str,
) -> Result<Option<(String, Vec<u8>)>, StoreError> {
    let (first, at) = (key(page, ""), key(page, email));
    let found = match search
        .range::<&str>(first.as_str()..=at.as_str())?
        .next_back()
    {
        Some(entry) => Some(entry?),
        None => search
            .range::<&str>(at.as_str()..page_end(page).as_str())?
            .next()
            .transpose()?,
    };
    Ok(found.map(|(k, v)| (k.value().to_owned(), v.value().to_vec())))
}

/// The client tables of one write transaction. Every write of a client record goes through it,
/// which keeps the search table and the counts true to the list (see the module's invariant).
pub(super) struct ClientTables<'t> {
    clients: Table<'t, &'static str, &'static [u8]>,
    search: Table<'t, &'static str, &'static [u8]>,
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
            self.search_put(page, &client.email, &search_text(client))?;
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
            self.search_remove(page, email)?;
            self.count(page, o, false)?;
        }
        Ok(old)
    }

    /// Puts the client's search text into its block, splitting a block that grows too full.
    fn search_put(&mut self, page: &str, email: &str, text: &str) -> Result<(), StoreError> {
        let Some((old_key, block)) = block_for(&self.search, page, email)? else {
            let mut block = Vec::new();
            blocks::entry(&mut block, email, text);
            self.search
                .insert(key(page, email).as_str(), block.as_slice())?;
            return Ok(());
        };
        let block = blocks::with_entry(&block, email, text)?;
        self.search.remove(old_key.as_str())?;
        if blocks::count(&block) > blocks::MAX_ENTRIES {
            let (low, high) = blocks::halves(&block)?;
            self.write_block(page, low)?;
            self.write_block(page, high)?;
        } else {
            self.write_block(page, &block)?;
        }
        Ok(())
    }

    /// Takes the client's entry out of its block; a block left small is merged with the next.
    fn search_remove(&mut self, page: &str, email: &str) -> Result<(), StoreError> {
        let Some((old_key, block)) = block_for(&self.search, page, email)? else {
            return Ok(());
        };
        let Some(mut block) = blocks::without_entry(&block, email)? else {
            return Ok(());
        };
        self.search.remove(old_key.as_str())?;
        if block.is_empty() {
            return Ok(());
        }
        if blocks::count(&block) < blocks::MERGE_BELOW {
            let next = self
                .search
                .range::<&str>((
                    Bound::Excluded(old_key.as_str()),
                    Bound::Excluded(page_end(page).as_str()),
                ))?
                .next()
                .transpose()?
                .map(|(k, v)| (k.value().to_owned(), v.value().to_vec()));
            if let Some((next_key, next_block)) = next {
                if blocks::count(&block) + blocks::count(&next_block) <= blocks::MAX_ENTRIES {
                    self.search.remove(next_key.as_str())?;
                    block.extend_from_slice(&next_block);
                }
            }
        }
        self.write_block(page, &block)
    }

    /// Stores a non-empty block under its first email.
    fn write_block(&mut self, page: &str, block: &[u8]) -> Result<(), StoreError> {
        let first = key(page, blocks::first_email(block)?);
        self.search.insert(first.as_str(), block)?;
        Ok(())
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
    txn.delete_table(CLIENT_SEARCH_V1)?;
    txn.delete_table(CLIENT_SEARCH)?;
    txn.delete_table(CLIENT_TOTALS)?;
    txn.delete_table(CLIENT_ENDS)?;
    let clients = txn.open_table(CLIENTS)?;
    let mut search = txn.open_table(CLIENT_SEARCH)?;
    let mut totals = std::collections::BTreeMap::<String, (u64, u64)>::new();
    let mut ends = std::collections::BTreeMap::<(String, i64), u64>::new();
    let mut indexed = 0u64;
    // The block being filled: its key and bytes; written when full or when the page changes.
    let mut filling: Option<(String, Vec<u8>, usize)> = None;
    for entry in clients.iter()? {
        let (k, v) = entry?;
        let Some((page, email)) = k.value().split_once('\0') else {
            continue;
        };
        let client: Client = decode("clients", v.value())?;
        let same_page = filling.as_ref().is_some_and(|(first, _, n)| {
            *n < blocks::BUILD_ENTRIES && first.split_once('\0').is_some_and(|(p, _)| p == page)
        });
        if !same_page {
            if let Some((first, block, _)) = filling.take() {
                search.insert(first.as_str(), block.as_slice())?;
            }
            filling = Some((k.value().to_owned(), Vec::new(), 0));
        }
        if let Some((_, block, n)) = filling.as_mut() {
            blocks::entry(block, email, &search_text(&client));
            *n += 1;
        }
        let t = totals.entry(page.to_owned()).or_default();
        t.0 += 1;
        match client.access_until {
            None => t.1 += 1,
            Some(end) => *ends.entry((page.to_owned(), end)).or_default() += 1,
        }
        indexed += 1;
    }
    if let Some((first, block, _)) = filling.take() {
        search.insert(first.as_str(), block.as_slice())?;
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
    // From the block that holds `after` (it may hold later clients too), else the page's first.
    let first = match after {
        Some(email) => block_for(&index, page, email)?.map(|(k, _)| k),
        None => None,
    }
    .unwrap_or_else(|| key(page, ""));
    for entry in index.range::<&str>(first.as_str()..page_end(page).as_str())? {
        let (_, block) = entry?;
        for email in needle.matches(block.value()) {
            let email = email?;
            if after.is_some_and(|a| email <= a) {
                continue;
            }
            if let Some(client) = get_record(&clients, "clients", key(page, email).as_str())? {
                out.push(client);
                if out.len() == limit {
                    return Ok(out);
                }
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
    let needle = Needle::new(&needle);
    let mut count = 0;
    for entry in index.range::<&str>(key(page, "").as_str()..page_end(page).as_str())? {
        let (_, block) = entry?;
        for email in needle.matches(block.value()) {
            email?;
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

    /// Makes the file look like one written by the first layout (one search entry per client,
    /// no counts) — or, with `version` 0, before any of these tables.
    fn forget_index(path: &std::path::Path, version: u64) {
        let db = Database::open(path).expect("open");
        let txn = db.begin_write().expect("write");
        txn.delete_table(CLIENT_SEARCH).expect("drop search");
        txn.delete_table(CLIENT_TOTALS).expect("drop totals");
        txn.delete_table(CLIENT_ENDS).expect("drop ends");
        {
            let mut meta = txn.open_table(META).expect("meta");
            if version == 0 {
                meta.remove(INDEXED).expect("unmark");
            } else {
                meta.insert(INDEXED, version).expect("mark");
                let mut v1 = txn.open_table(CLIENT_SEARCH_V1).expect("v1 table");
                v1.insert(key("course", "a@x.org").as_str(), "a@x.org\nann")
                    .expect("v1 entry");
            }
        }
        txn.commit().expect("commit");
    }

    #[test]
    fn a_file_from_before_the_counts_gets_them_built_once_when_opened() {
        for version in [0, 1] {
            a_file_of_an_older_layout_is_indexed_when_opened(version);
        }
    }

    fn a_file_of_an_older_layout_is_indexed_when_opened(version: u64) {
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
        forget_index(&dir.path().join(DB_FILE), version);
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
        {
            let txn = store.db.begin_read().expect("read");
            assert!(
                txn.open_table(CLIENT_SEARCH_V1).is_err(),
                "the first layout's table is gone"
            );
        }
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

    /// Every block of `page` in key order, checked against the layout's rules: non-empty, not
    /// over the maximum, stored under its first email, in order across blocks.
    fn blocks_of(store: &RedbStore, page: &str) -> Vec<Vec<String>> {
        let txn = store.db.begin_read().expect("read");
        let index = txn.open_table(CLIENT_SEARCH).expect("search table");
        let mut out: Vec<Vec<String>> = Vec::new();
        for entry in index
            .range::<&str>(key(page, "").as_str()..page_end(page).as_str())
            .expect("range")
        {
            let (k, v) = entry.expect("entry");
            let emails: Vec<String> = blocks::entries(v.value())
                .map(|e| e.expect("well-formed").1.email.to_owned())
                .collect();
            assert!(!emails.is_empty(), "no empty block is kept");
            assert!(emails.len() <= blocks::MAX_ENTRIES, "a full block is split");
            assert_eq!(
                k.value(),
                key(page, &emails[0]),
                "a block is keyed by its first email"
            );
            assert!(emails.windows(2).all(|w| w[0] < w[1]), "in email order");
            if let Some(last) = out.last().and_then(|b| b.last()) {
                assert!(last < &emails[0], "blocks do not overlap");
            }
            out.push(emails);
        }
        out
    }

    #[test]
    fn blocks_split_merge_and_answer_searches_like_a_scan_of_the_list() {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        // A fixed order, so the block counts below are the same on every run.
        let mut rng = rand::rngs::StdRng::seed_from_u64(19);
        let dir = tempfile::tempdir().expect("temp dir");
        let store = RedbStore::open(dir.path()).expect("open");
        let mut emails: Vec<String> = (0..600)
            .map(|i| format!("c{:04}@x.org", i * 7 % 600))
            .collect();
        emails.shuffle(&mut rng);
        for (i, email) in emails.iter().enumerate() {
            let name = if i % 10 == 0 {
                format!("Smith {i}")
            } else {
                format!("Jones {i}")
            };
            store
                .put_client("course", &client(email, &name, None), &added())
                .expect("put");
            // A page whose id starts with this one's: its clients must never be mixed in.
            store
                .put_client("course2", &client(email, "Smith", None), &added())
                .expect("put");
        }
        let blocks = blocks_of(&store, "course");
        let full = blocks.len();
        assert!(
            full > 600 / blocks::MAX_ENTRIES,
            "adding clients split blocks"
        );
        assert_eq!(blocks.concat().len(), 600);

        // Remove four clients in five, in random order: blocks shrink and merge.
        emails.shuffle(&mut rng);
        for email in emails.iter().take(480) {
            store
                .remove_client("course", email, &added())
                .expect("remove");
        }
        let kept: std::collections::BTreeSet<&str> =
            emails[480..].iter().map(String::as_str).collect();
        let blocks = blocks_of(&store, "course");
        assert_eq!(
            blocks.concat(),
            kept.iter().map(|e| e.to_string()).collect::<Vec<_>>()
        );
        assert!(
            blocks.len() < full,
            "small blocks were merged: {} blocks of {full} left",
            blocks.len()
        );

        // A search, paged 7 at a time, finds what a scan of the whole list finds.
        let expected: Vec<String> = store
            .clients("course")
            .expect("list")
            .into_iter()
            .filter(|c| c.name.contains("Smith"))
            .map(|c| c.email)
            .collect();
        assert!(!expected.is_empty());
        let mut paged = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store
                .client_page("course", after.as_deref(), 7, Some("SMITH"))
                .expect("search");
            paged.extend(page.iter().map(|c| c.email.clone()));
            if page.len() < 7 {
                break;
            }
            after = page.last().map(|c| c.email.clone());
        }
        assert_eq!(paged, expected);
        let counted = store
            .count_matching("course", "smith", 10_000)
            .expect("count");
        assert_eq!(
            counted,
            MatchCount {
                count: expected.len() as u64,
                exact: true
            }
        );
        let capped = store.count_matching("course", "smith", 3).expect("count");
        assert_eq!(
            capped,
            MatchCount {
                count: 3,
                exact: false
            }
        );
    }
}
