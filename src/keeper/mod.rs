//! The keeper core: a deterministic, sans-IO state machine.
//!
//! [`Keeper`] holds the registry of clusters and proxies, applies the transitions of
//! `spec/scenario.md` (see [`transition`]), runs the timers (see `timers`), guards
//! cluster-wide operations with the gate, and serves config versions. It reads no clock,
//! does no I/O, spawns nothing and uses no randomness it was not handed.
//!
//! # Methods, in four kinds (as quinn-proto's `Connection`)
//!
//! - **input**: [`Keeper::handle_datagram`] and [`Keeper::handle_timeout`];
//! - **mutators**: the admin calls [`Keeper::remove_proxy`], [`Keeper::push_config`] and
//!   [`Keeper::switch_datasource`], each of which checks and acts in one step;
//! - **output**: [`Keeper::poll_transmit`], [`Keeper::poll_event`],
//!   [`Keeper::poll_timeout`];
//! - **getters**: [`Keeper::gate`], [`Keeper::listing`], [`Keeper::proxies`],
//!   [`Keeper::clusters`], [`Keeper::stats`].
//!
//! # The driver loop
//!
//! After every input or mutator call, drain the output: call `poll_transmit` until it
//! returns `None` and send each datagram, call `poll_event` until `None`, then sleep
//! until `poll_timeout` (or until a datagram arrives) and call `handle_timeout` when it
//! passes. `now` never goes backwards; if a driver passes an earlier `now`, the core
//! acts on the latest one it has seen.
//!
//! # Panics
//!
//! No input panics: every datagram, however malformed, is counted in [`Stats`] and
//! dropped or answered. A panic is a bug in the core.

mod admin;
pub mod change;
mod event;
mod mass_loss;
mod persist;
mod registry;
pub mod seen;
mod timers;
mod token;
pub mod transition;

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tracing::debug;

use crate::auth::{Key, KeyIndex, Keyring};
use crate::configdoc::ConfigVersion;
use crate::identity::{validate_cluster, validate_proxy};
use crate::time::{Clock, Instant};
use crate::wire::{self, AckStatus, ConfigRequest, Heartbeat, MAX_TIMING_MS, Message, Token};

pub use admin::{AdminError, Blocker, ClusterInfo, GateClosed, ProxyInfo};
pub use event::{ConfigCause, DropReason, Event, Outcome, Stats, StatusChange};
pub use persist::{AdminAction, Persist, RestoreError, Restored, RestoredConfig, RestoredProxy};
pub use transition::Reason;

use registry::{ClusterId, Record, Registry, Tombstone};
use timers::{DeadlineQueue, TimerKind, Timers};
use token::{Freshness, TokenMinter};
use transition::{Decision, Known, Said, Stamp};

/// A proxy's status in the registry. A proxy that is not in the registry has none.
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Registered, not yet serving.
    Ready,
    /// Serving, and heard from within `lost_after`.
    Up,
    /// Was `up`, and nothing heard for `lost_after`.
    Lost,
}

impl Status {
    /// `ready`, `up` or `lost`, as in the seed's listing.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "ready",
            Status::Up => "up",
            Status::Lost => "lost",
        }
    }

    /// The status named `name`.
    pub fn parse(name: &str) -> Option<Status> {
        match name {
            "ready" => Some(Status::Ready),
            "up" => Some(Status::Up),
            "lost" => Some(Status::Lost),
            _ => None,
        }
    }

    fn timer(self) -> TimerKind {
        match self {
            Status::Ready => TimerKind::Ready,
            Status::Up => TimerKind::Lost,
            Status::Lost => TimerKind::Delete,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The keeper's timing and limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeeperConfig {
    /// How often proxies send heartbeats (told to them in every `Ack`).
    pub heartbeat_interval: Duration,
    /// An `up` proxy heard nothing from for this long becomes `lost`.
    pub lost_after: Duration,
    /// A `ready` proxy heard nothing from for this long is deleted.
    pub ready_timeout: Duration,
    /// A `lost` proxy heard nothing from for this long (counted from its last accepted
    /// heartbeat) is deleted. Also how long a tombstone is kept.
    pub delete_after: Duration,
    /// Most proxies held at once; registrations beyond it are dropped and counted.
    pub max_proxies: usize,
    /// Most clusters held at once.
    pub max_clusters: usize,
    /// Mass-loss protection: deletion of a cluster's lost proxies pauses while more than
    /// this share of them, in thousandths, is lost (550: 55 %).
    pub mass_loss_permille: u32,
    /// Mass-loss protection applies to clusters of at least this many proxies.
    pub mass_loss_min_proxies: usize,
}

impl Default for KeeperConfig {
    /// The defaults of DESIGN.md: 1 s heartbeats, `lost` after 3 s, 60 s ready timeout,
    /// 60 s before a lost proxy is deleted.
    fn default() -> Self {
        KeeperConfig {
            heartbeat_interval: Duration::from_secs(1),
            lost_after: Duration::from_secs(3),
            ready_timeout: Duration::from_secs(60),
            delete_after: Duration::from_secs(60),
            max_proxies: 2_000_000,
            max_clusters: 10_000,
            mass_loss_permille: 550,
            mass_loss_min_proxies: 3,
        }
    }
}

/// Why a [`KeeperConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeeperConfigError {
    /// The heartbeat interval is below 1 ms or above the protocol's limit.
    #[error("heartbeat interval must be from 1ms to {MAX_TIMING_MS}ms")]
    Interval,
    /// `lost_after` is not longer than the interval or is above the protocol's limit.
    #[error("lost_after must be longer than the heartbeat interval and at most {MAX_TIMING_MS}ms")]
    LostAfter,
    /// `ready_timeout` is not longer than the interval.
    #[error("ready_timeout must be longer than the heartbeat interval")]
    ReadyTimeout,
    /// `delete_after` is shorter than `lost_after` plus one interval.
    #[error("delete_after must be at least lost_after plus one heartbeat interval")]
    DeleteAfter,
    /// A limit is zero.
    #[error("max_proxies and max_clusters must be at least 1")]
    Limits,
    /// The mass-loss share is above 100 %.
    #[error("the mass-loss share must be from 0 to 1")]
    MassLoss,
}

impl KeeperConfig {
    /// Checks the timing rules the protocol relies on.
    pub fn validate(&self) -> Result<(), KeeperConfigError> {
        let max = Duration::from_millis(u64::from(MAX_TIMING_MS));
        if self.heartbeat_interval < Duration::from_millis(1) || self.heartbeat_interval > max {
            return Err(KeeperConfigError::Interval);
        }
        if self.lost_after <= self.heartbeat_interval || self.lost_after > max {
            return Err(KeeperConfigError::LostAfter);
        }
        if self.ready_timeout <= self.heartbeat_interval {
            return Err(KeeperConfigError::ReadyTimeout);
        }
        // Tombstones live `delete_after`; tokens are valid for `lost_after` (rounded up to
        // a bucket of half an interval). A tombstone must outlive every token its proxy
        // could have held, or a replay could slip between the two.
        if self.delete_after < self.lost_after + self.heartbeat_interval {
            return Err(KeeperConfigError::DeleteAfter);
        }
        if self.max_proxies == 0 || self.max_clusters == 0 {
            return Err(KeeperConfigError::Limits);
        }
        if self.mass_loss_permille > 1000 {
            return Err(KeeperConfigError::MassLoss);
        }
        Ok(())
    }

    fn timeout(&self, status: Status) -> Duration {
        match status {
            Status::Ready => self.ready_timeout,
            Status::Up => self.lost_after,
            Status::Lost => self.delete_after,
        }
    }

    fn millis(d: Duration) -> u32 {
        u32::try_from(d.as_millis())
            .unwrap_or(u32::MAX)
            .min(MAX_TIMING_MS)
    }
}

/// A rule a test may break on purpose, to show that its checkers notice.
///
/// Never set in production: the only way in is [`Keeper::break_rule_for_testing`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BrokenRule {
    /// A delayed or duplicated `ready` heartbeat of an `up` or `lost` proxy moves it back
    /// to `ready` (the ordering check is skipped for it).
    StaleReadyOverwritesUp,
}

/// A datagram to send: `len` bytes of the buffer given to [`Keeper::poll_transmit`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Transmit {
    /// Where to send it: always the source of the datagram it answers.
    pub destination: SocketAddr,
    /// How many bytes of the buffer to send.
    pub len: usize,
}

/// An answer waiting to be encoded. Encoding happens in `poll_transmit`, into the
/// driver's buffer, so answering allocates nothing.
#[derive(Debug)]
struct Pending {
    to: SocketAddr,
    key: KeyIndex,
    /// The size of the datagram answered: the answer may not be larger.
    budget: usize,
    answer: Answer,
}

#[derive(Debug)]
enum Answer {
    Ack {
        stamp: Stamp,
        status: AckStatus,
        config_version: u64,
        slot: u32,
        token: Token,
    },
    Challenge {
        stamp: Stamp,
        token: Token,
    },
    Restart {
        stamp: Stamp,
    },
    Superseded {
        stamp: Stamp,
        winner: u64,
    },
    Chunk {
        stamp: Stamp,
        config: Arc<ConfigVersion>,
        index: u32,
    },
}

/// The keeper state machine. See the [module documentation](self).
#[derive(Debug)]
pub struct Keeper {
    config: KeeperConfig,
    keys: Keyring,
    tokens: TokenMinter,
    clock: Clock,
    registry: Registry,
    timers: Timers,
    tombstone_timers: DeadlineQueue<(ClusterId, Box<str>)>,
    pending: VecDeque<Pending>,
    events: VecDeque<Event>,
    stats: Stats,
    broken: Option<BrokenRule>,
    durability: Option<persist::Durability>,
}

impl Keeper {
    /// A keeper with an empty registry.
    ///
    /// `epoch` is the keeper's boot counter (it must differ on every start, so tokens of
    /// an earlier run are stale); `token_secret` is random bytes the driver draws at start.
    pub fn new(
        config: KeeperConfig,
        keys: Keyring,
        epoch: u32,
        token_secret: [u8; 32],
        now: Instant,
    ) -> Result<Keeper, KeeperConfigError> {
        config.validate()?;
        // 32 bytes is always a valid key length.
        let secret = Key::new(&token_secret).expect("a 32-byte secret is a valid key");
        let granularity = (config.heartbeat_interval / 2).max(Duration::from_millis(1));
        let tokens = TokenMinter::new(epoch, secret, granularity, config.lost_after);
        let mut clock = Clock::default();
        clock.advance(now);
        Ok(Keeper {
            config,
            keys,
            tokens,
            clock,
            registry: Registry::default(),
            timers: Timers::default(),
            tombstone_timers: DeadlineQueue::default(),
            pending: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            broken: None,
            durability: None,
        })
    }

    /// Breaks one rule of the transition table on purpose, so a test can show that its
    /// invariant checks catch a faulty keeper. Nothing else calls it.
    #[doc(hidden)]
    pub fn break_rule_for_testing(&mut self, rule: BrokenRule) {
        self.broken = Some(rule);
    }

    /// The keeper's timing and limits.
    pub fn config(&self) -> &KeeperConfig {
        &self.config
    }

    /// Counters of everything read and done.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Handles one datagram received from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let now = self.clock.advance(now);
        self.stats.received += 1;
        match self.accept(now, from, datagram) {
            Ok(outcome) => self.stats.outcomes[outcome as usize] += 1,
            Err(reason) => {
                self.stats.dropped[reason as usize] += 1;
                debug!(%from, len = datagram.len(), reason = reason.as_str(), "datagram dropped");
            }
        }
    }

    fn accept(
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
        wire::authenticate(datagram, secret)?;
        let budget = datagram.len();
        match wire::decode_body(header, datagram)? {
            Message::Heartbeat(hb) => {
                self.on_hello(now, from, key, budget, &hb, Said::Heartbeat(hb.status))
            }
            Message::Unregister(hb) => self.on_hello(now, from, key, budget, &hb, Said::Unregister),
            Message::ConfigRequest(req) => self.on_config_request(now, from, key, budget, &req),
            // `is_from_proxy` was checked above; the other kinds never reach here.
            _ => Err(DropReason::UnexpectedKind),
        }
    }

    fn check_identity(&self, key: KeyIndex, cluster: &str, proxy: &str) -> Result<(), DropReason> {
        validate_identity(cluster, proxy)?;
        self.authorize(key, cluster)
    }

    fn authorize(&self, key: KeyIndex, cluster: &str) -> Result<(), DropReason> {
        if self.keys.authorizes(key, cluster) {
            Ok(())
        } else {
            Err(DropReason::WrongKey)
        }
    }

    /// A heartbeat or an unregister.
    fn on_hello(
        &mut self,
        now: Instant,
        from: SocketAddr,
        key: KeyIndex,
        budget: usize,
        hb: &Heartbeat<'_>,
        said: Said,
    ) -> Result<Outcome, DropReason> {
        let stamp = Stamp {
            incarnation: hb.incarnation,
            seq: hb.seq,
        };
        let cluster = self.registry.cluster_id(hb.cluster);
        // The hot path: the slot the proxy echoes holds its record, so its identity is one
        // the keeper registered, validated then. Anything else is validated now.
        let hinted = cluster.and_then(|c| self.registry.hinted(c, hb.proxy, hb.slot));
        if hinted.is_none() {
            validate_identity(hb.cluster, hb.proxy)?;
        }
        self.authorize(key, hb.cluster)?;
        let slot = hinted.or_else(|| cluster.and_then(|c| self.registry.find(c, hb.proxy, 0)));
        let known = match (cluster, slot.and_then(|s| self.registry.get(s))) {
            (_, Some(record)) => Known::Live(record.status, record.stamp),
            (Some(c), None) => match self.registry.tombstone(c, hb.proxy) {
                Some(t) => Known::Tombstone(t.stamp),
                None => Known::Nothing,
            },
            (None, None) => Known::Nothing,
        };
        let freshness = self.tokens.check(&hb.token, now);
        let mut decision = transition::decide(known, said, stamp, freshness != Freshness::Stale);
        if self.broken == Some(BrokenRule::StaleReadyOverwritesUp)
            && matches!(decision, Decision::Stale | Decision::Regression)
            && said == Said::Heartbeat(wire::ProxyStatus::Ready)
            && matches!(known, Known::Live(Status::Up | Status::Lost, _))
        {
            decision = Decision::Transition { to: Status::Ready };
        }
        let reply = Reply {
            to: from,
            key,
            budget,
            stamp,
        };
        match (decision, slot) {
            (Decision::Stale, _) => Err(DropReason::Stale),
            (Decision::Regression, _) => Err(DropReason::Regression),
            (Decision::Challenge, _) => {
                let token = self.tokens.mint(now);
                self.answer(reply, Answer::Challenge { stamp, token });
                Ok(Outcome::Challenged)
            }
            (Decision::Superseded { winner }, _) => {
                self.answer(reply, Answer::Superseded { stamp, winner });
                self.events.push_back(Event::Superseded {
                    cluster: Arc::from(hb.cluster),
                    proxy: hb.proxy.to_owned(),
                    loser: stamp.incarnation,
                    winner,
                    to: from,
                });
                Ok(Outcome::Superseded)
            }
            (Decision::Register, _) => self.register(now, reply, hb),
            (Decision::NewLife, Some(slot)) => {
                self.touch(slot, now, reply, hb.config_version);
                let record = self
                    .registry
                    .get_mut(slot)
                    .expect("the slot was just found");
                let old = record.status;
                record.since = now;
                self.registry.set_status(slot, Status::Ready, now);
                self.rearm(slot, now);
                self.forget_tombstone(hb.cluster, hb.proxy);
                self.status_changed(slot, Some(old), Reason::NewIncarnation, now);
                self.ack_registration(reply, slot, now);
                Ok(Outcome::NewIncarnation)
            }
            (Decision::Refresh, Some(slot)) => {
                self.touch(slot, now, reply, hb.config_version);
                self.rearm(slot, now);
                let record = self.registry.get(slot).expect("the slot was just found");
                let status = record.status;
                let config_current =
                    self.registry.cluster(record.cluster).config.version == hb.config_version;
                let token_aging = match freshness {
                    Freshness::Fresh { age_buckets } => {
                        age_buckets * 2 >= self.tokens.max_age_buckets()
                    }
                    Freshness::Stale => true,
                };
                // Acks are due at once for any change, for every `ready` heartbeat (the
                // proxy is waiting for one), and often enough to keep tokens fresh; a
                // steady `up` heartbeat with a young token needs none.
                if status == Status::Ready || token_aging || !config_current || hb.slot != slot {
                    self.ack(reply, slot, ack_status(status), now);
                }
                Ok(Outcome::Refreshed)
            }
            (Decision::Transition { to }, Some(slot)) => {
                self.touch(slot, now, reply, hb.config_version);
                let from_status = self.registry.set_status(slot, to, now);
                self.rearm(slot, now);
                self.status_changed(slot, from_status, Reason::Heartbeat, now);
                self.ack(reply, slot, ack_status(to), now);
                Ok(Outcome::Transitioned)
            }
            (Decision::Delete { reason }, Some(slot)) => {
                // The deleting datagram is the last one accepted: its stamp goes in the
                // tombstone, so its own retransmissions are stale.
                if let Some(record) = self.registry.get_mut(slot) {
                    record.stamp = stamp;
                }
                self.delete(slot, reason, now);
                let gone = self.gone(stamp, now);
                self.answer(reply, gone);
                Ok(Outcome::Deleted)
            }
            (Decision::AlreadyGone, _) => {
                if let Some(c) = cluster
                    && let Some(t) = self.registry.tombstone_mut(c, hb.proxy)
                {
                    t.stamp = t.stamp.max(stamp);
                }
                let gone = self.gone(stamp, now);
                self.answer(reply, gone);
                Ok(Outcome::AlreadyGone)
            }
            (Decision::Restart, _) => self.restart(now, reply, hb),
            // `decide` returns these only for `Known::Live`, which implies a slot.
            (
                Decision::NewLife
                | Decision::Refresh
                | Decision::Transition { .. }
                | Decision::Delete { .. },
                None,
            ) => Err(DropReason::Stale),
        }
    }

    fn register(
        &mut self,
        now: Instant,
        reply: Reply,
        hb: &Heartbeat<'_>,
    ) -> Result<Outcome, DropReason> {
        if self.registry.len() >= self.config.max_proxies {
            return Err(DropReason::RegistryFull);
        }
        let cluster = self
            .cluster_for(hb.cluster)
            .ok_or(DropReason::RegistryFull)?;
        self.forget_tombstone(hb.cluster, hb.proxy);
        let deadline = now + self.config.ready_timeout;
        let slot = self.registry.insert(Record {
            cluster,
            proxy: hb.proxy.into(),
            stamp: reply.stamp,
            status: Status::Ready,
            reply_to: reply.to,
            last_heard: now,
            since: now,
            deadline,
            config_version: hb.config_version,
        });
        self.timers.arm(TimerKind::Ready, deadline, slot);
        self.status_changed(slot, None, Reason::Registered, now);
        self.ack_registration(reply, slot, now);
        Ok(Outcome::Registered)
    }

    fn restart(
        &mut self,
        now: Instant,
        reply: Reply,
        hb: &Heartbeat<'_>,
    ) -> Result<Outcome, DropReason> {
        // The tombstone remembers the last Restart, so an identity gets at most one per
        // interval; with no room for one, no Restart is sent (the proxy keeps asking).
        let interval = self.config.heartbeat_interval;
        let cluster = self
            .cluster_for(hb.cluster)
            .ok_or(DropReason::RegistryFull)?;
        let stone = self
            .tombstone(cluster, hb.proxy, now)
            .ok_or(DropReason::RegistryFull)?;
        stone.stamp = stone.stamp.max(reply.stamp);
        if stone.last_restart.is_some_and(|at| now < at + interval) {
            return Err(DropReason::RestartSuppressed);
        }
        stone.last_restart = Some(now);
        self.answer(reply, Answer::Restart { stamp: reply.stamp });
        self.events.push_back(Event::RestartSent {
            cluster: Arc::from(hb.cluster),
            proxy: hb.proxy.to_owned(),
            incarnation: reply.stamp.incarnation,
            to: reply.to,
        });
        Ok(Outcome::Restarted)
    }

    fn on_config_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        key: KeyIndex,
        budget: usize,
        req: &ConfigRequest<'_>,
    ) -> Result<Outcome, DropReason> {
        self.check_identity(key, req.cluster, req.proxy)?;
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
        let stamp = Stamp {
            incarnation: req.incarnation,
            seq: req.seq,
        };
        let reply = Reply {
            to: from,
            key,
            budget,
            stamp,
        };
        if self.tokens.check(&req.token, now) == Freshness::Stale {
            let token = self.tokens.mint(now);
            self.answer(reply, Answer::Challenge { stamp, token });
            return Ok(Outcome::Challenged);
        }
        // Config requests are idempotent reads: they are not ordered against heartbeats
        // (a window of them is in flight at once), and each is answered within its own
        // size, so a replay can neither change state nor amplify.
        let config = self.registry.cluster(cluster).config.clone();
        let first = if req.version == config.version {
            req.first_index
        } else {
            0
        };
        let mut used = 0;
        let mut served = 0;
        for index in first..first.saturating_add(req.count.min(64)) {
            let Some(bytes) = config.chunk(index) else {
                break;
            };
            let len = wire::config_chunk_len(&chunk_header(stamp, &config, index), bytes.len());
            if used + len > budget {
                break;
            }
            used += len;
            served += 1;
            self.pending.push_back(Pending {
                to: from,
                key,
                budget: len,
                answer: Answer::Chunk {
                    stamp,
                    config: config.clone(),
                    index,
                },
            });
        }
        if served == 0 {
            return Err(DropReason::BadRequest);
        }
        Ok(Outcome::ConfigServed)
    }

    /// Records that the proxy in `slot` was heard.
    fn touch(&mut self, slot: u32, now: Instant, reply: Reply, config_version: u64) {
        if let Some(record) = self.registry.get_mut(slot) {
            record.stamp = reply.stamp;
            record.reply_to = reply.to;
            record.last_heard = now;
            record.config_version = config_version;
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

    fn delete(&mut self, slot: u32, reason: Reason, now: Instant) {
        let Some(record) = self.registry.remove(slot) else {
            return;
        };
        let cluster = record.cluster;
        let name = self.registry.cluster(cluster).name.clone();
        self.bury(cluster, record.proxy.as_str().into(), record.stamp, now);
        self.persist(Persist::Deleted {
            cluster: name.clone(),
            proxy: record.proxy.to_string(),
        });
        self.events.push_back(Event::StatusChanged(StatusChange {
            cluster: name,
            proxy: record.proxy.into_string(),
            incarnation: record.stamp.incarnation,
            from: Some(record.status),
            to: None,
            reason,
            at: now,
        }));
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
            expires,
            last_restart,
        };
        self.registry.set_tombstone(cluster, proxy.clone(), stone);
        self.tombstone_timers.push(expires, (cluster, proxy));
    }

    /// The tombstone of `proxy`, created (with nothing accepted yet) if there is none and
    /// there is room: tombstones made this way, for identities never registered, are held
    /// to `max_proxies` so that they cannot grow without bound.
    fn tombstone(
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
                expires,
                last_restart: None,
            };
            self.registry.set_tombstone(cluster, proxy.into(), stone);
            self.tombstone_timers.push(expires, (cluster, proxy.into()));
        }
        self.registry.tombstone_mut(cluster, proxy)
    }

    fn forget_tombstone(&mut self, cluster: &str, proxy: &str) {
        if let Some(c) = self.registry.cluster_id(cluster) {
            self.registry.remove_tombstone(c, proxy);
        }
    }

    /// The cluster named `name`, created if there is room.
    fn cluster_for(&mut self, name: &str) -> Option<ClusterId> {
        if self.registry.cluster_id(name).is_none()
            && self.registry.clusters.len() >= self.config.max_clusters
        {
            return None;
        }
        Some(self.registry.ensure_cluster(name))
    }

    fn status_changed(&mut self, slot: u32, from: Option<Status>, reason: Reason, now: Instant) {
        let Some(record) = self.registry.get(slot) else {
            return;
        };
        let cluster = record.cluster;
        let name = self.registry.cluster(cluster).name.clone();
        let change = StatusChange {
            cluster: name.clone(),
            proxy: record.proxy.to_string(),
            incarnation: record.stamp.incarnation,
            from,
            to: Some(record.status),
            reason,
            at: now,
        };
        self.persist(Persist::Proxy {
            cluster: name,
            proxy: change.proxy.clone(),
            incarnation: change.incarnation,
            status: record.status,
            since: record.since,
        });
        self.events.push_back(Event::StatusChanged(change));
        self.check_mass_loss(cluster, now);
    }

    fn ack(&mut self, reply: Reply, slot: u32, status: AckStatus, now: Instant) {
        let ack = self.ack_for(reply, slot, status, now);
        self.pending.push_back(ack);
    }

    /// Acknowledges a registration (or a new life) once it is durable: a proxy told it is
    /// registered must still be after a keeper crash.
    fn ack_registration(&mut self, reply: Reply, slot: u32, now: Instant) {
        let ack = self.ack_for(reply, slot, AckStatus::Ready, now);
        self.answer_when_durable(ack);
    }

    fn ack_for(&mut self, reply: Reply, slot: u32, status: AckStatus, now: Instant) -> Pending {
        let config_version = self
            .registry
            .get(slot)
            .map(|r| self.registry.cluster(r.cluster).config.version)
            .unwrap_or(0);
        let token = self.tokens.mint(now);
        Pending {
            to: reply.to,
            key: reply.key,
            budget: reply.budget,
            answer: Answer::Ack {
                stamp: reply.stamp,
                status,
                config_version,
                slot,
                token,
            },
        }
    }

    fn gone(&mut self, stamp: Stamp, now: Instant) -> Answer {
        let token = self.tokens.mint(now);
        Answer::Ack {
            stamp,
            status: AckStatus::Gone,
            config_version: 0,
            slot: 0,
            token,
        }
    }

    fn answer(&mut self, reply: Reply, answer: Answer) {
        self.pending.push_back(Pending {
            to: reply.to,
            key: reply.key,
            budget: reply.budget,
            answer,
        });
    }

    /// Handles every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        loop {
            let record_due = self.timers.earliest().filter(|(at, _, _)| *at <= now);
            let stone_due = self
                .tombstone_timers
                .peek()
                .map(|(at, _)| at)
                .filter(|at| *at <= now);
            match (record_due, stone_due) {
                (Some((at, kind, slot)), stone) if stone.is_none_or(|s| at <= s) => {
                    self.timers.queue(kind).pop();
                    self.fire(kind, at, slot, now);
                }
                (_, Some(_)) => {
                    if let Some((at, (cluster, proxy))) = self.tombstone_timers.pop()
                        && self
                            .registry
                            .tombstone(cluster, &proxy)
                            .is_some_and(|t| t.expires == at)
                    {
                        self.registry.remove_tombstone(cluster, &proxy);
                    }
                }
                _ => break,
            }
        }
    }

    fn fire(&mut self, kind: TimerKind, at: Instant, slot: u32, now: Instant) {
        let Some(record) = self.registry.get(slot) else {
            return;
        };
        if record.deadline != at || record.status.timer() != kind {
            return; // re-armed or moved on since: a stale entry
        }
        let cluster = record.cluster;
        match kind {
            TimerKind::Ready => self.delete(slot, Reason::ReadyTimeout, now),
            TimerKind::Delete => {
                if !self.defer_deletion(cluster, slot) {
                    self.delete(slot, Reason::DeleteTimeout, now);
                }
            }
            TimerKind::Lost => {
                self.registry.set_status(slot, Status::Lost, now);
                // `delete_after` counts from the last heartbeat, as the original keeper did.
                let record = self.registry.get_mut(slot).expect("checked above");
                let deadline = record.last_heard + self.config.delete_after;
                record.deadline = deadline;
                self.timers.arm(TimerKind::Delete, deadline, slot);
                self.status_changed(slot, Some(Status::Up), Reason::LostTimeout, now);
            }
        }
    }

    /// The next moment [`Keeper::handle_timeout`] has work, if any.
    ///
    /// Takes `&mut self` to discard stale timer entries at the front of the queues, so
    /// the moment returned is a real deadline and the driver never wakes for nothing.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        for kind in TimerKind::ALL {
            while let Some((at, &slot)) = self.timers.queue(kind).peek() {
                let live = self
                    .registry
                    .get(slot)
                    .is_some_and(|r| r.deadline == at && r.status.timer() == kind);
                if live {
                    break;
                }
                self.timers.queue(kind).pop();
            }
        }
        while let Some((at, (cluster, proxy))) = self.tombstone_timers.peek() {
            let live = self
                .registry
                .tombstone(*cluster, proxy)
                .is_some_and(|t| t.expires == at);
            if live {
                break;
            }
            self.tombstone_timers.pop();
        }
        let record = self.timers.earliest().map(|(at, _, _)| at);
        let stone = self.tombstone_timers.peek().map(|(at, _)| at);
        record.into_iter().chain(stone).min()
    }

    /// Encodes the next datagram to send into `buf` (at least
    /// [`wire::MAX_DATAGRAM`] bytes) and says where it goes.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(p) = self.pending.pop_front() {
            let key = self.keys.get(p.key);
            let encoded = match &p.answer {
                Answer::Ack {
                    stamp,
                    status,
                    config_version,
                    slot,
                    token,
                } => wire::encode(
                    &Message::Ack(wire::Ack {
                        incarnation: stamp.incarnation,
                        seq: stamp.seq,
                        status: *status,
                        interval_ms: KeeperConfig::millis(self.config.heartbeat_interval),
                        lost_after_ms: KeeperConfig::millis(self.config.lost_after),
                        config_version: *config_version,
                        slot: *slot,
                        token: *token,
                    }),
                    key,
                    buf,
                ),
                Answer::Challenge { stamp, token } => wire::encode(
                    &Message::Challenge(wire::Challenge {
                        incarnation: stamp.incarnation,
                        seq: stamp.seq,
                        token: *token,
                    }),
                    key,
                    buf,
                ),
                Answer::Restart { stamp } => wire::encode(
                    &Message::Restart(wire::Restart {
                        incarnation: stamp.incarnation,
                        seq: stamp.seq,
                    }),
                    key,
                    buf,
                ),
                Answer::Superseded { stamp, winner } => wire::encode(
                    &Message::Superseded(wire::Superseded {
                        incarnation: stamp.incarnation,
                        seq: stamp.seq,
                        winner: *winner,
                    }),
                    key,
                    buf,
                ),
                Answer::Chunk {
                    stamp,
                    config,
                    index,
                } => {
                    let mut chunk = chunk_header(*stamp, config, *index);
                    chunk.bytes = config.chunk(*index).unwrap_or_default();
                    wire::encode(&Message::ConfigChunk(chunk), key, buf)
                }
            };
            match encoded {
                Ok(len) if len <= p.budget => {
                    self.stats.sent += 1;
                    return Some(Transmit {
                        destination: p.to,
                        len,
                    });
                }
                _ => {
                    // Ruled out by the protocol's sizes; never send more than was received.
                    self.stats.oversized_answers += 1;
                    tracing::error!(to = %p.to, budget = p.budget, "answer larger than its request not sent");
                }
            }
        }
        None
    }

    /// The next event, in the order things happened.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

/// Where and how to answer the datagram being handled.
#[derive(Clone, Copy, Debug)]
struct Reply {
    to: SocketAddr,
    key: KeyIndex,
    budget: usize,
    stamp: Stamp,
}

fn validate_identity(cluster: &str, proxy: &str) -> Result<(), DropReason> {
    validate_cluster(cluster).map_err(|_| DropReason::InvalidIdentity)?;
    validate_proxy(proxy).map_err(|_| DropReason::InvalidIdentity)
}

fn ack_status(status: Status) -> AckStatus {
    match status {
        Status::Ready => AckStatus::Ready,
        // An ack only ever answers a heartbeat, which makes a lost proxy up.
        Status::Up | Status::Lost => AckStatus::Up,
    }
}

fn chunk_header(stamp: Stamp, config: &ConfigVersion, index: u32) -> wire::ConfigChunk<'static> {
    wire::ConfigChunk {
        incarnation: stamp.incarnation,
        seq: stamp.seq,
        version: config.version,
        index,
        total: config.total_chunks(),
        size: u32::try_from(config.bytes.len()).unwrap_or(u32::MAX),
        digest: config.digest,
        bytes: &[],
    }
}
