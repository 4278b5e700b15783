//! [`CriRuntime`]: containerd (2.x) over its CRI socket as the agent's [`Runtime`].
//!
//! A container is named by its **pod**: `p4lbctl migrate web` moves the pod sandbox
//! whose metadata name is `web` in the configured Kubernetes namespace (default
//! `default`), which must hold exactly one container; a pod sandbox ID or a container
//! ID names it too. The restored pod keeps its metadata (name, namespace, UID), its
//! labels and annotations and its container's, so it can be moved back by the same name.
//!
//! - Checkpoint: `CheckpointContainer` into the archive. The pod must carry the
//!   annotation `labels.p4lb.io/checkpoint: migrate` (set when the pod is created): it
//!   makes p4lb's CRIU action script keep the source locked after the dump (containerd
//!   leaves the container running), so no client packet reaches the source again. A pod
//!   without it is refused before anything is checkpointed. The checkpoint answers the
//!   restore spec ([`CriSpec`], JSON): the pod's and the container's metadata, labels and
//!   annotations and the source address.
//! - Restore on the target: `RunPodSandbox` with the source pod's metadata, labels and
//!   annotations plus `p4lb.io/restore-from: <source address>` (the p4lb CNI plugin then
//!   registers the pod as the restore of that migration: locked, with a new address),
//!   `CreateContainer` whose image is the archive, `StartContainer`; the new address from
//!   `PodSandboxStatus`. A failed restore removes the pod it created.
//! - Restore in place (the migration failed after the checkpoint): the checkpointed
//!   container still runs, locked; the same restore from the local archive into a new
//!   pod on this node (the pod's `attempt` one higher, as kubelet does for a new sandbox of
//!   a pod), then the old pod is stopped and removed. If that fails, the error gives the
//!   `crictl` commands that do the same by hand.
//! - Remove: every pod sandbox of that name (stop, then remove).
//!
//! containerd ≥ 2.2 restores from a checkpoint archive only with
//! `enable_experimental_restore_via_create`; 2.1 always does, and pulls the checkpoint's
//! base image by name (it must be pullable from a registry on the target node).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use p4lb_api::labels::{
    CHECKPOINT_LABEL_SHORT, LABEL_ANNOTATION_PREFIX, RESTORE_FROM_ANNOTATION,
    RESTORE_FROM_MAC_ANNOTATION,
};
use serde::{Deserialize, Serialize};

use crate::cri::{self, pb, Cri, CriError};
use crate::runtime::{shell_word, ContainerInfo, Runtime, RuntimeError, MAX_RESTORE_SPEC};

/// How long containerd may take for a checkpoint (seconds, CheckpointContainer's timeout).
pub const CHECKPOINT_TIMEOUT_SECS: i64 = 300;

/// containerd over its CRI socket.
#[derive(Debug, Clone)]
pub struct CriRuntime {
    /// containerd's socket (`/run/containerd/containerd.sock`).
    pub socket: PathBuf,
    /// The Kubernetes namespace of the pods this agent moves by name.
    pub namespace: String,
}

impl Default for CriRuntime {
    fn default() -> Self {
        CriRuntime {
            socket: PathBuf::from("/run/containerd/containerd.sock"),
            namespace: "default".into(),
        }
    }
}

/// The restore spec of a CRI container: what the target needs besides the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriSpec {
    /// The container's address on the source (the restore hint for the CNI plugin).
    pub source_address: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub pod_namespace: String,
    pub pod_attempt: u32,
    pub pod_labels: BTreeMap<String, String>,
    pub pod_annotations: BTreeMap<String, String>,
    pub container_name: String,
    pub container_attempt: u32,
    pub container_labels: BTreeMap<String, String>,
    pub container_annotations: BTreeMap<String, String>,
}

impl CriSpec {
    /// Reads a spec from an archive header (bounded, JSON).
    pub fn parse(spec: &[u8]) -> Result<CriSpec, RuntimeError> {
        let bad = |detail: String| RuntimeError::Output {
            command: "reading the CRI restore spec".into(),
            detail,
        };
        if spec.len() > MAX_RESTORE_SPEC {
            return Err(bad(format!(
                "{} bytes, over the limit of {MAX_RESTORE_SPEC}",
                spec.len()
            )));
        }
        let s: CriSpec = serde_json::from_slice(spec).map_err(|e| bad(e.to_string()))?;
        if !crate::config::valid_name(&s.pod_name) || !crate::config::valid_name(&s.container_name)
        {
            return Err(bad(format!(
                "invalid pod or container name {:?} / {:?}",
                s.pod_name, s.container_name
            )));
        }
        if s.source_address.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(bad(format!(
                "source address {:?} is not IPv4",
                s.source_address
            )));
        }
        Ok(s)
    }

    /// The spec as JSON, refused over [`MAX_RESTORE_SPEC`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, RuntimeError> {
        let b = serde_json::to_vec(self).map_err(|e| RuntimeError::Output {
            command: "writing the CRI restore spec".into(),
            detail: e.to_string(),
        })?;
        if b.len() > MAX_RESTORE_SPEC {
            return Err(RuntimeError::Output {
                command: "writing the CRI restore spec".into(),
                detail: format!(
                    "pod {}: its labels and annotations take {} bytes, over the limit of \
                     {MAX_RESTORE_SPEC}",
                    self.pod_name,
                    b.len()
                ),
            });
        }
        Ok(b)
    }

    /// The pod sandbox config of the restored pod: the source pod's metadata, labels and
    /// annotations, with the restore hint for p4lb's CNI plugin (`attempt` as given).
    pub fn pod_config(&self, attempt: u32) -> pb::PodSandboxConfig {
        let mut c = cri::pod_config_in(&self.pod_namespace, &self.pod_name, &self.pod_uid);
        if let Some(m) = c.metadata.as_mut() {
            m.attempt = attempt;
        }
        c.labels = to_map(&self.pod_labels);
        let mut a = to_map(&self.pod_annotations);
        a.remove(RESTORE_FROM_MAC_ANNOTATION);
        a.insert(
            RESTORE_FROM_ANNOTATION.to_string(),
            self.source_address.clone(),
        );
        c.annotations = a;
        c
    }

    /// The container config of the restored container (`attempt` as given): its image
    /// is the archive.
    pub fn container_config(&self, archive: &Path, attempt: u32) -> pb::ContainerConfig {
        pb::ContainerConfig {
            metadata: Some(pb::ContainerMetadata {
                name: self.container_name.clone(),
                attempt,
            }),
            image: Some(pb::ImageSpec {
                image: archive.display().to_string(),
                annotations: Default::default(),
            }),
            labels: to_map(&self.container_labels),
            annotations: to_map(&self.container_annotations),
            log_path: format!("{}/0.log", self.container_name),
            linux: cri::container_linux(),
            ..Default::default()
        }
    }
}

fn to_map(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn to_btree(m: &HashMap<String, String>) -> BTreeMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Does a pod with these annotations ask for a migrating checkpoint?
pub fn annotated_for_migration(annotations: &HashMap<String, String>) -> bool {
    annotations
        .get(&format!(
            "{LABEL_ANNOTATION_PREFIX}{CHECKPOINT_LABEL_SHORT}"
        ))
        .is_some_and(|v| v == "migrate")
}

/// The pod sandbox `name` means among `pods`: a READY pod of that metadata name in
/// `namespace`, or the pod of that sandbox ID. None: no such pod; an error: more than
/// one.
pub fn select_pod<'p>(
    pods: &'p [pb::PodSandbox],
    namespace: &str,
    name: &str,
) -> Result<Option<&'p pb::PodSandbox>, String> {
    let ready = |p: &&pb::PodSandbox| p.state == pb::PodSandboxState::SandboxReady as i32;
    let by_name: Vec<&pb::PodSandbox> = pods
        .iter()
        .filter(ready)
        .filter(|p| {
            p.metadata
                .as_ref()
                .is_some_and(|m| m.name == name && m.namespace == namespace)
        })
        .collect();
    match by_name.as_slice() {
        [p] => return Ok(Some(p)),
        [] => {}
        many => {
            return Err(format!(
                "{} ready pods are named {name} in namespace {namespace}",
                many.len()
            ))
        }
    }
    Ok(pods.iter().filter(ready).find(|p| p.id == name))
}

/// The one container of a pod that is not exited (the one to move).
pub fn select_container<'c>(
    pod: &str,
    containers: &'c [pb::Container],
) -> Result<&'c pb::Container, String> {
    let live: Vec<&pb::Container> = containers
        .iter()
        .filter(|c| c.state != pb::ContainerState::ContainerExited as i32)
        .collect();
    match live.as_slice() {
        [c] => Ok(c),
        [] => Err(format!("pod {pod} has no container that is not exited")),
        many => Err(format!(
            "pod {pod} has {} containers; p4lb moves pods of one container",
            many.len()
        )),
    }
}

fn state_word(state: i32) -> &'static str {
    match pb::ContainerState::try_from(state) {
        Ok(pb::ContainerState::ContainerCreated) => "created",
        Ok(pb::ContainerState::ContainerRunning) => "running",
        Ok(pb::ContainerState::ContainerExited) => "exited",
        _ => "unknown",
    }
}

/// A found pod and its container.
struct Found {
    pod: pb::PodSandbox,
    container: pb::Container,
    address: String,
}

impl CriRuntime {
    fn connect(&self) -> Result<Cri, RuntimeError> {
        Cri::connect(&self.socket).map_err(|e| self.err("connect", e))
    }

    fn err(&self, what: &str, e: CriError) -> RuntimeError {
        RuntimeError::Command {
            command: format!("CRI {what} on {}", self.socket.display()),
            output: e.to_string(),
        }
    }

    fn output(&self, what: &str, detail: String) -> RuntimeError {
        RuntimeError::Output {
            command: format!("CRI {what} on {}", self.socket.display()),
            detail,
        }
    }

    fn find(&self, c: &mut Cri, name: &str) -> Result<Found, RuntimeError> {
        let pods = c
            .list_pod_sandboxes()
            .map_err(|e| self.err("ListPodSandbox", e))?;
        let pod = match select_pod(&pods, &self.namespace, name) {
            Ok(Some(p)) => p.clone(),
            Ok(None) => return self.find_container(c, &pods, name),
            Err(e) => return Err(self.output("ListPodSandbox", e)),
        };
        let containers = c
            .list_containers(&pod.id)
            .map_err(|e| self.err("ListContainers", e))?;
        let container = select_container(name, &containers)
            .map_err(|e| self.output("ListContainers", e))?
            .clone();
        let address = self.address(c, &pod.id)?;
        Ok(Found {
            pod,
            container,
            address,
        })
    }

    /// `id` as a container ID: its pod among `pods`.
    fn find_container(
        &self,
        c: &mut Cri,
        pods: &[pb::PodSandbox],
        id: &str,
    ) -> Result<Found, RuntimeError> {
        let st = match c.container_status(id) {
            Ok(s) => s,
            Err(e) if e.is_not_found() => return Err(RuntimeError::NotFound(id.to_string())),
            Err(e) => return Err(self.err("ContainerStatus", e)),
        };
        for pod in pods
            .iter()
            .filter(|p| p.state == pb::PodSandboxState::SandboxReady as i32)
        {
            let containers = c
                .list_containers(&pod.id)
                .map_err(|e| self.err("ListContainers", e))?;
            if let Some(container) = containers.into_iter().find(|x| x.id == st.id) {
                let address = self.address(c, &pod.id)?;
                return Ok(Found {
                    pod: pod.clone(),
                    container,
                    address,
                });
            }
        }
        Err(RuntimeError::NotFound(id.to_string()))
    }

    fn address(&self, c: &mut Cri, pod: &str) -> Result<String, RuntimeError> {
        Ok(c.pod_sandbox_status(pod)
            .map_err(|e| self.err("PodSandboxStatus", e))?
            .network
            .map(|n| n.ip)
            .unwrap_or_default())
    }

    fn info(f: &Found) -> ContainerInfo {
        ContainerInfo {
            id: f.container.id.clone(),
            name: f
                .pod
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            state: state_word(f.container.state).to_string(),
            address: f.address.clone(),
        }
    }

    /// Stops and removes pod sandbox `id` (its containers go with it).
    fn remove_pod(&self, c: &mut Cri, id: &str) -> Result<(), RuntimeError> {
        c.stop_pod_sandbox(id)
            .map_err(|e| self.err("StopPodSandbox", e))?;
        c.remove_pod_sandbox(id)
            .map_err(|e| self.err("RemovePodSandbox", e))
    }

    /// A new pod from `spec`, its container restored from `archive`; `bump` is added to
    /// the pod's and the container's `attempt` (containerd reserves the names
    /// `POD_NAMESPACE_UID_ATTEMPT` and `CONTAINER_POD_NAMESPACE_UID_ATTEMPT` while the
    /// old ones exist: a restore beside the checkpointed source needs new ones).
    fn restore(
        &self,
        c: &mut Cri,
        archive: &Path,
        spec: &CriSpec,
        bump: u32,
    ) -> Result<ContainerInfo, RuntimeError> {
        let pod_cfg = spec.pod_config(spec.pod_attempt.saturating_add(bump));
        let pod = c
            .run_pod_sandbox(pod_cfg.clone())
            .map_err(|e| self.err("RunPodSandbox", e))?;
        let r = (|| {
            let cfg = spec.container_config(archive, spec.container_attempt.saturating_add(bump));
            let id = c
                .create_container(&pod, cfg, pod_cfg.clone())
                .map_err(|e| self.err("CreateContainer (restore from the archive)", e))?;
            c.start_container(&id)
                .map_err(|e| self.err("StartContainer (CRIU restore)", e))?;
            let address = self.address(c, &pod)?;
            Ok(ContainerInfo {
                id,
                name: spec.pod_name.clone(),
                state: "running".into(),
                address,
            })
        })();
        if r.is_err() {
            if let Err(e) = self.remove_pod(c, &pod) {
                tracing::warn!(%pod, "removing the pod of a failed restore: {e}");
            }
        }
        r
    }

    /// `crictl` against this runtime's socket.
    fn crictl(&self) -> String {
        format!(
            "crictl --runtime-endpoint {}",
            shell_word(&format!("unix://{}", self.socket.display()))
        )
    }
}

/// `crictl`'s JSON of a pod sandbox config (its field names are the CRI's, snake_case).
fn crictl_pod_json(c: &pb::PodSandboxConfig) -> serde_json::Value {
    let m = c.metadata.clone().unwrap_or_default();
    serde_json::json!({
        "metadata": {"name": m.name, "uid": m.uid, "namespace": m.namespace, "attempt": m.attempt},
        "hostname": c.hostname,
        "log_directory": c.log_directory,
        "labels": to_btree(&c.labels),
        "annotations": to_btree(&c.annotations),
        "linux": {"security_context": {"namespace_options": {"network": 0, "pid": 1, "ipc": 0}}},
    })
}

/// `crictl`'s JSON of a container config.
fn crictl_container_json(c: &pb::ContainerConfig) -> serde_json::Value {
    let m = c.metadata.clone().unwrap_or_default();
    serde_json::json!({
        "metadata": {"name": m.name, "attempt": m.attempt},
        "image": {"image": c.image.clone().unwrap_or_default().image},
        "labels": to_btree(&c.labels),
        "annotations": to_btree(&c.annotations),
        "log_path": c.log_path,
        "linux": {"security_context": {"namespace_options": {"network": 0, "pid": 1, "ipc": 0}}},
    })
}

impl Runtime for CriRuntime {
    fn name(&self) -> &str {
        "cri"
    }

    fn inspect(&self, container: &str) -> Result<ContainerInfo, RuntimeError> {
        let mut c = self.connect()?;
        let f = self.find(&mut c, container)?;
        Ok(Self::info(&f))
    }

    fn checkpoint(&self, container: &str, archive: &Path) -> Result<Vec<u8>, RuntimeError> {
        let mut c = self.connect()?;
        let f = self.find(&mut c, container)?;
        let meta = f.pod.metadata.clone().unwrap_or_default();
        if !annotated_for_migration(&f.pod.annotations) {
            return Err(self.output(
                "CheckpointContainer",
                format!(
                    "pod {} lacks the annotation {LABEL_ANNOTATION_PREFIX}{CHECKPOINT_LABEL_SHORT}: \
                     migrate (set it when the pod is created): without it containerd's \
                     checkpoint leaves the source serving its clients; nothing was checkpointed",
                    meta.name
                ),
            ));
        }
        let st = c
            .container_status(&f.container.id)
            .map_err(|e| self.err("ContainerStatus", e))?;
        let spec = CriSpec {
            source_address: f.address.clone(),
            pod_name: meta.name.clone(),
            pod_uid: meta.uid.clone(),
            pod_namespace: meta.namespace.clone(),
            pod_attempt: meta.attempt,
            pod_labels: to_btree(&f.pod.labels),
            pod_annotations: to_btree(&f.pod.annotations),
            container_name: f
                .container
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            container_attempt: f
                .container
                .metadata
                .as_ref()
                .map(|m| m.attempt)
                .unwrap_or_default(),
            container_labels: to_btree(&st.labels),
            container_annotations: to_btree(&st.annotations),
        };
        let bytes = spec.to_bytes()?;
        CriSpec::parse(&bytes)?;
        c.checkpoint_container(
            &f.container.id,
            &archive.display().to_string(),
            CHECKPOINT_TIMEOUT_SECS,
        )
        .map_err(|e| self.err("CheckpointContainer", e))?;
        Ok(bytes)
    }

    fn restore_archive(&self, archive: &Path, spec: &[u8]) -> Result<ContainerInfo, RuntimeError> {
        let spec = CriSpec::parse(spec)?;
        let mut c = self.connect()?;
        self.restore(&mut c, archive, &spec, 0)
    }

    fn restore_in_place(
        &self,
        container: &str,
        archive: &Path,
        spec: &[u8],
    ) -> Result<(), RuntimeError> {
        let spec = CriSpec::parse(spec)?;
        let mut c = self.connect()?;
        // The checkpointed pod, whether its container still runs (containerd leaves it
        // running) or has stopped since: it goes once the new one runs.
        let pods = c
            .list_pod_sandboxes()
            .map_err(|e| self.err("ListPodSandbox", e))?;
        let old = select_pod(&pods, &self.namespace, container)
            .map_err(|e| self.output("ListPodSandbox", e))?
            .map(|p| p.id.clone());
        self.restore(&mut c, archive, &spec, 1)?;
        if let Some(old) = old {
            self.remove_pod(&mut c, &old)?;
        }
        Ok(())
    }

    fn remove(&self, container: &str) -> Result<(), RuntimeError> {
        let mut c = self.connect()?;
        let pods = c
            .list_pod_sandboxes()
            .map_err(|e| self.err("ListPodSandbox", e))?;
        let mine: Vec<String> = pods
            .iter()
            .filter(|p| {
                p.id == container
                    || p.metadata
                        .as_ref()
                        .is_some_and(|m| m.name == container && m.namespace == self.namespace)
            })
            .map(|p| p.id.clone())
            .collect();
        if mine.is_empty() {
            return Err(RuntimeError::NotFound(container.to_string()));
        }
        for id in mine {
            self.remove_pod(&mut c, &id)?;
        }
        Ok(())
    }

    fn restore_in_place_command(&self, container: &str, archive: &Path, spec: &[u8]) -> String {
        let Ok(spec) = CriSpec::parse(spec) else {
            return format!(
                "(no restore spec) restore pod {container} from {} with crictl runp/create/start",
                archive.display()
            );
        };
        let pod = spec.pod_config(spec.pod_attempt.saturating_add(1));
        let ctr = spec.container_config(archive, spec.container_attempt.saturating_add(1));
        let (p, cj) = (crictl_pod_json(&pod), crictl_container_json(&ctr));
        let crictl = self.crictl();
        format!(
            "O=$({crictl} pods -q --state ready --name '^{name}$' --namespace {ns}); \
             printf '%s' {pj} > /tmp/p4lb-pod.json; printf '%s' {cjq} > /tmp/p4lb-ctr.json; \
             P=$({crictl} runp /tmp/p4lb-pod.json) && \
             C=$({crictl} create \"$P\" /tmp/p4lb-ctr.json /tmp/p4lb-pod.json) && \
             {crictl} start \"$C\" && {{ [ -z \"$O\" ] || {{ {crictl} stopp $O && {crictl} rmp $O; }}; }}",
            name = spec.pod_name,
            ns = shell_word(&spec.pod_namespace),
            pj = shell_word(&p.to_string()),
            cjq = shell_word(&cj.to_string()),
        )
    }

    fn list_command(&self) -> String {
        format!("{} ps", self.crictl())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(id: &str, name: &str, ns: &str, ready: bool) -> pb::PodSandbox {
        pb::PodSandbox {
            id: id.into(),
            metadata: Some(pb::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: ns.into(),
                attempt: 0,
            }),
            state: if ready {
                pb::PodSandboxState::SandboxReady as i32
            } else {
                pb::PodSandboxState::SandboxNotready as i32
            },
            ..Default::default()
        }
    }

    fn spec() -> CriSpec {
        CriSpec {
            source_address: "10.88.0.5".into(),
            pod_name: "web".into(),
            pod_uid: "uid-web".into(),
            pod_namespace: "shop".into(),
            pod_attempt: 2,
            pod_labels: [("app".to_string(), "web".to_string())].into(),
            pod_annotations: [
                (
                    "labels.p4lb.io/checkpoint".to_string(),
                    "migrate".to_string(),
                ),
                (RESTORE_FROM_ANNOTATION.to_string(), "10.88.0.2".to_string()),
                (
                    RESTORE_FROM_MAC_ANNOTATION.to_string(),
                    "02:00:00:00:00:01".to_string(),
                ),
            ]
            .into(),
            container_name: "server".into(),
            container_attempt: 0,
            container_labels: Default::default(),
            container_annotations: [("a".to_string(), "b".to_string())].into(),
        }
    }

    #[test]
    fn a_pod_is_found_by_its_name_in_the_namespace_or_by_its_id() {
        let pods = [
            pod("p1", "web", "default", false),
            pod("p2", "web", "default", true),
            pod("p3", "web", "other", true),
            pod("p4", "db", "default", true),
        ];
        let p = select_pod(&pods, "default", "web").unwrap().unwrap();
        assert_eq!(p.id, "p2", "the ready one of that namespace");
        assert_eq!(select_pod(&pods, "other", "web").unwrap().unwrap().id, "p3");
        assert_eq!(
            select_pod(&pods, "default", "p4").unwrap().unwrap().id,
            "p4"
        );
        assert!(
            select_pod(&pods, "default", "p1").unwrap().is_none(),
            "not ready"
        );
        assert!(select_pod(&pods, "default", "cache").unwrap().is_none());
        let twice = [
            pod("a", "web", "default", true),
            pod("b", "web", "default", true),
        ];
        let e = select_pod(&twice, "default", "web").unwrap_err();
        assert!(e.contains("2 ready pods"), "{e}");
    }

    #[test]
    fn a_pod_of_one_live_container_is_moved_others_are_refused() {
        let c = |id: &str, state: pb::ContainerState| pb::Container {
            id: id.into(),
            state: state as i32,
            ..Default::default()
        };
        let one = [
            c("old", pb::ContainerState::ContainerExited),
            c("new", pb::ContainerState::ContainerRunning),
        ];
        assert_eq!(select_container("web", &one).unwrap().id, "new");
        let two = [
            c("a", pb::ContainerState::ContainerRunning),
            c("b", pb::ContainerState::ContainerRunning),
        ];
        let e = select_container("web", &two).unwrap_err();
        assert!(e.contains("2 containers"), "{e}");
        assert!(select_container("web", &[]).is_err());
    }

    #[test]
    fn only_a_pod_annotated_for_migration_is_checkpointed() {
        let mut a = HashMap::new();
        assert!(!annotated_for_migration(&a));
        a.insert(
            "labels.p4lb.io/checkpoint".to_string(),
            "snapshot".to_string(),
        );
        assert!(!annotated_for_migration(&a));
        a.insert(
            "labels.p4lb.io/checkpoint".to_string(),
            "migrate".to_string(),
        );
        assert!(annotated_for_migration(&a));
    }

    #[test]
    fn the_restored_pod_keeps_the_source_pods_metadata_and_carries_the_restore_hint() {
        let s = spec();
        let bytes = s.to_bytes().unwrap();
        assert_eq!(CriSpec::parse(&bytes).unwrap(), s);
        let p = s.pod_config(3);
        let m = p.metadata.clone().unwrap();
        assert_eq!(
            (
                m.name.as_str(),
                m.uid.as_str(),
                m.namespace.as_str(),
                m.attempt
            ),
            ("web", "uid-web", "shop", 3)
        );
        assert_eq!(p.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            p.annotations
                .get(RESTORE_FROM_ANNOTATION)
                .map(String::as_str),
            Some("10.88.0.5"),
            "the hint names this move's source, not an earlier one"
        );
        assert!(!p.annotations.contains_key(RESTORE_FROM_MAC_ANNOTATION));
        assert_eq!(
            p.annotations
                .get("labels.p4lb.io/checkpoint")
                .map(String::as_str),
            Some("migrate"),
            "the restored pod can be moved on"
        );
        let c = s.container_config(Path::new("/w/in.tar"), 1);
        assert_eq!(c.image.unwrap().image, "/w/in.tar");
        let m = c.metadata.unwrap();
        assert_eq!((m.name.as_str(), m.attempt), ("server", 1));
        assert_eq!(c.annotations.get("a").map(String::as_str), Some("b"));
    }

    #[test]
    fn restore_specs_are_bounded_and_checked() {
        let mut s = spec();
        s.pod_annotations
            .insert("big".into(), "x".repeat(MAX_RESTORE_SPEC));
        let e = s.to_bytes().unwrap_err().to_string();
        assert!(e.contains("over the limit"), "{e}");
        assert!(CriSpec::parse(&vec![b' '; MAX_RESTORE_SPEC + 1]).is_err());
        assert!(CriSpec::parse(b"{").is_err());
        let mut s = spec();
        s.pod_name = "../x".into();
        let e = CriSpec::parse(&serde_json::to_vec(&s).unwrap()).unwrap_err();
        assert!(e.to_string().contains("invalid pod"), "{e}");
        let mut s = spec();
        s.source_address = "nowhere".into();
        assert!(CriSpec::parse(&serde_json::to_vec(&s).unwrap()).is_err());
    }

    #[test]
    fn the_manual_restore_is_crictl_against_the_nodes_socket() {
        let r = CriRuntime {
            socket: "/run/containerd-b/containerd.sock".into(),
            namespace: "shop".into(),
        };
        let cmd =
            r.restore_in_place_command("web", Path::new("/w/out.tar"), &spec().to_bytes().unwrap());
        assert!(
            cmd.contains("crictl --runtime-endpoint unix:///run/containerd-b/containerd.sock runp"),
            "{cmd}"
        );
        assert!(
            cmd.contains("\"image\":{\"image\":\"/w/out.tar\"}"),
            "{cmd}"
        );
        assert!(cmd.contains("\"attempt\":3"), "{cmd}");
        assert!(
            cmd.contains("\"p4lb.io/restore-from\":\"10.88.0.5\""),
            "{cmd}"
        );
        assert!(r
            .restore_in_place_command("web", Path::new("/a"), b"")
            .contains("/a"));
    }
}
