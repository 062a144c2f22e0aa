//! Mass-loss protection, as Kubernetes does for zone disruptions.
//!
//! When more than a configured share (default 55 %) of a cluster of at least a few
//! proxies (default 3) is `lost` at once, the probable cause is the keeper's own network,
//! not that many proxies died together. Deleting them then would restart half the fleet
//! the moment the network heals, so the keeper stops deleting that cluster's lost proxies
//! until the share falls below the threshold again.
//!
//! When deletion resumes, every lost proxy of the cluster gets a fresh `delete_after`
//! window. Deleting the overdue ones at once would delete live proxies: a healing cluster
//! resumes as soon as the first few heartbeats of a burst are read, before the rest of the
//! same burst (from proxies just as alive) are. Pausing and resuming are changes, so they
//! show in logs, metrics, listings and the watch.

use crate::keeper::registry::ClusterId;
use crate::keeper::{ChangeKind, Keeper, Status};
use crate::time::Instant;

impl Keeper {
    /// Whether `lost` of `total` proxies is a mass loss under the configuration.
    fn is_mass_loss(&self, lost: usize, total: usize) -> bool {
        total >= self.config.mass_loss_min_proxies
            && lost * 1000 > total * self.config.mass_loss_permille as usize
    }

    /// Re-evaluates a cluster's protection after its statuses changed.
    pub(super) fn check_mass_loss(&mut self, cluster: ClusterId, now: Instant) {
        let c = self.registry.cluster(cluster);
        let (lost, total) = (c.lost, c.index.len());
        let paused = self.is_mass_loss(lost, total);
        if paused == c.deletion_paused {
            return;
        }
        let c = self.registry.cluster_mut(cluster);
        c.deletion_paused = paused;
        let name = c.name.clone();
        if !paused {
            // A scan of one cluster, once per resumption.
            let slots: Vec<u32> = c.index.iter().copied().collect();
            for slot in slots {
                if self
                    .registry
                    .get(slot)
                    .is_some_and(|r| r.status == Status::Lost)
                {
                    self.renew_delete_window(slot, now);
                }
            }
        }
        self.record(ChangeKind::DeletionPaused {
            cluster: name,
            paused,
            lost,
            total,
        });
    }
}
