//! Every configuration rule, from the file structs to [`Config`]: the rules of each section of
//! the file in a module of its own, the helpers they share and the whole file's rules here.

mod auth;
mod keys;
mod mail;
mod metrics;
mod server;
mod site;
mod store;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::file::FileConfig;
use super::{Config, ConfigError, MetricsConfig, Secret};

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

/// What every section's rules share: the file's text and where it is, to name a key's line and
/// resolve relative paths.
pub(in crate::config) struct Ctx<'a> {
    text: &'a str,
    origin: &'a Path,
    base: &'a Path,
}

type Result<T> = std::result::Result<T, ConfigError>;

impl Ctx<'_> {
    pub(in crate::config) fn invalid(
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

    pub(in crate::config) fn path(&self, raw: &str) -> PathBuf {
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

    pub(in crate::config) fn duration(
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
        if matches!(store.backend, crate::config::StoreBackend::Postgres(_))
            && auth.secret.is_none()
        {
            // A generated secret lives in one gateway's data_dir: every other gateway on the
            // same database would reject its cookies and could not find its codes.
            return Err(self.invalid(
                "auth.secret",
                file.auth.as_ref().map(|a| a.span()),
                "expected `secret`, `secret_file` or `secret_env` with store.backend = \"postgres\": \
                 every gateway on the database must sign and hash with the same secret",
            ));
        }
        let admin_emails = self.admin(file.admin.as_ref())?;
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
}

#[cfg(test)]
mod test_support {
    use std::path::Path;

    use super::parse_str;
    use crate::config::{Config, ConfigError};

    pub(super) fn parse(text: &str) -> std::result::Result<Config, ConfigError> {
        parse_str(
            text,
            Path::new("gateway.toml"),
            Path::new("/nonexistent-base"),
        )
    }

    pub(super) const MINIMAL: &str = r#"
[server]
listen = "127.0.0.1:8080"

[[site]]
hosts = ["localhost"]
upstream = "http://127.0.0.1:8000"
"#;

    pub(super) fn invalid_key(text: &str) -> String {
        match parse(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::{MINIMAL, invalid_key, parse};

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
    fn unknown_key_is_a_syntax_error_naming_the_key_and_line() {
        let err = parse(&MINIMAL.replace("listen =", "lisen =")).expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.contains("lisen"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn tls_listen_needs_a_certificate() {
        let text = MINIMAL.replace("[server]", "[server]\ntls_listen = \"127.0.0.1:8443\"");
        assert_eq!(invalid_key(&text), "server.tls_listen");
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
}
