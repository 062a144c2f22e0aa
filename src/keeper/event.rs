//! What the keeper tells its driver: events to log, publish and persist, and counters.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::keeper::Status;
use crate::keeper::transition::Reason;
use crate::time::Instant;
use crate::wire::WireError;

/// A proxy's status changed (it may have entered or left the registry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    /// The cluster.
    pub cluster: Arc<str>,
    /// The proxy's identity.
    pub proxy: String,
    /// The incarnation the record holds after the change (before it, for a deletion).
    pub incarnation: u64,
    /// The status before (`None`: it was not in the registry).
    pub from: Option<Status>,
    /// The status after (`None`: it was deleted).
    pub to: Option<Status>,
    /// Why.
    pub reason: Reason,
    /// When.
    pub at: Instant,
}

/// Something the driver should know about, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A status changed.
    StatusChanged(StatusChange),
    /// A `Restart` was sent.
    RestartSent {
        /// The cluster.
        cluster: Arc<str>,
        /// The proxy's identity.
        proxy: String,
        /// The incarnation told to restart.
        incarnation: u64,
        /// Where the command went.
        to: SocketAddr,
    },
    /// A `Superseded` was sent to an older process of an identity a newer one holds.
    Superseded {
        /// The cluster.
        cluster: Arc<str>,
        /// The proxy's identity.
        proxy: String,
        /// The older incarnation, told to stop.
        loser: u64,
        /// The newer incarnation, which holds the identity.
        winner: u64,
        /// Where the notice went.
        to: SocketAddr,
    },
    /// Mass-loss protection paused (or resumed) the deletion of a cluster's lost proxies.
    MassLoss {
        /// The cluster.
        cluster: Arc<str>,
        /// Whether deletion is now paused.
        paused: bool,
        /// Its lost proxies.
        lost: usize,
        /// All its proxies.
        total: usize,
    },
    /// A cluster has a new config version.
    ConfigChanged {
        /// The cluster.
        cluster: Arc<str>,
        /// The new version.
        version: u64,
        /// What made it.
        cause: ConfigCause,
    },
}

/// What made a config version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigCause {
    /// An operator pushed a config file.
    Push,
    /// An operator switched a hostgroup's datasource.
    Switch {
        /// The hostgroup.
        hostgroup: String,
        /// The datasource it had.
        from: String,
        /// The datasource it has now.
        to: String,
    },
}

macro_rules! counted_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $label:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant,)* }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            /// Number of values.
            pub const COUNT: usize = $name::ALL.len();

            /// The value as a snake_case label, for logs and metrics.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $label,)* }
            }
        }
    };
}

counted_enum! {
    /// Why a datagram was dropped without changing anything.
    pub enum DropReason {
        /// Shorter than a header and a tag.
        Truncated => "truncated",
        /// Longer than 1200 bytes.
        Oversized => "oversized",
        /// Not starting with `ZK`.
        BadMagic => "bad_magic",
        /// Another protocol version.
        BadVersion => "bad_version",
        /// A kind byte no message has.
        UnknownKind => "unknown_kind",
        /// A keeper → proxy kind sent to the keeper.
        UnexpectedKind => "unexpected_kind",
        /// A key id the keeper does not hold.
        UnknownKey => "unknown_key",
        /// The tag did not verify.
        BadTag => "bad_tag",
        /// The body did not decode.
        Malformed => "malformed",
        /// The body decoded with bytes left over.
        TrailingBytes => "trailing_bytes",
        /// The cluster name or proxy address is invalid.
        InvalidIdentity => "invalid_identity",
        /// The key may not speak for the cluster named.
        WrongKey => "wrong_key",
        /// Not newer than the last accepted datagram of the identity.
        Stale => "stale",
        /// A `ready` after `up` within one incarnation.
        Regression => "regression",
        /// A config request from a process that is not registered.
        NotRegistered => "not_registered",
        /// A config request for no chunk that exists, or none that fits in its size.
        BadRequest => "bad_request",
        /// A registration while the registry is at its configured size.
        RegistryFull => "registry_full",
        /// An `up` from an unregistered process within an interval of the last `Restart`.
        RestartSuppressed => "restart_suppressed",
    }
}

impl From<WireError> for DropReason {
    fn from(e: WireError) -> DropReason {
        match e {
            WireError::Truncated(_) => DropReason::Truncated,
            WireError::Oversized(_) => DropReason::Oversized,
            WireError::BadMagic => DropReason::BadMagic,
            WireError::UnsupportedVersion(_) => DropReason::BadVersion,
            WireError::UnknownKind(_) => DropReason::UnknownKind,
            WireError::UnknownKey(_) => DropReason::UnknownKey,
            WireError::BadTag => DropReason::BadTag,
            WireError::Malformed => DropReason::Malformed,
            WireError::TrailingBytes(_) => DropReason::TrailingBytes,
            WireError::UnexpectedKind(_) => DropReason::UnexpectedKind,
        }
    }
}

counted_enum! {
    /// What an authenticated, in-order datagram did.
    pub enum Outcome {
        /// Registered a new proxy as `ready`.
        Registered => "registered",
        /// A restarted process took over its identity as `ready`.
        NewIncarnation => "new_incarnation",
        /// Moved a proxy to `up`.
        Transitioned => "transitioned",
        /// Kept a proxy alive in its status.
        Refreshed => "refreshed",
        /// Deleted a proxy (`down` or unregister).
        Deleted => "deleted",
        /// Answered a `down` or unregister of a proxy already gone.
        AlreadyGone => "already_gone",
        /// Answered a stale token with a fresh one.
        Challenged => "challenged",
        /// Sent `Restart`.
        Restarted => "restarted",
        /// Sent `Superseded`.
        Superseded => "superseded",
        /// Served config chunks.
        ConfigServed => "config_served",
    }
}

/// Counters of everything the keeper read and did. Every datagram read is counted once,
/// either in `outcomes` or in `dropped`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams read.
    pub received: u64,
    /// Datagrams dropped, by reason (index: `DropReason as usize`).
    pub dropped: [u64; DropReason::COUNT],
    /// Datagrams that acted, by outcome (index: `Outcome as usize`).
    pub outcomes: [u64; Outcome::COUNT],
    /// Datagrams handed to the driver to send.
    pub sent: u64,
    /// Changes handed to the store (a persistent keeper only): transitions, deletions,
    /// config versions and admin actions, never a steady heartbeat.
    pub changes: u64,
    /// Answers not sent because they would have been larger than their request (a bug
    /// if ever non-zero: the protocol's sizes rule it out).
    pub oversized_answers: u64,
}

impl Stats {
    /// Datagrams dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize]
    }

    /// Datagrams that had `outcome`.
    pub fn outcome(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome as usize]
    }

    /// Datagrams dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }
}
