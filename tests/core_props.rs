//! The keeper core fed arbitrary datagram sequences (issue 13's hostile-input campaign,
//! as proptest state machines on the stable toolchain): genuine heartbeats of three
//! proxies, mixed with replays of anything sent before (from the proxy's own address or
//! a spoofed one), bit flips, truncations and extensions of it, datagrams under a key
//! the keeper does not hold or under another cluster's key, random bytes, and time
//! passing. After every step:
//!
//! - every answer goes to the source of the datagram it answers and is no larger;
//! - a datagram that is not genuine (forged, damaged, another cluster's key, random)
//!   changes nothing (the revision stays) and gets no answer;
//! - a replay from another source changes nothing (its token is bound to the address
//!   it was sent to); a replay from the proxy's own address leaves the registry as it
//!   was (it may repeat a notice, a `Restart` or `Superseded`, to that address: the
//!   keeper cannot tell it from the process sending again);
//! - the registry agrees with itself: every cluster's counts add up to its proxies,
//!   and the gate is open exactly when every proxy is `up`.
//!
//! `PROPTEST_CASES=N` runs more cases.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{CLUSTER, FakeProxy, Rig};
use proptest::prelude::*;
use zerokeeper::auth::{Key, KeyScope, Keyring};
use zerokeeper::keeper::{Keeper, KeeperConfig, Status};
use zerokeeper::time::Instant;
use zerokeeper::wire::{self, MAX_DATAGRAM, Message, ProxyStatus};

/// Cases by default; set `PROPTEST_CASES` for a deeper run.
const CASES: u32 = 256;

const IDENTITIES: [&str; 3] = ["10.25.0.11:3000", "10.25.0.12:3000", "10.25.0.13:3000"];
const SPOOFED: &str = "192.0.2.7:53";
/// A cluster with a key of its own, which the proxies' key may not speak for.
const OTHER: &str = "other";

fn other_cluster_key() -> Key {
    Key::new(&[0x77; 32]).expect("a valid key")
}

#[derive(Clone, Debug)]
enum Action {
    /// A genuine heartbeat (a new life first, if `restart`).
    Say {
        proxy: usize,
        status: ProxyStatus,
        restart: bool,
    },
    /// A genuine unregister.
    Unregister { proxy: usize },
    /// An earlier datagram again, from its own source or a spoofed one.
    Replay { pick: usize, spoofed: bool },
    /// An earlier datagram with one bit flipped.
    Flip { pick: usize, bit: usize },
    /// An earlier datagram cut short.
    Truncate { pick: usize, keep: usize },
    /// An earlier datagram with bytes added.
    Extend { pick: usize, extra: Vec<u8> },
    /// A heartbeat under a key the keeper does not hold.
    UnknownKey { proxy: usize },
    /// A heartbeat under the key of another cluster, naming the proxies' cluster.
    OtherClustersKey { proxy: usize },
    /// Bytes of no protocol.
    Random { bytes: Vec<u8> },
    /// Time passes.
    Advance { ms: u64 },
}

fn action() -> impl Strategy<Value = Action> {
    let status = prop_oneof![
        4 => Just(ProxyStatus::Up),
        3 => Just(ProxyStatus::Ready),
        1 => Just(ProxyStatus::Down),
    ];
    prop_oneof![
        8 => (0..3usize, status, prop::bool::weighted(0.05))
            .prop_map(|(proxy, status, restart)| Action::Say { proxy, status, restart }),
        1 => (0..3usize).prop_map(|proxy| Action::Unregister { proxy }),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(pick, spoofed)| Action::Replay { pick, spoofed }),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(pick, bit)| Action::Flip { pick, bit }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(pick, keep)| Action::Truncate { pick, keep }),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(pick, extra)| Action::Extend { pick, extra }),
        1 => (0..3usize).prop_map(|proxy| Action::UnknownKey { proxy }),
        1 => (0..3usize).prop_map(|proxy| Action::OtherClustersKey { proxy }),
        1 => prop::collection::vec(any::<u8>(), 0..1300).prop_map(|bytes| Action::Random { bytes }),
        4 => (0..1500u64).prop_map(|ms| Action::Advance { ms }),
    ]
}

/// The keeper, its proxies, and every genuine datagram sent so far with its source.
struct World {
    rig: Rig,
    proxies: Vec<FakeProxy>,
    sent: Vec<(SocketAddr, Vec<u8>)>,
    buf: Vec<u8>,
}

impl World {
    fn new() -> World {
        let config = KeeperConfig {
            heartbeat_interval: Duration::from_millis(100),
            lost_after: Duration::from_millis(300),
            ready_timeout: Duration::from_secs(2),
            delete_after: Duration::from_secs(3),
            ..KeeperConfig::default()
        };
        let mut keys = Keyring::with_default(common::key());
        keys.insert(other_cluster_key(), KeyScope::Cluster(OTHER.into()))
            .expect("distinct keys");
        let keeper = Keeper::new(config, keys, 1, [9; 32], Instant::ZERO).expect("a valid config");
        let proxies = IDENTITIES
            .iter()
            .enumerate()
            .map(|(i, id)| {
                FakeProxy::new(id, 1_000 + i as u64, &format!("127.0.0.1:{}", 40_011 + i))
            })
            .collect();
        World {
            rig: Rig::with_keeper(keeper),
            proxies,
            sent: Vec::new(),
            buf: vec![0; MAX_DATAGRAM],
        }
    }

    /// Delivers hostile bytes from `from`: returns the answers' (destination, size).
    fn hostile(&mut self, from: SocketAddr, bytes: &[u8]) -> Vec<(SocketAddr, usize)> {
        self.rig.keeper.handle_datagram(self.rig.now, from, bytes);
        let mut answers = Vec::new();
        while let Some(t) = self.rig.keeper.poll_transmit(&mut self.buf) {
            answers.push((t.destination, t.len));
        }
        answers
    }

    fn pick(&self, pick: usize) -> Option<(SocketAddr, Vec<u8>)> {
        (!self.sent.is_empty()).then(|| self.sent[pick % self.sent.len()].clone())
    }

    /// A heartbeat of `proxy` signed with `key` instead of its own (consumes no seq of
    /// the genuine proxy).
    fn signed_with(&self, proxy: usize, key: &Key) -> Vec<u8> {
        let p = &self.proxies[proxy];
        let hb = wire::Heartbeat {
            cluster: &p.cluster,
            proxy: &p.proxy,
            incarnation: p.incarnation,
            seq: p.seq + 1,
            status: ProxyStatus::Up,
            config_version: 0,
            slot: p.slot,
            token: p.token,
        };
        wire::encode_to_vec(&Message::Heartbeat(hb), key).expect("fits")
    }

    /// Runs `action`, checking what it may and may not do.
    fn step(&mut self, action: &Action) -> Result<(), TestCaseError> {
        let revision = self.rig.keeper.revision();
        match action {
            Action::Say {
                proxy,
                status,
                restart,
            } => {
                if *restart {
                    let p = &self.proxies[*proxy];
                    self.proxies[*proxy] = p.restarted(p.incarnation + 1);
                }
                let p = &mut self.proxies[*proxy];
                let bytes = p.heartbeat(*status);
                self.sent.push((p.source, bytes.clone()));
                // The rig checks destination and size of every answer.
                self.rig.deliver(p, &bytes);
            }
            Action::Unregister { proxy } => {
                let p = &mut self.proxies[*proxy];
                let bytes = p.unregister_bytes();
                self.sent.push((p.source, bytes.clone()));
                self.rig.deliver(p, &bytes);
            }
            Action::Replay { pick, spoofed } => {
                let Some((source, bytes)) = self.pick(*pick) else {
                    return Ok(());
                };
                let from = if *spoofed {
                    SPOOFED.parse().expect("addr")
                } else {
                    source
                };
                let registry = self.registry();
                for (to, len) in self.hostile(from, &bytes) {
                    prop_assert_eq!(to, from, "an answer goes to the datagram's source");
                    prop_assert!(len <= bytes.len(), "{} > {}", len, bytes.len());
                }
                if *spoofed {
                    prop_assert_eq!(
                        self.rig.keeper.revision(),
                        revision,
                        "a spoofed replay changed something"
                    );
                }
                prop_assert_eq!(self.registry(), registry, "a replay changed the registry");
            }
            Action::Flip { pick, bit } => {
                let Some((source, mut bytes)) = self.pick(*pick) else {
                    return Ok(());
                };
                let bit = bit % (bytes.len() * 8);
                bytes[bit / 8] ^= 1 << (bit % 8);
                self.not_genuine(source, &bytes, revision)?;
            }
            Action::Truncate { pick, keep } => {
                let Some((source, mut bytes)) = self.pick(*pick) else {
                    return Ok(());
                };
                bytes.truncate(keep % bytes.len());
                self.not_genuine(source, &bytes, revision)?;
            }
            Action::Extend { pick, extra } => {
                let Some((source, mut bytes)) = self.pick(*pick) else {
                    return Ok(());
                };
                bytes.extend_from_slice(extra);
                self.not_genuine(source, &bytes, revision)?;
            }
            Action::UnknownKey { proxy } => {
                let bytes = self.signed_with(*proxy, &Key::new(&[0x99; 32]).expect("a key"));
                let source = self.proxies[*proxy].source;
                self.not_genuine(source, &bytes, revision)?;
            }
            Action::OtherClustersKey { proxy } => {
                let bytes = self.signed_with(*proxy, &other_cluster_key());
                let source = self.proxies[*proxy].source;
                self.not_genuine(source, &bytes, revision)?;
            }
            Action::Random { bytes } => {
                self.not_genuine(SPOOFED.parse().expect("addr"), bytes, revision)?;
            }
            Action::Advance { ms } => self.rig.advance(Duration::from_millis(*ms)),
        }
        self.consistent()
    }

    fn not_genuine(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        revision: u64,
    ) -> Result<(), TestCaseError> {
        let answers = self.hostile(from, bytes);
        prop_assert!(
            answers.is_empty(),
            "answered a datagram that is not genuine: {:?}",
            answers
        );
        prop_assert_eq!(
            self.rig.keeper.revision(),
            revision,
            "a datagram that is not genuine changed something"
        );
        Ok(())
    }

    /// Every proxy's cluster, identity, status, life and since-time.
    fn registry(&self) -> Vec<(String, String, Status, u64, Instant)> {
        let keeper = &self.rig.keeper;
        keeper
            .clusters()
            .into_iter()
            .flat_map(|c| keeper.proxies(&c.name).unwrap_or_default())
            .map(|p| (p.cluster, p.proxy, p.status, p.incarnation, p.since))
            .collect()
    }

    fn consistent(&self) -> Result<(), TestCaseError> {
        let keeper = &self.rig.keeper;
        let mut total = 0;
        for cluster in keeper.clusters() {
            let proxies = keeper.proxies(&cluster.name).unwrap_or_default();
            let count = |s: Status| proxies.iter().filter(|p| p.status == s).count();
            prop_assert_eq!(
                (cluster.ready, cluster.up, cluster.lost),
                (count(Status::Ready), count(Status::Up), count(Status::Lost)),
                "the counts of {} add up",
                cluster.name
            );
            prop_assert_eq!(
                cluster.gate_open(),
                proxies.iter().all(|p| p.status == Status::Up)
            );
            prop_assert_eq!(keeper.gate(&cluster.name).is_ok(), cluster.gate_open());
            total += proxies.len();
        }
        prop_assert_eq!(keeper.proxy_count(), total);
        prop_assert!(
            keeper.proxies(OTHER).unwrap_or_default().is_empty(),
            "nothing registers under another cluster's key"
        );
        prop_assert!(total <= IDENTITIES.len());
        Ok(())
    }
}

proptest! {
    #![proptest_config({
        let mut config = ProptestConfig::default();
        if std::env::var_os("PROPTEST_CASES").is_none() {
            config.cases = CASES;
        }
        config
    })]

    #[test]
    fn no_sequence_of_datagrams_breaks_the_keepers_rules(actions in prop::collection::vec(action(), 1..160)) {
        let mut world = World::new();
        for action in &actions {
            world.step(action)?;
        }
        // The proxies' cluster is the only one that can exist.
        let names: Vec<String> = world.rig.keeper.clusters().into_iter().map(|c| c.name).collect();
        prop_assert!(names.iter().all(|n| n == CLUSTER), "{:?}", names);
    }
}
