//! The restore's routes on a node whose pods are routed behind it: each moved address
//! (/32) to the restored pod's veth, replacing the route it had, and never to a link
//! p4lb did not make. Needs root (a network namespace plays the node); without it the
//! test FAILS.

use std::net::Ipv4Addr;

use p4lb_criu_action::netns::{route_to_pod_in, NetnsError};
use p4lb_netns::NetNs;
use p4lb_testutil::NamedNetns;

fn sh(ns: &NamedNetns, script: &str) -> String {
    let out = ns
        .exec(&["sh", "-c", script])
        .expect("a shell in the namespace");
    assert!(out.status.success(), "{script}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn moved_addresses_are_routed_to_p4lbs_veth_and_only_to_it() {
    p4lb_testutil::require_root();
    let node = NamedNetns::unique("p4rt");
    sh(
        &node,
        "ip link add p4lbnew type veth peer name podnew; ip link set p4lbnew alias 'p4lb:n:c/eth0'; \
         ip link set p4lbnew up; ip link add p4lbold type veth peer name podold; \
         ip link set p4lbold up; ip link add other type veth peer name otherpeer; \
         ip link set other up; ip route add 10.91.0.2/32 dev p4lbold",
    );
    let addrs: [Ipv4Addr; 2] = ["10.91.0.2".parse().unwrap(), "10.91.0.9".parse().unwrap()];
    let ns = || NetNs::open(node.path()).expect("the node's namespace");

    route_to_pod_in(ns(), "p4lbnew", &addrs).expect("routed");
    for a in addrs {
        let r = sh(&node, &format!("ip -4 route show {a}/32"));
        assert!(r.contains("dev p4lbnew"), "{a}: {r:?}");
    }
    // Again: nothing changes, nothing fails.
    route_to_pod_in(ns(), "p4lbnew", &addrs).expect("routed again");
    assert_eq!(
        sh(&node, "ip -4 route show 10.91.0.2/32").lines().count(),
        1
    );

    // A link without p4lb's alias, and a missing one: refused, routes unchanged.
    let e = route_to_pod_in(ns(), "other", &addrs).expect_err("not p4lb's veth");
    assert!(e.to_string().contains("not a veth p4lb made"), "{e}");
    let e = route_to_pod_in(ns(), "gone0", &addrs).expect_err("no such link");
    assert!(matches!(e, NetnsError::NoInterface { .. }), "{e}");
    assert!(sh(&node, "ip -4 route show 10.91.0.9/32").contains("dev p4lbnew"));
}
