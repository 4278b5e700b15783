//! A second controller on a state directory that is in use exits with a clear
//! error before it creates its API socket.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    let mut child = Command::new(env!("CARGO_BIN_EXE_p4lb-controller"))
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
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the second controller kept running on a locked state directory");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("another p4lb-controller is running on state directory"),
        "{err}"
    );
    assert!(!socket.exists(), "the API socket was created");
}
