//! Black-box tests of the real `zerokeeper` binary: a `serve` process and separate
//! `proxy` processes on loopback with short timings, observed with `status -o keys`
//! and `status --watch`, driven with signals and the operator's commands.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_zerokeeper");
const CLUSTER: &str = "test_cluster";
/// Heartbeats every 100 ms; `lost` after 600 ms; `ready` proxies deleted after 2 s;
/// `lost` ones 2.5 s after their last heartbeat.
const TIMING: [&str; 8] = [
    "--heartbeat-interval",
    "100ms",
    "--lost-after",
    "600ms",
    "--ready-timeout",
    "2s",
    "--delete-after",
    "2500ms",
];
/// The longest any condition is waited for.
const PATIENCE: Duration = Duration::from_secs(15);

fn key_file() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zk-binary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("cluster.key");
    if !path.exists() {
        std::fs::write(&path, format!("{}\n", "2a".repeat(32))).expect("write key");
    }
    path
}

/// A child process whose stderr is collected in the background; killed when dropped.
struct Process {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Process {
    fn spawn(args: &[&str]) -> Process {
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });
        Process { child, stderr }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("the process exists");
    }

    fn log(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until the log has a line containing every one of `words`.
    fn wait_log(&self, words: &[&str]) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| words.iter().all(|w| l.contains(w))) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {words:?} in:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("waitable") {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SIGCONT first, in case a test left it stopped.
        let _ = kill(self.pid(), Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A keeper process and the addresses it printed.
struct Keeper {
    process: Process,
    udp: String,
    http: String,
}

impl Keeper {
    fn start() -> Keeper {
        let key = key_file();
        let key = key.to_str().expect("utf-8 path");
        let mut args = vec![
            "serve",
            "--udp",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--key-file",
            key,
        ];
        args.extend(TIMING);
        let process = Process::spawn(&args);
        let udp = process
            .wait_log(&["udp listening on "])
            .replace("udp listening on ", "");
        let http = process
            .wait_log(&["http listening on "])
            .replace("http listening on ", "");
        Keeper {
            process,
            udp,
            http: format!("http://{http}"),
        }
    }

    fn proxy(&self, identity: &str, extra: &[&str]) -> Process {
        let key = key_file();
        let mut args = vec![
            "proxy",
            "--keeper",
            &self.udp,
            "--cluster",
            CLUSTER,
            "--addr",
            identity,
            "--key-file",
            key.to_str().expect("utf-8 path"),
            "--interval",
            "100ms",
        ];
        args.extend(extra);
        Process::spawn(&args)
    }

    /// Runs an operator command against this keeper: (exit code, stdout, stderr).
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN)
            .args(args)
            .args(["--http", &self.http])
            .output()
            .expect("the binary runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn keys(&self) -> Vec<String> {
        let (code, out, err) = self.cli(&["status", "--cluster", CLUSTER, "-o", "keys"]);
        match code {
            0 => out.lines().map(str::to_owned).collect(),
            4 => Vec::new(), // the cluster does not exist yet
            _ => panic!("status failed ({code}): {err}"),
        }
    }

    /// Waits until `status -o keys` prints exactly these (proxy, status) lines.
    fn wait_keys(&self, want: &[(&str, &str)]) {
        let want: Vec<String> = want.iter().map(|(p, s)| line(p, s)).collect();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let seen = self.keys();
            if seen == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {want:?}, saw {seen:?}\nkeeper log:\n{}",
                self.process.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

fn line(proxy: &str, status: &str) -> String {
    format!("/zerodb/proxy/{CLUSTER}/status/{proxy}->{status}")
}

const A: &str = "10.25.0.11:3000";
const B: &str = "10.25.0.12:3000";
const C: &str = "10.25.0.13:3000";
const D: &str = "10.25.0.14:3000";

#[test]
fn three_proxies_register_ready_and_then_go_up() {
    let keeper = Keeper::start();
    let _a = keeper.proxy(A, &["--init-delay", "1500ms"]);
    let _b = keeper.proxy(B, &["--init-delay", "1500ms"]);
    let _c = keeper.proxy(C, &["--init-delay", "1500ms"]);
    keeper.wait_keys(&[(A, "ready"), (B, "ready"), (C, "ready")]);
    keeper.wait_keys(&[(A, "up"), (B, "up"), (C, "up")]);
}

#[test]
fn a_stopped_proxy_becomes_lost_and_returns_to_up_after_sigcont() {
    let keeper = Keeper::start();
    let _a = keeper.proxy(A, &[]);
    let c = keeper.proxy(C, &[]);
    keeper.wait_keys(&[(A, "up"), (C, "up")]);
    c.signal(Signal::SIGSTOP);
    keeper.wait_keys(&[(A, "up"), (C, "lost")]);
    c.signal(Signal::SIGCONT);
    keeper.wait_keys(&[(A, "up"), (C, "up")]);
    assert!(
        !c.log().contains("restart"),
        "a lost proxy comes straight back, without a restart"
    );
}

#[test]
fn a_proxy_that_crashes_on_start_is_deleted_after_ready_timeout() {
    let keeper = Keeper::start();
    let mut d = keeper.proxy(D, &["--crash-on-start"]);
    assert_ne!(d.wait_exit(), 0, "a crash is not a clean exit");
    let crashed = Instant::now();
    keeper.wait_keys(&[(D, "ready")]);
    keeper.wait_keys(&[]);
    let after = crashed.elapsed();
    assert!(
        after >= Duration::from_millis(1_500),
        "deleted after {after:?}, before ready_timeout (2s)"
    );
    keeper
        .process
        .wait_log(&["status changed", "ready_timeout"]);
}

#[test]
fn a_proxy_that_fails_to_start_is_deleted_at_once() {
    let keeper = Keeper::start();
    let mut d = keeper.proxy(D, &["--fail-start", "--init-delay", "800ms"]);
    keeper.wait_keys(&[(D, "ready")]);
    let seen_ready = Instant::now();
    keeper.wait_keys(&[]);
    assert!(
        seen_ready.elapsed() < Duration::from_millis(1_500),
        "not deleted before ready_timeout"
    );
    assert_eq!(d.wait_exit(), 1);
    keeper
        .process
        .wait_log(&["status changed", "reason=\"down\""]);
}

#[test]
fn sigterm_on_a_proxy_unregisters_it() {
    let keeper = Keeper::start();
    let _a = keeper.proxy(A, &[]);
    let mut b = keeper.proxy(B, &[]);
    keeper.wait_keys(&[(A, "up"), (B, "up")]);
    b.signal(Signal::SIGTERM);
    assert_eq!(b.wait_exit(), 0);
    // Deleted at once: the unregister, not a timer.
    assert_eq!(keeper.keys(), vec![line(A, "up")]);
    keeper
        .process
        .wait_log(&["status changed", "reason=\"unregister\""]);
}

#[test]
fn remove_deletes_a_proxy_and_a_second_remove_is_not_found() {
    let keeper = Keeper::start();
    let _a = keeper.proxy(A, &[]);
    let c = keeper.proxy(C, &[]);
    keeper.wait_keys(&[(A, "up"), (C, "up")]);
    c.signal(Signal::SIGKILL);
    keeper.wait_keys(&[(A, "up"), (C, "lost")]);
    let (code, out, err) = keeper.cli(&["remove", "--cluster", CLUSTER, "--addr", C]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(C) && out.contains("lost"), "{out}");
    assert_eq!(keeper.keys(), vec![line(A, "up")]);
    let (code, _, err) = keeper.cli(&["remove", "--cluster", CLUSTER, "--addr", C]);
    assert_eq!(code, 4, "{err}");
}

#[test]
fn push_config_and_switch_are_refused_while_a_proxy_is_lost_and_applied_when_all_are_up() {
    let keeper = Keeper::start();
    let _a = keeper.proxy(A, &[]);
    let c = keeper.proxy(C, &[]);
    keeper.wait_keys(&[(A, "up"), (C, "up")]);
    let config = std::env::temp_dir().join(format!("zk-binary-config-{}.toml", std::process::id()));
    std::fs::write(&config, "pool_size = 64\n").expect("write config");
    let config = config.to_str().expect("utf-8 path");
    c.signal(Signal::SIGSTOP);
    keeper.wait_keys(&[(A, "up"), (C, "lost")]);
    let (code, _, err) = keeper.cli(&["push-config", "--cluster", CLUSTER, "--file", config]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(C) && err.contains("lost"),
        "the blocker is named: {err}"
    );
    let switch = [
        "switch",
        "--cluster",
        CLUSTER,
        "--hostgroup",
        "hg1",
        "--from",
        "db-a:3306",
        "--to",
        "db-b:3306",
    ];
    let (code, _, err) = keeper.cli(&switch);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(C) && err.contains("lost"),
        "the blocker is named: {err}"
    );
    c.signal(Signal::SIGCONT);
    keeper.wait_keys(&[(A, "up"), (C, "up")]);
    let (code, out, err) = keeper.cli(&["push-config", "--cluster", CLUSTER, "--file", config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("version 2"), "{out}");
    let (code, out, err) = keeper.cli(&switch);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("version 3"), "{out}");
}

#[test]
fn a_proxy_kept_stopped_until_deleted_is_restarted_and_comes_back_ready_then_up() {
    let keeper = Keeper::start();
    let _a = keeper.proxy(A, &[]);
    let d = keeper.proxy(D, &["--init-delay", "300ms"]);
    keeper.wait_keys(&[(A, "up"), (D, "up")]);
    // The watch stream sees every change, even a `ready` too short for polling to catch.
    let mut watch = Command::new(BIN)
        .args([
            "status",
            "--watch",
            "-o",
            "keys",
            "--cluster",
            CLUSTER,
            "--http",
            &keeper.http,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let pipe = watch.stdout.take().expect("piped");
    let sink = lines.clone();
    std::thread::spawn(move || {
        let mut text = String::new();
        let mut reader = BufReader::new(pipe);
        let mut buf = [0u8; 256];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            while let Some(i) = text.find('\n') {
                let line: String = text.drain(..=i).collect();
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line.trim_end().to_owned());
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300)); // let the watcher connect
    d.signal(Signal::SIGSTOP);
    keeper.wait_keys(&[(A, "up"), (D, "lost")]);
    keeper.wait_keys(&[(A, "up")]);
    d.signal(Signal::SIGCONT);
    keeper.wait_keys(&[(A, "up"), (D, "up")]);
    d.wait_log(&["restart"]);
    keeper.process.wait_log(&["restart sent"]);
    let key = format!("/zerodb/proxy/{CLUSTER}/status/{D}");
    let expected = vec![
        format!("PUT {key}->lost"),
        format!("DELETE {key}"),
        format!("PUT {key}->ready"),
        format!("PUT {key}->up"),
    ];
    let deadline = Instant::now() + PATIENCE;
    loop {
        let seen: Vec<String> = lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| l.contains(D))
            .cloned()
            .collect();
        if seen == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "watch saw {seen:?}, expected {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn a_pushed_config_reaches_every_proxy() {
    let keeper = Keeper::start();
    let proxies: Vec<Process> = [A, B, C].iter().map(|p| keeper.proxy(p, &[])).collect();
    keeper.wait_keys(&[(A, "up"), (B, "up"), (C, "up")]);
    let config = std::env::temp_dir().join(format!("zk-binary-push-{}.toml", std::process::id()));
    std::fs::write(&config, "pool_size = 128\n").expect("write config");
    let (code, out, err) = keeper.cli(&[
        "push-config",
        "--cluster",
        CLUSTER,
        "--file",
        config.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("version 2"), "{out}");
    for p in &proxies {
        p.wait_log(&["config version applied", "version=2"]);
    }
}
