//! The runtime every connection and request runs on, below `server`, `proxy` and `auth`, which
//! all stand on it: one single-threaded tokio runtime per core ([`workers`], with per-worker
//! shares of hot state), the coarse per-worker timer for request deadlines ([`coarse_timer`]),
//! [`EndSignal`], by which a long-lived request learns that it must end, and [`blocking`], the one
//! way store transactions and file work leave the workers.
//!
//! # The rules
//!
//! These pieces rely on rules that no type enforces; the modules above them must keep them.
//! Each is tested where it is kept.
//!
//! 1. **A future stays on the thread that made it.** A connection's task, and everything it
//!    spawns with `tokio::spawn` (its upstream connections, a tunnel, the background sign-in
//!    work), runs on its worker's single-threaded runtime. The coarse timer's deadlines and the
//!    per-worker shares ([`workers::PerWorker`]: the upstream pool's idle stacks, the request
//!    counters) are found through thread-locals when a request arms or writes them. Polled on
//!    another thread a deadline still fires (it keeps its wheel), and a share written from another
//!    worker is still counted, but the point of both is lost: wake-ups cross threads and cache
//!    lines bounce between cores, and an upstream connection checked in from there lands in
//!    another worker's stack. Code that is no worker (the control socket, the metrics listener,
//!    tests driving a gateway on their own runtime) gets share 0 and tokio's own timer.
//! 2. **Only a cancellation crosses threads.** Cancelling an [`EndSignal`]'s token is the one way
//!    other threads (the access watch's loop, the shutdown) reach a request on a worker: a
//!    `CancellationToken` may be cancelled from any thread and wakes the task waiting on it
//!    wherever that runs. Nothing else on a worker is driven from outside.
//! 3. **One idle timeout for every parked socket.** A worker's lot (`server/parking.rs`) keeps
//!    its deadlines in a FIFO queue and only looks at the front one, which is right only while
//!    every socket is parked for the same time: later parked, later due. That is why
//!    `server.header_read_timeout`, which is that time, can change only with a restart
//!    (`server::reload::RESTART_ONLY`): a reload that shortened it would put new deadlines behind
//!    older, later ones, and the lot would close them late.
//! 4. **A connection parks only at an exact request boundary.** Every request read has been
//!    answered, the framing watch says the bytes read end exactly after the last one, hyper's
//!    reader is waiting on the socket with no bytes of its own, and the connection asked for
//!    nothing that hyper must end it for (`Connection: close`, HTTP/1.0, an upgrade). Anything
//!    less certain keeps the hyper connection, so a parked socket never holds part of a request
//!    that a new hyper connection would misread.
//! 5. **Bytes that arrive before parking are not lost.** The client may send its next request
//!    between hyper letting go of the socket and the lot registering it. The lot's epoll
//!    instance reports a socket that is already readable when it is registered (edge-triggered
//!    registration still reports the current state once), so the socket is handed back at once.
//! 6. **Stopping releases everything.** A parked connection holds the connection settings,
//!    which hold the lots that hold it: the cycle is broken only by the lot closing its sockets,
//!    which it does when its run ends or is dropped. The shutdown cancels the lots' tokens,
//!    lets the requests in flight finish, ends the worker threads and waits for the other tasks
//!    that hold the state (control socket, metrics listener, housekeeping, access watch); a
//!    dropped `RunningGateway` starts the same shutdown. So once `RunningGateway::stop` returns,
//!    the database lock is free. The workers' accept loops and the TLS certificate resolver
//!    hold the state only weakly: a gateway whose runtime ended under it lets go of the store
//!    as soon as its connections have, not when its worker threads are finally gone.

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
