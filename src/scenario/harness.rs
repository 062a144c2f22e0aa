//! The deterministic replay: one keeper core and four agent cores, in virtual time, over
//! the in-memory [`Network`].
//!
//! Every wake-up (a datagram arriving, a core's timer, a host finishing its
//! initialisation) is processed in time order; between two wake-ups nothing happens, so
//! time jumps. The same seed gives the same run, event for event.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::agent::{Agent, AgentConfig, AgentEvent};
use crate::auth::{Key, Keyring};
use crate::keeper::{Change, Keeper, KeeperConfig, Status};
use crate::scenario::net::{NetConfig, Network};
use crate::scenario::{
    Action, CLUSTER, Gate, Init, Observation, PROXIES, ProxyIndex, Timing, World, check_outcome,
};
use crate::time::{Instant, WallTime};
use crate::wire::MAX_DATAGRAM;

/// The shared secret of the replay's cluster.
pub const SECRET: [u8; 32] = *b"zerokeeper-scenario-secret-key!!";

/// Wall-clock time at the start of every replay (2026-01-01T00:00:00Z), so incarnations
/// are realistic and identical from run to run.
const WALL_START_MICROS: u64 = 1_767_225_600_000_000;

/// The longest the replay lets virtual time jump at once, so `Elapsed` conditions are
/// checked promptly.
const MAX_STEP: Duration = Duration::from_millis(100);

/// One running proxy process.
#[derive(Debug)]
struct Process {
    agent: Agent,
    addr: SocketAddr,
    init: Init,
    /// When the host finishes (or fails) initialising, once its config has arrived.
    init_at: Option<Instant>,
}

/// What the harness recorded, for tests that assert more than listings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// Every keeper event, with the virtual time it happened at.
    pub keeper: Vec<(Duration, Change)>,
    /// Every agent event, with the proxy it happened to.
    pub agents: Vec<(Duration, ProxyIndex, AgentEvent)>,
}

/// The keeper and agent cores wired together in virtual time.
#[derive(Debug)]
pub struct CoreWorld {
    now: Instant,
    keeper: Keeper,
    keeper_addr: SocketAddr,
    net: Network,
    procs: [Option<Process>; 4],
    starts: u64,
    restarts: [u64; 4],
    key: Key,
    timing: Timing,
    trace: Trace,
    buf: Vec<u8>,
}

impl CoreWorld {
    /// A world with the keeper configured from `timing`, over a network as `net` says.
    pub fn new(timing: Timing, net: NetConfig, seed: u64) -> CoreWorld {
        let key = Key::new(&SECRET).expect("the scenario secret has a valid length");
        let config = KeeperConfig {
            heartbeat_interval: timing.interval,
            lost_after: timing.lost_after,
            ready_timeout: timing.ready_timeout,
            delete_after: timing.delete_after,
            ..KeeperConfig::default()
        };
        let token_secret: [u8; 32] = Sha256::digest(seed.to_be_bytes()).into();
        let mut keeper = Keeper::new(
            config,
            Keyring::with_default(key.clone()),
            1,
            token_secret,
            Instant::ZERO,
        )
        .expect("scenario timings are valid");
        keeper.set_declared_hostgroups(super::hostgroups());
        let keeper_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7821);
        CoreWorld {
            now: Instant::ZERO,
            keeper,
            keeper_addr,
            net: Network::new(net, seed, keeper_addr.ip()),
            procs: Default::default(),
            starts: 0,
            restarts: [0; 4],
            key,
            timing,
            trace: Trace::default(),
            buf: vec![0; MAX_DATAGRAM],
        }
    }

    /// The keeper core.
    pub fn keeper(&self) -> &Keeper {
        &self.keeper
    }

    /// The in-memory network.
    pub fn net(&self) -> &Network {
        &self.net
    }

    /// Everything that happened so far.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// The agent of a running proxy process.
    pub fn agent(&self, proxy: ProxyIndex) -> Option<&Agent> {
        self.procs[proxy].as_ref().map(|p| &p.agent)
    }

    /// Virtual time since the replay began.
    pub fn elapsed(&self) -> Duration {
        self.now.since_start()
    }

    /// A digest of every keeper and agent event with its time: equal digests, equal runs.
    pub fn trace_digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for (at, e) in &self.trace.keeper {
            h.update(format!("{at:?} {e:?}\n").as_bytes());
        }
        for (at, p, e) in &self.trace.agents {
            h.update(format!("{at:?} {p} {e:?}\n").as_bytes());
        }
        h.finalize().into()
    }

    fn host(proxy: ProxyIndex) -> IpAddr {
        // Loopback-range labels; nothing is ever sent anywhere.
        IpAddr::V4(Ipv4Addr::new(127, 0, 1, 11 + proxy as u8))
    }

    fn start(&mut self, proxy: ProxyIndex, init: Init) {
        self.starts += 1;
        let addr = SocketAddr::new(Self::host(proxy), 40_000 + (self.starts % 20_000) as u16);
        let mut cfg = AgentConfig::new(CLUSTER, PROXIES[proxy], self.key.clone());
        cfg.default_interval = self.timing.interval;
        let wall = WallTime::from_micros(WALL_START_MICROS + self.now.as_nanos() / 1_000);
        let agent = Agent::new(cfg, wall, self.now).expect("the scenario identities are valid");
        self.procs[proxy] = Some(Process {
            agent,
            addr,
            init,
            init_at: None,
        });
        self.settle();
    }

    /// Moves every pending output until nothing more is produced at this instant.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.keeper.poll_transmit(&mut self.buf) {
                self.net.send(
                    self.now,
                    self.keeper_addr,
                    t.destination,
                    &self.buf[..t.len],
                );
                moved = true;
            }
            while let Some(e) = self.keeper.poll_change() {
                self.trace.keeper.push((self.elapsed(), e));
            }
            for i in 0..self.procs.len() {
                let Some(p) = self.procs[i].as_mut() else {
                    continue;
                };
                while let Some(bytes) = p.agent.poll_transmit() {
                    self.net.send(self.now, p.addr, self.keeper_addr, &bytes);
                    moved = true;
                }
                while let Some(event) = p.agent.poll_event() {
                    match &event {
                        AgentEvent::ConfigReady { .. } => {
                            p.init_at = match p.init {
                                Init::Held => None,
                                Init::After(d) | Init::FailsAfter(d) => Some(self.now + d),
                            };
                        }
                        AgentEvent::Restarting { .. } => {
                            self.restarts[i] += 1;
                            p.init_at = None;
                        }
                        _ => {}
                    }
                    self.trace.agents.push((self.now.since_start(), i, event));
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// The next moment anything has work.
    fn next_wakeup(&mut self) -> Option<Instant> {
        let mut next = self.keeper.poll_timeout();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.net.next_arrival());
        for p in self.procs.iter().flatten() {
            consider(p.agent.poll_timeout());
            consider(p.init_at);
        }
        next
    }

    /// Processes everything due at the current instant.
    fn run_due(&mut self) {
        let now = self.now;
        while let Some(packet) = self.net.deliver(now) {
            if packet.to == self.keeper_addr {
                self.keeper.handle_datagram(now, packet.from, &packet.bytes);
            } else if let Some(p) = self
                .procs
                .iter_mut()
                .flatten()
                .find(|p| p.addr == packet.to)
            {
                p.agent.handle_datagram(now, &packet.bytes);
            }
            self.settle();
        }
        if self.keeper.poll_timeout().is_some_and(|t| t <= now) {
            self.keeper.handle_timeout(now);
        }
        for p in self.procs.iter_mut().flatten() {
            if p.agent.poll_timeout().is_some_and(|t| t <= now) {
                p.agent.handle_timeout(now);
            }
            if p.init_at.is_some_and(|t| t <= now) {
                p.init_at = None;
                match p.init {
                    Init::FailsAfter(_) => p.agent.fail_start(now),
                    Init::Held | Init::After(_) => {
                        // Refused only if the agent is no longer initialising (restarted
                        // meanwhile), in which case a new ConfigReady will come.
                        let _ = p.agent.initialized(now);
                    }
                }
            }
        }
        self.settle();
    }

    /// Runs until `deadline` in virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        let deadline = self.now + duration;
        while self.now < deadline {
            self.step_until(deadline);
        }
    }

    /// Jumps to the next wake-up (or to `limit`, whichever is first) and processes it.
    fn step_until(&mut self, limit: Instant) {
        let next = self.next_wakeup().map_or(limit, |t| t.min(limit));
        self.now = next.max(self.now);
        self.run_due();
    }
}

impl World for CoreWorld {
    fn act(&mut self, action: &Action) -> Result<(), String> {
        let now = self.now;
        match action {
            Action::Start { proxy, init } => self.start(*proxy, *init),
            Action::Release { proxy } => {
                let p = self.procs[*proxy].as_mut().ok_or("no such process")?;
                // If the config is not there yet, initialise as soon as it is.
                p.init = Init::After(Duration::ZERO);
                let _ = p.agent.initialized(now);
            }
            Action::Partition { proxy, direction } => {
                self.net.partition(Self::host(*proxy), *direction)
            }
            Action::Heal { proxy } => self.net.heal(Self::host(*proxy)),
            Action::Kill { proxy } => self.procs[*proxy] = None,
            Action::Unregister { proxy } => {
                self.procs[*proxy]
                    .as_mut()
                    .ok_or("no such process")?
                    .agent
                    .unregister(now);
            }
            Action::Remove { proxy } => {
                self.keeper
                    .remove_proxy(now, CLUSTER, PROXIES[*proxy])
                    .map_err(|e| e.to_string())?;
            }
            Action::PushConfig { config, expect } => {
                let result = self.keeper.push_config(now, CLUSTER, Arc::from(*config));
                check_outcome(result, expect)?;
            }
            Action::Switch {
                hostgroup,
                from,
                to,
                expect,
            } => {
                let result = self
                    .keeper
                    .switch_datasource(now, CLUSTER, hostgroup, from, to);
                check_outcome(result, expect)?;
            }
        }
        self.settle();
        Ok(())
    }

    fn observe(&mut self) -> (Observation, Option<Gate>) {
        let listing: Vec<(String, Status)> = self
            .keeper
            .proxies(CLUSTER)
            .map(|ps| ps.into_iter().map(|p| (p.proxy, p.status)).collect())
            .unwrap_or_default();
        let gate = if listing.is_empty() {
            None
        } else {
            match self.keeper.gate(CLUSTER) {
                Ok(()) => Some(Gate::Open),
                Err(_) => Some(Gate::Closed),
            }
        };
        (
            Observation {
                listing,
                restarts: self.restarts,
                elapsed: self.elapsed(),
            },
            gate,
        )
    }

    fn advance(&mut self) {
        let limit = self.now + MAX_STEP;
        self.step_until(limit);
    }
}
