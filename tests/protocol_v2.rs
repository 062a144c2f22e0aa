//! Protocol version 2 between the real cores: leadership terms fence a deposed keeper
//! on both sides, config ids are compared for equality, and version 1 and version 2
//! agents share one keeper.

use std::net::SocketAddr;
use std::time::Duration;

use zerokeeper::agent::{Agent, AgentConfig, AgentEvent, Phase};
use zerokeeper::auth::{Key, Keyring};
use zerokeeper::keeper::{DropReason, Keeper, KeeperConfig, Status};
use zerokeeper::time::{Instant, WallTime};
use zerokeeper::wire::{
    self, Ack, AckStatus, ConfigId, Heartbeat, MAX_DATAGRAM, Message, ProxyStatus, Restart, Token,
    Trailer, Version,
};

const CLUSTER: &str = "test_cluster";
const P11: &str = "10.25.0.11:3000";
const P12: &str = "10.25.0.12:3000";

fn key() -> Key {
    Key::new(&[0x2a; 32]).expect("valid key")
}

/// The timings of every keeper here: 100 ms heartbeats, `lost_after` 1.5 s.
fn config() -> KeeperConfig {
    KeeperConfig {
        heartbeat_interval: Duration::from_millis(100),
        lost_after: Duration::from_millis(1_500),
        ready_timeout: Duration::from_secs(10),
        delete_after: Duration::from_secs(10),
        ..KeeperConfig::default()
    }
}

fn keeper() -> Keeper {
    keeper_with(config())
}

fn keeper_with(config: KeeperConfig) -> Keeper {
    Keeper::new(
        config,
        Keyring::with_default(key()),
        1,
        [1; 32],
        Instant::ZERO,
    )
    .expect("valid")
}

fn agent(proxy: &str, protocol: Version) -> Agent {
    let mut cfg = AgentConfig::new(CLUSTER, proxy, key());
    cfg.default_interval = Duration::from_millis(100);
    cfg.protocol = protocol;
    Agent::new(cfg, WallTime::from_micros(1_000_000), Instant::ZERO).expect("valid identity")
}

/// Agents and one keeper, wired directly (no loss), in virtual time.
struct Rig {
    now: Instant,
    keeper: Keeper,
    agents: Vec<(SocketAddr, Agent)>,
    /// The protocol version of every datagram each agent received.
    received: Vec<Vec<Version>>,
    /// Every datagram each agent received, as captured on the wire.
    captured: Vec<Vec<Vec<u8>>>,
    events: Vec<Vec<AgentEvent>>,
    buf: Vec<u8>,
}

impl Rig {
    fn new(keeper: Keeper, agents: Vec<Agent>) -> Rig {
        let n = agents.len();
        Rig {
            now: Instant::ZERO,
            keeper,
            agents: agents
                .into_iter()
                .enumerate()
                .map(|(i, a)| {
                    let addr = format!("127.0.1.{}:40000", 11 + i).parse().expect("valid");
                    (addr, a)
                })
                .collect(),
            received: vec![Vec::new(); n],
            captured: vec![Vec::new(); n],
            events: vec![Vec::new(); n],
            buf: vec![0; MAX_DATAGRAM],
        }
    }

    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for (addr, agent) in &mut self.agents {
                while let Some(bytes) = agent.poll_transmit() {
                    moved = true;
                    self.keeper.handle_datagram(self.now, *addr, &bytes);
                }
            }
            while let Some(t) = self.keeper.poll_transmit(&mut self.buf) {
                moved = true;
                let bytes = &self.buf[..t.len];
                let i = self
                    .agents
                    .iter()
                    .position(|(addr, _)| *addr == t.destination)
                    .expect("an answer goes to an agent");
                let version = wire::parse_header(bytes).expect("a valid header").version;
                self.received[i].push(version);
                self.captured[i].push(bytes.to_vec());
                self.agents[i].1.handle_datagram(self.now, bytes);
            }
            while self.keeper.poll_change().is_some() {}
            for (i, (_, agent)) in self.agents.iter_mut().enumerate() {
                while let Some(e) = agent.poll_event() {
                    if matches!(e, AgentEvent::ConfigReady { .. }) {
                        agent.initialized(self.now).expect("initialising");
                        moved = true;
                    }
                    self.events[i].push(e);
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Runs in steps of 10 ms until `pred` holds, for at most `limit`.
    fn run_until(&mut self, limit: Duration, mut pred: impl FnMut(&Rig) -> bool) -> bool {
        let end = self.now + limit;
        self.settle();
        while !pred(self) {
            if self.now >= end {
                return false;
            }
            self.now = self.now + Duration::from_millis(10);
            self.keeper.handle_timeout(self.now);
            for (_, agent) in &mut self.agents {
                agent.handle_timeout(self.now);
            }
            self.settle();
        }
        true
    }

    fn status(&self, proxy: &str) -> Option<Status> {
        self.keeper.proxy(CLUSTER, proxy).ok().map(|p| p.status)
    }

    fn agent(&self, i: usize) -> &Agent {
        &self.agents[i].1
    }
}

#[test]
fn version_1_and_version_2_agents_share_one_keeper_each_answered_in_its_own_version() {
    let mut rig = Rig::new(
        keeper(),
        vec![agent(P11, Version::V1), agent(P12, Version::V2)],
    );
    assert!(rig.run_until(Duration::from_secs(3), |r| {
        r.status(P11) == Some(Status::Up) && r.status(P12) == Some(Status::Up)
    }));
    assert!(!rig.received[0].is_empty() && !rig.received[1].is_empty());
    assert!(rig.received[0].iter().all(|v| *v == Version::V1));
    assert!(rig.received[1].iter().all(|v| *v == Version::V2));
    // Both pulled the cluster's config, each in its version's terms.
    assert_eq!(rig.agent(0).config_version(), 1);
    assert_eq!(rig.agent(1).config_version(), 1);
    assert_eq!(rig.agent(0).config_id(), ConfigId::NONE);
    let initial = zerokeeper::configdoc::ConfigVersion::initial();
    assert_eq!(rig.agent(1).config_id(), initial.id);
    // A config pushed reaches both.
    rig.keeper
        .push_config(rig.now, CLUSTER, b"rules = []\n".to_vec().into())
        .expect("gate open");
    assert!(rig.run_until(Duration::from_secs(3), |r| {
        r.agent(0).config_version() == 2 && r.agent(1).config_version() == 2
    }));
}

#[test]
fn a_lone_keeper_answers_under_the_newest_term_its_fleet_has_heard() {
    let mut rig = Rig::new(keeper(), vec![agent(P11, Version::V2)]);
    assert!(rig.run_until(Duration::from_secs(3), |r| r.status(P11)
        == Some(Status::Up)));
    assert_eq!(rig.keeper.term(), 0);
    // The fleet heard a leader of term 9 elsewhere; this keeper runs alone now.
    let hb = Heartbeat {
        cluster: CLUSTER,
        proxy: "10.25.0.13:3000",
        incarnation: 5,
        seq: 1,
        status: ProxyStatus::Ready,
        config_version: 0,
        slot: 0,
        token: Token::NONE,
    };
    let bytes = wire::encode_framed_to_vec(
        Version::V2,
        &Message::Heartbeat(hb),
        Trailer {
            term: 9,
            config: ConfigId::NONE,
        },
        &key(),
    )
    .expect("fits");
    let from: SocketAddr = "127.0.1.99:40000".parse().expect("valid");
    rig.keeper.handle_datagram(rig.now, from, &bytes);
    assert_eq!(rig.keeper.term(), 9);
    let mut buf = vec![0; MAX_DATAGRAM];
    let t = rig.keeper.poll_transmit(&mut buf).expect("answered");
    let framed = wire::open_framed(&buf[..t.len], &key()).expect("valid");
    assert_eq!(framed.trailer.term, 9);
    assert_eq!(rig.keeper.newer_term(), None);
}

#[test]
fn a_deposed_leader_acts_on_nothing_from_a_proxy_that_heard_its_successor() {
    // The proxy runs under the leader of term 5.
    let mut leader = keeper();
    leader.lead(5);
    let mut rig = Rig::new(leader, vec![agent(P11, Version::V2)]);
    assert!(rig.run_until(Duration::from_secs(3), |r| r.status(P11)
        == Some(Status::Up)));
    assert_eq!(rig.agent(0).term(), 5);

    // The leader of term 4, paused past its lease, wakes up knowing nothing of the proxy.
    let mut deposed = keeper();
    deposed.lead(4);
    let mut agent = rig.agents.remove(0).1;
    agent.handle_timeout(rig.now + Duration::from_millis(100));
    let from: SocketAddr = "127.0.1.11:40000".parse().expect("valid");
    let mut sent = 0;
    while let Some(bytes) = agent.poll_transmit() {
        sent += 1;
        deposed.handle_datagram(rig.now, from, &bytes);
    }
    assert!(sent > 0);
    let mut buf = vec![0; MAX_DATAGRAM];
    assert!(
        deposed.poll_transmit(&mut buf).is_none(),
        "a deposed leader answered"
    );
    assert_eq!(deposed.stats().dropped(DropReason::NewerTerm), sent);
    assert_eq!(deposed.newer_term(), Some(5));
    assert!(
        deposed.listing(CLUSTER).map_or(true, |l| l.is_empty()),
        "it registered the proxy"
    );
}

/// The seq of the datagram the agent sends next (the heartbeat it sends when `now` is
/// due), read from that datagram, which is returned too.
fn next_heartbeat(agent: &mut Agent, now: Instant) -> (u64, u64) {
    agent.handle_timeout(now);
    let mut last = None;
    while let Some(bytes) = agent.poll_transmit() {
        if let Ok(Message::Heartbeat(hb)) = wire::open(&bytes, &key()) {
            last = Some((hb.incarnation, hb.seq));
        }
    }
    last.expect("a heartbeat was due")
}

#[test]
fn an_agent_obeys_no_restart_from_an_older_term_than_it_has_heard() {
    let mut leader = keeper();
    leader.lead(5);
    let mut rig = Rig::new(leader, vec![agent(P11, Version::V2)]);
    assert!(rig.run_until(Duration::from_secs(3), |r| r.status(P11)
        == Some(Status::Up)));
    let mut agent = rig.agents.remove(0).1;
    let now = rig.now + Duration::from_millis(200);
    let (incarnation, seq) = next_heartbeat(&mut agent, now);
    let restart = |term| {
        wire::encode_framed_to_vec(
            Version::V2,
            &Message::Restart(Restart { incarnation, seq }),
            Trailer {
                term,
                config: ConfigId::NONE,
            },
            &key(),
        )
        .expect("fits")
    };
    // From the deposed leader of term 4: ignored and counted.
    agent.handle_datagram(now, &restart(4));
    assert_eq!(agent.incarnation(), incarnation);
    assert_eq!(agent.phase(), Phase::Up);
    assert_eq!(agent.stats().old_term, 1);
    // The same answer in version 1 carries no term: a version 2 agent takes none.
    let v1 =
        wire::encode_to_vec(&Message::Restart(Restart { incarnation, seq }), &key()).expect("fits");
    agent.handle_datagram(now, &v1);
    assert_eq!(agent.incarnation(), incarnation);
    // From the leader of term 5 (or a newer one): obeyed.
    agent.handle_datagram(now, &restart(6));
    assert_eq!(agent.incarnation(), incarnation + 1);
    assert_eq!(agent.term(), 6);
}

#[test]
fn a_running_agent_pulls_a_config_whose_number_is_lower_when_its_id_differs() {
    // The keeper was restored from a backup older than the config the proxy runs.
    let mut rig = Rig::new(keeper(), vec![agent(P11, Version::V2)]);
    for n in 0..3 {
        rig.keeper
            .push_config(rig.now, CLUSTER, format!("v{n}\n").into_bytes().into())
            .expect("gate open");
    }
    assert!(rig.run_until(Duration::from_secs(3), |r| r.status(P11)
        == Some(Status::Up)));
    assert_eq!(rig.agent(0).config_version(), 4);
    let mut agent = rig.agents.remove(0).1;
    let now = rig.now + Duration::from_millis(200);
    let (incarnation, seq) = next_heartbeat(&mut agent, now);
    let restored = ConfigId::of(2, &[7; 32]);
    let ack = wire::encode_framed_to_vec(
        Version::V2,
        &Message::Ack(Ack {
            incarnation,
            seq,
            status: AckStatus::Up,
            interval_ms: 100,
            lost_after_ms: 1_500,
            config_version: 2,
            slot: 1,
            token: Token::NONE,
        }),
        Trailer {
            term: 0,
            config: restored,
        },
        &key(),
    )
    .expect("fits");
    agent.handle_datagram(now, &ack);
    let mut pulls = Vec::new();
    while let Some(bytes) = agent.poll_transmit() {
        let framed = wire::open_framed(&bytes, &key()).expect("valid");
        if let Message::ConfigRequest(req) = framed.message {
            pulls.push((req.version, framed.trailer.config));
        }
    }
    assert_eq!(pulls.first(), Some(&(2, restored)), "{pulls:?}");
}

/// Advances only the keeper, which reads nothing, for `length` in steps of 10 ms.
fn silence(rig: &mut Rig, length: Duration) {
    let end = rig.now + length;
    while rig.now < end {
        rig.now = rig.now + Duration::from_millis(10);
        rig.keeper.handle_timeout(rig.now);
        while rig.keeper.poll_change().is_some() {}
    }
}

#[test]
fn a_leader_that_reads_nothing_from_a_talking_fleet_thinks_itself_deaf_before_lost_after() {
    let proxies = [
        "10.25.0.11:3000",
        "10.25.0.12:3000",
        "10.25.0.13:3000",
        "10.25.0.14:3000",
    ];
    let mut leader = keeper();
    leader.lead(1);
    let mut rig = Rig::new(
        leader,
        proxies.iter().map(|p| agent(p, Version::V2)).collect(),
    );
    assert!(rig.run_until(Duration::from_secs(3), |r| {
        proxies.iter().all(|p| r.status(p) == Some(Status::Up))
    }));
    assert_eq!(rig.keeper.deafness(), None);
    // lost_after is 1.5 s and the interval 100 ms: after 750 ms of silence, 4 up proxies
    // should have sent 30 heartbeats.
    silence(&mut rig, Duration::from_millis(700));
    assert_eq!(rig.keeper.deafness(), None, "too early");
    silence(&mut rig, Duration::from_millis(60));
    let deaf = rig.keeper.deafness().expect("deaf");
    assert_eq!(deaf.up, 4);
    assert!(deaf.silent_for >= Duration::from_millis(750));
    assert!(
        proxies.iter().all(|p| rig.status(p) == Some(Status::Up)),
        "nobody is lost yet"
    );
}

#[test]
fn a_lone_keeper_a_new_leader_and_a_small_fleet_are_never_deaf() {
    // A lone keeper has nobody to hand over to.
    let mut rig = Rig::new(
        keeper(),
        [
            "10.25.0.11:3000",
            "10.25.0.12:3000",
            "10.25.0.13:3000",
            "10.25.0.14:3000",
        ]
        .iter()
        .map(|p| agent(p, Version::V2))
        .collect(),
    );
    assert!(rig.run_until(Duration::from_secs(3), |r| r.status(P11)
        == Some(Status::Up)));
    silence(&mut rig, Duration::from_secs(1));
    assert_eq!(rig.keeper.deafness(), None);
    // A leader that has read nothing yet cannot tell deafness from a silent fleet.
    let mut fresh = keeper();
    fresh.lead(2);
    fresh.handle_timeout(Instant::from_millis(5_000));
    assert_eq!(fresh.deafness(), None);
    // One proxy's missing heartbeats are no evidence.
    let mut leader = keeper();
    leader.lead(3);
    let mut rig = Rig::new(leader, vec![agent(P11, Version::V2)]);
    assert!(rig.run_until(Duration::from_secs(3), |r| r.status(P11)
        == Some(Status::Up)));
    silence(&mut rig, Duration::from_secs(1));
    assert_eq!(rig.keeper.deafness(), None);
}

#[test]
fn a_captured_version_2_config_chunk_does_not_contain_the_configs_plaintext() {
    const SECRET: &[u8] = b"db_password = \"k7-Vq9x-credential\"";
    let mut keeper = keeper();
    let mut config = b"[mysql]\nuser = \"app\"\n".to_vec();
    config.extend_from_slice(SECRET);
    // Several chunks' worth, so every chunk of a long config is sealed, not only one.
    config.extend(std::iter::repeat_n(
        b'#',
        3 * zerokeeper::configdoc::CHUNK_SIZE,
    ));
    config.extend_from_slice(b"\n");
    config.extend_from_slice(SECRET);
    keeper
        .push_config(Instant::ZERO, CLUSTER, config.clone().into())
        .expect("a new cluster");
    let mut rig = Rig::new(
        keeper,
        vec![agent(P11, Version::V1), agent(P12, Version::V2)],
    );
    assert!(rig.run_until(Duration::from_secs(3), |r| {
        r.status(P11) == Some(Status::Up) && r.status(P12) == Some(Status::Up)
    }));
    let contains = |datagrams: &[Vec<u8>]| {
        datagrams
            .iter()
            .any(|d| d.windows(SECRET.len()).any(|w| w == SECRET))
    };
    let kinds = |i: usize| -> Vec<wire::Kind> {
        rig.captured[i]
            .iter()
            .map(|d| wire::parse_header(d).expect("a header").kind)
            .collect()
    };
    // Version 2: the chunks travel sealed, and the agent still got the config whole.
    assert!(kinds(1).contains(&wire::Kind::SealedChunk));
    assert!(!kinds(1).contains(&wire::Kind::ConfigChunk));
    assert!(
        !contains(&rig.captured[1]),
        "a version 2 chunk carries the plaintext"
    );
    let pulled = rig.events[1]
        .iter()
        .find_map(|e| match e {
            AgentEvent::ConfigReady { config, .. } => Some(config.clone()),
            _ => None,
        })
        .expect("the version 2 agent got its config");
    assert!(pulled.windows(SECRET.len()).any(|w| w == SECRET));
    assert_eq!(
        pulled.as_ref(),
        rig.keeper
            .config_of(CLUSTER)
            .expect("a config")
            .bytes
            .as_ref()
    );
    // Version 1 has no sealing: its chunks carry the plaintext (docs/SECURITY.md).
    assert!(kinds(0).contains(&wire::Kind::ConfigChunk));
    assert!(
        contains(&rig.captured[0]),
        "the check sees plaintext where there is some"
    );
}

#[test]
fn a_keeper_refusing_plaintext_configs_serves_version_2_and_never_version_1() {
    let keeper = keeper_with(KeeperConfig {
        refuse_plaintext_configs: true,
        ..config()
    });
    let mut rig = Rig::new(
        keeper,
        vec![agent(P11, Version::V1), agent(P12, Version::V2)],
    );
    assert!(rig.run_until(Duration::from_secs(3), |r| r.status(P12)
        == Some(Status::Up)));
    // The version 1 proxy registered but never got its config: it stays `ready`, which
    // keeps the gate closed, so an operator sees it.
    assert_eq!(rig.status(P11), Some(Status::Ready));
    assert_eq!(rig.agent(0).phase(), Phase::Pulling);
    let stats = rig.keeper.stats();
    assert!(stats.dropped(DropReason::PlaintextRefused) > 0);
    assert_eq!(
        stats.outcome(zerokeeper::keeper::Outcome::ConfigServedPlaintext),
        0
    );
    assert!(stats.outcome(zerokeeper::keeper::Outcome::ConfigServed) > 0);
    assert!(
        rig.captured[0]
            .iter()
            .all(|d| wire::parse_header(d).expect("a header").kind != wire::Kind::ConfigChunk)
    );
}

#[test]
fn with_a_config_id_key_no_id_on_the_wire_is_a_function_of_the_config_alone() {
    let id_key = zerokeeper::wire::ConfigIdKey::new(&[0x5c; 32]);
    let mut keeper = keeper();
    keeper.set_config_id_key(Some(id_key.clone()));
    let secret = b"db_password = \"guessable\"\n".to_vec();
    keeper
        .push_config(Instant::ZERO, CLUSTER, secret.clone().into())
        .expect("a new cluster");
    let current = keeper.config_of(CLUSTER).expect("a config");
    let guess = ConfigId::of(current.version, &current.digest);
    assert_ne!(current.id, guess, "the id is not the unkeyed one");
    assert_eq!(
        current.id,
        ConfigId::keyed(&id_key, CLUSTER, current.version, &current.digest)
    );
    let mut rig = Rig::new(keeper, vec![agent(P12, Version::V2)]);
    assert!(rig.run_until(Duration::from_secs(3), |r| {
        r.status(P12) == Some(Status::Up)
    }));
    // The agent pulled it under its opaque id and runs it.
    assert_eq!(rig.agent(0).config_id(), current.id);
    // Nothing captured holds the unkeyed id anyone could compute from a guessed document.
    assert!(
        !rig.captured[0]
            .iter()
            .any(|d| d.windows(8).any(|w| w == guess.0)),
        "the unkeyed id is on the wire"
    );
    assert!(
        rig.captured[0]
            .iter()
            .any(|d| d.windows(8).any(|w| w == current.id.0)),
        "the check sees the id where it is"
    );
}
