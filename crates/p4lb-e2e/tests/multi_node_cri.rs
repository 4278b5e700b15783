//! Two nodes, one switch, containerd on both ([`Nodes::start_cri`]): a stateful server
//! in a CRI pod (annotated `labels.p4lb.io/checkpoint: migrate`) with client
//! connections through the VIP moved between node A and node B with `p4lbctl migrate`
//! (each node's agent with `runtime = "cri"`: CheckpointContainer, the archive over
//! mutual TLS with its SHA-256, a new pod with the source pod's metadata restored from
//! it). Every connection must be kept, with no byte lost or duplicated and the
//! server's state kept; a pod without the annotation is refused. When node B's
//! containerd does not answer or fails the restore, the pod is restored on node A.

mod migration_common;

use std::path::Path;
use std::time::{Duration, Instant};

use migration_common::*;
use p4lb_agent::runtime::{CriRuntime, Runtime};
use p4lb_e2e::nodes::{Node, Nodes, NODES};

/// Cross-node moves: A → B → A → B → A → B.
const MOVES: usize = 5;
/// The CNI network of the pods (`cri::use_p4lb_cni`).
const NET: &str = "pods";

fn ms(us: i64) -> f64 {
    us as f64 / 1000.0
}

/// The clients' namespace, the VIP's service and the pod `web` (annotated for migration)
/// on node A, its server answering through the VIP; the pod's sandbox id and address.
fn web_pod_on_node_a(w: &World, nodes: &Nodes<'_>) -> (String, String) {
    w.pod_netns("cli", "cli", "clients", "");
    w.add_service();
    let mut c = nodes.cri(NODES[0]).unwrap();
    let (sb, _ctr, ip) = pod_from(
        w,
        &mut c,
        "web",
        &[("labels.p4lb.io/checkpoint", "migrate")],
        &nodes.image,
    );
    wait_for_the_server(w);
    (sb, ip)
}

/// Waits until the pod's server answers a client through the VIP.
fn wait_for_the_server(w: &World) {
    p4lb_testbed::wait::until(20, "the pod's server to answer", || {
        w.try_sh(&format!(
            "ip netns exec cli {} client --target {VIP}:{PORT} --conns 1 --duration 0.5 --strict",
            w.testapp
        ))
        .0
    })
    .unwrap();
}

#[test]
fn a_cri_pod_moves_between_two_nodes_keeping_every_connection() {
    let _s = serial();
    let t0 = Instant::now();
    let w = World::start();
    let nodes = Nodes::start_cri(&w).unwrap_or_else(|e| panic!("FAILED: {e}"));
    let (_sb, ip) = web_pod_on_node_a(&w, &nodes);
    let setup = t0.elapsed();
    let conns = 200;
    let client = w.start_client(conns, 5.0).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    client.mark().unwrap();

    // The same-node baseline of this run: node A's CRI runtime (the agent's code, driven
    // directly) checkpoints web and restores it into a new pod on node A.
    let rt = CriRuntime {
        socket: w.tb.host_path(NODES[0].cri_socket),
        namespace: "default".into(),
    };
    let archive = Path::new("/tmp/same-node.tar");
    let t = Instant::now();
    let spec = rt
        .checkpoint("web", archive)
        .unwrap_or_else(|e| panic!("same-node checkpoint: {e}\n{}", nodes.diag()));
    let same_checkpoint = t.elapsed();
    let t = Instant::now();
    rt.restore_in_place("web", archive, &spec)
        .unwrap_or_else(|e| panic!("same-node restore: {e}\n{}", nodes.diag()));
    let same_restore = t.elapsed();
    let same = w
        .migrations()
        .into_iter()
        .rev()
        .find(|m| m.source_ip == ip)
        .unwrap_or_else(|| panic!("no migration of {ip}\n{}", nodes.diag()));
    assert_eq!(same.state, "done", "{same:?}\n{}", nodes.diag());
    let ip = rt.inspect("web").unwrap().address;
    assert_eq!(same.target_ip, ip, "{same:?}");
    std::thread::sleep(Duration::from_secs(2));

    let t1 = Instant::now();
    let mut summary = String::new();
    let mut here = NODES[0];
    let mut last_ip = ip;
    let mut longest = Duration::from_micros(same.stall_us.max(0) as u64);
    let mut cross_stall_ms = 0.0;
    for i in 0..MOVES {
        let there: Node = NODES[(i + 1) % 2];
        let m = nodes
            .migrate("web", here, there)
            .unwrap_or_else(|e| panic!("move {i}: {e}"));
        let r = &m.migration;
        assert_eq!(r.source_address, last_ip);
        summary.push_str(&check_move(&nodes, &m, i, (here, there), NET));
        let ctl = m.controller.clone().unwrap_or_default();
        longest = longest.max(Duration::from_micros(ctl.stall_us.max(0) as u64));
        cross_stall_ms += ms(ctl.stall_us) / MOVES as f64;
        last_ip = r.target_address.clone();
        here = there;
        std::thread::sleep(Duration::from_secs(2));
    }
    let moving = t1.elapsed();
    std::thread::sleep(Duration::from_secs(2).max(2 * longest));
    let out = client.finish().unwrap();
    let (survived, more) = assert_clients_kept(&out, conns);

    // A pod without the migrate annotation is refused before anything is checkpointed.
    let mut c = nodes.cri(NODES[0]).unwrap();
    pod_from(&w, &mut c, "plain", &[], &nodes.image);
    let (ok, o, e) = w.try_sh(&nodes.migrate_command("plain", NODES[1]));
    assert!(!ok, "a pod without the annotation was moved: {o}");
    for want in [
        "lacks the annotation labels.p4lb.io/checkpoint: migrate",
        "nothing was moved",
    ] {
        assert!(e.contains(want), "{e:?} lacks {want:?}");
    }
    assert_eq!(
        nodes.state_on("plain", NODES[0]).unwrap().as_deref(),
        Some("running")
    );
    assert_eq!(nodes.state_on("plain", NODES[1]).unwrap(), None);

    record(&format!(
        "two containerd nodes, {MOVES} moves of a CRI pod with p4lbctl migrate, {conns} \
         connections: {survived} kept, {} reset, {} lost bytes, {} duplicated, {more} requests \
         after, longest client stall {} ms\n{summary}  same-node baseline on node A (same run): \
         CheckpointContainer {:.1} ms, restore into a new pod + remove the old {:.1} ms, lock -> \
         unlock {:.1} ms\n  mean lock -> unlock across nodes {cross_stall_ms:.1} ms; across \
         nodes / same node: {:.2}\n  e2e phases: setup (testbed, two containerds, registry, \
         agents, pod) {:.1} s, {MOVES} moves {:.1} s, whole test {:.1} s",
        out.last.totals.reset,
        out.last.totals.lost_bytes,
        out.last.totals.duplicated_bytes,
        out.last.totals.longest_stall_ms,
        same_checkpoint.as_secs_f64() * 1000.0,
        same_restore.as_secs_f64() * 1000.0,
        ms(same.stall_us),
        cross_stall_ms / ms(same.stall_us).max(f64::MIN_POSITIVE),
        setup.as_secs_f64(),
        moving.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    ));
}

/// The same through each node's own relay ([`Nodes::start_cri_relayed`]): each node's
/// containerd, its p4lb CNI plugin and the CRIU action script runc starts call the node's
/// agent on the default socket, and the agent relays them to the controller as that
/// node. A → B → A → B → A → B with 200 connections, every one kept.
#[test]
fn a_cri_pod_moves_between_nodes_whose_plugins_call_their_own_agents() {
    let _s = serial();
    let w = World::start();
    let nodes = Nodes::start_cri_relayed(&w).unwrap_or_else(|e| panic!("FAILED: {e}"));
    web_pod_on_node_a(&w, &nodes);
    let conns = 200;
    let (out, survived, more, summary) = moves_through_relays(&w, &nodes, NET, MOVES, conns);
    record(&format!(
        "two containerd nodes through their agents' relays, {MOVES} moves of a CRI pod with \
         p4lbctl migrate, {conns} connections: {survived} kept, {} reset, {} lost bytes, {} \
         duplicated, {more} requests after, longest client stall {} ms\n{summary}",
        out.last.totals.reset,
        out.last.totals.lost_bytes,
        out.last.totals.duplicated_bytes,
        out.last.totals.longest_stall_ms,
    ));
}

/// [`a_cri_pod_moves_between_nodes_whose_plugins_call_their_own_agents`] with each node a
/// host of its own ([`Nodes::start_cri_routed`]): containerd in the node's network
/// namespace, the pod routed behind its node (`"routed": true`), the node's uplink on a
/// switch port. 200 clients through the VIP and 20 to the pod's first address keep
/// their connections over five moves; the endpoint is on the uplink of the node it is
/// on, and only that node routes the first address.
#[test]
fn a_cri_pod_routed_behind_its_node_moves_between_hosts_with_every_connection_kept() {
    let _s = serial();
    let t0 = Instant::now();
    let w = World::start();
    let nodes = Nodes::start_cri_routed(&w).unwrap_or_else(|e| panic!("FAILED: {e}"));
    let (_, ip) = web_pod_on_node_a(&w, &nodes);
    let (figures, summary) = moves_between_routed_nodes(&w, &nodes, NET, &ip, MOVES, 200);
    record(&format!(
        "two containerd nodes as hosts (own network namespaces, uplinks on switch ports, \
         pods routed behind them), {MOVES} moves of a CRI pod with p4lbctl migrate: \
         {figures}; test {:.1} s\n{summary}",
        t0.elapsed().as_secs_f64()
    ));
}

/// Node B's containerd does not answer (its agent's `cri.socket` leads nowhere): B
/// restores nothing, node A's agent restores the checkpointed pod from its archive into
/// a new pod on node A and removes the old one, and the clients keep their connections.
#[test]
fn the_targets_containerd_is_down_and_the_pod_is_restored_on_its_node() {
    restored_on_node_a_when(
        "node B's containerd down",
        |nodes| {
            nodes
                .start_agent_on_socket(NODES[1], "", "/run/containerd-node-b/down.sock")
                .unwrap()
        },
        &[
            "/run/containerd-node-b/down.sock",
            "nothing restored",
            "web was restored on node-a",
        ],
    );
}

/// Node B's containerd fails the restore after it ran the new pod (the CNI plugin
/// registered it as the migration's target) and created the container: its runc
/// refuses `runc restore` (a wrapper). B removes that pod and restores nothing; node A
/// restores the pod in a new pod of its own and the clients keep their connections.
#[test]
fn the_targets_restore_fails_after_its_pod_ran_and_the_pod_is_restored_on_its_node() {
    restored_on_node_a_when(
        "node B's runc fails the restore",
        |nodes| {
            nodes
                .w
                .sh(&format!(
                    "r={runc}; real=$(sed -n 's/^exec \\([^ ]*\\) .*/\\1/p' $r); \
                     printf '#!/bin/sh\\nfor a in \"$@\"; do [ \"$a\" = restore ] && \
                     {{ echo runc restore refused on node-b >&2; exit 1; }}; done\\n\
                     exec %s \"$@\"\\n' \"$real\" > $r.new; chmod 755 $r.new; mv $r.new $r; \
                     grep -q refused $r",
                    runc = NODES[1].runc()
                ))
                .unwrap();
        },
        &[
            "restore of web on node node-b failed",
            "StartContainer",
            "web was restored on node-a",
        ],
    );
}

/// A migration of `web` (50 clients) from node A to node B after `break_b` broke node B:
/// it fails naming each of `wants`, the pod runs again on node A in a new pod, nothing of
/// it is on node B, the controller's migration is done and every connection is kept.
fn restored_on_node_a_when(what: &str, break_b: impl Fn(&Nodes<'_>), wants: &[&str]) {
    let _s = serial();
    let w = World::start();
    let nodes = Nodes::start_cri(&w).unwrap_or_else(|e| panic!("FAILED: {e}"));
    let (sb, ip) = web_pod_on_node_a(&w, &nodes);
    break_b(&nodes);
    let conns = 50;
    let client = w.start_client(conns, 5.0).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    client.mark().unwrap();

    let (ok, o, e) = w.try_sh(&nodes.migrate_command("web", NODES[1]));
    assert!(!ok, "the migration succeeded ({what}): {o}");
    for want in wants {
        assert!(e.contains(want), "{e:?} lacks {want:?}\n{}", nodes.diag());
    }
    assert_eq!(
        nodes.state_on("web", NODES[0]).unwrap().as_deref(),
        Some("running"),
        "{}",
        nodes.diag()
    );
    assert_eq!(
        nodes.state_on("web", NODES[1]).unwrap(),
        None,
        "nothing of web on B"
    );
    let pods = nodes.cri(NODES[0]).unwrap().list_pod_sandboxes().unwrap();
    assert!(
        pods.iter().all(|p| p.id != sb),
        "the checkpointed pod is removed"
    );
    let m = w
        .migrations()
        .into_iter()
        .rev()
        .find(|m| m.source_ip == ip)
        .unwrap_or_else(|| panic!("no migration of {ip}\n{}", nodes.diag()));
    assert_eq!(m.state, "done", "{m:?}\n{}", nodes.diag());
    let eps: Vec<_> = w
        .endpoints()
        .into_iter()
        .filter(|e| e.network == NET)
        .collect();
    assert_eq!(eps.len(), 1, "one endpoint: {eps:?}");
    assert!(!eps[0].locked && eps[0].state == "ready", "{eps:?}");
    std::thread::sleep(
        Duration::from_secs(2).max(2 * Duration::from_micros(m.stall_us.max(0) as u64)),
    );
    let out = client.finish().unwrap();
    let (survived, _) = assert_clients_kept(&out, conns);
    record(&format!(
        "two containerd nodes, {what}: nothing restored on node-b, the pod restored on \
         node-a into a new pod ({ip} -> {}), {survived}/{conns} connections kept, lock -> \
         unlock {:.1} ms",
        eps[0].ip,
        ms(m.stall_us)
    ));
}
