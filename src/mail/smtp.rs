//! The SMTP transport: lettre's pooled async client over tokio, TLS by rustls with the platform's
//! root certificates.
//!
//! lettre bounds connecting with the timeout but has no read timeout on an established
//! connection, so each send is also wrapped in a deadline of twice the timeout. A send cut short
//! by that deadline may leave its connection waiting for a reply that is still on its way; were it
//! parked in the pool, the next message would read that stale reply as its own. So after a
//! deadline the whole pool is dropped (lettre closes its connections) and the next send builds a
//! fresh one.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::{AsyncSmtpTransportBuilder, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::MailError;
use crate::config::{SmtpConfig, SmtpSecurity};

type Client = AsyncSmtpTransport<Tokio1Executor>;

pub(super) struct SmtpSink {
    builder: AsyncSmtpTransportBuilder,
    timeout: Duration,
    /// Built on first use: lettre's pool starts a task, which needs the tokio runtime.
    client: Mutex<Option<Arc<Client>>>,
    /// `host:port`, to say which server an error came from.
    server: String,
    description: String,
}

impl SmtpSink {
    pub(super) fn new(config: &SmtpConfig) -> Result<SmtpSink, MailError> {
        let host = config.host.as_str();
        let tls_failed =
            |e: lettre::transport::smtp::Error| MailError::Setup(format!("TLS for {host}: {e}"));
        let builder = match config.security {
            SmtpSecurity::StartTls => Client::starttls_relay(host).map_err(tls_failed)?,
            SmtpSecurity::Tls => Client::relay(host).map_err(tls_failed)?,
            SmtpSecurity::None => Client::builder_dangerous(host),
        };
        let mut builder = builder
            .port(config.port)
            .timeout(Some(config.timeout))
            .pool_config(PoolConfig::new());
        let with_login = match (&config.username, &config.password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(user.clone(), password.0.clone()));
                true
            }
            _ => false,
        };
        if with_login && config.security == SmtpSecurity::None {
            tracing::warn!(
                host,
                "mail.smtp.security is \"none\": the SMTP password travels unencrypted"
            );
        }
        let security = match config.security {
            SmtpSecurity::StartTls => "starttls",
            SmtpSecurity::Tls => "tls",
            SmtpSecurity::None => "no TLS",
        };
        let description = format!(
            "smtp://{host}:{} ({security}{})",
            config.port,
            if with_login { ", with login" } else { "" }
        );
        Ok(SmtpSink {
            builder,
            timeout: config.timeout,
            client: Mutex::new(None),
            server: format!("{host}:{}", config.port),
            description,
        })
    }

    pub(super) fn describe(&self) -> String {
        self.description.clone()
    }

    /// Sends one message within twice the timeout, or within `within` if that is shorter (a
    /// retry must not outlive the code it carries).
    pub(super) async fn send(
        &self,
        email: Message,
        within: Option<Duration>,
    ) -> Result<(), MailError> {
        let client = self.client();
        let own = self.timeout.saturating_mul(2);
        let deadline = within.map_or(own, |w| w.min(own));
        match tokio::time::timeout(deadline, client.send(email)).await {
            Ok(Ok(_reply)) => Ok(()),
            Ok(Err(e)) => Err(send_error(&self.server, &e)),
            Err(_elapsed) => {
                self.discard(&client);
                Err(MailError::Send {
                    transient: true,
                    detail: format!(
                        "{}: no complete answer within {}",
                        self.server,
                        humantime::format_duration(deadline)
                    ),
                })
            }
        }
    }

    fn client(&self) -> Arc<Client> {
        let mut slot = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(slot.get_or_insert_with(|| Arc::new(self.builder.clone().build())))
    }

    /// Drops the pool `used` belongs to, unless another send replaced it already.
    fn discard(&self, used: &Arc<Client>) {
        let mut slot = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        if slot
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, used))
        {
            *slot = None;
        }
    }
}

/// Maps lettre's error: 5xx replies and client-side refusals (the server lacks STARTTLS, an
/// authentication mechanism or 8BITMIME) are permanent; 4xx replies, connection and network
/// failures (which include TLS handshake failures), timeouts and garbled replies are transient.
fn send_error(server: &str, e: &lettre::transport::smtp::Error) -> MailError {
    let permanent =
        !e.is_transient() && !e.is_timeout() && (e.is_permanent() || e.is_client() || e.is_tls());
    MailError::Send {
        transient: !permanent,
        detail: format!("{server}: {e}"),
    }
}
