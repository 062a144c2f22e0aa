//! Time as the cores see it: values handed in by a driver, never read from a clock.
//!
//! The cores take `now` as an argument on every call. A driver converts its own clock
//! (`tokio::time::Instant`, turmoil's virtual time, or a test's counter) into an
//! [`Instant`] measured from the moment the driver started, so the same core runs in
//! production, in simulation and in unit tests with no change.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A monotonic moment: nanoseconds since the driver started.
///
/// It is not comparable across drivers (each starts at zero), which is why nothing that
/// leaves a process (the wire, the store) ever carries one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The moment the driver started.
    pub const ZERO: Instant = Instant(0);

    /// The moment `nanos` nanoseconds after the driver started.
    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant(nanos)
    }

    /// The moment `millis` milliseconds after the driver started.
    pub const fn from_millis(millis: u64) -> Instant {
        Instant(millis.saturating_mul(1_000_000))
    }

    /// Nanoseconds since the driver started.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The time elapsed since the driver started.
    pub const fn since_start(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// How long after `earlier` this moment is, or zero if it is not later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    /// Saturates at the far future rather than wrapping: a deadline that far away never fires.
    fn add(self, rhs: Duration) -> Instant {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;

    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_since(rhs)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T+{:?}", self.since_start())
    }
}

/// A moment on the wall clock: microseconds since the Unix epoch.
///
/// Used where a value must mean the same thing in another process or after a restart,
/// such as an agent's incarnation (its start time, as Cassandra's gossip generation).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct WallTime(u64);

impl WallTime {
    /// The wall-clock moment `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: u64) -> WallTime {
        WallTime(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }
}

/// Keeps a `now` that never goes backwards.
///
/// Drivers promise a monotonic clock, but a core must not trust a promise it cannot check:
/// a `now` earlier than one already seen is clamped to the latest.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Clock {
    latest: Instant,
}

impl Clock {
    /// Records `now` and returns the moment the core should act on.
    pub(crate) fn advance(&mut self, now: Instant) -> Instant {
        if now > self.latest {
            self.latest = now;
        }
        self.latest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_never_goes_backwards() {
        let mut clock = Clock::default();
        assert_eq!(
            clock.advance(Instant::from_millis(10)),
            Instant::from_millis(10)
        );
        assert_eq!(
            clock.advance(Instant::from_millis(5)),
            Instant::from_millis(10)
        );
        assert_eq!(
            clock.advance(Instant::from_millis(11)),
            Instant::from_millis(11)
        );
    }

    #[test]
    fn adding_a_huge_duration_saturates_instead_of_wrapping() {
        let t = Instant::from_nanos(u64::MAX - 1) + Duration::from_secs(1);
        assert_eq!(t.as_nanos(), u64::MAX);
    }
}
