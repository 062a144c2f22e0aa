//! A rig for driving the keeper core by hand: hand-made proxies send hand-made datagrams,
//! and virtual time moves only when a test says so.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use zerokeeper::auth::{Key, Keyring};
use zerokeeper::keeper::{Change, Keeper, KeeperConfig, Status};
use zerokeeper::time::Instant;
use zerokeeper::wire::{self, AckStatus, Heartbeat, MAX_DATAGRAM, Message, ProxyStatus, Token};

pub const CLUSTER: &str = "test_cluster";

pub fn key() -> Key {
    Key::new(&[0x2a; 32]).expect("valid key")
}

pub fn other_key() -> Key {
    Key::new(&[0x55; 32]).expect("valid key")
}

/// Short timings: 100 ms heartbeats, lost after 300 ms, ready timeout 2 s, delete 3 s;
/// no limit of challenges per source address, since the rig's fake proxies mostly
/// share one (the limit has tests of its own, in `safety.rs`).
pub fn config() -> KeeperConfig {
    KeeperConfig {
        heartbeat_interval: Duration::from_millis(100),
        lost_after: Duration::from_millis(300),
        ready_timeout: Duration::from_secs(2),
        delete_after: Duration::from_secs(3),
        challenge_limit: 0,
        ..KeeperConfig::default()
    }
}

/// An answer from the keeper, decoded and owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Ack {
        seq: u64,
        status: AckStatus,
        config_version: u64,
        slot: u32,
    },
    Challenge {
        seq: u64,
    },
    Restart {
        incarnation: u64,
        seq: u64,
    },
    Superseded {
        incarnation: u64,
        winner: u64,
    },
    Chunk {
        version: u64,
        index: u32,
        total: u32,
    },
}

/// A proxy played by hand.
#[derive(Clone, Debug)]
pub struct FakeProxy {
    /// Its cluster: [`CLUSTER`] unless [`FakeProxy::in_cluster`] says otherwise.
    pub cluster: String,
    pub proxy: String,
    pub incarnation: u64,
    pub seq: u64,
    pub token: Token,
    pub slot: u32,
    pub source: SocketAddr,
    pub key: Key,
}

impl FakeProxy {
    pub fn new(proxy: &str, incarnation: u64, source: &str) -> FakeProxy {
        FakeProxy {
            cluster: CLUSTER.to_owned(),
            proxy: proxy.to_owned(),
            incarnation,
            seq: 0,
            token: Token::NONE,
            slot: 0,
            source: source.parse().expect("valid address"),
            key: key(),
        }
    }

    fn body(&mut self, status: ProxyStatus) -> Heartbeat<'_> {
        self.seq += 1;
        Heartbeat {
            cluster: &self.cluster,
            proxy: &self.proxy,
            incarnation: self.incarnation,
            seq: self.seq,
            status,
            config_version: 0,
            slot: self.slot,
            token: self.token,
        }
    }

    /// The next heartbeat's bytes (consumes a seq).
    pub fn heartbeat(&mut self, status: ProxyStatus) -> Vec<u8> {
        let key = self.key.clone();
        let hb = self.body(status);
        wire::encode_to_vec(&Message::Heartbeat(hb), &key).expect("fits")
    }

    /// The next unregister's bytes (consumes a seq).
    pub fn unregister_bytes(&mut self) -> Vec<u8> {
        let key = self.key.clone();
        let hb = self.body(ProxyStatus::Up);
        wire::encode_to_vec(&Message::Unregister(hb), &key).expect("fits")
    }

    /// The same proxy, in cluster `cluster`.
    pub fn in_cluster(mut self, cluster: &str) -> FakeProxy {
        self.cluster = cluster.to_owned();
        self
    }

    /// A new process of the same identity: a larger incarnation, no seq, no slot.
    pub fn restarted(&self, incarnation: u64) -> FakeProxy {
        FakeProxy {
            incarnation,
            seq: 0,
            slot: 0,
            ..self.clone()
        }
    }
}

/// The keeper core and a virtual clock.
pub struct Rig {
    pub keeper: Keeper,
    pub now: Instant,
    buf: Vec<u8>,
    pub events: Vec<Change>,
    /// Whether the rig takes the keeper's changes into `events` as they come (a test of
    /// persistence takes them itself, to commit them).
    pub takes_changes: bool,
}

impl Rig {
    pub fn new() -> Rig {
        Rig::with_config(config())
    }

    pub fn with_config(config: KeeperConfig) -> Rig {
        let keeper = Keeper::new(
            config,
            Keyring::with_default(key()),
            1,
            [9; 32],
            Instant::ZERO,
        )
        .expect("valid config");
        Rig::with_keeper(keeper)
    }

    /// A rig around `keeper`, whose time starts at zero.
    pub fn with_keeper(keeper: Keeper) -> Rig {
        Rig {
            keeper,
            now: Instant::ZERO,
            buf: vec![0; MAX_DATAGRAM],
            events: Vec::new(),
            takes_changes: true,
        }
    }

    /// Delivers `bytes` from `proxy` and returns the decoded answers (tokens and slots
    /// are taken by the fake proxy, as an agent would). Also checks that no answer is
    /// larger than the datagram it answers.
    pub fn deliver(&mut self, proxy: &mut FakeProxy, bytes: &[u8]) -> Vec<Reply> {
        self.keeper.handle_datagram(self.now, proxy.source, bytes);
        let mut replies = Vec::new();
        while let Some(t) = self.keeper.poll_transmit(&mut self.buf) {
            assert_eq!(
                t.destination, proxy.source,
                "answers go to the datagram's source"
            );
            assert!(
                t.len <= bytes.len(),
                "answer of {} bytes to a request of {}",
                t.len,
                bytes.len()
            );
            let message = wire::open(&self.buf[..t.len], &proxy.key)
                .expect("the keeper's answers authenticate");
            replies.push(match message {
                Message::Ack(a) => {
                    proxy.token = a.token;
                    if a.slot != 0 {
                        proxy.slot = a.slot;
                    }
                    Reply::Ack {
                        seq: a.seq,
                        status: a.status,
                        config_version: a.config_version,
                        slot: a.slot,
                    }
                }
                Message::Challenge(c) => {
                    proxy.token = c.token;
                    Reply::Challenge { seq: c.seq }
                }
                Message::Restart(r) => Reply::Restart {
                    incarnation: r.incarnation,
                    seq: r.seq,
                },
                Message::Superseded(s) => Reply::Superseded {
                    incarnation: s.incarnation,
                    winner: s.winner,
                },
                Message::ConfigChunk(c) => Reply::Chunk {
                    version: c.version,
                    index: c.index,
                    total: c.total,
                },
                other => panic!("the keeper sent a proxy-side message: {other:?}"),
            });
        }
        self.drain_events();
        replies
    }

    /// Sends a heartbeat; if it is challenged, sends the next one with the fresh token,
    /// as an agent does. Returns the answers to the last datagram sent.
    pub fn say(&mut self, proxy: &mut FakeProxy, status: ProxyStatus) -> Vec<Reply> {
        let bytes = proxy.heartbeat(status);
        let replies = self.deliver(proxy, &bytes);
        if replies.iter().any(|r| matches!(r, Reply::Challenge { .. })) {
            let bytes = proxy.heartbeat(status);
            return self.deliver(proxy, &bytes);
        }
        replies
    }

    /// Sends an unregister, answering a challenge as [`Rig::say`] does.
    pub fn unregister(&mut self, proxy: &mut FakeProxy) -> Vec<Reply> {
        let bytes = proxy.unregister_bytes();
        let replies = self.deliver(proxy, &bytes);
        if replies.iter().any(|r| matches!(r, Reply::Challenge { .. })) {
            let bytes = proxy.unregister_bytes();
            return self.deliver(proxy, &bytes);
        }
        replies
    }

    /// Moves virtual time forward by `d`, firing every timer on the way at its deadline.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.keeper.poll_timeout() {
            if t > end {
                break;
            }
            self.now = t.max(self.now);
            self.keeper.handle_timeout(self.now);
            self.drain_events();
        }
        self.now = end;
    }

    fn drain_events(&mut self) {
        if !self.takes_changes {
            return;
        }
        while let Some(e) = self.keeper.poll_change() {
            self.events.push(e);
        }
    }

    pub fn status(&self, proxy: &str) -> Option<Status> {
        self.keeper.proxy(CLUSTER, proxy).ok().map(|p| p.status)
    }

    pub fn listing(&self) -> Vec<(String, Status)> {
        self.keeper
            .proxies(CLUSTER)
            .map(|ps| ps.into_iter().map(|p| (p.proxy, p.status)).collect())
            .unwrap_or_default()
    }

    /// Registers and brings `proxy` up.
    pub fn bring_up(&mut self, proxy: &mut FakeProxy) {
        self.say(proxy, ProxyStatus::Ready);
        self.say(proxy, ProxyStatus::Up);
        assert_eq!(self.status(&proxy.proxy), Some(Status::Up));
    }
}

impl Rig {
    /// The keeper stops running for `d` (SIGSTOP, a paused VM): time jumps past the
    /// wakeup the core asked for, with nothing handled meanwhile.
    pub fn stall(&mut self, d: Duration) {
        let wake = self.keeper.poll_timeout().unwrap_or(self.now);
        self.now = wake.max(self.now) + d;
    }
}
