//! Persistence: what the keeper stores, and where.
//!
//! The keeper core says what must be persisted: every status change, every deletion,
//! every config version and every admin action leaves it as a [`Change`]
//! (`Keeper::take_changes`). A steady heartbeat changes nothing and writes nothing. The
//! keeper's driver commits the changes of one turn of its loop in one transaction (so a
//! burst of thousands of proxies healing at once is a few commits, not thousands), tells
//! the core what is durable, and only then releases the answers that depend on it: the
//! `Ack` of a registration, and an admin call's success.
//!
//! On start the keeper [`boot`](Store::boot)s the store: the epoch (the keeper's boot
//! counter, inside every freshness token) is bumped durably, and the registry and config
//! versions come back as a [`Snapshot`], from which the core is rebuilt with a fresh
//! window for every proxy. A keeper that was down for any length of time therefore
//! restarts nobody that is still heartbeating.
//!
//! Two stores implement [`Store`]: [`MemoryStore`], shared by clones (it survives a
//! simulated keeper crash when the simulation holds a clone), and
//! [`redb::RedbStore`], the default, a crash-safe file in the data directory.

pub mod redb;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use thiserror::Error;

use crate::keeper::{AdminAction, Persist, Restored, RestoredConfig, RestoredProxy, Status};
use crate::time::Instant;

/// A proxy's registry entry, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredProxy {
    /// The cluster.
    pub cluster: String,
    /// The proxy's identity.
    pub proxy: String,
    /// The incarnation the registry holds.
    pub incarnation: u64,
    /// Its status.
    pub status: Status,
    /// Since when (wall clock, milliseconds since the Unix epoch).
    pub since_unix_ms: u64,
}

/// A config version, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredConfig {
    /// The cluster.
    pub cluster: String,
    /// The version number.
    pub version: u64,
    /// The operator's config file.
    pub base: Vec<u8>,
    /// The active datasource of each hostgroup.
    pub datasources: BTreeMap<String, String>,
}

/// An admin action, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// When (wall clock, milliseconds since the Unix epoch).
    pub at_unix_ms: u64,
    /// What, as one line of JSON (`{"action":"remove","cluster":...}`).
    pub action: String,
}

/// One change to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A proxy was registered or changed status: store its entry (replacing any).
    PutProxy(StoredProxy),
    /// A proxy was deleted.
    DeleteProxy {
        /// The cluster.
        cluster: String,
        /// The proxy's identity.
        proxy: String,
    },
    /// A cluster has a new config version (kept with the earlier ones).
    PutConfig(StoredConfig),
    /// An operator acted.
    Audit(AuditEntry),
}

/// Everything stored, as a keeper boot finds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// This boot's epoch: one more than the last boot's, already durable.
    pub epoch: u32,
    /// The revision of the last commit (0: nothing was ever committed).
    pub revision: u64,
    /// Every registered proxy, sorted by (cluster, proxy).
    pub proxies: Vec<StoredProxy>,
    /// The latest config version of every cluster, sorted by cluster.
    pub configs: Vec<StoredConfig>,
}

/// Why the store failed. A keeper stops on any store failure rather than answer for a
/// change it could not make durable.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Another keeper holds the data directory.
    #[error("the data directory is in use by another keeper: {0}")]
    InUse(String),
    /// The store could not be opened, read or written.
    #[error("store failure: {0}")]
    Io(String),
    /// The store holds something this keeper cannot read (another format, or corrupt).
    #[error("the store cannot be read: {0}")]
    Corrupt(String),
}

/// Where the keeper's state lives.
pub trait Store: Send {
    /// Starts a keeper run: bumps the epoch durably and returns everything stored.
    fn boot(&mut self) -> Result<Snapshot, StoreError>;

    /// Applies `changes`, in order, in one durable transaction; returns the new revision.
    /// An empty list commits nothing and returns the current revision.
    fn commit(&mut self, changes: &[Change]) -> Result<u64, StoreError>;

    /// The revision of the last commit.
    fn revision(&self) -> u64;

    /// Every admin action recorded, oldest first (for audits and tests).
    fn audit(&self) -> Result<Vec<AuditEntry>, StoreError>;
}

/// The store's record of a core change; `wall` gives the wall-clock milliseconds of a
/// core instant (the driver knows its clock).
pub fn change_of(persist: &Persist, wall: impl Fn(Instant) -> u64) -> Change {
    match persist {
        Persist::Proxy {
            cluster,
            proxy,
            incarnation,
            status,
            since,
        } => Change::PutProxy(StoredProxy {
            cluster: cluster.to_string(),
            proxy: proxy.clone(),
            incarnation: *incarnation,
            status: *status,
            since_unix_ms: wall(*since),
        }),
        Persist::Deleted { cluster, proxy } => Change::DeleteProxy {
            cluster: cluster.to_string(),
            proxy: proxy.clone(),
        },
        Persist::Config { cluster, config } => Change::PutConfig(StoredConfig {
            cluster: cluster.to_string(),
            version: config.version,
            base: config.base.to_vec(),
            datasources: config.datasources.clone(),
        }),
        Persist::Admin { at, action } => Change::Audit(AuditEntry {
            at_unix_ms: wall(*at),
            action: audit_json(action),
        }),
    }
}

fn audit_json(action: &AdminAction) -> String {
    let value = match action {
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
    };
    value.to_string()
}

/// What the core is rebuilt from, out of a snapshot.
pub fn restored(snapshot: &Snapshot) -> Restored {
    Restored {
        proxies: snapshot
            .proxies
            .iter()
            .map(|p| RestoredProxy {
                cluster: p.cluster.clone(),
                proxy: p.proxy.clone(),
                incarnation: p.incarnation,
                status: p.status,
            })
            .collect(),
        configs: snapshot
            .configs
            .iter()
            .map(|c| RestoredConfig {
                cluster: c.cluster.clone(),
                version: c.version,
                base: Arc::from(c.base.as_slice()),
                datasources: c.datasources.clone(),
            })
            .collect(),
    }
}

/// The state of a [`MemoryStore`].
#[derive(Debug, Default)]
struct MemoryState {
    epoch: u32,
    revision: u64,
    proxies: BTreeMap<(String, String), StoredProxy>,
    configs: BTreeMap<(String, u64), StoredConfig>,
    audit: Vec<AuditEntry>,
}

/// A store in memory, shared by its clones: for tests and simulations, where a clone
/// held outside the keeper survives the keeper's crash.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<MemoryState>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemoryStore {
    fn boot(&mut self) -> Result<Snapshot, StoreError> {
        let mut state = self.state();
        state.epoch += 1;
        let mut latest: BTreeMap<String, StoredConfig> = BTreeMap::new();
        for config in state.configs.values() {
            latest.insert(config.cluster.clone(), config.clone());
        }
        Ok(Snapshot {
            epoch: state.epoch,
            revision: state.revision,
            proxies: state.proxies.values().cloned().collect(),
            configs: latest.into_values().collect(),
        })
    }

    fn commit(&mut self, changes: &[Change]) -> Result<u64, StoreError> {
        let mut state = self.state();
        if changes.is_empty() {
            return Ok(state.revision);
        }
        for change in changes {
            match change {
                Change::PutProxy(p) => {
                    state
                        .proxies
                        .insert((p.cluster.clone(), p.proxy.clone()), p.clone());
                }
                Change::DeleteProxy { cluster, proxy } => {
                    state.proxies.remove(&(cluster.clone(), proxy.clone()));
                }
                Change::PutConfig(c) => {
                    state
                        .configs
                        .insert((c.cluster.clone(), c.version), c.clone());
                }
                Change::Audit(entry) => state.audit.push(entry.clone()),
            }
        }
        state.revision += 1;
        Ok(state.revision)
    }

    fn revision(&self) -> u64 {
        self.state().revision
    }

    fn audit(&self) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(self.state().audit.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(name: &str, status: Status) -> StoredProxy {
        StoredProxy {
            cluster: "c".into(),
            proxy: name.into(),
            incarnation: 7,
            status,
            since_unix_ms: 1,
        }
    }

    #[test]
    fn a_memory_store_keeps_what_was_committed_across_boots() {
        let mut store = MemoryStore::new();
        let first = store.boot().expect("boots");
        assert_eq!((first.epoch, first.revision), (1, 0));
        let r = store
            .commit(&[
                Change::PutProxy(proxy("a:1", Status::Ready)),
                Change::PutProxy(proxy("b:1", Status::Up)),
                Change::PutProxy(proxy("a:1", Status::Up)),
                Change::DeleteProxy {
                    cluster: "c".into(),
                    proxy: "b:1".into(),
                },
            ])
            .expect("commits");
        assert_eq!(r, 1);
        assert_eq!(store.commit(&[]).expect("nothing to commit"), 1);
        let mut clone = store.clone();
        let second = clone.boot().expect("boots");
        assert_eq!((second.epoch, second.revision), (2, 1));
        assert_eq!(second.proxies, vec![proxy("a:1", Status::Up)]);
    }
}
