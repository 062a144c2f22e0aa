//! One test per row of the transition table in `spec/scenario.md`, on the keeper core.

mod common;

use std::time::Duration;

use common::{FakeProxy, Reply, Rig};
use zerokeeper::keeper::{AdminAction, AdminError, ChangeKind, Reason, Status};
use zerokeeper::wire::{AckStatus, ProxyStatus};

const P11: &str = "10.25.0.11:3000";
const P12: &str = "10.25.0.12:3000";

fn proxy(addr: &str) -> FakeProxy {
    FakeProxy::new(addr, 1_000, "127.0.0.1:40011")
}

fn acks(replies: &[Reply]) -> Vec<AckStatus> {
    replies
        .iter()
        .filter_map(|r| match r {
            Reply::Ack { status, .. } => Some(*status),
            _ => None,
        })
        .collect()
}

#[test]
fn a_ready_heartbeat_from_an_unknown_proxy_registers_it_as_ready() {
    let mut rig = Rig::new();
    let mut p = proxy(P11);
    let replies = rig.say(&mut p, ProxyStatus::Ready);
    assert_eq!(acks(&replies), vec![AckStatus::Ready]);
    assert_eq!(rig.status(P11), Some(Status::Ready));
}

#[test]
fn an_up_heartbeat_from_an_unknown_proxy_gets_restart_and_registers_nothing() {
    let mut rig = Rig::new();
    let mut p = proxy(P11);
    let replies = rig.say(&mut p, ProxyStatus::Up);
    assert_eq!(
        replies,
        vec![Reply::Restart {
            incarnation: 1_000,
            seq: 2
        }]
    );
    assert_eq!(rig.status(P11), None);
    assert!(rig.listing().is_empty());
}

#[test]
fn a_down_heartbeat_from_an_unknown_proxy_is_ignored() {
    let mut rig = Rig::new();
    let mut p = proxy(P11);
    let replies = rig.say(&mut p, ProxyStatus::Down);
    // Acknowledged as gone, so the proxy stops retransmitting; nothing is stored.
    assert_eq!(acks(&replies), vec![AckStatus::Gone]);
    assert!(rig.listing().is_empty());
    assert!(
        !rig.events
            .iter()
            .any(|e| matches!(&e.kind, ChangeKind::Status(_)))
    );
}

#[test]
fn a_ready_proxy_that_sends_up_becomes_up() {
    let mut rig = Rig::new();
    let mut p = proxy(P11);
    rig.say(&mut p, ProxyStatus::Ready);
    let replies = rig.say(&mut p, ProxyStatus::Up);
    assert_eq!(acks(&replies), vec![AckStatus::Up]);
    assert_eq!(rig.status(P11), Some(Status::Up));
}

#[test]
fn a_ready_proxy_silent_for_ready_timeout_is_deleted_exactly_then() {
    let mut rig = Rig::new();
    let mut p = proxy(P11);
    rig.say(&mut p, ProxyStatus::Ready);
    rig.advance(Duration::from_millis(1_999));
    assert_eq!(rig.status(P11), Some(Status::Ready));
    rig.advance(Duration::from_millis(1));
    assert_eq!(rig.status(P11), None);
    assert!(
        rig.events
            .iter()
            .any(|e| matches!(&e.kind, ChangeKind::Status(c) if c.reason == Reason::ReadyTimeout))
    );
}

#[test]
fn a_ready_proxy_that_sends_down_is_deleted_at_once() {
    let mut rig = Rig::new();
    let mut p = proxy(P11);
    rig.say(&mut p, ProxyStatus::Ready);
    let replies = rig.say(&mut p, ProxyStatus::Down);
    assert_eq!(acks(&replies), vec![AckStatus::Gone]);
    assert_eq!(rig.status(P11), None);
}

#[test]
fn an_up_proxy_silent_for_lost_after_becomes_lost_exactly_then() {
    let mut rig = Rig::new();
    let mut p = proxy(P11);
    rig.bring_up(&mut p);
    rig.advance(Duration::from_millis(299));
    assert_eq!(rig.status(P11), Some(Status::Up));
    rig.advance(Duration::from_millis(1));
    assert_eq!(rig.status(P11), Some(Status::Lost));
}

#[test]
fn a_lost_proxy_that_sends_up_goes_straight_back_to_up() {
    let mut rig = Rig::new();
    let mut p = proxy(P11);
    rig.bring_up(&mut p);
    rig.advance(Duration::from_millis(500));
    assert_eq!(rig.status(P11), Some(Status::Lost));
    let replies = rig.say(&mut p, ProxyStatus::Up);
    assert_eq!(acks(&replies), vec![AckStatus::Up]);
    assert_eq!(rig.status(P11), Some(Status::Up));
    assert!(!replies.iter().any(|r| matches!(r, Reply::Restart { .. })));
}

#[test]
fn a_lost_proxy_silent_for_delete_after_is_deleted_and_its_next_up_gets_restart() {
    let mut rig = Rig::new();
    let mut p = proxy(P11);
    rig.bring_up(&mut p);
    // delete_after counts from the last heartbeat.
    rig.advance(Duration::from_millis(2_999));
    assert_eq!(rig.status(P11), Some(Status::Lost));
    rig.advance(Duration::from_millis(1));
    assert_eq!(rig.status(P11), None);
    let replies = rig.say(&mut p, ProxyStatus::Up);
    assert!(matches!(
        replies.as_slice(),
        [Reply::Restart {
            incarnation: 1_000,
            ..
        }]
    ));
    assert_eq!(rig.status(P11), None);
}

#[test]
fn an_up_or_lost_proxy_that_sends_down_is_deleted_at_once() {
    let mut rig = Rig::new();
    let mut up = proxy(P11);
    let mut lost = FakeProxy::new(P12, 2_000, "127.0.0.1:40012");
    rig.bring_up(&mut up);
    rig.bring_up(&mut lost);
    rig.advance(Duration::from_millis(200));
    rig.say(&mut up, ProxyStatus::Up);
    rig.advance(Duration::from_millis(200));
    assert_eq!(rig.status(P12), Some(Status::Lost));
    assert_eq!(rig.status(P11), Some(Status::Up));
    assert_eq!(
        acks(&rig.say(&mut up, ProxyStatus::Down)),
        vec![AckStatus::Gone]
    );
    assert_eq!(
        acks(&rig.say(&mut lost, ProxyStatus::Down)),
        vec![AckStatus::Gone]
    );
    assert!(rig.listing().is_empty());
}

#[test]
fn a_ready_heartbeat_of_a_larger_incarnation_starts_a_new_life_in_ready() {
    for start in [Status::Ready, Status::Up, Status::Lost] {
        let mut rig = Rig::new();
        let mut old = proxy(P11);
        rig.say(&mut old, ProxyStatus::Ready);
        if start != Status::Ready {
            rig.say(&mut old, ProxyStatus::Up);
        }
        if start == Status::Lost {
            rig.advance(Duration::from_millis(400));
        }
        assert_eq!(rig.status(P11), Some(start));
        let mut new = old.restarted(old.incarnation + 1);
        let replies = rig.say(&mut new, ProxyStatus::Ready);
        assert_eq!(acks(&replies), vec![AckStatus::Ready], "from {start}");
        let info = rig.keeper.proxy(common::CLUSTER, P11).expect("listed");
        assert_eq!(
            (info.status, info.incarnation),
            (Status::Ready, new.incarnation)
        );
        // The old life's datagrams are stale from now on: they cannot move it.
        rig.say(&mut old, ProxyStatus::Up);
        assert_eq!(rig.status(P11), Some(Status::Ready), "from {start}");
    }
}

#[test]
fn an_unregister_deletes_the_proxy_and_does_not_block_the_others() {
    let mut rig = Rig::new();
    let mut a = proxy(P11);
    let mut b = FakeProxy::new(P12, 2_000, "127.0.0.1:40012");
    rig.bring_up(&mut a);
    rig.say(&mut b, ProxyStatus::Ready);
    assert!(rig.keeper.gate(common::CLUSTER).is_err());
    assert_eq!(acks(&rig.unregister(&mut b)), vec![AckStatus::Gone]);
    assert_eq!(rig.listing(), vec![(P11.to_owned(), Status::Up)]);
    assert_eq!(rig.keeper.gate(common::CLUSTER), Ok(()));
    assert!(
        rig.keeper
            .push_config(rig.now, common::CLUSTER, b"x".as_slice().into())
            .is_ok()
    );
}

#[test]
fn an_operator_remove_deletes_the_proxy_in_any_status() {
    for status in [Status::Ready, Status::Up, Status::Lost] {
        let mut rig = Rig::new();
        let mut p = proxy(P11);
        rig.say(&mut p, ProxyStatus::Ready);
        if status != Status::Ready {
            rig.say(&mut p, ProxyStatus::Up);
        }
        if status == Status::Lost {
            rig.advance(Duration::from_millis(400));
        }
        assert_eq!(
            rig.keeper.remove_proxy(rig.now, common::CLUSTER, P11),
            Ok(status)
        );
        assert_eq!(rig.status(P11), None);
        assert_eq!(
            rig.keeper.remove_proxy(rig.now, common::CLUSTER, P11),
            Err(AdminError::UnknownProxy {
                cluster: common::CLUSTER.into(),
                proxy: P11.into()
            })
        );
    }
}

#[test]
fn a_push_that_would_create_a_cluster_past_max_clusters_is_refused_as_registry_full() {
    let mut rig = Rig::with_config(zerokeeper::keeper::KeeperConfig {
        max_clusters: 1,
        ..common::config()
    });
    let mut p = proxy(P11);
    rig.bring_up(&mut p);
    let revision = rig.keeper.revision();
    let err = rig
        .keeper
        .push_config(rig.now, "second_cluster", b"x".as_slice().into())
        .expect_err("the registry holds max_clusters already");
    assert_eq!(
        err,
        AdminError::RegistryFull {
            cluster: "second_cluster".into(),
            clusters: 1,
            max_clusters: 1,
        }
    );
    assert!(err.to_string().ends_with("Nothing changed."), "{err}");
    // The one change is the refusal's audit record.
    assert_eq!(rig.keeper.revision(), revision + 1);
    let last = std::iter::from_fn(|| rig.keeper.poll_change())
        .last()
        .expect("a change");
    assert_eq!(last.revision, revision + 1);
    assert!(
        matches!(
            &last.kind,
            ChangeKind::Admin {
                action: AdminAction::Refused { cluster, action, .. },
                ..
            } if cluster == "second_cluster" && action == "push_config"
        ),
        "{last:?}"
    );
    let names: Vec<String> = rig.keeper.clusters().into_iter().map(|c| c.name).collect();
    assert_eq!(names, [common::CLUSTER]);
    assert_eq!(rig.keeper.cluster_count(), 1);
    // The cluster it holds still takes pushes.
    assert!(
        rig.keeper
            .push_config(rig.now, common::CLUSTER, b"x".as_slice().into())
            .is_ok()
    );
}

#[test]
fn a_rollback_makes_an_earlier_content_current_as_a_new_version_and_is_gated() {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    let mut rig = Rig::new();
    let mut p = proxy(P11);
    rig.bring_up(&mut p);
    let cluster = common::CLUSTER;
    let first: Arc<[u8]> = Arc::from(b"a = 1\n".as_slice());
    assert_eq!(
        rig.keeper.push_config(rig.now, cluster, first.clone()),
        Ok(2)
    );
    assert_eq!(
        rig.keeper
            .push_config(rig.now, cluster, Arc::from(b"a = 2\n".as_slice())),
        Ok(3)
    );
    let stored = Some((first.clone(), BTreeMap::new()));
    // Not an earlier version, or none the store holds: refused.
    for (to, content) in [(3, stored.clone()), (9, stored.clone()), (2, None)] {
        assert!(matches!(
            rig.keeper.rollback_config_by(rig.now, None, cluster, to, content),
            Err(AdminError::NoSuchVersion { version, current: 3, .. }) if version == to
        ));
    }
    let done = rig
        .keeper
        .rollback_config_by(rig.now, None, cluster, 2, stored.clone())
        .expect("rolls back");
    assert_eq!((done.version, done.changed), (4, true));
    let config = rig.keeper.config_of(cluster).expect("known");
    assert_eq!((config.version, &*config.base), (4, &*first));
    let made = std::iter::from_fn(|| rig.keeper.poll_change())
        .filter(|c| matches!(c.kind, ChangeKind::Config { .. }))
        .last()
        .expect("the config change");
    assert!(
        matches!(
            &made.kind,
            ChangeKind::Config {
                cause: zerokeeper::keeper::ConfigCause::Rollback { to: 2 },
                ..
            }
        ),
        "{made:?}"
    );
    // The same content again: nothing changes.
    let again = rig
        .keeper
        .rollback_config_by(rig.now, None, cluster, 2, stored.clone())
        .expect("nothing to do");
    assert_eq!((again.version, again.changed), (4, false));
    // With a proxy not up, the gate refuses it.
    let mut q = proxy(P12);
    rig.say(&mut q, ProxyStatus::Ready);
    assert!(matches!(
        rig.keeper.rollback_config_by(
            rig.now,
            None,
            cluster,
            3,
            Some((Arc::from(b"a = 2\n".as_slice()), BTreeMap::new()))
        ),
        Err(AdminError::GateClosed(_))
    ));
    assert_eq!(rig.keeper.config_of(cluster).expect("known").version, 4);
}
