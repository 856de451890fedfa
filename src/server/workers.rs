//! Connection workers: one single-threaded runtime per core, each serving whole connections.
//!
//! A proxied request wakes several tasks in turn: the client connection's, the upstream
//! connection's, and the body's reader. On a work-stealing runtime those tasks drift between
//! threads, so each wake-up may cross cores, take a lock and unpark a sleeping thread. Pinning a
//! connection and everything it spawns to one thread (the nginx worker model) makes those
//! wake-ups a push onto a local queue. The upstream pool keeps its idle connections per worker
//! for the same reason ([`current`]).
//!
//! The accept loops stay on the caller's runtime and hand each accepted socket to the next
//! worker in turn. Workers outlive the shutdown signal: they stop only once the server has let
//! the connections in flight finish, or the grace period is over.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    /// 1-based number of the worker running on this thread; 0 on any other thread.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The worker this code runs on (1-based), or 0 outside the workers. Per-worker state indexes by
/// it so that a connection only ever touches its own worker's share.
pub(crate) fn current() -> usize {
    WORKER.with(Cell::get)
}

/// The running workers.
pub(crate) struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Cancelled to let the worker threads end, which drops whatever they still run.
    stop: CancellationToken,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Workers {
    /// Starts `count` worker threads, each with its own runtime (timers and I/O enabled).
    pub(crate) fn start(count: usize) -> std::io::Result<Workers> {
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for number in 1..=count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("pagegate-worker-{number}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(number));
                    runtime.block_on(stop.cancelled());
                    // Anything still running past the grace period is dropped here.
                    runtime.shutdown_background();
                })?;
            threads.push(thread);
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            stop,
            threads: std::sync::Mutex::new(threads),
        })
    }

    /// Runs a connection's future on the next worker, round robin.
    pub(crate) fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[turn].spawn(future);
    }

    /// Ends the worker threads, dropping any connection they still serve, and waits for them.
    pub(crate) async fn stop(&self) {
        self.stop.cancel();
        let threads = match self.threads.lock() {
            Ok(mut threads) => std::mem::take(&mut *threads),
            Err(_) => return,
        };
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // A gateway dropped without a shutdown (a test's runtime ending) still frees its threads.
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_are_spread_over_workers_and_know_their_number() {
        let workers = Workers::start(2).expect("workers start");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..4 {
            let tx = tx.clone();
            workers.spawn(async move {
                let _ = tx.send(current());
            });
        }
        drop(tx);
        let mut seen = Vec::new();
        while let Some(worker) = rx.recv().await {
            seen.push(worker);
        }
        seen.sort_unstable();
        assert_eq!(seen, vec![1, 1, 2, 2]);
        assert_eq!(current(), 0, "the test's own thread is no worker");
        workers.stop().await;
    }
}
