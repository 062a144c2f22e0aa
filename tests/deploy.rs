//! What `deploy/` ships, against the real tools and the real binary: the systemd unit
//! passes `systemd-analyze verify` and the keeper speaks its readiness protocol
//! (`READY=1`, watchdog pings, `STOPPING=1`) with the example config; the alerts pass
//! `promtool check rules` and their unit tests; and every metric the alerts and the
//! Grafana dashboard query is one a live keeper (on a real etcd, so that its etcd and
//! leadership series are there too) exports.

#![cfg(feature = "etcd")]

mod etcd;
mod procs;

use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use etcd::{Etcd, tool};
use nix::sys::signal::Signal;
use procs::{BIN, Keeper, PATIENCE, fresh_dir};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `program` with `args`: (success, stdout and stderr together).
fn run(program: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let analyze = tool("systemd-analyze", "systemd");
    let unit = read(&deploy("systemd/zerokeeper.service"));
    assert!(
        unit.contains("ExecStart=/usr/local/bin/zerokeeper serve"),
        "{unit}"
    );
    // Verified against the binary just built, where the unit expects it installed.
    let dir = fresh_dir("systemd-unit");
    let file = dir.join("zerokeeper.service");
    std::fs::write(&file, unit.replace("/usr/local/bin/zerokeeper", BIN)).expect("write the unit");
    let (ok, text) = run(
        &analyze,
        &["verify", "--man=no", file.to_str().expect("utf-8")],
    );
    // Any complaint (an unknown option, a typo in a value) is printed: none is accepted.
    assert!(
        ok && text.trim().is_empty(),
        "systemd-analyze verify: {text}"
    );
    // And the check bites: a unit with a bad value fails.
    std::fs::write(
        &file,
        unit.replace("Type=notify", "Type=notifyy")
            .replace("/usr/local/bin/zerokeeper", BIN),
    )
    .expect("write the unit");
    let (_, text) = run(
        &analyze,
        &["verify", "--man=no", file.to_str().expect("utf-8")],
    );
    assert!(
        text.contains("notifyy"),
        "systemd-analyze accepted a bad unit: {text}"
    );
}

/// Receives one notification within the patience, or `None`.
fn notification(socket: &UnixDatagram, within: Duration) -> Option<String> {
    socket.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 1024];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn the_keeper_tells_systemd_it_is_ready_pings_the_watchdog_and_says_it_stops() {
    // The example config as the unit uses it; the test's own key, addresses and data dir
    // are given as flags, which override the file.
    let dir = fresh_dir("notify");
    let config = dir.join("keeper.toml");
    std::fs::copy(deploy("systemd/keeper.toml"), &config).expect("copy the example config");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    let config_arg = config.to_str().expect("utf-8").to_owned();
    let socket_env = socket_path.clone();
    let mut keeper = Keeper::start_configured(
        &dir.join("data"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--config", &config_arg],
        move |command| {
            command
                .env("NOTIFY_SOCKET", &socket_env)
                // A watchdog of 900 ms: the keeper pings every 300 ms.
                .env("WATCHDOG_USEC", "900000");
        },
    );
    let ready = notification(&socket, PATIENCE).expect("a READY=1 notification");
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    let udp = keeper.udp.trim().to_owned();
    assert!(
        ready.contains(&format!("STATUS=serving: udp {udp}")),
        "{ready}"
    );
    assert!(
        ready.contains(&format!("MAINPID={}", keeper.process.child.id())),
        "{ready}"
    );
    // The example config's JSON logs are on: every line is JSON, the listening lines too.
    keeper.process.wait_log(&["keeper started"]);
    let log = keeper.process.log();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "not JSON: {line}");
    }
    assert!(log.contains("udp listening on "), "{log}");
    // Watchdog pings keep coming while the keeper task answers.
    let mut pings = 0;
    let deadline = Instant::now() + PATIENCE;
    while pings < 3 && Instant::now() < deadline {
        if notification(&socket, PATIENCE).as_deref() == Some("WATCHDOG=1\n") {
            pings += 1;
        }
    }
    assert_eq!(pings, 3, "watchdog pings");
    // A stopped keeper pings nothing: SIGSTOP, and nothing arrives for a whole watchdog
    // period (the wait is for an absence, bounded by that period).
    keeper.process.signal(Signal::SIGSTOP);
    // A ping sent just before the stop may still be queued: drain it.
    while notification(&socket, Duration::from_millis(50)).is_some() {}
    assert_eq!(notification(&socket, Duration::from_millis(900)), None);
    keeper.process.signal(Signal::SIGCONT);
    // SIGTERM: STOPPING=1, then a clean exit.
    keeper.process.signal(Signal::SIGTERM);
    let deadline = Instant::now() + PATIENCE;
    let mut stopping = false;
    while !stopping && Instant::now() < deadline {
        stopping = notification(&socket, PATIENCE).as_deref() == Some("STOPPING=1\n");
    }
    assert!(stopping, "no STOPPING=1");
    assert_eq!(keeper.process.wait_exit(), 0, "{}", keeper.process.log());
}

#[test]
fn the_alerts_pass_promtool_check_rules_and_their_unit_tests() {
    let promtool = tool("promtool", "prometheus");
    let rules = deploy("prometheus/alerts.yml");
    let (ok, text) = run(
        &promtool,
        &["check", "rules", rules.to_str().expect("utf-8")],
    );
    assert!(
        ok && text.contains("SUCCESS"),
        "promtool check rules: {text}"
    );
    let tests = deploy("prometheus/alerts_test.yml");
    let (ok, text) = run(
        &promtool,
        &["test", "rules", tests.to_str().expect("utf-8")],
    );
    assert!(
        ok && text.contains("SUCCESS"),
        "promtool test rules: {text}"
    );
}

/// The metric names of a classic-format exposition: each `TYPE` line's series, with a
/// histogram's `_bucket`, `_sum` and `_count`.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let Some((name, kind)) = rest.rsplit_once(' ') else {
            continue;
        };
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        } else {
            names.insert(name.to_owned());
        }
    }
    names
}

/// The keeper's metric names a PromQL expression uses (`zerokeeper_*`, `process_*`).
fn queried(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("zerokeeper_") || w.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// Every PromQL expression of the dashboard: its panels' targets and its variables.
fn dashboard_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn the_alerts_and_the_dashboard_query_only_metrics_a_live_keeper_exports() {
    // A keeper on a real etcd, leading, with a proxy: every family it can export is there.
    let etcd = Etcd::start("deploy-metrics");
    let keeper = Keeper::start_with(
        &fresh_dir("deploy-unused"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--store",
            "etcd",
            "--etcd-endpoints",
            &etcd.endpoint(),
            "--lease-ttl",
            "2s",
        ],
    );
    let _proxy = keeper.proxy("10.25.0.91:3000", &[]);
    let metrics = || -> String {
        ureq::get(format!("{}/metrics", keeper.http))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + PATIENCE;
    let text = loop {
        let text = metrics();
        if text.contains("zerokeeper_leader 1")
            && text.contains("zerokeeper_proxies{cluster=\"test_cluster\",status=\"up\"} 1")
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the keeper never led with its proxy up:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let names = exported(&text);

    let mut exprs: Vec<(String, String)> = Vec::new();
    for line in read(&deploy("prometheus/alerts.yml")).lines() {
        if let Some(expr) = line.trim().strip_prefix("expr: ") {
            exprs.push(("alerts.yml".to_owned(), expr.to_owned()));
        }
    }
    let alerts = exprs.len();
    assert!(alerts >= 15, "only {alerts} alert expressions found");
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(&deploy("grafana/zerokeeper.json")))
            .expect("the dashboard is JSON");
    let mut found = Vec::new();
    dashboard_exprs(&dashboard, &mut found);
    assert!(
        found.len() >= 30,
        "only {} dashboard expressions found",
        found.len()
    );
    exprs.extend(found.into_iter().map(|e| ("zerokeeper.json".to_owned(), e)));

    let mut used = BTreeSet::new();
    let mut missing = Vec::new();
    for (file, expr) in &exprs {
        for name in queried(expr) {
            if !names.contains(&name) {
                missing.push(format!("{file}: {name} in {expr}"));
            }
            used.insert(name);
        }
    }
    assert!(
        missing.is_empty(),
        "not exported by the keeper:\n{}",
        missing.join("\n")
    );
    // The check is not vacuous: the alerts and the dashboard cover the keeper's families.
    for family in [
        "zerokeeper_gate_open",
        "zerokeeper_proxies",
        "zerokeeper_deletion_paused",
        "zerokeeper_rollout_state",
        "zerokeeper_store_commit_duration_seconds_bucket",
        "zerokeeper_http_request_duration_seconds_bucket",
        "zerokeeper_etcd_reachable",
        "zerokeeper_leader_term",
        "process_start_time_seconds",
    ] {
        assert!(used.contains(family), "{family} is queried by nothing");
    }
    drop(etcd);
}

/// `GET path` of `keeper`: (status, body), whatever the status.
fn probe(keeper: &Keeper, path: &str) -> (u16, String) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    );
    let mut answer = agent
        .get(format!("{}{path}", keeper.http))
        .call()
        .expect("the keeper answers");
    let status = answer.status().as_u16();
    (
        status,
        answer.body_mut().read_to_string().unwrap_or_default(),
    )
}

fn wait_probe(keeper: &Keeper, path: &str, status: u16) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (got, body) = probe(keeper, path);
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: {got} {body}, waited for {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn readyz_stays_ready_through_a_mass_loss_that_v1_health_reports() {
    let keeper = Keeper::start();
    let proxies: Vec<_> = ["10.25.0.81:3000", "10.25.0.82:3000", "10.25.0.83:3000"]
        .iter()
        .map(|p| keeper.proxy(p, &[]))
        .collect();
    keeper.wait_keys(&[
        ("10.25.0.81:3000", "up"),
        ("10.25.0.82:3000", "up"),
        ("10.25.0.83:3000", "up"),
    ]);
    assert_eq!(
        probe(&keeper, "/v1/health"),
        (200, r#"{"status":"ok"}"#.to_owned())
    );
    // Two of three go silent: more than the 55 % share, so deletion pauses.
    proxies[0].signal(Signal::SIGSTOP);
    proxies[1].signal(Signal::SIGSTOP);
    let body = wait_probe(&keeper, "/v1/health", 503);
    let problem: serde_json::Value = serde_json::from_str(&body).expect("problem+json");
    assert_eq!(
        problem["type"].as_str().map(|t| t.ends_with("mass-loss")),
        Some(true),
        "{body}"
    );
    assert_eq!(
        problem["clusters"],
        serde_json::json!([procs::CLUSTER]),
        "{body}"
    );
    // The keeper still serves: ready, and its admin API answers.
    assert_eq!(probe(&keeper, "/readyz"), (200, "ok\n".to_owned()));
    assert_eq!(probe(&keeper, "/v1/clusters").0, 200);
    proxies[0].signal(Signal::SIGCONT);
    proxies[1].signal(Signal::SIGCONT);
    wait_probe(&keeper, "/v1/health", 200);
}
