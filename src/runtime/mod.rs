//! The runtime every connection and request runs on, below `server`, `proxy` and `auth`, which
//! all stand on it: one single-threaded tokio runtime per core ([`workers`], with per-worker
//! shares of hot state), the coarse per-worker timer for request deadlines ([`coarse_timer`]),
//! [`EndSignal`], by which a long-lived request learns that it must end, and [`blocking`], the one
//! way store transactions and file work leave the workers.
//!
//! Rules these pieces rely on (and the modules above them must keep):
//!
//! - A future that uses the coarse timer or a per-worker share stays on the worker thread that
//!   made it: both are thread-local. Work spawned from a request is spawned on its worker
//!   (`tokio::spawn` from a connection's task does that).
//! - Cancelling an [`EndSignal`]'s token is the one way other threads (the access watch's loop,
//!   the shutdown) reach a request on a worker: a `CancellationToken` may be cancelled from any
//!   thread and wakes the task waiting on it wherever that runs.

pub mod coarse_timer;
pub mod workers;

use tokio_util::sync::CancellationToken;

/// What a long-lived request (a tunnel) keeps while it runs and ends on: the connection's hold
/// on the server, ended by the shutdown; the access watch's entry, ended when the visitor's
/// access does. Implemented by the modules that lend them (`server`, `auth`), so that the one
/// that waits (`proxy`) needs neither.
pub trait EndSignal: Send + Sync {
    /// Cancelled when the request must end.
    fn token(&self) -> &CancellationToken;
}

/// Blocking work that ended without an answer: it panicked, or the runtime is shutting down.
/// Each front end turns it into its own internal error.
#[derive(Debug, thiserror::Error)]
#[error("task failed: {0}")]
pub struct TaskFailed(#[from] tokio::task::JoinError);

/// Runs `f` on tokio's blocking pool: a store transaction or a file write must not hold up the
/// worker thread whose other connections wait on it.
pub async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<TaskFailed> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(TaskFailed(e).into()))
}
