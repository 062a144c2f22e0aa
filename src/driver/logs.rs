//! Log lines of mass events, aggregated.
//!
//! One proxy going `lost` is worth an INFO line naming it; five thousand going `lost` at
//! once (the keeper's own network, a rack switch) are not fifteen thousand lines (lost,
//! deleted, restarted), which bury the one line that says why and can fill a disk. Per
//! cluster and kind of event (a status change `from → to`, a `Restart` sent, a
//! `Superseded` sent), the first [`BURST`] in a window of [`WINDOW`] are logged one by
//! one; the rest of the window at DEBUG only, counted, and summed up in one line when
//! the window ends: `status changed for 4980 more proxies of cluster c (up -> lost) in
//! the last 10s`. Every event is still in the watch stream, the store's log and the
//! metrics; only the log is thinned.
//!
//! Time is the keeper's (the driver's clock), so a simulation aggregates as a real
//! keeper does; the driver wakes for [`Throttle::next_flush`] so a summary is never held
//! back by a quiet keeper.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::time::Instant;

/// Lines logged one by one per cluster and kind within a window.
pub const BURST: u32 = 20;

/// The window over which events beyond the burst are summed up.
pub const WINDOW: Duration = Duration::from_secs(10);

/// What an event is, for aggregation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A status change, with its reason.
    Status {
        /// The status before (`none`: not registered).
        from: &'static str,
        /// The status after (`none`: deleted).
        to: &'static str,
    },
    /// A `Restart` sent.
    Restart,
    /// A `Superseded` sent.
    Superseded,
}

impl Kind {
    fn describe(&self, count: u64, cluster: &str, window: Duration) -> String {
        let secs = window.as_secs();
        match self {
            Kind::Status { from, to } => format!(
                "status changed for {count} more proxies of cluster {cluster} ({from} -> {to}) in the last {secs}s"
            ),
            Kind::Restart => format!(
                "restart sent to {count} more proxies of cluster {cluster} in the last {secs}s"
            ),
            Kind::Superseded => format!(
                "superseded sent to {count} more processes of cluster {cluster} in the last {secs}s"
            ),
        }
    }
}

#[derive(Debug)]
struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

/// Decides, event by event, whether a line is logged on its own; sums up the rest.
#[derive(Debug, Default)]
pub struct Throttle {
    windows: BTreeMap<(String, Kind), Window>,
}

/// One summary line to log: `(cluster, kind, how many were not logged, the message)`.
pub type Summary = (String, Kind, u64, String);

impl Throttle {
    /// Whether the event of `kind` in `cluster` at `now` gets its own line. Ends (and
    /// returns the summary of) the window it falls after, if that window held more.
    pub fn admit(&mut self, cluster: &str, kind: Kind, now: Instant) -> (bool, Option<Summary>) {
        let key = (cluster.to_owned(), kind);
        let mut summary = None;
        let window = self.windows.entry(key.clone()).or_insert(Window {
            started: now,
            logged: 0,
            suppressed: 0,
        });
        if now.saturating_since(window.started) >= WINDOW {
            if window.suppressed > 0 {
                summary = Some((
                    key.0.clone(),
                    key.1.clone(),
                    window.suppressed,
                    key.1.describe(window.suppressed, &key.0, WINDOW),
                ));
            }
            *window = Window {
                started: now,
                logged: 0,
                suppressed: 0,
            };
        }
        if window.logged < BURST {
            window.logged += 1;
            (true, summary)
        } else {
            window.suppressed += 1;
            (false, summary)
        }
    }

    /// The summaries of every window that has ended by `now` (and forgets the windows),
    /// sorted by cluster and kind.
    pub fn flush(&mut self, now: Instant) -> Vec<Summary> {
        let mut out = Vec::new();
        self.windows.retain(|(cluster, kind), w| {
            if now.saturating_since(w.started) < WINDOW {
                return true;
            }
            if w.suppressed > 0 {
                out.push((
                    cluster.clone(),
                    kind.clone(),
                    w.suppressed,
                    kind.describe(w.suppressed, cluster, WINDOW),
                ));
            }
            false
        });
        out
    }

    /// When the earliest window ends, if any is open.
    pub fn next_flush(&self) -> Option<Instant> {
        self.windows.values().map(|w| w.started + WINDOW).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOST: Kind = Kind::Status {
        from: "up",
        to: "lost",
    };

    #[test]
    fn a_mass_event_is_a_burst_of_lines_then_one_summary() {
        let mut t = Throttle::default();
        let start = Instant::ZERO + Duration::from_secs(100);
        let mut logged = 0;
        for i in 0..5_000u64 {
            let (own, summary) = t.admit("c", LOST, start + Duration::from_micros(i * 100));
            assert_eq!(summary, None);
            logged += u32::from(own);
        }
        assert_eq!(logged, BURST);
        // Another cluster and another kind have windows of their own.
        assert!(t.admit("d", LOST, start).0);
        assert!(t.admit("c", Kind::Restart, start).0);
        assert_eq!(t.flush(start + (WINDOW - Duration::from_millis(1))), vec![]);
        assert_eq!(t.next_flush(), Some(start + WINDOW));
        let summaries = t.flush(start + WINDOW);
        assert_eq!(summaries.len(), 1, "{summaries:?}");
        let (cluster, kind, count, line) = &summaries[0];
        assert_eq!((cluster.as_str(), kind, *count), ("c", &LOST, 5_000 - 20));
        assert_eq!(
            line,
            "status changed for 4980 more proxies of cluster c (up -> lost) in the last 10s"
        );
        assert_eq!(t.next_flush(), None, "every window ended");
        // A new window logs again.
        assert!(t.admit("c", LOST, start + WINDOW * 2).0);
    }

    #[test]
    fn an_event_after_a_full_window_ends_it_with_its_summary() {
        let mut t = Throttle::default();
        let start = Instant::ZERO;
        for _ in 0..BURST + 3 {
            t.admit("c", Kind::Restart, start);
        }
        let (own, summary) = t.admit("c", Kind::Restart, start + WINDOW);
        assert!(own);
        let (_, _, count, line) = summary.expect("the window's summary");
        assert_eq!(count, 3);
        assert_eq!(
            line,
            "restart sent to 3 more proxies of cluster c in the last 10s"
        );
    }
}
