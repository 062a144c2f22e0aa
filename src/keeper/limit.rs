//! How many challenges the keeper sends to one source address: at most
//! `challenge_limit` ([`CHALLENGES_PER_INTERVAL`] unless configured) per heartbeat
//! interval (`docs/PROTOCOL.md` §12, step 4).
//!
//! A challenge answers a request whose token is stale, which any captured datagram
//! replayed from a spoofed source is. Challenges are never larger than what they answer,
//! so this is not about amplification but about reflection: without a limit, an attacker
//! with a captured datagram could make the keeper send a challenge per replay to a
//! victim. A proxy answers at most two challenges per interval and is never limited.
//!
//! The state is bounded: a table of [`SOURCES`] entries, two-way set associative on a
//! fixed-seed hash of the address (IP and port: proxies behind one NAT address have
//! ports of their own). A source not in its set takes the way whose window began
//! first; under a flood of more sources than the table holds, the oldest are forgotten
//! (and may be challenged afresh), which bounds memory, not correctness.

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::time::Duration;

use foldhash::fast::FixedState;

use crate::time::Instant;

/// Challenges one source may get per heartbeat interval, by default.
pub const CHALLENGES_PER_INTERVAL: u32 = 4;
/// Sources the table remembers.
pub const SOURCES: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Entry {
    source: SocketAddr,
    window: Instant,
    sent: u32,
}

/// The table (see the module's documentation).
#[derive(Debug)]
pub(crate) struct ChallengeLimit {
    ways: Vec<Option<Entry>>,
    window: Duration,
    /// Challenges per source per window (0: no limit, no table).
    budget: u32,
    hasher: FixedState,
}

impl ChallengeLimit {
    /// A table whose windows last `window` (the heartbeat interval), allowing `budget`
    /// challenges per source per window (0: every one).
    pub(crate) fn new(window: Duration, budget: u32) -> ChallengeLimit {
        ChallengeLimit {
            ways: if budget == 0 {
                Vec::new()
            } else {
                vec![None; SOURCES]
            },
            window,
            budget,
            hasher: FixedState::with_seed(0x7a6b_6c69_6d69_7400),
        }
    }

    /// Whether a challenge may go to `source` at `now`; counts it if so.
    pub(crate) fn allow(&mut self, source: SocketAddr, now: Instant) -> bool {
        if self.budget == 0 {
            return true;
        }
        let set = (self.hasher.hash_one(source) as usize % (SOURCES / 2)) * 2;
        let expired = |e: &Entry| now.saturating_since(e.window) >= self.window;
        let way = match (self.ways[set], self.ways[set + 1]) {
            (Some(e), _) if e.source == source => set,
            (_, Some(e)) if e.source == source => set + 1,
            (None, _) => set,
            (_, None) => set + 1,
            (Some(a), Some(b)) => {
                // Neither is this source: it takes the older window's way.
                let way = if b.window < a.window { set + 1 } else { set };
                self.ways[way] = None;
                way
            }
        };
        let entry = match self.ways[way] {
            Some(e) if !expired(&e) => e,
            _ => Entry {
                source,
                window: now,
                sent: 0,
            },
        };
        if entry.sent >= self.budget {
            self.ways[way] = Some(entry);
            return false;
        }
        self.ways[way] = Some(Entry {
            sent: entry.sent + 1,
            ..entry
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_source_gets_its_budget_per_window_and_others_theirs() {
        let mut limit = ChallengeLimit::new(Duration::from_secs(1), CHALLENGES_PER_INTERVAL);
        let t0 = Instant::from_millis(10_000);
        for _ in 0..CHALLENGES_PER_INTERVAL {
            assert!(limit.allow(addr(1), t0));
        }
        assert!(!limit.allow(addr(1), t0));
        assert!(!limit.allow(addr(1), t0 + Duration::from_millis(999)));
        // Another port of the same IP (a NAT) has a budget of its own.
        assert!(limit.allow(addr(2), t0));
        // The next window.
        assert!(limit.allow(addr(1), t0 + Duration::from_secs(1)));
    }

    #[test]
    fn a_flood_of_sources_is_held_in_bounded_memory() {
        let mut limit = ChallengeLimit::new(Duration::from_secs(1), CHALLENGES_PER_INTERVAL);
        let t0 = Instant::from_millis(10_000);
        for port in 1..=60_000 {
            assert!(limit.allow(addr(port), t0), "{port}");
        }
        assert_eq!(limit.ways.len(), SOURCES);
        // A source flooding meanwhile is still held to its budget if it keeps its way.
        let mut sent = 0;
        for _ in 0..100 {
            sent += u32::from(limit.allow(addr(7), t0));
        }
        assert_eq!(sent, CHALLENGES_PER_INTERVAL);
    }

    #[test]
    fn a_budget_of_zero_limits_nothing() {
        let mut limit = ChallengeLimit::new(Duration::from_secs(1), 0);
        assert!((0..100).all(|_| limit.allow(addr(1), Instant::ZERO)));
        assert!(limit.ways.is_empty());
    }
}
