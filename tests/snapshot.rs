//! Backups without downtime through the real binary: `snapshot save` from a keeper that
//! keeps serving, `snapshot status` of the file, and `snapshot restore` into a new data
//! directory, from which a keeper starts with what the snapshot held and restarts no
//! proxy (not even one registered after the snapshot was taken).
//!
//! Every condition is waited for with a deadline.

mod procs;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use procs::{BIN, CLUSTER, Keeper, PATIENCE, fresh_dir, line};
use serde_json::Value;

const P1: &str = "10.25.0.11:3000";
const P2: &str = "10.25.0.12:3000";
const P3: &str = "10.25.0.13:3000";

/// Runs `zerokeeper ARGS` with no keeper address: (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn wait_up(keeper: &Keeper, up: &[&str]) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let keys = keeper.keys();
        if up.iter().all(|p| keys.contains(&line(p, "up"))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "waited for {up:?} up, saw {keys:?}\n{}",
            keeper.process.log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn config_body(keeper: &Keeper) -> String {
    let (code, out, err) = keeper.cli(&["config", "get", "--cluster", CLUSTER]);
    assert_eq!(code, 0, "config get: {err}");
    out
}

#[test]
fn a_snapshot_of_a_running_keeper_restores_into_a_keeper_that_restarts_nobody() {
    let dir = fresh_dir("snapshot");
    let keeper = Keeper::start_on(&dir.join("data"), "127.0.0.1:0");
    let p1 = keeper.proxy(P1, &[]);
    let p2 = keeper.proxy(P2, &[]);
    wait_up(&keeper, &[P1, P2]);
    let (code, _, err) = keeper.push_config("pool = 1\n");
    assert_eq!(code, 0, "{err}");
    let before = config_body(&keeper);
    let generation = keeper
        .get_json("/v1/store")
        .and_then(|v| v["generation"].as_u64())
        .expect("the store's generation");

    // The save: the keeper goes on serving (the proxies heartbeat throughout).
    let file = dir.join("backup.snapshot");
    let path = file.to_str().expect("utf-8");
    let (code, out, err) = keeper.cli(&["snapshot", "save", path]);
    assert_eq!(code, 0, "snapshot save: {out}{err}");
    assert!(
        out.starts_with(&format!("saved a snapshot of {} to {path}: ", keeper.http)),
        "{out}"
    );
    assert!(
        out.contains("2 proxies in 1 clusters"),
        "the snapshot holds the two proxies: {out}"
    );
    assert!(
        !dir.join("backup.snapshot.part").exists(),
        "the partial file is renamed"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file)
        .expect("saved")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "a snapshot holds credentials");
    // Saving over it is refused: a snapshot never overwrites a file.
    let (code, _, err) = keeper.cli(&["snapshot", "save", path]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("exists"), "{err}");

    // What happens after the snapshot: a third proxy, a new config version.
    let p3 = keeper.proxy(P3, &[]);
    wait_up(&keeper, &[P1, P2, P3]);
    let (code, _, err) = keeper.push_config("pool = 2\n");
    assert_eq!(code, 0, "{err}");

    // `status` verifies the file and says what it holds, as JSON too.
    let (code, out, err) = run(&["snapshot", "status", path, "-o", "json"]);
    assert_eq!(code, 0, "snapshot status: {err}");
    let summary: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(summary["proxies"], 2, "{summary}");
    assert_eq!(summary["clusters"], 1, "{summary}");
    assert_eq!(
        summary["generation"].as_u64(),
        Some(generation),
        "{summary}"
    );
    assert!(summary["config_versions"].as_u64() >= Some(1), "{summary}");
    let (code, out, _) = run(&["snapshot", "status", path]);
    assert_eq!(code, 0);
    assert!(out.contains("proxies:         2\n"), "{out}");

    // The keeper dies with its disk; the snapshot is restored into a new directory.
    let udp = keeper.udp.clone();
    keeper.process.signal(Signal::SIGKILL);
    drop(keeper);
    let restored = dir.join("restored");
    let target = restored.to_str().expect("utf-8");
    let (code, out, err) = run(&["snapshot", "restore", path, "--data-dir", target]);
    assert_eq!(code, 0, "snapshot restore: {err}");
    assert!(
        out.starts_with(&format!("restored {path} into {target}: ")),
        "{out}"
    );
    // Never over a store.
    let (code, _, err) = run(&["snapshot", "restore", path, "--data-dir", target]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("already holds a store"), "{err}");

    // A keeper on the restored directory, where the old one listened.
    let keeper = Keeper::start_on(&restored, &udp);
    keeper
        .process
        .wait_log(&["the first start of a store restored from a snapshot"]);
    wait_up(&keeper, &[P1, P2, P3]);
    // The config is the snapshot's; the store is a new history.
    assert_eq!(config_body(&keeper), before);
    let now = keeper
        .get_json("/v1/store")
        .and_then(|v| v["generation"].as_u64())
        .expect("the store's generation");
    assert!(
        now > generation,
        "a restored store starts a generation: {now} after {generation}"
    );
    // The proxy the snapshot does not know was adopted, and nobody was restarted.
    let log = keeper.process.log();
    assert!(log.contains("adopted as `up`"), "{log}");
    for (name, proxy) in [(P1, &p1), (P2, &p2), (P3, &p3)] {
        assert!(
            !proxy.log().contains("asked for a restart"),
            "{name} was restarted:\n{}",
            proxy.log()
        );
    }
    // A second start of the same store is an ordinary restart, not a restore.
    let udp = keeper.udp.clone();
    keeper.process.signal(Signal::SIGTERM);
    drop(keeper);
    let keeper = Keeper::start_on(&restored, &udp);
    wait_up(&keeper, &[P1, P2, P3]);
    assert!(
        !keeper.process.log().contains("restored from a snapshot"),
        "{}",
        keeper.process.log()
    );
}

#[test]
fn a_file_that_is_not_a_whole_snapshot_is_refused_and_nothing_is_restored() {
    let dir = fresh_dir("snapshot-bad");
    let keeper = Keeper::start();
    let file = dir.join("whole.snapshot");
    let (code, _, err) = keeper.cli(&["snapshot", "save", file.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    let bytes = std::fs::read(&file).expect("saved");

    let truncated = dir.join("truncated.snapshot");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let text = dir.join("text.snapshot");
    std::fs::write(&text, "not a snapshot\n".repeat(100)).expect("write");
    for bad in [&truncated, &text] {
        let path = bad.to_str().expect("utf-8");
        let (code, out, err) = run(&["snapshot", "status", path]);
        assert_eq!((code, out.as_str()), (6, ""), "{path}: {err}");
        assert!(err.starts_with("error: ") && err.contains(path), "{err}");
        let into = dir.join(format!(
            "into-{}",
            bad.file_name().unwrap().to_string_lossy()
        ));
        let (code, _, err) = run(&[
            "snapshot",
            "restore",
            path,
            "--data-dir",
            into.to_str().expect("utf-8"),
        ]);
        assert_eq!(code, 6, "{err}");
        assert!(
            !into.join("zerokeeper.redb").exists(),
            "nothing is restored from {path}"
        );
    }
}
