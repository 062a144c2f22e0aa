//! What the API is: `GET /` and `GET /v1` (an index of every operation) and
//! `GET /v1/openapi.json` (the OpenAPI 3.1 document), both from one embedded document,
//! `openapi.json`, which `tests/openapi.rs` checks against the router (every operation
//! it lists is routed, every route is listed). `scripts/gen-openapi.py` writes it.

use std::sync::LazyLock;

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The OpenAPI document, as served.
pub const OPENAPI: &str = include_str!("openapi.json");

/// One operation of the index.
#[derive(Clone, Debug, Serialize)]
pub struct Operation {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The path template, as the OpenAPI document has it (`/v1/clusters/{cluster}`).
    pub path: String,
    /// What it does.
    pub summary: String,
}

/// The index of the API.
#[derive(Clone, Debug, Serialize)]
pub struct Index {
    /// `zerokeeper`.
    pub name: &'static str,
    /// The release.
    pub version: String,
    /// The heartbeat protocol versions it speaks.
    pub protocols: Vec<u8>,
    /// Where the OpenAPI document is.
    pub openapi: &'static str,
    /// Where the human documentation is.
    pub documentation: &'static str,
    /// Every operation, in the document's order.
    pub operations: Vec<Operation>,
}

/// The operations of the embedded document: (method, path, summary) in its order.
pub fn operations() -> Vec<Operation> {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap_or_default();
    let mut out = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, methods) in paths {
            if let Some(methods) = methods.as_object() {
                for (method, op) in methods {
                    out.push(Operation {
                        method: method.to_ascii_uppercase(),
                        path: path.clone(),
                        summary: op["summary"].as_str().unwrap_or_default().to_owned(),
                    });
                }
            }
        }
    }
    out
}

static INDEX: LazyLock<Index> = LazyLock::new(|| {
    let this = crate::api::VersionView::this();
    Index {
        name: "zerokeeper",
        version: this.version,
        protocols: this.protocols,
        openapi: "/v1/openapi.json",
        documentation: "README.md (HTTP admin API) and docs/OPERATIONS.md of the zerokeeper repository",
        operations: operations(),
    }
});

/// `GET /` and `GET /v1`.
pub(crate) async fn index() -> Json<Index> {
    Json(INDEX.clone())
}

/// `GET /v1/openapi.json`.
pub(crate) async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_document_parses_and_lists_operations() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let ops = operations();
        assert!(ops.len() >= 30, "{}", ops.len());
        assert!(
            ops.iter()
                .any(|o| o.method == "PUT" && o.path == "/v1/clusters/{cluster}/config")
        );
    }
}
