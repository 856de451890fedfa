//! `[metrics]`: where the Prometheus metrics are served, and the token that guards them.

use toml::Spanned;

use super::{Ctx, Result};
use crate::config::file::FileMetrics;
use crate::config::{MetricsConfig, ServerConfig};

impl Ctx<'_> {
    /// `[metrics]`: the listener must not collide with the site listeners, and serving metrics on
    /// the public sites needs a token, since they tell sign-in counts, site names and API key
    /// names to whoever asks.
    pub(super) fn metrics(
        &self,
        raw: &Spanned<FileMetrics>,
        server: &ServerConfig,
    ) -> Result<MetricsConfig> {
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
}

#[cfg(test)]
mod tests {
    use crate::config::Secret;
    use crate::config::validate::test_support::{MINIMAL, invalid_key, parse};

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
}
