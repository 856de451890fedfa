//! `pagegate store copy` with the real binary, between real redb files and a real PostgreSQL
//! server: a store goes to PostgreSQL and comes back with every client field, every audit entry
//! in order, every grant order and spent signature and every live session; a non-empty target
//! is refused and left alone unless forced; a source held by a running gateway is refused with
//! what to do instead.

mod common;

use std::path::{Path, PathBuf};

use common::postgres as pg_server;
use common::process::{GatewayProcess, run};
use common::write_config;
use pagegate::config::{DatabaseUrl, PgTls, PostgresConfig};
use pagegate::store::postgres::PgStore;
use pagegate::store::redb::RedbStore;
use pagegate::store::{
    AuditEvent, AuditKind, Client, ClientSet, CodeRecord, Grant, GrantResult, SessionRecord,
    Source, SpentSignature, Store, Timestamp, TokenRecord,
};

/// A redb gateway's configuration: one site with the pages `course` and `vip`. The secret is
/// the one a PostgreSQL gateway would need, so sessions copied keep working.
fn redb_config(dir: &Path) -> PathBuf {
    write_config(
        dir,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n\
             [auth]\nsecret = \"{}\"\n\n\
             [[site]]\nname = \"school\"\nhosts = [\"school.test\"]\n\
             upstream = \"http://127.0.0.1:9\"\npublic_url = \"http://school.test\"\n\n\
             [[site.page]]\nid = \"course\"\npaths = [\"/course/\"]\n\n\
             [[site.page]]\nid = \"vip\"\npaths = [\"/vip/\"]\n",
            pg_server::SHARED_SECRET
        ),
    )
}

/// The same gateway on a PostgreSQL database.
fn postgres_config(dir: &Path, url: &str) -> PathBuf {
    let path = redb_config(dir);
    let text = std::fs::read_to_string(&path).expect("read config");
    std::fs::write(
        &path,
        format!("{text}\n[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n"),
    )
    .expect("write config");
    path
}

fn open_postgres(url: &str) -> PgStore {
    PgStore::open(&PostgresConfig {
        url: DatabaseUrl(url.to_owned()),
        pool_size: 4,
        connect_timeout: std::time::Duration::from_secs(30),
        statement_timeout: std::time::Duration::from_secs(30),
        tls: PgTls::Disable,
        ca_file: None,
    })
    .expect("open postgres")
}

/// Runs `pagegate store copy --from FROM --to TO [--force]`: (success, stdout, stderr).
fn store_copy(from: &str, to: &str, force: bool) -> (bool, String, String) {
    let mut args = vec!["store", "copy", "--from", from, "--to", to];
    if force {
        args.push("--force");
    }
    let (status, stdout, stderr) = run(&args);
    (status.success(), stdout, stderr)
}

fn now() -> Timestamp {
    pagegate::store::now()
}

const DAY: i64 = 86_400;

fn event(at: Timestamp, kind: AuditKind, email: &str, actor: &str) -> AuditEvent {
    AuditEvent {
        at,
        kind,
        site: Some("school".into()),
        page: Some("course".into()),
        email: Some(email.into()),
        actor: actor.into(),
        detail: format!("entry at {at}"),
    }
}

/// A grant of `course` to buyer@x.org under order o-1 of the key `shop`, signed with the
/// signature `[signature; 32]`.
fn order_grant(signature: u8, now: Timestamp) -> Grant<'static> {
    Grant {
        page: "course",
        email: "buyer@x.org",
        name: Some("Buyer"),
        access_until: Some(now + 30 * DAY),
        order: Some(("shop", "o-1")),
        signature: Some(SpentSignature {
            hash: [signature; 32],
            until: now + DAY,
        }),
        source: Source::Grant,
        signin: None,
        now,
    }
}

/// A session hash of a live session and of an expired one.
const LIVE_SESSION: [u8; 32] = [7; 32];
const EXPIRED_SESSION: [u8; 32] = [8; 32];
/// The link token of a pending code.
const PENDING_TOKEN: [u8; 32] = [9; 32];

/// Fills a store the way a season of use does: clients on two pages with every field set, a
/// shop's grant with its order and signature, a stale signature, a live and an expired session,
/// a pending code, and audit entries whose times are not in the order they were written.
fn fill(store: &dyn Store) {
    let now = now();
    let ann = Client {
        email: "ann@x.org".into(),
        name: "Ann Example".into(),
        created_at: now - 90 * DAY,
        updated_at: now - 10 * DAY,
        access_until: Some(now + 60 * DAY),
        source: Source::Import,
        last_login: Some(now - DAY),
    };
    let bob = Client {
        email: "bob@x.org".into(),
        name: String::new(),
        created_at: now - 50 * DAY,
        updated_at: now - 50 * DAY,
        access_until: None,
        source: Source::Cli,
        last_login: None,
    };
    let vip = Client {
        email: "ann@x.org".into(),
        name: "Ann".into(),
        created_at: now - 5 * DAY,
        updated_at: now - 4 * DAY,
        access_until: Some(now - DAY),
        source: Source::Admin,
        last_login: Some(now - 5 * DAY),
    };
    for (page, client, at) in [
        ("course", &ann, now - 90 * DAY),
        ("course", &bob, now - 50 * DAY),
        ("vip", &vip, now - 95 * DAY),
    ] {
        let ev = event(at, AuditKind::ClientAdded, &client.email, "cli");
        store.put_client(page, client, &ev).expect("put client");
    }
    let granted = store
        .grant(
            &order_grant(1, now),
            &event(now - 3, AuditKind::Grant, "buyer@x.org", "shop"),
        )
        .expect("grant");
    assert!(matches!(
        granted,
        GrantResult::Applied { created: true, .. }
    ));
    let stale = Grant {
        order: None,
        signature: Some(SpentSignature {
            hash: [2; 32],
            until: now - DAY,
        }),
        ..order_grant(0, now)
    };
    store
        .grant(
            &stale,
            &event(now - 2, AuditKind::Grant, "buyer@x.org", "shop"),
        )
        .expect("grant with a stale signature");
    for (hash, expires_at) in [(LIVE_SESSION, now + DAY), (EXPIRED_SESSION, now - 60)] {
        let session = SessionRecord {
            site: "school".into(),
            email: "ann@x.org".into(),
            created_at: now - 3600,
            expires_at,
        };
        let ev = event(now - 1, AuditKind::Login, "ann@x.org", "visitor");
        store
            .create_session(&hash, &session, &["course".into()], &ev)
            .expect("session");
    }
    let code = CodeRecord {
        code_hash: [3; 32],
        token_hash: PENDING_TOKEN,
        page: "course".into(),
        next: "/course/".into(),
        issued_at: now,
        expires_at: now + 600,
        browser: None,
    };
    let link = TokenRecord {
        site: "school".into(),
        email: "bob@x.org".into(),
        page: "course".into(),
        next: "/course/".into(),
        expires_at: now + 600,
        browser: None,
    };
    store
        .issue_code("school", "bob@x.org", &code, &link)
        .expect("code");
}

/// Every client of both pages, with every field.
fn clients(store: &dyn Store) -> Vec<(String, Client)> {
    ["course", "vip"]
        .into_iter()
        .flat_map(|page| {
            store
                .clients(page)
                .expect("list")
                .into_iter()
                .map(move |c| (page.to_owned(), c))
        })
        .collect()
}

/// What a large list is read by: the counts of both pages (total, active) and a search that
/// matches a name only. A copy writes clients by its own path, so these must come along.
fn list_reads(store: &dyn Store) -> Vec<(u64, u64, Vec<String>)> {
    let now = now();
    ["course", "vip"]
        .into_iter()
        .map(|page| {
            let counts = store.client_counts(page, now).expect("counts");
            let found = store
                .client_page(page, None, 10, Some("EXAMPLE"))
                .expect("search")
                .into_iter()
                .map(|c| c.email)
                .collect();
            (counts.total, counts.active, found)
        })
        .collect()
}

/// The audit log's entries, oldest first, without the store's own ids.
fn audit(store: &dyn Store) -> Vec<AuditEvent> {
    store
        .audit_log(None, 10_000)
        .expect("audit log")
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

#[test]
fn a_store_goes_to_postgres_and_back_with_every_record_and_grant_orders_still_replay() {
    let origin_dir = tempfile::tempdir().expect("temp dir");
    let origin = redb_config(origin_dir.path());
    let (expected_clients, expected_audit) = {
        let store = RedbStore::open(&origin_dir.path().join("data")).expect("open redb");
        fill(&store);
        (clients(&store), audit(&store))
    };
    assert_eq!(
        expected_clients.len(),
        4,
        "ann and bob on course, the buyer, ann on vip"
    );
    let expected_reads = vec![(3, 3, vec!["ann@x.org".to_owned()]), (1, 0, Vec::new())];

    // To PostgreSQL, named by a gateway's configuration file.
    let url = pg_server::fresh_database();
    let shared_dir = tempfile::tempdir().expect("temp dir");
    let shared = postgres_config(shared_dir.path(), &url);
    let (ok, out, err) = store_copy(
        &origin.display().to_string(),
        &shared.display().to_string(),
        false,
    );
    assert!(ok, "copy to PostgreSQL failed: {err}\n{out}");
    assert!(out.contains("clients: 4 (course: 3, vip: 1)"), "{out}");
    assert!(out.contains("grant orders: 1\n"), "{out}");
    assert!(
        out.contains("spent signatures: 1\n"),
        "the stale one stays: {out}"
    );
    assert!(
        out.contains("sessions: 1\n"),
        "the expired one stays: {out}"
    );
    assert!(
        out.contains(&format!("audit entries: {}\n", expected_audit.len())),
        "{out}"
    );
    assert!(out.contains("verified"), "{out}");
    {
        let pg = open_postgres(&url);
        assert_eq!(clients(&pg), expected_clients);
        assert_eq!(audit(&pg), expected_audit);
        assert_eq!(
            list_reads(&pg),
            expected_reads,
            "counts and search on PostgreSQL"
        );
    }

    // And back, into a new gateway's data directory, from the bare URL.
    let back_dir = tempfile::tempdir().expect("temp dir");
    let back = redb_config(back_dir.path());
    let (ok, out, err) = store_copy(&url, &back.display().to_string(), false);
    assert!(ok, "copy back to redb failed: {err}\n{out}");
    assert!(out.contains("clients: 4 (course: 3, vip: 1)"), "{out}");
    assert!(out.contains("verified"), "{out}");

    let store = RedbStore::open(&back_dir.path().join("data")).expect("open the copy");
    assert_eq!(
        clients(&store),
        expected_clients,
        "every field of every client"
    );
    assert_eq!(audit(&store), expected_audit, "every entry, in order");
    assert_eq!(
        list_reads(&store),
        expected_reads,
        "counts and search back on redb"
    );

    // The shop retries its order after the move: the first answer, nothing applied twice.
    let retry = store
        .grant(
            &order_grant(4, now()),
            &event(now(), AuditKind::Grant, "buyer@x.org", "shop"),
        )
        .expect("retry");
    let first = expected_clients
        .iter()
        .find(|(_, c)| c.email == "buyer@x.org")
        .map(|(_, c)| c.clone());
    assert!(
        matches!(&retry, GrantResult::Replayed { created: true, client, .. } if Some(client) == first.as_ref()),
        "{retry:?}"
    );
    // The signed request replayed as it was is still refused.
    let replayed = store
        .grant(
            &order_grant(1, now()),
            &event(now(), AuditKind::Grant, "buyer@x.org", "shop"),
        )
        .expect("replayed request");
    assert_eq!(replayed, GrantResult::SignatureSpent);

    // Ann is still signed in; the expired session and the pending code stayed behind.
    let access = store
        .session_access(&LIVE_SESSION, &["course"])
        .expect("session check")
        .expect("the live session was copied");
    assert_eq!(
        access.clients[0].as_ref().map(|c| c.email.as_str()),
        Some("ann@x.org")
    );
    assert!(
        store
            .session_access(&EXPIRED_SESSION, &["course"])
            .expect("check")
            .is_none()
    );
    assert!(
        store
            .peek_token(&PENDING_TOKEN, now())
            .expect("peek")
            .is_none()
    );
}

#[test]
fn a_non_empty_target_is_refused_and_left_as_it_was_unless_forced() {
    let origin_dir = tempfile::tempdir().expect("temp dir");
    let origin = redb_config(origin_dir.path());
    let expected = {
        let store = RedbStore::open(&origin_dir.path().join("data")).expect("open redb");
        fill(&store);
        clients(&store)
    };
    let url = pg_server::fresh_database();
    let before = {
        let pg = open_postgres(&url);
        let old = Client {
            email: "old@x.org".into(),
            name: "Old".into(),
            created_at: 1,
            updated_at: 2,
            access_until: None,
            source: Source::Admin,
            last_login: None,
        };
        let ev = event(1, AuditKind::ClientAdded, "old@x.org", "admin@x.org");
        pg.put_client("course", &old, &ev).expect("put");
        (clients(&pg), audit(&pg))
    };

    let (ok, out, err) = store_copy(&origin.display().to_string(), &url, false);
    assert!(!ok, "a non-empty target was accepted: {out}");
    assert!(err.contains("is not empty"), "{err}");
    assert!(err.contains("1 client, 1 audit entry"), "{err}");
    assert!(err.contains("--force"), "{err}");
    {
        let pg = open_postgres(&url);
        assert_eq!(
            (clients(&pg), audit(&pg)),
            before,
            "the target is unchanged"
        );
    }

    let (ok, out, err) = store_copy(&origin.display().to_string(), &url, true);
    assert!(ok, "the forced copy failed: {err}\n{out}");
    assert!(out.contains("emptied the PostgreSQL database"), "{out}");
    assert!(out.contains("verified"), "{out}");
    let pg = open_postgres(&url);
    assert_eq!(clients(&pg), expected, "the target's own client is gone");
}

#[test]
fn a_source_held_by_a_running_gateway_is_refused_and_its_backup_copies_instead() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = redb_config(dir.path());
    let expected = {
        let store = RedbStore::open(&dir.path().join("data")).expect("open redb");
        fill(&store);
        clients(&store)
    };
    let mut gateway = GatewayProcess::serve(&config);
    let url = pg_server::fresh_database();

    let (ok, out, err) = store_copy(&config.display().to_string(), &url, false);
    assert!(!ok, "a database in use was copied: {out}");
    assert!(err.contains("in use by a running gateway"), "{err}");
    assert!(err.contains("stop the gateway first"), "{err}");
    assert!(err.contains("pagegate backup"), "{err}");
    assert!(
        open_postgres(&url).inventory().expect("count").is_empty(),
        "nothing reached the target"
    );

    // As the message says: a backup, taken through the running gateway, copies.
    let backup = dir.path().join("moving.redb");
    let backup_arg = backup.display().to_string();
    let (status, out, err) = run(&[
        "backup",
        "--config",
        &config.display().to_string(),
        &backup_arg,
    ]);
    assert!(status.success(), "backup failed: {err}\n{out}");
    let (ok, out, err) = store_copy(&backup_arg, &url, false);
    assert!(ok, "copy from the backup failed: {err}\n{out}");
    assert!(out.contains("verified"), "{out}");
    gateway.stop();
    assert_eq!(clients(&open_postgres(&url)), expected);
}

#[test]
fn a_store_is_not_copied_onto_itself() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = redb_config(dir.path());
    RedbStore::open(&dir.path().join("data")).expect("create the database");
    let config_arg = config.display().to_string();
    let file = dir.path().join("data").join("pagegate.redb");
    let (ok, _, err) = store_copy(&config_arg, &file.display().to_string(), true);
    assert!(!ok);
    assert!(err.contains("the same database"), "{err}");

    let url = pg_server::fresh_database();
    // The same database spelt another way.
    let alias = url.replacen("postgres://", "postgresql://", 1);
    let (ok, _, err) = store_copy(&url, &alias, true);
    assert!(!ok);
    assert!(err.contains("the same database"), "{err}");
}

#[test]
fn a_store_larger_than_a_batch_moves_whole_and_in_order() {
    let origin_dir = tempfile::tempdir().expect("temp dir");
    let origin = redb_config(origin_dir.path());
    // Two pages whose boundary falls inside a batch, and more audit entries than two batches.
    let (expected_clients, expected_audit) = {
        let store = RedbStore::open(&origin_dir.path().join("data")).expect("open redb");
        for (page, count) in [("course", 1_500), ("vip", 700)] {
            let emails: Vec<String> = (0..count).map(|i| format!("p{i:05}@x.org")).collect();
            let rows: Vec<ClientSet<'_>> = emails
                .iter()
                .map(|email| ClientSet {
                    email,
                    name: Some("Member"),
                    access_until: Some(Some(now() + DAY)),
                    source: Source::Import,
                    now: now(),
                })
                .collect();
            store
                .set_clients(page, &rows, &|c, _| {
                    event(now(), AuditKind::ClientAdded, &c.email, "import")
                })
                .expect("import");
        }
        (clients(&store), audit(&store))
    };
    assert_eq!(expected_clients.len(), 2_200);

    let url = pg_server::fresh_database();
    let (ok, out, err) = store_copy(&origin.display().to_string(), &url, false);
    assert!(ok, "copy to PostgreSQL failed: {err}\n{out}");
    assert!(
        out.contains("clients: 2200 (course: 1500, vip: 700)"),
        "{out}"
    );
    assert!(out.contains("audit entries: 2200\n"), "{out}");

    let back_dir = tempfile::tempdir().expect("temp dir");
    let back = back_dir.path().join("back.redb");
    let (ok, out, err) = store_copy(&url, &back.display().to_string(), false);
    assert!(ok, "copy back failed: {err}\n{out}");
    assert!(out.contains("verified"), "{out}");
    let store = RedbStore::open_file(&back).expect("open the copy");
    assert_eq!(clients(&store), expected_clients);
    assert_eq!(audit(&store), expected_audit);
}
