//! The switch targets packet tests run against: p4lb-switch always; BMv2's
//! simple_switch_grpc too when `P4LB_P4_PREFIX` points to a BMv2/p4c installation.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::netns::Topology;
use super::p4rt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    P4lb,
    Bmv2 { prefix: PathBuf },
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::P4lb => "p4lb-switch",
            Kind::Bmv2 { .. } => "BMv2",
        }
    }
}

/// The targets to run on. Prints a loud SKIPPED line when BMv2 is not available.
pub fn kinds(test: &str) -> Vec<Kind> {
    let mut v = vec![Kind::P4lb];
    match std::env::var_os("P4LB_P4_PREFIX") {
        Some(p) if Path::new(&p).join("bin/simple_switch_grpc").exists() => v.push(Kind::Bmv2 {
            prefix: PathBuf::from(p),
        }),
        Some(p) => {
            panic!(
                "P4LB_P4_PREFIX={} has no bin/simple_switch_grpc",
                Path::new(&p).display()
            )
        }
        None => loud(&format!("SKIPPED (BMv2): P4LB_P4_PREFIX not set [{test}]")),
    }
    let names: Vec<&str> = v.iter().map(|k| k.name()).collect();
    loud(&format!("{test}: running on {}", names.join(", ")));
    v
}

/// Prints to the real stderr (not captured by the test harness) so skips are always seen.
pub fn loud(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

/// The BMv2 JSON of p4lb.p4: $P4LB_BMV2_JSON, build/p4lb.json, crates/p4lb-p4/build/p4lb.json, or
/// compiled with the prefix's p4c-bm2-ss (once per test binary: the fixture runner starts
/// BMv2 for every row).
pub fn bmv2_json(prefix: &Path, dir: &Path) -> Vec<u8> {
    static JSON: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    JSON.get_or_init(|| find_or_compile_bmv2_json(prefix, dir))
        .clone()
}

fn find_or_compile_bmv2_json(prefix: &Path, dir: &Path) -> Vec<u8> {
    let root = repo_root();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = p4lb_p4::bmv2::bmv2_json_path_from_env() {
        candidates.push(p);
    }
    candidates.push(root.join(p4lb_p4::bmv2::DEFAULT_BMV2_JSON));
    candidates.push(root.join("crates/p4lb-p4/build/p4lb.json"));
    for c in candidates {
        if c.exists() {
            return std::fs::read(&c).expect("read BMv2 JSON");
        }
    }
    let out = dir.join("p4lb.json");
    let st = Command::new(prefix.join("bin/p4c-bm2-ss"))
        .arg("-o")
        .arg(&out)
        .arg(root.join("crates/p4lb-p4/p4lb.p4"))
        .env("LD_LIBRARY_PATH", prefix.join("lib"))
        .status()
        .expect("run p4c-bm2-ss");
    assert!(
        st.success(),
        "p4c-bm2-ss failed to compile crates/p4lb-p4/p4lb.p4"
    );
    std::fs::read(out).expect("read compiled JSON")
}

pub struct Target {
    pub kind: Kind,
    pub addr: String,
    pub device_config: Vec<u8>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Target {
    pub fn start(kind: &Kind, topo: &Topology) -> Target {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("p4rt.sock");
        let addr = format!("unix:{}", sock.display());
        let mut device_config = Vec::new();
        let mut cmd;
        match kind {
            Kind::P4lb => {
                cmd = topo.sw_command(env!("CARGO_BIN_EXE_p4lb-switch"));
                cmd.args([
                    "--grpc-addr",
                    &addr,
                    "--device-id",
                    "0",
                    "--log-level",
                    "warn",
                ]);
                for i in topo.iface_args() {
                    cmd.args(["-i", &i]);
                }
                if std::env::var_os("P4LB_SWITCH_RX_RING").is_some() {
                    cmd.arg("--rx-ring");
                }
            }
            Kind::Bmv2 { prefix } => {
                device_config = bmv2_json(prefix, dir.path());
                // As p4lb's CNI plugin does for the switch's end of a pod's veth: with
                // TSO, GSO or GRO on, libpcap sizes its ring slots for 64 KiB frames and
                // its ring holds about 30, fewer than a fixture burst.
                for (_, sw_if, _) in &topo.ports {
                    let st = topo
                        .sw_command("ethtool")
                        .args(["-K", sw_if, "tx", "off", "tso", "off", "gso", "off"])
                        .args(["gro", "off"])
                        .stdout(Stdio::null())
                        .status()
                        .expect("running ethtool (a host prerequisite of make test)");
                    assert!(st.success(), "ethtool -K {sw_if} failed");
                }
                cmd = topo.sw_command(prefix.join("bin/simple_switch_grpc"));
                cmd.args(["--no-p4", "--device-id", "0", "--thrift-port", "9090"]);
                for i in topo.iface_args() {
                    cmd.args(["-i", &i]);
                }
                cmd.args(["--", "--grpc-server-addr", &addr, "--cpu-port", "255"]);
                cmd.env("LD_LIBRARY_PATH", prefix.join("lib"));
            }
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
        let child = cmd.spawn().expect("start switch");
        let start = Instant::now();
        // The socket file appears at bind(), a moment before listen(): wait until a
        // connection is accepted, not only for the file.
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{} did not open {}",
                kind.name(),
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Target {
            kind: kind.clone(),
            addr,
            device_config,
            child,
            _dir: dir,
        }
    }

    /// A primary session with the pipeline set.
    pub async fn primary(&self) -> p4rt::Session {
        let ch = p4rt::channel(&self.addr).await;
        let (mut s, code) = p4rt::Session::open(ch, 0, 10).await;
        assert_eq!(code, 0, "first controller must be primary");
        s.set_pipeline(self.device_config.clone())
            .await
            .expect("set pipeline");
        s
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // SAFETY: signalling our own child process by pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
