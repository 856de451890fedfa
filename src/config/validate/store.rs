//! `[store]`: how long the database keeps audit entries and grant orders, and which database
//! it is (the backend's own rules are in `config/store.rs`).

use std::time::Duration;

use toml::Spanned;

use super::{Ctx, Result};
use crate::config::StoreConfig;
use crate::config::file::FileStore;

/// Default `store.audit_retention`: a year of history.
const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default `store.grant_retention`: shops retry an order within minutes or days; 90 days
/// covers late retries and manual re-sends with a wide margin.
const DEFAULT_GRANT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Shortest retention accepted: anything shorter would forget an order while a shop may
/// still retry it, or the audit entries an admin is about to read.
const MIN_RETENTION: Duration = Duration::from_secs(24 * 3600);

impl Ctx<'_> {
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

    pub(super) fn store(&self, store: Option<&Spanned<FileStore>>) -> Result<StoreConfig> {
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
            backend: crate::config::store::backend(
                s,
                self.secret(
                    "store.url",
                    s.url.as_ref(),
                    s.url_file.as_ref(),
                    s.url_env.as_ref(),
                )?,
                self,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::test_support::{MINIMAL, parse};

    #[test]
    fn retention_and_mail_retry_defaults() {
        let c = parse(MINIMAL).expect("valid");
        let day = 24 * 3600;
        assert_eq!(
            c.store,
            StoreConfig {
                audit_retention: Some(Duration::from_secs(365 * day)),
                grant_retention: Some(Duration::from_secs(90 * day)),
                backend: crate::config::StoreBackend::Redb,
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
