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
    /// How one-time codes and sign-in links are mailed.
    pub(crate) mail: Option<Spanned<FileMail>>,
    /// Codes, sessions, limits and identity headers.
    pub(crate) auth: Option<Spanned<FileAuth>>,
    /// Who may use the admin page.
    pub(crate) admin: Option<Spanned<FileAdmin>>,
    /// Keys for the grant endpoint and the admin API.
    #[serde(default)]
    pub(crate) api_key: Vec<Spanned<FileApiKey>>,
    /// Where the Prometheus metrics are served.
    pub(crate) metrics: Option<Spanned<FileMetrics>>,
    /// Which database, and how long it keeps records that only matter for a while.
    pub(crate) store: Option<Spanned<FileStore>>,
}

/// `[metrics]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileMetrics {
    /// A separate plain-HTTP listener serving `/metrics`, `host:port`.
    pub(crate) listen: Option<Spanned<String>>,
    /// Also serve `{prefix}/metrics` on every site (needs a token).
    pub(crate) on_sites: Option<Spanned<bool>>,
    /// Bearer token a scraper must send, inline (prefer `token_file` or `token_env`).
    pub(crate) token: Option<Spanned<String>>,
    /// File holding the token.
    pub(crate) token_file: Option<Spanned<String>>,
    /// Environment variable holding the token.
    pub(crate) token_env: Option<Spanned<String>>,
}

/// `[store]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileStore {
    /// How long audit entries are kept, e.g. "365d", or "forever".
    pub(crate) audit_retention: Option<Spanned<String>>,
    /// How long a grant's order id is remembered for idempotency, e.g. "90d", or "forever".
    pub(crate) grant_retention: Option<Spanned<String>>,
    /// `redb` (default: a file in `data_dir`) or `postgres` (a database shared by gateways).
    pub(crate) backend: Option<Spanned<String>>,
    /// PostgreSQL connection URL inline (prefer `url_file` or `url_env`: it holds a password).
    pub(crate) url: Option<Spanned<String>>,
    /// File holding the URL.
    pub(crate) url_file: Option<Spanned<String>>,
    /// Environment variable holding the URL.
    pub(crate) url_env: Option<Spanned<String>>,
    /// Most connections to the database.
    pub(crate) pool_size: Option<Spanned<i64>>,
    /// Bound on opening a connection.
    pub(crate) connect_timeout: Option<Spanned<String>>,
    /// Bound on each statement.
    pub(crate) statement_timeout: Option<Spanned<String>>,
    /// `disable`, `require` or `verify-full`.
    pub(crate) tls: Option<Spanned<String>>,
    /// Extra CA certificates for `verify-full`.
    pub(crate) ca_file: Option<Spanned<String>>,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAdmin {
    /// Emails that may sign in to `{prefix}/admin/` with a one-time code.
    #[serde(default)]
    pub(crate) emails: Vec<Spanned<String>>,
}

/// `[[api_key]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileApiKey {
    /// A name for logs and the audit log.
    pub(crate) name: Option<Spanned<String>>,
    /// The shared secret inline (prefer `secret_file` or `secret_env`).
    pub(crate) secret: Option<Spanned<String>>,
    /// File holding the secret.
    pub(crate) secret_file: Option<Spanned<String>>,
    /// Environment variable holding the secret.
    pub(crate) secret_env: Option<Spanned<String>>,
    /// What the key may do: `grant` and/or `admin`.
    pub(crate) scopes: Option<Spanned<Vec<Spanned<String>>>>,
    /// Site names the key is limited to (default: all).
    pub(crate) sites: Option<Vec<Spanned<String>>>,
    /// Page ids the key is limited to (default: all).
    pub(crate) pages: Option<Vec<Spanned<String>>>,
}

/// `[mail]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileMail {
    /// `smtp`, `console` (print messages on standard output) or `file` (one .eml per message).
    pub(crate) transport: Option<Spanned<String>>,
    /// Sender, e.g. `"Demo School <no-reply@example.com>"`.
    pub(crate) from: Option<Spanned<String>>,
    /// Folder for the `file` transport; relative to the config file.
    pub(crate) dir: Option<Spanned<String>>,
    /// SMTP server settings, for the `smtp` transport.
    pub(crate) smtp: Option<Spanned<FileSmtp>>,
    /// How long a message refused for a temporary reason keeps being retried; "0s" for never.
    pub(crate) retry_for: Option<Spanned<String>>,
}

/// `[mail.smtp]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSmtp {
    /// Server host name.
    pub(crate) host: Option<Spanned<String>>,
    /// Port; defaults by `security`: 587 starttls, 465 tls, 25 none.
    pub(crate) port: Option<Spanned<i64>>,
    /// `starttls` (default), `tls` (implicit TLS) or `none`.
    pub(crate) security: Option<Spanned<String>>,
    /// Login name, if the server wants authentication.
    pub(crate) username: Option<String>,
    /// Password inline (prefer `password_file` or `password_env`).
    pub(crate) password: Option<Spanned<String>>,
    /// File holding the password.
    pub(crate) password_file: Option<Spanned<String>>,
    /// Environment variable holding the password.
    pub(crate) password_env: Option<Spanned<String>>,
    /// Bound on each SMTP exchange.
    pub(crate) timeout: Option<Spanned<String>>,
}

/// `[auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAuth {
    /// Digits in a one-time code (4 to 10).
    pub(crate) code_length: Option<Spanned<i64>>,
    /// How long a code and its sign-in link stay valid.
    pub(crate) code_ttl: Option<Spanned<String>>,
    /// How long a shop's sign-in link (a grant's `signin_url`) stays valid.
    pub(crate) signin_link_ttl: Option<Spanned<String>>,
    /// Wrong codes allowed per email in one browser before its codes die there.
    pub(crate) max_attempts: Option<Spanned<i64>>,
    /// Wrong codes allowed per email over all browsers.
    pub(crate) max_attempts_per_email: Option<Spanned<i64>>,
    /// How long wrong tries are remembered (and a locked email stays locked).
    pub(crate) attempt_window: Option<Spanned<String>>,
    /// Default session lifetime for pages that do not set one.
    pub(crate) session_lifetime: Option<Spanned<String>>,
    /// Key material for signing cookies; shared by gateways serving the same sites. Without it a
    /// key is generated into `data_dir/secret.key`.
    pub(crate) secret: Option<Spanned<String>>,
    /// File holding the secret.
    pub(crate) secret_file: Option<Spanned<String>>,
    /// Environment variable holding the secret.
    pub(crate) secret_env: Option<Spanned<String>>,
    /// Secrets used before `secret`, still accepted for sessions, codes and links made with
    /// them, so a configured secret can be rotated without signing everyone out.
    pub(crate) previous_secrets: Option<Spanned<Vec<Spanned<String>>>>,
    /// File holding previous secrets, one per line.
    pub(crate) previous_secrets_file: Option<Spanned<String>>,
    /// How long a generated secret replaced by `pagegate rotate-key` stays accepted.
    pub(crate) key_grace: Option<Spanned<String>>,
    /// Tell the upstream who is signed in with identity headers.
    pub(crate) identity_headers: Option<bool>,
    /// Header carrying the signed-in email.
    pub(crate) email_header: Option<Spanned<String>>,
    /// Header carrying the client's name.
    pub(crate) name_header: Option<Spanned<String>>,
    /// Header carrying the page id.
    pub(crate) page_header: Option<Spanned<String>>,
    /// Folder with templates overriding the built-in pages and mail.
    pub(crate) templates: Option<Spanned<String>>,
    /// Code requests one email may make per hour.
    pub(crate) email_codes_per_hour: Option<Spanned<i64>>,
    /// Minimum wait between two codes for one email.
    pub(crate) resend_after: Option<Spanned<String>>,
    /// Code requests one client address may make per hour.
    pub(crate) ip_codes_per_hour: Option<Spanned<i64>>,
    /// Code checks one client address may make per hour.
    pub(crate) ip_verifies_per_hour: Option<Spanned<i64>>,
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
    /// Threads serving connections, each with its own event loop; default: one per core.
    pub(crate) workers: Option<Spanned<i64>>,
    /// Keep each worker on a CPU of its own; default: when there is one worker per usable CPU.
    pub(crate) pin_workers: Option<bool>,
    /// One log line per request, target `pagegate::access`.
    pub(crate) access_log: Option<bool>,
    /// Put the signed-in visitor's email in access log lines.
    pub(crate) access_log_email: Option<bool>,
    /// A file the access log is appended to, instead of stderr.
    pub(crate) access_log_path: Option<Spanned<String>>,
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
    /// Idle keep-alive connections to the upstream kept per worker.
    pub(crate) upstream_keepalive: Option<Spanned<i64>>,
    /// The site's public base URL, e.g. `https://course.example.com`; links in mail use it.
    pub(crate) public_url: Option<Spanned<String>>,
    /// Certificate and key served for this site's hosts on `tls_listen` (chosen by SNI).
    pub(crate) tls: Option<Spanned<FileTls>>,
    /// Redirect plain-HTTP requests to HTTPS (default: true when the site has `tls`).
    pub(crate) redirect_http: Option<Spanned<bool>>,
    /// Language of pagegate's pages when the browser asks for none we have: `en` or `ru`.
    pub(crate) language: Option<Spanned<String>>,
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
    /// How long a sign-in lasts for this page, e.g. "30d".
    pub(crate) session_lifetime: Option<Spanned<String>>,
    /// What caches may keep of this page's answers: "private" or "no-store".
    pub(crate) cache: Option<Spanned<String>>,
}
