//! The p4lb image on a node, for real. In a testbed node, Podman runs the DaemonSet's
//! init container from the image `make image` built, with exactly the mounts, host
//! namespaces, user and capabilities deploy/kubernetes declares (read from the manifest,
//! not restated), then its controller container the same way, until the readiness probe
//! passes. Then a containerd CRI migration to a new pod with a new address, with nothing
//! of p4lb on the node but what the installer put there (the conflist from the
//! ConfigMap, the CNI plugin, the CRIU configuration and action script) and the
//! controller in its container: 100 connections through the VIP, 0 reset, 0 failed, all
//! kept.
//!
//! Without the image the test says SKIPPED (build it with `make image`).

mod migration_common;

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{ConfigMap, Container};
use migration_common::*;
use p4lb_e2e::{manifests, scenario};
use p4lb_testbed::{paths, wait};

/// The newest image archive `make image` wrote.
fn image_archive() -> Option<PathBuf> {
    let dir = paths::target_dir().join("image");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".oci.tar"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `podman run` of a container of the node pod, as the kubelet would run it.
fn podman_run(
    tb: &p4lb_testbed::Testbed,
    c: &Container,
    image: &str,
    mode: &str,
) -> Result<String, String> {
    let pod = manifests::node_pod().map_err(|e| e.to_string())?;
    let (args, dirs) =
        manifests::podman_args(&pod, c, "/tmp/p4lb-config").map_err(|e| e.to_string())?;
    let command = c.command.clone().unwrap_or_default();
    let script = format!(
        "mkdir -p {} && podman run {mode} --name {} {} {image} {}",
        shell_words(&dirs),
        c.name,
        shell_words(&args),
        shell_words(&command)
    );
    println!("{script}");
    tb.sh(&script).map_err(|e| e.to_string())
}

#[test]
fn the_images_installer_and_controller_carry_a_cri_migration_on_a_node() {
    let Some(archive) = image_archive() else {
        println!(
            "SKIPPED: no p4lb image in {}; build it with `make image`",
            paths::target_dir().join("image").display()
        );
        return;
    };
    let _s = serial();
    let tb = start_with_images();
    let pod = manifests::node_pod().unwrap();
    let cm: ConfigMap = manifests::object("ConfigMap").unwrap();

    // A node as systemd leaves it: the root mount is shared (a runtime's later netns
    // mounts reach the controller's HostToContainer mount of /run/netns), and no CNI
    // configuration but the one p4lb's installer writes.
    tb.sh("mount --make-rshared / && rm -f /etc/cni/net.d/* && mkdir -p /tmp/p4lb-config")
        .unwrap();
    for (name, text) in cm.data.iter().flatten() {
        tb.sh(&format!(
            "cat > /tmp/p4lb-config/{name} <<'P4LB_EOF'\n{text}P4LB_EOF\n"
        ))
        .unwrap();
    }
    let inside = paths::inside_target(&archive).unwrap();
    let loaded = tb
        .sh(&format!("podman load -q -i {}", inside.display()))
        .unwrap();
    let image = loaded
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .unwrap_or_else(|| panic!("podman load said: {loaded}"))
        .trim()
        .to_string();

    // The init container.
    let init = pod
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "install")
        .expect("the install init container");
    podman_run(&tb, init, &image, "--rm").unwrap_or_else(|e| panic!("install: {e}"));
    let version = tb.sh("/opt/cni/bin/p4lb 2>&1").unwrap();
    assert!(version.starts_with("p4lb CNI plugin"), "{version}");
    tb.sh("grep -q '^action-script /usr/libexec/p4lb/p4lb-criu-action$' /etc/criu/default.conf")
        .unwrap();
    tb.sh("test -x /usr/libexec/p4lb/p4lb-criu-action && test -f /usr/share/containers/oci/hooks.d/p4lb.json")
        .unwrap();

    // A node that has run a pod: /run/netns is a shared mount point (ip and the
    // runtimes make it one with their first network namespace), so the namespaces
    // mounted there later reach the controller's HostToContainer mount.
    tb.sh("ip netns add p4lb-first && ip netns del p4lb-first")
        .unwrap();

    // The controller container, ready by its own probe.
    let controller = &pod.containers[0];
    podman_run(&tb, controller, &image, "-d").unwrap_or_else(|e| panic!("controller: {e}"));
    let probe = controller
        .readiness_probe
        .as_ref()
        .and_then(|p| p.exec.as_ref())
        .and_then(|e| e.command.clone())
        .expect("an exec readiness probe");
    let probe = format!("podman exec {} {}", controller.name, shell_words(&probe));
    let ready = wait::until(30, "the controller container to be ready", || {
        tb.sh(&probe).is_ok()
    });
    if let Err(e) = ready {
        let logs = tb
            .sh(&format!(
                "podman logs {} 2>&1 | tail -n 40",
                controller.name
            ))
            .unwrap_or_default();
        panic!("{e}\n{logs}");
    }

    let ctl = format!("podman exec {} /usr/bin/p4lbctl", controller.name);
    let w = World(
        scenario::World::installed(tb, &ctl, "/opt/cni/bin/p4lb").unwrap_or_else(|e| panic!("{e}")),
    );
    // The ConfigMap's network labels nothing: the pods carry `app: web` themselves.
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cri_migration_in(&w, &[("labels.p4lb.io/app", "web")], true)
    }));
    let r = run.unwrap_or_else(|e| {
        // What the node had: CRIU's configuration and logs, the controller's log.
        let (_, diag, _) = w.try_sh(
            "timeout 20 podman logs --tail 60 controller 2>&1; \
             ls -l /run/netns; timeout 5 podman exec controller ls -l /run/netns",
        );
        println!("{diag}");
        std::panic::resume_unwind(e)
    });
    record(&format!(
        "CRI migration on a node set up by the p4lb image only: {}/{} connections kept, {} \
         reset, {} failed",
        r.survived, r.conns, r.resets, r.failed
    ));
    assert_eq!(r.resets, 0, "{}", r.stderr);
    assert_eq!(r.failed, 0, "{}", r.stderr);
    assert_eq!(r.survived, r.conns as u64, "{}", r.stderr);
}
