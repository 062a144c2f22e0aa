//! A proxy that knows several keepers, through the real binaries: it finds the one that
//! answers among silent ones, and when that keeper dies and another takes over its store
//! at another address, the proxy finds the new one by itself, and nobody is restarted.

mod procs;

use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use procs::{CLUSTER, Keeper, PATIENCE, Process, fresh_dir};

const PROXY: &str = "10.25.0.61:3000";

fn proxy(keepers: &str) -> Process {
    procs::proxy_of(keepers, CLUSTER, PROXY, &[])
}

/// Waits until `process`'s log has `phrase` at least `n` times.
fn wait_count(process: &Process, phrase: &str, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    while process.log().matches(phrase).count() < n {
        assert!(
            Instant::now() < deadline,
            "waited for {n} × {phrase:?}:\n{}",
            process.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// When `keeper` last heard `PROXY`, by its listing.
fn last_heard(keeper: &Keeper) -> Option<SystemTime> {
    let body = keeper.get_json(&format!("/v1/clusters/{CLUSTER}/proxies/{PROXY}"))?;
    humantime::parse_rfc3339(body["last_heartbeat"].as_str()?).ok()
}

#[test]
fn a_proxy_of_two_keepers_follows_the_store_to_the_keeper_that_took_it_over() {
    // The second keeper's address, silent until a keeper takes it.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
    let second = silent.local_addr().expect("bound");
    let dir = fresh_dir("takeover");
    let first = Keeper::start_on(&dir, "127.0.0.1:0");
    // The first keeper by name, to resolve it.
    let port = first.udp.rsplit(':').next().expect("a port");
    let mut p = proxy(&format!("{second},localhost:{port}"));
    first.wait_keys(&[(PROXY, "up")]);
    p.wait_log(&["a keeper answers: sending to it"]);

    // The first keeper dies; another takes its store over at the second address.
    first.process.signal(Signal::SIGKILL);
    drop(first);
    drop(silent);
    let took_over = SystemTime::now();
    let taken = Keeper::start_on(&dir, &second.to_string());
    wait_count(
        &p,
        "no keeper answers: sending to every keeper until one does",
        2,
    );
    wait_count(&p, "a keeper answers: sending to it", 2);
    // The new keeper hears the proxy itself (not only what the store said).
    let deadline = Instant::now() + PATIENCE;
    while last_heard(&taken).is_none_or(|at| at <= took_over) {
        assert!(Instant::now() < deadline, "{}", taken.process.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    taken.wait_keys(&[(PROXY, "up")]);
    let log = p.log();
    assert!(!log.contains("asked for a restart"), "{log}");
    assert!(!taken.process.log().contains("restart sent"));
    assert!(p.child.try_wait().expect("waitable").is_none(), "{log}");
    p.signal(Signal::SIGTERM);
    assert_eq!(p.wait_exit(), 0, "{}", p.log());
}

#[test]
fn a_keeper_address_that_does_not_resolve_is_refused_at_start() {
    // No port: refused before any lookup (no name server is ever asked in a test).
    let mut p = proxy("keeper-without-a-port");
    assert_ne!(p.wait_exit(), 0);
    assert!(p.log().contains("cannot resolve keeper"), "{}", p.log());
}
