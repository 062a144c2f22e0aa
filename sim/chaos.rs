//! Randomized fault schedules under turmoil, with invariants checked on every run.
//!
//! Each seed builds a random cluster and a random schedule of faults (see `plan.rs`),
//! runs it on simulated hosts with the production drivers, and checks the invariants of
//! `check.rs` against the keeper's event log and every heartbeat that reached it.
//!
//! - `SIM_SEEDS=N` runs seeds 1..=N (default 200), spread over the machine's cores.
//! - `SIM_SEED=N` runs seed N alone and prints its plan.
//! - A failing seed prints the seed, its fault schedule, the violations and the command
//!   that reproduces it.

mod check;
mod plan;
mod support;

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use check::{Timers, Trace};
use plan::{Fault, Plan, Start, Way};
use serde_json::Value;
use support::{KeeperShared, Operator, ProxySlot, Request};
use zerokeeper::driver::proxy::{InitPolicy, ProxyCommand};
use zerokeeper::keeper::{BrokenRule, ChangeKind, KeeperConfig};

/// How long faults are injected.
const FAULT_PHASE: Duration = Duration::from_secs(12);
/// How long after the faults end every live proxy must be `up`.
const SETTLE: Duration = Duration::from_secs(3);
/// The simulated clock's resolution: coarse enough to make hundreds of seeds affordable,
/// fine against a 100 ms heartbeat interval.
const TICK: Duration = Duration::from_millis(10);

fn timers() -> Timers {
    Timers {
        interval: Duration::from_millis(100),
        lost_after: Duration::from_millis(500),
        ready_timeout: Duration::from_secs(2),
        delete_after: Duration::from_secs(3),
        tick: TICK,
        // The keeper's defaults: a round of lost_after + 2 intervals, a quarter a round.
        restart_round: Duration::from_millis(700),
        restart_allowance: |size| KeeperConfig::default().restart_allowance(size),
    }
}

/// The outcome of one seed: its violations (empty: it passed) and a digest of its log.
struct Run {
    plan: Plan,
    violations: Vec<String>,
    log_digest: String,
    /// How many `Leave`s the keeper sent.
    leaves: usize,
}

impl Run {
    fn report(&self) -> String {
        format!(
            "chaos seed {} failed:\n{}\n\n{}\n\nreproduce: SIM_SEED={} cargo test --release --test chaos",
            self.plan.seed,
            self.violations
                .iter()
                .map(|v| format!("  - {v}"))
                .collect::<Vec<_>>()
                .join("\n"),
            self.plan,
            self.plan.seed
        )
    }
}

fn run(seed: u64, broken: Option<BrokenRule>) -> Run {
    let timers = timers();
    let plan = Plan::generate(seed, FAULT_PHASE);
    let shared = Arc::new(KeeperShared {
        seed,
        broken,
        store: Some(zerokeeper::store::MemoryStore::new()),
        ..KeeperShared::default()
    });
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(std::time::UNIX_EPOCH + Duration::from_secs(support::EPOCH_SECS))
        .tick_duration(TICK)
        .simulation_duration(Duration::from_secs(3_600))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(40))
        // Bursts released from a hold must not overflow the simulated receive queues:
        // those drops would be turmoil's, not the keeper's.
        .udp_capacity(8_192)
        .build();
    let config = KeeperConfig {
        heartbeat_interval: timers.interval,
        lost_after: timers.lost_after,
        ready_timeout: timers.ready_timeout,
        delete_after: timers.delete_after,
        ..KeeperConfig::default()
    };
    assert_eq!(config.restart_round(), timers.restart_round);
    support::keeper_host(&mut sim, config, shared.clone());
    let operator = Rc::new(Operator::default());
    support::operator_client(&mut sim, operator.clone());
    let slots: Vec<Rc<ProxySlot>> = plan
        .proxies
        .iter()
        .map(|_| Rc::new(ProxySlot::default()))
        .collect();
    let mut registered = vec![false; plan.proxies.len()];
    let mut starts: Vec<Vec<Duration>> = vec![Vec::new(); plan.proxies.len()];

    let settled_at = plan.faults_end + SETTLE;
    let end =
        plan.faults_end + timers.ready_timeout.max(timers.delete_after) + Duration::from_secs(2);
    let mut next = 0;
    let mut settled = None;
    let mut failure = None;
    while sim.elapsed() < end {
        while next < plan.schedule.len() && plan.schedule[next].0 <= sim.elapsed() {
            let fault = plan.schedule[next].1.clone();
            next += 1;
            let now = sim.elapsed();
            apply(
                &mut sim,
                &plan,
                &fault,
                &slots,
                &mut registered,
                &operator,
                &shared,
                seed,
            );
            if let Fault::Start { proxy, .. } = fault {
                starts[proxy].push(now);
            }
        }
        if settled.is_none() && sim.elapsed() >= settled_at {
            settled = Some(listing(&mut sim, &operator));
        }
        if let Err(e) = sim.step() {
            failure = Some(format!(
                "the simulation failed (a host panicked or errored): {e}"
            ));
            break;
        }
    }
    let last = listing(&mut sim, &operator);
    let rollouts = rollout_violations(&mut sim, &operator, &plan, &slots, &last);
    // Quiesce before comparing counters: cut every proxy off and let what is in flight
    // land, so the keeper's count and the tap's are taken over the same datagrams.
    for (p, spec) in plan.proxies.iter().enumerate() {
        if registered[p] {
            sim.partition("keeper", spec.host.as_str());
        }
    }
    for _ in 0..10 {
        let _ = sim.step();
    }
    let counted = counters(&mut sim, &operator, &shared);
    let events = shared
        .events
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let arrivals = shared
        .arrivals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let boots = shared
        .boot_starts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let restored = shared
        .restored
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let settled = settled.unwrap_or_default();
    let trace = Trace {
        plan: &plan,
        timers,
        events: &events,
        arrivals: &arrivals,
        boots: &boots,
        starts: &starts,
        restored: &restored,
        settled: &settled,
        last: &last,
        counted,
    };
    if let Ok(who) = std::env::var("SIM_TRACE") {
        // Everything the keeper did and received about one identity, for debugging.
        for l in events
            .iter()
            .filter(|l| format!("{:?}", l.event).contains(&who))
        {
            println!("{:>10.3?} boot {} {:?}", l.at, l.boot, l.event);
        }
        for a in arrivals.iter().filter(|a| a.proxy == who) {
            println!(
                "{:>10.3?} boot {} arrived inc {} seq {} {:?} token {}/{}",
                a.at, a.boot, a.incarnation, a.seq, a.status, a.token_epoch, a.token_bucket
            );
        }
    }
    let mut violations: Vec<String> = failure.into_iter().collect();
    violations.extend(check::check(&trace));
    violations.extend(rollouts);
    let leaves = events
        .iter()
        .filter(|l| matches!(l.event.kind, ChangeKind::LeaveSent { .. }))
        .count();
    let log_digest = events
        .iter()
        .map(|l| format!("{:?} {} {:?}\n", l.at, l.boot, l.event))
        .collect();
    Run {
        plan,
        violations,
        log_digest,
        leaves,
    }
}

#[allow(clippy::too_many_arguments)]
fn apply(
    sim: &mut turmoil::Sim<'_>,
    plan: &Plan,
    fault: &Fault,
    slots: &[Rc<ProxySlot>],
    registered: &mut [bool],
    operator: &Operator,
    shared: &KeeperShared,
    seed: u64,
) {
    let host = |p: usize| plan.proxies[p].host.as_str();
    match fault {
        Fault::Start { proxy, start } => {
            let slot = &slots[*proxy];
            *slot.init.borrow_mut() = Some(match start {
                Start::Healthy(d) => InitPolicy::After(*d),
                Start::Fails(d) => InitPolicy::FailsAfter(*d),
            });
            slot.forget();
            if registered[*proxy] {
                sim.bounce(host(*proxy));
            } else {
                registered[*proxy] = true;
                let spec = &plan.proxies[*proxy];
                let cluster = &plan.clusters[spec.cluster];
                let slot = slot.clone();
                let proxy_seed = seed.wrapping_mul(1_000_003) ^ *proxy as u64;
                support::proxy_host(
                    sim,
                    &spec.host,
                    cluster,
                    &spec.identity,
                    timers().interval,
                    slot,
                    proxy_seed,
                );
            }
        }
        Fault::Crash { proxy } => {
            sim.crash(host(*proxy));
            slots[*proxy].forget();
        }
        Fault::Unregister { proxy } => {
            if let Some(control) = slots[*proxy].control.borrow().as_ref() {
                let _ = control.commands.try_send(ProxyCommand::Unregister);
            }
        }
        Fault::Partition { proxies, way } => {
            for &p in proxies {
                match way {
                    Way::Both => sim.partition("keeper", host(p)),
                    Way::ToKeeper => sim.partition_oneway(host(p), "keeper"),
                    Way::FromKeeper => sim.partition_oneway("keeper", host(p)),
                }
            }
        }
        Fault::Heal { proxies, way } => {
            for &p in proxies {
                match way {
                    Way::Both => sim.repair("keeper", host(p)),
                    Way::ToKeeper => sim.repair_oneway(host(p), "keeper"),
                    Way::FromKeeper => sim.repair_oneway("keeper", host(p)),
                }
            }
        }
        Fault::Hold { proxies } => {
            for &p in proxies {
                sim.hold("keeper", host(p));
            }
        }
        Fault::Release { proxies } => {
            for &p in proxies {
                sim.release("keeper", host(p));
            }
        }
        Fault::Lossy {
            proxy,
            loss,
            duplicate,
        } => slots[*proxy].faults.set(*loss, *duplicate),
        Fault::KeeperLossy { loss, duplicate } => shared.keeper_faults.set(*loss, *duplicate),
        Fault::Remove { proxy } => {
            let spec = &plan.proxies[*proxy];
            // The operator means it: a remove of any proxy, alive or not.
            let path = format!(
                "/v1/clusters/{}/proxies/{}?force=true",
                plan.clusters[spec.cluster], spec.identity
            );
            operator.send(Request {
                method: "DELETE",
                path,
                body: Vec::new(),
            });
        }
        Fault::Push { cluster } => {
            let path = format!(
                "/v1/clusters/{}/config?create=true",
                plan.clusters[*cluster]
            );
            operator.send(Request {
                method: "PUT",
                path,
                body: format!("generation = {}\n", sim.elapsed().as_millis()).into_bytes(),
            });
        }
        Fault::CrashKeeper => sim.crash("keeper"),
        Fault::RestartKeeper => sim.bounce("keeper"),
        Fault::StallKeeper { length } => shared.stall(*length),
    }
}

/// The rollout invariant, at the end of a run: in every cluster whose rollout the keeper
/// reports converged, every proxy listed `up` runs the keeper's current config version,
/// as its own process says (whatever the order of numbers: a rollback is a new version).
fn rollout_violations(
    sim: &mut turmoil::Sim<'_>,
    operator: &Operator,
    plan: &Plan,
    slots: &[Rc<ProxySlot>],
    last: &[(String, String, String)],
) -> Vec<String> {
    let mut violations = Vec::new();
    for (c, cluster) in plan.clusters.iter().enumerate() {
        let ticket = operator.send(Request {
            method: "GET",
            path: format!("/v1/clusters/{cluster}/rollout"),
            body: Vec::new(),
        });
        let Ok(answer) = support::await_answer(sim, operator, ticket, Duration::from_secs(5))
        else {
            continue;
        };
        let Ok(body) = serde_json::from_str::<Value>(&answer.body) else {
            continue; // a cluster the keeper does not hold (404)
        };
        if body["state"] != "converged" {
            continue;
        }
        let version = body["version"].as_u64().unwrap_or(0);
        for (p, spec) in plan.proxies.iter().enumerate() {
            let listed_up = last
                .iter()
                .any(|(lc, lp, ls)| lc == cluster && *lp == spec.identity && ls == "up");
            if spec.cluster != c || !listed_up {
                continue;
            }
            let runs = slots[p]
                .control
                .borrow()
                .as_ref()
                .map(|control| control.state.borrow().config_version);
            if let Some(runs) = runs
                && runs != version
            {
                violations.push(format!(
                    "the rollout of {cluster} is converged at version {version}, but {} (up) runs version {runs}",
                    spec.identity
                ));
            }
        }
    }
    violations
}

/// Every listed proxy of every cluster: (cluster, proxy, status), over HTTP.
fn listing(sim: &mut turmoil::Sim<'_>, operator: &Operator) -> Vec<(String, String, String)> {
    let ticket = operator.send(Request {
        method: "GET",
        path: "/v1/proxies".into(),
        body: Vec::new(),
    });
    let Ok(answer) = support::await_answer(sim, operator, ticket, Duration::from_secs(5)) else {
        return Vec::new();
    };
    let Ok(body) = serde_json::from_str::<Value>(&answer.body) else {
        return Vec::new();
    };
    body["proxies"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let field = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
                    (field("cluster"), field("proxy"), field("status"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The final keeper's count of datagrams read, its outcomes plus drops, and what reached
/// its socket by the tap.
fn counters(
    sim: &mut turmoil::Sim<'_>,
    operator: &Operator,
    shared: &KeeperShared,
) -> Option<(u64, u64, u64)> {
    let ticket = operator.send(Request {
        method: "GET",
        path: "/metrics".into(),
        body: Vec::new(),
    });
    let answer = support::await_answer(sim, operator, ticket, Duration::from_secs(5)).ok()?;
    let value = |line: &str| {
        line.rsplit(' ')
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut read = None;
    let mut counted = 0;
    for line in answer.body.lines() {
        if line.starts_with("zerokeeper_datagrams_received_total ") {
            read = Some(value(line));
        } else if line.starts_with("zerokeeper_heartbeats_total{")
            || line.starts_with("zerokeeper_datagrams_dropped_total{")
        {
            counted += value(line);
        }
    }
    let boot = shared.boots.load(Ordering::Relaxed);
    let arrived = shared
        .received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&boot)
        .copied()
        .unwrap_or(0);
    Some((read?, counted, arrived))
}

fn seeds() -> Vec<u64> {
    support::seeds(200)
}

/// What a set of seeds did: the failed runs' reports, and how many `Leave`s the keeper
/// sent over all of them (so a test can tell that forced removals of live proxies ran).
struct Runs {
    failures: Vec<(u64, String)>,
    leaves: usize,
}

/// Runs `seeds` over the machine's cores.
fn run_all(seeds: Vec<u64>, broken: Option<BrokenRule>) -> Runs {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = std::env::var("SIM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(cores);
    let threads = threads.min(seeds.len()).max(1);
    let queue = Arc::new(Mutex::new(seeds));
    let failures = Arc::new(Mutex::new(BTreeMap::new()));
    let leaves = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (queue, failures, leaves) = (queue.clone(), failures.clone(), leaves.clone());
            scope.spawn(move || {
                loop {
                    // Taken in its own statement: a guard in a `while let` condition would
                    // hold the lock for the whole run and serialise the threads.
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    let Some(seed) = next else { break };
                    let run = run(seed, broken);
                    leaves.fetch_add(run.leaves, Ordering::Relaxed);
                    if !run.violations.is_empty() {
                        failures
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(seed, run.report());
                    }
                }
            });
        }
    });
    let failures = failures.lock().unwrap_or_else(|e| e.into_inner());
    Runs {
        failures: failures.iter().map(|(s, r)| (*s, r.clone())).collect(),
        leaves: leaves.load(Ordering::Relaxed),
    }
}

#[test]
fn random_fault_schedules_keep_every_invariant() {
    let seeds = seeds();
    if seeds.len() == 1 {
        println!("{}", Plan::generate(seeds[0], FAULT_PHASE));
    }
    let count = seeds.len();
    let Runs { failures, leaves } = run_all(seeds, None);
    if count >= 50 {
        // Forced removals of live proxies are in the schedules: some must have reached a
        // live process, or the Leave invariant checked nothing.
        assert!(leaves > 0, "no Leave was sent in {count} seeds");
    }
    for (_, report) in &failures {
        eprintln!("{report}\n");
    }
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed: {:?}",
        failures.len(),
        failures.iter().map(|(s, _)| s).collect::<Vec<_>>()
    );
}

#[test]
fn a_seed_gives_the_same_trace_twice() {
    let first = run(42, None);
    let second = run(42, None);
    assert!(!first.log_digest.is_empty());
    assert_eq!(
        first.log_digest, second.log_digest,
        "seed 42 ran differently twice"
    );
    assert_ne!(first.log_digest, run(43, None).log_digest);
}

#[test]
fn the_checker_catches_a_keeper_that_lets_a_delayed_ready_overwrite_up() {
    let failures = run_all((1..=12).collect(), Some(BrokenRule::StaleReadyOverwritesUp)).failures;
    assert!(!failures.is_empty(), "no seed caught the broken keeper");
    let (seed, report) = &failures[0];
    println!("{report}");
    assert!(
        report.contains("moved back to ready within incarnation"),
        "{report}"
    );
    assert!(report.contains(&format!(
        "reproduce: SIM_SEED={seed} cargo test --release --test chaos"
    )));
}
