//! The access log's own writer thread, and the bounded queue that feeds it.
//!
//! Workers append finished lines to one shared buffer, a copy under a lock held for nothing
//! else; the writer thread swaps that buffer for an empty one and writes the whole batch with
//! one `write` to stderr or the configured file. A worker never waits for the disk or for
//! whoever reads stderr: when [`MAX_WAITING`] bytes of lines are already waiting, the new line
//! is dropped and counted in `pagegate_access_log_dropped_total`, and [`report_drops`] says so
//! in the log. Lines wait at most [`FLUSH_INTERVAL`], less under load ([`BATCH`] bytes make a
//! batch), and [`flush`] writes out everything accepted before it returns.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard, Once, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Most bytes of lines waiting to be written (about 25,000 lines): a quarter to half a second
/// of the busiest traffic measured, so a short stall of the disk or of the stderr reader loses
/// nothing. Two such buffers at most: one filling, one being written.
pub const MAX_WAITING: usize = 4 << 20;
/// A batch this big is written without waiting for the interval.
pub const BATCH: usize = 64 << 10;
/// Longest a line waits in memory before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Least time between two warnings about dropped lines.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Where lines are written.
#[derive(Debug)]
pub enum Output {
    /// The process's stderr, beside the other log lines: each batch is written under the
    /// stderr lock, so a line is never cut by another log line.
    Stderr,
    /// A file opened for appending, so several writers and log rotation by renaming are safe.
    File(File),
}

impl Output {
    /// The file at `path`, opened for appending (created if missing), or stderr.
    pub fn open(path: Option<&Path>) -> std::io::Result<Output> {
        match path {
            None => Ok(Output::Stderr),
            Some(path) => std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .map(Output::File),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Output::Stderr => std::io::stderr().lock().write_all(bytes),
            Output::File(file) => file.write_all(bytes),
        }
    }
}

/// What workers and the writer share, under [`SHARED`]'s lock.
struct Waiting {
    /// Whole lines, not yet taken by the writer.
    lines: Vec<u8>,
    /// Lines accepted since the start.
    accepted: u64,
    /// Of those, lines the writer has finished with (written, or lost to a write error).
    done: u64,
    /// The writer sleeps until the next line.
    parked: bool,
    /// Someone waits in [`flush`]: write without waiting for the interval.
    flush: bool,
    /// Where to write from the next batch on.
    switch_to: Option<Output>,
    /// No writer thread could be started: every line is dropped.
    no_writer: bool,
    /// The latest write error, for the next warning.
    error: Option<String>,
}

struct Shared {
    waiting: Mutex<Waiting>,
    /// The writer waits on it.
    wake: Condvar,
    /// [`flush`] waits on it.
    written: Condvar,
}

static SHARED: Shared = Shared {
    waiting: Mutex::new(Waiting {
        lines: Vec::new(),
        accepted: 0,
        done: 0,
        parked: false,
        flush: false,
        switch_to: None,
        no_writer: false,
        error: None,
    }),
    wake: Condvar::new(),
    written: Condvar::new(),
};

static STARTED: Once = Once::new();

/// The lock; a thread that panicked holding it left whole lines behind, so it is taken anyway.
fn lock() -> MutexGuard<'static, Waiting> {
    SHARED
        .waiting
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Queues one whole line (with its newline) for the writer, starting it at the first line.
/// Never waits for the writer; returns whether the line was accepted rather than dropped.
pub fn push(line: &[u8]) -> bool {
    STARTED.call_once(start);
    let mut waiting = lock();
    if waiting.no_writer || waiting.lines.len() + line.len() > MAX_WAITING {
        drop(waiting);
        crate::metrics::global().access_log_dropped(1);
        return false;
    }
    if waiting.lines.capacity() == 0 {
        // Once, at its full size: it never grows while a worker holds the lock, and memory is
        // only taken as lines fill it.
        waiting.lines.reserve_exact(MAX_WAITING);
    }
    let before = waiting.lines.len();
    waiting.lines.extend_from_slice(line);
    waiting.accepted += 1;
    let wake =
        std::mem::take(&mut waiting.parked) || (before < BATCH && before + line.len() >= BATCH);
    drop(waiting);
    if wake {
        SHARED.wake.notify_one();
    }
    true
}

/// Writes from the next batch on to `output` (a reopened file after log rotation, or another
/// destination after a reload). The previous file is closed once the writer takes the new one.
pub fn switch(output: Output) {
    lock().switch_to = Some(output);
    SHARED.wake.notify_one();
}

/// Waits until every line accepted before the call is written, at most `limit` (a stderr
/// nobody reads must not keep the process from exiting). Returns whether all were.
pub fn flush(limit: Duration) -> bool {
    if !STARTED.is_completed() {
        return true;
    }
    let until = Instant::now() + limit;
    let mut waiting = lock();
    let target = waiting.accepted;
    if waiting.no_writer {
        return waiting.done >= target;
    }
    while waiting.done < target {
        waiting.flush = true;
        SHARED.wake.notify_one();
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        waiting = SHARED
            .written
            .wait_timeout(waiting, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    true
}

fn start() {
    let spawned = std::thread::Builder::new()
        .name("pagegate-access-log".into())
        .spawn(run);
    if let Err(e) = spawned {
        lock().no_writer = true;
        tracing::error!(error = %e, "cannot start the access log's writer thread: access log lines are dropped");
    }
}

/// The writer thread: waits for lines, then for a batch's worth, the interval or a flush, and
/// writes what has come.
fn run() {
    let mut output = Output::Stderr;
    let mut batch: Vec<u8> = Vec::new();
    let mut waiting = lock();
    loop {
        if let Some(next) = waiting.switch_to.take() {
            output = next;
        }
        if waiting.lines.is_empty() {
            waiting.flush = false;
            waiting.parked = true;
            waiting = SHARED
                .wake
                .wait(waiting)
                .unwrap_or_else(PoisonError::into_inner);
            waiting.parked = false;
            continue;
        }
        let since = Instant::now();
        while !waiting.flush && waiting.switch_to.is_none() && waiting.lines.len() < BATCH {
            let left = FLUSH_INTERVAL.saturating_sub(since.elapsed());
            if left.is_zero() {
                break;
            }
            waiting = SHARED
                .wake
                .wait_timeout(waiting, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        if let Some(next) = waiting.switch_to.take() {
            output = next;
        }
        waiting.flush = false;
        std::mem::swap(&mut waiting.lines, &mut batch);
        let upto = waiting.accepted;
        let lines = upto - waiting.done;
        drop(waiting);
        let written = output.write_all(&batch);
        batch.clear();
        waiting = lock();
        if let Err(e) = written {
            crate::metrics::global().access_log_dropped(lines);
            waiting.error = Some(e.to_string());
        }
        waiting.done = upto;
        SHARED.written.notify_all();
    }
}

/// Warns in the log when lines were dropped, at most once per [`WARN_INTERVAL`], until `stop`.
/// Runs apart from the writer, which may be the one stuck.
pub async fn report_drops(stop: CancellationToken) {
    let metrics = crate::metrics::global();
    let mut reported = metrics.access_log_dropped_count();
    let mut last_warning: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let dropped = metrics.access_log_dropped_count();
        if dropped == reported || last_warning.is_some_and(|at| at.elapsed() < WARN_INTERVAL) {
            continue;
        }
        let error = lock().error.take();
        match error {
            Some(error) => tracing::warn!(
                dropped = dropped - reported,
                error = %error,
                "access log lines dropped: writing them failed"
            ),
            None => tracing::warn!(
                dropped = dropped - reported,
                "access log lines dropped: the access log's destination does not keep up"
            ),
        }
        reported = dropped;
        last_warning = Some(Instant::now());
    }
}
