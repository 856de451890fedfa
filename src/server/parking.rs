//! Where quiet keep-alive connections wait for their next request.
//!
//! A plain HTTP/1.1 connection that has gone quiet on a request boundary (`connection.rs`) ends
//! its task and leaves its socket here, in its worker's lot, with the few words that say whose
//! it is (its hold on a connection slot, peer, settings). The lot watches every socket it holds
//! with one epoll instance of its own, driven by one task, and hands a socket to a new connection
//! task when its client speaks again. So a quiet connection holds no task, no timer and no
//! registration with the runtime's reactor: a slot of about 150 bytes in a slab, the way nginx
//! keeps an idle connection as a small struct and an epoll entry. A waiting task, by contrast, is
//! a kilobyte or more, spread over the heap in allocations made while the connection was busy,
//! which the allocator can then not give back.
//!
//! Parking and resuming cost three system calls (an epoll change each way, the lot's wait) and
//! a task spawn, which is why a connection parks only after being quiet for a while.
//!
//! The lot closes a socket that stays quiet for the idle timeout, one whose client hangs up
//! without sending anything, and all of them at shutdown.
//!
//! What the lot relies on (the runtime's rules, `crate::runtime`):
//!
//! - **One idle timeout for all.** Deadlines sit in a FIFO queue in the order sockets were
//!   parked, and only the front one is waited for: that order is the order they fall due only
//!   because every parking lasts the same `header_read_timeout`, fixed until a restart. A socket
//!   that resumed leaves a stale entry behind, recognised by its visit number (so it never
//!   closes the next tenant of its slot) and compacted away when stale entries pile up.
//! - **Only sockets on an exact request boundary arrive here** (`connection.rs` decides), with
//!   nothing of the next request read: so a resumed socket starts a new hyper connection as if
//!   it were new.
//! - **Readiness on registration.** The client may already have sent its next request when the
//!   socket is parked; epoll reports a socket readable when it is registered, even
//!   edge-triggered, so such a socket is handed back on the lot's next wake-up.
//! - **The lot ends with its run.** Each parked socket's owner holds the server's settings,
//!   which hold the lot: when [`Lot::run`] returns or is dropped (its worker's runtime ending),
//!   the lot closes every socket and refuses new ones, which breaks that cycle.
//! - **Its task stays on its worker**, like the connections it resumes, which are spawned there.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most readiness events taken from the lot's epoll instance per system call.
const EVENTS_PER_WAIT: usize = 256;

/// One worker's quiet connections; `T` is what a connection keeps besides its socket.
pub(crate) struct Lot<T> {
    /// Taken by [`Lot::run`], the only one that waits on it.
    poll: Mutex<Option<Poll>>,
    /// The same epoll instance, for parking from connection tasks.
    registry: Registry,
    spaces: Mutex<Spaces<T>>,
    /// Wakes the run loop when a connection parks in an empty lot, so it arms its timer.
    arrived: Notify,
    idle_timeout: Duration,
    /// The worker's shutdown: the lot closes everything it holds and takes no more.
    shutdown: CancellationToken,
}

struct Spaces<T> {
    parked: Slab<Space<T>>,
    /// When each parking ends, in the order they fall (the timeout is the same for all). A
    /// connection that resumes leaves its entry behind; such stale entries are skipped when they
    /// fall due and compacted away when they outnumber the live ones.
    deadlines: VecDeque<Deadline>,
    /// Numbers each parking, so a deadline is never applied to a later tenant of the same slot.
    next_visit: u64,
    closed: bool,
}

struct Space<T> {
    socket: TcpStream,
    owner: T,
    visit: u64,
    /// Its count in `pagegate_parked_connections`, until it leaves the lot either way.
    _counted: crate::metrics::ParkedConnection,
}

struct Deadline {
    at: Instant,
    key: usize,
    visit: u64,
}

impl<T: Send + 'static> Lot<T> {
    /// A lot whose sockets close after `idle_timeout` without a request, and all at once when
    /// `shutdown` is cancelled. Serves nothing until [`Lot::run`] is started on the worker.
    pub(crate) fn new(idle_timeout: Duration, shutdown: CancellationToken) -> io::Result<Lot<T>> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        Ok(Lot {
            poll: Mutex::new(Some(poll)),
            registry,
            spaces: Mutex::new(Spaces {
                parked: Slab::new(),
                deadlines: VecDeque::new(),
                next_visit: 0,
                closed: false,
            }),
            arrived: Notify::new(),
            idle_timeout,
            shutdown,
        })
    }

    /// The token connections on this lot's worker watch for the server's shutdown.
    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// How many connections are parked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.spaces().parked.len()
    }

    /// Keeps a quiet socket (non-blocking, nothing of the next request read) until its client
    /// sends something, when `resume` given to [`Lot::run`] gets it back with its owner. If the
    /// idle timeout passes first, the client hangs up, or the lot is shut, the socket is closed
    /// and the owner dropped.
    pub(crate) fn park(&self, socket: TcpStream, owner: T) {
        let mut spaces = self.spaces();
        if spaces.closed {
            return;
        }
        let visit = spaces.next_visit;
        spaces.next_visit += 1;
        let entry = spaces.parked.vacant_entry();
        let key = entry.key();
        let fd = socket.as_raw_fd();
        if let Err(e) = self
            .registry
            .register(&mut SourceFd(&fd), Token(key), Interest::READABLE)
        {
            tracing::debug!(error = %e, "cannot park a quiet connection; closing it");
            return;
        }
        entry.insert(Space {
            socket,
            owner,
            visit,
            _counted: crate::metrics::global().connection_parked(),
        });
        spaces.deadlines.push_back(Deadline {
            at: Instant::now() + self.idle_timeout,
            key,
            visit,
        });
        if spaces.deadlines.len() == 1 {
            self.arrived.notify_one();
        }
        spaces.compact_if_mostly_stale();
    }

    /// Watches the parked sockets until shutdown, handing each one whose client speaks to
    /// `resume` (called on the lot's task, outside any lock: it is expected to spawn).
    pub(crate) fn run<R>(self: Arc<Self>, resume: R) -> impl Future<Output = ()>
    where
        R: Fn(TcpStream, T),
    {
        // However the run ends, returned or dropped with its worker's runtime (even before it
        // was first polled), the parked connections go with it: each holds the server's
        // settings, which hold this lot, so a lot nobody runs would keep them (and the store
        // behind them) forever. Called once per lot.
        let closing = CloseOnDrop(self);
        async move {
            let lot = &closing.0;
            let poll = lot
                .poll
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            let Some(poll) = poll else {
                return;
            };
            // Deprecated as unsound for a type whose `as_raw_fd` could change or close the
            // descriptor; `Poll` owns its epoll descriptor for life and always returns it.
            #[allow(deprecated)]
            let registered = AsyncFd::with_interest(poll, tokio::io::Interest::READABLE);
            match registered {
                Ok(poll) => lot.watch(poll, &resume).await,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch quiet connections; they are closed instead of kept");
                }
            }
        }
    }

    async fn watch<R>(&self, mut poll: AsyncFd<Poll>, resume: &R)
    where
        R: Fn(TcpStream, T),
    {
        let mut events = Events::with_capacity(EVENTS_PER_WAIT);
        loop {
            let next_deadline = self.spaces().deadlines.front().map(|d| d.at);
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return,
                ready = poll.readable_mut() => {
                    let Ok(mut ready) = ready else { return };
                    // Edge-triggered: take every event there is before waiting again.
                    loop {
                        if let Err(e) = ready.get_inner_mut().poll(&mut events, Some(Duration::ZERO)) {
                            if e.kind() == io::ErrorKind::Interrupted {
                                continue;
                            }
                            tracing::error!(error = %e, "cannot wait on quiet connections; closing them");
                            return;
                        }
                        if events.is_empty() {
                            ready.clear_ready();
                            break;
                        }
                        for event in &events {
                            let hung_up = event.is_read_closed() || event.is_error();
                            self.wake(event.token().0, hung_up, resume);
                        }
                    }
                }
                () = tokio::time::sleep_until(next_deadline.unwrap_or_else(Instant::now)),
                    if next_deadline.is_some() => self.expire(Instant::now()),
                () = self.arrived.notified(), if next_deadline.is_none() => {}
            }
        }
    }

    /// The client of the socket in `key` sent something or hung up.
    fn wake<R>(&self, key: usize, hung_up: bool, resume: &R)
    where
        R: Fn(TcpStream, T),
    {
        let Some(Space { socket, owner, .. }) = self.spaces().parked.try_remove(key) else {
            return;
        };
        let _ = self.registry.deregister(&mut SourceFd(&socket.as_raw_fd()));
        // A client that sent a last request and then shut its side is still answered.
        if hung_up && !has_bytes_to_read(&socket) {
            return;
        }
        resume(socket, owner);
    }

    /// Closes the sockets whose idle timeout has passed by `now`.
    fn expire(&self, now: Instant) {
        let mut due = Vec::new();
        {
            let mut spaces = self.spaces();
            while let Some(deadline) = spaces.deadlines.front() {
                if deadline.at > now {
                    break;
                }
                let Deadline { key, visit, .. } = *deadline;
                spaces.deadlines.pop_front();
                if spaces.parked.get(key).is_some_and(|s| s.visit == visit) {
                    due.push(spaces.parked.remove(key));
                }
            }
        }
        // Closed (and their owners dropped) outside the lock.
        drop(due);
    }

    fn close_all(&self) {
        let parked = {
            let mut spaces = self.spaces();
            spaces.closed = true;
            spaces.deadlines = VecDeque::new();
            std::mem::take(&mut spaces.parked)
        };
        drop(parked);
    }

    fn spaces(&self) -> MutexGuard<'_, Spaces<T>> {
        // Nothing panics while holding it; if something did, the slab is still consistent.
        self.spaces.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Closes the lot, and every socket in it, when [`Lot::run`] ends or is dropped.
struct CloseOnDrop<T: Send + 'static>(Arc<Lot<T>>);

impl<T: Send + 'static> Drop for CloseOnDrop<T> {
    fn drop(&mut self) {
        self.0.close_all();
    }
}

impl<T> Spaces<T> {
    fn compact_if_mostly_stale(&mut self) {
        if self.deadlines.len() > 2 * self.parked.len() + 64 {
            let parked = &self.parked;
            self.deadlines
                .retain(|d| parked.get(d.key).is_some_and(|s| s.visit == d.visit));
        }
    }
}

fn has_bytes_to_read(socket: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(socket.peek(&mut byte), Ok(n) if n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener};
    use tokio::sync::mpsc;

    /// A connected pair: the client's end (blocking) and the server's (non-blocking, as parked).
    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("non-blocking");
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        (client, server)
    }

    type Resumed = mpsc::UnboundedReceiver<(TcpStream, u32)>;

    fn lot_running(
        idle_timeout: Duration,
    ) -> (Arc<Lot<u32>>, Resumed, tokio::task::JoinHandle<()>) {
        let lot = Arc::new(Lot::new(idle_timeout, CancellationToken::new()).expect("lot"));
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(lot.clone().run(move |socket, owner| {
            let _ = tx.send((socket, owner));
        }));
        (lot, rx, task)
    }

    /// Reads on the client's end until the server closes it (a test hangs there otherwise).
    async fn closed_by_server(mut client: TcpStream) -> bool {
        tokio::task::spawn_blocking(move || {
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).map(|_| rest.is_empty())
        })
        .await
        .expect("reader")
        .unwrap_or(false)
    }

    #[tokio::test]
    async fn a_parked_socket_comes_back_with_its_bytes_when_its_client_speaks() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (mut client, server) = pair(&listener);
        let (lot, mut resumed, _task) = lot_running(Duration::from_secs(60));
        lot.park(server, 7);
        assert_eq!(lot.len(), 1);
        client.write_all(b"GET / HTTP/1.1\r\n").expect("write");
        let (mut server, owner) = resumed.recv().await.expect("resumed");
        assert_eq!(owner, 7);
        assert_eq!(lot.len(), 0);
        server.set_nonblocking(false).expect("blocking");
        let mut head = [0u8; 16];
        server
            .read_exact(&mut head)
            .expect("the request is still there to read");
        assert_eq!(&head, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_quiet_socket_is_closed_after_the_idle_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (client, server) = pair(&listener);
        let (lot, mut resumed, _task) = lot_running(Duration::from_millis(200));
        lot.park(server, 1);
        assert!(closed_by_server(client).await, "the client sees the close");
        assert_eq!(lot.len(), 0);
        assert!(resumed.try_recv().is_err(), "nothing was handed back");
    }

    #[tokio::test]
    async fn a_client_that_hangs_up_is_forgotten_and_one_that_sent_a_last_request_is_answered() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (silent, silent_server) = pair(&listener);
        let (mut last_words, last_words_server) = pair(&listener);
        let (lot, mut resumed, _task) = lot_running(Duration::from_secs(60));
        lot.park(silent_server, 1);
        lot.park(last_words_server, 2);
        drop(silent);
        last_words
            .write_all(b"GET /bye HTTP/1.1\r\n\r\n")
            .expect("write");
        last_words.shutdown(Shutdown::Write).expect("half close");
        let (_, owner) = resumed.recv().await.expect("resumed");
        assert_eq!(owner, 2, "the half-closed client with a request is served");
        for _ in 0..100 {
            if lot.len() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(lot.len(), 0, "the silent client's socket is let go");
        assert!(resumed.try_recv().is_err(), "and never handed back");
    }

    #[tokio::test]
    async fn shutdown_closes_every_parked_socket_and_takes_no_more() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (lot, _resumed, task) = lot_running(Duration::from_secs(60));
        let mut clients = Vec::new();
        for owner in 0..3 {
            let (client, server) = pair(&listener);
            lot.park(server, owner);
            clients.push(client);
        }
        assert_eq!(lot.len(), 3);
        lot.shutdown().cancel();
        task.await.expect("the lot's task ends");
        for client in clients {
            assert!(closed_by_server(client).await);
        }
        let (late, late_server) = pair(&listener);
        lot.park(late_server, 9);
        assert_eq!(
            lot.len(),
            0,
            "a socket parked after shutdown is closed at once"
        );
        assert!(closed_by_server(late).await);
    }

    #[tokio::test]
    async fn bytes_sent_before_the_socket_was_parked_wake_it_at_once() {
        // The client's next request may arrive between hyper letting go and the park: epoll
        // reports a socket that is already readable when it is registered, so it is not missed.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (mut client, server) = pair(&listener);
        client.write_all(b"GET /early HTTP/1.1\r\n").expect("write");
        let (lot, mut resumed, _task) = lot_running(Duration::from_secs(3600));
        while !has_bytes_to_read(&server) {
            tokio::task::yield_now().await;
        }
        lot.park(server, 3);
        let (_, owner) = resumed.recv().await.expect("resumed without another byte");
        assert_eq!(owner, 3);
    }

    #[tokio::test]
    async fn an_old_deadline_is_not_applied_to_the_next_tenant_of_its_slot() {
        // Driven by hand: no run loop, the lot's steps called directly.
        let lot: Lot<u32> =
            Lot::new(Duration::from_secs(60), CancellationToken::new()).expect("lot");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (_first_client, first) = pair(&listener);
        lot.park(first, 1);
        let first_due = lot
            .spaces()
            .deadlines
            .front()
            .map(|d| d.at)
            .expect("deadline");
        let back = std::cell::Cell::new(None);
        lot.wake(0, false, &|_socket: TcpStream, owner| back.set(Some(owner)));
        assert_eq!(back.get(), Some(1), "the first tenant left");

        let (second_client, second) = pair(&listener);
        lot.park(second, 2);
        let second_due = lot
            .spaces()
            .deadlines
            .back()
            .map(|d| d.at)
            .expect("deadline");
        assert!(second_due > first_due, "parked later, due later");
        assert_eq!(
            lot.spaces().parked.get(0).map(|s| s.visit),
            Some(1),
            "same slot"
        );

        lot.expire(first_due);
        assert_eq!(
            lot.len(),
            1,
            "the first tenant's deadline passed; the second stays"
        );
        lot.expire(second_due);
        assert_eq!(lot.len(), 0, "its own deadline closes it");
        assert!(closed_by_server(second_client).await);
    }

    #[tokio::test]
    async fn a_lot_whose_run_is_dropped_closes_its_sockets_and_takes_no_more() {
        // As when its worker's runtime ends without a shutdown.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (client, server) = pair(&listener);
        let (lot, _resumed, task) = lot_running(Duration::from_secs(3600));
        lot.park(server, 1);
        task.abort();
        assert!(task.await.is_err_and(|e| e.is_cancelled()));
        assert_eq!(lot.len(), 0);
        assert!(closed_by_server(client).await);
        let (late, late_server) = pair(&listener);
        lot.park(late_server, 2);
        assert_eq!(lot.len(), 0);
        assert!(closed_by_server(late).await);
    }

    #[tokio::test]
    async fn deadlines_left_by_resumed_connections_do_not_pile_up() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (mut client, server) = pair(&listener);
        let (lot, mut resumed, _task) = lot_running(Duration::from_secs(3600));
        let mut server = server;
        for round in 0..1000u32 {
            lot.park(server, round);
            client.write_all(b"x").expect("write");
            let (back, owner) = resumed.recv().await.expect("resumed");
            assert_eq!(owner, round);
            let mut byte = [0u8; 1];
            let mut back = back;
            back.set_nonblocking(false).expect("blocking");
            back.read_exact(&mut byte).expect("read");
            back.set_nonblocking(true).expect("non-blocking");
            server = back;
        }
        let kept = lot.spaces().deadlines.len();
        assert!(kept <= 2 + 64, "{kept} deadlines kept for one connection");
    }
}
