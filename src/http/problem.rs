//! Errors as RFC 9457 problem details (`application/problem+json`).
//!
//! Every refusal of the admin API is a [`Problem`]: a `type` URN naming what went wrong,
//! the matching HTTP status, the error's own text as `detail`, and the members a client
//! needs to act on it (the blockers of a closed gate, the datasource a hostgroup really
//! has). The core guarantees that a refused call changed nothing; a problem says which
//! refusal it was. The body is the shared [`ProblemBody`] of [`crate::api`], so the
//! client reads exactly what is sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::{debug, error};

use crate::api::{self, Gone, ProblemBody, ProblemKind};
use crate::configdoc::ConfigError;
use crate::driver::keeper::{CallError, Stopped};
use crate::http::view::ViewError;
use crate::keeper::{AdminError, Blocker, GateClosed};

/// The media type of problem bodies.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// One refusal, ready to be sent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Problem {
    /// The HTTP status.
    status: StatusCode,
    /// The document, as the client reads it.
    body: ProblemBody,
    /// Seconds after which asking again may succeed (`Retry-After`), for refusals that
    /// pass.
    retry_after: Option<u32>,
    /// The `WWW-Authenticate` challenge of a `401`.
    challenge: Option<&'static str>,
    /// Whether the connection closes after this answer (`Connection: close`): the
    /// request's body was not read to its end, so the connection cannot carry another
    /// request, and a client that reused it would find it gone.
    close: bool,
}

impl Problem {
    fn new(kind: ProblemKind, detail: impl Into<String>) -> Problem {
        Problem {
            // Every kind's status is a valid HTTP status.
            status: StatusCode::from_u16(kind.status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body: ProblemBody::new(kind, detail),
            retry_after: None,
            challenge: None,
            close: false,
        }
    }

    /// Adds members to the body.
    fn with(mut self, f: impl FnOnce(&mut ProblemBody)) -> Problem {
        f(&mut self.body);
        self
    }

    /// `404 unknown-version` of `cluster`.
    pub(crate) fn unknown_version(cluster: &str, detail: impl Into<String>) -> Problem {
        Problem::new(ProblemKind::UnknownVersion, detail)
            .with(|b| b.cluster = Some(cluster.to_owned()))
    }

    /// A cluster name, proxy address, hostgroup or datasource failed validation.
    pub(crate) fn invalid_name(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemKind::InvalidName, detail)
    }

    /// The body is not what the endpoint expects (not the expected JSON, or a config
    /// that does not parse).
    pub(crate) fn malformed(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemKind::MalformedBody, detail)
    }

    /// A query parameter, a header or a path segment that is not a name does not parse
    /// or is out of range.
    pub(crate) fn invalid_parameter(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemKind::InvalidParameter, detail)
    }

    /// This keeper's store makes no snapshot.
    pub(crate) fn snapshot_unsupported(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemKind::SnapshotUnsupported, detail)
    }

    /// No route has this path.
    pub(crate) fn not_found(path: &str) -> Problem {
        Problem::new(ProblemKind::NotFound, format!("no such endpoint: {path}"))
    }

    /// The route exists but not with this method.
    pub(crate) fn method_not_allowed(method: &str, path: &str) -> Problem {
        Problem::new(
            ProblemKind::MethodNotAllowed,
            format!("{path} does not accept {method}"),
        )
    }

    /// The request body is larger than the endpoint accepts.
    pub(crate) fn body_too_large(limit: usize) -> Problem {
        let mut problem = Problem::new(
            ProblemKind::ConfigTooLarge,
            format!("request body is larger than the limit of {limit} bytes"),
        );
        problem.close = true;
        problem
    }

    /// The request could not be parsed as HTTP/1.1 (hyper's own 400).
    pub(crate) fn malformed_request() -> Problem {
        Problem::new(
            ProblemKind::MalformedRequest,
            "the request could not be parsed as HTTP/1.1: its request line or a header is malformed",
        )
    }

    /// The request line is longer than the server reads (`max_header_bytes`).
    pub(crate) fn uri_too_long(max_header_bytes: usize) -> Problem {
        Problem::new(
            ProblemKind::UriTooLong,
            format!(
                "the request line is longer than the {max_header_bytes} bytes a request's head may take"
            ),
        )
    }

    /// The request has more than `max_headers` headers, or its head is larger than
    /// `max_header_bytes`.
    pub(crate) fn headers_too_large(max_headers: usize, max_header_bytes: usize) -> Problem {
        Problem::new(
            ProblemKind::HeadersTooLarge,
            format!(
                "the request has more than {max_headers} headers, or its head is larger than {max_header_bytes} bytes"
            ),
        )
    }

    /// The request's body made no progress for `timeout`.
    pub(crate) fn request_timeout(timeout: std::time::Duration) -> Problem {
        let mut problem = Problem::new(
            ProblemKind::RequestTimeout,
            format!(
                "the request's body made no progress for {}",
                humantime::format_duration(timeout)
            ),
        );
        problem.close = true;
        problem
    }

    /// `max` watch streams are open already; retry after `retry_after` seconds.
    pub(crate) fn too_many_watchers(max: usize, retry_after: u32) -> Problem {
        let mut problem = Problem::new(
            ProblemKind::TooManyWatchers,
            format!(
                "the keeper serves at most {max} watch streams at once and all are open; retry later"
            ),
        );
        problem.retry_after = Some(retry_after);
        problem
    }

    /// Mass-loss protection holds for these clusters: the keeper is not ready.
    pub(crate) fn mass_loss(clusters: Vec<String>) -> Problem {
        let detail = format!(
            "mass loss in {}: deletion of lost proxies is paused; the keeper's own network is the likely cause",
            clusters.join(", ")
        );
        Problem::new(ProblemKind::MassLoss, detail).with(|b| b.clusters = Some(clusters))
    }

    /// The changes after a watch position are not held (or the position is of another
    /// generation, or in the future): list again.
    pub(crate) fn gone(gone: Gone) -> Problem {
        let detail = format!(
            "the changes after that position are not held: the oldest held is revision {}, the current {} of generation {}; list again and watch from the listing's revision",
            gone.oldest, gone.current, gone.generation
        );
        Problem::new(ProblemKind::Gone, detail).with(|b| {
            b.oldest = Some(gone.oldest);
            b.current = Some(gone.current);
            b.generation = Some(gone.generation);
        })
    }

    /// This keeper is a standby: the leader (if one is known) acts.
    pub(crate) fn not_leader(leader: Option<&crate::ha::Leadership>) -> Problem {
        let detail = match leader {
            Some(l) => format!(
                "this keeper is a standby; {} leads (term {}): send changes to {}",
                l.leader.id, l.term, l.leader.http
            ),
            None => {
                "this keeper is a standby and no keeper leads right now; retry shortly".to_owned()
            }
        };
        let url = leader.map(|l| l.leader.http.clone());
        let mut problem = Problem::new(ProblemKind::NotLeader, detail).with(|b| b.leader = url);
        problem.retry_after = Some(1);
        problem
    }

    /// The request has no admin token (`invalid: false`) or one the keeper does not hold
    /// (`true`). Sent with a `WWW-Authenticate: Bearer` challenge (RFC 6750).
    pub(crate) fn unauthorized(detail: impl Into<String>, invalid: bool) -> Problem {
        let mut problem = Problem::new(ProblemKind::Unauthorized, detail);
        problem.challenge = Some(if invalid {
            "Bearer realm=\"zerokeeper\", error=\"invalid_token\""
        } else {
            "Bearer realm=\"zerokeeper\""
        });
        problem
    }

    /// The token is valid but does not allow this.
    pub(crate) fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemKind::Forbidden, detail)
    }

    /// A reload found a file that does not load.
    pub(crate) fn reload_failed(detail: impl Into<String>) -> Problem {
        Problem::new(
            ProblemKind::ReloadFailed,
            format!(
                "nothing was reloaded: {}; the keys, tokens and certificate in force stay",
                detail.into()
            ),
        )
    }

    /// Something that cannot happen did; the client is not at fault.
    pub(crate) fn internal(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemKind::Internal, detail)
    }

    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The whole body.
    pub(crate) fn body(&self) -> &ProblemBody {
        &self.body
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let kind = self.body.problem_type.as_str();
        let detail = self.body.detail.as_deref().unwrap_or("");
        if self.status.is_server_error() && self.status != StatusCode::SERVICE_UNAVAILABLE {
            error!(
                status = self.status.as_u16(),
                kind, detail, "request failed"
            );
        } else {
            debug!(
                status = self.status.as_u16(),
                kind, detail, "request refused"
            );
        }
        // A body of strings and numbers always serializes; without one the status stays.
        let Ok(body) = serde_json::to_string(&self.body) else {
            return self.status.into_response();
        };
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
            body,
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

impl From<Stopped> for Problem {
    fn from(e: Stopped) -> Problem {
        Problem::new(ProblemKind::KeeperStopped, e.to_string())
    }
}

impl From<CallError> for Problem {
    fn from(e: CallError) -> Problem {
        match e {
            CallError::Admin(e) => e.into(),
            CallError::Stopped(e) => e.into(),
        }
    }
}

impl From<ViewError> for Problem {
    fn from(e: ViewError) -> Problem {
        match e {
            ViewError::Admin(e) => e.into(),
            ViewError::Stopped => Stopped.into(),
            e @ ViewError::Behind(_) => Problem::internal(e.to_string()),
        }
    }
}

impl From<ConfigError> for Problem {
    fn from(e: ConfigError) -> Problem {
        let detail = e.to_string();
        match e {
            ConfigError::TooLarge(_) => Problem::new(ProblemKind::ConfigTooLarge, detail),
            ConfigError::InvalidName => Problem::invalid_name(detail),
            ConfigError::Empty | ConfigError::NotFormat { .. } => Problem::malformed(detail),
            // Only a decoded document can be malformed, and the API never decodes one.
            ConfigError::Malformed => Problem::internal(detail),
        }
    }
}

impl From<AdminError> for Problem {
    fn from(e: AdminError) -> Problem {
        let detail = e.to_string();
        match e {
            AdminError::Invalid(_) => Problem::invalid_name(detail),
            AdminError::UnknownCluster(cluster) => {
                Problem::new(ProblemKind::UnknownCluster, detail)
                    .with(|b| b.cluster = Some(cluster))
            }
            AdminError::UnknownProxy { cluster, proxy } => {
                Problem::new(ProblemKind::UnknownProxy, detail).with(|b| {
                    b.cluster = Some(cluster);
                    b.proxy = Some(proxy);
                })
            }
            AdminError::GateClosed(GateClosed { cluster, blockers }) => {
                Problem::new(ProblemKind::GateClosed, detail).with(|b| {
                    b.cluster = Some(cluster);
                    b.blockers = Some(api_blockers(blockers));
                })
            }
            AdminError::Config(e) => e.into(),
            AdminError::SameDatasource {
                hostgroup, choices, ..
            } => Problem::malformed(detail).with(|b| {
                b.hostgroup = Some(hostgroup);
                b.choices = (!choices.is_empty()).then_some(choices);
            }),
            AdminError::ProxyAlive { cluster, proxy, .. } => {
                Problem::new(ProblemKind::ProxyAlive, detail).with(|b| {
                    b.cluster = Some(cluster);
                    b.proxy = Some(proxy);
                })
            }
            AdminError::NotCreated(cluster) => Problem::new(ProblemKind::UnknownCluster, detail)
                .with(|b| b.cluster = Some(cluster)),
            AdminError::VersionMismatch {
                cluster, current, ..
            } => Problem::new(ProblemKind::PreconditionFailed, detail).with(|b| {
                b.cluster = Some(cluster);
                b.current = Some(current);
            }),
            AdminError::NoSuchVersion { cluster, .. } => Problem::unknown_version(&cluster, detail),
            AdminError::RegistryFull { cluster, .. } => {
                Problem::new(ProblemKind::RegistryFull, detail).with(|b| b.cluster = Some(cluster))
            }
            AdminError::DatasourceMismatch {
                hostgroup,
                expected,
                actual,
                choices,
            } => Problem::new(ProblemKind::DatasourceMismatch, detail).with(|b| {
                b.hostgroup = Some(hostgroup);
                b.expected = Some(expected);
                b.actual = Some(actual);
                b.choices = Some(choices);
            }),
            AdminError::UnknownDatasource {
                hostgroup,
                datasource,
                choices,
            } => Problem::new(ProblemKind::DatasourceMismatch, detail).with(|b| {
                b.hostgroup = Some(hostgroup);
                b.expected = Some(datasource);
                b.choices = Some(choices);
            }),
            AdminError::UnknownHostgroup {
                cluster,
                hostgroup,
                declared,
            } => Problem::new(ProblemKind::UnknownHostgroup, detail).with(|b| {
                b.cluster = Some(cluster);
                b.hostgroup = Some(hostgroup);
                b.choices = Some(declared);
            }),
            AdminError::BadHostgroup(_) => Problem::malformed(detail),
            AdminError::ClusterNotEmpty { cluster, .. } => {
                Problem::new(ProblemKind::ClusterNotEmpty, detail)
                    .with(|b| b.cluster = Some(cluster))
            }
            AdminError::TooManyRemoved { cluster, .. } => {
                Problem::new(ProblemKind::RegistryFull, detail).with(|b| b.cluster = Some(cluster))
            }
        }
    }
}

/// Blockers as the API shows them, sorted by proxy.
pub(crate) fn api_blockers(mut blockers: Vec<Blocker>) -> Vec<api::Blocker> {
    blockers.sort();
    blockers
        .into_iter()
        .map(|b| api::Blocker {
            proxy: b.proxy,
            status: b.status.as_str().to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::identity::IdentityError;
    use crate::keeper::Status;

    #[test]
    fn a_closed_gate_lists_its_blockers_sorted_by_proxy() {
        let e = AdminError::GateClosed(GateClosed {
            cluster: "test_cluster".into(),
            blockers: vec![
                Blocker {
                    proxy: "10.25.0.14:3000".into(),
                    status: Status::Ready,
                },
                Blocker {
                    proxy: "10.25.0.13:3000".into(),
                    status: Status::Lost,
                },
            ],
        });
        let detail = e.to_string();
        let p = Problem::from(e);
        assert_eq!(p.status(), StatusCode::CONFLICT);
        assert_eq!(
            serde_json::to_value(p.body()).expect("serializes"),
            json!({
                "type": "urn:zerokeeper:problem:gate-closed",
                "title": "Gate closed",
                "status": 409,
                "detail": detail,
                "cluster": "test_cluster",
                "blockers": [
                    {"proxy": "10.25.0.13:3000", "status": "lost"},
                    {"proxy": "10.25.0.14:3000", "status": "ready"},
                ],
            })
        );
    }

    #[test]
    fn a_refused_watcher_is_told_when_to_come_back() {
        let response = Problem::too_many_watchers(256, 5).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let other = Problem::malformed("x").into_response();
        assert!(other.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn every_error_maps_to_the_status_of_the_contract() {
        let cases: Vec<(Problem, u16, &str)> = vec![
            (
                AdminError::Invalid(IdentityError::ProxyShape).into(),
                400,
                "invalid-name",
            ),
            (ConfigError::InvalidName.into(), 400, "invalid-name"),
            (Problem::malformed("x"), 400, "malformed-body"),
            (
                AdminError::UnknownCluster("c".into()).into(),
                404,
                "unknown-cluster",
            ),
            (
                AdminError::UnknownProxy {
                    cluster: "c".into(),
                    proxy: "p:1".into(),
                }
                .into(),
                404,
                "unknown-proxy",
            ),
            (Problem::not_found("/x"), 404, "not-found"),
            (
                Problem::method_not_allowed("POST", "/x"),
                405,
                "method-not-allowed",
            ),
            (
                AdminError::DatasourceMismatch {
                    hostgroup: "h".into(),
                    expected: "a".into(),
                    actual: "b".into(),
                    choices: vec!["c".into()],
                }
                .into(),
                409,
                "datasource-mismatch",
            ),
            (
                AdminError::RegistryFull {
                    cluster: "c".into(),
                    clusters: 1,
                    max_clusters: 1,
                }
                .into(),
                507,
                "registry-full",
            ),
            (
                AdminError::Config(ConfigError::TooLarge(5)).into(),
                413,
                "config-too-large",
            ),
            (Problem::body_too_large(1), 413, "config-too-large"),
            (Problem::malformed_request(), 400, "malformed-request"),
            (
                Problem::request_timeout(std::time::Duration::from_secs(10)),
                408,
                "request-timeout",
            ),
            (Problem::uri_too_long(16384), 414, "uri-too-long"),
            (
                Problem::headers_too_large(100, 16384),
                431,
                "headers-too-large",
            ),
            (Problem::too_many_watchers(256, 5), 503, "too-many-watchers"),
            (CallError::Stopped(Stopped).into(), 503, "keeper-stopped"),
            (ViewError::Stopped.into(), 503, "keeper-stopped"),
            (
                Problem::gone(Gone {
                    oldest: 5,
                    current: 9,
                    generation: 2,
                }),
                410,
                "gone",
            ),
        ];
        for (p, status, kind) in cases {
            let body = serde_json::to_value(p.body()).expect("serializes");
            assert_eq!(body["status"], status, "{body}");
            assert_eq!(p.status().as_u16(), status, "{body}");
            assert_eq!(
                body["type"],
                format!("urn:zerokeeper:problem:{kind}"),
                "{body}"
            );
        }
    }
}
