//! A real BMv2 (`simple_switch_grpc`) for controller tests: started in a network
//! namespace of its own (its Thrift server listens on every address), reached over
//! P4Runtime on a Unix socket and over Thrift through a management veth. Found through
//! `P4LB_P4_PREFIX` (a BMv2/p4c installation); without it the tests skip loudly.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use p4lb_controller::config::{Config, SwitchKind};
use p4lb_testutil::{NamedNetns, Net};

/// Prints to the real stderr (not captured by the test harness) so skips are seen.
pub fn loud(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// The BMv2/p4c installation, or None after a loud SKIPPED line.
pub fn prefix(test: &str) -> Option<PathBuf> {
    match std::env::var_os("P4LB_P4_PREFIX") {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(
                p.join("bin/simple_switch_grpc").exists(),
                "P4LB_P4_PREFIX={} has no bin/simple_switch_grpc",
                p.display()
            );
            Some(p)
        }
        None => {
            loud(&format!("SKIPPED (BMv2): P4LB_P4_PREFIX not set [{test}]"));
            None
        }
    }
}

/// A running simple_switch_grpc in its own namespace.
pub struct Bmv2 {
    pub ns: NamedNetns,
    pub prefix: PathBuf,
    pub p4rt_sock: PathBuf,
    pub json: PathBuf,
    /// Thrift address as seen from the test's (host) namespace.
    pub thrift: String,
    child: Child,
    mgmt: String,
}

impl Bmv2 {
    /// Compiles p4lb.p4 (unless `P4LB_BMV2_JSON` names a JSON) and starts the switch
    /// with no program; the controller pushes it. `tag` keeps interface names and
    /// addresses of concurrent tests apart (a number below 250).
    pub fn start(prefix: &Path, dir: &Path, tag: u8) -> Bmv2 {
        let json = match p4lb_p4::bmv2::bmv2_json_path_from_env() {
            Some(p) => p,
            None => {
                let out = dir.join("p4lb.json");
                let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
                let st = Command::new(prefix.join("bin/p4c-bm2-ss"))
                    .arg("-o")
                    .arg(&out)
                    .arg(root.join("crates/p4lb-p4/p4lb.p4"))
                    .env("LD_LIBRARY_PATH", prefix.join("lib"))
                    .status()
                    .expect("running p4c-bm2-ss");
                assert!(st.success(), "p4c-bm2-ss failed to compile p4lb.p4");
                out
            }
        };
        let ns = NamedNetns::unique("p4lbt-bm");
        ns.link_up("lo").expect("lo up");
        // Management link: host side 169.254.<tag>.1, switch side .2 (Thrift).
        let mgmt = format!("p4bm{tag}h");
        let host = Net::host().expect("host namespace");
        let _ = host.delete_link(&mgmt);
        host.add_veth(&mgmt, &format!("p4bm{tag}s"), Some(ns.netns()))
            .expect("management veth");
        host.add_addr(&mgmt, &format!("169.254.{tag}.1/30"))
            .unwrap();
        host.link_up(&mgmt).unwrap();
        ns.add_addr(&format!("p4bm{tag}s"), &format!("169.254.{tag}.2/30"))
            .unwrap();
        ns.link_up(&format!("p4bm{tag}s")).unwrap();
        let p4rt_sock = dir.join("bmv2-p4rt.sock");
        let child = ns
            .command(prefix.join("bin/simple_switch_grpc"))
            .args(["--no-p4", "--device-id", "0", "--thrift-port", "9090"])
            .arg("--")
            .arg("--grpc-server-addr")
            .arg(format!("unix:{}", p4rt_sock.display()))
            .args(["--cpu-port", "255"])
            .env("LD_LIBRARY_PATH", prefix.join("lib"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting simple_switch_grpc");
        let start = Instant::now();
        while !p4rt_sock.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "simple_switch_grpc did not open {}",
                p4rt_sock.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Bmv2 {
            ns,
            prefix: prefix.to_path_buf(),
            p4rt_sock,
            json,
            thrift: format!("169.254.{tag}.2:9090"),
            child,
            mgmt,
        }
    }

    /// A controller configuration for this switch (kind "bmv2", default digest settings).
    pub fn config(&self, dir: &Path) -> Config {
        let mut c = super::config(dir, &self.p4rt_sock);
        c.switch.kind = SwitchKind::Bmv2;
        c.switch.bmv2_json = self.json.clone();
        c.switch.thrift = self.thrift.clone();
        c
    }

    /// A veth pair for a pod: `host` inside the switch's namespace (where BMv2 can
    /// attach it), `peer` in the test's namespace (to send frames from). Both up.
    pub fn pod_link(&self, host: &str, peer: &str) {
        let h = Net::host().expect("host namespace");
        let _ = h.delete_link(peer);
        h.add_veth(peer, host, Some(self.ns.netns()))
            .expect("pod veth");
        h.link_up(peer).unwrap();
        self.ns.link_up(host).unwrap();
    }

    /// Runs BMv2's own runtime CLI with `commands` on stdin; returns its output.
    pub fn cli(&self, commands: &str) -> String {
        use std::io::Write;
        let mut c = self
            .ns
            .command("/usr/bin/python3")
            .arg(self.prefix.join("bin/simple_switch_CLI"))
            .args(["--thrift-port", "9090"])
            .env("LD_LIBRARY_PATH", self.prefix.join("lib"))
            .env("PYTHONPATH", python_path(&self.prefix))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running simple_switch_CLI");
        c.stdin
            .take()
            .unwrap()
            .write_all(commands.as_bytes())
            .unwrap();
        let out = c.wait_with_output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// site-packages directories of the installation (simple_switch_CLI's modules).
fn python_path(prefix: &Path) -> String {
    let mut v = Vec::new();
    for lib in ["lib", "lib64"] {
        if let Ok(rd) = std::fs::read_dir(prefix.join(lib)) {
            for e in rd.flatten() {
                let n = e.file_name();
                if n.to_string_lossy().starts_with("python3") {
                    for sub in ["site-packages", "dist-packages"] {
                        let p = e.path().join(sub);
                        if p.exists() {
                            v.push(p.display().to_string());
                        }
                    }
                }
            }
        }
    }
    v.join(":")
}

impl Drop for Bmv2 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(h) = Net::host() {
            let _ = h.delete_link(&self.mgmt);
        }
    }
}
