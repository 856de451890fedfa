//! The same store scenarios against both backends: the embedded redb file (in a temporary
//! folder) and PostgreSQL (a fresh database on this binary's throwaway server). Each scenario is
//! written once, against `&dyn Store`; the macro at the end runs it on each backend.

mod common;

use std::sync::Barrier;
use std::time::Duration;

use common::postgres as pg_server;
use pagegate::config::{DatabaseUrl, PgTls, PostgresConfig};
use pagegate::store::postgres::PgStore;
use pagegate::store::redb::RedbStore;
use pagegate::store::{
    AttemptPolicy, AuditEvent, AuditKind, Client, ClientEdit, ClientSet, CodeCheck, CodeRecord,
    Grant, GrantResult, Rate, Retention, SecretHash, SessionRecord, SigninNonce, SigninRecord,
    SigninRequest, Source, SpentSignature, Store, StoreError, Timestamp, TokenRecord,
    admin_namespace,
};

/// A backend under test: opens the same data again after the last store is dropped.
struct Backend {
    open: Box<dyn Fn() -> Box<dyn Store>>,
    /// Keeps the redb folder for the test's length.
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    fn redb() -> Backend {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_path_buf();
        Backend {
            open: Box::new(move || Box::new(RedbStore::open(&path).expect("open redb"))),
            _dir: Some(dir),
        }
    }

    fn postgres() -> Backend {
        let config = pg_config(pg_server::fresh_database());
        Backend {
            open: Box::new(move || Box::new(PgStore::open(&config).expect("open postgres"))),
            _dir: None,
        }
    }

    fn open(&self) -> Box<dyn Store> {
        (self.open)()
    }
}

fn pg_config(url: String) -> PostgresConfig {
    PostgresConfig {
        url: DatabaseUrl(url),
        pool_size: 8,
        connect_timeout: Duration::from_secs(30),
        statement_timeout: Duration::from_secs(30),
        tls: PgTls::Disable,
        ca_file: None,
    }
}

const POLICY: AttemptPolicy = AttemptPolicy {
    max_attempts: 5,
    max_attempts_per_email: 8,
    window: 3600,
};

/// The browser that asks for codes in these tests, and a stranger's.
const MINE: SecretHash = [1; 32];
const STRANGER: SecretHash = [2; 32];

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

fn add(store: &dyn Store, page: &str, email: &str, until: Option<Timestamp>) {
    store
        .put_client(page, &client(email, until), &event(AuditKind::ClientAdded))
        .expect("put");
}

fn emails(store: &dyn Store, page: &str) -> Vec<String> {
    store
        .clients(page)
        .expect("list")
        .into_iter()
        .map(|c| c.email)
        .collect()
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

fn sign_in(store: &dyn Store, n: u8, session: &SessionRecord, pages: &[String]) {
    store
        .create_session(&[n; 32], session, pages, &event(AuditKind::Login))
        .expect("session");
}

/// a@x.org's code `[hash; 32]` with its link token `[token; 32]`, asked for in `browser`.
fn issue_in(store: &dyn Store, browser: SecretHash, hash: u8, token: u8, expires_at: Timestamp) {
    let code = CodeRecord {
        code_hash: [hash; 32],
        token_hash: [token; 32],
        page: "course".into(),
        next: "/course/".into(),
        issued_at: 0,
        expires_at,
        browser: Some(browser),
    };
    let link = TokenRecord {
        site: "s".into(),
        email: "a@x.org".into(),
        page: "course".into(),
        next: "/course/".into(),
        expires_at,
        browser: Some(browser),
    };
    store
        .issue_code("s", "a@x.org", &code, &link)
        .expect("issue");
}

fn issue(store: &dyn Store, hash: u8, token: u8, expires_at: Timestamp) {
    issue_in(store, MINE, hash, token, expires_at);
}

fn check_in(store: &dyn Store, browser: SecretHash, guess: u8, now: Timestamp) -> CodeCheck {
    store
        .check_code("s", "a@x.org", &[browser], now, POLICY, &|c| {
            c.code_hash == [guess; 32]
        })
        .expect("check")
}

fn check(store: &dyn Store, guess: u8, now: Timestamp) -> CodeCheck {
    check_in(store, MINE, guess, now)
}

fn locked_in(store: &dyn Store, browser: SecretHash, now: Timestamp) -> bool {
    store
        .is_locked("s", "a@x.org", &[browser], now, POLICY)
        .expect("lock state")
}

fn kinds(store: &dyn Store) -> Vec<AuditKind> {
    store
        .audit_log(None, 1000)
        .expect("log")
        .into_iter()
        .map(|(_, e)| e.kind)
        .collect()
}

// ---- clients ----------------------------------------------------------------------------

fn clients_are_listed_per_page_in_email_order_and_survive_reopening(backend: &Backend) {
    {
        let store = backend.open();
        add(&*store, "course", "b@x.org", None);
        add(&*store, "course", "a@x.org", None);
        add(&*store, "course", "B@x.org", None);
        add(&*store, "course2", "c@x.org", None);
    }
    let store = backend.open();
    assert_eq!(
        emails(&*store, "course"),
        ["B@x.org", "a@x.org", "b@x.org"],
        "byte order"
    );
    assert_eq!(
        store.client("course2", "c@x.org").expect("read"),
        Some(client("c@x.org", None))
    );
    assert!(
        store
            .remove_client("course", "a@x.org", &event(AuditKind::ClientRemoved))
            .expect("remove")
    );
    assert!(
        !store
            .remove_client("course", "a@x.org", &event(AuditKind::ClientRemoved))
            .expect("remove"),
        "already gone"
    );
    assert_eq!(store.client("course", "a@x.org").expect("read"), None);
    assert_eq!(kinds(&*store).len(), 5, "four additions and one removal");
}

fn edits_are_atomic_and_renames_never_overwrite(backend: &Backend) {
    let store = backend.open();
    let ev = event(AuditKind::ClientUpdated);
    for email in ["a@x.org", "b@x.org"] {
        store
            .put_client("course", &client(email, Some(100)), &ev)
            .expect("put");
    }
    let before = kinds(&*store).len();
    let rename = |to: &'static str| {
        move |c: &Client| {
            Some(Client {
                email: to.to_owned(),
                name: "Renamed".into(),
                ..c.clone()
            })
        }
    };
    let audit = |_: &Client| ev.clone();
    assert_eq!(
        store
            .edit_client("course", "a@x.org", &rename("b@x.org"), &audit)
            .expect("edit"),
        ClientEdit::EmailTaken
    );
    assert_eq!(
        store
            .edit_client("course", "z@x.org", &rename("y@x.org"), &audit)
            .expect("edit"),
        ClientEdit::Missing
    );
    assert!(matches!(
        store
            .edit_client("course", "a@x.org", &|_| None, &audit)
            .expect("edit"),
        ClientEdit::Unchanged(_)
    ));
    assert_eq!(kinds(&*store).len(), before, "nothing written");
    let moved = store
        .edit_client("course", "a@x.org", &rename("c@x.org"), &audit)
        .expect("edit");
    assert!(matches!(moved, ClientEdit::Edited(ref c) if c.email == "c@x.org"));
    assert_eq!(emails(&*store, "course"), ["b@x.org", "c@x.org"]);
    assert_eq!(kinds(&*store).len(), before + 1);
}

fn set_clients_replaces_fields_and_keeps_history(backend: &Backend) {
    let store = backend.open();
    let mut old = client("a@x.org", Some(100));
    old.last_login = Some(7);
    store
        .put_client("course", &old, &event(AuditKind::ClientAdded))
        .expect("put");
    let row = |email, name, until| ClientSet {
        email,
        name,
        access_until: until,
        source: Source::Import,
        now: 50,
    };
    let out = store
        .set_clients(
            "course",
            &[
                row("a@x.org", None, Some(Some(60))),
                row("b@x.org", Some(" Bea "), None),
                row("b@x.org", None, Some(Some(90))),
            ],
            &|c, created| AuditEvent {
                email: Some(c.email.clone()),
                ..event(if created {
                    AuditKind::ClientAdded
                } else {
                    AuditKind::ClientUpdated
                })
            },
        )
        .expect("set");
    let created: Vec<bool> = out.iter().map(|(_, c)| *c).collect();
    assert_eq!(created, [false, true, false]);
    let a = store.client("course", "a@x.org").expect("read").expect("a");
    assert_eq!(
        (a.access_until, a.last_login, a.updated_at, a.name.as_str()),
        (Some(60), Some(7), 50, "Ann"),
        "a set may shorten access; history is kept"
    );
    let b = store.client("course", "b@x.org").expect("read").expect("b");
    assert_eq!(
        (b.name.as_str(), b.access_until, b.source),
        ("Bea", Some(90), Source::Import)
    );
    assert_eq!(kinds(&*store).len(), 4);
}

// ---- codes and links --------------------------------------------------------------------

fn a_right_code_is_accepted_once_and_its_link_dies_with_it(backend: &Backend) {
    let store = backend.open();
    issue(&*store, 7, 8, 100);
    assert!(matches!(check(&*store, 7, 10), CodeCheck::Accepted(_)));
    assert_eq!(
        check(&*store, 7, 10),
        CodeCheck::Rejected { attempts_left: 4 }
    );
    assert_eq!(store.peek_token(&[8; 32], 10).expect("peek"), None);
    issue(&*store, 7, 9, 100);
    assert_eq!(
        check(&*store, 7, 100),
        CodeCheck::Rejected { attempts_left: 3 },
        "expired at 100"
    );
}

fn the_sixth_try_fails_even_when_right_and_a_new_code_does_not_reset_the_count(backend: &Backend) {
    let store = backend.open();
    issue(&*store, 7, 8, 1000);
    for left in (2..=4).rev() {
        assert_eq!(
            check(&*store, 1, 10),
            CodeCheck::Rejected {
                attempts_left: left
            }
        );
    }
    issue(&*store, 9, 10, 1000);
    assert_eq!(
        store.peek_token(&[8; 32], 10).expect("peek"),
        None,
        "a new code retires the old link"
    );
    assert_eq!(
        check(&*store, 1, 10),
        CodeCheck::Rejected { attempts_left: 1 }
    );
    assert_eq!(check(&*store, 1, 10), CodeCheck::Locked);
    assert_eq!(check(&*store, 9, 10), CodeCheck::Locked, "right, but late");
    assert_eq!(
        store.peek_token(&[10; 32], 10).expect("peek"),
        None,
        "the link died with the last allowed failure"
    );
    assert!(locked_in(&*store, MINE, 10));
    assert!(!locked_in(&*store, MINE, 10 + 3600), "window passed");
}

fn strangers_lock_out_only_their_own_browser_and_the_cap_per_email_holds(backend: &Backend) {
    let store = backend.open();
    issue_in(&*store, STRANGER, 7, 8, 1000);
    for _ in 0..4 {
        assert!(matches!(
            check_in(&*store, STRANGER, 1, 10),
            CodeCheck::Rejected { .. }
        ));
    }
    assert_eq!(check_in(&*store, STRANGER, 1, 10), CodeCheck::Locked);
    assert!(locked_in(&*store, STRANGER, 10));
    assert!(!locked_in(&*store, MINE, 10));
    issue(&*store, 9, 10, 1000);
    assert!(
        matches!(
            check_in(&*store, [3; 32], 9, 10),
            CodeCheck::Rejected { .. }
        ),
        "a code works only in the browser that asked"
    );
    assert!(matches!(check(&*store, 9, 10), CodeCheck::Accepted(_)));
    // Five of eight wrong tries over all browsers were counted while a code was pending; three
    // more from a third browser with its own code reach the cap for everyone.
    issue_in(&*store, [4; 32], 5, 11, 1000);
    for _ in 0..2 {
        assert!(matches!(
            check_in(&*store, [4; 32], 1, 10),
            CodeCheck::Rejected { .. }
        ));
    }
    assert_eq!(check_in(&*store, [4; 32], 1, 10), CodeCheck::Locked);
    assert!(
        locked_in(&*store, MINE, 10),
        "the cap holds for every browser"
    );
}

fn wrong_tries_at_once_from_many_threads_meet_the_cap_exactly(backend: &Backend) {
    let store = backend.open();
    issue(&*store, 7, 8, 1000);
    let tries = 16;
    let barrier = Barrier::new(tries);
    let answers: Vec<CodeCheck> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..tries)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    check(&*store, 1, 10)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut left: Vec<u32> = answers
        .iter()
        .filter_map(|a| match a {
            CodeCheck::Rejected { attempts_left } => Some(*attempts_left),
            _ => None,
        })
        .collect();
    left.sort_unstable();
    assert_eq!(left, [1, 2, 3, 4], "each count answered once: {answers:?}");
    assert_eq!(
        answers.iter().filter(|a| **a == CodeCheck::Locked).count(),
        tries - 4
    );
    assert_eq!(check(&*store, 7, 10), CodeCheck::Locked);
}

fn a_link_token_is_spent_once_even_when_taken_at_once(backend: &Backend) {
    let store = backend.open();
    issue(&*store, 7, 8, 100);
    assert!(store.peek_token(&[8; 32], 10).expect("peek").is_some());
    assert_eq!(
        store.peek_token(&[8; 32], 100).expect("peek"),
        None,
        "expired"
    );
    let takers = 8;
    let barrier = Barrier::new(takers);
    let taken = std::thread::scope(|s| {
        let handles: Vec<_> = (0..takers)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    store.take_token(&[8; 32], 10).expect("take")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .filter(Option::is_some)
            .count()
    });
    assert_eq!(taken, 1);
    assert_eq!(
        check(&*store, 7, 10),
        CodeCheck::Rejected { attempts_left: 4 },
        "the code went with its link"
    );
}

// ---- sessions ---------------------------------------------------------------------------

fn sessions_see_current_client_records_and_can_be_revoked(backend: &Backend) {
    let store = backend.open();
    add(&*store, "course", "a@x.org", Some(50));
    sign_in(&*store, 1, &session(), &["course".into()]);
    sign_in(&*store, 2, &session(), &["course".into()]);
    let access = store
        .session_access(&[1; 32], &["course", "other"])
        .expect("read")
        .expect("session");
    assert_eq!(access.session, session());
    assert_eq!(access.clients.len(), 2);
    let course = access.clients[0].as_ref().expect("client");
    assert_eq!(course.last_login, Some(10));
    assert!(access.clients[1].is_none());
    store
        .put_client(
            "course",
            &client("a@x.org", Some(80)),
            &event(AuditKind::ClientUpdated),
        )
        .expect("put");
    let read = |n: u8, pages: &[&str]| store.session_access(&[n; 32], pages).expect("read");
    assert_eq!(
        read(1, &["course"]).expect("session").clients[0]
            .as_ref()
            .and_then(|c| c.access_until),
        Some(80),
        "the next check sees the change"
    );
    let elsewhere = SessionRecord {
        site: "t".into(),
        ..session()
    };
    sign_in(&*store, 3, &elsewhere, &[]);
    let audited = kinds(&*store).len();
    let revoke = |page: &str| {
        store
            .revoke_sessions("s", page, "a@x.org", &event(AuditKind::SessionsRevoked))
            .expect("revoke")
    };
    assert_eq!(revoke("other"), None, "not a client of that page");
    assert_eq!(kinds(&*store).len(), audited, "nothing recorded");
    assert!(read(1, &[]).is_some(), "nothing ended");
    assert_eq!(revoke("course"), Some(2));
    assert!(read(1, &["course"]).is_none());
    assert!(read(2, &["course"]).is_none());
    assert!(read(3, &[]).is_some(), "the session on another site stays");
    store
        .delete_session(&[3; 32], Some(&event(AuditKind::Logout)))
        .expect("logout");
    assert!(read(3, &[]).is_none());
    assert_eq!(kinds(&*store).last(), Some(&AuditKind::Logout));
}

fn live_sessions_are_counted_per_site_and_admin_namespace(backend: &Backend) {
    let store = backend.open();
    let admin = admin_namespace("a");
    for (hash, site, expires_at) in [
        (1, "a", 100),
        (2, "a", 200),
        (3, "b", 200),
        (4, "a", 50),
        (5, admin.as_str(), 200),
    ] {
        let session = SessionRecord {
            site: site.into(),
            email: format!("{hash}@x.org"),
            created_at: 10,
            expires_at,
        };
        sign_in(&*store, hash, &session, &[]);
    }
    assert_eq!(
        store.count_active_sessions(60).expect("count"),
        vec![
            ("a".to_string(), 2),
            (admin.clone(), 1),
            ("b".to_string(), 1)
        ]
    );
    assert_eq!(
        store
            .session_access(&[5; 32], &[])
            .expect("read")
            .expect("admin session")
            .session
            .site,
        admin
    );
    assert!(store.count_active_sessions(200).expect("count").is_empty());
}

fn every_change_to_access_moves_the_change_count_and_reads_do_not(backend: &Backend) {
    let store = backend.open();
    let start = store.changes();
    add(&*store, "course", "a@x.org", None);
    assert!(
        store.changes() > start,
        "adding a client did not move the change count"
    );
    // A sign-in adds a session and changes no one's access: it need not move the count (the
    // PostgreSQL store does not, so other gateways keep their answers).
    sign_in(&*store, 1, &session(), &["course".into()]);
    let mut last = store.changes();
    let mut moved = |what: &str| {
        let now = store.changes();
        assert!(now > last, "{what} did not move the change count");
        last = now;
    };
    store
        .delete_session(&[1; 32], Some(&event(AuditKind::Logout)))
        .expect("logout");
    moved("a sign-out");
    sign_in(&*store, 2, &session(), &["course".into()]);
    store
        .revoke_sessions("s", "course", "a@x.org", &event(AuditKind::SessionsRevoked))
        .expect("revoke");
    moved("a revocation");
    store
        .remove_client("course", "a@x.org", &event(AuditKind::ClientRemoved))
        .expect("remove");
    moved("a removal");
    let before = store.changes();
    store.client("course", "a@x.org").expect("read");
    store.session_access(&[2; 32], &["course"]).expect("read");
    assert_eq!(store.changes(), before, "a read moved the change count");
}

// ---- grants and sign-in links -----------------------------------------------------------

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

fn grants_extend_access_and_orders_apply_once(backend: &Backend) {
    let store = backend.open();
    let ev = event(AuditKind::Grant);
    let first = store
        .grant(&grant(Some(("shop", "o-1")), Some(100), "a@x.org"), &ev)
        .expect("grant");
    assert!(matches!(first, GrantResult::Applied { created: true, .. }));
    let retry = store
        .grant(&grant(Some(("shop", "o-1")), Some(100), "a@x.org"), &ev)
        .expect("retry");
    assert!(
        matches!(retry, GrantResult::Replayed { created: true, ref client, .. } if client.access_until == Some(100))
    );
    let other_key = store
        .grant(&grant(Some(("shop2", "o-1")), Some(50), "a@x.org"), &ev)
        .expect("grant");
    assert!(
        matches!(other_key, GrantResult::Applied { created: false, ref client, .. } if client.access_until == Some(100)),
        "a later end wins"
    );
    let unlimited = store
        .grant(&grant(None, None, "a@x.org"), &ev)
        .expect("grant");
    assert!(
        matches!(unlimited, GrantResult::Applied { ref client, .. } if client.access_until.is_none())
    );
    let conflict = store
        .grant(&grant(Some(("shop", "o-1")), Some(100), "b@x.org"), &ev)
        .expect("grant");
    assert_eq!(conflict, GrantResult::Conflict);
    assert_eq!(emails(&*store, "course"), ["a@x.org"]);
    assert_eq!(kinds(&*store).len(), 3, "one entry per applied grant");
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

fn a_signature_is_spent_by_its_grant_once_and_for_good(backend: &Backend) {
    let ev = event(AuditKind::Grant);
    {
        let store = backend.open();
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
            GrantResult::SignatureSpent,
            "a replayed order spends its signature too"
        );
        let conflict = store
            .grant(&signed(4, order, "b@x.org"), &ev)
            .expect("conflict");
        assert_eq!(conflict, GrantResult::Conflict);
        let fresh = store
            .grant(&signed(4, None, "b@x.org"), &ev)
            .expect("grant");
        assert!(
            matches!(fresh, GrantResult::Applied { .. }),
            "a conflict spent nothing: {fresh:?}"
        );
    }
    let store = backend.open();
    for n in 1..=4 {
        assert_eq!(
            store
                .grant(&signed(n, None, "c@x.org"), &ev)
                .expect("after reopening"),
            GrantResult::SignatureSpent,
            "signature {n}"
        );
    }
    assert_eq!(emails(&*store, "course"), ["a@x.org", "b@x.org"]);
    let kept = store
        .prune(400, POLICY, Retention::default())
        .expect("prune");
    assert_eq!(kept.signatures, 0, "fresh through its last second");
    let pruned = store
        .prune(401, POLICY, Retention::default())
        .expect("prune");
    assert_eq!(pruned.signatures, 4);
}

fn one_signature_sent_at_once_from_many_threads_is_applied_once(backend: &Backend) {
    let store = backend.open();
    let ev = event(AuditKind::Grant);
    let senders = 8;
    let barrier = Barrier::new(senders);
    let answers: Vec<GrantResult> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..senders)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    store
                        .grant(&signed(9, Some(("shop", "o-9")), "a@x.org"), &ev)
                        .expect("grant")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let applied = answers
        .iter()
        .filter(|a| matches!(a, GrantResult::Applied { .. }))
        .count();
    let spent = answers
        .iter()
        .filter(|a| **a == GrantResult::SignatureSpent)
        .count();
    assert_eq!((applied, spent), (1, senders - 1), "{answers:?}");
    assert_eq!(kinds(&*store), [AuditKind::Grant]);
}

fn link_hash(nonce: &SigninNonce) -> SecretHash {
    let mut hash = [0; 32];
    hash[..16].copy_from_slice(nonce);
    hash
}

fn hashes(nonce: &SigninNonce) -> Vec<SecretHash> {
    vec![link_hash(nonce)]
}

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

fn a_sign_in_link_is_issued_with_its_grant_handed_out_again_while_live_and_spent_once(
    backend: &Backend,
) {
    let store = backend.open();
    let with_link = |now: Timestamp, n: u8| {
        let record = link(now + 100);
        let audit = event(AuditKind::SigninLinkIssued);
        let g = Grant {
            now,
            signin: Some(SigninRequest {
                record: &record,
                nonce: [n; 16],
                hashes: &hashes,
                audit: &audit,
            }),
            ..grant(Some(("shop", "o-1")), None, "a@x.org")
        };
        match store.grant(&g, &event(AuditKind::Grant)).expect("grant") {
            GrantResult::Applied { signin, .. } | GrantResult::Replayed { signin, .. } => {
                signin.expect("a link")
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    let first = with_link(10, 1);
    assert_eq!(
        (first.nonce, first.hash, first.expires_at, first.fresh),
        ([1; 16], link_hash(&[1; 16]), 110, true)
    );
    assert_eq!(
        kinds(&*store),
        [AuditKind::Grant, AuditKind::SigninLinkIssued]
    );
    let retry = with_link(20, 2);
    assert_eq!(
        (retry.nonce, retry.fresh),
        ([1; 16], false),
        "handed out again"
    );
    let h = hashes(&[1; 16]);
    assert_eq!(store.peek_signin(&h, 50).expect("peek"), Some(link(110)));
    assert_eq!(store.peek_signin(&h, 110).expect("peek"), None, "expired");
    let used = |r: &SigninRecord| AuditEvent {
        email: Some(r.email.clone()),
        ..event(AuditKind::SigninLinkUsed)
    };
    assert_eq!(
        store.take_signin(&h, "other", 30, &used).expect("take"),
        None,
        "another site's"
    );
    assert_eq!(
        store.take_signin(&h, "s", 30, &used).expect("take"),
        Some(link(110))
    );
    assert_eq!(store.take_signin(&h, "s", 31, &used).expect("again"), None);
    assert_eq!(kinds(&*store).last(), Some(&AuditKind::SigninLinkUsed));
    let renewed = with_link(40, 3);
    assert_eq!(
        (renewed.nonce, renewed.fresh),
        ([3; 16], true),
        "spent: a new one"
    );
}

// ---- audit log and pruning --------------------------------------------------------------

fn the_audit_log_pages_in_order(backend: &Backend) {
    let store = backend.open();
    for at in 1..=5 {
        store
            .audit(&AuditEvent {
                at,
                ..event(AuditKind::Login)
            })
            .expect("audit");
    }
    let all = store.audit_log(None, 100).expect("log");
    let times: Vec<Timestamp> = all.iter().map(|(_, e)| e.at).collect();
    assert_eq!(times, [1, 2, 3, 4, 5]);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "ids increase");
    let page = store.audit_log(Some(all[1].0), 2).expect("page");
    let times: Vec<Timestamp> = page.iter().map(|(_, e)| e.at).collect();
    assert_eq!(times, [3, 4]);
    assert!(store.audit_log(Some(all[4].0), 10).expect("end").is_empty());
}

fn pruning_removes_only_what_has_expired_or_outlived_its_retention(backend: &Backend) {
    let store = backend.open();
    issue(&*store, 7, 8, 100);
    let live = SessionRecord {
        created_at: 0,
        expires_at: 500,
        ..session()
    };
    let dead = SessionRecord {
        expires_at: 150,
        ..live.clone()
    };
    sign_in(&*store, 1, &live, &[]);
    sign_in(&*store, 2, &dead, &[]);
    assert!(matches!(
        check_in(&*store, STRANGER, 1, 10),
        CodeCheck::Rejected { .. }
    ));
    let pruned = store
        .prune(200, POLICY, Retention::default())
        .expect("prune");
    assert_eq!((pruned.codes, pruned.sessions, pruned.attempts), (1, 1, 0));
    assert!(store.session_access(&[1; 32], &[]).expect("read").is_some());
    assert!(store.session_access(&[2; 32], &[]).expect("read").is_none());
    assert!(store.peek_token(&[8; 32], 0).expect("peek").is_none());
    let later = store
        .prune(10 + 3600, POLICY, Retention::default())
        .expect("prune");
    assert_eq!(later.attempts, 1, "the stale counter");

    let audited = kinds(&*store).len();
    // Entries are pruned from the oldest end, in the order they were written.
    store
        .grant(
            &Grant {
                now: 100,
                ..grant(Some(("shop", "old")), None, "a@x.org")
            },
            &event(AuditKind::Grant),
        )
        .expect("grant");
    store
        .audit(&AuditEvent {
            at: 5000,
            ..event(AuditKind::Login)
        })
        .expect("audit");
    let retention = Retention {
        audit: Some(1000),
        grants: Some(1000),
    };
    let old = store.prune(5500, POLICY, retention).expect("prune");
    assert_eq!((old.audit, old.grants), (audited + 1, 1));
    let left: Vec<Timestamp> = store
        .audit_log(None, 100)
        .expect("log")
        .into_iter()
        .map(|(_, e)| e.at)
        .collect();
    assert_eq!(left, [5000]);
    let again = store
        .grant(
            &grant(Some(("shop", "old")), None, "a@x.org"),
            &event(AuditKind::Grant),
        )
        .expect("grant");
    assert!(
        matches!(again, GrantResult::Applied { .. }),
        "a forgotten order applies anew: {again:?}"
    );
}

// ---- large lists: keyset pages, search, counts ------------------------------------------

/// Imports `rows` (email, name, end of access) onto `page` as the CSV import does.
fn import(store: &dyn Store, page: &str, rows: &[(&str, &str, Option<Timestamp>)]) {
    let sets: Vec<ClientSet<'_>> = rows
        .iter()
        .map(|(email, name, until)| ClientSet {
            email,
            name: Some(name),
            access_until: Some(*until),
            source: Source::Import,
            now: 10,
        })
        .collect();
    store
        .set_clients(page, &sets, &|_, created| {
            event(if created {
                AuditKind::ClientAdded
            } else {
                AuditKind::ClientUpdated
            })
        })
        .expect("import");
}

fn page_of(
    store: &dyn Store,
    page: &str,
    after: Option<&str>,
    limit: usize,
    search: Option<&str>,
) -> Vec<String> {
    store
        .client_page(page, after, limit, search)
        .expect("page")
        .into_iter()
        .map(|c| c.email)
        .collect()
}

fn counts(store: &dyn Store, page: &str, now: Timestamp) -> (u64, u64) {
    let c = store.client_counts(page, now).expect("counts");
    (c.total, c.active)
}

fn a_long_list_pages_by_keyset_in_email_order(backend: &Backend) {
    let store = backend.open();
    // An empty page: nothing to list, nothing counted.
    assert!(page_of(&*store, "course", None, 10, None).is_empty());
    assert!(page_of(&*store, "course", Some("m@x.org"), 10, None).is_empty());
    assert_eq!(counts(&*store, "course", 0), (0, 0));

    let emails: Vec<String> = (0..25).map(|i| format!("c{i:02}@x.org")).collect();
    let rows: Vec<(&str, &str, Option<Timestamp>)> =
        emails.iter().map(|e| (e.as_str(), "", None)).collect();
    for batch in rows.chunks(10) {
        import(&*store, "course", batch);
    }
    // Neighbours whose names start the same must not leak into the page.
    import(&*store, "course2", &[("c00@x.org", "", None)]);
    import(&*store, "cours", &[("zz@x.org", "", None)]);

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut sizes = Vec::new();
    loop {
        let page = page_of(&*store, "course", after.as_deref(), 10, None);
        sizes.push(page.len());
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        seen.extend(page);
    }
    assert_eq!(sizes, [10, 10, 5, 0], "three pages, then nothing");
    assert_eq!(seen, emails, "every client once, in email order");

    // `after` need not be a listed email; past the end there is nothing.
    assert_eq!(
        page_of(&*store, "course", Some("c19~"), 3, None),
        ["c20@x.org", "c21@x.org", "c22@x.org"]
    );
    assert!(page_of(&*store, "course", Some("c24@x.org"), 10, None).is_empty());
    assert!(page_of(&*store, "course", Some("zzz"), 10, None).is_empty());
    assert_eq!(counts(&*store, "course", 0), (25, 25));
    assert_eq!(counts(&*store, "course2", 0), (1, 1));

    // Chunked reads hand out the same list.
    let mut chunked = Vec::new();
    store
        .client_chunks("course", &mut |chunk| {
            chunked.extend(chunk.into_iter().map(|c| c.email));
            Ok(())
        })
        .expect("chunks");
    assert_eq!(chunked, emails);
}

fn searches_match_email_or_name_ignoring_case_and_page_by_keyset(backend: &Backend) {
    let store = backend.open();
    import(
        &*store,
        "course",
        &[
            ("ann@x.org", "Ann Lee", None),
            ("bob@x.org", "Zoë Ångström", None),
            ("dan@x.org", "ÅSA BERG", None),
            ("eve@annex.org", "Eve", None),
            ("fay@x.org", "100% Fan", None),
            ("gus@x.org", "Gus_Oak", None),
            ("hal@x.org", "Hal", None),
        ],
    );
    import(&*store, "other", &[("ann@y.org", "Ann", None)]);
    let search = |q: &str| page_of(&*store, "course", None, 10, Some(q));

    // Email or name, whatever the case typed or stored.
    assert_eq!(search("ANN"), ["ann@x.org", "eve@annex.org"]);
    assert_eq!(search("lee"), ["ann@x.org"], "the name only");
    assert_eq!(search("ÅNGSTRÖM"), ["bob@x.org"], "unicode letters fold");
    assert_eq!(search("åsa b"), ["dan@x.org"]);
    assert_eq!(search("  hal "), ["hal@x.org"], "spaces around are ignored");
    // LIKE's wildcards are plain characters in a search.
    assert_eq!(search("0% f"), ["fay@x.org"]);
    assert_eq!(search("%"), ["fay@x.org"]);
    assert_eq!(search("s_o"), ["gus@x.org"]);
    assert!(search("nobody").is_empty());
    assert!(search("org\nann").is_empty(), "never across email and name");
    // An empty search lists everyone.
    assert_eq!(page_of(&*store, "course", None, 10, Some("  ")).len(), 7);

    // Search results page by keyset too.
    assert_eq!(
        page_of(&*store, "course", None, 2, Some(".org")),
        ["ann@x.org", "bob@x.org"]
    );
    assert_eq!(
        page_of(&*store, "course", Some("bob@x.org"), 2, Some(".org")),
        ["dan@x.org", "eve@annex.org"]
    );
    assert!(page_of(&*store, "course", Some("hal@x.org"), 2, Some(".org")).is_empty());

    // Counting matches stops at the cap, and says so.
    let count = |q: &str, cap| {
        let m = store.count_matching("course", q, cap).expect("count");
        (m.count, m.exact)
    };
    assert_eq!(count("ann", 100), (2, true));
    assert_eq!(count(".org", 100), (7, true));
    assert_eq!(count(".org", 7), (7, true), "exactly the cap is exact");
    assert_eq!(count(".org", 5), (5, false));
    assert_eq!(count("nobody", 5), (0, true));
    assert_eq!(count("", 100), (7, true), "no search counts the page");

    // A rename is found under its new name only.
    store
        .edit_client(
            "course",
            "hal@x.org",
            &|c| {
                Some(Client {
                    name: "Halvard".into(),
                    ..c.clone()
                })
            },
            &|_| event(AuditKind::ClientUpdated),
        )
        .expect("edit");
    assert_eq!(search("halvard"), ["hal@x.org"]);
    store
        .edit_client(
            "course",
            "hal@x.org",
            &|c| {
                Some(Client {
                    email: "ida@x.org".into(),
                    name: "Ida".into(),
                    ..c.clone()
                })
            },
            &|_| event(AuditKind::ClientUpdated),
        )
        .expect("rename");
    assert!(search("halvard").is_empty());
    assert!(search("hal@").is_empty());
    assert_eq!(search("ida"), ["ida@x.org"]);
}

fn counts_follow_every_write_that_adds_or_removes_clients(backend: &Backend) {
    let now = 1_000;
    {
        let store = backend.open();
        add(&*store, "course", "a@x.org", None);
        add(&*store, "course", "b@x.org", Some(500));
        add(&*store, "course", "c@x.org", Some(2_000));
        assert_eq!(counts(&*store, "course", now), (3, 2), "b has expired");
        assert_eq!(
            counts(&*store, "course", 2_000),
            (3, 1),
            "an end is exclusive"
        );
        assert_eq!(counts(&*store, "course", 0), (3, 3));
        // Replacing a record is no new client.
        add(&*store, "course", "c@x.org", Some(3_000));
        assert_eq!(counts(&*store, "course", 2_500), (3, 2));

        // A grant adds a new client, or extends an existing one.
        store
            .grant(&grant(None, None, "d@x.org"), &event(AuditKind::Grant))
            .expect("grant");
        assert_eq!(counts(&*store, "course", now), (4, 3));
        store
            .grant(
                &grant(None, Some(4_000), "b@x.org"),
                &event(AuditKind::Grant),
            )
            .expect("grant");
        assert_eq!(counts(&*store, "course", now), (4, 4), "b is back");

        // An edit that moves a client to another email keeps the count; one that ends access
        // moves it out of the active ones; one refused changes nothing.
        let rename = |to: &'static str| {
            move |c: &Client| {
                Some(Client {
                    email: to.into(),
                    ..c.clone()
                })
            }
        };
        let edited = store
            .edit_client("course", "a@x.org", &rename("z@x.org"), &|_| {
                event(AuditKind::ClientUpdated)
            })
            .expect("edit");
        assert!(matches!(edited, ClientEdit::Edited(_)));
        assert_eq!(counts(&*store, "course", now), (4, 4));
        let taken = store
            .edit_client("course", "z@x.org", &rename("b@x.org"), &|_| {
                event(AuditKind::ClientUpdated)
            })
            .expect("edit");
        assert_eq!(taken, ClientEdit::EmailTaken);
        assert_eq!(counts(&*store, "course", now), (4, 4));
        store
            .edit_client(
                "course",
                "z@x.org",
                &|c| {
                    Some(Client {
                        access_until: Some(900),
                        ..c.clone()
                    })
                },
                &|_| event(AuditKind::ClientUpdated),
            )
            .expect("edit");
        assert_eq!(counts(&*store, "course", now), (4, 3));

        // Removing, and removing what is not there.
        assert!(
            store
                .remove_client("course", "c@x.org", &event(AuditKind::ClientRemoved))
                .expect("remove")
        );
        assert!(
            !store
                .remove_client("course", "c@x.org", &event(AuditKind::ClientRemoved))
                .expect("remove")
        );
        assert_eq!(counts(&*store, "course", now), (3, 2));

        // An import: one new client twice, one existing client made unlimited.
        import(
            &*store,
            "course",
            &[
                ("n@x.org", "New", Some(5_000)),
                ("z@x.org", "Zed", None),
                ("n@x.org", "New", Some(800)),
            ],
        );
        assert_eq!(
            counts(&*store, "course", now),
            (4, 3),
            "n is in once, and expired"
        );
        assert_eq!(counts(&*store, "other", now), (0, 0));
    }
    // The counts are kept, not rebuilt from memory.
    let store = backend.open();
    assert_eq!(counts(&*store, "course", now), (4, 3));
    assert_eq!(
        store
            .client_page("course", None, 10, None)
            .expect("page")
            .len(),
        4
    );
}

/// Runs each scenario on both backends, as `redb::NAME` and `postgres::NAME`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod redb {
            $(#[test] fn $name() { super::$name(&super::Backend::redb()) })*
        }
        mod postgres {
            $(#[test] fn $name() { super::$name(&super::Backend::postgres()) })*
        }
    };
}

on_both_backends!(
    clients_are_listed_per_page_in_email_order_and_survive_reopening,
    edits_are_atomic_and_renames_never_overwrite,
    set_clients_replaces_fields_and_keeps_history,
    a_right_code_is_accepted_once_and_its_link_dies_with_it,
    the_sixth_try_fails_even_when_right_and_a_new_code_does_not_reset_the_count,
    strangers_lock_out_only_their_own_browser_and_the_cap_per_email_holds,
    wrong_tries_at_once_from_many_threads_meet_the_cap_exactly,
    a_link_token_is_spent_once_even_when_taken_at_once,
    sessions_see_current_client_records_and_can_be_revoked,
    live_sessions_are_counted_per_site_and_admin_namespace,
    every_change_to_access_moves_the_change_count_and_reads_do_not,
    grants_extend_access_and_orders_apply_once,
    a_signature_is_spent_by_its_grant_once_and_for_good,
    one_signature_sent_at_once_from_many_threads_is_applied_once,
    a_sign_in_link_is_issued_with_its_grant_handed_out_again_while_live_and_spent_once,
    the_audit_log_pages_in_order,
    pruning_removes_only_what_has_expired_or_outlived_its_retention,
    a_long_list_pages_by_keyset_in_email_order,
    searches_match_email_or_name_ignoring_case_and_page_by_keyset,
    counts_follow_every_write_that_adds_or_removes_clients,
);

// ---- PostgreSQL only --------------------------------------------------------------------

#[test]
fn gateways_opening_a_new_database_together_migrate_it_once() {
    let config = pg_config(pg_server::fresh_database());
    let barrier = Barrier::new(4);
    let stores: Vec<PgStore> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    PgStore::open(&config).expect("open")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    add(&stores[0], "course", "a@x.org", None);
    assert_eq!(emails(&stores[3], "course"), ["a@x.org"], "one database");
    let probe = PgStore::probe(&config).expect("probe");
    assert_eq!(probe.version, pagegate::store::postgres::SCHEMA_VERSION);
    assert!(!probe.database.contains("postgres@"), "{}", probe.database);
}

#[test]
fn a_database_a_newer_pagegate_migrated_is_refused_naming_both_versions() {
    let url = pg_server::fresh_database();
    let config = pg_config(url.clone());
    drop(PgStore::open(&config).expect("open"));
    let newer = pagegate::store::postgres::SCHEMA_VERSION + 1;
    pg_server::psql(
        &url,
        &format!("INSERT INTO schema_version (version) VALUES ({newer})"),
    );
    let err = PgStore::open(&config).expect_err("newer schema");
    assert!(
        matches!(err, StoreError::Schema { found, expected, .. } if found == newer && expected == newer - 1),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains(&newer.to_string()), "{message}");
}

#[test]
fn another_gateways_writes_move_the_change_count_within_a_poll() {
    let config = pg_config(pg_server::fresh_database());
    let here = PgStore::open(&config).expect("open");
    let there = PgStore::open(&config).expect("open");
    let before = here.changes();
    add(&there, "course", "a@x.org", None);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while here.changes() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the other gateway's write was never noticed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_backup_of_a_postgres_store_points_to_pg_dump() {
    let store = PgStore::open(&pg_config(pg_server::fresh_database())).expect("open");
    let dir = tempfile::tempdir().expect("temp dir");
    let err = store
        .backup_to(&dir.path().join("copy"), false)
        .expect_err("no file backup");
    assert!(err.to_string().contains("pg_dump"), "{err}");
}

#[test]
fn encrypted_connections_check_the_server_certificate_only_when_asked() {
    let url = pg_server::fresh_database();
    let with = |tls: PgTls, ca_file: Option<std::path::PathBuf>| PostgresConfig {
        tls,
        ca_file,
        ..pg_config(url.clone())
    };
    let require = PgStore::open(&with(PgTls::Require, None)).expect("encrypted, unchecked");
    add(&require, "course", "a@x.org", None);
    let ca = pg_server::server().ca_file();
    let verified = PgStore::open(&with(PgTls::VerifyFull, Some(ca))).expect("verified");
    assert_eq!(emails(&verified, "course"), ["a@x.org"]);

    let dir = tempfile::tempdir().expect("temp dir");
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, common::certs::TestCa::new().cert_pem).expect("write");
    let err = PgStore::open(&with(PgTls::VerifyFull, Some(other_ca)))
        .expect_err("a server certificate from an unknown CA");
    let message = err.to_string().to_lowercase();
    assert!(message.contains("certificate"), "{message}");
}

#[test]
fn gateways_on_one_database_share_each_rate_limit() {
    let config = pg_config(pg_server::fresh_database());
    let (a, b) = (
        PgStore::open(&config).expect("open a"),
        PgStore::open(&config).expect("open b"),
    );
    assert!(a.shares_rate_limits() && b.shares_rate_limits());
    let three_an_hour = Rate {
        interval: Duration::from_secs(1200),
        burst: 3,
    };
    for (n, store) in [&a, &b, &a].into_iter().enumerate() {
        assert_eq!(
            store
                .take_rates(&[("codes-ip 192.0.2.1", three_an_hour)])
                .expect("take"),
            None,
            "request {n} is within the burst"
        );
    }
    let wait = b
        .take_rates(&[("codes-ip 192.0.2.1", three_an_hour)])
        .expect("take")
        .expect("the fourth, on the other gateway, is refused");
    assert!(
        wait > Duration::from_secs(1100) && wait <= Duration::from_secs(1200),
        "{wait:?}"
    );
    assert_eq!(
        a.take_rates(&[("codes-ip 192.0.2.2", three_an_hour)])
            .expect("take"),
        None,
        "another key has its own limit"
    );
    // The redb store keeps none: each gateway limits in memory.
    let dir = tempfile::tempdir().expect("temp dir");
    assert!(
        !RedbStore::open(dir.path())
            .expect("redb")
            .shares_rate_limits()
    );
}

#[test]
fn limits_taken_together_stop_at_the_first_that_refuses() {
    let store = PgStore::open(&pg_config(pg_server::fresh_database())).expect("open");
    let once = Rate {
        interval: Duration::from_secs(3600),
        burst: 1,
    };
    assert_eq!(
        store.take_rates(&[("a", once), ("b", once)]).expect("take"),
        None
    );
    // "a" refuses: "c" after it is not taken, so it still has its one request.
    assert!(
        store
            .take_rates(&[("a", once), ("c", once)])
            .expect("take")
            .is_some()
    );
    assert_eq!(store.take_rates(&[("c", once)]).expect("take"), None);
    // A limit before the refusing one keeps the request, as in memory.
    assert!(
        store
            .take_rates(&[("d", once), ("b", once)])
            .expect("take")
            .is_some()
    );
    assert!(store.take_rates(&[("d", once)]).expect("take").is_some());
}

/// Runs `sql` with psql on the database `url` names; its output, unaligned and trimmed.
fn psql(url: &str, sql: &str) -> String {
    pg_server::psql(url, sql).trim().to_owned()
}

#[test]
fn a_role_that_may_not_create_pg_trgm_still_searches_and_the_index_comes_with_one_that_may() {
    let url = pg_server::fresh_database();
    // A role that may create tables in the database's schema, but not extensions in it.
    let role = format!("no_extensions_{}", std::process::id());
    psql(
        &url,
        &format!("CREATE ROLE {role} LOGIN; GRANT CREATE ON SCHEMA public TO {role}"),
    );
    let index_exists = || {
        psql(
            &url,
            "SELECT to_regclass('clients_search_trgm') IS NOT NULL",
        )
    };

    let limited = PgStore::open(&pg_config(url.replace("postgres@", &format!("{role}@"))))
        .expect("the store opens without the trigram index");
    assert_eq!(index_exists(), "f");
    import(
        &limited,
        "course",
        &[
            ("ann@x.org", "Ann Lee", None),
            ("bob@x.org", "Zoë Ångström", None),
            ("eve@annex.org", "Eve", None),
        ],
    );
    let searches = |store: &dyn Store| {
        (
            page_of(store, "course", None, 10, Some("ANN")),
            page_of(store, "course", None, 10, Some("ångström")),
            store
                .count_matching("course", "ann", 100)
                .expect("count")
                .count,
        )
    };
    let expected = (
        vec!["ann@x.org".to_owned(), "eve@annex.org".to_owned()],
        vec!["bob@x.org".to_owned()],
        2,
    );
    assert_eq!(
        searches(&limited),
        expected,
        "searches read the page's rows"
    );
    drop(limited);

    // The database's owner may create the extension: opening the store as it builds the index,
    // and searches answer the same through it.
    let owner = PgStore::open(&pg_config(url.clone())).expect("open as the owner");
    assert_eq!(index_exists(), "t");
    assert_eq!(searches(&owner), expected);
}
