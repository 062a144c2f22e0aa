//! History as continuous as etcd's revisions, through the real binary: a watcher resumes
//! across keeper restarts from the revision it saw, the listing's times survive a
//! restart, an old data directory opens and migrates, and a whole cluster paused past
//! `delete_after` and healed restarts nobody.

mod procs;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use procs::{BIN, CLUSTER, Keeper, PATIENCE, Process, fresh_dir, line};
use serde_json::Value;
use zerokeeper::cli::client::{Client, ClientError, Exit};

const PROXIES: [&str; 3] = ["10.25.0.11:3000", "10.25.0.12:3000", "10.25.0.13:3000"];

fn get(keeper: &Keeper, path: &str) -> Value {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build(),
    );
    agent
        .get(format!("{}{path}", keeper.http))
        .call()
        .expect("answered")
        .body_mut()
        .read_json()
        .expect("JSON")
}

/// (generation, revision) of the keeper's store.
fn position(keeper: &Keeper) -> (u64, u64) {
    let store = get(keeper, "/v1/store");
    (
        store["generation"].as_u64().expect("a generation"),
        store["revision"].as_u64().expect("a revision"),
    )
}

fn push(keeper: &Keeper, body: &str) {
    let (code, _, err) = keeper.push_config(body);
    assert_eq!(code, 0, "{err}");
}

/// Every revision the watch gives after `after` until it has given `until`.
fn watched(keeper: &Keeper, after: &str, until: u64) -> Vec<u64> {
    let client = Client::new(&keeper.http);
    let mut stream = client.watch(None, Some(after)).expect("the watch opens");
    let mut revisions = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while revisions.last().is_none_or(|r| *r < until) {
        assert!(Instant::now() < deadline, "watched only {revisions:?}");
        let event = stream
            .next_event()
            .expect("the stream goes on")
            .expect("not ended");
        let data: Value = serde_json::from_str(&event.data).expect("JSON");
        revisions.push(data["revision"].as_u64().expect("a revision"));
    }
    revisions
}

#[test]
fn a_watcher_resumes_across_a_keeper_restart_with_exactly_the_changes_after_its_revision() {
    let dir = fresh_dir("watch-restart");
    let mut keeper = Keeper::start_on(&dir, "127.0.0.1:0");
    let udp = keeper.udp.clone();
    let mut proxies: Vec<Process> = PROXIES.iter().map(|p| keeper.proxy(p, &[])).collect();
    keeper.wait_keys(&PROXIES.map(|p| (p, "up")));
    let (generation, seen) = position(&keeper);
    // Changes the watcher misses: a push, a proxy lost, then the keeper restarts.
    push(&keeper, "pool = 1\n");
    proxies[2].signal(Signal::SIGKILL);
    proxies[2].wait_exit();
    keeper.wait_keys(&[(PROXIES[0], "up"), (PROXIES[1], "up"), (PROXIES[2], "lost")]);
    keeper.process.signal(Signal::SIGTERM);
    assert_eq!(keeper.process.wait_exit(), 0);
    let keeper = Keeper::start_on(&dir, &udp);
    // And one after it: the operator takes the dead proxy out.
    let (code, _, err) = keeper.cli(&["remove", "--cluster", CLUSTER, "--addr", PROXIES[2]]);
    assert_eq!(code, 0, "{err}");
    let (again, current) = position(&keeper);
    assert_eq!(again, generation, "a restart keeps the generation");
    let revisions = watched(&keeper, &format!("{generation}-{seen}"), current);
    assert_eq!(
        revisions,
        (seen + 1..=current).collect::<Vec<_>>(),
        "every change after the one seen, none twice"
    );
    // A revision newer than the current one, or of another generation, is 410.
    let client = Client::new(&keeper.http);
    for position in [
        format!("{generation}-{}", current + 10),
        format!("{}-{seen}", generation + 1),
    ] {
        match client.watch(None, Some(&position)) {
            Err(e @ ClientError::Problem { .. }) => assert_eq!(e.exit(), Exit::Gone, "{e}"),
            Err(other) => panic!("{position}: {other}"),
            Ok(_) => panic!("{position} was accepted"),
        }
    }
}

#[test]
fn status_watch_survives_a_keeper_restart_and_prints_every_change() {
    let dir = fresh_dir("watch-cli");
    let mut keeper = Keeper::start_on(&dir, "127.0.0.1:0");
    let udp = keeper.udp.clone();
    let mut proxies: Vec<Process> = PROXIES[..2].iter().map(|p| keeper.proxy(p, &[])).collect();
    keeper.wait_keys(&[(PROXIES[0], "up"), (PROXIES[1], "up")]);
    let mut watch = Command::new(BIN)
        .args(["status", "--watch", "-o", "keys", "--http", &keeper.http])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let out = Arc::new(Mutex::new(Vec::<String>::new()));
    let err = Arc::new(Mutex::new(String::new()));
    let (stdout, stderr) = (
        watch.stdout.take().expect("piped"),
        watch.stderr.take().expect("piped"),
    );
    let sink = out.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap_or_else(|e| e.into_inner()).push(l);
        }
    });
    let sink = err.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
            s.push_str(&l);
            s.push('\n');
        }
    });
    let wait_out = |want: &str| {
        let deadline = Instant::now() + PATIENCE;
        while !out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|l| l == want)
        {
            assert!(
                Instant::now() < deadline,
                "no {want:?} in {:?}\nstderr: {}",
                out.lock().unwrap_or_else(|e| e.into_inner()),
                err.lock().unwrap_or_else(|e| e.into_inner())
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    };
    // The listing first.
    wait_out(&line(PROXIES[0], "up"));
    keeper.process.signal(Signal::SIGTERM);
    assert_eq!(keeper.process.wait_exit(), 0);
    // While the keeper is down, a proxy dies; the restarted keeper marks it lost.
    proxies[1].signal(Signal::SIGKILL);
    proxies[1].wait_exit();
    let http = keeper.http.trim_start_matches("http://").to_owned();
    let keeper = Keeper::start_at(&dir, &udp, &http);
    keeper.wait_keys(&[(PROXIES[0], "up"), (PROXIES[1], "lost")]);
    wait_out(&format!("PUT {}", line(PROXIES[1], "lost")));
    assert!(
        err.lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains("reconnecting"),
        "the watch said nothing of the lost connection"
    );
    let _ = watch.kill();
    let _ = watch.wait();
}

/// (proxy, status, since) of every listed proxy of `cluster`.
fn since_times(keeper: &Keeper, cluster: &str) -> Vec<(String, String, Value)> {
    let listing = get(keeper, &format!("/v1/clusters/{cluster}/proxies"));
    listing["proxies"]
        .as_array()
        .expect("proxies")
        .iter()
        .map(|p| {
            (
                p["proxy"].as_str().expect("proxy").to_owned(),
                p["status"].as_str().expect("status").to_owned(),
                p["since"].clone(),
            )
        })
        .collect()
}

#[test]
fn the_listings_since_times_survive_a_restart() {
    let dir = fresh_dir("since");
    let mut keeper = Keeper::start_on(&dir, "127.0.0.1:0");
    let udp = keeper.udp.clone();
    let mut proxies: Vec<Process> = PROXIES.iter().map(|p| keeper.proxy(p, &[])).collect();
    keeper.wait_keys(&PROXIES.map(|p| (p, "up")));
    proxies[2].signal(Signal::SIGKILL);
    proxies[2].wait_exit();
    keeper.wait_keys(&[(PROXIES[0], "up"), (PROXIES[1], "up"), (PROXIES[2], "lost")]);
    let before = since_times(&keeper, CLUSTER);
    assert!(
        before.iter().all(|(_, _, since)| since.is_string()),
        "{before:?}"
    );
    keeper.process.signal(Signal::SIGTERM);
    assert_eq!(keeper.process.wait_exit(), 0);
    let keeper = Keeper::start_on(&dir, &udp);
    assert_eq!(since_times(&keeper, CLUSTER), before);
    // The dead proxy's last heartbeat is the one the store recorded, not the boot time.
    let lost = get(
        &keeper,
        &format!("/v1/clusters/{CLUSTER}/proxies/{}", PROXIES[2]),
    );
    assert!(
        lost["last_heartbeat_age_ms"].as_u64().expect("known") >= 600,
        "{lost}"
    );
}

#[test]
fn a_data_directory_of_the_previous_release_opens_migrates_and_keeps_every_record() {
    let dir = fresh_dir("migrate");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/datadir-v1/zerokeeper.redb"
        ),
        dir.join("zerokeeper.redb"),
    )
    .expect("copy the fixture");
    let keeper = Keeper::start_on(&dir, "127.0.0.1:0");
    // The registry the fixture holds (tests/fixtures/README.md), every proxy with its
    // status and its since-time, and beta's config version 2.
    let alpha = since_times(&keeper, "alpha");
    let beta = since_times(&keeper, "beta");
    let t0 = "2026-01-01T00:00:0";
    let listed: Vec<(String, String, String)> = alpha
        .iter()
        .chain(&beta)
        .map(|(p, s, since)| {
            (
                p.clone(),
                s.clone(),
                since.as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("10.0.0.1:3307".into(), "up".into(), format!("{t0}7.000Z")),
            ("10.0.0.2:3307".into(), "up".into(), format!("{t0}2.000Z")),
            ("10.0.0.3:3307".into(), "lost".into(), format!("{t0}3.000Z")),
            ("10.1.0.1:3307".into(), "up".into(), format!("{t0}4.000Z")),
            ("10.1.0.3:3307".into(), "lost".into(), format!("{t0}9.000Z")),
        ]
    );
    let config = get(&keeper, "/v1/clusters/beta/config");
    assert_eq!(config["version"], 2, "{config}");
    assert_eq!(config["datasources"]["hg0"], "standby", "{config}");
    assert!(
        keeper.process.log().contains("migrat"),
        "{}",
        keeper.process.log()
    );
}

#[test]
fn a_whole_cluster_paused_for_twice_delete_after_and_healed_restarts_nobody() {
    let keeper = Keeper::start();
    let all = [
        "10.25.0.11:3000",
        "10.25.0.12:3000",
        "10.25.0.13:3000",
        "10.25.0.14:3000",
        "10.25.0.15:3000",
    ];
    let proxies: Vec<Process> = all.iter().map(|p| keeper.proxy(p, &[])).collect();
    keeper.wait_keys(&all.map(|p| (p, "up")));
    for p in &proxies {
        p.signal(Signal::SIGSTOP);
    }
    keeper.wait_keys(&all.map(|p| (p, "lost")));
    // Twice delete_after (2.5 s) with the whole cluster silent: mass-loss protection
    // keeps them; then the cluster heals at once.
    std::thread::sleep(Duration::from_secs(5));
    for p in &proxies {
        p.signal(Signal::SIGCONT);
    }
    keeper.wait_keys(&all.map(|p| (p, "up")));
    // A delete_after later, still nobody deleted or restarted.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        keeper.keys(),
        all.iter().map(|p| line(p, "up")).collect::<Vec<_>>()
    );
    let log = keeper.process.log();
    assert!(
        !log.contains("restart sent") && !log.contains("delete_timeout"),
        "{log}"
    );
    for p in &proxies {
        assert!(!p.log().contains("asked for a restart"), "{}", p.log());
    }
}

#[test]
fn a_keeper_started_on_an_empty_data_dir_in_front_of_twenty_live_proxies_adopts_all_and_restarts_none()
 {
    let keeper = Keeper::start();
    let udp = keeper.udp.clone();
    let names: Vec<String> = (11..31).map(|i| format!("10.25.0.{i}:3000")).collect();
    let proxies: Vec<Process> = names.iter().map(|p| keeper.proxy(p, &[])).collect();
    let want: Vec<(&str, &str)> = names.iter().map(|p| (p.as_str(), "up")).collect();
    keeper.wait_keys(&want);
    // The keeper's disk is lost: a new keeper starts on an empty data dir, same port.
    drop(keeper);
    let fresh = Keeper::start_on(&fresh_dir("adopt"), &udp);
    fresh.wait_keys(&want);
    let log = fresh.process.log();
    assert!(!log.contains("restart sent"), "{log}");
    for p in &proxies {
        assert!(!p.log().contains("asked for a restart"), "{}", p.log());
    }
    assert!(log.contains("adopted"), "{log}");
    assert!(log.contains("are adopted as `up` for this long"), "{log}");
}
