//! The user guide's walkthroughs, run as written: the marked shell blocks of the docs
//! (`<!-- walkthrough: NAME/STEP -->`, read by [`p4lb_e2e::walkthrough`]) are executed in
//! order in the testbed, each as a user pastes it into a shell. A doc edit that breaks a
//! command fails the test at that block, with its file and line.
//!
//! - docs/podman.md sections 1 to 6 (p4lb installed by `packaging/install.sh` from the
//!   source tree, bound into the testbed at [`SRC`]; a p4lb network, an echo server behind
//!   a VIP, a client in a namespace wired by the CNI plugin, two migrations, clean-up),
//!   then docs/install.md's source uninstall;
//! - docs/migration.md's recovery after a Podman restore that failed with the controller
//!   down;
//! - docs/install.md sections 1, 3 and 6 with the `.deb` (install, check, network,
//!   service, `apt remove`, `apt purge`); SKIPPED without `make packages`.
//!
//! Between the blocks the test checks what the doc promises: the endpoint and its labels, a
//! new (or the same) address after each restore, the migrations `done`, the client's
//! connection alive with every number echoed back in order, nothing of p4lb left after the
//! clean-up, and no file or empty directory left after the uninstall or the purge.
//!
//! What the testbed cannot run verbatim is in [`PREPARATIONS`], [`substitutions`] and, for
//! the package, next to them in its test: the only places that list it, each with the
//! reason; every one is printed when the test runs.

mod migration_common;

use std::time::Instant;

use migration_common::{helper, record, serial};
use p4lb_api::api;
use p4lb_e2e::files_list;
use p4lb_e2e::walkthrough::{self, Step, Substitution};
use p4lb_testbed::enter::Bind;
use p4lb_testbed::{cgroups, images, paths, wait, Testbed, TestbedOptions};

/// Where the source tree (the repository, read-only) appears inside the testbed; the
/// walkthrough's commands run there, as a user runs them in a checkout.
const SRC: &str = "/p4lb/src";

/// docs/podman.md's walkthrough, in order; the tests check after these steps.
const PODMAN_STEPS: &[&str] = &[
    "podman/install",
    "podman/network",
    "podman/workload",
    "podman/client",
    "podman/migrate",
    "podman/migrate-keep",
    "podman/migrate-in-place",
    "podman/cleanup",
];

/// Set up in the testbed before the walkthrough: (script, why).
const PREPARATIONS: &[(&str, &str)] = &[
    (
        "printf '#!/bin/sh\\nexec \"$@\"\\n' > /usr/local/bin/sudo && chmod 0755 /usr/local/bin/sudo",
        "the testbed runs as root and has no sudo: `sudo` runs its arguments",
    ),
    (
        "ln -sf /bin/busybox /usr/local/bin/nc",
        "the testbed has no netcat package: `nc` is busybox's",
    ),
    (
        "podman tag localhost/p4lb/testimg:latest docker.io/library/busybox:latest",
        "no registry is reachable: `docker.io/library/busybox` is the local image built from \
         Debian's busybox-static",
    ),
];

/// Made by Podman itself during the walkthrough, not by p4lb: the directory of its
/// network definitions, created by the first `podman network create` and kept (empty)
/// after `podman network rm`.
const PODMANS_OWN: &[&str] = &["/etc/containers/networks"];

/// Doc lines replaced in the testbed.
fn substitutions() -> Vec<Substitution> {
    let target = paths::inside_target(&paths::target_dir().join("debug"))
        .expect("the target dir is bound into the testbed");
    let start = step(
        "docs/install.md",
        "without-systemd",
        "without-systemd/start",
    );
    vec![
        Substitution {
            line: "cargo build --release".into(),
            with: ": cargo build ran on the host".into(),
            why: "the testbed has no Rust toolchain: the host's build (target/debug, as for \
                  every end-to-end test) is installed instead"
                .into(),
        },
        Substitution {
            line: "sudo packaging/install.sh                 # binaries, CRIU action script, OCI hook, units".into(),
            with: format!("sudo packaging/install.sh --from {}", target.display()),
            why: "the build output is the host's target/debug, not the tree's target/release"
                .into(),
        },
        Substitution {
            line: "sudo systemctl enable --now p4lb-switch p4lb-controller".into(),
            with: start.script,
            why: "no systemd in the testbed: docs/install.md's commands for running \
                  without it (`without-systemd/start`)"
                .into(),
        },
    ]
}

fn step(doc: &str, name: &str, id: &str) -> Step {
    walkthrough::load(doc, name)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("{doc} has no step {id}"))
}

/// The walkthrough `name` of `doc`, which must have exactly the steps `want`.
fn steps(doc: &str, name: &str, want: &[&str]) -> Vec<Step> {
    let s = walkthrough::load(doc, name).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        walkthrough::ids(&s),
        want,
        "{doc}: the walkthrough's marked steps changed; the test checks after each of them"
    );
    s
}

struct Guide {
    tb: Testbed,
}

/// The programs `packaging/install.sh --from <target>/debug` installs must be built, the
/// netavark plugin (optional for the installer) too: the walkthrough's network needs it.
fn require_debug_build() {
    let dir = paths::target_dir().join("debug");
    let list = files_list::load().unwrap_or_else(|e| panic!("{e}"));
    let missing: Vec<&str> = list
        .iter()
        .filter(|e| (e.kind == "build" || e.source == "p4lb-netavark") && e.in_set("host"))
        .filter(|e| !dir.join(&e.source).is_file())
        .map(|e| e.source.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "FAILED: {missing:?} not built in {}: run `cargo build --workspace --bins` first",
        dir.display()
    );
}

impl Guide {
    fn start() -> Guide {
        let mut opts = TestbedOptions {
            helper: Some(helper()),
            ..Default::default()
        };
        opts.binds.push(Bind {
            source: paths::repo_root(),
            target: SRC.into(),
            readonly: true,
        });
        let tb = Testbed::start(opts)
            .unwrap_or_else(|e| panic!("FAILED: the testbed is not available: {e}"));
        images::build_podman_images(&tb).unwrap_or_else(|e| panic!("building images: {e}"));
        let g = Guide { tb };
        for (script, why) in PREPARATIONS {
            println!("preparation: {script}  -- {why}");
            g.sh(script);
        }
        g
    }

    fn sh(&self, script: &str) -> String {
        self.tb
            .sh(script)
            .unwrap_or_else(|e| panic!("in the testbed: {script}\n{e}"))
    }

    /// Runs one doc block as a user pastes it into a shell in the source tree, stopping at
    /// the first failing command.
    fn run(&self, s: &Step) -> String {
        self.run_in(s, SRC)
    }

    /// [`Guide::run`] in directory `dir`.
    fn run_in(&self, s: &Step, dir: &str) -> String {
        println!("--- {}\n{}", s.place(), s.script);
        let out = self
            .tb
            .output(&["/bin/sh", "-c", &format!("set -e\ncd {dir}\n{}", s.script)])
            .unwrap_or_else(|e| panic!("{}: {e}", s.place()));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        print!("{stdout}");
        assert!(
            out.status.success(),
            "the walkthrough step at {} failed ({}):\n{}\nstdout:\n{stdout}\nstderr:\n{stderr}\n{}",
            s.place(),
            out.status,
            s.script,
            self.diag()
        );
        stdout
    }

    fn diag(&self) -> String {
        self.tb
            .sh(
                "tail -n 30 /var/log/p4lb-controller.log /var/log/p4lb-switch.log 2>&1; \
                 p4lbctl endpoints ls 2>&1; p4lbctl migrations ls 2>&1; true",
            )
            .unwrap_or_default()
    }

    fn ctl<T: serde::de::DeserializeOwned>(&self, args: &str) -> T {
        let out = self.sh(&format!("p4lbctl --json {args}"));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("p4lbctl {args}: {out:?}: {e}"))
    }

    fn address(&self) -> String {
        self.sh(
            "podman inspect -f '{{(index .NetworkSettings.Networks \"p4net\").IPAddress}}' echo",
        )
        .trim()
        .to_string()
    }

    /// After a restore: the empty cgroup copies CRIU makes below the container's group.
    fn prune_cgroups(&self) {
        let id = self.sh("podman inspect -f '{{.Id}}' echo");
        cgroups::prune_restore_copies(id.trim());
    }

    /// The numbers the echo client got back so far; they must be 1, 2, 3, … with none
    /// missing or repeated.
    fn echoed(&self) -> u64 {
        let log = self.sh("cat /tmp/echoed.log");
        let mut n = 0;
        for l in log.lines() {
            let got: u64 = l
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("the client printed {l:?}:\n{log}"));
            assert_eq!(got, n + 1, "a number was lost or repeated:\n{log}");
            n = got;
        }
        n
    }

    /// The client's connection is alive: its `nc` still runs and new numbers come back.
    fn client_kept(&self, before: u64, what: &str) -> u64 {
        let pids = self.sh("ip netns pids p4client");
        assert!(
            !pids.trim().is_empty(),
            "{what}: the client ended (its connection was closed or reset):\n{}",
            self.sh("cat /tmp/echoed.log")
        );
        let mut now = 0;
        wait::until(20, "the client's numbers to come back again", || {
            now = self.echoed();
            now >= before + 2
        })
        .unwrap_or_else(|e| panic!("{what}: {e}\n{}", self.diag()));
        now
    }

    fn p4lb_links(&self) -> String {
        self.sh("ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^p4lb' || true")
    }
}

/// docs/podman.md sections 1 to 6, then docs/install.md's uninstall of a source install.
#[test]
fn podman_guide_runs_as_written_and_uninstall_leaves_nothing() {
    let _s = serial();
    let t0 = Instant::now();
    let mut walk = steps("docs/podman.md", "podman", PODMAN_STEPS);
    let subs = substitutions();
    for s in &subs {
        println!("substituted: {:?} -> {:?}  -- {}", s.line, s.with, s.why);
    }
    walkthrough::substitute(&mut walk, &subs).unwrap_or_else(|e| panic!("{e}"));
    let stop = step("docs/install.md", "without-systemd", "without-systemd/stop");
    let uninstall = steps("docs/install.md", "source", &["source/uninstall"]);

    require_debug_build();
    let g = Guide::start();
    let before = files_list::rootfs_tree(&g.tb).unwrap_or_else(|e| panic!("{e}"));
    let mut echoed = 0;
    let mut addr = String::new();
    for s in &walk {
        let out = g.run(s);
        match s.id.as_str() {
            "podman/install" => {
                assert!(out.contains("p4lb-setup: p4lb installed"), "{out}");
            }
            "podman/workload" => {
                addr = g.address();
                let eps: Vec<api::Endpoint> = g.ctl("endpoints ls");
                let ep = eps
                    .iter()
                    .find(|e| e.ip == addr)
                    .unwrap_or_else(|| panic!("no endpoint for {addr}: {eps:?}"));
                assert_eq!(ep.network, "p4net", "{ep:?}");
                assert_eq!(ep.labels.get("app").map(String::as_str), Some("echo"));
                assert_eq!(ep.state, "ready", "{ep:?}");
                assert!(
                    out.contains(&addr),
                    "the walkthrough did not show {addr}: {out}"
                );
                // install.md's label table: the OCI hook adds the container's id, and
                // the netavark plugin the container's name as `podman.name`.
                let id = g.sh("podman inspect -f '{{.Id}}' echo");
                let show = format!("endpoints show {}", ep.key);
                wait::until(10, "the OCI hook's container.id label", || {
                    let e: api::Endpoint = g.ctl(&show);
                    e.labels.get("container.id").map(String::as_str) == Some(id.trim())
                })
                .unwrap_or_else(|e| panic!("{e}: {:?}", g.ctl::<api::Endpoint>(&show)));
                let e: api::Endpoint = g.ctl(&show);
                assert_eq!(
                    e.labels.get("podman.name").map(String::as_str),
                    Some("echo"),
                    "{e:?}"
                );
            }
            "podman/client" => {
                echoed = g.client_kept(0, "the client's first numbers");
            }
            "podman/migrate" | "podman/migrate-keep" | "podman/migrate-in-place" => {
                g.prune_cgroups();
                let new = g.address();
                if s.id != "podman/migrate-keep" {
                    assert_ne!(new, addr, "--ignore-static-ip kept the address");
                } else {
                    assert_eq!(new, addr, "the restore without --ignore-static-ip moved");
                }
                addr = new;
                let migs: Vec<api::Migration> = g.ctl("migrations ls");
                assert!(
                    !migs.is_empty() && migs.iter().all(|m| m.state == "done"),
                    "{migs:?}"
                );
                echoed = g.client_kept(echoed, &s.id);
                record(&format!(
                    "guide walkthrough {}: migrations {}, the client's connection kept, {echoed} \
                     numbers echoed in order",
                    s.id,
                    migs.len()
                ));
            }
            "podman/cleanup" => {
                assert_eq!(g.p4lb_links().trim(), "", "p4lb veths left");
                let eps: Vec<api::Endpoint> = g.ctl("endpoints ls");
                assert!(eps.is_empty(), "endpoints left: {eps:?}");
                let svcs: Vec<api::Service> = g.ctl("services ls");
                assert!(svcs.is_empty(), "services left: {svcs:?}");
            }
            _ => {}
        }
    }
    g.run(&stop);
    for s in &uninstall {
        g.run(s);
    }
    let after = files_list::rootfs_tree(&g.tb).unwrap_or_else(|e| panic!("{e}"));
    let added: Vec<&String> = after
        .difference(&before)
        .filter(|p| !PODMANS_OWN.contains(&p.as_str()))
        .collect();
    let removed: Vec<&String> = before.difference(&after).collect();
    println!("left after the uninstall: {added:?}; gone that was there before: {removed:?}");
    assert!(
        added.is_empty(),
        "the walkthrough and uninstall left {added:?}"
    );
    assert!(
        removed.is_empty(),
        "install + uninstall removed {removed:?}"
    );
    record(&format!(
        "guide walkthrough docs/podman.md + uninstall: {} steps as written, {} lines substituted, \
         {:.0} s",
        walk.len() + 2,
        subs.len(),
        t0.elapsed().as_secs_f64()
    ));
    g.tb.stop().unwrap();
}

/// docs/migration.md's clean-up after a failed Podman restore: the podman walkthrough up to
/// the client, a checkpoint and `podman rm`, a restore that fails because the controller is
/// down (the fault, made by the test), then the doc's recovery block as written. The
/// migration ends `done` at a new address and the client's connection was kept throughout.
#[test]
fn a_failed_podman_restore_is_recovered_as_the_guide_says() {
    let _s = serial();
    let t0 = Instant::now();
    let mut setup = steps("docs/podman.md", "podman", PODMAN_STEPS);
    setup.retain(|s| {
        matches!(
            s.id.as_str(),
            "podman/install" | "podman/network" | "podman/workload" | "podman/client"
        )
    });
    let mut recover = steps(
        "docs/migration.md",
        "podman-failed",
        &["podman-failed/recover"],
    );
    let mut subs = substitutions();
    let controller_only: String = step(
        "docs/install.md",
        "without-systemd",
        "without-systemd/start",
    )
    .script
    .lines()
    .filter(|l| l.contains("setsid p4lb-controller") || l.contains("until sudo p4lbctl"))
    .map(|l| format!("{l}\n"))
    .collect();
    assert_eq!(controller_only.lines().count(), 2, "{controller_only}");
    subs.push(Substitution {
        line: "sudo systemctl start p4lb-controller      # or whatever made the restore fail"
            .into(),
        with: controller_only,
        why: "no systemd in the testbed: the controller's line of docs/install.md's \
              `without-systemd/start`"
            .into(),
    });
    for s in &subs {
        println!("substitution: {:?}  -- {}", s.line, s.why);
    }
    let (walk_subs, recover_subs) = subs.split_at(subs.len() - 1);
    walkthrough::substitute(&mut setup, walk_subs).unwrap_or_else(|e| panic!("{e}"));
    walkthrough::substitute(&mut recover, recover_subs).unwrap_or_else(|e| panic!("{e}"));

    require_debug_build();
    let g = Guide::start();
    for s in &setup {
        g.run(s);
    }
    let addr = g.address();
    let echoed = g.client_kept(0, "the client's first numbers");

    // The fault: checkpoint and remove, then the controller goes down before the restore.
    g.sh("podman container checkpoint --tcp-established --export /tmp/echo.tar echo && podman rm echo");
    let links = g.p4lb_links();
    let source_key = {
        let eps: Vec<api::Endpoint> = g.ctl("endpoints ls");
        let src = eps
            .iter()
            .find(|e| e.ip == addr)
            .unwrap_or_else(|| panic!("no source endpoint kept for {addr}: {eps:?}"));
        assert!(src.locked, "the checkpointed source is not locked: {src:?}");
        src.key.clone()
    };
    // `endpoints rm --force` does not end the migration: the source stays for the restore.
    let forced = g.sh(&format!(
        "p4lbctl endpoints rm --force {source_key} 2>&1 || true"
    ));
    let eps: Vec<api::Endpoint> = g.ctl("endpoints ls");
    assert!(
        eps.iter().any(|e| e.key == source_key && e.locked),
        "endpoints rm --force removed the source of a live migration ({forced}): {eps:?}"
    );
    g.sh("pkill -x p4lb-controller; for i in $(seq 50); do pgrep -x p4lb-controller >/dev/null || exit 0; sleep 0.1; done; exit 1");
    let out =
        g.tb.output(&[
            "/bin/sh",
            "-c",
            "podman container restore --import /tmp/echo.tar --tcp-established --ignore-static-ip",
        ])
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "the restore succeeded without a controller"
    );
    assert!(err.contains("p4lb controller unavailable"), "{err}");
    let records = g.sh("podman ps -a --format '{{.Names}} {{.State}}'");
    println!(
        "the failed restore said: {err}\nleft behind: containers {records:?}; \
         `endpoints rm --force` of the source said {forced:?}"
    );
    assert_eq!(g.p4lb_links(), links, "the failed restore left a veth");

    for s in &recover {
        let out = g.run(s);
        assert!(out.contains("checkpointed"), "{out}");
    }
    g.prune_cgroups();
    let migs: Vec<api::Migration> = g.ctl("migrations ls");
    assert_eq!(migs.len(), 1, "{migs:?}");
    assert_eq!(migs[0].state, "done", "{migs:?}");
    assert_ne!(g.address(), addr, "the recovery restore kept the address");
    let echoed = g.client_kept(echoed, "after the recovery");
    let eps: Vec<api::Endpoint> = g.ctl("endpoints ls");
    assert!(
        !eps.iter().any(|e| e.key == source_key),
        "the source outlived the finished migration: {eps:?}"
    );
    record(&format!(
        "guide walkthrough docs/migration.md podman-failed: restore refused with the \
         controller down, recovered as written, client kept ({echoed} numbers echoed in \
         order), {:.0} s",
        t0.elapsed().as_secs_f64()
    ));
    g.tb.stop().unwrap();
}

/// Where docs/install.md's package walkthrough runs: a stand-in checkout whose `target`
/// is the host's target directory, so `./target/packages/…` is the package `make
/// packages` built there.
const CHECKOUT: &str = "/tmp/checkout";

/// Answers apt's questions with yes, as the user at the terminal does.
const APT_YES: &str =
    "echo 'APT::Get::Assume-Yes \"true\";' > /etc/apt/apt.conf.d/90p4lb-walkthrough-yes";

/// docs/install.md sections 1 and 3 with the `.deb` (install, check, network, service),
/// then section 6's `apt remove` and `apt purge`: nothing is left.
#[test]
fn package_guide_runs_as_written_and_purge_leaves_nothing() {
    let packages = paths::target_dir().join("packages");
    let built = std::fs::read_dir(&packages)
        .map(|d| {
            d.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("p4lb_") && n.ends_with("_amd64.deb")
            })
        })
        .unwrap_or(false);
    if !built {
        println!(
            "SKIPPED: no p4lb_*_amd64.deb in {}; build the packages with `make packages`",
            packages.display()
        );
        return;
    }
    let _s = serial();
    let t0 = Instant::now();
    let mut walk = steps(
        "docs/install.md",
        "package",
        &[
            "package/install",
            "package/check",
            "package/network",
            "package/service",
            "package/remove",
        ],
    );
    let remove = walk.pop().expect("package/remove");
    let start = step(
        "docs/install.md",
        "without-systemd",
        "without-systemd/start",
    );
    let stop = step("docs/install.md", "without-systemd", "without-systemd/stop");
    let subs = vec![
        Substitution {
            line: "sudo make packages                       # target/packages/p4lb_0.1.0-1_amd64.deb and the .rpm".into(),
            with: ": make packages ran on the host".into(),
            why: "the testbed has no Rust toolchain: the packages `make packages` built on the \
                  host are in ./target/packages"
                .into(),
        },
        Substitution {
            line: "sudo systemctl enable --now p4lb-switch p4lb-controller".into(),
            with: start.script,
            why: "no systemd in the testbed: docs/install.md's commands for running \
                  without it (`without-systemd/start`)"
                .into(),
        },
        Substitution {
            line: "man p4lbctl".into(),
            with: "zcat /usr/share/man/man1/p4lbctl.1.gz | grep -q p4lbctl".into(),
            why: "the testbed has no man-db: the installed page is read directly".into(),
        },
    ];
    for s in &subs {
        println!("substituted: {:?} -> {:?}  -- {}", s.line, s.with, s.why);
    }
    walkthrough::substitute(&mut walk, &subs).unwrap_or_else(|e| panic!("{e}"));

    let g = Guide::start();
    g.sh(&format!(
        "mkdir -p {CHECKOUT} && ln -s {} {CHECKOUT}/target",
        paths::TARGET_INSIDE
    ));
    println!(
        "preparation: {CHECKOUT}/target -> {}  -- the package walkthrough runs in a checkout \
         whose target/ is the host's",
        paths::TARGET_INSIDE
    );
    g.sh(APT_YES);
    println!(
        "preparation: {APT_YES}  -- apt asks `Continue? [Y/n]` before a removal, which a \
         user answers; the test has no terminal"
    );
    let before = files_list::rootfs_tree(&g.tb).unwrap_or_else(|e| panic!("{e}"));
    for s in &walk {
        let out = g.run_in(s, CHECKOUT);
        match s.id.as_str() {
            "package/install" => {
                let v = g.sh("dpkg-query -W -f '${Status} ${Version}' p4lb");
                assert!(v.starts_with("install ok installed"), "{v}");
            }
            "package/check" => {
                assert!(
                    out.contains("action-script /usr/libexec/p4lb/p4lb-criu-action"),
                    "{out}"
                );
            }
            "package/service" => {
                let svcs: Vec<api::Service> = g.ctl("services ls");
                assert!(
                    svcs.iter().any(|v| v.name == "web" && v.vip == "10.99.0.1"),
                    "{svcs:?}"
                );
            }
            _ => {}
        }
    }
    g.run_in(&stop, CHECKOUT);
    g.run_in(&remove, CHECKOUT);
    let after = files_list::rootfs_tree(&g.tb).unwrap_or_else(|e| panic!("{e}"));
    let added: Vec<&String> = after.difference(&before).collect();
    let removed: Vec<&String> = before.difference(&after).collect();
    println!("left after apt purge: {added:?}; gone that was there before: {removed:?}");
    assert!(
        added.is_empty(),
        "the package walkthrough and purge left {added:?}"
    );
    assert!(removed.is_empty(), "install + purge removed {removed:?}");
    record(&format!(
        "guide walkthrough docs/install.md (package): {} steps as written, {} lines \
         substituted, {:.0} s",
        walk.len() + 2,
        subs.len(),
        t0.elapsed().as_secs_f64()
    ));
    g.tb.stop().unwrap();
}
