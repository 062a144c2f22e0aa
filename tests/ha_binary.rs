//! Highly available keepers on a real etcd, through the real binaries: three keepers and
//! five proxies; the leader SIGKILLed, then another SIGSTOPped past its lease. A standby
//! takes over within about the lease's time-to-live, nobody is deleted, marked `lost` or
//! restarted by the failover, and a paused leader that wakes up acts on nothing.

#![cfg(feature = "etcd")]

mod etcd;
mod procs;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use etcd::Etcd;
use nix::sys::signal::Signal;
use procs::{BIN, CLUSTER, Keeper, PATIENCE, Process, fresh_dir, line};
use serde_json::Value;

const PROXIES: [&str; 5] = [
    "10.25.0.71:3000",
    "10.25.0.72:3000",
    "10.25.0.73:3000",
    "10.25.0.74:3000",
    "10.25.0.75:3000",
];

/// Each test runs several keepers, an etcd and up to five proxies, on short timers: one at
/// a time, so that they do not starve each other's processes on a small machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A lease of 2 s: failovers within a few seconds.
const LEASE_TTL: &str = "2s";

fn get(keeper: &Keeper, path: &str) -> Option<Value> {
    keeper.get_json(path)
}

/// `GET /metrics`, as text.
fn metrics(keeper: &Keeper) -> String {
    ureq::get(format!("{}/metrics", keeper.http))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default()
}

fn role(keeper: &Keeper) -> Option<String> {
    get(keeper, "/v1/store").and_then(|v| v["role"].as_str().map(str::to_owned))
}

fn term(keeper: &Keeper) -> u64 {
    get(keeper, "/v1/store")
        .and_then(|v| v["leader"]["term"].as_u64())
        .unwrap_or(0)
}

/// Proxies `identities`, each knowing every keeper of `keepers` alive.
fn proxies_of(keepers: &[Option<Keeper>], identities: &[&str]) -> Vec<Process> {
    let list = keepers
        .iter()
        .flatten()
        .map(|k| k.udp.clone())
        .collect::<Vec<_>>()
        .join(",");
    identities.iter().map(|p| proxy(&list, p)).collect()
}

/// Keepers of the etcd at `endpoint`, named `ids`.
fn keepers_of(endpoint: &str, ids: &[&str]) -> Vec<Option<Keeper>> {
    ids.iter().map(|id| Some(keeper(endpoint, id))).collect()
}

/// Asserts that a keeper's `log` shows no proxy lost, deleted or restarted (by `what`).
fn unhurt(log: &str, what: &str) {
    for word in ["restart sent", "to=lost", "to=\"lost\"", "delete_timeout"] {
        assert!(!log.contains(word), "{what} hurt a proxy ({word}):\n{log}");
    }
}

/// A keeper of the etcd at `endpoint`, named `id`.
fn keeper(endpoint: &str, id: &str) -> Keeper {
    keeper_with(endpoint, id, LEASE_TTL)
}

/// A keeper of the etcd at `endpoint`, named `id`, with a lease of `ttl`.
fn keeper_with(endpoint: &str, id: &str, ttl: &str) -> Keeper {
    Keeper::start_with(
        &fresh_dir("ha-unused"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--store",
            "etcd",
            "--etcd-endpoints",
            endpoint,
            "--lease-ttl",
            ttl,
            "--keeper-id",
            id,
        ],
    )
}

/// A keeper of the etcd at `endpoint`, named `id`, on the UDP and HTTP addresses given
/// (those of a keeper that ran before: its proxies know them).
fn keeper_on(endpoint: &str, id: &str, udp: &str, http: &str) -> Keeper {
    let http = http.trim_start_matches("http://");
    Keeper::start_with(
        &fresh_dir("ha-unused"),
        udp,
        http,
        &[
            "--store",
            "etcd",
            "--etcd-endpoints",
            endpoint,
            "--lease-ttl",
            LEASE_TTL,
            "--keeper-id",
            id,
        ],
    )
}

/// The index of the one keeper (of those alive) that leads, once exactly one does.
fn leader(keepers: &[Option<Keeper>]) -> usize {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let leading: Vec<usize> = keepers
            .iter()
            .enumerate()
            .filter_map(|(i, k)| {
                let k = k.as_ref()?;
                (role(k).as_deref() == Some("leader")).then_some(i)
            })
            .collect();
        if leading.len() == 1 {
            return leading[0];
        }
        assert!(leading.len() <= 1, "two keepers lead at once: {leading:?}");
        assert!(Instant::now() < deadline, "no keeper leads");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn proxy(keepers: &str, identity: &str) -> Process {
    procs::proxy_of(keepers, CLUSTER, identity, &[])
}

/// The seed's lines, as etcdctl prints the status keys.
fn etcd_lines(etcd: &Etcd) -> Vec<String> {
    let out = etcd.etcdctl(&[
        "get",
        "--prefix",
        &format!("/zerodb/proxy/{CLUSTER}/status/"),
    ]);
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    lines
        .chunks(2)
        .map(|kv| format!("{}->{}", kv[0], kv.get(1).copied().unwrap_or("")))
        .collect()
}

fn wait_etcd(etcd: &Etcd, want: &[String]) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let seen = etcd_lines(etcd);
        if seen == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "etcd shows {seen:?}, not {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// When `keeper` last heard `proxy`.
fn last_heard(keeper: &Keeper, proxy: &str) -> Option<SystemTime> {
    let record = get(keeper, &format!("/v1/clusters/{CLUSTER}/proxies/{proxy}"))?;
    humantime::parse_rfc3339(record["last_heartbeat"].as_str()?).ok()
}

fn no_restart(proxies: &[Process]) {
    for p in proxies {
        assert!(
            !p.log().contains("asked for a restart"),
            "a failover restarted a proxy:\n{}",
            p.log()
        );
    }
}

/// `status --watch -o keys` against one keeper, its lines collected.
struct Watch {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watch {
    fn start(keeper: &Keeper) -> Watch {
        let mut child = Command::new(BIN)
            .args(["status", "--watch", "-o", "keys", "--http", &keeper.http])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(l);
            }
        });
        Watch { child, lines }
    }

    fn wait(&self, want: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self
            .lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|l| l == want)
        {
            assert!(
                Instant::now() < deadline,
                "the watch printed no {want:?}: {:?}",
                self.lines.lock().unwrap_or_else(|e| e.into_inner())
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_leader_killed_is_replaced_within_about_its_lease_and_the_fleet_notices_nothing() {
    let _alone = alone();
    let etcd = Etcd::start("ha-kill");
    let endpoint = etcd.endpoint();
    let mut keepers = keepers_of(&endpoint, &["k1", "k2", "k3"]);
    let first = leader(&keepers);
    let proxies = proxies_of(&keepers, &PROXIES);
    let all_up: Vec<String> = PROXIES.iter().map(|p| line(p, "up")).collect();
    let lead = keepers[first].as_ref().expect("alive");
    lead.wait_keys(&PROXIES.map(|p| (p, "up")));
    // The seed's listing, in etcd, as etcdctl prints it.
    wait_etcd(&etcd, &all_up);
    // Standbys serve the same listing, from the committed state.
    for (i, k) in keepers.iter().enumerate() {
        let k = k.as_ref().expect("alive");
        if i != first {
            assert_eq!(role(k).as_deref(), Some("standby"));
            k.wait_keys(&PROXIES.map(|p| (p, "up")));
            let text = metrics(k);
            assert!(text.contains("zerokeeper_leader 0"), "{text}");
            assert!(text.contains("zerokeeper_etcd_reachable 1"), "{text}");
            let (code, out, err) = k.cli(&["status"]);
            assert_eq!(code, 0, "{err}");
            let lead_id = ["k1", "k2", "k3"][first];
            assert!(
                out.starts_with(&format!(
                    "keeper: standby; leader {lead_id} ({})",
                    lead.http
                )),
                "status names the leader: {out}"
            );
            let (code, _, err) = k.push_config("pool = 1\n");
            assert_eq!(code, 9, "a standby refuses changes as not-leader: {err}");
            assert!(err.contains(&lead.http), "it names the leader: {err}");
        }
    }
    // Every standby's answers say what it is, and a watch on one follows the fleet.
    let standby = keepers
        .iter()
        .enumerate()
        .find(|(i, _)| *i != first)
        .and_then(|(_, k)| k.as_ref())
        .expect("a standby");
    let answer = ureq::get(format!("{}/v1/proxies", standby.http))
        .call()
        .expect("a standby answers reads");
    assert_eq!(
        answer
            .headers()
            .get("zerokeeper-role")
            .and_then(|v| v.to_str().ok()),
        Some("standby")
    );
    assert_eq!(
        answer
            .headers()
            .get("zerokeeper-leader")
            .and_then(|v| v.to_str().ok()),
        Some(lead.http.as_str())
    );
    let watch = Watch::start(standby);
    watch.wait(&line(PROXIES[0], "up"));
    let text = metrics(lead);
    assert!(text.contains("zerokeeper_leader 1"), "{text}");
    assert!(text.contains("zerokeeper_lease_renewals_total"), "{text}");
    let old_term = term(lead);

    // SIGKILL the leader: a standby leads within about the lease.
    let killed = Instant::now();
    let failed_over = SystemTime::now();
    if let Some(k) = keepers[first].take() {
        k.process.signal(Signal::SIGKILL);
    }
    let second = leader(&keepers);
    let took = killed.elapsed();
    eprintln!("failover: a standby led {took:?} after the leader was killed (lease {LEASE_TTL})");
    let lead = keepers[second].as_ref().expect("alive");
    assert!(term(lead) > old_term, "a new term");
    // What the proxies' searches cost the standby that was elected: the datagrams it
    // drained while a standby (at the proxies' start, and while they searched).
    let drained = lead
        .process
        .wait_log(&["datagrams dropped while a standby"]);
    eprintln!("search cost: {drained}");
    // Every proxy finds the new leader by itself, and stays up.
    let deadline = Instant::now() + PATIENCE;
    for p in PROXIES {
        while last_heard(lead, p).is_none_or(|at| at <= failed_over) {
            assert!(
                Instant::now() < deadline,
                "{p} never reached the new leader"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    lead.wait_keys(&PROXIES.map(|p| (p, "up")));
    let log = lead.process.log();
    unhurt(&log, "the failover");
    no_restart(&proxies);
    wait_etcd(&etcd, &all_up);

    // The new leader acts: a proxy killed is lost; a pushed config reaches the others.
    let mut proxies = proxies;
    let dead = proxies.remove(0);
    dead.signal(Signal::SIGKILL);
    let mut want: Vec<(&str, &str)> = PROXIES.iter().map(|p| (*p, "up")).collect();
    want[0].1 = "lost";
    lead.wait_keys(&want);
    // The watch opened on a standby before the failover follows the new leader's changes.
    watch.wait(&format!("PUT {}", line(PROXIES[0], "lost")));
    // Out of the gate's way, then a push through the new leader.
    let (code, _, err) = lead.cli(&["remove", "--cluster", CLUSTER, "--addr", PROXIES[0]]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = lead.push_config("pool = 7\n");
    assert_eq!(code, 0, "{out}{err}");
    let version = get(lead, &format!("/v1/clusters/{CLUSTER}/config"))
        .and_then(|v| v["version"].as_u64())
        .expect("a config version");
    let deadline = Instant::now() + PATIENCE;
    for p in &PROXIES[1..] {
        loop {
            let running = get(lead, &format!("/v1/clusters/{CLUSTER}/proxies/{p}"))
                .and_then(|v| v["config_version"].as_u64());
            if running == Some(version) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{p} runs {running:?}, not {version}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    no_restart(&proxies);
    // The standby that is left reads the history and the audit record as the leader
    // committed them (from etcd), the callers included.
    let standby = keepers
        .iter()
        .enumerate()
        .find(|(i, k)| *i != second && k.is_some())
        .and_then(|(_, k)| k.as_ref())
        .expect("a standby");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (code, out, err) = standby.cli(&["config", "get", "--cluster", CLUSTER]);
        if (code, out.as_str()) == (0, "pool = 7\n") {
            break;
        }
        assert!(Instant::now() < deadline, "{code} {out}{err}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, out, err) = standby.cli(&["audit", "--cluster", CLUSTER, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let audit: Value = serde_json::from_str(&out).expect("json");
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions.last(), Some(&"push_config"), "{out}");
    assert!(actions.contains(&"remove"), "{out}");
}

#[test]
fn a_leader_paused_past_its_lease_wakes_up_to_act_on_nothing_and_exits_75() {
    let _alone = alone();
    let etcd = Etcd::start("ha-pause");
    let endpoint = etcd.endpoint();
    let mut keepers = keepers_of(&endpoint, &["k1", "k2", "k3"]);
    let first = leader(&keepers);
    let proxies = proxies_of(&keepers, &PROXIES[..3]);
    let want: Vec<(&str, &str)> = PROXIES[..3].iter().map(|p| (*p, "up")).collect();
    keepers[first].as_ref().expect("alive").wait_keys(&want);
    let before = get(keepers[first].as_ref().expect("alive"), "/v1/store").expect("a store");

    // Paused past its lease (2 s): a standby takes over meanwhile.
    let mut paused = keepers[first].take().expect("alive");
    paused.process.signal(Signal::SIGSTOP);
    let second = leader(&keepers);
    let lead = keepers[second].as_ref().expect("alive");
    lead.wait_keys(&want);
    paused.process.signal(Signal::SIGCONT);
    // It wakes up, finds its lease could have expired, and stops without acting.
    let code = paused.process.wait_exit();
    let log = paused.process.log();
    assert_eq!(code, 75, "{log}");
    assert!(log.contains("lease could have expired"), "{log}");
    let woke = log
        .rsplit_once("elected leader")
        .map(|(_, after)| after.to_owned())
        .unwrap_or_default();
    assert!(!woke.contains("restart sent"), "{log}");
    no_restart(&proxies);
    // Its term is over: the new leader's store moved on, and the fleet is intact.
    let after = get(lead, "/v1/store").expect("a store");
    assert!(after["leader"]["term"].as_u64() > before["leader"]["term"].as_u64());
    lead.wait_keys(&want);
    wait_etcd(
        &etcd,
        &want.iter().map(|(p, s)| line(p, s)).collect::<Vec<_>>(),
    );
}

#[test]
fn an_etcd_restart_loses_nothing_and_a_keeper_leads_again() {
    let _alone = alone();
    let mut etcd = Etcd::start("ha-etcd-restart");
    let endpoint = etcd.endpoint();
    let mut keepers = keepers_of(&endpoint, &["k1", "k2"]);
    let first = leader(&keepers);
    let proxies = proxies_of(&keepers, &PROXIES[..2]);
    let want: Vec<(&str, &str)> = PROXIES[..2].iter().map(|p| (*p, "up")).collect();
    let lead = keepers[first].as_ref().expect("alive");
    lead.wait_keys(&want);
    let (code, out, err) = lead.push_config("pool = 3\n");
    assert_eq!(code, 0, "{out}{err}");
    let version = get(lead, &format!("/v1/clusters/{CLUSTER}/config"))
        .and_then(|v| v["version"].as_u64())
        .expect("a version");
    // A keeper on etcd makes no snapshot of its own: etcd's backups are etcdctl's.
    let file = procs::fresh_dir("ha-snapshot").join("backup.snapshot");
    let (code, out, err) = lead.cli(&["snapshot", "save", file.to_str().expect("utf-8")]);
    assert_eq!((code, out.as_str()), (5, ""), "{err}");
    assert!(err.contains("etcdctl snapshot save"), "{err}");
    assert!(!file.exists() && !file.with_extension("snapshot.part").exists());

    etcd.restart();
    // Whoever leads once etcd is back (a leader that lost its lease exits 75; the test
    // plays its supervisor and starts it again), the state is all there.
    let deadline = Instant::now() + PATIENCE;
    let lead = loop {
        for slot in keepers.iter_mut() {
            if let Some(k) = slot
                && k.process.child.try_wait().expect("waitable").is_some()
            {
                *slot = Some(keeper(&endpoint, "k-again"));
            }
        }
        if let Some(k) = keepers
            .iter()
            .flatten()
            .find(|k| role(k).as_deref() == Some("leader"))
        {
            break k;
        }
        assert!(
            Instant::now() < deadline,
            "no keeper leads after etcd restarted"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    lead.wait_keys(&want);
    let again =
        get(lead, &format!("/v1/clusters/{CLUSTER}/config")).and_then(|v| v["version"].as_u64());
    assert_eq!(again, Some(version), "the pushed config survived");
    no_restart(&proxies);
}

/// The gate of the test cluster, as the keeper says: `open` or `closed`.
fn gate(keeper: &Keeper) -> String {
    get(keeper, &format!("/v1/clusters/{CLUSTER}/gate"))
        .and_then(|v| v["open"].as_bool())
        .map_or("none", |open| if open { "open" } else { "closed" })
        .to_owned()
}

#[test]
fn the_seed_scenario_steps_one_to_seven_show_the_seeds_lines_in_etcd_at_every_step() {
    let _alone = alone();
    let etcd = Etcd::start("ha-seed");
    let keeper = keeper(&etcd.endpoint(), "k1");
    let keepers = [Some(keeper)];
    let keeper = keepers[leader(&keepers)].as_ref().expect("alive");
    let [p11, p12, p13, p14] = [
        "10.25.0.11:3000",
        "10.25.0.12:3000",
        "10.25.0.13:3000",
        "10.25.0.14:3000",
    ];
    let step = |n: u32, want: &[(&str, &str)], gate_: &str| {
        let lines: Vec<String> = want.iter().map(|(p, s)| line(p, s)).collect();
        keeper.wait_keys(want);
        wait_etcd(&etcd, &lines);
        assert_eq!(gate(keeper), gate_, "step {n}");
    };
    // 1: nothing has started.
    assert!(etcd_lines(&etcd).is_empty(), "step 1");
    // 2 and 3: three proxies register (ready), pull their config and go up.
    let _a = keeper.proxy(p11, &["--init-delay", "1500ms"]);
    let _b = keeper.proxy(p12, &["--init-delay", "1500ms"]);
    let c = keeper.proxy(p13, &["--init-delay", "1500ms"]);
    step(
        2,
        &[(p11, "ready"), (p12, "ready"), (p13, "ready")],
        "closed",
    );
    step(3, &[(p11, "up"), (p12, "up"), (p13, "up")], "open");
    // 4: .13's network breaks (its process stops sending): lost.
    c.signal(Signal::SIGSTOP);
    step(4, &[(p11, "up"), (p12, "up"), (p13, "lost")], "closed");
    // 5: it heals: straight back to up.
    c.signal(Signal::SIGCONT);
    step(5, &[(p11, "up"), (p12, "up"), (p13, "up")], "open");
    // 6: .14 starts (ready), 7: and dies while starting: deleted after ready_timeout.
    let mut d = keeper.proxy(p14, &["--crash-on-start"]);
    step(
        6,
        &[(p11, "up"), (p12, "up"), (p13, "up"), (p14, "ready")],
        "closed",
    );
    assert_ne!(d.wait_exit(), 0);
    step(7, &[(p11, "up"), (p12, "up"), (p13, "up")], "open");
}

#[test]
fn a_leader_stopped_with_sigterm_resigns_and_exits_0_so_a_standby_leads_at_once() {
    let _alone = alone();
    let etcd = Etcd::start("ha-resign");
    let endpoint = etcd.endpoint();
    // A long lease: a standby that leads soon after the SIGTERM was handed the lead, it
    // did not wait for the lease to run out.
    let mut keepers: Vec<Option<Keeper>> = vec![
        Some(keeper_with(&endpoint, "k1", "30s")),
        Some(keeper_with(&endpoint, "k2", "30s")),
    ];
    let first = leader(&keepers);
    let proxies = proxies_of(&keepers, &PROXIES[..2]);
    let want: Vec<(&str, &str)> = PROXIES[..2].iter().map(|p| (*p, "up")).collect();
    keepers[first].as_ref().expect("alive").wait_keys(&want);
    let mut stopping = keepers[first].take().expect("alive");
    let asked = Instant::now();
    stopping.process.signal(Signal::SIGTERM);
    assert_eq!(
        stopping.process.wait_exit(),
        0,
        "{}",
        stopping.process.log()
    );
    assert!(stopping.process.log().contains("resigned the leadership"));
    let second = leader(&keepers);
    let took = asked.elapsed();
    eprintln!("handover: a standby led {took:?} after SIGTERM to the leader (lease 30s)");
    assert!(
        took < Duration::from_secs(20),
        "the standby waited for the lease: {took:?}"
    );
    keepers[second].as_ref().expect("alive").wait_keys(&want);
    no_restart(&proxies);
}

#[test]
fn while_etcd_is_down_past_the_lease_nobody_acts_and_nobody_is_hurt() {
    let _alone = alone();
    let mut etcd = Etcd::start("ha-etcd-down");
    let endpoint = etcd.endpoint();
    let mut keepers = keepers_of(&endpoint, &["k1", "k2"]);
    let first = leader(&keepers);
    let proxies = proxies_of(&keepers, &PROXIES[..3]);
    let want: Vec<(&str, &str)> = PROXIES[..3].iter().map(|p| (*p, "up")).collect();
    keepers[first].as_ref().expect("alive").wait_keys(&want);

    // etcd goes away: the leader cannot renew its lease, stops acting and exits 75.
    etcd.kill();
    let mut lost_leader = keepers[first].take().expect("alive");
    assert_eq!(
        lost_leader.process.wait_exit(),
        75,
        "{}",
        lost_leader.process.log()
    );
    let log = lost_leader.process.log();
    unhurt(&log, "an etcd outage");
    // Its supervisor (the test) starts it again; etcd comes back; a keeper leads, with
    // the fleet as it was.
    keepers[first] = Some(keeper(&endpoint, "k1-again"));
    etcd.launch();
    let second = leader(&keepers);
    let lead = keepers[second].as_ref().expect("alive");
    lead.wait_keys(&want);
    let log = lead.process.log();
    unhurt(&log, "an etcd outage");
    no_restart(&proxies);
}

#[test]
fn a_term_counter_restored_from_an_older_backup_is_caught_up_from_the_fleet() {
    let _alone = alone();
    let etcd = Etcd::start("ha-term-back");
    let endpoint = etcd.endpoint();
    let term_key = "/zerokeeper/zerodb/proxy/.zk/election/term";
    // The deployment has had 41 leaderships already.
    etcd.etcdctl(&["put", term_key, "41"]);
    let first = keeper(&endpoint, "k1");
    let (udp, http) = (first.udp.clone(), first.http.clone());
    let keepers = vec![Some(first)];
    assert_eq!(leader(&keepers), 0);
    let proxies = proxies_of(&keepers, &PROXIES[..3]);
    let want: Vec<(&str, &str)> = PROXIES[..3].iter().map(|p| (*p, "up")).collect();
    let first = keepers.into_iter().flatten().next().expect("alive");
    first.wait_keys(&want);
    assert_eq!(term(&first), 42);
    // The keeper stops, and etcd comes back from a backup taken before any election.
    let mut first = first;
    first.process.signal(Signal::SIGTERM);
    assert_eq!(first.process.wait_exit(), 0, "{}", first.process.log());
    etcd.etcdctl(&["put", term_key, "0"]);
    drop(first);

    // Elected under term 1, the keeper hears a fleet that obeys term 42: it acts on
    // nothing, raises the stored term, resigns and exits 75.
    let mut behind = keeper_on(&endpoint, "k1", &udp, &http);
    assert_eq!(behind.process.wait_exit(), 75, "{}", behind.process.log());
    let log = behind.process.log();
    assert!(log.contains("newer than this leader's 1"), "{log}");
    unhurt(&log, "a keeper behind the fleet's term");
    let stored: u64 = etcd
        .etcdctl(&["get", "--print-value-only", term_key])
        .trim()
        .parse()
        .expect("a decimal term");
    assert_eq!(stored, 42);
    drop(behind);

    // Started again (as its supervisor does), it leads under a term above every term
    // the fleet has obeyed, and the fleet follows it, unhurt.
    let again = keeper_on(&endpoint, "k1", &udp, &http);
    let keepers = vec![Some(again)];
    assert_eq!(leader(&keepers), 0);
    let again = keepers[0].as_ref().expect("alive");
    assert_eq!(term(again), 43);
    again.wait_keys(&want);
    unhurt(&again.process.log(), "the leader of term 43");
    no_restart(&proxies);
}
