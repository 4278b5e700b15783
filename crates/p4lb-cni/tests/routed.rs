//! `routed`: a pod routed behind its node. The plugin runs inside a namespace that
//! plays the node (as the node's runtime would run it there); the real controller,
//! configured with that node's uplink, registers the pod on the uplink's port.

mod common;

use common::*;
use serde_json::json;

const NODE: &str = "node-r";
const UPLINK_PORT: u32 = 300;
const UPLINK_MAC: &str = "02:00:0a:fa:00:01";

/// A script that runs the plugin inside `node` (its stdin, environment and exit code
/// passed through).
fn plugin_on(w: &World, node: &Netns) -> std::path::PathBuf {
    let path = w.dir.path().join(format!("p4lb-on-{}", node.name));
    std::fs::write(
        &path,
        format!("#!/bin/sh\nexec ip netns exec {} {PLUGIN}\n", node.name),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

fn run_on(
    w: &World,
    node: &Netns,
    cmd: &str,
    cid: &str,
    pod: &Netns,
    conf: &serde_json::Value,
) -> Out {
    run_plugin(
        &plugin_on(w, node),
        &w.env(cmd, cid, &pod.path, "eth0", ""),
        conf.to_string().as_bytes(),
    )
}

fn sh(ns: &Netns, script: &str) -> String {
    ns.exec(&["sh", "-c", script])
}

/// The real controller as node `NODE` with an uplink of `uplink_node`, a namespace that
/// plays the node (forwarding IPv4 or not), a pod's namespace, and a `routed` network.
fn routed_world(uplink_node: &str, forwarding: bool) -> (World, Netns, Netns, serde_json::Value) {
    let mut w = World::without_controller();
    w.start_controller_with_uplink(NODE, uplink_node, UPLINK_PORT, UPLINK_MAC);
    let node = Netns::new();
    let pod = Netns::new();
    sh(
        &node,
        &format!(
            "ip link set lo up; echo {} > /proc/sys/net/ipv4/ip_forward",
            u8::from(forwarding)
        ),
    );
    let mut c = w.conf("1.1.0");
    c["routed"] = json!(true);
    (w, node, pod, c)
}

/// Nothing of a refused ADD is left on the node or in the pod.
fn assert_nothing_left(w: &World, node: &Netns, pod: &Netns) {
    assert_eq!(pod_links(pod), vec!["lo"]);
    assert_eq!(
        sh(node, "ip -o link show | grep -c p4lb || true").trim(),
        "0"
    );
    w.assert_clean();
}

#[test]
fn a_routed_pod_is_routed_by_its_node_and_registered_on_the_nodes_uplink() {
    let (w, node, pod, c) = routed_world(NODE, true);

    let r = run_on(&w, &node, "ADD", "routed1", &pod, &c);
    r.ok();
    let r = r.json();
    let ip = r["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .unwrap()
        .to_string();
    let host = r["interfaces"][0]["name"].as_str().unwrap().to_string();
    assert!(
        w.host_links().is_empty(),
        "the host end stays on the node, not in the plugin caller's namespace"
    );

    // The node: proxy ARP at once, a /32 route of the pod's address to its veth.
    assert_eq!(
        sh(
            &node,
            &format!("cat /proc/sys/net/ipv4/conf/{host}/proxy_arp")
        )
        .trim(),
        "1"
    );
    assert_eq!(
        sh(
            &node,
            &format!("cat /proc/sys/net/ipv4/neigh/{host}/proxy_delay")
        )
        .trim(),
        "0"
    );
    let route = sh(&node, &format!("ip -4 route show {ip}/32"));
    assert!(route.contains(&format!("dev {host}")), "{route:?}");

    // The pod: its gateway pinned to the host end's MAC (the node answers for it).
    let host_mac = sh(&node, &format!("cat /sys/class/net/{host}/address"));
    let neigh = sh(&pod, &format!("ip neigh show {} dev eth0", w.gateway()));
    assert!(
        neigh.contains(host_mac.trim()) && neigh.contains("PERMANENT"),
        "{neigh:?} (host end {host_mac:?})"
    );

    // The controller: behind the node, on its uplink's port.
    let eps = w.endpoints();
    assert_eq!(eps.len(), 1, "{eps:?}");
    let e = &eps[0];
    assert!(e.behind_node, "{e:?}");
    assert_eq!(
        (e.node.as_str(), e.switch_port),
        (NODE, UPLINK_PORT),
        "{e:?}"
    );
    assert_eq!(e.host_ifname, host);

    let mut prev = c.clone();
    prev["prevResult"] = r.clone();
    run_on(&w, &node, "DEL", "routed1", &pod, &prev).ok();
    assert!(
        sh(&node, &format!("ip -4 route show {ip}/32"))
            .trim()
            .is_empty(),
        "the route went with the veth"
    );
    assert_eq!(pod_links(&pod), vec!["lo"]);
    w.assert_clean();
}

#[test]
fn a_routed_pod_on_a_node_that_does_not_forward_is_refused_and_nothing_is_left() {
    let (w, node, pod, c) = routed_world(NODE, false);
    let r = run_on(&w, &node, "ADD", "routed2", &pod, &c);
    let e = r.err(100);
    assert!(
        e["details"]
            .as_str()
            .unwrap_or_default()
            .contains("net.ipv4.ip_forward = 1"),
        "{e}"
    );
    assert_nothing_left(&w, &node, &pod);
}

#[test]
fn a_routed_pod_of_a_node_without_an_uplink_is_refused_by_the_controller_and_rolled_back() {
    let (w, node, pod, c) = routed_world("another-node", true);
    let r = run_on(&w, &node, "ADD", "routed3", &pod, &c);
    assert_ne!(r.code, 0, "{}", r.stdout);
    let e = r.json();
    let text = format!("{} {}", e["msg"], e["details"]);
    assert!(
        text.contains("node node-r has no uplink in the controller's configuration"),
        "{e}"
    );
    assert_nothing_left(&w, &node, &pod);
}
