//! The real `p4lb-controller` binary under a service manager (`NOTIFY_SOCKET`):
//! `READY=1` comes once the API socket exists and the switch is in sync, and
//! `STOPPING=1` at SIGTERM.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use p4lb_proto::api;

/// Next datagram on `sock`, or None after `timeout`.
fn recv(sock: &UnixDatagram, timeout: Duration) -> Option<String> {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_once_the_api_socket_is_bound_and_the_switch_in_sync() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let _sw = start_switch(&ssock).await;
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let api_sock = dir.join("api.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_p4lb-controller"))
        .args([
            "--config",
            "/dev/null",
            "--state-dir",
            dir.join("state").to_str().unwrap(),
            "--socket",
            api_sock.to_str().unwrap(),
            "--switch-address",
            &format!("unix:{}", ssock.display()),
        ])
        .env("NOTIFY_SOCKET", &notify_path)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawning p4lb-controller");

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let ready = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(msg) = recv(&notify, left.max(Duration::from_millis(1))) else {
            break false;
        };
        let is_ready = msg.lines().any(|l| l == "READY=1");
        if is_ready {
            // At READY=1 the API socket is there.
            assert!(api_sock.exists(), "READY=1 before {}", api_sock.display());
        }
        seen.push(msg);
        if is_ready {
            break true;
        }
    };
    assert!(ready, "no READY=1 within 20 s; got {seen:?}");
    assert!(
        seen.iter().any(|m| m.contains("STATUS=API on ")),
        "no STATUS line before READY: {seen:?}"
    );
    // Ready means serving and in sync.
    let mut c = api_client(&api_sock).await.unwrap();
    let st = c.status(api::StatusRequest {}).await.unwrap().into_inner();
    assert!(st.ready, "{st:?}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopping = recv(&notify, Duration::from_secs(10)).unwrap_or_default();
    assert!(
        stopping.lines().any(|l| l == "STOPPING=1"),
        "no STOPPING=1 at SIGTERM: {stopping:?}"
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
