//! How long a keeper with 100,000 stored proxies takes to start serving.
//!
//! - `restore/store_boot_and_core_rebuild/100000`: open the redb store, boot it (the
//!   epoch bump is a durable write), and rebuild the core with a fresh window for every
//!   proxy: everything a start does besides binding its sockets.
//! - `restore/serve_until_serving/100000`: the real `zerokeeper serve` process, from spawn
//!   until its admin API answers a call on the keeper (`GET /v1/store`), on a fresh copy
//!   of the filled store each time (a run changes the store: unheard proxies go lost).
//!
//! `cargo bench --bench restore` (about half a minute: it fills a store first).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use zerokeeper::auth::{Key, Keyring};
use zerokeeper::keeper::change::{ChangeKind, StatusChange};
use zerokeeper::keeper::{Keeper, KeeperConfig, Reason, Status};
use zerokeeper::store::redb::RedbStore;
use zerokeeper::store::{Store, WallChange};
use zerokeeper::time::Instant;

const N: usize = 100_000;

/// A data directory holding `n` proxies in 10 clusters, every fifth one lost.
fn filled_store(n: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zk-bench-restore-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut store = RedbStore::open(&dir).expect("opens");
    store.boot().expect("boots");
    let changes: Vec<WallChange> = (0..n)
        .map(|i| {
            let source = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 3306));
            WallChange {
                revision: i as u64 + 1,
                at: 1_767_225_600_000,
                kind: ChangeKind::Status(StatusChange {
                    cluster: format!("cluster_{}", i % 10).into(),
                    proxy: source.to_string().into(),
                    slot: i as u32,
                    incarnation: 1_767_225_600_000_000 + i as u64,
                    from: None,
                    to: Some(if i % 5 == 0 { Status::Lost } else { Status::Up }),
                    reason: Reason::Registered,
                    last_heartbeat: Some(1_767_225_600_000),
                    source,
                    config_version: 0,
                }),
            }
        })
        .collect();
    for chunk in changes.chunks(10_000) {
        store.commit(chunk, &[]).expect("commits");
    }
    dir
}

fn key_file(dir: &Path) -> PathBuf {
    let path = dir.join("bench.key");
    std::fs::write(&path, "2a".repeat(32)).expect("write key");
    // The keeper refuses a key file readable by others.
    #[cfg(unix)]
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod key");
    path
}

fn bench_restore(c: &mut Criterion) {
    let dir = filled_store(N);
    let mut g = c.benchmark_group("restore");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.bench_with_input(
        BenchmarkId::new("store_boot_and_core_rebuild", N),
        &N,
        |b, _| {
            b.iter(|| {
                let mut store = RedbStore::open(&dir).expect("opens");
                let snapshot = store.boot().expect("boots");
                let keys = Keyring::with_default(Key::new(&[0x2a; 32]).expect("valid"));
                let keeper = Keeper::restore(
                    KeeperConfig::default(),
                    keys,
                    snapshot.epoch,
                    [1; 32],
                    Instant::ZERO,
                    &snapshot.proxies,
                    &snapshot.configs,
                    snapshot.revision,
                )
                .expect("restores");
                assert_eq!(keeper.proxy_count(), N);
                keeper
            })
        },
    );
    let key = key_file(&dir);
    let copy = dir.with_extension("copy");
    g.bench_with_input(BenchmarkId::new("serve_until_serving", N), &N, |b, _| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let _ = std::fs::remove_dir_all(&copy);
                std::fs::create_dir_all(&copy).expect("temp dir");
                std::fs::copy(
                    dir.join(zerokeeper::store::redb::FILE_NAME),
                    copy.join(zerokeeper::store::redb::FILE_NAME),
                )
                .expect("copies");
                total += serve_until_serving(&copy, &key);
            }
            total
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&copy);
}

/// Spawns `zerokeeper serve` on `dir` and times it until the keeper answers over HTTP.
fn serve_until_serving(dir: &Path, key: &Path) -> Duration {
    let started = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_zerokeeper"))
        .args([
            "serve",
            "--udp",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir)
        .arg("--key-file")
        .arg(key)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().expect("piped");
    // Read to the end in the background: a pipe nobody drains would block the keeper's
    // log, and what it says is the diagnosis if it fails.
    let (tx, rx) = std::sync::mpsc::channel();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("http listening on ") {
                let _ = tx.send(addr.to_owned());
            }
            let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
            log.push_str(&line);
            log.push('\n');
        }
    });
    let http = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the keeper printed its HTTP address");
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    loop {
        if agent
            .get(format!("http://{http}/v1/store"))
            .call()
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the keeper exited ({status}) before serving:\n{}",
                log.lock().unwrap_or_else(|e| e.into_inner())
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the keeper did not serve within a minute:\n{}",
            log.lock().unwrap_or_else(|e| e.into_inner())
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    elapsed
}

criterion_group!(benches, bench_restore);
criterion_main!(benches);
