//! The README's "By hand" block, pasted into `bash` as it is, with two substitutions: the
//! build line puts this test's binary on `PATH` instead of building a release (the suite
//! built it already), and the keeper's ports are free ones (`127.0.0.1:7821` in the
//! block, `ZEROKEEPER_UDP`, `ZEROKEEPER_HTTP_LISTEN` and `ZEROKEEPER_HTTP` around it).
//! It must run to its end by itself, and say what the README says it says.

mod procs;

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::Command;

const README: &str = include_str!("../README.md");

/// The first `sh` block after the "### By hand" heading.
fn by_hand_block() -> &'static str {
    let section = &README[README.find("### By hand").expect("a By hand section")..];
    let start = section.find("```sh\n").expect("an sh block") + "```sh\n".len();
    let end = section[start..].find("```").expect("the block's end");
    &section[start..start + end]
}

#[test]
fn the_by_hand_block_runs_to_its_end_in_bash_and_says_what_the_readme_says() {
    let block = by_hand_block();
    let build =
        "cargo build --release && export PATH=${CARGO_TARGET_DIR:-$PWD/target}/release:$PATH";
    assert!(
        block.starts_with(build),
        "the block's first line changed:\n{block}"
    );
    let bin_dir = Path::new(procs::BIN)
        .parent()
        .expect("the binary's directory");
    let udp = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port");
    let http = TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free TCP port");
    let script = block
        .replacen(
            build,
            &format!("export PATH={}:$PATH", bin_dir.display()),
            1,
        )
        .replace("127.0.0.1:7821", &udp.to_string());
    assert!(
        script.contains(&udp.to_string()),
        "no keeper address to substitute"
    );
    // Bounded: the block must end by itself well within this.
    let out = Command::new("timeout")
        .args(["120", "bash", "-c", &script])
        .env("ZEROKEEPER_UDP", udp.to_string())
        .env("ZEROKEEPER_HTTP_LISTEN", http.to_string())
        .env("ZEROKEEPER_HTTP", format!("http://{http}"))
        .env_remove("ZEROKEEPER_TOKEN")
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the block did not end by itself\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // The refused push names the lost proxy; the second is stored as version 2.
    assert!(
        stderr.contains("gate closed") && stderr.contains("10.25.0.11:3000"),
        "{stderr}"
    );
    assert!(stdout.contains("version 2"), "{stdout}");
    // The last listing: .11 up, alone (.12 unregistered, .13 removed).
    let last = stdout
        .rsplit("PROXY")
        .next()
        .expect("a listing with a header");
    assert!(
        last.contains("10.25.0.11:3000") && last.contains("up"),
        "{stdout}"
    );
    assert!(
        !last.contains("10.25.0.12:3000") && !last.contains("10.25.0.13:3000"),
        "{stdout}"
    );
}
