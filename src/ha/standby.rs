//! A standby keeper's reads: the committed state of the shared store, followed as the
//! leader commits.
//!
//! A standby runs no core. Its admin API answers from a read [`View`](crate::http::view::View) seeded from the
//! store and fed, through a [`ChangeHub`](crate::hub::ChangeHub), with the changes the leader commits (read from
//! the store's log every [`FOLLOW_EVERY`]), so listings, the watch and `status` work on
//! every keeper, and a watcher that follows a standby sees the same revisions as one
//! that follows the leader. Changes are refused (`503 not-leader`, naming the leader).

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::configdoc::ConfigVersion;
use crate::http::view::{SeedCluster, ViewSeed};
use crate::store::Snapshot;

/// How often a standby reads what the leader committed.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// The view's seed for `snapshot`, as a standby (without a core) builds it: the proxies
/// take slots 1, 2, … in the snapshot's order (the order a leader restoring the same
/// snapshot gives them), and each cluster its config version's summary. The audit
/// record is not in a snapshot: the caller adds it.
pub fn seed_of(snapshot: &Snapshot) -> ViewSeed {
    let proxies = snapshot
        .proxies
        .iter()
        .enumerate()
        .map(|(i, p)| (u32::try_from(i + 1).unwrap_or(u32::MAX), p.clone()))
        .collect();
    let clusters = snapshot
        .configs
        .iter()
        .filter_map(|c| {
            match ConfigVersion::render(
                c.version,
                Arc::from(c.base.as_slice()),
                c.datasources.clone(),
            ) {
                Ok(version) => Some(SeedCluster {
                    name: Arc::from(c.cluster.as_str()),
                    config: crate::keeper::config_summary(&version),
                    deletion_paused: false,
                    settings: snapshot
                        .clusters
                        .iter()
                        .find(|(name, _)| *name == c.cluster)
                        .map(|(_, s)| s.clone())
                        .unwrap_or_default(),
                }),
                Err(e) => {
                    warn!(cluster = %c.cluster, version = c.version, error = %e,
                          "a stored config version cannot be shown");
                    None
                }
            }
        })
        .collect();
    ViewSeed {
        generation: snapshot.generation,
        revision: snapshot.revision,
        proxies,
        clusters,
        audit: Vec::new(),
    }
}

#[cfg(feature = "etcd")]
pub use follow::follow;

#[cfg(feature = "etcd")]
mod follow {
    use std::sync::Arc;

    use tokio::sync::watch;
    use tracing::{debug, warn};

    use super::FOLLOW_EVERY;
    use crate::ha::EtcdHealth;
    use crate::hub::ChangeHub;
    use crate::store::etcd::EtcdStore;

    /// Changes read per request.
    const PAGE: usize = 1_000;

    /// Feeds `hub` with what the leader commits to `store`, until `stop` says so; returns
    /// the store (for this keeper to boot it, if it is elected; `None` if a read of it
    /// panicked). An etcd that does not answer is logged once per outage; the standby
    /// keeps serving what it has.
    pub async fn follow(
        store: EtcdStore,
        hub: Arc<ChangeHub>,
        mut stop: watch::Receiver<bool>,
        health: Arc<EtcdHealth>,
    ) -> Option<EtcdStore> {
        let mut store = Some(store);
        let mut failing = false;
        loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|&s| s) => break,
                () = tokio::time::sleep(FOLLOW_EVERY) => {}
            }
            let mut taken = store.take()?;
            let (_, after) = hub.position();
            let joined = tokio::task::spawn_blocking(move || {
                let result = taken.follow(after, PAGE);
                (taken, result)
            })
            .await;
            let Ok((back, result)) = joined else {
                warn!("the standby's store reader panicked; it stops following");
                return None;
            };
            store = Some(back);
            match result {
                Ok((generation, changes)) => {
                    health.answered();
                    if failing {
                        warn!("the store answers again: following the leader's commits");
                        failing = false;
                    }
                    hub.set_generation(generation);
                    if !changes.is_empty() {
                        debug!(changes = changes.len(), "followed the leader's commits");
                        hub.publish(changes);
                    }
                }
                Err(e) => {
                    health.failed();
                    if !failing {
                        warn!(error = %e, "the store cannot be read: the standby serves what it has");
                        failing = true;
                    }
                }
            }
        }
        store
    }
}
