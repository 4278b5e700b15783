//! deploy/kubernetes: every manifest is a typed Kubernetes object (k8s-openapi) with no
//! field the API does not know (a misspelled field fails), and the DaemonSet's node
//! installer, run with exactly the hostPath mounts the manifest declares, puts what
//! packaging/files.list says a node needs onto the node and nothing outside those mounts.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container};
use p4lb_e2e::manifests::{check_all, deploy_dir};
use serde_json::Value;

fn object<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    p4lb_e2e::manifests::object(kind).unwrap_or_else(|e| panic!("{e}"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn deploy() -> PathBuf {
    deploy_dir()
}

#[test]
fn every_manifest_is_a_typed_object_without_unknown_fields() {
    let all = check_all(&deploy()).unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<&str> = all.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["Namespace", "ConfigMap", "DaemonSet"]);
    let ds: DaemonSet = object("DaemonSet");
    let spec = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        spec.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert_eq!(spec.host_network, Some(true));
    let controller = &spec.containers[0];
    assert!(controller.readiness_probe.is_some());
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        let sc = c.security_context.as_ref().unwrap();
        assert_ne!(sc.privileged, Some(true), "{} is privileged", c.name);
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        let caps = sc.capabilities.as_ref().unwrap();
        assert_eq!(
            caps.drop.as_deref(),
            Some(&["ALL".to_string()][..]),
            "{}",
            c.name
        );
    }
}

#[test]
fn a_misspelled_field_fails_the_check() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["kustomization.yaml", "namespace.yaml", "configmap.yaml"] {
        std::fs::copy(deploy().join(f), dir.path().join(f)).unwrap();
    }
    let ds = std::fs::read_to_string(deploy().join("daemonset.yaml")).unwrap();
    for (right, wrong) in [
        ("hostNetwork:", "hostNetwrok:"),
        ("readinessProbe:", "readinesProbe:"),
        ("mountPropagation:", "mountPropagaton:"),
    ] {
        assert!(ds.contains(right));
        std::fs::write(
            dir.path().join("daemonset.yaml"),
            ds.replacen(right, wrong, 1),
        )
        .unwrap();
        let e = check_all(dir.path()).expect_err(wrong).to_string();
        assert!(e.contains(wrong.trim_end_matches(':')), "{e}");
    }
    std::fs::write(dir.path().join("daemonset.yaml"), &ds).unwrap();
    check_all(dir.path()).unwrap();
    // The kustomization itself.
    let k = std::fs::read_to_string(deploy().join("kustomization.yaml")).unwrap();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        k.replace("resources:", "resource:"),
    )
    .unwrap();
    assert!(check_all(dir.path()).is_err());
}

/// The init container called `install`, and the pod's volumes by name.
fn installer() -> (
    Container,
    BTreeMap<String, k8s_openapi::api::core::v1::Volume>,
) {
    let ds: DaemonSet = object("DaemonSet");
    let spec = ds.spec.unwrap().template.spec.unwrap();
    let init = spec
        .init_containers
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.name == "install")
        .expect("an init container named install");
    let volumes = spec
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| (v.name.clone(), v))
        .collect();
    (init, volumes)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Files and directories under `dir` that are not symbolic links (mount points) nor
/// directories leading to one.
fn written_outside(dir: &Path, mount_parents: &[PathBuf], out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_symlink() {
            continue;
        }
        if p.is_dir() && mount_parents.iter().any(|m| m.starts_with(&p)) {
            written_outside(&p, mount_parents, out);
        } else {
            out.push(p);
        }
    }
}

/// Every file and link under `dir` (directories left out).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_node_installer_writes_only_through_the_declared_host_paths() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: the node installer runs as root (it installs root-owned files)");
        return;
    }
    let (init, volumes) = installer();
    let scratch = tempfile::tempdir().unwrap();
    let image = scratch.path().join("image");
    let node = scratch.path().join("node");
    let ctr = scratch.path().join("container");

    // The image's root: what `make image` stages (fake programs stand in for the binaries).
    let bin = scratch.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for b in [
        "p4lb-controller",
        "p4lbctl",
        "p4lb-switch",
        "p4lb-agent",
        "p4lb",
        "p4lb-criu-action",
        "p4lb-oci-hook",
    ] {
        std::fs::write(bin.join(b), format!("#!/bin/sh\necho {b}\n")).unwrap();
    }
    let out = Command::new("sh")
        .arg(repo().join("packaging/p4lb-setup.sh"))
        .args(["stage", "--from"])
        .arg(&bin)
        .arg("--source")
        .arg(repo())
        .arg("--root")
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The container: each volume mount is a link to the node's directory (hostPath) or
    // to the ConfigMap's files.
    let cm: ConfigMap = object("ConfigMap");
    let mut mount_parents = Vec::new();
    for m in init.volume_mounts.iter().flatten() {
        let v = &volumes[&m.name];
        let target = if let Some(hp) = &v.host_path {
            node.join(hp.path.trim_start_matches('/'))
        } else if let Some(c) = &v.config_map {
            assert_eq!(c.name, cm.metadata.name.clone().unwrap());
            let d = scratch.path().join("configmap");
            std::fs::create_dir_all(&d).unwrap();
            for (k, text) in cm.data.iter().flatten() {
                std::fs::write(d.join(k), text).unwrap();
            }
            d
        } else {
            panic!("volume {} is neither a hostPath nor the ConfigMap", m.name);
        };
        std::fs::create_dir_all(&target).unwrap();
        let at = ctr.join(m.mount_path.trim_start_matches('/'));
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&target, &at).unwrap();
        mount_parents.push(at);
    }

    // The init container's command, its paths taken inside the container.
    let command = init.command.clone().unwrap();
    assert_eq!(command[0], "/bin/sh");
    let mut args: Vec<String> = vec![image
        .join(command[1].trim_start_matches('/'))
        .display()
        .to_string()];
    let mut it = command[2..].iter();
    while let Some(a) = it.next() {
        args.push(a.clone());
        let in_ctr = |p: &str| ctr.join(p.trim_start_matches('/')).display().to_string();
        match a.as_str() {
            "--from-root" => {
                assert_eq!(it.next().map(String::as_str), Some("/"));
                args.push(image.display().to_string());
            }
            "--root" | "--cni-conflist" => args.push(in_ctr(it.next().unwrap())),
            _ => {}
        }
    }
    for _ in 0..2 {
        let out = Command::new("sh").args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "the node installer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let mut outside = Vec::new();
    written_outside(&ctr, &mount_parents, &mut outside);
    assert!(
        outside.is_empty(),
        "the installer wrote where no hostPath is mounted: {outside:?}"
    );
    // What a node needs, on the node.
    let list = p4lb_e2e::files_list::load().unwrap();
    for e in list.iter().filter(|e| e.in_set("node")) {
        let p = node.join(e.dest.trim_start_matches('/'));
        match e.kind.as_str() {
            "link" => assert_eq!(
                std::fs::read_link(&p).unwrap_or_else(|err| panic!("{}: {err}", p.display())),
                Path::new(&e.source)
            ),
            "state" => {}
            _ => assert_eq!(Some(mode(&p)), e.mode, "{}", e.dest),
        }
    }
    for e in list.iter().filter(|e| !e.in_set("node") && e.is_file()) {
        assert!(
            !node.join(e.dest.trim_start_matches('/')).exists(),
            "{} is host-only",
            e.dest
        );
    }
    let conflist = cm.data.as_ref().unwrap()["10-p4lb.conflist"].clone();
    assert_eq!(
        std::fs::read_to_string(node.join("etc/cni/net.d/10-p4lb.conflist")).unwrap(),
        conflist
    );
    let default = std::fs::read_to_string(node.join("etc/criu/default.conf")).unwrap();
    assert_eq!(default.matches("# BEGIN p4lb").count(), 1, "{default}");
    assert!(default.contains("action-script /usr/libexec/p4lb/p4lb-criu-action"));
    let runc = std::fs::read_to_string(node.join("etc/criu/runc.conf")).unwrap();
    assert!(runc.contains("\ntcp-established\n") && !runc.contains("\naction-script "));

    // Uninstalled as docs/install.md says (the installer from the image, on the node's
    // root; the conflist is the user's to delete): nothing of p4lb is left.
    let out = Command::new("sh")
        .arg(image.join("usr/libexec/p4lb/p4lb-setup"))
        .args([
            "remove",
            "--set",
            "node",
            "--no-systemd",
            "--purge",
            "--root",
        ])
        .arg(&node)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(node.join("etc/cni/net.d/10-p4lb.conflist")).unwrap();
    let files = files_under(&node);
    assert!(files.is_empty(), "left on the node: {files:?}");

    // The CNI plugin on the node reaches the controller in the pod on the same path.
    let conf: Value = serde_json::from_str(&conflist).unwrap();
    let socket = conf["plugins"][0]["controllerSocket"].as_str().unwrap();
    let ds: DaemonSet = object("DaemonSet");
    let spec = ds.spec.unwrap().template.spec.unwrap();
    let shared = spec.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| Path::new(socket).parent() == Some(Path::new(&m.mount_path)))
        .unwrap_or_else(|| panic!("the controller has no mount holding {socket}"));
    let hp = volumes[&shared.name].host_path.as_ref().unwrap();
    assert_eq!(
        hp.path, shared.mount_path,
        "the socket is elsewhere on the node"
    );
}
