//! Changes as the core would make them, for the store tests (`tests/store.rs` and
//! `tests/etcd_store.rs` drive every store with the same ones).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use zerokeeper::configdoc::ConfigVersion;
use zerokeeper::keeper::change::{
    AdminAction, ChangeKind, ConfigCause, ConfigSummary, StatusChange,
};
use zerokeeper::keeper::{Reason, Status};
use zerokeeper::store::{
    ConfigBlob, Snapshot, Store, StoreError, StoredConfig, StoredProxy, WallChange,
};

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// The wall-clock time the helpers give the change of `revision`.
pub fn at(revision: u64) -> u64 {
    1_700_000_000_000 + 10 * revision
}

/// Where the datagrams of a proxy's `incarnation` come from, in the helpers.
pub fn source(incarnation: u64) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, (incarnation % 250) as u8], 3307))
}

/// A change before it is numbered, with the content of a config version.
#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: ChangeKind<u64>,
    pub blob: Option<ConfigBlob>,
}

impl From<ChangeKind<u64>> for Entry {
    fn from(kind: ChangeKind<u64>) -> Entry {
        Entry { kind, blob: None }
    }
}

/// A proxy's status change, as the core would make it.
pub fn status(
    cluster: &str,
    name: &str,
    incarnation: u64,
    from: Option<Status>,
    to: Option<Status>,
) -> Entry {
    ChangeKind::Status(StatusChange {
        cluster: cluster.into(),
        proxy: name.into(),
        slot: 0,
        incarnation,
        from,
        to,
        reason: Reason::Heartbeat,
        last_heartbeat: Some(1_600_000_000_000 + incarnation),
        source: source(incarnation),
        config_version: incarnation % 7,
    })
    .into()
}

/// A proxy that enters the registry as `status`.
pub fn put(cluster: &str, name: &str, incarnation: u64, status_: Status) -> Entry {
    status(cluster, name, incarnation, None, Some(status_))
}

/// A proxy that leaves the registry.
pub fn delete(cluster: &str, name: &str) -> Entry {
    status(cluster, name, 0, Some(Status::Lost), None)
}

/// What a store holds after `put(cluster, name, incarnation, status)` at `revision`.
pub fn stored(
    cluster: &str,
    name: &str,
    incarnation: u64,
    status: Status,
    revision: u64,
) -> StoredProxy {
    StoredProxy {
        cluster: cluster.into(),
        proxy: name.into(),
        incarnation,
        status,
        since_unix_ms: Some(at(revision)),
        last_heartbeat_unix_ms: Some(1_600_000_000_000 + incarnation),
        source: Some(source(incarnation)),
        config_version: incarnation % 7,
    }
}

pub fn observed(cluster: &str, name: &str, from: SocketAddr, config_version: u64) -> Entry {
    ChangeKind::Observed {
        cluster: cluster.into(),
        proxy: name.into(),
        slot: 0,
        source: from,
        config_version,
    }
    .into()
}

pub fn config(cluster: &str, version: u64) -> StoredConfig {
    let mut datasources = BTreeMap::new();
    datasources.insert("hg0".to_owned(), format!("ds{version}"));
    datasources.insert("hg1".to_owned(), "primary".to_owned());
    StoredConfig {
        cluster: cluster.into(),
        version,
        base: format!("# {cluster} v{version}\nrules = []\n").into_bytes(),
        datasources,
        id: Some(test_id(version)),
    }
}

/// The id [`config_entry`] gives a version it makes (its digest stands in: `[version; 32]`).
pub fn test_id(version: u64) -> zerokeeper::wire::ConfigId {
    zerokeeper::wire::ConfigId::of(version, &[version as u8; 32])
}

/// A config change with its blob, holding `config`'s content.
pub fn config_entry(config: &StoredConfig) -> Entry {
    let base: Arc<[u8]> = Arc::from(config.base.as_slice());
    let version = ConfigVersion {
        version: config.version,
        base: base.clone(),
        datasources: config.datasources.clone(),
        bytes: base,
        digest: [config.version as u8; 32],
        id: config.id.unwrap_or_else(|| test_id(config.version)),
    };
    Entry {
        kind: ChangeKind::Config {
            cluster: config.cluster.as_str().into(),
            config: ConfigSummary {
                version: config.version,
                digest: version.digest,
                size: version.bytes.len(),
                base_size: version.base.len(),
                datasources: config.datasources.clone(),
            },
            cause: ConfigCause::Push,
        },
        blob: Some(ConfigBlob {
            cluster: config.cluster.as_str().into(),
            config: Arc::new(version),
        }),
    }
}

pub fn put_config(cluster: &str, version: u64) -> Entry {
    config_entry(&config(cluster, version))
}

pub fn admin(action: AdminAction) -> Entry {
    ChangeKind::Admin { action, by: None }.into()
}

pub fn push_action(cluster: &str, version: u64) -> AdminAction {
    AdminAction::PushConfig {
        cluster: cluster.into(),
        version,
        size: 70,
    }
}

pub fn push_json(cluster: &str, version: u64) -> String {
    format!(r#"{{"action":"push_config","cluster":"{cluster}","size":70,"version":{version}}}"#)
}

pub fn rewound(seen_epoch: u32) -> Entry {
    ChangeKind::Rewound { seen_epoch }.into()
}

/// The entries numbered from `first`, with the helpers' times, and their blobs.
pub fn numbered(first: u64, entries: &[Entry]) -> (Vec<WallChange>, Vec<ConfigBlob>) {
    let changes = entries
        .iter()
        .zip(first..)
        .map(|(e, revision)| WallChange {
            revision,
            at: at(revision),
            kind: e.kind.clone(),
        })
        .collect();
    let blobs = entries.iter().filter_map(|e| e.blob.clone()).collect();
    (changes, blobs)
}

/// Commits the entries as the next changes of `store`; returns them as committed.
pub fn try_commit(store: &mut dyn Store, entries: &[Entry]) -> Result<Vec<WallChange>, StoreError> {
    let (changes, blobs) = numbered(store.revision() + 1, entries);
    store.commit(&changes, &blobs)?;
    Ok(changes)
}

pub fn commit(store: &mut dyn Store, entries: &[Entry]) -> Vec<WallChange> {
    try_commit(store, entries).expect("commits")
}

/// The snapshot without its generation: a memory store counts generations from 1, a redb
/// store from the Unix time it was made.
pub fn comparable(snapshot: Snapshot) -> Snapshot {
    Snapshot {
        generation: 0,
        ..snapshot
    }
}

pub fn any_status() -> impl Strategy<Value = Status> {
    prop_oneof![Just(Status::Ready), Just(Status::Up), Just(Status::Lost)]
}

pub fn any_entry() -> impl Strategy<Value = Entry> {
    // Few names, so that puts, replacements, observations and deletes hit the same entries.
    let cluster = || prop::sample::select(vec!["", "a", "ab", "a\u{0}", "b", "é"]);
    let name = || prop::sample::select(vec!["", "p", "p\u{0}", "pq", "q:1"]);
    prop_oneof![
        5 => (
            cluster(),
            name(),
            any::<u64>(),
            prop::option::weighted(0.7, any_status()),
            prop::option::weighted(0.8, any_status()),
        )
            .prop_map(|(cluster, name, incarnation, from, to)| {
                status(cluster, name, incarnation, from, to)
            }),
        2 => (cluster(), name(), any::<u16>(), any::<u64>()).prop_map(
            |(cluster, name, port, version)| {
                observed(cluster, name, SocketAddr::from(([10, 1, 2, 3], port)), version)
            }
        ),
        2 => (
            cluster(),
            0..4u64,
            prop::collection::vec(any::<u8>(), 0..16),
            prop::collection::btree_map("[a-z0-9]{0,3}", "[a-z0-9]{0,3}", 0..3),
        )
            .prop_map(|(cluster, version, base, datasources)| {
                config_entry(&StoredConfig {
                    cluster: cluster.into(),
                    version,
                    base,
                    datasources,
                    id: Some(test_id(version)),
                })
            }),
        1 => (cluster(), any::<u64>()).prop_map(|(cluster, version)| {
            admin(push_action(cluster, version))
        }),
        1 => (cluster(), name(), any_status()).prop_map(|(cluster, name, status)| {
            admin(AdminAction::Remove { cluster: cluster.into(), proxy: name.into(), status })
        }),
        1 => (0..20u32).prop_map(rewound),
        1 => (cluster(), name(), any::<u64>()).prop_map(|(cluster, name, incarnation)| {
            ChangeKind::RestartSent {
                cluster: cluster.into(),
                proxy: name.into(),
                incarnation,
                to: source(incarnation),
            }
            .into()
        }),
        1 => (any::<u32>(), any::<usize>()).prop_map(|(ms, shifted)| {
            ChangeKind::Stall { length: Duration::from_millis(ms.into()), shifted }.into()
        }),
    ]
}

/// Two store secrets (hex, as a store key file holds them).
pub const STORE_KEY_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
pub const STORE_KEY_B: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0ff0e1d2c3b4a5968778695a4b3c2d1e0f";

/// A config whose base holds a credential, `hunter2-{cluster}-v{version}`.
pub fn secret_config(cluster: &str, version: u64) -> StoredConfig {
    let mut config = config(cluster, version);
    config.base = format!("db_password = \"hunter2-{cluster}-v{version}\"\n").into_bytes();
    config
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The message of a `StoreError::Sealed`, which must mention `mentions`.
pub fn expect_sealed<T: std::fmt::Debug>(result: Result<T, StoreError>, mentions: &str) -> String {
    match result {
        Err(StoreError::Sealed(message)) => {
            assert!(message.contains(mentions), "{message:?} lacks {mentions:?}");
            message
        }
        other => panic!("expected Sealed, got {other:?}"),
    }
}

/// Checks a store's [`Store::reader`] on a booted, empty `store`: the versions of a
/// cluster come back oldest first, the newest of them when limited, not those of a
/// cluster whose name prefixes it, and one version alone; a reader made before a commit
/// reads it.
pub fn check_reader(store: &mut dyn Store) {
    let reader = store.reader().expect("a reader");
    assert_eq!(reader.config_versions("c", 10).expect("reads"), []);
    commit(
        store,
        &[put_config("c", 2), put_config("cc", 2), put_config("b", 7)],
    );
    commit(store, &[put_config("c", 3), put_config("c", 4)]);
    let versions = |cluster: &str, newest: usize| -> Vec<u64> {
        reader
            .config_versions(cluster, newest)
            .expect("reads")
            .iter()
            .map(|c| c.version)
            .collect()
    };
    assert_eq!(versions("c", 10), [2, 3, 4]);
    assert_eq!(versions("c", 2), [3, 4]);
    assert_eq!(versions("cc", 10), [2]);
    assert_eq!(versions("nope", 10), Vec::<u64>::new());
    assert_eq!(
        reader.config_version("c", 3).expect("reads"),
        Some(config("c", 3))
    );
    assert_eq!(reader.config_version("c", 5).expect("reads"), None);
    assert_eq!(
        reader.config_version("b", 7).expect("reads"),
        Some(config("b", 7))
    );
}

/// Checks a store's [`Store::set_history`] on a booted, empty `store`: each cluster keeps
/// its newest config versions (those a batch makes and prunes at once included), and the
/// audit its newest entries.
pub fn check_history(store: &mut dyn Store) {
    use zerokeeper::store::History;
    store.set_history(History {
        configs: 2,
        audit: 3,
    });
    let reader = store.reader().expect("a reader");
    let versions = |cluster: &str| -> Vec<u64> {
        reader
            .config_versions(cluster, 100)
            .expect("reads")
            .iter()
            .map(|c| c.version)
            .collect()
    };
    commit(store, &[put_config("c", 1), put_config("d", 1)]);
    commit(store, &[put_config("c", 2)]);
    assert_eq!(versions("c"), [1, 2]);
    commit(store, &[put_config("c", 3)]);
    assert_eq!(versions("c"), [2, 3]);
    // Two in one batch: the older of them is never kept.
    commit(store, &[put_config("c", 4), put_config("c", 5)]);
    assert_eq!(versions("c"), [4, 5]);
    assert_eq!(versions("d"), [1], "another cluster keeps its own");
    let snapshot = store.boot().expect("boots");
    let latest: Vec<(String, u64)> = snapshot
        .configs
        .iter()
        .map(|c| (c.cluster.clone(), c.version))
        .collect();
    assert_eq!(latest, [("c".to_owned(), 5), ("d".to_owned(), 1)]);
    for v in 1..=4 {
        commit(store, &[admin(push_action("c", 10 + v))]);
    }
    commit(
        store,
        &[admin(push_action("c", 15)), admin(push_action("c", 16))],
    );
    let audit: Vec<String> = store
        .audit()
        .expect("audit")
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        audit,
        [push_json("c", 14), push_json("c", 15), push_json("c", 16)]
    );
}
