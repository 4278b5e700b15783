//! BMv2 (`simple_switch_grpc`) as the switch of a scenario.
//!
//! BMv2 and p4c are found through `P4LB_P4_PREFIX` (an install prefix with
//! `bin/simple_switch_grpc` and `bin/p4c-bm2-ss`); without it the BMv2 variants of
//! the scenarios say `SKIPPED (BMv2)` and do not run. A BMv2 built on the host is
//! linked against the host's libraries, which the testbed's rootfs (another Debian
//! release) does not have, so the switch runs as a host process that enters only
//! the testbed's **network namespace** (`setns` through `nsenter --net`): it sees
//! the pods' host-side interfaces there, which the controller inside the testbed
//! attaches over Thrift (`127.0.0.1:9090` in that namespace, which nothing outside
//! the testbed reaches), and it serves P4Runtime on a Unix socket created in the
//! testbed's `/run/p4lb` (reached from the host through `/proc/<init>/root`).
//!
//! The BMv2 JSON is compiled from `crates/p4lb-p4/p4lb.p4` by p4c into the target
//! directory, which the testbed mounts (`P4LB_BMV2_JSON` names a prebuilt one).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use p4lb_testbed::paths;
use p4lb_testbed::session::Testbed;

use crate::error::{Context, Error, Result};

/// The environment variable naming the BMv2/p4c install prefix.
pub const PREFIX_ENV: &str = "P4LB_P4_PREFIX";
/// The P4Runtime socket inside the testbed.
pub const P4RT_SOCKET: &str = "/run/p4lb/bmv2.sock";
/// BMv2's Thrift runtime address inside the testbed's network namespace.
pub const THRIFT: &str = "127.0.0.1:9090";

/// The BMv2/p4c install prefix from `P4LB_P4_PREFIX`; `None` when unset. A set
/// prefix without `bin/simple_switch_grpc` is an error, not a skip.
pub fn prefix_from_env() -> Result<Option<PathBuf>> {
    let Some(p) = std::env::var_os(PREFIX_ENV).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let p = PathBuf::from(p);
    if !p.join("bin/simple_switch_grpc").is_file() {
        return Err(Error::Missing(format!(
            "{PREFIX_ENV}={} has no bin/simple_switch_grpc",
            p.display()
        )));
    }
    Ok(Some(p))
}

/// Compiles p4lb.p4 to BMv2 JSON under the target directory (or takes
/// `P4LB_BMV2_JSON`); returns its host path.
pub fn compile_json(prefix: &Path) -> Result<PathBuf> {
    if let Some(p) = p4lb_p4::bmv2::bmv2_json_path_from_env() {
        let dst = paths::target_dir().join("tmp").join("p4lb-e2e-bmv2.json");
        std::fs::create_dir_all(dst.parent().unwrap_or(Path::new("/")))
            .ctx(|| "creating the target's tmp directory".into())?;
        std::fs::copy(&p, &dst).ctx(|| format!("copying {}", p.display()))?;
        return Ok(dst);
    }
    let out = paths::target_dir().join("tmp").join("p4lb-e2e-bmv2.json");
    std::fs::create_dir_all(out.parent().unwrap_or(Path::new("/")))
        .ctx(|| "creating the target's tmp directory".into())?;
    let program = paths::repo_root().join("crates/p4lb-p4/p4lb.p4");
    let st = Command::new(prefix.join("bin/p4c-bm2-ss"))
        .arg("-o")
        .arg(&out)
        .arg(&program)
        .env("LD_LIBRARY_PATH", prefix.join("lib"))
        .status()
        .ctx(|| format!("running {}/bin/p4c-bm2-ss", prefix.display()))?;
    if !st.success() {
        return Err(Error::Scenario(format!(
            "p4c-bm2-ss could not compile {}",
            program.display()
        )));
    }
    Ok(out)
}

/// `P4LB_BMV2_LOG_LEVEL` (trace, debug, info, warn, error, off): BMv2's own per-packet
/// log into `/tmp/bmv2.log` in the testbed, for troubleshooting; unset, BMv2 logs
/// nothing.
pub const LOG_LEVEL_ENV: &str = "P4LB_BMV2_LOG_LEVEL";

fn log_args() -> Vec<String> {
    match std::env::var(LOG_LEVEL_ENV) {
        Ok(l) if !l.is_empty() => vec!["--log-console".into(), "-L".into(), l],
        _ => Vec::new(),
    }
}

/// A running `simple_switch_grpc` in a testbed's network namespace; killed when
/// dropped.
pub struct Bmv2 {
    child: Child,
    /// Host path of the compiled program.
    pub json: PathBuf,
}

impl Bmv2 {
    /// Starts the switch with no program and no port (the controller pushes the
    /// pipeline and attaches the pods' interfaces). The testbed's `/run/p4lb` must
    /// exist. BMv2's log goes to `/tmp/bmv2.log` inside the testbed.
    pub fn start(tb: &Testbed, prefix: &Path) -> Result<Bmv2> {
        let json = compile_json(prefix)?;
        let sock = tb.host_path(P4RT_SOCKET);
        let _ = std::fs::remove_file(&sock);
        let log = std::fs::File::create(tb.host_path("/tmp/bmv2.log"))
            .ctx(|| "creating /tmp/bmv2.log in the testbed".into())?;
        let log2 = log
            .try_clone()
            .ctx(|| "duplicating the log descriptor".into())?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/proc/{}/ns/net", tb.init_pid()))
            .arg("--")
            .arg(prefix.join("bin/simple_switch_grpc"))
            .args(["--no-p4", "--device-id", "0", "--thrift-port", "9090"])
            .args(log_args())
            .arg("--")
            .arg("--grpc-server-addr")
            .arg(format!("unix:{}", sock.display()))
            .args(["--cpu-port", "255"])
            .env("LD_LIBRARY_PATH", prefix.join("lib"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .ctx(|| "starting simple_switch_grpc in the testbed's network namespace".into())?;
        let mut b = Bmv2 { child, json };
        let start = Instant::now();
        while !sock.exists() {
            if let Ok(Some(st)) = b.child.try_wait() {
                return Err(Error::Scenario(format!(
                    "simple_switch_grpc exited ({st}); see /tmp/bmv2.log in the testbed"
                )));
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(Error::Scenario(format!(
                    "simple_switch_grpc did not open {P4RT_SOCKET} within 30 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The socket file appears before the server accepts; Thrift likewise.
        std::thread::sleep(Duration::from_millis(500));
        if let Ok(Some(st)) = b.child.try_wait() {
            return Err(Error::Scenario(format!(
                "simple_switch_grpc exited ({st}); see /tmp/bmv2.log in the testbed"
            )));
        }
        Ok(b)
    }
}

impl Drop for Bmv2 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
