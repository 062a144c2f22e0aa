//! A million hostile datagrams at a running keeper while real proxies run (issue 13's
//! acceptance): random bytes, truncated, oversized and bit-flipped datagrams, replays
//! of the proxies' identities, datagrams under a key the keeper does not hold and under
//! another cluster's key, paced at about 100,000 a second from four sockets. Then:
//! nothing changed (the store's revision, every proxy's life and since-time), nothing
//! panicked, the keeper's memory stayed bounded, every datagram it read is counted (by
//! what it did, or why it was dropped), each kind of junk under its own reason, and the
//! proxies were `up` at every look throughout.
//!
//! Release mode only (a debug keeper cannot read this fast): `scripts/test` runs it as
//! `cargo test --release --test hostile_flood`; a plain `cargo test` does not build it.
//! The timers are generous (250 ms heartbeats, `lost_after` 3 s) so that what the
//! kernel may drop of the proxies' own datagrams under the flood does not decide it.

mod procs;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use procs::{Keeper, PATIENCE, Process, fresh_dir, write_private};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use zerokeeper::auth::Key;
use zerokeeper::wire::{self, Heartbeat, Message, ProxyStatus, Token};

const CLUSTER: &str = "test_cluster";
const PROXIES: [&str; 3] = ["10.25.0.11:3000", "10.25.0.12:3000", "10.25.0.13:3000"];
const DATAGRAMS: usize = 1_000_000;
/// Datagrams sent per pacing step, and steps a second: 100,000 a second.
const BURST: usize = 500;
const STEPS_PER_SECOND: u32 = 200;

/// The metrics families that count datagrams, summed by label.
fn counters(keeper: &Keeper) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let text = ureq::get(format!("{}/metrics", keeper.http))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("text");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if name.starts_with("zerokeeper_datagrams_received")
            || name.starts_with("zerokeeper_datagrams_dropped")
            || name.starts_with("zerokeeper_heartbeats")
        {
            out.insert(name.to_owned(), value.parse().unwrap_or(0.0));
        }
    }
    out
}

fn delta(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>, name: &str) -> f64 {
    after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
}

fn sum_of(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>, family: &str) -> f64 {
    after
        .keys()
        .filter(|k| k.starts_with(family))
        .map(|k| delta(after, before, k))
        .sum()
}

fn dropped(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>, reason: &str) -> f64 {
    delta(
        after,
        before,
        &format!("zerokeeper_datagrams_dropped_total{{reason=\"{reason}\"}}"),
    )
}

/// Each proxy's (status, incarnation, since), from the admin API at `http`.
fn lives(http: &str) -> Vec<(String, u64, String)> {
    let listing: Value = ureq::get(format!("{http}/v1/clusters/{CLUSTER}/proxies"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_json().ok())
        .unwrap_or(Value::Null);
    PROXIES
        .iter()
        .map(|p| {
            let view = listing["proxies"]
                .as_array()
                .and_then(|ps| ps.iter().find(|v| v["proxy"] == *p))
                .cloned()
                .unwrap_or(Value::Null);
            (
                view["status"].as_str().unwrap_or("absent").to_owned(),
                view["incarnation"].as_u64().unwrap_or(0),
                view["since"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn memory_kib(pid: nix::unistd::Pid, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("procfs");
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .expect("a memory figure")
}

/// A heartbeat of `proxy` signed with `key`.
fn heartbeat(proxy: &str, incarnation: u64, seq: u64, key: &Key) -> Vec<u8> {
    let hb = Heartbeat {
        cluster: CLUSTER,
        proxy,
        incarnation,
        seq,
        status: ProxyStatus::Up,
        config_version: 1,
        slot: 0,
        token: Token::NONE,
    };
    wire::encode_to_vec(&Message::Heartbeat(hb), key).expect("fits")
}

#[test]
fn a_million_hostile_datagrams_change_nothing_and_hurt_no_proxy() {
    assert!(
        !cfg!(debug_assertions),
        "run in release: cargo test --release --test hostile_flood"
    );
    let dir = fresh_dir("flood");
    let other_secret = [0x6b; 32];
    write_private(
        &dir.join("other.key"),
        &zerokeeper::config::encode_hex(&other_secret),
    );
    let config = dir.join("keeper.toml");
    std::fs::write(&config, "[clusters.other]\nkey_files = [\"other.key\"]\n").expect("config");
    let timing = [
        "--heartbeat-interval",
        "250ms",
        "--lost-after",
        "3s",
        "--ready-timeout",
        "30s",
        "--delete-after",
        "30s",
    ];
    let keeper = Keeper::launch(
        &dir.join("data"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &timing,
        &["--config", config.to_str().expect("utf-8")],
        None,
    );
    let _proxies: Vec<Process> = PROXIES.iter().map(|p| keeper.proxy(p, &[])).collect();
    let deadline = Instant::now() + PATIENCE;
    let first = loop {
        let lives = lives(&keeper.http);
        if lives.iter().all(|(status, _, _)| status == "up") {
            break lives;
        }
        assert!(Instant::now() < deadline, "proxies not up: {lives:?}");
        std::thread::sleep(Duration::from_millis(25));
    };
    let revision = keeper.get_json("/v1/store").expect("store")["revision"].clone();
    let before = counters(&keeper);
    let pid = keeper.process.pid();
    let rss_before = memory_kib(pid, "VmRSS:");

    // Watches the listing throughout: every look must find every proxy in its first life,
    // `up` since the same moment.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, http, first) = (stop.clone(), keeper.http.clone(), first.clone());
        std::thread::spawn(move || {
            let mut looks = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let now = lives(&http);
                assert_eq!(now, first, "a proxy left `up` during the flood");
                looks += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            looks
        })
    };

    let key = Key::new(&[0x2a; 32]).expect("the tests' key");
    // The proxies' own incarnations, for replays of their identities.
    let incarnations: Vec<u64> = first.iter().map(|(_, inc, _)| *inc).collect();
    let unknown = Key::new(&[0x13; 32]).expect("a key");
    let other = Key::new(&other_secret).expect("a key");
    let target: SocketAddr = keeper.udp.parse().expect("the keeper's address");
    let sockets: Vec<UdpSocket> = (0..4)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let started = Instant::now();
    let step = Duration::from_secs(1) / STEPS_PER_SECOND;
    let mut sent = 0usize;
    let mut kinds = [0usize; 7];
    while sent < DATAGRAMS {
        for _ in 0..BURST.min(DATAGRAMS - sent) {
            let kind = sent % 7;
            let p = rng.random_range(0..PROXIES.len());
            let bytes = match kind {
                // Random bytes, of any length a datagram may have.
                0 => {
                    let len = rng.random_range(0..1400);
                    (0..len).map(|_| rng.random::<u8>()).collect()
                }
                // A genuine-looking datagram cut short.
                1 => {
                    let mut d =
                        heartbeat(PROXIES[p], incarnations[p], rng.random_range(1..5), &key);
                    d.truncate(rng.random_range(0..d.len()));
                    d
                }
                // Longer than any datagram of the protocol.
                2 => {
                    let mut d = heartbeat(PROXIES[p], incarnations[p], 1, &key);
                    d.resize(rng.random_range(1201..1400), 0x5a);
                    d
                }
                // One bit flipped.
                3 => {
                    let mut d = heartbeat(PROXIES[p], incarnations[p], rng.random(), &key);
                    let bit = rng.random_range(0..d.len() * 8);
                    d[bit / 8] ^= 1 << (bit % 8);
                    d
                }
                // A replay of the proxy's early datagrams: its life, an old seq.
                4 => heartbeat(PROXIES[p], incarnations[p], rng.random_range(1..3), &key),
                // A key the keeper does not hold.
                5 => heartbeat(PROXIES[p], incarnations[p], rng.random(), &unknown),
                // Another cluster's key, naming this cluster.
                _ => heartbeat(PROXIES[p], incarnations[p], rng.random(), &other),
            };
            kinds[kind] += 1;
            // A full socket buffer is the kernel's drop, not the keeper's: counted below.
            let _ = sockets[sent % sockets.len()].send_to(&bytes, target);
            sent += 1;
        }
        // Pacing: about 100,000 a second, never faster.
        let due = started + step * u32::try_from(sent / BURST).expect("fits");
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let took = started.elapsed();

    // Everything the keeper will read of it has been read once the count stops moving.
    let deadline = Instant::now() + PATIENCE;
    let mut last = -1.0;
    let after = loop {
        let now = counters(&keeper);
        let received = delta(&now, &before, "zerokeeper_datagrams_received_total");
        if received >= DATAGRAMS as f64 || (received == last && received > 0.0) {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "the keeper stopped reading at {received}"
        );
        last = received;
        std::thread::sleep(Duration::from_millis(200));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let looks = watcher.join().expect("the proxies stayed up at every look");

    let received = delta(&after, &before, "zerokeeper_datagrams_received_total");
    let outcomes = sum_of(&after, &before, "zerokeeper_heartbeats_total");
    let drops = sum_of(&after, &before, "zerokeeper_datagrams_dropped_total");
    eprintln!(
        "sent {sent} in {took:?}; the keeper read {received} (the proxies' own included), \
         {drops} dropped, {outcomes} handled; {looks} looks at the listing"
    );
    // The kernel drops what the keeper's socket cannot hold, more on a loaded machine
    // (95 % read while a second test suite ran beside it): what is dropped there does not
    // decide the outcome, as issue 13 asks. The flood must still have reached the keeper
    // for the checks below to mean anything; how fast it reads is `zerokeeper bench`'s
    // to measure, not a pass/fail test's.
    assert!(
        received >= 0.5 * DATAGRAMS as f64,
        "read {received} of {DATAGRAMS}: the flood did not reach the keeper"
    );
    assert_eq!(received, outcomes + drops, "every datagram read is counted");
    for reason in [
        "bad_tag",
        "truncated",
        "oversized",
        "stale",
        "unknown_key",
        "wrong_key",
    ] {
        let n = dropped(&after, &before, reason);
        assert!(n > 0.0, "no {reason} drop counted");
    }
    // Each kind lands under its reason: the bit flips, unknown and other keys all but
    // exactly (random bytes may look like anything but a genuine datagram).
    assert!(dropped(&after, &before, "unknown_key") >= 0.98 * kinds[5] as f64);
    assert!(dropped(&after, &before, "wrong_key") >= 0.98 * kinds[6] as f64);
    assert!(dropped(&after, &before, "stale") >= 0.98 * kinds[4] as f64);
    assert!(dropped(&after, &before, "oversized") >= 0.98 * kinds[2] as f64);

    // Nothing changed, and nothing broke.
    assert_eq!(
        keeper.get_json("/v1/store").expect("store")["revision"],
        revision,
        "the flood changed something"
    );
    assert_eq!(lives(&keeper.http), first);
    let log = keeper.process.log();
    assert!(!log.contains("panicked"), "{log}");
    let rss_after = memory_kib(pid, "VmRSS:");
    assert!(
        rss_after < rss_before + 32 * 1024,
        "resident memory grew from {rss_before} KiB to {rss_after} KiB"
    );
}
