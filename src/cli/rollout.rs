//! `zerokeeper rollout status`: whether a cluster's proxies run its current config.
//!
//! Prints the rollout (`GET /v1/clusters/{cluster}/rollout`) and exits with what it says:
//! 0 converged, 12 failed (a proxy rejected the version), 13 stuck (a proxy has not run
//! it within the keeper's `rollout_timeout`), 14 still in progress. With `--wait` it asks
//! again until the rollout converges, fails or is stuck, and prints the last answer.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::api::RolloutView;
use crate::cli::admin::{ListOutput, ListingArgs, pretty, write_out, yaml};
use crate::cli::client::Exit;
use crate::cli::format::{self, printable};
use crate::keeper::RolloutState;

/// How often `--wait` asks again.
const POLL: Duration = Duration::from_millis(200);

/// `zerokeeper rollout`.
#[derive(clap::Args, Debug, Clone)]
pub struct RolloutArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: RolloutCommand,
}

/// The `rollout` subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum RolloutCommand {
    /// Shows the rollout of a cluster's current config: how many proxies run it, and
    /// every proxy that does not (pending, overdue, or rejected with its reason). Exit
    /// code: 0 converged, 12 failed, 13 stuck, 14 in progress.
    Status(StatusArgs),
}

/// `rollout status`.
#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// The cluster.
    #[arg(long, value_name = "CLUSTER")]
    pub cluster: String,
    /// Wait until the rollout converges, fails or is stuck (the keeper's
    /// `rollout_timeout` bounds the wait).
    #[arg(long, short = 'w')]
    pub wait: bool,
    /// How to print it, and the keeper's admin API.
    #[command(flatten)]
    pub listing: ListingArgs,
}

impl RolloutArgs {
    /// Runs the command; returns its exit code.
    pub fn run(self) -> ExitCode {
        match self.command {
            RolloutCommand::Status(args) => args.run(),
        }
    }
}

/// The exit code of a rollout in `state`.
pub fn exit_of(state: &str) -> Exit {
    match RolloutState::parse(state) {
        Some(RolloutState::Converged) => Exit::Success,
        Some(RolloutState::Failed) => Exit::RolloutFailed,
        Some(RolloutState::Stuck) => Exit::RolloutStuck,
        Some(RolloutState::InProgress) => Exit::RolloutInProgress,
        None => Exit::Failed,
    }
}

/// The header of the table of proxies that do not run the version.
pub const ROLLOUT_COLUMNS: [&str; 5] = ["PROXY", "STATUS", "RUNS", "STATE", "DETAIL"];

/// `rollout status`'s table: a summary line, then each proxy that does not run the
/// version (sorted by identity, as the keeper lists them).
pub fn rollout_table(r: &RolloutView) -> String {
    let mut out = format!(
        "cluster {} version {}: {} ({} of {} running, {} pending, {} rejected)\n",
        printable(&r.cluster),
        r.version,
        printable(&r.state),
        r.running,
        r.total,
        r.pending,
        r.rejected,
    );
    if r.proxies.is_empty() {
        return out;
    }
    let rows: Vec<Vec<String>> = r
        .proxies
        .iter()
        .map(|p| {
            let detail = match (&p.reason, p.pending_ms) {
                (Some(reason), _) => printable(reason),
                (None, Some(ms)) => format!("waiting {}", format::human_duration(ms)),
                (None, None) => "-".to_owned(),
            };
            vec![
                printable(&p.proxy),
                printable(&p.status),
                p.config_version.to_string(),
                printable(&p.state),
                detail,
            ]
        })
        .collect();
    out.push_str(&format::table(&ROLLOUT_COLUMNS, &rows));
    if r.truncated > 0 {
        out.push_str(&format!("… and {} more\n", r.truncated));
    }
    out
}

impl StatusArgs {
    fn run(self) -> ExitCode {
        let result = self.listing.http.client().and_then(|client| {
            let started = Instant::now();
            let mut rollout = client.rollout(&self.cluster)?;
            while self.wait && RolloutState::parse(&rollout.state) == Some(RolloutState::InProgress)
            {
                // Bounded by the keeper's timeout: past it, in progress becomes stuck. A
                // keeper whose clock never gets there is not waited for longer than twice
                // its timeout.
                let bound = Duration::from_millis(rollout.timeout_ms.saturating_mul(2));
                if started.elapsed() > bound.max(POLL) {
                    break;
                }
                std::thread::sleep(POLL);
                rollout = client.rollout(&self.cluster)?;
            }
            let text = match self.listing.output {
                ListOutput::Json => format!("{}\n", pretty(&rollout)?),
                ListOutput::Yaml => format!("{}\n", yaml(&rollout)?),
                ListOutput::Table => rollout_table(&rollout),
            };
            write_out(&text)?;
            Ok(exit_of(&rollout.state))
        });
        match result {
            Ok(exit) => exit.into(),
            Err(failure) => crate::cli::admin::finish(Err(failure)),
        }
    }
}
