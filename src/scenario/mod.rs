//! The seed scenario of `spec/scenario.md`, as data, and the means to replay it.
//!
//! [`seed`] builds the 13 steps as a value: each [`Step`] is a list of [`Phase`]s, and
//! each phase is (actions, a condition to wait for with a bound, an optional checkpoint),
//! ending with the step's expected listing and gate. The same value drives the
//! deterministic replay on the cores ([`harness`]), and is meant to drive the turmoil
//! simulation and the live demo: each only has to implement [`World`].
//!
//! Conditions are checked against [`Observation`]s, so a driver that can only poll (over
//! HTTP, in real time) plays the same script as one that sees every event.

pub mod harness;
pub mod net;

use std::fmt;
use std::fmt::Write as _;
use std::time::Duration;

use crate::identity::status_key;
use crate::keeper::{AdminError, Status};

/// The cluster of the seed scenario.
pub const CLUSTER: &str = "test_cluster";
/// The four proxies of the seed scenario: identities carried in heartbeats, never
/// addresses anything is sent to.
pub const PROXIES: [&str; 4] = [
    "10.25.0.11:3000",
    "10.25.0.12:3000",
    "10.25.0.13:3000",
    "10.25.0.14:3000",
];

/// The hostgroup the scenario switches, its datasources, and the one serving it at
/// the start (the keeper's config file would declare them as
/// `[clusters.test_cluster.hostgroups.hg_orders]`).
pub const HOSTGROUP: (&str, [&str; 3], &str) = (
    "hg_orders",
    ["mysql-a:3306", "mysql-b:3306", "mysql-c:3306"],
    "mysql-a:3306",
);

/// The hostgroups of the seed scenario's cluster, as a keeper's config file declares
/// them: a switch names a declared hostgroup, its current datasource and another of its
/// datasources.
pub fn hostgroups() -> crate::keeper::cluster::DeclaredHostgroups {
    let (name, datasources, initial) = HOSTGROUP;
    let hostgroup = crate::keeper::cluster::Hostgroup {
        datasources: datasources.iter().map(|d| (*d).to_owned()).collect(),
        initial: initial.to_owned(),
    };
    [(
        CLUSTER.to_owned(),
        [(name.to_owned(), hostgroup)].into_iter().collect(),
    )]
    .into_iter()
    .collect()
}

/// Index of a proxy in [`PROXIES`].
pub type ProxyIndex = usize;

/// How a started proxy's host initialises once its startup config arrives.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Init {
    /// Not until a [`Action::Release`] (so a step can show it `ready`).
    Held,
    /// Succeeds after this long.
    After(Duration),
    /// Fails for a known reason after this long: the proxy sends `down`.
    FailsAfter(Duration),
}

/// A direction of a partition between a proxy and the keeper.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Nothing passes either way.
    Both,
    /// The proxy's datagrams do not reach the keeper.
    ToKeeper,
    /// The keeper's datagrams do not reach the proxy.
    FromKeeper,
}

/// What an operator expects of a gated operation.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Expected {
    /// It is applied.
    Applied,
    /// It is refused because the gate is closed, naming exactly these blockers.
    GateClosed(Vec<(ProxyIndex, Status)>),
}

/// Something that happens in the world.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Action {
    /// A proxy process starts (a new process, with a new incarnation).
    Start {
        /// Which proxy.
        proxy: ProxyIndex,
        /// How its initialisation goes.
        init: Init,
    },
    /// A `Held` proxy's host finishes initialising.
    Release {
        /// Which proxy.
        proxy: ProxyIndex,
    },
    /// The network between the proxy and the keeper breaks.
    Partition {
        /// Which proxy.
        proxy: ProxyIndex,
        /// Which way.
        direction: Direction,
    },
    /// The network between the proxy and the keeper heals.
    Heal {
        /// Which proxy.
        proxy: ProxyIndex,
    },
    /// The proxy's process dies without a word.
    Kill {
        /// Which proxy.
        proxy: ProxyIndex,
    },
    /// The proxy goes offline and unregisters.
    Unregister {
        /// Which proxy.
        proxy: ProxyIndex,
    },
    /// An operator removes the proxy through the admin API.
    Remove {
        /// Which proxy.
        proxy: ProxyIndex,
    },
    /// An operator pushes a config.
    PushConfig {
        /// The config file.
        config: &'static [u8],
        /// What should happen.
        expect: Expected,
    },
    /// An operator switches a hostgroup's datasource.
    Switch {
        /// The hostgroup.
        hostgroup: &'static str,
        /// The datasource it has.
        from: &'static str,
        /// The datasource it gets.
        to: &'static str,
        /// What should happen.
        expect: Expected,
    },
}

/// A condition to wait for.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Until {
    /// Holds at once.
    Now,
    /// The listing is exactly this.
    Listing(Vec<(ProxyIndex, Status)>),
    /// The proxy is listed in this status.
    Status(ProxyIndex, Status),
    /// The proxy is not listed.
    Absent(ProxyIndex),
    /// The proxy's process received a `Restart` since the phase began.
    Restarted(ProxyIndex),
    /// This much time passed since the phase began.
    Elapsed(Duration),
}

/// The listing and gate expected at a checkpoint.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Expect {
    /// Every listed proxy and its status, sorted by proxy.
    pub listing: Vec<(ProxyIndex, Status)>,
    /// The gate: `None` when the registry is empty (nothing is printed then).
    pub gate: Option<Gate>,
}

/// Whether push config and switch datasource may run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Gate {
    /// Every proxy is `up`.
    Open,
    /// Some proxy is not.
    Closed,
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Gate::Open => "open",
            Gate::Closed => "closed",
        })
    }
}

/// One part of a step: do these actions, then wait (at most `within`) until the
/// condition holds, then optionally check the listing and gate.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Phase {
    /// What this phase shows, for failure messages.
    pub note: &'static str,
    /// Done at the start of the phase, in order.
    pub actions: Vec<Action>,
    /// Waited for after the actions.
    pub until: Until,
    /// The longest the wait may take; longer is a failure.
    pub within: Duration,
    /// A checkpoint once the condition holds.
    pub check: Option<Expect>,
}

/// One step of the seed scenario.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Step {
    /// 1 to 13.
    pub number: u32,
    /// The step, as the seed tells it.
    pub what: &'static str,
    /// Its phases, in order.
    pub phases: Vec<Phase>,
    /// The listing and gate after the step.
    pub expect: Expect,
}

/// The timing a replay uses; the scenario's bounds are derived from it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Timing {
    /// Heartbeat interval.
    pub interval: Duration,
    /// `up` → `lost` after this long without a heartbeat.
    pub lost_after: Duration,
    /// A `ready` proxy is deleted after this long without a heartbeat.
    pub ready_timeout: Duration,
    /// A `lost` proxy is deleted after this long without a heartbeat.
    pub delete_after: Duration,
    /// How long a proxy's host takes to initialise.
    pub init_delay: Duration,
    /// Heartbeat intervals allowed for anything that needs a round trip (generous, so
    /// lossy networks pass; it only bounds waiting for what must happen).
    pub patience: u32,
}

impl Timing {
    /// DESIGN.md's defaults (1 s, 3 s, 60 s, 60 s), for replays in virtual time.
    pub fn defaults() -> Timing {
        Timing {
            interval: Duration::from_secs(1),
            lost_after: Duration::from_secs(3),
            ready_timeout: Duration::from_secs(60),
            delete_after: Duration::from_secs(60),
            init_delay: Duration::from_secs(2),
            patience: 10,
        }
    }

    fn rounds(&self, n: u32) -> Duration {
        self.interval * n
    }
}

/// The seed scenario: 13 steps, with the moments between them the spec implies.
pub fn seed(t: &Timing) -> Vec<Step> {
    use Status::{Lost, Ready, Up};
    let p = t.patience;
    let wait = t.rounds(p);
    let init = Init::After(t.init_delay);
    let all = |s: Status| vec![(0, s), (1, s), (2, s)];
    let listing = |entries: &[(ProxyIndex, Status)]| entries.to_vec();
    let expect = |listing: Vec<(ProxyIndex, Status)>| {
        let gate = match () {
            _ if listing.is_empty() => None,
            _ if listing.iter().all(|(_, s)| *s == Up) => Some(Gate::Open),
            _ => Some(Gate::Closed),
        };
        Expect { listing, gate }
    };
    let phase = |note, actions, until, within, check: Option<Expect>| Phase {
        note,
        actions,
        until,
        within,
        check,
    };
    let blocked = |entries: &[(ProxyIndex, Status)]| Expected::GateClosed(entries.to_vec());

    vec![
        Step {
            number: 1,
            what: "No proxy has started; the keeper's registry for the cluster is empty.",
            phases: vec![phase(
                "nothing happens",
                vec![],
                Until::Listing(vec![]),
                Duration::ZERO,
                None,
            )],
            expect: expect(vec![]),
        },
        Step {
            number: 2,
            what: ".11, .12, .13 start one after another and send ready heartbeats.",
            phases: vec![phase(
                "three proxies register",
                (0..3)
                    .map(|proxy| Action::Start {
                        proxy,
                        init: Init::Held,
                    })
                    .collect(),
                Until::Listing(all(Ready)),
                wait,
                None,
            )],
            expect: expect(all(Ready)),
        },
        Step {
            number: 3,
            what: "Each pulls its startup config, initialises, and sends up heartbeats.",
            phases: vec![phase(
                "three proxies go up",
                (0..3).map(|proxy| Action::Release { proxy }).collect(),
                Until::Listing(all(Up)),
                wait,
                None,
            )],
            expect: expect(all(Up)),
        },
        Step {
            number: 4,
            what: "The network between the keeper and .13 breaks; the keeper marks it lost.",
            phases: vec![
                phase(
                    ".13 is marked lost",
                    vec![Action::Partition {
                        proxy: 2,
                        direction: Direction::Both,
                    }],
                    Until::Status(2, Lost),
                    t.lost_after + wait,
                    None,
                ),
                phase(
                    "push config is refused, naming .13",
                    vec![Action::PushConfig {
                        config: b"pool_size = 64\n",
                        expect: blocked(&[(2, Lost)]),
                    }],
                    Until::Now,
                    Duration::ZERO,
                    None,
                ),
            ],
            expect: expect(listing(&[(0, Up), (1, Up), (2, Lost)])),
        },
        Step {
            number: 5,
            what: "The network to .13 heals: its next up heartbeat puts it straight back to up.",
            phases: vec![phase(
                ".13 comes back up",
                vec![Action::Heal { proxy: 2 }],
                Until::Listing(all(Up)),
                wait,
                None,
            )],
            expect: expect(all(Up)),
        },
        Step {
            number: 6,
            what: ".14 starts; the keeper receives its ready heartbeat.",
            phases: vec![phase(
                ".14 registers",
                vec![Action::Start {
                    proxy: 3,
                    init: Init::Held,
                }],
                Until::Status(3, Ready),
                wait,
                None,
            )],
            expect: expect(listing(&[(0, Up), (1, Up), (2, Up), (3, Ready)])),
        },
        Step {
            number: 7,
            what: ".14 fails to start and dies; the keeper deletes it after ready_timeout.",
            phases: vec![
                phase(
                    "dead .14 is still ready halfway through ready_timeout",
                    vec![Action::Kill { proxy: 3 }],
                    Until::Elapsed(t.ready_timeout / 2),
                    t.ready_timeout,
                    Some(expect(listing(&[(0, Up), (1, Up), (2, Up), (3, Ready)]))),
                ),
                phase(
                    "the keeper deletes .14 at ready_timeout",
                    vec![],
                    Until::Absent(3),
                    t.ready_timeout / 2 + wait,
                    None,
                ),
            ],
            expect: expect(all(Up)),
        },
        Step {
            number: 8,
            what: ".14 fails to start for a known reason and sends down: deleted at once.",
            phases: vec![
                phase(
                    ".14 registers as ready",
                    vec![Action::Start {
                        proxy: 3,
                        init: Init::FailsAfter(t.init_delay),
                    }],
                    Until::Status(3, Ready),
                    wait,
                    Some(expect(listing(&[(0, Up), (1, Up), (2, Up), (3, Ready)]))),
                ),
                phase(
                    ".14 sends down and is deleted well before ready_timeout",
                    vec![],
                    Until::Absent(3),
                    t.init_delay + wait,
                    None,
                ),
            ],
            expect: expect(all(Up)),
        },
        Step {
            number: 9,
            what: "An operator starts .14 again and it succeeds.",
            phases: vec![phase(
                ".14 joins and goes up",
                vec![Action::Start { proxy: 3, init }],
                Until::Listing(vec![(0, Up), (1, Up), (2, Up), (3, Up)]),
                t.init_delay + wait,
                None,
            )],
            expect: expect(listing(&[(0, Up), (1, Up), (2, Up), (3, Up)])),
        },
        Step {
            number: 10,
            what: ".14 goes offline and unregisters; the others can still switch and push.",
            phases: vec![
                phase(
                    ".14 unregisters",
                    vec![Action::Unregister { proxy: 3 }],
                    Until::Absent(3),
                    wait,
                    None,
                ),
                phase(
                    "switch datasource and push config are applied",
                    vec![
                        Action::Switch {
                            hostgroup: "hg_orders",
                            from: "mysql-a:3306",
                            to: "mysql-b:3306",
                            expect: Expected::Applied,
                        },
                        Action::PushConfig {
                            config: b"pool_size = 64\n",
                            expect: Expected::Applied,
                        },
                    ],
                    Until::Now,
                    Duration::ZERO,
                    None,
                ),
            ],
            expect: expect(all(Up)),
        },
        Step {
            number: 11,
            what: ".13 is killed and becomes lost; the operator removes it.",
            phases: vec![
                phase(
                    ".14 restarts and rejoins (between steps 10 and 11)",
                    vec![Action::Start { proxy: 3, init }],
                    Until::Listing(vec![(0, Up), (1, Up), (2, Up), (3, Up)]),
                    t.init_delay + wait,
                    Some(expect(listing(&[(0, Up), (1, Up), (2, Up), (3, Up)]))),
                ),
                phase(
                    "killed .13 is lost and blocks the gate",
                    vec![Action::Kill { proxy: 2 }],
                    Until::Status(2, Lost),
                    t.lost_after + wait,
                    Some(expect(listing(&[(0, Up), (1, Up), (2, Lost), (3, Up)]))),
                ),
                phase(
                    "switch datasource is refused, naming .13",
                    vec![Action::Switch {
                        hostgroup: "hg_orders",
                        from: "mysql-b:3306",
                        to: "mysql-c:3306",
                        expect: blocked(&[(2, Lost)]),
                    }],
                    Until::Now,
                    Duration::ZERO,
                    None,
                ),
                phase(
                    "the operator removes .13",
                    vec![Action::Remove { proxy: 2 }],
                    Until::Absent(2),
                    Duration::ZERO,
                    None,
                ),
            ],
            expect: expect(listing(&[(0, Up), (1, Up), (3, Up)])),
        },
        Step {
            number: 12,
            what: ".14 loses contact with the keeper; the keeper marks it lost.",
            phases: vec![
                phase(
                    ".14 is marked lost",
                    vec![Action::Partition {
                        proxy: 3,
                        direction: Direction::Both,
                    }],
                    Until::Status(3, Lost),
                    t.lost_after + wait,
                    None,
                ),
                phase(
                    "push config is refused, naming .14",
                    vec![Action::PushConfig {
                        config: b"pool_size = 32\n",
                        expect: blocked(&[(3, Lost)]),
                    }],
                    Until::Now,
                    Duration::ZERO,
                    None,
                ),
            ],
            expect: expect(listing(&[(0, Up), (1, Up), (3, Lost)])),
        },
        Step {
            number: 13,
            what: ".14 is deleted while cut off; when it comes back it is told to restart, and rejoins.",
            phases: vec![
                phase(
                    "the keeper deletes lost .14 while it is still cut off",
                    vec![],
                    Until::Absent(3),
                    t.delete_after + wait,
                    Some(expect(listing(&[(0, Up), (1, Up)]))),
                ),
                phase(
                    "healed .14's up heartbeat is answered with Restart",
                    vec![Action::Heal { proxy: 3 }],
                    Until::Restarted(3),
                    wait,
                    None,
                ),
                phase(
                    "restarted .14 registers as ready",
                    vec![],
                    Until::Status(3, Ready),
                    wait,
                    None,
                ),
                phase(
                    "and pulls its config and goes up",
                    vec![],
                    Until::Listing(vec![(0, Up), (1, Up), (3, Up)]),
                    t.init_delay + wait,
                    None,
                ),
            ],
            expect: expect(listing(&[(0, Up), (1, Up), (3, Up)])),
        },
    ]
}

/// What a driver sees of the world at one moment.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Observation {
    /// The cluster's listing: identity and status, sorted by identity.
    pub listing: Vec<(String, Status)>,
    /// `Restart`s each proxy's processes have received so far.
    pub restarts: [u64; 4],
    /// Time since the replay began.
    pub elapsed: Duration,
}

impl Observation {
    /// The status of a proxy, if listed.
    pub fn status(&self, proxy: ProxyIndex) -> Option<Status> {
        self.listing
            .iter()
            .find(|(p, _)| p == PROXIES[proxy])
            .map(|(_, s)| *s)
    }

    /// Whether the listing is exactly `expected`.
    pub fn listing_is(&self, expected: &[(ProxyIndex, Status)]) -> bool {
        self.listing.len() == expected.len()
            && self
                .listing
                .iter()
                .zip(expected)
                .all(|((p, s), (i, e))| p == PROXIES[*i] && s == e)
    }

    /// The gate that follows from the listing.
    pub fn gate(&self) -> Option<Gate> {
        match () {
            _ if self.listing.is_empty() => None,
            _ if self.listing.iter().all(|(_, s)| *s == Status::Up) => Some(Gate::Open),
            _ => Some(Gate::Closed),
        }
    }
}

/// Whether a gated operator action ended as expected: applied, or refused for a closed
/// gate naming exactly the expected blockers. Every world checks its outcomes with this.
pub fn check_outcome(result: Result<u64, AdminError>, expect: &Expected) -> Result<(), String> {
    match (result, expect) {
        (Ok(_), Expected::Applied) => Ok(()),
        (Err(AdminError::GateClosed(closed)), Expected::GateClosed(blockers)) => {
            let got: Vec<(String, Status)> = closed
                .blockers
                .into_iter()
                .map(|b| (b.proxy, b.status))
                .collect();
            let want: Vec<(String, Status)> = blockers
                .iter()
                .map(|(i, s)| (PROXIES[*i].to_owned(), *s))
                .collect();
            if got == want {
                Ok(())
            } else {
                Err(format!("refused naming {got:?}, expected {want:?}"))
            }
        }
        (Ok(version), Expected::GateClosed(_)) => {
            Err(format!("applied as version {version}, expected refusal"))
        }
        (Err(e), _) => Err(format!("refused: {e}")),
    }
}

/// The world a scenario is played in: the cores in virtual time, turmoil, or real
/// processes. Each action must be done, and each observation true, when the call returns.
pub trait World {
    /// Does `action`; an operator action whose outcome differs from its expectation is an
    /// error.
    fn act(&mut self, action: &Action) -> Result<(), String>;
    /// The world now, including the gate as the keeper reports it.
    fn observe(&mut self) -> (Observation, Option<Gate>);
    /// Lets time pass (a little: the runner checks conditions between calls).
    fn advance(&mut self);
}

/// A step's result as printed by `zerokeeper scenario`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StepReport {
    /// The step's number.
    pub number: u32,
    /// The listing lines, sorted.
    pub lines: Vec<String>,
    /// The gate, if the registry is not empty.
    pub gate: Option<Gate>,
}

impl fmt::Display for StepReport {
    /// The format of `zerokeeper scenario`: `step N`, the listing lines, `gate open|closed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "step {}", self.number)?;
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        if let Some(gate) = self.gate {
            writeln!(f, "gate {gate}")?;
        }
        Ok(())
    }
}

/// Why a replay failed: which step and phase, what was expected, what was seen.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Failure {
    /// The step.
    pub step: u32,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {}: {}", self.step, self.message)
    }
}

fn lines(listing: &[(String, Status)]) -> Vec<String> {
    listing
        .iter()
        .map(|(p, s)| format!("{}->{}", status_key(CLUSTER, p), s))
        .collect()
}

fn describe(obs: &Observation, gate: Option<Gate>) -> String {
    let mut out = String::new();
    if obs.listing.is_empty() {
        out.push_str("(empty)");
    }
    for line in lines(&obs.listing) {
        let _ = write!(out, "\n    {line}");
    }
    if let Some(g) = gate {
        let _ = write!(out, "\n    gate {g}");
    }
    out
}

fn check(
    step: u32,
    what: &str,
    expect: &Expect,
    obs: &Observation,
    gate: Option<Gate>,
) -> Result<(), Failure> {
    if !obs.listing_is(&expect.listing) || gate != expect.gate {
        let wanted = Observation {
            listing: expect
                .listing
                .iter()
                .map(|(i, s)| (PROXIES[*i].to_owned(), *s))
                .collect(),
            ..Observation::default()
        };
        return Err(Failure {
            step,
            message: format!(
                "{what}: expected {}\n  but saw {}",
                describe(&wanted, expect.gate),
                describe(obs, gate)
            ),
        });
    }
    Ok(())
}

fn holds(until: &Until, obs: &Observation, since: Duration, restarts_before: &[u64; 4]) -> bool {
    match until {
        Until::Now => true,
        Until::Listing(expected) => obs.listing_is(expected),
        Until::Status(p, s) => obs.status(*p) == Some(*s),
        Until::Absent(p) => obs.status(*p).is_none(),
        Until::Restarted(p) => obs.restarts[*p] > restarts_before[*p],
        Until::Elapsed(d) => obs.elapsed >= since + *d,
    }
}

/// Plays `steps` in `world`, calling `report` after each step; stops at the first step
/// whose listing or gate differs from the scenario.
pub fn play(
    steps: &[Step],
    world: &mut dyn World,
    mut report: impl FnMut(&StepReport),
) -> Result<Vec<StepReport>, Failure> {
    let mut reports = Vec::new();
    for step in steps {
        for phase in &step.phases {
            for action in &phase.actions {
                world.act(action).map_err(|message| Failure {
                    step: step.number,
                    message: format!("{}: {action:?} failed: {message}", phase.note),
                })?;
            }
            let (first, _) = world.observe();
            let (since, restarts_before) = (first.elapsed, first.restarts);
            loop {
                let (obs, gate) = world.observe();
                if holds(&phase.until, &obs, since, &restarts_before) {
                    if let Some(expect) = &phase.check {
                        check(step.number, phase.note, expect, &obs, gate)?;
                    }
                    break;
                }
                if obs.elapsed > since + phase.within {
                    return Err(Failure {
                        step: step.number,
                        message: format!(
                            "{}: waited for {:?} longer than {:?}; saw {}",
                            phase.note,
                            phase.until,
                            phase.within,
                            describe(&obs, gate)
                        ),
                    });
                }
                world.advance();
            }
        }
        let (obs, gate) = world.observe();
        check(step.number, "after the step", &step.expect, &obs, gate)?;
        let r = StepReport {
            number: step.number,
            lines: lines(&obs.listing),
            gate,
        };
        report(&r);
        reports.push(r);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_has_thirteen_steps_whose_gates_match_the_spec_table() {
        let steps = seed(&Timing::defaults());
        let gates: Vec<Option<Gate>> = steps.iter().map(|s| s.expect.gate).collect();
        use Gate::{Closed, Open};
        assert_eq!(
            gates,
            vec![
                None,
                Some(Closed),
                Some(Open),
                Some(Closed),
                Some(Open),
                Some(Closed),
                Some(Open),
                Some(Open),
                Some(Open),
                Some(Open),
                Some(Open),
                Some(Closed),
                Some(Open)
            ]
        );
        assert!(
            steps
                .iter()
                .enumerate()
                .all(|(i, s)| s.number as usize == i + 1)
        );
    }

    #[test]
    fn a_step_report_prints_the_seed_format() {
        let r = StepReport {
            number: 4,
            lines: vec!["/zerodb/proxy/test_cluster/status/10.25.0.13:3000->lost".into()],
            gate: Some(Gate::Closed),
        };
        assert_eq!(
            r.to_string(),
            "step 4\n/zerodb/proxy/test_cluster/status/10.25.0.13:3000->lost\ngate closed\n"
        );
        let empty = StepReport {
            number: 1,
            lines: vec![],
            gate: None,
        };
        assert_eq!(empty.to_string(), "step 1\n");
    }
}
