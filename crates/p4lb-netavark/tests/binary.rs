//! The built `p4lb-netavark` binary run the way netavark runs it (subcommand,
//! namespace path, JSON on stdin), against real network namespaces and a controller
//! socket nobody listens on: a failed setup leaves nothing, and a teardown removes a
//! veth a killed setup left behind, and only p4lb's own.

use std::io::Write;
use std::process::{Command, Stdio};

use p4lb_netavark::plugin::endpoint_id;
use p4lb_testutil::{require_root, unique_name, NamedNetns, Net};
use serde_json::{json, Value};

const PLUGIN: &str = env!("CARGO_BIN_EXE_p4lb-netavark");

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn plugin(args: &[&str], stdin: &str) -> Out {
    let mut child = Command::new(PLUGIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The input of setup/teardown for container `id` on network `net`, whose
/// controller socket is `socket`.
fn input(id: &str, net: &str, socket: &str) -> String {
    json!({"container_id": id, "container_name": "w", "port_mappings": null,
        "network": {"name": net, "id": "ab", "driver": "p4lb", "internal": false,
            "ipv6_enabled": false, "dns_enabled": false,
            "subnets": [{"subnet": "10.211.0.0/24", "gateway": "10.211.0.1"}],
            "options": {"socket": socket, "timeout_ms": "500"}},
        "network_options": {"interface_name": "eth0", "static_ips": ["10.211.0.5"],
            "static_mac": null, "aliases": []}})
    .to_string()
}

fn host_links() -> Vec<String> {
    Net::host().unwrap().links().unwrap()
}

#[test]
fn info_names_the_api_version() {
    let out = plugin(&["info"], "");
    assert!(out.ok, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["api_version"], "1.0.0");
    let out = plugin(&["frobnicate"], "");
    assert!(!out.ok);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("usage"), "{v}");
}

#[test]
fn oversized_input_is_refused() {
    let big = " ".repeat((p4lb_netavark::MAX_INPUT + 1) as usize);
    let out = plugin(&["create"], &big);
    assert!(!out.ok);
    assert!(out.stdout.contains("larger than"), "{}", out.stdout);
}

#[test]
fn setup_with_the_controller_unreachable_fails_and_leaves_nothing() {
    require_root();
    let ns = NamedNetns::unique("p4nv");
    let id = unique_name("c");
    let path = ns.path().to_str().unwrap().to_string();
    let host_name = p4lb_cni::cmd::host_ifname(&endpoint_id(&id, &path), "eth0");
    let out = plugin(
        &["setup", &path],
        &input(&id, "nvnet", "/nonexistent/p4lb.sock"),
    );
    assert!(!out.ok, "setup succeeded: {}", out.stdout);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("p4lb controller unavailable"), "{msg}");
    assert!(!host_links().contains(&host_name), "{host_name} was left");
    assert_eq!(
        ns.net().links().unwrap(),
        vec!["lo"],
        "a container link was left"
    );
}

#[test]
fn teardown_removes_the_veth_a_killed_setup_left_and_nothing_else() {
    require_root();
    let ns = NamedNetns::unique("p4nv");
    let path = ns.path().to_str().unwrap().to_string();
    let id = unique_name("c");
    let network = "nvnet";
    let ep = endpoint_id(&id, &path);
    let host_name = p4lb_cni::cmd::host_ifname(&ep, "eth0");
    let host = Net::host().unwrap();
    let stdin = input(&id, network, "/nonexistent/p4lb.sock");

    // What a setup killed after creating the veth leaves: the pair, with p4lb's alias.
    host.add_veth(&host_name, "eth0", Some(ns.net().netns()))
        .unwrap();
    let alias = p4lb_cni::cmd::host_alias(network, &ep, "eth0");
    let st = Command::new("ip")
        .args(["link", "set", "dev", &host_name, "alias", &alias])
        .status()
        .unwrap();
    assert!(st.success());
    let out = plugin(&["teardown", &path], &stdin);
    assert!(out.ok, "teardown failed: {} {}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("withdraws the endpoint"),
        "{}",
        out.stderr
    );
    assert!(!host_links().contains(&host_name), "{host_name} left");
    assert_eq!(ns.net().links().unwrap(), vec!["lo"]);

    // A link under that name that p4lb did not make is left alone.
    host.add_veth(&host_name, "eth0", Some(ns.net().netns()))
        .unwrap();
    let out = plugin(&["teardown", &path], &stdin);
    assert!(out.ok, "{} {}", out.stdout, out.stderr);
    assert!(out.stderr.contains("left alone"), "{}", out.stderr);
    assert!(host_links().contains(&host_name));
    host.delete_link(&host_name).unwrap();
}
