//! Problem documents (RFC 9457) and every problem type of the API.

use serde::{Deserialize, Serialize};

use super::{Blocker, Extra, Gone};

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
    /// What the request may name instead: the hostgroups a cluster declares
    /// (`unknown-hostgroup`), or the datasources a hostgroup may be switched to
    /// (`datasource-mismatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<String>>,
    /// The oldest revision held (`gone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest: Option<u64>,
    /// The current revision (`gone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    /// The current generation (`gone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// The leader's admin URL, if known (`not-leader`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
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
            choices: None,
            oldest: None,
            current: None,
            generation: None,
            leader: None,
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
    /// 400: the body is not what the endpoint expects.
    MalformedBody,
    /// 400: a query parameter, a header or a path segment (other than a name) does not
    /// parse or is out of range.
    InvalidParameter,
    /// 400: the request is not HTTP/1.1 the server can parse (its request line or a
    /// header is malformed); the connection is closed.
    MalformedRequest,
    /// 408: the request's body made no progress for the body-read timeout; the
    /// connection is closed.
    RequestTimeout,
    /// 414: the request line is longer than the server reads; the connection is closed.
    UriTooLong,
    /// 431: the request has more headers, or a larger head, than the server reads; the
    /// connection is closed.
    HeadersTooLarge,
    /// 503: as many watch streams as the server serves at once are open already; retry
    /// after `Retry-After` seconds.
    TooManyWatchers,
    /// 404: no such cluster.
    UnknownCluster,
    /// 404: no such proxy in the cluster.
    UnknownProxy,
    /// 404: the cluster has no such config version (a rollback or a read of one).
    UnknownVersion,
    /// 404: no such route.
    NotFound,
    /// 405: the route does not take this method.
    MethodNotAllowed,
    /// 409: a proxy of the cluster is not `up`; `blockers` names every one.
    GateClosed,
    /// 409: the hostgroup is not served by the switch's `from`, or its `to` is not one of
    /// the hostgroup's datasources; `choices` lists those it may be switched to.
    DatasourceMismatch,
    /// 409: a remove named a proxy that is alive (`up` or `ready`) without `force`;
    /// `proxy` names it.
    ProxyAlive,
    /// 410: the changes after the watch position are not held; `oldest`, `current`,
    /// `generation`.
    Gone,
    /// 413: the body is over the limit.
    ConfigTooLarge,
    /// 500: a bug; the client is not at fault.
    Internal,
    /// 503: the keeper task has stopped.
    KeeperStopped,
    /// 503 (`/v1/health`): mass-loss protection holds for the clusters named in `clusters`.
    MassLoss,
    /// 401: no admin token where one is needed, or one the keeper does not hold.
    Unauthorized,
    /// 403: the token's role or clusters do not allow the request.
    Forbidden,
    /// 500: `POST /v1/reload` found a file that does not load; what was in force stays.
    ReloadFailed,
    /// 503: this keeper is a standby; `leader` names the leader's admin URL.
    NotLeader,
    /// 507: the keeper holds `max_proxies` or `max_clusters` already (today: a push
    /// that would create a cluster past `max_clusters`).
    RegistryFull,
    /// 412: the version the request expects to replace (`If-Match`, `--expect-version`)
    /// is not the current one; `current` names it.
    PreconditionFailed,
    /// 409: the switch names a hostgroup the cluster does not declare; `choices` lists
    /// those it does.
    UnknownHostgroup,
    /// 409: the cluster still has proxies, so it cannot be deleted.
    ClusterNotEmpty,
    /// 409: this keeper's store makes no snapshot (etcd's are `etcdctl snapshot save`).
    SnapshotUnsupported,
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
        ProblemKind::InvalidParameter,
        ProblemKind::MalformedRequest,
        ProblemKind::RequestTimeout,
        ProblemKind::UriTooLong,
        ProblemKind::HeadersTooLarge,
        ProblemKind::TooManyWatchers,
        ProblemKind::UnknownCluster,
        ProblemKind::UnknownProxy,
        ProblemKind::UnknownVersion,
        ProblemKind::NotFound,
        ProblemKind::MethodNotAllowed,
        ProblemKind::GateClosed,
        ProblemKind::DatasourceMismatch,
        ProblemKind::ProxyAlive,
        ProblemKind::Gone,
        ProblemKind::ConfigTooLarge,
        ProblemKind::Internal,
        ProblemKind::KeeperStopped,
        ProblemKind::MassLoss,
        ProblemKind::RegistryFull,
        ProblemKind::NotLeader,
        ProblemKind::Unauthorized,
        ProblemKind::Forbidden,
        ProblemKind::ReloadFailed,
        ProblemKind::PreconditionFailed,
        ProblemKind::UnknownHostgroup,
        ProblemKind::ClusterNotEmpty,
        ProblemKind::SnapshotUnsupported,
        ProblemKind::RolloutFailed,
        ProblemKind::RolloutStuck,
    ];

    /// The name after [`PROBLEM_PREFIX`], such as `gate-closed`.
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::InvalidName => "invalid-name",
            ProblemKind::MalformedBody => "malformed-body",
            ProblemKind::InvalidParameter => "invalid-parameter",
            ProblemKind::MalformedRequest => "malformed-request",
            ProblemKind::RequestTimeout => "request-timeout",
            ProblemKind::UriTooLong => "uri-too-long",
            ProblemKind::HeadersTooLarge => "headers-too-large",
            ProblemKind::TooManyWatchers => "too-many-watchers",
            ProblemKind::UnknownCluster => "unknown-cluster",
            ProblemKind::UnknownProxy => "unknown-proxy",
            ProblemKind::UnknownVersion => "unknown-version",
            ProblemKind::NotFound => "not-found",
            ProblemKind::MethodNotAllowed => "method-not-allowed",
            ProblemKind::GateClosed => "gate-closed",
            ProblemKind::DatasourceMismatch => "datasource-mismatch",
            ProblemKind::ProxyAlive => "proxy-alive",
            ProblemKind::Gone => "gone",
            ProblemKind::ConfigTooLarge => "config-too-large",
            ProblemKind::Internal => "internal",
            ProblemKind::KeeperStopped => "keeper-stopped",
            ProblemKind::MassLoss => "mass-loss",
            ProblemKind::Unauthorized => "unauthorized",
            ProblemKind::Forbidden => "forbidden",
            ProblemKind::ReloadFailed => "reload-failed",
            ProblemKind::NotLeader => "not-leader",
            ProblemKind::RegistryFull => "registry-full",
            ProblemKind::PreconditionFailed => "precondition-failed",
            ProblemKind::UnknownHostgroup => "unknown-hostgroup",
            ProblemKind::ClusterNotEmpty => "cluster-not-empty",
            ProblemKind::SnapshotUnsupported => "snapshot-unsupported",
            ProblemKind::RolloutFailed => "rollout-failed",
            ProblemKind::RolloutStuck => "rollout-stuck",
        }
    }

    /// The HTTP status a problem of this kind is sent with.
    pub fn status(self) -> u16 {
        match self {
            ProblemKind::InvalidName
            | ProblemKind::MalformedBody
            | ProblemKind::InvalidParameter
            | ProblemKind::MalformedRequest => 400,
            ProblemKind::Unauthorized => 401,
            ProblemKind::Forbidden => 403,
            ProblemKind::UnknownCluster
            | ProblemKind::UnknownProxy
            | ProblemKind::UnknownVersion
            | ProblemKind::NotFound => 404,
            ProblemKind::MethodNotAllowed => 405,
            ProblemKind::RequestTimeout => 408,
            ProblemKind::GateClosed
            | ProblemKind::DatasourceMismatch
            | ProblemKind::ProxyAlive
            | ProblemKind::UnknownHostgroup
            | ProblemKind::ClusterNotEmpty
            | ProblemKind::SnapshotUnsupported
            | ProblemKind::RolloutFailed
            | ProblemKind::RolloutStuck => 409,
            ProblemKind::Gone => 410,
            ProblemKind::PreconditionFailed => 412,
            ProblemKind::ConfigTooLarge => 413,
            ProblemKind::UriTooLong => 414,
            ProblemKind::HeadersTooLarge => 431,
            ProblemKind::Internal | ProblemKind::ReloadFailed => 500,
            ProblemKind::KeeperStopped
            | ProblemKind::MassLoss
            | ProblemKind::NotLeader
            | ProblemKind::TooManyWatchers => 503,
            ProblemKind::RegistryFull => 507,
        }
    }

    /// The `title`.
    pub fn title(self) -> &'static str {
        match self {
            ProblemKind::InvalidName => "Invalid name",
            ProblemKind::MalformedBody => "Malformed body",
            ProblemKind::InvalidParameter => "Invalid parameter",
            ProblemKind::MalformedRequest => "Malformed request",
            ProblemKind::RequestTimeout => "Request timeout",
            ProblemKind::UriTooLong => "URI too long",
            ProblemKind::HeadersTooLarge => "Request headers too large",
            ProblemKind::TooManyWatchers => "Too many watchers",
            ProblemKind::UnknownCluster => "Unknown cluster",
            ProblemKind::UnknownProxy => "Unknown proxy",
            ProblemKind::UnknownVersion => "Unknown config version",
            ProblemKind::NotFound => "Not found",
            ProblemKind::MethodNotAllowed => "Method not allowed",
            ProblemKind::GateClosed => "Gate closed",
            ProblemKind::DatasourceMismatch => "Datasource mismatch",
            ProblemKind::ProxyAlive => "Proxy alive",
            ProblemKind::Gone => "Gone",
            ProblemKind::ConfigTooLarge => "Config too large",
            ProblemKind::Internal => "Internal error",
            ProblemKind::KeeperStopped => "Keeper stopped",
            ProblemKind::MassLoss => "Mass loss",
            ProblemKind::Unauthorized => "Unauthorized",
            ProblemKind::Forbidden => "Forbidden",
            ProblemKind::ReloadFailed => "Reload failed",
            ProblemKind::NotLeader => "Not leader",
            ProblemKind::RegistryFull => "Registry full",
            ProblemKind::PreconditionFailed => "Precondition failed",
            ProblemKind::UnknownHostgroup => "Unknown hostgroup",
            ProblemKind::ClusterNotEmpty => "Cluster not empty",
            ProblemKind::SnapshotUnsupported => "Snapshot unsupported",
            ProblemKind::RolloutFailed => "Rollout failed",
            ProblemKind::RolloutStuck => "Rollout stuck",
        }
    }

    /// Whether the keeper sends this kind today (the others are defined for work to come).
    pub fn served(self) -> bool {
        !matches!(self, ProblemKind::RolloutFailed | ProblemKind::RolloutStuck)
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
