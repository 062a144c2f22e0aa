//! Datagrams from proxies: authentication, identity, ordering and freshness, then the
//! transition they cause (decided and applied in `transition`), restarts and config reads.

use std::net::SocketAddr;

use tracing::{info, warn};

use crate::auth::KeyIndex;
use crate::identity::{validate_cluster, validate_proxy};
use crate::keeper::answer::{Answer, Reply, chunk_header};
use crate::keeper::registry::{ClusterId, RestartRound};
use crate::keeper::token::{Freshness, TokenMinter};
use crate::keeper::transition::{self, Decision, Known, Said, Silence, Stamp};
use crate::keeper::{ChangeKind, DropReason, Keeper, Outcome};
use crate::time::Instant;
use crate::wire::{self, ConfigId, ConfigRequest, Heartbeat, Message, Version};

/// Where a request came from, how it was sent, and how large it was.
#[derive(Clone, Copy, Debug)]
struct To {
    from: SocketAddr,
    key: KeyIndex,
    budget: usize,
    version: Version,
    /// The config id its trailer names (version 2).
    config: ConfigId,
    /// Ack it whatever else holds.
    must_ack: bool,
}

impl To {
    fn reply(self, stamp: Stamp) -> Reply {
        Reply {
            to: self.from,
            key: self.key,
            version: self.version,
            budget: self.budget,
            stamp,
            config: self.config,
            must_ack: self.must_ack,
        }
    }
}

/// What the keeper knows of the identity a heartbeat names.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lookup {
    pub(crate) cluster: Option<ClusterId>,
    pub(crate) slot: Option<u32>,
    pub(crate) known: Known,
}

impl Keeper {
    pub(crate) fn accept(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<Outcome, DropReason> {
        let header = wire::parse_header(datagram)?;
        if !header.kind.is_from_proxy() {
            return Err(DropReason::UnexpectedKind);
        }
        let (key, secret) = self
            .keys
            .lookup(header.key_id)
            .ok_or(DropReason::UnknownKey)?;
        wire::authenticate(header, datagram, secret)?;
        let message = wire::decode_body(header, datagram)?;
        let trailer = wire::decode_trailer(header, datagram)?;
        self.check_term(trailer.term)?;
        let to = To {
            from,
            key,
            budget: datagram.len(),
            version: header.version,
            config: trailer.config,
            must_ack: false,
        };
        match message {
            Message::Heartbeat(hb) => self.on_hello(now, to, &hb, Said::Heartbeat(hb.status)),
            Message::ConfigReject(reject) if header.version == Version::V2 => {
                self.on_reject(now, to, &reject)
            }
            Message::Unregister(hb) => self.on_hello(now, to, &hb, Said::Unregister),
            Message::ConfigRequest(req) => self.on_config_request(now, to, &req),
            // `is_from_proxy` was checked above; the other kinds never reach here.
            _ => Err(DropReason::UnexpectedKind),
        }
    }

    /// Checks the term a request echoes against this keeper's (`docs/PROTOCOL.md` §17.2).
    fn check_term(&mut self, echoed: u64) -> Result<(), DropReason> {
        if echoed <= self.terms.current {
            return Ok(());
        }
        if !self.terms.fenced {
            info!(
                from = self.terms.current,
                to = echoed,
                "a proxy has heard a newer leadership term: answering under it"
            );
            self.terms.current = echoed;
            return Ok(());
        }
        if echoed > self.terms.newer {
            warn!(
                term = self.terms.current,
                echoed,
                "a proxy echoes a newer leadership term than this leader's: acting on nothing it sends"
            );
            self.terms.newer = echoed;
        }
        Err(DropReason::NewerTerm)
    }

    fn authorize(&self, key: KeyIndex, cluster: &str) -> Result<(), DropReason> {
        if self.keys.authorizes(key, cluster) {
            Ok(())
        } else {
            Err(DropReason::WrongKey)
        }
    }

    /// Finds what is known of the heartbeat's identity, validating it unless the slot it
    /// echoes already holds it (the hot path: an identity registered, so validated then).
    fn lookup(&self, key: KeyIndex, hb: &Heartbeat<'_>) -> Result<Lookup, DropReason> {
        let cluster = self.registry.cluster_id(hb.cluster);
        let hinted = cluster.and_then(|c| self.registry.hinted(c, hb.proxy, hb.slot));
        if hinted.is_none() {
            validate_identity(hb.cluster, hb.proxy)?;
        }
        self.authorize(key, hb.cluster)?;
        let slot = hinted.or_else(|| cluster.and_then(|c| self.registry.find(c, hb.proxy, 0)));
        let known = match (cluster, slot.and_then(|s| self.registry.get(s))) {
            // Silence is judged by the caller, which notes the contender first.
            (_, Some(record)) => Known::Live(record.status, record.stamp, Silence::Heard),
            (Some(c), None) => match self.registry.tombstone(c, hb.proxy) {
                Some(t) => Known::Tombstone(t.stamp, self.tokens.minted_after(&hb.token, t.made)),
                None => Known::Nothing,
            },
            (None, None) => Known::Nothing,
        };
        Ok(Lookup {
            cluster,
            slot,
            known,
        })
    }

    /// For a datagram of a smaller incarnation than the record in `slot`'s: whether the
    /// registered life was heard since that process first claimed the identity (two live
    /// processes: the registered one keeps it), is quiet, or has been silent for
    /// `lost_after` (the new process takes the identity).
    ///
    /// A registered life gone silent is only given up to a datagram whose token was minted
    /// after that life was last heard: a process this keeper answered since. A replayed
    /// or delayed datagram of an earlier life (a smaller incarnation, its token still
    /// within its validity) cannot have one, so it finds the life quiet and is
    /// challenged, as against a tombstone; a live contender answers the challenge with a
    /// token minted now and takes the identity on its next datagram.
    fn silence(&mut self, slot: u32, hb: &Heartbeat<'_>, now: Instant) -> Silence {
        let first_heard = self.registry.contend(slot, hb.incarnation, now);
        let Some(record) = self.registry.get(slot) else {
            return Silence::Gone;
        };
        if now - record.last_heard >= self.config.lost_after {
            if self.tokens.minted_after(&hb.token, record.last_heard) {
                Silence::Gone
            } else {
                Silence::Quiet
            }
        } else if record.last_heard >= first_heard {
            Silence::Heard
        } else {
            Silence::Quiet
        }
    }

    /// Whether the heartbeat's token counts; notices a token from a newer keeper epoch
    /// than this one (the store went back in time) once per newer epoch.
    fn freshness(&mut self, hb: &Heartbeat<'_>, now: Instant, from: SocketAddr) -> Freshness {
        let epoch = TokenMinter::epoch_of(&hb.token);
        if epoch > self.tokens.epoch() && epoch > self.stream.seen_epoch {
            self.stream.seen_epoch = epoch;
            self.record(ChangeKind::Rewound { seen_epoch: epoch });
            // The store is older than the fleet: the proxies it does not know are live
            // ones, to adopt, not to restart.
            self.adopt_from(now);
        }
        self.tokens.check(&hb.token, now, from)
    }

    /// A `ConfigReject`: a heartbeat (acked always), then the rejection, recorded against
    /// the cluster's current config if that is the config rejected and the record holds
    /// the rejecting incarnation.
    fn on_reject(
        &mut self,
        now: Instant,
        to: To,
        reject: &wire::ConfigReject<'_>,
    ) -> Result<Outcome, DropReason> {
        let hb = &reject.heartbeat;
        if hb.status == wire::ProxyStatus::Down {
            return Err(DropReason::UnexpectedKind);
        }
        let to = To {
            must_ack: true,
            ..to
        };
        let outcome = self.on_hello(now, to, hb, Said::Heartbeat(hb.status))?;
        self.note_rejection(hb, reject.rejected, reject.reason);
        Ok(outcome)
    }

    fn note_rejection(&mut self, hb: &Heartbeat<'_>, rejected: ConfigId, reason: &str) {
        let Some(cluster) = self.registry.cluster_id(hb.cluster) else {
            return;
        };
        let Some(slot) = self.registry.find(cluster, hb.proxy, hb.slot) else {
            return;
        };
        let Some(record) = self.registry.get(slot) else {
            return;
        };
        let c = self.registry.cluster(cluster);
        if record.stamp.incarnation != hb.incarnation || c.config.id != rejected {
            return;
        }
        if c.rejections
            .get(&slot)
            .is_some_and(|r| r.incarnation == hb.incarnation && *r.reason == *reason)
        {
            return;
        }
        let change = ChangeKind::Rejected {
            cluster: c.name.clone(),
            proxy: hb.proxy.into(),
            slot,
            incarnation: hb.incarnation,
            config_version: c.config.version,
            reason: reason.into(),
        };
        let rejection = super::registry::Rejection {
            incarnation: hb.incarnation,
            config: rejected,
            reason: reason.into(),
        };
        info!(
            cluster = hb.cluster,
            proxy = hb.proxy,
            version = c.config.version,
            reason,
            "a proxy rejected its cluster's config"
        );
        self.registry
            .cluster_mut(cluster)
            .rejections
            .insert(slot, rejection);
        self.record(change);
    }

    /// A heartbeat or an unregister.
    fn on_hello(
        &mut self,
        now: Instant,
        to: To,
        hb: &Heartbeat<'_>,
        said: Said,
    ) -> Result<Outcome, DropReason> {
        let stamp = Stamp {
            incarnation: hb.incarnation,
            seq: hb.seq,
        };
        let mut lookup = self.lookup(to.key, hb)?;
        if let (Known::Live(status, last, _), Some(slot)) = (lookup.known, lookup.slot)
            && stamp.incarnation < last.incarnation
        {
            lookup.known = Known::Live(status, last, self.silence(slot, hb, now));
        }
        let freshness = self.freshness(hb, now, to.from);
        let decision = transition::decide(lookup.known, said, stamp, freshness != Freshness::Stale);
        #[cfg(feature = "test-hooks")]
        let decision = self.break_rule(decision, lookup.known, said);
        let reply = to.reply(stamp);
        let from = to.from;
        if let Some(cluster) = lookup.cluster
            && lookup.slot.is_none()
            && let Some(marker) = self.removed_marker(cluster, hb.proxy)
        {
            let removed = stamp.incarnation <= marker;
            match decision {
                Decision::Register | Decision::Restart | Decision::Adopt if removed => {
                    return self.leave(now, reply, hb, cluster);
                }
                // The agent's acknowledgement of its `Leave` (answered as any unregister
                // of a process gone), or a later life registering: the marker has done
                // its work.
                Decision::AlreadyGone | Decision::Register | Decision::Adopt => {
                    self.clear_removed(cluster, hb.proxy);
                }
                _ => {}
            }
        }
        match decision {
            Decision::Stale => Err(DropReason::Stale),
            Decision::Regression => Err(DropReason::Regression),
            Decision::Challenge => self.challenge(reply, now),
            Decision::Superseded { winner } => {
                self.answer(reply, Answer::Superseded { stamp, winner });
                self.record(ChangeKind::Superseded {
                    cluster: hb.cluster.into(),
                    proxy: hb.proxy.into(),
                    loser: stamp.incarnation,
                    winner,
                    to: from,
                });
                Ok(Outcome::Superseded)
            }
            // A keeper that does not know its fleet yet adopts an unknown `up` proxy (one
            // it never deleted: that one has a tombstone and is restarted, as always).
            Decision::Restart if lookup.known == Known::Nothing && self.adopting(now) => {
                self.apply(Decision::Adopt, lookup, now, reply, hb, freshness)
            }
            Decision::Restart => self.restart(now, reply, hb),
            decision => self.apply(decision, lookup, now, reply, hb, freshness),
        }
    }

    #[cfg(feature = "test-hooks")]
    fn break_rule(&self, decision: Decision, known: Known, said: Said) -> Decision {
        use crate::keeper::{BrokenRule, Status};
        if self.broken == Some(BrokenRule::StaleReadyOverwritesUp)
            && matches!(decision, Decision::Stale | Decision::Regression)
            && said == Said::Heartbeat(wire::ProxyStatus::Ready)
            && matches!(known, Known::Live(Status::Up | Status::Lost, ..))
        {
            return Decision::Transition {
                to: crate::keeper::Status::Ready,
            };
        }
        decision
    }

    /// Answers a heartbeat of a process an operator removed (or of an earlier life of it)
    /// with `Leave` (`Superseded` to a protocol version 1 agent, which has no `Leave`), at
    /// most once per interval per identity, as `Restart` is.
    fn leave(
        &mut self,
        now: Instant,
        reply: Reply,
        hb: &Heartbeat<'_>,
        cluster: ClusterId,
    ) -> Result<Outcome, DropReason> {
        let interval = self.config.heartbeat_interval;
        let Some(stone) = self.tombstone(cluster, hb.proxy, now) else {
            return Err(DropReason::RegistryFull);
        };
        stone.stamp = stone.stamp.max(reply.stamp);
        if stone.last_restart.is_some_and(|at| now < at + interval) {
            return Err(DropReason::LeaveSuppressed);
        }
        stone.last_restart = Some(now);
        let answer = match reply.version {
            wire::Version::V2 => Answer::Leave { stamp: reply.stamp },
            // No newer process holds the identity: `winner` 0 says none does.
            wire::Version::V1 => Answer::Superseded {
                stamp: reply.stamp,
                winner: 0,
            },
        };
        self.answer(reply, answer);
        self.record(ChangeKind::LeaveSent {
            cluster: hb.cluster.into(),
            proxy: hb.proxy.into(),
            incarnation: reply.stamp.incarnation,
            to: reply.to,
        });
        Ok(Outcome::Left)
    }

    /// Answers an `up` from a process the registry does not hold with `Restart`, within
    /// the identity's limit (one per interval) and its cluster's restart budget.
    fn restart(
        &mut self,
        now: Instant,
        reply: Reply,
        hb: &Heartbeat<'_>,
    ) -> Result<Outcome, DropReason> {
        let cluster = self
            .cluster_for(hb.cluster)
            .ok_or(DropReason::RegistryFull)?;
        if self.registry.cluster(cluster).settings.frozen {
            // Nothing in the cluster just made for it (it had none) holds it.
            self.release_cluster(cluster);
            return Err(DropReason::RestartFrozen);
        }
        // The tombstone remembers the last Restart; with no room for one, no Restart is
        // sent (the proxy keeps asking).
        let Some(stone) = self.tombstone(cluster, hb.proxy, now) else {
            // Nothing may hold the cluster just made for it.
            self.release_cluster(cluster);
            return Err(DropReason::RegistryFull);
        };
        stone.stamp = stone.stamp.max(reply.stamp);
        let last_restart = stone.last_restart;
        if last_restart.is_some_and(|at| now < at + self.config.heartbeat_interval) {
            return Err(DropReason::RestartSuppressed);
        }
        self.spend_restart(cluster, hb.cluster, last_restart, now)?;
        if let Some(stone) = self.registry.tombstone_mut(cluster, hb.proxy) {
            stone.last_restart = Some(now);
        }
        self.answer(reply, Answer::Restart { stamp: reply.stamp });
        self.record(ChangeKind::RestartSent {
            cluster: hb.cluster.into(),
            proxy: hb.proxy.into(),
            incarnation: reply.stamp.incarnation,
            to: reply.to,
        });
        Ok(Outcome::Restarted)
    }

    /// Takes one `Restart` from the budget of `cluster` (named `name`) for an identity
    /// last sent one at `last_restart`; `Err(RestartDeferred)` if this round's is spent.
    ///
    /// A round begins with its first `Restart` and lasts `restart_round`; in it, at most
    /// [`KeeperConfig::restart_allowance`](crate::keeper::KeeperConfig::restart_allowance) identities of the cluster are sent one, so no
    /// single event (a partition healing after everyone was deleted, a keeper that lost
    /// its tombstones) restarts a whole cluster at once. An identity sent a `Restart`
    /// earlier in the round (its answer was lost, or it has not restarted yet) is sent
    /// another without spending: it is the same restart.
    fn spend_restart(
        &mut self,
        cluster: ClusterId,
        name: &str,
        last_restart: Option<Instant>,
        now: Instant,
    ) -> Result<(), DropReason> {
        let round = self.config.restart_round();
        let size = self.registry.cluster_size(cluster);
        let allowance = self.config.restart_allowance(size);
        let c = self.registry.cluster_mut(cluster);
        let current = match c.restarts {
            Some(r) if now < r.began + round => c.restarts.insert(r),
            _ => c.restarts.insert(RestartRound {
                began: now,
                sent: 0,
                deferred: 0,
            }),
        };
        if last_restart.is_some_and(|at| at >= current.began) {
            return Ok(());
        }
        if current.sent >= allowance {
            current.deferred += 1;
            if current.deferred == 1 {
                warn!(
                    cluster = name,
                    sent = current.sent,
                    allowance,
                    size,
                    round = ?round,
                    "restart budget spent for this round: more proxies of the cluster ask to be restarted, and wait for the next round"
                );
            }
            return Err(DropReason::RestartDeferred);
        }
        current.sent += 1;
        Ok(())
    }

    fn on_config_request(
        &mut self,
        now: Instant,
        to: To,
        req: &ConfigRequest<'_>,
    ) -> Result<Outcome, DropReason> {
        validate_identity(req.cluster, req.proxy)?;
        self.authorize(to.key, req.cluster)?;
        let budget = to.budget;
        let cluster = self
            .registry
            .cluster_id(req.cluster)
            .ok_or(DropReason::NotRegistered)?;
        let slot = self
            .registry
            .find(cluster, req.proxy, req.slot)
            .ok_or(DropReason::NotRegistered)?;
        let record = self.registry.get(slot).ok_or(DropReason::NotRegistered)?;
        if record.stamp.incarnation != req.incarnation {
            return Err(DropReason::NotRegistered);
        }
        if to.version == Version::V1 && self.config.refuse_plaintext_configs {
            return Err(DropReason::PlaintextRefused);
        }
        let stamp = Stamp {
            incarnation: req.incarnation,
            seq: req.seq,
        };
        let reply = to.reply(stamp);
        if self.tokens.check(&req.token, now, to.from) == Freshness::Stale {
            return self.challenge(reply, now);
        }
        // Config requests are idempotent reads: they are not ordered against heartbeats
        // (a window of them is in flight at once), and each is answered within its own
        // size, so a replay can neither change state nor amplify.
        let config = self.registry.cluster(cluster).config.clone();
        // The same version as asked (version 2 names it by id): serve from the index
        // asked; another (the cluster's changed): from its first chunk.
        let same = match to.version {
            Version::V1 => req.version == config.version,
            Version::V2 => to.config == config.id,
        };
        let first = if same { req.first_index } else { 0 };
        let mut used = 0;
        let mut served = 0;
        for index in first..first.saturating_add(req.count.min(64)) {
            let Some(bytes) = config.chunk(index) else {
                break;
            };
            let len = wire::config_chunk_len(
                to.version,
                &chunk_header(stamp, &config, index),
                bytes.len(),
            );
            if used + len > budget {
                break;
            }
            used += len;
            served += 1;
            let chunk = Answer::Chunk {
                stamp,
                cluster: self.registry.cluster(cluster).name.clone(),
                config: config.clone(),
                index,
            };
            self.pending.push_back(reply.within(len, chunk));
        }
        if served == 0 {
            return Err(DropReason::BadRequest);
        }
        Ok(match to.version {
            Version::V1 => Outcome::ConfigServedPlaintext,
            Version::V2 => Outcome::ConfigServed,
        })
    }
}

pub(crate) fn validate_identity(cluster: &str, proxy: &str) -> Result<(), DropReason> {
    validate_cluster(cluster).map_err(|_| DropReason::InvalidIdentity)?;
    validate_proxy(proxy).map_err(|_| DropReason::InvalidIdentity)
}
