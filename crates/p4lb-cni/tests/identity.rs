//! Pod annotations cannot choose a workload's identity: identity labels come from the
//! runtime only, and a restore hint counts only for a checkpointed migration of the
//! same workload.

mod common;

use common::*;
use serde_json::json;

#[test]
fn an_annotation_cannot_set_identity_labels() {
    let w = World::new();
    let ns = Netns::new();
    let mut c = w.conf("1.0.0");
    c["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations": {
        "labels.p4lb.io/k8s.pod": "victim-0",
        "labels.p4lb.io/k8s.namespace": "prod",
        "labels.p4lb.io/io.kubernetes.pod.name": "victim-0",
        "labels.p4lb.io/name": "victim-0",
        "labels.p4lb.io/app": "web",
    }});
    let args = "IgnoreUnknown=1;K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=dev";
    let r = w.p4lb("ADD", "lbl", &ns.path, args, &c);
    r.ok();
    assert!(
        r.stderr.contains(
            "pod annotation labels.p4lb.io/k8s.pod ignored: k8s.pod is an identity label"
        ),
        "{}",
        r.stderr
    );
    let ep = &w.endpoints()[0];
    let label = |k: &str| ep.labels.get(k).map(String::as_str);
    assert_eq!(label("k8s.pod"), Some("web-0"), "{:?}", ep.labels);
    assert_eq!(label("k8s.namespace"), Some("dev"), "{:?}", ep.labels);
    assert_eq!(label("io.kubernetes.pod.name"), None, "{:?}", ep.labels);
    assert_eq!(label("name"), None, "{:?}", ep.labels);
    assert_eq!(label("app"), Some("web"), "{:?}", ep.labels);
    w.p4lb("DEL", "lbl", &ns.path, args, &c).ok();

    // Without the runtime's values, the annotations still set nothing.
    let ns2 = Netns::new();
    w.p4lb("ADD", "lbl2", &ns2.path, "", &c).ok();
    let ep = &w.endpoints()[0];
    assert_eq!(ep.labels.get("k8s.pod"), None, "{:?}", ep.labels);
    assert_eq!(ep.labels.get("k8s.namespace"), None, "{:?}", ep.labels);
    assert_eq!(
        ep.labels.get("app").map(String::as_str),
        Some("web"),
        "{:?}",
        ep.labels
    );
    w.p4lb("DEL", "lbl2", &ns2.path, "", &c).ok();
    w.assert_clean();
}

#[test]
fn a_restore_hint_naming_another_pods_address_is_not_a_restore() {
    let w = World::new();
    let victim_ns = Netns::new();
    let victim_ip = "10.250.1.7";
    w.register_elsewhere("victim", victim_ip, Some("prod"), &victim_ns);
    let mut c = w.conf("1.0.0");
    c["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations": {
        "p4lb.io/restore-from": victim_ip,
    }});
    let fresh = |cid: &str, k8s_ns: &str, why: &str| {
        let ns = Netns::new();
        let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={k8s_ns}");
        let r = w.p4lb("ADD", cid, &ns.path, &args, &c);
        r.ok();
        assert!(
            r.stderr.contains(&format!(
                "restore hint p4lb.io/restore-from={victim_ip} ignored, starting fresh: {why}"
            )),
            "{}",
            r.stderr
        );
        let ep = w
            .endpoints()
            .into_iter()
            .find(|e| e.container_id == cid)
            .unwrap();
        assert!(!ep.locked, "{ep:?}");
        assert_eq!(ep.state, "ready");
        let addrs = pod_addrs(&ns, "eth0");
        assert!(!addrs.contains(&format!("{victim_ip}/32")), "{addrs:?}");
        w.p4lb("DEL", cid, &ns.path, &args, &c).ok();
    };
    // The victim runs: no migration of its address exists.
    fresh(
        "thief",
        "prod",
        &format!("no checkpointed migration of {victim_ip} is known"),
    );
    // The victim is checkpointed, but the pod is another workload.
    let id = w.checkpoint(&victim_ns);
    fresh(
        "thief2",
        "dev",
        &format!("migration {id} of {victim_ip} belongs to another workload (namespace prod, this pod's dev)"),
    );
    // The same workload's restore is one.
    let ns = Netns::new();
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod";
    w.p4lb("ADD", "restored", &ns.path, args, &c).ok();
    let ep = &w.endpoints()[0];
    assert!(ep.locked, "{ep:?}");
    assert_eq!(ep.state, "restoring");
    assert!(pod_addrs(&ns, "eth0").contains(&format!("{victim_ip}/32")));
    w.p4lb("DEL", "restored", &ns.path, args, &c).ok();
    w.assert_clean();
}
