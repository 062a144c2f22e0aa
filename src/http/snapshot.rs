//! `GET /v1/snapshot`: a backup of a running keeper's store, streamed.
//!
//! The snapshot is made on tokio's blocking pool from the store's last committed
//! transaction (the keeper commits on meanwhile; see `store::redb`'s `snapshot`), into a
//! temporary file that is already unlinked, and streamed from it in chunks, so neither the
//! keeper's task nor the runtime's workers wait on it, and memory stays bounded however
//! large the store is. It holds config contents, which are credentials: it needs an
//! `admin` token of the whole fleet (`access.rs`).

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::Api;
use super::problem::Problem;

/// The media type of a snapshot: a zerokeeper store file (a redb database).
pub(crate) const SNAPSHOT_TYPE: &str = "application/vnd.zerokeeper.snapshot";

/// How much of the file is read and sent at a time.
const CHUNK: usize = 256 * 1024;

/// `GET /v1/snapshot`.
pub(crate) async fn snapshot(State(api): State<Api>) -> Result<Response, Problem> {
    let Some(store) = api.store.clone() else {
        return Err(Problem::snapshot_unsupported(
            "this keeper keeps no store (it runs without a data directory), so there is nothing to back up",
        ));
    };
    let made = tokio::task::spawn_blocking(move || store.snapshot())
        .await
        .map_err(|_| Problem::internal("making the snapshot panicked"))?;
    let (summary, mut file) = match made {
        None => {
            return Err(Problem::snapshot_unsupported(
                "this keeper keeps its state in etcd: back it up with `etcdctl snapshot save` \
                 (docs/OPERATIONS.md, \"Back up and restore\")",
            ));
        }
        Some(made) => {
            made.map_err(|e| Problem::internal(format!("cannot make a snapshot: {e}")))?
        }
    };
    tracing::info!(
        generation = summary.generation,
        revision = summary.revision,
        proxies = summary.proxies,
        bytes = summary.bytes,
        "made a snapshot of the store"
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::task::spawn_blocking(move || {
        loop {
            let mut chunk = vec![0; CHUNK];
            let n = match file.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            chunk.truncate(n);
            if tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                return; // the client went away
            }
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SNAPSHOT_TYPE),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(summary.bytes));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!(
            "attachment; filename=\"zerokeeper-{}-{}.snapshot\"",
            summary.generation, summary.revision
        ))
        .map_err(|_| Problem::internal("a snapshot's file name is not a header"))?,
    );
    headers.insert(
        "zerokeeper-generation",
        HeaderValue::from(summary.generation),
    );
    headers.insert("zerokeeper-revision", HeaderValue::from(summary.revision));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
