//! `zerokeeper bench`: one short run of the real binary (its own keeper, the baseline
//! sink), and the pure pieces behind the report: GSO grouping, lateness, JSON shape.

use std::process::Command;

use serde_json::Value;
use zerokeeper::loadgen::report::{
    LatenessSummary, LostProbe, Measured, Report, RttSummary, lateness_ms, percentile,
};
use zerokeeper::loadgen::{GsoRun, gso_runs};

fn zerokeeper() -> Command {
    Command::new(env!("CARGO_BIN_EXE_zerokeeper"))
}

/// Fields every report has, and whether each is an integer (`true`) or any number.
const FIELDS: [(&str, bool); 12] = [
    ("proxies", true),
    ("senders", true),
    ("duration_s", false),
    ("sent", true),
    ("acknowledged", true),
    ("challenges", true),
    ("keeper_received", true),
    ("lost", true),
    ("loss_ratio", false),
    ("keeper_hb_per_s", false),
    ("keeper_cpu_s", false),
    ("keeper_hb_per_cpu_s", false),
];

/// Fields only a `--baseline` report has.
const BASELINE_FIELDS: [(&str, bool); 6] = [
    ("sink_received", true),
    ("sink_dgram_per_s", false),
    ("sink_cpu_s", false),
    ("sink_dgram_per_cpu_s", false),
    ("throughput_ratio", false),
    ("cpu_efficiency_ratio", false),
];

fn assert_number(report: &Value, name: &str, integer: bool) {
    let value = report
        .get(name)
        .unwrap_or_else(|| panic!("no field {name} in {report}"));
    if integer {
        assert!(value.is_u64(), "{name} is not an unsigned integer: {value}");
    } else {
        assert!(value.is_number(), "{name} is not a number: {value}");
    }
}

fn assert_number_or_null(object: &Value, name: &str) {
    let value = object
        .get(name)
        .unwrap_or_else(|| panic!("no field {name} in {object}"));
    assert!(value.is_number() || value.is_null(), "{name} is {value}");
}

#[test]
fn a_short_bench_with_a_baseline_reports_every_field() {
    let output = zerokeeper()
        .args([
            "bench",
            "--baseline",
            "--proxies",
            "500",
            "--duration",
            "1s",
        ])
        .args(["--lost-probe", "0", "-o", "json"])
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });

    for (name, integer) in FIELDS.iter().chain(&BASELINE_FIELDS) {
        assert_number(&report, name, *integer);
    }
    let rtt = &report["rtt_us"];
    for name in ["p50", "p90", "p99", "p999", "max"] {
        assert_number_or_null(rtt, name);
    }
    assert!(rtt["samples"].is_u64(), "{rtt}");
    assert!(
        report["lost_probe"].is_null(),
        "--lost-probe 0 runs no probe"
    );

    assert_eq!(report["proxies"], 500);
    let sent = report["sent"].as_u64().unwrap_or(0);
    let received = report["keeper_received"].as_u64().unwrap_or(0);
    let acknowledged = report["acknowledged"].as_u64().unwrap_or(0);
    assert!(sent > 0, "nothing sent: {report}");
    assert!(received > 0, "the keeper received nothing: {report}");
    assert!(acknowledged > 0 || received > 0, "{report}");
    assert!(
        report["sink_received"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
}

#[test]
fn an_impossible_flag_fails_with_an_error_line() {
    let output = zerokeeper()
        .args(["bench", "--proxies", "0", "--duration", "1s"])
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn gso_runs_group_consecutive_datagrams_of_equal_length() {
    let runs = gso_runs(&[90, 90, 90, 91, 91, 90], 64, 65_000);
    assert_eq!(
        runs,
        vec![
            GsoRun {
                offset: 0,
                segment: 90,
                count: 3
            },
            GsoRun {
                offset: 270,
                segment: 91,
                count: 2
            },
            GsoRun {
                offset: 452,
                segment: 90,
                count: 1
            },
        ]
    );
    assert!(gso_runs(&[], 64, 65_000).is_empty());
}

#[test]
fn gso_runs_respect_the_segment_and_byte_limits() {
    let counts: Vec<usize> = gso_runs(&[100; 10], 4, 65_000)
        .iter()
        .map(|r| r.count)
        .collect();
    assert_eq!(counts, vec![4, 4, 2]);
    let counts: Vec<usize> = gso_runs(&[1000; 5], 64, 2_500)
        .iter()
        .map(|r| r.count)
        .collect();
    assert_eq!(counts, vec![2, 2, 1]);
    // Without GSO (one segment per send) every datagram is a run of its own.
    let runs = gso_runs(&[80, 80, 80], 1, 65_000);
    assert_eq!(
        runs.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![0, 80, 160]
    );
    // A limit of 0 still sends.
    assert_eq!(gso_runs(&[80, 80], 0, 65_000).len(), 2);
}

#[test]
fn lateness_is_the_silence_before_the_mark_less_lost_after() {
    // Last heartbeat 12,350 ms ago, lost since 2,000 ms ago: silent 10,350 ms before
    // being marked; with lost_after 10 s that is 350 ms late.
    assert_eq!(lateness_ms(12_350, 2_000, 10_000), 350);
    assert_eq!(lateness_ms(12_000, 2_000, 10_000), 0);
    // Rounding of the two ages can make an on-time mark look a millisecond early.
    assert_eq!(lateness_ms(11_999, 2_000, 10_000), -1);
    assert_eq!(lateness_ms(0, u64::MAX, 0), i64::MIN);
}

#[test]
fn lateness_percentiles_are_nearest_rank() {
    let values: Vec<i64> = (1..=100).rev().collect();
    let summary = LatenessSummary::of(&values);
    assert_eq!(
        (summary.p50, summary.p99, summary.max),
        (Some(50), Some(99), Some(100))
    );
    assert_eq!(percentile(&[7], 0.99), Some(7));
    assert_eq!(percentile(&[], 0.5), None);
    assert_eq!(LatenessSummary::of(&[]).max, None);
}

fn measured() -> Measured {
    Measured {
        proxies: 10,
        senders: 2,
        duration_s: 2.0,
        sent: 1000,
        acknowledged: 5,
        challenges: 1,
        keeper_received: Some(900),
        keeper_cpu_s: Some(0.5),
        rtt_us: RttSummary {
            p50: Some(100),
            p90: Some(200),
            p99: Some(300),
            p999: Some(400),
            max: Some(500),
            samples: 5,
        },
        lost_probe: Some(LostProbe {
            probes: 3,
            lost: 2,
            lateness_ms: LatenessSummary::of(&[4, 8]),
        }),
        false_lost: Some(0),
        stalls: Some(0),
        readers: None,
        sink: Some((2000, Some(0.25), 2.0)),
    }
}

#[test]
fn the_report_derives_losses_rates_and_ratios() {
    let report = Report::new(measured());
    assert_eq!(report.lost, Some(100));
    assert_eq!(report.loss_ratio, Some(0.1));
    assert_eq!(report.keeper_hb_per_s, Some(450.0));
    assert_eq!(report.keeper_hb_per_cpu_s, Some(1800.0));
    let baseline = report.baseline.as_ref().expect("with a sink");
    assert_eq!(baseline.sink_dgram_per_s, 1000.0);
    assert_eq!(baseline.sink_dgram_per_cpu_s, Some(8000.0));
    assert_eq!(baseline.throughput_ratio, Some(0.45));
    assert_eq!(baseline.cpu_efficiency_ratio, Some(0.225));
    // More received than sent (another sender on the keeper) is no negative loss.
    let report = Report::new(Measured {
        keeper_received: Some(1200),
        ..measured()
    });
    assert_eq!(report.lost, Some(0));
}

#[test]
fn the_report_json_has_stable_names_and_nulls_for_what_was_not_measured() {
    let json = serde_json::to_value(Report::new(measured())).expect("serialisable");
    for (name, integer) in FIELDS.iter().chain(&BASELINE_FIELDS) {
        assert_number(&json, name, *integer);
    }
    assert_eq!(json["rtt_us"]["p999"], 400);
    assert_eq!(json["lost_probe"]["probes"], 3);
    assert_eq!(json["lost_probe"]["lateness_ms"]["max"], 8);

    // An external keeper without its admin API, no probe, no baseline.
    let json = serde_json::to_value(Report::new(Measured {
        keeper_received: None,
        keeper_cpu_s: None,
        rtt_us: RttSummary {
            p50: None,
            p90: None,
            p99: None,
            p999: None,
            max: None,
            samples: 0,
        },
        lost_probe: None,
        sink: None,
        ..measured()
    }))
    .expect("serialisable");
    for name in [
        "keeper_received",
        "lost",
        "loss_ratio",
        "keeper_hb_per_s",
        "keeper_cpu_s",
    ] {
        assert!(json[name].is_null(), "{name}: {json}");
    }
    assert!(json["lost_probe"].is_null());
    assert!(json["rtt_us"]["p50"].is_null());
    for (name, _) in BASELINE_FIELDS {
        assert!(
            json.get(name).is_none(),
            "{name} without --baseline: {json}"
        );
    }
}

#[test]
fn the_table_names_every_figure() {
    let table = Report::new(measured()).table();
    for label in [
        "sent",
        "keeper received",
        "lost",
        "keeper cpu",
        "rtt",
        "lost probe",
        "sink received",
        "keeper / sink",
    ] {
        assert!(table.contains(label), "{label} missing from\n{table}");
    }
}
