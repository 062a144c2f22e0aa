//! The keeper's driver: one task owns the keeper core, its UDP socket and its timer.
//!
//! Everything else reaches the core through a [`KeeperHandle`], which sends jobs (closures
//! run on the core, in order, between datagrams) and awaits their answers. So the core
//! has one owner, needs no lock, and an admin call is atomic with respect to heartbeats.
//! Events the core reports are logged, counted, and published to watchers through the
//! [`EventHub`].

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::driver::{DatagramSocket, DriverClock, RecvBatch};
use crate::keeper::{AdminError, ClusterInfo, Event, Keeper, Persist, Stats, Status};
use crate::store::{Store, change_of};
use crate::wire::MAX_DATAGRAM;

/// Datagrams handled in one burst before answers are flushed and other work gets a turn.
const MAX_BURST: usize = 1024;
/// Status changes kept for watchers that reconnect with `Last-Event-ID`.
const HISTORY: usize = 4096;

/// A job run on the keeper core by its driver. It returns the answer to its caller, which
/// the driver gives only once the job's changes are durable.
type Job = Box<dyn FnOnce(&mut Keeper, &DriverClock) -> Reply + Send>;

/// Gives a job's answer to its caller.
type Reply = Box<dyn FnOnce() + Send>;

/// A function shown every core event as it is drained (simulations check invariants
/// against these).
type EventTap = Box<dyn FnMut(&Event) + Send>;

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

// HTTP-WAVE EDIT (the http branch's one change to this file): `Applied`, and the three
// admin calls below answering with it. Until the driver numbers changes and publishes
// them into the `ChangeHub`, `revision` is 0, which `View::wait_for` takes as reflected
// at once; the driver fills in the real revision (of the last change the call made).
/// An admin call's answer, with the revision of the change it made (the HTTP answer
/// waits until the read view reflects it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied<T> {
    /// What the call answered.
    pub value: T,
    /// The revision of the change it made.
    pub revision: u64,
}

/// One proxy as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProxyView {
    /// The cluster.
    pub cluster: String,
    /// The proxy's identity.
    pub proxy: String,
    /// `ready`, `up` or `lost`.
    pub status: String,
    /// The incarnation the registry holds.
    pub incarnation: u64,
    /// When its last datagram was accepted (RFC 3339, UTC).
    pub last_heartbeat: String,
    /// Milliseconds since then.
    pub last_heartbeat_age_ms: u64,
    /// Since when it has been in this status (RFC 3339, UTC).
    pub since: String,
    /// Milliseconds since then.
    pub since_age_ms: u64,
    /// The address its datagrams come from.
    pub source: String,
    /// The config version it reports running.
    pub config_version: u64,
    /// Mass-loss protection holds for its cluster: lost proxies are not being deleted.
    pub deletion_paused: bool,
}

/// One cluster as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    /// The cluster's name.
    pub name: String,
    /// Proxies `ready`.
    pub ready: usize,
    /// Proxies `up`.
    pub up: usize,
    /// Proxies `lost`.
    pub lost: usize,
    /// The current config version.
    pub config_version: u64,
    /// `open` or `closed`.
    pub gate: &'static str,
    /// Mass-loss protection holds: its lost proxies are not being deleted.
    pub deletion_paused: bool,
}

impl From<ClusterInfo> for ClusterView {
    fn from(c: ClusterInfo) -> ClusterView {
        ClusterView {
            gate: if c.gate_open() { "open" } else { "closed" },
            name: c.name,
            ready: c.ready,
            up: c.up,
            lost: c.lost,
            config_version: c.config_version,
            deletion_paused: c.deletion_paused,
        }
    }
}

/// Something that happened, as watchers receive it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WatchEvent {
    /// Increasing from 1 within one keeper run.
    pub id: u64,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// `status`, `restart`, `superseded` or `config`.
    pub kind: &'static str,
    /// The cluster.
    pub cluster: String,
    /// The proxy, for all but `config`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// The status before (`status` events; absent: it was not registered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<&'static str>,
    /// The status after (`status` events; absent: it was deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<&'static str>,
    /// Why (`status` events), such as `lost_timeout` or `unregister`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The incarnation concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<u64>,
    /// The new config version (`config` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Lost proxies of the cluster (`deletion_paused` and `deletion_resumed` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<usize>,
    /// All proxies of the cluster (same events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<usize>,
}

/// Publishes events to watchers, keeping the latest ones for those who reconnect.
#[derive(Debug)]
pub struct EventHub {
    history: Mutex<VecDeque<WatchEvent>>,
    live: broadcast::Sender<WatchEvent>,
}

impl EventHub {
    fn new() -> EventHub {
        EventHub {
            history: Mutex::new(VecDeque::new()),
            live: broadcast::channel(HISTORY).0,
        }
    }

    fn publish(&self, mut event: WatchEvent) {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        event.id = history.back().map_or(1, |e| e.id + 1);
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        // Sent under the lock, so a subscriber sees each event once: in its backlog or live.
        let _ = self.live.send(event);
    }

    /// Events after `after` still held (all held, if `None`), and a receiver for the
    /// ones to come. Nothing falls between the two.
    pub fn subscribe(
        &self,
        after: Option<u64>,
    ) -> (Vec<WatchEvent>, broadcast::Receiver<WatchEvent>) {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let backlog = match after {
            Some(id) => history.iter().filter(|e| e.id > id).cloned().collect(),
            None => Vec::new(),
        };
        (backlog, self.live.subscribe())
    }
}

/// Counters the driver keeps from the core's events, for metrics.
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
    /// Transactions committed to the store.
    pub commits: u64,
    /// Changes committed to the store.
    pub stored_changes: u64,
    /// The store's revision after the last commit (`None`: no store).
    pub store_revision: Option<u64>,
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
}

/// The way in to a running keeper: admin calls, queries, and the event stream.
#[derive(Clone, Debug)]
pub struct KeeperHandle {
    jobs: mpsc::Sender<Job>,
    hub: Arc<EventHub>,
    counters: Arc<Mutex<DriverCounters>>,
}

impl KeeperHandle {
    /// Runs `f` on the core, between datagrams, and returns its result.
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

    /// Deletes a proxy; returns the status it had.
    pub async fn remove(
        &self,
        cluster: String,
        proxy: String,
    ) -> Result<Applied<Status>, CallError> {
        let value = self
            .call(move |k, c| k.remove_proxy(c.now(), &cluster, &proxy))
            .await??;
        Ok(Applied { value, revision: 0 })
    }

    /// Stores the next config version, if the gate is open; returns its number.
    pub async fn push_config(
        &self,
        cluster: String,
        config: Arc<[u8]>,
    ) -> Result<Applied<u64>, CallError> {
        let value = self
            .call(move |k, c| k.push_config(c.now(), &cluster, config))
            .await??;
        Ok(Applied { value, revision: 0 })
    }

    /// Switches a hostgroup's datasource, if the gate is open; returns the new version.
    pub async fn switch_datasource(
        &self,
        cluster: String,
        hostgroup: String,
        from: String,
        to: String,
    ) -> Result<Applied<u64>, CallError> {
        let value = self
            .call(move |k, c| k.switch_datasource(c.now(), &cluster, &hostgroup, &from, &to))
            .await??;
        Ok(Applied { value, revision: 0 })
    }

    /// The gate of a cluster: `Ok` when open, the blockers when closed.
    pub async fn gate(&self, cluster: String) -> Result<(), CallError> {
        Ok(self.call(move |k, _| k.gate(&cluster)).await??)
    }

    /// Every cluster, sorted by name.
    pub async fn clusters(&self) -> Result<Vec<ClusterView>, Stopped> {
        self.call(|k, _| k.clusters().into_iter().map(ClusterView::from).collect())
            .await
    }

    /// The proxies of one cluster, or of every cluster, sorted by cluster and identity.
    pub async fn proxies(&self, cluster: Option<String>) -> Result<Vec<ProxyView>, CallError> {
        Ok(self
            .call(move |k, clock| {
                let names = match cluster {
                    Some(name) => vec![name],
                    None => k.clusters().into_iter().map(|c| c.name).collect(),
                };
                let now = clock.now();
                let mut views = Vec::new();
                for name in names {
                    let paused = k.deletion_paused(&name);
                    for p in k.proxies(&name)? {
                        views.push(ProxyView {
                            cluster: p.cluster,
                            proxy: p.proxy,
                            status: p.status.as_str().to_owned(),
                            incarnation: p.incarnation,
                            last_heartbeat: rfc3339(clock.wall(p.last_heard)),
                            last_heartbeat_age_ms: millis(now - p.last_heard),
                            since: rfc3339(clock.wall(p.since)),
                            since_age_ms: millis(now - p.since),
                            source: p.source.to_string(),
                            config_version: p.config_version,
                            deletion_paused: paused,
                        });
                    }
                }
                Ok::<_, AdminError>(views)
            })
            .await??)
    }

    /// Everything `/metrics` shows.
    pub async fn metrics(&self) -> Result<MetricsSnapshot, Stopped> {
        let counters = self.counters.clone();
        self.call(move |k, _| MetricsSnapshot {
            stats: k.stats().clone(),
            counters: counters.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            clusters: k.clusters(),
            tombstones: k.tombstone_count(),
        })
        .await
    }

    /// The event stream.
    pub fn events(&self) -> &EventHub {
        &self.hub
    }
}

/// The keeper task. Create it with [`KeeperDriver::new`], run it with
/// [`KeeperDriver::run`].
pub struct KeeperDriver<S> {
    core: Keeper,
    socket: S,
    clock: DriverClock,
    jobs: mpsc::Receiver<Job>,
    hub: Arc<EventHub>,
    counters: Arc<Mutex<DriverCounters>>,
    tap: Option<EventTap>,
    store: Option<Box<dyn Store>>,
}

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
        let hub = Arc::new(EventHub::new());
        let counters = Arc::new(Mutex::new(DriverCounters::default()));
        let handle = KeeperHandle {
            jobs: tx,
            hub: hub.clone(),
            counters: counters.clone(),
        };
        (
            KeeperDriver {
                core,
                socket,
                clock,
                jobs: rx,
                hub,
                counters,
                tap: None,
                store: None,
            },
            handle,
        )
    }

    /// Persists the core's changes in `store` (the core must be persistent, built with
    /// `Keeper::restore` from this store's snapshot).
    ///
    /// Each turn of the loop commits the changes it made in one transaction, then sends
    /// the answers that waited for them. A store failure stops the driver with an error:
    /// a keeper never answers for a change it could not make durable.
    pub fn with_store(mut self, store: Box<dyn Store>) -> Self {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .store_revision = Some(store.revision());
        self.store = Some(store);
        self
    }

    /// Shows every core event to `tap`, in order, before it is logged and published.
    pub fn with_event_tap(mut self, tap: impl FnMut(&Event) + Send + 'static) -> Self {
        self.tap = Some(Box::new(tap));
        self
    }

    /// Serves until `shutdown` completes (or the socket fails for good).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let mut batch = RecvBatch::new();
        let mut out = vec![0u8; MAX_DATAGRAM];
        let mut jobs_open = true;
        let mut replies: Vec<Reply> = Vec::new();
        let mut changes = Vec::new();
        tokio::pin!(shutdown);
        loop {
            let deadline = self.core.poll_timeout().map(|t| self.clock.deadline(t));
            // `biased`: a fixed order keeps runs reproducible under turmoil (tokio's own
            // branch choice is random and unseeded). Shutdown first, then admin jobs (few
            // and waited on by a person), then datagrams, then timers.
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                job = self.jobs.recv(), if jobs_open => match job {
                    Some(job) => replies.push(job(&mut self.core, &self.clock)),
                    None => jobs_open = false,
                },
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
            // Durable first: the answers released below may depend on it.
            self.commit(&mut changes)?;
            self.flush(&mut out).await;
            for reply in replies.drain(..) {
                reply();
            }
        }
        Ok(())
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

    /// Commits the core's pending changes in one transaction and tells the core.
    fn commit(&mut self, changes: &mut Vec<Persist>) -> io::Result<()> {
        let Some(store) = self.store.as_mut() else {
            return Ok(());
        };
        let upto = self.core.take_changes(changes);
        if changes.is_empty() {
            return Ok(());
        }
        let clock = self.clock;
        let stored: Vec<_> = changes
            .drain(..)
            .map(|c| change_of(&c, |at| unix_millis(clock.wall(at))))
            .collect();
        let revision = store.commit(&stored).map_err(|e| {
            error!(error = %e, "the store failed; stopping rather than answer for changes that are not durable");
            io::Error::other(e)
        })?;
        self.core.mark_durable(upto);
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        counters.commits += 1;
        counters.stored_changes += stored.len() as u64;
        counters.store_revision = Some(revision);
        Ok(())
    }

    async fn flush(&mut self, out: &mut [u8]) {
        while let Some(t) = self.core.poll_transmit(out) {
            if let Err(e) = self.socket.send_to(&out[..t.len], t.destination).await {
                debug!(to = %t.destination, error = %e, "udp send failed");
            }
        }
        while let Some(event) = self.core.poll_event() {
            self.publish(event);
        }
    }

    fn publish(&mut self, event: Event) {
        if let Some(tap) = self.tap.as_mut() {
            tap(&event);
        }
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let watch = match event {
            Event::StatusChanged(c) => {
                let from = c.from.map_or("none", Status::as_str);
                let to = c.to.map_or("none", Status::as_str);
                info!(cluster = %c.cluster, proxy = %c.proxy, from, to, reason = c.reason.as_str(),
                      incarnation = c.incarnation, "status changed");
                *counters.transitions.entry((from, to)).or_default() += 1;
                WatchEvent {
                    kind: "status",
                    proxy: Some(c.proxy),
                    from: c.from.map(Status::as_str),
                    to: c.to.map(Status::as_str),
                    reason: Some(c.reason.as_str()),
                    incarnation: Some(c.incarnation),
                    ..self.event(&c.cluster, c.at)
                }
            }
            Event::RestartSent {
                cluster,
                proxy,
                incarnation,
                to,
            } => {
                info!(%cluster, %proxy, incarnation, %to, "restart sent");
                counters.restarts_sent += 1;
                WatchEvent {
                    kind: "restart",
                    proxy: Some(proxy),
                    incarnation: Some(incarnation),
                    ..self.event(&cluster, self.clock.now())
                }
            }
            Event::Superseded {
                cluster,
                proxy,
                loser,
                winner,
                to,
            } => {
                warn!(%cluster, %proxy, loser, winner, %to, "two processes claim one identity; the older was told to stop");
                counters.superseded_sent += 1;
                WatchEvent {
                    kind: "superseded",
                    proxy: Some(proxy),
                    incarnation: Some(loser),
                    ..self.event(&cluster, self.clock.now())
                }
            }
            Event::MassLoss {
                cluster,
                paused,
                lost,
                total,
            } => {
                if paused {
                    warn!(%cluster, lost, total, "mass loss: more than the configured share of the cluster is lost; \
                          deletion of its lost proxies is paused (the keeper's own network is the likely cause)");
                } else {
                    info!(%cluster, lost, total, "mass loss over: deletion of lost proxies resumed");
                }
                WatchEvent {
                    kind: if paused {
                        "deletion_paused"
                    } else {
                        "deletion_resumed"
                    },
                    lost: Some(lost),
                    total: Some(total),
                    ..self.event(&cluster, self.clock.now())
                }
            }
            Event::ConfigChanged {
                cluster,
                version,
                cause,
            } => {
                info!(%cluster, version, ?cause, "config version stored");
                counters.config_changes += 1;
                WatchEvent {
                    kind: "config",
                    version: Some(version),
                    ..self.event(&cluster, self.clock.now())
                }
            }
        };
        drop(counters);
        self.hub.publish(watch);
    }

    fn event(&self, cluster: &str, at: crate::time::Instant) -> WatchEvent {
        WatchEvent {
            id: 0,
            at: rfc3339(self.clock.wall(at)),
            kind: "",
            cluster: cluster.to_owned(),
            proxy: None,
            from: None,
            to: None,
            reason: None,
            incarnation: None,
            version: None,
            lost: None,
            total: None,
        }
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
