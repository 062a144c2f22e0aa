//! Configs sealed at rest: every config version a persistent store writes is encrypted
//! with AES-256-GCM under a **store key** (`--store-key-file`), the same on every keeper
//! and never a cluster's key, so retiring a cluster key loses no history.
//!
//! # The value a store writes for a config version
//!
//! The *record* is the postcard `{base, datasources}` (`record.rs`). What is stored is an
//! envelope of it, whose first byte says which:
//!
//! | envelope | bytes                                                        |
//! |----------|--------------------------------------------------------------|
//! | plain    | `00`, the record                                             |
//! | sealed   | `01`, key id (4, BE), siv (16), AES-256-GCM(record) and its tag (16) |
//!
//! A sealed value is deterministic, as AES-SIV (RFC 5297) is: with the store secret `S`,
//!
//! - `K_mac = HMAC-SHA256(S, "zerokeeper store mac")`;
//! - `siv = HMAC-SHA256(K_mac, len(cluster) (u8) || cluster || version (u64 BE) ||
//!   record)[..16]`;
//! - `PRK = HMAC-SHA256("zerokeeper store config", S)` (HKDF-Extract, RFC 5869), and
//!   `K_enc = HMAC-SHA256(PRK, siv || 01)` (HKDF-Expand of 32 bytes with `info = siv`);
//! - the ciphertext is AES-256-GCM under `K_enc` with the all-zero 12-byte nonce and the
//!   associated data `01 || key id || siv || len(cluster) || cluster || version (BE)`.
//!
//! A nonce is never random and never a counter: each `K_enc` seals exactly one plaintext
//! (the siv names it), so one key never sees one nonce twice with different plaintexts
//! (short of a 128-bit collision). The same record of the same cluster and version seals
//! to the same bytes (that is all the determinism shows). The associated data binds a
//! value to its cluster and version: a value copied under another key of the store does
//! not open. Opening checks the GCM tag and then the siv against the opened record.
//!
//! The key id is the first four bytes of `SHA-256("zerokeeper store key id v1" || S)`, so
//! a value names the key it needs without revealing it.
//!
//! # Rotation
//!
//! A store key file holds one or more secrets, one a line (hex, as a cluster key file;
//! `#` comments). The first seals; every one opens. A store opened with keys reseals, as
//! it boots, every value that is plain or sealed under another key than the first, so
//! rotating is: put the new secret first, keep the old one below it, restart every
//! keeper, and remove the old line once they all run.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::{MAX_SECRET_LEN, MIN_SECRET_LEN};
use crate::config::decode_hex;

/// The first byte of a plain envelope.
pub const PLAIN: u8 = 0x00;
/// The first byte of a sealed envelope.
pub const SEALED: u8 = 0x01;

/// Bytes of a sealed envelope beyond its record: tag byte, key id, siv, GCM tag.
pub const SEALED_OVERHEAD: usize = 1 + 4 + 16 + 16;

/// The HKDF salt of the store's encryption keys.
const STORE_SALT: &[u8] = b"zerokeeper store config";

/// One store secret, its derived keys ready.
#[derive(Clone)]
pub struct StoreKey {
    id: u32,
    id_secret: [u8; 32],
    mac: Hmac<Sha256>,
    prk: Hmac<Sha256>,
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreKey({:08x})", self.id)
    }
}

impl StoreKey {
    /// A key from its secret (16 to 64 bytes, as a cluster key's).
    pub fn new(secret: &[u8]) -> Result<StoreKey, String> {
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&secret.len()) {
            return Err(format!(
                "a store key must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} bytes, got {}",
                secret.len()
            ));
        }
        let digest = Sha256::new()
            .chain_update(b"zerokeeper store key id v1")
            .chain_update(secret)
            .finalize();
        let id = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        let mac_key = hmac_once(secret, &[b"zerokeeper store mac"]);
        let prk = hmac_once(STORE_SALT, &[secret]);
        Ok(StoreKey {
            id,
            id_secret: hmac_once(secret, &[b"zerokeeper store config id"]),
            mac: hmac_key(&mac_key),
            prk: hmac_key(&prk),
        })
    }

    /// The key's id, as sealed values carry it.
    pub fn id(&self) -> u32 {
        self.id
    }

    fn siv(&self, cluster: &str, version: u64, record: &[u8]) -> [u8; 16] {
        let mut mac = self.mac.clone();
        mac.update(&[cluster_len(cluster)]);
        mac.update(cluster.as_bytes());
        mac.update(&version.to_be_bytes());
        mac.update(record);
        let full: [u8; 32] = mac.finalize().into_bytes().into();
        let mut siv = [0u8; 16];
        siv.copy_from_slice(&full[..16]);
        siv
    }

    fn cipher(&self, siv: &[u8; 16]) -> Aes256Gcm {
        let mut expand = self.prk.clone();
        expand.update(siv);
        expand.update(&[1]);
        let key: [u8; 32] = expand.finalize().into_bytes().into();
        Aes256Gcm::new(&key.into())
    }

    /// `record` of `cluster`'s `version`, sealed (the whole envelope).
    pub fn seal(&self, cluster: &str, version: u64, record: &[u8]) -> Vec<u8> {
        let siv = self.siv(cluster, version, record);
        let mut out = Vec::with_capacity(record.len() + SEALED_OVERHEAD);
        out.push(SEALED);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&siv);
        let aad = associated(&out, cluster, version);
        // GCM refuses only plaintexts past 64 GiB; a config is at most a few MiB. An empty
        // result would fail to open, as a damaged value does.
        let sealed = self
            .cipher(&siv)
            .encrypt(
                Nonce::from_slice(&[0; 12]),
                Payload {
                    msg: record,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a sealed envelope of `cluster`'s `version` that names this key; `None` if it
    /// does not open (damaged, or not sealed for this cluster and version).
    fn open(&self, cluster: &str, version: u64, envelope: &[u8]) -> Option<Vec<u8>> {
        let head = envelope.get(..21)?;
        let siv: [u8; 16] = head[5..21].try_into().ok()?;
        let aad = associated(head, cluster, version);
        let record = self
            .cipher(&siv)
            .decrypt(
                Nonce::from_slice(&[0; 12]),
                Payload {
                    msg: &envelope[21..],
                    aad: &aad,
                },
            )
            .ok()?;
        bool::from(self.siv(cluster, version, &record).ct_eq(&siv)).then_some(record)
    }
}

/// The store keys a keeper was given: the first seals, every one opens.
#[derive(Clone, Debug)]
pub struct StoreKeys {
    keys: Vec<StoreKey>,
}

/// What an envelope turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sealing {
    /// Plain: readable by anyone who reads the store.
    Plain,
    /// Sealed under the key that seals now.
    Current,
    /// Sealed under an older key still given (to be resealed).
    Older(u32),
}

impl StoreKeys {
    /// The keys of a store key file's text: one hex secret a line, `#` comments and blank
    /// lines ignored; at least one, no two alike.
    pub fn parse(text: &str) -> Result<StoreKeys, String> {
        let mut keys: Vec<StoreKey> = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let secret = decode_hex(line).ok_or_else(|| format!("line {}: not hex", number + 1))?;
            let key = StoreKey::new(&secret).map_err(|e| format!("line {}: {e}", number + 1))?;
            if keys.iter().any(|k| k.id == key.id) {
                return Err(format!(
                    "line {}: store key {:08x} is given twice",
                    number + 1,
                    key.id
                ));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err("no store key in the file".into());
        }
        Ok(StoreKeys { keys })
    }

    /// The keys, the sealing one first.
    pub fn from_keys(keys: Vec<StoreKey>) -> Option<StoreKeys> {
        (!keys.is_empty()).then_some(StoreKeys { keys })
    }

    /// The key that seals.
    pub fn sealing(&self) -> &StoreKey {
        &self.keys[0]
    }

    /// The secret config ids are keyed by ([`ConfigId::keyed`](crate::wire::ConfigId)):
    /// `HMAC-SHA256(S, "zerokeeper store config id")` of the sealing key's secret. A
    /// version keeps the id it was made with, so a new first key names only the versions
    /// made after it.
    pub fn config_id_key(&self) -> crate::wire::ConfigIdKey {
        crate::wire::ConfigIdKey::new(&self.keys[0].id_secret)
    }

    /// The ids of every key, the sealing one first.
    pub fn ids(&self) -> Vec<u32> {
        self.keys.iter().map(|k| k.id).collect()
    }
}

/// The envelope of `record`: sealed under `keys`' sealing key, or plain without keys.
pub fn envelope(keys: Option<&StoreKeys>, cluster: &str, version: u64, record: &[u8]) -> Vec<u8> {
    match keys {
        Some(keys) => keys.sealing().seal(cluster, version, record),
        None => {
            let mut out = Vec::with_capacity(record.len() + 1);
            out.push(PLAIN);
            out.extend_from_slice(record);
            out
        }
    }
}

/// What an envelope says it is, read from its first bytes only (nothing is opened):
/// `Err` for an envelope of neither kind.
pub fn sealing_of(keys: Option<&StoreKeys>, envelope: &[u8]) -> Result<Sealing, String> {
    match envelope.first() {
        Some(&PLAIN) => Ok(Sealing::Plain),
        Some(&SEALED) => {
            let id = key_id(envelope)?;
            match keys {
                Some(keys) if keys.sealing().id == id => Ok(Sealing::Current),
                _ => Ok(Sealing::Older(id)),
            }
        }
        Some(other) => Err(format!(
            "a config value has an unknown envelope {other:#04x}"
        )),
        None => Err("a config value is empty".into()),
    }
}

/// Why an envelope could not be opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Sealed under a key this keeper was not given (`None`: given no store key at all).
    NoKey {
        /// The key the value names.
        id: u32,
        /// Whether any store key was given.
        have_keys: bool,
    },
    /// Damaged, or not this cluster's and version's.
    Damaged(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::NoKey {
                id,
                have_keys: false,
            } => write!(
                f,
                "configs are sealed at rest under store key {id:08x}: start the keeper with \
                 --store-key-file (store_key_file) naming a file that holds it"
            ),
            OpenError::NoKey { id, .. } => write!(
                f,
                "a config is sealed at rest under store key {id:08x}, which the store key file \
                 does not hold: add it below the current key until every value is resealed"
            ),
            OpenError::Damaged(what) => f.write_str(what),
        }
    }
}

/// The record inside `envelope`, `cluster`'s `version`, and what it was.
pub fn open(
    keys: Option<&StoreKeys>,
    cluster: &str,
    version: u64,
    envelope: &[u8],
) -> Result<(Vec<u8>, Sealing), OpenError> {
    let sealing = sealing_of(keys, envelope).map_err(OpenError::Damaged)?;
    if sealing == Sealing::Plain {
        return Ok((envelope[1..].to_vec(), sealing));
    }
    let id = key_id(envelope).map_err(OpenError::Damaged)?;
    let key = keys
        .and_then(|keys| keys.keys.iter().find(|k| k.id == id))
        .ok_or(OpenError::NoKey {
            id,
            have_keys: keys.is_some(),
        })?;
    let record = key.open(cluster, version, envelope).ok_or_else(|| {
        OpenError::Damaged(format!(
            "the sealed config version {version} of {cluster:?} does not open under store key \
             {id:08x}: damaged, or copied from elsewhere"
        ))
    })?;
    Ok((record, sealing))
}

fn key_id(envelope: &[u8]) -> Result<u32, String> {
    envelope
        .get(1..5)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| "a sealed config value is truncated".to_owned())
}

fn associated(head: &[u8], cluster: &str, version: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(head.len() + 1 + cluster.len() + 8);
    aad.extend_from_slice(head);
    aad.push(cluster_len(cluster));
    aad.extend_from_slice(cluster.as_bytes());
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// Cluster names are at most 128 bytes (validated before anything is stored).
fn cluster_len(cluster: &str) -> u8 {
    u8::try_from(cluster.len()).unwrap_or(u8::MAX)
}

fn hmac_key(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

fn hmac_once(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = hmac_key(key);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> StoreKeys {
        StoreKeys::parse(text).expect("valid keys")
    }

    const A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn a_sealed_value_opens_only_as_its_cluster_and_version() {
        let k = keys(A);
        let record = b"db_password = \"hunter2\"";
        let sealed = envelope(Some(&k), "payments", 3, record);
        assert_eq!(sealed.len(), record.len() + SEALED_OVERHEAD);
        assert!(
            !sealed.windows(7).any(|w| w == b"hunter2"),
            "the plaintext is not in the sealed value"
        );
        let (opened, sealing) = open(Some(&k), "payments", 3, &sealed).expect("opens");
        assert_eq!(opened, record);
        assert_eq!(sealing, Sealing::Current);
        assert!(matches!(
            open(Some(&k), "payments", 4, &sealed),
            Err(OpenError::Damaged(_))
        ));
        assert!(matches!(
            open(Some(&k), "billing", 3, &sealed),
            Err(OpenError::Damaged(_))
        ));
        // Deterministic: the same record seals to the same bytes.
        assert_eq!(sealed, envelope(Some(&k), "payments", 3, record));
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let k = keys(A);
        let sealed = envelope(Some(&k), "c", 1, b"base");
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[i] ^= 1 << bit;
                match open(Some(&k), "c", 1, &bad) {
                    // 01 → 00 makes a plain envelope, which never passes as sealed (and
                    // anyone who can write the store can write a plain value anyway).
                    Ok((_, Sealing::Plain)) if i == 0 && bad[0] == PLAIN => {}
                    other => assert!(other.is_err(), "byte {i} bit {bit}: {other:?}"),
                }
            }
        }
        for len in 0..sealed.len() {
            assert!(
                open(Some(&k), "c", 1, &sealed[..len]).is_err(),
                "length {len}"
            );
        }
    }

    #[test]
    fn older_keys_open_and_a_missing_key_is_named() {
        let old = keys(A);
        let rotated = keys(&format!("{B}\n# the old one, until resealed\n{A}\n"));
        let sealed = envelope(Some(&old), "c", 1, b"x");
        let (_, sealing) = open(Some(&rotated), "c", 1, &sealed).expect("opens");
        assert_eq!(sealing, Sealing::Older(old.sealing().id()));
        let only_new = keys(B);
        let err = open(Some(&only_new), "c", 1, &sealed).expect_err("no key");
        assert!(matches!(
            err,
            OpenError::NoKey {
                have_keys: true,
                ..
            }
        ));
        let err = open(None, "c", 1, &sealed).expect_err("no keys");
        assert!(err.to_string().contains("--store-key-file"), "{err}");
    }

    #[test]
    fn plain_envelopes_open_without_keys() {
        let plain = envelope(None, "c", 1, b"x");
        assert_eq!(plain, b"\x00x");
        assert_eq!(
            open(None, "c", 1, &plain),
            Ok((b"x".to_vec(), Sealing::Plain))
        );
        assert!(open(None, "c", 1, b"\x07x").is_err());
        assert!(open(None, "c", 1, b"").is_err());
    }

    #[test]
    fn key_files_are_checked() {
        assert!(StoreKeys::parse("").is_err());
        assert!(StoreKeys::parse("# nothing\n").is_err());
        assert!(StoreKeys::parse("zz").is_err());
        assert!(StoreKeys::parse("abcd").is_err());
        assert!(StoreKeys::parse(&format!("{A}\n{A}\n")).is_err());
        assert_eq!(keys(&format!("{A}\n{B}")).ids().len(), 2);
    }
}
