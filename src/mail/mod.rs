//! Outgoing mail: the one-time codes and sign-in links pagegate sends.
//!
//! [`Mailer`] turns `[mail]` into one of three transports: a real SMTP server (lettre's pooled
//! async client), standard output (`console`, for the demo and development) or one `.eml` file
//! per message (`file`). Every message is `multipart/alternative` with a text and an HTML part.
//!
//! Message content never goes to the logs: a code or a sign-in link in a log file is a
//! credential anyone reading the logs could use. Logs name the transport and the recipient's
//! domain only, and error details have the recipient's address masked.
//!
//! # Retries
//!
//! [`Mailer::deliver`] retries a message the server refused for a temporary reason (a `4xx`
//! reply, a refused or reset connection, a timeout) with exponential back-off and jitter, for at
//! most `mail.retry_for` and never past the moment the message stops being useful (a code's
//! expiry). A permanent refusal (`5xx`) ends it at once. A newer message under the same key (a
//! new code for the same visitor) replaces one still waiting, so an outdated code never arrives
//! after the current one.
//!
//! The queue of waiting messages is the set of `deliver` calls in progress: it lives in memory
//! only, on purpose. Codes and link tokens are stored only as keyed hashes; a disk queue would
//! hold them in clear, next to the database, and undo that. The price is that messages still
//! waiting when pagegate stops are lost; the visitor then asks for a new code. Mail that must
//! survive long outages belongs to a local relay with its own queue.

mod local;
mod message;
mod smtp;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lettre::message::Mailbox;
use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{MailConfig, MailTransport};

/// Wait before the first retry; each further wait doubles, up to [`LAST_RETRY_WAIT`].
const FIRST_RETRY_WAIT: Duration = Duration::from_secs(1);
/// Longest wait between two tries.
const LAST_RETRY_WAIT: Duration = Duration::from_secs(60);
/// Most messages waiting at once. Beyond it a temporary failure is final, so a long outage
/// under heavy sign-in traffic cannot grow the in-memory queue without bound.
const MAX_WAITING: usize = 10_000;

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
    /// A newer message under the same key replaced this one while it waited for a retry. Not a
    /// failure the visitor should hear of: the newer message is on its way.
    #[error("mail not sent: replaced by a newer message to the same recipient")]
    Replaced,
    /// The gateway is shutting down; messages waiting for a retry are dropped.
    #[error("mail not sent: the gateway is shutting down")]
    Stopped,
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

/// What a message is for, which bounds how long [`Mailer::deliver`] retries it.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// How long the message stays useful, counted from now (a code's validity); `None` for
    /// mail that does not expire. Retries stop there even if `mail.retry_for` is longer.
    pub useful_for: Option<Duration>,
    /// A newer message delivered under the same key (site and recipient of a code) replaces
    /// this one if it is still waiting for a retry.
    pub key: Option<String>,
}

/// Sends mail through the configured transport. Cloning is cheap and clones share the SMTP
/// connection pool and the retry queue.
#[derive(Clone)]
pub struct Mailer {
    inner: Arc<Inner>,
}

struct Inner {
    from: Mailbox,
    transport: Transport,
    /// `mail.retry_for`.
    retry_for: Duration,
    /// Messages accepted by `deliver` and neither sent nor given up yet.
    waiting: AtomicUsize,
    /// The newest message number per [`Delivery::key`], while one is in progress.
    newest: Mutex<HashMap<String, u64>>,
    next_number: AtomicU64,
    /// Cancelled by [`Mailer::close`]: waiting messages are dropped.
    closed: CancellationToken,
}

/// Counts a message as waiting for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Waiting<'a> {
        count.fetch_add(1, Ordering::AcqRel);
        crate::metrics::global().mail_waiting_entered();
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::global().mail_waiting_left();
    }
}

/// The wait before retry number `retry` (1 for the first): doubling from [`FIRST_RETRY_WAIT`]
/// up to [`LAST_RETRY_WAIT`], of which a random half is taken off so that messages deferred
/// together (a mail server restarting) do not all come back at the same moment.
fn retry_wait(retry: u32) -> Duration {
    let full = FIRST_RETRY_WAIT
        .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
        .min(LAST_RETRY_WAIT);
    let half = full / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
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
            inner: Arc::new(Inner {
                from,
                transport,
                retry_for: config.retry_for,
                waiting: AtomicUsize::new(0),
                newest: Mutex::new(HashMap::new()),
                next_number: AtomicU64::new(0),
                closed: CancellationToken::new(),
            }),
        })
    }

    /// Messages accepted by [`Mailer::deliver`] and neither sent nor given up yet: being sent
    /// or waiting for a retry.
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::Acquire)
    }

    /// Drops every message waiting for a retry (their `deliver` returns
    /// [`MailError::Stopped`]) and refuses new ones; for shutdown, which should not wait for a
    /// mail server that is down.
    pub fn close(&self) {
        let waiting = self.waiting();
        if waiting > 0 {
            tracing::warn!(
                waiting,
                "shutting down with mail not yet sent; it is dropped (the queue is kept in memory only)"
            );
        }
        self.inner.closed.cancel();
    }

    /// Sends one message, retrying temporary failures as the module documentation describes.
    /// Returns once the message is sent (`Ok`) or finally not sent: a permanent refusal,
    /// retries used up (the last error), [`MailError::Replaced`] or [`MailError::Stopped`].
    pub async fn deliver(&self, message: Outgoing, delivery: Delivery) -> Result<(), MailError> {
        let inner = &self.inner;
        let _waiting = Waiting::enter(&inner.waiting);
        let started = Instant::now();
        let bound = delivery
            .useful_for
            .map_or(inner.retry_for, |useful| useful.min(inner.retry_for));
        let deadline = started + bound;
        let number = inner.next_number.fetch_add(1, Ordering::Relaxed);
        if let Some(key) = &delivery.key {
            inner
                .newest
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key.clone(), number);
        }
        let outcome = self
            .retry_until(&message, deadline, started, delivery.key.as_deref(), number)
            .await;
        if let Some(key) = &delivery.key {
            let mut newest = inner.newest.lock().unwrap_or_else(PoisonError::into_inner);
            if newest.get(key) == Some(&number) {
                newest.remove(key);
            }
        }
        outcome
    }

    async fn retry_until(
        &self,
        message: &Outgoing,
        deadline: Instant,
        started: Instant,
        key: Option<&str>,
        number: u64,
    ) -> Result<(), MailError> {
        let inner = &self.inner;
        let transport = inner.transport.name();
        let (email, recipient) = match message::build(&inner.from, message) {
            Ok(built) => built,
            Err(e) => {
                tracing::warn!(transport, error = %e, "mail not sent");
                return Err(e);
            }
        };
        let domain = recipient.email.domain().to_string();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            // A retry may not run past the deadline; the first try gets the transport's own bound.
            let within = (attempts > 1).then(|| deadline.saturating_duration_since(Instant::now()));
            let result = tokio::select! {
                () = inner.closed.cancelled() => Err(MailError::Stopped),
                result = self.attempt(message, email.clone(), &recipient, within) => result,
            };
            let error = match result {
                Ok(()) => {
                    tracing::info!(transport, domain, attempts, "mail sent");
                    return Ok(());
                }
                Err(e) => e,
            };
            if matches!(error, MailError::Stopped) || !error.is_transient() {
                tracing::warn!(transport, domain, attempts, transient = false, error = %error, "mail not sent");
                return Err(error);
            }
            let wait = retry_wait(attempts);
            let crowded = self.waiting() > MAX_WAITING;
            if Instant::now() + wait >= deadline || crowded {
                tracing::warn!(
                    transport,
                    domain,
                    attempts,
                    transient = true,
                    tried_for = %humantime::format_duration(Duration::from_secs(started.elapsed().as_secs())),
                    error = %error,
                    "mail not sent; {}",
                    if crowded { "too many messages waiting to retry it" } else { "giving up retrying" }
                );
                return Err(error);
            }
            tracing::info!(
                transport,
                domain,
                attempts,
                retry_in = %humantime::format_duration(Duration::from_millis(wait.as_millis() as u64)),
                error = %error,
                "mail deferred; will retry"
            );
            tokio::select! {
                () = inner.closed.cancelled() => return Err(MailError::Stopped),
                () = tokio::time::sleep(wait) => {}
            }
            if self.replaced(key, number) {
                tracing::info!(
                    transport,
                    domain,
                    attempts,
                    "mail not retried: a newer message to the same recipient replaced it"
                );
                return Err(MailError::Replaced);
            }
        }
    }

    /// Whether a message newer than `number` was delivered under `key` meanwhile.
    fn replaced(&self, key: Option<&str>, number: u64) -> bool {
        key.is_some_and(|key| {
            let newest = self
                .inner
                .newest
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            newest.get(key) != Some(&number)
        })
    }

    /// Sends one message once, without retrying. Never blocks the async runtime; over SMTP the
    /// whole exchange is bounded by twice the configured timeout (connecting alone by the
    /// timeout).
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
        let result = self.attempt(&message, email, &recipient, None).await;
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

    /// One try through the transport, bounded by `within` as well as by the transport's own
    /// limits. Errors have the recipient's address masked.
    async fn attempt(
        &self,
        message: &Outgoing,
        email: lettre::Message,
        recipient: &Mailbox,
        within: Option<Duration>,
    ) -> Result<(), MailError> {
        match &self.inner.transport {
            Transport::Console => local::print(&self.inner.from, recipient, message).await,
            Transport::File(sink) => sink.send(email).await,
            Transport::Smtp(sink) => sink.send(email, within).await,
        }
        .map_err(|e| mask_recipient(e, recipient))
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
