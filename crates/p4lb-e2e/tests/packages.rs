//! The packages `make packages` builds (`<target>/packages`):
//!
//! - the `.deb`, in the testbed's fresh Debian trixie rootfs: installed with apt over an
//!   older version (configuration and controller state kept), every file of
//!   packaging/files.list in place with its mode, the `/opt/cni/bin` link, the CRIU block,
//!   the installed commands run; `apt remove` keeps /etc/p4lb and the state, `apt purge`
//!   leaves nothing (the rootfs' tree is compared with the one before the install);
//! - the `.rpm`: the same files with the same modes as the list, and scripts that run the
//!   installed p4lb-setup;
//! - on a node where p4lb comes from the `.deb` alone (the switch and the controller
//!   started from /usr/bin with the installed configuration, the packaged example
//!   conflist, the CRIU block of `postinst`, the installed OCI hook): a containerd CRI
//!   migration to a new pod with a new address (100 connections) and two Podman
//!   migrations to new addresses (50 connections), 0 reset, all kept.
//!
//! Without packages the tests say SKIPPED (build them with `make packages`).

mod migration_common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use migration_common::*;
use p4lb_e2e::files_list::{self, Entry};
use p4lb_e2e::scenario;
use p4lb_testbed::{paths, wait, Testbed, TestbedOptions};

/// The newest package in `<target>/packages` whose name starts and ends so.
fn package(prefix: &str, suffix: &str) -> Option<PathBuf> {
    let dir = paths::target_dir().join("packages");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(suffix)
        })
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

fn host(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The same package with an older version number, built next to the test's files.
fn older_version_of(deb: &Path) -> PathBuf {
    let work = paths::target_dir().join("tmp/packages-test");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let tree = work.join("tree");
    host(
        "dpkg-deb",
        &["-R", deb.to_str().unwrap(), tree.to_str().unwrap()],
    );
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("Version: ") {
                "Version: 0.0.1-1".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&control, text + "\n").unwrap();
    let older = work.join("p4lb_0.0.1-1_amd64.deb");
    host(
        "dpkg-deb",
        &[
            "--root-owner-group",
            "-Zgzip",
            "-z1",
            "-b",
            tree.to_str().unwrap(),
            older.to_str().unwrap(),
        ],
    );
    std::fs::remove_dir_all(&tree).unwrap();
    older
}

fn inside(p: &Path) -> String {
    paths::inside_target(p)
        .unwrap_or_else(|| panic!("{} is not under the target dir", p.display()))
        .display()
        .to_string()
}

fn sh(tb: &Testbed, script: &str) -> String {
    tb.sh(script)
        .unwrap_or_else(|e| panic!("in the testbed: {script}\n{e}"))
}

fn tree(tb: &Testbed) -> BTreeSet<String> {
    files_list::rootfs_tree(tb).unwrap_or_else(|e| panic!("listing the rootfs: {e}"))
}

/// `name: content` of every CRIU configuration file.
fn criu_files(tb: &Testbed) -> String {
    sh(
        tb,
        "for f in /etc/criu/*.conf; do [ -e \"$f\" ] && { echo \"== $f\"; cat \"$f\"; }; done; true",
    )
}

const APT: &str = "DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Options::=--force-confold";

#[test]
fn deb_installs_upgrades_removes_and_purges_in_a_fresh_trixie() {
    let Some(deb) = package("p4lb_", "_amd64.deb") else {
        println!(
            "SKIPPED: no p4lb_*_amd64.deb in {}; build the packages with `make packages`",
            paths::target_dir().join("packages").display()
        );
        return;
    };
    let _serial = serial();
    let list = files_list::load().unwrap();
    let older = older_version_of(&deb);
    let tb = Testbed::start(TestbedOptions {
        helper: Some(helper()),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("FAILED: the testbed is not available: {e}"));

    let before = tree(&tb);
    let criu_before = criu_files(&tb);

    // An older version first, with configuration and state of its own.
    sh(&tb, &format!("{APT} install {}", inside(&older)));
    sh(
        &tb,
        "echo learned > /var/lib/p4lb/state-marker; echo '# changed here' >> /etc/p4lb/controller.toml",
    );
    // The upgrade.
    sh(&tb, &format!("{APT} install {}", inside(&deb)));
    let version = sh(&tb, "dpkg-query -W -f '${Version}' p4lb");
    assert_ne!(version.trim(), "0.0.1-1", "the upgrade did not happen");
    assert_eq!(sh(&tb, "cat /var/lib/p4lb/state-marker"), "learned\n");
    assert!(
        sh(&tb, "cat /etc/p4lb/controller.toml").ends_with("# changed here\n"),
        "the upgrade replaced a changed /etc/p4lb/controller.toml"
    );

    // Every file of the list, with its mode, root-owned.
    let deb_paths = host("dpkg-deb", &["-c", deb.to_str().unwrap()]);
    for e in list.iter().filter(|e| e.in_set("host")) {
        check_installed(&tb, e, &deb_paths);
    }
    for man in ["p4lb-controller", "p4lbctl", "p4lb-switch", "p4lb-agent"] {
        sh(&tb, &format!("test -s /usr/share/man/man1/{man}.1.gz"));
    }
    // The CRIU block: once per file, the action script in default.conf only.
    let criu = criu_files(&tb);
    for f in ["default.conf", "runc.conf", "crun.conf"] {
        let c = sh(&tb, &format!("cat /etc/criu/{f}"));
        assert_eq!(c.matches("# BEGIN p4lb").count(), 1, "{f}: {c}");
        assert!(c.contains("\ntcp-established\n"), "{f}: {c}");
        assert_eq!(
            c.contains("action-script /usr/libexec/p4lb/p4lb-criu-action"),
            f == "default.conf",
            "{f}: {c}"
        );
    }
    assert!(
        criu.contains("== /etc/criu/runc.conf\ntcp-established\n# BEGIN p4lb"),
        "the testbed's own runc.conf line was not kept: {criu}"
    );
    // The installed commands run (statically linked: nothing else needed).
    for cmd in [
        "/usr/bin/p4lb-controller --help",
        "/usr/bin/p4lbctl --help",
        "/usr/bin/p4lb-switch --help",
        "/usr/bin/p4lb-agent --help",
        "/opt/cni/bin/p4lb",
    ] {
        sh(&tb, &format!("{cmd} >/dev/null 2>&1"));
    }

    // Remove: the programs and the CRIU block go, configuration and state stay.
    sh(&tb, &format!("{APT} remove p4lb"));
    assert_eq!(criu_files(&tb), criu_before, "apt remove left a CRIU block");
    sh(
        &tb,
        "test ! -e /usr/bin/p4lb-controller && test ! -L /opt/cni/bin/p4lb",
    );
    sh(&tb, "test ! -e /usr/share/containers/oci/hooks.d/p4lb.json");
    assert_eq!(sh(&tb, "cat /var/lib/p4lb/state-marker"), "learned\n");
    sh(&tb, "test -f /etc/p4lb/controller.toml");

    // The state directories the programs make when they first need them (the CNI
    // plugin's /var/lib/cni/p4lb at its first ADD), with their parents, as a host that
    // ran containers has them.
    for e in list
        .iter()
        .filter(|e| e.kind == "state" && e.in_set("host"))
    {
        sh(
            &tb,
            &format!("mkdir -p {}/x && touch {}/x/y", e.dest, e.dest),
        );
    }
    // Purge: nothing of p4lb is left, not even a directory it made.
    sh(&tb, &format!("{APT} purge p4lb"));
    assert_eq!(criu_files(&tb), criu_before);
    let after = tree(&tb);
    let added: Vec<&String> = after.difference(&before).collect();
    let removed: Vec<&String> = before.difference(&after).collect();
    println!("left after apt purge: {added:?}; gone that was there before: {removed:?}");
    assert!(added.is_empty(), "apt purge left {added:?}");
    assert!(removed.is_empty(), "install + purge removed {removed:?}");
    tb.stop().unwrap();
}

/// One entry of the list in the testbed after the install.
fn check_installed(tb: &Testbed, e: &Entry, deb_paths: &str) {
    let shipped = deb_paths
        .lines()
        .any(|l| l.ends_with(&format!(" .{}", e.dest)) || l.ends_with(&format!(" .{}/", e.dest)));
    match e.kind.as_str() {
        "link" => {
            assert_eq!(
                sh(tb, &format!("readlink {}", e.dest)).trim(),
                e.source,
                "{}",
                e.dest
            );
        }
        // Made by the programs when they first need them.
        "state" => {}
        _ => {
            if e.optional() && !shipped {
                println!("not built, not shipped: {}", e.dest);
                return;
            }
            assert!(shipped, "{} is not in the package", e.dest);
            let stat = sh(tb, &format!("stat -c '%a %u %g' {}", e.dest));
            let want = format!("{:o} 0 0", e.mode.unwrap_or(0));
            assert_eq!(stat.trim(), want, "{} (mode uid gid)", e.dest);
        }
    }
}

#[test]
fn rpm_ships_the_list_with_its_modes_and_runs_p4lb_setup() {
    let Some(rpm) = package("p4lb-", ".x86_64.rpm") else {
        println!(
            "SKIPPED: no p4lb-*.x86_64.rpm in {}; build the packages with `make packages`",
            paths::target_dir().join("packages").display()
        );
        return;
    };
    if paths::which("rpm").is_none() {
        println!("SKIPPED: rpm is not installed (`make packages` installs it)");
        return;
    }
    let rpm = rpm.to_str().unwrap();
    let files = host(
        "rpm",
        &[
            "-qp",
            "--qf",
            "[%{FILEMODES:octal} %{FILEUSERNAME} %{FILEGROUPNAME} flags=%{FILEFLAGS:fflags} %{FILENAMES}\n]",
            rpm,
        ],
    );
    let get = |dest: &str| {
        files
            .lines()
            .find(|l| l.ends_with(&format!(" {dest}")))
            .map(str::to_string)
    };
    for e in files_list::load()
        .unwrap()
        .iter()
        .filter(|e| e.in_set("host"))
    {
        match e.kind.as_str() {
            // Made by %post (packages keep out of /opt) and by the programs.
            "link" | "state" => assert!(get(&e.dest).is_none(), "{} is in the rpm", e.dest),
            _ => {
                let Some(line) = get(&e.dest) else {
                    assert!(e.optional(), "{} is not in the rpm", e.dest);
                    continue;
                };
                let f: Vec<&str> = line.split_whitespace().collect();
                let mode = u32::from_str_radix(f[0], 8).unwrap() & 0o7777;
                assert_eq!(Some(mode), e.mode, "{line}");
                assert_eq!((f[1], f[2]), ("root", "root"), "{line}");
                assert_eq!(f[3].contains('c'), e.kind == "config", "{line}");
                if e.kind == "config" {
                    assert!(f[3].contains('n'), "config is not noreplace: {line}");
                }
            }
        }
    }
    let scripts = host("rpm", &["-qp", "--scripts", rpm]);
    assert!(
        scripts.contains("/usr/libexec/p4lb/p4lb-setup configure"),
        "{scripts}"
    );
    assert!(
        scripts.contains("/usr/libexec/p4lb/p4lb-setup unconfigure"),
        "{scripts}"
    );
}

/// A testbed node where p4lb comes from the `.deb` alone: installed with apt, the two
/// daemons started as docs/install.md starts them without systemd (no systemd in the
/// testbed), with the installed configuration; the network is the packaged example.
fn node_from_deb(deb: &Path) -> World {
    let tb = start_with_images();
    sh(&tb, &format!("{APT} install {}", inside(deb)));
    sh(
        &tb,
        "rm -f /etc/cni/net.d/* && \
         cp /usr/share/doc/p4lb/10-p4lb.conflist.example /etc/cni/net.d/10-p4lb.conflist && \
         install -d -m 0700 /run/p4lb /run/p4lb-switch && \
         (setsid /usr/bin/p4lb-switch </dev/null >/tmp/switch.log 2>&1 &) && \
         (setsid /usr/bin/p4lb-controller </dev/null >/tmp/controller.log 2>&1 &)",
    );
    let ready = wait::until(30, "the installed controller to answer", || {
        tb.sh("/usr/bin/p4lbctl status >/dev/null").is_ok()
    });
    if let Err(e) = ready {
        let logs = tb
            .sh("tail -n 30 /tmp/switch.log /tmp/controller.log")
            .unwrap_or_default();
        panic!("{e}\n{logs}");
    }
    World(
        scenario::World::installed(tb, "/usr/bin/p4lbctl", "/opt/cni/bin/p4lb")
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

fn deb_or_skip() -> Option<PathBuf> {
    let deb = package("p4lb_", "_amd64.deb");
    if deb.is_none() {
        println!(
            "SKIPPED: no p4lb_*_amd64.deb in {}; build the packages with `make packages`",
            paths::target_dir().join("packages").display()
        );
    }
    deb
}

#[test]
fn a_cri_migration_runs_on_what_the_deb_installed() {
    let Some(deb) = deb_or_skip() else {
        return;
    };
    let _serial = serial();
    let w = node_from_deb(&deb);
    // The example network labels nothing: the pods carry `app: web` themselves.
    let r = cri_migration_in(&w, &[("labels.p4lb.io/app", "web")], true);
    record(&format!(
        "CRI migration with p4lb from the .deb only: {}/{} connections kept, {} reset, {} failed",
        r.survived, r.conns, r.resets, r.failed
    ));
    assert_eq!(r.resets, 0, "{}", r.stderr);
    assert_eq!(r.failed, 0, "{}", r.stderr);
    assert_eq!(r.survived, r.conns as u64, "{}", r.stderr);
}

/// Podman checkpoint/restore to a new namespace with a new address, twice, with the
/// CRIU block, action script and OCI hook of the `.deb` (the scenario's namespaces are
/// wired by the installed CNI plugin).
#[test]
fn podman_migrations_run_on_what_the_deb_installed() {
    let Some(deb) = deb_or_skip() else {
        return;
    };
    let _serial = serial();
    let w = node_from_deb(&deb);
    let conns = 50;
    w.pod_netns("cli", "cli", "clients", "");
    w.pod_netns("srv", "srv0", "pods", "");
    w.add_service();
    w.run_server("web", &["p4lb.io/tier=gold"]);
    // The installed OCI hook labelled the endpoint from the container's annotations.
    let ep = w.endpoint("srv0/eth0");
    assert_eq!(
        ep.labels.get("p4lb.io/tier").map(String::as_str),
        Some("gold"),
        "{ep:?}"
    );
    let client = w.start_client(conns, 5.0).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    client.mark().unwrap();
    for i in 1..=2 {
        let m = w.migrate("web", &format!("srv{}", i - 1), &format!("srv{i}"), i);
        assert_ne!(m.new_ip, m.old_ip);
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    let out = client.finish().unwrap();
    let before = out.interim.first().expect("interim report");
    let after = &out.last;
    let (survived, _) = p4lb_e2e::judge::judge(before, after).unwrap();
    record(&format!(
        "Podman migrations (2) with p4lb from the .deb only: {survived}/{conns} connections \
         kept, {} reset, {} failed",
        after.totals.reset, after.totals.failed
    ));
    for m in w.migrations() {
        assert_eq!(m.state, "done", "{m:?}");
    }
    assert_eq!(after.totals.reset, 0, "{}", out.stderr);
    assert_eq!(after.totals.failed, 0, "{}", out.stderr);
    assert_eq!(survived, conns as u64, "{}", out.stderr);
}
