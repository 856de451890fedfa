//! Hearing of every gateway's changes at once: a connection of its own, outside the pool, that
//! `LISTEN`s on [`CHANNEL`]. A write that changes who has access announces the change count it
//! moved to (`pg_notify`, after its commit); each gateway that hears it knows that every session
//! answer it keeps from before is out of date.
//!
//! A notification sent while this connection is down is lost for good, so after every (re)connect
//! the gateway forgets every kept answer and reads the count afresh. A connection that stays up
//! but silently stops delivering is caught by a ping, and the kept answers' age bound
//! ([`super::cache::FRESH_FOR`]) covers the time until then.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, Socket};

use super::cache::AccessCache;
use super::{PgTls, PostgresConfig, READ_CHANGES, changes_in, connect, with_causes};
use crate::store::StoreError;

/// The channel changes are announced on.
pub(super) const CHANNEL: &str = "pagegate_changes";

/// How often the listening connection is asked whether it still works.
const PING_EVERY: Duration = Duration::from_secs(5);

/// The longest wait between two attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the listener updates: the highest change count heard, and the kept answers to forget.
pub(super) struct Listener {
    pub seen: Weak<AtomicU64>,
    pub cache: Weak<AccessCache>,
    /// Up while a connection listens, for the metrics.
    pub listening: Arc<AtomicBool>,
    pub config: PostgresConfig,
    pub pg: tokio_postgres::Config,
    pub database: String,
}

impl Listener {
    /// Listens, reconnecting for ever, until the store is dropped.
    pub(super) async fn run(self) {
        let mut backoff = Duration::from_millis(100);
        let mut failing = false;
        loop {
            if self.seen.upgrade().is_none() {
                return;
            }
            let outcome = self.listen_once().await;
            self.listening.store(false, Ordering::Release);
            match outcome {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    failing = false;
                    tracing::warn!(database = %self.database, "lost the connection that hears other gateways' changes; reconnecting");
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(database = %self.database, error = %e, "cannot listen for other gateways' changes; retrying");
                    }
                    failing = true;
                }
            }
            // Answers remembered before the cut stay usable for the rest of their bound (a
            // database that is back within it costs signed-in visitors nothing); the next
            // connection forgets them all, since announcements made meanwhile are lost.
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection's life: `LISTEN`, catch up, then apply announcements until it fails.
    /// `Ok` when a working connection ended, `Err` when none could be made.
    async fn listen_once(&self) -> Result<(), StoreError> {
        let (client, mut announcements) = open(&self.config, &self.pg).await?;
        // Listening from here on; whatever was announced before is read from the count itself,
        // and every answer kept from before is forgotten.
        let row = client
            .query_one(READ_CHANGES, &[])
            .await
            .map_err(super::backend)?;
        let count = changes_in(&row);
        let Some(seen) = self.seen.upgrade() else {
            return Ok(());
        };
        seen.fetch_max(count, Ordering::AcqRel);
        drop(seen);
        if let Some(cache) = self.cache.upgrade() {
            cache.clear();
        }
        self.listening.store(true, Ordering::Release);
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                heard = announcements.recv() => {
                    let Some(payload) = heard else { return Ok(()) };
                    let Some(seen) = self.seen.upgrade() else { return Ok(()) };
                    if let Ok(count) = payload.parse::<u64>() {
                        seen.fetch_max(count, Ordering::AcqRel);
                    }
                }
                _ = ping.tick() => {
                    let answered = tokio::time::timeout(
                        self.config.connect_timeout,
                        client.simple_query("SELECT 1"),
                    )
                    .await;
                    if !matches!(answered, Ok(Ok(_))) {
                        return Ok(());
                    }
                    if self.seen.upgrade().is_none() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// A connection listening on [`CHANNEL`], and the payloads it hears. The receiver ends when the
/// connection does.
async fn open(
    config: &PostgresConfig,
    pg: &tokio_postgres::Config,
) -> Result<(tokio_postgres::Client, mpsc::UnboundedReceiver<String>), StoreError> {
    match config.tls {
        PgTls::Disable => open_with(pg, tokio_postgres::NoTls).await,
        PgTls::Require | PgTls::VerifyFull => {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(connect::tls_config(config)?);
            open_with(pg, tls).await
        }
    }
}

async fn open_with<T>(
    pg: &tokio_postgres::Config,
    tls: T,
) -> Result<(tokio_postgres::Client, mpsc::UnboundedReceiver<String>), StoreError>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    // Named apart from the pool's connections, so an operator can tell it in pg_stat_activity.
    let mut pg = pg.clone();
    pg.application_name("pagegate-listen");
    let (client, mut connection) = pg
        .connect(tls)
        .await
        .map_err(|e| StoreError::Unavailable(with_causes(&e)))?;
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message
                && sender.send(n.payload().to_owned()).is_err()
            {
                return;
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(super::backend)?;
    Ok((client, receiver))
}
