//! `zerokeeper cluster list`: the clusters the keeper holds.

use std::process::ExitCode;

use crate::api::ClusterView;
use crate::cli::admin::{HttpArg, ListOutput, finish, pretty, write_out};
use crate::cli::format::{self, printable};

/// `zerokeeper cluster`.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// The `cluster` subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ClusterCommand {
    /// Lists every cluster: its proxies by status, config version, gate, mass-loss pause
    /// and rollout.
    List(ListArgs),
}

/// `cluster list`.
#[derive(clap::Args, Debug, Clone)]
pub struct ListArgs {
    /// What to print.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "table",
        value_name = "FORMAT"
    )]
    pub output: ListOutput,
    /// The keeper's admin API.
    #[command(flatten)]
    pub http: HttpArg,
}

impl ClusterArgs {
    /// Runs the command; returns its exit code.
    pub fn run(self) -> ExitCode {
        match self.command {
            ClusterCommand::List(args) => args.run(),
        }
    }
}

/// The header of `cluster list`'s table.
pub const CLUSTER_COLUMNS: [&str; 8] = [
    "CLUSTER", "READY", "UP", "LOST", "CONFIG", "GATE", "DELETION", "ROLLOUT",
];

/// `cluster list`'s table, one row per cluster in the keeper's (name) order. DELETION is
/// `paused` while mass-loss protection holds, `-` otherwise; ROLLOUT is the current
/// version's rollout state (`-` from a keeper that does not say).
pub fn cluster_table(clusters: &[ClusterView]) -> String {
    let rows: Vec<Vec<String>> = clusters
        .iter()
        .map(|c| {
            vec![
                printable(&c.name),
                c.ready.to_string(),
                c.up.to_string(),
                c.lost.to_string(),
                c.config_version.to_string(),
                printable(&c.gate),
                if c.deletion_paused { "paused" } else { "-" }.to_owned(),
                if c.rollout.is_empty() {
                    "-".to_owned()
                } else {
                    printable(&c.rollout)
                },
            ]
        })
        .collect();
    format::table(&CLUSTER_COLUMNS, &rows)
}

impl ListArgs {
    fn run(self) -> ExitCode {
        let result = self.http.client().and_then(|client| {
            let list = client.clusters()?;
            match self.output {
                ListOutput::Json => Ok(Some(pretty(&list)?)),
                ListOutput::Table => {
                    write_out(&cluster_table(&list.clusters))?;
                    Ok(None)
                }
            }
        });
        finish(result)
    }
}
