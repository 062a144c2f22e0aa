//! The keeper under test: one this process starts (and stops), or a running one, and
//! what its admin API tells (the counters of `/metrics`, the proxy listing).

use std::io::{BufRead as _, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::auth::Key;
use crate::config::encode_hex;
use crate::loadgen::BenchError;

/// How long a started keeper may take to print its addresses.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// `lost_after` of the keeper this process starts.
pub(crate) const OWN_LOST_AFTER: Duration = Duration::from_secs(10);
/// Budget of one admin API request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `/metrics` answer read.
const METRICS_LIMIT: u64 = 16 << 20;

/// A keeper process started for the run, in a temporary directory of its own (key file
/// and data directory). Dropping it kills the process and removes the directory.
#[derive(Debug)]
pub(crate) struct OwnKeeper {
    child: Child,
    dir: PathBuf,
    /// Its UDP address.
    pub(crate) udp: SocketAddr,
    /// Its admin API, as `http://ADDR`.
    pub(crate) http: String,
    /// The key it was given.
    pub(crate) key: Key,
}

impl OwnKeeper {
    /// Starts `zerokeeper serve` (this executable) on 127.0.0.1 with a fresh random key
    /// and a fresh data directory, and waits for it to print its addresses.
    pub(crate) fn start() -> Result<OwnKeeper, BenchError> {
        let dir = temp_dir("keeper")?;
        // From here on the directory is removed on every path out: by `cleanup` until
        // the keeper exists, then by its `Drop`.
        let cleanup = |e: BenchError| {
            let _ = std::fs::remove_dir_all(&dir);
            e
        };
        let secret: [u8; 32] = rand::random();
        let key = Key::new(&secret).map_err(|e| cleanup(BenchError::StartKeeper(e.to_string())))?;
        let key_file = dir.join("bench.key");
        write_private(&key_file, format!("{}\n", encode_hex(&secret)).as_bytes())
            .map_err(|e| cleanup(BenchError::Io("cannot write the key file".into(), e)))?;
        let data_dir = dir.join("data");
        let exe = std::env::current_exe()
            .map_err(|e| cleanup(BenchError::Io("cannot find this executable".into(), e)))?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .args(["--udp", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--key-file")
            .arg(&key_file)
            .args(["--heartbeat-interval", "1s", "--lost-after"])
            .arg(humantime::format_duration(OWN_LOST_AFTER).to_string())
            .args(["--ready-timeout", "60s", "--delete-after", "60s"])
            // The simulated fleet sends from one socket: the limit of challenges per
            // source address (one proxy's need) would throttle its registrations.
            .args(["--challenge-limit", "0"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Settings of the caller's own keeper (a config file, other timings) must not
        // leak into this one.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ZEROKEEPER_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| cleanup(BenchError::Io("cannot start the keeper".into(), e)))?;
        let Some(stderr) = child.stderr.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(cleanup(BenchError::StartKeeper("no stderr pipe".into())));
        };
        let mut keeper = OwnKeeper {
            child,
            dir,
            udp: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: String::new(),
            key,
        };
        let lines = forward_lines(stderr, "keeper");
        let (udp, http) = wait_for_addresses(&lines, &mut keeper.child)?;
        keeper.udp = udp;
        keeper.http = format!("http://{http}");
        Ok(keeper)
    }

    /// The process id, for its CPU time.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for OwnKeeper {
    fn drop(&mut self) {
        // A killed keeper loses nothing that matters: its data directory goes too.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads the keeper's stderr until both `udp listening on` and `http listening on`
/// lines have come.
fn wait_for_addresses(
    lines: &mpsc::Receiver<String>,
    child: &mut Child,
) -> Result<(SocketAddr, SocketAddr), BenchError> {
    let deadline = Instant::now() + START_TIMEOUT;
    let (mut udp, mut http) = (None, None);
    let mut seen = Vec::new();
    while udp.is_none() || http.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(addr) = address_after(&line, "udp listening on ") {
                    udp = Some(addr);
                } else if let Some(addr) = address_after(&line, "http listening on ") {
                    http = Some(addr);
                } else {
                    seen.push(line);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(BenchError::StartKeeper(format!(
                    "it printed no addresses within {}s",
                    START_TIMEOUT.as_secs()
                )));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                return Err(BenchError::StartKeeper(format!(
                    "it exited ({status}): {}",
                    seen.join(" / ")
                )));
            }
        }
    }
    match (udp, http) {
        (Some(udp), Some(http)) => Ok((udp, http)),
        _ => Err(BenchError::StartKeeper("no addresses".into())),
    }
}

/// The address at the start of what follows `prefix` in `line`, if the line has it.
pub(crate) fn address_after(line: &str, prefix: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    // The address ends where the text does, at a space, or at the quote closing a JSON
    // log line's message.
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Sends each line of `stream` to the returned channel while someone listens, and
/// copies it to this process's stderr (prefixed with `name`) after that, so a child's
/// warnings are seen and its pipe never fills.
pub(crate) fn forward_lines(
    stream: impl Read + Send + 'static,
    name: &'static str,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut listened = true;
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if listened && tx.send(line.clone()).is_ok() {
                continue;
            }
            listened = false;
            eprintln!("{name}: {line}");
        }
    });
    rx
}

/// A new private directory under the system's temporary directory.
pub(crate) fn temp_dir(what: &str) -> Result<PathBuf, BenchError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "zerokeeper-bench-{what}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| BenchError::Io(format!("cannot create {}", dir.display()), e))?;
    Ok(dir)
}

/// Writes a new file readable by its owner only (it holds a secret).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

/// The two counters the bench reads from `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Counters {
    /// `zerokeeper_datagrams_received_total`.
    pub(crate) received: u64,
    /// `zerokeeper_process_cpu_seconds_total`, where the keeper exposes it.
    pub(crate) cpu_seconds: Option<f64>,
    /// `zerokeeper_stalls_total`, where the keeper exposes it.
    pub(crate) stalls: Option<u64>,
    /// `zerokeeper_transitions_total{from="up",to="lost"}` (0 before any).
    pub(crate) up_to_lost: u64,
}

/// Reads the keeper's admin API.
#[derive(Debug)]
pub(crate) struct Admin {
    base: String,
    agent: ureq::Agent,
}

impl Admin {
    /// A reader of the admin API at `base` (such as `http://127.0.0.1:7822`).
    pub(crate) fn new(base: &str) -> Admin {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT))
            .build()
            .into();
        Admin {
            base: base.trim_end_matches('/').to_owned(),
            agent,
        }
    }

    /// The base URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// The counters of one scrape of `/metrics`.
    pub(crate) fn counters(&self) -> Result<Counters, BenchError> {
        let url = format!("{}/metrics", self.base);
        let failed = |reason: String| BenchError::Http {
            url: url.clone(),
            reason,
        };
        let mut answer = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| failed(e.to_string()))?;
        let status = answer.status().as_u16();
        if status != 200 {
            return Err(failed(format!("HTTP {status}")));
        }
        let text = answer
            .body_mut()
            .with_config()
            .limit(METRICS_LIMIT)
            .read_to_string()
            .map_err(|e| failed(e.to_string()))?;
        let received = metric_value(&text, "zerokeeper_datagrams_received_total")
            .ok_or_else(|| failed("no zerokeeper_datagrams_received_total".into()))?;
        Ok(Counters {
            received: received as u64,
            cpu_seconds: metric_value(&text, "zerokeeper_process_cpu_seconds_total"),
            stalls: metric_value(&text, "zerokeeper_stalls_total").map(|v| v as u64),
            up_to_lost: metric_value(
                &text,
                "zerokeeper_transitions_total{from=\"up\",to=\"lost\"}",
            )
            .map_or(0, |v| v as u64),
        })
    }

    /// The counters once `received` has stopped growing (two equal reads 100 ms apart),
    /// or after `patience`: the keeper may still be reading its socket's queue.
    pub(crate) fn settled_counters(&self, patience: Duration) -> Result<Counters, BenchError> {
        let deadline = Instant::now() + patience;
        let mut last = self.counters()?;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.counters()?;
            let stable = now.received == last.received;
            last = now;
            if stable {
                break;
            }
        }
        Ok(last)
    }
}

/// The value of the unlabelled series `name` in a text exposition.
pub(crate) fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_from_the_keepers_lines() {
        assert_eq!(
            address_after("udp listening on 127.0.0.1:4000", "udp listening on "),
            Some("127.0.0.1:4000".parse().expect("address"))
        );
        assert_eq!(
            address_after(
                r#"{"fields":{"message":"udp listening on [::1]:4000","udp":"[::1]:4000"}}"#,
                "udp listening on "
            ),
            Some("[::1]:4000".parse().expect("address"))
        );
        assert_eq!(
            address_after(
                "http listening on 127.0.0.1:80 (try ...)",
                "http listening on "
            ),
            Some(SocketAddr::from(([127, 0, 0, 1], 80)))
        );
        assert_eq!(address_after("warn: something", "udp listening on "), None);
    }

    #[test]
    fn unlabelled_series_are_found_by_exact_name() {
        let text = "# HELP x\nzerokeeper_datagrams_received_total_x 9\n\
                    zerokeeper_datagrams_received_total 1234\n\
                    zerokeeper_process_cpu_seconds_total 1.25\n# EOF\n";
        assert_eq!(
            metric_value(text, "zerokeeper_datagrams_received_total"),
            Some(1234.0)
        );
        assert_eq!(
            metric_value(text, "zerokeeper_process_cpu_seconds_total"),
            Some(1.25)
        );
        assert_eq!(metric_value(text, "zerokeeper_missing"), None);
    }
}
