//! Harness of the end-to-end tests: [`p4lb_e2e::scenario`]'s world (p4lb
//! installed, controller running, CNI plugin, VIP service) with methods that
//! fail the test with the error, and a bare testbed for the containerd tests.
//!
//! The p4lb binaries are used from `target/debug`, the testbed's helper is
//! `target/debug/p4lb-testbed`; build them first:
//! `cargo build -p p4lb-controller -p p4lb-cni -p p4lb-netavark -p p4lb-criu-action
//! -p p4lb-oci-hook -p p4lb-agent -p p4lb-testbed`. Missing binaries or testbed make the tests FAIL with what
//! is missing.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use p4lb_api::api;
use p4lb_e2e::cri::{self, Cri};
use p4lb_e2e::judge::judge;
use p4lb_e2e::scenario;
use p4lb_testbed::{images, paths, preflight, session, Testbed, TestbedOptions};
use serde_json::Value;

#[allow(unused_imports)]
pub use p4lb_e2e::scenario::{Moved, SwitchTarget, CLIENT_NETNS, POD_NETNS, PORT, SOCKET, VIP};

static SERIAL: Mutex<()> = Mutex::new(());

/// Serializes the testbed tests (in-process and across processes: the same lock
/// file as crates/p4lb-testbed/tests/rootfs.rs).
pub struct Serial {
    _lock: Flock<File>,
    _guard: MutexGuard<'static, ()>,
}

pub fn serial() -> Serial {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = preflight::require_root() {
        panic!("FAILED: {e}");
    }
    std::fs::create_dir_all(paths::cache_root()).unwrap();
    let f = File::create(paths::cache_root().join(".tests.lock")).unwrap();
    let lock = Flock::lock(f, FlockArg::LockExclusive).unwrap_or_else(|(_, e)| panic!("lock: {e}"));
    Serial {
        _lock: lock,
        _guard: guard,
    }
}

/// The `p4lb-testbed` binary that holds a testbed's namespaces.
pub fn helper() -> PathBuf {
    session::helper_binary().unwrap_or_else(|e| panic!("FAILED: {e}"))
}

/// Prints a measured figure and appends it to `<target>/tmp/p4lb-figures.txt`
/// (`make test` shows that file in its summary).
pub fn record(line: &str) {
    use std::io::Write;
    println!("{line}");
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("p4lb-figures.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// BMv2 as the target when `P4LB_P4_PREFIX` is set; otherwise a `SKIPPED (BMv2)` line
/// on the real stderr (the harness does not capture it; `make test` counts it) and None.
pub fn bmv2_or_skip(test: &str) -> Option<SwitchTarget> {
    use std::io::Write;
    match p4lb_e2e::bmv2::prefix_from_env() {
        Ok(Some(p)) => Some(SwitchTarget::Bmv2(p)),
        Ok(None) => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (BMv2): {} not set [{test}]",
                p4lb_e2e::bmv2::PREFIX_ENV
            );
            None
        }
        Err(e) => panic!("FAILED: {e}"),
    }
}

/// A bare testbed with the local images built.
pub fn start_with_images() -> Testbed {
    let opts = TestbedOptions {
        helper: Some(helper()),
        ..Default::default()
    };
    let tb = Testbed::start(opts)
        .unwrap_or_else(|e| panic!("FAILED: the testbed is not available: {e}"));
    images::build_podman_images(&tb).unwrap_or_else(|e| panic!("building images: {e}"));
    tb
}

/// The scenario's world; every step panics with its error.
pub struct World(pub scenario::World);

impl Deref for World {
    type Target = scenario::World;
    fn deref(&self) -> &scenario::World {
        &self.0
    }
}

impl World {
    pub fn start() -> World {
        World::start_on(SwitchTarget::Embedded)
    }

    /// A world whose controller drives `target`.
    pub fn start_on(target: SwitchTarget) -> World {
        World(scenario::World::start_on(helper(), target).unwrap_or_else(|e| panic!("FAILED: {e}")))
    }

    pub fn start_controller(&self) {
        self.0.start_controller().unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn stop_controller(&self) {
        self.0.stop_controller().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Runs a shell script inside; panics with its output when it fails.
    pub fn sh(&self, script: &str) -> String {
        self.0
            .sh(script)
            .unwrap_or_else(|e| panic!("inside the testbed: {e}"))
    }

    /// Runs a shell script inside; returns (success, stdout, stderr).
    pub fn try_sh(&self, script: &str) -> (bool, String, String) {
        self.0
            .try_sh(script)
            .unwrap_or_else(|e| panic!("inside the testbed: {e}"))
    }

    /// Runs the CNI plugin like a runtime does; returns its JSON result.
    pub fn cni(&self, cmd: &str, id: &str, netns: &str, conf: &str, args: &str) -> Value {
        self.0
            .cni(cmd, id, netns, conf, args)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Creates a network namespace at /run/netns/<name> wired by the CNI plugin.
    pub fn pod_netns(&self, name: &str, id: &str, conf: &str, args: &str) -> String {
        self.0
            .pod_netns(name, id, conf, args)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `p4lbctl --json ARGS` read into `T` (an API type, a list of them, or a `Value`).
    pub fn ctl_json<T: serde::de::DeserializeOwned>(&self, args: &str) -> T {
        self.0.ctl_json(args).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn endpoint(&self, key: &str) -> api::Endpoint {
        self.0.endpoint(key).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn migrations(&self) -> Vec<api::Migration> {
        self.0.migrations().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn add_service(&self) {
        self.0.add_service().unwrap_or_else(|e| panic!("{e}"));
    }

    /// IPv4 addresses configured in a namespace (`ip -j addr`).
    pub fn addrs_in(&self, netns_name: &str) -> Vec<String> {
        self.0
            .addrs_in(netns_name)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the server container in the network namespace at POD_NETNS.
    pub fn run_server(&self, name: &str, annotations: &[&str]) {
        self.0
            .run_server(name, annotations)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Checkpoints `name` to an uncompressed archive; returns (ok, stdout+stderr).
    pub fn checkpoint(&self, name: &str, archive: &str) -> (bool, String) {
        self.0
            .checkpoint(name, archive)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// One migration (see [`scenario::World::migrate`]).
    pub fn migrate(&self, name: &str, cur_id: &str, new_id: &str, i: usize) -> Moved {
        self.0
            .migrate(name, cur_id, new_id, i)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `podman network create -d p4lb` (see [`scenario::World::create_network`]).
    pub fn create_network(&self, name: &str, subnet: &str) {
        self.0
            .create_network(name, subnet)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// `podman run --network NET` of the stateful test server.
    pub fn run_server_on_network(&self, name: &str, net: &str) {
        self.0
            .run_server_on_network(name, net)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The container's address on network `net`.
    pub fn address(&self, name: &str, net: &str) -> String {
        self.0.address(name, net).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The container's network namespace (a name under /run/netns).
    pub fn netns_of(&self, name: &str) -> String {
        self.0.netns_of(name).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn endpoints(&self) -> Vec<api::Endpoint> {
        self.0.endpoints().unwrap_or_else(|e| panic!("{e}"))
    }

    /// One Podman-native migration (see [`scenario::World::migrate_podman`]).
    pub fn migrate_podman(&self, name: &str, net: &str, i: usize, ignore_static_ip: bool) -> Moved {
        self.0
            .migrate_podman(name, net, i, ignore_static_ip)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// One Podman-native migration on the same host without export/import (see
    /// [`scenario::World::migrate_podman_in_place`]).
    pub fn migrate_podman_in_place(
        &self,
        name: &str,
        net: &str,
        i: usize,
        ignore_static_ip: bool,
    ) -> Moved {
        self.0
            .migrate_podman_in_place(name, net, i, ignore_static_ip)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A pod sandbox with a server container from `image` (an image name, or a CRI
/// checkpoint archive: containerd then restores the container from it).
pub fn pod_from(
    w: &World,
    c: &mut Cri,
    name: &str,
    annotations: &[(&str, &str)],
    image: &str,
) -> (String, String, String) {
    let mut cfg = cri::pod_config(name, &format!("uid-{name}"));
    cfg.annotations = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<HashMap<_, _>>();
    let id = c
        .run_pod_sandbox(cfg.clone())
        .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}"));
    let ip = c
        .pod_sandbox_status(&id)
        .unwrap()
        .network
        .map(|n| n.ip)
        .unwrap_or_default();
    let ctr = c
        .create_container(
            &id,
            cri::pb::ContainerConfig {
                metadata: Some(cri::pb::ContainerMetadata {
                    name: "server".into(),
                    attempt: 0,
                }),
                image: Some(cri::pb::ImageSpec {
                    image: image.into(),
                    annotations: Default::default(),
                }),
                command: vec![images::TESTAPP_IN_IMAGE.into()],
                args: vec![
                    "server".into(),
                    "--listen".into(),
                    format!("0.0.0.0:{PORT}"),
                    "--stateful".into(),
                ],
                log_path: "server.log".into(),
                linux: cri::container_linux(),
                ..Default::default()
            },
            cfg,
        )
        .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}"));
    c.start_container(&ctr).unwrap_or_else(|e| {
        // CRIU's own reason is only in its log next to the container's bundle.
        let (_, logs, _) = w.try_sh(
            "for f in $(find /run/containerd /var/lib/containerd -name 'restore.log' 2>/dev/null); do \
             echo \"== $f\"; grep -n -i -E 'error|warn' \"$f\" | tail -n 30; tail -n 30 \"$f\"; done",
        );
        panic!("StartContainer {name}: {e}\n{logs}\n{}", w.diag())
    });
    (id, ctr, ip)
}

pub fn migration_of(w: &World, key: &str) -> api::Migration {
    w.migrations()
        .into_iter()
        .rev()
        .find(|m| m.source_key == key)
        .unwrap_or_else(|| panic!("no migration of {key}\n{}", w.diag()))
}

/// What one CRI migration did to its clients.
pub struct CriMigration {
    pub conns: usize,
    pub survived: u64,
    pub resets: u64,
    pub failed: u64,
    /// Final state of every connection: how many ended which way.
    pub states: std::collections::BTreeMap<String, usize>,
    pub stderr: String,
}

/// CheckpointContainer of a pod annotated for migration → a new pod through the
/// p4lb CNI plugin (new IP) → CreateContainer from the checkpoint; the source is
/// then removed as an orchestrator would. 100 client connections through the VIP.
/// `labels` are pod annotations both pods get (say, `labels.p4lb.io/app: web` when the
/// network does not label its endpoints); `lock` is what the action script was
/// configured with. Starts containerd with the CNI configuration `w` has.
pub fn cri_migration_in(w: &World, labels: &[(&str, &str)], lock: bool) -> CriMigration {
    let socket = cri::start_containerd(&w.tb).unwrap_or_else(|e| panic!("containerd: {e}"));
    images::load_into_containerd(&w.tb).unwrap();
    // containerd restores only images it can pull by name.
    images::start_registry(&w.tb).unwrap_or_else(|e| panic!("registry: {e}"));
    let remote = images::push_to_registry(&w.tb, images::TEST_IMAGE).unwrap();
    let mut c = Cri::connect(&socket).unwrap();
    c.pull_image(&remote).unwrap();
    w.pod_netns("cli", "cli", "clients", "");
    w.add_service();

    let (src_sb, src_ctr, old_ip) = pod_from(
        w,
        &mut c,
        "web-a",
        &[&[("labels.p4lb.io/checkpoint", "migrate")], labels].concat(),
        &remote,
    );
    p4lb_testbed::wait::until(20, "the pod's server to answer", || {
        w.try_sh(&format!(
            "ip netns exec cli {} client --target {VIP}:{PORT} --conns 1 --duration 0.5 --strict",
            w.testapp
        ))
        .0
    })
    .unwrap();
    let conns = 100;
    let client = w.start_client(conns, 5.0).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    client.mark().unwrap();

    c.checkpoint_container(&src_ctr, "/tmp/cri-mig.tar", 60)
        .unwrap_or_else(|e| panic!("CheckpointContainer: {e}\n{}", w.diag()));
    // The target pod: a new sandbox, registered locked as a restore of old_ip.
    let (dst_sb, _dst_ctr, new_ip) = pod_from(
        w,
        &mut c,
        "web-b",
        &[&[("p4lb.io/restore-from", old_ip.as_str())], labels].concat(),
        "/tmp/cri-mig.tar",
    );
    assert_ne!(new_ip, old_ip);
    let m = migration_of(w, &format!("{src_sb}/eth0"));
    assert_eq!(m.state, "done", "{m:?}\n{}", w.diag());
    assert_eq!(m.target_key, format!("{dst_sb}/eth0"), "{m:?}");
    assert_eq!(m.no_lock, !lock, "{m:?}");
    // The source goes away as an orchestrator would remove it.
    c.stop_container(&src_ctr, 5).unwrap();
    c.remove_container(&src_ctr).unwrap();
    c.stop_pod_sandbox(&src_sb).unwrap();
    c.remove_pod_sandbox(&src_sb).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let out = client.finish().unwrap();
    let before = out.interim.first().expect("interim report");
    let after = &out.last;
    let (survived, more) = judge(before, after).unwrap();
    record(&format!(
        "CRI migration on {}, p4lb lock {}: {} -> {} ({old_ip} -> {new_ip}): \
         {survived}/{conns} connections kept, {} reset, {} failed, {more} requests after; \
         switchover {:.1} ms, stall {:.1} ms, longest client stall {} ms",
        w.switch.name(),
        if lock { "on" } else { "OFF" },
        m.source_key,
        m.target_key,
        after.totals.reset,
        after.totals.failed,
        m.switchover_us as f64 / 1000.0,
        m.stall_us as f64 / 1000.0,
        after.totals.longest_stall_ms
    ));
    let mut states = std::collections::BTreeMap::new();
    for c in &after.connections {
        *states.entry(format!("{:?}", c.state)).or_insert(0) += 1;
    }
    CriMigration {
        conns,
        survived,
        resets: after.totals.reset,
        failed: after.totals.failed,
        states,
        stderr: out.stderr,
    }
}

/// Checks one `p4lbctl migrate` move (number `i`) of `web` on network `net` from `here`
/// to `there`: the agent's answer names both nodes and a new address, `web` runs on
/// `there` and is gone from `here`, the controller's record is `done`, and the one
/// endpoint on `net` is at the new address, ready. Returns the move's summary line.
pub fn check_move(
    nodes: &p4lb_e2e::nodes::Nodes,
    m: &p4lb_e2e::nodes::Migrated,
    i: usize,
    (here, there): (p4lb_e2e::nodes::Node, p4lb_e2e::nodes::Node),
    net: &str,
) -> String {
    let ms = |us: i64| us as f64 / 1000.0;
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
        Some("running"),
        "{}",
        nodes.diag()
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
    let eps: Vec<_> = nodes
        .w
        .endpoints()
        .unwrap()
        .into_iter()
        .filter(|e| e.network == net)
        .collect();
    assert_eq!(eps.len(), 1, "one endpoint after the move: {eps:?}");
    assert_eq!(eps[0].ip, r.target_address);
    assert!(!eps[0].locked && eps[0].state == "ready", "{eps:?}");
    let t = r.times.unwrap_or_default();
    format!(
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
    )
}

/// Asserts that every one of `conns` connections was kept through the migrations
/// between `out`'s first interim report and its end: none reset or failed, no byte lost
/// or duplicated, the server's state kept, requests answered after. (survived, more)
pub fn assert_clients_kept(out: &p4lb_e2e::scenario::ClientOutput, conns: usize) -> (u64, u64) {
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

/// The one ready endpoint on network `net` (asserted to be the only one).
pub fn ready_endpoint(nodes: &p4lb_e2e::nodes::Nodes, net: &str) -> api::Endpoint {
    let mut eps: Vec<_> = nodes
        .w
        .endpoints()
        .unwrap()
        .into_iter()
        .filter(|e| e.network == net && e.state == "ready")
        .collect();
    assert_eq!(eps.len(), 1, "{eps:?}\n{}", nodes.diag());
    eps.remove(0)
}

/// The one ready endpoint on network `net` is on node `node` (the node that registered
/// it: through its agent's relay when the nodes are relayed).
pub fn assert_endpoint_on(nodes: &p4lb_e2e::nodes::Nodes, net: &str, node: &str) {
    let e = ready_endpoint(nodes, net);
    assert_eq!(e.node, node, "{e:?}\n{}", nodes.diag());
}

/// With `web` on node A of relayed nodes ([`p4lb_e2e::nodes::Nodes::start_relayed`]):
/// `conns` clients through the VIP while `web` moves A → B → A … `moves` times with
/// `p4lbctl migrate`; each move is checked ([`check_move`]), its record names the source's
/// node and the target node the source's agent gave it, and its endpoint is the target
/// node's. Asserts every connection kept; returns the clients' output, the connections
/// kept, the requests after the moves and the moves' summary.
pub fn moves_through_relays(
    w: &p4lb_e2e::scenario::World,
    nodes: &p4lb_e2e::nodes::Nodes,
    net: &str,
    moves: usize,
    conns: usize,
) -> (p4lb_e2e::scenario::ClientOutput, u64, u64, String) {
    use p4lb_e2e::nodes::NODES;
    assert_endpoint_on(nodes, net, NODES[0].name);
    let client = w.start_client(conns, 5.0).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    client.mark().unwrap();
    let mut summary = String::new();
    let mut longest = 0;
    for i in 0..moves {
        let (here, there) = (NODES[i % 2], NODES[(i + 1) % 2]);
        let m = nodes
            .migrate("web", here, there)
            .unwrap_or_else(|e| panic!("move {i}: {e}"));
        summary.push_str(&check_move(nodes, &m, i, (here, there), net));
        let c = m.controller.clone().unwrap_or_default();
        assert_eq!(
            (c.source_node.as_str(), c.target_node.as_str()),
            (here.name, there.name),
            "the relay of {} named the target node: {c:?}",
            here.name
        );
        longest = longest.max(c.stall_us);
        assert_endpoint_on(nodes, net, there.name);
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    std::thread::sleep(
        std::time::Duration::from_secs(2)
            .max(2 * std::time::Duration::from_micros(longest.max(0) as u64)),
    );
    let out = client.finish().unwrap();
    let (survived, more) = assert_clients_kept(&out, conns);
    (out, survived, more, summary)
}

/// With routed nodes ([`p4lb_e2e::nodes::Nodes::start_routed`]): the one ready endpoint
/// of network `net` is routed behind `node`, on its uplink port, and `node` (not the
/// other one) routes `first_ip` to that endpoint's veth.
pub fn assert_routed_on(
    nodes: &p4lb_e2e::nodes::Nodes,
    net: &str,
    node: p4lb_e2e::nodes::Node,
    first_ip: &str,
) {
    use p4lb_e2e::nodes::{Nodes, NODES};
    let e = &ready_endpoint(nodes, net);
    assert!(e.behind_node, "{e:?}");
    assert_eq!(
        (e.node.as_str(), e.switch_port),
        (node.name, Nodes::uplink_port(node)),
        "{e:?}"
    );
    let routes = |n: p4lb_e2e::nodes::Node| {
        nodes
            .on_host(n, &format!("ip -4 route show {first_ip}/32"))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let here = routes(node);
    assert!(
        here.contains(&format!("dev {}", e.host_ifname)),
        "{} does not route {first_ip} to {}: {here:?}",
        node.name,
        e.host_ifname
    );
    let other = NODES
        .iter()
        .find(|n| n.name != node.name)
        .copied()
        .unwrap_or(node);
    let there = routes(other);
    assert!(
        there.trim().is_empty(),
        "{} still routes {first_ip}: {there:?}",
        other.name
    );
}

/// With `web` (first address `first_ip`) on node A of routed nodes
/// ([`p4lb_e2e::nodes::Nodes::start_routed`]): 20 clients to `first_ip` and `conns`
/// through the VIP while `web` moves `moves` times ([`moves_through_relays`]); before the
/// first move and after the last the endpoint is routed behind the node it is on
/// ([`assert_routed_on`]). Asserts every connection kept; returns the figures in one line
/// and the moves' summary.
pub fn moves_between_routed_nodes(
    w: &p4lb_e2e::scenario::World,
    nodes: &p4lb_e2e::nodes::Nodes,
    net: &str,
    first_ip: &str,
    moves: usize,
    conns: usize,
) -> (String, String) {
    use p4lb_e2e::nodes::NODES;
    assert_routed_on(nodes, net, NODES[0], first_ip);
    let direct_conns = 20;
    let direct = w
        .start_client_to(
            &format!("{first_ip}:{}", p4lb_e2e::scenario::PORT),
            "/tmp/client-direct.pid",
            direct_conns,
            5.0,
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    direct.mark().unwrap();
    let (out, survived, more, summary) = moves_through_relays(w, nodes, net, moves, conns);
    assert_routed_on(nodes, net, NODES[moves % 2], first_ip);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let direct_out = direct.finish().unwrap();
    let (direct_kept, _) = assert_clients_kept(&direct_out, direct_conns);
    let (t, d) = (&out.last.totals, &direct_out.last.totals);
    (
        format!(
            "{survived}/{conns} VIP connections and {direct_kept}/{direct_conns} to the first \
             address kept, {} reset, {} lost bytes, {} duplicated, {more} requests after, \
             longest client stall {} ms (direct {} ms)",
            t.reset + d.reset,
            t.lost_bytes + d.lost_bytes,
            t.duplicated_bytes + d.duplicated_bytes,
            t.longest_stall_ms,
            d.longest_stall_ms,
        ),
        summary,
    )
}
