//! The real `p4lb-controller` binary, SIGKILLed and restarted against a software
//! switch that keeps running: the switch ends up with the same entries, none
//! duplicated, and acknowledged calls survive the kill.

mod common;

use std::process::Command;
use std::time::Duration;

use common::packet::handshakes;
use common::*;
use p4lb_controller::southbound::programmer::{key_only, table_update};
use p4lb_controller::southbound::session::{self, connect_channel};
use p4lb_p4::FiveTuple;
use p4lb_proto::api;
use p4lb_proto::p4runtime::{update::Type, TableEntry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_gives_the_same_switch_state() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let mut child = spawn_controller(&dir, &ssock);
    let mut c = client_ready(&dir).await;
    for i in 1..=4 {
        c.register_endpoint(register_req(
            &format!("k{i}"),
            &format!("10.88.4.{i}"),
            &format!("02:00:00:00:04:{i:02x}"),
            "",
        ))
        .await
        .unwrap();
    }
    c.add_service(api::AddServiceRequest {
        service: Some(api::Service {
            name: "k".into(),
            vip: "10.96.4.1".into(),
            port: 443,
            selector: "app=web".into(),
            ..Default::default()
        }),
        replace: false,
    })
    .await
    .unwrap();
    // The last acknowledged call, immediately followed by SIGKILL.
    c.deregister_endpoint(api::DeregisterEndpointRequest {
        container_id: "k4".into(),
        ifname: "eth0".into(),
    })
    .await
    .unwrap();
    // Learned connections: client SYNs to the VIP through a real port.
    let client_if = Veth::new("p4r-cl");
    let mut client = register_req(
        "client",
        "10.88.4.100",
        "02:00:00:00:04:64",
        &client_if.host,
    );
    client.labels.clear();
    c.register_endpoint(client).await.unwrap();
    handshakes(
        &client_if.peer,
        (
            [0x02, 0x70, 0x34, 0x6c, 0x62, 0x01],
            [0x02, 0, 0, 0, 0x04, 0x64],
        ),
        (
            std::net::Ipv4Addr::new(10, 88, 4, 100),
            std::net::Ipv4Addr::new(10, 96, 4, 1),
            443,
        ),
        &[
            std::net::Ipv4Addr::new(10, 88, 4, 1),
            std::net::Ipv4Addr::new(10, 88, 4, 2),
            std::net::Ipv4Addr::new(10, 88, 4, 3),
            std::net::Ipv4Addr::new(10, 88, 4, 4),
        ],
        41000..41010,
    );
    assert!(
        eventually(Duration::from_secs(5), || {
            let s = ssock.clone();
            async move {
                let t = read_all(&s).await;
                t["conn_table"].len() == 10 && t["conn_reverse"].len() == 10
            }
        })
        .await,
        "connections not learned"
    );
    let before = read_all(&ssock).await;
    assert_eq!(before["maglev_slots"].len(), 1021);
    assert_eq!(before["backends"].len(), 4);
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    let mut child = spawn_controller(&dir, &ssock);
    let mut c = client_ready(&dir).await;
    let after = read_all(&ssock).await;
    assert_eq!(after, before, "switch state differs after the restart");
    let eps = c
        .list_endpoints(api::ListEndpointsRequest {})
        .await
        .unwrap()
        .into_inner()
        .endpoints;
    assert_eq!(eps.len(), 4, "acknowledged deregistration was lost");
    // p4lbctl sees the same, as JSON, read back into the API types.
    fn ctl<T: serde::de::DeserializeOwned>(dir: &std::path::Path, args: &[&str]) -> T {
        let out = Command::new(env!("CARGO_BIN_EXE_p4lbctl"))
            .arg("--socket")
            .arg(dir.join("api.sock"))
            .arg("--json")
            .args(args)
            .output()
            .expect("running p4lbctl");
        assert!(
            out.status.success(),
            "p4lbctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("p4lbctl --json output")
    }
    let status: api::StatusResponse = ctl(&dir, &["status"]);
    assert!(status.ready);
    let eps: Vec<api::Endpoint> = ctl(&dir, &["endpoints", "ls"]);
    assert_eq!(eps.len(), 4);
    let svcs: Vec<api::Service> = ctl(&dir, &["services", "ls"]);
    assert_eq!(svcs[0].resolved_backends.len(), 3);
    let slots: Vec<api::TableRow> = ctl(&dir, &["switch", "tables", "maglev_slots"]);
    assert_eq!(slots.len(), 1021);
    let migs: Vec<api::Migration> = ctl(&dir, &["migrations", "ls"]);
    assert!(migs.is_empty());
    // The restarted controller found its pipeline on the switch (cookie) and only
    // diffed; it did not wipe the switch by pushing the pipeline again.
    let metrics = Command::new(env!("CARGO_BIN_EXE_p4lbctl"))
        .arg("--socket")
        .arg(dir.join("api.sock"))
        .arg("metrics")
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains("p4lb_controller_pipeline_pushes_total 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("p4lb_controller_reconciles_total 1"),
        "{metrics}"
    );
    let added: api::Service = ctl(
        &dir,
        &[
            "services",
            "add",
            "extra",
            "--vip",
            "10.96.4.2",
            "--port",
            "53",
            "--protocol",
            "udp",
            "--selector",
            "app=web",
        ],
    );
    assert_eq!(added.protocol, "udp");
    let removed: serde_json::Value = ctl(&dir, &["services", "rm", "extra"]);
    assert_eq!(removed["removed"], "extra");
    let bad = Command::new(env!("CARGO_BIN_EXE_p4lbctl"))
        .arg("--socket")
        .arg(dir.join("api.sock"))
        .args([
            "services",
            "add",
            "bad",
            "--vip",
            "10.96.4.x",
            "--port",
            "53",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("InvalidArgument")
            || String::from_utf8_lossy(&bad.stderr).contains("invalid"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // Still fully functional: a change after the restart is applied once.
    c.register_endpoint(register_req("k5", "10.88.4.5", "02:00:00:00:04:05", ""))
        .await
        .unwrap();
    let t = read_all(&ssock).await;
    assert_eq!(t["backends"].len(), 5);
    assert_eq!(t["maglev_slots"].len(), 1021);
    assert_eq!(t["conn_table"].len(), 10, "connections survive the restart");
    // The restarted controller adopted the connections: removing their service
    // removes them from the switch.
    c.remove_service(api::RemoveServiceRequest { name: "k".into() })
        .await
        .unwrap();
    let t = read_all(&ssock).await;
    assert!(t["conn_table"].is_empty() && t["conn_reverse"].is_empty());
    assert!(t["maglev_slots"].is_empty());
    child.kill().unwrap();
    let _ = child.wait();

    // And once more while the switch was reset in between (fresh pipeline).
    sw.shutdown().await;
    let sw = start_switch(&ssock).await;
    let mut child = spawn_controller(&dir, &ssock);
    let _c = client_ready(&dir).await;
    let again = read_all(&ssock).await;
    assert_eq!(again, t);
    child.kill().unwrap();
    let _ = child.wait();
    sw.shutdown().await;
}

/// The embedded switch restarts with the controller: learned connections come
/// back from the controller's snapshot, not from the (empty) switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_connections_survive_a_restart_of_controller_and_switch_together() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let mut child = spawn_controller(&dir, &ssock);
    let mut c = client_ready(&dir).await;
    let _client_if = learn_through_vip(&mut c, "j", 6, "p4r-cj", 42000..42010).await;
    assert!(
        eventually(Duration::from_secs(5), || {
            let s = ssock.clone();
            async move {
                let t = read_all(&s).await;
                t["conn_table"].len() == 10 && t["conn_reverse"].len() == 10
            }
        })
        .await,
        "connections not learned"
    );
    let before = read_all(&ssock).await;
    // The snapshot is written within conn.persist_interval_ms (500 ms).
    let conns = dir.join("state").join("conns.json");
    assert!(
        eventually(Duration::from_secs(5), || {
            let p = conns.clone();
            async move {
                std::fs::read_to_string(&p)
                    .map(|t| t.matches("\"backend_id\"").count() == 10)
                    .unwrap_or(false)
            }
        })
        .await,
        "no snapshot of the 10 connections in {}",
        conns.display()
    );
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    sw.shutdown().await;

    let sw = start_switch(&ssock).await;
    // A new switch: no pipeline, no entries.
    assert!(try_read_all(&ssock).await.is_err());
    let mut child = spawn_controller(&dir, &ssock);
    let _c = client_ready(&dir).await;
    let after = read_all(&ssock).await;
    assert_eq!(after["conn_table"], before["conn_table"]);
    assert_eq!(after["conn_reverse"], before["conn_reverse"]);
    assert_eq!(after, before, "switch state differs after both restarted");
    child.kill().unwrap();
    let _ = child.wait();
    sw.shutdown().await;
}

/// A controller process that is SIGKILLed when dropped, also when an assertion fails.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Deletes `entries` from the switch on `ssock` as a primary of its own (election id 7),
/// the way another controller instance would, then lets the role go.
async fn delete_as_other_primary(ssock: &std::path::Path, entries: Vec<TableEntry>) {
    let ch = connect_channel(&format!("unix:{}", ssock.display()), Duration::from_secs(2))
        .await
        .expect("connecting to the switch");
    let mut c = session::client(ch);
    let (_tx, _inbound, answer) = session::arbitrate(&mut c, 0, 7, Duration::from_secs(2))
        .await
        .expect("arbitration");
    assert_eq!(
        answer.status.map(|s| s.code).unwrap_or(0),
        0,
        "not primary on the switch"
    );
    let ups = entries
        .into_iter()
        .map(|e| table_update(Type::Delete, key_only(&e)))
        .collect();
    c.write(session::write_request(0, 7, ups))
        .await
        .expect("deleting entries");
}

/// After a controller restart the switch is the truth about learned connections: one
/// that left the switch while the controller was down (its snapshot still names it) is
/// not written back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_gone_from_the_switch_is_not_brought_back_from_the_snapshot() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let mut child = Killed(spawn_controller(&dir, &ssock));
    let mut c = client_ready(&dir).await;
    let _client_if = learn_through_vip(&mut c, "g", 11, "p4r-cg", 43000..43010).await;
    let conns = dir.join("state").join("conns.json");
    assert!(
        eventually(Duration::from_secs(5), || {
            let p = conns.clone();
            async move {
                std::fs::read_to_string(&p)
                    .map(|t| t.matches("\"backend_id\"").count() == 10)
                    .unwrap_or(false)
            }
        })
        .await,
        "no snapshot of the 10 connections in {}",
        conns.display()
    );
    child.0.kill().expect("SIGKILL");
    let _ = child.0.wait();

    // While the controller is down, one connection leaves the switch.
    let before = read_all(&ssock).await;
    let fwd = before["conn_table"][0].clone();
    let gone = FiveTuple::from_matches(&fwd.r#match).unwrap();
    let rev = before["conn_reverse"]
        .iter()
        .find(|e| {
            FiveTuple::from_matches(&e.r#match).map(|t| (t.dst, t.dport))
                == Some((gone.src, gone.sport))
        })
        .expect("the connection's reverse entry")
        .clone();
    delete_as_other_primary(&ssock, vec![fwd, rev]).await;
    let without = read_all(&ssock).await;
    assert_eq!(without["conn_table"].len(), 9);

    let child = Killed(spawn_controller(&dir, &ssock));
    let _c = client_ready(&dir).await;
    let after = read_all(&ssock).await;
    assert_eq!(
        rows(&after["conn_table"]),
        rows(&without["conn_table"]),
        "the restarted controller wrote back a connection the switch no longer had"
    );
    assert_eq!(rows(&after["conn_reverse"]), rows(&without["conn_reverse"]));
    assert_eq!(after, without);
    drop(child);
    sw.shutdown().await;
}

/// Two backends `{name}1`, `{name}2` at 10.88.`net`.1-2 behind VIP 10.96.`net`.1:443 (service
/// `name`), a client at 10.88.`net`.100 on a real port `ifname`, and one completed handshake
/// through the VIP per client port of `sports`. MAC addresses spell `net` in hex digits
/// (02:00:00:00:`net`:…). Returns the client's veth, which must outlive the connections.
async fn learn_through_vip(
    c: &mut p4lb_proto::api::controller_client::ControllerClient<tonic::transport::Channel>,
    name: &str,
    net: u8,
    ifname: &str,
    sports: std::ops::Range<u16>,
) -> Veth {
    let mac_byte = u8::from_str_radix(&format!("{net:02}"), 16).expect("net in hex digits");
    for i in 1..=2 {
        c.register_endpoint(register_req(
            &format!("{name}{i}"),
            &format!("10.88.{net}.{i}"),
            &format!("02:00:00:00:{net:02}:{i:02x}"),
            "",
        ))
        .await
        .unwrap();
    }
    c.add_service(api::AddServiceRequest {
        service: Some(api::Service {
            name: name.into(),
            vip: format!("10.96.{net}.1"),
            port: 443,
            selector: "app=web".into(),
            ..Default::default()
        }),
        replace: false,
    })
    .await
    .unwrap();
    let client_if = Veth::new(ifname);
    let mut client = register_req(
        "client",
        &format!("10.88.{net}.100"),
        &format!("02:00:00:00:{net:02}:64"),
        &client_if.host,
    );
    client.labels.clear();
    c.register_endpoint(client).await.unwrap();
    handshakes(
        &client_if.peer,
        (
            [0x02, 0x70, 0x34, 0x6c, 0x62, 0x01],
            [0x02, 0, 0, 0, mac_byte, 0x64],
        ),
        (
            std::net::Ipv4Addr::new(10, 88, net, 100),
            std::net::Ipv4Addr::new(10, 96, net, 1),
            443,
        ),
        &[
            std::net::Ipv4Addr::new(10, 88, net, 1),
            std::net::Ipv4Addr::new(10, 88, net, 2),
        ],
        sports,
    );
    client_if
}
