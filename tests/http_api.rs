//! The admin HTTP API end to end: a keeper assembled as every keeper is
//! (`zerokeeper::server`) on loopback UDP, proxy drivers sending real heartbeats, the
//! router served on loopback TCP, and a blocking HTTP client.
//!
//! Every refusal is checked for its status, its problem+json body, and that nothing
//! stored changed (same clusters, same listing, same config versions and digests, no new
//! change). Reads are served from the read view, which follows the change hub.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use zerokeeper::agent::{Agent, AgentConfig};
use zerokeeper::auth::{Key, Keyring};
use zerokeeper::configdoc::{ConfigVersion, MAX_CONFIG_BYTES};
use zerokeeper::driver::keeper::KeeperHandle;
use zerokeeper::driver::proxy::{InitPolicy, ProxyControl, ProxyDriver, ProxyExit};
use zerokeeper::driver::{DriverClock, unix_micros};
use zerokeeper::http::MAX_CONFIG_BODY;
use zerokeeper::hub::{ChangeHub, DEFAULT_RETENTION};
use zerokeeper::keeper::{AdminAction, ChangeKind, DropReason, KeeperConfig, Outcome};
use zerokeeper::server::{self, Setup};
use zerokeeper::time::WallTime;

const CLUSTER: &str = "test_cluster";
const A: &str = "10.25.0.11:3000";
const B: &str = "10.25.0.12:3000";
const C: &str = "10.25.0.13:3000";
/// The longest any condition is waited for.
const PATIENCE: Duration = Duration::from_secs(10);

fn key() -> Key {
    Key::new(&[0x2a; 32]).expect("valid key")
}

/// One answer, read whole.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    allow: Option<String>,
    etag: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// Asserts a problem+json answer of this status and type; returns its body.
    fn problem(&self, status: u16, kind: &str) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.content_type, "application/problem+json", "{self:?}");
        let body = self.json();
        assert_eq!(
            body["type"],
            format!("urn:zerokeeper:problem:{kind}"),
            "{body}"
        );
        assert_eq!(body["status"], status, "{body}");
        assert!(body["title"].is_string(), "{body}");
        assert!(body["detail"].is_string(), "{body}");
        body
    }

    /// Asserts a 200 JSON answer; returns its body.
    fn ok_json(&self) -> Value {
        assert_eq!(self.status, 200, "{self:?}");
        assert_eq!(self.content_type, "application/json", "{self:?}");
        self.json()
    }

    /// Asserts a 200 text answer; returns its body.
    fn ok_text(&self) -> &str {
        assert_eq!(self.status, 200, "{self:?}");
        assert_eq!(self.content_type, "text/plain; charset=utf-8", "{self:?}");
        &self.body
    }
}

/// A blocking HTTP client, run off the runtime's threads.
#[derive(Clone)]
struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(PATIENCE))
            .build()
            .into();
        Client {
            base: format!("http://{addr}"),
            agent,
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Answer {
        let agent = self.agent.clone();
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let what = format!("{method} {path}");
        tokio::task::spawn_blocking(move || {
            let answer = match body {
                Some(body) => agent.run(request.body(body).expect("valid request")),
                None => agent.run(request.body(ureq::SendBody::none()).expect("valid request")),
            };
            let mut response = answer.unwrap_or_else(|e| panic!("{what}: {e}"));
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .map(|v| v.to_str().expect("ASCII header").to_owned())
            };
            let content_type = header("content-type").unwrap_or_default();
            let allow = header("allow");
            let etag = header("etag");
            let status = response.status().as_u16();
            let body = response
                .body_mut()
                .read_to_string()
                .unwrap_or_else(|e| panic!("{what}: body: {e}"));
            Answer {
                status,
                content_type,
                allow,
                etag,
                body,
            }
        })
        .await
        .expect("request thread")
    }

    async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, &[], None).await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.send("DELETE", path, &[], None).await
    }

    async fn put(&self, path: &str, body: impl Into<Vec<u8>>) -> Answer {
        self.send("PUT", path, &[], Some(body.into())).await
    }

    async fn post_json(&self, path: &str, body: impl Into<Vec<u8>>) -> Answer {
        self.send(
            "POST",
            path,
            &[("content-type", "application/json")],
            Some(body.into()),
        )
        .await
    }

    /// Opens `path` as an event stream; `connected` fires once the answer's head has
    /// arrived (the server has subscribed by then); then reads until `count` events.
    fn watch(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        count: usize,
    ) -> (oneshot::Receiver<Answer>, JoinHandle<Vec<SseEvent>>) {
        let agent = self.agent.clone();
        let mut request = ureq::http::Request::builder()
            .method("GET")
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (head_tx, head) = oneshot::channel();
        let task = tokio::task::spawn_blocking(move || {
            let response = agent
                .run(request.body(ureq::SendBody::none()).expect("valid request"))
                .expect("watch request");
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .map(|v| v.to_str().expect("ASCII header").to_owned())
                    .unwrap_or_default()
            };
            let _ = head_tx.send(Answer {
                status: response.status().as_u16(),
                content_type: header("content-type"),
                allow: None,
                etag: None,
                body: String::new(),
            });
            let reader = BufReader::new(response.into_body().into_reader());
            read_events(reader, count)
        });
        (head, task)
    }
}

/// One server-sent event, with its lines as received.
#[derive(Debug, Clone, PartialEq)]
struct SseEvent {
    lines: Vec<String>,
    /// `GENERATION-REVISION`.
    id: String,
    kind: String,
    data: Value,
}

/// Reads events until `count` (or the end of the stream); comments are skipped.
fn read_events(mut reader: impl BufRead, count: usize) -> Vec<SseEvent> {
    let mut events = Vec::new();
    let mut lines = Vec::new();
    while events.len() < count {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => panic!("reading the event stream: {e}"),
        }
        let line = line
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("unterminated line {line:?}"))
            .to_owned();
        if line.starts_with(':') {
            continue;
        }
        if !line.is_empty() {
            lines.push(line);
            continue;
        }
        if lines.is_empty() {
            continue;
        }
        let field = |name: &str| {
            lines
                .iter()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .unwrap_or_else(|| panic!("no {name} in {lines:?}"))
                .to_owned()
        };
        events.push(SseEvent {
            // The last event of a watcher that fell behind (`gone`) has no id.
            id: lines
                .iter()
                .find_map(|l| l.strip_prefix("id: "))
                .unwrap_or_default()
                .to_owned(),
            kind: field("event"),
            data: serde_json::from_str(&field("data")).expect("JSON data"),
            lines: std::mem::take(&mut lines),
        });
    }
    events
}

/// What is stored, as the API shows it: a refused call must leave it as it was.
#[derive(Debug, PartialEq)]
struct Stored {
    clusters: Value,
    keys: String,
    /// (cluster, version, digest, datasources) of every cluster.
    configs: Vec<(String, Value, Value, Value)>,
    /// The hub's revision (0: no change yet).
    last_event: u64,
}

/// A keeper driver, its HTTP server, and the proxies of a test.
struct Rig {
    handle: KeeperHandle,
    hub: Arc<ChangeHub>,
    udp: SocketAddr,
    client: Client,
    stop_keeper: Option<oneshot::Sender<()>>,
    keeper_task: Option<JoinHandle<std::io::Result<()>>>,
    stop_http: Option<oneshot::Sender<()>>,
    http_task: Option<JoinHandle<std::io::Result<()>>>,
    /// Held so the proxies keep running (dropping the sender shuts one down).
    proxies: Vec<(oneshot::Sender<()>, JoinHandle<std::io::Result<ProxyExit>>)>,
}

impl Rig {
    async fn start() -> Rig {
        Rig::with_retention(DEFAULT_RETENTION).await
    }

    /// A rig whose change hub keeps only the latest `retention` changes.
    async fn with_retention(retention: usize) -> Rig {
        Rig::with(retention, KeeperConfig::default().max_clusters).await
    }

    /// A rig whose keeper holds at most `max_clusters` clusters.
    async fn with_max_clusters(max_clusters: usize) -> Rig {
        Rig::with(DEFAULT_RETENTION, max_clusters).await
    }

    async fn with(retention: usize, max_clusters: usize) -> Rig {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind loopback");
        let udp = socket.local_addr().expect("bound");
        let config = KeeperConfig {
            heartbeat_interval: Duration::from_millis(50),
            lost_after: Duration::from_millis(500),
            ready_timeout: Duration::from_secs(30),
            delete_after: Duration::from_secs(30),
            max_clusters,
            ..KeeperConfig::default()
        };
        let mut setup = Setup::new(config, Keyring::with_default(key()));
        setup.token_secret = [7; 32];
        setup.retention = retention;
        // The hostgroup the tests switch, as the keeper's config file would declare it.
        let hg1 = zerokeeper::keeper::cluster::Hostgroup {
            datasources: ["ds_a", "ds_b", "ds_c"].map(String::from).into(),
            initial: "ds_a".to_owned(),
        };
        setup.hostgroups = [(CLUSTER.to_owned(), [("hg1".to_owned(), hg1)].into())].into();
        let (stop_keeper, stopped) = oneshot::channel::<()>();
        setup.stop_driver = Some(Box::pin(async move {
            let _ = stopped.await;
        }));
        let (stop_http, http_stopped) = oneshot::channel::<()>();
        setup.stop_http = Some(Box::pin(async move {
            let _ = http_stopped.await;
        }));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound");
        let running = server::start(setup, socket, listener, std::future::pending())
            .await
            .expect("the keeper starts");
        let (handle, hub) = (running.handle.clone(), running.hub.clone());
        let (keeper_task, http_task) = (running.keeper_task, running.http_task);
        Rig {
            handle,
            hub,
            udp,
            client: Client::new(addr),
            stop_keeper: Some(stop_keeper),
            keeper_task: Some(keeper_task),
            stop_http: Some(stop_http),
            http_task: Some(http_task),
            proxies: Vec::new(),
        }
    }

    /// Starts a proxy driver sending real heartbeats to the keeper.
    async fn proxy(&mut self, cluster: &str, identity: &str, init: InitPolicy) -> ProxyControl {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind loopback");
        let mut cfg = AgentConfig::new(cluster, identity, key());
        cfg.default_interval = Duration::from_millis(50);
        let clock = DriverClock::start();
        let start = WallTime::from_micros(unix_micros(std::time::SystemTime::now()));
        let agent = Agent::new(cfg, start, clock.now()).expect("valid identity");
        let (driver, control) = ProxyDriver::new(agent, socket, self.udp, init, clock);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(driver.run(async move {
            let _ = stopped.await;
        }));
        self.proxies.push((stop, task));
        control
    }

    /// Waits until the keeper lists exactly these (cluster, proxy, status).
    async fn wait_for(&self, want: &[(&str, &str, &str)]) {
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(c, p, s)| (c.to_string(), p.to_string(), s.to_string()))
            .collect();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            // The core itself (its O(n) listing is fine for a test).
            let seen: Vec<(String, String, String)> = self
                .handle
                .call(|k, _| {
                    k.clusters()
                        .into_iter()
                        .flat_map(|c| k.proxies(&c.name).unwrap_or_default())
                        .map(|p| (p.cluster, p.proxy, p.status.to_string()))
                        .collect()
                })
                .await
                .expect("running");
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

    /// test_cluster with A up, B lost and C ready: the gate is closed by B and C.
    /// Returns C's control.
    async fn mixed_cluster(&mut self) -> ProxyControl {
        self.proxy(CLUSTER, A, InitPolicy::After(Duration::ZERO))
            .await;
        let b = self
            .proxy(CLUSTER, B, InitPolicy::After(Duration::ZERO))
            .await;
        let c = self.proxy(CLUSTER, C, InitPolicy::Held).await;
        self.wait_for(&[
            (CLUSTER, A, "up"),
            (CLUSTER, B, "up"),
            (CLUSTER, C, "ready"),
        ])
        .await;
        b.faults.cut(true);
        self.wait_for(&[
            (CLUSTER, A, "up"),
            (CLUSTER, B, "lost"),
            (CLUSTER, C, "ready"),
        ])
        .await;
        c
    }

    /// Everything stored, read through the API.
    async fn stored(&self) -> Stored {
        let clusters = self.client.get("/v1/clusters").await.ok_json();
        let keys = self.client.get("/v1/keys").await.ok_text().to_owned();
        let mut configs = Vec::new();
        for cluster in clusters["clusters"].as_array().expect("array") {
            let name = cluster["cluster"].as_str().expect("cluster").to_owned();
            let config = self
                .client
                .get(&format!("/v1/clusters/{name}/config"))
                .await
                .ok_json();
            configs.push((
                name,
                config["version"].clone(),
                config["digest"].clone(),
                config["datasources"].clone(),
            ));
        }
        Stored {
            // The listing's revision moves with the audit record of a refusal.
            clusters: without(clusters, &["revision"]),
            keys,
            configs,
            last_event: self.last_event(),
        }
    }

    /// The revision of the hub's latest change that changed something: the audit
    /// record of a refused request (an `admin` change with `"result": "refused"`) is not
    /// one (0: none yet).
    fn last_event(&self) -> u64 {
        let (generation, _) = self.hub.position();
        let from = self.hub.oldest().saturating_sub(1);
        let changes = self
            .hub
            .read_after(generation, from, usize::MAX)
            .expect("the hub holds the history");
        changes
            .iter()
            .rev()
            .find(|c| {
                !matches!(
                    c.kind,
                    ChangeKind::Admin {
                        action: AdminAction::Refused { .. },
                        ..
                    }
                )
            })
            .map_or(0, |c| c.revision)
    }

    /// Stops the keeper task (the HTTP server keeps running).
    async fn stop_keeper(&mut self) {
        if let Some(stop) = self.stop_keeper.take() {
            stop.send(()).expect("keeper running");
        }
        if let Some(task) = self.keeper_task.take() {
            task.await.expect("joined").expect("no io error");
        }
    }
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "waited for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_answer_ok() {
    let rig = Rig::start().await;
    assert_eq!(rig.client.get("/livez").await.ok_text(), "ok\n");
    assert_eq!(rig.client.get("/readyz").await.ok_text(), "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_endpoints_answer_with_the_documented_shapes() {
    let mut rig = Rig::start().await;
    rig.proxy(CLUSTER, A, InitPolicy::After(Duration::ZERO))
        .await;
    rig.proxy(CLUSTER, "[::1]:3000", InitPolicy::Held).await;
    rig.proxy("other", B, InitPolicy::After(Duration::ZERO))
        .await;
    rig.wait_for(&[
        ("other", B, "up"),
        (CLUSTER, A, "up"),
        (CLUSTER, "[::1]:3000", "ready"),
    ])
    .await;

    let clusters = rig.client.get("/v1/clusters").await.ok_json();
    assert!(
        clusters["generation"].is_u64() && clusters["revision"].is_u64(),
        "{clusters}"
    );
    // The rollout members depend on whether the held proxy has pulled its config yet:
    // checked apart, where they do not.
    let rollout = ["rollout", "running", "pending", "rejected"];
    let listed: Vec<Value> = clusters["clusters"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|c| without(c.clone(), &rollout))
        .collect();
    assert_eq!(
        (
            clusters["clusters"][0]["rollout"].as_str(),
            clusters["clusters"][0]["running"].as_u64()
        ),
        (Some("converged"), Some(1)),
        "{clusters}"
    );
    assert_eq!(
        json!({"clusters": listed}),
        json!({"clusters": [
            {"cluster": "other", "ready": 0, "up": 1, "lost": 0, "config_version": 1, "gate": "open", "deletion_paused": false, "frozen": false},
            {"cluster": CLUSTER, "ready": 1, "up": 1, "lost": 0, "config_version": 1, "gate": "closed", "deletion_paused": false, "frozen": false},
        ]})
    );
    let one = rig.client.get("/v1/clusters/test_cluster").await.ok_json();
    assert_eq!(without(one, &rollout), listed[1]);

    let all = rig.client.get("/v1/proxies").await.ok_json();
    assert!(all["revision"].is_u64(), "{all}");
    let listed: Vec<(&str, &str, &str)> = all["proxies"]
        .as_array()
        .expect("array")
        .iter()
        .map(|p| {
            (
                p["cluster"].as_str().expect("cluster"),
                p["proxy"].as_str().expect("proxy"),
                p["status"].as_str().expect("status"),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("other", B, "up"),
            (CLUSTER, A, "up"),
            (CLUSTER, "[::1]:3000", "ready"),
        ]
    );
    let a = &all["proxies"][1];
    for field in [
        "incarnation",
        "last_heartbeat_age_ms",
        "since_age_ms",
        "config_version",
    ] {
        assert!(a[field].is_u64(), "{field} in {a}");
    }
    for field in ["last_heartbeat", "since"] {
        let at = a[field].as_str().expect("a string");
        humantime::parse_rfc3339(at).unwrap_or_else(|e| panic!("{field} {at}: {e}"));
    }
    let source: SocketAddr = a["source"]
        .as_str()
        .expect("source")
        .parse()
        .expect("address");
    assert!(source.ip().is_loopback());

    let cluster_proxies = rig
        .client
        .get("/v1/clusters/test_cluster/proxies")
        .await
        .ok_json();
    assert_eq!(cluster_proxies["cluster"], CLUSTER);
    let names: Vec<&str> = cluster_proxies["proxies"]
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["proxy"].as_str().expect("proxy"))
        .collect();
    assert_eq!(names, vec![A, "[::1]:3000"]);

    let one = rig
        .client
        .get("/v1/clusters/test_cluster/proxies/10.25.0.11:3000")
        .await
        .ok_json();
    assert_eq!(
        (one["cluster"].as_str(), one["proxy"].as_str()),
        (Some(CLUSTER), Some(A))
    );
    assert_eq!(one["status"], "up");
    // An IPv6 identity arrives percent-encoded.
    let v6 = rig
        .client
        .get("/v1/clusters/test_cluster/proxies/%5B%3A%3A1%5D%3A3000")
        .await
        .ok_json();
    assert_eq!(
        (v6["proxy"].as_str(), v6["status"].as_str()),
        (Some("[::1]:3000"), Some("ready"))
    );

    let gate = rig
        .client
        .get("/v1/clusters/test_cluster/gate")
        .await
        .ok_json();
    assert_eq!(
        gate,
        json!({"cluster": CLUSTER, "open": false, "blockers": [{"proxy": "[::1]:3000", "status": "ready"}]})
    );
    let gate = rig.client.get("/v1/clusters/other/gate").await.ok_json();
    assert_eq!(
        gate,
        json!({"cluster": "other", "open": true, "blockers": []})
    );

    let config = rig.client.get("/v1/clusters/other/config").await.ok_json();
    let initial = ConfigVersion::initial();
    assert_eq!(
        config,
        json!({
            "cluster": "other",
            "version": 1,
            "digest": hex(&initial.digest),
            "size": initial.bytes.len(),
            "base_size": 0,
            "datasources": {},
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_endpoints_print_exactly_the_seed_lines() {
    let mut rig = Rig::start().await;
    assert_eq!(rig.client.get("/v1/keys").await.ok_text(), "");
    let _c = rig.mixed_cluster().await;
    rig.proxy("other", A, InitPolicy::After(Duration::ZERO))
        .await;
    rig.wait_for(&[
        ("other", A, "up"),
        (CLUSTER, A, "up"),
        (CLUSTER, B, "lost"),
        (CLUSTER, C, "ready"),
    ])
    .await;
    assert_eq!(
        rig.client.get("/v1/keys").await.ok_text(),
        "/zerodb/proxy/other/status/10.25.0.11:3000->up\n\
         /zerodb/proxy/test_cluster/status/10.25.0.11:3000->up\n\
         /zerodb/proxy/test_cluster/status/10.25.0.12:3000->lost\n\
         /zerodb/proxy/test_cluster/status/10.25.0.13:3000->ready\n"
    );
    assert_eq!(
        rig.client
            .get("/v1/clusters/test_cluster/keys")
            .await
            .ok_text(),
        "/zerodb/proxy/test_cluster/status/10.25.0.11:3000->up\n\
         /zerodb/proxy/test_cluster/status/10.25.0.12:3000->lost\n\
         /zerodb/proxy/test_cluster/status/10.25.0.13:3000->ready\n"
    );
    // A cluster made by a push has no proxies: an empty body.
    rig.client
        .put("/v1/clusters/empty/config?create=true", "x")
        .await
        .ok_json();
    assert_eq!(
        rig.client.get("/v1/clusters/empty/keys").await.ok_text(),
        ""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushing_a_config_creates_the_cluster_and_makes_a_new_version() {
    let rig = Rig::start().await;
    let file = b"[proxy]\nmax_connections = 100\n".to_vec();
    // Only when asked to: a typo must not make a cluster.
    let refused = rig
        .client
        .put("/v1/clusters/fresh/config", file.clone())
        .await
        .problem(404, "unknown-cluster");
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.contains("only when asked to (--create, ?create=true)")),
        "{refused}"
    );
    rig.client
        .get("/v1/clusters/fresh")
        .await
        .problem(404, "unknown-cluster");
    let pushed = rig
        .client
        .put("/v1/clusters/fresh/config?create=true", file.clone())
        .await
        .ok_json();
    assert!(pushed["revision"].as_u64() > Some(0), "{pushed}");
    assert_eq!(
        without(pushed, &["revision"]),
        json!({"cluster": "fresh", "version": 2, "changed": true})
    );
    let expected = ConfigVersion::initial()
        .with_base(Arc::from(&file[..]))
        .expect("renders");
    let config = rig.client.get("/v1/clusters/fresh/config").await.ok_json();
    assert_eq!(
        config,
        json!({
            "cluster": "fresh",
            "version": 2,
            "digest": hex(&expected.digest),
            "size": expected.bytes.len(),
            "base_size": file.len(),
            "datasources": {},
        })
    );
    let cluster = rig.client.get("/v1/clusters/fresh").await.ok_json();
    assert_eq!(
        cluster,
        json!({"cluster": "fresh", "ready": 0, "up": 0, "lost": 0, "config_version": 2, "gate": "open", "deletion_paused": false, "frozen": false,
               "rollout": "converged", "running": 0, "pending": 0, "rejected": 0})
    );
    // Any content type; the same bytes again make no version; an empty file is refused.
    let other = b"[proxy]\nmax_connections = 200\n".to_vec();
    let other_len = other.len();
    let again = rig
        .client
        .send(
            "PUT",
            "/v1/clusters/fresh/config?create=true",
            &[("content-type", "application/octet-stream")],
            Some(other.clone()),
        )
        .await
        .ok_json();
    assert_eq!(
        without(again, &["revision"]),
        json!({"cluster": "fresh", "version": 3, "changed": true})
    );
    let same = rig
        .client
        .put("/v1/clusters/fresh/config?create=true", other)
        .await
        .ok_json();
    assert_eq!(
        without(same, &["revision"]),
        json!({"cluster": "fresh", "version": 3, "changed": false})
    );
    // The version is the config's entity tag; If-Match names the version a push
    // replaces, or nothing changes.
    let answer = rig.client.get("/v1/clusters/fresh/config").await;
    assert_eq!(answer.etag.as_deref(), Some("\"3\""));
    let stale = rig
        .client
        .send(
            "PUT",
            "/v1/clusters/fresh/config?create=true",
            &[("if-match", "\"2\"")],
            Some(b"x = 9\n".to_vec()),
        )
        .await
        .problem(412, "precondition-failed");
    assert_eq!(
        (stale["cluster"].as_str(), stale["current"].as_u64()),
        (Some("fresh"), Some(3))
    );
    for bad in ["\"three\"", "W/\"3\""] {
        rig.client
            .send(
                "PUT",
                "/v1/clusters/fresh/config?create=true",
                &[("if-match", bad)],
                Some(b"x = 9\n".to_vec()),
            )
            .await
            .problem(400, "invalid-parameter");
    }
    let config = rig.client.get("/v1/clusters/fresh/config").await.ok_json();
    assert_eq!(config["version"], 3);
    let empty = rig
        .client
        .put("/v1/clusters/fresh/config?create=true", Vec::new())
        .await
        .problem(400, "malformed-body");
    assert!(
        empty["detail"]
            .as_str()
            .is_some_and(|d| d.contains("empty")),
        "{empty}"
    );
    let config = rig.client.get("/v1/clusters/fresh/config").await.ok_json();
    assert_eq!(
        (config["version"].as_u64(), config["base_size"].as_u64()),
        (Some(3), Some(other_len as u64))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_a_datasource_makes_a_new_version_and_a_wrong_from_is_a_mismatch() {
    let mut rig = Rig::start().await;
    rig.proxy(CLUSTER, A, InitPolicy::After(Duration::ZERO))
        .await;
    rig.wait_for(&[(CLUSTER, A, "up")]).await;
    let switched = rig
        .client
        .post_json(
            "/v1/clusters/test_cluster/switch",
            r#"{"hostgroup":"hg1","from":"ds_a","to":"ds_b"}"#,
        )
        .await
        .ok_json();
    assert_eq!(
        without(switched, &["revision"]),
        json!({"cluster": CLUSTER, "version": 2, "hostgroup": "hg1", "from": "ds_a", "to": "ds_b"})
    );
    let config = rig
        .client
        .get("/v1/clusters/test_cluster/config")
        .await
        .ok_json();
    assert_eq!(config["version"], 2);
    assert_eq!(config["datasources"], json!({"hg1": "ds_b"}));

    let before = rig.stored().await;
    let mismatch = rig
        .client
        .post_json(
            "/v1/clusters/test_cluster/switch",
            r#"{"hostgroup":"hg1","from":"ds_a","to":"ds_c"}"#,
        )
        .await
        .problem(409, "datasource-mismatch");
    assert_eq!(mismatch["hostgroup"], "hg1");
    assert_eq!(mismatch["expected"], "ds_a");
    assert_eq!(mismatch["actual"], "ds_b");
    assert_eq!(
        mismatch["detail"],
        "hostgroup hg1 is served by ds_b, not ds_a: switch --from ds_b --to one of ds_a, ds_c. Nothing changed."
    );
    assert_eq!(mismatch["choices"], json!(["ds_a", "ds_c"]));
    assert_eq!(rig.stored().await, before);
    // A switch to the datasource it has already would change nothing: refused.
    let same = rig
        .client
        .post_json(
            "/v1/clusters/test_cluster/switch",
            r#"{"hostgroup":"hg1","from":"ds_b","to":"ds_b"}"#,
        )
        .await
        .problem(400, "malformed-body");
    assert_eq!(same["hostgroup"], "hg1");
    assert_eq!(same["choices"], json!(["ds_a", "ds_c"]));
    assert!(
        same["detail"]
            .as_str()
            .is_some_and(|d| d.contains("--to must differ from --from")),
        "{same}"
    );
    assert_eq!(rig.stored().await, before);

    // Switching back from the right datasource works, without a content type too.
    let back = rig
        .client
        .send(
            "POST",
            "/v1/clusters/test_cluster/switch",
            &[],
            Some(br#"{"hostgroup":"hg1","from":"ds_b","to":"ds_a"}"#.to_vec()),
        )
        .await
        .ok_json();
    assert_eq!(back["version"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_proxy_answers_the_status_it_had() {
    let mut rig = Rig::start().await;
    let c = rig.mixed_cluster().await;
    // A removed proxy that is alive comes back; cut C off (it stays `ready` for the
    // ready timeout) and let its last datagram land before removing it.
    c.faults.cut(true);
    wait_until("C's last datagram is handled", || async {
        rig.handle
            .call(|k, clock| {
                k.proxy(CLUSTER, C)
                    .is_ok_and(|p| clock.now() - p.last_heard >= Duration::from_millis(200))
            })
            .await
            .expect("running")
    })
    .await;
    let removed = rig
        .client
        .delete("/v1/clusters/test_cluster/proxies/10.25.0.12:3000")
        .await
        .ok_json();
    assert_eq!(
        without(removed, &["revision"]),
        json!({"cluster": CLUSTER, "proxy": B, "status": "lost"})
    );
    // C is `ready`, alive: not without force, and nothing changes.
    let before = rig.stored().await;
    let alive = rig
        .client
        .delete("/v1/clusters/test_cluster/proxies/10.25.0.13:3000")
        .await
        .problem(409, "proxy-alive");
    assert_eq!(
        (alive["cluster"].as_str(), alive["proxy"].as_str()),
        (Some(CLUSTER), Some(C))
    );
    assert!(
        alive["detail"]
            .as_str()
            .is_some_and(|d| d.contains("is ready: it is alive") && d.contains("--force")),
        "{alive}"
    );
    assert_eq!(rig.stored().await, before);
    let removed = rig
        .client
        .delete("/v1/clusters/test_cluster/proxies/10.25.0.13:3000?force=true")
        .await
        .ok_json();
    assert_eq!(
        without(removed, &["revision"]),
        json!({"cluster": CLUSTER, "proxy": C, "status": "ready"})
    );
    assert_eq!(
        rig.client
            .get("/v1/clusters/test_cluster/keys")
            .await
            .ok_text(),
        "/zerodb/proxy/test_cluster/status/10.25.0.11:3000->up\n"
    );
    // Removing it again: it is gone.
    let before = rig.stored().await;
    let gone = rig
        .client
        .delete("/v1/clusters/test_cluster/proxies/10.25.0.12:3000")
        .await
        .problem(404, "unknown-proxy");
    assert_eq!(
        (gone["cluster"].as_str(), gone["proxy"].as_str()),
        (Some(CLUSTER), Some(B))
    );
    assert_eq!(rig.stored().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_gate_refuses_push_and_switch_with_the_exact_blockers() {
    let mut rig = Rig::start().await;
    let _c = rig.mixed_cluster().await;
    let before = rig.stored().await;
    let blockers = json!([
        {"proxy": B, "status": "lost"},
        {"proxy": C, "status": "ready"},
    ]);
    let detail =
        "gate closed for cluster test_cluster: 10.25.0.12:3000 is lost, 10.25.0.13:3000 is ready";

    let push = rig
        .client
        .put("/v1/clusters/test_cluster/config", "new config")
        .await
        .problem(409, "gate-closed");
    assert_eq!(push["title"], "Gate closed");
    assert_eq!(push["detail"], detail);
    assert_eq!(push["cluster"], CLUSTER);
    assert_eq!(push["blockers"], blockers);
    assert_eq!(rig.stored().await, before);

    let switch = rig
        .client
        .post_json(
            "/v1/clusters/test_cluster/switch",
            r#"{"hostgroup":"hg1","from":"ds_a","to":"ds_b"}"#,
        )
        .await
        .problem(409, "gate-closed");
    assert_eq!(switch["detail"], detail);
    assert_eq!(switch["cluster"], CLUSTER);
    assert_eq!(switch["blockers"], blockers);
    assert_eq!(rig.stored().await, before);

    let gate = rig
        .client
        .get("/v1/clusters/test_cluster/gate")
        .await
        .ok_json();
    assert_eq!(
        gate,
        json!({"cluster": CLUSTER, "open": false, "blockers": blockers})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_record_lists_what_was_done_and_what_was_refused_and_why() {
    let mut rig = Rig::start().await;
    let _c = rig.mixed_cluster().await;
    rig.client
        .put("/v1/clusters/fresh/config?create=true", "a = 1\n")
        .await
        .ok_json();
    rig.client
        .put("/v1/clusters/test_cluster/config", "a = 2\n")
        .await
        .problem(409, "gate-closed");
    rig.client
        .delete(&format!("/v1/clusters/test_cluster/proxies/{B}"))
        .await
        .ok_json();
    // A malformed name names no cluster: not recorded.
    rig.client
        .put("/v1/clusters/no%20such/config", "a = 3\n")
        .await
        .problem(400, "invalid-name");

    let audit = rig.client.get("/v1/audit").await.ok_json();
    let entries: Vec<Value> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| without(e.clone(), &["at"]))
        .collect();
    assert_eq!(
        entries,
        [
            json!({"by": null, "action": "push_config", "cluster": "fresh", "result": "done",
                   "version": 2, "size": 6}),
            json!({"by": null, "action": "push_config", "cluster": CLUSTER, "result": "refused",
                   "asked": "6 bytes",
                   "reason": "gate closed for cluster test_cluster: 10.25.0.12:3000 is lost, 10.25.0.13:3000 is ready"}),
            json!({"by": null, "action": "remove", "cluster": CLUSTER, "result": "done",
                   "proxy": B, "status": "lost"}),
        ]
    );
    assert_eq!(audit["more"], false);
    assert_eq!(audit["revision"].as_u64(), Some(rig.hub.position().1));
    let only = rig.client.get("/v1/audit?cluster=fresh").await.ok_json();
    assert_eq!(only["cluster"], "fresh");
    assert_eq!(only["entries"].as_array().map(Vec::len), Some(1));
    let newest = rig.client.get("/v1/audit?limit=1").await.ok_json();
    assert_eq!(newest["entries"][0]["action"], "remove");
    assert_eq!(newest["more"], true);
    for bad in ["limit=0", "limit=10001", "limit=many", "cluster=no%20such"] {
        let kind = if bad.starts_with("cluster") {
            "invalid-name"
        } else {
            "invalid-parameter"
        };
        rig.client
            .get(&format!("/v1/audit?{bad}"))
            .await
            .problem(400, kind);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_are_400_and_change_nothing() {
    let mut rig = Rig::start().await;
    rig.proxy(CLUSTER, A, InitPolicy::After(Duration::ZERO))
        .await;
    rig.wait_for(&[(CLUSTER, A, "up")]).await;
    let before = rig.stored().await;
    let long = "c".repeat(129);
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        ("GET", "/v1/clusters/bad%2Fname".into(), None),
        ("GET", "/v1/clusters/bad%20name/proxies".into(), None),
        ("GET", format!("/v1/clusters/{long}/keys"), None),
        ("GET", "/v1/clusters/bad%0Aname/gate".into(), None),
        ("GET", "/v1/clusters/bad%2Fname/config".into(), None),
        (
            "GET",
            "/v1/clusters/test_cluster/proxies/not-an-address".into(),
            None,
        ),
        (
            "GET",
            "/v1/clusters/test_cluster/proxies/a%2Fb:3000".into(),
            None,
        ),
        (
            "GET",
            "/v1/clusters/test_cluster/proxies/10.25.0.11:0".into(),
            None,
        ),
        // Not UTF-8 once decoded.
        ("GET", "/v1/clusters/bad%FFname".into(), None),
        (
            "DELETE",
            "/v1/clusters/test_cluster/proxies/10.25.0.11".into(),
            None,
        ),
        (
            "DELETE",
            "/v1/clusters/bad%2Fname/proxies/10.25.0.11:3000".into(),
            None,
        ),
        (
            "PUT",
            "/v1/clusters/bad%2Fname/config".into(),
            Some("config"),
        ),
        ("PUT", format!("/v1/clusters/{long}/config"), Some("config")),
        (
            "POST",
            "/v1/clusters/bad%2Fname/switch".into(),
            Some(r#"{"hostgroup":"hg","from":"a","to":"b"}"#),
        ),
        (
            "POST",
            "/v1/clusters/test_cluster/switch".into(),
            Some(r#"{"hostgroup":"","from":"a","to":"b"}"#),
        ),
        (
            "POST",
            "/v1/clusters/test_cluster/switch".into(),
            Some(r#"{"hostgroup":"hg","from":"a","to":"b\u0007"}"#),
        ),
        ("GET", "/v1/watch?cluster=bad%2Fname".into(), None),
    ];
    for (method, path, body) in cases {
        let answer = rig
            .client
            .send(method, &path, &[], body.map(|b| b.as_bytes().to_vec()))
            .await;
        let problem = answer.problem(400, "invalid-name");
        assert_eq!(problem["title"], "Invalid name", "{method} {path}");
        assert_eq!(rig.stored().await, before, "after {method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_names_in_paths_are_400_invalid_name_and_store_nothing() {
    let mut rig = Rig::start().await;
    rig.proxy(CLUSTER, A, InitPolicy::After(Duration::ZERO))
        .await;
    rig.wait_for(&[(CLUSTER, A, "up")]).await;
    let before = rig.stored().await;
    let cases: Vec<(&str, &str, Option<&str>)> = vec![
        ("PUT", "/v1/clusters/../config", Some("config")),
        ("PUT", "/v1/clusters/%2E%2E/config", Some("config")),
        ("PUT", "/v1/clusters/./config", Some("config")),
        ("PUT", "/v1/clusters/%2e/config", Some("config")),
        ("GET", "/v1/clusters/..", None),
        ("GET", "/v1/clusters/%2E%2E/proxies", None),
        ("GET", "/v1/clusters/test_cluster/proxies/..", None),
        ("GET", "/v1/clusters/test_cluster/proxies/..:3000", None),
        (
            "DELETE",
            "/v1/clusters/test_cluster/proxies/%2E%2E:3000",
            None,
        ),
        (
            "POST",
            "/v1/clusters/%2E%2E/switch",
            Some(r#"{"hostgroup":"hg","from":"a","to":"b"}"#),
        ),
    ];
    for (method, path, body) in cases {
        let answer = rig
            .client
            .send(method, path, &[], body.map(|b| b.as_bytes().to_vec()))
            .await;
        answer.problem(400, "invalid-name");
        assert_eq!(rig.stored().await, before, "after {method} {path}");
    }
    let clusters: Vec<String> = rig
        .handle
        .call(|k, _| k.clusters().into_iter().map(|c| c.name).collect())
        .await
        .expect("running");
    assert_eq!(clusters, [CLUSTER]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_creating_a_cluster_past_max_clusters_is_507_registry_full_and_changes_nothing() {
    let mut rig = Rig::with_max_clusters(1).await;
    rig.proxy(CLUSTER, A, InitPolicy::After(Duration::ZERO))
        .await;
    rig.wait_for(&[(CLUSTER, A, "up")]).await;
    let before = rig.stored().await;
    let answer = rig
        .client
        .put(
            "/v1/clusters/second_cluster/config?create=true",
            "pool_size = 1\n",
        )
        .await;
    let problem = answer.problem(507, "registry-full");
    assert_eq!(problem["title"], "Registry full");
    assert_eq!(problem["cluster"], "second_cluster");
    let detail = problem["detail"].as_str().expect("a detail");
    assert!(detail.ends_with("Nothing changed."), "{detail}");
    assert!(detail.contains("at most 1"), "{detail}");
    assert_eq!(rig.stored().await, before);
    rig.client
        .get("/v1/clusters/second_cluster")
        .await
        .problem(404, "unknown-cluster");
    // The gauges say how full it is.
    let answer = rig.client.get("/metrics").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let metrics = &answer.body;
    for line in [
        "zerokeeper_registry_proxies 1\n",
        "zerokeeper_registry_proxies_max 2000000\n",
        "zerokeeper_registry_clusters 1\n",
        "zerokeeper_registry_clusters_max 1\n",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_the_expected_json_are_400_and_change_nothing() {
    let mut rig = Rig::start().await;
    rig.proxy(CLUSTER, A, InitPolicy::After(Duration::ZERO))
        .await;
    rig.wait_for(&[(CLUSTER, A, "up")]).await;
    let before = rig.stored().await;
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"not json".to_vec(),
        b"{}".to_vec(),
        b"[\"hg\",\"a\",\"b\"]".to_vec(),
        br#"{"hostgroup":"hg","from":"a"}"#.to_vec(),
        br#"{"hostgroup":1,"from":"a","to":"b"}"#.to_vec(),
        br#"{"hostgroup":"hg","from":null,"to":"b"}"#.to_vec(),
        br#"{"hostgroup":"hg","from":"a","to":"b","extra":1}"#.to_vec(),
        br#"{"hostgroup":"hg","from":"a","to":"b"} trailing"#.to_vec(),
        br#"{"hostgroup":"hg","from":"a","to":"b""#.to_vec(),
        b"{\"hostgroup\":\"h\xffg\",\"from\":\"a\",\"to\":\"b\"}".to_vec(),
    ];
    for body in bodies {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let answer = rig
            .client
            .post_json("/v1/clusters/test_cluster/switch", body)
            .await;
        let problem = answer.problem(400, "malformed-body");
        assert_eq!(problem["title"], "Malformed body", "{shown}");
        assert_eq!(rig.stored().await, before, "after {shown}");
    }
    // Watch parameters that do not parse.
    for (path, headers) in [
        ("/v1/watch?after=abc", vec![]),
        ("/v1/watch?after=-1", vec![]),
        ("/v1/watch", vec![("last-event-id", "x")]),
    ] {
        rig.client
            .send("GET", path, &headers, None)
            .await
            .problem(400, "invalid-parameter");
        assert_eq!(rig.stored().await, before, "after {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_clusters_proxies_and_routes_are_404_and_change_nothing() {
    let mut rig = Rig::start().await;
    rig.proxy(CLUSTER, A, InitPolicy::After(Duration::ZERO))
        .await;
    rig.wait_for(&[(CLUSTER, A, "up")]).await;
    let before = rig.stored().await;
    let switch = r#"{"hostgroup":"hg","from":"a","to":"b"}"#;
    for (method, path, body) in [
        ("GET", "/v1/clusters/nope", None),
        ("GET", "/v1/clusters/nope/proxies", None),
        ("GET", "/v1/clusters/nope/proxies/10.25.0.11:3000", None),
        ("DELETE", "/v1/clusters/nope/proxies/10.25.0.11:3000", None),
        ("GET", "/v1/clusters/nope/keys", None),
        ("GET", "/v1/clusters/nope/gate", None),
        ("GET", "/v1/clusters/nope/config", None),
        ("POST", "/v1/clusters/nope/switch", Some(switch)),
    ] {
        let problem = rig
            .client
            .send(method, path, &[], body.map(|b| b.as_bytes().to_vec()))
            .await
            .problem(404, "unknown-cluster");
        assert_eq!(problem["cluster"], "nope", "{method} {path}");
        assert_eq!(
            problem["detail"], "no cluster named nope",
            "{method} {path}"
        );
        assert_eq!(rig.stored().await, before, "after {method} {path}");
    }
    for method in ["GET", "DELETE"] {
        let problem = rig
            .client
            .send(
                method,
                "/v1/clusters/test_cluster/proxies/10.9.9.9:1",
                &[],
                None,
            )
            .await
            .problem(404, "unknown-proxy");
        assert_eq!(problem["cluster"], CLUSTER);
        assert_eq!(problem["proxy"], "10.9.9.9:1");
        assert_eq!(
            problem["detail"],
            "no proxy 10.9.9.9:1 in cluster test_cluster"
        );
        assert_eq!(rig.stored().await, before, "after {method}");
    }
    for (method, path) in [
        ("GET", "/index.html"),
        ("GET", "/v2/clusters"),
        ("GET", "/v1/clusters/"),
        ("GET", "/v1/clusters/test_cluster/nothing"),
        ("POST", "/v1/nothing"),
        (
            "DELETE",
            "/v1/clusters/test_cluster/proxies/10.25.0.11:3000/more",
        ),
    ] {
        let problem = rig
            .client
            .send(method, path, &[], None)
            .await
            .problem(404, "not-found");
        assert_eq!(problem["title"], "Not found");
        assert_eq!(rig.stored().await, before, "after {method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_are_405_with_an_allow_header_and_change_nothing() {
    let mut rig = Rig::start().await;
    rig.proxy(CLUSTER, A, InitPolicy::After(Duration::ZERO))
        .await;
    rig.wait_for(&[(CLUSTER, A, "up")]).await;
    let before = rig.stored().await;
    for (method, path, allowed) in [
        ("POST", "/livez", "GET,HEAD"),
        ("PUT", "/metrics", "GET,HEAD"),
        ("POST", "/v1/clusters", "GET,HEAD"),
        ("PUT", "/v1/clusters/test_cluster", "GET,HEAD,DELETE"),
        (
            "PUT",
            "/v1/clusters/test_cluster/proxies/10.25.0.11:3000",
            "GET,HEAD,DELETE",
        ),
        ("POST", "/v1/clusters/test_cluster/config", "GET,HEAD,PUT"),
        ("DELETE", "/v1/clusters/test_cluster/config", "GET,HEAD,PUT"),
        ("GET", "/v1/clusters/test_cluster/switch", "POST"),
        ("PATCH", "/v1/keys", "GET,HEAD"),
        ("POST", "/v1/watch", "GET,HEAD"),
    ] {
        let body = matches!(method, "POST" | "PUT" | "PATCH").then(|| b"{}".to_vec());
        let answer = rig.client.send(method, path, &[], body).await;
        let problem = answer.problem(405, "method-not-allowed");
        assert_eq!(problem["title"], "Method not allowed");
        let mut allow: Vec<String> = answer
            .allow
            .as_deref()
            .unwrap_or_else(|| panic!("no Allow header for {method} {path}"))
            .split(',')
            .map(|m| m.trim().to_owned())
            .collect();
        allow.sort();
        let mut want: Vec<&str> = allowed.split(',').collect();
        want.sort();
        assert_eq!(allow, want, "{method} {path}");
        assert_eq!(rig.stored().await, before, "after {method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_over_the_limit_are_413_and_change_nothing() {
    let rig = Rig::start().await;
    rig.client
        .put("/v1/clusters/test_cluster/config?create=true", "base")
        .await
        .ok_json();
    let before = rig.stored().await;
    // Read whole, refused by the core once rendered; then refused while being read.
    for size in [MAX_CONFIG_BYTES, MAX_CONFIG_BYTES + 1, MAX_CONFIG_BODY + 1] {
        let problem = rig
            .client
            .put(
                "/v1/clusters/test_cluster/config?create=true",
                vec![b'x'; size],
            )
            .await
            .problem(413, "config-too-large");
        assert_eq!(problem["title"], "Config too large", "{size}");
        assert_eq!(rig.stored().await, before, "after {size} bytes");
    }
    // Nor does a refused body create a cluster.
    rig.client
        .put(
            "/v1/clusters/brand_new/config?create=true",
            vec![b'x'; MAX_CONFIG_BODY + 1],
        )
        .await
        .problem(413, "config-too-large");
    assert_eq!(rig.stored().await, before);
    rig.client
        .get("/v1/clusters/brand_new")
        .await
        .problem(404, "unknown-cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_keeper_is_503_except_for_livez() {
    let mut rig = Rig::start().await;
    rig.proxy(CLUSTER, A, InitPolicy::After(Duration::ZERO))
        .await;
    rig.wait_for(&[(CLUSTER, A, "up")]).await;
    let last_event = rig.last_event();
    rig.stop_keeper().await;
    assert_eq!(rig.client.get("/livez").await.ok_text(), "ok\n");
    let switch = r#"{"hostgroup":"hg","from":"a","to":"b"}"#;
    for (method, path, body) in [
        ("GET", "/readyz", None),
        ("GET", "/metrics", None),
        ("GET", "/v1/clusters", None),
        ("GET", "/v1/clusters/test_cluster", None),
        ("GET", "/v1/proxies", None),
        ("GET", "/v1/clusters/test_cluster/proxies", None),
        (
            "GET",
            "/v1/clusters/test_cluster/proxies/10.25.0.11:3000",
            None,
        ),
        (
            "DELETE",
            "/v1/clusters/test_cluster/proxies/10.25.0.11:3000",
            None,
        ),
        ("GET", "/v1/keys", None),
        ("GET", "/v1/clusters/test_cluster/keys", None),
        ("GET", "/v1/clusters/test_cluster/gate", None),
        ("GET", "/v1/clusters/test_cluster/config", None),
        ("PUT", "/v1/clusters/test_cluster/config", Some("config")),
        ("POST", "/v1/clusters/test_cluster/switch", Some(switch)),
    ] {
        let problem = rig
            .client
            .send(method, path, &[], body.map(|b| b.as_bytes().to_vec()))
            .await
            .problem(503, "keeper-stopped");
        assert_eq!(problem["title"], "Keeper stopped", "{method} {path}");
        assert_eq!(
            problem["detail"], "the keeper has stopped",
            "{method} {path}"
        );
        assert_eq!(rig.last_event(), last_event, "after {method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_status_events_live_with_increasing_ids() {
    let mut rig = Rig::start().await;
    let (head, events) = rig.client.watch("/v1/watch", &[], 2);
    let head = tokio::time::timeout(PATIENCE, head)
        .await
        .expect("the stream opens")
        .expect("the answer has a head");
    assert_eq!(head.status, 200);
    assert_eq!(head.content_type, "text/event-stream");
    // The watcher has subscribed: whatever happens now is live.
    rig.proxy(CLUSTER, A, InitPolicy::After(Duration::ZERO))
        .await;
    let events = events.await.expect("reader");
    assert_eq!(events.len(), 2, "{events:?}");
    let revisions: Vec<u64> = events.iter().map(revision).collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    for event in &events {
        assert_eq!(
            event.lines[..2],
            [
                format!("id: {}", event.id),
                format!("event: {}", event.kind)
            ]
        );
        assert!(event.lines[2].starts_with("data: {"), "{:?}", event.lines);
        assert_eq!(event.lines.len(), 3, "{:?}", event.lines);
        assert_eq!(event.data["revision"], revision(event));
        assert_eq!(event.data["kind"], event.kind.as_str());
        assert_eq!(event.data["cluster"], CLUSTER);
        assert_eq!(event.data["proxy"], A);
    }
    let moves: Vec<(&str, Option<&str>, Option<&str>)> = events
        .iter()
        .map(|e| {
            (
                e.kind.as_str(),
                e.data["from"].as_str(),
                e.data["to"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        vec![
            ("status", None, Some("ready")),
            ("status", Some("ready"), Some("up"))
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_replays_held_events_after_last_event_id_then_goes_live() {
    let mut rig = Rig::start().await;
    rig.proxy(CLUSTER, A, InitPolicy::After(Duration::ZERO))
        .await;
    rig.proxy(CLUSTER, B, InitPolicy::After(Duration::ZERO))
        .await;
    rig.wait_for(&[(CLUSTER, A, "up"), (CLUSTER, B, "up")])
        .await;
    let (generation, held) = rig.hub.position();
    assert!(held >= 4, "two registrations and two ups at least");
    let held_count = usize::try_from(held).expect("small");

    // Everything from the start, by a bare revision.
    let (_, all) = rig.client.watch("/v1/watch?after=0", &[], held_count);
    let all = all.await.expect("reader");
    assert_eq!(
        all.iter().map(revision).collect::<Vec<_>>(),
        (1..=held).collect::<Vec<_>>()
    );

    // After revision 2, by header (it wins over ?after), then what a push makes, live.
    let header = format!("{generation}-2");
    let (head, resumed) = rig.client.watch(
        "/v1/watch?after=0",
        &[("Last-Event-ID", &header)],
        held_count - 2 + 1,
    );
    tokio::time::timeout(PATIENCE, head)
        .await
        .expect("the stream opens")
        .expect("the answer has a head");
    rig.client
        .put("/v1/clusters/test_cluster/config?create=true", "pushed")
        .await
        .ok_json();
    let resumed = resumed.await.expect("reader");
    assert_eq!(
        resumed[..held_count - 2],
        all[2..],
        "the replay is the held changes after 2"
    );
    let live = &resumed[held_count - 2];
    assert_eq!(revision(live), held + 1);
    assert_eq!(live.id, format!("{generation}-{}", held + 1));

    // By ?after=G-R alone.
    let (_, after) = rig
        .client
        .watch(&format!("/v1/watch?after={generation}-{held}"), &[], 1);
    let after = after.await.expect("reader");
    assert_eq!(after[..], resumed[held_count - 2..]);
}

// The default current-thread runtime: the watcher cannot run while the keeper publishes.
#[tokio::test]
async fn a_watcher_that_falls_out_of_the_history_gets_gone_and_a_resume_gets_410() {
    let rig = Rig::with_retention(100).await;
    let (generation, _) = rig.hub.position();
    let (head, cut_off) = rig.client.watch("/v1/watch?after=0", &[], usize::MAX);
    tokio::time::timeout(PATIENCE, head)
        .await
        .expect("the stream opens")
        .expect("the answer has a head");
    // Far more changes in one go than the history holds.
    rig.handle
        .call(|k, clock| {
            for i in 0..5000u32 {
                k.push_config(clock.now(), "burst", Arc::from(&i.to_be_bytes()[..]))
                    .expect("the gate of a cluster without proxies is open");
            }
        })
        .await
        .expect("running");
    let cut_off = tokio::time::timeout(PATIENCE, cut_off)
        .await
        .expect("the stream ends")
        .expect("reader");
    // It may have read some changes before it fell behind (how many depends on how the
    // burst was published); those are consecutive from the first, and then it is told,
    // with nothing past the gap.
    let (gone, changes) = cut_off.split_last().expect("at least the gone event");
    assert_eq!(gone.kind, "gone", "the stream ends with gone");
    assert_eq!(
        changes.iter().map(revision).collect::<Vec<_>>(),
        (1..=changes.len() as u64).collect::<Vec<_>>(),
        "a watcher that fell behind gets no change past the gap"
    );
    assert!(changes.iter().all(|e| e.kind != "gone"));
    let (_, current) = rig.hub.position();
    assert_eq!(gone.data["current"], current);
    assert_eq!(gone.data["generation"], generation);
    // Resuming from before the gap is 410; from the listing's revision works.
    rig.client
        .send(
            "GET",
            "/v1/watch",
            &[("Last-Event-ID", &format!("{generation}-0"))],
            None,
        )
        .await
        .problem(410, "gone");
    let listing = rig.client.get("/v1/proxies").await.ok_json();
    assert_eq!(listing["revision"], current);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_filters_events_by_cluster() {
    let mut rig = Rig::start().await;
    rig.proxy(CLUSTER, A, InitPolicy::After(Duration::ZERO))
        .await;
    rig.wait_for(&[(CLUSTER, A, "up")]).await;
    for (cluster, body) in [("other", "x"), (CLUSTER, "y"), ("other", "z")] {
        rig.client
            .put(&format!("/v1/clusters/{cluster}/config?create=true"), body)
            .await
            .ok_json();
    }
    // A push is a config change and an admin record: four of `other`'s.
    let (_, events) = rig.client.watch("/v1/watch?cluster=other&after=0", &[], 4);
    let events = events.await.expect("reader");
    assert!(
        events.iter().all(|e| e.data["cluster"] == "other"),
        "{events:?}"
    );
    let versions: Vec<u64> = events
        .iter()
        .filter(|e| e.kind == "config")
        .map(|e| e.data["version"].as_u64().expect("version"))
        .collect();
    assert_eq!(versions, [2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_every_named_series() {
    let mut rig = Rig::start().await;
    let _c = rig.mixed_cluster().await;
    rig.client
        .put("/v1/clusters/other/config?create=true", "x")
        .await
        .ok_json();
    // What Prometheus asks for: OpenMetrics first, the classic format as a fallback.
    let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let answer = rig
        .client
        .send("GET", "/metrics", &[("accept", prometheus_accept)], None)
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    // Anyone else (curl) gets the classic text format: no `# EOF`, counters typed by
    // their `_total` series.
    let classic = rig.client.get("/metrics").await;
    assert_eq!(
        classic.content_type,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(!classic.body.contains("# EOF"), "{}", classic.body);
    assert!(
        classic
            .body
            .contains("# TYPE zerokeeper_heartbeats_total counter\n"),
        "{}",
        classic.body
    );
    for series in [
        "zerokeeper_build_info{",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
        "zerokeeper_gate_open{cluster=",
        "zerokeeper_http_request_duration_seconds_bucket{",
    ] {
        assert!(answer.body.contains(series), "{series} missing");
    }
    let text = &answer.body;
    let value = |series: &str| -> u64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
            .parse()
            .expect("integer value")
    };
    assert!(value("zerokeeper_datagrams_received_total") > 0);
    assert!(value("zerokeeper_datagrams_sent_total") > 0);
    for outcome in Outcome::ALL {
        value(&format!(
            "zerokeeper_heartbeats_total{{result=\"{}\"}}",
            outcome.as_str()
        ));
    }
    assert_eq!(
        value("zerokeeper_heartbeats_total{result=\"registered\"}"),
        3
    );
    for reason in DropReason::ALL {
        value(&format!(
            "zerokeeper_datagrams_dropped_total{{reason=\"{}\"}}",
            reason.as_str()
        ));
    }
    assert_eq!(
        value("zerokeeper_transitions_total{from=\"none\",to=\"ready\"}"),
        3
    );
    assert_eq!(
        value("zerokeeper_transitions_total{from=\"ready\",to=\"up\"}"),
        2
    );
    assert_eq!(
        value("zerokeeper_transitions_total{from=\"up\",to=\"lost\"}"),
        1
    );
    assert_eq!(value("zerokeeper_restarts_sent_total"), 0);
    assert_eq!(value("zerokeeper_superseded_sent_total"), 0);
    assert_eq!(value("zerokeeper_config_versions_total"), 1);
    for (cluster, ready, up, lost) in [("other", 0, 0, 0), (CLUSTER, 1, 1, 1)] {
        for (status, n) in [("ready", ready), ("up", up), ("lost", lost)] {
            assert_eq!(
                value(&format!(
                    "zerokeeper_proxies{{cluster=\"{cluster}\",status=\"{status}\"}}"
                )),
                n,
                "{cluster} {status}"
            );
        }
    }
    assert_eq!(value("zerokeeper_tombstones"), 0);
    assert_eq!(value("zerokeeper_registry_proxies"), 3);
    assert_eq!(value("zerokeeper_registry_proxies_max"), 2_000_000);
    assert_eq!(value("zerokeeper_registry_clusters"), 2);
    assert_eq!(value("zerokeeper_registry_clusters_max"), 10_000);
    assert!(
        text.contains("# TYPE zerokeeper_heartbeats counter\n"),
        "{text}"
    );
    assert!(text.contains("# TYPE zerokeeper_proxies gauge\n"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_watch_streams_and_serve_returns() {
    let mut rig = Rig::start().await;
    rig.proxy(CLUSTER, A, InitPolicy::After(Duration::ZERO))
        .await;
    rig.wait_for(&[(CLUSTER, A, "up")]).await;
    let held = rig.hub.position().1;
    // Asks for more than will ever come: only the end of the stream ends the read.
    let (head, events) = rig.client.watch("/v1/watch?after=0", &[], 100);
    tokio::time::timeout(PATIENCE, head)
        .await
        .expect("the stream opens")
        .expect("the answer has a head");
    let stop = rig.stop_http.take().expect("serving");
    stop.send(()).expect("server running");
    let http_task = rig.http_task.take().expect("serving");
    tokio::time::timeout(PATIENCE, http_task)
        .await
        .expect("serve returns with a watcher connected")
        .expect("joined")
        .expect("no io error");
    let events = tokio::time::timeout(PATIENCE, events)
        .await
        .expect("the stream ends")
        .expect("reader");
    assert_eq!(
        events.iter().map(revision).collect::<Vec<_>>(),
        (1..=held).collect::<Vec<_>>()
    );
    // The keeper itself runs on.
    wait_until("the keeper still answers", || async {
        rig.handle.clusters().await.is_ok()
    })
    .await;
}

/// The revision in an event's `id:` (`GENERATION-REVISION`).
fn revision(event: &SseEvent) -> u64 {
    let (_, revision) = event.id.split_once('-').expect("GENERATION-REVISION");
    revision.parse().expect("a revision")
}

/// `value` without the members named (such as a `revision` a test cannot know).
fn without(mut value: Value, members: &[&str]) -> Value {
    if let Some(object) = value.as_object_mut() {
        for m in members {
            object.remove(*m);
        }
    }
    value
}

/// Lowercase hex, as the API writes digests.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
