//! The agent core with several keepers: it sends to every keeper until one answers, then
//! to that one; when that one falls silent for `lost_after`, it searches again.

use std::net::SocketAddr;
use std::time::Duration;

use zerokeeper::agent::{Agent, AgentConfig, AgentEvent, Destination, Phase};
use zerokeeper::auth::{Key, Keyring};
use zerokeeper::keeper::{Keeper, KeeperConfig};
use zerokeeper::time::{Instant, WallTime};
use zerokeeper::wire::MAX_DATAGRAM;

const LEADER: usize = 2;

fn key() -> Key {
    Key::new(&[0x2a; 32]).expect("valid key")
}

/// An agent that knows three keepers, of which only the one at index 2 runs.
struct Rig {
    now: Instant,
    agent: Agent,
    keeper: Keeper,
    /// Whether the running keeper hears and answers.
    reachable: bool,
    /// Where every datagram the agent sent went, in order.
    sent: Vec<Destination>,
    buf: Vec<u8>,
}

const PROXY: &str = "127.0.1.11:40000";

impl Rig {
    fn new() -> Rig {
        let config = KeeperConfig {
            heartbeat_interval: Duration::from_millis(100),
            lost_after: Duration::from_millis(600),
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
        let mut cfg = AgentConfig::new("test_cluster", "10.25.0.11:3000", key());
        cfg.default_interval = Duration::from_millis(100);
        cfg.keepers = 3;
        let agent =
            Agent::new(cfg, WallTime::from_micros(1_000_000), Instant::ZERO).expect("valid");
        Rig {
            now: Instant::ZERO,
            agent,
            keeper,
            reachable: true,
            sent: Vec::new(),
            buf: vec![0; MAX_DATAGRAM],
        }
    }

    /// Delivers what the agent sends (to the running keeper, if it goes there and the
    /// keeper is reachable) and the keeper's answers, until both are quiet.
    fn settle(&mut self) {
        let from: SocketAddr = PROXY.parse().expect("valid");
        while let Some((to, bytes)) = self.agent.poll_transmit_to() {
            self.sent.push(to);
            let reaches = matches!(to, Destination::Every | Destination::Keeper(LEADER));
            if !(reaches && self.reachable) {
                continue;
            }
            self.keeper.handle_datagram(self.now, from, &bytes);
            while let Some(t) = self.keeper.poll_transmit(&mut self.buf) {
                let answer = self.buf[..t.len].to_vec();
                self.agent
                    .handle_datagram_from(self.now, Some(LEADER), &answer);
            }
        }
        while let Some(event) = self.agent.poll_event() {
            // The host initialises at once.
            if matches!(event, AgentEvent::ConfigReady { .. }) {
                self.agent.initialized(self.now).expect("initialising");
            }
        }
        while self.keeper.poll_change().is_some() {}
    }

    /// Runs for `d` of virtual time, firing both cores' timers.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        self.settle();
        loop {
            let next = [self.agent.poll_timeout(), self.keeper.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => self.now = t.max(self.now),
                _ => break,
            }
            self.agent.handle_timeout(self.now);
            self.keeper.handle_timeout(self.now);
            self.settle();
        }
        self.now = end;
    }
}

#[test]
fn an_agent_of_three_keepers_searches_until_one_answers_then_sends_only_to_it() {
    let mut rig = Rig::new();
    assert!(rig.agent.searching(), "which keeper leads is not known yet");
    rig.run(Duration::from_secs(1));
    assert_eq!(rig.agent.phase(), Phase::Up);
    assert!(!rig.agent.searching());
    assert_eq!(rig.agent.current_keeper(), LEADER);
    assert_eq!(rig.sent.first(), Some(&Destination::Every));
    // Once the leader answered, everything went to it alone.
    let first_direct = rig
        .sent
        .iter()
        .position(|d| *d == Destination::Keeper(LEADER))
        .expect("sent to the leader");
    assert!(
        rig.sent[first_direct..]
            .iter()
            .all(|d| *d == Destination::Keeper(LEADER)),
        "{:?}",
        rig.sent
    );
    // An up proxy is acked at least every half lost_after: it keeps not searching.
    let before = rig.sent.len();
    rig.run(Duration::from_secs(3));
    assert!(!rig.agent.searching());
    assert!(
        rig.sent[before..]
            .iter()
            .all(|d| *d == Destination::Keeper(LEADER))
    );
}

#[test]
fn an_agent_whose_keeper_falls_silent_for_lost_after_sends_to_every_keeper_until_one_answers() {
    let mut rig = Rig::new();
    rig.run(Duration::from_secs(1));
    assert_eq!(rig.agent.phase(), Phase::Up);
    rig.reachable = false;
    let cut = rig.now;
    rig.run(Duration::from_millis(500));
    assert!(!rig.agent.searching(), "silent for less than lost_after");
    rig.run(Duration::from_millis(400));
    assert!(rig.agent.searching(), "silent past lost_after");
    assert_eq!(
        rig.agent.phase(),
        Phase::Up,
        "searching changes nothing else"
    );
    let searching_since = rig.sent.len();
    rig.run(Duration::from_millis(300));
    assert!(
        rig.sent[searching_since..]
            .iter()
            .all(|d| *d == Destination::Every),
        "{:?}",
        rig.sent
    );
    assert!(rig.now >= cut + Duration::from_millis(600));
    rig.reachable = true;
    rig.run(Duration::from_millis(300));
    assert!(!rig.agent.searching(), "the leader answered again");
    assert_eq!(rig.agent.current_keeper(), LEADER);
}

#[test]
fn an_agent_of_one_keeper_never_searches() {
    let config = AgentConfig::new("test_cluster", "10.25.0.11:3000", key());
    let mut agent = Agent::new(config, WallTime::from_micros(1), Instant::ZERO).expect("valid");
    assert!(!agent.searching());
    assert_eq!(
        agent.poll_transmit_to().map(|(to, _)| to),
        Some(Destination::Keeper(0))
    );
    agent.handle_timeout(Instant::ZERO + Duration::from_secs(60));
    assert!(!agent.searching());
}
