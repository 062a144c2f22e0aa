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
//!
//! Beside each time sits the id of the key that authenticated that datagram, so that
//! listings show which key every proxy uses (an operator rotating a key checks that every
//! proxy moved before retiring the old one). It is not stored: after a restart a proxy's
//! key is unknown until it is heard.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::auth::KeyId;
use crate::time::Instant;

/// Slots per segment.
pub const SEGMENT: usize = 4096;

/// One slot: when it was last heard (nanoseconds + 1; 0: not in this run) and the key
/// that authenticated it then (id + 1; 0: unknown).
#[derive(Debug, Default)]
struct Cell {
    heard: AtomicU64,
    key: AtomicU64,
}

type Segment = Arc<[Cell]>;

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
            .heard
            .load(Ordering::Relaxed);
        (nanos != 0).then(|| Instant::from_nanos(nanos - 1))
    }

    /// The key that authenticated the latest datagram of the proxy in `slot`, if it was
    /// heard in this run.
    pub fn key(&self, slot: u32) -> Option<KeyId> {
        let index = (slot as usize).checked_sub(1)?;
        let segments = self.shared.read().unwrap_or_else(|e| e.into_inner());
        let key = segments
            .get(index / SEGMENT)?
            .get(index % SEGMENT)?
            .key
            .load(Ordering::Relaxed);
        let id = key.checked_sub(1)?;
        u32::try_from(id).ok().map(KeyId)
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

    /// Records that the proxy in `slot` was heard at `at`, authenticated by `key`.
    pub(crate) fn set(&mut self, slot: u32, at: Instant, key: KeyId) {
        self.store(slot, at.as_nanos().saturating_add(1), u64::from(key.0) + 1);
    }

    /// Forgets the slot (its proxy left the registry; the next one to take it writes anew).
    pub(crate) fn clear(&mut self, slot: u32) {
        self.store(slot, 0, 0);
    }

    /// When the proxy in `slot` was last heard in this run.
    pub(crate) fn get(&self, slot: u32) -> Option<Instant> {
        let index = (slot as usize).checked_sub(1)?;
        let nanos = self
            .segments
            .get(index / SEGMENT)?
            .get(index % SEGMENT)?
            .heard
            .load(Ordering::Relaxed);
        (nanos != 0).then(|| Instant::from_nanos(nanos - 1))
    }

    fn store(&mut self, slot: u32, heard: u64, key: u64) {
        let Some(index) = (slot as usize).checked_sub(1) else {
            return;
        };
        let segment = index / SEGMENT;
        if segment >= self.segments.len() {
            let mut shared = self.table.shared.write().unwrap_or_else(|e| e.into_inner());
            while shared.len() <= segment {
                shared.push((0..SEGMENT).map(|_| Cell::default()).collect());
            }
            self.segments = shared.clone();
        }
        let cell = &self.segments[segment][index % SEGMENT];
        cell.heard.store(heard, Ordering::Relaxed);
        // The key seldom changes: a load saves the store's cache-line write.
        if cell.key.load(Ordering::Relaxed) != key {
            cell.key.store(key, Ordering::Relaxed);
        }
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
        writer.set(1, Instant::ZERO, KeyId(0));
        writer.set(SEGMENT as u32 + 3, Instant::from_millis(7), KeyId(u32::MAX));
        assert_eq!(table.get(1), Some(Instant::ZERO));
        assert_eq!(table.key(1), Some(KeyId(0)));
        assert_eq!(table.get(SEGMENT as u32 + 3), Some(Instant::from_millis(7)));
        assert_eq!(table.key(SEGMENT as u32 + 3), Some(KeyId(u32::MAX)));
        assert_eq!((table.get(2), table.key(2)), (None, None));
        assert_eq!(table.get(0), None);
        writer.clear(1);
        assert_eq!((table.get(1), table.key(1)), (None, None));
    }
}
