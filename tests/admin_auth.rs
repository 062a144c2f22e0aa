//! Admin authentication and TLS against the real `zerokeeper serve` binary (issue 13):
//! bearer tokens with roles and cluster limits, `401`/`403` as problem+json with nothing
//! changed, the token's name in the audit record, tokens and certificates reloaded on
//! SIGHUP, and the CLI over https with a certificate the test makes.
//!
//! Every condition is waited for with a deadline.

mod procs;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use procs::{CLUSTER, Keeper, PATIENCE, fresh_dir, write_private};
use serde_json::Value;

const A: &str = "10.25.0.11:3000";
const ALICE: &str = "a11ce0a11ce0a11ce0a11ce0a11ce0a11ce0a11ce0a11ce0a11ce0a11ce0a1ce";
const GRAFANA: &str = "9afa9afa9afa9afa9afa9afa9afa9afa9afa9afa9afa9afa9afa9afa9afa9afa";
const PAYMENTS: &str = "9a4e9a4e9a4e9a4e9a4e9a4e9a4e9a4e9a4e9a4e9a4e9a4e9a4e9a4e9a4e9a4e";
const BOB: &str = "b0bb0bb0bb0bb0bb0bb0bb0bb0bb0bb0bb0bb0bb0bb0bb0bb0bb0bb0bb0bb0b0";
const WRONG: &str = "00000000000000000000000000000000000000000000000000000000000000";

/// A token file: alice (admin, every cluster), grafana (read), payments (admin of
/// `payments` only).
fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("tokens");
    write_private(
        &path,
        &format!(
            "# name role token clusters\nalice admin {ALICE}\ngrafana read {GRAFANA}\n\
             payments admin {PAYMENTS} payments\n"
        ),
    );
    path
}

/// An answer: status, `WWW-Authenticate`, body (JSON if it is).
struct Answer {
    status: u16,
    challenge: Option<String>,
    body: Value,
}

fn agent(ca: Option<&Path>) -> ureq::Agent {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).expect("ca file");
        let cert = ureq::tls::Certificate::from_pem(&pem).expect("ca pem");
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]));
    }
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .tls_config(tls.build())
            .build(),
    )
}

fn request(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> Answer {
    let agent = agent(None);
    let auth = token.map(|t| format!("Bearer {t}"));
    let answer = match (method, body) {
        ("GET", _) => {
            let mut r = agent.get(url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.call()
        }
        ("DELETE", _) => {
            let mut r = agent.delete(url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.call()
        }
        ("PUT", Some(body)) => {
            let mut r = agent.put(url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.send(body)
        }
        other => panic!("no such request {other:?}"),
    };
    let mut response = answer.expect("the keeper answers");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let text = response.body_mut().read_to_string().expect("a body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        challenge,
        body,
    }
}

/// Runs the CLI with `--http url` and the token in `ZEROKEEPER_TOKEN` (if any).
use procs::cli_at as cli;

/// Waits until `check` holds, or fails with `what`.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "waited in vain for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The status of `A` in the cluster's listing (read with alice's token).
fn status_of_a(keeper: &Keeper) -> Option<String> {
    let url = format!("{}/v1/clusters/{CLUSTER}/proxies/{A}", keeper.http);
    let answer = request("GET", &url, Some(ALICE), None);
    (answer.status == 200).then(|| answer.body["status"].as_str().unwrap_or("").to_owned())
}

fn problem_type(answer: &Answer) -> &str {
    answer.body["type"].as_str().unwrap_or("")
}

#[test]
fn changes_need_an_admin_token_of_the_cluster_and_name_it_in_the_audit() {
    let dir = fresh_dir("auth");
    let tokens = token_file(&dir);
    let data = dir.join("data");
    let mut keeper = Keeper::start_with(
        &data,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--admin-token-file", tokens.to_str().expect("utf-8")],
    );
    let _proxy = keeper.proxy(A, &[]);
    wait_for("A up", || status_of_a(&keeper).as_deref() == Some("up"));
    let base = keeper.http.clone();
    let proxy_url = format!("{base}/v1/clusters/{CLUSTER}/proxies/{A}");
    let config_url = format!("{base}/v1/clusters/{CLUSTER}/config");

    // Reads are open without --auth-reads; the probes always are, even with a bad token.
    assert_eq!(
        request("GET", &format!("{base}/v1/proxies"), None, None).status,
        200
    );
    assert_eq!(
        request("GET", &format!("{base}/livez"), Some(WRONG), None).status,
        200
    );
    assert_eq!(
        request("GET", &format!("{base}/readyz"), None, None).status,
        200
    );
    // A presented token the keeper does not hold is refused even where none is needed.
    let bad = request("GET", &format!("{base}/v1/proxies"), Some(WRONG), None);
    assert_eq!(
        (bad.status, problem_type(&bad)),
        (401, "urn:zerokeeper:problem:unauthorized")
    );

    // No token: 401 with a Bearer challenge, as problem+json; nothing changed.
    let none = request("DELETE", &proxy_url, None, None);
    assert_eq!(none.status, 401, "{}", none.body);
    assert_eq!(problem_type(&none), "urn:zerokeeper:problem:unauthorized");
    assert_eq!(
        none.challenge.as_deref(),
        Some("Bearer realm=\"zerokeeper\"")
    );
    // Config contents are credentials: an admin token even to read them.
    assert_eq!(request("GET", &config_url, None, None).status, 401);
    assert_eq!(request("GET", &config_url, Some(GRAFANA), None).status, 403);
    // A wrong token: 401, invalid_token.
    let wrong = request("PUT", &config_url, Some(WRONG), Some("x = 1\n"));
    assert_eq!(wrong.status, 401);
    assert!(
        wrong
            .challenge
            .as_deref()
            .is_some_and(|c| c.contains("invalid_token"))
    );
    // A read token, or an admin token of another cluster: 403.
    let read = request("DELETE", &proxy_url, Some(GRAFANA), None);
    assert_eq!(
        (read.status, problem_type(&read)),
        (403, "urn:zerokeeper:problem:forbidden")
    );
    let other = request("PUT", &config_url, Some(PAYMENTS), Some("x = 1\n"));
    assert_eq!(other.status, 403, "{}", other.body);
    assert!(
        other.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("payments"))
    );

    // The CLI: exit 7 without a token or with a read token, the proxy untouched.
    let (code, _, err) = cli(&base, None, &["remove", "--cluster", CLUSTER, "--addr", A]);
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("ZEROKEEPER_TOKEN"), "{err}");
    let (code, _, err) = cli(
        &base,
        Some(GRAFANA),
        &["remove", "--cluster", CLUSTER, "--addr", A],
    );
    assert_eq!(code, 7, "{err}");
    let config = dir.join("proxy.toml");
    std::fs::write(&config, "max_connections = 10\n").expect("config");
    let config = config.to_str().expect("utf-8");
    let (code, _, err) = cli(
        &base,
        Some(PAYMENTS),
        &["push-config", "--cluster", CLUSTER, "--file", config],
    );
    assert_eq!(code, 7, "{err}");
    assert_eq!(status_of_a(&keeper).as_deref(), Some("up"));
    let version = |keeper: &Keeper| {
        request(
            "GET",
            &format!("{}/v1/clusters/{CLUSTER}/config", keeper.http),
            Some(ALICE),
            None,
        )
        .body["version"]
            .as_u64()
    };
    assert_eq!(version(&keeper), Some(1), "nothing was pushed");

    // alice may, from a token file; the audit record names her.
    let alice_file = dir.join("alice.token");
    write_private(&alice_file, &format!("{ALICE}\n"));
    let (code, out, err) = cli(
        &base,
        None,
        &[
            "push-config",
            "--cluster",
            CLUSTER,
            "--file",
            config,
            "--token-file",
            alice_file.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(version(&keeper), Some(2));
    keeper
        .process
        .wait_log(&["operator action", "by=\"alice\""]);
    // The history and the versions' contents are credentials too.
    for path in [
        "config/history",
        "config/versions/2",
        "config/versions/current",
    ] {
        let url = format!("{config_url}/{}", path.trim_start_matches("config/"));
        assert_eq!(
            request("GET", &url, Some(GRAFANA), None).status,
            403,
            "{path}"
        );
        let answer = request("GET", &url, Some(ALICE), None);
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    }
    let history = request("GET", &format!("{config_url}/history"), Some(ALICE), None);
    assert_eq!(
        history.body["versions"][0]["by"], "alice",
        "{}",
        history.body
    );

    // SIGHUP: grafana's token is withdrawn, bob's (admin) comes in.
    write_private(
        &tokens,
        &format!("alice admin {ALICE}\nbob admin {BOB} {CLUSTER}\n"),
    );
    keeper.process.signal(Signal::SIGHUP);
    keeper.process.wait_log(&["configuration reloaded"]);
    assert_eq!(request("GET", &config_url, Some(GRAFANA), None).status, 401);
    let (code, out, err) = cli(
        &base,
        Some(BOB),
        &["remove", "--cluster", CLUSTER, "--addr", A, "--force"],
    );
    assert_eq!(code, 0, "{out}{err}");
    // A token file that no longer parses is reported; the tokens in force stay.
    write_private(&tokens, "bob admin short\n");
    keeper.process.signal(Signal::SIGHUP);
    keeper.process.wait_log(&["configuration not reloaded"]);
    assert_eq!(request("GET", &config_url, Some(BOB), None).status, 200);

    // The audit record, through the CLI (a read: open here, without --auth-reads).
    let (code, out, err) = cli(
        &base,
        Some(BOB),
        &["audit", "--cluster", CLUSTER, "-o", "json"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let listed: Value = serde_json::from_str(&out).expect("json");
    let who: Vec<(&str, &str, &str)> = listed["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or(""),
                e["by"].as_str().unwrap_or("-"),
                e["result"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        who,
        [("push_config", "alice", "done"), ("remove", "bob", "done")],
        "{out}"
    );
    let (code, out, err) = cli(&base, Some(ALICE), &["audit", "--by", "bob"]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("TIME"), "{out}");
    assert!(
        lines[1].contains(&format!("bob  remove  {CLUSTER}  done    {A} (was up)")),
        "{out}"
    );

    keeper.process.signal(Signal::SIGTERM);
    assert_eq!(keeper.process.wait_exit(), 0);
    let store = zerokeeper::store::redb::RedbStore::open(&data).expect("the store opens");
    let audit: Vec<Value> = zerokeeper::store::Store::audit(&store)
        .expect("audit")
        .iter()
        .map(|e| serde_json::from_str(&e.action).expect("json"))
        .collect();
    let by: Vec<(&str, &str)> = audit
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap_or(""),
                a["by"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        by,
        [("push_config", "alice"), ("remove", "bob")],
        "{audit:?}"
    );
}

#[test]
fn with_auth_reads_every_read_but_the_probes_needs_a_token_of_its_scope() {
    let dir = fresh_dir("auth-reads");
    let tokens = token_file(&dir);
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
    let _proxy = keeper.proxy(A, &[]);
    wait_for("A up", || status_of_a(&keeper).as_deref() == Some("up"));
    let base = keeper.http.clone();
    for path in [
        "/v1/proxies",
        "/v1/clusters",
        "/metrics",
        "/v1/store",
        "/v1/keys",
        "/v1/audit",
    ] {
        let url = format!("{base}{path}");
        let answer = request("GET", &url, None, None);
        assert_eq!(answer.status, 401, "{path}: {}", answer.body);
        assert_eq!(
            request("GET", &url, Some(GRAFANA), None).status,
            200,
            "{path}"
        );
        // A token limited to some clusters reads no fleet-wide listing.
        assert_eq!(
            request("GET", &url, Some(PAYMENTS), None).status,
            403,
            "{path}"
        );
    }
    let cluster = format!("{base}/v1/clusters/{CLUSTER}/proxies");
    assert_eq!(request("GET", &cluster, Some(PAYMENTS), None).status, 403);
    assert_eq!(request("GET", &cluster, Some(GRAFANA), None).status, 200);
    assert_eq!(
        request("GET", &format!("{base}/livez"), None, None).status,
        200
    );
    assert_eq!(
        request("GET", &format!("{base}/readyz"), None, None).status,
        200
    );
    // The watch of one cluster with a token of another: 403, before any stream.
    let watch = format!("{base}/v1/watch?cluster={CLUSTER}");
    assert_eq!(request("GET", &watch, Some(PAYMENTS), None).status, 403);
    // The audit record of its own cluster, though, it reads.
    for (cluster, status) in [("payments", 200), (CLUSTER, 403)] {
        let audit = format!("{base}/v1/audit?cluster={cluster}");
        assert_eq!(request("GET", &audit, Some(PAYMENTS), None).status, status);
    }

    // The CLI reads with a token, and says what to do without one.
    let (code, out, err) = cli(
        &base,
        Some(GRAFANA),
        &["status", "--cluster", CLUSTER, "-o", "keys"],
    );
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            format!("/zerodb/proxy/{CLUSTER}/status/{A}->up\n").as_str()
        ),
        "{err}"
    );
    let (code, _, err) = cli(&base, None, &["status"]);
    assert_eq!(code, 7, "{err}");

    // A snapshot holds every config: only an admin token of the whole fleet takes one.
    let snapshot = format!("{base}/v1/snapshot");
    for (token, status) in [(None, 401), (Some(GRAFANA), 403), (Some(PAYMENTS), 403)] {
        assert_eq!(
            request("GET", &snapshot, token, None).status,
            status,
            "{token:?}"
        );
    }
    let file = dir.join("backup.snapshot");
    let path = file.to_str().expect("utf-8");
    let (code, _, err) = cli(&base, Some(GRAFANA), &["snapshot", "save", path]);
    assert_eq!(code, 7, "{err}");
    assert!(!file.exists(), "nothing is left of a refused snapshot");
    let (code, out, err) = cli(&base, Some(ALICE), &["snapshot", "save", path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 proxies in 1 clusters"), "{out}");
}

/// A CA and a server certificate it signed for `localhost` and `127.0.0.1`, as PEM
/// files in `dir` named after `name`: (CA certificate, server certificate, server key).
fn certificates(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("zerokeeper test CA {name}"),
    );
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("server params");
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    let ca_file = dir.join(format!("{name}-ca.pem"));
    let cert_file = dir.join(format!("{name}-cert.pem"));
    let key_file = dir.join(format!("{name}-key.pem"));
    std::fs::write(&ca_file, ca_cert.pem()).expect("write");
    std::fs::write(&cert_file, cert.pem()).expect("write");
    write_private(&key_file, &key.serialize_pem());
    (ca_file, cert_file, key_file)
}

#[test]
fn the_cli_speaks_https_with_the_keepers_ca_and_a_renewed_certificate_needs_no_restart() {
    let dir = fresh_dir("tls");
    let (ca, cert, key) = certificates(&dir, "first");
    // The keeper reads the files it was given again on SIGHUP: keep their names.
    let (cert_in_use, key_in_use) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(&cert, &cert_in_use).expect("copy");
    std::fs::copy(&key, &key_in_use).expect("copy");
    let tokens = token_file(&dir);
    let keeper = Keeper::start_with(
        &dir.join("data"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--tls-cert",
            cert_in_use.to_str().expect("utf-8"),
            "--tls-key",
            key_in_use.to_str().expect("utf-8"),
            "--admin-token-file",
            tokens.to_str().expect("utf-8"),
        ],
    );
    let https = format!("https://{}", keeper.http_addr());
    let https_local = https.replace("127.0.0.1", "localhost");
    let _proxy = keeper.proxy(A, &[]);
    let ca_arg = ca.to_str().expect("utf-8");
    let status = |url: &str, ca: &str| {
        cli(
            url,
            None,
            &["status", "--cluster", CLUSTER, "-o", "keys", "--cacert", ca],
        )
    };
    wait_for("A up over https", || {
        status(&https, ca_arg).1 == format!("/zerodb/proxy/{CLUSTER}/status/{A}->up\n")
    });
    // By name too (the certificate has both).
    let (code, out, err) = status(&https_local, ca_arg);
    assert_eq!(code, 0, "{out}{err}");
    // A change over https with a token.
    let config = dir.join("proxy.toml");
    std::fs::write(&config, "max_connections = 10\n").expect("config");
    let (code, out, err) = cli(
        &https,
        Some(ALICE),
        &[
            "push-config",
            "--cluster",
            CLUSTER,
            "--file",
            config.to_str().expect("utf-8"),
            "--cacert",
            ca_arg,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    // Without the CA the certificate is not trusted; plain HTTP gets no answer.
    let (code, _, err) = cli(&https, None, &["status"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
    let (code, _, err) = cli(&keeper.http, None, &["status"]);
    assert_ne!(code, 0, "{err}");

    // A renewed certificate of another CA: in force after SIGHUP, no restart.
    let (ca2, cert2, key2) = certificates(&dir, "second");
    std::fs::copy(&cert2, &cert_in_use).expect("copy");
    std::fs::copy(&key2, &key_in_use).expect("copy");
    keeper.process.signal(Signal::SIGHUP);
    keeper
        .process
        .wait_log(&["configuration reloaded", "TLS certificate"]);
    let ca2_arg = ca2.to_str().expect("utf-8");
    let (code, out, err) = status(&https, ca2_arg);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = status(&https, ca_arg);
    assert_eq!(
        code, 1,
        "the old CA no longer vouches for the keeper: {err}"
    );
}
