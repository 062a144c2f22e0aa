//! Sealing config chunks: AES-256-GCM under a key of each config's own
//! ([`Key::config_key`](crate::auth::Key::config_key)), the chunk's index as the nonce
//! (`docs/PROTOCOL.md` §17.6).
//!
//! A nonce is unique by construction: each key seals one config version (of one
//! cluster, under one secret, with one keyed digest and chunk size), and each chunk of it
//! has its own index, so a nonce is never random and never a counter that a restart or
//! a restored backup could repeat. Pure functions: the cores call them.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};

/// Bytes a sealed chunk is larger than its plaintext: the GCM tag.
pub const SEAL_OVERHEAD: usize = 16;

/// A config's sealing key, ready to seal or open its chunks.
#[derive(Clone)]
pub struct ChunkSealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for ChunkSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkSealer")
    }
}

/// The 12-byte nonce of chunk `index`: the index (u32 BE), then 8 zero bytes.
fn nonce(index: u32) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&index.to_be_bytes());
    nonce
}

impl ChunkSealer {
    /// A sealer under `key` (from `Key::config_key`).
    pub fn new(key: &[u8; 32]) -> ChunkSealer {
        ChunkSealer {
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    /// Chunk `index`'s bytes, sealed: ciphertext then the 16-byte GCM tag.
    pub fn seal(&self, index: u32, plain: &[u8]) -> Vec<u8> {
        let nonce = nonce(index);
        // Encryption fails only for inputs past GCM's limit (64 GiB), which a chunk is
        // not; an empty result then fails to open, as a damaged chunk does.
        self.cipher
            .encrypt(Nonce::from_slice(&nonce), plain)
            .unwrap_or_default()
    }

    /// Opens chunk `index`'s sealed bytes; `None` if they were not sealed by this key
    /// for this index.
    pub fn open(&self, index: u32, sealed: &[u8]) -> Option<Vec<u8>> {
        let nonce = nonce(index);
        self.cipher.decrypt(Nonce::from_slice(&nonce), sealed).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_chunk_opens_only_under_its_key_and_index() {
        let sealer = ChunkSealer::new(&[7; 32]);
        let plain = b"db_password = 'hunter2'\n";
        let sealed = sealer.seal(3, plain);
        assert_eq!(sealed.len(), plain.len() + SEAL_OVERHEAD);
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(sealer.open(3, &sealed).as_deref(), Some(&plain[..]));
        assert_eq!(sealer.open(4, &sealed), None, "another index");
        assert_eq!(
            ChunkSealer::new(&[8; 32]).open(3, &sealed),
            None,
            "another key"
        );
        let mut damaged = sealed.clone();
        damaged[0] ^= 1;
        assert_eq!(sealer.open(3, &damaged), None);
    }
}
