//! The live demo: a keeper and four proxies on loopback UDP in one process, playing the
//! seed scenario in real time with short timings.
//!
//! [`LiveWorld`] implements the scenario's [`World`] over the real drivers: a partition
//! is the proxy driver dropping its traffic, a death is the proxy task aborted, the
//! operator's actions go through the keeper's admin handle. The scenario runner is
//! synchronous, so it runs on a blocking thread and reaches the runtime through a
//! [`tokio::runtime::Handle`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::net::UdpSocket;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::agent::{Agent, AgentConfig};
use crate::auth::Key;
use crate::driver::keeper::{CallError, KeeperHandle};
use crate::driver::proxy::{InitPolicy, ProxyCommand, ProxyControl, ProxyDriver, ProxyExit};
use crate::driver::{DriverClock, unix_micros};
use crate::keeper::{KeeperConfig, Status};
use crate::scenario::{
    Action, CLUSTER, Direction, Expected, Gate, Init, Observation, PROXIES, Timing, World,
    check_outcome,
};
use crate::time::WallTime;

/// The demo's timing: 100 ms heartbeats, `lost` after 500 ms, `ready` proxies deleted
/// after 2 s, `lost` ones 3 s after their last heartbeat, 300 ms to initialise.
pub fn timing() -> Timing {
    Timing {
        interval: Duration::from_millis(100),
        lost_after: Duration::from_millis(500),
        ready_timeout: Duration::from_secs(2),
        delete_after: Duration::from_secs(3),
        init_delay: Duration::from_millis(300),
        patience: 30,
    }
}

/// The keeper's config for a timing.
pub fn keeper_config(t: &Timing) -> KeeperConfig {
    KeeperConfig {
        heartbeat_interval: t.interval,
        lost_after: t.lost_after,
        ready_timeout: t.ready_timeout,
        delete_after: t.delete_after,
        ..KeeperConfig::default()
    }
}

struct Process {
    control: ProxyControl,
    task: JoinHandle<std::io::Result<ProxyExit>>,
}

/// The scenario's world on real sockets and real time.
pub struct LiveWorld {
    rt: Handle,
    keeper: KeeperHandle,
    keeper_addr: SocketAddr,
    key: Key,
    timing: Timing,
    procs: [Option<Process>; 4],
    /// Restarts obeyed by earlier processes of each proxy.
    restarts_before: [u64; 4],
    started: tokio::time::Instant,
}

impl LiveWorld {
    /// A world around a running keeper at `keeper_addr`, reached through `keeper`.
    pub fn new(
        rt: Handle,
        keeper: KeeperHandle,
        keeper_addr: SocketAddr,
        key: Key,
        timing: Timing,
    ) -> LiveWorld {
        LiveWorld {
            rt,
            keeper,
            keeper_addr,
            key,
            timing,
            procs: Default::default(),
            restarts_before: [0; 4],
            started: tokio::time::Instant::now(),
        }
    }

    fn start(&mut self, proxy: usize, init: Init) -> Result<(), String> {
        self.kill(proxy);
        let policy = match init {
            Init::Held => InitPolicy::Held,
            Init::After(d) => InitPolicy::After(d),
            Init::FailsAfter(d) => InitPolicy::FailsAfter(d),
        };
        let mut cfg = AgentConfig::new(CLUSTER, PROXIES[proxy], self.key.clone());
        cfg.default_interval = self.timing.interval;
        let keeper = self.keeper_addr;
        let process = self.rt.block_on(async move {
            let socket = UdpSocket::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?;
            let clock = DriverClock::start();
            let start = WallTime::from_micros(unix_micros(SystemTime::now()));
            let agent = Agent::new(cfg, start, clock.now()).map_err(|e| e.to_string())?;
            let (driver, control) = ProxyDriver::new(agent, socket, keeper, policy, clock);
            let task = tokio::spawn(driver.run(std::future::pending()));
            Ok::<_, String>(Process { control, task })
        })?;
        self.procs[proxy] = Some(process);
        Ok(())
    }

    fn kill(&mut self, proxy: usize) {
        if let Some(p) = self.procs[proxy].take() {
            self.restarts_before[proxy] += p.control.state.borrow().restarts;
            p.task.abort();
        }
    }

    fn command(&self, proxy: usize, command: ProxyCommand) -> Result<(), String> {
        let p = self.procs[proxy].as_ref().ok_or("no such process")?;
        let tx = p.control.commands.clone();
        self.rt
            .block_on(tx.send(command))
            .map_err(|_| "the proxy has stopped".to_owned())
    }

    fn check(result: Result<u64, CallError>, expect: &Expected) -> Result<(), String> {
        match result {
            Ok(version) => check_outcome(Ok(version), expect),
            Err(CallError::Admin(e)) => check_outcome(Err(e), expect),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Stops every proxy task.
    pub fn stop(&mut self) {
        for proxy in 0..self.procs.len() {
            self.kill(proxy);
        }
    }
}

impl World for LiveWorld {
    fn act(&mut self, action: &Action) -> Result<(), String> {
        match action {
            Action::Start { proxy, init } => self.start(*proxy, *init)?,
            Action::Release { proxy } => self.command(*proxy, ProxyCommand::Release)?,
            Action::Unregister { proxy } => self.command(*proxy, ProxyCommand::Unregister)?,
            Action::Partition { proxy, direction } => {
                let p = self.procs[*proxy].as_ref().ok_or("no such process")?;
                let faults = &p.control.faults;
                match direction {
                    Direction::Both => faults.cut(true),
                    Direction::ToKeeper => faults.drop_outbound.store(true, Ordering::Relaxed),
                    Direction::FromKeeper => faults.drop_inbound.store(true, Ordering::Relaxed),
                }
            }
            Action::Heal { proxy } => {
                if let Some(p) = self.procs[*proxy].as_ref() {
                    p.control.faults.cut(false);
                }
            }
            Action::Kill { proxy } => self.kill(*proxy),
            Action::Remove { proxy } => {
                let keeper = self.keeper.clone();
                self.rt
                    .block_on(keeper.remove(CLUSTER.into(), PROXIES[*proxy].into()))
                    .map_err(|e| e.to_string())?;
            }
            Action::PushConfig { config, expect } => {
                let keeper = self.keeper.clone();
                let result = self
                    .rt
                    .block_on(keeper.push_config(CLUSTER.into(), Arc::from(*config)));
                Self::check(result.map(|a| a.value.version), expect)?;
            }
            Action::Switch {
                hostgroup,
                from,
                to,
                expect,
            } => {
                let keeper = self.keeper.clone();
                let call = keeper.switch_datasource(
                    CLUSTER.into(),
                    (*hostgroup).into(),
                    (*from).into(),
                    (*to).into(),
                );
                Self::check(self.rt.block_on(call).map(|a| a.value), expect)?;
            }
        }
        Ok(())
    }

    fn observe(&mut self) -> (Observation, Option<Gate>) {
        let keeper = self.keeper.clone();
        let (listing, gate) = self.rt.block_on(async move {
            // The core's own listing (four proxies): the demo checks the keeper itself.
            let listing: Vec<(String, Status)> = keeper
                .call(|k, _| k.proxies(CLUSTER).unwrap_or_default())
                .await
                .map(|ps| ps.into_iter().map(|p| (p.proxy, p.status)).collect())
                .unwrap_or_default();
            let gate = if listing.is_empty() {
                None
            } else {
                match keeper.gate(CLUSTER.into()).await {
                    Ok(()) => Some(Gate::Open),
                    Err(_) => Some(Gate::Closed),
                }
            };
            (listing, gate)
        });
        let mut restarts = self.restarts_before;
        for (i, p) in self.procs.iter().enumerate() {
            if let Some(p) = p {
                restarts[i] += p.control.state.borrow().restarts;
            }
        }
        let elapsed = self.started.elapsed();
        (
            Observation {
                listing,
                restarts,
                elapsed,
            },
            gate,
        )
    }

    fn advance(&mut self) {
        std::thread::sleep(Duration::from_millis(10));
    }
}
