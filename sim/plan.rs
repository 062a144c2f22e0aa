//! Random fault schedules for the chaos simulation, from a seed.
//!
//! A plan is a random cluster (1 to 3 clusters, 3 to 30 proxies) and a schedule of
//! faults over the fault phase: partitions (both ways and one way, of one proxy or a
//! group), holds and releases (delay and reordering), per-packet loss and duplication,
//! proxy crashes and restarts, start failures, unregisters, operator removes and config
//! pushes, keeper crashes with restarts, and keeper stalls. At the end of the fault phase every fault
//! is cleared and the keeper runs; the proxies then alive must all end `up`, the others
//! gone. The same seed gives the same plan.

use std::fmt;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How a started proxy's host initialises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Goes up after this long.
    Healthy(Duration),
    /// Reports a known start failure (`down`) after this long, then stops.
    Fails(Duration),
}

/// One scheduled fault (or its end).
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Start (or restart) a proxy's process.
    Start { proxy: usize, start: Start },
    /// Crash a proxy's process.
    Crash { proxy: usize },
    /// The proxy unregisters and stops.
    Unregister { proxy: usize },
    /// Cut the link between the keeper and these proxies: both ways, or one way.
    Partition { proxies: Vec<usize>, way: Way },
    /// Heal those links.
    Heal { proxies: Vec<usize>, way: Way },
    /// Hold every datagram on these links.
    Hold { proxies: Vec<usize> },
    /// Deliver what was held.
    Release { proxies: Vec<usize> },
    /// Lose and duplicate what this proxy sends.
    Lossy {
        proxy: usize,
        loss: f64,
        duplicate: f64,
    },
    /// Lose and duplicate what the keeper sends.
    KeeperLossy { loss: f64, duplicate: f64 },
    /// The operator removes a proxy.
    Remove { proxy: usize },
    /// The operator pushes a config to a cluster (refused while its gate is closed).
    Push { cluster: usize },
    /// The keeper crashes.
    CrashKeeper,
    /// The keeper starts again.
    RestartKeeper,
    /// The keeper's process stops running for this long (as SIGSTOP, a paused VM or a
    /// starved host), while its socket keeps queueing what arrives.
    StallKeeper { length: Duration },
}

/// Which way a partition cuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// Nothing passes.
    Both,
    /// The proxies' datagrams do not reach the keeper.
    ToKeeper,
    /// The keeper's datagrams do not reach the proxies.
    FromKeeper,
}

/// One proxy of the plan.
#[derive(Clone, Debug)]
pub struct ProxySpec {
    pub cluster: usize,
    pub identity: String,
    pub host: String,
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    pub clusters: Vec<String>,
    pub proxies: Vec<ProxySpec>,
    pub schedule: Vec<(Duration, Fault)>,
    /// When every fault is cleared.
    pub faults_end: Duration,
    /// Which proxies have a live, healthy process once the faults end.
    pub alive_at_end: Vec<bool>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Link {
    Normal,
    Cut,
    Held,
}

impl Plan {
    /// The plan of `seed`, with faults for `fault_phase`.
    pub fn generate(seed: u64, fault_phase: Duration) -> Plan {
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x7A6B);
        let n_clusters = rng.random_range(1..=3usize);
        let n_proxies = rng.random_range(3..=30usize).max(n_clusters);
        let clusters: Vec<String> = (0..n_clusters).map(|c| format!("cluster_{c}")).collect();
        let proxies: Vec<ProxySpec> = (0..n_proxies)
            .map(|i| ProxySpec {
                cluster: if i < n_clusters {
                    i
                } else {
                    rng.random_range(0..n_clusters)
                },
                identity: format!(
                    "10.{}.{}.{}:3306",
                    20 + i / 200,
                    (i / 250) % 250,
                    10 + i % 200
                ),
                host: format!("p{i}"),
            })
            .collect();

        let ms = |rng: &mut ChaCha8Rng, lo: u64, hi: u64| {
            Duration::from_millis(rng.random_range(lo..=hi))
        };
        let mut schedule: Vec<(Duration, Fault)> = Vec::new();
        let mut alive = vec![false; n_proxies];
        // When each proxy's link and process are free for a new fault.
        let mut link = vec![(Link::Normal, Duration::ZERO); n_proxies];
        let mut process_free = vec![Duration::ZERO; n_proxies];
        let mut lossy_until = vec![Duration::ZERO; n_proxies];
        let mut keeper_free = Duration::ZERO;
        let mut keeper_lossy_until = Duration::ZERO;

        for (p, up) in alive.iter_mut().enumerate() {
            let at = ms(&mut rng, 0, 1_500);
            let start = if rng.random_bool(0.1) {
                Start::Fails(ms(&mut rng, 0, 300))
            } else {
                *up = true;
                Start::Healthy(ms(&mut rng, 0, 400))
            };
            schedule.push((at, Fault::Start { proxy: p, start }));
            process_free[p] = at + Duration::from_millis(500);
        }

        let mut t = Duration::from_millis(2_000);
        while t < fault_phase {
            t += ms(&mut rng, 100, 600);
            if t >= fault_phase {
                break;
            }
            let p = rng.random_range(0..n_proxies);
            let group: Vec<usize> = if rng.random_bool(0.3) {
                (0..n_proxies).filter(|_| rng.random_bool(0.4)).collect()
            } else {
                vec![p]
            };
            let free_links = group
                .iter()
                .all(|&q| link[q].0 == Link::Normal && link[q].1 <= t);
            let until = |rng: &mut ChaCha8Rng, lo, hi| (t + ms(rng, lo, hi)).min(fault_phase);
            match rng.random_range(0..100u32) {
                0..=19 if free_links && !group.is_empty() => {
                    let way = match rng.random_range(0..3u32) {
                        0 => Way::ToKeeper,
                        1 => Way::FromKeeper,
                        _ => Way::Both,
                    };
                    let end = until(&mut rng, 200, 4_000);
                    for &q in &group {
                        link[q] = (Link::Cut, end);
                    }
                    schedule.push((
                        t,
                        Fault::Partition {
                            proxies: group.clone(),
                            way,
                        },
                    ));
                    schedule.push((
                        end,
                        Fault::Heal {
                            proxies: group,
                            way,
                        },
                    ));
                }
                20..=29 if free_links && !group.is_empty() => {
                    let end = until(&mut rng, 50, 1_000);
                    for &q in &group {
                        link[q] = (Link::Held, end);
                    }
                    schedule.push((
                        t,
                        Fault::Hold {
                            proxies: group.clone(),
                        },
                    ));
                    schedule.push((end, Fault::Release { proxies: group }));
                }
                30..=41 if lossy_until[p] <= t => {
                    let end = until(&mut rng, 300, 4_000);
                    lossy_until[p] = end;
                    let (loss, duplicate) =
                        (rng.random_range(0.05..0.5), rng.random_range(0.0..0.3));
                    schedule.push((
                        t,
                        Fault::Lossy {
                            proxy: p,
                            loss,
                            duplicate,
                        },
                    ));
                    schedule.push((
                        end,
                        Fault::Lossy {
                            proxy: p,
                            loss: 0.0,
                            duplicate: 0.0,
                        },
                    ));
                }
                42..=46 if keeper_lossy_until <= t => {
                    let end = until(&mut rng, 300, 2_000);
                    keeper_lossy_until = end;
                    let (loss, duplicate) =
                        (rng.random_range(0.05..0.3), rng.random_range(0.0..0.3));
                    schedule.push((t, Fault::KeeperLossy { loss, duplicate }));
                    schedule.push((
                        end,
                        Fault::KeeperLossy {
                            loss: 0.0,
                            duplicate: 0.0,
                        },
                    ));
                }
                47..=58 if process_free[p] <= t => {
                    if alive[p] {
                        alive[p] = false;
                        schedule.push((t, Fault::Crash { proxy: p }));
                    }
                    // Most crashed proxies come back; some as a failed start.
                    if rng.random_bool(0.75) {
                        let back = until(&mut rng, 200, 4_000);
                        let start = if rng.random_bool(0.2) {
                            Start::Fails(ms(&mut rng, 0, 300))
                        } else {
                            Start::Healthy(ms(&mut rng, 0, 400))
                        };
                        schedule.push((back, Fault::Start { proxy: p, start }));
                        alive[p] = matches!(start, Start::Healthy(_));
                        process_free[p] = back + Duration::from_millis(600);
                    } else {
                        process_free[p] = t + Duration::from_millis(300);
                    }
                }
                59..=65 if process_free[p] <= t && alive[p] => {
                    alive[p] = false;
                    schedule.push((t, Fault::Unregister { proxy: p }));
                    if rng.random_bool(0.5) {
                        let back = until(&mut rng, 300, 3_000);
                        schedule.push((
                            back,
                            Fault::Start {
                                proxy: p,
                                start: Start::Healthy(ms(&mut rng, 0, 400)),
                            },
                        ));
                        alive[p] = true;
                        process_free[p] = back + Duration::from_millis(600);
                    } else {
                        process_free[p] = t + Duration::from_millis(600);
                    }
                }
                66..=72 => schedule.push((t, Fault::Remove { proxy: p })),
                73..=84 => schedule.push((
                    t,
                    Fault::Push {
                        cluster: proxies[p].cluster,
                    },
                )),
                90..=94 if keeper_free <= t && t + Duration::from_millis(600) < fault_phase => {
                    // Up to twice delete_after: long enough that without keeper time the
                    // fleet would be marked lost, deleted and restarted. It ends within
                    // the fault phase, so the settling that follows is the keeper's own.
                    let length =
                        ms(&mut rng, 100, 6_000).min(fault_phase - t - Duration::from_millis(500));
                    keeper_free = t + length + Duration::from_millis(500);
                    schedule.push((t, Fault::StallKeeper { length }));
                }
                85..=89 if keeper_free <= t && t + Duration::from_millis(500) < fault_phase => {
                    let back = until(&mut rng, 200, 3_000);
                    keeper_free = back + Duration::from_millis(1_000);
                    schedule.push((t, Fault::CrashKeeper));
                    schedule.push((back, Fault::RestartKeeper));
                }
                _ => {}
            }
        }
        // Stable sort: at one moment, faults apply in the order they were planned.
        schedule.sort_by_key(|(at, _)| *at);
        Plan {
            seed,
            clusters,
            proxies,
            schedule,
            faults_end: fault_phase,
            alive_at_end: alive,
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {}: {} cluster(s), {} proxies",
            self.seed,
            self.clusters.len(),
            self.proxies.len()
        )?;
        for (i, p) in self.proxies.iter().enumerate() {
            writeln!(
                f,
                "  proxy {i}: {} in {} (host {})",
                p.identity, self.clusters[p.cluster], p.host
            )?;
        }
        writeln!(f, "schedule (faults end at {:?}):", self.faults_end)?;
        for (at, fault) in &self.schedule {
            writeln!(f, "  {:>8.3}s  {fault:?}", at.as_secs_f64())?;
        }
        let alive: Vec<usize> = (0..self.proxies.len())
            .filter(|&i| self.alive_at_end[i])
            .collect();
        write!(f, "alive at the end: {alive:?}")
    }
}
