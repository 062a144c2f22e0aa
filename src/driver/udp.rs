//! The keeper's production socket: tokio's UDP socket with batched, offloaded receive.
//!
//! On Linux, quinn-udp receives up to 32 buffers per system call (`recvmmsg`), and the
//! kernel may coalesce runs of equal-sized datagrams from one source into one buffer
//! (GRO); each comes back with its segment size, so every datagram is seen on its own,
//! an oversized one included. The receive buffer is enlarged so bursts are not dropped
//! before the keeper reads them (the kernel caps it at `net.core.rmem_max`).

use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{RecvMeta, UdpSocketState};
use tokio::io::Interest;
use tracing::debug;

use crate::driver::{BATCH_SLOTS, DatagramSocket, RecvBatch};

/// The receive buffer the keeper asks for.
const RECV_BUFFER: usize = 16 << 20;

/// A UDP socket for the keeper.
#[derive(Debug)]
pub struct Udp {
    socket: tokio::net::UdpSocket,
    state: UdpSocketState,
}

impl Udp {
    /// Binds `addr`, asks for a large receive buffer, and turns on batched receive.
    pub async fn bind(addr: SocketAddr) -> io::Result<Udp> {
        let socket = tokio::net::UdpSocket::bind(addr).await?;
        let state = UdpSocketState::new((&socket).into())?;
        if let Err(e) = state.set_recv_buffer_size((&socket).into(), RECV_BUFFER) {
            debug!(error = %e, "could not enlarge the UDP receive buffer");
        }
        let granted = state.recv_buffer_size((&socket).into()).unwrap_or(0);
        debug!(
            granted,
            asked = RECV_BUFFER,
            gro = state.gro_segments(),
            "udp receive buffer"
        );
        Ok(Udp { socket, state })
    }

    /// The receive buffer the kernel granted, in bytes.
    pub fn recv_buffer_size(&self) -> usize {
        self.state
            .recv_buffer_size((&self.socket).into())
            .unwrap_or(0)
    }

    fn recv_into(&self, batch: &mut RecvBatch) -> io::Result<()> {
        batch.clear();
        let mut metas = [RecvMeta::default(); BATCH_SLOTS];
        let received = {
            let mut slots = batch.slots_mut();
            // The batch holds exactly BATCH_SLOTS slots.
            let mut bufs: [IoSliceMut<'_>; BATCH_SLOTS] = std::array::from_fn(|_| {
                IoSliceMut::new(slots.next().expect("a batch has BATCH_SLOTS slots"))
            });
            self.socket.try_io(Interest::READABLE, || {
                self.state
                    .recv((&self.socket).into(), &mut bufs, &mut metas)
            })?
        };
        for meta in &metas[..received] {
            batch.push(meta.addr, meta.len, meta.stride);
        }
        Ok(())
    }
}

impl DatagramSocket for Udp {
    fn send_to(
        &self,
        buf: &[u8],
        target: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        self.socket.send_to(buf, target)
    }

    /// One datagram; with GRO on, through the batch path so a coalesced buffer is split.
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let mut batch = RecvBatch::new();
        self.recv_batch(&mut batch).await?;
        let (from, datagram) = batch.iter().next().ok_or(io::ErrorKind::WouldBlock)?;
        let len = datagram.len().min(buf.len());
        buf[..len].copy_from_slice(&datagram[..len]);
        Ok((datagram.len(), from))
    }

    async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<()> {
        loop {
            self.socket.readable().await?;
            match self.recv_into(batch) {
                Ok(()) if !batch.is_empty() => return Ok(()),
                Ok(()) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn try_recv_batch(&self, batch: &mut RecvBatch) -> io::Result<()> {
        self.recv_into(batch)?;
        if batch.is_empty() {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}
