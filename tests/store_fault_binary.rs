//! A store that fails at runtime, through the real binary: the keeper's file may not
//! grow past a limit (`RLIMIT_FSIZE`, with `SIGXFSZ` ignored, so a write past it fails
//! with `EFBIG` as a full disk fails with `ENOSPC`). Config pushes fill it until a commit
//! fails; then the keeper must exit non-zero at once (its supervisor restarts it), never
//! acknowledge the push it could not store, and keep every push it did acknowledge.

mod procs;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Instant;

use procs::{CLUSTER, Keeper, fresh_dir};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The most bytes the keeper may write to any one file.
const FILE_LIMIT: u64 = 1 << 20;

/// Limits every file the process writes to `FILE_LIMIT` bytes, and makes a write past it
/// fail (`EFBIG`) instead of killing the process (`SIGXFSZ`).
fn file_limit(command: &mut Command) {
    // SAFETY: the hook runs in the child between fork and exec, and calls only
    // async-signal-safe functions (setrlimit, signal), touching no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            let limit = nix::libc::rlimit {
                rlim_cur: FILE_LIMIT,
                rlim_max: FILE_LIMIT,
            };
            if nix::libc::setrlimit(nix::libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            nix::libc::signal(nix::libc::SIGXFSZ, nix::libc::SIG_IGN);
            Ok(())
        });
    }
}

fn config_version(keeper: &Keeper) -> Option<u64> {
    keeper.get_json(&format!("/v1/clusters/{CLUSTER}/config"))?["version"].as_u64()
}

#[test]
fn a_commit_that_fails_makes_the_keeper_exit_non_zero_at_once_and_claims_nothing_it_did_not_store()
{
    let dir = fresh_dir("full");
    let mut keeper = Keeper::start_configured(&dir, "127.0.0.1:0", "127.0.0.1:0", &[], file_limit);
    let _proxy = keeper.proxy("10.25.0.41:3000", &[]);
    keeper.wait_keys(&[("10.25.0.41:3000", "up")]);

    // Pushes of 200 kB that do not compress, until one is not acknowledged.
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let mut acknowledged = 0u64;
    let mut failed_at = None;
    for push in 0..40 {
        let body: String = (0..200_000)
            .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
            .collect();
        let started = Instant::now();
        let (code, out, err) = keeper.push_config(&format!("# push {push}\n{body}\n"));
        if code == 0 {
            acknowledged += 1;
            continue;
        }
        eprintln!("push {push} was refused ({code}): {out}{err}");
        failed_at = Some(started);
        break;
    }
    let failed_at = failed_at.expect("a 1 MiB store cannot take 40 pushes of 200 kB");
    assert!(acknowledged >= 1, "the store took no push at all");

    let code = keeper.process.wait_exit();
    let delay = failed_at.elapsed();
    eprintln!("the keeper exited {code} {delay:?} after the push that could not be stored");
    let log = keeper.process.log();
    assert_ne!(code, 0, "a keeper whose store failed exited 0:\n{log}");
    assert!(log.contains("the store failed"), "{log}");

    // Without the limit, the keeper on the same directory has every acknowledged push
    // and nothing more.
    drop(keeper);
    let keeper = Keeper::start_on(&dir, "127.0.0.1:0");
    assert_eq!(
        config_version(&keeper),
        Some(1 + acknowledged),
        "{acknowledged} pushes were acknowledged; the store must hold exactly those\n{}",
        keeper.process.log()
    );
}

/// `serve` on `dir` and `udp`, run to its exit: its exit code and log.
fn serve_once(dir: &std::path::Path, udp: &str) -> (i32, String) {
    let mut args = vec![
        "serve",
        "--udp",
        udp,
        "--http-listen",
        "127.0.0.1:0",
        "--key-file",
    ];
    let key = procs::key_file();
    args.push(key.to_str().expect("utf-8"));
    args.extend(["--data-dir", dir.to_str().expect("utf-8")]);
    let mut keeper = procs::Process::spawn(&args);
    let code = keeper.wait_exit();
    (code, keeper.log())
}

#[test]
fn a_store_file_truncated_to_zero_bytes_is_refused_untouched_and_restarts_nobody() {
    let dir = fresh_dir("zero");
    let keeper = Keeper::start_on(&dir, "127.0.0.1:0");
    let udp = keeper.udp.clone();
    let proxies: Vec<procs::Process> = ["10.25.0.51:3000", "10.25.0.52:3000"]
        .iter()
        .map(|p| keeper.proxy(p, &[]))
        .collect();
    keeper.wait_keys(&[("10.25.0.51:3000", "up"), ("10.25.0.52:3000", "up")]);
    keeper.process.signal(nix::sys::signal::Signal::SIGKILL);
    drop(keeper);
    let file = dir.join("zerokeeper.redb");
    std::fs::write(&file, b"").expect("truncate the store");

    // On the proxies' port, so that a keeper that took the empty file for a new store
    // would hear them and restart them.
    let (code, log) = serve_once(&dir, &udp);
    assert_ne!(code, 0, "a keeper started on an empty store file:\n{log}");
    assert!(log.contains("cannot use the data directory"), "{log}");
    assert!(!log.contains("restart sent"), "{log}");
    assert_eq!(std::fs::metadata(&file).expect("still there").len(), 0);
    for p in &proxies {
        assert!(!p.log().contains("asked for a restart"), "{}", p.log());
    }
}

#[test]
fn a_port_in_use_is_refused_before_the_data_directory_is_created() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
    let port = taken.local_addr().expect("bound").to_string();
    let dir = fresh_dir("busy").join("never-made");
    let (code, log) = serve_once(&dir, &port);
    assert_ne!(code, 0, "{log}");
    assert!(log.contains("cannot bind UDP"), "{log}");
    assert!(
        !dir.exists(),
        "the data directory was created before the bind failed"
    );
}
