//! Identity labels (`k8s.*`, `container.*`, `podman.*`, `name`, `p4lb.switch`: the
//! ones only the runtime or the configuration sets) are fixed once an endpoint has
//! them: a metadata update may add a missing one but never change or remove one,
//! so a service that selects by them cannot be joined by relabelling.

mod common;

use common::*;
use p4lb_proto::api;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_updates_never_change_identity_labels() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let _sw = start_switch(&ssock).await;
    let mut ctl = Ctl::start(config(&dir, &ssock)).await;

    let mut me = register_req("self", "127.0.0.1", "02:00:00:00:05:09", "");
    me.netns_path = "/proc/self/ns/net".into();
    me.labels = [
        ("k8s.namespace", "tenant-a"),
        ("k8s.pod", "web-1"),
        ("app", "web"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    ctl.client.register_endpoint(me).await.unwrap();
    // A service of another namespace, selecting by identity.
    ctl.client
        .add_service(api::AddServiceRequest {
            service: Some(api::Service {
                name: "victim".into(),
                vip: "10.96.7.1".into(),
                port: 80,
                selector: "k8s.namespace=tenant-b,app=web".into(),
                ..Default::default()
            }),
            replace: false,
        })
        .await
        .unwrap();

    let update = |labels: &[(&str, &str)]| api::UpdateEndpointMetadataRequest {
        identity: Some(api::Identity {
            pid: std::process::id(),
            netns_path: String::new(),
        }),
        key: "self/eth0".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    // Changing, removing and adding in one update: the ordinary label changes,
    // the identity labels keep their registered values, a missing one is added.
    let ep = ctl
        .client
        .update_endpoint_metadata(update(&[
            ("k8s.namespace", "tenant-b"),
            ("k8s.pod", ""),
            ("container.id", "self"),
            ("tier", "front"),
        ]))
        .await
        .unwrap()
        .into_inner();
    let label = |k: &str| ep.labels.get(k).map(String::as_str);
    assert_eq!(label("k8s.namespace"), Some("tenant-a"), "{:?}", ep.labels);
    assert_eq!(label("k8s.pod"), Some("web-1"), "{:?}", ep.labels);
    assert_eq!(label("container.id"), Some("self"), "{:?}", ep.labels);
    assert_eq!(label("tier"), Some("front"), "{:?}", ep.labels);
    // Once added, an identity label is fixed too.
    let ep = ctl
        .client
        .update_endpoint_metadata(update(&[("container.id", "other"), ("name", "x")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ep.labels.get("container.id").map(String::as_str),
        Some("self"),
        "{:?}",
        ep.labels
    );
    assert_eq!(ep.labels.get("name").map(String::as_str), Some("x"));
    // Re-sending the same value is not a change and is accepted silently.
    ctl.client
        .update_endpoint_metadata(update(&[("k8s.namespace", "tenant-a")]))
        .await
        .unwrap();

    let svc = &ctl
        .client
        .list_services(api::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner()
        .services[0];
    assert!(svc.resolved_backends.is_empty(), "{svc:?}");
    // The stored record agrees with the replies.
    let ep = ctl
        .client
        .get_endpoint(api::GetEndpointRequest {
            key: "self/eth0".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ep.labels.get("k8s.namespace").map(String::as_str),
        Some("tenant-a")
    );
    ctl.stop().await;
}
