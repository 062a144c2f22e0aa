//! A proxy's driver: one task owns an agent core and a UDP socket, and plays the proxy's
//! host (a database proxy that initialises its connection pool once it has its config).
//!
//! It is what `zerokeeper proxy` runs, what the demo starts four of, and what the
//! simulations start on turmoil hosts. The host's behaviour is an [`InitPolicy`]: go up
//! after a delay, wait to be released, fail to start, or crash once registered.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::agent::{Agent, AgentEvent, Destination, Phase, StopReason};
use crate::configdoc::ConfigDocument;
use crate::driver::{DatagramSocket, DriverClock};

/// How the proxy's host initialises once its startup config has arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitPolicy {
    /// Initialises in this long, then goes up.
    After(Duration),
    /// Waits for [`ProxyCommand::Release`].
    Held,
    /// Fails for a known reason after this long: sends `down`.
    FailsAfter(Duration),
    /// Exits without a word as soon as the keeper has acknowledged its `ready`.
    CrashOnAck,
}

/// What a proxy driver is told from outside, besides shutdown.
#[derive(Clone, Debug)]
pub enum ProxyCommand {
    /// A held host finishes initialising.
    Release,
    /// Go offline: unregister.
    Unregister,
    /// Report a known start failure: send `down`.
    FailStart,
    /// Sign with this key from now on (a key rotation; see [`Agent::set_key`]).
    SetKey(Box<crate::auth::Key>),
}

/// What can be seen of a running proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyState {
    /// The agent's phase.
    pub phase: Option<Phase>,
    /// The current incarnation.
    pub incarnation: u64,
    /// `Restart` commands obeyed.
    pub restarts: u64,
    /// The config version it runs.
    pub config_version: u64,
    /// Sending to every keeper, because none has answered lately.
    pub searching: bool,
    /// The keeper it sends to when not searching.
    pub keeper: Option<SocketAddr>,
    /// The newest leadership term it has accepted an answer under (protocol version 2).
    pub term: u64,
    /// Answers it ignored because they came under an older term than one it accepted.
    pub old_term_answers: u64,
    /// Configs it rejected.
    pub rejected: u64,
}

/// Faults injected into one proxy's traffic (the demo's partitions): datagrams the driver
/// drops instead of sending or handling.
#[derive(Debug, Default)]
pub struct Faults {
    /// Drop everything the proxy sends.
    pub drop_outbound: AtomicBool,
    /// Drop everything the proxy receives.
    pub drop_inbound: AtomicBool,
}

impl Faults {
    /// Cuts the proxy off in both directions, or heals it.
    pub fn cut(&self, cut: bool) {
        self.drop_outbound.store(cut, Ordering::Relaxed);
        self.drop_inbound.store(cut, Ordering::Relaxed);
    }
}

/// The exit code of a `zerokeeper proxy` an operator removed (`Leave`): 78, so that a
/// supervisor told not to restart it (systemd's `RestartPreventExitStatus=78`) leaves it
/// stopped, as the operator asked. (Any other stop exits 1, a clean unregister 0.)
pub const REMOVED_EXIT: u8 = 78;

/// How a proxy driver ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyExit {
    /// The agent stopped (its `down` or unregister was acknowledged, it gave up, or it was
    /// superseded).
    Stopped(StopReason),
    /// It crashed on purpose ([`InitPolicy::CrashOnAck`]).
    Crashed,
    /// Shutdown was requested; the unregister ended as this (`None`: no answer in time).
    Shutdown(Option<StopReason>),
}

/// The outside's side of a proxy driver.
#[derive(Clone, Debug)]
pub struct ProxyControl {
    /// Commands to the proxy.
    pub commands: mpsc::Sender<ProxyCommand>,
    /// Its latest state.
    pub state: watch::Receiver<ProxyState>,
    /// Its injected faults.
    pub faults: Arc<Faults>,
}

/// Heartbeat intervals without an authenticated answer before a proxy warns.
pub const UNANSWERED_INTERVALS: u32 = 5;

/// The proxy task. Create it with [`ProxyDriver::new`], run it with [`ProxyDriver::run`].
#[derive(Debug)]
pub struct ProxyDriver<S> {
    agent: Agent,
    socket: S,
    /// The keepers' addresses, by the agent's keeper index (updated from outside when
    /// names resolve to new addresses).
    keepers: watch::Receiver<Vec<SocketAddr>>,
    /// Whether the agent was searching at the last flush (to log changes).
    searching: bool,
    /// Authenticated answers seen at the last flush, when that count last grew (or when
    /// the driver started), and whether the silence since has been warned about.
    answered: (u64, Option<tokio::time::Instant>, bool),
    clock: DriverClock,
    init: InitPolicy,
    init_at: Option<tokio::time::Instant>,
    /// The config version this proxy refuses to apply (`--reject-config-version`).
    reject_version: Option<u64>,
    commands: mpsc::Receiver<ProxyCommand>,
    state: watch::Sender<ProxyState>,
    faults: Arc<Faults>,
}

impl<S: DatagramSocket> ProxyDriver<S> {
    /// A driver for `agent`, talking to the keeper at `keeper` from `socket`.
    pub fn new(
        agent: Agent,
        socket: S,
        keeper: SocketAddr,
        init: InitPolicy,
        clock: DriverClock,
    ) -> (ProxyDriver<S>, ProxyControl) {
        let (_fixed, keepers) = watch::channel(vec![keeper]);
        ProxyDriver::with_keepers(agent, socket, keepers, init, clock)
    }

    /// A driver for `agent` (configured with as many keepers as `keepers` holds), talking
    /// from `socket` to the keepers at `keepers`, by index. Whoever holds the sender may
    /// replace the addresses (a re-resolved name), keeping their order.
    pub fn with_keepers(
        agent: Agent,
        socket: S,
        keepers: watch::Receiver<Vec<SocketAddr>>,
        init: InitPolicy,
        clock: DriverClock,
    ) -> (ProxyDriver<S>, ProxyControl) {
        let (commands_tx, commands) = mpsc::channel(16);
        let (state, state_rx) = watch::channel(ProxyState::default());
        let faults = Arc::new(Faults::default());
        let control = ProxyControl {
            commands: commands_tx,
            state: state_rx,
            faults: faults.clone(),
        };
        let driver = ProxyDriver {
            agent,
            socket,
            keepers,
            searching: false,
            answered: (0, None, false),
            clock,
            init,
            init_at: None,
            reject_version: None,
            commands,
            state,
            faults,
        };
        (driver, control)
    }

    /// Makes the proxy reject config `version` whenever it arrives, as a proxy whose
    /// config fails to load would (`zerokeeper proxy --reject-config-version`).
    pub fn reject_version(mut self, version: Option<u64>) -> Self {
        self.reject_version = version;
        self
    }

    /// Rejects the config just delivered if it is the version this proxy refuses.
    fn refuses(&mut self, version: u64) -> bool {
        if self.reject_version != Some(version) {
            return false;
        }
        let reason =
            format!("config version {version} refused (--reject-config-version {version})");
        match self.agent.reject_config(self.clock.now(), &reason) {
            Ok(()) => {
                warn!(version, "config rejected: running what ran before");
                true
            }
            Err(e) => {
                debug!(error = %e, "config not rejected");
                false
            }
        }
    }

    /// Runs the proxy until it stops, crashes on purpose, or `shutdown` completes (then
    /// it unregisters and returns once that is acknowledged or given up).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> io::Result<ProxyExit> {
        let keepers = addresses(&self.keepers.borrow());
        info!(
            cluster = self.agent.cluster(),
            proxy = self.agent.proxy(),
            keepers,
            incarnation = self.agent.incarnation(),
            "proxy starting"
        );
        let mut buf = vec![0u8; 2048];
        let mut leaving = false;
        let mut commands_open = true;
        tokio::pin!(shutdown);
        loop {
            if let Some(exit) = self.flush().await? {
                return Ok(match exit {
                    ProxyExit::Stopped(reason) if leaving => ProxyExit::Shutdown(Some(reason)),
                    other => other,
                });
            }
            let deadline = [
                self.agent.poll_timeout().map(|t| self.clock.deadline(t)),
                self.init_at,
            ]
            .into_iter()
            .flatten()
            .min();
            // `biased`: a fixed branch order keeps simulations reproducible.
            tokio::select! {
                biased;
                () = &mut shutdown, if !leaving => {
                    info!("shutting down: unregistering");
                    leaving = true;
                    self.init_at = None;
                    self.agent.unregister(self.clock.now());
                }
                command = self.commands.recv(), if commands_open => match command {
                    Some(command) => self.command(command),
                    None => commands_open = false,
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, from)) => {
                        // Only a keeper's datagrams are read.
                        let keeper = self.keepers.borrow().iter().position(|&k| k == from);
                        if keeper.is_some() && !self.faults.drop_inbound.load(Ordering::Relaxed) {
                            self.agent.handle_datagram_from(self.clock.now(), keeper, &buf[..n]);
                        }
                    }
                    Err(e) => debug!(error = %e, "udp receive failed"),
                },
                () = sleep_until(deadline), if deadline.is_some() => {
                    self.agent.handle_timeout(self.clock.now());
                    if self.init_at.is_some_and(|at| at <= tokio::time::Instant::now()) {
                        self.init_at = None;
                        self.host_init_done();
                    }
                }
            }
            if let (true, Phase::Stopped(reason)) = (leaving, self.agent.phase()) {
                info!(%reason, "proxy stopped");
                return Ok(ProxyExit::Shutdown(Some(reason)));
            }
        }
    }

    fn command(&mut self, command: ProxyCommand) {
        let now = self.clock.now();
        match command {
            ProxyCommand::Release => {
                self.init = InitPolicy::After(Duration::ZERO);
                if self.agent.phase() == Phase::Initialising {
                    self.init_at = Some(tokio::time::Instant::now());
                }
            }
            ProxyCommand::Unregister => {
                info!("going offline: unregistering");
                self.init_at = None;
                self.agent.unregister(now);
            }
            ProxyCommand::FailStart => {
                warn!("start failed: sending down");
                self.init_at = None;
                self.agent.fail_start(now);
            }
            ProxyCommand::SetKey(key) => {
                let (from, to) = (self.agent.key_id(), key.id());
                self.agent.set_key(*key);
                info!(from = %from, to = %to, "signing with a new key");
            }
        }
    }

    /// The host finished its initialisation (or failed it, as its policy says).
    fn host_init_done(&mut self) {
        let now = self.clock.now();
        match self.init {
            InitPolicy::FailsAfter(_) => {
                warn!("initialisation failed for a known reason: sending down");
                self.agent.fail_start(now);
            }
            InitPolicy::After(_) | InitPolicy::Held | InitPolicy::CrashOnAck => {
                if self.agent.initialized(now).is_ok() {
                    info!("initialised: going up");
                }
            }
        }
    }

    /// Sends what the agent wants sent and reacts to its events. Returns an exit if the
    /// proxy is done.
    async fn flush(&mut self) -> io::Result<Option<ProxyExit>> {
        // Events first: the host's answer to one (a rejected config) is sent with the
        // rest.
        let mut exit = None;
        while let Some(event) = self.agent.poll_event() {
            if let Some(e) = self.on_event(event) {
                exit = Some(e);
            }
        }
        while let Some((to, bytes)) = self.agent.poll_transmit_to() {
            if self.faults.drop_outbound.load(Ordering::Relaxed) {
                continue;
            }
            let targets: Vec<SocketAddr> = {
                let keepers = self.keepers.borrow();
                match to {
                    Destination::Every => keepers.clone(),
                    Destination::Keeper(i) => keepers
                        .get(i)
                        .or(keepers.first())
                        .copied()
                        .into_iter()
                        .collect(),
                }
            };
            for target in targets {
                if let Err(e) = self.socket.send_to(&bytes, target).await {
                    debug!(error = %e, %target, "udp send failed");
                }
            }
        }
        self.note_answers();
        let searching = self.agent.searching();
        if searching != self.searching {
            self.searching = searching;
            if searching {
                warn!("no keeper answers: sending to every keeper until one does");
            } else {
                let keeper = self
                    .current_keeper()
                    .map_or_else(|| "none".to_owned(), |k| k.to_string());
                info!(%keeper, "a keeper answers: sending to it");
            }
        }
        self.state.send_modify(|s| {
            s.phase = Some(self.agent.phase());
            s.incarnation = self.agent.incarnation();
            s.config_version = self.agent.config_version();
            s.rejected = self.agent.stats().rejected;
            s.searching = searching;
            s.keeper = self.current_keeper();
            s.term = self.agent.term();
            s.old_term_answers = self.agent.stats().old_term;
        });
        Ok(exit)
    }

    /// The address of the keeper the agent sends to when not searching.
    /// Warns once when no keeper has sent an authenticated answer for
    /// [`UNANSWERED_INTERVALS`] heartbeat intervals, naming the likely causes: the keeper
    /// by design never answers a datagram it cannot verify, so from here a wrong key, a
    /// cluster the keeper holds another key for, and a wrong address look alike. Says so
    /// again when answers come back.
    fn note_answers(&mut self) {
        let now = tokio::time::Instant::now();
        let stats = self.agent.stats();
        let answers = stats.received.saturating_sub(stats.ignored);
        let (seen, since, warned) = &mut self.answered;
        let since = since.get_or_insert(now);
        if answers > *seen {
            *seen = answers;
            *since = now;
            if *warned {
                *warned = false;
                info!("a keeper answers again");
            }
            return;
        }
        let silent = now.saturating_duration_since(*since);
        if !*warned && silent >= self.agent.interval() * UNANSWERED_INTERVALS {
            *warned = true;
            let keepers = addresses(&self.keepers.borrow());
            warn!(
                %keepers,
                silent = %humantime::format_duration(Duration::from_millis(silent.as_millis() as u64)),
                ignored = stats.ignored,
                "no authenticated answer from any keeper: the keeper never answers a datagram it cannot verify, so check the key (--key-file: the cluster's key, or the keeper's default key if the cluster has none of its own), the cluster name (--cluster: a cluster the keeper holds another key for) and the keeper's address (--keeper)"
            );
        }
    }

    fn current_keeper(&self) -> Option<SocketAddr> {
        self.keepers
            .borrow()
            .get(self.agent.current_keeper())
            .copied()
    }

    fn on_event(&mut self, event: AgentEvent) -> Option<ProxyExit> {
        match event {
            AgentEvent::PhaseChanged { from, to } => {
                info!(from = %from, to = %to, incarnation = self.agent.incarnation(), "proxy state changed");
                if to == Phase::Pulling && self.init == InitPolicy::CrashOnAck {
                    // "Exits without a word": no unregister, no down.
                    warn!("registered; crashing on purpose before going up");
                    return Some(ProxyExit::Crashed);
                }
                if let Phase::Stopped(reason) = to {
                    return Some(ProxyExit::Stopped(reason));
                }
            }
            AgentEvent::ConfigReady { version, .. } if self.refuses(version) => {}
            AgentEvent::ConfigUpdated { version, .. } if self.refuses(version) => {}
            AgentEvent::ConfigReady { version, config } => {
                let summary = describe(&config);
                info!(version, bytes = config.len(), %summary, "startup config received; initialising");
                self.init_at = match self.init {
                    InitPolicy::After(d) | InitPolicy::FailsAfter(d) => {
                        Some(tokio::time::Instant::now() + d)
                    }
                    InitPolicy::Held | InitPolicy::CrashOnAck => None,
                };
            }
            AgentEvent::ConfigUpdated { version, config } => {
                let summary = describe(&config);
                info!(version, bytes = config.len(), %summary, "config version applied");
            }
            AgentEvent::Restarting {
                old_incarnation,
                new_incarnation,
            } => {
                warn!(
                    old_incarnation,
                    new_incarnation, "the keeper asked for a restart: starting a new lifecycle"
                );
                self.init_at = None;
                self.state.send_modify(|s| s.restarts += 1);
            }
            AgentEvent::Superseded { winner } => {
                warn!(winner, "a newer process holds this identity: stopping");
            }
            AgentEvent::Removed => {
                warn!(
                    code = REMOVED_EXIT,
                    "an operator removed this proxy from its cluster: stopping, not registering again"
                );
            }
        }
        None
    }
}

/// What a proxy applied, for its log: the file's size and the first 8 bytes of its
/// SHA-256 (so a test or an operator can tell which content it runs), and the
/// datasources.
fn describe(config: &[u8]) -> String {
    use sha2::Digest as _;
    match ConfigDocument::decode(config) {
        Ok(doc) => {
            let digest = sha2::Sha256::digest(doc.base);
            let short = crate::api::hex(&digest[..8]);
            let datasources: Vec<String> = doc
                .datasources
                .iter()
                .map(|(hostgroup, ds)| format!("{hostgroup}={ds}"))
                .collect();
            format!(
                "{} bytes of config (sha256 {short}), datasources [{}]",
                doc.base.len(),
                datasources.join(",")
            )
        }
        Err(_) => "not a config document".to_owned(),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Addresses as `a,b,c`, as the flags take them (for the logs: no Rust formatting).
pub(crate) fn addresses(list: &[SocketAddr]) -> String {
    list.iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
