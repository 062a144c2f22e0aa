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
//! (`state::Entry`, asserted by a test) in a dense vector indexed by slot, plus about 6 bytes
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

use std::future::Future;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use compact_str::CompactString;
use thiserror::Error;
use tokio::sync::watch;
use tracing::error;

pub mod audit;
mod state;

pub use audit::AuditQuery;
use state::{Row, State};

use crate::api::{
    AuditList, Blocker, ClusterList, ClusterView, ConfigView, Extra, GateView, Gone, ProxyList,
    ProxyView, RolloutProxy, RolloutView, hex, key_lines, rfc3339_ms,
};
use crate::driver::DriverClock;
use crate::hub::ChangeHub;
use crate::identity::validate_proxy;
use crate::keeper::change::{ConfigSummary, StoredProxy, WallChange};
use crate::keeper::seen::LastSeen;
use crate::keeper::{AdminError, Status};
use crate::store::AuditEntry;

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
    /// The audit record as stored, oldest first (the view keeps the newest
    /// [`audit::KEPT`]). A reseed with none keeps what the view holds.
    pub audit: Vec<AuditEntry>,
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
    /// Its settings (frozen, hostgroups, removal markers).
    pub settings: crate::keeper::ClusterSettings,
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
    /// By cluster id (`None`: freed).
    names: Vec<Option<Arc<str>>>,
    paused: Vec<bool>,
    frozen: Vec<bool>,
}

impl View {
    /// A view of `seed`, reading last-heard times from `seen` (the core's table) and
    /// converting them to wall-clock times with `clock` (the driver's).
    pub fn new(seed: ViewSeed, seen: LastSeen, clock: DriverClock) -> View {
        let mut state = State::new(seed);
        state.began = unix_ms(clock.wall(clock.now()));
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
        let keep = seed.audit.is_empty();
        let old = std::mem::replace(&mut *state, State::new(seed));
        if keep {
            state.audit = old.audit;
        }
        state.began = old.began;
        state.rollout_timeout = old.rollout_timeout;
        self.publish(&state);
        drop(state);
        self.inner.applied.send_modify(|a| a.seeds += 1);
    }

    /// Sets how long a rollout may take before the view reports it stuck (the keeper's
    /// `rollout_timeout`).
    pub fn set_rollout_timeout(&self, timeout: Duration) {
        self.write().rollout_timeout = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
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

    fn set_generation(&self, generation: u64) {
        let mut state = self.write();
        state.generation = generation;
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
    /// large a batch is published. It follows a new generation across (revisions go on);
    /// only a publisher's gap can leave it behind: then it answers `Behind` until
    /// [`reseed`](View::reseed).
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
                // A new generation of the store goes on from the same revisions: the view
                // follows it across.
                let (current, _) = hub.position();
                if current != view.position().0 {
                    view.set_generation(current);
                }
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
        let now = self.now_ms();
        let mut clusters: Vec<ClusterView> = state
            .cluster_ids
            .values()
            .filter_map(|&id| Some(state.cluster(id)?.view(&state.rollout(id, now))))
            .collect();
        let (generation, revision) = (state.generation, state.revision);
        drop(state);
        clusters.sort_by(|a, b| a.cluster.cmp(&b.cluster));
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
        let (id, c) = state.cluster_named(name)?;
        Ok(c.view(&state.rollout(id, self.now_ms())))
    }

    /// The rollout of a cluster's current config: counts, and every proxy that does not
    /// run it (at most [`RolloutView::MAX_LISTED`]).
    pub fn rollout(&self, name: &str) -> Result<RolloutView, ViewError> {
        let now = self.now_ms();
        let state = self.read();
        state.check()?;
        let (id, c) = state.cluster_named(name)?;
        let counts = state.rollout(id, now);
        let mut proxies: Vec<RolloutProxy> = state
            .not_running(id)
            .map(|(slot, e)| {
                let rejection = c.rejections.get(&e.proxy);
                let waited = now.saturating_sub(state.pending_since(c, e));
                let word = match rejection {
                    Some(_) => "rejected",
                    None if waited >= state.rollout_timeout => "overdue",
                    None => "pending",
                };
                RolloutProxy {
                    proxy: e.proxy.to_string(),
                    status: e.status().as_str().to_owned(),
                    config_version: state.version_of(slot).unwrap_or(0),
                    state: word.to_owned(),
                    reason: rejection.map(|(_, reason)| reason.to_string()),
                    pending_ms: rejection.is_none().then_some(waited),
                }
            })
            .collect();
        let view = RolloutView {
            generation: state.generation,
            revision: state.revision,
            cluster: name.to_owned(),
            version: c.config.version,
            digest: hex(&c.config.digest),
            state: counts.state.as_str().to_owned(),
            started: c.rollout_started.map(rfc3339_ms),
            timeout_ms: state.rollout_timeout,
            total: c.total(),
            running: counts.running,
            pending: counts.pending,
            rejected: counts.rejected,
            proxies: Vec::new(),
            truncated: 0,
        };
        drop(state);
        proxies.sort_unstable_by(|a, b| a.proxy.cmp(&b.proxy));
        let truncated = proxies.len().saturating_sub(RolloutView::MAX_LISTED) as u64;
        proxies.truncate(RolloutView::MAX_LISTED);
        Ok(RolloutView {
            proxies,
            truncated,
            ..view
        })
    }

    /// The names of the clusters in mass loss, sorted.
    pub fn paused_clusters(&self) -> Result<Vec<String>, ViewError> {
        let state = self.read();
        state.check()?;
        let mut names: Vec<String> = state
            .held()
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
        let id = cluster
            .map(|name| state.cluster_named(name).map(|(id, _)| id))
            .transpose()?;
        let rows = state.rows(id);
        let names = Names {
            names: state
                .clusters
                .iter()
                .map(|c| c.as_ref().map(|c| c.name.clone()))
                .collect(),
            paused: state
                .clusters
                .iter()
                .map(|c| c.as_ref().is_some_and(|c| c.deletion_paused))
                .collect(),
            frozen: state
                .clusters
                .iter()
                .map(|c| c.as_ref().is_some_and(|c| c.frozen))
                .collect(),
        };
        Ok((rows, names, state.generation, state.revision))
    }

    fn sort(rows: &mut [Row], names: &Names) {
        rows.sort_unstable_by(|a, b| {
            let name = |r: &Row| names.names.get(r.cluster as usize).cloned().flatten();
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
                .and_then(Option::as_ref)
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
            key_id: self.inner.seen.key(row.slot).map(|k| k.to_string()),
            deletion_paused: names.paused.get(cluster).copied().unwrap_or(false),
            frozen: names.frozen.get(cluster).copied().unwrap_or(false),
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
        let (id, c) = state.cluster_named(cluster)?;
        let row = state
            .find(id, proxy)
            .and_then(|slot| Some(state.row(slot, state.entry(slot)?)))
            .ok_or_else(|| AdminError::UnknownProxy {
                cluster: cluster.to_owned(),
                proxy: proxy.to_owned(),
            })?;
        let names = Names {
            names: vec![Some(c.name.clone())],
            paused: vec![c.deletion_paused],
            frozen: vec![c.frozen],
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
        let (_, c) = state.cluster_named(cluster)?;
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

    /// The audit record: the newest `query.limit` entries `query` selects (at most
    /// [`audit::MAX_LIMIT`]), oldest first.
    pub fn audit(&self, query: &AuditQuery) -> Result<AuditList, ViewError> {
        if let Some(cluster) = &query.cluster {
            crate::identity::validate_cluster(cluster).map_err(AdminError::from)?;
        }
        let query = AuditQuery {
            limit: query.limit.min(audit::MAX_LIMIT),
            ..query.clone()
        };
        let state = self.read();
        state.check()?;
        let (rows, matching) = state.audit.select(&query);
        let (generation, revision) = (state.generation, state.revision);
        drop(state);
        Ok(audit::views(generation, revision, &query, rows, matching))
    }

    /// Who made each config version of `cluster` the audit record names, and when.
    pub fn versions_made(&self, cluster: &str) -> std::collections::BTreeMap<u64, audit::Made> {
        self.read().audit.made(cluster)
    }

    /// A cluster's current config version.
    pub fn config(&self, cluster: &str) -> Result<ConfigView, ViewError> {
        let state = self.read();
        state.check()?;
        let (_, c) = state.cluster_named(cluster)?;
        let config = &c.config;
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
mod tests;
