//! The real keeper stopped with SIGSTOP (as a paused VM or a starved host) while its
//! proxies go on heartbeating: when it runs again it blames nobody for the time it did
//! not run, and still catches a proxy that died meanwhile.

mod procs;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use procs::{Keeper, PATIENCE, Process, line};

const PROXIES: [&str; 3] = ["10.25.0.11:3000", "10.25.0.12:3000", "10.25.0.13:3000"];

fn all_up(proxies: &[&str]) -> Vec<String> {
    proxies.iter().map(|p| line(p, "up")).collect()
}

/// Waits until the keeper's log shows `n` stalls.
fn wait_stalls(keeper: &Keeper, n: usize) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let log = keeper.process.log();
        if log.matches("the keeper did not run for this long").count() >= n {
            return log;
        }
        assert!(Instant::now() < deadline, "no stall logged:\n{log}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Status changes the keeper logged, after the proxies were up: none may be a loss or a
/// deletion.
fn assert_no_loss(log: &str, proxies: &[Process]) {
    for word in ["to=lost", "to=\"lost\"", "delete_timeout", "restart sent"] {
        assert!(
            !log.contains(word),
            "the stall hurt a proxy ({word}):\n{log}"
        );
    }
    for p in proxies {
        assert!(
            !p.log().contains("asked for a restart"),
            "a proxy was restarted:\n{}",
            p.log()
        );
    }
}

fn stall(keeper: &Keeper, length: Duration) {
    keeper.process.signal(Signal::SIGSTOP);
    // The stall itself: the keeper does not run for this long.
    std::thread::sleep(length);
    keeper.process.signal(Signal::SIGCONT);
}

#[test]
fn a_keeper_stopped_for_twice_delete_after_and_for_ten_seconds_blames_nobody() {
    let keeper = Keeper::start();
    let proxies: Vec<Process> = PROXIES.iter().map(|p| keeper.proxy(p, &[])).collect();
    keeper.wait_keys(&PROXIES.map(|p| (p, "up")));
    // Twice delete_after (2.5 s), then ten seconds.
    for (n, length) in [Duration::from_secs(5), Duration::from_secs(10)]
        .into_iter()
        .enumerate()
    {
        stall(&keeper, length);
        wait_stalls(&keeper, n + 1);
        // A few lost_after (600 ms) of normal running after it: still nobody lost.
        let calm = Instant::now() + Duration::from_secs(2);
        while Instant::now() < calm {
            assert_eq!(keeper.keys(), all_up(&PROXIES));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // No proxy ever left `up`, so the gate never closed.
    assert_no_loss(&keeper.process.log(), &proxies);
}

#[test]
fn a_proxy_killed_while_the_keeper_was_stopped_is_lost_once_it_runs_again() {
    let keeper = Keeper::start();
    let mut proxies: Vec<Process> = PROXIES.iter().map(|p| keeper.proxy(p, &[])).collect();
    keeper.wait_keys(&PROXIES.map(|p| (p, "up")));
    keeper.process.signal(Signal::SIGSTOP);
    proxies[2].signal(Signal::SIGKILL);
    proxies[2].wait_exit();
    std::thread::sleep(Duration::from_secs(4));
    keeper.process.signal(Signal::SIGCONT);
    let resumed = Instant::now();
    keeper.wait_keys(&[(PROXIES[0], "up"), (PROXIES[1], "up"), (PROXIES[2], "lost")]);
    let took = resumed.elapsed();
    eprintln!("the dead proxy was lost {took:?} after the keeper ran again (lost_after 600ms)");
    let log = wait_stalls(&keeper, 1);
    // The loss comes after the stall was measured, and nothing else changed.
    let stall_at = log.find("the keeper did not run").expect("logged");
    let lost_at = log.find(PROXIES[2]).map(|_| log.rfind("lost_timeout"));
    assert!(lost_at.flatten().is_some_and(|at| at > stall_at), "{log}");
    for word in ["delete_timeout", "restart sent"] {
        assert!(!log.contains(word), "{word}:\n{log}");
    }
}
