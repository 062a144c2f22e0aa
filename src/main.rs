//! The `zerokeeper` command: the keeper (`serve`), a proxy for trials (`proxy`), the
//! operator's commands (`status`, `remove`, `push-config`, `switch`), the live `demo`,
//! the core replay (`scenario`), and `keygen`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tracing::info;
use tracing_subscriber::EnvFilter;

use zerokeeper::agent::{Agent, AgentConfig, StopReason};
use zerokeeper::auth::{Key, Keyring};
use zerokeeper::config::{
    EtcdSettings, LogFormat, ServeArgs, ServeConfig, encode_hex, read_key_file,
};
use zerokeeper::driver::proxy::{InitPolicy, ProxyDriver, ProxyExit};
use zerokeeper::driver::resolve;
use zerokeeper::driver::{DatagramSocket, DriverClock, unix_micros};
use zerokeeper::ha::LEASE_LOST_EXIT;
use zerokeeper::scenario::harness::CoreWorld;
use zerokeeper::scenario::net::NetConfig;
use zerokeeper::scenario::{self, Timing};
use zerokeeper::server::{self, Setup};
use zerokeeper::store::redb::RedbStore;
use zerokeeper::time::WallTime;
use zerokeeper::wire::Version;

/// zerokeeper: tells which database proxies of a fleet are alive.
#[derive(Parser, Debug)]
#[command(version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the keeper: UDP heartbeats in, the HTTP admin API out.
    // Boxed: its many settings would make every command as large.
    Serve(Box<ServeArgs>),
    /// Runs a proxy (the agent core) against a keeper, for trials, demos and tests.
    Proxy(ProxyArgs),
    /// Shows proxies and their status (or follows changes with --watch).
    Status(zerokeeper::cli::admin::StatusArgs),
    /// Deletes a proxy from its cluster.
    Remove(zerokeeper::cli::admin::RemoveArgs),
    /// Stores a config file as the cluster's next config version (gated).
    PushConfig(zerokeeper::cli::admin::PushConfigArgs),
    /// Switches a hostgroup's datasource (gated).
    Switch(zerokeeper::cli::admin::SwitchArgs),
    /// The clusters the keeper holds.
    Cluster(zerokeeper::cli::cluster::ClusterArgs),
    /// Declares and lists a cluster's hostgroups and their datasources.
    Hostgroup(zerokeeper::cli::cluster::HostgroupArgs),
    /// A cluster's config versions: get, history, diff, rollback.
    Config(zerokeeper::cli::config::ConfigArgs),
    /// Shows the rollout of a cluster's current config: who runs it, who does not yet,
    /// who rejected it.
    Rollout(zerokeeper::cli::rollout::RolloutArgs),
    /// Shows the audit record: who did what, when, and the result.
    Audit(zerokeeper::cli::admin::AuditArgs),
    /// Backs up a running keeper's store (`save`), and checks (`status`) and restores
    /// (`restore`) a backup.
    Snapshot(zerokeeper::cli::snapshot::SnapshotArgs),
    /// Makes the keeper re-read its key files, admin tokens and TLS certificate (as
    /// SIGHUP does) and prints the keys in force.
    Reload(zerokeeper::cli::admin::ReloadArgs),
    /// Plays the seed scenario live: a keeper and four proxies on loopback, real time.
    Demo(DemoArgs),
    /// Replays the seed scenario on the keeper and agent cores in virtual time and
    /// prints each step's listing; exits 0 only if all 13 match.
    Scenario(ScenarioArgs),
    /// Writes a new random secret key, as hex, for --key-file.
    Keygen(KeygenArgs),
    /// Loads a keeper with heartbeats from simulated proxies and reports what it took.
    Bench(zerokeeper::loadgen::BenchArgs),
    /// Counts UDP datagrams: the baseline of `bench --baseline`.
    #[command(hide = true)]
    BenchSink(zerokeeper::loadgen::SinkArgs),
    /// Prints this client's version and the keeper's, and warns if they differ.
    Version(zerokeeper::cli::version::VersionArgs),
    /// Prints a shell completion script (`source <(zerokeeper completion bash)`).
    Completion(CompletionArgs),
    /// Writes the man pages, one per command (`zerokeeper.1`, `zerokeeper-status.1`, …),
    /// or prints the top one.
    Man(ManArgs),
}

/// `zerokeeper completion` flags.
#[derive(clap::Args, Debug)]
struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// `zerokeeper man` flags.
#[derive(clap::Args, Debug)]
struct ManArgs {
    /// Write every command's page into this directory (else print `zerokeeper.1`).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// `zerokeeper proxy` flags.
#[derive(clap::Args, Debug)]
struct ProxyArgs {
    /// The keepers' UDP addresses, comma-separated `HOST:PORT`s (names are resolved at
    /// start, and again while no keeper answers). With several, the proxy sends to the
    /// one that answers (the leader), and to all of them while none does.
    #[arg(
        long,
        env = "ZEROKEEPER_KEEPER",
        value_name = "HOST:PORT[,…]",
        value_delimiter = ',',
        required = true
    )]
    keeper: Vec<String>,
    /// The cluster this proxy belongs to.
    #[arg(long, value_name = "NAME")]
    cluster: String,
    /// The proxy's identity, the address it serves on (only a name: nothing is sent to it).
    #[arg(long, value_name = "IDENTITY")]
    addr: String,
    /// The cluster's secret key (hex).
    #[arg(long, env = "ZEROKEEPER_KEY_FILE", value_name = "PATH")]
    key_file: PathBuf,
    /// Local UDP address to send from.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    bind: SocketAddr,
    /// Heartbeat interval until the keeper says otherwise.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s", value_name = "DURATION")]
    interval: Duration,
    /// How long initialising takes once the startup config has arrived.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s", value_name = "DURATION")]
    init_delay: Duration,
    /// Fail to start for a known reason: send `down` once registered (after --init-delay).
    #[arg(long, conflicts_with = "crash_on_start")]
    fail_start: bool,
    /// Exit without a word once the keeper has acknowledged the registration.
    #[arg(long)]
    crash_on_start: bool,
    /// Reject config version N whenever it arrives, as a proxy whose config fails to load
    /// would: it keeps running what it ran and tells the keeper why (protocol 2).
    #[arg(long, value_name = "N")]
    reject_config_version: Option<u64>,
    /// Run as if the host's clock were this far ahead (the incarnation comes from the
    /// wall clock): for trials of clock skew.
    #[arg(long, hide = true, value_parser = humantime::parse_duration, value_name = "DURATION")]
    clock_ahead: Option<Duration>,
    /// The protocol version to speak: 2 (leadership terms fence a deposed keeper, config
    /// ids) or 1, as a proxy of an older release does (docs/PROTOCOL.md §17.5).
    #[arg(long, default_value = "2", value_parser = parse_protocol, value_name = "1|2")]
    protocol: Version,
    /// Log format; the filter comes from RUST_LOG (default `info`).
    #[arg(long, value_enum, default_value = "text", value_name = "FORMAT")]
    log_format: LogFormat,
}

fn parse_protocol(text: &str) -> Result<Version, String> {
    text.parse::<u8>()
        .ok()
        .and_then(Version::from_byte)
        .ok_or_else(|| format!("the protocol version is 1 or 2, not {text:?}"))
}

/// `zerokeeper demo` flags.
#[derive(clap::Args, Debug)]
struct DemoArgs {
    /// HTTP address of the demo keeper's admin API (watch it with `zerokeeper status`).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    http: SocketAddr,
}

/// `zerokeeper scenario` flags.
#[derive(clap::Args, Debug)]
struct ScenarioArgs {
    /// Probability that a datagram is lost (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Probability that a datagram is duplicated (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    /// Random extra delay per datagram, up to this much (reorders datagrams).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0ms")]
    jitter: Duration,
    /// Seed of the network's randomness.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// `lost_after` (the heartbeat interval is 1s). Use a longer one with loss.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    lost_after: Duration,
    /// `ready_timeout`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    ready_timeout: Duration,
    /// `delete_after`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    delete_after: Duration,
    /// Heartbeat intervals a step may wait for anything that needs round trips.
    #[arg(long, default_value_t = 10)]
    patience: u32,
}

/// `zerokeeper keygen` flags.
#[derive(clap::Args, Debug)]
struct KeygenArgs {
    /// Write the key to this file (mode 0600; an existing file is never overwritten)
    /// instead of standard output.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => match serve(*args) {
            Ok(Served::Stopped) => Ok(()),
            Ok(Served::LeaseLost) => return ExitCode::from(LEASE_LOST_EXIT),
            Err(e) => Err(e),
        },
        Command::Proxy(args) => return proxy(args),
        Command::Status(args) => return args.run(),
        Command::Remove(args) => return args.run(),
        Command::PushConfig(args) => return args.run(),
        Command::Switch(args) => return args.run(),
        Command::Reload(args) => return args.run(),
        Command::Audit(args) => return args.run(),
        Command::Snapshot(args) => return args.run(),
        Command::Config(args) => return args.run(),
        Command::Cluster(args) => return args.run(),
        Command::Hostgroup(args) => return args.run(),
        Command::Rollout(args) => return args.run(),
        Command::Demo(args) => return demo(args),
        Command::Scenario(args) => return run_scenario(args),
        Command::Keygen(args) => keygen(args),
        Command::Bench(args) => return args.run(),
        Command::BenchSink(args) => return args.run(),
        Command::Version(args) => return args.run(),
        Command::Completion(args) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut command, "zerokeeper", &mut script);
            print_bytes(&script)
        }
        Command::Man(args) => man(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, `outer: cause: root`, each said once: an error
/// whose message already includes its cause (`invalid setting: {0}` over the setting's
/// own error) does not repeat it.
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let words = cause.to_string();
        if text.contains(&words) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&words);
    }
    text
}

fn init_logging(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colours only for a person at a terminal; logs piped to a file or a collector stay plain.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Says where the keeper listens: two plain lines for a person (and for scripts that wait
/// for them), or, with JSON logs, two log lines like every other (`udp listening on ADDR`
/// is their message either way).
fn announce(format: LogFormat, udp: SocketAddr, http: SocketAddr, hint: &str) {
    match format {
        LogFormat::Text => {
            eprintln!("udp listening on {udp}");
            eprintln!("http listening on {http}{hint}");
        }
        LogFormat::Json => {
            info!(%udp, "udp listening on {udp}");
            info!(%http, "http listening on {http}");
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The parts of a keeper's [`Setup`] that `serve` takes from its configuration, the same
/// for a keeper alone and one of several, with the reloader of its files (SIGHUP and
/// `POST /v1/reload`).
fn serve_setup(
    args: &ServeArgs,
    config: &ServeConfig,
) -> anyhow::Result<(Setup, std::sync::Arc<zerokeeper::reload::Reloader>)> {
    use zerokeeper::http::tokens::TokenStore;
    let mut setup = Setup::new(config.keeper.clone(), config.keyring.clone());
    setup.retention = config.watch_retention;
    setup.history = config.history;
    setup.config_formats = config.config_formats.clone();
    setup.hostgroups = config.hostgroups.clone();
    setup.config_id_key = config.store_keys.as_ref().map(|k| k.config_id_key());
    setup.limits = config.http_limits.clone();
    // A fresh token secret: tokens of an earlier run never count.
    setup.token_secret = rand::random();
    let admin = &config.admin;
    setup.access =
        zerokeeper::http::Access::new(TokenStore::new(admin.tokens.clone()), admin.auth_reads);
    if let Some(files) = &config.tls {
        setup.tls = Some(zerokeeper::http::tls::Tls::load(&files.cert, &files.key)?);
    }
    if admin.tokens.enabled() {
        info!(
            tokens = admin.tokens.len(),
            auth_reads = admin.auth_reads,
            "admin API: changes and config contents need an admin token"
        );
    } else if !config.http.ip().is_loopback() {
        tracing::warn!(http = %config.http,
            "admin API: no --admin-token-file, so anyone who reaches it may change the fleet");
    }
    let keys: Vec<String> = config
        .keyring
        .in_force()
        .map(|(id, _)| id.to_string())
        .collect();
    info!(keys = %keys.join(","), "keys in force");
    let (reloader, updates) = zerokeeper::reload::Reloader::new(
        args.clone(),
        config.keyring.clone(),
        setup.access.clone(),
        setup.tls.clone(),
    );
    let reloader = std::sync::Arc::new(reloader);
    setup.key_updates = Some(updates);
    setup.reload = Some(reloader.clone());
    Ok((setup, reloader))
}

/// Binds the keeper's sockets (before anything else is touched: a port in use must not
/// leave a data directory behind).
///
/// `send_buffer` (bytes, 0 for the kernel's own sizing) is set on the HTTP listener,
/// whose connections inherit it: what a client that does not read can make the keeper
/// hold in the kernel.
async fn bind(
    udp: SocketAddr,
    http: SocketAddr,
    send_buffer: usize,
) -> anyhow::Result<(zerokeeper::driver::udp::Udp, TcpListener)> {
    let socket = zerokeeper::driver::udp::Udp::bind(udp)
        .await
        .with_context(|| format!("cannot bind UDP {udp}"))?;
    let listener = TcpListener::bind(http)
        .await
        .with_context(|| format!("cannot bind HTTP {http}"))?;
    if send_buffer > 0 {
        socket2::SockRef::from(&listener)
            .set_send_buffer_size(send_buffer)
            .with_context(|| format!("cannot set the send buffer of HTTP {http}"))?;
    }
    Ok((socket, listener))
}

/// How `serve` ended, when it did not fail.
enum Served {
    /// Told to stop.
    Stopped,
    /// A leader whose lease could have expired: exit 75, to be started again as a standby.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    LeaseLost,
}

fn serve(args: ServeArgs) -> anyhow::Result<Served> {
    let config = args.resolve()?;
    init_logging(config.log_format, "info");
    if args.http.is_some() {
        tracing::warn!(
            "serve's --http (ZEROKEEPER_HTTP_ADDR) is deprecated: it is --http-listen (ZEROKEEPER_HTTP_LISTEN) now; --http URL names the keeper in the client commands"
        );
    }
    match &config.store_keys {
        Some(keys) => info!(
            keys = %keys.ids().iter().map(|id| format!("{id:08x}")).collect::<Vec<_>>().join(","),
            "configs are sealed at rest under the first store key"
        ),
        None => tracing::warn!(
            "no store key (--store-key-file): configs, which are credentials, are stored in plaintext"
        ),
    }
    if let Some(etcd) = config.etcd.clone() {
        return serve_ha(&args, config, etcd);
    }
    serve_alone(&args, config).map(|()| Served::Stopped)
}

/// `serve --store etcd` in a build without the `etcd` feature.
#[cfg(not(feature = "etcd"))]
fn serve_ha(
    _args: &ServeArgs,
    _config: ServeConfig,
    _etcd: EtcdSettings,
) -> anyhow::Result<Served> {
    bail!(
        "this zerokeeper was built without etcd support: build it with `cargo build --features etcd` (needs protoc, Debian's protobuf-compiler)"
    )
}

/// `serve --store etcd`: one keeper of several on one etcd (see `zerokeeper::ha::run`).
#[cfg(feature = "etcd")]
fn serve_ha(args: &ServeArgs, config: ServeConfig, etcd: EtcdSettings) -> anyhow::Result<Served> {
    use zerokeeper::ha::run::{Ended, HaOptions};
    use zerokeeper::ha::{KeeperInfo, etcd::DEFAULT_MARGIN};
    use zerokeeper::store::etcd::{EtcdOptions, EtcdTls};
    runtime()?.block_on(async {
        let (socket, listener) = bind(config.udp, config.http, config.http_send_buffer).await?;
        let (udp, http) = (socket.local_addr()?, listener.local_addr()?);
        announce(config.log_format, udp, http, "");
        let mut options = EtcdOptions::new(etcd.endpoints.clone());
        options.root = etcd.prefix.clone();
        options.user = etcd.user.clone();
        options.store_keys = config.store_keys.clone();
        if etcd.cacert.is_some() || etcd.cert.is_some() || etcd.key.is_some() {
            options.tls = Some(EtcdTls {
                ca_file: etcd.cacert.clone(),
                cert_file: etcd.cert.clone(),
                key_file: etcd.key.clone(),
            });
        }
        let id = etcd.keeper_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "keeper".to_owned());
            format!("{host}:{}", http.port())
        });
        let me = KeeperInfo {
            id,
            udp: etcd.advertise_udp.clone().unwrap_or_else(|| udp.to_string()),
            http: etcd
                .advertise_http
                .clone()
                .unwrap_or_else(|| format!("http://{http}")),
        };
        info!(id = %me.id, %udp, %http, endpoints = %etcd.endpoints.join(","), prefix = %etcd.prefix,
              lease_ttl = ?etcd.lease_ttl, interval = ?config.keeper.heartbeat_interval,
              lost_after = ?config.keeper.lost_after, "keeper started (etcd store, leader election)");
        let (setup, reloader) = serve_setup(args, &config)?;
        tokio::spawn(reloader.on_hangup());
        // A standby serves reads: the keeper is ready once it has bound its sockets. The
        // watchdog proves the runtime turns (the leader's own liveness is its lease).
        let notifier = zerokeeper::notify::Notifier::from_env();
        notifier.ready(&format!("serving: udp {udp}, http {http} (etcd store)"));
        if let Some(timeout) = notifier.watchdog() {
            tokio::spawn(watchdog(notifier.clone(), timeout, || async { true }));
        }
        let ha = HaOptions {
            etcd: options,
            me,
            ttl: etcd.lease_ttl,
            margin: DEFAULT_MARGIN,
        };
        match zerokeeper::ha::run::run(setup, ha, socket, listener, termination()).await? {
            Ended::Shutdown => {
                notifier.stopping();
                info!("stopped");
                Ok(Served::Stopped)
            }
            Ended::LeaseLost => {
                tracing::error!(code = LEASE_LOST_EXIT, "exiting: the leadership lease could have expired; start again as a standby");
                Ok(Served::LeaseLost)
            }
        }
    })
}

/// `serve` with the data directory: the only keeper.
fn serve_alone(args: &ServeArgs, config: ServeConfig) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let (socket, listener) = bind(config.udp, config.http, config.http_send_buffer).await?;
        let (udp, http) = (socket.local_addr()?, listener.local_addr()?);
        let dir = &config.data_dir;
        let store = RedbStore::open_sealed(dir, config.store_keys.clone())
            .with_context(|| format!("cannot use the data directory {}", dir.display()))?;
        let began = std::time::Instant::now();
        let (mut setup, reloader) = serve_setup(args, &config)?;
        setup.store = Some(Box::new(store));
        tokio::spawn(reloader.on_hangup());
        let (stop, stopping) = watch::channel(false);
        let keeper = server::start(setup, socket, listener, server::stopped(stopping))
            .await
            .with_context(|| format!("cannot start the keeper on {}", dir.display()))?;
        let (generation, revision) = keeper.hub.position();
        info!(revision, generation,
              took_ms = began.elapsed().as_millis() as u64, data_dir = %dir.display(), "state restored");
        announce(config.log_format, udp, http, "");
        info!(%udp, %http, data_dir = %dir.display(),
              interval = ?config.keeper.heartbeat_interval, lost_after = ?config.keeper.lost_after,
              ready_timeout = ?config.keeper.ready_timeout, delete_after = ?config.keeper.delete_after,
              stall_slop = ?config.keeper.stall_slop, max_proxies = config.keeper.max_proxies,
              max_clusters = config.keeper.max_clusters,
              mass_loss_min_proxies = config.keeper.mass_loss_min_proxies, "keeper started");
        let limits = &config.http_limits;
        info!(max_connections = limits.max_connections, max_watchers = limits.max_watchers,
              header_read_timeout = ?limits.header_read_timeout, idle_timeout = ?limits.idle_timeout,
              body_read_timeout = ?limits.body_read_timeout, write_timeout = ?limits.write_timeout,
              max_headers = limits.max_headers, max_header_bytes = limits.max_header_bytes,
              max_requests_per_connection = limits.max_requests_per_connection,
              shutdown_deadline = ?limits.shutdown_deadline, send_buffer = config.http_send_buffer,
              "admin API limits");
        let notifier = zerokeeper::notify::Notifier::from_env();
        notifier.ready(&format!("serving: udp {udp}, http {http}, revision {revision}"));
        if let Some(timeout) = notifier.watchdog() {
            let (notifier, handle) = (notifier.clone(), keeper.handle.clone());
            tokio::spawn(watchdog(notifier, timeout, move || {
                let handle = handle.clone();
                async move { handle.call(|_, _| ()).await.is_ok() }
            }));
        }
        let server::Running {
            keeper_task,
            http_task,
            view_task,
            ..
        } = keeper;
        let mut keeper_task = keeper_task;
        // `biased`: a signal first. The keeper task ends by itself only when it failed
        // (its store, its socket): the process then exits non-zero, so that a supervisor
        // restarts it, rather than serve a dead keeper's API.
        let failed = tokio::select! {
            biased;
            () = termination() => None,
            ended = &mut keeper_task => Some(ended),
        };
        notifier.stopping();
        let _ = stop.send(true);
        let _ = view_task.await;
        let http = http_task.await;
        match failed {
            None => {
                info!("stopping");
                keeper_task.await.context("keeper task")??;
                http.context("http task")??;
                info!("stopped");
                Ok(())
            }
            Some(ended) => {
                let why = match ended {
                    Ok(Ok(())) => "it ended".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::error!(error = %why, "the keeper task stopped; exiting");
                notifier.status(&format!("the keeper task stopped: {why}"));
                bail!("the keeper task stopped: {why}")
            }
        }
    })
}

/// Pings the service manager's watchdog (`timeout` is its `WatchdogSec=`) three times
/// a timeout, each time `alive` says so within a third of it: a keeper whose keeper task
/// hangs (a store that never answers, a stuck core) stops pinging and is restarted.
async fn watchdog<F, A>(notifier: zerokeeper::notify::Notifier, timeout: Duration, alive: F)
where
    F: Fn() -> A,
    A: std::future::Future<Output = bool>,
{
    let period = timeout / 3;
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match tokio::time::timeout(period, alive()).await {
            Ok(true) => notifier.ping(),
            Ok(false) => return,
            Err(_) => {
                tracing::warn!(waited = ?period, "the keeper task did not answer the watchdog's probe in time")
            }
        }
    }
}

/// `proxy`: re-reads the key file on every SIGHUP and signs with what it holds from then
/// on (a key rotation without a restart); a file that does not load changes nothing.
async fn reread_key_on_hangup(
    path: PathBuf,
    commands: tokio::sync::mpsc::Sender<zerokeeper::driver::proxy::ProxyCommand>,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            match read_key_file(&path) {
                Ok(key) => {
                    let command = zerokeeper::driver::proxy::ProxyCommand::SetKey(Box::new(key));
                    if commands.send(command).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "key not reloaded: signing with the key in use")
                }
            }
        }
    }
}

fn proxy(args: ProxyArgs) -> ExitCode {
    use tracing::Instrument as _;
    init_logging(args.log_format, "info");
    // Every line this proxy logs names its cluster and identity (a host may run several).
    let span = tracing::info_span!("proxy", cluster = %args.cluster, proxy = %args.addr);
    let run = async {
        let key = read_key_file(&args.key_file)?;
        let mut cfg = AgentConfig::new(args.cluster.clone(), args.addr.clone(), key);
        cfg.default_interval = args.interval;
        cfg.keepers = args.keeper.len();
        cfg.protocol = args.protocol;
        let socket = UdpSocket::bind(args.bind)
            .await
            .with_context(|| format!("cannot bind UDP {}", args.bind))?;
        let v4 = args.bind.is_ipv4();
        let keepers = resolve::resolve_all(&args.keeper, v4).await?;
        let (keepers_tx, keepers_rx) = watch::channel(keepers);
        let clock = DriverClock::start();
        let wall = SystemTime::now() + args.clock_ahead.unwrap_or_default();
        let start = WallTime::from_micros(unix_micros(wall));
        let agent = Agent::new(cfg, start, clock.now())?;
        let init = match (args.fail_start, args.crash_on_start) {
            (true, _) => InitPolicy::FailsAfter(args.init_delay),
            (_, true) => InitPolicy::CrashOnAck,
            _ => InitPolicy::After(args.init_delay),
        };
        let (driver, control) = ProxyDriver::with_keepers(agent, socket, keepers_rx, init, clock);
        let driver = driver.reject_version(args.reject_config_version);
        tokio::spawn(
            reread_key_on_hangup(args.key_file.clone(), control.commands.clone()).in_current_span(),
        );
        tokio::spawn(
            resolve::keep_resolving(args.keeper.clone(), v4, keepers_tx, control.state.clone())
                .in_current_span(),
        );
        Ok::<_, anyhow::Error>(driver.run(termination()).await?)
    }
    .instrument(span);
    let exit = match runtime().and_then(|rt| rt.block_on(run)) {
        Ok(exit) => exit,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    match exit {
        ProxyExit::Shutdown(Some(StopReason::Unregistered)) => ExitCode::SUCCESS,
        ProxyExit::Shutdown(other) => {
            eprintln!("stopped without the keeper acknowledging the unregister ({other:?})");
            ExitCode::SUCCESS
        }
        ProxyExit::Stopped(StopReason::Removed) => {
            eprintln!(
                "proxy stopped: {}; exiting {} so that a supervisor does not start it again",
                StopReason::Removed,
                zerokeeper::driver::proxy::REMOVED_EXIT
            );
            ExitCode::from(zerokeeper::driver::proxy::REMOVED_EXIT)
        }
        ProxyExit::Stopped(reason) => {
            eprintln!("proxy stopped: {reason}");
            ExitCode::FAILURE
        }
        ProxyExit::Crashed => ExitCode::FAILURE,
    }
}

fn demo(args: DemoArgs) -> ExitCode {
    init_logging(LogFormat::Text, "warn");
    let timing = zerokeeper::demo::timing();
    let run = async {
        let started = std::time::Instant::now();
        let secret: [u8; 32] = rand::random();
        let key = Key::new(&secret)?;
        let loopback: SocketAddr = "127.0.0.1:0".parse()?;
        let (socket, listener) = bind(loopback, args.http, 0).await?;
        let (udp, http) = (socket.local_addr()?, listener.local_addr()?);
        // The demo keeps nothing: a keeper with no store.
        let mut setup = Setup::new(
            zerokeeper::demo::keeper_config(&timing),
            Keyring::with_default(key.clone()),
        );
        setup.epoch = rand::random();
        setup.token_secret = rand::random();
        // The hostgroup the scenario switches, as a config file would declare it.
        setup.hostgroups = zerokeeper::scenario::hostgroups();
        let (stop, stopping) = watch::channel(false);
        let keeper = server::start(setup, socket, listener, server::stopped(stopping)).await?;
        let hint = format!(" (try: zerokeeper status --http http://{http} --watch)");
        announce(LogFormat::Text, udp, http, &hint);
        let world = zerokeeper::demo::LiveWorld::new(
            tokio::runtime::Handle::current(),
            keeper.handle.clone(),
            udp,
            key,
            timing,
        );
        let outcome = tokio::task::spawn_blocking(move || {
            let mut world = world;
            let steps = scenario::seed(&timing);
            let result = scenario::play(&steps, &mut world, |report| {
                print!("{report}");
                let _ = std::io::stdout().flush();
            });
            world.stop();
            result
        })
        .await?;
        let _ = stop.send(true);
        keeper.join().await?;
        eprintln!("demo finished in {:.1}s", started.elapsed().as_secs_f64());
        Ok::<_, anyhow::Error>(outcome)
    };
    match runtime().and_then(|rt| rt.block_on(run)) {
        Ok(Ok(_)) => ExitCode::SUCCESS,
        Ok(Err(failure)) => {
            eprintln!("demo failed at {failure}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn run_scenario(args: ScenarioArgs) -> ExitCode {
    let timing = Timing {
        lost_after: args.lost_after,
        ready_timeout: args.ready_timeout,
        delete_after: args.delete_after,
        patience: args.patience,
        ..Timing::defaults()
    };
    let net = NetConfig {
        latency: Duration::from_millis(1),
        jitter: args.jitter,
        loss: args.loss,
        duplicate: args.duplicate,
    };
    let mut world = CoreWorld::new(timing, net, args.seed);
    let steps = scenario::seed(&timing);
    match scenario::play(&steps, &mut world, |report| print!("{report}")) {
        Ok(_) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("scenario failed at {failure}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is not an error.
fn print_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

fn man(args: ManArgs) -> anyhow::Result<()> {
    let command = <Cli as clap::CommandFactory>::command();
    match args.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .context("cannot render the man page")?;
            print_bytes(&page)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
            let mut pages: Vec<String> = std::fs::read_dir(&dir)
                .with_context(|| format!("cannot list {}", dir.display()))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("zerokeeper") && name.ends_with(".1"))
                .collect();
            pages.sort();
            for page in pages {
                println!("{}", dir.join(page).display());
            }
        }
    }
    Ok(())
}

fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let secret: [u8; 32] = rand::random();
    let text = format!("{}\n", encode_hex(&secret));
    let id = Key::new(&secret)?.id();
    match args.out {
        None => {
            print!("{text}");
            eprintln!("key id {id}");
        }
        Some(path) => {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = match options.open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    bail!("{} exists; not overwriting a key", path.display())
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()));
                }
            };
            file.write_all(text.as_bytes())?;
            eprintln!("wrote a new key to {} (key id {id})", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// Every command's flags are consistent (clap checks a command only when it is
    /// parsed; this checks them all).
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
