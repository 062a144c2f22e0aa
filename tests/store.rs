//! The default store, `RedbStore`: it behaves exactly as the `MemoryStore` for the same
//! changes, keeps its epoch, revision, config history and audit log across reopening,
//! refuses what is not its own file without touching it, and loses nothing that a commit
//! reported durable when its process is killed with SIGKILL in the middle of writing.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};
use zerokeeper::keeper::Status;
use zerokeeper::store::redb::{FILE_NAME, FORMAT, RedbStore};
use zerokeeper::store::{
    AuditEntry, Change, MemoryStore, Snapshot, Store, StoreError, StoredConfig, StoredProxy,
};

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

fn proxy(cluster: &str, name: &str, incarnation: u64, status: Status) -> StoredProxy {
    StoredProxy {
        cluster: cluster.into(),
        proxy: name.into(),
        incarnation,
        status,
        since_unix_ms: 1_700_000_000_000 + incarnation,
    }
}

fn put(cluster: &str, name: &str, incarnation: u64, status: Status) -> Change {
    Change::PutProxy(proxy(cluster, name, incarnation, status))
}

fn delete(cluster: &str, name: &str) -> Change {
    Change::DeleteProxy {
        cluster: cluster.into(),
        proxy: name.into(),
    }
}

fn config(cluster: &str, version: u64) -> StoredConfig {
    let mut datasources = BTreeMap::new();
    datasources.insert("hg0".to_owned(), format!("ds{version}"));
    datasources.insert("hg1".to_owned(), "primary".to_owned());
    StoredConfig {
        cluster: cluster.into(),
        version,
        base: format!("# {cluster} v{version}\nrules = []\n").into_bytes(),
        datasources,
    }
}

fn put_config(cluster: &str, version: u64) -> Change {
    Change::PutConfig(config(cluster, version))
}

fn audit_entry(at: u64, action: &str) -> AuditEntry {
    AuditEntry {
        at_unix_ms: at,
        action: action.into(),
    }
}

fn audit(at: u64, action: &str) -> Change {
    Change::Audit(audit_entry(at, action))
}

/// Applies `batches` to a `MemoryStore` and a fresh `RedbStore` and asserts they agree at
/// every step: the revisions, the snapshot of a boot, the audit log, and the snapshot of
/// a boot after the file is closed and opened again.
fn assert_same_as_memory(batches: &[Vec<Change>]) {
    let dir = TempDir::new("same");
    let mut memory = MemoryStore::new();
    let mut disk = open(&dir);
    assert_eq!(disk.boot().expect("boots"), memory.boot().expect("boots"));
    for batch in batches {
        let expected = memory.commit(batch).expect("memory commits");
        assert_eq!(disk.commit(batch).expect("commits"), expected);
        assert_eq!(disk.revision(), memory.revision());
    }
    assert_eq!(disk.boot().expect("boots"), memory.boot().expect("boots"));
    assert_eq!(
        disk.audit().expect("reads audit"),
        memory.audit().expect("reads audit")
    );
    drop(disk);

    let mut reopened = open(&dir);
    assert_eq!(reopened.revision(), memory.revision());
    assert_eq!(
        reopened.boot().expect("boots"),
        memory.boot().expect("boots")
    );
    assert_eq!(
        reopened.audit().expect("reads audit"),
        memory.audit().expect("reads audit")
    );
}

const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("meta");
const PROXIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("proxies");
const CONFIGS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("configs");

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

// ----- Behaving as the memory store -----

#[test]
fn a_fresh_store_boots_at_epoch_one_with_nothing_stored() {
    let dir = TempDir::new("fresh");
    let mut store = open(&dir);
    assert!(
        dir.file().is_file(),
        "the database file is created in the directory"
    );
    assert_eq!(store.path(), dir.file());
    assert_eq!(store.revision(), 0);
    assert_eq!(
        store.boot().expect("boots"),
        Snapshot {
            epoch: 1,
            revision: 0,
            proxies: vec![],
            configs: vec![]
        }
    );
    assert_eq!(store.audit().expect("reads audit"), vec![]);
}

#[test]
fn puts_replacements_and_deletes_give_the_same_snapshot_as_the_memory_store() {
    assert_same_as_memory(&[
        vec![
            put("c", "10.0.0.2:3307", 1, Status::Ready),
            put("c", "10.0.0.1:3307", 1, Status::Ready),
            put("b", "10.0.0.9:3307", 4, Status::Up),
        ],
        vec![],
        vec![
            put("c", "10.0.0.1:3307", 1, Status::Up),
            put("c", "10.0.0.2:3307", 2, Status::Lost),
            delete("b", "10.0.0.9:3307"),
            delete("b", "never-registered:1"),
            put("b", "10.0.0.9:3307", 5, Status::Ready),
        ],
        vec![
            delete("c", "10.0.0.2:3307"),
            put("c", "10.0.0.2:3307", 3, Status::Up),
        ],
        vec![delete("c", "10.0.0.1:3307")],
        vec![],
    ]);
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
    assert_same_as_memory(&[
        batch,
        vec![
            delete("a", "p"),
            delete("a\u{0}", "p\u{0}"),
            delete("", ""),
            audit(1, ""),
        ],
    ]);
}

#[test]
fn configs_keep_every_version_but_the_snapshot_holds_the_latest_per_cluster() {
    let dir = TempDir::new("configs");
    let mut store = open(&dir);
    store.boot().expect("boots");
    store
        .commit(&[put_config("c", 1), put_config("d", 5)])
        .expect("commits");
    store.commit(&[put_config("c", 3)]).expect("commits");
    // An older version arriving later is kept, but is not the latest.
    store
        .commit(&[put_config("c", 2), put_config("d", 4)])
        .expect("commits");
    // The same version again replaces it.
    let mut replaced = config("d", 5);
    replaced.base = b"replaced".to_vec();
    store
        .commit(&[Change::PutConfig(replaced.clone())])
        .expect("commits");

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
fn audit_entries_come_back_oldest_first_across_commits_and_reopening() {
    let dir = TempDir::new("audit");
    let mut store = open(&dir);
    store.boot().expect("boots");
    store
        .commit(&[
            audit(30, r#"{"action":"remove"}"#),
            put("c", "p:1", 1, Status::Up),
        ])
        .expect("commits");
    store
        .commit(&[audit(10, r#"{"action":"push"}"#), audit(20, "third")])
        .expect("commits");
    drop(store);
    let mut store = open(&dir);
    store
        .commit(&[audit(5, "fourth, with an older clock")])
        .expect("commits");
    assert_eq!(
        store.audit().expect("reads audit"),
        vec![
            audit_entry(30, r#"{"action":"remove"}"#),
            audit_entry(10, r#"{"action":"push"}"#),
            audit_entry(20, "third"),
            audit_entry(5, "fourth, with an older clock"),
        ]
    );
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![Just(Status::Ready), Just(Status::Up), Just(Status::Lost)]
}

fn change() -> impl Strategy<Value = Change> {
    // Few names, so that puts, replacements and deletes hit the same entries.
    let cluster = || prop::sample::select(vec!["", "a", "ab", "a\u{0}", "b", "é"]);
    let name = || prop::sample::select(vec!["", "p", "p\u{0}", "pq", "q:1"]);
    prop_oneof![
        4 => (cluster(), name(), any::<u64>(), status(), any::<u64>()).prop_map(
            |(cluster, name, incarnation, status, since_unix_ms)| {
                Change::PutProxy(StoredProxy {
                    cluster: cluster.into(),
                    proxy: name.into(),
                    incarnation,
                    status,
                    since_unix_ms,
                })
            }
        ),
        2 => (cluster(), name()).prop_map(|(cluster, name)| delete(cluster, name)),
        2 => (
            cluster(),
            0..4u64,
            prop::collection::vec(any::<u8>(), 0..16),
            prop::collection::btree_map("[a-z0-9]{0,3}", "[a-z0-9]{0,3}", 0..3),
        )
            .prop_map(|(cluster, version, base, datasources)| {
                Change::PutConfig(StoredConfig { cluster: cluster.into(), version, base, datasources })
            }),
        1 => (any::<u64>(), ".{0,12}").prop_map(|(at, action)| audit(at, &action)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(24),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_sequence_of_changes_gives_the_same_snapshots_as_the_memory_store(
        batches in prop::collection::vec(prop::collection::vec(change(), 0..8), 0..6)
    ) {
        assert_same_as_memory(&batches);
    }
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

#[test]
fn the_revision_grows_by_one_per_non_empty_commit_and_survives_reopening() {
    let dir = TempDir::new("revision");
    let mut store = open(&dir);
    // A commit before any boot is allowed, as with the memory store.
    assert_eq!(
        store
            .commit(&[put("c", "p:1", 1, Status::Ready)])
            .expect("commits"),
        1
    );
    assert_eq!(store.commit(&[]).expect("nothing to commit"), 1);
    store.boot().expect("boots");
    assert_eq!(
        store
            .commit(&[audit(1, "a"), audit(2, "b")])
            .expect("commits"),
        2
    );
    assert_eq!(store.commit(&[]).expect("nothing to commit"), 2);
    assert_eq!(store.revision(), 2);
    drop(store);

    let mut store = open(&dir);
    assert_eq!(
        store.revision(),
        2,
        "the revision is known right after opening"
    );
    assert_eq!(store.commit(&[]).expect("nothing to commit"), 2);
    assert_eq!(store.boot().expect("boots").revision, 2);
    assert_eq!(store.commit(&[delete("c", "p:1")]).expect("commits"), 3);
    drop(store);
    assert_eq!(open(&dir).boot().expect("boots").revision, 3);
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
    assert_eq!(
        first
            .commit(&[put("c", "p:1", 1, Status::Up)])
            .expect("still commits"),
        1
    );
    assert_eq!(
        first.boot().expect("still boots").proxies,
        vec![proxy("c", "p:1", 1, Status::Up)]
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
fn a_store_of_another_format_is_refused() {
    let dir = TempDir::new("format");
    drop(open(&dir));
    write_raw(&dir, META, b"format", &(FORMAT + 1).to_be_bytes());
    let message = expect_corrupt(RedbStore::open(dir.path()), FILE_NAME);
    assert!(
        message.contains(&format!("format {}", FORMAT + 1)),
        "{message:?}"
    );
}

#[test]
fn a_redb_database_of_another_application_is_refused_and_keeps_its_data() {
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
    expect_corrupt(RedbStore::open(dir.path()), "not a zerokeeper store");
    // Any redb open rewrites the file's header (its clean-shutdown state), so the bytes
    // may differ; what must hold is that no table was added and no data lost.
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
    // terminator, a key that is not UTF-8.
    let cases: [(&[u8], &[u8], &str); 5] = [
        (b"c\0\0p:1", &[0xFF], "cannot be decoded"),
        (b"c\0\0p:1", &[1, 9, 1], "unknown proxy status 9"),
        (b"c\0\0p:1", &[1, 1, 1, 0], "trailing bytes"),
        (b"c", &[1, 1, 1], "no cluster terminator"),
        (b"c\0\0\xFF\xFE", &[1, 1, 1], "not UTF-8"),
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
}

#[test]
fn a_file_with_a_flipped_byte_anywhere_is_read_intact_or_refused_as_corrupt_never_a_panic() {
    let dir = TempDir::new("flip");
    let mut store = open(&dir);
    store.boot().expect("boots");
    let batch: Vec<Change> = (0..2_000)
        .map(|i| {
            put(
                "c",
                &format!("10.0.{}.{}:3307", i / 256, i % 256),
                i,
                Status::Up,
            )
        })
        .collect();
    store.commit(&batch).expect("commits");
    store
        .commit(&[put_config("c", 1), audit(1, "pushed")])
        .expect("commits");
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

#[test]
fn a_commit_of_ten_thousand_changes_is_one_revision() {
    let dir = TempDir::new("ten-thousand");
    let mut store = open(&dir);
    store.boot().expect("boots");
    let batch: Vec<Change> = (0..10_000)
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
    assert_eq!(store.commit(&batch).expect("commits"), 1);
    eprintln!("commit of 10,000 changes: {:?}", started.elapsed());
    let snapshot = store.boot().expect("boots");
    assert_eq!(snapshot.revision, 1);
    assert_eq!(snapshot.proxies.len(), 10_000);
}

#[test]
fn booting_a_hundred_thousand_stored_proxies_returns_them_all() {
    const CLUSTERS: u64 = 20;
    const PER_CLUSTER: u64 = 5_000;
    let dir = TempDir::new("hundred-thousand");
    let mut store = open(&dir);
    let mut expected = Vec::new();
    for c in 0..CLUSTERS {
        for p in 0..PER_CLUSTER {
            let status = [Status::Ready, Status::Up, Status::Lost][(p % 3) as usize];
            expected.push(proxy(
                &format!("cluster-{c:02}"),
                &format!("10.{c}.{}.{}:3307", p / 256, p % 256),
                p,
                status,
            ));
        }
    }
    let started = Instant::now();
    for chunk in expected.chunks(10_000) {
        let batch: Vec<Change> = chunk.iter().cloned().map(Change::PutProxy).collect();
        store.commit(&batch).expect("commits");
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
        "open {opened:?}, open and boot of 100,000 proxies: {:?}",
        started.elapsed()
    );
    expected.sort_by(|a, b| (&a.cluster, &a.proxy).cmp(&(&b.cluster, &b.proxy)));
    assert_eq!(snapshot.proxies.len(), 100_000);
    assert!(
        snapshot.proxies == expected,
        "the proxies come back, sorted by (cluster, proxy)"
    );
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

/// The changes of the commit that makes revision `revision`, the same in every process.
/// Large enough (80 changes) that a kill lands in the middle of writing.
fn crash_batch(revision: u64) -> Vec<Change> {
    let mut batch = Vec::new();
    for i in 0..60 {
        let n = (revision * 37 + i) % 500;
        let status = [Status::Ready, Status::Up, Status::Lost][((revision + i) % 3) as usize];
        batch.push(put(
            &format!("c{}", n % 3),
            &format!("10.0.{}.{}:3307", n / 256, n % 256),
            revision,
            status,
        ));
    }
    for i in 0..18 {
        let n = (revision * 11 + i * 29) % 500;
        batch.push(delete(
            &format!("c{}", n % 3),
            &format!("10.0.{}.{}:3307", n / 256, n % 256),
        ));
    }
    batch.push(put_config(&format!("c{}", revision % 3), revision));
    batch.push(audit(
        revision,
        &format!(r#"{{"action":"commit","revision":{revision}}}"#),
    ));
    batch
}

fn durable_revision(line: &str) -> Option<u64> {
    let at = line.rfind("DURABLE ")?;
    line[at + "DURABLE ".len()..].trim().parse().ok()
}

/// Not a test of its own: in a normal run it returns at once. Spawned by a test with
/// `CHILD_MODE` set, it either holds the store open until killed (`hold`), or commits
/// `crash_batch`es in a loop and prints `DURABLE n` after each commit returns (`commit`).
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
                let next = store.revision() + 1;
                assert_eq!(
                    store.commit(&crash_batch(next)).expect("the child commits"),
                    next
                );
                writeln!(out, "DURABLE {next}").expect("writes");
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
            Some(&(last_found + 1)),
            "the child went on from the file"
        );

        let mut store = RedbStore::open(dir.path()).expect("reopens after SIGKILL");
        let snapshot = store.boot().expect("boots after SIGKILL");
        assert!(
            snapshot.revision >= reported,
            "round {round}: revision {} lost the reported {reported}",
            snapshot.revision
        );
        // One boot by each child and one here.
        assert_eq!(snapshot.epoch, 2 * (round as u32 + 1));
        while model.revision() < snapshot.revision {
            let next = model.revision() + 1;
            model.commit(&crash_batch(next)).expect("the model commits");
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
