//! What happens at restore: telling a restore from a fresh start.
//!
//! A restored container must not see a single client packet before CRIU has rebuilt
//! its sockets (the kernel would answer with RST), so its endpoint is registered
//! *locked* and the controller unlocks it when the restore is done. The runtime tells
//! us it is restoring in one of these ways, checked in order:
//!
//! 1. Podman (CNI mode) passes the container's previous address in `CNI_ARGS`:
//!    `IP=<old ip>;MAC=<old mac>`. Both keys present means restore; `IP=` alone is a
//!    static address request (`podman run --ip`) and is left to IPAM.
//! 2. `CNI_ARGS` `P4LB_RESTORE_FROM=<old ip>` (and optionally `P4LB_RESTORE_FROM_MAC`),
//!    for runtimes that let the user set CNI_ARGS.
//! 3. CRI (containerd, CRI-O): the pod annotation `p4lb.io/restore-from: <old ip>`
//!    (optionally `p4lb.io/restore-from-mac`), which reaches the plugin as
//!    `runtimeConfig["io.kubernetes.cri.pod-annotations"]` when the plugin's
//!    configuration declares the capability `"io.kubernetes.cri.pod-annotations": true`.
//!
//! A pod author writes annotations, so an annotation hint is a restore only when the
//! controller knows it ([`unmatched_annotation`]): an active migration whose source had
//! that address is checkpointed (or restoring) and its source belongs to the same
//! workload (the same Kubernetes namespace as the new pod). Otherwise the hint is
//! ignored with a warning and the pod starts fresh: an annotation can name a
//! migration but never choose whose backend moves.
//!
//! A `podman run --ip X --mac-address Y` passes the same `IP=`/`MAC=` as a restore, so
//! a Podman hint too is a restore only for a checkpointed (or restoring) migration of
//! that address ([`restore_migration`], checked before IPAM so a fresh start gets the
//! address it asked for). Every hint the plugin sends is checked again by the
//! controller, which decides: with no such migration it registers a fresh start and its
//! reply carries no `restore_of_ip` (`cmd/add.rs` then logs it and drops the old address).

use std::net::Ipv4Addr;

use p4lb_api::api::{Endpoint, Migration};
use p4lb_api::labels::{RESTORE_FROM_ANNOTATION, RESTORE_FROM_MAC_ANNOTATION};
use serde_json::{Map, Value};

use crate::cni::args::CniArgs;
use crate::cni::error::{CniError, Code};
use crate::net::link::parse_mac;

pub const ANNOTATIONS_KEY: &str = "io.kubernetes.cri.pod-annotations";

/// Where the restore hint came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HintSource {
    PodmanArgs,
    P4lbArgs,
    PodAnnotation,
    /// No hint from the runtime: the controller's checkpointed migration of the same
    /// container (the netavark plugin's restores).
    Migration,
}

/// A restore: the container's address before the checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreHint {
    pub old_ip: Ipv4Addr,
    pub old_mac: Option<String>,
    pub source: HintSource,
}

fn bad(what: &str, value: &str, code: Code) -> CniError {
    CniError::new(code, format!("invalid restore hint {what}")).details(format!("{what}={value:?}"))
}

fn hint(
    ip: &str,
    mac: Option<&str>,
    source: HintSource,
    names: (&str, &str),
    code: Code,
) -> Result<RestoreHint, CniError> {
    let old_ip: Ipv4Addr = ip.parse().map_err(|_| bad(names.0, ip, code))?;
    let old_mac = match mac.filter(|m| !m.is_empty()) {
        None => None,
        Some(m) => {
            let parsed = parse_mac(m).ok_or_else(|| bad(names.1, m, code))?;
            Some(crate::net::link::mac_to_string(&parsed))
        }
    };
    Ok(RestoreHint {
        old_ip,
        old_mac,
        source,
    })
}

/// The migration a restore of `hint.old_ip` belongs to, as the controller registers
/// it (`restore_migration` in p4lb-controller's endpoints.rs): an active one of that
/// source address in state `checkpointed` or `restoring`; otherwise why there is none.
pub fn restore_migration<'a>(
    hint: &RestoreHint,
    migrations: &'a [Migration],
) -> Result<&'a Migration, String> {
    let old = hint.old_ip.to_string();
    migrations
        .iter()
        .rev()
        .find(|m| m.source_ip == old && matches!(m.state.as_str(), "checkpointed" | "restoring"))
        .ok_or_else(|| format!("no checkpointed migration of {old} is known"))
}

/// Why an annotation hint is not a restore the controller knows of (None: it is one).
/// It is one when an active migration of `hint.old_ip` is `checkpointed` or `restoring`
/// and its source endpoint's `k8s.namespace` label equals `pod_namespace` (both absent
/// counts as equal).
pub fn unmatched_annotation(
    hint: &RestoreHint,
    pod_namespace: Option<&str>,
    migrations: &[Migration],
    endpoints: &[Endpoint],
) -> Option<String> {
    let old = hint.old_ip.to_string();
    let m = match restore_migration(hint, migrations) {
        Ok(m) => m,
        Err(why) => return Some(why),
    };
    let Some(source) = endpoints.iter().find(|e| e.key == m.source_key) else {
        return Some(format!(
            "the source {} of migration {} is no longer registered",
            m.source_key, m.id
        ));
    };
    let source_ns = source.labels.get(K8S_NAMESPACE_LABEL).map(String::as_str);
    if source_ns != pod_namespace {
        return Some(format!(
            "migration {} of {old} belongs to another workload (namespace {}, this pod's {})",
            m.id,
            source_ns.unwrap_or("none"),
            pod_namespace.unwrap_or("none")
        ));
    }
    None
}

/// The label naming a pod's Kubernetes namespace (from `K8S_POD_NAMESPACE`).
pub const K8S_NAMESPACE_LABEL: &str = "k8s.namespace";

/// The pod annotations the runtime passed, if any.
pub fn pod_annotations(runtime_config: &Map<String, Value>) -> Option<&Map<String, Value>> {
    runtime_config.get(ANNOTATIONS_KEY)?.as_object()
}

/// Finds a restore hint. Malformed hints are errors (4 for CNI_ARGS, 7 for
/// annotations), never silently a fresh start.
pub fn detect(
    args: &CniArgs,
    runtime_config: &Map<String, Value>,
) -> Result<Option<RestoreHint>, CniError> {
    if let (Some(ip), Some(mac)) = (args.get("IP"), args.get("MAC")) {
        // Podman may pass several addresses ("IP=10.0.0.5,fd00::5"); the IPv4 one counts.
        let v4 = ip
            .split(',')
            .find(|a| a.parse::<Ipv4Addr>().is_ok())
            .unwrap_or(ip);
        return hint(
            v4,
            Some(mac),
            HintSource::PodmanArgs,
            ("IP", "MAC"),
            Code::InvalidEnvironment,
        )
        .map(Some);
    }
    if let Some(ip) = args.get("P4LB_RESTORE_FROM") {
        return hint(
            ip,
            args.get("P4LB_RESTORE_FROM_MAC"),
            HintSource::P4lbArgs,
            ("P4LB_RESTORE_FROM", "P4LB_RESTORE_FROM_MAC"),
            Code::InvalidEnvironment,
        )
        .map(Some);
    }
    if let Some(ann) = pod_annotations(runtime_config) {
        if let Some(ip) = ann.get(RESTORE_FROM_ANNOTATION).and_then(Value::as_str) {
            if !ip.is_empty() {
                let mac = ann.get(RESTORE_FROM_MAC_ANNOTATION).and_then(Value::as_str);
                return hint(
                    ip,
                    mac,
                    HintSource::PodAnnotation,
                    (RESTORE_FROM_ANNOTATION, RESTORE_FROM_MAC_ANNOTATION),
                    Code::InvalidNetworkConfig,
                )
                .map(Some);
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KNOWN: &[&str] = &["IP", "MAC", "P4LB_RESTORE_FROM", "P4LB_RESTORE_FROM_MAC"];

    fn args(s: &str) -> CniArgs {
        CniArgs::parse(s, KNOWN).unwrap()
    }

    #[test]
    fn podman_restore() {
        let h = detect(&args("IP=10.88.0.5;MAC=02:AA:00:00:00:01"), &Map::new())
            .unwrap()
            .unwrap();
        assert_eq!(h.old_ip, Ipv4Addr::new(10, 88, 0, 5));
        assert_eq!(h.old_mac.as_deref(), Some("02:aa:00:00:00:01"));
        assert_eq!(h.source, HintSource::PodmanArgs);
        // a static IP request is not a restore
        assert!(detect(&args("IP=10.88.0.5"), &Map::new())
            .unwrap()
            .is_none());
        assert_eq!(
            detect(&args("IP=x;MAC=02:aa:00:00:00:01"), &Map::new())
                .unwrap_err()
                .code,
            4
        );
    }

    #[test]
    fn annotation_restore() {
        let rc = json!({ANNOTATIONS_KEY: {"p4lb.io/restore-from": "10.1.0.9", "other": "x"}});
        let h = detect(&args(""), rc.as_object().unwrap()).unwrap().unwrap();
        assert_eq!(h.source, HintSource::PodAnnotation);
        assert!(h.old_mac.is_none());
        let rc = json!({ANNOTATIONS_KEY: {"p4lb.io/restore-from": "nope"}});
        assert_eq!(
            detect(&args(""), rc.as_object().unwrap()).unwrap_err().code,
            7
        );
        let rc = json!({ANNOTATIONS_KEY: {"unrelated": "1"}});
        assert!(detect(&args(""), rc.as_object().unwrap())
            .unwrap()
            .is_none());
    }

    #[test]
    fn an_annotation_hint_must_match_a_checkpointed_migration_of_the_same_namespace() {
        let h = RestoreHint {
            old_ip: Ipv4Addr::new(10, 1, 0, 9),
            old_mac: None,
            source: HintSource::PodAnnotation,
        };
        let mig = |state: &str, ip: &str| Migration {
            id: "mig-1".into(),
            source_key: "src/eth0".into(),
            source_ip: ip.into(),
            state: state.into(),
            ..Default::default()
        };
        let src = |ns: Option<&str>| Endpoint {
            key: "src/eth0".into(),
            labels: ns
                .map(|n| (K8S_NAMESPACE_LABEL.to_string(), n.to_string()))
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let prod = [src(Some("prod"))];
        for ok in ["checkpointed", "restoring"] {
            assert_eq!(
                unmatched_annotation(&h, Some("prod"), &[mig(ok, "10.1.0.9")], &prod),
                None
            );
        }
        assert_eq!(
            unmatched_annotation(&h, None, &[mig("checkpointed", "10.1.0.9")], &[src(None)]),
            None
        );
        let no = |ms: &[Migration], eps: &[Endpoint], ns: Option<&str>| {
            unmatched_annotation(&h, ns, ms, eps).expect("not a restore")
        };
        assert_eq!(
            no(&[], &prod, Some("prod")),
            "no checkpointed migration of 10.1.0.9 is known"
        );
        for state in ["locked", "restored", "done", "aborted"] {
            no(&[mig(state, "10.1.0.9")], &prod, Some("prod"));
        }
        no(&[mig("checkpointed", "10.1.0.8")], &prod, Some("prod"));
        assert_eq!(
            no(&[mig("checkpointed", "10.1.0.9")], &prod, Some("dev")),
            "migration mig-1 of 10.1.0.9 belongs to another workload (namespace prod, this pod's dev)"
        );
        no(&[mig("checkpointed", "10.1.0.9")], &prod, None);
        no(&[mig("checkpointed", "10.1.0.9")], &[], Some("prod"));
    }

    #[test]
    fn p4lb_args() {
        let h = detect(&args("P4LB_RESTORE_FROM=10.1.0.7"), &Map::new())
            .unwrap()
            .unwrap();
        assert_eq!(h.source, HintSource::P4lbArgs);
    }
}
