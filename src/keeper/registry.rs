//! The registry: clusters, their proxies' records, and tombstones of deleted proxies.
//!
//! Records live in a dense slab indexed by *slot*. The keeper hands each proxy its slot
//! in an `Ack`, and later heartbeats echo it, so the hot path finds a record by indexing
//! an array and comparing the identity, and falls back to the cluster's identity index
//! when the slot is missing or names someone else. The index holds only slots, hashed by
//! identity and compared against the records' own identities, so each identity string is
//! stored once. Hashing uses a fixed seed (iteration order is never shown: listings are
//! sorted when built).

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::Arc;

use compact_str::CompactString;
use foldhash::fast::FixedState;
use hashbrown::HashTable;

use crate::configdoc::ConfigVersion;
use crate::keeper::Status;
use crate::keeper::transition::Stamp;
use crate::time::Instant;
use crate::wire::ConfigId;

/// Index of a cluster in the registry.
pub(crate) type ClusterId = u32;

/// What the keeper holds for one registered proxy.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) cluster: ClusterId,
    /// The identity, inline when it fits in 24 bytes.
    pub(crate) proxy: CompactString,
    /// The last accepted `(incarnation, seq)`.
    pub(crate) stamp: Stamp,
    pub(crate) status: Status,
    /// Source of the last accepted datagram: where answers go.
    pub(crate) reply_to: SocketAddr,
    pub(crate) last_heard: Instant,
    /// When the proxy entered its current status.
    pub(crate) since: Instant,
    /// The one deadline armed for the current status (see `timers`).
    pub(crate) deadline: Instant,
    /// The config version the proxy reports running.
    pub(crate) config_version: u64,
    /// Its id, as a version 2 proxy reports it ([`ConfigId::NONE`]: a version 1 proxy,
    /// one that runs none yet, or a record restored from the store, which keeps only the
    /// number).
    pub(crate) config_id: ConfigId,
}

impl Record {
    /// Whether the proxy runs `config`: by id where it reported one, else by number.
    pub(crate) fn runs(&self, config: &ConfigVersion) -> bool {
        if self.config_id.is_none() {
            self.config_version == config.version
        } else {
            self.config_id == config.id
        }
    }
}

/// A proxy's rejection of its cluster's current config (`ConfigReject`).
#[derive(Debug, Clone)]
pub(crate) struct Rejection {
    /// The incarnation that rejected it.
    pub(crate) incarnation: u64,
    /// The config it rejected (the cluster's current one when it did).
    pub(crate) config: ConfigId,
    /// Why, in the proxy's words (at most 200 bytes).
    pub(crate) reason: Arc<str>,
}

/// What remains of a deleted proxy, for at least `delete_after`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tombstone {
    /// The last accepted `(incarnation, seq)`: nothing at or before it counts again.
    pub(crate) stamp: Stamp,
    /// When the proxy was deleted (or the tombstone made).
    pub(crate) made: Instant,
    pub(crate) expires: Instant,
    /// When the last `Restart` went to this identity (at most one per interval).
    pub(crate) last_restart: Option<Instant>,
}

/// One cluster of proxies.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) name: Arc<str>,
    /// Slots of the cluster's records, by identity.
    pub(crate) index: HashTable<u32>,
    tombstones: HashMap<Box<str>, Tombstone, FixedState>,
    /// Proxies that are `ready` or `lost`: the gate is open only when this is zero.
    pub(crate) not_up: usize,
    /// Proxies that are `lost`.
    pub(crate) lost: usize,
    /// Mass-loss protection holds: lost proxies of this cluster are not deleted.
    pub(crate) deletion_paused: bool,
    pub(crate) config: Arc<ConfigVersion>,
    /// The restart budget's current round, if a `Restart` was sent.
    pub(crate) restarts: Option<RestartRound>,
    /// When the current config became current in this run (`None`: before this run
    /// began, or the cluster's initial config).
    pub(crate) rollout_since: Option<Instant>,
    /// Rejections of the current config, by slot (cleared when the config changes).
    pub(crate) rejections: BTreeMap<u32, Rejection>,
    /// What operators declared about it (see [`super::cluster`]).
    pub(crate) settings: super::cluster::ClusterSettings,
}

/// One round of a cluster's restart budget.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RestartRound {
    /// When the round began (its first `Restart`).
    pub(crate) began: Instant,
    /// Identities sent a `Restart` in it.
    pub(crate) sent: usize,
    /// `up`s of unregistered processes deferred in it.
    pub(crate) deferred: u64,
}

/// All clusters and all records.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// By id; `None` for an id freed and not reused yet.
    clusters: Vec<Option<Cluster>>,
    /// Ids of freed clusters, for reuse.
    free_clusters: Vec<ClusterId>,
    cluster_ids: HashMap<Arc<str>, ClusterId, FixedState>,
    slab: Vec<Option<Record>>,
    free: Vec<u32>,
    /// For a record whose identity a process of a smaller incarnation also claims: that
    /// incarnation and when it was first heard (see `transition`'s clock-skew rule).
    /// Rare, and at most one per record.
    contenders: HashMap<u32, (u64, Instant), FixedState>,
    hasher: FixedState,
    live: usize,
    buried: usize,
}

impl Registry {
    /// The id of the cluster named `name`, if it exists.
    pub(crate) fn cluster_id(&self, name: &str) -> Option<ClusterId> {
        self.cluster_ids.get(name).copied()
    }

    /// The id of the cluster named `name`, created with the initial config if needed
    /// (reusing the id of a freed cluster, if any).
    pub(crate) fn ensure_cluster(&mut self, name: &str) -> ClusterId {
        if let Some(id) = self.cluster_id(name) {
            return id;
        }
        let name: Arc<str> = Arc::from(name);
        let cluster = Cluster {
            name: name.clone(),
            index: HashTable::new(),
            tombstones: HashMap::default(),
            not_up: 0,
            lost: 0,
            deletion_paused: false,
            config: Arc::new(ConfigVersion::initial()),
            restarts: None,
            rollout_since: None,
            rejections: BTreeMap::new(),
            settings: super::cluster::ClusterSettings::default(),
        };
        let id = match self.free_clusters.pop() {
            Some(id) => {
                self.clusters[id as usize] = Some(cluster);
                id
            }
            None => {
                self.clusters.push(Some(cluster));
                ClusterId::try_from(self.clusters.len() - 1).unwrap_or(ClusterId::MAX)
            }
        };
        self.cluster_ids.insert(name, id);
        id
    }

    /// Frees the cluster `id` if it holds nothing: no record, no tombstone, and the
    /// initial config (no version was ever made for it). Its id may be reused. Returns
    /// whether it was freed.
    pub(crate) fn free_if_empty(&mut self, id: ClusterId) -> bool {
        let Some(Some(c)) = self.clusters.get(id as usize) else {
            return false;
        };
        if !c.index.is_empty()
            || !c.tombstones.is_empty()
            || c.config.version != 1
            || !c.settings.is_default()
        {
            return false;
        }
        self.delete_cluster(id);
        true
    }

    /// Drops the cluster `id`, which holds no record, with its tombstones, config and
    /// settings; its id may be reused. (Timers of its tombstones are checked against the
    /// registry when due, so none acts on a cluster that reuses the id.)
    pub(crate) fn delete_cluster(&mut self, id: ClusterId) {
        let Some(Some(c)) = self.clusters.get(id as usize) else {
            return;
        };
        debug_assert!(c.index.is_empty());
        let name = c.name.clone();
        self.cluster_ids.remove(&name);
        self.clusters[id as usize] = None;
        self.free_clusters.push(id);
    }

    /// Number of clusters held.
    pub(crate) fn cluster_count(&self) -> usize {
        self.cluster_ids.len()
    }

    /// The size of cluster `id` for its restart budget: its records and tombstones.
    pub(crate) fn cluster_size(&self, id: ClusterId) -> usize {
        let c = self.cluster(id);
        c.index.len() + c.tombstones.len()
    }

    /// Every cluster held, with its id, in id order.
    pub(crate) fn clusters(&self) -> impl Iterator<Item = (ClusterId, &Cluster)> {
        self.clusters
            .iter()
            .enumerate()
            .filter_map(|(id, c)| Some((ClusterId::try_from(id).ok()?, c.as_ref()?)))
    }

    /// The cluster `id`. Ids come from [`Registry::ensure_cluster`] and are held only by
    /// what belongs to the cluster (records, tombstones), so a cluster is never freed
    /// while an id of it is in use.
    pub(crate) fn cluster(&self, id: ClusterId) -> &Cluster {
        self.clusters[id as usize]
            .as_ref()
            .expect("a cluster id in use names a cluster")
    }

    pub(crate) fn cluster_mut(&mut self, id: ClusterId) -> &mut Cluster {
        held(&mut self.clusters, id)
    }

    /// `hint` if that slot holds `(cluster, proxy)`.
    pub(crate) fn hinted(&self, cluster: ClusterId, proxy: &str, hint: u32) -> Option<u32> {
        let record = self.get(hint)?;
        (record.cluster == cluster && record.proxy == proxy).then_some(hint)
    }

    /// Finds the slot of `(cluster, proxy)`, trying the slot the proxy echoed first.
    pub(crate) fn find(&self, cluster: ClusterId, proxy: &str, hint: u32) -> Option<u32> {
        if let Some(slot) = self.hinted(cluster, proxy, hint) {
            return Some(slot);
        }
        let hash = self.hasher.hash_one(proxy);
        let slab = &self.slab;
        self.cluster(cluster)
            .index
            .find(hash, |&slot| Self::identity(slab, slot) == Some(proxy))
            .copied()
    }

    fn identity(slab: &[Option<Record>], slot: u32) -> Option<&str> {
        let record = slab.get((slot as usize).checked_sub(1)?)?.as_ref()?;
        Some(&record.proxy)
    }

    /// The record in `slot`, if any.
    pub(crate) fn get(&self, slot: u32) -> Option<&Record> {
        let index = (slot as usize).checked_sub(1)?;
        self.slab.get(index)?.as_ref()
    }

    /// The record in `slot`, if any.
    pub(crate) fn get_mut(&mut self, slot: u32) -> Option<&mut Record> {
        let index = (slot as usize).checked_sub(1)?;
        self.slab.get_mut(index)?.as_mut()
    }

    /// Stores a new record and returns its slot.
    pub(crate) fn insert(&mut self, record: Record) -> u32 {
        let cluster = record.cluster;
        let hash = self.hasher.hash_one(&*record.proxy);
        let c = held(&mut self.clusters, cluster);
        c.not_up += usize::from(record.status != Status::Up);
        c.lost += usize::from(record.status == Status::Lost);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize - 1] = Some(record);
                slot
            }
            None => {
                self.slab.push(Some(record));
                u32::try_from(self.slab.len()).unwrap_or(u32::MAX)
            }
        };
        let (slab, hasher) = (&self.slab, &self.hasher);
        held(&mut self.clusters, cluster)
            .index
            .insert_unique(hash, slot, |&s| {
                Self::identity(slab, s).map_or(0, |p| hasher.hash_one(p))
            });
        self.live += 1;
        slot
    }

    /// Removes and returns the record in `slot`.
    pub(crate) fn remove(&mut self, slot: u32) -> Option<Record> {
        let index = (slot as usize).checked_sub(1)?;
        let record = self.slab.get_mut(index)?.take()?;
        let hash = self.hasher.hash_one(&*record.proxy);
        let cluster = held(&mut self.clusters, record.cluster);
        if let Ok(entry) = cluster.index.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        cluster.not_up -= usize::from(record.status != Status::Up);
        cluster.lost -= usize::from(record.status == Status::Lost);
        self.contenders.remove(&slot);
        self.free.push(slot);
        self.live -= 1;
        Some(record)
    }

    /// Changes the status of the record in `slot`, keeping the gate count true.
    pub(crate) fn set_status(&mut self, slot: u32, to: Status, now: Instant) -> Option<Status> {
        let index = (slot as usize).checked_sub(1)?;
        let record = self.slab.get_mut(index)?.as_mut()?;
        let from = record.status;
        if from == to {
            return Some(from);
        }
        record.status = to;
        record.since = now;
        let cluster = held(&mut self.clusters, record.cluster);
        match (from == Status::Up, to == Status::Up) {
            (true, false) => cluster.not_up += 1,
            (false, true) => cluster.not_up -= 1,
            _ => {}
        }
        match (from == Status::Lost, to == Status::Lost) {
            (false, true) => cluster.lost += 1,
            (true, false) => cluster.lost -= 1,
            _ => {}
        }
        Some(from)
    }

    /// Notes that a process of incarnation `incarnation` (smaller than the record's) claims
    /// the identity in `slot`; returns when it was first heard.
    pub(crate) fn contend(&mut self, slot: u32, incarnation: u64, now: Instant) -> Instant {
        let entry = self.contenders.entry(slot).or_insert((incarnation, now));
        if entry.0 != incarnation {
            *entry = (incarnation, now);
        }
        entry.1
    }

    /// Forgets the contender of the record in `slot` (it took a new life).
    pub(crate) fn settle(&mut self, slot: u32) {
        self.contenders.remove(&slot);
    }

    /// Number of registered proxies across all clusters.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Number of `up` records across all clusters (O(clusters)).
    pub(crate) fn up_count(&self) -> usize {
        self.clusters
            .iter()
            .flatten()
            .map(|c| c.index.len().saturating_sub(c.not_up))
            .sum()
    }

    /// Number of tombstones across all clusters.
    pub(crate) fn tombstones(&self) -> usize {
        self.buried
    }

    /// The tombstone of `proxy`, if there is one.
    /// (`None` too for a cluster freed since: a tombstone timer may name one.)
    pub(crate) fn tombstone(&self, cluster: ClusterId, proxy: &str) -> Option<&Tombstone> {
        let cluster = self.clusters.get(cluster as usize)?.as_ref()?;
        cluster.tombstones.get(proxy)
    }

    /// The tombstone of `proxy`, if there is one.
    pub(crate) fn tombstone_mut(
        &mut self,
        cluster: ClusterId,
        proxy: &str,
    ) -> Option<&mut Tombstone> {
        held(&mut self.clusters, cluster).tombstones.get_mut(proxy)
    }

    /// Stores `stone` as the tombstone of `proxy`, replacing any.
    pub(crate) fn set_tombstone(&mut self, cluster: ClusterId, proxy: Box<str>, stone: Tombstone) {
        if held(&mut self.clusters, cluster)
            .tombstones
            .insert(proxy, stone)
            .is_none()
        {
            self.buried += 1;
        }
    }

    /// Removes the tombstone of `proxy`.
    pub(crate) fn remove_tombstone(
        &mut self,
        cluster: ClusterId,
        proxy: &str,
    ) -> Option<Tombstone> {
        let stone = held(&mut self.clusters, cluster).tombstones.remove(proxy);
        if stone.is_some() {
            self.buried -= 1;
        }
        stone
    }
}

/// The cluster `id` of `clusters`, which must be held (see [`Registry::cluster`]).
fn held(clusters: &mut [Option<Cluster>], id: ClusterId) -> &mut Cluster {
    clusters[id as usize]
        .as_mut()
        .expect("a cluster id in use names a cluster")
}
