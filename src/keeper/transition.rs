//! The status transitions of `spec/scenario.md`, in one place: decided and applied here,
//! whatever causes them (a datagram, a timer, an operator, a restore, a stall).
//!
//! `decide` is a pure function from what the keeper knows of an identity and what a
//! datagram says to what the keeper must do; the `impl Keeper` below applies decisions,
//! fires timers, and makes every status change and deletion (and the change each one
//! leaves in the change stream). A stall changes no status: it only moves keeper time
//! (see `clock`), so every deadline below is in keeper time.
//!
//! | current    | event                                    | next  | answer      |
//! |------------|------------------------------------------|-------|-------------|
//! | (none)     | `ready`                                  | ready | Ack(ready)  |
//! | (none)     | `up`                                     | none  | Restart     |
//! | (none)     | `down` / unregister                      | none  | Ack(gone)   |
//! | ready      | `ready`                                  | ready | Ack(ready)  |
//! | ready      | `up`                                     | up    | Ack(up)     |
//! | up         | `up`                                     | up    | Ack when due|
//! | lost       | `up`                                     | up    | Ack(up)     |
//! | any        | `down` / unregister                      | none  | Ack(gone)   |
//! | any        | `ready` of a larger incarnation          | ready | Ack(ready)  |
//! | any        | `up` of a larger incarnation             | same  | Restart     |
//! | any, heard | datagram of a smaller incarnation        | same  | Superseded  |
//! | any, quiet | datagram of a smaller incarnation        | same  | Challenge   |
//! | any, gone  | `ready` of a smaller incarnation         | ready | Ack(ready)  |
//! | any, gone  | `up` of a smaller incarnation            | same  | Restart     |
//! | up or lost | `ready` of the same incarnation          | same  | dropped     |
//!
//! And the timers, each armed from the last accepted datagram (in keeper time):
//!
//! | current    | timer                                    | next  |
//! |------------|------------------------------------------|-------|
//! | ready      | nothing heard for `ready_timeout`        | none  |
//! | up         | nothing heard for `lost_after`           | lost  |
//! | lost       | nothing heard for `delete_after`         | none, unless mass-loss protection pauses the cluster's deletions (then lost, with a fresh `delete_after` window when they resume) |
//! | any        | operator's remove (`Keeper::remove_proxy`) | none |
//! | (stored)   | restore (`Keeper::restore`)              | the stored status, with a fresh window |
//! | (none, never seen) | `up` while adopting (after a boot on an empty store, or one older than the fleet) | up (adopted) |
//!
//! Before the table: a datagram whose `(incarnation, seq)` is not newer than the last one
//! accepted in its own incarnation (of the record, or of the tombstone) is dropped
//! silently, so no duplicated, delayed or replayed datagram moves anything; and a datagram
//! whose freshness token is stale is answered with a `Challenge` and changes nothing.
//!
//! Incarnations are start times, and clocks can be wrong: a process whose dead former
//! life ran with a clock an hour fast starts with a *smaller* incarnation. It is told to
//! stop (`Superseded`) only once the registered life has been heard since the new process
//! first claimed the identity (both are alive); until then it is challenged, which keeps
//! it trying; once the registered life has been silent for `lost_after` the new process
//! takes the identity, with a token minted after that life was last heard (so a delayed
//! or replayed datagram of a life before it, whose token is older, only ever finds it
//! quiet and is challenged). Against a tombstone
//! of a larger incarnation, a datagram counts only with a token minted after the
//! deletion (a delayed datagram of a life before it cannot have one); else it is
//! challenged. So a dead life locks out a live one for at most `lost_after`, and two live
//! processes still never flap: the one heard keeps the identity.

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::debug;

use crate::keeper::answer::Reply;
use crate::keeper::datagram::Lookup;
use crate::keeper::registry::{ClusterId, Record, Tombstone};
use crate::keeper::timers::TimerKind;
use crate::keeper::token::Freshness;
use crate::keeper::{ChangeKind, DropReason, Keeper, Outcome, Status, StatusChange};
use crate::time::Instant;
use crate::wire::{Heartbeat, ProxyStatus};

/// The position of a datagram in its sender's life.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
pub(crate) struct Stamp {
    pub(crate) incarnation: u64,
    pub(crate) seq: u64,
}

/// What the keeper holds for an identity.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Known {
    /// Never seen, or deleted long enough ago that nothing is remembered.
    Nothing,
    /// Deleted recently: the last accepted stamp is remembered, and whether the
    /// datagram's token was minted after the deletion (so its sender is a process that
    /// this keeper answered since, not a delayed datagram of a life before it).
    Tombstone(Stamp, bool),
    /// In the registry, with how long the registered life has been silent.
    Live(Status, Stamp, Silence),
}

/// How long the registered life of an identity has been silent, as a datagram of
/// another life of it finds it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Silence {
    /// Heard within an interval and a half: alive.
    Heard,
    /// Not heard for longer, but for less than `lost_after`.
    Quiet,
    /// Not heard for `lost_after` or more (it is, or is about to be, `lost`).
    Gone,
}

/// What a proxy said.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Said {
    /// A heartbeat in this status.
    Heartbeat(ProxyStatus),
    /// An unregister request.
    Unregister,
}

/// Why a proxy's status changed.
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// It sent its first `ready` heartbeat.
    Registered,
    /// A restarted process (larger incarnation) sent `ready`.
    NewIncarnation,
    /// It sent `up`.
    Heartbeat,
    /// Nothing heard from an `up` proxy for `lost_after`.
    LostTimeout,
    /// Nothing heard from a `ready` proxy for `ready_timeout`.
    ReadyTimeout,
    /// Nothing heard from a `lost` proxy for `delete_after`.
    DeleteTimeout,
    /// It reported a known failure with a `down` heartbeat.
    Down,
    /// It unregistered.
    Unregister,
    /// An operator removed it.
    Removed,
    /// A keeper that booted without knowing its fleet (an empty store, or one older than
    /// the fleet) took an `up` heartbeat of an unknown proxy as it is, instead of
    /// restarting it.
    Adopted,
}

impl Reason {
    /// The reason as a lowercase word, for logs, events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Registered => "registered",
            Reason::NewIncarnation => "new_incarnation",
            Reason::Heartbeat => "heartbeat",
            Reason::LostTimeout => "lost_timeout",
            Reason::ReadyTimeout => "ready_timeout",
            Reason::DeleteTimeout => "delete_timeout",
            Reason::Down => "down",
            Reason::Unregister => "unregister",
            Reason::Removed => "removed",
            Reason::Adopted => "adopted",
        }
    }
}

/// What the keeper must do with a datagram.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Decision {
    /// Not newer than what was accepted: drop silently, change nothing.
    Stale,
    /// A `ready` after `up` within one incarnation: an agent never does this. Drop.
    Regression,
    /// The token is stale: answer with a fresh one, change nothing.
    Challenge,
    /// An older process of an identity a newer one holds: tell it to stop.
    Superseded { winner: u64 },
    /// Add the identity as `ready`.
    Register,
    /// Replace the record with a new life in `ready`.
    NewLife,
    /// Same status, later stamp: the proxy is alive.
    Refresh,
    /// Move to `to`.
    Transition { to: Status },
    /// Delete the record.
    Delete { reason: Reason },
    /// Nothing to delete; tell the sender it is gone.
    AlreadyGone,
    /// An `up` from a process the registry does not hold: it must start over.
    Restart,
    /// An `up` from a process the registry does not hold, while the keeper adopts its
    /// fleet: registered as `up`.
    Adopt,
}

/// Decides what a datagram does. `fresh` is whether its token counts.
pub(crate) fn decide(known: Known, said: Said, stamp: Stamp, fresh: bool) -> Decision {
    // Ordering first: a datagram that is not newer than the last accepted one is a
    // duplicate, a delayed packet or a replay, and must not even elicit an answer.
    match known {
        Known::Live(_, last, _) | Known::Tombstone(last, _)
            if stamp.incarnation == last.incarnation && stamp.seq <= last.seq =>
        {
            return Decision::Stale;
        }
        _ => {}
    }
    if !fresh {
        return Decision::Challenge;
    }
    match known {
        Known::Tombstone(last, false) if stamp.incarnation < last.incarnation => {
            Decision::Challenge
        }
        Known::Live(_, last, Silence::Heard) if stamp.incarnation < last.incarnation => {
            Decision::Superseded {
                winner: last.incarnation,
            }
        }
        Known::Live(_, last, Silence::Quiet) if stamp.incarnation < last.incarnation => {
            Decision::Challenge
        }
        Known::Live(_, last, Silence::Gone)
            if stamp.incarnation < last.incarnation
                && matches!(said, Said::Unregister | Said::Heartbeat(ProxyStatus::Down)) =>
        {
            Decision::AlreadyGone
        }
        Known::Live(current, last, _) => {
            // A smaller incarnation reaching here is a new process after a life gone
            // silent for `lost_after` (its clock was behind that life's).
            let newer_process = stamp.incarnation != last.incarnation;
            match said {
                Said::Unregister => Decision::Delete {
                    reason: Reason::Unregister,
                },
                Said::Heartbeat(ProxyStatus::Down) => Decision::Delete {
                    reason: Reason::Down,
                },
                Said::Heartbeat(ProxyStatus::Ready) if newer_process => Decision::NewLife,
                Said::Heartbeat(ProxyStatus::Up) if newer_process => Decision::Restart,
                Said::Heartbeat(ProxyStatus::Ready) => match current {
                    Status::Ready => Decision::Refresh,
                    Status::Up | Status::Lost => Decision::Regression,
                },
                Said::Heartbeat(ProxyStatus::Up) => match current {
                    Status::Up => Decision::Refresh,
                    Status::Ready | Status::Lost => Decision::Transition { to: Status::Up },
                },
            }
        }
        Known::Nothing | Known::Tombstone(..) => match said {
            Said::Heartbeat(ProxyStatus::Ready) => Decision::Register,
            Said::Heartbeat(ProxyStatus::Up) => Decision::Restart,
            Said::Heartbeat(ProxyStatus::Down) | Said::Unregister => Decision::AlreadyGone,
        },
    }
}

impl Keeper {
    /// Applies a decision that registers, refreshes, moves or deletes a record.
    pub(crate) fn apply(
        &mut self,
        decision: Decision,
        lookup: Lookup,
        now: Instant,
        reply: Reply,
        hb: &Heartbeat<'_>,
        freshness: Freshness,
    ) -> Result<Outcome, DropReason> {
        match (decision, lookup.slot) {
            (Decision::Register, _) => self.register(now, reply, hb, Status::Ready),
            (Decision::Adopt, _) => self.register(now, reply, hb, Status::Up),
            (Decision::NewLife, Some(slot)) => {
                self.registry.settle(slot);
                self.forget_rejection(slot);
                self.touch(slot, now, reply, hb.config_version);
                let old = self.registry.get(slot).map(|r| r.status);
                self.registry.set_status(slot, Status::Ready, now);
                if let Some(record) = self.registry.get_mut(slot) {
                    record.since = now;
                }
                self.rearm(slot, now);
                self.forget_tombstone(hb.cluster, hb.proxy);
                self.status_changed(slot, old, Reason::NewIncarnation, now);
                self.ack_registration(reply, slot, now);
                Ok(Outcome::NewIncarnation)
            }
            (Decision::Refresh, Some(slot)) => {
                self.refresh(slot, now, reply, hb, freshness);
                Ok(Outcome::Refreshed)
            }
            (Decision::Transition { to }, Some(slot)) => {
                self.touch(slot, now, reply, hb.config_version);
                self.move_to(slot, to, Reason::Heartbeat, now);
                self.ack(reply, slot, to, now);
                Ok(Outcome::Transitioned)
            }
            (Decision::Delete { reason }, Some(slot)) => {
                // The deleting datagram is the last one accepted: its stamp goes in the
                // tombstone, so its own retransmissions are stale.
                if let Some(record) = self.registry.get_mut(slot) {
                    record.stamp = reply.stamp;
                }
                self.delete(slot, reason, now);
                let gone = self.gone(reply, now);
                self.answer(reply, gone);
                Ok(Outcome::Deleted)
            }
            (Decision::AlreadyGone, _) => {
                if let Some(c) = lookup.cluster
                    && let Some(t) = self.registry.tombstone_mut(c, hb.proxy)
                {
                    t.stamp = t.stamp.max(reply.stamp);
                }
                let gone = self.gone(reply, now);
                self.answer(reply, gone);
                Ok(Outcome::AlreadyGone)
            }
            // `decide` returns the others only for `Known::Live`, which implies a slot,
            // and the answers without a transition are handled by the caller.
            _ => Err(DropReason::Stale),
        }
    }

    /// Registers the sender as `status`: `ready`, or `up` when adopted.
    fn register(
        &mut self,
        now: Instant,
        reply: Reply,
        hb: &Heartbeat<'_>,
        status: Status,
    ) -> Result<Outcome, DropReason> {
        if self.registry.len() >= self.config.max_proxies {
            return Err(DropReason::RegistryFull);
        }
        let cluster = self
            .cluster_for(hb.cluster)
            .ok_or(DropReason::RegistryFull)?;
        self.forget_tombstone(hb.cluster, hb.proxy);
        let slot = self.insert(Record {
            cluster,
            proxy: hb.proxy.into(),
            stamp: reply.stamp,
            status,
            reply_to: reply.to,
            last_heard: now,
            since: now,
            deadline: now,
            config_version: hb.config_version,
            config_id: reply.config,
        });
        self.seen.set(slot, self.clock.real(), reply.key);
        if status == Status::Up {
            self.status_changed(slot, None, Reason::Adopted, now);
            let ack = self.ack_for(reply, slot, crate::wire::AckStatus::Up, now);
            self.answer_when_durable(ack);
            return Ok(Outcome::Adopted);
        }
        self.status_changed(slot, None, Reason::Registered, now);
        self.ack_registration(reply, slot, now);
        Ok(Outcome::Registered)
    }

    /// A record back in the registry from the store, with a fresh window from `now`: a
    /// `ready` one has `ready_timeout`, an `up` one `lost_after`, a `lost` one stays lost
    /// with its delete timer started again. Not a change: nothing is recorded.
    pub(crate) fn restore_record(&mut self, record: Record) {
        self.insert(record);
    }

    /// Stores a record and arms the timer of its status from `last_heard`.
    fn insert(&mut self, mut record: Record) -> u32 {
        let deadline = record.last_heard + self.config.timeout(record.status);
        record.deadline = deadline;
        let kind = record.status.timer();
        let slot = self.registry.insert(record);
        self.timers.arm(kind, deadline, slot);
        slot
    }

    /// Same status, later stamp: the proxy is alive. Answers as the protocol asks, and
    /// records what it reports about itself if that changed.
    fn refresh(
        &mut self,
        slot: u32,
        now: Instant,
        reply: Reply,
        hb: &Heartbeat<'_>,
        freshness: Freshness,
    ) {
        let observed = self.touch(slot, now, reply, hb.config_version);
        self.rearm(slot, now);
        let Some(record) = self.registry.get(slot) else {
            return;
        };
        let status = record.status;
        let cluster = self.registry.cluster(record.cluster);
        // A proxy that rejected the current config is not told of it again: it knows.
        let config_current = record.runs(&cluster.config)
            || cluster
                .rejections
                .get(&slot)
                .is_some_and(|r| r.incarnation == record.stamp.incarnation);
        if observed {
            self.record(ChangeKind::Observed {
                cluster: cluster.name.clone(),
                proxy: Arc::from(record.proxy.as_str()),
                slot,
                source: record.reply_to,
                config_version: record.config_version,
            });
        }
        let token_aging = match freshness {
            Freshness::Fresh { age_buckets } => age_buckets * 2 >= self.tokens.max_age_buckets(),
            Freshness::Stale => true,
        };
        // Acks are due at once for any change, for every `ready` heartbeat (the proxy is
        // waiting for one), and often enough to keep tokens fresh; a steady `up`
        // heartbeat with a young token needs none.
        if status == Status::Ready
            || token_aging
            || !config_current
            || hb.slot != slot
            || reply.must_ack
        {
            self.ack(reply, slot, status, now);
        }
    }

    /// Records that the proxy in `slot` was heard; returns whether what it reports about
    /// itself (its source, its config version) changed.
    fn touch(&mut self, slot: u32, now: Instant, reply: Reply, config_version: u64) -> bool {
        self.seen.set(slot, self.clock.real(), reply.key);
        let Some(record) = self.registry.get_mut(slot) else {
            return false;
        };
        let changed = record.reply_to != reply.to
            || record.config_version != config_version
            || record.config_id != reply.config;
        record.stamp = reply.stamp;
        record.reply_to = reply.to;
        record.last_heard = now;
        record.config_version = config_version;
        record.config_id = reply.config;
        if changed {
            let record = record.clone();
            let cluster = record.cluster;
            if record.runs(&self.registry.cluster(cluster).config) {
                // It applied the current config after all (a later incarnation did).
                self.registry.cluster_mut(cluster).rejections.remove(&slot);
            }
        }
        changed
    }

    /// Forgets the rejection the record in `slot` made, if any (a new life, a deletion).
    fn forget_rejection(&mut self, slot: u32) {
        if let Some(cluster) = self.registry.get(slot).map(|r| r.cluster) {
            self.registry.cluster_mut(cluster).rejections.remove(&slot);
        }
    }

    /// Arms the one timer of the record's status, from its last heartbeat.
    fn rearm(&mut self, slot: u32, now: Instant) {
        if let Some(record) = self.registry.get_mut(slot) {
            let kind = record.status.timer();
            let deadline = record.last_heard.max(now) + self.config.timeout(record.status);
            record.deadline = deadline;
            self.timers.arm(kind, deadline, slot);
        }
    }

    /// Moves the record in `slot` to `to`, re-arms its timer, and records the change.
    fn move_to(&mut self, slot: u32, to: Status, reason: Reason, now: Instant) {
        let from = self.registry.set_status(slot, to, now);
        self.rearm(slot, now);
        self.status_changed(slot, from, reason, now);
    }

    /// A record's timer fired at its deadline `at` (a stale entry was never handed here).
    pub(crate) fn fire(&mut self, kind: TimerKind, at: Instant, slot: u32, now: Instant) {
        let Some(record) = self.registry.get(slot) else {
            return;
        };
        debug_assert!(record.deadline == at && record.status.timer() == kind);
        let cluster = record.cluster;
        let frozen = self.registry.cluster(cluster).settings.frozen;
        match kind {
            // A frozen cluster deletes nothing; unfreezing gives a fresh window.
            TimerKind::Ready if frozen => {}
            TimerKind::Ready => self.delete(slot, Reason::ReadyTimeout, now),
            TimerKind::Delete => {
                // While mass-loss protection holds, a lost proxy stays; the resumption
                // gives every lost proxy of the cluster a fresh window.
                if !self.registry.cluster(cluster).deletion_paused && !frozen {
                    self.delete(slot, Reason::DeleteTimeout, now);
                }
            }
            TimerKind::Lost => {
                self.registry.set_status(slot, Status::Lost, now);
                // `delete_after` counts from the last heartbeat, as the original keeper did.
                if let Some(record) = self.registry.get_mut(slot) {
                    let deadline = record.last_heard + self.config.delete_after;
                    record.deadline = deadline;
                    self.timers.arm(TimerKind::Delete, deadline, slot);
                }
                self.status_changed(slot, Some(Status::Up), Reason::LostTimeout, now);
            }
        }
    }

    /// Gives the lost record in `slot` a fresh delete window from `now`.
    pub(crate) fn renew_delete_window(&mut self, slot: u32, now: Instant) {
        if let Some(record) = self.registry.get_mut(slot)
            && record.status == Status::Lost
        {
            let deadline = now + self.config.delete_after;
            record.deadline = deadline;
            self.timers.arm(TimerKind::Delete, deadline, slot);
        }
    }

    /// Gives the ready record in `slot` a fresh `ready_timeout` from `now`.
    pub(crate) fn renew_ready_window(&mut self, slot: u32, now: Instant) {
        if let Some(record) = self.registry.get_mut(slot)
            && record.status == Status::Ready
        {
            let deadline = now + self.config.timeout(Status::Ready);
            record.deadline = deadline;
            self.timers.arm(TimerKind::Ready, deadline, slot);
        }
    }

    /// Deletes the record in `slot`, leaving a tombstone, and records the change.
    pub(crate) fn delete(&mut self, slot: u32, reason: Reason, now: Instant) {
        let last_heartbeat = self.seen.get(slot);
        self.forget_rejection(slot);
        let Some(record) = self.registry.remove(slot) else {
            return;
        };
        self.seen.clear(slot);
        let cluster = record.cluster;
        self.bury(cluster, record.proxy.as_str().into(), record.stamp, now);
        let change = StatusChange {
            cluster: self.registry.cluster(cluster).name.clone(),
            proxy: Arc::from(record.proxy.as_str()),
            slot,
            incarnation: record.stamp.incarnation,
            from: Some(record.status),
            to: None,
            reason,
            last_heartbeat,
            source: record.reply_to,
            config_version: record.config_version,
        };
        self.record(ChangeKind::Status(change));
        self.check_mass_loss(cluster, now);
    }

    /// Records the status change of the record in `slot` and re-evaluates its cluster's
    /// mass-loss protection.
    fn status_changed(&mut self, slot: u32, from: Option<Status>, reason: Reason, now: Instant) {
        let Some(record) = self.registry.get(slot) else {
            return;
        };
        let cluster = record.cluster;
        let change = StatusChange {
            cluster: self.registry.cluster(cluster).name.clone(),
            proxy: Arc::from(record.proxy.as_str()),
            slot,
            incarnation: record.stamp.incarnation,
            from,
            to: Some(record.status),
            reason,
            last_heartbeat: self.seen.get(slot),
            source: record.reply_to,
            config_version: record.config_version,
        };
        self.record(ChangeKind::Status(change));
        self.check_mass_loss(cluster, now);
    }

    /// Leaves a tombstone for a deleted proxy.
    fn bury(&mut self, cluster: ClusterId, proxy: Box<str>, stamp: Stamp, now: Instant) {
        let expires = now + self.config.delete_after;
        let last_restart = self
            .registry
            .tombstone(cluster, &proxy)
            .and_then(|t| t.last_restart);
        let stone = Tombstone {
            stamp,
            made: now,
            expires,
            last_restart,
        };
        self.registry.set_tombstone(cluster, proxy.clone(), stone);
        self.timers.arm_tombstone(expires, cluster, proxy);
    }

    /// The tombstone of `proxy`, created (with nothing accepted yet) if there is none and
    /// there is room: tombstones made this way, for identities never registered, are held
    /// to `max_proxies` so that they cannot grow without bound.
    pub(crate) fn tombstone(
        &mut self,
        cluster: ClusterId,
        proxy: &str,
        now: Instant,
    ) -> Option<&mut Tombstone> {
        if self.registry.tombstone(cluster, proxy).is_none() {
            if self.registry.tombstones() >= self.config.max_proxies {
                return None;
            }
            let expires = now + self.config.delete_after;
            let nothing = Stamp {
                incarnation: 0,
                seq: 0,
            };
            let stone = Tombstone {
                stamp: nothing,
                made: now,
                expires,
                last_restart: None,
            };
            self.registry.set_tombstone(cluster, proxy.into(), stone);
            self.timers.arm_tombstone(expires, cluster, proxy.into());
        }
        self.registry.tombstone_mut(cluster, proxy)
    }

    fn forget_tombstone(&mut self, cluster: &str, proxy: &str) {
        if let Some(c) = self.registry.cluster_id(cluster) {
            self.registry.remove_tombstone(c, proxy);
        }
    }

    /// Frees the cluster `id` if nothing is left in it (no proxy, no tombstone, no
    /// config version made) and the config file did not declare it (give it keys of its
    /// own): so clusters whose proxies all died, or that were only ever named by
    /// heartbeats that could not register, do not hold `max_clusters` room for ever.
    pub(crate) fn release_cluster(&mut self, id: ClusterId) {
        let name = self.registry.cluster(id).name.clone();
        if self.keys.has_own_keys(&name) {
            return;
        }
        if self.registry.free_if_empty(id) {
            debug!(cluster = %name, "empty cluster freed");
        }
    }

    /// The cluster named `name`, created if there is room.
    pub(crate) fn cluster_for(&mut self, name: &str) -> Option<ClusterId> {
        if self.registry.cluster_id(name).is_none()
            && self.registry.cluster_count() >= self.config.max_clusters
        {
            return None;
        }
        Some(self.registry.ensure_cluster(name))
    }
}

/// Where answers go for a proxy restored from a store that did not record its source:
/// nowhere, until its next datagram says.
pub(crate) const NOWHERE: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

#[cfg(test)]
mod tests {
    use super::*;

    const S: Stamp = Stamp {
        incarnation: 10,
        seq: 5,
    };

    fn later(seq: u64) -> Stamp {
        Stamp {
            incarnation: 10,
            seq,
        }
    }

    fn hb(status: ProxyStatus) -> Said {
        Said::Heartbeat(status)
    }

    #[test]
    fn ordering_is_checked_before_freshness() {
        assert_eq!(
            decide(
                Known::Live(Status::Up, S, Silence::Heard),
                hb(ProxyStatus::Up),
                S,
                false
            ),
            Decision::Stale
        );
        assert_eq!(
            decide(
                Known::Tombstone(S, false),
                hb(ProxyStatus::Ready),
                later(4),
                true
            ),
            Decision::Stale
        );
        // An older life than the tombstone's is not dropped: it is challenged until it
        // holds a token minted after the deletion (see the clock-skew test below).
        assert_eq!(
            decide(
                Known::Tombstone(S, false),
                hb(ProxyStatus::Ready),
                Stamp {
                    incarnation: 9,
                    seq: 99
                },
                true
            ),
            Decision::Challenge
        );
        assert_eq!(
            decide(
                Known::Live(Status::Up, S, Silence::Heard),
                hb(ProxyStatus::Up),
                later(6),
                false
            ),
            Decision::Challenge
        );
    }

    #[test]
    fn a_delayed_ready_never_moves_an_up_proxy_back() {
        assert_eq!(
            decide(
                Known::Live(Status::Up, S, Silence::Heard),
                hb(ProxyStatus::Ready),
                later(4),
                true
            ),
            Decision::Stale
        );
        assert_eq!(
            decide(
                Known::Live(Status::Up, S, Silence::Heard),
                hb(ProxyStatus::Ready),
                later(6),
                true
            ),
            Decision::Regression
        );
    }

    #[test]
    fn an_older_process_is_superseded_and_a_newer_one_starts_a_new_life() {
        let old = Stamp {
            incarnation: 9,
            seq: 100,
        };
        let new = Stamp {
            incarnation: 11,
            seq: 1,
        };
        assert_eq!(
            decide(
                Known::Live(Status::Up, S, Silence::Heard),
                hb(ProxyStatus::Up),
                old,
                true
            ),
            Decision::Superseded { winner: 10 }
        );
        assert_eq!(
            decide(
                Known::Live(Status::Up, S, Silence::Heard),
                hb(ProxyStatus::Ready),
                new,
                true
            ),
            Decision::NewLife
        );
        assert_eq!(
            decide(
                Known::Live(Status::Lost, S, Silence::Gone),
                hb(ProxyStatus::Up),
                new,
                true
            ),
            Decision::Restart
        );
    }

    #[test]
    fn a_new_process_with_a_clock_behind_its_dead_lifes_takes_the_identity_once_that_life_is_silent()
     {
        let behind = Stamp {
            incarnation: 9,
            seq: 1,
        };
        let ready = hb(ProxyStatus::Ready);
        // The registered life (10) is heard: the smaller incarnation is an older process.
        assert_eq!(
            decide(
                Known::Live(Status::Up, S, Silence::Heard),
                ready,
                behind,
                true
            ),
            Decision::Superseded { winner: 10 }
        );
        // Quiet: kept trying, not told to stop, nothing changed.
        assert_eq!(
            decide(
                Known::Live(Status::Up, S, Silence::Quiet),
                ready,
                behind,
                true
            ),
            Decision::Challenge
        );
        // Silent for lost_after: the new process takes the identity.
        assert_eq!(
            decide(
                Known::Live(Status::Lost, S, Silence::Gone),
                ready,
                behind,
                true
            ),
            Decision::NewLife
        );
        assert_eq!(
            decide(
                Known::Live(Status::Up, S, Silence::Gone),
                hb(ProxyStatus::Up),
                behind,
                true
            ),
            Decision::Restart
        );
        assert_eq!(
            decide(
                Known::Live(Status::Lost, S, Silence::Gone),
                Said::Unregister,
                behind,
                true
            ),
            Decision::AlreadyGone
        );
        // Deleted: it registers with a token minted after the deletion.
        assert_eq!(
            decide(Known::Tombstone(S, true), ready, behind, true),
            Decision::Register
        );
        // The deleted life's own duplicates are still dropped silently.
        assert_eq!(
            decide(Known::Tombstone(S, true), ready, later(5), true),
            Decision::Stale
        );
    }
}
