//! The admin API's server limits, against a real keeper (`zerokeeper::server`) whose
//! router is served with small limits on loopback TCP: a cap of connections that still
//! lets an operator in, header, idle, body-read and write timeouts, requests per
//! connection, a cap of watchers, problem+json for what hyper cannot parse, a clean 413,
//! and a shutdown with a deadline.
//!
//! Clients are raw TCP streams, so they can stall anywhere in a request; every read has
//! a deadline, so nothing hangs.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use zerokeeper::auth::{Key, Keyring};
use zerokeeper::driver::DriverClock;
use zerokeeper::http::view::{View, ViewSeed};
use zerokeeper::http::{ServeLimits, router, serve_with};
use zerokeeper::hub::ChangeHub;
use zerokeeper::keeper::KeeperConfig;
use zerokeeper::keeper::change::{Change, ChangeKind, WallChange};
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

/// The generation of the synthetic histories.
const GEN: u64 = 7;

impl Served {
    async fn start(limits: ServeLimits) -> Served {
        Served::start_with(limits, None).await
    }

    /// A keeper whose watch streams read a hub holding `history` (synthetic changes from
    /// revision 1, made by hand here so that a large history costs nothing).
    async fn with_history(limits: ServeLimits, history: Vec<WallChange>) -> Served {
        Served::start_with(limits, Some(history)).await
    }

    async fn start_with(limits: ServeLimits, history: Option<Vec<WallChange>>) -> Served {
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
        let (hub, view) = match history {
            None => (running.hub.clone(), running.view.clone()),
            Some(history) => {
                let revision = history.last().map_or(0, |c| c.revision);
                let hub = ChangeHub::new(GEN, revision, history.len(), history);
                let seed = ViewSeed {
                    generation: GEN,
                    revision,
                    ..ViewSeed::default()
                };
                let view = View::new(seed, Default::default(), DriverClock::start());
                (hub, view)
            }
        };
        let app = router(running.handle.clone(), hub, view);
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
                "still open after {PATIENCE:?}; received {}",
                tail(&received)
            ),
            Ok(Ok(0)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => return received,
            Ok(Err(e)) => panic!("read: {e}"),
        }
    }
}

/// Reads from `stream` until what was received contains `marker`; returns all of it.
async fn read_until(stream: &mut TcpStream, marker: &str) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let mut searched = 0;
    loop {
        if received[searched..]
            .windows(marker.len())
            .any(|w| w == marker.as_bytes())
        {
            return String::from_utf8_lossy(&received).into_owned();
        }
        searched = received.len().saturating_sub(marker.len());
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => panic!(
                "no {marker:?} after {PATIENCE:?}; received {}",
                tail(&received)
            ),
            Ok(Ok(0)) => panic!("closed before {marker:?}; received {}", tail(&received)),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Ok(Err(e)) => panic!("read: {e}"),
        }
    }
}

/// The end of what was received, for a message.
fn tail(received: &[u8]) -> String {
    let from = received.len().saturating_sub(1000);
    format!(
        "{} bytes, ending {:?}",
        received.len(),
        String::from_utf8_lossy(&received[from..])
    )
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
    // Taken before the request: the keeper's idle clock starts once it has written the
    // answer, which is later than this and earlier than the client reading it, so only
    // this instant bounds the idle time from below.
    let asked = Instant::now();
    let mut stream = served
        .sent(b"GET /livez HTTP/1.1\r\nhost: keeper\r\n\r\n")
        .await;
    let answer = read_until(&mut stream, "ok\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(closed(&mut stream).await.is_empty());
    assert!(asked.elapsed() >= idle, "{:?}", asked.elapsed());
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

/// Reads until the server closes `stream`, strictly: a reset is an error (the client
/// would have lost what it had not read yet).
async fn read_all(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<Vec<u8>> {
    let mut received = Vec::new();
    match tokio::time::timeout(PATIENCE, stream.read_to_end(&mut received)).await {
        Err(_) => panic!(
            "still open after {PATIENCE:?}; received {}",
            tail(&received)
        ),
        Ok(read) => read.map(|_| received),
    }
}

/// Sends `request` whole while reading the answer, as a client that does not wait for
/// the server before sending its body: (what was read until the close, how the send
/// went).
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> (io::Result<Vec<u8>>, io::Result<()>) {
    let (mut reader, mut writer) = stream.split();
    let (answer, sent) = tokio::join!(read_all(&mut reader), writer.write_all(request));
    (answer, sent)
}

/// An answer: (status, headers lowercased, body).
fn parse(answer: &[u8]) -> (u16, String, Vec<u8>) {
    let text = String::from_utf8_lossy(answer);
    let (head, _) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {text:?}"));
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (
        status,
        head.to_ascii_lowercase(),
        answer[head.len() + 4..].to_vec(),
    )
}

/// Asserts that `answer` is a problem+json answer of `status` and `kind`; the problem.
fn problem(answer: &[u8], status: u16, kind: &str) -> serde_json::Value {
    let (got, headers, body) = parse(answer);
    assert_eq!(got, status, "{headers}");
    assert!(
        headers.contains("\r\ncontent-type: application/problem+json"),
        "{headers}"
    );
    assert!(
        headers.contains(&format!("\r\ncontent-length: {}", body.len())),
        "{headers}"
    );
    let problem: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&body)));
    assert_eq!(problem["type"], format!("urn:zerokeeper:problem:{kind}"));
    assert_eq!(problem["status"], status);
    assert!(problem["title"].is_string(), "{problem}");
    assert!(problem["detail"].is_string(), "{problem}");
    problem
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_cannot_parse_are_answered_with_problems_and_read_whole() {
    let served = Served::start(ServeLimits::default()).await;
    let headers: String = (0..200).map(|i| format!("x-{i}: y\r\n")).collect();
    let cases = [
        (b"GARBAGE\r\n\r\n".to_vec(), 400, "malformed-request"),
        (
            format!("GET /livez HTTP/1.1\r\nhost: keeper\r\n{headers}\r\n").into_bytes(),
            431,
            "headers-too-large",
        ),
        (
            format!(
                "GET /{} HTTP/1.1\r\nhost: keeper\r\n\r\n",
                "a".repeat(100_000)
            )
            .into_bytes(),
            414,
            "uri-too-long",
        ),
    ];
    for (request, status, kind) in cases {
        let mut stream = served.connect().await;
        let (answer, sent) = exchange(&mut stream, &request).await;
        sent.unwrap_or_else(|e| panic!("{kind}: the request was not sent whole: {e}"));
        let answer = answer.unwrap_or_else(|e| panic!("{kind}: no clean answer: {e}"));
        problem(&answer, status, kind);
        let (_, headers, _) = parse(&answer);
        assert!(headers.contains("\r\nconnection: close"), "{headers}");
    }
    assert!(served.livez().await.starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_a_body_over_the_limit_whole_reads_the_413_not_a_reset() {
    let served = Served::start(ServeLimits::default()).await;
    let body = vec![b'x'; 5_000_000];
    let announced = [
        format!(
            "PUT /v1/clusters/c/config HTTP/1.1\r\nhost: keeper\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes(),
        body.clone(),
    ]
    .concat();
    // Not announced: read to just past the limit, then refused.
    let chunked = [
        b"PUT /v1/clusters/c/config HTTP/1.1\r\nhost: keeper\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec(),
        format!("{:x}\r\n", body.len()).into_bytes(),
        body.clone(),
        b"\r\n0\r\n\r\n".to_vec(),
    ]
    .concat();
    for (framing, request) in [("content-length", announced), ("chunked", chunked)] {
        let mut stream = served.connect().await;
        let (answer, sent) = exchange(&mut stream, &request).await;
        sent.unwrap_or_else(|e| panic!("{framing}: the body was not sent whole: {e}"));
        let answer = answer.unwrap_or_else(|e| panic!("{framing}: no clean answer: {e}"));
        problem(&answer, 413, "config-too-large");
        // The body was not read to its end: the answer says the connection closes, so
        // no client reuses it.
        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(
            text.contains("\r\nconnection: close\r\n"),
            "{framing}: {text}"
        );
    }
    // Nothing was stored.
    let mut stream = served
        .sent(b"GET /v1/clusters/c HTTP/1.1\r\nhost: keeper\r\nconnection: close\r\n\r\n")
        .await;
    problem(&closed(&mut stream).await, 404, "unknown-cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_makes_no_progress_is_answered_408_after_the_body_read_timeout() {
    let timeout = Duration::from_millis(300);
    let served = Served::start(ServeLimits {
        body_read_timeout: timeout,
        ..ServeLimits::default()
    })
    .await;
    // Before the request: the keeper's clock starts when it reads the body's first part.
    let started = Instant::now();
    let mut stream = served
        .sent(b"PUT /v1/clusters/c/config HTTP/1.1\r\nhost: keeper\r\ncontent-length: 1000\r\n\r\n0123456789")
        .await;
    let answer = read_all(&mut stream).await.expect("a clean answer");
    assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
    problem(&answer, 408, "request-timeout");
    assert!(served.livez().await.starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_closed_once_its_last_request_is_answered() {
    let served = Served::start(ServeLimits {
        max_requests_per_connection: 3,
        ..ServeLimits::default()
    })
    .await;
    // Four pipelined on one connection: three are answered, the third says so.
    let request = "GET /livez HTTP/1.1\r\nhost: keeper\r\n\r\n".repeat(4);
    let mut stream = served.connect().await;
    let (answer, sent) = exchange(&mut stream, request.as_bytes()).await;
    sent.expect("sent");
    let answer = String::from_utf8(answer.expect("a clean close")).expect("text");
    let answers: Vec<&str> = answer.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 3, "{answer:?}");
    for (i, one) in answers.iter().enumerate() {
        assert!(one.starts_with("200 OK"), "{one:?}");
        let closes = one
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n");
        assert_eq!(closes, i == 2, "answer {i}: {one:?}");
    }
}

/// `n` synthetic changes, revisions 1 to `n`, of cluster `c`.
fn history(n: u64) -> Vec<WallChange> {
    (1..=n)
        .map(|revision| Change {
            revision,
            at: 0,
            kind: ChangeKind::DeletionPaused {
                cluster: Arc::from("c"),
                paused: revision % 2 == 1,
                lost: 2,
                total: 3,
            },
        })
        .collect()
}

/// `GET /v1/watch` from revision 0.
const WATCH: &[u8] = b"GET /v1/watch?after=7-0 HTTP/1.1\r\nhost: keeper\r\n\r\n";

/// A client that asks to watch from revision 0 and reads nothing past the answer's head,
/// with a small receive buffer, so that what the server sends soon fills every buffer on
/// the way.
async fn never_reading_watcher(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("a receive buffer");
    let mut stream = socket.connect(addr).await.expect("connect");
    stream.write_all(WATCH).await.expect("send");
    // Its answer's head has come, so it holds its watcher slot (a watch sent after it
    // could otherwise be served first); from now on it reads nothing.
    let head = read_until(&mut stream, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream
}

/// A watch that reads its answer's head: (status, what was read, the stream).
async fn watch(served: &Served) -> (u16, String, TcpStream) {
    let mut stream = served.sent(WATCH).await;
    let read = read_until(&mut stream, "\r\n\r\n").await;
    let status = read[9..12].parse().expect("a status");
    (status, read, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_past_the_cap_are_refused_503_and_operators_still_get_in() {
    let served = Served::with_history(
        ServeLimits {
            max_watchers: 2,
            max_connections: 4,
            ..ServeLimits::default()
        },
        history(10),
    )
    .await;
    let (first, _, _a) = watch(&served).await;
    let (second, _, b) = watch(&served).await;
    assert_eq!((first, second), (200, 200));
    let mut refused = served
        .sent(b"GET /v1/watch HTTP/1.1\r\nhost: keeper\r\nconnection: close\r\n\r\n")
        .await;
    let answer = closed(&mut refused).await;
    let (_, headers, _) = parse(&answer);
    assert!(headers.contains("\r\nretry-after: "), "{headers}");
    problem(&answer, 503, "too-many-watchers");
    // The cap leaves room for everything else.
    for _ in 0..3 {
        assert!(served.livez().await.starts_with("HTTP/1.1 200"));
    }
    // A watcher that leaves frees its slot.
    drop(b);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, head, _stream) = watch(&served).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{head}");
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_never_reads_is_cut_off_after_the_write_timeout_and_frees_its_slot() {
    let served = Served::with_history(
        ServeLimits {
            // Long enough that the first refusal below is seen on a loaded machine
            // before the stalled watcher is cut off.
            write_timeout: Duration::from_secs(2),
            max_watchers: 1,
            max_connections: 4,
            ..ServeLimits::default()
        },
        // About 14 MB of events: more than the sockets' buffers hold.
        history(100_000),
    )
    .await;
    let mut stalled = never_reading_watcher(served.addr).await;
    // Its stream takes the only watcher slot until the server gives up on it.
    let deadline = Instant::now() + PATIENCE;
    let mut refused = 0;
    let (read, mut reader) = loop {
        let (status, head, stream) = watch(&served).await;
        if status == 200 {
            break (head, stream);
        }
        assert_eq!(status, 503, "{head}");
        refused += 1;
        assert!(
            Instant::now() < deadline,
            "the stalled watcher kept its slot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refused > 0, "the stalled watcher never held its slot");
    // It was disconnected: what it can still read ends in a close.
    closed(&mut stalled).await;
    // The new watcher streams from revision 0.
    assert!(read.contains("200 OK"), "{read}");
    read_until(&mut reader, "id: 7-1000\n").await;
}
