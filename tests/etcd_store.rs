//! The etcd store, `EtcdStore`, against a real etcd that each test starts on loopback
//! ports with a data dir of its own: it behaves as the `MemoryStore` for the same
//! changes, writes the seed's status keys (as `etcdctl` shows them), commits a batch
//! larger than one transaction atomically, repairs a crash on either side of its commit
//! point, lets no second writer or stale fence interleave, survives etcd's SIGKILL, and
//! keeps two roots apart.

#![cfg(feature = "etcd")]

mod etcd;
mod store_changes;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use etcd::Etcd;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use store_changes::*;
use zerokeeper::configdoc::MAX_CONFIG_BYTES;
use zerokeeper::keeper::Status;
use zerokeeper::keeper::change::{AdminAction, ChangeKind};
use zerokeeper::store::etcd::{CrashPoint, EtcdStore, FORMAT, Fence, MAX_TXN_BYTES, MAX_TXN_OPS};
use zerokeeper::store::seal::StoreKeys;
use zerokeeper::store::{AuditEntry, MemoryStore, Snapshot, Store, StoreError, StoredConfig};

/// A root of its own for each use.
fn root(name: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!("/zt/{name}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn private(root: &str) -> String {
    format!("/zerokeeper{root}/.zk/")
}

/// A store error of the expected kind, mentioning `mentions`.
fn expect_in_use<T: std::fmt::Debug>(result: Result<T, StoreError>, mentions: &str) {
    match result {
        Err(StoreError::InUse(message)) => {
            assert!(
                message.contains(mentions),
                "{message:?} misses {mentions:?}"
            );
            assert!(message.contains("wrote nothing"), "{message:?}");
        }
        other => panic!("expected InUse mentioning {mentions:?}, got {other:?}"),
    }
}

// ----- Behaving as the memory store -----

/// Applies `batches` to a `MemoryStore` and to a fresh root of `etcd` with the same
/// retention, and asserts they agree at every step, and again after a new connection.
fn assert_same_as_memory(etcd: &Etcd, retention: Option<usize>, batches: &[Vec<Entry>]) {
    let root = root("same");
    let mut memory = MemoryStore::new();
    let mut store = etcd.store(&root);
    if let Some(retention) = retention {
        memory.set_retention(retention);
        store.set_retention(retention);
    }
    assert_eq!(
        comparable(store.boot().expect("boots")),
        comparable(memory.boot().expect("boots"))
    );
    for batch in batches {
        let (memory_generation, generation) = (memory.generation(), store.generation());
        commit(&mut memory, batch);
        commit(&mut store, batch);
        assert_eq!(store.revision(), memory.revision());
        assert_eq!(
            store.generation() > generation,
            memory.generation() > memory_generation,
            "the generations move together"
        );
    }
    let compare = |store: &mut EtcdStore, memory: &mut MemoryStore| {
        assert_eq!(
            comparable(store.boot().expect("boots")),
            comparable(memory.boot().expect("boots"))
        );
        assert_eq!(
            store.audit().expect("reads audit"),
            memory.audit().expect("reads audit")
        );
        for (after, limit) in [(0, usize::MAX), (memory.revision() / 2, 3), (u64::MAX, 1)] {
            assert_eq!(
                store.changes_after(after, limit).expect("reads the log"),
                memory.changes_after(after, limit).expect("reads the log"),
                "changes after {after}, at most {limit}"
            );
        }
    };
    compare(&mut store, &mut memory);
    let generation = store.generation();
    drop(store);
    let mut again = etcd.store(&root);
    assert_eq!(again.revision(), memory.revision());
    assert_eq!(again.generation(), generation);
    compare(&mut again, &mut memory);
}

#[test]
fn a_fresh_root_boots_at_epoch_one_with_a_generation_of_now_and_nothing_stored() {
    let etcd = Etcd::start("fresh");
    let before = now_secs();
    let mut store = etcd.store(DEFAULT_ROOT_FOR_TESTS);
    let generation = store.generation();
    assert!((before..=now_secs()).contains(&generation), "{generation}");
    assert_eq!(
        store.boot().expect("boots"),
        Snapshot {
            epoch: 1,
            generation,
            revision: 0,
            oldest_retained: 1,
            proxies: vec![],
            configs: vec![],
            clusters: vec![],
            recent: vec![],
            restored: false,
        }
    );
    assert_eq!(store.boot().expect("boots").epoch, 2);
    assert_eq!(
        etcd.etcdctl(&[
            "get",
            "--print-value-only",
            "/zerokeeper/zerodb/proxy/.zk/meta/schema"
        ])
        .trim(),
        FORMAT.to_string()
    );
}

/// The default root, as the seed names it.
const DEFAULT_ROOT_FOR_TESTS: &str = "/zerodb/proxy";

#[test]
fn deterministic_batches_give_the_same_snapshots_as_the_memory_store() {
    let etcd = Etcd::start("deterministic");
    assert_same_as_memory(
        &etcd,
        None,
        &[
            vec![
                put("c", "10.0.0.2:3307", 1, Status::Ready),
                put("c", "10.0.0.1:3307", 1, Status::Ready),
                put("b", "10.0.0.9:3307", 4, Status::Up),
            ],
            vec![],
            vec![
                status(
                    "c",
                    "10.0.0.1:3307",
                    1,
                    Some(Status::Ready),
                    Some(Status::Up),
                ),
                status(
                    "c",
                    "10.0.0.2:3307",
                    2,
                    Some(Status::Ready),
                    Some(Status::Ready),
                ),
                delete("b", "10.0.0.9:3307"),
                delete("b", "never-registered:1"),
                put("b", "10.0.0.9:3307", 5, Status::Ready),
                observed("b", "10.0.0.9:3307", source(99), 3),
                observed("b", "never-registered:1", source(98), 4),
                put_config("b", 1),
                admin(push_action("b", 1)),
                rewound(4),
            ],
            vec![
                delete("c", "10.0.0.2:3307"),
                put_config("b", 1),
                put_config("c", 2),
            ],
        ],
    );
    // Clusters that prefix each other and unusual bytes sort as the memory store's.
    let clusters = ["ab", "a", "", "é", "a b", "b", "a\u{0}", "a\u{0}\u{0}b"];
    let proxies = ["", "p", "p\u{0}", "\u{0}p", "pq", "é:1", "\u{ff}"];
    let mut batch = Vec::new();
    for (i, cluster) in clusters.iter().enumerate() {
        for (j, name) in proxies.iter().enumerate() {
            batch.push(put(cluster, name, (i * 10 + j) as u64, Status::Up));
        }
        batch.push(put_config(cluster, 7));
        batch.push(put_config(cluster, u64::MAX));
        batch.push(put_config(cluster, 0));
    }
    assert_same_as_memory(
        &etcd,
        Some(5),
        &[
            batch,
            vec![delete("a", "p"), delete("", ""), admin(push_action("", 0))],
        ],
    );
}

#[test]
fn random_batches_give_the_same_snapshots_as_the_memory_store() {
    let etcd = Etcd::start("random");
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(12);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        prop::option::of(0..12usize),
        prop::collection::vec(prop::collection::vec(any_entry(), 0..8), 0..5),
    );
    runner
        .run(&strategy, |(retention, batches)| {
            assert_same_as_memory(&etcd, retention, &batches);
            Ok(())
        })
        .expect("the etcd store agrees with the memory store");
}

#[test]
fn retention_prunes_the_log_and_a_rewound_change_moves_the_generation_and_epoch() {
    let etcd = Etcd::start("retention");
    let root = root("retention");
    let mut store = etcd.store(&root);
    store.set_retention(5);
    let mut all = Vec::new();
    for i in 0..4 {
        all.extend(commit(
            &mut store,
            &[
                put("c", &format!("p:{i}"), i, Status::Up),
                admin(push_action("c", i)),
                observed("c", "p:0", source(i), i),
            ],
        ));
    }
    assert_eq!(
        store.changes_after(0, 100).expect("reads"),
        all[7..].to_vec()
    );
    assert_eq!(
        store.changes_after(9, 2).expect("reads"),
        all[9..11].to_vec()
    );
    let snapshot = store.boot().expect("boots");
    assert_eq!((snapshot.revision, snapshot.oldest_retained), (12, 8));
    assert_eq!(snapshot.proxies.len(), 4);
    assert_eq!(store.audit().expect("reads audit").len(), 4);
    assert_eq!(
        etcd.keys(&format!("{}log/", private(&root))).len(),
        5,
        "pruned in etcd too"
    );
    store.set_retention(0);
    commit(&mut store, &[put("c", "p:9", 9, Status::Up)]);
    let snapshot = store.boot().expect("boots");
    assert_eq!((snapshot.recent.len(), snapshot.oldest_retained), (0, 14));

    let generation = store.generation();
    commit(&mut store, &[rewound(7)]);
    assert!(store.generation() > generation);
    assert_eq!(
        store.boot().expect("boots").epoch,
        8,
        "newer than the seen 7"
    );
}

#[test]
fn audit_entries_come_back_oldest_first_across_commits_and_connections() {
    let etcd = Etcd::start("audit");
    let root = root("audit");
    let mut store = etcd.store(&root);
    store.boot().expect("boots");
    let remove = AdminAction::Remove {
        cluster: "c".into(),
        proxy: "p:1".into(),
        status: Status::Lost,
    };
    commit(&mut store, &[admin(remove), put("c", "p:1", 1, Status::Up)]);
    commit(
        &mut store,
        &[admin(push_action("c", 1)), admin(push_action("c", 2))],
    );
    drop(store);
    let store = etcd.store(&root);
    assert_eq!(
        store.audit().expect("reads audit"),
        vec![
            AuditEntry {
                at_unix_ms: at(1),
                action: r#"{"action":"remove","cluster":"c","proxy":"p:1","status":"lost"}"#.into(),
            },
            AuditEntry {
                at_unix_ms: at(3),
                action: push_json("c", 1),
            },
            AuditEntry {
                at_unix_ms: at(4),
                action: push_json("c", 2),
            },
        ]
    );
}

#[test]
fn a_reader_reads_config_versions_beside_the_commits() {
    let etcd = Etcd::start("reader");
    let mut store = etcd.store(&root("reader"));
    store.boot().expect("boots");
    check_reader(&mut store);
}

#[test]
fn the_history_kept_is_bounded() {
    let etcd = Etcd::start("history");
    let root = root("history");
    let mut store = etcd.store(&root);
    store.boot().expect("boots");
    check_history(&mut store);
    // Nothing of the pruned versions is left: the three versions kept (c's 4 and 5, d's
    // 1) have a blob each, a header and one part, and a pointer each.
    assert_eq!(etcd.keys(&format!("{}blob/", private(&root))).len(), 3 * 2);
    assert_eq!(etcd.keys(&format!("{}configs/", private(&root))).len(), 3);
    assert_eq!(etcd.keys(&format!("{}audit/", private(&root))).len(), 3);
}

#[test]
fn a_follower_reads_admin_changes_with_the_token_that_made_them() {
    let etcd = Etcd::start("follow-by");
    let root = root("follow-by");
    let mut store = etcd.store(&root);
    store.boot().expect("boots");
    let by_alice: Entry = ChangeKind::Admin {
        action: push_action("c", 1),
        by: Some(Arc::from("alice")),
    }
    .into();
    commit(
        &mut store,
        &[
            put("c", "p:1", 1, Status::Up),
            by_alice,
            admin(push_action("c", 2)),
        ],
    );
    let mut follower = etcd.store(&root);
    let (_, changes) = follower.follow(0, 100).expect("follows");
    let callers: Vec<(u64, Option<&str>)> = changes
        .iter()
        .filter_map(|c| match &c.kind {
            ChangeKind::Admin { by, .. } => Some((c.revision, by.as_deref())),
            _ => None,
        })
        .collect();
    assert_eq!(callers, [(2, Some("alice")), (3, None)]);
}

// ----- The status keys -----

#[test]
fn etcdctl_get_prefix_prints_the_seeds_status_listing() {
    let etcd = Etcd::start("etcdctl");
    let mut store = etcd.store(DEFAULT_ROOT_FOR_TESTS);
    store.boot().expect("boots");
    commit(
        &mut store,
        &[
            put("test_cluster", "10.25.0.11:3000", 1, Status::Ready),
            put("test_cluster", "10.25.0.12:3000", 1, Status::Ready),
            put("test_cluster", "10.25.0.13:3000", 1, Status::Ready),
            put("other_cluster", "10.9.0.1:3000", 1, Status::Up),
            put_config("test_cluster", 2),
        ],
    );
    let listing =
        |etcd: &Etcd| etcd.etcdctl(&["get", "--prefix", "/zerodb/proxy/test_cluster/status/"]);
    assert_eq!(
        listing(&etcd),
        "/zerodb/proxy/test_cluster/status/10.25.0.11:3000\nready\n\
         /zerodb/proxy/test_cluster/status/10.25.0.12:3000\nready\n\
         /zerodb/proxy/test_cluster/status/10.25.0.13:3000\nready\n"
    );
    commit(
        &mut store,
        &[
            status(
                "test_cluster",
                "10.25.0.11:3000",
                1,
                Some(Status::Ready),
                Some(Status::Up),
            ),
            status(
                "test_cluster",
                "10.25.0.12:3000",
                1,
                Some(Status::Ready),
                Some(Status::Up),
            ),
            delete("test_cluster", "10.25.0.13:3000"),
        ],
    );
    commit(
        &mut store,
        &[status(
            "test_cluster",
            "10.25.0.11:3000",
            1,
            Some(Status::Up),
            Some(Status::Lost),
        )],
    );
    assert_eq!(
        listing(&etcd),
        "/zerodb/proxy/test_cluster/status/10.25.0.11:3000\nlost\n\
         /zerodb/proxy/test_cluster/status/10.25.0.12:3000\nup\n"
    );
    // Nothing else of the store is under the root.
    assert_eq!(
        etcd.keys("/zerodb/proxy/"),
        vec![
            "/zerodb/proxy/other_cluster/status/10.9.0.1:3000",
            "/zerodb/proxy/test_cluster/status/10.25.0.11:3000",
            "/zerodb/proxy/test_cluster/status/10.25.0.12:3000",
        ]
    );
}

#[test]
fn a_boot_repairs_status_keys_that_do_not_match_the_registry_and_leaves_other_keys_alone() {
    let etcd = Etcd::start("reconcile");
    let root = root("reconcile");
    let mut store = etcd.store(&root);
    commit(
        &mut store,
        &[
            put("c", "10.0.0.1:3307", 1, Status::Up),
            put("c", "10.0.0.2:3307", 1, Status::Up),
        ],
    );
    etcd.etcdctl(&["put", &format!("{root}/c/status/10.0.0.9:3307"), "up"]);
    etcd.etcdctl(&["put", &format!("{root}/c/status/10.0.0.1:3307"), "lost"]);
    etcd.etcdctl(&["del", &format!("{root}/c/status/10.0.0.2:3307")]);
    etcd.etcdctl(&["put", &format!("{root}/c/config"), "not ours"]);
    etcd.etcdctl(&["put", &format!("{root}/c/status/x/y"), "not ours either"]);
    store.boot().expect("boots");
    assert_eq!(
        etcd.etcdctl(&["get", "--prefix", &format!("{root}/")]),
        format!(
            "{root}/c/config\nnot ours\n{root}/c/status/10.0.0.1:3307\nup\n\
             {root}/c/status/10.0.0.2:3307\nup\n{root}/c/status/x/y\nnot ours either\n"
        )
    );
}

// ----- Size -----

/// A config version of about `bytes` bytes.
fn big_config(cluster: &str, version: u64, bytes: usize) -> StoredConfig {
    let mut config = config(cluster, version);
    config.base = (0..bytes).map(|i| (i * 7 % 251) as u8).collect();
    config
}

#[test]
fn a_thousand_status_changes_and_a_four_mib_config_commit_in_one_batch_within_the_limits() {
    let etcd = Etcd::start("big-batch");
    let root = root("big");
    let mut store = etcd.store(&root);
    store.boot().expect("boots");
    let big = big_config("c", 1, MAX_CONFIG_BYTES - 64);
    let mut batch: Vec<Entry> = (0..1_000)
        .map(|i| {
            put(
                "c",
                &format!("10.0.{}.{}:3307", i / 256, i % 256),
                i,
                Status::Up,
            )
        })
        .collect();
    batch.push(config_entry(&big));
    batch.push(admin(push_action("c", 1)));
    let before = store.stats();
    let started = Instant::now();
    commit(&mut store, &batch);
    let took = started.elapsed();
    let stats = store.stats();
    eprintln!(
        "commit of 1,000 status changes and a 4 MiB config: {took:?}, {} transactions \
         (largest {} ops, {} bytes)",
        stats.txns - before.txns,
        stats.max_txn_ops,
        stats.max_txn_bytes
    );
    assert!(stats.txns - before.txns > 10, "more than one transaction");
    assert!(stats.max_txn_ops <= MAX_TXN_OPS);
    assert!(stats.max_txn_bytes <= MAX_TXN_BYTES);
    assert_eq!(store.revision(), 1_002);
    assert_eq!(etcd.keys(&format!("{root}/c/status/")).len(), 1_000);

    let mut again = etcd.store(&root);
    let snapshot = again.boot().expect("boots");
    assert_eq!(snapshot.proxies.len(), 1_000);
    assert!(
        snapshot.configs == vec![big],
        "the 4 MiB config comes back whole"
    );
    assert_eq!(snapshot.recent.len(), 1_002);
    assert_eq!(again.audit().expect("reads audit").len(), 1);

    // A small batch after it is one transaction.
    let before = again.stats().txns;
    commit(&mut again, &[put("c", "p:1", 1, Status::Ready)]);
    assert_eq!(again.stats().txns - before, 1);
}

#[test]
fn booting_ten_thousand_stored_proxies_reads_them_in_pages() {
    let etcd = Etcd::start("ten-thousand");
    let root = root("many");
    let mut store = etcd.store(&root);
    let db_size = |etcd: &Etcd| {
        let json = etcd.etcdctl(&["endpoint", "status", "-w", "json"]);
        let value: serde_json::Value = serde_json::from_str(&json).expect("etcdctl prints JSON");
        value[0]["Status"]["dbSize"].as_i64().unwrap_or(0)
    };
    let size_before = db_size(&etcd);
    let started = Instant::now();
    for chunk in 0..10 {
        let batch: Vec<Entry> = (0..1_000)
            .map(|i| {
                let n = chunk * 1_000 + i;
                put(
                    "c",
                    &format!("10.{}.{}.{}:3307", n / 65_536, n / 256 % 256, n % 256),
                    n,
                    Status::Up,
                )
            })
            .collect();
        commit(&mut store, &batch);
    }
    eprintln!(
        "10 commits of 1,000 new proxies: {:?}; etcd's database grew by {} KiB",
        started.elapsed(),
        (db_size(&etcd) - size_before) / 1024
    );
    drop(store);
    let mut store = etcd.store(&root);
    let before = store.stats().ranges;
    let started = Instant::now();
    let snapshot = store.boot().expect("boots");
    eprintln!(
        "boot of 10,000 proxies (and as many logged changes): {:?}, {} range requests",
        started.elapsed(),
        store.stats().ranges - before
    );
    assert_eq!(snapshot.proxies.len(), 10_000);
    assert_eq!(snapshot.recent.len(), 10_000);
    // Proxies, log and status keys, 1,000 a page each.
    assert!(store.stats().ranges - before >= 30, "paged reads");
}

// ----- Crashes around the commit point -----

fn big_batch(cluster: &str, n: u64) -> Vec<Entry> {
    let mut batch: Vec<Entry> = (0..n)
        .map(|i| put(cluster, &format!("p:{i}"), i, Status::Up))
        .collect();
    batch.push(config_entry(&big_config(cluster, 1, 600_000)));
    batch.push(admin(push_action(cluster, 1)));
    batch
}

#[test]
fn a_crash_between_staging_and_the_commit_point_leaves_nothing_visible() {
    let etcd = Etcd::start("crash-staging");
    let root = root("staging");
    let mut store = etcd.store(&root);
    let committed = commit(&mut store, &[put("c", "p:0", 1, Status::Up)]);
    let before = store.boot().expect("boots");
    store.set_crash_point(Some(CrashPoint::AfterStaging));
    let result = try_commit(&mut store, &big_batch("c", 300));
    assert!(matches!(result, Err(StoreError::Io(_))), "{result:?}");
    let log = format!("{}log/", private(&root));
    assert!(etcd.keys(&log).len() > 300, "the batch was staged");
    assert!(etcd.keys(&format!("{}blob/", private(&root))).len() > 1);

    // Another keeper (the same one, restarted) finds nothing of it, and clears it.
    drop(store);
    let mut restarted = etcd.store(&root);
    assert_eq!(restarted.revision(), 1);
    assert_eq!(restarted.changes_after(0, 1_000).expect("reads"), committed);
    let snapshot = restarted.boot().expect("boots");
    assert_eq!(comparable(snapshot.clone()).proxies, before.proxies);
    assert_eq!((snapshot.revision, snapshot.configs.len()), (1, 0));
    assert_eq!(etcd.keys(&log).len(), 1, "the staged entries are gone");
    assert_eq!(
        etcd.keys(&format!("{}blob/", private(&root))),
        Vec::<String>::new()
    );
    assert_eq!(restarted.audit().expect("reads audit"), vec![]);
    assert_eq!(etcd.keys(&format!("{root}/c/status/")).len(), 1);

    // The same handle after a stopped commit clears its own staging and commits.
    restarted.set_crash_point(Some(CrashPoint::AfterStaging));
    assert!(try_commit(&mut restarted, &big_batch("c", 300)).is_err());
    restarted.set_crash_point(None);
    let mut memory = MemoryStore::new();
    commit(&mut memory, &[put("c", "p:0", 1, Status::Up)]);
    commit(&mut memory, &big_batch("c", 200));
    commit(&mut restarted, &big_batch("c", 200));
    assert_eq!(
        comparable(restarted.boot().expect("boots")),
        comparable(Snapshot {
            epoch: 3,
            ..memory.boot().expect("boots")
        })
    );
}

#[test]
fn a_crash_between_the_commit_point_and_the_records_is_finished_by_the_next_boot() {
    let etcd = Etcd::start("crash-point");
    let root = root("point");
    let mut store = etcd.store(&root);
    let mut memory = MemoryStore::new();
    let first = [put("c", "p:0", 1, Status::Up), put_config("c", 0)];
    commit(&mut store, &first);
    commit(&mut memory, &first);
    store.set_crash_point(Some(CrashPoint::AfterCommitPoint));
    let batch = big_batch("c", 400);
    assert!(try_commit(&mut store, &batch).is_err());
    commit(&mut memory, &batch);
    assert_eq!(store.revision(), memory.revision(), "committed");
    assert_eq!(
        etcd.keys(&format!("{root}/c/status/")).len(),
        1,
        "not yet materialised"
    );

    drop(store);
    let mut restarted = etcd.store(&root);
    assert_eq!(restarted.revision(), memory.revision());
    assert_eq!(
        comparable(restarted.boot().expect("boots")),
        comparable(memory.boot().expect("boots"))
    );
    assert_eq!(etcd.keys(&format!("{root}/c/status/")).len(), 400);
    assert_eq!(
        restarted.audit().expect("reads audit"),
        memory.audit().expect("reads audit")
    );
    // Two blobs, header and parts: version 0's (one part) and the batch's (three).
    assert_eq!(etcd.keys(&format!("{}blob/", private(&root))).len(), 2 + 4);
}

// ----- Writers -----

#[test]
fn a_second_store_on_one_root_cannot_commit_after_the_first_moved_the_revision() {
    let etcd = Etcd::start("two-writers");
    let root = root("two");
    let mut first = etcd.store(&root);
    let mut second = etcd.store(&root);
    commit(&mut first, &[put("c", "p:1", 1, Status::Up)]);
    expect_in_use(
        try_commit(&mut second, &[put("c", "p:2", 1, Status::Up)]),
        "",
    );
    assert_eq!(etcd.keys(&format!("{root}/c/status/")).len(), 1);

    // A store that boots takes the root: the first one's next commit writes nothing.
    let mut third = etcd.store(&root);
    third.boot().expect("boots");
    expect_in_use(
        try_commit(&mut first, &[put("c", "p:3", 1, Status::Up)]),
        "another store handle took the root",
    );
    let mut big = big_batch("c", 300);
    big.remove(0);
    expect_in_use(
        try_commit(&mut first, &big),
        "another store handle took the root",
    );
    commit(&mut third, &[put("c", "p:4", 1, Status::Up)]);
    let snapshot = etcd.store(&root).boot().expect("boots");
    let names: Vec<_> = snapshot.proxies.iter().map(|p| p.proxy.as_str()).collect();
    assert_eq!(names, vec!["p:1", "p:4"]);
    assert_eq!(snapshot.revision, 2);
}

#[test]
fn a_commit_under_a_stale_fence_is_refused_and_writes_nothing() {
    let etcd = Etcd::start("fence");
    let root = root("fence");
    let leader = "/zt/election/leader";
    let created = |etcd: &Etcd| -> i64 {
        let json = etcd.etcdctl(&["get", leader, "-w", "json"]);
        let value: serde_json::Value = serde_json::from_str(&json).expect("etcdctl prints JSON");
        value["kvs"][0]["create_revision"]
            .as_i64()
            .expect("the leader key has a create revision")
    };
    etcd.etcdctl(&["put", leader, "keeper-a"]);
    let mut store = etcd.store(&root);
    store.set_fence(Some(Fence {
        key: leader.to_owned(),
        create_revision: created(&etcd),
    }));
    store.boot().expect("boots under its fence");
    commit(&mut store, &[put("c", "p:1", 1, Status::Up)]);
    // Another keeper's leadership: the key is made again.
    etcd.etcdctl(&["del", leader]);
    etcd.etcdctl(&["put", leader, "keeper-b"]);
    expect_in_use(
        try_commit(&mut store, &[put("c", "p:2", 1, Status::Up)]),
        "fence",
    );
    expect_in_use(try_commit(&mut store, &big_batch("c", 300)), "fence");
    assert_eq!(store.revision(), 1);
    assert_eq!(etcd.keys(&format!("{root}/c/status/")).len(), 1);
    assert_eq!(
        etcd.keys(&format!("{}blob/", private(&root))),
        Vec::<String>::new()
    );
    // Under the new leader's fence it writes again.
    store.set_fence(Some(Fence {
        key: leader.to_owned(),
        create_revision: created(&etcd),
    }));
    commit(&mut store, &[put("c", "p:2", 1, Status::Up)]);
    assert_eq!(store.revision(), 2);
}

// ----- etcd's own failures -----

#[test]
fn etcd_killed_and_restarted_keeps_every_commit_and_a_store_fails_while_it_is_down() {
    let mut etcd = Etcd::start("sigkill");
    let root = root("sigkill");
    let mut store = etcd.store(&root);
    let mut memory = MemoryStore::new();
    store.boot().expect("boots");
    memory.boot().expect("boots");
    for batch in [big_batch("c", 250), vec![put("d", "p:1", 1, Status::Lost)]] {
        commit(&mut store, &batch);
        commit(&mut memory, &batch);
    }
    etcd.kill();
    let next = [put("d", "p:2", 1, Status::Up)];
    match try_commit(&mut store, &next) {
        Err(StoreError::Io(message)) => assert!(message.contains("etcd"), "{message}"),
        other => panic!("expected an I/O error while etcd is down, got {other:?}"),
    }
    assert!(store.boot().is_err(), "a boot fails too");
    etcd.launch();
    // The same handle works again, from where it was.
    commit(&mut store, &next);
    commit(&mut memory, &next);
    etcd.restart();
    let mut restarted = etcd.store(&root);
    assert_eq!(
        comparable(restarted.boot().expect("boots")),
        comparable(Snapshot {
            epoch: 2,
            ..memory.boot().expect("boots")
        })
    );
    assert_eq!(etcd.keys(&format!("{root}/")).len(), 252);
}

#[test]
fn a_store_boots_and_commits_from_inside_a_tokio_runtime() {
    let etcd = Etcd::start("runtime");
    let options = etcd.options(&root("runtime"));
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let revision = runtime.block_on(async move {
        let mut store = EtcdStore::connect(options).expect("connects");
        store.boot().expect("boots");
        commit(&mut store, &[put("c", "p:1", 1, Status::Up)]);
        store.revision()
    });
    assert_eq!(revision, 1);
}

// ----- Roots -----

#[test]
fn two_roots_on_one_etcd_do_not_see_each_other() {
    let etcd = Etcd::start("roots");
    let mut outer = etcd.store("/zerodb/proxy");
    let mut inner = etcd.store("/zerodb/proxy/inner");
    let mut other = etcd.store("/zerodb/other");
    commit(
        &mut outer,
        &[put("c", "p:1", 1, Status::Up), put_config("c", 1)],
    );
    commit(&mut inner, &[put("c", "p:2", 2, Status::Ready)]);
    commit(&mut other, &[put("c", "p:3", 3, Status::Lost)]);
    for (store, proxy) in [
        (&mut outer, "p:1"),
        (&mut inner, "p:2"),
        (&mut other, "p:3"),
    ] {
        let snapshot = store.boot().expect("boots");
        let names: Vec<_> = snapshot.proxies.iter().map(|p| p.proxy.clone()).collect();
        assert_eq!(names, vec![proxy.to_owned()], "{}", store.root());
        assert_eq!(snapshot.revision, 1 + u64::from(proxy == "p:1"));
    }
    assert_eq!(
        etcd.keys("/zerodb/proxy/"),
        vec![
            "/zerodb/proxy/c/status/p:1",
            "/zerodb/proxy/inner/c/status/p:2"
        ],
        "the outer root's boot left the inner root's status key alone"
    );
    assert_eq!(
        etcd.keys("/zerodb/other/"),
        vec!["/zerodb/other/c/status/p:3"]
    );
}

#[test]
fn a_root_of_a_newer_schema_is_refused_and_left_untouched() {
    let etcd = Etcd::start("too-new");
    let root = root("new");
    let mut store = etcd.store(&root);
    commit(&mut store, &[put("c", "p:1", 1, Status::Up)]);
    drop(store);
    let schema = format!("{}meta/schema", private(&root));
    etcd.etcdctl(&["put", &schema, &(FORMAT + 1).to_string()]);
    let before = etcd.etcdctl(&["get", "--prefix", "-w", "json", "/"]);
    for _ in 0..2 {
        match EtcdStore::connect(etcd.options(&root)) {
            Err(StoreError::TooNew(message)) => {
                assert!(message.contains("upgrade zerokeeper"), "{message}");
            }
            other => panic!("expected TooNew, got {other:?}"),
        }
    }
    let after = etcd.etcdctl(&["get", "--prefix", "-w", "json", "/"]);
    let kvs =
        |json: &str| serde_json::from_str::<serde_json::Value>(json).expect("JSON")["kvs"].clone();
    assert_eq!(kvs(&after), kvs(&before), "nothing was written");
}

#[test]
fn a_root_that_could_collide_with_another_is_refused() {
    let etcd = Etcd::start("bad-root");
    for bad in ["/zerodb/proxy/", "zerodb", "/zerodb/.zk", "/zerodb//proxy"] {
        match EtcdStore::connect(etcd.options(bad)) {
            Err(StoreError::Io(message)) => assert!(message.contains("root"), "{message}"),
            other => panic!("expected the root {bad:?} refused, got {other:?}"),
        }
    }
}

// ----- Configs sealed at rest -----

fn sealed_options(etcd: &Etcd, root: &str, keys: &[&str]) -> zerokeeper::store::etcd::EtcdOptions {
    let mut options = etcd.options(root);
    options.store_keys = Some(StoreKeys::parse(&keys.join("\n")).expect("valid store keys"));
    options
}

/// Every value under `prefix`, raw.
fn raw_values(etcd: &Etcd, prefix: &str) -> Vec<u8> {
    let out = etcd.etcdctl_output(&["get", "--prefix", prefix]);
    assert!(out.status.success(), "etcdctl get failed");
    out.stdout
}

fn raw_value(etcd: &Etcd, key: &str) -> Vec<u8> {
    let out = etcd.etcdctl_output(&["get", "--print-value-only", key]);
    assert!(out.status.success(), "etcdctl get failed");
    let mut value = out.stdout;
    assert_eq!(
        value.pop(),
        Some(b'\n'),
        "etcdctl ends a value with a newline"
    );
    value
}

fn put_raw(etcd: &Etcd, key: &str, value: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    assert!(!value.contains(&0), "an argument cannot hold a NUL byte");
    let out = std::process::Command::new(etcd::tool("etcdctl", "etcd-client"))
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &etcd.endpoint(), "put", key, "--"])
        .arg(std::ffi::OsStr::from_bytes(value))
        .output()
        .expect("runs etcdctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn configs_are_sealed_in_etcd_and_read_only_with_the_store_key() {
    let etcd = Etcd::start("sealed");
    let root = root("sealed");
    let mut store =
        EtcdStore::connect(sealed_options(&etcd, &root, &[STORE_KEY_A])).expect("connects");
    store.boot().expect("boots");
    let configs = [secret_config("pay", 1), secret_config("pay", 2)];
    commit(
        &mut store,
        &[config_entry(&configs[0]), config_entry(&configs[1])],
    );
    drop(store);
    let everything = raw_values(&etcd, "/");
    assert!(
        !contains(&everything, b"hunter2"),
        "a credential is in etcd"
    );

    // Without a key, or with another, the root does not boot; with it, it does.
    let mut plain = etcd.store(&root);
    expect_sealed(plain.boot(), "--store-key-file");
    drop(plain);
    let mut other =
        EtcdStore::connect(sealed_options(&etcd, &root, &[STORE_KEY_B])).expect("connects");
    expect_sealed(other.boot(), "does not hold");
    drop(other);
    let mut store =
        EtcdStore::connect(sealed_options(&etcd, &root, &[STORE_KEY_A])).expect("connects");
    assert_eq!(
        store.boot().expect("boots").configs,
        vec![configs[1].clone()]
    );
    // A standby's read needs the key too.
    let mut standby = etcd.store(&root);
    expect_sealed(standby.peek(), "--store-key-file");
}

#[test]
fn a_root_of_schema_one_is_migrated_and_its_plain_blobs_sealed_at_boot_then_rotated() {
    #[derive(serde::Serialize)]
    struct HeaderV1 {
        len: u64,
        parts: u32,
    }
    let etcd = Etcd::start("seal-v1");
    let root = root("v1");
    let private = private(&root);
    let mut store = etcd.store(&root);
    store.boot().expect("boots");
    let config = secret_config("pay", 1);
    commit(
        &mut store,
        &[config_entry(&config), put("pay", "p:1", 1, Status::Up)],
    );
    drop(store);
    // Back to schema 1: a bare record under a header without a key.
    // The blob's header is `P blob/{revision}`, its parts below it.
    let blob = etcd
        .keys(&format!("{private}blob/"))
        .into_iter()
        .find(|k| !k[private.len() + "blob/".len()..].contains('/'))
        .expect("a blob header");
    let part = format!("{blob}/000000");
    let envelope = raw_value(&etcd, &part);
    assert_eq!(envelope[0], 0, "a plain envelope without a store key");
    assert!(contains(&envelope, b"hunter2"));
    // The record is `{base, datasources, id: Some(8 bytes)}`; schema 1's has no id.
    let bare = &envelope[1..envelope.len() - 9];
    put_raw(&etcd, &part, bare);
    let header = postcard::to_allocvec(&HeaderV1 {
        len: bare.len() as u64,
        parts: 1,
    })
    .expect("encodes");
    put_raw(&etcd, &blob, &header);
    etcd.etcdctl(&["put", &format!("{private}meta/schema"), "1"]);
    // Schema 1 kept no ids.
    let config = StoredConfig { id: None, ..config };

    // A keeper without a store key reads schema 1 as it is.
    let mut store = etcd.store(&root);
    assert_eq!(store.boot().expect("boots").configs, vec![config.clone()]);
    drop(store);
    assert_eq!(
        raw_value(&etcd, &format!("{private}meta/schema")),
        FORMAT.to_string().into_bytes()
    );
    assert!(
        contains(&raw_value(&etcd, &part), b"hunter2"),
        "left as it was"
    );

    // With a store key, the boot seals it in place.
    let a = StoreKeys::parse(STORE_KEY_A).expect("key");
    let mut store =
        EtcdStore::connect(sealed_options(&etcd, &root, &[STORE_KEY_A])).expect("connects");
    assert_eq!(store.boot().expect("boots").configs, vec![config.clone()]);
    drop(store);
    assert!(!contains(&raw_value(&etcd, &part), b"hunter2"), "sealed");
    assert_eq!(
        raw_value(&etcd, &format!("{private}meta/sealed")),
        format!("{:08x}", a.sealing().id()).into_bytes()
    );

    // A new first key reseals it; then the old one is not needed.
    let mut store = EtcdStore::connect(sealed_options(&etcd, &root, &[STORE_KEY_B, STORE_KEY_A]))
        .expect("connects");
    assert_eq!(store.boot().expect("boots").configs, vec![config.clone()]);
    drop(store);
    let mut store =
        EtcdStore::connect(sealed_options(&etcd, &root, &[STORE_KEY_B])).expect("connects");
    assert_eq!(store.boot().expect("boots").configs, vec![config]);
    drop(store);
    let mut old =
        EtcdStore::connect(sealed_options(&etcd, &root, &[STORE_KEY_A])).expect("connects");
    expect_sealed(old.boot(), "does not hold");
}
