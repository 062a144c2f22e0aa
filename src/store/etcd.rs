//! The etcd store: the keeper's state in an etcd (v3 API; Debian's etcd 3.4 and later),
//! so that several keepers can share it (leader election comes next).
//!
//! It behaves as the [`MemoryStore`](super::MemoryStore) and the
//! [`RedbStore`](super::redb::RedbStore) do for the same calls: the same `apply` decides
//! what each change does, and the tests compare the three on random batches.
//!
//! # Keys
//!
//! The **status keys** are the seed's: `{root}/{cluster}/status/{proxy}` with the plain
//! status (`ready`, `up`, `lost`) as the value and nothing else, so
//! `etcdctl get --prefix /zerodb/proxy/test_cluster/status/` prints the listing. The root
//! is [`EtcdOptions::root`] (default [`DEFAULT_ROOT`], `/zerodb/proxy`); they are a view,
//! written after each commit and repaired at boot (a status key of a proxy the store
//! does not hold is deleted, a wrong or missing one written). Under the root, only keys
//! of exactly that shape are the store's; anything else there is left alone.
//!
//! Everything else lives under the **private prefix** `P = /zerokeeper{root}/.zk/`
//! (`/zerokeeper/zerodb/proxy/.zk/` by default). A root's segments may not start with
//! `.`, so no root's private keys fall under another root's sections, and two roots never
//! see each other.
//!
//! | key                                   | value                                          |
//! |---------------------------------------|------------------------------------------------|
//! | `P meta/schema`                       | the schema version ([`FORMAT`]), decimal        |
//! | `P meta/epoch`, `generation`          | decimal                                        |
//! | `P meta/revision`                     | the last committed revision: the commit point  |
//! | `P meta/materialised`                 | the last revision whose records are written    |
//! | `P meta/writer`                       | the id of the store handle that writes the root |
//! | `P proxies/ esc(cluster) 00 00 proxy` | the proxy record, postcard (as redb's)         |
//! | `P configs/ esc(cluster) 00 00 version(BE)` | the revision of the blob holding it, decimal |
//! | `P meta/sealed`                       | the store key every blob is sealed under, hex (absent: not known to be) |
//! | `P blob/{revision:020}`               | a blob header `{len, parts, key}`, postcard    |
//! | `P blob/{revision:020}/{part:06}`     | 256 KiB of the config's content (opaque bytes) |
//! | `P log/{revision:020}`                | the [`WallChange`], postcard                    |
//! | `P audit/{revision:020}`              | `{at_unix_ms, action}`, postcard               |
//!
//! Keys sort as the memory store's maps do (the escaping of
//! `record`). Records are postcard, as the redb store's are (the same
//! types): compact, which matters because etcd keeps every version of every key until it
//! is compacted, and decoded strictly. Meta is decimal text, readable with `etcdctl` and
//! compared by value. A config's content is the envelope the redb store writes too
//! ([`seal`]: plain, or sealed under the store key the header's `key`
//! names), cut in parts. Schema 1 wrote headers `{len, parts}` over the bare record; they
//! are read as such (told apart by their length), and a boot with a store key seals
//! them in place, each blob in one transaction (one too large for a transaction stays
//! as it is, with a warning), and then writes `meta/sealed`, so that later boots check
//! nothing. etcd keeps the values it replaced until it is compacted: compact and defrag
//! after the first sealing (`docs/OPERATIONS.md`).
//!
//! # Writing a batch
//!
//! etcd 3.4 takes at most 128 operations and 1.5 MiB per request. A batch that fits in
//! one transaction ([`MAX_TXN_OPS`], [`MAX_TXN_BYTES`]), as most do, is one transaction.
//! A larger one (thousands of status changes, a 4 MiB config) is written in phases:
//!
//! 1. **Staging.** The log entries and the config blobs go under their own keys, above
//!    `meta/revision`, where no reader looks, in as many transactions as needed.
//! 2. **The commit point.** One transaction moves `meta/revision` to the batch's last
//!    revision (with the generation and epoch a `Rewound` change moved). It is the
//!    batch's commit: before it the batch is not there, after it all of it is.
//! 3. **Materialising.** The proxy records, status keys, config pointers and audit
//!    entries, in as many transactions as needed; the last one moves
//!    `meta/materialised` and prunes the log past the retention (one range delete).
//!
//! `commit` returns `Ok` only after the last phase: the status keys then show every
//! committed change. Every transaction compares `meta/revision` with what this handle
//! last committed and `meta/writer` with this handle's id (and the [`Fence`], if set):
//! a handle that another one took the root from, or whose fence is stale, writes nothing
//! ([`StoreError::InUse`]). A handle takes the root at [`boot`](Store::boot) (or at its
//! first commit, if it commits before booting), so the last keeper to boot is the one
//! that writes; staged keys can therefore only be its own.
//!
//! # Crashes
//!
//! - Between staging and the commit point: the staged keys are above `meta/revision`
//!   and nothing reads them. The next boot (or the next commit of the same handle)
//!   deletes them.
//! - Between the commit point and the end of materialising: `meta/materialised` is
//!   behind `meta/revision`. The next boot (or commit) applies the changes in between
//!   again, from the log (the log is pruned only in the same transaction that moves
//!   `meta/materialised`); applying them again is idempotent.
//!
//! # Errors
//!
//! A request that fails or times out may still have been applied by etcd, as with any
//! network store. A failure before the commit point stored nothing visible. A commit
//! point whose answer was lost leaves its outcome unknown until the next commit (or
//! boot) reads the meta: this handle holds the root, so the stored revision says whether
//! the batch is wholly there or not at all. A failure
//! after the commit point returns an error although the batch is durable: the keeper
//! stops, as on any store failure, and its next boot finishes the materialising. Every
//! call is bounded by [`EtcdOptions::request_timeout`]: an etcd that is down is an error,
//! not a hang, and the same handle works again once etcd is back.
//!
//! # Reading
//!
//! Every read is paged (at most 1,000 keys per request, three blob parts per request),
//! and a boot reads every page at one etcd revision.
//!
//! # Threads
//!
//! The [`Store`] trait is synchronous and may be called from inside a tokio runtime; the
//! async `etcd-client` runs on a thread of the store's own, with its own runtime.

mod client;
mod keys;
mod plan;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn};

pub use self::client::EtcdStats;
pub(crate) use self::client::connect_options;
use self::client::{Etcd, Failure};
use self::keys::{Keys, prefix_end};
use self::plan::{BlobFormat, Mode, Op, Plan, Writes, parse_u64};
use super::record::{AuditRecord, ConfigReadError, ConfigRecord, decode};
use super::redb::now_secs;
use super::seal::{self, StoreKeys};
use super::{
    AuditEntry, DEFAULT_RETENTION, History, Snapshot, Store, StoreError, StoreRead, StoredConfig,
    StoredProxy, WallChange, apply, check_batch, next_epoch,
};
use crate::configdoc::ConfigVersion;
use crate::keeper::ClusterSettings;
use crate::keeper::change::{ChangeKind, ConfigBlob};

/// The schema version this keeper writes under a root, and the newest it reads. Schema
/// 1 (blobs of bare config records, headers without a key) is read too, and becomes 2 at
/// the next boot, which writes nothing else for it: its blobs stay as they are until they
/// are resealed.
pub const FORMAT: u64 = 2;

/// The root of the status keys unless [`EtcdOptions::root`] says otherwise.
pub const DEFAULT_ROOT: &str = "/zerodb/proxy";

/// The most operations one transaction carries: etcd 3.4's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

/// The most bytes of keys and values one transaction carries: well under etcd 3.4's
/// default `--max-request-bytes` of 1.5 MiB.
pub const MAX_TXN_BYTES: usize = 1 << 20;

/// Keys per page of a read.
const PAGE_KEYS: i64 = 1_000;

/// Keys per page of a blob's read (its header and parts of 256 KiB).
const PAGE_PARTS: i64 = 3;

/// How to reach etcd, and where under it this keeper's state lives.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// The client URLs (`http://127.0.0.1:2379`; `https://…` with [`EtcdOptions::tls`]).
    pub endpoints: Vec<String>,
    /// A user and password, if etcd has authentication enabled.
    pub user: Option<(String, String)>,
    /// TLS, as `etcdctl --cacert/--cert/--key` has it.
    pub tls: Option<EtcdTls>,
    /// The root of the status keys (default [`DEFAULT_ROOT`]): `/` and one or more
    /// segments of letters, digits, `_`, `-` and `.`, none starting with `.`. Two
    /// deployments with different roots share one etcd without seeing each other.
    pub root: String,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long one request may take: a store whose etcd does not answer fails within it.
    pub request_timeout: Duration,
    /// The store keys configs are sealed under at rest (`None`: stored plain); the same on
    /// every keeper of the root.
    pub store_keys: Option<StoreKeys>,
}

impl EtcdOptions {
    /// The options for `endpoints`, with the default root, no authentication, no TLS, a
    /// connect timeout of 5 s and a request timeout of 10 s.
    pub fn new(endpoints: Vec<String>) -> EtcdOptions {
        EtcdOptions {
            endpoints,
            user: None,
            tls: None,
            root: DEFAULT_ROOT.to_owned(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            store_keys: None,
        }
    }
}

/// TLS to etcd: PEM files, as `etcdctl --cacert/--cert/--key` takes them.
#[derive(Clone, Debug, Default)]
pub struct EtcdTls {
    /// The CA that signed etcd's certificate (default: the system's roots are not used;
    /// give one).
    pub ca_file: Option<PathBuf>,
    /// The client certificate, if etcd asks for one (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key.
    pub key_file: Option<PathBuf>,
}

/// A fence for the leader election: every write also checks that `key` still has this
/// `create_revision` (the leader key of the election this keeper won), so a keeper whose
/// leadership ended writes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The leader key.
    pub key: String,
    /// Its create revision when this keeper became leader.
    pub create_revision: i64,
}

/// Where a commit stops, as a crash would stop it (tests only).
#[cfg(feature = "test-hooks")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// After the staged keys of a batch larger than one transaction, before its commit
    /// point.
    AfterStaging,
    /// After the commit point, before anything is materialised.
    AfterCommitPoint,
}

/// The meta entries, as read.
#[derive(Clone, Debug)]
struct Meta {
    schema: u64,
    /// `meta/sealed`: the store key every config blob is sealed under, if one is.
    sealed: Option<Vec<u8>>,
    epoch: u32,
    generation: u64,
    revision: u64,
    materialised: u64,
    writer: Option<Vec<u8>>,
}

/// Whether a guarded transaction was applied.
enum Outcome {
    Applied,
    Refused,
}

/// Reads an [`EtcdStore`]'s config versions beside its commits, on the same client
/// thread and connection (one read at a time).
#[derive(Debug)]
struct EtcdReader(std::sync::Mutex<EtcdStore>);

impl EtcdReader {
    fn store(&self) -> std::sync::MutexGuard<'_, EtcdStore> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StoreRead for EtcdReader {
    fn config_versions(
        &self,
        cluster: &str,
        newest: usize,
    ) -> Result<Vec<StoredConfig>, StoreError> {
        self.store().read_versions(cluster, (0, u64::MAX), newest)
    }

    fn config_version(
        &self,
        cluster: &str,
        version: u64,
    ) -> Result<Option<StoredConfig>, StoreError> {
        Ok(self
            .store()
            .read_versions(cluster, (version, version), 1)?
            .pop())
    }
}

/// A [`Store`] in etcd. See the module's documentation.
pub struct EtcdStore {
    etcd: Etcd,
    keys: Keys,
    /// The last revision committed, as stored.
    revision: u64,
    /// The last revision materialised, as stored.
    materialised: u64,
    generation: u64,
    /// The stored epoch.
    epoch: u32,
    /// This handle's id, written to `meta/writer` when it takes the root.
    id: Vec<u8>,
    /// Whether this handle has taken the root.
    claimed: bool,
    /// `meta/writer` as read before this handle took the root.
    seen_writer: Option<Vec<u8>>,
    fence: Option<Fence>,
    retention: usize,
    history: History,
    /// Staged keys of a batch that did not reach its commit point may be above the
    /// revision: deleted before the next commit.
    dirty: bool,
    /// A commit point whose answer was lost: the next commit reads the meta to find out
    /// whether it was applied.
    in_doubt: bool,
    /// The store keys configs are sealed under.
    store_keys: Option<StoreKeys>,
    #[cfg(feature = "test-hooks")]
    crash: Option<CrashPoint>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.etcd.endpoints)
            .field("root", &self.keys.root())
            .field("revision", &self.revision)
            .field("materialised", &self.materialised)
            .field("generation", &self.generation)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to etcd and reads the root's meta; an empty root becomes a new store (a
    /// fresh generation, the current Unix time in seconds, as a new redb store has).
    ///
    /// Fails with [`StoreError::Io`] if the options are refused or etcd cannot be
    /// reached within the timeouts, with [`StoreError::TooNew`] if the root holds a newer
    /// schema (left untouched), and with [`StoreError::Corrupt`] if its meta cannot be
    /// read. Connecting writes nothing but the meta of a new store.
    pub fn connect(options: EtcdOptions) -> Result<EtcdStore, StoreError> {
        keys::check_root(&options.root).map_err(StoreError::Io)?;
        let etcd = Etcd::connect(&options)?;
        let mut store = EtcdStore {
            etcd,
            keys: Keys::new(&options.root),
            revision: 0,
            materialised: 0,
            generation: 0,
            epoch: 0,
            id: format!("{:016x}-{}", rand::random::<u64>(), std::process::id()).into_bytes(),
            claimed: false,
            seen_writer: None,
            fence: None,
            retention: DEFAULT_RETENTION,
            history: History::DEFAULT,
            dirty: false,
            in_doubt: false,
            store_keys: options.store_keys.clone(),
            #[cfg(feature = "test-hooks")]
            crash: None,
        };
        let meta = store.load_meta()?;
        store.adopt(&meta);
        Ok(store)
    }

    /// Sets (or clears) the fence every later write checks.
    pub fn set_fence(&mut self, fence: Option<Fence>) {
        self.fence = fence;
    }

    /// The root of the status keys.
    pub fn root(&self) -> &str {
        self.keys.root()
    }

    /// The prefix of everything else (`/zerokeeper{root}/.zk/`).
    pub fn private_prefix(&self) -> &str {
        self.keys.private()
    }

    /// How many requests this handle sent, and the largest transaction.
    pub fn stats(&self) -> EtcdStats {
        self.etcd.stats()
    }

    /// What is committed, read without writing anything: what a standby keeper shows
    /// while another one leads. The stored epoch is not bumped and the root is not taken.
    /// The snapshot's revision is the last one whose records are written
    /// (`meta/materialised`): the changes after it are in the log, for
    /// [`EtcdStore::follow`].
    pub fn peek(&mut self) -> Result<Snapshot, StoreError> {
        let meta = self.load_meta()?;
        self.adopt(&meta);
        let mut at = 0;
        let proxies = self.read_proxies(&mut at)?;
        let configs = self.read_latest_configs(&mut at)?;
        let clusters = self.read_settings(&mut at)?;
        let recent = self.read_log(0, meta.materialised, usize::MAX, &mut at)?;
        let oldest_retained = recent.first().map_or(meta.materialised + 1, |c| c.revision);
        Ok(Snapshot {
            epoch: meta.epoch,
            generation: meta.generation,
            revision: meta.materialised,
            oldest_retained,
            proxies,
            configs,
            clusters,
            recent,
            restored: false,
        })
    }

    /// The changes committed after `after`, at most `limit` of them, with the store's
    /// generation, reading the stored revision first: how a standby follows what the
    /// leader commits. Writes nothing.
    pub fn follow(
        &mut self,
        after: u64,
        limit: usize,
    ) -> Result<(u64, Vec<WallChange>), StoreError> {
        let meta = self.load_meta()?;
        self.adopt(&meta);
        let Some(from) = after.checked_add(1) else {
            return Ok((meta.generation, Vec::new()));
        };
        let mut at = 0;
        let mut changes = self.read_log(from, meta.revision, limit, &mut at)?;
        self.name_callers(&mut changes, &mut at)?;
        Ok((meta.generation, changes))
    }

    /// Puts back into the `admin` changes among `changes` the name of the token that
    /// authenticated each (the change log does not keep it; the audit entry of the
    /// same revision does), so a standby's audit record names its callers as the
    /// leader's does.
    fn name_callers(&self, changes: &mut [WallChange], at: &mut i64) -> Result<(), StoreError> {
        let admin = |c: &WallChange| matches!(c.kind, ChangeKind::Admin { .. });
        let (Some(first), Some(last)) = (
            changes.iter().find(|c| admin(c)).map(|c| c.revision),
            changes.iter().rev().find(|c| admin(c)).map(|c| c.revision),
        ) else {
            return Ok(());
        };
        let prefix = self.keys.audits();
        let mut callers: BTreeMap<u64, Arc<str>> = BTreeMap::new();
        self.scan(
            self.keys.audit(first),
            self.keys.audit(last.saturating_add(1)),
            PAGE_KEYS,
            at,
            |key, value| {
                let revision = Keys::revision_of(&prefix, key)
                    .ok_or_else(|| self.corrupt("an audit key is not a revision"))?;
                let record: AuditRecord =
                    decode(value, "an audit entry").map_err(|e| self.corrupt(&e))?;
                if let Some(by) = serde_json::from_str::<serde_json::Value>(&record.action)
                    .ok()
                    .and_then(|v| v.get("by").and_then(|b| b.as_str()).map(Arc::from))
                {
                    callers.insert(revision, by);
                }
                Ok(true)
            },
        )?;
        for change in changes.iter_mut() {
            if let ChangeKind::Admin { by, .. } = &mut change.kind {
                *by = callers.remove(&change.revision);
            }
        }
        Ok(())
    }

    /// The keys of the leader election of this store's root (see `crate::ha::etcd`): the
    /// leader key and the term, under the private prefix.
    pub fn election_keys(&self) -> (String, String) {
        let private = self.keys.private();
        (
            format!("{private}election/leader"),
            format!("{private}election/term"),
        )
    }

    /// Makes the next commits stop where a crash would (tests only).
    #[cfg(feature = "test-hooks")]
    pub fn set_crash_point(&mut self, crash: Option<CrashPoint>) {
        self.crash = crash;
    }

    fn adopt(&mut self, meta: &Meta) {
        self.revision = meta.revision;
        self.materialised = meta.materialised;
        self.generation = meta.generation;
        self.epoch = meta.epoch;
        if !self.claimed {
            self.seen_writer = meta.writer.clone();
        }
    }

    // ----- Errors -----

    fn failed(&self, doing: &str, failure: Failure) -> StoreError {
        StoreError::Io(format!(
            "etcd {} (root {}): {doing}: {}",
            self.etcd.endpoints,
            self.keys.root(),
            failure.message(self.etcd.timeout())
        ))
    }

    fn corrupt(&self, what: &str) -> StoreError {
        StoreError::Corrupt(format!(
            "etcd {} (root {}): {what}",
            self.etcd.endpoints,
            self.keys.root()
        ))
    }

    /// Why a guarded transaction was refused: reads what the guards compared.
    fn refused(&self, doing: &str, expected_revision: u64) -> StoreError {
        let mut keys = vec![self.keys.meta("revision"), self.keys.meta("writer")];
        if let Some(fence) = &self.fence {
            keys.push(fence.key.clone().into_bytes());
        }
        let why = match self.etcd.get_many(keys) {
            Err(failure) => format!(
                "the root changed under it (and reading why failed: {})",
                failure.message(self.etcd.timeout())
            ),
            Ok(found) => {
                let value = |i: usize| found.get(i).cloned().flatten();
                let fence_created = value(2).map_or(0, |(_, created)| created);
                let writer = value(1).map(|(w, _)| w);
                let mine = if self.claimed {
                    Some(self.id.clone())
                } else {
                    self.seen_writer.clone()
                };
                match &self.fence {
                    Some(fence) if fence_created != fence.create_revision => format!(
                        "the fence {:?} has create revision {fence_created}, not {}: this \
                         keeper's leadership has ended",
                        fence.key, fence.create_revision
                    ),
                    _ if writer != mine => format!(
                        "another store handle took the root (meta/writer is {}): another \
                         keeper booted on it",
                        writer.map_or("absent".to_owned(), |w| String::from_utf8_lossy(&w)
                            .into_owned())
                    ),
                    _ => format!(
                        "its revision is {}, not {expected_revision}, the last this store \
                         committed: another keeper writes it",
                        value(0).map_or("absent".to_owned(), |(r, _)| {
                            String::from_utf8_lossy(&r).into_owned()
                        })
                    ),
                }
            }
        };
        StoreError::InUse(format!(
            "etcd {} (root {}): {doing} was refused and wrote nothing: {why}",
            self.etcd.endpoints,
            self.keys.root()
        ))
    }

    // ----- Meta -----

    fn read_meta(&self) -> Result<Option<Meta>, StoreError> {
        let mut entries: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let start = self.keys.meta_scan();
        let mut at = 0;
        self.scan(
            start.clone(),
            prefix_end(&start),
            PAGE_KEYS,
            &mut at,
            |key, value| {
                let name = String::from_utf8_lossy(&key[start.len()..]).into_owned();
                entries.insert(name, value.to_vec());
                Ok(true)
            },
        )?;
        if entries.is_empty() {
            return Ok(None);
        }
        let number = |name: &str| -> Result<u64, StoreError> {
            let value = entries
                .get(name)
                .ok_or_else(|| self.corrupt(&format!("meta has no {name}")))?;
            parse_u64(value).ok_or_else(|| {
                self.corrupt(&format!(
                    "meta's {name} is not a number: {:?}",
                    String::from_utf8_lossy(value)
                ))
            })
        };
        let schema = number("schema")?;
        match schema {
            1 | FORMAT => {}
            newer if newer > FORMAT => {
                return Err(StoreError::TooNew(format!(
                    "etcd {} (root {}) has store schema {newer}; this keeper reads schemas up \
                     to {FORMAT}: upgrade zerokeeper",
                    self.etcd.endpoints,
                    self.keys.root()
                )));
            }
            other => return Err(self.corrupt(&format!("unknown store schema {other}"))),
        }
        let epoch = u32::try_from(number("epoch")?)
            .map_err(|_| self.corrupt("meta's epoch does not fit in 32 bits"))?;
        let meta = Meta {
            schema,
            sealed: entries.get("sealed").cloned(),
            epoch,
            generation: number("generation")?,
            revision: number("revision")?,
            materialised: number("materialised")?,
            writer: entries.get("writer").cloned(),
        };
        if meta.materialised > meta.revision {
            return Err(self.corrupt(&format!(
                "meta's materialised {} is past its revision {}",
                meta.materialised, meta.revision
            )));
        }
        Ok(Some(meta))
    }

    /// The meta of the root, made if the root is empty.
    fn load_meta(&self) -> Result<Meta, StoreError> {
        if let Some(meta) = self.read_meta()? {
            return Ok(meta);
        }
        let generation = now_secs().to_string().into_bytes();
        let ops = [
            Op::Put(self.keys.meta("schema"), FORMAT.to_string().into_bytes()),
            Op::Put(self.keys.meta("epoch"), b"0".to_vec()),
            Op::Put(self.keys.meta("generation"), generation),
            Op::Put(self.keys.meta("revision"), b"0".to_vec()),
            Op::Put(self.keys.meta("materialised"), b"0".to_vec()),
        ];
        // If another keeper made it first, its meta is read below.
        let guard = vec![Compare::version(
            self.keys.meta("schema"),
            CompareOp::Equal,
            0,
        )];
        self.send(guard, &ops)
            .map_err(|f| self.failed("cannot make a new store", f))?;
        self.read_meta()?
            .ok_or_else(|| self.corrupt("the meta of a new store vanished"))
    }

    // ----- Transactions -----

    fn writer_guard(&self) -> Compare {
        let key = self.keys.meta("writer");
        match (self.claimed, &self.seen_writer) {
            (true, _) => Compare::value(key, CompareOp::Equal, self.id.clone()),
            (false, Some(seen)) => Compare::value(key, CompareOp::Equal, seen.clone()),
            (false, None) => Compare::version(key, CompareOp::Equal, 0),
        }
    }

    fn fence_guard(&self) -> Option<Compare> {
        self.fence
            .as_ref()
            .map(|f| Compare::create_revision(f.key.clone(), CompareOp::Equal, f.create_revision))
    }

    /// What every write compares: the stored revision, the writer, the fence.
    fn guards(&self, revision: u64) -> Vec<Compare> {
        let mut guards = vec![
            Compare::value(
                self.keys.meta("revision"),
                CompareOp::Equal,
                revision.to_string(),
            ),
            self.writer_guard(),
        ];
        guards.extend(self.fence_guard());
        guards
    }

    fn send(&self, guards: Vec<Compare>, ops: &[Op]) -> Result<Outcome, Failure> {
        let bytes = ops.iter().map(Op::bytes).sum();
        let txn = Txn::new()
            .when(guards)
            .and_then(ops.iter().map(Op::to_txn_op).collect::<Vec<_>>());
        let answer = self.etcd.txn(txn, ops.len(), bytes)?;
        Ok(if answer.succeeded() {
            Outcome::Applied
        } else {
            Outcome::Refused
        })
    }

    /// Sends `ops` in as many guarded transactions as the limits need; `tail` goes in the
    /// last one.
    fn send_all(
        &self,
        doing: &str,
        revision: u64,
        ops: Vec<Op>,
        tail: Vec<Op>,
    ) -> Result<(), StoreError> {
        for txn in pack(ops, tail) {
            match self.send(self.guards(revision), &txn) {
                Ok(Outcome::Applied) => {}
                Ok(Outcome::Refused) => return Err(self.refused(doing, revision)),
                Err(failure) => return Err(self.failed(doing, failure)),
            }
        }
        Ok(())
    }

    /// Deletes whatever lies above the revision in the log and the blobs.
    fn cleanup_ops(&self, revision: u64) -> Vec<Op> {
        let next = revision.saturating_add(1);
        vec![
            Op::DeleteRange(self.keys.log(next), prefix_end(&self.keys.logs())),
            Op::DeleteRange(self.keys.blob(next), prefix_end(&self.keys.blobs())),
        ]
    }

    /// Before a commit: takes the root if this handle has not, deletes what a batch that
    /// did not reach its commit point staged, and finishes materialising a committed one.
    fn catch_up(&mut self) -> Result<(), StoreError> {
        if self.in_doubt {
            self.resolve_in_doubt()?;
        }
        if !self.claimed || self.dirty {
            let mut ops = self.cleanup_ops(self.revision);
            ops.push(Op::Put(self.keys.meta("writer"), self.id.clone()));
            match self.send(self.guards(self.revision), &ops) {
                Ok(Outcome::Applied) => {}
                Ok(Outcome::Refused) => {
                    return Err(self.refused("taking the root", self.revision));
                }
                Err(failure) => return Err(self.failed("taking the root", failure)),
            }
            self.claimed = true;
            self.dirty = false;
        }
        if self.materialised < self.revision {
            self.repair()?;
        }
        Ok(())
    }

    /// Finds out whether a commit point whose answer was lost was applied: this handle
    /// holds the root, so nothing but its own transactions moved the meta since.
    fn resolve_in_doubt(&mut self) -> Result<(), StoreError> {
        let meta = self
            .read_meta()?
            .ok_or_else(|| self.corrupt("meta has vanished"))?;
        if meta.writer.as_deref() != Some(self.id.as_slice()) {
            return Err(self.refused("resolving an earlier commit", self.revision));
        }
        if meta.revision != self.revision {
            tracing::info!(
                root = self.keys.root(),
                revision = meta.revision,
                "a commit whose answer was lost had been applied"
            );
        }
        self.adopt(&meta);
        self.in_doubt = false;
        Ok(())
    }

    /// Reads what a batch needs and applies it to a [`Plan`].
    fn plan(
        &self,
        mode: Mode,
        changes: &[WallChange],
        blobs: &[ConfigBlob],
    ) -> Result<Writes, StoreError> {
        let mut read = HashMap::new();
        let wanted = plan::reads(&self.keys, changes);
        for chunk in wanted.chunks(MAX_TXN_OPS) {
            let values = self
                .etcd
                .get_many(chunk.to_vec())
                .map_err(|f| self.failed("cannot read before a commit", f))?;
            for (key, value) in chunk.iter().zip(values) {
                read.insert(key.clone(), value.map(|(v, _)| v));
            }
        }
        let fetch = |key: Vec<u8>| {
            self.etcd
                .get_many(vec![key])
                .map(|mut found| found.pop().flatten().map(|(v, _)| v))
                .map_err(|f| self.failed("cannot read before a commit", f))
        };
        let range = |start: Vec<u8>, end: Vec<u8>, limit: i64| {
            let mut answer = self
                .etcd
                .range(start, end, limit, 0)
                .map_err(|f| self.failed("cannot read before a commit", f))?;
            let count = u64::try_from(answer.count()).unwrap_or(0);
            let kvs = answer
                .take_kvs()
                .into_iter()
                .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
                .collect();
            Ok((count, kvs))
        };
        let mut plan = Plan::new(
            &self.keys,
            mode,
            read,
            &fetch,
            &range,
            self.generation,
            self.epoch,
            self.store_keys.as_ref(),
        );
        apply(&mut plan, changes, blobs, self.retention, self.history)?;
        plan.writes()
    }

    /// Writes the records of the committed changes past `meta/materialised` again, from
    /// the log.
    fn repair(&mut self) -> Result<(), StoreError> {
        let (from, to) = (self.materialised + 1, self.revision);
        let mut at = 0;
        let changes = self.read_log(from, to, usize::MAX, &mut at)?;
        let complete = changes.first().map(|c| c.revision) == Some(from)
            && changes.len() as u64 == to - from + 1;
        if !complete {
            return Err(self.corrupt(&format!(
                "the log does not hold the committed changes {from} to {to}, whose records \
                 are not all written"
            )));
        }
        // The content of their configs is staged already: placeholders stand for it.
        let blobs: Vec<ConfigBlob> = changes
            .iter()
            .filter_map(|c| match &c.kind {
                ChangeKind::Config {
                    cluster, config, ..
                } => Some(ConfigBlob {
                    cluster: cluster.clone(),
                    config: Arc::new(ConfigVersion {
                        version: config.version,
                        base: Arc::from(&[][..]),
                        datasources: BTreeMap::new(),
                        bytes: Arc::from(&[][..]),
                        digest: config.digest,
                        id: crate::wire::ConfigId::of(config.version, &config.digest),
                    }),
                }),
                _ => None,
            })
            .collect();
        let writes = self.plan(Mode::Repair, &changes, &blobs)?;
        let mut tail = vec![Op::Put(
            self.keys.meta("materialised"),
            to.to_string().into_bytes(),
        )];
        tail.extend(writes.prune);
        self.send_all(
            "writing the records of committed changes",
            to,
            writes.materialise,
            tail,
        )?;
        tracing::info!(
            root = self.keys.root(),
            from,
            to,
            "wrote the records of committed changes a crash had cut short"
        );
        self.materialised = to;
        Ok(())
    }

    // ----- Reads -----

    /// Reads `start..end` page by page at etcd revision `at` (0: the latest, then pinned
    /// to the first page's), handing each key and value to `each` until it returns false.
    fn scan(
        &self,
        mut start: Vec<u8>,
        end: Vec<u8>,
        page: i64,
        at: &mut i64,
        mut each: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        loop {
            let mut answer = self
                .etcd
                .range(start.clone(), end.clone(), page, *at)
                .map_err(|f| self.failed("cannot read", f))?;
            if *at == 0 {
                *at = answer.header().map_or(0, |h| h.revision());
            }
            let more = answer.more();
            let kvs = answer.take_kvs();
            let Some(last) = kvs.last().map(|kv| kv.key().to_vec()) else {
                return Ok(());
            };
            for kv in &kvs {
                if !each(kv.key(), kv.value())? {
                    return Ok(());
                }
            }
            if !more {
                return Ok(());
            }
            start = last;
            start.push(0);
        }
    }

    /// At most `limit` changes of the log from revision `from` to `to` (included).
    fn read_log(
        &self,
        from: u64,
        to: u64,
        limit: usize,
        at: &mut i64,
    ) -> Result<Vec<WallChange>, StoreError> {
        let mut changes = Vec::new();
        if from > to || limit == 0 {
            return Ok(changes);
        }
        let prefix = self.keys.logs();
        let page = i64::try_from(limit).map_or(PAGE_KEYS, |l| l.min(PAGE_KEYS));
        self.scan(
            self.keys.log(from),
            self.keys.log(to.saturating_add(1)),
            page,
            at,
            |key, value| {
                let revision = Keys::revision_of(&prefix, key)
                    .ok_or_else(|| self.corrupt("a log key is not a revision"))?;
                let change: WallChange = decode(value, "a change").map_err(|e| self.corrupt(&e))?;
                if change.revision != revision {
                    return Err(self.corrupt(&format!(
                        "the change stored as revision {revision} has revision {}",
                        change.revision
                    )));
                }
                changes.push(change);
                Ok(changes.len() < limit)
            },
        )?;
        Ok(changes)
    }

    fn read_proxies(&self, at: &mut i64) -> Result<Vec<StoredProxy>, StoreError> {
        let prefix = self.keys.proxies();
        let mut proxies = Vec::new();
        // Consecutive proxies share their cluster: decode its name once per cluster.
        let mut cluster: Option<(Vec<u8>, String)> = None;
        self.scan(
            prefix.clone(),
            prefix_end(&prefix),
            PAGE_KEYS,
            at,
            |key, value| {
                let (escaped, proxy) =
                    super::record::split_key(&key[prefix.len()..]).map_err(|e| self.corrupt(e))?;
                let name = match &cluster {
                    Some((last, name)) if last.as_slice() == escaped => name.clone(),
                    _ => {
                        let name = super::record::unescape_cluster(escaped)
                            .map_err(|e| self.corrupt(e))?;
                        cluster = Some((escaped.to_vec(), name.clone()));
                        name
                    }
                };
                let proxy = std::str::from_utf8(proxy)
                    .map_err(|_| self.corrupt("a proxy identity is not UTF-8"))?
                    .to_owned();
                let record: super::record::ProxyRecord =
                    decode(value, "a proxy record").map_err(|e| self.corrupt(&e))?;
                proxies.push(
                    record
                        .into_stored(name, proxy)
                        .map_err(|e| self.corrupt(&e))?,
                );
                Ok(true)
            },
        )?;
        Ok(proxies)
    }

    /// Every cluster's settings, sorted by cluster.
    fn read_settings(&self, at: &mut i64) -> Result<Vec<(String, ClusterSettings)>, StoreError> {
        let prefix = self.keys.clusters();
        let mut out = Vec::new();
        self.scan(
            prefix.clone(),
            prefix_end(&prefix),
            PAGE_KEYS,
            at,
            |key, value| {
                let (escaped, rest) =
                    super::record::split_key(&key[prefix.len()..]).map_err(|e| self.corrupt(e))?;
                if !rest.is_empty() {
                    return Err(self.corrupt("a clusters key has bytes after its cluster"));
                }
                let name = super::record::unescape_cluster(escaped).map_err(|e| self.corrupt(e))?;
                let settings: ClusterSettings =
                    decode(value, "a cluster's settings").map_err(|e| self.corrupt(&e))?;
                out.push((name, settings));
                Ok(true)
            },
        )?;
        Ok(out)
    }

    /// The latest config version of every cluster, sorted by cluster.
    fn read_latest_configs(&self, at: &mut i64) -> Result<Vec<StoredConfig>, StoreError> {
        let prefix = self.keys.configs();
        // (escaped cluster, version, blob revision), the last of each cluster.
        let mut latest: Vec<(Vec<u8>, u64, u64)> = Vec::new();
        self.scan(
            prefix.clone(),
            prefix_end(&prefix),
            PAGE_KEYS,
            at,
            |key, value| {
                let (escaped, rest) =
                    super::record::split_key(&key[prefix.len()..]).map_err(|e| self.corrupt(e))?;
                let version = super::record::config_version(rest).map_err(|e| self.corrupt(e))?;
                let blob = parse_u64(value)
                    .ok_or_else(|| self.corrupt("a config pointer is not a revision"))?;
                match latest.last_mut() {
                    Some(last) if last.0 == escaped => *last = (escaped.to_vec(), version, blob),
                    _ => latest.push((escaped.to_vec(), version, blob)),
                }
                Ok(true)
            },
        )?;
        let mut configs = Vec::with_capacity(latest.len());
        for (escaped, version, blob) in latest {
            let cluster = super::record::unescape_cluster(&escaped).map_err(|e| self.corrupt(e))?;
            let (content, format) = self.read_blob(blob, at)?;
            let record = self.config_record(&cluster, version, &content, format)?;
            configs.push(record.into_stored(cluster, version));
        }
        Ok(configs)
    }

    /// The newest `newest` versions of `cluster` from `from` to `to` (included), as
    /// materialised, oldest first: their pointers, then the blob of each.
    fn read_versions(
        &self,
        cluster: &str,
        (from, to): (u64, u64),
        newest: usize,
    ) -> Result<Vec<StoredConfig>, StoreError> {
        let mut at = 0;
        let prefix = self.keys.configs();
        let mut end = self.keys.config(cluster, to);
        end.push(0);
        let mut pointers: Vec<(u64, u64)> = Vec::new();
        self.scan(
            self.keys.config(cluster, from),
            end,
            PAGE_KEYS,
            &mut at,
            |key, value| {
                let (_, rest) =
                    super::record::split_key(&key[prefix.len()..]).map_err(|e| self.corrupt(e))?;
                let version = super::record::config_version(rest).map_err(|e| self.corrupt(e))?;
                let blob = parse_u64(value)
                    .ok_or_else(|| self.corrupt("a config pointer is not a revision"))?;
                pointers.push((version, blob));
                Ok(true)
            },
        )?;
        let skip = pointers.len().saturating_sub(newest);
        let mut configs = Vec::with_capacity(pointers.len() - skip);
        for (version, blob) in pointers.into_iter().skip(skip) {
            let (content, format) = self.read_blob(blob, &mut at)?;
            let record = self.config_record(cluster, version, &content, format)?;
            configs.push(record.into_stored(cluster.to_owned(), version));
        }
        Ok(configs)
    }

    /// The config record in a blob's content.
    fn config_record(
        &self,
        cluster: &str,
        version: u64,
        content: &[u8],
        format: BlobFormat,
    ) -> Result<ConfigRecord, StoreError> {
        match format {
            BlobFormat::Bare => super::record::from_bare(content)
                .and_then(|record| decode(&record, "a config version"))
                .map_err(|e| self.corrupt(&e)),
            BlobFormat::Envelope(_) => {
                super::record::read_config(self.store_keys.as_ref(), cluster, version, content)
                    .map(|(record, _)| record)
                    .map_err(|e| match e {
                        ConfigReadError::NoKey(what) => self.sealed(&what),
                        ConfigReadError::Corrupt(what) => self.corrupt(&what),
                    })
            }
        }
    }

    fn sealed(&self, what: &str) -> StoreError {
        StoreError::Sealed(format!(
            "etcd {} (root {}): {what}",
            self.etcd.endpoints,
            self.keys.root()
        ))
    }

    /// The content of the blob of `revision` and what it is: its header, then every part,
    /// checked.
    fn read_blob(&self, revision: u64, at: &mut i64) -> Result<(Vec<u8>, BlobFormat), StoreError> {
        let header_key = self.keys.blob(revision);
        let mut header: Option<(u64, u32, BlobFormat)> = None;
        let mut content = Vec::new();
        let mut parts = 0u32;
        self.scan(
            header_key.clone(),
            prefix_end(&header_key),
            PAGE_PARTS,
            at,
            |key, value| {
                match &header {
                    None if key == header_key.as_slice() => {
                        let found = plan::read_header(value).map_err(|e| self.corrupt(&e))?;
                        content.reserve(usize::try_from(found.0).unwrap_or(0).min(8 << 20));
                        header = Some(found);
                    }
                    Some(_) if key == self.keys.blob_part(revision, parts).as_slice() => {
                        content.extend_from_slice(value);
                        parts += 1;
                    }
                    _ => {
                        return Err(self.corrupt(&format!(
                            "the blob of revision {revision} has an unexpected key {:?}",
                            String::from_utf8_lossy(key)
                        )));
                    }
                }
                Ok(true)
            },
        )?;
        match header {
            Some((len, want, format)) if want == parts && len == content.len() as u64 => {
                Ok((content, format))
            }
            Some((len, want, _)) => Err(self.corrupt(&format!(
                "the blob of revision {revision} has {parts} parts and {} bytes, where its \
                 header says {want} and {len}",
                content.len(),
            ))),
            None => Err(self.corrupt(&format!("the blob of revision {revision} is missing"))),
        }
    }

    /// At boot, with the root taken: seals every config blob under the first store key,
    /// unless `meta/sealed` (`sealed`) says they all are. A blob that is bare, plain, or
    /// sealed under an older key is rewritten in place, in one transaction (a blob too
    /// large for one is left as it is, with a warning: pushing it again seals it); then
    /// `meta/sealed` names the key. Without store keys, a blob sealed under one is
    /// [`StoreError::Sealed`], and a warning counts the plain ones.
    fn seal_configs(&mut self, sealed: Option<&[u8]>) -> Result<(), StoreError> {
        let keys = self.store_keys.clone();
        let want = keys
            .as_ref()
            .map(|k| format!("{:08x}", k.sealing().id()).into_bytes());
        match (&want, sealed) {
            (Some(want), Some(sealed)) if want.as_slice() == sealed => return Ok(()),
            (None, Some(sealed)) => {
                return Err(self.sealed(&format!(
                    "configs are sealed at rest under store key {}: start the keeper with \
                     --store-key-file (store_key_file) naming a file that holds it",
                    String::from_utf8_lossy(sealed)
                )));
            }
            _ => {}
        }
        // Every config pointer: (cluster, version, blob revision).
        let prefix = self.keys.configs();
        let mut pointers: Vec<(String, u64, u64)> = Vec::new();
        let mut at = 0;
        self.scan(
            prefix.clone(),
            prefix_end(&prefix),
            PAGE_KEYS,
            &mut at,
            |key, value| {
                let (escaped, rest) =
                    super::record::split_key(&key[prefix.len()..]).map_err(|e| self.corrupt(e))?;
                let version = super::record::config_version(rest).map_err(|e| self.corrupt(e))?;
                let cluster =
                    super::record::unescape_cluster(escaped).map_err(|e| self.corrupt(e))?;
                let blob = parse_u64(value)
                    .ok_or_else(|| self.corrupt("a config pointer is not a revision"))?;
                pointers.push((cluster, version, blob));
                Ok(true)
            },
        )?;
        let (mut plain, mut resealed, mut too_large) = (0usize, 0usize, Vec::new());
        for chunk in pointers.chunks(MAX_TXN_OPS) {
            let headers = self
                .etcd
                .get_many(chunk.iter().map(|p| self.keys.blob(p.2)).collect())
                .map_err(|f| self.failed("cannot read blob headers", f))?;
            for ((cluster, version, blob), header) in chunk.iter().zip(headers) {
                let (header, _) = header.ok_or_else(|| {
                    self.corrupt(&format!("the blob of revision {blob} is missing"))
                })?;
                let (_, _, format) = plan::read_header(&header).map_err(|e| self.corrupt(&e))?;
                let Some(keys) = &keys else {
                    if let BlobFormat::Envelope(Some(id)) = format {
                        return Err(self.sealed(
                            &seal::OpenError::NoKey {
                                id,
                                have_keys: false,
                            }
                            .to_string(),
                        ));
                    }
                    plain += 1;
                    continue;
                };
                if format == BlobFormat::Envelope(Some(keys.sealing().id())) {
                    continue;
                }
                let (content, format) = self.read_blob(*blob, &mut 0)?;
                let bare = match format {
                    BlobFormat::Bare => {
                        super::record::from_bare(&content).map_err(|e| self.corrupt(&e))?
                    }
                    BlobFormat::Envelope(_) => {
                        seal::open(Some(keys), cluster, *version, &content)
                            .map_err(|e| match e {
                                seal::OpenError::NoKey { .. } => self.sealed(&e.to_string()),
                                seal::OpenError::Damaged(what) => self.corrupt(&what),
                            })?
                            .0
                    }
                };
                decode::<ConfigRecord>(&bare, "a config version").map_err(|e| self.corrupt(&e))?;
                let sealed_value = seal::envelope(Some(keys), cluster, *version, &bare);
                let mut ops =
                    plan::blob_ops(&self.keys, *blob, &sealed_value, Some(keys.sealing().id()))
                        .map_err(|e| StoreError::Io(format!("etcd: {e}")))?;
                // The parts past the new ones (etcd refuses a delete that overlaps a put).
                let parts = u32::try_from(ops.len() - 1).unwrap_or(u32::MAX);
                ops.push(Op::DeleteRange(
                    self.keys.blob_part(*blob, parts),
                    prefix_end(&self.keys.blob(*blob)),
                ));
                let bytes: usize = ops.iter().map(Op::bytes).sum();
                if ops.len() > MAX_TXN_OPS || bytes > MAX_TXN_BYTES {
                    too_large.push(format!("{cluster} v{version}"));
                    continue;
                }
                match self.send(self.guards(self.revision), &ops) {
                    Ok(Outcome::Applied) => resealed += 1,
                    Ok(Outcome::Refused) => {
                        return Err(self.refused("resealing configs", self.revision));
                    }
                    Err(failure) => return Err(self.failed("cannot reseal a config", failure)),
                }
            }
        }
        if plain > 0 {
            tracing::warn!(
                root = self.keys.root(),
                configs = plain,
                "config versions are stored in plaintext, and configs are credentials: give \
                 --store-key-file to seal them at rest"
            );
        }
        if resealed > 0 {
            tracing::info!(
                root = self.keys.root(),
                configs = resealed,
                "sealed config versions at rest under the current store key; etcd keeps the \
                 old values until it is compacted"
            );
        }
        if !too_large.is_empty() {
            tracing::warn!(
                root = self.keys.root(),
                configs = %too_large.join(", "),
                "config versions too large to reseal in one etcd transaction stay as they \
                 were; push them again to seal them"
            );
        }
        if let (Some(want), true) = (want, too_large.is_empty()) {
            let ops = [Op::Put(self.keys.meta("sealed"), want)];
            match self.send(self.guards(self.revision), &ops) {
                Ok(Outcome::Applied) => {}
                Ok(Outcome::Refused) => {
                    return Err(self.refused("resealing configs", self.revision));
                }
                Err(failure) => return Err(self.failed("cannot reseal configs", failure)),
            }
        }
        Ok(())
    }

    /// Makes the status keys match the proxies: a key of a proxy not held is deleted, a
    /// missing or wrong one written. Returns how many keys it wrote or deleted.
    fn reconcile_status(&self, proxies: &[StoredProxy]) -> Result<usize, StoreError> {
        let mut expected: HashMap<Vec<u8>, &'static [u8]> = proxies
            .iter()
            .map(|p| {
                (
                    self.keys.status(&p.cluster, &p.proxy),
                    keys::status_value(p.status),
                )
            })
            .collect();
        let mut ops = Vec::new();
        let start = self.keys.status_scan();
        let mut at = 0;
        self.scan(
            start.clone(),
            prefix_end(&start),
            PAGE_KEYS,
            &mut at,
            |key, value| {
                match expected.remove(key) {
                    Some(want) if want != value => ops.push(Op::Put(key.to_vec(), want.to_vec())),
                    Some(_) => {}
                    None if self.keys.parse_status(key).is_some() => {
                        ops.push(Op::Delete(key.to_vec()));
                    }
                    None => {}
                }
                Ok(true)
            },
        )?;
        let mut missing: Vec<_> = expected.into_iter().collect();
        missing.sort();
        ops.extend(missing.into_iter().map(|(k, v)| Op::Put(k, v.to_vec())));
        let count = ops.len();
        if count > 0 {
            self.send_all("repairing the status keys", self.revision, ops, Vec::new())?;
            tracing::info!(
                root = self.keys.root(),
                keys = count,
                "repaired status keys that did not match the registry"
            );
        }
        Ok(count)
    }
}

/// Packs `ops` into transactions within the limits, `tail` in the last one.
fn pack(ops: Vec<Op>, tail: Vec<Op>) -> Vec<Vec<Op>> {
    let mut txns: Vec<Vec<Op>> = Vec::new();
    let mut current: Vec<Op> = Vec::new();
    let mut bytes = 0;
    for op in ops {
        let size = op.bytes();
        if !current.is_empty() && (current.len() == MAX_TXN_OPS || bytes + size > MAX_TXN_BYTES) {
            txns.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(op);
    }
    let tail_bytes: usize = tail.iter().map(Op::bytes).sum();
    if !current.is_empty()
        && (current.len() + tail.len() > MAX_TXN_OPS || bytes + tail_bytes > MAX_TXN_BYTES)
    {
        txns.push(std::mem::take(&mut current));
    }
    current.extend(tail);
    if !current.is_empty() {
        txns.push(current);
    }
    txns
}

impl Store for EtcdStore {
    fn boot(&mut self) -> Result<Snapshot, StoreError> {
        let meta = self.load_meta()?;
        let epoch =
            next_epoch(meta.epoch).ok_or_else(|| self.corrupt("the epoch cannot grow past u32"))?;
        // Everything as read, so that a boot racing another's writes takes nothing over.
        let number = |name: &str, value: u64| {
            Compare::value(self.keys.meta(name), CompareOp::Equal, value.to_string())
        };
        let writer = self.keys.meta("writer");
        let mut guards = vec![
            number("epoch", meta.epoch.into()),
            number("revision", meta.revision),
            number("materialised", meta.materialised),
            match &meta.writer {
                Some(w) => Compare::value(writer.clone(), CompareOp::Equal, w.clone()),
                None => Compare::version(writer.clone(), CompareOp::Equal, 0),
            },
        ];
        guards.extend(self.fence_guard());
        let mut ops = self.cleanup_ops(meta.revision);
        ops.push(Op::Put(
            self.keys.meta("epoch"),
            epoch.to_string().into_bytes(),
        ));
        ops.push(Op::Put(writer, self.id.clone()));
        if meta.schema < FORMAT {
            ops.push(Op::Put(
                self.keys.meta("schema"),
                FORMAT.to_string().into_bytes(),
            ));
        }
        match self.send(guards, &ops) {
            Ok(Outcome::Applied) => {}
            Ok(Outcome::Refused) => return Err(self.refused("booting", meta.revision)),
            Err(failure) => return Err(self.failed("cannot bump the epoch", failure)),
        }
        self.claimed = true;
        self.adopt(&meta);
        self.epoch = epoch;
        self.dirty = false;
        self.in_doubt = false;
        if self.materialised < self.revision {
            self.repair()?;
        }
        self.seal_configs(meta.sealed.as_deref())?;
        let mut at = 0;
        let proxies = self.read_proxies(&mut at)?;
        let configs = self.read_latest_configs(&mut at)?;
        let clusters = self.read_settings(&mut at)?;
        let recent = self.read_log(0, self.revision, usize::MAX, &mut at)?;
        let oldest_retained = recent.first().map_or(self.revision + 1, |c| c.revision);
        self.reconcile_status(&proxies)?;
        Ok(Snapshot {
            epoch,
            generation: self.generation,
            revision: self.revision,
            oldest_retained,
            proxies,
            configs,
            clusters,
            recent,
            restored: false,
        })
    }

    fn commit(&mut self, changes: &[WallChange], blobs: &[ConfigBlob]) -> Result<(), StoreError> {
        let Some(last) = changes.last().map(|c| c.revision) else {
            return Ok(());
        };
        // First: an earlier commit whose outcome was unknown may have moved the revision.
        self.catch_up()?;
        check_batch(self.revision, changes, blobs)?;
        let writes = self.plan(Mode::Commit, changes, blobs)?;
        let mut point = vec![Op::Put(
            self.keys.meta("revision"),
            last.to_string().into_bytes(),
        )];
        point.extend(writes.point);
        let mut tail = vec![Op::Put(
            self.keys.meta("materialised"),
            last.to_string().into_bytes(),
        )];
        tail.extend(writes.prune);
        let revision = self.revision;

        let ops = writes.staged.len() + point.len() + writes.materialise.len() + tail.len();
        let bytes: usize = [&writes.staged, &point, &writes.materialise, &tail]
            .iter()
            .flat_map(|ops| ops.iter())
            .map(Op::bytes)
            .sum();
        let single = ops <= MAX_TXN_OPS && bytes <= MAX_TXN_BYTES;
        if !single {
            // Phase 1: staging, above the revision.
            self.dirty = true;
            self.send_all(
                "staging a batch",
                revision,
                writes.staged.clone(),
                Vec::new(),
            )?;
            #[cfg(feature = "test-hooks")]
            if self.crash == Some(CrashPoint::AfterStaging) {
                return Err(StoreError::Io(
                    "test hook: stopped after staging".to_owned(),
                ));
            }
        }
        // Phase 2: the commit point (with everything else, for a batch that fits).
        let mut first = point;
        if single {
            first = writes
                .staged
                .into_iter()
                .chain(first)
                .chain(writes.materialise.iter().cloned())
                .chain(tail.iter().cloned())
                .collect();
        }
        match self.send(self.guards(revision), &first) {
            Ok(Outcome::Applied) => {}
            Ok(Outcome::Refused) => return Err(self.refused("the commit", revision)),
            Err(failure) => {
                self.in_doubt = true;
                return Err(self.failed("the commit point", failure));
            }
        }
        self.revision = last;
        self.dirty = false;
        if let Some(generation) = writes.generation {
            self.generation = generation;
        }
        if let Some(epoch) = writes.epoch {
            self.epoch = epoch;
        }
        if single {
            self.materialised = last;
            return Ok(());
        }
        #[cfg(feature = "test-hooks")]
        if self.crash == Some(CrashPoint::AfterCommitPoint) {
            return Err(StoreError::Io(
                "test hook: stopped after the commit point".to_owned(),
            ));
        }
        // Phase 3: materialising. A failure here leaves the batch committed: the next
        // commit or boot finishes it.
        self.send_all(
            "writing the records of a committed batch",
            last,
            writes.materialise,
            tail,
        )?;
        self.materialised = last;
        Ok(())
    }

    fn revision(&self) -> u64 {
        self.revision
    }

    fn generation(&self) -> u64 {
        self.generation
    }

    fn audit(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let prefix = self.keys.audits();
        let mut entries = Vec::new();
        let mut at = 0;
        self.scan(
            prefix.clone(),
            self.keys.audit(self.materialised.saturating_add(1)),
            PAGE_KEYS,
            &mut at,
            |key, value| {
                Keys::revision_of(&prefix, key)
                    .ok_or_else(|| self.corrupt("an audit key is not a revision"))?;
                let record: AuditRecord =
                    decode(value, "an audit entry").map_err(|e| self.corrupt(&e))?;
                entries.push(AuditEntry {
                    at_unix_ms: record.at_unix_ms,
                    action: record.action,
                });
                Ok(true)
            },
        )?;
        Ok(entries)
    }

    fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<WallChange>, StoreError> {
        let Some(from) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let mut at = 0;
        self.read_log(from, self.revision, limit, &mut at)
    }

    fn reader(&self) -> Result<Arc<dyn StoreRead>, StoreError> {
        let reader = EtcdStore {
            etcd: self.etcd.sibling(),
            keys: self.keys.clone(),
            revision: self.revision,
            materialised: self.materialised,
            generation: self.generation,
            epoch: self.epoch,
            id: self.id.clone(),
            // It never writes: it has not taken the root and holds no fence.
            claimed: false,
            seen_writer: None,
            fence: None,
            retention: self.retention,
            history: self.history,
            dirty: false,
            in_doubt: false,
            store_keys: self.store_keys.clone(),
            #[cfg(feature = "test-hooks")]
            crash: None,
        };
        Ok(Arc::new(EtcdReader(std::sync::Mutex::new(reader))))
    }

    fn set_retention(&mut self, changes: usize) {
        self.retention = changes;
    }

    fn set_history(&mut self, history: History) {
        self.history = history;
    }
}
