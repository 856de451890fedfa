//! `[mail]` and `[mail.smtp]`: how codes and links are sent.

use std::time::Duration;

use toml::Spanned;

use super::{Ctx, Result};
use crate::config::file::FileMail;
use crate::config::{MailConfig, MailTransport, SmtpConfig, SmtpSecurity};

/// Default `mail.retry_for`: long enough to ride out a mail server's restart or greylisting,
/// and no longer than the default `auth.code_ttl`, past which a code mail is useless anyway.
const DEFAULT_MAIL_RETRY: Duration = Duration::from_secs(10 * 60);
/// Upper bound of `mail.retry_for`: the retry queue is in memory, on purpose (see `mail`).
/// Mail that must survive longer outages belongs to a local mail relay with a disk queue.
const MAX_MAIL_RETRY: Duration = Duration::from_secs(24 * 3600);

impl Ctx<'_> {
    pub(super) fn mail(&self, mail: Option<&Spanned<FileMail>>) -> Result<MailConfig> {
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
}
