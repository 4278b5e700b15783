//! `p4lbctl` against a running controller: tables aligned with 64-character
//! container ids, `show` in human form unless `--json` (which is unchanged), and
//! a reader that goes away early is no error.

mod common;

use std::process::Command;

use common::*;
use p4lb_proto::api;

fn stdout_ok(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_p4lbctl"))
        .arg("--socket")
        .arg(dir.join("api.sock"))
        .args(args)
        .output()
        .expect("running p4lbctl");
    assert!(
        out.status.success(),
        "p4lbctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Where `word` starts on each line (in characters).
fn column(text: &str, line: usize, word: &str) -> usize {
    let l = text.lines().nth(line).unwrap();
    l.find(word)
        .unwrap_or_else(|| panic!("{word} not on line {line}: {l}"))
}

const LONG: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// A controller with two endpoints: one with a 64-character container id.
async fn with_endpoints() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    p4lb_switch::SwitchHandle,
    Ctl,
) {
    let (d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let mut ctl = Ctl::start(config(&dir, &ssock)).await;
    assert_eq!(LONG.len(), 64);
    for (i, cid) in [LONG, "b"].into_iter().enumerate() {
        ctl.client
            .register_endpoint(register_req(
                cid,
                &format!("10.88.7.{}", i + 10),
                &format!("02:00:00:00:07:{:02x}", i + 10),
                "",
            ))
            .await
            .unwrap();
    }
    (d, dir, sw, ctl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_fit_64_character_container_ids() {
    let (_d, dir, _sw, ctl) = with_endpoints().await;
    let ls = tokio::task::spawn_blocking(move || stdout_ok(&dir, &["endpoints", "ls"]))
        .await
        .unwrap();
    // Header and both rows: every column starts at the same place.
    assert_eq!(ls.lines().count(), 3, "{ls}");
    for (line, ip) in [(1, "10.88.7.10"), (2, "10.88.7.11")] {
        assert_eq!(column(&ls, 0, "IP"), column(&ls, line, ip), "{ls}");
        assert_eq!(column(&ls, 0, "MAC"), column(&ls, line, "02:00:00"), "{ls}");
    }
    assert!(ls
        .lines()
        .nth(1)
        .unwrap()
        .starts_with(&format!("{LONG}/eth0 ")));
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_is_human_unless_json() {
    let (_d, dir, _sw, ctl) = with_endpoints().await;
    let key = format!("{LONG}/eth0");
    let k = key.clone();
    let (show, show_json) = tokio::task::spawn_blocking(move || {
        (
            stdout_ok(&dir, &["endpoints", "show", &k]),
            stdout_ok(&dir, &["--json", "endpoints", "show", &k]),
        )
    })
    .await
    .unwrap();
    // Human form: no JSON, the fields by name.
    assert!(!show.trim_start().starts_with('{'), "{show}");
    assert!(
        show.lines()
            .any(|l| l.starts_with("key:") && l.ends_with(&key)),
        "{show}"
    );
    assert!(show.contains("10.88.7.10/24"), "{show}");
    // --json is the API message, as before.
    let e: api::Endpoint = serde_json::from_str(&show_json).expect("--json output");
    assert_eq!(e.key, key);
    assert_eq!(e.ip, "10.88.7.10");
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_p4lbctl_quietly() {
    let (_d, dir, _sw, ctl) = with_endpoints().await;
    let d = dir.clone();
    let out = tokio::task::spawn_blocking(move || {
        // `p4lbctl endpoints ls | true`: the reader is gone before p4lbctl writes.
        // The pipe is made by the shell, so no other process of this test can
        // hold its read end open.
        Command::new("sh")
            .arg("-c")
            .arg(r#"{ "$0" --socket "$1" endpoints ls 2>"$2"; echo $? >"$3"; } | true"#)
            .arg(env!("CARGO_BIN_EXE_p4lbctl"))
            .arg(d.join("api.sock"))
            .arg(d.join("stderr"))
            .arg(d.join("status"))
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.success());
    let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap();
    let status = std::fs::read_to_string(dir.join("status")).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.trim(), "0", "{stderr}");
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_ports_lists_bmv2_ports_through_the_controller() {
    // The controller in BMv2 mode: P4Runtime served by the software switch (it keeps
    // any device config), ports from a stand-in for BMv2's Thrift API. Port 300 is
    // outside the controller's range, so reconciliation leaves it alone.
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let _sw = start_switch(&ssock).await;
    let json = dir.join("p4lb.json");
    std::fs::write(&json, "{}").unwrap();
    let mut cfg = config(&dir, &ssock);
    cfg.switch.kind = p4lb_controller::config::SwitchKind::Bmv2;
    cfg.switch.bmv2_json = json;
    cfg.switch.thrift = fake_thrift::serve(vec![(300, "bm300".to_string())]);
    let ctl = Ctl::start(cfg).await;
    let d = dir.clone();
    let (human, json_out) = tokio::task::spawn_blocking(move || {
        (
            stdout_ok(&d, &["switch", "ports"]),
            stdout_ok(&d, &["--json", "switch", "ports"]),
        )
    })
    .await
    .unwrap();
    let row = human
        .lines()
        .find(|l| l.contains("bm300"))
        .unwrap_or_else(|| panic!("no row for port 300: {human}"));
    assert!(row.trim_start().starts_with("300"), "{row}");
    assert!(row.contains(" - "), "BMv2 reports no counters: {row}");
    let ports: Vec<api::Port> = serde_json::from_str(&json_out).expect("--json output");
    assert_eq!(ports.len(), 1, "{json_out}");
    assert_eq!((ports[0].port, ports[0].iface.as_str()), (300, "bm300"));
    ctl.stop().await;
}
