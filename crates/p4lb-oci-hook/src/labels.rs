//! Endpoint labels derived from container annotations.
//!
//! | annotation | label |
//! |---|---|
//! | `io.kubernetes.pod.namespace`, `io.kubernetes.cri.sandbox-namespace` | `k8s.namespace` |
//! | `io.kubernetes.pod.name`, `io.kubernetes.cri.sandbox-name` | `k8s.pod` |
//! | `io.kubernetes.container.name`, `io.kubernetes.cri.container-name` | `k8s.container` |
//! | `io.podman.annotations.name`, `io.containers.name` (if set) | `podman.name` |
//! | `p4lb.io/<x>` | `p4lb.io/<x>` (copied; `p4lb.io/checkpoint` must be `migrate` or `snapshot`) |
//!
//! plus `container.id` = the runtime's container id.

use std::collections::{BTreeMap, HashMap};

use p4lb_api::labels::{CheckpointMode, ANNOTATION_PREFIX, CHECKPOINT_LABEL};

const MAP: &[(&str, &str)] = &[
    ("io.kubernetes.pod.namespace", "k8s.namespace"),
    ("io.kubernetes.cri.sandbox-namespace", "k8s.namespace"),
    ("io.kubernetes.pod.name", "k8s.pod"),
    ("io.kubernetes.cri.sandbox-name", "k8s.pod"),
    ("io.kubernetes.container.name", "k8s.container"),
    ("io.kubernetes.cri.container-name", "k8s.container"),
    ("io.podman.annotations.name", "podman.name"),
    ("io.containers.name", "podman.name"),
];

/// Labels and the annotations that were refused (with why).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Labels {
    pub labels: BTreeMap<String, String>,
    pub refused: Vec<String>,
}

fn valid_label(k: &str, v: &str) -> bool {
    !k.is_empty() && k.len() <= 253 && v.len() <= 1024 && !k.contains(['=', ','])
}

pub fn from_annotations(container_id: &str, ann: &HashMap<String, String>) -> Labels {
    let mut out = Labels::default();
    out.labels
        .insert("container.id".to_owned(), container_id.to_owned());
    for (a, l) in MAP {
        if let Some(v) = ann.get(*a).filter(|v| !v.is_empty()) {
            if valid_label(l, v) {
                out.labels.insert((*l).to_owned(), v.clone());
            } else {
                out.refused.push(format!("{a}: value too long"));
            }
        }
    }
    let mut keys: Vec<&String> = ann
        .keys()
        .filter(|k| k.starts_with(ANNOTATION_PREFIX))
        .collect();
    keys.sort();
    for k in keys {
        let v = &ann[k];
        if k == CHECKPOINT_LABEL && v.parse::<CheckpointMode>().is_err() {
            out.refused
                .push(format!("{k}={v:?}: must be \"migrate\" or \"snapshot\""));
            continue;
        }
        if !valid_label(k, v) {
            out.refused.push(format!("{k}: not a valid label"));
            continue;
        }
        out.labels.insert(k.clone(), v.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kubernetes_annotations() {
        let l = from_annotations(
            "abc",
            &ann(&[
                ("io.kubernetes.cri.sandbox-namespace", "prod"),
                ("io.kubernetes.cri.sandbox-name", "web-0"),
                ("io.kubernetes.cri.container-name", "app"),
                ("unrelated", "x"),
            ]),
        );
        assert!(l.refused.is_empty());
        assert_eq!(l.labels["k8s.namespace"], "prod");
        assert_eq!(l.labels["k8s.pod"], "web-0");
        assert_eq!(l.labels["k8s.container"], "app");
        assert_eq!(l.labels["container.id"], "abc");
        assert!(!l.labels.contains_key("unrelated"));
    }

    #[test]
    fn p4lb_annotations_are_copied_and_checked() {
        let l = from_annotations(
            "c",
            &ann(&[("p4lb.io/checkpoint", "migrate"), ("p4lb.io/tier", "gold")]),
        );
        assert_eq!(l.labels["p4lb.io/checkpoint"], "migrate");
        assert_eq!(l.labels["p4lb.io/tier"], "gold");
        let l = from_annotations("c", &ann(&[("p4lb.io/checkpoint", "sometimes")]));
        assert!(!l.labels.contains_key("p4lb.io/checkpoint"));
        assert_eq!(l.refused.len(), 1);
        let l = from_annotations("c", &ann(&[("p4lb.io/a=b", "x")]));
        assert_eq!(l.refused.len(), 1);
    }
}
