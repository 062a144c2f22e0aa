//! Backups of a running keeper's store, and restores from them.
//!
//! A **snapshot** is a store file of its own: a new redb database holding a copy of every
//! table of the store as its last committed transaction left it (redb's readers see one
//! committed transaction and never block the writer, so the keeper commits on while the
//! copy is made). It is compact (no free pages, so none of the old plaintext a store's
//! free pages may still hold) and keeps what the store holds as it is: configs sealed
//! under a store key stay sealed, and need that key to be read.
//!
//! [`restore`] writes a snapshot into a data directory that has no store, marking it
//! *restored*: its first boot starts a new generation (the revisions after the snapshot's
//! were used by the keeper it came from) and adopts the fleet for the adopt window, since
//! a proxy registered after the snapshot was taken is unknown to it and would otherwise be
//! told to restart.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use redb::backends::FileBackend;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTableMetadata, TableDefinition,
    TableError, TableHandle, WriteTransaction,
};
use serde::Serialize;

use super::{
    AUDIT, Bytes, CACHE_BYTES, CHANGES, CLUSTERS, CONFIGS, EPOCH_KEY, FILE_NAME, FORMAT_KEY,
    GENERATION_KEY, META, PROXIES, REVISION_KEY, begin, corrupt, fail, now_secs, probe, read_u64,
    split_key,
};
use crate::store::StoreError;
use crate::store::seal::{self, Sealing};

/// The meta entry of a store written by [`restore`] and not booted since: when it was
/// restored (u64 big-endian, Unix milliseconds). The first boot removes it.
pub(super) const RESTORED_KEY: &[u8] = b"restored_unix_ms";

/// Every table of the layout, in the order a snapshot copies them.
const TABLES: [TableDefinition<'static, Bytes, Bytes>; 6] =
    [META, PROXIES, CONFIGS, AUDIT, CHANGES, CLUSTERS];

/// What a snapshot (or a store) holds, as `zerokeeper snapshot status` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotSummary {
    /// The schema version ([`super::FORMAT`]).
    pub format: u64,
    /// The store's generation: with the revision, names the state for ever.
    pub generation: u64,
    /// The revision of the last change it holds.
    pub revision: u64,
    /// The epoch of the keeper run it was taken from.
    pub epoch: u32,
    /// Registered proxies.
    pub proxies: u64,
    /// Clusters with a proxy, a config version or settings.
    pub clusters: u64,
    /// Config versions kept (every cluster's history).
    pub config_versions: u64,
    /// How many of them are sealed under a store key (the rest are plaintext).
    pub sealed_config_versions: u64,
    /// Audit entries kept.
    pub audit_entries: u64,
    /// Changes in the retained log.
    pub changes: u64,
    /// The file's size in bytes.
    pub bytes: u64,
}

/// Writes a snapshot of `db` (the store at `path`) into `out`, a new empty file, durably,
/// and returns what it holds. `out` is read back from its start afterwards by the caller.
pub(super) fn save(db: &Database, path: &Path, out: File) -> Result<SnapshotSummary, StoreError> {
    let source = db.begin_read().map_err(fail(path, "cannot begin a read"))?;
    let mut summary = summarise(&source, path)?;
    let written = out.try_clone().map_err(|e| {
        StoreError::Io(format!(
            "{}: cannot write the snapshot: {e}",
            path.display()
        ))
    })?;
    let copy = create(written, path)?;
    let txn = begin(&copy, path)?;
    copy_tables(&source, &txn, path)?;
    txn.commit()
        .map_err(fail(path, "cannot commit the snapshot"))?;
    drop(copy);
    summary.bytes = out
        .metadata()
        .map_err(|e| StoreError::Io(format!("cannot read the snapshot's length: {e}")))?
        .len();
    Ok(summary)
}

/// What the snapshot file `file` holds, after verifying it (every page's checksum, and
/// that it is a zerokeeper store this keeper reads). The file is not written.
pub fn status(file: &Path) -> Result<SnapshotSummary, StoreError> {
    let meta = fs::metadata(file)
        .map_err(|e| StoreError::Io(format!("cannot read {}: {e}", file.display())))?;
    if !meta.is_file() {
        return Err(StoreError::Io(format!(
            "{} is not a regular file",
            file.display()
        )));
    }
    if meta.len() < super::REDB_HEADER_BYTES {
        return Err(corrupt(
            file,
            &format!(
                "{} bytes long, shorter than a redb header: not a snapshot",
                meta.len()
            ),
        ));
    }
    probe(file)?;
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .open_read_only(file)
        .map_err(fail(file, "cannot open the snapshot"))?;
    let txn = db.begin_read().map_err(fail(file, "cannot begin a read"))?;
    let tables: Vec<String> = txn
        .list_tables()
        .map_err(fail(file, "cannot list the tables"))?
        .map(|t| t.name().to_owned())
        .collect();
    if !tables.iter().any(|t| t == META.name()) {
        return Err(corrupt(
            file,
            "an empty redb database, not a zerokeeper snapshot",
        ));
    }
    let mut summary = summarise(&txn, file)?;
    if summary.format != super::FORMAT {
        // The probe accepts older schemas, which a keeper migrates; a snapshot is always
        // written in the current one.
        return Err(corrupt(
            file,
            &format!(
                "a store of schema {}, not a snapshot of schema {}",
                summary.format,
                super::FORMAT
            ),
        ));
    }
    summary.bytes = meta.len();
    Ok(summary)
}

/// Restores the snapshot `file` into the data directory `dir` (created `0700` if missing),
/// which must not hold a store: the snapshot is verified ([`status`]), copied to a
/// temporary file beside the store's name, made durable and renamed into place, so a
/// crash leaves either no store or the whole one. The restored store has a new
/// generation and is marked restored (see the module's documentation).
pub fn restore(file: &Path, dir: &Path) -> Result<SnapshotSummary, StoreError> {
    let mut summary = status(file)?;
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            return Err(StoreError::Io(format!(
                "{} exists and is not a directory",
                dir.display()
            )));
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
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
    let target = dir.join(FILE_NAME);
    if fs::symlink_metadata(&target).is_ok() {
        return Err(StoreError::Io(format!(
            "{} already holds a store ({}): restore into an empty data directory, or move \
             that file away first (with its keeper stopped)",
            dir.display(),
            target.display()
        )));
    }
    let partial = dir.join(format!("{FILE_NAME}.restoring"));
    // A partial file is what an interrupted restore left: it was never renamed into place.
    match fs::remove_file(&partial) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(StoreError::Io(format!(
                "cannot remove {}: {e}",
                partial.display()
            )));
        }
    }
    let out = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", partial.display())))?;
    let result = (|| {
        let source = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .open_read_only(file)
            .map_err(fail(file, "cannot open the snapshot"))?;
        let source = source
            .begin_read()
            .map_err(fail(file, "cannot begin a read"))?;
        let copy = create(out, &partial)?;
        let txn = begin(&copy, &partial)?;
        copy_tables(&source, &txn, &partial)?;
        {
            let mut meta = txn
                .open_table(META)
                .map_err(fail(&partial, "cannot open meta"))?;
            // The keeper the snapshot came from went on numbering revisions in this
            // generation: the restored store's revisions are another history.
            let generation = now_secs().max(summary.generation.saturating_add(1));
            super::put(
                &mut meta,
                GENERATION_KEY,
                &generation.to_be_bytes(),
                &partial,
            )?;
            super::put(
                &mut meta,
                RESTORED_KEY,
                &now_millis().to_be_bytes(),
                &partial,
            )?;
            summary.generation = generation;
        }
        txn.commit()
            .map_err(fail(&partial, "cannot commit the restore"))?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&partial);
        return Err(e);
    }
    fs::rename(&partial, &target).map_err(|e| {
        StoreError::Io(format!(
            "cannot rename {} to {}: {e}",
            partial.display(),
            target.display()
        ))
    })?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::Io(format!("cannot sync {}: {e}", dir.display())))?;
    summary.bytes = fs::metadata(&target)
        .map_err(|e| StoreError::Io(format!("cannot read {}: {e}", target.display())))?
        .len();
    Ok(summary)
}

/// A new redb database in the empty file `file` (named `path` in errors).
fn create(file: File, path: &Path) -> Result<Database, StoreError> {
    let backend = FileBackend::new(file).map_err(fail(path, "cannot open the snapshot"))?;
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create_with_backend(backend)
        .map_err(fail(path, "cannot create the snapshot"))
}

/// Copies every table of the layout that `source` has into `target`, entry by entry.
fn copy_tables(
    source: &ReadTransaction,
    target: &WriteTransaction,
    path: &Path,
) -> Result<(), StoreError> {
    for table in TABLES {
        let from = match source.open_table(table) {
            Ok(from) => from,
            // `clusters` is created by the first write that needs it.
            Err(TableError::TableDoesNotExist(_)) => continue,
            Err(e) => return Err(fail(path, "cannot open a table")(e)),
        };
        let mut to = target
            .open_table(table)
            .map_err(fail(path, "cannot create a table"))?;
        for entry in redb::ReadableTable::iter(&from).map_err(fail(path, "cannot read"))? {
            let (key, value) = entry.map_err(fail(path, "cannot read"))?;
            to.insert(key.value(), value.value())
                .map_err(fail(path, "cannot write the snapshot"))?;
        }
    }
    Ok(())
}

/// Counts what the store `txn` reads holds (`bytes` is left 0).
fn summarise(txn: &ReadTransaction, path: &Path) -> Result<SnapshotSummary, StoreError> {
    let meta = txn
        .open_table(META)
        .map_err(fail(path, "cannot open meta"))?;
    let format = read_u64(&meta, FORMAT_KEY, path)?;
    let epoch = super::get_raw::<4>(&meta, EPOCH_KEY, path).map(u32::from_be_bytes)?;
    let revision = read_u64(&meta, REVISION_KEY, path)?;
    let generation = read_u64(&meta, GENERATION_KEY, path)?;
    let mut clusters = BTreeSet::new();
    let proxies = scan(txn, PROXIES, path, &mut clusters, &mut |_| Ok(()))?;
    let mut sealed = 0;
    let config_versions = scan(txn, CONFIGS, path, &mut clusters, &mut |value| {
        match seal::sealing_of(None, value).map_err(|e| corrupt(path, &e))? {
            Sealing::Plain => {}
            Sealing::Current | Sealing::Older(_) => sealed += 1,
        }
        Ok(())
    })?;
    scan(txn, CLUSTERS, path, &mut clusters, &mut |_| Ok(()))?;
    let len = |table: TableDefinition<'static, Bytes, Bytes>| -> Result<u64, StoreError> {
        match txn.open_table(table) {
            Ok(table) => table.len().map_err(fail(path, "cannot read")),
            Err(TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(fail(path, "cannot open a table")(e)),
        }
    };
    Ok(SnapshotSummary {
        format,
        generation,
        revision,
        epoch,
        proxies,
        clusters: clusters.len() as u64,
        config_versions,
        sealed_config_versions: sealed,
        audit_entries: len(AUDIT)?,
        changes: len(CHANGES)?,
        bytes: 0,
    })
}

/// Counts the entries of `table` (none if it does not exist), adding the cluster of each
/// key to `clusters` and handing each value to `each`.
fn scan(
    txn: &ReadTransaction,
    table: TableDefinition<'static, Bytes, Bytes>,
    path: &Path,
    clusters: &mut BTreeSet<Vec<u8>>,
    each: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
) -> Result<u64, StoreError> {
    let table = match txn.open_table(table) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(fail(path, "cannot open a table")(e)),
    };
    let mut n = 0;
    for entry in redb::ReadableTable::iter(&table).map_err(fail(path, "cannot read"))? {
        let (key, value) = entry.map_err(fail(path, "cannot read"))?;
        let (cluster, _) = split_key(key.value(), path)?;
        if !clusters.contains(cluster) {
            clusters.insert(cluster.to_vec());
        }
        each(value.value())?;
        n += 1;
    }
    Ok(n)
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
