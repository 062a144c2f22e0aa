//! `/v1/watch`: the committed changes as a server-sent event stream, read from the
//! shared [`ChangeHub`](crate::hub::ChangeHub).
//!
//! Each event is one change: `id: GENERATION-REVISION`, `event: KIND` (the change kind's
//! name), `data:` the [`WatchEvent`] JSON. A watcher names where it stands with
//! `Last-Event-ID: G-R` (what an SSE client sends when it reconnects) or `?after=G-R`
//! (or `?after=R` within the current generation; the header wins) and gets exactly the
//! changes after it, then live ones, each once and in order, across keeper restarts (the
//! hub is seeded from the store). Without a position it gets only changes to come.
//!
//! A position the hub cannot continue from (older than what it holds, newer than the
//! current revision, or of another generation) is `410 Gone` naming `oldest`, `current`
//! and `generation`; a watcher that falls that far behind while streaming gets a last
//! `event: gone` with the same members and the stream ends. Either way: list again, then
//! watch from the listing's revision. Nothing is ever skipped silently.
//!
//! Each stream holds at most one page of the hub's changes ([`PAGE`] `Arc`s) and is
//! polled only as fast as its client reads: no queue per client grows without bound.
//! What it has sent and the client has not read waits in hyper's write queue (at most 16
//! events) and the sockets' buffers; a client that stops reading for the server's write
//! timeout is disconnected (`io.rs`). Nothing more can reach it, so that close is its
//! last signal; it resumes from the last event id it read, like any reconnecting client.
//!
//! At most [`ServeLimits::max_watchers`](crate::http::ServeLimits::max_watchers) streams
//! run at once; past that a watch is `503 too-many-watchers` with `Retry-After`, so that
//! watchers cannot take every connection of the server.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::debug;

use crate::api::{EventId, Gone, WatchEvent};
use crate::http::Api;
use crate::http::problem::Problem;
use crate::hub::ChangeHub;
use crate::identity::validate_cluster;
use crate::keeper::change::WallChange;

/// How often an idle stream sends a comment, so proxies and clients keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Changes a stream takes from the hub at a time.
pub(crate) const PAGE: usize = 256;

/// How long a watcher refused for [`Streams::max`] is asked to wait (`Retry-After`).
const RETRY_AFTER_SECONDS: u32 = 5;

/// What [`serve`](crate::http::serve) tells watch streams (an extension of every
/// request): when the server shuts down, so that open streams end and graceful shutdown
/// does not wait for watchers that never leave; and how many may run at once.
#[derive(Clone, Debug)]
pub(crate) struct Streams {
    /// Set when the server shuts down.
    pub(crate) closing: watch::Receiver<bool>,
    /// One permit per stream that may run.
    pub(crate) slots: Arc<Semaphore>,
    /// The number of permits.
    pub(crate) max: usize,
}

/// The query of `/v1/watch`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct WatchQuery {
    /// Only changes of this cluster (and the keeper-wide ones).
    cluster: Option<String>,
    /// Resume after this position (the `Last-Event-ID` header wins).
    after: Option<String>,
}

/// A position as a client writes it: `G-R`, or `R` in the current generation.
fn position(text: &str) -> Option<(Option<u64>, u64)> {
    let text = text.trim();
    if let Ok(id) = text.parse::<EventId>() {
        return Some((Some(id.generation), id.revision));
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().map(|r| (None, r))
}

/// `GET /v1/watch[?cluster=C][&after=G-R]`.
pub(crate) async fn watch(
    State(api): State<Api>,
    query: Result<Query<WatchQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    streams: Option<Extension<Streams>>,
) -> Result<Sse<impl Stream<Item = Result<Event, axum::Error>>>, Problem> {
    let Query(query) = query.map_err(|e| Problem::invalid_parameter(e.body_text()))?;
    if let Some(cluster) = &query.cluster {
        validate_cluster(cluster)
            .map_err(|e| Problem::invalid_name(format!("invalid name: {e}")))?;
    }
    // An empty Last-Event-ID is what a client sends after an event that reset its id.
    let header = headers
        .get("last-event-id")
        .map(|v| v.to_str().map(str::trim).ok())
        .filter(|v| *v != Some(""));
    let after = match (header, &query.after) {
        (Some(value), _) => Some(value.and_then(position).ok_or_else(|| {
            Problem::invalid_parameter("Last-Event-ID must be an event id (GENERATION-REVISION)")
        })?),
        (None, Some(after)) => Some(position(after).ok_or_else(|| {
            Problem::invalid_parameter(
                "after must be an event id (GENERATION-REVISION) or a revision",
            )
        })?),
        (None, None) => None,
    };
    let hub = api.hub.clone();
    if hub.is_closed() {
        return Err(crate::driver::keeper::Stopped.into());
    }
    let (current_generation, current) = hub.position();
    let (generation, last) = match after {
        None => (current_generation, current),
        Some((generation, revision)) => {
            let generation = generation.unwrap_or(current_generation);
            hub.check(generation, revision).map_err(Problem::gone)?;
            (generation, revision)
        }
    };
    // Last, so that a refused watch takes no slot.
    let (closing, permit) = match streams {
        Some(Extension(streams)) => {
            let permit = streams.slots.clone().try_acquire_owned().map_err(|_| {
                debug!(
                    max_watchers = streams.max,
                    "watcher refused: every slot is taken"
                );
                Problem::too_many_watchers(streams.max, RETRY_AFTER_SECONDS)
            })?;
            (Some(streams.closing), Some(permit))
        }
        None => (None, None),
    };
    let cluster = query.cluster.as_deref().unwrap_or("-");
    debug!(cluster, generation, last, "watcher connected");
    let watcher = Watcher {
        hub,
        generation,
        last,
        page: VecDeque::new(),
        cluster: query.cluster,
        closing,
        done: false,
        _permit: permit,
    };
    Ok(Sse::new(stream::unfold(watcher, |mut w| async move {
        let item = w.next().await?;
        Some((sse_event(w.generation, item), w))
    }))
    .keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// What a watcher sends next.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    /// A change.
    Change(Arc<WallChange>),
    /// The watcher fell out of the history: the last event.
    Gone(Gone),
}

/// One watcher's position in the change stream.
#[derive(Debug)]
pub(crate) struct Watcher {
    hub: Arc<ChangeHub>,
    /// The generation it follows.
    generation: u64,
    /// The revision of the last change passed on (or skipped by the filter).
    last: u64,
    /// The changes taken from the hub, not yet sent.
    page: VecDeque<Arc<WallChange>>,
    /// Only changes of this cluster, and the keeper-wide ones.
    cluster: Option<String>,
    /// Ends the stream when the server shuts down.
    closing: Option<watch::Receiver<bool>>,
    /// `gone` was sent.
    done: bool,
    /// The stream's slot among [`Streams::max`], freed with the stream.
    _permit: Option<OwnedSemaphorePermit>,
}

impl Watcher {
    /// The next item for this watcher, or `None` to end the stream.
    pub(crate) async fn next(&mut self) -> Option<Item> {
        loop {
            if self.done {
                return None;
            }
            if let Some(change) = self.page.pop_front() {
                self.last = change.revision;
                let wanted = match (&self.cluster, change.kind.cluster()) {
                    (Some(want), Some(cluster)) => want == cluster,
                    _ => true,
                };
                if wanted {
                    return Some(Item::Change(change));
                }
                continue;
            }
            match self.hub.read_after(self.generation, self.last, PAGE) {
                Ok(page) if !page.is_empty() => {
                    self.page = page.into();
                    continue;
                }
                Ok(_) if self.hub.is_closed() => return None,
                Ok(_) => {}
                Err(gone) => {
                    debug!(
                        last = self.last,
                        oldest = gone.oldest,
                        "watcher fell out of the history"
                    );
                    self.done = true;
                    return Some(Item::Gone(gone));
                }
            }
            // `biased`: shutdown first, so a busy stream still ends promptly.
            tokio::select! {
                biased;
                () = closed(self.closing.as_mut()) => {
                    debug!(last = self.last, "watcher cut off: server shutting down");
                    return None;
                }
                () = self.hub.wait_after(self.generation, self.last) => {}
            }
        }
    }
}

/// `id: G-R`, `event: KIND`, `data: JSON` (one line) for a change; `event: gone` with
/// the problem document (and no id: the last id stays that of the last change) for the
/// end.
fn sse_event(generation: u64, item: Item) -> Result<Event, axum::Error> {
    match item {
        Item::Change(change) => {
            let event = WatchEvent::of(generation, &change);
            Event::default()
                .id(event.id().to_string())
                .event(change.kind.name())
                .json_data(&event)
        }
        Item::Gone(gone) => Event::default()
            .event("gone")
            .json_data(Problem::gone(gone).body()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keeper::change::{Change, ChangeKind};

    fn deletion(revision: u64, cluster: &str) -> WallChange {
        Change {
            revision,
            at: 0,
            kind: ChangeKind::DeletionPaused {
                cluster: Arc::from(cluster),
                paused: true,
                lost: 1,
                total: 2,
            },
        }
    }

    fn watcher(hub: &Arc<ChangeHub>, last: u64, cluster: Option<&str>) -> Watcher {
        Watcher {
            hub: hub.clone(),
            generation: 1,
            last,
            page: VecDeque::new(),
            cluster: cluster.map(str::to_owned),
            closing: None,
            done: false,
            _permit: None,
        }
    }

    fn revision(item: Option<Item>) -> u64 {
        match item {
            Some(Item::Change(c)) => c.revision,
            other => panic!("not a change: {other:?}"),
        }
    }

    #[test]
    fn positions_are_an_event_id_or_a_bare_revision() {
        assert_eq!(position("3-17"), Some((Some(3), 17)));
        assert_eq!(position(" 17 "), Some((None, 17)));
        for bad in ["", "-1", "+1", "x", "1-x", "1-2-3"] {
            assert_eq!(position(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_watcher_gets_exactly_the_changes_after_its_position_filtered_by_cluster() {
        let hub = ChangeHub::new(1, 0, 100, Vec::new());
        hub.publish(vec![deletion(1, "a"), deletion(2, "b"), deletion(3, "a")]);
        let mut all = watcher(&hub, 1, None);
        assert_eq!(revision(all.next().await), 2);
        assert_eq!(revision(all.next().await), 3);
        let mut only_a = watcher(&hub, 0, Some("a"));
        assert_eq!(revision(only_a.next().await), 1);
        assert_eq!(revision(only_a.next().await), 3);
        hub.publish(vec![deletion(4, "b"), deletion(5, "a")]);
        assert_eq!(revision(only_a.next().await), 5);
        hub.close();
        assert_eq!(only_a.next().await, None);
    }

    #[tokio::test]
    async fn a_watcher_that_falls_out_of_the_history_gets_gone_and_then_the_end() {
        let hub = ChangeHub::new(1, 0, 3, Vec::new());
        hub.publish(vec![deletion(1, "a")]);
        let mut slow = watcher(&hub, 0, None);
        assert_eq!(revision(slow.next().await), 1);
        hub.publish((2..=10).map(|r| deletion(r, "a")).collect());
        assert_eq!(
            slow.next().await,
            Some(Item::Gone(Gone {
                oldest: 8,
                current: 10,
                generation: 1
            }))
        );
        assert_eq!(slow.next().await, None);
    }

    #[tokio::test]
    async fn a_new_generation_ends_the_old_ones_watchers_with_gone() {
        let hub = ChangeHub::new(1, 0, 10, Vec::new());
        let mut w = watcher(&hub, 0, None);
        let next = tokio::spawn(async move { w.next().await });
        hub.set_generation(2);
        let item = tokio::time::timeout(Duration::from_secs(10), next)
            .await
            .expect("woken")
            .expect("joined");
        assert!(
            matches!(item, Some(Item::Gone(g)) if g.generation == 2),
            "{item:?}"
        );
    }
}
