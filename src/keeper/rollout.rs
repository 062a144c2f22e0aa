//! Rollouts: whether the proxies of a cluster run its current config.
//!
//! A **rollout** begins whenever a cluster's config changes (a push, a datasource switch,
//! a rollback) and is judged from what each registered proxy reports running: a proxy
//! **runs** the config if the id it reports is the config's (version 2), or the number is
//! (version 1, and records restored from the store until they report an id); it
//! **rejected** it if it sent a `ConfigReject` of it; otherwise it is **pending**. A
//! pending proxy is **overdue** once `rollout_timeout` has passed since the rollout's
//! start, or, for a `ready` proxy that registered after it, since its registration (so
//! one that joins late gets its own time to pull; one that goes `lost` meanwhile does
//! not). The rollout is then, in this order: `failed` (a proxy
//! rejected it), `converged` (none pending), `stuck` (one is overdue), or `in-progress`.
//!
//! The core judges its own registry ([`crate::keeper::Keeper::rollout`], for simulations
//! and tests); the admin API judges its view the same way, with [`judge`].

use serde::{Deserialize, Serialize};

/// How a rollout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutState {
    /// Every registered proxy runs the config.
    Converged,
    /// Some proxies do not run it yet, none for longer than the timeout.
    InProgress,
    /// A proxy rejected it.
    Failed,
    /// A proxy has not run it for longer than the timeout.
    Stuck,
}

impl RolloutState {
    /// Every state, in the order of [`RolloutState::as_str`]'s documentation.
    pub const ALL: [RolloutState; 4] = [
        RolloutState::Converged,
        RolloutState::InProgress,
        RolloutState::Failed,
        RolloutState::Stuck,
    ];

    /// `converged`, `in-progress`, `failed` or `stuck`.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Converged => "converged",
            RolloutState::InProgress => "in-progress",
            RolloutState::Failed => "failed",
            RolloutState::Stuck => "stuck",
        }
    }

    /// The state named `word`.
    pub fn parse(word: &str) -> Option<RolloutState> {
        RolloutState::ALL.into_iter().find(|s| s.as_str() == word)
    }

    /// Whether it will not change by itself: converged or failed (a stuck rollout may
    /// still converge).
    pub fn settled(self) -> bool {
        matches!(self, RolloutState::Converged | RolloutState::Failed)
    }
}

impl std::fmt::Display for RolloutState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of a rollout with `pending` proxies not running the config (of which
/// `overdue` past the timeout) and `rejected` that refused it.
pub fn judge(pending: u64, rejected: u64, overdue: u64) -> RolloutState {
    if rejected > 0 {
        RolloutState::Failed
    } else if pending == 0 {
        RolloutState::Converged
    } else if overdue > 0 {
        RolloutState::Stuck
    } else {
        RolloutState::InProgress
    }
}

/// A cluster's rollout as the core sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollout {
    /// The config version rolled out (the cluster's current one).
    pub version: u64,
    /// Its id.
    pub config: crate::wire::ConfigId,
    /// How it stands.
    pub state: RolloutState,
    /// Proxies that run it, sorted.
    pub running: Vec<String>,
    /// Proxies that do not run it yet, sorted.
    pub pending: Vec<String>,
    /// Proxies that rejected it, with their reasons, sorted.
    pub rejected: Vec<(String, String)>,
}
