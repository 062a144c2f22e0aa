//! High availability: several keepers, one of which leads.
//!
//! Exactly one keeper acts (writes the store, deletes, sends `Restart`, serves config
//! changes): the one the election (on etcd: `etcd::EtcdElection`) made leader. Its leadership is a **term**, a number
//! that only grows, and a lease that it must keep renewing. The others are standbys:
//! they serve reads and wait to be elected.
//!
//! Two fences keep a deposed leader (one that was paused, or cut off from the election's
//! store, past its lease) from acting after another is elected:
//!
//! - **In time.** The leader may act only until its lease, as last confirmed, could have
//!   expired: [`LeaseClock`] counts from when each renewal was *sent* (not answered), on
//!   the monotonic clock, minus a margin. Past that instant the keeper stops sending and
//!   committing anything ([`LeaseGate`], which the driver checks before every send), and
//!   exits so that its supervisor starts it again as a standby (as Kubernetes' controller
//!   manager does when it loses its lease).
//! - **In the store.** Every write of the leader is a transaction that compares the
//!   leadership's fence (the leader key's creation revision, in etcd): a write of a
//!   deposed leader fails and lands nothing, whatever its clock says.
//!
//! Why exit rather than step down in place: a keeper that lost its lease may hold queued
//! answers, a half-applied batch and timers of a term that is over. Starting again from
//! the store is the one way to be sure none of it leaks into the next term.

#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "etcd")]
pub mod run;
pub mod standby;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::time::Instant;

/// The exit status of a keeper whose leadership lease could have expired (`EX_TEMPFAIL`):
/// its supervisor starts it again, as a standby.
pub const LEASE_LOST_EXIT: u8 = 75;

/// What a keeper says of itself when it leads (and what standbys show of the leader).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeeperInfo {
    /// A name for this keeper, unique in the deployment (default: host name and port).
    pub id: String,
    /// Where proxies send heartbeats to it.
    pub udp: String,
    /// Its admin API, as operators reach it (`http://host:port`).
    pub http: String,
}

/// One leadership: who, which term, and since when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leadership {
    /// The leader.
    pub leader: KeeperInfo,
    /// The term: larger than every earlier leadership's, never reused.
    pub term: u64,
    /// When it began (wall clock, milliseconds since the Unix epoch).
    pub since_unix_ms: u64,
}

/// What a keeper process is, for its admin API and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// The only keeper: no election.
    Single,
    /// Elected: it acts, in this leadership.
    Leader(Leadership),
    /// Not elected: it serves reads of the committed state, and names the leader (if
    /// any) to whoever asks it to act.
    Standby(Option<Leadership>),
}

impl Role {
    /// `single`, `leader` or `standby`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Single => "single",
            Role::Leader(_) => "leader",
            Role::Standby(_) => "standby",
        }
    }

    /// The leadership this keeper knows of (its own, as leader).
    pub fn leadership(&self) -> Option<&Leadership> {
        match self {
            Role::Single => None,
            Role::Leader(l) => Some(l),
            Role::Standby(l) => l.as_ref(),
        }
    }
}

/// How a keeper of several fares with its etcd, for its metrics.
#[derive(Debug, Default)]
pub struct EtcdHealth {
    /// Whether the last request to etcd (a renewal, a campaign, a standby's read) was
    /// answered.
    reachable: AtomicBool,
    /// Requests that failed or were not answered in time.
    failures: AtomicU64,
    /// Lease renewals etcd confirmed.
    renewals: AtomicU64,
}

impl EtcdHealth {
    /// A request to etcd was answered.
    pub fn answered(&self) {
        self.reachable.store(true, Ordering::Relaxed);
    }

    /// A request to etcd failed or was not answered in time.
    pub fn failed(&self) {
        self.reachable.store(false, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A lease renewal was confirmed.
    pub fn renewed(&self) {
        self.answered();
        self.renewals.fetch_add(1, Ordering::Relaxed);
    }

    /// (reachable, failures, renewals).
    pub fn read(&self) -> (bool, u64, u64) {
        (
            self.reachable.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
            self.renewals.load(Ordering::Relaxed),
        )
    }
}

/// What the admin API shows of a keeper's place among several: its role, and how it
/// fares with etcd (`None` for a keeper alone).
#[derive(Clone, Debug)]
pub struct HaView {
    /// The role, as it changes.
    pub role: tokio::sync::watch::Receiver<Role>,
    /// etcd's health, for a keeper of several.
    pub etcd: Option<Arc<EtcdHealth>>,
}

impl HaView {
    /// The view of a keeper alone.
    pub fn single() -> HaView {
        HaView {
            role: tokio::sync::watch::channel(Role::Single).1,
            etcd: None,
        }
    }
}

/// A leader's lease, as the leader itself may rely on it.
///
/// The lease is renewed by messages to the election's store; a renewal sent at `t` and
/// answered with a time-to-live of `ttl` keeps the lease until at least `t + ttl` in the
/// store's eyes (the store counts from when it received the renewal, later than `t`). So
/// the leader may act until `t + ttl - margin`, on its own monotonic clock, with `t` the
/// send time of the latest renewal that was answered. The margin covers the difference
/// of clock rates between the two machines and the leader's own lateness in noticing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseClock {
    margin: Duration,
    /// Until when acting is safe, per the renewals answered so far.
    until: Option<Instant>,
}

/// A renewal on its way: when it was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewal {
    sent: Instant,
}

impl LeaseClock {
    /// A lease not yet confirmed, to be trusted only up to `margin` before its expiry.
    pub fn new(margin: Duration) -> LeaseClock {
        LeaseClock {
            margin,
            until: None,
        }
    }

    /// A renewal is sent at `now` (or the lease granted by a request sent at `now`).
    pub fn sent(&self, now: Instant) -> Renewal {
        Renewal { sent: now }
    }

    /// `renewal` was answered: the store keeps the lease for `ttl` more. A renewal older
    /// than one already counted cannot shorten the lease.
    pub fn answered(&mut self, renewal: Renewal, ttl: Duration) {
        let until = renewal.sent + ttl.saturating_sub(self.margin);
        if self.until.is_none_or(|u| until > u) {
            self.until = Some(until);
        }
    }

    /// Until when the leader may act (`None`: never confirmed).
    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    /// Whether the leader may act at `now`.
    pub fn may_act(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }
}

/// The lease's deadline, shared between the task that renews it and the driver that
/// acts: the driver checks it before it sends or commits anything.
#[derive(Debug, Default)]
pub struct LeaseGate {
    /// Nanoseconds of the driver's clock until which acting is safe; 0: never, and
    /// `u64::MAX`: always (a keeper that does not run under an election).
    until_nanos: AtomicU64,
    /// Closed for good: no later lease opens it again.
    lost: AtomicBool,
}

impl LeaseGate {
    /// A gate that is always open: a keeper alone, without an election.
    pub fn always() -> Arc<LeaseGate> {
        Arc::new(LeaseGate {
            until_nanos: AtomicU64::new(u64::MAX),
            lost: AtomicBool::new(false),
        })
    }

    /// A gate that opens once a lease is confirmed.
    pub fn closed() -> Arc<LeaseGate> {
        Arc::new(LeaseGate::default())
    }

    /// Publishes the lease's deadline.
    pub fn set(&self, lease: &LeaseClock) {
        if self.lost.load(Ordering::Acquire) {
            return;
        }
        let nanos = lease.until().map_or(0, Instant::as_nanos);
        self.until_nanos.fetch_max(nanos, Ordering::AcqRel);
    }

    /// Closes the gate for good (leadership lost).
    pub fn close(&self) {
        self.lost.store(true, Ordering::Release);
        self.until_nanos.store(0, Ordering::Release);
    }

    /// Whether acting is safe at `now` (the driver's clock).
    pub fn open(&self, now: Instant) -> bool {
        now.as_nanos() < self.until_nanos.load(Ordering::Acquire)
    }

    /// Until when acting is safe (`None`: not now; `Some(Instant::from_nanos(u64::MAX))`
    /// for a gate that is always open).
    pub fn until(&self) -> Option<Instant> {
        match self.until_nanos.load(Ordering::Acquire) {
            0 => None,
            nanos => Some(Instant::from_nanos(nanos)),
        }
    }
}

/// Why a leader stopped: its lease could have expired, so another keeper may lead.
/// Nothing was sent or committed after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error(
    "the leadership lease could have expired: stopped without acting, so that another keeper can lead"
)]
pub struct LeaseLost;

impl LeaseLost {
    /// Whether `error` is (or wraps) a [`LeaseLost`].
    pub fn is(error: &std::io::Error) -> bool {
        error
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<LeaseLost>().is_some())
    }
}

/// A leader that reads nothing from a fleet that should be talking to it
/// ([`crate::keeper::Keeper::deafness`]): it steps down before anybody could be marked
/// `lost` for its own deafness, and waits before it campaigns again.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "read nothing for {silent_for:?} from {up} up proxies: this leader's network seems deaf; stepping down so that a keeper that hears them leads"
)]
pub struct Deaf {
    /// How long it read nothing.
    pub silent_for: std::time::Duration,
    /// Its `up` proxies.
    pub up: usize,
}

impl Deaf {
    /// Whether `error` is (or wraps) a [`Deaf`].
    pub fn is(error: &std::io::Error) -> bool {
        error
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<Deaf>().is_some())
    }
}

/// A leader read a request that echoed a newer leadership term than its own: the fleet
/// has obeyed a newer leader (another keeper leads, or this one's store was restored
/// from an older backup). It acted on nothing of it, and steps down.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "a proxy echoes leadership term {seen}, newer than this leader's {term}: stepping down, so that the next leader's term is above it"
)]
pub struct TermBehind {
    /// This leader's term.
    pub term: u64,
    /// The newest term a request echoed.
    pub seen: u64,
}

impl TermBehind {
    /// The [`TermBehind`] that `error` is (or wraps), if it is one.
    pub fn of(error: &std::io::Error) -> Option<TermBehind> {
        error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<TermBehind>())
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn a_lease_counts_from_when_its_renewal_was_sent_minus_the_margin() {
        let mut lease = LeaseClock::new(Duration::from_millis(500));
        assert!(!lease.may_act(at(0)), "never confirmed");
        let renewal = lease.sent(at(1_000));
        // Answered late: the answer's arrival does not move the deadline.
        lease.answered(renewal, Duration::from_secs(5));
        assert_eq!(lease.until(), Some(at(5_500)));
        assert!(lease.may_act(at(5_499)));
        assert!(!lease.may_act(at(5_500)));
    }

    #[test]
    fn an_old_renewal_answered_late_cannot_shorten_the_lease() {
        let mut lease = LeaseClock::new(Duration::from_millis(500));
        let old = lease.sent(at(1_000));
        let new = lease.sent(at(3_000));
        lease.answered(new, Duration::from_secs(5));
        lease.answered(old, Duration::from_secs(5));
        assert_eq!(lease.until(), Some(at(7_500)));
    }

    #[test]
    fn a_gate_opens_with_the_lease_and_closes_for_good() {
        let gate = LeaseGate::closed();
        assert!(!gate.open(at(0)));
        let mut lease = LeaseClock::new(Duration::from_millis(500));
        let renewal = lease.sent(at(0));
        lease.answered(renewal, Duration::from_secs(2));
        gate.set(&lease);
        assert!(gate.open(at(1_499)));
        assert!(!gate.open(at(1_500)), "past the lease, nothing is safe");
        gate.close();
        assert!(!gate.open(at(0)));
        gate.set(&lease);
        assert!(!gate.open(at(0)), "a lost leadership stays lost");
        assert!(LeaseGate::always().open(at(u64::MAX / 2_000_000)));
    }
}
