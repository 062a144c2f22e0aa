//! Rollouts under turmoil: the production keeper and proxy drivers on simulated hosts,
//! with datagram loss, partitions and a proxy restarted in the middle of a pull. Each run
//! pushes a config large enough to take many round trips and asks the keeper's admin API
//! (`GET /v1/clusters/C/rollout`) until the rollout converges; then every proxy process
//! must really run that version.

mod support;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::{KeeperShared, Operator, ProxySlot, Request};
use zerokeeper::keeper::KeeperConfig;

const CLUSTER: &str = "test_cluster";
const HOSTS: [&str; 3] = ["proxy-a", "proxy-b", "proxy-c"];
const PROXIES: [&str; 3] = ["10.25.0.11:3000", "10.25.0.12:3000", "10.25.0.13:3000"];
const INTERVAL: Duration = Duration::from_millis(100);
/// The longest any condition is waited for, in simulated time.
const PATIENCE: Duration = Duration::from_secs(60);

struct World<'a> {
    sim: turmoil::Sim<'a>,
    operator: Rc<Operator>,
    slots: Vec<Rc<ProxySlot>>,
    shared: Arc<KeeperShared>,
}

impl World<'_> {
    fn new(seed: u64) -> World<'static> {
        let mut sim = turmoil::Builder::new()
            .rng_seed(seed)
            .epoch(std::time::UNIX_EPOCH + Duration::from_secs(support::EPOCH_SECS))
            .tick_duration(Duration::from_millis(5))
            .simulation_duration(Duration::from_secs(600))
            .min_message_latency(Duration::from_millis(1))
            .max_message_latency(Duration::from_millis(20))
            .udp_capacity(8_192)
            .build();
        let config = KeeperConfig {
            heartbeat_interval: INTERVAL,
            lost_after: Duration::from_millis(600),
            ready_timeout: Duration::from_secs(5),
            delete_after: Duration::from_secs(20),
            rollout_timeout: Duration::from_secs(30),
            ..KeeperConfig::default()
        };
        let shared = Arc::new(KeeperShared {
            seed,
            store: Some(zerokeeper::store::MemoryStore::new()),
            ..KeeperShared::default()
        });
        support::keeper_host(&mut sim, config, shared.clone());
        let operator = Rc::new(Operator::default());
        support::operator_client(&mut sim, operator.clone());
        let slots: Vec<Rc<ProxySlot>> = (0..3).map(|_| Rc::new(ProxySlot::default())).collect();
        for (i, slot) in slots.iter().enumerate() {
            support::proxy_host(
                &mut sim,
                HOSTS[i],
                CLUSTER,
                PROXIES[i],
                INTERVAL,
                slot.clone(),
                seed ^ (i as u64 + 1),
            );
        }
        World {
            sim,
            operator,
            slots,
            shared,
        }
    }

    fn call(&mut self, method: &'static str, path: String, body: Vec<u8>) -> (u16, Value) {
        let ticket = self.operator.send(Request { method, path, body });
        let answer = support::await_answer(
            &mut self.sim,
            &self.operator,
            ticket,
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("{method}: {e}"));
        let body = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
        (answer.status, body)
    }

    fn rollout(&mut self) -> Value {
        let (status, body) =
            self.call("GET", format!("/v1/clusters/{CLUSTER}/rollout"), Vec::new());
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Steps the simulation until `pred` holds, at most `limit` of simulated time.
    fn until(&mut self, limit: Duration, what: &str, mut pred: impl FnMut(&mut World<'_>) -> bool) {
        let deadline = self.sim.elapsed() + limit;
        while !pred(self) {
            assert!(
                self.sim.elapsed() < deadline,
                "{what}: not within {limit:?} (at {:?}); rollout {}",
                self.sim.elapsed(),
                self.rollout()
            );
            for _ in 0..10 {
                self.sim.step().expect("the simulation runs");
            }
        }
    }

    fn all_up(&mut self) {
        self.until(PATIENCE, "every proxy up", |w| {
            let (_, body) = w.call("GET", format!("/v1/clusters/{CLUSTER}"), Vec::new());
            body["up"].as_u64() == Some(3)
        });
    }

    /// Pushes a config of about `size` bytes; returns its version.
    fn push(&mut self, tag: &str, size: usize) -> u64 {
        let mut text = format!("# {tag}\n");
        let mut i = 0;
        while text.len() < size {
            text.push_str(&format!("shard_{i:06} = \"mysql-{tag}-{i}:3306\"\n"));
            i += 1;
        }
        let (status, body) = self.call(
            "PUT",
            format!("/v1/clusters/{CLUSTER}/config?create=true"),
            text.into_bytes(),
        );
        assert_eq!(status, 200, "{body}");
        body["version"].as_u64().expect("a version")
    }

    /// The config version each proxy process runs, as the process itself says.
    fn running(&self) -> Vec<u64> {
        self.slots
            .iter()
            .map(|s| {
                s.control
                    .borrow()
                    .as_ref()
                    .map_or(0, |c| c.state.borrow().config_version)
            })
            .collect()
    }

    fn converged(&mut self, version: u64) {
        self.until(PATIENCE, "the rollout converges", |w| {
            let r = w.rollout();
            r["state"] == "converged" && r["version"].as_u64() == Some(version)
        });
        let r = self.rollout();
        assert_eq!(r["running"].as_u64(), Some(3), "{r}");
        assert_eq!(self.running(), vec![version; 3], "what the processes run");
    }

    fn lossy(&self, loss: f64) {
        for slot in &self.slots {
            slot.faults.set(loss, 0.0);
        }
        self.shared.keeper_faults.set(loss, 0.0);
    }
}

fn seeds() -> Vec<u64> {
    support::seeds(3)
}

#[test]
fn a_rollout_under_20_percent_loss_and_a_partition_that_heals_converges() {
    for seed in seeds() {
        let mut w = World::new(seed);
        w.all_up();
        w.lossy(0.2);
        let version = w.push("lossy", 200 * 1024);
        // One proxy is cut off for a while in the middle of it.
        for _ in 0..40 {
            w.sim.step().expect("runs");
        }
        w.sim.partition("keeper", HOSTS[1]);
        for _ in 0..300 {
            w.sim.step().expect("runs");
        }
        let r = w.rollout();
        assert_ne!(r["state"], "converged", "seed {seed}: {r}");
        w.sim.repair("keeper", HOSTS[1]);
        w.converged(version);
        w.lossy(0.0);
    }
}

#[test]
fn a_proxy_partitioned_during_a_rollout_catches_up_after_healing() {
    for seed in seeds() {
        let mut w = World::new(seed);
        w.all_up();
        w.sim.partition("keeper", HOSTS[2]);
        // Pushed before the keeper notices: the gate is still open.
        let version = w.push("partitioned", 100 * 1024);
        w.until(PATIENCE, "the others run it", |w| {
            let r = w.rollout();
            r["running"].as_u64() == Some(2) && r["proxies"][0]["proxy"] == PROXIES[2]
        });
        assert_ne!(w.running()[2], version);
        w.sim.repair("keeper", HOSTS[2]);
        w.converged(version);
    }
}

#[test]
fn a_proxy_restarted_during_a_rollout_pulls_the_current_version() {
    for seed in seeds() {
        let mut w = World::new(seed);
        w.all_up();
        w.lossy(0.1);
        let version = w.push("restarted", 300 * 1024);
        for _ in 0..30 {
            w.sim.step().expect("runs");
        }
        // A new process on the same host, mid-pull: a new incarnation, which pulls
        // whatever the keeper serves.
        w.slots[0].forget();
        w.sim.bounce(HOSTS[0]);
        w.converged(version);
        assert!(*w.slots[0].starts.borrow() >= 2, "the host started again");
        w.lossy(0.0);
    }
}
