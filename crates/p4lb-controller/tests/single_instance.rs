//! A second controller on a state directory that is in use exits with a clear
//! error before it creates its API socket.

mod common;

use std::process::{Command, Stdio};

use common::exit_of;

use p4lb_controller::lock::StateLock;

#[test]
fn a_second_controller_on_the_same_state_exits_before_touching_sockets() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let socket = d.path().join("api.sock");
    let config = d.path().join("controller.toml");
    std::fs::write(&config, "").unwrap();
    // The "first controller": this process holds the state directory.
    let _held = StateLock::acquire(&state).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_p4lb-controller"))
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .arg("--socket")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, err) = exit_of(
        child,
        "the second controller kept running on a locked state directory",
    );
    assert!(!status.success());
    assert!(
        err.contains("another p4lb-controller is running on state directory"),
        "{err}"
    );
    assert!(!socket.exists(), "the API socket was created");
}
