//! Tests on the real rootfs: they need root, debootstrap (first run) and the
//! Debian registry (first run). Without them they FAIL with what is missing;
//! they never pass silently. They share the rootfs and are serialized (an
//! in-process mutex plus a file lock across processes).

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use p4lb_testbed::spec::RootfsSpec;
use p4lb_testbed::{
    containerd, images, paths, preflight, rootfs, topology, Host, Testbed, TestbedOptions,
};

static SERIAL: Mutex<()> = Mutex::new(());

struct Serial {
    _lock: Flock<File>,
    _guard: MutexGuard<'static, ()>,
}

fn serial() -> Serial {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = preflight::require_root() {
        panic!("FAILED: {e}");
    }
    std::fs::create_dir_all(paths::cache_root()).unwrap();
    let f = File::create(paths::cache_root().join(".tests.lock")).unwrap();
    let lock = Flock::lock(f, FlockArg::LockExclusive).unwrap_or_else(|(_, e)| panic!("lock: {e}"));
    first_rootfs();
    Serial {
        _lock: lock,
        _guard: guard,
    }
}

/// Prints a measured figure and appends it to `<target>/tmp/p4lb-figures.txt`
/// (`make test` shows that file in its summary).
fn record(line: &str) {
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

/// Builds or reuses the rootfs once per test process and records how long
/// that took (whichever test comes first pays for a build).
fn first_rootfs() {
    static FIRST: std::sync::Once = std::sync::Once::new();
    FIRST.call_once(|| {
        let r = rootfs::ensure(&RootfsSpec::default())
            .unwrap_or_else(|e| panic!("FAILED: the rootfs is not available: {e}"));
        record(&format!(
            "rootfs {}: {} in {:.1} s",
            r.hash,
            if r.built { "built" } else { "reused" },
            r.elapsed.as_secs_f64()
        ));
    });
}

fn helper() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_p4lb-testbed"))
}

fn start() -> Testbed {
    let opts = TestbedOptions {
        helper: Some(helper()),
        ..Default::default()
    };
    Testbed::start(opts).unwrap_or_else(|e| panic!("FAILED: the testbed is not available: {e}"))
}

fn start_with_images() -> Testbed {
    let tb = start();
    images::build_podman_images(&tb).unwrap_or_else(|e| panic!("building images: {e}"));
    tb
}

#[test]
fn rootfs_is_built_once_then_reused() {
    let _s = serial();
    let spec = RootfsSpec::default();
    let first = rootfs::ensure(&spec).unwrap_or_else(|e| panic!("FAILED: {e}"));
    let second = rootfs::ensure(&spec).unwrap();
    record(&format!(
        "rootfs {}: reused in {:.1} ms",
        second.hash,
        second.elapsed.as_secs_f64() * 1000.0
    ));
    assert!(!second.built, "the second call must reuse the cache");
    assert_eq!(first.path, second.path);
    assert!(second.elapsed < Duration::from_secs(1));
    assert!(first.path.starts_with(paths::cache_root()));
    assert!(first.path.ends_with(spec.hash()));
    let pkgs = std::fs::read_to_string(first.path.join("etc/p4lb-testbed.packages")).unwrap();
    let criu = pkgs
        .lines()
        .find_map(|l| l.strip_prefix("criu "))
        .expect("criu installed");
    assert!(criu.starts_with("4.2"), "criu {criu} (need 4.2.x)");
    for p in [
        "libcriu2 ",
        "podman ",
        "containerd ",
        "docker-registry ",
        "busybox-static ",
    ] {
        assert!(pkgs.lines().any(|l| l.starts_with(p)), "{p}missing");
    }
}

#[test]
fn criu_check_looks_good() {
    let _s = serial();
    let tb = start();
    let out = tb.output(&["criu", "check"]).unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    record(&format!("criu check: {}", text.trim()));
    assert!(text.contains("Looks good"), "criu check said: {text}");
    // pivot_root, not chroot: the old root is gone and / is the session's overlay.
    let mounts = tb.run(&["cat", "/proc/self/mountinfo"]).unwrap();
    let root = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .unwrap();
    assert!(root.contains("overlay"), "{root}");
    assert!(!mounts.contains("/oldroot"));
    assert!(tb.sh("mountpoint -q /sys/fs/cgroup/unified").is_err());
    let host = tb.run(&["hostname"]).unwrap();
    assert_eq!(host.trim(), "p4lb-testbed");
    // The network namespace is the testbed's own: only loopback.
    let links = tb.run(&["ip", "-o", "link"]).unwrap();
    assert_eq!(links.lines().count(), 1, "{links}");
}

#[test]
fn podman_runs_a_locally_built_image() {
    let _s = serial();
    let tb = start_with_images();
    let out = tb
        .run(&[
            "podman",
            "run",
            "--rm",
            "--network",
            "none",
            images::TEST_IMAGE,
            "sh",
            "-c",
            "echo hello-$((6*7))",
        ])
        .unwrap();
    assert_eq!(out.trim(), "hello-42");
    let out = tb
        .run(&[
            "podman",
            "run",
            "--rm",
            "--network",
            "none",
            images::TEST_IMAGE,
            images::TESTAPP_IN_IMAGE,
            "--version",
        ])
        .unwrap();
    assert!(out.contains("p4lb-testapp"), "{out}");
}

#[test]
fn containerd_starts_and_holds_the_local_images() {
    let _s = serial();
    let tb = start_with_images();
    containerd::start(&tb).unwrap_or_else(|e| panic!("containerd: {e}"));
    images::load_into_containerd(&tb).unwrap_or_else(|e| panic!("loading images: {e}"));
    let v = tb
        .sh(&format!("ctr --address {} version", containerd::SOCKET))
        .unwrap();
    let server = v
        .split("Server:")
        .nth(1)
        .and_then(|s| s.lines().find_map(|l| l.trim().strip_prefix("Version:")))
        .map(str::trim)
        .unwrap_or_default();
    assert!(server.starts_with('2'), "containerd 2 expected: {v}");
    let listed = tb
        .run(&["ctr", "-n", "k8s.io", "images", "ls", "-q"])
        .unwrap();
    for image in [images::TEST_IMAGE, images::PAUSE_IMAGE] {
        assert!(
            listed.lines().any(|l| l.trim() == image),
            "{image} not in containerd: {listed}"
        );
    }
}

#[test]
fn topology_inside_the_testbed_connects_and_tears_down() {
    let _s = serial();
    let tb = start();
    {
        let topo = topology("t1")
            .bridge(true)
            .node("a", "10.66.0.1/24")
            .node("b", "10.66.0.2/24")
            .build(&tb)
            .unwrap();
        let b = topo.node("b").unwrap();
        assert_eq!(b.netns_path(), "/run/netns/t1-b");
        topo.exec("a", &["busybox", "ping", "-c", "1", "-W", "5", &b.ip])
            .unwrap();
        // Addresses exist only inside the node namespaces.
        let outer = tb.run(&["ip", "-o", "addr"]).unwrap();
        assert!(!outer.contains("10.66.0."), "{outer}");
        // Recreating keeps the path, address and MAC.
        topo.recreate_node("b", true).unwrap();
        let mac = topo
            .exec("b", &["cat", "/sys/class/net/eth0/address"])
            .unwrap();
        assert_eq!(mac.trim(), b.mac);
        topo.exec("a", &["busybox", "ping", "-c", "1", "-W", "5", &b.ip])
            .unwrap();
    }
    let left = tb.run(&["ip", "netns", "list"]).unwrap();
    assert!(!left.contains("t1-"), "namespaces left: {left}");
}

#[test]
fn host_topology_is_removed_even_when_a_test_panics() {
    let _s = serial();
    preflight::require_enter().unwrap_or_else(|e| panic!("FAILED: {e}"));
    let prefix = format!("p4lbtb-h{}", std::process::id() % 10000);
    let p = prefix.clone();
    let result = std::panic::catch_unwind(move || {
        let topo = topology(&p)
            .bridge(true)
            .node("x", "10.55.0.1/24")
            .node("y", "10.55.0.2/24")
            .build(&Host)
            .unwrap();
        topo.exec("x", &["ping", "-c", "1", "-W", "5", "10.55.0.2"])
            .unwrap();
        panic!("deliberate panic with the topology alive");
    });
    assert!(result.is_err());
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(!list.contains(&prefix), "left behind: {list}");
}

#[test]
fn cleanup_command_removes_leftover_sessions_and_namespaces() {
    let _s = serial();
    let opts = TestbedOptions {
        helper: Some(helper()),
        prefix: "p4lbtb-leak".into(),
        ..Default::default()
    };
    let tb = Testbed::start(opts).unwrap_or_else(|e| panic!("FAILED: {e}"));
    let init = tb.init_pid();
    tb.sh("sleep 600 >/dev/null 2>&1 &").unwrap();
    let session = paths::sessions_dir().join(tb.name());
    // Simulate a crashed test: nothing tears the session down.
    std::mem::forget(tb);
    let host_ns = "p4lbtb-leak-ns";
    let st = Command::new("ip")
        .args(["netns", "add", host_ns])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(session.exists());

    let out = Command::new(helper())
        .args(["cleanup", "--prefix", "p4lbtb-leak"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 sessions stopped"), "{stdout}");
    assert!(!session.exists());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{init}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{init}")).exists(),
        "init {init} still alive"
    );
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout).contains(host_ns));
}

#[test]
fn non_root_gets_a_clear_error() {
    let _s = serial();
    if preflight::require_tool("setpriv", "util-linux").is_err() {
        panic!("FAILED: setpriv (util-linux) is needed for this test");
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(helper())
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("must run as root"), "{stderr}");
}
