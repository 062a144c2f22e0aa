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
//! Beside each time sits the key that authenticated that datagram, so that listings
//! show which key every proxy uses (an operator rotating a key checks that every proxy
//! moved before retiring the old one). It is not stored: after a restart a proxy's key
//! is unknown until it is heard.
//!
//! Both share one `u64` per slot, so a heartbeat costs one relaxed store into one 8-byte
//! cell (at 1M proxies the table is 8 MB: one cache line per heartbeat, as before keys
//! were shown): the low 48 bits are the time in microseconds since the core's start,
//! plus one (0: not heard in this run; 2^48 µs is 8.9 years of uptime, after which the
//! time saturates), the high 16 bits the key's index in the keyring, plus one (0:
//! unknown). The index's id is in a small table beside, which the core rewrites when
//! its keys change (indexes are stable: see [`Keyring`](crate::auth::Keyring)).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::auth::{KeyId, KeyIndex};
use crate::time::Instant;

/// Slots per segment.
pub const SEGMENT: usize = 4096;

const TIME_BITS: u32 = 48;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

type Segment = Arc<[AtomicU64]>;

/// The last-heard times of every slot, shared between the core and the view.
///
/// Cloning shares the same array.
#[derive(Clone, Debug, Default)]
pub struct LastSeen {
    shared: Arc<RwLock<Vec<Segment>>>,
    /// Key ids by keyring index.
    keys: Arc<RwLock<Vec<KeyId>>>,
}

impl LastSeen {
    /// An empty table.
    pub fn new() -> LastSeen {
        LastSeen::default()
    }

    fn cell(&self, slot: u32) -> Option<u64> {
        let index = (slot as usize).checked_sub(1)?;
        let segments = self.shared.read().unwrap_or_else(|e| e.into_inner());
        Some(
            segments
                .get(index / SEGMENT)?
                .get(index % SEGMENT)?
                .load(Ordering::Relaxed),
        )
    }

    /// When the proxy in `slot` was last heard in this run (the real time handed to the
    /// core, not keeper time, to the microsecond), if it was.
    pub fn get(&self, slot: u32) -> Option<Instant> {
        time_of(self.cell(slot)?)
    }

    /// The key that authenticated the latest datagram of the proxy in `slot`, if it was
    /// heard in this run.
    pub fn key(&self, slot: u32) -> Option<KeyId> {
        let index = (self.cell(slot)? >> TIME_BITS).checked_sub(1)?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.get(usize::try_from(index).ok()?).copied()
    }
}

fn time_of(cell: u64) -> Option<Instant> {
    let micros = (cell & TIME_MASK).checked_sub(1)?;
    Some(Instant::from_nanos(micros.saturating_mul(1_000)))
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

    /// Publishes the id of every key by its keyring index (at start, and whenever the
    /// keys change).
    pub(crate) fn set_key_ids(&mut self, ids: Vec<KeyId>) {
        *self.table.keys.write().unwrap_or_else(|e| e.into_inner()) = ids;
    }

    /// Records that the proxy in `slot` was heard at `at`, authenticated by the key at
    /// `key`.
    pub(crate) fn set(&mut self, slot: u32, at: Instant, key: KeyIndex) {
        let micros = (at.as_nanos() / 1_000).saturating_add(1).min(TIME_MASK);
        // Past 65,534 keys an index is not shown (unknown), never wrong.
        let key = u64::from(key.0).saturating_add(1);
        let key = if key > 0xFFFF { 0 } else { key };
        self.store(slot, micros | (key << TIME_BITS));
    }

    /// Forgets the slot (its proxy left the registry; the next one to take it writes anew).
    pub(crate) fn clear(&mut self, slot: u32) {
        self.store(slot, 0);
    }

    /// When the proxy in `slot` was last heard in this run.
    pub(crate) fn get(&self, slot: u32) -> Option<Instant> {
        let index = (slot as usize).checked_sub(1)?;
        let cell = self
            .segments
            .get(index / SEGMENT)?
            .get(index % SEGMENT)?
            .load(Ordering::Relaxed);
        time_of(cell)
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
        writer.set_key_ids(vec![KeyId(0), KeyId(u32::MAX)]);
        writer.set(1, Instant::ZERO, KeyIndex(0));
        writer.set(SEGMENT as u32 + 3, Instant::from_millis(7), KeyIndex(1));
        assert_eq!(table.get(1), Some(Instant::ZERO));
        assert_eq!(table.key(1), Some(KeyId(0)));
        assert_eq!(table.get(SEGMENT as u32 + 3), Some(Instant::from_millis(7)));
        assert_eq!(table.key(SEGMENT as u32 + 3), Some(KeyId(u32::MAX)));
        // A time past 8.9 years saturates; a key index without an id is unknown.
        writer.set(5, Instant::from_nanos(u64::MAX), KeyIndex(9));
        assert!(table.get(5).is_some());
        assert_eq!(table.key(5), None);
        assert_eq!((table.get(2), table.key(2)), (None, None));
        assert_eq!(table.get(0), None);
        writer.clear(1);
        assert_eq!((table.get(1), table.key(1)), (None, None));
    }
}
