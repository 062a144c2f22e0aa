//! The keeper's own faults never hurt a proxy: time in which the keeper did not run
//! counts against nobody (keeper time), yet a proxy that really died is still caught.

mod common;

use std::time::Duration;

use common::{CLUSTER, FakeProxy, Reply, Rig};
use zerokeeper::keeper::{ChangeKind, KeeperConfig, Status};
use zerokeeper::wire::ProxyStatus;

fn proxies(n: usize) -> Vec<FakeProxy> {
    (1..=n)
        .map(|i| {
            FakeProxy::new(
                &format!("10.25.0.{i}:3000"),
                i as u64 * 1_000,
                &format!("127.0.0.1:{}", 40_000 + i),
            )
        })
        .collect()
}

/// Runs `d` of normal time in heartbeat intervals, with every proxy in `live` heartbeating.
fn run(rig: &mut Rig, fleet: &mut [FakeProxy], live: &[usize], d: Duration) {
    let interval = rig.keeper.config().heartbeat_interval;
    let end = rig.now + d;
    while rig.now < end {
        rig.advance(interval);
        for &i in live {
            rig.say(&mut fleet[i], ProxyStatus::Up);
        }
    }
}

fn status_changes(rig: &Rig) -> Vec<String> {
    rig.events
        .iter()
        .filter_map(|e| match &e.kind {
            ChangeKind::Status(c) => Some(format!("{} {:?}->{:?}", c.proxy, c.from, c.to)),
            ChangeKind::RestartSent { proxy, .. } => Some(format!("{proxy} restart")),
            _ => None,
        })
        .collect()
}

fn stalls(rig: &Rig) -> Vec<Duration> {
    rig.events
        .iter()
        .filter_map(|e| match e.kind {
            ChangeKind::Stall { length, .. } => Some(length),
            _ => None,
        })
        .collect()
}

#[test]
fn a_stall_of_twice_delete_after_with_heartbeats_queued_changes_nobody() {
    let mut rig = Rig::new();
    let mut fleet = proxies(3);
    for p in &mut fleet {
        rig.bring_up(p);
    }
    run(&mut rig, &mut fleet, &[0, 1, 2], Duration::from_secs(1));
    rig.events.clear();
    let delete_after = rig.keeper.config().delete_after;
    rig.stall(delete_after * 2);
    // What queued in the socket while the keeper did not run: every proxy kept sending,
    // with the tokens it had before the stall. The driver reads them before any timer.
    let mut queued = Vec::new();
    for (i, p) in fleet.iter_mut().enumerate() {
        for _ in 0..60 {
            queued.push((i, p.heartbeat(ProxyStatus::Up)));
        }
    }
    for (i, bytes) in queued {
        let replies = rig.deliver(&mut fleet[i], &bytes);
        assert!(
            !replies.iter().any(|r| matches!(r, Reply::Restart { .. })),
            "{replies:?}"
        );
    }
    run(&mut rig, &mut fleet, &[0, 1, 2], Duration::from_secs(10));
    assert_eq!(status_changes(&rig), Vec::<String>::new());
    assert_eq!(stalls(&rig), [delete_after * 2]);
    assert_eq!(rig.keeper.stats().stalls, 1);
    assert!(rig.listing().iter().all(|(_, s)| *s == Status::Up));
    assert!(rig.keeper.gate(CLUSTER).is_ok());
}

#[test]
fn a_stall_changes_nobody_even_when_the_timers_are_handled_before_the_queued_heartbeats() {
    let mut rig = Rig::new();
    let mut fleet = proxies(3);
    for p in &mut fleet {
        rig.bring_up(p);
    }
    rig.events.clear();
    let delete_after = rig.keeper.config().delete_after;
    rig.stall(delete_after * 2);
    let now = rig.now;
    rig.keeper.handle_timeout(now);
    run(&mut rig, &mut fleet, &[0, 1, 2], Duration::from_secs(5));
    assert_eq!(status_changes(&rig), Vec::<String>::new());
    assert!(rig.keeper.gate(CLUSTER).is_ok());
}

#[test]
fn after_a_stall_only_a_dead_proxy_is_lost_within_lost_after_of_keeper_time() {
    let mut rig = Rig::new();
    let mut fleet = proxies(3);
    for p in &mut fleet {
        rig.bring_up(p);
    }
    // .3 dies; the keeper then stalls for 6 s with nothing queued.
    run(&mut rig, &mut fleet, &[0, 1], Duration::from_millis(100));
    let last_heard = rig.keeper.proxy(CLUSTER, "10.25.0.3:3000").expect("listed");
    let lost_after = rig.keeper.config().lost_after;
    rig.events.clear();
    let stall = Duration::from_secs(6);
    rig.stall(stall);
    let stalled_at = rig.now;
    // It is lost when keeper time reaches its deadline: lost_after after its last
    // heartbeat, plus the stall, in real time. Not a moment before.
    let mut lost_at = None;
    for _ in 0..100 {
        run(&mut rig, &mut fleet, &[0, 1], Duration::from_millis(10));
        if lost_at.is_none() && rig.status("10.25.0.3:3000") == Some(Status::Lost) {
            lost_at = Some(rig.keeper.stalled());
            break;
        }
    }
    assert!(lost_at.is_some(), "{:?}", rig.listing());
    assert_eq!(rig.keeper.stalled(), stall);
    let keeper_deadline = last_heard.last_heard + lost_after;
    // Keeper time now = real time - stall; the mark came within one heartbeat interval
    // of the deadline.
    let keeper_now =
        zerokeeper::time::Instant::from_nanos(rig.now.as_nanos() - stall.as_nanos() as u64);
    assert!(keeper_now >= keeper_deadline, "marked lost early");
    assert!(
        keeper_now - keeper_deadline <= rig.keeper.config().heartbeat_interval,
        "marked lost late: {:?}",
        keeper_now - keeper_deadline
    );
    assert!(rig.now > stalled_at);
    assert_eq!(
        status_changes(&rig),
        ["10.25.0.3:3000 Some(Up)->Some(Lost)"]
    );
}

#[test]
fn repeated_stalls_cannot_hide_a_dead_proxy() {
    let config = KeeperConfig {
        heartbeat_interval: Duration::from_secs(1),
        lost_after: Duration::from_secs(3),
        ready_timeout: Duration::from_secs(60),
        delete_after: Duration::from_secs(60),
        ..KeeperConfig::default()
    };
    let mut rig = Rig::with_config(config);
    let mut fleet = proxies(2);
    for p in &mut fleet {
        rig.bring_up(p);
    }
    rig.events.clear();
    // .2 is dead; every 2 s the keeper stalls for 1 s.
    for _ in 0..10 {
        run(&mut rig, &mut fleet, &[0], Duration::from_secs(1));
        rig.stall(Duration::from_secs(1));
        let now = rig.now;
        rig.keeper.handle_timeout(now);
    }
    assert_eq!(rig.status("10.25.0.2:3000"), Some(Status::Lost));
    assert_eq!(rig.status("10.25.0.1:3000"), Some(Status::Up));
    assert!(stalls(&rig).len() >= 2);
}

#[test]
fn lateness_within_the_slop_is_no_stall() {
    let mut rig = Rig::new();
    let mut fleet = proxies(1);
    rig.bring_up(&mut fleet[0]);
    let slop = rig.keeper.config().stall_slop;
    rig.stall(slop);
    let now = rig.now;
    rig.keeper.handle_timeout(now);
    assert!(stalls(&rig).is_empty());
    assert_eq!(rig.keeper.stalled(), Duration::ZERO);
}

#[test]
fn a_registered_keeper_asks_to_be_woken_at_least_every_half_interval() {
    let mut rig = Rig::new();
    assert_eq!(rig.keeper.poll_timeout(), None);
    let mut fleet = proxies(1);
    rig.bring_up(&mut fleet[0]);
    let half = rig.keeper.config().heartbeat_interval / 2;
    let wake = rig.keeper.poll_timeout().expect("a proxy is registered");
    assert!(wake <= rig.now + half);
}
