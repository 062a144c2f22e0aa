//! Mass-loss protection, as Kubernetes does for zone disruptions.
//!
//! When more than a configured share (default 55 %) of a cluster of at least a few
//! proxies (default 3) is `lost` at once, the probable cause is the keeper's own network,
//! not that many proxies died together. Deleting them then would restart half the fleet
//! the moment the network heals, so the keeper stops deleting that cluster's lost proxies
//! until the share falls below the threshold again. Lost proxies whose delete deadline
//! passed meanwhile are deleted then, if still lost. Pausing and resuming are events, so
//! they show in logs, metrics, listings and `/readyz`.

use crate::keeper::registry::ClusterId;
use crate::keeper::{Event, Keeper, Reason, Status};
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
        let deferred = if paused {
            Vec::new()
        } else {
            std::mem::take(&mut c.deferred)
        };
        self.events.push_back(Event::MassLoss {
            cluster: name,
            paused,
            lost,
            total,
        });
        for slot in deferred {
            // Deleted only if still lost and past its deadline: a proxy that came back
            // (or a slot reused since) is left alone.
            let due = self.registry.get(slot).is_some_and(|r| {
                r.cluster == cluster && r.status == Status::Lost && r.deadline <= now
            });
            if due {
                self.delete(slot, Reason::DeleteTimeout, now);
            }
        }
    }

    /// Whether deletion of the cluster's lost proxies is paused; if so, remembers `slot`
    /// for when it resumes.
    pub(super) fn defer_deletion(&mut self, cluster: ClusterId, slot: u32) -> bool {
        let c = self.registry.cluster_mut(cluster);
        if c.deletion_paused {
            c.deferred.push(slot);
        }
        c.deletion_paused
    }
}
