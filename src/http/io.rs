//! The IO of one admin connection, between its socket and hyper.
//!
//! [`ConnIo`] passes bytes through, and adds what hyper does not do itself:
//!
//! - **A write timeout.** A write that cannot proceed (the client does not read, its
//!   socket buffers and ours are full) arms a timer; progress disarms it. After
//!   [`ServeLimits::write_timeout`](super::ServeLimits::write_timeout) without progress
//!   the write fails with `TimedOut` and hyper drops the connection, freeing its slot. A
//!   watch stream whose client stopped reading ends that way: nothing more can reach
//!   such a client, so the close is the signal (it resumes from the last event id it
//!   read).
//! - **Problems for hyper's own answers.** hyper answers a request head it cannot parse
//!   by itself with a bare 400, 414 or 431; such a write is replaced by the problem+json
//!   answer of [`parse_errors`](super::parse_errors). The substitute is kept here until it
//!   is written whole, and hyper is told its own head was written as soon as the
//!   substitute is buffered, so partial writes of either never mix.
//! - **A lingering close.** When hyper closes a connection after an answer (a request
//!   body it did not read, such as one over the limit, or a head it could not parse),
//!   unread bytes from the client would make the kernel reset the connection, and the
//!   client would lose the answer with it. So the shutdown sends FIN, then reads and
//!   discards what the client still sends, until it closes, for at most [`LINGER_TIME`]
//!   and [`LINGER_BYTES`], before the socket is closed (as nginx's `lingering_close`).

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::parse_errors::{self, HeadLimits};

/// The longest a closing connection reads and discards what its client still sends.
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(2);
/// The most bytes a closing connection reads and discards.
pub(crate) const LINGER_BYTES: usize = 8 * 1024 * 1024;

/// One connection's IO (see the module's documentation).
#[derive(Debug)]
pub(crate) struct ConnIo<I> {
    inner: I,
    /// What problems for hyper's own answers say about the limits.
    limits: HeadLimits,
    /// Whether a line end was read since the server last wrote (the request line of the
    /// request being read is complete).
    line_read: bool,
    /// A substitute answer, and how much of it is written.
    pending: Vec<u8>,
    written: usize,
    write_timeout: Duration,
    /// Fires `write_timeout` after a write could not proceed (made on the first stall).
    stall: Option<Pin<Box<Sleep>>>,
    /// A write could not proceed and none has since.
    stalling: bool,
    linger: Linger,
}

/// Where the close of the connection stands.
#[derive(Debug)]
enum Linger {
    /// Not shut down.
    Open,
    /// FIN sent; discarding what the client sends, until `until` or `left` more bytes.
    Draining { until: Pin<Box<Sleep>>, left: usize },
    /// Shut down.
    Done,
}

impl<I> ConnIo<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    /// `inner`, whose writes fail after `write_timeout` without progress.
    pub(crate) fn new(inner: I, limits: HeadLimits, write_timeout: Duration) -> ConnIo<I> {
        ConnIo {
            inner,
            limits,
            line_read: false,
            pending: Vec::new(),
            written: 0,
            write_timeout,
            stall: None,
            stalling: false,
            linger: Linger::Open,
        }
    }

    /// What a write or flush of the socket gave: the stall timer is armed while it cannot
    /// proceed and fails it at the timeout, and disarmed by progress.
    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.stalled(cx).map(Err),
            Poll::Ready(done) => {
                self.stalling = false;
                Poll::Ready(done)
            }
        }
    }

    /// A write cannot proceed: `Ready` with the error once it has not for the timeout.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.write_timeout;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if !self.stalling {
            self.stalling = true;
            stall.as_mut().reset(Instant::now() + timeout);
        }
        ready!(stall.as_mut().poll(cx));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no write progress for {timeout:?}: the client does not read"),
        ))
    }

    /// Writes what is left of a substitute answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let result = Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]);
            match ready!(self.progress(cx, result))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => self.written += n,
            }
        }
        if !self.pending.is_empty() {
            self.pending = Vec::new();
            self.written = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// If `written` is one of hyper's own bare answers, takes its substitute instead.
    fn substituted(&mut self, cx: &mut Context<'_>, written: &[u8]) -> Option<io::Result<usize>> {
        let answer = parse_errors::substitute(written, self.line_read, self.limits)?;
        self.pending = answer;
        self.written = 0;
        // Buffered here, so hyper's head counts as written; what the socket does not take
        // now is written on the next write, flush or shutdown.
        if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
            return Some(Err(e));
        }
        Some(Ok(written.len()))
    }

    /// Counts a write: a line end read before it belonged to the request answered.
    fn wrote(&mut self, result: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = result
            && *n > 0
        {
            self.line_read = false;
        }
    }
}

impl<I> AsyncRead for ConnIo<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if !this.line_read && buf.filled()[before..].contains(&b'\n') {
            this.line_read = true;
        }
        result
    }
}

impl<I> AsyncWrite for ConnIo<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(result) = this.substituted(cx, buf) {
            return Poll::Ready(result);
        }
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(&result);
        this.progress(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        // hyper writes a head of its own alone, as one buffer.
        let mut written = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (written.next(), written.next())
            && let Some(result) = this.substituted(cx, only)
        {
            return Poll::Ready(result);
        }
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(&result);
        this.progress(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        loop {
            match &mut this.linger {
                Linger::Open => {
                    ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
                    this.linger = Linger::Draining {
                        until: Box::pin(tokio::time::sleep(LINGER_TIME)),
                        left: LINGER_BYTES,
                    };
                }
                Linger::Draining { until, left } => {
                    if until.as_mut().poll(cx).is_ready() {
                        this.linger = Linger::Done;
                        continue;
                    }
                    let mut scratch = [0u8; 8192];
                    let mut discard = ReadBuf::new(&mut scratch);
                    match ready!(Pin::new(&mut this.inner).poll_read(cx, &mut discard)) {
                        Ok(()) if !discard.filled().is_empty() => {
                            *left = left.saturating_sub(discard.filled().len());
                            if *left == 0 {
                                this.linger = Linger::Done;
                            }
                        }
                        // Closed by the client (or reset): nothing more to wait for.
                        Ok(()) | Err(_) => this.linger = Linger::Done,
                    }
                }
                Linger::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_headers: 100,
        max_header_bytes: 16384,
    };
    const BARE_400: &[u8] =
        b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

    #[tokio::test(start_paused = true)]
    async fn a_bare_answer_is_replaced_whole_even_through_a_socket_that_takes_a_few_bytes_at_a_time()
     {
        // A pipe of 7 bytes: every write of the substitute is partial.
        let (server, mut client) = duplex(7);
        let reader = tokio::spawn(async move {
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.map(|_| answer)
        });
        let mut io = ConnIo::new(server, LIMITS, Duration::from_secs(10));
        let n = io.write(BARE_400).await.expect("written");
        assert_eq!(n, BARE_400.len(), "hyper's head counts as written whole");
        io.shutdown().await.expect("shut down");
        drop(io);
        let answer = reader.await.expect("joined").expect("read");
        let text = String::from_utf8(answer).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(
            text.contains("content-type: application/problem+json"),
            "{text}"
        );
        let body = text.split_once("\r\n\r\n").expect("a head").1;
        let problem: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(problem["type"], "urn:zerokeeper:problem:malformed-request");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_makes_no_progress_fails_after_the_write_timeout() {
        let (server, _client) = duplex(16);
        let mut io = ConnIo::new(server, LIMITS, Duration::from_secs(30));
        let started = Instant::now();
        let e = io
            .write_all(&[b'x'; 64])
            .await
            .expect_err("the client never reads");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_restarts_the_write_timeout() {
        let (server, mut client) = duplex(16);
        let mut io = ConnIo::new(server, LIMITS, Duration::from_secs(30));
        let reader = tokio::spawn(async move {
            let mut buffer = [0u8; 16];
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                let _ = client.read(&mut buffer).await;
            }
            client
        });
        // 64 bytes through a pipe of 16, read 16 at a time every 20 s: 60 s in all, never
        // 30 s without progress.
        io.write_all(&[b'x'; 64]).await.expect("written");
        drop(reader);
    }

    #[tokio::test(start_paused = true)]
    async fn the_shutdown_discards_what_the_client_still_sends_until_it_closes() {
        let (server, mut client) = duplex(1024);
        let mut io = ConnIo::new(server, LIMITS, Duration::from_secs(30));
        let sender = tokio::spawn(async move {
            // More than the pipe holds: only a server that reads lets this finish.
            client.write_all(&[b'y'; 64 * 1024]).await?;
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await?;
            Ok::<_, io::Error>(rest)
        });
        io.shutdown().await.expect("shut down");
        let rest = sender.await.expect("joined").expect("the client was read");
        assert!(rest.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_lingering_close_ends_after_its_time_if_the_client_never_closes() {
        let (server, _client) = duplex(1024);
        let mut io = ConnIo::new(server, LIMITS, Duration::from_secs(30));
        let started = Instant::now();
        io.shutdown().await.expect("shut down");
        assert_eq!(started.elapsed(), LINGER_TIME);
    }
}
