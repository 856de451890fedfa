//! The configuration file exactly as written: serde structs that reject unknown keys.
//!
//! Values that need checking are kept as `Spanned` strings so that validation can point at the
//! line that holds them; `super::validate` turns this into the typed [`super::Config`].

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    /// Where the database and the generated secret key live; relative to the config file.
    pub(crate) data_dir: Option<Spanned<String>>,
    /// Listeners and gateway-wide settings.
    pub(crate) server: Option<Spanned<FileServer>>,
    /// One block per site pagegate fronts.
    #[serde(default)]
    pub(crate) site: Vec<Spanned<FileSite>>,
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileServer {
    /// Plain HTTP listener, `host:port`.
    pub(crate) listen: Option<Spanned<String>>,
    /// HTTPS listener, `host:port`; certificates come from each site's `tls`.
    pub(crate) tls_listen: Option<Spanned<String>>,
    /// Path under which pagegate's own endpoints live on every site.
    pub(crate) prefix: Option<Spanned<String>>,
    /// Front proxies (CIDR or single address) whose `X-Forwarded-*` and `Forwarded` are believed.
    #[serde(default)]
    pub(crate) trusted_proxies: Vec<Spanned<String>>,
    /// How long in-flight requests may run after a shutdown signal, e.g. "30s".
    pub(crate) shutdown_grace: Option<Spanned<String>>,
    /// How long a client may take to send a request's headers (also the keep-alive idle limit).
    pub(crate) header_read_timeout: Option<Spanned<String>>,
    /// How long a TLS handshake may take.
    pub(crate) tls_handshake_timeout: Option<Spanned<String>>,
    /// Most client connections open at once; further ones wait in the listen backlog.
    pub(crate) max_connections: Option<Spanned<i64>>,
}

/// `[[site]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSite {
    /// A short name for logs; defaults to the first host.
    pub(crate) name: Option<Spanned<String>>,
    /// Human title shown on pagegate's pages and in mail.
    pub(crate) title: Option<String>,
    /// Host header values this site answers: exact names, `*.example.com`, or `*` for any.
    pub(crate) hosts: Option<Spanned<Vec<Spanned<String>>>>,
    /// `http://host:port` or `https://host:port` of the site being fronted.
    pub(crate) upstream: Option<Spanned<String>>,
    /// PEM file with extra CA certificates trusted for an https upstream.
    pub(crate) upstream_ca: Option<Spanned<String>>,
    /// Speak HTTP/2 with prior knowledge (h2c) to a plain-HTTP upstream.
    #[serde(default)]
    pub(crate) upstream_http2: bool,
    /// Forward the client's Host header (true) or the upstream's own authority (false).
    pub(crate) preserve_host: Option<bool>,
    /// How long connecting to the upstream may take before answering 504.
    pub(crate) connect_timeout: Option<Spanned<String>>,
    /// How long the upstream may take to send response headers before answering 504.
    pub(crate) response_timeout: Option<Spanned<String>>,
    /// The site's public base URL, e.g. `https://course.example.com`; links in mail use it.
    pub(crate) public_url: Option<Spanned<String>>,
    /// Certificate and key served for this site's hosts on `tls_listen` (chosen by SNI).
    pub(crate) tls: Option<Spanned<FileTls>>,
    /// Redirect plain-HTTP requests to HTTPS (default: true when the site has `tls`).
    pub(crate) redirect_http: Option<Spanned<bool>>,
    /// Protected pages of this site.
    #[serde(default)]
    pub(crate) page: Vec<Spanned<FilePage>>,
}

/// `tls = { cert = "...", key = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTls {
    /// PEM certificate chain, leaf first.
    pub(crate) cert: Spanned<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub(crate) key: Spanned<String>,
}

/// `[[site.page]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePage {
    /// Identifier used by the CLI, the API and the grant endpoint; unique across the gateway.
    pub(crate) id: Option<Spanned<String>>,
    /// Human title shown on the forms and in mail.
    pub(crate) title: Option<String>,
    /// Path prefixes that belong to this page.
    pub(crate) paths: Option<Spanned<Vec<Spanned<String>>>>,
}
