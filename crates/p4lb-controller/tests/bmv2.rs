//! The controller driving a real BMv2 (`simple_switch_grpc`) with its default
//! settings. Needs root and `P4LB_P4_PREFIX` (a BMv2/p4c installation); without the
//! latter every test here prints a SKIPPED line and passes.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::bmv2::{prefix, Bmv2};
use common::packet::handshakes;
use common::*;
use p4lb_p4::entries as p;
use p4lb_proto::api;

const ROUTER: [u8; 6] = [0x02, 0x70, 0x34, 0x6c, 0x62, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x64];
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 11, 1);

/// client source port → pinned backend id.
fn pins(t: &BTreeMap<&str, Vec<p4lb_proto::p4runtime::TableEntry>>) -> BTreeMap<u16, u64> {
    t["conn_table"]
        .iter()
        .map(|e| {
            let ft = p::FiveTuple::from_matches(&e.r#match).unwrap();
            (ft.sport, p::action_of(e).unwrap().1[0])
        })
        .collect()
}

fn backend(name: &str, ip: &str, mac: &str) -> api::RegisterEndpointRequest {
    let mut r = register_req(name, ip, mac, "");
    r.labels = [("app".to_string(), "pin".to_string())]
        .into_iter()
        .collect();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_stay_pinned_through_a_pool_change_on_bmv2() {
    let Some(prefix) = prefix("connections_stay_pinned_through_a_pool_change_on_bmv2") else {
        return;
    };
    p4lb_testutil::require_root();
    let (_d, dir) = tempdir();
    let bm = Bmv2::start(&prefix, &dir, 71);
    bm.pod_link("p4bm71c", "p4bm71cp");
    // Default digest settings: only the switch's kind and addresses are configured.
    let mut c = Ctl::start(bm.config(&dir)).await;

    let mut client = register_req("client", "10.88.11.100", "02:00:00:00:0b:64", "p4bm71c");
    client.labels.clear();
    c.client.register_endpoint(client).await.unwrap();
    for (i, ip) in ["10.88.11.21", "10.88.11.22", "10.88.11.23"]
        .iter()
        .enumerate()
    {
        c.client
            .register_endpoint(backend(
                &format!("b{i}"),
                ip,
                &format!("02:00:00:00:0b:2{i}"),
            ))
            .await
            .unwrap();
    }
    c.client
        .add_service(api::AddServiceRequest {
            service: Some(api::Service {
                name: "pin".into(),
                vip: VIP.to_string(),
                port: 80,
                selector: "app=pin".into(),
                ..Default::default()
            }),
            replace: false,
        })
        .await
        .unwrap();
    let ports = bm.cli("show_ports\n");
    assert!(
        ports.contains("p4bm71c"),
        "client port not attached: {ports}"
    );

    // 30 connections, far fewer than a digest list holds: they are learned only if
    // the switch sends lists on its timeout.
    // Each completes its handshake (the backends' SYN-ACKs go through the switch too).
    handshakes(
        "p4bm71cp",
        (ROUTER, CLIENT_MAC),
        (Ipv4Addr::new(10, 88, 11, 100), VIP, 80),
        &[
            Ipv4Addr::new(10, 88, 11, 21),
            Ipv4Addr::new(10, 88, 11, 22),
            Ipv4Addr::new(10, 88, 11, 23),
        ],
        41000..41030,
    );
    let sock = bm.p4rt_sock.clone();
    let learned = eventually(Duration::from_secs(10), || {
        let s = sock.clone();
        async move { pins(&read_all(&s).await).len() == 30 }
    })
    .await;
    let before = pins(&read_all(&sock).await);
    assert!(
        learned,
        "{} of 30 connections learned on BMv2: {before:?}",
        before.len()
    );
    let maglev_before = read_all(&sock).await["maglev_slots"].clone();

    // A fourth backend joins: the pool's Maglev table changes, pinned connections don't.
    c.client
        .register_endpoint(backend("b3", "10.88.11.24", "02:00:00:00:0b:23"))
        .await
        .unwrap();
    assert!(c.ctl.wait_synced(Duration::from_secs(5)).await);
    let t = read_all(&sock).await;
    assert_ne!(
        t["maglev_slots"], maglev_before,
        "the fourth backend changed nothing in the Maglev table"
    );
    let after = pins(&t);
    let moved: Vec<_> = before
        .iter()
        .filter(|(s, b)| after.get(*s) != Some(*b))
        .collect();
    assert!(
        moved.is_empty(),
        "{} of 30 connections lost their backend: {moved:?}",
        moved.len()
    );
    common::bmv2::loud(&format!(
        "BMv2: {} of 30 connections pinned through a pool change, 0 moved",
        after.len()
    ));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4lbctl_lists_bmv2_ports() {
    let Some(prefix) = prefix("p4lbctl_lists_bmv2_ports") else {
        return;
    };
    p4lb_testutil::require_root();
    let (_d, dir) = tempdir();
    let bm = Bmv2::start(&prefix, &dir, 72);
    bm.pod_link("p4bm72c", "p4bm72cp");
    let mut c = Ctl::start(bm.config(&dir)).await;
    c.client
        .register_endpoint(register_req(
            "pod",
            "10.88.12.5",
            "02:00:00:00:0c:05",
            "p4bm72c",
        ))
        .await
        .unwrap();
    // p4lbctl lists the same ports through the controller.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_p4lbctl"))
        .arg("--socket")
        .arg(dir.join("api.sock"))
        .args(["switch", "ports"])
        .output()
        .expect("running p4lbctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "p4lbctl switch ports on BMv2: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = text
        .lines()
        .find(|l| l.contains("p4bm72c"))
        .unwrap_or_else(|| panic!("no row for the client port: {text}"));
    assert!(row.contains(" - "), "BMv2 has no counters to show: {row}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_recovers_when_bmv2_p4runtime_is_out_of_sync() {
    let Some(prefix) = prefix("reconcile_recovers_when_bmv2_p4runtime_is_out_of_sync") else {
        return;
    };
    p4lb_testutil::require_root();
    let (_d, dir) = tempdir();
    let bm = Bmv2::start(&prefix, &dir, 73);
    let mut c = Ctl::start(bm.config(&dir)).await;
    c.client
        .register_endpoint(register_req("pod", "10.88.13.5", "02:00:00:00:0d:05", ""))
        .await
        .unwrap();
    assert!(c.ctl.wait_synced(Duration::from_secs(5)).await);
    let route = |t: &BTreeMap<&str, Vec<p4lb_proto::p4runtime::TableEntry>>| {
        rows(&t["ipv4_routes"])
            .iter()
            .any(|r| r.contains("10.88.13.5"))
    };
    assert!(route(&read_all(&bm.p4rt_sock).await));
    c.stop().await;

    // A table edited behind P4Runtime's back: BMv2's P4Runtime layer still
    // believes the entries exist.
    let out = bm.cli("table_clear P4lbIngress.ipv4_routes\n");
    assert!(!out.contains("Error"), "simple_switch_CLI: {out}");
    assert!(!route(&read_all(&bm.p4rt_sock).await));

    // A new controller session reconciles, recovers, and the route is back.
    let c = Ctl::start(bm.config(&dir)).await;
    assert!(
        route(&read_all(&bm.p4rt_sock).await),
        "route not restored: {:?}",
        rows(&read_all(&bm.p4rt_sock).await["ipv4_routes"])
    );
    c.stop().await;
}
