//! `zerokeeper cluster list|delete|freeze|unfreeze` and `zerokeeper hostgroup
//! set|list|delete`.

use std::process::ExitCode;

use crate::api::ClusterView;
use crate::cli::admin::{HttpArg, ListingArgs, finish};
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
    /// Deletes a cluster that has no registered proxy, with every config version of it
    /// (refused while any proxy is registered).
    Delete(NameArgs),
    /// Freezes a cluster for maintenance: no proxy of it is deleted or restarted until it
    /// is unfrozen (statuses still change).
    Freeze(NameArgs),
    /// Unfreezes a cluster: deletions and restarts resume, each lost proxy with a fresh
    /// delete window.
    Unfreeze(NameArgs),
}

/// `cluster delete|freeze|unfreeze`.
#[derive(clap::Args, Debug, Clone)]
pub struct NameArgs {
    /// The cluster.
    pub cluster: String,
    /// The keeper's admin API.
    #[command(flatten)]
    pub http: HttpArg,
}

impl NameArgs {
    fn run(self, what: &str) -> ExitCode {
        let result = self.http.client().and_then(|client| {
            let done = match what {
                "delete" => client.delete_cluster(&self.cluster)?,
                "freeze" => client.set_frozen(&self.cluster, true)?,
                _ => client.set_frozen(&self.cluster, false)?,
            };
            let name = printable(&done.cluster);
            Ok(Some(match (what, done.changed) {
                ("delete", _) => format!("cluster {name} deleted (revision {})", done.revision),
                ("freeze", true) => format!(
                    "cluster {name} frozen: no proxy of it is deleted or restarted until `zerokeeper cluster unfreeze {name}`"
                ),
                ("freeze", false) => format!("cluster {name} was frozen already"),
                (_, true) => format!(
                    "cluster {name} unfrozen: deletions and restarts resume (lost proxies have a fresh delete window)"
                ),
                (_, false) => format!("cluster {name} was not frozen"),
            }))
        });
        finish(result)
    }
}

/// `zerokeeper hostgroup`.
#[derive(clap::Args, Debug, Clone)]
pub struct HostgroupArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: HostgroupCommand,
}

/// The `hostgroup` subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum HostgroupCommand {
    /// Declares a hostgroup of a cluster: its datasources and, for a new one, the one
    /// serving it now. A switch then must name it, its current datasource and another
    /// of these.
    Set(SetArgs),
    /// Lists the hostgroups a cluster declares, their datasources and current one.
    List(HostgroupListArgs),
    /// Undeclares a hostgroup declared with `hostgroup set` (no switch names it until it
    /// is declared again; proxies' configs do not change).
    Delete(HostgroupDeleteArgs),
}

/// `hostgroup delete`.
#[derive(clap::Args, Debug, Clone)]
pub struct HostgroupDeleteArgs {
    /// The cluster.
    #[arg(long)]
    pub cluster: String,
    /// The hostgroup.
    pub hostgroup: String,
    /// The keeper's admin API.
    #[command(flatten)]
    pub http: HttpArg,
}

/// `hostgroup set`.
#[derive(clap::Args, Debug, Clone)]
pub struct SetArgs {
    /// The cluster.
    #[arg(long)]
    pub cluster: String,
    /// The hostgroup.
    pub hostgroup: String,
    /// A datasource of it (repeat, or separate with commas).
    #[arg(long = "datasource", value_delimiter = ',', required = true)]
    pub datasources: Vec<String>,
    /// The datasource serving it now (needed for a new hostgroup; a switch changes it).
    #[arg(long)]
    pub current: Option<String>,
    /// The keeper's admin API.
    #[command(flatten)]
    pub http: HttpArg,
}

/// `hostgroup list`.
#[derive(clap::Args, Debug, Clone)]
pub struct HostgroupListArgs {
    /// The cluster.
    #[arg(long)]
    pub cluster: String,
    /// How to print it, and the keeper's admin API.
    #[command(flatten)]
    pub listing: ListingArgs,
}

impl HostgroupArgs {
    /// Runs the command; returns its exit code.
    pub fn run(self) -> ExitCode {
        match self.command {
            HostgroupCommand::Delete(args) => {
                let result = args.http.client().and_then(|client| {
                    let done = client.delete_hostgroup(&args.cluster, &args.hostgroup)?;
                    Ok(Some(format!(
                        "hostgroup {} of {} undeclared (revision {})",
                        printable(&done.hostgroup),
                        printable(&done.cluster),
                        done.revision
                    )))
                });
                finish(result)
            }
            HostgroupCommand::Set(args) => {
                let result = args.http.client().and_then(|client| {
                    let body = crate::api::HostgroupRequest {
                        datasources: args.datasources.clone(),
                        current: args.current.clone(),
                    };
                    let h = client.set_hostgroup(&args.cluster, &args.hostgroup, &body)?;
                    let verb = if h.changed == Some(false) {
                        "unchanged"
                    } else {
                        "declared"
                    };
                    Ok(Some(format!(
                        "hostgroup {} of {} {verb}: datasources {}, current {}",
                        printable(&h.hostgroup),
                        printable(&args.cluster),
                        printable(&h.datasources.join(", ")),
                        printable(&h.current)
                    )))
                });
                finish(result)
            }
            HostgroupCommand::List(args) => {
                let result = args.listing.http.client().and_then(|client| {
                    let list = client.hostgroups(&args.cluster)?;
                    args.listing.output.show(&list, |list| {
                        let rows: Vec<Vec<String>> = list
                            .iter()
                            .map(|h| {
                                vec![
                                    printable(&h.hostgroup),
                                    printable(&h.current),
                                    printable(&h.datasources.join(",")),
                                    printable(&h.declared),
                                ]
                            })
                            .collect();
                        format::table(&["HOSTGROUP", "CURRENT", "DATASOURCES", "DECLARED"], &rows)
                    })
                });
                finish(result)
            }
        }
    }
}

/// `cluster list`.
#[derive(clap::Args, Debug, Clone)]
pub struct ListArgs {
    /// How to print it, and the keeper's admin API.
    #[command(flatten)]
    pub listing: ListingArgs,
}

impl ClusterArgs {
    /// Runs the command; returns its exit code.
    pub fn run(self) -> ExitCode {
        match self.command {
            ClusterCommand::List(args) => args.run(),
            ClusterCommand::Delete(args) => args.run("delete"),
            ClusterCommand::Freeze(args) => args.run("freeze"),
            ClusterCommand::Unfreeze(args) => args.run("unfreeze"),
        }
    }
}

/// The header of `cluster list`'s table.
pub const CLUSTER_COLUMNS: [&str; 8] = [
    "CLUSTER", "READY", "UP", "LOST", "CONFIG", "GATE", "DELETION", "ROLLOUT",
];

/// `cluster list`'s table, one row per cluster in the keeper's (name) order. DELETION is
/// `paused` while mass-loss protection holds, `frozen` while an operator froze it (both:
/// `frozen,paused`), `-` otherwise; ROLLOUT is the current
/// version's rollout state (`-` from a keeper that does not say).
pub fn cluster_table(clusters: &[ClusterView]) -> String {
    let rows: Vec<Vec<String>> = clusters
        .iter()
        .map(|c| {
            vec![
                printable(&c.cluster),
                c.ready.to_string(),
                c.up.to_string(),
                c.lost.to_string(),
                c.config_version.to_string(),
                printable(&c.gate),
                match (c.deletion_paused, c.frozen) {
                    (true, true) => "frozen,paused",
                    (false, true) => "frozen",
                    (true, false) => "paused",
                    (false, false) => "-",
                }
                .to_owned(),
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
        let result = self.listing.http.client().and_then(|client| {
            let list = client.clusters()?;
            self.listing
                .output
                .show(&list, |list| cluster_table(&list.clusters))
        });
        finish(result)
    }
}
