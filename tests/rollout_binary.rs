//! Rollouts through the real binary: a real keeper and three trial proxies, watched with
//! `zerokeeper rollout status` (its table, its JSON and its exit codes), the rollout
//! metrics, and a proxy that rejects a version (`--reject-config-version`).

mod procs;

use procs::{CLUSTER, Keeper, Process, short_sha256};
use serde_json::Value;

const A: &str = "10.25.0.11:3000";
const B: &str = "10.25.0.12:3000";
const C: &str = "10.25.0.13:3000";

/// `rollout status` of the test cluster with `extra`: (exit code, stdout, stderr).
fn status(keeper: &Keeper, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["rollout", "status", "--cluster", CLUSTER];
    args.extend_from_slice(extra);
    keeper.cli(&args)
}

fn rollout_json(keeper: &Keeper) -> Value {
    let (code, out, err) = status(keeper, &["-o", "json"]);
    assert!([0, 12, 13, 14].contains(&code), "{code}: {out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// A config file of about `size` bytes, different for each `tag`.
fn big_config(tag: &str, size: usize) -> String {
    let mut text = format!("# {tag}\n");
    let mut i = 0;
    while text.len() < size {
        text.push_str(&format!(
            "shard_{i:06} = \"mysql-{tag}-{i}.example:3306\"\n"
        ));
        i += 1;
    }
    text
}

fn metric(keeper: &Keeper, name: &str, labels: &str) -> Option<f64> {
    let url = format!("{}/metrics", keeper.http);
    let text = ureq::get(&url)
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    let want = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_large_rollout_converges_a_rejection_fails_it_and_a_rollback_brings_every_proxy_back() {
    let keeper = Keeper::start();
    let proxies: Vec<Process> = [
        keeper.proxy(A, &[]),
        keeper.proxy(B, &["--reject-config-version", "3"]),
        keeper.proxy(C, &[]),
    ]
    .into_iter()
    .collect();
    keeper.wait_keys(&[(A, "up"), (B, "up"), (C, "up")]);

    // A 300 KiB config reaches all three, and the rollout says so.
    let first = big_config("first", 300 * 1024);
    let (code, _, err) = keeper.push_config(&first);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = status(&keeper, &["--wait"]);
    assert_eq!(code, 0, "converged: {out}{err}");
    assert!(
        out.starts_with(
            "cluster test_cluster version 2: converged (3 of 3 running, 0 pending, 0 rejected)"
        ),
        "{out}"
    );
    let applied = format!("sha256 {}", short_sha256(first.as_bytes()));
    for p in &proxies {
        p.wait_log(&["config version applied", "version=2", &applied]);
    }
    let json = rollout_json(&keeper);
    assert_eq!(json["state"], "converged");
    assert_eq!(
        (json["running"].as_u64(), json["total"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(json["proxies"], Value::Array(Vec::new()));

    // Version 3 is one B cannot load: the rollout fails, naming B and its reason.
    let (code, _, err) = keeper.push_config("pool_size = \"broken\"\n");
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = status(&keeper, &["--wait"]);
    assert_eq!(code, 12, "failed: {out}{err}");
    assert!(out.contains("version 3: failed"), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with(B))
        .unwrap_or_else(|| panic!("B is listed: {out}"));
    assert!(row.contains("rejected"), "{row}");
    assert!(row.contains("config version 3 refused"), "{row}");
    proxies[1].wait_log(&["config rejected: running what ran before", "version=3"]);
    for p in [&proxies[0], &proxies[2]] {
        p.wait_log(&["config version applied", "version=3"]);
    }
    let json = rollout_json(&keeper);
    assert_eq!(json["state"], "failed");
    assert_eq!(json["rejected"].as_u64(), Some(1));
    // The others may still be listed pending until their next heartbeat says they run it.
    let b = json["proxies"]
        .as_array()
        .and_then(|list| list.iter().find(|p| p["proxy"] == B))
        .unwrap_or_else(|| panic!("B is listed: {json}"));
    assert_eq!(b["state"], "rejected");
    assert_eq!(b["config_version"].as_u64(), Some(2));
    // The cluster listing and the metrics say the same.
    let cluster = keeper
        .get_json(&format!("/v1/clusters/{CLUSTER}"))
        .expect("the cluster");
    assert_eq!(cluster["rollout"], "failed");
    assert_eq!(cluster["rejected"].as_u64(), Some(1));
    let labels = format!("cluster=\"{CLUSTER}\",state=\"failed\"");
    assert_eq!(
        metric(&keeper, "zerokeeper_rollout_state", &labels),
        Some(1.0)
    );
    let labels = format!("cluster=\"{CLUSTER}\",state=\"rejected\"");
    assert_eq!(
        metric(&keeper, "zerokeeper_rollout_proxies", &labels),
        Some(1.0)
    );
    // The watch stream and the audit of the rejection: the keeper logs it.
    keeper
        .process
        .wait_log(&["a proxy rejected its cluster's config", B]);

    // Roll back to version 2: a new version (4) with the old content, which all three run.
    let (code, out, err) = keeper.cli(&["config", "rollback", "--cluster", CLUSTER, "--to", "2"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = status(&keeper, &["--wait", "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let json: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (json["version"].as_u64(), json["state"].as_str()),
        (Some(4), Some("converged"))
    );
    for p in &proxies {
        p.wait_log(&["config version applied", "version=4", &applied]);
    }
    let labels = format!("cluster=\"{CLUSTER}\",state=\"converged\"");
    assert_eq!(
        metric(&keeper, "zerokeeper_rollout_state", &labels),
        Some(1.0)
    );
}

#[test]
fn a_proxy_that_registered_and_died_makes_the_rollout_stuck_and_rollout_status_names_it() {
    // A ready proxy is kept for 60 s here: far longer than the rollout may take (1 s).
    let timing = [
        "--heartbeat-interval",
        "100ms",
        "--lost-after",
        "600ms",
        "--ready-timeout",
        "60s",
        "--delete-after",
        "2500ms",
    ];
    let keeper = Keeper::launch(
        &procs::fresh_dir("stuck"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &timing,
        &["--rollout-timeout", "1s"],
        None,
    );
    let _a = keeper.proxy(A, &[]);
    keeper.wait_keys(&[(A, "up")]);
    let (code, _, err) = keeper.push_config("pool_size = 1\n");
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = status(&keeper, &["--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    // B registers and dies before it has pulled anything: it stays `ready`, pending.
    let mut b = keeper.proxy(B, &["--crash-on-start"]);
    b.wait_exit();
    keeper.wait_keys(&[(A, "up"), (B, "ready")]);
    // Without --wait the state is told at once: in progress (14) or, past the timeout,
    // stuck (13); --wait waits for stuck.
    let (code, out, err) = status(&keeper, &[]);
    assert!([13, 14].contains(&code), "{code}: {out}{err}");
    let (code, out, err) = status(&keeper, &["--wait"]);
    assert_eq!(code, 13, "stuck: {out}{err}");
    assert!(
        out.contains("version 2: stuck (1 of 2 running, 1 pending, 0 rejected)"),
        "{out}"
    );
    let row = out
        .lines()
        .find(|l| l.starts_with(B))
        .unwrap_or_else(|| panic!("B is listed: {out}"));
    assert!(row.contains("ready") && row.contains("overdue"), "{row}");
    // Removing it ends the rollout.
    let (code, out, err) = keeper.cli(&["remove", "--cluster", CLUSTER, "--addr", B, "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = status(&keeper, &[]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn rollout_status_of_an_unknown_cluster_exits_4() {
    let keeper = Keeper::start();
    let (code, out, err) = keeper.cli(&["rollout", "status", "--cluster", "nosuch"]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(err.contains("nosuch"), "{err}");
}

#[test]
fn hostgroups_switches_freezing_deletion_and_a_forced_remove_through_the_cli() {
    let keeper = Keeper::start();
    let mut a = keeper.proxy(A, &[]);
    let _b = keeper.proxy(B, &[]);
    keeper.wait_keys(&[(A, "up"), (B, "up")]);
    let (code, out, err) = keeper.cli(&[
        "hostgroup",
        "set",
        "--cluster",
        CLUSTER,
        "hg_orders",
        "--datasource",
        "mysql-a:3306,mysql-b:3306",
        "--datasource",
        "mysql-c:3306",
        "--current",
        "mysql-a:3306",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = keeper.cli(&["hostgroup", "list", "--cluster", CLUSTER]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("hg_orders") && out.contains("mysql-a:3306,mysql-b:3306,mysql-c:3306"),
        "{out}"
    );
    let switch = |hg: &str, from: &str, to: &str| {
        keeper.cli(&[
            "switch",
            "--cluster",
            CLUSTER,
            "--hostgroup",
            hg,
            "--from",
            from,
            "--to",
            to,
        ])
    };
    // Every refusal lists what would be valid, and nothing changes.
    let (code, _, err) = switch("hg_ordres", "mysql-a:3306", "mysql-b:3306");
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("its hostgroups are hg_orders"), "{err}");
    let (code, _, err) = switch("hg_orders", "whatever", "mysql-c:3306");
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("served by mysql-a:3306") && err.contains("mysql-b:3306, mysql-c:3306"),
        "{err}"
    );
    let (code, _, err) = switch("hg_orders", "mysql-a:3306", "mysql-x:3306");
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("one of mysql-b:3306, mysql-c:3306"), "{err}");
    let (code, _, err) = switch("hg_orders", "mysql-a:3306", "mysql-a:3306");
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("changes nothing") && err.contains("one of mysql-b:3306, mysql-c:3306"),
        "{err}"
    );
    let problem = keeper
        .get_json(&format!("/v1/clusters/{CLUSTER}/hostgroups"))
        .expect("listed");
    assert_eq!(problem[0]["current"], "mysql-a:3306", "{problem}");
    let (code, out, err) = switch("hg_orders", "mysql-a:3306", "mysql-b:3306");
    assert_eq!(code, 0, "{out}{err}");
    // Undeclared, the hostgroup names no switch.
    let (code, out, err) = keeper.cli(&["hostgroup", "delete", "--cluster", CLUSTER, "hg_orders"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("hostgroup hg_orders of test_cluster undeclared"),
        "{out}"
    );
    let (code, _, err) = switch("hg_orders", "mysql-b:3306", "mysql-c:3306");
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("it declares none"), "{err}");
    let (code, _, err) = keeper.cli(&["hostgroup", "delete", "--cluster", CLUSTER, "hg_orders"]);
    assert_eq!(code, 5, "{err}");

    // Freezing shows in the cluster list and the metrics.
    let (code, _, err) = keeper.cli(&["cluster", "freeze", CLUSTER]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = keeper.cli(&["cluster", "list"]);
    assert!(out.contains("frozen"), "{out}");
    assert_eq!(
        metric(
            &keeper,
            "zerokeeper_cluster_frozen",
            &format!("cluster=\"{CLUSTER}\"")
        ),
        Some(1.0)
    );
    let (code, _, err) = keeper.cli(&["cluster", "unfreeze", CLUSTER]);
    assert_eq!(code, 0, "{err}");

    // A live proxy is removed only by force, and then it leaves for good.
    let (code, _, err) = keeper.cli(&["remove", "--cluster", CLUSTER, "--addr", A]);
    assert_ne!(code, 0, "an up proxy is not removed without --force: {err}");
    let (code, out, err) = keeper.cli(&["remove", "--cluster", CLUSTER, "--addr", A, "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(a.wait_exit(), 78, "a removed proxy exits 78: {}", a.log());
    assert!(a.log().contains("removed by an operator"), "{}", a.log());
    keeper.wait_keys(&[(B, "up")]);

    // A cluster with a proxy is not deleted.
    let (code, _, err) = keeper.cli(&["cluster", "delete", CLUSTER]);
    assert_ne!(code, 0);
    assert!(err.contains(B), "the proxies left are named: {err}");
}
