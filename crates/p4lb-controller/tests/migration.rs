//! Connection learning from real packets and full migrations (LOCK → RESTORED_AT →
//! UNLOCK, and the action script's LOCK → RESTORE_STARTED → UNLOCK) against p4lb's
//! software switch, with identities checked against real
//! network namespaces.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::packet::{handshakes, send_frame, tcp_ack, SERVER_ISN};
use common::*;
use p4lb_p4::entries as p;
use p4lb_proto::api;

const ROUTER: [u8; 6] = [0x02, 0x70, 0x34, 0x6c, 0x62, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x64];

fn conn_rows(
    t: &std::collections::BTreeMap<&str, Vec<p4lb_proto::p4runtime::TableEntry>>,
) -> Vec<(u16, u16)> {
    // (client source port, pinned backend)
    t["conn_table"]
        .iter()
        .map(|e| {
            let ft = p::FiveTuple::from_matches(&e.r#match).unwrap();
            (ft.sport, p::action_of(e).unwrap().1[0] as u16)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_connections_stay_pinned_and_follow_a_migration() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let client_if = Veth::new("p4m-cl");
    let src_ns = Netns::new("p4lbt-src", &["10.88.2.21"]);
    let dst_ns = Netns::new("p4lbt-dst", &["10.88.2.22", "10.88.2.21"]);
    let mut c = Ctl::start(config(&dir, &ssock)).await;

    let mut client = register_req(
        "client",
        "10.88.2.100",
        "02:00:00:00:02:64",
        &client_if.host,
    );
    client.labels.clear();
    c.client.register_endpoint(client).await.unwrap();
    let mut src = register_req("src", "10.88.2.21", "02:00:00:00:02:21", "");
    src.netns_path = src_ns.path();
    src.labels = [("app".to_string(), "mig".to_string())]
        .into_iter()
        .collect();
    let src = c.client.register_endpoint(src).await.unwrap().into_inner();
    let mut other = register_req("other", "10.88.2.31", "02:00:00:00:02:31", "");
    other.labels = [("app".to_string(), "mig".to_string())]
        .into_iter()
        .collect();
    let other = c
        .client
        .register_endpoint(other)
        .await
        .unwrap()
        .into_inner();
    c.client
        .add_service(api::AddServiceRequest {
            service: Some(api::Service {
                name: "mig".into(),
                vip: "10.96.2.1".into(),
                port: 80,
                selector: "app=mig".into(),
                ..Default::default()
            }),
            replace: false,
        })
        .await
        .unwrap();

    // Client handshakes through the VIP: SYN, the backend's SYN-ACK (sent by whichever
    // backend Maglev chose: both are tried, only the one holding the transit slot is
    // translated), then the client's ACK of the backend's ISN + 1, on which the switch
    // digests the connection and the controller pins it.
    let (client_ip, vip) = (Ipv4Addr::new(10, 88, 2, 100), Ipv4Addr::new(10, 96, 2, 1));
    handshakes(
        &client_if.peer,
        (ROUTER, CLIENT_MAC),
        (client_ip, vip, 80),
        &[Ipv4Addr::new(10, 88, 2, 21), Ipv4Addr::new(10, 88, 2, 31)],
        40000..40020,
    );
    let learned = eventually(Duration::from_secs(5), || {
        let s = ssock.clone();
        async move {
            let t = read_all(&s).await;
            t["conn_table"].len() == 20 && t["conn_reverse"].len() == 20
        }
    })
    .await;
    let t = read_all(&ssock).await;
    assert!(
        learned,
        "connections not learned: {:?}",
        rows(&t["conn_table"])
    );
    let pins = conn_rows(&t);
    let on_src: Vec<u16> = pins
        .iter()
        .filter(|(_, b)| u32::from(*b) == src.backend_id)
        .map(|(s, _)| *s)
        .collect();
    let on_other = pins.len() - on_src.len();
    assert!(
        !on_src.is_empty() && on_other > 0,
        "Maglev should spread 20 connections: {pins:?}"
    );
    let rev = rows(&t["conn_reverse"]);
    let s0 = on_src[0];
    assert!(
        rev.contains(&format!(
            "src_addr=10.88.2.21 dst_addr=10.88.2.100 protocol=6 l4_sport=80 l4_dport={s0} -> rewrite_src(vip=10.96.2.1, vport=80, service_id=1)"
        )),
        "{rev:?}"
    );
    // A repeated handshake ACK of a pinned connection is not learned again.
    send_frame(
        &client_if.peer,
        &tcp_ack(
            ROUTER,
            CLIENT_MAC,
            client_ip,
            vip,
            s0,
            80,
            (1001, SERVER_ISN + 1),
            false,
        ),
    );

    // The other backend leaves: its connections go, src's stay pinned.
    c.client
        .deregister_endpoint(api::DeregisterEndpointRequest {
            container_id: "other".into(),
            ifname: "eth0".into(),
        })
        .await
        .unwrap();
    let t = read_all(&ssock).await;
    let pins_after = conn_rows(&t);
    assert_eq!(pins_after.len(), on_src.len(), "{pins_after:?}");
    assert!(pins_after
        .iter()
        .all(|(s, b)| on_src.contains(s) && u32::from(*b) == src.backend_id));
    assert!(!pins_after
        .iter()
        .any(|(_, b)| u32::from(*b) == other.backend_id));

    // LOCK from the source's network namespace.
    let m = c
        .client
        .migration_event(api::MigrationEventRequest {
            phase: api::MigrationPhase::Lock as i32,
            identity: src_ns.id(),
            image_dir: "/tmp/ckpt".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.state, "locked");
    let t = read_all(&ssock).await;
    let mine = |t: &std::collections::BTreeMap<&str, Vec<p4lb_proto::p4runtime::TableEntry>>| {
        rows(&t["backends"])
            .into_iter()
            .filter(|r| r.starts_with(&format!("backend_id={} ", src.backend_id)))
            .collect::<Vec<_>>()
    };
    // The backend row and the source address's route hold its packets.
    let held = |t: &std::collections::BTreeMap<&str, Vec<p4lb_proto::p4runtime::TableEntry>>| {
        assert_eq!(
            mine(t),
            vec![format!("backend_id={} -> backend_locked()", src.backend_id)]
        );
        assert!(rows(&t["ipv4_routes"])
            .contains(&"dst_addr=10.88.2.21/32 -> route_locked()".to_string()));
    };
    held(&t);
    // The wrong namespace may not act for the migration.
    let e = c
        .client
        .migration_event(event(api::MigrationPhase::Checkpointed, &dst_ns, &m.id, ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{}", e.message());
    c.client
        .migration_event(event(api::MigrationPhase::Checkpointed, &src_ns, &m.id, ""))
        .await
        .unwrap();
    // The runtime deletes the checkpointed container: its backend is kept.
    c.client
        .deregister_endpoint(api::DeregisterEndpointRequest {
            container_id: "src".into(),
            ifname: "eth0".into(),
        })
        .await
        .unwrap();
    assert_eq!(conn_rows(&read_all(&ssock).await).len(), on_src.len());

    // The restored container's network: registered with the restore hint → locked.
    let tgt_if = Veth::new("p4m-tg");
    let mut tgt = register_req("tgt", "10.88.2.22", "02:00:00:00:02:22", &tgt_if.host);
    tgt.netns_path = dst_ns.path();
    tgt.labels.clear();
    tgt.restore_of_ip = "10.88.2.21".into();
    let tgt = c.client.register_endpoint(tgt).await.unwrap().into_inner();
    assert!(tgt.locked);
    let t = read_all(&ssock).await;
    assert!(
        rows(&t["ipv4_routes"]).contains(&"dst_addr=10.88.2.22/32 -> route_locked()".to_string())
    );
    c.client
        .migration_event(event(
            api::MigrationPhase::RestoreStarted,
            &dst_ns,
            &m.id,
            "",
        ))
        .await
        .unwrap();
    let restored = c
        .client
        .migration_event(event(
            api::MigrationPhase::RestoredAt,
            &dst_ns,
            "",
            "10.88.2.21",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(restored.id, m.id);
    assert_eq!(restored.state, "restored");
    assert!(restored.switchover_us > 0);
    assert_eq!(restored.connections_carried as usize, on_src.len());
    println!(
        "switchover {} us, {} connections carried",
        restored.switchover_us, restored.connections_carried
    );
    // Repointed, still held: the switch forwards to the target only at UNLOCK.
    let t = read_all(&ssock).await;
    held(&t);
    let done = c
        .client
        .migration_event(event(api::MigrationPhase::Unlock, &dst_ns, &m.id, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state, "done");
    assert!(done.stall_us >= restored.switchover_us);
    let t = read_all(&ssock).await;
    let port = tgt.switch_port;
    assert_eq!(
        mine(&t),
        vec![format!(
            "backend_id={} -> backend_forward(ip=10.88.2.21, dmac=02:00:00:00:02:22, port={port})",
            src.backend_id
        )]
    );
    // The target's own backend id was released: the client's row and the moved one remain.
    assert_eq!(t["backends"].len(), 2, "{:?}", rows(&t["backends"]));
    let routes = rows(&t["ipv4_routes"]);
    assert!(
        routes.contains(&format!(
            "dst_addr=10.88.2.21/32 -> route_to_port(port={port}, dmac=02:00:00:00:02:22)"
        )),
        "{routes:?}"
    );
    assert!(
        routes.contains(&format!(
            "dst_addr=10.88.2.22/32 -> route_to_port(port={port}, dmac=02:00:00:00:02:22)"
        )),
        "{routes:?}"
    );
    // Connections are untouched: still pinned to the same backend id, now the target.
    assert_eq!(conn_rows(&t).len(), on_src.len());
    assert!(conn_rows(&t)
        .iter()
        .all(|(_, b)| u32::from(*b) == src.backend_id));
    let eps = c
        .client
        .list_endpoints(api::ListEndpointsRequest {})
        .await
        .unwrap()
        .into_inner()
        .endpoints;
    let keys: Vec<&str> = eps.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, vec!["client/eth0", "tgt/eth0"]);
    let t_ep = eps.iter().find(|e| e.key == "tgt/eth0").unwrap();
    assert_eq!(t_ep.migrated_ips, vec!["10.88.2.21".to_string()]);
    assert_eq!(t_ep.backend_id, src.backend_id);
    assert_eq!(t_ep.labels.get("app").map(String::as_str), Some("mig"));
    let svc = &c
        .client
        .list_services(api::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner()
        .services[0];
    assert_eq!(svc.resolved_backends, vec!["tgt/eth0".to_string()]);
    let all = c.migrations().await;
    assert_eq!(all.len(), 1);
    c.stop().await;
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_removed() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let client_if = Veth::new("p4i-cl");
    let mut cfg = config(&dir, &ssock);
    cfg.conn.idle_timeout_ms = 1000;
    let mut c = Ctl::start(cfg).await;
    let mut client = register_req(
        "client",
        "10.88.3.100",
        "02:00:00:00:02:64",
        &client_if.host,
    );
    client.labels.clear();
    c.client.register_endpoint(client).await.unwrap();
    c.client
        .register_endpoint(register_req("b", "10.88.3.2", "02:00:00:00:03:02", ""))
        .await
        .unwrap();
    c.client
        .add_service(api::AddServiceRequest {
            service: Some(api::Service {
                name: "i".into(),
                vip: "10.96.3.1".into(),
                port: 80,
                selector: "app=web".into(),
                ..Default::default()
            }),
            replace: false,
        })
        .await
        .unwrap();
    handshakes(
        &client_if.peer,
        (ROUTER, CLIENT_MAC),
        (
            Ipv4Addr::new(10, 88, 3, 100),
            Ipv4Addr::new(10, 96, 3, 1),
            80,
        ),
        &[Ipv4Addr::new(10, 88, 3, 2)],
        40100..40101,
    );
    let learned_at = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || {
            let s = ssock.clone();
            async move {
                let t = read_all(&s).await;
                t["conn_table"].len() == 1 && t["conn_reverse"].len() == 1
            }
        })
        .await,
        "not learned"
    );
    assert!(
        eventually(Duration::from_secs(5), || {
            let s = ssock.clone();
            async move {
                let t = read_all(&s).await;
                t["conn_table"].is_empty() && t["conn_reverse"].is_empty()
            }
        })
        .await,
        "idle connection was not removed"
    );
    let gone = learned_at.elapsed();
    assert!(
        gone >= Duration::from_millis(900),
        "removed before its idle timeout: {gone:?}"
    );
    c.stop().await;
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_abort_unlock_the_source() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let ns = Netns::new("p4lbt-snap", &["10.88.7.5"]);
    let mut c = Ctl::start(config(&dir, &ssock)).await;
    let mut r = register_req("snap", "10.88.7.5", "02:00:00:00:07:05", "");
    r.netns_path = ns.path();
    let ep = c.client.register_endpoint(r).await.unwrap().into_inner();
    let forward = format!(
        "backend_id={} -> backend_forward(ip=10.88.7.5, dmac=02:00:00:00:07:05, port={})",
        ep.backend_id, ep.switch_port
    );
    let locked = format!("backend_id={} -> backend_locked()", ep.backend_id);
    assert_eq!(
        rows(&read_all(&ssock).await["backends"]),
        vec![forward.clone()]
    );
    let event = |phase: api::MigrationPhase, id: &str| api::MigrationEventRequest {
        phase: phase as i32,
        identity: ns.id(),
        migration_id: id.to_string(),
        leave_running: true,
        ..Default::default()
    };
    // Leave-running checkpoint: LOCK, then SNAPSHOT_DONE unlocks.
    let m = c
        .client
        .migration_event(event(api::MigrationPhase::Lock, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rows(&read_all(&ssock).await["backends"]),
        vec![locked.clone()]
    );
    let e = c
        .client
        .migration_event(event(api::MigrationPhase::Lock, ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{}", e.message());
    let done = c
        .client
        .migration_event(event(api::MigrationPhase::SnapshotDone, &m.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state, "done");
    assert!(done.stall_us > 0 && done.leave_running);
    let t = read_all(&ssock).await;
    assert_eq!(rows(&t["backends"]), vec![forward.clone()]);
    assert!(rows(&t["ipv4_routes"]).contains(&format!(
        "dst_addr=10.88.7.5/32 -> route_to_port(port={}, dmac=02:00:00:00:07:05)",
        ep.switch_port
    )));
    // A migration that fails: ABORT unlocks the source.
    let m2 = c
        .client
        .migration_event(event(api::MigrationPhase::Lock, ""))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(m2.id, m.id);
    assert_eq!(rows(&read_all(&ssock).await["backends"]), vec![locked]);
    let ab = c
        .client
        .migration_event(event(api::MigrationPhase::Abort, &m2.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ab.state, "aborted");
    assert_eq!(rows(&read_all(&ssock).await["backends"]), vec![forward]);
    let ms = c.migrations().await;
    assert_eq!(ms.len(), 2);
    let e = c
        .client
        .migration_event(event(api::MigrationPhase::Unlock, &m2.id))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{}", e.message());
    assert_eq!(
        e.message(),
        format!("migration {} is already aborted", m2.id)
    );
    let e = c
        .client
        .migration_event(event(api::MigrationPhase::Checkpointed, &m.id))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{}", e.message());
    assert_eq!(e.message(), format!("migration {} is already done", m.id));
    c.stop().await;
    sw.shutdown().await;
}

/// The controller keeps a netlink socket in each of its endpoints' namespaces from their
/// registration, reads a caller's addresses over it at each migration event (live: an
/// address taken away is missed at once) and drops it when the endpoint leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_is_kept_in_each_endpoints_namespace_until_it_leaves() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let _sw = start_switch(&ssock).await;
    let a = Netns::new("p4lbt-ks-a", &["10.88.9.21"]);
    let b = Netns::new("p4lbt-ks-b", &["10.88.9.22"]);
    let mut c = Ctl::start(config(&dir, &ssock)).await;
    for (cid, ip, mac, ns) in [
        ("a", "10.88.9.21", "02:00:00:00:09:21", &a),
        ("b", "10.88.9.22", "02:00:00:00:09:22", &b),
    ] {
        let mut r = register_req(cid, ip, mac, "");
        r.netns_path = ns.path();
        c.client.register_endpoint(r).await.unwrap();
    }
    // Kept off the registration's answer.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c.ctl.gauges().await.netns_sockets < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no sockets kept for the two endpoints"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = c
        .client
        .migration_event(event(api::MigrationPhase::Lock, &a, "", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.endpoint.as_ref().map(|e| e.key.as_str()), Some("a/eth0"));
    c.client
        .migration_event(event(api::MigrationPhase::Abort, &a, &m.id, ""))
        .await
        .unwrap();
    assert_eq!(
        c.ctl.gauges().await.netns_sockets,
        2,
        "read over the kept ones"
    );
    // The address check reads the namespace as it is now.
    assert!(b.0.del_addr("lo", "10.88.9.22/32").unwrap());
    let e = c
        .client
        .migration_event(event(api::MigrationPhase::Lock, &b, "", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{}", e.message());
    assert!(
        e.message().contains("does not have 10.88.9.22 configured"),
        "{}",
        e.message()
    );
    c.client
        .deregister_endpoint(api::DeregisterEndpointRequest {
            container_id: "b".into(),
            ifname: "eth0".into(),
        })
        .await
        .unwrap();
    assert_eq!(c.ctl.gauges().await.netns_sockets, 1, "b's socket dropped");
    c.stop().await;
}

/// The action script's calls: LOCK's and RESTORE_STARTED's answers name the caller's
/// endpoint (no GetEndpoint needed), LOCK and RESTORE_STARTED from a namespace without
/// an endpoint are NOT_FOUND and change nothing, and UNLOCK without a RESTORED_AT
/// repoints the backend and releases it in one commit, recording the switchover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_action_scripts_calls_switch_over_at_unlock() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let src_ns = Netns::new("p4lbt-as-src", &["10.88.8.21"]);
    let dst_ns = Netns::new("p4lbt-as-dst", &["10.88.8.22", "10.88.8.21"]);
    let stranger = Netns::new("p4lbt-as-none", &["10.88.8.99"]);
    let mut c = Ctl::start(config(&dir, &ssock)).await;
    let mut src = register_req("src", "10.88.8.21", "02:00:00:00:08:21", "");
    src.netns_path = src_ns.path();
    let src = c.client.register_endpoint(src).await.unwrap().into_inner();

    let e = c
        .client
        .migration_event(event(api::MigrationPhase::Lock, &stranger, "", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{}", e.message());
    let m = c
        .client
        .migration_event(event(api::MigrationPhase::Lock, &src_ns, "", ""))
        .await
        .unwrap()
        .into_inner();
    let ep = m
        .endpoint
        .clone()
        .expect("LOCK names the caller's endpoint");
    assert_eq!(ep.key, src.key);
    assert_eq!(ep.ip, "10.88.8.21");
    assert_eq!(ep.mac, "02:00:00:00:08:21");
    assert!(ep.locked, "{ep:?}");
    let chk = c
        .client
        .migration_event(event(api::MigrationPhase::Checkpointed, &src_ns, &m.id, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(chk.state, "checkpointed");
    c.client
        .deregister_endpoint(api::DeregisterEndpointRequest {
            container_id: "src".into(),
            ifname: "eth0".into(),
        })
        .await
        .unwrap();
    // A restore into a namespace without an endpoint is refused and changes nothing.
    let e = c
        .client
        .migration_event(event(
            api::MigrationPhase::RestoreStarted,
            &stranger,
            &m.id,
            "10.88.8.21",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{}", e.message());
    assert!(
        e.message().contains("no endpoint is registered for"),
        "{}",
        e.message()
    );
    assert_eq!(c.migrations().await[0].state, "checkpointed");
    let mut tgt = register_req("tgt", "10.88.8.22", "02:00:00:00:08:22", "");
    tgt.netns_path = dst_ns.path();
    tgt.restore_of_ip = "10.88.8.21".into();
    let tgt = c.client.register_endpoint(tgt).await.unwrap().into_inner();
    let started = c
        .client
        .migration_event(event(
            api::MigrationPhase::RestoreStarted,
            &dst_ns,
            &m.id,
            "10.88.8.21",
        ))
        .await
        .unwrap()
        .into_inner();
    let ep = started
        .endpoint
        .expect("RESTORE_STARTED names the caller's endpoint");
    assert_eq!(ep.key, tgt.key);
    assert_eq!(ep.ip, "10.88.8.22");
    let held = format!("backend_id={} -> backend_locked()", src.backend_id);
    assert!(rows(&read_all(&ssock).await["backends"]).contains(&held));

    let done = c
        .client
        .migration_event(event(
            api::MigrationPhase::Unlock,
            &dst_ns,
            &m.id,
            "10.88.8.21",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state, "done");
    assert_eq!(done.target_key, tgt.key);
    assert!(done.switchover_us > 0, "{done:?}");
    assert!(done.restored_unix_us > 0, "{done:?}");
    let ep = done.endpoint.expect("UNLOCK names the caller's endpoint");
    assert!(!ep.locked, "{ep:?}");
    assert_eq!(ep.backend_id, src.backend_id);
    let t = read_all(&ssock).await;
    assert_eq!(
        rows(&t["backends"]),
        vec![format!(
            "backend_id={} -> backend_forward(ip=10.88.8.21, dmac=02:00:00:00:08:22, port={})",
            src.backend_id, tgt.switch_port
        )]
    );
    // Listings carry no endpoint: it belongs to an event's answer.
    assert!(c.migrations().await.iter().all(|m| m.endpoint.is_none()));
    c.stop().await;
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_off_tracks_the_migration_without_holding_traffic() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let ns = Netns::new("p4lbt-nolock", &["10.88.7.6"]);
    let mut c = Ctl::start(config(&dir, &ssock)).await;
    let mut r = register_req("nolock", "10.88.7.6", "02:00:00:00:07:06", "");
    r.netns_path = ns.path();
    let ep = c.client.register_endpoint(r).await.unwrap().into_inner();
    let forward = format!(
        "backend_id={} -> backend_forward(ip=10.88.7.6, dmac=02:00:00:00:07:06, port={})",
        ep.backend_id, ep.switch_port
    );
    let route = format!(
        "dst_addr=10.88.7.6/32 -> route_to_port(port={}, dmac=02:00:00:00:07:06)",
        ep.switch_port
    );
    let m = c
        .client
        .migration_event(api::MigrationEventRequest {
            phase: api::MigrationPhase::Lock as i32,
            identity: ns.id(),
            no_lock: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.state, "locked");
    assert!(m.no_lock, "{m:?}");
    // Nothing is held at the switch: the backend row and the route still forward.
    let t = read_all(&ssock).await;
    assert_eq!(rows(&t["backends"]), vec![forward.clone()]);
    assert!(rows(&t["ipv4_routes"]).contains(&route));
    let e = c
        .client
        .get_endpoint(api::GetEndpointRequest {
            key: ep.key.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!e.locked, "{e:?}");
    // The migration is tracked all the same: a second LOCK is refused, and it
    // ends like any other.
    let again = c
        .client
        .migration_event(event(api::MigrationPhase::Lock, &ns, "", ""))
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    let ab = c
        .client
        .migration_event(event(api::MigrationPhase::Abort, &ns, &m.id, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ab.state, "aborted");
    assert!(ab.no_lock);
    assert_eq!(rows(&read_all(&ssock).await["backends"]), vec![forward]);
    c.stop().await;
    sw.shutdown().await;
}

/// Close events (FIN, RST) arrive in the same digest as learnt connections; the controller
/// installs only the learn events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_events_are_not_learned() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let mut c = Ctl::start(config(&dir, &ssock)).await;
    let b = c
        .client
        .register_endpoint(register_req("b", "10.88.9.2", "02:00:00:00:09:02", ""))
        .await
        .unwrap()
        .into_inner();
    c.client
        .add_service(api::AddServiceRequest {
            service: Some(api::Service {
                name: "e".into(),
                vip: "10.96.9.1".into(),
                port: 80,
                selector: "app=web".into(),
                ..Default::default()
            }),
            replace: false,
        })
        .await
        .unwrap();
    let msg = |sport: u16, event: p4lb_p4::ConnEvent| p4lb_p4::ConnLearn {
        src_addr: Ipv4Addr::new(10, 88, 9, 100),
        dst_addr: Ipv4Addr::new(10, 96, 9, 1),
        protocol: 6,
        src_port: sport,
        dst_port: 80,
        service_id: 1,
        backend_id: b.backend_id as u16,
        event,
    };
    let list = |msgs: Vec<p4lb_p4::ConnLearn>| p4lb_proto::p4runtime::DigestList {
        digest_id: p4lb_p4::externs::conn_learn::ID,
        list_id: 1,
        data: msgs.iter().map(|m| m.to_p4data()).collect(),
        timestamp: 0,
    };
    c.ctl
        .on_digest(list(vec![
            msg(40001, p4lb_p4::ConnEvent::Fin),
            msg(40002, p4lb_p4::ConnEvent::Rst),
            msg(40003, p4lb_p4::ConnEvent::Learn),
        ]))
        .await;
    let pins = conn_rows(&read_all(&ssock).await);
    assert_eq!(pins, vec![(40003, b.backend_id as u16)]);
    c.stop().await;
    sw.shutdown().await;
}
