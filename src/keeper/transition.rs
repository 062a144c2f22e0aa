//! The status transitions of `spec/scenario.md`, in one place.
//!
//! [`decide`] is a pure function from what the keeper knows of an identity and what a
//! datagram says to what the keeper must do. The keeper applies the decision; timers
//! (ready timeout, lost, delete) are in `Keeper::handle_timeout`, and the operator's
//! remove is `Keeper::remove_proxy`.
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
//! | any        | datagram of a smaller incarnation        | same  | Superseded  |
//! | up or lost | `ready` of the same incarnation          | same  | dropped     |
//!
//! Before the table: a datagram whose `(incarnation, seq)` is not newer than the last one
//! accepted for the identity (or than its tombstone's) is dropped silently, so no
//! duplicated, delayed or replayed datagram moves anything; and a datagram whose
//! freshness token is stale is answered with a `Challenge` and changes nothing.

use crate::keeper::Status;
use crate::wire::ProxyStatus;

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
    /// Deleted recently: the last accepted stamp is remembered.
    Tombstone(Stamp),
    /// In the registry.
    Live(Status, Stamp),
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
}

/// Decides what a datagram does. `fresh` is whether its token counts.
pub(crate) fn decide(known: Known, said: Said, stamp: Stamp, fresh: bool) -> Decision {
    // Ordering first: a datagram that is not newer than the last accepted one is a
    // duplicate, a delayed packet or a replay, and must not even elicit an answer.
    match known {
        Known::Live(_, last) if stamp.incarnation == last.incarnation && stamp.seq <= last.seq => {
            return Decision::Stale;
        }
        Known::Tombstone(last) if stamp <= last => return Decision::Stale,
        _ => {}
    }
    if !fresh {
        return Decision::Challenge;
    }
    match known {
        Known::Live(_, last) if stamp.incarnation < last.incarnation => Decision::Superseded {
            winner: last.incarnation,
        },
        Known::Live(current, last) => {
            let newer_process = stamp.incarnation > last.incarnation;
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
        Known::Nothing | Known::Tombstone(_) => match said {
            Said::Heartbeat(ProxyStatus::Ready) => Decision::Register,
            Said::Heartbeat(ProxyStatus::Up) => Decision::Restart,
            Said::Heartbeat(ProxyStatus::Down) | Said::Unregister => Decision::AlreadyGone,
        },
    }
}

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
            decide(Known::Live(Status::Up, S), hb(ProxyStatus::Up), S, false),
            Decision::Stale
        );
        assert_eq!(
            decide(Known::Tombstone(S), hb(ProxyStatus::Ready), later(4), true),
            Decision::Stale
        );
        assert_eq!(
            decide(
                Known::Tombstone(S),
                hb(ProxyStatus::Ready),
                Stamp {
                    incarnation: 9,
                    seq: 99
                },
                true
            ),
            Decision::Stale
        );
        assert_eq!(
            decide(
                Known::Live(Status::Up, S),
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
                Known::Live(Status::Up, S),
                hb(ProxyStatus::Ready),
                later(4),
                true
            ),
            Decision::Stale
        );
        assert_eq!(
            decide(
                Known::Live(Status::Up, S),
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
            decide(Known::Live(Status::Up, S), hb(ProxyStatus::Up), old, true),
            Decision::Superseded { winner: 10 }
        );
        assert_eq!(
            decide(
                Known::Live(Status::Up, S),
                hb(ProxyStatus::Ready),
                new,
                true
            ),
            Decision::NewLife
        );
        assert_eq!(
            decide(Known::Live(Status::Lost, S), hb(ProxyStatus::Up), new, true),
            Decision::Restart
        );
    }
}
