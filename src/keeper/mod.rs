//! The keeper core: a deterministic, sans-IO state machine.
//!
//! [`Keeper`] holds the registry of clusters and proxies, applies the transitions of
//! `spec/scenario.md` (see [`transition`]: it decides and applies every one), runs the
//! timers (see `timers`), guards cluster-wide operations with the gate, and serves config
//! versions. It reads no clock, does no I/O, spawns nothing and uses no randomness it was
//! not handed.
//!
//! # Methods, in four kinds (as quinn-proto's `Connection`)
//!
//! - **input**: [`Keeper::handle_datagram`] and [`Keeper::handle_timeout`];
//! - **mutators**: the admin calls [`Keeper::remove_proxy`], [`Keeper::push_config`] and
//!   [`Keeper::switch_datasource`], each of which checks and acts in one step, and
//!   [`Keeper::mark_durable`];
//! - **output**: [`Keeper::poll_transmit`], [`Keeper::take_changes`] (the change stream,
//!   see [`change`]), [`Keeper::poll_timeout`];
//! - **getters**: [`Keeper::gate`], [`Keeper::clusters`], [`Keeper::stats`] and the
//!   other O(1) or O(clusters) queries. [`Keeper::proxies`] and [`Keeper::listing`] cost
//!   O(proxies of the cluster): they are for tests and harnesses; the admin API reads its
//!   own view, built from the change stream and [`seen::LastSeen`].
//!
//! # The driver loop
//!
//! After every input or mutator call, drain the output: call `poll_transmit` until it
//! returns `None` and send each datagram, take the changes (commit them, if the keeper is
//! persistent, and report them durable with `mark_durable`), then sleep until
//! `poll_timeout` (or until a datagram arrives) and call `handle_timeout` when it passes.
//!
//! # Time
//!
//! Every input takes `now`, the driver's real monotonic time; a `now` earlier than one
//! already seen is clamped. Inside, the core runs on *keeper time* (see `clock`): real
//! time minus the time in which the keeper itself did not run, measured as lateness
//! against the wakeup it asked for in `poll_timeout`. So a driver must wake the core when
//! `poll_timeout` says (that is how it keeps time), and a keeper that was stopped or
//! starved shifts every deadline by the stall instead of marking its fleet `lost`.
//!
//! # Panics
//!
//! No input panics: every datagram, however malformed, is counted in [`Stats`] and
//! dropped or answered. A panic is a bug in the core.

mod admin;
mod answer;
pub mod change;
mod clock;
pub mod cluster;
mod datagram;
mod event;
pub mod limit;
mod mass_loss;
mod persist;
mod registry;
pub mod rollout;
pub mod seen;
mod timers;
mod token;
pub mod transition;

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
use tracing::{debug, info};

use crate::auth::Keyring;
use crate::time::Instant;
use crate::wire::MAX_TIMING_MS;

/// What a config version is, without its content (as the change stream and views show it).
pub use admin::summary as config_summary;
pub use admin::{AdminError, Blocker, ClusterInfo, GateClosed, ProxyInfo, Pushed, StoredContent};
pub use change::{
    AdminAction, Change, ChangeKind, ConfigBlob, ConfigCause, ConfigSummary, StatusChange,
    StoredConfig, StoredProxy, WallChange,
};
pub use cluster::{ClusterSettings, Declared, Hostgroup, HostgroupInfo};
pub use event::{DropReason, Outcome, Stats};
pub use persist::RestoreError;
pub use rollout::{Rollout, RolloutState};
pub use transition::Reason;

use answer::Pending;
use clock::KeeperClock;
use registry::Registry;
use seen::{LastSeen, SeenWriter};
use timers::{Due, TimerKind, Timers};
use token::TokenMinter;

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

    pub(crate) fn timer(self) -> TimerKind {
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

/// The default [`KeeperConfig::stall_slop`]: tokio wakeups on a loaded 2-core machine are
/// often 50–200 ms late; lateness beyond this is the keeper not running.
pub const DEFAULT_STALL_SLOP: Duration = Duration::from_millis(250);

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
    /// After a boot that does not know the fleet (an empty store, or one found older than
    /// the fleet), an `up` heartbeat of an unknown proxy is adopted as `up` for this long
    /// instead of answered with `Restart` (`None`: three times `lost_after`).
    pub adopt_window: Option<Duration>,
    /// The restart budget: in each restart round, `Restart` goes to at most this share of
    /// a cluster (its registered proxies and tombstones), in thousandths, and at least to
    /// one proxy; the others wait for a later round (250: a quarter).
    pub restart_permille: u32,
    /// How long a restart round lasts (`None`: `lost_after` plus two heartbeat intervals).
    pub restart_round: Option<Duration>,
    /// How late past its requested wakeup the core may run before the lateness counts as
    /// a stall of the keeper itself, which shifts every deadline instead of counting
    /// against the proxies (see `clock`).
    pub stall_slop: Duration,
    /// Challenges one source address (IP and port) may get per heartbeat interval
    /// (0: no limit); see `limit`. A proxy needs at most two; a load generator that
    /// sends as a whole fleet from one socket needs 0.
    pub challenge_limit: u32,
    /// Refuse protocol version 1 config requests: version 1 cannot seal a config, so its
    /// chunks travel in clear (`false`, the default, serves them and counts them as
    /// `config_served_plaintext`).
    pub refuse_plaintext_configs: bool,
    /// A rollout not converged this long after its config became current (or, for a
    /// proxy that registered later, after it did) is reported `stuck`, naming the proxies
    /// that do not run it.
    pub rollout_timeout: Duration,
}

/// The default [`KeeperConfig::rollout_timeout`].
pub const DEFAULT_ROLLOUT_TIMEOUT: Duration = Duration::from_secs(60);

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
            adopt_window: None,
            restart_permille: 250,
            restart_round: None,
            stall_slop: DEFAULT_STALL_SLOP,
            challenge_limit: limit::CHALLENGES_PER_INTERVAL,
            refuse_plaintext_configs: false,
            rollout_timeout: DEFAULT_ROLLOUT_TIMEOUT,
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
    /// The restart share is 0 or above 100 %, or the round is shorter than an interval.
    #[error(
        "the restart share must be above 0 and at most 1, and restart_round at least one heartbeat interval"
    )]
    RestartBudget,
    /// The stall slop is not shorter than `lost_after`.
    #[error("stall_slop must be shorter than lost_after")]
    StallSlop,
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
        if !(1..=1000).contains(&self.restart_permille)
            || self
                .restart_round
                .is_some_and(|round| round < self.heartbeat_interval)
        {
            return Err(KeeperConfigError::RestartBudget);
        }
        if self.stall_slop >= self.lost_after {
            return Err(KeeperConfigError::StallSlop);
        }
        Ok(())
    }

    /// How long a restart round lasts.
    pub fn restart_round(&self) -> Duration {
        self.restart_round
            .unwrap_or(self.lost_after + 2 * self.heartbeat_interval)
    }

    /// How many `Restart`s a cluster of `size` (registered proxies and tombstones) may be
    /// sent in one round: its share, rounded up, and at least one.
    pub fn restart_allowance(&self, size: usize) -> usize {
        (size * self.restart_permille as usize)
            .div_ceil(1000)
            .max(1)
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
/// Compiled only with the `test-hooks` feature, which the crate's own tests turn on.
#[cfg(feature = "test-hooks")]
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

/// A cluster, a config id and a key.
type SealedFor = (
    std::sync::Arc<str>,
    crate::wire::ConfigId,
    crate::auth::KeyIndex,
);

/// The keyed digest and the sealer of each config served sealed, by cluster and key.
type Sealers = std::collections::HashMap<
    SealedFor,
    ([u8; 32], crate::seal::ChunkSealer),
    foldhash::fast::FixedState,
>;

/// The keeper state machine. See the [module documentation](self).
#[derive(Debug)]
pub struct Keeper {
    config: KeeperConfig,
    keys: Keyring,
    tokens: TokenMinter,
    /// How many challenges each source has had this interval.
    challenges: limit::ChallengeLimit,
    /// The keyed digest and sealer of each (cluster, config id, key) whose chunks were
    /// served.
    sealers: Sealers,
    /// The secret the config versions this keeper makes are named under (`None`: by
    /// [`ConfigId::of`](crate::wire::ConfigId::of), which anyone can compute).
    config_id_key: Option<crate::wire::ConfigIdKey>,
    /// The formats clusters declare their config files are in.
    config_formats: std::collections::BTreeMap<String, crate::configdoc::ConfigFormat>,
    /// The hostgroups the keeper's config file declares.
    declared_hostgroups: cluster::DeclaredHostgroups,
    clock: KeeperClock,
    registry: Registry,
    timers: Timers,
    seen: SeenWriter,
    pending: VecDeque<Pending>,
    stream: persist::Stream,
    /// Until when (keeper time) an unknown proxy's `up` is adopted rather than restarted:
    /// after a boot that did not know the fleet.
    adopt_until: Option<Instant>,
    terms: Terms,
    /// When (keeper time) the latest datagram was read, of any kind or validity.
    heard: Option<Instant>,
    stats: Stats,
    #[cfg(feature = "test-hooks")]
    broken: Option<BrokenRule>,
}

/// Heartbeats a leader must have missed, all of them, to think itself deaf
/// ([`Keeper::deafness`]): so many lost together from independent proxies is far less
/// likely than a fault of the leader's own network.
pub const DEAF_MIN_EXPECTED: u64 = 8;

/// `up` proxies a leader must hold to think itself deaf ([`Keeper::deafness`]): the
/// silence of fewer is as likely their death as the leader's deafness.
pub const DEAF_MIN_PROXIES: usize = 3;

/// A leader that reads nothing from a fleet that should be talking to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deafness {
    /// How long it has read nothing (keeper time).
    pub silent_for: Duration,
    /// Its `up` proxies.
    pub up: usize,
}

/// The leadership term the keeper answers under (protocol version 2, `docs/PROTOCOL.md`
/// §17.2).
#[derive(Clone, Copy, Debug, Default)]
struct Terms {
    /// The term every version 2 answer carries.
    current: u64,
    /// Whether the term is an elected leader's (then a request echoing a newer one is
    /// not acted on) or a lone keeper's (then it takes the newer one as its own).
    fenced: bool,
    /// The largest term a request echoed above `current`, while fenced (0: none).
    newer: u64,
}

impl Keeper {
    /// A keeper with an empty registry, that keeps nothing for a store (its answers wait
    /// for nothing; its changes are numbered from 1).
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
        let key_ids = keys.ids_by_index();
        let granularity = (config.heartbeat_interval / 2).max(Duration::from_millis(1));
        let tokens = TokenMinter::new(epoch, &token_secret, granularity, config.lost_after);
        let challenges =
            limit::ChallengeLimit::new(config.heartbeat_interval, config.challenge_limit);
        let clock = KeeperClock::new(now, config.stall_slop);
        Ok(Keeper {
            config,
            keys,
            tokens,
            challenges,
            sealers: std::collections::HashMap::default(),
            config_id_key: None,
            config_formats: std::collections::BTreeMap::new(),
            declared_hostgroups: cluster::DeclaredHostgroups::new(),
            clock,
            registry: Registry::default(),
            timers: Timers::default(),
            seen: {
                let mut seen = SeenWriter::new(LastSeen::new());
                seen.set_key_ids(key_ids);
                seen
            },
            pending: VecDeque::new(),
            stream: persist::Stream::default(),
            adopt_until: None,
            terms: Terms::default(),
            heard: None,
            stats: Stats::default(),
            #[cfg(feature = "test-hooks")]
            broken: None,
        })
    }

    /// Acts as the elected leader of `term`: every version 2 answer carries it, and a
    /// request that echoes a newer term (the fleet has heard a newer leader, or the
    /// store that minted `term` was restored from an older backup) is not acted on
    /// ([`DropReason::NewerTerm`]); [`Keeper::newer_term`] tells the driver, which must
    /// stop leading and see that the next term is above it.
    ///
    /// A keeper never told to lead is a lone keeper: it starts at term 0 and takes any
    /// newer term a request echoes as its own, so a fleet that has heard a leader of
    /// several keepers keeps obeying it when it runs alone again.
    pub fn lead(&mut self, term: u64) {
        self.terms = Terms {
            current: term,
            fenced: true,
            newer: 0,
        };
    }

    /// Whether this leader seems deaf: it has read datagrams in its term, but none for
    /// half of `lost_after`, while its `up` proxies (at least [`DEAF_MIN_PROXIES`])
    /// should have sent it at least [`DEAF_MIN_EXPECTED`] heartbeats in that time. Its inbound path is then the likely
    /// fault, not the proxies, and a standby may well hear them: the driver steps down
    /// before the silence reaches `lost_after`, so that nobody is marked `lost` for
    /// the leader's deafness. Only a leader ([`Keeper::lead`]) is ever deaf: a lone
    /// keeper has nobody to hand over to.
    ///
    /// A new leader that has read nothing yet is never deaf (a fleet that really went
    /// silent costs one handover at most, not a leadership that moves for ever), and a
    /// small fleet never is (one or two proxies falling silent is no evidence, and a
    /// lost heartbeat must not move the leadership).
    pub fn deafness(&self) -> Option<Deafness> {
        if !self.terms.fenced {
            return None;
        }
        let heard = self.heard?;
        let silent_for = self.clock.now() - heard;
        if silent_for < self.config.lost_after / 2 {
            return None;
        }
        let up = self.registry.up_count();
        let interval = self.config.heartbeat_interval.as_nanos().max(1);
        let expected = up as u128 * silent_for.as_nanos() / interval;
        (up >= DEAF_MIN_PROXIES && expected >= u128::from(DEAF_MIN_EXPECTED))
            .then_some(Deafness { silent_for, up })
    }

    /// The term this keeper answers under.
    pub fn term(&self) -> u64 {
        self.terms.current
    }

    /// The largest term above this leader's that a request echoed, if any.
    pub fn newer_term(&self) -> Option<u64> {
        (self.terms.newer > 0).then_some(self.terms.newer)
    }

    /// Breaks one rule of the transition table on purpose, so a test can show that its
    /// invariant checks catch a faulty keeper. Compiled only with the `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
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

    /// When each registered proxy was last heard, by slot: the table the HTTP view reads.
    pub fn last_seen(&self) -> LastSeen {
        self.seen.table().clone()
    }

    /// Adopts the fleet for the adopt window from `now` (keeper time): an `up` heartbeat
    /// of a proxy this keeper has never seen is registered as `up`, not restarted.
    fn adopt_from(&mut self, now: Instant) {
        let window = self
            .config
            .adopt_window
            .unwrap_or(self.config.lost_after * 3);
        self.adopt_until = Some(now + window);
        info!(
            window = ?window,
            "the store does not know the fleet (empty, or older than the fleet): unknown proxies saying `up` are adopted as `up` for this long, not restarted"
        );
    }

    /// Adopts the fleet for the adopt window from now, as a boot on an empty store does:
    /// for a store restored from a snapshot, which may not know proxies registered since.
    pub fn adopt_fleet(&mut self) {
        self.adopt_from(self.clock.now());
    }

    /// Whether an unknown proxy's `up` is adopted at `now`.
    fn adopting(&self, now: Instant) -> bool {
        self.adopt_until.is_some_and(|until| now < until)
    }

    /// Every stall of the keeper so far, added up: how far keeper time is behind real time.
    pub fn stalled(&self) -> Duration {
        self.clock.stalled()
    }

    /// Takes an input's real `now`, accounts for a stall it reveals, and returns keeper
    /// time.
    fn enter(&mut self, now: Instant) -> Instant {
        if let Some(length) = self.clock.enter(now) {
            let shifted = self.registry.len();
            self.stats.stalls += 1;
            self.stats.stalled += length;
            self.stats.stall_shifted += shifted as u64;
            self.record(ChangeKind::Stall { length, shifted });
        }
        self.clock.now()
    }

    /// Handles one datagram received from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let now = self.enter(now);
        self.heard = Some(now);
        self.stats.received += 1;
        match self.accept(now, from, datagram) {
            Ok(outcome) => self.stats.outcomes[outcome as usize] += 1,
            Err(reason) => {
                self.stats.dropped[reason as usize] += 1;
                debug!(%from, len = datagram.len(), reason = reason.as_str(), "datagram dropped");
            }
        }
    }

    /// Handles every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.enter(now);
        while let Some(due) = self.timers.pop_due(&mut self.registry, now) {
            match due {
                Due::Record { kind, at, slot } => self.fire(kind, at, slot, now),
                Due::Tombstone { cluster } => self.release_cluster(cluster),
            }
        }
    }

    /// The next moment [`Keeper::handle_timeout`] must be called (real time), if any.
    ///
    /// Takes `&mut self` to discard stale timer entries at the front of the queues, and
    /// because the moment returned is the wakeup against which the core measures stalls.
    /// While any proxy is registered it is never more than half a heartbeat interval away.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let deadline = self
            .timers
            .next_deadline(&self.registry)
            .map(|at| self.clock.real_time(at));
        let tick = (self.registry.len() > 0)
            .then(|| self.clock.real() + (self.config.heartbeat_interval / 2));
        let next = deadline.into_iter().chain(tick).min()?;
        Some(self.clock.wake_by(next))
    }
}
