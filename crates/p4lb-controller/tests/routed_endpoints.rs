//! Endpoints routed behind their node (`behind_node`): the switch reaches them through
//! the node's uplink (`[[uplinks]]`), whose port and MAC their routes and backend row
//! use; no port is attached or detached for them. A migration between two nodes moves
//! the backend and the old address to the target node's uplink. Nodes call in-process
//! here (`Caller::Node`, what the API over TCP hands the calls); the first test needs
//! no root, the second attaches an uplink interface (a veth pair: root).

mod common;

use std::time::Duration;

use common::*;
use p4lb_controller::caller::Caller;
use p4lb_controller::config::{Config, UplinkConfig};
use p4lb_controller::Error;
use p4lb_proto::api::{self, MigrationPhase};

const ROUTER: &str = "02:70:34:6c:62:01";
const MAC_A: &str = "02:00:00:00:0a:01";
const MAC_B: &str = "02:00:00:00:0b:01";

fn uplink(node: &str, port: u32, mac: &str, interface: &str) -> UplinkConfig {
    UplinkConfig {
        node: node.into(),
        port,
        mac: mac.into(),
        interface: interface.into(),
    }
}

fn with_uplinks(mut cfg: Config, uplinks: Vec<UplinkConfig>) -> Config {
    cfg.node_name = String::from("ctl-host");
    cfg.uplinks = uplinks;
    cfg
}

fn routed(cid: &str, ip: &str, mac: &str) -> api::RegisterEndpointRequest {
    let mut r = register_req(cid, ip, mac, &format!("veth-{cid}"));
    // A node's netns path names a namespace of its own kernel: recorded, not resolved.
    r.netns_path = format!("/run/netns/{cid}");
    r.behind_node = true;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_between_routed_endpoints_moves_to_the_target_nodes_uplink() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let cfg = with_uplinks(
        config(&dir, &ssock),
        vec![
            uplink("node-a", 300, MAC_A, ""),
            uplink("node-b", 301, MAC_B, ""),
        ],
    );
    let c = Ctl::start(cfg).await;
    let ctl = &c.ctl;
    let (a, b) = (Caller::Node("node-a".into()), Caller::Node("node-b".into()));

    // A node without an uplink cannot register a routed pod.
    let e = ctl
        .register_endpoint_as(
            &Caller::Node("node-c".into()),
            routed("c1", "10.88.7.9", "02:00:00:00:07:09"),
        )
        .await
        .expect_err("node-c has no uplink");
    assert!(matches!(e, Error::FailedPrecondition(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "node node-c has no uplink in the controller's configuration ([[uplinks]]): a pod \
         routed behind its node needs one"
    );

    // The source on node A: its route and backend row point at A's uplink.
    let src = ctl
        .register_endpoint_as(&a, routed("a1", "10.88.7.1", "02:00:00:00:07:01"))
        .await
        .expect("node A registers a routed pod");
    assert!(src.behind_node);
    assert_eq!((src.switch_port, src.node.as_str()), (300, "node-a"));
    assert!(src.to_api().behind_node);
    let t = read_all(&ssock).await;
    assert_eq!(
        rows(&t["ipv4_routes"]),
        [format!(
            "dst_addr=10.88.7.1/32 -> route_to_port(port=300, dmac={MAC_A})"
        )]
    );
    assert_eq!(
        rows(&t["backends"]),
        [format!(
            "backend_id={} -> backend_forward(ip=10.88.7.1, dmac={MAC_A}, port=300)",
            src.backend_id
        )]
    );
    assert_eq!(
        rows(&t["port_smac"]),
        [format!("egress_port=300 -> set_smac(mac={ROUTER})")]
    );
    assert!(sw.ports.list().is_empty(), "{:?}", sw.ports.list());

    // A checkpoints it for node B; B restores it behind its own uplink and takes over.
    let mut lock = event_for_key(MigrationPhase::Lock, &src.key, "");
    lock.target_node = "node-b".into();
    let m = ctl.migration_event_as(&a, lock).await.unwrap().migration;
    ctl.migration_event_as(
        &a,
        event_for_key(MigrationPhase::Checkpointed, &src.key, &m.id),
    )
    .await
    .unwrap();
    let mut restore = routed("b1", "10.88.7.2", "02:00:00:00:07:02");
    restore.restore_of_ip = src.ip.to_string();
    restore.locked = true;
    let tgt = ctl
        .register_endpoint_as(&b, restore)
        .await
        .expect("node B restores A's endpoint");
    assert_eq!((tgt.switch_port, tgt.locked), (301, true));
    for phase in [
        MigrationPhase::RestoreStarted,
        MigrationPhase::RestoredAt,
        MigrationPhase::Unlock,
    ] {
        ctl.migration_event_as(&b, event_for_key(phase, &tgt.key, &m.id))
            .await
            .unwrap_or_else(|e| panic!("{phase:?}: {e}"));
    }
    let done = c
        .ctl
        .get_endpoint(api::GetEndpointRequest {
            key: tgt.key.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(done.backend_id, src.backend_id);
    assert_eq!(done.migrated_ips, [src.ip]);

    // The backend row and the old address now lead to B's uplink port and MAC.
    let t = read_all(&ssock).await;
    assert_eq!(
        rows(&t["backends"]),
        [format!(
            "backend_id={} -> backend_forward(ip=10.88.7.1, dmac={MAC_B}, port=301)",
            src.backend_id
        )]
    );
    let mut routes = rows(&t["ipv4_routes"]);
    routes.sort();
    assert_eq!(
        routes,
        [
            format!("dst_addr=10.88.7.1/32 -> route_to_port(port=301, dmac={MAC_B})"),
            format!("dst_addr=10.88.7.2/32 -> route_to_port(port=301, dmac={MAC_B})"),
        ]
    );

    // A removes its migrated source: no port was attached for it, none is detached.
    assert!(ctl
        .deregister_endpoint_as(&a, "a1", "eth0")
        .await
        .expect("node A removes its endpoint"));
    let t = read_all(&ssock).await;
    assert_eq!(
        rows(&t["port_smac"]),
        [format!("egress_port=301 -> set_smac(mac={ROUTER})")]
    );
    assert!(sw.ports.list().is_empty(), "{:?}", sw.ports.list());
    c.stop().await;
}

/// An uplink with an interface is attached when the controller programs the switch,
/// and stays attached while routed endpoints of the controller's own node come and go
/// next to a pod with a port of its own. Needs root (veth pairs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uplink_interface_is_attached_at_start_and_never_detached() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let up = Veth::new("p4rup0");
    let pod = Veth::new("p4rpod0");
    let cfg = with_uplinks(
        config(&dir, &ssock),
        vec![uplink("ctl-host", 300, MAC_A, &up.host)],
    );
    let mut c = Ctl::start(cfg).await;
    let ports = |sw: &p4lb_switch::SwitchHandle| -> Vec<(u32, String)> {
        let mut v: Vec<(u32, String)> = sw
            .ports
            .list()
            .into_iter()
            .map(|p| (p.port, p.iface))
            .collect();
        v.sort();
        v
    };
    let attached = eventually(Duration::from_secs(5), || async {
        ports(&sw) == [(300, up.host.clone())]
    })
    .await;
    assert!(attached, "uplink not attached: {:?}", ports(&sw));

    // A routed pod of this node (a caller on the Unix socket) and a pod of its own.
    let mut r = register_req("r1", "10.88.8.1", "02:00:00:00:08:01", "veth-r1");
    r.behind_node = true;
    let routed = c.client.register_endpoint(r).await.unwrap().into_inner();
    assert!(routed.behind_node);
    assert_eq!(
        (routed.switch_port, routed.node.as_str()),
        (300, "ctl-host")
    );
    let own = c
        .client
        .register_endpoint(register_req(
            "p1",
            "10.88.8.2",
            "02:00:00:00:08:02",
            &pod.host,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!own.behind_node);
    assert_eq!(own.switch_port, 1);
    assert_eq!(ports(&sw), [(1, pod.host.clone()), (300, up.host.clone())]);
    let t = read_all(&ssock).await;
    let routes = rows(&t["ipv4_routes"]);
    assert!(
        routes.contains(&format!(
            "dst_addr=10.88.8.1/32 -> route_to_port(port=300, dmac={MAC_A})"
        )),
        "{routes:?}"
    );
    assert!(
        routes.contains(&String::from(
            "dst_addr=10.88.8.2/32 -> route_to_port(port=1, dmac=02:00:00:00:08:02)"
        )),
        "{routes:?}"
    );

    // Both go: the pod's port is detached, the uplink stays.
    for cid in ["r1", "p1"] {
        c.client
            .deregister_endpoint(api::DeregisterEndpointRequest {
                container_id: cid.into(),
                ifname: "eth0".into(),
            })
            .await
            .unwrap();
    }
    assert_eq!(ports(&sw), [(300, up.host.clone())]);
    c.stop().await;
}
