//! One keeper of several on one etcd: a standby until elected, then the leader until its
//! lease could have expired or it is told to stop.
//!
//! ```text
//!  start ─► connect (retried while etcd is down) ─► STANDBY ─elected─► LEADER ─┬─ shutdown ─► resign, exit 0
//!            reads: the committed state, followed       boot the store     ├─ lease lost ─► exit 75
//!            changes: 503 not-leader                    fenced, act        ├─ store fails ─► exit 1
//!                                                                           ├─ newer term echoed ─► raise the stored term, resign, exit 75
//!                                                                           └─ deaf (reads nothing from its fleet) ─► resign, wait 2 × lost_after, exit 75
//! ```
//!
//! A standby serves its admin API from the store (see [`standby`](super::standby)) and
//! drains its UDP socket without answering (a proxy searching for the leader sends to
//! every keeper). Once elected it stops following, boots the store under the fence of its
//! leadership (a fresh window for every proxy, as after any restart: the time the fleet
//! spent without a leader counts against nobody), and swaps its admin API's router for
//! the leader's on the same listener. Watch streams open on the standby end, and their
//! clients resume on the leader's history from their last revision.
//!
//! A leader that loses its lease exits (status [`LEASE_LOST_EXIT`](super::LEASE_LOST_EXIT)): its supervisor
//! starts it again as a standby, from nothing held over from the term that ended.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::driver::DatagramSocket;
use crate::driver::keeper::KeeperHandle;
use crate::driver::udp::Udp;
use crate::ha::etcd::EtcdElection;
use crate::ha::standby::{follow, seed_of};
use crate::ha::{Deaf, EtcdHealth, HaView, KeeperInfo, LeaseGate, LeaseLost, Role, TermBehind};
use crate::http::view::{View, ViewSeed};
use crate::http::{Listings, router_for, serve_tls, switchable};
use crate::hub::ChangeHub;
use crate::keeper::seen::LastSeen;
use crate::server::{self, Setup, stopped};
use crate::store::etcd::{EtcdOptions, EtcdStore};
use crate::store::{AuditEntry, Snapshot, Store, StoreError};

/// How a keeper of several is told to run.
#[derive(Clone, Debug)]
pub struct HaOptions {
    /// The shared store, where the election's keys live too.
    pub etcd: EtcdOptions,
    /// What this keeper says of itself when it leads.
    pub me: KeeperInfo,
    /// The leader's lease.
    pub ttl: Duration,
    /// How far before its lease's end a leader stops acting.
    pub margin: Duration,
}

/// How a keeper of several ended.
#[derive(Debug)]
pub enum Ended {
    /// Told to stop (as standby, or as leader: then it resigned).
    Shutdown,
    /// Its lease could have expired, or a proxy echoed a newer term than its own: it
    /// stopped acting, to be started again.
    LeaseLost,
}

/// Runs this keeper on `socket` and `listener` until `shutdown` completes, its lease is
/// lost, or its store fails (an error).
pub async fn run(
    mut setup: Setup,
    ha: HaOptions,
    socket: Udp,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Ended> {
    let mut shutdown = pin!(shutdown);
    let socket = Arc::new(socket);
    let retention = setup.retention;
    let clock = setup.clock;
    let lost_after = setup.config.lost_after;
    let health = Arc::new(EtcdHealth::default());

    // Connect (etcd may be down: retried until it answers, or until told to stop).
    let connected = tokio::select! {
        biased;
        () = &mut shutdown => None,
        store = connect(&ha.etcd) => Some(store),
    };
    let Some(mut store) = connected else {
        return Ok(Ended::Shutdown);
    };
    store.set_retention(retention);
    store.set_history(setup.history);
    let keys = store.election_keys();
    let mut election = tokio::select! {
        biased;
        () = &mut shutdown => return Ok(Ended::Shutdown),
        election = async {
            let mut failing = false;
            loop {
                match EtcdElection::connect(&ha.etcd, keys.clone(), ha.ttl, ha.margin, clock, health.clone()).await {
                    Ok(election) => break election,
                    Err(e) => {
                        if !failing {
                            warn!(error = %e, "cannot reach etcd for the election; retrying every second");
                            failing = true;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        } => election,
    };

    // Standby: reads of the committed state, changes refused.
    let (role_tx, role) = watch::channel(Role::Standby(None));
    let ha_view = HaView {
        role: role.clone(),
        etcd: Some(health.clone()),
    };
    let ((snapshot, audit), back) = tokio::select! {
        biased;
        () = &mut shutdown => return Ok(Ended::Shutdown),
        read = peek(store, &ha.etcd) => read,
    };
    store = back;
    let hub = ChangeHub::new(
        snapshot.generation,
        snapshot.revision,
        retention,
        snapshot.recent.clone(),
    );
    let view = View::new(
        ViewSeed {
            audit,
            ..seed_of(&snapshot)
        },
        LastSeen::new(),
        clock,
    );
    view.set_rollout_timeout(setup.config.rollout_timeout);
    let (stop_standby, standby_stopping) = watch::channel(false);
    let view_task = tokio::spawn(
        view.clone()
            .follow(hub.clone(), stopped(standby_stopping.clone())),
    );
    // The standby reads config versions as the leader committed them.
    let reader = store.reader().ok();
    let follower = tokio::spawn(follow(
        store,
        hub.clone(),
        standby_stopping.clone(),
        health.clone(),
    ));
    let drain = tokio::spawn(drain(socket.clone(), standby_stopping.clone()));
    let standby = router_for(
        KeeperHandle::detached(),
        hub.clone(),
        view.clone(),
        Listings::OffRuntime,
        ha_view.clone(),
        setup.access.clone(),
        setup.reload.clone(),
        reader,
    );
    let current = Arc::new(RwLock::new(standby));
    let (stop_http, http_stopping) = watch::channel(false);
    let http_task = tokio::spawn(serve_tls(
        listener,
        switchable(current.clone()),
        stopped(http_stopping),
        setup.limits.clone(),
        setup.tls.clone(),
    ));
    info!(id = %ha.me.id, "standby: serving reads of the committed state, campaigning");

    let elected = tokio::select! {
        biased;
        () = &mut shutdown => {
            let _ = stop_standby.send(true);
            let _ = stop_http.send(true);
            let _ = http_task.await;
            return Ok(Ended::Shutdown);
        }
        elected = election.campaign(&ha.me, 0, &role_tx) => elected,
    };

    // Leader: stop following, boot the store under the fence, act.
    let _ = stop_standby.send(true);
    let _ = drain.await;
    let _ = view_task.await;
    let mut store = match follower.await {
        Ok(Some(store)) => store,
        _ => connect(&ha.etcd).await,
    };
    // The standby's watch streams end; their clients resume on the leader's history.
    hub.close();
    store.set_retention(retention);
    store.set_fence(Some(elected.fence.clone()));
    let gate = LeaseGate::closed();
    gate.set(&elected.lease);
    // Renewing from now on, on a task of its own: booting a large store may take longer
    // than the lease.
    let mut keep = tokio::spawn(election.clone().keep(
        elected.lease_id(),
        elected.lease,
        gate.clone(),
    ));
    setup.store = Some(Box::new(store));
    setup.lease = Some(gate.clone());
    // Every answer names the term; a request echoing a newer one is not acted on.
    let term = elected.leadership.term;
    let adjust = setup.adjust.take();
    setup.adjust = Some(Box::new(move |core: &mut crate::keeper::Keeper| {
        core.lead(term);
        if let Some(adjust) = adjust {
            adjust(core);
        }
    }));
    setup.role = Some(ha_view);
    let (stop_core, core_stopping) = watch::channel(false);
    let core = match server::start_core(setup, socket.clone(), stopped(core_stopping)).await {
        Ok(core) => core,
        Err(e) => {
            keep.abort();
            election.resign(&elected).await;
            let _ = stop_http.send(true);
            let _ = http_task.await;
            return Err(e).context("cannot start as leader");
        }
    };
    role_tx.send_replace(Role::Leader(elected.leadership.clone()));
    *current
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = core.router.clone();
    info!(
        term = elected.leadership.term,
        "leading: the store is booted and the keeper acts"
    );

    let mut keeper_task = core.keeper_task;
    let ended = tokio::select! {
        biased;
        () = &mut shutdown => {
            let _ = stop_core.send(true);
            let result = (&mut keeper_task).await;
            election.resign(&elected).await;
            match result {
                Ok(Ok(())) => Ok(Ended::Shutdown),
                Ok(Err(e)) if LeaseLost::is(&e) => Ok(Ended::LeaseLost),
                Ok(Err(e)) => Err(anyhow::Error::new(e).context("the keeper task failed")),
                Err(e) => Err(anyhow::Error::new(e).context("the keeper task panicked")),
            }
        }
        lost = &mut keep => {
            let why = lost.map_or_else(|e| e.to_string(), |e| e.to_string());
            error!(error = %why, "the leadership is lost: stopping without acting");
            keeper_task.abort();
            Ok(Ended::LeaseLost)
        }
        result = &mut keeper_task => match result {
            Ok(Ok(())) => Ok(Ended::Shutdown),
            Ok(Err(e)) if LeaseLost::is(&e) => Ok(Ended::LeaseLost),
            Ok(Err(e)) if Deaf::is(&e) => {
                election.resign(&elected).await;
                // Resigned: a keeper that hears the proxies leads. Waiting before this one
                // may campaign again (it starts as a standby once it exits) keeps a keeper
                // that is still deaf from winning the leadership straight back.
                let cool_down = lost_after * 2;
                warn!(?cool_down, "resigned for deafness; waiting before exiting to campaign again");
                tokio::time::sleep(cool_down).await;
                Ok(Ended::LeaseLost)
            }
            Ok(Err(e)) if TermBehind::of(&e).is_some() => {
                let seen = TermBehind::of(&e).map_or(0, |b| b.seen);
                if let Err(why) = election.raise_term(&elected, seen).await {
                    warn!(error = %why, "could not raise the stored term");
                }
                election.resign(&elected).await;
                Ok(Ended::LeaseLost)
            }
            Ok(Err(e)) => {
                election.resign(&elected).await;
                Err(anyhow::Error::new(e).context("the keeper task stopped"))
            }
            Err(e) => Err(anyhow::Error::new(e).context("the keeper task panicked")),
        },
    };
    // The lease was resigned, lost or is no longer needed: stop renewing it. The core
    // is stopped (or was aborted, its lease lost): end what follows it.
    keep.abort();
    let _ = stop_core.send(true);
    core.hub.close();
    let _ = stop_http.send(true);
    let _ = http_task.await;
    let _ = core.view_task.await;
    ended
}

/// An etcd store handle, retried every second until etcd answers (logged once).
async fn connect(options: &EtcdOptions) -> EtcdStore {
    let mut failing = false;
    loop {
        let attempt = options.clone();
        match tokio::task::spawn_blocking(move || EtcdStore::connect(attempt)).await {
            Ok(Ok(store)) => {
                if failing {
                    info!("etcd answers: connected");
                }
                return store;
            }
            Ok(Err(e)) => {
                if !failing {
                    warn!(error = %e, "cannot reach the store in etcd; retrying every second");
                    failing = true;
                }
            }
            Err(e) => warn!(error = %e, "connecting to etcd panicked; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What is committed, read off the runtime; retried every second while etcd does not
/// answer (logged once).
async fn peek(
    mut store: EtcdStore,
    options: &EtcdOptions,
) -> ((Snapshot, Vec<AuditEntry>), EtcdStore) {
    let mut failing = false;
    loop {
        let joined = tokio::task::spawn_blocking(move || {
            let snapshot = store
                .peek()
                .and_then(|snapshot| Ok((snapshot, store.audit()?)));
            (store, snapshot)
        })
        .await;
        let (back, snapshot) = match joined {
            Ok(pair) => pair,
            Err(e) => {
                warn!(error = %e, "reading the store panicked; connecting again");
                (
                    connect(options).await,
                    Err(StoreError::Io("panicked".to_owned())),
                )
            }
        };
        store = back;
        match snapshot {
            Ok(snapshot) => return (snapshot, store),
            Err(e) => {
                if !failing {
                    warn!(error = %e, "cannot read the store; retrying every second");
                    failing = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Reads and drops what arrives on `socket` until `stop` says so: a standby answers no
/// proxy (one that searches for the leader sends to every keeper).
async fn drain<S: DatagramSocket>(
    socket: Arc<S>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 2048];
    let mut dropped: u64 = 0;
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|&s| s) => break,
            received = socket.recv_from(&mut buf) => {
                if received.is_ok() {
                    dropped += 1;
                }
            }
        }
    }
    if dropped > 0 {
        info!(dropped, "datagrams dropped while a standby");
    }
    Ok(())
}
