//! Requests over a limit are refused at the API boundary with INVALID_ARGUMENT
//! naming the limit; requests over the decode limit are not read at all.

mod common;

use common::*;
use p4lb_controller::limits;
use p4lb_proto::api;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_a_limit_are_refused_and_name_it() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let _sw = start_switch(&ssock).await;
    let mut ctl = Ctl::start(config(&dir, &ssock)).await;

    // Too many labels.
    let mut r = register_req("many-labels", "10.88.9.2", "02:00:00:00:09:02", "");
    for i in 0..=limits::MAX_LABELS {
        r.labels.insert(format!("l{i}"), "v".into());
    }
    let e = ctl.client.register_endpoint(r).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("over the limit of 64 labels"),
        "{}",
        e.message()
    );
    // A network name of 100 KB.
    let mut r = register_req("long-network", "10.88.9.3", "02:00:00:00:09:03", "");
    r.network = "n".repeat(100_000);
    let e = ctl.client.register_endpoint(r).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message()
            .contains("network is 100000 bytes, over the limit of 256 bytes"),
        "{}",
        e.message()
    );
    // Nothing was stored.
    let eps = ctl
        .client
        .list_endpoints(api::ListEndpointsRequest {})
        .await
        .unwrap()
        .into_inner()
        .endpoints;
    assert!(eps.is_empty(), "{eps:?}");

    // A 2 MiB request is not decoded (the limit is 1 MiB).
    let e = ctl
        .client
        .garbage_collect(api::GarbageCollectRequest {
            network: "n".repeat(2 * 1024 * 1024),
            valid_attachments: Vec::new(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{e:?}"
    );

    // The number of services is bounded.
    for i in 0..limits::MAX_SERVICES {
        ctl.client
            .add_service(api::AddServiceRequest {
                service: Some(api::Service {
                    name: format!("s{i}"),
                    vip: format!("10.97.{}.{}", i / 250, i % 250 + 1),
                    port: 80,
                    slot_count: 7,
                    ..Default::default()
                }),
                replace: false,
            })
            .await
            .unwrap();
    }
    let e = ctl
        .client
        .add_service(api::AddServiceRequest {
            service: Some(api::Service {
                name: "one-too-many".into(),
                vip: "10.98.0.1".into(),
                port: 80,
                slot_count: 7,
                ..Default::default()
            }),
            replace: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("over the limit of 256 services"),
        "{}",
        e.message()
    );
    ctl.stop().await;
}
