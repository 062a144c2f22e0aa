//! The admin API's JSON: one type per body, shared by the server ([`crate::http`]) and the
//! operator's client ([`crate::cli`]), so the two cannot drift apart.
//!
//! Rules every type here follows:
//!
//! - **Revisions.** Every listing carries the `generation` and `revision` it reflects: a
//!   client that lists and then watches with `after=GENERATION-REVISION` misses nothing
//!   and sees nothing twice (the informer pattern). The answer to a change made through
//!   the API carries the `revision` of that change; the read endpoints reflect it by the
//!   time the answer is sent (read-your-writes).
//! - **Unknown is null.** A time, age or address the keeper does not know (a proxy
//!   restored from the store and not heard since, from a store that did not record it) is
//!   `null`, never invented.
//! - **Enumerations are strings** (`status`, `gate`, `kind`, `reason`): an older client
//!   still reads the answers of a newer keeper that has learnt a new value.
//! - **Unknown fields are kept, not refused**, by the types a client reads whole and may
//!   print (`extra`), so `zerokeeper status -o json` shows what a newer keeper sends. The
//!   server never fills `extra`.
//!
//! Problems (RFC 9457) are [`ProblemBody`]; every `type` the API has or will have is a
//! [`ProblemKind`], with its HTTP status.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::identity::status_key;
use crate::keeper::change::{AdminAction, ChangeKind, ConfigCause, WallChange};

/// Fields a newer keeper sends that this build does not know.
pub type Extra = Map<String, Value>;

/// One proxy, as `GET /v1/proxies` and its kin show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProxyView {
    /// The cluster.
    pub cluster: String,
    /// The proxy's identity.
    pub proxy: String,
    /// `ready`, `up` or `lost`.
    pub status: String,
    /// The incarnation the registry holds.
    pub incarnation: u64,
    /// When its last datagram was accepted (RFC 3339, UTC; `null`: unknown).
    pub last_heartbeat: Option<String>,
    /// Milliseconds since then (`null`: unknown).
    pub last_heartbeat_age_ms: Option<u64>,
    /// Since when it has been in this status (RFC 3339, UTC; `null`: unknown).
    pub since: Option<String>,
    /// Milliseconds since then (`null`: unknown).
    pub since_age_ms: Option<u64>,
    /// The address its datagrams come from (`null`: unknown).
    pub source: Option<String>,
    /// The config version it reports running.
    pub config_version: u64,
    /// Mass-loss protection holds for its cluster: lost proxies are not being deleted.
    #[serde(default)]
    pub deletion_paused: bool,
    /// Fields this build does not know (the server sends none).
    #[serde(flatten)]
    pub extra: Extra,
}

/// One cluster, as `GET /v1/clusters` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The cluster's name.
    pub name: String,
    /// Proxies `ready`.
    pub ready: u64,
    /// Proxies `up`.
    pub up: u64,
    /// Proxies `lost`.
    pub lost: u64,
    /// The current config version.
    pub config_version: u64,
    /// `open` (every proxy is `up`) or `closed`.
    pub gate: String,
    /// Mass-loss protection holds: its lost proxies are not being deleted.
    pub deletion_paused: bool,
}

/// `open` or `closed`, as [`ClusterView::gate`] says it.
pub fn gate_word(open: bool) -> &'static str {
    if open { "open" } else { "closed" }
}

/// The body of `GET /v1/clusters`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterList {
    /// The store generation the listing belongs to.
    pub generation: u64,
    /// The revision it reflects: every change up to it, none after.
    pub revision: u64,
    /// Every cluster, sorted by name.
    pub clusters: Vec<ClusterView>,
}

/// The body of `GET /v1/proxies` and `GET /v1/clusters/{cluster}/proxies`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProxyList {
    /// The store generation the listing belongs to.
    pub generation: u64,
    /// The revision it reflects: every change up to it, none after.
    pub revision: u64,
    /// The cluster (only in a cluster's listing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The proxies, sorted by cluster and identity.
    pub proxies: Vec<ProxyView>,
}

/// A proxy that keeps a cluster's gate closed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Blocker {
    /// The proxy's identity.
    pub proxy: String,
    /// Its status (never `up`).
    pub status: String,
}

/// The body of `GET /v1/clusters/{cluster}/gate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateView {
    /// The cluster.
    pub cluster: String,
    /// Whether push config and switch datasource may run.
    pub open: bool,
    /// The proxies keeping it closed, sorted by identity (empty when open).
    pub blockers: Vec<Blocker>,
}

/// The body of `GET /v1/clusters/{cluster}/config`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigView {
    /// The cluster.
    pub cluster: String,
    /// The current version.
    pub version: u64,
    /// SHA-256 of the rendered document, lowercase hex.
    pub digest: String,
    /// Bytes of the rendered document (what proxies pull).
    pub size: u64,
    /// Bytes of the operator's config file.
    pub base_size: u64,
    /// The datasource of each hostgroup.
    pub datasources: BTreeMap<String, String>,
}

/// The answer to `DELETE /v1/clusters/{cluster}/proxies/{proxy}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// The cluster.
    pub cluster: String,
    /// The proxy deleted.
    pub proxy: String,
    /// The status it had.
    pub status: String,
    /// The revision of the deletion.
    pub revision: u64,
}

/// The answer to `PUT /v1/clusters/{cluster}/config`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pushed {
    /// The cluster.
    pub cluster: String,
    /// The cluster's config version after the push.
    pub version: u64,
    /// The revision of the change (the current revision when nothing changed).
    pub revision: u64,
    /// Whether a new version was made. `false`: the push was identical to the current
    /// version, nothing changed, and that is a success (the CLI says so and exits 0).
    #[serde(default = "yes")]
    pub changed: bool,
}

fn yes() -> bool {
    true
}

/// The body of `POST /v1/clusters/{cluster}/switch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchRequest {
    /// The hostgroup.
    pub hostgroup: String,
    /// The datasource it must have now.
    pub from: String,
    /// The datasource it gets.
    pub to: String,
}

/// The answer to `POST /v1/clusters/{cluster}/switch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switched {
    /// The cluster.
    pub cluster: String,
    /// The config version made.
    pub version: u64,
    /// The hostgroup switched.
    pub hostgroup: String,
    /// Its datasource before.
    pub from: String,
    /// Its datasource now.
    pub to: String,
    /// The revision of the change.
    pub revision: u64,
}

/// The body of `GET /v1/store`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreView {
    /// The store's generation (a restore starts a new one).
    pub generation: u64,
    /// zerokeeper's revision: the number of the latest committed change.
    pub revision: u64,
    /// The keeper's epoch (boot counter).
    pub epoch: u32,
    /// Transactions committed since the keeper started.
    pub commits: u64,
}

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
/// | `config` | `version`, `digest`, `cause` (`push` or `switch`; a switch adds `hostgroup`, `from_datasource`, `to_datasource`) |
/// | `admin` | `action` (`remove`: `proxy`, `status`; `push_config`: `version`, `size`; `switch`: `hostgroup`, `from_datasource`, `to_datasource`, `version`) |
/// | `restart` | `proxy`, `incarnation` (told to restart), `address` |
/// | `superseded` | `proxy`, `incarnation` (the older, told to stop), `winner`, `address` |
/// | `deletion_paused`, `deletion_resumed` | `lost`, `total` |
/// | `stall` | `length_ms`, `shifted` (no `cluster`) |
/// | `rewound` | `seen_epoch` (no `cluster`) |
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
    /// Why (`status`), such as `lost_timeout` or `unregister`.
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
                }
            }
            ChangeKind::Admin(action) => match action {
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

/// An RFC 9457 problem document, as every error answer carries it.
///
/// Every member is optional in the RFC; the keeper always sends `type`, `title`,
/// `status` and `detail`, and the extension members its type names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProblemBody {
    /// `urn:zerokeeper:problem:NAME` (see [`ProblemKind`]); `about:blank` if absent.
    #[serde(rename = "type", default = "about_blank")]
    pub problem_type: String,
    /// A short summary of the type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// What happened this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The cluster concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The proxy concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Every proxy keeping the gate closed, sorted (`gate-closed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blockers: Option<Vec<Blocker>>,
    /// The clusters in mass loss (`mass-loss`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<Vec<String>>,
    /// The hostgroup (`datasource-mismatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostgroup: Option<String>,
    /// The datasource the request expected (`datasource-mismatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// The datasource it has (`datasource-mismatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
    /// The oldest revision held (`gone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest: Option<u64>,
    /// The current revision (`gone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    /// The current generation (`gone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Members this build does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

fn about_blank() -> String {
    "about:blank".to_owned()
}

impl Default for ProblemBody {
    fn default() -> ProblemBody {
        ProblemBody {
            problem_type: about_blank(),
            title: None,
            status: None,
            detail: None,
            cluster: None,
            proxy: None,
            blockers: None,
            clusters: None,
            hostgroup: None,
            expected: None,
            actual: None,
            oldest: None,
            current: None,
            generation: None,
            extra: Extra::new(),
        }
    }
}

impl ProblemBody {
    /// A problem of `kind` with `detail`, and nothing else yet.
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> ProblemBody {
        ProblemBody {
            problem_type: kind.type_uri(),
            title: Some(kind.title().to_owned()),
            status: Some(kind.status()),
            detail: Some(detail.into()),
            ..ProblemBody::default()
        }
    }

    /// The kind its `type` names, if this build knows it.
    pub fn kind(&self) -> Option<ProblemKind> {
        ProblemKind::from_type(&self.problem_type)
    }

    /// The `gone` members, if all three are there.
    pub fn gone(&self) -> Option<Gone> {
        Some(Gone {
            oldest: self.oldest?,
            current: self.current?,
            generation: self.generation?,
        })
    }
}

/// The prefix of every problem `type` the keeper sends.
pub const PROBLEM_PREFIX: &str = "urn:zerokeeper:problem:";

/// Every problem type of the API: those it sends today, and those this wave's work will
/// send (defined now so that work fills them in rather than inventing its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// 400: a cluster, proxy, hostgroup or datasource name is invalid.
    InvalidName,
    /// 400: the body (or a query parameter or header) is not what the endpoint expects.
    MalformedBody,
    /// 404: no such cluster.
    UnknownCluster,
    /// 404: no such proxy in the cluster.
    UnknownProxy,
    /// 404: no such route.
    NotFound,
    /// 405: the route does not take this method.
    MethodNotAllowed,
    /// 409: a proxy of the cluster is not `up`; `blockers` names every one.
    GateClosed,
    /// 409: the hostgroup is not served by the switch's `from`.
    DatasourceMismatch,
    /// 410: the changes after the watch position are not held; `oldest`, `current`,
    /// `generation`.
    Gone,
    /// 413: the body is over the limit.
    ConfigTooLarge,
    /// 500: a bug; the client is not at fault.
    Internal,
    /// 503: the keeper task has stopped.
    KeeperStopped,
    /// 503 (`/readyz`): mass-loss protection holds for the clusters named in `clusters`.
    MassLoss,
    /// 401 (to come): no admin token, or not a valid one.
    Unauthorized,
    /// 403 (to come): the token does not allow this operation.
    Forbidden,
    /// 503 (to come): this keeper is a standby; `leader` names the leader's admin URL.
    NotLeader,
    /// 507 (to come): the keeper holds `max_proxies` or `max_clusters` already.
    RegistryFull,
    /// 412 (to come): the version the request expects to replace is not the current
    /// one; `current` names it.
    PreconditionFailed,
    /// 409 (to come): the switch names a hostgroup the cluster's config does not have.
    UnknownHostgroup,
    /// 409 (to come): the cluster still has proxies, so it cannot be deleted.
    ClusterNotEmpty,
    /// 409 (to come): a proxy rejected the config version being rolled out.
    RolloutFailed,
    /// 409 (to come): the rollout did not complete within the time asked for.
    RolloutStuck,
}

impl ProblemKind {
    /// Every kind, those served today first.
    pub const ALL: &'static [ProblemKind] = &[
        ProblemKind::InvalidName,
        ProblemKind::MalformedBody,
        ProblemKind::UnknownCluster,
        ProblemKind::UnknownProxy,
        ProblemKind::NotFound,
        ProblemKind::MethodNotAllowed,
        ProblemKind::GateClosed,
        ProblemKind::DatasourceMismatch,
        ProblemKind::Gone,
        ProblemKind::ConfigTooLarge,
        ProblemKind::Internal,
        ProblemKind::KeeperStopped,
        ProblemKind::MassLoss,
        ProblemKind::Unauthorized,
        ProblemKind::Forbidden,
        ProblemKind::NotLeader,
        ProblemKind::RegistryFull,
        ProblemKind::PreconditionFailed,
        ProblemKind::UnknownHostgroup,
        ProblemKind::ClusterNotEmpty,
        ProblemKind::RolloutFailed,
        ProblemKind::RolloutStuck,
    ];

    /// The name after [`PROBLEM_PREFIX`], such as `gate-closed`.
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::InvalidName => "invalid-name",
            ProblemKind::MalformedBody => "malformed-body",
            ProblemKind::UnknownCluster => "unknown-cluster",
            ProblemKind::UnknownProxy => "unknown-proxy",
            ProblemKind::NotFound => "not-found",
            ProblemKind::MethodNotAllowed => "method-not-allowed",
            ProblemKind::GateClosed => "gate-closed",
            ProblemKind::DatasourceMismatch => "datasource-mismatch",
            ProblemKind::Gone => "gone",
            ProblemKind::ConfigTooLarge => "config-too-large",
            ProblemKind::Internal => "internal",
            ProblemKind::KeeperStopped => "keeper-stopped",
            ProblemKind::MassLoss => "mass-loss",
            ProblemKind::Unauthorized => "unauthorized",
            ProblemKind::Forbidden => "forbidden",
            ProblemKind::NotLeader => "not-leader",
            ProblemKind::RegistryFull => "registry-full",
            ProblemKind::PreconditionFailed => "precondition-failed",
            ProblemKind::UnknownHostgroup => "unknown-hostgroup",
            ProblemKind::ClusterNotEmpty => "cluster-not-empty",
            ProblemKind::RolloutFailed => "rollout-failed",
            ProblemKind::RolloutStuck => "rollout-stuck",
        }
    }

    /// The HTTP status a problem of this kind is sent with.
    pub fn status(self) -> u16 {
        match self {
            ProblemKind::InvalidName | ProblemKind::MalformedBody => 400,
            ProblemKind::Unauthorized => 401,
            ProblemKind::Forbidden => 403,
            ProblemKind::UnknownCluster | ProblemKind::UnknownProxy | ProblemKind::NotFound => 404,
            ProblemKind::MethodNotAllowed => 405,
            ProblemKind::GateClosed
            | ProblemKind::DatasourceMismatch
            | ProblemKind::UnknownHostgroup
            | ProblemKind::ClusterNotEmpty
            | ProblemKind::RolloutFailed
            | ProblemKind::RolloutStuck => 409,
            ProblemKind::Gone => 410,
            ProblemKind::PreconditionFailed => 412,
            ProblemKind::ConfigTooLarge => 413,
            ProblemKind::Internal => 500,
            ProblemKind::KeeperStopped | ProblemKind::MassLoss | ProblemKind::NotLeader => 503,
            ProblemKind::RegistryFull => 507,
        }
    }

    /// The `title`.
    pub fn title(self) -> &'static str {
        match self {
            ProblemKind::InvalidName => "Invalid name",
            ProblemKind::MalformedBody => "Malformed body",
            ProblemKind::UnknownCluster => "Unknown cluster",
            ProblemKind::UnknownProxy => "Unknown proxy",
            ProblemKind::NotFound => "Not found",
            ProblemKind::MethodNotAllowed => "Method not allowed",
            ProblemKind::GateClosed => "Gate closed",
            ProblemKind::DatasourceMismatch => "Datasource mismatch",
            ProblemKind::Gone => "Gone",
            ProblemKind::ConfigTooLarge => "Config too large",
            ProblemKind::Internal => "Internal error",
            ProblemKind::KeeperStopped => "Keeper stopped",
            ProblemKind::MassLoss => "Mass loss",
            ProblemKind::Unauthorized => "Unauthorized",
            ProblemKind::Forbidden => "Forbidden",
            ProblemKind::NotLeader => "Not leader",
            ProblemKind::RegistryFull => "Registry full",
            ProblemKind::PreconditionFailed => "Precondition failed",
            ProblemKind::UnknownHostgroup => "Unknown hostgroup",
            ProblemKind::ClusterNotEmpty => "Cluster not empty",
            ProblemKind::RolloutFailed => "Rollout failed",
            ProblemKind::RolloutStuck => "Rollout stuck",
        }
    }

    /// Whether the keeper sends this kind today (the others are defined for work to come).
    pub fn served(self) -> bool {
        !matches!(
            self,
            ProblemKind::Unauthorized
                | ProblemKind::Forbidden
                | ProblemKind::NotLeader
                | ProblemKind::RegistryFull
                | ProblemKind::PreconditionFailed
                | ProblemKind::UnknownHostgroup
                | ProblemKind::ClusterNotEmpty
                | ProblemKind::RolloutFailed
                | ProblemKind::RolloutStuck
        )
    }

    /// The whole `type`: `urn:zerokeeper:problem:NAME`.
    pub fn type_uri(self) -> String {
        format!("{PROBLEM_PREFIX}{}", self.name())
    }

    /// The kind a whole `type` names (`None`: not one of the keeper's).
    pub fn from_type(problem_type: &str) -> Option<ProblemKind> {
        let name = problem_type.strip_prefix(PROBLEM_PREFIX)?;
        ProblemKind::ALL.iter().copied().find(|k| k.name() == name)
    }
}

/// The seed's status lines, `/zerodb/proxy/C/status/ADDR->STATUS\n`, sorted (as
/// `GET /v1/keys` sends them and `status -o keys` prints them).
pub fn key_lines(proxies: &[ProxyView]) -> String {
    let mut lines: Vec<String> = proxies
        .iter()
        .map(|p| format!("{}->{}\n", status_key(&p.cluster, &p.proxy), p.status))
        .collect();
    lines.sort();
    lines.concat()
}

/// Wall-clock milliseconds since the Unix epoch as RFC 3339 with milliseconds, in UTC.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let at = SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_millis(unix_ms))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    humantime::format_rfc3339_millis(at).to_string()
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use serde::de::DeserializeOwned;
    use serde_json::json;

    use super::*;
    use crate::keeper::Status;
    use crate::keeper::change::{Change, ConfigSummary, StatusChange};
    use crate::keeper::transition::Reason;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + fmt::Debug>(value: T) {
        let text = serde_json::to_string(&value).expect("serializes");
        let back: T = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, value, "{text}");
    }

    fn proxy_view() -> ProxyView {
        ProxyView {
            cluster: "c".into(),
            proxy: "10.0.0.1:1".into(),
            status: "up".into(),
            incarnation: 7,
            last_heartbeat: Some(rfc3339_ms(1_000)),
            last_heartbeat_age_ms: Some(5),
            since: None,
            since_age_ms: None,
            source: None,
            config_version: 2,
            deletion_paused: true,
            extra: Extra::new(),
        }
    }

    #[test]
    fn every_body_survives_a_round_trip_through_json() {
        round_trip(proxy_view());
        round_trip(ClusterList {
            generation: 3,
            revision: 9,
            clusters: vec![ClusterView {
                name: "c".into(),
                ready: 1,
                up: 2,
                lost: 3,
                config_version: 4,
                gate: "closed".into(),
                deletion_paused: true,
            }],
        });
        round_trip(ProxyList {
            generation: 3,
            revision: 9,
            cluster: Some("c".into()),
            proxies: vec![proxy_view()],
        });
        round_trip(GateView {
            cluster: "c".into(),
            open: false,
            blockers: vec![Blocker {
                proxy: "p:1".into(),
                status: "lost".into(),
            }],
        });
        round_trip(ConfigView {
            cluster: "c".into(),
            version: 2,
            digest: "00ff".into(),
            size: 10,
            base_size: 3,
            datasources: BTreeMap::from([("hg".into(), "ds".into())]),
        });
        round_trip(Removed {
            cluster: "c".into(),
            proxy: "p:1".into(),
            status: "lost".into(),
            revision: 4,
        });
        round_trip(Pushed {
            cluster: "c".into(),
            version: 2,
            revision: 4,
            changed: false,
        });
        round_trip(SwitchRequest {
            hostgroup: "hg".into(),
            from: "a".into(),
            to: "b".into(),
        });
        round_trip(Switched {
            cluster: "c".into(),
            version: 3,
            hostgroup: "hg".into(),
            from: "a".into(),
            to: "b".into(),
            revision: 5,
        });
        round_trip(StoreView {
            generation: 1,
            revision: 2,
            epoch: 3,
            commits: 4,
        });
        round_trip(Gone {
            oldest: 1,
            current: 2,
            generation: 3,
        });
        let mut problem = ProblemBody::new(ProblemKind::Gone, "compacted");
        problem.oldest = Some(10);
        problem.current = Some(20);
        problem.generation = Some(1);
        round_trip(problem);
    }

    #[test]
    fn a_proxy_the_keeper_knows_little_about_shows_nulls_not_inventions() {
        let json = serde_json::to_value(proxy_view()).expect("serializes");
        assert_eq!(json["since"], Value::Null);
        assert_eq!(json["since_age_ms"], Value::Null);
        assert_eq!(json["source"], Value::Null);
        assert_eq!(json["last_heartbeat"], "1970-01-01T00:00:01.000Z");
        // No member of `extra` leaks in.
        assert_eq!(json.as_object().map(|o| o.len()), Some(11));
    }

    #[test]
    fn a_push_answer_without_changed_means_a_new_version() {
        let pushed: Pushed =
            serde_json::from_value(json!({"cluster": "c", "version": 2, "revision": 7}))
                .expect("decodes");
        assert!(pushed.changed);
    }

    #[test]
    fn event_ids_are_generation_dash_revision_and_nothing_else() {
        let id: EventId = "1733061234-1042".parse().expect("an id");
        assert_eq!(
            id,
            EventId {
                generation: 1_733_061_234,
                revision: 1042
            }
        );
        assert_eq!(id.to_string(), "1733061234-1042");
        for bad in ["", "5", "-5", "1-", "a-1", "1-+2", "1-2-3", "1--2", " - "] {
            assert!(bad.parse::<EventId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_status_change_becomes_a_watch_event_with_its_revision_and_generation() {
        let source: SocketAddr = "127.0.0.1:4000".parse().expect("address");
        let change = Change {
            revision: 42,
            at: 1_000,
            kind: ChangeKind::Status(StatusChange {
                cluster: Arc::from("c"),
                proxy: Arc::from("p:1"),
                slot: 3,
                incarnation: 9,
                from: None,
                to: Some(Status::Ready),
                reason: Reason::Registered,
                last_heartbeat: Some(1_000),
                source,
                config_version: 1,
            }),
        };
        let event = WatchEvent::of(5, &change);
        assert_eq!(
            serde_json::to_value(&event).expect("serializes"),
            json!({
                "revision": 42, "generation": 5, "at": "1970-01-01T00:00:01.000Z",
                "kind": "status", "cluster": "c", "proxy": "p:1", "to": "ready",
                "reason": "registered", "incarnation": 9, "source": "127.0.0.1:4000",
                "config_version": 1,
            })
        );
        assert_eq!(event.id().to_string(), "5-42");
        round_trip(event);
    }

    #[test]
    fn keeper_wide_changes_have_no_cluster() {
        let stall = Change {
            revision: 1,
            at: 0,
            kind: ChangeKind::Stall {
                length: Duration::from_millis(1500),
                shifted: 12,
            },
        };
        let event = serde_json::to_value(WatchEvent::of(1, &stall)).expect("serializes");
        assert_eq!(
            event,
            json!({"revision": 1, "generation": 1, "at": "1970-01-01T00:00:00.000Z",
                   "kind": "stall", "length_ms": 1500, "shifted": 12})
        );
        let config = Change {
            revision: 2,
            at: 0,
            kind: ChangeKind::Config {
                cluster: Arc::from("c"),
                config: ConfigSummary {
                    version: 3,
                    digest: [0xab; 32],
                    size: 1,
                    base_size: 0,
                    datasources: BTreeMap::new(),
                },
                cause: ConfigCause::Switch {
                    hostgroup: "hg".into(),
                    from: "a".into(),
                    to: "b".into(),
                },
            },
        };
        let event = WatchEvent::of(1, &config);
        assert_eq!(event.cluster.as_deref(), Some("c"));
        assert_eq!(event.cause.as_deref(), Some("switch"));
        assert_eq!(event.from_datasource.as_deref(), Some("a"));
        assert_eq!(event.digest.as_deref().map(str::len), Some(64));
    }

    #[test]
    fn every_problem_kind_has_one_name_and_a_status_of_its_class() {
        for &kind in ProblemKind::ALL {
            assert_eq!(ProblemKind::from_type(&kind.type_uri()), Some(kind));
            assert!((400..600).contains(&kind.status()), "{kind:?}");
            let same: Vec<_> = ProblemKind::ALL
                .iter()
                .filter(|k| k.name() == kind.name())
                .collect();
            assert_eq!(same.len(), 1, "{kind:?}");
        }
        assert_eq!(ProblemKind::from_type("gate-closed"), None);
        assert_eq!(ProblemKind::from_type("urn:zerokeeper:problem:nope"), None);
    }

    #[test]
    fn key_lines_are_sorted_and_each_ends_in_a_newline() {
        let view = |cluster: &str, proxy: &str, status: &str| ProxyView {
            cluster: cluster.into(),
            proxy: proxy.into(),
            status: status.into(),
            ..proxy_view()
        };
        let text = key_lines(&[
            view("a", "10.0.0.2:1", "up"),
            view("a.b", "10.0.0.1:1", "lost"),
            view("a", "10.0.0.1:1", "ready"),
        ]);
        assert_eq!(
            text,
            "/zerodb/proxy/a.b/status/10.0.0.1:1->lost\n\
             /zerodb/proxy/a/status/10.0.0.1:1->ready\n\
             /zerodb/proxy/a/status/10.0.0.2:1->up\n"
        );
        assert_eq!(key_lines(&[]), "");
    }
}
