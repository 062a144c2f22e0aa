//! One way to assemble a keeper: the store, the core, its driver, the change hub, the
//! HTTP view and the admin API, wired together and run until a shutdown future
//! completes (mini-redis style: the caller injects the sockets and the shutdown).
//!
//! `zerokeeper serve`, the live demo, the turmoil simulations and the tests all start
//! their keepers here, so they run the same code:
//!
//! ```text
//!  UDP socket ──► KeeperDriver (owns the core) ──► store (commits on its own thread)
//!                      │ durable changes
//!                      ▼
//!                  ChangeHub (retained history) ──► /v1/watch
//!                      │
//!                      ▼
//!                  View (follower task) ◄── LastSeen (written by the core)
//!                      │
//!  TCP listener ──► admin API (reads: the view; writes: the KeeperHandle)
//! ```

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::Keyring;
use crate::driver::DatagramSocket;
use crate::driver::DriverClock;
use crate::driver::keeper::{ChangeSink, CommitMode, KeeperDriver, KeeperHandle};
use crate::http::view::{SeedCluster, View, ViewSeed};
use crate::http::{Listings, ServeLimits};
use crate::hub::ChangeHub;
use crate::keeper::{Change, Keeper, KeeperConfig, KeeperConfigError, RestoreError, StoredProxy};
use crate::store::{Store, StoreError};

/// A function shown every core change as the driver drains it.
pub type ChangeTap = Box<dyn FnMut(&Change) + Send>;

/// A change made to the core before it runs.
pub type Adjust = Box<dyn FnOnce(&mut Keeper) + Send>;

/// A function shown the registry a store's boot restored.
pub type OnBoot = Box<dyn FnOnce(&[StoredProxy]) + Send>;

/// A future that stops one part of a running keeper.
pub type Stop = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a keeper is made of, besides its sockets.
pub struct Setup {
    /// Timing and limits.
    pub config: KeeperConfig,
    /// Every key, with its scope.
    pub keys: Keyring,
    /// Where its state lives (`None`: it keeps nothing, as the demo).
    pub store: Option<Box<dyn Store>>,
    /// How the store's commits run ([`CommitMode::Thread`] but in simulations).
    pub commit_mode: CommitMode,
    /// Where the admin API builds its listings ([`Listings::OffRuntime`] but in
    /// simulations).
    pub listings: Listings,
    /// The admin API's server limits (connections, timeouts, watchers, shutdown).
    pub limits: ServeLimits,
    /// Who may call what on the admin API (default: everyone, no tokens).
    pub access: crate::http::Access,
    /// The admin API's TLS (`None`: plain HTTP).
    pub tls: Option<crate::http::tls::Tls>,
    /// New keyrings to put in force while the keeper runs (a reload of the key files);
    /// the latest one it holds when the core starts replaces `keys`.
    pub key_updates: Option<watch::Receiver<Keyring>>,
    /// What `POST /v1/reload` does (`None`: the endpoint answers that nothing reloads).
    pub reload: Option<Arc<dyn crate::http::Reload>>,
    /// Changes retained for watchers, in memory and in the store.
    pub retention: usize,
    /// Config versions per cluster and audit entries the store keeps.
    pub history: crate::store::History,
    /// The formats clusters declare their config files are in.
    pub config_formats: std::collections::BTreeMap<String, crate::configdoc::ConfigFormat>,
    /// The hostgroups the keeper's config file declares.
    pub hostgroups: crate::keeper::cluster::DeclaredHostgroups,
    /// The epoch of a keeper without a store (one with a store takes the store's).
    pub epoch: u32,
    /// Random bytes the freshness tokens are keyed with, drawn at every start. A keeper
    /// without a store also draws its generation of revisions from them.
    pub token_secret: [u8; 32],
    /// The driver's clock.
    pub clock: DriverClock,
    /// Shown every change (simulations check invariants with it).
    pub tap: Option<ChangeTap>,
    /// Applied to the core before it runs (tests break a rule on purpose through it).
    pub adjust: Option<Adjust>,
    /// Stalls the driver for each duration received (simulations of a stopped keeper).
    #[cfg(feature = "test-hooks")]
    pub stalls: Option<tokio::sync::mpsc::UnboundedReceiver<std::time::Duration>>,
    /// Stops the driver alone, the admin API serving on (tests of a keeper task that
    /// ended).
    pub stop_driver: Option<Stop>,
    /// Stops the admin API alone, the keeper running on (tests of its graceful stop).
    pub stop_http: Option<Stop>,
    /// Shown the registry a store's boot restored (simulations check it against the
    /// registry at the crash).
    pub on_boot: Option<OnBoot>,
    /// The leadership's lease, for a keeper elected among several: it acts only while the
    /// lease holds ([`KeeperDriver::with_lease`]).
    pub lease: Option<Arc<crate::ha::LeaseGate>>,
    /// What this keeper is, for its admin API (`None`: the only keeper).
    pub role: Option<crate::ha::HaView>,
    /// The secret the config versions it makes are named under (the store key's; `None`:
    /// [`ConfigId::of`](crate::wire::ConfigId::of)).
    pub config_id_key: Option<crate::wire::ConfigIdKey>,
}

impl Setup {
    /// A keeper of `config` and `keys` that keeps nothing, with a clock started now.
    pub fn new(config: KeeperConfig, keys: Keyring) -> Setup {
        Setup {
            config,
            keys,
            store: None,
            commit_mode: CommitMode::Thread,
            listings: Listings::OffRuntime,
            limits: ServeLimits::default(),
            access: crate::http::Access::open(),
            tls: None,
            key_updates: None,
            reload: None,
            retention: crate::config::DEFAULT_WATCH_RETENTION,
            history: crate::store::History::DEFAULT,
            config_formats: std::collections::BTreeMap::new(),
            hostgroups: Default::default(),
            epoch: 1,
            token_secret: [0; 32],
            clock: DriverClock::start(),
            tap: None,
            adjust: None,
            #[cfg(feature = "test-hooks")]
            stalls: None,
            on_boot: None,
            stop_driver: None,
            stop_http: None,
            lease: None,
            role: None,
            config_id_key: None,
        }
    }
}

impl Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("config", &self.config)
            .field("store", &self.store.is_some())
            .field("commit_mode", &self.commit_mode)
            .field("retention", &self.retention)
            .field("history", &self.history)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Why a keeper did not start. Nothing runs.
#[derive(Debug, Error)]
pub enum StartError {
    /// The store could not be booted.
    #[error("cannot boot the store: {0}")]
    Store(#[from] StoreError),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] KeeperConfigError),
    /// The stored state cannot be restored.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// A socket or thread failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A running keeper.
#[derive(Debug)]
pub struct Running {
    /// Admin calls.
    pub handle: KeeperHandle,
    /// The retained history of changes.
    pub hub: Arc<ChangeHub>,
    /// What the admin API reads.
    pub view: View,
    /// The driver's task: its result is the keeper's (a store failure is an error).
    pub keeper_task: JoinHandle<io::Result<()>>,
    /// The admin API's task.
    pub http_task: JoinHandle<io::Result<()>>,
    /// The view's follower.
    pub view_task: JoinHandle<()>,
}

impl Running {
    /// Waits until the keeper has stopped; the driver's result (a store failure is an
    /// error).
    pub async fn join(self) -> io::Result<()> {
        let keeper = flatten(self.keeper_task.await);
        let http = flatten(self.http_task.await);
        let _ = self.view_task.await;
        keeper.and(http)
    }
}

fn flatten(joined: Result<io::Result<()>, tokio::task::JoinError>) -> io::Result<()> {
    joined.map_err(io::Error::other)?
}

/// Starts a keeper's core, driver, hub and view on `socket` (heartbeats), running until
/// `shutdown` completes, and builds its admin API without serving it (the caller serves
/// [`Core::router`]; [`start`] does both). Must be called within a tokio runtime (or a
/// turmoil host).
pub async fn start_core<S>(
    mut setup: Setup,
    socket: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Core, StartError>
where
    S: DatagramSocket,
{
    let now = setup.clock.now();
    // Keys reloaded before the core starts (a standby's, while it waited) count.
    if let Some(updates) = setup.key_updates.as_mut() {
        setup.keys = updates.borrow_and_update().clone();
    }
    let (mut core, hub, seed) = match setup.store.as_mut() {
        Some(store) => {
            store.set_retention(setup.retention);
            store.set_history(setup.history);
            let snapshot = store.boot()?;
            if let Some(on_boot) = setup.on_boot.take() {
                on_boot(&snapshot.proxies);
            }
            let core = Keeper::restore(
                setup.config.clone(),
                setup.keys.clone(),
                snapshot.epoch,
                setup.token_secret,
                now,
                &snapshot.proxies,
                &snapshot.configs,
                snapshot.revision,
            )?;
            let mut core = core;
            core.restore_settings(&snapshot.clusters);
            if snapshot.restored {
                tracing::info!(
                    generation = snapshot.generation,
                    revision = snapshot.revision,
                    "the first start of a store restored from a snapshot: the fleet may have moved on since it was taken"
                );
                core.adopt_fleet();
            }
            let proxies = snapshot
                .proxies
                .iter()
                .filter_map(|p| core.slot_of(&p.cluster, &p.proxy).map(|s| (s, p.clone())))
                .collect();
            let hub = ChangeHub::new(
                snapshot.generation,
                snapshot.revision,
                setup.retention,
                snapshot.recent,
            );
            let seed = ViewSeed {
                generation: snapshot.generation,
                revision: snapshot.revision,
                proxies,
                clusters: Vec::new(),
                audit: store.audit()?,
            };
            (core, hub, seed)
        }
        None => {
            let core = Keeper::new(
                setup.config.clone(),
                setup.keys.clone(),
                setup.epoch,
                setup.token_secret,
                now,
            )?;
            let mut first = [0u8; 8];
            first.copy_from_slice(&setup.token_secret[..8]);
            let generation = u64::from_be_bytes(first) >> 1;
            let hub = ChangeHub::new(generation, 0, setup.retention, Vec::new());
            let seed = ViewSeed {
                generation,
                revision: 0,
                proxies: Vec::new(),
                clusters: Vec::new(),
                audit: Vec::new(),
            };
            (core, hub, seed)
        }
    };
    let seed = ViewSeed {
        clusters: core
            .cluster_seeds()
            .into_iter()
            .map(|(name, config, deletion_paused, settings)| SeedCluster {
                name,
                config,
                deletion_paused,
                settings,
            })
            .collect(),
        ..seed
    };
    core.set_config_id_key(setup.config_id_key.clone());
    core.set_config_formats(setup.config_formats.clone());
    core.set_declared_hostgroups(setup.hostgroups.clone());
    if let Some(adjust) = setup.adjust.take() {
        adjust(&mut core);
    }
    let view = View::new(seed, core.last_seen(), setup.clock);
    view.set_rollout_timeout(setup.config.rollout_timeout);
    let (driver, handle) = KeeperDriver::new(core, socket, setup.clock);
    let mut driver = driver.with_sink(hub.clone() as Arc<dyn ChangeSink>);
    let mut reader = None;
    if let Some(store) = setup.store.take() {
        reader = Some(store.reader()?);
        driver = driver.with_store(store, setup.commit_mode)?;
    }
    if let Some(tap) = setup.tap.take() {
        driver = driver.with_change_tap(tap);
    }
    #[cfg(feature = "test-hooks")]
    if let Some(stalls) = setup.stalls.take() {
        driver = driver.with_stalls(stalls);
    }
    if let Some(lease) = setup.lease.take() {
        driver = driver.with_lease(lease);
    }
    if let Some(updates) = setup.key_updates.take() {
        driver = driver.with_key_updates(updates);
    }
    let (stop, stopping) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let closing = hub.clone();
    let keeper_task = tokio::spawn({
        let stop = either(stopped(stopping.clone()), setup.stop_driver.take());
        async move {
            let result = driver.run(stop).await;
            // Nothing more will be published: the view and the watches end.
            closing.close();
            result
        }
    });
    let view_task = tokio::spawn(view.clone().follow(hub.clone(), stopped(stopping.clone())));
    let role = setup.role.take().unwrap_or_else(crate::ha::HaView::single);
    let router = crate::http::router_for(
        handle.clone(),
        hub.clone(),
        view.clone(),
        setup.listings,
        role,
        setup.access.clone(),
        setup.reload.clone(),
        reader,
    );
    Ok(Core {
        handle,
        hub,
        view,
        keeper_task,
        view_task,
        router,
        stopping,
    })
}

/// A running keeper whose admin API is not served yet: what [`start_core`] returns.
#[derive(Debug)]
pub struct Core {
    /// Admin calls.
    pub handle: KeeperHandle,
    /// The retained history of changes.
    pub hub: Arc<ChangeHub>,
    /// What the admin API reads.
    pub view: View,
    /// The driver's task: its result is the keeper's (a store failure is an error).
    pub keeper_task: JoinHandle<io::Result<()>>,
    /// The view's follower.
    pub view_task: JoinHandle<()>,
    /// The admin API, to serve.
    pub router: axum::Router,
    /// Becomes `true` when the keeper's shutdown completes.
    pub stopping: watch::Receiver<bool>,
}

/// Starts a keeper on `socket` (heartbeats) and `listener` (admin API) that runs until
/// `shutdown` completes. Must be called within a tokio runtime (or a turmoil host).
pub async fn start<S, L>(
    mut setup: Setup,
    socket: S,
    listener: L,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, StartError>
where
    S: DatagramSocket,
    L: axum::serve::Listener,
    L::Addr: Debug,
{
    let limits = setup.limits.clone();
    let tls = setup.tls.clone();
    let stop_http = setup.stop_http.take();
    let core = start_core(setup, socket, shutdown).await?;
    let http_task = tokio::spawn(crate::http::serve_tls(
        listener,
        core.router,
        either(stopped(core.stopping), stop_http),
        limits,
        tls,
    ));
    Ok(Running {
        handle: core.handle,
        hub: core.hub,
        view: core.view,
        keeper_task: core.keeper_task,
        http_task,
        view_task: core.view_task,
    })
}

/// Completes when `all` does, or `one` if there is one.
async fn either(all: impl Future<Output = ()>, one: Option<Stop>) {
    match one {
        Some(one) => {
            tokio::select! {
                biased;
                () = all => {}
                () = one => {}
            }
        }
        None => all.await,
    }
}

/// Completes once `stop` says so (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|&stop| stop).await;
}
