//! The keeper's one change stream: every change the core makes, numbered by revision.
//!
//! Each change the core makes (a status change or deletion, what a proxy reports about
//! itself, a config version, an operator action, a `Restart` or `Superseded` sent,
//! mass-loss protection pausing or resuming, a stall of the keeper itself) leaves the
//! core as one [`Change`], numbered with zerokeeper's own **revision**: one per change,
//! consecutive, growing across restarts (a persistent keeper continues from the store's
//! revision). The store commits from this stream, the watch serves it, the HTTP read view
//! is built from it, and logs and metrics read it. Nothing else describes a change.
//!
//! A change is generic over its time type: inside the process `at` is the core's
//! [`Instant`] (real time, not keeper time); once it crosses into
//! the store, the view or the watch it is wall-clock milliseconds since the Unix epoch
//! ([`WallChange`]), converted once, by the driver, with [`Change::map_time`].
//!
//! A config change carries a summary (version, digest, sizes, datasources); the config's
//! content travels beside the stream as a blob for the store (`Keeper::take_changes`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::configdoc::ConfigVersion;
use crate::keeper::Status;
use crate::keeper::transition::Reason;
use crate::time::Instant;

/// One numbered change. `T` is the time type: [`Instant`] in the core, wall-clock
/// milliseconds since the Unix epoch outside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change<T = Instant> {
    /// zerokeeper's revision: one per change, consecutive, never reused within a
    /// generation of the store.
    pub revision: u64,
    /// When the core made it (real time: a stall does not shift it).
    pub at: T,
    /// What changed.
    pub kind: ChangeKind<T>,
}

/// A change as it is stored, watched and shown: times in wall-clock milliseconds since
/// the Unix epoch.
pub type WallChange = Change<u64>;

/// What changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind<T = Instant> {
    /// A proxy registered, changed status, started a new life, or was deleted.
    Status(StatusChange<T>),
    /// What a registered proxy reports about itself changed: the address its datagrams
    /// come from, or the config version it runs. Its status did not change.
    Observed {
        /// The cluster.
        cluster: Arc<str>,
        /// The proxy's identity.
        proxy: Arc<str>,
        /// Its slot in the registry.
        slot: u32,
        /// The source of its latest accepted datagram.
        source: SocketAddr,
        /// The config version it reports running.
        config_version: u64,
    },
    /// A cluster has a new config version (its content is stored beside the stream).
    Config {
        /// The cluster.
        cluster: Arc<str>,
        /// What the version is.
        config: ConfigSummary,
        /// What made it.
        cause: ConfigCause,
    },
    /// An operator acted (the audit record).
    Admin {
        /// What they did.
        action: AdminAction,
        /// The name of the admin token that authenticated the call (`None`: the admin
        /// API asks for no token, or the call came from inside the process). Kept in the
        /// audit record, not in the change log: a stored change has `None`.
        #[serde(skip)]
        by: Option<Arc<str>>,
    },
    /// A `Restart` was sent to a process the registry does not hold.
    RestartSent {
        /// The cluster.
        cluster: Arc<str>,
        /// The proxy's identity.
        proxy: Arc<str>,
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
        proxy: Arc<str>,
        /// The older incarnation, told to stop.
        loser: u64,
        /// The newer incarnation, which holds the identity.
        winner: u64,
        /// Where the notice went.
        to: SocketAddr,
    },
    /// Mass-loss protection paused (or resumed) the deletion of a cluster's lost proxies.
    DeletionPaused {
        /// The cluster.
        cluster: Arc<str>,
        /// Whether deletion is now paused.
        paused: bool,
        /// Its lost proxies.
        lost: usize,
        /// All its proxies.
        total: usize,
    },
    /// The keeper itself did not run for `length` (it was stopped, paused, starved or
    /// blocked): every deadline and token age moved by that much, so the time counts
    /// against no proxy.
    Stall {
        /// How long the keeper did not run, beyond the slop.
        length: Duration,
        /// Registered proxies whose deadlines it shifted.
        shifted: usize,
    },
    /// A proxy echoed a token of a keeper epoch newer than the store's own: the store
    /// went back in time (a backup copied back). The store starts a new generation.
    Rewound {
        /// The newest epoch seen in a token.
        seen_epoch: u32,
    },
    /// A proxy rejected its cluster's current config (`ConfigReject`): it could not
    /// apply it and runs what it ran before. (Last, so stored changes of older releases
    /// still decode.)
    Rejected {
        /// The cluster.
        cluster: Arc<str>,
        /// The proxy's identity.
        proxy: Arc<str>,
        /// Its slot in the registry.
        slot: u32,
        /// The incarnation that rejected it.
        incarnation: u64,
        /// The config version rejected (the cluster's current one).
        config_version: u64,
        /// Why, in the proxy's words: one line, at most 200 bytes.
        reason: Arc<str>,
    },
    /// What operators declared about a cluster changed (its hostgroups, whether it is
    /// frozen, the processes removed from it), or the cluster was deleted (`None`).
    Cluster {
        /// The cluster.
        cluster: Arc<str>,
        /// Its settings now, whole (`None`: the cluster was deleted, with every config
        /// version of it).
        settings: Option<super::cluster::ClusterSettings>,
    },
    /// A `Leave` was sent to a process an operator removed.
    LeaveSent {
        /// The cluster.
        cluster: Arc<str>,
        /// The proxy's identity.
        proxy: Arc<str>,
        /// The incarnation told to leave.
        incarnation: u64,
        /// Where the notice went.
        to: SocketAddr,
    },
}

/// A proxy's status changed (it may have entered or left the registry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange<T = Instant> {
    /// The cluster.
    pub cluster: Arc<str>,
    /// The proxy's identity.
    pub proxy: Arc<str>,
    /// Its slot in the registry (the slot it had, for a deletion).
    pub slot: u32,
    /// The incarnation the record holds after the change (before it, for a deletion).
    pub incarnation: u64,
    /// The status before (`None`: it was not in the registry).
    pub from: Option<Status>,
    /// The status after (`None`: it was deleted).
    pub to: Option<Status>,
    /// Why.
    pub reason: Reason,
    /// When its last accepted datagram arrived, as of this change (`None`: unknown, as
    /// for a proxy restored from a store that did not record it).
    pub last_heartbeat: Option<T>,
    /// The source of its last accepted datagram.
    pub source: SocketAddr,
    /// The config version it reports running.
    pub config_version: u64,
}

/// A config version, without its content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSummary {
    /// The version number.
    pub version: u64,
    /// SHA-256 of the rendered document proxies pull.
    pub digest: [u8; 32],
    /// Bytes of the rendered document.
    pub size: usize,
    /// Bytes of the operator's config file.
    pub base_size: usize,
    /// The active datasource of each hostgroup.
    pub datasources: BTreeMap<String, String>,
}

/// What made a config version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// An operator rolled the cluster back: the version has the content (file and
    /// datasources) of version `to`.
    Rollback {
        /// The earlier version whose content it has.
        to: u64,
    },
}

/// An operator's action, for the audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminAction {
    /// A proxy was removed; it had this status.
    Remove {
        /// The cluster.
        cluster: String,
        /// The proxy.
        proxy: String,
        /// Its status when removed.
        status: Status,
    },
    /// A config was pushed as this version.
    PushConfig {
        /// The cluster.
        cluster: String,
        /// The new version.
        version: u64,
        /// The size of the operator's file.
        size: usize,
    },
    /// A hostgroup's datasource was switched.
    Switch {
        /// The cluster.
        cluster: String,
        /// The hostgroup.
        hostgroup: String,
        /// The datasource it had.
        from: String,
        /// The datasource it has.
        to: String,
        /// The new config version.
        version: u64,
    },
    /// An earlier version's content was made current again, as a new version.
    Rollback {
        /// The cluster.
        cluster: String,
        /// The earlier version whose content it has.
        to: u64,
        /// The new config version.
        version: u64,
    },
    /// A hostgroup of the cluster was declared (or its declaration changed).
    Hostgroup {
        /// The cluster.
        cluster: String,
        /// The hostgroup.
        hostgroup: String,
        /// Its datasources, sorted.
        datasources: Vec<String>,
        /// Its current datasource.
        current: String,
    },
    /// A hostgroup declared through the API was undeclared.
    HostgroupDelete {
        /// The cluster.
        cluster: String,
        /// The hostgroup.
        hostgroup: String,
    },
    /// The cluster was frozen (or unfrozen) for maintenance.
    Freeze {
        /// The cluster.
        cluster: String,
        /// Whether it is frozen now.
        frozen: bool,
    },
    /// The cluster was deleted, with every config version of it.
    DeleteCluster {
        /// The cluster.
        cluster: String,
    },
    /// An operator asked for one of the actions above and was refused; nothing else
    /// changed. (Requests refused for a malformed name are not recorded: they name no
    /// cluster.)
    Refused {
        /// The cluster named.
        cluster: String,
        /// What was asked: `remove`, `push_config`, `switch` or `rollback`.
        action: String,
        /// What was asked of it, for people: `proxy 10.0.0.1:3307`, `70 bytes`,
        /// `hostgroup hg0 from a to b`.
        asked: String,
        /// Why it was refused (the error's message, at most [`MAX_REASON`] bytes).
        reason: String,
    },
}

/// Longest refusal reason an audit entry keeps (longer ones are cut at a character
/// boundary and end with `…`): a gate closed by 100,000 proxies names them all in its
/// error, not in the audit record.
pub const MAX_REASON: usize = 512;

impl AdminAction {
    /// The cluster acted on.
    pub fn cluster(&self) -> &str {
        match self {
            AdminAction::Remove { cluster, .. }
            | AdminAction::PushConfig { cluster, .. }
            | AdminAction::Switch { cluster, .. }
            | AdminAction::Rollback { cluster, .. }
            | AdminAction::Hostgroup { cluster, .. }
            | AdminAction::HostgroupDelete { cluster, .. }
            | AdminAction::Freeze { cluster, .. }
            | AdminAction::DeleteCluster { cluster }
            | AdminAction::Refused { cluster, .. } => cluster,
        }
    }

    /// The action's name: `remove`, `push_config` or `switch` (of a refusal, what was
    /// asked).
    pub fn name(&self) -> &str {
        match self {
            AdminAction::Remove { .. } => "remove",
            AdminAction::PushConfig { .. } => "push_config",
            AdminAction::Switch { .. } => "switch",
            AdminAction::Rollback { .. } => "rollback",
            AdminAction::Hostgroup { .. } => "hostgroup_set",
            AdminAction::HostgroupDelete { .. } => "hostgroup_delete",
            AdminAction::Freeze { frozen: true, .. } => "freeze",
            AdminAction::Freeze { frozen: false, .. } => "unfreeze",
            AdminAction::DeleteCluster { .. } => "delete_cluster",
            AdminAction::Refused { action, .. } => action,
        }
    }
}

impl<T> ChangeKind<T> {
    /// The cluster the change concerns (`None` for a keeper-wide change).
    pub fn cluster(&self) -> Option<&str> {
        match self {
            ChangeKind::Status(c) => Some(&c.cluster),
            ChangeKind::Observed { cluster, .. }
            | ChangeKind::Config { cluster, .. }
            | ChangeKind::RestartSent { cluster, .. }
            | ChangeKind::Superseded { cluster, .. }
            | ChangeKind::DeletionPaused { cluster, .. }
            | ChangeKind::Rejected { cluster, .. }
            | ChangeKind::Cluster { cluster, .. }
            | ChangeKind::LeaveSent { cluster, .. } => Some(cluster),
            ChangeKind::Admin { action, .. } => Some(action.cluster()),
            ChangeKind::Stall { .. } | ChangeKind::Rewound { .. } => None,
        }
    }

    /// The kind as one lowercase word: the SSE event name and the metrics label.
    pub fn name(&self) -> &'static str {
        match self {
            ChangeKind::Status(_) => "status",
            ChangeKind::Observed { .. } => "observed",
            ChangeKind::Config { .. } => "config",
            ChangeKind::Admin { .. } => "admin",
            ChangeKind::RestartSent { .. } => "restart",
            ChangeKind::Superseded { .. } => "superseded",
            ChangeKind::DeletionPaused { paused: true, .. } => "deletion_paused",
            ChangeKind::DeletionPaused { paused: false, .. } => "deletion_resumed",
            ChangeKind::Stall { .. } => "stall",
            ChangeKind::Rewound { .. } => "rewound",
            ChangeKind::Rejected { .. } => "rejected",
            ChangeKind::Cluster { .. } => "cluster",
            ChangeKind::LeaveSent { .. } => "leave",
        }
    }
}

impl<T> Change<T> {
    /// The same change with its times converted by `f` (the driver's one conversion from
    /// core instants to wall-clock milliseconds).
    pub fn map_time<U>(self, f: impl Fn(T) -> U) -> Change<U> {
        let kind = match self.kind {
            ChangeKind::Status(c) => ChangeKind::Status(StatusChange {
                cluster: c.cluster,
                proxy: c.proxy,
                slot: c.slot,
                incarnation: c.incarnation,
                from: c.from,
                to: c.to,
                reason: c.reason,
                last_heartbeat: c.last_heartbeat.map(&f),
                source: c.source,
                config_version: c.config_version,
            }),
            ChangeKind::Observed {
                cluster,
                proxy,
                slot,
                source,
                config_version,
            } => ChangeKind::Observed {
                cluster,
                proxy,
                slot,
                source,
                config_version,
            },
            ChangeKind::Config {
                cluster,
                config,
                cause,
            } => ChangeKind::Config {
                cluster,
                config,
                cause,
            },
            ChangeKind::Admin { action, by } => ChangeKind::Admin { action, by },
            ChangeKind::RestartSent {
                cluster,
                proxy,
                incarnation,
                to,
            } => ChangeKind::RestartSent {
                cluster,
                proxy,
                incarnation,
                to,
            },
            ChangeKind::Superseded {
                cluster,
                proxy,
                loser,
                winner,
                to,
            } => ChangeKind::Superseded {
                cluster,
                proxy,
                loser,
                winner,
                to,
            },
            ChangeKind::DeletionPaused {
                cluster,
                paused,
                lost,
                total,
            } => ChangeKind::DeletionPaused {
                cluster,
                paused,
                lost,
                total,
            },
            ChangeKind::Stall { length, shifted } => ChangeKind::Stall { length, shifted },
            ChangeKind::Rewound { seen_epoch } => ChangeKind::Rewound { seen_epoch },
            ChangeKind::Rejected {
                cluster,
                proxy,
                slot,
                incarnation,
                config_version,
                reason,
            } => ChangeKind::Rejected {
                cluster,
                proxy,
                slot,
                incarnation,
                config_version,
                reason,
            },
            ChangeKind::Cluster { cluster, settings } => ChangeKind::Cluster { cluster, settings },
            ChangeKind::LeaveSent {
                cluster,
                proxy,
                incarnation,
                to,
            } => ChangeKind::LeaveSent {
                cluster,
                proxy,
                incarnation,
                to,
            },
        };
        Change {
            revision: self.revision,
            at: f(self.at),
            kind,
        }
    }
}

/// The content of a config version made in a batch of changes, for the store: the change
/// stream carries only its [`ConfigSummary`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigBlob {
    /// The cluster.
    pub cluster: Arc<str>,
    /// The version, with its content.
    pub config: Arc<ConfigVersion>,
}

/// A proxy's registry entry, as the store keeps it and a keeper boot finds it.
///
/// The core restores from it (cluster, proxy, incarnation, status, source, config version)
/// and ignores the wall-clock times, which the HTTP view shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredProxy {
    /// The cluster.
    pub cluster: String,
    /// The proxy's identity.
    pub proxy: String,
    /// The incarnation the registry holds.
    pub incarnation: u64,
    /// Its status.
    pub status: Status,
    /// Since when it has been in this status (wall clock, ms since the Unix epoch;
    /// `None`: unknown).
    pub since_unix_ms: Option<u64>,
    /// When its last accepted datagram arrived, as of its last change (wall clock, ms
    /// since the Unix epoch; `None`: unknown).
    pub last_heartbeat_unix_ms: Option<u64>,
    /// The source of its last accepted datagram (`None`: unknown).
    pub source: Option<SocketAddr>,
    /// The config version it reported running, as of its last change.
    pub config_version: u64,
}

/// A config version, as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredConfig {
    /// The cluster.
    pub cluster: String,
    /// The version number.
    pub version: u64,
    /// The operator's config file.
    pub base: Vec<u8>,
    /// The active datasource of each hostgroup.
    pub datasources: BTreeMap<String, String>,
    /// Its id, as made (`None`: stored before ids were kept, so [`ConfigId::of`] its
    /// version and digest).
    ///
    /// [`ConfigId::of`]: crate::wire::ConfigId::of
    #[serde(default)]
    pub id: Option<crate::wire::ConfigId>,
}
