//! The admin API's read view and watch end to end: the real router, over a real keeper
//! driver on loopback UDP, with a change hub and a read view built from an empty seed;
//! every answer read with the real client (`zerokeeper::cli::client::Client`) into the
//! shared API types.
//!
//! The driver does not publish into the hub yet, so the changes the view and the watch
//! show here are published by hand (synthetic `WallChange`s); the changes made through
//! the API (remove, push, switch) run on the real keeper core.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use zerokeeper::agent::{Agent, AgentConfig};
use zerokeeper::api::{EventId, WatchEvent};
use zerokeeper::auth::{Key, Keyring};
use zerokeeper::cli::client::{Client, ClientError, EventStream, Exit};
use zerokeeper::cli::format::Output;
use zerokeeper::cli::watch::{Backoff, StatusWatch, Step};
use zerokeeper::driver::keeper::PushTerms;
use zerokeeper::driver::keeper::{KeeperDriver, KeeperHandle};
use zerokeeper::driver::proxy::{InitPolicy, ProxyDriver, ProxyExit};
use zerokeeper::driver::{DriverClock, unix_micros};
use zerokeeper::http::view::{View, ViewSeed};
use zerokeeper::http::{router, serve};
use zerokeeper::hub::ChangeHub;
use zerokeeper::keeper::change::{
    Change, ChangeKind, ConfigCause, ConfigSummary, StatusChange, WallChange,
};
use zerokeeper::keeper::transition::Reason;
use zerokeeper::keeper::{Keeper, KeeperConfig, Status};
use zerokeeper::time::{Instant, WallTime};

const CLUSTER: &str = "test_cluster";
const A: &str = "10.25.0.11:3000";
const B: &str = "10.25.0.12:3000";
const C: &str = "10.25.0.13:3000";
/// The generation of the rig's hub.
const GEN: u64 = 1_733_061_234;
/// The longest any condition is waited for.
const PATIENCE: Duration = Duration::from_secs(10);

fn key() -> Key {
    Key::new(&[0x2a; 32]).expect("valid key")
}

/// A keeper driver, a hub, a view following it, and the router serving them on loopback.
struct Rig {
    rt: Runtime,
    handle: KeeperHandle,
    hub: Arc<ChangeHub>,
    view: View,
    udp: SocketAddr,
    http: SocketAddr,
    server: Option<(oneshot::Sender<()>, JoinHandle<std::io::Result<()>>)>,
    /// Held so the proxies keep running.
    proxies: Vec<(oneshot::Sender<()>, JoinHandle<std::io::Result<ProxyExit>>)>,
}

impl Rig {
    fn start(retention: usize) -> Rig {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let (handle, udp, hub, view) = rt.block_on(async {
            let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind loopback");
            let udp = socket.local_addr().expect("bound");
            let config = KeeperConfig {
                heartbeat_interval: Duration::from_millis(50),
                lost_after: Duration::from_millis(500),
                ready_timeout: Duration::from_secs(30),
                delete_after: Duration::from_secs(30),
                ..KeeperConfig::default()
            };
            let mut core = Keeper::new(
                config,
                Keyring::with_default(key()),
                1,
                [7; 32],
                Instant::ZERO,
            )
            .expect("valid");
            // The hostgroup the tests switch, as the keeper's config file would declare it.
            let hg1 = zerokeeper::keeper::cluster::Hostgroup {
                datasources: ["ds_a", "ds_b", "ds_c"].map(String::from).into(),
                initial: "ds_a".to_owned(),
            };
            core.set_declared_hostgroups(
                [("fresh".to_owned(), [("hg1".to_owned(), hg1)].into())].into(),
            );
            let clock = DriverClock::start();
            let (driver, handle) = KeeperDriver::new(core, socket, clock);
            tokio::spawn(driver.run(std::future::pending()));
            let hub = ChangeHub::new(GEN, 0, retention, Vec::new());
            let seed = ViewSeed {
                generation: GEN,
                ..ViewSeed::default()
            };
            let view = View::new(seed, Default::default(), clock);
            tokio::spawn(view.follow(hub.clone(), std::future::pending()));
            (handle, udp, hub, view)
        });
        let mut rig = Rig {
            rt,
            handle,
            hub,
            view,
            udp,
            http: "127.0.0.1:0".parse().expect("an address"),
            server: None,
            proxies: Vec::new(),
        };
        rig.serve();
        rig
    }

    /// Serves the router (again, on the same port after [`stop_serving`]).
    fn serve(&mut self) {
        let app = router(self.handle.clone(), self.hub.clone(), self.view.clone());
        let want = self.http;
        let (listener, http) = self.rt.block_on(async {
            let listener = TcpListener::bind(want).await.expect("bind loopback");
            let http = listener.local_addr().expect("bound");
            (listener, http)
        });
        self.http = http;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = self.rt.spawn(serve(listener, app, async move {
            let _ = stopped.await;
        }));
        self.server = Some((stop, task));
    }

    /// Stops serving; open watch streams end.
    fn stop_serving(&mut self) {
        if let Some((stop, task)) = self.server.take() {
            let _ = stop.send(());
            self.rt
                .block_on(async { tokio::time::timeout(PATIENCE, task).await })
                .expect("serve returns")
                .expect("joined")
                .expect("no io error");
        }
    }

    fn client(&self) -> Client {
        Client::new(&format!("http://{}", self.http))
    }

    /// Publishes `changes` and waits until the view reflects them.
    fn publish(&self, changes: Vec<WallChange>) {
        let last = changes.last().map_or(0, |c| c.revision);
        self.hub.publish(changes);
        let reflected = self
            .rt
            .block_on(async { tokio::time::timeout(PATIENCE, self.view.wait_for(last)).await })
            .expect("the view follows in time");
        assert!(reflected);
    }

    /// The next revision to publish.
    fn next(&self) -> u64 {
        self.hub.position().1 + 1
    }

    /// Starts a proxy driver sending real heartbeats to the keeper.
    fn proxy(&mut self, cluster: &str, identity: &str, init: InitPolicy) {
        let udp = self.udp;
        let (cluster, identity) = (cluster.to_owned(), identity.to_owned());
        let proxy = self.rt.block_on(async move {
            let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind loopback");
            let mut cfg = AgentConfig::new(&cluster, &identity, key());
            cfg.default_interval = Duration::from_millis(50);
            let clock = DriverClock::start();
            let start = WallTime::from_micros(unix_micros(std::time::SystemTime::now()));
            let agent = Agent::new(cfg, start, clock.now()).expect("valid identity");
            let (driver, _control) = ProxyDriver::new(agent, socket, udp, init, clock);
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(driver.run(async move {
                let _ = stopped.await;
            }));
            (stop, task)
        });
        self.proxies.push(proxy);
    }

    /// Waits until the keeper core itself holds `proxy` with `status`.
    fn wait_core(&self, cluster: &str, proxy: &str, status: &str) {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let name = cluster.to_owned();
            let listed = self
                .rt
                .block_on(
                    self.handle
                        .call(move |k, _| k.proxies(&name).unwrap_or_default()),
                )
                .unwrap_or_default();
            if listed
                .iter()
                .any(|p| p.proxy == proxy && p.status.as_str() == status)
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "waited for {proxy} {status}, saw {listed:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn source() -> SocketAddr {
    "127.0.0.1:40000".parse().expect("an address")
}

fn status(
    revision: u64,
    slot: u32,
    proxy: &str,
    from: Option<Status>,
    to: Option<Status>,
) -> WallChange {
    let at = 1_700_000_000_000 + revision * 1000;
    Change {
        revision,
        at,
        kind: ChangeKind::Status(StatusChange {
            cluster: Arc::from(CLUSTER),
            proxy: Arc::from(proxy),
            slot,
            incarnation: 1_700_000_000_000_000 + u64::from(slot),
            from,
            to,
            reason: if to.is_none() {
                Reason::Unregister
            } else {
                Reason::Heartbeat
            },
            last_heartbeat: Some(at),
            source: source(),
            config_version: 1,
        }),
    }
}

fn config(revision: u64, cluster: &str, version: u64) -> WallChange {
    Change {
        revision,
        at: 1_700_000_000_000 + revision * 1000,
        kind: ChangeKind::Config {
            cluster: Arc::from(cluster),
            config: ConfigSummary {
                version,
                digest: [0xab; 32],
                size: 40,
                base_size: 12,
                datasources: [("hg1".to_owned(), "ds_a".to_owned())].into(),
            },
            cause: ConfigCause::Push,
        },
    }
}

fn paused(revision: u64, paused: bool) -> WallChange {
    Change {
        revision,
        at: 1_700_000_000_000 + revision * 1000,
        kind: ChangeKind::DeletionPaused {
            cluster: Arc::from(CLUSTER),
            paused,
            lost: 2,
            total: 3,
        },
    }
}

/// test_cluster at version 3 with A up, B ready, C lost: revisions 1 to 6.
fn mixed(rig: &Rig) {
    rig.publish(vec![
        config(1, CLUSTER, 3),
        status(2, 1, A, None, Some(Status::Ready)),
        status(3, 1, A, Some(Status::Ready), Some(Status::Up)),
        status(4, 2, B, None, Some(Status::Ready)),
        status(5, 3, C, None, Some(Status::Up)),
        status(6, 3, C, Some(Status::Up), Some(Status::Lost)),
    ]);
}

fn problem(e: &ClientError) -> &zerokeeper::cli::client::Problem {
    match e {
        ClientError::Problem { problem, .. } => problem,
        other => panic!("not a problem answer: {other:?}"),
    }
}

fn next(stream: &mut EventStream) -> (String, String, WatchEvent) {
    let event = stream
        .next_event()
        .expect("readable")
        .expect("an event, not the end");
    let data: WatchEvent = serde_json::from_str(&event.data)
        .unwrap_or_else(|e| panic!("not a watch event ({e}): {}", event.data));
    (event.id.unwrap_or_default(), event.event, data)
}

#[test]
fn every_read_answer_decodes_into_the_shared_types() {
    let rig = Rig::start(100);
    mixed(&rig);
    let client = rig.client();

    let clusters = client.clusters().expect("clusters");
    assert_eq!((clusters.generation, clusters.revision), (GEN, 6));
    assert_eq!(clusters.clusters.len(), 1);
    let cluster = client.cluster(CLUSTER).expect("the cluster");
    assert_eq!(cluster, clusters.clusters[0]);
    assert_eq!(
        (
            cluster.ready,
            cluster.up,
            cluster.lost,
            cluster.config_version
        ),
        (1, 1, 1, 3)
    );
    assert_eq!(
        (cluster.gate.as_str(), cluster.deletion_paused),
        ("closed", false)
    );

    let all = client.listing(None).expect("every proxy");
    assert_eq!((all.generation, all.revision, all.cluster), (GEN, 6, None));
    let names: Vec<(&str, &str)> = all
        .proxies
        .iter()
        .map(|p| (p.proxy.as_str(), p.status.as_str()))
        .collect();
    assert_eq!(names, [(A, "up"), (B, "ready"), (C, "lost")]);
    let a = &all.proxies[0];
    assert_eq!(a.since.as_deref(), Some("2023-11-14T22:13:23.000Z"));
    assert_eq!(
        a.last_heartbeat.as_deref(),
        Some("2023-11-14T22:13:23.000Z")
    );
    assert!(a.since_age_ms.is_some() && a.last_heartbeat_age_ms.is_some());
    assert_eq!(a.source.as_deref(), Some("127.0.0.1:40000"));
    assert!(a.extra.is_empty(), "{:?}", a.extra);
    let one = client.listing(Some(CLUSTER)).expect("the cluster's");
    assert_eq!(one.cluster.as_deref(), Some(CLUSTER));
    assert_eq!(one.proxies.len(), 3);
    assert_eq!(client.proxy(CLUSTER, B).expect("B").status, "ready");

    let gate = client.gate(CLUSTER).expect("the gate");
    assert!(!gate.open);
    let blockers: Vec<(&str, &str)> = gate
        .blockers
        .iter()
        .map(|b| (b.proxy.as_str(), b.status.as_str()))
        .collect();
    assert_eq!(blockers, [(B, "ready"), (C, "lost")]);

    let config = client.config(CLUSTER).expect("the config");
    assert_eq!((config.version, config.size, config.base_size), (3, 40, 12));
    assert_eq!(config.digest, "ab".repeat(32));
    assert_eq!(config.datasources["hg1"], "ds_a");

    assert_eq!(
        client.keys(None).expect("keys"),
        "/zerodb/proxy/test_cluster/status/10.25.0.11:3000->up\n\
         /zerodb/proxy/test_cluster/status/10.25.0.12:3000->ready\n\
         /zerodb/proxy/test_cluster/status/10.25.0.13:3000->lost\n"
    );
    let store = client.store().expect("the store");
    assert_eq!((store.generation, store.revision), (GEN, 6));

    // Mass-loss protection shows in the cluster and in every proxy of it.
    rig.publish(vec![paused(7, true)]);
    assert!(
        client
            .cluster(CLUSTER)
            .expect("the cluster")
            .deletion_paused
    );
    assert!(
        client
            .proxies(Some(CLUSTER))
            .expect("listing")
            .iter()
            .all(|p| p.deletion_paused)
    );
    // A deletion takes the proxy out and opens no gate while another blocks.
    rig.publish(vec![status(8, 2, B, Some(Status::Ready), None)]);
    let e = client.proxy(CLUSTER, B).expect_err("deleted");
    assert_eq!(e.exit(), Exit::NotFound);
    let p = problem(&e);
    assert_eq!(p.short_type(), "unknown-proxy");
    assert_eq!(
        (p.body.cluster.as_deref(), p.body.proxy.as_deref()),
        (Some(CLUSTER), Some(B))
    );
    assert_eq!(client.gate(CLUSTER).expect("the gate").blockers.len(), 1);
}

#[test]
fn change_answers_and_refusals_decode_into_the_shared_types() {
    let mut rig = Rig::start(100);
    let client = rig.client();

    // Push and switch run on the real core (the cluster is new there: its gate is open).
    let pushed = client
        .push_config("fresh", b"pool = 1\n", PushTerms::CREATE)
        .expect("pushed");
    assert_eq!(
        (pushed.cluster.as_str(), pushed.version, pushed.changed),
        ("fresh", 2, true)
    );
    let switched = client
        .switch("fresh", "hg1", "ds_a", "ds_b", None)
        .expect("switched");
    assert_eq!(
        (
            switched.version,
            switched.from.as_str(),
            switched.to.as_str()
        ),
        (3, "ds_a", "ds_b")
    );
    let e = client
        .switch("fresh", "hg1", "ds_a", "ds_c", None)
        .expect_err("hg1 is served by ds_b now");
    assert_eq!(e.exit(), Exit::Conflict);
    let p = problem(&e);
    assert_eq!(p.short_type(), "datasource-mismatch");
    assert_eq!(
        (
            p.body.hostgroup.as_deref(),
            p.body.expected.as_deref(),
            p.body.actual.as_deref()
        ),
        (Some("hg1"), Some("ds_a"), Some("ds_b"))
    );
    assert_eq!(
        p.body.choices.as_deref(),
        Some(["ds_a".to_owned(), "ds_c".to_owned()].as_slice())
    );

    // A real proxy, held at ready: the gate of its cluster is closed.
    rig.proxy(CLUSTER, A, InitPolicy::Held);
    rig.wait_core(CLUSTER, A, "ready");
    let e = client
        .push_config(CLUSTER, b"x", PushTerms::CREATE)
        .expect_err("the gate is closed");
    assert_eq!(e.exit(), Exit::GateClosed);
    let blockers: Vec<(&str, &str)> = problem(&e)
        .blockers()
        .iter()
        .map(|b| (b.proxy.as_str(), b.status.as_str()))
        .collect();
    assert_eq!(blockers, [(A, "ready")]);
    assert_eq!(
        e.report(),
        [
            "error: gate closed for cluster test_cluster: 10.25.0.11:3000 is ready".to_owned(),
            "  blocked by 10.25.0.11:3000 (ready)".to_owned(),
        ]
    );
    let removed = client.remove(CLUSTER, A, true).expect("removed");
    assert_eq!(
        (removed.proxy.as_str(), removed.status.as_str()),
        (A, "ready")
    );

    // Refusals of the view and of the core alike.
    let e = client.cluster("bad name").expect_err("invalid");
    assert_eq!(
        (e.exit(), problem(&e).short_type()),
        (Exit::Invalid, "invalid-name")
    );
    let e = client.cluster("nope").expect_err("unknown");
    assert_eq!(
        (e.exit(), problem(&e).body.cluster.as_deref()),
        (Exit::NotFound, Some("nope"))
    );
    let e = client.remove("nope", A, false).expect_err("unknown");
    assert_eq!(problem(&e).short_type(), "unknown-cluster");
    assert_eq!(
        problem(&e).body.detail.as_deref(),
        Some("no cluster named nope")
    );
}

#[test]
fn a_watch_resumes_after_a_revision_with_exactly_the_changes_after_it() {
    let rig = Rig::start(100);
    mixed(&rig);
    let client = rig.client();
    let mut stream = client
        .watch(None, Some(&format!("{GEN}-3")))
        .expect("a stream");
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (id, kind, data) = next(&mut stream);
        assert_eq!(id, format!("{GEN}-{}", data.revision));
        assert_eq!((kind.as_str(), data.kind.as_str()), ("status", "status"));
        assert_eq!(data.generation, GEN);
        seen.push((data.revision, data.proxy.unwrap_or_default(), data.to));
    }
    assert_eq!(
        seen,
        [
            (4, B.to_owned(), Some("ready".to_owned())),
            (5, C.to_owned(), Some("up".to_owned())),
            (6, C.to_owned(), Some("lost".to_owned())),
        ]
    );
    // Then live, in order, whatever the kind.
    rig.publish(vec![paused(7, true), config(8, "other", 2)]);
    let (id, kind, data) = next(&mut stream);
    assert_eq!(
        (id, kind),
        (format!("{GEN}-7"), "deletion_paused".to_owned())
    );
    assert_eq!((data.lost, data.total), (Some(2), Some(3)));
    let (_, kind, data) = next(&mut stream);
    assert_eq!(
        (kind.as_str(), data.cluster.as_deref(), data.version),
        ("config", Some("other"), Some(2))
    );

    // A cluster's watch skips the others' changes; the current position is fine.
    let mut only = client
        .watch(Some(CLUSTER), Some(&format!("{GEN}-8")))
        .expect("a stream");
    rig.publish(vec![config(9, "other", 3), config(10, CLUSTER, 4)]);
    let (id, _, data) = next(&mut only);
    assert_eq!((id, data.version), (format!("{GEN}-10"), Some(4)));
}

#[test]
fn after_takes_a_bare_revision_or_an_event_id_and_the_header_wins() {
    let rig = Rig::start(100);
    mixed(&rig);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(PATIENCE))
        .build()
        .into();
    let first_id = |path: &str, header: Option<&str>| -> String {
        let mut request = agent.get(format!("http://{}{path}", rig.http));
        if let Some(id) = header {
            request = request.header("last-event-id", id);
        }
        let response = request.call().expect("an answer");
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let mut reader = std::io::BufReader::new(response.into_body().into_reader());
        let mut line = String::new();
        loop {
            line.clear();
            std::io::BufRead::read_line(&mut reader, &mut line).expect("a line");
            if let Some(id) = line.strip_prefix("id: ") {
                return id.trim().to_owned();
            }
        }
    };
    assert_eq!(first_id("/v1/watch?after=4", None), format!("{GEN}-5"));
    assert_eq!(
        first_id(&format!("/v1/watch?after={GEN}-2"), None),
        format!("{GEN}-3")
    );
    assert_eq!(
        first_id("/v1/watch?after=4", Some(&format!("{GEN}-1"))),
        format!("{GEN}-2")
    );
}

#[test]
fn positions_the_hub_cannot_continue_from_are_410_naming_what_it_holds() {
    let rig = Rig::start(3);
    rig.publish((1..=10).map(|r| paused(r, r % 2 == 1)).collect());
    let client = rig.client();
    for position in [
        format!("{GEN}-2"),
        format!("{GEN}-11"),
        format!("{}-9", GEN + 1),
    ] {
        let e = client
            .watch(None, Some(&position))
            .expect_err("not continuable");
        assert_eq!(e.exit(), Exit::Gone, "{position}");
        let p = problem(&e);
        assert_eq!((p.status, p.short_type()), (410, "gone"), "{position}");
        let gone = p.body.gone().expect("oldest, current, generation");
        assert_eq!(
            (gone.oldest, gone.current, gone.generation),
            (8, 10, GEN),
            "{position}"
        );
    }
    // Right before the oldest held, and the current position, are fine.
    for position in [format!("{GEN}-7"), format!("{GEN}-10")] {
        client.watch(None, Some(&position)).expect("continuable");
    }
}

/// More changes than a stalled watcher's socket buffers hold, by far: it stops reading
/// from the hub while the view applies them all and the history moves past it.
const FLOOD: u64 = 200_000;

/// Publishes [`FLOOD`] changes after the current revision.
fn flood(rig: &Rig) {
    let first = rig.next();
    rig.publish(
        (first..first + FLOOD)
            .map(|r| paused(r, r % 2 == 1))
            .collect(),
    );
}

#[test]
fn a_watcher_that_falls_out_of_the_history_gets_a_gone_event_then_the_end() {
    let rig = Rig::start(4);
    mixed(&rig);
    let client = rig.client();
    let mut stream = client
        .watch(None, Some(&format!("{GEN}-6")))
        .expect("a stream");
    // It reads nothing while the flood is published: the server's writes to it stall.
    flood(&rig);
    let current = 6 + FLOOD;
    let mut last = 6;
    let gone = loop {
        let event = stream
            .next_event()
            .expect("readable")
            .expect("an event before the end");
        if event.event == "gone" {
            // The last id stays that of the last change passed on (none, if it fell
            // behind before any reached it).
            let want = (last > 6).then(|| format!("{GEN}-{last}"));
            assert_eq!(event.id, want);
            break event;
        }
        let data: WatchEvent = serde_json::from_str(&event.data).expect("a watch event");
        assert_eq!(data.revision, last + 1, "no gap before the gone event");
        last = data.revision;
    };
    assert!(last < current, "the watcher fell behind");
    let body: zerokeeper::api::ProblemBody = serde_json::from_str(&gone.data).expect("JSON");
    assert_eq!(body.problem_type, "urn:zerokeeper:problem:gone");
    assert_eq!(body.status, Some(410));
    let gone = body.gone().expect("the positions");
    assert!(gone.oldest > last + 1, "{gone:?} after {last}");
    assert_eq!((gone.current, gone.generation), (current, GEN));
    assert_eq!(stream.next_event().expect("a clean end"), None);
    // Resuming from where it was is 410; the view never fell behind.
    let e = client
        .watch(None, Some(&format!("{GEN}-{last}")))
        .expect_err("gone");
    assert_eq!(e.exit(), Exit::Gone);
    assert_eq!(
        client.listing(None).expect("the view answers").revision,
        current
    );
}

#[test]
fn a_stopped_keeper_answers_503_from_the_view_and_the_watch() {
    let rig = Rig::start(100);
    mixed(&rig);
    rig.hub.close();
    let client = rig.client();
    let deadline = std::time::Instant::now() + PATIENCE;
    let e = loop {
        // The follower marks the view stopped once it has applied what was left.
        match client.clusters() {
            Err(e) => break e,
            Ok(_) => assert!(std::time::Instant::now() < deadline, "still answering"),
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(problem(&e).short_type(), "keeper-stopped");
    let e = client.watch(None, None).expect_err("stopped");
    assert_eq!(
        (problem(&e).status, problem(&e).short_type()),
        (503, "keeper-stopped")
    );
}

/// A status watch against the rig that never sleeps: a test has no reason to.
fn status_watch(rig: &Rig, output: Output) -> StatusWatch {
    StatusWatch::new(rig.client(), None, output).with_backoff(Backoff {
        first: Duration::from_millis(100),
        max: Duration::from_secs(5),
    })
}

fn printed(step: Step) -> String {
    match step {
        Step::Print(text) => text,
        other => panic!("not printed: {other:?}"),
    }
}

#[test]
fn status_watch_prints_the_listing_then_each_change_and_lists_again_after_gone() {
    let rig = Rig::start(4);
    mixed(&rig);
    let mut watch = status_watch(&rig, Output::Table);
    let listing = printed(watch.step().expect("the listing"));
    assert!(listing.starts_with("CLUSTER "), "{listing}");
    assert_eq!(listing.lines().count(), 4, "{listing}");
    assert_eq!(
        watch.position(),
        Some(EventId {
            generation: GEN,
            revision: 6
        })
    );
    rig.publish(vec![
        status(7, 2, B, Some(Status::Ready), Some(Status::Up)),
        paused(8, true),
    ]);
    let line = printed(watch.step().expect("a change"));
    assert!(
        line.ends_with(" test_cluster 10.25.0.12:3000 ready -> up (heartbeat)\n"),
        "{line}"
    );
    let line = printed(watch.step().expect("a change"));
    assert!(
        line.ends_with(" test_cluster deletion paused (2 of 3 proxies lost)\n"),
        "{line}"
    );

    // It falls out of the history while not reading: it prints what reached it, is
    // told, lists again and carries on from there.
    flood(&rig);
    let current = 8 + FLOOD;
    let note = loop {
        match watch.step().expect("a step") {
            Step::Print(line) => assert!(line.contains(" deletion "), "{line}"),
            Step::Note(note) => break note,
            other => panic!("neither a line nor a note: {other:?}"),
        }
    };
    assert!(
        note.starts_with("watch: the keeper no longer holds the changes after ")
            && note.contains(&format!(
                " to {current} of generation {GEN}); listing again"
            )),
        "{note}"
    );
    let listing = printed(watch.step().expect("the listing again"));
    assert!(listing.starts_with("CLUSTER "), "{listing}");
    assert_eq!(watch.position().map(|p| p.revision), Some(current));
    rig.publish(vec![status(
        current + 1,
        1,
        A,
        Some(Status::Up),
        Some(Status::Lost),
    )]);
    let line = printed(watch.step().expect("a change"));
    assert!(line.contains(" 10.25.0.11:3000 up -> lost "), "{line}");
}

#[test]
fn status_watch_reconnects_with_backoff_and_resumes_after_the_last_change_it_saw() {
    let mut rig = Rig::start(100);
    mixed(&rig);
    let mut watch = status_watch(&rig, Output::Keys);
    let listing = printed(watch.step().expect("the listing"));
    assert_eq!(
        listing,
        "/zerodb/proxy/test_cluster/status/10.25.0.11:3000->up\n\
         /zerodb/proxy/test_cluster/status/10.25.0.12:3000->ready\n\
         /zerodb/proxy/test_cluster/status/10.25.0.13:3000->lost\n"
    );
    rig.publish(vec![status(7, 2, B, Some(Status::Ready), Some(Status::Up))]);
    assert_eq!(
        printed(watch.step().expect("a change")),
        "PUT /zerodb/proxy/test_cluster/status/10.25.0.12:3000->up\n"
    );

    // The server goes away: the stream ends, then connecting fails, with growing pauses.
    rig.stop_serving();
    let mut delays = Vec::new();
    for _ in 0..3 {
        match watch.step().expect("retried, not fatal") {
            Step::Wait { delay, note } => {
                assert!(note.starts_with("watch: connection lost ("), "{note}");
                assert!(
                    note.ends_with(&format!("; reconnecting in {}ms", delay.as_millis())),
                    "{note}"
                );
                delays.push(delay.as_millis());
            }
            other => panic!("not a wait: {other:?}"),
        }
    }
    assert_eq!(delays, [100, 200, 400]);

    // Changes made meanwhile arrive once it is back, from where the watch stopped; a
    // status change only, in keys mode.
    rig.publish(vec![
        paused(8, true),
        status(9, 3, C, Some(Status::Lost), None),
    ]);
    rig.serve();
    assert_eq!(
        printed(watch.step().expect("the change missed")),
        "DELETE /zerodb/proxy/test_cluster/status/10.25.0.13:3000\n"
    );

    // After a restore (a new generation) the position is gone: it lists again.
    rig.stop_serving();
    assert!(matches!(watch.step(), Ok(Step::Wait { .. })));
    rig.hub.set_generation(GEN + 1);
    rig.view.reseed(ViewSeed {
        generation: GEN + 1,
        revision: 9,
        ..Default::default()
    });
    rig.serve();
    assert!(matches!(watch.step(), Ok(Step::Note(_))));
    assert_eq!(printed(watch.step().expect("the fresh listing")), "");
    assert_eq!(
        watch.position(),
        Some(EventId {
            generation: GEN + 1,
            revision: 9
        })
    );
}

#[test]
fn status_watch_in_json_prints_the_listing_as_one_line_then_one_event_a_line() {
    let rig = Rig::start(100);
    mixed(&rig);
    let mut watch = status_watch(&rig, Output::Json);
    let listing = printed(watch.step().expect("the listing"));
    assert_eq!(listing.lines().count(), 1);
    let listing: zerokeeper::api::ProxyList =
        serde_json::from_str(&listing).expect("the listing as JSON");
    assert_eq!((listing.revision, listing.proxies.len()), (6, 3));
    rig.publish(vec![paused(7, false)]);
    let line = printed(watch.step().expect("a change"));
    let event: WatchEvent = serde_json::from_str(&line).expect("an event");
    assert_eq!(
        (event.revision, event.kind.as_str()),
        (7, "deletion_resumed")
    );
}
