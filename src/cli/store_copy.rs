//! `pagegate store copy --from SRC --to DST [--force]`: moves every durable record from one
//! store to another (redb to PostgreSQL and back, or between two of the same kind), then reads
//! the counts back from the target to verify the copy.
//!
//! SRC and DST are each a configuration file (its `[store]` section and `data_dir` decide the
//! backend), a `postgres://` or `postgresql://` URL (a database with `[store]`'s default
//! settings), or a `.redb` file such as a backup. What moves and what does not is the store's
//! [`crate::store::Record`]; the records stream through in batches, so neither side is ever
//! held in memory whole.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};

use crate::config::{PostgresConfig, StoreBackend, postgres_from_url};
use crate::store::postgres::PgStore;
use crate::store::redb::{DB_FILE, RedbStore};
use crate::store::{Inventory, Store, StoreError};

/// Where one side of the copy is.
#[derive(Debug)]
enum Location {
    /// A redb file; `data_dir` when a configuration named it, to create it as a gateway would.
    Redb {
        file: PathBuf,
        data_dir: Option<PathBuf>,
    },
    /// A PostgreSQL database.
    Postgres(PostgresConfig),
}

/// A side of the copy, open.
struct Side {
    store: Box<dyn Store>,
    /// For messages; never holds a password.
    label: String,
    /// The PostgreSQL database's identity, to refuse copying a database onto itself.
    database: Option<String>,
}

/// Copies `from` to `to`, both as given on the command line, and prints what was copied.
pub async fn run(from: &str, to: &str, force: bool) -> anyhow::Result<()> {
    let source = locate(from, "--from")?;
    let target = locate(to, "--to")?;
    let report = tokio::task::spawn_blocking(move || copy(source, target, force))
        .await
        .context("the copy did not finish")??;
    print!("{report}");
    Ok(())
}

/// Reads SRC or DST.
fn locate(arg: &str, flag: &str) -> anyhow::Result<Location> {
    if arg.starts_with("postgres://") || arg.starts_with("postgresql://") {
        return postgres_from_url(arg)
            .map(Location::Postgres)
            .map_err(|problem| anyhow!("{flag}: {problem}"));
    }
    let path = Path::new(arg);
    if path.extension().is_some_and(|e| e == "redb") {
        return Ok(Location::Redb {
            file: path.to_path_buf(),
            data_dir: None,
        });
    }
    let config = crate::config::load(path)
        .with_context(|| format!("{flag}: not a usable configuration file"))?;
    Ok(match config.store.backend {
        StoreBackend::Redb => Location::Redb {
            file: config.data_dir.join(DB_FILE),
            data_dir: Some(config.data_dir),
        },
        StoreBackend::Postgres(pg) => Location::Postgres(pg),
    })
}

fn copy(source: Location, target: Location, force: bool) -> anyhow::Result<String> {
    if let (Location::Redb { file: a, .. }, Location::Redb { file: b, .. }) = (&source, &target) {
        if same_file(a, b) {
            bail!(
                "--from and --to are the same database ({}): nothing to copy",
                a.display()
            );
        }
    }
    let source = open_source(source)?;
    let target = open_target(target)?;
    if source.database.is_some() && source.database == target.database {
        bail!(
            "--from and --to are the same database ({}): nothing to copy",
            target.label
        );
    }

    let held = target
        .store
        .inventory()
        .with_context(|| format!("cannot count what {} holds", target.label))?;
    let mut report = String::new();
    if !held.is_empty() {
        if !force {
            bail!(
                "{} is not empty: it holds {}. Pass --force to replace everything it holds",
                target.label,
                describe(&held)
            );
        }
        target
            .store
            .clear()
            .with_context(|| format!("cannot empty {}", target.label))?;
        report.push_str(&format!(
            "emptied {} (it held {})\n",
            target.label,
            describe(&held)
        ));
    }

    let mut moved = Inventory::default();
    let mut write_error: Option<StoreError> = None;
    let read = source
        .store
        .export_records(crate::store::now(), &mut |batch| {
            batch.iter().for_each(|r| moved.count(r));
            target.store.import_records(&batch).map_err(|e| {
                write_error = Some(e);
                StoreError::Backend("the copy stopped: writing to the target failed".into())
            })
        });
    if let Some(e) = write_error {
        return Err(anyhow::Error::new(e).context(format!(
            "writing to {} failed; it now holds part of the copy: run the command again with \
             --force once the cause is fixed",
            target.label
        )));
    }
    read.with_context(|| format!("reading {} failed", source.label))?;

    let now_held = target
        .store
        .inventory()
        .with_context(|| format!("cannot count what {} holds after the copy", target.label))?;
    report.push_str(&format!(
        "copied {} to {}\n{}",
        source.label,
        target.label,
        table(&moved)
    ));
    let differences = differences(&moved, &now_held);
    if !differences.is_empty() {
        print!("{report}");
        bail!(
            "the copy does not verify: {} (was the target written to during the copy?)",
            differences.join("; ")
        );
    }
    report.push_str("verified: the target holds exactly the records copied, kind by kind\n");
    Ok(report)
}

/// Whether two paths name one existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn open_source(location: Location) -> anyhow::Result<Side> {
    match location {
        Location::Redb { file, data_dir } => {
            match file.try_exists() {
                Ok(true) => {}
                Ok(false) => bail!(
                    "there is no database at {}: nothing to copy{}",
                    file.display(),
                    if data_dir.is_some() {
                        " (check data_dir in the configuration)"
                    } else {
                        ""
                    }
                ),
                Err(e) => bail!(
                    "cannot reach the database at {}: {e} (run this as the account that runs \
                     the gateway)",
                    file.display()
                ),
            }
            let store = match RedbStore::open_file(&file) {
                Ok(store) => store,
                Err(StoreError::Locked(_)) => bail!(
                    "the database {} is in use by a running gateway: stop the gateway first, or \
                     copy from a backup (`pagegate backup --config … FILE.redb`, then \
                     `--from FILE.redb`)",
                    file.display()
                ),
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("cannot open the database {}", file.display())));
                }
            };
            Ok(redb_side(store, &file))
        }
        Location::Postgres(pg) => postgres_side(&pg, "--from"),
    }
}

fn open_target(location: Location) -> anyhow::Result<Side> {
    match location {
        Location::Redb { file, data_dir } => {
            let opened = match &data_dir {
                Some(dir) => RedbStore::open(dir),
                None => RedbStore::open_file(&file),
            };
            let store = match opened {
                Ok(store) => store,
                Err(StoreError::Locked(_)) => bail!(
                    "the database {} is in use by a running gateway: stop the gateway first",
                    file.display()
                ),
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("cannot open the database {}", file.display())));
                }
            };
            Ok(redb_side(store, &file))
        }
        Location::Postgres(pg) => postgres_side(&pg, "--to"),
    }
}

fn redb_side(store: RedbStore, file: &Path) -> Side {
    Side {
        store: Box::new(store),
        label: format!("the redb database {}", file.display()),
        database: None,
    }
}

fn postgres_side(pg: &PostgresConfig, flag: &str) -> anyhow::Result<Side> {
    let store = PgStore::open(pg).with_context(|| format!("{flag}: cannot open the database"))?;
    let database = store
        .database_identity()
        .with_context(|| format!("{flag}: cannot read the database's identity"))?;
    Ok(Side {
        label: format!("the PostgreSQL database {}", store.name()),
        database: Some(database),
        store: Box::new(store),
    })
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What a store holds, in a sentence.
fn describe(inventory: &Inventory) -> String {
    [
        plural(inventory.client_total(), "client", "clients"),
        plural(inventory.audit, "audit entry", "audit entries"),
        plural(inventory.grants, "grant order", "grant orders"),
        plural(inventory.signatures, "spent signature", "spent signatures"),
        plural(inventory.sessions, "session", "sessions"),
    ]
    .join(", ")
}

/// What a copy moved, a line a kind.
fn table(moved: &Inventory) -> String {
    let pages: Vec<String> = moved
        .clients
        .iter()
        .map(|(page, n)| format!("{page}: {n}"))
        .collect();
    let mut out = format!("clients: {}", moved.client_total());
    if !pages.is_empty() {
        out.push_str(&format!(" ({})", pages.join(", ")));
    }
    out.push('\n');
    out.push_str(&format!(
        "grant orders: {}\nspent signatures: {}\nsessions: {}\naudit entries: {}\n",
        moved.grants, moved.signatures, moved.sessions, moved.audit
    ));
    out
}

/// Where the target's counts differ from what was copied, one phrase a kind.
fn differences(moved: &Inventory, held: &Inventory) -> Vec<String> {
    let mut out = Vec::new();
    let mut pages: Vec<&String> = moved.clients.keys().chain(held.clients.keys()).collect();
    pages.sort();
    pages.dedup();
    for page in pages {
        let copied = moved.clients.get(page).copied().unwrap_or(0);
        let there = held.clients.get(page).copied().unwrap_or(0);
        if copied != there {
            out.push(format!(
                "clients on {page}: copied {copied}, the target holds {there}"
            ));
        }
    }
    for (kind, copied, there) in [
        ("grant orders", moved.grants, held.grants),
        ("spent signatures", moved.signatures, held.signatures),
        ("sessions", moved.sessions, held.sessions),
        ("audit entries", moved.audit, held.audit),
    ] {
        if copied != there {
            out.push(format!("{kind}: copied {copied}, the target holds {there}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory(pages: &[(&str, u64)], audit: u64) -> Inventory {
        Inventory {
            clients: pages.iter().map(|(p, n)| ((*p).to_owned(), *n)).collect(),
            audit,
            grants: 2,
            signatures: 1,
            sessions: 0,
        }
    }

    #[test]
    fn every_kind_and_every_page_is_compared() {
        let moved = inventory(&[("course", 2), ("vip", 1)], 7);
        assert_eq!(differences(&moved, &moved.clone()), Vec::<String>::new());
        let short = inventory(&[("course", 2), ("extra", 4)], 6);
        assert_eq!(
            differences(&moved, &short),
            [
                "clients on extra: copied 0, the target holds 4",
                "clients on vip: copied 1, the target holds 0",
                "audit entries: copied 7, the target holds 6",
            ]
        );
    }

    #[test]
    fn the_report_names_each_kind_and_page() {
        let moved = inventory(&[("course", 2), ("vip", 1)], 7);
        assert_eq!(
            table(&moved),
            "clients: 3 (course: 2, vip: 1)\ngrant orders: 2\nspent signatures: 1\n\
             sessions: 0\naudit entries: 7\n"
        );
        assert_eq!(
            describe(&moved),
            "3 clients, 7 audit entries, 2 grant orders, 1 spent signature, 0 sessions"
        );
    }

    #[test]
    fn a_url_a_redb_file_and_a_configuration_are_told_apart() {
        assert!(matches!(
            locate("postgresql://pg@127.0.0.1/gate", "--to"),
            Ok(Location::Postgres(_))
        ));
        assert!(matches!(
            locate("backups/pagegate-2025-06-01.redb", "--from"),
            Ok(Location::Redb { data_dir: None, .. })
        ));
        let missing = locate("/nonexistent/gateway.toml", "--from").expect_err("no file");
        assert!(format!("{missing:#}").contains("--from"), "{missing:#}");
        let secret = "hunter2-very-secret";
        let bad = locate(&format!("postgres://pg:{secret}@db.example.com"), "--to")
            .expect_err("no database named");
        assert!(!format!("{bad:#}").contains(secret), "{bad:#}");
    }
}
