//! The `zerokeeper` command.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use zerokeeper::scenario::harness::CoreWorld;
use zerokeeper::scenario::net::NetConfig;
use zerokeeper::scenario::{self, Timing};

/// zerokeeper: tells which database proxies of a fleet are alive.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Replays the seed scenario (spec/scenario.md) on the keeper and agent cores in
    /// virtual time and prints each step's listing; exits 0 only if all 13 match.
    Scenario(ScenarioArgs),
}

#[derive(clap::Args, Debug)]
struct ScenarioArgs {
    /// Probability that a datagram is lost (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Probability that a datagram is duplicated (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    /// Random extra delay per datagram, up to this much (reorders datagrams), e.g. 300ms.
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    jitter: Duration,
    /// Seed of the network's randomness.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// `lost_after`, e.g. 3s (the heartbeat interval is 1s). Use a longer one with loss.
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    lost_after: Duration,
    /// `ready_timeout`, e.g. 60s.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    ready_timeout: Duration,
    /// `delete_after`, e.g. 60s.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    delete_after: Duration,
    /// Heartbeat intervals a step may wait for anything that needs a round trip.
    #[arg(long, default_value_t = 10)]
    patience: u32,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("invalid duration {s:?}: use ms, s or m")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Scenario(args) => run_scenario(args),
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
