//! Test harness: a real upstream, pagegate in-process or as the real binary, and clients that
//! speak HTTP/1.1, HTTP/2, TLS and raw bytes. Everything binds 127.0.0.1 on port 0.
#![allow(dead_code, unreachable_pub)]

pub mod api;
pub mod browser;
pub mod bypass;
pub mod certs;
pub mod chrome;
pub mod client;
pub mod edges;
pub mod nginx;
pub mod observe;
pub mod pair;
pub mod postgres;
pub mod process;
pub mod school;
pub mod smtp;
pub mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use pagegate::RunningGateway;
use tempfile::TempDir;

pub use upstream::TestUpstream;

/// pagegate started in this process from a TOML config.
pub struct TestGateway {
    running: Option<RunningGateway>,
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    /// The `[metrics] listen` address, when configured.
    pub metrics_addr: Option<SocketAddr>,
    pub dir: TempDir,
}

impl TestGateway {
    /// Writes `toml` as `gateway.toml` in a fresh directory (so relative paths resolve there),
    /// with `data_dir` pointing inside it, and starts the gateway.
    pub async fn start(toml: &str) -> TestGateway {
        Self::start_in(tempfile::tempdir().expect("temp dir"), toml).await
    }

    /// Same, in a directory the test already prepared (e.g. with certificates in it). On the
    /// store [`store_under_test`] selects.
    pub async fn start_in(dir: TempDir, toml: &str) -> TestGateway {
        let toml = on_store_under_test(dir.path(), toml);
        Self::start_as_written(dir, &toml).await
    }

    /// Same, on the redb store whatever the switch says: for stories about the redb file itself
    /// (its lock, its backups, a generated secret in `data_dir`).
    pub async fn start_on_redb(toml: &str) -> TestGateway {
        Self::start_as_written(tempfile::tempdir().expect("temp dir"), toml).await
    }

    async fn start_as_written(dir: TempDir, toml: &str) -> TestGateway {
        let path = write_config(dir.path(), toml);
        let config =
            pagegate::config::load(&path).unwrap_or_else(|e| panic!("test config is invalid: {e}"));
        let running = pagegate::start(config).await.expect("gateway starts");
        let addr = running
            .http_addr
            .or(running.https_addr)
            .expect("a listener");
        TestGateway {
            addr,
            tls_addr: running.https_addr,
            metrics_addr: running.metrics_addr,
            running: Some(running),
            dir,
        }
    }

    /// A gateway answering every host for one upstream.
    pub async fn in_front_of(upstream: &TestUpstream) -> TestGateway {
        Self::in_front_of_with(upstream, "").await
    }

    /// The same, with more `[server]` settings (lines of TOML).
    pub async fn in_front_of_with(upstream: &TestUpstream, server_lines: &str) -> TestGateway {
        Self::start(&format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server_lines}\n\n[[site]]\nhosts = [\"*\"]\nupstream = \"http://{}\"\n",
            upstream.addr
        ))
        .await
    }

    /// Rewrites `gateway.toml` (as [`write_config`] does) and reloads it in the running gateway.
    pub async fn reload(
        &self,
        toml: &str,
    ) -> Result<pagegate::server::reload::ReloadReport, pagegate::server::reload::ReloadError> {
        write_config(self.dir.path(), toml);
        self.running
            .as_ref()
            .expect("the gateway is running")
            .live()
            .reload()
            .await
    }

    /// The clock the running gateway's sign-in flow goes by, to move it forward instead of
    /// waiting for codes, links or sessions to expire.
    pub fn clock(&self) -> pagegate::auth::Clock {
        self.running
            .as_ref()
            .expect("the gateway is running")
            .live()
            .clock()
            .expect("the gateway has the sign-in flow")
    }

    /// Waits until the sign-in work the gateway runs after its answers (issuing and mailing
    /// codes, retries included, and noting how they went) has all finished; fails after
    /// `limit`. After it, no more mail can go out for the requests made so far.
    pub async fn until_sign_in_work_done(&self, limit: std::time::Duration) {
        let live = self
            .running
            .as_ref()
            .expect("the gateway is running")
            .live();
        let start = std::time::Instant::now();
        while live.sign_in_work() > 0 {
            assert!(
                start.elapsed() < limit,
                "sign-in work still running after {limit:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Stops the gateway and hands back its directory (config and data), to start again on it.
    pub async fn stop_and_keep_dir(mut self) -> TempDir {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"))
    }

    /// Drops the running gateway without stopping it first (as a library user's scope might
    /// end), and hands back its directory.
    pub fn drop_and_keep_dir(mut self) -> TempDir {
        drop(self.running.take());
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"))
    }

    /// The running gateway itself and the directory, for a test that handles them apart.
    pub fn into_parts(mut self) -> (RunningGateway, TempDir) {
        let running = self.running.take().expect("the gateway is running");
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        (running, dir)
    }

    /// Graceful stop, waiting for it to finish.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }
}

/// Opens the database once the stopped gateway's last tasks have let go of it.
pub async fn open_store_when_free(data_dir: &Path) -> pagegate::store::redb::RedbStore {
    for _ in 0..100 {
        match pagegate::store::redb::RedbStore::open(data_dir) {
            Ok(store) => return store,
            Err(pagegate::store::StoreError::Locked(_)) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            Err(e) => panic!("cannot open the database: {e}"),
        }
    }
    panic!("the database stayed locked after the gateway stopped");
}

/// Writes a config file into `dir` with `data_dir` set inside it; returns its path.
pub fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("gateway.toml");
    let text = if toml.contains("data_dir") {
        toml.to_string()
    } else {
        format!("data_dir = \"data\"\n{toml}")
    };
    std::fs::write(&path, text).expect("write config");
    path
}

/// The store the suites run on: `PAGEGATE_TEST_STORE=postgres` puts every gateway a test starts
/// in-process on a fresh database of this binary's throwaway PostgreSQL server, with the shared
/// secret gateways on one database need; anything else (the default) keeps the redb file in
/// `data_dir`. `.ci/run` runs the suites that touch the store both ways.
pub fn store_under_test() -> &'static str {
    match std::env::var("PAGEGATE_TEST_STORE").as_deref() {
        Ok("postgres") => "postgres",
        Ok("redb") | Err(_) => "redb",
        Ok(other) => panic!("PAGEGATE_TEST_STORE={other:?}: expected \"redb\" or \"postgres\""),
    }
}

/// `toml` moved onto the store under test: unchanged for redb, or with `[store]` pointing at the
/// PostgreSQL database of `dir` (see [`database_of`]) and `[auth] secret` set, unless the test
/// chose its store itself.
pub fn on_store_under_test(dir: &Path, toml: &str) -> String {
    if store_under_test() != "postgres" {
        return toml.to_owned();
    }
    let mut doc: toml::Table = toml.parse().expect("the test's configuration is TOML");
    let table = |doc: &mut toml::Table, name: &str| -> toml::Table {
        match doc.remove(name) {
            Some(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        }
    };
    let mut store = table(&mut doc, "store");
    if store.contains_key("backend") {
        doc.insert("store".into(), toml::Value::Table(store));
        return toml.to_owned();
    }
    store.insert("backend".into(), "postgres".into());
    store.insert("url".into(), database_of(dir).into());
    doc.insert("store".into(), toml::Value::Table(store));
    let mut auth = table(&mut doc, "auth");
    if !["secret", "secret_file", "secret_env"]
        .iter()
        .any(|k| auth.contains_key(*k))
    {
        auth.insert("secret".into(), postgres::SHARED_SECRET.into());
    }
    doc.insert("auth".into(), toml::Value::Table(auth));
    toml::to_string(&doc).expect("TOML again")
}

/// The PostgreSQL database of the gateway in `dir`, when the suites run on PostgreSQL: made on
/// first use and noted in `dir/database-url`, so a gateway started again on the same directory,
/// or a test reading the store after a stop, finds the same data.
pub fn database_of(dir: &Path) -> String {
    let note = dir.join("database-url");
    if let Ok(url) = std::fs::read_to_string(&note) {
        return url;
    }
    let url = postgres::fresh_database();
    std::fs::write(&note, &url).expect("note the database");
    url
}

/// Runs `f` on the store of the gateway in `dir` (stopped, or never started): the redb file in
/// `dir/data` (waiting until a stopping gateway lets go of it) or the PostgreSQL database of
/// `dir`, whichever the suites run on. Off the async runtime, as store calls must be.
pub async fn with_store<T: Send + 'static>(
    dir: &Path,
    f: impl FnOnce(&dyn pagegate::store::Store) -> T + Send + 'static,
) -> T {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        if store_under_test() == "postgres" {
            let config = pagegate::config::PostgresConfig {
                url: pagegate::config::DatabaseUrl(database_of(&dir)),
                pool_size: 2,
                connect_timeout: std::time::Duration::from_secs(30),
                statement_timeout: std::time::Duration::from_secs(30),
                tls: pagegate::config::PgTls::Disable,
                ca_file: None,
            };
            let store = pagegate::store::postgres::PgStore::open(&config).expect("open postgres");
            return f(&store);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match pagegate::store::redb::RedbStore::open(&dir.join("data")) {
                Ok(store) => return f(&store),
                Err(pagegate::store::StoreError::Locked(_))
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("cannot open the database: {e}"),
            }
        }
    })
    .await
    .expect("store task")
}
