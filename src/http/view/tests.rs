//! The view's rules, its memory bound, and its follower.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::state::Entry;
use super::*;
use crate::keeper::change::{AdminAction, Change, ChangeKind, ConfigCause, StatusChange};
use crate::keeper::seen::SeenWriter;
use crate::keeper::transition::Reason;
use crate::time::Instant;

const C: &str = "test_cluster";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("an address")
}

fn status(
    revision: u64,
    at: u64,
    slot: u32,
    proxy: &str,
    from: Option<Status>,
    to: Option<Status>,
) -> Arc<WallChange> {
    Arc::new(Change {
        revision,
        at,
        kind: ChangeKind::Status(StatusChange {
            cluster: Arc::from(C),
            proxy: Arc::from(proxy),
            slot,
            incarnation: 100 + u64::from(slot),
            from,
            to,
            reason: Reason::Heartbeat,
            last_heartbeat: Some(at),
            source: addr("127.0.0.1:4000"),
            config_version: 1,
        }),
    })
}

fn summary(version: u64) -> ConfigSummary {
    ConfigSummary {
        version,
        digest: [version as u8; 32],
        size: 10,
        base_size: 3,
        datasources: BTreeMap::from([("hg".to_owned(), "ds".to_owned())]),
    }
}

fn stored(proxy: &str, status: Status) -> StoredProxy {
    StoredProxy {
        cluster: C.to_owned(),
        proxy: proxy.to_owned(),
        incarnation: 5,
        status,
        since_unix_ms: Some(1_000),
        last_heartbeat_unix_ms: Some(2_000),
        source: Some(addr("[::1]:4000")),
        config_version: 1,
    }
}

fn view(seed: ViewSeed) -> (View, SeenWriter) {
    let seen = LastSeen::new();
    let writer = SeenWriter::new(seen.clone());
    (View::new(seed, seen, DriverClock::start()), writer)
}

#[test]
fn an_entry_of_the_view_takes_at_most_56_bytes() {
    assert!(
        std::mem::size_of::<Option<Entry>>() <= 56,
        "{} bytes",
        std::mem::size_of::<Option<Entry>>()
    );
    // An empty slot costs the same: the identity's niche holds the `None`.
    assert_eq!(
        std::mem::size_of::<Option<Entry>>(),
        std::mem::size_of::<Entry>()
    );
}

#[test]
fn a_seed_is_shown_as_the_store_recorded_it() {
    let seed = ViewSeed {
        generation: 2,
        revision: 7,
        proxies: vec![
            (1, stored("10.0.0.2:1", Status::Up)),
            (3, stored("10.0.0.1:1", Status::Lost)),
        ],
        clusters: vec![SeedCluster {
            name: Arc::from(C),
            config: summary(4),
            deletion_paused: true,
            settings: Default::default(),
        }],
        audit: Vec::new(),
    };
    let (view, _) = view(seed);
    let list = view.proxies(None).expect("live");
    assert_eq!((list.generation, list.revision), (2, 7));
    let names: Vec<&str> = list.proxies.iter().map(|p| p.proxy.as_str()).collect();
    assert_eq!(names, ["10.0.0.1:1", "10.0.0.2:1"]);
    let p = &list.proxies[0];
    assert_eq!(p.status, "lost");
    assert_eq!(p.since.as_deref(), Some("1970-01-01T00:00:01.000Z"));
    assert_eq!(
        p.last_heartbeat.as_deref(),
        Some("1970-01-01T00:00:02.000Z")
    );
    assert_eq!(p.source.as_deref(), Some("[::1]:4000"));
    assert!(p.deletion_paused);
    let cluster = view.cluster(C).expect("known");
    assert_eq!(
        (
            cluster.up,
            cluster.lost,
            cluster.config_version,
            cluster.gate.as_str()
        ),
        (1, 1, 4, "closed")
    );
    assert_eq!(view.config(C).expect("known").version, 4);
    assert_eq!(view.paused_clusters().expect("live"), [C]);
}

#[test]
fn what_the_store_did_not_record_is_shown_as_unknown() {
    let mut p = stored("10.0.0.1:1", Status::Up);
    p.since_unix_ms = None;
    p.last_heartbeat_unix_ms = None;
    p.source = None;
    let (view, _) = view(ViewSeed {
        proxies: vec![(1, p)],
        ..ViewSeed::default()
    });
    let p = view.proxy(C, "10.0.0.1:1").expect("known");
    assert_eq!(
        (
            p.since,
            p.since_age_ms,
            p.last_heartbeat,
            p.last_heartbeat_age_ms,
            p.source
        ),
        (None, None, None, None, None)
    );
    // A cluster the seed did not list starts at the initial config.
    assert_eq!(view.config(C).expect("known").version, 1);
}

#[test]
fn status_changes_upsert_count_and_delete() {
    let (view, _) = view(ViewSeed::default());
    view.apply(&[
        status(1, 1_000, 1, "10.0.0.1:1", None, Some(Status::Ready)),
        status(2, 1_100, 2, "10.0.0.2:1", None, Some(Status::Ready)),
        status(
            3,
            2_000,
            1,
            "10.0.0.1:1",
            Some(Status::Ready),
            Some(Status::Up),
        ),
    ]);
    assert_eq!(view.revision(), 3);
    let c = view.cluster(C).expect("made by a registration");
    assert_eq!(
        (c.ready, c.up, c.lost, c.gate.as_str()),
        (1, 1, 0, "closed")
    );
    let p = view.proxy(C, "10.0.0.1:1").expect("registered");
    assert_eq!(p.status, "up");
    assert_eq!(p.since.as_deref(), Some("1970-01-01T00:00:02.000Z"));
    assert_eq!(p.incarnation, 101);
    assert_eq!(p.source.as_deref(), Some("127.0.0.1:4000"));
    assert_eq!(
        p.last_heartbeat.as_deref(),
        Some("1970-01-01T00:00:02.000Z")
    );
    view.apply(&[status(4, 3_000, 2, "10.0.0.2:1", Some(Status::Ready), None)]);
    let c = view.cluster(C).expect("still known");
    assert_eq!((c.ready, c.up, c.gate.as_str()), (0, 1, "open"));
    assert!(matches!(
        view.proxy(C, "10.0.0.2:1"),
        Err(ViewError::Admin(AdminError::UnknownProxy { .. }))
    ));
    // Changes already applied are not applied twice.
    view.apply(&[status(2, 9_000, 2, "10.0.0.2:1", None, Some(Status::Ready))]);
    assert_eq!(view.proxies(Some(C)).expect("known").proxies.len(), 1);
}

#[test]
fn since_moves_only_when_the_status_does() {
    let (view, _) = view(ViewSeed::default());
    view.apply(&[
        status(1, 1_000, 1, "10.0.0.1:1", None, Some(Status::Up)),
        status(
            2,
            5_000,
            1,
            "10.0.0.1:1",
            Some(Status::Up),
            Some(Status::Up),
        ),
    ]);
    let p = view.proxy(C, "10.0.0.1:1").expect("registered");
    assert_eq!(p.since.as_deref(), Some("1970-01-01T00:00:01.000Z"));
    assert_eq!(
        p.last_heartbeat.as_deref(),
        Some("1970-01-01T00:00:05.000Z")
    );
}

#[test]
fn the_last_heartbeat_comes_from_the_cores_table_when_it_has_one() {
    let (view, mut seen) = view(ViewSeed {
        proxies: vec![(1, stored("10.0.0.1:1", Status::Up))],
        ..ViewSeed::default()
    });
    seen.set(1, Instant::from_millis(250), crate::auth::KeyIndex(0));
    let p = view.proxy(C, "10.0.0.1:1").expect("known");
    let clock = view.inner.clock;
    let want = unix_ms(clock.wall(Instant::from_millis(250)));
    assert_eq!(p.last_heartbeat, Some(rfc3339_ms(want)));
    // Once heard, the stored time is no longer kept.
    view.sweep();
    assert!(view.read().heard.is_empty());
}

#[test]
fn observed_config_and_deletion_paused_changes_update_what_they_name() {
    let (view, _) = view(ViewSeed::default());
    view.apply(&[
        status(1, 1_000, 1, "10.0.0.1:1", None, Some(Status::Up)),
        Arc::new(Change {
            revision: 2,
            at: 1_500,
            kind: ChangeKind::Observed {
                cluster: Arc::from(C),
                proxy: Arc::from("10.0.0.1:1"),
                slot: 1,
                source: addr("10.9.9.9:5"),
                config_version: u64::from(u32::MAX) + 7,
            },
        }),
        Arc::new(Change {
            revision: 3,
            at: 1_600,
            kind: ChangeKind::Config {
                cluster: Arc::from("fresh"),
                config: summary(2),
                cause: crate::keeper::change::ConfigCause::Push,
            },
        }),
        Arc::new(Change {
            revision: 4,
            at: 1_700,
            kind: ChangeKind::DeletionPaused {
                cluster: Arc::from(C),
                paused: true,
                lost: 2,
                total: 3,
            },
        }),
        Arc::new(Change {
            revision: 5,
            at: 1_800,
            kind: ChangeKind::Stall {
                length: Duration::from_secs(1),
                shifted: 1,
            },
        }),
    ]);
    assert_eq!(view.revision(), 5);
    let p = view.proxy(C, "10.0.0.1:1").expect("known");
    assert_eq!(p.source.as_deref(), Some("10.9.9.9:5"));
    assert_eq!(p.config_version, u64::from(u32::MAX) + 7);
    assert!(p.deletion_paused);
    let fresh = view.config("fresh").expect("made by a push");
    assert_eq!((fresh.version, fresh.base_size), (2, 3));
    assert_eq!(fresh.datasources["hg"], "ds");
    let names: Vec<String> = view
        .clusters()
        .expect("live")
        .clusters
        .into_iter()
        .map(|c| c.cluster)
        .collect();
    assert_eq!(names, ["fresh", C]);
}

#[test]
fn the_gate_names_every_blocker_sorted() {
    let (view, _) = view(ViewSeed::default());
    view.apply(&[
        status(1, 1, 1, "10.0.0.3:1", None, Some(Status::Ready)),
        status(2, 1, 2, "10.0.0.1:1", None, Some(Status::Up)),
        status(3, 1, 3, "10.0.0.2:1", None, Some(Status::Up)),
        status(4, 2, 3, "10.0.0.2:1", Some(Status::Up), Some(Status::Lost)),
    ]);
    let gate = view.gate(C).expect("known");
    assert!(!gate.open);
    let blockers: Vec<(&str, &str)> = gate
        .blockers
        .iter()
        .map(|b| (b.proxy.as_str(), b.status.as_str()))
        .collect();
    assert_eq!(blockers, [("10.0.0.2:1", "lost"), ("10.0.0.3:1", "ready")]);
}

#[test]
fn names_are_checked_before_anything_is_looked_up() {
    let (view, _) = view(ViewSeed::default());
    assert!(matches!(
        view.cluster("bad/name"),
        Err(ViewError::Admin(AdminError::Invalid(_)))
    ));
    assert!(matches!(
        view.proxy("nope", "not-an-address"),
        Err(ViewError::Admin(AdminError::Invalid(_)))
    ));
    assert_eq!(
        view.gate("nope"),
        Err(ViewError::Admin(AdminError::UnknownCluster("nope".into())))
    );
}

#[test]
fn a_slot_taken_over_by_another_proxy_drops_the_old_one() {
    let (view, _) = view(ViewSeed::default());
    view.apply(&[
        status(1, 1, 1, "10.0.0.1:1", None, Some(Status::Up)),
        status(2, 2, 1, "10.0.0.2:1", None, Some(Status::Ready)),
    ]);
    let list = view.proxies(Some(C)).expect("known");
    let names: Vec<&str> = list.proxies.iter().map(|p| p.proxy.as_str()).collect();
    assert_eq!(names, ["10.0.0.2:1"]);
    let c = view.cluster(C).expect("known");
    assert_eq!((c.ready, c.up), (1, 0));
}

#[tokio::test]
async fn the_follower_applies_what_the_hub_publishes_and_stops_with_it() {
    let (view, _) = view(ViewSeed::default());
    let hub = ChangeHub::new(0, 0, 100, Vec::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(view.follow(hub.clone(), async move {
        let _ = stopped.await;
    }));
    hub.publish(vec![
        (*status(1, 1, 1, "10.0.0.1:1", None, Some(Status::Up))).clone(),
    ]);
    assert!(
        tokio::time::timeout(Duration::from_secs(10), view.wait_for(1))
            .await
            .expect("applied in time")
    );
    assert_eq!(view.proxies(None).expect("live").proxies.len(), 1);
    hub.publish(vec![
        (*status(2, 2, 2, "10.0.0.2:1", None, Some(Status::Up))).clone(),
    ]);
    hub.close();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the follower ends")
        .expect("joined");
    // What was published before the close was applied; then the view is stopped.
    assert_eq!(view.revision(), 2);
    assert_eq!(view.clusters(), Err(ViewError::Stopped));
    assert!(!view.wait_for(3).await);
    drop(stop);
}

#[tokio::test]
async fn a_view_out_of_the_history_answers_behind_until_seeded_again() {
    let (view, _) = view(ViewSeed::default());
    let hub = ChangeHub::new(0, 0, 100, Vec::new());
    // A publisher's gap: the history restarts at revision 5, so the view at 0 is behind.
    hub.publish(vec![
        (*status(5, 1, 1, "10.0.0.1:1", None, Some(Status::Up))).clone(),
    ]);
    let task = tokio::spawn(view.follow(hub.clone(), std::future::pending()));
    let behind = tokio::time::timeout(Duration::from_secs(10), view.wait_for(u64::MAX))
        .await
        .expect("the follower gives up waiting");
    assert!(!behind);
    assert!(matches!(view.clusters(), Err(ViewError::Behind(_))));
    view.reseed(ViewSeed {
        generation: 0,
        revision: 5,
        ..ViewSeed::default()
    });
    hub.publish(vec![
        (*status(6, 1, 1, "10.0.0.1:1", None, Some(Status::Up))).clone(),
    ]);
    assert!(
        tokio::time::timeout(Duration::from_secs(10), view.wait_for(6))
            .await
            .expect("applied after the reseed")
    );
    assert_eq!(view.position(), (0, 6));
    task.abort();
}

#[tokio::test]
async fn a_view_follows_the_store_into_a_new_generation() {
    let (view, _) = view(ViewSeed::default());
    let hub = ChangeHub::new(0, 0, 100, Vec::new());
    let task = tokio::spawn(view.follow(hub.clone(), std::future::pending()));
    hub.publish(vec![
        (*status(1, 1, 1, "10.0.0.1:1", None, Some(Status::Up))).clone(),
    ]);
    hub.set_generation(7);
    hub.publish(vec![
        (*status(2, 1, 2, "10.0.0.2:1", None, Some(Status::Up))).clone(),
    ]);
    assert!(
        tokio::time::timeout(Duration::from_secs(10), view.wait_for(2))
            .await
            .expect("applied across the new generation")
    );
    assert_eq!(view.position(), (7, 2));
    assert_eq!(view.proxies(None).expect("live").proxies.len(), 2);
    task.abort();
}

#[test]
fn a_cluster_left_with_no_proxy_and_its_initial_config_is_forgotten_and_its_id_reused() {
    let (view, _) = view(ViewSeed::default());
    view.apply(&[
        status(1, 1_000, 1, "10.0.0.1:1", None, Some(Status::Ready)),
        status(2, 1_100, 1, "10.0.0.1:1", Some(Status::Ready), None),
    ]);
    assert!(matches!(
        view.cluster(C),
        Err(ViewError::Admin(AdminError::UnknownCluster(_)))
    ));
    assert!(view.clusters().expect("live").clusters.is_empty());
    // A cluster with a config version of its own stays, empty or not.
    view.apply(&[
        Arc::new(Change {
            revision: 3,
            at: 1_200,
            kind: ChangeKind::Config {
                cluster: Arc::from("configured"),
                config: summary(2),
                cause: ConfigCause::Push,
            },
        }),
        status(4, 1_300, 2, "10.0.0.2:1", None, Some(Status::Ready)),
        status(5, 1_400, 2, "10.0.0.2:1", Some(Status::Ready), None),
    ]);
    let names: Vec<String> = view
        .clusters()
        .expect("live")
        .clusters
        .into_iter()
        .map(|c| c.cluster)
        .collect();
    assert_eq!(names, ["configured"]);
    // The freed id serves the next new cluster; listings name each proxy's own cluster.
    view.apply(&[status(6, 1_500, 3, "10.0.0.3:1", None, Some(Status::Up))]);
    let listed = view.proxies(None).expect("live").proxies;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].cluster.as_str(), listed[0].status.as_str()),
        (C, "up")
    );
}

fn admin(revision: u64, at: u64, action: AdminAction, by: Option<&str>) -> Arc<WallChange> {
    Arc::new(Change {
        revision,
        at,
        kind: ChangeKind::Admin {
            action,
            by: by.map(Arc::from),
        },
    })
}

#[test]
fn the_audit_record_is_the_stored_one_then_every_admin_change_newest_kept() {
    let stored = |at: u64, json: &str| crate::store::AuditEntry {
        at_unix_ms: at,
        action: json.to_owned(),
    };
    let (view, _) = view(ViewSeed {
        revision: 3,
        audit: vec![
            stored(
                1_000,
                r#"{"action":"push_config","by":"alice","cluster":"test_cluster","size":7,"version":2}"#,
            ),
            stored(
                2_000,
                r#"{"action":"remove","cluster":"other","proxy":"10.0.0.9:1","status":"lost"}"#,
            ),
        ],
        ..ViewSeed::default()
    });
    view.apply(&[
        status(4, 2_500, 1, "10.0.0.1:1", None, Some(Status::Ready)),
        admin(
            5,
            3_000,
            AdminAction::Refused {
                cluster: C.to_owned(),
                action: "push_config".to_owned(),
                asked: "9 bytes".to_owned(),
                reason: "gate closed for cluster test_cluster: 10.0.0.1:1 is ready".to_owned(),
            },
            Some("bob"),
        ),
    ]);
    let all = |limit| AuditQuery {
        limit,
        ..AuditQuery::default()
    };
    let list = view.audit(&all(100)).expect("live");
    assert_eq!((list.revision, list.more), (5, false));
    let rows: Vec<(&str, Option<&str>, &str, &str, &str)> = list
        .entries
        .iter()
        .map(|e| {
            (
                e.at.as_str(),
                e.by.as_deref(),
                e.action.as_str(),
                e.cluster.as_str(),
                e.result.as_str(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                "1970-01-01T00:00:01.000Z",
                Some("alice"),
                "push_config",
                C,
                "done"
            ),
            ("1970-01-01T00:00:02.000Z", None, "remove", "other", "done"),
            (
                "1970-01-01T00:00:03.000Z",
                Some("bob"),
                "push_config",
                C,
                "refused"
            ),
        ]
    );
    assert_eq!(list.entries[0].details["version"], 2);
    assert_eq!(list.entries[2].details["asked"], "9 bytes");
    assert_eq!(
        list.entries[2].details["reason"],
        "gate closed for cluster test_cluster: 10.0.0.1:1 is ready"
    );
    // Filters, and the newest first when the limit cuts.
    let of = |cluster: Option<&str>, by: Option<&str>, limit| {
        let list = view
            .audit(&AuditQuery {
                cluster: cluster.map(str::to_owned),
                by: by.map(str::to_owned),
                action: None,
                limit,
            })
            .expect("live");
        let ats: Vec<String> = list.entries.iter().map(|e| e.at.clone()).collect();
        (ats, list.more)
    };
    let at = |s: u64| format!("1970-01-01T00:00:0{s}.000Z");
    assert_eq!(of(Some(C), None, 100), (vec![at(1), at(3)], false));
    assert_eq!(of(None, Some("bob"), 100), (vec![at(3)], false));
    assert_eq!(of(None, None, 2), (vec![at(2), at(3)], true));
    assert_eq!(of(Some("nobody"), None, 100), (vec![], false));
    let removes = view
        .audit(&AuditQuery {
            action: Some("remove".to_owned()),
            ..all(100)
        })
        .expect("live");
    assert_eq!(removes.entries.len(), 1);
    assert_eq!(removes.entries[0].cluster, "other");
    assert!(matches!(
        view.audit(&AuditQuery {
            cluster: Some("no/such".to_owned()),
            ..all(1)
        }),
        Err(ViewError::Admin(AdminError::Invalid(_)))
    ));
    // A reseed without a record keeps the one the view holds.
    view.reseed(ViewSeed {
        revision: 9,
        ..ViewSeed::default()
    });
    assert_eq!(view.audit(&all(100)).expect("live").entries.len(), 3);
}

#[test]
fn the_view_keeps_the_newest_entries_of_the_audit_record() {
    let (view, _) = view(ViewSeed::default());
    let push = |version| AdminAction::PushConfig {
        cluster: C.to_owned(),
        version,
        size: 1,
    };
    let changes: Vec<Arc<WallChange>> = (1..=audit::KEPT as u64 + 5)
        .map(|r| admin(r, r, push(r), None))
        .collect();
    view.apply(&changes);
    let list = view
        .audit(&AuditQuery {
            limit: audit::MAX_LIMIT,
            ..AuditQuery::default()
        })
        .expect("live");
    assert_eq!(list.entries.len(), audit::KEPT);
    assert_eq!(list.entries[0].details["version"], 6);
    assert!(!list.more);
}
