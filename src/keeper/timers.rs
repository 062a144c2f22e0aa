//! The keeper's timers: exact per-proxy deadlines, at a cost that does not grow with the
//! number of proxies that are not due.
//!
//! Each kind of timer has one fixed length (`ready_timeout`, `lost_after`,
//! `delete_after`, the tombstone lifetime), and every deadline of a kind is armed as
//! `now + length` (or `last_heard + length`, in the order of `last_heard`). Deadlines of
//! one kind are therefore armed in non-decreasing order, so a FIFO queue per kind is an
//! exact priority queue: push at the back, pop at the front, O(1) each.
//!
//! Re-arming does not search the queue. The proxy's record holds its current deadline;
//! a queue entry whose deadline no longer matches the record is stale and is skipped when
//! it reaches the front (lazy cancellation). A heartbeat therefore costs one push, and
//! every entry is popped once.

use std::collections::VecDeque;

use crate::keeper::registry::{ClusterId, Registry};
use crate::time::Instant;

/// Which timer an entry belongs to. Each status arms exactly one kind.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// A `ready` proxy heard nothing for `ready_timeout`: delete it.
    Ready,
    /// An `up` proxy heard nothing for `lost_after`: mark it `lost`.
    Lost,
    /// A `lost` proxy heard nothing for `delete_after`: delete it.
    Delete,
}

impl TimerKind {
    pub(crate) const ALL: [TimerKind; 3] = [TimerKind::Ready, TimerKind::Lost, TimerKind::Delete];
}

/// A FIFO of deadlines armed in non-decreasing order.
#[derive(Debug)]
pub(crate) struct DeadlineQueue<T> {
    entries: VecDeque<(Instant, T)>,
}

impl<T> Default for DeadlineQueue<T> {
    fn default() -> Self {
        DeadlineQueue {
            entries: VecDeque::new(),
        }
    }
}

impl<T> DeadlineQueue<T> {
    /// Arms `item` at `deadline`.
    ///
    /// Deadlines arrive in order by construction (see the module docs). Should one ever
    /// arrive early, it is inserted in its place, so the queue stays exact either way.
    pub(crate) fn push(&mut self, deadline: Instant, item: T) {
        match self.entries.back() {
            Some((last, _)) if *last > deadline => {
                let at = self.entries.partition_point(|(d, _)| *d <= deadline);
                self.entries.insert(at, (deadline, item));
            }
            _ => self.entries.push_back((deadline, item)),
        }
    }

    /// The earliest deadline and its item.
    pub(crate) fn peek(&self) -> Option<(Instant, &T)> {
        self.entries.front().map(|(d, t)| (*d, t))
    }

    /// Removes the earliest entry.
    ///
    /// A queue that shrank to a quarter of its capacity gives half of it back, so a burst
    /// (a fleet registering at once) does not hold memory for ever; halving only then
    /// keeps the cost of the copies amortised O(1) per entry.
    pub(crate) fn pop(&mut self) -> Option<(Instant, T)> {
        let entry = self.entries.pop_front();
        let capacity = self.entries.capacity();
        if capacity > 4096 && self.entries.len() < capacity / 4 {
            self.entries.shrink_to(capacity / 2);
        }
        entry
    }

    /// Number of entries, stale ones included.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// What is due when [`Timers::pop_due`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// The record in `slot` reached its deadline `at` for its status's timer.
    Record {
        /// The timer.
        kind: TimerKind,
        /// The deadline.
        at: Instant,
        /// The record.
        slot: u32,
    },
    /// A tombstone of this cluster expired and was removed.
    Tombstone { cluster: ClusterId },
}

/// Every deadline queue of the keeper: one per record timer kind, holding slots, and one
/// for tombstones, holding identities. Entries are checked against the registry when they
/// reach the front, so stale ones (re-armed, moved on, or gone) are skipped, never fired.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    ready: DeadlineQueue<u32>,
    lost: DeadlineQueue<u32>,
    delete: DeadlineQueue<u32>,
    tombstones: DeadlineQueue<(ClusterId, Box<str>)>,
}

impl Timers {
    fn queue(&mut self, kind: TimerKind) -> &mut DeadlineQueue<u32> {
        match kind {
            TimerKind::Ready => &mut self.ready,
            TimerKind::Lost => &mut self.lost,
            TimerKind::Delete => &mut self.delete,
        }
    }

    /// Arms the timer of the record in `slot`, whose record holds `deadline` as its one
    /// live deadline.
    pub(crate) fn arm(&mut self, kind: TimerKind, deadline: Instant, slot: u32) {
        self.queue(kind).push(deadline, slot);
    }

    /// Arms the expiry of a tombstone, which holds `expires`.
    pub(crate) fn arm_tombstone(&mut self, expires: Instant, cluster: ClusterId, proxy: Box<str>) {
        self.tombstones.push(expires, (cluster, proxy));
    }

    /// Whether a queue entry still stands for its record: the record holds that deadline
    /// for that timer's status.
    fn is_live(registry: &Registry, kind: TimerKind, at: Instant, slot: u32) -> bool {
        registry
            .get(slot)
            .is_some_and(|r| r.deadline == at && r.status.timer() == kind)
    }

    fn is_live_tombstone(
        registry: &Registry,
        at: Instant,
        cluster: ClusterId,
        proxy: &str,
    ) -> bool {
        registry
            .tombstone(cluster, proxy)
            .is_some_and(|t| t.expires == at)
    }

    /// Drops the stale entries at the front of every queue.
    fn prune(&mut self, registry: &Registry) {
        for kind in TimerKind::ALL {
            let queue = self.queue(kind);
            while let Some((at, &slot)) = queue.peek() {
                if Self::is_live(registry, kind, at, slot) {
                    break;
                }
                queue.pop();
            }
        }
        while let Some((at, (cluster, proxy))) = self.tombstones.peek() {
            if Self::is_live_tombstone(registry, at, *cluster, proxy) {
                break;
            }
            self.tombstones.pop();
        }
    }

    /// The earliest live deadline of any queue.
    pub(crate) fn next_deadline(&mut self, registry: &Registry) -> Option<Instant> {
        self.prune(registry);
        [
            self.ready.peek().map(|(at, _)| at),
            self.lost.peek().map(|(at, _)| at),
            self.delete.peek().map(|(at, _)| at),
            self.tombstones.peek().map(|(at, _)| at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Takes the earliest live entry due at `now`. A due tombstone is removed from the
    /// registry here; a due record is handed to the caller to fire.
    pub(crate) fn pop_due(&mut self, registry: &mut Registry, now: Instant) -> Option<Due> {
        self.prune(registry);
        let record = [
            (TimerKind::Ready, self.ready.peek()),
            (TimerKind::Lost, self.lost.peek()),
            (TimerKind::Delete, self.delete.peek()),
        ]
        .into_iter()
        .filter_map(|(kind, entry)| entry.map(|(at, &slot)| (at, kind, slot)))
        .min_by_key(|&(at, kind, _)| (at, kind));
        let stone = self.tombstones.peek().map(|(at, _)| at);
        match (record, stone) {
            (Some((at, kind, slot)), stone) if at <= now && stone.is_none_or(|s| at <= s) => {
                self.queue(kind).pop();
                Some(Due::Record { kind, at, slot })
            }
            (_, Some(at)) if at <= now => {
                let (_, (cluster, proxy)) = self.tombstones.pop()?;
                registry.remove_tombstone(cluster, &proxy);
                Some(Due::Tombstone { cluster })
            }
            _ => None,
        }
    }

    /// Entries held, stale ones included.
    pub(crate) fn len(&self) -> usize {
        self.ready.len() + self.lost.len() + self.delete.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_out_in_deadline_order_even_if_armed_out_of_order() {
        let mut q = DeadlineQueue::default();
        q.push(Instant::from_millis(10), 'a');
        q.push(Instant::from_millis(30), 'c');
        q.push(Instant::from_millis(20), 'b');
        q.push(Instant::from_millis(30), 'd');
        let order: Vec<char> = std::iter::from_fn(|| q.pop().map(|(_, c)| c)).collect();
        assert_eq!(order, vec!['a', 'b', 'c', 'd']);
    }
}
