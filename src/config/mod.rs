//! Configuration: the TOML file, its validation, and the typed [`Config`] the gateway runs on.
//!
//! Loading is two steps, as in sozu and rpxy: [`file`] mirrors the file with
//! `deny_unknown_fields`, then [`validate`] checks every rule and builds [`Config`]. Each error
//! names the file, the line where it is known, the key and what was expected, because the person
//! reading it is an admin with the file open in an editor.

mod file;
mod store;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use store::{DatabaseUrl, PgTls, PostgresConfig, StoreBackend, postgres_from_url};
pub use validate::parse_str;

/// Default path for pagegate's own endpoints.
pub const DEFAULT_PREFIX: &str = "/_pagegate";

/// A configuration that passed every check.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (absolute), which a reload reads again; `None` for a
    /// configuration that has no file (the demo's, or one parsed from text).
    pub source: Option<PathBuf>,
    /// Where the database and generated secrets live (absolute, or relative to the working dir).
    pub data_dir: PathBuf,
    /// Listeners and gateway-wide settings.
    pub server: ServerConfig,
    /// The sites, in file order; routing refers to them by index.
    pub sites: Vec<SiteConfig>,
    /// How mail is sent.
    pub mail: MailConfig,
    /// Codes, sessions, limits, identity headers.
    pub auth: AuthConfig,
    /// Normalised emails of the admins.
    pub admin_emails: Vec<String>,
    /// Keys for the grant endpoint and the admin API.
    pub api_keys: Vec<ApiKeyConfig>,
    /// Where the Prometheus metrics are served.
    pub metrics: MetricsConfig,
    /// Which database, and the retention of the records that only matter for a while.
    pub store: StoreConfig,
}

/// `[metrics]`, validated. Metrics are always collected; this says only where they are served.
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    /// A separate plain-HTTP listener answering `GET /metrics`; `None` is no listener.
    pub listen: Option<SocketAddr>,
    /// Whether `GET {prefix}/metrics` answers on every site (always with `token`).
    pub on_sites: bool,
    /// Bearer token every `/metrics` request must carry, on the listener and on the sites.
    pub token: Option<Secret>,
}

/// `[store]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// How long audit entries are kept; `None` keeps them forever.
    pub audit_retention: Option<Duration>,
    /// How long a grant's order id is remembered, so that a repeat is answered like the first
    /// and changes nothing; `None` remembers it forever.
    pub grant_retention: Option<Duration>,
    /// Where the records live.
    pub backend: StoreBackend,
}

impl StoreConfig {
    /// The retention the store's pruning applies, in seconds.
    pub fn retention(&self) -> crate::store::Retention {
        let seconds =
            |d: Option<Duration>| d.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        crate::store::Retention {
            audit: seconds(self.audit_retention),
            grants: seconds(self.grant_retention),
        }
    }
}

/// One `[[api_key]]`, validated.
#[derive(Debug, Clone)]
pub struct ApiKeyConfig {
    /// Name, unique.
    pub name: String,
    /// The shared secret (Bearer token and HMAC key).
    pub secret: Secret,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Site names it is limited to; `None` is all.
    pub sites: Option<Vec<String>>,
    /// Page ids it is limited to; `None` is all.
    pub pages: Option<Vec<String>>,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Call the grant endpoint.
    Grant,
    /// Use the admin API.
    Admin,
}

impl ApiKeyConfig {
    /// Whether the key may act on `page` of `site`.
    pub fn covers(&self, site: &str, page: &str) -> bool {
        self.sites
            .as_ref()
            .is_none_or(|s| s.iter().any(|x| x == site))
            && self
                .pages
                .as_ref()
                .is_none_or(|p| p.iter().any(|x| x == page))
    }
}

/// `[mail]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailConfig {
    /// Where messages go.
    pub transport: MailTransport,
    /// The sender mailbox, e.g. `Demo School <no-reply@example.com>`.
    pub from: String,
    /// How long a message refused for a temporary reason keeps being retried (never beyond the
    /// code it carries); zero sends each message once.
    pub retry_for: Duration,
}

/// Where messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailTransport {
    /// Printed on standard output: for the demo and development.
    Console,
    /// One `.eml` file per message in this folder.
    File(PathBuf),
    /// A real SMTP server.
    Smtp(SmtpConfig),
}

/// `[mail.smtp]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// How the connection is protected.
    pub security: SmtpSecurity,
    /// Login, if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<Secret>,
    /// Bound on each exchange with the server.
    pub timeout: Duration,
}

/// SMTP connection security.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required).
    StartTls,
    /// TLS from the first byte.
    Tls,
    /// No TLS at all: only for a relay on the same host or network.
    None,
}

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// `[auth]`, validated.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Digits per code.
    pub code_length: usize,
    /// Validity of a code and its link.
    pub code_ttl: Duration,
    /// Validity of a shop's sign-in link: the `signin_url` a grant answers with, which the shop
    /// sends the buyer's browser to right after payment.
    pub signin_link_ttl: Duration,
    /// Wrong codes allowed per email in one browser within `attempt_window`.
    pub max_attempts: u32,
    /// Wrong codes allowed per email over all browsers within `attempt_window`.
    pub max_attempts_per_email: u32,
    /// How long wrong tries count.
    pub attempt_window: Duration,
    /// Default session lifetime.
    pub session_lifetime: Duration,
    /// Cookie signing secret from the config; `None` means generate one into `data_dir`.
    pub secret: Option<Secret>,
    /// Earlier configured secrets, still accepted (never used to sign or hash anything new).
    pub previous_secrets: Vec<Secret>,
    /// How long a generated secret replaced by a rotation stays accepted.
    pub key_grace: Duration,
    /// Whether identity headers are sent upstream.
    pub identity_headers: bool,
    /// Header names for the signed-in email, name and page.
    pub email_header: http::HeaderName,
    /// See `email_header`.
    pub name_header: http::HeaderName,
    /// See `email_header`.
    pub page_header: http::HeaderName,
    /// Folder of template overrides.
    pub templates: Option<PathBuf>,
    /// Code requests per email per hour.
    pub email_codes_per_hour: u32,
    /// Minimum wait between codes for one email.
    pub resend_after: Duration,
    /// Code requests per client address per hour.
    pub ip_codes_per_hour: u32,
    /// Code checks per client address per hour.
    pub ip_verifies_per_hour: u32,
}

/// Languages pagegate's pages and mail are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    /// English.
    En,
    /// Russian.
    Ru,
}

impl Language {
    /// Every language, in the order offered.
    pub const ALL: [Language; 2] = [Language::En, Language::Ru];

    /// The ISO 639-1 code.
    pub fn code(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::Ru => "ru",
        }
    }

    /// The language with this ISO 639-1 code.
    pub fn from_code(code: &str) -> Option<Language> {
        Language::ALL
            .into_iter()
            .find(|l| l.code().eq_ignore_ascii_case(code))
    }
}

/// `[server]`, validated.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Plain HTTP listener.
    pub listen: Option<SocketAddr>,
    /// HTTPS listener.
    pub tls_listen: Option<SocketAddr>,
    /// Path prefix of pagegate's own endpoints, starting with `/`, no trailing `/`.
    pub prefix: String,
    /// Front proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Bound on how long in-flight requests may finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Bound on receiving a request's headers, and on a keep-alive connection's idle time.
    pub header_read_timeout: Duration,
    /// Bound on a TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Most client connections served at once.
    pub max_connections: usize,
    /// Threads serving connections, each with its own event loop.
    pub workers: usize,
    /// Whether each worker is kept on a CPU of its own (see `runtime::workers`).
    pub pin_workers: bool,
    /// Whether each request is logged at `info` with target `pagegate::access`.
    pub access_log: bool,
    /// Whether access log lines name the signed-in visitor's email.
    pub access_log_email: bool,
    /// The file access log lines are appended to; `None`: stderr, beside the other log lines.
    pub access_log_path: Option<PathBuf>,
}

/// One `[[site]]`, validated.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// Name used in logs.
    pub name: String,
    /// Human title.
    pub title: String,
    /// Which Host values select this site.
    pub hosts: Vec<HostPattern>,
    /// Where requests go.
    pub upstream: UpstreamConfig,
    /// Certificate for this site's hosts, if it is served over TLS.
    pub tls: Option<TlsFiles>,
    /// The site's public base URL, used for links in mail.
    pub public_url: Option<String>,
    /// Answer plain-HTTP requests with a redirect to HTTPS.
    pub redirect_http: bool,
    /// Language of pagegate's pages when the browser states no usable preference.
    pub language: Language,
    /// Protected pages.
    pub pages: Vec<PageConfig>,
}

/// How a site's upstream is reached.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    /// `host[:port]` of the upstream.
    pub authority: http::uri::Authority,
    /// Extra CA certificates (PEM) for an https upstream.
    pub ca_file: Option<PathBuf>,
    /// Use HTTP/2 with prior knowledge on a plain upstream.
    pub http2: bool,
    /// Forward the client's Host header rather than the upstream authority.
    pub preserve_host: bool,
    /// Bound on connecting.
    pub connect_timeout: Duration,
    /// Bound on waiting for response headers.
    pub response_timeout: Duration,
    /// Idle HTTP/1.1 connections kept per worker after their answers (0: none, each request
    /// opens its own).
    pub keepalive: usize,
}

/// Certificate and key files of a site.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM chain.
    pub cert: PathBuf,
    /// PEM key.
    pub key: PathBuf,
}

/// A Host pattern from `hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// A lower-cased name or address literal, e.g. `example.com`, `127.0.0.1`, `[::1]`.
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` (stored as `.example.com`).
    Suffix(String),
    /// `*`: any host not claimed by another site.
    Any,
}

/// One `[[site.page]]`, validated.
#[derive(Debug, Clone)]
pub struct PageConfig {
    /// Unique identifier.
    pub id: String,
    /// Human title.
    pub title: String,
    /// Path prefixes, each starting with `/`.
    pub paths: Vec<String>,
    /// How long a sign-in lasts for this page.
    pub session_lifetime: Duration,
    /// What caches may keep of the answers to signed-in visitors.
    pub cache: PageCache,
}

/// What caches may keep of a protected page's answers. Shared caches (a CDN, a caching proxy in
/// front of the gateway) never may: one visitor's paid file would be served to the next without
/// pagegate seeing the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PageCache {
    /// `Cache-Control: private`: the visitor's own browser may keep and reuse the answer
    /// (videos and downloads resume from it), shared caches may not.
    #[default]
    Private,
    /// `Cache-Control: no-store`: nothing may keep it, not even the browser (personal pages
    /// that must be gone from a shared computer after signing out).
    NoStore,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read the configuration")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a key of the wrong type or an unknown key.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, which includes line, column and the offending text.
        message: String,
    },
    /// A value is present but not acceptable.
    #[error("{path}{}: `{key}`: {problem}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the value, where known.
        line: Option<usize>,
        /// Dotted key, e.g. `site[0].upstream`.
        key: String,
        /// What is wrong and what is expected.
        problem: String,
    },
}

impl ConfigError {
    /// The key the error is about, where there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Reads and validates a configuration file. Relative paths inside it are taken from the file's
/// own directory, so a config works the same whatever the working directory is.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // Absolute, so that a reload finds the same file and the same relative paths whatever the
    // working directory is by then; errors still name the file as it was given.
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base = absolute
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let mut config = parse_str(&text, path, base)?;
    config.source = Some(absolute.clone());
    Ok(config)
}

/// The data directory a configuration file names, without validating anything else, so that
/// `pagegate reload` can reach the running gateway (and show its verdict) even when the file now
/// has mistakes. Fails only when the file cannot be read or is not TOML at all.
pub fn data_dir_of(path: &Path) -> Result<PathBuf, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base = absolute
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let dir = table
        .get("data_dir")
        .and_then(|v| v.as_str())
        .filter(|d| !d.trim().is_empty())
        .unwrap_or("data");
    Ok(base.join(dir))
}

impl SiteConfig {
    /// The page with this id, if the site has it.
    pub fn page(&self, id: &str) -> Option<&PageConfig> {
        self.pages.iter().find(|p| p.id == id)
    }
}

/// The cryptography of the HTTPS listener. aws-lc-rs signs RSA handshakes about twice as fast as
/// ring on current x86 CPUs, which is most of what a new HTTPS connection costs. The configuration
/// checks keys with the same provider that serves them, so a key `pagegate check` accepts is one
/// the listener can use.
pub(crate) fn tls_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

impl TlsFiles {
    /// Reads the PEM chain and key. The error says which file is wrong and why, for both config
    /// validation and certificate (re)loading at start.
    pub fn load(
        &self,
    ) -> Result<
        (
            Vec<rustls_pki_types::CertificateDer<'static>>,
            rustls_pki_types::PrivateKeyDer<'static>,
        ),
        String,
    > {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(&self.cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: not a PEM certificate chain: {e}", self.cert.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: holds no PEM certificate", self.cert.display()));
        }
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("{}: not a PEM private key: {e}", self.key.display()))?;
        rustls::sign::CertifiedKey::from_der(certs.clone(), key.clone_key(), &tls_provider())
            .map_err(|e| {
                format!(
                    "{} and {} do not belong together: {e}",
                    self.cert.display(),
                    self.key.display()
                )
            })?;
        Ok((certs, key))
    }
}
