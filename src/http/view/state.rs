//! The view's compact registry: one [`Entry`] per slot, clusters with their counts and
//! identity index, and the rules that apply a change to them. See the parent module for
//! the memory budget.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, OnceLock};

use compact_str::CompactString;
use foldhash::fast::FixedState;
use hashbrown::HashTable;
use tracing::warn;

use super::audit::Audit;
use super::{Condition, ViewError, ViewSeed};
use crate::api::{ClusterView, gate_word};
use crate::configdoc::ConfigVersion;
use crate::identity::validate_cluster;
use crate::keeper::change::{ChangeKind, ConfigSummary, StatusChange, WallChange};
use crate::keeper::rollout::{RolloutState, judge};
use crate::keeper::{AdminError, Status};

/// One registered proxy. 56 bytes: see the module's memory note.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    /// The identity, inline up to 24 bytes (`10.25.0.11:3000` is 15).
    pub(super) proxy: CompactString,
    pub(super) incarnation: u64,
    /// Since-when in wall-clock ms (low 48 bits, 0: unknown) and the status (bits 48..56).
    pub(super) since_status: u64,
    /// The source, packed (see [`pack_source`]).
    pub(super) source: u64,
    /// The config version it runs; [`BIG_VERSION`]: in the side table.
    pub(super) config_version: u32,
    /// Its cluster's index in [`State::clusters`].
    pub(super) cluster: u32,
}

pub(super) const SINCE_BITS: u32 = 48;
pub(super) const SINCE_MASK: u64 = (1 << SINCE_BITS) - 1;
pub(super) const BIG_VERSION: u32 = u32::MAX;
pub(super) const SOURCE_V4: u64 = 1 << 56;
pub(super) const SOURCE_V6: u64 = 2 << 56;

impl Entry {
    pub(super) fn status(&self) -> Status {
        match (self.since_status >> SINCE_BITS) as u8 {
            0 => Status::Ready,
            1 => Status::Up,
            _ => Status::Lost,
        }
    }

    pub(super) fn since(&self) -> Option<u64> {
        Some(self.since_status & SINCE_MASK).filter(|&ms| ms != 0)
    }

    pub(super) fn set(&mut self, status: Status, since: Option<u64>) {
        let code: u64 = match status {
            Status::Ready => 0,
            Status::Up => 1,
            Status::Lost => 2,
        };
        // 2^48 ms is the year 10889; later is shown as unknown rather than wrapped.
        let since = since.filter(|&ms| ms <= SINCE_MASK).unwrap_or(0);
        self.since_status = code << SINCE_BITS | since;
    }
}

/// A source address in 8 bytes: 0 unknown, `SOURCE_V4 | ip << 16 | port`, or
/// `SOURCE_V6` (the address is in the side table).
pub(super) fn pack_source(source: Option<SocketAddr>) -> u64 {
    match source {
        None => 0,
        Some(SocketAddr::V4(a)) => {
            SOURCE_V4 | u64::from(a.ip().to_bits()) << 16 | u64::from(a.port())
        }
        Some(SocketAddr::V6(_)) => SOURCE_V6,
    }
}

pub(super) fn unpack_v4(packed: u64) -> SocketAddr {
    let ip = Ipv4Addr::from_bits((packed >> 16) as u32);
    SocketAddr::V4(SocketAddrV4::new(ip, packed as u16))
}

#[derive(Debug)]
pub(super) struct Cluster {
    pub(super) name: Arc<str>,
    pub(super) config: ConfigSummary,
    pub(super) deletion_paused: bool,
    /// Frozen for maintenance.
    pub(super) frozen: bool,
    /// Whether it has settings (hostgroups, removal markers, a freeze): the keeper keeps
    /// such a cluster when it is empty, and so does the view.
    pub(super) settled: bool,
    pub(super) ready: u64,
    pub(super) up: u64,
    pub(super) lost: u64,
    /// The slots of its proxies, found by identity (compared against the entries).
    pub(super) index: HashTable<u32>,
    /// When its current config became current (wall ms; `None`: before the view began).
    pub(super) rollout_started: Option<u64>,
    /// Its proxies that report running the current config version.
    pub(super) running: u64,
    /// Rejections of the current config, by proxy: (incarnation, reason).
    pub(super) rejections: BTreeMap<CompactString, (u64, Arc<str>)>,
}

/// How a cluster's rollout stands, as the view judges it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RolloutCounts {
    pub(super) state: RolloutState,
    pub(super) running: u64,
    pub(super) pending: u64,
    pub(super) rejected: u64,
}

impl Cluster {
    pub(super) fn new(name: Arc<str>, config: ConfigSummary, deletion_paused: bool) -> Cluster {
        Cluster {
            name,
            config,
            deletion_paused,
            frozen: false,
            settled: false,
            ready: 0,
            up: 0,
            lost: 0,
            index: HashTable::new(),
            rollout_started: None,
            running: 0,
            rejections: BTreeMap::new(),
        }
    }

    pub(super) fn total(&self) -> u64 {
        self.ready + self.up + self.lost
    }

    pub(super) fn count(&mut self, status: Status, add: bool) {
        let n = match status {
            Status::Ready => &mut self.ready,
            Status::Up => &mut self.up,
            Status::Lost => &mut self.lost,
        };
        *n = if add { *n + 1 } else { n.saturating_sub(1) };
    }

    pub(super) fn gate_open(&self) -> bool {
        self.ready == 0 && self.lost == 0
    }

    pub(super) fn view(&self, rollout: &RolloutCounts) -> ClusterView {
        ClusterView {
            rollout: rollout.state.as_str().to_owned(),
            running: rollout.running,
            pending: rollout.pending,
            rejected: rollout.rejected,
            cluster: self.name.to_string(),
            ready: self.ready,
            up: self.up,
            lost: self.lost,
            config_version: self.config.version,
            gate: gate_word(self.gate_open()).to_owned(),
            deletion_paused: self.deletion_paused,
            frozen: self.frozen,
        }
    }
}

#[derive(Debug)]
pub(super) struct State {
    pub(super) generation: u64,
    pub(super) revision: u64,
    /// Indexed by slot − 1 (slots start at 1).
    pub(super) entries: Vec<Option<Entry>>,
    /// By id; `None` for a cluster freed (see [`State::free_if_empty`]).
    pub(super) clusters: Vec<Option<Cluster>>,
    /// Ids of freed clusters, for reuse.
    pub(super) free_clusters: Vec<u32>,
    pub(super) cluster_ids: HashMap<Arc<str>, u32, FixedState>,
    /// Stored last-heard times (wall ms) of proxies, for as long as this run has not
    /// heard them.
    pub(super) heard: HashMap<u32, u64, FixedState>,
    /// IPv6 sources.
    pub(super) sources_v6: HashMap<u32, SocketAddr, FixedState>,
    /// Config versions past `u32::MAX - 1`.
    pub(super) big_versions: HashMap<u32, u64, FixedState>,
    pub(super) hasher: FixedState,
    pub(super) condition: Condition,
    /// The newest entries of the audit record.
    pub(super) audit: Audit,
    /// When the view began (wall ms): the start of rollouts older than it.
    pub(super) began: u64,
    /// A rollout not converged this long is stuck (ms).
    pub(super) rollout_timeout: u64,
}

/// A proxy copied out of the view, to be turned into a [`ProxyView`] after the lock is
/// released.
pub(super) struct Row {
    pub(super) cluster: u32,
    pub(super) slot: u32,
    pub(super) proxy: CompactString,
    pub(super) status: Status,
    pub(super) incarnation: u64,
    pub(super) since: Option<u64>,
    pub(super) heard: Option<u64>,
    pub(super) source: Option<SocketAddr>,
    pub(super) config_version: u64,
}

impl State {
    pub(super) fn new(seed: ViewSeed) -> State {
        let mut state = State {
            generation: seed.generation,
            revision: seed.revision,
            entries: Vec::new(),
            clusters: Vec::new(),
            free_clusters: Vec::new(),
            cluster_ids: HashMap::default(),
            heard: HashMap::default(),
            sources_v6: HashMap::default(),
            big_versions: HashMap::default(),
            hasher: FixedState::default(),
            condition: Condition::Live,
            audit: Audit::new(seed.audit),
            began: 0,
            rollout_timeout: u64::try_from(crate::keeper::DEFAULT_ROLLOUT_TIMEOUT.as_millis())
                .unwrap_or(u64::MAX),
        };
        for c in seed.clusters {
            let id = state.cluster_id(&c.name);
            if let Some(cluster) = state.cluster_mut(id) {
                cluster.config = c.config;
                cluster.deletion_paused = c.deletion_paused;
                cluster.frozen = c.settings.frozen;
                cluster.settled = !c.settings.is_default();
            }
        }
        for (slot, p) in seed.proxies {
            let cluster: Arc<str> = Arc::from(p.cluster.as_str());
            let id = state.cluster_id(&cluster);
            state.insert(
                slot,
                id,
                &p.proxy,
                p.status,
                p.incarnation,
                p.since_unix_ms,
                p.source,
                p.config_version,
            );
            if let Some(at) = p.last_heartbeat_unix_ms {
                state.heard.insert(slot, at);
            }
        }
        state
    }

    /// The id of `name`, made (at the initial config) if the view does not know it.
    pub(super) fn cluster_id(&mut self, name: &Arc<str>) -> u32 {
        if let Some(&id) = self.cluster_ids.get(name) {
            return id;
        }
        // A cluster the core makes for a first registration starts at the initial config.
        let cluster = Cluster::new(name.clone(), initial_config(), false);
        let id = match self.free_clusters.pop() {
            Some(id) => {
                self.clusters[id as usize] = Some(cluster);
                id
            }
            None => {
                self.clusters.push(Some(cluster));
                u32::try_from(self.clusters.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.cluster_ids.insert(name.clone(), id);
        id
    }

    /// The cluster `id`, if it is held.
    pub(super) fn cluster(&self, id: u32) -> Option<&Cluster> {
        self.clusters.get(id as usize)?.as_ref()
    }

    pub(super) fn cluster_mut(&mut self, id: u32) -> Option<&mut Cluster> {
        self.clusters.get_mut(id as usize)?.as_mut()
    }

    /// Every cluster held, in id order.
    pub(super) fn held(&self) -> impl Iterator<Item = &Cluster> {
        self.clusters.iter().flatten()
    }

    /// Forgets the cluster `id` once it has no proxy and its initial config, as the core
    /// frees it (the core waits for its tombstones too; nothing of those is shown).
    fn free_if_empty(&mut self, id: u32) {
        if let Some(c) = self.cluster(id)
            && c.index.is_empty()
            && c.config.version <= 1
            && !c.settled
        {
            self.cluster_ids.remove(&c.name.clone());
            self.clusters[id as usize] = None;
            self.free_clusters.push(id);
        }
    }

    pub(super) fn entry(&self, slot: u32) -> Option<&Entry> {
        self.entries.get((slot as usize).checked_sub(1)?)?.as_ref()
    }

    pub(super) fn entry_mut(&mut self, slot: u32) -> Option<&mut Entry> {
        self.entries
            .get_mut((slot as usize).checked_sub(1)?)?
            .as_mut()
    }

    /// The slot of `proxy` in cluster `id`.
    pub(super) fn find(&self, id: u32, proxy: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(proxy);
        let entries = &self.entries;
        self.cluster(id)?
            .index
            .find(hash, |&slot| identity(entries, slot) == Some(proxy))
            .copied()
    }

    /// The slot holding (`id`, `proxy`): `slot` if it does, else wherever it is.
    pub(super) fn locate(&self, id: u32, proxy: &str, slot: u32) -> Option<u32> {
        match self.entry(slot) {
            Some(e) if e.cluster == id && e.proxy == proxy => Some(slot),
            _ => self.find(id, proxy),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn insert(
        &mut self,
        slot: u32,
        cluster: u32,
        proxy: &str,
        status: Status,
        incarnation: u64,
        since: Option<u64>,
        source: Option<SocketAddr>,
        config_version: u64,
    ) {
        let Some(index) = (slot as usize).checked_sub(1) else {
            warn!(proxy, "a proxy without a slot; not shown");
            return;
        };
        if self.entry(slot).is_some() {
            self.remove(slot);
        }
        if let Some(other) = self.find(cluster, proxy) {
            self.remove(other);
        }
        let mut entry = Entry {
            proxy: CompactString::from(proxy),
            incarnation,
            since_status: 0,
            source: 0,
            config_version: 0,
            cluster,
        };
        entry.set(status, since);
        if self.entries.len() <= index {
            self.entries.resize_with(index + 1, || None);
        }
        self.entries[index] = Some(entry);
        self.set_source(slot, source);
        self.set_version(slot, config_version);
        let hash = self.hasher.hash_one(proxy);
        let (entries, hasher) = (&self.entries, &self.hasher);
        if let Some(Some(c)) = self.clusters.get_mut(cluster as usize) {
            c.count(status, true);
            c.index.insert_unique(hash, slot, |&s| {
                identity(entries, s).map_or(0, |p| hasher.hash_one(p))
            });
        }
    }

    pub(super) fn remove(&mut self, slot: u32) {
        let Some(entry) = self
            .entries
            .get_mut((slot as usize).wrapping_sub(1))
            .and_then(Option::take)
        else {
            return;
        };
        let hash = self.hasher.hash_one(entry.proxy.as_str());
        let version = match entry.config_version {
            BIG_VERSION => self.big_versions.get(&slot).copied().unwrap_or(u64::MAX),
            v => u64::from(v),
        };
        if let Some(Some(c)) = self.clusters.get_mut(entry.cluster as usize) {
            if let Ok(found) = c.index.find_entry(hash, |&s| s == slot) {
                found.remove();
            }
            c.count(entry.status(), false);
            if version == c.config.version {
                c.running = c.running.saturating_sub(1);
            }
            c.rejections.remove(&entry.proxy);
        }
        self.heard.remove(&slot);
        self.sources_v6.remove(&slot);
        self.big_versions.remove(&slot);
    }

    pub(super) fn set_source(&mut self, slot: u32, source: Option<SocketAddr>) {
        let packed = pack_source(source);
        if let Some(e) = self.entry_mut(slot) {
            e.source = packed;
        }
        match source {
            Some(a @ SocketAddr::V6(_)) => {
                self.sources_v6.insert(slot, a);
            }
            _ => {
                self.sources_v6.remove(&slot);
            }
        }
    }

    /// The config version the proxy in `slot` reports.
    pub(super) fn version_of(&self, slot: u32) -> Option<u64> {
        Some(match self.entry(slot)?.config_version {
            BIG_VERSION => self.big_versions.get(&slot).copied().unwrap_or(u64::MAX),
            v => u64::from(v),
        })
    }

    pub(super) fn set_version(&mut self, slot: u32, version: u64) {
        let Some(before) = self.version_of(slot) else {
            return;
        };
        let small = u32::try_from(version).ok().filter(|&v| v != BIG_VERSION);
        let Some(e) = self.entry_mut(slot) else {
            return;
        };
        e.config_version = small.unwrap_or(BIG_VERSION);
        let (cluster, proxy) = (e.cluster, e.proxy.clone());
        if small.is_some() {
            self.big_versions.remove(&slot);
        } else {
            self.big_versions.insert(slot, version);
        }
        if let Some(c) = self.cluster_mut(cluster)
            && before != version
        {
            let current = c.config.version;
            if before == current {
                c.running = c.running.saturating_sub(1);
            }
            if version == current {
                c.running += 1;
                c.rejections.remove(&proxy);
            }
        }
    }

    /// Counts again which proxies of cluster `id` run its current config (after it
    /// changed), and forgets the rejections of the one before.
    fn recount(&mut self, id: u32) {
        let Some(c) = self.cluster(id) else {
            return;
        };
        let current = c.config.version;
        let running = c
            .index
            .iter()
            .filter(|&&slot| self.version_of(slot) == Some(current))
            .count() as u64;
        if let Some(c) = self.cluster_mut(id) {
            c.running = running;
            c.rejections.clear();
        }
    }

    /// How the rollout of cluster `id` stands at wall time `now` (ms). O(1) while none
    /// is pending; otherwise O(proxies of the cluster), to find the overdue ones.
    pub(super) fn rollout(&self, id: u32, now: u64) -> RolloutCounts {
        let Some(c) = self.cluster(id) else {
            return RolloutCounts {
                state: RolloutState::Converged,
                running: 0,
                pending: 0,
                rejected: 0,
            };
        };
        let rejected = c.rejections.len() as u64;
        let pending = c.total().saturating_sub(c.running + rejected);
        let overdue = if pending == 0 {
            0
        } else {
            self.not_running(id)
                .filter(|(_, e)| !c.rejections.contains_key(&e.proxy))
                .filter(|(_, e)| self.overdue(c, e, now))
                .count() as u64
        };
        RolloutCounts {
            state: judge(pending, rejected, overdue),
            running: c.running,
            pending,
            rejected,
        }
    }

    /// The proxies of cluster `id` that do not report its current config, with slots.
    pub(super) fn not_running(&self, id: u32) -> impl Iterator<Item = (u32, &Entry)> {
        let current = self.cluster(id).map(|c| c.config.version);
        self.cluster(id)
            .into_iter()
            .flat_map(|c| c.index.iter())
            .filter(move |&&slot| self.version_of(slot) != current)
            .filter_map(|&slot| Some((slot, self.entry(slot)?)))
    }

    /// When a pending proxy began to wait for its cluster's rollout (wall ms): the
    /// rollout's start, or for a `ready` proxy the later of that and its registration.
    pub(super) fn pending_since(&self, c: &Cluster, e: &Entry) -> u64 {
        let started = c.rollout_started.unwrap_or(self.began);
        match e.status() {
            // Joined after the rollout began: its own time to pull.
            Status::Ready => started.max(e.since().unwrap_or(0)),
            // There when it began: late from the start (going lost does not reset it).
            Status::Up | Status::Lost => started,
        }
    }

    fn overdue(&self, c: &Cluster, e: &Entry, now: u64) -> bool {
        now.saturating_sub(self.pending_since(c, e)) >= self.rollout_timeout
    }

    pub(super) fn apply(&mut self, change: &WallChange) {
        self.audit.apply(change);
        match &change.kind {
            ChangeKind::Status(c) => self.apply_status(change.at, c),
            ChangeKind::Observed {
                cluster,
                proxy,
                slot,
                source,
                config_version,
            } => {
                let id = self.cluster_id(cluster);
                if let Some(slot) = self.locate(id, proxy, *slot) {
                    self.set_source(slot, Some(*source));
                    self.set_version(slot, *config_version);
                }
            }
            ChangeKind::Config {
                cluster, config, ..
            } => {
                let id = self.cluster_id(cluster);
                if let Some(c) = self.cluster_mut(id) {
                    c.config = config.clone();
                    c.rollout_started = Some(change.at);
                }
                self.recount(id);
            }
            ChangeKind::Rejected {
                cluster,
                proxy,
                slot,
                incarnation,
                config_version,
                reason,
            } => {
                let id = self.cluster_id(cluster);
                let found = self.locate(id, proxy, *slot);
                let runs = found.and_then(|s| self.version_of(s));
                if let Some(c) = self.cluster_mut(id)
                    && found.is_some()
                    && c.config.version == *config_version
                    && runs != Some(*config_version)
                {
                    c.rejections.insert(
                        CompactString::from(&**proxy),
                        (*incarnation, reason.clone()),
                    );
                }
            }
            ChangeKind::DeletionPaused {
                cluster, paused, ..
            } => {
                let id = self.cluster_id(cluster);
                if let Some(c) = self.cluster_mut(id) {
                    c.deletion_paused = *paused;
                }
            }
            ChangeKind::Cluster {
                cluster,
                settings: Some(s),
            } => {
                let id = self.cluster_id(cluster);
                if let Some(c) = self.cluster_mut(id) {
                    c.frozen = s.frozen;
                    c.settled = !s.is_default();
                }
                self.free_if_empty(id);
            }
            ChangeKind::Cluster {
                cluster,
                settings: None,
            } => {
                // Deleted (only an empty cluster is): whatever its config.
                if let Some(&id) = self.cluster_ids.get(&**cluster)
                    && self.cluster(id).is_some_and(|c| c.index.is_empty())
                {
                    self.cluster_ids.remove(&**cluster);
                    self.clusters[id as usize] = None;
                    self.free_clusters.push(id);
                }
            }
            ChangeKind::Admin { .. }
            | ChangeKind::LeaveSent { .. }
            | ChangeKind::RestartSent { .. }
            | ChangeKind::Superseded { .. }
            | ChangeKind::Stall { .. }
            | ChangeKind::Rewound { .. } => {}
        }
        self.revision = change.revision;
    }

    pub(super) fn apply_status(&mut self, at: u64, c: &StatusChange<u64>) {
        let id = self.cluster_id(&c.cluster);
        let found = self.locate(id, &c.proxy, c.slot);
        let Some(to) = c.to else {
            if let Some(slot) = found {
                self.remove(slot);
            }
            self.free_if_empty(id);
            return;
        };
        match found.filter(|&slot| slot == c.slot) {
            Some(slot) => {
                let Some(entry) = self.entry_mut(slot) else {
                    return;
                };
                let before = entry.status();
                if before != to {
                    entry.set(to, Some(at));
                }
                let new_life = entry.incarnation != c.incarnation;
                entry.incarnation = c.incarnation;
                if new_life && let Some(cluster) = self.cluster_mut(id) {
                    cluster.rejections.remove(c.proxy.as_ref());
                }
                if before != to
                    && let Some(cluster) = self.cluster_mut(id)
                {
                    cluster.count(before, false);
                    cluster.count(to, true);
                }
            }
            // New here (or moved to another slot): since this change.
            None => self.insert(
                c.slot,
                id,
                &c.proxy,
                to,
                c.incarnation,
                Some(at),
                None,
                c.config_version,
            ),
        }
        self.set_source(c.slot, Some(c.source));
        self.set_version(c.slot, c.config_version);
        if let Some(heard) = c.last_heartbeat {
            self.heard.insert(c.slot, heard);
        }
    }

    pub(super) fn check(&self) -> Result<(), ViewError> {
        match self.condition {
            Condition::Live => Ok(()),
            Condition::Stopped => Err(ViewError::Stopped),
            Condition::Behind(gone) => Err(ViewError::Behind(gone)),
        }
    }

    /// The id of the cluster named `name`, and the cluster.
    pub(super) fn cluster_named(&self, name: &str) -> Result<(u32, &Cluster), ViewError> {
        validate_cluster(name).map_err(AdminError::from)?;
        self.cluster_ids
            .get(name)
            .and_then(|&id| Some((id, self.cluster(id)?)))
            .ok_or_else(|| AdminError::UnknownCluster(name.to_owned()).into())
    }

    pub(super) fn row(&self, slot: u32, e: &Entry) -> Row {
        let source = match e.source & !((1 << 56) - 1) {
            SOURCE_V4 => Some(unpack_v4(e.source)),
            SOURCE_V6 => self.sources_v6.get(&slot).copied(),
            _ => None,
        };
        let config_version = match e.config_version {
            BIG_VERSION => self.big_versions.get(&slot).copied().unwrap_or(u64::MAX),
            v => u64::from(v),
        };
        Row {
            cluster: e.cluster,
            slot,
            proxy: e.proxy.clone(),
            status: e.status(),
            incarnation: e.incarnation,
            since: e.since(),
            heard: self.heard.get(&slot).copied(),
            source,
            config_version,
        }
    }

    /// The rows of cluster `id`, or of every cluster.
    pub(super) fn rows(&self, id: Option<u32>) -> Vec<Row> {
        match id {
            Some(id) => {
                let Some(c) = self.cluster(id) else {
                    return Vec::new();
                };
                c.index
                    .iter()
                    .filter_map(|&slot| Some(self.row(slot, self.entry(slot)?)))
                    .collect()
            }
            None => self
                .entries
                .iter()
                .enumerate()
                .filter_map(|(i, e)| {
                    let slot = u32::try_from(i + 1).ok()?;
                    Some(self.row(slot, e.as_ref()?))
                })
                .collect(),
        }
    }
}

pub(super) fn identity(entries: &[Option<Entry>], slot: u32) -> Option<&str> {
    let entry = entries.get((slot as usize).checked_sub(1)?)?.as_ref()?;
    Some(entry.proxy.as_str())
}

/// The summary of the config every cluster starts at.
pub(super) fn initial_config() -> ConfigSummary {
    static INITIAL: OnceLock<ConfigSummary> = OnceLock::new();
    INITIAL
        .get_or_init(|| {
            let v = ConfigVersion::initial();
            ConfigSummary {
                version: v.version,
                digest: v.digest,
                size: v.bytes.len(),
                base_size: v.base.len(),
                datasources: v.datasources.clone(),
            }
        })
        .clone()
}
