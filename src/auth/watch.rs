//! Requests that stay open long after the gate let them in: WebSocket tunnels and long response
//! bodies (downloads, server-sent events). The gate checks a request once, when it arrives; these
//! must also end when access does: the client removed from the page or their access period over,
//! the session revoked, signed out or past its lifetime.
//!
//! Such a request joins the [`Watch`] with its session and pages, after a check of its own, and
//! holds a [`Watched`] whose token is cancelled when access ends. A tunnel joins as it is set up;
//! a response body joins on its first poll after streaming for a second or more
//! ([`WatchedBody`]), so an ordinary short answer never touches the registry. One loop, started
//! with the server's housekeeping, calls [`Watch::tick`] every second and then
//! [`Auth::recheck_watched`](super::Auth::recheck_watched) in a blocking task when anything is
//! due: an entry whose check is older than the store's latest change ([`Store::changes`]), or
//! whose end of access has come. Entries are checked again by the same rule as the gate
//! ([`super::access_ends`]), against the configuration in force, so access ends for a tunnel at
//! most about two seconds after it ends for a new request.
//!
//! A body is cut when it is next polled. A watched one is woken for it; a young one is not: a
//! response that goes quiet within its first second stays open while quiet, and joins (with its
//! fresh check, which may end it) only when its upstream sends again, so nothing reaches a
//! visitor who lost access. The price of that is a connection held while nothing flows; the
//! price of the alternative would be a timer for every protected response.
//!
//! Runtime rule relied on: a [`CancellationToken`] may be cancelled from any thread and wakes the
//! task waiting on it wherever that task runs. The loop runs on the main runtime and the checks on
//! its blocking pool, while the tunnels and bodies they end are served on the connection workers'
//! own single-threaded runtimes; cancelling is the only way the two meet. The registry's lock is
//! a short `std::sync::Mutex` section that is never held across an `.await` or a store read.
//!
//! [`Store::changes`]: crate::store::Store::changes

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::Auth;
use crate::body::{Body, BoxError};

/// The change count of an entry joined without a check: no count a store reports equals it,
/// so the next pass of the check takes the entry.
pub const UNCHECKED: u64 = u64::MAX;
use crate::routing::SiteId;
use crate::runtime::EndSignal;
use crate::store::{SecretHash, StoreError, Timestamp};

/// How long, in ticks of [`Watch::tick`], a response body streams before it joins the watch:
/// two ticks are at least one second, whichever moment between two ticks it started.
const YOUNG_TICKS: u64 = 2;

/// Every request watched for the end of its access. One per gateway process, carried over by
/// reloads.
#[derive(Default)]
pub struct Watch {
    /// Seconds counted by the loop; a young body compares it to the count it started at.
    clock: AtomicU64,
    entries: Mutex<Entries>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("entries", &self.lock().map.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Entries {
    /// The id the next entry gets. Ids are never reused, so a check's answer can never land on
    /// an entry that joined after the check began.
    next: u64,
    map: HashMap<u64, Entry>,
}

struct Entry {
    subject: Subject,
    /// [`Store::changes`](crate::store::Store::changes) as read before the last check.
    checked: u64,
    /// When access ends (exclusive), as the last check found.
    ends: Timestamp,
    /// Cancelled once access has ended; the entry stays until its request lets go of it.
    token: CancellationToken,
}

/// Whose access a watched request depends on.
#[derive(Clone)]
pub struct Subject {
    /// The keyed hash of the session id.
    pub session: SecretHash,
    /// The site's name.
    pub site: String,
    /// Ids of the pages the request fell under.
    pub pages: Vec<String>,
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The session's hash stays out of logs like the session itself.
        f.debug_struct("Subject")
            .field("site", &self.site)
            .field("pages", &self.pages)
            .finish_non_exhaustive()
    }
}

/// An entry due for a check.
#[derive(Debug, Clone)]
pub struct Due {
    id: u64,
    /// Whose access to check.
    pub subject: Subject,
}

/// The outcome of checking one entry: until when access lasts (`Some`, possibly already past),
/// no access at all (`None`), or a store that could not say.
pub type Verdict = Result<Option<Timestamp>, StoreError>;

impl Watch {
    /// An empty registry.
    pub fn new() -> Arc<Watch> {
        Arc::new(Watch::default())
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a request whose access was just found to last until `ends`, by a check that read the
    /// store after its change count was `checked`.
    pub fn join(self: &Arc<Self>, subject: Subject, checked: u64, ends: Timestamp) -> Watched {
        let token = CancellationToken::new();
        let mut entries = self.lock();
        let id = entries.next;
        entries.next += 1;
        entries.map.insert(
            id,
            Entry {
                subject,
                checked,
                ends,
                token: token.clone(),
            },
        );
        drop(entries);
        Watched(Arc::new(Registration {
            watch: self.clone(),
            id,
            token,
        }))
    }

    /// One more second on the clock young bodies read.
    pub fn tick(&self) {
        self.clock.fetch_add(1, Ordering::Relaxed);
    }

    fn clock(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    /// How many requests are watched now, ended ones not yet gone included.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether no request is watched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries to check again, given the store's change count `changes` read just before:
    /// those checked before the latest change and those whose access has ended by `now`. Ended
    /// entries are not checked again.
    pub fn due(&self, changes: u64, now: Timestamp) -> Vec<Due> {
        self.lock()
            .map
            .iter()
            .filter(|(_, e)| !e.token.is_cancelled() && (e.checked != changes || e.ends <= now))
            .map(|(&id, e)| Due {
                id,
                subject: e.subject.clone(),
            })
            .collect()
    }

    /// Applies the checks of [`Watch::due`]'s entries, made after reading `changes`: access
    /// that lasts past `now` is noted with its new end; any other verdict ends the request. A
    /// store that could not answer leaves an entry as it was, to be tried again on the next
    /// tick, unless its last known end has come. Returns how many requests were ended.
    pub fn settle(
        &self,
        changes: u64,
        now: Timestamp,
        verdicts: impl IntoIterator<Item = (Due, Verdict)>,
    ) -> usize {
        let mut ended = 0;
        let mut entries = self.lock();
        for (due, verdict) in verdicts {
            // Gone meanwhile: its request ended by itself.
            let Some(entry) = entries.map.get_mut(&due.id) else {
                continue;
            };
            let lasts = match verdict {
                Ok(Some(ends)) if now < ends => {
                    entry.checked = changes;
                    entry.ends = ends;
                    true
                }
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "checking the access of an open request failed");
                    now < entry.ends
                }
            };
            if !lasts && !entry.token.is_cancelled() {
                entry.token.cancel();
                ended += 1;
            }
        }
        ended
    }
}

/// A request's place in the [`Watch`], left when the last clone is dropped.
#[derive(Clone)]
pub struct Watched(Arc<Registration>);

struct Registration {
    watch: Arc<Watch>,
    id: u64,
    token: CancellationToken,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.watch.lock().map.remove(&self.id);
    }
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("ended", &self.0.token.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// The entry's end, for whoever waits on it without knowing the watch (a tunnel).
impl EndSignal for Registration {
    fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Watched {
    /// This entry as an [`EndSignal`]: the entry stays in the watch while the signal is held.
    pub fn signal(&self) -> Arc<dyn EndSignal> {
        self.0.clone()
    }

    /// Whether access has ended.
    pub fn has_ended(&self) -> bool {
        self.0.token.is_cancelled()
    }

    /// Completes once access has ended.
    pub async fn ended(&self) {
        self.0.token.cancelled().await;
    }
}

/// Why a watched response body stopped early.
#[derive(Debug, thiserror::Error)]
#[error("access ended while the response was streaming")]
pub struct AccessEnded;

/// A protected response's body, cut off once access ends. It stays out of the registry while
/// young: an ordinary answer ends long before it would join, and costs only this wrapper and
/// one clock read per frame.
pub struct WatchedBody {
    inner: Body,
    stage: Stage,
}

enum Stage {
    /// Not in the watch yet: what joining needs.
    Young {
        auth: Arc<Auth>,
        site: SiteId,
        session: SecretHash,
        pages: Vec<String>,
        /// The watch's clock when the body started.
        since: u64,
    },
    /// In the watch.
    Watching {
        /// Held for the registry entry; `ended` waits on its token.
        _watched: Watched,
        ended: Pin<Box<WaitForCancellationFutureOwned>>,
    },
    /// Cut off: access ended, or could not be checked.
    Ended,
}

impl WatchedBody {
    /// Wraps the body of a response to a request `auth` allowed for `session` on `pages` (ids)
    /// of `site`.
    pub fn new(
        inner: Body,
        auth: Arc<Auth>,
        site: SiteId,
        session: SecretHash,
        pages: Vec<String>,
    ) -> WatchedBody {
        let since = auth.watch_registry().clock();
        WatchedBody {
            inner,
            stage: Stage::Young {
                auth,
                site,
                session,
                pages,
                since,
            },
        }
    }

    /// Joins the watch once the body has streamed long enough, after checking access afresh: a
    /// frame that arrives after a long silence is only passed on if access still holds. Returns
    /// whether the body may go on.
    fn grow_up(&mut self) -> bool {
        let Stage::Young {
            auth,
            site,
            session,
            pages,
            since,
        } = &mut self.stage
        else {
            return true;
        };
        if auth.watch_registry().clock() < *since + YOUNG_TICKS {
            return true;
        }
        let joined = auth.watch(*site, session, std::mem::take(pages));
        self.stage = match joined {
            Ok(Some(watched)) => {
                let ended = Box::pin(watched.0.token.clone().cancelled_owned());
                Stage::Watching {
                    _watched: watched,
                    ended,
                }
            }
            Ok(None) => Stage::Ended,
            Err(e) => {
                tracing::warn!(error = %e, "checking the access of a long response failed");
                Stage::Ended
            }
        };
        !matches!(self.stage, Stage::Ended)
    }
}

impl HttpBody for WatchedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if !this.grow_up() {
            return Poll::Ready(Some(Err(AccessEnded.into())));
        }
        if let Stage::Watching { ended, .. } = &mut this.stage {
            // Polled first, so that its waker is kept while the upstream is quiet.
            if ended.as_mut().poll(cx).is_ready() {
                this.stage = Stage::Ended;
                return Poll::Ready(Some(Err(AccessEnded.into())));
            }
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(n: u8) -> Subject {
        Subject {
            session: [n; 32],
            site: "school".into(),
            pages: vec!["course".into()],
        }
    }

    #[test]
    fn an_entry_is_due_when_the_store_changed_or_its_access_ended() {
        let watch = Watch::new();
        let _a = watch.join(subject(1), 7, 100);
        assert!(watch.due(7, 50).is_empty(), "nothing changed, access lasts");
        assert_eq!(watch.due(8, 50).len(), 1, "the store changed since");
        assert_eq!(watch.due(7, 100).len(), 1, "its end has come");
    }

    #[test]
    fn lost_access_ends_the_request_and_lasting_access_is_noted() {
        let watch = Watch::new();
        let kept = watch.join(subject(1), 0, 100);
        let removed = watch.join(subject(2), 0, 100);
        let expired = watch.join(subject(3), 0, 100);
        let due = watch.due(1, 50);
        assert_eq!(due.len(), 3);
        let verdicts = due.into_iter().map(|d| {
            let verdict = match d.subject.session[0] {
                1 => Ok(Some(200)),
                2 => Ok(None),
                _ => Ok(Some(50)),
            };
            (d, verdict)
        });
        assert_eq!(watch.settle(1, 50, verdicts), 2);
        assert!(!kept.has_ended());
        assert!(removed.has_ended() && expired.has_ended());
        // Checked at the latest change and good until 200; ended ones are not checked again.
        assert!(watch.due(1, 150).is_empty());
        assert_eq!(watch.due(1, 200).len(), 1);
    }

    #[test]
    fn a_store_failure_keeps_a_request_until_its_known_end() {
        let watch = Watch::new();
        let open = watch.join(subject(1), 0, 100);
        let failed = || Err(StoreError::Backend("disk gone".into()));
        let due = watch.due(1, 50);
        assert_eq!(
            watch.settle(1, 50, due.into_iter().map(|d| (d, failed()))),
            0
        );
        assert!(!open.has_ended());
        assert_eq!(watch.due(1, 50).len(), 1, "tried again on the next tick");
        let due = watch.due(1, 100);
        assert_eq!(
            watch.settle(1, 100, due.into_iter().map(|d| (d, failed()))),
            1
        );
        assert!(open.has_ended());
    }

    #[test]
    fn a_request_leaves_when_dropped_and_a_late_verdict_finds_nothing() {
        let watch = Watch::new();
        let first = watch.join(subject(1), 0, 100);
        let due = watch.due(1, 50);
        drop(first);
        assert!(watch.is_empty());
        // A new request joining meanwhile never receives the old one's verdict.
        let second = watch.join(subject(1), 1, 100);
        assert_eq!(
            watch.settle(1, 50, due.into_iter().map(|d| (d, Ok(None)))),
            0
        );
        assert!(!second.has_ended());
        let clone = second.clone();
        drop(second);
        assert_eq!(watch.len(), 1, "kept while a clone lives");
        drop(clone);
        assert!(watch.is_empty());
    }
}
