//! The agent core: a proxy's side of the protocol, as a sans-IO state machine.
//!
//! A proxy process embeds one [`Agent`] per lifecycle of its identity. The agent sends
//! `ready` heartbeats from its start; once the keeper acknowledges the registration it
//! pulls the cluster's startup config in chunks, hands it to the host
//! ([`AgentEvent::ConfigReady`]), and keeps sending `ready` until the host says it is
//! initialised ([`Agent::initialized`]); then it sends `up` heartbeats. A known start
//! failure ([`Agent::fail_start`]) sends `down`, and [`Agent::unregister`] asks to be
//! deleted; both are retransmitted until acknowledged, a bounded number of times. A
//! `Restart` from the keeper starts a new lifecycle with a larger incarnation, and the
//! host hears of it ([`AgentEvent::Restarting`]).
//!
//! # Methods
//!
//! - **input**: [`Agent::handle_datagram`], [`Agent::handle_timeout`];
//! - **host calls**: [`Agent::initialized`], [`Agent::reject_config`],
//!   [`Agent::fail_start`], [`Agent::unregister`];
//! - **output**: [`Agent::poll_transmit_to`] (every datagram, and the keeper it goes
//!   to), [`Agent::poll_event`], [`Agent::poll_timeout`];
//! - **getters**: [`Agent::phase`], [`Agent::incarnation`], [`Agent::interval`], ….
//!
//! The driver loop is the keeper's: after every call, drain transmits and events, then
//! sleep until `poll_timeout` or the next datagram.
//!
//! Answers from the keeper are authenticated and name the incarnation they answer; the
//! agent ignores any answer for another incarnation, so a replayed `Restart` of an
//! earlier life cannot restart this one.
//!
//! # Several keepers
//!
//! A proxy may know several keepers ([`AgentConfig::keepers`]): one leads and answers,
//! the others (standbys) stay silent. The agent sends to the keeper that answered it last;
//! until one has answered, and once the one it sends to has not answered for
//! `lost_after` (an `up` proxy is acked at least every half `lost_after`, when its
//! token is refreshed), it *searches*: it sends every datagram to every keeper, so the
//! leader keeps hearing it whichever keeper that is, and the first keeper to answer is
//! the one it sends to from then on. A search costs one datagram per keeper per
//! heartbeat, and only while no keeper answers.

mod pull;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::auth::Key;
use crate::identity::{IdentityError, validate_cluster, validate_proxy};
use crate::time::{Clock, Instant, WallTime};
use crate::wire::{
    self, AckStatus, ConfigId, ConfigRequest, Heartbeat, MAX_DATAGRAM, Message, ProxyStatus, Token,
    Trailer, Version,
};

use pull::{Progress, Pull};

/// How a proxy is configured.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The cluster it belongs to.
    pub cluster: String,
    /// Its identity, the address it serves on (`10.25.0.11:3000`).
    pub proxy: String,
    /// The cluster's secret key.
    pub key: Key,
    /// Heartbeat interval until the keeper's first `Ack` says otherwise.
    pub default_interval: Duration,
    /// Config chunk requests in flight at once.
    pub config_window: u32,
    /// How many times `down` or unregister is sent before the agent gives up.
    pub final_attempts: u32,
    /// How many keepers the proxy knows (at least 1); the driver numbers them from 0.
    pub keepers: usize,
    /// The protocol version it speaks: [`Version::V2`] by default (leadership terms and
    /// config ids); [`Version::V1`] as a proxy of an older release does.
    pub protocol: Version,
}

impl AgentConfig {
    /// A config with the defaults: 1 s interval, a window of 4 chunks, 10 attempts.
    pub fn new(cluster: impl Into<String>, proxy: impl Into<String>, key: Key) -> AgentConfig {
        AgentConfig {
            cluster: cluster.into(),
            proxy: proxy.into(),
            key,
            default_interval: Duration::from_secs(1),
            config_window: 4,
            final_attempts: 10,
            keepers: 1,
            protocol: Version::default(),
        }
    }
}

/// Where the agent is in its lifecycle.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Phase {
    /// Sending `ready`, waiting for the keeper to acknowledge the registration.
    Joining,
    /// Registered; pulling the startup config (still sending `ready`).
    Pulling,
    /// Config delivered; waiting for the host to initialise (still sending `ready`).
    Initialising,
    /// Sending `up`.
    Up,
    /// Sending `down` until acknowledged.
    Failing,
    /// Sending unregister until acknowledged.
    Leaving,
    /// Sending nothing more.
    Stopped(StopReason),
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Joining => f.write_str("joining"),
            Phase::Pulling => f.write_str("pulling-config"),
            Phase::Initialising => f.write_str("initialising"),
            Phase::Up => f.write_str("up"),
            Phase::Failing => f.write_str("failing"),
            Phase::Leaving => f.write_str("leaving"),
            Phase::Stopped(reason) => write!(f, "stopped ({reason})"),
        }
    }
}

/// Why the agent stopped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StopReason {
    /// The keeper acknowledged its `down`.
    Failed,
    /// The keeper acknowledged its unregister.
    Unregistered,
    /// `down` or unregister went unacknowledged for every attempt.
    GaveUp,
    /// A newer process holds the identity.
    Superseded,
    /// An operator removed this process from its cluster (`Leave`).
    Removed,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::Failed => "start failure acknowledged",
            StopReason::Unregistered => "unregistered",
            StopReason::GaveUp => "no acknowledgement, gave up",
            StopReason::Superseded => "superseded by a newer process",
            StopReason::Removed => "removed by an operator",
        })
    }
}

/// What the host should know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentEvent {
    /// The phase changed.
    PhaseChanged {
        /// The phase before.
        from: Phase,
        /// The phase now.
        to: Phase,
    },
    /// The startup config arrived and its digest matched: initialise with it, then call
    /// [`Agent::initialized`].
    ConfigReady {
        /// Its version.
        version: u64,
        /// Its bytes (a [`crate::configdoc::ConfigDocument`]).
        config: Arc<[u8]>,
    },
    /// A newer config version arrived while up: apply it.
    ConfigUpdated {
        /// Its version.
        version: u64,
        /// Its bytes.
        config: Arc<[u8]>,
    },
    /// The keeper sent `Restart`: tear down and start again. The agent is already
    /// registering the new incarnation; a `ConfigReady` follows.
    Restarting {
        /// The incarnation that was told to restart.
        old_incarnation: u64,
        /// The incarnation now registering.
        new_incarnation: u64,
    },
    /// A newer process holds this identity; this one must stop.
    Superseded {
        /// The newer process's incarnation.
        winner: u64,
    },
    /// An operator removed this process from its cluster (`Leave`, protocol version 2):
    /// stop serving and exit; do not start again on your own. The agent has sent its
    /// acknowledgement (one `Unregister`) and is stopped.
    Removed,
}

/// Why a host call was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AgentError {
    /// The cluster name or proxy address is invalid.
    #[error("invalid identity: {0}")]
    Identity(#[from] IdentityError),
    /// `initialized` was called before the startup config arrived, or twice.
    #[error("cannot go up from phase {0}")]
    NotInitialising(Phase),
    /// `reject_config` was called with no config delivered since the last one (or the
    /// last rejection).
    #[error("no config was delivered to reject")]
    NothingToReject,
}

/// Counters of what the agent read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentStats {
    /// Datagrams read.
    pub received: u64,
    /// Datagrams ignored: failed authentication, another incarnation, or not expected.
    pub ignored: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Challenges answered.
    pub challenges: u64,
    /// Answers ignored because they came under an older leadership term than one the
    /// agent had accepted: a deposed keeper that still sends.
    pub old_term: u64,
    /// Plain config chunks refused in protocol version 2 (where configs travel sealed).
    pub plain_chunks: u64,
    /// Sealed chunks that did not open (authenticated, yet not sealed for this config).
    pub unsealable: u64,
    /// Configs the host rejected.
    pub rejected: u64,
}

/// Where a datagram goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Destination {
    /// To the keeper with this index (of [`AgentConfig::keepers`]).
    Keeper(usize),
    /// To every keeper: the agent is searching for the one that answers.
    Every,
}

/// Challenges answered at once per heartbeat interval; more wait for the next heartbeat,
/// so a keeper that keeps challenging cannot make the agent spin.
const CHALLENGE_BUDGET: u32 = 2;

/// The agent state machine. See the [module documentation](self).
#[derive(Debug)]
pub struct Agent {
    cfg: AgentConfig,
    clock: Clock,
    incarnation: u64,
    seq: u64,
    phase: Phase,
    token: Token,
    slot: u32,
    interval: Duration,
    lost_after: Option<Duration>,
    next_heartbeat: Instant,
    /// The cluster's config version, as the keeper last said.
    keeper_version: u64,
    /// The config version this process runs (0: none yet).
    running_version: u64,
    /// Its id (version 2; none yet, or version 1: [`ConfigId::NONE`]).
    running_id: ConfigId,
    /// What ran before the config last delivered, to go back to if the host rejects it;
    /// `None` once it is accepted as delivered or rejected (nothing to reject).
    before_delivered: Option<(u64, ConfigId)>,
    /// The config the host rejected (version, id): not pulled again in this life unless
    /// the keeper names another.
    rejected: Option<Rejected>,
    /// The largest leadership term accepted (version 2): answers under older ones are
    /// ignored. Kept across restarts of the lifecycle.
    term: u64,
    pull: Option<Pull>,
    final_attempts_left: u32,
    /// The status reported by an unregister (the one the proxy had when it left).
    leaving_status: ProxyStatus,
    /// The seq of the latest `Ack` applied: an older one, delivered late, says nothing new.
    latest_ack: u64,
    challenge_budget: u32,
    /// The keeper datagrams go to, unless searching.
    current: usize,
    /// Sending to every keeper, until one answers.
    searching: bool,
    /// When the keeper sent to last answered (or the search began).
    last_answer: Instant,
    out: VecDeque<(Destination, Vec<u8>)>,
    events: VecDeque<AgentEvent>,
    stats: AgentStats,
    /// The key signed with before [`Agent::set_key`]: answers to what it signed may still
    /// arrive, until the keeper answers under the new key.
    previous_key: Option<Key>,
    /// The sealer of the config whose sealed chunks arrive: (id, keyed digest, key id).
    sealer: Option<(
        ConfigId,
        [u8; 32],
        crate::auth::KeyId,
        crate::seal::ChunkSealer,
    )>,
}

impl Agent {
    /// Starts a lifecycle at `now`; `start` is the process's wall-clock start time, which
    /// becomes its incarnation. The first `ready` heartbeat is ready to send at once.
    pub fn new(cfg: AgentConfig, start: WallTime, now: Instant) -> Result<Agent, AgentError> {
        validate_cluster(&cfg.cluster)?;
        validate_proxy(&cfg.proxy)?;
        let mut clock = Clock::default();
        let now = clock.advance(now);
        let interval = cfg.default_interval.max(Duration::from_millis(1));
        let mut agent = Agent {
            cfg,
            clock,
            incarnation: start.as_micros().max(1),
            seq: 0,
            phase: Phase::Joining,
            token: Token::NONE,
            slot: 0,
            interval,
            lost_after: None,
            next_heartbeat: now,
            keeper_version: 0,
            running_version: 0,
            running_id: ConfigId::NONE,
            before_delivered: None,
            rejected: None,
            term: 0,
            pull: None,
            final_attempts_left: 0,
            leaving_status: ProxyStatus::Ready,
            latest_ack: 0,
            challenge_budget: CHALLENGE_BUDGET,
            current: 0,
            searching: false,
            last_answer: now,
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: AgentStats::default(),
            previous_key: None,
            sealer: None,
        };
        // With several keepers, which one leads is not known yet.
        agent.searching = agent.cfg.keepers > 1;
        agent.handle_timeout(now);
        Ok(agent)
    }

    /// Whether the agent sends to every keeper (none has answered lately).
    pub fn searching(&self) -> bool {
        self.searching
    }

    /// The keeper datagrams go to when not searching (the one that answered last).
    pub fn current_keeper(&self) -> usize {
        self.current
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The current incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The heartbeat interval in force (the keeper's, once it has said).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The keeper's `lost_after`, once it has said.
    pub fn lost_after(&self) -> Option<Duration> {
        self.lost_after
    }

    /// The config version this process runs (0: none yet).
    pub fn config_version(&self) -> u64 {
        self.running_version
    }

    /// The id of the config this process runs (version 2; [`ConfigId::NONE`]: none yet,
    /// or version 1).
    pub fn config_id(&self) -> ConfigId {
        self.running_id
    }

    /// Signs everything from now on with `key` (a key rotation, without a restart: the
    /// keeper holds both keys meanwhile). Answers under the old key are still accepted
    /// until one under the new key is, since answers to datagrams it signed may be on
    /// their way. Nothing else changes: the lifecycle goes on.
    pub fn set_key(&mut self, key: Key) {
        if key.id() == self.cfg.key.id() {
            return;
        }
        self.previous_key = Some(std::mem::replace(&mut self.cfg.key, key));
    }

    /// The id of the key the agent signs with.
    pub fn key_id(&self) -> crate::auth::KeyId {
        self.cfg.key.id()
    }

    /// The largest leadership term accepted (0: none, or version 1).
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The proxy's identity.
    pub fn proxy(&self) -> &str {
        &self.cfg.proxy
    }

    /// The proxy's cluster.
    pub fn cluster(&self) -> &str {
        &self.cfg.cluster
    }

    /// Counters of what the agent read and sent.
    pub fn stats(&self) -> &AgentStats {
        &self.stats
    }

    /// The host finished initialising with the startup config: go `up`.
    pub fn initialized(&mut self, now: Instant) -> Result<(), AgentError> {
        let now = self.clock.advance(now);
        if self.phase != Phase::Initialising {
            return Err(AgentError::NotInitialising(self.phase));
        }
        self.set_phase(Phase::Up);
        self.heartbeat_now(now);
        Ok(())
    }

    /// The host could not apply the config last delivered ([`AgentEvent::ConfigReady`] or
    /// [`AgentEvent::ConfigUpdated`]): the agent goes back to what it ran before (nothing,
    /// for a startup config: it stays `ready` and waits for another), does not pull that
    /// config again while the keeper names it, and in protocol version 2 tells the keeper
    /// with a `ConfigReject` carrying `reason` (cut to one line of at most 200 bytes) in
    /// place of its heartbeats until the keeper acknowledges one. A version 1 keeper
    /// cannot be told: the agent only goes back.
    pub fn reject_config(&mut self, now: Instant, reason: &str) -> Result<(), AgentError> {
        let now = self.clock.advance(now);
        if matches!(
            self.phase,
            Phase::Stopped(_) | Phase::Failing | Phase::Leaving
        ) {
            return Err(AgentError::NothingToReject);
        }
        let (version, id) = (self.running_version, self.running_id);
        let (old_version, old_id) = self
            .before_delivered
            .take()
            .ok_or(AgentError::NothingToReject)?;
        self.running_version = old_version;
        self.running_id = old_id;
        self.stats.rejected += 1;
        let pending = self.cfg.protocol == Version::V2;
        self.rejected = Some(Rejected {
            version,
            id,
            reason: wire::reject_reason(reason),
            pending,
            sent_at: 0,
        });
        if self.phase == Phase::Initialising {
            // The startup config did not load: wait for another one.
            self.set_phase(Phase::Pulling);
        }
        if pending {
            self.heartbeat_now(now);
        }
        Ok(())
    }

    /// The config the host rejected last, and whether the keeper has yet to acknowledge
    /// the rejection.
    pub fn rejected(&self) -> Option<(u64, bool)> {
        self.rejected.as_ref().map(|r| (r.version, r.pending))
    }

    /// The proxy failed to start for a known reason: send `down` until acknowledged.
    pub fn fail_start(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        if matches!(self.phase, Phase::Stopped(_) | Phase::Failing) {
            return;
        }
        self.final_attempts_left = self.cfg.final_attempts.max(1);
        self.pull = None;
        self.set_phase(Phase::Failing);
        self.heartbeat_now(now);
    }

    /// The proxy is going offline: send unregister until acknowledged.
    pub fn unregister(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        if matches!(self.phase, Phase::Stopped(_) | Phase::Leaving) {
            return;
        }
        self.leaving_status = if self.phase == Phase::Up {
            ProxyStatus::Up
        } else {
            ProxyStatus::Ready
        };
        self.final_attempts_left = self.cfg.final_attempts.max(1);
        self.pull = None;
        self.set_phase(Phase::Leaving);
        self.heartbeat_now(now);
    }

    /// Handles a datagram from the keeper (of a proxy that knows one keeper, or from a
    /// keeper the driver could not tell).
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        self.handle_datagram_from(now, None, datagram);
    }

    /// Handles a datagram from keeper `from` (its index), if the driver knows which.
    /// An answer that counts makes that keeper the one the agent sends to.
    pub fn handle_datagram_from(&mut self, now: Instant, from: Option<usize>, datagram: &[u8]) {
        let now = self.clock.advance(now);
        self.stats.received += 1;
        if self.accept(now, datagram) {
            self.answered(now, from);
        } else {
            self.stats.ignored += 1;
        }
    }

    /// Notes that keeper `from` (or the current one) sent an answer that counted.
    fn answered(&mut self, now: Instant, from: Option<usize>) {
        if let Some(keeper) = from.filter(|&k| k < self.cfg.keepers) {
            self.current = keeper;
        }
        if self.searching && (from.is_some() || self.cfg.keepers == 1) {
            self.searching = false;
        }
        self.last_answer = now;
    }

    /// How long the keeper sent to may be silent before the agent searches.
    fn silence_limit(&self) -> Duration {
        self.lost_after
            .unwrap_or(self.interval * 3)
            .max(self.interval)
    }

    fn accept(&mut self, now: Instant, datagram: &[u8]) -> bool {
        let (framed, under_previous) = match wire::open_framed(datagram, &self.cfg.key) {
            Ok(framed) => {
                // The keeper answers under the new key: the old one is done with.
                self.previous_key = None;
                (framed, false)
            }
            Err(_) => match self
                .previous_key
                .as_ref()
                .map(|old| wire::open_framed(datagram, old))
            {
                Some(Ok(framed)) => (framed, true),
                _ => return false,
            },
        };
        // The keeper answers in the version it was asked in: an answer in another is not
        // one (and a version 1 answer would carry no term to fence it).
        if framed.version != self.cfg.protocol {
            return false;
        }
        let message = framed.message;
        let id = (framed.version == Version::V2).then_some(framed.trailer.config);
        let (incarnation, seq) = match &message {
            Message::Ack(m) => (m.incarnation, m.seq),
            Message::Challenge(m) => (m.incarnation, m.seq),
            Message::Restart(m) => (m.incarnation, m.seq),
            Message::Superseded(m) => (m.incarnation, m.seq),
            Message::Leave(m) => (m.incarnation, m.seq),
            Message::ConfigChunk(m) | Message::SealedChunk(m) => (m.incarnation, m.seq),
            Message::Heartbeat(_)
            | Message::Unregister(_)
            | Message::ConfigRequest(_)
            | Message::ConfigReject(_) => {
                return false;
            }
        };
        // Only answers to this incarnation, to a datagram it really sent, count.
        if incarnation != self.incarnation || seq > self.seq || seq == 0 {
            return false;
        }
        if matches!(self.phase, Phase::Stopped(_)) {
            return false;
        }
        // Fencing: nothing from a leader older than one already heard is obeyed.
        if framed.trailer.term < self.term {
            self.stats.old_term += 1;
            return false;
        }
        self.term = framed.trailer.term;
        match message {
            Message::Ack(ack) => self.on_ack(now, &ack, id),
            Message::Challenge(c) => {
                self.token = c.token;
                self.stats.challenges += 1;
                if self.challenge_budget > 0 {
                    self.challenge_budget -= 1;
                    self.send_current(now);
                }
                true
            }
            Message::Restart(_) => {
                if matches!(self.phase, Phase::Failing | Phase::Leaving) {
                    return false;
                }
                self.restart(now);
                true
            }
            Message::Superseded(s) => {
                self.pull = None;
                self.events
                    .push_back(AgentEvent::Superseded { winner: s.winner });
                self.set_phase(Phase::Stopped(StopReason::Superseded));
                true
            }
            Message::Leave(_) if framed.version == Version::V2 => {
                // A `down` in flight is answered as one: the process is going anyway.
                if self.phase == Phase::Failing {
                    return false;
                }
                self.pull = None;
                if self.phase != Phase::Leaving {
                    self.leaving_status = if self.phase == Phase::Up {
                        ProxyStatus::Up
                    } else {
                        ProxyStatus::Ready
                    };
                    self.set_phase(Phase::Leaving);
                }
                // The acknowledgement: one unregister, so the keeper drops its marker.
                self.send_current(now);
                self.set_phase(Phase::Stopped(StopReason::Removed));
                self.events.push_back(AgentEvent::Removed);
                true
            }
            Message::Leave(_) => false,
            // Version 1 only: a version 2 config travels sealed, always.
            Message::ConfigChunk(chunk) if framed.version == Version::V1 => {
                self.on_chunk(now, &chunk, id, None)
            }
            Message::ConfigChunk(_) => {
                self.stats.plain_chunks += 1;
                false
            }
            Message::SealedChunk(sealed) if framed.version == Version::V2 => {
                let key = if under_previous {
                    self.previous_key.clone()
                } else {
                    Some(self.cfg.key.clone())
                };
                let Some(key) = key else {
                    return false;
                };
                let Some(plain) = self.open_chunk(&key, &sealed, framed.trailer.config) else {
                    self.stats.unsealable += 1;
                    return false;
                };
                let chunk = wire::ConfigChunk {
                    bytes: &plain,
                    ..sealed
                };
                self.on_chunk(now, &chunk, id, Some(&key))
            }
            Message::SealedChunk(_)
            | Message::Heartbeat(_)
            | Message::Unregister(_)
            | Message::ConfigRequest(_)
            | Message::ConfigReject(_) => false,
        }
    }

    /// An `Ack`; `id` is the config id its trailer named (version 2).
    fn on_ack(&mut self, now: Instant, ack: &wire::Ack, id: Option<ConfigId>) -> bool {
        if ack.status == AckStatus::Gone && !matches!(self.phase, Phase::Failing | Phase::Leaving) {
            // Only `down` and unregister are answered with `gone`: this one is bogus.
            return false;
        }
        if ack.seq <= self.latest_ack && ack.status != AckStatus::Gone {
            // Reordered: a later answer was already applied.
            return true;
        }
        self.latest_ack = ack.seq;
        self.token = ack.token;
        if ack.slot != 0 {
            self.slot = ack.slot;
        }
        self.interval = Duration::from_millis(u64::from(ack.interval_ms.max(1)));
        self.lost_after = Some(Duration::from_millis(u64::from(ack.lost_after_ms)));
        if let Some(r) = self.rejected.as_mut() {
            let names_it = match id {
                Some(id) => id == r.id,
                None => ack.config_version == r.version,
            };
            if r.pending && r.sent_at != 0 && ack.seq >= r.sent_at {
                // The keeper has the rejection.
                r.pending = false;
            } else if !r.pending && names_it && ack.seq > r.sent_at && id.is_some() {
                // An answer to a plain heartbeat names the rejected config: the keeper
                // does not know of the rejection (it restarted, or a leader took over).
                r.pending = true;
            }
        }
        match (ack.status, self.phase) {
            (AckStatus::Gone, Phase::Failing) => self.set_phase(Phase::Stopped(StopReason::Failed)),
            (AckStatus::Gone, Phase::Leaving) => {
                self.set_phase(Phase::Stopped(StopReason::Unregistered))
            }
            (AckStatus::Gone, _) => {}
            (AckStatus::Ready, Phase::Joining) => {
                self.keeper_version = ack.config_version;
                self.set_phase(Phase::Pulling);
                self.pull = Some(Pull::new(ack.config_version, id));
                self.request_chunks(now);
            }
            (AckStatus::Ready | AckStatus::Up, _) => {
                self.keeper_version = ack.config_version;
                let pulling = self.pull.as_ref().map(Pull::version);
                let pulling_id = self.pull.as_ref().and_then(Pull::id);
                let follow = match (id, self.phase) {
                    // Version 2: whatever the keeper serves, if it is not what this
                    // process runs or pulls (ids are compared for equality, so a keeper
                    // restored from an older backup is followed too).
                    (Some(id), Phase::Pulling) => pulling_id != Some(id),
                    (Some(id), Phase::Initialising | Phase::Up) => {
                        id != self.running_id && pulling_id != Some(id)
                    }
                    (Some(_), _) => false,
                    // Version 1. The startup config is whatever the keeper serves now: a
                    // keeper that lost its state serves a lower version than the one
                    // being pulled.
                    (None, Phase::Pulling) => pulling != Some(ack.config_version),
                    // A running proxy takes only newer versions.
                    (None, Phase::Initialising | Phase::Up) => {
                        ack.config_version > self.running_version
                            && pulling.is_none_or(|v| v < ack.config_version)
                    }
                    (None, _) => false,
                };
                let refused = self.rejected.as_ref().is_some_and(|r| match id {
                    Some(id) => id == r.id,
                    None => ack.config_version == r.version,
                });
                if follow && !refused {
                    self.pull = Some(Pull::new(ack.config_version, id));
                    self.request_chunks(now);
                }
            }
        }
        true
    }

    /// The plaintext of a sealed chunk of config `id`, opened under `key`
    /// (`docs/PROTOCOL.md` §17.6); `None` if it does not open. The sealer of a config is
    /// derived once, on its first chunk.
    fn open_chunk(
        &mut self,
        key: &Key,
        sealed: &wire::ConfigChunk<'_>,
        id: ConfigId,
    ) -> Option<Vec<u8>> {
        let fresh = !matches!(&self.sealer, Some((i, d, k, _)) if *i == id && *d == sealed.digest && *k == key.id());
        if fresh {
            let sealer = crate::seal::ChunkSealer::new(&key.config_key(
                &self.cfg.cluster,
                &id.0,
                &sealed.digest,
                crate::configdoc::CHUNK_SIZE as u32,
            ));
            self.sealer = Some((id, sealed.digest, key.id(), sealer));
        }
        let (_, _, _, sealer) = self.sealer.as_ref()?;
        sealer.open(sealed.index, sealed.bytes)
    }

    /// A config chunk (opened already, if it came sealed, with `key`); `id` is the config
    /// id its trailer named (version 2).
    fn on_chunk(
        &mut self,
        now: Instant,
        chunk: &wire::ConfigChunk<'_>,
        id: Option<ConfigId>,
        key: Option<&Key>,
    ) -> bool {
        let Some(pull) = self.pull.as_mut() else {
            return false;
        };
        let pulled = pull.id();
        match pull.accept(chunk, id, key) {
            Progress::Ignored => return false,
            Progress::Stored => {}
            Progress::Newer { version, id: other } if pulled.is_some() => {
                // Ids have no order: another id is news only if it answers a request sent
                // after the `Ack` that named the one pulled (a chunk of an older config,
                // delivered late, would otherwise make the pull go back and forth).
                if chunk.seq <= self.latest_ack {
                    return false;
                }
                self.keeper_version = version;
                self.pull = Some(Pull::new(version, Some(other)));
            }
            Progress::Newer { version, .. } => {
                self.keeper_version = self.keeper_version.max(version);
                self.pull = Some(Pull::new(version, None));
            }
            Progress::Corrupt => {
                self.pull = Some(Pull::new(chunk.version, pulled));
            }
            Progress::Complete(config) => {
                let version = chunk.version;
                self.pull = None;
                self.before_delivered = Some((self.running_version, self.running_id));
                self.running_version = version;
                self.running_id = pulled.unwrap_or(ConfigId::NONE);
                if self.phase == Phase::Pulling {
                    self.events
                        .push_back(AgentEvent::ConfigReady { version, config });
                    self.set_phase(Phase::Initialising);
                } else {
                    self.events
                        .push_back(AgentEvent::ConfigUpdated { version, config });
                }
                return true;
            }
        }
        self.request_chunks(now);
        true
    }

    fn restart(&mut self, now: Instant) {
        let old = self.incarnation;
        self.incarnation = old.saturating_add(1);
        self.seq = 0;
        self.latest_ack = 0;
        self.slot = 0;
        self.pull = None;
        self.running_version = 0;
        self.running_id = ConfigId::NONE;
        self.before_delivered = None;
        self.rejected = None;
        self.events.push_back(AgentEvent::Restarting {
            old_incarnation: old,
            new_incarnation: self.incarnation,
        });
        self.set_phase(Phase::Joining);
        self.heartbeat_now(now);
    }

    /// Handles every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        if self.cfg.keepers > 1
            && !self.searching
            && !matches!(self.phase, Phase::Stopped(_))
            && now >= self.last_answer + self.silence_limit()
        {
            self.searching = true;
        }
        match self.phase {
            Phase::Stopped(_) => return,
            Phase::Failing | Phase::Leaving => {
                if now >= self.next_heartbeat {
                    if self.final_attempts_left == 0 {
                        self.set_phase(Phase::Stopped(StopReason::GaveUp));
                        return;
                    }
                    self.heartbeat_now(now);
                }
            }
            _ => {
                if now >= self.next_heartbeat {
                    self.challenge_budget = CHALLENGE_BUDGET;
                    self.heartbeat_now(now);
                }
            }
        }
        if self
            .pull
            .as_ref()
            .and_then(|p| p.deadline(self.pull_retry()))
            .is_some_and(|at| at <= now)
        {
            self.request_chunks(now);
        }
    }

    /// The next moment [`Agent::handle_timeout`] has work, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.phase, Phase::Stopped(_)) {
            return None;
        }
        let pull = self
            .pull
            .as_ref()
            .and_then(|p| p.deadline(self.pull_retry()));
        let next = pull.map_or(self.next_heartbeat, |p| p.min(self.next_heartbeat));
        if self.cfg.keepers > 1 && !self.searching {
            return Some(next.min(self.last_answer + self.silence_limit()));
        }
        Some(next)
    }

    /// The next datagram to send, for a proxy that knows one keeper.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.poll_transmit_to().map(|(_, bytes)| bytes)
    }

    /// The next datagram to send, and where.
    pub fn poll_transmit_to(&mut self) -> Option<(Destination, Vec<u8>)> {
        self.out.pop_front()
    }

    /// The next event for the host.
    pub fn poll_event(&mut self) -> Option<AgentEvent> {
        self.events.pop_front()
    }

    fn pull_retry(&self) -> Duration {
        (self.interval / 4).max(Duration::from_millis(5))
    }

    fn final_retry(&self) -> Duration {
        (self.interval / 2).max(Duration::from_millis(1))
    }

    fn set_phase(&mut self, to: Phase) {
        if self.phase != to {
            let from = self.phase;
            self.phase = to;
            self.events.push_back(AgentEvent::PhaseChanged { from, to });
        }
    }

    /// Sends the phase's message now and schedules the next one.
    fn heartbeat_now(&mut self, now: Instant) {
        self.send_current(now);
        self.next_heartbeat = match self.phase {
            Phase::Failing | Phase::Leaving => {
                self.final_attempts_left = self.final_attempts_left.saturating_sub(1);
                now + self.final_retry()
            }
            _ => now + self.interval,
        };
    }

    /// Sends the message of the current phase (without touching the schedule).
    fn send_current(&mut self, _now: Instant) {
        let (status, kind_unregister) = match self.phase {
            Phase::Joining | Phase::Pulling | Phase::Initialising => (ProxyStatus::Ready, false),
            Phase::Up => (ProxyStatus::Up, false),
            Phase::Failing => (ProxyStatus::Down, false),
            Phase::Leaving => (self.leaving_status, true),
            Phase::Stopped(_) => return,
        };
        self.seq += 1;
        let hb = Heartbeat {
            cluster: &self.cfg.cluster,
            proxy: &self.cfg.proxy,
            incarnation: self.incarnation,
            seq: self.seq,
            status,
            config_version: self.running_version,
            slot: self.slot,
            token: self.token,
        };
        let to = self.destination();
        let trailer = Trailer {
            term: self.term,
            config: self.running_id,
        };
        let seq = self.seq;
        let rejecting = self
            .rejected
            .as_mut()
            .filter(|r| r.pending && !kind_unregister && status != ProxyStatus::Down);
        let message = match rejecting {
            _ if kind_unregister => Message::Unregister(hb),
            Some(r) => {
                r.sent_at = seq;
                Message::ConfigReject(wire::ConfigReject {
                    heartbeat: hb,
                    rejected: r.id,
                    reason: &r.reason,
                })
            }
            None => Message::Heartbeat(hb),
        };
        push(
            &self.cfg,
            trailer,
            &mut self.out,
            &mut self.stats,
            to,
            &message,
        );
    }

    fn destination(&self) -> Destination {
        if self.searching {
            Destination::Every
        } else {
            Destination::Keeper(self.current)
        }
    }

    fn request_chunks(&mut self, now: Instant) {
        let retry = self.pull_retry();
        let window = self.cfg.config_window.max(1);
        let to = self.destination();
        let Some(pull) = self.pull.as_mut() else {
            return;
        };
        let version = pull.version();
        let trailer = Trailer {
            term: self.term,
            config: pull.id().unwrap_or(ConfigId::NONE),
        };
        for index in pull.due(now, retry, window) {
            self.seq += 1;
            let mut request = ConfigRequest {
                cluster: &self.cfg.cluster,
                proxy: &self.cfg.proxy,
                incarnation: self.incarnation,
                seq: self.seq,
                slot: self.slot,
                token: self.token,
                version,
                first_index: index,
                count: 1,
                padding: &[],
            };
            // Pad to the largest datagram: the keeper answers within the request's size,
            // and a full chunk needs up to 1127 bytes.
            // With empty padding its length takes one varint byte; `pad` bytes of padding
            // take `varint_len(pad) + pad`.
            let bare = wire::encode_framed_to_vec(
                self.cfg.protocol,
                &Message::ConfigRequest(request),
                trailer,
                &self.cfg.key,
            )
            .map_or(MAX_DATAGRAM, |v| v.len());
            let mut pad = MAX_DATAGRAM.saturating_sub(bare);
            while pad > 0 && bare + wire::varint_len(pad as u64) + pad > MAX_DATAGRAM + 1 {
                pad -= 1;
            }
            request.padding = &PADDING[..pad];
            push(
                &self.cfg,
                trailer,
                &mut self.out,
                &mut self.stats,
                to,
                &Message::ConfigRequest(request),
            );
        }
    }
}

/// A config the host rejected.
#[derive(Debug, Clone)]
struct Rejected {
    version: u64,
    id: ConfigId,
    /// One line, at most [`wire::MAX_REJECT_REASON`] bytes.
    reason: String,
    /// The keeper has yet to acknowledge a `ConfigReject` of it.
    pending: bool,
    /// The seq of the last `ConfigReject` sent (0: none yet).
    sent_at: u64,
}

fn push(
    cfg: &AgentConfig,
    trailer: Trailer,
    out: &mut VecDeque<(Destination, Vec<u8>)>,
    stats: &mut AgentStats,
    to: Destination,
    message: &Message<'_>,
) {
    match wire::encode_framed_to_vec(cfg.protocol, message, trailer, &cfg.key) {
        Ok(bytes) => {
            stats.sent += 1;
            out.push_back((to, bytes));
        }
        // Identities are validated at construction, so every message fits.
        Err(e) => tracing::error!(error = %e, "agent message did not encode"),
    }
}

static PADDING: [u8; MAX_DATAGRAM] = [0; MAX_DATAGRAM];
