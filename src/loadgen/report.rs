//! The report of `zerokeeper bench`: its JSON shape (`-o json`, field names are stable)
//! and its table for people, plus the arithmetic behind the derived figures.
//!
//! A figure that could not be measured is `null` in JSON (for example the keeper's CPU
//! time when an external keeper's admin API was not given) and `-` in the table.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Everything one run measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Simulated proxies.
    pub proxies: usize,
    /// Sender threads.
    pub senders: usize,
    /// Length of the timed load phase, in seconds (as measured).
    pub duration_s: f64,
    /// Heartbeats the kernel accepted for sending in the load phase.
    pub sent: u64,
    /// `Ack`s received in the load phase.
    pub acknowledged: u64,
    /// `Challenge`s received in the load phase.
    pub challenges: u64,
    /// Datagrams the keeper counted in the load phase (from its `/metrics`).
    pub keeper_received: Option<u64>,
    /// `sent - keeper_received`, at least 0.
    pub lost: Option<u64>,
    /// `lost / sent`.
    pub loss_ratio: Option<f64>,
    /// `keeper_received / duration_s`.
    pub keeper_hb_per_s: Option<f64>,
    /// CPU seconds the keeper used in the load phase.
    pub keeper_cpu_s: Option<f64>,
    /// `keeper_received / keeper_cpu_s`.
    pub keeper_hb_per_cpu_s: Option<f64>,
    /// Round trips of acknowledged heartbeats.
    pub rtt_us: RttSummary,
    /// How late the keeper marked silent proxies `lost`, under load (`null` if not run).
    pub lost_probe: Option<LostProbe>,
    /// Proxies the keeper marked `lost` during the load phase, when every one of them was
    /// heartbeating (from its `/metrics`; must be 0).
    pub false_lost: Option<u64>,
    /// Stalls the keeper counted during the load phase (from its `/metrics`).
    pub stalls: Option<u64>,
    /// The listing readers of `--readers` (`null` without).
    pub readers: Option<ReadersReport>,
    /// The plain-UDP baseline (its fields are absent without `--baseline`).
    #[serde(flatten)]
    pub baseline: Option<Baseline>,
}

/// Percentiles of round-trip times, in microseconds (`null` without samples).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RttSummary {
    /// Median.
    pub p50: Option<u64>,
    /// 90th percentile.
    pub p90: Option<u64>,
    /// 99th percentile.
    pub p99: Option<u64>,
    /// 99.9th percentile.
    pub p999: Option<u64>,
    /// Largest.
    pub max: Option<u64>,
    /// Round trips measured.
    pub samples: u64,
}

impl RttSummary {
    /// The summary of a histogram of microseconds.
    pub fn of(histogram: &Histogram<u64>) -> RttSummary {
        let samples = histogram.len();
        let at = |q: f64| (samples > 0).then(|| histogram.value_at_quantile(q));
        RttSummary {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            max: (samples > 0).then(|| histogram.max()),
            samples,
        }
    }
}

/// Operators polling the whole listing during the load phase.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReadersReport {
    /// Reader threads.
    pub threads: usize,
    /// Listings read, in all.
    pub requests: u64,
    /// Bytes of one listing, on average.
    pub mean_bytes: u64,
    /// Time to read one listing, on average, in ms.
    pub mean_ms: Option<f64>,
    /// The longest, in ms.
    pub max_ms: Option<f64>,
}

/// The lost probe: some proxies fell silent while the rest kept sending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LostProbe {
    /// Proxies that fell silent.
    pub probes: usize,
    /// Of those, how many the keeper showed `lost` at the end.
    pub lost: usize,
    /// How long after its deadline (last heartbeat + `lost_after`) each was marked.
    pub lateness_ms: LatenessSummary,
}

/// Percentiles of lateness, in milliseconds of the keeper's clock (`null` if none was
/// marked `lost`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LatenessSummary {
    /// Median.
    pub p50: Option<i64>,
    /// 99th percentile.
    pub p99: Option<i64>,
    /// Latest.
    pub max: Option<i64>,
}

impl LatenessSummary {
    /// The summary of these latenesses (in any order).
    pub fn of(latenesses: &[i64]) -> LatenessSummary {
        let mut sorted = latenesses.to_vec();
        sorted.sort_unstable();
        LatenessSummary {
            p50: percentile(&sorted, 0.5),
            p99: percentile(&sorted, 0.99),
            max: sorted.last().copied(),
        }
    }
}

/// The nearest-rank percentile `q` (0 to 1) of sorted values; `None` if there are none.
pub fn percentile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// How late a proxy was marked `lost`, in ms, from what the admin API shows once it is:
/// the time from its last heartbeat to the change of status, less `lost_after`.
///
/// Both ages are measured by the keeper at one moment, so their difference is exact on
/// the keeper's clock (to its 1 ms rounding) whatever the network and this process did.
pub fn lateness_ms(last_heartbeat_age_ms: u64, since_age_ms: u64, lost_after_ms: u64) -> i64 {
    let silent_until_lost = i128::from(last_heartbeat_age_ms) - i128::from(since_age_ms);
    let late = silent_until_lost - i128::from(lost_after_ms);
    // Ages are below 2^63 ms in any real run; clamp rather than wrap otherwise.
    late.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// The plain-UDP sink, measured with the same senders and the same offered load.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Baseline {
    /// Datagrams the sink counted.
    pub sink_received: u64,
    /// `sink_received / duration`.
    pub sink_dgram_per_s: f64,
    /// CPU seconds the sink used.
    pub sink_cpu_s: Option<f64>,
    /// `sink_received / sink_cpu_s`.
    pub sink_dgram_per_cpu_s: Option<f64>,
    /// `keeper_hb_per_s / sink_dgram_per_s`.
    pub throughput_ratio: Option<f64>,
    /// `keeper_hb_per_cpu_s / sink_dgram_per_cpu_s`.
    pub cpu_efficiency_ratio: Option<f64>,
}

/// The raw figures of one run, from which [`Report::new`] derives the rest.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    /// Simulated proxies.
    pub proxies: usize,
    /// Sender threads.
    pub senders: usize,
    /// Length of the load phase against the keeper, in seconds.
    pub duration_s: f64,
    /// Heartbeats sent.
    pub sent: u64,
    /// Acks received.
    pub acknowledged: u64,
    /// Challenges received.
    pub challenges: u64,
    /// Datagrams the keeper counted.
    pub keeper_received: Option<u64>,
    /// CPU seconds of the keeper.
    pub keeper_cpu_s: Option<f64>,
    /// Round trips.
    pub rtt_us: RttSummary,
    /// The lost probe.
    pub lost_probe: Option<LostProbe>,
    /// Up proxies marked lost during the load phase.
    pub false_lost: Option<u64>,
    /// Stalls during the load phase.
    pub stalls: Option<u64>,
    /// The listing readers.
    pub readers: Option<ReadersReport>,
    /// The sink's count, CPU seconds and load-phase length in seconds, with `--baseline`.
    pub sink: Option<(u64, Option<f64>, f64)>,
}

impl Report {
    /// Derives rates, losses and ratios from `m`.
    pub fn new(m: Measured) -> Report {
        let per = |count: u64, seconds: f64| (seconds > 0.0).then(|| count as f64 / seconds);
        let lost = m.keeper_received.map(|r| m.sent.saturating_sub(r));
        let loss_ratio = lost.and_then(|l| (m.sent > 0).then(|| l as f64 / m.sent as f64));
        let keeper_hb_per_s = m.keeper_received.and_then(|r| per(r, m.duration_s));
        let keeper_hb_per_cpu_s = m
            .keeper_received
            .zip(m.keeper_cpu_s)
            .and_then(|(r, cpu)| per(r, cpu));
        let baseline = m.sink.map(|(received, cpu, seconds)| {
            let sink_dgram_per_s = per(received, seconds).unwrap_or(0.0);
            let sink_dgram_per_cpu_s = cpu.and_then(|cpu| per(received, cpu));
            let ratio = |a: Option<f64>, b: Option<f64>| {
                a.zip(b)
                    .and_then(|(a, b)| (b > 0.0).then(|| round(a / b, 3)))
            };
            Baseline {
                sink_received: received,
                sink_dgram_per_s: round(sink_dgram_per_s, 1),
                sink_cpu_s: cpu.map(|c| round(c, 3)),
                sink_dgram_per_cpu_s: sink_dgram_per_cpu_s.map(|r| round(r, 1)),
                throughput_ratio: ratio(keeper_hb_per_s, Some(sink_dgram_per_s)),
                cpu_efficiency_ratio: ratio(keeper_hb_per_cpu_s, sink_dgram_per_cpu_s),
            }
        });
        Report {
            proxies: m.proxies,
            senders: m.senders,
            duration_s: round(m.duration_s, 3),
            sent: m.sent,
            acknowledged: m.acknowledged,
            challenges: m.challenges,
            keeper_received: m.keeper_received,
            lost,
            loss_ratio: loss_ratio.map(|r| round(r, 6)),
            keeper_hb_per_s: keeper_hb_per_s.map(|r| round(r, 1)),
            keeper_cpu_s: m.keeper_cpu_s.map(|c| round(c, 3)),
            keeper_hb_per_cpu_s: keeper_hb_per_cpu_s.map(|r| round(r, 1)),
            rtt_us: m.rtt_us,
            lost_probe: m.lost_probe,
            false_lost: m.false_lost,
            stalls: m.stalls,
            readers: m.readers,
            baseline,
        }
    }

    /// The report as a table for people.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut row = |name: &str, value: String| {
            let _ = writeln!(out, "{name:<22}{value}");
        };
        row("proxies", grouped(self.proxies as u64));
        row("senders", self.senders.to_string());
        row("duration", format!("{:.3} s", self.duration_s));
        let sent_rate = if self.duration_s > 0.0 {
            self.sent as f64 / self.duration_s
        } else {
            0.0
        };
        row(
            "sent",
            format!("{} ({}/s)", grouped(self.sent), grouped(sent_rate as u64)),
        );
        row("acknowledged", grouped(self.acknowledged));
        row("challenges", grouped(self.challenges));
        row(
            "keeper received",
            match (self.keeper_received, self.keeper_hb_per_s) {
                (Some(r), Some(rate)) => format!("{} ({}/s)", grouped(r), grouped(rate as u64)),
                (Some(r), None) => grouped(r),
                _ => "-".into(),
            },
        );
        row(
            "lost",
            match (self.lost, self.loss_ratio) {
                (Some(l), Some(ratio)) => format!("{} ({:.2}%)", grouped(l), ratio * 100.0),
                (Some(l), None) => grouped(l),
                _ => "-".into(),
            },
        );
        row(
            "keeper cpu",
            match (self.keeper_cpu_s, self.keeper_hb_per_cpu_s) {
                (Some(c), Some(r)) => {
                    format!("{c:.2} s ({} heartbeats per cpu-second)", grouped(r as u64))
                }
                (Some(c), None) => format!("{c:.2} s"),
                _ => "-".into(),
            },
        );
        let r = &self.rtt_us;
        let us = |v: Option<u64>| v.map_or_else(|| "-".into(), grouped);
        row(
            "rtt (µs)",
            format!(
                "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
                us(r.p50),
                us(r.p90),
                us(r.p99),
                us(r.p999),
                us(r.max),
                grouped(r.samples)
            ),
        );
        row(
            "lost probe",
            match &self.lost_probe {
                None => "-".into(),
                Some(p) => {
                    let ms = |v: Option<i64>| v.map_or_else(|| "-".into(), |v| v.to_string());
                    format!(
                        "{} of {} marked lost; lateness p50 {} ms, p99 {} ms, max {} ms",
                        p.lost,
                        p.probes,
                        ms(p.lateness_ms.p50),
                        ms(p.lateness_ms.p99),
                        ms(p.lateness_ms.max)
                    )
                }
            },
        );
        let count = |v: Option<u64>| v.map_or_else(|| "-".into(), grouped);
        row("false lost", count(self.false_lost));
        row("keeper stalls", count(self.stalls));
        if let Some(r) = &self.readers {
            let ms = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.0}"));
            row(
                "listing readers",
                format!(
                    "{} threads read {} listings of {} bytes; mean {} ms, max {} ms",
                    r.threads,
                    grouped(r.requests),
                    grouped(r.mean_bytes),
                    ms(r.mean_ms),
                    ms(r.max_ms)
                ),
            );
        }
        if let Some(b) = &self.baseline {
            row(
                "sink received",
                format!(
                    "{} ({}/s)",
                    grouped(b.sink_received),
                    grouped(b.sink_dgram_per_s as u64)
                ),
            );
            row(
                "sink cpu",
                match (b.sink_cpu_s, b.sink_dgram_per_cpu_s) {
                    (Some(c), Some(r)) => {
                        format!("{c:.2} s ({} datagrams per cpu-second)", grouped(r as u64))
                    }
                    (Some(c), None) => format!("{c:.2} s"),
                    _ => "-".into(),
                },
            );
            let ratio = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.3}"));
            row(
                "keeper / sink",
                format!(
                    "throughput {}, cpu efficiency {}",
                    ratio(b.throughput_ratio),
                    ratio(b.cpu_efficiency_ratio)
                ),
            );
        }
        out
    }
}

/// `x` rounded to `digits` decimals.
fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }
}
