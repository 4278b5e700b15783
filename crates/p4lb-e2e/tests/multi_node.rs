//! Two nodes, one switch ([`p4lb_e2e::nodes`]): a stateful server with client
//! connections through the VIP moved between node A and node B with `p4lbctl migrate`
//! (each node's agent checkpoints, streams the archive over mutual TLS with its
//! SHA-256, restores), and the failures docs/multi-node.md lists: a tampered archive
//! refused on the target, the target's restore failing, the target's agent killed
//! mid-transfer (the source restored in place each time), the controller killed and
//! restarted mid-migration (the migration completes), and certificates of another CA or
//! of a node refused. The clients' connections must all be kept, with no byte lost or
//! duplicated and the server's state kept.

mod migration_common;

use std::time::Duration;

use migration_common::*;
use p4lb_e2e::nodes::{Node, Nodes, NODES, PKI};
use p4lb_e2e::scenario::SOCKET;

const NET: &str = "p4pods";
const SUBNET: &str = "10.89.0.0/24";
/// The network of pods routed behind their node (`-o routed=true`).
const ROUTED_NET: &str = "p4routed";
const ROUTED_SUBNET: &str = "10.91.0.0/24";
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

/// [`web_on_node_a`] with relayed nodes ([`Nodes::start_relayed`]): the server is started
/// with node A's Podman, in node A's mount namespace.
fn web_on_relayed_node_a(w: &World) -> Nodes<'_> {
    let nodes = Nodes::start_relayed(w).unwrap_or_else(|e| panic!("FAILED: {e}"));
    w.pod_netns("cli", "cli", "clients", "");
    w.create_network(NET, SUBNET);
    w.add_service();
    w.run_server_on_network_as(&nodes.podman(NODES[0]), "web", NET)
        .unwrap_or_else(|e| panic!("FAILED: {e}\n{}", nodes.diag()));
    nodes
}

/// After a migration that failed past the checkpoint: the error names each of `wants`,
/// web runs on node A again and nothing of it is on node B.
fn assert_restored_on_node_a(nodes: &Nodes<'_>, e: &str, wants: &[&str]) {
    for want in wants {
        assert!(e.contains(want), "{e:?} lacks {want:?}\n{}", nodes.diag());
    }
    assert_eq!(
        nodes.state_on("web", NODES[0]).unwrap().as_deref(),
        Some("running")
    );
    assert_eq!(
        nodes.state_on("web", NODES[1]).unwrap(),
        None,
        "nothing of web on B"
    );
}

/// Lets the clients run on for twice the last stall (at least 2 s), stops them and
/// asserts every connection was kept ([`assert_clients_kept`]).
fn finish_clients(
    client: p4lb_e2e::scenario::Client<'_>,
    conns: usize,
    stall_us: i64,
) -> (p4lb_e2e::scenario::ClientOutput, u64) {
    std::thread::sleep(
        Duration::from_secs(2).max(2 * Duration::from_micros(stall_us.max(0) as u64)),
    );
    let out = client.finish().unwrap();
    let (survived, _) = assert_clients_kept(&out, conns);
    (out, survived)
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
        summary.push_str(&check_move(&nodes, &m, i, (here, there), NET));
        let ep = w
            .endpoints()
            .into_iter()
            .find(|e| e.network == NET)
            .unwrap_or_else(|| panic!("move {i}: no endpoint on {NET}"));
        assert_eq!(
            ep.labels.get("podman.name").map(String::as_str),
            Some("web")
        );
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

/// Each node's plugins and CRIU action script reach the controller through their own
/// agent's relay on the default socket, as on nodes whose controller runs on another
/// host ([`Nodes::start_relayed`]): the endpoints are registered by their node, A's
/// agent names node B as the migration's target at LOCK, and B's restore goes through
/// B's relay. A → B → A → B → A → B with 200 connections, every one kept.
#[test]
fn a_server_moves_between_nodes_whose_plugins_call_their_own_agents() {
    let (_s, w) = testbed();
    let nodes = web_on_relayed_node_a(&w);
    let conns = 200;
    let (out, survived, _, summary) = moves_through_relays(&w, &nodes, NET, MOVES, conns);
    record(&format!(
        "two nodes through their agents' relays, {MOVES} moves with p4lbctl migrate, {conns} \
         connections: {survived} kept, {} reset, {} lost bytes, {} duplicated, longest client \
         stall {} ms\n{summary}",
        out.last.totals.reset,
        out.last.totals.lost_bytes,
        out.last.totals.duplicated_bytes,
        out.last.totals.longest_stall_ms,
    ));
}

/// Nodes as hosts of their own ([`Nodes::start_routed`]): each node has its own network
/// namespace, reaches the controller and the other node's agent over a management link,
/// and has one uplink on a switch port; `web`'s network is `-o routed=true`, so its pod
/// is routed behind its node (a veth on the node, proxy ARP, a /32 route) and the switch
/// sends its traffic to the node's uplink. `web` moves A → B … five times with `p4lbctl
/// migrate` while 200 clients use the VIP and 20 more its first address directly: every
/// connection is kept, the endpoint is on the uplink port and MAC of the node it is on,
/// and the node it is on routes the first address to it while the other does not.
#[test]
fn a_server_routed_behind_its_node_moves_between_hosts_with_every_connection_kept() {
    let (_s, w) = testbed();
    let t0 = std::time::Instant::now();
    let nodes = Nodes::start_routed(&w, ROUTED_SUBNET).unwrap_or_else(|e| panic!("FAILED: {e}"));
    w.pod_netns("cli", "cli", "clients", "");
    w.sh(&format!(
        "podman network create -d p4lb --subnet {ROUTED_SUBNET} -o labels=app=web \
         -o routed=true {ROUTED_NET}"
    ));
    w.add_service();
    w.run_server_on_network_as(&nodes.podman(NODES[0]), "web", ROUTED_NET)
        .unwrap_or_else(|e| panic!("FAILED: {e}\n{}", nodes.diag()));
    let ip = w.address("web", ROUTED_NET);
    let (figures, summary) = moves_between_routed_nodes(&w, &nodes, ROUTED_NET, &ip, MOVES, 200);
    record(&format!(
        "two nodes as hosts (own network namespaces, uplinks on switch ports {} and {}, pods \
         routed behind them), {MOVES} moves with p4lbctl migrate: {figures}; test {:.1} \
         s\n{summary}",
        Nodes::uplink_port(NODES[0]),
        Nodes::uplink_port(NODES[1]),
        t0.elapsed().as_secs_f64()
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
    tampered_archive(false);
}

/// The same with relayed nodes: node A's restore in place goes through node A's relay,
/// and the migration that named node B as its target ends on node A.
#[test]
fn a_tampered_archive_between_relayed_nodes_is_refused_and_the_server_restored_on_its_node() {
    tampered_archive(true);
}

fn tampered_archive(relayed: bool) {
    let (_s, w) = testbed();
    let nodes = if relayed {
        web_on_relayed_node_a(&w)
    } else {
        web_on_node_a(&w)
    };
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
    assert_restored_on_node_a(
        &nodes,
        &e,
        &[
            "node node-b refused the archive from node-a (nothing restored)",
            "tampered or corrupted",
            "web was restored on node-a",
        ],
    );
    let (_, left, _) = w.try_sh("ls /var/lib/p4lb-agent-node-a /var/lib/p4lb-agent-node-b");
    assert!(!left.contains(".tar"), "an archive was left: {left}");
    let m = migration_of_ip(&w, &ip);
    assert_eq!(m.state, "done", "{m:?}\n{}", nodes.diag());
    if relayed {
        assert_eq!(m.target_node, NODES[1].name, "{m:?}");
        assert_endpoint_on(&nodes, NET, NODES[0].name);
    }
    let (_, survived) = finish_clients(client, conns, m.stall_us);
    record(&format!(
        "two nodes{}, tampered archive: refused on node-b, restored on node-a, \
         {survived}/{conns} connections kept, lock -> unlock {:.1} ms",
        if relayed {
            " through their agents' relays"
        } else {
            ""
        },
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
    assert_restored_on_node_a(
        &nodes,
        &e,
        &[
            "restore of web on node node-b failed",
            "injected: no restore here",
            "web was restored on node-a",
        ],
    );
    let m = migration_of_ip(&w, &ip);
    assert_eq!(m.state, "done", "{m:?}\n{}", nodes.diag());
    let (_, survived) = finish_clients(client, conns, m.stall_us);
    record(&format!(
        "two nodes, node-b's restore fails: restored on node-a, {survived}/{conns} connections \
         kept, lock -> unlock {:.1} ms",
        ms(m.stall_us)
    ));
}

/// Random bytes in `web`'s root file system, more than a source can have handed to
/// the connection while the target reads nothing: the HTTP/2 stream window the agents
/// grant, one archive part, and the largest send and receive buffers the kernel gives
/// a TCP socket (`tcp_wmem`, `tcp_rmem`). A target that stops reading after the header
/// has then, whatever the timing, not been sent the whole archive. (8 MiB was not
/// enough: on a kernel whose `tcp_rmem` allows 32 MiB, a stopped target was once sent
/// all of an 8.4 MiB archive.)
fn ballast(w: &World) {
    let max_of = |sysctl: &str| -> u64 {
        let v = w.sh(&format!("cat /proc/sys/net/ipv4/{sysctl}"));
        v.split_whitespace()
            .last()
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("{sysctl}: {v:?}"))
    };
    let in_flight = u64::from(p4lb_agent::client::STREAM_WINDOW)
        + p4lb_agent::archive::CHUNK as u64
        + max_of("tcp_wmem")
        + max_of("tcp_rmem");
    let mib = in_flight.div_ceil(1 << 20) + 4;
    w.sh(&format!(
        "set -e; head -c {mib}M /dev/urandom > /tmp/ballast; podman cp /tmp/ballast web:/ballast; \
         rm /tmp/ballast"
    ));
}

/// The endpoints of the test network and of the clients, by key, with their address,
/// node, state and lock.
fn endpoint_facts(w: &World) -> Vec<(String, String, String, String, bool)> {
    let mut v: Vec<_> = w
        .endpoints()
        .into_iter()
        .map(|e| (e.key, e.ip, e.node, e.state, e.locked))
        .collect();
    v.sort();
    v
}

/// Node B's agent stops itself once the archive's header arrives (the source has
/// checkpointed and is streaming the rest) and is then killed with SIGKILL: the link to
/// the target drops mid-transfer. `p4lbctl migrate` fails saying so, the server is
/// restored on node A with every client connection kept, nothing is left on B, and B's
/// agent, started again, takes the next migration.
#[test]
fn the_link_to_the_target_drops_mid_transfer_and_the_server_is_restored_on_its_node() {
    let (_s, w) = testbed();
    let t0 = std::time::Instant::now();
    let nodes = web_on_node_a(&w);
    ballast(&w);
    nodes
        .start_agent(NODES[1], "--inject-fault pause-receive")
        .unwrap();
    let ip = w.address("web", NET);
    let conns = 50;
    let client = w.start_client(conns, 5.0).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    client.mark().unwrap();

    nodes.migrate_in_background("web", NODES[1]).unwrap();
    nodes.wait_agent_stopped(NODES[1]).unwrap();
    assert_eq!(
        nodes.state_on("web", NODES[0]).unwrap().as_deref(),
        Some("exited"),
        "the source is checkpointed while its archive is in flight"
    );
    nodes.signal_agent(NODES[1], "KILL").unwrap();
    let (ok, o, e) = nodes.migrate_finished().unwrap();
    assert!(!ok, "the migration cannot have worked: {o}");
    println!("p4lbctl migrate: {e}");
    assert_restored_on_node_a(
        &nodes,
        &e,
        &[
            "migration of web to node-b failed: target node node-b: the call broke before the \
             whole archive was sent",
            "web was restored on node-a",
        ],
    );
    let m = migration_of_ip(&w, &ip);
    assert_eq!(m.state, "done", "{m:?}\n{}", nodes.diag());

    // B's agent again: nothing of the broken transfer is left, and it takes the next
    // migration.
    nodes.start_agent(NODES[1], "").unwrap();
    let (_, left, _) = w.try_sh("ls /var/lib/p4lb-agent-node-a /var/lib/p4lb-agent-node-b");
    assert!(!left.contains(".tar"), "an archive was left: {left}");
    std::thread::sleep(Duration::from_secs(2));
    let again = nodes
        .migrate("web", NODES[0], NODES[1])
        .unwrap_or_else(|e| panic!("the migration after the restart: {e}"));
    assert_eq!(
        nodes.state_on("web", NODES[1]).unwrap().as_deref(),
        Some("running")
    );
    let c = again.controller.clone().expect("controller record");
    assert_eq!(c.state, "done", "{c:?}");
    let (_, survived) = finish_clients(client, conns, c.stall_us);
    record(&format!(
        "two nodes, node-b's agent killed mid-transfer ({:.1} MiB archive): restored on \
         node-a, lock -> unlock {:.1} ms; then node-b's agent restarted and web moved there \
         (lock -> unlock {:.1} ms); {survived}/{conns} connections kept; test {:.1} s",
        again.migration.archive_bytes as f64 / (1 << 20) as f64,
        ms(m.stall_us),
        ms(c.stall_us),
        t0.elapsed().as_secs_f64()
    ));
}

/// The controller is killed (SIGKILL) while the archive is in flight, after the
/// source's checkpoint locked the endpoint, and started again with its state before the
/// target goes on: the migration completes on node B, the controller's record of it is
/// done, no endpoint is lost and every client connection is kept.
#[test]
fn the_controller_restarts_mid_migration_and_the_migration_completes() {
    controller_restarts_mid_migration(false);
}

/// The same with relayed nodes: the relays' connections to the controller come back
/// after its restart (node B's restore and node A's clean-up go through them).
#[test]
fn the_controller_restarts_mid_migration_between_relayed_nodes_and_the_migration_completes() {
    controller_restarts_mid_migration(true);
}

fn controller_restarts_mid_migration(relayed: bool) {
    let (_s, w) = testbed();
    let t0 = std::time::Instant::now();
    let nodes = if relayed {
        web_on_relayed_node_a(&w)
    } else {
        web_on_node_a(&w)
    };
    nodes
        .start_agent(NODES[1], "--inject-fault pause-receive")
        .unwrap();
    let ip = w.address("web", NET);
    let conns = 50;
    let client = w.start_client(conns, 5.0).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    client.mark().unwrap();
    let before = endpoint_facts(&w);

    nodes.migrate_in_background("web", NODES[1]).unwrap();
    nodes.wait_agent_stopped(NODES[1]).unwrap();
    let m = migration_of_ip(&w, &ip);
    assert_eq!(m.state, "checkpointed", "{m:?}");
    w.sh("p=$(cat /tmp/controller.pid); kill -KILL $p; \
         while [ -d /proc/$p ]; do sleep 0.05; done");
    let down = std::time::Instant::now();
    w.start_controller();
    let restart_ms = down.elapsed().as_millis();
    let m = migration_of_ip(&w, &ip);
    assert_eq!(
        m.state, "checkpointed",
        "the restarted controller lost it: {m:?}"
    );
    nodes.signal_agent(NODES[1], "CONT").unwrap();
    let (ok, o, e) = nodes.migrate_finished().unwrap();
    assert!(ok, "the migration failed: {o}{e}\n{}", nodes.diag());
    let got: p4lb_e2e::nodes::Migrated = serde_json::from_str(&o).unwrap();
    let c = got.controller.clone().expect("controller record");
    assert_eq!(c.state, "done", "{c:?}");
    assert_eq!(
        nodes.state_on("web", NODES[1]).unwrap().as_deref(),
        Some("running")
    );
    assert_eq!(nodes.state_on("web", NODES[0]).unwrap(), None);
    let after = endpoint_facts(&w);
    assert_eq!(after.len(), before.len(), "{before:?}\n{after:?}");
    let web: Vec<_> = w
        .endpoints()
        .into_iter()
        .filter(|e| e.network == NET)
        .collect();
    assert_eq!(web.len(), 1, "{web:?}");
    assert_eq!(web[0].ip, got.migration.target_address);
    assert!(!web[0].locked && web[0].state == "ready", "{web:?}");
    let (out, survived) = finish_clients(client, conns, c.stall_us);
    if relayed {
        assert_eq!(
            (c.source_node.as_str(), c.target_node.as_str()),
            (NODES[0].name, NODES[1].name),
            "{c:?}"
        );
        assert_eq!(web[0].node, NODES[1].name, "{web:?}");
    }
    record(&format!(
        "two nodes{}, controller killed and restarted ({restart_ms} ms to its socket) while \
         the archive was in flight: migration done on node-b, lock -> unlock {:.1} ms, longest \
         client stall {} ms, {survived}/{conns} connections kept; test {:.1} s",
        if relayed {
            " through their agents' relays"
        } else {
            ""
        },
        ms(c.stall_us),
        out.last.totals.longest_stall_ms,
        t0.elapsed().as_secs_f64()
    ));
}

/// A certificate of another CA is refused by the controller's TCP API and by an agent
/// (the TLS handshake fails, nothing changed); a node's own certificate, used as
/// `p4lbctl`'s identity, cannot call an agent's Migrate nor add a service over the
/// controller's TCP API (PERMISSION_DENIED, nothing changed). The admin's certificate
/// over the same TCP API works (the refusals are about the identity).
#[test]
fn foreign_and_node_certificates_are_refused_by_the_controller_and_the_agents() {
    let (_s, w) = testbed();
    let t0 = std::time::Instant::now();
    let nodes = web_on_node_a(&w);
    let ctl = &w.ctl;
    w.sh(&format!(
        "set -e; {ctl} cert ca --out /etc/p4lb/rogue --cn p4lb-nodes >/dev/null; \
         {ctl} cert issue --ca /etc/p4lb/rogue --name admin --out /etc/p4lb/rogue >/dev/null"
    ));
    let rogue = "/etc/p4lb/rogue/admin";
    let node_a = format!("{PKI}/node-a");
    let admin = format!("{PKI}/admin");
    let add = "services add --vip 10.96.0.99 --port 81 --selector app=web evil";
    let services = |w: &World| w.sh(&format!("{ctl} --socket {SOCKET} --json services ls"));
    let (eps, svcs) = (endpoint_facts(&w), services(&w));
    let unchanged = |what: &str| {
        assert_eq!(endpoint_facts(&w), eps, "{what} changed the endpoints");
        assert_eq!(services(&w), svcs, "{what} changed the services");
        assert_eq!(
            nodes.state_on("web", NODES[0]).unwrap().as_deref(),
            Some("running"),
            "{what}"
        );
        assert_eq!(nodes.state_on("web", NODES[1]).unwrap(), None, "{what}");
    };

    // The admin over TCP: allowed (the control of what follows).
    let (ok, o, e) = w.try_sh(&nodes.ctl_tcp_as(&admin, "--json services ls"));
    assert!(ok, "the admin over TCP: {o}{e}");

    let t = std::time::Instant::now();
    let (ok, o, e) = w.try_sh(&nodes.ctl_tcp_as(rogue, add));
    assert!(!ok, "another CA's certificate added a service: {o}");
    println!("controller, another CA: {e}");
    assert!(
        e.contains("127.0.0.1:50061 refused this client's certificate in the TLS handshake"),
        "no clear TLS error: {e:?}"
    );
    unchanged("another CA's certificate at the controller");

    let (ok, o, e) = w.try_sh(&nodes.migrate_command_as("web", NODES[1], rogue));
    assert!(!ok, "another CA's certificate migrated: {o}");
    println!("agent, another CA: {e}");
    assert!(
        e.contains("127.0.0.1:7441 refused this client's certificate in the TLS handshake"),
        "no clear TLS error: {e:?}"
    );
    unchanged("another CA's certificate at an agent");

    // Found through the agents (Inspect), then named with --from (Migrate itself).
    let cmd = nodes.migrate_command_as("web", NODES[1], &node_a);
    let (ok, o, e) = w.try_sh(&cmd);
    assert!(!ok, "a node's certificate migrated: {o}");
    println!("agent, node certificate: {e}");
    assert!(
        e.contains("\"node-a\" is not allowed to call Inspect on node node-a"),
        "{e:?}"
    );
    let (ok, o, e) = w.try_sh(&format!("{cmd} --from node-a"));
    assert!(!ok, "a node's certificate migrated: {o}");
    println!("agent, node certificate, --from: {e}");
    assert!(
        e.contains("PermissionDenied")
            || e.contains("permission")
            || e.contains("Permission denied"),
        "{e:?}"
    );
    assert!(
        e.contains("\"node-a\" is not allowed to call Migrate on node node-a"),
        "{e:?}"
    );
    unchanged("a node's certificate calling Migrate");

    let (ok, o, e) = w.try_sh(&nodes.ctl_tcp_as(&node_a, add));
    assert!(!ok, "a node's certificate added a service: {o}");
    println!("controller, node certificate: {e}");
    assert!(
        e.to_lowercase().contains("permission"),
        "not a permission error: {e:?}"
    );
    unchanged("a node's certificate adding a service");
    record(&format!(
        "two nodes, security: another CA refused by the controller's TCP API and by node-a's \
         agent, node-a's certificate refused Migrate and AddService; the four refusals took \
         {} ms; test {:.1} s",
        t.elapsed().as_millis(),
        t0.elapsed().as_secs_f64()
    ));
}
