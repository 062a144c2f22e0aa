//! An in-memory datagram network in virtual time: seeded loss, duplication, delay and
//! reordering, and partitions per host and direction.
//!
//! It is sans-IO like the cores: packets are values, time is an argument, randomness
//! comes from a seed. Nothing here touches a socket; addresses are only labels.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::scenario::Direction;
use crate::time::Instant;

/// How the network misbehaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetConfig {
    /// Delay every datagram has.
    pub latency: Duration,
    /// Extra delay, uniform in `0..jitter`: datagrams sent close together are reordered.
    pub jitter: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a delivered datagram arrives twice (each copy delayed on its own).
    pub duplicate: f64,
}

impl NetConfig {
    /// A network that delivers everything, in order, after 1 ms.
    pub fn perfect() -> NetConfig {
        NetConfig {
            latency: Duration::from_millis(1),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
        }
    }

    /// 30 % loss, 30 % duplication, and up to 300 ms of jitter (heavy reordering).
    pub fn hostile() -> NetConfig {
        NetConfig {
            latency: Duration::from_millis(5),
            jitter: Duration::from_millis(300),
            loss: 0.3,
            duplicate: 0.3,
        }
    }
}

/// A datagram in flight or delivered.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Packet {
    /// When it arrives.
    pub at: Instant,
    /// Send order, to break ties deterministically.
    pub id: u64,
    /// Its source.
    pub from: SocketAddr,
    /// Its destination.
    pub to: SocketAddr,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// What the network did, for tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams sent.
    pub sent: u64,
    /// Lost at random.
    pub lost: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Dropped by a partition.
    pub cut: u64,
    /// Delivered.
    pub delivered: u64,
}

/// The network.
#[derive(Debug)]
pub struct Network {
    cfg: NetConfig,
    rng: ChaCha8Rng,
    in_flight: BinaryHeap<Reverse<Packet>>,
    next_id: u64,
    /// Hosts cut off from the keeper, and which way.
    cuts: BTreeSet<(IpAddr, Direction)>,
    keeper: IpAddr,
    stats: NetStats,
}

impl Network {
    /// A network around the keeper at `keeper`, misbehaving as `cfg` says, from `seed`.
    pub fn new(cfg: NetConfig, seed: u64, keeper: IpAddr) -> Network {
        Network {
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed),
            in_flight: BinaryHeap::new(),
            next_id: 0,
            cuts: BTreeSet::new(),
            keeper,
            stats: NetStats::default(),
        }
    }

    /// What the network did so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Cuts `host` off from the keeper in `direction`.
    pub fn partition(&mut self, host: IpAddr, direction: Direction) {
        self.cuts.insert((host, direction));
    }

    /// Heals every cut of `host`.
    pub fn heal(&mut self, host: IpAddr) {
        self.cuts.retain(|(h, _)| *h != host);
    }

    fn is_cut(&self, from: IpAddr, to: IpAddr) -> bool {
        let blocked = |host: IpAddr, d: Direction| {
            self.cuts.contains(&(host, Direction::Both)) || self.cuts.contains(&(host, d))
        };
        (to == self.keeper && blocked(from, Direction::ToKeeper))
            || (from == self.keeper && blocked(to, Direction::FromKeeper))
    }

    /// Sends a datagram at `now`.
    pub fn send(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        self.stats.sent += 1;
        if self.is_cut(from.ip(), to.ip()) {
            self.stats.cut += 1;
            return;
        }
        if self.cfg.loss > 0.0 && self.rng.random::<f64>() < self.cfg.loss {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.cfg.duplicate > 0.0 && self.rng.random::<f64>() < self.cfg.duplicate {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = if self.cfg.jitter.is_zero() {
                Duration::ZERO
            } else {
                let nanos = u64::try_from(self.cfg.jitter.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(self.rng.random_range(0..nanos))
            };
            let id = self.next_id;
            self.next_id += 1;
            self.in_flight.push(Reverse(Packet {
                at: now + self.cfg.latency + jitter,
                id,
                from,
                to,
                bytes: bytes.to_vec(),
            }));
        }
    }

    /// When the next datagram arrives, if any is in flight.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse(p)| p.at)
    }

    /// The next datagram due by `now`, in arrival order. A partition that began while it
    /// was in flight drops it.
    pub fn deliver(&mut self, now: Instant) -> Option<Packet> {
        while self.in_flight.peek().is_some_and(|Reverse(p)| p.at <= now) {
            let Reverse(packet) = self.in_flight.pop()?;
            if self.is_cut(packet.from.ip(), packet.to.ip()) {
                self.stats.cut += 1;
                continue;
            }
            self.stats.delivered += 1;
            return Some(packet);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("valid address")
    }

    #[test]
    fn a_partition_drops_one_direction_only() {
        let keeper = addr("127.0.0.1:7821");
        let proxy = addr("127.0.1.11:40000");
        let mut net = Network::new(NetConfig::perfect(), 1, keeper.ip());
        net.partition(proxy.ip(), Direction::ToKeeper);
        net.send(Instant::ZERO, proxy, keeper, b"hb");
        net.send(Instant::ZERO, keeper, proxy, b"ack");
        let delivered = net.deliver(Instant::from_millis(10)).expect("one arrives");
        assert_eq!(delivered.bytes, b"ack");
        assert_eq!(net.deliver(Instant::from_millis(10)), None);
        assert_eq!(net.stats().cut, 1);
    }

    #[test]
    fn the_same_seed_gives_the_same_deliveries() {
        let run = |seed| {
            let keeper = addr("127.0.0.1:7821");
            let proxy = addr("127.0.1.11:40000");
            let mut net = Network::new(NetConfig::hostile(), seed, keeper.ip());
            for i in 0u8..100 {
                net.send(Instant::from_millis(u64::from(i)), proxy, keeper, &[i]);
            }
            std::iter::from_fn(|| net.deliver(Instant::from_millis(1_000)))
                .map(|p| p.bytes[0])
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }
}
