//! Criterion benchmarks of the sans-IO cores: the wire format, the keeper's hot path at
//! 1k, 100k and 1M proxies (senders in random order, so caches are honest), its timers,
//! the agent, a heartbeat round trip over the in-memory network, and a 1 MiB config
//! rollout to one proxy over it (every chunk requested, sealed, opened and checked).
//!
//! `cargo bench --bench core` runs them all; `cargo bench --bench core -- keeper` runs a
//! group. Each runs in a few seconds with the settings below.

mod fleet;

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fleet::{CLUSTER, Fleet, heartbeat, key};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use zerokeeper::agent::{Agent, AgentConfig, Phase};
use zerokeeper::auth::Keyring;
use zerokeeper::keeper::{Keeper, KeeperConfig};
use zerokeeper::scenario::net::{NetConfig, Network};
use zerokeeper::time::{Instant, WallTime};
use zerokeeper::wire::{self, MAX_DATAGRAM, Message, Token};

/// Handles `iters` batches of `size` heartbeats; only the handling is timed, not the
/// encoding of the batches.
fn timed_batches(fleet: &mut Fleet, rng: &mut ChaCha8Rng, iters: u64, size: usize) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let batch = fleet.batch(rng, size);
        let started = std::time::Instant::now();
        for d in &batch {
            fleet.keeper.handle_datagram(fleet.now, fleet.from, d);
        }
        fleet.drain();
        total += started.elapsed();
    }
    total
}

fn bench_wire(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    let key = key();
    let hb = heartbeat("10.25.0.11:3000", 42, 7, Token([5; 16]));
    let bytes = wire::encode_to_vec(&Message::Heartbeat(hb), &key).expect("fits");
    let mut buf = [0u8; MAX_DATAGRAM];
    g.bench_function("encode_heartbeat_with_tag", |b| {
        b.iter(|| wire::encode(black_box(&Message::Heartbeat(hb)), &key, &mut buf).expect("fits"))
    });
    g.bench_function("open_heartbeat_parse_verify_decode", |b| {
        b.iter(|| wire::open(black_box(&bytes), &key).expect("valid"))
    });
    g.bench_function("hmac_sha256_tag_of_a_heartbeat", |b| {
        b.iter(|| key.tag(black_box(&bytes[..bytes.len() - 16])))
    });
    g.finish();
}

fn bench_keeper(c: &mut Criterion) {
    let mut g = c.benchmark_group("keeper");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    const BATCH: usize = 16_384;
    g.throughput(Throughput::Elements(BATCH as u64));
    for n in [1_000, 100_000, 1_000_000] {
        let mut fleet = Fleet::new(n, false);
        let mut rng = ChaCha8Rng::seed_from_u64(n as u64);
        g.bench_with_input(BenchmarkId::new("steady_up_heartbeat", n), &n, |b, _| {
            b.iter_custom(|iters| timed_batches(&mut fleet, &mut rng, iters, BATCH))
        });
        assert_eq!(
            fleet.keeper.stats().dropped_total(),
            0,
            "every bench heartbeat counted"
        );
    }
    g.finish();
}

fn bench_steady_writes(c: &mut Criterion) {
    // A persistent keeper: steady heartbeats must not produce a single change to store.
    let mut fleet = Fleet::new(10_000, true);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let batch = fleet.batch(&mut rng, 100_000);
    let before = fleet.keeper.stats().changes;
    for d in &batch {
        fleet.keeper.handle_datagram(fleet.now, fleet.from, d);
    }
    fleet.drain();
    let (mut changes, mut blobs) = (Vec::new(), Vec::new());
    fleet.keeper.take_changes(&mut changes, &mut blobs);
    let writes = fleet.keeper.stats().changes - before;
    println!(
        "steady-state writes: {writes} changes to store for {} heartbeats (10,000 up proxies)",
        batch.len()
    );
    assert_eq!(writes, 0);
    assert!(changes.is_empty());
    let mut g = c.benchmark_group("keeper_persistent");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    const BATCH: usize = 16_384;
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("steady_up_heartbeat/10000", |b| {
        b.iter_custom(|iters| timed_batches(&mut fleet, &mut rng, iters, BATCH))
    });
    g.finish();
}

fn bench_timers(c: &mut Criterion) {
    let mut g = c.benchmark_group("timers");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    const N: usize = 10_000;
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("all_due_up_to_lost/10000", |b| {
        b.iter_batched(
            || Fleet::new(N, false),
            |mut fleet| {
                fleet
                    .keeper
                    .handle_timeout(fleet.now + Duration::from_secs(2_000));
                let lost = fleet.keeper.clusters()[0].lost;
                assert_eq!(lost, N);
                fleet
            },
            BatchSize::PerIteration,
        )
    });
    g.throughput(Throughput::Elements(1));
    let mut fleet = Fleet::new(100_000, false);
    g.bench_function("none_due/100000", |b| {
        b.iter(|| {
            fleet.keeper.handle_timeout(black_box(fleet.now));
            fleet.keeper.poll_timeout()
        })
    });
    g.finish();
}

/// An agent that is up, with the keeper that acknowledged it.
fn up_agent() -> (Agent, Keeper, SocketAddr) {
    let config = KeeperConfig::default();
    let mut keeper = Keeper::new(
        config,
        Keyring::with_default(key()),
        1,
        [7; 32],
        Instant::ZERO,
    )
    .expect("valid");
    let mut agent = Agent::new(
        AgentConfig::new(CLUSTER, "10.25.0.11:3000", key()),
        WallTime::from_micros(1),
        Instant::ZERO,
    )
    .expect("valid");
    let from: SocketAddr = "127.0.0.1:40000".parse().expect("valid");
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut now = Instant::ZERO;
    for _ in 0..200 {
        while let Some(d) = agent.poll_transmit() {
            keeper.handle_datagram(now, from, &d);
        }
        while let Some(t) = keeper.poll_transmit(&mut buf) {
            agent.handle_datagram(now, &buf[..t.len]);
        }
        if agent.phase() == Phase::Initialising {
            agent.initialized(now).expect("initialising");
        }
        if agent.phase() == Phase::Up {
            break;
        }
        now = now + Duration::from_millis(10);
        agent.handle_timeout(now);
    }
    assert_eq!(agent.phase(), Phase::Up);
    (agent, keeper, from)
}

fn bench_agent(c: &mut Criterion) {
    let mut g = c.benchmark_group("agent");
    g.throughput(Throughput::Elements(1));
    let (mut agent, _, _) = up_agent();
    let mut now = Instant::from_millis(10_000);
    g.bench_function("send_heartbeat", |b| {
        b.iter(|| {
            now = now + agent.interval();
            agent.handle_timeout(now);
            agent.poll_transmit().expect("a heartbeat")
        })
    });
    g.finish();
}

fn bench_round_trip(c: &mut Criterion) {
    // Agent → network → keeper → network → agent, acks included when due, over the
    // in-memory network: what one heartbeat costs both cores together.
    let mut g = c.benchmark_group("round_trip");
    g.throughput(Throughput::Elements(1));
    let (mut agent, mut keeper, from) = up_agent();
    let keeper_addr: SocketAddr = "127.0.0.1:7821".parse().expect("valid");
    let mut net = Network::new(
        NetConfig {
            latency: Duration::ZERO,
            ..NetConfig::perfect()
        },
        1,
        keeper_addr.ip(),
    );
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut now = Instant::from_millis(10_000);
    g.bench_function("heartbeat_over_in_memory_network", |b| {
        b.iter(|| {
            now = now + agent.interval();
            agent.handle_timeout(now);
            while let Some(d) = agent.poll_transmit() {
                net.send(now, from, keeper_addr, &d);
            }
            while let Some(p) = net.deliver(now) {
                if p.to == keeper_addr {
                    keeper.handle_datagram(now, p.from, &p.bytes);
                    while let Some(t) = keeper.poll_transmit(&mut buf) {
                        net.send(now, keeper_addr, t.destination, &buf[..t.len]);
                    }
                } else {
                    agent.handle_datagram(now, &p.bytes);
                }
            }
        })
    });
    g.finish();
}

/// Delivers everything in flight between `agent` and `keeper` at `now`, answers
/// included, until nothing moves.
fn settle(
    agent: &mut Agent,
    keeper: &mut Keeper,
    net: &mut Network,
    buf: &mut [u8],
    from: SocketAddr,
    now: Instant,
) {
    let keeper_addr: SocketAddr = "127.0.0.1:7821".parse().expect("valid");
    loop {
        let mut moved = false;
        while let Some(d) = agent.poll_transmit() {
            net.send(now, from, keeper_addr, &d);
        }
        while let Some(p) = net.deliver(now) {
            moved = true;
            if p.to == keeper_addr {
                keeper.handle_datagram(now, p.from, &p.bytes);
                while let Some(t) = keeper.poll_transmit(buf) {
                    net.send(now, keeper_addr, t.destination, &buf[..t.len]);
                }
            } else {
                agent.handle_datagram(now, &p.bytes);
            }
        }
        while agent.poll_event().is_some() {}
        while keeper.poll_change().is_some() {}
        if !moved {
            return;
        }
    }
}

fn bench_config_transfer(c: &mut Criterion) {
    // A 1 MiB config from a push to the proxy running it: the Ack that names it, 1024
    // padded requests, 1024 sealed chunks opened and reassembled, the keyed digest
    // checked. Only the transfer is timed (the push, which renders and hashes the
    // document, is not), on a perfect network without latency: the cores' cost alone.
    const SIZE: usize = 1 << 20;
    let mut g = c.benchmark_group("config_transfer");
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.sample_size(20);
    let (mut agent, mut keeper, from) = up_agent();
    let keeper_addr: SocketAddr = "127.0.0.1:7821".parse().expect("valid");
    let mut net = Network::new(
        NetConfig {
            latency: Duration::ZERO,
            ..NetConfig::perfect()
        },
        1,
        keeper_addr.ip(),
    );
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // Just after `up_agent` made it `up` (virtual time): the proxy keeps heartbeating as
    // time moves on, so it stays `up` and the gate open.
    let mut now = Instant::from_millis(500);
    let mut n = 0u64;
    // `up_agent` stops as soon as the agent is up: its `up` heartbeat is still to send.
    settle(&mut agent, &mut keeper, &mut net, &mut buf, from, now);
    assert_eq!(keeper.gate(CLUSTER), Ok(()));
    g.bench_function("1MiB_over_in_memory_network", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let mut config = vec![b'#'; SIZE];
                config[..8].copy_from_slice(&n.to_be_bytes());
                let version = keeper
                    .push_config(now, CLUSTER, config.into())
                    .expect("the gate is open");
                let started = std::time::Instant::now();
                while agent.config_version() != version {
                    now = now + Duration::from_millis(1);
                    agent.handle_timeout(now);
                    keeper.handle_timeout(now);
                    settle(&mut agent, &mut keeper, &mut net, &mut buf, from, now);
                }
                total += started.elapsed();
                assert_eq!(agent.phase(), Phase::Up, "the proxy stayed up");
            }
            total
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_wire,
    bench_keeper,
    bench_steady_writes,
    bench_timers,
    bench_agent,
    bench_round_trip,
    bench_config_transfer
);
criterion_main!(benches);
