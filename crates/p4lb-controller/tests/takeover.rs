//! Only the restore target a migration designated may take over its backend.

mod common;

use common::*;
use p4lb_proto::api;
use tonic::Code;

fn persisted(dir: &std::path::Path) -> serde_json::Value {
    persisted_json(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_endpoint_cannot_restore_a_migration_it_was_not_designated_for() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let src_ns = Netns::new("p4tk-src", &["10.88.9.21"]);
    // The intruder even configures the victim's address in its own namespace.
    let evil_ns = Netns::new("p4tk-evil", &["10.88.9.66", "10.88.9.21"]);
    let tgt_ns = Netns::new("p4tk-tgt", &["10.88.9.22", "10.88.9.21"]);
    let mut c = Ctl::start(config(&dir, &ssock)).await;

    let mut src = register_req("victim", "10.88.9.21", "02:00:00:00:09:21", "");
    src.netns_path = src_ns.path();
    src.labels = [("app".to_string(), "v".to_string())].into();
    let src = c.client.register_endpoint(src).await.unwrap().into_inner();
    let mut evil = register_req("evil", "10.88.9.66", "02:00:00:00:09:66", "");
    evil.netns_path = evil_ns.path();
    evil.labels.clear();
    c.client.register_endpoint(evil).await.unwrap();
    c.client
        .add_service(api::AddServiceRequest {
            service: Some(api::Service {
                name: "v".into(),
                vip: "10.96.9.1".into(),
                port: 80,
                selector: "app=v".into(),
                ..Default::default()
            }),
            replace: false,
        })
        .await
        .unwrap();
    let m = c
        .client
        .migration_event(event(api::MigrationPhase::Lock, &src_ns, "", ""))
        .await
        .unwrap()
        .into_inner();
    c.client
        .migration_event(event(api::MigrationPhase::Checkpointed, &src_ns, &m.id, ""))
        .await
        .unwrap();

    let tables = read_all(&ssock).await;
    let state = persisted(&dir);
    let attempts = [
        event(api::MigrationPhase::RestoreStarted, &evil_ns, &m.id, ""),
        event(api::MigrationPhase::RestoredAt, &evil_ns, &m.id, ""),
        event(api::MigrationPhase::RestoredAt, &evil_ns, "", "10.88.9.21"),
        event(api::MigrationPhase::Unlock, &evil_ns, &m.id, ""),
        event(api::MigrationPhase::Unlock, &evil_ns, "", "10.88.9.21"),
    ];
    for a in &attempts {
        let e = c.client.migration_event(a.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{a:?}: {}", e.message());
        assert!(
            e.message().starts_with(&format!(
                "endpoint evil/eth0 may not send {} for migration {}",
                api::MigrationPhase::try_from(a.phase)
                    .unwrap()
                    .as_str_name(),
                m.id
            )),
            "{}",
            e.message()
        );
        assert_eq!(read_all(&ssock).await, tables, "{a:?} changed the switch");
        assert_eq!(persisted(&dir), state, "{a:?} changed the state");
    }

    // The target the CNI plugin registered as a restore of the source's address.
    let mut tgt = register_req("tgt", "10.88.9.22", "02:00:00:00:09:22", "");
    tgt.netns_path = tgt_ns.path();
    tgt.labels.clear();
    tgt.restore_of_ip = "10.88.9.21".into();
    c.client.register_endpoint(tgt).await.unwrap();
    c.client
        .migration_event(event(
            api::MigrationPhase::RestoreStarted,
            &tgt_ns,
            &m.id,
            "",
        ))
        .await
        .unwrap();
    // Once the target is recorded, no one else may act as it.
    let e = c
        .client
        .migration_event(event(api::MigrationPhase::RestoredAt, &evil_ns, &m.id, ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    let restored = c
        .client
        .migration_event(event(api::MigrationPhase::RestoredAt, &tgt_ns, &m.id, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(restored.target_key, "tgt/eth0");
    let e = c
        .client
        .migration_event(event(api::MigrationPhase::Unlock, &evil_ns, &m.id, ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    let done = c
        .client
        .migration_event(event(api::MigrationPhase::Unlock, &tgt_ns, &m.id, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state, "done");
    let eps = c
        .client
        .list_endpoints(api::ListEndpointsRequest {})
        .await
        .unwrap()
        .into_inner()
        .endpoints;
    let evil = eps.iter().find(|e| e.key == "evil/eth0").unwrap();
    assert!(evil.migrated_ips.is_empty(), "{evil:?}");
    assert_ne!(evil.backend_id, src.backend_id);
    let tgt = eps.iter().find(|e| e.key == "tgt/eth0").unwrap();
    assert_eq!(tgt.backend_id, src.backend_id);
    let svc = &c
        .client
        .list_services(api::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner()
        .services[0];
    assert_eq!(svc.resolved_backends, vec!["tgt/eth0".to_string()]);
    c.stop().await;
    sw.shutdown().await;
}
