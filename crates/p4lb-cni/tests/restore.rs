//! What happens at restore: the endpoint is registered locked, with the old address.

mod common;

use common::*;
use serde_json::json;

#[test]
fn podman_restore_args_register_locked_with_new_ip() {
    let w = World::new();
    let ns = Netns::new();
    let c = w.conf("1.0.0");
    let old_ip = w.subnet.replace(".0/24", ".200");
    // The checkpointed migration of the old address (IP=/MAC= alone is no restore).
    let source_ns = Netns::new();
    w.register_elsewhere("podman-source", &old_ip, None, &source_ns);
    w.checkpoint(&source_ns);
    let args = format!("IgnoreUnknown=1;IP={old_ip};MAC=02:11:22:33:44:55;K8S_POD_NAME=web");
    let r = w.p4lb("ADD", "restored", &ns.path, &args, &c);
    r.ok();
    let r = r.json();
    let new_ip = r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert_ne!(new_ip, old_ip, "IPAM did not get the old address");
    let ep = &w.endpoints()[0];
    assert!(ep.locked, "registered locked");
    assert_eq!(ep.state, "restoring");
    assert_eq!(ep.ip, new_ip);
    // the old address is on the interface too, so restored sockets can bind it
    let addrs = pod_addrs(&ns, "eth0");
    assert!(addrs.contains(&format!("{old_ip}/32")), "{addrs:?}");
    // DEL with the same CNI_ARGS releases the lease that was taken
    w.p4lb("DEL", "restored", &ns.path, &args, &c).ok();
    w.assert_clean();
}

/// The controller's ipv4_routes rows for `ip`, as "match -> action".
fn routes_of(w: &World, ip: &str) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c = client_on(&rt, &w.socket).expect("controller reachable");
    let rows = rt
        .block_on(c.dump_tables(p4lb_proto::api::DumpTablesRequest {
            table: String::new(),
        }))
        .unwrap()
        .into_inner()
        .rows;
    rows.into_iter()
        .filter(|r| r.table.ends_with("ipv4_routes") && r.r#match.contains(&format!("{ip}/32")))
        .map(|r| format!("{} -> {}", r.r#match, r.action))
        .collect()
}

/// `podman run --ip X --mac-address Y` (or `podman network reload`) passes IP= and
/// MAC= with no migration behind them: a fresh start, unlocked and forwarding.
#[test]
fn podman_ip_and_mac_without_a_migration_start_fresh() {
    let w = World::new();
    let ns = Netns::new();
    let c = w.conf("1.0.0");
    let old_ip = w.subnet.replace(".0/24", ".202");
    let args = format!("IgnoreUnknown=1;IP={old_ip};MAC=02:11:22:33:44:57;K8S_POD_NAME=web");
    let r = w.p4lb("ADD", "fresh", &ns.path, &args, &c);
    r.ok();
    let new_ip = r.json()["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    // IPAM got the address Podman asked for.
    assert_eq!(new_ip, old_ip);
    let ep = &w.endpoints()[0];
    assert!(!ep.locked, "{ep:?}");
    assert_eq!(ep.state, "ready");
    assert_eq!(ep.ip, new_ip);
    assert_eq!(ep.restore_of_ip, "");
    let routes = routes_of(&w, &new_ip);
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert!(!routes[0].contains("locked"), "{routes:?}");
    // No restore behaviour: the address is the pod's own (/24), not an extra /32.
    let addrs = pod_addrs(&ns, "eth0");
    assert!(!addrs.contains(&format!("{old_ip}/32")), "{addrs:?}");
    assert!(
        r.stderr.contains("restore hint IP="),
        "no warning: {}",
        r.stderr
    );
    w.p4lb("DEL", "fresh", &ns.path, &args, &c).ok();
    w.assert_clean();
}

#[test]
fn static_ip_alone_is_not_a_restore() {
    let w = World::new();
    let ns = Netns::new();
    let want = w.subnet.replace(".0/24", ".77");
    let mut c = w.conf("1.0.0");
    // host-local honours IP= only through args; CNI_ARGS IP= alone is a static request
    c["ipam"]["type"] = json!("host-local");
    let r = w.p4lb(
        "ADD",
        "static",
        &ns.path,
        &format!("IgnoreUnknown=1;IP={want}"),
        &c,
    );
    r.ok();
    assert_eq!(r.json()["ips"][0]["address"], json!(format!("{want}/24")));
    assert!(!w.endpoints()[0].locked);
    w.p4lb(
        "DEL",
        "static",
        &ns.path,
        &format!("IgnoreUnknown=1;IP={want}"),
        &c,
    )
    .ok();
    w.assert_clean();
}

#[test]
fn cri_annotation_restore_and_lock_opt_out() {
    let w = World::new();
    let ns = Netns::new();
    let old_ip = "10.250.0.9";
    // The checkpointed migration the annotation names (an annotation alone is no restore).
    let source_ns = Netns::new();
    w.register_elsewhere("cri-source", old_ip, None, &source_ns);
    w.checkpoint(&source_ns);
    let mut c = w.conf("1.0.0");
    c["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations": {
        "p4lb.io/restore-from": old_ip,
        "labels.p4lb.io/app": "web",
    }});
    w.p4lb("ADD", "cri", &ns.path, "", &c).ok();
    let ep = &w.endpoints()[0];
    assert!(ep.locked);
    assert_eq!(ep.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(ep.state, "restoring");
    w.p4lb("DEL", "cri", &ns.path, "", &c).ok();

    // lockOnRestore=false: still a restore, registered unlocked
    let ns2 = Netns::new();
    c["lockOnRestore"] = json!(false);
    w.p4lb("ADD", "cri2", &ns2.path, "", &c).ok();
    assert!(!w.endpoints()[0].locked);
    w.p4lb("DEL", "cri2", &ns2.path, "", &c).ok();
    // a malformed annotation is refused, not taken for a fresh start
    let ns3 = Netns::new();
    c["runtimeConfig"]["io.kubernetes.cri.pod-annotations"]["p4lb.io/restore-from"] =
        json!("bogus");
    w.p4lb("ADD", "cri3", &ns3.path, "", &c).err(7);
    w.assert_clean();
}

/// The Endpoint message does not echo restore_of_ip/restore_of_mac, so the exact
/// request is checked against the in-test fake of the API.
#[test]
fn restore_hints_reach_the_controller_api() {
    let mut w = World::without_controller();
    w.start_fake_controller();
    let ns = Netns::new();
    let c = w.conf("1.0.0");
    let old_ip = w.subnet.replace(".0/24", ".201");
    let args = format!("IP={old_ip};MAC=02:11:22:33:44:56");
    w.p4lb("ADD", "wire", &ns.path, &args, &c).ok();
    let reg = w.fake().lock().unwrap().registered.last().cloned().unwrap();
    assert!(reg.locked);
    assert_eq!(reg.restore_of_ip, old_ip);
    assert_eq!(reg.restore_of_mac, "02:11:22:33:44:56");
    assert_eq!(reg.network, w.network);
    assert_eq!(reg.container_id, "wire");
    w.p4lb("DEL", "wire", &ns.path, &args, &c).ok();
    w.assert_clean();
}
