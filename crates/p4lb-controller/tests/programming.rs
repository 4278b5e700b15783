//! The controller against p4lb's software switch (started by each test, in-process):
//! what each API call puts into the switch's tables.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use p4lb_p4::entries as p;
use p4lb_proto::api;

const ROUTER: &str = "02:70:34:6c:62:01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_then_deregister() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let veth = Veth::new("p4c1a");
    let mut c = Ctl::start(config(&dir, &ssock)).await;
    let ep = c
        .client
        .register_endpoint(register_req(
            "c1",
            "10.88.0.11",
            "02:00:00:00:00:11",
            &veth.host,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ep.switch_port, 1);
    assert_eq!(ep.backend_id, 1);
    assert_eq!(ep.router_mac, ROUTER);
    let st = c
        .client
        .status(api::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        st.ready && st.switch_connected && st.endpoints == 1,
        "{st:?}"
    );
    let m = c
        .client
        .metrics(api::MetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .prometheus_text;
    assert!(m.contains("p4lb_controller_endpoints 1"), "{m}");
    assert!(m.contains("p4lb_controller_switch_connected 1"), "{m}");
    let t = read_all(&ssock).await;
    assert_eq!(
        rows(&t["ipv4_routes"]),
        vec!["dst_addr=10.88.0.11/32 -> route_to_port(port=1, dmac=02:00:00:00:00:11)"]
    );
    assert_eq!(
        rows(&t["backends"]),
        vec!["backend_id=1 -> backend_forward(ip=10.88.0.11, dmac=02:00:00:00:00:11, port=1)"]
    );
    assert_eq!(
        rows(&t["port_smac"]),
        vec![format!("egress_port=1 -> set_smac(mac={ROUTER})")]
    );
    let arp = rows(&t["arp_proxy"]);
    assert!(
        arp.contains(&format!(" -> arp_reply(mac={ROUTER})")),
        "{arp:?}"
    );
    assert!(arp.contains(&format!("tpa=10.88.0.11/32 -> arp_reply(mac={ROUTER})")));
    assert!(arp.contains(&format!("tpa=10.88.0.1/32 -> arp_reply(mac={ROUTER})")));
    let ports = sw.ports.list();
    assert!(
        format!("{ports:?}").contains("p4c1a"),
        "port not attached: {ports:?}"
    );

    let r = c
        .client
        .deregister_endpoint(api::DeregisterEndpointRequest {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.existed);
    let t = read_all(&ssock).await;
    assert!(t["ipv4_routes"].is_empty());
    assert!(t["backends"].is_empty());
    assert!(t["port_smac"].is_empty());
    assert_eq!(rows(&t["arp_proxy"]).len(), 1, "only the catch-all stays");
    assert!(!format!("{:?}", sw.ports.list()).contains("p4c1a"));
    // Deregistering again is not an error, it reports that nothing existed.
    let r = c
        .client
        .deregister_endpoint(api::DeregisterEndpointRequest {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.existed);
    c.stop().await;
    sw.shutdown().await;
}

fn slots(t: &BTreeMap<&str, Vec<p4lb_proto::p4runtime::TableEntry>>) -> BTreeMap<u64, u64> {
    t["maglev_slots"]
        .iter()
        .map(|e| {
            let m: Vec<u64> = e
                .r#match
                .iter()
                .map(|f| match &f.field_match_type {
                    Some(p4lb_proto::p4runtime::field_match::FieldMatchType::Exact(x)) => {
                        p4lb_p4::bytes::to_u64(&x.value)
                    }
                    _ => panic!("maglev key"),
                })
                .collect();
            (m[1], p::action_of(e).unwrap().1[0])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_fills_maglev_and_removal_moves_only_its_slots() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let mut c = Ctl::start(config(&dir, &ssock)).await;
    for i in 1..=3 {
        c.client
            .register_endpoint(register_req(
                &format!("web{i}"),
                &format!("10.88.0.{}", 10 + i),
                &format!("02:00:00:00:00:{:02x}", 10 + i),
                "",
            ))
            .await
            .unwrap();
    }
    let svc = c
        .client
        .add_service(api::AddServiceRequest {
            service: Some(api::Service {
                name: "web".into(),
                vip: "10.96.0.10".into(),
                protocol: "tcp".into(),
                port: 80,
                target_port: 8080,
                selector: "app=web".into(),
                ..Default::default()
            }),
            replace: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(svc.resolved_backends.len(), 3);
    assert_eq!(svc.slot_count, 1021);
    let t = read_all(&ssock).await;
    assert_eq!(
        rows(&t["vip_services"]),
        vec!["dst_addr=10.96.0.10 protocol=6 l4_dport=80 -> set_service(service_id=1, slot_count=1021, target_port=8080)"]
    );
    assert_eq!(
        rows(&t["service_vip"]),
        vec!["mark=2 -> rewrite_src(vip=10.96.0.10, vport=80, service_id=1)"]
    );
    let before = slots(&t);
    assert_eq!(before.len(), 1021, "every slot is filled");
    let mut per = BTreeMap::new();
    for b in before.values() {
        *per.entry(*b).or_insert(0) += 1;
    }
    assert_eq!(per.len(), 3);
    for n in per.values() {
        assert!((320..=360).contains(n), "uneven spread {per:?}");
    }
    // Remove backend 2: only its slots move.
    c.client
        .deregister_endpoint(api::DeregisterEndpointRequest {
            container_id: "web2".into(),
            ifname: "eth0".into(),
        })
        .await
        .unwrap();
    let after = slots(&read_all(&ssock).await);
    assert_eq!(after.len(), 1021);
    let mut moved = 0;
    for (slot, b) in &before {
        if *b == 2 {
            assert_ne!(after[slot], 2);
            moved += 1;
        } else {
            assert_eq!(after[slot], *b, "slot {slot} of backend {b} moved");
        }
    }
    assert_eq!(moved, per[&2]);
    // A new matching endpoint joins; slots go only to it.
    c.client
        .register_endpoint(register_req("web4", "10.88.0.14", "02:00:00:00:00:14", ""))
        .await
        .unwrap();
    let joined = slots(&read_all(&ssock).await);
    for (slot, b) in &after {
        assert!(
            joined[slot] == *b || joined[slot] == 2,
            "slot {slot} moved between old backends"
        );
    }
    // Removing the service clears its tables.
    c.client
        .remove_service(api::RemoveServiceRequest { name: "web".into() })
        .await
        .unwrap();
    let t = read_all(&ssock).await;
    assert!(
        t["maglev_slots"].is_empty() && t["vip_services"].is_empty() && t["service_vip"].is_empty()
    );
    c.stop().await;
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_change_nothing() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let mut c = Ctl::start(config(&dir, &ssock)).await;
    let mut good = register_req("ok", "10.88.0.20", "02:00:00:00:00:20", "");
    good.netns_path = "/proc/self/ns/net".into();
    c.client.register_endpoint(good.clone()).await.unwrap();
    c.client
        .add_service(api::AddServiceRequest {
            service: Some(api::Service {
                name: "s".into(),
                vip: "10.96.0.1".into(),
                port: 80,
                backends: vec!["ok/eth0".into()],
                ..Default::default()
            }),
            replace: false,
        })
        .await
        .unwrap();
    let tables = read_all(&ssock).await;
    let state = persisted_json(&dir);
    use tonic::Code;
    let cases: Vec<(api::RegisterEndpointRequest, Code)> = vec![
        (
            register_req("a", "10.88.0.300", "02:00:00:00:00:21", ""),
            Code::InvalidArgument,
        ),
        (
            register_req("a", "10.88.0.21", "02:00:00:00:00", ""),
            Code::InvalidArgument,
        ),
        (
            register_req("a", "10.88.0.21", "01:00:00:00:00:21", ""),
            Code::InvalidArgument,
        ),
        (
            register_req("", "10.88.0.21", "02:00:00:00:00:21", ""),
            Code::InvalidArgument,
        ),
        (
            register_req("a/b", "10.88.0.21", "02:00:00:00:00:21", ""),
            Code::InvalidArgument,
        ),
        (
            register_req("a", "10.88.0.20", "02:00:00:00:00:21", ""),
            Code::AlreadyExists,
        ),
        (
            register_req("ok", "10.88.0.22", "02:00:00:00:00:22", ""),
            Code::AlreadyExists,
        ),
        (
            register_req("a", "10.96.0.1", "02:00:00:00:00:21", ""),
            Code::AlreadyExists,
        ),
        (
            register_req("a", "10.88.0.21", "02:00:00:00:00:21", "no-such-if0"),
            Code::InvalidArgument,
        ),
    ];
    for (req, code) in cases {
        let e = c.client.register_endpoint(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), code, "{req:?}: {}", e.message());
        assert!(!e.message().is_empty());
    }
    let svc_cases: Vec<(api::Service, Code)> = vec![
        (
            api::Service {
                name: "x".into(),
                vip: "10.96.0.x".into(),
                port: 80,
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            api::Service {
                name: "x".into(),
                vip: "10.96.0.2".into(),
                port: 0,
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            api::Service {
                name: "x".into(),
                vip: "10.96.0.2".into(),
                port: 80,
                protocol: "sctp".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            api::Service {
                name: "x".into(),
                vip: "10.96.0.2".into(),
                port: 80,
                slot_count: 1000,
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            api::Service {
                name: "x".into(),
                vip: "10.96.0.2".into(),
                port: 80,
                backends: vec!["nope/eth0".into()],
                ..Default::default()
            },
            Code::NotFound,
        ),
        (
            api::Service {
                name: "x".into(),
                vip: "10.96.0.2".into(),
                port: 80,
                selector: "app".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            api::Service {
                name: "s".into(),
                vip: "10.96.0.2".into(),
                port: 80,
                ..Default::default()
            },
            Code::AlreadyExists,
        ),
        (
            api::Service {
                name: "y".into(),
                vip: "10.96.0.1".into(),
                port: 80,
                ..Default::default()
            },
            Code::AlreadyExists,
        ),
        (
            api::Service {
                name: "y".into(),
                vip: "10.88.0.20".into(),
                port: 80,
                ..Default::default()
            },
            Code::AlreadyExists,
        ),
    ];
    for (svc, code) in svc_cases {
        let e = c
            .client
            .add_service(api::AddServiceRequest {
                service: Some(svc.clone()),
                replace: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{svc:?}: {}", e.message());
    }
    let e = c
        .client
        .remove_service(api::RemoveServiceRequest {
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Identity: a caller in another network namespace is not this endpoint.
    let other_netns = p4lb_testutil::NamedNetns::unique("p4co");
    let other_ns = other_netns
        .command("sleep")
        .arg("30")
        .spawn()
        .expect("sleep in another netns");
    let ns_path = format!("/proc/{}/ns/net", other_ns.id());
    assert!(eventually(Duration::from_secs(2), || {
        let p = ns_path.clone();
        async move {
            std::fs::read_link(&p).ok() != std::fs::read_link("/proc/self/ns/net").ok()
        }
    })
    .await);
    let e = c
        .client
        .update_endpoint_metadata(api::UpdateEndpointMetadataRequest {
            identity: Some(api::Identity {
                pid: other_ns.id(),
                netns_path: String::new(),
            }),
            key: "ok/eth0".into(),
            labels: [("x".to_string(), "y".to_string())].into_iter().collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    let e = c
        .client
        .migration_event(api::MigrationEventRequest {
            phase: api::MigrationPhase::Lock as i32,
            identity: Some(api::Identity {
                pid: other_ns.id(),
                netns_path: String::new(),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{}", e.message());
    let e = c
        .client
        .migration_event(api::MigrationEventRequest {
            phase: api::MigrationPhase::Lock as i32,
            identity: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .client
        .migration_event(api::MigrationEventRequest {
            phase: api::MigrationPhase::Unlock as i32,
            identity: Some(api::Identity {
                pid: std::process::id(),
                netns_path: String::new(),
            }),
            migration_id: "mig-999".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let mut other = other_ns;
    let _ = other.kill();
    let _ = other.wait();
    assert_eq!(
        read_all(&ssock).await,
        tables,
        "a refused call changed the switch"
    );
    assert_eq!(
        persisted_json(&dir),
        state,
        "a refused call changed the persisted state"
    );
    c.stop().await;
    sw.shutdown().await;
}

/// Helper: the switch as a separate process (run by `spawn_switch_process`).
#[tokio::test]
#[ignore]
async fn switch_process() {
    switch_process_main().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_restart_is_repushed_within_a_second() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let mut sw = spawn_switch_process(&ssock).await;
    let mut c = Ctl::start(config(&dir, &ssock)).await;
    for i in 1..=3 {
        c.client
            .register_endpoint(register_req(
                &format!("r{i}"),
                &format!("10.88.1.{i}"),
                &format!("02:00:00:00:01:{i:02x}"),
                "",
            ))
            .await
            .unwrap();
    }
    c.client
        .add_service(api::AddServiceRequest {
            service: Some(api::Service {
                name: "web".into(),
                vip: "10.96.1.1".into(),
                port: 80,
                selector: "app=web".into(),
                ..Default::default()
            }),
            replace: false,
        })
        .await
        .unwrap();
    let want = read_all(&ssock).await;
    assert_eq!(want["maglev_slots"].len(), 1021);
    for round in 1..=3 {
        // The switch crashes (SIGKILL) and is started again, empty.
        sw.kill().unwrap();
        let _ = sw.wait();
        sw = spawn_switch_process(&ssock).await;
        let back = Instant::now();
        let repushed = eventually(Duration::from_secs(5), || {
            let s = ssock.clone();
            let w = want.clone();
            async move { try_read_all(&s).await.ok() == Some(w) }
        })
        .await;
        let took = back.elapsed();
        assert!(repushed, "switch state was not restored");
        println!("round {round}: state re-pushed {took:?} after the switch came back");
        assert!(took < Duration::from_secs(1), "re-push took {took:?}");
    }
    // And the controller keeps working against the new switch.
    c.client
        .register_endpoint(register_req("r9", "10.88.1.9", "02:00:00:00:01:09", ""))
        .await
        .unwrap();
    assert_eq!(read_all(&ssock).await["backends"].len(), 4);
    c.stop().await;
    sw.kill().unwrap();
    let _ = sw.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_and_metadata_updates() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let mut c = Ctl::start(config(&dir, &ssock)).await;
    for (cid, ip, net) in [
        ("g1", "10.88.5.1", "p4lb"),
        ("g2", "10.88.5.2", "p4lb"),
        ("g3", "10.88.5.3", "p4lb"),
        ("o1", "10.88.6.1", "other"),
    ] {
        let mut r = register_req(cid, ip, "02:00:00:00:05:01", "");
        r.network = net.into();
        c.client.register_endpoint(r).await.unwrap();
    }
    let e = c
        .client
        .garbage_collect(api::GarbageCollectRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let gc = c
        .client
        .garbage_collect(api::GarbageCollectRequest {
            network: "p4lb".into(),
            valid_attachments: vec![api::Attachment {
                container_id: "g2".into(),
                ifname: "eth0".into(),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        gc.removed_keys,
        vec!["g1/eth0".to_string(), "g3/eth0".to_string()]
    );
    let t = read_all(&ssock).await;
    let routes = rows(&t["ipv4_routes"]);
    assert_eq!(routes.len(), 2, "{routes:?}");
    assert!(routes
        .iter()
        .any(|r| r.starts_with("dst_addr=10.88.5.2/32")));
    assert!(routes
        .iter()
        .any(|r| r.starts_with("dst_addr=10.88.6.1/32")));

    // Metadata: the endpoint proves it is itself (its netns, its address) and a
    // label selector picks it up.
    let mut me = register_req("self", "127.0.0.1", "02:00:00:00:05:09", "");
    me.netns_path = "/proc/self/ns/net".into();
    me.labels.clear();
    c.client.register_endpoint(me).await.unwrap();
    let svc = c
        .client
        .add_service(api::AddServiceRequest {
            service: Some(api::Service {
                name: "meta".into(),
                vip: "10.96.5.1".into(),
                port: 80,
                selector: "app=meta".into(),
                ..Default::default()
            }),
            replace: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(svc.resolved_backends.is_empty());
    assert!(read_all(&ssock).await["maglev_slots"].is_empty());
    let ep = c
        .client
        .update_endpoint_metadata(api::UpdateEndpointMetadataRequest {
            identity: Some(api::Identity {
                pid: std::process::id(),
                netns_path: String::new(),
            }),
            key: "self/eth0".into(),
            labels: [("app".to_string(), "meta".to_string())]
                .into_iter()
                .collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ep.labels.get("app").map(String::as_str), Some("meta"));
    let svc = &c
        .client
        .list_services(api::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner()
        .services[0];
    assert_eq!(svc.resolved_backends, vec!["self/eth0".to_string()]);
    assert_eq!(read_all(&ssock).await["maglev_slots"].len(), 1021);
    c.stop().await;
    sw.shutdown().await;
}
