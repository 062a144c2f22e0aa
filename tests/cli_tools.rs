//! The CLI's own tools through the real binary: shell completions and man pages
//! generated from the same definitions it parses with, `zerokeeper version` against a
//! real keeper and against one of another release, and `status`'s filters, order and
//! header options.

mod procs;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;

use nix::sys::signal::Signal;
use procs::{BIN, CLUSTER, Keeper, cli_at, fresh_dir};

/// Runs the binary with `args` alone: (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("ZEROKEEPER_HTTP")
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_bash_completion_loads_into_bash_and_knows_every_command_and_flag() {
    let (code, script, err) = run(&["completion", "bash"]);
    assert_eq!(code, 0, "{err}");
    for word in [
        "push-config",
        "hostgroup",
        "rollout",
        "--expect-version",
        "--cluster",
    ] {
        assert!(
            script.contains(word),
            "{word} missing from the bash completion"
        );
    }
    // Sourced into a real bash, it registers a completion for the command.
    let file = fresh_dir("completion").join("zerokeeper.bash");
    std::fs::write(&file, &script).expect("write the script");
    let out = Command::new("bash")
        .args(["--norc", "-c"])
        .arg(format!(
            "source {} && complete -p zerokeeper",
            file.display()
        ))
        .output()
        .expect("bash runs");
    let registered = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && registered.contains("zerokeeper"),
        "{registered}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (code, zsh, _) = run(&["completion", "zsh"]);
    assert_eq!(code, 0);
    assert!(zsh.starts_with("#compdef zerokeeper"), "{zsh}");
    let (code, fish, _) = run(&["completion", "fish"]);
    assert_eq!(code, 0);
    assert!(
        fish.contains("complete -c zerokeeper") && fish.contains("push-config"),
        "{fish}"
    );
    let (code, _, err) = run(&["completion", "tcsh"]);
    assert_eq!(code, 2, "an unknown shell is a usage error: {err}");
    assert!(err.contains("bash") && err.contains("zsh"), "{err}");
}

#[test]
fn man_writes_a_page_per_command_and_prints_the_top_one() {
    let dir = fresh_dir("man");
    let (code, out, err) = run(&["man", "--dir", dir.to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "{err}");
    let listed: Vec<&str> = out.lines().collect();
    for page in [
        "zerokeeper.1",
        "zerokeeper-status.1",
        "zerokeeper-push-config.1",
        "zerokeeper-hostgroup-delete.1",
        "zerokeeper-rollout.1",
    ] {
        let path = dir.join(page);
        assert!(
            listed.contains(&path.to_str().expect("utf-8 path")),
            "{page} not listed: {out}"
        );
        let text = std::fs::read_to_string(&path).expect("the page was written");
        let name = page.trim_end_matches(".1");
        assert!(text.contains(&format!(".TH {name} 1")), "{page}: {text}");
    }
    // The hidden benchmark sink has no page.
    assert!(!dir.join("zerokeeper-bench-sink.1").exists());
    let status = std::fs::read_to_string(dir.join("zerokeeper-status.1")).expect("read");
    assert!(
        status.contains("\\-\\-http") && status.contains("[default: http://127.0.0.1:7822]"),
        "{status}"
    );

    let (code, top, _) = run(&["man"]);
    assert_eq!(code, 0);
    assert!(top.contains(".TH zerokeeper 1"), "{top}");
    assert!(top.contains("push\\-config"), "{top}");
}

#[test]
fn version_prints_the_client_and_the_keeper_and_warns_only_on_skew() {
    let keeper = Keeper::start();
    let ours = env!("CARGO_PKG_VERSION");
    let (code, out, err) = keeper.cli(&["version"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!("client: zerokeeper {ours}"),
            format!(
                "keeper: zerokeeper {ours} at {} (heartbeat protocols 1, 2)",
                keeper.http
            ),
        ]
    );
    assert!(!err.contains("warning"), "{err}");
    // A base URL pasted with the API's prefix is the keeper's base URL.
    let (code, with_prefix, err) = cli_at(&format!("{}/v1/", keeper.http), None, &["version"]);
    assert_eq!((code, with_prefix.as_str()), (0, out.as_str()), "{err}");
    let version = keeper.get_json("/v1/version").expect("the version");
    assert_eq!(version["version"], ours);
    assert_eq!(version["protocols"], serde_json::json!([1, 2]));

    // A keeper of another release: the versions are printed and the skew warned about.
    let other = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let url = format!("http://{}", other.local_addr().expect("bound"));
    let server = std::thread::spawn(move || {
        let (stream, _) = other.accept().expect("the client connects");
        let mut reader = BufReader::new(stream.try_clone().expect("a second handle"));
        let mut request = String::new();
        reader.read_line(&mut request).expect("a request line");
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).expect("a header") <= 2 {
                break;
            }
        }
        let body = r#"{"version":"9.9.9","protocols":[2]}"#;
        write!(
            &stream,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("answer");
        request
    });
    let (code, out, err) = cli_at(&url, None, &["version"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("client: zerokeeper {ours}"))
            && out.contains("keeper: zerokeeper 9.9.9"),
        "{out}"
    );
    assert!(
        err.contains("warning: this client is zerokeeper") && err.contains("the keeper 9.9.9"),
        "{err}"
    );
    let request = server.join().expect("the canned keeper");
    assert!(request.starts_with("GET /v1/version "), "{request}");

    // Only the client: no keeper asked.
    let (code, out, _) = run(&["version", "--client"]);
    assert_eq!((code, out), (0, format!("client: zerokeeper {ours}\n")));
}

#[test]
fn an_unreachable_keeper_is_named_with_the_flag_and_variable_that_set_it() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let (code, out, err) = cli_at(&url, None, &["version"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with("client: zerokeeper "), "{out}");
    assert!(
        err.contains(&format!("cannot reach the keeper at {url}"))
            && err.contains("--http")
            && err.contains("ZEROKEEPER_HTTP"),
        "{err}"
    );
}

#[test]
fn status_filters_by_status_sorts_naturally_or_by_a_column_and_says_when_nothing_matches() {
    const A: &str = "10.25.0.2:3000";
    const B: &str = "10.25.0.11:3000";
    const C: &str = "10.25.0.3:3000";
    let keeper = Keeper::start();
    let _a = keeper.proxy(A, &[]);
    let _b = keeper.proxy(B, &[]);
    let c = keeper.proxy(C, &[]);
    keeper.wait_keys(&[(B, "up"), (A, "up"), (C, "up")]);
    c.signal(Signal::SIGSTOP);
    keeper.wait_keys(&[(B, "up"), (A, "up"), (C, "lost")]);
    let proxies = |out: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .collect()
    };

    // Natural order in the table: .2 before .3 before .11.
    let (code, out, err) = keeper.cli(&["status", "--cluster", CLUSTER]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(proxies(&out), ["PROXY", A, C, B], "{out}");
    // The seed's byte order in `-o keys`, as etcdctl prints keys.
    let (_, keys, _) = keeper.cli(&["status", "--cluster", CLUSTER, "-o", "keys"]);
    let order: Vec<&str> = keys
        .lines()
        .filter_map(|l| l.rsplit_once('/').map(|(_, rest)| rest))
        .collect();
    assert_eq!(
        order,
        [format!("{B}->up"), format!("{A}->up"), format!("{C}->lost")],
        "{keys}"
    );

    let (code, out, err) = keeper.cli(&["status", "--status", "lost", "--no-headers"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(proxies(&out), [C], "{out}");
    let (_, out, _) = keeper.cli(&["status", "--status", "lost,ready", "-o", "keys"]);
    assert_eq!(out, format!("/zerodb/proxy/{CLUSTER}/status/{C}->lost\n"));
    let (_, out, _) = keeper.cli(&["status", "--status", "up", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let names: Vec<&str> = json
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|p| p["proxy"].as_str())
        .collect();
    assert_eq!(names, [B, A], "{out}");
    let (code, out, err) = keeper.cli(&["status", "--sort-by", "status", "--no-headers"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(proxies(&out), [C, A, B], "{out}");

    // Nothing matches: said on stderr, nothing on stdout, exit 0.
    let (code, out, err) = keeper.cli(&["status", "--cluster", CLUSTER, "--status", "ready"]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert_eq!(
        err.trim_end(),
        format!("no proxies in cluster {CLUSTER} with status ready")
    );
    // An unknown cluster fails alike, listed or watched.
    for args in [
        &["status", "--cluster", "nosuch"][..],
        &["status", "-w", "--cluster", "nosuch"][..],
    ] {
        let (code, _, err) = keeper.cli(args);
        assert_eq!(code, 4, "{args:?}: {err}");
        assert_eq!(err.trim_end(), "error: no cluster named nosuch", "{args:?}");
    }
    // A filter is for a listing, not for a watch; a status that is none is a usage error.
    let (code, _, err) = keeper.cli(&["status", "-w", "--status", "up"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = keeper.cli(&["status", "--status", "gone"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ready") && err.contains("lost"), "{err}");
    c.signal(Signal::SIGCONT);
}

#[test]
fn push_config_reads_standard_input_given_file_dash() {
    let keeper = Keeper::start();
    let mut child = Command::new(BIN)
        .args([
            "push-config",
            "--create",
            "--cluster",
            CLUSTER,
            "--file",
            "-",
        ])
        .args(["--http", &keeper.http])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child
        .stdin
        .take()
        .expect("a pipe")
        .write_all(b"pool_size = 9\n")
        .expect("write the config");
    let out = child.wait_with_output().expect("it ends");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("pushed config version 2"));
    let (code, config, err) = keeper.cli(&["config", "get", "--cluster", CLUSTER]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(config, "pool_size = 9\n");
}

#[test]
fn serve_listens_with_http_listen_and_still_takes_the_deprecated_http_with_a_warning() {
    // The older spelling still starts a keeper, and says what to write instead.
    let old = Keeper::serve_with(
        &["serve", "--http", "127.0.0.1:0", "--udp", "127.0.0.1:0"],
        &[],
    );
    old.process.wait_log(&["deprecated", "--http-listen"]);
    assert_eq!(
        old.get_json("/v1/version").map(|v| v["version"].clone()),
        Some(env!("CARGO_PKG_VERSION").into())
    );
    // Its variable too.
    let env = Keeper::serve_with(
        &["serve", "--udp", "127.0.0.1:0"],
        &[("ZEROKEEPER_HTTP_ADDR", "127.0.0.1:0")],
    );
    env.process.wait_log(&["deprecated"]);
    // Both at once is a usage error, not a guess.
    let (code, _, err) = run(&[
        "serve",
        "--http",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--http-listen"), "{err}");
    // The new spelling warns about nothing of the kind.
    let new = Keeper::start();
    assert!(
        !new.process.log().contains("deprecated"),
        "{}",
        new.process.log()
    );
}

#[test]
fn registry_limits_and_the_mass_loss_floor_have_flags_and_variables() {
    let keeper = Keeper::serve_with(
        &[
            "serve",
            "--udp",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--max-proxies",
            "1234",
        ],
        &[
            ("ZEROKEEPER_MAX_CLUSTERS", "56"),
            ("ZEROKEEPER_MASS_LOSS_MIN_PROXIES", "7"),
        ],
    );
    let text = ureq::get(format!("{}/metrics", keeper.http))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default();
    assert!(
        text.contains("zerokeeper_registry_proxies_max 1234\n"),
        "{text}"
    );
    assert!(
        text.contains("zerokeeper_registry_clusters_max 56\n"),
        "{text}"
    );
    // The floor is in the keeper's start line.
    keeper
        .process
        .wait_log(&["keeper started", "mass_loss_min_proxies=7"]);
}

/// A YAML document (as `yaml-rust2` reads it, an independent parser) as a JSON value.
fn yaml_to_json(doc: &yaml_rust2::Yaml) -> serde_json::Value {
    use yaml_rust2::Yaml;
    match doc {
        Yaml::Null => serde_json::Value::Null,
        Yaml::Boolean(b) => (*b).into(),
        Yaml::Integer(i) => (*i).into(),
        Yaml::Real(r) => serde_json::Number::from_f64(r.parse().expect("a real"))
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Yaml::String(s) => s.clone().into(),
        Yaml::Array(items) => items.iter().map(yaml_to_json).collect(),
        Yaml::Hash(map) => map
            .iter()
            .map(|(k, v)| (k.as_str().expect("string keys").to_owned(), yaml_to_json(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        other => panic!("unexpected YAML {other:?}"),
    }
}

#[test]
fn yaml_output_is_the_json_document_in_yaml() {
    let keeper = Keeper::start();
    let _a = keeper.proxy("10.25.0.2:3000", &[]);
    let _b = keeper.proxy("[::1]:3000", &[]);
    keeper.wait_keys(&[("10.25.0.2:3000", "up"), ("[::1]:3000", "up")]);
    let (code, _, err) = keeper.push_config("pool_size = 8\n# yes: no\n");
    assert_eq!(code, 0, "{err}");
    for args in [
        &["status", "-o"][..],
        &["cluster", "list", "-o"],
        &["config", "history", "--cluster", CLUSTER, "-o"],
        &["config", "get", "--cluster", CLUSTER, "-o"],
        &["audit", "-o"],
    ] {
        let json_args: Vec<&str> = args.iter().copied().chain(["json"]).collect();
        let yaml_args: Vec<&str> = args.iter().copied().chain(["yaml"]).collect();
        let (code, json, err) = keeper.cli(&json_args);
        assert_eq!(code, 0, "{json_args:?}: {err}");
        let (code, yaml, err) = keeper.cli(&yaml_args);
        assert_eq!(code, 0, "{yaml_args:?}: {err}");
        let docs = yaml_rust2::YamlLoader::load_from_str(&yaml)
            .unwrap_or_else(|e| panic!("{yaml_args:?} is not YAML: {e}\n{yaml}"));
        assert_eq!(docs.len(), 1, "{yaml}");
        let mut from_yaml = yaml_to_json(&docs[0]);
        let mut from_json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        // Ages move between the two requests.
        for doc in [&mut from_yaml, &mut from_json] {
            strip_ages(doc);
        }
        assert_eq!(from_yaml, from_json, "{yaml_args:?}:\n{yaml}");
    }
}

/// Removes the members that change from one request to the next (ages, times seen).
fn strip_ages(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|k, _| !k.ends_with("_age_ms") && k != "last_heartbeat");
            map.values_mut().for_each(strip_ages);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_ages),
        _ => {}
    }
}

#[test]
fn a_keeper_that_does_not_answer_fails_the_request_after_timeout_naming_it() {
    // Accepts the connection and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let url = format!("http://{}", silent.local_addr().expect("bound"));
    let holder = std::thread::spawn(move || {
        let (stream, _) = silent.accept().expect("the client connects");
        // Hold it until the client gives up (it closes its end).
        let mut buf = [0u8; 1024];
        let mut reader = &stream;
        while std::io::Read::read(&mut reader, &mut buf).is_ok_and(|n| n > 0) {}
    });
    let began = std::time::Instant::now();
    let (code, out, err) = cli_at(&url, None, &["status", "--timeout", "300ms"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("no answer within 300ms") && err.contains("--timeout"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // It gave up by itself: long before the 10 s default (a bound, not a timing).
    assert!(began.elapsed() < std::time::Duration::from_secs(9));
    holder.join().expect("the silent keeper");
}

#[test]
fn a_bad_setting_is_said_once_on_one_line() {
    let dir = fresh_dir("bad-setting");
    let key = procs::key_file();
    let (code, _, err) = run(&[
        "serve",
        "--key-file",
        key.to_str().expect("utf-8"),
        "--data-dir",
        dir.join("data").to_str().expect("utf-8"),
        "--udp",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--lost-after",
        "500ms",
    ]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(
        err.matches("lost_after must be longer than the heartbeat interval")
            .count(),
        1,
        "{err}"
    );
    assert!(err.starts_with("error: invalid setting: "), "{err}");
    // Nothing was made: the data directory is checked after the settings.
    assert!(!dir.join("data").exists());
}

/// Runs `zerokeeper ARGS` on a pseudo-terminal (util-linux's `script`), with `env`:
/// what the terminal shows.
fn on_a_terminal(args: &str, env: &[(&str, &str)]) -> String {
    let out = Command::new("script")
        .args(["-qec", &format!("{BIN} {args}"), "/dev/null"])
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .output()
        .expect("script runs: install Debian's bsdutils package");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn statuses_are_coloured_on_a_terminal_only_and_never_with_no_color() {
    let keeper = Keeper::start();
    let _p = keeper.proxy("10.25.0.7:3000", &[]);
    keeper.wait_keys(&[("10.25.0.7:3000", "up")]);
    let args = format!("status --http {}", keeper.http);
    let coloured = on_a_terminal(&args, &[]);
    assert!(coloured.contains("\x1b[32mup\x1b[0m"), "{coloured:?}");
    let plain = on_a_terminal(&args, &[("NO_COLOR", "1")]);
    assert!(
        !plain.contains('\x1b') && plain.contains(" up "),
        "{plain:?}"
    );
    // Piped: no colour either.
    let (code, piped, _) = keeper.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(
        !piped.contains('\x1b') && piped.contains(" up "),
        "{piped:?}"
    );
}

#[test]
fn a_proxy_with_a_wrong_key_warns_with_the_likely_causes_and_every_line_names_it() {
    let keeper = Keeper::start();
    let dir = fresh_dir("wrong-key");
    let wrong = dir.join("wrong.key");
    procs::write_private(&wrong, &format!("{}\n", "77".repeat(32)));
    let lonely = procs::proxy_with_key(&keeper.udp, CLUSTER, "10.25.0.66:3000", &wrong, &[]);
    let warning = lonely.wait_log(&["no authenticated answer from any keeper"]);
    for cause in ["--key-file", "--cluster", "--keeper"] {
        assert!(warning.contains(cause), "{warning}");
    }
    // The line names the proxy it is about, as every line of a proxy does.
    assert!(
        warning.contains("cluster=test_cluster") && warning.contains("proxy=10.25.0.66:3000"),
        "{warning}"
    );
    // Said once, not every interval.
    let good = keeper.proxy("10.25.0.67:3000", &[]);
    keeper.wait_keys(&[("10.25.0.67:3000", "up")]);
    assert_eq!(lonely.log().matches("no authenticated answer").count(), 1);
    // A proxy that is answered never warns, and its lines name it too.
    let line = good.wait_log(&["initialised: going up"]);
    assert!(line.contains("proxy=10.25.0.67:3000"), "{line}");
    assert!(
        !good.log().contains("no authenticated answer"),
        "{}",
        good.log()
    );
}
