//! Configuration of `zerokeeper serve`: flags, environment variables and a TOML file.
//!
//! Each setting can come from a flag, from its environment variable (clap reads both),
//! or from the config file given with `--config`; the first of these that is set wins,
//! then the default. Unknown keys in the file are refused, so a typo never goes unnoticed.
//!
//! ```toml
//! udp = "127.0.0.1:7821"
//! http_listen = "127.0.0.1:7822"      # `http`, its older name, is read too
//! data_dir = "./zerokeeper-data"
//! key_file = "keys/default.key"       # for every cluster without keys of its own
//! store_key_file = "keys/store.key"   # seals configs at rest; the same on every keeper
//! heartbeat_interval = "1s"
//! lost_after = "3s"
//! ready_timeout = "60s"
//! delete_after = "60s"
//! rollout_timeout = "60s"             # a rollout not converged by then is stuck
//! log_format = "text"                 # or "json"
//! config_history = 100                # config versions kept per cluster
//! audit_retention = 100000            # audit entries kept
//! max_proxies = 2000000
//! max_clusters = 10000
//! http_max_connections = 512          # the admin API's limits: http_* (see the README)
//! http_max_watchers = 256
//! http_write_timeout = "30s"
//! http_send_buffer = 65536
//!
//! [clusters.payments]
//! key_files = ["keys/payments.key"]   # several while a key is rotated
//! ```
//!
//! Relative paths in the file are relative to the file's directory. A key file holds the
//! secret as hex (32 to 128 hex digits, that is 16 to 64 bytes), as `zerokeeper keygen`
//! writes it. A store key file holds one or more such secrets, one a line, the first
//! sealing (`zerokeeper::store::seal`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::auth::{Key, KeyError, KeyScope, Keyring};
use crate::http::{LimitsError, ServeLimits};
use crate::identity::validate_cluster;
use crate::keeper::{KeeperConfig, KeeperConfigError};
use crate::store::seal::StoreKeys;

/// Default UDP address of the keeper.
pub const DEFAULT_UDP: &str = "127.0.0.1:7821";
/// Default HTTP address of the admin API.
pub const DEFAULT_HTTP: &str = "127.0.0.1:7822";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./zerokeeper-data";

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where a keeper keeps its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A redb file in the data directory: one keeper.
    #[default]
    Redb,
    /// An etcd: several keepers, one of which leads (builds with the `etcd` feature).
    Etcd,
}

/// `zerokeeper serve` flags. Each is optional here; defaults apply after the file.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML config file; flags and environment variables override its settings.
    #[arg(long, env = "ZEROKEEPER_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// UDP address for heartbeats [default: 127.0.0.1:7821].
    #[arg(long, env = "ZEROKEEPER_UDP", value_name = "ADDR")]
    pub udp: Option<SocketAddr>,
    /// Address the admin API listens on [default: 127.0.0.1:7822].
    #[arg(long, env = "ZEROKEEPER_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// Deprecated: `--http-listen` (and `ZEROKEEPER_HTTP_LISTEN`) say the same. Kept so
    /// that scripts keep working; `--http URL` is the client commands' keeper address.
    #[arg(
        long,
        env = "ZEROKEEPER_HTTP_ADDR",
        value_name = "ADDR",
        hide = true,
        conflicts_with = "http_listen"
    )]
    pub http: Option<SocketAddr>,
    /// Directory of the keeper's store [default: ./zerokeeper-data].
    #[arg(long, env = "ZEROKEEPER_DATA_DIR", value_name = "PATH")]
    pub data_dir: Option<PathBuf>,
    /// The shared secret (hex) for every cluster the config file gives no key of its own.
    #[arg(long, env = "ZEROKEEPER_KEY_FILE", value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// The store key(s) that seal configs at rest (hex, one a line, the first sealing; the
    /// same on every keeper, never a cluster key). Without it configs are stored plain.
    #[arg(long, env = "ZEROKEEPER_STORE_KEY_FILE", value_name = "PATH")]
    pub store_key_file: Option<PathBuf>,
    /// How often proxies send heartbeats [default: 1s].
    #[arg(long, env = "ZEROKEEPER_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub heartbeat_interval: Option<Duration>,
    /// An `up` proxy silent this long becomes `lost` [default: 3s].
    #[arg(long, env = "ZEROKEEPER_LOST_AFTER", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub lost_after: Option<Duration>,
    /// A `ready` proxy silent this long is deleted [default: 60s].
    #[arg(long, env = "ZEROKEEPER_READY_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub ready_timeout: Option<Duration>,
    /// A `lost` proxy is deleted this long after its last heartbeat [default: 60s].
    #[arg(long, env = "ZEROKEEPER_DELETE_AFTER", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub delete_after: Option<Duration>,
    /// Pause deleting a cluster's lost proxies while more than this share of it is lost
    /// (clusters of at least 3 proxies) [default: 0.55].
    #[arg(long, env = "ZEROKEEPER_MASS_LOSS_SHARE", value_name = "SHARE")]
    pub mass_loss_share: Option<f64>,
    /// Clusters smaller than this are not protected from mass loss [default: 3].
    #[arg(long, env = "ZEROKEEPER_MASS_LOSS_MIN_PROXIES", value_name = "N")]
    pub mass_loss_min_proxies: Option<usize>,
    /// The most proxies the registry holds; registrations beyond are dropped and counted
    /// [default: 2000000].
    #[arg(long, env = "ZEROKEEPER_MAX_PROXIES", value_name = "N")]
    pub max_proxies: Option<usize>,
    /// The most clusters the registry holds [default: 10000].
    #[arg(long, env = "ZEROKEEPER_MAX_CLUSTERS", value_name = "N")]
    pub max_clusters: Option<usize>,
    /// Lateness of the keeper past its own wakeup beyond this is a stall of the keeper,
    /// which shifts every deadline instead of counting against the proxies [default: 250ms].
    #[arg(long, env = "ZEROKEEPER_STALL_SLOP", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub stall_slop: Option<Duration>,
    /// Challenges one source address (IP and port) may get per heartbeat interval; a
    /// replay flood from spoofed sources gets no more (0: no limit) [default: 4].
    #[arg(long, env = "ZEROKEEPER_CHALLENGE_LIMIT", value_name = "N")]
    pub challenge_limit: Option<u32>,
    /// A config rollout not converged this long after it began (or after a proxy that
    /// joined later registered) is reported stuck [default: 60s].
    #[arg(long, env = "ZEROKEEPER_ROLLOUT_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub rollout_timeout: Option<Duration>,
    /// Refuse protocol version 1 config requests, whose chunks would travel in clear
    /// (version 2 seals them); version 1 proxies then never get a config.
    #[arg(long, env = "ZEROKEEPER_REFUSE_PLAINTEXT_CONFIGS")]
    pub refuse_plaintext_configs: bool,
    /// After a boot on an empty store (or one found older than the fleet), an unknown
    /// proxy's `up` is adopted as `up` for this long, not restarted [default: 3 × lost_after].
    #[arg(long, env = "ZEROKEEPER_ADOPT_WINDOW", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub adopt_window: Option<Duration>,
    /// The restart budget: in each restart round at most this share of a cluster (and at
    /// least one proxy) is sent `Restart`; the rest wait for a later round [default: 0.25].
    #[arg(long, env = "ZEROKEEPER_RESTART_SHARE", value_name = "SHARE")]
    pub restart_share: Option<f64>,
    /// How long a restart round lasts [default: lost_after + 2 × heartbeat_interval].
    #[arg(long, env = "ZEROKEEPER_RESTART_ROUND", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub restart_round: Option<Duration>,
    /// Changes kept for watchers to resume from (and in the store) [default: 100000].
    #[arg(long, env = "ZEROKEEPER_WATCH_RETENTION", value_name = "CHANGES")]
    pub watch_retention: Option<usize>,
    /// Config versions the store keeps per cluster, the newest (what `config history`
    /// lists and a rollback can go back to) [default: 100].
    #[arg(long, env = "ZEROKEEPER_CONFIG_HISTORY", value_name = "VERSIONS")]
    pub config_history: Option<usize>,
    /// Audit entries the store keeps, the newest [default: 100000].
    #[arg(long, env = "ZEROKEEPER_AUDIT_RETENTION", value_name = "ENTRIES")]
    pub audit_retention: Option<usize>,
    /// Log format [default: text]; the filter comes from RUST_LOG (default `info`).
    #[arg(long, env = "ZEROKEEPER_LOG_FORMAT", value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Admin API: a client must send a request's whole head within this [default: 10s].
    #[arg(long, env = "ZEROKEEPER_HTTP_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub http_header_read_timeout: Option<Duration>,
    /// Admin API: a connection with no request in flight this long is closed [default: 60s].
    #[arg(long, env = "ZEROKEEPER_HTTP_IDLE_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub http_idle_timeout: Option<Duration>,
    /// Admin API: a request body that makes no progress this long is answered 408
    /// [default: 10s].
    #[arg(long, env = "ZEROKEEPER_HTTP_BODY_READ_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub http_body_read_timeout: Option<Duration>,
    /// Admin API: a connection whose writes make no progress this long (its client does
    /// not read) is closed [default: 30s].
    #[arg(long, env = "ZEROKEEPER_HTTP_WRITE_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub http_write_timeout: Option<Duration>,
    /// Admin API: the most headers a request may have (more is 431) [default: 100].
    #[arg(long, env = "ZEROKEEPER_HTTP_MAX_HEADERS", value_name = "N")]
    pub http_max_headers: Option<usize>,
    /// Admin API: the most bytes a request's head may take (more is 431, or 414 for a
    /// request line alone) [default: 16384].
    #[arg(long, env = "ZEROKEEPER_HTTP_MAX_HEADER_BYTES", value_name = "BYTES")]
    pub http_max_header_bytes: Option<usize>,
    /// Admin API: the most connections open at once [default: 512].
    #[arg(long, env = "ZEROKEEPER_HTTP_MAX_CONNECTIONS", value_name = "N")]
    pub http_max_connections: Option<usize>,
    /// Admin API: the most watch streams at once, fewer than the connections (more are
    /// 503) [default: 256].
    #[arg(long, env = "ZEROKEEPER_HTTP_MAX_WATCHERS", value_name = "N")]
    pub http_max_watchers: Option<usize>,
    /// Admin API: the most requests served on one connection [default: 1000].
    #[arg(
        long,
        env = "ZEROKEEPER_HTTP_MAX_REQUESTS_PER_CONNECTION",
        value_name = "N"
    )]
    pub http_max_requests_per_connection: Option<usize>,
    /// Admin API: the kernel send buffer of each connection, in bytes (Linux doubles it;
    /// 0: the kernel's own sizing, up to megabytes) [default: 65536].
    #[arg(long, env = "ZEROKEEPER_HTTP_SEND_BUFFER", value_name = "BYTES")]
    pub http_send_buffer: Option<usize>,
    /// Admin API: on SIGTERM, how long requests in flight may finish before every
    /// connection left is closed [default: 5s].
    #[arg(long, env = "ZEROKEEPER_HTTP_SHUTDOWN_DEADLINE", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub http_shutdown_deadline: Option<Duration>,
    /// Where the state lives: `redb` (the data directory; one keeper) or `etcd` (several
    /// keepers, one leading) [default: redb].
    #[arg(long, env = "ZEROKEEPER_STORE", value_enum, value_name = "KIND")]
    pub store: Option<StoreKind>,
    /// etcd client URLs, comma-separated (`--store etcd`).
    #[arg(
        long,
        env = "ZEROKEEPER_ETCD_ENDPOINTS",
        value_delimiter = ',',
        value_name = "URL[,…]"
    )]
    pub etcd_endpoints: Vec<String>,
    /// The root of the status keys in etcd [default: /zerodb/proxy].
    #[arg(long, env = "ZEROKEEPER_ETCD_PREFIX", value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// etcd user, if etcd has authentication on (with --etcd-password-file).
    #[arg(long, env = "ZEROKEEPER_ETCD_USER", value_name = "USER")]
    pub etcd_user: Option<String>,
    /// A file holding the etcd user's password (private: mode 0600).
    #[arg(long, env = "ZEROKEEPER_ETCD_PASSWORD_FILE", value_name = "PATH")]
    pub etcd_password_file: Option<PathBuf>,
    /// The CA of etcd's TLS certificate (PEM), as `etcdctl --cacert`.
    #[arg(long, env = "ZEROKEEPER_ETCD_CACERT", value_name = "PATH")]
    pub etcd_cacert: Option<PathBuf>,
    /// A client certificate for etcd (PEM), as `etcdctl --cert` (with --etcd-key).
    #[arg(long, env = "ZEROKEEPER_ETCD_CERT", value_name = "PATH")]
    pub etcd_cert: Option<PathBuf>,
    /// The client certificate's key (PEM), as `etcdctl --key`.
    #[arg(long, env = "ZEROKEEPER_ETCD_KEY", value_name = "PATH")]
    pub etcd_key: Option<PathBuf>,
    /// The leader's lease: a leader that stops renewing it is replaced after about this
    /// long (whole seconds, at least 2) [default: 5s].
    #[arg(long, env = "ZEROKEEPER_LEASE_TTL", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub lease_ttl: Option<Duration>,
    /// This keeper's name among the keepers of one etcd [default: HOSTNAME:HTTP_PORT].
    #[arg(long, env = "ZEROKEEPER_KEEPER_ID", value_name = "NAME")]
    pub keeper_id: Option<String>,
    /// The admin API's URL as operators and other keepers reach it [default:
    /// http://HTTP_ADDR].
    #[arg(long, env = "ZEROKEEPER_ADVERTISE_HTTP", value_name = "URL")]
    pub advertise_http: Option<String>,
    /// The heartbeat address as proxies reach it [default: UDP_ADDR].
    #[arg(long, env = "ZEROKEEPER_ADVERTISE_UDP", value_name = "HOST:PORT")]
    pub advertise_udp: Option<String>,
    /// Admin bearer tokens, one a line as `NAME ROLE TOKEN [CLUSTER,...]` (ROLE `read` or
    /// `admin`); with any, changes and config contents need an admin token. Re-read on
    /// SIGHUP.
    #[arg(long, env = "ZEROKEEPER_ADMIN_TOKEN_FILE", value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
    /// Reads (listings, the watch, /metrics) need a token too (needs --admin-token-file).
    #[arg(long, env = "ZEROKEEPER_AUTH_READS")]
    pub auth_reads: bool,
    /// The admin API's TLS certificate chain (PEM); with --tls-key it serves https only.
    #[arg(long, env = "ZEROKEEPER_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "ZEROKEEPER_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
}

/// Who may call the admin API, as configured.
#[derive(Clone, Debug, Default)]
pub struct AdminSettings {
    /// Where the tokens come from (re-read on SIGHUP); `None`: no tokens.
    pub token_file: Option<PathBuf>,
    /// The tokens it held at start.
    pub tokens: crate::http::tokens::Tokens,
    /// Whether reads need a token too.
    pub auth_reads: bool,
}

/// The admin API's certificate and key files (`--tls-cert`, `--tls-key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

/// How to reach etcd and take part in the election, as configured (`--store etcd`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdSettings {
    /// The client URLs.
    pub endpoints: Vec<String>,
    /// The root of the status keys.
    pub prefix: String,
    /// A user and password.
    pub user: Option<(String, String)>,
    /// TLS files: CA, client certificate, its key.
    pub cacert: Option<PathBuf>,
    /// The client certificate.
    pub cert: Option<PathBuf>,
    /// Its key.
    pub key: Option<PathBuf>,
    /// The leader's lease.
    pub lease_ttl: Duration,
    /// This keeper's name (`None`: host name and HTTP port, once bound).
    pub keeper_id: Option<String>,
    /// The admin URL to advertise (`None`: the bound address).
    pub advertise_http: Option<String>,
    /// The heartbeat address to advertise (`None`: the bound address).
    pub advertise_udp: Option<String>,
}

/// The default root of the status keys in etcd (the seed's).
pub const DEFAULT_ETCD_PREFIX: &str = "/zerodb/proxy";
/// The default lease of the leader.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// The config file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    udp: Option<SocketAddr>,
    /// `http_listen`; `http` is its older name.
    #[serde(alias = "http")]
    http_listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    key_file: Option<PathBuf>,
    store_key_file: Option<PathBuf>,
    #[serde(default, with = "opt_duration")]
    heartbeat_interval: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    lost_after: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    ready_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    delete_after: Option<Duration>,
    log_format: Option<LogFormat>,
    max_proxies: Option<usize>,
    max_clusters: Option<usize>,
    mass_loss_share: Option<f64>,
    mass_loss_min_proxies: Option<usize>,
    #[serde(default, with = "opt_duration")]
    stall_slop: Option<Duration>,
    challenge_limit: Option<u32>,
    refuse_plaintext_configs: Option<bool>,
    #[serde(default, with = "opt_duration")]
    rollout_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    adopt_window: Option<Duration>,
    restart_share: Option<f64>,
    #[serde(default, with = "opt_duration")]
    restart_round: Option<Duration>,
    watch_retention: Option<usize>,
    config_history: Option<usize>,
    audit_retention: Option<usize>,
    #[serde(default, with = "opt_duration")]
    http_header_read_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    http_idle_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    http_body_read_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    http_write_timeout: Option<Duration>,
    http_max_headers: Option<usize>,
    http_max_header_bytes: Option<usize>,
    http_max_connections: Option<usize>,
    http_max_watchers: Option<usize>,
    http_max_requests_per_connection: Option<usize>,
    #[serde(default, with = "opt_duration")]
    http_shutdown_deadline: Option<Duration>,
    http_send_buffer: Option<usize>,
    store: Option<StoreKind>,
    #[serde(default)]
    etcd_endpoints: Vec<String>,
    etcd_prefix: Option<String>,
    etcd_user: Option<String>,
    etcd_password_file: Option<PathBuf>,
    etcd_cacert: Option<PathBuf>,
    etcd_cert: Option<PathBuf>,
    etcd_key: Option<PathBuf>,
    #[serde(default, with = "opt_duration")]
    lease_ttl: Option<Duration>,
    keeper_id: Option<String>,
    advertise_http: Option<String>,
    advertise_udp: Option<String>,
    admin_token_file: Option<PathBuf>,
    auth_reads: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default)]
    clusters: BTreeMap<String, ClusterFileConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFileConfig {
    #[serde(default)]
    key_files: Vec<PathBuf>,
    /// The format the cluster's config files are in, checked before a push is stored.
    config_format: Option<crate::configdoc::ConfigFormat>,
    /// The cluster's hostgroups: their datasources and the one serving each now.
    #[serde(default)]
    hostgroups: BTreeMap<String, HostgroupFileConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostgroupFileConfig {
    datasources: Vec<String>,
    current: String,
}

/// The hostgroups the file declares, each checked as the API checks a declaration.
fn declared_hostgroups(
    file: &FileConfig,
    path: Option<&Path>,
) -> Result<crate::keeper::cluster::DeclaredHostgroups, ConfigFileError> {
    let mut out = crate::keeper::cluster::DeclaredHostgroups::new();
    for (cluster, c) in &file.clusters {
        if c.hostgroups.len() > crate::keeper::cluster::MAX_HOSTGROUPS {
            return Err(ConfigFileError::Parse {
                path: path.map(Path::to_path_buf).unwrap_or_default(),
                message: format!(
                    "cluster {cluster} declares more than {} hostgroups",
                    crate::keeper::cluster::MAX_HOSTGROUPS
                ),
            });
        }
        for (name, h) in &c.hostgroups {
            let datasources =
                crate::keeper::cluster::check_declaration(name, &h.datasources, &h.current)
                    .map_err(|e| ConfigFileError::Parse {
                        path: path.map(Path::to_path_buf).unwrap_or_default(),
                        message: format!("[clusters.{cluster}.hostgroups.{name}]: {e}"),
                    })?;
            out.entry(cluster.clone()).or_default().insert(
                name.clone(),
                crate::keeper::Hostgroup {
                    datasources,
                    initial: h.current.clone(),
                },
            );
        }
    }
    Ok(out)
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
    }
}

/// Everything `serve` needs, resolved and checked.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// UDP address for heartbeats.
    pub udp: SocketAddr,
    /// HTTP address of the admin API.
    pub http: SocketAddr,
    /// Directory of the store.
    pub data_dir: PathBuf,
    /// The store keys configs are sealed under at rest (`None`: stored plain).
    pub store_keys: Option<StoreKeys>,
    /// Every key, with its scope.
    pub keyring: Keyring,
    /// Timing and limits of the core.
    pub keeper: KeeperConfig,
    /// Log format.
    pub log_format: LogFormat,
    /// Changes kept for watchers to resume from, in memory and in the store.
    pub watch_retention: usize,
    /// Config versions per cluster and audit entries the store keeps.
    pub history: crate::store::History,
    /// The formats clusters declare their config files are in (`config_format`).
    pub config_formats: BTreeMap<String, crate::configdoc::ConfigFormat>,
    /// The hostgroups clusters declare (`[clusters.NAME.hostgroups.HG]`).
    pub hostgroups: crate::keeper::cluster::DeclaredHostgroups,
    /// The admin API's limits.
    pub http_limits: ServeLimits,
    /// The kernel send buffer of each admin connection, in bytes (0: the kernel's own).
    pub http_send_buffer: usize,
    /// `Some`: the state lives in etcd, shared by several keepers (`--store etcd`);
    /// `None`: in `data_dir`.
    pub etcd: Option<EtcdSettings>,
    /// Who may call the admin API.
    pub admin: AdminSettings,
    /// `Some`: the admin API serves https only, with these files.
    pub tls: Option<TlsFiles>,
}

/// The default [`ServeConfig::http_send_buffer`]: 64 KiB (128 KiB once Linux doubles
/// it), instead of the megabytes the kernel grows a loopback connection's buffer to.
pub const DEFAULT_HTTP_SEND_BUFFER: usize = 64 * 1024;
/// The smallest non-zero [`ServeConfig::http_send_buffer`].
pub const MIN_HTTP_SEND_BUFFER: usize = 4096;

/// The default [`ServeConfig::watch_retention`].
pub const DEFAULT_WATCH_RETENTION: usize = 100_000;

/// Why the configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigFileError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this program.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// A key file does not hold 16 to 64 bytes of hex.
    #[error("invalid key file {path}: {message}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The admin token file is not valid (see [`crate::http::tokens`]).
    #[error("invalid admin token file {path}: {message}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// `--auth-reads` without tokens: nobody could read.
    #[error("--auth-reads needs --admin-token-file (or admin_token_file in the config file)")]
    AuthReads,
    /// One of `--tls-cert` and `--tls-key` without the other.
    #[error("--tls-cert and --tls-key go together: give both, or neither")]
    Tls,
    /// A key file can be read by its group or by others (any of the mode bits `0o077`),
    /// so the secret may already be known beyond its owner. Refused, as ssh refuses such
    /// a private key.
    #[error(
        "key file {path} is accessible by group or others (mode {mode:04o}): run chmod 600 {path}"
    )]
    KeyFileMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The keys do not fit together.
    #[error("invalid keys: {0}")]
    Keys(#[from] KeyError),
    /// No key at all: the keeper would authenticate nothing.
    #[error(
        "no key configured: give --key-file (or key_file / [clusters.NAME] key_files in the config file)"
    )]
    NoKey,
    /// A cluster section names an invalid cluster.
    #[error("invalid cluster name in the config file: {0:?}")]
    ClusterName(String),
    /// The etcd store's settings are incomplete or invalid.
    #[error("invalid etcd setting: {0}")]
    Etcd(String),
    /// The timing or limits do not satisfy the protocol's rules.
    #[error("invalid setting: {0}")]
    Timing(#[from] KeeperConfigError),
    /// The admin API's limits cannot serve.
    #[error("invalid admin API limit: {0}")]
    HttpLimits(#[from] LimitsError),
    /// The admin connections' send buffer is neither 0 nor at least
    /// [`MIN_HTTP_SEND_BUFFER`].
    #[error(
        "invalid admin API limit: http_send_buffer ({0}) must be 0 (the kernel's own) or at least {MIN_HTTP_SEND_BUFFER} bytes"
    )]
    SendBuffer(usize),
}

impl ServeArgs {
    /// Resolves flags, environment, config file and defaults into a checked config.
    pub fn resolve(&self) -> Result<ServeConfig, ConfigFileError> {
        let (file, base) = match &self.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
                        path: path.clone(),
                        source,
                    })?;
                let file: FileConfig =
                    toml::from_str(&text).map_err(|e| ConfigFileError::Parse {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                (
                    file,
                    path.parent().map(Path::to_path_buf).unwrap_or_default(),
                )
            }
            None => (FileConfig::default(), PathBuf::new()),
        };
        let in_file = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        };

        let mut keyring = Keyring::new();
        let default_key = self
            .key_file
            .clone()
            .or_else(|| file.key_file.as_ref().map(in_file));
        if let Some(path) = default_key {
            keyring.insert(read_key_file(&path)?, KeyScope::Default)?;
        }
        for (cluster, section) in &file.clusters {
            validate_cluster(cluster).map_err(|_| ConfigFileError::ClusterName(cluster.clone()))?;
            for path in &section.key_files {
                keyring.insert(
                    read_key_file(&in_file(path))?,
                    KeyScope::Cluster(cluster.as_str().into()),
                )?;
            }
        }
        if keyring.is_empty() {
            return Err(ConfigFileError::NoKey);
        }

        let defaults = KeeperConfig::default();
        let keeper = KeeperConfig {
            heartbeat_interval: self
                .heartbeat_interval
                .or(file.heartbeat_interval)
                .unwrap_or(defaults.heartbeat_interval),
            lost_after: self
                .lost_after
                .or(file.lost_after)
                .unwrap_or(defaults.lost_after),
            ready_timeout: self
                .ready_timeout
                .or(file.ready_timeout)
                .unwrap_or(defaults.ready_timeout),
            delete_after: self
                .delete_after
                .or(file.delete_after)
                .unwrap_or(defaults.delete_after),
            max_proxies: self
                .max_proxies
                .or(file.max_proxies)
                .unwrap_or(defaults.max_proxies),
            max_clusters: self
                .max_clusters
                .or(file.max_clusters)
                .unwrap_or(defaults.max_clusters),
            mass_loss_permille: match self.mass_loss_share.or(file.mass_loss_share) {
                Some(share) if (0.0..=1.0).contains(&share) => (share * 1000.0).round() as u32,
                Some(_) => return Err(ConfigFileError::Timing(KeeperConfigError::MassLoss)),
                None => defaults.mass_loss_permille,
            },
            mass_loss_min_proxies: self
                .mass_loss_min_proxies
                .or(file.mass_loss_min_proxies)
                .unwrap_or(defaults.mass_loss_min_proxies),
            stall_slop: self
                .stall_slop
                .or(file.stall_slop)
                .unwrap_or(defaults.stall_slop),
            adopt_window: self.adopt_window.or(file.adopt_window),
            restart_permille: match self.restart_share.or(file.restart_share) {
                Some(share) if share > 0.0 && share <= 1.0 => {
                    ((share * 1000.0).round() as u32).max(1)
                }
                Some(_) => return Err(ConfigFileError::Timing(KeeperConfigError::RestartBudget)),
                None => defaults.restart_permille,
            },
            restart_round: self.restart_round.or(file.restart_round),
            challenge_limit: self
                .challenge_limit
                .or(file.challenge_limit)
                .unwrap_or(defaults.challenge_limit),
            refuse_plaintext_configs: self.refuse_plaintext_configs
                || file.refuse_plaintext_configs.unwrap_or(false),
            rollout_timeout: self
                .rollout_timeout
                .or(file.rollout_timeout)
                .unwrap_or(defaults.rollout_timeout),
        };
        keeper.validate()?;

        let http = ServeLimits::default();
        let http_limits = ServeLimits {
            header_read_timeout: self
                .http_header_read_timeout
                .or(file.http_header_read_timeout)
                .unwrap_or(http.header_read_timeout),
            idle_timeout: self
                .http_idle_timeout
                .or(file.http_idle_timeout)
                .unwrap_or(http.idle_timeout),
            body_read_timeout: self
                .http_body_read_timeout
                .or(file.http_body_read_timeout)
                .unwrap_or(http.body_read_timeout),
            write_timeout: self
                .http_write_timeout
                .or(file.http_write_timeout)
                .unwrap_or(http.write_timeout),
            max_headers: self
                .http_max_headers
                .or(file.http_max_headers)
                .unwrap_or(http.max_headers),
            max_header_bytes: self
                .http_max_header_bytes
                .or(file.http_max_header_bytes)
                .unwrap_or(http.max_header_bytes),
            max_connections: self
                .http_max_connections
                .or(file.http_max_connections)
                .unwrap_or(http.max_connections),
            max_watchers: self
                .http_max_watchers
                .or(file.http_max_watchers)
                .unwrap_or(http.max_watchers),
            max_requests_per_connection: self
                .http_max_requests_per_connection
                .or(file.http_max_requests_per_connection)
                .unwrap_or(http.max_requests_per_connection),
            shutdown_deadline: self
                .http_shutdown_deadline
                .or(file.http_shutdown_deadline)
                .unwrap_or(http.shutdown_deadline),
        };
        http_limits.validate()?;
        let http_send_buffer = self
            .http_send_buffer
            .or(file.http_send_buffer)
            .unwrap_or(DEFAULT_HTTP_SEND_BUFFER);
        if http_send_buffer != 0 && http_send_buffer < MIN_HTTP_SEND_BUFFER {
            return Err(ConfigFileError::SendBuffer(http_send_buffer));
        }

        Ok(ServeConfig {
            udp: self
                .udp
                .or(file.udp)
                .unwrap_or_else(|| parse_default(DEFAULT_UDP)),
            http: self
                .http_listen
                .or(self.http)
                .or(file.http_listen)
                .unwrap_or_else(|| parse_default(DEFAULT_HTTP)),
            data_dir: self
                .data_dir
                .clone()
                .or_else(|| file.data_dir.as_ref().map(in_file))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            store_keys: match self
                .store_key_file
                .clone()
                .or_else(|| file.store_key_file.as_ref().map(in_file))
            {
                Some(path) => Some(read_store_key_file(&path)?),
                None => None,
            },
            keyring,
            keeper,
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            watch_retention: self
                .watch_retention
                .or(file.watch_retention)
                .unwrap_or(DEFAULT_WATCH_RETENTION)
                .max(1),
            config_formats: file
                .clusters
                .iter()
                .filter_map(|(name, c)| Some((name.clone(), c.config_format?)))
                .collect(),
            hostgroups: declared_hostgroups(&file, self.config.as_deref())?,
            history: crate::store::History {
                configs: self
                    .config_history
                    .or(file.config_history)
                    .unwrap_or(crate::store::History::DEFAULT.configs)
                    .max(1),
                audit: self
                    .audit_retention
                    .or(file.audit_retention)
                    .unwrap_or(crate::store::History::DEFAULT.audit)
                    .max(1),
            },
            http_limits,
            http_send_buffer,
            etcd: self.etcd_settings(&file, &in_file)?,
            admin: self.admin_settings(&file, &in_file)?,
            tls: match (
                self.tls_cert
                    .clone()
                    .or_else(|| file.tls_cert.as_ref().map(in_file)),
                self.tls_key
                    .clone()
                    .or_else(|| file.tls_key.as_ref().map(in_file)),
            ) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                (None, None) => None,
                _ => return Err(ConfigFileError::Tls),
            },
        })
    }

    /// The admin API's tokens and whether reads need one.
    fn admin_settings(
        &self,
        file: &FileConfig,
        in_file: &dyn Fn(&PathBuf) -> PathBuf,
    ) -> Result<AdminSettings, ConfigFileError> {
        let token_file = self
            .admin_token_file
            .clone()
            .or_else(|| file.admin_token_file.as_ref().map(in_file));
        let auth_reads = self.auth_reads || file.auth_reads.unwrap_or(false);
        let tokens = match &token_file {
            Some(path) => crate::http::tokens::Tokens::read(path)?,
            None if auth_reads => return Err(ConfigFileError::AuthReads),
            None => crate::http::tokens::Tokens::none(),
        };
        Ok(AdminSettings {
            token_file,
            tokens,
            auth_reads,
        })
    }

    /// The etcd settings, if `--store etcd`.
    fn etcd_settings(
        &self,
        file: &FileConfig,
        in_file: &dyn Fn(&PathBuf) -> PathBuf,
    ) -> Result<Option<EtcdSettings>, ConfigFileError> {
        if self.store.or(file.store).unwrap_or_default() != StoreKind::Etcd {
            return Ok(None);
        }
        let endpoints = if self.etcd_endpoints.is_empty() {
            file.etcd_endpoints.clone()
        } else {
            self.etcd_endpoints.clone()
        };
        if endpoints.is_empty() {
            return Err(ConfigFileError::Etcd(
                "--store etcd needs --etcd-endpoints (or etcd_endpoints in the config file)"
                    .to_owned(),
            ));
        }
        let path = |flag: &Option<PathBuf>, key: &Option<PathBuf>| {
            flag.clone().or_else(|| key.as_ref().map(in_file))
        };
        let user = match (
            self.etcd_user.clone().or_else(|| file.etcd_user.clone()),
            path(&self.etcd_password_file, &file.etcd_password_file),
        ) {
            (Some(user), Some(password_file)) => {
                Some((user, read_private_file(&password_file)?.trim().to_owned()))
            }
            (None, None) => None,
            _ => {
                return Err(ConfigFileError::Etcd(
                    "an etcd user needs its password file, and a password file its user".to_owned(),
                ));
            }
        };
        let lease_ttl = self
            .lease_ttl
            .or(file.lease_ttl)
            .unwrap_or(DEFAULT_LEASE_TTL);
        if lease_ttl < Duration::from_secs(2) {
            return Err(ConfigFileError::Etcd(
                "lease_ttl must be at least 2s (etcd counts leases in whole seconds)".to_owned(),
            ));
        }
        Ok(Some(EtcdSettings {
            endpoints,
            prefix: self
                .etcd_prefix
                .clone()
                .or_else(|| file.etcd_prefix.clone())
                .unwrap_or_else(|| DEFAULT_ETCD_PREFIX.to_owned()),
            user,
            cacert: path(&self.etcd_cacert, &file.etcd_cacert),
            cert: path(&self.etcd_cert, &file.etcd_cert),
            key: path(&self.etcd_key, &file.etcd_key),
            lease_ttl,
            keeper_id: self.keeper_id.clone().or_else(|| file.keeper_id.clone()),
            advertise_http: self
                .advertise_http
                .clone()
                .or_else(|| file.advertise_http.clone()),
            advertise_udp: self
                .advertise_udp
                .clone()
                .or_else(|| file.advertise_udp.clone()),
        }))
    }
}

fn parse_default(addr: &str) -> SocketAddr {
    // The defaults are literals checked by a unit test.
    addr.parse().expect("default addresses parse")
}

/// Reads a key file: the secret as hex, surrounding whitespace ignored.
///
/// On Unix the file must be private to its owner: a mode with any of the bits `0o077`
/// (as `0644` has) is refused with [`ConfigFileError::KeyFileMode`], whose message says
/// to `chmod 600` it. The mode is read from the opened file, so it is the mode of the
/// file that was read.
pub fn read_key_file(path: &Path) -> Result<Key, ConfigFileError> {
    let text = read_private_file(path)?;
    let secret = decode_hex(text.trim()).ok_or_else(|| ConfigFileError::KeyFile {
        path: path.to_path_buf(),
        message: "not hex".into(),
    })?;
    Key::new(&secret).map_err(|e| ConfigFileError::KeyFile {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Reads a store key file: one hex secret a line (the first seals, every one opens),
/// `#` comments; private to its owner, as a key file must be.
pub fn read_store_key_file(path: &Path) -> Result<StoreKeys, ConfigFileError> {
    let text = read_private_file(path)?;
    StoreKeys::parse(&text).map_err(|message| ConfigFileError::KeyFile {
        path: path.to_path_buf(),
        message,
    })
}

/// Reads a file of secrets (a key, a password), refusing one that its group or others
/// may read or write (any mode bit of `077`), as ssh does.
pub fn read_private_file(path: &Path) -> Result<String, ConfigFileError> {
    use std::io::Read;
    let read_error = |source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(read_error)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(ConfigFileError::KeyFileMode {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(read_error)?;
    Ok(text)
}

/// Decodes lowercase or uppercase hex; `None` for anything else.
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Encodes bytes as lowercase hex.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a file private to its owner (0600), as a key file must be.
    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("temp dir is writable");
        set_mode(&path, 0o600);
        path
    }

    fn set_mode(path: &Path, mode: u32) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .expect("temp file is ours");
        }
        #[cfg(not(unix))]
        let _ = (path, mode);
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("zk-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn the_default_addresses_parse() {
        assert_eq!(parse_default(DEFAULT_UDP).port(), 7821);
        assert_eq!(parse_default(DEFAULT_HTTP).port(), 7822);
    }

    #[test]
    fn the_listen_address_has_a_new_name_and_its_old_ones_still_work() {
        let dir = temp_dir("listen-names");
        write(&dir, "default.key", &"2a".repeat(32));
        let old = write(
            &dir,
            "old.toml",
            "http = \"127.0.0.1:9001\"\nkey_file = \"default.key\"\n",
        );
        let new = write(
            &dir,
            "new.toml",
            "http_listen = \"127.0.0.1:9002\"\nkey_file = \"default.key\"\nmax_proxies = 9\n",
        );
        let of = |args: ServeArgs| args.resolve().expect("valid");
        let file = |path: &PathBuf| ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        assert_eq!(of(file(&old)).http.port(), 9001);
        assert_eq!(of(file(&new)).http.port(), 9002);
        assert_eq!(of(file(&new)).keeper.max_proxies, 9);
        let flag = ServeArgs {
            http_listen: Some("127.0.0.1:9003".parse().expect("address")),
            max_proxies: Some(10),
            ..file(&new)
        };
        assert_eq!(of(flag.clone()).http.port(), 9003);
        assert_eq!(of(flag).keeper.max_proxies, 10);
        let deprecated = ServeArgs {
            http: Some("127.0.0.1:9004".parse().expect("address")),
            ..file(&new)
        };
        assert_eq!(of(deprecated).http.port(), 9004);
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let dir = temp_dir("override");
        write(&dir, "default.key", &"2a".repeat(32));
        write(&dir, "pay.key", &"55".repeat(32));
        let file = write(
            &dir,
            "zk.toml",
            "udp = \"127.0.0.1:9000\"\nkey_file = \"default.key\"\nlost_after = \"5s\"\ndelete_after = \"2m\"\n\
             config_history = 7\naudit_retention = 50\n\
             [clusters.payments]\nkey_files = [\"pay.key\"]\nconfig_format = \"toml\"\n",
        );
        let args = ServeArgs {
            config: Some(file),
            lost_after: Some(Duration::from_secs(4)),
            audit_retention: Some(60),
            ..ServeArgs::default()
        };
        let config = args.resolve().expect("valid");
        assert_eq!(config.udp.port(), 9000);
        assert_eq!(config.http.port(), 7822);
        assert_eq!(config.keeper.lost_after, Duration::from_secs(4));
        assert_eq!(config.keeper.delete_after, Duration::from_secs(120));
        assert_eq!(config.keyring.len(), 2);
        assert_eq!(
            config.history,
            crate::store::History {
                configs: 7,
                audit: 60
            }
        );
        assert_eq!(
            config.config_formats,
            BTreeMap::from([("payments".to_owned(), crate::configdoc::ConfigFormat::Toml)])
        );
    }

    #[test]
    fn the_file_declares_hostgroups_checked_as_the_api_checks_them() {
        let dir = temp_dir("hostgroups");
        write(&dir, "default.key", &"2a".repeat(32));
        let good = write(
            &dir,
            "good.toml",
            "key_file = \"default.key\"\n[clusters.c.hostgroups.hg_orders]\n\
             datasources = [\"mysql-b:3306\", \"mysql-a:3306\"]\ncurrent = \"mysql-a:3306\"\n",
        );
        let config = ServeArgs {
            config: Some(good),
            ..ServeArgs::default()
        }
        .resolve()
        .expect("valid");
        let hg = &config.hostgroups["c"]["hg_orders"];
        assert_eq!(hg.initial, "mysql-a:3306");
        assert_eq!(hg.datasources.len(), 2);
        let bad = write(
            &dir,
            "bad.toml",
            "key_file = \"default.key\"\n[clusters.c.hostgroups.hg_orders]\n\
             datasources = [\"mysql-b:3306\"]\ncurrent = \"mysql-a:3306\"\n",
        );
        let error = ServeArgs {
            config: Some(bad),
            ..ServeArgs::default()
        }
        .resolve()
        .expect_err("a current datasource not among them");
        assert!(error.to_string().contains("hg_orders"), "{error}");
    }

    #[test]
    fn the_etcd_store_is_configured_from_the_file_and_needs_its_endpoints() {
        let dir = temp_dir("etcd");
        write(&dir, "default.key", &"2a".repeat(32));
        let file = write(
            &dir,
            "zk.toml",
            "key_file = \"default.key\"\nstore = \"etcd\"\n\
             etcd_endpoints = [\"http://10.0.0.5:2379\", \"http://10.0.0.6:2379\"]\n\
             lease_ttl = \"8s\"\nkeeper_id = \"k1\"\n",
        );
        let config = ServeArgs {
            config: Some(file.clone()),
            ..ServeArgs::default()
        }
        .resolve()
        .expect("valid");
        let etcd = config.etcd.expect("the etcd store");
        assert_eq!(
            etcd.endpoints,
            ["http://10.0.0.5:2379", "http://10.0.0.6:2379"]
        );
        assert_eq!(etcd.prefix, DEFAULT_ETCD_PREFIX);
        assert_eq!(etcd.lease_ttl, Duration::from_secs(8));
        assert_eq!(etcd.keeper_id.as_deref(), Some("k1"));
        // A flag wins over the file; without endpoints, etcd is refused by name.
        let config = ServeArgs {
            config: Some(file),
            etcd_endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            ..ServeArgs::default()
        }
        .resolve()
        .expect("valid");
        assert_eq!(
            config.etcd.expect("etcd").endpoints,
            ["http://127.0.0.1:2379"]
        );
        let bare = write(
            &dir,
            "bare.toml",
            "key_file = \"default.key\"\nstore = \"etcd\"\n",
        );
        let err = ServeArgs {
            config: Some(bare),
            ..ServeArgs::default()
        }
        .resolve()
        .expect_err("no endpoints");
        assert!(err.to_string().contains("--etcd-endpoints"), "{err}");
        let short = write(
            &dir,
            "short.toml",
            "key_file = \"default.key\"\nstore = \"etcd\"\netcd_endpoints = [\"http://a:1\"]\nlease_ttl = \"1s\"\n",
        );
        let err = ServeArgs {
            config: Some(short),
            ..ServeArgs::default()
        }
        .resolve()
        .expect_err("a lease under 2 s");
        assert!(err.to_string().contains("lease_ttl"), "{err}");
        // The data directory's store says nothing of etcd.
        let plain = write(&dir, "plain.toml", "key_file = \"default.key\"\n");
        let config = ServeArgs {
            config: Some(plain),
            ..ServeArgs::default()
        }
        .resolve()
        .expect("valid");
        assert!(config.etcd.is_none());
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused_with_their_name() {
        let dir = temp_dir("unknown");
        let file = write(
            &dir,
            "zk.toml",
            "udp = \"127.0.0.1:9000\"\nlost_afterr = \"5s\"\n",
        );
        let err = ServeArgs {
            config: Some(file),
            ..ServeArgs::default()
        }
        .resolve()
        .expect_err("refused");
        assert!(err.to_string().contains("lost_afterr"), "{err}");
    }

    #[test]
    fn a_keeper_without_a_key_is_refused() {
        let err = ServeArgs::default().resolve().expect_err("refused");
        assert!(matches!(err, ConfigFileError::NoKey));
    }

    #[test]
    fn key_files_must_hold_hex_of_a_valid_length() {
        let dir = temp_dir("keys");
        assert!(read_key_file(&write(&dir, "ok.key", &format!("{}\n", "ab".repeat(16)))).is_ok());
        assert!(read_key_file(&write(&dir, "short.key", &"ab".repeat(8))).is_err());
        assert!(read_key_file(&write(&dir, "nothex.key", "not a key")).is_err());
        assert!(read_key_file(&dir.join("missing.key")).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn key_files_readable_by_group_or_others_are_refused_with_the_chmod_to_run() {
        let dir = temp_dir("modes");
        let path = write(&dir, "open.key", &"ab".repeat(16));
        for mode in [0o644, 0o640, 0o604, 0o660, 0o601] {
            set_mode(&path, mode);
            let err = read_key_file(&path).expect_err("refused");
            assert!(
                matches!(err, ConfigFileError::KeyFileMode { mode: m, .. } if m == mode),
                "{err}"
            );
            let message = err.to_string();
            assert!(
                message.contains(&format!("chmod 600 {}", path.display())),
                "{message}"
            );
            assert!(message.contains(&format!("{mode:04o}")), "{message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
        for mode in [0o600, 0o400] {
            set_mode(&path, mode);
            assert!(read_key_file(&path).is_ok(), "{mode:o} refused");
        }
    }

    #[test]
    fn invalid_timing_is_refused() {
        let dir = temp_dir("timing");
        let key = write(&dir, "k.key", &"2a".repeat(32));
        let args = ServeArgs {
            key_file: Some(key),
            lost_after: Some(Duration::from_millis(500)),
            heartbeat_interval: Some(Duration::from_secs(1)),
            ..ServeArgs::default()
        };
        assert!(matches!(args.resolve(), Err(ConfigFileError::Timing(_))));
    }

    #[test]
    fn the_admin_api_limits_come_from_flags_then_the_file_then_the_defaults() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: ServeArgs,
        }
        let dir = temp_dir("http-limits");
        write(&dir, "k.key", &"2a".repeat(32));
        let file = write(
            &dir,
            "zk.toml",
            "key_file = \"k.key\"\nhttp_max_connections = 900\nhttp_max_watchers = 100\n\
             http_write_timeout = \"5s\"\nhttp_idle_timeout = \"2m\"\nhttp_max_headers = 50\n",
        );
        let cli = <Cli as clap::Parser>::try_parse_from([
            "serve",
            "--config",
            file.to_str().expect("utf-8"),
            "--http-max-watchers",
            "300",
            "--http-body-read-timeout",
            "3s",
            "--http-max-requests-per-connection",
            "7",
            "--http-shutdown-deadline",
            "2s",
            "--http-header-read-timeout",
            "4s",
            "--http-max-header-bytes",
            "8192",
            "--http-send-buffer",
            "0",
        ])
        .expect("the flags parse");
        let config = cli.args.resolve().expect("valid");
        assert_eq!(config.http_send_buffer, 0);
        let limits = config.http_limits;
        assert_eq!(
            limits,
            ServeLimits {
                header_read_timeout: Duration::from_secs(4),
                idle_timeout: Duration::from_secs(120),
                body_read_timeout: Duration::from_secs(3),
                write_timeout: Duration::from_secs(5),
                max_headers: 50,
                max_header_bytes: 8192,
                max_connections: 900,
                max_watchers: 300,
                max_requests_per_connection: 7,
                shutdown_deadline: Duration::from_secs(2),
            }
        );
        let defaults = ServeArgs {
            key_file: Some(dir.join("k.key")),
            ..ServeArgs::default()
        };
        let config = defaults.resolve().expect("valid");
        assert_eq!(config.http_limits, ServeLimits::default());
        assert_eq!(config.http_send_buffer, DEFAULT_HTTP_SEND_BUFFER);
    }

    #[test]
    fn admin_api_limits_that_cannot_serve_are_refused() {
        let dir = temp_dir("http-refused");
        let key = write(&dir, "k.key", &"2a".repeat(32));
        let base = ServeArgs {
            key_file: Some(key),
            ..ServeArgs::default()
        };
        let refused = |args: ServeArgs| match args.resolve() {
            Err(ConfigFileError::HttpLimits(e)) => e,
            other => panic!("not refused for its HTTP limits: {other:?}"),
        };
        assert_eq!(
            refused(ServeArgs {
                http_max_watchers: Some(512),
                ..base.clone()
            }),
            LimitsError::Watchers {
                max_watchers: 512,
                max_connections: 512
            }
        );
        assert_eq!(
            refused(ServeArgs {
                http_max_connections: Some(0),
                http_max_watchers: Some(0),
                ..base.clone()
            }),
            LimitsError::Zero("max_connections")
        );
        assert_eq!(
            refused(ServeArgs {
                http_write_timeout: Some(Duration::ZERO),
                ..base.clone()
            }),
            LimitsError::ZeroDuration("write_timeout")
        );
        assert_eq!(
            refused(ServeArgs {
                http_max_requests_per_connection: Some(0),
                ..base.clone()
            }),
            LimitsError::Zero("max_requests_per_connection")
        );
        assert_eq!(
            refused(ServeArgs {
                http_max_header_bytes: Some(100),
                ..base.clone()
            }),
            LimitsError::HeaderBytes(100)
        );
        assert!(matches!(
            ServeArgs {
                http_send_buffer: Some(100),
                ..base.clone()
            }
            .resolve(),
            Err(ConfigFileError::SendBuffer(100))
        ));
        // A watcher cap of zero (no watching) is a choice, not an error.
        assert!(
            ServeArgs {
                http_max_watchers: Some(0),
                ..base
            }
            .resolve()
            .is_ok()
        );
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(
            decode_hex(&encode_hex(&[0, 1, 0xab, 0xff])),
            Some(vec![0, 1, 0xab, 0xff])
        );
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
    }
}
