//! The retained history of committed changes, shared by every reader of the change
//! stream: the HTTP read view and each `/v1/watch` stream.
//!
//! The driver publishes each batch of changes once it is durable
//! ([`ChangeHub::publish`]); readers pull pages of what follows their own position
//! ([`ChangeHub::read_after`]) and wait for more ([`ChangeHub::wait_after`]). There is one
//! history: a page is a handful of [`Arc`]s cloned under a lock held for that copy only,
//! never a copy of the history per reader, and a slow reader holds at most its page.
//!
//! The history keeps the latest `retention` changes, and also, beyond that, every change
//! the read view has not applied yet ([`ChangeHub::hold`]): the view must never miss a
//! change, however large a batch the keeper commits in one turn (a mass loss marks tens
//! of thousands of proxies `lost` at once), while a watcher may fall behind. A reader
//! whose position has fallen out of it, or whose position is of another generation (the store was restored), or
//! is newer than anything committed, is told it is [`Gone`] rather than handed a gap:
//! it must list again and continue from the listing's revision (etcd's "compacted",
//! Kubernetes' "resourceVersion too old").

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tracing::error;

use crate::api::Gone;
use crate::keeper::change::WallChange;

/// A retention for keepers that have no reason to choose another: the latest 65,536
/// changes (about 10 MB), minutes of a busy fleet's changes, so a watcher that
/// reconnects within that time misses nothing.
pub const DEFAULT_RETENTION: usize = 65_536;

/// Where the history stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Head {
    generation: u64,
    revision: u64,
    closed: bool,
}

#[derive(Debug)]
struct History {
    generation: u64,
    /// The latest revision published (or loaded).
    revision: u64,
    retention: usize,
    /// Consecutive revisions, ending at `revision`.
    changes: VecDeque<Arc<WallChange>>,
    /// Changes after this revision are kept whatever the retention (the read view's
    /// position).
    hold: Option<u64>,
    closed: bool,
}

impl History {
    /// The oldest revision held; `revision + 1` when none is.
    fn oldest(&self) -> u64 {
        self.changes
            .front()
            .map_or(self.revision.saturating_add(1), |c| c.revision)
    }

    fn gone(&self) -> Gone {
        Gone {
            oldest: self.oldest(),
            current: self.revision,
            generation: self.generation,
        }
    }

    /// Drops the oldest changes beyond the retention that no hold keeps.
    fn trim(&mut self) {
        let keep_after = self.hold.unwrap_or(u64::MAX);
        while self.changes.len() > self.retention
            && self
                .changes
                .front()
                .is_some_and(|c| c.revision <= keep_after)
        {
            self.changes.pop_front();
        }
    }

    fn head(&self) -> Head {
        Head {
            generation: self.generation,
            revision: self.revision,
            closed: self.closed,
        }
    }
}

/// The shared, bounded history of committed changes. Create it with [`ChangeHub::new`].
#[derive(Debug)]
pub struct ChangeHub {
    history: Mutex<History>,
    /// Tells waiters that the head moved.
    head: watch::Sender<Head>,
}

impl ChangeHub {
    /// A hub at (`generation`, `revision`) that keeps the latest `retention` changes (at
    /// least one), holding `recent` already: the changes the store retained, oldest
    /// first, ending at `revision` (empty, or not ending there: nothing is held yet).
    pub fn new(
        generation: u64,
        revision: u64,
        retention: usize,
        recent: Vec<WallChange>,
    ) -> Arc<ChangeHub> {
        let retention = retention.max(1);
        let mut changes: VecDeque<Arc<WallChange>> = VecDeque::new();
        let consecutive = recent
            .windows(2)
            .all(|w| w[1].revision == w[0].revision + 1);
        if consecutive && recent.last().is_some_and(|c| c.revision == revision) {
            let skip = recent.len().saturating_sub(retention);
            changes.extend(recent.into_iter().skip(skip).map(Arc::new));
        } else if !recent.is_empty() {
            error!(
                revision,
                "the retained changes loaded are not consecutive up to the revision; holding none"
            );
        }
        let history = History {
            generation,
            revision,
            retention,
            changes,
            hold: None,
            closed: false,
        };
        let head = watch::Sender::new(history.head());
        Arc::new(ChangeHub {
            history: Mutex::new(history),
            head,
        })
    }

    fn lock(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds committed changes, in order, and wakes every waiter. Each must be the next
    /// revision; the oldest held beyond `retention` are dropped (unless held).
    ///
    /// A change that is not the next revision is a bug of the publisher: the history is
    /// then dropped and restarts at that change, so every reader behind it is [`Gone`]
    /// (told to list again) instead of silently skipping or repeating changes.
    pub fn publish(&self, changes: Vec<WallChange>) {
        if changes.is_empty() {
            return;
        }
        let mut h = self.lock();
        for change in changes {
            if change.revision != h.revision.wrapping_add(1) {
                error!(
                    expected = h.revision.wrapping_add(1),
                    got = change.revision,
                    "a published change is not the next revision; readers behind it must list again"
                );
                h.changes.clear();
            }
            h.revision = change.revision;
            h.changes.push_back(Arc::new(change));
            h.trim();
        }
        let head = h.head();
        drop(h);
        self.head.send_replace(head);
    }

    /// Starts store generation `generation` (a store found rewound: a backup copied
    /// back). Revisions go on from where they are, so the history stays (the read view
    /// follows across); but a watcher's position of the old generation is [`Gone`]: the
    /// numbers it saw may have been reused for other changes before the store noticed.
    pub fn set_generation(&self, generation: u64) {
        let mut h = self.lock();
        if h.generation == generation {
            return;
        }
        h.generation = generation;
        let head = h.head();
        drop(h);
        self.head.send_replace(head);
    }

    /// Keeps every change after `revision` held, beyond the retention, until the next
    /// `hold` or [`release`](ChangeHub::release). There is one hold: the read view's
    /// ([`View::follow`](crate::http::view::View::follow) takes it), so the view never
    /// falls out of the history however large a batch is published; it applies changes
    /// as fast as memory allows, so what it keeps is short-lived.
    pub fn hold(&self, revision: u64) {
        let mut h = self.lock();
        h.hold = Some(revision);
        h.trim();
    }

    /// Drops the hold: the history keeps `retention` changes again.
    pub fn release(&self) {
        let mut h = self.lock();
        h.hold = None;
        h.trim();
    }

    /// The keeper has stopped: nothing more will be published. Readers get what is held,
    /// then the end.
    pub fn close(&self) {
        let mut h = self.lock();
        h.closed = true;
        let head = h.head();
        drop(h);
        self.head.send_replace(head);
    }

    /// Whether [`close`](ChangeHub::close) was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The current (generation, revision).
    pub fn position(&self) -> (u64, u64) {
        let h = self.lock();
        (h.generation, h.revision)
    }

    /// The oldest revision held (the current revision + 1 when none is).
    pub fn oldest(&self) -> u64 {
        self.lock().oldest()
    }

    /// Whether a reader at `revision` of `generation` can go on from there, as
    /// [`read_after`](ChangeHub::read_after) would judge it.
    pub fn check(&self, generation: u64, revision: u64) -> Result<(), Gone> {
        let h = self.lock();
        Self::judge(&h, generation, revision)
    }

    fn judge(h: &History, generation: u64, revision: u64) -> Result<(), Gone> {
        // Changes after `revision` are all there if the first of them is held (or none
        // has been made yet).
        if generation != h.generation
            || revision > h.revision
            || revision.saturating_add(1) < h.oldest()
        {
            return Err(h.gone());
        }
        Ok(())
    }

    /// Up to `max` changes after `revision` of `generation`, oldest first (empty: none
    /// yet). [`Gone`] if the changes right after `revision` are no longer held, if
    /// `generation` is not the current one, or if `revision` is newer than the current.
    pub fn read_after(
        &self,
        generation: u64,
        revision: u64,
        max: usize,
    ) -> Result<Vec<Arc<WallChange>>, Gone> {
        let h = self.lock();
        Self::judge(&h, generation, revision)?;
        if revision == h.revision {
            return Ok(Vec::new());
        }
        // `judge` guarantees oldest <= revision + 1 <= h.revision, and the history holds
        // consecutive revisions from oldest to h.revision.
        let start = usize::try_from(revision + 1 - h.oldest()).unwrap_or(usize::MAX);
        let end = start.saturating_add(max).min(h.changes.len());
        Ok(h.changes.range(start.min(end)..end).cloned().collect())
    }

    /// Completes once a change after `revision` is held, the generation is no longer
    /// `generation`, or the hub is closed.
    pub async fn wait_after(&self, generation: u64, revision: u64) {
        let mut rx = self.head.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we borrow it.
        let _ = rx
            .wait_for(|h| h.revision > revision || h.generation != generation || h.closed)
            .await;
    }
}

impl crate::driver::keeper::ChangeSink for ChangeHub {
    fn publish(&self, changes: Vec<WallChange>) {
        ChangeHub::publish(self, changes);
    }

    fn set_generation(&self, generation: u64) {
        ChangeHub::set_generation(self, generation);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::keeper::change::{Change, ChangeKind};

    fn change(revision: u64) -> WallChange {
        Change {
            revision,
            at: revision * 10,
            kind: ChangeKind::Stall {
                length: Duration::from_millis(revision),
                shifted: 0,
            },
        }
    }

    fn changes(revisions: std::ops::RangeInclusive<u64>) -> Vec<WallChange> {
        revisions.map(change).collect()
    }

    fn revisions(page: &[Arc<WallChange>]) -> Vec<u64> {
        page.iter().map(|c| c.revision).collect()
    }

    #[test]
    fn readers_get_the_changes_after_their_revision_in_bounded_pages() {
        let hub = ChangeHub::new(1, 0, 100, Vec::new());
        hub.publish(changes(1..=10));
        assert_eq!(hub.position(), (1, 10));
        assert_eq!(
            revisions(&hub.read_after(1, 3, 4).expect("held")),
            [4, 5, 6, 7]
        );
        assert_eq!(
            revisions(&hub.read_after(1, 7, 100).expect("held")),
            [8, 9, 10]
        );
        assert!(hub.read_after(1, 10, 100).expect("current").is_empty());
        assert_eq!(revisions(&hub.read_after(1, 0, 2).expect("held")), [1, 2]);
    }

    #[test]
    fn pages_share_the_changes_instead_of_copying_them() {
        let hub = ChangeHub::new(1, 0, 100, Vec::new());
        hub.publish(changes(1..=2));
        let a = hub.read_after(1, 0, 10).expect("held");
        let b = hub.read_after(1, 0, 10).expect("held");
        assert!(Arc::ptr_eq(&a[0], &b[0]));
    }

    #[test]
    fn the_history_keeps_only_the_latest_retained_changes() {
        let hub = ChangeHub::new(1, 0, 3, Vec::new());
        hub.publish(changes(1..=5));
        assert_eq!(hub.oldest(), 3);
        // After 2 the next is 3: still held.
        assert_eq!(
            revisions(&hub.read_after(1, 2, 10).expect("held")),
            [3, 4, 5]
        );
        let gone = Gone {
            oldest: 3,
            current: 5,
            generation: 1,
        };
        assert_eq!(hub.read_after(1, 1, 10), Err(gone));
        assert_eq!(hub.check(1, 0), Err(gone));
    }

    #[test]
    fn a_hold_keeps_what_its_holder_has_not_read_beyond_the_retention() {
        let hub = ChangeHub::new(1, 0, 2, Vec::new());
        hub.hold(0);
        hub.publish(changes(1..=6));
        assert_eq!(hub.oldest(), 1);
        assert_eq!(
            revisions(&hub.read_after(1, 0, 3).expect("held")),
            [1, 2, 3]
        );
        hub.hold(3);
        assert_eq!(hub.oldest(), 4);
        hub.hold(6);
        assert_eq!(hub.oldest(), 5);
        hub.hold(4);
        hub.publish(changes(7..=9));
        assert_eq!(hub.oldest(), 5);
        hub.release();
        assert_eq!(hub.oldest(), 8);
    }

    #[test]
    fn a_position_of_another_generation_or_in_the_future_is_gone() {
        let hub = ChangeHub::new(4, 0, 10, Vec::new());
        hub.publish(changes(1..=3));
        let gone = Gone {
            oldest: 1,
            current: 3,
            generation: 4,
        };
        assert_eq!(hub.read_after(3, 2, 10), Err(gone));
        assert_eq!(hub.read_after(4, 4, 10), Err(gone));
        assert_eq!(hub.check(4, 3), Ok(()));
    }

    #[test]
    fn a_new_generation_keeps_the_revisions_but_sends_its_old_readers_back_to_list() {
        let hub = ChangeHub::new(1, 0, 10, Vec::new());
        hub.publish(changes(1..=3));
        hub.set_generation(2);
        assert_eq!(hub.position(), (2, 3));
        // A watcher of the old generation may have seen numbers since reused: gone.
        assert!(hub.read_after(1, 2, 10).is_err());
        // Revisions go on, so a reader that moves to the new generation misses nothing.
        assert_eq!(revisions(&hub.read_after(2, 1, 10).expect("held")), [2, 3]);
        hub.publish(changes(4..=4));
        assert_eq!(revisions(&hub.read_after(2, 3, 10).expect("held")), [4]);
    }

    #[test]
    fn a_hub_seeded_from_the_store_resumes_readers_across_a_restart() {
        let hub = ChangeHub::new(1, 20, 5, changes(11..=20));
        assert_eq!(hub.oldest(), 16);
        assert_eq!(
            revisions(&hub.read_after(1, 17, 10).expect("held")),
            [18, 19, 20]
        );
        assert!(hub.read_after(1, 14, 10).is_err());
        // Loaded changes that do not end at the revision are not trusted.
        let hub = ChangeHub::new(1, 25, 5, changes(11..=20));
        assert_eq!(hub.oldest(), 26);
    }

    #[test]
    fn a_change_that_is_not_the_next_revision_sends_readers_behind_it_back_to_list() {
        let hub = ChangeHub::new(1, 0, 10, Vec::new());
        hub.publish(changes(1..=3));
        hub.publish(changes(7..=8));
        assert_eq!(hub.oldest(), 7);
        assert!(hub.read_after(1, 3, 10).is_err());
        assert_eq!(revisions(&hub.read_after(1, 6, 10).expect("held")), [7, 8]);
    }

    #[tokio::test]
    async fn waiters_wake_on_a_new_change_a_new_generation_or_the_close() {
        let hub = ChangeHub::new(1, 0, 10, Vec::new());
        hub.publish(changes(1..=1));
        // Already past: at once.
        hub.wait_after(1, 0).await;
        let waiter = {
            let hub = hub.clone();
            tokio::spawn(async move { hub.wait_after(1, 1).await })
        };
        hub.publish(changes(2..=2));
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken by a publish")
            .expect("joined");
        let waiter = {
            let hub = hub.clone();
            tokio::spawn(async move { hub.wait_after(1, 2).await })
        };
        hub.set_generation(2);
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken by a new generation")
            .expect("joined");
        let waiter = {
            let hub = hub.clone();
            tokio::spawn(async move { hub.wait_after(2, 2).await })
        };
        hub.close();
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken by the close")
            .expect("joined");
        assert!(hub.is_closed());
    }
}
