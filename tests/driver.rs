//! The drivers on real loopback UDP sockets: a keeper task and proxy tasks.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use zerokeeper::agent::{Agent, AgentConfig, Phase, StopReason};
use zerokeeper::auth::{Key, Keyring};
use zerokeeper::driver::keeper::{ChangeSink, KeeperDriver, KeeperHandle};
use zerokeeper::driver::proxy::{InitPolicy, ProxyControl, ProxyDriver, ProxyExit};
use zerokeeper::driver::{DriverClock, unix_micros};
use zerokeeper::keeper::{ChangeKind, Keeper, KeeperConfig, WallChange};
use zerokeeper::time::{Instant, WallTime};

fn key() -> Key {
    Key::new(&[0x2a; 32]).expect("valid key")
}

/// Collects what the driver publishes.
#[derive(Default)]
struct Collect(Mutex<Vec<WallChange>>);

impl ChangeSink for Collect {
    fn publish(&self, changes: Vec<WallChange>) {
        self.0.lock().expect("not poisoned").extend(changes);
    }

    fn set_generation(&self, _generation: u64) {}
}

async fn keeper() -> (
    KeeperHandle,
    SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
    Arc<Collect>,
) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = socket.local_addr().expect("bound");
    let config = KeeperConfig {
        heartbeat_interval: Duration::from_millis(50),
        lost_after: Duration::from_millis(400),
        ready_timeout: Duration::from_secs(2),
        delete_after: Duration::from_secs(2),
        ..KeeperConfig::default()
    };
    let core = Keeper::new(
        config,
        Keyring::with_default(key()),
        1,
        [7; 32],
        Instant::ZERO,
    )
    .expect("valid");
    let (driver, handle) = KeeperDriver::new(core, socket, DriverClock::start());
    let sink = Arc::new(Collect::default());
    let driver = driver.with_sink(sink.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(driver.run(async move {
        let _ = stopped.await;
    }));
    (handle, addr, stop, task, sink)
}

async fn proxy(
    keeper: SocketAddr,
    identity: &str,
    init: InitPolicy,
) -> (
    ProxyControl,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<ProxyExit>>,
) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind loopback");
    let mut cfg = AgentConfig::new("test_cluster", identity, key());
    cfg.default_interval = Duration::from_millis(50);
    let clock = DriverClock::start();
    let start = WallTime::from_micros(unix_micros(std::time::SystemTime::now()));
    let agent = Agent::new(cfg, start, clock.now()).expect("valid identity");
    let (driver, control) = ProxyDriver::new(agent, socket, keeper, init, clock);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(driver.run(async move {
        let _ = stopped.await;
    }));
    (control, stop, task)
}

async fn wait_for(handle: &KeeperHandle, want: &[(&str, &str)]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen: Vec<(String, String)> = handle
            .call(|k, _| k.proxies("test_cluster").unwrap_or_default())
            .await
            .expect("running")
            .into_iter()
            .map(|p| (p.proxy, p.status.to_string()))
            .collect();
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(p, s)| (p.to_string(), s.to_string()))
            .collect();
        if seen == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited for {want:?}, saw {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn proxies_register_go_up_and_unregister_over_loopback_udp() {
    let (handle, addr, stop_keeper, keeper_task, _) = keeper().await;
    let (a, stop_a, task_a) = proxy(
        addr,
        "10.25.0.11:3000",
        InitPolicy::After(Duration::from_millis(50)),
    )
    .await;
    let (_b, _stop_b, _task_b) = proxy(addr, "10.25.0.12:3000", InitPolicy::Held).await;
    wait_for(
        &handle,
        &[("10.25.0.11:3000", "up"), ("10.25.0.12:3000", "ready")],
    )
    .await;
    assert_eq!(a.state.borrow().phase, Some(Phase::Up));
    assert!(handle.gate("test_cluster".into()).await.is_err());
    // Shutdown unregisters: the keeper deletes the proxy at once.
    stop_a.send(()).expect("proxy running");
    let exit = task_a.await.expect("joined").expect("no io error");
    assert_eq!(exit, ProxyExit::Shutdown(Some(StopReason::Unregistered)));
    wait_for(&handle, &[("10.25.0.12:3000", "ready")]).await;
    stop_keeper.send(()).expect("keeper running");
    keeper_task.await.expect("joined").expect("no io error");
    assert!(
        handle.clusters().await.is_err(),
        "a stopped keeper answers no call"
    );
}

#[tokio::test]
async fn a_cut_off_proxy_is_lost_and_comes_back_when_healed() {
    let (handle, addr, _stop, _task, sink) = keeper().await;
    let (a, _stop_a, _task_a) =
        proxy(addr, "10.25.0.13:3000", InitPolicy::After(Duration::ZERO)).await;
    wait_for(&handle, &[("10.25.0.13:3000", "up")]).await;
    a.faults.cut(true);
    wait_for(&handle, &[("10.25.0.13:3000", "lost")]).await;
    a.faults.cut(false);
    wait_for(&handle, &[("10.25.0.13:3000", "up")]).await;
    // Published in revision order, one revision per change, each once.
    let published = sink.0.lock().expect("not poisoned").clone();
    let revisions: Vec<u64> = published.iter().map(|c| c.revision).collect();
    assert_eq!(revisions, (1..=published.len() as u64).collect::<Vec<_>>());
    let statuses: Vec<_> = published
        .iter()
        .filter_map(|c| match &c.kind {
            ChangeKind::Status(s) => s.to.map(|s| s.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, vec!["ready", "up", "lost", "up"]);
}

#[tokio::test]
async fn the_production_socket_sees_every_datagram_of_a_burst_and_refuses_oversized_ones() {
    use zerokeeper::driver::udp::Udp;
    use zerokeeper::keeper::DropReason;
    let socket = Udp::bind("127.0.0.1:0".parse().expect("valid"))
        .await
        .expect("bind loopback");
    let addr = zerokeeper::driver::DatagramSocket::local_addr(&socket).expect("bound");
    let core = Keeper::new(
        KeeperConfig::default(),
        Keyring::with_default(key()),
        1,
        [7; 32],
        Instant::ZERO,
    )
    .expect("valid");
    let (driver, handle) = KeeperDriver::new(core, socket, DriverClock::start());
    tokio::spawn(driver.run(std::future::pending()));
    // Equal-sized datagrams from one socket, as fast as it can: the kernel may coalesce
    // them (GRO); the keeper must still see each one.
    // Bursts of 100 with a pause between them, so a small kernel receive buffer (it is
    // capped by net.core.rmem_max) cannot overflow on a busy machine.
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
    for _ in 0..20 {
        for _ in 0..100 {
            sender.send_to(&[0u8; 100], addr).expect("sent");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..3 {
        sender.send_to(&[0u8; 1_500], addr).expect("sent");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = handle.metrics().await.expect("running").stats;
        if stats.received == 2_003 {
            assert_eq!(stats.dropped(DropReason::BadMagic), 2_000);
            assert_eq!(stats.dropped(DropReason::Oversized), 3);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "received {} of 2003",
            stats.received
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A store whose commits wait until the test opens its gate, as a slow disk would.
struct SlowDisk {
    inner: zerokeeper::store::MemoryStore,
    entered: std::sync::mpsc::Sender<()>,
    gate: Gate,
}

impl zerokeeper::store::Store for SlowDisk {
    fn boot(&mut self) -> Result<zerokeeper::store::Snapshot, zerokeeper::store::StoreError> {
        self.inner.boot()
    }

    fn commit(
        &mut self,
        changes: &[WallChange],
        blobs: &[zerokeeper::keeper::ConfigBlob],
    ) -> Result<(), zerokeeper::store::StoreError> {
        let _ = self.entered.send(());
        let (open, cv) = &*self.gate;
        let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
        while !*open {
            open = cv.wait(open).unwrap_or_else(|e| e.into_inner());
        }
        self.inner.commit(changes, blobs)
    }

    fn revision(&self) -> u64 {
        self.inner.revision()
    }

    fn generation(&self) -> u64 {
        self.inner.generation()
    }

    fn audit(&self) -> Result<Vec<zerokeeper::store::AuditEntry>, zerokeeper::store::StoreError> {
        self.inner.audit()
    }

    fn changes_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<WallChange>, zerokeeper::store::StoreError> {
        self.inner.changes_after(after, limit)
    }

    fn set_retention(&mut self, changes: usize) {
        self.inner.set_retention(changes);
    }

    fn set_history(&mut self, history: zerokeeper::store::History) {
        self.inner.set_history(history);
    }

    fn reader(
        &self,
    ) -> Result<std::sync::Arc<dyn zerokeeper::store::StoreRead>, zerokeeper::store::StoreError>
    {
        self.inner.reader()
    }
}

type Gate = Arc<(Mutex<bool>, std::sync::Condvar)>;

fn open(gate: &Gate) {
    let (open, cv) = &**gate;
    *open.lock().unwrap_or_else(|e| e.into_inner()) = true;
    cv.notify_all();
}

struct OpenOnDrop(Gate);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        open(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_commit_delays_no_datagram_and_no_answer_is_given_before_it_is_durable() {
    use zerokeeper::driver::keeper::CommitMode;
    use zerokeeper::store::Store;
    let mut inner = zerokeeper::store::MemoryStore::new();
    let snapshot = inner.boot().expect("boots");
    let (entered, entries) = std::sync::mpsc::channel();
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    // However the test ends, the disk lets go (else a failing assertion would leave the
    // store's thread waiting, and the test hanging instead of failing).
    let _release = OpenOnDrop(gate.clone());
    let store = SlowDisk {
        inner,
        entered,
        gate: gate.clone(),
    };
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = socket.local_addr().expect("bound");
    let core = Keeper::restore(
        KeeperConfig::default(),
        Keyring::with_default(key()),
        snapshot.epoch,
        [7; 32],
        Instant::ZERO,
        &snapshot.proxies,
        &snapshot.configs,
        snapshot.revision,
    )
    .expect("restores");
    let (driver, handle) = KeeperDriver::new(core, socket, DriverClock::start());
    let driver = driver
        .with_store(Box::new(store), CommitMode::Thread)
        .expect("the store's thread starts");
    tokio::spawn(driver.run(std::future::pending()));
    // A push: its change goes to the (stalled) disk.
    let pushing = tokio::spawn({
        let handle = handle.clone();
        async move {
            handle
                .push_config("test_cluster".into(), Arc::from(&b"pool = 1\n"[..]))
                .await
        }
    });
    tokio::task::spawn_blocking(move || entries.recv_timeout(Duration::from_secs(10)))
        .await
        .expect("joined")
        .expect("the commit started");
    // While the disk holds the commit, datagrams are still answered: an `up` heartbeat
    // without a token gets its Challenge.
    let proxy = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
    proxy
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut fake = common::FakeProxy::new("10.25.0.11:3000", 1, "127.0.0.1:1");
    proxy
        .send_to(&fake.heartbeat(zerokeeper::wire::ProxyStatus::Up), addr)
        .expect("sent");
    let mut buf = [0u8; 1500];
    let (len, _) = proxy
        .recv_from(&mut buf)
        .expect("answered while the commit is held");
    assert!(matches!(
        zerokeeper::wire::open(&buf[..len], &key()),
        Ok(zerokeeper::wire::Message::Challenge(_))
    ));
    // And the push is not answered: its change is not durable.
    let mut pushing = pushing;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut pushing)
            .await
            .is_err(),
        "answered before durable"
    );
    open(&gate);
    let applied = tokio::time::timeout(Duration::from_secs(10), pushing)
        .await
        .expect("answered once durable")
        .expect("joined")
        .expect("pushed");
    assert_eq!(applied.value.version, 2);
    assert!(applied.value.changed);
    assert!(applied.revision >= 2, "{applied:?}");
}

#[tokio::test]
async fn a_leader_whose_lease_could_have_expired_stops_without_answering_anything_more() {
    use zerokeeper::ha::{LeaseClock, LeaseGate, LeaseLost};
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = socket.local_addr().expect("bound");
    let clock = DriverClock::start();
    let config = KeeperConfig {
        heartbeat_interval: Duration::from_millis(50),
        lost_after: Duration::from_millis(400),
        ..KeeperConfig::default()
    };
    let core = Keeper::new(
        config,
        Keyring::with_default(key()),
        1,
        [7; 32],
        clock.now(),
    )
    .expect("valid");
    // A lease of 3 s, confirmed once and never renewed.
    let mut lease = LeaseClock::new(Duration::from_millis(100));
    let renewal = lease.sent(clock.now());
    lease.answered(renewal, Duration::from_secs(3));
    let gate = LeaseGate::closed();
    gate.set(&lease);
    let (driver, handle) = KeeperDriver::new(core, socket, clock);
    let task = tokio::spawn(driver.with_lease(gate.clone()).run(std::future::pending()));
    let (control, _stop, _proxy) =
        proxy(addr, "10.25.0.11:3000", InitPolicy::After(Duration::ZERO)).await;
    wait_for(&handle, &[("10.25.0.11:3000", "up")]).await;
    // The lease runs out: the driver stops by itself, saying why.
    let ended = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the driver stops once its lease could have expired")
        .expect("joined");
    let error = ended.expect_err("a lost lease is an error");
    assert!(LeaseLost::is(&error), "{error}");
    assert!(!gate.open(clock.now()));
    assert!(handle.clusters().await.is_err(), "it answers nothing more");
    assert_eq!(control.state.borrow().phase, Some(Phase::Up));
}
