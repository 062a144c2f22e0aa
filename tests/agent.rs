//! The agent core against the keeper core: its lifecycle, config pulls, retransmissions,
//! and what it ignores.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use zerokeeper::agent::{Agent, AgentConfig, AgentEvent, Phase, StopReason};
use zerokeeper::auth::{Key, Keyring};
use zerokeeper::configdoc::ConfigDocument;
use zerokeeper::keeper::{Keeper, KeeperConfig, Status};
use zerokeeper::scenario::Direction;
use zerokeeper::scenario::net::{NetConfig, Network};
use zerokeeper::time::{Instant, WallTime};
use zerokeeper::wire::MAX_DATAGRAM;

const CLUSTER: &str = "test_cluster";
const P11: &str = "10.25.0.11:3000";

fn key() -> Key {
    Key::new(&[0x2a; 32]).expect("valid key")
}

/// One keeper and one agent over an in-memory network, in virtual time.
struct Pair {
    now: Instant,
    keeper: Keeper,
    agent: Agent,
    net: Network,
    keeper_addr: SocketAddr,
    agent_addr: SocketAddr,
    events: Vec<AgentEvent>,
    buf: Vec<u8>,
}

impl Pair {
    fn new(net: NetConfig, seed: u64) -> Pair {
        let config = KeeperConfig {
            heartbeat_interval: Duration::from_millis(100),
            lost_after: Duration::from_millis(1_500),
            ready_timeout: Duration::from_secs(10),
            delete_after: Duration::from_secs(10),
            ..KeeperConfig::default()
        };
        let keeper = Keeper::new(
            config,
            Keyring::with_default(key()),
            1,
            [1; 32],
            Instant::ZERO,
        )
        .expect("valid");
        let keeper_addr: SocketAddr = "127.0.0.1:7821".parse().expect("valid");
        let mut cfg = AgentConfig::new(CLUSTER, P11, key());
        cfg.default_interval = Duration::from_millis(100);
        let agent = Agent::new(cfg, WallTime::from_micros(1_000_000), Instant::ZERO)
            .expect("valid identity");
        Pair {
            now: Instant::ZERO,
            keeper,
            agent,
            net: Network::new(net, seed, keeper_addr.ip()),
            keeper_addr,
            agent_addr: "127.0.1.11:40000".parse().expect("valid"),
            events: Vec::new(),
            buf: vec![0; MAX_DATAGRAM],
        }
    }

    fn settle(&mut self) {
        while let Some(bytes) = self.agent.poll_transmit() {
            self.net
                .send(self.now, self.agent_addr, self.keeper_addr, &bytes);
        }
        while let Some(t) = self.keeper.poll_transmit(&mut self.buf) {
            self.net.send(
                self.now,
                self.keeper_addr,
                t.destination,
                &self.buf[..t.len],
            );
        }
        while let Some(e) = self.agent.poll_event() {
            self.events.push(e);
        }
        while self.keeper.poll_change().is_some() {}
    }

    /// Runs until `pred` holds or `limit` of virtual time passes; returns whether it held.
    fn run_until(&mut self, limit: Duration, mut pred: impl FnMut(&Pair) -> bool) -> bool {
        let end = self.now + limit;
        self.settle();
        while !pred(self) {
            let next = [
                self.net.next_arrival(),
                self.keeper.poll_timeout(),
                self.agent.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(t) if t <= end => self.now = t.max(self.now),
                _ => {
                    self.now = end;
                    return pred(self);
                }
            }
            while let Some(p) = self.net.deliver(self.now) {
                if p.to == self.keeper_addr {
                    self.keeper.handle_datagram(self.now, p.from, &p.bytes);
                } else {
                    self.agent.handle_datagram(self.now, &p.bytes);
                }
                self.settle();
            }
            self.keeper.handle_timeout(self.now);
            self.agent.handle_timeout(self.now);
            self.settle();
        }
        true
    }

    fn keeper_status(&self) -> Option<Status> {
        self.keeper.proxy(CLUSTER, P11).ok().map(|p| p.status)
    }

    fn config_ready(&self) -> Option<(u64, Arc<[u8]>)> {
        self.events.iter().find_map(|e| match e {
            AgentEvent::ConfigReady { version, config } => Some((*version, config.clone())),
            _ => None,
        })
    }
}

fn big_config(len: usize) -> Arc<[u8]> {
    (0..len)
        .map(|i| (i * 7 % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

#[test]
fn an_agent_registers_pulls_its_startup_config_and_goes_up_when_initialised() {
    let mut pair = Pair::new(NetConfig::perfect(), 1);
    let config = big_config(5_000);
    let version = pair
        .keeper
        .push_config(Instant::ZERO, CLUSTER, config.clone())
        .expect("gate open");
    assert!(pair.run_until(Duration::from_secs(2), |p| p.agent.phase()
        == Phase::Initialising));
    assert_eq!(
        pair.keeper_status(),
        Some(Status::Ready),
        "still ready while initialising"
    );
    let (got_version, bytes) = pair.config_ready().expect("config delivered");
    assert_eq!(got_version, version);
    assert_eq!(
        *bytes,
        *pair.keeper.config_of(CLUSTER).expect("exists").bytes
    );
    assert_eq!(
        ConfigDocument::decode(&bytes).expect("a document").base,
        &*config
    );
    // The agent keeps sending `ready` while the host initialises.
    assert!(
        !pair.run_until(Duration::from_secs(1), |p| p.keeper_status()
            != Some(Status::Ready))
    );
    pair.agent.initialized(pair.now).expect("initialising");
    assert!(
        pair.run_until(Duration::from_millis(100), |p| p.keeper_status()
            == Some(Status::Up))
    );
    let phases: Vec<Phase> = pair
        .events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::PhaseChanged { to, .. } => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(phases, vec![Phase::Pulling, Phase::Initialising, Phase::Up]);
}

#[test]
fn an_agent_pulls_a_large_config_over_a_lossy_duplicating_reordering_network() {
    for seed in 1..=8 {
        let mut pair = Pair::new(NetConfig::hostile(), seed);
        pair.keeper
            .push_config(Instant::ZERO, CLUSTER, big_config(40_000))
            .expect("gate open");
        assert!(
            pair.run_until(Duration::from_secs(60), |p| p.agent.phase()
                == Phase::Initialising),
            "seed {seed}: config not pulled"
        );
        let (_, bytes) = pair.config_ready().expect("config delivered");
        assert_eq!(
            *bytes,
            *pair.keeper.config_of(CLUSTER).expect("exists").bytes,
            "seed {seed}"
        );
        assert_eq!(pair.keeper.stats().oversized_answers, 0);
    }
}

#[test]
fn a_config_pushed_while_up_reaches_the_agent() {
    let mut pair = Pair::new(NetConfig::perfect(), 1);
    assert!(pair.run_until(Duration::from_secs(2), |p| p.agent.phase()
        == Phase::Initialising));
    pair.agent.initialized(pair.now).expect("initialising");
    assert!(pair.run_until(Duration::from_secs(1), |p| p.keeper_status()
        == Some(Status::Up)));
    let version = pair
        .keeper
        .push_config(pair.now, CLUSTER, big_config(3_000))
        .expect("gate open");
    assert!(
        pair.run_until(Duration::from_secs(3), |p| p.agent.config_version()
            == version)
    );
    assert!(
        pair.events
            .iter()
            .any(|e| matches!(e, AgentEvent::ConfigUpdated { version: v, .. } if *v == version))
    );
    // The agent now reports the version it runs, and the keeper records it.
    assert!(pair.run_until(Duration::from_secs(1), |p| {
        p.keeper
            .proxy(CLUSTER, P11)
            .is_ok_and(|i| i.config_version == version)
    }));
}

#[test]
fn down_is_retransmitted_until_acknowledged() {
    let mut pair = Pair::new(NetConfig::perfect(), 1);
    assert!(pair.run_until(Duration::from_secs(2), |p| p.agent.phase()
        == Phase::Initialising));
    // The first `down`s are lost: the keeper must still hear one and delete the proxy.
    pair.net
        .partition(pair.agent_addr.ip(), Direction::ToKeeper);
    pair.agent.fail_start(pair.now);
    pair.run_until(Duration::from_millis(120), |_| false);
    assert_eq!(pair.keeper_status(), Some(Status::Ready));
    pair.net.heal(pair.agent_addr.ip());
    assert!(pair.run_until(Duration::from_secs(1), |p| p.agent.phase()
        == Phase::Stopped(StopReason::Failed)));
    assert_eq!(pair.keeper_status(), None);
    // Acknowledged: it sends nothing more.
    assert_eq!(pair.agent.poll_timeout(), None);
}

#[test]
fn an_unanswered_unregister_gives_up_after_its_bounded_attempts() {
    let mut pair = Pair::new(NetConfig::perfect(), 1);
    assert!(pair.run_until(Duration::from_secs(2), |p| p.agent.phase()
        == Phase::Initialising));
    pair.net.partition(pair.agent_addr.ip(), Direction::Both);
    let sent_before = pair.agent.stats().sent;
    pair.agent.unregister(pair.now);
    assert!(pair.run_until(Duration::from_secs(10), |p| p.agent.phase()
        == Phase::Stopped(StopReason::GaveUp)));
    assert_eq!(
        pair.agent.stats().sent - sent_before,
        10,
        "the default is 10 attempts"
    );
    assert_eq!(pair.agent.poll_timeout(), None);
}

#[test]
fn a_restart_for_an_earlier_incarnation_is_ignored() {
    let mut pair = Pair::new(NetConfig::perfect(), 1);
    assert!(pair.run_until(Duration::from_secs(2), |p| p.agent.phase()
        == Phase::Initialising));
    pair.agent.initialized(pair.now).expect("initialising");
    assert!(pair.run_until(Duration::from_secs(1), |p| p.keeper_status()
        == Some(Status::Up)));
    // The operator removes the live proxy: its next `up` is answered with Restart.
    pair.keeper
        .remove_proxy(pair.now, CLUSTER, P11)
        .expect("listed");
    let first = pair.agent.incarnation();
    let mut captured = None;
    let end = pair.now + Duration::from_secs(1);
    while captured.is_none() && pair.now < end {
        pair.now = pair.now + Duration::from_millis(10);
        pair.agent.handle_timeout(pair.now);
        while let Some(bytes) = pair.agent.poll_transmit() {
            pair.keeper
                .handle_datagram(pair.now, pair.agent_addr, &bytes);
        }
        while let Some(t) = pair.keeper.poll_transmit(&mut pair.buf) {
            let bytes = pair.buf[..t.len].to_vec();
            if matches!(
                zerokeeper::wire::open(&bytes, &key()),
                Ok(zerokeeper::wire::Message::Restart(_))
            ) {
                captured = Some(bytes.clone());
            }
            pair.agent.handle_datagram(pair.now, &bytes);
        }
    }
    let restart = captured.expect("the keeper sent a Restart");
    assert_eq!(pair.agent.incarnation(), first + 1);
    while let Some(e) = pair.agent.poll_event() {
        pair.events.push(e);
    }
    assert!(pair.events.iter().any(
        |e| matches!(e, AgentEvent::Restarting { old_incarnation, .. } if *old_incarnation == first)
    ));
    // A replay of that Restart names the old incarnation: the new life ignores it.
    let ignored = pair.agent.stats().ignored;
    pair.agent.handle_datagram(pair.now, &restart);
    assert_eq!(pair.agent.incarnation(), first + 1);
    assert_eq!(pair.agent.stats().ignored, ignored + 1);
    assert_eq!(pair.agent.phase(), Phase::Joining);
}

#[test]
fn answers_under_another_key_are_ignored() {
    let mut pair = Pair::new(NetConfig::perfect(), 1);
    let other = Key::new(&[0x55; 32]).expect("valid");
    let forged = zerokeeper::wire::encode_to_vec(
        &zerokeeper::wire::Message::Restart(zerokeeper::wire::Restart {
            incarnation: pair.agent.incarnation(),
            seq: 1,
        }),
        &other,
    )
    .expect("fits");
    let before = pair.agent.incarnation();
    pair.agent.handle_datagram(Instant::ZERO, &forged);
    assert_eq!(pair.agent.incarnation(), before);
    assert_eq!(pair.agent.stats().ignored, 1);
}

#[test]
fn config_requests_are_padded_to_exactly_the_largest_datagram() {
    let mut pair = Pair::new(NetConfig::perfect(), 1);
    let mut sizes = Vec::new();
    let end = Instant::from_millis(2_000);
    while pair.agent.phase() != Phase::Initialising && pair.now < end {
        pair.now = pair.now + Duration::from_millis(5);
        pair.agent.handle_timeout(pair.now);
        pair.keeper.handle_timeout(pair.now);
        while let Some(bytes) = pair.agent.poll_transmit() {
            if let Ok(zerokeeper::wire::Message::ConfigRequest(_)) =
                zerokeeper::wire::open(&bytes, &key())
            {
                sizes.push(bytes.len());
            }
            pair.keeper
                .handle_datagram(pair.now, pair.agent_addr, &bytes);
        }
        while let Some(t) = pair.keeper.poll_transmit(&mut pair.buf) {
            let bytes = pair.buf[..t.len].to_vec();
            pair.agent.handle_datagram(pair.now, &bytes);
        }
    }
    assert!(!sizes.is_empty(), "no config request was sent");
    assert!(sizes.iter().all(|&n| n == MAX_DATAGRAM), "{sizes:?}");
}

#[test]
fn a_startup_pull_follows_a_keeper_whose_config_version_went_back() {
    // A keeper without a store that restarts mid-pull serves version 1 again; the agent
    // must pull that, not wait forever for the version it was pulling (found by chaos).
    let mut pair = Pair::new(NetConfig::perfect(), 1);
    pair.keeper
        .push_config(Instant::ZERO, CLUSTER, big_config(5_000))
        .expect("gate open");
    pair.keeper
        .push_config(Instant::ZERO, CLUSTER, big_config(6_000))
        .expect("gate open");
    assert!(pair.run_until(Duration::from_secs(2), |p| p.agent.phase()
        == Phase::Pulling));
    // Everything in flight is lost, and the keeper comes back empty.
    pair.net.partition(pair.agent_addr.ip(), Direction::Both);
    pair.run_until(Duration::from_millis(20), |_| false);
    pair.net.heal(pair.agent_addr.ip());
    let config = KeeperConfig {
        heartbeat_interval: Duration::from_millis(100),
        lost_after: Duration::from_millis(1_500),
        ready_timeout: Duration::from_secs(10),
        delete_after: Duration::from_secs(10),
        ..KeeperConfig::default()
    };
    pair.keeper = Keeper::new(
        config,
        Keyring::with_default(key()),
        2,
        [2; 32],
        Instant::ZERO,
    )
    .expect("valid");
    assert!(
        pair.run_until(Duration::from_secs(3), |p| p.agent.phase()
            == Phase::Initialising),
        "the pull never completed"
    );
    assert_eq!(pair.config_ready().map(|(v, _)| v), Some(1));
}
