//! Two nodes, one switch ([`p4lb_e2e::nodes`]): a stateful server with client
//! connections through the VIP moved between node A and node B with `p4lbctl migrate`
//! (each node's agent checkpoints, streams the archive over mutual TLS with its
//! SHA-256, restores), and a tampered archive refused on the target while the source
//! is restored in place. The clients' connections must all be kept, with no byte lost
//! or duplicated and the server's state kept.

mod migration_common;

use std::time::Duration;

use migration_common::*;
use p4lb_e2e::judge::judge;
use p4lb_e2e::nodes::{Node, Nodes, NODES};

const NET: &str = "p4pods";
const SUBNET: &str = "10.89.0.0/24";
/// Cross-node moves in the main test: A → B → A → B → A → B.
const MOVES: usize = 5;

fn ms(us: i64) -> f64 {
    us as f64 / 1000.0
}

/// A testbed for two nodes (the guard keeps other tests out; dropped after the world).
fn testbed() -> (Serial, World) {
    let s = serial();
    let w = World::start();
    (s, w)
}

/// Both nodes (agents registered with the controller), then the server `web` on node A
/// behind the VIP.
fn web_on_node_a(w: &World) -> Nodes<'_> {
    let nodes = Nodes::start(w).unwrap_or_else(|e| panic!("FAILED: {e}"));
    w.pod_netns("cli", "cli", "clients", "");
    w.create_network(NET, SUBNET);
    w.add_service();
    w.run_server_on_network("web", NET);
    nodes
}

fn assert_clients_kept(out: &p4lb_e2e::scenario::ClientOutput, conns: usize) -> (u64, u64) {
    let before = out.interim.first().expect("interim report");
    let after = &out.last;
    let (survived, more) = judge(before, after).unwrap();
    let t = &after.totals;
    assert_eq!(t.connections, conns as u64);
    assert_eq!(t.reset, 0, "resets: {}", out.stderr);
    assert_eq!(t.failed, 0, "{}", out.stderr);
    assert_eq!(t.lost_bytes, 0);
    assert_eq!(t.duplicated_bytes, 0);
    assert_eq!(t.state_regressions, 0, "the server lost its state");
    assert_eq!(t.server_count_mismatches, 0, "the server lost its state");
    assert_eq!(survived, conns as u64, "{}", out.stderr);
    assert!(more > 0);
    (survived, more)
}

#[test]
fn a_server_moves_between_two_nodes_keeping_every_connection() {
    let (_s, w) = testbed();
    let nodes = web_on_node_a(&w);
    let conns = 200;
    let client = w.start_client(conns, 5.0).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    client.mark().unwrap();

    // The same-node baseline of this run: Podman's export/import on node A.
    let same = w.migrate_podman("web", NET, 0, true);
    std::thread::sleep(Duration::from_secs(2));
    let same_rec = migration_of_ip(&w, &same.old_ip);

    let mut summary = String::new();
    let mut here = NODES[0];
    let mut moves = Vec::new();
    for i in 0..MOVES {
        let there: Node = NODES[(i + 1) % 2];
        let m = nodes
            .migrate("web", here, there)
            .unwrap_or_else(|e| panic!("move {i}: {e}"));
        let r = &m.migration;
        assert_eq!(
            (r.source_node.as_str(), r.target_node.as_str()),
            (here.name, there.name)
        );
        assert_ne!(
            r.target_address, r.source_address,
            "a new address on the new node"
        );
        assert_eq!(
            nodes.state_on("web", there).unwrap().as_deref(),
            Some("running")
        );
        assert_eq!(
            nodes.state_on("web", here).unwrap(),
            None,
            "the source is removed"
        );
        let c = m
            .controller
            .clone()
            .unwrap_or_else(|| panic!("move {i}: no controller record\n{}", nodes.diag()));
        assert_eq!(c.state, "done", "{c:?}\n{}", nodes.diag());
        let eps: Vec<_> = w
            .endpoints()
            .into_iter()
            .filter(|e| e.network == NET)
            .collect();
        assert_eq!(eps.len(), 1, "one endpoint after the move: {eps:?}");
        assert_eq!(eps[0].ip, r.target_address);
        assert!(!eps[0].locked && eps[0].state == "ready", "{eps:?}");
        assert_eq!(
            eps[0].labels.get("podman.name").map(String::as_str),
            Some("web")
        );
        let t = r.times.unwrap_or_default();
        summary.push_str(&format!(
            "  {} -> {} ({} -> {}): checkpoint {:.1} ms, transfer {:.1} ms ({:.1} MiB), \
             restore {:.1} ms, clean-up {:.1} ms, agent total {:.1} ms; switchover {:.1} ms, \
             lock -> unlock {:.1} ms; p4lbctl {} ms\n",
            here.name,
            there.name,
            r.source_address,
            r.target_address,
            ms(t.checkpoint_us),
            ms(t.transfer_us),
            r.archive_bytes as f64 / (1 << 20) as f64,
            ms(t.restore_us),
            ms(t.cleanup_us),
            ms(t.total_us),
            ms(c.switchover_us),
            ms(c.stall_us),
            m.command_ms
        ));
        moves.push(m);
        here = there;
        std::thread::sleep(Duration::from_secs(2));
    }
    let longest = moves
        .iter()
        .filter_map(|m| m.controller.as_ref())
        .map(|c| Duration::from_micros(c.stall_us.max(0) as u64))
        .max()
        .unwrap_or_default();
    std::thread::sleep(Duration::from_secs(2).max(2 * longest));
    let out = client.finish().unwrap();
    let (survived, more) = assert_clients_kept(&out, conns);
    let n = moves.len() as f64;
    let cross_stall: f64 = moves
        .iter()
        .filter_map(|m| m.controller.as_ref())
        .map(|c| ms(c.stall_us))
        .sum::<f64>()
        / n;
    record(&format!(
        "two nodes, {MOVES} moves with p4lbctl migrate, {conns} connections: {survived} kept, \
         {} reset, {} lost bytes, {} duplicated, {more} requests after, longest client stall \
         {} ms\n{summary}  same-node export/import on node A (same run): podman checkpoint {} \
         ms, rm + restore {} ms, lock -> unlock {:.1} ms\n  mean lock -> unlock across nodes \
         {cross_stall:.1} ms; across nodes / same node: {:.2}",
        out.last.totals.reset,
        out.last.totals.lost_bytes,
        out.last.totals.duplicated_bytes,
        out.last.totals.longest_stall_ms,
        same.checkpoint_ms,
        same.restore_ms,
        ms(same_rec.stall_us),
        cross_stall / ms(same_rec.stall_us).max(f64::MIN_POSITIVE)
    ));
}

/// The newest migration record of source address `ip`.
fn migration_of_ip(w: &World, ip: &str) -> p4lb_api::api::Migration {
    w.migrations()
        .into_iter()
        .rev()
        .find(|m| m.source_ip == ip)
        .unwrap_or_else(|| panic!("no migration of {ip}\n{}", w.diag()))
}

#[test]
fn a_tampered_archive_is_refused_and_the_server_restored_on_its_node() {
    let (_s, w) = testbed();
    let nodes = web_on_node_a(&w);
    // Node A's agent corrupts every archive after taking its digest.
    nodes
        .start_agent(NODES[0], "--inject-fault corrupt-archive")
        .unwrap();
    let ip = w.address("web", NET);
    let conns = 50;
    let client = w.start_client(conns, 5.0).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    client.mark().unwrap();

    let (ok, o, e) = w.try_sh(&nodes.migrate_command("web", NODES[1]));
    assert!(!ok, "a tampered archive was accepted: {o}");
    for want in [
        "node node-b refused the archive from node-a (nothing restored)",
        "tampered or corrupted",
        "web was restored on node-a",
    ] {
        assert!(e.contains(want), "{e:?} lacks {want:?}\n{}", nodes.diag());
    }
    assert_eq!(
        nodes.state_on("web", NODES[0]).unwrap().as_deref(),
        Some("running")
    );
    assert_eq!(
        nodes.state_on("web", NODES[1]).unwrap(),
        None,
        "nothing restored on B"
    );
    let (_, left, _) = w.try_sh("ls /var/lib/p4lb-agent-node-a /var/lib/p4lb-agent-node-b");
    assert!(!left.contains(".tar"), "an archive was left: {left}");
    let m = migration_of_ip(&w, &ip);
    assert_eq!(m.state, "done", "{m:?}\n{}", nodes.diag());
    std::thread::sleep(
        Duration::from_secs(2).max(2 * Duration::from_micros(m.stall_us.max(0) as u64)),
    );
    let out = client.finish().unwrap();
    let (survived, _) = assert_clients_kept(&out, conns);
    record(&format!(
        "two nodes, tampered archive: refused on node-b, restored on node-a, {survived}/{conns} \
         connections kept, lock -> unlock {:.1} ms",
        ms(m.stall_us)
    ));
}

/// Node B's Podman fails every restore (a wrapper as its agent's Podman command): the
/// server is restored on node A and its clients keep their connections.
#[test]
fn the_targets_restore_fails_and_the_server_is_restored_on_its_node() {
    let (_s, w) = testbed();
    let nodes = web_on_node_a(&w);
    w.sh(
        "cat > /usr/local/bin/podman-no-restore <<'EOF'\n#!/bin/sh\n\
         for a in \"$@\"; do [ \"$a\" = restore ] && { echo 'injected: no restore here' >&2; \
         exit 125; }; done\nexec podman \"$@\"\nEOF\n\
         chmod 0755 /usr/local/bin/podman-no-restore",
    );
    nodes
        .start_agent_with(NODES[1], "", "/usr/local/bin/podman-no-restore")
        .unwrap();
    let ip = w.address("web", NET);
    let conns = 50;
    let client = w.start_client(conns, 5.0).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    client.mark().unwrap();

    let (ok, o, e) = w.try_sh(&nodes.migrate_command("web", NODES[1]));
    assert!(!ok, "the restore on node-b cannot have worked: {o}");
    for want in [
        "restore of web on node node-b failed",
        "injected: no restore here",
        "web was restored on node-a",
    ] {
        assert!(e.contains(want), "{e:?} lacks {want:?}\n{}", nodes.diag());
    }
    assert_eq!(
        nodes.state_on("web", NODES[0]).unwrap().as_deref(),
        Some("running")
    );
    assert_eq!(
        nodes.state_on("web", NODES[1]).unwrap(),
        None,
        "nothing left on B"
    );
    let m = migration_of_ip(&w, &ip);
    assert_eq!(m.state, "done", "{m:?}\n{}", nodes.diag());
    std::thread::sleep(
        Duration::from_secs(2).max(2 * Duration::from_micros(m.stall_us.max(0) as u64)),
    );
    let out = client.finish().unwrap();
    let (survived, _) = assert_clients_kept(&out, conns);
    record(&format!(
        "two nodes, node-b's restore fails: restored on node-a, {survived}/{conns} connections \
         kept, lock -> unlock {:.1} ms",
        ms(m.stall_us)
    ));
}
