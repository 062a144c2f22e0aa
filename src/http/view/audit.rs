//! The audit record as the read view holds it: the newest [`KEPT`] entries, oldest
//! first, seeded from the store at boot and appended from every `admin` change the view
//! applies, so `GET /v1/audit` is answered without touching the store or the core.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::api::{AuditList, AuditView, rfc3339_ms};
use crate::keeper::change::{ChangeKind, WallChange};
use crate::store::{AuditEntry, audit_json};

/// How many entries the view keeps (the newest); the store keeps its own, bounded by
/// its retention.
pub const KEPT: usize = 10_000;

/// Most entries one answer holds.
pub const MAX_LIMIT: usize = KEPT;

/// One entry: when, the cluster, token and action's name (to filter on without
/// parsing), and the stored JSON.
#[derive(Clone, Debug)]
struct Row {
    at_unix_ms: u64,
    cluster: Arc<str>,
    by: Option<Arc<str>>,
    name: Arc<str>,
    action: Arc<str>,
}

/// The newest [`KEPT`] entries.
#[derive(Clone, Debug, Default)]
pub(super) struct Audit {
    rows: VecDeque<Row>,
}

/// What a listing asks for.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Only the entries of this cluster.
    pub cluster: Option<String>,
    /// Only the entries of this admin token.
    pub by: Option<String>,
    /// Only the entries of this action (`remove`, `push_config`, `switch`, `rollback`),
    /// done or refused.
    pub action: Option<String>,
    /// At most this many (the newest).
    pub limit: usize,
}

impl Audit {
    /// The newest [`KEPT`] of `entries` (oldest first).
    pub(super) fn new(entries: Vec<AuditEntry>) -> Audit {
        let skip = entries.len().saturating_sub(KEPT);
        let mut audit = Audit::default();
        for entry in entries.into_iter().skip(skip) {
            audit.push_json(entry.at_unix_ms, entry.action);
        }
        audit
    }

    /// Appends the entry of `change`, if it is an `admin` change.
    pub(super) fn apply(&mut self, change: &WallChange) {
        if let ChangeKind::Admin { action, by } = &change.kind {
            self.push(Row {
                at_unix_ms: change.at,
                cluster: Arc::from(action.cluster()),
                by: by.clone(),
                name: Arc::from(action.name()),
                action: Arc::from(audit_json(action, by.as_deref())),
            });
        }
    }

    /// Appends a stored entry (its cluster and token read from its JSON).
    fn push_json(&mut self, at_unix_ms: u64, action: String) {
        let value: serde_json::Value = serde_json::from_str(&action).unwrap_or_default();
        let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(Arc::from);
        self.push(Row {
            at_unix_ms,
            cluster: field("cluster").unwrap_or_else(|| Arc::from("")),
            by: field("by"),
            name: field("action").unwrap_or_else(|| Arc::from("")),
            action: Arc::from(action),
        });
    }

    fn push(&mut self, row: Row) {
        if self.rows.len() == KEPT {
            self.rows.pop_front();
        }
        self.rows.push_back(row);
    }

    /// The newest `query.limit` entries `query` selects, oldest first, and how many it
    /// selects in all. Copies out (cheap: `Arc`s); the JSON is parsed by [`views`].
    pub(super) fn select(&self, query: &AuditQuery) -> (Vec<(u64, Arc<str>)>, usize) {
        let selected = |row: &&Row| {
            query.cluster.as_deref().is_none_or(|c| *row.cluster == *c)
                && query
                    .by
                    .as_deref()
                    .is_none_or(|b| row.by.as_deref() == Some(b))
                && query.action.as_deref().is_none_or(|a| *row.name == *a)
        };
        let matching = self.rows.iter().filter(selected).count();
        let mut rows: Vec<(u64, Arc<str>)> = self
            .rows
            .iter()
            .rev()
            .filter(selected)
            .take(query.limit)
            .map(|r| (r.at_unix_ms, r.action.clone()))
            .collect();
        rows.reverse();
        (rows, matching)
    }
}

/// Who made a config version, as the audit record says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Made {
    /// `push_config`, `switch` or `rollback`.
    pub action: String,
    /// When (wall-clock ms).
    pub at_unix_ms: u64,
    /// The admin token's name.
    pub by: Option<String>,
}

impl Audit {
    /// The config versions of `cluster` the record says were made, and by whom (the
    /// last entry of a version wins: a restored backup may have made one twice).
    pub(super) fn made(&self, cluster: &str) -> std::collections::BTreeMap<u64, Made> {
        let mut made = std::collections::BTreeMap::new();
        for row in self.rows.iter().filter(|r| *r.cluster == *cluster) {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&row.action) else {
                continue;
            };
            let text = |name: &str| value.get(name).and_then(|v| v.as_str());
            if text("result").is_some() {
                continue;
            }
            let (Some(action), Some(version)) = (
                text("action"),
                value.get("version").and_then(|v| v.as_u64()),
            ) else {
                continue;
            };
            if matches!(action, "push_config" | "switch" | "rollback") {
                made.insert(
                    version,
                    Made {
                        action: action.to_owned(),
                        at_unix_ms: row.at_unix_ms,
                        by: row.by.as_deref().map(str::to_owned),
                    },
                );
            }
        }
        made
    }
}

/// The listing of `rows` (see [`Audit::select`]).
pub(super) fn views(
    generation: u64,
    revision: u64,
    query: &AuditQuery,
    rows: Vec<(u64, Arc<str>)>,
    matching: usize,
) -> AuditList {
    let entries: Vec<AuditView> = rows
        .into_iter()
        .map(|(at, action)| AuditView::of(rfc3339_ms(at), &action))
        .collect();
    AuditList {
        generation,
        revision,
        cluster: query.cluster.clone(),
        more: matching > entries.len(),
        entries,
    }
}
