//! Black-box tests of the real `zerokeeper` binary: a `serve` process and separate
//! `proxy` processes on loopback with short timings, observed with `status -o keys`
//! and `status --watch`, driven with signals and the operator's commands.

mod procs;

use std::io::{BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use procs::{BIN, CLUSTER, Keeper, PATIENCE, Process, line, short_sha256};

const A: &str = "10.25.0.11:3000";
const B: &str = "10.25.0.12:3000";
const C: &str = "10.25.0.13:3000";
const D: &str = "10.25.0.14:3000";

#[test]
fn three_proxies_register_ready_and_then_go_up() {
    let keeper = Keeper::start();
    let _a = keeper.proxy(A, &["--init-delay", "1500ms"]);
    let _b = keeper.proxy(B, &["--init-delay", "1500ms"]);
    let _c = keeper.proxy(C, &["--init-delay", "1500ms"]);
    keeper.wait_keys(&[(A, "ready"), (B, "ready"), (C, "ready")]);
    keeper.wait_keys(&[(A, "up"), (B, "up"), (C, "up")]);
}

#[test]
fn a_stopped_proxy_becomes_lost_and_returns_to_up_after_sigcont() {
    let keeper = Keeper::start();
    let _a = keeper.proxy(A, &[]);
    let c = keeper.proxy(C, &[]);
    keeper.wait_keys(&[(A, "up"), (C, "up")]);
    c.signal(Signal::SIGSTOP);
    keeper.wait_keys(&[(A, "up"), (C, "lost")]);
    c.signal(Signal::SIGCONT);
    keeper.wait_keys(&[(A, "up"), (C, "up")]);
    assert!(
        !c.log().contains("restart"),
        "a lost proxy comes straight back, without a restart"
    );
}

#[test]
fn a_proxy_that_crashes_on_start_is_deleted_after_ready_timeout() {
    let keeper = Keeper::start();
    let mut d = keeper.proxy(D, &["--crash-on-start"]);
    assert_ne!(d.wait_exit(), 0, "a crash is not a clean exit");
    let crashed = Instant::now();
    keeper.wait_keys(&[(D, "ready")]);
    keeper.wait_keys(&[]);
    let after = crashed.elapsed();
    assert!(
        after >= Duration::from_millis(1_500),
        "deleted after {after:?}, before ready_timeout (2s)"
    );
    keeper
        .process
        .wait_log(&["status changed", "ready_timeout"]);
}

#[test]
fn a_proxy_that_fails_to_start_is_deleted_at_once() {
    let keeper = Keeper::start();
    let mut d = keeper.proxy(D, &["--fail-start", "--init-delay", "800ms"]);
    keeper.wait_keys(&[(D, "ready")]);
    let seen_ready = Instant::now();
    keeper.wait_keys(&[]);
    assert!(
        seen_ready.elapsed() < Duration::from_millis(1_500),
        "not deleted before ready_timeout"
    );
    assert_eq!(d.wait_exit(), 1);
    keeper
        .process
        .wait_log(&["status changed", "reason=\"down\""]);
}

#[test]
fn sigterm_on_a_proxy_unregisters_it() {
    let keeper = Keeper::start();
    let _a = keeper.proxy(A, &[]);
    let mut b = keeper.proxy(B, &[]);
    keeper.wait_keys(&[(A, "up"), (B, "up")]);
    b.signal(Signal::SIGTERM);
    assert_eq!(b.wait_exit(), 0);
    // Deleted by the unregister, not a timer. The listing is served from the admin
    // API's view, which follows the keeper's changes a moment later: waited for.
    keeper.wait_keys(&[(A, "up")]);
    keeper
        .process
        .wait_log(&["status changed", "reason=\"unregister\""]);
}

#[test]
fn remove_deletes_a_proxy_and_a_second_remove_is_not_found() {
    let keeper = Keeper::start();
    let mut a = keeper.proxy(A, &[]);
    let c = keeper.proxy(C, &[]);
    keeper.wait_keys(&[(A, "up"), (C, "up")]);
    c.signal(Signal::SIGKILL);
    keeper.wait_keys(&[(A, "up"), (C, "lost")]);
    let (code, out, err) = keeper.cli(&["remove", "--cluster", CLUSTER, "--addr", C]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(C) && out.contains("lost"), "{out}");
    assert_eq!(keeper.keys(), vec![line(A, "up")]);
    let (code, _, err) = keeper.cli(&["remove", "--cluster", CLUSTER, "--addr", C]);
    assert_eq!(code, 4, "{err}");

    // A is up: alive. A dry run says what would happen; a remove without --force is
    // refused (exit 5) and A keeps running, never told to restart.
    let (code, out, err) = keeper.cli(&["remove", "--cluster", CLUSTER, "--addr", A, "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("would refuse to remove") && out.contains("it is up"),
        "{out}"
    );
    let (code, out, err) = keeper.cli(&[
        "remove",
        "--cluster",
        CLUSTER,
        "--addr",
        A,
        "--dry-run",
        "--force",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("would tell the process to leave"), "{out}");
    let (code, _, err) = keeper.cli(&["remove", "--cluster", CLUSTER, "--addr", A]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("it is alive") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(keeper.keys(), vec![line(A, "up")]);
    let (code, out, err) = keeper.cli(&["remove", "--cluster", CLUSTER, "--addr", A, "--force"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("it was up"), "{out}");
    // Told to leave, it stops and exits 78, and is not restarted into the cluster.
    assert_eq!(a.wait_exit(), 78, "{}", a.log());
    assert!(
        !a.log().contains("the keeper asked for a restart"),
        "{}",
        a.log()
    );
}

#[test]
fn push_config_and_switch_are_refused_while_a_proxy_is_lost_and_applied_when_all_are_up() {
    let keeper = Keeper::start();
    let _a = keeper.proxy(A, &[]);
    let c = keeper.proxy(C, &[]);
    keeper.wait_keys(&[(A, "up"), (C, "up")]);
    keeper.declare_hostgroup("hg1", "db-a:3306,db-b:3306", "db-a:3306");
    let config = std::env::temp_dir().join(format!("zk-binary-config-{}.toml", std::process::id()));
    std::fs::write(&config, "pool_size = 64\n").expect("write config");
    let config = config.to_str().expect("utf-8 path");
    c.signal(Signal::SIGSTOP);
    keeper.wait_keys(&[(A, "up"), (C, "lost")]);
    let (code, _, err) = keeper.cli(&["push-config", "--cluster", CLUSTER, "--file", config]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(C) && err.contains("lost"),
        "the blocker is named: {err}"
    );
    let switch = [
        "switch",
        "--cluster",
        CLUSTER,
        "--hostgroup",
        "hg1",
        "--from",
        "db-a:3306",
        "--to",
        "db-b:3306",
    ];
    let (code, _, err) = keeper.cli(&switch);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(C) && err.contains("lost"),
        "the blocker is named: {err}"
    );
    c.signal(Signal::SIGCONT);
    keeper.wait_keys(&[(A, "up"), (C, "up")]);
    let (code, out, err) = keeper.cli(&["push-config", "--cluster", CLUSTER, "--file", config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("version 2"), "{out}");
    let (code, out, err) = keeper.cli(&switch);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("version 3"), "{out}");
    // The switches, refused and done, from the audit record.
    let (code, out, err) = keeper.cli(&["switch", "--cluster", CLUSTER, "--history"]);
    assert_eq!(code, 0, "{err}");
    let results: Vec<(&str, &str)> = out
        .lines()
        .skip(1)
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            (cells[2], cells[4])
        })
        .collect();
    assert_eq!(
        results,
        [("switch", "refused"), ("switch", "done")],
        "{out}"
    );
    let (code, _, err) = keeper.cli(&["switch", "--cluster", CLUSTER, "--history", "--to", "x"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn a_proxy_kept_stopped_until_deleted_is_restarted_and_comes_back_ready_then_up() {
    let keeper = Keeper::start();
    let _a = keeper.proxy(A, &[]);
    let d = keeper.proxy(D, &["--init-delay", "300ms"]);
    keeper.wait_keys(&[(A, "up"), (D, "up")]);
    // The watch stream sees every change, even a `ready` too short for polling to catch.
    let mut watch = Command::new(BIN)
        .args([
            "status",
            "--watch",
            "-o",
            "keys",
            "--cluster",
            CLUSTER,
            "--http",
            &keeper.http,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let pipe = watch.stdout.take().expect("piped");
    let sink = lines.clone();
    std::thread::spawn(move || {
        let mut text = String::new();
        let mut reader = BufReader::new(pipe);
        let mut buf = [0u8; 256];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            while let Some(i) = text.find('\n') {
                let line: String = text.drain(..=i).collect();
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line.trim_end().to_owned());
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300)); // let the watcher connect
    d.signal(Signal::SIGSTOP);
    keeper.wait_keys(&[(A, "up"), (D, "lost")]);
    keeper.wait_keys(&[(A, "up")]);
    d.signal(Signal::SIGCONT);
    keeper.wait_keys(&[(A, "up"), (D, "up")]);
    d.wait_log(&["restart"]);
    keeper.process.wait_log(&["restart sent"]);
    let key = format!("/zerodb/proxy/{CLUSTER}/status/{D}");
    let expected = vec![
        format!("PUT {key}->lost"),
        format!("DELETE {key}"),
        format!("PUT {key}->ready"),
        format!("PUT {key}->up"),
    ];
    let deadline = Instant::now() + PATIENCE;
    loop {
        let seen: Vec<String> = lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            // The watch prints the listing first, then the changes.
            .filter(|l| l.contains(D) && (l.starts_with("PUT ") || l.starts_with("DELETE ")))
            .cloned()
            .collect();
        if seen == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "watch saw {seen:?}, expected {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn a_pushed_config_reaches_every_proxy() {
    let keeper = Keeper::start();
    let proxies: Vec<Process> = [A, B, C].iter().map(|p| keeper.proxy(p, &[])).collect();
    keeper.wait_keys(&[(A, "up"), (B, "up"), (C, "up")]);
    let (code, out, err) = keeper.push_config("pool_size = 128\n");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("version 2"), "{out}");
    for p in &proxies {
        p.wait_log(&["config version applied", "version=2"]);
    }
}

#[test]
fn an_identical_push_makes_no_version_and_an_empty_one_is_refused() {
    let mut keeper = Keeper::start();
    let (code, out, err) = keeper.push_config("pool_size = 128\n");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pushed config version 2"), "{out}");
    let (code, out, err) = keeper.push_config("pool_size = 128\n");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("unchanged: version 2"), "{out}");
    let (code, out, err) = keeper.push_config("");
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("empty"), "{err}");
    let config = keeper
        .get_json(&format!("/v1/clusters/{CLUSTER}/config"))
        .expect("the config");
    assert_eq!(config["version"], 2, "{config}");
    assert_eq!(config["base_size"], 16, "{config}");

    // The audit record has the push and the refusal (an unchanged push changes nothing
    // and records nothing), and a restarted keeper still shows them: the view starts
    // from the store's record.
    let data = keeper.data_dir.clone();
    keeper.process.signal(Signal::SIGTERM);
    assert_eq!(keeper.process.wait_exit(), 0);
    let keeper = Keeper::start_on(&data, "127.0.0.1:0");
    let (code, out, err) = keeper.cli(&["audit", "--cluster", CLUSTER]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().skip(2).take(3).collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["push_config", CLUSTER, "done"],
            ["push_config", CLUSTER, "refused"],
        ],
        "{out}"
    );
    assert!(out.contains("0 bytes: the config file is empty"), "{out}");
    let (code, out, err) = keeper.cli(&["cluster", "list"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!(
            "CLUSTER       READY  UP  LOST  CONFIG  GATE  DELETION  ROLLOUT\n{CLUSTER}  0      0   0     2       open  -         converged\n"
        )
    );
}

#[test]
fn a_change_that_expects_a_version_meanwhile_replaced_is_refused_with_exit_11() {
    let keeper = Keeper::start();
    let file = fresh_file("pool_size = 1\n");
    // Without --create, a push to a cluster the keeper does not know is refused.
    let (code, _, err) = keeper.cli(&["push-config", "--cluster", CLUSTER, "--file", &file]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("creates a cluster only when asked to"),
        "{err}"
    );
    let push = |expect: &str| {
        keeper.cli(&[
            "push-config",
            "--create",
            "--cluster",
            CLUSTER,
            "--file",
            &file,
            "--expect-version",
            expect,
        ])
    };
    // A cluster not created yet is at version 1, the initial config.
    let (code, out, err) = push("1");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("pushed config version 2"), "{out}");
    keeper.declare_hostgroup("hg", "a,b", "a");
    // Another operator pushed version 2 meanwhile: a push, a switch and a rollback that
    // expect version 1 are refused, and nothing changes.
    let (code, _, err) = push("1");
    assert_eq!(code, 11, "{err}");
    assert!(err.contains("is at config version 2, not 1"), "{err}");
    let (code, _, err) = keeper.cli(&[
        "switch",
        "--cluster",
        CLUSTER,
        "--hostgroup",
        "hg",
        "--from",
        "a",
        "--to",
        "b",
        "--expect-version",
        "1",
    ]);
    assert_eq!(code, 11, "{err}");
    let (code, _, err) = keeper.cli(&[
        "config",
        "rollback",
        "--cluster",
        CLUSTER,
        "--to",
        "2",
        "--expect-version",
        "1",
    ]);
    assert_eq!(code, 11, "{err}");
    let config = keeper
        .get_json(&format!("/v1/clusters/{CLUSTER}/config"))
        .expect("the config");
    assert_eq!(
        (config["version"].as_u64(), config["datasources"].clone()),
        (Some(2), serde_json::json!({}))
    );
    // Expecting the current version goes through.
    let (code, out, err) = keeper.cli(&[
        "switch",
        "--cluster",
        CLUSTER,
        "--hostgroup",
        "hg",
        "--from",
        "a",
        "--to",
        "b",
        "--expect-version",
        "2",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = keeper.cli(&["audit", "--cluster", CLUSTER]);
    assert_eq!(code, 0);
    assert_eq!(out.matches("refused").count(), 4, "{out}");
    assert!(
        out.contains("without --create: no cluster named test_cluster"),
        "{out}"
    );
    assert!(
        out.contains("replacing version 1: cluster test_cluster is at config version 2, not 1"),
        "{out}"
    );
}

#[test]
fn the_store_keeps_as_many_config_versions_and_audit_entries_as_configured() {
    let keeper = Keeper::start_with(
        &procs::fresh_dir("data"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--config-history", "2", "--audit-retention", "2"],
    );
    for n in 2..=4 {
        let (code, _, err) = keeper.push_config(&format!("pool = {n}\n"));
        assert_eq!(code, 0, "{err}");
    }
    let (code, out, err) = keeper.cli(&["config", "history", "--cluster", CLUSTER]);
    assert_eq!(code, 0, "{err}");
    let versions: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(versions, ["3", "4"], "{out}");
    // Version 2 is gone from the store: no rollback to it.
    let (code, _, err) = keeper.cli(&["config", "rollback", "--cluster", CLUSTER, "--to", "2"]);
    assert_eq!(code, 4, "{err}");
    // After a restart (the keeper's view of the audit record comes from the store), the
    // record holds the newest two entries: the last push and the refused rollback.
    let data = keeper.data_dir.clone();
    drop(keeper);
    let keeper = Keeper::start_with(
        &data,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--audit-retention", "2"],
    );
    let (code, out, err) = keeper.cli(&["audit"]);
    assert_eq!(code, 0, "{err}");
    let actions: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().skip(2).take(3).collect())
        .collect();
    assert_eq!(
        actions,
        [
            ["push_config", CLUSTER, "done"],
            ["rollback", CLUSTER, "refused"]
        ],
        "{out}"
    );
}

/// A file holding `text`, in a fresh directory; its path.
fn fresh_file(text: &str) -> String {
    let path = procs::fresh_dir("file").join("proxy.toml");
    std::fs::write(&path, text).expect("write");
    path.to_str().expect("utf-8").to_owned()
}

#[test]
fn config_history_get_diff_and_a_rollback_that_every_proxy_applies() {
    let keeper = Keeper::start();
    let proxies: Vec<Process> = [A, B, C].iter().map(|p| keeper.proxy(p, &[])).collect();
    keeper.wait_keys(&[(A, "up"), (B, "up"), (C, "up")]);
    let first = "pool_size = 128\nretries = 3\n";
    let second = "pool_size = 256\nretries = 3\n";
    for (file, version) in [(first, 2), (second, 3)] {
        let (code, _, err) = keeper.push_config(file);
        assert_eq!(code, 0, "{err}");
        for p in &proxies {
            p.wait_log(&["config version applied", &format!("version={version}")]);
        }
    }

    let (code, out, err) = keeper.cli(&["config", "history", "--cluster", CLUSTER]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "VERSION",
            "ID",
            "SIZE",
            "MADE",
            "BY",
            "BY",
            "AT",
            "DATASOURCES"
        ]
    );
    assert_eq!(
        (rows[1][0], rows[1][2], rows[1][3]),
        ("2", "28", "push_config"),
        "{out}"
    );
    assert_eq!((rows[2][0], rows[2][1]), ("3", "*"), "{out}");
    let (code, out, err) = keeper.cli(&["config", "get", "--cluster", CLUSTER, "--version", "2"]);
    assert_eq!((code, out.as_str()), (0, first), "{err}");
    let (code, out, err) = keeper.cli(&["config", "diff", "--cluster", CLUSTER]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!(
            "--- {CLUSTER} version 2\n+++ {CLUSTER} version 3\n@@ -1,2 +1,2 @@\n-pool_size = 128\n+pool_size = 256\n retries = 3\n"
        )
    );

    // Back to version 2's content, as version 4: every proxy applies it.
    let (code, out, err) = keeper.cli(&["config", "rollback", "--cluster", CLUSTER, "--to", "2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        format!("rolled {CLUSTER} back to version 2: it is config version 4")
    );
    let content = format!("sha256 {}", short_sha256(first.as_bytes()));
    for p in &proxies {
        p.wait_log(&["config version applied", "version=4", &content]);
    }
    let (code, out, _) = keeper.cli(&["config", "get", "--cluster", CLUSTER]);
    assert_eq!((code, out.as_str()), (0, first));
    // Again: nothing to change. A version the store does not hold: exit 4.
    let (code, out, err) = keeper.cli(&["config", "rollback", "--cluster", CLUSTER, "--to", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("unchanged"), "{out}");
    let (code, _, err) = keeper.cli(&["config", "rollback", "--cluster", CLUSTER, "--to", "9"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("no stored version 9"), "{err}");
    let (code, _, err) = keeper.cli(&["config", "get", "--cluster", CLUSTER, "--version", "1"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("empty initial config"), "{err}");
    let (code, out, _) = keeper.cli(&["audit", "--cluster", CLUSTER]);
    assert_eq!(code, 0);
    let actions: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().skip(2).take(3).collect())
        .collect();
    assert_eq!(
        actions,
        [
            ["push_config", CLUSTER, "done"],
            ["push_config", CLUSTER, "done"],
            ["rollback", CLUSTER, "done"],
            ["rollback", CLUSTER, "refused"],
        ],
        "{out}"
    );
    assert!(out.contains("to version 2 (as version 4)"), "{out}");
    assert!(
        out.contains("to version 9: cluster test_cluster has no stored version 9"),
        "{out}"
    );
}

#[test]
fn proxies_of_protocol_1_and_2_share_one_keeper_and_both_take_a_pushed_config() {
    let keeper = Keeper::start();
    let old = keeper.proxy(A, &["--protocol", "1"]);
    let new = keeper.proxy(B, &[]);
    keeper.wait_keys(&[(A, "up"), (B, "up")]);
    let (code, _, err) = keeper.push_config("pool_size = 128\n");
    assert_eq!(code, 0, "{err}");
    for p in [&old, &new] {
        p.wait_log(&["config version applied", "version=2"]);
    }
}

/// Runs `serve` with `key` on `data`, which must refuse to start; returns its log.
fn serve_refused(key: &str, data: &std::path::Path) -> String {
    let mut serve = Process::spawn(&[
        "serve",
        "--key-file",
        key,
        "--udp",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().expect("utf-8"),
    ]);
    let code = serve.wait_exit();
    let log = serve.log();
    assert_ne!(code, 0, "serve started: {log}");
    log
}

#[test]
fn serve_refuses_a_key_file_readable_by_others_and_says_to_chmod_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = procs::fresh_dir("open-key");
    let key = dir.join("open.key");
    std::fs::write(&key, "2a".repeat(32)).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod key");
    let key = key.to_str().expect("utf-8");
    let log = serve_refused(key, &dir.join("data"));
    assert!(log.contains(&format!("chmod 600 {key}")), "{log}");
    assert!(log.contains("0644"), "{log}");
}

#[test]
fn configs_are_sealed_at_rest_under_the_store_key_and_a_keeper_without_it_does_not_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = procs::fresh_dir("store-key");
    let store_key = dir.join("store.key");
    procs::write_private(&store_key, &format!("{}\n", "5c".repeat(32)));
    let store_key = store_key.to_str().expect("utf-8");
    // Not there yet: the keeper makes it, private.
    let data = dir.join("data");
    let keeper = Keeper::start_with(
        &data,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--store-key-file", store_key],
    );
    let (code, _, err) = keeper.push_config("db_password = \"hunter2-at-rest\"\n");
    assert_eq!(code, 0, "{err}");
    let path = format!("/v1/clusters/{CLUSTER}/config");
    let pushed = keeper.get_json(&path).expect("the config");
    drop(keeper);
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&data), 0o700, "the data directory");
    let file = data.join("zerokeeper.redb");
    assert_eq!(mode(&file), 0o600, "the store file");
    let bytes = std::fs::read(&file).expect("reads the store");
    assert!(
        !bytes.windows(b"hunter2".len()).any(|w| w == b"hunter2"),
        "the credential is in the store file"
    );

    // Without the store key the keeper refuses to start, and says what to give it.
    let log = serve_refused(procs::key_file().to_str().expect("utf-8"), &data);
    assert!(log.contains("--store-key-file"), "{log}");

    // With it, the config is there as pushed.
    let keeper = Keeper::start_with(
        &data,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--store-key-file", store_key],
    );
    assert_eq!(
        keeper.get_json(&path),
        Some(pushed),
        "the same version and digest"
    );
    let _proxy = keeper.proxy(A, &[]);
    keeper.wait_keys(&[(A, "up")]);
}

#[test]
fn a_push_creating_a_cluster_past_max_clusters_exits_10_and_says_the_registry_is_full() {
    let dir = procs::fresh_dir("full-registry");
    let config = dir.join("zk.toml");
    std::fs::write(&config, "max_clusters = 1\n").expect("write config");
    let file = dir.join("proxy.toml");
    std::fs::write(&file, "pool_size = 64\n").expect("write config");
    let keeper = Keeper::start_with(
        &dir.join("data"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--config", config.to_str().expect("utf-8")],
    );
    let file = file.to_str().expect("utf-8");
    let (code, _, err) = keeper.cli(&[
        "push-config",
        "--create",
        "--cluster",
        "first",
        "--file",
        file,
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = keeper.cli(&[
        "push-config",
        "--create",
        "--cluster",
        "second",
        "--file",
        file,
    ]);
    assert_eq!(code, 10, "{err}");
    assert!(err.contains("registry is full"), "{err}");
    assert!(err.contains("Nothing changed."), "{err}");
    let (code, _, err) = keeper.cli(&["status", "--cluster", "second", "-o", "keys"]);
    assert_eq!(code, 4, "{err}");
}

#[test]
fn a_flood_of_clusters_whose_proxies_died_leaves_room_for_a_new_real_one() {
    let dir = procs::fresh_dir("cluster-flood");
    let config = dir.join("zk.toml");
    std::fs::write(&config, "max_clusters = 2\n").expect("write config");
    let keeper = Keeper::start_with(
        &dir.join("data"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--config", config.to_str().expect("utf-8")],
    );
    // Two clusters whose only proxy dies while starting fill the registry.
    for (cluster, identity) in [("flood_a", A), ("flood_b", B)] {
        let mut p = keeper.proxy_in(cluster, identity, &["--crash-on-start"]);
        assert_ne!(p.wait_exit(), 0);
    }
    // A real cluster's proxy is refused while they hold the room, and keeps asking.
    let real = keeper.proxy_in("payments", C, &[]);
    keeper.process.wait_log(&["registry full"]);
    // Once the dead are deleted (ready_timeout) and their tombstones expire
    // (delete_after), their clusters are freed and the real proxy registers by itself.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (code, out, _) = keeper.cli(&["status", "--cluster", "payments", "-o", "keys"]);
        if code == 0 && out.contains(&format!("/zerodb/proxy/payments/status/{C}->up")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the real cluster never got room:\n{}",
            keeper.process.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let clusters: serde_json::Value = ureq::get(format!("{}/v1/clusters", keeper.http))
        .call()
        .expect("the keeper answers")
        .body_mut()
        .read_json()
        .expect("a cluster list");
    let names: Vec<&str> = clusters["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .filter_map(|c| c["cluster"].as_str())
        .collect();
    assert_eq!(names, ["payments"], "the dead clusters were freed");
    assert!(
        !real.log().contains("asked for a restart"),
        "{}",
        real.log()
    );
}

#[test]
fn a_cluster_that_declares_toml_refuses_a_file_that_is_not_toml_and_stores_nothing() {
    let dir = procs::fresh_dir("format");
    let config = dir.join("zk.toml");
    std::fs::write(
        &config,
        format!("[clusters.{CLUSTER}]\nconfig_format = \"toml\"\n"),
    )
    .expect("write config");
    let keeper = Keeper::start_with(
        &dir.join("data"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--config", config.to_str().expect("utf-8")],
    );
    let (code, _, err) = keeper.push_config("pool_size = 128\n[limits\nmax = 1\n");
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("not valid TOML, as its cluster declares"),
        "{err}"
    );
    assert_eq!(
        keeper.get_json(&format!("/v1/clusters/{CLUSTER}/config")),
        None,
        "nothing stored, not even the cluster"
    );
    let (code, out, err) = keeper.push_config("pool_size = 128\n[limits]\nmax = 1\n");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pushed config version 2"), "{out}");
    // Another cluster declares nothing: any bytes.
    let file = fresh_file("{ not toml");
    let (code, _, err) = keeper.cli(&[
        "push-config",
        "--create",
        "--cluster",
        "other",
        "--file",
        &file,
    ]);
    assert_eq!(code, 0, "{err}");
}
