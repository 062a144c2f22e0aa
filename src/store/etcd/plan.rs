//! What one batch writes: [`apply`](crate::store) decides the effects of every change
//! (the one definition both other stores use), and [`Plan`] turns them into etcd
//! operations, sorted by when they may be written (staged before the commit point, at
//! it, or materialised after it).

use std::collections::{BTreeMap, HashMap};

use etcd_client::{DeleteOptions, TxnOp};

use super::keys::{Keys, prefix_end, status_value};
use crate::configdoc::ConfigVersion;
use crate::keeper::change::ChangeKind;
use crate::keeper::{ClusterSettings, Status};
use serde::{Deserialize, Serialize};

use crate::store::record::{self, AuditRecordOut, ProxyRecord, decode, encode};
use crate::store::seal::StoreKeys;
use crate::store::{AuditEntry, StoreError, StoredProxy, Tables, WallChange};

/// Bytes of config content per blob part: a transaction of four parts stays under 1 MiB.
pub(super) const PART_BYTES: usize = 256 << 10;

/// The header of a config blob, written before its parts: how long the content is, in
/// how many parts, and the store key its envelope is sealed under (`None`: a plain
/// envelope). Schema 1 wrote headers without `key`, over a bare record: [`read_header`]
/// tells them apart by their length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct BlobHeader {
    pub(super) len: u64,
    pub(super) parts: u32,
    pub(super) key: Option<u32>,
}

/// A blob header of schema 1.
#[derive(Deserialize)]
struct BlobHeaderV1 {
    len: u64,
    parts: u32,
}

/// What a blob's content is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BlobFormat {
    /// A bare config record (schema 1).
    Bare,
    /// An envelope (`seal`), sealed under this key or plain.
    Envelope(Option<u32>),
}

/// A blob header, of either schema, and what its content is.
pub(super) fn read_header(bytes: &[u8]) -> Result<(u64, u32, BlobFormat), String> {
    if let Ok(h) = decode::<BlobHeader>(bytes, "a blob header") {
        return Ok((h.len, h.parts, BlobFormat::Envelope(h.key)));
    }
    let h: BlobHeaderV1 = decode(bytes, "a blob header")?;
    Ok((h.len, h.parts, BlobFormat::Bare))
}

/// The writes of a blob: its header, then its parts.
pub(super) fn blob_ops(
    keys: &Keys,
    revision: u64,
    content: &[u8],
    key: Option<u32>,
) -> Result<Vec<Op>, String> {
    let parts: Vec<&[u8]> = content.chunks(PART_BYTES).collect();
    let header = BlobHeader {
        len: content.len() as u64,
        parts: parts.len() as u32,
        key,
    };
    let mut ops = Vec::with_capacity(parts.len() + 1);
    ops.push(Op::Put(keys.blob(revision), encode(&header)?));
    for (i, part) in parts.into_iter().enumerate() {
        ops.push(Op::Put(keys.blob_part(revision, i as u32), part.to_vec()));
    }
    Ok(ops)
}

/// One write of a transaction.
#[derive(Clone, Debug)]
pub(super) enum Op {
    /// Sets a key.
    Put(Vec<u8>, Vec<u8>),
    /// Deletes a key.
    Delete(Vec<u8>),
    /// Deletes the keys in `start..end`.
    DeleteRange(Vec<u8>, Vec<u8>),
}

impl Op {
    /// Its size as counted against a request's budget: keys, values and a margin for
    /// the framing.
    pub(super) fn bytes(&self) -> usize {
        32 + match self {
            Op::Put(k, v) => k.len() + v.len(),
            Op::Delete(k) => k.len(),
            Op::DeleteRange(s, e) => s.len() + e.len(),
        }
    }

    pub(super) fn to_txn_op(&self) -> TxnOp {
        match self {
            Op::Put(k, v) => TxnOp::put(k.clone(), v.clone(), None),
            Op::Delete(k) => TxnOp::delete(k.clone(), None),
            Op::DeleteRange(s, e) => {
                TxnOp::delete(s.clone(), Some(DeleteOptions::new().with_range(e.clone())))
            }
        }
    }
}

/// What a batch writes, by phase.
#[derive(Debug, Default)]
pub(super) struct Writes {
    /// Written before the commit point, under keys above the stored revision, which no
    /// reader looks at: the log entries and the config blobs.
    pub(super) staged: Vec<Op>,
    /// The commit point's own writes besides the revision: the generation and epoch a
    /// `Rewound` change moved.
    pub(super) point: Vec<Op>,
    /// Written after the commit point (and repeated from the log if that was cut short):
    /// proxy records, status keys, config pointers, audit entries.
    pub(super) materialise: Vec<Op>,
    /// Written with the last materialising transaction: the log pruned past retention.
    pub(super) prune: Option<Op>,
    /// The generation after the batch, if it moved.
    pub(super) generation: Option<u64>,
    /// The stored epoch after the batch, if it moved.
    pub(super) epoch: Option<u32>,
}

/// Whether a plan commits a batch or repeats the materialisation of a committed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// A new batch: everything is written.
    Commit,
    /// Changes already past the commit point: only what is materialised is written.
    Repair,
}

/// The [`Tables`] of one batch: reads come from what was prefetched (or, for anything
/// not prefetched, from etcd), writes are collected as their net effect per key.
pub(super) struct Plan<'k> {
    keys: &'k Keys,
    mode: Mode,
    /// The revision of the change being applied (`apply` logs each change first).
    current: Option<u64>,
    /// What etcd holds, read before the batch: proxy records and config pointers.
    read: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Reads that were not prefetched, done when asked.
    fetch: &'k dyn Fn(Vec<u8>) -> Result<Option<Vec<u8>>, StoreError>,
    /// Range reads, for pruning: how many keys `start..end` holds, and the first `limit`
    /// of them with their values.
    range: &'k RangeRead<'k>,
    /// Config versions to prune: each cluster's, up to the version (included).
    prune_configs: BTreeMap<String, u64>,
    /// Audit entries to keep at most, if the batch prunes them.
    prune_audit: Option<usize>,
    /// The generation and stored epoch before the batch.
    generation: u64,
    epoch: u32,
    proxies: BTreeMap<(String, String), Option<StoredProxy>>,
    log: Vec<(u64, Vec<u8>)>,
    audit: Vec<(u64, Vec<u8>)>,
    /// Config pointers: (cluster, version) → the revision of its blob.
    configs: BTreeMap<(String, u64), u64>,
    /// Blobs to stage, by revision.
    blobs: BTreeMap<u64, Vec<u8>>,
    /// Clusters' settings to write (`None`: delete), encoded.
    settings: BTreeMap<String, Option<Vec<u8>>>,
    /// The store keys configs are sealed under.
    store_keys: Option<&'k StoreKeys>,
    new_generation: Option<u64>,
    new_epoch: Option<u32>,
    finish: Option<(u64, u64)>,
}

/// The keys a batch reads before it writes: the proxies whose stored record an
/// `Observed` change or a status change that keeps the status needs, and the pointers
/// of the config versions it stores (to delete a blob it replaces).
pub(super) fn reads(keys: &Keys, changes: &[WallChange]) -> Vec<Vec<u8>> {
    let mut wanted = Vec::new();
    for change in changes {
        match &change.kind {
            ChangeKind::Status(c) if c.to.is_some() && c.from == c.to => {
                wanted.push(keys.proxy(&c.cluster, &c.proxy));
            }
            ChangeKind::Observed { cluster, proxy, .. } => {
                wanted.push(keys.proxy(cluster, proxy));
            }
            ChangeKind::Config {
                cluster, config, ..
            } => wanted.push(keys.config(cluster, config.version)),
            _ => {}
        }
    }
    wanted.sort();
    wanted.dedup();
    wanted
}

impl<'k> Plan<'k> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        keys: &'k Keys,
        mode: Mode,
        read: HashMap<Vec<u8>, Option<Vec<u8>>>,
        fetch: &'k dyn Fn(Vec<u8>) -> Result<Option<Vec<u8>>, StoreError>,
        range: &'k RangeRead<'k>,
        generation: u64,
        epoch: u32,
        store_keys: Option<&'k StoreKeys>,
    ) -> Plan<'k> {
        Plan {
            store_keys,
            keys,
            mode,
            current: None,
            read,
            fetch,
            range,
            prune_configs: BTreeMap::new(),
            prune_audit: None,
            generation,
            epoch,
            proxies: BTreeMap::new(),
            log: Vec::new(),
            audit: Vec::new(),
            configs: BTreeMap::new(),
            blobs: BTreeMap::new(),
            settings: BTreeMap::new(),
            new_generation: None,
            new_epoch: None,
            finish: None,
        }
    }

    fn stored(&mut self, key: Vec<u8>) -> Result<Option<Vec<u8>>, StoreError> {
        match self.read.get(&key) {
            Some(value) => Ok(value.clone()),
            None => {
                let value = (self.fetch)(key.clone())?;
                self.read.insert(key, value.clone());
                Ok(value)
            }
        }
    }

    fn current(&self) -> Result<u64, StoreError> {
        self.current.ok_or_else(|| {
            StoreError::Io("a change was applied before it was logged (a bug)".to_owned())
        })
    }

    /// The status a proxy had before the batch, if it was read.
    fn status_before(&self, cluster: &str, proxy: &str) -> Option<Option<Status>> {
        let value = self.read.get(&self.keys.proxy(cluster, proxy))?;
        match value {
            None => Some(None),
            Some(bytes) => decode::<ProxyRecord>(bytes, "a proxy record")
                .ok()
                .and_then(|r| record::status_from_code(r.status).ok())
                .map(Some),
        }
    }

    /// The writes of the batch, once `apply` is done.
    pub(super) fn writes(mut self) -> Result<Writes, StoreError> {
        let corrupt = |e: String| StoreError::Corrupt(format!("etcd: {e}"));
        let io = |e: String| StoreError::Io(format!("etcd: {e}"));
        let mut writes = Writes {
            generation: self.new_generation,
            epoch: self.new_epoch,
            ..Writes::default()
        };
        let (last, prune_through) = self.finish.unwrap_or((0, 0));
        if self.mode == Mode::Commit {
            for (revision, value) in std::mem::take(&mut self.log) {
                // Pruned by this very batch: never written (a put and a delete of one key
                // in one transaction is refused by etcd).
                if revision > prune_through {
                    writes.staged.push(Op::Put(self.keys.log(revision), value));
                }
            }
            let key = self.store_keys.map(|k| k.sealing().id());
            for (revision, content) in std::mem::take(&mut self.blobs) {
                writes
                    .staged
                    .extend(blob_ops(self.keys, revision, &content, key).map_err(io)?);
            }
            if let Some(generation) = self.new_generation {
                writes.point.push(Op::Put(
                    self.keys.meta("generation"),
                    generation.to_string().into_bytes(),
                ));
            }
            if let Some(epoch) = self.new_epoch {
                writes.point.push(Op::Put(
                    self.keys.meta("epoch"),
                    epoch.to_string().into_bytes(),
                ));
            }
        }
        for ((cluster, proxy), after) in std::mem::take(&mut self.proxies) {
            let key = self.keys.proxy(&cluster, &proxy);
            let status_key = self.keys.status(&cluster, &proxy);
            match after {
                Some(stored) => {
                    let before = self.status_before(&cluster, &proxy);
                    writes
                        .materialise
                        .push(Op::Put(key, encode(&ProxyRecord::of(&stored)).map_err(io)?));
                    // Only a status that changed is written to its status key.
                    if before != Some(Some(stored.status)) {
                        writes
                            .materialise
                            .push(Op::Put(status_key, status_value(stored.status).to_vec()));
                    }
                }
                None => {
                    writes.materialise.push(Op::Delete(key));
                    writes.materialise.push(Op::Delete(status_key));
                }
            }
        }
        self.prune(&mut writes)?;
        for ((cluster, version), revision) in std::mem::take(&mut self.configs) {
            let key = self.keys.config(&cluster, version);
            // A blob this version had before is replaced: deleted with the pointer's move.
            if let Some(old) = self.stored(key.clone())? {
                let old = parse_u64(&old).ok_or_else(|| {
                    corrupt(format!(
                        "the config pointer of version {version} of {cluster:?} is not a \
                         revision"
                    ))
                })?;
                if old != revision {
                    let blob = self.keys.blob(old);
                    let end = prefix_end(&blob);
                    writes.materialise.push(Op::DeleteRange(blob, end));
                }
            }
            writes
                .materialise
                .push(Op::Put(key, revision.to_string().into_bytes()));
        }
        for (cluster, value) in std::mem::take(&mut self.settings) {
            let key = self.keys.settings(&cluster);
            writes.materialise.push(match value {
                Some(value) => Op::Put(key, value),
                None => Op::Delete(key),
            });
        }
        for (revision, value) in std::mem::take(&mut self.audit) {
            writes
                .materialise
                .push(Op::Put(self.keys.audit(revision), value));
        }
        if last > 0 && prune_through > 0 {
            writes.prune = Some(Op::DeleteRange(
                self.keys.logs(),
                self.keys.log(prune_through.saturating_add(1)),
            ));
        }
        Ok(writes)
    }
}

/// A range read: `(start, end, limit)` → how many keys `start..end` holds, and the first
/// `limit` of them with their values.
pub(super) type RangeRead<'k> =
    dyn Fn(Vec<u8>, Vec<u8>, i64) -> Result<(u64, Vec<(Vec<u8>, Vec<u8>)>), StoreError> + 'k;

impl Plan<'_> {
    /// The deletions of the batch's pruning, into `writes`: the config versions (pointer
    /// and blob) of each cluster up to its cut, those of this batch included (never
    /// written), and the oldest audit entries stored.
    fn prune(&mut self, writes: &mut Writes) -> Result<(), StoreError> {
        let corrupt = |e: String| StoreError::Corrupt(format!("etcd: {e}"));
        for (cluster, through) in std::mem::take(&mut self.prune_configs) {
            // Made and pruned by this batch: neither pointer nor blob is written.
            let made: Vec<(String, u64)> = self
                .configs
                .range((cluster.clone(), 0)..=(cluster.clone(), through))
                .map(|(key, _)| key.clone())
                .collect();
            for key in made {
                if let Some(revision) = self.configs.remove(&key) {
                    writes
                        .staged
                        .retain(|op| !staged_for(op, self.keys, revision));
                }
            }
            let start = self.keys.config(&cluster, 0);
            let mut end = self.keys.config(&cluster, through);
            end.push(0);
            let (_, stored) = (self.range)(start.clone(), end.clone(), i64::MAX)?;
            if stored.is_empty() {
                continue;
            }
            for (key, value) in &stored {
                let revision = parse_u64(value).ok_or_else(|| {
                    corrupt(format!(
                        "the config pointer {:?} is not a revision",
                        String::from_utf8_lossy(key)
                    ))
                })?;
                let blob = self.keys.blob(revision);
                let blob_end = prefix_end(&blob);
                writes.materialise.push(Op::DeleteRange(blob, blob_end));
            }
            writes.materialise.push(Op::DeleteRange(start, end));
        }
        if let Some(keep) = self.prune_audit.take() {
            let prefix = self.keys.audits();
            let (held, _) = (self.range)(prefix.clone(), prefix_end(&prefix), 1)?;
            let pending = self.audit.len() as u64;
            let excess = (held + pending)
                .saturating_sub(u64::try_from(keep).unwrap_or(u64::MAX))
                .min(held);
            if excess > 0 {
                let limit = i64::try_from(excess).unwrap_or(i64::MAX);
                let (_, oldest) = (self.range)(prefix.clone(), prefix_end(&prefix), limit)?;
                if let Some((last, _)) = oldest.last() {
                    let mut end = last.clone();
                    end.push(0);
                    writes.materialise.push(Op::DeleteRange(prefix, end));
                }
            }
        }
        Ok(())
    }
}

/// Whether `op` writes the blob of `revision` (its header or a part).
fn staged_for(op: &Op, keys: &Keys, revision: u64) -> bool {
    let blob = keys.blob(revision);
    match op {
        Op::Put(key, _) => key.starts_with(&blob),
        Op::Delete(_) | Op::DeleteRange(..) => false,
    }
}

/// A decimal number, written as this store writes them (no sign, no padding).
pub(super) fn parse_u64(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

impl Tables for Plan<'_> {
    fn proxy(&mut self, cluster: &str, proxy: &str) -> Result<Option<StoredProxy>, StoreError> {
        if let Some(pending) = self.proxies.get(&(cluster.to_owned(), proxy.to_owned())) {
            return Ok(pending.clone());
        }
        let Some(bytes) = self.stored(self.keys.proxy(cluster, proxy))? else {
            return Ok(None);
        };
        let corrupt = |e: String| StoreError::Corrupt(format!("etcd: {e}"));
        let record: ProxyRecord = decode(&bytes, "a proxy record").map_err(corrupt)?;
        record
            .into_stored(cluster.to_owned(), proxy.to_owned())
            .map(Some)
            .map_err(corrupt)
    }

    fn put_proxy(&mut self, proxy: StoredProxy) -> Result<(), StoreError> {
        self.proxies
            .insert((proxy.cluster.clone(), proxy.proxy.clone()), Some(proxy));
        Ok(())
    }

    fn delete_proxy(&mut self, cluster: &str, proxy: &str) -> Result<(), StoreError> {
        self.proxies
            .insert((cluster.to_owned(), proxy.to_owned()), None);
        Ok(())
    }

    fn put_config(&mut self, cluster: &str, config: &ConfigVersion) -> Result<(), StoreError> {
        let revision = self.current()?;
        let replaced = self
            .configs
            .insert((cluster.to_owned(), config.version), revision);
        if self.mode == Mode::Commit {
            // Replaced within the batch: its blob is never written.
            if let Some(replaced) = replaced {
                self.blobs.remove(&replaced);
            }
            let content = record::config_value(self.store_keys, cluster, config)
                .map_err(|e| StoreError::Io(format!("etcd: {e}")))?;
            self.blobs.insert(revision, content);
        }
        Ok(())
    }

    fn push_audit(&mut self, entry: AuditEntry) -> Result<(), StoreError> {
        let revision = self.current()?;
        let value = encode(&AuditRecordOut {
            at_unix_ms: entry.at_unix_ms,
            action: &entry.action,
        })
        .map_err(|e| StoreError::Io(format!("etcd: {e}")))?;
        self.audit.push((revision, value));
        Ok(())
    }

    fn prune_configs(&mut self, cluster: &str, through: u64) -> Result<(), StoreError> {
        let cut = self.prune_configs.entry(cluster.to_owned()).or_insert(0);
        *cut = (*cut).max(through);
        Ok(())
    }

    fn prune_audit(&mut self, keep: usize) -> Result<(), StoreError> {
        self.prune_audit = Some(keep);
        Ok(())
    }

    fn put_settings(
        &mut self,
        cluster: &str,
        settings: Option<&ClusterSettings>,
    ) -> Result<(), StoreError> {
        let value = settings
            .map(encode)
            .transpose()
            .map_err(|e| StoreError::Io(format!("etcd: {e}")))?;
        self.settings.insert(cluster.to_owned(), value);
        Ok(())
    }

    fn push_change(&mut self, change: &WallChange) -> Result<(), StoreError> {
        self.current = Some(change.revision);
        if self.mode == Mode::Commit {
            let value = encode(change).map_err(|e| StoreError::Io(format!("etcd: {e}")))?;
            self.log.push((change.revision, value));
        }
        Ok(())
    }

    fn rewound(&mut self, seen_epoch: u32) -> Result<(), StoreError> {
        // Repeating a committed batch: its commit point moved these already.
        if self.mode == Mode::Repair {
            return Ok(());
        }
        let old = self.new_generation.unwrap_or(self.generation);
        let generation = old
            .checked_add(1)
            .ok_or_else(|| StoreError::Corrupt("the generation cannot grow past u64".to_owned()))?
            .max(crate::store::redb::now_secs());
        self.new_generation = Some(generation);
        let epoch = self.new_epoch.unwrap_or(self.epoch).max(seen_epoch);
        if epoch != self.epoch {
            self.new_epoch = Some(epoch);
        }
        Ok(())
    }

    fn finish(&mut self, revision: u64, prune_through: u64) -> Result<(), StoreError> {
        self.finish = Some((revision, prune_through));
        Ok(())
    }
}
