//! The chaos simulation's invariants, checked against what the keeper did (its event
//! log) and what reached it (every heartbeat that arrived at its socket).
//!
//! The checker does not ask the keeper why it did anything: it re-derives, from the
//! protocol's rules (PROTOCOL.md §7, §8 and §12), which heartbeats had to count, and
//! compares with the timers' decisions.
//!
//! 1. **Forward only.** Within one incarnation a proxy never returns to `ready` once it
//!    was `up` or `lost`; each change starts from the status the log last gave it; a new
//!    life has a larger incarnation. (No stale datagram changes anything.)
//! 2. **No false `lost`.** A proxy marked `lost` at `t` had no heartbeat that had to
//!    count arrive in `(t - lost_after, t]`. A heartbeat had to count when it arrived at
//!    the keeper with a token at most `lost_after` old (strictly inside the validity, by
//!    the token's bucket), in the incarnation the registry held, newer (by seq) than every
//!    one that counted before, and of the status the record was in.
//! 3. **No false deletion.** The same for `ready_timeout` (ready proxies) and
//!    `delete_after` (lost proxies).
//! 4. **The gate.** Every config version was made while every proxy of its cluster was
//!    `up` (the log's statuses at that point).
//! 5. **Convergence.** Once the faults stop (every link healed, no loss, the keeper
//!    running) every live proxy is `up` within `settle` (3 s: a Restart, registration,
//!    config pull and initialisation take about ten heartbeat intervals), and by
//!    `max(ready_timeout, delete_after) + 2 s` every dead one is gone (but those that
//!    mass-loss protection keeps, as `lost`, in a cluster whose deletions it pauses). A live proxy that
//!    was deleted while up or lost got a `Restart` (the only way back for it), or, when
//!    an operator removed it while it was alive, a `Leave`; a process told to leave never
//!    has a status or a `Restart` again (the simulated operator starts it again as a new
//!    process, with a larger incarnation).
//! 6. **Keeper restarts keep state and restart nobody.** The keeper's store survives its
//!    crashes: the registry a boot restores is exactly the registry at the crash (every
//!    change is committed before the keeper answers or waits again), and no `Restart` goes
//!    to an identity the restored registry held unless the new keeper deleted it first.
//!    (Before the store existed, a crash lost the registry and every proxy got `Restart`.)
//! 7. **Stalls count against nobody.** Every window above (`lost_after`, `ready_timeout`,
//!    `delete_after`, and a token's age) is measured in the keeper's own time, which
//!    leaves out the keeper's stalls (the schedule stops its driver for up to 6 s): so a
//!    stall alone changes no proxy's status, and no `Restart` follows one.
//! 8. **The restart budget.** In no round of a cluster's restart budget (which begins
//!    with a `Restart` and lasts `restart_round` of keeper time) are more identities sent
//!    a `Restart` than the budget allows a cluster of the plan's size: no single event
//!    restarts a whole cluster at once.
//! 9. **Counting.** The keeper never panics (a panic fails the simulation), and every
//!    datagram it read is counted once, as an outcome or as a drop with its reason.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use zerokeeper::keeper::{ChangeKind, Reason, Status};
use zerokeeper::wire::ProxyStatus;

use crate::plan::Plan;
use crate::support::{Arrival, Logged};

/// The timers the keeper ran with, and the simulation's tick.
#[derive(Clone, Copy, Debug)]
pub struct Timers {
    pub interval: Duration,
    pub lost_after: Duration,
    pub ready_timeout: Duration,
    pub delete_after: Duration,
    pub tick: Duration,
    /// The keeper's restart budget: its round, and the allowance of a cluster by size.
    pub restart_round: Duration,
    pub restart_allowance: fn(usize) -> usize,
}

impl Timers {
    /// A token's time bucket (PROTOCOL.md §8: half an interval).
    fn granularity(&self) -> Duration {
        (self.interval / 2).max(Duration::from_millis(1))
    }

    fn max_age_buckets(&self) -> u64 {
        let g = self.granularity().as_nanos();
        self.lost_after.as_nanos().div_ceil(g) as u64
    }

    /// Two ticks: the resolution of the simulated clock, both ways.
    fn slack(&self) -> Duration {
        self.tick * 2
    }
}

/// Everything a run produced.
pub struct Trace<'a> {
    pub plan: &'a Plan,
    pub timers: Timers,
    pub events: &'a [Logged],
    pub arrivals: &'a [Arrival],
    /// When each keeper boot started (simulated time).
    pub boots: &'a BTreeMap<u32, Duration>,
    /// When each proxy's processes started (simulated time).
    pub starts: &'a [Vec<Duration>],
    /// What each keeper boot restored from the store: (cluster, proxy, status, incarnation).
    pub restored: &'a BTreeMap<u32, Vec<crate::support::RestoredEntry>>,
    /// The listing (cluster, proxy, status) `settle` after the faults ended.
    pub settled: &'a [(String, String, String)],
    /// The listing at the end.
    pub last: &'a [(String, String, String)],
    /// At the end: datagrams the final keeper read (by its counters), what it counted as
    /// outcomes and drops, and datagrams that reached its socket (by the tap).
    pub counted: Option<(u64, u64, u64)>,
}

type Identity = (u32, String, String);

/// Checks every invariant; returns the violations, in the order found.
pub fn check(trace: &Trace<'_>) -> Vec<String> {
    let mut violations = Vec::new();
    let t = trace.timers;

    // 1 and 4: replay the log's statuses.
    let mut current: BTreeMap<Identity, (Status, u64)> = BTreeMap::new();
    let mut reached_up: BTreeSet<(Identity, u64)> = BTreeSet::new();
    // The start of each life, for 2 and 3: (identity, incarnation) → when it registered.
    let mut life_start: BTreeMap<(Identity, u64), Duration> = BTreeMap::new();
    // A boot starts from what it restored: a life that goes on, with a fresh window.
    let mut restored_ids: BTreeSet<Identity> = BTreeSet::new();
    for (boot, entries) in trace.restored {
        let start = trace.boots.get(boot).copied().unwrap_or_default();
        for (cluster, proxy, status, incarnation) in entries {
            let id: Identity = (*boot, cluster.clone(), proxy.clone());
            current.insert(id.clone(), (*status, *incarnation));
            if matches!(status, Status::Up | Status::Lost) {
                reached_up.insert((id.clone(), *incarnation));
            }
            life_start.insert((id.clone(), *incarnation), start);
            restored_ids.insert(id);
        }
    }
    let mut deleted: BTreeSet<Identity> = BTreeSet::new();
    for logged in trace.events {
        match &logged.event.kind {
            ChangeKind::Status(c) => {
                let id: Identity = (logged.boot, c.cluster.to_string(), c.proxy.to_string());
                let before = current.get(&id).copied();
                if before.map(|(s, _)| s) != c.from {
                    violations.push(format!(
                        "at {:?} boot {}: {} in {} changed from {:?} but the log had it {:?}",
                        logged.at, logged.boot, c.proxy, c.cluster, c.from, before
                    ));
                }
                if c.to == Some(Status::Ready) {
                    if reached_up.contains(&(id.clone(), c.incarnation)) {
                        violations.push(format!(
                            "at {:?} boot {}: {} in {} moved back to ready within incarnation {} ({:?})",
                            logged.at, logged.boot, c.proxy, c.cluster, c.incarnation, c.reason
                        ));
                    }
                    if c.reason == Reason::NewIncarnation
                        && before.is_some_and(|(_, inc)| inc >= c.incarnation)
                    {
                        violations.push(format!(
                            "at {:?}: {} took a new life with incarnation {} not larger than {:?}",
                            logged.at, c.proxy, c.incarnation, before
                        ));
                    }
                    if c.from.is_none() || c.reason == Reason::NewIncarnation {
                        life_start.insert((id.clone(), c.incarnation), logged.at);
                    }
                }
                if matches!(c.to, Some(Status::Up | Status::Lost)) {
                    reached_up.insert((id.clone(), c.incarnation));
                }
                match c.to {
                    Some(s) => {
                        current.insert(id.clone(), (s, c.incarnation));
                    }
                    None => {
                        current.remove(&id);
                        deleted.insert(id.clone());
                    }
                }
                let window = match c.reason {
                    Reason::LostTimeout => Some((t.lost_after, ProxyStatus::Up)),
                    Reason::ReadyTimeout => Some((t.ready_timeout, ProxyStatus::Ready)),
                    Reason::DeleteTimeout => Some((t.delete_after, ProxyStatus::Up)),
                    _ => None,
                };
                if let Some((length, status)) = window {
                    // The keeper's clock leaves its own stalls out (keeper time): the
                    // window of the timer is that long of keeper time, so in real time it
                    // also spans every stall within it. A stall alone changes no status.
                    let length = keeper_window(trace, logged.boot, logged.at, length);
                    let start = life_start
                        .get(&(id.clone(), c.incarnation))
                        .copied()
                        .unwrap_or_default();
                    if let Some(at) =
                        counted_in(trace, &id, c.incarnation, status, start, logged.at, length)
                    {
                        violations.push(format!(
                            "at {:?} boot {}: {} in {} {:?} though a {status:?} heartbeat that had to count arrived at {at:?}",
                            logged.at, logged.boot, c.proxy, c.cluster, c.reason
                        ));
                    }
                }
            }
            ChangeKind::Config {
                cluster, config, ..
            } => {
                let version = config.version;
                let blockers: Vec<String> = current
                    .iter()
                    .filter(|((boot, c, _), (s, _))| {
                        *boot == logged.boot && c.as_str() == &**cluster && *s != Status::Up
                    })
                    .map(|((_, _, p), (s, _))| format!("{p} {s}"))
                    .collect();
                if !blockers.is_empty() {
                    violations.push(format!(
                        "at {:?}: config version {version} of {cluster} was made while the gate was closed by {blockers:?}",
                        logged.at
                    ));
                }
            }
            ChangeKind::RestartSent { cluster, proxy, .. } => {
                let id: Identity = (logged.boot, cluster.to_string(), proxy.to_string());
                if restored_ids.contains(&id) && !deleted.contains(&id) {
                    violations.push(format!(
                        "at {:?} boot {}: {proxy} in {cluster} got a Restart though the restored registry \
                         held it and this keeper never deleted it: a restart caused by the keeper's crash",
                        logged.at, logged.boot
                    ));
                }
            }
            _ => {}
        }
    }

    // 5: convergence.
    let plan = trace.plan;
    let listed = |listing: &[(String, String, String)], p: usize| {
        let spec = &plan.proxies[p];
        listing
            .iter()
            .find(|(c, id, _)| *c == plan.clusters[spec.cluster] && *id == spec.identity)
            .map(|(_, _, s)| s.clone())
    };
    for (p, spec) in plan.proxies.iter().enumerate() {
        let (settled, last) = (listed(trace.settled, p), listed(trace.last, p));
        if plan.alive_at_end[p] {
            if settled.as_deref() != Some("up") {
                violations.push(format!(
                    "live proxy {p} ({}) was {settled:?}, not up, once the network healed",
                    spec.identity
                ));
            }
            if last.as_deref() != Some("up") {
                violations.push(format!(
                    "live proxy {p} ({}) ended {last:?}, not up",
                    spec.identity
                ));
            }
        } else if let Some(status) = last {
            // Mass-loss protection keeps the lost proxies of a cluster that is mostly lost
            // (most of it died): that is its job, not a missed deletion.
            let cluster = &plan.clusters[spec.cluster];
            if !(status == "lost" && paused_at_end(trace, cluster)) {
                violations.push(format!(
                    "dead proxy {p} ({}) is still listed, {status}, at the end",
                    spec.identity
                ));
            }
        }
    }

    // 6: what a boot restored is the registry at the crash, exactly.
    let boots: Vec<u32> = trace.boots.keys().copied().collect();
    for pair in boots.windows(2) {
        let (previous, boot) = (pair[0], pair[1]);
        let at_crash: BTreeSet<(String, String, Status, u64)> = current
            .iter()
            .filter(|((b, _, _), _)| *b == previous)
            .map(|((_, c, p), (s, inc))| (c.clone(), p.clone(), *s, *inc))
            .collect();
        let restored: BTreeSet<(String, String, Status, u64)> = trace
            .restored
            .get(&boot)
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default();
        if at_crash != restored {
            let lost: Vec<_> = at_crash.difference(&restored).collect();
            let extra: Vec<_> = restored.difference(&at_crash).collect();
            violations.push(format!(
                "boot {boot} restored a registry other than boot {previous}'s at its crash: missing {lost:?}, extra {extra:?}"
            ));
        }
    }

    // 5 (continued): a proxy deleted (by a timer or an operator) while the process that
    // lives to the end held the identity can only be back `up` by obeying a `Restart`.
    for (p, spec) in plan.proxies.iter().enumerate() {
        if !plan.alive_at_end[p] {
            continue;
        }
        let last_start = trace.starts[p].last().copied().unwrap_or_default();
        let first_incarnation =
            crate::support::EPOCH_SECS * 1_000_000 + last_start.as_micros() as u64;
        let cluster = &plan.clusters[spec.cluster];
        let mine = |c: &str, proxy: &str| c == cluster && proxy == spec.identity;
        for (i, l) in trace.events.iter().enumerate() {
            let ChangeKind::Status(c) = &l.event.kind else {
                continue;
            };
            let deleted_up = matches!(c.reason, Reason::DeleteTimeout | Reason::Removed)
                && matches!(c.from, Some(Status::Up | Status::Lost));
            if !deleted_up || !mine(&c.cluster, &c.proxy) || c.incarnation < first_incarnation {
                continue;
            }
            // Back by a Restart, or (forced removal of a live proxy) told to leave, after
            // which the simulated operator started it again as a new process.
            let answered = trace.events[i..].iter().any(|later| {
                matches!(&later.event.kind, ChangeKind::RestartSent { proxy, cluster: c2, incarnation, .. }
                    | ChangeKind::LeaveSent { proxy, cluster: c2, incarnation, .. }
                    if mine(c2, proxy) && *incarnation >= c.incarnation)
            });
            if !answered {
                violations.push(format!(
                    "proxy {p} ({}) was deleted at {:?} ({:?}) while alive and got neither a Restart nor a Leave",
                    spec.identity, l.at, c.reason
                ));
            }
        }
    }

    // 5 (continued): a process told to leave never comes back. No later change gives its
    // identity a status in that incarnation or an earlier one, and it is never sent a
    // Restart (which would put it back into the cluster).
    for (i, l) in trace.events.iter().enumerate() {
        let ChangeKind::LeaveSent {
            cluster,
            proxy,
            incarnation,
            ..
        } = &l.event.kind
        else {
            continue;
        };
        let back = trace.events[i..]
            .iter()
            .find(|later| match &later.event.kind {
                ChangeKind::Status(c) => {
                    c.cluster == *cluster
                        && c.proxy == *proxy
                        && c.incarnation <= *incarnation
                        && c.to.is_some()
                }
                ChangeKind::RestartSent {
                    cluster: c2,
                    proxy: p2,
                    incarnation: i2,
                    ..
                } => c2 == cluster && p2 == proxy && *i2 <= *incarnation,
                _ => false,
            });
        if let Some(back) = back {
            violations.push(format!(
                "{proxy} in {cluster} was told to leave at {:?} (incarnation {incarnation}) and came back at {:?}: {:?}",
                l.at, back.at, back.event.kind
            ));
        }
    }

    // 8: the restart budget, replayed in keeper time: rounds begin as the keeper's do.
    let mut rounds: BTreeMap<(u32, String), (Duration, BTreeSet<String>)> = BTreeMap::new();
    let mut last_sent: BTreeMap<(u32, String, String), Duration> = BTreeMap::new();
    for logged in trace.events {
        let ChangeKind::RestartSent { cluster, proxy, .. } = &logged.event.kind else {
            continue;
        };
        let now =
            logged
                .event
                .at
                .since_start()
                .saturating_sub(stalled_by(trace, logged.boot, logged.at));
        let key = (logged.boot, cluster.to_string());
        let id = (logged.boot, cluster.to_string(), proxy.to_string());
        let round = rounds
            .entry(key)
            .and_modify(|r| {
                if now >= r.0 + t.restart_round {
                    *r = (now, BTreeSet::new());
                }
            })
            .or_insert_with(|| (now, BTreeSet::new()));
        let repeat = last_sent.get(&id).is_some_and(|&at| at >= round.0);
        last_sent.insert(id, now);
        if repeat {
            continue;
        }
        round.1.insert(proxy.to_string());
        let size = plan
            .proxies
            .iter()
            .filter(|p| plan.clusters[p.cluster] == **cluster)
            .count();
        let allowance = (t.restart_allowance)(size);
        if round.1.len() > allowance {
            violations.push(format!(
                "at {:?} boot {}: {} identities of {cluster} (of {size}) were sent a Restart in one round of the budget, which allows {allowance}: {:?}",
                logged.at,
                logged.boot,
                round.1.len(),
                round.1
            ));
        }
    }

    // 9: counting.
    match trace.counted {
        Some((read, counted, arrived)) => {
            if read != counted || read != arrived {
                violations.push(format!(
                    "the keeper read {read} datagrams, counted {counted} outcomes and drops, and {arrived} reached its socket"
                ));
            }
        }
        None => violations.push("the final keeper's counters could not be read".to_owned()),
    }
    violations
}

/// The last heartbeat of `status` that had to count, for this life of `id`, arriving in
/// `(end - length, end]` (with slack at both edges), if any.
/// Whether mass-loss protection holds for `cluster` at the end of the run (its last
/// pause or resumption, in the last boot, was a pause).
fn paused_at_end(trace: &Trace<'_>, cluster: &str) -> bool {
    let last_boot = trace
        .events
        .iter()
        .map(|l| l.boot)
        .max()
        .unwrap_or_default();
    trace
        .events
        .iter()
        .rev()
        .filter(|l| l.boot == last_boot)
        .find_map(|l| match &l.event.kind {
            ChangeKind::DeletionPaused {
                cluster: c, paused, ..
            } if &**c == cluster => Some(*paused),
            _ => None,
        })
        .unwrap_or(false)
}

/// Every stall of `boot` detected by `at`, added up: keeper time at `at` is real time
/// since the boot minus this.
fn stalled_by(trace: &Trace<'_>, boot: u32, at: Duration) -> Duration {
    trace
        .events
        .iter()
        .filter(|l| l.boot == boot && l.at <= at)
        .filter_map(|l| match l.event.kind {
            ChangeKind::Stall { length, .. } => Some(length),
            _ => None,
        })
        .sum()
}

/// How long in real time `length` of keeper time ending at `at` lasted.
fn keeper_window(trace: &Trace<'_>, boot: u32, at: Duration, length: Duration) -> Duration {
    let mut window = length;
    loop {
        let stalls =
            stalled_by(trace, boot, at) - stalled_by(trace, boot, at.saturating_sub(window));
        if length + stalls <= window {
            return window;
        }
        window = length + stalls;
    }
}

fn counted_in(
    trace: &Trace<'_>,
    id: &Identity,
    incarnation: u64,
    status: ProxyStatus,
    life_start: Duration,
    end: Duration,
    length: Duration,
) -> Option<Duration> {
    let t = trace.timers;
    let boot_start = trace.boots.get(&id.0).copied().unwrap_or_default();
    let granularity = t.granularity().as_nanos();
    let max_age = t.max_age_buckets();
    let mut max_counted_seq = 0;
    let mut last = None;
    for a in trace.arrivals.iter().filter(|a| {
        a.boot == id.0 && a.cluster == id.1 && a.proxy == id.2 && a.incarnation == incarnation
    }) {
        // An arrival in the very tick of the timer may have been handled after it.
        if a.at < life_start || a.at >= end {
            continue;
        }
        // The keeper's clock started with this boot; the token's bucket is in its keeper
        // time, which leaves its stalls out.
        let keeper_now =
            a.at.saturating_sub(boot_start)
                .saturating_sub(stalled_by(trace, id.0, a.at));
        let now_bucket = (keeper_now.as_nanos() / granularity) as u32;
        let age = u64::from(now_bucket.wrapping_sub(a.token_bucket));
        let fresh = a.token_epoch == id.0 && age < max_age;
        if fresh && a.seq > max_counted_seq {
            max_counted_seq = a.seq;
            if a.status == Some(status) {
                last = Some(a.at);
            }
        }
    }
    last.filter(|at| *at + length > end + t.slack())
}
