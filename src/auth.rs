//! Keys and the authentication tag: HMAC-SHA256 truncated to 16 bytes.
//!
//! Every datagram, in both directions, ends with a tag computed over all the bytes before
//! it with the cluster's secret key. HMAC-SHA256 is in every language's standard library,
//! so a proxy written in Go or Python needs nothing else. The keyed inner and outer
//! states are computed once per key and cloned per datagram.

use std::collections::HashMap;

use foldhash::fast::FixedState;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::identity::{IdentityError, validate_cluster};
use crate::wire::Version;

/// Length of the authentication tag at the end of every datagram.
pub const TAG_LEN: usize = 16;
/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest secret accepted, in bytes (HMAC-SHA256 hashes longer keys down anyway).
pub const MAX_SECRET_LEN: usize = 64;

/// The 4-byte name of a key carried in every datagram's header.
///
/// It is derived from the secret (the first four bytes of
/// `SHA-256("zerokeeper key id v1" || secret)`, big-endian), so the keeper and a proxy
/// agree on it without configuring it, and it reveals nothing useful about the secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct KeyId(pub u32);

impl std::fmt::Display for KeyId {
    /// Eight lowercase hex digits, as listings, logs and `keygen` show it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// A secret key with its HMAC states precomputed: the secret's own (version 1's tag)
/// and `K("mac")`'s (version 2's).
#[derive(Clone)]
pub struct Key {
    id: KeyId,
    keyed: Hmac<Sha256>,
    keyed_v2: Hmac<Sha256>,
    /// `K("digest")`'s state: configs' keyed digests (`docs/PROTOCOL.md` §17.6).
    digest: Hmac<Sha256>,
    /// The HKDF pseudorandom key of sealed configs: `HMAC(CONFIG_SALT, secret)`'s state.
    config_prk: Hmac<Sha256>,
}

/// The HKDF salt of the keys that seal config chunks.
pub const CONFIG_SALT: &[u8] = b"zerokeeper v2 config";

/// `K(label) = HMAC-SHA256(secret, "zerokeeper v2 " || label)`: the keys version 2 derives
/// from a secret, one per purpose (`docs/PROTOCOL.md` §17.1).
pub fn derive(secret: &[u8], label: &str) -> [u8; 32] {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .expect("HMAC accepts keys of every length");
    mac.update(b"zerokeeper v2 ");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Why a key or keyring was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// The secret is shorter than [`MIN_SECRET_LEN`] or longer than [`MAX_SECRET_LEN`].
    #[error("a secret key must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} bytes, got {0}")]
    Length(usize),
    /// Two different secrets derive the same key id (about one chance in four billion).
    #[error("two keys share the key id {0:08x}; generate another secret")]
    IdCollision(u32),
    /// A cluster-scoped key names an invalid cluster.
    #[error("invalid cluster name for a key: {0}")]
    Cluster(#[from] IdentityError),
}

impl Key {
    /// Builds a key from its secret bytes.
    pub fn new(secret: &[u8]) -> Result<Key, KeyError> {
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&secret.len()) {
            return Err(KeyError::Length(secret.len()));
        }
        let digest = Sha256::new()
            .chain_update(b"zerokeeper key id v1")
            .chain_update(secret)
            .finalize();
        let id = KeyId(u32::from_be_bytes([
            digest[0], digest[1], digest[2], digest[3],
        ]));
        // `new_from_slice` accepts any length for HMAC; the length was checked above.
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .map_err(|_| KeyError::Length(secret.len()))?;
        let keyed_v2 = <Hmac<Sha256> as KeyInit>::new_from_slice(&derive(secret, "mac"))
            .map_err(|_| KeyError::Length(secret.len()))?;
        let digest = <Hmac<Sha256> as KeyInit>::new_from_slice(&derive(secret, "digest"))
            .map_err(|_| KeyError::Length(secret.len()))?;
        // HKDF-Extract (RFC 5869): PRK = HMAC(salt, IKM).
        let mut extract = <Hmac<Sha256> as KeyInit>::new_from_slice(CONFIG_SALT)
            .map_err(|_| KeyError::Length(secret.len()))?;
        extract.update(secret);
        let prk: [u8; 32] = extract.finalize().into_bytes().into();
        let config_prk = <Hmac<Sha256> as KeyInit>::new_from_slice(&prk)
            .map_err(|_| KeyError::Length(secret.len()))?;
        Ok(Key {
            id,
            keyed,
            keyed_v2,
            digest,
            config_prk,
        })
    }

    fn mac(&self, version: Version) -> &Hmac<Sha256> {
        match version {
            Version::V1 => &self.keyed,
            Version::V2 => &self.keyed_v2,
        }
    }

    /// A config's keyed digest: `HMAC-SHA256(K("digest"), config)`, which travels in
    /// sealed chunks instead of the bare SHA-256 (that would let anyone who captured a
    /// chunk test guesses of the credentials inside offline).
    pub fn keyed_digest(&self, config: &[u8]) -> [u8; 32] {
        let mut mac = self.digest.clone();
        mac.update(config);
        mac.finalize().into_bytes().into()
    }

    /// The AES-256-GCM key that seals the chunks of one config version for one cluster:
    /// `HKDF-SHA256(salt = "zerokeeper v2 config", IKM = secret, info, 32)`, where `info`
    /// is the cluster's length (one byte) and name, the config id, the keyed digest and
    /// the chunk size (u32 BE). HKDF-Expand of 32 bytes is one HMAC: `T(1) = HMAC(PRK,
    /// info || 0x01)`.
    pub fn config_key(
        &self,
        cluster: &str,
        id: &[u8; 8],
        keyed_digest: &[u8; 32],
        chunk_size: u32,
    ) -> [u8; 32] {
        let mut mac = self.config_prk.clone();
        // Cluster names are at most 128 bytes (validated), so the length fits one byte.
        mac.update(&[u8::try_from(cluster.len()).unwrap_or(u8::MAX)]);
        mac.update(cluster.as_bytes());
        mac.update(id);
        mac.update(keyed_digest);
        mac.update(&chunk_size.to_be_bytes());
        mac.update(&[1]);
        mac.finalize().into_bytes().into()
    }

    /// Whether `other` has the same secret (the same id and the same tags).
    fn same_secret(&self, other: &Key) -> bool {
        self.id == other.id && self.tag(b"probe") == other.tag(b"probe")
    }

    /// The key's id, as carried in datagram headers.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The 16-byte version 1 tag of `data`.
    pub fn tag(&self, data: &[u8]) -> [u8; TAG_LEN] {
        self.tag_as(Version::V1, data)
    }

    /// The 16-byte tag of `data` in protocol `version`.
    pub fn tag_as(&self, version: Version, data: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac(version).clone();
        mac.update(data);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// Whether `tag` is the version 1 tag of `data`, compared in constant time.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        self.verify_as(Version::V1, data, tag)
    }

    /// Whether `tag` is the tag of `data` in protocol `version`, compared in constant time.
    pub fn verify_as(&self, version: Version, data: &[u8], tag: &[u8]) -> bool {
        if tag.len() != TAG_LEN {
            return false;
        }
        let mut mac = self.mac(version).clone();
        mac.update(data);
        mac.verify_truncated_left(tag).is_ok()
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Key")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Which clusters a key may speak for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyScope {
    /// Every cluster that has no key of its own.
    Default,
    /// One cluster only.
    Cluster(Box<str>),
}

/// Index of a key inside a [`Keyring`]; stable for the keyring's life.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct KeyIndex(pub(crate) u32);

/// The keeper's keys: a default key for most clusters, and keys of their own for some.
///
/// A cluster may have several keys at once, which is how a key is rotated: add the new
/// key, move the proxies over, remove the old one. A running keeper takes a new set of
/// keys with [`Keyring::replace`]: a key removed is *retired* (it verifies nothing
/// more, but answers already queued under it can still be signed), so every
/// [`KeyIndex`] stays valid for the keyring's life.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    /// Every key ever held, with its scope and whether it is in force.
    keys: Vec<(Key, KeyScope, bool)>,
    /// The keys in force, by id.
    by_id: HashMap<KeyId, KeyIndex, FixedState>,
    /// Clusters with keys of their own in force, and how many.
    own_keys: HashMap<Box<str>, usize, FixedState>,
}

/// What [`Keyring::replace`] changed, for the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyringChange {
    /// Keys now in force that were not.
    pub added: Vec<KeyId>,
    /// Keys no longer in force.
    pub retired: Vec<KeyId>,
    /// Keys in force before and after whose scope changed.
    pub rescoped: Vec<KeyId>,
}

impl Keyring {
    /// An empty keyring: every datagram fails authentication.
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// A keyring holding one default key for every cluster.
    pub fn with_default(key: Key) -> Keyring {
        let mut ring = Keyring::new();
        // An empty ring cannot collide.
        ring.insert(key, KeyScope::Default)
            .expect("the first key of a keyring never collides");
        ring
    }

    /// Adds a key. Adding the same secret twice with the same scope is a no-op.
    pub fn insert(&mut self, key: Key, scope: KeyScope) -> Result<(), KeyError> {
        if let KeyScope::Cluster(name) = &scope {
            validate_cluster(name)?;
        }
        if let Some(&index) = self.by_id.get(&key.id()) {
            let (existing, existing_scope, _) = &self.keys[index.0 as usize];
            // Same id: either the same secret (tags agree) or a collision.
            if existing.same_secret(&key) && *existing_scope == scope {
                return Ok(());
            }
            return Err(KeyError::IdCollision(key.id().0));
        }
        let index = KeyIndex(u32::try_from(self.keys.len()).unwrap_or(u32::MAX));
        if let KeyScope::Cluster(name) = &scope {
            *self.own_keys.entry(name.clone()).or_default() += 1;
        }
        self.by_id.insert(key.id(), index);
        self.keys.push((key, scope, true));
        Ok(())
    }

    /// Puts the keys of `next` in force instead of these, keeping the index of every key
    /// both hold (an answer queued under it is still signed with it) and retiring the
    /// others: a retired key verifies nothing more. `next` was checked when it was built,
    /// so this cannot fail.
    pub fn replace(&mut self, next: Keyring) -> KeyringChange {
        let mut change = KeyringChange::default();
        let before: Vec<(KeyId, KeyScope)> = self
            .keys
            .iter()
            .filter(|(_, _, active)| *active)
            .map(|(key, scope, _)| (key.id(), scope.clone()))
            .collect();
        for slot in &mut self.keys {
            slot.2 = false;
        }
        for (key, scope, active) in next.keys {
            if !active {
                continue;
            }
            let id = key.id();
            match self.keys.iter_mut().find(|(k, _, _)| k.same_secret(&key)) {
                Some(slot) => {
                    slot.1 = scope.clone();
                    slot.2 = true;
                }
                None => self.keys.push((key, scope.clone(), true)),
            }
            match before.iter().find(|(old, _)| *old == id) {
                None => change.added.push(id),
                Some((_, old_scope)) if *old_scope != scope => change.rescoped.push(id),
                Some(_) => {}
            }
        }
        self.by_id.clear();
        self.own_keys.clear();
        for (index, (key, scope, active)) in self.keys.iter().enumerate() {
            if !active {
                continue;
            }
            let index = KeyIndex(u32::try_from(index).unwrap_or(u32::MAX));
            self.by_id.insert(key.id(), index);
            if let KeyScope::Cluster(name) = scope {
                *self.own_keys.entry(name.clone()).or_default() += 1;
            }
        }
        change.retired = before
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !self.by_id.contains_key(id))
            .collect();
        change
    }

    /// The id of every key the keyring has held, by index (retired ones included).
    pub fn ids_by_index(&self) -> Vec<KeyId> {
        self.keys.iter().map(|(key, _, _)| key.id()).collect()
    }

    /// The ids of the keys in force, with their scopes, in the order they were added.
    pub fn in_force(&self) -> impl Iterator<Item = (KeyId, &KeyScope)> {
        self.keys
            .iter()
            .filter(|(_, _, active)| *active)
            .map(|(key, scope, _)| (key.id(), scope))
    }

    /// The key in force with this id, if the keyring holds one.
    pub fn lookup(&self, id: KeyId) -> Option<(KeyIndex, &Key)> {
        let index = *self.by_id.get(&id)?;
        Some((index, &self.keys[index.0 as usize].0))
    }

    /// The key at `index`.
    ///
    /// Indexes only come from [`Keyring::lookup`] on this keyring, which never shrinks
    /// (a retired key keeps its index).
    pub fn get(&self, index: KeyIndex) -> &Key {
        &self.keys[index.0 as usize].0
    }

    /// Whether the key at `index` may speak for `cluster` (a retired key speaks for
    /// none).
    pub fn authorizes(&self, index: KeyIndex, cluster: &str) -> bool {
        let (_, scope, active) = &self.keys[index.0 as usize];
        if !active {
            return false;
        }
        match scope {
            KeyScope::Cluster(name) => **name == *cluster,
            // Most keepers give no cluster a key of its own: no lookup then.
            KeyScope::Default => self.own_keys.is_empty() || !self.own_keys.contains_key(cluster),
        }
    }

    /// Whether `cluster` has keys of its own (a cluster the config file declares).
    pub fn has_own_keys(&self, cluster: &str) -> bool {
        self.own_keys.contains_key(cluster)
    }

    /// Number of keys in force.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no key is in force.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> Key {
        Key::new(&[byte; 32]).expect("valid length")
    }

    #[test]
    fn a_tag_verifies_only_with_the_same_key_and_data() {
        let k = key(1);
        let tag = k.tag(b"hello");
        assert!(k.verify(b"hello", &tag));
        assert!(!k.verify(b"hellp", &tag));
        assert!(!key(2).verify(b"hello", &tag));
        assert!(!k.verify(b"hello", &tag[..15]));
    }

    #[test]
    fn secrets_of_the_wrong_length_are_refused() {
        assert_eq!(Key::new(&[0; 15]).err(), Some(KeyError::Length(15)));
        assert_eq!(Key::new(&[0; 65]).err(), Some(KeyError::Length(65)));
    }

    #[test]
    fn a_cluster_with_its_own_key_refuses_the_default_key() {
        let mut ring = Keyring::with_default(key(1));
        ring.insert(key(2), KeyScope::Cluster("payments".into()))
            .expect("distinct ids");
        let (default, _) = ring.lookup(key(1).id()).expect("present");
        let (own, _) = ring.lookup(key(2).id()).expect("present");
        assert!(ring.authorizes(default, "test_cluster"));
        assert!(!ring.authorizes(default, "payments"));
        assert!(ring.authorizes(own, "payments"));
        assert!(!ring.authorizes(own, "test_cluster"));
    }

    #[test]
    fn a_replaced_keyring_retires_what_it_lost_and_keeps_every_index() {
        let mut ring = Keyring::with_default(key(1));
        ring.insert(key(2), KeyScope::Cluster("payments".into()))
            .expect("distinct ids");
        let (old, _) = ring.lookup(key(2).id()).expect("present");
        // Rotation: payments gets key 3 beside key 2, then loses key 2.
        let mut next = Keyring::with_default(key(1));
        next.insert(key(2), KeyScope::Cluster("payments".into()))
            .expect("distinct ids");
        next.insert(key(3), KeyScope::Cluster("payments".into()))
            .expect("distinct ids");
        let change = ring.replace(next);
        assert_eq!(change.added, [key(3).id()]);
        assert!(change.retired.is_empty() && change.rescoped.is_empty());
        assert_eq!(ring.lookup(key(2).id()).map(|(i, _)| i), Some(old));
        let (new, _) = ring.lookup(key(3).id()).expect("added");
        assert!(ring.authorizes(new, "payments") && ring.authorizes(old, "payments"));
        assert_eq!(ring.len(), 3);

        let mut last = Keyring::with_default(key(1));
        last.insert(key(3), KeyScope::Cluster("payments".into()))
            .expect("distinct ids");
        let change = ring.replace(last);
        assert_eq!(change.retired, [key(2).id()]);
        assert!(
            ring.lookup(key(2).id()).is_none(),
            "a retired key verifies nothing"
        );
        assert!(!ring.authorizes(old, "payments"));
        // An answer queued under the retired key can still be signed with it.
        assert_eq!(ring.get(old).id(), key(2).id());
        assert_eq!(ring.lookup(key(3).id()).map(|(i, _)| i), Some(new));
        assert_eq!(ring.len(), 2);

        // The default key given to payments alone is rescoped, not added.
        let mut moved = Keyring::new();
        moved
            .insert(key(1), KeyScope::Cluster("payments".into()))
            .expect("one key");
        let change = ring.replace(moved);
        assert_eq!(change.rescoped, [key(1).id()]);
        assert_eq!(change.retired, [key(3).id()]);
        let (one, _) = ring.lookup(key(1).id()).expect("kept");
        assert!(ring.authorizes(one, "payments") && !ring.authorizes(one, "other"));
    }
}
