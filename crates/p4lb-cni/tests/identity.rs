//! Pod annotations cannot choose a workload's identity: identity labels come from the
//! runtime only.

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
