//! The OpenAPI document against the real router: every route the router registers is in
//! the document with the same methods, and every operation of the document, asked of a
//! real keeper, reaches a handler (it is never the router's own `not-found` or
//! `method-not-allowed`); the document and the index are served.

mod procs;

use std::collections::BTreeSet;
use std::time::Duration;

use procs::Keeper;
use zerokeeper::http::index::OPENAPI;

/// (METHOD, path template) of every operation of the document.
fn documented() -> BTreeSet<(String, String)> {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("the document is JSON");
    let mut ops = BTreeSet::new();
    for (path, methods) in doc["paths"].as_object().expect("paths") {
        for method in methods.as_object().expect("methods").keys() {
            ops.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    ops
}

/// (METHOD, path template) of every `.route(PATH, METHODS)` of the router's source.
fn routed() -> BTreeSet<(String, String)> {
    let source = include_str!("../src/http/mod.rs");
    let mut ops = BTreeSet::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        rest = rest[at + ".route(".len()..].trim_start();
        // `.route(` with a path literal, on one line or on the next.
        let Some(literal) = rest.strip_prefix('"') else {
            continue;
        };
        rest = literal;
        let end = rest.find('"').expect("a closing quote");
        let path = rest[..end].to_owned();
        // The call's text up to its closing parenthesis: the method router.
        let mut depth = 1;
        let mut call_end = 0;
        for (i, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        call_end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let call = &rest[end..call_end];
        for method in ["get", "put", "post", "delete"] {
            let bare =
                call.contains(&format!(" {method}(")) || call.contains(&format!("({method}("));
            let chained = call.contains(&format!(".{method}("));
            let qualified = call.contains(&format!("routing::{method}("));
            if bare || chained || qualified {
                ops.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    assert!(ops.len() >= 30, "only {} routes parsed: {ops:?}", ops.len());
    ops
}

#[test]
fn the_document_lists_exactly_the_routes_of_the_router() {
    let documented = documented();
    let routed = routed();
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty(),
        "routed but not in openapi.json: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "in openapi.json but not routed: {extra:?}"
    );
}

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    )
}

/// Asks `method path` of the keeper: (status, content type, body; empty for a stream).
fn ask(base: &str, method: &str, path: &str) -> (u16, String, String) {
    let url = format!("{base}{path}");
    let agent = agent();
    let answer = match method {
        "GET" => agent.get(&url).call(),
        "DELETE" => agent.delete(&url).call(),
        "PUT" => agent.put(&url).content_type("application/json").send("{}"),
        "POST" => agent.post(&url).content_type("application/json").send("{}"),
        other => panic!("unexpected method {other}"),
    };
    let mut answer = answer.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = answer.status().as_u16();
    let kind = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = if kind.starts_with("text/event-stream") {
        String::new()
    } else {
        answer.body_mut().read_to_string().unwrap_or_default()
    };
    (status, kind, body)
}

#[test]
fn every_documented_operation_reaches_a_handler_of_a_real_keeper() {
    let keeper = Keeper::start();
    let base = keeper.http.clone();
    // The check bites: a path the router does not know is its own `not-found`.
    let (status, _, body) = ask(&base, "GET", "/v1/nosuch");
    assert_eq!(status, 404);
    assert!(body.contains("urn:zerokeeper:problem:not-found"), "{body}");
    let (status, _, body) = ask(&base, "PUT", "/v1/clusters");
    assert_eq!(status, 405);
    assert!(body.contains("method-not-allowed"), "{body}");

    for (method, template) in documented() {
        let path = template
            .replace("{cluster}", "nosuch_cluster")
            .replace("{proxy}", "10.25.0.1:3000")
            .replace("{hostgroup}", "hg_orders")
            .replace("{version}", "1");
        let (status, _, body) = ask(&base, &method, &path);
        assert!(
            !body.contains("urn:zerokeeper:problem:not-found")
                && !body.contains("urn:zerokeeper:problem:method-not-allowed"),
            "{method} {template} is not routed: {status} {body}"
        );
    }
}

#[test]
fn the_index_and_the_document_are_served_without_a_token() {
    let dir = procs::fresh_dir("openapi-tokens");
    let tokens = dir.join("admin.tokens");
    procs::write_private(&tokens, &format!("alice admin {}\n", "ab".repeat(20)));
    let keeper = Keeper::start_with(
        &dir.join("data"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--admin-token-file",
            tokens.to_str().expect("utf-8"),
            "--auth-reads",
        ],
    );
    let (status, kind, body) = ask(&keeper.http, "GET", "/v1/openapi.json");
    assert_eq!((status, kind.as_str()), (200, "application/json"), "{body}");
    assert_eq!(body, OPENAPI);
    for index in ["/", "/v1"] {
        let (status, _, body) = ask(&keeper.http, "GET", index);
        assert_eq!(status, 200, "{body}");
        let index: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(index["name"], "zerokeeper");
        assert_eq!(index["openapi"], "/v1/openapi.json");
        let ops = index["operations"].as_array().expect("operations");
        assert_eq!(ops.len(), documented().len());
        assert!(
            ops.iter()
                .any(|o| o["method"] == "GET" && o["path"] == "/v1/watch")
        );
    }
    // A read of the fleet still needs its token.
    assert_eq!(ask(&keeper.http, "GET", "/v1/clusters").0, 401);
}
