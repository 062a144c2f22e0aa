//! A keeper with a fleet of registered `up` proxies, for the benchmarks.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use zerokeeper::auth::{Key, Keyring};
use zerokeeper::keeper::{Keeper, KeeperConfig};
use zerokeeper::time::Instant;
use zerokeeper::wire::{self, Heartbeat, MAX_DATAGRAM, Message, ProxyStatus, Token};

pub const CLUSTER: &str = "bench_cluster";

/// A seeded generator for choosing senders.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn key() -> Key {
    Key::new(&[0x2a; 32]).expect("valid key")
}

pub fn heartbeat<'a>(proxy: &'a str, seq: u64, slot: u32, token: Token) -> Heartbeat<'a> {
    Heartbeat {
        cluster: CLUSTER,
        proxy,
        incarnation: 1_767_225_600_000_000,
        seq,
        status: ProxyStatus::Up,
        config_version: 1,
        slot,
        token,
    }
}

/// A keeper with `n` registered `up` proxies, and what each needs to send heartbeats.
pub struct Fleet {
    pub keeper: Keeper,
    pub key: Key,
    pub names: Vec<String>,
    pub seqs: Vec<u64>,
    pub slots: Vec<u32>,
    pub token: Token,
    pub now: Instant,
    pub from: SocketAddr,
    pub buf: Vec<u8>,
}

impl Fleet {
    /// A `lost_after` of 2,000 s keeps every token fresh and every timer far away, so the
    /// hot path alone is measured.
    pub fn new(n: usize, persistent: bool) -> Fleet {
        let config = KeeperConfig {
            heartbeat_interval: Duration::from_secs(1),
            lost_after: Duration::from_secs(2_000),
            ready_timeout: Duration::from_secs(4_000),
            delete_after: Duration::from_secs(4_000),
            ..KeeperConfig::default()
        };
        let mut fleet = Fleet::unregistered(n, persistent, config);
        fleet.register_all();
        fleet
    }

    /// A keeper with `config` and `n` proxies ready to register.
    pub fn unregistered(n: usize, persistent: bool, config: KeeperConfig) -> Fleet {
        let keys = Keyring::with_default(key());
        let keeper = if persistent {
            Keeper::restore(config, keys, 1, [7; 32], Instant::ZERO, &[], &[], 0).expect("valid")
        } else {
            Keeper::new(config, keys, 1, [7; 32], Instant::ZERO).expect("valid")
        };
        Fleet {
            keeper,
            key: key(),
            names: (0..n)
                .map(|i| format!("10.{}.{}.{}:3306", i >> 16, (i >> 8) & 255, i & 255))
                .collect(),
            seqs: vec![0; n],
            slots: vec![0; n],
            token: Token::NONE,
            now: Instant::from_millis(1_000),
            from: "127.0.0.1:40000".parse().expect("valid"),
            buf: vec![0; MAX_DATAGRAM],
        }
    }

    /// Registers every proxy and brings it up.
    pub fn register_all(&mut self) {
        let persistent = self.keeper.is_persistent();
        for i in 0..self.names.len() {
            self.send(i, ProxyStatus::Ready); // the first one is challenged for a token
            if self.slots[i] == 0 {
                self.send(i, ProxyStatus::Ready);
            }
            self.send(i, ProxyStatus::Up);
            if persistent {
                let (mut changes, mut blobs) = (Vec::new(), Vec::new());
                let upto = self.keeper.take_changes(&mut changes, &mut blobs);
                self.keeper.mark_durable(upto);
                self.drain();
            }
        }
        assert_eq!(self.keeper.proxy_count(), self.names.len());
    }

    /// Moves the clock on, as a driver would, and runs the timers.
    pub fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
        self.keeper.handle_timeout(self.now);
        let _ = self.keeper.poll_timeout();
    }

    /// One steady `up` heartbeat of every proxy, in random order.
    pub fn batch_all(&mut self, rng: &mut ChaCha8Rng) -> Vec<Vec<u8>> {
        let mut order: Vec<usize> = (0..self.names.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        order
            .into_iter()
            .map(|i| {
                self.seqs[i] += 1;
                let hb = heartbeat(&self.names[i], self.seqs[i], self.slots[i], self.token);
                wire::encode_to_vec(&Message::Heartbeat(hb), &self.key).expect("fits")
            })
            .collect()
    }

    /// Drains answers, taking the freshest token from them.
    pub fn drain_tokens(&mut self) {
        while self.keeper.poll_change().is_some() {}
        while let Some(t) = self.keeper.poll_transmit(&mut self.buf) {
            match wire::open(&self.buf[..t.len], &self.key) {
                Ok(Message::Challenge(c)) => self.token = c.token,
                Ok(Message::Ack(a)) => self.token = a.token,
                _ => {}
            }
        }
    }

    pub fn send(&mut self, i: usize, status: ProxyStatus) {
        self.seqs[i] += 1;
        let mut hb = heartbeat(&self.names[i], self.seqs[i], self.slots[i], self.token);
        hb.status = status;
        let bytes = wire::encode_to_vec(&Message::Heartbeat(hb), &self.key).expect("fits");
        self.keeper.handle_datagram(self.now, self.from, &bytes);
        self.drain_into(i);
    }

    /// Drops what the keeper wants sent and its events, as a driver takes them.
    pub fn drain(&mut self) {
        while self.keeper.poll_transmit(&mut self.buf).is_some() {}
        while self.keeper.poll_change().is_some() {}
    }

    pub fn drain_into(&mut self, i: usize) {
        while self.keeper.poll_change().is_some() {}
        while let Some(t) = self.keeper.poll_transmit(&mut self.buf) {
            match wire::open(&self.buf[..t.len], &self.key) {
                Ok(Message::Challenge(c)) => self.token = c.token,
                Ok(Message::Ack(a)) => {
                    self.token = a.token;
                    if a.slot != 0 {
                        self.slots[i] = a.slot;
                    }
                }
                _ => {}
            }
        }
    }

    /// `count` steady `up` heartbeats of random proxies, encoded ahead of time.
    pub fn batch(&mut self, rng: &mut ChaCha8Rng, count: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|_| {
                let i = rng.random_range(0..self.names.len());
                self.seqs[i] += 1;
                let hb = heartbeat(&self.names[i], self.seqs[i], self.slots[i], self.token);
                wire::encode_to_vec(&Message::Heartbeat(hb), &self.key).expect("fits")
            })
            .collect()
    }
}
