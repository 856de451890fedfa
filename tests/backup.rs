//! Backups and restores with the real binary: `pagegate backup` while the gateway serves and
//! writes go on, `pagegate restore` into a stopped gateway's data directory, and every refusal
//! (a running gateway, an existing file, a file that is not a backup) leaving the database as
//! it was.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::api::{ApiClient, Cred};
use common::process::{GatewayProcess, run, run_in};
use common::write_config;
use serde_json::json;

const ADMIN: &str = "admin-secret-0123456789abcdef";
const HOST: &str = "school.test";
/// Concurrent writers during the backup, each with its own keep-alive connection.
const WRITERS: usize = 4;
/// Most grants per writer, so the whole list fits one page of the admin API.
const MAX_PER_WRITER: usize = 200;

/// A gateway with one protected page and an admin key, in a fresh directory.
fn gateway_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n\
             [[site]]\nname = \"school\"\nhosts = [\"{HOST}\"]\nupstream = \"http://127.0.0.1:9\"\n\
             public_url = \"http://{HOST}\"\n\n\
             [[site.page]]\nid = \"course\"\npaths = [\"/course/\"]\n\n\
             [[api_key]]\nname = \"admin\"\nsecret = \"{ADMIN}\"\nscopes = [\"admin\"]\n"
        ),
    );
    (dir, path.display().to_string())
}

/// Runs `pagegate COMMAND --config CONFIG ARGS…` and returns (success, stdout, stderr).
fn pagegate(command: &str, config: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec![command, "--config", config];
    all.extend_from_slice(args);
    let (status, stdout, stderr) = run(&all);
    (status.success(), stdout, stderr)
}

/// The number after `label: ` in the counts line a backup or restore prints.
fn count(output: &str, label: &str) -> usize {
    output
        .split(&format!("{label}: "))
        .nth(1)
        .and_then(|rest| rest.split([',', '\n']).next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} count in:\n{output}"))
}

fn email(writer: usize, i: usize) -> String {
    format!("w{writer}-{i:04}@example.com")
}

/// The emails on the course page, through the admin API.
async fn listed(api: &ApiClient) -> BTreeSet<String> {
    api.emails("course", ADMIN).await.into_iter().collect()
}

fn files_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_under_load_restores_every_write_acknowledged_before_it() {
    let (dir, config) = gateway_dir();
    let mut gateway = GatewayProcess::serve(Path::new(&config));
    let api = ApiClient::new(gateway.addr, HOST);

    // Writers grant access to new emails one after another, each counting its acknowledged
    // grants. A grant writes the client, its order record and an audit entry in one transaction.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Vec<AtomicUsize>> =
        Arc::new((0..WRITERS).map(|_| AtomicUsize::new(0)).collect());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (api, stop, acked) = (api.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut conn = api.connect().await;
                for i in 0..MAX_PER_WRITER {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let grant = json!({"page": "course", "email": email(w, i), "days": 30,
                                       "order_id": format!("w{w}-{i}")});
                    let answer = conn.post("/grants", &Cred::Bearer(ADMIN), &grant).await;
                    assert_eq!(answer.status, 201, "writer {w} grant {i}: {}", answer.body);
                    acked[w].fetch_add(1, Ordering::AcqRel);
                }
            })
        })
        .collect();
    while acked.iter().any(|a| a.load(Ordering::Acquire) < 10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // What was acknowledged before the command starts must be in the backup.
    let before: Vec<usize> = acked.iter().map(|a| a.load(Ordering::Acquire)).collect();
    let backup = dir.path().join("backups").join("school.redb");
    std::fs::create_dir(backup.parent().expect("parent")).expect("backups folder");
    let target = backup.display().to_string();
    let config2 = config.clone();
    let (ok, stdout, stderr) =
        tokio::task::spawn_blocking(move || pagegate("backup", &config2, &[&target]))
            .await
            .expect("backup task");
    assert!(ok, "backup failed:\n{stderr}");
    assert!(
        stdout.contains(&format!("backup written to {}", backup.display())),
        "{stdout}"
    );
    let in_backup = count(&stdout, "clients");
    assert_eq!(count(&stdout, "grants"), in_backup, "{stdout}");
    assert_eq!(count(&stdout, "audit entries"), in_backup, "{stdout}");
    assert_eq!(count(&stdout, "sessions"), 0, "{stdout}");

    // Writes go on after the backup; then the gateway stops and the backup is restored.
    let after_backup: usize = acked.iter().map(|a| a.load(Ordering::Acquire)).sum();
    while acked
        .iter()
        .map(|a| a.load(Ordering::Acquire))
        .sum::<usize>()
        < after_backup + 20
        && acked
            .iter()
            .all(|a| a.load(Ordering::Acquire) < MAX_PER_WRITER)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Release);
    for writer in writers {
        writer.await.expect("writer");
    }
    let total: usize = acked.iter().map(|a| a.load(Ordering::Acquire)).sum();
    if total < WRITERS * MAX_PER_WRITER {
        assert!(total > in_backup, "some writes came after the backup");
    }
    println!(
        "backup under load: {} grants acknowledged before it started, {in_backup} in it, {total} acknowledged in all",
        before.iter().sum::<usize>()
    );
    gateway.stop();

    let (ok, stdout, stderr) = pagegate("restore", &config, &[&backup.display().to_string()]);
    assert!(ok, "restore failed:\n{stderr}");
    assert_eq!(count(&stdout, "clients"), in_backup, "{stdout}");
    assert!(
        stdout.contains("the previous database is kept as"),
        "{stdout}"
    );
    assert!(
        files_in(&dir.path().join("data"))
            .iter()
            .any(|f| f.starts_with("pagegate.redb.before-restore-")),
        "the replaced database is kept aside"
    );

    // The restored database opens, serves, and is exactly one moment of the writes.
    let _gateway = GatewayProcess::serve(Path::new(&config));
    let api = ApiClient::new(_gateway.addr, HOST);
    let restored = listed(&api).await;
    assert_eq!(restored.len(), in_backup);
    for (w, &acked_before) in before.iter().enumerate() {
        let mine: Vec<&String> = restored
            .iter()
            .filter(|e| e.starts_with(&format!("w{w}-")))
            .collect();
        assert!(
            mine.len() >= acked_before,
            "writer {w}: {acked_before} acknowledged before the backup, {} restored",
            mine.len()
        );
        let expected: Vec<String> = (0..mine.len()).map(|i| email(w, i)).collect();
        assert_eq!(
            mine.into_iter().cloned().collect::<Vec<_>>(),
            expected,
            "writer {w}: the backup holds the writes up to one moment, with no gaps"
        );
    }
    // The order records came back too: a retried order is answered as the first time.
    let retry = api
        .post(
            "/grants",
            &Cred::Bearer(ADMIN),
            &json!({"page": "course", "email": email(0, 0), "days": 30, "order_id": "w0-0"}),
        )
        .await;
    assert_eq!(
        retry
            .headers
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..]),
        "{}",
        retry.body
    );
}

#[test]
fn backup_never_overwrites_unasked_and_restore_waits_for_the_gateway_to_stop() {
    let (dir, config) = gateway_dir();
    let (ok, _, stderr) = pagegate(
        "backup",
        &config,
        &[&dir.path().join("none.redb").display().to_string()],
    );
    assert!(!ok);
    assert!(
        stderr.contains("there is no database at") && stderr.contains("nothing to back up"),
        "{stderr}"
    );

    let (ok, _, stderr) = pagegate(
        "clients",
        &config,
        &["add", "--page", "course", "--email", "ann@example.com"],
    );
    assert!(ok, "{stderr}");
    let mut gateway = GatewayProcess::serve(Path::new(&config));

    // Running gateway: the backup is written by the gateway itself. A relative path is the
    // caller's, not the gateway's.
    let elsewhere = tempfile::tempdir().expect("working dir");
    let in_elsewhere = |args: &[&str]| {
        let mut all = vec!["backup", "--config", &config];
        all.extend_from_slice(args);
        let (status, stdout, stderr) = run_in(elsewhere.path(), &all);
        (status.success(), stdout, stderr)
    };
    let relative = "backup.redb";
    let backup = elsewhere.path().join(relative);
    let (ok, stdout, stderr) = in_elsewhere(&[relative]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&backup.display().to_string()), "{stdout}");
    assert_eq!(count(&stdout, "clients"), 1);
    let first = std::fs::read(&backup).expect("backup written");

    let (ok, _, stderr) = in_elsewhere(&[relative]);
    assert!(!ok, "a second backup to the same file is refused");
    assert!(
        stderr.contains("already exists; pass --force to replace it"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&backup).expect("read"),
        first,
        "left untouched"
    );

    let (ok, stdout, stderr) = pagegate(
        "clients",
        &config,
        &["add", "--page", "course", "--email", "bob@example.com"],
    );
    assert!(ok, "{stdout}{stderr}");
    let (ok, stdout, stderr) = in_elsewhere(&["--force", relative]);
    assert!(ok, "{stderr}");
    assert_eq!(count(&stdout, "clients"), 2);
    let relative = &backup.display().to_string();

    let (ok, _, stderr) = pagegate("restore", &config, &[relative]);
    assert!(!ok, "restore while the gateway runs");
    assert!(stderr.contains("stop the gateway first"), "{stderr}");
    assert!(
        gateway.log().contains("backup written"),
        "the gateway logs the backup:\n{}",
        gateway.log()
    );

    // Stopped gateway: the command opens the database itself, and restore goes ahead.
    gateway.stop();
    let offline = dir.path().join("offline.redb");
    let (ok, stdout, stderr) = pagegate("backup", &config, &[&offline.display().to_string()]);
    assert!(ok, "{stderr}");
    assert_eq!(count(&stdout, "clients"), 2);
    let (ok, stdout, stderr) = pagegate("restore", &config, &[relative]);
    assert!(ok, "{stderr}");
    assert_eq!(count(&stdout, "clients"), 2, "{stdout}");
}

#[test]
fn restoring_a_damaged_missing_or_foreign_file_fails_clearly_and_keeps_the_database() {
    let (dir, config) = gateway_dir();
    let (ok, _, stderr) = pagegate(
        "clients",
        &config,
        &["add", "--page", "course", "--email", "ann@example.com"],
    );
    assert!(ok, "{stderr}");
    let good = dir.path().join("good.redb");
    let (ok, _, stderr) = pagegate("backup", &config, &[&good.display().to_string()]);
    assert!(ok, "{stderr}");

    let data = dir.path().join("data");
    let database = data.join("pagegate.redb");
    let before = std::fs::read(&database).expect("database");
    let files_before = files_in(&data);

    let bytes = std::fs::read(&good).expect("backup");
    let cases: Vec<(PathBuf, Vec<u8>, &str)> = vec![
        (
            dir.path().join("truncated.redb"),
            bytes[..bytes.len() / 3].to_vec(),
            "is not a usable pagegate backup",
        ),
        (
            dir.path().join("noise.redb"),
            (0..200_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
            "not a database file",
        ),
        (
            dir.path().join("gateway.toml.copy"),
            std::fs::read(&config).expect("config"),
            "not a database file",
        ),
    ];
    for (path, content, expected) in &cases {
        std::fs::write(path, content).expect("write case");
        let (ok, _, stderr) = pagegate("restore", &config, &[&path.display().to_string()]);
        assert!(!ok, "{} was restored", path.display());
        assert!(
            stderr.contains(&format!(
                "{} is not a usable pagegate backup",
                path.display()
            )) && stderr.contains(expected),
            "{stderr}"
        );
    }
    let missing = dir.path().join("missing.redb");
    let (ok, _, stderr) = pagegate("restore", &config, &[&missing.display().to_string()]);
    assert!(!ok);
    assert!(stderr.contains("no such file"), "{stderr}");

    assert_eq!(
        std::fs::read(&database).expect("database"),
        before,
        "untouched"
    );
    assert_eq!(
        files_in(&data),
        files_before,
        "nothing added or left behind"
    );
    let (ok, stdout, _) = pagegate("clients", &config, &["list", "--page", "course"]);
    assert!(ok && stdout.contains("ann@example.com"), "{stdout}");
}
