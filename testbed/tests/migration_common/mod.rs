//! Harness of the migration end-to-end tests: a testbed with p4lb installed the
//! way packaging/install.sh does (CRIU action script in /etc/criu/*.conf, the OCI
//! hook in hooks.d), the controller with its embedded software switch, the CNI
//! plugin wiring network namespaces that containers join (`--network ns:PATH`),
//! and a VIP service.
//!
//! The p4lb binaries are used from `target/debug` (mounted read-only inside the
//! testbed); build them first:
//! `cargo build -p p4lb-controller -p cni-p4lb -p p4lb-criu-action -p p4lb-oci-hook`.
//! Missing binaries or testbed make the tests FAIL with what is missing.

#![allow(dead_code)]

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use nix::fcntl::{Flock, FlockArg};
use p4lb_testbed::{images, paths, preflight, testapp, Testbed, TestbedOptions};
use serde_json::Value;

pub const VIP: &str = "10.99.0.1";
pub const PORT: u16 = 7000;
pub const SOCKET: &str = "/run/p4lb/controller.sock";
pub const POD_NETNS: &str = "/run/netns/srv";
pub const CLIENT_NETNS: &str = "/run/netns/cli";

static SERIAL: Mutex<()> = Mutex::new(());

/// Serializes the testbed tests (in-process and across processes: the same lock
/// file as testbed/tests/rootfs.rs).
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

/// Host path of a p4lb binary in target/debug; fails the test when it is missing.
fn bin(name: &str) -> PathBuf {
    let p = paths::target_dir().join("debug").join(name);
    assert!(
        p.is_file(),
        "FAILED: {} is missing; build it first: cargo build -p p4lb-controller -p cni-p4lb \
         -p p4lb-criu-action -p p4lb-oci-hook",
        p.display()
    );
    p
}

fn inside(host: PathBuf) -> String {
    paths::inside_target(&host)
        .unwrap_or_else(|| panic!("{} is outside the target dir", host.display()))
        .display()
        .to_string()
}

/// The testbed with p4lb installed and the controller running.
pub struct World {
    pub tb: Testbed,
    pub controller: String,
    pub ctl: String,
    pub cni: String,
    pub action: String,
    pub hook: String,
    pub testapp: String,
}

impl World {
    pub fn start() -> World {
        let opts = TestbedOptions {
            helper: Some(PathBuf::from(env!("CARGO_BIN_EXE_p4lb-testbed"))),
            ..Default::default()
        };
        let testapp =
            testapp::ensure_static().unwrap_or_else(|e| panic!("FAILED: static testapp: {e}"));
        let w = World {
            controller: inside(bin("p4lb-controller")),
            ctl: inside(bin("p4lbctl")),
            cni: inside(bin("p4lb")),
            action: inside(bin("p4lb-criu-action")),
            hook: inside(bin("p4lb-oci-hook")),
            testapp: inside(testapp),
            tb: Testbed::start(opts)
                .unwrap_or_else(|e| panic!("FAILED: the testbed is not available: {e}")),
        };
        images::build_podman_images(&w.tb).unwrap_or_else(|e| panic!("building images: {e}"));
        w.install();
        w.start_controller();
        w
    }

    /// What packaging/install.sh puts in /etc/criu and hooks.d, pointing at the
    /// binaries in the mounted target dir.
    fn install(&self) {
        let hooks = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../oci-hooks/hooks.d/p4lb.json"
        ))
        .unwrap()
        .replace("/usr/libexec/p4lb/p4lb-oci-hook", &self.hook);
        let criu = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../packaging/criu/p4lb.conf"
        ))
        .unwrap()
        .replace("/usr/libexec/p4lb/p4lb-criu-action", &self.action);
        self.sh(&format!(
            "mkdir -p /run/p4lb /var/lib/p4lb /etc/p4lb /usr/share/containers/oci/hooks.d && \
             chmod 0700 /run/p4lb /var/lib/p4lb /etc/p4lb && \
             for f in runc.conf crun.conf default.conf; do cat > /etc/criu/$f <<'EOF'\n{criu}EOF\n\
             done && cat > /usr/share/containers/oci/hooks.d/p4lb.json <<'EOF'\n{hooks}\nEOF\n"
        ));
        for (name, labels, subnet) in [
            ("pods", r#"{"app":"web"}"#, "10.88.0.0/24"),
            ("clients", "{}", "10.66.0.0/24"),
        ] {
            // addRestoredIp=false: the CRIU action script moves every address the
            // container had (also those of earlier migrations).
            let conf = format!(
                r#"{{"cniVersion":"1.0.0","name":"{name}","type":"p4lb","controllerSocket":"{SOCKET}","addRestoredIp":false,"labels":{labels},"ipam":{{"type":"host-local","subnet":"{subnet}","routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"/var/lib/cni/{name}"}}}}"#
            );
            self.sh(&format!("cat > /tmp/{name}.json <<'EOF'\n{conf}\nEOF\n"));
        }
    }

    pub fn start_controller(&self) {
        self.sh(&format!(
            "rm -f {SOCKET}; setsid {} --state-dir /var/lib/p4lb --socket {SOCKET} \
             </dev/null >>/tmp/controller.log 2>&1 & echo $! > /tmp/controller.pid; \
             for i in $(seq 100); do [ -S {SOCKET} ] && exit 0; sleep 0.1; done; \
             echo controller did not start; cat /tmp/controller.log; exit 1",
            self.controller
        ));
        let mode = self.sh(&format!("stat -c %a {SOCKET}"));
        assert_eq!(mode.trim(), "600", "controller socket mode");
    }

    pub fn stop_controller(&self) {
        self.sh("kill -TERM $(cat /tmp/controller.pid); \
             for i in $(seq 50); do kill -0 $(cat /tmp/controller.pid) 2>/dev/null || exit 0; \
             sleep 0.1; done; kill -KILL $(cat /tmp/controller.pid)");
    }

    /// Runs a shell script inside; panics with its output when it fails.
    pub fn sh(&self, script: &str) -> String {
        self.tb
            .sh(script)
            .unwrap_or_else(|e| panic!("inside the testbed: {e}"))
    }

    /// Runs a shell script inside; returns (success, stdout, stderr).
    pub fn try_sh(&self, script: &str) -> (bool, String, String) {
        let out = self
            .tb
            .output(&["/bin/sh", "-c", script])
            .unwrap_or_else(|e| panic!("inside the testbed: {e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs the CNI plugin like a runtime does; returns its JSON result.
    pub fn cni(&self, cmd: &str, id: &str, netns: &str, conf: &str, args: &str) -> Value {
        let out = self.sh(&format!(
            "CNI_COMMAND={cmd} CNI_CONTAINERID={id} CNI_NETNS={netns} CNI_IFNAME=eth0 \
             CNI_PATH=/opt/cni/bin:/usr/lib/cni CNI_ARGS='{args}' {} < /tmp/{conf}.json",
            self.cni
        ));
        if out.trim().is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("CNI {cmd} output {out:?}: {e}"))
    }

    /// Creates a network namespace at /run/netns/<name> wired by the CNI plugin.
    pub fn pod_netns(&self, name: &str, id: &str, conf: &str, args: &str) -> String {
        self.sh(&format!("ip netns add {name}"));
        let r = self.cni("ADD", id, &format!("/run/netns/{name}"), conf, args);
        r["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .unwrap_or_else(|| panic!("CNI ADD gave no address: {r}"))
            .to_string()
    }

    pub fn ctl_json(&self, args: &str) -> Value {
        let out = self.sh(&format!("{} --socket {SOCKET} --json {args}", self.ctl));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("p4lbctl {args}: {out:?}: {e}"))
    }

    pub fn endpoint(&self, key: &str) -> Value {
        self.ctl_json(&format!("endpoints show {key}"))
    }

    pub fn migrations(&self) -> Vec<Value> {
        let v = self.ctl_json("migrations ls");
        match v {
            Value::Array(a) => a,
            Value::Object(ref o) if o.contains_key("migrations") => {
                o["migrations"].as_array().cloned().unwrap_or_default()
            }
            other => panic!("unexpected migrations listing {other}"),
        }
    }

    pub fn add_service(&self) {
        self.sh(&format!(
            "{} --socket {SOCKET} services add --vip {VIP} --port {PORT} --selector app=web web",
            self.ctl
        ));
    }

    /// IPv4 addresses configured in a namespace (`ip -j addr`).
    pub fn addrs_in(&self, netns_name: &str) -> Vec<String> {
        let out = self.sh(&format!("ip -n {netns_name} -4 -j addr show dev eth0"));
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        let mut a = Vec::new();
        for l in v.as_array().cloned().unwrap_or_default() {
            for i in l["addr_info"].as_array().cloned().unwrap_or_default() {
                if let Some(s) = i["local"].as_str() {
                    a.push(s.to_string());
                }
            }
        }
        a
    }

    /// Starts the server container in the network namespace at POD_NETNS.
    pub fn run_server(&self, name: &str, annotations: &[&str]) {
        let ann: String = annotations
            .iter()
            .map(|a| format!(" --annotation {a}"))
            .collect();
        self.sh(&format!(
            "podman run -d --name {name}{ann} --network ns:{POD_NETNS} {} {} server --listen \
             0.0.0.0:{PORT} --stateful",
            images::TEST_IMAGE,
            images::TESTAPP_IN_IMAGE
        ));
        p4lb_testbed::wait::until(20, "the server container to listen", || {
            self.try_sh(&format!("podman logs {name} 2>&1 | grep -q listening"))
                .0
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Diagnostics for a failing assertion.
    pub fn diag(&self) -> String {
        let (_, o, _) = self.try_sh(&format!(
            "tail -n 40 /tmp/controller.log; {c} --socket {SOCKET} endpoints ls; \
             {c} --socket {SOCKET} migrations ls",
            c = self.ctl
        ));
        o
    }
}
