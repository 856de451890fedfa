//! The database's settings, as `[store]` gives them once validated (`config::store` checks them;
//! they live here so the store needs nothing from the configuration module).

use std::path::PathBuf;
use std::time::Duration;

/// A PostgreSQL connection URL. It usually holds the password, so it never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl([redacted])")
    }
}

/// `[store] backend = "postgres"`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// The connection URL (`postgres://user:password@host:port/db`).
    pub url: DatabaseUrl,
    /// Most connections kept open.
    pub pool_size: usize,
    /// Bound on opening one connection (and the TLS handshake).
    pub connect_timeout: Duration,
    /// Bound on each statement, set on every connection.
    pub statement_timeout: Duration,
    /// Whether and how the connection is encrypted.
    pub tls: PgTls,
    /// Extra CA certificates (PEM) trusted for the server's certificate, for `verify-full`.
    pub ca_file: Option<PathBuf>,
}

/// `store.tls`, after libpq's `sslmode` values of the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgTls {
    /// Plain TCP (or a unix socket): only where the path to the database is trusted.
    Disable,
    /// Encrypted, but any certificate is accepted: stops eavesdroppers, not impostors.
    Require,
    /// Encrypted, and the certificate must be valid for the host name (platform roots and
    /// `ca_file`).
    VerifyFull,
}

impl PgTls {
    /// The value as written in the file.
    pub fn name(self) -> &'static str {
        match self {
            PgTls::Disable => "disable",
            PgTls::Require => "require",
            PgTls::VerifyFull => "verify-full",
        }
    }
}
