//! `/metrics`: a [`MetricsSnapshot`] in the OpenMetrics text format.
//!
//! Every scrape takes one snapshot from the keeper task and renders it through a fresh
//! `prometheus-client` registry, so the numbers of one scrape are from one moment and
//! nothing is kept between scrapes. The snapshot is encoded by a collector with constant
//! metrics rather than by `Family` (which holds its series in a `HashMap`): series come
//! out in a fixed order, scrape after scrape.

use std::fmt;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::driver::keeper::MetricsSnapshot;
use crate::ha::{EtcdHealth, Role};
use crate::http::Api;
use crate::http::problem::Problem;
use crate::keeper::{DropReason, Outcome, Status};

/// The media type of the exposition.
pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Statuses a registered proxy can have, as the gauge labels them.
const STATUSES: [Status; 3] = [Status::Ready, Status::Up, Status::Lost];

/// `GET /metrics`.
pub(crate) async fn scrape(State(api): State<Api>) -> Result<Response, Problem> {
    let role = api.role.borrow().clone();
    let snapshot = match role {
        // A standby has no keeper task: only its role is measured.
        Role::Standby(_) => None,
        Role::Single | Role::Leader(_) => Some(api.handle.metrics().await?),
    };
    // Rollouts are judged on the read view (a standby's too); a view that cannot answer
    // (stopped, behind) leaves them out rather than failing the scrape.
    let rollouts = api.view.clusters().map(|l| l.clusters).unwrap_or_default();
    let text = render_with(
        snapshot,
        rollouts,
        &role,
        api.etcd.as_deref().map(EtcdHealth::read),
    )
    .map_err(|_| Problem::internal("the metrics could not be encoded"))?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS))],
        text,
    )
        .into_response())
}

/// The exposition of one snapshot, ending in `# EOF`.
#[cfg(test)]
pub(crate) fn render(snapshot: MetricsSnapshot) -> Result<String, fmt::Error> {
    render_with(Some(snapshot), Vec::new(), &Role::Single, None)
}

/// The exposition of one snapshot (if the keeper runs one) and of the keeper's role.
fn render_with(
    snapshot: Option<MetricsSnapshot>,
    rollouts: Vec<crate::api::ClusterView>,
    role: &Role,
    etcd: Option<(bool, u64, u64)>,
) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    if let Some(snapshot) = snapshot {
        registry.register_collector(Box::new(Snapshot(snapshot)));
    }
    registry.register_collector(Box::new(Rollouts(rollouts)));
    registry.register_collector(Box::new(RoleMetrics(role.clone(), etcd)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// The keeper's role: whether it leads, the term it knows, and (for a keeper of several)
/// how it fares with etcd.
#[derive(Debug)]
struct RoleMetrics(Role, Option<(bool, u64, u64)>);

impl Collector for RoleMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let leads = !matches!(self.0, Role::Standby(_));
        gauge(
            &mut encoder,
            "zerokeeper_leader",
            "1 if this keeper acts (it leads, or runs alone), 0 for a standby.",
            u64::from(leads),
        )?;
        gauge(
            &mut encoder,
            "zerokeeper_leader_term",
            "The leadership term this keeper knows (its own, as leader); 0 without an election.",
            self.0.leadership().map_or(0, |l| l.term),
        )?;
        if let Some((reachable, failures, renewals)) = self.1 {
            gauge(
                &mut encoder,
                "zerokeeper_etcd_reachable",
                "1 if the last request to etcd (a lease renewal, a campaign, a standby's read) was answered.",
                u64::from(reachable),
            )?;
            counter(
                &mut encoder,
                "zerokeeper_etcd_failures",
                "Requests to etcd that failed or were not answered in time.",
                failures,
            )?;
            counter(
                &mut encoder,
                "zerokeeper_lease_renewals",
                "Renewals of the leader's lease that etcd confirmed.",
                renewals,
            )?;
        }
        Ok(())
    }
}

/// The rollout of each cluster's current config, as the read view judges it.
#[derive(Debug)]
struct Rollouts(Vec<crate::api::ClusterView>);

impl Collector for Rollouts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut family = encoder.encode_descriptor(
            "zerokeeper_rollout_proxies",
            "Proxies by how they stand in their cluster's rollout of its current config: running, pending or rejected.",
            None,
            MetricType::Gauge,
        )?;
        for cluster in &self.0 {
            for (state, n) in [
                ("running", cluster.running),
                ("pending", cluster.pending),
                ("rejected", cluster.rejected),
            ] {
                let labels = [("cluster", cluster.name.as_str()), ("state", state)];
                ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "zerokeeper_rollout_state",
            "1 for the state the rollout of a cluster's current config is in (converged, in-progress, failed, stuck), 0 for the others.",
            None,
            MetricType::Gauge,
        )?;
        for cluster in &self.0 {
            for state in crate::keeper::RolloutState::ALL {
                let on = u64::from(cluster.rollout == state.as_str());
                let labels = [
                    ("cluster", cluster.name.as_str()),
                    ("state", state.as_str()),
                ];
                ConstGauge::new(on).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Collects one snapshot. Counter names go without `_total`: the encoder appends it.
#[derive(Debug)]
struct Snapshot(MetricsSnapshot);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        counter(
            &mut encoder,
            "zerokeeper_datagrams_received",
            "Datagrams read by the keeper.",
            s.stats.received,
        )?;
        counter(
            &mut encoder,
            "zerokeeper_datagrams_sent",
            "Datagrams the keeper sent.",
            s.stats.sent,
        )?;

        let mut family = encoder.encode_descriptor(
            "zerokeeper_heartbeats",
            "Authenticated, in-order datagrams, by what they did.",
            None,
            MetricType::Counter,
        )?;
        for &outcome in Outcome::ALL {
            ConstCounter::new(s.stats.outcome(outcome))
                .encode(family.encode_family(&[("result", outcome.as_str())])?)?;
        }

        let mut family = encoder.encode_descriptor(
            "zerokeeper_datagrams_dropped",
            "Datagrams dropped without changing anything, by reason.",
            None,
            MetricType::Counter,
        )?;
        for &reason in DropReason::ALL {
            ConstCounter::new(s.stats.dropped(reason))
                .encode(family.encode_family(&[("reason", reason.as_str())])?)?;
        }

        let mut family = encoder.encode_descriptor(
            "zerokeeper_transitions",
            "Status changes of proxies; none means not registered.",
            None,
            MetricType::Counter,
        )?;
        for (&(from, to), &n) in &s.counters.transitions {
            ConstCounter::new(n).encode(family.encode_family(&[("from", from), ("to", to)])?)?;
        }

        counter(
            &mut encoder,
            "zerokeeper_restarts_sent",
            "Restart commands sent to proxies the keeper had deleted.",
            s.counters.restarts_sent,
        )?;
        counter(
            &mut encoder,
            "zerokeeper_superseded_sent",
            "Superseded notices sent to older processes of an identity.",
            s.counters.superseded_sent,
        )?;
        counter(
            &mut encoder,
            "zerokeeper_config_versions",
            "Config versions made (pushes and datasource switches).",
            s.counters.config_changes,
        )?;

        let mut family = encoder.encode_descriptor(
            "zerokeeper_proxies",
            "Proxies registered, by cluster and status.",
            None,
            MetricType::Gauge,
        )?;
        for cluster in &s.clusters {
            for status in STATUSES {
                let n = match status {
                    Status::Ready => cluster.ready,
                    Status::Up => cluster.up,
                    Status::Lost => cluster.lost,
                };
                let labels = [
                    ("cluster", cluster.name.as_str()),
                    ("status", status.as_str()),
                ];
                ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
            }
        }

        counter(
            &mut encoder,
            "zerokeeper_config_rejections",
            "Rejections of a cluster's current config recorded from proxies (ConfigReject).",
            s.counters.rejections,
        )?;
        let mut family = encoder.encode_descriptor(
            "zerokeeper_config_version",
            "The current config version of each cluster.",
            None,
            MetricType::Gauge,
        )?;
        for cluster in &s.clusters {
            ConstGauge::new(cluster.config_version)
                .encode(family.encode_family(&[("cluster", cluster.name.as_str())])?)?;
        }

        let mut family = encoder.encode_descriptor(
            "zerokeeper_deletion_paused",
            "1 while mass-loss protection pauses deleting the cluster's lost proxies.",
            None,
            MetricType::Gauge,
        )?;
        for cluster in &s.clusters {
            let paused = u64::from(cluster.deletion_paused);
            ConstGauge::new(paused)
                .encode(family.encode_family(&[("cluster", cluster.name.as_str())])?)?;
        }

        let mut family = encoder.encode_descriptor(
            "zerokeeper_cluster_frozen",
            "1 while an operator froze the cluster: no proxy of it is deleted or restarted.",
            None,
            MetricType::Gauge,
        )?;
        for cluster in &s.clusters {
            ConstGauge::new(u64::from(cluster.frozen))
                .encode(family.encode_family(&[("cluster", cluster.name.as_str())])?)?;
        }

        counter(
            &mut encoder,
            "zerokeeper_store_commits",
            "Transactions committed to the store (each holds a turn's changes).",
            s.counters.commits,
        )?;
        counter(
            &mut encoder,
            "zerokeeper_store_changes",
            "Changes committed to the store: transitions, deletions, configs, admin actions.",
            s.counters.stored_changes,
        )?;
        gauge(
            &mut encoder,
            "zerokeeper_store_revision",
            "The store's revision after its last commit (0 without a store).",
            s.counters.store_revision.unwrap_or(0),
        )?;
        counter(
            &mut encoder,
            "zerokeeper_stalls",
            "Stalls of the keeper itself: lateness past its own wakeup beyond the stall slop.",
            s.stats.stalls,
        )?;
        {
            let counter = ConstCounter::new(s.stats.stalled.as_secs_f64());
            let metric = encoder.encode_descriptor(
                "zerokeeper_stall_seconds",
                "Total length of the keeper's stalls: how far keeper time is behind real time.",
                None,
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        counter(
            &mut encoder,
            "zerokeeper_stall_shifted",
            "Proxies whose deadlines the keeper's stalls shifted, added up over the stalls.",
            s.stats.stall_shifted,
        )?;
        if let Some(cpu) = crate::procstat::cpu_seconds(None) {
            let counter = ConstCounter::new(cpu);
            let metric = encoder.encode_descriptor(
                "zerokeeper_process_cpu_seconds",
                "User and system CPU time of the keeper process, in seconds.",
                None,
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        gauge(
            &mut encoder,
            "zerokeeper_registry_proxies",
            "Proxies the registry holds, of every cluster.",
            s.proxies as u64,
        )?;
        gauge(
            &mut encoder,
            "zerokeeper_registry_proxies_max",
            "The most proxies the registry holds (max_proxies); past it new ones are dropped.",
            s.max_proxies as u64,
        )?;
        gauge(
            &mut encoder,
            "zerokeeper_registry_clusters",
            "Clusters the registry holds.",
            s.clusters.len() as u64,
        )?;
        gauge(
            &mut encoder,
            "zerokeeper_registry_clusters_max",
            "The most clusters the registry holds (max_clusters); past it new ones are refused.",
            s.max_clusters as u64,
        )?;
        gauge(
            &mut encoder,
            "zerokeeper_tombstones",
            "Tombstones held: identities deleted recently, remembered to refuse stale datagrams.",
            s.tombstones as u64,
        )
    }
}

/// Encodes a gauge without labels.
fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
    gauge.encode(metric)
}

/// Encodes a counter without labels.
fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let counter = ConstCounter::new(value);
    let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
    counter.encode(metric)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::keeper::DriverCounters;
    use crate::keeper::{ClusterInfo, Stats};

    #[test]
    fn every_series_of_the_contract_is_rendered_with_zeros() {
        let mut counters = DriverCounters::default();
        counters.transitions.insert(("none", "ready"), 2);
        let mut stats = Stats {
            received: 7,
            ..Stats::default()
        };
        stats.outcomes[Outcome::Registered as usize] = 2;
        let text = render(MetricsSnapshot {
            stats,
            counters,
            clusters: vec![ClusterInfo {
                name: "test_cluster".into(),
                ready: 2,
                up: 0,
                lost: 0,
                config_version: 1,
                deletion_paused: false,
                frozen: false,
            }],
            tombstones: 0,
            epoch: 1,
            proxies: 2,
            max_proxies: 100,
            max_clusters: 10,
        })
        .expect("renders");
        for line in [
            "zerokeeper_datagrams_received_total 7\n",
            "zerokeeper_datagrams_sent_total 0\n",
            "zerokeeper_heartbeats_total{result=\"registered\"} 2\n",
            "zerokeeper_heartbeats_total{result=\"config_served\"} 0\n",
            "zerokeeper_datagrams_dropped_total{reason=\"bad_tag\"} 0\n",
            "zerokeeper_transitions_total{from=\"none\",to=\"ready\"} 2\n",
            "zerokeeper_restarts_sent_total 0\n",
            "zerokeeper_superseded_sent_total 0\n",
            "zerokeeper_config_versions_total 0\n",
            "zerokeeper_proxies{cluster=\"test_cluster\",status=\"ready\"} 2\n",
            "zerokeeper_proxies{cluster=\"test_cluster\",status=\"up\"} 0\n",
            "zerokeeper_proxies{cluster=\"test_cluster\",status=\"lost\"} 0\n",
            "zerokeeper_tombstones 0\n",
            "zerokeeper_registry_proxies 2\n",
            "zerokeeper_registry_proxies_max 100\n",
            "zerokeeper_registry_clusters 1\n",
            "zerokeeper_registry_clusters_max 10\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert_eq!(
            text.matches("zerokeeper_datagrams_dropped_total{").count(),
            DropReason::COUNT
        );
        assert_eq!(
            text.matches("zerokeeper_heartbeats_total{").count(),
            Outcome::COUNT
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
