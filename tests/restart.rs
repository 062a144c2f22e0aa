//! Keeper restarts through the real binary: its store in `--data-dir` keeps every
//! acknowledged change, and a restart (after a SIGKILL, or after a long stop) restarts
//! no proxy that kept heartbeating.

mod procs;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use procs::{CLUSTER, Keeper, PATIENCE, Process, fresh_dir, line, short_sha256};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

const PROXIES: [&str; 4] = [
    "10.25.0.11:3000",
    "10.25.0.12:3000",
    "10.25.0.13:3000",
    "10.25.0.14:3000",
];

fn get(keeper: &Keeper, path: &str) -> Option<Value> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build(),
    );
    let mut response = agent.get(format!("{}{path}", keeper.http)).call().ok()?;
    if response.status() != 200 {
        return None;
    }
    response.body_mut().read_json().ok()
}

/// The store's revision, as the running keeper reports it.
fn revision(keeper: &Keeper) -> u64 {
    get(keeper, "/v1/store")
        .and_then(|v| v["revision"].as_u64())
        .expect("the keeper reports its store")
}

fn config_version(keeper: &Keeper) -> u64 {
    get(keeper, &format!("/v1/clusters/{CLUSTER}/config"))
        .and_then(|v| v["version"].as_u64())
        .unwrap_or(0)
}

/// Waits until every proxy in `up` is listed `up` (others may be anything).
fn wait_up(keeper: &Keeper, up: &[&str]) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let keys = keeper.keys();
        if up.iter().all(|p| keys.contains(&line(p, "up"))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "waited for {up:?} up, saw {keys:?}\n{}",
            keeper.process.log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn no_restart(proxies: &[Process]) {
    for p in proxies {
        assert!(
            !p.log().contains("asked for a restart"),
            "a proxy was restarted:\n{}",
            p.log()
        );
    }
}

#[test]
fn a_keeper_killed_at_random_moments_keeps_every_acknowledged_change_and_restarts_nobody() {
    let mut rng = ChaCha8Rng::seed_from_u64(20_261_125);
    let dir = fresh_dir("kill");
    let mut keeper = Keeper::start_on(&dir, "127.0.0.1:0");
    let udp = keeper.udp.clone();
    let proxies: Vec<Process> = PROXIES.iter().map(|p| keeper.proxy(p, &[])).collect();
    wait_up(&keeper, &PROXIES);
    let config = dir.join("proxy.toml");
    let mut acknowledged_version = 1;
    let mut last_revision = revision(&keeper);
    let mut restarts_logged = 0;
    for round in 0..25 {
        // Something changes: a config push, or a proxy that stops answering for a while
        // (lost, not long enough to be deleted), or both.
        if rng.random_bool(0.6) {
            std::fs::write(&config, format!("round = {round}\n")).expect("write config");
            let (code, out, err) = keeper.cli(&[
                "push-config",
                "--cluster",
                CLUSTER,
                "--file",
                config.to_str().expect("utf-8"),
            ]);
            match code {
                0 => {
                    let version: u64 = out
                        .split_whitespace()
                        .nth(3)
                        .and_then(|v| v.parse().ok())
                        .expect("a version");
                    acknowledged_version = version;
                }
                3 => {} // refused: a proxy is not up, which is fine
                _ => panic!("push-config failed ({code}): {err}"),
            }
        }
        let stopped = if rng.random_bool(0.5) {
            let p = &proxies[rng.random_range(0..proxies.len())];
            p.signal(Signal::SIGSTOP);
            Some(p)
        } else {
            None
        };
        std::thread::sleep(Duration::from_millis(rng.random_range(20..900)));
        let seen_revision = revision(&keeper);
        assert!(seen_revision >= last_revision);
        last_revision = seen_revision;
        // Killed at a random moment: maybe mid-transition, maybe mid-commit.
        keeper.process.signal(Signal::SIGKILL);
        let _ = keeper.process.wait_exit();
        restarts_logged += keeper.process.log().matches("restart sent").count();
        if let Some(p) = stopped {
            p.signal(Signal::SIGCONT);
        }
        keeper = Keeper::start_on(&dir, &udp);
        // Nothing went back past what was durable, and every acknowledged push is there.
        let revision_now = revision(&keeper);
        assert!(
            revision_now >= last_revision,
            "round {round}: revision {revision_now} < {last_revision}"
        );
        last_revision = revision_now;
        assert!(
            config_version(&keeper) >= acknowledged_version,
            "round {round}: an acknowledged config was lost"
        );
        // Every proxy kept heartbeating: all up again, none restarted.
        wait_up(&keeper, &PROXIES);
    }
    restarts_logged += keeper.process.log().matches("restart sent").count();
    assert_eq!(restarts_logged, 0, "the keeper sent Restart");
    no_restart(&proxies);
}

#[test]
fn a_keeper_stopped_longer_than_delete_after_deletes_and_restarts_nobody() {
    let dir = fresh_dir("long-stop");
    let mut keeper = Keeper::start_on(&dir, "127.0.0.1:0");
    let udp = keeper.udp.clone();
    let proxies: Vec<Process> = PROXIES[..3].iter().map(|p| keeper.proxy(p, &[])).collect();
    wait_up(&keeper, &PROXIES[..3]);
    keeper.process.signal(Signal::SIGTERM);
    assert_eq!(keeper.process.wait_exit(), 0);
    // Down for twice delete_after (2.5 s) while the proxies heartbeat into the void.
    std::thread::sleep(Duration::from_secs(5));
    let keeper = Keeper::start_on(&dir, &udp);
    let listed: Vec<String> = keeper.keys();
    assert_eq!(
        listed.len(),
        3,
        "every proxy is still registered at once: {listed:?}"
    );
    wait_up(&keeper, &PROXIES[..3]);
    // And stays so, through another delete_after.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        keeper.keys(),
        PROXIES[..3]
            .iter()
            .map(|p| line(p, "up"))
            .collect::<Vec<_>>()
    );
    let log = keeper.process.log();
    assert!(
        !log.contains("restart sent") && !log.contains("delete_timeout"),
        "{log}"
    );
    no_restart(&proxies);
}

#[test]
fn serve_refuses_a_data_directory_held_by_another_keeper() {
    let dir = fresh_dir("held");
    let _first = Keeper::start_on(&dir, "127.0.0.1:0");
    let mut second = Process::spawn(&[
        "serve",
        "--udp",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--key-file",
        procs::key_file().to_str().expect("utf-8"),
        "--data-dir",
        dir.to_str().expect("utf-8"),
    ]);
    assert_ne!(second.wait_exit(), 0);
    assert!(
        second.log().contains("in use by another keeper"),
        "{}",
        second.log()
    );
}

#[test]
fn serve_refuses_a_data_directory_that_is_not_its_store_and_leaves_it_alone() {
    let dir = fresh_dir("foreign");
    let file = dir.join("zerokeeper.redb");
    std::fs::write(&file, b"not a database, and precious").expect("write");
    let mut keeper = Process::spawn(&[
        "serve",
        "--udp",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--key-file",
        procs::key_file().to_str().expect("utf-8"),
        "--data-dir",
        dir.to_str().expect("utf-8"),
    ]);
    assert_ne!(keeper.wait_exit(), 0);
    assert!(
        keeper.log().contains("cannot use the data directory"),
        "{}",
        keeper.log()
    );
    assert_eq!(
        std::fs::read(&file).expect("still there"),
        b"not a database, and precious"
    );
}

#[test]
fn after_a_restore_from_an_older_backup_the_next_push_is_applied_by_every_proxy() {
    let dir = fresh_dir("restore");
    let mut keeper = Keeper::start_on(&dir, "127.0.0.1:0");
    let udp = keeper.udp.clone();
    let fleet = &PROXIES[..3];
    let proxies: Vec<Process> = fleet.iter().map(|p| keeper.proxy(p, &[])).collect();
    wait_up(&keeper, fleet);
    let push = |keeper: &Keeper, text: &str| {
        let (code, out, err) = keeper.push_config(text);
        assert_eq!(code, 0, "{out}{err}");
        let applied = format!("sha256 {}", short_sha256(text.as_bytes()));
        for p in &proxies {
            p.wait_log(&["config version applied", &applied]);
        }
    };
    push(&keeper, "pool = 2\n");
    // A backup of the data directory, taken while the keeper is stopped.
    keeper.process.signal(Signal::SIGTERM);
    assert_eq!(keeper.process.wait_exit(), 0);
    let file = dir.join(zerokeeper::store::redb::FILE_NAME);
    let backup = fresh_dir("backup").join("zerokeeper.redb");
    std::fs::copy(&file, &backup).expect("back up the store");
    keeper = Keeper::start_on(&dir, &udp);
    wait_up(&keeper, fleet);
    push(&keeper, "pool = 3\n");
    push(&keeper, "pool = 4\n");
    assert_eq!(config_version(&keeper), 4);
    // Restored: the keeper is back at version 2 while every proxy runs version 4.
    keeper.process.signal(Signal::SIGTERM);
    assert_eq!(keeper.process.wait_exit(), 0);
    std::fs::copy(&backup, &file).expect("restore the store");
    keeper = Keeper::start_on(&dir, &udp);
    assert_eq!(config_version(&keeper), 2);
    wait_up(&keeper, fleet);
    // The urgent fix is version 3, a number below the one the proxies run: they run it
    // all the same, as a config is named by the keeper's id of it, not its number.
    push(&keeper, "pool = 3 # the urgent fix\n");
    assert_eq!(config_version(&keeper), 3);
}
