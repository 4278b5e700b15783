//! deploy/kubernetes read as a cluster would: the kustomization's resources parsed into
//! typed Kubernetes objects (k8s-openapi) and refused when the type drops a field (a
//! misspelling), and the DaemonSet's containers turned into `podman run` arguments with
//! the same mounts, namespaces and privileges, for the tests that run them in the testbed.

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, PodSpec};
use serde::Deserialize;
use serde_json::Value;

use crate::{Error, Result};

/// deploy/kubernetes of this source tree.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
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

fn bad(msg: String) -> Error {
    Error::Scenario(msg)
}

/// The documents of a YAML file, as JSON values.
fn documents(text: &str, file: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for d in serde_norway::Deserializer::from_str(text) {
        let v = Value::deserialize(d).map_err(|e| bad(format!("{file}: YAML: {e}")))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
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
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value, file: &str) -> Result<T> {
    let obj: T = serde_json::from_value(doc.clone()).map_err(|e| bad(format!("{file}: {e}")))?;
    let back = serde_json::to_value(&obj).map_err(|e| bad(format!("{file}: {e}")))?;
    match difference(doc, &back, "") {
        Some(d) => Err(bad(format!("{file}: {d}"))),
        None => Ok(obj),
    }
}

/// Every object of the kustomization in `dir`, checked, in the order of its resources.
pub fn check_all(dir: &Path) -> Result<Vec<Value>> {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).map_err(|e| bad(format!("{f}: {e}")));
    let k: Kustomization = serde_norway::from_str(&read("kustomization.yaml")?)
        .map_err(|e| bad(format!("kustomization.yaml: {e}")))?;
    let mut all = Vec::new();
    for file in &k.resources {
        for doc in documents(&read(file)?, file)? {
            match doc["kind"].as_str() {
                Some("Namespace") => drop(typed::<Namespace>(&doc, file)?),
                Some("ConfigMap") => drop(typed::<ConfigMap>(&doc, file)?),
                Some("DaemonSet") => drop(typed::<DaemonSet>(&doc, file)?),
                other => {
                    return Err(bad(format!(
                        "{file}: kind {other:?} has no typed check here"
                    )))
                }
            }
            all.push(doc);
        }
    }
    Ok(all)
}

/// The (checked) object of that kind in deploy/kubernetes.
pub fn object<T: serde::de::DeserializeOwned>(kind: &str) -> Result<T> {
    let doc = check_all(&deploy_dir())?
        .into_iter()
        .find(|d| d["kind"] == kind)
        .ok_or_else(|| bad(format!("no {kind} in deploy/kubernetes")))?;
    serde_json::from_value(doc).map_err(|e| bad(format!("{kind}: {e}")))
}

/// The pod template of the p4lb DaemonSet.
pub fn node_pod() -> Result<PodSpec> {
    let ds: DaemonSet = object("DaemonSet")?;
    ds.spec
        .and_then(|s| s.template.spec)
        .ok_or_else(|| bad("the DaemonSet has no pod template".into()))
}

/// `podman run` arguments that give `c` of `pod` what a kubelet would: the pod's host
/// namespaces, the container's user, capabilities, read-only root and no privilege
/// escalation, and its volume mounts (hostPath volumes from the same path, created
/// when missing, as `DirectoryOrCreate` does; the ConfigMap from `config_dir`).
/// Returns the arguments and the host directories to create first.
pub fn podman_args(
    pod: &PodSpec,
    c: &Container,
    config_dir: &str,
) -> Result<(Vec<String>, Vec<String>)> {
    let mut args = Vec::new();
    let mut dirs = Vec::new();
    if pod.host_network == Some(true) {
        args.extend(["--network".into(), "host".into()]);
    }
    if pod.host_pid == Some(true) {
        args.extend(["--pid".into(), "host".into()]);
    }
    if let Some(sc) = &c.security_context {
        if let Some(u) = sc.run_as_user {
            args.push(format!("--user={u}:{}", sc.run_as_group.unwrap_or(u)));
        }
        if sc.read_only_root_filesystem == Some(true) {
            args.push("--read-only".into());
        }
        if sc.allow_privilege_escalation == Some(false) {
            args.extend(["--security-opt".into(), "no-new-privileges".into()]);
        }
        if sc.privileged == Some(true) {
            args.push("--privileged".into());
        }
        if let Some(caps) = &sc.capabilities {
            for d in caps.drop.iter().flatten() {
                args.push(format!("--cap-drop={}", d.to_lowercase()));
            }
            for a in caps.add.iter().flatten() {
                args.push(format!("--cap-add={a}"));
            }
        }
    }
    let volumes = pod.volumes.clone().unwrap_or_default();
    for m in c.volume_mounts.iter().flatten() {
        let v = volumes
            .iter()
            .find(|v| v.name == m.name)
            .ok_or_else(|| bad(format!("{}: volume {} is not declared", c.name, m.name)))?;
        let mut opts = Vec::new();
        if m.read_only == Some(true) {
            opts.push("ro");
        }
        match m.mount_propagation.as_deref() {
            Some("HostToContainer") => opts.push("rslave"),
            Some("Bidirectional") => opts.push("rshared"),
            _ => {}
        }
        let source = if let Some(hp) = &v.host_path {
            if hp.type_.as_deref() == Some("DirectoryOrCreate") {
                dirs.push(hp.path.clone());
            }
            hp.path.clone()
        } else if v.config_map.is_some() {
            config_dir.to_string()
        } else {
            return Err(bad(format!(
                "{}: volume {} is neither hostPath nor ConfigMap",
                c.name, m.name
            )));
        };
        let suffix = if opts.is_empty() {
            String::new()
        } else {
            format!(":{}", opts.join(","))
        };
        args.push(format!("--volume={source}:{}{suffix}", m.mount_path));
    }
    Ok((args, dirs))
}
