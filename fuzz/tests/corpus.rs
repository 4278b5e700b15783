//! Replays every checked-in corpus file through its target function, on stable Rust:
//! the seeds and every input that once crashed a target stay a regression test when
//! nightly and cargo-fuzz are not installed (`make fuzz-smoke` runs this either way).

use std::path::{Path, PathBuf};

use prost::Message;

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

#[test]
fn every_corpus_file_runs_through_its_target() {
    let root = corpus_root();
    let mut total = 0;
    for (name, target) in p4lb_fuzz::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(
            !files.is_empty(),
            "target {name} has no seed in {}",
            dir.display()
        );
        for f in &files {
            let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            eprintln!("{name}: {}", f.display());
            target(&data);
        }
        println!("{name}: {} corpus files ran", files.len());
        total += files.len();
    }
    assert!(total >= p4lb_fuzz::TARGETS.len());
}

#[test]
fn the_packet_seeds_take_the_paths_they_are_named_after() {
    // A seed the pipeline drops early would leave the fuzzer little but the parser.
    for name in [
        "syn-to-vip",
        "syn-ack-from-backend",
        "fin-to-vip",
        "syn-to-endpoint",
        "arp-request-gateway",
    ] {
        let data = std::fs::read(corpus_root().join("packet_pipeline").join(name)).unwrap();
        let v = p4lb_fuzz::packet_verdict(&data);
        eprintln!("{name}: {v:?}");
        assert!(
            matches!(v, Some(p4lb_switch::pipeline::Verdict::Forward(_))),
            "{name}: {v:?}"
        );
    }
}

#[test]
fn the_seeds_are_accepted_inputs() {
    // Seeds that are refused early would leave the fuzzer to rediscover the format.
    let root = corpus_root();
    let add = std::fs::read(root.join("cni_input/add")).unwrap();
    let nul = add.iter().position(|&b| b == 0).unwrap();
    let env = String::from_utf8(add[..nul].to_vec()).unwrap();
    let vars: std::collections::HashMap<&str, &str> =
        env.lines().filter_map(|l| l.split_once('=')).collect();
    let inv = p4lb_cni::parse_invocation(
        p4lb_cni::cni::env::Command::Add,
        |k| vars.get(k).map(|v| v.to_string()),
        add[nul + 1..].to_vec(),
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(inv.env.ifname, "eth0");

    let rec = std::fs::read(root.join("checkpoint_record/record")).unwrap();
    p4lb_criu_action::record::MigrationRecord::parse(&rec, Path::new("record")).unwrap();

    let create = std::fs::read(root.join("netavark_input/create")).unwrap();
    p4lb_netavark::plugin::create(&create[1..]).unwrap_or_else(|e| panic!("{e}"));
    for name in ["setup-run", "setup-restore", "teardown"] {
        let d = std::fs::read(root.join("netavark_input").join(name)).unwrap();
        let nul = d.iter().position(|&b| b == 0).unwrap();
        let netns = std::str::from_utf8(&d[1..nul]).unwrap();
        let stdin = &d[nul + 1..];
        if d[0] % 3 == 2 {
            p4lb_netavark::plugin::parse_teardown(netns, stdin).unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        let r = p4lb_netavark::plugin::parse_setup(netns, stdin)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let hint = p4lb_netavark::plugin::restore_hint(
            &p4lb_fuzz::fixed_migrations(),
            &r.request.exec.container_id,
            &r.request.target.ifname,
            r.mac,
        )
        .unwrap();
        // The restore seed reaches the restore path, the run seed the fresh start.
        assert_eq!(hint.is_some(), name == "setup-restore", "{name}: {hint:?}");
    }

    let w = std::fs::read(root.join("p4rt_write/write-table-set")).unwrap();
    let req = p4lb_proto::p4runtime::WriteRequest::decode(&w[1..]).unwrap();
    let sw = p4lb_fuzz::fresh_switch();
    p4lb_fuzz::write(&sw, req.updates).unwrap();
}

fn api_seed(kind: u8, m: impl Message) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend(m.encode_to_vec());
    v
}

/// Writes the seed corpus (run by hand after a format change:
/// `cargo test --no-default-features -- --ignored write_seed_corpus`).
#[test]
#[ignore]
fn write_seed_corpus() {
    use p4lb_proto::api;
    use p4lb_proto::p4runtime as p4;
    let root = corpus_root();
    let put = |target: &str, name: &str, data: &[u8]| {
        let d = root.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), data).unwrap();
    };

    let conf = r#"{"cniVersion":"1.1.0","name":"p4lb","type":"p4lb","controllerSocket":"/run/p4lb/controller.sock","switch":"sw0","mtu":1500,"labels":{"app":"web"},"ipam":{"type":"host-local","subnet":"10.88.0.0/16","gateway":"10.88.0.1","routes":[{"dst":"0.0.0.0/0"}]},"runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"labels.p4lb.io/tier":"front","labels.p4lb.io/k8s.namespace":"other","p4lb.io/restore-from":"10.88.0.5"}}}"#;
    let env = "CNI_COMMAND=ADD\nCNI_CONTAINERID=3f2a9c\nCNI_NETNS=/var/run/netns/cni-1\nCNI_IFNAME=eth0\nCNI_PATH=/opt/cni/bin\nCNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1\n";
    put("cni_input", "add", format!("{env}\0{conf}").as_bytes());
    let prev = r#"{"cniVersion":"1.0.0","name":"p4lb","type":"p4lb","prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"02:00:0a:58:00:05","sandbox":"/var/run/netns/cni-1"}],"ips":[{"address":"10.88.0.5/16","gateway":"10.88.0.1","interface":0}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.96.0.10"]}}}"#;
    put(
        "cni_input",
        "del-prev-result",
        format!("CNI_COMMAND=DEL\nCNI_CONTAINERID=3f2a9c\nCNI_IFNAME=eth0\nCNI_PATH=/opt/cni/bin\nCNI_ARGS=IP=10.88.0.5;MAC=02:00:0a:58:00:05\n\0{prev}").as_bytes(),
    );
    let gc = r#"{"cniVersion":"1.1.0","name":"p4lb","type":"p4lb","cni.dev/valid-attachments":[{"containerID":"3f2a9c","ifname":"eth0"}]}"#;
    put(
        "cni_input",
        "gc",
        format!("CNI_COMMAND=GC\nCNI_PATH=/opt/cni/bin\n\0{gc}").as_bytes(),
    );

    // netavark_input: what podman 5.8 / netavark 1.17 pass to the plugin.
    let network = |opts: &str| {
        format!(
            r#"{{"name":"p4pods","id":"3b4c1f0e9a7d2c5b8e6f1a4d7c0b3e9f2a5d8c1b4e7f0a3d6c9b2e5f8a1d4c7b","driver":"p4lb","network_interface":"","created":"2026-11-30T07:38:00.123456789Z","subnets":[{{"subnet":"10.89.0.0/24","gateway":"10.89.0.1"}}],"ipv6_enabled":false,"internal":false,"dns_enabled":true,"options":{opts},"ipam_options":{{"driver":"host-local"}}}}"#
        )
    };
    let opts = r#"{"labels":"app=web,tier=front","timeout_ms":"5000","checkpoint_mode":"migrate","mtu":"1500"}"#;
    put(
        "netavark_input",
        "create",
        format!("\x00{}", network(opts)).as_bytes(),
    );
    put(
        "netavark_input",
        "create-unknown-option",
        format!("\x00{}", network(r#"{"sockett":"/x"}"#)).as_bytes(),
    );
    let exec = |id: &str, ip: &str, mac: &str| {
        format!(
            r#"{{"container_id":"{id}","container_name":"web","port_mappings":null,"network":{},"network_options":{{"interface_name":"eth0","static_ips":["{ip}"],"static_mac":{mac},"aliases":["web"]}}}}"#,
            network(opts)
        )
    };
    let fresh = "9a1c3e5d7f9b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f";
    put(
        "netavark_input",
        "setup-run",
        format!(
            "\x01/run/netns/netns-5e1a2b3c\0{}",
            exec(fresh, "10.89.0.2", "null")
        )
        .as_bytes(),
    );
    put(
        "netavark_input",
        "setup-restore",
        format!(
            "\x01/run/netns/netns-7c2d4e6f\0{}",
            exec(
                p4lb_fuzz::SEED_CONTAINER,
                "10.89.0.4",
                r#""02:00:0a:59:00:03""#
            )
        )
        .as_bytes(),
    );
    put(
        "netavark_input",
        "teardown",
        format!(
            "\x02/run/netns/netns-5e1a2b3c\0{}",
            exec(fresh, "10.89.0.2", "null")
        )
        .as_bytes(),
    );

    let reg = api::RegisterEndpointRequest {
        container_id: "3f2a9c".into(),
        ifname: "eth0".into(),
        netns_path: "/var/run/netns/cni-1".into(),
        ip: "10.88.0.7".into(),
        prefix_len: 16,
        mac: "02:00:0a:58:00:07".into(),
        gateway: "10.88.0.1".into(),
        host_ifname: "p4lb0a1b2c3d4e".into(),
        labels: [
            ("app".into(), "web".into()),
            ("k8s.pod".into(), "web-2".into()),
        ]
        .into(),
        network: "p4lb".into(),
        restore_of_ip: "10.88.0.6".into(),
        locked: true,
        ..Default::default()
    };
    put("api_messages", "register", &api_seed(0, reg));
    let svc = api::AddServiceRequest {
        service: Some(api::Service {
            name: "web".into(),
            vip: "10.96.0.11".into(),
            protocol: "tcp".into(),
            port: 80,
            target_port: 8080,
            selector: "app=web".into(),
            name_pattern: "web-*".into(),
            backends: vec!["web-1/eth0".into()],
            slot_count: 251,
            ..Default::default()
        }),
        replace: true,
    };
    put("api_messages", "add-service", &api_seed(5, svc));
    let meta = api::UpdateEndpointMetadataRequest {
        identity: Some(api::Identity {
            pid: 4242,
            netns_path: String::new(),
        }),
        key: "web-1/eth0".into(),
        labels: [
            ("k8s.namespace".into(), "other".into()),
            ("tier".into(), "front".into()),
            ("app".into(), String::new()),
        ]
        .into(),
    };
    put("api_messages", "update-metadata", &api_seed(2, meta));
    let ev = api::MigrationEventRequest {
        phase: api::MigrationPhase::RestoredAt as i32,
        identity: Some(api::Identity {
            pid: 0,
            netns_path: "/var/run/netns/cni-2".into(),
        }),
        migration_id: "m-1".into(),
        source_ip: "10.88.0.6".into(),
        image_dir: "/var/lib/containers/checkpoint".into(),
        ..Default::default()
    };
    put("api_messages", "migration-event", &api_seed(7, ev));
    let gc = api::GarbageCollectRequest {
        network: "p4lb".into(),
        valid_attachments: vec![api::Attachment {
            container_id: "web-1".into(),
            ifname: "eth0".into(),
        }],
    };
    put("api_messages", "garbage-collect", &api_seed(4, gc));

    let mut w = vec![0u8];
    w.extend(
        p4::WriteRequest {
            device_id: 1,
            updates: p4lb_fuzz::programmed_updates(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    put("p4rt_write", "write-table-set", &w);
    // On top of the programmed table set (mode bit 2): modify every entry, delete every
    // entry, insert them again.
    let set = p4lb_fuzz::programmed_updates();
    let again = |ty: p4::update::Type| {
        set.iter().cloned().map(move |mut u| {
            u.r#type = ty as i32;
            u
        })
    };
    let mut m = vec![4u8];
    m.extend(
        p4::WriteRequest {
            device_id: 1,
            updates: again(p4::update::Type::Modify)
                .chain(again(p4::update::Type::Delete))
                .chain(again(p4::update::Type::Insert))
                .collect(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    put("p4rt_write", "modify-delete-insert", &m);
    let mut c = vec![1u8];
    c.extend(
        p4::SetForwardingPipelineConfigRequest {
            device_id: 1,
            action: p4::set_forwarding_pipeline_config_request::Action::ReconcileAndCommit as i32,
            config: Some(p4lb_fuzz::real_config()),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    put("p4rt_write", "set-pipeline", &c);

    let mut syn = vec![3u8];
    syn.extend(p4lb_fuzz::syn_frame());
    put("packet_pipeline", "syn-to-vip", &syn);
    // The learned connection's reply from its backend (reverse translation), on the
    // backend's port.
    let client = (std::net::Ipv4Addr::new(192, 168, 1, 10), 40000);
    let backend = (std::net::Ipv4Addr::new(10, 88, 0, 5), 80);
    let mut reply = vec![1u8];
    reply.extend(p4lb_fuzz::tcp_frame(backend, client, 0x12));
    put("packet_pipeline", "syn-ack-from-backend", &reply);
    // A FIN of the learned connection, and a direct segment to an endpoint (routed).
    let mut fin = vec![3u8];
    fin.extend(p4lb_fuzz::tcp_frame(
        client,
        (std::net::Ipv4Addr::new(10, 96, 0, 10), 80),
        0x11,
    ));
    put("packet_pipeline", "fin-to-vip", &fin);
    let mut direct = vec![3u8];
    direct.extend(p4lb_fuzz::tcp_frame(
        client,
        (std::net::Ipv4Addr::new(10, 88, 0, 6), 5432),
        0x02,
    ));
    put("packet_pipeline", "syn-to-endpoint", &direct);
    // An ARP request for the pods' gateway from an endpoint's port.
    let mut arp = vec![1u8];
    arp.extend_from_slice(&[0xff; 6]);
    arp.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 10, 88, 0, 5]);
    arp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 88, 0, 1]);
    put("packet_pipeline", "arp-request-gateway", &arp);

    let record = r#"{
  "version": 1,
  "migration_id": "m-42",
  "mode": "migrate",
  "state": "checkpointed",
  "source": {
    "key": "abc/eth0",
    "container_id": "abc",
    "ifname": "eth0",
    "ip": "10.88.0.5",
    "prefix_len": 24,
    "mac": "02:00:0a:58:00:05",
    "netns_inode": 4026532385,
    "network": "p4lb"
  },
  "addresses": ["10.88.0.5", "10.88.0.2"],
  "leave_running": false,
  "controller_state": "checkpointed",
  "created_unix_ms": 1764460800000
}
"#;
    put("checkpoint_record", "record", record.as_bytes());
}
