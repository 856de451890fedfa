//! Per-request deadlines with a coarse, per-worker clock: hyper's header read timeout and the
//! upstream response timeout.
//!
//! Every proxied request arms two deadlines that almost never fire: hyper's wait for the next
//! request's head, and the wait for the upstream's answer. On tokio's timer each one registers
//! in the runtime's timer wheel on its first poll and leaves it when dropped, under the time
//! driver's lock, with clock reads on the way: about 1,300 instructions per deadline, 7% of a
//! proxied request's (docs/performance.md). Neither needs millisecond precision, so each
//! worker keeps its deadlines in a slab of its own instead, and one task per worker checks them
//! every [`TICK`] while any is armed: arming is a slab insert, disarming a removal. A deadline
//! fires up to one tick late, never early.
//!
//! Threads that are no worker (tests driving a gateway on their own runtime) have no wheel and
//! fall back to tokio's timer, so behaviour is the same everywhere; only the cost differs.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;
use tokio::sync::Notify;

/// How often a worker's armed deadlines are checked: the most a deadline fires late.
pub(crate) const TICK: Duration = Duration::from_millis(50);

thread_local! {
    /// The wheel of the worker running on this thread, if it is one.
    static WHEEL: RefCell<Option<Arc<Wheel>>> = const { RefCell::new(None) };
}

/// One worker's armed deadlines.
pub(crate) struct Wheel {
    /// Locked only by its own worker (and by a deadline dropped elsewhere, which is rare), so
    /// the lock is never contended.
    armed: Mutex<Slab<Armed>>,
    /// Wakes the checking task when the first deadline is armed in an empty wheel.
    first_armed: Notify,
}

struct Armed {
    deadline: Instant,
    waker: Waker,
    fired: bool,
}

impl Wheel {
    /// Makes this thread's wheel and returns the task that checks it, to run on this thread's
    /// runtime for as long as the worker lives.
    pub(crate) fn install() -> impl Future<Output = ()> + Send + 'static {
        let wheel = Arc::new(Wheel {
            armed: Mutex::new(Slab::new()),
            first_armed: Notify::new(),
        });
        WHEEL.with(|w| *w.borrow_mut() = Some(wheel.clone()));
        wheel.run()
    }

    fn here() -> Option<Arc<Wheel>> {
        WHEEL.try_with(|w| w.borrow().clone()).ok().flatten()
    }

    async fn run(self: Arc<Self>) {
        loop {
            if self.lock().is_empty() {
                self.first_armed.notified().await;
            }
            tokio::time::sleep(TICK).await;
            self.fire(Instant::now());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slab<Armed>> {
        self.armed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every deadline due by `now`.
    fn fire(&self, now: Instant) {
        let mut due = Vec::new();
        for (_, armed) in self.lock().iter_mut() {
            if !armed.fired && armed.deadline <= now {
                armed.fired = true;
                due.push(armed.waker.clone());
            }
        }
        // Woken outside the lock: a woken task may arm or drop a deadline at once.
        for waker in due {
            waker.wake();
        }
    }

    fn arm(&self, deadline: Instant, waker: &Waker) -> usize {
        let mut armed = self.lock();
        let was_empty = armed.is_empty();
        let key = armed.insert(Armed {
            deadline,
            waker: waker.clone(),
            fired: false,
        });
        drop(armed);
        if was_empty {
            self.first_armed.notify_one();
        }
        key
    }

    /// Whether the deadline has fired; otherwise keeps `waker` to wake when it does.
    fn check(&self, key: usize, waker: &Waker) -> bool {
        let mut armed = self.lock();
        let Some(entry) = armed.get_mut(key) else {
            return true;
        };
        if entry.fired {
            return true;
        }
        if !entry.waker.will_wake(waker) {
            entry.waker = waker.clone();
        }
        false
    }

    fn disarm(&self, key: usize) {
        self.lock().try_remove(key);
    }
}

/// A deadline in its worker's wheel, armed at its first poll and disarmed when dropped.
struct Deadline {
    wheel: Arc<Wheel>,
    at: Instant,
    key: Option<usize>,
}

impl Deadline {
    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.key {
            None => {
                self.key = Some(self.wheel.arm(self.at, cx.waker()));
                Poll::Pending
            }
            Some(key) if self.wheel.check(key, cx.waker()) => Poll::Ready(()),
            Some(_) => Poll::Pending,
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.wheel.disarm(key);
        }
    }
}

/// hyper's timer for the server side: its header read timeout, on the worker's wheel.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CoarseTimer;

/// The [`hyper::rt::Sleep`] [`CoarseTimer`] hands out.
struct CoarseSleep(Deadline);

impl Future for CoarseSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll_elapsed(cx)
    }
}

impl hyper::rt::Sleep for CoarseSleep {}

impl hyper::rt::Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        match Wheel::here() {
            Some(wheel) => Box::pin(CoarseSleep(Deadline {
                wheel,
                at: deadline,
                key: None,
            })),
            None => hyper_util::rt::TokioTimer::new().sleep_until(deadline),
        }
    }
}

/// Why [`timeout`] gave up.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// `future`'s output, or [`Elapsed`] once `duration` has passed (up to a tick later).
pub(crate) fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    let clock = match Wheel::here() {
        Some(wheel) => Clock::Wheel(Deadline {
            wheel,
            at: Instant::now() + duration,
            key: None,
        }),
        None => Clock::Tokio(Box::pin(tokio::time::sleep(duration))),
    };
    Timeout { future, clock }
}

pin_project_lite::pin_project! {
    /// What [`timeout`] returns: the future and its deadline side by side. Written out rather
    /// than as an `async fn`, whose state kept a second slot the size of the future: this one
    /// wraps every proxied request's, which is moved into place on each request.
    pub(crate) struct Timeout<F> {
        #[pin]
        future: F,
        clock: Clock,
    }
}

/// The deadline of a [`Timeout`]: on the worker's wheel, or tokio's timer off the workers.
enum Clock {
    Wheel(Deadline),
    Tokio(Pin<Box<tokio::time::Sleep>>),
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        let elapsed = match this.clock {
            Clock::Wheel(deadline) => deadline.poll_elapsed(cx),
            Clock::Tokio(sleep) => sleep.as_mut().poll(cx),
        };
        elapsed.map(|()| Err(Elapsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a fresh single-threaded runtime whose thread has a wheel, as a worker's has.
    fn on_worker<F: Future<Output = ()> + Send>(f: F) {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    runtime.spawn(Wheel::install());
                    runtime.block_on(f);
                    WHEEL.with(|w| w.borrow_mut().take());
                })
                .join()
                .expect("worker thread");
        });
    }

    #[test]
    fn a_deadline_fires_after_its_time_not_before() {
        on_worker(async {
            for wait in [
                Duration::ZERO,
                Duration::from_millis(30),
                Duration::from_millis(120),
            ] {
                let started = Instant::now();
                let outcome = timeout(wait, std::future::pending::<()>()).await;
                let took = started.elapsed();
                assert_eq!(outcome, Err(Elapsed));
                assert!(took >= wait, "fired early: {took:?} for {wait:?}");
                // Loose on purpose: a busy test machine may run the checking task late.
                assert!(
                    took < wait + Duration::from_secs(2),
                    "never fired: {took:?} for {wait:?}"
                );
            }
        });
    }

    #[test]
    fn a_future_done_in_time_leaves_nothing_armed() {
        on_worker(async {
            let wheel = Wheel::here().expect("a worker's wheel");
            for _ in 0..100 {
                let answered = timeout(Duration::from_secs(5), async {
                    tokio::task::yield_now().await;
                    7
                })
                .await;
                assert_eq!(answered, Ok(7));
            }
            assert!(wheel.lock().is_empty(), "every deadline disarmed");
        });
    }

    #[test]
    fn hyper_sleeps_fire_on_the_wheel_and_elsewhere_on_tokio() {
        use hyper::rt::Timer;
        on_worker(async {
            let started = Instant::now();
            CoarseTimer.sleep(Duration::from_millis(60)).await;
            assert!(started.elapsed() >= Duration::from_millis(60));
            assert!(
                CoarseTimer
                    .sleep(Duration::from_millis(60))
                    .as_mut()
                    .downcast_mut_pin::<CoarseSleep>()
                    .is_some(),
                "a worker's sleep is on its wheel"
            );
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let started = Instant::now();
            CoarseTimer.sleep(Duration::from_millis(20)).await;
            assert!(started.elapsed() >= Duration::from_millis(20));
        });
    }
}
