//! `zerokeeper bench`: a load generator that plays a fleet of proxies against a keeper
//! over loopback UDP and reports what the keeper took, at what CPU cost, how fast it
//! answered, and how late it marked silent proxies `lost` under load.
//!
//! A run, in order (each step prints a line on stderr):
//!
//! 1. with `--baseline`, the same senders load a plain UDP sink (`zerokeeper
//!    bench-sink`, a process of its own) for `--duration`: the ceiling of the machine;
//! 2. a keeper is started (`zerokeeper serve` on 127.0.0.1, fresh key and data
//!    directory), unless `--keeper` names a running one;
//! 3. every proxy registers (`ready`, then `up`), not timed;
//! 4. the load phase: `up` heartbeats for `--duration`, timed; the keeper's received
//!    counter (from `/metrics`) and CPU time are read before and after;
//! 5. the lost probe: the first `--lost-probe` proxies of the first sender fall silent
//!    while the rest keep sending, for `lost_after` + 2 s (and up to another `lost_after`
//!    while some are not marked yet); the admin API then shows when each was marked
//!    `lost`.
//!
//! Each sender thread owns a contiguous share of the proxies and one socket; the
//! threads share nothing but progress counters. Everything binds and sends on
//! 127.0.0.1, and every phase ends by itself.

mod fleet;
mod keeper;
pub mod report;
mod sender;
mod sink;

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use crate::api::ProxyView;
use crate::auth::Key;
use crate::cli::client::Client;
use crate::config::{ConfigFileError, read_key_file};
use crate::identity::validate_cluster;
use crate::loadgen::fleet::{Fleet, MAX_PROXIES, ShardStats};
use crate::loadgen::keeper::{Admin, OWN_LOST_AFTER, OwnKeeper};
use crate::loadgen::report::{LatenessSummary, LostProbe, Measured, Report, RttSummary};
use crate::loadgen::sender::{Progress, Sender};
use crate::loadgen::sink::SinkProcess;
use crate::procstat::cpu_seconds;

pub use sender::{GsoRun, gso_runs};
pub use sink::{SinkArgs, SinkMode};

/// Registration of every proxy must be done within this.
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(60);
/// After a phase, senders keep reading answers this long (late acks still count).
const SETTLE: Duration = Duration::from_millis(100);
/// How long the keeper's received counter may keep growing after the load stops.
const COUNTER_PATIENCE: Duration = Duration::from_secs(2);
/// How long the lost probe waits beyond `lost_after`.
const PROBE_MARGIN: Duration = Duration::from_secs(2);

/// How the report is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    /// A table for people.
    Table,
    /// One JSON document with stable field names.
    Json,
}

/// `zerokeeper bench` flags.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Simulated proxies (identities 10.A.B.C:3306).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    proxies: usize,
    /// Length of the timed load phase.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s", value_name = "DURATION")]
    duration: Duration,
    /// Total heartbeats a second [default: as fast as possible].
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// Sender threads.
    #[arg(long, default_value_t = 2, value_name = "T")]
    senders: usize,
    /// UDP address of a running keeper to load (a loopback address) instead of starting
    /// one.
    #[arg(long, value_name = "ADDR", requires = "key_file")]
    keeper: Option<SocketAddr>,
    /// The running keeper's key file (hex), with --keeper.
    #[arg(long, value_name = "PATH", requires = "keeper")]
    key_file: Option<PathBuf>,
    /// The running keeper's admin API, for its counters and the lost probe (such as
    /// http://127.0.0.1:7822).
    #[arg(long, value_name = "URL", requires = "keeper")]
    keeper_http: Option<String>,
    /// Cluster of the simulated proxies.
    #[arg(long, default_value = "bench", value_name = "NAME")]
    cluster: String,
    /// First measure a UDP sink that only receives, with the same senders and offered load.
    #[arg(long)]
    baseline: bool,
    /// The baseline's receiver: `plain` (one `recv_from` per datagram, as a simple UDP
    /// server) or `batched` (recvmmsg with GRO, as the keeper: this machine's ceiling).
    #[arg(long, value_enum, default_value = "plain", requires = "baseline")]
    sink: SinkMode,
    /// Report format.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "table",
        value_name = "FORMAT"
    )]
    output: OutputFormat,
    /// Proxies that fall silent, under load, to see how late they are marked lost (0:
    /// no probe).
    #[arg(long, default_value_t = 100, value_name = "N")]
    lost_probe: usize,
    /// Threads that read the whole listing (`GET /v1/proxies`) in a loop during the load
    /// phase, as operators polling a large fleet: heartbeats must not notice them.
    #[arg(long, default_value_t = 0, value_name = "N")]
    readers: usize,
}

/// Threads reading the whole listing in a loop, until told to stop.
struct Readers {
    stop: std::sync::Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(u64, u64, Duration, Duration)>>,
}

impl Readers {
    fn start(base: &str, n: usize) -> Readers {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let url = format!("{base}/v1/proxies");
        let threads = (0..n)
            .map(|_| {
                let (stop, url) = (stop.clone(), url.clone());
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(30)))
                        .build()
                        .into();
                    let (mut requests, mut bytes) = (0u64, 0u64);
                    let (mut total, mut longest) = (Duration::ZERO, Duration::ZERO);
                    while !stop.load(Ordering::Relaxed) {
                        let began = Instant::now();
                        let Ok(mut answer) = agent.get(&url).call() else {
                            continue;
                        };
                        let body = answer
                            .body_mut()
                            .with_config()
                            .limit(1 << 30)
                            .read_to_vec()
                            .unwrap_or_default();
                        let took = began.elapsed();
                        requests += 1;
                        bytes += body.len() as u64;
                        total += took;
                        longest = longest.max(took);
                    }
                    (requests, bytes, total, longest)
                })
            })
            .collect();
        Readers { stop, threads }
    }

    fn finish(self) -> crate::loadgen::report::ReadersReport {
        self.stop.store(true, Ordering::Relaxed);
        let n = self.threads.len();
        let (mut requests, mut bytes) = (0, 0);
        let (mut total, mut longest) = (Duration::ZERO, Duration::ZERO);
        for t in self.threads {
            if let Ok((r, b, d, l)) = t.join() {
                requests += r;
                bytes += b;
                total += d;
                longest = longest.max(l);
            }
        }
        crate::loadgen::report::ReadersReport {
            threads: n,
            requests,
            mean_bytes: bytes.checked_div(requests).unwrap_or(0),
            mean_ms: (requests > 0).then(|| total.as_secs_f64() * 1e3 / requests as f64),
            max_ms: (requests > 0).then_some(longest.as_secs_f64() * 1e3),
        }
    }
}

/// Why a run stopped. Nothing outlives it: a started keeper or sink is stopped, and
/// its temporary directory removed, whatever the error.
#[derive(Debug, Error)]
pub(crate) enum BenchError {
    /// A flag's value cannot work.
    #[error("{0}")]
    Usage(String),
    /// A local operation failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// The key file of an external keeper is unusable.
    #[error(transparent)]
    KeyFile(#[from] ConfigFileError),
    /// The keeper process did not come up.
    #[error("cannot start the keeper: {0}")]
    StartKeeper(String),
    /// The baseline sink did not work.
    #[error("the baseline sink failed: {0}")]
    Sink(String),
    /// Some proxies were not acknowledged in time.
    #[error(
        "registration timed out: {missing} of a sender's {total} proxies got no Ack({stage}) \
         within {}s",
        REGISTRATION_TIMEOUT.as_secs()
    )]
    RegistrationTimeout {
        /// The status being acknowledged.
        stage: &'static str,
        /// Proxies without it.
        missing: usize,
        /// Proxies of that sender.
        total: usize,
    },
    /// The admin API could not be read.
    #[error("cannot read {url}: {reason}")]
    Http {
        /// What was asked.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// A sender thread panicked (a bug).
    #[error("a sender thread panicked")]
    SenderPanicked,
}

/// The checked shape of a run.
#[derive(Clone, Copy, Debug)]
struct Plan {
    proxies: usize,
    senders: usize,
    duration: Duration,
    rate_per_sender: Option<f64>,
    /// Proxies of the lost probe (at most the first sender's share).
    lost_probe: usize,
}

impl BenchArgs {
    /// Runs the bench and prints its report on stdout; `error: ...` on stderr and exit
    /// code 1 if it cannot.
    pub fn run(self) -> ExitCode {
        init_logging();
        match self.bench() {
            Ok(report) => {
                match self.output {
                    OutputFormat::Table => print!("{}", report.table()),
                    OutputFormat::Json => match serde_json::to_string_pretty(&report) {
                        Ok(text) => println!("{text}"),
                        Err(e) => {
                            eprintln!("error: cannot encode the report: {e}");
                            return ExitCode::FAILURE;
                        }
                    },
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn plan(&self) -> Result<Plan, BenchError> {
        let usage = |m: String| Err(BenchError::Usage(m));
        if !(1..=MAX_PROXIES).contains(&self.proxies) {
            return usage(format!("--proxies must be 1 to {MAX_PROXIES}"));
        }
        if self.senders == 0 {
            return usage("--senders must be at least 1".into());
        }
        if self.duration.is_zero() {
            return usage("--duration must be longer than 0".into());
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return usage("--rate must be a positive number".into());
        }
        validate_cluster(&self.cluster)
            .map_err(|e| BenchError::Usage(format!("--cluster: {e}")))?;
        if let Some(addr) = self.keeper
            && !addr.ip().is_loopback()
        {
            return usage(format!(
                "--keeper {addr}: the bench sends from 127.0.0.1, so the keeper must be on loopback"
            ));
        }
        // More threads than proxies would leave threads with nothing to send.
        let senders = self.senders.min(self.proxies);
        // The probe takes proxies of the first sender only; a small fleet gets a smaller
        // probe rather than an error for the default.
        let first_share = share(self.proxies, senders, 0).len();
        let lost_probe = self.lost_probe.min(first_share);
        if lost_probe < self.lost_probe {
            eprintln!("--lost-probe: only the first sender's {first_share} proxies can be probed");
        }
        Ok(Plan {
            proxies: self.proxies,
            senders,
            duration: self.duration,
            rate_per_sender: self.rate.map(|r| r / senders as f64),
            lost_probe,
        })
    }

    fn bench(&self) -> Result<Report, BenchError> {
        let plan = self.plan()?;
        // Proxy i has incarnation base + i; a fresh base makes every run a new life.
        let base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
            .unwrap_or(1)
            .max(1);

        // An external keeper's key first: a bad key file fails before any load.
        let external_key = match (self.keeper, &self.key_file) {
            (Some(_), Some(path)) => Some(read_key_file(path)?),
            (Some(_), None) => return Err(BenchError::Usage("--keeper needs --key-file".into())),
            (None, _) => None,
        };

        let sink = if self.baseline {
            Some(self.baseline(&plan, base)?)
        } else {
            None
        };

        let own = match self.keeper {
            Some(_) => None,
            None => {
                eprintln!("starting a keeper");
                Some(OwnKeeper::start()?)
            }
        };
        let (target, key, admin) = match (&own, self.keeper, external_key) {
            (Some(k), _, _) => (k.udp, k.key.clone(), Some(Admin::new(&k.http))),
            (None, Some(addr), Some(key)) => (
                addr,
                key,
                self.keeper_http
                    .as_deref()
                    .map(|u| Admin::new(&with_scheme(u))),
            ),
            // Without --keeper a keeper was started above; with it, the key was read.
            (None, _, _) => return Err(BenchError::Usage("--keeper needs --key-file".into())),
        };
        eprintln!(
            "keeper: udp {target}, admin {}",
            admin.as_ref().map_or("none", |a| a.base())
        );

        let mut senders = self.senders_for(&plan, &key, target, base, false)?;
        eprintln!("registering {} proxies", plan.proxies);
        let began = Instant::now();
        let deadline = began + REGISTRATION_TIMEOUT;
        let results = in_parallel(&mut senders, |s| s.register(deadline))?;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        eprintln!(
            "registered in {:.1}s; GSO: {} datagrams per send",
            began.elapsed().as_secs_f64(),
            senders.first().map_or(1, Sender::gso_segments)
        );

        let counters_before = admin.as_ref().map(Admin::counters).transpose()?;
        let own_cpu = || own.as_ref().and_then(|k| cpu_seconds(Some(k.pid())));
        let cpu_before = own_cpu();
        let readers = match &admin {
            Some(admin) if self.readers > 0 => Some(Readers::start(admin.base(), self.readers)),
            _ => None,
        };
        let phase = run_phase(&mut senders, &plan, "load", true, plan.duration, |_| false);
        let readers = readers.map(Readers::finish);
        let (stats, elapsed) = phase?;
        let counters_after = admin
            .as_ref()
            .map(|a| a.settled_counters(COUNTER_PATIENCE))
            .transpose()?;
        let cpu_after = own_cpu();
        let keeper_received = counters_before
            .zip(counters_after)
            .map(|(b, a)| a.received.saturating_sub(b.received));
        let keeper_cpu_s = match &own {
            Some(_) => cpu_before.zip(cpu_after).map(|(b, a)| a - b),
            None => counters_before
                .zip(counters_after)
                .and_then(|(b, a)| a.cpu_seconds.zip(b.cpu_seconds))
                .map(|(a, b)| a - b),
        };

        let lost_probe = match &admin {
            Some(admin) if plan.lost_probe > 0 => {
                let lost_after = senders
                    .iter()
                    .find_map(|s| s.fleet.lost_after_ms())
                    .map(|ms| Duration::from_millis(u64::from(ms)))
                    .unwrap_or(OWN_LOST_AFTER);
                Some(self.lost_probe(&mut senders, &plan, admin, lost_after)?)
            }
            _ => None,
        };

        let stalls = counters_before
            .zip(counters_after)
            .and_then(|(b, a)| a.stalls.zip(b.stalls).map(|(a, b)| a.saturating_sub(b)));
        let false_lost = counters_before
            .zip(counters_after)
            .map(|(b, a)| a.up_to_lost.saturating_sub(b.up_to_lost));
        Ok(Report::new(Measured {
            readers,
            stalls,
            false_lost,
            proxies: plan.proxies,
            senders: plan.senders,
            duration_s: elapsed.as_secs_f64(),
            sent: stats.sent,
            acknowledged: stats.acked,
            challenges: stats.challenges,
            keeper_received,
            keeper_cpu_s,
            rtt_us: RttSummary::of(&stats.rtt),
            lost_probe,
            sink,
        }))
    }

    /// The baseline: the same senders and offered load against a plain sink. Returns
    /// its count, its CPU seconds and the phase's length in seconds.
    fn baseline(&self, plan: &Plan, base: u64) -> Result<(u64, Option<f64>, f64), BenchError> {
        let sink = SinkProcess::start(self.sink)?;
        eprintln!("baseline: a plain UDP sink on {}", sink.addr);
        // The sink reads nothing, so any key does; the tags cost the same.
        let key =
            Key::new(&rand::random::<[u8; 32]>()).map_err(|e| BenchError::Sink(e.to_string()))?;
        let mut senders = self.senders_for(plan, &key, sink.addr, base, true)?;
        let cpu_before = cpu_seconds(Some(sink.pid()));
        let (_, elapsed) = run_phase(&mut senders, plan, "baseline", false, plan.duration, |_| {
            false
        })?;
        let (received, cpu_after) = sink.finish()?;
        let cpu = cpu_before.zip(cpu_after).map(|(b, a)| a - b);
        Ok((received, cpu, elapsed.as_secs_f64()))
    }

    /// The lost probe: the first proxies of sender 0 fall silent for `lost_after` + 2 s
    /// (longer while some are not marked yet) while every other proxy keeps sending;
    /// then the admin API tells when each was marked `lost`.
    fn lost_probe(
        &self,
        senders: &mut [Sender],
        plan: &Plan,
        admin: &Admin,
        lost_after: Duration,
    ) -> Result<LostProbe, BenchError> {
        let Some(first) = senders.first_mut() else {
            return Err(BenchError::Usage("no sender".into()));
        };
        let probes: Vec<String> = (0..plan.lost_probe)
            .map(|i| first.fleet.name(i).to_owned())
            .collect();
        first.fleet.pause_first(probes.len());
        let shortest = lost_after + PROBE_MARGIN;
        // A keeper far behind under load may mark them later still: wait up to another
        // lost_after for that, so that a late mark is measured rather than cut off.
        let longest = shortest + lost_after;
        eprintln!(
            "lost probe: {} proxies fall silent for {}s to {}s (until all are marked lost) \
             while the others keep sending",
            probes.len(),
            shortest.as_secs_f64(),
            longest.as_secs_f64()
        );
        let client = Client::new(admin.base());
        let url = format!("{}/v1/clusters/{}/proxies", admin.base(), self.cluster);
        let read = || {
            client
                .proxies(Some(&self.cluster))
                .map_err(|e| BenchError::Http {
                    url: url.clone(),
                    reason: e.to_string(),
                })
        };
        let all_lost = |listing: &[ProxyView]| {
            let lost: HashSet<&str> = listing
                .iter()
                .filter(|p| p.status == "lost")
                .map(|p| p.proxy.as_str())
                .collect();
            probes.iter().all(|name| lost.contains(name.as_str()))
        };
        let mut listing = None;
        let mut next_read = shortest;
        run_phase(senders, plan, "lost probe", false, longest, |elapsed| {
            if elapsed < next_read {
                return false;
            }
            next_read = elapsed + Duration::from_secs(1);
            // An unreadable listing ends the wait; it is read once more below.
            match read() {
                Ok(now) if all_lost(&now) => {
                    listing = Some(now);
                    true
                }
                Ok(_) => false,
                Err(_) => true,
            }
        })?;
        if let Some(first) = senders.first_mut() {
            first.fleet.pause_first(0);
        }
        let listing = match listing {
            Some(listing) => listing,
            None => read()?,
        };
        let by_name: HashMap<&str, _> = listing.iter().map(|p| (p.proxy.as_str(), p)).collect();
        let lost_after_ms = u64::try_from(lost_after.as_millis()).unwrap_or(u64::MAX);
        let latenesses: Vec<i64> = probes
            .iter()
            .filter_map(|name| by_name.get(name.as_str()))
            .filter(|p| p.status == "lost")
            // A time the keeper does not know gives no lateness.
            .filter_map(|p| {
                let (heard, since) = (p.last_heartbeat_age_ms?, p.since_age_ms?);
                Some(report::lateness_ms(heard, since, lost_after_ms))
            })
            .collect();
        Ok(LostProbe {
            probes: probes.len(),
            lost: latenesses.len(),
            lateness_ms: LatenessSummary::of(&latenesses),
        })
    }

    /// One sender per thread, each with its share of the proxies, sending to `target`.
    fn senders_for(
        &self,
        plan: &Plan,
        key: &Key,
        target: SocketAddr,
        base: u64,
        pretend_registered: bool,
    ) -> Result<Vec<Sender>, BenchError> {
        (0..plan.senders)
            .map(|t| {
                let range = share(plan.proxies, plan.senders, t);
                let mut fleet =
                    Fleet::new(key.clone(), &self.cluster, base, range.start, range.len());
                if pretend_registered {
                    fleet.pretend_registered();
                }
                Sender::bind(fleet, target).map_err(|e| {
                    BenchError::Io("cannot bind a sender socket on 127.0.0.1".into(), e)
                })
            })
            .collect()
    }
}

/// The proxies of sender `t` of `senders`: a contiguous range, shares differing by at
/// most one.
fn share(proxies: usize, senders: usize, t: usize) -> std::ops::Range<usize> {
    proxies * t / senders..proxies * (t + 1) / senders
}

/// `url` with `http://` in front if it has no scheme.
fn with_scheme(url: &str) -> String {
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

/// Runs `f` on every sender, each on a thread of its own, and returns the results in
/// sender order.
fn in_parallel<R: Send>(
    senders: &mut [Sender],
    f: impl Fn(&mut Sender) -> R + Sync,
) -> Result<Vec<R>, BenchError> {
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = senders
            .iter_mut()
            .map(|s| scope.spawn(move || f(s)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| BenchError::SenderPanicked))
            .collect()
    })
}

/// Runs a load phase on every sender and prints a progress line each second. The phase
/// lasts `longest`, or less if `stop_early` (asked every 50 ms with the time elapsed)
/// says so. Returns the counts summed over the senders, and how long sending went on.
fn run_phase(
    senders: &mut [Sender],
    plan: &Plan,
    label: &str,
    record_rtt: bool,
    longest: Duration,
    mut stop_early: impl FnMut(Duration) -> bool,
) -> Result<(ShardStats, Duration), BenchError> {
    for s in senders.iter_mut() {
        s.discard_queued();
        s.fleet.take_stats();
        s.fleet.set_record_rtt(record_rtt);
    }
    let progress: Vec<Progress> = senders.iter().map(|_| Progress::default()).collect();
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let until = start + longest;
    let rate = plan.rate_per_sender;
    let tty = std::io::stderr().is_terminal();
    let stopped = std::thread::scope(|scope| {
        let stop = &stop;
        let handles: Vec<_> = senders
            .iter_mut()
            .zip(&progress)
            .map(|(s, p)| scope.spawn(move || s.load(until, stop, rate, SETTLE, p)))
            .collect();
        let second = Duration::from_secs(1);
        let mut next = start + second;
        let (mut last_sent, mut last_print) = (0u64, start);
        while !handles.iter().all(|h| h.is_finished()) {
            let to_next = next.saturating_duration_since(Instant::now());
            std::thread::sleep(to_next.min(Duration::from_millis(50)));
            if !stop.load(Ordering::Relaxed) && stop_early(start.elapsed()) {
                stop.store(true, Ordering::Relaxed);
            }
            let now = Instant::now();
            if now < next {
                continue;
            }
            // `stop_early` may have taken long (an HTTP call to a loaded keeper): the next
            // line comes a second after this one, and the rate is over the real interval.
            next = (next + second).max(now + second / 2);
            let interval = now.saturating_duration_since(last_print).as_secs_f64();
            last_print = now;
            let sent: u64 = progress
                .iter()
                .map(|p| p.sent.load(Ordering::Relaxed))
                .sum();
            let acked: u64 = progress
                .iter()
                .map(|p| p.acked.load(Ordering::Relaxed))
                .sum();
            let rate = (sent - last_sent) as f64 / interval.max(1e-3);
            let line = format!(
                "{label}: {:>4.1}s  sent {sent:>10}  rate {:>8.0}/s  acks {acked}",
                start.elapsed().as_secs_f64(),
                rate
            );
            last_sent = sent;
            if tty {
                eprint!("\r{line}   ");
            } else {
                eprintln!("{line}");
            }
        }
        if tty {
            eprintln!();
        }
        let mut stopped = start;
        for h in handles {
            stopped = stopped.max(h.join().map_err(|_| BenchError::SenderPanicked)?);
        }
        Ok::<_, BenchError>(stopped)
    })?;
    let mut total = ShardStats::new();
    for s in senders.iter_mut() {
        total.merge(&s.fleet.take_stats());
    }
    Ok((total, stopped.saturating_duration_since(start)))
}

/// Logs go to stderr, `warn` unless RUST_LOG says otherwise (`RUST_LOG=debug` shows the
/// socket buffers granted and whether GSO and GRO are on).
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // A subscriber set earlier (by a test harness, say) stays: then this one is not needed.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_contiguous_and_cover_every_proxy() {
        let ranges: Vec<_> = (0..3).map(|t| share(10, 3, t)).collect();
        assert_eq!(ranges, vec![0..3, 3..6, 6..10]);
        assert_eq!(share(1, 1, 0), 0..1);
    }
}
