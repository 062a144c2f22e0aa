//! `zerokeeper demo`: the seed scenario live on loopback, through the real binary.

use std::process::Command;

#[test]
fn the_demo_plays_all_thirteen_steps_and_exits_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_zerokeeper"))
        .arg("demo")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    // Same listings as the replay on the cores: the scenario is one value for both.
    let replay = Command::new(env!("CARGO_BIN_EXE_zerokeeper"))
        .arg("scenario")
        .output()
        .expect("the binary runs");
    assert_eq!(stdout, String::from_utf8_lossy(&replay.stdout));
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("step ")).count(),
        13
    );
    assert!(stderr.contains("http listening on"), "{stderr}");
}
