//! A blocking client for the keeper's admin HTTP API (v1), as the operator's commands
//! use it.
//!
//! It reads and writes the API's own types ([`crate::api`], shared with the server), so
//! the two cannot drift; fields a newer keeper adds are accepted. A failed request
//! becomes a [`ClientError`], which knows the command's [`Exit`] code and what to print;
//! an error answer's `application/problem+json` body is read into a [`Problem`].
//!
//! `/v1/watch` is a `text/event-stream`; [`SseParser`] splits it into [`SseEvent`]s and
//! [`EventStream`] reads it from a connection.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read as _};
use std::process::ExitCode;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use thiserror::Error;
use ureq::http::Response;
use ureq::{Agent, Body};

use crate::api::{
    Blocker, ClusterList, ClusterView, ConfigView, GateView, ProblemBody, ProblemKind, ProxyList,
    ProxyView, Pushed, Removed, StoreView, SwitchRequest, Switched,
};

pub use crate::api::PROBLEM_PREFIX;

/// Where the CLI looks for the keeper when neither `--http` nor `ZEROKEEPER_HTTP` says.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7822";

/// Longest answer body read (a fleet's proxy listing fits many times over).
const BODY_LIMIT: u64 = 64 * 1024 * 1024;
/// Longest error body read; a problem document is a few hundred bytes.
const PROBLEM_LIMIT: u64 = 64 * 1024;
/// Budget to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Budget for a whole request, answer included (not for the watch stream).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence after which a watch connection is taken for dead: three keep-alive periods.
const WATCH_IDLE_TIMEOUT: Duration = Duration::from_secs(45);
/// Longest line, and longest event data, accepted on the event stream.
const SSE_LIMIT: usize = 1024 * 1024;

/// The exit codes of the operator's commands (2, usage errors, is clap's own).
///
/// 0–6 exist today; 7–13 are defined for this wave's work (authentication, the watch's
/// `410`, high availability, registry limits, expected versions, rollouts), so that work
/// fills them in instead of inventing its own. An operation that changes nothing (an
/// identical push) is a success: 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exit {
    /// 0: it worked (or there was nothing to change).
    Success,
    /// 1: the request failed: no connection, a 5xx, or an answer the client did not
    /// expect.
    Failed,
    /// 3: the cluster's gate is closed (some proxy is not `up`); nothing changed.
    GateClosed,
    /// 4: no such cluster or proxy (or route).
    NotFound,
    /// 5: a conflict other than the gate (a datasource mismatch; an unknown hostgroup, a
    /// cluster that is not empty); nothing changed.
    Conflict,
    /// 6: the input was refused (400 or 413), or a local input (a file) is unusable.
    Invalid,
    /// 7: not authenticated (401) or not allowed (403); nothing changed.
    Denied,
    /// 8: the changes after the position asked for are not held (410): list again.
    Gone,
    /// 9: this keeper is a standby, not the leader (503 `not-leader`); nothing changed.
    NotLeader,
    /// 10: the keeper's registry is full (507 `registry-full`); nothing changed.
    RegistryFull,
    /// 11: the version the request expected to replace is not the current one (412);
    /// nothing changed.
    PreconditionFailed,
    /// 12: the rollout failed: a proxy rejected the version (409 `rollout-failed`).
    RolloutFailed,
    /// 13: the rollout did not finish in the time allowed (409 `rollout-stuck`, or
    /// `rollout status` of a stuck rollout).
    RolloutStuck,
    /// 14: the rollout is still in progress (`rollout status` without `--wait`).
    RolloutInProgress,
}

impl Exit {
    /// Every exit code, in order.
    pub const ALL: &'static [Exit] = &[
        Exit::Success,
        Exit::Failed,
        Exit::GateClosed,
        Exit::NotFound,
        Exit::Conflict,
        Exit::Invalid,
        Exit::Denied,
        Exit::Gone,
        Exit::NotLeader,
        Exit::RegistryFull,
        Exit::PreconditionFailed,
        Exit::RolloutFailed,
        Exit::RolloutStuck,
        Exit::RolloutInProgress,
    ];

    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failed => 1,
            Exit::GateClosed => 3,
            Exit::NotFound => 4,
            Exit::Conflict => 5,
            Exit::Invalid => 6,
            Exit::Denied => 7,
            Exit::Gone => 8,
            Exit::NotLeader => 9,
            Exit::RegistryFull => 10,
            Exit::PreconditionFailed => 11,
            Exit::RolloutFailed => 12,
            Exit::RolloutStuck => 13,
            Exit::RolloutInProgress => 14,
        }
    }

    /// The exit for an error answer with HTTP `status` and problem `type`.
    ///
    /// A `type` counts only with the status the contract gives it (a `gate-closed` sent
    /// with 400 is just a 400). Then: 409 `gate-closed` → 3, `rollout-failed` → 12,
    /// `rollout-stuck` → 13, any other 409 → 5; 503 `not-leader` → 9, any other 503 → 1;
    /// 401 and 403 → 7; 404 → 4; 400 and 413 → 6; 410 → 8; 412 → 11; 507 → 10; anything
    /// else (5xx, 405, a 2xx or 3xx where an error was expected) → 1.
    pub fn for_problem(status: u16, problem_type: &str) -> Exit {
        let kind = ProblemKind::from_type(problem_type).filter(|k| k.status() == status);
        match (kind, status) {
            (Some(ProblemKind::GateClosed), _) => Exit::GateClosed,
            (Some(ProblemKind::RolloutFailed), _) => Exit::RolloutFailed,
            (Some(ProblemKind::RolloutStuck), _) => Exit::RolloutStuck,
            (Some(ProblemKind::NotLeader), _) => Exit::NotLeader,
            (_, 409) => Exit::Conflict,
            (_, 401 | 403) => Exit::Denied,
            (_, 404) => Exit::NotFound,
            (_, 400 | 413) => Exit::Invalid,
            (_, 410) => Exit::Gone,
            (_, 412) => Exit::PreconditionFailed,
            (_, 507) => Exit::RegistryFull,
            _ => Exit::Failed,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

/// An error answer: its HTTP status and its RFC 9457 problem document.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// The HTTP status of the answer (not the body's `status`, which could disagree).
    pub status: u16,
    /// The document (`type` is `about:blank` if the body had none).
    pub body: ProblemBody,
}

impl Problem {
    /// Reads an error answer's body; never fails.
    ///
    /// A well-formed document is read as it is; otherwise leniently, member by member: a
    /// member of the wrong type is taken as absent, a malformed blocker is skipped, and a
    /// body that is not JSON at all still gives a problem with the HTTP status.
    pub fn parse(status: u16, body: &[u8]) -> Problem {
        let body = match serde_json::from_slice::<ProblemBody>(body) {
            Ok(body) => body,
            Err(_) => lenient(&serde_json::from_slice(body).unwrap_or_default()),
        };
        Problem { status, body }
    }

    /// The exit code this problem means (see [`Exit::for_problem`]).
    pub fn exit(&self) -> Exit {
        Exit::for_problem(self.status, &self.body.problem_type)
    }

    /// The `type` without the keeper's prefix, such as `gate-closed`.
    pub fn short_type(&self) -> &str {
        let t = &self.body.problem_type;
        t.strip_prefix(PROBLEM_PREFIX).unwrap_or(t)
    }

    /// The proxies keeping a gate closed, in the order sent.
    pub fn blockers(&self) -> &[Blocker] {
        self.body.blockers.as_deref().unwrap_or(&[])
    }

    /// What went wrong, in words: the `detail`, else the `title`, else the status.
    pub fn message(&self) -> String {
        let words = [&self.body.detail, &self.body.title]
            .into_iter()
            .flatten()
            .find(|s| !s.trim().is_empty());
        match words {
            Some(words) => words.clone(),
            None => format!("the keeper answered HTTP {}", self.status),
        }
    }
}

/// A problem document read member by member from whatever JSON the body was.
fn lenient(value: &Value) -> ProblemBody {
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    let number = |key: &str| value.get(key).and_then(Value::as_u64);
    let list = |key: &str| value.get(key).and_then(Value::as_array);
    let mut body = ProblemBody::default();
    if let Some(t) = text("type") {
        body.problem_type = t;
    }
    body.title = text("title");
    body.status = number("status").and_then(|s| u16::try_from(s).ok());
    body.detail = text("detail");
    body.cluster = text("cluster");
    body.proxy = text("proxy");
    body.blockers = list("blockers").map(|list| {
        list.iter()
            .filter_map(|b| {
                Some(Blocker {
                    proxy: b.get("proxy")?.as_str()?.to_owned(),
                    status: b.get("status")?.as_str()?.to_owned(),
                })
            })
            .collect()
    });
    body.clusters = list("clusters").map(|list| {
        list.iter()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect()
    });
    body.hostgroup = text("hostgroup");
    body.expected = text("expected");
    body.actual = text("actual");
    body.oldest = number("oldest");
    body.current = number("current");
    body.generation = number("generation");
    body
}

/// A request that did not do what was asked.
#[derive(Debug, Error)]
pub enum ClientError {
    /// No connection to the keeper could be made; nothing was sent.
    #[error(
        "cannot reach the keeper at {base}: {reason} (is it running? --http URL or ZEROKEEPER_HTTP says where it listens)"
    )]
    Unreachable {
        /// The keeper's base URL.
        base: String,
        /// Why, such as `connection refused`.
        reason: String,
    },
    /// The connection failed during the exchange (the request may have been applied).
    #[error("{method} {url} failed: {reason}")]
    Transport {
        /// The request's method.
        method: &'static str,
        /// The request's URL.
        url: String,
        /// Why, such as `timed out`.
        reason: String,
    },
    /// The keeper refused, with a problem document.
    #[error("{}", problem_text(.method, .url, .problem))]
    Problem {
        /// The request's method.
        method: &'static str,
        /// The request's URL.
        url: String,
        /// What the keeper said (boxed: it is large, and errors travel far).
        problem: Box<Problem>,
    },
    /// A success status, but not the answer the API promises (or a redirect).
    #[error("unexpected answer to {method} {url}: {detail}")]
    Unexpected {
        /// The request's method.
        method: &'static str,
        /// The request's URL.
        url: String,
        /// What was wrong with it.
        detail: String,
    },
}

fn problem_text(method: &str, url: &str, problem: &Problem) -> String {
    match problem.exit() {
        Exit::Failed => format!(
            "{} ({method} {url} answered HTTP {})",
            problem.message(),
            problem.status
        ),
        _ => problem.message(),
    }
}

impl ClientError {
    /// The exit code this error means.
    pub fn exit(&self) -> Exit {
        match self {
            ClientError::Problem { problem, .. } => problem.exit(),
            _ => Exit::Failed,
        }
    }

    /// The lines to print on standard error: `error: <what>`, then for a closed gate one
    /// `  blocked by <proxy> (<status>)` per blocker. Control characters from the server
    /// are escaped.
    pub fn report(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "error: {}",
            super::format::printable(&self.to_string())
        )];
        if let ClientError::Problem { problem, .. } = self
            && problem.exit() == Exit::GateClosed
        {
            for b in problem.blockers() {
                lines.push(format!(
                    "  blocked by {} ({})",
                    super::format::printable(&b.proxy),
                    super::format::printable(&b.status)
                ));
            }
        }
        lines
    }
}

/// A blocking client for one keeper's admin API.
#[derive(Clone)]
pub struct Client {
    base: String,
    agent: Agent,
    /// `Bearer TOKEN`, sent with every request, if a token was given.
    authorization: Option<String>,
    /// How long a request may take, from connecting to the answer's last byte.
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token.
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.authorization.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

/// How a [`Client`] authenticates itself and checks the keeper.
#[derive(Clone, Default)]
pub struct ClientOptions {
    /// An admin token, sent as `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
    /// The certificates an `https://` keeper's certificate must chain to (`None`: the
    /// Mozilla roots every browser trusts).
    pub ca: Option<Vec<ureq::tls::Certificate<'static>>>,
    /// How long a request may take (`None`: 10 s); a watch stream is not bounded by it.
    pub timeout: Option<Duration>,
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("ca", &self.ca.as_ref().map(Vec::len))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ClientOptions {
    /// Reads the certificates of a PEM file for [`ClientOptions::ca`].
    pub fn read_ca(path: &std::path::Path) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert),
                Ok(_) => {}
                Err(e) => return Err(format!("{} is not PEM: {e}", path.display())),
            }
        }
        if certs.is_empty() {
            return Err(format!("{} holds no CERTIFICATE", path.display()));
        }
        Ok(certs)
    }
}

impl Client {
    /// A client for the keeper at `base_url`, such as `http://127.0.0.1:7822` (a trailing
    /// `/` is ignored). Connecting times out after 2 s, a request after 10 s; redirects
    /// are not followed.
    pub fn new(base_url: &str) -> Client {
        Client::with_options(base_url, ClientOptions::default())
    }

    /// [`Client::new`], authenticating and checking the keeper as `options` say.
    pub fn with_options(base_url: &str, options: ClientOptions) -> Client {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = options.ca {
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(ca)));
        }
        let timeout = options.timeout.unwrap_or(REQUEST_TIMEOUT);
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT.min(timeout)))
            .timeout_global(Some(timeout))
            .user_agent(concat!("zerokeeper/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .build()
            .into();
        Client {
            base: base_url.trim_end_matches('/').to_owned(),
            agent,
            authorization: options.token.map(|t| format!("Bearer {t}")),
            timeout,
        }
    }

    /// A request of `method` to `url`, with the token if there is one.
    fn request<B>(&self, builder: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.authorization {
            Some(value) => builder.header("authorization", value),
            None => builder,
        }
    }

    /// `builder` with `If-Match: "N"` when the change expects to replace version `N`.
    fn expecting<B>(
        builder: ureq::RequestBuilder<B>,
        expect: Option<u64>,
    ) -> ureq::RequestBuilder<B> {
        match expect {
            Some(version) => builder.header("if-match", format!("\"{version}\"")),
            None => builder,
        }
    }

    /// The keeper's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Every cluster, sorted by name, with the revision the listing reflects
    /// (`GET /v1/clusters`).
    pub fn clusters(&self) -> Result<ClusterList, ClientError> {
        self.get_json("/v1/clusters")
    }

    /// One cluster (`GET /v1/clusters/{cluster}`).
    pub fn cluster(&self, cluster: &str) -> Result<ClusterView, ClientError> {
        self.get_json(&format!("/v1/clusters/{}", segment(cluster)))
    }

    /// The proxies of one cluster, or of all, in the keeper's order, with the
    /// (generation, revision) the listing reflects (`GET /v1/clusters/{cluster}/proxies`,
    /// `GET /v1/proxies`): watch from there to miss nothing.
    pub fn listing(&self, cluster: Option<&str>) -> Result<ProxyList, ClientError> {
        let path = match cluster {
            Some(c) => format!("/v1/clusters/{}/proxies", segment(c)),
            None => "/v1/proxies".to_owned(),
        };
        self.get_json(&path)
    }

    /// The proxies of one cluster, or of all, in the keeper's order (the listing
    /// without its revision).
    pub fn proxies(&self, cluster: Option<&str>) -> Result<Vec<ProxyView>, ClientError> {
        Ok(self.listing(cluster)?.proxies)
    }

    /// One proxy (`GET /v1/clusters/{cluster}/proxies/{proxy}`).
    pub fn proxy(&self, cluster: &str, proxy: &str) -> Result<ProxyView, ClientError> {
        self.get_json(&format!(
            "/v1/clusters/{}/proxies/{}",
            segment(cluster),
            segment(proxy)
        ))
    }

    /// The seed listing, exactly as the keeper sends it: lines
    /// `/zerodb/proxy/C/status/ADDR->STATUS`, sorted, each ending in `\n`; empty when no
    /// proxy is registered (`GET /v1/keys` or `GET /v1/clusters/{cluster}/keys`).
    pub fn keys(&self, cluster: Option<&str>) -> Result<String, ClientError> {
        let path = match cluster {
            Some(c) => format!("/v1/clusters/{}/keys", segment(c)),
            None => "/v1/keys".to_owned(),
        };
        let url = self.url(&path);
        let answer = self.request(self.agent.get(&url)).call();
        let body = self.success_body("GET", &url, answer)?;
        String::from_utf8(body).map_err(|_| ClientError::Unexpected {
            method: "GET",
            url,
            detail: "the listing is not UTF-8".to_owned(),
        })
    }

    /// A cluster's gate (`GET /v1/clusters/{cluster}/gate`).
    pub fn gate(&self, cluster: &str) -> Result<GateView, ClientError> {
        self.get_json(&format!("/v1/clusters/{}/gate", segment(cluster)))
    }

    /// The rollout of a cluster's current config (`GET /v1/clusters/{cluster}/rollout`).
    pub fn rollout(&self, cluster: &str) -> Result<crate::api::RolloutView, ClientError> {
        self.get_json(&format!("/v1/clusters/{}/rollout", segment(cluster)))
    }

    /// A cluster's config (`GET /v1/clusters/{cluster}/config`).
    pub fn config(&self, cluster: &str) -> Result<ConfigView, ClientError> {
        self.get_json(&format!("/v1/clusters/{}/config", segment(cluster)))
    }

    /// The store's position and the keeper's epoch (`GET /v1/store`).
    pub fn store(&self) -> Result<StoreView, ClientError> {
        self.get_json("/v1/store")
    }

    /// The keeper's version (`GET /v1/version`).
    pub fn version(&self) -> Result<crate::api::VersionView, ClientError> {
        self.get_json("/v1/version")
    }

    /// The audit record (`GET /v1/audit`): the newest `query.limit` entries of those
    /// `query` selects, oldest first.
    pub fn audit(
        &self,
        query: &crate::http::view::AuditQuery,
    ) -> Result<crate::api::AuditList, ClientError> {
        let mut path = format!("/v1/audit?limit={}", query.limit);
        for (name, value) in [
            ("cluster", &query.cluster),
            ("by", &query.by),
            ("action", &query.action),
        ] {
            if let Some(value) = value {
                path.push_str(&format!("&{name}={}", component(value)));
            }
        }
        self.get_json(&path)
    }

    /// The newest `limit` stored config versions of `cluster`, oldest first
    /// (`GET /v1/clusters/{cluster}/config/history`).
    pub fn config_history(
        &self,
        cluster: &str,
        limit: usize,
    ) -> Result<crate::api::ConfigHistory, ClientError> {
        self.get_json(&format!(
            "/v1/clusters/{}/config/history?limit={limit}",
            segment(cluster)
        ))
    }

    /// One config version with its content; `None` is the current one
    /// (`GET /v1/clusters/{cluster}/config/versions/{version}`).
    pub fn config_version(
        &self,
        cluster: &str,
        version: Option<u64>,
    ) -> Result<crate::api::ConfigContent, ClientError> {
        let version = version.map_or_else(|| "current".to_owned(), |v| v.to_string());
        self.get_json(&format!(
            "/v1/clusters/{}/config/versions/{version}",
            segment(cluster)
        ))
    }

    /// Makes the content of version `to` current again
    /// (`POST /v1/clusters/{cluster}/config/rollback`), replacing version `expect` or
    /// nothing if given.
    pub fn rollback(
        &self,
        cluster: &str,
        to: u64,
        expect: Option<u64>,
    ) -> Result<crate::api::RolledBack, ClientError> {
        let url = self.url(&format!(
            "/v1/clusters/{}/config/rollback",
            segment(cluster)
        ));
        let body = crate::api::RollbackRequest { to };
        let answer = Self::expecting(self.request(self.agent.post(&url)), expect).send_json(&body);
        self.json_answer("POST", url, answer)
    }

    /// Deletes a proxy (`DELETE /v1/clusters/{cluster}/proxies/{proxy}`).
    /// A proxy that is alive (`up`, `ready`) is removed only if `force`.
    pub fn remove(&self, cluster: &str, proxy: &str, force: bool) -> Result<Removed, ClientError> {
        let url = self.url(&format!(
            "/v1/clusters/{}/proxies/{}{}",
            segment(cluster),
            segment(proxy),
            if force { "?force=true" } else { "" }
        ));
        let answer = self.request(self.agent.delete(&url)).call();
        self.json_answer("DELETE", url, answer)
    }

    /// Stores `config` as the cluster's next config version
    /// (`PUT /v1/clusters/{cluster}/config`), as `terms` say: replacing version
    /// `expect` or nothing if given (`If-Match`), creating the cluster only if `create`.
    pub fn push_config(
        &self,
        cluster: &str,
        config: &[u8],
        terms: crate::driver::keeper::PushTerms,
    ) -> Result<Pushed, ClientError> {
        let mut path = format!("/v1/clusters/{}/config", segment(cluster));
        if terms.create {
            path.push_str("?create=true");
        }
        let url = self.url(&path);
        let answer = Self::expecting(self.request(self.agent.put(&url)), terms.expect)
            .header("content-type", "application/octet-stream")
            .send(config);
        self.json_answer("PUT", url, answer)
    }

    /// Switches a hostgroup's datasource from `from` to `to`
    /// (`POST /v1/clusters/{cluster}/switch`), replacing version `expect` or nothing if
    /// given.
    pub fn switch(
        &self,
        cluster: &str,
        hostgroup: &str,
        from: &str,
        to: &str,
        expect: Option<u64>,
    ) -> Result<Switched, ClientError> {
        let url = self.url(&format!("/v1/clusters/{}/switch", segment(cluster)));
        let body = SwitchRequest {
            hostgroup: hostgroup.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
        };
        let answer = Self::expecting(self.request(self.agent.post(&url)), expect).send_json(&body);
        self.json_answer("POST", url, answer)
    }

    /// The hostgroups a cluster declares (`GET /v1/clusters/{cluster}/hostgroups`).
    pub fn hostgroups(&self, cluster: &str) -> Result<Vec<crate::api::HostgroupView>, ClientError> {
        self.get_json(&format!("/v1/clusters/{}/hostgroups", segment(cluster)))
    }

    /// Declares a hostgroup (`PUT /v1/clusters/{cluster}/hostgroups/{hostgroup}`).
    pub fn set_hostgroup(
        &self,
        cluster: &str,
        hostgroup: &str,
        body: &crate::api::HostgroupRequest,
    ) -> Result<crate::api::HostgroupView, ClientError> {
        let url = self.url(&format!(
            "/v1/clusters/{}/hostgroups/{}",
            segment(cluster),
            segment(hostgroup)
        ));
        let answer = self.request(self.agent.put(&url)).send_json(body);
        self.json_answer("PUT", url, answer)
    }

    /// Undeclares a hostgroup (`DELETE /v1/clusters/{cluster}/hostgroups/{hostgroup}`).
    pub fn delete_hostgroup(
        &self,
        cluster: &str,
        hostgroup: &str,
    ) -> Result<crate::api::HostgroupDeleted, ClientError> {
        let url = self.url(&format!(
            "/v1/clusters/{}/hostgroups/{}",
            segment(cluster),
            segment(hostgroup)
        ));
        let answer = self.request(self.agent.delete(&url)).call();
        self.json_answer("DELETE", url, answer)
    }

    /// Freezes or unfreezes a cluster (`POST /v1/clusters/{cluster}/freeze`, `…/unfreeze`).
    pub fn set_frozen(
        &self,
        cluster: &str,
        frozen: bool,
    ) -> Result<crate::api::ClusterChanged, ClientError> {
        let verb = if frozen { "freeze" } else { "unfreeze" };
        let url = self.url(&format!("/v1/clusters/{}/{verb}", segment(cluster)));
        let answer = self.request(self.agent.post(&url)).send_empty();
        self.json_answer("POST", url, answer)
    }

    /// Deletes an empty cluster (`DELETE /v1/clusters/{cluster}`).
    pub fn delete_cluster(&self, cluster: &str) -> Result<crate::api::ClusterChanged, ClientError> {
        let url = self.url(&format!("/v1/clusters/{}", segment(cluster)));
        let answer = self.request(self.agent.delete(&url)).call();
        self.json_answer("DELETE", url, answer)
    }

    /// Makes the keeper re-read its key files, tokens and certificate
    /// (`POST /v1/reload`).
    pub fn reload(&self) -> Result<crate::api::Reloaded, ClientError> {
        let url = self.url("/v1/reload");
        let answer = self.request(self.agent.post(&url)).send_empty();
        self.json_answer("POST", url, answer)
    }

    /// Opens `GET /v1/watch` (only `cluster`'s events, if given), resuming after
    /// `last_event_id` (`GENERATION-REVISION`) if given, else with only changes to come.
    /// The stream has no overall time limit; it fails if nothing, not even a keep-alive,
    /// arrives for 45 s. A position the keeper no longer holds is a
    /// [`ClientError::Problem`] with exit [`Exit::Gone`].
    pub fn watch(
        &self,
        cluster: Option<&str>,
        last_event_id: Option<&str>,
    ) -> Result<EventStream, ClientError> {
        let mut url = self.url("/v1/watch");
        if let Some(c) = cluster {
            url = format!("{url}?cluster={}", component(c));
        }
        let mut request = self
            .request(self.agent.get(&url))
            .header("accept", "text/event-stream")
            .config()
            .timeout_global(None)
            .timeout_per_read(Some(WATCH_IDLE_TIMEOUT))
            .build();
        if let Some(id) = last_event_id.filter(|id| !id.is_empty()) {
            request = request.header("last-event-id", id);
        }
        let response = request.call().map_err(|e| self.transport("GET", &url, e))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(self.error_answer("GET", url, response));
        }
        let mime = response.body().mime_type().unwrap_or("");
        if !mime.eq_ignore_ascii_case("text/event-stream") {
            return Err(ClientError::Unexpected {
                method: "GET",
                url,
                detail: format!("expected text/event-stream, got {:?}", mime),
            });
        }
        let body = response.into_body().into_reader();
        Ok(EventStream {
            url,
            body: Box::new(body),
            parser: SseParser::new(),
            ready: VecDeque::new(),
            received: 0,
            done: false,
        })
    }

    /// Downloads a snapshot of the keeper's store (`GET /v1/snapshot`) into `out`, and
    /// says what the keeper said it sent. The request has no overall time limit (a large
    /// store takes a while); it fails if the keeper sends nothing for the client's
    /// timeout, or sends fewer bytes than it announced.
    pub fn snapshot(&self, out: &mut dyn io::Write) -> Result<SnapshotSent, ClientError> {
        let url = self.url("/v1/snapshot");
        let response = self
            .request(self.agent.get(&url))
            .header("accept", "application/vnd.zerokeeper.snapshot")
            .config()
            .timeout_global(None)
            .timeout_per_read(Some(self.timeout))
            .build()
            .call()
            .map_err(|e| self.transport("GET", &url, e))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(self.error_answer("GET", url, response));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let (Some(bytes), Some(generation), Some(revision)) = (
            header("content-length"),
            header("zerokeeper-generation"),
            header("zerokeeper-revision"),
        ) else {
            return Err(ClientError::Unexpected {
                method: "GET",
                url,
                detail: "a snapshot without its Content-Length, Zerokeeper-Generation and \
                         Zerokeeper-Revision headers (is --http a zerokeeper keeper?)"
                    .to_owned(),
            });
        };
        let mut body = response.into_body().into_reader();
        let copied = io::copy(&mut body, out).map_err(|e| ClientError::Transport {
            method: "GET",
            url: url.clone(),
            reason: format!("the snapshot stopped after some bytes: {e}"),
        })?;
        if copied != bytes {
            return Err(ClientError::Transport {
                method: "GET",
                url,
                reason: format!("the snapshot ended after {copied} of its {bytes} bytes"),
            });
        }
        Ok(SnapshotSent {
            bytes,
            generation,
            revision,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.url(path);
        let answer = self.request(self.agent.get(&url)).call();
        self.json_answer("GET", url, answer)
    }

    fn json_answer<T: DeserializeOwned>(
        &self,
        method: &'static str,
        url: String,
        answer: Result<Response<Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let body = self.success_body(method, &url, answer)?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Unexpected {
            method,
            url,
            detail: format!("not the JSON the API promises: {e}"),
        })
    }

    /// The body of a 2xx answer, or the error the answer (or its absence) means.
    fn success_body(
        &self,
        method: &'static str,
        url: &str,
        answer: Result<Response<Body>, ureq::Error>,
    ) -> Result<Vec<u8>, ClientError> {
        let mut response = answer.map_err(|e| self.transport(method, url, e))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(self.error_answer(method, url.to_owned(), response));
        }
        response
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_vec()
            .map_err(|e| self.transport(method, url, e))
    }

    fn error_answer(
        &self,
        method: &'static str,
        url: String,
        mut response: Response<Body>,
    ) -> ClientError {
        let status = response.status().as_u16();
        if (300..400).contains(&status) {
            let to = response
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .unwrap_or("nowhere")
                .to_owned();
            return ClientError::Unexpected {
                method,
                url,
                detail: format!(
                    "HTTP {status} redirect to {to} (is --http the keeper's admin address?)"
                ),
            };
        }
        // An unreadable body still leaves the status, which decides the exit code.
        let body = response
            .body_mut()
            .with_config()
            .limit(PROBLEM_LIMIT)
            .read_to_vec()
            .unwrap_or_default();
        ClientError::Problem {
            method,
            url,
            problem: Box::new(Problem::parse(status, &body)),
        }
    }

    fn transport(&self, method: &'static str, url: &str, error: ureq::Error) -> ClientError {
        let (mut reason, before_sending) = describe(&error);
        if let ureq::Error::Timeout(ureq::Timeout::Global) = error {
            reason = format!(
                "no answer within {} (--timeout or ZEROKEEPER_TIMEOUT sets how long to wait)",
                humantime::format_duration(self.timeout)
            );
        }
        if before_sending {
            ClientError::Unreachable {
                base: self.base.clone(),
                reason,
            }
        } else {
            ClientError::Transport {
                method,
                url: url.to_owned(),
                reason,
            }
        }
    }
}

/// What a keeper said of the snapshot it sent ([`Client::snapshot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotSent {
    /// Its length.
    pub bytes: u64,
    /// The store's generation.
    pub generation: u64,
    /// The revision of the last change it holds.
    pub revision: u64,
}

/// Words for a ureq error, and whether it happened before anything was sent.
fn describe(error: &ureq::Error) -> (String, bool) {
    use ureq::Error as E;
    match error {
        E::Io(e) if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) => {
            (tls_words(tls), true)
        }
        E::Io(e) => {
            let words = match e.kind() {
                io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
                io::ErrorKind::ConnectionAborted => "connection aborted".to_owned(),
                io::ErrorKind::TimedOut => "timed out".to_owned(),
                io::ErrorKind::UnexpectedEof => {
                    "the connection closed before the answer was complete".to_owned()
                }
                io::ErrorKind::HostUnreachable => "host unreachable".to_owned(),
                io::ErrorKind::NetworkUnreachable => "network unreachable".to_owned(),
                io::ErrorKind::AddrNotAvailable => "address not available".to_owned(),
                _ => e.to_string(),
            };
            let before = matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::AddrNotAvailable
            );
            (words, before)
        }
        E::Timeout(t) => {
            let before = matches!(t, ureq::Timeout::Connect | ureq::Timeout::Resolve);
            (format!("timed out ({t})"), before)
        }
        E::HostNotFound => ("host not found".to_owned(), true),
        E::ConnectionFailed => ("connection failed".to_owned(), true),
        E::BadUri(uri) => (format!("not a usable URL: {uri}"), true),
        E::BodyExceedsLimit(n) => (format!("the answer is larger than {n} bytes"), false),
        // Nothing was sent before the handshake completed.
        E::Rustls(e) => (tls_words(e), true),
        other => (other.to_string(), false),
    }
}

/// Words for a failed TLS handshake, saying what to do.
fn tls_words(error: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match error {
        rustls::Error::InvalidCertificate(why) => {
            let what = match why {
                C::UnknownIssuer => "is signed by a CA this client does not trust",
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    "is not valid for this host name"
                }
                C::Expired | C::ExpiredContext { .. } => "has expired",
                _ => "is refused",
            };
            format!(
                "the keeper's TLS certificate {what} ({error}): give --cacert with the CA that signed it"
            )
        }
        rustls::Error::InvalidMessage(_) => {
            "the keeper did not answer in TLS: is its admin API plain http://?".to_owned()
        }
        other => format!("TLS: {other}"),
    }
}

/// A path segment, percent-encoded so identities like `[::1]:3000` and names with
/// reserved characters arrive whole.
fn segment(s: &str) -> String {
    encode(s, |b| b"!$&'()*+,;=:@".contains(&b))
}

/// A query component, percent-encoded.
fn component(s: &str) -> String {
    encode(s, |b| b"!$'()*,:@".contains(&b))
}

fn encode(s: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One event of a `text/event-stream`, as the HTML standard's parsing rules give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The last event ID when it was dispatched (set by this or an earlier `id:` field).
    pub id: Option<String>,
    /// The `event:` field; `message` if none.
    pub event: String,
    /// The `data:` fields, joined by `\n`.
    pub data: String,
}

/// The event stream broke a limit this client sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum SseError {
    /// A line, or an event's data, passed the limit (1 MiB).
    #[error("an event-stream line or event is longer than {0} bytes")]
    TooLong(usize),
}

/// An incremental `text/event-stream` parser: feed it bytes as they come, in any pieces,
/// and it hands back complete events.
///
/// Lines end in `\n`, `\r\n` or `\r`; lines starting with `:` are comments (keep-alives);
/// `data:` lines accumulate; an empty line dispatches the event (if it has data); `id:`
/// sets the last event ID, which persists across events; `retry:` and unknown fields are
/// ignored; one space after the colon is dropped. A partial event at the end of the stream
/// is never dispatched.
#[derive(Clone, Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    after_cr: bool,
    started: bool,
    data: String,
    has_data: bool,
    event: String,
    last_id: Option<String>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Takes the next piece of the stream; returns the events it completes.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut events = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let raw = std::mem::take(&mut self.line);
                    let mut text = String::from_utf8_lossy(&raw).into_owned();
                    if !self.started {
                        self.started = true;
                        if let Some(rest) = text.strip_prefix('\u{feff}') {
                            text = rest.to_owned();
                        }
                    }
                    if let Some(event) = self.line(&text)? {
                        events.push(event);
                    }
                }
                _ => {
                    if self.line.len() >= SSE_LIMIT {
                        return Err(SseError::TooLong(SSE_LIMIT));
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(events)
    }

    /// Takes one line, without its line ending; returns the event it completes, if any.
    pub fn line(&mut self, line: &str) -> Result<Option<SseEvent>, SseError> {
        self.started = true;
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.data.len() + value.len() + 1 > SSE_LIMIT {
                    return Err(SseError::TooLong(SSE_LIMIT));
                }
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "event" => self.event = value.to_owned(),
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            _ => {}
        }
        Ok(None)
    }

    /// The last event ID seen so far (what a reconnection sends as `Last-Event-ID`).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let mut data = std::mem::take(&mut self.data);
        let event = std::mem::take(&mut self.event);
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        if data.ends_with('\n') {
            data.pop();
        }
        Some(SseEvent {
            id: self.last_id.clone(),
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
        })
    }
}

/// An open `/v1/watch` stream.
pub struct EventStream {
    url: String,
    body: Box<dyn io::Read + Send>,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
    received: u64,
    done: bool,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("url", &self.url)
            .field("received", &self.received)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// The next event; `Ok(None)` once the keeper has ended the stream. Blocks until an
    /// event arrives (keep-alive comments are read and skipped).
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, ClientError> {
        let mut buf = [0u8; 8192];
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            if self.done {
                return Ok(None);
            }
            let n = match self.body.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.done = true;
                    let (reason, _) = describe(&ureq::Error::from(e));
                    return Err(ClientError::Transport {
                        method: "GET",
                        url: self.url.clone(),
                        reason,
                    });
                }
            };
            if n == 0 {
                self.done = true;
                continue;
            }
            self.received += n as u64;
            let events = self.parser.feed(&buf[..n]).map_err(|e| {
                self.done = true;
                ClientError::Unexpected {
                    method: "GET",
                    url: self.url.clone(),
                    detail: e.to_string(),
                }
            })?;
            self.ready.extend(events);
        }
    }

    /// The stream's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Bytes received so far (keep-alives included): a stream that received none did not
    /// really work.
    pub fn bytes_received(&self) -> u64 {
        self.received
    }
}
