//! What the simulations share: turmoil's sockets behind the drivers' socket trait, a
//! lossy wrapper, a tap on the keeper's socket, the keeper and proxy hosts, and an
//! operator host that speaks HTTP to the keeper's admin API.
//!
//! Everything runs on turmoil's simulated network and clock: keeper, proxies and operator
//! are simulated hosts, and nothing is sent anywhere else (turmoil refuses any address
//! that is not one of its hosts).

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use zerokeeper::agent::{Agent, AgentConfig, StopReason};
use zerokeeper::auth::{Key, Keyring};
use zerokeeper::driver::keeper::CommitMode;
use zerokeeper::driver::proxy::{InitPolicy, ProxyControl, ProxyDriver, ProxyExit};
use zerokeeper::driver::{DatagramSocket, DriverClock};
use zerokeeper::keeper::{Change, KeeperConfig};
use zerokeeper::server::{self, Setup};
use zerokeeper::time::WallTime;
use zerokeeper::wire::{self, Message, ProxyStatus};

/// The keeper's UDP port on its host.
pub const UDP_PORT: u16 = 7821;
/// The keeper's HTTP port on its host.
pub const HTTP_PORT: u16 = 7822;
/// The simulations' wall clock starts here (2026-01-01T00:00:00Z): incarnations and
/// timestamps are the same from run to run.
pub const EPOCH_SECS: u64 = 1_767_225_600;

/// The seeds to run: `SIM_SEED=N` alone, or `1..=SIM_SEEDS` (`default` without it).
pub fn seeds(default: u64) -> Vec<u64> {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let n = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    (1..=n).collect()
}

/// The secret every simulated cluster uses.
pub fn key() -> Key {
    Key::new(b"zerokeeper-simulation-secret-key").expect("a 32-byte secret")
}

/// The simulation's wall clock now.
pub fn wall_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(EPOCH_SECS) + turmoil::sim_elapsed().unwrap_or_default()
}

/// turmoil's UDP socket behind the drivers' socket trait.
pub struct SimSocket(pub turmoil::net::UdpSocket);

impl DatagramSocket for SimSocket {
    fn send_to(
        &self,
        buf: &[u8],
        target: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        self.0.send_to(buf, target)
    }

    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        self.0.recv_from(buf)
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.0.try_recv_from(buf)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// Per-packet loss and duplication, set from outside while the simulation runs.
///
/// turmoil's `fail_rate` cuts a whole link until a repair roll, which is not independent
/// loss, and it has no duplication; this wrapper does both, on sends, from a seeded RNG.
#[derive(Debug, Default)]
pub struct LinkFaults {
    /// Loss probability in parts per million.
    pub loss_ppm: AtomicU32,
    /// Duplication probability in parts per million.
    pub duplicate_ppm: AtomicU32,
}

impl LinkFaults {
    pub fn set(&self, loss: f64, duplicate: f64) {
        self.loss_ppm.store((loss * 1e6) as u32, Ordering::Relaxed);
        self.duplicate_ppm
            .store((duplicate * 1e6) as u32, Ordering::Relaxed);
    }
}

/// A socket that loses and duplicates what it sends, as its [`LinkFaults`] say.
pub struct LossySocket<S> {
    inner: S,
    faults: Arc<LinkFaults>,
    rng: Mutex<ChaCha8Rng>,
}

impl<S> LossySocket<S> {
    pub fn new(inner: S, faults: Arc<LinkFaults>, seed: u64) -> Self {
        LossySocket {
            inner,
            faults,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        }
    }

    /// How many copies of the next datagram go out: 0, 1 or 2.
    fn copies(&self) -> usize {
        let loss = self.faults.loss_ppm.load(Ordering::Relaxed);
        let dup = self.faults.duplicate_ppm.load(Ordering::Relaxed);
        if loss == 0 && dup == 0 {
            return 1;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        if rng.random_range(0..1_000_000) < loss {
            0
        } else if rng.random_range(0..1_000_000) < dup {
            2
        } else {
            1
        }
    }
}

impl<S: DatagramSocket> DatagramSocket for LossySocket<S> {
    fn send_to(
        &self,
        buf: &[u8],
        target: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        let copies = self.copies();
        async move {
            for _ in 0..copies {
                self.inner.send_to(buf, target).await?;
            }
            Ok(buf.len())
        }
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

/// A datagram that reached the keeper's socket, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// Simulated time of arrival.
    pub at: Duration,
    /// Which keeper boot received it.
    pub boot: u32,
    pub cluster: String,
    pub proxy: String,
    pub incarnation: u64,
    pub seq: u64,
    /// `None` for an unregister.
    pub status: Option<ProxyStatus>,
    /// The token's epoch and time bucket (see PROTOCOL.md §8), read independently of the
    /// keeper's code.
    pub token_epoch: u32,
    pub token_bucket: u32,
}

/// Counts every datagram reaching the keeper's socket, and records every heartbeat and
/// unregister among them.
pub struct TapSocket<S> {
    inner: S,
    key: Key,
    boot: u32,
    log: Arc<Mutex<Vec<Arrival>>>,
    received: Arc<Mutex<BTreeMap<u32, u64>>>,
}

impl<S> TapSocket<S> {
    pub fn new(
        inner: S,
        key: Key,
        boot: u32,
        log: Arc<Mutex<Vec<Arrival>>>,
        received: Arc<Mutex<BTreeMap<u32, u64>>>,
    ) -> Self {
        TapSocket {
            inner,
            key,
            boot,
            log,
            received,
        }
    }

    fn record(&self, datagram: &[u8]) {
        *self
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(self.boot)
            .or_default() += 1;
        let (hb, status) = match wire::open(datagram, &self.key) {
            Ok(Message::Heartbeat(hb)) => (hb, Some(hb.status)),
            Ok(Message::Unregister(hb)) => (hb, None),
            _ => return,
        };
        let t = hb.token.0;
        let arrival = Arrival {
            at: turmoil::sim_elapsed().unwrap_or_default(),
            boot: self.boot,
            cluster: hb.cluster.to_owned(),
            proxy: hb.proxy.to_owned(),
            incarnation: hb.incarnation,
            seq: hb.seq,
            status,
            token_epoch: u32::from_be_bytes([t[0], t[1], t[2], t[3]]),
            token_bucket: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        };
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(arrival);
    }
}

impl<S: DatagramSocket> DatagramSocket for TapSocket<S> {
    fn send_to(
        &self,
        buf: &[u8],
        target: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        self.inner.send_to(buf, target)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (n, from) = self.inner.recv_from(buf).await?;
        self.record(&buf[..n]);
        Ok((n, from))
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (n, from) = self.inner.try_recv_from(buf)?;
        self.record(&buf[..n]);
        Ok((n, from))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// turmoil's TCP listener as an axum listener, so the admin API runs on the simulated host.
pub struct SimListener(pub turmoil::net::TcpListener);

impl axum::serve::Listener for SimListener {
    type Io = turmoil::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok(pair) => return pair,
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A core event as the keeper emitted it, with the simulated time and the keeper boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    pub at: Duration,
    pub boot: u32,
    pub event: Change,
}

/// A registry entry a keeper boot restored: (cluster, proxy, status, incarnation).
pub type RestoredEntry = (String, String, zerokeeper::keeper::Status, u64);

/// What the keeper host shares with the test across its restarts.
#[derive(Default)]
pub struct KeeperShared {
    /// How many times the keeper has started.
    pub boots: AtomicU32,
    /// Every core event, in order.
    pub events: Arc<Mutex<Vec<Logged>>>,
    /// Every heartbeat and unregister that reached the keeper's socket.
    pub arrivals: Arc<Mutex<Vec<Arrival>>>,
    /// Datagrams that reached the keeper's socket, per boot.
    pub received: Arc<Mutex<BTreeMap<u32, u64>>>,
    /// When each boot started (simulated time).
    pub boot_starts: Mutex<BTreeMap<u32, Duration>>,
    /// Loss and duplication of what the keeper sends.
    pub keeper_faults: Arc<LinkFaults>,
    /// The seed, for the keeper's token secret.
    pub seed: u64,
    /// A rule the keeper breaks on purpose (to test the checkers).
    pub broken: Option<zerokeeper::keeper::BrokenRule>,
    /// The keeper's store, kept across its crashes (`None`: a keeper without a store,
    /// whose restarts forget the registry).
    pub store: Option<zerokeeper::store::MemoryStore>,
    /// What each boot restored.
    pub restored: Mutex<BTreeMap<u32, Vec<RestoredEntry>>>,
    /// Stalls the running keeper's driver (each boot installs a new one).
    pub stalls: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Duration>>>,
}

impl KeeperShared {
    /// Makes the running keeper stop running for `length` (nothing if it is down).
    pub fn stall(&self, length: Duration) {
        if let Some(tx) = self
            .stalls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = tx.send(length);
        }
    }
}

/// Registers the keeper host: the keeper (assembled by `zerokeeper::server`, as every
/// keeper is) on UDP and its admin API on TCP, with taps on its socket and its changes.
/// A restart (`bounce`) boots the shared store again (or, without one, starts an empty
/// keeper with the next epoch).
pub fn keeper_host(sim: &mut turmoil::Sim<'_>, config: KeeperConfig, shared: Arc<KeeperShared>) {
    sim.host("keeper", move || {
        let config = config.clone();
        let shared = shared.clone();
        async move {
            let boot = shared.boots.fetch_add(1, Ordering::Relaxed) + 1;
            let udp = turmoil::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, UDP_PORT)).await?;
            let tcp = turmoil::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, HTTP_PORT)).await?;
            let secret: [u8; 32] = Sha256::digest(format!("{}:{boot}", shared.seed)).into();
            let mut setup = Setup::new(config, Keyring::with_default(key()));
            setup.epoch = boot;
            setup.token_secret = secret;
            // The hostgroup the seed scenario switches, as a config file would declare it.
            setup.hostgroups = zerokeeper::scenario::hostgroups();
            setup.clock = DriverClock::start_at(wall_now());
            // Commits in the driver's turn: a thread would make runs depend on the host.
            setup.commit_mode = CommitMode::Inline;
            // Listings on the handler's task too: a blocking-pool thread would as well.
            setup.listings = zerokeeper::http::Listings::Inline;
            if let Some(store) = &shared.store {
                setup.store = Some(Box::new(store.clone()));
                let restored = shared.clone();
                setup.on_boot = Some(Box::new(move |proxies| {
                    let entries = proxies
                        .iter()
                        .map(|p| (p.cluster.clone(), p.proxy.clone(), p.status, p.incarnation))
                        .collect();
                    restored
                        .restored
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(boot, entries);
                }));
            }
            let (stall_tx, stall_rx) = tokio::sync::mpsc::unbounded_channel();
            *shared.stalls.lock().unwrap_or_else(|e| e.into_inner()) = Some(stall_tx);
            setup.stalls = Some(stall_rx);
            if let Some(rule) = shared.broken {
                setup.adjust = Some(Box::new(move |core| core.break_rule_for_testing(rule)));
            }
            let started = turmoil::sim_elapsed().unwrap_or_default();
            shared
                .boot_starts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(boot, started);
            let seed = shared.seed ^ u64::from(boot);
            let lossy = LossySocket::new(SimSocket(udp), shared.keeper_faults.clone(), seed);
            let socket = TapSocket::new(
                lossy,
                key(),
                boot,
                shared.arrivals.clone(),
                shared.received.clone(),
            );
            let log = shared.events.clone();
            setup.tap = Some(Box::new(move |change| {
                let at = turmoil::sim_elapsed().unwrap_or_default();
                log.lock().unwrap_or_else(|e| e.into_inner()).push(Logged {
                    at,
                    boot,
                    event: change.clone(),
                });
            }));
            let running = server::start(setup, socket, SimListener(tcp), std::future::pending())
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
            running.join().await?;
            Ok(())
        }
    });
}

/// What the test shares with one proxy host: the policy of its next start, and the
/// control of the running process.
#[derive(Default)]
pub struct ProxySlot {
    pub init: RefCell<Option<InitPolicy>>,
    pub control: RefCell<Option<ProxyControl>>,
    pub faults: Arc<LinkFaults>,
    /// Restarts obeyed by earlier processes of this host.
    pub restarts_before: RefCell<u64>,
    pub starts: RefCell<u64>,
}

impl ProxySlot {
    /// Restarts obeyed by every process of this host so far.
    pub fn restarts(&self) -> u64 {
        let now = self
            .control
            .borrow()
            .as_ref()
            .map_or(0, |c| c.state.borrow().restarts);
        *self.restarts_before.borrow() + now
    }

    /// Forgets the running process (it was crashed or is being restarted).
    pub fn forget(&self) {
        if let Some(c) = self.control.borrow_mut().take() {
            *self.restarts_before.borrow_mut() += c.state.borrow().restarts;
        }
    }
}

/// How long the simulated operator takes to start a proxy again after it was removed
/// while alive and left.
pub const REMOVED_COMES_BACK_AFTER: Duration = Duration::from_millis(300);

/// Registers a proxy host named `host` with identity `identity`; it starts with the
/// policy in its slot, and again on every `bounce`.
pub fn proxy_host(
    sim: &mut turmoil::Sim<'_>,
    host: &str,
    cluster: &str,
    identity: &str,
    interval: Duration,
    slot: Rc<ProxySlot>,
    seed: u64,
) {
    let (cluster, identity) = (cluster.to_owned(), identity.to_owned());
    sim.host(host, move || {
        let slot = slot.clone();
        let (cluster, identity) = (cluster.clone(), identity.clone());
        async move {
            loop {
                let init = slot
                    .init
                    .borrow()
                    .unwrap_or(InitPolicy::After(Duration::ZERO));
                *slot.starts.borrow_mut() += 1;
                let start_no = *slot.starts.borrow();
                let udp = turmoil::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
                let keeper = SocketAddr::new(turmoil::lookup("keeper"), UDP_PORT);
                let mut cfg = AgentConfig::new(cluster.clone(), identity.clone(), key());
                cfg.default_interval = interval;
                let clock = DriverClock::start_at(wall_now());
                let since_epoch = wall_now().duration_since(UNIX_EPOCH).unwrap_or_default();
                let start = WallTime::from_micros(since_epoch.as_micros() as u64);
                let agent = Agent::new(cfg, start, clock.now())?;
                let socket =
                    LossySocket::new(SimSocket(udp), slot.faults.clone(), seed ^ (start_no << 32));
                let (driver, control) = ProxyDriver::new(agent, socket, keeper, init, clock);
                *slot.control.borrow_mut() = Some(control);
                let exit = driver.run(std::future::pending()).await?;
                if exit != ProxyExit::Stopped(StopReason::Removed) {
                    return Ok(());
                }
                // An operator removed this live proxy on purpose and it left. The
                // simulated operator then starts it again, as a new process: a larger
                // incarnation, which registers normally.
                slot.forget();
                tokio::time::sleep(REMOVED_COMES_BACK_AFTER).await;
            }
        }
    });
}

/// An HTTP request the operator host makes.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub body: Vec<u8>,
}

/// An HTTP answer: status and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// The operator host's mailbox: requests in, answers out.
#[derive(Default)]
pub struct Operator {
    next: RefCell<u64>,
    requests: RefCell<VecDeque<(u64, Request)>>,
    answers: RefCell<BTreeMap<u64, Result<Answer, String>>>,
}

impl Operator {
    /// Queues a request; returns its ticket.
    pub fn send(&self, request: Request) -> u64 {
        let mut next = self.next.borrow_mut();
        *next += 1;
        self.requests.borrow_mut().push_back((*next, request));
        *next
    }

    /// The answer to a ticket, once it has come.
    pub fn take(&self, ticket: u64) -> Option<Result<Answer, String>> {
        self.answers.borrow_mut().remove(&ticket)
    }
}

/// Registers the operator: a client host that makes the queued HTTP requests to the
/// keeper's admin API, one at a time, forever.
pub fn operator_client(sim: &mut turmoil::Sim<'_>, operator: Rc<Operator>) {
    sim.client("operator", async move {
        loop {
            let next = operator.requests.borrow_mut().pop_front();
            match next {
                Some((ticket, request)) => {
                    let answer = http(&request).await.map_err(|e| e.to_string());
                    operator.answers.borrow_mut().insert(ticket, answer);
                }
                None => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    });
}

async fn http(request: &Request) -> Result<Answer, Box<dyn std::error::Error>> {
    let authority = format!("keeper:{HTTP_PORT}");
    let stream = turmoil::net::TcpStream::connect(authority.as_str()).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::builder()
        .method(request.method)
        .uri(&request.path)
        .header(hyper::header::HOST, authority)
        .body(Full::new(Bytes::from(request.body.clone())))?;
    let response = sender.send_request(req).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Steps the simulation until the operator's answer to `ticket` comes, at most `limit`
/// of simulated time.
pub fn await_answer(
    sim: &mut turmoil::Sim<'_>,
    operator: &Operator,
    ticket: u64,
    limit: Duration,
) -> Result<Answer, String> {
    let deadline = sim.elapsed() + limit;
    loop {
        if let Some(answer) = operator.take(ticket) {
            return answer;
        }
        if sim.elapsed() > deadline {
            return Err(format!("no answer within {limit:?}"));
        }
        sim.step()
            .map_err(|e| format!("the simulation failed: {e}"))?;
    }
}
