//! Pulling one config version in chunks: a bounded window of requests, lost chunks
//! re-requested, the digest checked after reassembly, and a fresh start if the version
//! changes underneath.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Key;
use crate::configdoc::{MAX_CONFIG_BYTES, chunk_range, digest, total_chunks};
use crate::time::Instant;
use crate::wire::{ConfigChunk, ConfigId};

/// What a chunk did to the pull.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Old, duplicate or inconsistent: nothing changed.
    Ignored,
    /// Stored; more to come.
    Stored,
    /// The keeper serves another version (version 1: a newer number; version 2: another
    /// id): start over at it, if it is news.
    Newer {
        /// Its number.
        version: u64,
        /// Its id (version 2; [`ConfigId::NONE`] in version 1).
        id: ConfigId,
    },
    /// Every chunk arrived but the digest does not match: start over.
    Corrupt,
    /// Every chunk arrived and the digest matches.
    Complete(Arc<[u8]>),
}

#[derive(Debug)]
struct Layout {
    total: u32,
    size: usize,
    digest: [u8; 32],
}

/// The state of one pull.
#[derive(Debug)]
pub(crate) struct Pull {
    version: u64,
    /// The id pulled (version 2), compared for equality; `None`: version 1, compared by
    /// number.
    id: Option<ConfigId>,
    layout: Option<Layout>,
    buf: Vec<u8>,
    received: Vec<bool>,
    missing: u32,
    /// Requests in flight: chunk index → when last requested.
    outstanding: BTreeMap<u32, Instant>,
    /// The lowest index never requested.
    next_index: u32,
}

impl Pull {
    /// A pull of config `version`, named `id` in version 2 of the protocol (`None` in
    /// version 1).
    pub(crate) fn new(version: u64, id: Option<ConfigId>) -> Pull {
        Pull {
            version,
            id,
            layout: None,
            buf: Vec::new(),
            received: Vec::new(),
            missing: 0,
            outstanding: BTreeMap::new(),
            next_index: 0,
        }
    }

    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// The id pulled (version 2).
    pub(crate) fn id(&self) -> Option<ConfigId> {
        self.id
    }

    /// The chunk indexes to request now: overdue requests again, then new ones while the
    /// window has room. Until the first chunk tells the layout, only chunk 0 is asked for.
    pub(crate) fn due(&mut self, now: Instant, retry: Duration, window: u32) -> Vec<u32> {
        let mut due: Vec<u32> = self
            .outstanding
            .iter()
            .filter(|(_, sent)| now >= **sent + retry)
            .map(|(index, _)| *index)
            .collect();
        let total = self.layout.as_ref().map_or(1, |l| l.total);
        while (self.outstanding.len() as u32) < window && self.next_index < total {
            let index = self.next_index;
            self.next_index += 1;
            if !self.received.get(index as usize).copied().unwrap_or(false) {
                self.outstanding.insert(index, now);
                due.push(index);
            }
        }
        for index in &due {
            self.outstanding.insert(*index, now);
        }
        due
    }

    /// When the earliest request in flight is overdue.
    pub(crate) fn deadline(&self, retry: Duration) -> Option<Instant> {
        self.outstanding.values().min().map(|sent| *sent + retry)
    }

    /// Takes `chunk`, whose trailer named config `id` (version 2; `None` in version 1).
    ///
    /// In version 2 the chunk came sealed and was opened with `key` (its bytes are the
    /// plaintext), and its `digest` is the config's keyed digest under `key`: once every
    /// chunk is in, the keyed digest of the whole must match, and the id must be the id
    /// of the version and the plaintext's SHA-256. In version 1 (`key` `None`) the
    /// digest is the plaintext's SHA-256.
    pub(crate) fn accept(
        &mut self,
        chunk: &ConfigChunk<'_>,
        id: Option<ConfigId>,
        key: Option<&Key>,
    ) -> Progress {
        match (self.id, id) {
            (Some(wanted), Some(id)) => {
                if id != wanted {
                    return Progress::Newer {
                        version: chunk.version,
                        id,
                    };
                }
            }
            (None, None) => {
                if chunk.version < self.version {
                    return Progress::Ignored;
                }
                if chunk.version > self.version {
                    return Progress::Newer {
                        version: chunk.version,
                        id: ConfigId::NONE,
                    };
                }
            }
            // A chunk in the other protocol version than the pull's.
            _ => return Progress::Ignored,
        }
        let size = chunk.size as usize;
        if size > MAX_CONFIG_BYTES || chunk.total != total_chunks(size) {
            return Progress::Ignored;
        }
        match &self.layout {
            None => {
                // The keeper is authenticated and the size bounded: allocate once.
                self.buf = vec![0; size];
                self.received = vec![false; chunk.total as usize];
                self.missing = chunk.total;
                self.layout = Some(Layout {
                    total: chunk.total,
                    size,
                    digest: chunk.digest,
                });
            }
            Some(l) if l.total != chunk.total || l.size != size || l.digest != chunk.digest => {
                // Same version number, other content: the keeper was reset. Start over.
                return Progress::Corrupt;
            }
            Some(_) => {}
        }
        let Some(range) = chunk_range(size, chunk.index) else {
            return Progress::Ignored;
        };
        if range.len() != chunk.bytes.len() {
            return Progress::Ignored;
        }
        self.outstanding.remove(&chunk.index);
        let seen = &mut self.received[chunk.index as usize];
        if *seen {
            return Progress::Ignored;
        }
        *seen = true;
        self.missing -= 1;
        self.buf[range].copy_from_slice(chunk.bytes);
        if self.missing > 0 {
            return Progress::Stored;
        }
        let expected = self.layout.as_ref().map(|l| l.digest);
        let bytes = std::mem::take(&mut self.buf);
        let whole = match key {
            Some(key) => key.keyed_digest(&bytes),
            None => digest(&bytes),
        };
        // A config id is opaque (the keeper may key it by a secret of its own): the
        // content is proven by the keyed digest, under the key that opened every chunk,
        // whose derivation binds the id.
        if Some(whole) == expected {
            Progress::Complete(bytes.into())
        } else {
            Progress::Corrupt
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configdoc::CHUNK_SIZE;

    fn chunk<'a>(config: &'a [u8], version: u64, index: u32) -> ConfigChunk<'a> {
        let range = chunk_range(config.len(), index).expect("in range");
        ConfigChunk {
            incarnation: 1,
            seq: 1,
            version,
            index,
            total: total_chunks(config.len()),
            size: config.len() as u32,
            digest: digest(config),
            bytes: &config[range],
        }
    }

    #[test]
    fn chunks_in_any_order_reassemble_the_config() {
        let config: Vec<u8> = (0..3 * CHUNK_SIZE + 10).map(|i| i as u8).collect();
        let mut pull = Pull::new(2, None);
        assert_eq!(
            pull.due(Instant::ZERO, Duration::from_millis(100), 4),
            vec![0]
        );
        assert_eq!(
            pull.accept(&chunk(&config, 2, 0), None, None),
            Progress::Stored
        );
        assert_eq!(
            pull.due(Instant::ZERO, Duration::from_millis(100), 4),
            vec![1, 2, 3]
        );
        assert_eq!(
            pull.accept(&chunk(&config, 2, 3), None, None),
            Progress::Stored
        );
        assert_eq!(
            pull.accept(&chunk(&config, 2, 3), None, None),
            Progress::Ignored
        );
        // Chunk 1 was lost: it is asked for again once overdue.
        assert_eq!(
            pull.due(Instant::from_millis(100), Duration::from_millis(100), 4),
            vec![1, 2]
        );
        assert_eq!(
            pull.accept(&chunk(&config, 2, 2), None, None),
            Progress::Stored
        );
        assert_eq!(
            pull.accept(&chunk(&config, 2, 1), None, None),
            Progress::Complete(config.clone().into())
        );
    }

    #[test]
    fn a_newer_version_restarts_and_an_older_one_is_ignored() {
        let config = b"abc".to_vec();
        let mut pull = Pull::new(5, None);
        assert_eq!(
            pull.accept(&chunk(&config, 4, 0), None, None),
            Progress::Ignored
        );
        assert_eq!(
            pull.accept(&chunk(&config, 6, 0), None, None),
            Progress::Newer {
                version: 6,
                id: ConfigId::NONE
            }
        );
    }

    #[test]
    fn in_version_2_ids_are_compared_for_equality_not_order() {
        let config = b"abc".to_vec();
        let key = Key::new(&[1; 32]).expect("a key");
        let id = |version| ConfigId::of(version, &digest(&config));
        // Version 2 chunks carry the keyed digest (their bytes were opened already).
        let sealed = |version| ConfigChunk {
            digest: key.keyed_digest(&config),
            ..chunk(&config, version, 0)
        };
        // A keeper restored from a backup serves version 4 to a pull of version 8.
        let mut pull = Pull::new(8, Some(id(8)));
        assert_eq!(
            pull.accept(&sealed(4), Some(id(4)), Some(&key)),
            Progress::Newer {
                version: 4,
                id: id(4)
            }
        );
        // A version 1 chunk does not feed a version 2 pull.
        assert_eq!(
            pull.accept(&chunk(&config, 8, 0), None, None),
            Progress::Ignored
        );
        assert_eq!(
            pull.accept(&sealed(8), Some(id(8)), Some(&key)),
            Progress::Complete(config.clone().into())
        );
        // Ids are opaque (a keeper with a store key keys them): one that is not derived
        // from the bytes names them as well as any, the keyed digest proving them.
        let opaque = ConfigId([0x5c; 8]);
        let mut pull = Pull::new(8, Some(opaque));
        assert_eq!(
            pull.accept(&sealed(8), Some(opaque), Some(&key)),
            Progress::Complete(config.clone().into())
        );
        // A digest keyed under another key: corrupt.
        let other = Key::new(&[2; 32]).expect("a key");
        let mut pull = Pull::new(8, Some(id(8)));
        assert_eq!(
            pull.accept(&sealed(8), Some(id(8)), Some(&other)),
            Progress::Corrupt
        );
    }

    #[test]
    fn a_digest_mismatch_is_corrupt() {
        let config = b"abc".to_vec();
        let mut c = chunk(&config, 1, 0);
        c.digest = [0; 32];
        let mut pull = Pull::new(1, None);
        assert_eq!(pull.accept(&c, None, None), Progress::Corrupt);
    }
}
