//! The keeper's driver: one task owns the keeper core, its UDP socket and its timer.
//!
//! Everything else reaches the core through a [`KeeperHandle`], which sends jobs (closures
//! run on the core, in order, between datagrams) and awaits their answers. So the core
//! has one owner, needs no lock, and an admin call is atomic with respect to heartbeats.
//!
//! The core's change stream is drained after every turn of the loop: each change is
//! logged and counted, converted once to wall-clock time, committed to the store (if the
//! keeper has one) and, once durable, published to a [`ChangeSink`] (the watch and the
//! HTTP view). Nothing slow runs on this task: the store commits on a thread of its own
//! ([`CommitMode::Thread`]) while heartbeats and timers go on; answers that must not get
//! ahead of the store (a registration's `Ack`, an admin call's reply) wait for their
//! revision to be durable.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::auth::Keyring;
use crate::driver::{DatagramSocket, DriverClock, RecvBatch};
use crate::ha::{Deaf, LeaseGate, LeaseLost, TermBehind};
use crate::keeper::{
    AdminError, Change, ChangeKind, ClusterInfo, ConfigBlob, DropReason, Keeper, Stats, Status,
    WallChange,
};
use crate::store::{Store, StoreError};
use crate::wire::MAX_DATAGRAM;

/// Datagrams handled in one burst before answers are flushed and other work gets a turn.
const MAX_BURST: usize = 1024;

/// A job run on the keeper core by its driver. It returns the answer to its caller, which
/// the driver gives only once the job's changes are durable.
type Job = Box<dyn FnOnce(&mut Keeper, &DriverClock) -> Reply + Send>;

/// Gives a job's answer to its caller.
type Reply = Box<dyn FnOnce() + Send>;

/// A function shown every core change as it is drained (simulations check invariants
/// against these).
type ChangeTap = Box<dyn FnMut(&Change) + Send>;

/// Where committed changes go: the watch's history and the HTTP view.
pub trait ChangeSink: Send + Sync {
    /// Changes now durable (consecutive revisions, oldest first).
    fn publish(&self, changes: Vec<WallChange>);
    /// The store started a new generation of revisions.
    fn set_generation(&self, generation: u64);
}

/// The keeper task has stopped; nothing was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the keeper has stopped")]
pub struct Stopped;

/// An admin call's failure.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CallError {
    /// The core refused it; nothing changed.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The keeper task has stopped.
    #[error(transparent)]
    Stopped(#[from] Stopped),
}

/// An admin call's result, durable, with the revision of its last change: a reader of the
/// HTTP view waits for that revision to read its own write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied<T> {
    /// What the call returned.
    pub value: T,
    /// The revision of the latest change once the call was done.
    pub revision: u64,
}

/// Counters the driver keeps from the core's changes, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriverCounters {
    /// Status changes by (from, to); `none` for not registered.
    pub transitions: BTreeMap<(&'static str, &'static str), u64>,
    /// `Restart` commands sent.
    pub restarts_sent: u64,
    /// `Superseded` notices sent.
    pub superseded_sent: u64,
    /// Config versions made.
    pub config_changes: u64,
    /// Rejections of configs by proxies (`ConfigReject`s recorded).
    pub rejections: u64,
    /// Transactions committed to the store.
    pub commits: u64,
    /// Changes committed to the store.
    pub stored_changes: u64,
    /// The store's revision after the last commit (`None`: no store).
    pub store_revision: Option<u64>,
    /// The store's generation (`None`: no store).
    pub store_generation: Option<u64>,
    /// How long each commit to the store took (its transaction, fsync included).
    pub commit_latency: crate::histogram::Latency,
}

/// Everything `/metrics` shows, taken at one moment.
#[derive(Clone, Debug)]
pub struct MetricsSnapshot {
    /// The core's counters.
    pub stats: Stats,
    /// The driver's counters.
    pub counters: DriverCounters,
    /// Every cluster, with its proxies by status.
    pub clusters: Vec<ClusterInfo>,
    /// Tombstones held.
    pub tombstones: usize,
    /// The keeper's epoch.
    pub epoch: u32,
    /// Proxies in the registry, of every cluster.
    pub proxies: usize,
    /// The keeper's `max_proxies`.
    pub max_proxies: usize,
    /// The keeper's `max_clusters` (the clusters held are `clusters.len()`).
    pub max_clusters: usize,
}

/// The way in to a running keeper: admin calls and the few queries that run on the core
/// (each O(1) or O(clusters); listings are the HTTP view's).
#[derive(Clone, Debug)]
pub struct KeeperHandle {
    jobs: mpsc::Sender<Job>,
    counters: Arc<Mutex<DriverCounters>>,
}

/// What a push asks besides its content.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushTerms {
    /// Replace this version or nothing.
    pub expect: Option<u64>,
    /// Create the cluster if it does not exist (refused otherwise).
    pub create: bool,
}

impl PushTerms {
    /// Any version; creating the cluster if needed (as calls from inside the process do).
    pub const CREATE: PushTerms = PushTerms {
        expect: None,
        create: true,
    };
}

impl KeeperHandle {
    /// A handle to no keeper: every call answers [`Stopped`]. A standby's admin API holds
    /// one (it runs no core; its changes are refused before they reach the handle).
    pub fn detached() -> KeeperHandle {
        let (jobs, _) = mpsc::channel(1);
        KeeperHandle {
            jobs,
            counters: Arc::new(Mutex::new(DriverCounters::default())),
        }
    }

    /// Runs `f` on the core, between datagrams, and returns its result once the changes
    /// it made are durable.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Keeper, &DriverClock) -> R + Send + 'static,
    ) -> Result<R, Stopped> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |keeper, clock| {
            let answer = f(keeper, clock);
            Box::new(move || {
                let _ = tx.send(answer);
            })
        });
        self.jobs.send(job).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Runs a mutator and returns its result with the revision it reached.
    async fn apply<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Keeper, &DriverClock) -> Result<T, AdminError> + Send + 'static,
    ) -> Result<Applied<T>, CallError> {
        let (value, revision) = self
            .call(move |k, c| f(k, c).map(|value| (value, k.revision())))
            .await??;
        Ok(Applied { value, revision })
    }

    /// Deletes a proxy, as the seed's remove does (a live one comes back through
    /// `Restart`: [`Keeper::remove_proxy`]); returns the status it had.
    pub async fn remove(
        &self,
        cluster: String,
        proxy: String,
    ) -> Result<Applied<Status>, CallError> {
        self.apply(move |k, c| k.remove_proxy(c.now(), &cluster, &proxy))
            .await
    }

    /// [`remove`](KeeperHandle::remove), on behalf of the admin token named `by`; a
    /// proxy that is alive (`up`, `ready`) only if `force`.
    pub async fn remove_by(
        &self,
        by: Option<Arc<str>>,
        force: bool,
        cluster: String,
        proxy: String,
    ) -> Result<Applied<Status>, CallError> {
        self.apply(move |k, c| k.remove_proxy_by(c.now(), by, force, &cluster, &proxy))
            .await
    }

    /// Stores the next config version, if the gate is open and the config differs from
    /// the current one; returns the version after it and whether it made one.
    pub async fn push_config(
        &self,
        cluster: String,
        config: Arc<[u8]>,
    ) -> Result<Applied<crate::keeper::Pushed>, CallError> {
        self.push_config_by(None, PushTerms::CREATE, cluster, config)
            .await
    }

    /// [`push_config`](KeeperHandle::push_config), on behalf of the admin token named
    /// `by`, as `terms` say: replacing version `expect` if given, and creating the
    /// cluster only if `create` (each refused otherwise, in the same turn).
    pub async fn push_config_by(
        &self,
        by: Option<Arc<str>>,
        terms: PushTerms,
        cluster: String,
        config: Arc<[u8]>,
    ) -> Result<Applied<crate::keeper::Pushed>, CallError> {
        self.apply(move |k, c| {
            if !terms.create {
                k.require_cluster(c.now(), by.clone(), &cluster, "push_config")?;
            }
            if let Some(expected) = terms.expect {
                k.expect_version(c.now(), by.clone(), &cluster, "push_config", expected)?;
            }
            k.push_config_outcome(c.now(), by, &cluster, config)
        })
        .await
    }

    /// Switches a hostgroup's datasource, if the gate is open; returns the new version.
    pub async fn switch_datasource(
        &self,
        cluster: String,
        hostgroup: String,
        from: String,
        to: String,
    ) -> Result<Applied<u64>, CallError> {
        self.switch_datasource_by(None, None, cluster, hostgroup, from, to)
            .await
    }

    /// [`switch_datasource`](KeeperHandle::switch_datasource), on behalf of the admin
    /// token named `by`, replacing version `expect` if given.
    pub async fn switch_datasource_by(
        &self,
        by: Option<Arc<str>>,
        expect: Option<u64>,
        cluster: String,
        hostgroup: String,
        from: String,
        to: String,
    ) -> Result<Applied<u64>, CallError> {
        self.apply(move |k, c| {
            if let Some(expected) = expect {
                k.expect_version(c.now(), by.clone(), &cluster, "switch", expected)?;
            }
            k.switch_datasource_by(c.now(), by, &cluster, &hostgroup, &from, &to)
        })
        .await
    }

    /// Declares a hostgroup of `cluster`, on behalf of the admin token named `by`.
    pub async fn set_hostgroup_by(
        &self,
        by: Option<Arc<str>>,
        cluster: String,
        hostgroup: String,
        datasources: Vec<String>,
        current: Option<String>,
    ) -> Result<Applied<(crate::keeper::HostgroupInfo, bool)>, CallError> {
        self.apply(move |k, c| {
            k.set_hostgroup_by(
                c.now(),
                by,
                &cluster,
                &hostgroup,
                &datasources,
                current.as_deref(),
            )
        })
        .await
    }

    /// Undeclares a hostgroup of `cluster` declared through the API, on behalf of the
    /// admin token named `by`.
    pub async fn delete_hostgroup_by(
        &self,
        by: Option<Arc<str>>,
        cluster: String,
        hostgroup: String,
    ) -> Result<Applied<()>, CallError> {
        self.apply(move |k, c| k.delete_hostgroup_by(c.now(), by, &cluster, &hostgroup))
            .await
    }

    /// The hostgroups `cluster` declares.
    pub async fn hostgroups(
        &self,
        cluster: String,
    ) -> Result<Vec<crate::keeper::HostgroupInfo>, CallError> {
        Ok(self.call(move |k, _| k.hostgroups(&cluster)).await??)
    }

    /// Freezes or unfreezes `cluster`, on behalf of the admin token named `by`.
    pub async fn set_frozen_by(
        &self,
        by: Option<Arc<str>>,
        cluster: String,
        frozen: bool,
    ) -> Result<Applied<bool>, CallError> {
        self.apply(move |k, c| k.set_frozen_by(c.now(), by, &cluster, frozen))
            .await
    }

    /// Deletes the empty `cluster`, on behalf of the admin token named `by`.
    pub async fn delete_cluster_by(
        &self,
        by: Option<Arc<str>>,
        cluster: String,
    ) -> Result<Applied<()>, CallError> {
        self.apply(move |k, c| k.delete_cluster_by(c.now(), by, &cluster))
            .await
    }

    /// Makes the content of version `to` (`stored`: its file and datasources, as the
    /// store holds them; `None`: it holds no such version) current again as a new
    /// version, if the gate is open, on behalf of the admin token named `by`; returns
    /// the version after it and whether it made one.
    pub async fn rollback_by(
        &self,
        by: Option<Arc<str>>,
        expect: Option<u64>,
        cluster: String,
        to: u64,
        stored: Option<crate::keeper::StoredContent>,
    ) -> Result<Applied<crate::keeper::Pushed>, CallError> {
        self.apply(move |k, c| {
            if let Some(expected) = expect {
                k.expect_version(c.now(), by.clone(), &cluster, "rollback", expected)?;
            }
            k.rollback_config_by(c.now(), by, &cluster, to, stored)
        })
        .await
    }

    /// The gate of a cluster: `Ok` when open, the blockers when closed.
    pub async fn gate(&self, cluster: String) -> Result<(), CallError> {
        Ok(self.call(move |k, _| k.gate(&cluster)).await??)
    }

    /// Every cluster, sorted by name (O(clusters) on the core).
    pub async fn clusters(&self) -> Result<Vec<ClusterInfo>, Stopped> {
        self.call(|k, _| k.clusters()).await
    }

    /// Everything `/metrics` shows (O(clusters) on the core).
    pub async fn metrics(&self) -> Result<MetricsSnapshot, Stopped> {
        let counters = self.counters.clone();
        self.call(move |k, _| MetricsSnapshot {
            stats: k.stats().clone(),
            counters: counters.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            clusters: k.clusters(),
            tombstones: k.tombstone_count(),
            epoch: k.epoch(),
            proxies: k.proxy_count(),
            max_proxies: k.config().max_proxies,
            max_clusters: k.config().max_clusters,
        })
        .await
    }
}

/// How the store's commits run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitMode {
    /// On a thread of their own, so a slow disk delays no heartbeat and no timer (the
    /// default).
    Thread,
    /// On the driver's task, in the turn that made the changes: for simulations, where a
    /// thread would make runs depend on the host's scheduling.
    Inline,
}

/// The keeper task. Create it with [`KeeperDriver::new`], run it with
/// [`KeeperDriver::run`].
pub struct KeeperDriver<S> {
    core: Keeper,
    socket: S,
    clock: DriverClock,
    jobs: mpsc::Receiver<Job>,
    counters: Arc<Mutex<DriverCounters>>,
    tap: Option<ChangeTap>,
    sink: Option<Arc<dyn ChangeSink>>,
    committer: Option<Committer>,
    /// Admin replies waiting for their revision to be durable.
    waiting: VecDeque<(u64, Reply)>,
    /// The revision known durable (every change, for a keeper without a store).
    durable: u64,
    /// Simulations make the driver stop running for a while (a keeper stall) through it;
    /// only the `test-hooks` feature can set it.
    stalls: Option<mpsc::UnboundedReceiver<std::time::Duration>>,
    /// The leadership's lease: nothing is sent or committed once it could have expired.
    lease: Option<Arc<LeaseGate>>,
    /// Registrations dropped for a full registry when the driver last warned of them.
    full_warned: u64,
    /// When it last warned of them (at most once a second).
    full_warned_at: Option<tokio::time::Instant>,
    /// New keyrings to put in force, if keys can be reloaded.
    key_updates: Option<tokio::sync::watch::Receiver<Keyring>>,
    /// Thins the log lines of mass events (`logs.rs`).
    logs: super::logs::Throttle,
}

/// The next keyring `updates` receives; never, without one (or once its sender is gone).
async fn next_keys(updates: Option<&mut tokio::sync::watch::Receiver<Keyring>>) -> Keyring {
    if let Some(updates) = updates
        && updates.changed().await.is_ok()
    {
        return updates.borrow_and_update().clone();
    }
    std::future::pending().await
}

/// The least time between two warnings that the registry is full.
const FULL_WARNING_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl<S> std::fmt::Debug for KeeperDriver<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeeperDriver")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl<S: DatagramSocket> KeeperDriver<S> {
    /// A driver for `core` on `socket`, and the handle to reach it.
    pub fn new(core: Keeper, socket: S, clock: DriverClock) -> (KeeperDriver<S>, KeeperHandle) {
        let (tx, rx) = mpsc::channel(1024);
        let counters = Arc::new(Mutex::new(DriverCounters::default()));
        let handle = KeeperHandle {
            jobs: tx,
            counters: counters.clone(),
        };
        let durable = core.revision();
        (
            KeeperDriver {
                core,
                socket,
                clock,
                jobs: rx,
                counters,
                logs: super::logs::Throttle::default(),
                tap: None,
                sink: None,
                committer: None,
                waiting: VecDeque::new(),
                durable,
                stalls: None,
                lease: None,
                key_updates: None,
                full_warned: 0,
                full_warned_at: None,
            },
            handle,
        )
    }

    /// Persists the core's changes in `store` (the core must be persistent, built with
    /// `Keeper::restore` from this store's snapshot), committing as `mode` says.
    ///
    /// Changes of one turn of the loop are committed in one transaction, and while a
    /// commit runs the next turns' changes gather for the next one (group commit). A
    /// store failure stops the driver with an error: a keeper never answers for a change
    /// it could not make durable.
    ///
    /// Fails only if the store's thread cannot be started.
    pub fn with_store(mut self, store: Box<dyn Store>, mode: CommitMode) -> io::Result<Self> {
        {
            let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
            counters.store_revision = Some(store.revision());
            counters.store_generation = Some(store.generation());
        }
        self.committer = Some(Committer::new(store, mode)?);
        Ok(self)
    }

    /// Publishes every durable change to `sink`.
    pub fn with_sink(mut self, sink: Arc<dyn ChangeSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Makes the driver stop running for each duration received (test hook): nothing is
    /// read, fired or sent meanwhile, as when the process is stopped.
    #[cfg(feature = "test-hooks")]
    pub fn with_stalls(mut self, stalls: mpsc::UnboundedReceiver<std::time::Duration>) -> Self {
        self.stalls = Some(stalls);
        self
    }

    /// Puts every keyring `updates` receives in force in the core
    /// ([`Keeper::set_keys`]), in order with the datagrams: a reload of the key files
    /// while the keeper runs.
    pub fn with_key_updates(mut self, updates: tokio::sync::watch::Receiver<Keyring>) -> Self {
        self.key_updates = Some(updates);
        self
    }

    /// Acts only while `lease` is open: a leader whose lease could have expired (it was
    /// paused, or cut off from the election) stops at the next turn of its loop with
    /// [`LeaseLost`], before it sends, commits or answers anything more.
    pub fn with_lease(mut self, lease: Arc<LeaseGate>) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Shows every core change to `tap`, in order, before it is logged and committed.
    pub fn with_change_tap(mut self, tap: impl FnMut(&Change) + Send + 'static) -> Self {
        self.tap = Some(Box::new(tap));
        self
    }

    /// Serves until `shutdown` completes (or the socket or the store fails for good). On
    /// shutdown, changes not yet committed are committed before it returns.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let mut batch = RecvBatch::new();
        let mut out = vec![0u8; MAX_DATAGRAM];
        let mut jobs_open = true;
        let (mut changes, mut blobs) = (Vec::new(), Vec::new());
        tokio::pin!(shutdown);
        loop {
            // The lease's end is a wakeup too: a leader with nothing to do still stops.
            let lease_end = self
                .lease
                .as_ref()
                .and_then(|gate| gate.until())
                .filter(|t| t.as_nanos() != u64::MAX);
            let deadline = [self.core.poll_timeout(), lease_end, self.logs.next_flush()]
                .into_iter()
                .flatten()
                .min()
                .map(|t| self.clock.deadline(t));
            let committing = self.committer.as_ref().is_some_and(Committer::in_flight);
            // `biased`: a fixed order keeps runs reproducible under turmoil (tokio's own
            // branch choice is random and unseeded). Shutdown first, then finished commits
            // (they release answers), then admin jobs (few and waited on by a person), then
            // datagrams, then timers. Datagrams before timers matters after a stall too,
            // but the core does not rely on it: keeper time leaves the stall out anyway.
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                stall = next_stall(self.stalls.as_mut()) => {
                    tokio::time::sleep(stall).await;
                    continue;
                }
                done = committer_done(self.committer.as_mut()), if committing => {
                    self.committed(done)?;
                }
                job = self.jobs.recv(), if jobs_open => match job {
                    Some(job) => {
                        let reply = job(&mut self.core, &self.clock);
                        self.waiting.push_back((self.core.revision(), reply));
                    }
                    None => jobs_open = false,
                },
                keys = next_keys(self.key_updates.as_mut()) => {
                    let change = self.core.set_keys(keys);
                    let ids = |ids: &[crate::auth::KeyId]| {
                        ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
                    };
                    info!(added = %ids(&change.added), retired = %ids(&change.retired),
                          rescoped = %ids(&change.rescoped), "keys in force replaced");
                }
                received = self.socket.recv_batch(&mut batch) => match received {
                    Ok(()) => {
                        let mut handled = self.handle_batch(&batch);
                        // Drain what is already queued before flushing answers (and before
                        // committing: a burst of changes becomes one transaction).
                        while handled < MAX_BURST {
                            if self.socket.try_recv_batch(&mut batch).is_err() {
                                break;
                            }
                            handled += self.handle_batch(&batch);
                        }
                    }
                    // On Linux an ICMP "port unreachable" for an earlier answer surfaces
                    // here; it says nothing about this socket.
                    Err(e) => debug!(error = %e, "udp receive failed"),
                },
                () = sleep_until(deadline), if deadline.is_some() => {
                    self.core.handle_timeout(self.clock.now());
                }
            }
            // Timers run after every turn too: under a flood of datagrams the timer branch
            // above would rarely win, and a deadline must not wait for the socket to empty.
            if self
                .core
                .poll_timeout()
                .is_some_and(|t| t <= self.clock.now())
            {
                self.core.handle_timeout(self.clock.now());
            }
            // Before anything leaves: a leader that was paused past its lease wakes up here,
            // with whatever it read queued.
            self.check_lease()?;
            self.check_term()?;
            self.check_deaf()?;
            self.drain(&mut changes, &mut blobs)?;
            for (cluster, _, count, line) in self.logs.flush(self.clock.now()) {
                info!(%cluster, count, "{line}");
            }
            self.flush(&mut out).await;
            // One comparison per turn; the rest only when registrations were refused.
            if self.core.stats().dropped(DropReason::RegistryFull) > self.full_warned {
                self.warn_registry_full();
            }
        }
        self.finish(&mut changes, &mut blobs).await
    }

    /// `Err(TermBehind)` if a leader read a request echoing a newer term than its own.
    fn check_term(&self) -> io::Result<()> {
        match self.core.newer_term() {
            Some(seen) if self.lease.is_some() => {
                let behind = TermBehind {
                    term: self.core.term(),
                    seen,
                };
                error!(term = behind.term, seen, "{behind}");
                Err(io::Error::other(behind))
            }
            _ => Ok(()),
        }
    }

    /// `Err(Deaf)` if a leader reads nothing from a fleet that should be talking to it.
    fn check_deaf(&self) -> io::Result<()> {
        if self.lease.is_none() {
            return Ok(());
        }
        match self.core.deafness() {
            Some(d) => {
                let deaf = Deaf {
                    silent_for: d.silent_for,
                    up: d.up,
                };
                error!("{deaf}");
                Err(io::Error::other(deaf))
            }
            None => Ok(()),
        }
    }

    /// `Err(LeaseLost)` if the lease could have expired.
    fn check_lease(&self) -> io::Result<()> {
        match &self.lease {
            Some(gate) if !gate.open(self.clock.now()) => {
                error!(
                    "the leadership lease could have expired: stopping without sending or committing anything more"
                );
                Err(io::Error::other(LeaseLost))
            }
            _ => Ok(()),
        }
    }

    /// Warns that registrations were dropped because the registry is full, naming the
    /// limits, at most once every [`FULL_WARNING_EVERY`] (the drops in between are
    /// counted in the next warning).
    fn warn_registry_full(&mut self) {
        let now = tokio::time::Instant::now();
        if self
            .full_warned_at
            .is_some_and(|at| now.duration_since(at) < FULL_WARNING_EVERY)
        {
            return;
        }
        let total = self.core.stats().dropped(DropReason::RegistryFull);
        let config = self.core.config();
        warn!(
            dropped = total - self.full_warned,
            total,
            proxies = self.core.proxy_count(),
            max_proxies = config.max_proxies,
            clusters = self.core.cluster_count(),
            max_clusters = config.max_clusters,
            "registry full: registrations of new proxies were dropped; raise max_proxies or \
             max_clusters, or remove proxies"
        );
        self.full_warned = total;
        self.full_warned_at = Some(now);
    }

    /// Hands a batch to the core; returns how many datagrams it held. Buffers are larger
    /// than any datagram, so an oversized one is seen whole and refused, not truncated
    /// into something that looks valid.
    fn handle_batch(&mut self, batch: &RecvBatch) -> usize {
        // One clock reading per batch: its datagrams arrived together.
        let now = self.clock.now();
        let mut n = 0;
        for (from, datagram) in batch.iter() {
            self.core.handle_datagram(now, from, datagram);
            n += 1;
        }
        n
    }

    /// Takes the core's changes: logs and counts them, and commits them (or, without a
    /// store, publishes them at once).
    fn drain(&mut self, changes: &mut Vec<Change>, blobs: &mut Vec<ConfigBlob>) -> io::Result<()> {
        let upto = self.core.take_changes(changes, blobs);
        if changes.is_empty() {
            // Without a store every change is as durable as it gets at once; with one,
            // only a finished commit moves what is durable (calls that changed nothing
            // since are answered now).
            let durable = if self.committer.is_none() {
                upto
            } else {
                self.durable
            };
            self.release(durable);
            return Ok(());
        }
        let clock = self.clock;
        let mut wall = Vec::with_capacity(changes.len());
        {
            let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
            for change in changes.drain(..) {
                if let Some(tap) = self.tap.as_mut() {
                    tap(&change);
                }
                note(&change, &mut counters, &clock, &mut self.logs);
                wall.push(change.map_time(|t| unix_millis(clock.wall(t))));
            }
        }
        match self.committer.as_mut() {
            Some(committer) => {
                committer.submit(wall, std::mem::take(blobs), upto);
                if let Some(done) = committer.take_inline() {
                    self.committed(done)?;
                }
            }
            None => {
                blobs.clear();
                if let Some(sink) = &self.sink {
                    sink.publish(wall);
                }
                self.release(upto);
            }
        }
        Ok(())
    }

    /// A commit finished: tells the core, publishes, releases what waited, and starts the
    /// next commit if changes gathered meanwhile.
    fn committed(&mut self, done: Done) -> io::Result<()> {
        let generation = match done.result {
            Ok(generation) => generation,
            Err(e) => {
                error!(error = %e, "the store failed; stopping rather than answer for changes that are not durable");
                return Err(io::Error::other(e));
            }
        };
        self.core.mark_durable(done.upto);
        {
            let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
            counters.commits += 1;
            counters.commit_latency.observe(done.took);
            counters.stored_changes += done.changes.len() as u64;
            counters.store_revision = Some(done.upto);
            if counters.store_generation != Some(generation) {
                counters.store_generation = Some(generation);
                if let Some(sink) = &self.sink {
                    sink.set_generation(generation);
                }
            }
        }
        if let Some(sink) = &self.sink {
            sink.publish(done.changes);
        }
        self.release(done.upto);
        if let Some(committer) = self.committer.as_mut() {
            committer.next();
        }
        Ok(())
    }

    /// Every change up to `revision` is durable: answers the admin calls that waited.
    fn release(&mut self, revision: u64) {
        self.durable = self.durable.max(revision);
        while self
            .waiting
            .front()
            .is_some_and(|(needs, _)| *needs <= self.durable)
        {
            if let Some((_, reply)) = self.waiting.pop_front() {
                reply();
            }
        }
    }

    async fn flush(&mut self, out: &mut [u8]) {
        while let Some(t) = self.core.poll_transmit(out) {
            if let Err(e) = self.socket.send_to(&out[..t.len], t.destination).await {
                debug!(to = %t.destination, error = %e, "udp send failed");
            }
        }
    }

    /// Commits what is left, so a graceful stop loses nothing the core did.
    async fn finish(
        mut self,
        changes: &mut Vec<Change>,
        blobs: &mut Vec<ConfigBlob>,
    ) -> io::Result<()> {
        self.check_lease()?;
        self.drain(changes, blobs)?;
        loop {
            let Some(committer) = self.committer.as_mut() else {
                return Ok(());
            };
            let Some(done) = committer.wait().await else {
                return Ok(());
            };
            self.committed(done)?;
        }
    }
}

/// Logs a change and counts it for metrics.
fn note(
    change: &Change,
    counters: &mut DriverCounters,
    clock: &DriverClock,
    logs: &mut super::logs::Throttle,
) {
    use super::logs::Kind;
    let revision = change.revision;
    // Whether this event gets a line of its own (`logs.rs`); a window it ends is summed up.
    let mut admit = |cluster: &str, kind: Kind| {
        let (own, summary) = logs.admit(cluster, kind, clock.now());
        if let Some((cluster, _, count, line)) = summary {
            info!(%cluster, count, "{line}");
        }
        own
    };
    match &change.kind {
        ChangeKind::Status(c) => {
            let from = c.from.map_or("none", Status::as_str);
            let to = c.to.map_or("none", Status::as_str);
            if admit(&c.cluster, Kind::Status { from, to }) {
                info!(cluster = %c.cluster, proxy = %c.proxy, from, to, reason = c.reason.as_str(),
                      incarnation = c.incarnation, revision, "status changed");
            } else {
                debug!(cluster = %c.cluster, proxy = %c.proxy, from, to, reason = c.reason.as_str(),
                       incarnation = c.incarnation, revision, "status changed");
            }
            *counters.transitions.entry((from, to)).or_default() += 1;
        }
        ChangeKind::Observed {
            cluster,
            proxy,
            source,
            config_version,
            ..
        } => {
            debug!(%cluster, %proxy, %source, config_version, revision, "proxy reports a new source or config version");
        }
        ChangeKind::RestartSent {
            cluster,
            proxy,
            incarnation,
            to,
        } => {
            if admit(cluster, Kind::Restart) {
                info!(%cluster, %proxy, incarnation, %to, revision, "restart sent");
            } else {
                debug!(%cluster, %proxy, incarnation, %to, revision, "restart sent");
            }
            counters.restarts_sent += 1;
        }
        ChangeKind::LeaveSent {
            cluster,
            proxy,
            incarnation,
            to,
        } => {
            info!(%cluster, %proxy, incarnation, %to, revision,
                  "leave sent: an operator removed this process");
        }
        ChangeKind::Cluster {
            cluster,
            settings: Some(s),
        } => {
            info!(%cluster, frozen = s.frozen, hostgroups = s.hostgroups.len(),
                  removal_markers = s.removed.len(), revision, "cluster settings changed");
        }
        ChangeKind::Cluster {
            cluster,
            settings: None,
        } => {
            info!(%cluster, revision, "cluster deleted");
        }
        ChangeKind::Superseded {
            cluster,
            proxy,
            loser,
            winner,
            to,
        } => {
            if admit(cluster, Kind::Superseded) {
                warn!(%cluster, %proxy, loser, winner, %to, revision,
                      "two processes claim one identity; the older was told to stop");
            } else {
                debug!(%cluster, %proxy, loser, winner, %to, revision,
                       "two processes claim one identity; the older was told to stop");
            }
            counters.superseded_sent += 1;
        }
        ChangeKind::DeletionPaused {
            cluster,
            paused: true,
            lost,
            total,
        } => {
            warn!(%cluster, lost, total, revision, "mass loss: more than the configured share of the cluster is lost; \
                  deletion of its lost proxies is paused (the keeper's own network is the likely cause)");
        }
        ChangeKind::DeletionPaused {
            cluster,
            paused: false,
            lost,
            total,
        } => {
            info!(%cluster, lost, total, revision,
                  "mass loss over: deletion of lost proxies resumed, every lost proxy has a fresh delete window");
        }
        ChangeKind::Config {
            cluster,
            config,
            cause,
        } => {
            let cause = match cause {
                crate::keeper::ConfigCause::Push => "push".to_owned(),
                crate::keeper::ConfigCause::Switch {
                    hostgroup,
                    from,
                    to,
                } => format!("switch of {hostgroup} from {from} to {to}"),
                crate::keeper::ConfigCause::Rollback { to } => format!("rollback to {to}"),
            };
            info!(%cluster, version = config.version, cause, revision, "config version stored");
            counters.config_changes += 1;
        }
        ChangeKind::Admin { action, by } => {
            info!(cluster = action.cluster(), action = %crate::store::audit_json(action, by.as_deref()),
                  by = by.as_deref().unwrap_or("-"), revision, "operator action");
        }
        ChangeKind::Stall { length, shifted } => {
            warn!(stall_ms = length.as_millis() as u64, shifted, revision,
                  at = %rfc3339(clock.wall(change.at)),
                  "the keeper did not run for this long (stopped, paused or starved); \
                   every deadline moved by as much, so no proxy is blamed for it");
        }
        ChangeKind::Rewound { seen_epoch } => {
            warn!(
                seen_epoch,
                revision,
                "a proxy echoed a token of a newer keeper epoch than the store's: \
                  the store went back in time (a backup copied back?); starting a new generation of revisions"
            );
        }
        ChangeKind::Rejected {
            cluster,
            proxy,
            config_version,
            reason,
            ..
        } => {
            warn!(%cluster, %proxy, version = config_version, %reason, revision,
                  "a proxy rejected its cluster's config and runs what it ran before");
            counters.rejections += 1;
        }
    }
}

/// A batch to commit, and what became of it.
struct Done {
    changes: Vec<WallChange>,
    upto: u64,
    /// The store's generation after the commit, or why it failed.
    result: Result<u64, StoreError>,
    /// How long the commit took.
    took: std::time::Duration,
}

impl Done {
    /// No commit happened: the store (or its thread) is gone, for `why`.
    fn failed(why: &str) -> Done {
        Done {
            changes: Vec::new(),
            upto: 0,
            result: Err(StoreError::Io(why.into())),
            took: std::time::Duration::ZERO,
        }
    }
}

/// Runs the store's commits, one at a time, gathering the changes made meanwhile.
struct Committer {
    mode: CommitMode,
    /// The store, for inline commits (`None` once handed to the thread).
    store: Option<Box<dyn Store>>,
    to_thread: Option<std::sync::mpsc::Sender<Batch>>,
    from_thread: Option<mpsc::UnboundedReceiver<Done>>,
    thread: Option<std::thread::JoinHandle<()>>,
    in_flight: bool,
    /// Changes gathered while a commit runs.
    queued: Option<Batch>,
    /// An inline commit's outcome, not yet taken.
    inline_done: Option<Done>,
}

struct Batch {
    changes: Vec<WallChange>,
    blobs: Vec<ConfigBlob>,
    upto: u64,
}

impl Committer {
    fn new(store: Box<dyn Store>, mode: CommitMode) -> io::Result<Committer> {
        let mut committer = Committer {
            mode,
            store: None,
            to_thread: None,
            from_thread: None,
            thread: None,
            in_flight: false,
            queued: None,
            inline_done: None,
        };
        match mode {
            CommitMode::Inline => committer.store = Some(store),
            CommitMode::Thread => {
                let (to_thread, batches) = std::sync::mpsc::channel::<Batch>();
                let (done, from_thread) = mpsc::unbounded_channel();
                let thread = std::thread::Builder::new()
                    .name("zerokeeper-store".into())
                    .spawn(move || {
                        let mut store = store;
                        while let Ok(batch) = batches.recv() {
                            let began = std::time::Instant::now();
                            let result = store
                                .commit(&batch.changes, &batch.blobs)
                                .map(|()| store.generation());
                            let failed = result.is_err();
                            let _ = done.send(Done {
                                changes: batch.changes,
                                upto: batch.upto,
                                result,
                                took: began.elapsed(),
                            });
                            if failed {
                                return;
                            }
                        }
                    })?;
                committer.to_thread = Some(to_thread);
                committer.from_thread = Some(from_thread);
                committer.thread = Some(thread);
            }
        }
        Ok(committer)
    }

    fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Adds changes to commit: now if no commit runs, else with the next one.
    fn submit(&mut self, changes: Vec<WallChange>, blobs: Vec<ConfigBlob>, upto: u64) {
        match self.queued.as_mut() {
            Some(queued) => {
                queued.changes.extend(changes);
                queued.blobs.extend(blobs);
                queued.upto = upto;
            }
            None => {
                self.queued = Some(Batch {
                    changes,
                    blobs,
                    upto,
                })
            }
        }
        if !self.in_flight {
            self.next();
        }
    }

    /// Starts the next commit, if changes gathered.
    fn next(&mut self) {
        self.in_flight = false;
        let Some(batch) = self.queued.take() else {
            return;
        };
        match self.mode {
            CommitMode::Inline => {
                let began = std::time::Instant::now();
                let result = match self.store.as_mut() {
                    Some(store) => store
                        .commit(&batch.changes, &batch.blobs)
                        .map(|()| store.generation()),
                    None => Err(StoreError::Io("the store is gone".into())),
                };
                self.inline_done = Some(Done {
                    changes: batch.changes,
                    upto: batch.upto,
                    result,
                    took: began.elapsed(),
                });
            }
            CommitMode::Thread => {
                self.in_flight = true;
                let sent = self
                    .to_thread
                    .as_ref()
                    .is_some_and(|tx| tx.send(batch).is_ok());
                if !sent {
                    self.in_flight = false;
                    self.inline_done =
                        Some(Done::failed("the store's thread stopped after a failure"));
                }
            }
        }
    }

    /// The outcome of a commit that finished without waiting (inline, or refused).
    fn take_inline(&mut self) -> Option<Done> {
        self.inline_done.take()
    }

    /// Waits until the commit in flight (or a gathered one) is done: for shutdown only.
    async fn wait(&mut self) -> Option<Done> {
        if let Some(done) = self.inline_done.take() {
            return Some(done);
        }
        if !self.in_flight {
            self.next();
            if let Some(done) = self.inline_done.take() {
                return Some(done);
            }
            if !self.in_flight {
                return None;
            }
        }
        self.in_flight = false;
        self.from_thread.as_mut()?.recv().await
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.to_thread = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The next finished commit of the committer's thread.
async fn committer_done(committer: Option<&mut Committer>) -> Done {
    let receiver = committer.and_then(|c| c.from_thread.as_mut());
    match receiver {
        Some(rx) => match rx.recv().await {
            Some(done) => done,
            None => Done::failed("the store's thread ended"),
        },
        None => std::future::pending().await,
    }
}

/// The next stall a simulation asks for (never, without the hook).
async fn next_stall(
    stalls: Option<&mut mpsc::UnboundedReceiver<std::time::Duration>>,
) -> std::time::Duration {
    match stalls {
        Some(rx) => match rx.recv().await {
            Some(d) => d,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A wall-clock moment as RFC 3339 with milliseconds, in UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
