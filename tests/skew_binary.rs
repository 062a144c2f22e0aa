//! Clock skew through the real binary: a proxy whose former life ran on a host clock one
//! hour fast (so its incarnation, taken from the wall clock, is an hour larger) died; the
//! new process, on a correct clock, has the smaller incarnation. It must not be told it
//! is superseded by the dead life, and must be `up` within `lost_after` and one interval
//! of the old life's last heartbeat.

mod procs;

use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use procs::{CLUSTER, Keeper, PATIENCE};
use serde_json::Value;

const PROXY: &str = "10.25.0.31:3000";
/// `procs::TIMING`.
const INTERVAL: Duration = Duration::from_millis(100);
const LOST_AFTER: Duration = Duration::from_millis(600);

/// The registry's record of `PROXY`, if it holds one.
fn record(keeper: &Keeper) -> Option<Value> {
    keeper.get_json(&format!("/v1/clusters/{CLUSTER}/proxies/{PROXY}"))
}

/// Waits until the record satisfies `want`; returns it.
fn wait_record(keeper: &Keeper, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(r) = record(keeper).filter(|r| want(r)) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "waited for {what}, the record is {:?}\n{}",
            record(keeper),
            keeper.process.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn time(record: &Value, field: &str) -> SystemTime {
    let text = record[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {record}"));
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{field} {text:?}: {e}"))
}

#[test]
fn a_new_process_after_a_dead_life_with_a_clock_an_hour_fast_is_up_within_lost_after_and_an_interval()
 {
    let keeper = Keeper::start();
    let fast = keeper.proxy(PROXY, &["--clock-ahead", "1h"]);
    let old = wait_record(&keeper, "the fast life up", |r| r["status"] == "up");
    let old_incarnation = old["incarnation"].as_u64().expect("an incarnation");
    fast.signal(Signal::SIGKILL);
    drop(fast);
    // The registry still holds the dead life: its last heartbeat is the last one heard.
    let last_heard = time(
        &record(&keeper).expect("still registered"),
        "last_heartbeat",
    );

    let mut new = keeper.proxy(PROXY, &[]);
    let up = wait_record(&keeper, "the new life up", |r| {
        r["status"] == "up" && r["incarnation"].as_u64() != Some(old_incarnation)
    });
    let incarnation = up["incarnation"].as_u64().expect("an incarnation");
    assert!(
        incarnation + 3_000_000_000 < old_incarnation,
        "the new life's incarnation {incarnation} is about an hour smaller than {old_incarnation}"
    );
    assert!(
        new.child.try_wait().expect("waitable").is_none(),
        "the new process exited:\n{}",
        new.log()
    );
    assert!(
        !new.log().contains("superseded"),
        "the new process was told a dead life supersedes it:\n{}",
        new.log()
    );
    // In the keeper's own clock: from the dead life's last heartbeat to the new life
    // `up` (registered as a new incarnation once the old one was lost, config pulled,
    // first `up` heartbeat).
    let took = time(&up, "since")
        .duration_since(last_heard)
        .unwrap_or_default();
    eprintln!("the new life was up {took:?} after the dead life's last heartbeat");
    assert!(
        took <= LOST_AFTER + INTERVAL + Duration::from_millis(400),
        "up {took:?} after the dead life's last heartbeat: more than lost_after + an interval"
    );
    let keeper_log = keeper.process.log();
    assert!(!keeper_log.contains("restart sent"), "{keeper_log}");
    new.signal(Signal::SIGTERM);
    assert_eq!(new.wait_exit(), 0, "{}", new.log());
}
