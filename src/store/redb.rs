//! The default store: a redb database file in the data directory.
//!
//! One file, `DIR/zerokeeper.redb` ([`FILE_NAME`]), written only in write transactions
//! with [`Durability::Immediate`] (durable when the commit returns) and quick-repair (the
//! allocator state is saved with every commit, with a two-phase commit). Every open of an
//! existing file verifies the checksums of the whole file (once, in the probe below), so a
//! damaged file is refused as [`StoreError::Corrupt`] instead of being trusted (redb may
//! panic reading a damaged page); that costs a few milliseconds per 100,000 proxies. redb
//! holds a lock on the file while a [`RedbStore`] is open: a second keeper on the same
//! directory, in this process or another, gets [`StoreError::InUse`].
//!
//! # Opening without writing
//!
//! redb writes to a file as it opens it (a verifying open is a repair, which commits), so
//! an existing file is first *probed*: opened and verified through a backend that reads
//! the file, keeps redb's writes in memory, and takes redb's locks on the file. Only a file
//! the probe found to be a zerokeeper store of a schema this keeper reads (or an empty redb
//! database) is then opened for real. A file that is not a redb database, a redb database
//! of another application, a damaged one, or a store of a newer schema is refused with its
//! bytes unchanged. An existing file too short to hold a redb header (an empty one
//! included) is refused before redb sees it: redb would initialize it as a new database.
//!
//! # Layout (schema 3)
//!
//! Every table maps bytes to bytes, so that nothing read from disk goes through a decoder
//! that panics (redb's own `&str` and integer types unwrap): keys are encoded here so
//! that they sort as the [`MemoryStore`](super::MemoryStore)'s maps do, and values are
//! postcard-encoded, decoded strictly (no trailing bytes).
//!
//! | table     | key                              | value                                 |
//! |-----------|----------------------------------|---------------------------------------|
//! | `meta`    | `format`, `epoch`, `revision`, `generation` | u64, u32, u64, u64, big-endian |
//! | `proxies` | `esc(cluster) 00 00 proxy`       | a proxy record (below)                |
//! | `configs` | `esc(cluster) 00 00 version(BE)` | `{base, datasources}` in an envelope (every version) |
//! | `audit`   | sequence number, u64 big-endian  | `{at_unix_ms, action}`                |
//! | `changes` | revision, u64 big-endian         | the [`WallChange`]                    |
//! | `clusters` | `esc(cluster) 00 00`            | the cluster's settings (hostgroups, frozen, removal markers) |
//!
//! A proxy record is `{incarnation, status: u8, since_unix_ms: Option<u64>,
//! last_heartbeat_unix_ms: Option<u64>, source: Option<SocketAddr>, config_version}`.
//! `format` is the **schema version** ([`FORMAT`]; the key kept its first name). `esc`
//! doubles as an order-preserving terminator: a NUL byte of the cluster is written `00 FF`,
//! and the cluster ends with `00 00`, so keys sort by cluster and then by proxy (or
//! version) exactly as `(String, String)` and `(String, u64)` tuples do, whatever the
//! bytes. Status is `0` ready, `1` up, `2` lost. `changes` holds the retained log:
//! consecutive revisions, the last one being meta's `revision`. A config value is the
//! record in an envelope ([`seal`]): `00` and the record, or, with a store
//! key, `01` and the record sealed with AES-256-GCM under it; a store opened with keys
//! seals whatever is not sealed under the first of them as it opens.
//!
//! # Schemas
//!
//! - **1** (zerokeeper up to f107432): `meta` without `generation`, proxies as
//!   `{incarnation, status: u8, since_unix_ms: u64}`, no `changes`; one revision per
//!   commit. Opened, it is migrated in place in one write transaction: every proxy
//!   rewritten (the since kept, nothing else known), a generation made, an empty log, and
//!   the epoch and revision kept.
//! - **2** (zerokeeper up to 261a164): the layout above with each config value the bare
//!   record; one revision per change. Opened, every config value goes into an envelope
//!   (sealed, if the keeper has a store key) in one write transaction.
//! - **3**: the layout above. (`clusters` came later within schema 3: a store without
//!   it has no settings, and the first write transaction creates it.)
//! - **4 and later**: refused as [`StoreError::TooNew`], unchanged. Anything else is
//!   [`StoreError::Corrupt`].

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

mod snapshot;

pub use snapshot::{SnapshotSummary, restore as restore_snapshot, status as snapshot_status};

use redb::backends::FileBackend;
use redb::{
    BackendError, Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    StorageBackend, Table, TableDefinition, TableHandle, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use super::record::{self, AuditRecord, AuditRecordOut, ConfigReadError, ProxyRecord};
use super::seal::{self, Sealing, StoreKeys};
use super::{
    AuditEntry, DEFAULT_RETENTION, History, Snapshot, Store, StoreError, StoreRead, StoredConfig,
    StoredProxy, Tables, WallChange, apply, check_batch, next_epoch,
};
use crate::configdoc::ConfigVersion;
use crate::keeper::change::ConfigBlob;
use crate::keeper::{ClusterSettings, Status};

/// The name of the database file inside the data directory.
pub const FILE_NAME: &str = "zerokeeper.redb";

/// The schema version this keeper writes, and the newest it reads (the `format` entry of
/// `meta`). It reads schemas 1 and 2 too, by migrating them.
pub const FORMAT: u64 = 3;

/// The most memory redb may use to cache pages. redb's default is 1 GiB; a registry of
/// 100,000 proxies is a file of a few MiB, read in full once per boot.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The size of a redb file's header: a shorter file is not a redb database.
const REDB_HEADER_BYTES: u64 = 320;

type Bytes = &'static [u8];

const META: TableDefinition<Bytes, Bytes> = TableDefinition::new("meta");
const PROXIES: TableDefinition<Bytes, Bytes> = TableDefinition::new("proxies");
const CONFIGS: TableDefinition<Bytes, Bytes> = TableDefinition::new("configs");
const AUDIT: TableDefinition<Bytes, Bytes> = TableDefinition::new("audit");
const CHANGES: TableDefinition<Bytes, Bytes> = TableDefinition::new("changes");
const CLUSTERS: TableDefinition<Bytes, Bytes> = TableDefinition::new("clusters");

const FORMAT_KEY: &[u8] = b"format";
const EPOCH_KEY: &[u8] = b"epoch";
const REVISION_KEY: &[u8] = b"revision";
const GENERATION_KEY: &[u8] = b"generation";

/// The value of a `proxies` entry in schema 1.
#[derive(Deserialize)]
struct ProxyRecordV1 {
    incarnation: u64,
    status: u8,
    since_unix_ms: u64,
}

/// The default [`Store`]: a crash-safe redb database file in the data directory.
///
/// Every [`boot`](Store::boot) and every non-empty [`commit`](Store::commit) is one write
/// transaction, durable when it returns. The revision and the generation are cached, so
/// [`revision`](Store::revision) and [`generation`](Store::generation) read nothing.
#[derive(Debug)]
pub struct RedbStore {
    /// Shared with the [`reader`](Store::reader)s, which hold it weakly: they read while
    /// this handle commits, and stop reading once it is dropped.
    db: Arc<Database>,
    /// The database file, for error messages.
    path: PathBuf,
    /// The revision of the last change committed, as stored.
    revision: u64,
    /// The generation, as stored.
    generation: u64,
    /// How many changes the log keeps.
    retention: usize,
    /// How many config versions and audit entries it keeps.
    history: History,
    /// The store keys configs are sealed under (`None`: stored plain).
    keys: Option<StoreKeys>,
}

impl RedbStore {
    /// Opens the store of the data directory `dir`, creating the directory and an empty
    /// store if there are none, and migrating a store of schema 1 in place.
    ///
    /// Fails with [`StoreError::InUse`] while another [`RedbStore`] (in this process or
    /// another) has the same directory open; with [`StoreError::TooNew`] if the store has a
    /// schema newer than [`FORMAT`]; with [`StoreError::Corrupt`] if the file is not a redb
    /// database (an empty file included), not a zerokeeper store, damaged or inconsistent;
    /// and with [`StoreError::Io`] if `dir` is not a directory or cannot be read or
    /// written. A file that is refused is left as it was, byte for byte; an existing file
    /// is never truncated or overwritten.
    ///
    /// A directory it creates is `0700` and a store file it creates `0600`: configs are
    /// credentials. An existing store file that others may read is made `0600` (with a
    /// warning); an existing directory that others may enter is only warned about.
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        RedbStore::open_sealed(dir, None)
    }

    /// Opens the store of `dir` as [`open`](RedbStore::open) does, with configs sealed at
    /// rest under `keys` ([`seal`]): every config version that is plain, or sealed under
    /// another key than the first of `keys`, is sealed under it in the opening transaction
    /// (a store migrated from schema 2 has them all plain).
    ///
    /// Without keys, configs are stored plain (a warning says how many); a store that
    /// holds configs sealed under a key not given is refused with [`StoreError::Sealed`],
    /// unchanged.
    pub fn open_sealed(dir: &Path, keys: Option<StoreKeys>) -> Result<RedbStore, StoreError> {
        match fs::metadata(dir) {
            Ok(meta) if !meta.is_dir() => {
                return Err(StoreError::Io(format!(
                    "the data directory {} exists and is not a directory",
                    dir.display()
                )));
            }
            Ok(meta) => {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        dir = %dir.display(),
                        mode = format!("{:o}", meta.permissions().mode() & 0o777),
                        "the data directory is open to other users; the store holds configs, which are credentials: chmod 700 it"
                    );
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Configs are credentials: the directory is its owner's alone.
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| {
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
        let exists = match fs::metadata(&path) {
            Ok(meta) if !meta.is_file() => {
                return Err(StoreError::Io(format!(
                    "{} exists and is not a regular file",
                    path.display()
                )));
            }
            Ok(meta) if meta.len() < REDB_HEADER_BYTES => {
                // redb would initialize an empty file as a new database: a store that was
                // truncated (or never written) must not come back as an empty registry.
                return Err(StoreError::Corrupt(format!(
                    "{} is {} bytes long, shorter than a redb header ({REDB_HEADER_BYTES} \
                     bytes): not a redb database, and not initialized as a new store \
                     because it exists (remove it to start an empty store)",
                    path.display(),
                    meta.len()
                )));
            }
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                return Err(StoreError::Io(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        if exists {
            probe(&path)?;
        }

        let mut builder = Database::builder();
        builder
            .set_cache_size(CACHE_BYTES)
            // The probe has just verified every page's checksum, and a file created now has
            // nothing to verify: verifying again would double the cost of every start.
            .set_check_integrity_on_open(false);
        // `open` refuses an empty file; `create` opens without truncating, initializes only
        // an empty file, and refuses a file that does not start with redb's magic number.
        let db = if exists {
            builder.open(&path)
        } else {
            builder.create(&path)
        }
        .map_err(fail(&path, "cannot open the store"))?;
        // Private before anything but redb's header is in it. (Created private up front,
        // a crash before redb initialized it would leave an empty file, which is refused
        // as a truncated store; the directory, 0700 when the keeper makes it, keeps others
        // from opening the file in between.)
        make_private(&path, exists)?;

        let txn = begin(&db, &path)?;
        let tables = table_names(&txn, &path)?;
        let (revision, generation) = if tables.is_empty() {
            let generation = now_secs();
            {
                let mut meta = txn
                    .open_table(META)
                    .map_err(fail(&path, "cannot create meta"))?;
                put(&mut meta, FORMAT_KEY, &FORMAT.to_be_bytes(), &path)?;
                put(&mut meta, EPOCH_KEY, &0u32.to_be_bytes(), &path)?;
                put(&mut meta, REVISION_KEY, &0u64.to_be_bytes(), &path)?;
                put(&mut meta, GENERATION_KEY, &generation.to_be_bytes(), &path)?;
                for table in [PROXIES, CONFIGS, AUDIT, CHANGES] {
                    txn.open_table(table)
                        .map_err(fail(&path, "cannot create a table"))?;
                }
            }
            txn.commit()
                .map_err(fail(&path, "cannot initialize the store"))?;
            (0, generation)
        } else {
            let format = {
                let meta = open_meta(&txn, &tables, &path)?;
                get_u64(&meta, FORMAT_KEY, &path)?
            };
            let schema = schema(format, &path)?;
            let found = if schema == 1 {
                migrate_v1(&txn, &path)?
            } else {
                check_v2(&txn, &path)?
            };
            // Schemas 1 and 2 hold bare config records; 3 holds envelopes.
            let resealed = seal_configs(&txn, keys.as_ref(), schema < 3, &path)?;
            if schema < 3 {
                let mut meta = txn
                    .open_table(META)
                    .map_err(fail(&path, "cannot open meta"))?;
                put(&mut meta, FORMAT_KEY, &FORMAT.to_be_bytes(), &path)?;
                tracing::info!(
                    path = %path.display(),
                    configs = resealed.rewritten,
                    sealed = keys.is_some(),
                    "migrated the store from schema {schema} to schema {FORMAT}"
                );
            } else if resealed.rewritten > 0 {
                tracing::info!(
                    path = %path.display(),
                    configs = resealed.rewritten,
                    key = format!("{:08x}", keys.as_ref().map_or(0, |k| k.sealing().id())),
                    "sealed config versions at rest under the current store key"
                );
            }
            if resealed.plain > 0 {
                tracing::warn!(
                    path = %path.display(),
                    configs = resealed.plain,
                    "config versions are stored in plaintext, and configs are credentials: \
                     give --store-key-file to seal them at rest"
                );
            }
            if schema < 3 || resealed.rewritten > 0 {
                txn.commit()
                    .map_err(fail(&path, "cannot commit the migration"))?;
            } else {
                txn.abort()
                    .map_err(fail(&path, "cannot end the opening transaction"))?;
            }
            found
        };
        Ok(RedbStore {
            db: Arc::new(db),
            path,
            revision,
            generation,
            retention: DEFAULT_RETENTION,
            history: History::DEFAULT,
            keys,
        })
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
            let epoch = next_epoch(get_u32(&meta, EPOCH_KEY, path)?)
                .ok_or_else(|| corrupt(path, "the epoch cannot grow past u32"))?;
            put(&mut meta, EPOCH_KEY, &epoch.to_be_bytes(), path)?;
            let revision = get_u64(&meta, REVISION_KEY, path)?;
            let generation = get_u64(&meta, GENERATION_KEY, path)?;
            // A store written by `snapshot restore` says so once, to its first boot.
            let restored = meta
                .remove(snapshot::RESTORED_KEY)
                .map_err(fail(path, "cannot write meta"))?
                .is_some();
            let proxies = txn
                .open_table(PROXIES)
                .map_err(fail(path, "cannot open proxies"))?;
            let configs = txn
                .open_table(CONFIGS)
                .map_err(fail(path, "cannot open configs"))?;
            let changes = txn
                .open_table(CHANGES)
                .map_err(fail(path, "cannot open changes"))?;
            let clusters = txn
                .open_table(CLUSTERS)
                .map_err(fail(path, "cannot open clusters"))?;
            let recent = read_changes(&changes, 0, usize::MAX, path)?;
            let oldest_retained = recent.first().map_or(revision + 1, |c| c.revision);
            Snapshot {
                epoch,
                generation,
                revision,
                oldest_retained,
                proxies: read_proxies(&proxies, path)?,
                configs: read_latest_configs(&configs, self.keys.as_ref(), path)?,
                clusters: read_settings(&clusters, path)?,
                recent,
                restored,
            }
        };
        txn.commit()
            .map_err(fail(path, "cannot commit the new epoch"))?;
        self.revision = snapshot.revision;
        self.generation = snapshot.generation;
        Ok(snapshot)
    }

    fn commit(&mut self, changes: &[WallChange], blobs: &[ConfigBlob]) -> Result<(), StoreError> {
        let Some(last) = changes.last() else {
            return Ok(());
        };
        check_batch(self.revision, changes, blobs)?;
        let path = &self.path;
        let txn = begin(&self.db, path)?;
        let generation = {
            let mut tables = TxnTables::open(&txn, path, self.keys.as_ref())?;
            let stored = get_u64(&tables.meta, REVISION_KEY, path)?;
            if stored != self.revision {
                return Err(corrupt(
                    path,
                    &format!(
                        "meta's revision is {stored}, not {}, the last this store committed",
                        self.revision
                    ),
                ));
            }
            apply(&mut tables, changes, blobs, self.retention, self.history)?;
            tables.generation
        };
        // On any error above, dropping `txn` aborts it: nothing of the batch is stored.
        txn.commit().map_err(fail(path, "cannot commit"))?;
        self.revision = last.revision;
        if let Some(generation) = generation {
            self.generation = generation;
        }
        Ok(())
    }

    fn revision(&self) -> u64 {
        self.revision
    }

    fn generation(&self) -> u64 {
        self.generation
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
            decode_u64_key(key.value(), path, "an audit key")?;
            let record: AuditRecord = decode(value.value(), path, "an audit entry")?;
            entries.push(AuditEntry {
                at_unix_ms: record.at_unix_ms,
                action: record.action,
            });
        }
        Ok(entries)
    }

    fn reader(&self) -> Result<Arc<dyn StoreRead>, StoreError> {
        Ok(Arc::new(RedbReader {
            db: Arc::downgrade(&self.db),
            path: self.path.clone(),
            keys: self.keys.clone(),
        }))
    }

    fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<WallChange>, StoreError> {
        let path = &self.path;
        let Some(from) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let txn = self
            .db
            .begin_read()
            .map_err(fail(path, "cannot begin a read"))?;
        let table = txn
            .open_table(CHANGES)
            .map_err(fail(path, "cannot open changes"))?;
        read_changes(&table, from, limit, path)
    }

    fn set_retention(&mut self, changes: usize) {
        self.retention = changes;
    }

    fn set_history(&mut self, history: History) {
        self.history = history;
    }
}

// ----- Opening: probe, schema, migration -----

/// Checks, without writing to it, that the existing file at `path` is one this keeper may
/// open for writing: a zerokeeper store of a schema it reads, or an empty redb database.
///
/// redb opens, verifies and repairs the file through an [`Overlay`], so the repair's
/// writes never reach the file, and takes its usual locks on the file (a held store is
/// [`StoreError::InUse`], as with the real open).
fn probe(path: &Path) -> Result<(), StoreError> {
    // Read and write access, as redb's own open has: an exclusive lock needs it.
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| StoreError::Io(format!("cannot open {}: {e}", path.display())))?;
    let backend = FileBackend::new(file).map_err(fail(path, "cannot open the store"))?;
    let overlay = Overlay::new(backend).map_err(|e| {
        StoreError::Io(format!("cannot read the length of {}: {e}", path.display()))
    })?;
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        // Verify every page's checksum: a damaged file is then refused as Corrupted, where
        // redb would otherwise trust it and may panic reading it (and with the two-phase
        // commits of quick-repair, a damaged last commit is refused rather than silently
        // rolled back). It costs a few ms per 100,000 proxies.
        .set_check_integrity_on_open(true)
        .create_with_backend(overlay)
        .map_err(fail(path, "cannot open the store"))?;
    let txn = db.begin_read().map_err(fail(path, "cannot begin a read"))?;
    let tables: Vec<String> = txn
        .list_tables()
        .map_err(fail(path, "cannot list the tables"))?
        .map(|t| t.name().to_owned())
        .collect();
    if tables.is_empty() {
        return Ok(());
    }
    if !tables.iter().any(|t| t == META.name()) {
        return Err(not_a_store(path, &tables));
    }
    let meta = txn
        .open_table(META)
        .map_err(fail(path, "cannot open meta"))?;
    let format = read_u64(&meta, FORMAT_KEY, path)?;
    schema(format, path).map(drop)
}

/// The schema of a file whose meta says `format`, if this keeper reads it.
fn schema(format: u64, path: &Path) -> Result<u64, StoreError> {
    match format {
        1..=FORMAT => Ok(format),
        newer if newer > FORMAT => Err(StoreError::TooNew(format!(
            "{} has store schema {newer}; this keeper reads schemas up to {FORMAT}: upgrade \
             zerokeeper",
            path.display()
        ))),
        other => Err(corrupt(path, &format!("unknown store schema {other}"))),
    }
}

fn table_names(txn: &WriteTransaction, path: &Path) -> Result<Vec<String>, StoreError> {
    Ok(txn
        .list_tables()
        .map_err(fail(path, "cannot list the tables"))?
        .map(|t| t.name().to_owned())
        .collect())
}

fn not_a_store(path: &Path, tables: &[String]) -> StoreError {
    StoreError::Corrupt(format!(
        "{} is a redb database but not a zerokeeper store (its tables: {})",
        path.display(),
        tables.join(", ")
    ))
}

fn open_meta<'t>(
    txn: &'t WriteTransaction,
    tables: &[String],
    path: &Path,
) -> Result<Table<'t, Bytes, Bytes>, StoreError> {
    if !tables.iter().any(|t| t == META.name()) {
        return Err(not_a_store(path, tables));
    }
    txn.open_table(META).map_err(fail(path, "cannot open meta"))
}

/// Checks a store of schema 2 or 3 (meta complete, every table of the right type, the log
/// ending at meta's revision); returns its revision and generation.
fn check_v2(txn: &WriteTransaction, path: &Path) -> Result<(u64, u64), StoreError> {
    let (revision, generation) = {
        let meta = txn
            .open_table(META)
            .map_err(fail(path, "cannot open meta"))?;
        get_u32(&meta, EPOCH_KEY, path)?;
        (
            get_u64(&meta, REVISION_KEY, path)?,
            get_u64(&meta, GENERATION_KEY, path)?,
        )
    };
    // A table of another type is refused here, not at the first commit.
    for table in [PROXIES, CONFIGS, AUDIT] {
        txn.open_table(table)
            .map_err(fail(path, "cannot open a table"))?;
    }
    let changes = txn
        .open_table(CHANGES)
        .map_err(fail(path, "cannot open changes"))?;
    if let Some((key, _)) = changes.last().map_err(fail(path, "cannot read changes"))? {
        let last = decode_u64_key(key.value(), path, "a change key")?;
        if last != revision {
            return Err(corrupt(
                path,
                &format!("the log ends at revision {last}, but meta's revision is {revision}"),
            ));
        }
    }
    Ok((revision, generation))
}

/// Migrates a store of schema 1 to schema 2 inside `txn` (the caller commits it, after
/// [`seal_configs`] and the schema bump); returns its revision and new generation.
fn migrate_v1(txn: &WriteTransaction, path: &Path) -> Result<(u64, u64), StoreError> {
    let mut meta = txn
        .open_table(META)
        .map_err(fail(path, "cannot open meta"))?;
    let epoch = get_u32(&meta, EPOCH_KEY, path)?;
    let revision = get_u64(&meta, REVISION_KEY, path)?;
    for table in [CONFIGS, AUDIT] {
        txn.open_table(table)
            .map_err(fail(path, "cannot open a table"))?;
    }
    let mut proxies = txn
        .open_table(PROXIES)
        .map_err(fail(path, "cannot open proxies"))?;
    let mut rewritten = Vec::new();
    for entry in proxies.iter().map_err(fail(path, "cannot read proxies"))? {
        let (key, value) = entry.map_err(fail(path, "cannot read proxies"))?;
        let old: ProxyRecordV1 = decode(value.value(), path, "a schema-1 proxy entry")?;
        status_from_code(old.status, path)?;
        let new = ProxyRecord {
            incarnation: old.incarnation,
            status: old.status,
            since_unix_ms: Some(old.since_unix_ms),
            last_heartbeat_unix_ms: None,
            source: None,
            config_version: 0,
        };
        rewritten.push((key.value().to_vec(), encode(&new, path)?));
    }
    for (key, value) in &rewritten {
        put(&mut proxies, key, value, path)?;
    }
    txn.open_table(CHANGES)
        .map_err(fail(path, "cannot create changes"))?;
    let generation = now_secs();
    put(&mut meta, GENERATION_KEY, &generation.to_be_bytes(), path)?;
    tracing::info!(
        path = %path.display(),
        proxies = rewritten.len(),
        epoch,
        revision,
        generation,
        "migrated the store from schema 1 to schema 2"
    );
    Ok((revision, generation))
}

/// What [`seal_configs`] did.
struct Resealed {
    /// Config values it rewrote.
    rewritten: usize,
    /// Config values that stay plain (no store key given).
    plain: usize,
}

/// Brings every config value to what `keys` ask, inside `txn`: a bare record of schema 1
/// or 2 (`legacy`) goes into an envelope, and a plain value or one sealed under another
/// key is sealed under the first of `keys`. A value sealed under a key not given is
/// [`StoreError::Sealed`]; one that does not open or decode, [`StoreError::Corrupt`].
fn seal_configs(
    txn: &WriteTransaction,
    keys: Option<&StoreKeys>,
    legacy: bool,
    path: &Path,
) -> Result<Resealed, StoreError> {
    let mut configs = txn
        .open_table(CONFIGS)
        .map_err(fail(path, "cannot open configs"))?;
    let mut rewritten = Vec::new();
    let mut plain = 0;
    for entry in configs.iter().map_err(fail(path, "cannot read configs"))? {
        let (key, value) = entry.map_err(fail(path, "cannot read configs"))?;
        let (escaped, version) = split_key(key.value(), path)?;
        let version = record::config_version(version).map_err(|e| corrupt(path, e))?;
        let cluster = unescape_cluster(escaped, path)?;
        let value = value.value();
        // The record to seal: an older schema's bare one, or what the envelope holds.
        let bare = if legacy {
            record::from_bare(value).map_err(|e| corrupt(path, &e))?
        } else {
            match seal::sealing_of(keys, value).map_err(|e| corrupt(path, &e))? {
                Sealing::Current => continue,
                Sealing::Plain if keys.is_none() => {
                    plain += 1;
                    continue;
                }
                Sealing::Plain | Sealing::Older(_) => {
                    seal::open(keys, &cluster, version, value)
                        .map_err(|e| match e {
                            seal::OpenError::NoKey { .. } => {
                                StoreError::Sealed(format!("{}: {e}", path.display()))
                            }
                            seal::OpenError::Damaged(what) => corrupt(path, &what),
                        })?
                        .0
                }
            }
        };
        // A record that does not decode is refused now, not at a later boot.
        decode::<record::ConfigRecord>(&bare, path, "a config version")?;
        if keys.is_none() {
            plain += 1;
        }
        rewritten.push((
            key.value().to_vec(),
            record::reseal(keys, &cluster, version, &bare),
        ));
    }
    for (key, value) in &rewritten {
        put(&mut configs, key, value, path)?;
    }
    Ok(Resealed {
        rewritten: rewritten.len(),
        plain,
    })
}

/// The current Unix time in whole seconds (at least 1): a new store's generation.
pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .max(1)
}

// ----- Committing: the tables of one write transaction -----

/// The tables of a commit's write transaction, for [`apply`].
struct TxnTables<'t> {
    meta: Table<'t, Bytes, Bytes>,
    proxies: Table<'t, Bytes, Bytes>,
    configs: Table<'t, Bytes, Bytes>,
    audit: Table<'t, Bytes, Bytes>,
    changes: Table<'t, Bytes, Bytes>,
    clusters: Table<'t, Bytes, Bytes>,
    path: &'t Path,
    /// The store keys configs are sealed under.
    keys: Option<&'t StoreKeys>,
    /// The next audit sequence number (read at the first entry of the batch).
    next_audit: Option<u64>,
    /// The generation, if a `Rewound` change of the batch changed it.
    generation: Option<u64>,
    /// A reusable key buffer.
    key: Vec<u8>,
}

impl<'t> TxnTables<'t> {
    fn open(
        txn: &'t WriteTransaction,
        path: &'t Path,
        keys: Option<&'t StoreKeys>,
    ) -> Result<TxnTables<'t>, StoreError> {
        Ok(TxnTables {
            meta: txn
                .open_table(META)
                .map_err(fail(path, "cannot open meta"))?,
            proxies: txn
                .open_table(PROXIES)
                .map_err(fail(path, "cannot open proxies"))?,
            configs: txn
                .open_table(CONFIGS)
                .map_err(fail(path, "cannot open configs"))?,
            audit: txn
                .open_table(AUDIT)
                .map_err(fail(path, "cannot open audit"))?,
            changes: txn
                .open_table(CHANGES)
                .map_err(fail(path, "cannot open changes"))?,
            clusters: txn
                .open_table(CLUSTERS)
                .map_err(fail(path, "cannot open clusters"))?,
            path,
            keys,
            next_audit: None,
            generation: None,
            key: Vec::new(),
        })
    }
}

impl Tables for TxnTables<'_> {
    fn proxy(&mut self, cluster: &str, proxy: &str) -> Result<Option<StoredProxy>, StoreError> {
        proxy_key(&mut self.key, cluster, proxy);
        let Some(value) = self
            .proxies
            .get(self.key.as_slice())
            .map_err(fail(self.path, "cannot read a proxy"))?
        else {
            return Ok(None);
        };
        let record: ProxyRecord = decode(value.value(), self.path, "a proxy entry")?;
        Ok(Some(stored_proxy(
            cluster.to_owned(),
            proxy.to_owned(),
            record,
            self.path,
        )?))
    }

    fn put_proxy(&mut self, p: StoredProxy) -> Result<(), StoreError> {
        proxy_key(&mut self.key, &p.cluster, &p.proxy);
        let value = encode(&ProxyRecord::of(&p), self.path)?;
        put(&mut self.proxies, &self.key, &value, self.path)
    }

    fn delete_proxy(&mut self, cluster: &str, proxy: &str) -> Result<(), StoreError> {
        proxy_key(&mut self.key, cluster, proxy);
        self.proxies
            .remove(self.key.as_slice())
            .map_err(fail(self.path, "cannot delete a proxy"))?;
        Ok(())
    }

    fn put_config(&mut self, cluster: &str, config: &ConfigVersion) -> Result<(), StoreError> {
        config_key(&mut self.key, cluster, config.version);
        let value = record::config_value(self.keys, cluster, config)
            .map_err(|e| StoreError::Io(format!("{}: {e}", self.path.display())))?;
        put(&mut self.configs, &self.key, &value, self.path)
    }

    fn push_audit(&mut self, entry: AuditEntry) -> Result<(), StoreError> {
        let path = self.path;
        let sequence = match self.next_audit {
            Some(next) => next,
            None => match self.audit.last().map_err(fail(path, "cannot read audit"))? {
                None => 0,
                Some((key, _)) => decode_u64_key(key.value(), path, "an audit key")?
                    .checked_add(1)
                    .ok_or_else(|| corrupt(path, "the audit sequence is exhausted"))?,
            },
        };
        let value = encode(
            &AuditRecordOut {
                at_unix_ms: entry.at_unix_ms,
                action: &entry.action,
            },
            path,
        )?;
        put(&mut self.audit, &sequence.to_be_bytes(), &value, path)?;
        self.next_audit = Some(
            sequence
                .checked_add(1)
                .ok_or_else(|| corrupt(path, "the audit sequence is exhausted"))?,
        );
        Ok(())
    }

    fn prune_configs(&mut self, cluster: &str, through: u64) -> Result<(), StoreError> {
        let (mut low, mut high) = (Vec::new(), Vec::new());
        config_key(&mut low, cluster, 0);
        config_key(&mut high, cluster, through);
        self.configs
            .retain_in::<&[u8], _>(low.as_slice()..=high.as_slice(), |_, _| false)
            .map_err(fail(self.path, "cannot prune configs"))
    }

    fn put_settings(
        &mut self,
        cluster: &str,
        settings: Option<&ClusterSettings>,
    ) -> Result<(), StoreError> {
        self.key.clear();
        record::push_cluster(&mut self.key, cluster);
        match settings {
            Some(s) => {
                let value = encode(s, self.path)?;
                put(&mut self.clusters, &self.key, &value, self.path)
            }
            None => {
                self.clusters
                    .remove(self.key.as_slice())
                    .map_err(fail(self.path, "cannot delete a cluster's settings"))?;
                Ok(())
            }
        }
    }

    fn prune_audit(&mut self, keep: usize) -> Result<(), StoreError> {
        let path = self.path;
        let held = self.audit.len().map_err(fail(path, "cannot count audit"))?;
        let excess = held.saturating_sub(u64::try_from(keep).unwrap_or(u64::MAX));
        if excess == 0 {
            return Ok(());
        }
        // Sequence numbers are consecutive from the oldest held: cut after `excess`.
        let first = match self
            .audit
            .first()
            .map_err(fail(path, "cannot read audit"))?
        {
            Some((key, _)) => decode_u64_key(key.value(), path, "an audit key")?,
            None => return Ok(()),
        };
        let cut = first.saturating_add(excess).to_be_bytes();
        self.audit
            .retain_in::<&[u8], _>(..cut.as_slice(), |_, _| false)
            .map_err(fail(path, "cannot prune audit"))
    }

    fn push_change(&mut self, change: &WallChange) -> Result<(), StoreError> {
        let value = encode(change, self.path)?;
        put(
            &mut self.changes,
            &change.revision.to_be_bytes(),
            &value,
            self.path,
        )
    }

    fn rewound(&mut self, seen_epoch: u32) -> Result<(), StoreError> {
        let path = self.path;
        let old = match self.generation {
            Some(generation) => generation,
            None => get_u64(&self.meta, GENERATION_KEY, path)?,
        };
        let generation = old
            .checked_add(1)
            .ok_or_else(|| corrupt(path, "the generation cannot grow past u64"))?
            .max(now_secs());
        put(
            &mut self.meta,
            GENERATION_KEY,
            &generation.to_be_bytes(),
            path,
        )?;
        self.generation = Some(generation);
        let epoch = get_u32(&self.meta, EPOCH_KEY, path)?.max(seen_epoch);
        put(&mut self.meta, EPOCH_KEY, &epoch.to_be_bytes(), path)
    }

    fn finish(&mut self, revision: u64, prune_through: u64) -> Result<(), StoreError> {
        let path = self.path;
        put(&mut self.meta, REVISION_KEY, &revision.to_be_bytes(), path)?;
        let through = prune_through.to_be_bytes();
        self.changes
            .retain_in::<&[u8], _>(..=through.as_slice(), |_, _| false)
            .map_err(fail(path, "cannot prune the log"))
    }
}

// ----- The probe's backend -----

/// The block size of an [`Overlay`]'s copies.
const BLOCK: u64 = 4096;

/// A [`StorageBackend`] that reads a file and keeps every write in memory: redb can open,
/// verify and repair the file through it without changing a byte of it. Its locks are the
/// file's (the same as a real open takes).
#[derive(Debug)]
struct Overlay {
    file: FileBackend,
    state: Mutex<OverlayState>,
}

#[derive(Debug)]
struct OverlayState {
    /// The length redb sees.
    len: u64,
    /// How much of the file's content is still visible (a shrink hides the rest for good).
    file_len: u64,
    /// Blocks written, by index (offset / BLOCK), each BLOCK bytes long.
    blocks: HashMap<u64, Vec<u8>>,
}

impl Overlay {
    fn new(file: FileBackend) -> io::Result<Overlay> {
        let len = file.len()?;
        Ok(Overlay {
            file,
            state: Mutex::new(OverlayState {
                len,
                file_len: len,
                blocks: HashMap::new(),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, OverlayState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads what lies under the overlay at `offset`: the file's bytes while visible, then
    /// zeros.
    fn read_under(&self, file_len: u64, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let from_file = usize::try_from(file_len.saturating_sub(offset))
            .map_or(out.len(), |n| n.min(out.len()));
        if from_file > 0 {
            self.file.read(offset, &mut out[..from_file])?;
        }
        out[from_file..].fill(0);
        Ok(())
    }
}

fn out_of_range() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "beyond the end of the probed file",
    )
}

/// The end of `len` bytes at `offset`, if within `limit`.
fn end_within(offset: u64, len: usize, limit: u64) -> io::Result<u64> {
    u64::try_from(len)
        .ok()
        .and_then(|len| offset.checked_add(len))
        .filter(|&end| end <= limit)
        .ok_or_else(out_of_range)
}

/// The pieces of `offset..end` by block: (block index, offset within it, length).
fn pieces(offset: u64, end: u64) -> impl Iterator<Item = (u64, usize, usize)> {
    let mut at = offset;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let within = at % BLOCK;
        let n = (BLOCK - within).min(end - at);
        let piece = (at / BLOCK, within as usize, n as usize);
        at += n;
        Some(piece)
    })
}

impl StorageBackend for Overlay {
    fn len(&self) -> io::Result<u64> {
        Ok(self.state().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let state = self.state();
        let end = end_within(offset, out.len(), state.len)?;
        let mut done = 0;
        for (block, within, n) in pieces(offset, end) {
            let dst = &mut out[done..done + n];
            match state.blocks.get(&block) {
                Some(copy) => dst.copy_from_slice(&copy[within..within + n]),
                None => self.read_under(state.file_len, block * BLOCK + within as u64, dst)?,
            }
            done += n;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state();
        if len < state.len {
            // What is cut off reads as zeros if the length grows again.
            state.file_len = state.file_len.min(len);
            state.blocks.retain(|&block, _| block * BLOCK < len);
            if let Some(copy) = state.blocks.get_mut(&(len / BLOCK)) {
                copy[(len % BLOCK) as usize..].fill(0);
            }
        }
        state.len = len;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.state();
        let end = end_within(offset, data.len(), state.len)?;
        let mut done = 0;
        for (block, within, n) in pieces(offset, end) {
            if !state.blocks.contains_key(&block) {
                let mut copy = vec![0; BLOCK as usize];
                self.read_under(state.file_len, block * BLOCK, &mut copy)?;
                state.blocks.insert(block, copy);
            }
            if let Some(copy) = state.blocks.get_mut(&block) {
                copy[within..within + n].copy_from_slice(&data[done..done + n]);
            }
            done += n;
        }
        Ok(())
    }

    fn close(&self) -> io::Result<()> {
        self.file.close()
    }

    fn try_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

// ----- Helpers -----

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
    table: &impl ReadableTable<Bytes, Bytes>,
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

fn read_u64(
    table: &impl ReadableTable<Bytes, Bytes>,
    key: &[u8],
    path: &Path,
) -> Result<u64, StoreError> {
    get_raw(table, key, path).map(u64::from_be_bytes)
}

fn get_u64(table: &Table<'_, Bytes, Bytes>, key: &[u8], path: &Path) -> Result<u64, StoreError> {
    read_u64(table, key, path)
}

fn get_u32(table: &Table<'_, Bytes, Bytes>, key: &[u8], path: &Path) -> Result<u32, StoreError> {
    get_raw(table, key, path).map(u32::from_be_bytes)
}

fn encode<T: Serialize>(value: &T, path: &Path) -> Result<Vec<u8>, StoreError> {
    record::encode(value).map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))
}

/// Decodes a whole value: trailing bytes are corruption, not padding.
fn decode<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    path: &Path,
    what: &str,
) -> Result<T, StoreError> {
    record::decode(bytes, what).map_err(|e| corrupt(path, &e))
}

fn decode_u64_key(key: &[u8], path: &Path, what: &str) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt(path, &format!("{what} is not 8 bytes long")))
}

fn status_from_code(code: u8, path: &Path) -> Result<Status, StoreError> {
    record::status_from_code(code).map_err(|e| corrupt(path, &e))
}

fn stored_proxy(
    cluster: String,
    proxy: String,
    record: ProxyRecord,
    path: &Path,
) -> Result<StoredProxy, StoreError> {
    record
        .into_stored(cluster, proxy)
        .map_err(|e| corrupt(path, &e))
}

fn proxy_key(key: &mut Vec<u8>, cluster: &str, proxy: &str) {
    key.clear();
    record::push_proxy_key(key, cluster, proxy);
}

fn config_key(key: &mut Vec<u8>, cluster: &str, version: u64) {
    key.clear();
    record::push_config_key(key, cluster, version);
}

/// Splits a key into its cluster (still escaped, without the terminator) and the rest.
fn split_key<'k>(key: &'k [u8], path: &Path) -> Result<(&'k [u8], &'k [u8]), StoreError> {
    record::split_key(key).map_err(|e| corrupt(path, e))
}

fn unescape_cluster(escaped: &[u8], path: &Path) -> Result<String, StoreError> {
    record::unescape_cluster(escaped).map_err(|e| corrupt(path, e))
}

/// Every cluster's settings, sorted by cluster.
fn read_settings(
    table: &Table<'_, Bytes, Bytes>,
    path: &Path,
) -> Result<Vec<(String, ClusterSettings)>, StoreError> {
    let mut out = Vec::new();
    for entry in table.iter().map_err(fail(path, "cannot read clusters"))? {
        let (key, value) = entry.map_err(fail(path, "cannot read clusters"))?;
        let (escaped, rest) = split_key(key.value(), path)?;
        if !rest.is_empty() {
            return Err(corrupt(path, "a clusters key has bytes after its cluster"));
        }
        let settings: ClusterSettings = decode(value.value(), path, "a cluster's settings")?;
        out.push((unescape_cluster(escaped, path)?, settings));
    }
    Ok(out)
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
        proxies.push(stored_proxy(name, proxy, record, path)?);
    }
    Ok(proxies)
}

/// Reads a [`RedbStore`]'s config versions beside its commits (redb's readers see the
/// last committed transaction and never block the writer).
#[derive(Debug)]
struct RedbReader {
    db: Weak<Database>,
    path: PathBuf,
    keys: Option<StoreKeys>,
}

impl RedbReader {
    /// A snapshot in a new file beside the store, unlinked as soon as it is made (so
    /// nothing is left behind, whatever happens next), read back from its start.
    fn save_snapshot(&self) -> Result<(SnapshotSummary, fs::File), StoreError> {
        use std::io::Seek;
        use std::os::unix::fs::OpenOptionsExt;
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = &self.path;
        let db = self
            .db
            .upgrade()
            .ok_or_else(|| StoreError::Io(format!("{}: the store is closed", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let temp = dir.join(format!(
            ".snapshot-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let cannot = |e: io::Error| {
            StoreError::Io(format!(
                "cannot make a snapshot file in {}: {e}",
                dir.display()
            ))
        };
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(cannot)?;
        fs::remove_file(&temp).map_err(cannot)?;
        let summary = snapshot::save(&db, path, file.try_clone().map_err(cannot)?)?;
        file.rewind().map_err(cannot)?;
        Ok((summary, file))
    }

    /// The versions of `cluster` from `from` to `to` (included), newest first, at most
    /// `newest` of them.
    fn versions(
        &self,
        cluster: &str,
        (from, to): (u64, u64),
        newest: usize,
    ) -> Result<Vec<StoredConfig>, StoreError> {
        let path = &self.path;
        let db = self
            .db
            .upgrade()
            .ok_or_else(|| StoreError::Io(format!("{}: the store is closed", path.display())))?;
        let txn = db.begin_read().map_err(fail(path, "cannot begin a read"))?;
        let table = txn
            .open_table(CONFIGS)
            .map_err(fail(path, "cannot open configs"))?;
        let (mut low, mut high) = (Vec::new(), Vec::new());
        config_key(&mut low, cluster, from);
        config_key(&mut high, cluster, to);
        let mut configs = Vec::new();
        for entry in table
            .range::<&[u8]>(low.as_slice()..=high.as_slice())
            .map_err(fail(path, "cannot read configs"))?
            .rev()
            .take(newest)
        {
            let (key, value) = entry.map_err(fail(path, "cannot read configs"))?;
            let (_, version) = split_key(key.value(), path)?;
            let version = record::config_version(version).map_err(|e| corrupt(path, e))?;
            configs.push(open_config(
                self.keys.as_ref(),
                cluster,
                version,
                value.value(),
                path,
            )?);
        }
        Ok(configs)
    }
}

impl StoreRead for RedbReader {
    fn snapshot(&self) -> Option<Result<(SnapshotSummary, fs::File), StoreError>> {
        Some(self.save_snapshot())
    }

    fn config_versions(
        &self,
        cluster: &str,
        newest: usize,
    ) -> Result<Vec<StoredConfig>, StoreError> {
        let mut configs = self.versions(cluster, (0, u64::MAX), newest)?;
        configs.reverse();
        Ok(configs)
    }

    fn config_version(
        &self,
        cluster: &str,
        version: u64,
    ) -> Result<Option<StoredConfig>, StoreError> {
        Ok(self.versions(cluster, (version, version), 1)?.pop())
    }
}

/// The stored config `value` of `cluster`'s `version`, opened with `keys`.
fn open_config(
    keys: Option<&StoreKeys>,
    cluster: &str,
    version: u64,
    value: &[u8],
    path: &Path,
) -> Result<StoredConfig, StoreError> {
    let (record, _) = record::read_config(keys, cluster, version, value).map_err(|e| match e {
        ConfigReadError::NoKey(what) => StoreError::Sealed(format!("{}: {what}", path.display())),
        ConfigReadError::Corrupt(what) => corrupt(path, &what),
    })?;
    Ok(record.into_stored(cluster.to_owned(), version))
}

/// The latest version of every cluster's config, sorted by cluster: walks the table
/// backwards and decodes only the first (highest) version of each cluster.
fn read_latest_configs(
    table: &Table<'_, Bytes, Bytes>,
    keys: Option<&StoreKeys>,
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
        let version = record::config_version(version).map_err(|e| corrupt(path, e))?;
        if last.as_deref() == Some(escaped) {
            continue;
        }
        last = Some(escaped.to_vec());
        let cluster = unescape_cluster(escaped, path)?;
        configs.push(open_config(keys, &cluster, version, value.value(), path)?);
    }
    configs.reverse();
    Ok(configs)
}

/// At most `limit` changes of the log from revision `from` on, oldest first; checks that
/// each is stored under its own revision.
fn read_changes(
    table: &impl ReadableTable<Bytes, Bytes>,
    from: u64,
    limit: usize,
    path: &Path,
) -> Result<Vec<WallChange>, StoreError> {
    let from = from.to_be_bytes();
    let mut changes = Vec::new();
    for entry in table
        .range::<&[u8]>(from.as_slice()..)
        .map_err(fail(path, "cannot read changes"))?
        .take(limit)
    {
        let (key, value) = entry.map_err(fail(path, "cannot read changes"))?;
        let revision = decode_u64_key(key.value(), path, "a change key")?;
        let change: WallChange = decode(value.value(), path, "a change")?;
        if change.revision != revision {
            return Err(corrupt(
                path,
                &format!(
                    "the change stored as revision {revision} has revision {}",
                    change.revision
                ),
            ));
        }
        changes.push(change);
    }
    Ok(changes)
}

/// Makes the store file at `path` its owner's alone; says so if one that `existed`
/// before was not.
fn make_private(path: &Path, existed: bool) -> Result<(), StoreError> {
    let meta = fs::metadata(path)
        .map_err(|e| StoreError::Io(format!("cannot read {}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o700)).map_err(|e| {
        StoreError::Io(format!(
            "{} is readable by other users (mode {mode:o}) and cannot be made private: {e}",
            path.display()
        ))
    })?;
    if !existed {
        return Ok(());
    }
    tracing::warn!(
        path = %path.display(),
        was = format!("{mode:o}"),
        now = format!("{:o}", mode & 0o700),
        "the store file was open to other users; it holds configs, which are credentials: made it private"
    );
    Ok(())
}
