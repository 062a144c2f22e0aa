//! `/v1/watch`: the keeper's events as a server-sent event stream.
//!
//! A watcher first gets the held events after the id it names (`Last-Event-ID`, or
//! `?after=N`), then live ones, each once and in id order: [`EventHub::subscribe`] hands
//! out the backlog and the live receiver under one lock. A watcher too slow for the
//! broadcast channel is cut off rather than silently skipped past events; it reconnects
//! with the last id it saw and gets the rest from the backlog.
//!
//! [`EventHub::subscribe`]: crate::driver::keeper::EventHub::subscribe

use std::collections::VecDeque;
use std::time::Duration;

use axum::extract::{Extension, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use tokio::sync::{broadcast, watch};
use tracing::debug;

use crate::driver::keeper::WatchEvent;
use crate::http::Api;
use crate::http::problem::Problem;
use crate::identity::validate_cluster;

/// How often an idle stream sends a comment, so proxies and clients keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Set by [`serve`](crate::http::serve) when the server shuts down: open streams end, so
/// graceful shutdown does not wait for watchers that never leave.
#[derive(Clone, Debug)]
pub(crate) struct Closing(pub(crate) watch::Receiver<bool>);

/// The query of `/v1/watch`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct WatchQuery {
    /// Only events of this cluster.
    cluster: Option<String>,
    /// Replay held events after this id (the `Last-Event-ID` header wins).
    after: Option<String>,
}

/// `GET /v1/watch[?cluster=C][&after=N]`.
pub(crate) async fn watch(
    State(api): State<Api>,
    query: Result<Query<WatchQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    closing: Option<Extension<Closing>>,
) -> Result<Sse<impl Stream<Item = Result<Event, axum::Error>>>, Problem> {
    let Query(query) = query.map_err(|e| Problem::malformed(e.body_text()))?;
    if let Some(cluster) = &query.cluster {
        validate_cluster(cluster)
            .map_err(|e| Problem::invalid_name(format!("invalid name: {e}")))?;
    }
    let after = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    Problem::malformed("Last-Event-ID must be an event id (a number)")
                })?,
        ),
        None => match &query.after {
            Some(after) => Some(
                after
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| Problem::malformed("after must be an event id (a number)"))?,
            ),
            None => None,
        },
    };
    let (backlog, live) = api.handle.events().subscribe(after);
    debug!(cluster = ?query.cluster, ?after, backlog = backlog.len(), "watcher connected");
    let watcher = Watcher {
        backlog: backlog.into(),
        live,
        cluster: query.cluster,
        last: after.unwrap_or(0),
        closing: closing.map(|Extension(Closing(rx))| rx),
    };
    Ok(Sse::new(stream::unfold(watcher, Watcher::next))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// One watcher's position in the event stream.
#[derive(Debug)]
struct Watcher {
    /// Held events not yet sent.
    backlog: VecDeque<WatchEvent>,
    /// Events to come.
    live: broadcast::Receiver<WatchEvent>,
    /// Only events of this cluster.
    cluster: Option<String>,
    /// The id of the last event passed on (or skipped by the filter).
    last: u64,
    /// Ends the stream when the server shuts down.
    closing: Option<watch::Receiver<bool>>,
}

impl Watcher {
    /// The next event for this watcher, or `None` to end the stream.
    async fn next(mut self) -> Option<(Result<Event, axum::Error>, Watcher)> {
        loop {
            let event = match self.backlog.pop_front() {
                Some(event) => event,
                None => {
                    // `biased`: shutdown first, so a busy stream still ends promptly.
                    tokio::select! {
                        biased;
                        () = closed(self.closing.as_mut()) => {
                            debug!(last = self.last, "watcher cut off: server shutting down");
                            return None;
                        }
                        received = self.live.recv() => match received {
                            Ok(event) => event,
                            Err(broadcast::error::RecvError::Lagged(missed)) => {
                                debug!(last = self.last, missed, "watcher lagged: ending its stream");
                                return None;
                            }
                            Err(broadcast::error::RecvError::Closed) => return None,
                        },
                    }
                }
            };
            // Ids only grow; an event at or before the position was already handled.
            if event.id <= self.last {
                continue;
            }
            self.last = event.id;
            if self.cluster.as_ref().is_some_and(|c| *c != event.cluster) {
                continue;
            }
            return Some((sse_event(&event), self));
        }
    }
}

/// `id: N`, `event: KIND`, `data: JSON` (one line).
fn sse_event(event: &WatchEvent) -> Result<Event, axum::Error> {
    Event::default()
        .id(event.id.to_string())
        .event(event.kind)
        .json_data(event)
}

/// Completes when the server starts shutting down; never without a signal.
async fn closed(closing: Option<&mut watch::Receiver<bool>>) {
    match closing {
        // An error means the server is gone: as good as shutting down.
        Some(rx) => {
            let _ = rx.wait_for(|&closing| closing).await;
        }
        None => std::future::pending().await,
    }
}
