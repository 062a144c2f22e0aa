//! One sender thread: a UDP socket on 127.0.0.1 with quinn-udp's batched I/O, and the
//! loops of each phase (registration, load) over its share of the proxies.
//!
//! Sending: heartbeats are encoded end to end into one buffer; runs of equal length go
//! out as one GSO send (the kernel cuts it into datagrams), which is what makes a few
//! hundred thousand datagrams a second affordable for two threads. Receiving: `recvmmsg`
//! fills up to [`BATCH_SIZE`] buffers per call, and a buffer may hold several datagrams
//! of one size (GRO), at `stride` boundaries.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quinn_udp::{BATCH_SIZE, RecvMeta, Transmit, UdpSocketState};
use tracing::debug;

use crate::loadgen::BenchError;
use crate::loadgen::fleet::{Fleet, Stage};
use crate::wire::{MAX_DATAGRAM, ProxyStatus};

/// Socket buffers asked for (the kernel caps them at `net.core.{r,w}mem_max`).
const SOCKET_BUFFER: usize = 8 << 20;
/// Bytes per receive buffer: any UDP datagram, or a GRO run of them, fits.
const RECV_SLOT: usize = 64 * 1024;
/// Heartbeats encoded per send call; also the kernel's limit of GSO segments.
const BATCH: usize = 64;
/// Most bytes in one GSO send (a UDP payload is below 64 KiB).
const MAX_GSO_BYTES: usize = 65_000;
/// Back-off when the send buffer is full.
const SEND_BACKOFF: Duration = Duration::from_micros(20);
/// How long a send may keep meeting a full buffer before its datagrams are dropped.
const SEND_GIVE_UP: Duration = Duration::from_secs(1);
/// Registration heartbeats in flight at once, so that no queue overflows.
const REGISTRATION_WINDOW: usize = 2_000;
/// A registration round ends after this long without an answer.
const REGISTRATION_QUIET: Duration = Duration::from_millis(50);
/// `recvmmsg` calls per drain between sends, so answers cannot starve sending.
const DRAIN_CALLS: usize = 4;

/// One run of a batch: `count` datagrams of `segment` bytes each, starting at byte
/// `offset` of the batch buffer; sent as one GSO `Transmit`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GsoRun {
    /// Offset of the run's first byte in the batch buffer.
    pub offset: usize,
    /// Length of each datagram of the run.
    pub segment: usize,
    /// Number of datagrams.
    pub count: usize,
}

/// Splits a batch of datagrams laid end to end, with these lengths, into runs that can
/// each go out in one GSO send: consecutive datagrams of equal length, at most
/// `max_segments` of them (at least 1) and at most `max_bytes` together (at least one
/// datagram).
pub fn gso_runs(lengths: &[usize], max_segments: usize, max_bytes: usize) -> Vec<GsoRun> {
    let max_segments = max_segments.max(1);
    let mut runs: Vec<GsoRun> = Vec::new();
    let mut offset = 0;
    for &len in lengths {
        match runs.last_mut() {
            Some(run)
                if run.segment == len
                    && run.count < max_segments
                    && (run.count + 1) * len <= max_bytes =>
            {
                run.count += 1;
            }
            _ => runs.push(GsoRun {
                offset,
                segment: len,
                count: 1,
            }),
        }
        offset += len;
    }
    runs
}

/// A token bucket: `rate` grants a second, at most `capacity` saved up.
#[derive(Debug)]
pub(crate) struct Pacer {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    /// A bucket of `rate` a second, empty at `now`.
    pub(crate) fn new(rate: f64, now: Instant) -> Pacer {
        // Five milliseconds of grants (and at least one batch) may be saved up, so that a
        // sleep that overshoots does not cost rate, and a stall is not made up in a burst.
        let capacity = (rate * 0.005).max(BATCH as f64);
        Pacer {
            rate,
            capacity,
            tokens: 0.0,
            last: now,
        }
    }

    /// Up to `want` grants now, or how long to wait for enough of them.
    ///
    /// It grants in lumps of a millisecond's worth (at most `want`): waking for every
    /// single grant would cost a context switch per datagram, and with many sender threads
    /// on few cores those switches would eat the CPU the keeper under test needs.
    pub(crate) fn grant(&mut self, now: Instant, want: usize) -> Result<usize, Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        let lump = (self.rate * 0.001).clamp(1.0, want.max(1) as f64);
        if self.tokens >= lump {
            let n = (self.tokens.floor() as usize).min(want);
            self.tokens -= n as f64;
            Ok(n)
        } else {
            Err(Duration::from_secs_f64((lump - self.tokens) / self.rate))
        }
    }
}

/// What a sender thread publishes for the progress line.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Datagrams sent in this phase.
    pub(crate) sent: AtomicU64,
    /// Acks received in this phase.
    pub(crate) acked: AtomicU64,
}

/// A sender thread's socket and proxies.
#[derive(Debug)]
pub(crate) struct Sender {
    socket: UdpSocket,
    state: UdpSocketState,
    target: SocketAddr,
    pub(crate) fleet: Fleet,
    send_buf: Vec<u8>,
    lengths: Vec<usize>,
    recv_buf: Vec<u8>,
}

impl Sender {
    /// Binds a socket on 127.0.0.1 for `fleet`, which sends to `target`.
    pub(crate) fn bind(fleet: Fleet, target: SocketAddr) -> io::Result<Sender> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        // quinn-udp makes the socket non-blocking and turns GRO on where it can.
        let state = UdpSocketState::new((&socket).into())?;
        if let Err(e) = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER) {
            debug!(error = %e, "could not enlarge the send buffer");
        }
        if let Err(e) = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER) {
            debug!(error = %e, "could not enlarge the receive buffer");
        }
        debug!(
            local = %socket.local_addr()?,
            asked = SOCKET_BUFFER,
            send_buffer = state.send_buffer_size((&socket).into()).unwrap_or(0),
            recv_buffer = state.recv_buffer_size((&socket).into()).unwrap_or(0),
            gso_segments = state.max_gso_segments(),
            gro_segments = state.gro_segments(),
            "sender socket"
        );
        Ok(Sender {
            socket,
            state,
            target,
            fleet,
            send_buf: vec![0; BATCH * MAX_DATAGRAM],
            lengths: Vec::with_capacity(BATCH),
            recv_buf: vec![0; BATCH_SIZE * RECV_SLOT],
        })
    }

    /// Most datagrams per GSO send here (1 where the kernel has no GSO).
    pub(crate) fn gso_segments(&self) -> usize {
        self.state.max_gso_segments().min(BATCH)
    }

    /// Registers every proxy (`ready` until acked), then moves each to `up` (until
    /// acked), a window at a time; fails if that is not done by `deadline`.
    pub(crate) fn register(&mut self, deadline: Instant) -> Result<(), BenchError> {
        self.fleet.set_record_rtt(false);
        for (stage, status) in [
            (Stage::Ready, ProxyStatus::Ready),
            (Stage::Up, ProxyStatus::Up),
        ] {
            loop {
                let window: Vec<usize> =
                    self.fleet.behind(stage).take(REGISTRATION_WINDOW).collect();
                if window.is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(BenchError::RegistrationTimeout {
                        stage: if stage == Stage::Ready { "ready" } else { "up" },
                        missing: self.fleet.behind(stage).count(),
                        total: self.fleet.len(),
                    });
                }
                for chunk in window.chunks(BATCH) {
                    self.send_batch(chunk.iter().copied(), status, Instant::now());
                }
                // Wait for this window's answers; a Challenge (the first round has no
                // token) leaves the proxy behind, and the next round sends it again.
                let mut last_answer = Instant::now();
                loop {
                    if self.drain(usize::MAX) > 0 {
                        last_answer = Instant::now();
                    }
                    if window.iter().all(|&i| self.fleet.reached(i, stage))
                        || last_answer.elapsed() >= REGISTRATION_QUIET
                    {
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        Ok(())
    }

    /// Sends `up` heartbeats until `until` or until `stop` is set, at `rate` a second if
    /// given (else as fast as it can), draining answers between sends; then keeps
    /// draining for `settle`. Returns when sending stopped.
    pub(crate) fn load(
        &mut self,
        until: Instant,
        stop: &AtomicBool,
        rate: Option<f64>,
        settle: Duration,
        progress: &Progress,
    ) -> Instant {
        let mut pacer = rate.map(|r| Pacer::new(r, Instant::now()));
        let stopped = loop {
            let now = Instant::now();
            if now >= until || stop.load(Ordering::Relaxed) {
                break now;
            }
            let want = match pacer.as_mut().map(|p| p.grant(now, BATCH)) {
                None => BATCH,
                Some(Ok(n)) => n,
                Some(Err(wait)) => {
                    self.drain(DRAIN_CALLS);
                    std::thread::sleep(wait.min(until - now));
                    continue;
                }
            };
            let mut picked = [0usize; BATCH];
            let mut n = 0;
            while n < want {
                match self.fleet.next_sender() {
                    Some(local) => {
                        picked[n] = local;
                        n += 1;
                    }
                    None => break,
                }
            }
            if n == 0 {
                // Every proxy of this thread is paused: only listen.
                self.drain(DRAIN_CALLS);
                std::thread::sleep(Duration::from_millis(1).min(until - now));
                continue;
            }
            self.send_batch(picked[..n].iter().copied(), ProxyStatus::Up, now);
            progress
                .sent
                .store(self.fleet.stats.sent, Ordering::Relaxed);
            self.drain(DRAIN_CALLS);
            progress
                .acked
                .store(self.fleet.stats.acked, Ordering::Relaxed);
        };
        let end = Instant::now() + settle;
        while Instant::now() < end {
            if self.drain(usize::MAX) == 0 {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        progress
            .acked
            .store(self.fleet.stats.acked, Ordering::Relaxed);
        stopped
    }

    /// Reads and forgets whatever answers are queued (late answers of an earlier phase,
    /// whose round trips would include the pause between phases).
    pub(crate) fn discard_queued(&mut self) {
        self.fleet.set_record_rtt(false);
        while self.drain(usize::MAX) > 0 {}
    }

    /// Encodes a heartbeat for each of `proxies` and sends them, a GSO run at a time.
    fn send_batch(
        &mut self,
        proxies: impl Iterator<Item = usize>,
        status: ProxyStatus,
        now: Instant,
    ) {
        self.lengths.clear();
        let mut offset = 0;
        for local in proxies.take(BATCH) {
            let room = &mut self.send_buf[offset..offset + MAX_DATAGRAM];
            match self.fleet.encode(local, status, now, room) {
                Ok(len) => {
                    self.lengths.push(len);
                    offset += len;
                }
                // Cannot happen: a heartbeat of these names is under 100 bytes.
                Err(e) => debug!(error = %e, "heartbeat not encoded"),
            }
        }
        for run in gso_runs(&self.lengths, self.gso_segments(), MAX_GSO_BYTES) {
            let bytes = &self.send_buf[run.offset..run.offset + run.segment * run.count];
            let sent = send_run(&self.state, &self.socket, self.target, bytes, run.segment);
            self.fleet.stats.sent += sent;
            self.fleet.stats.send_errors += run.count as u64 - sent;
        }
    }

    /// Handles every queued answer, up to `max_calls` receive calls; returns how many
    /// datagrams there were.
    fn drain(&mut self, max_calls: usize) -> usize {
        let mut total = 0;
        for _ in 0..max_calls {
            let mut metas = [RecvMeta::default(); BATCH_SIZE];
            let received = {
                let mut slots = self.recv_buf.chunks_mut(RECV_SLOT);
                // recv_buf holds exactly BATCH_SIZE slots; the fallback is never used.
                let mut bufs: [IoSliceMut<'_>; BATCH_SIZE] =
                    std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or(&mut [])));
                match self
                    .state
                    .recv((&self.socket).into(), &mut bufs, &mut metas)
                {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        debug!(error = %e, "receive failed");
                        break;
                    }
                }
            };
            let now = Instant::now();
            for (meta, slot) in metas[..received]
                .iter()
                .zip(self.recv_buf.chunks(RECV_SLOT))
            {
                for datagram in gro_segments(&slot[..meta.len.min(slot.len())], meta.stride) {
                    self.fleet.handle(datagram, now);
                    total += 1;
                }
            }
            if received < BATCH_SIZE {
                break;
            }
        }
        total
    }
}

/// The datagrams of a received buffer: one, or several at `stride` boundaries (GRO).
pub(crate) fn gro_segments(buffer: &[u8], stride: usize) -> std::slice::Chunks<'_, u8> {
    let stride = if stride == 0 { buffer.len() } else { stride };
    buffer.chunks(stride.max(1))
}

/// Sends `bytes`, datagrams of `segment` bytes each, as one GSO transmit (or one
/// datagram); returns how many datagrams the kernel took.
///
/// A full send buffer is waited out; any other failure of a multi-datagram send is
/// retried one datagram at a time (some kernels refuse GSO only when it is used).
fn send_run(
    state: &UdpSocketState,
    socket: &UdpSocket,
    target: SocketAddr,
    bytes: &[u8],
    segment: usize,
) -> u64 {
    let count = bytes.len().div_ceil(segment.max(1));
    let transmit = Transmit {
        destination: target,
        ecn: None,
        contents: bytes,
        segment_size: (count > 1).then_some(segment),
        src_ip: None,
    };
    let started = Instant::now();
    loop {
        match state.try_send(socket.into(), &transmit) {
            Ok(()) => return count as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if started.elapsed() >= SEND_GIVE_UP {
                    return 0;
                }
                std::thread::sleep(SEND_BACKOFF);
            }
            Err(e) if count > 1 => {
                debug!(error = %e, count, "GSO send failed; sending one datagram at a time");
                return bytes
                    .chunks(segment)
                    .map(|one| send_run(state, socket, target, one, segment))
                    .sum();
            }
            Err(e) => {
                debug!(error = %e, "send failed");
                return 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_grants_its_rate_and_says_how_long_to_wait() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1000.0, t0);
        assert_eq!(p.grant(t0 + Duration::from_millis(10), 64), Ok(10));
        let wait = p
            .grant(t0 + Duration::from_millis(10), 64)
            .expect_err("empty");
        assert!(wait <= Duration::from_millis(1), "{wait:?}");
        // A long stall saves up only the bucket's capacity.
        assert_eq!(p.grant(t0 + Duration::from_secs(10), 1000), Ok(64));
    }

    #[test]
    fn a_gro_buffer_splits_at_its_stride() {
        let buf = [0u8; 250];
        let lens: Vec<usize> = gro_segments(&buf, 100).map(<[u8]>::len).collect();
        assert_eq!(lens, vec![100, 100, 50]);
        assert_eq!(gro_segments(&buf, 0).count(), 1);
    }
}
