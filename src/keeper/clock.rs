//! Keeper time: real time minus the time in which the keeper itself did not run.
//!
//! etcd promises that no lease expires because of server-side unavailability; the keeper
//! makes the same promise to its proxies. A keeper that was stopped (SIGSTOP, a paused
//! VM), starved (an overloaded host) or blocked (a slow disk) finds, when it runs again,
//! heartbeats queued in its socket and timers long overdue. Had it acted on real time, it
//! would mark the whole fleet `lost`, delete it and restart it: the very harm it exists
//! to prevent.
//!
//! So the core measures its own unavailability from the times it is handed. Whenever
//! anything is registered it asks to be woken at least every half heartbeat interval
//! (see [`KeeperClock::wake_by`]); on every input (a datagram, a timeout, an admin call)
//! it compares `now` with the wakeup it last asked for. Lateness above the *slop* is a
//! **stall**: the keeper did not run for that long. Keeper time is real time minus every
//! stall. Deadlines and token ages run on keeper time, so a stall shifts them by its
//! length — it hands out no fresh windows, so repeated stalls cannot hide a dead proxy,
//! which is still marked `lost` within `lost_after` of keeper time — and the heartbeats
//! that queued during the stall are read before any timer is due.
//!
//! The slop absorbs ordinary wakeup jitter (tokio timers on a loaded 2-core machine are
//! often 50–200 ms late): lateness up to it counts as time passing, as before. Its cost is
//! the other side of the same coin: a stall no longer than the slop counts against the
//! proxies in full, and a stall longer than it delays the detection of a real death by
//! the stall's length.

use std::time::Duration;

use crate::time::Instant;

/// The keeper's two clocks: the real one it is handed and keeper time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeeperClock {
    /// The latest real moment seen (never goes backwards).
    real: Instant,
    /// Every stall so far, added up.
    stalled: Duration,
    /// The real moment the core last asked to be woken by (from `poll_timeout`), until an
    /// input at or after it.
    wake: Option<Instant>,
    /// Lateness up to this much is jitter, not a stall.
    slop: Duration,
}

impl KeeperClock {
    /// A clock that starts at real time `now`.
    pub(crate) fn new(now: Instant, slop: Duration) -> KeeperClock {
        KeeperClock {
            real: now,
            stalled: Duration::ZERO,
            wake: None,
            slop,
        }
    }

    /// Takes an input's real `now` (clamped so it never goes backwards). Returns the stall
    /// it reveals, if the core is later than the slop past the wakeup it asked for.
    pub(crate) fn enter(&mut self, now: Instant) -> Option<Duration> {
        if now > self.real {
            self.real = now;
        }
        let wake = self.wake?;
        if self.real < wake {
            return None;
        }
        self.wake = None;
        let late = self.real - wake;
        if late > self.slop {
            self.stalled += late;
            Some(late)
        } else {
            None
        }
    }

    /// Records the wakeup the core asks for (real time) and returns it.
    pub(crate) fn wake_by(&mut self, at: Instant) -> Instant {
        self.wake = Some(at);
        at
    }

    /// The latest real moment.
    pub(crate) fn real(&self) -> Instant {
        self.real
    }

    /// Keeper time now.
    pub(crate) fn now(&self) -> Instant {
        self.keeper_time(self.real)
    }

    /// Keeper time at real moment `real` (after the stalls known so far).
    pub(crate) fn keeper_time(&self, real: Instant) -> Instant {
        Instant::from_nanos(real.as_nanos().saturating_sub(nanos(self.stalled)))
    }

    /// The real moment at which keeper time reaches `at`, if no further stall happens.
    pub(crate) fn real_time(&self, at: Instant) -> Instant {
        at + self.stalled
    }

    /// Every stall so far, added up.
    pub(crate) fn stalled(&self) -> Duration {
        self.stalled
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOP: Duration = Duration::from_millis(200);

    #[test]
    fn lateness_within_the_slop_is_time_passing() {
        let mut clock = KeeperClock::new(Instant::ZERO, SLOP);
        clock.wake_by(Instant::from_millis(500));
        assert_eq!(clock.enter(Instant::from_millis(650)), None);
        assert_eq!(clock.now(), Instant::from_millis(650));
    }

    #[test]
    fn lateness_beyond_the_slop_is_a_stall_that_keeper_time_leaves_out() {
        let mut clock = KeeperClock::new(Instant::ZERO, SLOP);
        clock.wake_by(Instant::from_millis(500));
        assert_eq!(
            clock.enter(Instant::from_millis(10_500)),
            Some(Duration::from_secs(10))
        );
        assert_eq!(clock.now(), Instant::from_millis(500));
        assert_eq!(
            clock.real_time(Instant::from_millis(800)),
            Instant::from_millis(10_800)
        );
        // Counted once: the next input without a new wakeup is no stall.
        assert_eq!(clock.enter(Instant::from_millis(20_000)), None);
    }

    #[test]
    fn an_input_before_the_wakeup_is_no_stall_and_keeps_the_wakeup() {
        let mut clock = KeeperClock::new(Instant::ZERO, SLOP);
        clock.wake_by(Instant::from_millis(500));
        assert_eq!(clock.enter(Instant::from_millis(100)), None);
        assert_eq!(
            clock.enter(Instant::from_millis(1_000)),
            Some(Duration::from_millis(500))
        );
    }

    #[test]
    fn real_time_never_goes_backwards() {
        let mut clock = KeeperClock::new(Instant::from_millis(10), SLOP);
        clock.enter(Instant::from_millis(5));
        assert_eq!(clock.real(), Instant::from_millis(10));
    }
}
