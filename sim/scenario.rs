//! The seed scenario under turmoil: the keeper, four proxies and an operator are
//! simulated hosts running the production drivers; partitions are turmoil partitions,
//! deaths are crashes, a restarted proxy is a bounced host, and the operator's listings,
//! gate checks and actions go through the keeper's HTTP admin API.
//!
//! It plays the same scenario value as `zerokeeper scenario` and `zerokeeper demo`
//! (`zerokeeper::scenario::seed`) and checks the listing and gate, read over HTTP, after
//! every step and at every checkpoint inside a step.

mod support;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::{KeeperShared, Operator, ProxySlot, Request};
use zerokeeper::driver::proxy::{InitPolicy, ProxyCommand};
use zerokeeper::keeper::{ChangeKind, KeeperConfig, Reason, Status};
use zerokeeper::scenario::{
    self, Action, CLUSTER, Direction, Expected, Gate, Init, Observation, PROXIES, Timing, World,
};

/// Host names of the four proxies.
const HOSTS: [&str; 4] = ["p11", "p12", "p13", "p14"];

fn timing() -> Timing {
    Timing {
        interval: Duration::from_millis(100),
        lost_after: Duration::from_millis(500),
        ready_timeout: Duration::from_secs(2),
        delete_after: Duration::from_secs(3),
        init_delay: Duration::from_millis(300),
        patience: 20,
    }
}

struct TurmoilWorld<'a> {
    sim: turmoil::Sim<'a>,
    operator: Rc<Operator>,
    slots: Vec<Rc<ProxySlot>>,
    started: [bool; 4],
    timing: Timing,
}

impl<'a> TurmoilWorld<'a> {
    fn new(seed: u64, shared: Arc<KeeperShared>) -> TurmoilWorld<'a> {
        let timing = timing();
        let mut sim = turmoil::Builder::new()
            .rng_seed(seed)
            .epoch(std::time::UNIX_EPOCH + Duration::from_secs(support::EPOCH_SECS))
            .simulation_duration(Duration::from_secs(600))
            .min_message_latency(Duration::from_millis(1))
            .max_message_latency(Duration::from_millis(5))
            .build();
        let config = KeeperConfig {
            heartbeat_interval: timing.interval,
            lost_after: timing.lost_after,
            ready_timeout: timing.ready_timeout,
            delete_after: timing.delete_after,
            ..KeeperConfig::default()
        };
        support::keeper_host(&mut sim, config, shared);
        let operator = Rc::new(Operator::default());
        support::operator_client(&mut sim, operator.clone());
        let slots = (0..4).map(|_| Rc::new(ProxySlot::default())).collect();
        TurmoilWorld {
            sim,
            operator,
            slots,
            started: [false; 4],
            timing,
        }
    }

    fn call(
        &mut self,
        method: &'static str,
        path: String,
        body: Vec<u8>,
    ) -> Result<support::Answer, String> {
        let ticket = self.operator.send(Request { method, path, body });
        support::await_answer(
            &mut self.sim,
            &self.operator,
            ticket,
            Duration::from_secs(5),
        )
    }

    fn start(&mut self, proxy: usize, init: Init) {
        let policy = match init {
            Init::Held => InitPolicy::Held,
            Init::After(d) => InitPolicy::After(d),
            Init::FailsAfter(d) => InitPolicy::FailsAfter(d),
        };
        let slot = self.slots[proxy].clone();
        *slot.init.borrow_mut() = Some(policy);
        slot.forget();
        if self.started[proxy] {
            // A fresh process on the same machine: the host starts again, with a new
            // socket and a new incarnation.
            self.sim.bounce(HOSTS[proxy]);
        } else {
            self.started[proxy] = true;
            let interval = self.timing.interval;
            support::proxy_host(
                &mut self.sim,
                HOSTS[proxy],
                CLUSTER,
                PROXIES[proxy],
                interval,
                slot,
                proxy as u64,
            );
        }
    }

    fn command(&self, proxy: usize, command: ProxyCommand) -> Result<(), String> {
        let control = self.slots[proxy].control.borrow();
        let control = control.as_ref().ok_or("the proxy is not running")?;
        control
            .commands
            .try_send(command)
            .map_err(|e| e.to_string())
    }

    fn expect(answer: support::Answer, expect: &Expected) -> Result<(), String> {
        match expect {
            Expected::Applied if answer.status == 200 => Ok(()),
            Expected::GateClosed(blockers) if answer.status == 409 => {
                let body: Value = serde_json::from_str(&answer.body).map_err(|e| e.to_string())?;
                let got: Vec<(String, String)> = body["blockers"]
                    .as_array()
                    .map(|bs| {
                        bs.iter()
                            .map(|b| {
                                (
                                    b["proxy"].as_str().unwrap_or("").to_owned(),
                                    b["status"].as_str().unwrap_or("").to_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let want: Vec<(String, String)> = blockers
                    .iter()
                    .map(|(i, s)| (PROXIES[*i].to_owned(), s.as_str().to_owned()))
                    .collect();
                if body["type"] == "urn:zerokeeper:problem:gate-closed" && got == want {
                    Ok(())
                } else {
                    Err(format!("refused with {body}, expected blockers {want:?}"))
                }
            }
            _ => Err(format!("HTTP {}: {}", answer.status, answer.body)),
        }
    }
}

impl World for TurmoilWorld<'_> {
    fn act(&mut self, action: &Action) -> Result<(), String> {
        match action {
            Action::Start { proxy, init } => self.start(*proxy, *init),
            Action::Release { proxy } => self.command(*proxy, ProxyCommand::Release)?,
            Action::Unregister { proxy } => self.command(*proxy, ProxyCommand::Unregister)?,
            Action::Partition { proxy, direction } => match direction {
                Direction::Both => self.sim.partition("keeper", HOSTS[*proxy]),
                Direction::ToKeeper => self.sim.partition_oneway(HOSTS[*proxy], "keeper"),
                Direction::FromKeeper => self.sim.partition_oneway("keeper", HOSTS[*proxy]),
            },
            Action::Heal { proxy } => self.sim.repair("keeper", HOSTS[*proxy]),
            Action::Kill { proxy } => {
                self.sim.crash(HOSTS[*proxy]);
                self.slots[*proxy].forget();
            }
            Action::Remove { proxy } => {
                let path = format!("/v1/clusters/{CLUSTER}/proxies/{}", PROXIES[*proxy]);
                let answer = self.call("DELETE", path, Vec::new())?;
                if answer.status != 200 {
                    return Err(format!("remove: HTTP {}: {}", answer.status, answer.body));
                }
            }
            Action::PushConfig { config, expect } => {
                let answer = self.call(
                    "PUT",
                    format!("/v1/clusters/{CLUSTER}/config"),
                    config.to_vec(),
                )?;
                Self::expect(answer, expect)?;
            }
            Action::Switch {
                hostgroup,
                from,
                to,
                expect,
            } => {
                let body =
                    serde_json::json!({"hostgroup": hostgroup, "from": from, "to": to}).to_string();
                let answer = self.call(
                    "POST",
                    format!("/v1/clusters/{CLUSTER}/switch"),
                    body.into_bytes(),
                )?;
                Self::expect(answer, expect)?;
            }
        }
        Ok(())
    }

    fn observe(&mut self) -> (Observation, Option<Gate>) {
        let keys = self.call("GET", format!("/v1/clusters/{CLUSTER}/keys"), Vec::new());
        let listing: Vec<(String, Status)> = match keys {
            Ok(answer) if answer.status == 200 => answer
                .body
                .lines()
                .filter_map(|line| {
                    let (key, status) = line.rsplit_once("->")?;
                    let proxy = key.rsplit('/').next()?;
                    Some((proxy.to_owned(), Status::parse(status)?))
                })
                .collect(),
            _ => Vec::new(),
        };
        let gate = if listing.is_empty() {
            None
        } else {
            self.call("GET", format!("/v1/clusters/{CLUSTER}/gate"), Vec::new())
                .ok()
                .and_then(|a| serde_json::from_str::<Value>(&a.body).ok())
                .and_then(|v| v["open"].as_bool())
                .map(|open| if open { Gate::Open } else { Gate::Closed })
        };
        let mut restarts = [0; 4];
        for (i, slot) in self.slots.iter().enumerate() {
            restarts[i] = slot.restarts();
        }
        (
            Observation {
                listing,
                restarts,
                elapsed: self.sim.elapsed(),
            },
            gate,
        )
    }

    fn advance(&mut self) {
        for _ in 0..10 {
            if let Err(e) = self.sim.step() {
                panic!("the simulation failed: {e}");
            }
        }
    }
}

fn play(seed: u64) -> (Vec<scenario::StepReport>, Arc<KeeperShared>) {
    let shared = Arc::new(KeeperShared {
        seed,
        ..KeeperShared::default()
    });
    let mut world = TurmoilWorld::new(seed, shared.clone());
    let steps = scenario::seed(&world.timing);
    match scenario::play(&steps, &mut world, |_| {}) {
        Ok(reports) => (reports, shared),
        Err(failure) => {
            panic!("seed {seed}: {failure}\nrerun: SIM_SEED={seed} cargo test --test scenario")
        }
    }
}

#[test]
fn the_seed_scenario_plays_under_turmoil_with_each_listing_and_gate_read_over_http() {
    let seed = std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let (reports, shared) = play(seed);
    let replay = std::process::Command::new(env!("CARGO_BIN_EXE_zerokeeper"))
        .arg("scenario")
        .output()
        .expect("runs");
    let expected = String::from_utf8_lossy(&replay.stdout).into_owned();
    let printed: String = reports.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        printed, expected,
        "the listings differ from the replay on the cores"
    );

    // Step 13 in full: deleted while cut off, then Restart, then ready, then up.
    let events = shared.events.lock().expect("not poisoned");
    let p14: Vec<String> = events
        .iter()
        .filter_map(|l| match &l.event.kind {
            ChangeKind::Status(c) if &*c.proxy == PROXIES[3] => Some(c.reason.as_str().to_owned()),
            ChangeKind::RestartSent { proxy, .. } if &**proxy == PROXIES[3] => {
                Some("restart_sent".to_owned())
            }
            _ => None,
        })
        .collect();
    let tail = &p14[p14.len() - 5..];
    assert_eq!(
        tail,
        [
            "lost_timeout",
            "delete_timeout",
            "restart_sent",
            "registered",
            "heartbeat"
        ]
    );
    assert!(
        events
            .iter()
            .any(|l| matches!(&l.event.kind, ChangeKind::Status(c) if c.reason == Reason::Removed))
    );
}

#[test]
fn a_seed_replays_identically() {
    let digest = |seed| {
        let (_, shared) = play(seed);
        let events = shared.events.lock().expect("not poisoned");
        events
            .iter()
            .map(|l| format!("{:?} {} {:?}\n", l.at, l.boot, l.event))
            .collect::<String>()
    };
    assert_eq!(digest(7), digest(7));
}

#[test]
fn the_seed_scenario_holds_with_one_way_partitions() {
    // Step 4 cuts only .13's heartbeats; step 12 cuts only what the keeper sends .14, so
    // its heartbeats still arrive but its freshness token ages out and stops counting.
    let seed = 3;
    let shared = Arc::new(KeeperShared {
        seed,
        ..KeeperShared::default()
    });
    let mut world = TurmoilWorld::new(seed, shared);
    let mut steps = scenario::seed(&world.timing);
    for step in &mut steps {
        for phase in &mut step.phases {
            for action in &mut phase.actions {
                if let Action::Partition { direction, .. } = action {
                    *direction = if step.number == 4 {
                        Direction::ToKeeper
                    } else {
                        Direction::FromKeeper
                    };
                }
            }
        }
    }
    let reports = scenario::play(&steps, &mut world, |_| {}).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(reports.len(), 13);
}
