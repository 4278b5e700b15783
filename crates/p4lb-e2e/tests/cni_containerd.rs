//! End to end, the p4lb CNI plugin under containerd's CRI: containerd finds
//! `p4lb` in /opt/cni/bin through a conflist, two pod sandboxes get addresses
//! from the plugin's IPAM and are registered with the controller, they reach
//! each other through the software switch (directly and through a VIP), and
//! removing the sandboxes leaves no endpoint and no host veth behind.

mod migration_common;

use std::net::Ipv4Addr;

use migration_common::*;
use p4lb_api::api;
use p4lb_e2e::cri::{self, Cri};
use p4lb_e2e::scenario::reports;
use p4lb_testapp::report::Report;
use p4lb_testbed::images;

/// The pod subnet of the conflist.
const SUBNET: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 0);
const PREFIX: u32 = 24;
/// The VIP of the service backed by pod B only.
const POD_VIP: &str = "10.99.0.2";

fn use_p4lb_cni_for_containerd(w: &World) {
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"pods","plugins":[{{"type":"p4lb","controllerSocket":"{SOCKET}","addRestoredIp":false,"labels":{{"app":"web"}},"capabilities":{{"io.kubernetes.cri.pod-annotations":true}},"ipam":{{"type":"host-local","subnet":"{SUBNET}/{PREFIX}","routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"/var/lib/cni/pods"}}}}]}}"#
    );
    w.sh(&format!(
        "rm -f /etc/cni/net.d/*; mkdir -p /opt/cni/bin; cp {} /opt/cni/bin/p4lb; \
         cat > /etc/cni/net.d/10-p4lb.conflist <<'EOF'\n{conf}\nEOF\n",
        w.cni
    ));
}

fn in_subnet(ip: &str) -> bool {
    let Ok(a) = ip.parse::<Ipv4Addr>() else {
        return false;
    };
    let mask = u32::MAX << (32 - PREFIX);
    u32::from(a) & mask == u32::from(SUBNET) & mask
}

/// Runs a pod sandbox; returns its id, its IP (from the sandbox status) and its config.
fn sandbox(c: &mut Cri, name: &str) -> (String, String, cri::pb::PodSandboxConfig) {
    let cfg = cri::pod_config(name, &format!("uid-{name}"));
    let id = c
        .run_pod_sandbox(cfg.clone())
        .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}"));
    let ip = c
        .pod_sandbox_status(&id)
        .unwrap_or_else(|e| panic!("PodSandboxStatus {name}: {e}"))
        .network
        .map(|n| n.ip)
        .unwrap_or_default();
    (id, ip, cfg)
}

/// Starts a `p4lb-testapp server` container from the local test image in a sandbox.
fn server_in(c: &mut Cri, sb: &str, cfg: cri::pb::PodSandboxConfig) -> String {
    let ctr = c
        .create_container(
            sb,
            cri::pb::ContainerConfig {
                metadata: Some(cri::pb::ContainerMetadata {
                    name: "server".into(),
                    attempt: 0,
                }),
                image: Some(cri::pb::ImageSpec {
                    image: images::TEST_IMAGE.into(),
                    annotations: Default::default(),
                }),
                command: vec![images::TESTAPP_IN_IMAGE.into()],
                args: vec![
                    "server".into(),
                    "--listen".into(),
                    format!("0.0.0.0:{PORT}"),
                ],
                log_path: "server.log".into(),
                linux: cri::container_linux(),
                ..Default::default()
            },
            cfg,
        )
        .unwrap_or_else(|e| panic!("CreateContainer: {e}"));
    c.start_container(&ctr)
        .unwrap_or_else(|e| panic!("StartContainer: {e}"));
    ctr
}

/// Endpoint keys the controller lists.
fn endpoint_keys(w: &World) -> Vec<String> {
    let eps: Vec<api::Endpoint> = w.ctl_json("endpoints ls");
    eps.into_iter().map(|e| e.key).collect()
}

/// Host links whose name starts with "p4lb" (`ip -o link` inside the testbed).
fn p4lb_links(w: &World) -> Vec<String> {
    w.sh("ip -o link")
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("p4lb"))
        .collect()
}

/// Runs a short client inside the network namespace `netns` against `target`;
/// returns its final report.
fn client_from(w: &World, netns: &str, target: &str) -> Report {
    let (ok, out, err) = w.try_sh(&format!(
        "nsenter --net={netns} {} client --target {target} --conns 2 --duration 2 --strict",
        w.testapp
    ));
    let rep = reports(&out)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .find(|r| r.r#final)
        .unwrap_or_else(|| panic!("no final report from the client: {out}{err}\n{}", w.diag()));
    assert!(ok, "client to {target} not clean: {err}\n{}", w.diag());
    rep
}

fn wait_answers(w: &World, netns: &str, target: &str) {
    p4lb_testbed::wait::until(20, &format!("{target} to answer"), || {
        w.try_sh(&format!(
            "nsenter --net={netns} {} client --target {target} --conns 1 --duration 0.5 --strict",
            w.testapp
        ))
        .0
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", w.diag()));
}

fn assert_clean(what: &str, r: &Report) {
    let t = &r.totals;
    println!(
        "{what}: {}/{} connections clean, {} reset, {} failed, {} requests done",
        t.clean, t.connections, t.reset, t.failed, t.requests_done
    );
    assert_eq!(t.connections, 2, "{what}: {t:?}");
    assert_eq!(t.clean, 2, "{what}: {t:?}");
    assert_eq!(t.reset, 0, "{what}: {t:?}");
    assert_eq!(t.resets, 0, "{what}: {t:?}");
    assert_eq!(t.failed, 0, "{what}: {t:?}");
    assert!(t.requests_done > 0, "{what}: no replies: {t:?}");
}

#[test]
fn containerd_pods_wired_by_p4lb_reach_each_other_and_a_vip() {
    let _s = serial();
    let w = World::start();
    use_p4lb_cni_for_containerd(&w);
    assert!(
        p4lb_links(&w).is_empty(),
        "p4lb veths before any pod: {:?}",
        p4lb_links(&w)
    );
    let socket = cri::start_containerd(&w.tb).unwrap_or_else(|e| panic!("containerd: {e}"));
    images::load_into_containerd(&w.tb).unwrap();
    let mut c = Cri::connect(&socket).unwrap();

    // 1. Two sandboxes, addressed by the plugin's IPAM, registered with the controller.
    let (sb_a, ip_a, _) = sandbox(&mut c, "pod-a");
    let (sb_b, ip_b, cfg_b) = sandbox(&mut c, "pod-b");
    println!("pod A {sb_a}: {ip_a}; pod B {sb_b}: {ip_b}");
    assert!(
        in_subnet(&ip_a),
        "pod A address {ip_a:?} not in {SUBNET}/{PREFIX}"
    );
    assert!(
        in_subnet(&ip_b),
        "pod B address {ip_b:?} not in {SUBNET}/{PREFIX}"
    );
    assert_ne!(ip_a, ip_b);
    let key_a = format!("{sb_a}/eth0");
    let key_b = format!("{sb_b}/eth0");
    let keys = endpoint_keys(&w);
    assert!(keys.contains(&key_a), "{key_a} not in {keys:?}");
    assert!(keys.contains(&key_b), "{key_b} not in {keys:?}");
    let ep_a = w.endpoint(&key_a);
    let ep_b = w.endpoint(&key_b);
    assert_eq!(ep_a.ip, ip_a, "{ep_a:?}");
    assert_eq!(ep_b.ip, ip_b, "{ep_b:?}");
    let host_ifs: Vec<String> = [&ep_a, &ep_b]
        .iter()
        .map(|e| e.host_ifname.clone())
        .collect();
    let links = p4lb_links(&w);
    for h in &host_ifs {
        assert!(h.starts_with("p4lb"), "host ifname {h:?}");
        assert!(links.contains(h), "{h} not among host links {links:?}");
    }
    // The host ends carry no address: the host kernel cannot route between the
    // pods, only the switch forwards their frames.
    for h in &host_ifs {
        let a = w.sh(&format!("ip -4 -o addr show dev {h}"));
        assert!(a.trim().is_empty(), "{h} has an IPv4 address: {a}");
    }
    let netns_a = Some(ep_a.netns_path.clone())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| panic!("pod A endpoint without netns path: {ep_a:?}"));

    // 2. Pod A reaches a server in pod B through the switch, then through a VIP.
    let ctr_b = server_in(&mut c, &sb_b, cfg_b);
    let direct = format!("{ip_b}:{PORT}");
    wait_answers(&w, &netns_a, &direct);
    assert_clean("pod A -> pod B", &client_from(&w, &netns_a, &direct));

    w.sh(&format!(
        "{} --socket {SOCKET} services add --vip {POD_VIP} --port {PORT} --backend {key_b} pod-b",
        w.ctl
    ));
    let svcs: Vec<api::Service> = w.ctl_json("services ls");
    let svc = svcs
        .iter()
        .find(|s| s.name == "pod-b")
        .unwrap_or_else(|| panic!("service pod-b not listed: {svcs:?}"));
    assert_eq!(svc.vip, POD_VIP, "{svc:?}");
    let vip = format!("{POD_VIP}:{PORT}");
    wait_answers(&w, &netns_a, &vip);
    assert_clean("pod A -> VIP (pod B)", &client_from(&w, &netns_a, &vip));
    // The VIP connections were learned by the switch (per-connection table).
    let rows: Vec<api::TableRow> = w.ctl_json("switch tables");
    let pin = format!("conn_pin(backend_id={})", ep_b.backend_id);
    let from_a = format!("src_addr={ip_a} dst_addr={POD_VIP} ");
    let conns = rows
        .iter()
        .filter(|r| r.table.ends_with("conn_table"))
        .filter(|r| r.r#match.starts_with(&from_a))
        .filter(|r| r.action == pin)
        .count();
    println!("conn_table: {conns} connections {from_a}-> {pin}");
    assert!(
        conns >= 2,
        "expected the client's 2 VIP connections pinned to pod B ({pin}): {rows:?}"
    );

    // 3. Removing the sandboxes removes the endpoints and the host veths.
    c.stop_container(&ctr_b, 5).unwrap();
    c.remove_container(&ctr_b).unwrap();
    for sb in [&sb_a, &sb_b] {
        c.stop_pod_sandbox(sb)
            .unwrap_or_else(|e| panic!("StopPodSandbox {sb}: {e}"));
        c.remove_pod_sandbox(sb)
            .unwrap_or_else(|e| panic!("RemovePodSandbox {sb}: {e}"));
    }
    let keys = endpoint_keys(&w);
    assert!(
        !keys.contains(&key_a) && !keys.contains(&key_b),
        "endpoints left after RemovePodSandbox: {keys:?}"
    );
    let links = p4lb_links(&w);
    assert!(
        links.is_empty(),
        "p4lb veths left after RemovePodSandbox: {links:?}"
    );
    println!("after removal: endpoints {keys:?}, p4lb host links {links:?} (were {host_ifs:?})");
}
