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

mod problem;
mod watch;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::identity::status_key;

pub use problem::{PROBLEM_PREFIX, ProblemBody, ProblemKind};
pub use watch::{BadEventId, EventId, Gone, WatchEvent};

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
    /// The id of the key that authenticated its latest datagram, as 8 hex digits
    /// (`null`: not heard since this keeper started, or a standby, which hears nothing).
    #[serde(default)]
    pub key_id: Option<String>,
    /// Mass-loss protection holds for its cluster: lost proxies are not being deleted.
    #[serde(default)]
    pub deletion_paused: bool,
    /// Its cluster is frozen for maintenance: no proxy is deleted or restarted.
    #[serde(default)]
    pub frozen: bool,
    /// Fields this build does not know (the server sends none).
    #[serde(flatten)]
    pub extra: Extra,
}

/// One cluster, as `GET /v1/clusters` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The cluster's name (`cluster`, as in every other document; keepers before
    /// 2026-12-03 sent it as `name`, which is still read).
    #[serde(alias = "name")]
    pub cluster: String,
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
    /// Frozen for maintenance (`zerokeeper cluster freeze`): no proxy is deleted or
    /// restarted until it is unfrozen.
    #[serde(default)]
    pub frozen: bool,
    /// How the rollout of the current config stands: `converged`, `in-progress`,
    /// `failed` or `stuck` (`GET /v1/clusters/{cluster}/rollout` has the details).
    #[serde(default)]
    pub rollout: String,
    /// Proxies that run the current config.
    #[serde(default)]
    pub running: u64,
    /// Proxies that do not run it yet.
    #[serde(default)]
    pub pending: u64,
    /// Proxies that rejected it.
    #[serde(default)]
    pub rejected: u64,
}

/// The body of `GET /v1/clusters/{cluster}/rollout`: the rollout of the cluster's
/// current config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutView {
    /// The store generation it belongs to.
    pub generation: u64,
    /// The revision it reflects.
    pub revision: u64,
    /// The cluster.
    pub cluster: String,
    /// The config version rolled out (the current one).
    pub version: u64,
    /// SHA-256 of its rendered document, lowercase hex.
    pub digest: String,
    /// `converged`, `in-progress`, `failed` or `stuck`.
    pub state: String,
    /// When the version became current, RFC 3339 (`None`: before this keeper's view
    /// began, which then counts as the start).
    pub started: Option<String>,
    /// A pending proxy is overdue (the rollout stuck) after this long, in ms.
    pub timeout_ms: u64,
    /// Registered proxies.
    pub total: u64,
    /// Proxies that run the version.
    pub running: u64,
    /// Proxies that do not run it yet.
    pub pending: u64,
    /// Proxies that rejected it.
    pub rejected: u64,
    /// Every proxy that does not run it (pending or rejected), sorted by identity; at
    /// most [`RolloutView::MAX_LISTED`] (`truncated` says how many more).
    pub proxies: Vec<RolloutProxy>,
    /// Proxies not listed past the limit.
    #[serde(default)]
    pub truncated: u64,
}

impl RolloutView {
    /// Most proxies a rollout lists.
    pub const MAX_LISTED: usize = 1000;
}

/// A proxy that does not run its cluster's current config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutProxy {
    /// Its identity.
    pub proxy: String,
    /// Its status.
    pub status: String,
    /// The config version it reports running (0: none yet).
    pub config_version: u64,
    /// `pending`, `overdue` (pending past the timeout) or `rejected`.
    pub state: String,
    /// Its reason, if it rejected the version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long it has been pending, in ms (`None` if it rejected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_ms: Option<u64>,
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

/// One stored config version, as `GET /v1/clusters/{cluster}/config/history` lists it
/// (and `…/config/versions/{version}` shows it, with its content).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigVersionView {
    /// The version number.
    pub version: u64,
    /// Its id on the wire (16 hex digits): what a proxy reports running.
    pub id: String,
    /// SHA-256 of the rendered document, lowercase hex.
    pub digest: String,
    /// Bytes of the rendered document (what proxies pull).
    pub size: u64,
    /// Bytes of the operator's file.
    pub base_size: u64,
    /// The active datasource of each hostgroup.
    pub datasources: BTreeMap<String, String>,
    /// Whether it is the cluster's current version.
    pub current: bool,
    /// What made it: `push_config`, `switch` or `rollback` (`null`: not in the audit
    /// record the keeper holds).
    pub made_by: Option<String>,
    /// When it was made (RFC 3339; `null`: as `made_by`).
    pub at: Option<String>,
    /// The admin token that made it (`null`: none was asked, or as `made_by`).
    pub by: Option<String>,
}

/// `GET /v1/clusters/{cluster}/config/history`: the stored versions, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigHistory {
    /// The cluster.
    pub cluster: String,
    /// Its current version.
    pub current: u64,
    /// The newest versions stored, oldest first, at most the `limit` asked for.
    pub versions: Vec<ConfigVersionView>,
}

/// `GET /v1/clusters/{cluster}/config/versions/{version}`: one version with its content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigContent {
    /// The cluster.
    pub cluster: String,
    /// The version, as the history lists it.
    #[serde(flatten)]
    pub meta: ConfigVersionView,
    /// The operator's file, byte for byte, in base64 (RFC 4648, with padding).
    pub content_base64: String,
}

/// The body of `POST /v1/clusters/{cluster}/config/rollback`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The earlier version whose content becomes current again.
    pub to: u64,
}

/// The answer to a rollback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolledBack {
    /// The cluster.
    pub cluster: String,
    /// The cluster's config version after the rollback (a new one, with `restored`'s
    /// content).
    pub version: u64,
    /// The version whose content it has.
    pub restored: u64,
    /// The revision of the change (the current revision when nothing changed).
    pub revision: u64,
    /// `false`: the current version had that content already; nothing changed.
    pub changed: bool,
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

/// The body of `PUT /v1/clusters/{cluster}/hostgroups/{hostgroup}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostgroupRequest {
    /// Its datasources.
    pub datasources: Vec<String>,
    /// The datasource serving it now: required for a new hostgroup; for one that has a
    /// current datasource, only that one (a switch changes it).
    #[serde(default)]
    pub current: Option<String>,
}

/// One hostgroup, as `GET /v1/clusters/{cluster}/hostgroups` lists it and `PUT …` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostgroupView {
    /// Its name.
    pub hostgroup: String,
    /// Its datasources, sorted.
    pub datasources: Vec<String>,
    /// The datasource serving it now.
    pub current: String,
    /// Where it is declared: `api` (stored) or `file` (the keeper's config file).
    pub declared: String,
    /// Whether the request changed anything (`PUT` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
}

/// The answer to `GET /v1/version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionView {
    /// The release (`CARGO_PKG_VERSION`, e.g. `0.1.0`).
    pub version: String,
    /// The heartbeat protocol versions it speaks, oldest first.
    pub protocols: Vec<u8>,
}

impl VersionView {
    /// What this build is.
    pub fn this() -> VersionView {
        VersionView {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocols: vec![
                crate::wire::Version::V1 as u8,
                crate::wire::Version::V2 as u8,
            ],
        }
    }
}

/// The answer to `DELETE /v1/clusters/{cluster}/hostgroups/{hostgroup}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostgroupDeleted {
    /// The cluster.
    pub cluster: String,
    /// The hostgroup undeclared.
    pub hostgroup: String,
    /// The revision after the request.
    pub revision: u64,
}

/// The answer to `POST /v1/clusters/{cluster}/freeze`, `…/unfreeze` and `DELETE
/// /v1/clusters/{cluster}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterChanged {
    /// The cluster.
    pub cluster: String,
    /// Whether it is frozen now (`false` for a deleted cluster).
    pub frozen: bool,
    /// Whether it was deleted.
    pub deleted: bool,
    /// Whether the request changed anything.
    pub changed: bool,
    /// The revision after the request.
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
    /// What this keeper is: `single` (no election), `leader` or `standby` (whose reads
    /// are the committed state in the shared store).
    #[serde(default = "single")]
    pub role: String,
    /// The leadership this keeper knows of (its own, as leader), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderView>,
}

fn single() -> String {
    "single".to_owned()
}

/// A leadership, as `GET /v1/store` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderView {
    /// The leader's name.
    pub id: String,
    /// Its admin API.
    pub http: String,
    /// Where proxies reach it.
    pub udp: String,
    /// The term.
    pub term: u64,
    /// Since when it leads (RFC 3339).
    pub since: String,
}
/// A key in force, as `POST /v1/reload` lists them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyView {
    /// Its id, 8 hex digits (as datagram headers and proxy listings carry it).
    pub id: String,
    /// The cluster it belongs to (`null`: the default key of every cluster without keys
    /// of its own).
    pub cluster: Option<String>,
}

/// The answer to `POST /v1/reload`: what is in force now, and what changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// Every key in force.
    pub keys: Vec<KeyView>,
    /// Ids of keys that were not in force before.
    pub added: Vec<String>,
    /// Ids of keys no longer in force: they verify nothing more.
    pub retired: Vec<String>,
    /// Ids of keys kept whose cluster changed.
    pub rescoped: Vec<String>,
    /// Admin tokens in force.
    pub tokens: usize,
    /// Whether the TLS certificate was read again.
    pub tls: bool,
}

/// The audit record, as `GET /v1/audit` answers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditList {
    /// The store generation the listing belongs to.
    pub generation: u64,
    /// The revision it reflects: every action up to it, none after.
    pub revision: u64,
    /// The cluster asked for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The entries, oldest first: the newest of those asked for, at most the `limit`.
    pub entries: Vec<AuditView>,
    /// Whether older entries were asked for too but left out by the `limit`.
    pub more: bool,
}

/// One admin action of the audit record: who, what, when, and the result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditView {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// The name of the admin token that authenticated it (`null`: the keeper asked for
    /// none).
    pub by: Option<String>,
    /// What: `remove`, `push_config` or `switch`.
    pub action: String,
    /// The cluster.
    pub cluster: String,
    /// `done`, or `refused` (nothing changed; `reason` says why).
    pub result: String,
    /// What the action has besides: `proxy` and `status` (remove), `version` and `size`
    /// (push), `hostgroup`, `from`, `to` and `version` (switch); `asked` and `reason`
    /// (refused).
    #[serde(flatten)]
    pub details: Extra,
}

impl AuditView {
    /// The entry of a stored action (one line of JSON, as the store keeps it) made at
    /// `at`. A line that is not a JSON object (no keeper writes one) is shown whole as
    /// `details.raw`.
    pub fn of(at: String, action: &str) -> AuditView {
        let mut details = match serde_json::from_str::<Value>(action) {
            Ok(Value::Object(map)) => map,
            _ => {
                let mut map = Map::new();
                map.insert("raw".to_owned(), Value::from(action));
                map
            }
        };
        let mut take = |name: &str| match details.remove(name) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let by = take("by");
        let action = take("action").unwrap_or_default();
        let cluster = take("cluster").unwrap_or_default();
        let result = take("result").unwrap_or_else(|| "done".to_owned());
        AuditView {
            at,
            by,
            action,
            cluster,
            result,
            details,
        }
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

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use serde::de::DeserializeOwned;
    use serde_json::json;

    use std::fmt;

    use super::*;
    use crate::keeper::Status;
    use crate::keeper::change::{Change, ChangeKind, ConfigCause, ConfigSummary, StatusChange};
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
            key_id: Some("0a1b2c3d".into()),
            deletion_paused: true,
            frozen: false,
            extra: Extra::new(),
        }
    }

    #[test]
    fn a_cluster_is_named_cluster_and_an_older_keepers_name_is_still_read() {
        let json = r#"{"ready":0,"up":1,"lost":0,"config_version":2,"gate":"open","deletion_paused":false}"#;
        let old = format!(r#"{{"name":"c",{}"#, &json[1..]);
        let read: ClusterView = serde_json::from_str(&old).expect("an older keeper's view");
        assert_eq!(read.cluster, "c");
        let sent = serde_json::to_value(&read).expect("serializes");
        assert_eq!(sent["cluster"], "c");
        assert!(sent.get("name").is_none(), "{sent}");
    }

    #[test]
    fn every_body_survives_a_round_trip_through_json() {
        round_trip(proxy_view());
        round_trip(ClusterList {
            generation: 3,
            revision: 9,
            clusters: vec![ClusterView {
                cluster: "c".into(),
                ready: 1,
                up: 2,
                lost: 3,
                config_version: 4,
                gate: "closed".into(),
                deletion_paused: true,
                frozen: true,
                rollout: "failed".into(),
                running: 4,
                pending: 1,
                rejected: 1,
            }],
        });
        round_trip(RolloutView {
            generation: 3,
            revision: 9,
            cluster: "c".into(),
            version: 4,
            digest: "ab".into(),
            state: "failed".into(),
            started: Some("2026-12-02T00:00:00.000Z".into()),
            timeout_ms: 60_000,
            total: 6,
            running: 4,
            pending: 1,
            rejected: 1,
            proxies: vec![
                RolloutProxy {
                    proxy: "10.25.0.11:3000".into(),
                    status: "up".into(),
                    config_version: 3,
                    state: "rejected".into(),
                    reason: Some("does not parse".into()),
                    pending_ms: None,
                },
                RolloutProxy {
                    proxy: "10.25.0.12:3000".into(),
                    status: "ready".into(),
                    config_version: 0,
                    state: "pending".into(),
                    reason: None,
                    pending_ms: Some(120),
                },
            ],
            truncated: 0,
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
            role: "standby".into(),
            leader: Some(LeaderView {
                id: "k1".into(),
                http: "http://127.0.0.1:7822".into(),
                udp: "127.0.0.1:7821".into(),
                term: 3,
                since: "2026-12-01T00:00:00.000Z".into(),
            }),
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
        assert_eq!(json["key_id"], "0a1b2c3d");
        // No member of `extra` leaks in.
        assert_eq!(json.as_object().map(|o| o.len()), Some(13));
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
