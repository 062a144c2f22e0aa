//! The baseline: a plain UDP sink that counts datagrams and does nothing else, run as a
//! process of its own (`zerokeeper bench-sink`) so its CPU time is measured like the
//! keeper's.
//!
//! It stops when its standard input closes (the bench holds the other end, so the sink
//! also goes when the bench dies), or after `--for`; then it prints `{"received": N}`.

use std::io::{self, BufRead as _, BufReader, IoSliceMut, Read as _};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use quinn_udp::{BATCH_SIZE, RecvMeta, UdpSocketState};
use tracing::debug;

use crate::loadgen::BenchError;
use crate::loadgen::keeper::{address_after, forward_lines};
use crate::loadgen::sender::gro_segments;
use crate::procstat::cpu_seconds;

/// Receive buffer asked for.
const SOCKET_BUFFER: usize = 8 << 20;
/// Bytes per receive buffer: a GRO run of up to 64 KiB fits.
const RECV_SLOT: usize = 64 * 1024;
/// The read timeout, so a stop is noticed when nothing arrives.
const READ_TIMEOUT: Duration = Duration::from_millis(100);

/// `zerokeeper bench-sink` flags (a helper of `zerokeeper bench --baseline`).
#[derive(clap::Args, Debug)]
pub struct SinkArgs {
    /// UDP address to count datagrams on (a loopback address).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    udp: SocketAddr,
    /// How to receive.
    #[arg(long, value_enum, default_value = "plain")]
    mode: SinkMode,
    /// Stop after this long instead of when standard input closes.
    #[arg(long = "for", value_parser = humantime::parse_duration, value_name = "DURATION")]
    run_for: Option<Duration>,
}

impl SinkArgs {
    /// Runs the sink; prints `sink listening on ADDR` on stderr at start and
    /// `{"received": N}` on stdout at the end.
    pub fn run(self) -> ExitCode {
        crate::loadgen::init_logging();
        match self.sink() {
            Ok(received) => {
                println!("{}", serde_json::json!({ "received": received }));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn sink(self) -> Result<u64, BenchError> {
        if !self.udp.ip().is_loopback() {
            return Err(BenchError::Usage(format!(
                "the sink listens on loopback only, not {}",
                self.udp
            )));
        }
        let io_error = |what: &str| {
            let what = what.to_owned();
            move |e| BenchError::Io(what, e)
        };
        let socket = UdpSocket::bind(self.udp).map_err(io_error("cannot bind the sink"))?;
        if self.mode == SinkMode::Plain {
            return plain(socket, self.run_for);
        }
        // quinn-udp turns GRO on (and makes the socket non-blocking: undone below, so
        // that an idle sink sleeps in the kernel instead of spinning).
        let state = UdpSocketState::new((&socket).into()).map_err(io_error("udp state"))?;
        if let Err(e) = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER) {
            debug!(error = %e, "could not enlarge the receive buffer");
        }
        socket
            .set_nonblocking(false)
            .and_then(|()| socket.set_read_timeout(Some(READ_TIMEOUT)))
            .map_err(io_error("cannot set the read timeout"))?;
        let local = socket.local_addr().map_err(io_error("local address"))?;
        debug!(
            recv_buffer = state.recv_buffer_size((&socket).into()).unwrap_or(0),
            gro_segments = state.gro_segments(),
            "sink socket"
        );
        eprintln!("sink listening on {local}");

        let mut buf = vec![0u8; BATCH_SIZE * RECV_SLOT];
        let received = count_until_stopped(self.run_for, || {
            let mut metas = [RecvMeta::default(); BATCH_SIZE];
            let n = {
                let mut slots = buf.chunks_mut(RECV_SLOT);
                // buf holds exactly BATCH_SIZE slots; the fallback is never used.
                let mut bufs: [IoSliceMut<'_>; BATCH_SIZE] =
                    std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or(&mut [])));
                state.recv((&socket).into(), &mut bufs, &mut metas)?
            };
            Ok(metas[..n]
                .iter()
                .zip(buf.chunks(RECV_SLOT))
                .map(|(meta, slot)| {
                    gro_segments(&slot[..meta.len.min(slot.len())], meta.stride).count() as u64
                })
                .sum())
        });
        Ok(received)
    }
}

/// How the sink receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkMode {
    /// One `recv_from` per datagram: the plain UDP receiver a simple server is.
    Plain,
    /// Up to 32 buffers per `recvmmsg`, with GRO coalescing (as the keeper receives):
    /// the ceiling of this machine.
    Batched,
}

/// A sink process started by the bench. Dropping it kills the process.
#[derive(Debug)]
pub(crate) struct SinkProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
}

impl SinkProcess {
    /// Starts `zerokeeper bench-sink` (this executable) on 127.0.0.1.
    pub(crate) fn start(mode: SinkMode) -> Result<SinkProcess, BenchError> {
        let exe = std::env::current_exe()
            .map_err(|e| BenchError::Io("cannot find this executable".into(), e))?;
        let mode = match mode {
            SinkMode::Plain => "plain",
            SinkMode::Batched => "batched",
        };
        let mut child = Command::new(exe)
            .args(["bench-sink", "--udp", "127.0.0.1:0", "--mode", mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| BenchError::Io("cannot start the sink".into(), e))?;
        let stdin = child.stdin.take();
        let Some(stderr) = child.stderr.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BenchError::Sink("no stderr pipe".into()));
        };
        let mut sink = SinkProcess {
            child,
            stdin,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let lines = forward_lines(stderr, "sink");
        loop {
            match lines.recv_timeout(Duration::from_secs(10)) {
                Ok(line) => {
                    if let Some(addr) = address_after(&line, "sink listening on ") {
                        sink.addr = addr;
                        return Ok(sink);
                    }
                    eprintln!("sink: {line}");
                }
                Err(_) => return Err(BenchError::Sink("it printed no address".into())),
            }
        }
    }

    /// The process id, for its CPU time.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the sink (closes its input); returns its count and its CPU seconds so far,
    /// read once it has counted the last datagram (an exited child's `/proc` entry
    /// stays readable until it is reaped, which `Drop` does).
    pub(crate) fn finish(mut self) -> Result<(u64, Option<f64>), BenchError> {
        drop(self.stdin.take());
        let Some(stdout) = self.child.stdout.take() else {
            return Err(BenchError::Sink("no stdout pipe".into()));
        };
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| BenchError::Io("cannot read the sink's count".into(), e))?;
        let value: serde_json::Value = serde_json::from_str(line.trim())
            .map_err(|e| BenchError::Sink(format!("unexpected output {line:?}: {e}")))?;
        let received = value
            .get("received")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| BenchError::Sink(format!("unexpected output {line:?}")))?;
        Ok((received, cpu_seconds(Some(self.pid()))))
    }
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        // After `finish` the sink has exited on its own; this only reaps it (or kills it
        // on an early error).
        drop(self.stdin.take());
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The plain sink: a blocking `recv_from` loop, one datagram per call, with the receive
/// buffer as large as the batched sink's.
fn plain(socket: UdpSocket, run_for: Option<Duration>) -> Result<u64, BenchError> {
    let io_error = |what: &'static str| move |e| BenchError::Io(what.into(), e);
    let sock = socket2::SockRef::from(&socket);
    if let Err(e) = sock.set_recv_buffer_size(SOCKET_BUFFER) {
        debug!(error = %e, "could not enlarge the receive buffer");
    }
    socket
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(io_error("cannot set the read timeout"))?;
    let local = socket.local_addr().map_err(io_error("local address"))?;
    eprintln!("sink listening on {local}");
    let mut buf = [0u8; 2048];
    let received = count_until_stopped(run_for, || socket.recv_from(&mut buf).map(|_| 1));
    Ok(received)
}

/// Counts what `receive` returns until the sink must stop: after `run_for`, or (without
/// one) once standard input closes and a read timeout passes with nothing received, so
/// what was queued at the stop is counted too.
fn count_until_stopped(
    run_for: Option<Duration>,
    mut receive: impl FnMut() -> io::Result<u64>,
) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = run_for.map(|d| Instant::now() + d);
    if deadline.is_none() {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Anything written is ignored; end of input (or an error) means stop.
            let mut sink = [0u8; 256];
            let mut stdin = io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            stop.store(true, Ordering::Relaxed);
        });
    }
    let mut received = 0u64;
    let mut stopping = false;
    loop {
        match receive() {
            Ok(n) => received += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // Quiet for a read timeout after the stop: the queue is empty.
                if stopping {
                    break;
                }
            }
            Err(e) => debug!(error = %e, "receive failed"),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        stopping = stop.load(Ordering::Relaxed);
    }
    received
}
