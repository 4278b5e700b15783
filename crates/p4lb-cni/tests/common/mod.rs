//! Test harness: runs the built `p4lb` binary exactly as a runtime does (CNI_* variables
//! and the configuration on stdin) against real network namespaces, host-local IPAM
//! with a per-test data directory, and a controller on a per-test Unix socket.

#![allow(dead_code)]

pub mod fake_controller;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

pub const PLUGIN: &str = env!("CARGO_BIN_EXE_p4lb");
pub const SYSTEM_CNI_DIR: &str = "/usr/lib/cni";
pub const ROUTER_MAC: &str = "02:00:00:00:00:fe";

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100000,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests create network namespaces and veths: run them as root"
    );
}

/// Debian's reference plugins (containernetworking-plugins) are needed for IPAM,
/// chaining and the benchmark's baseline.
pub fn require_system_plugins(names: &[&str]) {
    for n in names {
        let p = Path::new(SYSTEM_CNI_DIR).join(n);
        assert!(
            p.is_file(),
            "{} missing: apt-get install containernetworking-plugins",
            p.display()
        );
    }
}

/// A network namespace at /run/netns/<name>, deleted on drop (made by p4lb-testutil).
pub struct Netns {
    pub name: String,
    pub path: String,
    ns: Mutex<Option<p4lb_testutil::NamedNetns>>,
}

impl Netns {
    pub fn new() -> Self {
        let ns = p4lb_testutil::NamedNetns::unique("p4t");
        Netns {
            name: ns.name().to_string(),
            path: ns.path().display().to_string(),
            ns: Mutex::new(Some(ns)),
        }
    }

    /// The namespace, for link and address queries; panics once deleted.
    pub fn with<T>(&self, f: impl FnOnce(&p4lb_testutil::NamedNetns) -> T) -> T {
        let guard = self.ns.lock().unwrap_or_else(|p| p.into_inner());
        f(guard.as_ref().expect("the namespace was deleted"))
    }

    /// Runs a command inside the namespace, returns stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        let out = self.with(|ns| ns.exec(args)).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Removes the namespace; it ends with it (and the pod end of a veth with it).
    pub fn delete(&self) {
        let taken = self.ns.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(ns) = taken {
            let _ = ns.delete();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// What a plugin run produced.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?} / stderr {:?}",
                self.stdout, self.stderr
            )
        })
    }
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "plugin failed: {} / {}",
            self.stdout, self.stderr
        );
        self
    }
    /// Asserts a CNI error with `code`, in the spec's shape.
    #[track_caller]
    pub fn err(&self, code: u64) -> Value {
        assert_ne!(
            self.code, 0,
            "expected failure, got success: {}",
            self.stdout
        );
        let v = self.json();
        assert_eq!(v["code"], json!(code), "wrong code: {v} / {}", self.stderr);
        assert!(
            v["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "no msg: {v}"
        );
        assert!(v["cniVersion"].as_str().is_some(), "no cniVersion: {v}");
        v
    }
}

/// Runs any CNI plugin binary.
pub fn run_plugin(bin: &Path, env: &[(&str, String)], stdin: &[u8]) -> Out {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Which controller the test talks to.
pub enum ControllerKind {
    /// p4lb-controller itself, in this process, with its embedded software switch.
    Real {
        stop: tokio::sync::watch::Sender<bool>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
    /// The in-test fake (fake_controller.rs): only where the real controller cannot
    /// be put in the state a test needs.
    Fake {
        state: Arc<Mutex<fake_controller::State>>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
    Absent,
}

/// The real controller's configuration for a world.
fn controller_config(
    state_dir: &Path,
    socket: &Path,
    switch_address: Option<&str>,
) -> p4lb_controller::config::Config {
    let mut cfg = p4lb_controller::config::Config {
        state_dir: state_dir.to_path_buf(),
        ..Default::default()
    };
    cfg.api.socket = socket.to_path_buf();
    cfg.switch.router_mac = ROUTER_MAC.to_string();
    if let Some(a) = switch_address {
        cfg.switch.address = a.to_string();
    }
    cfg
}

/// Starts p4lb-controller on a thread of its own; returns once its API answers.
fn start_real(cfg: p4lb_controller::config::Config, wait_ready: bool) -> ControllerKind {
    let socket = cfg.api.socket.clone();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let ctl = p4lb_controller::Controller::start(cfg)
                .await
                .expect("controller starts");
            let r = p4lb_controller::server::serve(ctl.clone(), rx).await;
            ctl.shutdown().await;
            r.expect("controller API served");
        });
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "p4lb-controller did not become ready"
        );
        if socket.exists() {
            if let Some(s) = status_of(&socket) {
                if !wait_ready || (s.ready && s.switch_connected) {
                    break;
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    ControllerKind::Real {
        stop,
        thread: Some(thread),
    }
}

pub fn client_on(
    rt: &tokio::runtime::Runtime,
    socket: &Path,
) -> Option<p4lb_proto::api::controller_client::ControllerClient<tonic::transport::Channel>> {
    rt.block_on(async move {
        let channel = p4lb_api::connect_unix(socket, std::time::Duration::from_secs(5))
            .await
            .ok()?;
        Some(p4lb_proto::api::controller_client::ControllerClient::new(
            channel,
        ))
    })
}

/// The controller's Status, or None when it does not answer.
pub fn status_of(socket: &Path) -> Option<p4lb_proto::api::StatusResponse> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c = client_on(&rt, socket)?;
    rt.block_on(c.status(p4lb_proto::api::StatusRequest {}))
        .ok()
        .map(|r| r.into_inner())
}

/// One test's world: a network name, a socket, IPAM data, a CNI_PATH.
pub struct World {
    pub dir: tempfile::TempDir,
    pub network: String,
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    pub cni_path: PathBuf,
    pub controller: ControllerKind,
    pub subnet: String,
}

impl World {
    /// A world with a running controller.
    pub fn new() -> Self {
        let mut w = Self::without_controller();
        w.start_controller();
        w
    }

    /// A world whose controller socket nobody listens on.
    pub fn without_controller() -> Self {
        require_root();
        require_system_plugins(&["host-local"]);
        let dir = tempfile::tempdir().unwrap();
        let cni_path = dir.path().join("bin");
        std::fs::create_dir(&cni_path).unwrap();
        for p in ["host-local", "portmap", "tuning", "bridge"] {
            let src = Path::new(SYSTEM_CNI_DIR).join(p);
            if src.is_file() {
                std::os::unix::fs::symlink(&src, cni_path.join(p)).unwrap();
            }
        }
        // An IPAM plugin that always fails with "try again later", and appends each
        // verb it is called with to fail-ipam.calls next to it.
        let fail = cni_path.join("fail-ipam");
        std::fs::write(
            &fail,
            "#!/bin/sh\ncat >/dev/null\necho \"$CNI_COMMAND\" >> \"$(dirname \"$0\")/fail-ipam.calls\"\necho '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"pool busy\",\"details\":\"test IPAM\"}'\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&fail, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let subnet = format!("10.{}.{}.0/24", 100 + (std::process::id() % 50), n % 250);
        World {
            network: unique("p4net"),
            socket: dir.path().join("controller.sock"),
            data_dir: dir.path().join("ipam"),
            cni_path,
            controller: ControllerKind::Absent,
            subnet,
            dir,
        }
    }

    /// Starts the real controller (state kept in this world's directory, so a
    /// restart remembers endpoints).
    pub fn start_controller(&mut self) {
        let cfg = controller_config(&self.dir.path().join("state"), &self.socket, None);
        self.controller = start_real(cfg, true);
    }

    /// Starts the real controller as node `own`, with an uplink of node `node` on
    /// switch port `port` with MAC `mac` (`[[uplinks]]`, no interface to attach): pods
    /// on a `routed` network of that node are routed behind it.
    pub fn start_controller_with_uplink(&mut self, own: &str, node: &str, port: u32, mac: &str) {
        let mut cfg = controller_config(&self.dir.path().join("state"), &self.socket, None);
        cfg.node_name = own.to_string();
        cfg.uplinks = vec![p4lb_controller::config::UplinkConfig {
            node: node.to_string(),
            port,
            mac: mac.to_string(),
            interface: String::new(),
        }];
        self.controller = start_real(cfg, true);
    }

    /// Starts the real controller pointed at a switch that does not exist.
    pub fn start_controller_without_switch(&mut self) {
        let missing = format!("unix:{}", self.dir.path().join("no-switch.sock").display());
        let cfg = controller_config(&self.dir.path().join("state"), &self.socket, Some(&missing));
        self.controller = start_real(cfg, false);
    }

    /// Starts the in-test fake instead.
    pub fn start_fake_controller(&mut self) {
        let (state, thread, stop) = fake_controller::serve(&self.socket, ROUTER_MAC);
        self.controller = ControllerKind::Fake {
            state,
            stop: Some(stop),
            thread: Some(thread),
        };
    }

    pub fn stop_controller(&mut self) {
        match &mut self.controller {
            ControllerKind::Fake { stop, thread, .. } => {
                if let Some(s) = stop.take() {
                    let _ = s.send(());
                }
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
            ControllerKind::Real { stop, thread } => {
                let _ = stop.send(true);
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
            ControllerKind::Absent => {}
        }
        let _ = std::fs::remove_file(&self.socket);
        self.controller = ControllerKind::Absent;
    }

    /// Removes an endpoint behind the plugin's back (over the API).
    pub fn deregister(&self, container_id: &str) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut c = client_on(&rt, &self.socket).expect("controller reachable");
        rt.block_on(
            c.deregister_endpoint(p4lb_proto::api::DeregisterEndpointRequest {
                container_id: container_id.to_string(),
                ifname: "eth0".to_string(),
            }),
        )
        .unwrap();
    }

    /// Which controller serves the socket, for reports.
    pub fn controller_description(&self) -> &'static str {
        match self.controller {
            ControllerKind::Real { .. } => {
                "p4lb-controller (in process) with its embedded software switch"
            }
            ControllerKind::Fake { .. } => "in-test fake of the p4lb controller API",
            ControllerKind::Absent => "none",
        }
    }

    pub fn fake(&self) -> Arc<Mutex<fake_controller::State>> {
        match &self.controller {
            ControllerKind::Fake { state, .. } => state.clone(),
            _ => panic!("not the fake controller"),
        }
    }

    pub fn gateway(&self) -> String {
        self.subnet.replace(".0/24", ".1")
    }

    /// The network configuration for `version`, IPAM host-local.
    pub fn conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": self.network,
            "type": "p4lb",
            "controllerSocket": self.socket,
            "controllerTimeoutMs": 3000,
            "stateDir": self.dir.path().join("cni-state"),
            "switch": "sw0",
            "ipam": {
                "type": "host-local",
                "subnet": self.subnet,
                "gateway": self.gateway(),
                "dataDir": self.data_dir,
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        })
    }

    pub fn env(
        &self,
        command: &str,
        cid: &str,
        netns: &str,
        ifname: &str,
        args: &str,
    ) -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", cid.to_string()),
            ("CNI_NETNS", netns.to_string()),
            ("CNI_IFNAME", ifname.to_string()),
            ("CNI_ARGS", args.to_string()),
            ("CNI_PATH", self.cni_path.display().to_string()),
        ]
    }

    /// Runs p4lb.
    pub fn p4lb(&self, command: &str, cid: &str, netns: &str, args: &str, conf: &Value) -> Out {
        run_plugin(
            Path::new(PLUGIN),
            &self.env(command, cid, netns, "eth0", args),
            conf.to_string().as_bytes(),
        )
    }

    /// Runs a plugin from the system directory with this world's environment.
    pub fn system(&self, plugin: &str, command: &str, cid: &str, netns: &str, conf: &Value) -> Out {
        run_plugin(
            &Path::new(SYSTEM_CNI_DIR).join(plugin),
            &self.env(command, cid, netns, "eth0", ""),
            conf.to_string().as_bytes(),
        )
    }

    /// Host links whose alias names an attachment of this network.
    pub fn host_links(&self) -> Vec<String> {
        let prefix = format!("p4lb:{}:", self.network);
        let mut out = Vec::new();
        for e in std::fs::read_dir("/sys/class/net").unwrap().flatten() {
            let alias = std::fs::read_to_string(e.path().join("ifalias")).unwrap_or_default();
            if alias.trim().starts_with(&prefix) {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out
    }

    /// Deregistrations DEL recorded for later (the plugin's pending file), if any.
    pub fn pending(&self) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join("cni-state")
                .join("pending-del")
                .join(format!("{}.json", self.network)),
        )
        .unwrap_or_default()
    }

    /// Addresses host-local holds for this network.
    pub fn leases(&self) -> Vec<String> {
        let dir = self.data_dir.join(&self.network);
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        rd.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }

    /// Registers, over the API, an endpoint `cid` with address `ip` in `ns` (the address
    /// is put on its `lo`) on a network of its own, labelled `k8s.namespace=<k8s_ns>`
    /// when given: another workload, for restore hints to name.
    pub fn register_elsewhere(&self, cid: &str, ip: &str, k8s_ns: Option<&str>, ns: &Netns) {
        ns.with(|n| {
            n.link_up("lo").unwrap();
            n.add_addr("lo", &format!("{ip}/32")).unwrap()
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut c = client_on(&rt, &self.socket).expect("controller reachable");
        let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
        rt.block_on(
            c.register_endpoint(p4lb_proto::api::RegisterEndpointRequest {
                container_id: cid.to_string(),
                ifname: "eth0".to_string(),
                netns_path: ns.path.clone(),
                ip: ip.to_string(),
                prefix_len: 32,
                mac: format!("02:00:00:00:fe:{last:02x}"),
                labels: k8s_ns
                    .map(|n| ("k8s.namespace".to_string(), n.to_string()))
                    .into_iter()
                    .collect(),
                network: format!("{}-elsewhere", self.network),
                ..Default::default()
            }),
        )
        .unwrap();
    }

    /// LOCK and CHECKPOINTED for the endpoint in `ns`, as the dump side of a
    /// migration sends them; the migration's id.
    pub fn checkpoint(&self, ns: &Netns) -> String {
        use p4lb_proto::api::{Identity, MigrationEventRequest, MigrationPhase};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut c = client_on(&rt, &self.socket).expect("controller reachable");
        let id = Some(Identity {
            pid: 0,
            netns_path: ns.path.clone(),
        });
        rt.block_on(async {
            let m = c
                .migration_event(MigrationEventRequest {
                    phase: MigrationPhase::Lock as i32,
                    identity: id.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            c.migration_event(MigrationEventRequest {
                phase: MigrationPhase::Checkpointed as i32,
                identity: id,
                migration_id: m.id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
            m.id
        })
    }

    /// Endpoints of this network, as the controller reports them over its API.
    pub fn endpoints(&self) -> Vec<p4lb_proto::api::Endpoint> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut c = client_on(&rt, &self.socket).expect("controller reachable");
        rt.block_on(c.list_endpoints(p4lb_proto::api::ListEndpointsRequest {}))
            .unwrap()
            .into_inner()
            .endpoints
            .into_iter()
            .filter(|e| e.network == self.network)
            .collect()
    }

    /// Nothing of this network is left: no veth, no lease, no endpoint.
    #[track_caller]
    pub fn assert_clean(&self) {
        assert_eq!(self.host_links(), Vec::<String>::new(), "leaked host veths");
        assert_eq!(self.leases(), Vec::<String>::new(), "leaked IPAM leases");
        if !matches!(self.controller, ControllerKind::Absent) {
            let eps: Vec<String> = self.endpoints().into_iter().map(|e| e.key).collect();
            assert_eq!(eps, Vec::<String>::new(), "leaked controller endpoints");
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Best-effort cleanup of anything a failed test left on the host.
        if let Ok(host) = p4lb_testutil::Net::host() {
            for l in self.host_links() {
                let _ = host.delete_link(&l);
            }
        }
        self.stop_controller();
    }
}

/// The container interface's IPv4 addresses (CIDR) inside `ns`.
pub fn pod_addrs(ns: &Netns, ifname: &str) -> Vec<String> {
    ns.with(|n| n.ipv4_addrs(ifname)).unwrap_or_default()
}

/// The names of the links inside `ns`.
pub fn pod_links(ns: &Netns) -> Vec<String> {
    ns.with(|n| n.links()).unwrap()
}
