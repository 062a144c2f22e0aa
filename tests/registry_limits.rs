//! Limits that hold against a bad day, in the core and in virtual time: the restart
//! budget (no single event restarts a whole cluster at once) and the freeing of empty
//! clusters (a flood of clusters whose proxies died leaves room for a real one).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{FakeProxy, Reply, Rig};
use zerokeeper::auth::{KeyScope, Keyring};
use zerokeeper::keeper::{DropReason, Keeper, KeeperConfig, Outcome};
use zerokeeper::time::Instant;
use zerokeeper::wire::ProxyStatus;

fn restarted(replies: &[Reply]) -> bool {
    replies.iter().any(|r| matches!(r, Reply::Restart { .. }))
}

/// Twelve processes of one cluster that the keeper does not know (their registrations
/// were deleted and forgotten) send `up` every interval until they are told to restart.
/// Returns, per round of the budget, which of them were sent a `Restart` in it.
fn unknown_fleet_asks_to_be_restarted(rig: &mut Rig, count: usize) -> Vec<BTreeSet<usize>> {
    let interval = rig.keeper.config().heartbeat_interval;
    let round = rig.keeper.config().restart_round();
    let mut fleet: Vec<FakeProxy> = (0..count)
        .map(|i| FakeProxy::new(&format!("10.0.1.{i}:3000"), 7, "127.0.0.1:40100"))
        .collect();
    let mut told: Vec<Option<Instant>> = vec![None; count];
    let start = rig.now;
    let mut rounds: Vec<BTreeSet<usize>> = Vec::new();
    let mut round_began: Option<Instant> = None;
    for _tick in 0..200 {
        for (i, p) in fleet.iter_mut().enumerate() {
            // A process told to restart stops sending `up` (it comes back as a new life).
            if told[i].is_some() {
                continue;
            }
            let replies = rig.say(p, ProxyStatus::Up);
            if restarted(&replies) {
                told[i] = Some(rig.now);
                if round_began.is_none_or(|began| rig.now >= began + round) {
                    round_began = Some(rig.now);
                    rounds.push(BTreeSet::new());
                }
                rounds.last_mut().expect("a round").insert(i);
            } else {
                assert!(
                    replies.is_empty(),
                    "a proxy over the budget is sent nothing, got {replies:?}"
                );
            }
        }
        if told.iter().all(Option::is_some) {
            break;
        }
        rig.advance(interval);
    }
    assert!(
        told.iter().all(Option::is_some),
        "every proxy was told to restart within {:?}: {told:?}",
        rig.now - start
    );
    rounds
}

#[test]
fn a_cluster_of_unknown_proxies_is_restarted_a_quarter_per_round_never_all_at_once() {
    let mut rig = Rig::new();
    let config = rig.keeper.config().clone();
    assert_eq!(config.restart_permille, 250, "the documented default");
    assert_eq!(
        config.restart_round(),
        config.lost_after + 2 * config.heartbeat_interval
    );
    let rounds = unknown_fleet_asks_to_be_restarted(&mut rig, 12);
    // A round's allowance grows with what the cluster is known to hold (each asker gets
    // a tombstone), and is a quarter of it, rounded up: at most 3 of 12.
    for (n, sent) in rounds.iter().enumerate() {
        assert!(
            sent.len() <= config.restart_allowance(12),
            "round {n} restarted {sent:?}, more than a quarter of the cluster"
        );
    }
    assert!(
        rounds.len() >= 4,
        "12 proxies at 3 a round take at least 4 rounds: {rounds:?}"
    );
    assert!(rig.keeper.stats().dropped(DropReason::RestartDeferred) > 0);
    assert_eq!(rig.keeper.stats().outcome(Outcome::Restarted), 12);
}

#[test]
fn a_restart_whose_answer_was_lost_is_sent_again_in_its_round_without_spending_the_budget() {
    let mut rig = Rig::with_config(KeeperConfig {
        // One Restart per round for a cluster of up to 4.
        restart_permille: 250,
        ..common::config()
    });
    let interval = rig.keeper.config().heartbeat_interval;
    let mut a = FakeProxy::new("10.0.2.1:3000", 7, "127.0.0.1:40101");
    let mut b = FakeProxy::new("10.0.2.2:3000", 7, "127.0.0.1:40102");
    assert!(restarted(&rig.say(&mut a, ProxyStatus::Up)));
    assert!(rig.say(&mut b, ProxyStatus::Up).is_empty(), "b waits");
    // `a` did not get the answer and asks again an interval later: the same restart.
    rig.advance(interval);
    assert!(restarted(&rig.say(&mut a, ProxyStatus::Up)));
    assert!(rig.say(&mut b, ProxyStatus::Up).is_empty(), "b still waits");
    assert_eq!(rig.keeper.stats().dropped(DropReason::RestartDeferred), 2);
    // The next round is b's.
    rig.advance(rig.keeper.config().restart_round());
    assert!(restarted(&rig.say(&mut b, ProxyStatus::Up)));
}

#[test]
fn the_whole_share_restarts_a_cluster_in_one_round_and_a_bad_share_is_refused() {
    let mut rig = Rig::with_config(KeeperConfig {
        restart_permille: 1000,
        ..common::config()
    });
    let rounds = unknown_fleet_asks_to_be_restarted(&mut rig, 6);
    assert_eq!(rounds.len(), 1, "{rounds:?}");
    for bad in [0, 1001] {
        let config = KeeperConfig {
            restart_permille: bad,
            ..common::config()
        };
        assert!(config.validate().is_err(), "share {bad}‰ accepted");
    }
    let short_round = KeeperConfig {
        restart_round: Some(Duration::from_millis(10)),
        ..common::config()
    };
    assert!(short_round.validate().is_err(), "a round under an interval");
}

/// A proxy of `cluster` registers, and is never heard again.
fn registers_and_dies(rig: &mut Rig, cluster: &str, i: usize) {
    let mut p =
        FakeProxy::new(&format!("10.0.3.{i}:3000"), 1, "127.0.0.1:40103").in_cluster(cluster);
    let replies = rig.say(&mut p, ProxyStatus::Ready);
    assert!(
        replies.iter().any(|r| matches!(r, Reply::Ack { .. })),
        "{cluster} registers: {replies:?}"
    );
}

fn cluster_names(keeper: &Keeper) -> Vec<String> {
    keeper.clusters().into_iter().map(|c| c.name).collect()
}

#[test]
fn a_flood_of_clusters_whose_proxies_died_leaves_room_for_a_new_real_one() {
    let mut rig = Rig::with_config(KeeperConfig {
        max_clusters: 3,
        ..common::config()
    });
    for (i, cluster) in ["flood_a", "flood_b", "flood_c"].into_iter().enumerate() {
        registers_and_dies(&mut rig, cluster, i);
    }
    let mut real = FakeProxy::new("10.0.3.9:3000", 1, "127.0.0.1:40104").in_cluster("payments");
    assert!(rig.say(&mut real, ProxyStatus::Ready).is_empty());
    assert_eq!(rig.keeper.stats().dropped(DropReason::RegistryFull), 1);
    // The dead are deleted after ready_timeout; their tombstones last delete_after; then
    // nothing is left of their clusters, which are freed.
    let config = rig.keeper.config().clone();
    rig.advance(config.ready_timeout + config.heartbeat_interval);
    assert_eq!(rig.keeper.proxy_count(), 0);
    assert_eq!(
        rig.keeper.cluster_count(),
        3,
        "the tombstones hold them still"
    );
    rig.advance(config.delete_after + config.heartbeat_interval);
    assert_eq!(
        rig.keeper.cluster_count(),
        0,
        "{:?}",
        cluster_names(&rig.keeper)
    );
    let replies = rig.say(&mut real, ProxyStatus::Ready);
    assert!(
        replies.iter().any(|r| matches!(r, Reply::Ack { .. })),
        "the real cluster has room now: {replies:?}"
    );
    assert_eq!(cluster_names(&rig.keeper), ["payments"]);
}

#[test]
fn clusters_named_only_by_up_heartbeats_of_strangers_are_freed_with_their_tombstones() {
    let mut rig = Rig::with_config(KeeperConfig {
        max_clusters: 2,
        ..common::config()
    });
    for (i, cluster) in ["stranger_a", "stranger_b"].into_iter().enumerate() {
        let mut p =
            FakeProxy::new(&format!("10.0.4.{i}:3000"), 5, "127.0.0.1:40105").in_cluster(cluster);
        assert!(restarted(&rig.say(&mut p, ProxyStatus::Up)));
    }
    assert_eq!(rig.keeper.cluster_count(), 2);
    let delete_after = rig.keeper.config().delete_after;
    rig.advance(delete_after + Duration::from_millis(100));
    assert_eq!(rig.keeper.cluster_count(), 0);
    assert_eq!(rig.keeper.tombstone_count(), 0);
}

#[test]
fn a_cluster_with_a_pushed_config_or_keys_of_its_own_is_never_freed() {
    let mut keys = Keyring::with_default(common::key());
    keys.insert(common::other_key(), KeyScope::Cluster("declared".into()))
        .expect("a second key");
    let mut keeper = Keeper::new(
        KeeperConfig {
            max_clusters: 10,
            ..common::config()
        },
        keys,
        1,
        [9; 32],
        Instant::ZERO,
    )
    .expect("valid config");
    keeper
        .push_config(Instant::ZERO, "configured", Arc::from(&b"pool = 4\n"[..]))
        .expect("a push to a new cluster");
    let mut rig = Rig::with_keeper(keeper);
    let mut declared = FakeProxy::new("10.0.5.1:3000", 1, "127.0.0.1:40106").in_cluster("declared");
    declared.key = common::other_key();
    assert!(!rig.say(&mut declared, ProxyStatus::Ready).is_empty());
    registers_and_dies(&mut rig, "configured", 2);
    registers_and_dies(&mut rig, "ordinary", 3);
    let config = rig.keeper.config().clone();
    rig.advance(config.ready_timeout + config.delete_after + Duration::from_secs(1));
    assert_eq!(rig.keeper.proxy_count(), 0);
    assert_eq!(cluster_names(&rig.keeper), ["configured", "declared"]);
}
