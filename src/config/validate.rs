//! Every configuration rule, from the file structs to [`Config`].

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::file::{
    FileAuth, FileConfig, FileMail, FileMetrics, FilePage, FileServer, FileSite, FileStore,
};
use super::{
    ApiKeyConfig, AuthConfig, Config, ConfigError, DEFAULT_PREFIX, HostPattern, Language,
    MailConfig, MailTransport, MetricsConfig, PageCache, PageConfig, Scope, Secret, ServerConfig,
    SiteConfig, SmtpConfig, SmtpSecurity, StoreConfig, TlsFiles, UpstreamConfig,
};

/// More connection workers than any machine pagegate runs on has cores.
const MAX_WORKERS: usize = 1024;
/// Default `site.upstream_keepalive`: what nginx deployments commonly set with `keepalive`. A
/// burst's extra connections close as their answers end instead of staying pooled, each holding
/// about 27 KiB here and a worker or a socket on the upstream; a busy upstream that sees steady
/// concurrency above it per worker wants it raised.
const DEFAULT_UPSTREAM_KEEPALIVE: usize = 64;
/// Upper bound of `site.upstream_keepalive`, against a typo keeping a million sockets.
const MAX_UPSTREAM_KEEPALIVE: usize = 65_536;
/// Default `mail.retry_for`: long enough to ride out a mail server's restart or greylisting,
/// and no longer than the default `auth.code_ttl`, past which a code mail is useless anyway.
const DEFAULT_MAIL_RETRY: Duration = Duration::from_secs(10 * 60);
/// Upper bound of `mail.retry_for`: the retry queue is in memory, on purpose (see `mail`).
/// Mail that must survive longer outages belongs to a local mail relay with a disk queue.
const MAX_MAIL_RETRY: Duration = Duration::from_secs(24 * 3600);
/// Default `store.audit_retention`: a year of history.
const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default `store.grant_retention`: shops retry an order within minutes or days; 90 days
/// covers late retries and manual re-sends with a wide margin.
const DEFAULT_GRANT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Shortest retention accepted: anything shorter would forget an order while a shop may
/// still retry it, or the audit entries an admin is about to read.
const MIN_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Parses and validates configuration text. `origin` names the file in errors; `base` is the
/// directory relative paths are taken from.
pub fn parse_str(
    text: &str,
    origin: &Path,
    base: &Path,
) -> std::result::Result<Config, ConfigError> {
    let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: origin.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let ctx = Ctx { text, origin, base };
    ctx.config(file)
}

struct Ctx<'a> {
    text: &'a str,
    origin: &'a Path,
    base: &'a Path,
}

type Result<T> = std::result::Result<T, ConfigError>;

/// Default `auth.signin_link_ttl`: a shop redirects the buyer right after payment, so the link
/// is opened within seconds; a quarter of an hour covers a slow payment page and a distracted
/// buyer.
const DEFAULT_SIGNIN_LINK_TTL: Duration = Duration::from_secs(15 * 60);
/// Bounds of `auth.signin_link_ttl`: under a minute the redirect itself may outrun it; over a day
/// it is no longer a link for "right after payment" but a long-lived credential in a URL.
const MIN_SIGNIN_LINK_TTL: Duration = Duration::from_secs(60);
const MAX_SIGNIN_LINK_TTL: Duration = Duration::from_secs(24 * 3600);

/// The longest `auth.key_grace` accepted.
const MAX_KEY_GRACE: Duration = Duration::from_secs(365 * 24 * 3600);

impl Ctx<'_> {
    fn invalid(
        &self,
        key: &str,
        span: Option<Range<usize>>,
        problem: impl Into<String>,
    ) -> ConfigError {
        let line = span.map(|s| {
            let end = s.start.min(self.text.len());
            self.text.as_bytes()[..end]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1
        });
        ConfigError::Invalid {
            path: self.origin.to_path_buf(),
            line,
            key: key.to_string(),
            problem: problem.into(),
        }
    }

    fn path(&self, raw: &str) -> PathBuf {
        let p = Path::new(raw);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn existing_file(&self, key: &str, value: &Spanned<String>) -> Result<PathBuf> {
        let path = self.path(value.get_ref());
        if !path.is_file() {
            return Err(self.invalid(
                key,
                Some(value.span()),
                format!(
                    "expected a readable file, but {} does not exist",
                    path.display()
                ),
            ));
        }
        Ok(path)
    }

    fn duration(
        &self,
        key: &str,
        value: Option<&Spanned<String>>,
        default: Duration,
    ) -> Result<Duration> {
        let Some(value) = value else {
            return Ok(default);
        };
        match humantime::parse_duration(value.get_ref().trim()) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(self.invalid(key, Some(value.span()), "expected a duration above zero")),
            Err(_) => Err(self.invalid(
                key,
                Some(value.span()),
                format!(
                    "expected a duration such as \"30s\" or \"5m\", got {:?}",
                    value.get_ref()
                ),
            )),
        }
    }

    /// A retention: a duration of at least [`MIN_RETENTION`], or `"forever"` (`None`).
    fn retention(
        &self,
        key: &str,
        value: Option<&Spanned<String>>,
        default: Duration,
    ) -> Result<Option<Duration>> {
        let Some(value) = value else {
            return Ok(Some(default));
        };
        let text = value.get_ref().trim();
        if text == "forever" {
            return Ok(None);
        }
        match humantime::parse_duration(text) {
            Ok(d) if d >= MIN_RETENTION => Ok(Some(d)),
            Ok(_) => Err(self.invalid(
                key,
                Some(value.span()),
                format!("expected at least 1 day (e.g. \"90d\"), or \"forever\"; got {text:?}"),
            )),
            Err(_) => Err(self.invalid(
                key,
                Some(value.span()),
                format!("expected a duration such as \"90d\", or \"forever\"; got {text:?}"),
            )),
        }
    }

    fn store(&self, store: Option<&Spanned<FileStore>>) -> Result<StoreConfig> {
        let empty = FileStore::default();
        let s = store.map_or(&empty, |s| s.get_ref());
        Ok(StoreConfig {
            audit_retention: self.retention(
                "store.audit_retention",
                s.audit_retention.as_ref(),
                DEFAULT_AUDIT_RETENTION,
            )?,
            grant_retention: self.retention(
                "store.grant_retention",
                s.grant_retention.as_ref(),
                DEFAULT_GRANT_RETENTION,
            )?,
        })
    }

    /// `mail.retry_for`: zero (no retries) up to [`MAX_MAIL_RETRY`].
    fn mail_retry(&self, value: Option<&Spanned<String>>) -> Result<Duration> {
        let Some(value) = value else {
            return Ok(DEFAULT_MAIL_RETRY);
        };
        let text = value.get_ref().trim();
        match humantime::parse_duration(text) {
            Ok(d) if d <= MAX_MAIL_RETRY => Ok(d),
            Ok(_) => Err(self.invalid(
                "mail.retry_for",
                Some(value.span()),
                format!(
                    "at most 24h: the retry queue is kept in memory; for longer outages relay through a local mail server with a disk queue (got {text:?})"
                ),
            )),
            Err(_) => Err(self.invalid(
                "mail.retry_for",
                Some(value.span()),
                format!("expected a duration such as \"10m\", or \"0s\" for no retries; got {text:?}"),
            )),
        }
    }

    fn config(&self, file: FileConfig) -> Result<Config> {
        let data_dir = match &file.data_dir {
            Some(d) if d.get_ref().trim().is_empty() => {
                return Err(self.invalid("data_dir", Some(d.span()), "expected a directory path"));
            }
            Some(d) => self.path(d.get_ref()),
            None => self.path("data"),
        };
        let Some(server) = &file.server else {
            return Err(self.invalid(
                "server",
                None,
                "missing [server] table: at least `listen` or `tls_listen` is required",
            ));
        };
        let mut server_config = self.server(server)?;
        let auth = self.auth(file.auth.as_ref())?;
        let mail = self.mail(file.mail.as_ref())?;
        let metrics = match &file.metrics {
            Some(m) => self.metrics(m, &server_config)?,
            None => MetricsConfig::default(),
        };
        let store = self.store(file.store.as_ref())?;
        let admin_emails = match &file.admin {
            None => Vec::new(),
            Some(admin) => {
                let mut emails = Vec::new();
                for (i, e) in admin.get_ref().emails.iter().enumerate() {
                    let email = crate::input::normalize_email(e.get_ref()).ok_or_else(|| {
                        self.invalid(
                            &format!("admin.emails[{i}]"),
                            Some(e.span()),
                            format!("not an email address: {:?}", e.get_ref()),
                        )
                    })?;
                    emails.push(email);
                }
                emails
            }
        };
        if file.site.is_empty() {
            return Err(self.invalid("site", None, "expected at least one [[site]] block"));
        }
        let mut sites = Vec::with_capacity(file.site.len());
        for (i, site) in file.site.iter().enumerate() {
            sites.push(self.site(i, site, server_config.tls_listen.is_some(), &auth)?);
        }
        self.check_unique_hosts(&file.site, &sites)?;
        self.check_unique_names(&file.site, &sites)?;
        self.check_unique_pages(&file.site, &sites)?;
        if let Some(tls_listen) = &server.get_ref().tls_listen {
            if sites.iter().all(|s| s.tls.is_none()) {
                return Err(self.invalid(
                    "server.tls_listen",
                    Some(tls_listen.span()),
                    "no [[site]] has `tls`: give at least one site a certificate, or remove tls_listen",
                ));
            }
        }
        server_config.trusted_proxies.sort();
        Config {
            source: None,
            data_dir,
            server: server_config,
            sites,
            mail,
            auth,
            admin_emails,
            api_keys: Vec::new(),
            metrics,
            store,
        }
        .with_api_keys(self, &file)
    }

    fn server(&self, server: &Spanned<FileServer>) -> Result<ServerConfig> {
        let s = server.get_ref();
        let listen = s
            .listen
            .as_ref()
            .map(|v| self.socket_addr("server.listen", v))
            .transpose()?;
        let tls_listen = s
            .tls_listen
            .as_ref()
            .map(|v| self.socket_addr("server.tls_listen", v))
            .transpose()?;
        if listen.is_none() && tls_listen.is_none() {
            return Err(self.invalid(
                "server.listen",
                Some(server.span()),
                "at least one of `listen` or `tls_listen` is required",
            ));
        }
        if listen.is_some_and(|a| a.port() != 0) && listen == tls_listen {
            return Err(self.invalid(
                "server.tls_listen",
                s.tls_listen.as_ref().map(|v| v.span()),
                "must differ from `listen`",
            ));
        }
        let prefix = match &s.prefix {
            Some(p) => self.prefix(p)?,
            None => DEFAULT_PREFIX.to_string(),
        };
        let mut trusted_proxies = Vec::with_capacity(s.trusted_proxies.len());
        for (i, raw) in s.trusted_proxies.iter().enumerate() {
            let text = raw.get_ref().trim();
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    self.invalid(
                        &format!("server.trusted_proxies[{i}]"),
                        Some(raw.span()),
                        format!("expected an IP address or CIDR such as 10.0.0.0/8, got {text:?}"),
                    )
                })?;
            trusted_proxies.push(net);
        }
        Ok(ServerConfig {
            listen,
            tls_listen,
            prefix,
            trusted_proxies,
            shutdown_grace: self.duration(
                "server.shutdown_grace",
                s.shutdown_grace.as_ref(),
                Duration::from_secs(30),
            )?,
            header_read_timeout: self.duration(
                "server.header_read_timeout",
                s.header_read_timeout.as_ref(),
                Duration::from_secs(30),
            )?,
            tls_handshake_timeout: self.duration(
                "server.tls_handshake_timeout",
                s.tls_handshake_timeout.as_ref(),
                Duration::from_secs(10),
            )?,
            max_connections: match &s.max_connections {
                None => 20_000,
                Some(n) => usize::try_from(*n.get_ref())
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        self.invalid(
                            "server.max_connections",
                            Some(n.span()),
                            "expected a whole number above zero",
                        )
                    })?,
            },
            workers: match &s.workers {
                None => std::thread::available_parallelism().map_or(1, |n| n.get()),
                Some(n) => usize::try_from(*n.get_ref())
                    .ok()
                    .filter(|n| (1..=MAX_WORKERS).contains(n))
                    .ok_or_else(|| {
                        self.invalid(
                            "server.workers",
                            Some(n.span()),
                            format!("expected a whole number from 1 to {MAX_WORKERS}"),
                        )
                    })?,
            },
            pin_workers: s.pin_workers,
            access_log: s.access_log.unwrap_or(true),
            access_log_email: s.access_log_email.unwrap_or(false),
            access_log_path: match &s.access_log_path {
                None => None,
                Some(p) if p.get_ref().trim().is_empty() => {
                    return Err(self.invalid(
                        "server.access_log_path",
                        Some(p.span()),
                        "expected the path of a file",
                    ));
                }
                Some(p) => Some(self.path(p.get_ref())),
            },
        })
    }

    /// `[metrics]`: the listener must not collide with the site listeners, and serving metrics on
    /// the public sites needs a token, since they tell sign-in counts, site names and API key
    /// names to whoever asks.
    fn metrics(&self, raw: &Spanned<FileMetrics>, server: &ServerConfig) -> Result<MetricsConfig> {
        let m = raw.get_ref();
        let listen = m
            .listen
            .as_ref()
            .map(|v| self.socket_addr("metrics.listen", v))
            .transpose()?;
        if let (Some(addr), Some(value)) = (listen, &m.listen) {
            let taken = [server.listen, server.tls_listen]
                .into_iter()
                .flatten()
                .any(|other| other == addr && addr.port() != 0);
            if taken {
                return Err(self.invalid(
                    "metrics.listen",
                    Some(value.span()),
                    "must differ from `server.listen` and `server.tls_listen`: metrics get a \
                     listener of their own, e.g. \"127.0.0.1:9100\"",
                ));
            }
        }
        let token = self.secret(
            "metrics.token",
            m.token.as_ref(),
            m.token_file.as_ref(),
            m.token_env.as_ref(),
        )?;
        if let Some(t) = &token {
            if t.0.chars().count() < 24 {
                let span = m
                    .token
                    .as_ref()
                    .or(m.token_file.as_ref())
                    .or(m.token_env.as_ref());
                return Err(self.invalid(
                    "metrics.token",
                    span.map(|s| s.span()),
                    "expected at least 24 characters of random text",
                ));
            }
        }
        let on_sites = m.on_sites.as_ref().is_some_and(|v| *v.get_ref());
        if on_sites && token.is_none() {
            return Err(self.invalid(
                "metrics.on_sites",
                m.on_sites.as_ref().map(|v| v.span()),
                "serving metrics on the public sites needs `token` (or `token_file`, \
                 `token_env`): they show sign-in counts and key names to anyone who asks",
            ));
        }
        Ok(MetricsConfig {
            listen,
            on_sites,
            token,
        })
    }

    fn socket_addr(&self, key: &str, value: &Spanned<String>) -> Result<SocketAddr> {
        value.get_ref().trim().parse().map_err(|_| {
            self.invalid(
                key,
                Some(value.span()),
                format!(
                    "expected an IP address and port such as \"127.0.0.1:8080\" or \"[::]:443\", got {:?}",
                    value.get_ref()
                ),
            )
        })
    }

    fn prefix(&self, value: &Spanned<String>) -> Result<String> {
        let p = value.get_ref().trim();
        let ok = p.len() > 1
            && p.starts_with('/')
            && !p.ends_with('/')
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b))
            && p[1..]
                .split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
        if !ok {
            return Err(self.invalid(
                "server.prefix",
                Some(value.span()),
                format!(
                    "expected a path such as \"/_pagegate\": starting with '/', no trailing '/', \
                     letters, digits and -._~ only, got {p:?}"
                ),
            ));
        }
        Ok(p.to_string())
    }

    fn site(
        &self,
        i: usize,
        site: &Spanned<FileSite>,
        tls_listen: bool,
        auth: &AuthConfig,
    ) -> Result<SiteConfig> {
        let key = |k: &str| format!("site[{i}].{k}");
        let s = site.get_ref();
        let Some(hosts_raw) = &s.hosts else {
            return Err(self.invalid(
                &key("hosts"),
                Some(site.span()),
                "expected a list of host names",
            ));
        };
        if hosts_raw.get_ref().is_empty() {
            return Err(self.invalid(
                &key("hosts"),
                Some(hosts_raw.span()),
                "expected at least one host name",
            ));
        }
        let mut hosts = Vec::new();
        for (j, h) in hosts_raw.get_ref().iter().enumerate() {
            let pattern = parse_host_pattern(h.get_ref()).ok_or_else(|| {
                self.invalid(
                    &key(&format!("hosts[{j}]")),
                    Some(h.span()),
                    format!(
                        "expected a host name without port (\"example.com\"), \"*.example.com\", \
                         an IP address, or \"*\", got {:?}",
                        h.get_ref()
                    ),
                )
            })?;
            hosts.push(pattern);
        }
        let upstream = self.upstream(i, s)?;
        let tls = match &s.tls {
            Some(t) => {
                if !tls_listen {
                    return Err(self.invalid(
                        &key("tls"),
                        Some(t.span()),
                        "the site has a certificate but `server.tls_listen` is not set",
                    ));
                }
                let files = TlsFiles {
                    cert: self.existing_file(&key("tls.cert"), &t.get_ref().cert)?,
                    key: self.existing_file(&key("tls.key"), &t.get_ref().key)?,
                };
                if let Err(problem) = files.load() {
                    return Err(self.invalid(&key("tls"), Some(t.span()), problem));
                }
                Some(files)
            }
            None => None,
        };
        let redirect_http = match &s.redirect_http {
            Some(r) if *r.get_ref() && tls.is_none() => {
                return Err(self.invalid(
                    &key("redirect_http"),
                    Some(r.span()),
                    "redirecting to HTTPS needs the site to have `tls`",
                ));
            }
            Some(r) => *r.get_ref(),
            None => tls.is_some(),
        };
        let public_url = match &s.public_url {
            Some(u) => Some(self.public_url(&key("public_url"), u)?),
            None => None,
        };
        let mut pages = Vec::with_capacity(s.page.len());
        for (j, page) in s.page.iter().enumerate() {
            pages.push(self.page(&format!("site[{i}].page[{j}]"), page, auth)?);
        }
        if !pages.is_empty() && public_url.is_none() {
            return Err(self.invalid(
                &key("public_url"),
                Some(site.span()),
                "required when the site has pages: sign-in links in mail are built from it, \
                 never from the request's Host (e.g. public_url = \"https://course.example.com\")",
            ));
        }
        let name = match &s.name {
            Some(n) if !n.get_ref().trim().is_empty() => n.get_ref().trim().to_string(),
            _ => hosts_raw.get_ref()[0].get_ref().trim().to_ascii_lowercase(),
        };
        Ok(SiteConfig {
            title: s.title.clone().unwrap_or_else(|| name.clone()),
            name,
            hosts,
            upstream,
            tls,
            public_url,
            redirect_http,
            language: match &s.language {
                None => Language::En,
                Some(l) => Language::from_code(l.get_ref().trim()).ok_or_else(|| {
                    self.invalid(
                        &key("language"),
                        Some(l.span()),
                        format!("expected \"en\" or \"ru\", got {:?}", l.get_ref()),
                    )
                })?,
            },
            pages,
        })
    }

    fn upstream(&self, i: usize, s: &FileSite) -> Result<UpstreamConfig> {
        let key = format!("site[{i}].upstream");
        let Some(raw) = &s.upstream else {
            return Err(self.invalid(
                &key,
                None,
                "expected the upstream URL, e.g. \"http://127.0.0.1:8000\"",
            ));
        };
        let bad = |why: &str| {
            self.invalid(
                &key,
                Some(raw.span()),
                format!(
                    "expected \"http://host:port\" or \"https://host:port\" ({why}), got {:?}",
                    raw.get_ref()
                ),
            )
        };
        let uri: http::Uri = raw.get_ref().trim().parse().map_err(|_| bad("not a URL"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| bad("no scheme"))?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(bad("the scheme must be http or https"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
        if authority.host().is_empty() || authority.as_str().contains('@') {
            return Err(bad("the host is empty or has user info"));
        }
        if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
            return Err(bad(
                "a path or query is not supported; requests keep their own path",
            ));
        }
        let ca_file = match &s.upstream_ca {
            Some(ca) => {
                if scheme != http::uri::Scheme::HTTPS {
                    return Err(self.invalid(
                        &format!("site[{i}].upstream_ca"),
                        Some(ca.span()),
                        "only meaningful with an https:// upstream",
                    ));
                }
                Some(self.existing_file(&format!("site[{i}].upstream_ca"), ca)?)
            }
            None => None,
        };
        Ok(UpstreamConfig {
            scheme,
            authority,
            ca_file,
            http2: s.upstream_http2,
            preserve_host: s.preserve_host.unwrap_or(true),
            connect_timeout: self.duration(
                &format!("site[{i}].connect_timeout"),
                s.connect_timeout.as_ref(),
                Duration::from_secs(5),
            )?,
            response_timeout: self.duration(
                &format!("site[{i}].response_timeout"),
                s.response_timeout.as_ref(),
                Duration::from_secs(60),
            )?,
            keepalive: match &s.upstream_keepalive {
                None => DEFAULT_UPSTREAM_KEEPALIVE,
                Some(n) => usize::try_from(*n.get_ref())
                    .ok()
                    .filter(|n| *n <= MAX_UPSTREAM_KEEPALIVE)
                    .ok_or_else(|| {
                        self.invalid(
                            &format!("site[{i}].upstream_keepalive"),
                            Some(n.span()),
                            format!("expected a whole number from 0 to {MAX_UPSTREAM_KEEPALIVE}"),
                        )
                    })?,
            },
        })
    }

    fn public_url(&self, key: &str, raw: &Spanned<String>) -> Result<String> {
        let text = raw.get_ref().trim().trim_end_matches('/');
        let ok = text
            .parse::<http::Uri>()
            .ok()
            .filter(|u| {
                matches!(u.scheme_str(), Some("http" | "https"))
                    && u.authority()
                        .is_some_and(|a| !a.host().is_empty() && !a.as_str().contains('@'))
                    && (u.path().is_empty() || u.path() == "/")
                    && u.query().is_none()
            })
            .is_some();
        if !ok {
            return Err(self.invalid(
                key,
                Some(raw.span()),
                format!(
                    "expected a base URL such as \"https://course.example.com\", got {:?}",
                    raw.get_ref()
                ),
            ));
        }
        Ok(text.to_string())
    }

    fn page(&self, key: &str, page: &Spanned<FilePage>, auth: &AuthConfig) -> Result<PageConfig> {
        let p = page.get_ref();
        let Some(id) = &p.id else {
            return Err(self.invalid(
                &format!("{key}.id"),
                Some(page.span()),
                "expected a page id",
            ));
        };
        let id_text = id.get_ref().trim();
        let id_ok = !id_text.is_empty()
            && id_text.len() <= 64
            && id_text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !id_ok {
            return Err(self.invalid(
                &format!("{key}.id"),
                Some(id.span()),
                format!("expected 1-64 characters of a-z, 0-9, '-' or '_', got {id_text:?}"),
            ));
        }
        let Some(paths_raw) = &p.paths else {
            return Err(self.invalid(
                &format!("{key}.paths"),
                Some(page.span()),
                "expected a list of paths",
            ));
        };
        if paths_raw.get_ref().is_empty() {
            return Err(self.invalid(
                &format!("{key}.paths"),
                Some(paths_raw.span()),
                "expected at least one path",
            ));
        }
        let mut paths = Vec::new();
        for (j, raw) in paths_raw.get_ref().iter().enumerate() {
            let path = raw.get_ref().trim();
            if !is_clean_path(path) {
                return Err(self.invalid(
                    &format!("{key}.paths[{j}]"),
                    Some(raw.span()),
                    format!(
                        "expected a plain absolute path such as \"/course/\" (no '..', '.', '//', \
                         '%', '\\', '?', '#' or control characters), got {path:?}"
                    ),
                ));
            }
            paths.push(path.to_string());
        }
        Ok(PageConfig {
            id: id_text.to_string(),
            title: p.title.clone().unwrap_or_else(|| id_text.to_string()),
            paths,
            session_lifetime: self.duration(
                &format!("{key}.session_lifetime"),
                p.session_lifetime.as_ref(),
                auth.session_lifetime,
            )?,
            cache: match &p.cache {
                None => PageCache::Private,
                Some(c) => match c.get_ref().trim() {
                    "private" => PageCache::Private,
                    "no-store" => PageCache::NoStore,
                    other => {
                        return Err(self.invalid(
                            &format!("{key}.cache"),
                            Some(c.span()),
                            format!("expected \"private\" or \"no-store\", got {other:?}"),
                        ));
                    }
                },
            },
        })
    }

    fn count(
        &self,
        key: &str,
        value: Option<&Spanned<i64>>,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<u32> {
        let Some(value) = value else {
            return Ok(default);
        };
        u32::try_from(*value.get_ref())
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                self.invalid(
                    key,
                    Some(value.span()),
                    format!(
                        "expected a whole number from {} to {}, got {}",
                        range.start(),
                        range.end(),
                        value.get_ref()
                    ),
                )
            })
    }

    /// Exactly one of inline, file or environment variable; `None` when none is given.
    fn secret(
        &self,
        key: &str,
        inline: Option<&Spanned<String>>,
        file: Option<&Spanned<String>>,
        env: Option<&Spanned<String>>,
    ) -> Result<Option<Secret>> {
        let given = [inline.is_some(), file.is_some(), env.is_some()]
            .iter()
            .filter(|g| **g)
            .count();
        if given > 1 {
            let span = inline.or(file).or(env).map(|s| s.span());
            return Err(self.invalid(
                key,
                span,
                format!("give only one of `{key}`, `{key}_file` or `{key}_env`"),
            ));
        }
        let value = if let Some(v) = inline {
            v.get_ref().clone()
        } else if let Some(f) = file {
            let path = self.existing_file(&format!("{key}_file"), f)?;
            let text = std::fs::read_to_string(&path).map_err(|e| {
                self.invalid(
                    &format!("{key}_file"),
                    Some(f.span()),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            text.trim_end_matches(['\r', '\n']).to_string()
        } else if let Some(e) = env {
            std::env::var(e.get_ref()).map_err(|_| {
                self.invalid(
                    &format!("{key}_env"),
                    Some(e.span()),
                    format!(
                        "the environment variable {} is not set (or not UTF-8)",
                        e.get_ref()
                    ),
                )
            })?
        } else {
            return Ok(None);
        };
        if value.is_empty() {
            let span = inline.or(file).or(env).map(|s| s.span());
            return Err(self.invalid(key, span, "the secret is empty"));
        }
        Ok(Some(Secret(value)))
    }

    fn auth(&self, auth: Option<&Spanned<FileAuth>>) -> Result<AuthConfig> {
        let empty = FileAuth::default();
        let a = auth.map_or(&empty, |a| a.get_ref());
        let secret = self.secret(
            "auth.secret",
            a.secret.as_ref(),
            a.secret_file.as_ref(),
            a.secret_env.as_ref(),
        )?;
        if let Some(s) = &secret {
            if s.0.len() < 32 {
                let span = a
                    .secret
                    .as_ref()
                    .or(a.secret_file.as_ref())
                    .or(a.secret_env.as_ref())
                    .map(|s| s.span());
                return Err(self.invalid(
                    "auth.secret",
                    span,
                    "expected at least 32 characters of random text",
                ));
            }
        }
        let previous_secrets = self.previous_secrets(a, secret.as_ref())?;
        let key_grace = self.duration(
            "auth.key_grace",
            a.key_grace.as_ref(),
            Duration::from_secs(7 * 24 * 3600),
        )?;
        if key_grace > MAX_KEY_GRACE {
            return Err(self.invalid(
                "auth.key_grace",
                a.key_grace.as_ref().map(|g| g.span()),
                "expected at most 365 days: a retired key accepted for longer defeats rotating it",
            ));
        }
        let header = |key: &str,
                      value: Option<&Spanned<String>>,
                      default: &'static str|
         -> Result<http::HeaderName> {
            let Some(value) = value else {
                return Ok(http::HeaderName::from_static(default));
            };
            let name =
                http::HeaderName::from_bytes(value.get_ref().trim().as_bytes()).map_err(|_| {
                    self.invalid(
                        key,
                        Some(value.span()),
                        format!("expected a header name, got {:?}", value.get_ref()),
                    )
                })?;
            let reserved = [
                "host",
                "connection",
                "content-length",
                "transfer-encoding",
                "cookie",
                "upgrade",
                "te",
                "authorization",
                "forwarded",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "x-real-ip",
            ];
            if reserved.contains(&name.as_str()) {
                return Err(self.invalid(
                    key,
                    Some(value.span()),
                    format!("{name} is reserved by HTTP or by the forwarding headers"),
                ));
            }
            Ok(name)
        };
        let email_header = header(
            "auth.email_header",
            a.email_header.as_ref(),
            "x-pagegate-email",
        )?;
        let name_header = header(
            "auth.name_header",
            a.name_header.as_ref(),
            "x-pagegate-name",
        )?;
        let page_header = header(
            "auth.page_header",
            a.page_header.as_ref(),
            "x-pagegate-page",
        )?;
        if email_header == name_header || email_header == page_header || name_header == page_header
        {
            let span = a
                .name_header
                .as_ref()
                .or(a.page_header.as_ref())
                .or(a.email_header.as_ref())
                .map(|s| s.span());
            return Err(self.invalid(
                "auth.name_header",
                span,
                "email_header, name_header and page_header must be three different names",
            ));
        }
        let signin_link_ttl = self.duration(
            "auth.signin_link_ttl",
            a.signin_link_ttl.as_ref(),
            DEFAULT_SIGNIN_LINK_TTL,
        )?;
        if !(MIN_SIGNIN_LINK_TTL..=MAX_SIGNIN_LINK_TTL).contains(&signin_link_ttl) {
            return Err(self.invalid(
                "auth.signin_link_ttl",
                a.signin_link_ttl.as_ref().map(|t| t.span()),
                "expected from 1 minute to 24 hours: the link is for the moment right after payment",
            ));
        }
        let max_attempts = self.count("auth.max_attempts", a.max_attempts.as_ref(), 5, 1..=100)?;
        let max_attempts_per_email = self.count(
            "auth.max_attempts_per_email",
            a.max_attempts_per_email.as_ref(),
            100.max(max_attempts),
            max_attempts..=100_000,
        )?;
        Ok(AuthConfig {
            code_length: self.count("auth.code_length", a.code_length.as_ref(), 6, 4..=10)?
                as usize,
            code_ttl: self.duration(
                "auth.code_ttl",
                a.code_ttl.as_ref(),
                Duration::from_secs(600),
            )?,
            signin_link_ttl,
            max_attempts,
            max_attempts_per_email,
            attempt_window: self.duration(
                "auth.attempt_window",
                a.attempt_window.as_ref(),
                Duration::from_secs(3600),
            )?,
            session_lifetime: self.duration(
                "auth.session_lifetime",
                a.session_lifetime.as_ref(),
                Duration::from_secs(30 * 24 * 3600),
            )?,
            secret,
            previous_secrets,
            key_grace,
            identity_headers: a.identity_headers.unwrap_or(true),
            email_header,
            name_header,
            page_header,
            templates: match &a.templates {
                None => None,
                Some(t) => {
                    let dir = self.path(t.get_ref());
                    if !dir.is_dir() {
                        return Err(self.invalid(
                            "auth.templates",
                            Some(t.span()),
                            format!(
                                "expected a folder of templates, but {} is not one",
                                dir.display()
                            ),
                        ));
                    }
                    Some(dir)
                }
            },
            email_codes_per_hour: self.count(
                "auth.email_codes_per_hour",
                a.email_codes_per_hour.as_ref(),
                5,
                1..=1000,
            )?,
            resend_after: self.duration(
                "auth.resend_after",
                a.resend_after.as_ref(),
                Duration::from_secs(60),
            )?,
            ip_codes_per_hour: self.count(
                "auth.ip_codes_per_hour",
                a.ip_codes_per_hour.as_ref(),
                30,
                1..=100_000,
            )?,
            ip_verifies_per_hour: self.count(
                "auth.ip_verifies_per_hour",
                a.ip_verifies_per_hour.as_ref(),
                60,
                1..=100_000,
            )?,
        })
    }

    /// `auth.previous_secrets` or `auth.previous_secrets_file`: only beside a configured
    /// `auth.secret` (a generated secret keeps its own history), each as strong as a secret and
    /// none equal to the current one.
    fn previous_secrets(&self, a: &FileAuth, current: Option<&Secret>) -> Result<Vec<Secret>> {
        let (key, span, values) = match (&a.previous_secrets, &a.previous_secrets_file) {
            (None, None) => return Ok(Vec::new()),
            (Some(_), Some(file)) => {
                return Err(self.invalid(
                    "auth.previous_secrets_file",
                    Some(file.span()),
                    "give only one of `auth.previous_secrets` or `auth.previous_secrets_file`",
                ));
            }
            (Some(list), None) => (
                "auth.previous_secrets",
                list.span(),
                list.get_ref()
                    .iter()
                    .map(|s| (s.get_ref().clone(), s.span()))
                    .collect::<Vec<_>>(),
            ),
            (None, Some(file)) => {
                let path = self.existing_file("auth.previous_secrets_file", file)?;
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    self.invalid(
                        "auth.previous_secrets_file",
                        Some(file.span()),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let lines = text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| (l.to_string(), file.span()))
                    .collect();
                ("auth.previous_secrets_file", file.span(), lines)
            }
        };
        let Some(current) = current else {
            return Err(self.invalid(
                key,
                Some(span),
                "only meaningful with `auth.secret` (or secret_file, secret_env); a generated \
                 secret is rotated with `pagegate rotate-key`, which keeps the previous one itself",
            ));
        };
        let mut out: Vec<Secret> = Vec::with_capacity(values.len());
        for (i, (value, span)) in values.into_iter().enumerate() {
            let item = format!("{key}[{i}]");
            if value.len() < 32 {
                return Err(self.invalid(
                    &item,
                    Some(span),
                    "expected at least 32 characters of random text",
                ));
            }
            let secret = Secret(value);
            if &secret == current || out.contains(&secret) {
                return Err(self.invalid(
                    &item,
                    Some(span),
                    "repeats `auth.secret` or an earlier previous secret",
                ));
            }
            out.push(secret);
        }
        Ok(out)
    }

    fn mail(&self, mail: Option<&Spanned<FileMail>>) -> Result<MailConfig> {
        let Some(mail) = mail else {
            return Ok(MailConfig {
                transport: MailTransport::Console,
                from: "pagegate <pagegate@localhost>".into(),
                retry_for: DEFAULT_MAIL_RETRY,
            });
        };
        let m = mail.get_ref();
        let from = match &m.from {
            None => "pagegate <pagegate@localhost>".to_string(),
            Some(f) => {
                f.get_ref().trim().parse::<lettre::message::Mailbox>().map_err(|_| {
                    self.invalid(
                        "mail.from",
                        Some(f.span()),
                        format!("expected a mailbox such as \"Demo School <no-reply@example.com>\", got {:?}", f.get_ref()),
                    )
                })?;
                f.get_ref().trim().to_string()
            }
        };
        let transport_name = m
            .transport
            .as_ref()
            .map_or("console", |t| t.get_ref().trim());
        let transport = match transport_name {
            "console" => MailTransport::Console,
            "file" => {
                let dir = m
                    .dir
                    .as_ref()
                    .map_or_else(|| self.path("mail"), |d| self.path(d.get_ref()));
                MailTransport::File(dir)
            }
            "smtp" => {
                let Some(smtp) = &m.smtp else {
                    return Err(self.invalid(
                        "mail.smtp",
                        Some(mail.span()),
                        "transport \"smtp\" needs a [mail.smtp] table with at least `host`",
                    ));
                };
                let s = smtp.get_ref();
                let Some(host) = &s.host else {
                    return Err(self.invalid(
                        "mail.smtp.host",
                        Some(smtp.span()),
                        "expected the SMTP server's host name",
                    ));
                };
                if host.get_ref().trim().is_empty() || host.get_ref().contains(['/', ' ', ':']) {
                    return Err(self.invalid(
                        "mail.smtp.host",
                        Some(host.span()),
                        format!(
                            "expected a host name such as \"smtp.example.com\", got {:?}",
                            host.get_ref()
                        ),
                    ));
                }
                let security = match s.security.as_ref().map(|v| v.get_ref().trim()) {
                    None | Some("starttls") => SmtpSecurity::StartTls,
                    Some("tls") => SmtpSecurity::Tls,
                    Some("none") => SmtpSecurity::None,
                    Some(other) => {
                        return Err(self.invalid(
                            "mail.smtp.security",
                            s.security.as_ref().map(|v| v.span()),
                            format!("expected \"starttls\", \"tls\" or \"none\", got {other:?}"),
                        ));
                    }
                };
                let default_port = match security {
                    SmtpSecurity::StartTls => 587,
                    SmtpSecurity::Tls => 465,
                    SmtpSecurity::None => 25,
                };
                let port = match &s.port {
                    None => default_port,
                    Some(p) => u16::try_from(*p.get_ref())
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| {
                            self.invalid(
                                "mail.smtp.port",
                                Some(p.span()),
                                format!("expected a port from 1 to 65535, got {}", p.get_ref()),
                            )
                        })?,
                };
                let password = self.secret(
                    "mail.smtp.password",
                    s.password.as_ref(),
                    s.password_file.as_ref(),
                    s.password_env.as_ref(),
                )?;
                if password.is_some() != s.username.is_some() {
                    return Err(self.invalid(
                        "mail.smtp.username",
                        Some(smtp.span()),
                        "give both a username and a password (password, password_file or password_env), or neither",
                    ));
                }
                MailTransport::Smtp(SmtpConfig {
                    host: host.get_ref().trim().to_string(),
                    port,
                    security,
                    username: s.username.clone(),
                    password,
                    timeout: self.duration(
                        "mail.smtp.timeout",
                        s.timeout.as_ref(),
                        Duration::from_secs(15),
                    )?,
                })
            }
            other => {
                return Err(self.invalid(
                    "mail.transport",
                    m.transport.as_ref().map(|t| t.span()),
                    format!("expected \"smtp\", \"console\" or \"file\", got {other:?}"),
                ));
            }
        };
        if let (Some(dir), false) = (&m.dir, matches!(transport, MailTransport::File(_))) {
            return Err(self.invalid(
                "mail.dir",
                Some(dir.span()),
                format!("`dir` is for the file transport, but transport is {transport_name:?}"),
            ));
        }
        if m.smtp.is_some() && !matches!(transport, MailTransport::Smtp(_)) {
            return Err(self.invalid(
                "mail.smtp",
                m.smtp.as_ref().map(|s| s.span()),
                format!("[mail.smtp] is set but transport is {transport_name:?}; set transport = \"smtp\""),
            ));
        }
        Ok(MailConfig {
            transport,
            from,
            retry_for: self.mail_retry(m.retry_for.as_ref())?,
        })
    }

    fn check_unique_hosts(&self, raw: &[Spanned<FileSite>], sites: &[SiteConfig]) -> Result<()> {
        let mut seen: HashMap<&HostPattern, usize> = HashMap::new();
        for (i, site) in sites.iter().enumerate() {
            for (j, host) in site.hosts.iter().enumerate() {
                if let Some(first) = seen.insert(host, i) {
                    let span = raw[i]
                        .get_ref()
                        .hosts
                        .as_ref()
                        .map(|h| h.get_ref()[j].span());
                    return Err(self.invalid(
                        &format!("site[{i}].hosts[{j}]"),
                        span,
                        format!("host {} is already claimed by site[{first}]; each host belongs to one site", host),
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_unique_names(&self, raw: &[Spanned<FileSite>], sites: &[SiteConfig]) -> Result<()> {
        let mut seen = HashMap::new();
        for (i, site) in sites.iter().enumerate() {
            if let Some(first) = seen.insert(site.name.as_str(), i) {
                let span = raw[i]
                    .get_ref()
                    .name
                    .as_ref()
                    .map(|n| n.span())
                    .or(Some(raw[i].span()));
                return Err(self.invalid(
                    &format!("site[{i}].name"),
                    span,
                    format!("site name {:?} is already used by site[{first}]; names identify sites in logs and the API", site.name),
                ));
            }
        }
        Ok(())
    }

    fn check_unique_pages(&self, raw: &[Spanned<FileSite>], sites: &[SiteConfig]) -> Result<()> {
        let mut seen = HashSet::new();
        for (i, site) in sites.iter().enumerate() {
            for (j, page) in site.pages.iter().enumerate() {
                if !seen.insert(page.id.as_str()) {
                    let span = raw[i].get_ref().page[j]
                        .get_ref()
                        .id
                        .as_ref()
                        .map(|s| s.span());
                    return Err(self.invalid(
                        &format!("site[{i}].page[{j}].id"),
                        span,
                        format!(
                            "page id {:?} is used twice; page ids are unique across the gateway",
                            page.id
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => write!(f, "{h:?}"),
            HostPattern::Suffix(s) => write!(f, "\"*{s}\""),
            HostPattern::Any => f.write_str("\"*\""),
        }
    }
}

/// A host pattern as written in `hosts`, or `None` when it is not one.
fn parse_host_pattern(raw: &str) -> Option<HostPattern> {
    let lower = raw.trim().to_ascii_lowercase();
    if lower.starts_with("*.") && lower.len() <= 2 {
        return None;
    }
    let h = lower.strip_suffix('.').unwrap_or(&lower).to_string();
    if h == "*" {
        return Some(HostPattern::Any);
    }
    if let Some(rest) = h.strip_prefix("*.") {
        return is_dns_name(rest).then(|| HostPattern::Suffix(format!(".{rest}")));
    }
    if let Some(inner) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|_| HostPattern::Exact(h.clone()));
    }
    if let Ok(v6) = h.parse::<std::net::Ipv6Addr>() {
        return Some(HostPattern::Exact(format!("[{v6}]")));
    }
    is_dns_name(&h).then_some(HostPattern::Exact(h))
}

fn is_dns_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A page path an admin writes: absolute, already decoded and free of anything a normaliser
/// would change, so that matching it against normalised request paths is exact.
fn is_clean_path(p: &str) -> bool {
    p.starts_with('/')
        && !p
            .bytes()
            .any(|b| b.is_ascii_control() || b"%\\?#".contains(&b) || b == b' ')
        && !p.contains("//")
        && p.split('/').all(|seg| seg != "." && seg != "..")
}

impl Config {
    fn with_api_keys(mut self, ctx: &Ctx<'_>, file: &FileConfig) -> Result<Config> {
        let mut names = HashSet::new();
        for (i, raw) in file.api_key.iter().enumerate() {
            let k = raw.get_ref();
            let key = |name: &str| format!("api_key[{i}].{name}");
            let name = match &k.name {
                Some(n) if !n.get_ref().trim().is_empty() => n.get_ref().trim().to_owned(),
                _ => {
                    return Err(ctx.invalid(
                        &key("name"),
                        Some(raw.span()),
                        "expected a name for the key",
                    ));
                }
            };
            if !names.insert(name.clone()) {
                return Err(ctx.invalid(
                    &key("name"),
                    k.name.as_ref().map(|n| n.span()),
                    format!("the key name {name:?} is used twice"),
                ));
            }
            let secret = ctx
                .secret(
                    &key("secret"),
                    k.secret.as_ref(),
                    k.secret_file.as_ref(),
                    k.secret_env.as_ref(),
                )?
                .ok_or_else(|| {
                    ctx.invalid(
                        &key("secret"),
                        Some(raw.span()),
                        "expected `secret`, `secret_file` or `secret_env`",
                    )
                })?;
            if secret.0.len() < 24 {
                return Err(ctx.invalid(
                    &key("secret"),
                    Some(raw.span()),
                    "expected at least 24 characters of random text",
                ));
            }
            let Some(scopes_raw) = &k.scopes else {
                return Err(ctx.invalid(
                    &key("scopes"),
                    Some(raw.span()),
                    "expected scopes = [\"grant\"] and/or [\"admin\"]",
                ));
            };
            let mut scopes = Vec::new();
            for (j, s) in scopes_raw.get_ref().iter().enumerate() {
                scopes.push(match s.get_ref().as_str() {
                    "grant" => Scope::Grant,
                    "admin" => Scope::Admin,
                    other => {
                        return Err(ctx.invalid(
                            &key(&format!("scopes[{j}]")),
                            Some(s.span()),
                            format!("expected \"grant\" or \"admin\", got {other:?}"),
                        ));
                    }
                });
            }
            if scopes.is_empty() {
                return Err(ctx.invalid(
                    &key("scopes"),
                    Some(scopes_raw.span()),
                    "expected at least one scope",
                ));
            }
            let sites = match &k.sites {
                None => None,
                Some(list) => {
                    let mut out = Vec::new();
                    for (j, s) in list.iter().enumerate() {
                        if !self.sites.iter().any(|site| site.name == *s.get_ref()) {
                            return Err(ctx.invalid(
                                &key(&format!("sites[{j}]")),
                                Some(s.span()),
                                format!("no site is named {:?}", s.get_ref()),
                            ));
                        }
                        out.push(s.get_ref().clone());
                    }
                    Some(out)
                }
            };
            let pages = match &k.pages {
                None => None,
                Some(list) => {
                    let mut out = Vec::new();
                    for (j, p) in list.iter().enumerate() {
                        if !self
                            .sites
                            .iter()
                            .any(|site| site.page(p.get_ref()).is_some())
                        {
                            return Err(ctx.invalid(
                                &key(&format!("pages[{j}]")),
                                Some(p.span()),
                                format!("no page has the id {:?}", p.get_ref()),
                            ));
                        }
                        out.push(p.get_ref().clone());
                    }
                    Some(out)
                }
            };
            self.api_keys.push(ApiKeyConfig {
                name,
                secret,
                scopes,
                sites,
                pages,
            });
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> std::result::Result<Config, ConfigError> {
        parse_str(
            text,
            Path::new("gateway.toml"),
            Path::new("/nonexistent-base"),
        )
    }

    const MINIMAL: &str = r#"
[server]
listen = "127.0.0.1:8080"

[[site]]
hosts = ["localhost"]
upstream = "http://127.0.0.1:8000"
"#;

    fn invalid_key(text: &str) -> String {
        match parse(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).expect("valid");
        assert_eq!(c.server.prefix, "/_pagegate");
        assert_eq!(c.sites[0].name, "localhost");
        assert_eq!(c.sites[0].upstream.connect_timeout, Duration::from_secs(5));
        assert!(c.sites[0].upstream.preserve_host);
        assert_eq!(c.sites[0].upstream.keepalive, 64);
        assert_eq!(c.data_dir, Path::new("/nonexistent-base/data"));
    }

    #[test]
    fn upstream_keepalive_is_a_bounded_count() {
        let with = |n: &str| format!("{MINIMAL}upstream_keepalive = {n}\n");
        let c = parse(&with("0")).expect("0 turns keep-alive off");
        assert_eq!(c.sites[0].upstream.keepalive, 0);
        for bad in ["-1", "1000000"] {
            let err = parse(&with(bad)).expect_err(bad);
            let msg = err.to_string();
            assert!(msg.contains("`site[0].upstream_keepalive`"), "{msg}");
            assert!(msg.contains("from 0 to 65536"), "{msg}");
        }
    }

    #[test]
    fn unknown_key_is_a_syntax_error_naming_the_key_and_line() {
        let err = parse(&MINIMAL.replace("listen =", "lisen =")).expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.contains("lisen"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn bad_listen_address_names_key_and_line() {
        let err = parse(&MINIMAL.replace("127.0.0.1:8080", "localhost")).expect_err("bad addr");
        let msg = err.to_string();
        assert!(msg.starts_with("gateway.toml:3: `server.listen`"), "{msg}");
        assert!(msg.contains("IP address and port"), "{msg}");
    }

    #[test]
    fn missing_listeners_are_refused() {
        assert_eq!(
            invalid_key("[server]\n[[site]]\nhosts=[\"a\"]\nupstream=\"http://a\"\n"),
            "server.listen"
        );
        assert_eq!(
            invalid_key("[[site]]\nhosts=[\"a\"]\nupstream=\"http://a\"\n"),
            "server"
        );
    }

    #[test]
    fn duplicate_host_across_sites_is_refused() {
        let text = format!(
            "{MINIMAL}\n[[site]]\nhosts = [\"LOCALHOST.\"]\nupstream = \"http://127.0.0.1:9000\"\n"
        );
        let err = parse(&text).expect_err("dup");
        assert_eq!(err.key(), Some("site[1].hosts[0]"));
        assert!(
            err.to_string().contains("already claimed by site[0]"),
            "{err}"
        );
    }

    #[test]
    fn upstream_rules() {
        for bad in [
            "ftp://a",
            "127.0.0.1:8000",
            "http://a/app",
            "http://a/?x=1",
            "http://user@a",
        ] {
            let text = MINIMAL.replace("http://127.0.0.1:8000", bad);
            assert_eq!(invalid_key(&text), "site[0].upstream", "{bad}");
        }
        let text = MINIMAL.replace("upstream = \"http://127.0.0.1:8000\"", "");
        assert_eq!(invalid_key(&text), "site[0].upstream");
    }

    #[test]
    fn host_patterns() {
        assert_eq!(
            parse_host_pattern("Example.COM."),
            Some(HostPattern::Exact("example.com".into()))
        );
        assert_eq!(
            parse_host_pattern("*.example.com"),
            Some(HostPattern::Suffix(".example.com".into()))
        );
        assert_eq!(parse_host_pattern("*"), Some(HostPattern::Any));
        assert_eq!(
            parse_host_pattern("::1"),
            Some(HostPattern::Exact("[::1]".into()))
        );
        assert_eq!(
            parse_host_pattern("[::1]"),
            Some(HostPattern::Exact("[::1]".into()))
        );
        for bad in [
            "example.com:80",
            "a b",
            "",
            "*.",
            "-a.com",
            "a..b",
            "http://a",
        ] {
            assert_eq!(parse_host_pattern(bad), None, "{bad}");
        }
    }

    #[test]
    fn missing_certificate_file_names_the_key() {
        let text = MINIMAL.replace(
            "listen = \"127.0.0.1:8080\"",
            "tls_listen = \"127.0.0.1:8443\"",
        ) + "tls = { cert = \"missing.pem\", key = \"missing.key\" }\n";
        let err = parse(&text).expect_err("missing cert");
        assert_eq!(err.key(), Some("site[0].tls.cert"));
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn tls_listen_needs_a_certificate() {
        let text = MINIMAL.replace("[server]", "[server]\ntls_listen = \"127.0.0.1:8443\"");
        assert_eq!(invalid_key(&text), "server.tls_listen");
    }

    #[test]
    fn workers_default_to_the_cores_and_are_bounded() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(parse(MINIMAL).expect("valid").server.workers, cores);
        let three = MINIMAL.replace("[server]", "[server]\nworkers = 3");
        assert_eq!(parse(&three).expect("valid").server.workers, 3);
        for bad in ["0", "-1", "1025"] {
            let text = MINIMAL.replace("[server]", &format!("[server]\nworkers = {bad}"));
            assert_eq!(invalid_key(&text), "server.workers", "{bad}");
        }
    }

    #[test]
    fn pinning_is_decided_at_start_unless_set() {
        assert_eq!(parse(MINIMAL).expect("valid").server.pin_workers, None);
        let off = MINIMAL.replace("[server]", "[server]\npin_workers = false");
        assert_eq!(parse(&off).expect("valid").server.pin_workers, Some(false));
        let bad = MINIMAL.replace("[server]", "[server]\npin_workers = \"yes\"");
        let message = parse(&bad).expect_err("a string is refused").to_string();
        assert!(message.contains("pin_workers"), "{message}");
    }

    #[test]
    fn prefix_rules() {
        for bad in ["/", "x", "/a/", "/a/../b", "/a b", "/a//b", "/%41"] {
            let text = MINIMAL.replace("[server]", &format!("[server]\nprefix = {bad:?}"));
            assert_eq!(invalid_key(&text), "server.prefix", "{bad}");
        }
    }

    #[test]
    fn page_rules() {
        let page = |id: &str, path: &str| {
            format!(
                "{MINIMAL}public_url = \"https://a.example\"\n\n[[site.page]]\nid = {id:?}\npaths = [{path:?}]\n"
            )
        };
        assert!(parse(&page("course", "/course/")).is_ok());
        assert_eq!(
            invalid_key(&page("Course!", "/course/")),
            "site[0].page[0].id"
        );
        for bad in ["course", "/a/../b", "/a//b", "/a%2fb", "/a\\b", "/a?x"] {
            assert_eq!(
                invalid_key(&page("course", bad)),
                "site[0].page[0].paths[0]",
                "{bad}"
            );
        }
        let twice = format!(
            "{}\n[[site.page]]\nid = \"course\"\npaths = [\"/b/\"]\n",
            page("course", "/a/")
        );
        assert_eq!(invalid_key(&twice), "site[0].page[1].id");
    }

    #[test]
    fn access_log_defaults_and_switches() {
        let c = parse(MINIMAL).expect("valid");
        assert!(c.server.access_log, "on by default");
        assert!(!c.server.access_log_email, "no emails by default");
        let text = MINIMAL.replace(
            "[server]",
            "[server]\naccess_log = false\naccess_log_email = true",
        );
        let c = parse(&text).expect("valid");
        assert!(!c.server.access_log && c.server.access_log_email);
        let err = parse(&MINIMAL.replace("[server]", "[server]\naccess_log = \"yes\""))
            .expect_err("not a boolean");
        assert!(err.to_string().contains("invalid type"), "{err}");
        assert_eq!(c.server.access_log_path, None, "stderr by default");
        let c = parse(&MINIMAL.replace(
            "[server]",
            "[server]\naccess_log_path = \"logs/access.log\"",
        ))
        .expect("valid");
        assert_eq!(
            c.server.access_log_path,
            Some(PathBuf::from("/nonexistent-base/logs/access.log")),
            "relative to the file's directory"
        );
        assert_eq!(
            invalid_key(&MINIMAL.replace("[server]", "[server]\naccess_log_path = \" \"")),
            "server.access_log_path"
        );
    }

    #[test]
    fn metrics_are_off_the_sites_by_default() {
        let c = parse(MINIMAL).expect("valid");
        assert!(c.metrics.listen.is_none() && !c.metrics.on_sites && c.metrics.token.is_none());
        let token = "t".repeat(24);
        let c = parse(&format!(
            "{MINIMAL}\n[metrics]\nlisten = \"127.0.0.1:9100\"\non_sites = true\ntoken = \"{token}\"\n"
        ))
        .expect("valid");
        assert_eq!(
            c.metrics.listen,
            Some("127.0.0.1:9100".parse().expect("addr"))
        );
        assert!(c.metrics.on_sites);
        assert_eq!(c.metrics.token, Some(Secret(token)));
    }

    #[test]
    fn metrics_errors_name_the_key_and_line() {
        let metrics = |body: &str| format!("{MINIMAL}\n[metrics]\n{body}\n");
        // MINIMAL has 7 lines; `[metrics]` is line 9, its first key line 10.
        let err = parse(&metrics("listen = \"localhost:9100\"")).expect_err("host name");
        assert!(
            err.to_string()
                .starts_with("gateway.toml:10: `metrics.listen`"),
            "{err}"
        );
        assert_eq!(
            invalid_key(&metrics("listen = \"127.0.0.1:8080\"")),
            "metrics.listen",
            "the site listener's address"
        );
        let err = parse(&metrics("on_sites = true")).expect_err("no token");
        let msg = err.to_string();
        assert!(
            msg.starts_with("gateway.toml:10: `metrics.on_sites`") && msg.contains("token"),
            "{msg}"
        );
        assert_eq!(
            invalid_key(&metrics("on_sites = true\ntoken = \"short\"")),
            "metrics.token"
        );
        assert_eq!(
            invalid_key(&metrics(&format!(
                "token = \"{}\"\ntoken_env = \"X\"",
                "t".repeat(24)
            ))),
            "metrics.token"
        );
        assert_eq!(
            invalid_key(&metrics(
                "token_env = \"PAGEGATE_TEST_UNSET_METRICS_TOKEN\""
            )),
            "metrics.token_env"
        );
        let err = parse(&metrics("tokn = \"x\"")).expect_err("unknown key");
        assert!(err.to_string().contains("tokn"), "{err}");
    }

    #[test]
    fn key_rotation_settings() {
        let secret = "s".repeat(32);
        let old = "o".repeat(32);
        let with = |auth: &str| format!("{MINIMAL}\n[auth]\n{auth}\n");
        let c = parse(MINIMAL).expect("valid");
        assert_eq!(c.auth.key_grace, Duration::from_secs(7 * 24 * 3600));
        assert!(c.auth.previous_secrets.is_empty());
        let c = parse(&with(&format!(
            "secret = {secret:?}\nprevious_secrets = [{old:?}]\nkey_grace = \"2d\""
        )))
        .expect("valid");
        assert_eq!(c.auth.previous_secrets, [Secret(old.clone())]);
        assert_eq!(c.auth.key_grace, Duration::from_secs(2 * 24 * 3600));

        for (auth, key) in [
            ("key_grace = \"soon\"".to_string(), "auth.key_grace"),
            ("key_grace = \"0s\"".to_string(), "auth.key_grace"),
            ("key_grace = \"400d\"".to_string(), "auth.key_grace"),
            // A generated secret keeps its own history: previous secrets need a configured one.
            (
                format!("previous_secrets = [{old:?}]"),
                "auth.previous_secrets",
            ),
            (
                format!("secret = {secret:?}\nprevious_secrets = [\"short\"]"),
                "auth.previous_secrets[0]",
            ),
            (
                format!("secret = {secret:?}\nprevious_secrets = [{old:?}, {secret:?}]"),
                "auth.previous_secrets[1]",
            ),
            (
                format!("secret = {secret:?}\nprevious_secrets_file = \"missing.txt\""),
                "auth.previous_secrets_file",
            ),
            (
                format!(
                    "secret = {secret:?}\nprevious_secrets = []\nprevious_secrets_file = \"x\""
                ),
                "auth.previous_secrets_file",
            ),
        ] {
            assert_eq!(invalid_key(&with(&auth)), key, "{auth}");
        }
        let err = parse(&with("key_grace = \"400d\"")).expect_err("too long");
        assert!(err.to_string().contains("at most 365 days"), "{err}");
    }

    #[test]
    fn previous_secrets_can_come_from_a_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (a, b) = ("a".repeat(40), "b".repeat(40));
        std::fs::write(dir.path().join("old-secrets"), format!("{a}\n\n{b}\r\n")).expect("write");
        let text = format!(
            "{MINIMAL}\n[auth]\nsecret = \"{}\"\nprevious_secrets_file = \"old-secrets\"\n",
            "c".repeat(40)
        );
        let c = parse_str(&text, Path::new("gateway.toml"), dir.path()).expect("valid");
        assert_eq!(c.auth.previous_secrets, [Secret(a), Secret(b)]);
    }

    #[test]
    fn the_data_dir_is_found_even_in_a_file_that_does_not_validate() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, "data_dir = \"state\"\n[server]\nlisen = 1\n").expect("write");
        assert!(super::super::load(&path).is_err());
        assert_eq!(
            super::super::data_dir_of(&path).expect("data_dir"),
            dir.path().join("state")
        );
        std::fs::write(&path, "[server\n").expect("write");
        assert!(super::super::data_dir_of(&path).is_err());
    }

    #[test]
    fn a_loaded_config_knows_its_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, MINIMAL).expect("write");
        let c = super::super::load(&path).expect("valid");
        assert_eq!(c.source.as_deref(), Some(path.as_path()));
        assert_eq!(parse(MINIMAL).expect("valid").source, None);
    }

    #[test]
    fn durations_and_trusted_proxies() {
        let text = MINIMAL.replace("[server]", "[server]\nshutdown_grace = \"soon\"");
        assert_eq!(invalid_key(&text), "server.shutdown_grace");
        let text = MINIMAL.replace(
            "[server]",
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"nope\"]",
        );
        assert_eq!(invalid_key(&text), "server.trusted_proxies[2]");
        let text = MINIMAL.replace(
            "[server]",
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\"]",
        );
        assert_eq!(parse(&text).expect("valid").server.trusted_proxies.len(), 2);
    }

    #[test]
    fn retention_and_mail_retry_defaults() {
        let c = parse(MINIMAL).expect("valid");
        let day = 24 * 3600;
        assert_eq!(
            c.store,
            StoreConfig {
                audit_retention: Some(Duration::from_secs(365 * day)),
                grant_retention: Some(Duration::from_secs(90 * day)),
            }
        );
        assert_eq!(c.mail.retry_for, Duration::from_secs(600));
        let text = format!(
            "{MINIMAL}\n[store]\naudit_retention = \"forever\"\ngrant_retention = \"30d\"\n\n[mail]\nretry_for = \"0s\"\n"
        );
        let c = parse(&text).expect("valid");
        assert_eq!(c.store.audit_retention, None);
        assert_eq!(c.store.retention().grants, Some(30 * day as i64));
        assert_eq!(c.mail.retry_for, Duration::ZERO, "0s turns retries off");
    }

    #[test]
    fn the_signin_link_lasts_a_quarter_of_an_hour_unless_set_within_bounds() {
        assert_eq!(
            parse(MINIMAL).expect("valid").auth.signin_link_ttl,
            Duration::from_secs(15 * 60)
        );
        let with = |ttl: &str| format!("{MINIMAL}\n[auth]\nsignin_link_ttl = {ttl:?}\n");
        assert_eq!(
            parse(&with("1h")).expect("valid").auth.signin_link_ttl,
            Duration::from_secs(3600)
        );
        for (ttl, fragment) in [
            ("30s", "from 1 minute to 24 hours"),
            ("2d", "from 1 minute to 24 hours"),
            ("soon", "expected a duration"),
        ] {
            let text = with(ttl);
            let line = text.lines().count();
            let err = parse(&text).expect_err(ttl);
            let shown = err.to_string();
            assert!(
                shown.starts_with(&format!("gateway.toml:{line}: `auth.signin_link_ttl`")),
                "{shown}"
            );
            assert!(shown.contains(fragment), "{shown}");
        }
    }

    #[test]
    fn retention_and_mail_retry_errors_name_the_key_and_line() {
        let cases = [
            (
                "[store]\naudit_retention = \"12h\"",
                "store.audit_retention",
                "at least 1 day",
            ),
            (
                "[store]\ngrant_retention = \"often\"",
                "store.grant_retention",
                "\"forever\"",
            ),
            (
                "[store]\ngrant_retention = \"0s\"",
                "store.grant_retention",
                "at least 1 day",
            ),
            (
                "[mail]\nretry_for = \"2d\"",
                "mail.retry_for",
                "at most 24h",
            ),
            (
                "[mail]\nretry_for = \"later\"",
                "mail.retry_for",
                "\"0s\" for no retries",
            ),
        ];
        for (table, key, fragment) in cases {
            let text = format!("{MINIMAL}\n{table}\n");
            let line = text.lines().count();
            let err = parse(&text).expect_err(table);
            assert_eq!(err.key(), Some(key), "{err}");
            let shown = err.to_string();
            assert!(
                shown.starts_with(&format!("gateway.toml:{line}: `{key}`")),
                "{shown}"
            );
            assert!(shown.contains(fragment), "{shown}");
        }
        let unknown = parse(&format!("{MINIMAL}\n[store]\nsession_retention = \"1d\"\n"))
            .expect_err("unknown key");
        assert!(
            unknown.to_string().contains("session_retention"),
            "{unknown}"
        );
    }
}
