//! A configuration value out of range stops the daemon with an error naming the
//! key, before it starts anything; it never panics on an overflow.

mod common;

use std::process::{Command, Stdio};

use common::exit_of;

#[test]
fn an_out_of_range_value_is_an_error_naming_the_key_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let config = d.path().join("controller.toml");
    std::fs::write(&config, "[conn]\nidle_timeout_ms = 9223372036854775807\n").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_p4lb-controller"))
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(d.path().join("state"))
        .arg("--socket")
        .arg(d.path().join("api.sock"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, err) = exit_of(
        child,
        "the controller kept running with an out-of-range value",
    );
    assert!(!status.success());
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("conn.idle_timeout_ms = 9223372036854775807 is out of range"),
        "{err}"
    );
}

/// The configuration the packaging installs is valid and points the controller at the
/// standalone switch's default socket (the switch runs as its own service).
#[test]
fn the_packaged_configuration_points_at_the_switch_service() {
    let path = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../packaging/p4lb/controller.toml"
    ));
    let cfg = p4lb_controller::Config::load(path, true).expect("packaging/p4lb/controller.toml");
    assert_eq!(
        cfg.switch.kind,
        p4lb_controller::config::SwitchKind::Software
    );
    assert_eq!(
        cfg.switch.address,
        format!("unix:{}", p4lb_switch::access::DEFAULT_SOCKET)
    );
}
