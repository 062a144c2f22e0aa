//! Persistence: what the keeper stores, and where.
//!
//! The store commits from the keeper's one change stream
//! ([`crate::keeper::change`]): every change the core makes is a numbered [`WallChange`],
//! one **revision** per change, consecutive, growing across restarts. The driver commits
//! the changes of one turn of its loop, with the content of every config version among
//! them ([`ConfigBlob`]), in one durable transaction (a burst of thousands of proxies
//! healing at once is a few commits, not thousands), tells the core what is durable, and
//! only then releases the answers that depend on it.
//!
//! A commit does two things with the changes. It keeps every one of them, whatever its
//! kind, in a log of the most recent ones (the [retention](Store::set_retention), 100,000
//! by default; older ones are pruned by the commit that passes it), from which a watch can
//! resume ([`Store::changes_after`]). And it applies each to the state a keeper is rebuilt
//! from:
//!
//! | change                   | effect                                                    |
//! |--------------------------|-----------------------------------------------------------|
//! | `Status`, `to: Some(s)`  | puts the proxy (see below)                                |
//! | `Status`, `to: None`     | deletes the proxy                                         |
//! | `Observed`               | a stored proxy takes the source and config version        |
//! | `Config`                 | stores the version's content, from its blob               |
//! | `Admin`                  | an [`AuditEntry`], the action as JSON ([`audit_json`])    |
//! | `Rewound { seen_epoch }` | a new generation; the stored epoch raised to `seen_epoch` |
//! | any other kind           | nothing besides the log                                   |
//!
//! Every config version is kept (the snapshot holds the latest of each cluster); an
//! `Observed` change of a proxy the store does not hold changes nothing.
//!
//! A put proxy holds the change's incarnation, status, last heartbeat, source and config
//! version; its `since_unix_ms` is the change's time when the status changed (`from !=
//! to`, so also when it is new), and otherwise the stored one (a new incarnation in the
//! same status has been in it since then).
//!
//! On start the keeper [`boot`](Store::boot)s the store: the epoch (the keeper's boot
//! counter, inside every freshness token) is bumped durably, and the registry, the latest
//! config versions and the retained log come back as a [`Snapshot`], from which the core
//! is rebuilt with a fresh window for every proxy. A keeper that was down for any length of
//! time therefore restarts nobody that is still heartbeating.
//!
//! The **generation** makes `(generation, revision)` unique for ever: a store that went back
//! in time (a backup copied back, noticed as a `Rewound` change) or that was recreated
//! reuses revisions, but not with the same generation. A new [`redb::RedbStore`] starts at
//! the current Unix time in seconds, and `Rewound` bumps it.
//!
//! Three stores implement [`Store`], and behave the same for the same calls (one
//! `apply` decides the effects for all; the tests compare them on random batches):
//! [`MemoryStore`], shared by clones (it survives a simulated keeper crash when the
//! simulation holds a clone), [`redb::RedbStore`], the default, a crash-safe file in
//! the data directory, and (with the cargo feature `etcd`) `etcd::EtcdStore`, in an etcd
//! that several keepers share. The two persistent ones write the same records
//! (`record.rs`).

#[cfg(feature = "etcd")]
pub mod etcd;
mod record;
pub mod redb;
pub mod seal;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use thiserror::Error;

use crate::configdoc::ConfigVersion;
use crate::keeper::ClusterSettings;
use crate::keeper::change::{AdminAction, ChangeKind};

pub use crate::keeper::change::{ConfigBlob, StoredConfig, StoredProxy, WallChange};
pub use redb::SnapshotSummary;

/// How many changes the log keeps unless [`Store::set_retention`] says otherwise.
pub const DEFAULT_RETENTION: usize = 100_000;

/// How much history a store keeps besides the change log: a setting of each handle, as
/// the retention is ([`Store::set_history`]). Older entries are pruned by the commits
/// that add new ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct History {
    /// Config versions kept per cluster, the newest (at least 1: the current one).
    pub configs: usize,
    /// Audit entries kept, the newest.
    pub audit: usize,
}

impl History {
    /// 100 versions a cluster, 100,000 audit entries.
    pub const DEFAULT: History = History {
        configs: 100,
        audit: 100_000,
    };
}

impl Default for History {
    fn default() -> History {
        History::DEFAULT
    }
}

/// An admin action, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// When (wall clock, milliseconds since the Unix epoch).
    pub at_unix_ms: u64,
    /// What, as one line of JSON (`{"action":"remove","cluster":...}`, see [`audit_json`]).
    pub action: String,
}

/// Everything stored, as a keeper boot finds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// This boot's epoch: one more than the last boot's (or than the newest epoch a
    /// `Rewound` change reported), already durable.
    pub epoch: u32,
    /// The store's generation: `(generation, revision)` is never reused.
    pub generation: u64,
    /// The revision of the last change committed (0: none ever).
    pub revision: u64,
    /// The revision of the oldest change still in the log (`revision + 1` when the log is
    /// empty).
    pub oldest_retained: u64,
    /// Every registered proxy, sorted by (cluster, proxy).
    pub proxies: Vec<StoredProxy>,
    /// The latest config version of every cluster, sorted by cluster.
    pub configs: Vec<StoredConfig>,
    /// The settings of every cluster that has any, sorted by cluster.
    pub clusters: Vec<(String, ClusterSettings)>,
    /// The changes in the log, oldest first (at most the retention).
    pub recent: Vec<WallChange>,
    /// Whether this is the first boot of a store restored from a snapshot
    /// ([`redb::restore_snapshot`]): the fleet may have moved on since it was taken, so
    /// the keeper adopts it rather than restart the proxies the snapshot does not know.
    pub restored: bool,
}

/// Why the store failed. No variant stored anything: a failed commit or boot leaves the
/// store as it was. A keeper stops on any store failure rather than answer for a change
/// it could not make durable. (A network store cannot always know: a request to etcd
/// that timed out may have been applied; see `etcd`'s documentation. Either way nothing
/// the keeper acknowledged is lost, and the next boot finds each batch whole or absent.)
#[derive(Debug, Error)]
pub enum StoreError {
    /// Another keeper holds the data directory (or, in etcd, has taken the root, or this
    /// keeper's fence is stale). Nothing was written.
    #[error("the data directory is in use by another keeper: {0}")]
    InUse(String),
    /// The store could not be opened, read or written, or refused a batch that breaks the
    /// [`Store::commit`] contract. Nothing was stored.
    #[error("store failure: {0}")]
    Io(String),
    /// The store holds something this keeper cannot read (not a store, damaged, or
    /// inconsistent). Nothing was written.
    #[error("the store cannot be read: {0}")]
    Corrupt(String),
    /// The store has a schema newer than this keeper reads (a newer zerokeeper wrote it).
    /// Nothing was written: a newer keeper can still use it.
    #[error("the store is too new for this keeper: {0}")]
    TooNew(String),
    /// The store holds configs sealed under a store key this keeper was not given
    /// ([`seal`]). Nothing was written: the same keeper with the key reads it.
    #[error("the store cannot be opened: {0}")]
    Sealed(String),
}

/// Where the keeper's state lives.
pub trait Store: Send {
    /// Starts a keeper run: bumps the epoch durably and returns everything stored.
    fn boot(&mut self) -> Result<Snapshot, StoreError>;

    /// Applies `changes` and stores the content of every `Config` change among them (from
    /// `blobs`; blobs of no change in the batch are not stored), in one durable
    /// transaction. An empty `changes` commits nothing.
    ///
    /// The changes must have consecutive revisions, the first being
    /// [`revision`](Store::revision)` + 1`, and every `Config` change must have its blob
    /// (same cluster and version). A batch that breaks this is a caller's bug: it is
    /// refused with [`StoreError::Io`] and nothing of it is stored.
    fn commit(&mut self, changes: &[WallChange], blobs: &[ConfigBlob]) -> Result<(), StoreError>;

    /// The revision of the last change committed (cached: reads nothing).
    fn revision(&self) -> u64;

    /// The store's generation (cached: reads nothing).
    fn generation(&self) -> u64;

    /// Every admin action recorded, oldest first.
    fn audit(&self) -> Result<Vec<AuditEntry>, StoreError>;

    /// The changes in the log after revision `after` (`revision > after`), oldest first, at
    /// most `limit` of them.
    fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<WallChange>, StoreError>;

    /// How many changes the log keeps (default [`DEFAULT_RETENTION`]); older ones are
    /// pruned by the next commit. A setting of this handle, not stored.
    fn set_retention(&mut self, changes: usize);

    /// How many config versions per cluster and audit entries the store keeps (default
    /// [`History::DEFAULT`]); older ones are pruned by the next commit that adds one. A
    /// setting of this handle, not stored.
    fn set_history(&mut self, history: History);

    /// A handle that reads what this store holds from another thread, beside its
    /// commits (the admin API's reads of config versions). It reads what is committed;
    /// once this store is dropped its reads fail.
    fn reader(&self) -> Result<Arc<dyn StoreRead>, StoreError>;
}

/// Reads of what a [`Store`] holds that the read view does not: the content of config
/// versions. Safe to call from any thread while the store commits.
pub trait StoreRead: Send + Sync + std::fmt::Debug {
    /// The newest `newest` config versions of `cluster` stored, oldest first (none for a
    /// cluster that has none).
    fn config_versions(
        &self,
        cluster: &str,
        newest: usize,
    ) -> Result<Vec<StoredConfig>, StoreError>;

    /// Version `version` of `cluster`'s config, if stored.
    fn config_version(
        &self,
        cluster: &str,
        version: u64,
    ) -> Result<Option<StoredConfig>, StoreError>;

    /// A snapshot of what is committed (a store file of its own, see
    /// [`redb::SnapshotSummary`]) in a temporary file that is already unlinked, read back
    /// from its start, with what it holds. `None`: this store makes none (the memory
    /// store keeps nothing; etcd's backups are `etcdctl snapshot save`).
    fn snapshot(&self) -> Option<Result<(SnapshotSummary, std::fs::File), StoreError>> {
        None
    }
}

/// An admin action as the audit records it: one line of JSON, for instance
/// `{"action":"remove","cluster":"c","proxy":"10.0.0.1:3307","status":"up"}`,
/// `{"action":"push_config","cluster":"c","size":70,"version":3}` or
/// `{"action":"switch","cluster":"c","from":"a","hostgroup":"hg0","to":"b","version":4}`
/// (keys sorted). A refused request has `"result":"refused"`, what was asked and why:
/// `{"action":"push_config","asked":"70 bytes","cluster":"c","reason":"gate closed for
/// cluster c: 10.0.0.1:3307 is lost","result":"refused"}`. An action authenticated by an admin token names it as `by`
/// (`{"action":"remove","by":"alice",...}`); one made with no token asked has no `by`.
pub fn audit_json(action: &AdminAction, by: Option<&str>) -> String {
    let mut value = match action {
        AdminAction::Remove {
            cluster,
            proxy,
            status,
        } => serde_json::json!({
            "action": "remove", "cluster": cluster, "proxy": proxy, "status": status.as_str(),
        }),
        AdminAction::PushConfig {
            cluster,
            version,
            size,
        } => serde_json::json!({
            "action": "push_config", "cluster": cluster, "version": version, "size": size,
        }),
        AdminAction::Switch {
            cluster,
            hostgroup,
            from,
            to,
            version,
        } => serde_json::json!({
            "action": "switch", "cluster": cluster, "hostgroup": hostgroup, "from": from, "to": to,
            "version": version,
        }),
        AdminAction::Rollback {
            cluster,
            to,
            version,
        } => serde_json::json!({
            "action": "rollback", "cluster": cluster, "to": to, "version": version,
        }),
        AdminAction::Hostgroup {
            cluster,
            hostgroup,
            datasources,
            current,
        } => serde_json::json!({
            "action": "hostgroup_set", "cluster": cluster, "hostgroup": hostgroup,
            "datasources": datasources, "current": current,
        }),
        AdminAction::HostgroupDelete { cluster, hostgroup } => serde_json::json!({
            "action": "hostgroup_delete", "cluster": cluster, "hostgroup": hostgroup,
        }),
        AdminAction::Freeze { cluster, frozen } => serde_json::json!({
            "action": if *frozen { "freeze" } else { "unfreeze" }, "cluster": cluster,
        }),
        AdminAction::DeleteCluster { cluster } => serde_json::json!({
            "action": "delete_cluster", "cluster": cluster,
        }),
        AdminAction::Refused {
            cluster,
            action,
            asked,
            reason,
        } => serde_json::json!({
            "action": action, "cluster": cluster, "result": "refused", "asked": asked,
            "reason": reason,
        }),
    };
    if let (Some(by), Some(object)) = (by, value.as_object_mut()) {
        object.insert("by".to_owned(), serde_json::Value::from(by));
    }
    value.to_string()
}

// ----- One application of a batch, for both stores -----

/// The storage a batch is applied to (the memory store's maps, or a redb write
/// transaction). [`apply`] decides what to call; an implementation only stores.
trait Tables {
    /// The stored proxy, if any.
    fn proxy(&mut self, cluster: &str, proxy: &str) -> Result<Option<StoredProxy>, StoreError>;
    /// Stores `proxy`, replacing any entry of its (cluster, proxy).
    fn put_proxy(&mut self, proxy: StoredProxy) -> Result<(), StoreError>;
    /// Deletes the proxy, if stored.
    fn delete_proxy(&mut self, cluster: &str, proxy: &str) -> Result<(), StoreError>;
    /// Stores a config version of `cluster` (replacing the same version, if stored).
    fn put_config(&mut self, cluster: &str, config: &ConfigVersion) -> Result<(), StoreError>;
    /// Appends an audit entry.
    fn push_audit(&mut self, entry: AuditEntry) -> Result<(), StoreError>;
    /// Deletes the config versions of `cluster` up to `through` (included).
    fn prune_configs(&mut self, cluster: &str, through: u64) -> Result<(), StoreError>;
    /// Stores the settings of `cluster` (`None`: deletes them).
    fn put_settings(
        &mut self,
        cluster: &str,
        settings: Option<&ClusterSettings>,
    ) -> Result<(), StoreError>;
    /// Deletes the oldest audit entries stored before this batch until at most `keep`
    /// are left, this batch's own counted (a store that cannot delete an entry in the
    /// batch that writes it keeps those).
    fn prune_audit(&mut self, keep: usize) -> Result<(), StoreError>;
    /// Appends a change to the log.
    fn push_change(&mut self, change: &WallChange) -> Result<(), StoreError>;
    /// Starts a new generation and raises the stored epoch to `seen_epoch`.
    fn rewound(&mut self, seen_epoch: u32) -> Result<(), StoreError>;
    /// Records `revision` as the last committed and prunes the log up to `prune_through`
    /// (included).
    fn finish(&mut self, revision: u64, prune_through: u64) -> Result<(), StoreError>;
}

/// Refuses a batch that breaks the [`Store::commit`] contract, before anything is written.
fn check_batch(
    revision: u64,
    changes: &[WallChange],
    blobs: &[ConfigBlob],
) -> Result<(), StoreError> {
    let mut expected = revision;
    for change in changes {
        expected = expected.checked_add(1).ok_or_else(|| {
            StoreError::Io("refused a batch: the revision cannot grow past u64".to_owned())
        })?;
        if change.revision != expected {
            return Err(StoreError::Io(format!(
                "refused a batch: a change has revision {}, where the store expects {expected} \
                 (its last is {revision}); nothing stored",
                change.revision
            )));
        }
        if let ChangeKind::Config {
            cluster, config, ..
        } = &change.kind
            && blob(blobs, cluster, config.version).is_none()
        {
            return Err(StoreError::Io(format!(
                "refused a batch: change {} is version {} of cluster {cluster:?}, but no blob \
                 holds its content (a bug of the caller); nothing stored",
                change.revision, config.version
            )));
        }
    }
    Ok(())
}

fn blob<'b>(blobs: &'b [ConfigBlob], cluster: &str, version: u64) -> Option<&'b ConfigBlob> {
    blobs
        .iter()
        .find(|b| &*b.cluster == cluster && b.config.version == version)
}

/// Applies a batch that [`check_batch`] accepted: the one place that says what each change
/// does to a store (the table in the module's documentation).
fn apply(
    tables: &mut impl Tables,
    changes: &[WallChange],
    blobs: &[ConfigBlob],
    retention: usize,
    history: History,
) -> Result<(), StoreError> {
    let Some(last) = changes.last() else {
        return Ok(());
    };
    for change in changes {
        tables.push_change(change)?;
        match &change.kind {
            ChangeKind::Status(c) => match c.to {
                Some(status) => {
                    let since_unix_ms = if c.from == c.to {
                        match tables.proxy(&c.cluster, &c.proxy)? {
                            Some(stored) => stored.since_unix_ms,
                            // Not stored: new to the store, whatever the core says.
                            None => Some(change.at),
                        }
                    } else {
                        Some(change.at)
                    };
                    tables.put_proxy(StoredProxy {
                        cluster: c.cluster.to_string(),
                        proxy: c.proxy.to_string(),
                        incarnation: c.incarnation,
                        status,
                        since_unix_ms,
                        last_heartbeat_unix_ms: c.last_heartbeat,
                        source: Some(c.source),
                        config_version: c.config_version,
                    })?;
                }
                None => tables.delete_proxy(&c.cluster, &c.proxy)?,
            },
            ChangeKind::Observed {
                cluster,
                proxy,
                source,
                config_version,
                ..
            } => {
                if let Some(mut stored) = tables.proxy(cluster, proxy)? {
                    stored.source = Some(*source);
                    stored.config_version = *config_version;
                    tables.put_proxy(stored)?;
                }
            }
            ChangeKind::Config {
                cluster, config, ..
            } => {
                let blob = blob(blobs, cluster, config.version).ok_or_else(|| {
                    StoreError::Io(format!(
                        "refused a batch: no blob for version {} of {cluster:?}",
                        config.version
                    ))
                })?;
                tables.put_config(cluster, &blob.config)?;
                let keep = u64::try_from(history.configs.max(1)).unwrap_or(u64::MAX);
                if let Some(through) = config.version.checked_sub(keep).filter(|&t| t > 0) {
                    tables.prune_configs(cluster, through)?;
                }
            }
            ChangeKind::Admin { action, by } => tables.push_audit(AuditEntry {
                at_unix_ms: change.at,
                action: audit_json(action, by.as_deref()),
            })?,
            ChangeKind::Rewound { seen_epoch } => tables.rewound(*seen_epoch)?,
            ChangeKind::Cluster {
                cluster,
                settings: Some(settings),
            } => {
                let kept = (!settings.is_default()).then_some(settings);
                tables.put_settings(cluster, kept)?;
            }
            ChangeKind::Cluster {
                cluster,
                settings: None,
            } => {
                // Deleted, with every version of it.
                tables.put_settings(cluster, None)?;
                tables.prune_configs(cluster, u64::MAX)?;
            }
            ChangeKind::LeaveSent { .. }
            | ChangeKind::RestartSent { .. }
            | ChangeKind::Superseded { .. }
            | ChangeKind::DeletionPaused { .. }
            | ChangeKind::Stall { .. }
            | ChangeKind::Rejected { .. } => {}
        }
    }
    if changes
        .iter()
        .any(|c| matches!(c.kind, ChangeKind::Admin { .. }))
    {
        tables.prune_audit(history.audit)?;
    }
    let retention = u64::try_from(retention).unwrap_or(u64::MAX);
    tables.finish(last.revision, last.revision.saturating_sub(retention))
}

/// The epoch of the next boot after `stored`.
fn next_epoch(stored: u32) -> Option<u32> {
    stored.checked_add(1)
}

// ----- The memory store -----

impl StoreRead for MemoryStore {
    fn config_versions(
        &self,
        cluster: &str,
        newest: usize,
    ) -> Result<Vec<StoredConfig>, StoreError> {
        let state = self.state();
        let mut configs: Vec<StoredConfig> = state
            .configs
            .range((cluster.to_owned(), 0)..=(cluster.to_owned(), u64::MAX))
            .rev()
            .take(newest)
            .map(|(_, c)| c.clone())
            .collect();
        configs.reverse();
        Ok(configs)
    }

    fn config_version(
        &self,
        cluster: &str,
        version: u64,
    ) -> Result<Option<StoredConfig>, StoreError> {
        Ok(self
            .state()
            .configs
            .get(&(cluster.to_owned(), version))
            .cloned())
    }
}

/// The state of a [`MemoryStore`].
#[derive(Debug)]
struct MemoryState {
    epoch: u32,
    generation: u64,
    revision: u64,
    proxies: BTreeMap<(String, String), StoredProxy>,
    configs: BTreeMap<(String, u64), StoredConfig>,
    clusters: BTreeMap<String, ClusterSettings>,
    audit: Vec<AuditEntry>,
    /// The log, oldest first, with consecutive revisions.
    changes: VecDeque<WallChange>,
}

impl MemoryState {
    fn oldest_retained(&self) -> u64 {
        self.changes
            .front()
            .map_or(self.revision + 1, |c| c.revision)
    }
}

impl Tables for MemoryState {
    fn proxy(&mut self, cluster: &str, proxy: &str) -> Result<Option<StoredProxy>, StoreError> {
        Ok(self
            .proxies
            .get(&(cluster.to_owned(), proxy.to_owned()))
            .cloned())
    }

    fn put_proxy(&mut self, proxy: StoredProxy) -> Result<(), StoreError> {
        self.proxies
            .insert((proxy.cluster.clone(), proxy.proxy.clone()), proxy);
        Ok(())
    }

    fn delete_proxy(&mut self, cluster: &str, proxy: &str) -> Result<(), StoreError> {
        self.proxies.remove(&(cluster.to_owned(), proxy.to_owned()));
        Ok(())
    }

    fn put_config(&mut self, cluster: &str, config: &ConfigVersion) -> Result<(), StoreError> {
        self.configs.insert(
            (cluster.to_owned(), config.version),
            StoredConfig {
                cluster: cluster.to_owned(),
                version: config.version,
                base: config.base.to_vec(),
                datasources: config.datasources.clone(),
                id: Some(config.id),
            },
        );
        Ok(())
    }

    fn push_audit(&mut self, entry: AuditEntry) -> Result<(), StoreError> {
        self.audit.push(entry);
        Ok(())
    }

    fn prune_configs(&mut self, cluster: &str, through: u64) -> Result<(), StoreError> {
        let pruned: Vec<(String, u64)> = self
            .configs
            .range((cluster.to_owned(), 0)..=(cluster.to_owned(), through))
            .map(|(key, _)| key.clone())
            .collect();
        for key in pruned {
            self.configs.remove(&key);
        }
        Ok(())
    }

    fn put_settings(
        &mut self,
        cluster: &str,
        settings: Option<&ClusterSettings>,
    ) -> Result<(), StoreError> {
        match settings {
            Some(s) => self.clusters.insert(cluster.to_owned(), s.clone()),
            None => self.clusters.remove(cluster),
        };
        Ok(())
    }

    fn prune_audit(&mut self, keep: usize) -> Result<(), StoreError> {
        let excess = self.audit.len().saturating_sub(keep);
        self.audit.drain(..excess);
        Ok(())
    }

    fn push_change(&mut self, change: &WallChange) -> Result<(), StoreError> {
        self.changes.push_back(change.clone());
        Ok(())
    }

    fn rewound(&mut self, seen_epoch: u32) -> Result<(), StoreError> {
        self.generation = self
            .generation
            .checked_add(1)
            .ok_or_else(|| StoreError::Corrupt("the generation cannot grow past u64".to_owned()))?;
        self.epoch = self.epoch.max(seen_epoch);
        Ok(())
    }

    fn finish(&mut self, revision: u64, prune_through: u64) -> Result<(), StoreError> {
        self.revision = revision;
        while self
            .changes
            .front()
            .is_some_and(|c| c.revision <= prune_through)
        {
            self.changes.pop_front();
        }
        Ok(())
    }
}

/// A store in memory, shared by its clones: for tests and simulations, where a clone
/// held outside the keeper survives the keeper's crash. It starts at generation 1; its
/// retention is a setting of each clone, as a [`redb::RedbStore`]'s is of each open.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    state: Arc<Mutex<MemoryState>>,
    retention: usize,
    history: History,
}

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store, at generation 1.
    pub fn new() -> MemoryStore {
        MemoryStore {
            state: Arc::new(Mutex::new(MemoryState {
                epoch: 0,
                generation: 1,
                revision: 0,
                proxies: BTreeMap::new(),
                configs: BTreeMap::new(),
                clusters: BTreeMap::new(),
                audit: Vec::new(),
                changes: VecDeque::new(),
            })),
            retention: DEFAULT_RETENTION,
            history: History::DEFAULT,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemoryStore {
    fn boot(&mut self) -> Result<Snapshot, StoreError> {
        let mut state = self.state();
        state.epoch = next_epoch(state.epoch)
            .ok_or_else(|| StoreError::Corrupt("the epoch cannot grow past u32".to_owned()))?;
        let mut latest: BTreeMap<String, StoredConfig> = BTreeMap::new();
        for config in state.configs.values() {
            latest.insert(config.cluster.clone(), config.clone());
        }
        Ok(Snapshot {
            epoch: state.epoch,
            generation: state.generation,
            revision: state.revision,
            oldest_retained: state.oldest_retained(),
            proxies: state.proxies.values().cloned().collect(),
            configs: latest.into_values().collect(),
            clusters: state
                .clusters
                .iter()
                .map(|(c, s)| (c.clone(), s.clone()))
                .collect(),
            recent: state.changes.iter().cloned().collect(),
            restored: false,
        })
    }

    fn commit(&mut self, changes: &[WallChange], blobs: &[ConfigBlob]) -> Result<(), StoreError> {
        let mut state = self.state();
        check_batch(state.revision, changes, blobs)?;
        apply(&mut *state, changes, blobs, self.retention, self.history)
    }

    fn revision(&self) -> u64 {
        self.state().revision
    }

    fn generation(&self) -> u64 {
        self.state().generation
    }

    fn audit(&self) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(self.state().audit.clone())
    }

    fn reader(&self) -> Result<Arc<dyn StoreRead>, StoreError> {
        Ok(Arc::new(self.clone()))
    }

    fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<WallChange>, StoreError> {
        let state = self.state();
        let start = state.changes.partition_point(|c| c.revision <= after);
        Ok(state
            .changes
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect())
    }

    fn set_retention(&mut self, changes: usize) {
        self.retention = changes;
    }

    fn set_history(&mut self, history: History) {
        self.history = history;
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::keeper::change::StatusChange;
    use crate::keeper::{Reason, Status};

    fn status(revision: u64, name: &str, from: Option<Status>, to: Option<Status>) -> WallChange {
        WallChange {
            revision,
            at: 1_000 + revision,
            kind: ChangeKind::Status(StatusChange {
                cluster: "c".into(),
                proxy: name.into(),
                slot: 0,
                incarnation: 7,
                from,
                to,
                reason: Reason::Heartbeat,
                last_heartbeat: Some(900 + revision),
                source: SocketAddr::from(([10, 0, 0, 1], 3307)),
                config_version: 0,
            }),
        }
    }

    #[test]
    fn a_memory_store_keeps_what_was_committed_across_boots() {
        let mut store = MemoryStore::new();
        let first = store.boot().expect("boots");
        assert_eq!((first.epoch, first.generation, first.revision), (1, 1, 0));
        assert_eq!(first.oldest_retained, 1);
        let batch = [
            status(1, "a:1", None, Some(Status::Ready)),
            status(2, "b:1", None, Some(Status::Up)),
            status(3, "a:1", Some(Status::Ready), Some(Status::Up)),
            status(4, "b:1", Some(Status::Up), None),
        ];
        store.commit(&batch, &[]).expect("commits");
        assert_eq!(store.revision(), 4);
        store.commit(&[], &[]).expect("nothing to commit");
        assert_eq!(store.revision(), 4);
        let mut clone = store.clone();
        let second = clone.boot().expect("boots");
        assert_eq!((second.epoch, second.revision), (2, 4));
        assert_eq!(second.proxies.len(), 1);
        assert_eq!(second.proxies[0].proxy, "a:1");
        assert_eq!(second.proxies[0].status, Status::Up);
        assert_eq!(second.proxies[0].since_unix_ms, Some(1_003));
        assert_eq!(second.recent, batch.to_vec());
        assert_eq!(second.oldest_retained, 1);
    }

    #[test]
    fn a_memory_store_refuses_a_batch_that_does_not_follow_its_revision() {
        let mut store = MemoryStore::new();
        let result = store.commit(&[status(2, "a:1", None, Some(Status::Ready))], &[]);
        assert!(matches!(result, Err(StoreError::Io(_))), "{result:?}");
        assert_eq!(store.revision(), 0);
        assert!(store.boot().expect("boots").recent.is_empty());
    }
}
