//! Reaching the database: the connection pool with its timeouts and TLS, and the schema
//! migrations applied when a gateway opens the store.

use std::str::FromStr;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;

use super::{PgTls, PostgresConfig};
use crate::store::StoreError;

/// The migrations, in order; the schema's version is how many of them a database has.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_rate_limits.sql"),
    include_str!("migrations/0003_large_lists.sql"),
    include_str!("migrations/0004_count_triggers.sql"),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u64 = MIGRATIONS.len() as u64;

/// Any 64-bit number that stays the same: the advisory lock every gateway takes while it
/// migrates, so two starting together apply each migration once.
pub(super) const MIGRATION_LOCK: i64 = 0x7061_6765_6761_7465; // "pagegate"

/// How a database is named in messages: host and database, never the user or password.
pub(super) fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    format!(
        "PostgreSQL database {} on {host}",
        config.get_dbname().unwrap_or("?")
    )
}

/// The driver's settings from pagegate's: the URL, the timeouts and the TLS mode.
pub(super) fn driver_config(config: &PostgresConfig) -> Result<tokio_postgres::Config, StoreError> {
    let mut pg = tokio_postgres::Config::from_str(&config.url.0)
        .map_err(|_| StoreError::Backend("store.url is not a PostgreSQL URL".into()))?;
    pg.connect_timeout(config.connect_timeout);
    let statement_ms = config.statement_timeout.as_millis().max(1);
    let options = match pg.get_options() {
        Some(o) if !o.is_empty() => format!("{o} -c statement_timeout={statement_ms}"),
        _ => format!("-c statement_timeout={statement_ms}"),
    };
    pg.options(&options);
    pg.application_name("pagegate");
    pg.ssl_mode(match config.tls {
        PgTls::Disable => SslMode::Disable,
        PgTls::Require | PgTls::VerifyFull => SslMode::Require,
    });
    Ok(pg)
}

/// The pool: at most `pool_size` connections, each opened (TLS included) within
/// `connect_timeout`, and a caller waits for a free one no longer than that either. Must be
/// called inside the store's runtime.
pub(super) fn pool(
    config: &PostgresConfig,
    pg: tokio_postgres::Config,
) -> Result<Pool, StoreError> {
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match config.tls {
        PgTls::Disable => Manager::from_config(pg, tokio_postgres::NoTls, manager_config),
        PgTls::Require | PgTls::VerifyFull => Manager::from_config(
            pg,
            tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(config)?),
            manager_config,
        ),
    };
    Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(config.connect_timeout))
        .create_timeout(Some(config.connect_timeout))
        .build()
        .map_err(|e| StoreError::Backend(format!("database pool: {e}")))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// rustls for the database: `verify-full` checks the chain against the platform's roots and
/// `ca_file` and the name against the host; `require` only encrypts.
pub(super) fn tls_config(config: &PostgresConfig) -> Result<rustls::ClientConfig, StoreError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Backend(format!("TLS set-up: {e}")))?;
    if config.tls == PgTls::Require {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider())))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &config.ca_file {
        use rustls::pki_types::pem::PemObject;
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| StoreError::Backend(format!("store.ca_file {}: {e}", path.display())))?;
        for cert in certs {
            let cert = cert.map_err(|e| {
                StoreError::Backend(format!("store.ca_file {}: {e}", path.display()))
            })?;
            roots.add(cert).map_err(|e| {
                StoreError::Backend(format!("store.ca_file {}: {e}", path.display()))
            })?;
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `tls = "require"`: libpq's meaning, encryption without checking who answers. The handshake's
/// signatures are still verified, so the session keys belong to whoever holds the certificate.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The schema version recorded in the database; 0 for a database pagegate never used.
pub(super) async fn schema_version(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<u64, tokio_postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let version: Option<i64> = client
        .query_one("SELECT max(version) FROM schema_version", &[])
        .await?
        .get(0);
    Ok(version.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
}

/// Brings the database to [`SCHEMA_VERSION`] in one transaction under an advisory lock: a
/// gateway starting at the same moment waits, then finds the work done. A database a newer
/// pagegate migrated further is refused, naming both versions.
pub(super) async fn migrate(
    client: &mut deadpool_postgres::Object,
    name: &str,
) -> Result<u64, StoreError> {
    let tx = client.transaction().await.map_err(super::backend)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(super::backend)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version bigint PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(super::backend)?;
    let found = schema_version(&tx).await.map_err(super::backend)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Schema {
            path: name.to_owned(),
            found,
            expected: SCHEMA_VERSION,
            hint: "a newer pagegate migrated it; run that version (or newer) here too",
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as i64 + 1;
        tx.batch_execute(sql)
            .await
            .map_err(|e| StoreError::Backend(format!("{name}: migration {version} failed: {e}")))?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(super::backend)?;
    }
    tx.commit().await.map_err(super::backend)?;
    if found < SCHEMA_VERSION {
        tracing::info!(database = %name, from = found, to = SCHEMA_VERSION, "database schema migrated");
    }
    Ok(SCHEMA_VERSION)
}
