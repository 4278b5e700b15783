//! deploy/kubernetes: every manifest is a typed Kubernetes object (k8s-openapi) with no
//! field the API does not know (a misspelled field fails), and the DaemonSet's node
//! installer, run with exactly the hostPath mounts the manifest declares, puts what
//! packaging/files.list says a node needs onto the node and nothing outside those mounts.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace};
use serde::Deserialize;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn deploy() -> PathBuf {
    repo().join("deploy/kubernetes")
}

/// kustomization.yaml, with the fields these manifests use (anything else is refused).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct Kustomization {
    api_version: String,
    kind: String,
    namespace: String,
    resources: Vec<String>,
    #[serde(default)]
    images: Vec<Value>,
    #[serde(default)]
    labels: Vec<Value>,
}

/// The documents of a YAML file, as JSON values.
fn documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// The first path at which `want` (what the file says) and `got` (what the typed object
/// kept of it) differ.
fn difference(want: &Value, got: &Value, at: &str) -> Option<String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, v) in w {
                let here = format!("{at}.{k}");
                match g.get(k) {
                    None => return Some(format!("{here}: not a field of the API object")),
                    Some(gv) => {
                        if let Some(d) = difference(v, gv, &here) {
                            return Some(d);
                        }
                    }
                }
            }
            g.keys()
                .find(|k| !w.contains_key(*k))
                .map(|k| format!("{at}.{k}: added by the typed object"))
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => w
            .iter()
            .zip(g)
            .enumerate()
            .find_map(|(i, (a, b))| difference(a, b, &format!("{at}[{i}]"))),
        _ if want == got => None,
        _ => Some(format!("{at}: {want} became {got}")),
    }
}

/// Parses one manifest into its typed object and refuses whatever the type drops.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(
    doc: &Value,
    file: &str,
) -> Result<T, String> {
    let obj: T = serde_json::from_value(doc.clone()).map_err(|e| format!("{file}: {e}"))?;
    let back = serde_json::to_value(&obj).map_err(|e| format!("{file}: {e}"))?;
    match difference(doc, &back, "") {
        Some(d) => Err(format!("{file}: {d}")),
        None => Ok(obj),
    }
}

/// Every object of the kustomization, checked.
fn check_all(dir: &Path) -> Result<Vec<Value>, String> {
    let k: Kustomization = serde_norway::from_str(
        &std::fs::read_to_string(dir.join("kustomization.yaml")).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("kustomization.yaml: {e}"))?;
    let mut all = Vec::new();
    for file in &k.resources {
        let text = std::fs::read_to_string(dir.join(file)).map_err(|e| format!("{file}: {e}"))?;
        for doc in documents(&text) {
            match doc["kind"].as_str() {
                Some("Namespace") => drop(typed::<Namespace>(&doc, file)?),
                Some("ConfigMap") => drop(typed::<ConfigMap>(&doc, file)?),
                Some("DaemonSet") => drop(typed::<DaemonSet>(&doc, file)?),
                other => return Err(format!("{file}: kind {other:?} has no typed check here")),
            }
            all.push(doc);
        }
    }
    Ok(all)
}

fn object<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    let doc = check_all(&deploy())
        .unwrap()
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes"));
    serde_json::from_value(doc).unwrap()
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
        let e = check_all(dir.path()).expect_err(wrong);
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
