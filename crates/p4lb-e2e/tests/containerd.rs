//! End to end, containerd's CRI path without p4lb: a pod sandbox wired by the
//! reference `bridge` CNI plugin runs a `p4lb-testapp` server that answers a
//! client; containerd pulls an image from the testbed's local registry. They
//! check the machine the p4lb CRI tests (`migration_cri`, `cni_containerd`)
//! stand on, through the same CRI client.

mod migration_common;

use migration_common::{record, serial, start_with_images};
use p4lb_e2e::cri::{self, Cri};
use p4lb_testbed::{containerd, images, paths, wait};

#[test]
fn containerd_runs_a_pod_sandbox_with_the_bridge_plugin() {
    let _s = serial();
    let tb = start_with_images();
    let socket = cri::start_containerd(&tb).unwrap_or_else(|e| panic!("containerd: {e}"));
    images::load_into_containerd(&tb).unwrap();
    let mut c = Cri::connect(&socket).unwrap();
    let v = c.version().unwrap();
    record(&format!(
        "CRI: {} {} (API {})",
        v.runtime_name, v.runtime_version, v.runtime_api_version
    ));
    assert_eq!(v.runtime_name, "containerd");
    assert!(v.runtime_version.starts_with('2'), "{}", v.runtime_version);
    let listed = c.list_images().unwrap();
    assert!(
        listed
            .iter()
            .any(|i| i.repo_tags.iter().any(|t| t == images::PAUSE_IMAGE)),
        "pause image not in containerd: {listed:?}"
    );

    let cfg = cri::pod_config("p4lb-pod", "uid-p4lb-pod-1");
    let id = c
        .run_pod_sandbox(cfg.clone())
        .unwrap_or_else(|e| panic!("{e}\n{}", containerd::log_tail(&tb, 40)));
    let st = c.pod_sandbox_status(&id).unwrap();
    assert_eq!(st.state, cri::pb::PodSandboxState::SandboxReady as i32);
    let ip = st
        .network
        .as_ref()
        .map(|n| n.ip.clone())
        .unwrap_or_default();
    record(&format!("CRI pod sandbox via bridge CNI: ip {ip}"));
    assert!(
        ip.starts_with("10.99.0."),
        "bridge IPAM address expected, got {ip:?}"
    );
    // The bridge plugin's gateway lives in the testbed's own namespace.
    tb.run(&["busybox", "ping", "-c", "1", "-W", "5", &ip])
        .unwrap();

    let ctr = c
        .create_container(
            &id,
            cri::pb::ContainerConfig {
                metadata: Some(cri::pb::ContainerMetadata {
                    name: "server".into(),
                    attempt: 0,
                }),
                image: Some(cri::pb::ImageSpec {
                    image: images::TEST_IMAGE.into(),
                    annotations: Default::default(),
                }),
                command: vec![images::TESTAPP_IN_IMAGE.into()],
                args: vec!["server".into(), "--listen".into(), "0.0.0.0:7000".into()],
                log_path: "server.log".into(),
                linux: cri::container_linux(),
                ..Default::default()
            },
            cfg,
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", containerd::log_tail(&tb, 40)));
    c.start_container(&ctr).unwrap();
    let s = c.container_status(&ctr).unwrap();
    assert_eq!(s.state, cri::pb::ContainerState::ContainerRunning as i32);
    let testapp = paths::inside_target(&paths::static_testapp()).unwrap();
    let mut report = String::new();
    wait::until(20, "the pod's server to answer", || {
        match tb.run(&[
            testapp.to_str().unwrap(),
            "client",
            "--target",
            &format!("{ip}:7000"),
            "--conns",
            "4",
            "--rate",
            "50",
            "--duration",
            "1",
            "--strict",
        ]) {
            Ok(r) => {
                report = r;
                true
            }
            Err(_) => false,
        }
    })
    .unwrap();
    let r: p4lb_testapp::report::Report = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(r.totals.clean, 4, "{}", r.human());
    assert!(r.totals.requests_done > 20);

    c.stop_container(&ctr, 5).unwrap();
    c.remove_container(&ctr).unwrap();
    c.stop_pod_sandbox(&id).unwrap();
    c.remove_pod_sandbox(&id).unwrap();
}

#[test]
fn local_registry_serves_images_to_containerd() {
    let _s = serial();
    let tb = start_with_images();
    images::start_registry(&tb).unwrap_or_else(|e| panic!("registry: {e}"));
    let remote = images::push_to_registry(&tb, images::TEST_IMAGE).unwrap();
    assert_eq!(remote, "127.0.0.1:5000/p4lb/testimg:latest");
    let socket = cri::start_containerd(&tb).unwrap();
    let mut c = Cri::connect(&socket).unwrap();
    let image_ref = c
        .pull_image(&remote)
        .unwrap_or_else(|e| panic!("{e}\n{}", containerd::log_tail(&tb, 40)));
    println!("pulled {remote} as {image_ref}");
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    assert!(c
        .list_images()
        .unwrap()
        .iter()
        .any(|i| i.repo_tags.iter().any(|t| t == &remote)));
}
