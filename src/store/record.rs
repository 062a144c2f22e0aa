//! The records both persistent stores write, and the keys that sort them: one definition,
//! so that the redb file and the etcd keyspace hold the same bytes for the same facts.
//!
//! Values are postcard-encoded and decoded strictly (trailing bytes are corruption, not
//! padding). Keys of the proxy and config tables start with the cluster, escaped so that
//! keys sort by cluster and then by proxy (or version) exactly as the
//! [`MemoryStore`](super::MemoryStore)'s `(String, String)` and `(String, u64)` tuples do,
//! whatever the bytes: a NUL byte of the cluster is written `00 FF`, and the cluster ends
//! with `00 00`, which sorts below any continuation of it.
//!
//! Errors are messages here; each store wraps them in [`StoreError`](super::StoreError)
//! with the place it read them from.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::StoredProxy;
use super::seal::{self, OpenError, Sealing, StoreKeys};
use crate::configdoc::ConfigVersion;
use crate::keeper::Status;

/// A stored proxy without its key (which holds the cluster and the proxy).
#[derive(Serialize, Deserialize)]
pub(super) struct ProxyRecord {
    pub(super) incarnation: u64,
    pub(super) status: u8,
    pub(super) since_unix_ms: Option<u64>,
    pub(super) last_heartbeat_unix_ms: Option<u64>,
    pub(super) source: Option<SocketAddr>,
    pub(super) config_version: u64,
}

impl ProxyRecord {
    /// The record of `proxy`.
    pub(super) fn of(proxy: &StoredProxy) -> ProxyRecord {
        ProxyRecord {
            incarnation: proxy.incarnation,
            status: status_code(proxy.status),
            since_unix_ms: proxy.since_unix_ms,
            last_heartbeat_unix_ms: proxy.last_heartbeat_unix_ms,
            source: proxy.source,
            config_version: proxy.config_version,
        }
    }

    /// The proxy this record holds, under its key's cluster and proxy.
    pub(super) fn into_stored(self, cluster: String, proxy: String) -> Result<StoredProxy, String> {
        Ok(StoredProxy {
            cluster,
            proxy,
            incarnation: self.incarnation,
            status: status_from_code(self.status)?,
            since_unix_ms: self.since_unix_ms,
            last_heartbeat_unix_ms: self.last_heartbeat_unix_ms,
            source: self.source,
            config_version: self.config_version,
        })
    }
}

/// A config version's content and id, as written in an envelope (borrowed, to encode
/// without copying).
#[derive(Serialize)]
pub(super) struct ConfigRecordOut<'a> {
    pub(super) base: &'a [u8],
    pub(super) datasources: &'a BTreeMap<String, String>,
    pub(super) id: Option<[u8; 8]>,
}

/// A config version's content and id, as read from an envelope.
#[derive(Deserialize)]
pub(super) struct ConfigRecord {
    pub(super) base: Vec<u8>,
    pub(super) datasources: BTreeMap<String, String>,
    pub(super) id: Option<[u8; 8]>,
}

/// A config version's content as schemas before envelopes stored it, bare: no id.
#[derive(Deserialize)]
pub(super) struct BareConfigRecord {
    pub(super) base: Vec<u8>,
    pub(super) datasources: BTreeMap<String, String>,
}

/// The record of an envelope for a bare record of an older schema (its id unknown).
pub(super) fn from_bare(bare: &[u8]) -> Result<Vec<u8>, String> {
    let old: BareConfigRecord = decode(bare, "a config version")?;
    encode(&ConfigRecordOut {
        base: &old.base,
        datasources: &old.datasources,
        id: None,
    })
}

impl ConfigRecord {
    /// The stored config this record holds.
    pub(super) fn into_stored(self, cluster: String, version: u64) -> super::StoredConfig {
        super::StoredConfig {
            cluster,
            version,
            base: self.base,
            datasources: self.datasources,
            id: self.id.map(crate::wire::ConfigId),
        }
    }
}

/// The value a store writes for `cluster`'s `config`: its record in an envelope, sealed
/// under `keys` where the keeper has them ([`seal`]).
pub(super) fn config_value(
    keys: Option<&StoreKeys>,
    cluster: &str,
    config: &ConfigVersion,
) -> Result<Vec<u8>, String> {
    let record = encode(&ConfigRecordOut {
        base: &config.base,
        datasources: &config.datasources,
        id: Some(config.id.0),
    })?;
    Ok(seal::envelope(keys, cluster, config.version, &record))
}

/// Why a config value could not be read.
pub(super) enum ConfigReadError {
    /// Sealed under a store key this keeper lacks: [`StoreError::Sealed`](super::StoreError).
    NoKey(String),
    /// Damaged: [`StoreError::Corrupt`](super::StoreError).
    Corrupt(String),
}

/// The record of a config value that [`config_value`] wrote for `cluster`'s `version`,
/// and how it was stored.
pub(super) fn read_config(
    keys: Option<&StoreKeys>,
    cluster: &str,
    version: u64,
    value: &[u8],
) -> Result<(ConfigRecord, Sealing), ConfigReadError> {
    let (record, sealing) = seal::open(keys, cluster, version, value).map_err(|e| match e {
        OpenError::NoKey { .. } => ConfigReadError::NoKey(e.to_string()),
        OpenError::Damaged(what) => ConfigReadError::Corrupt(what),
    })?;
    let record = decode(&record, "a config version").map_err(ConfigReadError::Corrupt)?;
    Ok((record, sealing))
}

/// A config value in an envelope, sealed under `keys` (or plain without), from the
/// record that a value of an older schema held bare or that [`read_config`] opened.
pub(super) fn reseal(
    keys: Option<&StoreKeys>,
    cluster: &str,
    version: u64,
    record: &[u8],
) -> Vec<u8> {
    seal::envelope(keys, cluster, version, record)
}

/// An audit entry, as written.
#[derive(Serialize)]
pub(super) struct AuditRecordOut<'a> {
    pub(super) at_unix_ms: u64,
    pub(super) action: &'a str,
}

/// An audit entry, as read.
#[derive(Deserialize)]
pub(super) struct AuditRecord {
    pub(super) at_unix_ms: u64,
    pub(super) action: String,
}

/// Encodes a value (postcard).
pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(value).map_err(|e| format!("cannot encode a value: {e}"))
}

/// Decodes a whole value: trailing bytes are corruption, not padding.
pub(super) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, String> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(format!("{what} has {} trailing bytes", rest.len())),
        Err(e) => Err(format!("{what} cannot be decoded: {e}")),
    }
}

/// A status as stored: `0` ready, `1` up, `2` lost.
pub(super) fn status_code(status: Status) -> u8 {
    match status {
        Status::Ready => 0,
        Status::Up => 1,
        Status::Lost => 2,
    }
}

/// The status stored as `code`.
pub(super) fn status_from_code(code: u8) -> Result<Status, String> {
    match code {
        0 => Ok(Status::Ready),
        1 => Ok(Status::Up),
        2 => Ok(Status::Lost),
        other => Err(format!("unknown proxy status {other}")),
    }
}

/// Appends the cluster to `key` so that keys sort by cluster first: NUL is escaped as
/// `00 FF` and the cluster ends with `00 00`, which sorts below any continuation of it.
pub(super) fn push_cluster(key: &mut Vec<u8>, cluster: &str) {
    for &b in cluster.as_bytes() {
        key.push(b);
        if b == 0 {
            key.push(0xFF);
        }
    }
    key.extend_from_slice(&[0, 0]);
}

/// Appends the key of a proxy (its cluster escaped, then the proxy).
pub(super) fn push_proxy_key(key: &mut Vec<u8>, cluster: &str, proxy: &str) {
    push_cluster(key, cluster);
    key.extend_from_slice(proxy.as_bytes());
}

/// Appends the key of a config version (its cluster escaped, then the version, big-endian).
pub(super) fn push_config_key(key: &mut Vec<u8>, cluster: &str, version: u64) {
    push_cluster(key, cluster);
    key.extend_from_slice(&version.to_be_bytes());
}

/// Splits a key into its cluster (still escaped, without the terminator) and the rest.
pub(super) fn split_key(key: &[u8]) -> Result<(&[u8], &[u8]), &'static str> {
    let mut i = 0;
    while i < key.len() {
        if key[i] == 0 {
            match key.get(i + 1) {
                Some(0) => return Ok((&key[..i], &key[i + 2..])),
                Some(0xFF) => i += 2,
                _ => return Err("a key has a bad cluster escape"),
            }
        } else {
            i += 1;
        }
    }
    Err("a key has no cluster terminator")
}

/// The cluster name of an escaped cluster that [`split_key`] returned.
pub(super) fn unescape_cluster(escaped: &[u8]) -> Result<String, &'static str> {
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut i = 0;
    while i < escaped.len() {
        bytes.push(escaped[i]);
        // split_key only returns well-formed escapes: a NUL is always followed by 0xFF.
        i += if escaped[i] == 0 { 2 } else { 1 };
    }
    String::from_utf8(bytes).map_err(|_| "a cluster name is not UTF-8")
}

/// The version of a config key's rest (after [`split_key`]).
pub(super) fn config_version(rest: &[u8]) -> Result<u64, &'static str> {
    <[u8; 8]>::try_from(rest)
        .map(u64::from_be_bytes)
        .map_err(|_| "a config key has no 8-byte version")
}
