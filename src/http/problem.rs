//! Errors as RFC 9457 problem details (`application/problem+json`).
//!
//! Every refusal of the admin API is a [`Problem`]: a `type` URN naming what went wrong,
//! the matching HTTP status, the error's own text as `detail`, and the members a client
//! needs to act on it (the blockers of a closed gate, the datasource a hostgroup really
//! has). The core guarantees that a refused call changed nothing; a problem says which
//! refusal it was.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tracing::{debug, error};

use crate::configdoc::ConfigError;
use crate::driver::keeper::{CallError, Stopped};
use crate::keeper::{AdminError, Blocker, GateClosed};

/// The `type` of every problem starts with this.
const TYPE_PREFIX: &str = "urn:zerokeeper:problem:";
/// The media type of problem bodies.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// One refusal, ready to be sent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Problem {
    /// The HTTP status.
    status: StatusCode,
    /// The `type`, after [`TYPE_PREFIX`] (such as `gate-closed`).
    kind: &'static str,
    /// A short summary of the kind.
    title: &'static str,
    /// What happened this time.
    detail: String,
    /// Members beyond the standard ones (`cluster`, `blockers`, ...).
    extra: Map<String, Value>,
}

impl Problem {
    fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: String) -> Problem {
        Problem {
            status,
            kind,
            title,
            detail,
            extra: Map::new(),
        }
    }

    /// Adds a member to the body.
    fn with(mut self, name: &str, value: impl Into<Value>) -> Problem {
        self.extra.insert(name.to_owned(), value.into());
        self
    }

    /// A cluster name, proxy address, hostgroup or datasource failed validation.
    pub(crate) fn invalid_name(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-name",
            "Invalid name",
            detail.into(),
        )
    }

    /// The request is not what the endpoint expects (body not the expected JSON, or a
    /// query parameter or header that does not parse).
    pub(crate) fn malformed(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-body",
            "Malformed body",
            detail.into(),
        )
    }

    /// No route has this path.
    pub(crate) fn not_found(path: &str) -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("no such endpoint: {path}"),
        )
    }

    /// The route exists but not with this method.
    pub(crate) fn method_not_allowed(method: &str, path: &str) -> Problem {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            format!("{path} does not accept {method}"),
        )
    }

    /// The request body is larger than the endpoint accepts.
    pub(crate) fn body_too_large(limit: usize) -> Problem {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "config-too-large",
            "Config too large",
            format!("request body is larger than the limit of {limit} bytes"),
        )
    }

    /// Mass-loss protection holds for these clusters: the keeper is not ready.
    pub(crate) fn mass_loss(clusters: Vec<String>) -> Problem {
        let detail = format!(
            "mass loss in {}: deletion of lost proxies is paused; the keeper's own network is the likely cause",
            clusters.join(", ")
        );
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "mass-loss",
            "Mass loss",
            detail,
        )
        .with("clusters", clusters)
    }

    /// Something that cannot happen did; the client is not at fault.
    pub(crate) fn internal(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            detail.into(),
        )
    }

    /// The HTTP status.
    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The whole body.
    pub(crate) fn body(&self) -> Value {
        let mut body = self.extra.clone();
        body.insert(
            "type".to_owned(),
            Value::String(format!("{TYPE_PREFIX}{}", self.kind)),
        );
        body.insert("title".to_owned(), Value::String(self.title.to_owned()));
        body.insert("status".to_owned(), Value::from(self.status.as_u16()));
        body.insert("detail".to_owned(), Value::String(self.detail.clone()));
        Value::Object(body)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        if self.status.is_server_error() && self.status != StatusCode::SERVICE_UNAVAILABLE {
            error!(status = self.status.as_u16(), kind = self.kind, detail = %self.detail, "request failed");
        } else {
            debug!(status = self.status.as_u16(), kind = self.kind, detail = %self.detail, "request refused");
        }
        let body = self.body().to_string();
        (
            self.status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
            body,
        )
            .into_response()
    }
}

impl From<Stopped> for Problem {
    fn from(e: Stopped) -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "keeper-stopped",
            "Keeper stopped",
            e.to_string(),
        )
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

impl From<ConfigError> for Problem {
    fn from(e: ConfigError) -> Problem {
        let detail = e.to_string();
        match e {
            ConfigError::TooLarge(_) => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "config-too-large",
                "Config too large",
                detail,
            ),
            ConfigError::InvalidName => Problem::invalid_name(detail),
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
            AdminError::UnknownCluster(cluster) => Problem::new(
                StatusCode::NOT_FOUND,
                "unknown-cluster",
                "Unknown cluster",
                detail,
            )
            .with("cluster", cluster),
            AdminError::UnknownProxy { cluster, proxy } => Problem::new(
                StatusCode::NOT_FOUND,
                "unknown-proxy",
                "Unknown proxy",
                detail,
            )
            .with("cluster", cluster)
            .with("proxy", proxy),
            AdminError::GateClosed(GateClosed {
                cluster,
                mut blockers,
            }) => {
                blockers.sort();
                Problem::new(StatusCode::CONFLICT, "gate-closed", "Gate closed", detail)
                    .with("cluster", cluster)
                    .with("blockers", blockers_json(&blockers))
            }
            AdminError::Config(e) => e.into(),
            AdminError::DatasourceMismatch {
                hostgroup,
                expected,
                actual,
            } => Problem::new(
                StatusCode::CONFLICT,
                "datasource-mismatch",
                "Datasource mismatch",
                detail,
            )
            .with("hostgroup", hostgroup)
            .with("expected", expected)
            .with("actual", actual),
        }
    }
}

/// Blockers as the API shows them: `[{"proxy": ..., "status": ...}]`, in the given order.
pub(crate) fn blockers_json(blockers: &[Blocker]) -> Value {
    blockers
        .iter()
        .map(|b| json!({ "proxy": b.proxy, "status": b.status.as_str() }))
        .collect()
}

#[cfg(test)]
mod tests {
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
            p.body(),
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
                }
                .into(),
                409,
                "datasource-mismatch",
            ),
            (
                AdminError::Config(ConfigError::TooLarge(5)).into(),
                413,
                "config-too-large",
            ),
            (Problem::body_too_large(1), 413, "config-too-large"),
            (CallError::Stopped(Stopped).into(), 503, "keeper-stopped"),
        ];
        for (p, status, kind) in cases {
            let body = p.body();
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
