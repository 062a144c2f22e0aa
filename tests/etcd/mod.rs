//! A real etcd for tests: Debian's `etcd` on free loopback ports with a data dir of its
//! own, started and killed by the test (and `etcdctl` to read it).

#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use zerokeeper::store::etcd::{EtcdOptions, EtcdStore};

/// A binary the tests need, or a panic naming the Debian package that has it.
pub fn tool(name: &str, package: &str) -> PathBuf {
    let usr = Path::new("/usr/bin").join(name);
    if usr.is_file() {
        return usr;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{name} not found: install Debian's {package} package"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// An etcd on loopback ports, with a data dir of its own, killed and removed on drop.
pub struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    client: u16,
    peer: u16,
}

impl Etcd {
    pub fn start(name: &str) -> Etcd {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("zk-etcd-{}-{n}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("creates the etcd dir");
        let mut etcd = Etcd {
            child: None,
            dir,
            client: free_port(),
            peer: free_port(),
        };
        etcd.launch();
        etcd
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    /// Starts etcd on the data dir and waits until it answers (30 s at most).
    pub fn launch(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("opens etcd's log");
        let child = Command::new(tool("etcd", "etcd-server"))
            .args(["--name", "default", "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &self.endpoint()])
            .args(["--advertise-client-urls", &self.endpoint()])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            // Debian's etcd 3.4 defaults, pinned: the store must live within them.
            .args(["--max-txn-ops", "128", "--max-request-bytes", "1572864"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clones the log"))
            .stderr(log)
            .spawn()
            .expect("starts etcd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "etcd exited with {status}: {}",
                    fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
                );
            }
            let health = self.etcdctl_output(&["--command-timeout=1s", "endpoint", "health"]);
            if health.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not answer within 30 s: {}",
                String::from_utf8_lossy(&health.stderr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL, then a new etcd on the same data dir and ports.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn etcdctl_output(&self, args: &[&str]) -> Output {
        Command::new(tool("etcdctl", "etcd-client"))
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint()])
            .args(args)
            .output()
            .expect("runs etcdctl")
    }

    /// Runs etcdctl and returns what it printed; it must succeed.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let out = self.etcdctl_output(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("etcdctl prints UTF-8")
    }

    /// The keys under `prefix`, as etcdctl lists them.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.etcdctl(&["get", "--prefix", "--keys-only", prefix])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    pub fn options(&self, root: &str) -> EtcdOptions {
        let mut options = EtcdOptions::new(vec![self.endpoint()]);
        options.root = root.to_owned();
        options.connect_timeout = Duration::from_secs(2);
        options.request_timeout = Duration::from_secs(2);
        options
    }

    pub fn store(&self, root: &str) -> EtcdStore {
        EtcdStore::connect(self.options(root)).expect("connects")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
