//! The redb side of a copy between backends: every durable record out of one read snapshot, in
//! batches, and batches written one transaction each.
//!
//! A copy reads the file while nothing else writes it (redb's lock keeps a gateway out), so one
//! read transaction is the snapshot; it holds pages of the file in place, not records in
//! memory. Only the batch being handed on is decoded at a time.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::lists::ClientTables;
use super::{
    ATTEMPTS, AUDIT, CLIENTS, CODES, GRANTS, RedbStore, SESSIONS, SESSIONS_BY_EMAIL, SIGNATURES,
    SIGNINS, SignatureRecord, TOKENS, decode, encode, key,
};
use crate::store::{
    COPY_BATCH, GrantOrder, Inventory, Record, RecordSink, SecretHash, SessionRecord,
    SpentSignature, StoreError, Timestamp,
};

/// Collects records and hands them to the sink [`COPY_BATCH`] at a time.
struct Batches<'a> {
    sink: RecordSink<'a>,
    batch: Vec<Record>,
}

impl<'a> Batches<'a> {
    fn new(sink: RecordSink<'a>) -> Self {
        Batches {
            sink,
            batch: Vec::with_capacity(COPY_BATCH),
        }
    }

    fn push(&mut self, record: Record) -> Result<(), StoreError> {
        self.batch.push(record);
        if self.batch.len() >= COPY_BATCH {
            (self.sink)(std::mem::replace(
                &mut self.batch,
                Vec::with_capacity(COPY_BATCH),
            ))?;
        }
        Ok(())
    }

    fn finish(self) -> Result<(), StoreError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        (self.sink)(self.batch)
    }
}

/// The two parts of a `a \0 b` key.
fn split_key<'k>(table: &'static str, k: &'k str) -> Result<(&'k str, &'k str), StoreError> {
    k.split_once('\0').ok_or_else(|| StoreError::Corrupt {
        table,
        detail: "a key without its separator".into(),
    })
}

fn hash_of(table: &'static str, bytes: &[u8]) -> Result<SecretHash, StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt {
        table,
        detail: format!("a key of {} bytes, not 32", bytes.len()),
    })
}

pub(super) fn export(
    store: &RedbStore,
    now: Timestamp,
    sink: RecordSink<'_>,
) -> Result<(), StoreError> {
    let txn = store.db.begin_read()?;
    let mut out = Batches::new(sink);
    for entry in txn.open_table(CLIENTS)?.iter()? {
        let (k, v) = entry?;
        let (page, _) = split_key("clients", k.value())?;
        out.push(Record::Client {
            page: page.to_owned(),
            client: decode("clients", v.value())?,
        })?;
    }
    for entry in txn.open_table(GRANTS)?.iter()? {
        let (k, v) = entry?;
        let (key_name, order) = split_key("grants", k.value())?;
        out.push(Record::GrantOrder {
            key: key_name.to_owned(),
            order: order.to_owned(),
            record: decode::<GrantOrder>("grants", v.value())?,
        })?;
    }
    for entry in txn.open_table(SIGNATURES)?.iter()? {
        let (k, v) = entry?;
        let record = decode::<SignatureRecord>("signatures", v.value())?;
        // Pruning removes a signature once `until` is past; until then it is refused.
        if record.until >= now {
            out.push(Record::Signature(SpentSignature {
                hash: hash_of("signatures", k.value())?,
                until: record.until,
            }))?;
        }
    }
    for entry in txn.open_table(SESSIONS)?.iter()? {
        let (k, v) = entry?;
        let session = decode::<SessionRecord>("sessions", v.value())?;
        if session.expires_at > now {
            out.push(Record::Session {
                hash: hash_of("sessions", k.value())?,
                session,
            })?;
        }
    }
    for entry in txn.open_table(AUDIT)?.iter()? {
        let (_, v) = entry?;
        out.push(Record::Audit(decode("audit", v.value())?))?;
    }
    out.finish()
}

/// Inserts a record that must be new: a copy never overwrites what the target holds.
fn insert_new<K: redb::Key + 'static>(
    table: &mut redb::Table<'_, K, &'static [u8]>,
    what: &str,
    k: &K::SelfType<'_>,
    value: &[u8],
) -> Result<(), StoreError> {
    if table.insert(k, value)?.is_some() {
        return Err(StoreError::Backend(format!(
            "the target already holds this {what}: was it written to during the copy?"
        )));
    }
    Ok(())
}

pub(super) fn import(store: &RedbStore, batch: &[Record]) -> Result<(), StoreError> {
    store.write(|txn| {
        // Clients go through the list tables' one door, which keeps the search table and the
        // counts true to the list.
        let mut clients = ClientTables::open(txn)?;
        let mut grants = txn.open_table(GRANTS)?;
        let mut signatures = txn.open_table(SIGNATURES)?;
        let mut sessions = txn.open_table(SESSIONS)?;
        let mut by_email = txn.open_multimap_table(SESSIONS_BY_EMAIL)?;
        let mut audit = txn.open_table(AUDIT)?;
        let mut next_audit = audit.last()?.map_or(1, |(k, _)| k.value() + 1);
        for record in batch {
            match record {
                Record::Client { page, client } => {
                    if clients.contains(page, &client.email)? {
                        return Err(StoreError::Backend(format!(
                            "the target already holds this client {} of page {page}: was it \
                             written to during the copy?",
                            client.email
                        )));
                    }
                    clients.put(page, client)?;
                }
                Record::GrantOrder {
                    key: key_name,
                    order,
                    record,
                } => insert_new(
                    &mut grants,
                    &format!("grant order {order} of key {key_name}"),
                    &key(key_name, order).as_str(),
                    &encode(record)?,
                )?,
                Record::Signature(signature) => insert_new(
                    &mut signatures,
                    "spent signature",
                    &signature.hash.as_slice(),
                    &encode(&SignatureRecord {
                        until: signature.until,
                    })?,
                )?,
                Record::Session { hash, session } => {
                    insert_new(
                        &mut sessions,
                        "session",
                        &hash.as_slice(),
                        &encode(session)?,
                    )?;
                    by_email
                        .insert(key(&session.site, &session.email).as_str(), hash.as_slice())?;
                }
                Record::Audit(event) => {
                    audit.insert(next_audit, encode(event)?.as_slice())?;
                    next_audit += 1;
                }
            }
        }
        Ok(())
    })
}

pub(super) fn inventory(store: &RedbStore) -> Result<Inventory, StoreError> {
    let txn = store.db.begin_read()?;
    let mut inventory = Inventory::default();
    for entry in txn.open_table(CLIENTS)?.iter()? {
        let (k, _) = entry?;
        let (page, _) = split_key("clients", k.value())?;
        match inventory.clients.get_mut(page) {
            Some(n) => *n += 1,
            None => {
                inventory.clients.insert(page.to_owned(), 1);
            }
        }
    }
    inventory.audit = txn.open_table(AUDIT)?.len()?;
    inventory.grants = txn.open_table(GRANTS)?.len()?;
    inventory.signatures = txn.open_table(SIGNATURES)?.len()?;
    inventory.sessions = txn.open_table(SESSIONS)?.len()?;
    Ok(inventory)
}

/// Empties one table, which stays in place for later reads.
fn empty<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<(), StoreError> {
    txn.delete_table(def)?;
    txn.open_table(def)?;
    Ok(())
}

pub(super) fn clear(store: &RedbStore) -> Result<(), StoreError> {
    store.write(|txn| {
        empty(txn, CLIENTS)?;
        empty(txn, super::lists::CLIENT_SEARCH)?;
        empty(txn, super::lists::CLIENT_TOTALS)?;
        empty(txn, super::lists::CLIENT_ENDS)?;
        empty(txn, CODES)?;
        empty(txn, ATTEMPTS)?;
        empty(txn, TOKENS)?;
        empty(txn, SESSIONS)?;
        txn.delete_multimap_table(SESSIONS_BY_EMAIL)?;
        txn.open_multimap_table(SESSIONS_BY_EMAIL)?;
        empty(txn, GRANTS)?;
        empty(txn, AUDIT)?;
        empty(txn, SIGNATURES)?;
        empty(txn, SIGNINS)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::super::GrantRecord;
    use super::*;
    use crate::store::{AuditEvent, AuditKind, Client, Source, Store};

    fn client(email: &str) -> Client {
        Client {
            email: email.into(),
            name: "Ann".into(),
            created_at: 5,
            updated_at: 6,
            access_until: Some(700),
            source: Source::Grant,
            last_login: Some(8),
        }
    }

    fn audit(n: i64) -> AuditEvent {
        AuditEvent {
            at: n,
            kind: AuditKind::Login,
            site: None,
            page: None,
            email: None,
            actor: format!("actor {n}"),
            detail: String::new(),
        }
    }

    #[test]
    fn a_grant_order_is_the_same_json_as_the_record_grants_keep() {
        let order = GrantOrder {
            page: "course".into(),
            email: "a@x.org".into(),
            client: client("a@x.org"),
            created: true,
            signin: Some([3; 16]),
        };
        let json = serde_json::to_vec(&order).expect("encode");
        let kept: GrantRecord = serde_json::from_slice(&json).expect("decode as the store's");
        assert_eq!(serde_json::to_vec(&kept).expect("encode"), json);
    }

    #[test]
    fn an_export_comes_in_batches_and_imports_into_an_empty_store_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let source = RedbStore::open(&dir.path().join("a")).expect("open");
        let target = RedbStore::open(&dir.path().join("b")).expect("open");
        let many = COPY_BATCH + 5;
        for i in 0..many {
            let c = client(&format!("{i:05}@x.org"));
            source
                .put_client("course", &c, &audit(i as i64))
                .expect("put");
        }
        let mut batches = Vec::new();
        let mut moved = Inventory::default();
        source
            .export_records(0, &mut |batch| {
                batches.push(batch.len());
                batch.iter().for_each(|r| moved.count(r));
                target.import_records(&batch)
            })
            .expect("export");
        assert!(batches.iter().all(|n| *n <= COPY_BATCH), "{batches:?}");
        assert_eq!(batches.iter().sum::<usize>(), 2 * many);
        assert_eq!(target.inventory().expect("count"), moved);
        assert_eq!(
            target.inventory().expect("count"),
            source.inventory().expect("count")
        );
        let log = target.audit_log(None, 3).expect("log");
        let actors: Vec<_> = log.iter().map(|(_, e)| e.actor.as_str()).collect();
        assert_eq!(actors, ["actor 0", "actor 1", "actor 2"]);
        assert_eq!(
            target.clients("course").expect("list"),
            source.clients("course").expect("list")
        );

        let again = target.import_records(&[Record::Client {
            page: "course".into(),
            client: client("00000@x.org"),
        }]);
        assert!(matches!(again, Err(StoreError::Backend(_))), "{again:?}");
        target.clear().expect("clear");
        assert!(target.inventory().expect("count").is_empty());
        assert_eq!(target.clients("course").expect("list"), []);
    }
}
