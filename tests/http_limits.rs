//! The admin API's server limits, against a real keeper (`zerokeeper::server`) whose
//! router is served with small limits on loopback TCP: a cap of connections that still
//! lets an operator in, header and idle timeouts, and a shutdown with a deadline.
//!
//! Clients are raw TCP streams, so they can stall anywhere in a request; every read has
//! a deadline, so nothing hangs.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use zerokeeper::auth::{Key, Keyring};
use zerokeeper::http::{ServeLimits, router, serve_with};
use zerokeeper::keeper::KeeperConfig;
use zerokeeper::server::{self, Running, Setup};

/// The longest any condition is waited for.
const PATIENCE: Duration = Duration::from_secs(10);

/// A keeper whose router is served by `serve_with` with small limits.
struct Served {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
    /// Held so the keeper keeps running.
    _running: Running,
}

impl Served {
    async fn start(limits: ServeLimits) -> Served {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind loopback");
        let key = Key::new(&[0x2a; 32]).expect("valid key");
        let setup = Setup::new(KeeperConfig::default(), Keyring::with_default(key));
        // The keeper's own admin API (default limits) on a port of its own; unused here.
        let own = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let running = server::start(setup, socket, own, std::future::pending())
            .await
            .expect("the keeper starts");
        let app = router(
            running.handle.clone(),
            running.hub.clone(),
            running.view.clone(),
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with(
            listener,
            app,
            async move {
                let _ = stopped.await;
            },
            limits,
        ));
        Served {
            addr,
            stop: Some(stop),
            task,
            _running: running,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.expect("connect")
    }

    /// A connection that has sent `bytes`.
    async fn sent(&self, bytes: &[u8]) -> TcpStream {
        let mut stream = self.connect().await;
        stream.write_all(bytes).await.expect("send");
        stream
    }

    /// An operator's `GET /livez` on a new connection: the whole answer.
    async fn livez(&self) -> String {
        let mut stream = self
            .sent(b"GET /livez HTTP/1.1\r\nhost: keeper\r\nconnection: close\r\n\r\n")
            .await;
        let answer = closed(&mut stream).await;
        String::from_utf8_lossy(&answer).into_owned()
    }
}

/// Half a request header.
const HALF_HEADER: &[u8] = b"GET /livez HTTP/1.1\r\nhost: kee";

/// Reads until the server closes `stream`; returns what it sent. Panics if it is still
/// open after `PATIENCE`.
async fn closed(stream: &mut TcpStream) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => panic!(
                "still open after {PATIENCE:?}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => return received,
            Ok(Err(e)) => panic!("read: {e}"),
        }
    }
}

/// Reads from `stream` until what was received contains `marker`.
async fn read_until(stream: &mut TcpStream, marker: &str) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains(marker) {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => panic!(
                "no {marker:?} after {PATIENCE:?}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0)) => panic!(
                "closed before {marker:?}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Ok(Err(e)) => panic!("read: {e}"),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// Asserts that `stream` stays open for `bound` (no byte, no close).
async fn stays_open(stream: &mut TcpStream, bound: Duration) {
    let mut buffer = [0u8; 64];
    if let Ok(read) = tokio::time::timeout(bound, stream.read(&mut buffer)).await {
        panic!("expected the connection open and silent, read {read:?}");
    }
}

fn small(cap: usize) -> ServeLimits {
    ServeLimits {
        max_connections: cap,
        ..ServeLimits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_is_answered_with_the_cap_of_idle_and_half_sent_connections_open() {
    let cap = 8;
    let served = Served::start(small(cap)).await;
    let mut idle = Vec::new();
    for _ in 0..cap {
        idle.push(served.connect().await);
    }
    let mut half = Vec::new();
    for _ in 0..cap {
        half.push(served.sent(HALF_HEADER).await);
    }
    let answer = served.livez().await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with("ok\n"), "{answer:?}");
    // The oldest were closed to make room (first the idle ones, then half-sent ones).
    for stream in &mut idle {
        closed(stream).await;
    }
    closed(&mut half[0]).await;
    // The newest half-sent one is still there (only the oldest make room).
    stays_open(&mut half[cap - 1], Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_is_refused_when_every_connection_has_a_request_in_flight() {
    let served = Served::start(small(2)).await;
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut stream = served.sent(STALLED_PUT).await;
        // 100 Continue: the handler reads the body, so the request is in flight.
        read_until(&mut stream, "100 Continue").await;
        stream.write_all(b"0123456789").await.expect("send");
        busy.push(stream);
    }
    let mut refused = served.connect().await;
    assert!(closed(&mut refused).await.is_empty());
    for stream in &mut busy {
        stays_open(stream, Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_half_a_header_is_closed_after_the_header_timeout() {
    let timeout = Duration::from_millis(300);
    let served = Served::start(ServeLimits {
        header_read_timeout: timeout,
        ..ServeLimits::default()
    })
    .await;
    let started = Instant::now();
    let mut stream = served.sent(HALF_HEADER).await;
    closed(&mut stream).await;
    assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
    // The server still answers.
    assert!(served.livez().await.starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(300);
    let served = Served::start(ServeLimits {
        idle_timeout: idle,
        // Longer than the test's patience: only the idle timeout can close it.
        header_read_timeout: Duration::from_secs(60),
        ..ServeLimits::default()
    })
    .await;
    let mut stream = served
        .sent(b"GET /livez HTTP/1.1\r\nhost: keeper\r\n\r\n")
        .await;
    let answer = read_until(&mut stream, "ok\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let answered = Instant::now();
    assert!(closed(&mut stream).await.is_empty());
    assert!(answered.elapsed() >= idle, "{:?}", answered.elapsed());
}

/// A config push whose body (1,000 bytes announced) is never sent whole.
const STALLED_PUT: &[u8] = b"PUT /v1/clusters/c/config HTTP/1.1\r\nhost: keeper\r\n\
    content-length: 1000\r\nexpect: 100-continue\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_clients_stalled_mid_header_and_mid_body_ends_by_the_deadline() {
    let deadline = Duration::from_secs(1);
    let mut served = Served::start(ServeLimits {
        shutdown_deadline: deadline,
        ..ServeLimits::default()
    })
    .await;
    let mut mid_header = served.sent(HALF_HEADER).await;
    let mut mid_body = served.sent(STALLED_PUT).await;
    // 100 Continue: the handler reads the body, so the request is in flight.
    read_until(&mut mid_body, "100 Continue").await;
    mid_body.write_all(b"0123456789").await.expect("send");

    let started = Instant::now();
    let _ = served.stop.take().map(|stop| stop.send(()));
    let result = tokio::time::timeout(deadline + Duration::from_secs(3), &mut served.task)
        .await
        .expect("serve returns within the deadline plus a margin");
    result.expect("serve task").expect("serve");
    let took = started.elapsed();
    // The request in flight was given the deadline to finish.
    assert!(took >= deadline, "{took:?}");
    closed(&mut mid_header).await;
    closed(&mut mid_body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_of_duration_max_mean_never_and_the_server_still_answers() {
    let served = Served::start(ServeLimits {
        header_read_timeout: Duration::MAX,
        idle_timeout: Duration::MAX,
        shutdown_deadline: Duration::MAX,
        ..ServeLimits::default()
    })
    .await;
    let mut idle = served.connect().await;
    let answer = served.livez().await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    stays_open(&mut idle, Duration::from_millis(200)).await;
}
