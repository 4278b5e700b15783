//! Harness of the end-to-end tests: [`p4lb_e2e::scenario`]'s world (p4lb
//! installed, controller running, CNI plugin, VIP service) with methods that
//! fail the test with the error, and a bare testbed for the containerd tests.
//!
//! The p4lb binaries are used from `target/debug`, the testbed's helper is
//! `target/debug/p4lb-testbed`; build them first:
//! `cargo build -p p4lb-controller -p p4lb-cni -p p4lb-netavark -p p4lb-criu-action
//! -p p4lb-oci-hook -p p4lb-testbed`. Missing binaries or testbed make the tests FAIL with what
//! is missing.

#![allow(dead_code)]

use std::fs::File;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use nix::fcntl::{Flock, FlockArg};
use p4lb_api::api;
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
}
