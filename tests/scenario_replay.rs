//! The seed scenario replayed on the keeper and agent cores, in virtual time.
//!
//! `scenario::play` checks the listing and gate after every step, every checkpoint inside
//! a step (the "hidden moments"), and every operator action's outcome; these tests add
//! the order of events that listings alone cannot show.

use std::time::Duration;

use zerokeeper::keeper::{ChangeKind, Reason, Status};
use zerokeeper::scenario::harness::CoreWorld;
use zerokeeper::scenario::net::NetConfig;
use zerokeeper::scenario::{self, Gate, PROXIES, StepReport, Timing};

fn replay(timing: Timing, net: NetConfig, seed: u64) -> (CoreWorld, Vec<StepReport>) {
    let mut world = CoreWorld::new(timing, net, seed);
    let steps = scenario::seed(&timing);
    match scenario::play(&steps, &mut world, |_| {}) {
        Ok(reports) => (world, reports),
        Err(failure) => panic!("seed {seed}: {failure}"),
    }
}

/// The listings of `spec/scenario.md`, step by step.
fn spec_listing(step: u32) -> (Vec<(&'static str, &'static str)>, Option<Gate>) {
    let (a, b, c, d) = (PROXIES[0], PROXIES[1], PROXIES[2], PROXIES[3]);
    match step {
        1 => (vec![], None),
        2 => (
            vec![(a, "ready"), (b, "ready"), (c, "ready")],
            Some(Gate::Closed),
        ),
        3 | 5 | 7 | 8 | 10 => (vec![(a, "up"), (b, "up"), (c, "up")], Some(Gate::Open)),
        4 => (vec![(a, "up"), (b, "up"), (c, "lost")], Some(Gate::Closed)),
        6 => (
            vec![(a, "up"), (b, "up"), (c, "up"), (d, "ready")],
            Some(Gate::Closed),
        ),
        9 => (
            vec![(a, "up"), (b, "up"), (c, "up"), (d, "up")],
            Some(Gate::Open),
        ),
        11 | 13 => (vec![(a, "up"), (b, "up"), (d, "up")], Some(Gate::Open)),
        12 => (vec![(a, "up"), (b, "up"), (d, "lost")], Some(Gate::Closed)),
        _ => unreachable!("the seed has 13 steps"),
    }
}

fn assert_matches_spec(reports: &[StepReport]) {
    assert_eq!(reports.len(), 13);
    for report in reports {
        let (listing, gate) = spec_listing(report.number);
        let lines: Vec<String> = listing
            .iter()
            .map(|(p, s)| format!("/zerodb/proxy/test_cluster/status/{p}->{s}"))
            .collect();
        assert_eq!(report.lines, lines, "step {}", report.number);
        assert_eq!(report.gate, gate, "step {}", report.number);
    }
}

/// Keeper status changes of one proxy, in order: (from, to, reason, when).
fn changes(
    world: &CoreWorld,
    proxy: &str,
) -> Vec<(Option<Status>, Option<Status>, Reason, Duration)> {
    world
        .trace()
        .keeper
        .iter()
        .filter_map(|(at, e)| match &e.kind {
            ChangeKind::Status(c) if &*c.proxy == proxy => Some((c.from, c.to, c.reason, *at)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_seed_scenario_replays_with_the_listing_and_gate_of_the_spec_at_every_step() {
    let (_, reports) = replay(Timing::defaults(), NetConfig::perfect(), 1);
    assert_matches_spec(&reports);
}

#[test]
fn the_hidden_moments_between_the_steps_happen_in_order() {
    let timing = Timing::defaults();
    let (world, _) = replay(timing, NetConfig::perfect(), 1);
    let p14 = changes(&world, PROXIES[3]);
    let reasons: Vec<Reason> = p14.iter().map(|c| c.2).collect();
    use Reason::*;
    assert_eq!(
        reasons,
        vec![
            Registered,    // 6: .14 starts, ready
            ReadyTimeout,  // 7: it died; deleted after ready_timeout
            Registered,    // 8: started again, ready ...
            Down,          // 8: ... and deleted at once by its `down`
            Registered,    // 9: started again
            Heartbeat,     // 9: up
            Unregister,    // 10: offline, unregistered
            Registered,    // between 10 and 11: restarted, ready
            Heartbeat,     // between 10 and 11: up
            LostTimeout,   // 12: cut off, lost
            DeleteTimeout, // 13: deleted while cut off
            Registered,    // 13: told to restart, comes back ready
            Heartbeat,     // 13: and up
        ]
    );
    // Step 8: deleted well before ready_timeout.
    let (registered, down) = (p14[2].3, p14[3].3);
    assert!(
        down - registered < timing.ready_timeout / 4,
        "down took {:?}",
        down - registered
    );
    // Step 13: the Restart comes after the deletion and before the new registration.
    let restart_at = world
        .trace()
        .keeper
        .iter()
        .find_map(|(at, e)| {
            matches!(&e.kind, ChangeKind::RestartSent { proxy, .. } if &**proxy == PROXIES[3])
                .then_some(*at)
        })
        .expect("a restart was sent to .14");
    assert!(p14[10].3 < restart_at && restart_at <= p14[11].3);
    // Step 11: .13 was lost (blocking the gate) before the operator removed it.
    let p13: Vec<Reason> = changes(&world, PROXIES[2]).iter().map(|c| c.2).collect();
    assert_eq!(p13[p13.len() - 2..], [LostTimeout, Removed]);
    // .11 and .12 never left `up` once there.
    for p in &PROXIES[..2] {
        assert_eq!(
            changes(&world, p).len(),
            2,
            "{p} changed status more than ready -> up"
        );
    }
}

/// The replay over a network that loses 30 % of datagrams, duplicates 30 % and delays each
/// by up to 300 ms (so datagrams sent within 300 ms of each other are often reordered).
///
/// Timers: heartbeats every 1 s, `lost_after` 15 s, `ready_timeout` and `delete_after`
/// 120 s. A false `lost` needs 15 consecutive heartbeats of one proxy lost: 0.3^15 ≈
/// 1.4e-8 per window, about 2e-5 for a whole replay (≈ 1,600 heartbeat windows), so a
/// failure here is a bug, not bad luck. Each step may wait 30 intervals for anything that
/// needs round trips (registration is up to 4 datagrams, each lost 30 % of the time).
/// Measured: 0 failures in 2,000 seeds with 20 intervals of patience.
#[test]
fn the_seed_scenario_reaches_the_same_listings_over_a_lossy_duplicating_reordering_network() {
    let timing = Timing {
        lost_after: Duration::from_secs(15),
        ready_timeout: Duration::from_secs(120),
        delete_after: Duration::from_secs(120),
        patience: 30,
        ..Timing::defaults()
    };
    for seed in 1..=24 {
        let (world, reports) = replay(timing, NetConfig::hostile(), seed);
        assert_matches_spec(&reports);
        let net = world.net().stats();
        assert!(
            net.lost > 0 && net.duplicated > 0,
            "seed {seed}: the network was not hostile: {net:?}"
        );
        assert_eq!(world.keeper().stats().oversized_answers, 0);
    }
}

#[test]
fn a_replay_is_deterministic_for_a_seed() {
    let timing = Timing {
        lost_after: Duration::from_secs(15),
        patience: 30,
        ..Timing::defaults()
    };
    let digest = |seed| replay(timing, NetConfig::hostile(), seed).0.trace_digest();
    assert_eq!(digest(3), digest(3));
    assert_ne!(digest(3), digest(4));
}

#[test]
fn the_scenario_command_prints_the_thirteen_steps_of_the_spec() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zerokeeper"))
        .arg("scenario")
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected = String::new();
    for step in 1..=13 {
        let (listing, gate) = spec_listing(step);
        expected.push_str(&format!("step {step}\n"));
        for (p, s) in listing {
            expected.push_str(&format!("/zerodb/proxy/test_cluster/status/{p}->{s}\n"));
        }
        if let Some(g) = gate {
            expected.push_str(&format!("gate {g}\n"));
        }
    }
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}
