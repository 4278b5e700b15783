//! The node agent's relay (`p4lb_agent::relay`): each node's plugins call the controller
//! API on the node's own socket, and the agent relays the calls to the controller over
//! mutual TLS with the node's certificate. Two nodes' relays, one controller on TCP:
//! a migration from node A to node B made of the calls the CNI plugin and the CRIU
//! action script make (identities, not keys), the target node named by A's agent, and
//! what a node may not do to another's endpoint. Needs root (network namespaces).

mod common;

use std::path::{Path, PathBuf};

use common::pki::{client, refused, start, Pki, CALL, CONNECT};
use common::*;
use p4lb_agent::relay::{Outgoing, Relay, RelaySettings};
use p4lb_api::{ApiError, Client};
use p4lb_proto::api::{self, MigrationPhase};
use tonic::Code;

/// One node: its relay on a socket of its own, and a client of it (the node's plugins).
struct Node {
    sock: PathBuf,
    c: Client,
    outgoing: Outgoing,
}

async fn node(dir: &Path, pki: &Pki, name: &str, controller: &str) -> Node {
    let sock = dir.join(format!("{name}.sock"));
    let listener = p4lb_agent::bind_relay_socket(&sock, None).unwrap();
    let outgoing = Outgoing::default();
    let relay = Relay::new(
        RelaySettings {
            node: name.to_string(),
            controller: controller.to_string(),
            tls: pki.tls(name),
            group: None,
            check_addresses: true,
        },
        outgoing.clone(),
    );
    tokio::spawn(p4lb_agent::serve_relay(relay, listener));
    let c = Client::connect(&sock, CONNECT, CALL).await.unwrap();
    Node { sock, c, outgoing }
}

impl Node {
    /// A migration event as the action script in `ns` sends it (`id` may be empty).
    async fn event(
        &self,
        phase: MigrationPhase,
        ns: &Netns,
        id: &str,
    ) -> Result<api::Migration, ApiError> {
        self.c.migration_event(event(phase, ns, id, "")).await
    }
}

/// The registration the CNI or netavark plugin sends for a pod in `ns`.
fn reg(cid: &str, ip: &str, ns: &Netns) -> api::RegisterEndpointRequest {
    let mut r = register_req(cid, ip, "02:00:00:00:00:05", "");
    r.netns_path = ns.path();
    r.labels.insert("podman.name".into(), "web".into());
    r
}

/// One controller on TCP, an administrator's client, nodes A and B with their relays,
/// and a pod namespace on each node.
struct TwoNodes {
    _d: tempfile::TempDir,
    _sw: p4lb_switch::SwitchHandle,
    _ctl: Ctl,
    admin: Client,
    a: Node,
    b: Node,
    pod_a: Netns,
    pod_b: Netns,
}

async fn two_nodes() -> TwoNodes {
    p4lb_testutil::require_root();
    let (d, dir) = tempdir();
    let pki = Pki::new(&dir);
    let (sw, ctl, addr) = start(&dir, &pki).await;
    TwoNodes {
        admin: client(&addr, &pki, "ops").await,
        a: node(&dir, &pki, "node-a", &addr).await,
        b: node(&dir, &pki, "node-b", &addr).await,
        pod_a: Netns::new("rla", &["10.88.0.5"]),
        pod_b: Netns::new("rlb", &["10.88.0.9"]),
        _d: d,
        _sw: sw,
        _ctl: ctl,
    }
}

/// Helper run by the test inside node B's pod namespace: claims node A's pod namespace
/// (`P4LB_TEST_CLAIM`) on node A's relay (`P4LB_TEST_RELAY`) and prints the answer's code.
#[tokio::test]
#[ignore]
async fn relay_caller_process() {
    let (Some(sock), Ok(claim)) = (
        std::env::var_os("P4LB_TEST_RELAY"),
        std::env::var("P4LB_TEST_CLAIM"),
    ) else {
        println!("SKIPPED: relay_caller_process is a helper run by another test");
        return;
    };
    let c = Client::connect(Path::new(&sock), CONNECT, CALL)
        .await
        .unwrap();
    let r = c
        .migration_event(api::MigrationEventRequest {
            phase: MigrationPhase::Lock as i32,
            identity: Some(api::Identity {
                pid: 0,
                netns_path: claim,
            }),
            ..Default::default()
        })
        .await;
    match r {
        Err(ApiError::Refused { code, message, .. }) => println!("ANSWER {code:?}: {message}"),
        other => println!("ANSWER {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_from_node_a_to_node_b_through_the_nodes_relays() {
    let w = two_nodes().await;
    let (admin, a, b, pod_a, pod_b) = (&w.admin, &w.a, &w.b, &w.pod_a, &w.pod_b);

    // The CNI plugin on node A registers its pod: the endpoint is node A's.
    let web =
        a.c.register_endpoint(reg("web-a", "10.88.0.5", pod_a))
            .await
            .unwrap();
    assert_eq!(web.node, "node-a");
    assert_eq!(web.key, "web-a/eth0");
    // A netns path that names nothing on the node is refused there; nothing registered.
    let mut bad = reg("ghost", "10.88.0.6", pod_a);
    bad.netns_path = "/run/netns/p4lb-no-such-ns".into();
    let msg = refused(
        a.c.register_endpoint(bad).await,
        Code::NotFound,
        "unknown netns",
    );
    assert!(msg.contains("netns_path"), "{msg}");
    assert!(admin.get_endpoint("ghost/eth0").await.unwrap().is_none());

    // Identities are resolved by the relay of the node they live on.
    let by_id = |ns: &Netns| api::GetEndpointRequest {
        identity: ns.id(),
        ..Default::default()
    };
    let found = a.c.raw().get_endpoint(by_id(pod_a)).await.unwrap();
    assert_eq!(found.into_inner().key, "web-a/eth0");
    let miss = b.c.raw().get_endpoint(by_id(pod_a)).await.unwrap_err();
    assert_eq!(miss.code(), Code::NotFound, "{miss:?}");

    // Node B can neither lock nor remove node A's endpoint: its relay finds no endpoint
    // of node B there, and the controller refuses node B the key.
    let lock_from_b = b.event(MigrationPhase::Lock, pod_a, "").await;
    let msg = refused(lock_from_b, Code::NotFound, "node B locks A's pod");
    assert!(
        ApiError::Refused {
            call: "MigrationEvent",
            code: Code::NotFound,
            message: msg.clone()
        }
        .is_no_endpoint(),
        "{msg}"
    );
    refused(
        b.c.deregister_endpoint("web-a", "eth0").await,
        Code::PermissionDenied,
        "node B removes A's endpoint",
    );
    assert!(admin.list_migrations().await.unwrap().is_empty());
    assert_eq!(
        admin
            .get_endpoint("web-a/eth0")
            .await
            .unwrap()
            .unwrap()
            .state,
        "ready"
    );

    // A process in node B's pod claiming node A's pod on A's relay: refused by the
    // kernel's word (its own namespace is not the one it claims).
    let out = pod_b
        .0
        .command(std::env::current_exe().unwrap().to_str().unwrap())
        .args([
            "--ignored",
            "--exact",
            "relay_caller_process",
            "--nocapture",
        ])
        .env("P4LB_TEST_RELAY", &a.sock)
        .env("P4LB_TEST_CLAIM", pod_a.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ANSWER PermissionDenied"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(admin.list_migrations().await.unwrap().is_empty());

    // Node A's agent migrates "web" to node B: the action script's LOCK on A carries
    // node B as the target node.
    assert!(a.outgoing.insert("web", "node-b"));
    let m = a.event(MigrationPhase::Lock, pod_a, "").await.unwrap();
    assert_eq!(m.state, "locked");
    assert_eq!(
        (m.source_node.as_str(), m.target_node.as_str()),
        ("node-a", "node-b")
    );
    assert_eq!(
        m.endpoint.as_ref().map(|e| e.key.as_str()),
        Some("web-a/eth0")
    );
    let m = a
        .event(MigrationPhase::Checkpointed, pod_a, &m.id)
        .await
        .unwrap();
    assert_eq!(m.state, "checkpointed");

    // Node B's CNI plugin registers the restore (locked, with the source's address as
    // the hint): taken as the migration's target because the migration names node B.
    let mut target = reg("web-b", "10.88.0.9", pod_b);
    target.locked = true;
    target.restore_of_ip = "10.88.0.5".into();
    let t = b.c.register_endpoint(target).await.unwrap();
    assert_eq!(
        (t.node.as_str(), t.restore_of_ip.as_str()),
        ("node-b", "10.88.0.5")
    );
    assert!(t.locked);

    // Node A cannot take the restore over: its relay has no endpoint in B's pod.
    refused(
        a.event(MigrationPhase::RestoreStarted, pod_b, &m.id).await,
        Code::NotFound,
        "node A restores in node B's pod",
    );

    // The action script on node B: RESTORE_STARTED at setup-namespaces, UNLOCK at
    // pre-resume (the switchover).
    let m = b
        .event(MigrationPhase::RestoreStarted, pod_b, &m.id)
        .await
        .unwrap();
    assert_eq!(m.state, "restoring");
    assert_eq!(
        m.endpoint.as_ref().map(|e| e.key.as_str()),
        Some("web-b/eth0")
    );
    let m = b.event(MigrationPhase::Unlock, pod_b, &m.id).await.unwrap();
    assert_eq!(m.state, "done");
    assert_eq!(m.target_key, "web-b/eth0");
    let moved = admin.get_endpoint("web-b/eth0").await.unwrap().unwrap();
    assert_eq!((moved.node.as_str(), moved.locked), ("node-b", false));
    let old = admin.get_endpoint("web-a/eth0").await.unwrap();
    assert!(
        old.as_ref().is_none_or(|e| e.state == "migrated"),
        "the source is gone or migrated: {old:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_agents_migration_node_b_cannot_restore_node_as_endpoint() {
    let w = two_nodes().await;
    let (admin, a, b, pod_a, pod_b) = (&w.admin, &w.a, &w.b, &w.pod_a, &w.pod_b);
    a.c.register_endpoint(reg("web-a", "10.88.0.5", pod_a))
        .await
        .unwrap();

    // A checkpoint on node A that its agent did not start (no target node): the
    // migration stays node A's.
    let m = a.event(MigrationPhase::Lock, pod_a, "").await.unwrap();
    assert!(m.target_node.is_empty(), "{m:?}");
    a.event(MigrationPhase::Checkpointed, pod_a, &m.id)
        .await
        .unwrap();

    // Node B may not register a restore of it, nor restore it.
    let mut target = reg("web-b", "10.88.0.9", pod_b);
    target.locked = true;
    target.restore_of_ip = "10.88.0.5".into();
    let msg = refused(
        b.c.register_endpoint(target).await,
        Code::PermissionDenied,
        "node B registers a restore of A's endpoint",
    );
    assert!(msg.contains("names no target node"), "{msg}");
    assert!(admin.get_endpoint("web-b/eth0").await.unwrap().is_none());
    refused(
        b.event(MigrationPhase::RestoreStarted, pod_b, &m.id).await,
        Code::NotFound,
        "node B restores without an endpoint",
    );
    let m = admin.get_migration(&m.id).await.unwrap();
    assert_eq!(m.state, "checkpointed", "{m:?}");
    assert_eq!(
        admin
            .get_endpoint("web-a/eth0")
            .await
            .unwrap()
            .unwrap()
            .node,
        "node-a"
    );
}
