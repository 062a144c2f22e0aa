//! The watch stream's events and positions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Extra, hex, millis, rfc3339_ms};
use crate::keeper::change::{AdminAction, ChangeKind, ConfigCause, WallChange};

/// A watch position: the `id:` of an event of `/v1/watch`, written `GENERATION-REVISION`
/// (such as `1733061234-1042`), as `Last-Event-ID` and `?after=` take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    /// The store generation.
    pub generation: u64,
    /// The revision of the change.
    pub revision: u64,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.generation, self.revision)
    }
}

/// The text is not `GENERATION-REVISION`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an event id (GENERATION-REVISION, such as 1-42)")]
pub struct BadEventId(pub String);

impl FromStr for EventId {
    type Err = BadEventId;

    fn from_str(s: &str) -> Result<EventId, BadEventId> {
        let bad = || BadEventId(s.to_owned());
        let (generation, revision) = s.trim().split_once('-').ok_or_else(bad)?;
        let number = |n: &str| {
            // `u64::from_str` takes a leading `+`; an id never has one.
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            n.parse::<u64>().map_err(|_| bad())
        };
        Ok(EventId {
            generation: number(generation)?,
            revision: number(revision)?,
        })
    }
}

/// One change, as `/v1/watch` sends it (the `data` of each event; its `event:` is
/// `kind`, its `id:` is `generation-revision`).
///
/// Which members a kind has:
///
/// | kind | members |
/// |---|---|
/// | `status` | `proxy`, `from`, `to` (absent: not registered / deleted), `reason`, `incarnation`, `source`, `config_version` |
/// | `observed` | `proxy`, `source`, `config_version` |
/// | `config` | `version`, `digest`, `cause` (`push`, `switch` or `rollback`; a switch adds `hostgroup`, `from_datasource`, `to_datasource`, a rollback `restored`) |
/// | `admin` | `action` (`remove`: `proxy`, `status`; `push_config`: `version`, `size`; `switch`: `hostgroup`, `from_datasource`, `to_datasource`, `version`; `rollback`: `restored`, `version`); a refused request: `action`, `result` (`refused`), `asked`, `reason` |
/// | `restart` | `proxy`, `incarnation` (told to restart), `address` |
/// | `superseded` | `proxy`, `incarnation` (the older, told to stop), `winner`, `address` |
/// | `deletion_paused`, `deletion_resumed` | `lost`, `total` |
/// | `stall` | `length_ms`, `shifted` (no `cluster`) |
/// | `rewound` | `seen_epoch` (no `cluster`) |
/// | `rejected` | `proxy`, `incarnation`, `version` (rejected), `reason` |
/// | `cluster` | `frozen`, `hostgroups` (how many declared), `removed` (removal markers held); or `deleted` (`true`) |
/// | `leave` | `proxy`, `incarnation` (told to leave), `address` |
///
/// `admin` also has `hostgroup_set` (`hostgroup`, `datasources`, `current_datasource`),
/// `freeze`, `unfreeze` and `delete_cluster` (no more members).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The revision of the change.
    pub revision: u64,
    /// The store generation it belongs to.
    pub generation: u64,
    /// When the keeper made it (RFC 3339, UTC).
    pub at: String,
    /// What kind of change (see the table above).
    pub kind: String,
    /// The cluster (absent for keeper-wide changes: `stall`, `rewound`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The proxy concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// The status before (`status`; absent: it was not registered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The status after (`status`; absent: it was deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Why (`status`), such as `lost_timeout` or `unregister`; why an operator's request
    /// was refused (`admin` refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The incarnation concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<u64>,
    /// The newer incarnation, which holds the identity (`superseded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner: Option<u64>,
    /// Where a command went (`restart`, `superseded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The source of the proxy's latest accepted datagram (`status`, `observed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The config version the proxy reports running (`status`, `observed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_version: Option<u64>,
    /// The cluster's config version made (`config`, `admin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// SHA-256 of the version's rendered document, lowercase hex (`config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// What made the version: `push` or `switch` (`config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// The hostgroup switched (`config` by a switch, `admin` switch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostgroup: Option<String>,
    /// The datasource it had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_datasource: Option<String>,
    /// The datasource it has now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_datasource: Option<String>,
    /// The operator's action: `remove`, `push_config` or `switch` (`admin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The earlier version whose content a rollback made current again (`config` by a
    /// rollback, `admin` rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<u64>,
    /// `refused` when the operator's request was refused (`admin`; absent: done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// What a refused request asked, for people (`admin` refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked: Option<String>,
    /// The status a removed proxy had (`admin` remove).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Bytes of the operator's config file (`admin` push).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Lost proxies of the cluster (`deletion_paused`, `deletion_resumed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    /// All proxies of the cluster (same kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// How long the keeper did not run, beyond the slop (`stall`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length_ms: Option<u64>,
    /// Registered proxies whose deadlines moved by that much (`stall`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shifted: Option<u64>,
    /// The newest keeper epoch a proxy echoed (`rewound`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_epoch: Option<u32>,
    /// Whether the cluster is frozen (`cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen: Option<bool>,
    /// Hostgroups the cluster declares through the API (`cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostgroups: Option<u64>,
    /// Removal markers the cluster holds (`cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<u64>,
    /// `true`: the cluster was deleted (`cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    /// A hostgroup's datasources (`admin` hostgroup_set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datasources: Option<Vec<String>>,
    /// A hostgroup's current datasource (`admin` hostgroup_set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_datasource: Option<String>,
    /// Fields this build does not know (the server sends none).
    #[serde(flatten)]
    pub extra: Extra,
}

impl WatchEvent {
    /// The event for a committed change of store generation `generation`.
    pub fn of(generation: u64, change: &WallChange) -> WatchEvent {
        let mut e = WatchEvent {
            revision: change.revision,
            generation,
            at: rfc3339_ms(change.at),
            kind: change.kind.name().to_owned(),
            cluster: change.kind.cluster().map(str::to_owned),
            ..WatchEvent::default()
        };
        match &change.kind {
            ChangeKind::Status(c) => {
                e.proxy = Some(c.proxy.to_string());
                e.from = c.from.map(|s| s.as_str().to_owned());
                e.to = c.to.map(|s| s.as_str().to_owned());
                e.reason = Some(c.reason.as_str().to_owned());
                e.incarnation = Some(c.incarnation);
                e.source = Some(c.source.to_string());
                e.config_version = Some(c.config_version);
            }
            ChangeKind::Observed {
                proxy,
                source,
                config_version,
                ..
            } => {
                e.proxy = Some(proxy.to_string());
                e.source = Some(source.to_string());
                e.config_version = Some(*config_version);
            }
            ChangeKind::Config { config, cause, .. } => {
                e.version = Some(config.version);
                e.digest = Some(hex(&config.digest));
                match cause {
                    ConfigCause::Push => e.cause = Some("push".to_owned()),
                    ConfigCause::Switch {
                        hostgroup,
                        from,
                        to,
                    } => {
                        e.cause = Some("switch".to_owned());
                        e.hostgroup = Some(hostgroup.clone());
                        e.from_datasource = Some(from.clone());
                        e.to_datasource = Some(to.clone());
                    }
                    ConfigCause::Rollback { to } => {
                        e.cause = Some("rollback".to_owned());
                        e.restored = Some(*to);
                    }
                }
            }
            ChangeKind::Admin { action, .. } => match action {
                AdminAction::Remove { proxy, status, .. } => {
                    e.action = Some("remove".to_owned());
                    e.proxy = Some(proxy.clone());
                    e.status = Some(status.as_str().to_owned());
                }
                AdminAction::PushConfig { version, size, .. } => {
                    e.action = Some("push_config".to_owned());
                    e.version = Some(*version);
                    e.size = Some(*size as u64);
                }
                AdminAction::Switch {
                    hostgroup,
                    from,
                    to,
                    version,
                    ..
                } => {
                    e.action = Some("switch".to_owned());
                    e.hostgroup = Some(hostgroup.clone());
                    e.from_datasource = Some(from.clone());
                    e.to_datasource = Some(to.clone());
                    e.version = Some(*version);
                }
                AdminAction::Rollback { to, version, .. } => {
                    e.action = Some("rollback".to_owned());
                    e.restored = Some(*to);
                    e.version = Some(*version);
                }
                AdminAction::Hostgroup {
                    hostgroup,
                    datasources,
                    current,
                    ..
                } => {
                    e.action = Some("hostgroup_set".to_owned());
                    e.hostgroup = Some(hostgroup.clone());
                    e.datasources = Some(datasources.clone());
                    e.current_datasource = Some(current.clone());
                }
                AdminAction::HostgroupDelete { hostgroup, .. } => {
                    e.action = Some("hostgroup_delete".to_owned());
                    e.hostgroup = Some(hostgroup.clone());
                }
                a @ (AdminAction::Freeze { .. } | AdminAction::DeleteCluster { .. }) => {
                    e.action = Some(a.name().to_owned());
                }
                AdminAction::Refused {
                    action,
                    asked,
                    reason,
                    ..
                } => {
                    e.action = Some(action.clone());
                    e.result = Some("refused".to_owned());
                    e.asked = Some(asked.clone());
                    e.reason = Some(reason.clone());
                }
            },
            ChangeKind::RestartSent {
                proxy,
                incarnation,
                to,
                ..
            } => {
                e.proxy = Some(proxy.to_string());
                e.incarnation = Some(*incarnation);
                e.address = Some(to.to_string());
            }
            ChangeKind::Superseded {
                proxy,
                loser,
                winner,
                to,
                ..
            } => {
                e.proxy = Some(proxy.to_string());
                e.incarnation = Some(*loser);
                e.winner = Some(*winner);
                e.address = Some(to.to_string());
            }
            ChangeKind::DeletionPaused { lost, total, .. } => {
                e.lost = Some(*lost as u64);
                e.total = Some(*total as u64);
            }
            ChangeKind::Stall { length, shifted } => {
                e.length_ms = Some(millis(*length));
                e.shifted = Some(*shifted as u64);
            }
            ChangeKind::Rewound { seen_epoch } => e.seen_epoch = Some(*seen_epoch),
            ChangeKind::Rejected {
                proxy,
                incarnation,
                config_version,
                reason,
                ..
            } => {
                e.proxy = Some(proxy.to_string());
                e.incarnation = Some(*incarnation);
                e.version = Some(*config_version);
                e.reason = Some(reason.to_string());
            }
            ChangeKind::Cluster { settings, .. } => match settings {
                Some(s) => {
                    e.frozen = Some(s.frozen);
                    e.hostgroups = Some(s.hostgroups.len() as u64);
                    e.removed = Some(s.removed.len() as u64);
                }
                None => e.deleted = Some(true),
            },
            ChangeKind::LeaveSent {
                proxy,
                incarnation,
                to,
                ..
            } => {
                e.proxy = Some(proxy.to_string());
                e.incarnation = Some(*incarnation);
                e.address = Some(to.to_string());
            }
        }
        e
    }

    /// The SSE `id:` of this event.
    pub fn id(&self) -> EventId {
        EventId {
            generation: self.generation,
            revision: self.revision,
        }
    }
}

/// The `data` of the final `event: gone` of a watch stream, and the members of a `410
/// gone` problem: the changes after the watcher's position are no longer held (or its
/// position is of another generation, or in the future). List again, then watch from the
/// listing's revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gone {
    /// The oldest revision still held.
    pub oldest: u64,
    /// The current revision.
    pub current: u64,
    /// The current generation.
    pub generation: u64,
}
