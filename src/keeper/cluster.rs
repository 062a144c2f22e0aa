//! What operators declare about a cluster beyond its config: its hostgroups and their
//! datasources, whether it is frozen for maintenance, and the processes removed from it;
//! and the deletion of a cluster.
//!
//! A cluster's [`ClusterSettings`] travel as one [`ChangeKind::Cluster`] change, whole,
//! whenever they change, so the store keeps the latest of each cluster beside its configs
//! and a restarted keeper finds them as they were. Hostgroups may also be declared in the
//! keeper's config file; those are read at every start and not stored, and a hostgroup
//! declared through the API (stored) takes precedence over the file's of the same name.
//!
//! - **Hostgroups.** Each declares its datasources and the datasource it starts with. Its
//!   current datasource is the one the cluster's config names for it (the last switch's
//!   `to`), or the one it starts with if no switch named it yet. A switch must name a
//!   declared hostgroup, its current datasource as `from`, and another of its
//!   datasources as `to`.
//! - **Freezing.** A frozen cluster deletes no proxy (neither a `ready` one past
//!   `ready_timeout` nor a `lost` one past `delete_after`) and sends no `Restart`, until
//!   it is unfrozen: every `lost` proxy then gets a fresh `delete_after`, and every
//!   `ready` one past its deadline a fresh `ready_timeout`, as when mass-loss protection
//!   resumes. Statuses keep changing as proxies are heard or fall silent.
//! - **Removal markers.** A forced remove of a live proxy records the incarnation
//!   removed: that process and every earlier life of it are answered with `Leave`
//!   instead of being registered or restarted, until the agent acknowledges (its
//!   unregister) or a later incarnation registers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::configdoc::validate_datasource_name;
use crate::identity::validate_cluster;
use crate::keeper::admin::AdminError;
use crate::keeper::registry::ClusterId;
use crate::keeper::{AdminAction, ChangeKind, Keeper, Status};
use crate::time::Instant;

/// Most hostgroups a cluster declares.
pub const MAX_HOSTGROUPS: usize = 128;
/// Most datasources a hostgroup declares.
pub const MAX_DATASOURCES: usize = 32;
/// Most removal markers a cluster holds at once: a forced remove past it is refused.
pub const MAX_REMOVED: usize = 1024;

/// A declared hostgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hostgroup {
    /// Its datasources.
    pub datasources: BTreeSet<String>,
    /// The datasource it starts with, before any switch names it (one of `datasources`).
    pub initial: String,
}

/// What operators declared about a cluster (the store keeps the latest, whole).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// Hostgroups declared through the API, by name.
    pub hostgroups: BTreeMap<String, Hostgroup>,
    /// Frozen for maintenance: no deletion, no `Restart`.
    pub frozen: bool,
    /// Processes removed by an operator while alive: each identity's largest removed
    /// incarnation (it and every smaller one are answered with `Leave`).
    pub removed: BTreeMap<String, u64>,
}

impl ClusterSettings {
    /// Whether nothing is declared (a cluster with default settings stores none).
    pub fn is_default(&self) -> bool {
        *self == ClusterSettings::default()
    }
}

/// Where a hostgroup's declaration comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Declared {
    /// `zerokeeper hostgroup set` or the API (stored).
    Api,
    /// The keeper's config file.
    File,
}

/// A hostgroup as listings show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostgroupInfo {
    /// Its name.
    pub hostgroup: String,
    /// Its datasources, sorted.
    pub datasources: Vec<String>,
    /// Its current datasource.
    pub current: String,
    /// Where it is declared.
    pub declared: Declared,
}

impl HostgroupInfo {
    /// The datasources a switch may name as `to`: all but the current one, sorted.
    pub fn switch_targets(&self) -> Vec<String> {
        self.datasources
            .iter()
            .filter(|d| **d != self.current)
            .cloned()
            .collect()
    }
}

/// The hostgroups a keeper's config file declares, by cluster and name.
pub type DeclaredHostgroups = BTreeMap<String, BTreeMap<String, Hostgroup>>;

/// Checks a declaration's names and sizes; `Ok` with the datasources as a set.
pub fn check_declaration(
    hostgroup: &str,
    datasources: &[String],
    initial: &str,
) -> Result<BTreeSet<String>, AdminError> {
    validate_datasource_name(hostgroup)?;
    for d in datasources {
        validate_datasource_name(d)?;
    }
    validate_datasource_name(initial)?;
    let set: BTreeSet<String> = datasources.iter().cloned().collect();
    let bad = |why: String| Err(AdminError::BadHostgroup(why));
    if set.is_empty() {
        return bad(format!("hostgroup {hostgroup} declares no datasource"));
    }
    if set.len() > MAX_DATASOURCES {
        return bad(format!(
            "hostgroup {hostgroup} declares {} datasources, more than the {MAX_DATASOURCES} a hostgroup may have",
            set.len()
        ));
    }
    if !set.contains(initial) {
        return bad(format!(
            "hostgroup {hostgroup}'s current datasource {initial} is not one of its datasources ({})",
            join(&set)
        ));
    }
    Ok(set)
}

/// `a, b, c`.
pub(crate) fn join<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    names
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Keeper {
    /// Sets the hostgroups the keeper's config file declares (read at every start and
    /// on reload; not stored). Declarations that fail [`check_declaration`] are the
    /// config loader's to refuse.
    pub fn set_declared_hostgroups(&mut self, declared: DeclaredHostgroups) {
        self.declared_hostgroups = declared;
    }

    /// Restores what a store kept of each cluster's settings (at boot, before anything
    /// is heard; records nothing).
    pub fn restore_settings(&mut self, stored: &[(String, ClusterSettings)]) {
        for (name, settings) in stored {
            if validate_cluster(name).is_err() {
                continue;
            }
            let id = self.registry.ensure_cluster(name);
            self.registry.cluster_mut(id).settings = settings.clone();
        }
    }

    /// The settings of `cluster` (the default ones for a cluster that has none).
    pub fn settings(&self, cluster: &str) -> ClusterSettings {
        self.registry
            .cluster_id(cluster)
            .map(|id| self.registry.cluster(id).settings.clone())
            .unwrap_or_default()
    }

    /// Whether `cluster` is frozen.
    pub fn frozen(&self, cluster: &str) -> bool {
        self.registry
            .cluster_id(cluster)
            .is_some_and(|id| self.registry.cluster(id).settings.frozen)
    }

    /// The declaration of `hostgroup` in cluster `id` (the API's, else the file's) and
    /// its current datasource.
    pub(crate) fn hostgroup_of(&self, id: ClusterId, hostgroup: &str) -> Option<HostgroupInfo> {
        let c = self.registry.cluster(id);
        let (declared, how) = match c.settings.hostgroups.get(hostgroup) {
            Some(h) => (h, Declared::Api),
            None => (
                self.declared_hostgroups.get(&*c.name)?.get(hostgroup)?,
                Declared::File,
            ),
        };
        let current = c
            .config
            .datasources
            .get(hostgroup)
            .cloned()
            .unwrap_or_else(|| declared.initial.clone());
        Some(HostgroupInfo {
            hostgroup: hostgroup.to_owned(),
            datasources: declared.datasources.iter().cloned().collect(),
            current,
            declared: how,
        })
    }

    /// Every hostgroup `cluster` declares, sorted by name. A cluster only the config
    /// file names (no proxy, no version yet) lists the file's.
    pub fn hostgroups(&self, cluster: &str) -> Result<Vec<HostgroupInfo>, AdminError> {
        validate_cluster(cluster)?;
        let file = self.declared_hostgroups.get(cluster);
        let Some(id) = self.registry.cluster_id(cluster) else {
            let Some(file) = file else {
                return Err(AdminError::UnknownCluster(cluster.to_owned()));
            };
            return Ok(file
                .iter()
                .map(|(name, h)| HostgroupInfo {
                    hostgroup: name.clone(),
                    datasources: h.datasources.iter().cloned().collect(),
                    current: h.initial.clone(),
                    declared: Declared::File,
                })
                .collect());
        };
        let mut names: BTreeSet<&String> = self
            .registry
            .cluster(id)
            .settings
            .hostgroups
            .keys()
            .collect();
        names.extend(file.into_iter().flat_map(|f| f.keys()));
        Ok(names
            .into_iter()
            .filter_map(|name| self.hostgroup_of(id, name))
            .collect())
    }

    /// The names of the hostgroups cluster `id` declares, sorted.
    pub(crate) fn hostgroup_names(&self, id: ClusterId) -> Vec<String> {
        let c = self.registry.cluster(id);
        let mut names: BTreeSet<String> = c.settings.hostgroups.keys().cloned().collect();
        if let Some(file) = self.declared_hostgroups.get(&*c.name) {
            names.extend(file.keys().cloned());
        }
        names.into_iter().collect()
    }

    /// Declares `hostgroup` of `cluster` with `datasources`, on behalf of the admin
    /// token named `by`. A hostgroup that already has a current datasource keeps it:
    /// `current` may only repeat it (a switch changes it), and `datasources` must hold
    /// it. A new one needs `current`, one of `datasources`. Declaring changes no proxy's
    /// config, so the gate does not apply. Returns the hostgroup as declared and whether
    /// anything changed.
    pub fn set_hostgroup_by(
        &mut self,
        now: Instant,
        by: Option<Arc<str>>,
        cluster: &str,
        hostgroup: &str,
        datasources: &[String],
        current: Option<&str>,
    ) -> Result<(HostgroupInfo, bool), AdminError> {
        let result =
            self.try_set_hostgroup(now, by.clone(), cluster, hostgroup, datasources, current);
        self.audited(result, by, cluster, "hostgroup_set", || {
            format!("hostgroup {hostgroup} with {}", join(datasources))
        })
    }

    fn try_set_hostgroup(
        &mut self,
        now: Instant,
        by: Option<Arc<str>>,
        cluster: &str,
        hostgroup: &str,
        datasources: &[String],
        current: Option<&str>,
    ) -> Result<(HostgroupInfo, bool), AdminError> {
        self.enter(now);
        let id = self.cluster_named(cluster)?;
        validate_datasource_name(hostgroup)?;
        let existing = self.hostgroup_of(id, hostgroup);
        // Its current datasource, if a switch (or an earlier declaration) gave it one:
        // the config names it even while the hostgroup is not declared.
        let has = existing.as_ref().map(|h| h.current.clone()).or_else(|| {
            self.registry
                .cluster(id)
                .config
                .datasources
                .get(hostgroup)
                .cloned()
        });
        let initial = match (current, &has) {
            (Some(asked), Some(has)) if asked != has => {
                return Err(AdminError::BadHostgroup(format!(
                    "hostgroup {hostgroup} is served by {has}: a declaration does not change the current datasource, a switch does (zerokeeper switch --hostgroup {hostgroup} --from {has} --to {asked})"
                )));
            }
            (_, Some(has)) => has.clone(),
            (Some(asked), None) => asked.to_owned(),
            (None, None) => {
                return Err(AdminError::BadHostgroup(format!(
                    "hostgroup {hostgroup} is new: say which datasource serves it now (--current, \"current\")"
                )));
            }
        };
        let set = check_declaration(hostgroup, datasources, &initial)?;
        let c = self.registry.cluster(id);
        if !c.settings.hostgroups.contains_key(hostgroup)
            && self.hostgroup_names(id).len() >= MAX_HOSTGROUPS
        {
            return Err(AdminError::BadHostgroup(format!(
                "cluster {cluster} declares {MAX_HOSTGROUPS} hostgroups already, as many as a cluster may"
            )));
        }
        let declared = Hostgroup {
            datasources: set,
            initial,
        };
        let changed = c.settings.hostgroups.get(hostgroup) != Some(&declared);
        if changed {
            let mut settings = c.settings.clone();
            settings.hostgroups.insert(hostgroup.to_owned(), declared);
            self.set_settings(id, settings);
        }
        let info = self
            .hostgroup_of(id, hostgroup)
            .ok_or_else(|| AdminError::UnknownCluster(cluster.to_owned()))?;
        if changed {
            self.record(ChangeKind::Admin {
                action: AdminAction::Hostgroup {
                    cluster: cluster.to_owned(),
                    hostgroup: hostgroup.to_owned(),
                    datasources: info.datasources.clone(),
                    current: info.current.clone(),
                },
                by,
            });
        }
        Ok((info, changed))
    }

    /// Undeclares `hostgroup` of `cluster` (one declared through the API), on behalf of
    /// the admin token named `by`. The cluster's config keeps naming the datasource that
    /// serves it (a proxy's config does not change), but no switch names it until it is
    /// declared again, when that datasource is its current one. A hostgroup the keeper's
    /// config file declares is the file's to remove.
    pub fn delete_hostgroup_by(
        &mut self,
        now: Instant,
        by: Option<Arc<str>>,
        cluster: &str,
        hostgroup: &str,
    ) -> Result<(), AdminError> {
        let result = self.try_delete_hostgroup(now, by.clone(), cluster, hostgroup);
        self.audited(result, by, cluster, "hostgroup_delete", || {
            format!("hostgroup {hostgroup}")
        })
    }

    fn try_delete_hostgroup(
        &mut self,
        now: Instant,
        by: Option<Arc<str>>,
        cluster: &str,
        hostgroup: &str,
    ) -> Result<(), AdminError> {
        self.enter(now);
        let id = self.cluster_named(cluster)?;
        validate_datasource_name(hostgroup)?;
        let c = self.registry.cluster(id);
        if !c.settings.hostgroups.contains_key(hostgroup) {
            if self.hostgroup_of(id, hostgroup).is_some() {
                return Err(AdminError::BadHostgroup(format!(
                    "hostgroup {hostgroup} of cluster {cluster} is declared in the keeper's config file ([clusters.{cluster}.hostgroups.{hostgroup}]): remove it there. Nothing changed."
                )));
            }
            return Err(AdminError::UnknownHostgroup {
                cluster: cluster.to_owned(),
                hostgroup: hostgroup.to_owned(),
                declared: self.hostgroup_names(id),
            });
        }
        let mut settings = c.settings.clone();
        settings.hostgroups.remove(hostgroup);
        self.set_settings(id, settings);
        self.record(ChangeKind::Admin {
            action: AdminAction::HostgroupDelete {
                cluster: cluster.to_owned(),
                hostgroup: hostgroup.to_owned(),
            },
            by,
        });
        Ok(())
    }

    /// Freezes (or unfreezes) `cluster` for maintenance, on behalf of the admin token
    /// named `by`. Returns whether anything changed.
    pub fn set_frozen_by(
        &mut self,
        now: Instant,
        by: Option<Arc<str>>,
        cluster: &str,
        frozen: bool,
    ) -> Result<bool, AdminError> {
        let result = self.try_set_frozen(now, by.clone(), cluster, frozen);
        let action = if frozen { "freeze" } else { "unfreeze" };
        self.audited(result, by, cluster, action, String::new)
    }

    fn try_set_frozen(
        &mut self,
        now: Instant,
        by: Option<Arc<str>>,
        cluster: &str,
        frozen: bool,
    ) -> Result<bool, AdminError> {
        let now = self.enter(now);
        let id = self.cluster_named(cluster)?;
        let c = self.registry.cluster(id);
        if c.settings.frozen == frozen {
            return Ok(false);
        }
        let mut settings = c.settings.clone();
        settings.frozen = frozen;
        self.set_settings(id, settings);
        if !frozen {
            self.thaw(id, now);
        }
        self.record(ChangeKind::Admin {
            action: AdminAction::Freeze {
                cluster: cluster.to_owned(),
                frozen,
            },
            by,
        });
        Ok(true)
    }

    /// After a freeze: every `lost` proxy of the cluster gets a fresh `delete_after` and
    /// every `ready` one past its deadline a fresh `ready_timeout` (a scan of one
    /// cluster, once per unfreeze).
    fn thaw(&mut self, id: ClusterId, now: Instant) {
        let slots: Vec<u32> = self.registry.cluster(id).index.iter().copied().collect();
        for slot in slots {
            match self.registry.get(slot).map(|r| (r.status, r.deadline)) {
                Some((Status::Lost, _)) => self.renew_delete_window(slot, now),
                Some((Status::Ready, deadline)) if deadline <= now => {
                    self.renew_ready_window(slot, now);
                }
                _ => {}
            }
        }
    }

    /// Deletes `cluster`, with every config version and setting of it, on behalf of the
    /// admin token named `by`; refused while proxies are registered in it
    /// ([`AdminError::ClusterNotEmpty`]). A proxy that registers later creates it anew.
    pub fn delete_cluster_by(
        &mut self,
        now: Instant,
        by: Option<Arc<str>>,
        cluster: &str,
    ) -> Result<(), AdminError> {
        let result = self.try_delete_cluster(now, by.clone(), cluster);
        self.audited(result, by, cluster, "delete_cluster", String::new)
    }

    fn try_delete_cluster(
        &mut self,
        now: Instant,
        by: Option<Arc<str>>,
        cluster: &str,
    ) -> Result<(), AdminError> {
        self.enter(now);
        let id = self.cluster_named(cluster)?;
        let c = self.registry.cluster(id);
        if !c.index.is_empty() {
            let mut names: Vec<String> = c
                .index
                .iter()
                .filter_map(|&slot| self.registry.get(slot))
                .map(|r| r.proxy.to_string())
                .collect();
            names.sort();
            let proxies = names.len();
            names.truncate(10);
            return Err(AdminError::ClusterNotEmpty {
                cluster: cluster.to_owned(),
                proxies,
                names,
            });
        }
        let name = c.name.clone();
        self.registry.delete_cluster(id);
        self.record(ChangeKind::Cluster {
            cluster: name,
            settings: None,
        });
        self.record(ChangeKind::Admin {
            action: AdminAction::DeleteCluster {
                cluster: cluster.to_owned(),
            },
            by,
        });
        Ok(())
    }

    /// Replaces the settings of cluster `id` and records the change.
    pub(crate) fn set_settings(&mut self, id: ClusterId, settings: ClusterSettings) {
        let c = self.registry.cluster_mut(id);
        c.settings = settings.clone();
        let cluster = c.name.clone();
        self.record(ChangeKind::Cluster {
            cluster,
            settings: Some(settings),
        });
    }

    /// The largest incarnation of `proxy` an operator removed from cluster `id`, if a
    /// removal marker holds it.
    pub(crate) fn removed_marker(&self, id: ClusterId, proxy: &str) -> Option<u64> {
        self.registry
            .cluster(id)
            .settings
            .removed
            .get(proxy)
            .copied()
    }

    /// Records that `incarnation` of `proxy` (and every earlier life) was removed.
    pub(crate) fn mark_removed(
        &mut self,
        id: ClusterId,
        proxy: &str,
        incarnation: u64,
    ) -> Result<(), AdminError> {
        let c = self.registry.cluster(id);
        if !c.settings.removed.contains_key(proxy) && c.settings.removed.len() >= MAX_REMOVED {
            return Err(AdminError::TooManyRemoved {
                cluster: c.name.to_string(),
                limit: MAX_REMOVED,
            });
        }
        let mut settings = c.settings.clone();
        let marker = settings.removed.entry(proxy.to_owned()).or_insert(0);
        *marker = (*marker).max(incarnation);
        self.set_settings(id, settings);
        Ok(())
    }

    /// Drops the removal marker of `proxy` in cluster `id`, if there is one (the agent
    /// acknowledged, or a later life registered).
    pub(crate) fn clear_removed(&mut self, id: ClusterId, proxy: &str) {
        let c = self.registry.cluster(id);
        if !c.settings.removed.contains_key(proxy) {
            return;
        }
        let mut settings = c.settings.clone();
        settings.removed.remove(proxy);
        self.set_settings(id, settings);
    }
}
