//! Who may call what: the admin API's access rules, in one place.
//!
//! With no admin token configured the API asks nobody who they are (as before tokens
//! existed, and as a keeper on loopback for one operator may want). Once any token is
//! configured ([`Access::new`]):
//!
//! | request | needs |
//! |---|---|
//! | `GET /livez`, `GET /readyz`, `GET /v1/version`, the index (`/`, `/v1`) and `/v1/openapi.json` | nothing, ever |
//! | any change (a method other than `GET`/`HEAD`) | an `admin` token covering the cluster |
//! | `GET …/config`, `…/config/history`, `…/config/versions/…` (config contents are credentials) | an `admin` token covering the cluster |
//! | `GET /v1/snapshot` (a backup: every config, every cluster) | an `admin` token limited to no cluster |
//! | any other read, `/metrics` included | a token of either role, with `--auth-reads`; nothing without |
//!
//! A read or change of one cluster (`/v1/clusters/{cluster}/…`, or the watch and the
//! audit record with `?cluster=`) needs a token that covers that cluster; one of the
//! whole fleet (`/v1/proxies`, `/v1/clusters`, `/v1/keys`, `/v1/store`, `/metrics`, the
//! watch and the audit record without `?cluster=`) needs a token limited to no cluster. A request without a token, or
//! with one the keeper does not hold, is `401 unauthorized` with a `WWW-Authenticate:
//! Bearer` challenge; a valid token that does not allow the request is `403 forbidden`.
//! A presented token the keeper does not hold is refused even where none is needed
//! (except on the probes), so a client with a wrong token learns it at once.
//!
//! The rule of a route follows from its method and path, so a route added later is
//! guarded without being listed here: a change needs `admin`, a read needs `read`.
//!
//! The guard runs after routing (axum's `route_layer`), so it sees the route's pattern
//! and its path parameters; it puts the [`Caller`] into the request for the handlers,
//! which record the token's name in the audit record of every change.

use std::sync::Arc;

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::debug;

use super::problem::Problem;
use super::tokens::{Role, Token, TokenStore, Tokens};

/// The admin API's access settings: the tokens in force (replaced whole on a reload) and
/// whether reads need one too.
#[derive(Clone, Debug, Default)]
pub struct Access {
    tokens: TokenStore,
    auth_reads: bool,
}

impl Access {
    /// No tokens: every request is allowed, as before tokens existed.
    pub fn open() -> Access {
        Access::default()
    }

    /// The tokens of `tokens`; reads need one too when `auth_reads`.
    pub fn new(tokens: TokenStore, auth_reads: bool) -> Access {
        Access { tokens, auth_reads }
    }

    /// The tokens in force (to replace them on a reload).
    pub fn tokens(&self) -> &TokenStore {
        &self.tokens
    }

    /// Whether reads need a token.
    pub fn auth_reads(&self) -> bool {
        self.auth_reads
    }
}

/// Who made a request: the name of the admin token that authenticated it (`None`: no
/// token was needed or presented). Every handler that changes something records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Caller(pub(crate) Option<Arc<str>>);

/// What a request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Need {
    /// Nothing: the probes.
    Nothing,
    /// A token of either role, if reads are authenticated.
    Read(Scope),
    /// An `admin` token: changes, and config contents.
    Admin(Scope),
}

/// What a request concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Scope {
    /// One cluster.
    Cluster(String),
    /// The whole fleet.
    Fleet,
}

/// The rule of a request (see the module's documentation).
fn need(method: &Method, route: &str, cluster: Option<String>) -> Need {
    if matches!(
        route,
        "/livez" | "/readyz" | "/v1/version" | "/" | "/v1" | "/v1/openapi.json"
    ) {
        return Need::Nothing;
    }
    let scope = cluster.map_or(Scope::Fleet, Scope::Cluster);
    let read = *method == Method::GET || *method == Method::HEAD;
    if !read || route.contains("/config") || route == "/v1/snapshot" {
        Need::Admin(scope)
    } else {
        Need::Read(scope)
    }
}

/// The cluster a request concerns: its `{cluster}` path parameter, or the watch's (and
/// the audit record's) `?cluster=`. `Err` when the path parameters are not UTF-8 (no valid name is).
async fn cluster_of(request: &mut Request, route: &str) -> Result<Option<String>, Problem> {
    #[derive(serde::Deserialize)]
    struct ClusterQuery {
        cluster: Option<String>,
    }
    if route == "/v1/watch" || route == "/v1/audit" {
        // A query that does not parse is refused by the watch itself; here it concerns
        // the whole fleet, which asks the most of a token.
        return Ok(
            axum::extract::Query::<ClusterQuery>::try_from_uri(request.uri())
                .ok()
                .and_then(|q| q.0.cluster),
        );
    }
    match axum::RequestExt::extract_parts::<RawPathParams>(request).await {
        Ok(params) => Ok(params
            .iter()
            .find(|(name, _)| *name == "cluster")
            .map(|(_, value)| value.to_owned())),
        Err(e) => Err(Problem::invalid_name(e.body_text())),
    }
}

/// The token the request presents (`Authorization: Bearer TOKEN`), if any.
fn presented(request: &Request) -> Result<Option<&[u8]>, Box<Problem>> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    let malformed = || {
        Box::new(Problem::unauthorized(
            "the Authorization header must be \"Bearer TOKEN\" with an admin token",
            true,
        ))
    };
    let (scheme, token) = match bytes.iter().position(|&b| b == b' ') {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => return Err(malformed()),
    };
    let token = token.trim_ascii();
    if !scheme.eq_ignore_ascii_case(b"bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(Some(token))
}

/// The admin API's guard (a `route_layer`): lets a request through, with its
/// [`Caller`], or answers `401`/`403`.
pub(crate) async fn guard(
    State(access): State<Access>,
    mut request: Request,
    next: Next,
) -> Response {
    let tokens = access.tokens.get();
    if !tokens.enabled() {
        request.extensions_mut().insert(Caller(None));
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    let decided = match cluster_of(&mut request, &route).await {
        Ok(cluster) => admit(
            &tokens,
            access.auth_reads,
            &request,
            need(request.method(), &route, cluster),
        ),
        Err(problem) => Err(Box::new(problem)),
    };
    match decided {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(problem) => problem.into_response(),
    }
}

/// Decides a request that needs `need`, with `tokens` in force (see the module's
/// documentation).
fn admit(
    tokens: &Tokens,
    auth_reads: bool,
    request: &Request,
    need: Need,
) -> Result<Caller, Box<Problem>> {
    if need == Need::Nothing {
        return Ok(Caller(None));
    }
    let token = identify(tokens, request)?;
    let (role, scope) = match need {
        Need::Nothing => return Ok(Caller(None)),
        Need::Read(_) if !auth_reads => {
            return Ok(Caller(token.map(|t| t.name.clone())));
        }
        Need::Read(scope) => (Role::Read, scope),
        Need::Admin(scope) => (Role::Admin, scope),
    };
    let Some(token) = token else {
        let what = if role == Role::Admin {
            "this request needs an admin token"
        } else {
            "reads need a token on this keeper (--auth-reads)"
        };
        return Err(Box::new(Problem::unauthorized(
            format!(
                "{what}: send \"Authorization: Bearer TOKEN\" (the CLI: --token-file or ZEROKEEPER_TOKEN)"
            ),
            false,
        )));
    };
    if token.role < role {
        return Err(Box::new(Problem::forbidden(format!(
            "token {:?} has the role {}; {} {} needs an admin token",
            &*token.name,
            token.role.as_str(),
            request.method(),
            request.uri().path()
        ))));
    }
    match &scope {
        Scope::Cluster(cluster) if !token.covers(cluster) => {
            return Err(Box::new(Problem::forbidden(format!(
                "token {:?} is limited to the clusters {}, not {cluster:?}",
                &*token.name,
                limits(token)
            ))));
        }
        Scope::Fleet if !token.unlimited() => {
            return Err(Box::new(Problem::forbidden(format!(
                "token {:?} is limited to the clusters {}; {} covers every cluster: ask for one cluster (/v1/clusters/NAME/..., or the watch with ?cluster=NAME)",
                &*token.name,
                limits(token),
                request.uri().path()
            ))));
        }
        Scope::Cluster(_) | Scope::Fleet => {}
    }
    debug!(token = &*token.name, method = %request.method(), path = request.uri().path(), "admin request authenticated");
    Ok(Caller(Some(token.name.clone())))
}

/// The token the request presents, if the keeper holds it; `401` if it does not.
fn identify<'t>(tokens: &'t Tokens, request: &Request) -> Result<Option<&'t Token>, Box<Problem>> {
    match presented(request)? {
        None => Ok(None),
        Some(text) => tokens.find(text).map(Some).ok_or_else(|| {
            Box::new(Problem::unauthorized(
                "the admin token is not one this keeper holds",
                true,
            ))
        }),
    }
}

fn limits(token: &Token) -> String {
    token
        .clusters
        .iter()
        .flatten()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str) -> Option<String> {
        Some(name.to_owned())
    }

    #[test]
    fn a_rule_follows_from_the_method_and_the_path() {
        let c = || Scope::Cluster("c".to_owned());
        assert_eq!(need(&Method::GET, "/livez", None), Need::Nothing);
        assert_eq!(need(&Method::GET, "/v1/version", None), Need::Nothing);
        assert_eq!(need(&Method::GET, "/readyz", None), Need::Nothing);
        assert_eq!(
            need(&Method::GET, "/metrics", None),
            Need::Read(Scope::Fleet)
        );
        assert_eq!(
            need(&Method::GET, "/v1/proxies", None),
            Need::Read(Scope::Fleet)
        );
        assert_eq!(
            need(&Method::GET, "/v1/watch", cluster("c")),
            Need::Read(c())
        );
        assert_eq!(
            need(&Method::HEAD, "/v1/clusters/{cluster}/gate", cluster("c")),
            Need::Read(c())
        );
        assert_eq!(
            need(&Method::GET, "/v1/clusters/{cluster}/config", cluster("c")),
            Need::Admin(c())
        );
        for method in [Method::PUT, Method::POST, Method::DELETE, Method::PATCH] {
            assert_eq!(
                need(&method, "/v1/clusters/{cluster}/anything", cluster("c")),
                Need::Admin(c()),
                "{method}"
            );
        }
        assert_eq!(
            need(&Method::POST, "/v1/reload", None),
            Need::Admin(Scope::Fleet)
        );
    }
}
