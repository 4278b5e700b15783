//! Benchmark, not a test of speed (`#[ignore]`d; it asserts only that every connection
//! is kept): a stateful server that has written to 256 MiB of memory
//! (`p4lb-testapp server --touch-mib 256`), with client connections through the VIP,
//! moved in one run by Podman's export/import on node A (same node) and by
//! `p4lbctl migrate` between node A and node B (across nodes). Every move gets its own
//! client, so each client-observed stall belongs to one move. Prints each phase's time,
//! the controller's lock -> unlock and switchover, the client-observed stall, and the
//! ratios across nodes / same node of this run.
//!
//! Run it with:
//! `cargo test -p p4lb-e2e --test multi_node_bench -- --ignored --nocapture`
//! (after the builds that `tests/migration_common/mod.rs` names).

mod migration_common;

use std::time::Duration;

use migration_common::*;
use p4lb_e2e::judge::judge;
use p4lb_e2e::nodes::{Node, Nodes, NODES};
use p4lb_e2e::scenario::ClientOutput;
use p4lb_testbed::{images, wait};

const NET: &str = "p4pods";
const SUBNET: &str = "10.89.0.0/24";
/// Memory the server has written to before the moves.
const TOUCH_MIB: usize = 256;
/// Client connections during each move.
const CONNS: usize = 200;
/// Rounds; each is one same-node move on node A, then A -> B and B -> A.
const ROUNDS: usize = 2;

fn ms(us: i64) -> f64 {
    us as f64 / 1000.0
}

/// One move's figures (milliseconds).
#[derive(Debug, Default, Clone)]
struct Figures {
    what: String,
    checkpoint: f64,
    transfer: Option<f64>,
    restore: f64,
    archive_mib: Option<f64>,
    switchover: f64,
    lock_unlock: f64,
    client_stall: f64,
}

impl Figures {
    fn line(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        format!(
            "  {:<22} checkpoint {:>8.1}  transfer {:>8} ({:>5} MiB)  restore {:>8.1}  \
             switchover {:>6.1}  lock -> unlock {:>8.1}  client stall {:>7.1}",
            self.what,
            self.checkpoint,
            opt(self.transfer),
            opt(self.archive_mib),
            self.restore,
            self.switchover,
            self.lock_unlock,
            self.client_stall
        )
    }
}

fn mean(f: &[Figures], v: impl Fn(&Figures) -> f64) -> f64 {
    f.iter().map(v).sum::<f64>() / f.len().max(1) as f64
}

/// `web` on network NET with TOUCH_MIB MiB of written memory; returns once it listens.
fn run_big_server(w: &World) {
    w.sh(&format!(
        "podman run -d --name web --network {NET} {} {} server --listen 0.0.0.0:{PORT} \
         --stateful --touch-mib {TOUCH_MIB}",
        images::TEST_IMAGE,
        images::TESTAPP_IN_IMAGE
    ));
    wait::until(60, "the 256 MiB server to listen", || {
        w.try_sh("podman logs web 2>&1 | grep -q 'MiB touched'").0
    })
    .unwrap_or_else(|e| panic!("FAILED: {e}\n{}", w.sh("podman logs web 2>&1 | tail")));
}

/// Every connection of `out` kept, nothing lost, duplicated or reset, the server's
/// state kept; the longest stall a client saw, in ms.
fn kept(out: &ClientOutput, what: &str) -> f64 {
    let before = out.interim.first().expect("interim report");
    let (survived, more) = judge(before, &out.last).unwrap();
    let t = &out.last.totals;
    assert_eq!(t.connections, CONNS as u64, "{what}");
    assert_eq!(t.reset, 0, "{what}: resets: {}", out.stderr);
    assert_eq!(t.failed, 0, "{what}: {}", out.stderr);
    assert_eq!((t.lost_bytes, t.duplicated_bytes), (0, 0), "{what}");
    assert_eq!(t.state_regressions, 0, "{what}: the server lost its state");
    assert_eq!(
        t.server_count_mismatches, 0,
        "{what}: the server lost its state"
    );
    assert_eq!(survived, CONNS as u64, "{what}: {}", out.stderr);
    assert!(more > 0, "{what}: no request after the move");
    t.longest_stall_ms as f64
}

/// Runs `mv` with its own client of CONNS connections; `mv` returns the move's figures
/// and its lock -> unlock (to wait for the clients' backed-off retransmissions).
fn with_client(w: &World, what: &str, mv: impl FnOnce() -> Figures) -> Figures {
    let client = w.start_client(CONNS, 5.0).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    client.mark().unwrap();
    let mut f = mv();
    let stall = Duration::from_micros((f.lock_unlock * 1000.0).max(0.0) as u64);
    std::thread::sleep(Duration::from_secs(2).max(2 * stall));
    let out = client.finish().unwrap();
    f.client_stall = kept(&out, what);
    f.what = what.to_string();
    println!("{}", f.line());
    f
}

/// The newest migration record of source address `ip`.
fn migration_of_ip(w: &World, ip: &str) -> p4lb_api::api::Migration {
    w.migrations()
        .into_iter()
        .rev()
        .find(|m| m.source_ip == ip)
        .unwrap_or_else(|| panic!("no migration of {ip}\n{}", w.diag()))
}

fn same_node(w: &World, i: usize) -> Figures {
    let m = w.migrate_podman("web", NET, i, true);
    let rec = migration_of_ip(w, &m.old_ip);
    assert_eq!(rec.state, "done", "{rec:?}");
    Figures {
        checkpoint: m.checkpoint_ms as f64,
        restore: m.restore_ms as f64,
        switchover: ms(rec.switchover_us),
        lock_unlock: ms(rec.stall_us),
        ..Figures::default()
    }
}

fn cross_node(nodes: &Nodes<'_>, from: Node, to: Node) -> Figures {
    let m = nodes
        .migrate("web", from, to)
        .unwrap_or_else(|e| panic!("{} -> {}: {e}", from.name, to.name));
    let r = &m.migration;
    let c = m
        .controller
        .clone()
        .unwrap_or_else(|| panic!("no controller record\n{}", nodes.diag()));
    assert_eq!(c.state, "done", "{c:?}\n{}", nodes.diag());
    let t = r.times.unwrap_or_default();
    Figures {
        checkpoint: ms(t.checkpoint_us),
        transfer: Some(ms(t.transfer_us)),
        restore: ms(t.restore_us),
        archive_mib: Some(r.archive_bytes as f64 / (1 << 20) as f64),
        switchover: ms(c.switchover_us),
        lock_unlock: ms(c.stall_us),
        ..Figures::default()
    }
}

#[test]
#[ignore = "benchmark: cargo test -p p4lb-e2e --test multi_node_bench -- --ignored --nocapture"]
fn bench_a_256_mib_server_same_node_and_across_nodes() {
    let _s = serial();
    let w = World::start();
    let nodes = Nodes::start(&w).unwrap_or_else(|e| panic!("FAILED: {e}"));
    w.pod_netns("cli", "cli", "clients", "");
    w.create_network(NET, SUBNET);
    w.add_service();
    run_big_server(&w);

    let (a, b) = (NODES[0], NODES[1]);
    let mut same = Vec::new();
    let mut cross = Vec::new();
    println!("{TOUCH_MIB} MiB server, {CONNS} connections per move; times in ms");
    for i in 0..ROUNDS {
        same.push(with_client(&w, "same node (node-a)", || same_node(&w, i)));
        cross.push(with_client(&w, "node-a -> node-b", || {
            cross_node(&nodes, a, b)
        }));
        cross.push(with_client(&w, "node-b -> node-a", || {
            cross_node(&nodes, b, a)
        }));
    }
    let lines: Vec<String> = same.iter().chain(&cross).map(Figures::line).collect();
    let (s_lu, c_lu) = (
        mean(&same, |f| f.lock_unlock),
        mean(&cross, |f| f.lock_unlock),
    );
    let (s_cs, c_cs) = (
        mean(&same, |f| f.client_stall),
        mean(&cross, |f| f.client_stall),
    );
    record(&format!(
        "benchmark, {TOUCH_MIB} MiB server, {CONNS} connections per move, every connection \
         kept (ms):\n{}\n  mean lock -> unlock: same node {s_lu:.1}, across nodes {c_lu:.1}, \
         across / same {:.2}\n  mean client stall: same node {s_cs:.1}, across nodes \
         {c_cs:.1}, across / same {:.2}",
        lines.join("\n"),
        c_lu / s_lu.max(f64::MIN_POSITIVE),
        c_cs / s_cs.max(f64::MIN_POSITIVE)
    ));
}
