//! The keeper's counters: what every datagram read did, or why it was dropped, and the
//! keeper's own stalls. (Changes are in `change`.)

use std::time::Duration;

use crate::wire::WireError;

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
        /// An `up` from an unregistered process while its cluster's restart budget for the
        /// round is spent: it gets its `Restart` in a later round.
        RestartDeferred => "restart_deferred",
        /// An `up` from an unregistered process of a frozen cluster: no `Restart` until
        /// it is unfrozen.
        RestartFrozen => "restart_frozen",
        /// A heartbeat of a removed process within an interval of the last `Leave` sent
        /// to it.
        LeaveSuppressed => "leave_suppressed",
        /// A request echoing a newer leadership term than this leader's: another keeper
        /// leads, or this one's store was restored from an older backup.
        NewerTerm => "newer_term",
        /// A request whose token is stale (or minted for another address), from a
        /// source sent as many challenges this interval as one may get: a replay flood
        /// from spoofed sources, not a proxy.
        ChallengeLimited => "challenge_limited",
        /// A protocol version 1 config request to a keeper that refuses to send configs
        /// in clear (`refuse_plaintext_configs`).
        PlaintextRefused => "plaintext_refused",
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
        /// Served config chunks (sealed, in protocol version 2).
        ConfigServed => "config_served",
        /// Served config chunks in clear, to a protocol version 1 proxy (which cannot
        /// open sealed ones): its config can be read on the network.
        ConfigServedPlaintext => "config_served_plaintext",
        /// Registered an unknown `up` proxy as `up`, while adopting the fleet.
        Adopted => "adopted",
        /// Sent `Leave` (or, to a protocol version 1 proxy, `Superseded`) to a process an
        /// operator removed.
        Left => "left",
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
    /// Changes made (one revision each): transitions, deletions, config versions, admin
    /// actions and the rest of the change stream; never a steady heartbeat.
    pub changes: u64,
    /// Answers not sent because they would have been larger than their request (a bug
    /// if ever non-zero: the protocol's sizes rule it out).
    pub oversized_answers: u64,
    /// Stalls of the keeper itself: lateness past its requested wakeup beyond the slop.
    pub stalls: u64,
    /// Their total length (how far keeper time is behind real time).
    pub stalled: Duration,
    /// Proxies whose deadlines the stalls shifted, added up over the stalls.
    pub stall_shifted: u64,
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
