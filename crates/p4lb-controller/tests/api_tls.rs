//! The controller API over TCP: mutual TLS with certificates made by `p4lb_controller::cert`
//! (what `p4lbctl cert` runs), callers named by their certificates. A TCP client without a
//! certificate of the client CA never reaches a handler; a node changes only its own
//! endpoints (PERMISSION_DENIED, nothing changed, counted in api_errors), adds no service,
//! and restores another node's endpoint only through a checkpointed migration that names it
//! as target node. No root needed: nothing here touches a namespace.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::pki::{client, refused, start, Pki, CALL, CONNECT};
use common::*;
use p4lb_api::{ApiError, Client};
use p4lb_proto::api::{self, MigrationPhase};
use tonic::Code;

fn reg(cid: &str, ip: &str, mac: &str) -> api::RegisterEndpointRequest {
    // A node's netns path names a namespace of its own kernel: recorded, not resolved.
    let mut r = register_req(cid, ip, mac, "");
    r.netns_path = format!("/run/netns/{cid}");
    r
}

async fn snapshot(c: &Client) -> (Vec<api::Endpoint>, Vec<api::Migration>) {
    (
        c.list_endpoints().await.unwrap(),
        c.list_migrations().await.unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_callers_without_a_certificate_of_the_client_ca_never_reach_the_api() {
    let (_d, dir) = tempdir();
    let pki = Pki::new(&dir);
    let (_sw, ctl, addr) = start(&dir, &pki).await;
    let calls = ctl.ctl.metrics.api_calls.get();

    let ca = tonic::transport::Certificate::from_pem(std::fs::read(&pki.ca).unwrap());
    let (rc, rk) = (
        pki.rogue_ca.join("node-a.pem"),
        pki.rogue_ca.join("node-a-key.pem"),
    );
    let attempts = [
        (
            "no client certificate",
            tonic::transport::ClientTlsConfig::new().ca_certificate(ca.clone()),
        ),
        (
            "a certificate of another CA",
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(ca)
                .identity(tonic::transport::Identity::from_pem(
                    std::fs::read(rc).unwrap(),
                    std::fs::read(rk).unwrap(),
                )),
        ),
    ];
    for (what, tls) in attempts {
        let r = match Client::connect_tls(&addr, &tls, CONNECT, CALL).await {
            Ok(c) => c.status().await.map(|_| ()),
            Err(e) => Err(e),
        };
        match r {
            Err(ApiError::Unavailable { detail, .. }) => println!("{what}: refused: {detail}"),
            other => panic!("{what}: want the handshake refused, got {other:?}"),
        }
    }
    // Plain HTTP/2 on the TLS port gets nowhere either.
    let plain = tonic::transport::Endpoint::from_shared(addr.replace("https://", "http://"))
        .unwrap()
        .connect_timeout(CONNECT)
        .timeout(CALL);
    if let Ok(ch) = plain.connect().await {
        let r = api::controller_client::ControllerClient::new(ch)
            .status(api::StatusRequest {})
            .await;
        assert!(r.is_err(), "plain TCP: {r:?}");
    }
    // A client that connects and never starts the handshake is dropped
    // (p4lb_api::tls::HANDSHAKE_TIMEOUT); the outer bound only keeps a failure from hanging.
    let mut silent = tokio::net::TcpStream::connect(ctl.ctl.api_tcp_addr.get().unwrap())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        p4lb_api::tls::HANDSHAKE_TIMEOUT * 3,
        tokio::io::AsyncReadExt::read_to_end(&mut silent, &mut buf),
    )
    .await
    .expect("the server closes a connection without a handshake");
    assert!(buf.is_empty(), "{read:?} {buf:?}");
    // Why, as p4lbctl says it: the server's alert after the client's handshake; a
    // certificate of the client CA is not refused.
    let probe = |cert: PathBuf, key: PathBuf| {
        let (addr, ca) = (addr.clone(), pki.ca.clone());
        async move {
            p4lb_api::tls::refusal(&addr, "127.0.0.1", &ca, &cert, &key, Duration::from_secs(2))
                .await
        }
    };
    let why = probe(
        pki.rogue_ca.join("node-a.pem"),
        pki.rogue_ca.join("node-a-key.pem"),
    )
    .await
    .expect("another CA's certificate is refused");
    assert!(
        why.contains(
            "refused this client's certificate in the TLS handshake: received fatal alert"
        ),
        "{why}"
    );
    let (c, k) = pki.cert("node-a");
    assert_eq!(probe(c, k).await, None);
    // None of them reached a handler.
    assert_eq!(ctl.ctl.metrics.api_calls.get(), calls);

    // The same CA's certificate gets through, as a node.
    let a = client(&addr, &pki, "node-a").await;
    a.status().await.expect("node-a calls Status");
    assert_eq!(ctl.ctl.metrics.api_calls.get(), calls + 1);
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_changes_only_its_own_endpoints() {
    let (_d, dir) = tempdir();
    let pki = Pki::new(&dir);
    let (_sw, ctl, addr) = start(&dir, &pki).await;
    let a = client(&addr, &pki, "node-a").await;
    let b = client(&addr, &pki, "node-b").await;

    // Each node registers on itself: the node is its certificate's name, and its
    // netns path is recorded as given (no inode: the controller did not resolve it).
    let ea = a
        .register_endpoint(reg("a1", "10.88.9.1", "02:00:00:00:09:01"))
        .await
        .unwrap();
    assert_eq!(ea.node, "node-a");
    assert_eq!(ea.netns_path, "/run/netns/a1");
    assert_eq!(ea.netns_inode, 0);
    let eb = b
        .register_endpoint(reg("b1", "10.88.9.2", "02:00:00:00:09:02"))
        .await
        .unwrap();
    assert_eq!(eb.node, "node-b");
    // The lock and checkpoint of B's own endpoint (no target node).
    let m = b
        .migration_event(event_for_key(MigrationPhase::Lock, &eb.key, ""))
        .await
        .unwrap();
    assert_eq!(
        (m.source_node.as_str(), m.target_node.as_str()),
        ("node-b", "")
    );
    b.migration_event(event_for_key(MigrationPhase::Checkpointed, &eb.key, &m.id))
        .await
        .unwrap();

    let before = snapshot(&a).await;
    let errors = ctl.ctl.metrics.api_errors.get();
    // Node A against B's endpoint: register its key, deregister, relabel, lock, end its
    // migration, restore it (by address, or under its key).
    let r = a
        .register_endpoint(reg("b1", "10.88.9.3", "02:00:00:00:09:03"))
        .await;
    refused(r, Code::AlreadyExists, "A registers B's key");
    let r = a.deregister_endpoint("b1", "eth0").await;
    let msg = refused(r, Code::PermissionDenied, "A deregisters B's endpoint");
    assert!(
        msg.contains("node node-a may not change endpoint b1/eth0"),
        "{msg}"
    );
    let r = a
        .raw()
        .update_endpoint_metadata(api::UpdateEndpointMetadataRequest {
            key: eb.key.clone(),
            labels: [("app".to_string(), "stolen".to_string())].into(),
            ..Default::default()
        })
        .await;
    assert_eq!(
        r.unwrap_err().code(),
        Code::PermissionDenied,
        "A relabels B's"
    );
    for phase in [
        MigrationPhase::Lock,
        MigrationPhase::Abort,
        MigrationPhase::RestoredAt,
        MigrationPhase::Unlock,
    ] {
        let r = a
            .migration_event(event_for_key(phase, &eb.key, &m.id))
            .await;
        refused(
            r,
            Code::PermissionDenied,
            &format!("A sends {phase:?} for B's"),
        );
    }
    let mut restore = reg("a2", "10.88.9.4", "02:00:00:00:09:04");
    restore.restore_of_ip = eb.ip.clone();
    restore.locked = true;
    let msg = refused(
        a.register_endpoint(restore).await,
        Code::PermissionDenied,
        "A restores B's endpoint",
    );
    assert!(
        msg.contains("may not restore endpoint b1/eth0 of node node-b"),
        "{msg}"
    );
    assert_eq!(snapshot(&a).await, before, "nothing changed");
    let mut same_key = reg("b1", "10.88.9.2", "02:00:00:00:09:02");
    same_key.locked = true;
    // B's runtime deletes the checkpointed container: its record stays, detached.
    b.deregister_endpoint("b1", "eth0").await.unwrap();
    let before_detached = snapshot(&a).await;
    let msg = refused(
        a.register_endpoint(same_key).await,
        Code::PermissionDenied,
        "A restores B's endpoint under its key",
    );
    assert!(
        msg.contains("node node-a may not restore endpoint b1/eth0"),
        "{msg}"
    );
    assert_eq!(snapshot(&a).await, before_detached, "nothing changed");
    // Garbage collection by A removes A's endpoints only.
    let gc = a
        .raw()
        .garbage_collect(api::GarbageCollectRequest {
            network: "p4lb".into(),
            valid_attachments: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gc.removed_keys, vec![ea.key.clone()]);
    let (endpoints, migrations) = snapshot(&a).await;
    assert!(
        endpoints.iter().any(|e| e.key == eb.key),
        "B's endpoint stays"
    );
    assert_eq!(migrations, before.1, "no migration changed");
    assert!(ctl.ctl.metrics.api_errors.get() >= errors + 8);
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_for_admins_and_local_callers() {
    let (_d, dir) = tempdir();
    let pki = Pki::new(&dir);
    let (_sw, mut ctl, addr) = start(&dir, &pki).await;
    let a = client(&addr, &pki, "node-a").await;
    let ops = client(&addr, &pki, "ops").await;
    let svc = api::AddServiceRequest {
        service: Some(api::Service {
            name: "web".into(),
            vip: "10.99.0.1".into(),
            protocol: "tcp".into(),
            port: 80,
            ..Default::default()
        }),
        replace: false,
    };
    let msg = refused(
        a.add_service(svc.clone()).await,
        Code::PermissionDenied,
        "a node adds a service",
    );
    assert!(msg.contains("node node-a may not call AddService"), "{msg}");
    assert!(a.list_services().await.unwrap().is_empty());
    ops.add_service(svc).await.expect("an admin adds a service");
    refused(
        a.remove_service("web").await,
        Code::PermissionDenied,
        "a node removes a service",
    );
    assert_eq!(a.list_services().await.unwrap().len(), 1);
    // An admin registers on the controller's node and may remove any node's endpoint.
    let eb = client(&addr, &pki, "node-b")
        .await
        .register_endpoint(reg("b1", "10.88.9.2", "02:00:00:00:09:02"))
        .await
        .unwrap();
    let eo = ops
        .register_endpoint(reg("o1", "10.88.9.5", "02:00:00:00:09:05"))
        .await
        .unwrap();
    assert_eq!(eo.node, "ctl-host");
    assert!(ops.deregister_endpoint("b1", "eth0").await.unwrap());
    assert!(ops.get_endpoint(&eb.key).await.unwrap().is_none());
    // The Unix socket keeps the whole API.
    ctl.client
        .remove_service(api::RemoveServiceRequest { name: "web".into() })
        .await
        .expect("a local caller removes a service");
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_on_another_node_needs_the_source_checkpoint_naming_it() {
    let (_d, dir) = tempdir();
    let pki = Pki::new(&dir);
    let (_sw, ctl, addr) = start(&dir, &pki).await;
    let a = client(&addr, &pki, "node-a").await;
    let b = client(&addr, &pki, "node-b").await;
    let c = client(&addr, &pki, "node-c").await;
    let ea = a
        .register_endpoint(reg("a1", "10.88.9.1", "02:00:00:00:09:01"))
        .await
        .unwrap();
    let restore = |node: &str, node_ip: &str| {
        let mut r = reg(&format!("{node}-r"), node_ip, "02:00:00:00:09:0a");
        r.restore_of_ip = ea.ip.clone();
        r.locked = true;
        r
    };

    // A's checkpoint starts the migration and names B as its target.
    let mut lock = event_for_key(MigrationPhase::Lock, &ea.key, "");
    lock.target_node = "node-b".into();
    let m = a.migration_event(lock).await.unwrap();
    assert_eq!(
        (m.source_node.as_str(), m.target_node.as_str()),
        ("node-a", "node-b")
    );
    // Only the source's node (or an admin) names the target; a node's events are about
    // one of its endpoints.
    let ec = c
        .register_endpoint(reg("c0", "10.88.9.9", "02:00:00:00:09:09"))
        .await
        .unwrap();
    let mut steal = event_for_key(MigrationPhase::RestoreStarted, &ec.key, &m.id);
    steal.target_node = "node-c".into();
    refused(
        c.migration_event(steal.clone()).await,
        Code::PermissionDenied,
        "C names itself as target",
    );
    steal.endpoint_key.clear();
    refused(
        c.migration_event(steal).await,
        Code::InvalidArgument,
        "C sends an event about no endpoint",
    );
    // Before the checkpoint finished, not even B restores it.
    let before = snapshot(&a).await;
    refused(
        b.register_endpoint(restore("b", "10.88.9.2")).await,
        Code::PermissionDenied,
        "B restores before the checkpoint",
    );
    assert_eq!(snapshot(&a).await, before);
    a.migration_event(event_for_key(MigrationPhase::Checkpointed, &ea.key, &m.id))
        .await
        .unwrap();
    // Once checkpointed the target node is fixed.
    let mut change = event_for_key(MigrationPhase::Checkpointed, &ea.key, &m.id);
    change.target_node = "node-c".into();
    refused(
        a.migration_event(change).await,
        Code::FailedPrecondition,
        "A changes the target after the checkpoint",
    );
    // C is not the target.
    let before = snapshot(&a).await;
    let msg = refused(
        c.register_endpoint(restore("c", "10.88.9.3")).await,
        Code::PermissionDenied,
        "C restores A's endpoint",
    );
    assert!(msg.contains("its target node is node-b"), "{msg}");
    assert_eq!(snapshot(&a).await, before);

    // B is: its restore registers locked, takes the backend over and unlocks.
    let t = b
        .register_endpoint(restore("b", "10.88.9.2"))
        .await
        .expect("B restores A's endpoint");
    assert_eq!((t.node.as_str(), t.locked), ("node-b", true));
    assert_eq!(t.restore_of_ip, ea.ip);
    let mut retarget = event_for_key(MigrationPhase::RestoreStarted, &t.key, &m.id);
    retarget.target_node = "node-c".into();
    let msg = refused(
        b.migration_event(retarget).await,
        Code::PermissionDenied,
        "B changes the target node",
    );
    assert!(
        msg.contains("node node-b may not set the target node"),
        "{msg}"
    );
    b.migration_event(event_for_key(MigrationPhase::RestoreStarted, &t.key, &m.id))
        .await
        .unwrap();
    b.migration_event(event_for_key(MigrationPhase::RestoredAt, &t.key, &m.id))
        .await
        .unwrap();
    let done = b
        .migration_event(event_for_key(MigrationPhase::Unlock, &t.key, &m.id))
        .await
        .unwrap();
    assert_eq!(done.state, "done");
    assert_eq!(done.target_key, t.key);
    let moved = b.get_endpoint(&t.key).await.unwrap().unwrap();
    assert_eq!(moved.backend_id, ea.backend_id);
    assert!(moved.migrated_ips.contains(&ea.ip), "{moved:?}");

    // A restore on the source's own node needs no target node, as on one host.
    let m2 = b
        .migration_event(event_for_key(MigrationPhase::Lock, &t.key, ""))
        .await
        .unwrap();
    b.migration_event(event_for_key(MigrationPhase::Checkpointed, &t.key, &m2.id))
        .await
        .unwrap();
    let mut again = reg("b-r2", "10.88.9.6", "02:00:00:00:09:06");
    again.restore_of_ip = t.ip.clone();
    again.locked = true;
    let t2 = b.register_endpoint(again).await.expect("same-node restore");
    assert_eq!(t2.restore_of_ip, t.ip);
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_under_their_certificate_name_and_are_kept() {
    let (_d, dir) = tempdir();
    let pki = Pki::new(&dir);
    let (sw, mut ctl, addr) = start(&dir, &pki).await;
    let a = client(&addr, &pki, "node-a").await;
    let n = a.register_node("https://127.0.0.1:7443").await.unwrap();
    assert_eq!(n.name, "node-a");
    refused(
        a.register_node("http://127.0.0.1:7443").await,
        Code::InvalidArgument,
        "an agent without TLS",
    );
    let ops = client(&addr, &pki, "ops").await;
    refused(
        ops.register_node("https://127.0.0.1:7444").await,
        Code::InvalidArgument,
        "an admin is no node",
    );
    let local = ctl
        .client
        .register_node(api::RegisterNodeRequest {
            agent_address: "https://127.0.0.1:7445".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(local.name, "ctl-host");
    // An endpoint registered on the Unix socket is on the controller's node.
    let e = ctl
        .client
        .register_endpoint(register_req("l1", "10.88.9.7", "02:00:00:00:09:07", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e.node, "ctl-host");
    ctl.stop().await;

    // Kept across a restart; p4lbctl lists them over TCP as an admin.
    let mut cfg = config(&dir, &dir.join("switch.sock"));
    pki.configure(&mut cfg);
    let ctl = Ctl::start(cfg).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            ctl.ctl.api_tcp_addr.get().is_some()
        })
        .await
    );
    let addr = format!("https://{}", ctl.ctl.api_tcp_addr.get().unwrap());
    let (cert, key) = pki.cert("ops");
    let ca = pki.ca.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_p4lbctl"))
            .args(["--controller", &addr, "--json", "nodes", "ls"])
            .arg("--tls-ca")
            .arg(&ca)
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .env_remove("P4LB_SOCKET")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes: Vec<api::Node> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["ctl-host", "node-a"]);
    assert_eq!(nodes[1].agent_address, "https://127.0.0.1:7443");
    ctl.stop().await;
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_of_an_old_state_file_are_on_the_local_node() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let _sw = start_switch(&ssock).await;
    let mut cfg = config(&dir, &ssock);
    cfg.node_name = "first".into();
    let mut ctl = Ctl::start(cfg.clone()).await;
    ctl.client
        .register_endpoint(register_req("o1", "10.88.9.8", "02:00:00:00:09:08", ""))
        .await
        .unwrap();
    ctl.stop().await;
    // The state file as versions without nodes wrote it.
    let path = dir.join("state/state.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let e = v["endpoints"]["o1/eth0"].as_object_mut().unwrap();
    assert_eq!(e.remove("node"), Some(serde_json::json!("first")));
    v.as_object_mut().unwrap().remove("nodes");
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();

    cfg.node_name = "host-1".into();
    let mut ctl = Ctl::start(cfg).await;
    let e = ctl
        .client
        .get_endpoint(api::GetEndpointRequest {
            key: "o1/eth0".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e.node, "host-1");
    ctl.stop().await;
}

#[tokio::test]
async fn tcp_without_tls_and_readable_keys_do_not_start() {
    let (_d, dir) = tempdir();
    let pki = Pki::new(&dir);
    let mut cfg = config(&dir, Path::new("/nonexistent"));
    cfg.api.tcp = "127.0.0.1:0".into();
    let e = cfg.validate().expect_err("tcp without TLS");
    assert!(e.to_string().contains("api.tls_cert"), "{e}");
    let mut cfg = config(&dir, Path::new("/nonexistent"));
    cfg.api.tls_cert = pki.cert("p4lb-controller").0;
    let e = cfg.validate().expect_err("TLS without tcp");
    assert!(e.to_string().contains("api.tcp"), "{e}");
    let mut cfg = config(&dir, Path::new("/nonexistent"));
    cfg.api.admins = vec!["not a name".into()];
    cfg.validate()
        .expect_err("an admin name that is no DNS name");

    // A key that group or others can read stops the server before it listens.
    let ssock = dir.join("switch.sock");
    let _sw = start_switch(&ssock).await;
    let mut cfg = config(&dir, &ssock);
    pki.configure(&mut cfg);
    std::fs::set_permissions(&cfg.api.tls_key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let sock = cfg.api.socket.clone();
    let ctl = p4lb_controller::Controller::start(cfg).await.unwrap();
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let e = p4lb_controller::server::serve(ctl.clone(), rx)
        .await
        .expect_err("a readable key");
    let msg = format!("{e:#}");
    assert!(
        msg.contains("api.tls_key") && msg.contains("chmod 600"),
        "{msg}"
    );
    assert!(!sock.exists(), "nothing was served");
    ctl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_beyond_the_limit_are_closed() {
    let (_d, dir) = tempdir();
    let pki = Pki::new(&dir);
    let ssock = dir.join("switch.sock");
    let _sw = start_switch(&ssock).await;
    let mut cfg = config(&dir, &ssock);
    pki.configure(&mut cfg);
    cfg.api.tcp_max_connections = 2;
    let ctl = Ctl::start(cfg).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            ctl.ctl.api_tcp_addr.get().is_some()
        })
        .await
    );
    let sock = *ctl.ctl.api_tcp_addr.get().unwrap();
    // Two clients that connect and stall hold both slots.
    let held = [
        tokio::net::TcpStream::connect(sock).await.unwrap(),
        tokio::net::TcpStream::connect(sock).await.unwrap(),
    ];
    // A third is closed at once, while the two are still open.
    let mut third = tokio::net::TcpStream::connect(sock).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(
        p4lb_api::tls::HANDSHAKE_TIMEOUT * 3,
        tokio::io::AsyncReadExt::read_to_end(&mut third, &mut buf),
    )
    .await
    .expect("the third connection is closed")
    .ok();
    assert!(buf.is_empty());
    for h in &held {
        let mut b = [0u8; 1];
        match h.try_read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("a held connection was closed: {other:?}"),
        }
    }
    // Their slots come back when they go.
    drop(held);
    let addr = format!("https://{sock}");
    assert!(
        eventually(Duration::from_secs(10), || {
            let (addr, tls) = (addr.clone(), pki.tls("node-a"));
            async move {
                match Client::connect_tls(&addr, &tls, CONNECT, CALL).await {
                    Ok(c) => c.status().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await,
        "a client gets through once the stalled ones are gone"
    );
    ctl.stop().await;
}
