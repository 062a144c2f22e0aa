//! A key rotation without a restart, through the real binaries (issue 13): the keeper
//! takes the new key beside the old one (`zerokeeper reload`), the proxies move one by
//! one (each re-reads its key file on SIGHUP), the listing shows each one's key id as it
//! moves, and none of them ever leaves `up`; retiring the old key then leaves a proxy
//! still on it unheard (its datagrams dropped as `unknown_key`) and nobody else.
//!
//! Every condition is waited for with a deadline.

mod procs;

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use procs::{Keeper, PATIENCE, Process, fresh_dir, write_private};
use serde_json::Value;
use zerokeeper::auth::Key;

const CLUSTER: &str = "payments";
const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";
const OLD: &str = "11223344556677889900aabbccddeeff11223344556677889900aabbccddeeff";
const NEW: &str = "ffeeddccbbaa00998877665544332211ffeeddccbbaa00998877665544332211";
const MOVED: [&str; 3] = ["10.25.0.11:3000", "10.25.0.12:3000", "10.25.0.13:3000"];
const LEFT_BEHIND: &str = "10.25.0.14:3000";

fn id_of(secret: &str) -> String {
    let bytes = zerokeeper::config::decode_hex(secret).expect("hex");
    Key::new(&bytes).expect("a key").id().to_string()
}

fn write_config(path: &Path, key_files: &[&str]) {
    let files: Vec<String> = key_files.iter().map(|f| format!("{f:?}")).collect();
    std::fs::write(
        path,
        format!("[clusters.{CLUSTER}]\nkey_files = [{}]\n", files.join(", ")),
    )
    .expect("config");
}

/// The cluster's proxies by identity, from the JSON listing.
fn listing(keeper: &Keeper) -> Vec<Value> {
    keeper
        .get_json(&format!("/v1/clusters/{CLUSTER}/proxies"))
        .and_then(|v| v["proxies"].as_array().cloned())
        .unwrap_or_default()
}

fn field(proxies: &[Value], proxy: &str, name: &str) -> Value {
    proxies
        .iter()
        .find(|p| p["proxy"] == proxy)
        .map(|p| p[name].clone())
        .unwrap_or(Value::Null)
}

fn wait_for(what: &str, keeper: &Keeper, mut check: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let proxies = listing(keeper);
        if check(&proxies) {
            return proxies;
        }
        assert!(
            Instant::now() < deadline,
            "waited in vain for {what}; listing: {proxies:?}\nkeeper log:\n{}",
            keeper.process.log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn reload(keeper: &Keeper, token_file: &Path) -> (i32, String, String) {
    let token_file = token_file.to_str().expect("utf-8");
    procs::cli_at(&keeper.http, None, &["reload", "--token-file", token_file])
}

/// Every proxy of `proxies` is `up` and still in the life and status it had in `first`.
fn never_left_up(first: &[Value], proxies: &[Value], names: &[&str]) -> bool {
    names.iter().all(|p| {
        field(proxies, p, "status") == "up"
            && field(proxies, p, "incarnation") == field(first, p, "incarnation")
            && field(proxies, p, "since") == field(first, p, "since")
    })
}

#[test]
fn proxies_move_to_a_new_key_one_by_one_without_leaving_up() {
    let dir = fresh_dir("rotation");
    write_private(&dir.join("old.key"), OLD);
    write_private(&dir.join("new.key"), NEW);
    write_private(&dir.join("tokens"), &format!("ops admin {TOKEN}\n"));
    write_private(&dir.join("ops.token"), TOKEN);
    let config = dir.join("keeper.toml");
    write_config(&config, &["old.key"]);
    let keeper = Keeper::start_with(
        &dir.join("data"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--admin-token-file",
            dir.join("tokens").to_str().expect("utf-8"),
        ],
    );
    // Each proxy has a key file of its own, holding the old key to begin with.
    let all: Vec<&str> = MOVED.iter().copied().chain([LEFT_BEHIND]).collect();
    let proxies: Vec<(&str, Process)> = all
        .iter()
        .enumerate()
        .map(|(i, &identity)| {
            let key_file = dir.join(format!("proxy-{i}.key"));
            write_private(&key_file, OLD);
            let process = procs::proxy_with_key(&keeper.udp, CLUSTER, identity, &key_file, &[]);
            (identity, process)
        })
        .collect();
    let (old, new) = (id_of(OLD), id_of(NEW));
    let first = wait_for("every proxy up under the old key", &keeper, |ps| {
        all.iter()
            .all(|p| field(ps, p, "status") == "up" && field(ps, p, "key_id") == old.as_str())
    });

    // The keeper takes the new key beside the old one.
    write_config(&config, &["old.key", "new.key"]);
    let (code, out, err) = reload(&keeper, &dir.join("ops.token"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("added: {new}")), "{out}");
    assert!(out.contains(&old) && out.contains(&new), "{out}");

    // One by one: the proxy's key file, then SIGHUP; the listing shows it moved.
    for (i, (identity, process)) in proxies.iter().take(MOVED.len()).enumerate() {
        write_private(&dir.join(format!("proxy-{i}.key")), NEW);
        process.signal(Signal::SIGHUP);
        let seen = wait_for(&format!("{identity} on the new key"), &keeper, |ps| {
            field(ps, identity, "key_id") == new.as_str()
        });
        assert!(never_left_up(&first, &seen, &all), "{seen:?}");
    }

    // `status -o wide` shows the same: the moved proxies on the new key, one on the old.
    let (code, out, err) = procs::cli_at(
        &keeper.http,
        None,
        &["status", "--cluster", CLUSTER, "-o", "wide"],
    );
    assert_eq!(code, 0, "{err}");
    for line in out.lines().filter(|l| l.contains("10.25.0.")) {
        let want = if line.contains(LEFT_BEHIND) {
            &old
        } else {
            &new
        };
        assert!(
            line.split_whitespace().any(|cell| cell == want),
            "{line}\n{out}"
        );
    }
    // A reload that cannot read a file changes nothing: a key file others may read.
    std::fs::write(dir.join("open.key"), NEW).expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("open.key"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
    }
    write_config(&config, &["new.key", "open.key"]);
    let (code, out, err) = reload(&keeper, &dir.join("ops.token"));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("nothing was reloaded") && err.contains("open.key"),
        "{err}"
    );
    let seen = listing(&keeper);
    assert!(never_left_up(&first, &seen, &all), "{seen:?}");

    // The old key retired: the proxy left on it goes unheard, the others stay up.
    write_config(&config, &["new.key"]);
    let (code, out, err) = reload(&keeper, &dir.join("ops.token"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("retired: {old}")), "{out}");
    let retired_at = zerokeeper::api::rfc3339_ms(
        u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_millis(),
        )
        .expect("fits"),
    );
    let seen = wait_for("the proxy left behind lost", &keeper, |ps| {
        field(ps, LEFT_BEHIND, "status") == "lost"
            // Every moved proxy heard since the old key was retired.
            && MOVED.iter().all(|p| {
                field(ps, p, "last_heartbeat")
                    .as_str()
                    .is_some_and(|t| t > retired_at.as_str())
            })
    });
    assert!(never_left_up(&first, &seen, &MOVED), "{seen:?}");
    let metrics = ureq::get(format!("{}/metrics", keeper.http))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("text");
    let unknown: f64 = metrics
        .lines()
        .find(|l| l.starts_with("zerokeeper_datagrams_dropped_total") && l.contains("unknown_key"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    assert!(
        unknown >= 1.0,
        "the old key's datagrams are dropped as unknown_key:\n{metrics}"
    );
}
