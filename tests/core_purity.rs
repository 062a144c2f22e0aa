//! The cores are sans-IO: they import nothing that reads a clock, touches a socket or a
//! file, spawns, or draws randomness. This reads their source and fails on any such name.

use std::fs;
use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "tokio",
    "turmoil",
    "axum",
    "redb",
    "UdpSocket",
    "TcpStream",
    "TcpListener",
    "std::time::Instant",
    "SystemTime",
    "std::thread",
    "std::fs",
    "std::io",
    "std::env",
    "rand::",
    "rand_chacha",
    "getrandom",
];

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in fs::read_dir(dir).expect("source directory exists") {
        let path = entry.expect("readable entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path).expect("readable source");
            out.push((path.display().to_string(), text));
        }
    }
}

#[test]
fn the_keeper_and_agent_cores_import_no_clock_socket_file_thread_or_randomness() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for core in ["keeper", "agent"] {
        sources(&root.join(core), &mut files);
    }
    // The modules the cores are built from are held to the same rule.
    for shared in [
        "wire.rs",
        "auth.rs",
        "identity.rs",
        "configdoc.rs",
        "time.rs",
    ] {
        let path = root.join(shared);
        files.push((
            path.display().to_string(),
            fs::read_to_string(&path).expect("readable source"),
        ));
    }
    assert!(files.len() >= 12, "found only {} files", files.len());
    let mut found = Vec::new();
    for (path, text) in &files {
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in FORBIDDEN {
                if code.contains(word) {
                    found.push(format!("{path}:{}: {word}", n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the cores must stay sans-IO:\n{}",
        found.join("\n")
    );
}
