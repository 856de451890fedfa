//! Connection workers: one single-threaded runtime per core, each serving whole connections.
//!
//! A proxied request wakes several tasks in turn: the client connection's, the upstream
//! connection's, and the body's reader. On a work-stealing runtime those tasks drift between
//! threads, so each wake-up may cross cores, take a lock and unpark a sleeping thread. Pinning a
//! connection and everything it spawns to one thread (the nginx worker model) makes those
//! wake-ups a push onto a local queue. The upstream pool keeps its idle connections per worker
//! for the same reason ([`current`]).
//!
//! Workers are kept on CPUs of their own only when `server.pin_workers` asks for it. Pinned, no
//! two busy workers share a CPU while another runs something else, which helps a machine kept
//! busy by long-lived connections (HTTP/2 served 11–25% more requests a second); but a pinned
//! worker also cannot move to a CPU that another program leaves idle, and a gateway shares its
//! machine with its upstream more often than not: on two cores shared with the load generator
//! and the upstream, pinned workers left a quarter of the CPU time idle and made 30–45% fewer
//! TLS handshakes per second, with keep-alive HTTP/1.1 no faster (docs/performance.md).
//!
//! Every worker accepts connections itself, from its own descriptor of each listening socket
//! (`server::accept_on_worker`), and serves each connection where it accepted it: no socket is
//! handed between threads. Workers outlive the shutdown signal: they stop only once the server
//! has let the connections in flight finish, or the grace period is over.

use std::cell::Cell;
use std::future::Future;

use tokio::runtime::Handle;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How long a stopping worker waits for the calls on its blocking pool (store reads and
/// writes, each a transaction of milliseconds) before leaving them behind.
const BLOCKING_CALLS_END: std::time::Duration = std::time::Duration::from_secs(10);

thread_local! {
    /// 1-based number of the worker running on this thread; 0 on any other thread.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The worker this code runs on (1-based), or 0 outside the workers. Per-worker state indexes by
/// it so that a connection only ever touches its own worker's share.
pub(crate) fn current() -> usize {
    WORKER.with(Cell::get)
}

/// State written on every request, one share per worker, each in cache lines of its own: two
/// workers writing to one line pass it back and forth between their cores on every request.
///
/// There is a share per worker a machine of this size runs by default, plus share 0 for threads
/// that are no worker. Workers beyond that (an explicit `server.workers` above the CPU count)
/// share, which is correct, only slower.
pub(crate) struct PerWorker<T>(Box<[Padded<T>]>);

#[repr(align(128))]
struct Padded<T>(T);

impl<T> PerWorker<T> {
    pub(crate) fn new(mut make: impl FnMut() -> T) -> PerWorker<T> {
        let shares = std::thread::available_parallelism().map_or(1, |n| n.get()) + 1;
        PerWorker((0..shares).map(|_| Padded(make())).collect())
    }

    /// The share of the worker this code runs on.
    pub(crate) fn here(&self) -> &T {
        &self.0[current() % self.0.len()].0
    }

    /// Every share, to sum or sweep them.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|padded| &padded.0)
    }
}

/// The running workers.
pub(crate) struct Workers {
    handles: Vec<Handle>,
    /// Cancelled to let the worker threads end, which drops whatever they still run.
    stop: CancellationToken,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Workers {
    /// Starts `count` worker threads, each with its own runtime (timers and I/O enabled), pinned
    /// to CPUs if `pin`.
    pub(crate) fn start(count: usize, pin: bool) -> std::io::Result<Workers> {
        let cpus = pin_plan(count, pin, &usable_cpus());
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for number in 1..=count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            let cpu = cpus.get(number - 1).copied();
            let thread = std::thread::Builder::new()
                .name(format!("pagegate-worker-{number}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(number));
                    // The worker's per-request deadlines (header reads, upstream answers).
                    runtime.spawn(super::coarse_timer::Wheel::install());
                    if let Some(cpu) = cpu {
                        if let Err(e) = pin_current_thread(cpu) {
                            tracing::warn!(worker = number, cpu, error = %e, "cannot keep the worker on its CPU; it runs unpinned");
                        }
                    }
                    runtime.block_on(stop.cancelled());
                    // Anything still running past the grace period is dropped here; a store
                    // call already on the blocking pool is let finish (briefly), so that once
                    // the thread has ended nothing it ran holds the store.
                    runtime.shutdown_timeout(BLOCKING_CALLS_END);
                })?;
            threads.push(thread);
        }
        Ok(Workers {
            handles,
            stop,
            threads: std::sync::Mutex::new(threads),
        })
    }

    /// How many workers there are.
    pub(crate) fn count(&self) -> usize {
        self.handles.len()
    }

    /// Runs a future on worker `worker` (0-based, below [`Workers::count`]; the last one
    /// otherwise).
    pub(crate) fn spawn_on<F>(&self, worker: usize, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let last = self.handles.len() - 1;
        self.handles[worker.min(last)].spawn(future);
    }

    /// Ends the worker threads when the guard is dropped, without waiting for them: for an owner
    /// that may be dropped before it can call [`Workers::stop`].
    pub(crate) fn stop_on_drop(&self) -> DropGuard {
        self.stop.clone().drop_guard()
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

/// The CPU each worker is kept on, by worker (empty: none pinned). Only when asked for: the
/// workers are then spread over the usable CPUs in turn.
fn pin_plan(workers: usize, pin: bool, usable: &[usize]) -> Vec<usize> {
    if !pin || usable.is_empty() {
        return Vec::new();
    }
    usable.iter().copied().cycle().take(workers).collect()
}

/// The CPUs this process may run on (its affinity mask, which containers and `taskset`
/// narrow), in ascending order; empty where that cannot be known.
#[cfg(target_os = "linux")]
fn usable_cpus() -> Vec<usize> {
    use nix::sched::{CpuSet, sched_getaffinity};
    use nix::unistd::Pid;
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(not(target_os = "linux"))]
fn usable_cpus() -> Vec<usize> {
    Vec::new()
}

#[cfg(target_os = "linux")]
fn pin_current_thread(cpu: usize) -> nix::Result<()> {
    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::unistd::Pid;
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set)
}

#[cfg(not(target_os = "linux"))]
fn pin_current_thread(_cpu: usize) -> Result<(), std::io::Error> {
    Ok(())
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
    async fn futures_run_on_the_worker_they_are_given_to_and_know_its_number() {
        let workers = Workers::start(2, false).expect("workers start");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..4 {
            let tx = tx.clone();
            workers.spawn_on(n % 2, async move {
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

    #[test]
    fn workers_are_pinned_only_when_asked() {
        let usable = [2, 3, 6, 7];
        for workers in [2, 4, 6] {
            assert_eq!(
                pin_plan(workers, false, &usable),
                Vec::<usize>::new(),
                "{workers} workers"
            );
        }
        assert_eq!(pin_plan(4, true, &usable), vec![2, 3, 6, 7]);
        assert_eq!(pin_plan(6, true, &usable), vec![2, 3, 6, 7, 2, 3]);
        assert_eq!(pin_plan(2, true, &usable), vec![2, 3]);
        assert_eq!(pin_plan(2, true, &[]), Vec::<usize>::new(), "mask unknown");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_pinned_worker_runs_on_its_cpu_alone() {
        let usable = usable_cpus();
        assert!(!usable.is_empty(), "the affinity mask is readable on Linux");
        let workers = Workers::start(1, true).expect("workers start");
        let (tx, rx) = tokio::sync::oneshot::channel();
        workers.spawn_on(0, async move {
            let _ = tx.send(usable_cpus());
        });
        let seen = rx.await.expect("the worker answers");
        assert_eq!(
            seen,
            vec![usable[0]],
            "the worker may run on the first usable CPU only"
        );
        assert_eq!(
            usable_cpus(),
            usable,
            "the caller's thread is left as it was"
        );
        workers.stop().await;
    }
}
