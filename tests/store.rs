//! The default store, `RedbStore`: it behaves exactly as the `MemoryStore` for the same
//! changes, applies each kind of change as specified, keeps its epoch, generation,
//! revision, config history, audit and change log across reopening, migrates a store of
//! schema 1 in place, refuses what is not its own file (or is too new) without touching
//! it, and loses nothing that a commit reported durable when its process is killed with
//! SIGKILL in the middle of writing.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use zerokeeper::keeper::Status;
use zerokeeper::keeper::change::{AdminAction, ChangeKind};
use zerokeeper::store::redb::{FILE_NAME, FORMAT, RedbStore};
use zerokeeper::store::seal::StoreKeys;
use zerokeeper::store::{
    AuditEntry, MemoryStore, Snapshot, Store, StoreError, StoredConfig, StoredProxy,
};

mod store_changes;

use store_changes::*;

// ----- Helpers -----

/// A fresh directory path under the system temp dir, unique per process and test, removed
/// when dropped (even when the test fails). The directory itself is not created, so the
/// store's own `create_dir_all` is exercised.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("zk-store-{}-{n}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn file(&self) -> PathBuf {
        self.0.join(FILE_NAME)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn open(dir: &TempDir) -> RedbStore {
    RedbStore::open(dir.path()).expect("the store opens")
}

/// Applies `batches` to a `MemoryStore` and a fresh `RedbStore` with the same retention,
/// and asserts they agree at every step: the revisions, whether the generation moved, the
/// snapshot of a boot, the audit, the log as `changes_after` reads it, and the same
/// after the file is closed and opened again.
fn assert_same_as_memory(retention: Option<usize>, batches: &[Vec<Entry>]) {
    let dir = TempDir::new("same");
    let mut memory = MemoryStore::new();
    let mut disk = open(&dir);
    if let Some(retention) = retention {
        memory.set_retention(retention);
        disk.set_retention(retention);
    }
    assert_eq!(
        comparable(disk.boot().expect("boots")),
        comparable(memory.boot().expect("boots"))
    );
    for batch in batches {
        let (memory_generation, disk_generation) = (memory.generation(), disk.generation());
        commit(&mut memory, batch);
        commit(&mut disk, batch);
        assert_eq!(disk.revision(), memory.revision());
        assert_eq!(
            disk.generation() > disk_generation,
            memory.generation() > memory_generation,
            "the generations move together"
        );
        assert!(disk.generation() >= disk_generation);
    }
    let compare = |disk: &mut RedbStore, memory: &mut MemoryStore| {
        assert_eq!(
            comparable(disk.boot().expect("boots")),
            comparable(memory.boot().expect("boots"))
        );
        assert_eq!(
            disk.audit().expect("reads audit"),
            memory.audit().expect("reads audit")
        );
        for (after, limit) in [(0, usize::MAX), (memory.revision() / 2, 3), (u64::MAX, 1)] {
            assert_eq!(
                disk.changes_after(after, limit).expect("reads the log"),
                memory.changes_after(after, limit).expect("reads the log"),
                "changes after {after}, at most {limit}"
            );
        }
    };
    compare(&mut disk, &mut memory);
    let generation = disk.generation();
    drop(disk);

    let mut reopened = open(&dir);
    assert_eq!(reopened.revision(), memory.revision());
    assert_eq!(reopened.generation(), generation);
    compare(&mut reopened, &mut memory);
}

const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("meta");
const PROXIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("proxies");
const CONFIGS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("configs");
const CHANGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("changes");

/// Writes one entry into a table of a closed store's file, behind the store's back.
fn write_raw(dir: &TempDir, table: TableDefinition<&[u8], &[u8]>, key: &[u8], value: &[u8]) {
    let db = redb::Database::open(dir.file()).expect("redb opens the file");
    let txn = db.begin_write().expect("begins");
    {
        let mut table = txn.open_table(table).expect("opens the table");
        table.insert(key, value).expect("inserts");
    }
    txn.commit().expect("commits");
}

/// Reads one entry of a table of a closed store's file.
fn read_raw(dir: &TempDir, table: TableDefinition<&[u8], &[u8]>, key: &[u8]) -> Option<Vec<u8>> {
    let db = redb::ReadOnlyDatabase::open(dir.file()).expect("redb opens the file");
    let txn = db.begin_read().expect("begins a read");
    let table = txn.open_table(table).expect("opens the table");
    table
        .get(key)
        .expect("reads")
        .map(|guard| guard.value().to_vec())
}

fn expect_corrupt<T: std::fmt::Debug>(result: Result<T, StoreError>, mentions: &str) -> String {
    match result {
        Err(StoreError::Corrupt(message)) => {
            assert!(
                message.contains(mentions),
                "{message:?} does not mention {mentions:?}"
            );
            message
        }
        other => panic!("expected Corrupt mentioning {mentions:?}, got {other:?}"),
    }
}

fn expect_io<T: std::fmt::Debug>(result: Result<T, StoreError>, mentions: &str) -> String {
    match result {
        Err(StoreError::Io(message)) => {
            assert!(
                message.contains(mentions),
                "{message:?} does not mention {mentions:?}"
            );
            message
        }
        other => panic!("expected Io mentioning {mentions:?}, got {other:?}"),
    }
}

// ----- Behaving as the memory store -----

#[test]
fn a_fresh_store_boots_at_epoch_one_with_nothing_stored() {
    let dir = TempDir::new("fresh");
    let before = now_secs();
    let mut store = open(&dir);
    let after = now_secs();
    assert!(
        dir.file().is_file(),
        "the database file is created in the directory"
    );
    assert_eq!(store.path(), dir.file());
    assert_eq!(store.revision(), 0);
    let generation = store.generation();
    assert!(
        (before..=after).contains(&generation),
        "a new store's generation {generation} is the Unix time in seconds"
    );
    assert_eq!(
        store.boot().expect("boots"),
        Snapshot {
            epoch: 1,
            generation,
            revision: 0,
            oldest_retained: 1,
            clusters: Vec::new(),
            proxies: vec![],
            configs: vec![],
            recent: vec![],
            restored: false,
        }
    );
    assert_eq!(store.audit().expect("reads audit"), vec![]);
    assert_eq!(store.changes_after(0, 10).expect("reads the log"), vec![]);
}

#[test]
fn status_changes_and_deletions_give_the_same_snapshot_as_the_memory_store() {
    assert_same_as_memory(
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
            ],
            vec![
                delete("c", "10.0.0.2:3307"),
                put("c", "10.0.0.2:3307", 3, Status::Up),
            ],
            vec![delete("c", "10.0.0.1:3307")],
            vec![],
        ],
    );
}

#[test]
fn clusters_that_prefix_each_other_and_unusual_bytes_sort_as_in_the_memory_store() {
    // Byte order, not length or locale: "a" < "a\0" < "a b" < "ab" < "b" < "é".
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
        None,
        &[
            batch,
            vec![
                delete("a", "p"),
                delete("a\u{0}", "p\u{0}"),
                delete("", ""),
                admin(push_action("", 0)),
            ],
        ],
    );
}

#[test]
fn configs_keep_every_version_but_the_snapshot_holds_the_latest_per_cluster() {
    let dir = TempDir::new("configs");
    let mut store = open(&dir);
    store.boot().expect("boots");
    commit(&mut store, &[put_config("c", 1), put_config("d", 5)]);
    commit(&mut store, &[put_config("c", 3)]);
    // An older version arriving later is kept, but is not the latest.
    commit(&mut store, &[put_config("c", 2), put_config("d", 4)]);
    // The same version again replaces it.
    let mut replaced = config("d", 5);
    replaced.base = b"replaced".to_vec();
    commit(&mut store, &[config_entry(&replaced)]);

    let snapshot = store.boot().expect("boots");
    assert_eq!(snapshot.configs, vec![config("c", 3), replaced]);
    drop(store);

    let db = redb::Database::open(dir.file()).expect("redb opens the file");
    let txn = db.begin_read().expect("begins a read");
    let configs = txn.open_table(CONFIGS).expect("opens configs");
    assert_eq!(
        configs.len().expect("counts"),
        5,
        "every version of every cluster is kept"
    );
}

#[test]
fn a_reader_reads_config_versions_beside_the_commits_of_every_local_store() {
    let mut memory = MemoryStore::new();
    memory.boot().expect("boots");
    check_reader(&mut memory);
    let dir = TempDir::new("reader");
    let mut redb = open(&dir);
    redb.boot().expect("boots");
    check_reader(&mut redb);
    // Sealed versions are opened with the store's keys.
    let sealed_dir = TempDir::new("reader-sealed");
    let keys = StoreKeys::parse(&format!("{STORE_KEY_A}\n")).expect("keys");
    let mut sealed = RedbStore::open_sealed(sealed_dir.path(), Some(keys)).expect("opens");
    sealed.boot().expect("boots");
    check_reader(&mut sealed);
    // Once the store is dropped, its reader answers with an error, not a stale read.
    let reader = redb.reader().expect("a reader");
    drop(redb);
    expect_io(reader.config_versions("c", 1), "closed");
}

#[test]
fn the_history_kept_is_bounded_in_every_local_store() {
    let mut memory = MemoryStore::new();
    memory.boot().expect("boots");
    check_history(&mut memory);
    let dir = TempDir::new("history");
    let mut redb = open(&dir);
    redb.boot().expect("boots");
    check_history(&mut redb);
}

#[test]
fn audit_entries_come_back_oldest_first_across_commits_and_reopening() {
    let dir = TempDir::new("audit");
    let mut store = open(&dir);
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
    let mut store = open(&dir);
    // A change whose clock is older than the earlier ones' is still audited last.
    let (mut changes, blobs) = numbered(
        store.revision() + 1,
        &[admin(AdminAction::Switch {
            cluster: "c".into(),
            hostgroup: "hg0".into(),
            from: "a".into(),
            to: "b".into(),
            version: 3,
        })],
    );
    changes[0].at = 5;
    store.commit(&changes, &blobs).expect("commits");
    assert_eq!(
        store.audit().expect("reads audit"),
        vec![
            AuditEntry {
                at_unix_ms: at(1),
                action: r#"{"action":"remove","cluster":"c","proxy":"p:1","status":"lost"}"#
                    .into(),
            },
            AuditEntry {
                at_unix_ms: at(3),
                action: push_json("c", 1),
            },
            AuditEntry {
                at_unix_ms: at(4),
                action: push_json("c", 2),
            },
            AuditEntry {
                at_unix_ms: 5,
                action: r#"{"action":"switch","cluster":"c","from":"a","hostgroup":"hg0","to":"b","version":3}"#
                    .into(),
            },
        ]
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(24),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_sequence_of_changes_gives_the_same_snapshots_as_the_memory_store(
        retention in prop::option::of(0..12usize),
        batches in prop::collection::vec(prop::collection::vec(any_entry(), 0..8), 0..6)
    ) {
        assert_same_as_memory(retention, &batches);
    }
}

// ----- What each change does -----

#[test]
fn a_status_change_puts_the_proxy_and_keeps_its_since_while_the_status_stays() {
    let dir = TempDir::new("status");
    let mut store = open(&dir);
    commit(&mut store, &[put("c", "p:1", 1, Status::Ready)]);
    // The same status, a new incarnation: everything but the since is the change's.
    commit(
        &mut store,
        &[status(
            "c",
            "p:1",
            2,
            Some(Status::Ready),
            Some(Status::Ready),
        )],
    );
    let mut expected = stored("c", "p:1", 2, Status::Ready, 1);
    assert_eq!(store.boot().expect("boots").proxies, vec![expected.clone()]);
    // Another status: a new since.
    commit(
        &mut store,
        &[status("c", "p:1", 2, Some(Status::Ready), Some(Status::Up))],
    );
    expected.status = Status::Up;
    expected.since_unix_ms = Some(at(3));
    assert_eq!(store.boot().expect("boots").proxies, vec![expected]);
    // The same status for a proxy the store does not hold: new to the store.
    commit(
        &mut store,
        &[status("c", "p:2", 4, Some(Status::Up), Some(Status::Up))],
    );
    let proxies = store.boot().expect("boots").proxies;
    assert_eq!(proxies[1], stored("c", "p:2", 4, Status::Up, 4));
}

#[test]
fn a_status_change_to_none_deletes_the_proxy() {
    let dir = TempDir::new("status-none");
    let mut store = open(&dir);
    commit(
        &mut store,
        &[
            put("c", "p:1", 1, Status::Up),
            put("c", "p:2", 1, Status::Up),
        ],
    );
    commit(&mut store, &[delete("c", "p:1"), delete("c", "unknown:1")]);
    assert_eq!(
        store.boot().expect("boots").proxies,
        vec![stored("c", "p:2", 1, Status::Up, 2)]
    );
}

#[test]
fn an_observed_change_updates_a_stored_proxys_source_and_config_version_only() {
    let dir = TempDir::new("observed");
    let mut store = open(&dir);
    commit(&mut store, &[put("c", "p:1", 1, Status::Up)]);
    let moved = SocketAddr::from(([198, 51, 100, 7], 4000));
    commit(
        &mut store,
        &[
            observed("c", "p:1", moved, 42),
            // Of a proxy the store does not hold: ignored (but logged).
            observed("c", "gone:1", moved, 43),
        ],
    );
    let mut expected = stored("c", "p:1", 1, Status::Up, 1);
    expected.source = Some(moved);
    expected.config_version = 42;
    let snapshot = store.boot().expect("boots");
    assert_eq!(snapshot.proxies, vec![expected]);
    assert_eq!(snapshot.recent.len(), 3, "every change is logged");
}

#[test]
fn a_config_change_stores_its_blob_and_a_batch_missing_one_is_refused_and_stores_nothing() {
    let dir = TempDir::new("config-blob");
    let mut store = open(&dir);
    commit(&mut store, &[put_config("c", 1)]);
    // A blob of another version, or of another cluster, is not this change's.
    for wrong in [put_config("c", 3), put_config("d", 2)] {
        let (changes, _) = numbered(2, &[put("c", "p:1", 1, Status::Up), put_config("c", 2)]);
        let blobs = vec![wrong.blob.expect("a config entry has a blob")];
        let message = expect_io(store.commit(&changes, &blobs), "no blob");
        assert!(message.contains("nothing stored"), "{message:?}");
    }
    assert_eq!(store.revision(), 1);
    drop(store);
    let mut store = open(&dir);
    let snapshot = store.boot().expect("boots");
    assert_eq!(snapshot.revision, 1);
    assert_eq!(snapshot.proxies, vec![]);
    assert_eq!(snapshot.configs, vec![config("c", 1)]);
    assert_eq!(snapshot.recent.len(), 1);
}

#[test]
fn the_log_holds_every_kind_of_change_as_committed() {
    let dir = TempDir::new("kinds");
    let mut store = open(&dir);
    store.boot().expect("boots");
    let entries = vec![
        put("c", "p:1", 1, Status::Up),
        observed("c", "p:1", source(2), 9),
        put_config("c", 1),
        admin(push_action("c", 1)),
        ChangeKind::RestartSent {
            cluster: "c".into(),
            proxy: "p:9".into(),
            incarnation: 3,
            to: source(3),
        }
        .into(),
        ChangeKind::Superseded {
            cluster: "c".into(),
            proxy: "p:1".into(),
            loser: 1,
            winner: 2,
            to: source(1),
        }
        .into(),
        ChangeKind::DeletionPaused {
            cluster: "c".into(),
            paused: true,
            lost: 3,
            total: 4,
        }
        .into(),
        ChangeKind::Stall {
            length: Duration::from_millis(1_500),
            shifted: 1,
        }
        .into(),
        rewound(1),
        delete("c", "p:1"),
    ];
    let committed = commit(&mut store, &entries);
    drop(store);
    let mut store = open(&dir);
    let snapshot = store.boot().expect("boots");
    assert_eq!(snapshot.recent, committed);
    assert_eq!(
        store.changes_after(0, usize::MAX).expect("reads the log"),
        committed
    );
    assert_eq!((snapshot.revision, snapshot.oldest_retained), (10, 1));
}

#[test]
fn a_rewound_change_bumps_the_generation_and_raises_the_next_boots_epoch() {
    let dir = TempDir::new("rewound");
    let mut store = open(&dir);
    assert_eq!(store.boot().expect("boots").epoch, 1);
    let generation = store.generation();
    commit(&mut store, &[rewound(7)]);
    let bumped = store.generation();
    assert!(bumped > generation, "{bumped} > {generation}");
    assert!(bumped >= now_secs() - 1);
    assert_eq!(
        store.boot().expect("boots").epoch,
        8,
        "newer than the seen 7"
    );
    // An older seen epoch lowers nothing, but still starts a generation.
    commit(&mut store, &[rewound(2), rewound(3)]);
    assert!(store.generation() >= bumped + 2);
    let bumped = store.generation();
    drop(store);
    let mut store = open(&dir);
    assert_eq!(
        store.generation(),
        bumped,
        "the generation survives reopening"
    );
    let snapshot = store.boot().expect("boots");
    assert_eq!((snapshot.epoch, snapshot.generation), (9, bumped));

    let mut memory = MemoryStore::new();
    assert_eq!(memory.generation(), 1);
    commit(&mut memory, &[rewound(5), rewound(1)]);
    assert_eq!(memory.generation(), 3);
    assert_eq!(memory.boot().expect("boots").epoch, 6);
}

#[test]
fn the_generation_of_a_store_survives_reopening_and_plain_commits() {
    let dir = TempDir::new("generation");
    let store = open(&dir);
    let generation = store.generation();
    drop(store);
    let mut store = open(&dir);
    assert_eq!(store.generation(), generation);
    commit(&mut store, &[put("c", "p:1", 1, Status::Up)]);
    assert_eq!(store.generation(), generation);
    assert_eq!(store.boot().expect("boots").generation, generation);
}

#[test]
fn retention_prunes_the_log_and_changes_after_recent_and_oldest_retained_agree() {
    let dir = TempDir::new("retention");
    let mut store = open(&dir);
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
    // 12 changes, 5 kept: revisions 8 to 12.
    let kept = all[7..].to_vec();
    assert_eq!(store.changes_after(0, 100).expect("reads"), kept);
    assert_eq!(
        store.changes_after(9, 100).expect("reads"),
        all[9..].to_vec()
    );
    assert_eq!(
        store.changes_after(9, 2).expect("reads"),
        all[9..11].to_vec()
    );
    assert_eq!(store.changes_after(12, 100).expect("reads"), vec![]);
    assert_eq!(store.changes_after(3, 0).expect("reads"), vec![]);
    let snapshot = store.boot().expect("boots");
    assert_eq!(snapshot.recent, kept);
    assert_eq!((snapshot.revision, snapshot.oldest_retained), (12, 8));
    // What pruning drops is only the log: the proxies and the audit stay.
    assert_eq!(snapshot.proxies.len(), 4);
    assert_eq!(store.audit().expect("reads audit").len(), 4);

    // A lower retention takes effect at the next commit, a reopened store has the default.
    store.set_retention(0);
    commit(&mut store, &[put("c", "p:9", 9, Status::Up)]);
    let snapshot = store.boot().expect("boots");
    assert_eq!(snapshot.recent, vec![]);
    assert_eq!((snapshot.revision, snapshot.oldest_retained), (13, 14));
    drop(store);
    let mut store = open(&dir);
    let latest = commit(&mut store, &[delete("c", "p:9")]);
    let snapshot = store.boot().expect("boots");
    assert_eq!(snapshot.recent, latest);
    assert_eq!((snapshot.revision, snapshot.oldest_retained), (14, 14));
}

#[test]
fn a_batch_whose_revisions_do_not_follow_the_store_is_refused_and_stores_nothing() {
    let dir = TempDir::new("refused");
    let mut store = open(&dir);
    commit(&mut store, &[put("c", "p:1", 1, Status::Up)]);
    let entries = [
        put("c", "p:2", 2, Status::Up),
        put("c", "p:3", 3, Status::Up),
    ];
    // A gap, a repeat of the last revision, and a batch that skips inside.
    let (gap, _) = numbered(3, &entries);
    let (repeat, _) = numbered(1, &entries);
    let (mut inside, _) = numbered(2, &entries);
    inside[1].revision = 4;
    for batch in [gap, repeat, inside] {
        let message = expect_io(store.commit(&batch, &[]), "refused a batch");
        assert!(message.contains("nothing stored"), "{message:?}");
        assert_eq!(store.revision(), 1);
    }
    let mut memory = MemoryStore::new();
    let (gap, _) = numbered(2, &entries);
    expect_io(memory.commit(&gap, &[]), "refused a batch");
    drop(store);
    let mut store = open(&dir);
    let snapshot = store.boot().expect("boots");
    assert_eq!(snapshot.revision, 1);
    assert_eq!(snapshot.proxies, vec![stored("c", "p:1", 1, Status::Up, 1)]);
    assert_eq!(snapshot.recent.len(), 1);
}

// ----- Epoch and revision -----

#[test]
fn the_epoch_bumps_by_one_per_boot_and_survives_reopening() {
    let dir = TempDir::new("epoch");
    let mut store = open(&dir);
    assert_eq!(store.boot().expect("boots").epoch, 1);
    assert_eq!(store.boot().expect("boots").epoch, 2);
    drop(store);
    let mut store = open(&dir);
    assert_eq!(store.boot().expect("boots").epoch, 3);
    drop(store);
    // Opening without booting does not count as a boot.
    drop(open(&dir));
    assert_eq!(open(&dir).boot().expect("boots").epoch, 4);
}

/// One revision per change (not per commit, as schema 1 counted): a commit of N changes
/// advances the revision by N.
#[test]
fn the_revision_grows_by_one_per_change_and_survives_reopening() {
    let dir = TempDir::new("revision");
    let mut store = open(&dir);
    // A commit before any boot is allowed, as with the memory store.
    commit(&mut store, &[put("c", "p:1", 1, Status::Ready)]);
    assert_eq!(store.revision(), 1);
    commit(&mut store, &[]);
    assert_eq!(store.revision(), 1, "an empty commit commits nothing");
    store.boot().expect("boots");
    commit(
        &mut store,
        &[admin(push_action("c", 1)), admin(push_action("c", 2))],
    );
    assert_eq!(store.revision(), 3);
    commit(&mut store, &[]);
    assert_eq!(store.revision(), 3);
    drop(store);

    let mut store = open(&dir);
    assert_eq!(
        store.revision(),
        3,
        "the revision is known right after opening"
    );
    assert_eq!(store.boot().expect("boots").revision, 3);
    commit(&mut store, &[delete("c", "p:1")]);
    assert_eq!(store.revision(), 4);
    drop(store);
    assert_eq!(open(&dir).boot().expect("boots").revision, 4);
}

// ----- The store of schema 1 -----

const FIXTURE_T0: u64 = 1_767_225_600_000;

fn fixture_dir(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    fs::create_dir_all(dir.path()).expect("creates the directory");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datadir-v1");
    fs::copy(fixture.join(FILE_NAME), dir.file()).expect("copies the fixture");
    dir
}

fn fixture_proxy(
    cluster: &str,
    name: &str,
    incarnation: u64,
    status: Status,
    since: u64,
) -> StoredProxy {
    StoredProxy {
        cluster: cluster.into(),
        proxy: name.into(),
        incarnation,
        status,
        since_unix_ms: Some(FIXTURE_T0 + since),
        last_heartbeat_unix_ms: None,
        source: None,
        config_version: 0,
    }
}

fn fixture_config(version: u64, hg0: &str) -> StoredConfig {
    let mut datasources = BTreeMap::new();
    datasources.insert("hg0".to_owned(), hg0.to_owned());
    datasources.insert("hg1".to_owned(), "replica".to_owned());
    StoredConfig {
        cluster: "beta".into(),
        version,
        base: format!(
            "# beta v{version}\n[hostgroups]\nhg0 = [\"primary\", \"standby\"]\nhg1 = [\"replica\"]\n"
        )
        .into_bytes(),
        datasources,
        // Stored before ids were kept.
        id: None,
    }
}

/// A `configs` value as the store writes it, to read every version behind its back.
#[derive(serde::Deserialize)]
struct RawConfig {
    base: Vec<u8>,
    datasources: BTreeMap<String, String>,
}

#[test]
fn a_store_of_schema_one_is_migrated_in_place_and_keeps_every_record() {
    let dir = fixture_dir("v1");
    let before = now_secs();
    let mut store = open(&dir);
    let generation = store.generation();
    assert!(
        (before..=now_secs()).contains(&generation),
        "the migration makes a generation from the clock: {generation}"
    );
    assert_eq!(store.revision(), 3, "the revision is kept");
    let snapshot = store.boot().expect("boots");
    assert_eq!(
        snapshot,
        Snapshot {
            epoch: 3,
            generation,
            revision: 3,
            oldest_retained: 4,
            clusters: Vec::new(),
            proxies: vec![
                fixture_proxy("alpha", "10.0.0.1:3307", 101, Status::Up, 7_000),
                fixture_proxy("alpha", "10.0.0.2:3307", 102, Status::Up, 2_000),
                fixture_proxy("alpha", "10.0.0.3:3307", 103, Status::Lost, 3_000),
                fixture_proxy("beta", "10.1.0.1:3307", 201, Status::Up, 4_000),
                fixture_proxy("beta", "10.1.0.3:3307", 203, Status::Lost, 9_000),
            ],
            configs: vec![fixture_config(2, "standby")],
            recent: vec![],
            restored: false,
        }
    );
    assert_eq!(
        store.audit().expect("reads audit"),
        vec![
            AuditEntry {
                at_unix_ms: FIXTURE_T0 + 6_000,
                action: r#"{"action":"push_config","cluster":"beta","size":70,"version":1}"#
                    .into(),
            },
            AuditEntry {
                at_unix_ms: FIXTURE_T0 + 8_000,
                action: r#"{"action":"switch","cluster":"beta","from":"primary","hostgroup":"hg0","to":"standby","version":2}"#
                    .into(),
            },
        ]
    );
    // It goes on from revision 3, one revision per change.
    let committed = commit(
        &mut store,
        &[
            status(
                "alpha",
                "10.0.0.3:3307",
                104,
                Some(Status::Lost),
                Some(Status::Ready),
            ),
            observed("beta", "10.1.0.1:3307", source(201), 2),
        ],
    );
    assert_eq!(committed[0].revision, 4);
    drop(store);

    // Every version of the config is still there.
    {
        let db = redb::ReadOnlyDatabase::open(dir.file()).expect("redb opens the file");
        let txn = db.begin_read().expect("begins a read");
        let configs = txn.open_table(CONFIGS).expect("opens configs");
        let versions: Vec<StoredConfig> = configs
            .iter()
            .expect("iterates")
            .map(|entry| {
                let (key, value) = entry.expect("reads");
                let key = key.value();
                assert_eq!(&key[..6], b"beta\0\0");
                let version = u64::from_be_bytes(key[6..].try_into().expect("8 bytes"));
                // Schema 3 keeps each record in an envelope: 00 is a plain one.
                let (envelope, record) = value.value().split_first().expect("not empty");
                assert_eq!(*envelope, 0, "a plain envelope without a store key");
                let raw: RawConfig = postcard::from_bytes(record).expect("decodes");
                StoredConfig {
                    cluster: "beta".into(),
                    version,
                    base: raw.base,
                    datasources: raw.datasources,
                    id: None,
                }
            })
            .collect();
        assert_eq!(
            versions,
            vec![fixture_config(1, "primary"), fixture_config(2, "standby")]
        );
    }
    assert_eq!(
        read_raw(&dir, META, b"format"),
        Some(FORMAT.to_be_bytes().to_vec())
    );

    // A second open finds schema 3 and migrates nothing: the records written since are
    // read as they were written, and the generation stays.
    let mut store = open(&dir);
    assert_eq!(store.generation(), generation);
    let snapshot = store.boot().expect("boots");
    assert_eq!(snapshot.epoch, 4);
    assert_eq!(snapshot.revision, 5);
    assert_eq!(snapshot.recent, committed);
    let restarted = stored("alpha", "10.0.0.3:3307", 104, Status::Ready, 4);
    assert_eq!(snapshot.proxies[2], restarted);
    let mut observed_proxy = fixture_proxy("beta", "10.1.0.1:3307", 201, Status::Up, 4_000);
    observed_proxy.source = Some(source(201));
    observed_proxy.config_version = 2;
    assert_eq!(snapshot.proxies[3], observed_proxy);
}

#[test]
fn a_store_of_schema_one_with_a_damaged_proxy_is_refused_and_not_migrated() {
    let dir = fixture_dir("v1-damaged");
    write_raw(&dir, PROXIES, b"alpha\0\0bad:1", &[1, 9, 1]);
    expect_corrupt(RedbStore::open(dir.path()), "unknown proxy status 9");
    assert_eq!(
        read_raw(&dir, META, b"format"),
        Some(1u64.to_be_bytes().to_vec())
    );
}

// ----- What the store refuses -----

#[test]
fn a_second_open_of_a_held_directory_is_in_use_and_the_first_keeps_working() {
    let dir = TempDir::new("held");
    let mut first = open(&dir);
    first.boot().expect("boots");
    match RedbStore::open(dir.path()) {
        Err(StoreError::InUse(message)) => {
            assert!(message.contains(FILE_NAME), "{message:?} names the file");
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    commit(&mut first, &[put("c", "p:1", 1, Status::Up)]);
    assert_eq!(first.revision(), 1);
    assert_eq!(
        first.boot().expect("still boots").proxies,
        vec![stored("c", "p:1", 1, Status::Up, 1)]
    );
    drop(first);
    let mut again = open(&dir);
    assert_eq!(again.boot().expect("boots").epoch, 3);
}

#[test]
fn a_directory_held_by_another_process_is_in_use() {
    let dir = TempDir::new("held-elsewhere");
    drop(open(&dir));
    let mut child = spawn_child("hold", dir.path());
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("HELD") => break,
            Some(Ok(_)) => {}
            other => {
                let _ = child.kill();
                panic!("the child ended before holding the store: {other:?}");
            }
        }
    }
    let result = RedbStore::open(dir.path());
    child.kill().expect("kills the child");
    child.wait().expect("reaps the child");
    assert!(
        matches!(result, Err(StoreError::InUse(_))),
        "expected InUse, got {result:?}"
    );
    // The lock goes with the process.
    assert_eq!(open(&dir).boot().expect("boots").epoch, 2);
}

#[test]
fn a_file_that_is_not_a_redb_database_is_refused_and_left_unchanged() {
    for garbage in [
        b"this is not a database, and must survive the attempt\n".repeat(200),
        vec![0u8; 3],
        b"redb".to_vec(),
        (0..=255u8).cycle().take(1 << 16).collect(),
    ] {
        let dir = TempDir::new("garbage");
        fs::create_dir_all(dir.path()).expect("creates the directory");
        fs::write(dir.file(), &garbage).expect("writes garbage");
        let message = expect_corrupt(RedbStore::open(dir.path()), FILE_NAME);
        assert!(
            message.to_lowercase().contains("not a redb database"),
            "{message:?}"
        );
        // (assert! rather than assert_eq!: a failure would print 64 KiB of bytes.)
        assert!(
            fs::read(dir.file()).expect("reads the file back") == garbage,
            "changed"
        );
        // A second attempt fails the same way: the first left nothing behind.
        expect_corrupt(RedbStore::open(dir.path()), FILE_NAME);
        assert!(
            fs::read(dir.file()).expect("reads the file back") == garbage,
            "changed"
        );
    }
}

#[test]
fn an_empty_database_file_is_refused_and_left_empty() {
    let dir = TempDir::new("empty-file");
    fs::create_dir_all(dir.path()).expect("creates the directory");
    fs::write(dir.file(), b"").expect("writes an empty file");
    for _ in 0..2 {
        let message = expect_corrupt(RedbStore::open(dir.path()), FILE_NAME);
        assert!(message.contains("0 bytes long"), "{message:?}");
        assert!(message.contains("not initialized"), "{message:?}");
        assert_eq!(fs::metadata(dir.file()).expect("still there").len(), 0);
    }
}

#[test]
fn a_truncated_store_file_is_refused_as_corrupt_and_left_unchanged() {
    let dir = TempDir::new("truncated");
    let mut store = open(&dir);
    store.boot().expect("boots");
    let batch: Vec<Entry> = (0..2_000)
        .map(|i| put("c", &format!("p:{i}"), i, Status::Up))
        .collect();
    commit(&mut store, &batch);
    drop(store);
    let original = fs::read(dir.file()).expect("reads the file");
    for len in [320, 4096, original.len() / 2, original.len() - 1] {
        let truncated = &original[..len];
        fs::write(dir.file(), truncated).expect("writes the truncated file");
        expect_corrupt(RedbStore::open(dir.path()), "truncated");
        assert!(
            fs::read(dir.file()).expect("reads the file back") == truncated,
            "changed"
        );
    }
}

#[test]
fn a_data_directory_path_that_is_a_file_is_refused() {
    let dir = TempDir::new("file-not-dir");
    fs::create_dir_all(dir.path()).expect("creates the directory");
    let not_a_dir = dir.path().join("data");
    fs::write(&not_a_dir, b"a file").expect("writes a file");
    match RedbStore::open(&not_a_dir) {
        Err(StoreError::Io(message)) => {
            assert!(
                message.contains(&not_a_dir.display().to_string()),
                "{message:?}"
            );
            assert!(message.contains("not a directory"), "{message:?}");
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert_eq!(
        fs::read(&not_a_dir).expect("reads the file back"),
        b"a file"
    );
}

#[test]
fn a_database_path_that_is_a_directory_is_refused() {
    let dir = TempDir::new("dir-not-file");
    fs::create_dir_all(dir.file()).expect("creates a directory where the file goes");
    match RedbStore::open(dir.path()) {
        Err(StoreError::Io(message)) => {
            assert!(message.contains(FILE_NAME), "{message:?}");
            assert!(message.contains("not a regular file"), "{message:?}");
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn a_store_of_schema_four_is_refused_as_too_new_and_left_byte_for_byte_unchanged() {
    let dir = TempDir::new("too-new");
    let mut store = open(&dir);
    store.boot().expect("boots");
    commit(&mut store, &[put("c", "p:1", 1, Status::Up)]);
    drop(store);
    write_raw(&dir, META, b"format", &4u64.to_be_bytes());
    let original = fs::read(dir.file()).expect("reads the file");
    for _ in 0..2 {
        match RedbStore::open(dir.path()) {
            Err(StoreError::TooNew(message)) => {
                assert!(message.contains(FILE_NAME), "{message:?}");
                assert!(
                    message.contains(
                        "has store schema 4; this keeper reads schemas up to 3: upgrade zerokeeper"
                    ),
                    "{message:?}"
                );
            }
            other => panic!("expected TooNew, got {other:?}"),
        }
        assert!(
            fs::read(dir.file()).expect("reads the file back") == original,
            "changed"
        );
    }
}

#[test]
fn a_store_of_an_unknown_older_schema_is_refused_as_corrupt() {
    let dir = TempDir::new("schema-zero");
    drop(open(&dir));
    write_raw(&dir, META, b"format", &0u64.to_be_bytes());
    expect_corrupt(RedbStore::open(dir.path()), "unknown store schema 0");
}

#[test]
fn a_redb_database_of_another_application_is_refused_and_left_byte_for_byte_unchanged() {
    const OTHER: TableDefinition<u64, u64> = TableDefinition::new("other");
    let dir = TempDir::new("foreign");
    fs::create_dir_all(dir.path()).expect("creates the directory");
    {
        let db = redb::Database::create(dir.file()).expect("redb creates a database");
        let txn = db.begin_write().expect("begins");
        txn.open_table(OTHER)
            .expect("opens")
            .insert(1, 2)
            .expect("inserts");
        txn.commit().expect("commits");
    }
    let original = fs::read(dir.file()).expect("reads the file");
    expect_corrupt(RedbStore::open(dir.path()), "not a zerokeeper store");
    assert!(
        fs::read(dir.file()).expect("reads the file back") == original,
        "changed"
    );
    let db = redb::Database::open(dir.file()).expect("redb still opens it");
    let txn = db.begin_read().expect("begins a read");
    let names: Vec<String> = txn
        .list_tables()
        .expect("lists")
        .map(|t| redb::TableHandle::name(&t).to_owned())
        .collect();
    assert_eq!(names, vec!["other".to_owned()]);
    let value = txn
        .open_table(OTHER)
        .expect("opens")
        .get(1)
        .expect("reads")
        .map(|v| v.value());
    assert_eq!(value, Some(2));
}

#[test]
fn corrupt_entries_are_reported_as_corrupt_rather_than_a_panic() {
    // An undecodable value, an unknown status, trailing bytes, a key without a cluster
    // terminator, a key that is not UTF-8. A proxy value is {incarnation, status, since:
    // Option, last heartbeat: Option, source: Option, config version}.
    let cases: [(&[u8], &[u8], &str); 5] = [
        (b"c\0\0p:1", &[0xFF], "cannot be decoded"),
        (b"c\0\0p:1", &[1, 9, 0, 0, 0, 0], "unknown proxy status 9"),
        (b"c\0\0p:1", &[1, 1, 0, 0, 0, 0, 0], "trailing bytes"),
        (b"c", &[1, 1, 0, 0, 0, 0], "no cluster terminator"),
        (b"c\0\0\xFF\xFE", &[1, 1, 0, 0, 0, 0], "not UTF-8"),
    ];
    for (key, value, mentions) in cases {
        let dir = TempDir::new("corrupt");
        drop(open(&dir));
        write_raw(&dir, PROXIES, key, value);
        let mut store = open(&dir);
        expect_corrupt(store.boot(), mentions);
    }
    let dir = TempDir::new("corrupt-meta");
    drop(open(&dir));
    write_raw(&dir, META, b"revision", &[1, 2, 3]);
    expect_corrupt(RedbStore::open(dir.path()), "revision is not 8 bytes");

    let dir = TempDir::new("corrupt-generation");
    drop(open(&dir));
    write_raw(&dir, META, b"generation", &[1]);
    expect_corrupt(RedbStore::open(dir.path()), "generation is not 8 bytes");

    // The log: trailing bytes after a change, a change under another revision's key, and
    // a log that does not end at meta's revision.
    let dir = TempDir::new("corrupt-log");
    let mut store = open(&dir);
    let committed = commit(
        &mut store,
        &[
            put("c", "p:1", 1, Status::Up),
            put("c", "p:2", 2, Status::Up),
        ],
    );
    drop(store);
    let good = read_raw(&dir, CHANGES, &2u64.to_be_bytes()).expect("change 2 is logged");
    let mut trailing = good.clone();
    trailing.push(0);
    write_raw(&dir, CHANGES, &2u64.to_be_bytes(), &trailing);
    let mut store = open(&dir);
    expect_corrupt(store.changes_after(0, 10), "a change has 1 trailing bytes");
    expect_corrupt(store.boot(), "trailing bytes");
    drop(store);
    let first = read_raw(&dir, CHANGES, &1u64.to_be_bytes()).expect("change 1 is logged");
    write_raw(&dir, CHANGES, &2u64.to_be_bytes(), &first);
    let store = open(&dir);
    expect_corrupt(
        store.changes_after(1, 10),
        "the change stored as revision 2 has revision 1",
    );
    drop(store);
    write_raw(&dir, CHANGES, &2u64.to_be_bytes(), &good);
    assert_eq!(
        open(&dir).changes_after(0, 10).expect("reads"),
        committed,
        "repaired behind its back"
    );
    write_raw(&dir, META, b"revision", &5u64.to_be_bytes());
    expect_corrupt(
        RedbStore::open(dir.path()),
        "the log ends at revision 2, but meta's revision is 5",
    );
}

#[test]
fn a_file_with_a_flipped_byte_anywhere_is_read_intact_or_refused_as_corrupt_never_a_panic() {
    let dir = TempDir::new("flip");
    let mut store = open(&dir);
    store.boot().expect("boots");
    let batch: Vec<Entry> = (0..2_000)
        .map(|i| {
            put(
                "c",
                &format!("10.0.{}.{}:3307", i / 256, i % 256),
                i,
                Status::Up,
            )
        })
        .collect();
    commit(&mut store, &batch);
    commit(
        &mut store,
        &[put_config("c", 1), admin(push_action("c", 1))],
    );
    let mut expected = store.boot().expect("boots");
    let expected_audit = store.audit().expect("reads audit");
    drop(store);
    let original = fs::read(dir.file()).expect("reads the file");

    let (mut intact, mut refused) = (0, 0);
    for offset in (0..original.len()).step_by(997) {
        let mut bytes = original.clone();
        bytes[offset] ^= 0x5A;
        fs::write(dir.file(), &bytes).expect("writes the damaged file");
        let result = std::panic::catch_unwind(|| {
            let mut store = RedbStore::open(dir.path())?;
            Ok::<_, StoreError>((store.boot()?, store.audit()?))
        });
        expected.epoch += 1;
        match result {
            Err(_) => panic!("a flipped byte at offset {offset} made the store panic"),
            Ok(Ok((snapshot, audit))) => {
                assert!(snapshot == expected, "offset {offset}: a wrong snapshot");
                assert_eq!(audit, expected_audit, "offset {offset}");
                intact += 1;
            }
            Ok(Err(StoreError::Corrupt(_))) => refused += 1,
            Ok(Err(other)) => panic!("offset {offset}: expected Corrupt, got {other:?}"),
        }
        expected.epoch -= 1;
    }
    eprintln!("{intact} flips were harmless (unused bytes), {refused} were refused");
    assert!(refused > 0, "some flips hit live pages");
}

// ----- Size -----

/// One revision per change (not per commit, as schema 1 counted): the 10,000 changes of
/// one commit are revisions 1 to 10,000, in one transaction.
#[test]
fn a_commit_of_ten_thousand_changes_advances_the_revision_by_ten_thousand() {
    let dir = TempDir::new("ten-thousand");
    let mut store = open(&dir);
    store.boot().expect("boots");
    let batch: Vec<Entry> = (0..10_000)
        .map(|i| {
            put(
                "c",
                &format!("10.0.{}.{}:3307", i / 256, i % 256),
                i,
                Status::Up,
            )
        })
        .collect();
    let started = Instant::now();
    commit(&mut store, &batch);
    eprintln!("commit of 10,000 changes: {:?}", started.elapsed());
    assert_eq!(store.revision(), 10_000);
    let snapshot = store.boot().expect("boots");
    assert_eq!(snapshot.revision, 10_000);
    assert_eq!(snapshot.proxies.len(), 10_000);
    assert_eq!(snapshot.recent.len(), 10_000);
    assert_eq!(snapshot.oldest_retained, 1);
}

#[test]
fn booting_a_hundred_thousand_stored_proxies_returns_them_all() {
    const CLUSTERS: u64 = 20;
    const PER_CLUSTER: u64 = 5_000;
    let dir = TempDir::new("hundred-thousand");
    let mut store = open(&dir);
    let mut entries = Vec::new();
    for c in 0..CLUSTERS {
        for p in 0..PER_CLUSTER {
            let status = [Status::Ready, Status::Up, Status::Lost][(p % 3) as usize];
            entries.push((
                format!("cluster-{c:02}"),
                format!("10.{c}.{}.{}:3307", p / 256, p % 256),
                p,
                status,
            ));
        }
    }
    let started = Instant::now();
    let mut expected = Vec::new();
    for chunk in entries.chunks(10_000) {
        let batch: Vec<Entry> = chunk
            .iter()
            .map(|(cluster, name, incarnation, status)| put(cluster, name, *incarnation, *status))
            .collect();
        let first = store.revision() + 1;
        commit(&mut store, &batch);
        expected.extend(chunk.iter().zip(first..).map(
            |((cluster, name, incarnation, status), revision)| {
                stored(cluster, name, *incarnation, *status, revision)
            },
        ));
    }
    eprintln!(
        "commit of 100,000 proxies in 10 commits: {:?}",
        started.elapsed()
    );
    drop(store);

    let started = Instant::now();
    let mut store = open(&dir);
    let opened = started.elapsed();
    let snapshot = store.boot().expect("boots");
    eprintln!(
        "open {opened:?}, open and boot of 100,000 proxies (and as many logged changes): {:?}",
        started.elapsed()
    );
    expected.sort_by(|a, b| (&a.cluster, &a.proxy).cmp(&(&b.cluster, &b.proxy)));
    assert_eq!(snapshot.proxies.len(), 100_000);
    assert!(
        snapshot.proxies == expected,
        "the proxies come back, sorted by (cluster, proxy)"
    );
    assert_eq!(snapshot.recent.len(), 100_000);
}

// ----- Crash safety: SIGKILL in the middle of commits -----

const CHILD_MODE: &str = "ZK_STORE_TEST_CHILD_MODE";
const CHILD_DIR: &str = "ZK_STORE_TEST_CHILD_DIR";
const CHILD_TEST: &str = "a_child_process_holds_or_commits_to_the_store_when_a_parent_test_asks";

/// Runs this test binary again, as a child running only `CHILD_TEST` in `mode`.
fn spawn_child(mode: &str, dir: &Path) -> Child {
    let exe = std::env::current_exe().expect("the test binary's path");
    Command::new(exe)
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_MODE, mode)
        .env(CHILD_DIR, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawns the child")
}

/// The changes of the commit number `n` (from 1), the same in every process: large enough
/// (80 changes) that a kill lands in the middle of writing.
const CRASH_BATCH: u64 = 80;

fn crash_batch(n: u64) -> Vec<Entry> {
    let mut batch = Vec::new();
    for i in 0..60 {
        let k = (n * 37 + i) % 500;
        let from = [None, Some(Status::Ready), Some(Status::Up)][((n + i) % 3) as usize];
        let to = [Status::Ready, Status::Up, Status::Lost][((n * 7 + i) % 3) as usize];
        batch.push(status(
            &format!("c{}", k % 3),
            &format!("10.0.{}.{}:3307", k / 256, k % 256),
            n,
            from,
            Some(to),
        ));
    }
    for i in 0..17 {
        let k = (n * 11 + i * 29) % 500;
        batch.push(delete(
            &format!("c{}", k % 3),
            &format!("10.0.{}.{}:3307", k / 256, k % 256),
        ));
    }
    let k = (n * 13) % 500;
    batch.push(observed(
        &format!("c{}", k % 3),
        &format!("10.0.{}.{}:3307", k / 256, k % 256),
        source(n + 1),
        n,
    ));
    batch.push(put_config(&format!("c{}", n % 3), n));
    batch.push(admin(push_action(&format!("c{}", n % 3), n)));
    assert_eq!(batch.len() as u64, CRASH_BATCH);
    batch
}

fn durable_revision(line: &str) -> Option<u64> {
    let at = line.rfind("DURABLE ")?;
    line[at + "DURABLE ".len()..].trim().parse().ok()
}

/// Not a test of its own: in a normal run it returns at once. Spawned by a test with
/// `CHILD_MODE` set, it either holds the store open until killed (`hold`), or commits
/// `crash_batch`es in a loop and prints `DURABLE n` after each commit returns, `n` being
/// the revision of its last change (`commit`).
#[test]
fn a_child_process_holds_or_commits_to_the_store_when_a_parent_test_asks() {
    let (Ok(mode), Some(dir)) = (std::env::var(CHILD_MODE), std::env::var_os(CHILD_DIR)) else {
        return;
    };
    let mut store = RedbStore::open(Path::new(&dir)).expect("the child opens the store");
    store.boot().expect("the child boots");
    let mut out = std::io::stdout().lock();
    match mode.as_str() {
        "hold" => {
            writeln!(out, "HELD").expect("writes");
            out.flush().expect("flushes");
            // Until killed, or until the parent closes stdin.
            let mut sink = String::new();
            let _ = std::io::stdin().read_line(&mut sink);
        }
        "commit" => {
            // Bounded, in case the parent is gone (a write to its closed pipe fails too).
            for _ in 0..100_000 {
                let n = store.revision() / CRASH_BATCH + 1;
                commit(&mut store, &crash_batch(n));
                writeln!(out, "DURABLE {}", store.revision()).expect("writes");
                out.flush().expect("flushes");
            }
        }
        other => panic!("unknown child mode {other:?}"),
    }
}

#[test]
fn a_store_killed_with_sigkill_reopens_with_every_revision_it_reported_durable() {
    let dir = TempDir::new("crash");
    drop(open(&dir));
    // The model: the memory store, advanced to whatever revision the file holds.
    let mut model = MemoryStore::new();
    let mut last_found = 0;
    for (round, wait_for) in [3usize, 17, 1, 40, 8].into_iter().enumerate() {
        let mut child = spawn_child("commit", dir.path());
        let stdout = child.stdout.take().expect("the child's stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let mut printed = Vec::new();
        while printed.len() < wait_for {
            match lines.next() {
                Some(Ok(line)) => printed.extend(durable_revision(&line)),
                other => {
                    let _ = child.kill();
                    panic!("the child stopped after {printed:?}: {other:?}");
                }
            }
        }
        // SIGKILL, most likely in the middle of the next commit; a different pause each
        // round lands it at a different point of that commit.
        std::thread::sleep(Duration::from_micros(700 * round as u64));
        child.kill().expect("kills the child");
        let status = child.wait().expect("reaps the child");
        assert_eq!(
            status.signal(),
            Some(9),
            "the child was killed, not ended: {status:?}"
        );
        let reported = *printed.last().expect("read at least one revision");
        assert_eq!(
            printed.first(),
            Some(&(last_found + CRASH_BATCH)),
            "the child went on from the file"
        );

        let mut store = RedbStore::open(dir.path()).expect("reopens after SIGKILL");
        let snapshot = store.boot().expect("boots after SIGKILL");
        assert!(
            snapshot.revision >= reported,
            "round {round}: revision {} lost the reported {reported}",
            snapshot.revision
        );
        assert_eq!(
            snapshot.revision % CRASH_BATCH,
            0,
            "round {round}: a commit is all or nothing"
        );
        // One boot by each child and one here.
        assert_eq!(snapshot.epoch, 2 * (round as u32 + 1));
        while model.revision() < snapshot.revision {
            let n = model.revision() / CRASH_BATCH + 1;
            commit(&mut model, &crash_batch(n));
        }
        let expected = model.boot().expect("the model boots");
        assert_eq!(
            snapshot.proxies, expected.proxies,
            "round {round}: the proxies"
        );
        assert_eq!(
            snapshot.configs, expected.configs,
            "round {round}: the configs"
        );
        assert!(snapshot.recent == expected.recent, "round {round}: the log");
        assert_eq!(
            store.audit().expect("reads audit"),
            model.audit().expect("reads audit"),
            "round {round}: the audit"
        );
        eprintln!(
            "round {round}: the child reported {reported}, the file holds {}",
            snapshot.revision
        );
        last_found = snapshot.revision;
    }
}

#[test]
fn a_new_store_is_private_to_its_owner_and_an_open_one_is_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    let dir = TempDir::new("private");
    drop(open(&dir));
    assert_eq!(mode(dir.path()), 0o700, "the data directory");
    assert_eq!(mode(&dir.file()), 0o600, "the store file");
    // A store file left readable by others (an older release made it 0644).
    fs::set_permissions(dir.file(), fs::Permissions::from_mode(0o644)).expect("chmod");
    let store = open(&dir);
    assert_eq!(mode(&dir.file()), 0o600);
    assert_eq!(store.revision(), 0, "nothing stored was lost");
}

// ----- Configs sealed at rest -----

fn store_keys(lines: &[&str]) -> StoreKeys {
    StoreKeys::parse(&lines.join("\n")).expect("valid store keys")
}

/// The raw value of every config version, by (cluster key, version).
fn raw_configs(dir: &TempDir) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = redb::ReadOnlyDatabase::open(dir.file()).expect("redb opens the file");
    let txn = db.begin_read().expect("begins a read");
    let configs = txn.open_table(CONFIGS).expect("opens configs");
    configs
        .iter()
        .expect("iterates")
        .map(|entry| {
            let (key, value) = entry.expect("reads");
            (key.value().to_vec(), value.value().to_vec())
        })
        .collect()
}

fn sealed_under(value: &[u8]) -> Option<u32> {
    (value.first() == Some(&1)).then(|| u32::from_be_bytes(value[1..5].try_into().expect("4")))
}

#[test]
fn configs_are_sealed_at_rest_and_open_only_with_the_store_key() {
    let dir = TempDir::new("sealed");
    let a = store_keys(&[STORE_KEY_A]);
    let mut store = RedbStore::open_sealed(dir.path(), Some(a.clone())).expect("opens");
    store.boot().expect("boots");
    let configs = [secret_config("pay", 1), secret_config("pay", 2)];
    commit(
        &mut store,
        &[config_entry(&configs[0]), config_entry(&configs[1])],
    );
    drop(store);

    let file = fs::read(dir.file()).expect("reads the file");
    assert!(!contains(&file, b"hunter2"), "a credential is in the file");
    let raw = raw_configs(&dir);
    assert_eq!(raw.len(), 2);
    for (_, value) in &raw {
        assert_eq!(sealed_under(value), Some(a.sealing().id()));
    }

    // Without the key the store does not open, and says which key and which flag.
    let message = expect_sealed(RedbStore::open(dir.path()), "--store-key-file");
    assert!(
        message.contains(&format!("{:08x}", a.sealing().id())),
        "{message}"
    );
    // With another key only, neither.
    expect_sealed(
        RedbStore::open_sealed(dir.path(), Some(store_keys(&[STORE_KEY_B]))),
        "does not hold",
    );
    // With it, every version comes back as stored.
    let mut store = RedbStore::open_sealed(dir.path(), Some(a)).expect("opens");
    let snapshot = store.boot().expect("boots");
    assert_eq!(snapshot.configs, vec![configs[1].clone()]);
}

#[test]
fn a_new_first_store_key_reseals_every_version_and_the_old_key_can_then_go() {
    let dir = TempDir::new("rotate");
    let mut store =
        RedbStore::open_sealed(dir.path(), Some(store_keys(&[STORE_KEY_A]))).expect("opens");
    store.boot().expect("boots");
    let configs = [secret_config("pay", 1), secret_config("bill", 1)];
    commit(
        &mut store,
        &[config_entry(&configs[0]), config_entry(&configs[1])],
    );
    drop(store);

    let rotated = store_keys(&[STORE_KEY_B, STORE_KEY_A]);
    let b = rotated.sealing().id();
    drop(RedbStore::open_sealed(dir.path(), Some(rotated)).expect("opens with both"));
    for (_, value) in raw_configs(&dir) {
        assert_eq!(sealed_under(&value), Some(b), "resealed under the new key");
    }
    // The old key is no longer needed, and no longer enough.
    let mut store =
        RedbStore::open_sealed(dir.path(), Some(store_keys(&[STORE_KEY_B]))).expect("opens");
    let snapshot = store.boot().expect("boots");
    assert_eq!(
        snapshot.configs,
        vec![configs[1].clone(), configs[0].clone()]
    );
    drop(store);
    expect_sealed(
        RedbStore::open_sealed(dir.path(), Some(store_keys(&[STORE_KEY_A]))),
        "does not hold",
    );
}

#[test]
fn plain_configs_are_sealed_when_a_store_key_is_first_given() {
    let dir = TempDir::new("seal-later");
    let mut store = open(&dir);
    store.boot().expect("boots");
    let config = secret_config("pay", 1);
    commit(&mut store, &[config_entry(&config)]);
    drop(store);
    assert!(
        contains(&raw_configs(&dir)[0].1, b"hunter2"),
        "plain without a key"
    );

    let keys = store_keys(&[STORE_KEY_A]);
    let id = keys.sealing().id();
    let mut store = RedbStore::open_sealed(dir.path(), Some(keys)).expect("opens");
    assert_eq!(store.boot().expect("boots").configs, vec![config]);
    drop(store);
    let raw = raw_configs(&dir);
    assert_eq!(sealed_under(&raw[0].1), Some(id));
    assert!(!contains(&raw[0].1, b"hunter2"));
}

#[test]
fn a_store_of_schema_two_is_migrated_with_its_configs_sealed() {
    let dir = TempDir::new("schema-two");
    let mut store = open(&dir);
    store.boot().expect("boots");
    let configs = [secret_config("pay", 1), secret_config("pay", 2)];
    commit(
        &mut store,
        &[config_entry(&configs[0]), config_entry(&configs[1])],
    );
    drop(store);
    // Back to schema 2, where a config value is the bare record, without its id (the
    // envelope's record ends with `Some` and 8 bytes).
    for (key, value) in raw_configs(&dir) {
        assert_eq!(value[0], 0);
        write_raw(&dir, CONFIGS, &key, &value[1..value.len() - 9]);
    }
    let configs = configs.map(|c| StoredConfig { id: None, ..c });
    write_raw(&dir, META, b"format", &2u64.to_be_bytes());

    let keys = store_keys(&[STORE_KEY_A]);
    let id = keys.sealing().id();
    let mut store = RedbStore::open_sealed(dir.path(), Some(keys)).expect("migrates");
    assert_eq!(
        store.boot().expect("boots").configs,
        vec![configs[1].clone()]
    );
    drop(store);
    assert_eq!(
        read_raw(&dir, META, b"format"),
        Some(FORMAT.to_be_bytes().to_vec())
    );
    for (_, value) in raw_configs(&dir) {
        assert_eq!(sealed_under(&value), Some(id));
    }
}

#[test]
fn a_sealed_config_moved_or_damaged_is_refused_as_corrupt() {
    let dir = TempDir::new("seal-moved");
    let keys = store_keys(&[STORE_KEY_A]);
    let mut store = RedbStore::open_sealed(dir.path(), Some(keys.clone())).expect("opens");
    store.boot().expect("boots");
    commit(
        &mut store,
        &[
            config_entry(&secret_config("pay", 1)),
            config_entry(&secret_config("pay", 2)),
        ],
    );
    drop(store);
    let raw = raw_configs(&dir);
    // Version 1's value copied over version 2's: sealed for another version.
    write_raw(&dir, CONFIGS, &raw[1].0, &raw[0].1);
    let mut store = RedbStore::open_sealed(dir.path(), Some(keys.clone())).expect("opens");
    expect_corrupt(store.boot(), "does not open");
    drop(store);
    // A flipped byte in the ciphertext.
    let mut damaged = raw[1].1.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    write_raw(&dir, CONFIGS, &raw[1].0, &damaged);
    let mut store = RedbStore::open_sealed(dir.path(), Some(keys.clone())).expect("opens");
    expect_corrupt(store.boot(), "does not open");
    // An unknown envelope.
    drop(store);
    write_raw(&dir, CONFIGS, &raw[1].0, &[7, 1, 2]);
    expect_corrupt(
        RedbStore::open_sealed(dir.path(), Some(keys)),
        "unknown envelope",
    );
}

#[test]
fn a_snapshot_taken_beside_the_commits_restores_everything_once_as_a_new_generation() {
    let dir = TempDir::new("snapshot-source");
    let keys = StoreKeys::parse(&format!("{STORE_KEY_A}\n")).expect("keys");
    let mut store = RedbStore::open_sealed(dir.path(), Some(keys.clone())).expect("opens");
    store.boot().expect("boots");
    commit(
        &mut store,
        &[
            put("alpha", "10.0.0.1:3307", 11, Status::Up),
            put("alpha", "10.0.0.2:3307", 12, Status::Ready),
            put("beta", "10.1.0.1:3307", 21, Status::Lost),
            put_config("alpha", 1),
            put_config("alpha", 2),
            admin(push_action("alpha", 2)),
        ],
    );
    let reader = store.reader().expect("a reader");
    let (summary, mut file) = reader.snapshot().expect("redb snapshots").expect("made");
    // The store commits on after the snapshot: the snapshot does not see it.
    commit(&mut store, &[put("beta", "10.1.0.2:3307", 22, Status::Up)]);
    assert_eq!(summary.revision, 6);
    assert_eq!(summary.proxies, 3);
    assert_eq!(summary.clusters, 2);
    assert_eq!(
        (summary.config_versions, summary.sealed_config_versions),
        (2, 2)
    );
    assert_eq!(summary.audit_entries, 1);
    let saved = TempDir::new("snapshot-file");
    fs::create_dir_all(saved.path()).expect("dir");
    let path = saved.path().join("backup.snapshot");
    std::io::copy(&mut file, &mut fs::File::create(&path).expect("create")).expect("copy");
    assert_eq!(
        zerokeeper::store::redb::snapshot_status(&path).expect("verifies"),
        summary
    );
    // The log as it was at the snapshot: its first six changes.
    let expected = store.changes_after(0, 6).expect("the log");

    let target = TempDir::new("snapshot-restored");
    let restored =
        zerokeeper::store::redb::restore_snapshot(&path, target.path()).expect("restores");
    assert!(restored.generation > summary.generation, "{restored:?}");
    let mut back = RedbStore::open_sealed(target.path(), Some(keys)).expect("opens");
    let first = back.boot().expect("boots");
    assert!(first.restored, "the first boot knows it is a restore");
    assert_eq!(first.generation, restored.generation);
    assert_eq!(first.revision, 6);
    assert_eq!(first.recent, expected);
    let names: Vec<(&str, &str)> = first
        .proxies
        .iter()
        .map(|p| (p.cluster.as_str(), p.proxy.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("alpha", "10.0.0.1:3307"),
            ("alpha", "10.0.0.2:3307"),
            ("beta", "10.1.0.1:3307")
        ]
    );
    assert_eq!(first.configs, vec![config("alpha", 2)]);
    assert_eq!(back.audit().expect("audit").len(), 1);
    assert!(!back.boot().expect("boots").restored, "only the first boot");
    // Never over a store.
    expect_io(
        zerokeeper::store::redb::restore_snapshot(&path, target.path()),
        "already holds a store",
    );
}
