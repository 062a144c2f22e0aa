//! Drivers: tokio tasks that own a UDP socket and a timer and pump datagrams and
//! deadlines into a core.
//!
//! They are written once, against [`DatagramSocket`], so the same code runs on
//! `tokio::net::UdpSocket` in production and on turmoil's simulated socket (wrapped in
//! the simulation's own type) in tests. Shutdown is injected as a future, as in
//! mini-redis, so a test or a simulation can stop a driver at any moment.
//!
//! Time: a driver reads `tokio::time::Instant` (turmoil's virtual time inside a
//! simulation) and converts it to the core's [`Instant`] with a [`DriverClock`]; raw
//! tokio instants never reach a core, a log or a hash.

pub mod keeper;
pub mod logs;
pub mod proxy;
pub mod resolve;
pub mod udp;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::time::Instant;

/// The few socket operations a driver needs.
///
/// Implemented here for `tokio::net::UdpSocket`; simulations implement it for a wrapper
/// around turmoil's socket (and for lossy wrappers of their own).
pub trait DatagramSocket: Send + Sync + 'static {
    /// Sends one datagram to `target`.
    fn send_to(
        &self,
        buf: &[u8],
        target: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send;

    /// Receives one datagram. Must be cancel-safe: dropping the future loses nothing.
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;

    /// Receives one datagram if one is queued, without waiting (`WouldBlock` otherwise).
    /// Lets a driver drain a burst before it flushes its answers; the default never has one.
    fn try_recv_from(&self, _buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// Waits for datagrams and receives as many as one call can (at least one) into
    /// `batch`. Must be cancel-safe. The default receives one with `recv_from`, then what
    /// `try_recv_from` has queued.
    fn recv_batch(&self, batch: &mut RecvBatch) -> impl Future<Output = io::Result<()>> + Send
    where
        Self: Sized,
    {
        async move {
            batch.clear();
            let (len, from) = self.recv_from(batch.slot_mut(0)).await?;
            batch.push(from, len, len);
            while batch.len() < BATCH_SLOTS {
                let slot = batch.len();
                match self.try_recv_from(batch.slot_mut(slot)) {
                    Ok((len, from)) => batch.push(from, len, len),
                    Err(_) => break,
                }
            }
            Ok(())
        }
    }

    /// Receives what is queued into `batch` without waiting (`WouldBlock` if nothing).
    /// The default uses `try_recv_from`.
    fn try_recv_batch(&self, batch: &mut RecvBatch) -> io::Result<()> {
        batch.clear();
        while batch.len() < BATCH_SLOTS {
            let slot = batch.len();
            match self.try_recv_from(batch.slot_mut(slot)) {
                Ok((len, from)) => batch.push(from, len, len),
                Err(e) if batch.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// The address the socket is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A shared socket: a standby keeper drains it until it is elected, then hands the same
/// socket to its driver.
impl<T: DatagramSocket> DatagramSocket for std::sync::Arc<T> {
    fn send_to(
        &self,
        buf: &[u8],
        target: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        (**self).send_to(buf, target)
    }

    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        (**self).recv_from(buf)
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        (**self).try_recv_from(buf)
    }

    fn recv_batch(&self, batch: &mut RecvBatch) -> impl Future<Output = io::Result<()>> + Send {
        (**self).recv_batch(batch)
    }

    fn try_recv_batch(&self, batch: &mut RecvBatch) -> io::Result<()> {
        (**self).try_recv_batch(batch)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        (**self).local_addr()
    }
}

impl DatagramSocket for tokio::net::UdpSocket {
    fn send_to(
        &self,
        buf: &[u8],
        target: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        tokio::net::UdpSocket::send_to(self, buf, target)
    }

    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        tokio::net::UdpSocket::recv_from(self, buf)
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        tokio::net::UdpSocket::try_recv_from(self, buf)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::UdpSocket::local_addr(self)
    }
}

/// Buffers a batch of datagrams lands in.
pub const BATCH_SLOTS: usize = 32;
/// One buffer: room for the largest UDP datagram, or for a batch the kernel coalesced
/// (GRO: up to 64 equal-sized datagrams in one buffer).
const SLOT: usize = 1 << 16;

/// Datagrams received together, possibly coalesced by the kernel.
#[derive(Debug)]
pub struct RecvBatch {
    data: Vec<u8>,
    /// (source, bytes in the slot, size of each datagram in it).
    filled: Vec<(SocketAddr, usize, usize)>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            data: vec![0; BATCH_SLOTS * SLOT],
            filled: Vec::with_capacity(BATCH_SLOTS),
        }
    }
}

impl RecvBatch {
    /// An empty batch (2 MiB of buffers, allocated once).
    pub fn new() -> RecvBatch {
        RecvBatch::default()
    }

    /// Forgets what was received.
    pub fn clear(&mut self) {
        self.filled.clear();
    }

    /// Slots filled so far.
    pub fn len(&self) -> usize {
        self.filled.len()
    }

    /// Whether nothing was received.
    pub fn is_empty(&self) -> bool {
        self.filled.is_empty()
    }

    /// The buffer of slot `i` (for socket implementations).
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.data[i * SLOT..(i + 1) * SLOT]
    }

    /// Every slot's buffer (for socket implementations that fill several at once).
    pub fn slots_mut(&mut self) -> std::slice::ChunksExactMut<'_, u8> {
        self.data.chunks_exact_mut(SLOT)
    }

    /// Records that the next slot holds `len` bytes from `from`, in datagrams of
    /// `stride` bytes each (the last may be shorter; `stride == len` for one).
    pub fn push(&mut self, from: SocketAddr, len: usize, stride: usize) {
        self.filled.push((from, len.min(SLOT), stride.max(1)));
    }

    /// Every datagram received, in order, with its source.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.filled
            .iter()
            .enumerate()
            .flat_map(move |(i, &(from, len, stride))| {
                let slot = &self.data[i * SLOT..i * SLOT + len];
                slot.chunks(stride).map(move |d| (from, d))
            })
    }
}

/// Converts between the driver's clock and the core's time.
///
/// The core's [`Instant`] is the time since the driver started; wall-clock moments (for
/// "since when" in listings) are the driver's start on the wall clock plus that.
#[derive(Clone, Copy, Debug)]
pub struct DriverClock {
    start: tokio::time::Instant,
    start_wall: SystemTime,
}

impl DriverClock {
    /// A clock that starts now.
    pub fn start() -> DriverClock {
        DriverClock {
            start: tokio::time::Instant::now(),
            start_wall: SystemTime::now(),
        }
    }

    /// A clock that starts now, with the wall clock at `start_wall` (simulations pass
    /// their own epoch so runs are reproducible).
    pub fn start_at(start_wall: SystemTime) -> DriverClock {
        DriverClock {
            start: tokio::time::Instant::now(),
            start_wall,
        }
    }

    /// The core's `now`.
    pub fn now(&self) -> Instant {
        self.instant(tokio::time::Instant::now())
    }

    /// The core's `Instant` for a tokio instant.
    pub fn instant(&self, t: tokio::time::Instant) -> Instant {
        let nanos = t.saturating_duration_since(self.start).as_nanos();
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The tokio instant of a core deadline.
    pub fn deadline(&self, at: Instant) -> tokio::time::Instant {
        // A deadline too far to represent is as good as never.
        self.start
            .checked_add(at.since_start())
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400 * 365))
    }

    /// The wall-clock moment of a core instant.
    pub fn wall(&self, at: Instant) -> SystemTime {
        self.start_wall + at.since_start()
    }
}

/// Microseconds since the Unix epoch of a wall-clock moment (0 before the epoch).
pub fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
