//! Names p4lb reads from pods and containers, and the endpoint labels they become.
//!
//! | where | name | meaning |
//! |---|---|---|
//! | endpoint label | [`CHECKPOINT_LABEL`] `p4lb.io/checkpoint` | [`CheckpointMode`] of a leave-running checkpoint |
//! | endpoint label | [`CHECKPOINT_LABEL_SHORT`] `checkpoint` | the same, from the CRI pod annotation `labels.p4lb.io/checkpoint` |
//! | container annotation | [`ANNOTATION_PREFIX`] `p4lb.io/…` | copied to the endpoint's labels by the OCI hook |
//! | CRI pod annotation | [`LABEL_ANNOTATION_PREFIX`] `labels.p4lb.io/<k>` | endpoint label `<k>` (CNI plugin), unless `<k>` is an identity label ([`is_runtime_label`]) |
//! | CRI pod annotation | [`RESTORE_FROM_ANNOTATION`], [`RESTORE_FROM_MAC_ANNOTATION`] | restore hint for the CNI plugin |
//! | endpoint label | [`PODMAN_NAME_LABEL`] `podman.name` | the Podman container's name (netavark plugin); `p4lbctl migrate` finds a container's node by it |
//! | host interface alias | [`HOST_ALIAS_PREFIX`] `p4lb:…` | marks the host end of a veth as p4lb's (CNI and netavark plugins write it; the plugins' DEL/GC and the action script's routes touch only such links) |

use std::str::FromStr;

/// Prefix of the alias the plugins give the host end of each veth they make
/// (`p4lb:<network>:<container id>/<ifname>`): a link without it is not p4lb's.
pub const HOST_ALIAS_PREFIX: &str = "p4lb:";

/// Prefix of p4lb's own container annotations and endpoint labels.
pub const ANNOTATION_PREFIX: &str = "p4lb.io/";

/// Endpoint label that selects the checkpoint mode (set from the container
/// annotation of the same name by the OCI hook, or with `p4lbctl`).
pub const CHECKPOINT_LABEL: &str = "p4lb.io/checkpoint";
/// The same, as the CNI plugin names it when it comes from the CRI pod annotation
/// `labels.p4lb.io/checkpoint`.
pub const CHECKPOINT_LABEL_SHORT: &str = "checkpoint";

/// CRI pod annotations with this prefix become endpoint labels (the rest of the name).
pub const LABEL_ANNOTATION_PREFIX: &str = "labels.p4lb.io/";
/// CRI pod annotation: the old address of a pod that is a restore.
pub const RESTORE_FROM_ANNOTATION: &str = "p4lb.io/restore-from";
/// CRI pod annotation: the old MAC address of a pod that is a restore.
pub const RESTORE_FROM_MAC_ANNOTATION: &str = "p4lb.io/restore-from-mac";

/// Endpoint label: the name of the Podman container the endpoint belongs to, set by the
/// netavark plugin (an identity label, [`is_runtime_label`]).
pub const PODMAN_NAME_LABEL: &str = "podman.name";

/// Label names that carry a workload's identity as the runtime or the configuration
/// set it (`k8s.namespace`, `k8s.pod`, `io.kubernetes.*`, `container.id`,
/// `podman.name`, `name`, `p4lb.switch`): services select by them, so pod annotations
/// ([`LABEL_ANNOTATION_PREFIX`]) may never set them.
pub const RUNTIME_LABEL_PREFIXES: &[&str] = &["k8s.", "io.kubernetes.", "container.", "podman."];
/// Single label names reserved like [`RUNTIME_LABEL_PREFIXES`].
pub const RUNTIME_LABELS: &[&str] = &["name", "p4lb.switch"];

/// Whether `name` is an identity label only the runtime or the configuration may set.
pub fn is_runtime_label(name: &str) -> bool {
    RUNTIME_LABELS.contains(&name) || RUNTIME_LABEL_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// What a checkpoint that leaves the task running (CRI checkpoint, `--leave-running`)
/// means: the value of [`CHECKPOINT_LABEL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointMode {
    /// The container moves: the source stays locked after the dump; the restore
    /// side unlocks.
    Migrate,
    /// A copy is taken; the source is unlocked right after the dump.
    Snapshot,
}

/// A value of [`CHECKPOINT_LABEL`] that is neither `migrate` nor `snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint mode {0:?} is not valid (allowed: migrate, snapshot)")]
pub struct ParseCheckpointModeError(pub String);

impl FromStr for CheckpointMode {
    type Err = ParseCheckpointModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "migrate" => Ok(Self::Migrate),
            "snapshot" => Ok(Self::Snapshot),
            other => Err(ParseCheckpointModeError(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_serialize_lowercase() {
        assert_eq!("migrate".parse(), Ok(CheckpointMode::Migrate));
        assert_eq!("snapshot".parse(), Ok(CheckpointMode::Snapshot));
        let e = "both".parse::<CheckpointMode>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "checkpoint mode \"both\" is not valid (allowed: migrate, snapshot)"
        );
        assert_eq!(
            serde_json::to_string(&CheckpointMode::Migrate).unwrap(),
            "\"migrate\""
        );
    }

    #[test]
    fn identity_labels_are_reserved() {
        for name in [
            "k8s.pod",
            "k8s.namespace",
            "io.kubernetes.pod.name",
            "container.id",
            "podman.name",
            "name",
            "p4lb.switch",
        ] {
            assert!(is_runtime_label(name), "{name}");
        }
        for name in ["app", "checkpoint", "tier", "k8s", "podname"] {
            assert!(!is_runtime_label(name), "{name}");
        }
    }

    #[test]
    fn label_names() {
        assert!(CHECKPOINT_LABEL.starts_with(ANNOTATION_PREFIX));
        assert_eq!(
            LABEL_ANNOTATION_PREFIX.strip_suffix(ANNOTATION_PREFIX),
            Some("labels.")
        );
    }
}
