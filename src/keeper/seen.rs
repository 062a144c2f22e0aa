//! When each registered proxy was last heard, shared with the readers of the HTTP view.
//!
//! A steady heartbeat is not a change (it would flood the store and the watch), yet
//! listings show how long ago each proxy was heard. So the core writes the real time of
//! every accepted datagram into a per-slot array of atomics that the HTTP view reads
//! (one relaxed store per heartbeat; no lock, no allocation on the hot path). The view
//! knows each proxy's slot from the change stream.
//!
//! The array grows in segments of [`SEGMENT`] slots. The writer (the core) keeps its own
//! list of segments; readers take the shared list under a lock that only growth takes
//! for writing, which happens once per [`SEGMENT`] registrations.
//!
//! A value of 0 means "not heard in this run" (a proxy restored from the store and not
//! heard since): the view then shows what the store recorded, or that it is unknown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::time::Instant;

/// Slots per segment.
pub const SEGMENT: usize = 4096;

type Segment = Arc<[AtomicU64]>;

/// The last-heard times of every slot, shared between the core and the view.
///
/// Cloning shares the same array.
#[derive(Clone, Debug, Default)]
pub struct LastSeen {
    shared: Arc<RwLock<Vec<Segment>>>,
}

impl LastSeen {
    /// An empty table.
    pub fn new() -> LastSeen {
        LastSeen::default()
    }

    /// When the proxy in `slot` was last heard in this run (the real time handed to the
    /// core, not keeper time), if it was.
    pub fn get(&self, slot: u32) -> Option<Instant> {
        let index = (slot as usize).checked_sub(1)?;
        let segments = self.shared.read().unwrap_or_else(|e| e.into_inner());
        let nanos = segments
            .get(index / SEGMENT)?
            .get(index % SEGMENT)?
            .load(Ordering::Relaxed);
        (nanos != 0).then(|| Instant::from_nanos(nanos - 1))
    }
}

/// The core's side of a [`LastSeen`]: its own copy of the segment list, so a write takes
/// no lock.
#[derive(Debug, Default)]
pub(crate) struct SeenWriter {
    table: LastSeen,
    segments: Vec<Segment>,
}

impl SeenWriter {
    /// A writer for `table`.
    pub(crate) fn new(table: LastSeen) -> SeenWriter {
        let segments = table
            .shared
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        SeenWriter { table, segments }
    }

    /// The table this writer fills.
    pub(crate) fn table(&self) -> &LastSeen {
        &self.table
    }

    /// Records that the proxy in `slot` was heard at `at`.
    pub(crate) fn set(&mut self, slot: u32, at: Instant) {
        self.store(slot, at.as_nanos().saturating_add(1));
    }

    /// Forgets the slot (its proxy left the registry; the next one to take it writes anew).
    pub(crate) fn clear(&mut self, slot: u32) {
        self.store(slot, 0);
    }

    /// When the proxy in `slot` was last heard in this run.
    pub(crate) fn get(&self, slot: u32) -> Option<Instant> {
        let index = (slot as usize).checked_sub(1)?;
        let nanos = self
            .segments
            .get(index / SEGMENT)?
            .get(index % SEGMENT)?
            .load(Ordering::Relaxed);
        (nanos != 0).then(|| Instant::from_nanos(nanos - 1))
    }

    fn store(&mut self, slot: u32, value: u64) {
        let Some(index) = (slot as usize).checked_sub(1) else {
            return;
        };
        let segment = index / SEGMENT;
        if segment >= self.segments.len() {
            let mut shared = self.table.shared.write().unwrap_or_else(|e| e.into_inner());
            while shared.len() <= segment {
                shared.push((0..SEGMENT).map(|_| AtomicU64::new(0)).collect());
            }
            self.segments = shared.clone();
        }
        self.segments[segment][index % SEGMENT].store(value, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_what_the_core_wrote_in_every_segment() {
        let table = LastSeen::new();
        let mut writer = SeenWriter::new(table.clone());
        assert_eq!(table.get(1), None);
        writer.set(1, Instant::ZERO);
        writer.set(SEGMENT as u32 + 3, Instant::from_millis(7));
        assert_eq!(table.get(1), Some(Instant::ZERO));
        assert_eq!(table.get(SEGMENT as u32 + 3), Some(Instant::from_millis(7)));
        assert_eq!(table.get(2), None);
        assert_eq!(table.get(0), None);
        writer.clear(1);
        assert_eq!(table.get(1), None);
    }
}
