//! Which worker serves a connection its worker accepted.
//!
//! Every worker accepts from the shared listening sockets, and a connection is best served
//! where it was accepted: no hand-over between threads. But which worker's `accept` wins is up
//! to the scheduler, and it is not fair: with the other workers idle, the one that runs first
//! after a wake-up takes a whole burst of new connections (64 keep-alive connections of a load
//! test all landed on one of two workers). So a worker keeps a connection only while it serves
//! no more than an eighth above the least loaded worker; otherwise the connection goes to that
//! one. Under steady load the workers' counts stay close and hand-overs are rare; a burst is
//! spread as it comes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Open connections per worker, each count in a cache line of its own (every accept and every
/// close writes one; reading the others' lines is what a pick costs).
pub(super) struct WorkerLoad(Box<[Padded]>);

#[repr(align(128))]
struct Padded(AtomicUsize);

impl WorkerLoad {
    pub(super) fn new(workers: usize) -> Arc<WorkerLoad> {
        Arc::new(WorkerLoad(
            (0..workers.max(1))
                .map(|_| Padded(AtomicUsize::new(0)))
                .collect(),
        ))
    }

    /// The worker (0-based) to serve a connection that worker `here` accepted: `here` itself
    /// unless it serves more than an eighth above the least loaded worker, which gets it then.
    pub(super) fn pick(&self, here: usize) -> usize {
        let count = |worker: usize| {
            self.0
                .get(worker)
                .map_or(usize::MAX, |c| c.0.load(Ordering::Relaxed))
        };
        let (least, least_count) = (0..self.0.len())
            .map(|worker| (worker, count(worker)))
            .min_by_key(|&(_, open)| open)
            .unwrap_or((here, 0));
        if count(here) > least_count + least_count / 8 {
            least
        } else {
            here
        }
    }

    /// Counts a connection on `worker` until the returned guard is dropped.
    pub(super) fn open(self: &Arc<WorkerLoad>, worker: usize) -> OpenOnWorker {
        if let Some(count) = self.0.get(worker) {
            count.0.fetch_add(1, Ordering::Relaxed);
        }
        OpenOnWorker {
            load: self.clone(),
            worker,
        }
    }
}

/// A connection's count on its worker, for as long as the connection is open.
pub(super) struct OpenOnWorker {
    load: Arc<WorkerLoad>,
    worker: usize,
}

impl Drop for OpenOnWorker {
    fn drop(&mut self) {
        if let Some(count) = self.load.0.get(self.worker) {
            count.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_accepted_by_one_worker_is_spread_over_all() {
        let load = WorkerLoad::new(4);
        let mut open = Vec::new();
        // Worker 2 wins every accept.
        for _ in 0..64 {
            let worker = load.pick(2);
            open.push((worker, load.open(worker)));
        }
        for worker in 0..4 {
            let served = open.iter().filter(|(w, _)| *w == worker).count();
            assert!(
                (15..=17).contains(&served),
                "worker {worker} serves {served}"
            );
        }
        open.clear();
        assert!(load.0.iter().all(|c| c.0.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn the_accepting_worker_keeps_its_connections_while_within_an_eighth_of_the_least() {
        let load = WorkerLoad::new(2);
        let _first: Vec<_> = (0..32).map(|_| load.open(0)).collect();
        let second: Vec<_> = (0..32).map(|_| load.open(1)).collect();
        // Worker 0 keeps what it accepts while it serves at most 36 (32 + 32 / 8) against 32.
        let mut kept = Vec::new();
        for _ in 32..=36 {
            assert_eq!(load.pick(0), 0);
            kept.push(load.open(0));
        }
        assert_eq!(
            load.pick(0),
            1,
            "37 against 32 is more than an eighth above"
        );
        drop(second);
        assert_eq!(load.pick(1), 1, "the idle worker keeps what it accepts");
        assert_eq!(load.pick(0), 1);
    }

    #[test]
    fn one_worker_keeps_everything() {
        let load = WorkerLoad::new(1);
        let _open: Vec<_> = (0..10).map(|_| load.open(0)).collect();
        assert_eq!(load.pick(0), 0);
    }
}
