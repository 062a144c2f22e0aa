//! The persistent keeper core: what it asks to store, how it is rebuilt, what it holds
//! until durable, and mass-loss protection.

mod common;

use std::time::Duration;

use common::{CLUSTER, FakeProxy, Reply, Rig};
use zerokeeper::auth::Keyring;
use zerokeeper::keeper::{ChangeKind, Keeper, KeeperConfig, Status};
use zerokeeper::store::{MemoryStore, Store};
use zerokeeper::time::Instant;
use zerokeeper::wire::{AckStatus, ProxyStatus};

/// A persistent keeper on `store`, booted at `now` of a rig's clock.
fn boot(store: &mut MemoryStore, config: KeeperConfig) -> Rig {
    let snapshot = store.boot().expect("boots");
    let keeper = Keeper::restore(
        config,
        Keyring::with_default(common::key()),
        snapshot.epoch,
        [snapshot.epoch as u8; 32],
        Instant::ZERO,
        &snapshot.proxies,
        &snapshot.configs,
        snapshot.revision,
    )
    .expect("restores");
    let mut rig = Rig::new();
    rig.keeper = keeper;
    rig.takes_changes = false;
    rig
}

/// Commits what the keeper asked to store and tells it; returns how many changes.
fn commit(rig: &mut Rig, store: &mut MemoryStore) -> usize {
    let (mut changes, mut blobs) = (Vec::new(), Vec::new());
    let upto = rig.keeper.take_changes(&mut changes, &mut blobs);
    let stored: Vec<_> = changes
        .iter()
        .cloned()
        .map(|c| c.map_time(|t| t.as_nanos() / 1_000_000))
        .collect();
    store.commit(&stored, &blobs).expect("commits");
    rig.keeper.mark_durable(upto);
    let n = changes.len();
    rig.events.extend(changes);
    n
}

fn proxy(addr: &str, inc: u64) -> FakeProxy {
    FakeProxy::new(addr, inc, "127.0.0.1:40011")
}

#[test]
fn a_registration_is_acknowledged_only_once_it_is_durable() {
    let mut store = MemoryStore::new();
    let mut rig = boot(&mut store, common::config());
    let mut p = proxy("10.25.0.11:3000", 1_000);
    let replies = rig.say(&mut p, ProxyStatus::Ready);
    assert!(
        replies.is_empty(),
        "acknowledged before durable: {replies:?}"
    );
    assert_eq!(rig.status("10.25.0.11:3000"), Some(Status::Ready));
    assert_eq!(commit(&mut rig, &mut store), 1);
    let mut buf = vec![0u8; 1200];
    let t = rig
        .keeper
        .poll_transmit(&mut buf)
        .expect("the held Ack is released");
    let ack = zerokeeper::wire::open(&buf[..t.len], &common::key()).expect("authenticates");
    assert!(matches!(ack, zerokeeper::wire::Message::Ack(a) if a.status == AckStatus::Ready));
}

#[test]
fn steady_heartbeats_write_nothing() {
    let mut store = MemoryStore::new();
    let mut rig = boot(&mut store, common::config());
    let mut p = proxy("10.25.0.11:3000", 1_000);
    rig.say(&mut p, ProxyStatus::Ready);
    rig.say(&mut p, ProxyStatus::Up);
    assert_eq!(commit(&mut rig, &mut store), 2, "registration and up");
    let revision = store.revision();
    for _ in 0..1_000 {
        rig.advance(Duration::from_millis(100));
        rig.say(&mut p, ProxyStatus::Up);
        assert_eq!(commit(&mut rig, &mut store), 0);
    }
    assert_eq!(store.revision(), revision);
    assert_eq!(rig.keeper.stats().changes, 2);
}

#[test]
fn every_change_and_admin_action_is_asked_to_be_stored() {
    let mut store = MemoryStore::new();
    let mut rig = boot(&mut store, common::config());
    let mut a = proxy("10.25.0.11:3000", 1_000);
    let mut b = proxy("10.25.0.12:3000", 2_000);
    rig.bring_up(&mut a);
    rig.bring_up(&mut b);
    rig.keeper
        .push_config(rig.now, CLUSTER, b"pool = 1\n".as_slice().into())
        .expect("gate open");
    let datasources = ["a:1".to_owned(), "b:1".to_owned()];
    rig.keeper
        .set_hostgroup_by(rig.now, None, CLUSTER, "hg", &datasources, Some("a:1"))
        .expect("declared");
    rig.keeper
        .switch_datasource(rig.now, CLUSTER, "hg", "a:1", "b:1")
        .expect("gate open");
    rig.keeper
        .remove_proxy(rig.now, CLUSTER, "10.25.0.12:3000")
        .expect("listed");
    let (mut changes, mut blobs) = (Vec::new(), Vec::new());
    let upto = rig.keeper.take_changes(&mut changes, &mut blobs);
    let kinds: Vec<&str> = changes.iter().map(|c| c.kind.name()).collect();
    assert_eq!(
        kinds,
        [
            "status", "status", "status", "status", "config", "admin", "cluster", "admin",
            "config", "admin", "status", "admin"
        ]
    );
    // One revision per change, consecutive, and the content of both config versions
    // travels beside the stream for the store.
    let revisions: Vec<u64> = changes.iter().map(|c| c.revision).collect();
    assert_eq!(revisions, (1..=12).collect::<Vec<u64>>());
    assert_eq!(upto, 12);
    let versions: Vec<u64> = blobs.iter().map(|b| b.config.version).collect();
    assert_eq!(versions, [2, 3]);
}

#[test]
fn a_restarted_keeper_restarts_nobody_that_is_still_heartbeating_however_long_it_was_down() {
    let mut store = MemoryStore::new();
    let mut rig = boot(&mut store, common::config());
    let mut p = proxy("10.25.0.11:3000", 1_000);
    rig.bring_up(&mut p);
    rig.keeper
        .push_config(rig.now, CLUSTER, b"pool = 1\n".as_slice().into())
        .expect("gate open");
    commit(&mut rig, &mut store);
    // The keeper is down far longer than delete_after (3 s); the proxy keeps heartbeating
    // into the void. Then a new keeper boots from the store.
    let mut rig = boot(&mut store, common::config());
    assert_eq!(rig.status("10.25.0.11:3000"), Some(Status::Up));
    assert_eq!(rig.keeper.config_of(CLUSTER).expect("restored").version, 2);
    // Its token is from the old epoch: challenged, then counted. No Restart.
    let replies = rig.say(&mut p, ProxyStatus::Up);
    assert!(
        !replies.iter().any(|r| matches!(r, Reply::Restart { .. })),
        "{replies:?}"
    );
    for _ in 0..50 {
        rig.advance(Duration::from_millis(100));
        rig.say(&mut p, ProxyStatus::Up);
        commit(&mut rig, &mut store);
    }
    assert_eq!(rig.status("10.25.0.11:3000"), Some(Status::Up));
    assert!(!rig.events.iter().any(|e| matches!(
        e.kind,
        ChangeKind::RestartSent { .. } | ChangeKind::Status(_)
    )));
}

#[test]
fn a_restored_keeper_gives_every_proxy_a_fresh_window_from_its_start() {
    let mut store = MemoryStore::new();
    // Mass-loss protection off: two lost of three would pause deletions, and its
    // resumption gives fresh windows of its own (tested below).
    let config = KeeperConfig {
        mass_loss_min_proxies: 100,
        ..common::config()
    };
    let mut rig = boot(&mut store, config.clone());
    let (mut r, mut u, mut l) = (
        proxy("10.0.0.1:1", 1),
        proxy("10.0.0.2:1", 2),
        proxy("10.0.0.3:1", 3),
    );
    rig.say(&mut r, ProxyStatus::Ready);
    rig.bring_up(&mut u);
    rig.bring_up(&mut l);
    rig.advance(Duration::from_millis(200));
    rig.say(&mut u, ProxyStatus::Up);
    rig.say(&mut r, ProxyStatus::Ready);
    rig.advance(Duration::from_millis(200));
    assert_eq!(rig.status("10.0.0.3:1"), Some(Status::Lost));
    commit(&mut rig, &mut store);
    let mut rig = boot(&mut store, config);
    // up: lost after lost_after (300 ms) from the keeper's start; lost: deleted after
    // delete_after (3 s); ready: deleted after ready_timeout (2 s).
    rig.advance(Duration::from_millis(299));
    assert_eq!(rig.status("10.0.0.2:1"), Some(Status::Up));
    rig.advance(Duration::from_millis(1));
    assert_eq!(rig.status("10.0.0.2:1"), Some(Status::Lost));
    rig.advance(Duration::from_millis(1_699));
    assert_eq!(rig.status("10.0.0.1:1"), Some(Status::Ready));
    rig.advance(Duration::from_millis(1));
    assert_eq!(rig.status("10.0.0.1:1"), None);
    rig.advance(Duration::from_millis(999));
    assert_eq!(rig.status("10.0.0.3:1"), Some(Status::Lost));
    rig.advance(Duration::from_millis(1));
    assert_eq!(rig.status("10.0.0.3:1"), None);
}

fn five_up(rig: &mut Rig) -> Vec<FakeProxy> {
    let mut proxies: Vec<FakeProxy> = (1..=5)
        .map(|i| proxy(&format!("10.0.0.{i}:3306"), i))
        .collect();
    for p in &mut proxies {
        rig.bring_up(p);
    }
    proxies
}

#[test]
fn mass_loss_pauses_deletion_and_resumes_it_when_the_share_falls() {
    let mut rig = Rig::new();
    let mut proxies = five_up(&mut rig);
    // Three of five (60 % > 55 %) go silent; two keep heartbeating.
    for _ in 0..40 {
        rig.advance(Duration::from_millis(100));
        for p in &mut proxies[3..] {
            rig.say(p, ProxyStatus::Up);
        }
    }
    let lost = rig
        .listing()
        .iter()
        .filter(|(_, s)| *s == Status::Lost)
        .count();
    assert_eq!(lost, 3, "{:?}", rig.listing());
    assert!(rig.events.iter().any(|e| matches!(
        e.kind,
        ChangeKind::DeletionPaused {
            paused: true,
            lost: 3,
            total: 5,
            ..
        }
    )));
    assert!(rig.keeper.clusters()[0].deletion_paused);
    // Well past delete_after (3 s): nobody deleted while paused.
    assert_eq!(rig.listing().len(), 5);
    // One comes back: 2 of 5 lost (40 %). Deletion resumes, and the two whose delete
    // deadline passed long ago get a fresh window: their heartbeats may be in the same
    // burst as the one that ended the pause.
    rig.say(&mut proxies[0], ProxyStatus::Up);
    assert!(
        rig.events
            .iter()
            .any(|e| matches!(e.kind, ChangeKind::DeletionPaused { paused: false, .. }))
    );
    assert_eq!(rig.listing().len(), 5, "{:?}", rig.listing());
    rig.say(&mut proxies[1], ProxyStatus::Up);
    assert_eq!(rig.status("10.0.0.2:3306"), Some(Status::Up));
    // The one that stays silent is deleted a whole delete_after (3 s) after the pause
    // ended, not before.
    for _ in 0..29 {
        rig.advance(Duration::from_millis(100));
        for p in proxies.iter_mut().filter(|p| p.proxy != "10.0.0.3:3306") {
            rig.say(p, ProxyStatus::Up);
        }
    }
    assert_eq!(rig.status("10.0.0.3:3306"), Some(Status::Lost));
    for _ in 0..2 {
        rig.advance(Duration::from_millis(100));
        for p in proxies.iter_mut().filter(|p| p.proxy != "10.0.0.3:3306") {
            rig.say(p, ProxyStatus::Up);
        }
    }
    let listed: Vec<String> = rig.listing().into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        listed,
        [
            "10.0.0.1:3306",
            "10.0.0.2:3306",
            "10.0.0.4:3306",
            "10.0.0.5:3306"
        ]
    );
}

#[test]
fn a_minority_loss_or_a_small_cluster_is_not_protected() {
    // Two of five lost: deleted on time.
    let mut rig = Rig::new();
    let mut proxies = five_up(&mut rig);
    for _ in 0..40 {
        rig.advance(Duration::from_millis(100));
        for p in &mut proxies[2..] {
            rig.say(p, ProxyStatus::Up);
        }
    }
    assert_eq!(rig.listing().len(), 3);
    assert!(
        !rig.events
            .iter()
            .any(|e| matches!(e.kind, ChangeKind::DeletionPaused { .. }))
    );
    // Both of a cluster of two: below the minimum size, deleted on time.
    let mut rig = Rig::new();
    let (mut a, mut b) = (proxy("10.0.0.1:1", 1), proxy("10.0.0.2:1", 2));
    rig.bring_up(&mut a);
    rig.bring_up(&mut b);
    rig.advance(Duration::from_secs(4));
    assert!(rig.listing().is_empty());
}

#[test]
fn a_token_of_a_newer_keeper_epoch_than_the_stores_is_recorded_as_a_store_gone_back_in_time() {
    // A keeper of epoch 5 hands the proxy its token.
    let mut rig = Rig::with_config(common::config());
    rig.keeper = Keeper::new(
        common::config(),
        Keyring::with_default(common::key()),
        5,
        [1; 32],
        Instant::ZERO,
    )
    .expect("valid");
    let mut p = proxy("10.25.0.11:3000", 1_000);
    rig.bring_up(&mut p);
    // The data dir is copied back from a backup: the keeper boots at an older epoch.
    let mut store = MemoryStore::new();
    let mut rig2 = boot(&mut store, common::config());
    assert_eq!(rig2.keeper.epoch(), 1);
    rig2.say(&mut p, ProxyStatus::Up);
    rig2.say(&mut p, ProxyStatus::Up);
    commit(&mut rig2, &mut store);
    let rewound: Vec<u32> = rig2
        .events
        .iter()
        .filter_map(|e| match e.kind {
            ChangeKind::Rewound { seen_epoch } => Some(seen_epoch),
            _ => None,
        })
        .collect();
    assert_eq!(rewound, [5], "recorded once, with the epoch seen");
    // The store starts a new generation, and its next boot's epoch is past the one seen.
    let generation = store.generation();
    assert!(generation > 1, "generation {generation}");
    assert!(store.boot().expect("boots").epoch > 5);
}

#[test]
fn a_keeper_on_an_empty_store_adopts_the_live_proxies_it_finds_and_restarts_none() {
    let mut store = MemoryStore::new();
    let mut rig = boot(&mut store, common::config());
    // A fleet that was up behind another keeper: its heartbeats say `up`.
    let mut fleet: Vec<FakeProxy> = (1..=5)
        .map(|i| proxy(&format!("10.0.0.{i}:3306"), i))
        .collect();
    for p in &mut fleet {
        let replies = rig.say(p, ProxyStatus::Up);
        assert!(
            !replies.iter().any(|r| matches!(r, Reply::Restart { .. })),
            "{replies:?}"
        );
        commit(&mut rig, &mut store);
        assert_eq!(rig.status(&p.proxy), Some(Status::Up));
    }
    assert!(rig.events.iter().any(|e| matches!(
        &e.kind,
        ChangeKind::Status(c) if c.reason == zerokeeper::keeper::Reason::Adopted
    )));
    // After the window, an unknown `up` is restarted again, as the seed says.
    let window = common::config().lost_after * 3;
    rig.advance(window);
    let mut late = proxy("10.0.0.9:3306", 9);
    let replies = rig.say(&mut late, ProxyStatus::Up);
    assert!(
        replies.iter().any(|r| matches!(r, Reply::Restart { .. })),
        "{replies:?}"
    );
}

#[test]
fn an_ordinary_restart_does_not_adopt_and_a_deleted_proxy_is_restarted_even_while_adopting() {
    // A store that knows its fleet: an unknown `up` is restarted.
    let mut store = MemoryStore::new();
    let mut rig = boot(&mut store, common::config());
    let mut known = proxy("10.0.0.1:3306", 1);
    rig.say(&mut known, ProxyStatus::Ready);
    commit(&mut rig, &mut store);
    let mut rig = boot(&mut store, common::config());
    let mut stranger = proxy("10.0.0.2:3306", 2);
    let replies = rig.say(&mut stranger, ProxyStatus::Up);
    assert!(
        replies.iter().any(|r| matches!(r, Reply::Restart { .. })),
        "{replies:?}"
    );
    // On an empty store, a proxy the keeper itself deleted is restarted, adoption or not.
    let mut store = MemoryStore::new();
    let mut rig = boot(&mut store, common::config());
    let mut p = proxy("10.0.0.3:3306", 3);
    rig.say(&mut p, ProxyStatus::Up);
    commit(&mut rig, &mut store);
    assert_eq!(rig.status("10.0.0.3:3306"), Some(Status::Up));
    rig.keeper
        .remove_proxy(rig.now, CLUSTER, "10.0.0.3:3306")
        .expect("listed");
    commit(&mut rig, &mut store);
    let replies = rig.say(&mut p, ProxyStatus::Up);
    assert!(
        replies.iter().any(|r| matches!(r, Reply::Restart { .. })),
        "{replies:?}"
    );
}
