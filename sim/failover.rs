//! Failover under turmoil: three keepers on one shared store with an in-memory election,
//! proxies that know all three, and random schedules of leader crashes, leader pauses
//! past (and within) the lease, leaders deaf to every proxy (which the standbys still
//! hear), and partitions between keepers and proxies.
//!
//! The keepers are the production core and driver (`server::start_core`) with the same
//! fences as on etcd: a [`LeaseGate`] the driver checks before it sends or commits, a
//! store whose commits compare the leadership (as etcd's compare the leader key's create
//! revision), and the term in every version 2 answer. The election is the model of
//! etcd's lease: a leader holds it until its last renewal plus the TTL; a pause stops
//! the renewals as a SIGSTOP does.
//!
//! Checked on every seed:
//! 1. **one term acts at a time**: every datagram a keeper sends under term T leaves
//!    while T's lease holds in the election, from the keeper that holds it;
//! 2. no commit is refused by the store's fence (a keeper never tries to write after its
//!    lease: the gate stopped it first);
//! 3. every proxy's accepted term never goes down;
//! 4. **no failover alone changes a proxy's status**: a proxy that no fault touched is
//!    never marked `lost`, deleted or restarted, whatever happens to the keepers: their
//!    crashes, their pauses, and a leader deaf to the whole fleet (it steps down first);
//! 5. liveness: after the faults end, a keeper leads and every untouched proxy is `up`;
//! 6. forward only, across leaderships: every status change starts from the status the
//!    log of whichever leader last gave the proxy (a new leader's store holds exactly what
//!    the old one changed), and within an incarnation no proxy goes back to `ready`.
//!
//! `SIM_SEEDS=N` runs seeds 1..=N (default 100); `SIM_SEED=N` runs one and prints its plan.

mod support;

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use zerokeeper::agent::{Agent, AgentConfig};
use zerokeeper::auth::Keyring;
use zerokeeper::driver::keeper::CommitMode;
use zerokeeper::driver::proxy::{InitPolicy, ProxyControl, ProxyDriver};
use zerokeeper::driver::{DatagramSocket, DriverClock};
use zerokeeper::ha::{Deaf, LeaseClock, LeaseGate};
use zerokeeper::keeper::{Change, ChangeKind, ConfigBlob, KeeperConfig, Status, WallChange};
use zerokeeper::server::{self, Setup};
use zerokeeper::store::{AuditEntry, MemoryStore, Snapshot, Store, StoreError};
use zerokeeper::time::WallTime;
use zerokeeper::wire::{self, Version};

use support::{SimSocket, UDP_PORT, key, wall_now};

const KEEPERS: usize = 3;
const TTL: Duration = Duration::from_millis(1_000);
const MARGIN: Duration = Duration::from_millis(200);
const INTERVAL: Duration = Duration::from_millis(100);
const LOST_AFTER: Duration = Duration::from_millis(500);
const FAULT_PHASE: Duration = Duration::from_secs(10);
/// After the faults: a lease to expire, an election, a boot and a search.
const SETTLE: Duration = Duration::from_secs(4);
const TICK: Duration = Duration::from_millis(10);
const CLUSTER: &str = "test_cluster";

/// Simulated time, on a simulated host (outside one, the test passes `sim.elapsed()`).
fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One leadership, as the election saw it.
#[derive(Clone, Debug)]
struct Tenure {
    term: u64,
    keeper: usize,
    began: Duration,
    /// Its lease's end as of the latest renewal: it holds until then.
    lease_end: Duration,
}

/// The model of etcd's leader key with a lease: taken only when free, held until the
/// last renewal plus the TTL, the term counted in the same step.
#[derive(Default)]
struct Election {
    tenures: Mutex<Vec<Tenure>>,
}

impl Election {
    fn current(tenures: &[Tenure], at: Duration) -> Option<&Tenure> {
        tenures.last().filter(|t| t.lease_end > at)
    }

    fn try_lead(&self, keeper: usize) -> Option<u64> {
        let at = now();
        let mut tenures = lock(&self.tenures);
        if Election::current(&tenures, at).is_some() {
            return None;
        }
        let term = tenures.last().map_or(0, |t| t.term) + 1;
        tenures.push(Tenure {
            term,
            keeper,
            began: at,
            lease_end: at + TTL,
        });
        Some(term)
    }

    fn renew(&self, term: u64) -> bool {
        let at = now();
        let mut tenures = lock(&self.tenures);
        match tenures.last_mut() {
            Some(t) if t.term == term && t.lease_end > at => {
                t.lease_end = at + TTL;
                true
            }
            _ => false,
        }
    }

    /// Gives up `term`'s lease now (etcd's lease revoke).
    fn resign(&self, term: u64) {
        let at = now();
        let mut tenures = lock(&self.tenures);
        if let Some(t) = tenures.last_mut().filter(|t| t.term == term) {
            t.lease_end = t.lease_end.min(at);
        }
    }

    fn holds(&self, term: u64) -> bool {
        let tenures = lock(&self.tenures);
        Election::current(&tenures, now()).is_some_and(|t| t.term == term)
    }
}

/// The shared store behind the fence of one leadership: a commit compares the term, as
/// the etcd store's transactions compare the leader key's create revision.
struct FencedStore {
    inner: MemoryStore,
    election: Arc<Election>,
    term: u64,
    refused: Arc<Mutex<u64>>,
}

impl Store for FencedStore {
    fn boot(&mut self) -> Result<Snapshot, StoreError> {
        self.inner.boot()
    }

    fn commit(&mut self, changes: &[WallChange], blobs: &[ConfigBlob]) -> Result<(), StoreError> {
        if !self.election.holds(self.term) {
            *lock(&self.refused) += 1;
            return Err(StoreError::Io(format!(
                "fenced: term {} no longer leads",
                self.term
            )));
        }
        self.inner.commit(changes, blobs)
    }

    fn revision(&self) -> u64 {
        self.inner.revision()
    }

    fn generation(&self) -> u64 {
        self.inner.generation()
    }

    fn audit(&self) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit()
    }

    fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<WallChange>, StoreError> {
        self.inner.changes_after(after, limit)
    }

    fn set_retention(&mut self, changes: usize) {
        self.inner.set_retention(changes);
    }

    fn set_history(&mut self, history: zerokeeper::store::History) {
        self.inner.set_history(history);
    }

    fn reader(&self) -> Result<std::sync::Arc<dyn zerokeeper::store::StoreRead>, StoreError> {
        self.inner.reader()
    }
}

/// A datagram a keeper sent: the term its keeper was elected to, and the term its
/// trailer named (0 in version 1).
#[derive(Clone, Debug)]
struct Sent {
    at: Duration,
    keeper: usize,
    term: u64,
    wire_term: u64,
}

/// A keeper's socket that records the term of everything it sends.
struct SendTap<S> {
    inner: S,
    keeper: usize,
    /// The term the keeper was last elected to.
    term: Arc<std::sync::atomic::AtomicU64>,
    log: Arc<Mutex<Vec<Sent>>>,
}

impl<S: DatagramSocket> DatagramSocket for SendTap<S> {
    fn send_to(
        &self,
        buf: &[u8],
        target: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        if let Ok(framed) = wire::open_framed(buf, &key()) {
            lock(&self.log).push(Sent {
                at: now(),
                keeper: self.keeper,
                term: self.term.load(std::sync::atomic::Ordering::Relaxed),
                wire_term: framed.trailer.term,
            });
        }
        self.inner.send_to(buf, target)
    }

    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        self.inner.recv_from(buf)
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner.try_recv_from(buf)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// What a run leaves out on purpose, to show that the checks catch it.
#[derive(Clone, Copy, Debug)]
struct Knobs {
    /// The leader's driver checks its lease before it acts.
    gate: bool,
    /// The proxies' protocol (version 1 carries no term).
    protocol: Version,
}

impl Default for Knobs {
    fn default() -> Knobs {
        Knobs {
            gate: true,
            protocol: Version::V2,
        }
    }
}

/// What the keeper hosts share with the test.
#[derive(Default)]
struct Shared {
    seed: u64,
    knobs: Knobs,
    election: Arc<Election>,
    store: MemoryStore,
    sent: Arc<Mutex<Vec<Sent>>>,
    refused: Arc<Mutex<u64>>,
    /// Every core change, with the term of the leader that made it.
    changes: Arc<Mutex<Vec<(Duration, u64, Change)>>>,
    /// Per keeper: until when it is paused (its driver stalls, its renewals stop).
    paused_until: Mutex<BTreeMap<usize, Duration>>,
    /// Per keeper: the running driver's stall control.
    stalls: Mutex<BTreeMap<usize, tokio::sync::mpsc::UnboundedSender<Duration>>>,
    boots: Mutex<u32>,
    /// Leaders that resigned because they read nothing.
    deaf_resignations: Mutex<u64>,
}

impl Shared {
    /// Pauses `keeper` from `at` (the test's view of simulated time) for `length`.
    fn pause(&self, keeper: usize, at: Duration, length: Duration) {
        lock(&self.paused_until).insert(keeper, at + length);
        if let Some(tx) = lock(&self.stalls).get(&keeper) {
            let _ = tx.send(length);
        }
    }

    fn paused(&self, keeper: usize) -> bool {
        lock(&self.paused_until)
            .get(&keeper)
            .is_some_and(|until| *until > now())
    }
}

fn keeper_name(k: usize) -> String {
    format!("keeper{}", k + 1)
}

/// A keeper host: a standby (reading its socket, answering nothing) until it wins the
/// election, then the leader until its lease could have expired; then a standby again.
fn keeper_host(sim: &mut turmoil::Sim<'_>, k: usize, shared: Arc<Shared>) {
    sim.host(keeper_name(k), move || {
        let shared = shared.clone();
        async move {
            let udp = turmoil::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, UDP_PORT)).await?;
            let elected = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let socket = Arc::new(SendTap {
                inner: SimSocket(udp),
                keeper: k,
                term: elected.clone(),
                log: shared.sent.clone(),
            });
            let mut buf = vec![0u8; 2048];
            loop {
                // Standby: drain until elected.
                let term = loop {
                    if !shared.paused(k)
                        && let Some(term) = shared.election.try_lead(k)
                    {
                        elected.store(term, std::sync::atomic::Ordering::Relaxed);
                        break term;
                    }
                    let _ =
                        tokio::time::timeout(Duration::from_millis(50), socket.recv_from(&mut buf))
                            .await;
                };
                lead(k, term, &shared, socket.clone()).await?;
            }
        }
    });
}

async fn lead<S: DatagramSocket + Send + Sync + 'static>(
    k: usize,
    term: u64,
    shared: &Arc<Shared>,
    socket: Arc<S>,
) -> io::Result<()> {
    let clock = DriverClock::start_at(wall_now());
    let mut lease = LeaseClock::new(MARGIN);
    lease.answered(lease.sent(clock.now()), TTL);
    let gate = LeaseGate::closed();
    gate.set(&lease);
    let keep = tokio::spawn({
        let (shared, gate) = (shared.clone(), gate.clone());
        async move {
            loop {
                tokio::time::sleep(TTL / 3).await;
                if shared.paused(k) {
                    // A stopped process renews nothing.
                    continue;
                }
                let renewal = lease.sent(clock.now());
                if !shared.election.renew(term) {
                    gate.close();
                    return;
                }
                lease.answered(renewal, TTL);
                gate.set(&lease);
            }
        }
    });
    let boot = {
        let mut boots = lock(&shared.boots);
        *boots += 1;
        *boots
    };
    let config = KeeperConfig {
        heartbeat_interval: INTERVAL,
        lost_after: LOST_AFTER,
        ready_timeout: Duration::from_secs(3),
        delete_after: Duration::from_secs(3),
        ..KeeperConfig::default()
    };
    let mut setup = Setup::new(config, Keyring::with_default(key()));
    setup.epoch = boot;
    setup.token_secret = Sha256::digest(format!("{}:{boot}", shared.seed)).into();
    setup.clock = clock;
    setup.commit_mode = CommitMode::Inline;
    setup.listings = zerokeeper::http::Listings::Inline;
    setup.store = Some(Box::new(FencedStore {
        inner: shared.store.clone(),
        election: shared.election.clone(),
        term,
        refused: shared.refused.clone(),
    }));
    if shared.knobs.gate {
        setup.lease = Some(gate);
    }
    setup.adjust = Some(Box::new(move |core| core.lead(term)));
    let (stall_tx, stall_rx) = tokio::sync::mpsc::unbounded_channel();
    lock(&shared.stalls).insert(k, stall_tx);
    setup.stalls = Some(stall_rx);
    let log = shared.changes.clone();
    setup.tap = Some(Box::new(move |change| {
        lock(&log).push((now(), term, change.clone()));
    }));
    let core = server::start_core(setup, socket, std::future::pending())
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
    // It acts until its lease could have expired (or its store refuses it, or it is
    // deaf: then it resigns, and waits before it campaigns again, as `ha::run` does).
    let result = core.keeper_task.await;
    keep.abort();
    if let Ok(Err(e)) = &result
        && Deaf::is(e)
    {
        shared.election.resign(term);
        *lock(&shared.deaf_resignations) += 1;
        tokio::time::sleep(LOST_AFTER * 2).await;
    }
    core.hub.close();
    lock(&shared.stalls).remove(&k);
    Ok(())
}

/// A proxy host that knows every keeper.
fn proxy_host(
    sim: &mut turmoil::Sim<'_>,
    host: &str,
    identity: &str,
    control: Rc<std::cell::RefCell<Option<ProxyControl>>>,
    protocol: Version,
) {
    let identity = identity.to_owned();
    sim.host(host, move || {
        let (identity, control) = (identity.clone(), control.clone());
        async move {
            let udp = turmoil::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
            let keepers: Vec<SocketAddr> = (0..KEEPERS)
                .map(|k| SocketAddr::new(turmoil::lookup(keeper_name(k)), UDP_PORT))
                .collect();
            let mut cfg = AgentConfig::new(CLUSTER, identity, key());
            cfg.default_interval = INTERVAL;
            cfg.keepers = KEEPERS;
            cfg.protocol = protocol;
            let clock = DriverClock::start_at(wall_now());
            let since = wall_now().duration_since(UNIX_EPOCH).unwrap_or_default();
            let agent = Agent::new(
                cfg,
                WallTime::from_micros(since.as_micros() as u64),
                clock.now(),
            )?;
            let (_tx, rx) = watch::channel(keepers);
            let (driver, c) = ProxyDriver::with_keepers(
                agent,
                SimSocket(udp),
                rx,
                InitPolicy::After(Duration::ZERO),
                clock,
            );
            *control.borrow_mut() = Some(c);
            driver.run(std::future::pending()).await?;
            Ok(())
        }
    });
}

#[derive(Clone, Debug)]
enum Fault {
    /// Crash the keeper that leads now.
    CrashLeader,
    /// Start a crashed keeper again.
    Bounce(usize),
    /// Pause the keeper that leads now, for this long (past its lease, or within it).
    PauseLeader(Duration),
    /// Cut the keeper that leads now off from every proxy, which the standbys still hear
    /// (a deaf leader), for this long.
    DeafLeader(Duration),
    /// Cut a standby off from some proxies, or the proxies from every keeper.
    Partition {
        keepers: Vec<usize>,
        proxies: Vec<usize>,
    },
    Heal {
        keepers: Vec<usize>,
        proxies: Vec<usize>,
    },
}

struct Plan {
    seed: u64,
    proxies: usize,
    schedule: Vec<(Duration, Fault)>,
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "seed {}: {} proxies", self.seed, self.proxies)?;
        for (at, fault) in &self.schedule {
            writeln!(f, "  {at:>8.3?} {fault:?}")?;
        }
        Ok(())
    }
}

impl Plan {
    fn generate(seed: u64) -> Plan {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // At least 4: a leader thinks itself deaf only when a few heartbeats are missing.
        let proxies = rng.random_range(4..=6);
        let mut schedule = Vec::new();
        // Faults start once the fleet is up under a first leader.
        let mut t = Duration::from_millis(2_000);
        while t < FAULT_PHASE {
            let fault = match rng.random_range(0..12) {
                10..=11 => {
                    let length = Duration::from_millis(rng.random_range(300..1_500));
                    Fault::DeafLeader(length)
                }
                0..=2 => {
                    schedule.push((t, Fault::CrashLeader));
                    // Which keeper crashed is known only when it runs: bounce them all
                    // later (a bounce of a running keeper restarts it as a standby).
                    let back = t + Duration::from_millis(rng.random_range(300..2_000));
                    for k in 0..KEEPERS {
                        schedule.push((back, Fault::Bounce(k)));
                    }
                    t += Duration::from_millis(rng.random_range(1_500..3_000));
                    continue;
                }
                3..=5 => {
                    // Past the lease (the pause of a frozen VM) or within it.
                    let length = if rng.random_bool(0.6) {
                        TTL + Duration::from_millis(rng.random_range(100..1_500))
                    } else {
                        Duration::from_millis(rng.random_range(50..500))
                    };
                    Fault::PauseLeader(length)
                }
                _ => {
                    // Some proxies from a standby-to-be (harmless), or from every keeper.
                    let n = rng.random_range(1..=2.min(proxies));
                    let group: Vec<usize> = (0..n).map(|i| (seed as usize + i) % proxies).collect();
                    let keepers = if rng.random_bool(0.5) {
                        (0..KEEPERS).collect()
                    } else {
                        vec![rng.random_range(0..KEEPERS)]
                    };
                    let end = t + Duration::from_millis(rng.random_range(200..1_500));
                    schedule.push((
                        end,
                        Fault::Heal {
                            keepers: keepers.clone(),
                            proxies: group.clone(),
                        },
                    ));
                    Fault::Partition {
                        keepers,
                        proxies: group,
                    }
                }
            };
            schedule.push((t, fault));
            t += Duration::from_millis(rng.random_range(500..2_000));
        }
        schedule.sort_by_key(|(at, _)| *at);
        Plan {
            seed,
            proxies,
            schedule,
        }
    }
}

fn proxy_name(p: usize) -> String {
    format!("proxy{}", p + 1)
}

fn identity(p: usize) -> String {
    format!("10.25.0.{}:3000", 11 + p)
}

struct Outcome {
    deaf: u64,
    /// Every change every leader made, in order: the run's fingerprint.
    digest: String,
    plan: Plan,
    violations: Vec<String>,
    failovers: usize,
}

fn run(seed: u64, knobs: Knobs) -> Outcome {
    let plan = Plan::generate(seed);
    let shared = Arc::new(Shared {
        seed,
        knobs,
        ..Shared::default()
    });
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(support::EPOCH_SECS))
        .tick_duration(TICK)
        .simulation_duration(Duration::from_secs(3_600))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(20))
        .udp_capacity(8_192)
        .build();
    for k in 0..KEEPERS {
        keeper_host(&mut sim, k, shared.clone());
    }
    let controls: Vec<Rc<std::cell::RefCell<Option<ProxyControl>>>> = (0..plan.proxies)
        .map(|_| Rc::new(std::cell::RefCell::new(None)))
        .collect();
    for (p, control) in controls.iter().enumerate() {
        proxy_host(
            &mut sim,
            &proxy_name(p),
            &identity(p),
            control.clone(),
            knobs.protocol,
        );
    }
    let mut touched = vec![false; plan.proxies];
    let mut violations = Vec::new();
    let mut terms = vec![0u64; plan.proxies];
    let end = FAULT_PHASE + SETTLE;
    let mut next = 0;
    let mut crashed = [false; KEEPERS];
    // (keeper, proxy) pairs cut off from each other now.
    let mut cut = std::collections::BTreeSet::new();
    // Deaf leaders: (keeper, since, until).
    let mut deaf: Vec<(usize, Duration, Duration)> = Vec::new();
    while sim.elapsed() < end {
        while next < plan.schedule.len() && plan.schedule[next].0 <= sim.elapsed() {
            let fault = plan.schedule[next].1.clone();
            next += 1;
            let leader = {
                let tenures = lock(&shared.election.tenures);
                Election::current(&tenures, sim.elapsed()).map(|t| t.keeper)
            };
            match fault {
                Fault::CrashLeader => {
                    if let Some(k) = leader {
                        sim.crash(keeper_name(k));
                        crashed[k] = true;
                    }
                }
                Fault::Bounce(k) => {
                    if crashed[k] {
                        sim.bounce(keeper_name(k));
                        crashed[k] = false;
                    }
                }
                Fault::DeafLeader(length) => {
                    // With part of the fleet cut off already (from every keeper, or from
                    // the leader), the leader may hold too
                    // few `up` proxies to tell its deafness from their silence
                    // (DEAF_MIN_PROXIES): then it marks them lost, as a lone keeper would.
                    let cut_off = (0..plan.proxies)
                        .filter(|&p| {
                            leader.is_some_and(|k| cut.contains(&(k, p)))
                                || (0..KEEPERS).all(|k| cut.contains(&(k, p)))
                        })
                        .count();
                    if cut_off > 0 || plan.proxies - cut_off < 4 {
                        touched.iter_mut().for_each(|t| *t = true);
                    }
                    if let Some(k) = leader {
                        for p in 0..plan.proxies {
                            sim.partition(keeper_name(k), proxy_name(p));
                        }
                        deaf.push((k, sim.elapsed(), sim.elapsed() + length));
                    }
                }
                Fault::PauseLeader(length) => {
                    if let Some(k) = leader {
                        shared.pause(k, sim.elapsed(), length);
                    }
                }
                Fault::Partition { keepers, proxies } => {
                    let all = keepers.len() == KEEPERS;
                    for &p in &proxies {
                        // Cut from every keeper, a proxy may be lost: it is touched.
                        touched[p] |= all;
                        for &k in &keepers {
                            sim.partition(keeper_name(k), proxy_name(p));
                            cut.insert((k, p));
                        }
                    }
                }
                Fault::Heal { keepers, proxies } => {
                    for &p in &proxies {
                        for &k in &keepers {
                            cut.remove(&(k, p));
                            // A deaf keeper stays deaf to every proxy until its deafness
                            // ends (hearing some of them is another fault: a partly deaf
                            // leader, not handled yet).
                            if !deaf.iter().any(|d| d.0 == k) {
                                sim.repair(keeper_name(k), proxy_name(p));
                            }
                        }
                    }
                }
            }
        }
        if let Err(e) = sim.step() {
            violations.push(format!("the simulation failed: {e}"));
            break;
        }
        // A leader cut off from a proxy that standbys still hear (a deaf leader) marks it
        // lost: that is not handled yet (OPERATIONS.md §2, "Not yet"), so such a proxy
        // counts as touched by a fault.
        let leader = {
            let tenures = lock(&shared.election.tenures);
            Election::current(&tenures, sim.elapsed()).map(|t| t.keeper)
        };
        if let Some(k) = leader {
            for &(ck, p) in &cut {
                touched[p] |= ck == k;
            }
        }
        // A deaf leader steps down; one elected while still deaf (it has read nothing,
        // so it cannot tell deafness from a silent fleet) marks the fleet lost.
        let elected_at = {
            let tenures = lock(&shared.election.tenures);
            Election::current(&tenures, sim.elapsed()).map(|t| t.began)
        };
        deaf.retain(|&(k, _, until)| {
            if sim.elapsed() < until {
                return true;
            }
            for p in 0..plan.proxies {
                if !cut.contains(&(k, p)) {
                    sim.repair(keeper_name(k), proxy_name(p));
                }
            }
            false
        });
        for &(k, from, _) in &deaf {
            if leader == Some(k) && elected_at.is_some_and(|at| at > from) {
                touched.iter_mut().for_each(|t| *t = true);
            }
        }
        // 3. Terms only grow at every proxy.
        for (p, control) in controls.iter().enumerate() {
            if let Some(c) = control.borrow().as_ref() {
                let term = c.state.borrow().term;
                if term < terms[p] {
                    violations.push(format!(
                        "{} went back from term {} to {term}",
                        identity(p),
                        terms[p]
                    ));
                }
                terms[p] = term;
            }
        }
    }
    let tenures = lock(&shared.election.tenures).clone();
    if std::env::var("SIM_DEBUG").is_ok() {
        for t in &tenures {
            println!("{t:?}");
        }
        let sent = lock(&shared.sent);
        for t in &tenures {
            let last = sent.iter().filter(|s| s.term == t.term).map(|s| s.at).max();
            println!("term {} last send {last:?}", t.term);
        }
    }
    // 1. One term acts at a time.
    for sent in lock(&shared.sent).iter() {
        let Some(t) = tenures.iter().find(|t| t.term == sent.term) else {
            violations.push(format!("{sent:?}: under a term nobody was elected to"));
            continue;
        };
        if knobs.protocol == Version::V2 && sent.wire_term != sent.term {
            violations.push(format!("{sent:?}: its answer names another term"));
        }
        if t.keeper != sent.keeper || sent.at < t.began || sent.at >= t.lease_end {
            violations.push(format!(
                "keeper{} sent at {:?} under term {} which {t:?} held",
                sent.keeper + 1,
                sent.at,
                sent.term
            ));
        }
    }
    // 2. The gate stops a leader before the store's fence has to.
    let refused = *lock(&shared.refused);
    if refused > 0 {
        violations.push(format!("{refused} commits refused by the store's fence"));
    }
    // 4. Untouched proxies: never lost, deleted or restarted.
    let changes = lock(&shared.changes).clone();
    // 6. Forward only, across leaderships: every change starts from the status the log
    //    (of whichever leader) last gave the proxy, and within one incarnation a proxy
    //    never goes back to `ready`.
    let mut held: BTreeMap<String, (u64, Status)> = BTreeMap::new();
    for (at, term, change) in &changes {
        let ChangeKind::Status(s) = &change.kind else {
            continue;
        };
        let before = held.get(&*s.proxy).copied();
        if s.from != before.map(|(_, status)| status) {
            violations.push(format!(
                "{} changed from {:?} at {at:?} by term {term}, but the log last gave it {before:?}",
                s.proxy, s.from
            ));
        }
        if let (Some((incarnation, Status::Up | Status::Lost)), Some(Status::Ready)) =
            (before, s.to)
            && incarnation == s.incarnation
        {
            violations.push(format!(
                "{} went back to ready within incarnation {incarnation} at {at:?}",
                s.proxy
            ));
        }
        match s.to {
            Some(status) => held.insert(s.proxy.to_string(), (s.incarnation, status)),
            None => held.remove(&*s.proxy),
        };
    }
    let mut last: BTreeMap<String, Option<Status>> = BTreeMap::new();
    for (at, term, change) in &changes {
        if let ChangeKind::Status(s) = &change.kind {
            let p = (0..plan.proxies).find(|&p| identity(p) == *s.proxy);
            if let Some(p) = p
                && !touched[p]
                && (s.to == Some(Status::Lost) || s.to.is_none())
            {
                violations.push(format!(
                    "{} untouched by any fault, was {:?} at {at:?} by term {term} ({:?})",
                    s.proxy, s.to, s.reason
                ));
            }
            last.insert(s.proxy.to_string(), s.to);
        }
    }
    for (p, control) in controls.iter().enumerate() {
        let state = control.borrow().as_ref().map(|c| c.state.borrow().clone());
        let Some(state) = state else {
            violations.push(format!("{} never started", identity(p)));
            continue;
        };
        if !touched[p] && state.restarts > 0 {
            violations.push(format!(
                "{} untouched by any fault, was restarted {} times",
                identity(p),
                state.restarts
            ));
        }
        // 5. Liveness.
        if !touched[p] && last.get(&identity(p)).copied().flatten() != Some(Status::Up) {
            violations.push(format!(
                "{} is {:?} at the end, not up",
                identity(p),
                last.get(&identity(p))
            ));
        }
    }
    if Election::current(&tenures, sim.elapsed()).is_none() {
        violations.push("nobody leads at the end".to_owned());
    }
    let digest = changes
        .iter()
        .map(|(at, term, change)| format!("{at:?} {term} {:?}\n", change.kind))
        .collect();
    Outcome {
        digest,
        deaf: *lock(&shared.deaf_resignations),
        failovers: tenures.len().saturating_sub(1),
        plan,
        violations,
    }
}

fn seeds() -> Vec<u64> {
    support::seeds(100)
}

/// What a batch of seeds did: per seed (seed, failovers, violations, plan), and how many
/// leaders resigned for deafness in all.
type Results = (Vec<(u64, usize, Vec<String>, String)>, u64);

/// Runs `seeds` over the machine's cores.
fn run_all(seeds: Vec<u64>, knobs: Knobs) -> Results {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let queue = Arc::new(Mutex::new(seeds.clone()));
    let results = Arc::new(Mutex::new(Vec::new()));
    let deaf = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|scope| {
        for _ in 0..cores.min(seeds.len()) {
            let (queue, results, deaf) = (queue.clone(), results.clone(), deaf.clone());
            scope.spawn(move || {
                loop {
                    let next = lock(&queue).pop();
                    let Some(seed) = next else { break };
                    let outcome = run(seed, knobs);
                    lock(&results).push((
                        seed,
                        outcome.failovers,
                        outcome.violations,
                        outcome.plan.to_string(),
                    ));
                    lock(&deaf).push(outcome.deaf);
                }
            });
        }
    });
    let mut results = lock(&results).clone();
    results.sort_by_key(|r| r.0);
    let deaf = lock(&deaf).iter().sum();
    (results, deaf)
}

#[test]
fn failovers_fence_the_deposed_and_hurt_no_proxy() {
    let seeds = seeds();
    if seeds.len() == 1 {
        println!("{}", Plan::generate(seeds[0]));
    }
    let (results, deaf) = run_all(seeds, Knobs::default());
    let failovers: usize = results.iter().map(|r| r.1).sum();
    println!(
        "{} seeds, {failovers} failovers in all, {deaf} of them by deaf leaders stepping down",
        results.len()
    );
    let failed: Vec<_> = results.iter().filter(|r| !r.2.is_empty()).collect();
    for (seed, _, violations, plan) in &failed {
        eprintln!(
            "failover seed {seed} failed:\n{}\n{plan}\nreproduce: SIM_SEED={seed} cargo test --test failover",
            violations
                .iter()
                .map(|v| format!("  - {v}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        failed.is_empty(),
        "{} of {} seeds failed",
        failed.len(),
        results.len()
    );
    // The schedules do make the keepers fail over (a suite without failovers proves
    // nothing).
    assert!(failovers >= results.len(), "{failovers} failovers");
    if results.len() >= 20 {
        assert!(deaf > 0, "no deaf leader stepped down");
    }
}

#[test]
fn the_checker_catches_a_leader_that_acts_past_its_lease() {
    // Without the lease check, and with proxies of version 1 (no term on the wire to
    // fence it), a leader paused past its lease wakes up and acts: it answers, or
    // writes, which only the store's fence stops.
    let knobs = Knobs {
        gate: false,
        protocol: Version::V1,
    };
    let (results, _) = run_all((1..=12).collect(), knobs);
    let caught = results
        .iter()
        .flat_map(|r| r.2.iter())
        .find(|v| v.contains("which Tenure") || v.contains("refused by the store's fence"))
        .cloned();
    assert!(
        caught.is_some(),
        "no seed caught the leader acting past its lease"
    );
}

#[test]
fn a_seed_gives_the_same_run_twice() {
    let first = run(7, Knobs::default());
    assert!(!first.digest.is_empty());
    assert_eq!(
        first.digest,
        run(7, Knobs::default()).digest,
        "seed 7 ran differently twice"
    );
    assert_ne!(first.digest, run(8, Knobs::default()).digest);
}
