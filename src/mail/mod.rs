//! Outgoing mail: the one-time codes and sign-in links pagegate sends.
//!
//! [`Mailer`] turns `[mail]` into one of three transports: a real SMTP server (lettre's pooled
//! async client), standard output (`console`, for the demo and development) or one `.eml` file
//! per message (`file`). Every message is `multipart/alternative` with a text and an HTML part.
//!
//! Message content never goes to the logs: a code or a sign-in link in a log file is a
//! credential anyone reading the logs could use. Logs name the transport and the recipient's
//! domain only, and error details have the recipient's address masked.

mod local;
mod message;
mod smtp;

use std::sync::Arc;

use lettre::message::Mailbox;

use crate::config::{MailConfig, MailTransport};

/// One message to send.
#[derive(Clone)]
pub struct Outgoing {
    /// The recipient's email address.
    pub to: String,
    /// The recipient's display name, if known.
    pub to_name: Option<String>,
    /// The subject line.
    pub subject: String,
    /// The text/plain part.
    pub text: String,
    /// The text/html part.
    pub html: String,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body holds the code or the sign-in link: never print it.
        f.debug_struct("Outgoing")
            .field("to", &self.to)
            .field("to_name", &self.to_name)
            .field("subject", &self.subject)
            .field("text", &"[redacted]")
            .field("html", &"[redacted]")
            .finish()
    }
}

/// Why mail could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The configuration cannot be turned into a transport (bad from address, TLS set-up…).
    #[error("mail set-up failed: {0}")]
    Setup(String),
    /// The message cannot be built (bad recipient address…).
    #[error("mail message cannot be built: {0}")]
    Message(String),
    /// The server refused or the exchange failed.
    #[error("mail not sent ({}): {detail}", if *.transient { "temporary failure" } else { "permanent failure" })]
    Send {
        /// Whether retrying later may work (4xx replies, connection errors, timeouts), as
        /// opposed to a permanent refusal (5xx replies, a server lacking a required feature).
        transient: bool,
        /// What happened; the recipient's address is masked as `*@domain`.
        detail: String,
    },
}

impl MailError {
    /// Whether retrying later may work.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            MailError::Send {
                transient: true,
                ..
            }
        )
    }
}

/// Sends mail through the configured transport. Cloning is cheap and clones share the SMTP
/// connection pool.
#[derive(Clone)]
pub struct Mailer {
    inner: Arc<Inner>,
}

struct Inner {
    from: Mailbox,
    transport: Transport,
}

enum Transport {
    Console,
    File(local::FileSink),
    Smtp(Box<smtp::SmtpSink>),
}

impl Transport {
    fn name(&self) -> &'static str {
        match self {
            Transport::Console => "console",
            Transport::File(_) => "file",
            Transport::Smtp(_) => "smtp",
        }
    }
}

impl Mailer {
    /// Prepares the transport `config` describes. For `file`, the folder is created (0700 on
    /// unix) if missing; for SMTP, TLS is set up with the platform's root certificates. No
    /// connection is made here, so this works outside an async runtime and with the server down.
    pub fn new(config: &MailConfig) -> Result<Mailer, MailError> {
        let from: Mailbox = config.from.trim().parse().map_err(|_| {
            MailError::Setup(format!(
                "the sender {:?} is not a mailbox such as \"Demo School <no-reply@example.com>\"",
                config.from
            ))
        })?;
        let transport = match &config.transport {
            MailTransport::Console => Transport::Console,
            MailTransport::File(dir) => Transport::File(local::FileSink::new(dir)?),
            MailTransport::Smtp(smtp) => Transport::Smtp(Box::new(smtp::SmtpSink::new(smtp)?)),
        };
        Ok(Mailer {
            inner: Arc::new(Inner { from, transport }),
        })
    }

    /// Sends one message. Never blocks the async runtime; over SMTP the whole exchange is bounded
    /// by twice the configured timeout (connecting alone by the timeout).
    pub async fn send(&self, message: Outgoing) -> Result<(), MailError> {
        let transport = &self.inner.transport;
        let built = message::build(&self.inner.from, &message);
        let (email, recipient) = match built {
            Ok(built) => built,
            Err(e) => {
                tracing::warn!(transport = transport.name(), error = %e, "mail not sent");
                return Err(e);
            }
        };
        let result = match transport {
            Transport::Console => local::print(&self.inner.from, &recipient, &message).await,
            Transport::File(sink) => sink.send(email).await,
            Transport::Smtp(sink) => sink.send(email).await,
        }
        .map_err(|e| mask_recipient(e, &recipient));
        let domain = recipient.email.domain();
        match &result {
            Ok(()) => tracing::info!(transport = transport.name(), domain, "mail sent"),
            Err(e) => tracing::warn!(
                transport = transport.name(),
                domain,
                transient = e.is_transient(),
                error = %e,
                "mail not sent"
            ),
        }
        result
    }

    /// A short description for start-up logs, e.g. `smtp://smtp.example.com:587 (starttls)`.
    /// Never includes the password.
    pub fn describe(&self) -> String {
        match &self.inner.transport {
            Transport::Console => "console (messages printed on standard output)".to_string(),
            Transport::File(sink) => sink.describe(),
            Transport::Smtp(sink) => sink.describe(),
        }
    }
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("transport", &self.describe())
            .finish()
    }
}

/// Replaces the recipient's address in an error detail (servers often echo it) with `*@domain`,
/// so errors can be logged without the full address.
fn mask_recipient(error: MailError, recipient: &Mailbox) -> MailError {
    match error {
        MailError::Send { transient, detail } => MailError::Send {
            transient,
            detail: mask(&detail, recipient),
        },
        other => other,
    }
}

fn mask(detail: &str, recipient: &Mailbox) -> String {
    let address = recipient.email.to_string();
    let masked = format!("*@{}", recipient.email.domain());
    // ASCII case folding keeps byte offsets, so positions found in the folded copy are valid.
    let folded_detail = detail.to_ascii_lowercase();
    let folded_address = address.to_ascii_lowercase();
    if folded_address.is_empty() {
        return detail.to_string();
    }
    let mut out = String::with_capacity(detail.len());
    let mut rest = 0;
    for (at, _) in folded_detail.match_indices(&folded_address) {
        if at < rest {
            continue;
        }
        out.push_str(&detail[rest..at]);
        out.push_str(&masked);
        rest = at + address.len();
    }
    out.push_str(&detail[rest..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_error_details_are_masked() {
        let to: Mailbox = "Anna <Anna.P@Example.org>".parse().expect("mailbox");
        assert_eq!(
            mask(
                "550 5.1.1 <anna.p@example.org>: unknown; ANNA.P@EXAMPLE.ORG",
                &to
            ),
            "550 5.1.1 <*@Example.org>: unknown; *@Example.org"
        );
        assert_eq!(mask("421 try later", &to), "421 try later");
    }

    #[test]
    fn outgoing_debug_hides_the_body() {
        let m = Outgoing {
            to: "a@example.org".into(),
            to_name: None,
            subject: "Your code".into(),
            text: "123456".into(),
            html: "<b>123456</b>".into(),
        };
        let shown = format!("{m:?}");
        assert!(!shown.contains("123456"), "{shown}");
    }
}
