//! The admin API's limits against the real `zerokeeper serve` binary (issue 11's
//! acceptance): a crowd of idle and half-sent connections at a 1,024 file limit, a
//! thousand watchers that never read, and SIGTERM with stalled clients of every kind.
//!
//! Clients are raw blocking TCP streams on loopback, every read with a timeout; every
//! condition is waited for with a deadline.

mod procs;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::Signal;
use procs::{CLUSTER, Keeper, PATIENCE, TIMING, fresh_dir, line};

const A: &str = "10.25.0.11:3000";
const B: &str = "10.25.0.12:3000";
/// Half a request head, never finished.
const HALF_HEADER: &[u8] = b"GET /livez HTTP/1.1\r\nhost: kee";

/// Raises this process's soft open-file limit to its hard limit, which must allow `need`.
fn raise_file_limit(need: u64) {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    assert!(
        hard >= need,
        "this test holds {need} sockets; the hard open-file limit is {hard}"
    );
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
}

/// A line of `/proc/PID/FILE` starting with `name`, its first number.
fn proc_number(pid: nix::unistd::Pid, file: &str, name: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).expect("procfs");
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/{file}"));
    line[name.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in {line:?}"))
}

/// `VmRSS`, `VmHWM`, ... of `pid`, in bytes.
fn memory(pid: nix::unistd::Pid, field: &str) -> u64 {
    proc_number(pid, "status", &format!("{field}:")) * 1024
}

/// The file descriptors `pid` has open.
fn open_files(pid: nix::unistd::Pid) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("procfs")
        .count()
}

/// How many of the keeper's sockets (local port `port`) to the clients at `peers` (their
/// local ports) are still established, from `/proc/net/tcp`: a socket the keeper closed
/// is gone from it, or in a closing state.
fn established(port: u16, peers: &std::collections::HashSet<u16>) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("procfs");
    let port_of = |address: &str| {
        address
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3
                && port_of(fields[1]) == Some(port)
                && port_of(fields[2]).is_some_and(|p| peers.contains(&p))
                && fields[3] == "01"
        })
        .count()
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn connect(addr: &str) -> TcpStream {
    let addr: SocketAddr = addr.parse().expect("an address");
    let stream = TcpStream::connect_timeout(&addr, PATIENCE).expect("connect");
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("a read timeout");
    stream
}

/// `GET path` on a new connection: (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = connect(addr);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: keeper\r\nconnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("a whole answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {answer:?}"));
    let status = head[9..12].parse().expect("a status");
    (status, body.to_owned())
}

/// `GET path`, answered 200 with JSON.
fn get_json(addr: &str, path: &str) -> serde_json::Value {
    let (status, body) = get(addr, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

/// The store's current revision.
fn revision(addr: &str) -> u64 {
    get_json(addr, "/v1/store")["revision"]
        .as_u64()
        .expect("a revision")
}

/// Pushes `count` configs to the cluster over `connections` keep-alive connections at
/// once (each push is two changes: the version and the operator's action).
fn push_configs(addr: &str, cluster: &str, count: usize, connections: usize) {
    let per = count.div_ceil(connections);
    let pushers: Vec<_> = (0..connections)
        .map(|c| {
            let addr = addr.to_owned();
            let cluster = cluster.to_owned();
            std::thread::spawn(move || {
                let mut stream = connect(&addr);
                let mut reader = BufReader::new(stream.try_clone().expect("a second handle"));
                for i in 0..per {
                    let body = format!("pool_size = {}\n", c * per + i);
                    write!(
                        stream,
                        "PUT /v1/clusters/{cluster}/config?create=true HTTP/1.1\r\nhost: keeper\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .expect("send");
                    let mut status = String::new();
                    reader.read_line(&mut status).expect("an answer");
                    assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).expect("a header");
                        if header == "\r\n" {
                            break;
                        }
                        if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = value.trim().parse().expect("a length");
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).expect("the body");
                }
            })
        })
        .collect();
    for pusher in pushers {
        pusher.join().expect("the pushes succeeded");
    }
}

/// A watcher from revision 0 that never reads, with a small receive buffer: the keeper's
/// history soon fills every buffer on the way.
fn never_reading_watcher(addr: &str) -> TcpStream {
    let addr: SocketAddr = addr.parse().expect("an address");
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    socket.set_recv_buffer_size(4096).expect("a receive buffer");
    socket
        .connect_timeout(&addr.into(), PATIENCE)
        .expect("connect");
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("a read timeout");
    stream
        .write_all(b"GET /v1/watch?after=0 HTTP/1.1\r\nhost: keeper\r\n\r\n")
        .expect("send");
    stream
}

/// Waits until the keeper has sent something to `stream`, without reading it.
fn served(stream: &TcpStream) {
    let n = stream.peek(&mut [0u8; 1]).expect("the keeper answers");
    assert!(n > 0, "closed before any answer");
}

/// A watcher that reads everything, from a thread: the revision of every event it reads,
/// until its stream ends (then the channel disconnects).
fn follower(addr: &str) -> mpsc::Receiver<u64> {
    let (tx, rx) = mpsc::channel();
    let mut stream = connect(addr);
    // Quiet stretches are normal (the keeper sends a keep-alive every 15 s): only a
    // stream silent for three of them is dead, as the CLI's watch judges it.
    stream
        .set_read_timeout(Some(Duration::from_secs(45)))
        .expect("a read timeout");
    stream
        .write_all(b"GET /v1/watch HTTP/1.1\r\nhost: keeper\r\n\r\n")
        .expect("send");
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if let Some(id) = line.strip_prefix("id: ")
                && let Some(revision) = id.split_once('-').and_then(|(_, r)| r.parse().ok())
                && tx.send(revision).is_err()
            {
                return;
            }
        }
    });
    rx
}

/// Waits until `events` brings `revision`.
fn arrives(events: &mpsc::Receiver<u64>, revision: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(r) if r >= revision => return,
            Ok(_) => {}
            Err(e) => panic!("revision {revision} never arrived: {e}"),
        }
    }
}

/// The version `push-config` printed (`pushed config version N to C`).
fn pushed_version(keeper: &Keeper, body: &str) -> u64 {
    let (code, out, err) = keeper.push_config(body);
    assert_eq!(code, 0, "{out}{err}");
    out.split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no version in {out:?}"))
}

#[test]
fn operators_and_proxies_get_through_1100_idle_and_1100_half_sent_connections_at_a_1024_file_limit()
{
    const EACH: usize = 1100;
    raise_file_limit(2 * EACH as u64 + 256);
    // Longer than the default test timing: only the keeper's answers are under test, not
    // how fast this 2-core machine schedules proxy processes while it opens 2,200 sockets.
    let timing = [
        "--heartbeat-interval",
        "200ms",
        "--lost-after",
        "2s",
        "--ready-timeout",
        "10s",
        "--delete-after",
        "10s",
    ];
    let keeper = Keeper::launch(
        &fresh_dir("crowd"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &timing,
        &[],
        Some(1024),
    );
    let pid = keeper.process.pid();
    assert_eq!(proc_number(pid, "limits", "Max open files"), 1024);
    let _proxies = [keeper.proxy(A, &[]), keeper.proxy(B, &[])];
    keeper.wait_keys(&[(A, "up"), (B, "up")]);
    let addr = keeper.http_addr();

    let started = Instant::now();
    let idle: Vec<TcpStream> = (0..EACH).map(|_| connect(addr)).collect();
    let half: Vec<TcpStream> = (0..EACH)
        .map(|_| {
            let mut stream = connect(addr);
            stream.write_all(HALF_HEADER).expect("send");
            stream
        })
        .collect();
    let opened = started.elapsed();
    // The table is full: every operator request below competes with the crowd.
    let files = open_files(pid);
    assert!(files >= 512, "the keeper holds only {files} files");

    let started = Instant::now();
    for round in 0..5 {
        let (status, body) = get(addr, "/livez");
        assert_eq!((status, body.as_str()), (200, "ok\n"), "round {round}");
        let (status, body) = get(addr, "/v1/clusters");
        assert_eq!(status, 200, "round {round}: {body}");
        let (code, out, err) = keeper.cli(&["status", "--cluster", CLUSTER, "-o", "keys"]);
        assert_eq!(code, 0, "round {round}: {err}");
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            [line(A, "up"), line(B, "up")],
            "round {round}"
        );
    }
    let answered = started.elapsed();
    eprintln!(
        "opened {} connections in {opened:?}; the keeper held {files} files; 5 rounds of operator requests took {answered:?}",
        idle.len() + half.len()
    );
    // No proxy was ever lost: the keeper logs every status change.
    let log = keeper.process.log();
    assert!(
        !log.contains("to=\"lost\""),
        "a proxy was lost:\n{}",
        log.lines()
            .filter(|l| l.contains("to=\"lost\""))
            .collect::<Vec<_>>()
            .join("\n")
    );
    keeper.wait_keys(&[(A, "up"), (B, "up")]);
    drop((idle, half));
}

#[test]
fn a_thousand_never_reading_watchers_from_revision_0_cost_under_64_mb_are_cut_off_and_others_keep_streaming()
 {
    const WATCHERS: usize = 1000;
    raise_file_limit(WATCHERS as u64 + 256);
    let keeper = Keeper::launch(
        &fresh_dir("watchers"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &TIMING,
        // Room for every watcher at once, and a write timeout long enough for all of
        // them to be served before the first is cut off: about 6 s alone, 18 s seen with
        // the rest of the suite running beside it on 2 cores.
        &[
            "--http-max-connections",
            "1100",
            "--http-max-watchers",
            "1050",
            "--http-write-timeout",
            "40s",
        ],
        Some(2048),
    );
    let pid = keeper.process.pid();
    let addr = keeper.http_addr();
    // 2,000 changes of a cluster with the longest name, about 700 KB of events from
    // revision 0: several times what the sockets of a watcher that never reads hold
    // (the keeper's send buffer of 64 KiB, which Linux doubles, and ours of 4 KiB).
    push_configs(addr, &"w".repeat(128), 1000, 8);
    let history = revision(addr);
    assert!(history >= 2000, "{history}");

    let events = follower(addr);
    let files_before = open_files(pid);
    let rss_before = memory(pid, "VmRSS");
    let started = Instant::now();
    let stalled: Vec<TcpStream> = (0..WATCHERS).map(|_| never_reading_watcher(addr)).collect();
    for stream in &stalled {
        served(stream);
    }
    let connected = started.elapsed();
    let rss_served = memory(pid, "VmRSS");
    let files_served = open_files(pid);
    // Every one is held at once.
    let port: u16 = addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("a port");
    let peers: std::collections::HashSet<u16> = stalled
        .iter()
        .map(|s| s.local_addr().expect("bound").port())
        .collect();
    assert_eq!(
        established(port, &peers),
        WATCHERS,
        "served in {connected:?}"
    );

    // The watcher that reads keeps streaming meanwhile.
    pushed_version(&keeper, "pool_size = 1\n");
    arrives(&events, revision(addr));

    // Every never-reading one is cut off by the write timeout: the keeper closes them.
    let deadline = Instant::now() + Duration::from_secs(40) + PATIENCE;
    loop {
        let left = established(port, &peers);
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the keeper still holds {left} of them ({} files, {files_before} before)",
            open_files(pid)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let cut_off = started.elapsed();
    let peak = memory(pid, "VmHWM");
    let rss_after = memory(pid, "VmRSS");
    eprintln!(
        "history {history} changes; {WATCHERS} watchers served in {connected:?}, all cut off after {cut_off:?}; \
         keeper RSS {:.1} MB before, {:.1} MB with them served, {:.1} MB after; peak (VmHWM, since start) {:.1} MB; \
         files {files_before} before, {files_served} with them",
        mb(rss_before),
        mb(rss_served),
        mb(rss_after),
        mb(peak)
    );
    let growth = peak.saturating_sub(rss_before);
    assert!(
        growth < 64 * 1024 * 1024,
        "the keeper's RSS grew by {:.1} MB",
        mb(growth)
    );

    // And still streams after they are gone.
    pushed_version(&keeper, "pool_size = 2\n");
    arrives(&events, revision(addr));
    // What a cut-off watcher can still read is what was buffered for it, then the close.
    for mut stream in stalled.into_iter().take(3) {
        let mut rest = Vec::new();
        stream
            .read_to_end(&mut rest)
            .expect("closed by the keeper, without a reset");
        assert!(rest.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
}

#[test]
fn sigterm_with_stalled_clients_of_every_kind_exits_0_by_the_deadline_and_keeps_what_was_acknowledged()
 {
    let dir = fresh_dir("sigterm");
    let mut keeper = Keeper::launch(
        &dir,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &TIMING,
        &["--http-shutdown-deadline", "2s"],
        None,
    );
    let addr = keeper.http_addr().to_owned();
    // A history a never-reading watcher cannot take whole.
    push_configs(&addr, CLUSTER, 1500, 8);

    let idle = connect(&addr);
    let mut half = connect(&addr);
    half.write_all(HALF_HEADER).expect("send");
    let mut mid_body = connect(&addr);
    mid_body
        .write_all(
            format!(
                "PUT /v1/clusters/{CLUSTER}/config?create=true HTTP/1.1\r\nhost: keeper\r\ncontent-length: 1000000\r\nexpect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        )
        .expect("send");
    // 100 Continue: the handler reads the body, so the request is in flight.
    let mut continued = [0u8; 25];
    mid_body.read_exact(&mut continued).expect("100 Continue");
    assert!(continued.starts_with(b"HTTP/1.1 100 Continue"));
    mid_body.write_all(&[b'x'; 1000]).expect("send");
    let stalled = never_reading_watcher(&addr);
    served(&stalled);
    let events = follower(&addr);

    // Acknowledged just before the signal.
    let version = pushed_version(&keeper, "pool_size = 77\n");
    arrives(&events, revision(&addr));

    let signalled = Instant::now();
    keeper.process.signal(Signal::SIGTERM);
    let code = keeper.process.wait_exit();
    let took = signalled.elapsed();
    eprintln!("exited {code} {took:?} after SIGTERM (shutdown deadline 2s)");
    assert_eq!(code, 0, "{}", keeper.process.log());
    assert!(took < Duration::from_secs(10), "{took:?}");
    // The reading watcher's stream ended.
    let deadline = Instant::now() + PATIENCE;
    loop {
        match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("the watch stream did not end"),
        }
    }

    let again = Keeper::start_on(&dir, "127.0.0.1:0");
    let config = get_json(again.http_addr(), &format!("/v1/clusters/{CLUSTER}/config"));
    assert_eq!(config["version"], version, "{config}");
    drop((idle, half, mid_body, stalled));
}
