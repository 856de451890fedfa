//! `[store] backend`: the embedded redb file (the default) or a shared PostgreSQL database.
//!
//! Kept apart from the other sections' rules so the database's settings have one owner; the
//! section's retention keys stay with the rest of `[store]` in `validate`.

use std::net::IpAddr;
use std::ops::Range;
use std::str::FromStr;
use std::time::Duration;

use super::file::FileStore;
use super::validate::Ctx;
use super::{ConfigError, Secret};
pub use crate::store::postgres::{DatabaseUrl, PgTls, PostgresConfig};

/// Default `store.pool_size`: connections a gateway keeps to the database. Requests wait for a
/// free one, so this bounds the database's load per gateway; PostgreSQL's own default of 100
/// connections leaves room for several gateways.
const DEFAULT_POOL_SIZE: usize = 16;
/// Upper bound of `store.pool_size`, against a typo opening thousands of connections.
const MAX_POOL_SIZE: usize = 1024;
/// Default `store.connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `store.statement_timeout`: every store call is a handful of indexed statements, so
/// one that takes seconds means a stuck database, and the request should fail rather than wait.
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreBackend {
    /// `data_dir/pagegate.redb`, for one gateway.
    #[default]
    Redb,
    /// A PostgreSQL database shared by every gateway that names it.
    Postgres(PostgresConfig),
}

/// A problem with a key: its dotted name, where it is, and what was expected.
type Problem = (&'static str, Option<Range<usize>>, String);

/// The backend `[store]` asks for. `url` is the value of `url`, `url_file` or `url_env`
/// (already read, at most one given).
pub(super) fn backend(
    s: &FileStore,
    url: Option<Secret>,
    ctx: &Ctx<'_>,
) -> Result<StoreBackend, ConfigError> {
    choose(s, url, ctx).map_err(|e| match e {
        Failure::Problem((key, span, problem)) => ctx.invalid(key, span, problem),
        Failure::Config(e) => e,
    })
}

enum Failure {
    Problem(Problem),
    Config(ConfigError),
}

impl From<Problem> for Failure {
    fn from(p: Problem) -> Failure {
        Failure::Problem(p)
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Failure {
        Failure::Config(e)
    }
}

fn choose(s: &FileStore, url: Option<Secret>, ctx: &Ctx<'_>) -> Result<StoreBackend, Failure> {
    let url_span = s
        .url
        .as_ref()
        .or(s.url_file.as_ref())
        .or(s.url_env.as_ref())
        .map(|v| v.span());
    let kind = s.backend.as_ref().map_or("redb", |b| b.get_ref().as_str());
    match kind {
        "redb" => {
            let postgres_only = [
                ("store.url", url_span.clone()),
                ("store.pool_size", s.pool_size.as_ref().map(|v| v.span())),
                (
                    "store.connect_timeout",
                    s.connect_timeout.as_ref().map(|v| v.span()),
                ),
                (
                    "store.statement_timeout",
                    s.statement_timeout.as_ref().map(|v| v.span()),
                ),
                ("store.tls", s.tls.as_ref().map(|v| v.span())),
                ("store.ca_file", s.ca_file.as_ref().map(|v| v.span())),
            ];
            if let Some((key, span)) = postgres_only.into_iter().find(|(_, s)| s.is_some()) {
                return Err(Failure::Problem((
                    key,
                    span,
                    "only for `backend = \"postgres\"`; the redb store lives in `data_dir`".into(),
                )));
            }
            Ok(StoreBackend::Redb)
        }
        "postgres" => postgres(s, url, url_span, ctx).map(StoreBackend::Postgres),
        other => Err(Failure::Problem((
            "store.backend",
            s.backend.as_ref().map(|b| b.span()),
            format!("expected \"redb\" or \"postgres\", got {other:?}"),
        ))),
    }
}

fn postgres(
    s: &FileStore,
    url: Option<Secret>,
    url_span: Option<Range<usize>>,
    ctx: &Ctx<'_>,
) -> Result<PostgresConfig, Failure> {
    let Some(url) = url else {
        return Err(Failure::Problem((
            "store.url",
            s.backend.as_ref().map(|b| b.span()),
            "`backend = \"postgres\"` needs the database: `url`, `url_file` or `url_env` \
             (e.g. \"postgres://pagegate@db.example.com/pagegate\")"
                .into(),
        )));
    };
    let parsed = parse_url(&url.0).map_err(|problem| ("store.url", url_span.clone(), problem))?;
    let pool_size = match &s.pool_size {
        None => DEFAULT_POOL_SIZE,
        Some(v) => usize::try_from(*v.get_ref())
            .ok()
            .filter(|n| (1..=MAX_POOL_SIZE).contains(n))
            .ok_or_else(|| {
                (
                    "store.pool_size",
                    Some(v.span()),
                    format!("expected 1 to {MAX_POOL_SIZE} connections"),
                )
            })?,
    };
    let connect_timeout = ctx.duration(
        "store.connect_timeout",
        s.connect_timeout.as_ref(),
        DEFAULT_CONNECT_TIMEOUT,
    )?;
    let statement_timeout = ctx.duration(
        "store.statement_timeout",
        s.statement_timeout.as_ref(),
        DEFAULT_STATEMENT_TIMEOUT,
    )?;
    let tls = match &s.tls {
        None if local_only(&parsed) => PgTls::Disable,
        None => PgTls::VerifyFull,
        Some(v) => match v.get_ref().as_str() {
            "disable" => PgTls::Disable,
            "require" => PgTls::Require,
            "verify-full" => PgTls::VerifyFull,
            other => {
                return Err(Failure::Problem((
                    "store.tls",
                    Some(v.span()),
                    format!("expected \"disable\", \"require\" or \"verify-full\", got {other:?}"),
                )));
            }
        },
    };
    let ca_file = match &s.ca_file {
        None => None,
        Some(v) if tls != PgTls::VerifyFull => {
            return Err(Failure::Problem((
                "store.ca_file",
                Some(v.span()),
                format!(
                    "only used with `tls = \"verify-full\"` (the connection is {})",
                    tls.name()
                ),
            )));
        }
        Some(v) => {
            let file = ctx.path(v.get_ref());
            if !file.is_file() {
                return Err(Failure::Problem((
                    "store.ca_file",
                    Some(v.span()),
                    format!(
                        "expected a readable PEM file, but {} does not exist",
                        file.display()
                    ),
                )));
            }
            Some(file)
        }
    };
    Ok(PostgresConfig {
        url: DatabaseUrl(url.0),
        pool_size,
        connect_timeout,
        statement_timeout,
        tls,
        ca_file,
    })
}

/// A PostgreSQL database named by its URL alone, with the settings `[store]` would give it by
/// default (TLS off for a loopback host or a unix socket, else verified), for commands that
/// take a database on the command line. The error never quotes the URL.
pub fn postgres_from_url(url: &str) -> Result<PostgresConfig, String> {
    let parsed = parse_url(url)?;
    Ok(PostgresConfig {
        url: DatabaseUrl(url.to_owned()),
        pool_size: DEFAULT_POOL_SIZE,
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
        tls: if local_only(&parsed) {
            PgTls::Disable
        } else {
            PgTls::VerifyFull
        },
        ca_file: None,
    })
}

/// Checks a connection URL without ever quoting it: it may hold a password.
fn parse_url(url: &str) -> Result<tokio_postgres::Config, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(
            "expected a URL such as \"postgres://user:password@host:5432/database\"".into(),
        );
    }
    if url.contains("sslmode=") {
        return Err("set TLS with `store.tls`, not `sslmode` in the URL".into());
    }
    let config = tokio_postgres::Config::from_str(url)
        .map_err(|_| "not a valid PostgreSQL connection URL (the value is not shown)".to_owned())?;
    if config.get_hosts().is_empty() {
        return Err("the URL names no host".into());
    }
    if config.get_dbname().is_none() {
        return Err("the URL names no database (…/DATABASE at its end)".into());
    }
    Ok(config)
}

/// Whether every host of the URL is on this machine (loopback or a unix socket), where
/// traffic never crosses a network and TLS only costs time.
fn local_only(config: &tokio_postgres::Config) -> bool {
    config.get_hosts().iter().all(|host| match host {
        tokio_postgres::config::Host::Unix(_) => true,
        tokio_postgres::config::Host::Tcp(name) => {
            name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, parse_str};

    /// A site, and the secret gateways on a shared database need.
    const SITE: &str = "[server]\nlisten = \"127.0.0.1:8080\"\n\n[[site]]\nhosts = [\"localhost\"]\nupstream = \"http://127.0.0.1:8000\"\n\n[auth]\nsecret = \"a-secret-of-at-least-32-characters-here\"\n";

    fn parse(store: &str) -> Result<Config, ConfigError> {
        parse_str(
            &format!("{SITE}\n[store]\n{store}\n"),
            Path::new("gateway.toml"),
            Path::new("/nonexistent-base"),
        )
    }

    fn postgres(store: &str) -> PostgresConfig {
        match parse(store).expect("valid").store.backend {
            StoreBackend::Postgres(p) => p,
            other => panic!("expected postgres, got {other:?}"),
        }
    }

    /// The key and problem of the error `store` gives.
    fn problem(store: &str) -> (String, String) {
        match parse(store) {
            Err(ConfigError::Invalid { key, problem, .. }) => (key, problem),
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn gateways_on_postgres_need_a_configured_secret() {
        let bare = parse_str(
            "[server]\nlisten = \"127.0.0.1:8080\"\n\n[[site]]\nhosts = [\"localhost\"]\n\
             upstream = \"http://127.0.0.1:8000\"\n\n[store]\nbackend = \"postgres\"\n\
             url = \"postgres://pg@db.example.com/gate\"\n",
            Path::new("gateway.toml"),
            Path::new("/nonexistent-base"),
        );
        match bare {
            Err(ConfigError::Invalid { key, problem, .. }) => {
                assert_eq!(key, "auth.secret");
                assert!(problem.contains("same secret"), "{problem}");
            }
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn redb_is_the_default_and_takes_no_database_settings() {
        assert_eq!(parse("").expect("valid").store.backend, StoreBackend::Redb);
        assert_eq!(
            parse("backend = \"redb\"").expect("valid").store.backend,
            StoreBackend::Redb
        );
        let (key, problem) = problem("backend = \"redb\"\npool_size = 4");
        assert_eq!(key, "store.pool_size");
        assert!(problem.contains("postgres"), "{problem}");
        assert_eq!(problem_key("url = \"postgres://h/db\""), "store.url");
    }

    fn problem_key(store: &str) -> String {
        problem(store).0
    }

    #[test]
    fn postgres_defaults_depend_on_where_the_database_is() {
        let remote =
            postgres("backend = \"postgres\"\nurl = \"postgres://pg@db.example.com/gate\"");
        assert_eq!(remote.pool_size, 16);
        assert_eq!(remote.connect_timeout, Duration::from_secs(5));
        assert_eq!(remote.statement_timeout, Duration::from_secs(5));
        assert_eq!(remote.tls, PgTls::VerifyFull, "a remote host is verified");
        assert_eq!(remote.ca_file, None);
        for local in [
            "postgres://pg@127.0.0.1:5433/gate",
            "postgres://pg@localhost/gate",
            "postgres://pg@%2Frun%2Fpostgresql/gate",
        ] {
            let c = postgres(&format!("backend = \"postgres\"\nurl = \"{local}\""));
            assert_eq!(c.tls, PgTls::Disable, "{local} stays on this machine");
        }
        let set = postgres(
            "backend = \"postgres\"\nurl = \"postgres://pg@127.0.0.1/gate\"\npool_size = 4\n\
             connect_timeout = \"2s\"\nstatement_timeout = \"250ms\"\ntls = \"require\"",
        );
        assert_eq!(set.pool_size, 4);
        assert_eq!(set.connect_timeout, Duration::from_secs(2));
        assert_eq!(set.statement_timeout, Duration::from_millis(250));
        assert_eq!(set.tls, PgTls::Require);
    }

    #[test]
    fn the_url_comes_from_exactly_one_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("db-url");
        std::fs::write(&file, "postgres://pg:pw@db.example.com/gate\n").expect("write");
        let from_file = format!("url_file = \"{}\"", file.display());
        let c = postgres(&format!("backend = \"postgres\"\n{from_file}"));
        assert_eq!(c.url.0, "postgres://pg:pw@db.example.com/gate");
        let (key, both) = problem(&format!(
            "backend = \"postgres\"\nurl = \"postgres://h/db\"\n{from_file}"
        ));
        assert_eq!(key, "store.url");
        assert!(both.contains("only one"), "{both}");
        let (key, none) = problem("backend = \"postgres\"");
        assert_eq!(key, "store.url");
        assert!(none.contains("url_env"), "{none}");
        let (key, _) = problem("backend = \"postgres\"\nurl_env = \"PAGEGATE_TEST_UNSET_URL\"");
        assert_eq!(key, "store.url_env");
    }

    #[test]
    fn each_database_setting_is_checked_by_name() {
        let base = "backend = \"postgres\"\nurl = \"postgres://pg@db.example.com/gate\"\n";
        for (extra, key) in [
            ("pool_size = 0", "store.pool_size"),
            ("pool_size = 100000", "store.pool_size"),
            ("connect_timeout = \"soon\"", "store.connect_timeout"),
            ("statement_timeout = \"0s\"", "store.statement_timeout"),
            ("tls = \"prefer\"", "store.tls"),
            ("tls = \"disable\"\nca_file = \"ca.pem\"", "store.ca_file"),
            ("ca_file = \"missing.pem\"", "store.ca_file"),
        ] {
            assert_eq!(problem_key(&format!("{base}{extra}")), key, "{extra}");
        }
        assert_eq!(problem_key("backend = \"mysql\""), "store.backend");
        for url in [
            "db.example.com",
            "postgres://pg@db.example.com/gate?sslmode=disable",
            "postgres://pg@db.example.com",
        ] {
            let (key, _) = problem(&format!("backend = \"postgres\"\nurl = \"{url}\""));
            assert_eq!(key, "store.url", "{url}");
        }
    }

    #[test]
    fn a_url_alone_gets_the_default_settings() {
        let local = postgres_from_url("postgres://pg@127.0.0.1:5433/gate").expect("valid");
        assert_eq!(local.tls, PgTls::Disable);
        assert_eq!(local.pool_size, DEFAULT_POOL_SIZE);
        assert_eq!(local.statement_timeout, DEFAULT_STATEMENT_TIMEOUT);
        let remote = postgres_from_url("postgresql://pg@db.example.com/gate").expect("valid");
        assert_eq!(remote.tls, PgTls::VerifyFull);
        let secret = "hunter2-very-secret";
        let refused = postgres_from_url(&format!("postgres://pg:{secret}@db.example.com"))
            .expect_err("no database");
        assert!(!refused.contains(secret), "{refused}");
    }

    #[test]
    fn the_password_never_shows() {
        let secret = "hunter2-very-secret";
        let c = postgres(&format!(
            "backend = \"postgres\"\nurl = \"postgres://pg:{secret}@db.example.com/gate\""
        ));
        let debug = format!("{c:?}");
        assert!(!debug.contains(secret), "{debug}");
        let config = parse(&format!(
            "backend = \"postgres\"\nurl = \"postgres://pg:{secret}@db.example.com/gate\""
        ))
        .expect("valid");
        assert!(!format!("{config:?}").contains(secret));
        for bad in [
            format!("postgres://pg:{secret}@db.example.com/gate?sslmode=require"),
            format!("postgres://pg:{secret}@db.example.com/gate?port=notaport"),
            format!("postgres://pg:{secret}@db.example.com"),
        ] {
            let message = parse(&format!("backend = \"postgres\"\nurl = \"{bad}\""))
                .expect_err("invalid")
                .to_string();
            assert!(!message.contains(secret), "{message}");
        }
    }
}
