//! Rollouts between the real cores: the keeper judges from what each proxy reports
//! (running, pending, rejected, stuck), an agent's `ConfigReject` is recorded and acked,
//! a rejected config is not pulled again, and a keeper that forgot a rejection hears it
//! again.

use std::net::SocketAddr;
use std::time::Duration;

use zerokeeper::agent::{Agent, AgentConfig, AgentEvent, Phase};
use zerokeeper::auth::{Key, Keyring};
use zerokeeper::keeper::{ChangeKind, Keeper, KeeperConfig, RolloutState, Status};
use zerokeeper::store::{MemoryStore, Store};
use zerokeeper::time::{Instant, WallTime};
use zerokeeper::wire::{self, ConfigReject, Heartbeat, MAX_DATAGRAM, Message, ProxyStatus, Token};

const CLUSTER: &str = "test_cluster";
const PROXIES: [&str; 3] = ["10.25.0.11:3000", "10.25.0.12:3000", "10.25.0.13:3000"];

fn key() -> Key {
    Key::new(&[0x2a; 32]).expect("valid key")
}

fn config() -> KeeperConfig {
    KeeperConfig {
        heartbeat_interval: Duration::from_millis(100),
        lost_after: Duration::from_millis(1_500),
        ready_timeout: Duration::from_secs(10),
        delete_after: Duration::from_secs(10),
        rollout_timeout: Duration::from_secs(5),
        ..KeeperConfig::default()
    }
}

fn keeper() -> Keeper {
    Keeper::new(
        config(),
        Keyring::with_default(key()),
        1,
        [1; 32],
        Instant::ZERO,
    )
    .expect("valid")
}

/// A persistent keeper booted at `now` from what `store` holds.
fn boot(store: &mut MemoryStore, now: Instant) -> Keeper {
    let snapshot = store.boot().expect("boots");
    Keeper::restore(
        config(),
        Keyring::with_default(key()),
        snapshot.epoch,
        [snapshot.epoch as u8; 32],
        now,
        &snapshot.proxies,
        &snapshot.configs,
        snapshot.revision,
    )
    .expect("restores")
}

fn agent(proxy: &str) -> Agent {
    let mut cfg = AgentConfig::new(CLUSTER, proxy, key());
    cfg.default_interval = Duration::from_millis(100);
    Agent::new(cfg, WallTime::from_micros(1_000_000), Instant::ZERO).expect("valid identity")
}

/// Agents and one keeper, wired directly, in virtual time. Each agent rejects the config
/// versions in its `refuse` list when they arrive, as a host whose config fails to load.
struct Rig {
    now: Instant,
    keeper: Keeper,
    agents: Vec<(SocketAddr, Agent)>,
    refuse: Vec<Vec<u64>>,
    /// Agents cut off from the keeper (both ways).
    cut: Vec<bool>,
    /// `ConfigReject`s each agent sent.
    rejects_sent: Vec<u64>,
    changes: Vec<ChangeKind>,
    /// Every change committed, as a persistent keeper's store would hold it.
    store: MemoryStore,
    buf: Vec<u8>,
}

impl Rig {
    fn new(n: usize) -> Rig {
        let mut store = MemoryStore::new();
        Rig {
            now: Instant::ZERO,
            keeper: boot(&mut store, Instant::ZERO),
            agents: PROXIES[..n]
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let addr = format!("127.0.1.{}:40000", 11 + i).parse().expect("valid");
                    (addr, agent(p))
                })
                .collect(),
            refuse: vec![Vec::new(); n],
            cut: vec![false; n],
            rejects_sent: vec![0; n],
            changes: Vec::new(),
            store,
            buf: vec![0; MAX_DATAGRAM],
        }
    }

    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for (i, (addr, agent)) in self.agents.iter_mut().enumerate() {
                while let Some(bytes) = agent.poll_transmit() {
                    moved = true;
                    if self.cut[i] {
                        continue;
                    }
                    if wire::parse_header(&bytes).map(|h| h.kind) == Ok(wire::Kind::ConfigReject) {
                        self.rejects_sent[i] += 1;
                    }
                    self.keeper.handle_datagram(self.now, *addr, &bytes);
                }
            }
            while let Some(t) = self.keeper.poll_transmit(&mut self.buf) {
                moved = true;
                let i = self
                    .agents
                    .iter()
                    .position(|(addr, _)| *addr == t.destination)
                    .expect("an answer goes to an agent");
                if !self.cut[i] {
                    self.agents[i]
                        .1
                        .handle_datagram(self.now, &self.buf[..t.len]);
                }
            }
            let (mut changes, mut blobs) = (Vec::new(), Vec::new());
            let upto = self.keeper.take_changes(&mut changes, &mut blobs);
            if !changes.is_empty() {
                let stored: Vec<_> = changes
                    .iter()
                    .cloned()
                    .map(|c| c.map_time(|t| t.as_nanos() / 1_000_000))
                    .collect();
                self.store.commit(&stored, &blobs).expect("commits");
                self.keeper.mark_durable(upto);
                self.changes.extend(changes.into_iter().map(|c| c.kind));
            }
            for (i, (_, agent)) in self.agents.iter_mut().enumerate() {
                while let Some(e) = agent.poll_event() {
                    let version = match e {
                        AgentEvent::ConfigReady { version, .. }
                        | AgentEvent::ConfigUpdated { version, .. } => version,
                        _ => continue,
                    };
                    moved = true;
                    if self.refuse[i].contains(&version) {
                        agent
                            .reject_config(self.now, &format!("version {version}\tdoes not load"))
                            .expect("a config was delivered");
                    } else if agent.phase() == Phase::Initialising {
                        agent.initialized(self.now).expect("initialising");
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Runs in steps of 10 ms until `pred` holds, for at most `limit`.
    fn run_until(&mut self, limit: Duration, mut pred: impl FnMut(&Rig) -> bool) -> bool {
        let end = self.now + limit;
        self.settle();
        while !pred(self) {
            if self.now >= end {
                return false;
            }
            self.step(Duration::from_millis(10));
        }
        true
    }

    fn step(&mut self, by: Duration) {
        self.now = self.now + by;
        self.keeper.handle_timeout(self.now);
        for (_, agent) in &mut self.agents {
            agent.handle_timeout(self.now);
        }
        self.settle();
    }

    fn all_up(&self) -> bool {
        PROXIES[..self.agents.len()]
            .iter()
            .all(|p| self.keeper.proxy(CLUSTER, p).ok().map(|p| p.status) == Some(Status::Up))
    }

    fn rollout(&self) -> zerokeeper::keeper::Rollout {
        self.keeper.rollout(CLUSTER).expect("the cluster exists")
    }

    fn push(&mut self, body: &str) -> u64 {
        self.keeper
            .push_config(self.now, CLUSTER, body.as_bytes().to_vec().into())
            .expect("gate open")
    }
}

#[test]
fn a_push_converges_when_every_proxy_runs_it_and_the_rollout_names_them() {
    let mut rig = Rig::new(3);
    assert!(rig.run_until(Duration::from_secs(3), Rig::all_up));
    assert_eq!(rig.rollout().state, RolloutState::Converged);
    let version = rig.push("rules = [1]\n");
    // Right after the push nobody runs it yet.
    let r = rig.rollout();
    assert_eq!((r.version, r.state), (version, RolloutState::InProgress));
    assert_eq!(r.pending.len(), 3);
    assert!(rig.run_until(Duration::from_secs(3), |r| {
        r.rollout().state == RolloutState::Converged
    }));
    let r = rig.rollout();
    assert_eq!(r.running, PROXIES.to_vec());
    assert!(r.pending.is_empty() && r.rejected.is_empty());
    for (_, a) in &rig.agents {
        assert_eq!(a.config_version(), version);
    }
}

#[test]
fn a_rejection_fails_the_rollout_naming_the_proxy_and_its_reason_and_it_keeps_its_config() {
    let mut rig = Rig::new(3);
    assert!(rig.run_until(Duration::from_secs(3), Rig::all_up));
    rig.refuse[1] = vec![2];
    let version = rig.push("rules = [bad]\n");
    assert_eq!(version, 2);
    assert!(rig.run_until(Duration::from_secs(3), |r| {
        let r = r.rollout();
        r.state == RolloutState::Failed && r.running.len() == 2
    }));
    let r = rig.rollout();
    // The reason is one line: the agent turned the tab into a space.
    assert_eq!(
        r.rejected,
        vec![(PROXIES[1].to_owned(), "version 2 does not load".to_owned())]
    );
    assert_eq!(
        r.running,
        vec![PROXIES[0].to_owned(), PROXIES[2].to_owned()]
    );
    // The rejecting proxy runs what it ran, and stays up.
    assert_eq!(rig.agents[1].1.config_version(), 1);
    assert_eq!(rig.agents[1].1.phase(), Phase::Up);
    assert_eq!(rig.agents[1].1.rejected(), Some((2, false)));
    let recorded: Vec<_> = rig
        .changes
        .iter()
        .filter(|c| matches!(c, ChangeKind::Rejected { .. }))
        .collect();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    // It does not pull the rejected version again, and stays failed for seconds.
    let sent = rig.rejects_sent[1];
    rig.run_until(Duration::from_secs(3), |_| false);
    assert_eq!(rig.agents[1].1.config_version(), 1);
    assert_eq!(rig.rollout().state, RolloutState::Failed);
    assert!(
        rig.rejects_sent[1] <= sent + 3,
        "a known rejection is not repeated every heartbeat: {} then {}",
        sent,
        rig.rejects_sent[1]
    );
    // A fixed version converges, and clears the failure.
    let fixed = rig.push("rules = [good]\n");
    assert!(rig.run_until(Duration::from_secs(3), |r| {
        r.rollout().state == RolloutState::Converged
    }));
    assert_eq!(rig.agents[1].1.config_version(), fixed);
}

#[test]
fn a_rejected_startup_config_keeps_the_proxy_ready_and_the_gate_closed() {
    let mut rig = Rig::new(3);
    // The third proxy is not there yet.
    rig.cut[2] = true;
    assert!(rig.run_until(Duration::from_secs(3), |r| {
        r.keeper.proxies(CLUSTER).map(|p| p.len()).unwrap_or(0) == 2
            && r.keeper.gate(CLUSTER).is_ok()
    }));
    rig.push("rules = [1]\n");
    assert!(rig.run_until(Duration::from_secs(3), |r| {
        r.rollout().state == RolloutState::Converged
    }));
    // It joins and cannot load the current config.
    rig.refuse[2] = vec![2];
    rig.cut[2] = false;
    assert!(rig.run_until(Duration::from_secs(3), |r| {
        r.rollout().state == RolloutState::Failed
    }));
    let status = rig.keeper.proxy(CLUSTER, PROXIES[2]).ok().map(|p| p.status);
    assert_eq!(status, Some(Status::Ready));
    assert_eq!(rig.agents[2].1.config_version(), 0);
    assert_eq!(rig.agents[2].1.phase(), Phase::Pulling);
    assert_eq!(rig.rollout().rejected.len(), 1);
    // A ready proxy holds the gate closed, as the scenario says.
    let pushed = rig
        .keeper
        .push_config(rig.now, CLUSTER, b"x = 2\n".to_vec().into());
    assert!(pushed.is_err(), "the gate is closed while a proxy is ready");
}

#[test]
fn a_pending_proxy_past_the_timeout_makes_the_rollout_stuck_and_healing_converges_it() {
    let mut rig = Rig::new(3);
    assert!(rig.run_until(Duration::from_secs(3), Rig::all_up));
    rig.cut[2] = true;
    rig.push("rules = [2]\n");
    assert!(
        rig.run_until(Duration::from_secs(1), |r| r.rollout().pending
            == vec![PROXIES[2].to_owned()])
    );
    assert_eq!(rig.rollout().state, RolloutState::InProgress);
    // Past the timeout (5 s) it is stuck, naming the proxy; it went lost meanwhile.
    assert!(rig.run_until(Duration::from_secs(6), |r| {
        r.rollout().state == RolloutState::Stuck
    }));
    assert_eq!(rig.rollout().pending, vec![PROXIES[2].to_owned()]);
    rig.cut[2] = false;
    assert!(rig.run_until(Duration::from_secs(3), |r| {
        r.rollout().state == RolloutState::Converged
    }));
}

#[test]
fn a_keeper_that_forgot_a_rejection_hears_it_again() {
    let mut rig = Rig::new(1);
    assert!(rig.run_until(Duration::from_secs(3), Rig::all_up));
    rig.refuse[0] = vec![2];
    rig.push("bad = true\n");
    assert!(rig.run_until(Duration::from_secs(3), |r| {
        r.rollout().state == RolloutState::Failed
    }));
    // The keeper restarts from its store, which holds the proxy and the config but not
    // the rejection (a run's knowledge): it acks the proxy's heartbeats naming version
    // 2, and the proxy tells it again instead of pulling it.
    rig.keeper = boot(&mut rig.store, rig.now);
    assert_eq!(rig.rollout().state, RolloutState::InProgress);
    let restarts_before = rig.agents[0].1.incarnation();
    assert!(rig.run_until(Duration::from_secs(5), |r| {
        r.rollout().state == RolloutState::Failed
    }));
    assert_eq!(
        rig.agents[0].1.incarnation(),
        restarts_before,
        "not restarted"
    );
    assert_eq!(rig.agents[0].1.config_version(), 1);
    assert_eq!(rig.agents[0].1.phase(), Phase::Up);
}

#[test]
fn a_config_reject_is_acked_always_and_decodes_only_with_a_one_line_reason() {
    let k = key();
    let hb = Heartbeat {
        cluster: CLUSTER,
        proxy: PROXIES[0],
        incarnation: 7,
        seq: 3,
        status: ProxyStatus::Up,
        config_version: 1,
        slot: 1,
        token: Token::NONE,
    };
    let trailer = wire::Trailer::NONE;
    let encode = |reason: &str| {
        wire::encode_framed_to_vec(
            wire::Version::V2,
            &Message::ConfigReject(ConfigReject {
                heartbeat: hb,
                rejected: wire::ConfigId([9; 8]),
                reason,
            }),
            trailer,
            &k,
        )
        .expect("fits")
    };
    let good = encode("does not parse at line 3");
    let framed = wire::open_framed(&good, &k).expect("decodes");
    let Message::ConfigReject(r) = framed.message else {
        panic!("not a reject: {:?}", framed.message);
    };
    assert_eq!((r.heartbeat, r.reason), (hb, "does not parse at line 3"));
    assert_eq!(r.rejected, wire::ConfigId([9; 8]));
    // A reason with a newline, or longer than 200 bytes, is refused by the decoder.
    assert_eq!(
        wire::open_framed(&encode("two\nlines"), &k).map(|f| f.message),
        Err(wire::WireError::Malformed)
    );
    let long = "x".repeat(201);
    assert_eq!(
        wire::open_framed(&encode(&long), &k).map(|f| f.message),
        Err(wire::WireError::Malformed)
    );
    assert_eq!(wire::reject_reason(&"é".repeat(150)).len(), 200);
    assert_eq!(wire::reject_reason("a\nb"), "a b");
    // In version 1 the kind is not accepted.
    let v1 = wire::encode_framed_to_vec(
        wire::Version::V1,
        &Message::ConfigReject(ConfigReject {
            heartbeat: hb,
            rejected: wire::ConfigId([9; 8]),
            reason: "no",
        }),
        trailer,
        &k,
    )
    .expect("fits");
    let mut keeper = keeper();
    let from: SocketAddr = "127.0.1.11:40000".parse().expect("valid");
    keeper.handle_datagram(Instant::ZERO, from, &v1);
    let mut buf = vec![0; MAX_DATAGRAM];
    assert!(keeper.poll_transmit(&mut buf).is_none());
}

// ----- Cluster operations: declared hostgroups, freezing, deletion, removal -----

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn a_switch_names_a_declared_hostgroup_its_current_datasource_and_another_of_its_datasources() {
    use zerokeeper::keeper::AdminError;
    let mut rig = Rig::new(3);
    assert!(rig.run_until(Duration::from_secs(3), Rig::all_up));
    let (info, changed) = rig
        .keeper
        .set_hostgroup_by(
            rig.now,
            None,
            CLUSTER,
            "hg_orders",
            &names(&["mysql-a:3306", "mysql-b:3306", "mysql-c:3306"]),
            Some("mysql-a:3306"),
        )
        .expect("declared");
    assert!(changed);
    assert_eq!(info.current, "mysql-a:3306");
    let version = rig.keeper.config_of(CLUSTER).expect("exists").version;
    let switch = |rig: &mut Rig, hg: &str, from: &str, to: &str| {
        rig.keeper.switch_datasource(rig.now, CLUSTER, hg, from, to)
    };
    match switch(&mut rig, "hg_ordres", "mysql-a:3306", "mysql-b:3306") {
        Err(AdminError::UnknownHostgroup { declared, .. }) => {
            assert_eq!(declared, names(&["hg_orders"]));
        }
        other => panic!("an undeclared hostgroup is refused, not {other:?}"),
    }
    match switch(&mut rig, "hg_orders", "mysql-b:3306", "mysql-c:3306") {
        Err(e @ AdminError::DatasourceMismatch { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("mysql-a:3306") && text.contains("mysql-b:3306, mysql-c:3306"),
                "{text}"
            );
        }
        other => panic!("a from that is not current is refused, not {other:?}"),
    }
    match switch(&mut rig, "hg_orders", "mysql-a:3306", "whatever:1") {
        Err(AdminError::UnknownDatasource { choices, .. }) => {
            assert_eq!(choices, names(&["mysql-b:3306", "mysql-c:3306"]));
        }
        other => panic!("a to that is not declared is refused, not {other:?}"),
    }
    assert!(matches!(
        switch(&mut rig, "hg_orders", "mysql-a:3306", "mysql-a:3306"),
        Err(AdminError::SameDatasource { .. })
    ));
    assert_eq!(
        rig.keeper.config_of(CLUSTER).expect("exists").version,
        version,
        "no refused switch made a version"
    );
    let made = switch(&mut rig, "hg_orders", "mysql-a:3306", "mysql-b:3306").expect("valid");
    assert_eq!(made, version + 1);
    assert!(rig.run_until(Duration::from_secs(3), |r| {
        r.rollout().state == RolloutState::Converged
    }));
    let listed = rig.keeper.hostgroups(CLUSTER).expect("exists");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].current, "mysql-b:3306");
    // A declaration keeps the current datasource: a switch changes it.
    assert!(matches!(
        rig.keeper.set_hostgroup_by(
            rig.now,
            None,
            CLUSTER,
            "hg_orders",
            &names(&["mysql-a:3306", "mysql-b:3306"]),
            Some("mysql-a:3306"),
        ),
        Err(AdminError::BadHostgroup(_))
    ));
    assert!(
        matches!(
            rig.keeper.set_hostgroup_by(
                rig.now,
                None,
                CLUSTER,
                "hg_orders",
                &names(&["mysql-a:3306", "mysql-c:3306"]),
                None,
            ),
            Err(AdminError::BadHostgroup(_))
        ),
        "the current datasource must stay declared"
    );
    // Undeclared, it names no switch; declared again, it is served by the datasource
    // the config kept naming.
    rig.keeper
        .delete_hostgroup_by(rig.now, None, CLUSTER, "hg_orders")
        .expect("declared through the API");
    assert_eq!(rig.keeper.hostgroups(CLUSTER).expect("exists"), []);
    match switch(&mut rig, "hg_orders", "mysql-b:3306", "mysql-c:3306") {
        Err(e @ AdminError::UnknownHostgroup { .. }) => {
            assert!(e.to_string().contains("it declares none"), "{e}");
        }
        other => panic!("an undeclared hostgroup is refused, not {other:?}"),
    }
    assert!(matches!(
        rig.keeper
            .delete_hostgroup_by(rig.now, None, CLUSTER, "hg_orders"),
        Err(AdminError::UnknownHostgroup { .. })
    ));
    let (info, _) = rig
        .keeper
        .set_hostgroup_by(
            rig.now,
            None,
            CLUSTER,
            "hg_orders",
            &names(&["mysql-a:3306", "mysql-b:3306"]),
            None,
        )
        .expect("declared again");
    assert_eq!(info.current, "mysql-b:3306");
    // One the keeper's config file declares is the file's to remove.
    let file = zerokeeper::keeper::cluster::Hostgroup {
        datasources: names(&["x:1", "y:1"]).into_iter().collect(),
        initial: "x:1".to_owned(),
    };
    rig.keeper.set_declared_hostgroups(
        [(CLUSTER.to_owned(), [("hg_file".to_owned(), file)].into())].into(),
    );
    match rig
        .keeper
        .delete_hostgroup_by(rig.now, None, CLUSTER, "hg_file")
    {
        Err(AdminError::BadHostgroup(why)) => assert!(why.contains("config file"), "{why}"),
        other => panic!("a file's hostgroup is not undeclared by the API, not {other:?}"),
    }
    let listed: Vec<String> = rig
        .keeper
        .hostgroups(CLUSTER)
        .expect("exists")
        .into_iter()
        .map(|h| h.hostgroup)
        .collect();
    assert_eq!(listed, names(&["hg_file", "hg_orders"]));
}

#[test]
fn a_frozen_cluster_deletes_no_lost_proxy_until_it_is_unfrozen() {
    let mut rig = Rig::new(3);
    assert!(rig.run_until(Duration::from_secs(3), Rig::all_up));
    assert!(
        rig.keeper
            .set_frozen_by(rig.now, None, CLUSTER, true)
            .expect("exists")
    );
    assert!(rig.keeper.frozen(CLUSTER));
    rig.cut[0] = true;
    assert!(rig.run_until(Duration::from_secs(5), |r| {
        r.keeper.proxy(CLUSTER, PROXIES[0]).ok().map(|p| p.status) == Some(Status::Lost)
    }));
    // Well past delete_after (10 s): frozen, it stays.
    assert!(!rig.run_until(Duration::from_secs(25), |r| {
        r.keeper.proxy(CLUSTER, PROXIES[0]).is_err()
    }));
    assert!(
        rig.keeper
            .set_frozen_by(rig.now, None, CLUSTER, false)
            .expect("exists")
    );
    let unfrozen = rig.now;
    assert!(rig.run_until(Duration::from_secs(15), |r| {
        r.keeper.proxy(CLUSTER, PROXIES[0]).is_err()
    }));
    assert!(
        rig.now - unfrozen >= Duration::from_secs(10),
        "unfreezing gives a fresh delete window"
    );
    // The settings went through the store: a keeper booted from it finds them.
    assert!(rig.changes.iter().any(|c| matches!(
        c,
        ChangeKind::Cluster { settings: Some(s), .. } if s.frozen
    )));
    rig.keeper
        .set_frozen_by(rig.now, None, CLUSTER, true)
        .expect("exists");
    rig.settle();
    let mut store = rig.store.clone();
    let snapshot = store.boot().expect("boots");
    assert!(
        snapshot
            .clusters
            .iter()
            .any(|(name, s)| name == CLUSTER && s.frozen),
        "{:?}",
        snapshot.clusters
    );
    let mut again = boot(&mut rig.store.clone(), rig.now);
    again.restore_settings(&snapshot.clusters);
    assert!(again.frozen(CLUSTER));
}

#[test]
fn a_cluster_is_deleted_only_when_no_proxy_is_registered() {
    use zerokeeper::keeper::AdminError;
    let mut rig = Rig::new(1);
    assert!(rig.run_until(Duration::from_secs(3), Rig::all_up));
    rig.push("a = 1\n");
    match rig.keeper.delete_cluster_by(rig.now, None, CLUSTER) {
        Err(AdminError::ClusterNotEmpty { proxies, names, .. }) => {
            assert_eq!((proxies, names), (1, vec![PROXIES[0].to_owned()]));
        }
        other => panic!("a cluster with a proxy is not deleted: {other:?}"),
    }
    rig.agents[0].1.unregister(rig.now);
    assert!(rig.run_until(Duration::from_secs(3), |r| {
        r.keeper.proxy(CLUSTER, PROXIES[0]).is_err()
    }));
    rig.keeper
        .delete_cluster_by(rig.now, None, CLUSTER)
        .expect("empty now");
    rig.settle();
    assert!(matches!(
        rig.keeper.config_of(CLUSTER),
        Err(AdminError::UnknownCluster(_))
    ));
    let snapshot = rig.store.clone().boot().expect("boots");
    assert!(
        snapshot.configs.iter().all(|c| c.cluster != CLUSTER),
        "every version of it is gone from the store"
    );
}

#[test]
fn a_live_proxy_removed_by_force_is_told_to_leave_and_a_later_life_registers() {
    use zerokeeper::agent::StopReason;
    let mut rig = Rig::new(2);
    assert!(rig.run_until(Duration::from_secs(3), Rig::all_up));
    let removed = rig
        .keeper
        .remove_proxy_by(rig.now, None, true, CLUSTER, PROXIES[0])
        .expect("forced");
    assert_eq!(removed, Status::Up);
    assert_eq!(
        rig.keeper
            .settings(CLUSTER)
            .removed
            .get(PROXIES[0])
            .copied(),
        Some(rig.agents[0].1.incarnation())
    );
    assert!(rig.run_until(Duration::from_secs(3), |r| {
        r.agents[0].1.phase() == Phase::Stopped(StopReason::Removed)
    }));
    rig.step(Duration::from_millis(500));
    assert!(
        rig.keeper.proxy(CLUSTER, PROXIES[0]).is_err(),
        "not registered again"
    );
    assert!(
        !rig.changes
            .iter()
            .any(|c| matches!(c, ChangeKind::RestartSent { .. })),
        "a removed proxy is never told to restart"
    );
    assert!(
        rig.changes
            .iter()
            .any(|c| matches!(c, ChangeKind::LeaveSent { proxy, .. } if &**proxy == PROXIES[0]))
    );
    assert!(
        rig.keeper.settings(CLUSTER).removed.is_empty(),
        "the agent's acknowledgement dropped the marker"
    );
    // The operator starts it again: a new process, a larger incarnation.
    let mut cfg = AgentConfig::new(CLUSTER, PROXIES[0], key());
    cfg.default_interval = Duration::from_millis(100);
    rig.agents[0].1 = Agent::new(cfg, WallTime::from_micros(9_000_000), rig.now).expect("valid");
    assert!(rig.run_until(Duration::from_secs(3), Rig::all_up));
}
