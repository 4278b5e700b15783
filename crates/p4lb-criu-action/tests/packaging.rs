//! packaging/install.sh and uninstall.sh into a scratch root: files, modes,
//! owners, the CRIU configuration block (idempotent, other lines kept).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// A build directory holding a stand-in script for each binary install.sh requires,
/// plus `extra` ones.
fn fake_build(extra: &[&str]) -> tempfile::TempDir {
    let from = tempfile::tempdir().unwrap();
    let required = [
        "p4lb-controller",
        "p4lbctl",
        "p4lb-switch",
        "p4lb-agent",
        "p4lb",
        "p4lb-criu-action",
        "p4lb-oci-hook",
    ];
    for b in required.iter().chain(extra) {
        std::fs::write(from.path().join(b), format!("#!/bin/sh\necho {b}\n")).unwrap();
    }
    from
}

#[test]
fn install_then_uninstall_into_a_scratch_root() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: install.sh must run as root (chown root:root)");
        return;
    }
    let from = fake_build(&[]);
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("etc/criu")).unwrap();
    std::fs::write(r.join("etc/criu/runc.conf"), "log-file /var/log/criu.log\n").unwrap();

    let install = |extra: &[&str]| {
        let out = Command::new("sh")
            .arg(repo().join("packaging/install.sh"))
            .args(["--from", from.path().to_str().unwrap()])
            .args(["--prefix", r.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "install.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    install(&[]);
    install(&[]); // twice: still one p4lb block

    for (p, m) in [
        ("usr/bin/p4lb-controller", 0o755),
        ("usr/bin/p4lbctl", 0o755),
        ("usr/bin/p4lb-switch", 0o755),
        ("usr/bin/p4lb-agent", 0o755),
        ("usr/lib/cni/p4lb", 0o755),
        ("usr/libexec/p4lb/p4lb-criu-action", 0o755),
        ("usr/libexec/p4lb/p4lb-oci-hook", 0o755),
        ("usr/share/containers/oci/hooks.d/p4lb.json", 0o644),
        ("etc/p4lb/criu-action.toml", 0o600),
        ("etc/p4lb/controller.toml", 0o600),
        ("etc/p4lb", 0o700),
        ("var/lib/p4lb", 0o700),
        ("usr/lib/systemd/system/p4lb-controller.service", 0o644),
        ("usr/lib/systemd/system/p4lb-switch.service", 0o644),
        ("usr/lib/systemd/system/p4lb-agent.service", 0o644),
        ("etc/criu/runc.conf", 0o644),
        ("etc/criu/crun.conf", 0o644),
        ("etc/criu/default.conf", 0o644),
    ] {
        let path = r.join(p);
        assert_eq!(mode(&path), m, "{p}");
        assert_eq!(std::fs::metadata(&path).unwrap().uid(), 0, "{p} owner");
    }
    assert_eq!(
        std::fs::read_link(r.join("opt/cni/bin/p4lb")).unwrap(),
        Path::new("/usr/lib/cni/p4lb")
    );
    let runc = std::fs::read_to_string(r.join("etc/criu/runc.conf")).unwrap();
    assert!(runc.starts_with("log-file /var/log/criu.log\n"), "{runc}");
    assert_eq!(runc.matches("# BEGIN p4lb").count(), 1, "{runc}");
    assert!(runc.contains("\ntcp-established\n"));
    // CRIU adds up the action scripts of default.conf and the runtime's file:
    // the script is named once, in default.conf.
    let mut named = 0;
    for f in ["runc.conf", "crun.conf", "default.conf"] {
        let c = std::fs::read_to_string(r.join("etc/criu").join(f)).unwrap();
        assert!(c.contains("\ntcp-established\n"), "{f}: {c}");
        named += c
            .matches("action-script /usr/libexec/p4lb/p4lb-criu-action")
            .count();
        if f == "default.conf" {
            assert!(c.contains("action-script /usr/libexec/p4lb/p4lb-criu-action"));
        }
    }
    assert_eq!(named, 1, "the action script is named {named} times");
    // The shipped action config parses with the action script's own loader.
    let cfg = p4lb_criu_action::config::Config::from_toml(
        &r.join("etc/p4lb/criu-action.toml"),
        &std::fs::read_to_string(r.join("etc/p4lb/criu-action.toml")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg, p4lb_criu_action::config::Config::default());

    let out = Command::new("sh")
        .arg(repo().join("packaging/uninstall.sh"))
        .args(["--prefix", r.to_str().unwrap(), "--purge"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(r.join("etc/criu/runc.conf")).unwrap(),
        "log-file /var/log/criu.log\n"
    );
    assert!(!r.join("etc/criu/crun.conf").exists());
    assert!(!r.join("usr/libexec/p4lb").exists());
    assert!(!r.join("opt/cni/bin/p4lb").is_symlink());
    assert!(!r.join("usr/bin/p4lb-switch").exists());
    assert!(!r
        .join("usr/lib/systemd/system/p4lb-switch.service")
        .exists());
    assert!(!r.join("etc/p4lb").exists());
    // Nothing of p4lb is left: only the directories every system has, empty, and the
    // CRIU file that was there before.
    let left = tree(r);
    let base = [
        "etc",
        "etc/criu",
        "etc/criu/runc.conf",
        "opt",
        "usr",
        "usr/bin",
        "usr/lib",
        "usr/libexec",
        "usr/share",
        "usr/share/doc",
        "usr/lib/systemd",
        "usr/lib/systemd/system",
        "var",
        "var/lib",
    ];
    let extra: Vec<&String> = left
        .iter()
        .filter(|p| !base.contains(&p.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "left behind after uninstall --purge: {extra:?}"
    );
}

/// Every path under `root`, relative, sorted.
fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if p.is_dir() && !p.is_symlink() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[test]
fn the_cni_plugin_is_in_debians_directory_and_linked_from_upstreams() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: install.sh must run as root (chown root:root)");
        return;
    }
    let from = fake_build(&["p4lb-netavark"]);
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let out = Command::new("sh")
        .arg(repo().join("packaging/install.sh"))
        .args(["--from", from.path().to_str().unwrap()])
        .args(["--prefix", r.to_str().unwrap(), "--no-systemd"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&r.join("usr/lib/cni/p4lb")), 0o755);
    assert_eq!(
        std::fs::read_link(r.join("opt/cni/bin/p4lb")).unwrap(),
        Path::new("/usr/lib/cni/p4lb")
    );
    // The netavark plugin is installed when it was built.
    assert_eq!(mode(&r.join("usr/libexec/netavark/p4lb")), 0o755);
    assert!(!r
        .join("usr/lib/systemd/system/p4lb-controller.service")
        .exists());
    // A link somebody else made is not ours to remove.
    std::fs::remove_file(r.join("opt/cni/bin/p4lb")).unwrap();
    std::os::unix::fs::symlink("/somewhere/else", r.join("opt/cni/bin/p4lb")).unwrap();
    let out = Command::new("sh")
        .arg(repo().join("packaging/uninstall.sh"))
        .args(["--prefix", r.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(r.join("opt/cni/bin/p4lb").is_symlink());
    assert!(!r.join("usr/libexec/netavark").exists());
    assert!(!r.join("usr/lib/cni").exists());
    // Without --purge the configuration stays.
    assert!(r.join("etc/p4lb/controller.toml").exists());
}

/// `key=value` lines of one section of a systemd unit file.
fn unit_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == format!("[{section}]");
        } else if inside && !line.starts_with('#') {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    out
}

#[test]
fn the_controller_and_agent_units_keep_the_runtime_directory_across_restarts() {
    // The action script keeps its run state under /run/p4lb (criu-action/), and the
    // socket it calls is there: the controller's, or on a node without one the agent's
    // relay.
    assert!(p4lb_criu_action::config::DEFAULT_STATE_DIR.starts_with("/run/p4lb/"));
    for name in ["p4lb-controller.service", "p4lb-agent.service"] {
        let unit = std::fs::read_to_string(repo().join("packaging/systemd").join(name)).unwrap();
        let service = unit_section(&unit, "Service");
        let get = |k: &str| {
            service
                .iter()
                .filter(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("RuntimeDirectory"), vec!["p4lb"], "{name}");
        assert_eq!(get("RuntimeDirectoryMode"), vec!["0700"], "{name}");
        assert_eq!(
            get("RuntimeDirectoryPreserve"),
            vec!["yes"],
            "a restart of {name} would delete /run/p4lb: {unit}"
        );
        assert_eq!(get("UMask"), vec!["0077"], "{name}");
    }
}

/// Values of `key` in one section of a unit (space-separated lists split).
fn unit_values(text: &str, section: &str, key: &str) -> Vec<String> {
    unit_section(text, section)
        .into_iter()
        .filter(|(k, _)| k == key)
        .flat_map(|(_, v)| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

#[test]
fn the_switch_service_outlives_the_controller() {
    let read = |name: &str| {
        std::fs::read_to_string(repo().join("packaging/systemd").join(name))
            .unwrap_or_else(|e| panic!("packaging/systemd/{name}: {e}"))
    };
    let switch = read("p4lb-switch.service");
    let controller = read("p4lb-controller.service");
    // The switch starts first, comes back whatever ended it, and keeps its socket's
    // directory across its restarts.
    assert_eq!(
        unit_values(&switch, "Service", "ExecStart"),
        vec!["/usr/bin/p4lb-switch"]
    );
    assert!(unit_values(&switch, "Unit", "Before").contains(&"p4lb-controller.service".into()));
    assert_eq!(unit_values(&switch, "Service", "Restart"), vec!["always"]);
    assert_eq!(
        unit_values(&switch, "Service", "RuntimeDirectory"),
        vec!["p4lb-switch"]
    );
    assert_eq!(
        unit_values(&switch, "Service", "RuntimeDirectoryPreserve"),
        vec!["yes"]
    );
    // The controller pulls the switch in and starts after it, but stopping or restarting
    // the controller never stops the switch, nor the other way round.
    assert!(unit_values(&controller, "Unit", "Wants").contains(&"p4lb-switch.service".into()));
    assert!(unit_values(&controller, "Unit", "After").contains(&"p4lb-switch.service".into()));
    for key in ["Requires", "BindsTo", "PartOf", "Requisite"] {
        assert!(
            !unit_values(&controller, "Unit", key).contains(&"p4lb-switch.service".into()),
            "p4lb-controller.service {key}= p4lb-switch.service: a controller restart would stop the switch"
        );
        assert!(
            unit_values(&switch, "Unit", key).is_empty(),
            "p4lb-switch.service has {key}=: it must not depend on another unit's life"
        );
    }
    // The shipped controller configuration points at the switch's default socket.
    let toml = std::fs::read_to_string(repo().join("packaging/p4lb/controller.toml")).unwrap();
    assert!(
        toml.lines()
            .any(|l| l.trim() == "address = \"unix:/run/p4lb-switch/switch.sock\""),
        "{toml}"
    );
}

#[test]
fn install_refuses_missing_binaries() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: install.sh must run as root");
        return;
    }
    let from = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .arg(repo().join("packaging/install.sh"))
        .args(["--from", from.path().to_str().unwrap()])
        .args(["--prefix", root.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is missing"));
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}
