//! The admin API over HTTP, version 1.
//!
//! [`router`] builds an axum [`Router`] around a [`KeeperHandle`]; [`serve`] runs it on a
//! listener until a shutdown future completes. The handlers know nothing of the listener,
//! so the same router runs on tokio's `TcpListener` in production and on a simulated one
//! under turmoil.
//!
//! Every handler is one call to the keeper task (checked and done there atomically, in
//! order with the heartbeats), turned into JSON or text. Every refusal is an RFC 9457
//! problem (see `problem.rs`): the router's own refusals (no such route, wrong method,
//! body too large, body not the expected JSON) too, never axum's plain-text defaults.
//!
//! | method & path | answer |
//! |---|---|
//! | `GET /livez`, `GET /readyz` | `ok` |
//! | `GET /metrics` | OpenMetrics text |
//! | `GET /v1/clusters`, `GET /v1/clusters/{cluster}` | cluster views |
//! | `GET /v1/proxies`, `GET /v1/clusters/{cluster}/proxies[/{proxy}]` | proxy views |
//! | `DELETE /v1/clusters/{cluster}/proxies/{proxy}` | the status it had |
//! | `GET /v1/keys`, `GET /v1/clusters/{cluster}/keys` | the seed's status lines |
//! | `GET /v1/clusters/{cluster}/gate` | open, or the blockers |
//! | `GET`/`PUT /v1/clusters/{cluster}/config` | the config version / push one |
//! | `POST /v1/clusters/{cluster}/switch` | switch a hostgroup's datasource |
//! | `GET /v1/watch` | server-sent events |

mod metrics;
mod problem;
mod watch;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::configdoc::MAX_CONFIG_BYTES;
use crate::driver::keeper::{CallError, ClusterView, KeeperHandle, ProxyView};
use crate::identity::{status_key, validate_cluster, validate_proxy};
use crate::keeper::AdminError;
use problem::{Problem, blockers_json};

/// Largest body `PUT /v1/clusters/{cluster}/config` reads: a config of
/// [`MAX_CONFIG_BYTES`] plus a margin. Bodies under it but too large once rendered are
/// refused by the core with the same `413 config-too-large`.
pub const MAX_CONFIG_BODY: usize = MAX_CONFIG_BYTES + 64 * 1024;
/// Largest JSON body of the other endpoints.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// What every handler shares: the way to the keeper task.
#[derive(Clone, Debug)]
struct Api {
    handle: KeeperHandle,
}

/// The admin API of the keeper behind `handle`: every endpoint of the contract, with
/// problem+json answers for unknown routes (404), wrong methods (405), bodies over the
/// limit (413) and bodies that are not the expected JSON (400).
pub fn router(handle: KeeperHandle) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::scrape))
        .route("/v1/clusters", get(clusters))
        .route("/v1/clusters/{cluster}", get(cluster))
        .route("/v1/proxies", get(all_proxies))
        .route("/v1/clusters/{cluster}/proxies", get(cluster_proxies))
        .route(
            "/v1/clusters/{cluster}/proxies/{proxy}",
            get(proxy).delete(remove),
        )
        .route("/v1/keys", get(all_keys))
        .route("/v1/clusters/{cluster}/keys", get(cluster_keys))
        .route("/v1/clusters/{cluster}/gate", get(gate))
        .route(
            "/v1/clusters/{cluster}/config",
            get(config).put(push_config),
        )
        .route("/v1/clusters/{cluster}/switch", post(switch))
        .route("/v1/watch", get(watch::watch))
        .route("/v1/store", get(store))
        // After the routes: it is set on each route registered so far.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(Api { handle })
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, ends
/// open watch streams, and returns once the requests in flight are answered.
///
/// Generic over axum's [`Listener`](axum::serve::Listener) so that a simulated listener
/// (turmoil) can be served the same way as `tokio::net::TcpListener`.
pub async fn serve<L>(
    listener: L,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: Debug,
{
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let router = router.layer(axum::Extension(watch::Closing(closing_rx)));
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Watch streams never end on their own; graceful shutdown waits for them.
            let _ = closing_tx.send(true);
        })
        .await
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

/// `GET /readyz`: the keeper task answers a call.
///
/// Not ready (503) while mass-loss protection holds for some cluster: so many of its
/// proxies are lost at once that the keeper's own network is the likely cause, and
/// whatever depends on this keeper's view of the fleet should know.
async fn readyz(State(api): State<Api>) -> Result<Response, Problem> {
    let paused: Vec<String> = api
        .handle
        .call(|k, _| {
            k.clusters()
                .into_iter()
                .filter(|c| c.deletion_paused)
                .map(|c| c.name)
                .collect()
        })
        .await?;
    if paused.is_empty() {
        Ok(text("ok\n".to_owned()))
    } else {
        Err(Problem::mass_loss(paused))
    }
}

/// The body of `GET /v1/store`.
#[derive(Serialize)]
struct StoreView {
    /// The store's revision after its last commit (absent: the keeper has no store).
    revision: Option<u64>,
    /// The keeper's epoch (boot counter).
    epoch: u32,
    /// Transactions committed since the keeper started.
    commits: u64,
}

/// `GET /v1/store`: the store's revision and the keeper's epoch.
async fn store(State(api): State<Api>) -> Result<Response, Problem> {
    let metrics = api.handle.metrics().await?;
    let epoch = api.handle.call(|k, _| k.epoch()).await?;
    let view = StoreView {
        revision: metrics.counters.store_revision,
        epoch,
        commits: metrics.counters.commits,
    };
    Ok(Json(view).into_response())
}

/// The body of `GET /v1/clusters`.
#[derive(Serialize)]
struct Clusters {
    /// Every cluster, sorted by name.
    clusters: Vec<ClusterView>,
}

/// `GET /v1/clusters`.
async fn clusters(State(api): State<Api>) -> Result<Json<Clusters>, Problem> {
    let clusters = api.handle.clusters().await?;
    Ok(Json(Clusters { clusters }))
}

/// `GET /v1/clusters/{cluster}`.
async fn cluster(
    State(api): State<Api>,
    Segments(cluster): Segments<String>,
) -> Result<Json<ClusterView>, Problem> {
    let view = api
        .handle
        .call(move |k, _| {
            validate_cluster(&cluster)?;
            k.clusters()
                .into_iter()
                .find(|c| c.name == cluster)
                .map(ClusterView::from)
                .ok_or(AdminError::UnknownCluster(cluster))
        })
        .await??;
    Ok(Json(view))
}

/// The body of `GET /v1/proxies`.
#[derive(Serialize)]
struct AllProxies {
    /// Every proxy, sorted by cluster and identity.
    proxies: Vec<ProxyView>,
}

/// `GET /v1/proxies`.
async fn all_proxies(State(api): State<Api>) -> Result<Json<AllProxies>, Problem> {
    let proxies = api.handle.proxies(None).await?;
    Ok(Json(AllProxies { proxies }))
}

/// The body of `GET /v1/clusters/{cluster}/proxies`.
#[derive(Serialize)]
struct ClusterProxies {
    /// The cluster.
    cluster: String,
    /// Its proxies, sorted by identity.
    proxies: Vec<ProxyView>,
}

/// `GET /v1/clusters/{cluster}/proxies`.
async fn cluster_proxies(
    State(api): State<Api>,
    Segments(cluster): Segments<String>,
) -> Result<Json<ClusterProxies>, Problem> {
    let proxies = api.handle.proxies(Some(cluster.clone())).await?;
    Ok(Json(ClusterProxies { cluster, proxies }))
}

/// `GET /v1/clusters/{cluster}/proxies/{proxy}`.
async fn proxy(
    State(api): State<Api>,
    Segments((cluster, proxy)): Segments<(String, String)>,
) -> Result<Json<ProxyView>, Problem> {
    // The proxy's name first, as the core checks it: a bad address is 400 anywhere.
    validate_proxy(&proxy).map_err(AdminError::from)?;
    let proxies = api.handle.proxies(Some(cluster.clone())).await?;
    proxies
        .into_iter()
        .find(|p| p.proxy == proxy)
        .map(Json)
        .ok_or_else(|| AdminError::UnknownProxy { cluster, proxy }.into())
}

/// The body of `DELETE /v1/clusters/{cluster}/proxies/{proxy}`.
#[derive(Serialize)]
struct Removed {
    /// The cluster.
    cluster: String,
    /// The proxy deleted.
    proxy: String,
    /// The status it had.
    status: &'static str,
}

/// `DELETE /v1/clusters/{cluster}/proxies/{proxy}`.
async fn remove(
    State(api): State<Api>,
    Segments((cluster, proxy)): Segments<(String, String)>,
) -> Result<Json<Removed>, Problem> {
    let status = api.handle.remove(cluster.clone(), proxy.clone()).await?;
    Ok(Json(Removed {
        cluster,
        proxy,
        status: status.as_str(),
    }))
}

/// The seed's status lines, `/zerodb/proxy/C/status/ADDR->STATUS\n`, sorted.
fn key_lines(proxies: &[ProxyView]) -> String {
    let mut lines: Vec<String> = proxies
        .iter()
        .map(|p| format!("{}->{}\n", status_key(&p.cluster, &p.proxy), p.status))
        .collect();
    lines.sort();
    lines.concat()
}

/// `GET /v1/keys`.
async fn all_keys(State(api): State<Api>) -> Result<Response, Problem> {
    let proxies = api.handle.proxies(None).await?;
    Ok(text(key_lines(&proxies)))
}

/// `GET /v1/clusters/{cluster}/keys`.
async fn cluster_keys(
    State(api): State<Api>,
    Segments(cluster): Segments<String>,
) -> Result<Response, Problem> {
    let proxies = api.handle.proxies(Some(cluster)).await?;
    Ok(text(key_lines(&proxies)))
}

/// `GET /v1/clusters/{cluster}/gate`.
async fn gate(
    State(api): State<Api>,
    Segments(cluster): Segments<String>,
) -> Result<Json<serde_json::Value>, Problem> {
    let (open, blockers) = match api.handle.gate(cluster.clone()).await {
        Ok(()) => (true, Vec::new()),
        Err(CallError::Admin(AdminError::GateClosed(mut closed))) => {
            closed.blockers.sort();
            (false, closed.blockers)
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Json(serde_json::json!({
        "cluster": cluster,
        "open": open,
        "blockers": blockers_json(&blockers),
    })))
}

/// The body of `GET /v1/clusters/{cluster}/config`.
#[derive(Serialize)]
struct ConfigView {
    /// The cluster.
    cluster: String,
    /// The current version.
    version: u64,
    /// SHA-256 of the rendered document, lowercase hex.
    digest: String,
    /// Bytes of the rendered document (what proxies pull).
    size: usize,
    /// Bytes of the operator's config file.
    base_size: usize,
    /// The datasource of each hostgroup.
    datasources: BTreeMap<String, String>,
}

/// `GET /v1/clusters/{cluster}/config`.
async fn config(
    State(api): State<Api>,
    Segments(cluster): Segments<String>,
) -> Result<Json<ConfigView>, Problem> {
    let name = cluster.clone();
    let config = api.handle.call(move |k, _| k.config_of(&name)).await??;
    Ok(Json(ConfigView {
        cluster,
        version: config.version,
        digest: hex(&config.digest),
        size: config.bytes.len(),
        base_size: config.base.len(),
        datasources: config.datasources.clone(),
    }))
}

/// The body of `PUT /v1/clusters/{cluster}/config`.
#[derive(Serialize)]
struct Pushed {
    /// The cluster.
    cluster: String,
    /// The version made.
    version: u64,
}

/// `PUT /v1/clusters/{cluster}/config`: the body, byte for byte, is the config file.
async fn push_config(
    State(api): State<Api>,
    Segments(cluster): Segments<String>,
    Limited(body): Limited<MAX_CONFIG_BODY>,
) -> Result<Json<Pushed>, Problem> {
    let version = api
        .handle
        .push_config(cluster.clone(), Arc::from(body.as_ref()))
        .await?;
    Ok(Json(Pushed { cluster, version }))
}

/// The body of `POST /v1/clusters/{cluster}/switch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchRequest {
    /// The hostgroup.
    hostgroup: String,
    /// The datasource it must have now.
    from: String,
    /// The datasource it gets.
    to: String,
}

/// The answer to `POST /v1/clusters/{cluster}/switch`.
#[derive(Serialize)]
struct Switched {
    /// The cluster.
    cluster: String,
    /// The version made.
    version: u64,
    /// The hostgroup.
    hostgroup: String,
    /// The datasource it had.
    from: String,
    /// The datasource it has.
    to: String,
}

/// `POST /v1/clusters/{cluster}/switch`.
async fn switch(
    State(api): State<Api>,
    Segments(cluster): Segments<String>,
    JsonBody(request): JsonBody<SwitchRequest>,
) -> Result<Json<Switched>, Problem> {
    let SwitchRequest {
        hostgroup,
        from,
        to,
    } = request;
    let version = api
        .handle
        .switch_datasource(cluster.clone(), hostgroup.clone(), from.clone(), to.clone())
        .await?;
    Ok(Json(Switched {
        cluster,
        version,
        hostgroup,
        from,
        to,
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

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
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
/// Counted as it arrives rather than trusted from `Content-Length`, and read to just past
/// the limit: a body of exactly `LIMIT + 1` bytes is consumed whole, so the client reads
/// the answer instead of a reset connection.
struct Limited<const LIMIT: usize>(Bytes);

impl<S, const LIMIT: usize> FromRequest<S> for Limited<LIMIT>
where
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Problem> {
        let mut stream = request.into_body().into_data_stream();
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| Problem::malformed(format!("cannot read the body: {e}")))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn key_lines_are_sorted_and_each_ends_in_a_newline() {
        let view = |cluster: &str, proxy: &str, status: &str| ProxyView {
            cluster: cluster.into(),
            proxy: proxy.into(),
            status: status.into(),
            incarnation: 1,
            last_heartbeat: String::new(),
            last_heartbeat_age_ms: 0,
            since: String::new(),
            since_age_ms: 0,
            source: String::new(),
            config_version: 1,
            deletion_paused: false,
        };
        let text = key_lines(&[
            view("a", "10.0.0.2:1", "up"),
            view("a.b", "10.0.0.1:1", "lost"),
            view("a", "10.0.0.1:1", "ready"),
        ]);
        assert_eq!(
            text,
            "/zerodb/proxy/a.b/status/10.0.0.1:1->lost\n\
             /zerodb/proxy/a/status/10.0.0.1:1->ready\n\
             /zerodb/proxy/a/status/10.0.0.2:1->up\n"
        );
        assert_eq!(key_lines(&[]), "");
    }
}
