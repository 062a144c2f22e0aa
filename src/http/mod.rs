//! The admin API over HTTP, version 1.
//!
//! [`router`] builds an axum [`Router`] around a [`KeeperHandle`], the [`ChangeHub`] and
//! a [`View`]; [`serve`] runs it on a listener until a shutdown future completes, with
//! limits on connections, watchers, time and requests, and a deadline on shutdown
//! ([`ServeLimits`], `server.rs`; a connection's IO in `io.rs`, hyper's own refusals made
//! problems in `parse_errors.rs`, the body-read timeout in `body.rs`). The handlers know
//! nothing of the listener, so the same router runs on tokio's `TcpListener` in
//! production and on a simulated one under turmoil.
//!
//! Reads never run on the keeper core's task: listings, clusters, gates, configs and keys
//! come from the read [`View`] (an informer-style cache following the hub), each listing
//! with the (generation, revision) it reflects; the watch streams the hub. Changes
//! (remove, push, switch) are one call to the keeper task each (checked and done there
//! atomically, in order with the heartbeats), answered with the revision of the change
//! once the view reflects it. Every refusal is an RFC 9457 problem (see `problem.rs`):
//! the router's own refusals (no such route, wrong method, body too large, body not the
//! expected JSON) too, never axum's plain-text defaults, and hyper's answers to requests
//! it cannot parse. Bodies are the types of
//! [`crate::api`].
//!
//! | method & path | answer |
//! |---|---|
//! | `GET /`, `GET /v1` | the index: release, documents, every operation |
//! | `GET /v1/openapi.json` | the OpenAPI document (`index.rs`) |
//! | `GET /livez`, `GET /readyz` | `ok` |
//! | `GET /v1/health` | `ok`, or 503 `mass-loss` naming the clusters |
//! | `GET /metrics` | OpenMetrics, or the classic text format |
//! | `GET /v1/clusters`, `GET /v1/clusters/{cluster}` | cluster views |
//! | `GET /v1/proxies`, `GET /v1/clusters/{cluster}/proxies[/{proxy}]` | proxy views |
//! | `DELETE /v1/clusters/{cluster}/proxies/{proxy}` | the status it had |
//! | `GET /v1/keys`, `GET /v1/clusters/{cluster}/keys` | the seed's status lines |
//! | `GET /v1/clusters/{cluster}/gate` | open, or the blockers |
//! | `GET /v1/clusters/{cluster}/rollout` | the current config's rollout: who runs it, who does not, who rejected it |
//! | `GET`/`PUT /v1/clusters/{cluster}/config` | the config version / push one |
//! | `GET /v1/clusters/{cluster}/config/history` | the stored versions, who made them |
//! | `GET /v1/clusters/{cluster}/config/versions/{version}` | one version, with its content |
//! | `POST /v1/clusters/{cluster}/config/rollback` | make an earlier version's content current |
//! | `POST /v1/clusters/{cluster}/switch` | switch a hostgroup's datasource |
//! | `DELETE /v1/clusters/{cluster}` | delete an empty cluster |
//! | `POST /v1/clusters/{cluster}/freeze`, `…/unfreeze` | pause (resume) deletions and restarts |
//! | `GET /v1/clusters/{cluster}/hostgroups` | the declared hostgroups |
//! | `PUT`/`DELETE /v1/clusters/{cluster}/hostgroups/{hostgroup}` | declare / undeclare one |
//! | `GET /v1/watch` | server-sent events: the committed changes |
//! | `GET /v1/store` | the store's generation and revision, the keeper's epoch |
//! | `GET /v1/snapshot` | a backup of the store, made while the keeper runs (`snapshot.rs`) |
//! | `GET /v1/version` | the keeper's version and the protocol versions it speaks |
//! | `GET /v1/audit` | the audit record: who did what, when, and the result |

mod access;
mod body;
pub mod index;
mod io;
mod metrics;
mod parse_errors;
mod problem;
mod server;
mod snapshot;
pub mod tls;
pub mod tokens;
pub mod view;
mod watch;

pub use access::Access;
pub use server::{
    LimitsError, MAX_HEADER_BYTES, MIN_HEADER_BYTES, ServeLimits, serve, serve_tls, serve_with,
};

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::api::{
    ClusterChanged, ClusterList, ClusterView, ConfigContent, ConfigHistory, ConfigVersionView,
    GateView, HostgroupDeleted, HostgroupRequest, HostgroupView, ProxyView, Pushed, Removed,
    RollbackRequest, RolledBack, StoreView, SwitchRequest, Switched,
};
use crate::configdoc::MAX_CONFIG_BYTES;
use crate::driver::keeper::KeeperHandle;
use crate::ha::{HaView, Role};
use crate::hub::ChangeHub;
use crate::store::{StoreRead, StoredConfig};
use access::Caller;
use problem::Problem;
use view::View;

/// Largest body `PUT /v1/clusters/{cluster}/config` reads: a config of
/// [`MAX_CONFIG_BYTES`] plus a margin. Bodies under it but too large once rendered are
/// refused by the core with the same `413 config-too-large`.
pub const MAX_CONFIG_BODY: usize = MAX_CONFIG_BYTES + 64 * 1024;
/// Largest JSON body of the other endpoints.
pub const MAX_JSON_BODY: usize = 64 * 1024;
/// How long a change's answer waits for the read view to reflect it. Past that the
/// answer is sent anyway (the change is made and durable); the view is late, and says so
/// in the log.
const SETTLE: Duration = Duration::from_secs(5);

/// What `POST /v1/reload` runs: re-reads the keeper's keys, tokens and certificate
/// (see [`crate::reload`]). Called on tokio's blocking pool: it reads files.
pub trait Reload: Send + Sync + Debug {
    /// Reloads, all or nothing; `Err` says which file did not load.
    fn reload(&self) -> Result<crate::api::Reloaded, String>;
}

/// What every handler shares: the way to the keeper task, the change history and the
/// read view.
#[derive(Clone, Debug)]
struct Api {
    handle: KeeperHandle,
    hub: Arc<ChangeHub>,
    view: View,
    /// One whole listing built at a time (see [`off_the_runtime`]).
    listings: Arc<tokio::sync::Semaphore>,
    /// Where listings are built.
    mode: Listings,
    /// What this keeper is: a standby refuses changes, naming the leader.
    role: tokio::sync::watch::Receiver<Role>,
    /// How a keeper of several fares with etcd (`None`: a keeper alone).
    etcd: Option<Arc<crate::ha::EtcdHealth>>,
    /// What `POST /v1/reload` does (`None`: nothing reloads).
    reload: Option<Arc<dyn Reload>>,
    /// The store's config versions, read beside its commits (`None`: a keeper without a
    /// store keeps no history).
    store: Option<Arc<dyn StoreRead>>,
}

impl Api {
    /// `not-leader` unless this keeper may act (it leads, or is the only one).
    fn refusal(&self) -> Option<Problem> {
        match &*self.role.borrow() {
            Role::Standby(leader) => Some(Problem::not_leader(leader.as_ref())),
            Role::Single | Role::Leader(_) => None,
        }
    }
}

/// Where the admin API builds its large listings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Listings {
    /// On tokio's blocking pool, one at a time, so the runtime's workers stay free for
    /// the keeper's driver (the default).
    #[default]
    OffRuntime,
    /// On the handler's task: for simulations, where a thread of the blocking pool would
    /// make runs depend on the host's scheduling.
    Inline,
}

/// Builds and encodes a listing on tokio's blocking pool, one at a time.
///
/// A listing of 100,000 proxies is a 29 MB document that takes most of a second of CPU
/// to build. Built on the runtime's worker threads, a few operators polling it at once
/// starved the keeper's own task of a 2-core machine (its socket overflowed and it
/// stalled). On the blocking pool the workers stay free for the keeper, and one listing
/// at a time keeps at least one core for it; the others wait their turn.
async fn off_the_runtime(
    api: &Api,
    content_type: &'static str,
    build: impl FnOnce(&View) -> Result<Vec<u8>, Box<Problem>> + Send + 'static,
) -> Result<Response, Problem> {
    let _turn = api
        .listings
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Problem::internal("the listing queue is closed"))?;
    let view = api.view.clone();
    let body = match api.mode {
        Listings::OffRuntime => tokio::task::spawn_blocking(move || build(&view))
            .await
            .map_err(|_| Problem::internal("building the listing failed"))?,
        Listings::Inline => build(&view),
    }
    .map_err(|problem| *problem)?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response())
}

fn json_bytes<T: serde::Serialize>(
    value: Result<T, view::ViewError>,
) -> Result<Vec<u8>, Box<Problem>> {
    let value = value.map_err(|e| Box::new(Problem::from(e)))?;
    serde_json::to_vec(&value)
        .map_err(|_| Box::new(Problem::internal("the listing could not be encoded")))
}

fn text_bytes(value: Result<String, view::ViewError>) -> Result<Vec<u8>, Box<Problem>> {
    value
        .map(String::into_bytes)
        .map_err(|e| Box::new(Problem::from(e)))
}

/// The admin API of the keeper behind `handle`: every endpoint of the contract, with
/// problem+json answers for unknown routes (404), wrong methods (405), bodies over the
/// limit (413) and bodies that are not the expected JSON (400).
///
/// Reads are answered from `view` (which must follow `hub`), the watch from `hub`;
/// changes go to the keeper through `handle` and are answered once `view` reflects them.
pub fn router(handle: KeeperHandle, hub: Arc<ChangeHub>, view: View) -> Router {
    router_with(handle, hub, view, Listings::OffRuntime)
}

/// [`router`], with its listings built as `mode` says.
pub fn router_with(
    handle: KeeperHandle,
    hub: Arc<ChangeHub>,
    view: View,
    mode: Listings,
) -> Router {
    router_for(
        handle,
        hub,
        view,
        mode,
        HaView::single(),
        Access::open(),
        None,
        None,
    )
}

/// [`router_with`], for a keeper whose role is `role` (one of several keepers): a
/// standby answers reads from `view` (the committed state) and refuses changes with
/// `503 not-leader`, naming the leader; who may call what is `access`'s (see
/// `access.rs`). The config history and rollback read the versions from `versions`.
#[allow(clippy::too_many_arguments)]
pub fn router_for(
    handle: KeeperHandle,
    hub: Arc<ChangeHub>,
    view: View,
    mode: Listings,
    ha: HaView,
    access: Access,
    reload: Option<Arc<dyn Reload>>,
    versions: Option<Arc<dyn StoreRead>>,
) -> Router {
    let role = ha.role.clone();
    Router::new()
        .route("/", get(index::index))
        .route("/v1", get(index::index))
        .route("/v1/openapi.json", get(index::openapi))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::scrape))
        .route("/v1/clusters", get(clusters))
        .route(
            "/v1/clusters/{cluster}",
            get(cluster).delete(delete_cluster),
        )
        .route("/v1/clusters/{cluster}/hostgroups", get(hostgroups))
        .route(
            "/v1/clusters/{cluster}/hostgroups/{hostgroup}",
            axum::routing::put(set_hostgroup).delete(delete_hostgroup),
        )
        .route("/v1/clusters/{cluster}/freeze", post(freeze))
        .route("/v1/clusters/{cluster}/unfreeze", post(unfreeze))
        .route("/v1/proxies", get(all_proxies))
        .route("/v1/clusters/{cluster}/proxies", get(cluster_proxies))
        .route(
            "/v1/clusters/{cluster}/proxies/{proxy}",
            get(proxy).delete(remove),
        )
        .route("/v1/keys", get(all_keys))
        .route("/v1/clusters/{cluster}/keys", get(cluster_keys))
        .route("/v1/clusters/{cluster}/gate", get(gate))
        .route("/v1/clusters/{cluster}/rollout", get(rollout))
        .route(
            "/v1/clusters/{cluster}/config",
            get(config).put(push_config),
        )
        .route("/v1/clusters/{cluster}/config/history", get(config_history))
        .route(
            "/v1/clusters/{cluster}/config/versions/{version}",
            get(config_version),
        )
        .route("/v1/clusters/{cluster}/config/rollback", post(rollback))
        .route("/v1/clusters/{cluster}/switch", post(switch))
        .route("/v1/watch", get(watch::watch))
        .route("/v1/store", get(store))
        .route("/v1/snapshot", get(snapshot::snapshot))
        .route("/v1/version", get(version))
        .route("/v1/health", get(health))
        .route("/v1/audit", get(audit))
        .route("/v1/reload", post(reload_files))
        // After the routes, as the fallbacks: each is set on the routes registered so
        // far. The guard runs after routing, so it sees the route and its parameters.
        .route_layer(axum::middleware::from_fn_with_state(access, access::guard))
        .route_layer(axum::middleware::from_fn(metrics::observe))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(Api {
            handle,
            hub,
            view,
            listings: Arc::new(tokio::sync::Semaphore::new(1)),
            mode,
            role: ha.role,
            etcd: ha.etcd,
            reload,
            store: versions,
        })
        // Every answer of a keeper of several says what the keeper is, so a client
        // reading a standby knows it reads the committed state, not the leader's memory.
        .layer(axum::middleware::map_response(
            move |mut response: Response| {
                let role = role.clone();
                async move {
                    let role = role.borrow();
                    if !matches!(*role, Role::Single) {
                        let headers = response.headers_mut();
                        headers.insert("zerokeeper-role", HeaderValue::from_static(role.as_str()));
                        if let Some(url) = role
                            .leadership()
                            .and_then(|l| HeaderValue::from_str(&l.leader.http).ok())
                        {
                            headers.insert("zerokeeper-leader", url);
                        }
                    }
                    response
                }
            },
        ))
}

/// A router that answers with whichever router `current` holds at each request: a
/// standby keeper serves its admin API on one listener for its whole life and swaps the
/// standby's router for the leader's when it is elected.
pub fn switchable(current: Arc<std::sync::RwLock<Router>>) -> Router {
    use tower::ServiceExt;
    Router::new().fallback_service(tower::service_fn(move |request: Request| {
        let router = current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        async move { router.oneshot(request).await }
    }))
}

/// A text answer: `text/plain; charset=utf-8`.
fn text(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// `GET /livez`: the process answers; the keeper is not asked.
async fn livez() -> Response {
    text("ok\n".to_owned())
}

/// `GET /readyz`: this keeper can serve. A standby serves reads of the committed state,
/// so it is ready; a keeper that acts is ready while its keeper task answers a call (an
/// empty one: nothing is read on its task).
///
/// A mass loss does not make a keeper unready: it is the moment an operator most needs
/// the admin API, so a load balancer must not take it out. It has its own signals:
/// `GET /v1/health` (503 `mass-loss`), `zerokeeper_deletion_paused`, the watch.
async fn readyz(State(api): State<Api>) -> Result<Response, Problem> {
    let standby = match &*api.role.borrow() {
        Role::Standby(leader) => Some(match leader {
            Some(l) => format!(
                "standby: serving reads of the committed state; {} leads (term {}) at {}\n",
                l.leader.id, l.term, l.leader.http
            ),
            None => "standby: serving reads of the committed state; no keeper leads right now\n"
                .to_owned(),
        }),
        Role::Single | Role::Leader(_) => None,
    };
    if let Some(text_) = standby {
        return Ok(text(text_));
    }
    api.handle.call(|_, _| ()).await?;
    Ok(text("ok\n".to_owned()))
}

/// `GET /v1/health`: the fleet as this keeper sees it. 200 `{"status": "ok"}` while no
/// cluster is in mass loss; 503 `mass-loss` naming the clusters while mass-loss
/// protection holds for some: so many of their proxies are lost at once that the
/// keeper's own network is the likely cause, and whatever depends on this keeper's view
/// of the fleet should know. Read from the view, so a standby answers it too.
async fn health(State(api): State<Api>) -> Result<Response, Problem> {
    let paused = api.view.paused_clusters()?;
    if paused.is_empty() {
        Ok(Json(serde_json::json!({"status": "ok"})).into_response())
    } else {
        Err(Problem::mass_loss(paused))
    }
}

/// `GET /v1/store`: the store's position and the keeper's epoch.
/// `GET /v1/version`: what this keeper is, for clients to compare with themselves.
async fn version() -> Json<crate::api::VersionView> {
    Json(crate::api::VersionView::this())
}

async fn store(State(api): State<Api>) -> Result<Json<StoreView>, Problem> {
    let role = api.role.borrow().clone();
    let (commits, epoch) = match role {
        // A standby has no keeper task: it reads what the leader committed.
        Role::Standby(_) => (0, 0),
        Role::Single | Role::Leader(_) => (
            api.handle.metrics().await?.counters.commits,
            api.handle.call(|k, _| k.epoch()).await?,
        ),
    };
    let (generation, revision) = api.hub.position();
    Ok(Json(StoreView {
        generation,
        revision,
        epoch,
        commits,
        role: role.as_str().to_owned(),
        leader: role.leadership().map(|l| crate::api::LeaderView {
            id: l.leader.id.clone(),
            http: l.leader.http.clone(),
            udp: l.leader.udp.clone(),
            term: l.term,
            since: crate::api::rfc3339_ms(l.since_unix_ms),
        }),
    }))
}

/// `POST /v1/reload`: re-reads the keys, tokens and certificate (all or nothing). A
/// standby reloads too: its keys are those it will lead with.
async fn reload_files(
    State(api): State<Api>,
    Extension(Caller(by)): Extension<Caller>,
) -> Result<Json<crate::api::Reloaded>, Problem> {
    let Some(reload) = api.reload.clone() else {
        return Err(Problem::reload_failed(
            "this keeper has no files to reload (it was not started by serve)",
        ));
    };
    tracing::info!(by = by.as_deref().unwrap_or("-"), "reload asked for");
    let done = tokio::task::spawn_blocking(move || reload.reload())
        .await
        .map_err(|_| Problem::internal("the reload failed"))?;
    done.map(Json).map_err(Problem::reload_failed)
}

/// Waits until the view reflects `revision`, for at most [`SETTLE`].
async fn settle(view: &View, revision: u64) {
    match tokio::time::timeout(SETTLE, view.wait_for(revision)).await {
        Ok(true) => {}
        Ok(false) => warn!(revision, "the read view stopped before reflecting a change"),
        Err(_) => warn!(revision, "the read view did not reflect a change in time"),
    }
}

/// `GET /v1/clusters`.
async fn clusters(State(api): State<Api>) -> Result<Json<ClusterList>, Problem> {
    Ok(Json(api.view.clusters()?))
}

/// `GET /v1/clusters/{cluster}`.
async fn cluster(
    State(api): State<Api>,
    Segments(cluster): Segments<String>,
) -> Result<Json<ClusterView>, Problem> {
    Ok(Json(api.view.cluster(&cluster)?))
}

/// `GET /v1/proxies`.
async fn all_proxies(State(api): State<Api>) -> Result<Response, Problem> {
    off_the_runtime(&api, JSON, |view| json_bytes(view.proxies(None))).await
}

/// `GET /v1/clusters/{cluster}/proxies`.
async fn cluster_proxies(
    State(api): State<Api>,
    Segments(cluster): Segments<String>,
) -> Result<Response, Problem> {
    off_the_runtime(&api, JSON, move |view| {
        json_bytes(view.proxies(Some(&cluster)))
    })
    .await
}

/// How many entries `GET /v1/audit` answers with unless `limit` says otherwise.
pub const AUDIT_LIMIT: usize = 100;

/// `GET /v1/audit`'s query.
#[derive(serde::Deserialize)]
struct AuditParams {
    /// Only this cluster's entries.
    cluster: Option<String>,
    /// Only this admin token's entries.
    by: Option<String>,
    /// Only this action's entries.
    action: Option<String>,
    /// At most this many, the newest (default [`AUDIT_LIMIT`], at most
    /// [`view::audit::MAX_LIMIT`]).
    limit: Option<usize>,
}

/// A listing's `limit` query parameter: `given`, or `default` without one; `400` unless
/// from 1 to `max`.
fn limit_of(given: Option<usize>, default: usize, max: usize) -> Result<usize, Box<Problem>> {
    let limit = given.unwrap_or(default);
    if limit == 0 || limit > max {
        return Err(Box::new(Problem::invalid_parameter(format!(
            "limit must be from 1 to {max}, not {limit}"
        ))));
    }
    Ok(limit)
}

/// `GET /v1/audit[?cluster=C][&by=NAME][&limit=N]`: the audit record, oldest first.
async fn audit(
    State(api): State<Api>,
    params: Result<axum::extract::Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let axum::extract::Query(params) =
        params.map_err(|e| Problem::invalid_parameter(e.body_text()))?;
    let limit = limit_of(params.limit, AUDIT_LIMIT, view::audit::MAX_LIMIT).map_err(|e| *e)?;
    let query = view::AuditQuery {
        cluster: params.cluster,
        by: params.by,
        action: params.action,
        limit,
    };
    off_the_runtime(&api, JSON, move |view| json_bytes(view.audit(&query))).await
}

/// `GET /v1/clusters/{cluster}/proxies/{proxy}`.
async fn proxy(
    State(api): State<Api>,
    Segments((cluster, proxy)): Segments<(String, String)>,
) -> Result<Json<ProxyView>, Problem> {
    Ok(Json(api.view.proxy(&cluster, &proxy)?))
}

/// `DELETE …/proxies/{proxy}`'s query.
#[derive(serde::Deserialize)]
struct RemoveParams {
    /// Remove it even if it is alive (`up`, `ready`).
    #[serde(default)]
    force: bool,
}

/// `DELETE /v1/clusters/{cluster}/proxies/{proxy}[?force=true]`.
async fn remove(
    State(api): State<Api>,
    Extension(Caller(by)): Extension<Caller>,
    Segments((cluster, proxy)): Segments<(String, String)>,
    params: Result<axum::extract::Query<RemoveParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Removed>, Problem> {
    if let Some(refused) = api.refusal() {
        return Err(refused);
    }
    let axum::extract::Query(params) =
        params.map_err(|e| Problem::invalid_parameter(e.body_text()))?;
    let applied = api
        .handle
        .remove_by(by, params.force, cluster.clone(), proxy.clone())
        .await?;
    settle(&api.view, applied.revision).await;
    Ok(Json(Removed {
        cluster,
        proxy,
        status: applied.value.as_str().to_owned(),
        revision: applied.revision,
    }))
}

/// `GET /v1/keys`.
async fn all_keys(State(api): State<Api>) -> Result<Response, Problem> {
    off_the_runtime(&api, TEXT, |view| text_bytes(view.keys(None))).await
}

/// `GET /v1/clusters/{cluster}/keys`.
async fn cluster_keys(
    State(api): State<Api>,
    Segments(cluster): Segments<String>,
) -> Result<Response, Problem> {
    off_the_runtime(&api, TEXT, move |view| {
        text_bytes(view.keys(Some(&cluster)))
    })
    .await
}

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// `GET /v1/clusters/{cluster}/gate`.
async fn gate(
    State(api): State<Api>,
    Segments(cluster): Segments<String>,
) -> Result<Json<GateView>, Problem> {
    Ok(Json(api.view.gate(&cluster)?))
}

/// `GET /v1/clusters/{cluster}/rollout`.
async fn rollout(
    State(api): State<Api>,
    Segments(cluster): Segments<String>,
) -> Result<Json<crate::api::RolloutView>, Problem> {
    Ok(Json(api.view.rollout(&cluster)?))
}

/// `GET /v1/clusters/{cluster}/config`.
async fn config(
    State(api): State<Api>,
    Segments(cluster): Segments<String>,
) -> Result<Response, Problem> {
    let config = api.view.config(&cluster)?;
    // The version as an entity tag: what `If-Match` on a change names to replace it.
    let etag = HeaderValue::from_str(&format!("\"{}\"", config.version))
        .map_err(|_| Problem::internal("a version is not a header value"))?;
    let mut response = Json(config).into_response();
    response.headers_mut().insert(header::ETAG, etag);
    Ok(response)
}

/// The config version a change expects to replace: `If-Match: "N"` (the `ETag` that
/// `GET …/config` sends; `N` unquoted too), `None` without the header or with `*`.
fn expected_version(headers: &axum::http::HeaderMap) -> Result<Option<u64>, Box<Problem>> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    let bare = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    bare.parse::<u64>().map(Some).map_err(|_| {
        Box::new(Problem::invalid_parameter(format!(
            "If-Match must be the config version the change replaces, as the ETag of GET …/config gives it (\"7\"), not {text:?}"
        )))
    })
}

/// `PUT …/config`'s query.
#[derive(serde::Deserialize)]
struct PushParams {
    /// Create the cluster if it does not exist (refused otherwise: a typo would make a
    /// cluster no proxy runs).
    #[serde(default)]
    create: bool,
}

/// `PUT /v1/clusters/{cluster}/config[?create=true]`: the body, byte for byte, is the
/// config file; `If-Match: "N"` makes it replace version N or nothing.
async fn push_config(
    State(api): State<Api>,
    Extension(Caller(by)): Extension<Caller>,
    Segments(cluster): Segments<String>,
    params: Result<axum::extract::Query<PushParams>, axum::extract::rejection::QueryRejection>,
    headers: axum::http::HeaderMap,
    Limited(body): Limited<MAX_CONFIG_BODY>,
) -> Result<Json<Pushed>, Problem> {
    if let Some(refused) = api.refusal() {
        return Err(refused);
    }
    let axum::extract::Query(params) =
        params.map_err(|e| Problem::invalid_parameter(e.body_text()))?;
    let terms = crate::driver::keeper::PushTerms {
        expect: expected_version(&headers).map_err(|e| *e)?,
        create: params.create,
    };
    let applied = api
        .handle
        .push_config_by(by, terms, cluster.clone(), Arc::from(body.as_ref()))
        .await?;
    settle(&api.view, applied.revision).await;
    Ok(Json(Pushed {
        cluster,
        version: applied.value.version,
        revision: applied.revision,
        changed: applied.value.changed,
    }))
}

/// How many versions `…/config/history` lists unless `limit` says otherwise.
pub const HISTORY_LIMIT: usize = 20;
/// Most versions one history answer lists.
pub const MAX_HISTORY_LIMIT: usize = 1_000;

/// `…/config/history`'s query.
#[derive(serde::Deserialize)]
struct HistoryParams {
    /// At most this many, the newest.
    limit: Option<usize>,
}

/// Why a keeper without a store answers no history.
fn no_history() -> Problem {
    Problem::internal("this keeper has no store, so it keeps no config history")
}

/// Runs a read of the store on tokio's blocking pool.
async fn read_store<T: Send + 'static>(
    store: Arc<dyn StoreRead>,
    read: impl FnOnce(&dyn StoreRead) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, Problem> {
    tokio::task::spawn_blocking(move || read(store.as_ref()))
        .await
        .map_err(|_| Problem::internal("the store read panicked"))?
        .map_err(|e| Problem::internal(format!("cannot read the store: {e}")))
}

/// The history's entry of a stored version.
fn version_view(
    stored: &StoredConfig,
    current: u64,
    made: Option<&view::audit::Made>,
) -> Result<ConfigVersionView, Box<Problem>> {
    let rendered = crate::configdoc::ConfigVersion::render(
        stored.version,
        Arc::from(stored.base.as_slice()),
        stored.datasources.clone(),
    )
    .map_err(|e| {
        Box::new(Problem::internal(format!(
            "a stored version cannot be shown: {e}"
        )))
    })?;
    Ok(ConfigVersionView {
        version: stored.version,
        id: stored.id.unwrap_or(rendered.id).to_string(),
        digest: crate::api::hex(&rendered.digest),
        size: rendered.bytes.len() as u64,
        base_size: stored.base.len() as u64,
        datasources: stored.datasources.clone(),
        current: stored.version == current,
        made_by: made.map(|m| m.action.clone()),
        at: made.map(|m| crate::api::rfc3339_ms(m.at_unix_ms)),
        by: made.and_then(|m| m.by.clone()),
    })
}

/// `GET /v1/clusters/{cluster}/config/history[?limit=N]`: the newest stored versions,
/// oldest first, each with who made it (from the audit record).
async fn config_history(
    State(api): State<Api>,
    Segments(cluster): Segments<String>,
    params: Result<axum::extract::Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ConfigHistory>, Problem> {
    let axum::extract::Query(params) =
        params.map_err(|e| Problem::invalid_parameter(e.body_text()))?;
    let limit = limit_of(params.limit, HISTORY_LIMIT, MAX_HISTORY_LIMIT).map_err(|e| *e)?;
    let current = api.view.config(&cluster)?.version;
    let store = api.store.clone().ok_or_else(no_history)?;
    let name = cluster.clone();
    let stored = read_store(store, move |s| s.config_versions(&name, limit)).await?;
    let made = api.view.versions_made(&cluster);
    let versions = stored
        .iter()
        .map(|c| version_view(c, current, made.get(&c.version)))
        .collect::<Result<_, _>>()
        .map_err(|e| *e)?;
    Ok(Json(ConfigHistory {
        cluster,
        current,
        versions,
    }))
}

/// `GET /v1/clusters/{cluster}/config/versions/{version}` (`current` or a number): the
/// version with the operator's file.
async fn config_version(
    State(api): State<Api>,
    Segments((cluster, version)): Segments<(String, String)>,
) -> Result<Json<ConfigContent>, Problem> {
    use base64::Engine as _;
    let current = api.view.config(&cluster)?.version;
    let version = match version.as_str() {
        "current" => current,
        number => number.parse::<u64>().map_err(|_| {
            Problem::invalid_parameter(format!(
                "{number:?} is not a config version (a number, or \"current\")"
            ))
        })?,
    };
    let store = api.store.clone().ok_or_else(no_history)?;
    let name = cluster.clone();
    let stored = read_store(store, move |s| s.config_version(&name, version))
        .await?
        .ok_or_else(|| unknown_version(&cluster, version, current))?;
    let made = api.view.versions_made(&cluster);
    let meta = version_view(&stored, current, made.get(&version)).map_err(|e| *e)?;
    Ok(Json(ConfigContent {
        cluster,
        meta,
        content_base64: base64::engine::general_purpose::STANDARD.encode(&stored.base),
    }))
}

fn unknown_version(cluster: &str, version: u64, current: u64) -> Problem {
    let detail = if version == 1 {
        format!(
            "cluster {cluster} does not store version 1: it is the empty initial config every cluster starts with (current version {current})"
        )
    } else {
        format!(
            "cluster {cluster} has no stored config version {version} (current version {current})"
        )
    };
    Problem::unknown_version(cluster, detail)
}

/// `POST /v1/clusters/{cluster}/config/rollback` (`{"to": VERSION}`): makes the content
/// of an earlier version current again, as a new version (gated, as a push is).
async fn rollback(
    State(api): State<Api>,
    Extension(Caller(by)): Extension<Caller>,
    Segments(cluster): Segments<String>,
    headers: axum::http::HeaderMap,
    JsonBody(request): JsonBody<RollbackRequest>,
) -> Result<Json<RolledBack>, Problem> {
    if let Some(refused) = api.refusal() {
        return Err(refused);
    }
    let expect = expected_version(&headers).map_err(|e| *e)?;
    let to = request.to;
    // The cluster first, as the core checks it: an unknown one is 404 whatever else.
    api.view.config(&cluster)?;
    let store = api.store.clone().ok_or_else(no_history)?;
    let name = cluster.clone();
    let stored = read_store(store, move |s| s.config_version(&name, to)).await?;
    // A version the store does not hold is refused by the core, which records it.
    let applied = api
        .handle
        .rollback_by(
            by,
            expect,
            cluster.clone(),
            to,
            stored.map(|c| (Arc::from(c.base), c.datasources)),
        )
        .await?;
    settle(&api.view, applied.revision).await;
    Ok(Json(RolledBack {
        cluster,
        version: applied.value.version,
        restored: to,
        revision: applied.revision,
        changed: applied.value.changed,
    }))
}

/// `POST /v1/clusters/{cluster}/switch`.
async fn switch(
    State(api): State<Api>,
    Extension(Caller(by)): Extension<Caller>,
    Segments(cluster): Segments<String>,
    headers: axum::http::HeaderMap,
    JsonBody(request): JsonBody<SwitchRequest>,
) -> Result<Json<Switched>, Problem> {
    if let Some(refused) = api.refusal() {
        return Err(refused);
    }
    let expect = expected_version(&headers).map_err(|e| *e)?;
    let SwitchRequest {
        hostgroup,
        from,
        to,
    } = request;
    let applied = api
        .handle
        .switch_datasource_by(
            by,
            expect,
            cluster.clone(),
            hostgroup.clone(),
            from.clone(),
            to.clone(),
        )
        .await?;
    settle(&api.view, applied.revision).await;
    Ok(Json(Switched {
        cluster,
        version: applied.value,
        hostgroup,
        from,
        to,
        revision: applied.revision,
    }))
}

fn hostgroup_view(h: crate::keeper::HostgroupInfo, changed: Option<bool>) -> HostgroupView {
    HostgroupView {
        hostgroup: h.hostgroup,
        datasources: h.datasources,
        current: h.current,
        declared: match h.declared {
            crate::keeper::Declared::Api => "api",
            crate::keeper::Declared::File => "file",
        }
        .to_owned(),
        changed,
    }
}

/// `GET /v1/clusters/{cluster}/hostgroups`.
async fn hostgroups(
    State(api): State<Api>,
    Segments(cluster): Segments<String>,
) -> Result<Json<Vec<HostgroupView>>, Problem> {
    if let Some(refused) = api.refusal() {
        return Err(refused);
    }
    let list = api.handle.hostgroups(cluster).await?;
    Ok(Json(
        list.into_iter().map(|h| hostgroup_view(h, None)).collect(),
    ))
}

/// `PUT /v1/clusters/{cluster}/hostgroups/{hostgroup}`.
async fn set_hostgroup(
    State(api): State<Api>,
    Extension(Caller(by)): Extension<Caller>,
    Segments((cluster, hostgroup)): Segments<(String, String)>,
    JsonBody(request): JsonBody<HostgroupRequest>,
) -> Result<Json<HostgroupView>, Problem> {
    if let Some(refused) = api.refusal() {
        return Err(refused);
    }
    let applied = api
        .handle
        .set_hostgroup_by(by, cluster, hostgroup, request.datasources, request.current)
        .await?;
    settle(&api.view, applied.revision).await;
    let (info, changed) = applied.value;
    Ok(Json(hostgroup_view(info, Some(changed))))
}

/// `DELETE /v1/clusters/{cluster}/hostgroups/{hostgroup}`.
async fn delete_hostgroup(
    State(api): State<Api>,
    Extension(Caller(by)): Extension<Caller>,
    Segments((cluster, hostgroup)): Segments<(String, String)>,
) -> Result<Json<HostgroupDeleted>, Problem> {
    if let Some(refused) = api.refusal() {
        return Err(refused);
    }
    let applied = api
        .handle
        .delete_hostgroup_by(by, cluster.clone(), hostgroup.clone())
        .await?;
    settle(&api.view, applied.revision).await;
    Ok(Json(HostgroupDeleted {
        cluster,
        hostgroup,
        revision: applied.revision,
    }))
}

/// `POST /v1/clusters/{cluster}/freeze`.
async fn freeze(
    State(api): State<Api>,
    Extension(Caller(by)): Extension<Caller>,
    Segments(cluster): Segments<String>,
) -> Result<Json<ClusterChanged>, Problem> {
    set_frozen(api, by, cluster, true).await
}

/// `POST /v1/clusters/{cluster}/unfreeze`.
async fn unfreeze(
    State(api): State<Api>,
    Extension(Caller(by)): Extension<Caller>,
    Segments(cluster): Segments<String>,
) -> Result<Json<ClusterChanged>, Problem> {
    set_frozen(api, by, cluster, false).await
}

async fn set_frozen(
    api: Api,
    by: Option<Arc<str>>,
    cluster: String,
    frozen: bool,
) -> Result<Json<ClusterChanged>, Problem> {
    if let Some(refused) = api.refusal() {
        return Err(refused);
    }
    let applied = api
        .handle
        .set_frozen_by(by, cluster.clone(), frozen)
        .await?;
    settle(&api.view, applied.revision).await;
    Ok(Json(ClusterChanged {
        cluster,
        frozen,
        deleted: false,
        changed: applied.value,
        revision: applied.revision,
    }))
}

/// `DELETE /v1/clusters/{cluster}`.
async fn delete_cluster(
    State(api): State<Api>,
    Extension(Caller(by)): Extension<Caller>,
    Segments(cluster): Segments<String>,
) -> Result<Json<ClusterChanged>, Problem> {
    if let Some(refused) = api.refusal() {
        return Err(refused);
    }
    let applied = api.handle.delete_cluster_by(by, cluster.clone()).await?;
    settle(&api.view, applied.revision).await;
    Ok(Json(ClusterChanged {
        cluster,
        frozen: false,
        deleted: true,
        changed: true,
        revision: applied.revision,
    }))
}

/// Any path no route has.
async fn not_found(uri: Uri) -> Problem {
    Problem::not_found(uri.path())
}

/// A route asked with a method it does not have (axum adds the `Allow` header).
async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    Problem::method_not_allowed(method.as_str(), uri.path())
}

/// Percent-decoded path segments. One that does not decode (not UTF-8) cannot be a valid
/// name, so the refusal is `400 invalid-name`, as for any other bad name.
struct Segments<T>(T);

impl<S, T> FromRequestParts<S> for Segments<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(segments)) => Ok(Segments(segments)),
            Err(e) => Err(Problem::invalid_name(e.body_text())),
        }
    }
}

/// The whole body, refused with `413` past `LIMIT` bytes.
///
/// A `Content-Length` over the limit is refused before anything is read; otherwise the
/// body is counted as it arrives rather than trusted from `Content-Length`, and read to
/// just past the limit. What the client still sends after the answer is read and
/// discarded by the server's lingering close (`io.rs`), so the client reads the `413`
/// instead of a reset connection. A body that makes no progress for the server's body
/// read timeout is `408 request-timeout`.
struct Limited<const LIMIT: usize>(Bytes);

impl<S, const LIMIT: usize> FromRequest<S> for Limited<LIMIT>
where
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Problem> {
        let announced = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if announced.is_some_and(|n| n > LIMIT as u64) {
            return Err(Problem::body_too_large(LIMIT));
        }
        let mut stream = request.into_body().into_data_stream();
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| match body::stalled(&e) {
                Some(timeout) => Problem::request_timeout(timeout),
                None => Problem::malformed(format!("cannot read the body: {e}")),
            })?;
            if body.len() + chunk.len() > LIMIT {
                return Err(Problem::body_too_large(LIMIT));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Limited(Bytes::from(body)))
    }
}

/// A JSON object body (whatever its `Content-Type`), at most [`MAX_JSON_BODY`] bytes.
/// Anything that is not the expected JSON (not JSON, bad UTF-8, not an object, a missing
/// or unknown field, a wrong type, trailing bytes) is `400 malformed-body` with serde's
/// explanation.
struct JsonBody<T>(T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let Limited(body) = Limited::<MAX_JSON_BODY>::from_request(request, state).await?;
        let malformed = |e: serde_json::Error| {
            Problem::malformed(format!("the body is not the expected JSON: {e}"))
        };
        // An object only: serde would also take a struct's fields as an array.
        match serde_json::from_slice(&body).map_err(malformed)? {
            object @ serde_json::Value::Object(_) => serde_json::from_value(object)
                .map(JsonBody)
                .map_err(malformed),
            _ => Err(Problem::malformed(
                "the body is not the expected JSON: expected an object",
            )),
        }
    }
}
