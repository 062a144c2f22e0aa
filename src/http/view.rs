//! The read view: an informer-style cache of the registry that every read endpoint
//! serves from, so that no listing is ever built on the keeper core's task (a 28 MB
//! listing built there once held heartbeats up long enough for 97,000 proxies to be
//! marked `lost`).
//!
//! A [`View`] starts from a [`ViewSeed`] (what the store holds at boot) and follows the
//! [`ChangeHub`]: [`View::follow`] is the task that applies each committed change, in
//! revision order. Every answer it gives carries the (generation, revision) it reflects.
//! A handler that changed something waits with [`View::wait_for`] until the view
//! reflects that change before it answers (read-your-writes).
//!
//! Steady heartbeats are not changes; the time each proxy was last heard comes from the
//! core's [`LastSeen`] table, read when a listing is built. Where this run has not heard
//! a proxy yet (restored from the store, silent since), the view shows what the store or
//! the last change recorded, and otherwise `null`.
//!
//! **Memory.** The view counts toward the keeper's memory per proxy: 56 bytes per slot
//! ([`Entry`], asserted by a test) in a dense vector indexed by slot, plus about 6 bytes
//! in its cluster's identity index (a table of slots that compares against the entries,
//! so each identity is held once). Rare values live in side tables keyed by slot: IPv6
//! sources, config versions past `u32::MAX`, and the stored last-heard times of proxies
//! this run has not heard yet (those are swept once [`LastSeen`] has them, so after a
//! boot the table empties as the fleet checks in).
//!
//! **Locking.** One `RwLock`. The follower takes it to write a page of changes at a
//! time; a reader takes it to copy what it needs (compact rows), releases it, and only
//! then sorts, formats times and builds the API types. Serializing happens after that,
//! in the handler.

use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use compact_str::CompactString;
use foldhash::fast::FixedState;
use hashbrown::HashTable;
use thiserror::Error;
use tokio::sync::watch;
use tracing::{error, warn};

use crate::api::{
    Blocker, ClusterList, ClusterView, ConfigView, Extra, GateView, Gone, ProxyList, ProxyView,
    gate_word, hex, key_lines, rfc3339_ms,
};
use crate::configdoc::ConfigVersion;
use crate::driver::DriverClock;
use crate::hub::ChangeHub;
use crate::identity::{validate_cluster, validate_proxy};
use crate::keeper::change::{ChangeKind, ConfigSummary, StatusChange, StoredProxy, WallChange};
use crate::keeper::seen::LastSeen;
use crate::keeper::{AdminError, Status};

/// Changes applied under one write lock.
const PAGE: usize = 1024;
/// How often the stored last-heard times of proxies heard since are dropped.
const SWEEP: Duration = Duration::from_secs(5);

/// What the view starts from: the registry and clusters as the store holds them at
/// (`generation`, `revision`).
#[derive(Clone, Debug, Default)]
pub struct ViewSeed {
    /// The store generation.
    pub generation: u64,
    /// The revision the seed reflects.
    pub revision: u64,
    /// Every registered proxy, with its slot.
    pub proxies: Vec<(u32, StoredProxy)>,
    /// Every cluster (a proxy's cluster missing here starts at the initial config).
    pub clusters: Vec<SeedCluster>,
}

/// One cluster of a [`ViewSeed`].
#[derive(Clone, Debug)]
pub struct SeedCluster {
    /// The cluster's name.
    pub name: Arc<str>,
    /// Its current config version.
    pub config: ConfigSummary,
    /// Whether mass-loss protection holds for it.
    pub deletion_paused: bool,
}

/// Why the view cannot answer.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ViewError {
    /// A name is invalid, or no such cluster or proxy.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The keeper has stopped: the view would only show the past.
    #[error("the keeper has stopped")]
    Stopped,
    /// The view fell out of the change history (or the store started a new generation)
    /// and waits to be seeded again.
    #[error(
        "the read view is behind the keeper's change history (oldest held {}, current {}, generation {}) and waits to be rebuilt",
        .0.oldest, .0.current, .0.generation
    )]
    Behind(Gone),
}

/// The informer-style read cache. Cheap to clone: clones share one cache.
#[derive(Clone, Debug)]
pub struct View {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: RwLock<State>,
    seen: LastSeen,
    clock: DriverClock,
    /// What the view reflects, for [`View::wait_for`] and the follower.
    applied: watch::Sender<Applied>,
}

/// What the view reflects, as waiters see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Applied {
    revision: u64,
    /// Bumped by every seed, so a follower waiting for one wakes.
    seeds: u64,
    condition: Condition,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Condition {
    Live,
    Stopped,
    Behind(Gone),
}

/// One registered proxy. 56 bytes: see the module's memory note.
#[derive(Clone, Debug)]
struct Entry {
    /// The identity, inline up to 24 bytes (`10.25.0.11:3000` is 15).
    proxy: CompactString,
    incarnation: u64,
    /// Since-when in wall-clock ms (low 48 bits, 0: unknown) and the status (bits 48..56).
    since_status: u64,
    /// The source, packed (see [`pack_source`]).
    source: u64,
    /// The config version it runs; [`BIG_VERSION`]: in the side table.
    config_version: u32,
    /// Its cluster's index in [`State::clusters`].
    cluster: u32,
}

const SINCE_BITS: u32 = 48;
const SINCE_MASK: u64 = (1 << SINCE_BITS) - 1;
const BIG_VERSION: u32 = u32::MAX;
const SOURCE_V4: u64 = 1 << 56;
const SOURCE_V6: u64 = 2 << 56;

impl Entry {
    fn status(&self) -> Status {
        match (self.since_status >> SINCE_BITS) as u8 {
            0 => Status::Ready,
            1 => Status::Up,
            _ => Status::Lost,
        }
    }

    fn since(&self) -> Option<u64> {
        Some(self.since_status & SINCE_MASK).filter(|&ms| ms != 0)
    }

    fn set(&mut self, status: Status, since: Option<u64>) {
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
fn pack_source(source: Option<SocketAddr>) -> u64 {
    match source {
        None => 0,
        Some(SocketAddr::V4(a)) => {
            SOURCE_V4 | u64::from(a.ip().to_bits()) << 16 | u64::from(a.port())
        }
        Some(SocketAddr::V6(_)) => SOURCE_V6,
    }
}

fn unpack_v4(packed: u64) -> SocketAddr {
    let ip = Ipv4Addr::from_bits((packed >> 16) as u32);
    SocketAddr::V4(SocketAddrV4::new(ip, packed as u16))
}

#[derive(Debug)]
struct Cluster {
    name: Arc<str>,
    config: ConfigSummary,
    deletion_paused: bool,
    ready: u64,
    up: u64,
    lost: u64,
    /// The slots of its proxies, found by identity (compared against the entries).
    index: HashTable<u32>,
}

impl Cluster {
    fn new(name: Arc<str>, config: ConfigSummary, deletion_paused: bool) -> Cluster {
        Cluster {
            name,
            config,
            deletion_paused,
            ready: 0,
            up: 0,
            lost: 0,
            index: HashTable::new(),
        }
    }

    fn count(&mut self, status: Status, add: bool) {
        let n = match status {
            Status::Ready => &mut self.ready,
            Status::Up => &mut self.up,
            Status::Lost => &mut self.lost,
        };
        *n = if add { *n + 1 } else { n.saturating_sub(1) };
    }

    fn gate_open(&self) -> bool {
        self.ready == 0 && self.lost == 0
    }

    fn view(&self) -> ClusterView {
        ClusterView {
            name: self.name.to_string(),
            ready: self.ready,
            up: self.up,
            lost: self.lost,
            config_version: self.config.version,
            gate: gate_word(self.gate_open()).to_owned(),
            deletion_paused: self.deletion_paused,
        }
    }
}

#[derive(Debug)]
struct State {
    generation: u64,
    revision: u64,
    /// Indexed by slot − 1 (slots start at 1).
    entries: Vec<Option<Entry>>,
    clusters: Vec<Cluster>,
    cluster_ids: HashMap<Arc<str>, u32, FixedState>,
    /// Stored last-heard times (wall ms) of proxies, for as long as this run has not
    /// heard them.
    heard: HashMap<u32, u64, FixedState>,
    /// IPv6 sources.
    sources_v6: HashMap<u32, SocketAddr, FixedState>,
    /// Config versions past `u32::MAX - 1`.
    big_versions: HashMap<u32, u64, FixedState>,
    hasher: FixedState,
    condition: Condition,
}

/// A proxy copied out of the view, to be turned into a [`ProxyView`] after the lock is
/// released.
struct Row {
    cluster: u32,
    slot: u32,
    proxy: CompactString,
    status: Status,
    incarnation: u64,
    since: Option<u64>,
    heard: Option<u64>,
    source: Option<SocketAddr>,
    config_version: u64,
}

impl State {
    fn new(seed: ViewSeed) -> State {
        let mut state = State {
            generation: seed.generation,
            revision: seed.revision,
            entries: Vec::new(),
            clusters: Vec::new(),
            cluster_ids: HashMap::default(),
            heard: HashMap::default(),
            sources_v6: HashMap::default(),
            big_versions: HashMap::default(),
            hasher: FixedState::default(),
            condition: Condition::Live,
        };
        for c in seed.clusters {
            let id = state.cluster_id(&c.name);
            let cluster = &mut state.clusters[id as usize];
            cluster.config = c.config;
            cluster.deletion_paused = c.deletion_paused;
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
    fn cluster_id(&mut self, name: &Arc<str>) -> u32 {
        if let Some(&id) = self.cluster_ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.clusters.len()).unwrap_or(u32::MAX);
        // A cluster the core makes for a first registration starts at the initial config.
        self.clusters
            .push(Cluster::new(name.clone(), initial_config(), false));
        self.cluster_ids.insert(name.clone(), id);
        id
    }

    fn entry(&self, slot: u32) -> Option<&Entry> {
        self.entries.get((slot as usize).checked_sub(1)?)?.as_ref()
    }

    fn entry_mut(&mut self, slot: u32) -> Option<&mut Entry> {
        self.entries
            .get_mut((slot as usize).checked_sub(1)?)?
            .as_mut()
    }

    /// The slot of `proxy` in cluster `id`.
    fn find(&self, id: u32, proxy: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(proxy);
        let entries = &self.entries;
        self.clusters
            .get(id as usize)?
            .index
            .find(hash, |&slot| identity(entries, slot) == Some(proxy))
            .copied()
    }

    /// The slot holding (`id`, `proxy`): `slot` if it does, else wherever it is.
    fn locate(&self, id: u32, proxy: &str, slot: u32) -> Option<u32> {
        match self.entry(slot) {
            Some(e) if e.cluster == id && e.proxy == proxy => Some(slot),
            _ => self.find(id, proxy),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
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
        if let Some(c) = self.clusters.get_mut(cluster as usize) {
            c.count(status, true);
            c.index.insert_unique(hash, slot, |&s| {
                identity(entries, s).map_or(0, |p| hasher.hash_one(p))
            });
        }
    }

    fn remove(&mut self, slot: u32) {
        let Some(entry) = self
            .entries
            .get_mut((slot as usize).wrapping_sub(1))
            .and_then(Option::take)
        else {
            return;
        };
        let hash = self.hasher.hash_one(entry.proxy.as_str());
        if let Some(c) = self.clusters.get_mut(entry.cluster as usize) {
            if let Ok(found) = c.index.find_entry(hash, |&s| s == slot) {
                found.remove();
            }
            c.count(entry.status(), false);
        }
        self.heard.remove(&slot);
        self.sources_v6.remove(&slot);
        self.big_versions.remove(&slot);
    }

    fn set_source(&mut self, slot: u32, source: Option<SocketAddr>) {
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

    fn set_version(&mut self, slot: u32, version: u64) {
        let small = u32::try_from(version).ok().filter(|&v| v != BIG_VERSION);
        if let Some(e) = self.entry_mut(slot) {
            e.config_version = small.unwrap_or(BIG_VERSION);
        }
        if small.is_some() {
            self.big_versions.remove(&slot);
        } else {
            self.big_versions.insert(slot, version);
        }
    }

    fn apply(&mut self, change: &WallChange) {
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
                self.clusters[id as usize].config = config.clone();
            }
            ChangeKind::DeletionPaused {
                cluster, paused, ..
            } => {
                let id = self.cluster_id(cluster);
                self.clusters[id as usize].deletion_paused = *paused;
            }
            ChangeKind::Admin(_)
            | ChangeKind::RestartSent { .. }
            | ChangeKind::Superseded { .. }
            | ChangeKind::Stall { .. }
            | ChangeKind::Rewound { .. } => {}
        }
        self.revision = change.revision;
    }

    fn apply_status(&mut self, at: u64, c: &StatusChange<u64>) {
        let id = self.cluster_id(&c.cluster);
        let found = self.locate(id, &c.proxy, c.slot);
        let Some(to) = c.to else {
            if let Some(slot) = found {
                self.remove(slot);
            }
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
                entry.incarnation = c.incarnation;
                if before != to
                    && let Some(cluster) = self.clusters.get_mut(id as usize)
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

    fn check(&self) -> Result<(), ViewError> {
        match self.condition {
            Condition::Live => Ok(()),
            Condition::Stopped => Err(ViewError::Stopped),
            Condition::Behind(gone) => Err(ViewError::Behind(gone)),
        }
    }

    fn cluster_named(&self, name: &str) -> Result<u32, ViewError> {
        validate_cluster(name).map_err(AdminError::from)?;
        self.cluster_ids
            .get(name)
            .copied()
            .ok_or_else(|| AdminError::UnknownCluster(name.to_owned()).into())
    }

    fn row(&self, slot: u32, e: &Entry) -> Row {
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
    fn rows(&self, id: Option<u32>) -> Vec<Row> {
        match id {
            Some(id) => {
                let Some(c) = self.clusters.get(id as usize) else {
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

fn identity(entries: &[Option<Entry>], slot: u32) -> Option<&str> {
    let entry = entries.get((slot as usize).checked_sub(1)?)?.as_ref()?;
    Some(entry.proxy.as_str())
}

/// The summary of the config every cluster starts at.
fn initial_config() -> ConfigSummary {
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

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Releases the hub's hold when the follower ends.
struct Hold(Arc<ChangeHub>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Cluster names by id, and which are paused, copied out with the rows.
struct Names {
    names: Vec<Arc<str>>,
    paused: Vec<bool>,
}

impl View {
    /// A view of `seed`, reading last-heard times from `seen` (the core's table) and
    /// converting them to wall-clock times with `clock` (the driver's).
    pub fn new(seed: ViewSeed, seen: LastSeen, clock: DriverClock) -> View {
        let state = State::new(seed);
        let applied = watch::Sender::new(Applied {
            revision: state.revision,
            seeds: 0,
            condition: Condition::Live,
        });
        View {
            inner: Arc::new(Inner {
                state: RwLock::new(state),
                seen,
                clock,
                applied,
            }),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.inner.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, state: &State) {
        let revision = state.revision;
        let condition = state.condition;
        self.inner.applied.send_modify(|a| {
            a.revision = revision;
            a.condition = condition;
        });
    }

    /// Replaces everything with `seed` (after the store started a new generation, or the
    /// view fell out of the change history); the view answers again.
    pub fn reseed(&self, seed: ViewSeed) {
        let mut state = self.write();
        *state = State::new(seed);
        self.publish(&state);
        drop(state);
        self.inner.applied.send_modify(|a| a.seeds += 1);
    }

    /// The revision the view reflects.
    pub fn revision(&self) -> u64 {
        self.read().revision
    }

    /// The (generation, revision) the view reflects.
    pub fn position(&self) -> (u64, u64) {
        let state = self.read();
        (state.generation, state.revision)
    }

    /// Completes once the view reflects `revision` (`true`), or once it never will
    /// because its follower ended (`false`: the keeper stopped, or the view fell behind).
    pub async fn wait_for(&self, revision: u64) -> bool {
        let mut rx = self.inner.applied.subscribe();
        // `self` holds the sender: the channel cannot close while we wait.
        match rx
            .wait_for(|a| a.revision >= revision || a.condition != Condition::Live)
            .await
        {
            Ok(a) => a.revision >= revision,
            Err(_) => false,
        }
    }

    /// Applies committed changes, in revision order.
    pub fn apply(&self, changes: &[Arc<WallChange>]) {
        if changes.is_empty() {
            return;
        }
        let mut state = self.write();
        for change in changes {
            if change.revision <= state.revision {
                continue;
            }
            state.apply(change);
        }
        self.publish(&state);
    }

    fn set_condition(&self, condition: Condition) {
        let mut state = self.write();
        state.condition = condition;
        self.publish(&state);
    }

    /// Drops the stored last-heard times of proxies this run has heard since.
    fn sweep(&self) {
        let mut state = self.write();
        if state.heard.is_empty() {
            return;
        }
        let seen = &self.inner.seen;
        state.heard.retain(|&slot, _| seen.get(slot).is_none());
    }

    /// The task that keeps the view current: it applies every change `hub` publishes,
    /// page by page, until `shutdown` completes. When the hub closes (the keeper
    /// stopped) it applies what is left, then the view answers `Stopped`.
    ///
    /// It holds the hub's history from the view's revision on, from the moment this is
    /// called (before the task first runs), so the view never misses a change however
    /// large a batch is published. Only a new generation can leave it behind: then it
    /// answers `Behind` until [`reseed`](View::reseed).
    pub fn follow(
        &self,
        hub: Arc<ChangeHub>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let view = self.clone();
        hub.hold(view.revision());
        // Lets go of the history however the task ends (a panic or an abort too).
        let hold = Hold(hub.clone());
        async move {
            let hold = hold;
            let hub = &hold.0;
            tokio::pin!(shutdown);
            let mut sweep = tokio::time::interval(SWEEP);
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut applied = view.inner.applied.subscribe();
            loop {
                // The seed count before the position: a reseed after this wakes the wait.
                let seeds = applied.borrow_and_update().seeds;
                let (generation, revision) = view.position();
                let behind = match hub.read_after(generation, revision, PAGE) {
                    Ok(page) if !page.is_empty() => {
                        view.apply(&page);
                        hub.hold(view.revision());
                        continue;
                    }
                    Ok(_) if hub.is_closed() => {
                        view.set_condition(Condition::Stopped);
                        return;
                    }
                    Ok(_) => false,
                    Err(_) if hub.is_closed() => {
                        view.set_condition(Condition::Stopped);
                        return;
                    }
                    Err(gone) => {
                        error!(
                            generation,
                            revision,
                            oldest = gone.oldest,
                            current = gone.current,
                            "the read view is out of the change history; it answers 500 until seeded again"
                        );
                        view.set_condition(Condition::Behind(gone));
                        // Nothing to hold for until a seed says where it stands.
                        hub.release();
                        true
                    }
                };
                // `biased`: shutdown first; then a new seed, then new changes (not while
                // behind: the hub would answer `Gone` at once), then the sweep, which
                // only saves memory.
                tokio::select! {
                    biased;
                    () = &mut shutdown => return,
                    _ = applied.wait_for(|a| a.seeds != seeds) => hub.hold(view.revision()),
                    () = hub.wait_after(generation, revision), if !behind => {}
                    _ = sweep.tick() => view.sweep(),
                }
            }
        }
    }

    /// Every cluster, sorted by name.
    pub fn clusters(&self) -> Result<ClusterList, ViewError> {
        let state = self.read();
        state.check()?;
        let mut clusters: Vec<ClusterView> = state.clusters.iter().map(Cluster::view).collect();
        let (generation, revision) = (state.generation, state.revision);
        drop(state);
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ClusterList {
            generation,
            revision,
            clusters,
        })
    }

    /// One cluster.
    pub fn cluster(&self, name: &str) -> Result<ClusterView, ViewError> {
        let state = self.read();
        state.check()?;
        let id = state.cluster_named(name)?;
        Ok(state.clusters[id as usize].view())
    }

    /// The names of the clusters in mass loss, sorted.
    pub fn paused_clusters(&self) -> Result<Vec<String>, ViewError> {
        let state = self.read();
        state.check()?;
        let mut names: Vec<String> = state
            .clusters
            .iter()
            .filter(|c| c.deletion_paused)
            .map(|c| c.name.to_string())
            .collect();
        drop(state);
        names.sort();
        Ok(names)
    }

    /// Copies the rows of one cluster (or all) and the cluster names, under the lock.
    fn copy(&self, cluster: Option<&str>) -> Result<(Vec<Row>, Names, u64, u64), ViewError> {
        let state = self.read();
        state.check()?;
        let id = cluster.map(|name| state.cluster_named(name)).transpose()?;
        let rows = state.rows(id);
        let names = Names {
            names: state.clusters.iter().map(|c| c.name.clone()).collect(),
            paused: state.clusters.iter().map(|c| c.deletion_paused).collect(),
        };
        Ok((rows, names, state.generation, state.revision))
    }

    fn sort(rows: &mut [Row], names: &Names) {
        rows.sort_unstable_by(|a, b| {
            let name = |r: &Row| names.names.get(r.cluster as usize).cloned();
            name(a).cmp(&name(b)).then_with(|| a.proxy.cmp(&b.proxy))
        });
    }

    fn proxy_view(&self, row: Row, names: &Names, now: u64) -> ProxyView {
        let clock = &self.inner.clock;
        let heard = self
            .inner
            .seen
            .get(row.slot)
            .map(|at| unix_ms(clock.wall(at)))
            .or(row.heard);
        let cluster = row.cluster as usize;
        ProxyView {
            cluster: names
                .names
                .get(cluster)
                .map_or_else(String::new, |n| n.to_string()),
            proxy: row.proxy.into_string(),
            status: row.status.as_str().to_owned(),
            incarnation: row.incarnation,
            last_heartbeat: heard.map(rfc3339_ms),
            last_heartbeat_age_ms: heard.map(|t| now.saturating_sub(t)),
            since: row.since.map(rfc3339_ms),
            since_age_ms: row.since.map(|t| now.saturating_sub(t)),
            source: row.source.map(|s| s.to_string()),
            config_version: row.config_version,
            deletion_paused: names.paused.get(cluster).copied().unwrap_or(false),
            extra: Extra::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        let clock = &self.inner.clock;
        unix_ms(clock.wall(clock.now()))
    }

    /// The proxies of `cluster`, or of every cluster, sorted by cluster and identity.
    pub fn proxies(&self, cluster: Option<&str>) -> Result<ProxyList, ViewError> {
        let (mut rows, names, generation, revision) = self.copy(cluster)?;
        Self::sort(&mut rows, &names);
        let now = self.now_ms();
        let proxies = rows
            .into_iter()
            .map(|row| self.proxy_view(row, &names, now))
            .collect();
        Ok(ProxyList {
            generation,
            revision,
            cluster: cluster.map(str::to_owned),
            proxies,
        })
    }

    /// One proxy.
    pub fn proxy(&self, cluster: &str, proxy: &str) -> Result<ProxyView, ViewError> {
        // The proxy's name first, as the core checks it: a bad address is 400 anywhere.
        validate_proxy(proxy).map_err(AdminError::from)?;
        let state = self.read();
        state.check()?;
        let id = state.cluster_named(cluster)?;
        let row = state
            .find(id, proxy)
            .and_then(|slot| Some(state.row(slot, state.entry(slot)?)))
            .ok_or_else(|| AdminError::UnknownProxy {
                cluster: cluster.to_owned(),
                proxy: proxy.to_owned(),
            })?;
        let c = &state.clusters[id as usize];
        let names = Names {
            names: vec![c.name.clone()],
            paused: vec![c.deletion_paused],
        };
        drop(state);
        let row = Row { cluster: 0, ..row };
        Ok(self.proxy_view(row, &names, self.now_ms()))
    }

    /// The seed's status lines of `cluster`, or of every cluster, sorted.
    pub fn keys(&self, cluster: Option<&str>) -> Result<String, ViewError> {
        Ok(key_lines(&self.proxies(cluster)?.proxies))
    }

    /// A cluster's gate, with every blocker sorted by identity.
    pub fn gate(&self, cluster: &str) -> Result<GateView, ViewError> {
        let state = self.read();
        state.check()?;
        let id = state.cluster_named(cluster)?;
        let c = &state.clusters[id as usize];
        let mut blockers: Vec<(CompactString, Status)> = if c.gate_open() {
            Vec::new()
        } else {
            c.index
                .iter()
                .filter_map(|&slot| state.entry(slot))
                .filter(|e| e.status() != Status::Up)
                .map(|e| (e.proxy.clone(), e.status()))
                .collect()
        };
        drop(state);
        blockers.sort_unstable();
        Ok(GateView {
            cluster: cluster.to_owned(),
            open: blockers.is_empty(),
            blockers: blockers
                .into_iter()
                .map(|(proxy, status)| Blocker {
                    proxy: proxy.into_string(),
                    status: status.as_str().to_owned(),
                })
                .collect(),
        })
    }

    /// A cluster's current config version.
    pub fn config(&self, cluster: &str) -> Result<ConfigView, ViewError> {
        let state = self.read();
        state.check()?;
        let id = state.cluster_named(cluster)?;
        let config = &state.clusters[id as usize].config;
        Ok(ConfigView {
            cluster: cluster.to_owned(),
            version: config.version,
            digest: hex(&config.digest),
            size: config.size as u64,
            base_size: config.base_size as u64,
            datasources: config.datasources.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::keeper::change::Change;
    use crate::keeper::seen::SeenWriter;
    use crate::keeper::transition::Reason;
    use crate::time::Instant;

    const C: &str = "test_cluster";

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("an address")
    }

    fn status(
        revision: u64,
        at: u64,
        slot: u32,
        proxy: &str,
        from: Option<Status>,
        to: Option<Status>,
    ) -> Arc<WallChange> {
        Arc::new(Change {
            revision,
            at,
            kind: ChangeKind::Status(StatusChange {
                cluster: Arc::from(C),
                proxy: Arc::from(proxy),
                slot,
                incarnation: 100 + u64::from(slot),
                from,
                to,
                reason: Reason::Heartbeat,
                last_heartbeat: Some(at),
                source: addr("127.0.0.1:4000"),
                config_version: 1,
            }),
        })
    }

    fn summary(version: u64) -> ConfigSummary {
        ConfigSummary {
            version,
            digest: [version as u8; 32],
            size: 10,
            base_size: 3,
            datasources: BTreeMap::from([("hg".to_owned(), "ds".to_owned())]),
        }
    }

    fn stored(proxy: &str, status: Status) -> StoredProxy {
        StoredProxy {
            cluster: C.to_owned(),
            proxy: proxy.to_owned(),
            incarnation: 5,
            status,
            since_unix_ms: Some(1_000),
            last_heartbeat_unix_ms: Some(2_000),
            source: Some(addr("[::1]:4000")),
            config_version: 1,
        }
    }

    fn view(seed: ViewSeed) -> (View, SeenWriter) {
        let seen = LastSeen::new();
        let writer = SeenWriter::new(seen.clone());
        (View::new(seed, seen, DriverClock::start()), writer)
    }

    #[test]
    fn an_entry_of_the_view_takes_at_most_56_bytes() {
        assert!(
            std::mem::size_of::<Option<Entry>>() <= 56,
            "{} bytes",
            std::mem::size_of::<Option<Entry>>()
        );
        // The cluster index: a slot per proxy (plus the table's control bytes).
        assert_eq!(std::mem::size_of::<u32>(), 4);
    }

    #[test]
    fn a_seed_is_shown_as_the_store_recorded_it() {
        let seed = ViewSeed {
            generation: 2,
            revision: 7,
            proxies: vec![
                (1, stored("10.0.0.2:1", Status::Up)),
                (3, stored("10.0.0.1:1", Status::Lost)),
            ],
            clusters: vec![SeedCluster {
                name: Arc::from(C),
                config: summary(4),
                deletion_paused: true,
            }],
        };
        let (view, _) = view(seed);
        let list = view.proxies(None).expect("live");
        assert_eq!((list.generation, list.revision), (2, 7));
        let names: Vec<&str> = list.proxies.iter().map(|p| p.proxy.as_str()).collect();
        assert_eq!(names, ["10.0.0.1:1", "10.0.0.2:1"]);
        let p = &list.proxies[0];
        assert_eq!(p.status, "lost");
        assert_eq!(p.since.as_deref(), Some("1970-01-01T00:00:01.000Z"));
        assert_eq!(
            p.last_heartbeat.as_deref(),
            Some("1970-01-01T00:00:02.000Z")
        );
        assert_eq!(p.source.as_deref(), Some("[::1]:4000"));
        assert!(p.deletion_paused);
        let cluster = view.cluster(C).expect("known");
        assert_eq!(
            (
                cluster.up,
                cluster.lost,
                cluster.config_version,
                cluster.gate.as_str()
            ),
            (1, 1, 4, "closed")
        );
        assert_eq!(view.config(C).expect("known").version, 4);
        assert_eq!(view.paused_clusters().expect("live"), [C]);
    }

    #[test]
    fn what_the_store_did_not_record_is_shown_as_unknown() {
        let mut p = stored("10.0.0.1:1", Status::Up);
        p.since_unix_ms = None;
        p.last_heartbeat_unix_ms = None;
        p.source = None;
        let (view, _) = view(ViewSeed {
            proxies: vec![(1, p)],
            ..ViewSeed::default()
        });
        let p = view.proxy(C, "10.0.0.1:1").expect("known");
        assert_eq!(
            (
                p.since,
                p.since_age_ms,
                p.last_heartbeat,
                p.last_heartbeat_age_ms,
                p.source
            ),
            (None, None, None, None, None)
        );
        // A cluster the seed did not list starts at the initial config.
        assert_eq!(view.config(C).expect("known").version, 1);
    }

    #[test]
    fn status_changes_upsert_count_and_delete() {
        let (view, _) = view(ViewSeed::default());
        view.apply(&[
            status(1, 1_000, 1, "10.0.0.1:1", None, Some(Status::Ready)),
            status(2, 1_100, 2, "10.0.0.2:1", None, Some(Status::Ready)),
            status(
                3,
                2_000,
                1,
                "10.0.0.1:1",
                Some(Status::Ready),
                Some(Status::Up),
            ),
        ]);
        assert_eq!(view.revision(), 3);
        let c = view.cluster(C).expect("made by a registration");
        assert_eq!(
            (c.ready, c.up, c.lost, c.gate.as_str()),
            (1, 1, 0, "closed")
        );
        let p = view.proxy(C, "10.0.0.1:1").expect("registered");
        assert_eq!(p.status, "up");
        assert_eq!(p.since.as_deref(), Some("1970-01-01T00:00:02.000Z"));
        assert_eq!(p.incarnation, 101);
        assert_eq!(p.source.as_deref(), Some("127.0.0.1:4000"));
        assert_eq!(
            p.last_heartbeat.as_deref(),
            Some("1970-01-01T00:00:02.000Z")
        );
        view.apply(&[status(4, 3_000, 2, "10.0.0.2:1", Some(Status::Ready), None)]);
        let c = view.cluster(C).expect("still known");
        assert_eq!((c.ready, c.up, c.gate.as_str()), (0, 1, "open"));
        assert!(matches!(
            view.proxy(C, "10.0.0.2:1"),
            Err(ViewError::Admin(AdminError::UnknownProxy { .. }))
        ));
        // Changes already applied are not applied twice.
        view.apply(&[status(2, 9_000, 2, "10.0.0.2:1", None, Some(Status::Ready))]);
        assert_eq!(view.proxies(Some(C)).expect("known").proxies.len(), 1);
    }

    #[test]
    fn since_moves_only_when_the_status_does() {
        let (view, _) = view(ViewSeed::default());
        view.apply(&[
            status(1, 1_000, 1, "10.0.0.1:1", None, Some(Status::Up)),
            status(
                2,
                5_000,
                1,
                "10.0.0.1:1",
                Some(Status::Up),
                Some(Status::Up),
            ),
        ]);
        let p = view.proxy(C, "10.0.0.1:1").expect("registered");
        assert_eq!(p.since.as_deref(), Some("1970-01-01T00:00:01.000Z"));
        assert_eq!(
            p.last_heartbeat.as_deref(),
            Some("1970-01-01T00:00:05.000Z")
        );
    }

    #[test]
    fn the_last_heartbeat_comes_from_the_cores_table_when_it_has_one() {
        let (view, mut seen) = view(ViewSeed {
            proxies: vec![(1, stored("10.0.0.1:1", Status::Up))],
            ..ViewSeed::default()
        });
        seen.set(1, Instant::from_millis(250));
        let p = view.proxy(C, "10.0.0.1:1").expect("known");
        let clock = view.inner.clock;
        let want = unix_ms(clock.wall(Instant::from_millis(250)));
        assert_eq!(p.last_heartbeat, Some(rfc3339_ms(want)));
        // Once heard, the stored time is no longer kept.
        view.sweep();
        assert!(view.read().heard.is_empty());
    }

    #[test]
    fn observed_config_and_deletion_paused_changes_update_what_they_name() {
        let (view, _) = view(ViewSeed::default());
        view.apply(&[
            status(1, 1_000, 1, "10.0.0.1:1", None, Some(Status::Up)),
            Arc::new(Change {
                revision: 2,
                at: 1_500,
                kind: ChangeKind::Observed {
                    cluster: Arc::from(C),
                    proxy: Arc::from("10.0.0.1:1"),
                    slot: 1,
                    source: addr("10.9.9.9:5"),
                    config_version: u64::from(u32::MAX) + 7,
                },
            }),
            Arc::new(Change {
                revision: 3,
                at: 1_600,
                kind: ChangeKind::Config {
                    cluster: Arc::from("fresh"),
                    config: summary(2),
                    cause: crate::keeper::change::ConfigCause::Push,
                },
            }),
            Arc::new(Change {
                revision: 4,
                at: 1_700,
                kind: ChangeKind::DeletionPaused {
                    cluster: Arc::from(C),
                    paused: true,
                    lost: 2,
                    total: 3,
                },
            }),
            Arc::new(Change {
                revision: 5,
                at: 1_800,
                kind: ChangeKind::Stall {
                    length: Duration::from_secs(1),
                    shifted: 1,
                },
            }),
        ]);
        assert_eq!(view.revision(), 5);
        let p = view.proxy(C, "10.0.0.1:1").expect("known");
        assert_eq!(p.source.as_deref(), Some("10.9.9.9:5"));
        assert_eq!(p.config_version, u64::from(u32::MAX) + 7);
        assert!(p.deletion_paused);
        let fresh = view.config("fresh").expect("made by a push");
        assert_eq!((fresh.version, fresh.base_size), (2, 3));
        assert_eq!(fresh.datasources["hg"], "ds");
        let names: Vec<String> = view
            .clusters()
            .expect("live")
            .clusters
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["fresh", C]);
    }

    #[test]
    fn the_gate_names_every_blocker_sorted() {
        let (view, _) = view(ViewSeed::default());
        view.apply(&[
            status(1, 1, 1, "10.0.0.3:1", None, Some(Status::Ready)),
            status(2, 1, 2, "10.0.0.1:1", None, Some(Status::Up)),
            status(3, 1, 3, "10.0.0.2:1", None, Some(Status::Up)),
            status(4, 2, 3, "10.0.0.2:1", Some(Status::Up), Some(Status::Lost)),
        ]);
        let gate = view.gate(C).expect("known");
        assert!(!gate.open);
        let blockers: Vec<(&str, &str)> = gate
            .blockers
            .iter()
            .map(|b| (b.proxy.as_str(), b.status.as_str()))
            .collect();
        assert_eq!(blockers, [("10.0.0.2:1", "lost"), ("10.0.0.3:1", "ready")]);
    }

    #[test]
    fn names_are_checked_before_anything_is_looked_up() {
        let (view, _) = view(ViewSeed::default());
        assert!(matches!(
            view.cluster("bad/name"),
            Err(ViewError::Admin(AdminError::Invalid(_)))
        ));
        assert!(matches!(
            view.proxy("nope", "not-an-address"),
            Err(ViewError::Admin(AdminError::Invalid(_)))
        ));
        assert_eq!(
            view.gate("nope"),
            Err(ViewError::Admin(AdminError::UnknownCluster("nope".into())))
        );
    }

    #[test]
    fn a_slot_taken_over_by_another_proxy_drops_the_old_one() {
        let (view, _) = view(ViewSeed::default());
        view.apply(&[
            status(1, 1, 1, "10.0.0.1:1", None, Some(Status::Up)),
            status(2, 2, 1, "10.0.0.2:1", None, Some(Status::Ready)),
        ]);
        let list = view.proxies(Some(C)).expect("known");
        let names: Vec<&str> = list.proxies.iter().map(|p| p.proxy.as_str()).collect();
        assert_eq!(names, ["10.0.0.2:1"]);
        let c = view.cluster(C).expect("known");
        assert_eq!((c.ready, c.up), (1, 0));
    }

    #[tokio::test]
    async fn the_follower_applies_what_the_hub_publishes_and_stops_with_it() {
        let (view, _) = view(ViewSeed::default());
        let hub = ChangeHub::new(0, 0, 100, Vec::new());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(view.follow(hub.clone(), async move {
            let _ = stopped.await;
        }));
        hub.publish(vec![
            (*status(1, 1, 1, "10.0.0.1:1", None, Some(Status::Up))).clone(),
        ]);
        assert!(
            tokio::time::timeout(Duration::from_secs(10), view.wait_for(1))
                .await
                .expect("applied in time")
        );
        assert_eq!(view.proxies(None).expect("live").proxies.len(), 1);
        hub.publish(vec![
            (*status(2, 2, 2, "10.0.0.2:1", None, Some(Status::Up))).clone(),
        ]);
        hub.close();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the follower ends")
            .expect("joined");
        // What was published before the close was applied; then the view is stopped.
        assert_eq!(view.revision(), 2);
        assert_eq!(view.clusters(), Err(ViewError::Stopped));
        assert!(!view.wait_for(3).await);
        drop(stop);
    }

    #[tokio::test]
    async fn a_view_out_of_the_history_answers_behind_until_seeded_again() {
        let (view, _) = view(ViewSeed::default());
        let hub = ChangeHub::new(0, 0, 100, Vec::new());
        hub.set_generation(9);
        let task = tokio::spawn(view.follow(hub.clone(), std::future::pending()));
        let behind = tokio::time::timeout(Duration::from_secs(10), view.wait_for(u64::MAX))
            .await
            .expect("the follower gives up waiting");
        assert!(!behind);
        assert!(matches!(view.clusters(), Err(ViewError::Behind(_))));
        view.reseed(ViewSeed {
            generation: 9,
            revision: 0,
            ..ViewSeed::default()
        });
        hub.publish(vec![
            (*status(1, 1, 1, "10.0.0.1:1", None, Some(Status::Up))).clone(),
        ]);
        assert!(
            tokio::time::timeout(Duration::from_secs(10), view.wait_for(1))
                .await
                .expect("applied after the reseed")
        );
        assert_eq!(view.position(), (9, 1));
        task.abort();
    }
}
