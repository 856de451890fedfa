//! `[auth]` (codes, sessions, limits, identity headers, the secret and its rotation) and
//! `[admin]` (who may use the admin page).

use std::time::Duration;

use toml::Spanned;

use super::{Ctx, Result};
use crate::config::file::{FileAdmin, FileAuth};
use crate::config::{AuthConfig, Secret};

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
    pub(super) fn auth(&self, auth: Option<&Spanned<FileAuth>>) -> Result<AuthConfig> {
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

    /// `[admin]`: the emails that may sign in to the admin page, normalised as sign-in
    /// normalises what a visitor types.
    pub(super) fn admin(&self, admin: Option<&Spanned<FileAdmin>>) -> Result<Vec<String>> {
        Ok(match admin {
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
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::validate::parse_str;
    use crate::config::validate::test_support::{MINIMAL, invalid_key, parse};

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
}
