//! The operator's commands: `status`, `remove`, `push-config` and `switch`.
//!
//! Each is a clap [`Args`](clap::Args) struct with a `run` that talks to the keeper
//! through [`Client`], prints the result on standard output, errors on standard error
//! (`error: ...`), and returns the exit code of the API contract (see [`Exit`]).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::builder::NonEmptyStringValueParser;

use crate::cli::client::{Client, ClientError, ClientOptions, DEFAULT_URL, Exit};
use crate::cli::format::{self, Output};
use crate::cli::watch::{StatusWatch, WatchError};
/// Largest config file `push-config` reads (the keeper's own limit is lower, 4 MiB; it
/// answers 413 above that).
const CONFIG_FILE_LIMIT: u64 = 64 * 1024 * 1024;

/// The keeper's admin API address, and how to authenticate to it, as every command
/// takes them.
#[derive(clap::Args, Clone)]
#[command(
    after_help = "The admin token, if the keeper asks for one: --token-file, or ZEROKEEPER_TOKEN holding the token itself."
)]
pub struct HttpArg {
    /// Base URL of the keeper's admin HTTP API (http:// or https://; a trailing `/v1`,
    /// the API's own prefix, is dropped).
    #[arg(
        long = "http",
        env = "ZEROKEEPER_HTTP",
        default_value = DEFAULT_URL,
        value_name = "URL",
        value_parser = parse_base_url,
    )]
    pub url: String,
    /// A file holding the admin token alone, sent as `Authorization: Bearer`. Without
    /// it, the token is ZEROKEEPER_TOKEN's value, if set (never a flag: `ps` would show
    /// it).
    #[arg(long, env = "ZEROKEEPER_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// The CA certificates (PEM) an https:// keeper's certificate must chain to [default:
    /// the Mozilla roots].
    #[arg(long, env = "ZEROKEEPER_CACERT", value_name = "PATH")]
    pub cacert: Option<PathBuf>,
    /// How long a request may take, from connecting to the whole answer (a watch stream
    /// is not bounded by it).
    #[arg(long, env = "ZEROKEEPER_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s", value_name = "DURATION")]
    pub timeout: std::time::Duration,
}

impl std::fmt::Debug for HttpArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("HttpArg")
            .field("url", &self.url)
            .field("token_file", &self.token_file)
            .field("cacert", &self.cacert)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The environment variable that holds an admin token itself.
pub const TOKEN_ENV: &str = "ZEROKEEPER_TOKEN";

impl HttpArg {
    /// The client these settings make: its token read from `--token-file` (or
    /// `ZEROKEEPER_TOKEN`), its roots from `--cacert`.
    pub(super) fn client(&self) -> Result<Client, Failure> {
        let token = match &self.token_file {
            Some(path) => Some(read_token(path)?),
            None => std::env::var(TOKEN_ENV)
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty()),
        };
        let ca = match &self.cacert {
            Some(path) => Some(ClientOptions::read_ca(path).map_err(Failure::Input)?),
            None => None,
        };
        Ok(Client::with_options(
            &self.url,
            ClientOptions {
                token,
                ca,
                timeout: Some(self.timeout),
            },
        ))
    }
}

/// Reads a token file: the token alone, surrounding whitespace ignored.
fn read_token(path: &Path) -> Result<String, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Input(format!("cannot read token file {}: {e}", path.display())))?;
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(Failure::Input(format!(
            "token file {} must hold the token alone, on one line",
            path.display()
        )));
    }
    Ok(token.to_owned())
}

/// Accepts `http://host[:port][/prefix]` and `https://host[:port][/prefix]`.
fn parse_base_url(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| {
            format!("{s:?} is not an http:// or https:// URL (such as {DEFAULT_URL})")
        })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{s:?} has no host"));
    }
    if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{s:?} is not a base URL (no query, fragment or spaces)"
        ));
    }
    // The API's own prefix is what people paste from its paths (`…/v1`): the base is
    // above it. Any other path stays (a keeper behind a reverse proxy's prefix).
    let base = s.trim_end_matches('/');
    Ok(base
        .strip_suffix("/v1")
        .map_or(base, |above| above.trim_end_matches('/'))
        .to_owned())
}

/// `zerokeeper status`: the proxies the keeper knows, once or as they change.
#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// Only this cluster.
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
    pub cluster: Option<String>,
    /// What to print.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "table",
        value_name = "FORMAT"
    )]
    pub output: Output,
    /// Only proxies in these statuses (repeat, or separate with commas).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        value_name = "STATUS",
        conflicts_with = "watch"
    )]
    pub status: Vec<StatusFilter>,
    /// The order of the table's rows (natural order of cluster, then identity, breaks
    /// ties; `-o keys` keeps the seed's byte order, as etcdctl prints keys).
    #[arg(
        long,
        value_enum,
        default_value = "cluster",
        value_name = "COLUMN",
        conflicts_with = "watch"
    )]
    pub sort_by: format::SortBy,
    /// Leave out the table's header line.
    #[arg(long, conflicts_with = "watch")]
    pub no_headers: bool,
    /// Print the listing, then follow changes as they happen, until interrupted
    /// (reconnects after a dropped connection, resuming where it stopped; lists again if
    /// the keeper no longer holds the changes since).
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// The keeper's admin API.
    #[command(flatten)]
    pub http: HttpArg,
}

/// A status `status --status` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFilter {
    /// Registered, initialising.
    Ready,
    /// Serving.
    Up,
    /// Silent past `lost_after`.
    Lost,
}

impl StatusFilter {
    fn name(self) -> &'static str {
        match self {
            StatusFilter::Ready => "ready",
            StatusFilter::Up => "up",
            StatusFilter::Lost => "lost",
        }
    }
}

/// What `status` (without `--watch`) lists, and how.
#[derive(Clone, Debug, Default)]
struct Selection {
    /// Only these statuses (none: every one).
    statuses: Vec<&'static str>,
    /// The table's layout (its `wide` comes from the output).
    layout: format::Layout,
}

impl Selection {
    fn keeps(&self, status: &str) -> bool {
        self.statuses.is_empty() || self.statuses.contains(&status)
    }

    /// What an empty listing says, on stderr: `no proxies in cluster C with status lost`.
    fn none(&self, cluster: Option<&str>) -> String {
        let mut text = "no proxies".to_owned();
        if let Some(c) = cluster {
            text.push_str(&format!(" in cluster {}", format::printable(c)));
        }
        if !self.statuses.is_empty() {
            text.push_str(&format!(" with status {}", self.statuses.join(" or ")));
        }
        text
    }
}

impl StatusArgs {
    /// Runs the command; returns its exit code.
    pub fn run(self) -> ExitCode {
        let client = match self.http.client() {
            Ok(client) => client,
            Err(failure) => return finish(Err(failure)),
        };
        let cluster = self.cluster.as_deref();
        let result = if self.watch {
            let mut watch =
                StatusWatch::new(client, self.cluster.clone(), self.output).with_colour(colour());
            watch
                .run(&mut io::stdout().lock(), &mut io::stderr())
                .map_err(|e| match e {
                    WatchError::Client(e) => Failure::Client(e),
                    WatchError::Output(e) => Failure::Output(e),
                })
        } else {
            let selection = Selection {
                statuses: self.status.iter().map(|s| s.name()).collect(),
                layout: format::Layout {
                    wide: self.output == Output::Wide,
                    sort_by: self.sort_by,
                    headers: !self.no_headers,
                },
            };
            status_once(&client, cluster, self.output, &selection)
        };
        finish(result.map(|()| None))
    }
}

/// `zerokeeper remove`: deletes a proxy from a cluster.
#[derive(clap::Args, Debug, Clone)]
pub struct RemoveArgs {
    /// The cluster.
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
    pub cluster: String,
    /// The proxy's identity (the address it serves on).
    #[arg(long, value_name = "ADDR", value_parser = NonEmptyStringValueParser::new())]
    pub addr: String,
    /// Remove it even if it is alive (`up` or `ready`): the keeper then tells the process
    /// to leave at its next heartbeat; it stops (exit 78) and drops its clients.
    #[arg(long)]
    pub force: bool,
    /// Say what the remove would do, and do nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The keeper's admin API.
    #[command(flatten)]
    pub http: HttpArg,
}

/// What `remove --dry-run` says of a proxy in `status` (with `--force` or not).
pub fn remove_preview(cluster: &str, proxy: &str, status: &str, force: bool) -> String {
    match (status, force) {
        ("lost", _) => format!(
            "would remove {proxy} from {cluster} (it is lost): it stops blocking the gate; if the process comes back it is told to restart"
        ),
        (_, false) => format!(
            "would refuse to remove {proxy} from {cluster}: it is {status}, alive (exit 5). With --force it would be removed, and the keeper would tell the process to leave (stop serving, drop its clients and exit 78) at its next heartbeat, rather than restart it"
        ),
        (_, true) => format!(
            "would remove {proxy} from {cluster} (it is {status}, alive): the keeper would tell the process to leave (stop serving, drop its clients and exit 78) at its next heartbeat, rather than restart it"
        ),
    }
}

impl RemoveArgs {
    /// Runs the command; returns its exit code.
    pub fn run(self) -> ExitCode {
        let result = self.http.client().and_then(|client| {
            if self.dry_run {
                let p = client.proxy(&self.cluster, &self.addr)?;
                return Ok(Some(remove_preview(
                    &self.cluster,
                    &self.addr,
                    &p.status,
                    self.force,
                )));
            }
            let r = client.remove(&self.cluster, &self.addr, self.force)?;
            Ok(Some(format!(
                "removed {} from {} (it was {})",
                r.proxy, r.cluster, r.status
            )))
        });
        finish(result)
    }
}

/// `zerokeeper push-config`: stores a file as a cluster's next config version.
#[derive(clap::Args, Debug, Clone)]
pub struct PushConfigArgs {
    /// The cluster.
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
    pub cluster: String,
    /// Create the cluster if the keeper does not know it yet (without it, a push to an
    /// unknown cluster is refused: a typo would make a cluster no proxy runs).
    #[arg(long)]
    pub create: bool,
    /// The config file, sent as it is (`-`: standard input).
    #[arg(long, value_name = "PATH")]
    pub file: PathBuf,
    /// Refuse unless the cluster's current config version is this one (so a change made
    /// meanwhile by someone else is not overwritten; exit 11).
    #[arg(long, value_name = "VERSION")]
    pub expect_version: Option<u64>,
    /// The keeper's admin API.
    #[command(flatten)]
    pub http: HttpArg,
}

impl PushConfigArgs {
    /// Runs the command; returns its exit code.
    pub fn run(self) -> ExitCode {
        let result = read_config(&self.file).and_then(|bytes| {
            let client = self.http.client()?;
            let pushed = client.push_config(
                &self.cluster,
                &bytes,
                crate::driver::keeper::PushTerms {
                    expect: self.expect_version,
                    create: self.create,
                },
            )?;
            Ok(Some(if pushed.changed {
                format!(
                    "pushed config version {} to {}",
                    pushed.version, pushed.cluster
                )
            } else {
                format!(
                    "config of {} unchanged: version {} is already this file",
                    pushed.cluster, pushed.version
                )
            }))
        });
        finish(result)
    }
}

/// `zerokeeper switch`: moves a hostgroup from one datasource to another.
#[derive(clap::Args, Debug, Clone)]
pub struct SwitchArgs {
    /// The cluster.
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
    pub cluster: String,
    /// The hostgroup to switch.
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new(),
          required_unless_present = "history")]
    pub hostgroup: Option<String>,
    /// The datasource it uses now (the switch is refused if it does not).
    #[arg(long, value_name = "DATASOURCE", value_parser = NonEmptyStringValueParser::new(),
          required_unless_present = "history")]
    pub from: Option<String>,
    /// The datasource it should use.
    #[arg(long, value_name = "DATASOURCE", value_parser = NonEmptyStringValueParser::new(),
          required_unless_present = "history")]
    pub to: Option<String>,
    /// Refuse unless the cluster's current config version is this one (so a change made
    /// meanwhile by someone else is not overwritten; exit 11).
    #[arg(long, value_name = "VERSION")]
    pub expect_version: Option<u64>,
    /// List the cluster's switches instead (done and refused, from the audit record,
    /// the newest 100, oldest first).
    #[arg(long, conflicts_with_all = ["hostgroup", "from", "to", "expect_version"])]
    pub history: bool,
    /// The keeper's admin API.
    #[command(flatten)]
    pub http: HttpArg,
}

impl SwitchArgs {
    /// Runs the command; returns its exit code.
    pub fn run(self) -> ExitCode {
        let result = self.http.client().and_then(|client| {
            let (Some(hostgroup), Some(from), Some(to)) = (&self.hostgroup, &self.from, &self.to)
            else {
                let list = client.audit(&crate::http::view::AuditQuery {
                    cluster: Some(self.cluster.clone()),
                    by: None,
                    action: Some("switch".to_owned()),
                    limit: crate::http::AUDIT_LIMIT,
                })?;
                write_out(&format::audit_table(&list.entries))?;
                return Ok(None);
            };
            let s = client.switch(&self.cluster, hostgroup, from, to, self.expect_version)?;
            Ok(Some(format!(
                "switched hostgroup {} of {} from {} to {} (config version {})",
                s.hostgroup, s.cluster, s.from, s.to, s.version
            )))
        });
        finish(result)
    }
}

/// `zerokeeper reload`: the keeper re-reads its key files, admin tokens and TLS
/// certificate, all or nothing.
#[derive(clap::Args, Debug, Clone)]
pub struct ReloadArgs {
    /// The keeper's admin API.
    #[command(flatten)]
    pub http: HttpArg,
}

impl ReloadArgs {
    /// Runs the command; returns its exit code.
    pub fn run(self) -> ExitCode {
        let result = self.http.client().and_then(|client| {
            let done = client.reload()?;
            let mut text = String::from("reloaded: keys in force:");
            for key in &done.keys {
                let scope = key
                    .cluster
                    .as_deref()
                    .unwrap_or("every cluster without keys of its own");
                text.push_str(&format!("\n  {} ({})", key.id, format::printable(scope)));
            }
            for (what, ids) in [
                ("added", &done.added),
                ("retired", &done.retired),
                ("moved to another cluster", &done.rescoped),
            ] {
                if !ids.is_empty() {
                    text.push_str(&format!("\n{what}: {}", ids.join(", ")));
                }
            }
            text.push_str(&format!("\nadmin tokens: {}", done.tokens));
            if done.tls {
                text.push_str("\nTLS certificate: read again");
            }
            Ok(Some(text))
        });
        finish(result)
    }
}

/// How a listing other than `status` prints (`audit`, `cluster list`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ListOutput {
    /// Aligned columns for people.
    Table,
    /// The keeper's answer, as JSON (pretty).
    Json,
    /// The keeper's answer, as YAML.
    Yaml,
}

/// What every listing other than `status` takes: `-o table|json` and the keeper's
/// address.
#[derive(clap::Args, Debug, Clone)]
pub struct ListingArgs {
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

impl ListOutput {
    /// Prints `value`: the keeper's answer as pretty JSON (returned, for [`finish`] to
    /// print), or the table `table` makes of it (written here).
    pub(super) fn show<T: serde::Serialize>(
        self,
        value: &T,
        table: impl FnOnce(&T) -> String,
    ) -> Result<Option<String>, Failure> {
        match self {
            ListOutput::Json => Ok(Some(pretty(value)?)),
            ListOutput::Yaml => Ok(Some(yaml(value)?)),
            ListOutput::Table => {
                write_out(&table(value))?;
                Ok(None)
            }
        }
    }
}

/// `value` as YAML, as `-o yaml` prints the keeper's answers (without the last newline,
/// which [`finish`] adds, as for [`pretty`]).
pub(super) fn yaml(value: &impl serde::Serialize) -> Result<String, Failure> {
    crate::cli::yaml::to_yaml(value)
        .map(|doc| doc.trim_end().to_owned())
        .map_err(|e| Failure::Output(io::Error::other(e)))
}

/// `value` as pretty JSON, as `-o json` prints the keeper's answers.
pub(super) fn pretty(value: &impl serde::Serialize) -> Result<String, Failure> {
    serde_json::to_string_pretty(value).map_err(|e| Failure::Output(io::Error::other(e)))
}

/// `zerokeeper audit`: who did what to the keeper, when, and whether it was done or
/// refused, oldest first.
#[derive(clap::Args, Debug, Clone)]
pub struct AuditArgs {
    /// Only this cluster's entries.
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
    pub cluster: Option<String>,
    /// Only the entries of the admin token of this name.
    #[arg(long, value_name = "TOKEN-NAME", value_parser = NonEmptyStringValueParser::new())]
    pub by: Option<String>,
    /// Only the entries of this action: remove, push_config, switch or rollback.
    #[arg(long, value_name = "ACTION", value_parser = NonEmptyStringValueParser::new())]
    pub action: Option<String>,
    /// At most this many entries, the newest.
    #[arg(
        long,
        default_value_t = crate::http::AUDIT_LIMIT,
        value_name = "N",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
            .range(1..=crate::http::view::audit::MAX_LIMIT as u64)
    )]
    pub limit: usize,
    /// How to print it, and the keeper's admin API.
    #[command(flatten)]
    pub listing: ListingArgs,
}

impl AuditArgs {
    /// Runs the command; returns its exit code.
    pub fn run(self) -> ExitCode {
        let result = self.listing.http.client().and_then(|client| {
            let list = client.audit(&crate::http::view::AuditQuery {
                cluster: self.cluster.clone(),
                by: self.by.clone(),
                action: self.action.clone(),
                limit: self.limit,
            })?;
            self.listing.output.show(&list, |list| {
                let mut text = format::audit_table(&list.entries);
                if list.more {
                    text.push_str(&format!(
                        "(older entries left out: --limit {} shows more)\n",
                        (self.limit * 10).min(crate::http::view::audit::MAX_LIMIT)
                    ));
                }
                text
            })
        });
        finish(result)
    }
}

/// Why a command stopped short.
#[derive(Debug)]
pub(super) enum Failure {
    /// The keeper, or the way to it.
    Client(ClientError),
    /// A local input, such as the config file.
    Input(String),
    /// Standard output cannot be written.
    Output(io::Error),
    /// The keeper answered with something this command cannot use.
    Answer(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure::Client(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Output(e)
    }
}

/// Prints the result's line or the failure, and gives the exit code.
pub(super) fn finish(result: Result<Option<String>, Failure>) -> ExitCode {
    let result = result.and_then(|line| match line {
        Some(line) => write_out(&format!("{line}\n")),
        None => Ok(()),
    });
    let exit = match result {
        Ok(()) => Exit::Success,
        Err(Failure::Client(e)) => {
            let mut stderr = io::stderr().lock();
            for line in e.report() {
                let _ = writeln!(stderr, "{line}");
            }
            e.exit()
        }
        Err(Failure::Input(message)) => {
            eprintln!("error: {message}");
            Exit::Invalid
        }
        // A reader that went away (`| head`) is not an error of ours.
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => Exit::Success,
        Err(Failure::Output(e)) => {
            eprintln!("error: cannot write to standard output: {e}");
            Exit::Failed
        }
        Err(Failure::Answer(message)) => {
            eprintln!("error: {message}");
            Exit::Failed
        }
    };
    exit.into()
}

/// Whether this process colours its tables: standard output is a terminal and
/// `NO_COLOR` is not set.
fn colour() -> bool {
    use std::io::IsTerminal;
    format::colour_wanted(
        io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

pub(super) fn write_out(text: &str) -> Result<(), Failure> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Reads the config file at `path` (`-`: standard input), at most
/// [`CONFIG_FILE_LIMIT`] bytes.
fn read_config(path: &Path) -> Result<Vec<u8>, Failure> {
    let stdin = path.as_os_str() == "-";
    let unreadable = |e: io::Error| {
        Failure::Input(if stdin {
            format!("cannot read the config from standard input: {e}")
        } else {
            format!("cannot read config file {}: {e}", path.display())
        })
    };
    let source: Box<dyn Read> = if stdin {
        Box::new(io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path).map_err(unreadable)?)
    };
    let mut bytes = Vec::new();
    source
        .take(CONFIG_FILE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > CONFIG_FILE_LIMIT {
        return Err(Failure::Input(format!(
            "config file {} is larger than {} MiB",
            path.display(),
            CONFIG_FILE_LIMIT / (1024 * 1024)
        )));
    }
    Ok(bytes)
}

fn status_once(
    client: &Client,
    cluster: Option<&str>,
    output: Output,
    selection: &Selection,
) -> Result<(), Failure> {
    let text = match output {
        Output::Keys => {
            let keys = client.keys(cluster)?;
            // `/zerodb/proxy/C/status/ADDR->STATUS`: the status ends the line.
            let mut kept = String::new();
            for line in keys.lines() {
                let status = line.rsplit_once("->").map_or("", |(_, s)| s);
                if selection.keeps(status) {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
            kept
        }
        Output::Json | Output::Yaml => {
            let mut proxies = client.proxies(cluster)?;
            proxies.retain(|p| selection.keeps(&p.status));
            proxies.sort_by(|a, b| (&a.cluster, &a.proxy).cmp(&(&b.cluster, &b.proxy)));
            let encoded = if output == Output::Yaml {
                crate::cli::yaml::to_yaml(&proxies)
            } else {
                serde_json::to_string_pretty(&proxies).map(|json| json + "\n")
            };
            encoded.map_err(|e| {
                Failure::Output(io::Error::other(format!("cannot encode the proxies: {e}")))
            })?
        }
        Output::Table | Output::Wide => {
            let mut proxies = client.proxies(cluster)?;
            proxies.retain(|p| selection.keeps(&p.status));
            if proxies.is_empty() {
                // As kubectl says it: on stderr, so a script reading stdout sees nothing.
                eprintln!("{}", selection.none(cluster));
                return Ok(());
            }
            // Which keeper leads, on a deployment of several (a keeper alone says nothing).
            let mut text = if selection.layout.headers {
                client
                    .store()
                    .ok()
                    .and_then(|store| format::leader_line(&store))
                    .unwrap_or_default()
            } else {
                String::new()
            };
            text.push_str(&format::proxy_listing(&proxies, selection.layout));
            if selection.layout.headers {
                text.push_str(&format::paused_notes(&proxies));
            }
            if colour() { format::paint(&text) } else { text }
        }
    };
    write_out(&text)
}
