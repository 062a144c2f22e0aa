//! The change stream's bookkeeping: numbering changes, handing them out, holding answers
//! until they are durable, and rebuilding a keeper from what a store kept.
//!
//! Every change the core makes is [`record`](Keeper::record)ed with the next revision
//! (see [`change`](super::change)). The driver takes them ([`Keeper::take_changes`]),
//! with the content of the config versions they made, commits them if the keeper is
//! persistent, and reports the revision up to which they are durable
//! ([`Keeper::mark_durable`]). Until then the core holds the answers that must not get
//! ahead of the store: the `Ack` of a registration (a proxy told it is registered must
//! find itself registered after a crash). Admin calls return at once to the driver, which
//! answers its caller after the commit.
//!
//! A keeper built with [`Keeper::new`] is not persistent: it numbers its changes from 1
//! and holds nothing. One built with [`Keeper::restore`] continues the store's revisions.

use std::collections::VecDeque;
use std::sync::Arc;

use thiserror::Error;

use crate::auth::Keyring;
use crate::configdoc::{ConfigError, ConfigVersion};
use crate::identity::{IdentityError, validate_cluster, validate_proxy};
use crate::keeper::answer::Pending;
use crate::keeper::registry::Record;
use crate::keeper::transition::{NOWHERE, Stamp};
use crate::keeper::{
    Change, ChangeKind, ConfigBlob, Keeper, KeeperConfig, KeeperConfigError, StoredConfig,
    StoredProxy,
};
use crate::time::Instant;

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

/// The core's side of the change stream.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    /// The revision of the latest change made.
    revision: u64,
    /// Changes not yet taken by the driver, oldest first.
    changes: VecDeque<Change>,
    /// The content of the config versions among them (a persistent keeper only).
    blobs: Vec<ConfigBlob>,
    /// Whether changes must be durable before the answers that depend on them go out.
    persistent: bool,
    /// The revision known durable.
    durable: u64,
    /// Answers waiting for a revision to be durable: (that revision, the answer).
    held: VecDeque<(u64, Pending)>,
    /// Whether changes are being recorded (not while restoring).
    muted: bool,
    /// The newest keeper epoch seen in a token, beyond this keeper's own.
    pub(crate) seen_epoch: u32,
}

impl Keeper {
    /// A persistent keeper rebuilt from what a store kept: the registry, the latest
    /// config of every cluster, and the revision of the last change committed.
    ///
    /// Every stored proxy gets a fresh window from `now`, the keeper's start: a `ready`
    /// one has `ready_timeout`, an `up` one `lost_after`, and a `lost` one stays lost with
    /// its delete timer started again. So however long the keeper was down, a proxy that
    /// is still heartbeating is neither lost, deleted nor restarted. No seq was stored: the
    /// new epoch makes every earlier token stale, so nothing from before the restart can
    /// be replayed into counting.
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        config: KeeperConfig,
        keys: Keyring,
        epoch: u32,
        token_secret: [u8; 32],
        now: Instant,
        proxies: &[StoredProxy],
        configs: &[StoredConfig],
        revision: u64,
    ) -> Result<Keeper, RestoreError> {
        if proxies.len() > config.max_proxies {
            return Err(RestoreError::TooMany(proxies.len()));
        }
        let mut keeper = Keeper::new(config, keys, epoch, token_secret, now)?;
        keeper.stream.persistent = true;
        keeper.stream.revision = revision;
        keeper.stream.durable = revision;
        keeper.stream.muted = true;
        for c in configs {
            restore_config(&mut keeper, c)?;
        }
        for p in proxies {
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
            keeper.restore_record(Record {
                cluster,
                proxy: p.proxy.as_str().into(),
                stamp: Stamp {
                    incarnation: p.incarnation,
                    seq: 0,
                },
                status: p.status,
                // Answers go to the source of the next datagram; until one arrives, to
                // the one the store recorded, if any.
                reply_to: p.source.unwrap_or(NOWHERE),
                last_heard: now,
                since: now,
                deadline: now,
                config_version: p.config_version,
                config_id: crate::wire::ConfigId::NONE,
            });
        }
        // Restoring is not a change: nothing to persist, nothing to report. A cluster
        // found in mass loss is, though: its pause is this run's state, not the store's.
        keeper.stream.muted = false;
        let ids: Vec<_> = keeper.registry.clusters().map(|(id, _)| id).collect();
        for cluster in ids {
            keeper.check_mass_loss(cluster, now);
        }
        // A store that never held anything: a new install, or a lost disk, in front of a
        // fleet that may be running. Its live proxies are adopted, not restarted.
        if proxies.is_empty() && revision == 0 {
            keeper.adopt_from(keeper.clock.now());
        }
        Ok(keeper)
    }

    /// Whether this keeper was built to be persisted ([`Keeper::restore`]).
    pub fn is_persistent(&self) -> bool {
        self.stream.persistent
    }

    /// The revision of the latest change made.
    pub fn revision(&self) -> u64 {
        self.stream.revision
    }

    /// Numbers `kind` with the next revision and queues it for the driver.
    pub(crate) fn record(&mut self, kind: ChangeKind) {
        if self.stream.muted {
            return;
        }
        self.stream.revision += 1;
        self.stats.changes += 1;
        self.stream.changes.push_back(Change {
            revision: self.stream.revision,
            at: self.clock.real(),
            kind,
        });
    }

    /// Queues the content of a config version made by the change just recorded, for the
    /// store of a persistent keeper.
    pub(crate) fn record_blob(&mut self, blob: ConfigBlob) {
        if self.stream.persistent && !self.stream.muted {
            self.stream.blobs.push(blob);
        }
    }

    /// The oldest change not yet taken: the change stream one at a time, for a keeper
    /// without a store (tests and harnesses; a driver takes them in batches).
    pub fn poll_change(&mut self) -> Option<Change> {
        self.stream.changes.pop_front()
    }

    /// Moves the changes not yet taken into `changes`, oldest first, and the content of
    /// the config versions among them into `blobs`; returns the revision of the latest
    /// change made (pass it to [`Keeper::mark_durable`] once committed).
    pub fn take_changes(&mut self, changes: &mut Vec<Change>, blobs: &mut Vec<ConfigBlob>) -> u64 {
        changes.extend(self.stream.changes.drain(..));
        blobs.append(&mut self.stream.blobs);
        self.stream.revision
    }

    /// Every change up to `revision` is durable: releases the answers that waited.
    pub fn mark_durable(&mut self, revision: u64) {
        let stream = &mut self.stream;
        stream.durable = stream.durable.max(revision);
        while let Some((needs, _)) = stream.held.front() {
            if *needs > stream.durable {
                break;
            }
            if let Some((_, pending)) = stream.held.pop_front() {
                self.pending.push_back(pending);
            }
        }
    }

    /// Sends `pending` once every change made so far is durable (at once if the keeper is
    /// not persistent or they already are).
    pub(crate) fn answer_when_durable(&mut self, pending: Pending) {
        let stream = &mut self.stream;
        if stream.persistent && stream.revision > stream.durable {
            stream.held.push_back((stream.revision, pending));
        } else {
            self.pending.push_back(pending);
        }
    }
}

fn restore_config(keeper: &mut Keeper, c: &StoredConfig) -> Result<(), RestoreError> {
    validate_cluster(&c.cluster).map_err(|error| RestoreError::Identity {
        cluster: c.cluster.clone(),
        proxy: String::new(),
        error,
    })?;
    let mut version = ConfigVersion::render(
        c.version,
        Arc::from(c.base.as_slice()),
        c.datasources.clone(),
    )
    .map_err(|error| RestoreError::StoredConfig {
        cluster: c.cluster.clone(),
        version: c.version,
        error,
    })?;
    // The id it was made with, which the fleet may run (`None`: stored before ids were).
    if let Some(id) = c.id {
        version.id = id;
    }
    let id = keeper.registry.ensure_cluster(&c.cluster);
    keeper.registry.cluster_mut(id).config = Arc::new(version);
    Ok(())
}
