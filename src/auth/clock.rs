//! The time the sign-in flow and the gate go by.
//!
//! Codes, links, sessions and wrong-code counters expire in seconds to days, and a test that
//! waited for that in real time would be slow and, on a loaded machine, unreliable. So the flow
//! reads the time through a [`Clock`]: the system's, plus an offset that only moves forward, set
//! by [`Clock::advance`] (reached from a running gateway through
//! `server::reload::Live::clock`). A gateway's clock is never moved except by such a call, so in
//! service it is the system's time.
//!
//! The decisions of `auth` go by it (codes, links, sessions, counters, the gate, the access
//! watch, the housekeeping that prunes what expired), and so do the access and the sign-in link
//! a shop's grant gives. Key retirement, a grant signature's age (the shop's real time), the
//! client operations' dates and the rate limiters keep the system's time and tokio's.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::store::{Timestamp, now};

/// The system's time, moved forward by however much [`Clock::advance`] was asked; shared by
/// every `Auth` a reload builds, so a reload keeps the time it went by.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    ahead: Arc<AtomicI64>,
}

impl Clock {
    /// Seconds since the epoch, by this clock.
    pub fn now(&self) -> Timestamp {
        now().saturating_add(self.ahead.load(Ordering::Relaxed))
    }

    /// Moves this clock forward by `by` (whole seconds), for everything that reads it from now
    /// on: what would expire in that time has expired.
    #[doc(hidden)]
    pub fn advance(&self, by: Duration) {
        let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        self.ahead.fetch_add(secs, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_goes_by_the_system_until_moved_and_its_copies_move_with_it() {
        let clock = Clock::default();
        let copy = clock.clone();
        let before = now();
        let read = clock.now();
        assert!(read >= before && read <= now(), "the system's time");
        clock.advance(Duration::from_secs(3600));
        assert!(copy.now() >= before + 3600, "moved for every copy");
        assert!(copy.now() <= now() + 3600);
    }
}
