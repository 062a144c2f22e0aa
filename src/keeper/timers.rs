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

/// One queue per timer kind, holding record slots.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    ready: DeadlineQueue<u32>,
    lost: DeadlineQueue<u32>,
    delete: DeadlineQueue<u32>,
}

impl Timers {
    pub(crate) fn queue(&mut self, kind: TimerKind) -> &mut DeadlineQueue<u32> {
        match kind {
            TimerKind::Ready => &mut self.ready,
            TimerKind::Lost => &mut self.lost,
            TimerKind::Delete => &mut self.delete,
        }
    }

    pub(crate) fn arm(&mut self, kind: TimerKind, deadline: Instant, slot: u32) {
        self.queue(kind).push(deadline, slot);
    }

    /// The kind whose front entry is earliest, with that entry.
    pub(crate) fn earliest(&self) -> Option<(Instant, TimerKind, u32)> {
        [
            (&self.ready, TimerKind::Ready),
            (&self.lost, TimerKind::Lost),
            (&self.delete, TimerKind::Delete),
        ]
        .into_iter()
        .filter_map(|(q, kind)| q.peek().map(|(d, slot)| (d, kind, *slot)))
        .min_by_key(|(d, kind, _)| (*d, *kind))
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

    #[test]
    fn the_earliest_entry_across_kinds_is_found() {
        let mut t = Timers::default();
        t.arm(TimerKind::Lost, Instant::from_millis(20), 1);
        t.arm(TimerKind::Ready, Instant::from_millis(25), 2);
        t.arm(TimerKind::Delete, Instant::from_millis(15), 3);
        assert_eq!(
            t.earliest(),
            Some((Instant::from_millis(15), TimerKind::Delete, 3))
        );
    }
}
