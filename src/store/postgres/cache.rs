//! The session check from memory: the last answer the database gave for a (session, pages)
//! question, kept while nothing that decides access has changed and for at most a few seconds.
//!
//! An answer is stored with the change count ([`super::PgStore`]'s `changes`) read *before* the
//! question was asked, and used only while the count is still the same: any change to a client
//! list or a session, by this gateway or another (announced by `NOTIFY` and, should that be
//! lost, found by the once-a-second poll), makes every older answer unusable at once. A change
//! committed while the question was in flight moves the count past the stored one, so a stale
//! answer can never be stored as fresh. [`FRESH_FOR`] bounds the rest: an answer older than that
//! is asked again, so a change whose announcement and poll both fail (the database or the network
//! down) still takes effect within it, and a gateway cut off from its database stops admitting
//! anyone within it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::{SecretHash, SessionAccess};

/// How long an answer is used at most. Every signed-in visitor costs one database read per
/// this period, so it trades load against how long an unannounced change may go unseen.
pub(super) const FRESH_FOR: Duration = Duration::from_secs(3);

/// More sessions than this are not remembered: the cache is emptied and fills again.
const MAX_SESSIONS: usize = 200_000;

struct Answer {
    pages: Box<[String]>,
    access: Option<SessionAccess>,
    asked_at: Instant,
    changes: u64,
}

/// Recent answers to the session check, by session.
#[derive(Default)]
pub(super) struct AccessCache {
    sessions: Mutex<HashMap<SecretHash, Vec<Answer>>>,
}

impl AccessCache {
    /// The stored answer for `session` on `pages`, if it was asked at change count `changes`
    /// (the current one) and less than [`FRESH_FOR`] ago.
    pub(super) fn get(
        &self,
        session: &SecretHash,
        pages: &[&str],
        changes: u64,
    ) -> Option<Option<SessionAccess>> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let answer = sessions
            .get(session)?
            .iter()
            .find(|a| a.pages.iter().map(String::as_str).eq(pages.iter().copied()))?;
        (answer.changes == changes && answer.asked_at.elapsed() < FRESH_FOR)
            .then(|| answer.access.clone())
    }

    /// Stores the database's answer for `session` on `pages`, asked at `asked_at` when the
    /// change count was `changes`.
    pub(super) fn put(
        &self,
        session: &SecretHash,
        pages: &[&str],
        access: Option<SessionAccess>,
        asked_at: Instant,
        changes: u64,
    ) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.len() >= MAX_SESSIONS && !sessions.contains_key(session) {
            sessions.retain(|_, answers| {
                answers.retain(|a| a.changes == changes && a.asked_at.elapsed() < FRESH_FOR);
                !answers.is_empty()
            });
            if sessions.len() >= MAX_SESSIONS {
                sessions.clear();
            }
        }
        let answers = sessions.entry(*session).or_default();
        answers.retain(|a| !a.pages.iter().map(String::as_str).eq(pages.iter().copied()));
        answers.push(Answer {
            pages: pages.iter().map(|p| (*p).to_owned()).collect(),
            access,
            asked_at,
            changes,
        });
    }

    /// Forgets every answer: after a reconnect, when announcements may have been missed.
    pub(super) fn clear(&self) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SessionRecord;

    fn access(email: &str) -> Option<SessionAccess> {
        Some(SessionAccess {
            session: SessionRecord {
                site: "school".into(),
                email: email.into(),
                created_at: 1,
                expires_at: 2,
            },
            clients: vec![None],
        })
    }

    #[test]
    fn an_answer_serves_only_the_same_pages_at_the_same_change_count() {
        let cache = AccessCache::default();
        let session = [7u8; 32];
        cache.put(&session, &["course"], access("a@x"), Instant::now(), 5);
        let hit = cache.get(&session, &["course"], 5).expect("fresh answer");
        assert_eq!(hit.map(|a| a.session.email), Some("a@x".to_owned()));
        assert!(cache.get(&session, &["course", "vip"], 5).is_none());
        assert!(cache.get(&session, &["course"], 6).is_none(), "a change");
        assert!(cache.get(&[8u8; 32], &["course"], 5).is_none());
    }

    #[test]
    fn an_answer_older_than_the_bound_is_asked_again() {
        let cache = AccessCache::default();
        let session = [7u8; 32];
        let long_ago = Instant::now()
            .checked_sub(FRESH_FOR)
            .expect("the machine has been up longer than the bound");
        cache.put(&session, &["course"], access("a@x"), long_ago, 5);
        assert!(cache.get(&session, &["course"], 5).is_none());
    }

    #[test]
    fn a_negative_answer_is_kept_and_a_clear_forgets_everything() {
        let cache = AccessCache::default();
        let session = [7u8; 32];
        cache.put(&session, &[], None, Instant::now(), 1);
        assert_eq!(cache.get(&session, &[], 1).map(|a| a.is_none()), Some(true));
        cache.clear();
        assert!(cache.get(&session, &[], 1).is_none());
    }
}
