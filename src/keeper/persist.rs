//! What the keeper core asks to be persisted, how it is rebuilt from what was, and how
//! it holds answers until they are durable.
//!
//! A keeper built with [`Keeper::restore`] is *persistent*: every status change, deletion,
//! config version and admin action becomes a [`Persist`] record, numbered in order. The
//! driver takes them ([`Keeper::take_changes`]), commits them, and reports the number up
//! to which they are durable ([`Keeper::mark_durable`]). Until then the core holds the
//! answers that must not get ahead of the store: the `Ack` of a registration (a proxy
//! told it is registered must find itself registered after a crash). Admin calls return
//! at once to the driver, which answers its caller after the commit.
//!
//! A keeper built with [`Keeper::new`] keeps nothing for a store and holds nothing.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use thiserror::Error;

use crate::auth::Keyring;
use crate::configdoc::{ConfigError, ConfigVersion};
use crate::identity::{IdentityError, validate_cluster, validate_proxy};
use crate::keeper::registry::Record;
use crate::keeper::transition::Stamp;
use crate::keeper::{Keeper, KeeperConfig, KeeperConfigError, Pending, Status};
use crate::time::Instant;

/// A change to persist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persist {
    /// A proxy was registered, started a new life or changed status.
    Proxy {
        /// The cluster.
        cluster: Arc<str>,
        /// The proxy's identity.
        proxy: String,
        /// The incarnation the registry holds.
        incarnation: u64,
        /// Its status now.
        status: Status,
        /// Since when.
        since: Instant,
    },
    /// A proxy was deleted.
    Deleted {
        /// The cluster.
        cluster: Arc<str>,
        /// The proxy's identity.
        proxy: String,
    },
    /// A cluster has a new config version.
    Config {
        /// The cluster.
        cluster: Arc<str>,
        /// The version.
        config: Arc<ConfigVersion>,
    },
    /// An operator acted.
    Admin {
        /// When.
        at: Instant,
        /// What.
        action: AdminAction,
    },
}

/// An operator's action, for the audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

/// A proxy's registry entry, as a keeper boot finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoredProxy {
    /// The cluster.
    pub cluster: String,
    /// The proxy's identity.
    pub proxy: String,
    /// The incarnation the registry held.
    pub incarnation: u64,
    /// Its status.
    pub status: Status,
}

/// A cluster's latest config version, as a keeper boot finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoredConfig {
    /// The cluster.
    pub cluster: String,
    /// The version number.
    pub version: u64,
    /// The operator's config file.
    pub base: Arc<[u8]>,
    /// The active datasource of each hostgroup.
    pub datasources: BTreeMap<String, String>,
}

/// Everything a keeper is rebuilt from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// The registry.
    pub proxies: Vec<RestoredProxy>,
    /// The latest config version of each cluster.
    pub configs: Vec<RestoredConfig>,
}

/// Why a keeper could not be rebuilt. Nothing was started.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RestoreError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] KeeperConfigError),
    /// A stored identity is invalid (the store was written by something else).
    #[error("stored identity {cluster}/{proxy} is invalid: {error}")]
    Identity {
        /// The cluster.
        cluster: String,
        /// The proxy.
        proxy: String,
        /// What is wrong.
        error: IdentityError,
    },
    /// A stored config version does not render.
    #[error("stored config version {version} of {cluster} is invalid: {error}")]
    StoredConfig {
        /// The cluster.
        cluster: String,
        /// The version.
        version: u64,
        /// What is wrong.
        error: ConfigError,
    },
    /// The registry holds more than `max_proxies`.
    #[error("the store holds {0} proxies, more than max_proxies")]
    TooMany(usize),
}

/// The core's side of persistence.
#[derive(Debug, Default)]
pub(crate) struct Durability {
    /// Changes not yet taken by the driver.
    changes: Vec<Persist>,
    /// Number of changes emitted so far (the number of the latest).
    emitted: u64,
    /// Number of changes known durable.
    durable: u64,
    /// Answers waiting for a change to be durable: (its number, the answer).
    held: VecDeque<(u64, Pending)>,
}

impl Keeper {
    /// A persistent keeper rebuilt from what a store kept.
    ///
    /// Every stored proxy gets a fresh window from `now`, the keeper's start: a `ready`
    /// one has `ready_timeout`, an `up` one `lost_after`, and a `lost` one stays lost with
    /// its delete timer started again. So however long the keeper was down, a proxy that
    /// is still heartbeating is neither lost, deleted nor restarted. No seq was stored: the
    /// new epoch makes every earlier token stale, so nothing from before the restart can
    /// be replayed into counting.
    pub fn restore(
        config: KeeperConfig,
        keys: Keyring,
        epoch: u32,
        token_secret: [u8; 32],
        now: Instant,
        restored: Restored,
    ) -> Result<Keeper, RestoreError> {
        if restored.proxies.len() > config.max_proxies {
            return Err(RestoreError::TooMany(restored.proxies.len()));
        }
        let mut keeper = Keeper::new(config, keys, epoch, token_secret, now)?;
        keeper.durability = Some(Durability::default());
        for c in restored.configs {
            validate_cluster(&c.cluster).map_err(|error| RestoreError::Identity {
                cluster: c.cluster.clone(),
                proxy: String::new(),
                error,
            })?;
            let version =
                ConfigVersion::render(c.version, c.base, c.datasources).map_err(|error| {
                    RestoreError::StoredConfig {
                        cluster: c.cluster.clone(),
                        version: c.version,
                        error,
                    }
                })?;
            let id = keeper.registry.ensure_cluster(&c.cluster);
            keeper.registry.cluster_mut(id).config = Arc::new(version);
        }
        // Answers go to the source of the next datagram; until one arrives there is none.
        let nowhere = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        for p in restored.proxies {
            let invalid = |error| RestoreError::Identity {
                cluster: p.cluster.clone(),
                proxy: p.proxy.clone(),
                error,
            };
            validate_cluster(&p.cluster).map_err(invalid)?;
            validate_proxy(&p.proxy).map_err(invalid)?;
            let cluster = keeper.registry.ensure_cluster(&p.cluster);
            if keeper.registry.find(cluster, &p.proxy, 0).is_some() {
                continue; // a store lists each identity once; be safe if not
            }
            let deadline = now + keeper.config.timeout(p.status);
            let slot = keeper.registry.insert(Record {
                cluster,
                proxy: p.proxy.as_str().into(),
                stamp: Stamp {
                    incarnation: p.incarnation,
                    seq: 0,
                },
                status: p.status,
                reply_to: nowhere,
                last_heard: now,
                since: now,
                deadline,
                config_version: 0,
            });
            keeper.timers.arm(p.status.timer(), deadline, slot);
        }
        for cluster in 0..keeper.registry.clusters.len() {
            keeper.check_mass_loss(cluster as u32, now);
        }
        // Restoring is not a change: nothing to persist, nothing to report.
        keeper.events.clear();
        Ok(keeper)
    }

    /// Whether this keeper was built to be persisted ([`Keeper::restore`]).
    pub fn is_persistent(&self) -> bool {
        self.durability.is_some()
    }

    /// Moves the changes not yet taken into `out`; returns the number of the latest
    /// change emitted so far (pass it to [`Keeper::mark_durable`] once committed).
    pub fn take_changes(&mut self, out: &mut Vec<Persist>) -> u64 {
        match self.durability.as_mut() {
            Some(d) => {
                out.append(&mut d.changes);
                d.emitted
            }
            None => 0,
        }
    }

    /// Every change up to number `upto` is durable: releases the answers that waited.
    pub fn mark_durable(&mut self, upto: u64) {
        let Some(d) = self.durability.as_mut() else {
            return;
        };
        d.durable = d.durable.max(upto);
        while let Some((seq, _)) = d.held.front() {
            if *seq > d.durable {
                break;
            }
            if let Some((_, pending)) = d.held.pop_front() {
                self.pending.push_back(pending);
            }
        }
    }

    /// Records a change to persist (a persistent keeper only).
    pub(super) fn persist(&mut self, change: Persist) {
        if let Some(d) = self.durability.as_mut() {
            d.emitted += 1;
            d.changes.push(change);
            self.stats.changes += 1;
        }
    }

    /// Sends `pending` once every change emitted so far is durable (at once if the
    /// keeper is not persistent or they already are).
    pub(super) fn answer_when_durable(&mut self, pending: Pending) {
        match self.durability.as_mut() {
            Some(d) if d.emitted > d.durable => d.held.push_back((d.emitted, pending)),
            _ => self.pending.push_back(pending),
        }
    }
}
