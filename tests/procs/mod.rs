//! Running the real `zerokeeper` binary in tests: processes whose stderr is collected,
//! a keeper with its printed addresses, proxies, and the operator's commands.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub const BIN: &str = env!("CARGO_BIN_EXE_zerokeeper");
pub const CLUSTER: &str = "test_cluster";
/// Heartbeats every 100 ms; `lost` after 600 ms; `ready` proxies deleted after 2 s;
/// `lost` ones 2.5 s after their last heartbeat.
pub const TIMING: [&str; 8] = [
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
pub const PATIENCE: Duration = Duration::from_secs(15);

/// The test binary's key file, written once, private to its owner (0600) as the keeper
/// requires.
pub fn key_file() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("zk-binary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("cluster.key");
        write_private(&path, &format!("{}\n", "2a".repeat(32)));
        path
    })
    .clone()
}

/// Writes `text` to `path` with mode 0600 (a key file must not be readable by others).
pub fn write_private(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write key");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
}

/// A child process whose stderr is collected in the background; killed when dropped.
pub struct Process {
    pub child: Child,
    pub stderr: Arc<Mutex<String>>,
    /// Collects stderr until the pipe closes.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Process {
    pub fn spawn(args: &[&str]) -> Process {
        Process::spawn_with(args, |_| {})
    }

    /// [`Process::spawn`], with `configure` applied to the command first (limits, a
    /// `pre_exec` hook).
    pub fn spawn_with(args: &[&str], configure: impl FnOnce(&mut Command)) -> Process {
        let mut command = Command::new(BIN);
        configure(&mut command);
        command.args(args);
        Process::spawn_command(command)
    }

    /// The binary with `args`, its open-file limit (soft and hard) lowered to `nofile`
    /// first: started through `sh -c 'ulimit -n N && exec BIN ARGS'`, so the process
    /// (same pid, same pipes) runs under the limit from its first instruction.
    pub fn spawn_with_file_limit(args: &[&str], nofile: u64) -> Process {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(r#"ulimit -n "$0" && exec "$@""#)
            .arg(nofile.to_string())
            .arg(BIN)
            .args(args);
        Process::spawn_command(command)
    }

    fn spawn_command(mut command: Command) -> Process {
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("piped");
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });
        Process {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("the process exists");
    }

    pub fn log(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until the log has a line containing every one of `words`.
    pub fn wait_log(&self, words: &[&str]) -> String {
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

    pub fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("waitable") {
                // Everything it wrote is in the log once the pipe has been read to its end.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
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
pub struct Keeper {
    pub process: Process,
    pub udp: String,
    pub http: String,
    pub data_dir: PathBuf,
}

impl Keeper {
    /// A keeper on a fresh data directory, on ports of its choosing.
    pub fn start() -> Keeper {
        Keeper::start_on(&fresh_dir("data"), "127.0.0.1:0")
    }

    /// A keeper on `data_dir`, receiving heartbeats on `udp` (a restart passes the same
    /// address again, so the proxies keep reaching it).
    pub fn start_on(data_dir: &std::path::Path, udp: &str) -> Keeper {
        Keeper::start_at(data_dir, udp, "127.0.0.1:0")
    }

    /// A keeper on `data_dir`, on `udp` and with its admin API on `http` (a restart
    /// passes both again, so proxies and watchers find it where it was).
    pub fn start_at(data_dir: &std::path::Path, udp: &str, http: &str) -> Keeper {
        Keeper::start_with(data_dir, udp, http, &[])
    }

    /// A keeper as [`Keeper::start_at`] starts one, with `extra` arguments to `serve`.
    pub fn start_with(data_dir: &std::path::Path, udp: &str, http: &str, extra: &[&str]) -> Keeper {
        Keeper::launch(data_dir, udp, http, &TIMING, extra, None)
    }

    /// A keeper as [`Keeper::start_with`] starts one, its command configured by
    /// `configure` (see [`Process::spawn_with`]).
    pub fn start_configured(
        data_dir: &std::path::Path,
        udp: &str,
        http: &str,
        extra: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Keeper {
        Keeper::launch_by(data_dir, udp, http, &TIMING, extra, |args| {
            Process::spawn_with(args, configure)
        })
    }

    /// A keeper on `data_dir` (ports of its choosing) with `timing` instead of [`TIMING`],
    /// `extra` arguments, and its open-file limit at `nofile` if given.
    pub fn launch(
        data_dir: &std::path::Path,
        udp: &str,
        http: &str,
        timing: &[&str],
        extra: &[&str],
        nofile: Option<u64>,
    ) -> Keeper {
        Keeper::launch_by(data_dir, udp, http, timing, extra, |args| match nofile {
            Some(nofile) => Process::spawn_with_file_limit(args, nofile),
            None => Process::spawn(args),
        })
    }

    /// A keeper started with exactly `args` (from `serve` on: the test's timing is not
    /// added), the test's key file, a fresh data directory and `env` in its environment.
    pub fn serve_with(args: &[&str], env: &[(&str, &str)]) -> Keeper {
        let key = key_file();
        let data_dir = fresh_dir("data");
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "--key-file",
            key.to_str().expect("utf-8 path"),
            "--data-dir",
            data_dir.to_str().expect("utf-8 path"),
        ]);
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let process = Process::spawn_with(&all, move |command| {
            command.envs(env);
        });
        Keeper::listening(process, data_dir)
    }

    /// A keeper started by `spawn` with the `serve` arguments it is given.
    fn launch_by(
        data_dir: &std::path::Path,
        udp: &str,
        http: &str,
        timing: &[&str],
        extra: &[&str],
        spawn: impl FnOnce(&[&str]) -> Process,
    ) -> Keeper {
        let key = key_file();
        let dir = data_dir.to_str().expect("utf-8 path");
        let mut args = vec![
            "serve",
            "--udp",
            udp,
            "--http-listen",
            http,
            "--key-file",
            key.to_str().expect("utf-8 path"),
            "--data-dir",
            dir,
        ];
        args.extend(timing);
        args.extend(extra);
        Keeper::listening(spawn(&args), data_dir.to_path_buf())
    }

    /// The keeper `process` became, once it says where it listens.
    fn listening(process: Process, data_dir: PathBuf) -> Keeper {
        let udp = listening(
            &process.wait_log(&["udp listening on "]),
            "udp listening on ",
        );
        let http = listening(
            &process.wait_log(&["http listening on "]),
            "http listening on ",
        );
        Keeper {
            process,
            udp,
            http: format!("http://{http}"),
            data_dir,
        }
    }

    pub fn proxy(&self, identity: &str, extra: &[&str]) -> Process {
        self.proxy_in(CLUSTER, identity, extra)
    }

    /// A proxy of `cluster` (the default key speaks for every cluster).
    pub fn proxy_in(&self, cluster: &str, identity: &str, extra: &[&str]) -> Process {
        proxy_of(&self.udp, cluster, identity, extra)
    }

    /// Runs an operator command against this keeper: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        cli_at(&self.http, None, args)
    }

    /// Declares `hostgroup` of the cluster with `datasources` (comma-separated), served by
    /// `current`, with `hostgroup set`; panics unless it succeeds.
    pub fn declare_hostgroup(&self, hostgroup: &str, datasources: &str, current: &str) {
        let (code, out, err) = self.cli(&[
            "hostgroup",
            "set",
            "--cluster",
            CLUSTER,
            hostgroup,
            "--datasource",
            datasources,
            "--current",
            current,
        ]);
        assert_eq!(code, 0, "hostgroup set: {out}{err}");
    }

    /// Pushes `body` as the cluster's next config with `push-config --create`: (exit
    /// code, stdout, stderr).
    pub fn push_config(&self, body: &str) -> (i32, String, String) {
        let file = fresh_dir("push").join("proxy.toml");
        std::fs::write(&file, body).expect("write the config");
        self.cli(&[
            "push-config",
            "--create",
            "--cluster",
            CLUSTER,
            "--file",
            file.to_str().expect("utf-8 path"),
        ])
    }

    /// The admin API's `HOST:PORT`.
    /// `GET path` on the admin API: the JSON body of a 200 answer, `None` otherwise (any
    /// other status, no answer within 5 s, not JSON).
    pub fn get_json(&self, path: &str) -> Option<serde_json::Value> {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(5)))
                .build(),
        );
        let mut response = agent.get(format!("{}{path}", self.http)).call().ok()?;
        if response.status() != 200 {
            return None;
        }
        response.body_mut().read_json().ok()
    }

    pub fn http_addr(&self) -> &str {
        self.http.trim_start_matches("http://")
    }

    pub fn keys(&self) -> Vec<String> {
        let (code, out, err) = self.cli(&["status", "--cluster", CLUSTER, "-o", "keys"]);
        match code {
            0 => out.lines().map(str::to_owned).collect(),
            4 => Vec::new(), // the cluster does not exist yet
            _ => panic!("status failed ({code}): {err}"),
        }
    }

    /// Waits until `status -o keys` prints exactly these (proxy, status) lines.
    pub fn wait_keys(&self, want: &[(&str, &str)]) {
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

/// Runs an operator command against the admin API at `url`, with `token` as
/// `ZEROKEEPER_TOKEN` (or none, whatever the test's environment says): (exit code,
/// stdout, stderr).
pub fn cli_at(url: &str, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(BIN);
    command.args(args).args(["--http", url]);
    command.env_remove("ZEROKEEPER_TOKEN");
    if let Some(token) = token {
        command.env("ZEROKEEPER_TOKEN", token);
    }
    let out = command.output().expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A proxy of `cluster` that sends to `keepers` (one address, or several comma-separated),
/// heartbeating every 100 ms, with `extra` arguments.
pub fn proxy_of(keepers: &str, cluster: &str, identity: &str, extra: &[&str]) -> Process {
    proxy_with_key(keepers, cluster, identity, &key_file(), extra)
}

/// [`proxy_of`], signing with the key in `key` instead of the test binary's.
pub fn proxy_with_key(
    keepers: &str,
    cluster: &str,
    identity: &str,
    key: &std::path::Path,
    extra: &[&str],
) -> Process {
    let mut args = vec![
        "proxy",
        "--keeper",
        keepers,
        "--cluster",
        cluster,
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

pub fn line(proxy: &str, status: &str) -> String {
    format!("/zerodb/proxy/{CLUSTER}/status/{proxy}->{status}")
}

/// A new, empty directory under the system's temporary directory.
/// The address a keeper's `udp listening on ADDR` line names, in a plain line or in a
/// JSON log line's message.
pub fn listening(line: &str, prefix: &str) -> String {
    let start = line.find(prefix).map_or(0, |i| i + prefix.len());
    let rest = &line[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"')
        .unwrap_or(rest.len());
    rest[..end].to_owned()
}

pub fn fresh_dir(what: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("zk-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The first 8 bytes of `bytes`' SHA-256 in hex, as the trial proxy logs what it runs.
pub fn short_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
