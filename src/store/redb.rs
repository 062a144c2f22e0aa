//! The default store: a redb database file in the data directory.
//!
//! One file, `DIR/zerokeeper.redb` ([`FILE_NAME`]), written only in write transactions
//! with [`Durability::Immediate`] (durable when the commit returns) and quick-repair (the
//! allocator state is saved with every commit, with a two-phase commit). Every open
//! verifies the checksums of the whole file, so a damaged file is refused as
//! [`StoreError::Corrupt`] instead of being trusted (redb may panic reading a damaged
//! page); that costs a few milliseconds per 100,000 proxies, about as much as quick-repair
//! would save after a `kill -9`. redb holds a lock on the file while a [`RedbStore`] is
//! open: a second keeper on the same directory, in this process or another, gets
//! [`StoreError::InUse`].
//!
//! # Layout
//!
//! Every table maps bytes to bytes, so that nothing read from disk goes through a decoder
//! that panics (redb's own `&str` and integer types unwrap): keys are encoded here so
//! that they sort as the [`MemoryStore`](super::MemoryStore)'s maps do, and values are
//! postcard-encoded private records, decoded strictly (no trailing bytes).
//!
//! | table     | key                               | value                                      |
//! |-----------|-----------------------------------|--------------------------------------------|
//! | `meta`    | `format`, `epoch`, `revision`     | u64, u32, u64, big-endian                  |
//! | `proxies` | `esc(cluster) 00 00 proxy`        | `{incarnation, status: u8, since_unix_ms}` |
//! | `configs` | `esc(cluster) 00 00 version(BE)`  | `{base, datasources}` (every version)      |
//! | `audit`   | sequence number, u64 big-endian   | `{at_unix_ms, action}`                     |
//!
//! `esc` doubles as an order-preserving terminator: a NUL byte of the cluster is written
//! `00 FF`, and the cluster ends with `00 00`, so keys sort by cluster and then by proxy
//! (or version) exactly as `(String, String)` and `(String, u64)` tuples do, whatever the
//! bytes. Status is `0` ready, `1` up, `2` lost. A file whose `format` is not [`FORMAT`]
//! is refused as [`StoreError::Corrupt`] rather than misread.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition, TableHandle,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};

use super::{AuditEntry, Change, Snapshot, Store, StoreError, StoredConfig, StoredProxy};
use crate::keeper::Status;

/// The name of the database file inside the data directory.
pub const FILE_NAME: &str = "zerokeeper.redb";

/// The layout version this keeper writes and reads (the `format` entry of `meta`).
pub const FORMAT: u64 = 1;

/// The most memory redb may use to cache pages. redb's default is 1 GiB; a registry of
/// 100,000 proxies is a file of a few MiB, read in full once per boot.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

type Bytes = &'static [u8];

const META: TableDefinition<Bytes, Bytes> = TableDefinition::new("meta");
const PROXIES: TableDefinition<Bytes, Bytes> = TableDefinition::new("proxies");
const CONFIGS: TableDefinition<Bytes, Bytes> = TableDefinition::new("configs");
const AUDIT: TableDefinition<Bytes, Bytes> = TableDefinition::new("audit");

const FORMAT_KEY: &[u8] = b"format";
const EPOCH_KEY: &[u8] = b"epoch";
const REVISION_KEY: &[u8] = b"revision";

/// The value of a `proxies` entry (the key holds the cluster and the proxy).
#[derive(Serialize, Deserialize)]
struct ProxyRecord {
    incarnation: u64,
    status: u8,
    since_unix_ms: u64,
}

/// The value of a `configs` entry, as written (borrowed, to encode without copying).
#[derive(Serialize)]
struct ConfigRecordOut<'a> {
    base: &'a [u8],
    datasources: &'a BTreeMap<String, String>,
}

/// The value of a `configs` entry, as read.
#[derive(Deserialize)]
struct ConfigRecord {
    base: Vec<u8>,
    datasources: BTreeMap<String, String>,
}

/// The value of an `audit` entry, as written.
#[derive(Serialize)]
struct AuditRecordOut<'a> {
    at_unix_ms: u64,
    action: &'a str,
}

/// The value of an `audit` entry, as read.
#[derive(Deserialize)]
struct AuditRecord {
    at_unix_ms: u64,
    action: String,
}

/// The default [`Store`]: a crash-safe redb database file in the data directory.
///
/// Every [`boot`](Store::boot) and every non-empty [`commit`](Store::commit) is one write
/// transaction, durable when it returns. The current revision is cached, so
/// [`revision`](Store::revision) reads nothing.
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
    /// The database file, for error messages.
    path: PathBuf,
    /// The revision of the last commit, as stored.
    revision: u64,
}

impl RedbStore {
    /// Opens the store of the data directory `dir`, creating the directory and an empty
    /// store if there are none.
    ///
    /// Fails with [`StoreError::InUse`] while another [`RedbStore`] (in this process or
    /// another) has the same directory open; with [`StoreError::Corrupt`] if the file is not
    /// a redb database, not a zerokeeper store, or of another [`FORMAT`]; and with
    /// [`StoreError::Io`] if `dir` is not a directory or cannot be read or written. An
    /// existing file is never truncated or overwritten.
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        match fs::metadata(dir) {
            Ok(meta) if !meta.is_dir() => {
                return Err(StoreError::Io(format!(
                    "the data directory {} exists and is not a directory",
                    dir.display()
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Io(format!(
                        "cannot create the data directory {}: {e}",
                        dir.display()
                    ))
                })?;
            }
            Err(e) => {
                return Err(StoreError::Io(format!(
                    "cannot read the data directory {}: {e}",
                    dir.display()
                )));
            }
        }
        let path = dir.join(FILE_NAME);
        // Opening a FIFO would block, and a directory gives a vague error: refuse both here.
        match fs::metadata(&path) {
            Ok(meta) if !meta.is_file() => {
                return Err(StoreError::Io(format!(
                    "{} exists and is not a regular file",
                    path.display()
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::Io(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        }

        // `create` opens without truncating, initializes only an empty file, and refuses a
        // file that does not start with redb's magic number before writing anything.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            // Verify every page's checksum on open: a damaged file is then refused as
            // Corrupted, where redb would otherwise trust it and may panic reading it (and
            // with the two-phase commits of quick-repair, a damaged last commit is refused
            // rather than silently rolled back). It costs a few ms per 100,000 proxies.
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(fail(&path, "cannot open the store"))?;

        let txn = begin(&db, &path)?;
        let tables: Vec<String> = txn
            .list_tables()
            .map_err(fail(&path, "cannot list the tables"))?
            .map(|t| t.name().to_owned())
            .collect();
        let revision = if tables.is_empty() {
            {
                let mut meta = txn
                    .open_table(META)
                    .map_err(fail(&path, "cannot create meta"))?;
                put(&mut meta, FORMAT_KEY, &FORMAT.to_be_bytes(), &path)?;
                put(&mut meta, EPOCH_KEY, &0u32.to_be_bytes(), &path)?;
                put(&mut meta, REVISION_KEY, &0u64.to_be_bytes(), &path)?;
                for table in [PROXIES, CONFIGS, AUDIT] {
                    txn.open_table(table)
                        .map_err(fail(&path, "cannot create a table"))?;
                }
            }
            txn.commit()
                .map_err(fail(&path, "cannot initialize the store"))?;
            0
        } else if !tables.iter().any(|t| t == META.name()) {
            return Err(StoreError::Corrupt(format!(
                "{} is a redb database but not a zerokeeper store (its tables: {})",
                path.display(),
                tables.join(", ")
            )));
        } else {
            let revision = {
                let meta = txn
                    .open_table(META)
                    .map_err(fail(&path, "cannot open meta"))?;
                let format = get_u64(&meta, FORMAT_KEY, &path)?;
                if format != FORMAT {
                    return Err(StoreError::Corrupt(format!(
                        "{} has store format {format}; this keeper reads format {FORMAT} only",
                        path.display()
                    )));
                }
                get_u32(&meta, EPOCH_KEY, &path)?;
                let revision = get_u64(&meta, REVISION_KEY, &path)?;
                // A table of another type is refused here, not at the first commit.
                for table in [PROXIES, CONFIGS, AUDIT] {
                    txn.open_table(table)
                        .map_err(fail(&path, "cannot open a table"))?;
                }
                revision
            };
            txn.abort()
                .map_err(fail(&path, "cannot end the opening transaction"))?;
            revision
        };
        Ok(RedbStore { db, path, revision })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Store for RedbStore {
    fn boot(&mut self) -> Result<Snapshot, StoreError> {
        let path = &self.path;
        let txn = begin(&self.db, path)?;
        let snapshot = {
            let mut meta = txn
                .open_table(META)
                .map_err(fail(path, "cannot open meta"))?;
            let epoch = get_u32(&meta, EPOCH_KEY, path)?
                .checked_add(1)
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "{}: the epoch cannot grow past u32",
                        path.display()
                    ))
                })?;
            put(&mut meta, EPOCH_KEY, &epoch.to_be_bytes(), path)?;
            let revision = get_u64(&meta, REVISION_KEY, path)?;
            let proxies = txn
                .open_table(PROXIES)
                .map_err(fail(path, "cannot open proxies"))?;
            let configs = txn
                .open_table(CONFIGS)
                .map_err(fail(path, "cannot open configs"))?;
            Snapshot {
                epoch,
                revision,
                proxies: read_proxies(&proxies, path)?,
                configs: read_latest_configs(&configs, path)?,
            }
        };
        txn.commit()
            .map_err(fail(path, "cannot commit the new epoch"))?;
        self.revision = snapshot.revision;
        Ok(snapshot)
    }

    fn commit(&mut self, changes: &[Change]) -> Result<u64, StoreError> {
        if changes.is_empty() {
            return Ok(self.revision);
        }
        let path = &self.path;
        let txn = begin(&self.db, path)?;
        let revision = {
            let mut meta = txn
                .open_table(META)
                .map_err(fail(path, "cannot open meta"))?;
            let mut proxies = txn
                .open_table(PROXIES)
                .map_err(fail(path, "cannot open proxies"))?;
            let mut configs = txn
                .open_table(CONFIGS)
                .map_err(fail(path, "cannot open configs"))?;
            let mut audit = txn
                .open_table(AUDIT)
                .map_err(fail(path, "cannot open audit"))?;
            let mut next_audit = match audit.last().map_err(fail(path, "cannot read audit"))? {
                None => 0,
                Some((key, _)) => decode_sequence(key.value(), path)?
                    .checked_add(1)
                    .ok_or_else(|| corrupt(path, "the audit sequence is exhausted"))?,
            };
            let mut key = Vec::new();
            for change in changes {
                match change {
                    Change::PutProxy(p) => {
                        proxy_key(&mut key, &p.cluster, &p.proxy);
                        let value = encode(
                            &ProxyRecord {
                                incarnation: p.incarnation,
                                status: status_code(p.status),
                                since_unix_ms: p.since_unix_ms,
                            },
                            path,
                        )?;
                        put(&mut proxies, &key, &value, path)?;
                    }
                    Change::DeleteProxy { cluster, proxy } => {
                        proxy_key(&mut key, cluster, proxy);
                        proxies
                            .remove(key.as_slice())
                            .map_err(fail(path, "cannot delete a proxy"))?;
                    }
                    Change::PutConfig(c) => {
                        config_key(&mut key, &c.cluster, c.version);
                        let value = encode(
                            &ConfigRecordOut {
                                base: &c.base,
                                datasources: &c.datasources,
                            },
                            path,
                        )?;
                        put(&mut configs, &key, &value, path)?;
                    }
                    Change::Audit(entry) => {
                        let value = encode(
                            &AuditRecordOut {
                                at_unix_ms: entry.at_unix_ms,
                                action: &entry.action,
                            },
                            path,
                        )?;
                        put(&mut audit, &next_audit.to_be_bytes(), &value, path)?;
                        next_audit = next_audit
                            .checked_add(1)
                            .ok_or_else(|| corrupt(path, "the audit sequence is exhausted"))?;
                    }
                }
            }
            let revision = get_u64(&meta, REVISION_KEY, path)?
                .checked_add(1)
                .ok_or_else(|| corrupt(path, "the revision cannot grow past u64"))?;
            put(&mut meta, REVISION_KEY, &revision.to_be_bytes(), path)?;
            revision
        };
        // On any error above, dropping `txn` aborts it: nothing of the batch is stored.
        txn.commit().map_err(fail(path, "cannot commit"))?;
        self.revision = revision;
        Ok(revision)
    }

    fn revision(&self) -> u64 {
        self.revision
    }

    fn audit(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let path = &self.path;
        let txn = self
            .db
            .begin_read()
            .map_err(fail(path, "cannot begin a read"))?;
        let table = txn
            .open_table(AUDIT)
            .map_err(fail(path, "cannot open audit"))?;
        let mut entries = Vec::new();
        for entry in table.iter().map_err(fail(path, "cannot read audit"))? {
            let (key, value) = entry.map_err(fail(path, "cannot read audit"))?;
            decode_sequence(key.value(), path)?;
            let record: AuditRecord = decode(value.value(), path, "an audit entry")?;
            entries.push(AuditEntry {
                at_unix_ms: record.at_unix_ms,
                action: record.action,
            });
        }
        Ok(entries)
    }
}

/// Begins a write transaction that is durable when it commits and saves the allocator
/// state (quick-repair is a property of each write transaction in redb 4, not of the file).
fn begin(db: &Database, path: &Path) -> Result<WriteTransaction, StoreError> {
    let mut txn = db
        .begin_write()
        .map_err(fail(path, "cannot begin a write"))?;
    txn.set_durability(Durability::Immediate)
        .map_err(fail(path, "cannot make the write durable"))?;
    txn.set_quick_repair(true);
    Ok(txn)
}

/// Maps a redb error to a [`StoreError`] that names the file and what was being done.
fn fail<E: Into<redb::Error>>(
    path: &Path,
    doing: &'static str,
) -> impl FnOnce(E) -> StoreError + use<E> {
    let path = path.display().to_string();
    move |err| {
        let err: redb::Error = err.into();
        let message = format!("{path}: {doing}: {err}");
        match err {
            redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
                StoreError::InUse(message)
            }
            // redb reports a file that is not a database as InvalidData.
            redb::Error::Io(e) if e.kind() == io::ErrorKind::InvalidData => {
                StoreError::Corrupt(message)
            }
            redb::Error::Corrupted(_)
            | redb::Error::UpgradeRequired(_)
            | redb::Error::RepairAborted
            | redb::Error::TableTypeMismatch { .. }
            | redb::Error::TypeDefinitionChanged { .. }
            | redb::Error::TableIsMultimap(_)
            | redb::Error::TableIsNotMultimap(_) => StoreError::Corrupt(message),
            _ => StoreError::Io(message),
        }
    }
}

fn corrupt(path: &Path, what: &str) -> StoreError {
    StoreError::Corrupt(format!("{}: {what}", path.display()))
}

fn put(
    table: &mut Table<'_, Bytes, Bytes>,
    key: &[u8],
    value: &[u8],
    path: &Path,
) -> Result<(), StoreError> {
    table
        .insert(key, value)
        .map_err(fail(path, "cannot write"))?;
    Ok(())
}

fn get_raw<const N: usize>(
    table: &Table<'_, Bytes, Bytes>,
    key: &[u8],
    path: &Path,
) -> Result<[u8; N], StoreError> {
    let name = String::from_utf8_lossy(key);
    let guard = table
        .get(key)
        .map_err(fail(path, "cannot read meta"))?
        .ok_or_else(|| corrupt(path, &format!("meta has no {name}")))?;
    <[u8; N]>::try_from(guard.value())
        .map_err(|_| corrupt(path, &format!("meta's {name} is not {N} bytes long")))
}

fn get_u64(table: &Table<'_, Bytes, Bytes>, key: &[u8], path: &Path) -> Result<u64, StoreError> {
    get_raw(table, key, path).map(u64::from_be_bytes)
}

fn get_u32(table: &Table<'_, Bytes, Bytes>, key: &[u8], path: &Path) -> Result<u32, StoreError> {
    get_raw(table, key, path).map(u32::from_be_bytes)
}

fn encode<T: Serialize>(value: &T, path: &Path) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value)
        .map_err(|e| StoreError::Io(format!("{}: cannot encode a value: {e}", path.display())))
}

/// Decodes a whole value: trailing bytes are corruption, not padding.
fn decode<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    path: &Path,
    what: &str,
) -> Result<T, StoreError> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(corrupt(
            path,
            &format!("{what} has {} trailing bytes", rest.len()),
        )),
        Err(e) => Err(corrupt(path, &format!("{what} cannot be decoded: {e}"))),
    }
}

fn decode_sequence(key: &[u8], path: &Path) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt(path, "an audit key is not 8 bytes long"))
}

fn status_code(status: Status) -> u8 {
    match status {
        Status::Ready => 0,
        Status::Up => 1,
        Status::Lost => 2,
    }
}

fn status_from_code(code: u8, path: &Path) -> Result<Status, StoreError> {
    match code {
        0 => Ok(Status::Ready),
        1 => Ok(Status::Up),
        2 => Ok(Status::Lost),
        other => Err(corrupt(path, &format!("unknown proxy status {other}"))),
    }
}

/// Writes the cluster into `key` (after clearing it) so that keys sort by cluster first:
/// NUL is escaped as `00 FF` and the cluster ends with `00 00`, which sorts below any
/// continuation of it.
fn cluster_prefix(key: &mut Vec<u8>, cluster: &str) {
    key.clear();
    for &b in cluster.as_bytes() {
        key.push(b);
        if b == 0 {
            key.push(0xFF);
        }
    }
    key.extend_from_slice(&[0, 0]);
}

fn proxy_key(key: &mut Vec<u8>, cluster: &str, proxy: &str) {
    cluster_prefix(key, cluster);
    key.extend_from_slice(proxy.as_bytes());
}

fn config_key(key: &mut Vec<u8>, cluster: &str, version: u64) {
    cluster_prefix(key, cluster);
    key.extend_from_slice(&version.to_be_bytes());
}

/// Splits a key into its cluster (still escaped, without the terminator) and the rest.
fn split_key<'k>(key: &'k [u8], path: &Path) -> Result<(&'k [u8], &'k [u8]), StoreError> {
    let mut i = 0;
    while i < key.len() {
        if key[i] == 0 {
            match key.get(i + 1) {
                Some(0) => return Ok((&key[..i], &key[i + 2..])),
                Some(0xFF) => i += 2,
                _ => return Err(corrupt(path, "a key has a bad cluster escape")),
            }
        } else {
            i += 1;
        }
    }
    Err(corrupt(path, "a key has no cluster terminator"))
}

fn unescape_cluster(escaped: &[u8], path: &Path) -> Result<String, StoreError> {
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut i = 0;
    while i < escaped.len() {
        bytes.push(escaped[i]);
        // split_key only returns well-formed escapes: a NUL is always followed by 0xFF.
        i += if escaped[i] == 0 { 2 } else { 1 };
    }
    String::from_utf8(bytes).map_err(|_| corrupt(path, "a cluster name is not UTF-8"))
}

fn read_proxies(
    table: &Table<'_, Bytes, Bytes>,
    path: &Path,
) -> Result<Vec<StoredProxy>, StoreError> {
    let mut proxies = Vec::new();
    // Consecutive proxies share their cluster: decode its name once per cluster.
    let mut cluster: Option<(Vec<u8>, String)> = None;
    for entry in table.iter().map_err(fail(path, "cannot read proxies"))? {
        let (key, value) = entry.map_err(fail(path, "cannot read proxies"))?;
        let key = key.value();
        let (escaped, proxy) = split_key(key, path)?;
        let name = match &cluster {
            Some((last, name)) if last.as_slice() == escaped => name.clone(),
            _ => {
                let name = unescape_cluster(escaped, path)?;
                cluster = Some((escaped.to_vec(), name.clone()));
                name
            }
        };
        let proxy = std::str::from_utf8(proxy)
            .map_err(|_| corrupt(path, "a proxy identity is not UTF-8"))?
            .to_owned();
        let record: ProxyRecord = decode(value.value(), path, "a proxy entry")?;
        proxies.push(StoredProxy {
            cluster: name,
            proxy,
            incarnation: record.incarnation,
            status: status_from_code(record.status, path)?,
            since_unix_ms: record.since_unix_ms,
        });
    }
    Ok(proxies)
}

/// The latest version of every cluster's config, sorted by cluster: walks the table
/// backwards and decodes only the first (highest) version of each cluster.
fn read_latest_configs(
    table: &Table<'_, Bytes, Bytes>,
    path: &Path,
) -> Result<Vec<StoredConfig>, StoreError> {
    let mut configs = Vec::new();
    let mut last: Option<Vec<u8>> = None;
    for entry in table
        .iter()
        .map_err(fail(path, "cannot read configs"))?
        .rev()
    {
        let (key, value) = entry.map_err(fail(path, "cannot read configs"))?;
        let (escaped, version) = split_key(key.value(), path)?;
        let version = <[u8; 8]>::try_from(version)
            .map(u64::from_be_bytes)
            .map_err(|_| corrupt(path, "a config key has no 8-byte version"))?;
        if last.as_deref() == Some(escaped) {
            continue;
        }
        last = Some(escaped.to_vec());
        let record: ConfigRecord = decode(value.value(), path, "a config version")?;
        configs.push(StoredConfig {
            cluster: unescape_cluster(escaped, path)?,
            version,
            base: record.base,
            datasources: record.datasources,
        });
    }
    configs.reverse();
    Ok(configs)
}
