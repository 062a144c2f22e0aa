//! `zerokeeper config get|history|diff|rollback`: a cluster's config versions as the
//! keeper stores them, who made each, and going back to one.

use std::io::{self, Write as _};
use std::process::ExitCode;

use base64::Engine as _;
use clap::builder::NonEmptyStringValueParser;

use crate::api::{ConfigContent, ConfigVersionView};
use crate::cli::admin::{Failure, HttpArg, finish, pretty, write_out, yaml};
use crate::cli::format::{self, printable};

/// `zerokeeper config`.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ConfigCommand,
}

/// The `config` subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ConfigCommand {
    /// Prints a config version's file, byte for byte (the current one by default).
    Get(GetArgs),
    /// Lists the stored config versions, who made each and when.
    History(HistoryArgs),
    /// Shows what changed between two versions: the file as a unified diff, then the
    /// datasources.
    Diff(DiffArgs),
    /// Makes an earlier version's content current again, as a new version (gated, as a
    /// push is).
    Rollback(RollbackArgs),
}

impl ConfigArgs {
    /// Runs the command; returns its exit code.
    pub fn run(self) -> ExitCode {
        match self.command {
            ConfigCommand::Get(args) => args.run(),
            ConfigCommand::History(args) => args.run(),
            ConfigCommand::Diff(args) => args.run(),
            ConfigCommand::Rollback(args) => args.run(),
        }
    }
}

/// How `config get` and `config history` print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ConfigOutput {
    /// For people: the file itself (`get`), aligned columns (`history`).
    Text,
    /// The keeper's answer, as JSON (pretty).
    Json,
    /// The keeper's answer, as YAML.
    Yaml,
}

/// A version on the command line: a number, or `current`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick(pub Option<u64>);

fn parse_version(s: &str) -> Result<Pick, String> {
    match s {
        "current" => Ok(Pick(None)),
        n => n
            .parse::<u64>()
            .map(|v| Pick(Some(v)))
            .map_err(|_| format!("{n:?} is not a version (a number, or \"current\")")),
    }
}

/// `config get`.
#[derive(clap::Args, Debug, Clone)]
// `--version` is the version asked for here, not the program's.
#[command(disable_version_flag = true)]
pub struct GetArgs {
    /// The cluster.
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
    pub cluster: String,
    /// The version: a number, or `current`.
    #[arg(long, default_value = "current", value_name = "VERSION", value_parser = parse_version)]
    pub version: Pick,
    /// What to print.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub output: ConfigOutput,
    /// The keeper's admin API.
    #[command(flatten)]
    pub http: HttpArg,
}

impl GetArgs {
    fn run(self) -> ExitCode {
        let result = self.http.client().and_then(|client| {
            let content = client.config_version(&self.cluster, self.version.0)?;
            match self.output {
                ConfigOutput::Json => Ok(Some(pretty(&content)?)),
                ConfigOutput::Yaml => Ok(Some(yaml(&content)?)),
                ConfigOutput::Text => {
                    let bytes = decode(&content)?;
                    let mut stdout = io::stdout().lock();
                    stdout.write_all(&bytes)?;
                    stdout.flush()?;
                    Ok(None)
                }
            }
        });
        finish(result)
    }
}

/// `config history`.
#[derive(clap::Args, Debug, Clone)]
pub struct HistoryArgs {
    /// The cluster.
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
    pub cluster: String,
    /// At most this many versions, the newest.
    #[arg(
        long,
        default_value_t = crate::http::HISTORY_LIMIT,
        value_name = "N",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
            .range(1..=crate::http::MAX_HISTORY_LIMIT as u64)
    )]
    pub limit: usize,
    /// What to print.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub output: ConfigOutput,
    /// The keeper's admin API.
    #[command(flatten)]
    pub http: HttpArg,
}

/// The header of `config history`'s table.
pub const HISTORY_COLUMNS: [&str; 7] = [
    "VERSION",
    "ID",
    "SIZE",
    "MADE BY",
    "BY",
    "AT",
    "DATASOURCES",
];

/// `config history`'s table: one row per version, oldest first; the current one's
/// version is marked `*`. What the audit record does not say reads `-`.
pub fn history_table(versions: &[ConfigVersionView]) -> String {
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            let datasources: Vec<String> = v
                .datasources
                .iter()
                .map(|(hostgroup, ds)| format!("{hostgroup}={ds}"))
                .collect();
            [
                format!("{}{}", v.version, if v.current { " *" } else { "" }),
                v.id.clone(),
                v.base_size.to_string(),
                v.made_by.clone().unwrap_or_else(|| "-".to_owned()),
                v.by.clone().unwrap_or_else(|| "-".to_owned()),
                v.at.clone().unwrap_or_else(|| "-".to_owned()),
                if datasources.is_empty() {
                    "-".to_owned()
                } else {
                    datasources.join(",")
                },
            ]
            .map(|cell| printable(&cell))
            .to_vec()
        })
        .collect();
    format::table(&HISTORY_COLUMNS, &rows)
}

impl HistoryArgs {
    fn run(self) -> ExitCode {
        let result = self.http.client().and_then(|client| {
            let history = client.config_history(&self.cluster, self.limit)?;
            match self.output {
                ConfigOutput::Json => Ok(Some(pretty(&history)?)),
                ConfigOutput::Yaml => Ok(Some(yaml(&history)?)),
                ConfigOutput::Text => {
                    write_out(&history_table(&history.versions))?;
                    Ok(None)
                }
            }
        });
        finish(result)
    }
}

/// `config diff`.
#[derive(clap::Args, Debug, Clone)]
pub struct DiffArgs {
    /// The cluster.
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
    pub cluster: String,
    /// The older version [default: the one before --to].
    #[arg(long, value_name = "VERSION")]
    pub from: Option<u64>,
    /// The newer version: a number, or `current`.
    #[arg(long, default_value = "current", value_name = "VERSION", value_parser = parse_version)]
    pub to: Pick,
    /// The keeper's admin API.
    #[command(flatten)]
    pub http: HttpArg,
}

/// The diff of two versions of `cluster`: the operator's files as a unified diff (3
/// lines of context; a file that is not UTF-8 is compared as lossy text), then each
/// hostgroup whose datasource differs. Empty when nothing differs.
pub fn version_diff(
    cluster: &str,
    old: &ConfigContent,
    old_bytes: &[u8],
    new: &ConfigContent,
    new_bytes: &[u8],
) -> String {
    let (a, b) = (
        String::from_utf8_lossy(old_bytes),
        String::from_utf8_lossy(new_bytes),
    );
    let mut out = String::new();
    if a != b {
        let diff = similar::TextDiff::from_lines(a.as_ref(), b.as_ref());
        let header = |v: &ConfigContent| format!("{cluster} version {}", v.meta.version);
        out.push_str(
            &diff
                .unified_diff()
                .context_radius(3)
                .header(&header(old), &header(new))
                .to_string(),
        );
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    let hostgroups: std::collections::BTreeSet<&String> = old
        .meta
        .datasources
        .keys()
        .chain(new.meta.datasources.keys())
        .collect();
    for hostgroup in hostgroups {
        let (was, is) = (
            old.meta.datasources.get(hostgroup),
            new.meta.datasources.get(hostgroup),
        );
        if was != is {
            let show = |d: Option<&String>| d.map_or_else(|| "(none)".to_owned(), Clone::clone);
            out.push_str(&format!(
                "datasource of {hostgroup}: {} -> {}\n",
                show(was),
                show(is)
            ));
        }
    }
    printable_lines(&out)
}

/// `text` with control characters other than newlines and tabs escaped, line by line.
fn printable_lines(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| {
            let (body, end) = match line.strip_suffix('\n') {
                Some(body) => (body, "\n"),
                None => (line, ""),
            };
            let shown: String = body
                .split('\t')
                .map(printable)
                .collect::<Vec<_>>()
                .join("\t");
            format!("{shown}{end}")
        })
        .collect()
}

impl DiffArgs {
    fn run(self) -> ExitCode {
        let result = self.http.client().and_then(|client| {
            let new = client.config_version(&self.cluster, self.to.0)?;
            let from = match self.from {
                Some(v) => v,
                None => new
                    .meta
                    .version
                    .checked_sub(1)
                    .filter(|&v| v >= 1)
                    .ok_or_else(|| {
                        Failure::Input(format!(
                            "version {} has no version before it: give --from",
                            new.meta.version
                        ))
                    })?,
            };
            let old = client.config_version(&self.cluster, Some(from))?;
            let diff = version_diff(&self.cluster, &old, &decode(&old)?, &new, &decode(&new)?);
            if diff.is_empty() {
                Ok(Some(format!(
                    "versions {} and {} of {} have the same content",
                    old.meta.version, new.meta.version, self.cluster
                )))
            } else {
                write_out(&diff)?;
                Ok(None)
            }
        });
        finish(result)
    }
}

/// `config rollback`.
#[derive(clap::Args, Debug, Clone)]
pub struct RollbackArgs {
    /// The cluster.
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
    pub cluster: String,
    /// The earlier version whose content becomes current again.
    #[arg(long, value_name = "VERSION")]
    pub to: u64,
    /// Refuse unless the cluster's current config version is this one (so a change made
    /// meanwhile by someone else is not overwritten; exit 11).
    #[arg(long, value_name = "VERSION")]
    pub expect_version: Option<u64>,
    /// The keeper's admin API.
    #[command(flatten)]
    pub http: HttpArg,
}

impl RollbackArgs {
    fn run(self) -> ExitCode {
        let result = self.http.client().and_then(|client| {
            let done = client.rollback(&self.cluster, self.to, self.expect_version)?;
            Ok(Some(if done.changed {
                format!(
                    "rolled {} back to version {}: it is config version {}",
                    done.cluster, done.restored, done.version
                )
            } else {
                format!(
                    "config of {} unchanged: version {} has the content of version {} already",
                    done.cluster, done.version, done.restored
                )
            }))
        });
        finish(result)
    }
}

fn decode(content: &ConfigContent) -> Result<Vec<u8>, Failure> {
    base64::engine::general_purpose::STANDARD
        .decode(&content.content_base64)
        .map_err(|e| Failure::Answer(format!("the keeper sent content that is not base64: {e}")))
}
