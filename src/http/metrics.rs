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
use crate::histogram::Latency;
use crate::http::Api;
use crate::http::problem::Problem;
use crate::keeper::{DropReason, Outcome, Status};

/// The media type of the OpenMetrics exposition (what Prometheus asks for).
pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The media type of the classic text exposition (for a client that does not ask for
/// OpenMetrics: `curl`, older scrapers).
pub(crate) const CLASSIC_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Admin requests by route, method and status code, for every router of this process
/// (a standby's router is swapped for a leader's; the counts go on).
static REQUESTS: std::sync::LazyLock<std::sync::Mutex<RequestLatencies>> =
    std::sync::LazyLock::new(Default::default);

/// Latencies by (route template, method, status code).
type RequestLatencies = std::collections::BTreeMap<(String, String, u16), Latency>;

/// Middleware of the matched routes: how long each request took until its answer's head
/// (a watch stream's lifetime is not a latency), by route template, method and status.
pub(crate) async fn observe(
    matched: Option<axum::extract::MatchedPath>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let began = std::time::Instant::now();
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let route = matched.map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let key = (route, method, response.status().as_u16());
    REQUESTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default()
        .observe(began.elapsed());
    response
}

/// Whether the client asked for OpenMetrics (Prometheus does, in its `Accept`).
fn wants_openmetrics(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| {
            let mut params = part.split(';').map(str::trim);
            let kind = params.next().unwrap_or("");
            let refused = params.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f64>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            kind.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
}

/// The classic text format (0.0.4) of an OpenMetrics exposition: no `# EOF` or `# UNIT`,
/// and a counter's `HELP` and `TYPE` name its `_total` series, as that format wants.
fn classic_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut lines = openmetrics.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let counter = lines
                .peek()
                .is_some_and(|next| *next == format!("# TYPE {name} counter"));
            if counter {
                out.push_str(&format!(
                    "# HELP {name}_total {help}\n# TYPE {name}_total counter\n"
                ));
                lines.next();
                continue;
            }
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            match rest.rsplit_once(' ') {
                Some((name, "counter")) => out.push_str(&format!("# TYPE {name}_total counter")),
                Some((name, "unknown")) => out.push_str(&format!("# TYPE {name} untyped")),
                Some((name, "info")) => out.push_str(&format!("# TYPE {name}_info gauge")),
                _ => out.push_str(line),
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Statuses a registered proxy can have, as the gauge labels them.
const STATUSES: [Status; 3] = [Status::Ready, Status::Up, Status::Lost];

/// `GET /metrics`: OpenMetrics if the client asks for it, the classic text format else.
pub(crate) async fn scrape(
    State(api): State<Api>,
    headers: axum::http::HeaderMap,
) -> Result<Response, Problem> {
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
    let (content_type, text) = if wants_openmetrics(&headers) {
        (OPENMETRICS, text)
    } else {
        (CLASSIC_TEXT, classic_text(&text))
    };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::VARY, HeaderValue::from_static("accept")),
        ],
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
    let requests = REQUESTS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    registry.register_collector(Box::new(Requests(requests)));
    registry.register_collector(Box::new(ProcessMetrics));
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

/// Admin request latencies (see [`observe`]).
#[derive(Debug)]
struct Requests(RequestLatencies);

impl Collector for Requests {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut family = encoder.encode_descriptor(
            "zerokeeper_http_request_duration_seconds",
            "Admin API requests by route, method and status code: time until the answer's head.",
            None,
            MetricType::Histogram,
        )?;
        for ((route, method, code), latency) in &self.0 {
            let code = code.to_string();
            let labels = [
                ("route", route.as_str()),
                ("method", method.as_str()),
                ("code", code.as_str()),
            ];
            histogram(family.encode_family(&labels)?, latency)?;
        }
        Ok(())
    }
}

/// The build, and the standard `process_*` metrics of this process (Linux's `/proc`).
#[derive(Debug)]
struct ProcessMetrics;

impl Collector for ProcessMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        use crate::procstat;
        let build = crate::api::VersionView::this();
        let protocols: Vec<String> = build.protocols.iter().map(u8::to_string).collect();
        let protocols = protocols.join(",");
        let mut family = encoder.encode_descriptor(
            "zerokeeper_build_info",
            "Always 1: the release of this keeper and the protocol versions it speaks.",
            None,
            MetricType::Gauge,
        )?;
        let labels = [
            ("version", build.version.as_str()),
            ("protocols", protocols.as_str()),
        ];
        ConstGauge::new(1).encode(family.encode_family(&labels)?)?;
        if let Some(cpu) = procstat::cpu_seconds(None) {
            float_counter(
                &mut encoder,
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                cpu,
            )?;
        }
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                procstat::resident_bytes(),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                procstat::virtual_bytes(),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                procstat::open_fds(),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                procstat::max_fds(),
            ),
        ] {
            if let Some(value) = value {
                gauge(&mut encoder, name, help, value)?;
            }
        }
        if let Some(started) = procstat::start_time_seconds() {
            let gauge = ConstGauge::new(started);
            let metric = encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
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
                let labels = [("cluster", cluster.cluster.as_str()), ("state", state)];
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
                    ("cluster", cluster.cluster.as_str()),
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
            "zerokeeper_gate_open",
            "1 while the cluster's gate is open (every proxy up: push config and switch may run), 0 while closed.",
            None,
            MetricType::Gauge,
        )?;
        for cluster in &s.clusters {
            ConstGauge::new(u64::from(cluster.gate_open()))
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
            float_counter(
                &mut encoder,
                "zerokeeper_process_cpu_seconds",
                "User and system CPU time of the keeper process, in seconds (as process_cpu_seconds_total).",
                cpu,
            )?;
        }
        {
            let metric = encoder.encode_descriptor(
                "zerokeeper_store_commit_duration_seconds",
                "How long each commit to the store took (one transaction of a turn's changes, its sync included).",
                None,
                MetricType::Histogram,
            )?;
            histogram(metric, &s.counters.commit_latency)?;
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

/// Encodes a counter of seconds (a float) without labels.
fn float_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> fmt::Result {
    let counter = ConstCounter::new(value);
    let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
    counter.encode(metric)
}

/// Encodes one histogram series.
fn histogram(
    mut metric: prometheus_client::encoding::MetricEncoder<'_>,
    latency: &Latency,
) -> fmt::Result {
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        latency.sum(),
        latency.count(),
        &latency.buckets(),
        None,
    )
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
