//! Mass events through the real binary: 500 proxies (from `zerokeeper bench`) register,
//! go up and then all fall silent at once, and the keeper's log says so in a few dozen
//! lines (the first of each kind one by one, then one summary per kind and cluster),
//! not one line per proxy per change. Nothing is lost from the record: every change is
//! counted by the metrics, and the lines plus the summaries add up to them.
//!
//! Every condition is waited for with a deadline.

mod procs;

use std::process::Command;
use std::time::{Duration, Instant};

use procs::{BIN, Keeper, key_file};

const PROXIES: u64 = 500;

/// `zerokeeper_transitions_total{from,to}` of the keeper.
fn transitions(keeper: &Keeper, from: &str, to: &str) -> u64 {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build(),
    );
    let text = agent
        .get(format!("{}/metrics", keeper.http))
        .call()
        .expect("metrics answer")
        .body_mut()
        .read_to_string()
        .expect("metrics text");
    let series = format!("zerokeeper_transitions_total{{from=\"{from}\",to=\"{to}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

/// The count of each summary line of `kind` (`up -> lost`) in `log`, summed.
fn summarised(log: &str, kind: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains(&format!("of cluster mass ({kind})")))
        .map(|l| {
            let rest = l
                .split("status changed for ")
                .nth(1)
                .expect("a summary line");
            rest.split(' ')
                .next()
                .expect("a count")
                .parse::<u64>()
                .expect("a number")
        })
        .sum()
}

/// The lines logged one by one for `kind` of cluster `mass`.
fn one_by_one(log: &str, from: &str, to: &str) -> u64 {
    log.lines()
        .filter(|l| {
            l.contains("status changed cluster=mass")
                && l.contains(&format!("from=\"{from}\" to=\"{to}\""))
        })
        .count() as u64
}

#[test]
fn five_hundred_proxies_going_silent_are_a_few_dozen_lines_that_add_up() {
    let keeper = Keeper::start();
    let key = key_file();
    let out = Command::new(BIN)
        .args([
            "bench",
            "--keeper",
            &keeper.udp,
            "--key-file",
            key.to_str().expect("utf-8"),
            "--keeper-http",
            &keeper.http,
            "--proxies",
            &PROXIES.to_string(),
            "--duration",
            "2s",
            "--rate",
            "5000",
            "--cluster",
            "mass",
        ])
        .output()
        .expect("bench runs");
    assert!(
        out.status.success(),
        "bench: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The load has stopped: every proxy falls silent. Wait until each registration and
    // each loss is either logged or summed up (a summary comes at the end of its window).
    let deadline = Instant::now() + Duration::from_secs(60);
    let kinds = [("none", "ready"), ("ready", "up"), ("up", "lost")];
    loop {
        let log = keeper.process.log();
        let settled = kinds.iter().all(|(from, to)| {
            let counted = transitions(&keeper, from, to);
            counted >= PROXIES
                && one_by_one(&log, from, to) + summarised(&log, &format!("{from} -> {to}"))
                    == counted
        });
        if settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the log does not add up to the metrics: {:?}\n{}",
            kinds
                .iter()
                .map(|(f, t)| (
                    transitions(&keeper, f, t),
                    one_by_one(&log, f, t),
                    summarised(&log, &format!("{f} -> {t}"))
                ))
                .collect::<Vec<_>>(),
            log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = keeper.process.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("status changed cluster=mass"))
        .count();
    // At most 20 a kind per 10-second window, and the run spans a few windows at most.
    assert!(
        lines <= 5 * 3 * 20,
        "{lines} status lines for {} changes",
        PROXIES * 3
    );
    for (from, to) in kinds {
        assert!(
            summarised(&log, &format!("{from} -> {to}")) > 0,
            "no summary of {from} -> {to}"
        );
    }
}
