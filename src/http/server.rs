//! The admin API's accept loop: hyper's HTTP/1 server, one task per connection, with
//! limits so that careless or hostile clients cannot lock operators out.
//!
//! `axum::serve` never closes an idle connection or one that is sending its request
//! slowly, and its graceful shutdown waits for a stalled client for as long as it stalls.
//! Here every connection has a slot in a small shared table (in order of opening: its id,
//! whether a request is in flight, since when it has been idle) and:
//!
//! - its request headers must arrive within [`ServeLimits::header_read_timeout`], and hold
//!   at most [`ServeLimits::max_headers`] headers of [`ServeLimits::max_header_bytes`]
//!   (hyper answers more itself, with a 431 that `parse_errors.rs` makes problem+json, as
//!   its 400 and 414);
//! - a request body that makes no progress for [`ServeLimits::body_read_timeout`] while a
//!   handler reads it is answered `408` (`body.rs`);
//! - a write that makes no progress for [`ServeLimits::write_timeout`] (a client that does
//!   not read) closes the connection (`io.rs`);
//! - with no request in flight for [`ServeLimits::idle_timeout`] it is closed;
//! - after [`ServeLimits::max_requests_per_connection`] requests its last answer says
//!   `connection: close`, and it closes once that is sent;
//! - when hyper closes it after an answer, what the client still sends is read and
//!   discarded for a short while first (a lingering close, `io.rs`), so that a client
//!   still sending a refused body reads the answer rather than a reset;
//! - at most [`ServeLimits::max_connections`] are open: at the cap, the oldest one with no
//!   request in flight (idle, or still sending its headers) is closed to make room, so an
//!   operator's new connection is served; if every one has a request in flight, the new
//!   one is refused (closed at once);
//! - at most [`ServeLimits::max_watchers`] watch streams run at once (fewer than
//!   connections, so watchers cannot take every slot); past that `/v1/watch` is `503
//!   too-many-watchers` with `Retry-After`;
//! - on shutdown, accepting stops, watch streams end, requests in flight may finish, and
//!   after [`ServeLimits::shutdown_deadline`] every connection left is closed.
//!
//! A request is in flight from the moment its headers are read until its response body is
//! dropped (sent whole, or the connection closed). A watch stream is in flight for as long
//! as it runs; it ends on shutdown, or when its client stops reading for the write
//! timeout.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use thiserror::Error;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::body::TimedBody;
use super::io::ConnIo;
use super::parse_errors::HeadLimits;
use super::watch::Streams;

/// The limits of the admin API's server. [`Default`] gives the documented defaults
/// (docs/OPERATIONS.md §2). A duration over a year counts as a year, so
/// `Duration::MAX` means "never" (and adding it to an instant cannot overflow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeLimits {
    /// How long a client has to send a request's headers, from when the server starts
    /// reading them; then the connection is closed. Default 10 s.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed. Default 60 s.
    pub idle_timeout: Duration,
    /// A request body that makes no progress for this long while it is read is answered
    /// `408 request-timeout` (and the connection closed). Default 10 s.
    pub body_read_timeout: Duration,
    /// A connection whose writes make no progress for this long (its client does not
    /// read) is closed. Default 30 s.
    pub write_timeout: Duration,
    /// The most headers a request may have (more is answered 431). Default 100.
    pub max_headers: usize,
    /// The most bytes a request's start line and headers may take (more is answered
    /// 431, or 414 when the request line alone is longer). Default 16 KiB.
    pub max_header_bytes: usize,
    /// The most connections open at once (at least 1). Default 512: well under a
    /// 1,024 file limit, with room for the store, the UDP socket and the logs.
    pub max_connections: usize,
    /// The most watch streams at once (fewer than `max_connections`, so that ordinary
    /// requests always have room); more are answered `503 too-many-watchers`. Default
    /// 256.
    pub max_watchers: usize,
    /// The most requests one connection is served (at least 1); the last answer says
    /// `connection: close`. Default 1,000.
    pub max_requests_per_connection: usize,
    /// How long shutdown lets requests in flight finish before it closes every
    /// connection left. Default 5 s.
    pub shutdown_deadline: Duration,
}

impl Default for ServeLimits {
    fn default() -> ServeLimits {
        ServeLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            max_headers: 100,
            max_header_bytes: 16 * 1024,
            max_connections: 512,
            max_watchers: 256,
            max_requests_per_connection: 1000,
            shutdown_deadline: Duration::from_secs(5),
        }
    }
}

/// The fewest bytes [`ServeLimits::max_header_bytes`] may be.
pub const MIN_HEADER_BYTES: usize = 1024;
/// The most bytes [`ServeLimits::max_header_bytes`] may be (hyper's read buffer holds a
/// head of at most about 400 KiB).
pub const MAX_HEADER_BYTES: usize = 256 * 1024;

/// Why [`ServeLimits`] were refused. Nothing is served.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LimitsError {
    /// A timeout or deadline of zero would close every connection at once.
    #[error("{0} must be longer than zero")]
    ZeroDuration(&'static str),
    /// A count that must be at least 1 is 0.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// Watchers could take every connection and lock operators out.
    #[error(
        "max_watchers ({max_watchers}) must be less than max_connections ({max_connections}), so that ordinary requests always have room"
    )]
    Watchers {
        /// The watcher cap asked for.
        max_watchers: usize,
        /// The connection cap asked for.
        max_connections: usize,
    },
    /// `max_header_bytes` is outside [`MIN_HEADER_BYTES`]..=[`MAX_HEADER_BYTES`].
    #[error("max_header_bytes ({0}) must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES}")]
    HeaderBytes(usize),
}

impl ServeLimits {
    /// Checks that these limits can serve: every duration longer than zero, every count
    /// at least 1, `max_watchers` < `max_connections`, `max_header_bytes` within
    /// [`MIN_HEADER_BYTES`]..=[`MAX_HEADER_BYTES`].
    pub fn validate(&self) -> Result<(), LimitsError> {
        for (name, duration) in [
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("write_timeout", self.write_timeout),
            ("shutdown_deadline", self.shutdown_deadline),
        ] {
            if duration.is_zero() {
                return Err(LimitsError::ZeroDuration(name));
            }
        }
        for (name, count) in [
            ("max_headers", self.max_headers),
            ("max_connections", self.max_connections),
            (
                "max_requests_per_connection",
                self.max_requests_per_connection,
            ),
        ] {
            if count == 0 {
                return Err(LimitsError::Zero(name));
            }
        }
        if self.max_watchers >= self.max_connections {
            return Err(LimitsError::Watchers {
                max_watchers: self.max_watchers,
                max_connections: self.max_connections,
            });
        }
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&self.max_header_bytes) {
            return Err(LimitsError::HeaderBytes(self.max_header_bytes));
        }
        Ok(())
    }
}

/// Serves `router` on `listener` with the default [`ServeLimits`] until `shutdown`
/// completes, then stops accepting, ends open watch streams, and returns once the
/// requests in flight are answered, or the shutdown deadline has passed.
///
/// Generic over axum's [`Listener`](axum::serve::Listener) so that a simulated listener
/// (turmoil) can be served the same way as `tokio::net::TcpListener`.
pub async fn serve<L>(
    listener: L,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: Debug,
{
    serve_with(listener, router, shutdown, ServeLimits::default()).await
}

/// [`serve`], with the limits `limits` (see the module's documentation).
pub async fn serve_with<L>(
    listener: L,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServeLimits,
) -> io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: Debug,
{
    serve_tls(listener, router, shutdown, limits, None).await
}

/// [`serve_with`], over TLS when `tls` is `Some` (https only: a client speaking plain
/// HTTP fails its handshake and is closed).
///
/// The handshake runs on the connection's own task, within the header read timeout, and
/// a connection still in its handshake counts as having no request in flight: a flood of
/// clients that never finish theirs is closed to make room, as slow plain ones are.
pub async fn serve_tls<L>(
    mut listener: L,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServeLimits,
    tls: Option<super::tls::Tls>,
) -> io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: Debug,
{
    let (closing_tx, closing_rx) = watch::channel(false);
    let router = router.layer(axum::Extension(Streams {
        closing: closing_rx.clone(),
        slots: Arc::new(Semaphore::new(
            limits.max_watchers.min(Semaphore::MAX_PERMITS),
        )),
        max: limits.max_watchers,
    }));
    let head_limits = HeadLimits {
        max_headers: limits.max_headers,
        max_header_bytes: limits.max_header_bytes,
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(bounded(limits.header_read_timeout))
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_header_bytes);
    let builder = Arc::new(builder);
    let table = Arc::new(Table::default());
    let cap = limits.max_connections.max(1);
    let mut tasks = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        // Shutdown first, so that a flood of connections cannot delay it; then reap
        // finished connection tasks (their results are nothing), then accept.
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = tasks.join_next() => {}
            (io, peer) = listener.accept() => {
                let Some(slot) = table.admit(cap) else {
                    warn!(?peer, max_connections = cap, "admin connection refused: every connection has a request in flight");
                    drop(io);
                    continue;
                };
                let service = Tracked {
                    inner: TowerToHyperService::new(router.clone()),
                    slot: slot.clone(),
                    body_read_timeout: bounded(limits.body_read_timeout),
                    max_requests: limits.max_requests_per_connection.max(1),
                };
                let write_timeout = bounded(limits.write_timeout);
                let idle_timeout = bounded(limits.idle_timeout);
                let (table, closing) = (table.clone(), closing_rx.clone());
                let Some(tls) = &tls else {
                    let io = ConnIo::new(io, head_limits, write_timeout);
                    let connection = builder.serve_connection(TokioIo::new(io), service);
                    tasks.spawn(run_connection(connection, slot, table, closing, idle_timeout));
                    continue;
                };
                let (acceptor, builder) = (tls.acceptor().clone(), builder.clone());
                let handshake_timeout = bounded(limits.header_read_timeout);
                tasks.spawn(async move {
                    let handshake = tokio::select! {
                        biased;
                        () = slot.evict.notified() => None,
                        handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(io)) => match handshake {
                            Ok(Ok(io)) => Some(io),
                            Ok(Err(e)) => {
                                debug!(id = slot.id, error = %e, "admin TLS handshake failed");
                                None
                            }
                            Err(_) => {
                                debug!(id = slot.id, ?handshake_timeout, "admin TLS handshake timed out");
                                None
                            }
                        },
                    };
                    let Some(io) = handshake else {
                        table.remove(slot.id);
                        return;
                    };
                    let io = ConnIo::new(io, head_limits, write_timeout);
                    let connection = builder.serve_connection(TokioIo::new(io), service);
                    run_connection(connection, slot, table, closing, idle_timeout).await;
                });
            }
        }
    }
    drop(listener);
    // Watch streams never end on their own; this ends them, and tells every connection
    // to close once its request in flight (if any) is answered.
    let _ = closing_tx.send(true);
    let deadline = Instant::now() + bounded(limits.shutdown_deadline);
    let drained = tokio::time::timeout_at(deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            connections = tasks.len(),
            deadline = ?limits.shutdown_deadline,
            "admin connections still open at the shutdown deadline: closed"
        );
        tasks.shutdown().await;
    }
    Ok(())
}

/// `duration`, at most a year.
fn bounded(duration: Duration) -> Duration {
    duration.min(Duration::from_secs(365 * 24 * 3600))
}

/// Drives one connection until it ends, is closed to make room, has been idle too long,
/// or shutdown closes it; then frees its slot.
async fn run_connection<I>(
    connection: http1::Connection<TokioIo<ConnIo<I>>, Tracked>,
    slot: Arc<Slot>,
    table: Arc<Table>,
    mut closing: watch::Receiver<bool>,
    idle_timeout: Duration,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut connection = pin!(connection);
    let mut idle = pin!(idle_for(slot.activity.subscribe(), idle_timeout));
    let mut closing_seen = false;
    loop {
        // The connection first, so one that has just finished ends cleanly; a dropped
        // connection future closes its socket.
        tokio::select! {
            biased;
            result = connection.as_mut() => {
                if let Err(e) = result {
                    debug!(id = slot.id, error = %e, "admin connection ended with an error");
                }
                break;
            }
            () = slot.evict.notified() => {
                debug!(id = slot.id, "admin connection closed to make room for a new one");
                break;
            }
            _ = closing.changed(), if !closing_seen => {
                closing_seen = true;
                if slot.idle() {
                    break;
                }
                // Answers the request in flight, then closes.
                connection.as_mut().graceful_shutdown();
            }
            () = &mut idle => {
                debug!(id = slot.id, ?idle_timeout, "idle admin connection closed");
                break;
            }
        }
    }
    table.remove(slot.id);
}

/// Completes once the connection has had no request in flight for `timeout`.
async fn idle_for(mut activity: watch::Receiver<Activity>, timeout: Duration) {
    loop {
        let now = *activity.borrow_and_update();
        let changed = if now.in_flight == 0 {
            tokio::select! {
                biased;
                changed = activity.changed() => changed,
                () = tokio::time::sleep_until(now.idle_since + timeout) => return,
            }
        } else {
            activity.changed().await
        };
        if changed.is_err() {
            // The slot (which holds the sender) outlives this future; never reached.
            std::future::pending::<()>().await;
        }
    }
}

/// The open connections, by id: ids grow, so the first is the oldest.
#[derive(Debug, Default)]
struct Table {
    slots: Mutex<(u64, BTreeMap<u64, Arc<Slot>>)>,
}

impl Table {
    /// A slot for a new connection, making room if the table holds `cap` already by
    /// closing the oldest connection with no request in flight; `None` if every one has
    /// a request in flight.
    fn admit(&self, cap: usize) -> Option<Arc<Slot>> {
        let mut guard = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let (next, slots) = &mut *guard;
        while slots.len() >= cap {
            let oldest_idle = slots.values().find(|s| s.idle()).map(|s| s.id)?;
            if let Some(slot) = slots.remove(&oldest_idle) {
                // A permit is stored if its task is not waiting right now.
                slot.evict.notify_one();
            }
        }
        let slot = Arc::new(Slot {
            id: *next,
            activity: watch::Sender::new(Activity {
                in_flight: 0,
                idle_since: Instant::now(),
            }),
            evict: Notify::new(),
            requests: AtomicUsize::new(0),
        });
        *next += 1;
        slots.insert(slot.id, slot.clone());
        Some(slot)
    }

    /// Frees the slot `id` (nothing if it was freed already, to make room).
    fn remove(&self, id: u64) {
        let mut guard = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        guard.1.remove(&id);
    }
}

/// One open connection.
#[derive(Debug)]
struct Slot {
    /// In order of opening.
    id: u64,
    activity: watch::Sender<Activity>,
    /// Closes the connection at once.
    evict: Notify,
    /// Requests received so far.
    requests: AtomicUsize,
}

impl Slot {
    /// Whether the connection has no request in flight (it may be sending headers).
    fn idle(&self) -> bool {
        self.activity.borrow().in_flight == 0
    }
}

/// Whether a connection has requests in flight, and since when it has none.
#[derive(Debug, Clone, Copy)]
struct Activity {
    in_flight: usize,
    idle_since: Instant,
}

/// A request in flight on a connection, until dropped.
#[derive(Debug)]
struct Busy(Arc<Slot>);

impl Busy {
    fn start(slot: Arc<Slot>) -> Busy {
        slot.activity.send_modify(|a| a.in_flight += 1);
        Busy(slot)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.activity.send_modify(|a| {
            a.in_flight = a.in_flight.saturating_sub(1);
            if a.in_flight == 0 {
                a.idle_since = Instant::now();
            }
        });
    }
}

/// The router, as a hyper service that marks each request in flight on its connection,
/// times its body's reads, and ends the connection after its last request.
#[derive(Debug, Clone)]
struct Tracked {
    inner: TowerToHyperService<Router>,
    slot: Arc<Slot>,
    body_read_timeout: Duration,
    /// Requests served on one connection.
    max_requests: usize,
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let busy = Busy::start(self.slot.clone());
        let last = self.slot.requests.fetch_add(1, Ordering::Relaxed) + 1 >= self.max_requests;
        let timeout = self.body_read_timeout;
        let answer = self
            .inner
            .call(request.map(|body| TimedBody::new(body, timeout)));
        Box::pin(async move {
            let mut response = answer.await?;
            if last {
                // hyper closes the connection once an answer saying so is sent.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response.map(|body| TrackedBody { body, _busy: busy }))
        })
    }
}

/// A response body that keeps its request in flight until it is dropped.
#[derive(Debug)]
struct TrackedBody {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
