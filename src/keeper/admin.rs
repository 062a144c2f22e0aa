//! The operator's side of the keeper: the gate, remove, push config, switch datasource,
//! and the queries behind listings.
//!
//! Each mutator checks and acts in one call, so nothing can slip between the gate check
//! and the operation. Every error says that nothing changed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use thiserror::Error;

use crate::auth::{Keyring, KeyringChange};
use crate::configdoc::{ConfigError, ConfigFormat, ConfigVersion, validate_datasource_name};
use crate::identity::{IdentityError, status_key, validate_cluster, validate_proxy};
use crate::keeper::change::MAX_REASON;
use crate::keeper::{
    AdminAction, ChangeKind, ConfigBlob, ConfigCause, ConfigSummary, Keeper, Reason, Status,
};
use crate::time::Instant;
use crate::wire::{ConfigId, ConfigIdKey};

/// A proxy that keeps the gate closed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Blocker {
    /// The proxy's identity.
    pub proxy: String,
    /// Its status (never `up`).
    pub status: Status,
}

/// The gate is closed: these proxies of the cluster are not `up`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateClosed {
    /// The cluster.
    pub cluster: String,
    /// Every proxy that is not `up`, sorted by identity.
    pub blockers: Vec<Blocker>,
}

impl fmt::Display for GateClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gate closed for cluster {}: ", self.cluster)?;
        for (i, b) in self.blockers.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} is {}", b.proxy, b.status)?;
        }
        Ok(())
    }
}

/// Why an admin call was refused. In every case nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum AdminError {
    /// The cluster name or proxy address is invalid. Nothing changed.
    #[error("invalid name: {0}")]
    Invalid(#[from] IdentityError),
    /// No such cluster. Nothing changed.
    #[error("no cluster named {0}")]
    UnknownCluster(String),
    /// No such proxy in the cluster. Nothing changed.
    #[error("no proxy {proxy} in cluster {cluster}")]
    UnknownProxy {
        /// The cluster.
        cluster: String,
        /// The proxy asked for.
        proxy: String,
    },
    /// Some proxy of the cluster is not `up`. Nothing changed.
    #[error("{0}")]
    GateClosed(GateClosed),
    /// The config is invalid or too large. Nothing changed.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A new cluster was asked for, but the registry holds `max_clusters` clusters
    /// already. Nothing changed.
    #[error(
        "the registry is full: it holds {clusters} clusters of at most {max_clusters}, so cluster {cluster} cannot be created. Nothing changed."
    )]
    RegistryFull {
        /// The cluster that would have been created.
        cluster: String,
        /// The clusters the registry holds.
        clusters: usize,
        /// The keeper's `max_clusters`.
        max_clusters: usize,
    },
    /// The request expected to replace another version than the cluster's current one
    /// (another operator changed it meanwhile). Nothing changed.
    #[error(
        "cluster {cluster} is at config version {current}, not {expected} as the request expected: someone changed it meanwhile. Nothing changed."
    )]
    VersionMismatch {
        /// The cluster.
        cluster: String,
        /// The version the request expected to replace.
        expected: u64,
        /// The cluster's current version.
        current: u64,
    },
    /// A switch whose `to` is its `from`: it would change nothing. Nothing changed.
    #[error(
        "a switch of hostgroup {hostgroup} from {datasource} to {datasource} changes nothing: --to must differ from --from{}. Nothing changed.",
        if choices.is_empty() { String::new() } else { format!(" (one of {})", join(choices)) }
    )]
    SameDatasource {
        /// The hostgroup.
        hostgroup: String,
        /// The datasource named as both.
        datasource: String,
        /// The datasources it may be switched to, if it is declared.
        choices: Vec<String>,
    },
    /// A remove named a proxy that is alive (`up` or `ready`) without being forced.
    /// Nothing changed.
    #[error(
        "proxy {proxy} of cluster {cluster} is {status}: it is alive, and if it were removed the keeper would tell it to leave at its next heartbeat: it would drop its clients and exit. Remove a proxy that is alive only if you mean that (--force, ?force=true); a lost one needs no force. Nothing changed."
    )]
    ProxyAlive {
        /// The cluster.
        cluster: String,
        /// The proxy.
        proxy: String,
        /// Its status (`up` or `ready`).
        status: Status,
    },
    /// A push named a cluster that does not exist, and was not asked to create it. Nothing
    /// changed.
    #[error(
        "no cluster named {0}: a push creates a cluster only when asked to (--create, ?create=true), so that a typo does not make a cluster no proxy runs. Nothing changed."
    )]
    NotCreated(String),
    /// A rollback named a version the cluster cannot go back to: not an earlier one, or
    /// one the store no longer holds. Nothing changed.
    #[error(
        "cluster {cluster} has no stored version {version} earlier than its current version {current} to roll back to (version 1, the empty initial config, is never stored). Nothing changed."
    )]
    NoSuchVersion {
        /// The cluster.
        cluster: String,
        /// The version asked for.
        version: u64,
        /// The cluster's current version.
        current: u64,
    },
    /// The hostgroup is not served by the datasource the switch expected. Nothing changed.
    #[error(
        "hostgroup {hostgroup} is served by {actual}, not {expected}{}",
        if choices.is_empty() { String::new() } else { format!(": switch --from {actual} --to one of {}. Nothing changed.", join(choices)) }
    )]
    DatasourceMismatch {
        /// The hostgroup.
        hostgroup: String,
        /// The `from` of the request.
        expected: String,
        /// The datasource it actually has.
        actual: String,
        /// The datasources it may be switched to.
        choices: Vec<String>,
    },
    /// A switch named a hostgroup the cluster does not declare. Nothing changed.
    #[error(
        "cluster {cluster} declares no hostgroup {hostgroup}: {}. Nothing changed.",
        if declared.is_empty() { "it declares none (zerokeeper hostgroup set)".to_owned() } else { format!("its hostgroups are {}", join(declared)) }
    )]
    UnknownHostgroup {
        /// The cluster.
        cluster: String,
        /// The hostgroup asked for.
        hostgroup: String,
        /// The hostgroups it declares, sorted.
        declared: Vec<String>,
    },
    /// A switch's `to` is not one of the hostgroup's datasources. Nothing changed.
    #[error(
        "{datasource} is not a datasource of hostgroup {hostgroup}: switch --to one of {}. Nothing changed.",
        join(choices)
    )]
    UnknownDatasource {
        /// The hostgroup.
        hostgroup: String,
        /// The datasource asked for.
        datasource: String,
        /// The datasources it may be switched to.
        choices: Vec<String>,
    },
    /// A hostgroup declaration that cannot be: no datasource, too many, a current
    /// datasource not among them, or one that a switch should change. Nothing changed.
    #[error("{0}. Nothing changed.")]
    BadHostgroup(String),
    /// A cluster that still has proxies cannot be deleted. Nothing changed.
    #[error(
        "cluster {cluster} has {proxies} registered proxies ({}{}): a cluster is deleted only when none is left (stop them, or remove them). Nothing changed.",
        names.join(", "), if *proxies > names.len() { ", …" } else { "" }
    )]
    ClusterNotEmpty {
        /// The cluster.
        cluster: String,
        /// How many proxies it has.
        proxies: usize,
        /// The first of them, sorted (at most 10).
        names: Vec<String>,
    },
    /// A forced remove while the cluster holds as many removal markers as it may.
    /// Nothing changed.
    #[error(
        "cluster {cluster} holds {limit} removal markers of processes told to leave that have not acknowledged: no more can be added until some do. Nothing changed."
    )]
    TooManyRemoved {
        /// The cluster.
        cluster: String,
        /// [`super::cluster::MAX_REMOVED`].
        limit: usize,
    },
}

use super::cluster::join;

/// A stored config version's content: the operator's file and the datasources.
pub type StoredContent = (Arc<[u8]>, BTreeMap<String, String>);

/// What a push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// The cluster's config version after the push.
    pub version: u64,
    /// Whether the push made that version (`false`: it was the current config already).
    pub changed: bool,
}

/// One proxy, as listings show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyInfo {
    /// The cluster.
    pub cluster: String,
    /// The proxy's identity.
    pub proxy: String,
    /// Its status.
    pub status: Status,
    /// The incarnation the registry holds.
    pub incarnation: u64,
    /// When its last datagram was accepted (keeper time).
    pub last_heard: Instant,
    /// Since when it has been in this status (keeper time).
    pub since: Instant,
    /// Where its datagrams come from.
    pub source: SocketAddr,
    /// The config version it reports running.
    pub config_version: u64,
}

/// One cluster, as listings show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterInfo {
    /// The cluster's name.
    pub name: String,
    /// Proxies in each status: `ready`, `up`, `lost`.
    pub ready: usize,
    /// Proxies `up`.
    pub up: usize,
    /// Proxies `lost`.
    pub lost: usize,
    /// The current config version.
    pub config_version: u64,
    /// Mass-loss protection holds: its lost proxies are not being deleted.
    pub deletion_paused: bool,
    /// Frozen for maintenance: no proxy is deleted or restarted.
    pub frozen: bool,
}

impl ClusterInfo {
    /// Whether push config and switch datasource may run.
    pub fn gate_open(&self) -> bool {
        self.ready == 0 && self.lost == 0
    }
}

impl Keeper {
    pub(crate) fn cluster_named(
        &self,
        cluster: &str,
    ) -> Result<super::registry::ClusterId, AdminError> {
        validate_cluster(cluster)?;
        self.registry
            .cluster_id(cluster)
            .ok_or_else(|| AdminError::UnknownCluster(cluster.to_owned()))
    }

    /// Whether push config and switch datasource may run on `cluster`: `Ok` when every
    /// proxy is `up` (or there is none), else the proxies that block it.
    pub fn gate(&self, cluster: &str) -> Result<(), AdminError> {
        let id = self.cluster_named(cluster)?;
        let c = self.registry.cluster(id);
        if c.not_up == 0 {
            return Ok(());
        }
        let mut blockers: Vec<Blocker> = c
            .index
            .iter()
            .filter_map(|&slot| self.registry.get(slot))
            .filter(|r| r.status != Status::Up)
            .map(|r| Blocker {
                proxy: r.proxy.to_string(),
                status: r.status,
            })
            .collect();
        blockers.sort();
        Err(AdminError::GateClosed(GateClosed {
            cluster: cluster.to_owned(),
            blockers,
        }))
    }

    /// Deletes a proxy from its cluster, as an operator does for one known to be gone.
    ///
    /// If the process is in fact alive, its next `up` heartbeat is answered with
    /// `Restart` and it comes back through `ready` (the seed's remove, as the scenario
    /// and simulations use it; an operator's forced remove through
    /// [`remove_proxy_by`](Keeper::remove_proxy_by) tells a live process to leave).
    pub fn remove_proxy(
        &mut self,
        now: Instant,
        cluster: &str,
        proxy: &str,
    ) -> Result<Status, AdminError> {
        let result = self.try_remove(now, None, true, false, cluster, proxy);
        self.audited(result, None, cluster, "remove", || format!("proxy {proxy}"))
    }

    /// [`remove_proxy`](Keeper::remove_proxy), on behalf of the admin token named `by`
    /// (for the audit record). Unless `force`, a proxy that is `up` or `ready` (alive) is
    /// not removed: [`AdminError::ProxyAlive`].
    pub fn remove_proxy_by(
        &mut self,
        now: Instant,
        by: Option<Arc<str>>,
        force: bool,
        cluster: &str,
        proxy: &str,
    ) -> Result<Status, AdminError> {
        let result = self.try_remove(now, by.clone(), force, force, cluster, proxy);
        self.audited(result, by, cluster, "remove", || format!("proxy {proxy}"))
    }

    fn try_remove(
        &mut self,
        now: Instant,
        by: Option<Arc<str>>,
        force: bool,
        leave: bool,
        cluster: &str,
        proxy: &str,
    ) -> Result<Status, AdminError> {
        let now = self.enter(now);
        validate_proxy(proxy)?;
        let id = self.cluster_named(cluster)?;
        let slot = self
            .registry
            .find(id, proxy, 0)
            .ok_or_else(|| AdminError::UnknownProxy {
                cluster: cluster.to_owned(),
                proxy: proxy.to_owned(),
            })?;
        let status = self
            .registry
            .get(slot)
            .map(|r| r.status)
            .unwrap_or(Status::Ready);
        if !force && status != Status::Lost {
            return Err(AdminError::ProxyAlive {
                cluster: cluster.to_owned(),
                proxy: proxy.to_owned(),
                status,
            });
        }
        if leave && status != Status::Lost {
            // Alive: it is told to leave, not restarted, when it is next heard.
            let incarnation = self.registry.get(slot).map_or(0, |r| r.stamp.incarnation);
            self.mark_removed(id, proxy, incarnation)?;
        }
        self.delete(slot, Reason::Removed, now);
        self.record(ChangeKind::Admin {
            action: AdminAction::Remove {
                cluster: cluster.to_owned(),
                proxy: proxy.to_owned(),
                status,
            },
            by,
        });
        Ok(status)
    }

    /// Stores `config` as the cluster's next config version, if the gate is open.
    ///
    /// Creates the cluster if it does not exist yet, so operators can push the startup
    /// config before the first proxy starts; refused with [`AdminError::RegistryFull`]
    /// when that would pass `max_clusters`. Returns the new version.
    pub fn push_config(
        &mut self,
        now: Instant,
        cluster: &str,
        config: Arc<[u8]>,
    ) -> Result<u64, AdminError> {
        self.push_config_by(now, None, cluster, config)
    }

    /// [`push_config`](Keeper::push_config), on behalf of the admin token named `by`.
    pub fn push_config_by(
        &mut self,
        now: Instant,
        by: Option<Arc<str>>,
        cluster: &str,
        config: Arc<[u8]>,
    ) -> Result<u64, AdminError> {
        self.push_config_outcome(now, by, cluster, config)
            .map(|pushed| pushed.version)
    }

    /// [`push_config_by`](Keeper::push_config_by), saying whether it made a version: a
    /// config identical to the cluster's current one makes none (and records nothing),
    /// an empty one is refused with [`ConfigError::Empty`]. The gate is checked first, so
    /// a push while a proxy is not `up` is refused whatever it holds.
    pub fn push_config_outcome(
        &mut self,
        now: Instant,
        by: Option<Arc<str>>,
        cluster: &str,
        config: Arc<[u8]>,
    ) -> Result<Pushed, AdminError> {
        let size = config.len();
        let result = self.try_push(now, by.clone(), cluster, config);
        self.audited(result, by, cluster, "push_config", || {
            format!("{size} bytes")
        })
    }

    fn try_push(
        &mut self,
        now: Instant,
        by: Option<Arc<str>>,
        cluster: &str,
        config: Arc<[u8]>,
    ) -> Result<Pushed, AdminError> {
        self.enter(now);
        validate_cluster(cluster)?;
        if config.is_empty() {
            return Err(ConfigError::Empty.into());
        }
        self.check_format(cluster, &config)?;
        if let Some(id) = self.registry.cluster_id(cluster) {
            self.gate(cluster)?;
            let current = &self.registry.cluster(id).config;
            if *current.base == *config {
                return Ok(Pushed {
                    version: current.version,
                    changed: false,
                });
            }
        }
        let next = match self.registry.cluster_id(cluster) {
            Some(id) => self.registry.cluster(id).config.with_base(config)?,
            None => ConfigVersion::initial().with_base(config)?,
        };
        let id = self
            .cluster_for(cluster)
            .ok_or_else(|| AdminError::RegistryFull {
                cluster: cluster.to_owned(),
                clusters: self.registry.cluster_count(),
                max_clusters: self.config.max_clusters,
            })?;
        Ok(Pushed {
            version: self.install(id, next, ConfigCause::Push, by),
            changed: true,
        })
    }

    /// Makes `to` the datasource of `hostgroup`, if the gate is open and the hostgroup is
    /// served by `from` (or by nothing yet). Returns the new config version.
    pub fn switch_datasource(
        &mut self,
        now: Instant,
        cluster: &str,
        hostgroup: &str,
        from: &str,
        to: &str,
    ) -> Result<u64, AdminError> {
        self.switch_datasource_by(now, None, cluster, hostgroup, from, to)
    }

    /// [`switch_datasource`](Keeper::switch_datasource), on behalf of the admin token
    /// named `by`.
    pub fn switch_datasource_by(
        &mut self,
        now: Instant,
        by: Option<Arc<str>>,
        cluster: &str,
        hostgroup: &str,
        from: &str,
        to: &str,
    ) -> Result<u64, AdminError> {
        let result = self.try_switch(now, by.clone(), cluster, hostgroup, from, to);
        self.audited(result, by, cluster, "switch", || {
            format!("hostgroup {hostgroup} from {from} to {to}")
        })
    }

    fn try_switch(
        &mut self,
        now: Instant,
        by: Option<Arc<str>>,
        cluster: &str,
        hostgroup: &str,
        from: &str,
        to: &str,
    ) -> Result<u64, AdminError> {
        self.enter(now);
        let id = self.cluster_named(cluster)?;
        // Names first: a malformed request is refused as such, whatever the gate says.
        for name in [hostgroup, from, to] {
            validate_datasource_name(name)?;
        }
        if from == to {
            let choices = self
                .hostgroup_of(id, hostgroup)
                .map(|h| h.switch_targets())
                .unwrap_or_default();
            return Err(AdminError::SameDatasource {
                hostgroup: hostgroup.to_owned(),
                datasource: to.to_owned(),
                choices,
            });
        }
        self.check_switch(id, cluster, hostgroup, from, to)?;
        self.gate(cluster)?;
        let current = self.registry.cluster(id).config.clone();
        let next = current.with_datasource(hostgroup, to)?;
        let cause = ConfigCause::Switch {
            hostgroup: hostgroup.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
        };
        Ok(self.install(id, next, cause, by))
    }

    /// Checks a switch against the cluster's declared hostgroups: `hostgroup` declared,
    /// `from` its current datasource, `to` another of its datasources.
    fn check_switch(
        &self,
        id: super::registry::ClusterId,
        cluster: &str,
        hostgroup: &str,
        from: &str,
        to: &str,
    ) -> Result<(), AdminError> {
        let Some(declared) = self.hostgroup_of(id, hostgroup) else {
            return Err(AdminError::UnknownHostgroup {
                cluster: cluster.to_owned(),
                hostgroup: hostgroup.to_owned(),
                declared: self.hostgroup_names(id),
            });
        };
        let choices = declared.switch_targets();
        if declared.current != from {
            return Err(AdminError::DatasourceMismatch {
                hostgroup: hostgroup.to_owned(),
                expected: from.to_owned(),
                actual: declared.current,
                choices,
            });
        }
        if !choices.iter().any(|d| d == to) {
            return Err(AdminError::UnknownDatasource {
                hostgroup: hostgroup.to_owned(),
                datasource: to.to_owned(),
                choices,
            });
        }
        Ok(())
    }

    /// Makes the content of version `to` of `cluster` (`stored`: its file and
    /// datasources, as the store holds them; `None`: the store holds no such version)
    /// current again, as a new version, if the gate is open and `to` is an earlier
    /// version. Content identical to the current version's makes none (`changed:
    /// false`), as a push does.
    pub fn rollback_config_by(
        &mut self,
        now: Instant,
        by: Option<Arc<str>>,
        cluster: &str,
        to: u64,
        stored: Option<StoredContent>,
    ) -> Result<Pushed, AdminError> {
        let result = self.try_rollback(now, by.clone(), cluster, to, stored);
        self.audited(result, by, cluster, "rollback", || {
            format!("to version {to}")
        })
    }

    fn try_rollback(
        &mut self,
        now: Instant,
        by: Option<Arc<str>>,
        cluster: &str,
        to: u64,
        stored: Option<StoredContent>,
    ) -> Result<Pushed, AdminError> {
        self.enter(now);
        let id = self.cluster_named(cluster)?;
        self.gate(cluster)?;
        let current = self.registry.cluster(id).config.clone();
        let Some((base, datasources)) = stored.filter(|_| to < current.version) else {
            return Err(AdminError::NoSuchVersion {
                cluster: cluster.to_owned(),
                version: to,
                current: current.version,
            });
        };
        // The format may have been declared since that version was made.
        self.check_format(cluster, &base)?;
        if *current.base == *base && current.datasources == datasources {
            return Ok(Pushed {
                version: current.version,
                changed: false,
            });
        }
        let next = ConfigVersion::render(current.version + 1, base, datasources)?;
        Ok(Pushed {
            version: self.install(id, next, ConfigCause::Rollback { to }, by),
            changed: true,
        })
    }

    /// Checks that `cluster` is at config version `expected` (a cluster that does not
    /// exist yet is at 1, the initial config), as a push, switch or rollback that says
    /// which version it replaces asks; a mismatch is refused and recorded as a refusal of
    /// `action`. Call it in the same turn as the change, so nothing slips between them.
    pub fn expect_version(
        &mut self,
        now: Instant,
        by: Option<Arc<str>>,
        cluster: &str,
        action: &str,
        expected: u64,
    ) -> Result<(), AdminError> {
        self.enter(now);
        validate_cluster(cluster)?;
        let current = self
            .registry
            .cluster_id(cluster)
            .map_or(1, |id| self.registry.cluster(id).config.version);
        if current == expected {
            return Ok(());
        }
        let refused = Err(AdminError::VersionMismatch {
            cluster: cluster.to_owned(),
            expected,
            current,
        });
        self.audited(refused, by, cluster, action, || {
            format!("replacing version {expected}")
        })
    }

    /// Refuses `action` on `cluster` if it does not exist (recorded as a refusal): what a
    /// push that was not asked to create its cluster checks first, in the same turn.
    pub fn require_cluster(
        &mut self,
        now: Instant,
        by: Option<Arc<str>>,
        cluster: &str,
        action: &str,
    ) -> Result<(), AdminError> {
        self.enter(now);
        validate_cluster(cluster)?;
        if self.registry.cluster_id(cluster).is_some() {
            return Ok(());
        }
        let refused = Err(AdminError::NotCreated(cluster.to_owned()));
        self.audited(refused, by, cluster, action, || {
            "without --create".to_owned()
        })
    }

    /// `result`, recorded in the audit record as a refusal of `action` on `cluster` if it
    /// is an error, unless the request was malformed (a name that is not one names no
    /// cluster; the HTTP log has those). What was `asked` is cut like the reason, for the
    /// same bound.
    pub(crate) fn audited<T>(
        &mut self,
        result: Result<T, AdminError>,
        by: Option<Arc<str>>,
        cluster: &str,
        action: &str,
        asked: impl FnOnce() -> String,
    ) -> Result<T, AdminError> {
        let Err(error) = &result else {
            return result;
        };
        if matches!(error, AdminError::Invalid(_)) || validate_cluster(cluster).is_err() {
            return result;
        }
        self.record(ChangeKind::Admin {
            action: AdminAction::Refused {
                cluster: cluster.to_owned(),
                action: action.to_owned(),
                asked: bounded(asked()),
                reason: bounded(error.to_string()),
            },
            by,
        });
        result
    }

    fn install(
        &mut self,
        id: super::registry::ClusterId,
        next: ConfigVersion,
        cause: ConfigCause,
        by: Option<Arc<str>>,
    ) -> u64 {
        let mut next = next;
        let started = self.clock.now();
        let cluster = self.registry.cluster_mut(id);
        if let Some(key) = &self.config_id_key {
            next.id = ConfigId::keyed(key, &cluster.name, next.version, &next.digest);
        }
        let version = next.version;
        let config = Arc::new(next);
        cluster.config = config.clone();
        cluster.rejections.clear();
        cluster.rollout_since = Some(started);
        let name = cluster.name.clone();
        let action = match &cause {
            ConfigCause::Push => AdminAction::PushConfig {
                cluster: name.to_string(),
                version,
                size: config.base.len(),
            },
            ConfigCause::Switch {
                hostgroup,
                from,
                to,
            } => AdminAction::Switch {
                cluster: name.to_string(),
                hostgroup: hostgroup.clone(),
                from: from.clone(),
                to: to.clone(),
                version,
            },
            ConfigCause::Rollback { to } => AdminAction::Rollback {
                cluster: name.to_string(),
                to: *to,
                version,
            },
        };
        self.record(ChangeKind::Config {
            cluster: name.clone(),
            config: summary(&config),
            cause,
        });
        self.record_blob(ConfigBlob {
            cluster: name,
            config,
        });
        self.record(ChangeKind::Admin { action, by });
        version
    }

    /// The cluster's current config version.
    pub fn config_of(&self, cluster: &str) -> Result<Arc<ConfigVersion>, AdminError> {
        let id = self.cluster_named(cluster)?;
        Ok(self.registry.cluster(id).config.clone())
    }

    /// The seed's listing of a cluster: `/zerodb/proxy/C/status/ADDR->STATUS`, sorted.
    pub fn listing(&self, cluster: &str) -> Result<Vec<String>, AdminError> {
        Ok(self
            .proxies(cluster)?
            .into_iter()
            .map(|p| format!("{}->{}", status_key(&p.cluster, &p.proxy), p.status))
            .collect())
    }

    /// Every proxy of a cluster, sorted by identity. O(proxies of the cluster): for tests,
    /// harnesses and the HTTP view's seed at boot, never on a polled path.
    pub fn proxies(&self, cluster: &str) -> Result<Vec<ProxyInfo>, AdminError> {
        let id = self.cluster_named(cluster)?;
        let c = self.registry.cluster(id);
        let mut out: Vec<ProxyInfo> = c
            .index
            .iter()
            .filter_map(|&slot| self.registry.get(slot))
            .map(|r| self.info(r))
            .collect();
        out.sort_by(|a, b| a.proxy.cmp(&b.proxy));
        Ok(out)
    }

    /// The rollout of a cluster's current config: who runs it, who does not yet, who
    /// rejected it (see [`super::rollout`]). O(proxies of the cluster): for tests,
    /// simulations and harnesses; the admin API judges its own view.
    pub fn rollout(&self, cluster: &str) -> Result<super::Rollout, AdminError> {
        let id = self.cluster_named(cluster)?;
        let c = self.registry.cluster(id);
        let now = self.clock.now();
        let (mut running, mut pending, mut rejected) = (Vec::new(), Vec::new(), Vec::new());
        let mut overdue = 0;
        for &slot in c.index.iter() {
            let Some(r) = self.registry.get(slot) else {
                continue;
            };
            let name = r.proxy.to_string();
            if r.runs(&c.config) {
                running.push(name);
            } else if let Some(rej) = c
                .rejections
                .get(&slot)
                .filter(|rej| rej.incarnation == r.stamp.incarnation && rej.config == c.config.id)
            {
                rejected.push((name, rej.reason.to_string()));
            } else {
                // A proxy that joined after the rollout began has its own time to pull;
                // one that was there is late from the start (going lost does not reset it).
                let since = match (c.rollout_since, r.status) {
                    (Some(s), Status::Ready) => s.max(r.since),
                    (Some(s), _) => s,
                    (None, _) => r.since,
                };
                if now >= since + self.config.rollout_timeout {
                    overdue += 1;
                }
                pending.push(name);
            }
        }
        running.sort_unstable();
        pending.sort_unstable();
        rejected.sort_unstable();
        Ok(super::Rollout {
            version: c.config.version,
            config: c.config.id,
            state: super::rollout::judge(pending.len() as u64, rejected.len() as u64, overdue),
            running,
            pending,
            rejected,
        })
    }

    /// One proxy of a cluster. O(1).
    pub fn proxy(&self, cluster: &str, proxy: &str) -> Result<ProxyInfo, AdminError> {
        validate_proxy(proxy)?;
        let id = self.cluster_named(cluster)?;
        let unknown = || AdminError::UnknownProxy {
            cluster: cluster.to_owned(),
            proxy: proxy.to_owned(),
        };
        let slot = self.registry.find(id, proxy, 0).ok_or_else(unknown)?;
        let record = self.registry.get(slot).ok_or_else(unknown)?;
        Ok(self.info(record))
    }

    fn info(&self, r: &super::registry::Record) -> ProxyInfo {
        ProxyInfo {
            cluster: self.registry.cluster(r.cluster).name.to_string(),
            proxy: r.proxy.to_string(),
            status: r.status,
            incarnation: r.stamp.incarnation,
            last_heard: r.last_heard,
            since: r.since,
            source: r.reply_to,
            config_version: r.config_version,
        }
    }

    /// Every cluster, sorted by name. O(clusters): the counts are kept as statuses change.
    pub fn clusters(&self) -> Vec<ClusterInfo> {
        let mut out: Vec<ClusterInfo> = self
            .registry
            .clusters()
            .map(|(_, c)| ClusterInfo {
                name: c.name.to_string(),
                ready: c.not_up - c.lost,
                up: c.index.len() - c.not_up,
                lost: c.lost,
                config_version: c.config.version,
                deletion_paused: c.deletion_paused,
                frozen: c.settings.frozen,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The slot of a registered proxy (for the HTTP view's seed at boot). O(1).
    pub fn slot_of(&self, cluster: &str, proxy: &str) -> Option<u32> {
        let id = self.registry.cluster_id(cluster)?;
        self.registry.find(id, proxy, 0)
    }

    /// Every cluster's config summary, mass-loss state and settings (for the HTTP
    /// view's seed at boot). O(clusters).
    pub fn cluster_seeds(
        &self,
    ) -> Vec<(
        Arc<str>,
        ConfigSummary,
        bool,
        super::cluster::ClusterSettings,
    )> {
        self.registry
            .clusters()
            .map(|(_, c)| {
                (
                    c.name.clone(),
                    summary(&c.config),
                    c.deletion_paused,
                    c.settings.clone(),
                )
            })
            .collect()
    }

    /// Whether mass-loss protection pauses deleting the lost proxies of `cluster`.
    pub fn deletion_paused(&self, cluster: &str) -> bool {
        self.registry
            .cluster_id(cluster)
            .is_some_and(|id| self.registry.cluster(id).deletion_paused)
    }

    /// Names the config versions this keeper makes from now on with
    /// [`ConfigId::keyed`] under `key` (the store key's, the same on every keeper), or,
    /// with `None`, with [`ConfigId::of`]. A version keeps the id it was made with.
    pub fn set_config_id_key(&mut self, key: Option<ConfigIdKey>) {
        self.config_id_key = key;
    }

    /// Checks every config file pushed to (or rolled back to in) a cluster of `formats`
    /// against the format it declares before anything is stored.
    pub fn set_config_formats(&mut self, formats: BTreeMap<String, ConfigFormat>) {
        self.config_formats = formats;
    }

    /// `config` checked against the format `cluster` declares, if any.
    fn check_format(&self, cluster: &str, config: &[u8]) -> Result<(), AdminError> {
        match self.config_formats.get(cluster) {
            Some(format) => Ok(format.check(config)?),
            None => Ok(()),
        }
    }

    /// Puts `keys` in force instead of the keys it holds (a key rotation without a
    /// restart): every key of `keys` verifies from the next datagram on, a key it lacks
    /// verifies nothing more, and an answer already queued is still signed with the key
    /// that verified its request. Nothing else changes: proxies under a key kept are not
    /// disturbed, and one whose key was retired is simply no longer heard.
    pub fn set_keys(&mut self, keys: Keyring) -> KeyringChange {
        let change = self.keys.replace(keys);
        self.seen.set_key_ids(self.keys.ids_by_index());
        change
    }

    /// The keeper's epoch: its boot counter, in every freshness token.
    pub fn epoch(&self) -> u32 {
        self.tokens.epoch()
    }

    /// Number of proxies registered, across clusters.
    pub fn proxy_count(&self) -> usize {
        self.registry.len()
    }

    /// Number of clusters in the registry. O(1).
    pub fn cluster_count(&self) -> usize {
        self.registry.cluster_count()
    }

    /// Number of tombstones held, across clusters.
    pub fn tombstone_count(&self) -> usize {
        self.registry.tombstones()
    }

    /// Number of timer entries queued, stale ones included (for benchmarks and tests).
    pub fn timer_entries(&self) -> usize {
        self.timers.len()
    }
}

/// What a config version is, without its content.
pub fn summary(config: &ConfigVersion) -> ConfigSummary {
    ConfigSummary {
        version: config.version,
        digest: config.digest,
        size: config.bytes.len(),
        base_size: config.base.len(),
        datasources: config.datasources.clone(),
    }
}

/// `text`, cut to at most [`MAX_REASON`] bytes at a character boundary (ending with `…`
/// when cut).
fn bounded(mut text: String) -> String {
    if text.len() > MAX_REASON {
        let mut end = MAX_REASON - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}
